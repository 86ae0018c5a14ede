#pragma once
// Hands the transitions of one Apply() to its sink, numbering them gap-free.
#include <string>

#include "engine/base/transition_view.h"
#include "engine/fold/fold.h"

namespace bucketd {

struct Fold::Emitter {
  Emitter(State* state, TransitionSink* sink, TimeMs detected_at)
      : state(state), sink(sink), detected_at(detected_at) {}

  // `dwell` is the reaction a kDwell transition fires.
  void Emit(TransitionKind kind, const Bucket& bucket, const Slot& slot, TimeMs at,
            LeaveReason reason = LeaveReason::kCriteria, const DwellReaction* dwell = nullptr,
            uint32_t dwell_count = 0) {
    const uint64_t seq = ++state->transition_seq;
    ++emitted;
    if (sink == nullptr) return;  // replay without a consumer: only the numbering matters
    TransitionView t;
    t.seq = seq;
    t.kind = kind;
    t.bucket_id = bucket.def.id;
    t.bucket_name = bucket.def.name;
    t.user_id = slot.user->id;
    if (slot.user->email) t.email = *slot.user->email;
    t.entry_count = slot.entry_count;
    t.source = slot.source;
    t.reason = reason;
    if (dwell != nullptr) {  // built only for a consumer
      label = dwell->Label();
      t.dwell_label = label;
    }
    t.dwell_count = dwell_count;
    t.at = at;
    t.detected_at = detected_at;
    if (kind == TransitionKind::kLeft) t.entered_at = slot.entered_at;
    sink->Add(t);
  }

  State* state;
  TransitionSink* sink;
  TimeMs detected_at;
  uint64_t emitted = 0;
  std::string label;  // the dwell label of the transition being emitted
};

}  // namespace bucketd
