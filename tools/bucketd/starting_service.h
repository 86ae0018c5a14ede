#pragma once
// What bucketd answers while its engine opens and replays the log: GET /healthz 200 (the
// process is alive, a liveness probe must not restart it), GET /readyz 503
// {"status":"starting"}, and every other request 503 with an error and "status":"starting".
// A client learns at once that the server is there and not ready, where a refused
// connection looks like a server that is down.
#include <optional>
#include <string_view>

#include "http_service.h"
#include "prometheus.h"

namespace bucketd::server {

class StartingService final : public HttpService {
 public:
  explicit StartingService(ServerMetrics& metrics) : metrics_(metrics) {}

  // Answers everything but GET /healthz on the headers (its body is never read).
  std::optional<Reply> Screen(const HttpRequest& req) const override;
  void Dispatch(HttpRequestPtr req, Exchange::Poster post,
                Exchange::Responder respond) const override;
  void RecordServed(std::string_view route, int http_status, double seconds) const override;

 private:
  ServerMetrics& metrics_;
};

}  // namespace bucketd::server
