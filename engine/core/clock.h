#pragma once
// The only place that reads the OS clock. The fold never does: it takes instants from
// records, which the engine stamps with Clock::Now().
#include <chrono>

#include "bucketd/types.h"

namespace bucketd {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimeMs Now() const = 0;
};

class WallClock final : public Clock {
 public:
  TimeMs Now() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimeMs start) : now_(start) {}
  TimeMs Now() const override { return now_; }
  void Set(TimeMs now) { now_ = now; }

 private:
  TimeMs now_;
};

}  // namespace bucketd
