#pragma once
// For a host on the wall clock that does not want to schedule sweeps itself: a thread that
// calls Engine::Sweep at the next due instant (NextDueMs) and at least every `interval`,
// so clock-driven transitions are found within milliseconds of their instant.
//
// The Engine has one owner at a time: the host passes the mutex it holds around each of
// its own calls on the engine, and the thread takes it around each sweep.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "bucketd/engine.h"

namespace bucketd {

class SweepThread {
 public:
  // Starts the thread. REQUIRES: `engine` and `engine_mu` outlive this object.
  SweepThread(Engine& engine, std::mutex& engine_mu,
              std::chrono::milliseconds interval = std::chrono::seconds(1));
  // Stop()s.
  ~SweepThread();
  SweepThread(const SweepThread&) = delete;
  SweepThread& operator=(const SweepThread&) = delete;

  // Stops the thread and waits for a sweep in progress. Call it before Engine::Close().
  void Stop();
  // How many sweeps ran, and the last one's error (OK if none failed; a failed log makes
  // every later sweep fail: see Engine::Health). Thread-safe.
  uint64_t sweeps() const;
  Status last_error() const;

 private:
  void Run();

  Engine& engine_;
  std::mutex& engine_mu_;
  const std::chrono::milliseconds interval_;
  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable wake_;
  bool stopping_ = false;
  uint64_t sweeps_ = 0;
  Status last_error_;
  std::thread thread_;  // last: starts once the fields above exist
};

}  // namespace bucketd
