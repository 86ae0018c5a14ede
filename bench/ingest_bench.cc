// Ingest through the embedded API: 1M users, the ten bench buckets, sync durability with
// group commit (one fsync per batch of 10,000) and async. Reports events/s and memory per
// user and per membership.
//
// Arg `beyond` (issue 16): 0 is today's mix (bench::kBenchBuckets); 1 the same events for
// the same users with five buckets replaced by ones using the SPEC §3b legs
// (bench::kBeyondBuckets: a time property, a windowed sum, a `where` filter, a sequence, a
// bucket leg), purchases carrying `amount` and `plan` event properties and the contact
// patches a `trialEndsAt` time. Its extra values come from a second generator, so the two
// mixes send the same names to the same users in the same order.
// BUCKETD_BENCH_USERS sets the number of users (default 1M); the batches are three times
// as many events as users. BUCKETD_BENCH_VERBOSE=1 prints each bucket's member count.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "bench/bench_buckets.h"
#include "bucketd/engine.h"
#include "bucketd/time_format.h"

namespace bucketd {
namespace {

uint32_t Users() {
  const char* env = std::getenv("BUCKETD_BENCH_USERS");
  return env != nullptr ? uint32_t(std::strtoul(env, nullptr, 10)) : 1'000'000;
}
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
  const bool beyond = state.range(1) != 0;
  const uint32_t users = Users();
  char pattern[] = "/tmp/bucketd-ingest-bench-XXXXXX";
  const std::string dir = mkdtemp(pattern);
  // The client's side first: its id strings (32 bytes a user) and a batch with room for
  // the most properties an input gets. A sidecar's client is another process, and an
  // embedder's ids are its own, so the bytes per user below are the engine's alone (until
  // 2026-12-02 they included these ids: 32 B per user).
  std::vector<std::string> user_ids(users);
  for (uint32_t u = 0; u < users; ++u) user_ids[u] = "user-" + std::to_string(u);
  std::vector<EventInput> batch(kBatch);
  for (EventInput& e : batch) {
    e.contact_properties.reserve(4);
    e.properties.reserve(2);
  }
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
    for (const char* json : beyond ? bench::kBeyondBuckets : bench::kBenchBuckets) {
      bool created;
      if (!engine->DefineBucket(json, DefineMode::kCreate, std::nullopt, &created).ok()) {
        state.SkipWithError("define failed");
      }
    }
  }
  std::mt19937_64 rng(1);
  std::mt19937_64 beyond_rng(2);  // the beyond mix's extra values only
  const char* names[] = {"feature.used", "feature.used", "app.opened", "page.viewed", "purchase"};
  const char* plans[] = {"trial", "pro", "enterprise", "free"};
  // Every run spans 50 minutes of simulated time (ten seconds per batch at 1M users), so
  // the sequence's 15-minute deadlines and the trial ends pass during it whatever the size.
  const TimeMs step_ms = 3'000'000 / state.max_iterations;
  uint64_t events = 0;
  uint64_t ingest_transitions = 0;
  uint64_t sweep_transitions = 0;
  int64_t sweep_micros = 0;
  uint64_t sweep_due = 0;
  uint32_t next_new_user = 0;
  TimeMs now = kStart;
  for (auto _ : state) {
    // Making the inputs is the client's work (a sidecar's client is another process): the
    // timing covers only the engine's, ingest and sweep. The §3b mix's inputs cost more to
    // make (event properties, RFC 3339 times), so timing them too had counted ~6% of its
    // thread CPU that no engine change can cut (bench/README.md).
    state.PauseTiming();
    for (EventInput& e : batch) {
      // First touch every user once (1M contacts), then a random mix.
      const uint32_t u = next_new_user < users ? next_new_user++ : uint32_t(rng() % users);
      e.user_id = user_ids[u];
      const uint64_t name = rng() % 5;
      e.event = names[name];
      e.contact_properties.clear();
      e.properties.clear();
      if (rng() % 10 == 0) {
        e.contact_properties.push_back({"plan", PropertyValue::String(plans[rng() % 4])});
        e.contact_properties.push_back({"ltv", PropertyValue::Number(double(rng() % 2000))});
        e.contact_properties.push_back({"country", PropertyValue::String(rng() % 5 ? "DE" : "NL")});
        if (beyond) {
          // Ends 2 days 23 h to 3 days 1 h from now: half are within 3 days at once, the
          // others come within 3 days (a clock-filed flip) during the run's 50 minutes.
          const TimeMs ends = now + 3 * 86'400'000 - 3'600'000 + TimeMs(beyond_rng() % 7'200'000);
          e.contact_properties.push_back(
              {"trialEndsAt", PropertyValue::String(FormatRfc3339(ends))});
        }
      }
      if (beyond && name == 4) {  // purchase
        e.properties.push_back({"amount", PropertyValue::Number(double(beyond_rng() % 200))});
        e.properties.push_back({"plan", PropertyValue::String(beyond_rng() % 3 ? "basic" : "pro")});
      }
    }
    state.ResumeTiming();
    BatchResult result;
    if (!engine->IngestBatch(batch, &result).ok()) state.SkipWithError("ingest failed");
    events += result.accepted;
    ingest_transitions += result.transitions;
    now += step_ms;  // simulated time, then a sweep
    SweepResult sweep;
    if (!engine->AdvanceClock(now, &sweep).ok()) state.SkipWithError("clock failed");
    sweep_transitions += sweep.transitions;
    sweep_micros += sweep.micros;
    sweep_due += sweep.due;
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
  // With UseRealTime() rates are per wall-clock second, fsync waits included.
  state.counters["events_per_s"] = benchmark::Counter(double(events), benchmark::Counter::kIsRate);
  // Transitions per event on ingest and from the clock, due items popped per event, and
  // the sweeps' wall time per batch as SweepResult::micros reports it (noisy here: at 1M
  // users it read 5-8 ms per batch for today's mix too, with nothing due).
  state.counters["ingest_tr_per_event"] = double(ingest_transitions) / double(events);
  state.counters["sweep_tr_per_event"] = double(sweep_transitions) / double(events);
  state.counters["sweep_due_per_event"] = double(sweep_due) / double(events);
  state.counters["sweep_ms_per_batch"] = double(sweep_micros) / 1e3 / double(state.iterations());
  // Bytes the log wrote per event (records and their transitions): what the commit's
  // copy, checksum and compression scale with.
  state.counters["log_bytes_per_event"] =
      double(engine->Stats().log_write_bytes) / double(std::max<uint64_t>(events, 1));
  const auto contacts = engine->Stats().contacts;
  const size_t heap = HeapBytes() - heap_before;
  // Users and slots live in mapped pools, which malloc statistics do not see.
  const size_t pool = engine->Stats().pool_bytes;
  state.counters["contacts"] = double(contacts);
  state.counters["heap_bytes_per_user"] = double(heap) / double(contacts);
  state.counters["pool_bytes_per_user"] = double(pool) / double(contacts);
  state.counters["bytes_per_user"] = double(heap + pool) / double(contacts);
  // The log's memtables, table readers and block cache are in the heap figure; they are
  // bounded by the log's options (~100 MiB), not by the users, so the state's own bytes
  // per user leave them out.
  const size_t log_memory = engine->Stats().log_memory_bytes;
  state.counters["log_memory_MiB"] = double(log_memory) / double(1 << 20);
  state.counters["state_bytes_per_user"] =
      (double(heap + pool) - double(log_memory)) / double(contacts);
  uint64_t members = 0;
  for (const BucketInfo& b : engine->ListBuckets()) {
    members += b.counts.active;
    if (std::getenv("BUCKETD_BENCH_VERBOSE") != nullptr) {
      std::fprintf(stderr, "%s %llu\n", b.id.c_str(),
                   static_cast<unsigned long long>(b.counts.active));
    }
  }
  state.counters["memberships"] = double(members);
  state.counters["bytes_per_membership"] = double(heap + pool) / double(members);
  engine.reset();
  std::filesystem::remove_all(dir);
}

// 300 batches (3M events): the first 100 create the 1M users, the rest revisit them. The
// mixes alternate within each durability mode, today's first.
const bool kRegistered = [] {
  const int64_t batches = std::max<int64_t>(1, int64_t(Users()) * 3 / int64_t(kBatch));
  for (int64_t sync : {1, 0}) {
    for (int64_t beyond : {0, 1}) {
      benchmark::RegisterBenchmark("BM_IngestBatches", BM_IngestBatches)
          ->Args({sync, beyond})
          ->ArgNames({"sync", "beyond"})
          ->Iterations(batches)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace bucketd

BENCHMARK_MAIN();
