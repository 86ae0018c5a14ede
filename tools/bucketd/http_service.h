#pragma once
// What the HTTP transport serves: the single engine's routes (HttpApi) or a cluster node's
// (ClusterApi). Both are a Router's routes behind the same three calls.
#include <optional>

#include "http_request.h"

namespace bucketd::server {

class HttpService {
 public:
  virtual ~HttpService() = default;
  // The refusal of a request on its headers alone, before its body is read.
  virtual std::optional<Reply> Screen(const HttpRequest& req) const = 0;
  // Serves one request: `respond` gets its reply exactly once, from any thread; `post` runs
  // the rest of the work on the transport's executor (see Exchange).
  virtual void Dispatch(HttpRequestPtr req, Exchange::Poster post,
                        Exchange::Responder respond) const = 0;
  // A request the transport refused before routing (malformed, too large), for metrics.
  virtual void RecordUnrouted(int http_status) const = 0;
};

}  // namespace bucketd::server
