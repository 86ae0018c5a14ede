#include "engine/cluster/partition.h"

#include "engine/base/check.h"

namespace bucketd::cluster {

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

uint32_t PartitionOf(std::string_view user_id, uint32_t partitions) {
  BUCKETD_CHECK(partitions >= 1 && partitions <= kPartitionsMax);
  const uint64_t h = Fnv1a64(user_id);
  const uint32_t folded = static_cast<uint32_t>(h >> 32) ^ static_cast<uint32_t>(h);
  return folded % partitions;
}

}  // namespace bucketd::cluster
