#pragma once
// Which partition a user belongs to in cluster mode (docs/cluster.md, "Partitioning"). Every
// rule of the fold is per user, so a user's inputs must all reach one partition's stream; any
// producer, in any language, must compute the same answer. Hence a function with no seed, no
// library and no platform dependence that fits in six lines anywhere:
//
//   h = FNV-1a 64 over the userId's UTF-8 bytes (offset basis 0xcbf29ce484222325,
//       prime 0x100000001b3, arithmetic mod 2^64, xor the byte in, then multiply)
//   partition = ((h >> 32) xor (h & 0xffffffff)) mod P
//
// The xor-fold matters: FNV-1a's low k bits depend only on the low k bits of each byte (ids
// differing in letter case collide mod 64), and its high bits barely see the last byte
// ("user-1" .. "user-9" crowd a few partitions). Folded, 100,000 ids of each kind tried
// (sequential, case variants, UUIDs, emails) spread within ±7% of even over 64 partitions.
// Changing this function re-partitions every user: it is fixed for a cluster's lifetime.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bucketd::cluster {

// A cluster's partition count is fixed at creation; this bounds the per-partition resources
// (subjects, leases, consumers) a node may be asked to hold.
inline constexpr uint32_t kPartitionsMax = 4096;

uint64_t Fnv1a64(std::string_view bytes);

// REQUIRES: 1 <= partitions <= kPartitionsMax.
uint32_t PartitionOf(std::string_view user_id, uint32_t partitions);

// Which live node should own `partition` (docs/cluster.md, "Ownership: leases"): rendezvous
// hashing, the node with the highest score, so a node's arrival or departure moves only the
// partitions it wins or held (about P/N). score = splitmix64's finalizer over FNV-1a 64 of
// "<partition>/<node id>" (the finalizer because FNV's high bits barely see the last bytes);
// a tie goes to the smaller id. "" when `live_nodes` is empty.
uint64_t RendezvousScore(uint32_t partition, std::string_view node_id);
std::string PreferredOwner(uint32_t partition, const std::vector<std::string>& live_nodes);

}  // namespace bucketd::cluster
