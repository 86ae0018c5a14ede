// Bucket preview (POST /v1/buckets/preview, Engine::PreviewBucket) over 1M contacts under the
// ten bench buckets: the pass over every contact for a few shapes, and the slow path, where a
// threshold deeper than memory keeps has the contacts' events of that name re-read from the
// log. Through the embedded API (the HTTP route adds one request's framing).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>

#include "bench/bench_buckets.h"
#include "bucketd/engine.h"

namespace bucketd {
namespace {

constexpr uint32_t kUsers = 1'000'000;
constexpr size_t kBatch = 10'000;
constexpr TimeMs kStart = 1793491200000;  // 2026-11-01
constexpr TimeMs kDay = 24 * 60 * 60 * 1000;

// 1M users, each with 3 events of random names and properties (as ingest_bench), and every
// tenth with 6 `page.viewed` more (more than the 4 instants kept of a name no bucket reads).
struct Population {
  std::string dir;
  std::unique_ptr<Engine> engine;

  Population() {
    char pattern[] = "/tmp/bucketd-preview-bench-XXXXXX";
    dir = mkdtemp(pattern);
    Options options;
    options.data_dir = dir;
    options.durability = Durability::kAsync;
    options.clock = ClockMode::kManual;
    options.start_time_ms = kStart + 30 * kDay;
    options.snapshot_every_records = 0;
    options.snapshot_every_ms = 0;
    if (!Engine::Open(options, &engine).ok()) std::abort();
    for (const char* json : bench::kBenchBuckets) {
      if (!engine->DefineBucket(json, DefineMode::kCreate, std::nullopt, nullptr).ok()) {
        std::abort();
      }
    }
    std::mt19937_64 rng(1);
    const char* names[] = {"feature.used", "feature.used", "app.opened", "purchase", "signup"};
    const char* plans[] = {"trial", "pro", "enterprise", "free"};
    std::vector<EventInput> batch;
    auto flush = [&] {
      BatchResult result;
      if (!engine->IngestBatch(batch, &result).ok() || !result.rejected.empty()) std::abort();
      batch.clear();
    };
    for (uint32_t u = 0; u < kUsers; ++u) {
      const int extra = u % 10 == 0 ? 6 : 0;
      for (int k = 0; k < 3 + extra; ++k) {
        EventInput& e = batch.emplace_back();
        e.user_id = "user-" + std::to_string(u);
        e.event = k < 3 ? names[rng() % 5] : "page.viewed";
        e.occurred_at_ms = kStart + static_cast<TimeMs>(rng() % (30 * kDay));
        if (k == 0) {
          e.contact_properties.push_back({"plan", PropertyValue::String(plans[rng() % 4])});
          e.contact_properties.push_back({"ltv", PropertyValue::Number(double(rng() % 2000))});
        }
      }
      if (batch.size() >= kBatch) flush();
    }
    flush();
  }
  ~Population() {
    engine.reset();
    std::filesystem::remove_all(dir);
  }
};

Population& Shared() {
  static Population population;
  return population;
}

void RunPreview(benchmark::State& state, const char* json) {
  Engine& engine = *Shared().engine;
  PreviewResult result;
  for (auto _ : state) {
    if (!engine.PreviewBucket(json, &result).ok()) state.SkipWithError("preview failed");
  }
  state.counters["contacts"] = double(engine.Stats().contacts);
  state.counters["count"] = double(result.count);
  state.counters["entering"] = double(result.entering);
  state.counters["leaving"] = double(result.leaving);
  state.counters["reread_users"] = double(result.history_reread_users);
}

// A new windowed count (retained depth suffices).
void BM_PreviewWindowedCount(benchmark::State& state) {
  RunPreview(state, R"({"id":"new","criteria":{"type":"event","eventName":"feature.used",)"
                    R"("check":"count","operator":"gte","value":2,"within":"14d"}})");
}
BENCHMARK(BM_PreviewWindowedCount)->Unit(benchmark::kMillisecond);

// A replacement of a stored bucket (entering and leaving against its 1M-contact membership).
void BM_PreviewReplaceComposite(benchmark::State& state) {
  RunPreview(state, R"({"id":"low-engagement","criteria":{"type":"composite","operator":"and",)"
                    R"("conditions":[{"type":"property","property":"plan","operator":"neq",)"
                    R"("value":"free"},{"type":"event","eventName":"feature.used","check":)"
                    R"("count","operator":"lt","value":2,"within":"14d"}]}})");
}
BENCHMARK(BM_PreviewReplaceComposite)->Unit(benchmark::kMillisecond)->Iterations(4);

// A threshold deeper than memory keeps: 100,000 contacts' page.viewed re-read from the log.
void BM_PreviewHistoryReread(benchmark::State& state) {
  RunPreview(state, R"({"id":"readers","criteria":{"type":"event","eventName":"page.viewed",)"
                    R"("check":"count","operator":"gte","value":5,"within":"30d"}})");
}
BENCHMARK(BM_PreviewHistoryReread)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace bucketd

BENCHMARK_MAIN();
