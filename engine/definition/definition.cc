#include "engine/definition/definition.h"

#include <simdjson.h>

#include <cctype>
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
    {"before", PropertyOp::kBefore},
    {"after", PropertyOp::kAfter},
};
constexpr EnumName<EventCheck> kEventChecks[] = {
    {"exists", EventCheck::kExists},
    {"not_exists", EventCheck::kNotExists},
    {"count", EventCheck::kCount},
    {"sum", EventCheck::kSum},
    {"avg", EventCheck::kAvg},
    {"min", EventCheck::kMin},
    {"max", EventCheck::kMax},
    {"distinct", EventCheck::kDistinct},
    {"first_seen", EventCheck::kFirstSeen},
};
constexpr EnumName<CountOp> kCountOps[] = {
    {"gt", CountOp::kGt},   {"gte", CountOp::kGte}, {"lt", CountOp::kLt},
    {"lte", CountOp::kLte}, {"eq", CountOp::kEq},
};
constexpr EnumName<CriteriaType> kCriteriaTypes[] = {
    {"property", CriteriaType::kProperty},   {"event", CriteriaType::kEvent},
    {"composite", CriteriaType::kComposite}, {"sequence", CriteriaType::kSequence},
    {"bucket", CriteriaType::kBucket},
};
constexpr EnumName<bool> kCompositeOps[] = {{"and", true}, {"or", false}};
constexpr EnumName<bool> kSequenceOutcomes[] = {{"completed", true}, {"abandoned", false}};
constexpr EnumName<bool> kBucketChecks[] = {{"member", true}, {"not_member", false}};
// The operators a `where` clause takes: the §3 ones, all but the last two of kPropertyOps.
// before / after are relative to now, and a filter is decided once, when its event is
// folded.
constexpr std::span<const EnumName<PropertyOp>> kFilterOps =
    std::span<const EnumName<PropertyOp>>(kPropertyOps).first(std::size(kPropertyOps) - 2);
static_assert(std::end(kPropertyOps)[-2].value == PropertyOp::kBefore &&
              std::end(kPropertyOps)[-1].value == PropertyOp::kAfter);
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

template <typename E>
Status ReadEnum(const element& value, const std::string& path, std::span<const EnumName<E>> table,
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
  for (size_t i = 0; i < table.size(); ++i) {
    message += i == 0 ? " \"" : ", \"";
    message += table[i].name;
    message += '"';
  }
  return Status::InvalidArgument(path, std::move(message));
}

template <typename E, size_t N>
Status ReadEnum(const element& value, const std::string& path, const EnumName<E> (&table)[N],
                E* out) {
  return ReadEnum(value, path, std::span<const EnumName<E>>(table), out);
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

// A signed offset from now for before / after: a sign and a duration string ("+3d",
// "-30d", "+1d12h"); zero is allowed ("+0s": now itself). The sign is required, so that a
// reader of the definition never has to guess a direction.
Status ReadSignedOffset(const element& value, const std::string& path, TimeMs* out_ms) {
  constexpr std::string_view kMessage =
      "must be a signed duration like \"+3d\", \"-30d\" or \"+0s\"";
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS ||
      !(text.starts_with('+') || text.starts_with('-'))) {
    return Status::InvalidArgument(path, std::string(kMessage));
  }
  const bool negative = text.front() == '-';
  text.remove_prefix(1);
  TimeMs magnitude = 0;
  if (!ParseDurationString(text, &magnitude).ok()) {
    // The duration parser refuses zero; an offset of zero is meaningful.
    const bool zero = !text.empty() && text.find_first_of("123456789") == std::string_view::npos &&
                      std::isdigit(static_cast<unsigned char>(text.front()));
    std::string nonzero(text);
    for (char& c : nonzero) {
      if (c == '0') c = '1';
    }
    if (!zero || !ParseDurationString(nonzero, &magnitude).ok()) {
      return Status::InvalidArgument(path, std::string(kMessage));
    }
    magnitude = 0;
  }
  *out_ms = negative ? -magnitude : magnitude;
  return Status::Ok();
}

