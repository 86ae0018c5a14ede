#include "bucketd/time_format.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace bucketd {

namespace {

constexpr int64_t kMsPerSecond = 1000;
constexpr int64_t kMsPerMinute = 60 * kMsPerSecond;
constexpr int64_t kMsPerHour = 60 * kMsPerMinute;
constexpr int64_t kMsPerDay = 24 * kMsPerHour;
constexpr int64_t kMsPerWeek = 7 * kMsPerDay;
// RFC 3339 allows any number of fraction digits; nanoseconds is the most anyone sends, and
// a bound keeps the scan obviously finite.
constexpr size_t kFractionDigitsMax = 9;

// Howard Hinnant's days_from_civil: proleptic Gregorian, exact for negative years, and
// independent of the process's locale and time zone (timegm is neither portable nor pure).
int64_t DaysFromCivil(int64_t year, int64_t month, int64_t day) {
  year -= month <= 2 ? 1 : 0;
  const int64_t era = (year >= 0 ? year : year - 399) / 400;
  const int64_t year_of_era = year - era * 400;
  const int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

void CivilFromDays(int64_t days, int64_t* year, int64_t* month, int64_t* day) {
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const int64_t day_of_era = days - era * 146097;
  const int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const int64_t month_index = (5 * day_of_year + 2) / 153;
  *day = day_of_year - (153 * month_index + 2) / 5 + 1;
  *month = month_index < 10 ? month_index + 3 : month_index - 9;
  *year = year_of_era + era * 400 + (*month <= 2 ? 1 : 0);
}

bool IsLeapYear(int64_t year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int64_t DaysInMonth(int64_t year, int64_t month) {
  static constexpr int64_t kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && IsLeapYear(year) ? 29 : kDays[month - 1];
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly `count` digits at `*pos`.
bool ReadFixedDigits(std::string_view text, size_t* pos, size_t count, int64_t* out) {
  if (text.size() - *pos < count) return false;
  int64_t value = 0;
  for (size_t i = 0; i < count; ++i) {
    const char c = text[*pos + i];
    if (!IsDigit(c)) return false;
    value = value * 10 + (c - '0');
  }
  *pos += count;
  *out = value;
  return true;
}

bool Expect(std::string_view text, size_t* pos, char c) {
  if (*pos >= text.size() || text[*pos] != c) return false;
  ++*pos;
  return true;
}

// "not <what> (<why>): "<text>"; expected <example>".
Status ParseError(std::string_view what, std::string_view text, std::string_view why,
                  std::string_view expected) {
  std::string message = "not ";
  message += what;
  message += " (";
  message += why;
  message += "): \"";
  // Echo a bounded prefix: the input may be an arbitrarily large string.
  message += text.substr(0, 64);
  message += text.size() > 64 ? "...\"" : "\"";
  message += "; expected ";
  message += expected;
  return Status::InvalidArgument("", std::move(message));
}

Status BadTime(std::string_view text, std::string_view why) {
  return ParseError("an RFC 3339 time", text, why, "e.g. 2026-11-26T17:00:00.000Z");
}

}  // namespace

Status ParseRfc3339(std::string_view text, TimeMs* out) {
  size_t pos = 0;
  int64_t year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ReadFixedDigits(text, &pos, 4, &year) || !Expect(text, &pos, '-') ||
      !ReadFixedDigits(text, &pos, 2, &month) || !Expect(text, &pos, '-') ||
      !ReadFixedDigits(text, &pos, 2, &day)) {
    return BadTime(text, "bad date");
  }
  if (pos >= text.size() || (text[pos] != 'T' && text[pos] != 't')) {
    return BadTime(text, "missing 'T' between date and time");
  }
  ++pos;
  if (!ReadFixedDigits(text, &pos, 2, &hour) || !Expect(text, &pos, ':') ||
      !ReadFixedDigits(text, &pos, 2, &minute) || !Expect(text, &pos, ':') ||
      !ReadFixedDigits(text, &pos, 2, &second)) {
    return BadTime(text, "bad time of day");
  }
  if (month < 1 || month > 12) return BadTime(text, "month out of range");
  if (day < 1 || day > DaysInMonth(year, month)) return BadTime(text, "day out of range");
  if (hour > 23) return BadTime(text, "hour out of range");
  if (minute > 59) return BadTime(text, "minute out of range");
  // Leap seconds (":60") are refused: the engine's time is POSIX time, which has none.
  if (second > 59) return BadTime(text, "second out of range");

  int64_t fraction_ms = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    size_t digits = 0;
    while (pos < text.size() && IsDigit(text[pos])) {
      if (digits == kFractionDigitsMax) return BadTime(text, "more than 9 fraction digits");
      // Digits past the third are below a millisecond: truncated, like every clock does.
      if (digits < 3) fraction_ms = fraction_ms * 10 + (text[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return BadTime(text, "empty fraction");
    for (size_t i = digits; i < 3; ++i) fraction_ms *= 10;
  }

  int64_t offset_minutes = 0;
  if (pos >= text.size()) return BadTime(text, "missing time zone ('Z' or +hh:mm)");
  if (text[pos] == 'Z' || text[pos] == 'z') {
    ++pos;
  } else if (text[pos] == '+' || text[pos] == '-') {
    const bool negative = text[pos] == '-';
    ++pos;
    int64_t offset_hour, offset_minute;
    if (!ReadFixedDigits(text, &pos, 2, &offset_hour) || !Expect(text, &pos, ':') ||
        !ReadFixedDigits(text, &pos, 2, &offset_minute)) {
      return BadTime(text, "bad time zone offset");
    }
    if (offset_hour > 23 || offset_minute > 59) return BadTime(text, "offset out of range");
    offset_minutes = (offset_hour * 60 + offset_minute) * (negative ? -1 : 1);
  } else {
    return BadTime(text, "bad time zone ('Z' or +hh:mm)");
  }
  if (pos != text.size()) return BadTime(text, "trailing characters");

  // Years 0000-9999 keep every intermediate far inside int64.
  const int64_t local_ms = DaysFromCivil(year, month, day) * kMsPerDay + hour * kMsPerHour +
                           minute * kMsPerMinute + second * kMsPerSecond + fraction_ms;
  *out = local_ms - offset_minutes * kMsPerMinute;
  return Status::Ok();
}

std::string FormatRfc3339(TimeMs time_ms) {
  // Floor division, written so that no step can overflow even for INT64_MIN.
  int64_t days = time_ms / kMsPerDay;
  int64_t ms_of_day = time_ms % kMsPerDay;
  if (ms_of_day < 0) {
    ms_of_day += kMsPerDay;
    --days;
  }
  int64_t year, month, day;
  CivilFromDays(days, &year, &month, &day);
  const int64_t hour = ms_of_day / kMsPerHour;
  const int64_t minute = ms_of_day % kMsPerHour / kMsPerMinute;
  const int64_t second = ms_of_day % kMsPerMinute / kMsPerSecond;
  const int64_t millis = ms_of_day % kMsPerSecond;
  // Years outside 0000-9999 cannot be RFC 3339; they get a sign or a fifth digit rather
  // than being silently wrapped.
  char buffer[64];
  const int length =
      std::snprintf(buffer, sizeof(buffer), "%s%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03lldZ",
                    year < 0 ? "-" : "", static_cast<long long>(year < 0 ? -year : year),
                    static_cast<long long>(month), static_cast<long long>(day),
                    static_cast<long long>(hour), static_cast<long long>(minute),
                    static_cast<long long>(second), static_cast<long long>(millis));
  return std::string(buffer, static_cast<size_t>(length));
}

Status ParseDurationString(std::string_view text, TimeMs* out_ms) {
  // Whole numbers only: "1.5h" would invite rounding questions; "90m" says it exactly.
  auto bad = [&](std::string_view why) {
    return ParseError("a duration", text, why,
                      "one or more <integer><unit> parts, units ms s m h d w, e.g. \"1d12h\"");
  };
  if (text.empty()) return bad("empty");
  int64_t total_ms = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!IsDigit(text[pos])) return bad("expected a number");
    int64_t number = 0;
    while (pos < text.size() && IsDigit(text[pos])) {
      if (__builtin_mul_overflow(number, 10, &number) ||
          __builtin_add_overflow(number, text[pos] - '0', &number)) {
        return bad("too large");
      }
      ++pos;
    }
    if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
      return bad("fractional numbers are not accepted; use a smaller unit");
    }
    int64_t unit_ms = 0;
    if (text.substr(pos, 2) == "ms") {
      unit_ms = 1;
      pos += 2;
    } else if (pos < text.size()) {
      switch (text[pos]) {
        case 's':
          unit_ms = kMsPerSecond;
          break;
        case 'm':
          unit_ms = kMsPerMinute;
          break;
        case 'h':
          unit_ms = kMsPerHour;
          break;
        case 'd':
          unit_ms = kMsPerDay;
          break;
        case 'w':
          unit_ms = kMsPerWeek;
          break;
        default:
          return bad("unknown unit");
      }
      ++pos;
    } else {
      return bad("missing unit");
    }
    int64_t part_ms = 0;
    if (__builtin_mul_overflow(number, unit_ms, &part_ms) ||
        __builtin_add_overflow(total_ms, part_ms, &total_ms)) {
      return bad("too large");
    }
  }
  if (total_ms <= 0) return bad("must be > 0");
  *out_ms = total_ms;
  return Status::Ok();
}

}  // namespace bucketd
