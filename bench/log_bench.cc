// Log throughput: group commit in sync mode at several batch sizes, and replay speed, plain
// and read ahead on a background thread.
#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "log/log.h"
#include "log/read_ahead.h"

namespace bucketd {
namespace {

class TempDir {
 public:
  TempDir() {
    std::string templ = "/tmp/bucketd_log_bench_XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) std::abort();
    path_ = templ;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string db() const { return path_ + "/log"; }

 private:
  std::string path_;
};

std::unique_ptr<Log> OpenOrDie(const LogOptions& options) {
  std::unique_ptr<Log> log;
  if (!Log::Open(options, &log).ok()) std::abort();
  return log;
}

// A typical event: a handful of short strings and two properties, ~200 bytes encoded.
Record MakeEvent(uint64_t seq) {
  Record r;
  r.seq = seq;
  r.at = 1'700'000'000'000 + static_cast<TimeMs>(seq);
  r.kind = RecordKind::kEvent;
  r.user_id = "user-" + std::to_string(seq % 100'000);
  r.event_name = "page_view";
  r.occurred_at = r.at;
  r.email = r.user_id + "@example.com";
  r.properties = {{"plan", PropertyValue::String("pro")},
                  {"visits", PropertyValue::Number(static_cast<double>(seq % 97))}};
  r.idempotency_key = "evt-" + std::to_string(seq);
  return r;
}

// Records per Commit() is the argument; each Commit() is one write and one fsync.
void BM_SyncCommit(benchmark::State& state) {
  const size_t batch = static_cast<size_t>(state.range(0));
  TempDir dir;
  auto log = OpenOrDie(LogOptions{dir.db(), /*sync=*/true, false});
  Record record = MakeEvent(1);
  for (auto _ : state) {
    for (size_t i = 0; i < batch; ++i) {
      const uint64_t seq = log->last_seq() + 1;
      record.seq = seq;
      record.idempotency_key = "evt-" + std::to_string(seq);
      log->Stage(record, {});
    }
    if (!log->Commit().ok()) std::abort();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
  state.counters["records_per_commit"] = static_cast<double>(batch);
}
BENCHMARK(BM_SyncCommit)->Arg(1)->Arg(100)->Arg(1000)->UseRealTime()->MinTime(2.0);

// Writes `count` records and reopens the log, as start-up does (the reopen flushes the
// WAL's tail into SST files, so replay reads SSTs only).
std::unique_ptr<Log> WriteAndReopen(const TempDir& dir, uint64_t count) {
  {
    auto log = OpenOrDie(LogOptions{dir.db(), /*sync=*/false, false});
    for (uint64_t seq = 1; seq <= count; ++seq) {
      log->Stage(MakeEvent(seq), {});
      if (seq % 1000 == 0 && !log->Commit().ok()) std::abort();
    }
    if (!log->Commit().ok()) std::abort();
  }
  return OpenOrDie(LogOptions{dir.db(), /*sync=*/false, false});
}

// Replays a log of `range(0)` records after a reopen.
void BM_Replay(benchmark::State& state) {
  const uint64_t count = static_cast<uint64_t>(state.range(0));
  TempDir dir;
  auto log = WriteAndReopen(dir, count);
  for (auto _ : state) {
    std::unique_ptr<RecordReader> reader = log->ReadFrom(1);
    Record record;
    uint64_t read = 0;
    while (reader->Next(&record)) ++read;
    if (!reader->status().ok() || read != count) std::abort();
    benchmark::DoNotOptimize(record);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * count));
  state.counters["log_bytes"] = static_cast<double>(log->ApproximateBytes());
}
// Rates use the replaying thread's CPU time: replay is CPU-bound (the files are in the page
// cache or read ahead), and wall time on a shared machine measures the neighbours.
BENCHMARK(BM_Replay)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->MinTime(3.0);

double ThreadCpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// The same replay through ReadAheadReader::NextBatch: RocksDB and decoding run on the
// background thread, the benchmark thread only receives batches (a real replay folds them).
// The replaying thread's CPU time would leave out the background thread's work, so this one
// reports the process's CPU time (both threads, plus any RocksDB background work) and rates
// records by wall time; `consumer_cpu_ns_per_record` is what remains on the fold thread.
void BM_ReplayReadAhead(benchmark::State& state) {
  const uint64_t count = static_cast<uint64_t>(state.range(0));
  TempDir dir;
  auto log = WriteAndReopen(dir, count);
  std::vector<Record> batch;
  double consumer_cpu = 0;
  for (auto _ : state) {
    const double cpu_start = ThreadCpuSeconds();
    std::unique_ptr<ReadAheadReader> reader = log->ReadAheadFrom(1);
    uint64_t read = 0;
    while (reader->NextBatch(&batch)) read += batch.size();
    if (!reader->status().ok() || read != count) std::abort();
    benchmark::DoNotOptimize(batch);
    reader.reset();  // joins the background thread, inside the timed region
    consumer_cpu += ThreadCpuSeconds() - cpu_start;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * count));
  state.counters["log_bytes"] = static_cast<double>(log->ApproximateBytes());
  state.counters["consumer_cpu_ns_per_record"] =
      consumer_cpu * 1e9 / static_cast<double>(state.iterations() * count);
}
BENCHMARK(BM_ReplayReadAhead)
    ->Arg(1'000'000)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

}  // namespace
}  // namespace bucketd

BENCHMARK_MAIN();
