// Ingest through the embedded API: 1M users, the ten bench buckets, sync durability with
// group commit (one fsync per batch of 1,000). Reports events/s and memory per user.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "bench/bench_buckets.h"
#include "bucketd/engine.h"

namespace bucketd {
namespace {

constexpr uint32_t kUsers = 1'000'000;
// Events per IngestBatch: one log write and, in sync mode, one fsync each. The server
// groups concurrent requests the same way.
constexpr size_t kBatch = 10'000;
constexpr TimeMs kStart = 1793491200000;  // 2026-11-01

size_t HeapBytes() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

void BM_IngestBatches(benchmark::State& state) {
  const Durability durability = state.range(0) ? Durability::kSync : Durability::kAsync;
  char pattern[] = "/tmp/bucketd-ingest-bench-XXXXXX";
  const std::string dir = mkdtemp(pattern);
  const size_t heap_before = HeapBytes();
  std::unique_ptr<Engine> engine;
  {
    Options options;
    options.data_dir = dir;
    options.durability = durability;
    options.clock = ClockMode::kManual;
    options.start_time_ms = kStart;
    options.snapshot_every_records = 0;
    options.snapshot_every_ms = 0;
    if (!Engine::Open(options, &engine).ok()) state.SkipWithError("open failed");
    for (const char* json : bench::kBenchBuckets) {
      bool created;
      if (!engine->DefineBucket(json, DefineMode::kCreate, std::nullopt, &created).ok()) {
        state.SkipWithError("define failed");
      }
    }
  }
  std::mt19937_64 rng(1);
  std::vector<EventInput> batch(kBatch);
  std::vector<std::string> user_ids(kUsers);
  for (uint32_t u = 0; u < kUsers; ++u) user_ids[u] = "user-" + std::to_string(u);
  const char* names[] = {"feature.used", "feature.used", "app.opened", "page.viewed", "purchase"};
  const char* plans[] = {"trial", "pro", "enterprise", "free"};
  uint64_t events = 0;
  uint32_t next_new_user = 0;
  TimeMs now = kStart;
  for (auto _ : state) {
    for (EventInput& e : batch) {
      // First touch every user once (1M contacts), then a random mix.
      const uint32_t u = next_new_user < kUsers ? next_new_user++ : uint32_t(rng() % kUsers);
      e.user_id = user_ids[u];
      e.event = names[rng() % 5];
      e.contact_properties.clear();
      if (rng() % 10 == 0) {
        e.contact_properties.push_back({"plan", PropertyValue::String(plans[rng() % 4])});
        e.contact_properties.push_back({"ltv", PropertyValue::Number(double(rng() % 2000))});
        e.contact_properties.push_back({"country", PropertyValue::String(rng() % 5 ? "DE" : "NL")});
      }
    }
    BatchResult result;
    if (!engine->IngestBatch(batch, &result).ok()) state.SkipWithError("ingest failed");
    events += result.accepted;
    now += 10'000;  // ten seconds of simulated time per batch, then a sweep
    SweepResult sweep;
    if (!engine->AdvanceClock(now, &sweep).ok()) state.SkipWithError("clock failed");
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
  // With UseRealTime() rates are per wall-clock second, fsync waits included.
  state.counters["events_per_s"] = benchmark::Counter(double(events), benchmark::Counter::kIsRate);
  const auto contacts = engine->Stats().contacts;
  state.counters["contacts"] = double(contacts);
  state.counters["heap_bytes_per_user"] = double(HeapBytes() - heap_before) / double(contacts);
  // Users and slots live in mapped pools, which malloc statistics do not see.
  state.counters["pool_bytes_per_user"] = double(engine->Stats().pool_bytes) / double(contacts);
  uint64_t members = 0;
  for (const BucketInfo& b : engine->ListBuckets()) members += b.counts.active;
  state.counters["memberships"] = double(members);
  engine.reset();
  std::filesystem::remove_all(dir);
}

// 300 batches (3M events): the first 100 create the 1M users, the rest revisit them.
BENCHMARK(BM_IngestBatches)
    ->Arg(1)
    ->Arg(0)
    ->ArgName("sync")
    ->Iterations(300)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace bucketd

BENCHMARK_MAIN();
