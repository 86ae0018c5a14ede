#include "engine/definition/definition.h"

#include <simdjson.h>

#include <cmath>
#include <initializer_list>
#include <utility>

#include "bucketd/limits.h"
#include "bucketd/time_format.h"
#include "engine/base/input_rules.h"
#include "engine/base/json_values.h"
#include "engine/base/json_writer.h"

namespace bucketd {

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

std::string DurationTooLong() {
  constexpr int64_t kDayMs = 24LL * 60 * 60 * 1000;
  return "must be at most " + std::to_string(kDurationMsMax / kDayMs) + " days";
}

template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

constexpr EnumName<PropertyOp> kPropertyOps[] = {
    {"eq", PropertyOp::kEq},
    {"neq", PropertyOp::kNeq},
    {"gt", PropertyOp::kGt},
    {"gte", PropertyOp::kGte},
    {"lt", PropertyOp::kLt},
    {"lte", PropertyOp::kLte},
    {"exists", PropertyOp::kExists},
    {"not_exists", PropertyOp::kNotExists},
    {"contains", PropertyOp::kContains},
};
constexpr EnumName<EventCheck> kEventChecks[] = {
    {"exists", EventCheck::kExists},
    {"not_exists", EventCheck::kNotExists},
    {"count", EventCheck::kCount},
};
constexpr EnumName<CountOp> kCountOps[] = {
    {"gt", CountOp::kGt},   {"gte", CountOp::kGte}, {"lt", CountOp::kLt},
    {"lte", CountOp::kLte}, {"eq", CountOp::kEq},
};
constexpr EnumName<CriteriaType> kCriteriaTypes[] = {
    {"property", CriteriaType::kProperty},
    {"event", CriteriaType::kEvent},
    {"composite", CriteriaType::kComposite},
};
constexpr EnumName<bool> kCompositeOps[] = {{"and", true}, {"or", false}};
constexpr EnumName<BucketKind> kBucketKinds[] = {
    {"dynamic", BucketKind::kDynamic},
    {"manual", BucketKind::kManual},
};
constexpr EnumName<EntryLimit> kEntryLimits[] = {
    {"unlimited", EntryLimit::kUnlimited},
    {"once", EntryLimit::kOnce},
    {"once_per_period", EntryLimit::kOncePerPeriod},
};

template <typename E, size_t N>
std::string_view NameOf(const EnumName<E> (&table)[N], E value) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return {};
}

std::string Join(std::string_view path, std::string_view key) {
  std::string joined(path);
  if (!joined.empty()) joined += '.';
  joined += key;
  return joined;
}

std::string Index(std::string_view path, size_t index) {
  std::string indexed(path);
  indexed += '[';
  indexed += std::to_string(index);
  indexed += ']';
  return indexed;
}

// An object's fields, looked up by name once unknown and duplicate keys have been refused
// (a typo must fail loudly, and a repeated key has no single meaning).
class Fields {
 public:
  Status Collect(object obj, std::initializer_list<std::string_view> allowed,
                 std::string_view path) {
    for (const auto field : obj) {
      bool known = false;
      for (const std::string_view name : allowed) known = known || name == field.key;
      if (!known) {
        return Status::InvalidArgument(Join(path, field.key),
                                       "unknown field \"" + std::string(field.key) + "\"");
      }
      if (GetIncludingNull(field.key) != nullptr) {
        return Status::InvalidArgument(Join(path, field.key), "duplicate field");
      }
      fields_.emplace_back(field.key, field.value);
    }
    return Status::Ok();
  }

  // The value of `key`, or nullptr when absent. JSON null counts as absent, since clients
  // commonly send null for an optional field they do not set.
  const element* Get(std::string_view key) const {
    const element* value = GetIncludingNull(key);
    return value != nullptr && value->is_null() ? nullptr : value;
  }

  // Like Get, but a JSON null is a value (a property compared with null).
  const element* GetIncludingNull(std::string_view key) const {
    for (const auto& [name, value] : fields_) {
      if (name == key) return &value;
    }
    return nullptr;
  }

  bool empty() const { return fields_.empty(); }

