#pragma once
// What the HTTP transport serves: the single engine's routes (HttpApi) or a cluster node's
// (ClusterApi). Both are a Router's routes behind the same three calls.
#include <optional>
#include <string_view>

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
  // A reply the transport wrote (or failed to write): `seconds` from the request parsed (its
  // headers, for a refusal on them) to the reply written. For metrics.
  virtual void RecordServed(std::string_view route, int http_status, double seconds) const = 0;
};

}  // namespace bucketd::server
