#pragma once
// The webhook delivery worker (SPEC §10): one thread that pushes each subscription's part of
// the transition stream to its URL, in seq order, in batches, signed, retried with backoff.
//
// It never blocks ingest: it reads the stream with the engine's thread-safe reader (pages of
// at most --webhook-batch-max transitions, read when needed: a dead receiver costs a few
// counters, never a queue), and talks to the owner thread only to learn the subscriptions
// and the engine's clock (one short call per round) and to log cursor advances.
//
// Timing is the engine's clock: a failed delivery is retried at engine time now + backoff,
// so under --clock manual retries happen when POST /v1/clock moves time (Kick()).
//
// Durability: a delivered batch moves the cursor in memory at once; the "delivered through
// seq N" record is logged at most once per --webhook-log-every per subscription while it is
// behind, and at once when it catches up (and at shutdown). After a crash, what was delivered
// since the last logged advance is delivered again (at least once).
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bucketd/engine.h"
#include "engine_thread.h"
#include "webhook_policy.h"
#include "webhook_status.h"

namespace bucketd::server {

struct WebhookConfig {
  WebhookPolicy policy;
  size_t batch_max = kWebhookBatchDefault;
  std::chrono::milliseconds timeout{10'000};
  // Exponential backoff after the n-th failure in a row: base * 2^(n-1), at most max, then
  // "equal jitter" (a uniform draw in [d/2, d]) so receivers that fail together do not get
  // retried together.
  TimeMs backoff_base_ms = 1'000;
  TimeMs backoff_max_ms = 10 * 60 * 1'000;
  // Coalescing of cursor advances in the log (wall time: it bounds log writes, not delivery).
  std::chrono::milliseconds log_every{1'000};
};

class WebhookDeliverer {
 public:
  WebhookDeliverer(EngineThread& engine, WebhookConfig config);
  ~WebhookDeliverer();
  WebhookDeliverer(const WebhookDeliverer&) = delete;
  WebhookDeliverer& operator=(const WebhookDeliverer&) = delete;

  const WebhookPolicy& policy() const { return config_.policy; }

  void Start();
  // Logs the cursors delivered but not logged yet, then stops the thread.
  // REQUIRES: the EngineThread still runs.
  void Stop();
  // Look again now: a subscription was created or deleted, or the manual clock moved.
  void Kick();

  // The worker's view of subscription `id`, or nullopt before it has seen it. Thread-safe.
  std::optional<DeliveryStatus> StatusOf(const std::string& id) const;
  // The bucketd_webhook_* metrics of these subscriptions (Prometheus text). Thread-safe.
  std::string RenderMetrics(const std::vector<SubscriptionInfo>& subscriptions,
                            uint64_t last_seq) const;

 private:
  struct Runtime {
    DeliveryStatus status;
    bool advance_in_flight = false;
    std::chrono::steady_clock::time_point logged_at{};
  };
  struct View {
    TimeMs now = 0;
    std::vector<SubscriptionInfo> subscriptions;
  };

  void Loop();
  // Delivers the next batch of `sub` if one is due; true if it did any work.
  bool Serve(const SubscriptionInfo& sub, TimeMs now, uint64_t last_seq);
  // Logs `sub`'s cursor if it is ahead of the log and the coalescing allows it (or `now`).
  void MaybeLogAdvance(const std::string& id, bool caught_up, bool force);
  TimeMs Backoff(uint32_t failures_in_row);
  void WaitForWork(const View& view);

  EngineThread& engine_;
  const WebhookConfig config_;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool kicked_ = false;
  bool stopping_ = false;
  bool waiter_armed_ = false;
  std::map<std::string, Runtime> runtimes_;  // by subscription id
};

}  // namespace bucketd::server