 private:
  std::vector<std::pair<std::string_view, element>> fields_;
};

Status ReadString(const element& value, const std::string& path, std::string* out) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) {
    return Status::InvalidArgument(path, "must be a string");
  }
  *out = std::string(text);
  return Status::Ok();
}

Status ReadBool(const element& value, const std::string& path, bool* out) {
  if (value.get_bool().get(*out) != simdjson::SUCCESS) {
    return Status::InvalidArgument(path, "must be true or false");
  }
  return Status::Ok();
}

template <typename E, size_t N>
Status ReadEnum(const element& value, const std::string& path, const EnumName<E> (&table)[N],
                E* out) {
  std::string text;
  Status status = ReadString(value, path, &text);
  for (const auto& entry : table) {
    if (status.ok() && entry.name == text) {
      *out = entry.value;
      return Status::Ok();
    }
  }
  std::string message = "must be one of";
  for (size_t i = 0; i < N; ++i) {
    message += i == 0 ? " \"" : ", \"";
    message += table[i].name;
    message += '"';
  }
  return Status::InvalidArgument(path, std::move(message));
}

// A JSON number as a double, for fields that accept any number.
bool ReadNumber(const element& value, double* out) {
  switch (value.type()) {
    case element_type::INT64:
      *out = static_cast<double>(value.get_int64().value_unsafe());
      return true;
    case element_type::UINT64:
      *out = static_cast<double>(value.get_uint64().value_unsafe());
      return true;
    case element_type::DOUBLE:
      *out = value.get_double().value_unsafe();
      return true;
    default:
      return false;
  }
}

// A JSON number that is a whole number fitting int64 (1e3 and 10.0 are whole numbers).
bool ReadWholeNumber(const element& value, int64_t* out) {
  if (value.type() == element_type::INT64) {
    *out = value.get_int64().value_unsafe();
    return true;
  }
  double number = 0;
  // 2^63 is exactly representable; anything at or above it does not fit.
  if (!ReadNumber(value, &number) || number != std::trunc(number) || number >= 0x1p63 ||
      number < -0x1p63) {
    return false;
  }
  *out = static_cast<int64_t>(number);
  return true;
}

// Durations (SPEC §1): an object of units, an integer of milliseconds, or a string like
// "1d12h". The object accepts "days" and "milliseconds" besides the spec's "hours",
// "minutes" and "seconds": they are unambiguous and spare callers a conversion. Object
// values may be fractional ({"hours": 1.5}); the total is rounded to the nearest ms.
Status ReadDuration(const element& value, const std::string& path, TimeMs* out_ms) {
  TimeMs duration_ms = 0;
  switch (value.type()) {
    case element_type::INT64:
    case element_type::UINT64:
    case element_type::DOUBLE: {
      double number = 0;
      ReadNumber(value, &number);
      if (number <= 0) return Status::InvalidArgument(path, "must be > 0");
      if (!ReadWholeNumber(value, &duration_ms)) {
        return Status::InvalidArgument(path, number != std::trunc(number)
                                                 ? "must be a whole number of milliseconds"
                                                 : DurationTooLong());
      }
      break;
    }
    case element_type::STRING: {
      Status status = ParseDurationString(value.get_string().value_unsafe(), &duration_ms);
      if (!status.ok()) return status.WithFieldPrefix(path);
      break;
    }
    case element_type::OBJECT: {
      static constexpr std::pair<std::string_view, double> kUnitsMs[] = {
          {"days", 86400000.0}, {"hours", 3600000.0},  {"minutes", 60000.0},
          {"seconds", 1000.0},  {"milliseconds", 1.0},
      };
      Fields fields;
      Status status = fields.Collect(value.get_object().value_unsafe(),
                                     {"days", "hours", "minutes", "seconds", "milliseconds"}, path);
      if (!status.ok()) return status;
      if (fields.empty()) {
        return Status::InvalidArgument(
            path, "must have at least one of days, hours, minutes, seconds, milliseconds");
      }
      double total_ms = 0;
      for (const auto& [unit, unit_ms] : kUnitsMs) {
        const element* part = fields.Get(unit);
        if (part == nullptr) continue;
        double number = 0;
        if (!ReadNumber(*part, &number) || number < 0) {
          return Status::InvalidArgument(Join(path, unit), "must be a non-negative number");
        }
        total_ms += number * unit_ms;
      }
      if (total_ms > static_cast<double>(kDurationMsMax)) {
        return Status::InvalidArgument(path, DurationTooLong());
      }
      duration_ms = std::llround(total_ms);
      break;
    }
    default:
      return Status::InvalidArgument(
          path,
          "must be a duration: {\"hours\":h,\"minutes\":m,\"seconds\":s}, an integer of "
          "milliseconds, or a string like \"1d12h\"");
  }
  if (duration_ms <= 0) return Status::InvalidArgument(path, "must be > 0");
  if (duration_ms > kDurationMsMax) {
    return Status::InvalidArgument(path, DurationTooLong());
  }
  *out_ms = duration_ms;
  return Status::Ok();
}