Status ReadPropertyName(const Fields& fields, const std::string& path, std::string* out) {
  const element* property = fields.Get("property");
  if (property == nullptr) return Status::InvalidArgument(Join(path, "property"), "required");
  Status status = ReadString(*property, Join(path, "property"), out);
  if (!status.ok()) return status;
  if (out->empty() || out->size() > kPropertyKeyBytesMax) {
    return Status::InvalidArgument(Join(path, "property"),
                                   MustBeBetween(1, kPropertyKeyBytesMax, "bytes"));
  }
  return Status::Ok();
}

// The operator and value of a property comparison (a property leg, or a `where` clause).
Status ParseComparison(const Fields& fields, const std::string& path,
                       std::span<const EnumName<PropertyOp>> ops, PropertyOp* op_out,
                       PropertyValue* value_out, TimeMs* offset_out) {
  const element* op = fields.Get("operator");
  if (op == nullptr) return Status::InvalidArgument(Join(path, "operator"), "required");
  Status status = ReadEnum(*op, Join(path, "operator"), ops, op_out);
  if (!status.ok()) return status;

  // exists / not_exists compare nothing; a value sent along (UIs often send null or "") is
  // accepted and dropped rather than kept as meaningless state.
  if (*op_out == PropertyOp::kExists || *op_out == PropertyOp::kNotExists) return Status::Ok();
  const std::string value_path = Join(path, "value");
  const element* value = fields.GetIncludingNull("value");
  if (value == nullptr) return Status::InvalidArgument(value_path, "required");
  if (*op_out == PropertyOp::kBefore || *op_out == PropertyOp::kAfter) {
    return ReadSignedOffset(*value, value_path, offset_out);
  }
  *value_out = ToPropertyValue(*value);
  // A comparison that can never hold is a mistake, not a predicate: orderings hold only
  // between numbers and `contains` only for strings (SPEC §3).
  switch (*op_out) {
    case PropertyOp::kGt:
    case PropertyOp::kGte:
    case PropertyOp::kLt:
    case PropertyOp::kLte:
      if (value_out->type != PropertyValue::Type::kNumber) {
        return Status::InvalidArgument(value_path, "must be a number for this operator");
      }
      break;
    case PropertyOp::kContains:
      if (value_out->type != PropertyValue::Type::kString) {
        return Status::InvalidArgument(value_path, "must be a string for operator \"contains\"");
      }
      break;
    default:
      break;
  }
  return Status::Ok();
}

Status ParsePropertyLeaf(const Fields& fields, const std::string& path, Criteria* out) {
  Status status = ReadPropertyName(fields, path, &out->property);
  if (!status.ok()) return status;
  return ParseComparison(fields, path, kPropertyOps, &out->property_op, &out->value,
                         &out->time_offset_ms);
}

Status ParseWhere(const element& value, const std::string& path, std::vector<PropertyFilter>* out) {
  array items;
  if (value.get_array().get(items) != simdjson::SUCCESS) {
    return Status::InvalidArgument(path, "must be an array");
  }
  if (items.size() == 0) return Status::InvalidArgument(path, "must not be empty");
  if (items.size() > kWhereClausesMax) {
    return Status::InvalidArgument(path,
                                   "at most " + std::to_string(kWhereClausesMax) + " clauses");
  }
  size_t index = 0;
  for (const element item : items) {
    const std::string item_path = Index(path, index++);
    object obj;
    if (item.get_object().get(obj) != simdjson::SUCCESS) {
      return Status::InvalidArgument(item_path, "must be an object");
    }
    Fields fields;
    Status status = fields.Collect(obj, {"property", "operator", "value"}, item_path);
    if (!status.ok()) return status;
    PropertyFilter filter;
    status = ReadPropertyName(fields, item_path, &filter.property);
    if (!status.ok()) return status;
    TimeMs unused_offset = 0;
    status =
        ParseComparison(fields, item_path, kFilterOps, &filter.op, &filter.value, &unused_offset);
    if (!status.ok()) return status;
    out->push_back(std::move(filter));
  }
  return Status::Ok();
}

