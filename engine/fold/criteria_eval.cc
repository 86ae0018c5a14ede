#include "engine/fold/criteria_eval.h"

#include <algorithm>
#include <cassert>

namespace bucketd {
namespace {

bool CompareCount(CountOp op, int64_t count, int64_t value) {
  switch (op) {
    case CountOp::kGt:
      return count > value;
    case CountOp::kGte:
      return count >= value;
    case CountOp::kLt:
      return count < value;
    case CountOp::kLte:
      return count <= value;
    case CountOp::kEq:
      return count == value;
  }
  return false;
}

// How many of the newest instants a windowed leg must see to decide its operator
// (the count is capped at this many, and every capped count decides the same way).
uint32_t DepthFor(CountOp op, int64_t value) {
  const auto n = static_cast<uint32_t>(value);
  switch (op) {
    case CountOp::kGte:
    case CountOp::kLt:
      return std::max<uint32_t>(n, 1);
    case CountOp::kGt:
    case CountOp::kLte:
    case CountOp::kEq:
      return n + 1;
  }
  return 1;
}

bool SameJson(const PropertyValue& a, const PropertyValue& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case PropertyValue::Type::kNull:
      return true;
    case PropertyValue::Type::kBool:
      return a.boolean == b.boolean;
    case PropertyValue::Type::kNumber:
      return a.number == b.number;
    default:
      return a.text == b.text;
  }
}

}  // namespace

const EventHistory* FindHistory(const User& user, uint32_t name_id) {
  auto it = std::lower_bound(user.events.begin(), user.events.end(), name_id,
                             [](const EventHistory& h, uint32_t id) { return h.name_id < id; });
  return it != user.events.end() && it->name_id == name_id ? &*it : nullptr;
}

const Property* FindProperty(const User& user, uint32_t key_id) {
  auto it = std::lower_bound(user.properties.begin(), user.properties.end(), key_id,
                             [](const Property& p, uint32_t id) { return p.key_id < id; });
  return it != user.properties.end() && it->key_id == key_id ? &*it : nullptr;
}

CompiledCriteria::CompiledCriteria(const Criteria& criteria, Interner* event_names,
                                   Interner* property_keys,
                                   const std::vector<uint32_t>* history_depth)
    : history_depth_(history_depth) {
  nodes_.reserve(8);
  Compile(criteria, event_names, property_keys);
  auto dedupe = [](std::vector<uint32_t>* ids) {
    std::sort(ids->begin(), ids->end());
    ids->erase(std::unique(ids->begin(), ids->end()), ids->end());
  };
  dedupe(&event_name_ids_);
  dedupe(&property_key_ids_);
}

uint32_t CompiledCriteria::Compile(const Criteria& c, Interner* event_names,
                                   Interner* property_keys) {
  const auto index = static_cast<uint32_t>(nodes_.size());
  nodes_.push_back(Node{c.type, 0, c.property_op, c.value, CountOp::kGt, 0, 0, c.is_and, {}});
  switch (c.type) {
    case CriteriaType::kProperty: {
      nodes_[index].id = property_keys->Intern(c.property);
      property_key_ids_.push_back(nodes_[index].id);
      break;
    }
    case CriteriaType::kEvent: {
      Node& node = nodes_[index];
      node.id = event_names->Intern(c.event_name);
      node.within_ms = c.within_ms.value_or(0);
      switch (c.check) {
        case EventCheck::kExists:
          node.count_op = CountOp::kGt, node.count_value = 0;
          break;
        case EventCheck::kNotExists:
          node.count_op = CountOp::kEq, node.count_value = 0;
          break;
        case EventCheck::kCount:
          node.count_op = c.count_op, node.count_value = c.count_value;
          break;
      }
      event_name_ids_.push_back(node.id);
      if (node.within_ms > 0) {
        name_depths_.push_back({node.id, DepthFor(node.count_op, node.count_value)});
      }
      break;
    }
    case CriteriaType::kComposite: {
      for (const Criteria& child : c.conditions) {
        const uint32_t child_index = Compile(child, event_names, property_keys);
        nodes_[index].children.push_back(child_index);
      }
      break;
    }
  }
  return index;
}

bool CompiledCriteria::Evaluate(const User& user, TimeMs t) const {
  return EvaluateNode(0, user, t);
}