Status ReadOptionalDuration(const Fields& fields, std::string_view key, std::string_view path,
                            std::optional<TimeMs>* out_ms) {
  const element* value = fields.Get(key);
  if (value == nullptr) return Status::Ok();
  TimeMs duration_ms = 0;
  Status status = ReadDuration(*value, Join(path, key), &duration_ms);
  if (!status.ok()) return status;
  *out_ms = duration_ms;
  return Status::Ok();
}

struct CriteriaBudget {
  size_t leaves = 0;
};

Status ParseCriteria(const element& node, const std::string& path, size_t depth,
                     CriteriaBudget* budget, Criteria* out);

Status ParsePropertyLeaf(const Fields& fields, const std::string& path, Criteria* out) {
  const element* property = fields.Get("property");
  if (property == nullptr) return Status::InvalidArgument(Join(path, "property"), "required");
  Status status = ReadString(*property, Join(path, "property"), &out->property);
  if (!status.ok()) return status;
  if (out->property.empty() || out->property.size() > kPropertyKeyBytesMax) {
    return Status::InvalidArgument(Join(path, "property"),
                                   MustBeBetween(1, kPropertyKeyBytesMax, "bytes"));
  }
  const element* op = fields.Get("operator");
  if (op == nullptr) return Status::InvalidArgument(Join(path, "operator"), "required");
  status = ReadEnum(*op, Join(path, "operator"), kPropertyOps, &out->property_op);
  if (!status.ok()) return status;

  // exists / not_exists compare nothing; a value sent along (UIs often send null or "") is
  // accepted and dropped rather than kept as meaningless state.
  if (out->property_op == PropertyOp::kExists || out->property_op == PropertyOp::kNotExists) {
    return Status::Ok();
  }
  const std::string value_path = Join(path, "value");
  const element* value = fields.GetIncludingNull("value");
  if (value == nullptr) return Status::InvalidArgument(value_path, "required");
  out->value = ToPropertyValue(*value);
  // A comparison that can never hold is a mistake, not a predicate: orderings hold only
  // between numbers and `contains` only for strings (SPEC §3).
  switch (out->property_op) {
    case PropertyOp::kGt:
    case PropertyOp::kGte:
    case PropertyOp::kLt:
    case PropertyOp::kLte:
      if (out->value.type != PropertyValue::Type::kNumber) {
        return Status::InvalidArgument(value_path, "must be a number for this operator");
      }
      break;
    case PropertyOp::kContains:
      if (out->value.type != PropertyValue::Type::kString) {
        return Status::InvalidArgument(value_path, "must be a string for operator \"contains\"");
      }
      break;
    default:
      break;
  }
  return Status::Ok();
}

