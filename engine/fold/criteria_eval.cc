#include "engine/fold/criteria_eval.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include <xxhash.h>

#include "bucketd/limits.h"

namespace bucketd {
namespace {

// A count's or an aggregate's value against a leg's operator and value.
template <typename T>
bool Compare(CountOp op, T a, T b) {
  switch (op) {
    case CountOp::kGt:
      return a > b;
    case CountOp::kGte:
      return a >= b;
    case CountOp::kLt:
      return a < b;
    case CountOp::kLte:
      return a <= b;
    case CountOp::kEq:
      return a == b;
  }
  return false;
}

bool CompareCount(CountOp op, int64_t count, int64_t value) { return Compare(op, count, value); }
bool CompareNumber(CountOp op, double a, double b) { return Compare(op, a, b); }

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

}  // namespace

const EventHistory* FindHistory(const User& user, uint32_t name_id) {
  auto it = std::lower_bound(user.events.begin(), user.events.end(), name_id,
                             [](const EventHistory& h, uint32_t id) { return h.name_id() < id; });
  return it != user.events.end() && it->name_id() == name_id ? &*it : nullptr;
}

const AggregateHistory* FindAggregate(const User& user, uint32_t stream_id) {
  return user.legs.FindAggregate(stream_id);
}

const SequenceHistory* FindSequence(const User& user, uint32_t stream_id) {
  return user.legs.FindSequence(stream_id);
}

const Slot* FindSlotOf(const User& user, uint32_t bucket) {
  for (const Slot* slot : user.slots) {
    if (slot->bucket == bucket) return slot;
  }
  return nullptr;
}

void AddContribution(LegHistories* legs, const StreamSpec& spec, const PropertyValue& value,
                     TimeMs at) {
  using Type = PropertyValue::Type;
  const bool distinct = spec.kind == StreamSpec::Kind::kDistinct;
  const bool scalar =
      value.type == Type::kNumber || value.type == Type::kString || value.type == Type::kBool;
  if (distinct ? !scalar : value.type != Type::kNumber) return;  // contributes to nothing
  AggregateHistory& h = legs->FindOrInsertAggregate(spec.id);
  if (!distinct) {
    const double x = value.number;
    h.min = h.count() == 0 ? x : std::min(h.min, x);
    h.max = h.count() == 0 ? x : std::max(h.max, x);
    h.sum += x;
    h.set_count(h.count() + 1);
    // In place (a late event lands among older ones); the oldest beyond the bound go.
    auto place = std::upper_bound(h.newest.begin(), h.newest.end(), at,
                                  [](TimeMs t, const Contribution& c) { return t < c.at; });
    if (h.newest.size() < kAggregateContributionsMax) {
      h.newest.insert(place, Contribution{at, x});
    } else if (place != h.newest.begin()) {
      std::move(h.newest.begin() + 1, place, h.newest.begin());
      *(place - 1) = Contribution{at, x};
    }
    return;
  }
  const uint64_t hash = ValueHash(value);
  auto it = std::lower_bound(h.distinct.begin(), h.distinct.end(), hash,
                             [](const DistinctValue& v, uint64_t key) { return v.hash < key; });
  if (it != h.distinct.end() && it->hash == hash) {
    it->latest = std::max(it->latest, at);
    return;
  }
  h.distinct.insert(it, DistinctValue{hash, at});
  if (h.distinct.size() > kDistinctValuesMax) {
    // The value seen least recently gives way (ties: the smaller hash): the capped count
    // of values in any window is then min(true count, the cap) (docs/design.md).
    auto oldest = std::min_element(
        h.distinct.begin(), h.distinct.end(), [](const DistinctValue& a, const DistinctValue& b) {
          return a.latest != b.latest ? a.latest < b.latest : a.hash < b.hash;
        });
    h.distinct.erase(oldest);
  }
}

void AddSequenceOccurrence(LegHistories* legs, const StreamSpec& spec, TimeMs at) {
  SequenceHistory& h = legs->FindOrInsertSequence(spec.id);
  if (h.later_steps() == 0) h.SetLaterSteps(spec.steps - 1);
  if (spec.step == 0) {
    if (h.start && at <= *h.start) return;  // not the latest start
    h.start = at;
    // Only what happened after the latest start can complete it.
    h.DropLaterUpTo(at);
    return;
  }
  if (h.start && at <= *h.start) return;
  h.InsertLater(spec.step - 1, at);
}

uint64_t ValueHash(const PropertyValue& value) {
  // The type is hashed with the contents, so 1 and "1" are two values.
  std::string bytes(1, static_cast<char>(value.type));
  switch (value.type) {
    case PropertyValue::Type::kBool:
      bytes += value.boolean ? '1' : '0';
      break;
    case PropertyValue::Type::kNumber: {
      // -0 and 0 are one number.
      const double number = value.number == 0 ? 0.0 : value.number;
      bytes.append(reinterpret_cast<const char*>(&number), sizeof number);
      break;
    }
    default:
      bytes += value.text;
      break;
  }
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::string FilteredStreamKey(std::string_view event_name,
                              const std::vector<PropertyFilter>& where) {
  return std::string(kReservedEventPrefix) + "where:" + std::string(event_name) + '\x1f' +
         CanonicalWhereJson(where);
}

std::string AggregateStreamKey(std::string_view event_name, std::string_view property,
                               const std::vector<PropertyFilter>& where, bool distinct) {
  return std::string(kReservedEventPrefix) + (distinct ? "distinct:" : "aggregate:") +
         std::string(event_name) + '\x1f' + std::string(property) + '\x1f' +
         CanonicalWhereJson(where);
}

std::string SequenceStreamKey(const std::vector<SequenceStep>& steps) {
  return std::string(kReservedEventPrefix) + "sequence:" + CanonicalStepsJson(steps);
}

const Property* FindProperty(const User& user, uint32_t key_id) {
  auto it = std::lower_bound(user.properties.begin(), user.properties.end(), key_id,
                             [](const Property& p, uint32_t id) { return p.key_id < id; });
  return it != user.properties.end() && it->key_id == key_id ? &*it : nullptr;
}

CompiledCriteria::CompiledCriteria(const Criteria& criteria, Interner* event_names,
                                   Interner* property_keys,
                                   const std::vector<uint32_t>* history_depth,
                                   const std::function<uint32_t(std::string_view)>& bucket_index)
    : history_depth_(history_depth) {
  nodes_.reserve(8);
  Compile(criteria, event_names, property_keys, bucket_index);
  auto dedupe = [](std::vector<uint32_t>* ids) {
    std::sort(ids->begin(), ids->end());
    ids->erase(std::unique(ids->begin(), ids->end()), ids->end());
  };
  dedupe(&event_name_ids_);
  dedupe(&property_key_ids_);
  dedupe(&bucket_refs_);
}

uint32_t CompiledCriteria::Compile(const Criteria& c, Interner* event_names,
                                   Interner* property_keys,
                                   const std::function<uint32_t(std::string_view)>& bucket_index) {
  const auto index = static_cast<uint32_t>(nodes_.size());
  nodes_.emplace_back();
  {
    Node& node = nodes_[index];
    node.type = c.type;
    node.property_op = c.property_op;
    node.value = c.value;
    node.time_offset_ms = c.time_offset_ms;
    node.is_and = c.is_and;
  }
  switch (c.type) {
    case CriteriaType::kProperty: {
      nodes_[index].id = property_keys->Intern(c.property);
      property_key_ids_.push_back(nodes_[index].id);
      break;
    }
    case CriteriaType::kEvent: {
      Node& node = nodes_[index];
      const uint32_t name_id = event_names->Intern(c.event_name);
      event_name_ids_.push_back(name_id);
      node.check = c.check;
      node.within_ms = c.within_ms.value_or(0);
      if (IsAggregate(c.check)) {
        node.count_op = c.count_op;
        node.aggregate_value = c.aggregate_value;
        StreamSpec spec;
        const bool distinct = c.check == EventCheck::kDistinct;
        spec.kind = distinct ? StreamSpec::Kind::kDistinct : StreamSpec::Kind::kAggregate;
        spec.id = event_names->Intern(
            AggregateStreamKey(c.event_name, c.aggregate_property, c.where, distinct));
        spec.where = c.where;
        spec.property = c.aggregate_property;
        node.id = spec.id;
        streams_.push_back({name_id, std::move(spec)});
        break;
      }
      node.id = name_id;
      if (!c.where.empty()) {
        StreamSpec spec;
        spec.kind = StreamSpec::Kind::kFiltered;
        spec.id = event_names->Intern(FilteredStreamKey(c.event_name, c.where));
        spec.where = c.where;
        node.id = spec.id;
        streams_.push_back({name_id, std::move(spec)});
      }
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
        default:  // first_seen reads the history's first instant, not its newest
          break;
      }
      if (node.within_ms > 0 && c.check != EventCheck::kFirstSeen) {
        name_depths_.push_back({node.id, DepthFor(node.count_op, node.count_value)});
      }
      break;
    }
    case CriteriaType::kComposite: {
      for (const Criteria& child : c.conditions) {
        const uint32_t child_index = Compile(child, event_names, property_keys, bucket_index);
        nodes_[index].children.push_back(child_index);
      }
      break;
    }
    case CriteriaType::kSequence: {
      Node& node = nodes_[index];
      node.within_ms = *c.within_ms;
      node.completed = c.sequence_completed;
      node.lookback_ms = c.lookback_ms.value_or(0);
      node.id = event_names->Intern(SequenceStreamKey(c.steps));
      for (uint32_t step = 0; step < c.steps.size(); ++step) {
        const uint32_t name_id = event_names->Intern(c.steps[step].event_name);
        event_name_ids_.push_back(name_id);
        StreamSpec spec;
        spec.kind = StreamSpec::Kind::kSequence;
        spec.id = node.id;
        spec.where = c.steps[step].where;
        spec.step = step;
        spec.steps = static_cast<uint32_t>(c.steps.size());
        streams_.push_back({name_id, std::move(spec)});
      }
      break;
    }
    case CriteriaType::kBucket: {
      Node& node = nodes_[index];
      node.id = bucket_index(c.bucket_id);
      node.member = c.member;
      node.for_ms = c.for_ms.value_or(0);
      bucket_refs_.push_back(node.id);
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
    case CriteriaType::kComposite:
      for (uint32_t child : node.children) {
        if (EvaluateNode(child, user, t) != node.is_and) return !node.is_and;
      }
      return node.is_and;
    default:
      return OutlookNode(index, user, t).value;
  }
}

CompiledCriteria::Outlook CompiledCriteria::PropertyOutlook(const Node& node, const User& user,
                                                            TimeMs t) const {
  const Property* property = FindProperty(user, node.id);
  if (node.property_op != PropertyOp::kBefore && node.property_op != PropertyOp::kAfter) {
    const PropertyValueView value = property ? property->value() : PropertyValueView();
    return {PropertyOpHolds(node.property_op, property ? &value : nullptr, node.value), kNever};
  }
  // A time property against now + offset: `before` holds from `time - offset` on, `after`
  // until then; neither when the property is absent or not a time.
  const std::optional<TimeMs> time = property ? PropertyTime(property->value()) : std::nullopt;
  if (!time) return {false, kNever};
  const TimeMs flip = *time - node.time_offset_ms;
  const bool before = t >= flip;
  if (node.property_op == PropertyOp::kBefore) return {before, before ? kNever : flip};
  return {!before, before ? kNever : flip};
}

CompiledCriteria::Outlook CompiledCriteria::EventOutlook(const Node& node, const User& user,
                                                         TimeMs t) const {
  if (IsAggregate(node.check)) return AggregateOutlook(node, user, t);
  const EventHistory* history = FindHistory(user, node.id);
  if (node.check == EventCheck::kFirstSeen) {
    // Holds while the first matching event is in (t - W, t]: until first + W.
    if (history == nullptr || history->first_at + node.within_ms <= t) return {false, kNever};
    return {true, history->first_at + node.within_ms};
  }
  if (node.within_ms == 0) {
    const auto count = history ? static_cast<int64_t>(history->total_count()) : 0;
    return {CompareCount(node.count_op, count, node.count_value), kNever};
  }
  if (history == nullptr) return {CompareCount(node.count_op, 0, node.count_value), kNever};
  // An event counts while t - W < occurredAt, i.e. until occurredAt + W (exclusive).
  const Instants newest = NewestOf(*history);
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
      return PropertyOutlook(node, user, t);
    case CriteriaType::kEvent:
      return EventOutlook(node, user, t);
    case CriteriaType::kSequence:
      return SequenceOutlook(node, user, t);
    case CriteriaType::kBucket:
      return BucketOutlook(node, user, t);
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

namespace {

double Aggregate(EventCheck check, double sum, uint64_t count, double min, double max) {
  switch (check) {
    case EventCheck::kSum:
      return sum;
    case EventCheck::kAvg:
      return sum / static_cast<double>(count);
    case EventCheck::kMin:
      return min;
    default:
      return max;
  }
}

// The running totals of an aggregate over contributions added one at a time. Every window is
// added newest first (AggregateOutlook, its flip walk and explain), so a value shown or
// predicted is the same sum in the same order as the one compared.
struct RunningAggregate {
  double sum = 0, min = 0, max = 0;
  uint64_t count = 0;
  void Add(double x) {
    sum = x + sum;
    min = count == 0 ? x : std::min(min, x);
    max = count == 0 ? x : std::max(max, x);
    ++count;
  }
  double Value(EventCheck check) const { return Aggregate(check, sum, count, min, max); }
};

// The first of the contributions (ascending by instant) that occurred after `after`: the
// window (after, now] starts there.
size_t FirstAfter(std::span<const Contribution> c, TimeMs after) {
  return static_cast<size_t>(
      std::upper_bound(c.begin(), c.end(), after,
                       [](TimeMs at, const Contribution& x) { return at < x.at; }) -
      c.begin());
}

// The instant the earliest in-order chain of the later steps ends (each step's first
// occurrence after the previous step's), or nullopt while a step has none after it.
std::optional<TimeMs> EarliestCompletion(const SequenceHistory& h) {
  TimeMs previous = *h.start;
  for (uint32_t step = 0; step < h.later_steps(); ++step) {
    const Instants occurrences = h.Later(step);
    auto it = std::upper_bound(occurrences.begin(), occurrences.end(), previous);
    if (it == occurrences.end()) return std::nullopt;
    previous = *it;
  }
  return previous;
}

}  // namespace

CompiledCriteria::Outlook CompiledCriteria::AggregateOutlook(const Node& node, const User& user,
                                                             TimeMs t) const {
  const AggregateHistory* h = FindAggregate(user, node.id);
  if (h == nullptr) return {false, kNever};  // no contributions: false, and the clock adds none
  if (node.check == EventCheck::kDistinct) {
    if (node.within_ms == 0) {
      // Capped at kDistinctValuesMax; thresholds stay below it, so the cap decides alike.
      const auto n = static_cast<double>(h->distinct.size());
      return {n > 0 && CompareNumber(node.count_op, n, node.aggregate_value), kNever};
    }
    // Values whose newest occurrence is in the window; they age out one by one.
    thread_local std::vector<TimeMs> latest;
    latest.clear();
    for (const DistinctValue& v : h->distinct) {
      if (v.latest > t - node.within_ms) latest.push_back(v.latest);
    }
    std::sort(latest.begin(), latest.end());
    auto holds = [&](size_t n) {
      return n > 0 && CompareNumber(node.count_op, static_cast<double>(n), node.aggregate_value);
    };
    const bool value = holds(latest.size());
    for (size_t i = 0; i < latest.size(); ++i) {
      if (holds(latest.size() - i - 1) != value) return {value, latest[i] + node.within_ms};
    }
    return {value, kNever};
  }
  if (node.within_ms == 0) {
    if (h->count() == 0) return {false, kNever};
    const double v = Aggregate(node.check, h->sum, h->count(), h->min, h->max);
    return {CompareNumber(node.count_op, v, node.aggregate_value), kNever};
  }
  const std::span<const Contribution> c = h->newest;
  const size_t first = FirstAfter(c, t - node.within_ms);
  if (first == c.size()) return {false, kNever};
  // suffix[i]: the aggregate of c[i..], for every i from `first` on, filled from the newest
  // backwards, so a window's value is the same sum in the same order whichever instant it
  // is computed at (a predicted flip is then the flip that happens).
  thread_local std::vector<double> suffix;
  suffix.assign(c.size() - first, 0);
  RunningAggregate totals;
  for (size_t i = c.size(); i-- > first;) {
    totals.Add(c[i].number);
    suffix[i - first] = totals.Value(node.check);
  }
  const bool value = CompareNumber(node.count_op, suffix[0], node.aggregate_value);
  // Contributions age out oldest first (equal instants together): after the ones up to i,
  // the window holds c[i+1..].
  for (size_t i = first; i < c.size(); ++i) {
    if (i + 1 < c.size() && c[i + 1].at == c[i].at) continue;
    const bool after = i + 1 < c.size() &&
                       CompareNumber(node.count_op, suffix[i + 1 - first], node.aggregate_value);
    if (after != value) return {value, c[i].at + node.within_ms};
  }
  return {value, kNever};
}

CompiledCriteria::Outlook CompiledCriteria::SequenceOutlook(const Node& node, const User& user,
                                                            TimeMs t) const {
  const SequenceHistory* h = FindSequence(user, node.id);
  if (h == nullptr || !h->start) return {false, kNever};
  const TimeMs start = *h->start;
  // With a lookback, a start at or before t - W no longer counts: nothing holds from
  // start + W on.
  const TimeMs expiry = node.lookback_ms > 0 ? start + node.lookback_ms : kNever;
  if (t >= expiry) return {false, kNever};
  const std::optional<TimeMs> completion = EarliestCompletion(*h);
  const TimeMs deadline = start + node.within_ms;
  const bool completed = completion && *completion <= deadline;
  if (node.completed) return {completed, completed ? expiry : kNever};
  // Abandoned: from the deadline on, unless completed by it.
  if (completed) return {false, kNever};
  if (t < deadline) return {false, deadline < expiry ? deadline : kNever};
  return {true, expiry};
}

CompiledCriteria::Outlook CompiledCriteria::BucketOutlook(const Node& node, const User& user,
                                                          TimeMs t) const {
  const Slot* slot = FindSlotOf(user, node.id);
  const bool active = slot != nullptr && slot->active;
  // A member `for` D from enteredAt + D on; the inner bucket's own changes reach this leg
  // through the fold (ReevaluateDependents), not through this instant.
  const TimeMs since = active ? slot->entered_at + node.for_ms : kNever;
  const bool member = active && t >= since;
  const TimeMs next = active && !member ? since : kNever;
  return {node.member ? member : !member, next};
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
      if (node.property_op == PropertyOp::kBefore) {
        // Since the later of the value's arrival and the instant it came within the offset.
        return std::max<TimeMs>(property->changed_at,
                                *PropertyTime(property->value()) - node.time_offset_ms);
      }
      return property->changed_at;
    }
    case CriteriaType::kEvent:
      return EventHeldSince(node, user, now);
    case CriteriaType::kSequence:
    case CriteriaType::kBucket:
      return LegHeldSince(node, user, now);
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

std::optional<TimeMs> CompiledCriteria::LegHeldSince(const Node& node, const User& user,
                                                     TimeMs now) const {
  if (node.type == CriteriaType::kBucket) {
    const Slot* slot = FindSlotOf(user, node.id);
    if (node.member) return slot->entered_at + node.for_ms;
    // Not a member since the last leave, if there was one (else: unknown).
    if (slot == nullptr || slot->active) return std::nullopt;
    return slot->last_left_at;
  }
  const SequenceHistory* h = FindSequence(user, node.id);
  if (!node.completed) return *h->start + node.within_ms;
  // Completed since the step that completed it.
  (void)now;
  return EarliestCompletion(*h);
}

std::optional<TimeMs> CompiledCriteria::EventHeldSince(const Node& node, const User& user,
                                                       TimeMs now) const {
  if (IsAggregate(node.check)) return AggregateHeldSince(node, user, now);
  const EventHistory* history = FindHistory(user, node.id);
  if (history == nullptr) return std::nullopt;  // holds with no events: since ever (unknown)
  if (node.check == EventCheck::kFirstSeen) return history->first_at;
  const int64_t n = node.count_value;
  if (node.within_ms == 0) {
    // All-time counts only grow: they reached their current value at the last event.
    const auto total = static_cast<int64_t>(history->total_count());
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
  const Instants newest = NewestOf(*history);
  if (newest.empty()) return std::nullopt;
  const bool complete = newest.size() == history->total_count();
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

// An aggregate changes only at its contributions' instants (and, in a window, when each
// ages out at `at + W`), so the contributions it retains show the value between those
// instants: walk back over them from now while the operator keeps holding, as for a
// windowed count. Where the retained contributions may miss older ones (past
// kAggregateContributionsMax, or a distinct set's values seen only at their latest
// occurrence), only what they prove is used; an all-time min or max with dropped
// contributions, or a distinct `lt`/`lte`/`eq`, is unknown.
std::optional<TimeMs> CompiledCriteria::AggregateHeldSince(const Node& node, const User& user,
                                                           TimeMs now) const {
  const AggregateHistory* h = FindAggregate(user, node.id);
  if (h == nullptr) return std::nullopt;
  const TimeMs within = node.within_ms;
  const auto holds = [&](double v) {
    return CompareNumber(node.count_op, v, node.aggregate_value);
  };
  // Walks back over `points` (descending), each the start of a run of constant value up to the
  // next one; `value_at(p)` is nullopt where the window at p is empty or not trusted.
  const auto walk = [&](std::vector<TimeMs>* points, const auto& value_at) {
    std::sort(points->begin(), points->end(), std::greater<>());
    points->erase(std::unique(points->begin(), points->end()), points->end());
    std::optional<TimeMs> since;
    for (TimeMs p : *points) {
      if (p > now) continue;
      const std::optional<double> v = value_at(p);
      if (!v || !holds(*v)) break;
      since = p;
    }
    return since;
  };
  std::vector<TimeMs> points;
  if (node.check == EventCheck::kDistinct) {
    // A value counted at p occurred at its latest occurrence, in p's window: a lower bound
    // on the distinct count at p, so a hold it shows is a true hold for gt/gte only.
    if (node.count_op != CountOp::kGt && node.count_op != CountOp::kGte) return std::nullopt;
    for (const DistinctValue& v : h->distinct) {
      points.push_back(v.latest);
      if (within > 0) points.push_back(v.latest + within);
    }
    return walk(&points, [&](TimeMs p) -> std::optional<double> {
      uint64_t n = 0;
      for (const DistinctValue& v : h->distinct) {
        if (v.latest <= p && (within == 0 || v.latest > p - within)) ++n;
      }
      if (n == 0) return std::nullopt;
      return static_cast<double>(n);
    });
  }
  const std::span<const Contribution> c = h->newest;
  if (c.empty()) return std::nullopt;
  const bool complete = h->count() == c.size();
  if (within == 0) {
    // All time: the value after each instant's contributions, oldest first. Dropped
    // contributions (older than every retained one) are known only by the totals, which
    // give their sum and count but not their min or max.
    if (!complete && (node.check == EventCheck::kMin || node.check == EventCheck::kMax)) {
      return std::nullopt;
    }
    RunningAggregate totals;
    if (!complete) {
      totals.sum = h->sum;
      for (const Contribution& x : c) totals.sum -= x.number;
      totals.count = h->count() - c.size();
    }
    std::optional<TimeMs> since;
    for (size_t i = 0; i < c.size(); ++i) {
      totals.Add(c[i].number);
      if (i + 1 < c.size() && c[i + 1].at == c[i].at) continue;
      if (!holds(totals.Value(node.check))) {
        since.reset();
      } else if (!since) {
        since = c[i].at;
      }
    }
    return since;
  }
  // A window (p - W, p] holds every contribution only from the oldest retained one's
  // instant + W on when older ones were dropped.
  const TimeMs trusted_from = complete ? INT64_MIN : c.front().at + within;
  for (const Contribution& x : c) {
    points.push_back(x.at);
    points.push_back(x.at + within);
  }
  return walk(&points, [&](TimeMs p) -> std::optional<double> {
    if (p < trusted_from) return std::nullopt;
    const size_t first = FirstAfter(c, p - within);
    const size_t last = FirstAfter(c, p);
    if (first == last) return std::nullopt;  // an aggregate over nothing is false
    // Summed as AggregateOutlook sums a window: from its newest backwards.
    RunningAggregate totals;
    for (size_t i = last; i-- > first;) totals.Add(c[i].number);
    return totals.Value(node.check);
  });
}

}  // namespace bucketd

namespace bucketd {

std::vector<CompiledCriteria::LegExplanation> CompiledCriteria::Explain(const User& user,
                                                                        TimeMs now) const {
  std::vector<LegExplanation> out;
  out.reserve(nodes_.size());
  ExplainNode(0, "criteria", user, now, &out);
  return out;
}

void CompiledCriteria::ExplainNode(uint32_t index, std::string path, const User& user, TimeMs now,
                                   std::vector<LegExplanation>* out) const {
  const Node& node = nodes_[index];
  LegExplanation leg;
  leg.type = node.type;
  leg.property_op = node.property_op;
  leg.check = node.check;
  leg.is_and = node.is_and;
  leg.completed = node.completed;
  leg.member = node.member;
  // The value and the next instant as the fold computes them: no second home for a rule.
  leg.outlook = OutlookNode(index, user, now);
  if (leg.outlook.value) leg.held_since = HeldSinceNode(index, user, now);
  const TimeMs within = node.within_ms;
  switch (node.type) {
    case CriteriaType::kProperty: {
      const Property* property = FindProperty(user, node.id);
      if (property != nullptr) leg.current = property->value().ToValue();
      if (node.property_op == PropertyOp::kBefore || node.property_op == PropertyOp::kAfter) {
        if (property != nullptr) leg.time = PropertyTime(property->value());
        leg.threshold = now + node.time_offset_ms;
      }
      break;
    }
    case CriteriaType::kEvent: {
      if (within > 0) leg.window_start = now - within;
      if (IsAggregate(node.check)) {
        const AggregateHistory* h = FindAggregate(user, node.id);
        if (h == nullptr) break;
        if (node.check == EventCheck::kDistinct) {
          uint64_t n = 0;
          for (const DistinctValue& v : h->distinct) {
            if (within == 0 || v.latest > now - within) ++n;
          }
          leg.contributions = n;
          if (n > 0) leg.aggregate = static_cast<double>(n);
          leg.capped = h->distinct.size() >= kDistinctValuesMax;
          break;
        }
        if (within == 0) {
          leg.contributions = h->count();
          if (h->count() > 0)
            leg.aggregate = Aggregate(node.check, h->sum, h->count(), h->min, h->max);
          break;
        }
        // As AggregateOutlook sums it: from the newest backwards, so the value shown is the
        // value compared.
        const std::span<const Contribution> c = h->newest;
        const size_t first = FirstAfter(c, now - within);
        RunningAggregate totals;
        for (size_t i = c.size(); i-- > first;) totals.Add(c[i].number);
        leg.contributions = totals.count;
        if (totals.count > 0) leg.aggregate = totals.Value(node.check);
        leg.capped = first == 0 && c.size() >= kAggregateContributionsMax;
        break;
      }
      const EventHistory* history = FindHistory(user, node.id);
      if (node.check == EventCheck::kFirstSeen) {
        if (history != nullptr) leg.first_at = history->first_at;
        break;
      }
      if (history == nullptr) {
        leg.count = 0;
      } else if (within == 0) {
        leg.count = history->total_count();
      } else {
        // As EventOutlook counts: the newest instants the operator needs, in the window.
        const Instants newest = NewestOf(*history);
        const auto in_window = static_cast<uint64_t>(
            newest.end() - std::upper_bound(newest.begin(), newest.end(), now - within));
        leg.count = in_window;
        leg.capped = in_window == newest.size() && newest.size() < history->total_count();
      }
      break;
    }
    case CriteriaType::kSequence: {
      const SequenceHistory* h = FindSequence(user, node.id);
      if (h == nullptr || !h->start) break;
      const TimeMs start = *h->start;
      leg.started_at = start;
      leg.deadline = start + within;
      if (node.lookback_ms > 0) leg.lookback_ends_at = start + node.lookback_ms;
      // The chain SequenceOutlook reads (even when it ends past the deadline).
      if (const auto completion = EarliestCompletion(*h)) leg.completed_at = *completion;
      break;
    }
    case CriteriaType::kBucket: {
      leg.bucket = node.id;
      const Slot* slot = FindSlotOf(user, node.id);
      leg.inner_active = slot != nullptr && slot->active;
      if (leg.inner_active) leg.inner_entered_at = slot->entered_at;
      break;
    }
    case CriteriaType::kComposite:
      break;
  }
  leg.path = path;
  out->push_back(std::move(leg));
  for (size_t i = 0; i < node.children.size(); ++i) {
    ExplainNode(node.children[i], path + ".conditions[" + std::to_string(i) + "]", user, now, out);
  }
}

}  // namespace bucketd
