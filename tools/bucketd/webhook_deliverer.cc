#include "webhook_deliverer.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include <spdlog/spdlog.h>

#include "engine/base/check.h"
#include "engine/base/json_writer.h"
#include "webhook_client.h"
#include "webhook_signature.h"

namespace bucketd::server {
namespace {

// The longest the worker sleeps without looking: new subscriptions and the end of a backoff
// are noticed within this even if nothing kicks it.
constexpr std::chrono::milliseconds kIdleWaitMax{1000};

std::string DeliveryBody(const std::string& id, const std::string& stream_id,
                         const std::vector<Transition>& transitions) {
  JsonWriter w;
  w.BeginObject().Key("subscriptionId").String(id).Key("streamId").String(stream_id);
  w.Key("transitions").BeginArray();
  for (const Transition& t : transitions) WriteTransition(t, &w);
  w.EndArray().EndObject();
  return w.Take();
}

int64_t WallUnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Label(const std::string& id) { return "{subscription=\"" + id + "\"}"; }

}  // namespace

WebhookDeliverer::WebhookDeliverer(EngineThread& engine, WebhookConfig config)
    : engine_(engine), config_(std::move(config)) {
  BUCKETD_CHECK(config_.batch_max >= 1 && config_.batch_max <= kWebhookBatchMax);
}

WebhookDeliverer::~WebhookDeliverer() { BUCKETD_CHECK(!thread_.joinable()); }

void WebhookDeliverer::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void WebhookDeliverer::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  // A graceful stop leaves nothing to deliver twice: every delivered cursor is logged.
  std::vector<std::pair<std::string, uint64_t>> pending;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, rt] : runtimes_) {
      if (rt.status.cursor > rt.status.logged_cursor) pending.emplace_back(id, rt.status.cursor);
    }
  }
  for (const auto& [id, cursor] : pending) {
    const Status s = engine_.Call(
        [id = id, cursor = cursor](Engine& e) { return e.AdvanceSubscription(id, cursor); });
    if (!s.ok())
      spdlog::warn("event=webhook_cursor_not_logged subscription={} error=\"{}\"", id,
                   s.ToString());
  }
}

void WebhookDeliverer::Kick() {
  {
    std::lock_guard lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

std::optional<DeliveryStatus> WebhookDeliverer::StatusOf(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = runtimes_.find(id);
  if (it == runtimes_.end()) return std::nullopt;
  return it->second.status;
}

TimeMs WebhookDeliverer::Backoff(uint32_t failures_in_row) {
  TimeMs delay = config_.backoff_base_ms;
  for (uint32_t i = 1; i < failures_in_row && delay < config_.backoff_max_ms; ++i) delay *= 2;
  delay = std::min(delay, config_.backoff_max_ms);
  // Jitter is not part of any state: the OS's randomness is fine here.
  static thread_local std::mt19937_64 random{std::random_device{}()};
  return delay / 2 + static_cast<TimeMs>(random() % static_cast<uint64_t>(delay / 2 + 1));
}

void WebhookDeliverer::Loop() {
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      kicked_ = false;
    }
    View view = engine_.Call([](Engine& e) {
      View v;
      v.now = e.Now();
      v.subscriptions = e.ListSubscriptions();
      return v;
    });
    {
      // Adopt new subscriptions at their logged cursor; forget deleted ones.
      std::lock_guard lock(mu_);
      std::map<std::string, Runtime> kept;
      for (const SubscriptionInfo& sub : view.subscriptions) {
        auto it = runtimes_.find(sub.id);
        Runtime rt = it == runtimes_.end() ? Runtime{} : std::move(it->second);
        rt.status.cursor = std::max(rt.status.cursor, sub.cursor);
        rt.status.logged_cursor = std::max(rt.status.logged_cursor, sub.cursor);
        kept.emplace(sub.id, std::move(rt));
      }
      runtimes_ = std::move(kept);
    }
    const uint64_t last_seq = engine_.Stream().LastTransitionSeq();
    bool worked = false;
    for (const SubscriptionInfo& sub : view.subscriptions) {
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
      }
      worked = Serve(sub, view.now, last_seq) || worked;
    }
    if (!worked) WaitForWork(view);
  }
}