Status ParseEventLeaf(const Fields& fields, const std::string& path, Criteria* out) {
  const std::string name_path = Join(path, "eventName");
  const element* name = fields.Get("eventName");
  if (name == nullptr) return Status::InvalidArgument(name_path, "required");
  Status status = ReadString(*name, name_path, &out->event_name);
  if (!status.ok()) return status;
  if (status = ValidateEventName(out->event_name, name_path); !status.ok()) return status;
  const element* check = fields.Get("check");
  if (check == nullptr) return Status::InvalidArgument(Join(path, "check"), "required");
  status = ReadEnum(*check, Join(path, "check"), kEventChecks, &out->check);
  if (!status.ok()) return status;

  const element* op = fields.Get("operator");
  const element* value = fields.Get("value");
  if (out->check != EventCheck::kCount) {
    // On exists / not_exists a threshold would be silently ignored; the author most
    // likely meant "count".
    if (op != nullptr) {
      return Status::InvalidArgument(Join(path, "operator"), "only allowed with check \"count\"");
    }
    if (value != nullptr) {
      return Status::InvalidArgument(Join(path, "value"), "only allowed with check \"count\"");
    }
  } else if ((op == nullptr) != (value == nullptr)) {
    return Status::InvalidArgument(Join(path, op == nullptr ? "operator" : "value"),
                                   "count needs both operator and value, or neither");
  } else if (op == nullptr) {
    out->count_op = CountOp::kGt;
    out->count_value = 0;
  } else {
    status = ReadEnum(*op, Join(path, "operator"), kCountOps, &out->count_op);
    if (!status.ok()) return status;
    if (!ReadWholeNumber(*value, &out->count_value) || out->count_value < 0) {
      return Status::InvalidArgument(Join(path, "value"), "must be a non-negative integer");
    }
  }
  return ReadOptionalDuration(fields, "within", path, &out->within_ms);
}

Status ParseComposite(const Fields& fields, const std::string& path, size_t depth,
                      CriteriaBudget* budget, Criteria* out) {
  const element* op = fields.Get("operator");
  if (op == nullptr) return Status::InvalidArgument(Join(path, "operator"), "required");
  Status status = ReadEnum(*op, Join(path, "operator"), kCompositeOps, &out->is_and);
  if (!status.ok()) return status;
  const std::string conditions_path = Join(path, "conditions");
  const element* conditions = fields.Get("conditions");
  if (conditions == nullptr) return Status::InvalidArgument(conditions_path, "required");
  array items;
  if (conditions->get_array().get(items) != simdjson::SUCCESS) {
    return Status::InvalidArgument(conditions_path, "must be an array");
  }
  if (items.size() == 0) return Status::InvalidArgument(conditions_path, "must not be empty");
  size_t index = 0;
  for (const element item : items) {
    Criteria child;
    status = ParseCriteria(item, Index(conditions_path, index), depth + 1, budget, &child);
    if (!status.ok()) return status;
    out->conditions.push_back(std::move(child));
    ++index;
  }
  return Status::Ok();
}

// `depth` counts nodes from the root: a leaf at the top level has depth 1.
Status ParseCriteria(const element& node, const std::string& path, size_t depth,
                     CriteriaBudget* budget, Criteria* out) {
  if (depth > kCriteriaDepthMax) {
    return Status::InvalidArgument(path, "criteria nest deeper than 16 levels");
  }
  object obj;
  if (node.get_object().get(obj) != simdjson::SUCCESS) {
    return Status::InvalidArgument(path, "must be an object");
  }
  // The type decides which fields are known, so it is read before the others.
  element type_value;
  if (obj["type"].get(type_value) != simdjson::SUCCESS || type_value.is_null()) {
    return Status::InvalidArgument(Join(path, "type"), "required");
  }
  Status status = ReadEnum(type_value, Join(path, "type"), kCriteriaTypes, &out->type);
  if (!status.ok()) return status;

  Fields fields;
  switch (out->type) {
    case CriteriaType::kProperty:
      status = fields.Collect(obj, {"type", "property", "operator", "value"}, path);
      break;
    case CriteriaType::kEvent:
      status =
          fields.Collect(obj, {"type", "eventName", "check", "operator", "value", "within"}, path);
      break;
    case CriteriaType::kComposite:
      status = fields.Collect(obj, {"type", "operator", "conditions"}, path);
      break;
  }
  if (!status.ok()) return status;

  if (out->type == CriteriaType::kComposite) {
    return ParseComposite(fields, path, depth, budget, out);
  }
  if (++budget->leaves > kCriteriaLeavesMax) {
    return Status::InvalidArgument("criteria", "criteria have more than 64 leaves");
  }
  return out->type == CriteriaType::kProperty ? ParsePropertyLeaf(fields, path, out)
                                              : ParseEventLeaf(fields, path, out);
}

