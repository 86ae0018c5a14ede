#pragma once
// Criteria compiled against interned ids, evaluated for one user at one instant.
//
// Besides the truth value, it answers the question the time indices are built on: the
// earliest instant at which the clock alone can change the value. Each leg knows its own
// (a windowed count or aggregate when a contribution ages out, a time property at
// `t - offset`, first seen at `first + W`, a sequence at `t1 + X` or the end of its lookback,
// a bucket leg at `enteredAt + for`); the tree combines them in Kleene three-valued logic (a
// leg that may still flip is "unknown"). A bucket leg's inner bucket changes by its own
// clock: the fold re-evaluates the dependents then (Fold::ReevaluateDependents).
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/interner.h"
#include "engine/definition/definition.h"
#include "engine/state/state.h"

namespace bucketd {

class CompiledCriteria {
 public:
  // Reads each history's newest `(*history_depth)[name id]` instants (Newest(), state.h):
  // the depth every bucket together needs, which the caller keeps current. `bucket_index`
  // maps a bucket leg's id to its bucket (the definition was checked: it exists).
  CompiledCriteria(const Criteria& criteria, Interner* event_names, Interner* property_keys,
                   const std::vector<uint32_t>* history_depth,
                   const std::function<uint32_t(std::string_view)>& bucket_index);

  // REQUIRES: every event in the user's history occurred at or before `t`.
  bool Evaluate(const User& user, TimeMs t) const;
  // The value at `t`, and the earliest instant > t at which it can change without new
  // input (kNever if the clock alone cannot change it).
  struct Outlook {
    bool value;
    TimeMs next;
  };
  Outlook Assess(const User& user, TimeMs t) const;

  // When the criteria (holding at `now`) began to hold without a break, as far as the
  // retained history proves it; nullopt when it cannot be derived (docs/design.md, "Backfill and
  // dwell anchors").
  std::optional<TimeMs> HeldSince(const User& user, TimeMs now) const;

  // Per event name id: the retention depth its windowed legs need (see EventHistory).
  struct NameDepth {
    uint32_t name_id;
    uint32_t depth;
  };
  const std::vector<NameDepth>& name_depths() const { return name_depths_; }
  // The event names whose events can change the value (the inverted index): a filtered
  // leg's, an aggregate's and a sequence's steps' own names, not their stream keys.
  const std::vector<uint32_t>& event_name_ids() const { return event_name_ids_; }
  const std::vector<uint32_t>& property_key_ids() const { return property_key_ids_; }
  // The derived streams the legs read, each with the event name id that feeds it.
  struct StreamUse {
    uint32_t name_id;
    StreamSpec spec;
  };
  const std::vector<StreamUse>& streams() const { return streams_; }
  // The buckets the bucket legs read.
  const std::vector<uint32_t>& bucket_refs() const { return bucket_refs_; }

  // Explain (SPEC §3b, GET /v1/buckets/{id}/explain/{userId}): every node of the tree for
  // one user at `now`, in preorder (the root first, each composite before its conditions).
  // `outlook` is what the evaluation itself computes for the node (OutlookNode, the same
  // per-leg functions the fold calls), `held_since` what HeldSince derives for it, so an
  // explanation cannot disagree with what the fold does. The rest is the leg's current value,
  // for reading only. Changes nothing.
  struct LegExplanation {
    std::string path;  // "criteria", "criteria.conditions[1]", ...
    CriteriaType type = CriteriaType::kProperty;
    // What the leg checks (only its type's field is meaningful).
    PropertyOp property_op = PropertyOp::kEq;
    EventCheck check = EventCheck::kExists;
    bool is_and = true;     // composite
    bool completed = true;  // sequence outcome
    bool member = true;     // bucket check
    Outlook outlook{false, kNever};
    std::optional<TimeMs> held_since;  // holding nodes, where derivable
    // The current value.
    std::optional<PropertyValue> current;  // property: the contact's value, if set
    std::optional<TimeMs> time;            // before/after: the property read as a time
    std::optional<TimeMs> threshold;       // before/after: now + offset
    std::optional<uint64_t> count;         // exists/not_exists/count: the events counted
    // The count or aggregate read only what the engine retains (the newest instants the
    // operator needs, or an aggregate's bounded contributions), and more may lie beyond.
    bool capped = false;
    std::optional<double> aggregate;         // sum avg min max; distinct: the number of values
    uint64_t contributions = 0;              // aggregates: what the value is over
    std::optional<TimeMs> window_start;      // windowed legs: what occurred after it counts
    std::optional<TimeMs> first_at;          // first_seen: the first matching event
    std::optional<TimeMs> started_at;        // sequence: t1, the latest step-1 occurrence
    std::optional<TimeMs> completed_at;      // sequence: the earliest completion after t1
    std::optional<TimeMs> deadline;          // sequence: t1 + within
    std::optional<TimeMs> lookback_ends_at;  // sequence: t1 + lookback
    uint32_t bucket = 0;                     // bucket legs: the inner bucket's index
    bool inner_active = false;               // bucket legs: an active member of it
    std::optional<TimeMs> inner_entered_at;  // since when
  };
  std::vector<LegExplanation> Explain(const User& user, TimeMs now) const;

