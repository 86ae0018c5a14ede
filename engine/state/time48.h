#pragma once
// Instants in 6 bytes where a TimeMs takes 8, for the fields paid per membership and per
// (user, event name): a slot's entered_at, dwell anchor and last leave, a history's first
// and last instant (issue 20).
//
// Why 48 bits are enough: every instant these fields hold is one the engine's clock stood
// at or an event's occurredAt, which is at most that clock: from 1970 (ValidateOccurredAt,
// and the fold refuses a record stamped before it) to the end of year 9999
// (kInstantMsMax: ValidateClockInstant, Engine::Open's start time, and the fold refuses a
// record stamped after it), within [0, 2^48 - 2]. A due instant is not one of them: it
// can lie anywhere past the clock (a time property's date, say), so Slot::due_at stays a
// TimeMs. Storing an instant outside the range fails a check (every build) instead of
// keeping a wrong one; the snapshot decoder refuses such values before they get here.
//
// Alignment 2, so that they pack beside each other and beside 32-bit fields.
#include <cstdint>
#include <cstring>
#include <optional>

#include "bucketd/limits.h"
#include "bucketd/types.h"
#include "engine/base/check.h"

namespace bucketd {

namespace time48 {

// The all-ones pattern is OptionalTime48's "none"; every other value is an instant.
inline constexpr uint64_t kNoneBits = (uint64_t{1} << 48) - 1;
inline constexpr TimeMs kMax = static_cast<TimeMs>(kNoneBits) - 1;
static_assert(kInstantMsMax <= kMax, "every instant the engine accepts fits");

inline constexpr bool Fits(TimeMs t) { return t >= 0 && t <= kMax; }

// Six bytes as three 16-bit words: the low 32 bits then the high 16, read and written with
// memcpy (one 32-bit and one 16-bit move).
inline uint64_t Load(const uint16_t (&w)[3]) {
  uint32_t low;
  uint16_t high;
  std::memcpy(&low, &w[0], sizeof low);
  std::memcpy(&high, &w[2], sizeof high);
  return uint64_t{high} << 32 | low;
}
inline void Store(uint16_t (&w)[3], uint64_t bits) {
  const auto low = static_cast<uint32_t>(bits);
  const auto high = static_cast<uint16_t>(bits >> 32);
  std::memcpy(&w[0], &low, sizeof low);
  std::memcpy(&w[2], &high, sizeof high);
}

}  // namespace time48

// An instant in [0, time48::kMax], converting to and from TimeMs.
class Time48 {
 public:
  Time48() = default;  // 0 (the epoch), as the TimeMs it replaces
  Time48(TimeMs t) { *this = t; }
  Time48& operator=(TimeMs t) {
    BUCKETD_CHECK(time48::Fits(t));
    time48::Store(words_, static_cast<uint64_t>(t));
    return *this;
  }
  operator TimeMs() const { return static_cast<TimeMs>(time48::Load(words_)); }
  friend bool operator==(const Time48& a, const Time48& b) { return TimeMs{a} == TimeMs{b}; }

 private:
  uint16_t words_[3] = {0, 0, 0};
};
static_assert(sizeof(Time48) == 6 && alignof(Time48) == 2);

// An optional instant in 6 bytes, with the surface of OptionalTime (user.h).
class OptionalTime48 {
 public:
  OptionalTime48() = default;
  OptionalTime48(std::nullopt_t) {}
  OptionalTime48(TimeMs t) { Set(t); }
  OptionalTime48(const std::optional<TimeMs>& t) {
    if (t) Set(*t);
  }
  explicit operator bool() const { return has_value(); }
  bool has_value() const { return time48::Load(words_) != time48::kNoneBits; }
  // REQUIRES: has_value().
  TimeMs operator*() const { return static_cast<TimeMs>(time48::Load(words_)); }
  TimeMs value_or(TimeMs fallback) const {
    const uint64_t bits = time48::Load(words_);
    return bits != time48::kNoneBits ? static_cast<TimeMs>(bits) : fallback;
  }
  void reset() { time48::Store(words_, time48::kNoneBits); }
  operator std::optional<TimeMs>() const {
    return has_value() ? std::optional<TimeMs>(**this) : std::nullopt;
  }
  friend bool operator==(const OptionalTime48& a, const OptionalTime48& b) {
    return time48::Load(a.words_) == time48::Load(b.words_);
  }

 private:
  void Set(TimeMs t) {
    BUCKETD_CHECK(time48::Fits(t));
    time48::Store(words_, static_cast<uint64_t>(t));
  }
  uint16_t words_[3] = {0xFFFF, 0xFFFF, 0xFFFF};  // none
};
static_assert(sizeof(OptionalTime48) == 6 && alignof(OptionalTime48) == 2);

}  // namespace bucketd
