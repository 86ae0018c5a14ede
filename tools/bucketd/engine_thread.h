#pragma once
// The owner thread (Redis-like): the only thread that touches the Engine. HTTP I/O
// threads hand it work items through a queue and are called back with the result; the owner drains
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
#include "transition_waiters.h"

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

  // Runs fn(engine) on the owner thread, then done(result) there too, once the round's
  // group commit made whatever fn changed durable. `done` must be short: it holds up the
  // owner thread (post the answer's rendering to another thread). A Status result, or a
  // result's `status` member, that was OK becomes the write's error when the round's write
  // failed: the call was not made durable.
  template <typename Fn, typename Done>
  void CallAsync(Fn fn, Done done) {
    using Result = std::invoke_result_t<Fn, Engine&>;
    Enqueue([fn = std::move(fn), done = std::move(done)](Engine& engine) mutable -> Completion {
      auto result = std::make_shared<Result>(fn(engine));
      return [done = std::move(done), result](const Status& round_write) mutable {
        if (!round_write.ok()) KeepWriteFailure(round_write, *result);
        done(std::move(*result));
      };
    });
  }

  // CallAsync, waiting for the result on the caller's thread (start-up, tests).
  template <typename Fn>
  std::invoke_result_t<Fn, Engine&> Call(Fn fn) {
    using Result = std::invoke_result_t<Fn, Engine&>;
    auto promise = std::make_shared<std::promise<Result>>();
    std::future<Result> future = promise->get_future();
    CallAsync(std::move(fn), [promise](Result result) { promise->set_value(std::move(result)); });
    return future.get();
  }

  // Long-poll: calls `wake` once (on the waiters' thread; keep it short) when a transition
  // with seq > after_seq is published, the wait ends, or the stream closes.
  void WaitForTransitionsAsync(uint64_t after_seq, std::chrono::milliseconds wait,
                               TransitionWaiters::Wake wake) {
    waiters_.Wait(after_seq, wait, std::move(wake));
  }
  // CloseStream() ran: long-polls must answer instead of waiting again.
  bool StreamClosed() { return waiters_.Closed(); }
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

  template <typename Result>
  static void KeepWriteFailure(const Status& round_write, Result& result) {
    if constexpr (std::is_same_v<Result, Status>) {
      if (result.ok()) result = round_write;
    } else if constexpr (requires { result.status.ok(); }) {
      if (result.status.ok()) result.status = round_write;
    }
  }

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

  TransitionWaiters waiters_;
};

}  // namespace bucketd::server
