// The partition function (engine/cluster/partition.h): the vectors docs/cluster.md publishes
// for producers in other languages, computed by an independent implementation (Python), and
// an even spread over partitions for the id shapes producers use.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/cluster/partition.h"

namespace bucketd::cluster {
namespace {

struct Vector {
  std::string user_id;
  uint64_t fnv1a64;
  uint32_t p4, p16, p64;
};

// Keep in step with the table in docs/cluster.md.
const std::vector<Vector> kVectors = {
    {"a", 0xaf63dc4c8601ec8cull, 0, 0, 0},
    {"ada", 0xe70bc0190530e13bull, 2, 2, 34},
    {"user-1", 0xf84ba2aa754a4bd4ull, 2, 14, 62},
    {"user-42", 0x32c6d7a54d35dacbull, 2, 14, 46},
    {"zo\xc3\xab@example.com", 0x8d1bd214e2b27501ull, 1, 5, 21},
    {"\xe7\x94\xa8\xe6\x88\xb7-7", 0xc78f50a51fe1fdf1ull, 0, 4, 20},
    {"erased-0123456789abcdef0123456789abcdef", 0x8552294fc0cddceaull, 1, 5, 37},
};

TEST_CASE("the partition of a userId matches the published vectors") {
  for (const Vector& v : kVectors) {
    INFO(v.user_id);
    CHECK(Fnv1a64(v.user_id) == v.fnv1a64);
    CHECK(PartitionOf(v.user_id, 4) == v.p4);
    CHECK(PartitionOf(v.user_id, 16) == v.p16);
    CHECK(PartitionOf(v.user_id, 64) == v.p64);
    CHECK(PartitionOf(v.user_id, 1) == 0);
  }
}

TEST_CASE("sequential ids and ids differing only in letter case spread evenly over 64 partitions") {
  auto spread = [](const std::vector<std::string>& ids) {
    std::vector<uint32_t> counts(64);
    for (const std::string& id : ids) ++counts[PartitionOf(id, 64)];
    const double even = static_cast<double>(ids.size()) / 64;
    const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
    CHECK(*lo > 0.9 * even);
    CHECK(*hi < 1.1 * even);
  };
  std::vector<std::string> sequential, cased;
  for (int i = 0; i < 100'000; ++i) sequential.push_back("user-" + std::to_string(i));
  for (int i = 0; i < 65'536; ++i) {
    std::string id;
    for (int bit = 0; bit < 16; ++bit) id += (i >> bit) & 1 ? 'A' : 'a';
    cased.push_back(id);
  }
  spread(sequential);
  spread(cased);
}

}  // namespace
}  // namespace bucketd::cluster
