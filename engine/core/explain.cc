#include "engine/core/explain.h"

#include <string>

#include "engine/core/fold_reader.h"
#include "engine/fold/criteria_eval.h"

namespace bucketd {
namespace {

std::optional<TimeMs> Instant(TimeMs t) {
  if (t == kNever) return std::nullopt;
  return t;
}

std::string CheckName(const CompiledCriteria::LegExplanation& leg) {
  switch (leg.type) {
    case CriteriaType::kProperty:
      return std::string(PropertyOpName(leg.property_op));
    case CriteriaType::kEvent:
      return std::string(EventCheckName(leg.check));
    case CriteriaType::kComposite:
      return leg.is_and ? "and" : "or";
    case CriteriaType::kSequence:
      return leg.completed ? "completed" : "abandoned";
    case CriteriaType::kBucket:
      return leg.member ? "member" : "not_member";
  }
  return {};
}

ExplainLeg ToLeg(const State& state, CompiledCriteria::LegExplanation&& in) {
  ExplainLeg leg;
  leg.path = std::move(in.path);
  leg.type = std::string(CriteriaTypeName(in.type));
  leg.check = CheckName(in);
  leg.holds = in.outlook.value;
  leg.held_since = in.held_since;
  leg.next = Instant(in.outlook.next);
  leg.current = std::move(in.current);
  leg.time = in.time;
  leg.threshold = in.threshold;
  leg.count = in.count;
  leg.capped = in.capped;
  leg.aggregate = in.aggregate;
  if (in.type == CriteriaType::kEvent && IsAggregate(in.check)) {
    leg.contributions = in.contributions;
  }
  leg.window_start = in.window_start;
  leg.first_at = in.first_at;
  leg.started_at = in.started_at;
  leg.completed_at = in.completed_at;
  leg.deadline = in.deadline;
  leg.lookback_ends_at = in.lookback_ends_at;
  if (in.type == CriteriaType::kBucket) {
    leg.bucket_id = state.buckets[in.bucket]->def.id;
    leg.inner_member = in.inner_active;
    leg.inner_entered_at = in.inner_entered_at;
  }
  return leg;
}

std::string EntryLimitName(EntryLimit limit) {
  return limit == EntryLimit::kOnce ? "once" : "once_per_period";
}

// What holds a join or a leave off, read with the fold's own rules (membership.cc).
void AddBlockers(const Fold& fold, const Bucket& bucket, const Slot* slot, TimeMs now,
                 const CompiledCriteria::Outlook& outlook, ExplainResult* out) {
  const BucketDefinition& def = bucket.def;
  const bool active = slot != nullptr && slot->active;
  if (!def.enabled) {
    out->blockers.push_back(
        {"disabled", std::nullopt,
         "the bucket is disabled: nothing joins or leaves until it is enabled, when it catches "
         "up at that instant"});
  }
  if (def.kind == BucketKind::kDynamic) {
    // EvaluateOnIngest / ProcessDue: an active member whose criteria stop holding inside
    // minDwell leaves at its end, not before.
    if (active && def.min_dwell_ms) {
      const TimeMs min_dwell_end = slot->entered_at + *def.min_dwell_ms;
      if (now < min_dwell_end && !outlook.value) {
        out->blockers.push_back(
            {"minDwell", min_dwell_end,
             "the criteria no longer hold; the leave is deferred until minDwell has passed"});
      } else if (now < min_dwell_end && outlook.next < min_dwell_end) {
        out->blockers.push_back({"minDwell", min_dwell_end,
                                 "a leave before minDwell has passed is deferred until it has"});
      }
    }
    const bool rejoin_blocked = slot != nullptr && !active && slot->rejoin_blocked;
    if (rejoin_blocked && outlook.value) {
      out->blockers.push_back(
          {"maxDwell", std::nullopt,
           "left by maxDwell while the criteria held: no re-join until they stop holding"});
    }
    if (!active && !rejoin_blocked && !def.reconcile_joins &&
        (outlook.value || outlook.next != kNever)) {
      out->blockers.push_back(
          {"reconcileJoins", std::nullopt,
           outlook.value
               ? "the criteria began to hold by the clock, and reconcileJoins is false: the "
                 "user joins on the next input this bucket reads (an event it names, or a "
                 "change of a property it reads) while they hold"
               : "reconcileJoins is false: when the clock makes the criteria hold, the user "
                 "joins only on the next input this bucket reads"});
    }
  }
  if (def.entry_limit != EntryLimit::kUnlimited && slot != nullptr && slot->entry_count > 0) {
    const std::string limit = EntryLimitName(def.entry_limit);
    if (active) {
      // Join keeps last_left_at (the previous leave) while the membership is open.
      if (!fold.EntryAllowed(bucket, *slot, slot->entered_at)) {
        out->blockers.push_back(
            {"entryLimit", std::nullopt,
             "this membership opened without `entered` (entryLimit " + limit + ")"});
      }
    } else {
      Slot next = *slot;  // the slot as a join now would leave it
      next.entry_count += 1;
      if (!fold.EntryAllowed(bucket, next, now)) {
        std::optional<TimeMs> until;
        if (def.entry_limit == EntryLimit::kOncePerPeriod) {
          until = *slot->last_left_at + *def.entry_period_ms;
        }
        out->blockers.push_back(
            {"entryLimit", until,
             "a join would open the membership without `entered` (entryLimit " + limit + ")"});
      }
    }
  }
}

}  // namespace

Status ExplainMembership(const Fold& fold, std::string_view bucket_id, std::string_view user_id,
                         TimeMs now, ExplainResult* out) {
  const Bucket* bucket = fold.bucket(bucket_id);
  if (bucket == nullptr) return FoldReader::UnknownBucket(bucket_id);
  const User* user = fold.user(user_id);
  if (user == nullptr) return Status::NotFound("unknown contact");
  if (user->deleted) {
    return Status::NotFound(
        "the contact was deleted (DELETE /v1/contacts): it is in no bucket, and an event "
        "for it is refused");
  }
  *out = ExplainResult{};
  out->bucket_id = bucket->def.id;
  out->user_id = user->id;
  out->now = now;
  out->dynamic = bucket->def.kind == BucketKind::kDynamic;
  out->enabled = bucket->def.enabled;
  const Slot* slot = FindSlotOf(*user, bucket->index);
  out->member = slot != nullptr && slot->active;
  CompiledCriteria::Outlook outlook{false, kNever};
  if (const CompiledCriteria* criteria = fold.compiled(bucket->index);
      out->dynamic && criteria != nullptr) {
    std::vector<CompiledCriteria::LegExplanation> legs = criteria->Explain(*user, now);
    outlook = legs.front().outlook;  // the root's is Assess's
    out->holds = outlook.value;
    out->next = Instant(outlook.next);
    out->held_since = legs.front().held_since;
    out->legs.reserve(legs.size());
    for (CompiledCriteria::LegExplanation& leg : legs) {
      out->legs.push_back(ToLeg(fold.state(), std::move(leg)));
    }
  }
  if (slot != nullptr) {
    out->next_due_at = Instant(slot->due_at);
    if (slot->entry_count > 0) {
      ExplainMembershipState m;
      m.active = slot->active;
      m.entered_at = slot->entered_at;
      m.entry_count = slot->entry_count;
      m.source = slot->source;
      m.dwell_anchor_at = slot->dwell_anchor_at;
      m.left_at = slot->last_left_at;
      if (slot->active && bucket->def.max_dwell_ms) {
        m.max_dwell_at = slot->entered_at + *bucket->def.max_dwell_ms;
      }
      out->membership = m;
    }
  }
  AddBlockers(fold, *bucket, slot, now, outlook, out);
  return Status::Ok();
}

}  // namespace bucketd