// A leaf is negative when it holds for a user who has done nothing at all. A bucket made
// only of those would hold every user the engine has ever seen, which is never intended.
bool AllLeavesNegative(const Criteria& criteria) {
  switch (criteria.type) {
    case CriteriaType::kProperty:
      return criteria.property_op == PropertyOp::kNeq ||
             criteria.property_op == PropertyOp::kNotExists;
    case CriteriaType::kEvent:
      return criteria.check == EventCheck::kNotExists && !criteria.within_ms.has_value();
    case CriteriaType::kComposite:
      for (const Criteria& child : criteria.conditions) {
        if (!AllLeavesNegative(child)) return false;
      }
      return true;
  }
  return false;
}

Status ParseDwell(const element& value, BucketDefinition* def) {
  array items;
  if (value.get_array().get(items) != simdjson::SUCCESS) {
    return Status::InvalidArgument("dwell", "must be an array");
  }
  if (items.size() > kDwellReactionsMax) {
    return Status::InvalidArgument("dwell", "at most 32 dwell reactions");
  }
  size_t index = 0;
  for (const element item : items) {
    const std::string path = Index("dwell", index++);
    object obj;
    if (item.get_object().get(obj) != simdjson::SUCCESS) {
      return Status::InvalidArgument(path, "must be an object");
    }
    Fields fields;
    Status status = fields.Collect(obj, {"after", "every"}, path);
    if (!status.ok()) return status;
    const element* after = fields.Get("after");
    const element* every = fields.Get("every");
    if ((after == nullptr) == (every == nullptr)) {
      return Status::InvalidArgument(path, "needs exactly one of \"after\" or \"every\"");
    }
    DwellReaction reaction;
    reaction.kind = after != nullptr ? DwellReaction::Kind::kAfter : DwellReaction::Kind::kEvery;
    status = ReadDuration(after != nullptr ? *after : *every,
                          Join(path, after != nullptr ? "after" : "every"), &reaction.duration_ms);
    if (!status.ok()) return status;
    // The label is the reaction's identity in transition names and idempotency keys.
    for (const DwellReaction& earlier : def->dwell) {
      if (earlier.Label() == reaction.Label()) {
        return Status::InvalidArgument(path, "duplicate dwell reaction " + reaction.Label());
      }
    }
    def->dwell.push_back(reaction);
  }
  return Status::Ok();
}

