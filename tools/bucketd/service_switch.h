#pragma once
// The HttpService the transport serves while the service behind it changes once: bucketd
// listens before it replays its log (a busy port fails at once, probes get answers), serves
// a StartingService meanwhile, then switches to the engine's routes.
#include <atomic>
#include <optional>
#include <string_view>

#include "http_service.h"

namespace bucketd::server {

class ServiceSwitch final : public HttpService {
 public:
  // `first` (not owned) is served until SwitchTo.
  explicit ServiceSwitch(const HttpService& first) : current_(&first) {}

  // Thread-safe, while serving: requests read from now on go to `next` (not owned; it must
  // outlive the transport). A request screened before the switch may be dispatched after
  // it: every service screens again in Dispatch, so it is answered by `next` alone.
  void SwitchTo(const HttpService& next) { current_.store(&next, std::memory_order_release); }

  std::optional<Reply> Screen(const HttpRequest& req) const override {
    return Current().Screen(req);
  }
  void Dispatch(HttpRequestPtr req, Exchange::Poster post,
                Exchange::Responder respond) const override {
    Current().Dispatch(std::move(req), std::move(post), std::move(respond));
  }
  void RecordServed(std::string_view route, int http_status, double seconds) const override {
    Current().RecordServed(route, http_status, seconds);
  }

 private:
  const HttpService& Current() const { return *current_.load(std::memory_order_acquire); }

  std::atomic<const HttpService*> current_;
};

}  // namespace bucketd::server
