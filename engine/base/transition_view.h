#pragma once
// One transition as the fold makes it, its strings borrowed (from the bucket's definition and
// the user) instead of copied into a Transition: for a consumer that only encodes them, as
// the engine's sweeps do when staging transitions in the log. A Transition costs a copy of
// each string (the email a heap allocation) and its destruction; a view costs neither.
#include <cstdint>
#include <optional>
#include <string_view>

#include "bucketd/types.h"

namespace bucketd {

struct TransitionView {
  uint64_t seq = 0;
  TransitionKind kind = TransitionKind::kEntered;
  std::string_view bucket_id;
  std::string_view bucket_name;
  std::string_view user_id;
  std::optional<std::string_view> email;
  uint32_t entry_count = 0;
  MembershipSource source = MembershipSource::kEvent;
  LeaveReason reason = LeaveReason::kCriteria;
  std::string_view dwell_label;
  uint32_t dwell_count = 0;
  TimeMs at = 0;
  TimeMs detected_at = 0;
  std::optional<TimeMs> entered_at;

  // The same transition, fields for fields.
  static TransitionView Of(const Transition& t) {
    TransitionView v;
    v.seq = t.seq;
    v.kind = t.kind;
    v.bucket_id = t.bucket_id;
    v.bucket_name = t.bucket_name;
    v.user_id = t.user_id;
    if (t.email) v.email = *t.email;
    v.entry_count = t.entry_count;
    v.source = t.source;
    v.reason = t.reason;
    v.dwell_label = t.dwell_label;
    v.dwell_count = t.dwell_count;
    v.at = t.at;
    v.detected_at = t.detected_at;
    v.entered_at = t.entered_at;
    return v;
  }
};

// Receives the transitions of one Fold::Apply in order; a view is valid during Add only.
class TransitionSink {
 public:
  virtual void Add(const TransitionView& transition) = 0;

 protected:
  ~TransitionSink() = default;
};

}  // namespace bucketd