Status ParseDefinition(const element& root, std::optional<std::string_view> default_id,
                       BucketDefinition* def) {
  object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) {
    return Status::InvalidArgument("", "a bucket definition must be a JSON object");
  }
  Fields fields;
  Status status = fields.Collect(obj,
                                 {"id", "name", "description", "enabled", "kind", "criteria",
                                  "entryLimit", "entryPeriod", "minDwell", "maxDwell", "dwell",
                                  "reconcileJoins", "timeBased", "reconcileEvery", "fastExpiry"},
                                 "");
  if (!status.ok()) return status;

  const element* id = fields.Get("id");
  if (id != nullptr) {
    status = ReadString(*id, "id", &def->id);
    if (!status.ok()) return status;
  } else if (default_id) {
    def->id = std::string(*default_id);
  } else {
    return Status::InvalidArgument("id", "required");
  }
  if (status = ValidateBucketId(def->id); !status.ok()) return status;

  if (const element* name = fields.Get("name")) {
    status = ReadString(*name, "name", &def->name);
    if (!status.ok()) return status;
    if (def->name.empty() || def->name.size() > kBucketNameBytesMax) {
      return Status::InvalidArgument("name", MustBeBetween(1, kBucketNameBytesMax, "bytes"));
    }
  } else {
    def->name = def->id;
  }
  if (const element* description = fields.Get("description")) {
    status = ReadString(*description, "description", &def->description);
    if (!status.ok()) return status;
    if (def->description.size() > kDescriptionBytesMax) {
      return Status::InvalidArgument(
          "description", "must be at most " + std::to_string(kDescriptionBytesMax) + " bytes");
    }
  }
  if (const element* enabled = fields.Get("enabled")) {
    status = ReadBool(*enabled, "enabled", &def->enabled);
    if (!status.ok()) return status;
  }
  if (const element* kind = fields.Get("kind")) {
    status = ReadEnum(*kind, "kind", kBucketKinds, &def->kind);
    if (!status.ok()) return status;
  }

  const element* criteria = fields.Get("criteria");
  if (def->kind == BucketKind::kManual && criteria != nullptr) {
    return Status::InvalidArgument("criteria", "a manual bucket must not have criteria");
  }
  if (def->kind == BucketKind::kDynamic) {
    if (criteria == nullptr) {
      return Status::InvalidArgument("criteria", "required for a dynamic bucket");
    }
    CriteriaBudget budget;
    Criteria parsed;
    status = ParseCriteria(*criteria, "criteria", 1, &budget, &parsed);
    if (!status.ok()) return status;
    if (AllLeavesNegative(parsed)) {
      return Status::InvalidArgument(
          "criteria",
          "every condition is negative (neq, not_exists, or event not_exists without "
          "within), so the bucket would hold every user; add a positive condition");
    }
    def->criteria = std::move(parsed);
  }

  if (const element* limit = fields.Get("entryLimit")) {
    status = ReadEnum(*limit, "entryLimit", kEntryLimits, &def->entry_limit);
    if (!status.ok()) return status;
  }
  status = ReadOptionalDuration(fields, "entryPeriod", "", &def->entry_period_ms);
  if (!status.ok()) return status;
  status = ReadOptionalDuration(fields, "minDwell", "", &def->min_dwell_ms);
  if (!status.ok()) return status;
  status = ReadOptionalDuration(fields, "maxDwell", "", &def->max_dwell_ms);
  if (!status.ok()) return status;
  if (def->min_dwell_ms.has_value() && def->max_dwell_ms.has_value() &&
      *def->max_dwell_ms < *def->min_dwell_ms) {
    return Status::InvalidArgument("maxDwell", "must be >= minDwell");
  }
  if (const element* dwell = fields.Get("dwell")) {
    status = ParseDwell(*dwell, def);
    if (!status.ok()) return status;
  }
  if (const element* reconcile_joins = fields.Get("reconcileJoins")) {
    status = ReadBool(*reconcile_joins, "reconcileJoins", &def->reconcile_joins);
    if (!status.ok()) return status;
  }

  // Compatibility fields: validated so garbage still fails, then dropped, because the
  // engine is exact for every bucket (SPEC §5) and derives what they used to configure.
  bool ignored_flag = false;
  if (const element* time_based = fields.Get("timeBased")) {
    status = ReadBool(*time_based, "timeBased", &ignored_flag);
    if (!status.ok()) return status;
  }
  if (const element* fast_expiry = fields.Get("fastExpiry")) {
    status = ReadBool(*fast_expiry, "fastExpiry", &ignored_flag);
    if (!status.ok()) return status;
  }
  std::optional<TimeMs> ignored_duration_ms;
  return ReadOptionalDuration(fields, "reconcileEvery", "", &ignored_duration_ms);
}

void WriteCriteria(const Criteria& criteria, JsonWriter* writer) {
  writer->BeginObject();
  writer->Key("type").String(NameOf(kCriteriaTypes, criteria.type));
  switch (criteria.type) {
    case CriteriaType::kProperty:
      writer->Key("property").String(criteria.property);
      writer->Key("operator").String(NameOf(kPropertyOps, criteria.property_op));
      if (criteria.property_op != PropertyOp::kExists &&
          criteria.property_op != PropertyOp::kNotExists) {
        writer->Key("value");
        WritePropertyValue(criteria.value, writer);
      }
      break;
    case CriteriaType::kEvent:
      writer->Key("eventName").String(criteria.event_name);
      writer->Key("check").String(NameOf(kEventChecks, criteria.check));
      if (criteria.check == EventCheck::kCount) {
        writer->Key("operator").String(NameOf(kCountOps, criteria.count_op));
        writer->Key("value").Int(criteria.count_value);
      }
      if (criteria.within_ms.has_value()) writer->Key("within").Int(*criteria.within_ms);
      break;
    case CriteriaType::kComposite:
      writer->Key("operator").String(NameOf(kCompositeOps, criteria.is_and));
      writer->Key("conditions").BeginArray();
      for (const Criteria& child : criteria.conditions) WriteCriteria(child, writer);
      writer->EndArray();
      break;
  }
  writer->EndObject();
}

}  // namespace