CompiledCriteria::Outlook CompiledCriteria::Assess(const User& user, TimeMs t) const {
  return OutlookNode(0, user, t);
}

bool CompiledCriteria::EvaluateNode(uint32_t index, const User& user, TimeMs t) const {
  const Node& node = nodes_[index];
  switch (node.type) {
    case CriteriaType::kProperty:
      return EvaluateProperty(node, user);
    case CriteriaType::kEvent:
      return EventOutlook(node, user, t).value;
    case CriteriaType::kComposite:
      for (uint32_t child : node.children) {
        if (EvaluateNode(child, user, t) != node.is_and) return !node.is_and;
      }
      return node.is_and;
  }
  return false;
}

bool CompiledCriteria::EvaluateProperty(const Node& node, const User& user) const {
  const Property* property = FindProperty(user, node.id);
  const bool present = property != nullptr && property->value.type != PropertyValue::Type::kNull;
  const bool both_numbers = present && property->value.type == PropertyValue::Type::kNumber &&
                            node.value.type == PropertyValue::Type::kNumber;
  switch (node.property_op) {
    case PropertyOp::kExists:
      return present;
    case PropertyOp::kNotExists:
      return !present;
    case PropertyOp::kEq:
      return present && SameJson(property->value, node.value);
    case PropertyOp::kNeq:
      return !(present && SameJson(property->value, node.value));
    case PropertyOp::kGt:
      return both_numbers && property->value.number > node.value.number;
    case PropertyOp::kGte:
      return both_numbers && property->value.number >= node.value.number;
    case PropertyOp::kLt:
      return both_numbers && property->value.number < node.value.number;
    case PropertyOp::kLte:
      return both_numbers && property->value.number <= node.value.number;
    case PropertyOp::kContains:
      return present && property->value.type == PropertyValue::Type::kString &&
             node.value.type == PropertyValue::Type::kString &&
             property->value.text.find(node.value.text) != std::string::npos;
  }
  return false;
}

CompiledCriteria::Outlook CompiledCriteria::EventOutlook(const Node& node, const User& user,
                                                         TimeMs t) const {
  const EventHistory* history = FindHistory(user, node.id);
  if (node.within_ms == 0) {
    const auto count = history ? static_cast<int64_t>(history->total_count) : 0;
    return {CompareCount(node.count_op, count, node.count_value), kNever};
  }
  if (history == nullptr) return {CompareCount(node.count_op, 0, node.count_value), kNever};
  // An event counts while t - W < occurredAt, i.e. until occurredAt + W (exclusive).
  const std::span<const TimeMs> newest = NewestOf(*history);
  const auto first_in_window = std::upper_bound(newest.begin(), newest.end(), t - node.within_ms);
  const auto count = static_cast<int64_t>(newest.end() - first_in_window);
  const bool value = CompareCount(node.count_op, count, node.count_value);
  // The count falls from k to k-1 when the k-th newest in-window instant ages out.
  for (int64_t k = count; k >= 1; --k) {
    if (CompareCount(node.count_op, k - 1, node.count_value) != value) {
      return {value, newest[newest.size() - static_cast<size_t>(k)] + node.within_ms};
    }
  }
  return {value, kNever};
}

CompiledCriteria::Outlook CompiledCriteria::OutlookNode(uint32_t index, const User& user,
                                                        TimeMs t) const {
  const Node& node = nodes_[index];
  switch (node.type) {
    case CriteriaType::kProperty:
      return {EvaluateProperty(node, user), kNever};
    case CriteriaType::kEvent:
      return EventOutlook(node, user, t);
    case CriteriaType::kComposite:
      break;
  }
  // Kleene logic over the short-circuit value (false for and, true for or). Held by one or
  // more children, the composite keeps it until every one of them has changed: the
  // latest of their next instants (never, if one is fixed). Otherwise it changes when the
  // earliest child does. Taking the earliest child in the first case too would be early,
  // still exact, but an `or` whose other leg holds on would then split one sweep's
  // coalesced `every` dwell into two fires (at the lapse of the shorter leg).
  const bool absorbing = !node.is_and;
  bool held = false;
  TimeMs held_until = 0;     // the latest next of the children holding `absorbing`
  TimeMs next_any = kNever;  // the earliest next of any child
  for (uint32_t child : node.children) {
    const Outlook o = OutlookNode(child, user, t);
    if (o.value == absorbing) {
      if (o.next == kNever) return {absorbing, kNever};
      held = true;
      held_until = std::max(held_until, o.next);
    }
    next_any = std::min(next_any, o.next);
  }
  return held ? Outlook{absorbing, held_until} : Outlook{!absorbing, next_any};
}

}  // namespace bucketd

