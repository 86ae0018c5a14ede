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

}  // namespace bucketd
