#pragma once
// A property value read where it is stored: what a PropertyValue holds, with the text
// borrowed instead of owned. A contact's properties are kept compact in the state (the
// text inline or in a block of its own, engine/state/user.h) and read through this, so a
// criteria leg comparing a value copies nothing; a PropertyValue converts to one for free.
#include <string_view>

#include "bucketd/types.h"

namespace bucketd {

struct PropertyValueView {
  PropertyValue::Type type = PropertyValue::Type::kNull;
  bool boolean = false;
  double number = 0;
  std::string_view text;  // a string's contents, or an array's or object's JSON

  PropertyValueView() = default;
  PropertyValueView(const PropertyValue& value)  // NOLINT: a value is readable as a view
      : type(value.type), boolean(value.boolean), number(value.number), text(value.text) {}

  PropertyValue ToValue() const { return {type, boolean, number, std::string(text)}; }
};

// Whether two values are the same JSON value: the same type and the field it uses (numbers
// compare as doubles). The one home of value equality: `eq`/`neq` legs and filters, and the
// fold's "did the contact's property change" both ask it.
inline bool SameValue(const PropertyValueView& a, const PropertyValueView& b) {
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

}  // namespace bucketd
