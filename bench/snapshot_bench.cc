// Snapshot write / load time and size at 10M memberships, the longest ingest pause while a
// background snapshot runs, replay rate, and start-to-ready with a snapshot vs a full
// replay.
//
// The big state is built straight through Fold::Apply (no log, to keep set-up in tens of
// seconds on 2 cores): 10 buckets, each `app.opened exists within <k>d` (k = 1..10), then
// one event per user, so every user joins all 10 buckets and every membership is filed in
// its bucket's time index (the worst case for the loader). Each user also carries an
// email and two properties. Sizes: BUCKETD_BENCH_USERS (default 1,000,000 -> 10M
// memberships). The replay benches use a log written through the Engine by the seeded
// workload (BUCKETD_BENCH_RECORDS, default 1,000,000 events, batches of 1000).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

#include "engine/fold/fold.h"
#include "snapshot/snapshot_store.h"
#include "tests/state_test_support.h"
#include "tools/bucketctl/workload.h"

namespace bucketd {
namespace {

constexpr TimeMs kStartMs = 1'767'225'600'000;
constexpr int kBuckets = 10;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

class TempDir {
 public:
  TempDir() {
    std::string templ = "/tmp/bucketd_snapshot_bench_XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Record EventFor(uint64_t seq, TimeMs at, uint64_t user) {
  Record r;
  r.seq = seq;
  r.at = at;
  r.kind = RecordKind::kEvent;
  r.user_id = "user-" + std::to_string(user);
  r.event_name = "app.opened";
  r.occurred_at = at;
  return r;
}

void ApplyOrDie(Fold* fold, const Record& r) {
  if (!fold->Apply(r, nullptr).ok()) std::abort();
}

// The 10M-membership state, built once per process.
Fold& BigFold() {
  static Fold* fold = [] {
    auto* f = new Fold;
    uint64_t seq = 0;
    TimeMs at = kStartMs;
    for (int k = 1; k <= kBuckets; ++k) {
      Record r;
      r.seq = ++seq;
      r.at = at;
      r.kind = RecordKind::kBucketDefine;
      r.bucket_id = "b" + std::to_string(k);
      r.definition_json = R"({"id":"b)" + std::to_string(k) +
                          R"(","criteria":{"type":"event","eventName":"app.opened",)"
                          R"("check":"exists","within":")" +
                          std::to_string(k) + R"(d"},"dwell":[{"after":"12h"}]})";
      ApplyOrDie(f, r);
    }
    const uint64_t users = EnvOr("BUCKETD_BENCH_USERS", 1'000'000);
    for (uint64_t u = 0; u < users; ++u) {
      Record r = EventFor(++seq, at + static_cast<TimeMs>(u / 1000), u);
      r.email = "user-" + std::to_string(u) + "@example.com";
      r.properties = {{"plan", PropertyValue::String(u % 3 ? "free" : "pro")},
                      {"visits", PropertyValue::Number(static_cast<double>(u % 97))}};
      ApplyOrDie(f, r);
    }
    return f;
  }();
  return *fold;
}

uint64_t Memberships(const Fold& fold) {
  uint64_t n = 0;
  for (const auto& b : fold.state().buckets) n += b->members.size();
  return n;
}

