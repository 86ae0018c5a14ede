#pragma once
// Server-side counters and the Prometheus text exposition of GET /metrics. Names follow the
// Prometheus conventions: base units in the name (`_seconds`, `_bytes`), `_total` on counters,
// histograms with cumulative `le` buckets in base units.
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
// What /metrics reports of the engine. No StateInfo: its digest hashes the whole state, which
// at millions of users would hold the engine thread for a second at every scrape.
struct EngineReport {
  EngineStats stats;
  std::vector<BucketInfo> buckets;
};

// The text exposition format's media type (version 0.0.4, UTF-8).
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

class ServerMetrics {
 public:
  // Upper bounds (s) of the sweep latency histogram; +Inf is implied. A sweep of an idle
  // engine takes microseconds, one that moves a large bucket's members up to a second.
  static constexpr std::array<double, 10> kSweepBucketsSeconds = {
      0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1};
  // Upper bounds (s) of the HTTP request latency histogram; +Inf is implied. Reads answer
  // in well under a millisecond, a write waits for its group's fsync (milliseconds), and a
  // long-poll holds its request up to 30 s (kLongPollMsMax).
  static constexpr std::array<double, 15> kRequestBucketsSeconds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

  // A reply written to its client (or whose write failed): counted and timed, from the
  // request parsed to the reply written, by route and status. Thread-safe.
  void RecordRequest(std::string_view route, int http_status, double seconds);
  // Thread-safe.
  void RecordSweep(int64_t micros);

  // The whole exposition of a single engine: the engine's state and counters, then
  // RenderServer(). `now_ms` (the engine's clock) dates the snapshot age.
  std::string Render(const EngineReport& report, TimeMs now_ms) const;
  // What every server exposes, an engine's or a cluster node's: build info, the HTTP
  // requests, the process_* metrics.
  std::string RenderServer() const;

 private:
  struct RequestHistogram {
    // Per bucket, not cumulative; the last one is +Inf.
    std::array<uint64_t, kRequestBucketsSeconds.size() + 1> counts{};
    double seconds_sum = 0;
    uint64_t count = 0;
  };

  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, RequestHistogram> requests_;  // (route, status)
  std::array<uint64_t, kSweepBucketsSeconds.size() + 1> sweep_counts_{};
  int64_t sweep_micros_sum_ = 0;  // integral: the sum of many tiny sweeps loses nothing
  uint64_t sweep_count_ = 0;
};

}  // namespace bucketd::server
