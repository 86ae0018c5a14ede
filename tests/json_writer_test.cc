#include "engine/base/json_writer.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace bucketd {
namespace {

std::string DoubleJson(double value) {
  JsonWriter writer;
  writer.Double(value);
  return writer.Take();
}

std::string StringJson(std::string_view value) {
  JsonWriter writer;
  writer.String(value);
  return writer.Take();
}

TEST_CASE("JsonWriter places commas between values, never after a key", "[json]") {
  JsonWriter writer;
  writer.BeginObject()
      .Key("a")
      .Int(1)
      .Key("b")
      .BeginArray()
      .Int(-2)
      .Uint(18446744073709551615ull)
      .Bool(true)
      .Bool(false)
      .Null()
      .BeginObject()
      .EndObject()
      .BeginArray()
      .EndArray()
      .EndArray()
      .Key("c")
      .BeginObject()
      .Key("d")
      .String("e")
      .EndObject()
      .Key("f")
      .Raw(R"({"x":[1,2]})")
      .Key("g")
      .Time(1795712400250)
      .EndObject();
  CHECK(writer.str() ==
        R"({"a":1,"b":[-2,18446744073709551615,true,false,null,{},[]],"c":{"d":"e"},)"
        R"("f":{"x":[1,2]},"g":"2026-11-26T17:00:00.250Z"})");
}

TEST_CASE("JsonWriter writes top-level sequences and empty containers", "[json]") {
  JsonWriter writer;
  writer.BeginArray().EndArray();
  CHECK(writer.str() == "[]");
  JsonWriter object;
  object.BeginObject().EndObject();
  CHECK(object.Take() == "{}");
  JsonWriter nested;
  nested.BeginArray().BeginArray().Int(1).EndArray().BeginArray().Int(2).EndArray().EndArray();
  CHECK(nested.str() == "[[1],[2]]");
}

TEST_CASE("JsonWriter escapes strings", "[json]") {
  CHECK(StringJson("plain") == R"("plain")");
  CHECK(StringJson("") == R"("")");
  CHECK(StringJson("a\"b\\c") == R"("a\"b\\c")");
  CHECK(StringJson("\b\f\n\r\t") == R"("\b\f\n\r\t")");
  CHECK(StringJson(std::string_view("\x00\x01\x1f", 3)) == R"("\u0000\u0001\u001f")");
  CHECK(StringJson("\x7f/") == "\"\x7f/\"");
  CHECK(StringJson("h\xc3\xa9llo \xe2\x82\xac") == "\"h\xc3\xa9llo \xe2\x82\xac\"");
  JsonWriter writer;
  writer.BeginObject().Key("k\"\n").Int(1).EndObject();
  CHECK(writer.str() == R"({"k\"\n":1})");
}

TEST_CASE("JsonWriter replaces bytes that are not UTF-8 with U+FFFD", "[json]") {
  // Well-formed sequences of every length pass through as they are.
  CHECK(
      StringJson("\xc2\x80 \xdf\xbf \xe0\xa0\x80 \xef\xbf\xbf \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf") ==
      "\"\xc2\x80 \xdf\xbf \xe0\xa0\x80 \xef\xbf\xbf \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf\"");
  // One U+FFFD per maximal ill-formed subpart (Unicode 15, section 3.9, U+FFFD substitution).
  CHECK(StringJson("\xff") == R"("\ufffd")");
  CHECK(StringJson("a\x80"
                   "b") == R"("a\ufffdb")");
  CHECK(StringJson("\xc3") == R"("\ufffd")");
  CHECK(StringJson("\xe2\x82") == R"("\ufffd")");
  CHECK(StringJson("\xe2\x82x\xf0\x9f\x98") == R"("\ufffdx\ufffd")");
  CHECK(StringJson("\xc0\xaf") == R"("\ufffd\ufffd")");                      // overlong '/'
  CHECK(StringJson("\xe0\x80\xaf") == R"("\ufffd\ufffd\ufffd")");            // overlong '/'
  CHECK(StringJson("\xed\xa0\x80") == R"("\ufffd\ufffd\ufffd")");            // a surrogate
  CHECK(StringJson("\xf4\x90\x80\x80") == R"("\ufffd\ufffd\ufffd\ufffd")");  // > U+10FFFF
  CHECK(StringJson("\xf8\x88\x80\x80\x80") == R"("\ufffd\ufffd\ufffd\ufffd\ufffd")");
  JsonWriter writer;
  writer.BeginObject().Key("k\xfe").String("\"\xc3\"").EndObject();
  CHECK(writer.str() == R"({"k\ufffd":"\"\ufffd\""})");
}

TEST_CASE("JsonWriter writes integral doubles as integers", "[json]") {
  CHECK(DoubleJson(10) == "10");
  CHECK(DoubleJson(0) == "0");
  CHECK(DoubleJson(-0.0) == "0");
  CHECK(DoubleJson(-3) == "-3");
  CHECK(DoubleJson(9007199254740992.0) == "9007199254740992");
}

TEST_CASE("JsonWriter writes other doubles in shortest round-trip form", "[json]") {
  CHECK(DoubleJson(1.5) == "1.5");
  CHECK(DoubleJson(0.1) == "0.1");
  CHECK(DoubleJson(-2.25) == "-2.25");
  CHECK(DoubleJson(1e300) == "1e+300");
  CHECK(DoubleJson(1e-7) == "1e-07");
  for (const double value : {0.1 + 0.2, 1.0 / 3.0, 123456.789, 5e-324, 1.7976931348623157e308}) {
    CHECK(std::strtod(DoubleJson(value).c_str(), nullptr) == value);
  }
}

TEST_CASE("JsonWriter writes NaN and infinities as null", "[json]") {
  CHECK(DoubleJson(std::nan("")) == "null");
  CHECK(DoubleJson(std::numeric_limits<double>::infinity()) == "null");
  CHECK(DoubleJson(-std::numeric_limits<double>::infinity()) == "null");
  JsonWriter writer;
  writer.BeginArray().Double(std::nan("")).Double(1).EndArray();
  CHECK(writer.str() == "[null,1]");
}

TEST_CASE("JsonWriter writes int64 extremes", "[json]") {
  JsonWriter writer;
  writer.BeginArray()
      .Int(std::numeric_limits<int64_t>::min())
      .Int(std::numeric_limits<int64_t>::max())
      .EndArray();
  CHECK(writer.str() == "[-9223372036854775808,9223372036854775807]");
}

}  // namespace
}  // namespace bucketd
