#pragma once
// Server-side counters and the Prometheus text exposition of GET /metrics.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bucketd/engine.h"

namespace bucketd::server {

// What /metrics reads from the engine, collected on the owner thread in one call.
struct EngineReport {
  EngineStats stats;
  StateInfo state;
  std::vector<BucketInfo> buckets;
};

class ServerMetrics {
 public:
  // Upper bounds (µs) of the sweep latency histogram; +Inf is implied.
  static constexpr std::array<int64_t, 10> kSweepBucketsMicros = {
      10, 50, 100, 500, 1'000, 5'000, 10'000, 50'000, 100'000, 1'000'000};

  // Thread-safe.
  void RecordRequest(std::string_view route, int http_status);
  void RecordSweep(int64_t micros);

  // The exposition text; `now_ms` dates the snapshot age.
  std::string Render(const EngineReport& report, TimeMs now_ms) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  std::array<uint64_t, kSweepBucketsMicros.size() + 1> sweep_counts_{};
  int64_t sweep_micros_sum_ = 0;
  uint64_t sweep_count_ = 0;
};

}  // namespace bucketd::server
