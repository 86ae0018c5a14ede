// The sweep (SPEC §5, issue 3): 1M and 10M active memberships in 10 buckets, swept with
// (a) nothing due, (b) 1% due, (c) 10% due. Drives the Fold directly with records, so the
// figures exclude the log write. Reports µs per sweep, ns per due item and heap bytes per
// membership with a breakdown of where they go.
//
// Workload: bucket k is `e<k> exists within W`; every user has one `e<k>` event per
// bucket, so each user is a member of all 10 and leaves bucket k exactly when that event
// ages out. The events' occurredAt are spread over a span S < W by a fixed permutation of
// the membership number, so each 1% of S holds exactly 1% of the memberships. All events
// are processed at kStart; the first leave falls due at kStart + W - S.
//
// Arg `beyond` (issue 16): buckets 5 to 9 use the SPEC §3b legs instead, each leaving at
// the same instant as `e<k> exists within W` would (except bucket 9, below), so the due
// items are the same: b5 a `where` filter (the events carry tier = "gold"), b6 a windowed
// sum (of `amount`, 1 to 100, ≥ 1 within W), b7 a sequence (e7 then e7.paid within 1 ms,
// abandoned, lookback W: abandoned from occurredAt + 1 ms until occurredAt + W), b8 a time
// property (the e8 event patches renewsAt = occurredAt + W; `after` "+0s" holds until
// then), b9 a composite of `e9 exists within W` and a bucket leg (member of b0): it leaves
// when the earlier of e9 and e0 ages out, the second through the dependents of b0's leave.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/definition/definition.h"
#include "engine/fold/fold.h"

namespace bucketd {
namespace {

constexpr uint32_t kBuckets = 10;
constexpr TimeMs kStart = 1793491200000;   // 2026-11-01
constexpr TimeMs kSpanMs = 86'400'000;     // S: due instants spread over one day
constexpr TimeMs kWindowMs = 2 * kSpanMs;  // W > S: every membership is active at kStart
// Odd and not a multiple of 5, so m -> m * kSpread mod N permutes 0..N-1 for N = 10^k.
constexpr uint64_t kSpread = 2654435761;

size_t HeapBytes() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

// glibc's chunk for an allocation: usable size plus the 8-byte size header.
size_t Chunk(const void* p) {
  return p == nullptr ? 0 : malloc_usable_size(const_cast<void*>(p)) + 8;
}

// The heap buffer of an absl::InlinedVector, if it spilled out of its inline storage (which
// is counted with the object holding it).
template <typename V>
size_t SpilledChunk(const V& v) {
  return v.capacity() > V().capacity() ? Chunk(v.data()) : 0;
}

// Where the heap bytes of the built state go, summed by walking it.
struct Breakdown {
  size_t slot = 0;          // Slots in the pool
  size_t slots_vector = 0;  // User::slots buffers, for users with more slots than fit inline
  size_t events = 0;        // spilled User::events and EventHistory::newest buffers
  size_t user = 0;     // the users' arena blocks (inline arrays), ids, emails, properties, past
                       // memberships, dwell stamps, State::users, user_ids
  size_t members = 0;  // MemberIndex B-trees (the heap growth of the first read building them)
  size_t legs = 0;     // LegHistories: aggregate and sequence histories (SPEC §3b)
  size_t due = 0;      // the time indices' pages: room for entries, filled or not
};

class Population {
 public:
  Population(uint64_t memberships, bool beyond) : memberships_(memberships), beyond_(beyond) {
    const size_t heap_before = HeapBytes();
    fold_ = std::make_unique<Fold>();
    Define();
    Ingest();
    const size_t heap_unread = HeapBytes();
    // Member pages build the lazy member indices (member_index.h); a long-running server
    // that serves them has done so, and they hold nothing until then.
    const auto read_start = std::chrono::steady_clock::now();
    for (const auto& bucket : fold_->state().buckets) {
      bucket->members.sorted(fold_->state().users, bucket->index);
    }
    members_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - read_start).count();
    // Slots and users live in the fold's pools (mapped blocks), which malloc statistics do
    // not see.
    heap_bytes_ = HeapBytes() - heap_before + fold_->state().slot_pool.reserved_bytes() +
                  fold_->state().user_arena.reserved_bytes();
    // The B-trees the first read built.
    breakdown_.members = HeapBytes() - heap_unread;
    Walk();
  }

  Fold& fold() { return *fold_; }
  uint64_t memberships() const { return memberships_; }
  bool beyond() const { return beyond_; }
  // How far into the span S sweeps have taken the population so far.
  TimeMs swept_ms() const { return swept_ms_; }
  TimeMs AdvanceSwept(TimeMs slice_ms) { return swept_ms_ += slice_ms; }

  // Sweeps at `at` and returns the seconds the Apply took.
  double Sweep(TimeMs at, std::vector<Transition>* out) {
    Record r;
    r.seq = ++seq_;
    r.at = at;
    r.kind = RecordKind::kSweep;
    const auto start = std::chrono::steady_clock::now();
    const Status status = fold_->Apply(r, out);
    const auto end = std::chrono::steady_clock::now();
    if (!status.ok()) std::abort();
    return std::chrono::duration<double>(end - start).count();
  }

