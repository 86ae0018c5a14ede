#include "engine/base/json_writer.h"

#include <charconv>
#include <cmath>

#include "bucketd/time_format.h"

namespace bucketd {

namespace {

// Integral doubles below 2^53 are exact as int64 and read better without ".0" or an
// exponent ("count": 10, not 1e1); beyond that the shortest round-trip form is used.
constexpr double kExactIntegerMax = 9007199254740992.0;  // 2^53

// The UTF-8 sequence that starts `text` (not empty, first byte >= 0x80): true with its
// length when it is well formed (Unicode 15, table 3-7: no overlong forms, surrogates or
// code points past U+10FFFF); else false with the length of its maximal ill-formed
// subpart, the bytes one U+FFFD replaces (Unicode 15, section 3.9).
bool Utf8Sequence(std::string_view text, size_t* length) {
  const auto lead = static_cast<unsigned char>(text[0]);
  size_t needed = 0;
  unsigned char low = 0x80;  // the range of the second byte; later ones are 80..BF
  unsigned char high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    needed = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    needed = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    needed = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    *length = 1;
    return false;
  }
  size_t i = 1;
  for (; i < needed && i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < low || byte > high) break;
    low = 0x80;
    high = 0xbf;
  }
  *length = i;
  return i == needed;
}

// A JSON string of `text`. Output is always valid UTF-8 whatever `text` holds (ids come
// percent-decoded from request paths): ill-formed bytes are written as \ufffd.
void AppendEscaped(std::string* out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[(c >> 4) & 0xf]);
          out->push_back(kHex[c & 0xf]);
        } else if (static_cast<unsigned char>(c) < 0x80) {
          out->push_back(c);
        } else {
          size_t length = 0;
          if (Utf8Sequence(text.substr(i), &length)) {
            out->append(text.substr(i, length));
          } else {
            out->append("\\ufffd");
          }
          i += length - 1;
        }
    }
  }
  out->push_back('"');
}

}  // namespace

void JsonWriter::BeforeValue() {
  if (need_comma_) out_.push_back(',');
  need_comma_ = true;
}

JsonWriter& JsonWriter::BeginObject() {
  BeforeValue();
  out_.push_back('{');
  need_comma_ = false;
  return *this;
}

JsonWriter& JsonWriter::EndObject() {
  out_.push_back('}');
  need_comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::BeginArray() {
  BeforeValue();
  out_.push_back('[');
  need_comma_ = false;
  return *this;
}

JsonWriter& JsonWriter::EndArray() {
  out_.push_back(']');
  need_comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::Key(std::string_view key) {
  if (need_comma_) out_.push_back(',');
  AppendEscaped(&out_, key);
  out_.push_back(':');
  // The value that follows belongs to this key: no comma before it.
  need_comma_ = false;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view value) {
  BeforeValue();
  AppendEscaped(&out_, value);
  return *this;
}

JsonWriter& JsonWriter::Int(int64_t value) {
  BeforeValue();
  char buffer[24];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out_.append(buffer, result.ptr);
  return *this;
}

JsonWriter& JsonWriter::Uint(uint64_t value) {
  BeforeValue();
  char buffer[24];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out_.append(buffer, result.ptr);
  return *this;
}

JsonWriter& JsonWriter::Double(double value) {
  // JSON has no NaN or infinity; null is the conventional stand-in.
  if (!std::isfinite(value)) return Null();
  if (value == std::trunc(value) && std::fabs(value) <= kExactIntegerMax) {
    return Int(static_cast<int64_t>(value));
  }
  BeforeValue();
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out_.append(buffer, result.ptr);
  return *this;
}

JsonWriter& JsonWriter::Bool(bool value) {
  BeforeValue();
  out_.append(value ? "true" : "false");
  return *this;
}

JsonWriter& JsonWriter::Null() {
  BeforeValue();
  out_.append("null");
  return *this;
}

JsonWriter& JsonWriter::Raw(std::string_view json) {
  BeforeValue();
  out_.append(json);
  return *this;
}

JsonWriter& JsonWriter::Time(int64_t time_ms) { return String(FormatRfc3339(time_ms)); }

void WritePropertyValue(const PropertyValue& value, JsonWriter* writer) {
  switch (value.type) {
    case PropertyValue::Type::kNull:
      writer->Null();
      break;
    case PropertyValue::Type::kBool:
      writer->Bool(value.boolean);
      break;
    case PropertyValue::Type::kNumber:
      writer->Double(value.number);
      break;
    case PropertyValue::Type::kString:
      writer->String(value.text);
      break;
    case PropertyValue::Type::kArray:
    case PropertyValue::Type::kObject:
      writer->Raw(value.text);
      break;
  }
}

void WriteTransition(const Transition& t, JsonWriter* writer) {
  JsonWriter& w = *writer;
  w.BeginObject();
  w.Key("seq").Uint(t.seq);
  w.Key("name").String(t.Name());
  w.Key("kind").String(ToString(t.kind));
  w.Key("bucketId").String(t.bucket_id);
  w.Key("bucketName").String(t.bucket_name);
  w.Key("userId").String(t.user_id);
  w.Key("email");
  if (t.email) {
    w.String(*t.email);
  } else {
    w.Null();
  }
  w.Key("entryCount").Uint(t.entry_count);
  w.Key("source").String(ToString(t.source));
  if (t.kind == TransitionKind::kLeft) {
    w.Key("reason").String(ToString(t.reason));
    if (t.entered_at) w.Key("enteredAt").Time(*t.entered_at);
  }
  if (t.kind == TransitionKind::kDwell) {
    w.Key("dwellLabel").String(t.dwell_label);
    w.Key("dwellCount").Uint(t.dwell_count);
  }
  w.Key("at").Time(t.at);
  w.Key("detectedAt").Time(t.detected_at);
  w.Key("idempotencyKey").String(t.IdempotencyKey());
  w.EndObject();
}

}  // namespace bucketd
