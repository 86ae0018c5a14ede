#pragma once
// The plumbing every route shares: routing on the segments of the raw target (so an id
// holding an encoded '/' survives, and a bare '/' cannot split an id), the checks made on
// a request's headers before its body is read (tokenless Host and Origin, bearer token,
// media type and content coding) and per-route request metrics. Transport-neutral: the
// HTTP server and a harness without a socket drive it the same way.
#include <array>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/engine.h"
#include "http_errors.h"
#include "http_request.h"
#include "prometheus.h"

namespace bucketd::server {

// The percent-decoded segment `index` of the request's raw target, split at '/' (segment 0
// is the empty one before the leading '/': "/v1/users/a%2Fb" -> 3: "a/b").
std::string PathSegment(const HttpRequest& req, size_t index);

// A query parameter as an unsigned integer in [min, max]; `fallback` when absent. Errors name
// the parameter.
Status QueryUint(const HttpRequest& req, const char* name, uint64_t fallback, uint64_t min,
                 uint64_t max, uint64_t* out);
// `wait` (a long-poll's): whole seconds ("5") or a duration string ("500ms", "10s", "0s" for
// no wait), at most kLongPollMsMax; 0 when absent. InvalidArgument naming `wait` otherwise.
Status QueryWait(const HttpRequest& req, int64_t* wait_ms);
// "GET", "POST", ... as HTTP writes it ("OTHER" for a method no route takes).
std::string_view MethodName(HttpMethod method);
// GET /v1/transitions' `bucket` (one id) and `kind` (repeated, comma-separated, or both).
Status QueryTransitionFilter(const HttpRequest& req, TransitionFilter* filter);

// Who may call. With a bearer token every /v1 route needs it, and the token is the
// protection: a browser page cannot send it. Without one, a page the user visits could
// still reach a loopback server (DNS rebinding, cross-site form posts), so every route
// then checks that Host names this server and that an Origin, when sent, is this server.
struct AccessConfig {
  std::string auth_token;  // empty: tokenless
  // Lower-case "host:port" authorities that name this server (tokenless mode); the
  // request's own local_authority is accepted too.
  std::vector<std::string> authorities;
};

// Routes match the raw target segment by segment, never a decoded path: there a '/' sent
// encoded inside an id is indistinguishable from a separator, so a route whose id could
// span segments acted on the id's prefix (DELETE /v1/contacts/alice/x deleted alice).
class Router {
 public:
  // Answers through the Exchange, exactly once, at once or later.
  using Handler = std::function<void(const HttpRequestPtr&, const ExchangePtr&)>;
  // The media types a route takes in a body: JSON, or also NDJSON (POST /v1/events). A
  // body of any other type, or none, is refused on every route, so that a browser's
  // form post or text/plain "simple request" never reaches a handler.
  enum class Body { kJson, kJsonOrNdjson };
  // Who may call a route under /v1 when a bearer token is set: the token's holders, or
  // anyone (a public description of the API, GET /v1/openapi.json). Routes outside /v1
  // (/healthz, /metrics) are always open. Host and Origin are checked on every route alike.
  enum class Access { kToken, kPublic };
  // A registered route as the table lists it: the method and the template ("{}" for an id).
  struct RouteEntry {
    HttpMethod method = HttpMethod::kOther;
    std::string path_template;
  };

  Router(ServerMetrics& metrics, AccessConfig access);

  // Registers `handler` for `path_template`, segments separated by '/': "{}" matches one
  // non-empty segment (an id, read by the handler with PathSegment), any other segment
  // matches itself. A target with another number of segments does not match. Routes under
  // /v1 require the bearer token unless `access` is kPublic. `route` names the route in
  // metrics and logs.
  // REQUIRES: not serving yet.
  void Add(HttpMethod method, std::string_view path_template, std::string route, Body body,
           Handler handler, Access access = Access::kToken);
  // Every registered route, by method in registration order: what a contract (the OpenAPI
  // document) is checked against.
  std::vector<RouteEntry> Routes() const;
  // REQUIRES: not serving yet.
  void SetAuthorities(std::vector<std::string> authorities);

  // The refusal of a request on its headers alone (body not read yet), logged at debug;
  // nullopt when its body may be read and the request dispatched.
  std::optional<Reply> Screen(const HttpRequest& req) const;
  // Screens `req`, then runs its route's handler; `respond` gets the one reply (from any
  // thread), `post` runs follow-up work on the caller's executor. Logs the reply at debug.
  // Each reply names its route (Reply::route) for RecordServed.
  void Dispatch(HttpRequestPtr req, Exchange::Poster post, Exchange::Responder respond) const;
  // Counts and times a reply the transport wrote, under its route and status.
  void RecordServed(std::string_view route, int http_status, double seconds) const;

 private:
  static constexpr size_t kMethodCount = 5;

  struct Route {
    std::string path_template;
    std::vector<std::string> segments;  // kIdSegment for an id
    bool needs_auth = false;
    Body body = Body::kJson;
    std::string name;
    Handler handler;
  };
  struct Admission {
    const Route* route = nullptr;
    std::optional<HttpError> refusal;
  };

  // The first route of `method` whose template matches the target's decoded `segments`.
  const Route* Find(HttpMethod method, const std::vector<std::string>& segments) const;
  Admission Admit(const HttpRequest& req) const;
  std::optional<HttpError> CheckAuthority(const HttpRequest& req) const;
  std::optional<HttpError> CheckMediaType(const HttpRequest& req, Body body) const;
  bool Authorized(const HttpRequest& req) const;
  bool KnownAuthority(std::string_view authority, const HttpRequest& req) const;

  ServerMetrics& metrics_;
  AccessConfig access_;
  std::array<std::vector<Route>, kMethodCount> routes_;
};

}  // namespace bucketd::server
