#include "http_route.h"

#include <algorithm>
#include <charconv>
#include <exception>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "bucketd/limits.h"
#include "bucketd/time_format.h"
#include "engine/base/check.h"

namespace bucketd::server {
namespace {

constexpr std::string_view kBearerPrefix = "Bearer ";
constexpr std::string_view kIdSegment = "{}";
constexpr std::string_view kOriginScheme = "http://";

// `path` split at '/', each segment decoded when `decode` ("/a/b%2Fc" -> "", "a", "b/c").
std::vector<std::string> Segments(std::string_view path, bool decode) {
  std::vector<std::string> out;
  for (;;) {
    const size_t slash = path.find('/');
    std::string_view segment = path.substr(0, slash);
    out.push_back(decode ? PercentDecode(segment) : std::string(segment));
    if (slash == std::string_view::npos) return out;
    path.remove_prefix(slash + 1);
  }
}

std::vector<std::string> TargetSegments(const HttpRequest& req) {
  return Segments(req.Path(), true);
}

// Compares in time that depends only on the lengths, not on where the bytes differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

size_t MethodIndex(HttpMethod method) { return static_cast<size_t>(method); }

// A duration string whose every number is zero ("0s", "0ms", "0m0s"). ParseDurationString
// refuses those because a zero window or interval is a mistake in a definition, but for `wait`
// zero means "answer now", and a client that formats its durations writes "0s" for it.
bool IsZeroDuration(std::string_view text) {
  if (text.empty() || text.find_first_of("123456789") != std::string_view::npos) return false;
  // The same text with each zero read as one has the shape of a valid duration iff this does.
  std::string shape(text);
  std::replace(shape.begin(), shape.end(), '0', '1');
  TimeMs ignored = 0;
  return ParseDurationString(shape, &ignored).ok();
}

}  // namespace

std::string_view MethodName(HttpMethod method) {
  switch (method) {
    case HttpMethod::kGet:
      return "GET";
    case HttpMethod::kPost:
      return "POST";
    case HttpMethod::kPut:
      return "PUT";
    case HttpMethod::kPatch:
      return "PATCH";
    case HttpMethod::kDelete:
      return "DELETE";
    case HttpMethod::kOther:
      break;
  }
  return "OTHER";
}

Status QueryUint(const HttpRequest& req, const char* name, uint64_t fallback, uint64_t min,
                 uint64_t max, uint64_t* out) {
  std::optional<std::string> param = req.Query(name);
  if (!param) {
    *out = fallback;
    return Status::Ok();
  }
  const std::string& text = *param;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return Status::InvalidArgument(name, "must be an unsigned integer");
  }
  if (*out < min || *out > max) {
    return Status::InvalidArgument(
        name, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return Status::Ok();
}

// `wait`: whole seconds ("5") or a duration string ("500ms", "10s", "0s"), at most 30 s.
Status QueryWait(const HttpRequest& req, int64_t* wait_ms) {
  *wait_ms = 0;
  std::optional<std::string> param = req.Query("wait");
  if (!param) return Status::Ok();
  const std::string& text = *param;
  uint64_t seconds = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (!text.empty() && error == std::errc() && end == text.data() + text.size()) {
    *wait_ms = seconds > kLongPollMsMax / 1000 ? kLongPollMsMax + 1 : seconds * 1000;
  } else if (IsZeroDuration(text)) {
    *wait_ms = 0;
  } else if (Status status = ParseDurationString(text, wait_ms); !status.ok()) {
    return Status::InvalidArgument("wait", "must be seconds or a duration such as \"500ms\"");
  }
  if (*wait_ms > kLongPollMsMax) {
    return Status::InvalidArgument(
        "wait", "must be at most " + std::to_string(kLongPollMsMax / 1000) + " s");
  }
  return Status::Ok();
}

// `bucket` (one id) and `kind` (repeated, comma-separated, or both) of GET /v1/transitions.
Status QueryTransitionFilter(const HttpRequest& req, TransitionFilter* filter) {
  const std::vector<std::string> buckets = req.QueryAll("bucket");
  if (buckets.size() > 1) return Status::InvalidArgument("bucket", "give at most one bucket");
  // The engine checks the id (ReadTransitions).
  if (!buckets.empty()) filter->bucket_id = buckets[0];
  for (const std::string& param : req.QueryAll("kind")) {
    std::string_view rest = param;
    for (;;) {
      const size_t comma = rest.find(',');
      const std::string_view name = rest.substr(0, comma);
      TransitionKind kind;
      if (!ParseTransitionKind(name, &kind)) {
        return Status::InvalidArgument("kind", "must be entered, left or dwell");
      }
      if (std::find(filter->kinds.begin(), filter->kinds.end(), kind) == filter->kinds.end()) {
        filter->kinds.push_back(kind);
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return Status::Ok();
}

std::string PathSegment(const HttpRequest& req, size_t index) {
  std::vector<std::string> segments = TargetSegments(req);
  return index < segments.size() ? std::move(segments[index]) : "";
}

Router::Router(ServerMetrics& metrics, AccessConfig access)
    : metrics_(metrics), access_(std::move(access)) {}

void Router::SetAuthorities(std::vector<std::string> authorities) {
  access_.authorities = std::move(authorities);
}

bool Router::Authorized(const HttpRequest& req) const {
  if (access_.auth_token.empty()) return true;
  if (!req.authorization || !req.authorization->starts_with(kBearerPrefix)) return false;
  return ConstantTimeEquals(std::string_view(*req.authorization).substr(kBearerPrefix.size()),
                            access_.auth_token);
}

bool Router::KnownAuthority(std::string_view authority, const HttpRequest& req) const {
  const std::string lower = AsciiLower(authority);
  if (!req.local_authority.empty() && lower == AsciiLower(req.local_authority)) return true;
  return std::find(access_.authorities.begin(), access_.authorities.end(), lower) !=
         access_.authorities.end();
}

std::optional<HttpError> Router::CheckAuthority(const HttpRequest& req) const {
  // With a token, a page cannot authenticate (no CORS is ever granted), so any Host will do:
  // a proxy or a container's published port may name the server differently.
  if (!access_.auth_token.empty()) return std::nullopt;
  if (!req.host) return Forbidden("Host", "tokenless mode needs a Host header naming this server");
  if (!KnownAuthority(*req.host, req)) {
    return Forbidden("Host", "Host \"" + *req.host +
                                 "\" is not this server (tokenless mode refuses other names; "
                                 "set --auth-token to serve them)");
  }
  if (!req.origin) return std::nullopt;
  std::string_view origin = *req.origin;
  if (!AsciiLower(origin.substr(0, kOriginScheme.size())).starts_with(kOriginScheme) ||
      !KnownAuthority(origin.substr(kOriginScheme.size()), req)) {
    return Forbidden("Origin", "Origin \"" + *req.origin +
                                   "\" is not this server (tokenless mode refuses pages from "
                                   "other origins)");
  }
  return std::nullopt;
}

std::optional<HttpError> Router::CheckMediaType(const HttpRequest& req, Body body) const {
  const std::string type = req.MediaType();
  if (type == "application/json") return std::nullopt;
  if (body == Body::kJsonOrNdjson && type == "application/x-ndjson") return std::nullopt;
  std::string wanted =
      body == Body::kJsonOrNdjson ? "application/json or application/x-ndjson" : "application/json";
  return UnsupportedMediaType("Content-Type", "a body must be " + wanted + ", not " +
                                                  (type.empty() ? "untyped" : "\"" + type + "\""));
}

void Router::Add(HttpMethod method, std::string_view path_template, std::string route, Body body,
                 Handler handler, Access access) {
  BUCKETD_CHECK(method != HttpMethod::kOther);
  const bool needs_auth = path_template.starts_with("/v1/") && access == Access::kToken;
  routes_[MethodIndex(method)].push_back({std::string(path_template),
                                          Segments(path_template, false), needs_auth, body,
                                          std::move(route), std::move(handler)});
}

std::vector<Router::RouteEntry> Router::Routes() const {
  std::vector<RouteEntry> out;
  for (size_t i = 0; i < kMethodCount; ++i) {
    for (const Route& route : routes_[i]) {
      out.push_back({static_cast<HttpMethod>(i), route.path_template});
    }
  }
  return out;
}

const Router::Route* Router::Find(HttpMethod method,
                                  const std::vector<std::string>& segments) const {
  if (method == HttpMethod::kOther) return nullptr;
  for (const Route& route : routes_[MethodIndex(method)]) {
    if (route.segments.size() != segments.size()) continue;
    bool match = true;
    for (size_t i = 0; i < segments.size() && match; ++i) {
      match =
          route.segments[i] == kIdSegment ? !segments[i].empty() : route.segments[i] == segments[i];
    }
    if (match) return &route;
  }
  return nullptr;
}

Router::Admission Router::Admit(const HttpRequest& req) const {
  Admission admission;
  if (std::optional<HttpError> refusal = CheckAuthority(req)) {
    admission.refusal = std::move(refusal);
    return admission;
  }
  // Compressed bodies are refused rather than inflated: an inflate bounded by the body limit
  // is possible, but no client of this API needs it and a refusal cannot be a zip bomb.
  if (req.HasBody() && req.content_encoding && !req.content_encoding->empty() &&
      AsciiLower(TrimSpace(*req.content_encoding)) != "identity") {
    admission.refusal = UnsupportedMediaType(
        "Content-Encoding", "a body must not be compressed (Content-Encoding \"" +
                                *req.content_encoding + "\"); send it as identity");
    return admission;
  }
  admission.route = Find(req.method, TargetSegments(req));
  if (admission.route == nullptr) {
    admission.refusal = NotFound("no such route");
  } else if (admission.route->needs_auth && !Authorized(req)) {
    admission.refusal = Unauthorized();
  } else if (req.HasBody()) {
    admission.refusal = CheckMediaType(req, admission.route->body);
  }
  return admission;
}

std::optional<Reply> Router::Screen(const HttpRequest& req) const {
  Admission admission = Admit(req);
  if (!admission.refusal) return std::nullopt;
  Reply reply = ErrorReply(*admission.refusal);
  if (admission.route) reply.route = admission.route->name;
  spdlog::debug("event=request method={} path={} route={} status={} refused=headers",
                MethodName(req.method), req.Path(), reply.route, reply.http_status);
  return reply;
}

void Router::RecordServed(std::string_view route, int http_status, double seconds) const {
  metrics_.RecordRequest(route, http_status, seconds);
}

void Router::Dispatch(HttpRequestPtr req, Exchange::Poster post,
                      Exchange::Responder respond) const {
  Admission admission = Admit(*req);
  const std::string route = admission.route ? admission.route->name : "unmatched";
  auto exchange = std::make_shared<Exchange>(
      std::move(post), [req, route, respond = std::move(respond)](Reply reply) {
        reply.route = route;
        spdlog::debug("event=request method={} path={} route={} status={} bytes_in={}",
                      MethodName(req->method), req->Path(), route, reply.http_status,
                      req->body.size());
        respond(std::move(reply));
      });
  if (admission.refusal) return exchange->Respond(ErrorReply(*admission.refusal));
  try {
    admission.route->handler(req, exchange);
  } catch (const std::exception& e) {
    exchange->Fail(e.what());
  } catch (...) {
    exchange->Fail("unknown exception");
  }
}

}  // namespace bucketd::server
