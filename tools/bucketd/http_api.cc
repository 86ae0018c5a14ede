#include "http_api.h"

#include <charconv>
#include <chrono>
#include <utility>
#include <vector>

#include "bucketd/time_format.h"
#include "engine/base/check.h"
#include "json_requests.h"
#include "json_responses.h"

namespace bucketd::server {
namespace {

// Id segments of the route templates (segment 0 is the empty one before the leading '/'):
// /v1/buckets/{}/members/{}, /v1/users/{}/memberships, /v1/contacts/{}.
constexpr size_t kBucketIdSegment = 3;
constexpr size_t kMemberUserSegment = 5;
constexpr size_t kUserSegment = 3;

Reply OkJson(std::string body) { return JsonReply(kHttpOk, std::move(body)); }

// A query parameter as an unsigned integer in [min, max]; `fallback` when absent.
Status QueryUint(const httplib::Request& req, const char* name, uint64_t fallback, uint64_t min,
                 uint64_t max, uint64_t* out) {
  if (!req.has_param(name)) {
    *out = fallback;
    return Status::Ok();
  }
  std::string text = req.get_param_value(name);
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

// `wait`: whole seconds ("5") or a duration string ("500ms", "10s"), at most 30 s.
Status QueryWait(const httplib::Request& req, int64_t* wait_ms) {
  *wait_ms = 0;
  if (!req.has_param("wait")) return Status::Ok();
  std::string text = req.get_param_value("wait");
  uint64_t seconds = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (!text.empty() && error == std::errc() && end == text.data() + text.size()) {
    *wait_ms = seconds > kLongPollMsMax / 1000 ? kLongPollMsMax + 1 : seconds * 1000;
  } else if (Status status = ParseDurationString(text, wait_ms); !status.ok()) {
    return Status::InvalidArgument("wait", "must be seconds or a duration such as \"500ms\"");
  }
  if (*wait_ms > kLongPollMsMax) {
    return Status::InvalidArgument(
        "wait", "must be at most " + std::to_string(kLongPollMsMax / 1000) + " s");
  }
  return Status::Ok();
}

// An item refused by the server's parsing went to the engine only to learn whether its
// idempotencyKey makes it a duplicate (ParsedEvents): refused there too, it keeps the
// server's refusal, which says what is wrong with it.
void RestoreRefusals(const ParsedEvents& parsed, BatchResult* result) {
  for (BatchItemError& error : result->rejected) {
    BUCKETD_CHECK(error.index < parsed.refusals.size());
    const Status& refusal = parsed.refusals[error.index];
    if (!refusal.ok()) error.error = refusal;
  }
}

bool IsNdjson(const httplib::Request& req) {
  return std::string_view(req.get_header_value("Content-Type")).starts_with("application/x-ndjson");
}

}  // namespace

HttpApi::HttpApi(EngineThread& engine, ServerMetrics& metrics, ApiConfig config)
    : engine_(engine), metrics_(metrics), config_(std::move(config)) {}

void HttpApi::Register(httplib::Server& server) {
  using M = Router::Method;
  router_ = std::make_unique<Router>(server, metrics_, config_.auth_token);
  Router* router = router_.get();
  auto add = [&](M method, std::string_view path_template, const char* route,
                 Reply (HttpApi::*handler)(const httplib::Request&)) {
    router->Add(method, path_template, route,
                [this, handler](const httplib::Request& req) { return (this->*handler)(req); });
  };
  add(M::kPost, "/v1/events", "events", &HttpApi::PostEvents);
  add(M::kDelete, "/v1/contacts/{}", "contact", &HttpApi::DeleteContact);
  router->Add(M::kPost, "/v1/buckets", "buckets", [this](const httplib::Request& req) {
    return DefineBucket(req, DefineMode::kCreate);
  });
  router->Add(M::kPut, "/v1/buckets/{}", "bucket", [this](const httplib::Request& req) {
    return DefineBucket(req, DefineMode::kCreateOrReplace);
  });
  add(M::kGet, "/v1/buckets", "buckets", &HttpApi::ListBuckets);
  add(M::kGet, "/v1/buckets/{}", "bucket", &HttpApi::GetBucket);
  add(M::kPatch, "/v1/buckets/{}", "bucket", &HttpApi::PatchBucket);
  add(M::kDelete, "/v1/buckets/{}", "bucket", &HttpApi::DeleteBucket);
  add(M::kGet, "/v1/buckets/{}/count", "bucket_count", &HttpApi::CountMembers);
  add(M::kGet, "/v1/buckets/{}/metrics", "bucket_metrics", &HttpApi::BucketMetricsOf);
  add(M::kGet, "/v1/buckets/{}/members", "members", &HttpApi::ListMembers);
  add(M::kPost, "/v1/buckets/{}/members", "members", &HttpApi::AddMember);
  add(M::kGet, "/v1/buckets/{}/members/{}", "member", &HttpApi::GetMember);
  add(M::kDelete, "/v1/buckets/{}/members/{}", "member", &HttpApi::RemoveMember);
  add(M::kGet, "/v1/users/{}/memberships", "memberships", &HttpApi::UserMemberships);
  add(M::kGet, "/v1/transitions", "transitions", &HttpApi::ReadTransitions);
  add(M::kPost, "/v1/clock", "clock", &HttpApi::AdvanceClock);
  add(M::kPost, "/v1/sweep", "sweep", &HttpApi::Sweep);
  add(M::kPost, "/v1/snapshots", "snapshots", &HttpApi::TakeSnapshot);
  add(M::kGet, "/v1/state", "state", &HttpApi::State);
  add(M::kGet, "/metrics", "metrics", &HttpApi::PrometheusMetrics);
  router->Add(M::kGet, "/healthz", "healthz", [this](const httplib::Request&) {
    // Thread-safe: a liveness probe never waits behind the owner thread's queue.
    const Status health = engine_.Stream().Health();
    if (health.ok()) return OkJson(R"({"status":"ok"})");
    return JsonReply(kHttpUnavailable, HealthFailedJson(health));
  });
}

Reply HttpApi::PostEvents(const httplib::Request& req) {
  auto parsed = std::make_shared<ParsedEvents>();
  if (Status status = ParseEventsBody(req.body, IsNdjson(req), parsed.get()); !status.ok()) {
    return ErrorReply(FromStatus(status));
  }
  if (parsed->over_limit) {
    return ErrorReply(
        PayloadTooLarge("a batch holds at most " + std::to_string(kBatchItemsMax) + " items"));
  }
  if (parsed->single) {
    if (!parsed->rejected.empty()) return ErrorReply(FromStatus(parsed->rejected[0].error));
    IngestResult result;
    Status status =
        engine_.Call([&](Engine& engine) { return engine.Ingest(parsed->events[0], &result); });
    // A stand-in (ParsedEvents) answers as a duplicate or with the server's own refusal.
    const Status& refusal = parsed->refusals[0];
    if (!refusal.ok() && !(status.ok() && result.duplicate)) return ErrorReply(FromStatus(refusal));
    if (!status.ok()) return ErrorReply(FromStatus(status));
    return OkJson(IngestResultJson(result));
  }
  BatchResult result;
  Status status =
      engine_.Call([&](Engine& engine) { return engine.IngestBatch(parsed->events, &result); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  RestoreRefusals(*parsed, &result);
  return OkJson(BatchResultJson(*parsed, result));
}

Reply HttpApi::DeleteContact(const httplib::Request& req) {
  std::string user_id = PathSegment(req, kUserSegment);
  Status status = engine_.Call([&](Engine& engine) { return engine.DeleteContact(user_id); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  JsonWriter w;
  w.BeginObject().Key("userId").String(user_id).Key("deleted").Bool(true).EndObject();
  return OkJson(w.Take());
}

Reply HttpApi::BucketReply(int http_status, const std::string& bucket_id) {
  BucketInfo info;
  Status status = engine_.Call([&](Engine& engine) { return engine.GetBucket(bucket_id, &info); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return JsonReply(http_status, BucketJson(info));
}

Reply HttpApi::DefineBucket(const httplib::Request& req, DefineMode mode) {
  std::optional<std::string> path_id;
  if (mode == DefineMode::kCreateOrReplace) path_id = PathSegment(req, kBucketIdSegment);
  // The engine validates the whole definition; the id is only needed to read it back.
  std::string id = path_id ? *path_id : DefinitionId(req.body);
  bool created = false;
  BucketInfo info;
  Status status = engine_.Call([&](Engine& engine) {
    std::optional<std::string_view> expected_id;
    if (path_id) expected_id = *path_id;
    Status defined = engine.DefineBucket(req.body, mode, expected_id, &created);
    if (!defined.ok()) return defined;
    return engine.GetBucket(id, &info);
  });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return JsonReply(created ? kHttpCreated : kHttpOk, BucketJson(info));
}

Reply HttpApi::ListBuckets(const httplib::Request&) {
  std::vector<BucketInfo> buckets =
      engine_.Call([](Engine& engine) { return engine.ListBuckets(); });
  return OkJson(BucketListJson(buckets));
}

Reply HttpApi::GetBucket(const httplib::Request& req) {
  return BucketReply(kHttpOk, PathSegment(req, kBucketIdSegment));
}

Reply HttpApi::PatchBucket(const httplib::Request& req) {
  bool enabled = true;
  if (Status status = ParseEnabledPatch(req.body, &enabled); !status.ok()) {
    return ErrorReply(FromStatus(status));
  }
  std::string id = PathSegment(req, kBucketIdSegment);
  Status status =
      engine_.Call([&](Engine& engine) { return engine.SetBucketEnabled(id, enabled); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return BucketReply(kHttpOk, id);
}

Reply HttpApi::DeleteBucket(const httplib::Request& req) {
  std::string id = PathSegment(req, kBucketIdSegment);
  Status status = engine_.Call([&](Engine& engine) { return engine.DeleteBucket(id); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  JsonWriter w;
  w.BeginObject().Key("id").String(id).Key("deleted").Bool(true).EndObject();
  return OkJson(w.Take());
}

Reply HttpApi::CountMembers(const httplib::Request& req) {
  std::string id = PathSegment(req, kBucketIdSegment);
  uint64_t count = 0;
  Status status = engine_.Call([&](Engine& engine) { return engine.Count(id, &count); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  JsonWriter w;
  w.BeginObject().Key("count").Uint(count).EndObject();
  return OkJson(w.Take());
}

Reply HttpApi::BucketMetricsOf(const httplib::Request& req) {
  std::string id = PathSegment(req, kBucketIdSegment);
  BucketMetrics metrics;
  Status status = engine_.Call([&](Engine& engine) { return engine.Metrics(id, &metrics); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return OkJson(BucketMetricsJson(metrics));
}

Reply HttpApi::ListMembers(const httplib::Request& req) {
  uint64_t limit = 0;
  Status status = QueryUint(req, "limit", kMembersPageDefault, 1, kMembersPageMax, &limit);
  if (!status.ok()) return ErrorReply(FromStatus(status));
  std::string id = PathSegment(req, kBucketIdSegment);
  std::string cursor = req.get_param_value("cursor");
  MembersPage page;
  status = engine_.Call([&](Engine& engine) { return engine.Members(id, cursor, limit, &page); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return OkJson(MembersPageJson(page));
}

Reply HttpApi::GetMember(const httplib::Request& req) {
  std::string id = PathSegment(req, kBucketIdSegment);
  std::string user_id = PathSegment(req, kMemberUserSegment);
  Member member;
  Status status =
      engine_.Call([&](Engine& engine) { return engine.GetMember(id, user_id, &member); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return OkJson(MemberJson(member));
}

Reply HttpApi::AddMember(const httplib::Request& req) {
  std::string user_id;
  if (Status status = ParseAddMemberRequest(req.body, &user_id); !status.ok()) {
    return ErrorReply(FromStatus(status));
  }
  std::string id = PathSegment(req, kBucketIdSegment);
  Member member;
  Status status = engine_.Call([&](Engine& engine) {
    Status added = engine.AddMember(id, user_id);
    if (!added.ok()) return added;
    return engine.GetMember(id, user_id, &member);
  });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return JsonReply(kHttpCreated, MemberJson(member));
}

Reply HttpApi::RemoveMember(const httplib::Request& req) {
  std::string id = PathSegment(req, kBucketIdSegment);
  std::string user_id = PathSegment(req, kMemberUserSegment);
  Status status = engine_.Call([&](Engine& engine) { return engine.RemoveMember(id, user_id); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(id).Key("userId").String(user_id);
  w.Key("removed").Bool(true).EndObject();
  return OkJson(w.Take());
}

Reply HttpApi::UserMemberships(const httplib::Request& req) {
  std::string user_id = PathSegment(req, kUserSegment);
  std::vector<MembershipRecord> memberships;
  Status status =
      engine_.Call([&](Engine& engine) { return engine.UserMemberships(user_id, &memberships); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return OkJson(MembershipsJson(user_id, memberships));
}

Reply HttpApi::ReadTransitions(const httplib::Request& req) {
  uint64_t after = 0;
  uint64_t limit = 0;
  int64_t wait_ms = 0;
  Status status = QueryUint(req, "after", 0, 0, UINT64_MAX, &after);
  if (status.ok()) {
    status = QueryUint(req, "limit", kTransitionsPageDefault, 1, kTransitionsPageMax, &limit);
  }
  if (status.ok()) status = QueryWait(req, &wait_ms);
  if (!status.ok()) return ErrorReply(FromStatus(status));

  // The stream is thread-safe to read: no trip through the owner thread.
  const Engine& stream = engine_.Stream();
  std::vector<Transition> transitions;
  if (wait_ms > 0 && stream.LastTransitionSeq() <= after) {
    engine_.WaitForTransitionsAfter(after, std::chrono::milliseconds(wait_ms));
  }
  status = stream.ReadTransitions(after, limit, &transitions);
  if (!status.ok()) return ErrorReply(FromStatus(status));
  uint64_t next = transitions.empty() ? after : transitions.back().seq;
  return OkJson(TransitionsPageJson(transitions, next));
}

Reply HttpApi::AdvanceClock(const httplib::Request& req) {
  if (!config_.manual_clock) {
    return ErrorReply(
        FailedPrecondition("now", "the clock is the wall clock; start with --clock manual"));
  }
  TimeMs now_ms = 0;
  if (Status status = ParseClockRequest(req.body, &now_ms); !status.ok()) {
    return ErrorReply(FromStatus(status));
  }
  SweepResult result;
  Status status =
      engine_.Call([&](Engine& engine) { return engine.AdvanceClock(now_ms, &result); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  metrics_.RecordSweep(result.micros);
  return OkJson(SweepJson(result, now_ms));
}

Reply HttpApi::Sweep(const httplib::Request&) {
  SweepResult result;
  TimeMs now_ms = 0;
  Status status = engine_.Call([&](Engine& engine) {
    now_ms = engine.Now();
    return engine.Sweep(&result);
  });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  metrics_.RecordSweep(result.micros);
  return OkJson(SweepJson(result, now_ms));
}

Reply HttpApi::TakeSnapshot(const httplib::Request&) {
  SnapshotInfo info;
  Status status = engine_.Call([&](Engine& engine) { return engine.TakeSnapshot(&info); });
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return JsonReply(kHttpCreated, SnapshotJson(info));
}

Reply HttpApi::State(const httplib::Request&) {
  StateInfo state = engine_.Call([](Engine& engine) { return engine.State(); });
  return OkJson(StateJson(state));
}

Reply HttpApi::PrometheusMetrics(const httplib::Request&) {
  TimeMs now_ms = 0;
  EngineReport report = engine_.Call([&](Engine& engine) {
    now_ms = engine.Now();
    return EngineReport{engine.Stats(), engine.State(), engine.ListBuckets()};
  });
  return {kHttpOk, metrics_.Render(report, now_ms), "text/plain; version=0.0.4"};
}

}  // namespace bucketd::server
