#pragma once
// The plumbing every route shares: replies, path segments taken from the raw target (so an
// id holding an encoded '/' survives), bearer-token checks and per-route request metrics.
#include <functional>
#include <string>
#include <string_view>

#include <httplib.h>

#include "http_errors.h"
#include "prometheus.h"

namespace bucketd::server {

struct Reply {
  int http_status = kHttpOk;
  std::string body;
  std::string content_type = "application/json";
};

Reply JsonReply(int http_status, std::string body);
Reply ErrorReply(const HttpError& error);

// The percent-decoded segment `index` of the request path ("/v1/users/a%2Fb" -> 2: "a/b").
std::string PathSegment(const httplib::Request& req, size_t index);

class Router {
 public:
  using Handler = std::function<Reply(const httplib::Request&)>;
  enum class Method { kGet, kPost, kPut, kPatch, kDelete };

  // An empty `auth_token` leaves /v1 open.
  Router(httplib::Server& server, ServerMetrics& metrics, std::string auth_token);

  // Registers `handler` for `pattern` (an httplib regex over the decoded path). Routes under
  // /v1 require the bearer token. `route` names the route in metrics and logs.
  void Add(Method method, const std::string& pattern, std::string route, Handler handler);

 private:
  bool Authorized(const httplib::Request& req) const;
  void InstallServerHooks();

  httplib::Server& server_;
  ServerMetrics& metrics_;
  const std::string auth_token_;
};

}  // namespace bucketd::server