std::string DwellReaction::Label() const {
  return (kind == Kind::kAfter ? "after-" : "every-") + std::to_string(duration_ms);
}

Status ParseBucketDefinition(std::string_view json, BucketDefinition* out,
                             std::optional<std::string_view> default_id) {
  simdjson::dom::parser parser;
  const simdjson::padded_string padded(json);
  element root;
  if (const auto error = parser.parse(padded).get(root); error != simdjson::SUCCESS) {
    return Status::InvalidArgument(
        "", std::string("malformed JSON: ") + simdjson::error_message(error));
  }
  BucketDefinition def;
  Status status = ParseDefinition(root, default_id, &def);
  if (!status.ok()) return status;
  *out = std::move(def);
  return Status::Ok();
}

std::string ToCanonicalJson(const BucketDefinition& def) {
  JsonWriter writer;
  writer.BeginObject();
  writer.Key("id").String(def.id);
  writer.Key("name").String(def.name);
  if (!def.description.empty()) writer.Key("description").String(def.description);
  writer.Key("kind").String(NameOf(kBucketKinds, def.kind));
  writer.Key("enabled").Bool(def.enabled);
  if (def.criteria.has_value()) {
    writer.Key("criteria");
    WriteCriteria(*def.criteria, &writer);
  }
  writer.Key("entryLimit").String(NameOf(kEntryLimits, def.entry_limit));
  if (def.entry_period_ms.has_value()) writer.Key("entryPeriod").Int(*def.entry_period_ms);
  if (def.min_dwell_ms.has_value()) writer.Key("minDwell").Int(*def.min_dwell_ms);
  if (def.max_dwell_ms.has_value()) writer.Key("maxDwell").Int(*def.max_dwell_ms);
  if (!def.dwell.empty()) {
    writer.Key("dwell").BeginArray();
    for (const DwellReaction& reaction : def.dwell) {
      writer.BeginObject();
      writer.Key(reaction.kind == DwellReaction::Kind::kAfter ? "after" : "every")
          .Int(reaction.duration_ms);
      writer.EndObject();
    }
    writer.EndArray();
  }
  writer.Key("reconcileJoins").Bool(def.reconcile_joins);
  writer.EndObject();
  return writer.Take();
}

std::string CriteriaFingerprint(const BucketDefinition& def) {
  if (!def.criteria.has_value()) return "";
  JsonWriter writer;
  WriteCriteria(*def.criteria, &writer);
  return writer.Take();
}

bool IsTimeBased(const Criteria& criteria) {
  switch (criteria.type) {
    case CriteriaType::kProperty:
      return false;
    case CriteriaType::kEvent:
      return criteria.within_ms.has_value();
    case CriteriaType::kComposite:
      for (const Criteria& child : criteria.conditions) {
        if (IsTimeBased(child)) return true;
      }
      return false;
  }
  return false;
}

void CollectPropertyKeys(const Criteria& criteria, std::set<std::string>* keys) {
  switch (criteria.type) {
    case CriteriaType::kProperty:
      keys->insert(criteria.property);
      return;
    case CriteriaType::kEvent:
      return;
    case CriteriaType::kComposite:
      for (const Criteria& child : criteria.conditions) CollectPropertyKeys(child, keys);
      return;
  }
}

Status CheckNewBucketId(std::string_view id) {
  // Clients and proxies collapse these path segments: /v1/buckets/{id} could not reach them.
  if (id == "." || id == "..") return Status::InvalidArgument("id", "must not be \".\" or \"..\"");
  return Status::Ok();
}

}  // namespace bucketd
