#pragma once
// Criteria compiled against interned ids, evaluated for one user at one instant.
//
// Besides the truth value, it answers the question the time indices are built on: the
// earliest instant at which the clock alone can change the value. Only windowed event
// legs change with time (their counts fall as events age out), so that instant is the
// first flip of a windowed leg that could change the whole tree's value (Kleene
// three-valued logic: a leg that may still flip is "unknown").
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "engine/base/interner.h"
#include "engine/definition/definition.h"
#include "engine/state/state.h"

namespace bucketd {

class CompiledCriteria {
 public:
  // Reads each history's newest `(*history_depth)[name id]` instants (Newest(), state.h):
  // the depth every bucket together needs, which the caller keeps current.
  CompiledCriteria(const Criteria& criteria, Interner* event_names, Interner* property_keys,
                   const std::vector<uint32_t>* history_depth);

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
  const std::vector<uint32_t>& event_name_ids() const { return event_name_ids_; }
  const std::vector<uint32_t>& property_key_ids() const { return property_key_ids_; }

 private:
  std::span<const TimeMs> NewestOf(const EventHistory& history) const {
    return Newest(history, DepthOf(*history_depth_, history.name_id));
  }

  struct Node {
    CriteriaType type;
    uint32_t id;  // event name id or property key id
    // property
    PropertyOp property_op;
    PropertyValue value;
    // event, normalized: exists = gt 0, not_exists = eq 0
    CountOp count_op;
    int64_t count_value;
    TimeMs within_ms;  // 0: all-time
    // composite
    bool is_and;
    std::vector<uint32_t> children;
  };
  uint32_t Compile(const Criteria& criteria, Interner* event_names, Interner* property_keys);
  bool EvaluateNode(uint32_t node, const User& user, TimeMs t) const;
  Outlook OutlookNode(uint32_t node, const User& user, TimeMs t) const;
  bool EvaluateProperty(const Node& node, const User& user) const;
  Outlook EventOutlook(const Node& node, const User& user, TimeMs t) const;
  std::optional<TimeMs> HeldSinceNode(uint32_t node, const User& user, TimeMs now) const;
  std::optional<TimeMs> EventHeldSince(const Node& node, const User& user, TimeMs now) const;

  const std::vector<uint32_t>* history_depth_;
  std::vector<Node> nodes_;  // nodes_[0] is the root
  std::vector<NameDepth> name_depths_;
  std::vector<uint32_t> event_name_ids_;
  std::vector<uint32_t> property_key_ids_;
};

// Lookups shared by the evaluator and the fold; both vectors are sorted by id.
const EventHistory* FindHistory(const User& user, uint32_t name_id);
const Property* FindProperty(const User& user, uint32_t key_id);

}  // namespace bucketd