 private:
  Instants NewestOf(const EventHistory& history) const {
    return Newest(history, DepthOf(*history_depth_, history.name_id()));
  }

  struct Node {
    CriteriaType type = CriteriaType::kProperty;
    // The property key id; an event leg's history id (its name's, or its filtered
    // stream's); an aggregate's or a sequence's stream id; a bucket leg's bucket index.
    uint32_t id = 0;
    // property
    PropertyOp property_op = PropertyOp::kEq;
    PropertyValue value;
    TimeMs time_offset_ms = 0;
    // event, normalized: exists = gt 0, not_exists = eq 0
    EventCheck check = EventCheck::kExists;
    CountOp count_op = CountOp::kGt;
    int64_t count_value = 0;
    double aggregate_value = 0;
    TimeMs within_ms = 0;  // 0: all-time. A sequence's X.
    // composite
    bool is_and = true;
    std::vector<uint32_t> children;
    // sequence
    bool completed = true;
    TimeMs lookback_ms = 0;  // 0: none
    // bucket
    bool member = true;
    TimeMs for_ms = 0;
  };
  uint32_t Compile(const Criteria& criteria, Interner* event_names, Interner* property_keys,
                   const std::function<uint32_t(std::string_view)>& bucket_index);
  bool EvaluateNode(uint32_t node, const User& user, TimeMs t) const;
  Outlook OutlookNode(uint32_t node, const User& user, TimeMs t) const;
  Outlook PropertyOutlook(const Node& node, const User& user, TimeMs t) const;
  Outlook EventOutlook(const Node& node, const User& user, TimeMs t) const;
  Outlook AggregateOutlook(const Node& node, const User& user, TimeMs t) const;
  Outlook SequenceOutlook(const Node& node, const User& user, TimeMs t) const;
  Outlook BucketOutlook(const Node& node, const User& user, TimeMs t) const;
  std::optional<TimeMs> HeldSinceNode(uint32_t node, const User& user, TimeMs now) const;
  std::optional<TimeMs> EventHeldSince(const Node& node, const User& user, TimeMs now) const;
  std::optional<TimeMs> AggregateHeldSince(const Node& node, const User& user, TimeMs now) const;
  std::optional<TimeMs> LegHeldSince(const Node& node, const User& user, TimeMs now) const;
  void ExplainNode(uint32_t index, std::string path, const User& user, TimeMs now,
                   std::vector<LegExplanation>* out) const;

  const std::vector<uint32_t>* history_depth_;
  std::vector<Node> nodes_;  // nodes_[0] is the root
  std::vector<NameDepth> name_depths_;
  std::vector<uint32_t> event_name_ids_;
  std::vector<uint32_t> property_key_ids_;
  std::vector<StreamUse> streams_;
  std::vector<uint32_t> bucket_refs_;
};

// Lookups shared by the evaluator and the fold; the vectors are sorted by id.
const EventHistory* FindHistory(const User& user, uint32_t name_id);
const Property* FindProperty(const User& user, uint32_t key_id);
const AggregateHistory* FindAggregate(const User& user, uint32_t stream_id);
const SequenceHistory* FindSequence(const User& user, uint32_t stream_id);
const Slot* FindSlotOf(const User& user, uint32_t bucket);

// How an event enters an aggregate's or a sequence's history (one home, shared by the fold
// and the preview): `value` is the event's value of the aggregated property; a kAggregate
// stream takes numbers, a kDistinct one any scalar.
void AddContribution(LegHistories* legs, const StreamSpec& spec, const PropertyValue& value,
                     TimeMs at);
void AddSequenceOccurrence(LegHistories* legs, const StreamSpec& spec, TimeMs at);

// The hash a distinct aggregate keeps of a scalar value: its type and contents (64-bit
// xxHash; docs/design.md, "Aggregates").
uint64_t ValueHash(const PropertyValue& value);

// The stream keys (State::StreamSpec): interned beside event names, never equal to one.
std::string FilteredStreamKey(std::string_view event_name,
                              const std::vector<PropertyFilter>& where);
std::string AggregateStreamKey(std::string_view event_name, std::string_view property,
                               const std::vector<PropertyFilter>& where, bool distinct);
std::string SequenceStreamKey(const std::vector<SequenceStep>& steps);

}  // namespace bucketd
