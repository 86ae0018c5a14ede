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

uint64_t RendezvousScore(uint32_t partition, std::string_view node_id) {
  uint64_t h = Fnv1a64(std::to_string(partition) + "/" + std::string(node_id));
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

std::string PreferredOwner(uint32_t partition, const std::vector<std::string>& live_nodes) {
  const std::string* best = nullptr;
  uint64_t best_score = 0;
  for (const std::string& node : live_nodes) {
    const uint64_t score = RendezvousScore(partition, node);
    if (best == nullptr || score > best_score || (score == best_score && node < *best)) {
      best = &node;
      best_score = score;
    }
  }
  return best != nullptr ? *best : std::string();
}

}  // namespace bucketd::cluster