void BM_SnapshotWrite(benchmark::State& state) {
  Fold& fold = BigFold();
  TempDir dir;
  SnapshotStore store(dir.path(), 1);
  SnapshotInfo info;
  for (auto _ : state) {
    if (!store.Write(fold.state(), &info).ok()) std::abort();
  }
  state.counters["memberships"] = static_cast<double>(Memberships(fold));
  state.counters["users"] = static_cast<double>(fold.state().users.size());
  state.counters["file_MB"] = static_cast<double>(info.bytes) / 1e6;
}
BENCHMARK(BM_SnapshotWrite)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SnapshotLoad(benchmark::State& state) {
  Fold& fold = BigFold();
  TempDir dir;
  SnapshotStore store(dir.path(), 1);
  if (!store.Write(fold.state(), nullptr).ok()) std::abort();
  double slowest_s = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto loaded = std::make_unique<Fold>();
    bool ok = false;
    std::vector<std::string> warnings;
    if (!testing::LoadNewestInto(store, UINT64_MAX, kNever, loaded.get(), &ok, &warnings).ok() ||
        !ok) {
      std::abort();
    }
    slowest_s = std::max(
        slowest_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    state.PauseTiming();  // tearing 10M slots down is not part of loading
    loaded.reset();
    state.ResumeTiming();
  }
  state.counters["memberships"] = static_cast<double>(Memberships(fold));
  // The first load faults in memory the process never had; on a VM whose host backs guest
  // memory lazily that costs far more than reusing what the first load freed.
  state.counters["slowest_s"] = slowest_s;
}
BENCHMARK(BM_SnapshotLoad)->Iterations(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// Ingest continues (one event per Apply, as the engine's fold thread would) while a
// background snapshot of the big state runs; the longest single Apply, fork included.
void BM_BackgroundSnapshotPause(benchmark::State& state) {
  Fold& fold = BigFold();
  TempDir dir;
  SnapshotStore store(dir.path(), 1);
  const uint64_t users = fold.state().users.size();
  for (auto _ : state) {
    double max_pause_ms = 0, fork_ms = 0;
    uint64_t ingested = 0;
    const auto t0 = std::chrono::steady_clock::now();
    if (!store.StartBackground(fold.state()).ok()) std::abort();
    fork_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    max_pause_ms = fork_ms;
    Status status;
    SnapshotInfo info;
    while (!store.PollBackground(&status, &info)) {
      const auto s = std::chrono::steady_clock::now();
      const TimeMs at = fold.state().now;
      ApplyOrDie(&fold, EventFor(fold.state().applied_seq + 1, at, (ingested * 7919) % users));
      ++ingested;
      max_pause_ms = std::max(
          max_pause_ms,
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
    }
    if (!status.ok()) std::abort();
    state.counters["fork_ms"] = fork_ms;
    state.counters["max_pause_ms"] = max_pause_ms;
    state.counters["ingested_during"] = static_cast<double>(ingested);
    state.counters["snapshot_s"] = static_cast<double>(info.write_micros) / 1e6;
  }
}
BENCHMARK(BM_BackgroundSnapshotPause)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// A data dir with a log written by the seeded workload through the Engine.
const std::string& WorkloadDir() {
  static TempDir* dir = [] {
    auto* d = new TempDir;
    Options o;
    o.data_dir = d->path();
    o.clock = ClockMode::kManual;
    o.start_time_ms = kStartMs;
    o.durability = Durability::kAsync;
    o.snapshot_every_records = 0;
    o.snapshot_every_ms = 0;
    std::unique_ptr<Engine> engine;
    if (!Engine::Open(o, &engine).ok()) std::abort();
    workload::Options w;
    w.users = 100'000;
    w.events = EnvOr("BUCKETD_BENCH_RECORDS", 1'000'000);
    w.seed = 7;
    w.batch = 1000;
    w.churn = false;
    workload::Generator gen(w);
    if (!gen.Setup(engine.get()).ok() || !gen.Run(engine.get()).ok()) std::abort();
    if (!engine->TakeSnapshot(nullptr).ok() || !engine->Close().ok()) std::abort();
    return d;
  }();
  return dir->path();
}

void OpenBench(benchmark::State& state, bool use_snapshots) {
  const std::string& dir = WorkloadDir();
  EngineStats stats;
  for (auto _ : state) {
    Options o;
    o.data_dir = dir;
    o.clock = ClockMode::kManual;
    o.read_only = true;
    o.use_snapshots = use_snapshots;
    std::unique_ptr<Engine> engine;
    if (!Engine::Open(o, &engine).ok()) std::abort();
    stats = engine->Stats();
    state.counters["log_seq"] = static_cast<double>(engine->State().log_seq);
  }
  state.counters["replayed"] = static_cast<double>(stats.replayed_records);
  state.counters["open_ms"] = static_cast<double>(stats.open_micros) / 1e3;
  if (!use_snapshots) {
    state.counters["records_per_s"] = static_cast<double>(stats.replayed_records) /
                                      (static_cast<double>(stats.open_micros) / 1e6);
  }
}
void BM_OpenFullReplay(benchmark::State& state) { OpenBench(state, false); }
void BM_OpenFromSnapshot(benchmark::State& state) { OpenBench(state, true); }
BENCHMARK(BM_OpenFullReplay)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OpenFromSnapshot)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace bucketd

BENCHMARK_MAIN();
