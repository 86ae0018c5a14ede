#pragma once
// Every limit of the engine, in one place (TigerBeetle's "put a limit on everything").
#include <cstddef>

namespace bucketd {

inline constexpr size_t kUserIdBytesMax = 256;
inline constexpr size_t kBucketIdCharsMax = 128;
inline constexpr size_t kEventNameBytesMax = 200;
inline constexpr size_t kCriteriaDepthMax = 16;
inline constexpr size_t kCriteriaLeavesMax = 64;
inline constexpr size_t kMembersPageMax = 1000;
inline constexpr size_t kTransitionsPageMax = 10000;
inline constexpr size_t kBatchItemsMax = 100000;

}  // namespace bucketd
