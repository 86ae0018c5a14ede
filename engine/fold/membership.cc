// Joins, leaves and dwell fires of one (user, bucket) slot: SPEC §4 and §5.
#include <algorithm>
#include <cstdint>

#include "engine/base/check.h"
#include "engine/fold/emitter.h"
#include "engine/fold/fold.h"

namespace bucketd {
namespace {

int64_t PackLabel(const DwellReaction& r) {
  return r.duration_ms * 2 + (r.kind == DwellReaction::Kind::kEvery ? 1 : 0);
}

uint32_t* FindStamp(Slot* slot, int64_t label_key) {
  DwellStamp* stamp = slot->user->dwell.Find(slot->bucket, label_key);
  return stamp == nullptr ? nullptr : &stamp->count;
}

}  // namespace

// The next fire instant of one reaction in the slot's active membership, or kNever.
TimeMs NextDwellFire(const Slot& slot, const DwellReaction& reaction) {
  const DwellStamp* stamp = slot.user->dwell.Find(slot.bucket, PackLabel(reaction));
  const uint32_t count = stamp == nullptr ? 0 : stamp->count;
  if (reaction.kind == DwellReaction::Kind::kAfter) {
    return count == 0 ? slot.anchor() + reaction.duration_ms : kNever;
  }
  return slot.anchor() + reaction.duration_ms * static_cast<int64_t>(count + 1);
}

bool Fold::EntryAllowed(const Bucket& bucket, const Slot& slot, TimeMs at) const {
  switch (bucket.def.entry_limit) {
    case EntryLimit::kUnlimited:
      return true;
    case EntryLimit::kOnce:
      return slot.entry_count == 1;
    case EntryLimit::kOncePerPeriod:
      return slot.entry_count == 1 || !bucket.def.entry_period_ms || !slot.last_left_at ||
             at - *slot.last_left_at >= *bucket.def.entry_period_ms;
  }
  return true;
}

void Fold::Join(Slot* slot, TimeMs at, MembershipSource source, bool silent, Emitter* emit) {
  BUCKETD_CHECK(!slot->active);
  Bucket& bucket = *state_.buckets[slot->bucket];
  slot->active = true;
  slot->rejoin_blocked = false;
  slot->entry_count += 1;
  slot->source = source;
  slot->entered_at = at;
  slot->dwell_anchor_at.reset();
  slot->user->dwell.EraseBucket(slot->bucket);
  bucket.members.Add(slot);
  ++bucket.entered_total;
  // A join the entry limit forbids is still a membership; only `entered` is withheld.
  if (!silent && EntryAllowed(bucket, *slot, at)) {
    emit->Emit(TransitionKind::kEntered, bucket, *slot, at);
  }
  ReevaluateDependents(slot->user, slot->bucket, at, emit);
}

void Fold::Leave(Slot* slot, TimeMs at, LeaveReason reason, bool silent, Emitter* emit) {
  BUCKETD_CHECK(slot->active);
  Bucket& bucket = *state_.buckets[slot->bucket];
  if (!silent) emit->Emit(TransitionKind::kLeft, bucket, *slot, at, reason);
  slot->active = false;
  slot->last_left_at = at;
  bucket.members.Remove(slot);
  ++bucket.left_total;
  // Saturating: the total only feeds the average dwell metric, and a state decoded from a
  // damaged snapshot (the snapshot fuzzer found one) must not reach signed overflow.
  int64_t dwell = 0;
  if (__builtin_sub_overflow(at, TimeMs{slot->entered_at}, &dwell)) dwell = INT64_MAX;
  if (__builtin_add_overflow(bucket.closed_dwell_ms_total, dwell, &bucket.closed_dwell_ms_total)) {
    bucket.closed_dwell_ms_total = INT64_MAX;
  }
  // The full history is the transition stream; memory keeps the newest few per user.
  CompactVector<PastMembership>& past = slot->user->past;
  if (past.size() == kPastMembershipsPerUserMax) past.erase(past.begin());
  // Room for one at the first leave: most users who have left a bucket have left one once
  // (in ingest_bench's §3b mix 145K of 152K), where growing by two left half of it unused.
  if (past.empty()) past.reserve(1);
  past.push_back(PastMembership{slot->bucket, slot->entry_count, slot->source, reason,
                                slot->entered_at, at, slot->dwell_anchor_at});
  slot->user->dwell.EraseBucket(slot->bucket);
  ReevaluateDependents(slot->user, slot->bucket, at, emit);
}

void Fold::ReevaluateDependents(User* user, uint32_t bucket, TimeMs at, Emitter* emit) {
  if (bucket >= state_.dependents.size()) return;
  for (uint32_t index : state_.dependents[bucket]) {
    const Bucket& reader = *state_.buckets[index];
    if (!reader.evaluable() || reader.def.kind != BucketKind::kDynamic) continue;
    const auto outlook = compiled_[index]->Assess(*user, at);
    Slot* slot = FindSlot(user, index);
    if (slot == nullptr) {
      if (!outlook.value && !(reader.def.reconcile_joins && outlook.next != kNever)) continue;
      slot = GetOrCreateSlot(user, index);
    }
    EvaluateOnIngest(slot, at, outlook, emit, dependent_source_);
  }
}

void Fold::EvaluateOnIngest(Slot* slot, TimeMs now, const CompiledCriteria::Outlook& outlook,
                            Emitter* emit, MembershipSource source) {
  const Bucket& bucket = *state_.buckets[slot->bucket];
  const bool holds = outlook.value;
  if (slot->active) {
    const bool in_min_dwell =
        bucket.def.min_dwell_ms && now < slot->entered_at + *bucket.def.min_dwell_ms;
    // Inside minDwell the leave is deferred to a re-check (filed by Refile), not dropped.
    if (!holds && !in_min_dwell) Leave(slot, now, LeaveReason::kCriteria, false, emit);
  } else if (!holds) {
    slot->rejoin_blocked = false;
  } else if (!slot->rejoin_blocked) {
    Join(slot, now, source, false, emit);
  }
  Refile(slot, now, outlook);
}

// The earliest instant the active membership could end by criteria or maxDwell (dwell
// fires coalesce only up to just before it: a leave at t wins over a dwell at t).
TimeMs Fold::LeaveBound(const Slot& slot, const CompiledCriteria::Outlook& outlook) const {
  const BucketDefinition& def = state_.buckets[slot.bucket]->def;
  TimeMs bound = kNever;
  if (def.max_dwell_ms) bound = slot.entered_at + *def.max_dwell_ms;
  if (def.kind == BucketKind::kDynamic) {
    const TimeMs min_dwell_end = slot.entered_at + def.min_dwell_ms.value_or(0);
    bound = std::min(bound, outlook.value ? std::max(outlook.next, min_dwell_end) : min_dwell_end);
  }
  return bound;
}

void Fold::ProcessDue(Slot* slot, TimeMs due, TimeMs horizon, TimeMs at_floor, Emitter* emit) {
  Bucket& bucket = *state_.buckets[slot->bucket];
  const BucketDefinition& def = bucket.def;
  const bool dynamic = def.kind == BucketKind::kDynamic;
  const User& user = *slot->user;
  const auto outlook = dynamic ? compiled_[bucket.index]->Assess(user, due)
                               : CompiledCriteria::Outlook{false, kNever};
  const TimeMs at = std::max(due, at_floor);
  if (slot->active) {
    if (def.max_dwell_ms && slot->entered_at + *def.max_dwell_ms <= due) {
      Leave(slot, at, LeaveReason::kMaxDwell, false, emit);
      // They re-join only when the criteria newly hold (SPEC §4).
      slot->rejoin_blocked = outlook.value;
    } else if (dynamic && !outlook.value &&
               !(def.min_dwell_ms && due < slot->entered_at + *def.min_dwell_ms)) {
      Leave(slot, at, LeaveReason::kCriteria, false, emit);
    }
    if (slot->active) {
      const TimeMs limit = std::min(horizon, LeaveBound(*slot, outlook) - 1);
      FireDwell(slot, due, std::max(limit, due), at_floor, emit);
    }
  } else if (dynamic) {
    if (!outlook.value) {
      slot->rejoin_blocked = false;
    } else if (!slot->rejoin_blocked && def.reconcile_joins) {
      Join(slot, at, MembershipSource::kReconcile, false, emit);
    }
  }
  Refile(slot, due, outlook);
}

void Fold::FireDwell(Slot* slot, TimeMs due, TimeMs limit, TimeMs at_floor, Emitter* emit) {
  const Bucket& bucket = *state_.buckets[slot->bucket];
  for (const DwellReaction& reaction : bucket.def.dwell) {
    if (NextDwellFire(*slot, reaction) > due) continue;
    const int64_t key = PackLabel(reaction);
    uint32_t* count = FindStamp(slot, key);
    if (count == nullptr) {
      DwellStamps& stamps = slot->user->dwell;
      stamps.push_back(DwellStamp{key, 0, slot->bucket});
      count = &stamps.back().count;
    }
    uint32_t ordinal = 1;
    if (reaction.kind == DwellReaction::Kind::kEvery) {
      // Coalesce every interval elapsed by `limit` into one fire of the latest ordinal.
      ordinal = static_cast<uint32_t>((limit - slot->anchor()) / reaction.duration_ms);
      ordinal = std::max(ordinal, *count + 1);
    }
    *count = ordinal;
    const TimeMs grid_at = slot->anchor() + reaction.duration_ms * static_cast<int64_t>(ordinal);
    const TimeMs at = std::max({grid_at, TimeMs{slot->entered_at}, at_floor});
    emit->Emit(TransitionKind::kDwell, bucket, *slot, at, LeaveReason::kCriteria, &reaction,
               ordinal);
  }
}

}  // namespace bucketd
