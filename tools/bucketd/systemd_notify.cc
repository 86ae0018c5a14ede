#include "systemd_notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdint>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

namespace bucketd::server {
namespace {

void Notify(const std::string& state) {
  // unset_environment = 0: the variables stay for whoever reads them next (the watchdog).
  if (const int r = sd_notify(0, state.c_str()); r < 0) {
    spdlog::warn("event=sd_notify_failed error=\"{}\"", std::string(std::strerror(-r)));
  }
}

uint64_t MonotonicMicros() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1'000'000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
}

}  // namespace

void NotifyReady(std::string_view status) { Notify("READY=1\nSTATUS=" + std::string(status)); }

void NotifyReloading() {
  // MONOTONIC_USEC: systemd 253+ (Type=notify-reload) matches the reload by it; older ones
  // ignore it.
  Notify("RELOADING=1\nSTATUS=reloading bucket definitions\nMONOTONIC_USEC=" +
         std::to_string(MonotonicMicros()));
}

void NotifyStopping() { Notify("STOPPING=1\nSTATUS=stopping"); }

void NotifyStatus(std::string_view status) { Notify("STATUS=" + std::string(status)); }

SystemdWatchdog::SystemdWatchdog(Probe responsive) : responsive_(std::move(responsive)) {
  uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set (and WATCHDOG_PID, when set, names this process).
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  const std::chrono::microseconds period(usec / 2);
  spdlog::info("event=watchdog_enabled timeout_usec={} ping_every_usec={}", usec, period.count());
  thread_ = std::thread([this, period] { Run(period); });
}

SystemdWatchdog::~SystemdWatchdog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SystemdWatchdog::Run(std::chrono::microseconds period) {
  // Pings on a fixed schedule, each probe allowed half a period: a ping never comes later
  // than the watchdog's timeout from the one before, however slow a probe that succeeds.
  auto next = std::chrono::steady_clock::now();
  bool withheld = false;
  for (;;) {
    const bool alive = responsive_(period / 2);
    if (alive) {
      Notify("WATCHDOG=1");
      if (withheld) spdlog::info("event=watchdog_resumed");
    } else if (!withheld) {
      spdlog::error(
          "event=watchdog_withheld note=\"the engine did not answer or its log "
          "failed: systemd restarts the service once WatchdogSec passes\"");
    }
    withheld = !alive;
    next += period;
    std::unique_lock lock(mu_);
    if (stop_cv_.wait_until(lock, next, [this] { return stop_; })) return;
  }
}

}  // namespace bucketd::server
