// Webhook subscriptions in the fold: the log's records create and delete them and move
// their cursors, so a replay (or a snapshot and its tail) rebuilds every subscription where
// the live engine had it. Nothing here reads a clock or emits a transition.
#include <algorithm>

#include "bucketd/limits.h"
#include "engine/base/input_rules.h"
#include "engine/fold/fold.h"

namespace bucketd {

const Subscription* Fold::FindSubscription(std::string_view id) const {
  for (const Subscription& sub : state_.subscriptions) {
    if (sub.id == id) return &sub;
  }
  return nullptr;
}

Status Fold::CheckSubscription(const Record& r) const {
  if (r.subscription_id.empty()) return Status::InvalidArgument("id", "must not be empty");
  const Subscription* existing = FindSubscription(r.subscription_id);
  switch (r.kind) {
    case RecordKind::kSubscriptionCreate:
      if (existing != nullptr) {
        return Status::AlreadyExists("subscription " + r.subscription_id + " already exists");
      }
      if (state_.subscriptions.size() >= kSubscriptionsMax) {
        return Status::FailedPrecondition(
            "", "at most " + std::to_string(kSubscriptionsMax) + " subscriptions");
      }
      if (Status s = ValidateSubscriptionUrl(r.url); !s.ok()) return s;
      if (Status s = ValidateSubscriptionSecret(r.secret); !s.ok()) return s;
      if (!r.bucket_id.empty()) {
        if (Status s = ValidateBucketId(r.bucket_id, "bucket"); !s.ok()) return s;
      }
      // The cursor is not checked against the stream's end: a replay shard
      // (parallel_replay.h) counts only its own transitions. The engine checks it.
      return Status::Ok();
    case RecordKind::kSubscriptionDelete:
      if (existing == nullptr) return Status::NotFound("unknown subscription");
      return Status::Ok();
    case RecordKind::kSubscriptionAdvance:
      if (existing == nullptr) return Status::NotFound("unknown subscription");
      // Cursors never move back: a delivery worker that raced a newer advance is refused
      // rather than making a consumer receive the same transitions again.
      if (r.through_seq < existing->cursor) {
        return Status::FailedPrecondition("cursor", "a subscription's cursor never moves back");
      }
      return Status::Ok();
    default:
      BUCKETD_CHECK_MSG(false, "not a subscription record");
      return Status::Ok();
  }
}

void Fold::ApplySubscription(const Record& r) {
  auto& subs = state_.subscriptions;
  switch (r.kind) {
    case RecordKind::kSubscriptionCreate: {
      Subscription sub;
      sub.id = r.subscription_id;
      sub.url = r.url;
      sub.secret = r.secret;
      sub.bucket_id = r.bucket_id;
      sub.kinds = r.kinds;
      sub.cursor = r.through_seq;
      sub.created_at = r.at;
      subs.push_back(std::move(sub));
      break;
    }
    case RecordKind::kSubscriptionDelete:
      subs.erase(std::find_if(subs.begin(), subs.end(),
                              [&](const Subscription& s) { return s.id == r.subscription_id; }));
      break;
    case RecordKind::kSubscriptionAdvance:
      for (Subscription& sub : subs) {
        if (sub.id == r.subscription_id) sub.cursor = r.through_seq;
      }
      break;
    default:
      BUCKETD_CHECK_MSG(false, "not a subscription record");
  }
}

}  // namespace bucketd
