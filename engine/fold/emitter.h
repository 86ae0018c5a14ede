#pragma once
// Appends the transitions of one Apply() to its vector or hands them to its sink, numbering
// them gap-free.
#include <string>
#include <vector>

#include "engine/base/transition_view.h"
#include "engine/fold/fold.h"

namespace bucketd {

struct Fold::Emitter {
  // At most one of `out` and `sink` is set; neither: replay without a consumer.
  Emitter(State* state, std::vector<Transition>* out, TransitionSink* sink, TimeMs detected_at)
      : state(state), out(out), sink(sink), detected_at(detected_at) {}

  // `dwell` is the reaction a kDwell transition fires. Inlined into its few callers: a
  // sweep calls it once per due item, and out of line it cost the sidecar ~7% a due item.
  [[gnu::always_inline]] void Emit(TransitionKind kind, const Bucket& bucket, const Slot& slot,
                                   TimeMs at, LeaveReason reason = LeaveReason::kCriteria,
                                   const DwellReaction* dwell = nullptr, uint32_t dwell_count = 0) {
    const uint64_t seq = ++state->transition_seq;
    ++emitted;
    if (sink != nullptr) return EmitView(seq, kind, bucket, slot, at, reason, dwell, dwell_count);
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

  // Emit's transition, to the sink: its strings borrowed, not copied.
  void EmitView(uint64_t seq, TransitionKind kind, const Bucket& bucket, const Slot& slot,
                TimeMs at, LeaveReason reason, const DwellReaction* dwell, uint32_t dwell_count) {
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
    if (dwell != nullptr) {
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
  std::vector<Transition>* out;
  TransitionSink* sink;
  TimeMs detected_at;
  uint64_t emitted = 0;
  std::string label;  // the dwell label of the transition being handed to `sink`
};

}  // namespace bucketd
