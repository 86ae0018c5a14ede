#pragma once
// Long-polls of GET /v1/transitions without a thread each: a waiter is a callback filed by
// the seq it waits past and by its deadline, and one thread calls it back when the owner
// thread publishes a later seq, when the deadline passes, or at shutdown. A thousand polls
// cost a thousand map entries, not a thousand blocked threads.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace bucketd::server {

class TransitionWaiters {
 public:
  using Wake = std::function<void()>;
  using Clock = std::chrono::steady_clock;

  explicit TransitionWaiters(uint64_t published_seq);
  // Wakes every waiter left, then joins the thread.
  ~TransitionWaiters();
  TransitionWaiters(const TransitionWaiters&) = delete;
  TransitionWaiters& operator=(const TransitionWaiters&) = delete;

  // Calls `wake` exactly once, on this object's thread: when a seq > after_seq has been
  // published, `wait` has passed, or Close() ran. Wakes must be short (post the real work
  // elsewhere): they run one after another.
  void Wait(uint64_t after_seq, std::chrono::milliseconds wait, Wake wake);
  // The owner thread's newest durable transition seq.
  void Publish(uint64_t seq);
  // Wakes every waiter now; later Waits wake at once (shutdown).
  void Close();

  size_t WaitingCount();
  // Close() ran: a wake may be the shutdown's, not a new seq.
  bool Closed();

 private:
  using AfterIndex = std::multimap<uint64_t, uint64_t>;              // after_seq -> waiter id
  using DeadlineIndex = std::multimap<Clock::time_point, uint64_t>;  // deadline -> waiter id
  struct Waiter {
    Wake wake;
    AfterIndex::iterator after;
    DeadlineIndex::iterator deadline;
  };

  void Loop();
  // Moves the wake of waiter `id` to `out` and forgets the waiter. REQUIRES: mu_ held.
  void Take(uint64_t id, std::vector<Wake>* out);
  // The wakes due now. REQUIRES: mu_ held.
  std::vector<Wake> TakeDue(Clock::time_point now);

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t published_seq_;
  bool closed_ = false;
  bool stopping_ = false;
  uint64_t next_id_ = 0;
  std::unordered_map<uint64_t, Waiter> waiters_;
  AfterIndex by_after_;
  DeadlineIndex by_deadline_;
  std::thread thread_;
};

}  // namespace bucketd::server
