#pragma once
// The plumbing every route shares: replies, routing on the segments of the raw target (so
// an id holding an encoded '/' survives, and a bare '/' cannot split an id), bearer-token
// checks and per-route request metrics.
#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

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

// The percent-decoded segment `index` of the request's raw target, split at '/' (segment 0
// is the empty one before the leading '/': "/v1/users/a%2Fb" -> 3: "a/b").
std::string PathSegment(const httplib::Request& req, size_t index);

// Routes match the raw target segment by segment, never httplib's decoded path: there a
// '/' sent encoded inside an id is indistinguishable from a separator, so a route whose id
// could span segments acted on the id's prefix (DELETE /v1/contacts/alice/x deleted alice).
class Router {
 public:
  using Handler = std::function<Reply(const httplib::Request&)>;
  enum class Method { kGet, kPost, kPut, kPatch, kDelete };

  // An empty `auth_token` leaves /v1 open.
  Router(httplib::Server& server, ServerMetrics& metrics, std::string auth_token);

  // Registers `handler` for `path_template`, segments separated by '/': "{}" matches one
  // non-empty segment (an id, read by the handler with PathSegment), any other segment
  // matches itself. A target with another number of segments does not match. Routes under
  // /v1 require the bearer token. `route` names the route in metrics and logs.
  // REQUIRES: the server is not listening yet.
  void Add(Method method, std::string_view path_template, std::string route, Handler handler);

 private:
  static constexpr size_t kMethodCount = 5;

  struct Route {
    std::vector<std::string> segments;  // kIdSegment for an id
    bool needs_auth = false;
    std::string name;
    Handler handler;
  };

  // The first route of `method` whose template matches the target's decoded `segments`.
  const Route* Find(Method method, const std::vector<std::string>& segments) const;
  Reply Serve(Method method, const httplib::Request& req) const;
  bool Authorized(const httplib::Request& req) const;
  void InstallServerHooks();

  httplib::Server& server_;
  ServerMetrics& metrics_;
  const std::string auth_token_;
  std::array<std::vector<Route>, kMethodCount> routes_;
};

}  // namespace bucketd::server
