// The time indices and the sweep (SPEC §5). Every slot whose state the clock alone can
// change is filed in its bucket's index at the exact instant of its next possible change;
// a sweep pops what is due in time order and re-files. Nothing else is ever visited, so a
// sweep with nothing due costs one look at each bucket's first entry (the first look at a
// page sorts it, once).
#include <algorithm>
#include <cassert>
#include <queue>
#include <tuple>

#include "engine/fold/emitter.h"
#include "engine/fold/fold.h"

namespace bucketd {

TimeMs NextDwellFire(const Slot& slot, const DwellReaction& reaction);  // membership.cc

CompiledCriteria::Outlook Fold::AssessSlot(const Slot& slot, TimeMs t) const {
  const CompiledCriteria* criteria = compiled_[slot.bucket].get();
  return criteria ? criteria->Assess(*slot.user, t) : CompiledCriteria::Outlook{false, kNever};
}

TimeMs Fold::ComputeDue(const Slot& slot, TimeMs t) const {
  return ComputeDue(slot, AssessSlot(slot, t));
}

TimeMs Fold::ComputeDue(const Slot& slot, const CompiledCriteria::Outlook& outlook) const {
  const Bucket& bucket = *state_.buckets[slot.bucket];
  if (!bucket.evaluable()) return kNever;
  const BucketDefinition& def = bucket.def;
  const bool dynamic = def.kind == BucketKind::kDynamic;
  TimeMs due = kNever;
  if (slot.active) {
    if (def.max_dwell_ms) due = std::min(due, slot.entered_at + *def.max_dwell_ms);
    if (dynamic) {
      // Holding: re-check when a windowed leg can flip. Not holding: the leave waits for
      // the end of minDwell (a deferred leave).
      due = std::min(due,
                     outlook.value ? outlook.next : slot.entered_at + def.min_dwell_ms.value_or(0));
    }
    for (const DwellReaction& reaction : def.dwell) {
      due = std::min(due, NextDwellFire(slot, reaction));
    }
  } else if (dynamic) {
    // A blocked slot waits for the criteria to stop holding; a free one (if the bucket
    // takes clock-driven joins) for them to start.
    if (slot.rejoin_blocked ? outlook.value : (!outlook.value && def.reconcile_joins)) {
      due = outlook.next;
    }
  }
  return due;
}

void Fold::Unfile(Slot* slot) {
  if (slot->due_at != kNever) {
    state_.buckets[slot->bucket]->due_index.Erase(DueKey{slot->due_at, slot->user_index()},
                                                  state_.slot_pool.IndexOf(slot));
  }
  slot->due_at = kNever;
}

void Fold::Refile(Slot* slot, TimeMs t) { Refile(slot, t, AssessSlot(*slot, t)); }

void Fold::Refile(Slot* slot, TimeMs t, const CompiledCriteria::Outlook& outlook) {
  TimeMs due = ComputeDue(*slot, outlook);
  // A definition change can make something due in the past; it is applied from now.
  if (due != kNever) due = std::max(due, t);
  // Re-filing is lazy in one direction: a slot already filed at an earlier instant stays
  // there. Popping it early re-evaluates at that instant, finds nothing changed and files
  // it at its true instant then: one filing per due period instead of one per event (a
  // busy user pushes a window's end later with every event). Evaluating early is exact,
  // because ingest applies a user's due items first, so no event of theirs is later.
  if (slot->due_at <= due) return;  // filed earlier (or both kNever)
  Unfile(slot);
  if (due == kNever) return;
  slot->due_at = due;
  slot->user->lower_next_due_floor(due);
  state_.buckets[slot->bucket]->due_index.Insert(DueKey{due, slot->user_index()},
                                                 state_.slot_pool.IndexOf(slot));
  if (on_filed_) on_filed_(slot->bucket);
}

void Fold::ApplyUserDue(User* user, TimeMs now, Emitter* emit) {
  if (user->next_due_floor() > now) return;
  for (;;) {
    Slot* next = nullptr;
    TimeMs floor = kNever;
    for (Slot* slot : user->slots) {
      floor = std::min(floor, slot->due_at);
      if (slot->due_at > now) continue;
      if (next == nullptr || slot->due_at < next->due_at ||
          (slot->due_at == next->due_at && slot->bucket < next->bucket)) {
        next = slot;
      }
    }
    if (next == nullptr) {
      user->set_next_due_floor(floor);
      return;
    }
    const TimeMs due = next->due_at;
    Unfile(next);
    ProcessDue(next, due, now, 0, emit);
  }
}

uint64_t Fold::SweepTo(TimeMs t, Emitter* emit) {
  // K-way merge of the buckets' indices by (due, bucket, user): the global order is
  // deterministic, so replaying a sweep record numbers its transitions identically.
  using Head = std::tuple<TimeMs, uint32_t, uint32_t>;
  std::priority_queue<Head, std::vector<Head>, std::greater<>> heads;
  // With bucket legs, re-evaluating a reader (ReevaluateDependents) can file it at or
  // before t, ahead of the bucket's head in the queue: the new front is queued as well, and
  // a queued head that is no longer its bucket's front is passed over.
  const bool dependencies = !state_.dependents.empty();
  std::vector<std::pair<TimeMs, uint32_t>> queued;  // per bucket: the front it has queued
  if (dependencies) queued.assign(state_.buckets.size(), {kNever, 0});
  auto push_head = [&](const Bucket& bucket) {
    if (bucket.due_index.empty()) return;
    const DueKey& first = bucket.due_index.front_key();
    if (first.due_at > t) return;
    if (dependencies) {
      if (queued[bucket.index] == std::pair{first.due_at, first.user_index}) return;
      queued[bucket.index] = {first.due_at, first.user_index};
    }
    heads.emplace(first.due_at, bucket.index, first.user_index);
  };
  for (const auto& bucket : state_.buckets) {
    if (bucket->evaluable()) push_head(*bucket);
  }
  if (dependencies) {
    on_filed_ = [&](uint32_t bucket) {
      if (state_.buckets[bucket]->evaluable()) push_head(*state_.buckets[bucket]);
    };
  }
  uint64_t popped = 0;
  while (!heads.empty()) {
    const auto [head_due, index, head_user] = heads.top();
    heads.pop();
    Bucket& bucket = *state_.buckets[index];
    if (dependencies) {
      if (queued[index] != std::pair{head_due, head_user}) continue;  // superseded
      queued[index] = {kNever, 0};
      if (bucket.due_index.empty() || bucket.due_index.front_key().due_at != head_due ||
          bucket.due_index.front_key().user_index != head_user) {
        push_head(bucket);  // unfiled meanwhile: queue what is first now
        continue;
      }
    }
    PrefetchDue(bucket.due_index);
    Slot* slot = state_.slot_pool.At(bucket.due_index.front());
    const TimeMs due = slot->due_at;
    // Unfile(slot), knowing where the slot is filed.
    bucket.due_index.EraseFront(DueKey{due, slot->user_index()});
    slot->due_at = kNever;
    ProcessDue(slot, due, t, 0, emit);
    ++popped;
    push_head(bucket);
  }
  on_filed_ = nullptr;
  sweep_due_popped_ += popped;
  return popped;
}

// The sweep pops a bucket's entries in order, so the next ones are known: warm their
// slot, then their user, then the user's arrays, then what they point to (the event
// histories a criteria check reads), a few pops ahead (as Lookahead does for ingest).
// Popping is otherwise a chain of cache misses through scattered slots.
void Fold::PrefetchDue(const DueIndex& index) const {
  constexpr size_t kDistance = 3;
  // Resolving a slot's index is a shift, a load from the pool's (hot) block list and an
  // add: no miss of its own ahead of the slot's.
  const SlotPool& pool = state_.slot_pool;
  index.VisitUpcoming(4 * kDistance + 1, [&](size_t position, DueIndex::SlotIndex slot) {
    if (position == 4 * kDistance) {
      const Slot* at = pool.At(slot);
      __builtin_prefetch(at);
      __builtin_prefetch(reinterpret_cast<const char*>(at) + 64);
    } else if (position % kDistance == 0) {
      PrefetchUserState(pool.At(slot)->user, static_cast<int>(4 - position / kDistance));
    }
  });
}

bool Fold::HasDue(TimeMs t) const {
  const auto next = NextDue();
  return next && *next <= t;
}

std::optional<TimeMs> Fold::NextDue() const {
  std::optional<TimeMs> next;
  for (const auto& bucket : state_.buckets) {
    if (!bucket->evaluable() || bucket->due_index.empty()) continue;
    const TimeMs due = bucket->due_index.front_key().due_at;
    if (!next || due < *next) next = due;
  }
  return next;
}

}  // namespace bucketd
