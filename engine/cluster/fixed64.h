#pragma once
// Little-endian 64-bit integers in the cluster's binary snapshot extras (PartitionFold's
// anchor, RecentIds): the same bytes whatever machine wrote them.
#include <cstdint>
#include <string>
#include <string_view>

namespace bucketd::cluster {

inline void PutFixed64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// REQUIRES: bytes.size() >= 8.
inline uint64_t GetFixed64(std::string_view bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}

}  // namespace bucketd::cluster