bool WebhookDeliverer::Serve(const SubscriptionInfo& sub, TimeMs now, uint64_t last_seq) {
  uint64_t cursor = 0;
  {
    std::lock_guard lock(mu_);
    const DeliveryStatus& st = runtimes_[sub.id].status;
    cursor = st.cursor;
    if (st.next_attempt_at && *st.next_attempt_at > now) return false;
  }
  if (cursor >= last_seq) {
    MaybeLogAdvance(sub.id, /*caught_up=*/true, false);
    return false;
  }
  TransitionsPage page;
  const Engine& stream = engine_.Stream();
  Status status = stream.ReadTransitions(cursor, config_.batch_max, sub.filter, &page);
  std::optional<int> http_status;
  if (status.ok() && !page.transitions.empty()) {
    const std::string body = DeliveryBody(sub.id, stream.StreamId(), page.transitions);
    const std::vector<std::pair<std::string, std::string>> headers = {
        {std::string(kSignatureHeader), SignatureHeaderValue(sub.secret, WallUnixSeconds(), body)},
        {"Bucketd-Subscription", sub.id}};
    HttpUrl url;
    status = ParseHttpUrl(sub.url, &url);
    WebhookResponse response;
    if (status.ok()) {
      status = PostWebhook(url, config_.policy, headers, body, config_.timeout, &response);
    }
    if (status.ok()) {
      http_status = response.status;
      if (response.status < 200 || response.status > 299) {
        status = Status::IoError("HTTP " + std::to_string(response.status));
      }
    }
  }
  bool caught_up = false;
  {
    std::lock_guard lock(mu_);
    auto it = runtimes_.find(sub.id);
    if (it == runtimes_.end()) return true;
    DeliveryStatus& st = it->second.status;
    if (status.ok()) {
      st.cursor = std::max(st.cursor, page.next);
      st.delivered += page.transitions.size();
      if (!page.transitions.empty()) st.last_delivered_at = now;
      st.failures_in_row = 0;
      st.next_attempt_at.reset();
      caught_up = st.cursor >= last_seq;
    } else {
      ++st.failures_in_row;
      ++st.failed_attempts;
      st.last_error = status.message();
      st.last_error_at = now;
      st.next_attempt_at = now + Backoff(st.failures_in_row);
    }
  }
  if (!status.ok()) {
    spdlog::warn("event=webhook_failed subscription={} after={} error=\"{}\" http_status={}",
                 sub.id, cursor, status.message(), http_status.value_or(0));
    return true;
  }
  MaybeLogAdvance(sub.id, caught_up, false);
  return true;
}

void WebhookDeliverer::MaybeLogAdvance(const std::string& id, bool caught_up, bool force) {
  uint64_t cursor = 0;
  {
    std::lock_guard lock(mu_);
    auto it = runtimes_.find(id);
    if (it == runtimes_.end()) return;
    Runtime& rt = it->second;
    if (rt.status.cursor <= rt.status.logged_cursor || rt.advance_in_flight) return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && !caught_up && now - rt.logged_at < config_.log_every) return;
    rt.advance_in_flight = true;
    rt.logged_at = now;
    cursor = rt.status.cursor;
  }
  // The owner thread logs it with the next group; the answer only updates the counters.
  engine_.CallAsync([id, cursor](Engine& e) { return e.AdvanceSubscription(id, cursor); },
                    [this, id, cursor](Status s) {
                      std::lock_guard lock(mu_);
                      auto it = runtimes_.find(id);
                      if (it == runtimes_.end()) return;
                      it->second.advance_in_flight = false;
                      if (s.ok()) {
                        it->second.status.logged_cursor =
                            std::max(it->second.status.logged_cursor, cursor);
                      }
                    });
}

