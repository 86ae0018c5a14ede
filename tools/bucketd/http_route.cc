#include "http_route.h"

#include <algorithm>
#include <exception>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "bucketd/limits.h"

namespace bucketd::server {
namespace {

constexpr std::string_view kBearerPrefix = "Bearer ";
constexpr std::string_view kIdSegment = "{}";
// httplib hands every request of a method to Router::Serve, which routes on the raw target:
// this pattern matches any decoded path, newlines included.
constexpr const char* kAnyPath = R"([\s\S]*)";

// The route of the request this handler thread is serving, for the access log hook that
// runs after it (httplib calls handler and logger on the same thread).
thread_local std::string current_route;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int high = HexValue(text[i + 1]);
      int low = HexValue(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out += static_cast<char>(high * 16 + low);
        i += 2;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

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

std::vector<std::string> TargetSegments(const httplib::Request& req) {
  std::string_view target = req.target;
  return Segments(target.substr(0, target.find('?')), true);
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

// Errors answered before any handler runs (no route, body too large), as JSON error bodies.
HttpError DefaultError(int http_status) {
  switch (http_status) {
    case kHttpNotFound:
      return NotFound("no such route");
    case kHttpPayloadTooLarge:
      return PayloadTooLarge("the request body is larger than " +
                             std::to_string(kRequestBodyBytesMax >> 20) + " MiB");
    default:
      return {http_status, "invalid_argument", "the request could not be served", ""};
  }
}

}  // namespace

Reply JsonReply(int http_status, std::string body) {
  return {http_status, std::move(body), "application/json"};
}

Reply ErrorReply(const HttpError& error) { return JsonReply(error.http_status, ErrorBody(error)); }

std::string PathSegment(const httplib::Request& req, size_t index) {
  std::vector<std::string> segments = TargetSegments(req);
  return index < segments.size() ? std::move(segments[index]) : "";
}

Router::Router(httplib::Server& server, ServerMetrics& metrics, std::string auth_token)
    : server_(server), metrics_(metrics), auth_token_(std::move(auth_token)) {
  InstallServerHooks();
}

bool Router::Authorized(const httplib::Request& req) const {
  if (auth_token_.empty()) return true;
  std::string header = req.get_header_value("Authorization");
  if (!std::string_view(header).starts_with(kBearerPrefix)) return false;
  return ConstantTimeEquals(std::string_view(header).substr(kBearerPrefix.size()), auth_token_);
}

void Router::Add(Method method, std::string_view path_template, std::string route,
                 Handler handler) {
  routes_[static_cast<size_t>(method)].push_back({Segments(path_template, false),
                                                  path_template.starts_with("/v1/"),
                                                  std::move(route), std::move(handler)});
}

const Router::Route* Router::Find(Method method, const std::vector<std::string>& segments) const {
  for (const Route& route : routes_[static_cast<size_t>(method)]) {
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

Reply Router::Serve(Method method, const httplib::Request& req) const {
  const Route* route = Find(method, TargetSegments(req));
  if (route == nullptr) return ErrorReply(DefaultError(kHttpNotFound));
  current_route = route->name;
  if (route->needs_auth && !Authorized(req)) return ErrorReply(Unauthorized());
  return route->handler(req);
}

void Router::InstallServerHooks() {
  auto serve = [this](Method method) {
    return [this, method](const httplib::Request& req, httplib::Response& res) {
      Reply reply = Serve(method, req);
      res.status = reply.http_status;
      res.set_content(std::move(reply.body), reply.content_type.c_str());
    };
  };
  server_.Get(kAnyPath, serve(Method::kGet));
  server_.Post(kAnyPath, serve(Method::kPost));
  server_.Put(kAnyPath, serve(Method::kPut));
  server_.Patch(kAnyPath, serve(Method::kPatch));
  server_.Delete(kAnyPath, serve(Method::kDelete));
  server_.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        res.set_content(ErrorBody(DefaultError(res.status)), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  server_.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr error) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("event=handler_exception method={} path={} error=\"{}\"", req.method,
                      req.path, what);
        res.status = kHttpUnavailable;
        res.set_content(ErrorBody({kHttpUnavailable, "unavailable", "internal error", ""}),
                        "application/json");
      });
  server_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    std::string route = current_route.empty() ? "unmatched" : std::move(current_route);
    current_route.clear();
    metrics_.RecordRequest(route, res.status);
    spdlog::debug("event=request method={} path={} route={} status={} bytes_in={}", req.method,
                  req.path, route, res.status, req.body.size());
  });
}

}  // namespace bucketd::server
