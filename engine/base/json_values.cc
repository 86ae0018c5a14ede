#include "engine/base/json_values.h"

#include <simdjson.h>

#include <string>

namespace bucketd {

PropertyValue ToPropertyValue(const simdjson::dom::element& value) {
  using simdjson::dom::element_type;
  switch (value.type()) {
    case element_type::NULL_VALUE:
      return PropertyValue::Null();
    case element_type::BOOL:
      return PropertyValue::Bool(value.get_bool().value_unsafe());
    case element_type::INT64:
      return PropertyValue::Number(static_cast<double>(value.get_int64().value_unsafe()));
    case element_type::UINT64:
      return PropertyValue::Number(static_cast<double>(value.get_uint64().value_unsafe()));
    case element_type::DOUBLE:
      return PropertyValue::Number(value.get_double().value_unsafe());
    case element_type::STRING:
      return PropertyValue::String(std::string(value.get_string().value_unsafe()));
    case element_type::ARRAY:
      return PropertyValue{PropertyValue::Type::kArray, false, 0, simdjson::minify(value)};
    case element_type::OBJECT:
      return PropertyValue{PropertyValue::Type::kObject, false, 0, simdjson::minify(value)};
  }
  return PropertyValue::Null();
}

}  // namespace bucketd