Status ParseOptionalWhere(const Fields& fields, const std::string& path,
                          std::vector<PropertyFilter>* out) {
  const element* where = fields.Get("where");
  return where == nullptr ? Status::Ok() : ParseWhere(*where, Join(path, "where"), out);
}

Status ParseEventName(const Fields& fields, const std::string& path, std::string* out) {
  const std::string name_path = Join(path, "eventName");
  const element* name = fields.Get("eventName");
  if (name == nullptr) return Status::InvalidArgument(name_path, "required");
  Status status = ReadString(*name, name_path, out);
  if (!status.ok()) return status;
  return ValidateEventName(*out, name_path);
}

Status ParseEventLeaf(const Fields& fields, const std::string& path, Criteria* out) {
  Status status = ParseEventName(fields, path, &out->event_name);
  if (!status.ok()) return status;
  const element* check = fields.Get("check");
  if (check == nullptr) return Status::InvalidArgument(Join(path, "check"), "required");
  status = ReadEnum(*check, Join(path, "check"), kEventChecks, &out->check);
  if (!status.ok()) return status;
  if (status = ParseOptionalWhere(fields, path, &out->where); !status.ok()) return status;
  if (status = ReadOptionalDuration(fields, "within", path, &out->within_ms); !status.ok()) {
    return status;
  }

  const element* op = fields.Get("operator");
  const element* value = fields.Get("value");
  const bool aggregate = IsAggregate(out->check);
  if (!aggregate && fields.Get("property") != nullptr) {
    return Status::InvalidArgument(Join(path, "property"),
                                   "only allowed with check sum, avg, min, max or distinct");
  }
  if (aggregate) {
    status = ReadPropertyName(fields, path, &out->aggregate_property);
    if (!status.ok()) return status;
    if (op == nullptr) return Status::InvalidArgument(Join(path, "operator"), "required");
    if (value == nullptr) return Status::InvalidArgument(Join(path, "value"), "required");
    status = ReadEnum(*op, Join(path, "operator"), kCountOps, &out->count_op);
    if (!status.ok()) return status;
    if (out->check == EventCheck::kDistinct) {
      // Values beyond the bound are not retained (docs/design.md): a threshold below it
      // is decided exactly by the capped count.
      int64_t n = 0;
      if (!ReadWholeNumber(*value, &n) || n < 0 || n >= static_cast<int64_t>(kDistinctValuesMax)) {
        return Status::InvalidArgument(
            Join(path, "value"),
            "must be an integer from 0 to " + std::to_string(kDistinctValuesMax - 1));
      }
      out->aggregate_value = static_cast<double>(n);
    } else if (!ReadNumber(*value, &out->aggregate_value) || !std::isfinite(out->aggregate_value)) {
      return Status::InvalidArgument(Join(path, "value"), "must be a number");
    }
    return Status::Ok();
  }
  if (out->check != EventCheck::kCount) {
    // On exists / not_exists / first_seen a threshold would be silently ignored; the
    // author most likely meant "count".
    if (op != nullptr) {
      return Status::InvalidArgument(Join(path, "operator"), "only allowed with check \"count\"");
    }
    if (value != nullptr) {
      return Status::InvalidArgument(Join(path, "value"), "only allowed with check \"count\"");
    }
    if (out->check == EventCheck::kFirstSeen && !out->within_ms) {
      return Status::InvalidArgument(Join(path, "within"), "required for check \"first_seen\"");
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
  return Status::Ok();
}

Status ParseSequence(const Fields& fields, const std::string& path, Criteria* out) {
  const std::string steps_path = Join(path, "steps");
  const element* steps = fields.Get("steps");
  if (steps == nullptr) return Status::InvalidArgument(steps_path, "required");
  array items;
  if (steps->get_array().get(items) != simdjson::SUCCESS) {
    return Status::InvalidArgument(steps_path, "must be an array");
  }
  if (items.size() < kSequenceStepsMin || items.size() > kSequenceStepsMax) {
    return Status::InvalidArgument(steps_path, "must have " + std::to_string(kSequenceStepsMin) +
                                                   " to " + std::to_string(kSequenceStepsMax) +
                                                   " steps");
  }
  size_t index = 0;
  for (const element item : items) {
    const std::string step_path = Index(steps_path, index++);
    object obj;
    if (item.get_object().get(obj) != simdjson::SUCCESS) {
      return Status::InvalidArgument(step_path, "must be an object");
    }
    Fields step_fields;
    Status status = step_fields.Collect(obj, {"eventName", "where"}, step_path);
    if (!status.ok()) return status;
    SequenceStep step;
    if (status = ParseEventName(step_fields, step_path, &step.event_name); !status.ok()) {
      return status;
    }
    if (status = ParseOptionalWhere(step_fields, step_path, &step.where); !status.ok()) {
      return status;
    }
    out->steps.push_back(std::move(step));
  }
  Status status = ReadOptionalDuration(fields, "within", path, &out->within_ms);
  if (!status.ok()) return status;
  if (!out->within_ms) return Status::InvalidArgument(Join(path, "within"), "required");
  const element* outcome = fields.Get("outcome");
  if (outcome == nullptr) return Status::InvalidArgument(Join(path, "outcome"), "required");
  status = ReadEnum(*outcome, Join(path, "outcome"), kSequenceOutcomes, &out->sequence_completed);
  if (!status.ok()) return status;
  return ReadOptionalDuration(fields, "lookback", path, &out->lookback_ms);
}

Status ParseBucketLeg(const Fields& fields, const std::string& path, Criteria* out) {
  const std::string id_path = Join(path, "bucketId");
  const element* id = fields.Get("bucketId");
  if (id == nullptr) return Status::InvalidArgument(id_path, "required");
  Status status = ReadString(*id, id_path, &out->bucket_id);
  if (!status.ok()) return status;
  if (status = ValidateBucketId(out->bucket_id, id_path); !status.ok()) return status;
  const element* check = fields.Get("check");
  if (check == nullptr) return Status::InvalidArgument(Join(path, "check"), "required");
  status = ReadEnum(*check, Join(path, "check"), kBucketChecks, &out->member);
  if (!status.ok()) return status;
  return ReadOptionalDuration(fields, "for", path, &out->for_ms);
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
      status = fields.Collect(
          obj, {"type", "eventName", "check", "operator", "value", "within", "where", "property"},
          path);
      break;
    case CriteriaType::kComposite:
      status = fields.Collect(obj, {"type", "operator", "conditions"}, path);
      break;
    case CriteriaType::kSequence:
      status = fields.Collect(obj, {"type", "steps", "within", "outcome", "lookback"}, path);
      break;
    case CriteriaType::kBucket:
      status = fields.Collect(obj, {"type", "bucketId", "check", "for"}, path);
      break;
  }
  if (!status.ok()) return status;

  if (out->type == CriteriaType::kComposite) {
    return ParseComposite(fields, path, depth, budget, out);
  }
  if (++budget->leaves > kCriteriaLeavesMax) {
    return Status::InvalidArgument("criteria", "criteria have more than 64 leaves");
  }
  switch (out->type) {
    case CriteriaType::kProperty:
      return ParsePropertyLeaf(fields, path, out);
    case CriteriaType::kEvent:
      return ParseEventLeaf(fields, path, out);
    case CriteriaType::kSequence:
      return ParseSequence(fields, path, out);
    default:
      return ParseBucketLeg(fields, path, out);
  }
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
    case CriteriaType::kSequence:
      return false;
    case CriteriaType::kBucket:
      return !criteria.member;
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
          "every condition is negative (neq, not_exists, event not_exists without "
          "within, or bucket not_member), so the bucket would hold every user; add a positive "
          "condition");
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

void WriteComparison(PropertyOp op, const PropertyValue& value, TimeMs offset_ms,
                     JsonWriter* writer) {
  writer->Key("operator").String(NameOf(kPropertyOps, op));
  if (op == PropertyOp::kBefore || op == PropertyOp::kAfter) {
    // A signed string, as the parser takes it: "+259200000ms".
    writer->Key("value").String((offset_ms < 0 ? "-" : "+") +
                                std::to_string(offset_ms < 0 ? -offset_ms : offset_ms) + "ms");
  } else if (op != PropertyOp::kExists && op != PropertyOp::kNotExists) {
    writer->Key("value");
    WritePropertyValue(value, writer);
  }
}

void WriteWhere(const std::vector<PropertyFilter>& where, JsonWriter* writer) {
  if (where.empty()) return;
  writer->Key("where").BeginArray();
  for (const PropertyFilter& filter : where) {
    writer->BeginObject();
    writer->Key("property").String(filter.property);
    WriteComparison(filter.op, filter.value, 0, writer);
    writer->EndObject();
  }
  writer->EndArray();
}

void WriteCriteria(const Criteria& criteria, JsonWriter* writer) {
  writer->BeginObject();
  writer->Key("type").String(NameOf(kCriteriaTypes, criteria.type));
  switch (criteria.type) {
    case CriteriaType::kProperty:
      writer->Key("property").String(criteria.property);
      WriteComparison(criteria.property_op, criteria.value, criteria.time_offset_ms, writer);
      break;
    case CriteriaType::kEvent:
      // Fields a §3 leg has not are written only when set, so its canonical form (and
      // fingerprint) is what it was before §3b.
      writer->Key("eventName").String(criteria.event_name);
      writer->Key("check").String(NameOf(kEventChecks, criteria.check));
      if (IsAggregate(criteria.check)) {
        writer->Key("property").String(criteria.aggregate_property);
        writer->Key("operator").String(NameOf(kCountOps, criteria.count_op));
        writer->Key("value");
        WritePropertyValue(PropertyValue::Number(criteria.aggregate_value), writer);
      } else if (criteria.check == EventCheck::kCount) {
        writer->Key("operator").String(NameOf(kCountOps, criteria.count_op));
        writer->Key("value").Int(criteria.count_value);
      }
      if (criteria.within_ms.has_value()) writer->Key("within").Int(*criteria.within_ms);
      WriteWhere(criteria.where, writer);
      break;
    case CriteriaType::kComposite:
      writer->Key("operator").String(NameOf(kCompositeOps, criteria.is_and));
      writer->Key("conditions").BeginArray();
      for (const Criteria& child : criteria.conditions) WriteCriteria(child, writer);
      writer->EndArray();
      break;
    case CriteriaType::kSequence:
      writer->Key("steps").BeginArray();
      for (const SequenceStep& step : criteria.steps) {
        writer->BeginObject();
        writer->Key("eventName").String(step.event_name);
        WriteWhere(step.where, writer);
        writer->EndObject();
      }
      writer->EndArray();
      writer->Key("within").Int(*criteria.within_ms);
      writer->Key("outcome").String(NameOf(kSequenceOutcomes, criteria.sequence_completed));
      if (criteria.lookback_ms.has_value()) writer->Key("lookback").Int(*criteria.lookback_ms);
      break;
    case CriteriaType::kBucket:
      writer->Key("bucketId").String(criteria.bucket_id);
      writer->Key("check").String(NameOf(kBucketChecks, criteria.member));
      if (criteria.for_ms.has_value()) writer->Key("for").Int(*criteria.for_ms);
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

std::string CanonicalWhereJson(const std::vector<PropertyFilter>& where) {
  if (where.empty()) return "";
  JsonWriter writer;
  writer.BeginObject();
  WriteWhere(where, &writer);
  writer.EndObject();
  return writer.Take();
}

std::string CanonicalStepsJson(const std::vector<SequenceStep>& steps) {
  JsonWriter writer;
  writer.BeginArray();
  for (const SequenceStep& step : steps) {
    writer.BeginObject();
    writer.Key("eventName").String(step.event_name);
    WriteWhere(step.where, &writer);
    writer.EndObject();
  }
  writer.EndArray();
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
      return criteria.property_op == PropertyOp::kBefore ||
             criteria.property_op == PropertyOp::kAfter;
    case CriteriaType::kEvent:
      return criteria.within_ms.has_value();
    case CriteriaType::kComposite:
      for (const Criteria& child : criteria.conditions) {
        if (IsTimeBased(child)) return true;
      }
      return false;
    case CriteriaType::kSequence:
      return true;
    case CriteriaType::kBucket:
      return criteria.for_ms.has_value();
  }
  return false;
}

void CollectPropertyKeys(const Criteria& criteria, std::set<std::string>* keys) {
  if (criteria.type == CriteriaType::kProperty) keys->insert(criteria.property);
  for (const Criteria& child : criteria.conditions) CollectPropertyKeys(child, keys);
}

void CollectBucketRefs(const Criteria& criteria, std::set<std::string>* ids) {
  if (criteria.type == CriteriaType::kBucket) ids->insert(criteria.bucket_id);
  for (const Criteria& child : criteria.conditions) CollectBucketRefs(child, ids);
}

void CollectEventPropertyKeys(const Criteria& criteria, std::set<std::string>* keys) {
  for (const PropertyFilter& filter : criteria.where) keys->insert(filter.property);
  if (!criteria.aggregate_property.empty()) keys->insert(criteria.aggregate_property);
  for (const SequenceStep& step : criteria.steps) {
    for (const PropertyFilter& filter : step.where) keys->insert(filter.property);
  }
  for (const Criteria& child : criteria.conditions) CollectEventPropertyKeys(child, keys);
}

bool PropertyOpHolds(PropertyOp op, const PropertyValueView* property,
                     const PropertyValueView& value) {
  const bool present = property != nullptr && property->type != PropertyValue::Type::kNull;
  const bool both_numbers = present && property->type == PropertyValue::Type::kNumber &&
                            value.type == PropertyValue::Type::kNumber;
  switch (op) {
    case PropertyOp::kExists:
      return present;
    case PropertyOp::kNotExists:
      return !present;
    case PropertyOp::kEq:
      return present && SameValue(*property, value);
    case PropertyOp::kNeq:
      return !(present && SameValue(*property, value));
    case PropertyOp::kGt:
      return both_numbers && property->number > value.number;
    case PropertyOp::kGte:
      return both_numbers && property->number >= value.number;
    case PropertyOp::kLt:
      return both_numbers && property->number < value.number;
    case PropertyOp::kLte:
      return both_numbers && property->number <= value.number;
    case PropertyOp::kContains:
      return present && property->type == PropertyValue::Type::kString &&
             value.type == PropertyValue::Type::kString &&
             property->text.find(value.text) != std::string_view::npos;
    case PropertyOp::kBefore:
    case PropertyOp::kAfter:
      return false;  // relative to now: criteria_eval decides these
  }
  return false;
}

bool FilterHolds(std::span<const PropertyFilter> where, std::span<const PropertyPatch> properties) {
  for (const PropertyFilter& filter : where) {
    const PropertyValue* found = nullptr;
    for (const PropertyPatch& p : properties) {
      if (p.key == filter.property) found = &p.value;
    }
    const PropertyValueView view = found ? PropertyValueView(*found) : PropertyValueView();
    if (!PropertyOpHolds(filter.op, found ? &view : nullptr, filter.value)) return false;
  }
  return true;
}

std::optional<TimeMs> PropertyTime(const PropertyValueView& value) {
  if (value.type == PropertyValue::Type::kNumber) {
    const double n = value.number;
    if (n != std::trunc(n) || n >= 0x1p62 || n <= -0x1p62) return std::nullopt;
    return static_cast<TimeMs>(n);
  }
  if (value.type != PropertyValue::Type::kString) return std::nullopt;
  TimeMs t = 0;
  if (!ParseRfc3339(value.text, &t).ok()) return std::nullopt;
  return t;
}

std::string_view CriteriaTypeName(CriteriaType type) { return NameOf(kCriteriaTypes, type); }
std::string_view PropertyOpName(PropertyOp op) { return NameOf(kPropertyOps, op); }
std::string_view EventCheckName(EventCheck check) { return NameOf(kEventChecks, check); }

Status CheckNewBucketId(std::string_view id) {
  // Clients and proxies collapse these path segments: /v1/buckets/{id} could not reach them.
  if (id == "." || id == "..") return Status::InvalidArgument("id", "must not be \".\" or \"..\"");
  return Status::Ok();
}

}  // namespace bucketd