  void ReportMemory(benchmark::State& state) const {
    const double n = double(memberships_);
    state.counters["memberships"] = n;
    state.counters["build_s"] = build_seconds_;
    state.counters["members_s"] = members_seconds_;
    state.counters["B_per_membership"] = double(heap_bytes_) / n;
    state.counters["sizeof_Slot"] = double(sizeof(Slot));
    state.counters["sizeof_User"] = double(sizeof(User));
    state.counters["B_slot"] = double(breakdown_.slot) / n;
    state.counters["B_slots_vec"] = double(breakdown_.slots_vector) / n;
    state.counters["B_events"] = double(breakdown_.events) / n;
    state.counters["B_user"] = double(breakdown_.user) / n;
    state.counters["B_members"] = double(breakdown_.members) / n;
    state.counters["B_legs"] = double(breakdown_.legs) / n;
    state.counters["B_due"] = double(breakdown_.due) / n;
    const size_t known = breakdown_.slot + breakdown_.slots_vector + breakdown_.events +
                         breakdown_.user + breakdown_.members + breakdown_.legs + breakdown_.due;
    state.counters["B_other"] = (double(heap_bytes_) - double(known)) / n;
  }

 private:
  std::string Criteria(uint32_t k) const {
    const std::string name = "e" + std::to_string(k);
    const std::string w = std::to_string(kWindowMs) + "ms";
    const std::string exists = R"({"type":"event","eventName":")" + name +
                               R"(","check":"exists","within":")" + w + R"("})";
    if (!beyond_ || k < 5) return exists;
    switch (k) {
      case 5:
        return R"({"type":"event","eventName":"e5","check":"exists","within":")" + w +
               R"(","where":[{"property":"tier","operator":"eq","value":"gold"}]})";
      case 6:
        return R"({"type":"event","eventName":"e6","check":"sum","property":"amount","operator":"gte","value":1,"within":")" +
               w + R"("})";
      case 7:
        return R"({"type":"sequence","steps":[{"eventName":"e7"},{"eventName":"e7.paid"}],"within":"1ms","outcome":"abandoned","lookback":")" +
               w + R"("})";
      case 8:
        return R"({"type":"property","property":"renewsAt","operator":"after","value":"+0s"})";
      default:
        return R"({"type":"composite","operator":"and","conditions":[)" + exists +
               R"(,{"type":"bucket","bucketId":"b0","check":"member"}]})";
    }
  }

  void Define() {
    for (uint32_t k = 0; k < kBuckets; ++k) {
      const std::string json =
          R"({"id":"b)" + std::to_string(k) + R"(","criteria":)" + Criteria(k) + "}";
      BucketDefinition def;
      if (!ParseBucketDefinition(json, &def).ok()) std::abort();
      Record r;
      r.seq = ++seq_;
      r.at = kStart;
      r.kind = RecordKind::kBucketDefine;
      r.definition_json = ToCanonicalJson(def);
      if (!fold_->Apply(r, nullptr).ok()) std::abort();
    }
  }

  void Ingest() {
    const auto start = std::chrono::steady_clock::now();
    std::string names[kBuckets];
    for (uint32_t k = 0; k < kBuckets; ++k) names[k] = "e" + std::to_string(k);
    Record r;
    r.at = kStart;
    r.kind = RecordKind::kEvent;
    const uint64_t users = memberships_ / kBuckets;
    for (uint64_t u = 0; u < users; ++u) {
      r.user_id = "u" + std::to_string(u);
      for (uint32_t k = 0; k < kBuckets; ++k) {
        const uint64_t rank = (u * kBuckets + k) * kSpread % memberships_;
        r.seq = ++seq_;
        r.event_name = names[k];
        r.occurred_at = kStart - kSpanMs + TimeMs(rank * kSpanMs / memberships_);
        r.properties.clear();
        r.event_properties.clear();
        if (beyond_ && k == 5) {
          r.event_properties.push_back({"tier", PropertyValue::String("gold")});
        }
        if (beyond_ && k == 6) {
          r.event_properties.push_back({"amount", PropertyValue::Number(double(1 + rank % 100))});
        }
        if (beyond_ && k == 8) {
          r.properties.push_back(
              {"renewsAt", PropertyValue::Number(double(r.occurred_at + kWindowMs))});
        }
        if (!fold_->Apply(r, nullptr).ok()) std::abort();
      }
    }
    build_seconds_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  void Walk() {
    const State& s = fold_->state();
    breakdown_.slot = s.slot_pool.reserved_bytes();
    for (const auto& bucket : s.buckets) {
      breakdown_.due += bucket->due_index.capacity() * sizeof(DueIndex::Stored);
    }
    breakdown_.user = s.user_arena.reserved_bytes() + s.users.capacity() * sizeof(s.users[0]) +
                      s.user_ids.bytes();
    for (const User* user : s.users) {
      breakdown_.user += Chunk(user->id.allocation());
      breakdown_.user += Chunk(user->email.allocation()) + Chunk(user->properties.allocation()) +
                         Chunk(user->past.allocation());
      breakdown_.slots_vector += Chunk(user->slots.allocation());
      breakdown_.events += Chunk(user->events.allocation());
      // Instants beyond the inline capacity live in a heap buffer of their own.
      for (const EventHistory& h : user->events) breakdown_.events += Chunk(h.newest.allocation());
      breakdown_.user += Chunk(user->dwell.allocation());
      // One block, and the buffers of what spilled out of it.
      breakdown_.legs += Chunk(user->legs.allocation());
      for (const AggregateHistory& h : user->legs.aggregates()) {
        breakdown_.legs += SpilledChunk(h.newest) + Chunk(h.distinct.allocation());
      }
      for (const SequenceHistory& h : user->legs.sequences()) {
        breakdown_.legs += Chunk(h.occurrences().allocation());
      }
    }
  }

  uint64_t memberships_;
  bool beyond_;
  uint64_t seq_ = 0;
  TimeMs swept_ms_ = 0;
  std::unique_ptr<Fold> fold_;
  size_t heap_bytes_ = 0;
  double build_seconds_ = 0;
  double members_seconds_ = 0;  // the first member read of every bucket
  Breakdown breakdown_;
};

