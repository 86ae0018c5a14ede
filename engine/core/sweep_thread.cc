#include "bucketd/sweep_thread.h"

#include <algorithm>

namespace bucketd {

SweepThread::SweepThread(Engine& engine, std::mutex& engine_mu, std::chrono::milliseconds interval)
    : engine_(engine), engine_mu_(engine_mu), interval_(interval), thread_([this] { Run(); }) {}

SweepThread::~SweepThread() { Stop(); }

void SweepThread::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t SweepThread::sweeps() const {
  std::lock_guard lock(mu_);
  return sweeps_;
}

Status SweepThread::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void SweepThread::Run() {
  // At least 1 ms between sweeps: an item a sweep cannot clear (it should not exist) then
  // costs a wake-up per millisecond, not a spinning core.
  constexpr std::chrono::milliseconds kGapMin{1};
  for (;;) {
    std::chrono::milliseconds wait = interval_;
    Status swept;
    {
      std::lock_guard engine_lock(engine_mu_);
      SweepResult result;
      swept = engine_.Sweep(&result);
      if (std::optional<TimeMs> due = engine_.NextDueMs()) {
        wait = std::min(wait, std::chrono::milliseconds(*due - engine_.Now()));
      }
    }
    std::unique_lock lock(mu_);
    ++sweeps_;
    if (!swept.ok()) last_error_ = swept;
    wake_.wait_for(lock, std::max(wait, kGapMin), [this] { return stopping_; });
    if (stopping_) return;
  }
}

}  // namespace bucketd
