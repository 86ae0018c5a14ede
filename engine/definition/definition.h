#pragma once
// The typed model of a bucket definition (SPEC §3) and its JSON parser.
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"

namespace bucketd {

enum class PropertyOp : uint8_t { kEq, kNeq, kGt, kGte, kLt, kLte, kExists, kNotExists, kContains };
enum class EventCheck : uint8_t { kExists, kNotExists, kCount };
enum class CountOp : uint8_t { kGt, kGte, kLt, kLte, kEq };
enum class CriteriaType : uint8_t { kProperty, kEvent, kComposite };

// One node of a criteria tree. Only the fields of its `type` are meaningful.
struct Criteria {
  CriteriaType type = CriteriaType::kProperty;

  // kProperty
  std::string property;
  PropertyOp property_op = PropertyOp::kEq;
  PropertyValue value;  // unused for exists / not_exists

  // kEvent. `count` without operator/value is normalized to `gt 0`.
  std::string event_name;
  EventCheck check = EventCheck::kExists;
  CountOp count_op = CountOp::kGt;
  int64_t count_value = 0;
  std::optional<TimeMs> within_ms;

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

// Adds every contact property key the criteria read to `keys` (erasure keeps exactly these
// of an erased contact's patches, so that a replay reproduces the same transitions).
void CollectPropertyKeys(const Criteria& criteria, std::set<std::string>* keys);

}  // namespace bucketd
