#include "bucketd/time_format.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>

namespace bucketd {
namespace {

TimeMs ParseOk(std::string_view text) {
  TimeMs out = -12345;
  const Status status = ParseRfc3339(text, &out);
  INFO(text << " -> " << status.ToString());
  REQUIRE(status.ok());
  return out;
}

void ExpectTimeRefused(std::string_view text) {
  TimeMs out = -12345;
  const Status status = ParseRfc3339(text, &out);
  INFO(text);
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK_FALSE(status.message().empty());
  CHECK(out == -12345);
}

TimeMs DurationOk(std::string_view text) {
  TimeMs out = -1;
  const Status status = ParseDurationString(text, &out);
  INFO(text << " -> " << status.ToString());
  REQUIRE(status.ok());
  return out;
}

void ExpectDurationRefused(std::string_view text) {
  TimeMs out = -1;
  const Status status = ParseDurationString(text, &out);
  INFO(text);
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK(status.field().empty());
  CHECK(out == -1);
}

TEST_CASE("ParseRfc3339 accepts UTC times", "[time]") {
  CHECK(ParseOk("1970-01-01T00:00:00Z") == 0);
  CHECK(ParseOk("2026-11-26T17:00:00Z") == 1795712400000);
  CHECK(ParseOk("2026-11-26T17:00:00.000Z") == 1795712400000);
  CHECK(ParseOk("2024-02-29T12:30:15Z") == 1709209815000);
  CHECK(ParseOk("9999-12-31T23:59:59.999Z") == 253402300799999);
}

TEST_CASE("ParseRfc3339 accepts lower-case t and z", "[time]") {
  CHECK(ParseOk("2026-11-26t17:00:00z") == 1795712400000);
}

TEST_CASE("ParseRfc3339 applies offsets", "[time]") {
  CHECK(ParseOk("2026-11-26T18:00:00.250+01:00") == 1795712400250);
  CHECK(ParseOk("2026-11-26T12:30:00-04:30") == 1795712400000);
  CHECK(ParseOk("2026-11-26T17:00:00+00:00") == 1795712400000);
  CHECK(ParseOk("2026-11-26T17:00:00-00:00") == 1795712400000);
  // The offset can move the instant across a day and a year boundary.
  CHECK(ParseOk("2027-01-01T01:00:00+02:00") == ParseOk("2026-12-31T23:00:00Z"));
  CHECK(ParseOk("1970-01-01T00:00:00+23:59") == -(23 * 60 + 59) * 60000LL);
}

TEST_CASE("ParseRfc3339 reads fractions, truncating below a millisecond", "[time]") {
  CHECK(ParseOk("1970-01-01T00:00:00.5Z") == 500);
  CHECK(ParseOk("1970-01-01T00:00:00.25Z") == 250);
  CHECK(ParseOk("1970-01-01T00:00:00.123Z") == 123);
  CHECK(ParseOk("1970-01-01T00:00:00.1239Z") == 123);
  CHECK(ParseOk("1970-01-01T00:00:00.123456789Z") == 123);
  CHECK(ParseOk("1970-01-01T00:00:00.999999999Z") == 999);
  ExpectTimeRefused("1970-01-01T00:00:00.1234567890Z");
  ExpectTimeRefused("1970-01-01T00:00:00.Z");
}

TEST_CASE("ParseRfc3339 handles leap years", "[time]") {
  CHECK(ParseOk("2024-02-29T00:00:00Z") + 86400000 == ParseOk("2024-03-01T00:00:00Z"));
  CHECK(ParseOk("2000-02-29T00:00:00Z") + 86400000 == ParseOk("2000-03-01T00:00:00Z"));
  ExpectTimeRefused("2023-02-29T00:00:00Z");
  ExpectTimeRefused("1900-02-29T00:00:00Z");
  ExpectTimeRefused("2100-02-29T00:00:00Z");
  CHECK(ParseOk("2023-03-01T00:00:00Z") - ParseOk("2023-02-28T00:00:00Z") == 86400000);
}

TEST_CASE("ParseRfc3339 handles times before 1970", "[time]") {
  CHECK(ParseOk("1969-12-31T23:59:59.999Z") == -1);
  CHECK(ParseOk("1900-03-01T00:00:00Z") == -2203891200000);
  CHECK(ParseOk("0001-01-01T00:00:00Z") == -62135596800000);
  CHECK(ParseOk("0000-01-01T00:00:00Z") == -62135596800000 - 366LL * 86400000);
}

TEST_CASE("ParseRfc3339 refuses garbage and out-of-range fields", "[time]") {
  for (const char* text : {
           "",
           "now",
           "2026-11-26",
           "2026-11-26T17:00:00",
           "2026-11-26T17:00Z",
           "2026-11-26 17:00:00Z",
           "2026-11-26T17:00:00Z ",
           " 2026-11-26T17:00:00Z",
           "2026-11-26T17:00:00ZZ",
           "26-11-26T17:00:00Z",
           "2026-1-26T17:00:00Z",
           "2026/11/26T17:00:00Z",
           "2026-00-26T17:00:00Z",
           "2026-13-26T17:00:00Z",
           "2026-11-00T17:00:00Z",
           "2026-11-31T17:00:00Z",
           "2026-04-31T17:00:00Z",
           "2026-11-26T24:00:00Z",
           "2026-11-26T17:60:00Z",
           "2026-11-26T17:00:60Z",
           "2026-11-26T17:00:00+24:00",
           "2026-11-26T17:00:00+01:60",
           "2026-11-26T17:00:00+0100",
           "2026-11-26T17:00:00+01",
           "2026-11-26T17:00:00UTC",
           "+2026-11-26T17:00:00Z",
           "2026-11-26T17:00:00.12aZ",
       }) {
    ExpectTimeRefused(text);
  }
}

TEST_CASE("ParseRfc3339 names the problem in its message", "[time]") {
  TimeMs out = 0;
  const Status status = ParseRfc3339("2026-13-01T00:00:00Z", &out);
  CHECK(status.message().find("month") != std::string::npos);
  CHECK(status.message().find("2026-13-01T00:00:00Z") != std::string::npos);
  CHECK(status.WithFieldPrefix("occurredAt").field() == "occurredAt");
}

TEST_CASE("FormatRfc3339 writes UTC with milliseconds", "[time]") {
  CHECK(FormatRfc3339(0) == "1970-01-01T00:00:00.000Z");
  CHECK(FormatRfc3339(1795712400000) == "2026-11-26T17:00:00.000Z");
  CHECK(FormatRfc3339(1795712400250) == "2026-11-26T17:00:00.250Z");
  CHECK(FormatRfc3339(1709209815007) == "2024-02-29T12:30:15.007Z");
  CHECK(FormatRfc3339(253402300799999) == "9999-12-31T23:59:59.999Z");
}

TEST_CASE("FormatRfc3339 floors negative times", "[time]") {
  CHECK(FormatRfc3339(-1) == "1969-12-31T23:59:59.999Z");
  CHECK(FormatRfc3339(-1000) == "1969-12-31T23:59:59.000Z");
  CHECK(FormatRfc3339(-86400000) == "1969-12-31T00:00:00.000Z");
  CHECK(FormatRfc3339(-86400001) == "1969-12-30T23:59:59.999Z");
  CHECK(FormatRfc3339(-2203891200000) == "1900-03-01T00:00:00.000Z");
  CHECK(FormatRfc3339(-62135596800000) == "0001-01-01T00:00:00.000Z");
}

TEST_CASE("FormatRfc3339 survives the int64 extremes", "[time]") {
  // Not representable in RFC 3339, but must neither crash nor overflow.
  CHECK_FALSE(FormatRfc3339(std::numeric_limits<int64_t>::min()).empty());
  CHECK_FALSE(FormatRfc3339(std::numeric_limits<int64_t>::max()).empty());
  CHECK(FormatRfc3339(-62135596800000 - 366LL * 86400000 - 1).starts_with("-0001-12-31T"));
}

TEST_CASE("FormatRfc3339 and ParseRfc3339 round-trip", "[time]") {
  const TimeMs lowest = ParseOk("0000-01-01T00:00:00Z");
  const TimeMs highest = ParseOk("9999-12-31T23:59:59.999Z");
  // A stride that is prime in ms visits every field value over the range.
  for (TimeMs t = lowest; t <= highest; t += 7919LL * 3600 * 1000 + 123457) {
    const std::string text = FormatRfc3339(t);
    INFO(t << " " << text);
    REQUIRE(ParseOk(text) == t);
  }
  for (const TimeMs t : {lowest, highest, TimeMs{-1}, TimeMs{0}, TimeMs{1}}) {
    CHECK(ParseOk(FormatRfc3339(t)) == t);
  }
}

TEST_CASE("ParseDurationString accepts every unit and combinations", "[duration]") {
  CHECK(DurationOk("500ms") == 500);
  CHECK(DurationOk("1s") == 1000);
  CHECK(DurationOk("90s") == 90000);
  CHECK(DurationOk("5m") == 300000);
  CHECK(DurationOk("1h") == 3600000);
  CHECK(DurationOk("30d") == 30LL * 86400000);
  CHECK(DurationOk("2w") == 14LL * 86400000);
  CHECK(DurationOk("1d12h") == 36LL * 3600000);
  CHECK(DurationOk("1h30m15s250ms") == 3600000 + 30 * 60000 + 15000 + 250);
  CHECK(DurationOk("1m1ms") == 60001);
  CHECK(DurationOk("0h5m") == 300000);
  CHECK(DurationOk("007s") == 7000);
}

TEST_CASE("ParseDurationString refuses bad strings", "[duration]") {
  for (const char* text : {"",
                           "0s",
                           "0ms",
                           "0d0h",
                           "30",
                           "d",
                           "ms",
                           "1.5h",
                           "1,5h",
                           "-1h",
                           "+1h",
                           "1x",
                           "1H",
                           "1 h",
                           "1h ",
                           " 1h",
                           "1hh",
                           "1mss",
                           "1y",
                           "99999999999999999999ms",
                           "9223372036854775807s",
                           "9223372036854775807ms1ms"}) {
    ExpectDurationRefused(text);
  }
}

TEST_CASE("ParseDurationString accepts the largest total that fits", "[duration]") {
  CHECK(DurationOk("9223372036854775807ms") == std::numeric_limits<int64_t>::max());
}

}  // namespace
}  // namespace bucketd
