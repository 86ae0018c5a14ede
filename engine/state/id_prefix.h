#pragma once
// Sorting many users or slots by user id: a sort of a million pointers by `user->id` costs
// a cache miss or two per comparison (seconds). Each item carries the first 16 bytes of
// its id as two big-endian integers instead, which decide almost every comparison in
// cache; only ids sharing their first 16 bytes fall back to comparing the strings.
#include <algorithm>
#include <compare>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace bucketd {

struct IdPrefix {
  uint64_t high = 0;
  uint64_t low = 0;
  friend auto operator<=>(const IdPrefix&, const IdPrefix&) = default;
};

// Ordered as the ids are (std::string compares bytes as unsigned char), except that ids
// equal in their first 16 bytes (or one a prefix of the other within them) tie.
inline IdPrefix IdPrefixOf(std::string_view id) {
  uint8_t bytes[16] = {};
  std::memcpy(bytes, id.data(), std::min(id.size(), sizeof bytes));
  IdPrefix p;
  for (int i = 0; i < 8; ++i) p.high = (p.high << 8) | bytes[i];
  for (int i = 8; i < 16; ++i) p.low = (p.low << 8) | bytes[i];
  return p;
}

}  // namespace bucketd
