#include "bucketd/types.h"

#include "bucketd/limits.h"

#include <string>

namespace bucketd {

std::string_view ToString(MembershipSource source) {
  switch (source) {
    case MembershipSource::kEvent:
      return "event";
    case MembershipSource::kManual:
      return "manual";
    case MembershipSource::kReconcile:
      return "reconcile";
    case MembershipSource::kBackfill:
      return "backfill";
  }
  return "unknown";
}

std::string_view ToString(LeaveReason reason) {
  switch (reason) {
    case LeaveReason::kCriteria:
      return "criteria";
    case LeaveReason::kMaxDwell:
      return "maxDwell";
    case LeaveReason::kManual:
      return "manual";
  }
  return "unknown";
}

std::string_view ToString(TransitionKind kind) {
  switch (kind) {
    case TransitionKind::kEntered:
      return "entered";
    case TransitionKind::kLeft:
      return "left";
    case TransitionKind::kDwell:
      return "dwell";
  }
  return "unknown";
}

bool ParseTransitionKind(std::string_view name, TransitionKind* kind) {
  for (TransitionKind k :
       {TransitionKind::kEntered, TransitionKind::kLeft, TransitionKind::kDwell}) {
    if (name == ToString(k)) {
      *kind = k;
      return true;
    }
  }
  return false;
}

std::string Transition::Name() const {
  std::string name(kReservedEventPrefix);
  name += ToString(kind);
  name += ':';
  name += bucket_id;
  if (kind == TransitionKind::kDwell) {
    name += ':';
    name += dwell_label;
  }
  return name;
}

std::string Transition::IdempotencyKey() const {
  std::string key(kReservedEventPrefix);
  key += bucket_id;
  key += ':';
  key += user_id;
  key += ':';
  key += ToString(kind);
  key += ':';
  if (kind == TransitionKind::kDwell) {
    key += dwell_label;
    key += ':';
    key += std::to_string(entry_count);
    key += ':';
    key += std::to_string(dwell_count);
  } else {
    key += std::to_string(entry_count);
  }
  return key;
}

}  // namespace bucketd