namespace bucketd {

std::optional<TimeMs> CompiledCriteria::HeldSince(const User& user, TimeMs now) const {
  return HeldSinceNode(0, user, now);
}

// Each node answers for itself, holding at `now`: an and held since its latest child
// began; an or since its earliest holding child began (each child's run reaches `now`,
// so their union is one run). A child that cannot say makes an and unknown; an or then
// relies on the children that can.
std::optional<TimeMs> CompiledCriteria::HeldSinceNode(uint32_t index, const User& user,
                                                      TimeMs now) const {
  const Node& node = nodes_[index];
  switch (node.type) {
    case CriteriaType::kProperty: {
      const Property* property = FindProperty(user, node.id);
      // A present property has held its value since it changed to it; what an absent one
      // was before is unknown.
      if (property == nullptr) return std::nullopt;
      return property->changed_at;
    }
    case CriteriaType::kEvent:
      return EventHeldSince(node, user, now);
    case CriteriaType::kComposite:
      break;
  }
  std::optional<TimeMs> since;
  for (uint32_t child : node.children) {
    if (!EvaluateNode(child, user, now)) continue;
    const std::optional<TimeMs> child_since = HeldSinceNode(child, user, now);
    if (node.is_and) {
      if (!child_since) return std::nullopt;
      since = since ? std::max(*since, *child_since) : *child_since;
    } else if (child_since) {
      since = since ? std::min(*since, *child_since) : *child_since;
    }
  }
  return since;
}

std::optional<TimeMs> CompiledCriteria::EventHeldSince(const Node& node, const User& user,
                                                       TimeMs now) const {
  const EventHistory* history = FindHistory(user, node.id);
  if (history == nullptr) return std::nullopt;  // holds with no events: since ever (unknown)
  const int64_t n = node.count_value;
  if (node.within_ms == 0) {
    // All-time counts only grow: they reached their current value at the last event.
    const auto total = static_cast<int64_t>(history->total_count);
    const bool first_reach =
        (node.count_op == CountOp::kGt && n == 0) || (node.count_op == CountOp::kGte && n <= 1);
    if (first_reach) return history->first_at;
    const bool at_last = node.count_op == CountOp::kEq ||
                         (node.count_op == CountOp::kGte && total == n) ||
                         (node.count_op == CountOp::kGt && total == n + 1);
    if (at_last && total > 0) return history->last_at;
    return std::nullopt;
  }
  // Windowed: walk back over the instants where the in-window count changes (an event
  // enters at e, leaves at e + W) while the operator keeps holding. Retained instants
  // undercount only where an older, unretained event could still be in the window: that
  // is harmless for gt/gte (an undercount that holds is a true hold) but not for the
  // others, which trust only counts where the window starts after the oldest instant.
  const std::span<const TimeMs> newest = NewestOf(*history);
  if (newest.empty()) return std::nullopt;
  const bool complete = newest.size() == history->total_count;
  const bool undercount_safe = node.count_op == CountOp::kGt || node.count_op == CountOp::kGte;
  const TimeMs trusted_from =
      complete || undercount_safe ? INT64_MIN : newest.front() + node.within_ms;
  std::vector<TimeMs> points;
  points.reserve(newest.size() * 2);
  for (TimeMs e : newest) {
    if (e <= now) points.push_back(e);
    if (e + node.within_ms <= now) points.push_back(e + node.within_ms);
  }
  std::sort(points.begin(), points.end(), std::greater<>());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  std::optional<TimeMs> since;
  for (TimeMs p : points) {
    if (p < trusted_from) break;
    const auto first = std::upper_bound(newest.begin(), newest.end(), p - node.within_ms);
    const auto last = std::upper_bound(newest.begin(), newest.end(), p);
    if (!CompareCount(node.count_op, last - first, n)) break;
    since = p;
  }
  // Nothing before the earliest proven change point is known (with complete history the
  // count was 0 before it, since an unknown instant).
  return since;
}

}  // namespace bucketd
