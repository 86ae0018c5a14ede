// Backfill of one new bucket over 1M contacts with history (SPEC §6, issue 6): the time of
// the define record's fold and the heap it adds. Drives the Fold directly with records,
// so the log write of the one define record is excluded.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <chrono>
#include <random>

#include "engine/definition/definition.h"
#include "engine/fold/fold.h"

namespace bucketd {
namespace {

constexpr uint32_t kUsers = 1'000'000;
constexpr TimeMs kStart = 1793491200000;  // 2026-11-01
constexpr TimeMs kDay = 24 * 60 * 60 * 1000;

size_t HeapBytes() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

Record Define(uint64_t seq, TimeMs at, const char* json) {
  BucketDefinition def;
  if (!ParseBucketDefinition(json, &def).ok()) std::abort();
  Record r;
  r.seq = seq;
  r.at = at;
  r.kind = RecordKind::kBucketDefine;
  r.bucket_id = def.id;
  r.definition_json = ToCanonicalJson(def);
  return r;
}

// 1M contacts, three events each over 60 days, under one existing bucket that retains
// app.opened instants; then `went-dormant` (a dwell after 30d, anchors derived) is added.
void BM_BackfillNewBucket(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    auto fold = std::make_unique<Fold>();
    std::vector<Transition> out;
    uint64_t seq = 0;
    const char* active =
        R"({"id":"active-7d","criteria":{"type":"event","eventName":"app.opened","check":"exists","within":"7d"}})";
    if (!fold->Apply(Define(++seq, kStart, active), &out).ok()) std::abort();
    std::mt19937_64 rng(7);
    Record r;
    r.kind = RecordKind::kEvent;
    r.event_name = "app.opened";
    const TimeMs now = kStart + 60 * kDay;
    for (uint32_t u = 0; u < kUsers; ++u) {
      r.user_id = "user-" + std::to_string(u);
      for (int k = 0; k < 3; ++k) {
        r.seq = ++seq;
        r.at = kStart + static_cast<TimeMs>(u) * (60 * kDay / kUsers);
        r.occurred_at = r.at - static_cast<TimeMs>(rng() % (30 * kDay));
        if (!fold->Apply(r, nullptr).ok()) std::abort();
      }
    }
    out.clear();
    const size_t heap_before = HeapBytes();
    const Record define = Define(
        ++seq, now,
        R"({"id":"went-dormant","dwell":[{"after":"30d"}],"criteria":{"type":"composite","operator":"and","conditions":[{"type":"event","eventName":"app.opened","check":"exists"},{"type":"event","eventName":"app.opened","check":"not_exists","within":"7d"}]}})");
    state.ResumeTiming();

    if (!fold->Apply(define, &out).ok()) state.SkipWithError("define failed");

    state.PauseTiming();
    state.counters["members"] = double(fold->state().buckets[1]->members.size());
    state.counters["heap_added_MB"] = double(HeapBytes() - heap_before) / 1e6;
    state.counters["transitions"] = double(out.size());
    fold.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_BackfillNewBucket)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace bucketd

BENCHMARK_MAIN();
