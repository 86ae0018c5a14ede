#pragma once
// systemd's readiness protocol (sd_notify(3)) for a unit with Type=notify and WatchdogSec=:
// READY=1 once the log has replayed and inputs are accepted, RELOADING=1 ... READY=1 around a
// SIGHUP reload, STOPPING=1 when a stop signal arrives, STATUS= lines for `systemctl status`,
// and WATCHDOG=1 pings. Every call is a no-op when NOTIFY_SOCKET is unset (not under systemd).
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>

namespace bucketd::server {

// Thread-safe.
void NotifyReady(std::string_view status);
void NotifyReloading();
void NotifyStopping();
void NotifyStatus(std::string_view status);

// Pings WATCHDOG=1 every half of the WATCHDOG_USEC systemd sets, on its own thread, but only
// while `responsive` says so: a process whose engine thread is stuck or whose log failed
// stops pinging, and systemd restarts it (which replays the log). No thread without
// WATCHDOG_USEC.
class SystemdWatchdog {
 public:
  // `responsive(deadline)`: whether the engine answered within `deadline`; runs on the
  // watchdog's thread.
  using Probe = std::function<bool(std::chrono::microseconds deadline)>;
  explicit SystemdWatchdog(Probe responsive);
  // Stops pinging before what the probe uses goes away.
  ~SystemdWatchdog();
  SystemdWatchdog(const SystemdWatchdog&) = delete;
  SystemdWatchdog& operator=(const SystemdWatchdog&) = delete;

 private:
  void Run(std::chrono::microseconds period);

  const Probe responsive_;
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace bucketd::server
