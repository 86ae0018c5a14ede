#pragma once
// The typed model of a bucket definition (SPEC §3) and its JSON parser.
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/base/property_view.h"

namespace bucketd {

// kBefore / kAfter (SPEC §3b) compare a time property with now + a signed offset.
enum class PropertyOp : uint8_t {
  kEq,
  kNeq,
  kGt,
  kGte,
  kLt,
  kLte,
  kExists,
  kNotExists,
  kContains,
  kBefore,
  kAfter
};
// kSum..kDistinct aggregate a property of the leg's events; kFirstSeen holds while the
// first matching event is within `within` of now (SPEC §3b).
enum class EventCheck : uint8_t {
  kExists,
  kNotExists,
  kCount,
  kSum,
  kAvg,
  kMin,
  kMax,
  kDistinct,
  kFirstSeen
};
enum class CountOp : uint8_t { kGt, kGte, kLt, kLte, kEq };
enum class CriteriaType : uint8_t { kProperty, kEvent, kComposite, kSequence, kBucket };

inline bool IsAggregate(EventCheck check) {
  return check == EventCheck::kSum || check == EventCheck::kAvg || check == EventCheck::kMin ||
         check == EventCheck::kMax || check == EventCheck::kDistinct;
}

// One clause of an event leg's `where`: a §3 property comparison on the event's own
// properties (not the contact's), decided once, when the event is folded.
struct PropertyFilter {
  std::string property;
  PropertyOp op = PropertyOp::kEq;
  PropertyValue value;  // unused for exists / not_exists
  friend bool operator==(const PropertyFilter&, const PropertyFilter&) = default;
};

struct SequenceStep {
  std::string event_name;
  std::vector<PropertyFilter> where;
  friend bool operator==(const SequenceStep&, const SequenceStep&) = default;
};

// One node of a criteria tree. Only the fields of its `type` are meaningful.
struct Criteria {
  CriteriaType type = CriteriaType::kProperty;

  // kProperty
  std::string property;
  PropertyOp property_op = PropertyOp::kEq;
  PropertyValue value;        // unused for exists / not_exists / before / after
  TimeMs time_offset_ms = 0;  // before / after: the signed offset from now

  // kEvent. `count` without operator/value is normalized to `gt 0`. Aggregates compare
  // with `aggregate_value` instead of `count_value`. Also kSequence: `within_ms` is X.
  std::string event_name;
  EventCheck check = EventCheck::kExists;
  CountOp count_op = CountOp::kGt;
  int64_t count_value = 0;
  std::optional<TimeMs> within_ms;
  std::vector<PropertyFilter> where;  // ANDed; only matching events count
  std::string aggregate_property;     // sum avg min max distinct
  double aggregate_value = 0;

  // kSequence
  std::vector<SequenceStep> steps;
  bool sequence_completed = true;  // outcome: completed, else abandoned
  std::optional<TimeMs> lookback_ms;

  // kBucket
  std::string bucket_id;
  bool member = true;  // check: member, else not_member
  std::optional<TimeMs> for_ms;

  // kComposite
  bool is_and = true;
  std::vector<Criteria> conditions;

  friend bool operator==(const Criteria&, const Criteria&) = default;
};

struct DwellReaction {
  enum class Kind : uint8_t { kAfter, kEvery };
  Kind kind = Kind::kAfter;
  TimeMs duration_ms = 0;
  std::string Label() const;  // "after-<ms>" / "every-<ms>"
  friend bool operator==(const DwellReaction&, const DwellReaction&) = default;
};

enum class EntryLimit : uint8_t { kUnlimited, kOnce, kOncePerPeriod };
enum class BucketKind : uint8_t { kDynamic, kManual };

struct BucketDefinition {
  std::string id;
  std::string name;  // defaults to the id
  std::string description;
  bool enabled = true;
  BucketKind kind = BucketKind::kDynamic;
  std::optional<Criteria> criteria;  // dynamic only
  EntryLimit entry_limit = EntryLimit::kUnlimited;
  std::optional<TimeMs> entry_period_ms;
  std::optional<TimeMs> min_dwell_ms;
  std::optional<TimeMs> max_dwell_ms;
  std::vector<DwellReaction> dwell;
  bool reconcile_joins = true;

  friend bool operator==(const BucketDefinition&, const BucketDefinition&) = default;
};

// Parses and validates a definition with every refusal rule of SPEC §3. Errors name the
// field path ("criteria.conditions[1].value", "dwell[0].every"). Durations accept all the
// forms of SPEC §1. `timeBased`, `reconcileEvery`, `fastExpiry` are accepted and ignored.
// `default_id` stands in for an absent "id" (PUT /v1/buckets/{id}).
Status ParseBucketDefinition(std::string_view json, BucketDefinition* out,
                             std::optional<std::string_view> default_id = std::nullopt);

// Refusals for a definition being accepted now that the definitions already in a log
// (replayed, snapshotted) are spared, so an existing data dir keeps opening: the ids "."
// and ".." (accepted before 2026-12).
Status CheckNewBucketId(std::string_view id);

// The normalized definition as canonical JSON (fixed key order, durations in ms, count
// defaults filled in). Parsing it yields an equal definition. This is what the log stores.
std::string ToCanonicalJson(const BucketDefinition& def);

// Canonical JSON of the normalized criteria alone (empty for manual buckets): two
// definitions have the same criteria exactly when their fingerprints are equal.
std::string CriteriaFingerprint(const BucketDefinition& def);

// True when the criteria contain a windowed event leg (the clock can change them).
bool IsTimeBased(const Criteria& criteria);

// The canonical JSON of a `where` (empty for none) and of a sequence's steps: the identity of
// the event streams they select (State::StreamSpec).
std::string CanonicalWhereJson(const std::vector<PropertyFilter>& where);
std::string CanonicalStepsJson(const std::vector<SequenceStep>& steps);

// Adds every bucket id the criteria's bucket legs name (dependency order, SPEC §3b).
void CollectBucketRefs(const Criteria& criteria, std::set<std::string>* ids);

// Adds every event property key the criteria's `where` filters and aggregates read.
void CollectEventPropertyKeys(const Criteria& criteria, std::set<std::string>* keys);

// Whether a filter clause holds for an event's own properties (absent keys: only
// not_exists and neq hold). The one home of the §3 operators on a property value, which
// contact property legs use too.
bool PropertyOpHolds(PropertyOp op, const PropertyValueView* present,
                     const PropertyValueView& value);
bool FilterHolds(std::span<const PropertyFilter> where, std::span<const PropertyPatch> properties);

// A time property's instant: an RFC 3339 string or a whole number of ms; nullopt otherwise.
std::optional<TimeMs> PropertyTime(const PropertyValueView& value);

// Adds every contact property key the criteria read to `keys` (erasure keeps exactly these
// of an erased contact's patches, so that a replay reproduces the same transitions).
void CollectPropertyKeys(const Criteria& criteria, std::set<std::string>* keys);

// The names the definition JSON uses for these values ("property", "not_exists", "gte", ...):
// the parser's own tables, for readers that show a leg (Engine::ExplainMembership).
std::string_view CriteriaTypeName(CriteriaType type);
std::string_view PropertyOpName(PropertyOp op);
std::string_view EventCheckName(EventCheck check);

}  // namespace bucketd
