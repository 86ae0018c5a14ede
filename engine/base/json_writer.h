#pragma once
// A small streaming JSON writer (output only; all parsing goes through simdjson). What it
// writes is always valid UTF-8: Key() and String() write ill-formed UTF-8 as U+FFFD (one per
// maximal ill-formed subpart, escaped as \ufffd), so an id echoed from a request path or a
// stored value can never make a response unreadable. Raw() is written as given.
#include <cstdint>
#include <string>
#include <string_view>

#include "bucketd/types.h"

namespace bucketd {

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Uint(uint64_t value);
  JsonWriter& Double(double value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  // Inserts already-serialized JSON (e.g. a stored definition) as one value.
  JsonWriter& Raw(std::string_view json);
  // RFC 3339 with milliseconds.
  JsonWriter& Time(int64_t time_ms);

  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void BeforeValue();

  std::string out_;
  bool need_comma_ = false;
};

// A property value as JSON: its own type, arrays and objects as the minified text they keep.
void WritePropertyValue(const PropertyValue& value, JsonWriter* writer);

// A transition as SPEC §7 has it, for the HTTP stream and cluster mode's output stream alike.
// `source` is written for every kind (the membership's source), `reason` only for left,
// `dwellLabel` / `dwellCount` only for dwell; a missing email is null.
void WriteTransition(const Transition& t, JsonWriter* writer);

}  // namespace bucketd