// First instant at which the memberships whose occurredAt offset is below `offset_ms` are
// all due, and no others.
TimeMs DueThrough(TimeMs offset_ms) { return kStart + kWindowMs - kSpanMs + offset_ms - 1; }

// Arg 0: memberships; arg 1: per mille of the memberships due at each sweep (0: none); arg 2:
// the mix (1: beyond, the SPEC §3b legs).
// The population of the last benchmark, kept for the next one of the same size and mix:
// building 10M memberships takes most of a minute, so the cases of one size share one build.
std::unique_ptr<Population> shared_population;

Population* GetPopulation(uint64_t memberships, bool beyond) {
  if (!shared_population || shared_population->memberships() != memberships ||
      shared_population->beyond() != beyond) {
    shared_population.reset();  // freed before the next build measures the heap
    shared_population = std::make_unique<Population>(memberships, beyond);
  }
  return shared_population.get();
}

void BM_Sweep(benchmark::State& state) {
  const uint64_t memberships = uint64_t(state.range(0));
  const int64_t due_permille = state.range(1);
  Population* population = GetPopulation(memberships, state.range(2) != 0);
  Fold& fold = population->fold();
  uint64_t active = 0;
  for (const auto& bucket : fold.state().buckets) active += bucket->members.size();
  std::vector<Transition> out;
  const uint64_t popped_before = fold.sweep_due_popped();
  uint64_t transitions = 0;
  double seconds = 0;
  int64_t sweeps = 0;
  for (auto _ : state) {
    ++sweeps;
    // Nothing due: sweep again at the last instant swept, before the next due instant (a
    // sweep may repeat an instant). Otherwise each sweep takes the next slice of S.
    TimeMs at = fold.state().now;
    if (due_permille > 0) {
      const TimeMs slice_ms = kSpanMs * due_permille / 1000;
      if (population->swept_ms() + slice_ms > kSpanMs) {
        state.SkipWithError("every membership has been swept out; rebuild with fewer sweeps");
        break;
      }
      at = DueThrough(population->AdvanceSwept(slice_ms));
    }
    const double elapsed = population->Sweep(at, &out);
    state.SetIterationTime(elapsed);
    seconds += elapsed;
    transitions += out.size();
    out.clear();
  }
  const uint64_t popped = fold.sweep_due_popped() - popped_before;
  state.counters["active_at_start"] = double(active);
  state.counters["us_per_sweep"] = seconds * 1e6 / double(sweeps);
  state.counters["due_per_sweep"] = double(popped) / double(sweeps);
  state.counters["ns_per_due"] = popped ? seconds * 1e9 / double(popped) : 0;
  state.counters["sweep_due_popped"] = double(popped);
  state.counters["transitions"] = double(transitions);
  population->ReportMemory(state);
}

// Fixed iterations, run in this order on one build per size and mix: (a) 1,000 sweeps at
// one instant, (b) 20 successive slices of 1%, (c) 5 successive slices of 10% (of the 80%
// left).
const bool kRegistered = [] {
  struct Case {
    int64_t due_permille;
    int64_t iterations;
  };
  for (int64_t memberships : {1'000'000, 10'000'000}) {
    for (int64_t beyond : {0, 1}) {  // today's mix, then the SPEC §3b legs
      for (const Case c : {Case{0, 1000}, Case{10, 20}, Case{100, 5}}) {
        benchmark::RegisterBenchmark("BM_Sweep", BM_Sweep)
            ->Args({memberships, c.due_permille, beyond})
            ->ArgNames({"memberships", "due_permille", "beyond"})
            ->Iterations(c.iterations)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace bucketd

BENCHMARK_MAIN();
