#pragma once
// The owner thread (Redis-like): the only thread that touches the Engine. HTTP handler
// threads hand it work items through a queue and wait for the result; the owner drains
// every queued item per round, so reads see a consistent state and no two calls
// interleave. In wall-clock mode it also sweeps: at the next due instant (sub-second
// latency) and at least every sweep interval.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "bucketd/engine.h"

namespace bucketd::server {

class ServerMetrics;

class EngineThread {
 public:
  struct Config {
    bool background_sweeps = true;  // false in manual-clock mode: only POST /v1/clock sweeps
    std::chrono::milliseconds sweep_interval{1000};
  };

  // `metrics` (not owned) records the background sweeps' latency.
  EngineThread(std::unique_ptr<Engine> engine, Config config, ServerMetrics* metrics);
  ~EngineThread();
  EngineThread(const EngineThread&) = delete;
  EngineThread& operator=(const EngineThread&) = delete;

  void Start();
  // Runs what is queued, then stops the thread and wakes every long-poller.
  // REQUIRES: no Call() after Stop().
  void Stop();
  // Wakes every long-poller now and makes later ones return at once (shutdown: the HTTP
  // server waits for in-flight requests, which must not sit out a 30 s poll).
  void CloseStream();
  // After Stop(): the engine, for the shutdown snapshot and Close() on the caller's thread.
  Engine& StoppedEngine();

  // Runs fn(engine) on the owner thread and returns its result. Blocks the caller until
  // the round's group commit made whatever fn changed durable.
  template <typename Fn>
  std::invoke_result_t<Fn, Engine&> Call(Fn fn) {
    using Result = std::invoke_result_t<Fn, Engine&>;
    auto promise = std::make_shared<std::promise<Result>>();
    std::future<Result> future = promise->get_future();
    Enqueue([fn = std::move(fn), promise](Engine& engine) mutable -> Completion {
      auto result = std::make_shared<Result>(fn(engine));
      return [promise, result](const Status& round_write) {
        // A call that succeeded in a round whose write then failed was not made durable:
        // its caller gets the write's error instead.
        if constexpr (std::is_same_v<Result, Status>) {
          if (!round_write.ok() && result->ok()) *result = round_write;
        }
        promise->set_value(std::move(*result));
      };
    });
    return future.get();
  }

  // Long-poll: waits until a transition with seq > after_seq exists, the wait ends, or the
  // server stops. Thread-safe (does not go through the owner thread).
  void WaitForTransitionsAfter(uint64_t after_seq, std::chrono::milliseconds wait);
  // The thread-safe part of the engine: the transition stream.
  const Engine& Stream() const { return *engine_; }

 private:
  // A work item runs on the owner thread and returns how to answer its caller; answers go
  // out only after the round's group commit, with that write's outcome.
  using Completion = std::function<void(const Status& round_write)>;
  using WorkItem = std::function<Completion(Engine&)>;
  // The answers of one round, and whether the engine accepted inputs when it was folded
  // (a round folded after the log failed holds only refusals and reads: its answers stand).
  struct Round {
    std::vector<Completion> answers;
    bool folded_healthy = true;
  };

  void Enqueue(WorkItem item);
  void Loop();
  // The wait before the next background sweep is due (wall-clock mode).
  std::chrono::milliseconds TimeUntilSweep() const;
  // Waits until the group in flight is durable (or failed), then answers the round.
  void AnswerDurableRound(Round* round);
  // Logs the first failed write; the engine refuses inputs from then on (Engine::Health).
  void CommitFailed(const Status& status);
  void BackgroundSweep();
  void PublishTransitions();

  std::unique_ptr<Engine> engine_;
  const Config config_;
  ServerMetrics* const metrics_;
  std::thread thread_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<WorkItem> queue_;
  bool stopping_ = false;
  // Pipelined groups handed to the log, and the last whose write ended: Loop sleeps on
  // queue_cv_ until new work arrives or the group in flight is written.
  uint64_t groups_started_ = 0;  // owner thread only
  uint64_t groups_written_ = 0;  // guarded by queue_mu_
  std::chrono::steady_clock::time_point last_sweep_;
  Status commit_failed_;  // owner thread: the first failed group write, logged once

  std::mutex stream_mu_;
  std::condition_variable stream_cv_;
  uint64_t published_seq_ = 0;
  bool stream_closed_ = false;
};

}  // namespace bucketd::server
