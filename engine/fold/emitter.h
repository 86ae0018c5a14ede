#pragma once
// Appends transitions to the output of one Apply(), numbering them gap-free.
#include <string>
#include <vector>

#include "engine/fold/fold.h"

namespace bucketd {

struct Fold::Emitter {
  Emitter(State* state, std::vector<Transition>* out, TimeMs detected_at)
      : state(state), out(out), detected_at(detected_at) {}

  // `dwell` is the reaction a kDwell transition fires.
  void Emit(TransitionKind kind, const Bucket& bucket, const Slot& slot, TimeMs at,
            LeaveReason reason = LeaveReason::kCriteria, const DwellReaction* dwell = nullptr,
            uint32_t dwell_count = 0) {
    const uint64_t seq = ++state->transition_seq;
    ++emitted;
    if (out == nullptr) return;  // replay without a consumer: only the numbering matters
    Transition& t = out->emplace_back();
    t.seq = seq;
    t.kind = kind;
    t.bucket_id = bucket.def.id;
    t.bucket_name = bucket.def.name;
    t.user_id = slot.user->id;
    t.email = slot.user->email;
    t.entry_count = slot.entry_count;
    t.source = slot.source;
    t.reason = reason;
    if (dwell != nullptr) t.dwell_label = dwell->Label();  // built only for a consumer
    t.dwell_count = dwell_count;
    t.at = at;
    t.detected_at = detected_at;
    if (kind == TransitionKind::kLeft) t.entered_at = slot.entered_at;
  }

  State* state;
  std::vector<Transition>* out;
  TimeMs detected_at;
  uint64_t emitted = 0;
};

}  // namespace bucketd
