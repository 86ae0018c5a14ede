#include "starting_service.h"

#include <utility>

#include "engine/base/json_writer.h"

namespace bucketd::server {
namespace {

bool IsGet(const HttpRequest& req, std::string_view path) {
  return req.method == HttpMethod::kGet && req.Path() == path;
}

Reply StartingReply(const HttpRequest& req) {
  Reply reply;
  if (IsGet(req, "/healthz")) {
    reply = JsonReply(kHttpOk, R"({"status":"starting"})");
    reply.route = "healthz";
  } else if (IsGet(req, "/readyz")) {
    reply = JsonReply(kHttpUnavailable, R"({"status":"starting"})");
    reply.route = "readyz";
  } else {
    JsonWriter w;
    w.BeginObject().Key("error").BeginObject();
    w.Key("code").String("unavailable");
    w.Key("message").String("bucketd is starting (opening its data dir and replaying the log)");
    w.EndObject().Key("status").String("starting").EndObject();
    reply = JsonReply(kHttpUnavailable, w.Take());
    // One label for every route: the routes are not known before the engine's API exists.
    reply.route = "starting";
  }
  return reply;
}

}  // namespace

std::optional<Reply> StartingService::Screen(const HttpRequest& req) const {
  if (IsGet(req, "/healthz")) return std::nullopt;
  return StartingReply(req);
}

void StartingService::Dispatch(HttpRequestPtr req, Exchange::Poster,
                               Exchange::Responder respond) const {
  respond(StartingReply(*req));
}

void StartingService::RecordServed(std::string_view route, int http_status, double seconds) const {
  metrics_.RecordRequest(route, http_status, seconds);
}

}  // namespace bucketd::server
