#include "transition_waiters.h"

#include <utility>
#include <vector>

namespace bucketd::server {

TransitionWaiters::TransitionWaiters(uint64_t published_seq)
    : published_seq_(published_seq), thread_([this] { Loop(); }) {}

TransitionWaiters::~TransitionWaiters() {
  Close();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void TransitionWaiters::Wait(uint64_t after_seq, std::chrono::milliseconds wait, Wake wake) {
  {
    std::lock_guard lock(mu_);
    const uint64_t id = next_id_++;
    const Clock::time_point deadline = Clock::now() + wait;
    Waiter& waiter = waiters_[id];
    waiter.wake = std::move(wake);
    waiter.after = by_after_.emplace(after_seq, id);
    waiter.deadline = by_deadline_.emplace(deadline, id);
  }
  // The thread files nothing itself: it wakes to recompute its sleep (this deadline may be
  // the earliest) and to answer a waiter that is due already (published or closed).
  cv_.notify_one();
}

void TransitionWaiters::Publish(uint64_t seq) {
  {
    std::lock_guard lock(mu_);
    if (seq <= published_seq_) return;
    published_seq_ = seq;
  }
  cv_.notify_one();
}

void TransitionWaiters::Close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_one();
}

bool TransitionWaiters::Closed() {
  std::lock_guard lock(mu_);
  return closed_;
}

size_t TransitionWaiters::WaitingCount() {
  std::lock_guard lock(mu_);
  return waiters_.size();
}

void TransitionWaiters::Take(uint64_t id, std::vector<Wake>* out) {
  auto it = waiters_.find(id);
  out->push_back(std::move(it->second.wake));
  by_after_.erase(it->second.after);
  by_deadline_.erase(it->second.deadline);
  waiters_.erase(it);
}

std::vector<TransitionWaiters::Wake> TransitionWaiters::TakeDue(Clock::time_point now) {
  std::vector<Wake> due;
  if (closed_) {
    while (!waiters_.empty()) Take(waiters_.begin()->first, &due);
    return due;
  }
  while (!by_after_.empty() && by_after_.begin()->first < published_seq_) {
    Take(by_after_.begin()->second, &due);
  }
  while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
    Take(by_deadline_.begin()->second, &due);
  }
  return due;
}

void TransitionWaiters::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    std::vector<Wake> due = TakeDue(Clock::now());
    if (!due.empty()) {
      // Outside the lock: a wake may take time (it posts to a transport) and must not
      // hold up Publish on the owner thread.
      lock.unlock();
      for (Wake& wake : due) wake();
      lock.lock();
      continue;
    }
    if (stopping_) return;
    if (by_deadline_.empty()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, by_deadline_.begin()->first);
    }
  }
}

}  // namespace bucketd::server