void WebhookDeliverer::WaitForWork(const View& view) {
  std::chrono::milliseconds wait = kIdleWaitMax;
  std::unique_lock lock(mu_);
  for (const auto& [id, rt] : runtimes_) {
    if (rt.status.next_attempt_at) {
      // Engine time: on a wall clock it passes as wall time does; on a manual clock only
      // POST /v1/clock moves it, and that kicks.
      const TimeMs until = std::max<TimeMs>(*rt.status.next_attempt_at - view.now, 0);
      wait = std::min(wait, std::chrono::milliseconds(until));
    }
  }
  // New transitions wake the worker (one waiter armed at a time).
  if (!waiter_armed_) {
    waiter_armed_ = true;
    const uint64_t seen = engine_.Stream().LastTransitionSeq();
    lock.unlock();
    engine_.WaitForTransitionsAsync(seen, kIdleWaitMax, [this] {
      {
        std::lock_guard inner(mu_);
        waiter_armed_ = false;
        kicked_ = true;
      }
      cv_.notify_all();
    });
    lock.lock();
  }
  cv_.wait_for(lock, wait, [this] { return kicked_ || stopping_; });
}

std::string WebhookDeliverer::RenderMetrics(const std::vector<SubscriptionInfo>& subscriptions,
                                            uint64_t last_seq) const {
  struct Row {
    std::string id;
    DeliveryStatus st;
  };
  std::vector<Row> rows;
  {
    std::lock_guard lock(mu_);
    for (const SubscriptionInfo& sub : subscriptions) {
      auto it = runtimes_.find(sub.id);
      DeliveryStatus st;
      if (it != runtimes_.end()) st = it->second.status;
      st.cursor = std::max(st.cursor, sub.cursor);
      st.logged_cursor = std::max(st.logged_cursor, sub.cursor);
      rows.push_back({sub.id, st});
    }
  }
  std::string out;
  const auto family = [&](const char* name, const char* type, const char* help, auto value,
                          bool only_set = false) {
    std::string lines;
    for (const Row& row : rows) {
      std::optional<double> v = value(row.st);
      if (!v && only_set) continue;
      char number[32];
      std::snprintf(number, sizeof number, "%.15g", v.value_or(0));
      lines += std::string(name) + Label(row.id) + " " + number + "\n";
    }
    out +=
        std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + lines;
  };
  using O = std::optional<double>;
  out +=
      "# HELP bucketd_webhook_subscriptions Webhook subscriptions.\n"
      "# TYPE bucketd_webhook_subscriptions gauge\n"
      "bucketd_webhook_subscriptions " +
      std::to_string(rows.size()) + "\n";
  family("bucketd_webhook_lag_transitions", "gauge",
         "Transitions in the stream after the subscription's delivered cursor.",
         [&](const DeliveryStatus& st) {
           return O(static_cast<double>(last_seq > st.cursor ? last_seq - st.cursor : 0));
         });
  family("bucketd_webhook_cursor_seq", "gauge", "Delivered through this seq (in memory).",
         [](const DeliveryStatus& st) { return O(static_cast<double>(st.cursor)); });
  family("bucketd_webhook_logged_cursor_seq", "gauge",
         "Delivered through this seq, as logged (a restart resumes after it).",
         [](const DeliveryStatus& st) { return O(static_cast<double>(st.logged_cursor)); });
  family("bucketd_webhook_delivered_transitions_total", "counter",
         "Transitions delivered (2xx) since the server started.",
         [](const DeliveryStatus& st) { return O(static_cast<double>(st.delivered)); });
  family("bucketd_webhook_failed_attempts_total", "counter",
         "Deliveries that failed (no 2xx) since the server started.",
         [](const DeliveryStatus& st) { return O(static_cast<double>(st.failed_attempts)); });
  family("bucketd_webhook_consecutive_failures", "gauge",
         "Failed deliveries since the last success.",
         [](const DeliveryStatus& st) { return O(static_cast<double>(st.failures_in_row)); });
  family(
      "bucketd_webhook_next_attempt_timestamp_seconds", "gauge",
      "When a backing-off subscription is retried (engine clock, Unix seconds).",
      [](const DeliveryStatus& st) {
        return st.next_attempt_at ? O(static_cast<double>(*st.next_attempt_at) / 1000) : O();
      },
      true);
  family(
      "bucketd_webhook_last_error_timestamp_seconds", "gauge",
      "When the last delivery failed (engine clock, Unix seconds).",
      [](const DeliveryStatus& st) {
        return st.last_error_at ? O(static_cast<double>(*st.last_error_at) / 1000) : O();
      },
      true);
  return out;
}

}  // namespace bucketd::server
