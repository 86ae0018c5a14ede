#include "http_api.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <future>
#include <optional>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "bucketd/time_format.h"
#include "engine/base/check.h"
#include "json_requests.h"
#include "json_responses.h"
#include "openapi_document.h"
#include "webhook_deliverer.h"

namespace bucketd::server {
namespace {

// Id segments of the route templates (segment 0 is the empty one before the leading '/'):
// /v1/buckets/{}/members/{}, /v1/users/{}/memberships, /v1/contacts/{}.
constexpr size_t kBucketIdSegment = 3;
constexpr size_t kMemberUserSegment = 5;
constexpr size_t kUserSegment = 3;
constexpr size_t kSubscriptionSegment = 3;  // /v1/subscriptions/{}

Reply OkJson(std::string body) { return JsonReply(kHttpOk, std::move(body)); }

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

// An instant: integer milliseconds since the epoch or RFC 3339. Absent: nullopt.
Status QueryTime(const HttpRequest& req, const char* name, std::optional<TimeMs>* out) {
  out->reset();
  std::optional<std::string> param = req.Query(name);
  if (!param) return Status::Ok();
  const std::string& text = *param;
  TimeMs ms = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), ms);
  if (!text.empty() && error == std::errc() && end == text.data() + text.size()) {
    *out = ms;
  } else if (ParseRfc3339(text, &ms).ok()) {
    *out = ms;
  } else {
    return Status::InvalidArgument(name, "must be milliseconds since the epoch or RFC 3339");
  }
  return Status::Ok();
}

// A step: integer milliseconds or a duration string ("1h", "1d12h"), > 0.
Status QueryStep(const HttpRequest& req, TimeMs* out) {
  std::optional<std::string> param = req.Query("step");
  if (!param) return Status::InvalidArgument("step", "is required");
  const std::string& text = *param;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *out);
  const bool integer = !text.empty() && error == std::errc() && end == text.data() + text.size();
  if ((integer && *out > 0) || (!integer && ParseDurationString(text, out).ok())) {
    return Status::Ok();
  }
  return Status::InvalidArgument("step", "must be a duration > 0 such as \"1h\" or milliseconds");
}

bool IsNdjson(const HttpRequest& req) { return req.MediaType() == "application/x-ndjson"; }

// What an engine call yields besides its Status; the Status stays first-class so a failed
// round write replaces an OK one (EngineThread::CallAsync).
template <typename T>
struct Outcome {
  Status status;
  T value{};
};

}  // namespace

HttpApi::HttpApi(EngineThread& engine, ServerMetrics& metrics, ApiConfig config)
    : engine_(engine),
      metrics_(metrics),
      config_(std::move(config)),
      router_(metrics, {config_.auth_token, {}}) {
  AddRoutes();
}

void HttpApi::SetAuthorities(std::vector<std::string> authorities) {
  router_.SetAuthorities(std::move(authorities));
}

std::optional<Reply> HttpApi::Screen(const HttpRequest& req) const { return router_.Screen(req); }

void HttpApi::Dispatch(HttpRequestPtr req, Exchange::Poster post,
                       Exchange::Responder respond) const {
  router_.Dispatch(std::move(req), std::move(post), std::move(respond));
}

Reply HttpApi::DispatchAndWait(HttpRequest req) const {
  auto reply = std::make_shared<std::promise<Reply>>();
  std::future<Reply> future = reply->get_future();
  Dispatch(
      std::make_shared<const HttpRequest>(std::move(req)), [](Exchange::Task task) { task(); },
      [reply](Reply answer) { reply->set_value(std::move(answer)); });
  return future.get();
}

void HttpApi::RecordServed(std::string_view route, int http_status, double seconds) const {
  router_.RecordServed(route, http_status, seconds);
}

std::vector<Router::RouteEntry> HttpApi::Routes() const { return router_.Routes(); }

template <typename Work, typename Answer>
void HttpApi::OnEngine(const ExchangePtr& ex, Work work, Answer answer) {
  // Everything the request holds (its body, the parsed batch, the exchange) is moved into
  // the posted task, so it is freed on an I/O thread: freeing a 1,000-item batch cost the
  // owner thread, the one that folds every request, ~4% of its time per event.
  engine_.CallAsync(std::move(work), [ex, answer = std::move(answer)](auto result) mutable {
    Exchange& exchange = *ex;
    exchange.Post(
        [ex = std::move(ex), answer = std::move(answer), result = std::move(result)]() mutable {
          ex->Respond(answer(std::move(result)));
        });
  });
}

void HttpApi::AddRoutes() {
  using M = HttpMethod;
  using B = Router::Body;
  auto add = [this](M method, std::string_view path_template, const char* route,
                    void (HttpApi::*handler)(const HttpRequestPtr&, const ExchangePtr&),
                    B body = B::kJson) {
    router_.Add(method, path_template, route, body,
                [this, handler](const HttpRequestPtr& req, const ExchangePtr& ex) {
                  (this->*handler)(req, ex);
                });
  };
  add(M::kPost, "/v1/events", "events", &HttpApi::PostEvents, B::kJsonOrNdjson);
  add(M::kDelete, "/v1/contacts/{}", "contact", &HttpApi::DeleteContact);
  router_.Add(M::kPost, "/v1/buckets", "buckets", B::kJson,
              [this](const HttpRequestPtr& req, const ExchangePtr& ex) {
                DefineBucket(req, ex, DefineMode::kCreate);
              });
  router_.Add(M::kPut, "/v1/buckets/{}", "bucket", B::kJson,
              [this](const HttpRequestPtr& req, const ExchangePtr& ex) {
                DefineBucket(req, ex, DefineMode::kCreateOrReplace);
              });
  add(M::kGet, "/v1/buckets", "buckets", &HttpApi::ListBuckets);
  add(M::kGet, "/v1/buckets/{}", "bucket", &HttpApi::GetBucket);
  add(M::kPatch, "/v1/buckets/{}", "bucket", &HttpApi::PatchBucket);
  add(M::kDelete, "/v1/buckets/{}", "bucket", &HttpApi::DeleteBucket);
  add(M::kGet, "/v1/buckets/{}/count", "bucket_count", &HttpApi::CountMembers);
  add(M::kGet, "/v1/buckets/{}/metrics", "bucket_metrics", &HttpApi::BucketMetricsOf);
  add(M::kGet, "/v1/buckets/{}/history", "bucket_history", &HttpApi::BucketHistory);
  add(M::kGet, "/v1/buckets/{}/members", "members", &HttpApi::ListMembers);
  add(M::kPost, "/v1/buckets/{}/members", "members", &HttpApi::AddMember);
  add(M::kGet, "/v1/buckets/{}/members/{}", "member", &HttpApi::GetMember);
  add(M::kDelete, "/v1/buckets/{}/members/{}", "member", &HttpApi::RemoveMember);
  add(M::kGet, "/v1/users/{}/memberships", "memberships", &HttpApi::UserMemberships);
  add(M::kGet, "/v1/users/{}", "user", &HttpApi::GetUser);
  add(M::kPost, "/v1/buckets/preview", "bucket_preview", &HttpApi::PreviewBucket);
  add(M::kGet, "/v1/buckets/{}/explain/{}", "bucket_explain", &HttpApi::ExplainMembership);
  add(M::kGet, "/v1/transitions", "transitions", &HttpApi::ReadTransitions);
  add(M::kPost, "/v1/clock", "clock", &HttpApi::AdvanceClock);
  add(M::kPost, "/v1/sweep", "sweep", &HttpApi::Sweep);
  add(M::kPost, "/v1/snapshots", "snapshots", &HttpApi::TakeSnapshot);
  add(M::kPost, "/v1/admin/backup", "backup", &HttpApi::Backup);
  add(M::kGet, "/v1/state", "state", &HttpApi::State);
  // Public: the description of the API is in the repo; tooling fetches it without a token.
  router_.Add(
      M::kGet, "/v1/openapi.json", "openapi", B::kJson,
      [](const HttpRequestPtr&, const ExchangePtr& ex) {
        ex->Respond(OkJson(std::string(OpenApiDocument())));
      },
      Router::Access::kPublic);
  add(M::kPost, "/v1/subscriptions", "subscriptions", &HttpApi::CreateSubscription);
  add(M::kGet, "/v1/subscriptions", "subscriptions", &HttpApi::ListSubscriptions);
  add(M::kGet, "/v1/subscriptions/{}", "subscription", &HttpApi::GetSubscription);
  add(M::kDelete, "/v1/subscriptions/{}", "subscription", &HttpApi::DeleteSubscription);
  add(M::kGet, "/metrics", "metrics", &HttpApi::PrometheusMetrics);
  add(M::kGet, "/healthz", "healthz", &HttpApi::Healthz);
  add(M::kGet, "/readyz", "readyz", &HttpApi::Readyz);
}

void HttpApi::Healthz(const HttpRequestPtr&, const ExchangePtr& ex) {
  // Thread-safe: a liveness probe never waits behind the owner thread's queue.
  const Status health = engine_.Stream().Health();
  if (health.ok()) return ex->Respond(OkJson(R"({"status":"ok"})"));
  ex->Respond(JsonReply(kHttpUnavailable, HealthFailedJson(health)));
}

// Readiness is liveness plus "not stopping": the port opens only once the log has replayed,
// so an answer at all means replay is done. Separate from /healthz so that an orchestrator
// stops routing to a stopping server without also restarting it.
void HttpApi::Readyz(const HttpRequestPtr&, const ExchangePtr& ex) {
  const Status health = engine_.Stream().Health();
  if (!health.ok()) return ex->Respond(JsonReply(kHttpUnavailable, HealthFailedJson(health)));
  if (shutting_down_) {
    return ex->Respond(JsonReply(kHttpUnavailable, R"({"status":"shutting_down"})"));
  }
  ex->Respond(OkJson(R"({"status":"ready"})"));
}

void HttpApi::PostEvents(const HttpRequestPtr& req, const ExchangePtr& ex) {
  auto parsed = std::make_shared<ParsedEvents>();
  if (Status status = ParseEventsBody(req->body, IsNdjson(*req), parsed.get()); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  if (parsed->over_limit) {
    return ex->Respond(ErrorReply(
        PayloadTooLarge("a batch holds at most " + std::to_string(kBatchItemsMax) + " items")));
  }
  if (parsed->single) {
    if (!parsed->rejected.empty()) {
      return ex->Respond(ErrorReply(FromStatus(parsed->rejected[0].error)));
    }
    OnEngine(
        ex,
        [parsed](Engine& engine) {
          Outcome<IngestResult> out;
          out.status = engine.Ingest(parsed->events[0], &out.value);
          return out;
        },
        [parsed](Outcome<IngestResult> out) {
          // A stand-in (ParsedEvents) answers as a duplicate or with the server's own refusal.
          const Status& refusal = parsed->refusals[0];
          if (!refusal.ok() && !(out.status.ok() && out.value.duplicate)) {
            return ErrorReply(FromStatus(refusal));
          }
          if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
          return OkJson(IngestResultJson(out.value));
        });
    return;
  }
  OnEngine(
      ex,
      [parsed](Engine& engine) {
        Outcome<BatchResult> out;
        out.status = engine.IngestBatch(parsed->events, &out.value);
        return out;
      },
      [parsed](Outcome<BatchResult> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        RestoreRefusals(*parsed, &out.value);
        return OkJson(BatchResultJson(*parsed, out.value));
      });
}

void HttpApi::DeleteContact(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string user_id = PathSegment(*req, kUserSegment);
  const std::optional<std::string> erase = req->Query("erase");
  if (erase && *erase != "true" && *erase != "false") {
    return ex->Respond(
        ErrorReply(FromStatus(Status::InvalidArgument("erase", "must be true or false"))));
  }
  if (erase == "true") {
    // SPEC §11: the delete, then the identity removed from the data dir. Slow (a full
    // compaction of the log on the owner thread), and rare.
    OnEngine(
        ex,
        [user_id](Engine& engine) {
          Outcome<ErasureResult> out;
          out.status = engine.EraseContact(user_id, &out.value);
          return out;
        },
        [](Outcome<ErasureResult> out) {
          if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
          const ErasureResult& e = out.value;
          JsonWriter w;
          w.BeginObject()
              .Key("deleted")
              .Bool(true)
              .Key("erased")
              .Bool(true)
              .Key("pseudonym")
              .String(e.pseudonym)
              .Key("records")
              .Uint(e.records)
              .Key("transitions")
              .Uint(e.transitions)
              .Key("idempotencyKeys")
              .Uint(e.idempotency_keys)
              .EndObject();
          return OkJson(w.Take());
        });
    return;
  }
  OnEngine(
      ex, [user_id](Engine& engine) { return engine.DeleteContact(user_id); },
      [user_id](Status status) {
        if (!status.ok()) return ErrorReply(FromStatus(status));
        JsonWriter w;
        w.BeginObject().Key("userId").String(user_id).Key("deleted").Bool(true).EndObject();
        return OkJson(w.Take());
      });
}

namespace {

// The bucket as the API shows it, read after a change on the owner thread.
Reply BucketReply(int http_status, const Outcome<BucketInfo>& out) {
  if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
  return JsonReply(http_status, BucketJson(out.value));
}

}  // namespace

void HttpApi::DefineBucket(const HttpRequestPtr& req, const ExchangePtr& ex, DefineMode mode) {
  std::optional<std::string> path_id;
  if (mode == DefineMode::kCreateOrReplace) path_id = PathSegment(*req, kBucketIdSegment);
  // The engine validates the whole definition; the id is only needed to read it back.
  std::string id = path_id ? *path_id : DefinitionId(req->body);
  struct Defined {
    Status status;
    bool created = false;
    BucketInfo info;
  };
  OnEngine(
      ex,
      [req, path_id, id, mode](Engine& engine) {
        Defined out;
        std::optional<std::string_view> expected_id;
        if (path_id) expected_id = *path_id;
        out.status = engine.DefineBucket(req->body, mode, expected_id, &out.created);
        if (out.status.ok()) out.status = engine.GetBucket(id, &out.info);
        return out;
      },
      [](Defined out) {
        // A refusal of the document as a whole (malformed JSON, not an object) names the
        // body, as the events route does.
        if (out.status.code() == StatusCode::kInvalidArgument && out.status.field().empty()) {
          out.status = Status::InvalidArgument("body", out.status.message());
        }
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return JsonReply(out.created ? kHttpCreated : kHttpOk, BucketJson(out.info));
      });
}

void HttpApi::ListBuckets(const HttpRequestPtr&, const ExchangePtr& ex) {
  OnEngine(
      ex, [](Engine& engine) { return engine.ListBuckets(); },
      [](std::vector<BucketInfo> buckets) { return OkJson(BucketListJson(buckets)); });
}

void HttpApi::GetBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string id = PathSegment(*req, kBucketIdSegment);
  OnEngine(
      ex,
      [id](Engine& engine) {
        Outcome<BucketInfo> out;
        out.status = engine.GetBucket(id, &out.value);
        return out;
      },
      [](Outcome<BucketInfo> out) { return BucketReply(kHttpOk, out); });
}

void HttpApi::PatchBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  bool enabled = true;
  if (Status status = ParseEnabledPatch(req->body, &enabled); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  std::string id = PathSegment(*req, kBucketIdSegment);
  OnEngine(
      ex,
      [id, enabled](Engine& engine) {
        Outcome<BucketInfo> out;
        out.status = engine.SetBucketEnabled(id, enabled);
        if (out.status.ok()) out.status = engine.GetBucket(id, &out.value);
        return out;
      },
      [](Outcome<BucketInfo> out) { return BucketReply(kHttpOk, out); });
}

void HttpApi::DeleteBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string id = PathSegment(*req, kBucketIdSegment);
  OnEngine(
      ex, [id](Engine& engine) { return engine.DeleteBucket(id); },
      [id](Status status) {
        if (!status.ok()) return ErrorReply(FromStatus(status));
        JsonWriter w;
        w.BeginObject().Key("id").String(id).Key("deleted").Bool(true).EndObject();
        return OkJson(w.Take());
      });
}

void HttpApi::CountMembers(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string id = PathSegment(*req, kBucketIdSegment);
  OnEngine(
      ex,
      [id](Engine& engine) {
        Outcome<uint64_t> out;
        out.status = engine.Count(id, &out.value);
        return out;
      },
      [](Outcome<uint64_t> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        JsonWriter w;
        w.BeginObject().Key("count").Uint(out.value).EndObject();
        return OkJson(w.Take());
      });
}

void HttpApi::BucketMetricsOf(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string id = PathSegment(*req, kBucketIdSegment);
  OnEngine(
      ex,
      [id](Engine& engine) {
        Outcome<BucketMetrics> out;
        out.status = engine.Metrics(id, &out.value);
        return out;
      },
      [](Outcome<BucketMetrics> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return OkJson(BucketMetricsJson(out.value));
      });
}

void HttpApi::BucketHistory(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::optional<TimeMs> from;
  std::optional<TimeMs> to;
  TimeMs step_ms = 0;
  Status status = QueryTime(*req, "from", &from);
  if (status.ok() && !from) status = Status::InvalidArgument("from", "is required");
  if (status.ok()) status = QueryTime(*req, "to", &to);
  if (status.ok()) status = QueryStep(*req, &step_ms);
  if (!status.ok()) return ex->Respond(ErrorReply(FromStatus(status)));
  std::string id = PathSegment(*req, kBucketIdSegment);
  // The owner thread reads the active members; the stream is scanned here, on the I/O
  // thread, once the round is durable: a long history never holds up ingest.
  OnEngine(
      ex,
      [id](Engine& engine) {
        Outcome<HistoryBase> out;
        out.status = engine.CaptureHistory(id, &out.value);
        return out;
      },
      [this, from, to, step_ms](Outcome<HistoryBase> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        const HistoryQuery query{*from, to.value_or(out.value.now), step_ms};
        std::vector<HistoryStep> steps;
        if (Status s = engine_.Stream().ReadHistory(out.value, query, &steps); !s.ok()) {
          return ErrorReply(FromStatus(s));
        }
        return OkJson(HistoryJson(out.value.bucket_id, query, steps));
      });
}

void HttpApi::ListMembers(const HttpRequestPtr& req, const ExchangePtr& ex) {
  uint64_t limit = 0;
  Status status = QueryUint(*req, "limit", kMembersPageDefault, 1, kMembersPageMax, &limit);
  if (!status.ok()) return ex->Respond(ErrorReply(FromStatus(status)));
  std::string id = PathSegment(*req, kBucketIdSegment);
  std::string cursor = req->Query("cursor").value_or("");
  const std::string member_status = req->Query("status").value_or("active");
  if (member_status == "left") {
    OnEngine(
        ex,
        [id, cursor, limit](Engine& engine) {
          Outcome<PastMembersPage> out;
          out.status = engine.PastMembers(id, cursor, limit, &out.value);
          return out;
        },
        [](Outcome<PastMembersPage> out) {
          if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
          return OkJson(PastMembersPageJson(out.value));
        });
    return;
  }
  if (member_status != "active") {
    return ex->Respond(ErrorReply(BadRequest("status", "must be active or left")));
  }
  OnEngine(
      ex,
      [id, cursor, limit](Engine& engine) {
        Outcome<MembersPage> out;
        out.status = engine.Members(id, cursor, limit, &out.value);
        return out;
      },
      [](Outcome<MembersPage> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return OkJson(MembersPageJson(out.value));
      });
}

void HttpApi::GetMember(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string id = PathSegment(*req, kBucketIdSegment);
  std::string user_id = PathSegment(*req, kMemberUserSegment);
  OnEngine(
      ex,
      [id, user_id](Engine& engine) {
        Outcome<Member> out;
        out.status = engine.GetMember(id, user_id, &out.value);
        return out;
      },
      [](Outcome<Member> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return OkJson(MemberJson(out.value));
      });
}

void HttpApi::AddMember(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string user_id;
  if (Status status = ParseAddMemberRequest(req->body, &user_id); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  std::string id = PathSegment(*req, kBucketIdSegment);
  OnEngine(
      ex,
      [id, user_id](Engine& engine) {
        Outcome<Member> out;
        out.status = engine.AddMember(id, user_id);
        if (out.status.ok()) out.status = engine.GetMember(id, user_id, &out.value);
        return out;
      },
      [](Outcome<Member> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return JsonReply(kHttpCreated, MemberJson(out.value));
      });
}

void HttpApi::RemoveMember(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string id = PathSegment(*req, kBucketIdSegment);
  std::string user_id = PathSegment(*req, kMemberUserSegment);
  OnEngine(
      ex, [id, user_id](Engine& engine) { return engine.RemoveMember(id, user_id); },
      [id, user_id](Status status) {
        if (!status.ok()) return ErrorReply(FromStatus(status));
        JsonWriter w;
        w.BeginObject().Key("bucketId").String(id).Key("userId").String(user_id);
        w.Key("removed").Bool(true).EndObject();
        return OkJson(w.Take());
      });
}

void HttpApi::UserMemberships(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string user_id = PathSegment(*req, kUserSegment);
  OnEngine(
      ex,
      [user_id](Engine& engine) {
        Outcome<std::vector<MembershipRecord>> out;
        out.status = engine.UserMemberships(user_id, &out.value);
        return out;
      },
      [user_id](Outcome<std::vector<MembershipRecord>> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return OkJson(MembershipsJson(user_id, out.value));
      });
}

void HttpApi::GetUser(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string user_id = PathSegment(*req, kUserSegment);
  OnEngine(
      ex,
      [user_id](Engine& engine) {
        Outcome<UserInfo> out;
        out.status = engine.GetUser(user_id, &out.value);
        return out;
      },
      [](Outcome<UserInfo> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return OkJson(UserJson(out.value));
      });
}

void HttpApi::PreviewBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  // On the owner thread like every read: a pass over every contact (docs/design.md,
  // "Preview"). Nothing is logged.
  OnEngine(
      ex,
      [req](Engine& engine) {
        Outcome<PreviewResult> out;
        out.status = engine.PreviewBucket(req->body, &out.value);
        return out;
      },
      [](Outcome<PreviewResult> out) {
        // As for a definition: a refusal of the document as a whole names the body.
        if (out.status.code() == StatusCode::kInvalidArgument && out.status.field().empty()) {
          out.status = Status::InvalidArgument("body", out.status.message());
        }
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        spdlog::debug("event=bucket_preview count={} reread_users={} micros={}", out.value.count,
                      out.value.history_reread_users, out.value.micros);
        return OkJson(PreviewJson(out.value));
      });
}

void HttpApi::ExplainMembership(const HttpRequestPtr& req, const ExchangePtr& ex) {
  // Read-only, on the owner thread: nothing is logged (docs/design.md, "Explain").
  std::string id = PathSegment(*req, kBucketIdSegment);
  std::string user_id = PathSegment(*req, kMemberUserSegment);
  OnEngine(
      ex,
      [id, user_id](Engine& engine) {
        Outcome<ExplainResult> out;
        out.status = engine.ExplainMembership(id, user_id, &out.value);
        return out;
      },
      [](Outcome<ExplainResult> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return OkJson(ExplainJson(out.value));
      });
}

Reply HttpApi::TransitionsReply(const TransitionsPage& page, const Status& status) const {
  const std::string& stream_id = engine_.Stream().StreamId();
  if (status.code() == StatusCode::kFailedPrecondition && status.field() == "after") {
    return JsonReply(kHttpConflict, CursorAheadJson(status, page.last_seq, stream_id));
  }
  if (!status.ok()) return ErrorReply(FromStatus(status));
  return OkJson(TransitionsPageJson(page, stream_id));
}

void HttpApi::ReadTransitions(const HttpRequestPtr& req, const ExchangePtr& ex) {
  TransitionsQuery query;
  int64_t wait_ms = 0;
  Status status = QueryUint(*req, "after", 0, 0, UINT64_MAX, &query.after);
  if (status.ok()) {
    status =
        QueryUint(*req, "limit", kTransitionsPageDefault, 1, kTransitionsPageMax, &query.limit);
  }
  if (status.ok()) status = QueryWait(*req, &wait_ms);
  if (status.ok()) status = QueryTransitionFilter(*req, &query.filter);
  if (!status.ok()) return ex->Respond(ErrorReply(FromStatus(status)));
  PollTransitions(ex, std::move(query),
                  std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms));
}

void HttpApi::PollTransitions(const ExchangePtr& ex, TransitionsQuery query,
                              std::chrono::steady_clock::time_point deadline) const {
  // The stream is thread-safe to read: no trip through the owner thread.
  TransitionsPage page;
  const Status status =
      engine_.Stream().ReadTransitions(query.after, query.limit, query.filter, &page);
  const auto now = std::chrono::steady_clock::now();
  // Answer with what matched; or, having looked at everything there is and found nothing,
  // wait for the next seq and look again from the advanced cursor. A long-poll parks a
  // callback, not a thread, and only a matching transition (or the deadline) answers it.
  const bool caught_up = status.ok() && page.transitions.empty() && page.next == page.last_seq;
  if (!caught_up || now >= deadline || engine_.StreamClosed()) {
    return ex->Respond(TransitionsReply(page, status));
  }
  query.after = page.next;
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
  engine_.WaitForTransitionsAsync(query.after, wait, [this, ex, query, deadline] {
    ex->Post([this, ex, query, deadline] { PollTransitions(ex, query, deadline); });
  });
}

void HttpApi::AdvanceClock(const HttpRequestPtr& req, const ExchangePtr& ex) {
  TimeMs now_ms = 0;
  if (Status status = ParseClockMove(config_.manual_clock, req->body, &now_ms); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  OnEngine(
      ex,
      [now_ms](Engine& engine) {
        Outcome<SweepResult> out;
        out.status = engine.AdvanceClock(now_ms, &out.value);
        return out;
      },
      [this, now_ms](Outcome<SweepResult> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        // Retries wait on the engine's clock: one that just came due goes now.
        if (webhooks_ != nullptr) webhooks_->Kick();
        metrics_.RecordSweep(out.value.micros);
        return OkJson(SweepJson(out.value, now_ms));
      });
}

void HttpApi::Sweep(const HttpRequestPtr&, const ExchangePtr& ex) {
  struct Swept {
    Status status;
    SweepResult result;
    TimeMs now_ms = 0;
  };
  OnEngine(
      ex,
      [](Engine& engine) {
        Swept out;
        out.now_ms = engine.Now();
        out.status = engine.Sweep(&out.result);
        return out;
      },
      [this](Swept out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        metrics_.RecordSweep(out.result.micros);
        return OkJson(SweepJson(out.result, out.now_ms));
      });
}

void HttpApi::TakeSnapshot(const HttpRequestPtr&, const ExchangePtr& ex) {
  OnEngine(
      ex,
      [](Engine& engine) {
        Outcome<SnapshotInfo> out;
        out.status = engine.TakeSnapshot(&out.value);
        return out;
      },
      [](Outcome<SnapshotInfo> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        return JsonReply(kHttpCreated, SnapshotJson(out.value));
      });
}

namespace {

// The backup's directory name: the wall-clock instant in ISO 8601's basic form, which sorts
// by time and holds no ':' (a host separator to scp and rsync).
std::string BackupName(TimeMs at) {
  std::string name = "backup-";
  for (char c : FormatRfc3339(at)) {
    if (c != '-' && c != ':') name += c;
  }
  return name;
}

}  // namespace

void HttpApi::Backup(const HttpRequestPtr&, const ExchangePtr& ex) {
  if (config_.backup_dir.empty()) {
    return ex->Respond(ErrorReply(FailedPrecondition(
        "--backup-dir", "backups are off: start bucketd with --backup-dir to enable them")));
  }
  OnEngine(
      ex,
      [dir = config_.backup_dir](Engine& engine) {
        // Read on the owner thread, so backups taken one after another get ascending names.
        const TimeMs now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
        Outcome<BackupInfo> out;
        out.status = engine.Backup(dir + "/" + BackupName(now), &out.value);
        return out;
      },
      [](Outcome<BackupInfo> out) {
        if (!out.status.ok()) {
          spdlog::error("event=backup_failed error=\"{}\"", out.status.ToString());
          return ErrorReply(FromStatus(out.status));
        }
        spdlog::info(
            "event=backup path={} log_seq={} snapshot_log_seq={} micros={}", out.value.path,
            out.value.log_seq,
            out.value.snapshot_log_seq ? std::to_string(*out.value.snapshot_log_seq) : "none",
            out.value.micros);
        return JsonReply(kHttpCreated, BackupJson(out.value));
      });
}

void HttpApi::State(const HttpRequestPtr&, const ExchangePtr& ex) {
  OnEngine(
      ex, [](Engine& engine) { return engine.State(); },
      [](StateInfo state) { return OkJson(StateJson(state)); });
}

void HttpApi::PrometheusMetrics(const HttpRequestPtr&, const ExchangePtr& ex) {
  struct Report {
    EngineReport report;
    TimeMs now_ms = 0;
    std::vector<SubscriptionInfo> subscriptions;
  };
  OnEngine(
      ex,
      [](Engine& engine) {
        Report out;
        out.now_ms = engine.Now();
        out.report = EngineReport{engine.Stats(), engine.ListBuckets()};
        out.subscriptions = engine.ListSubscriptions();
        return out;
      },
      [this](Report out) -> Reply {
        std::string text = metrics_.Render(out.report, out.now_ms);
        if (webhooks_ != nullptr) {
          text += webhooks_->RenderMetrics(out.subscriptions, out.report.stats.transition_seq);
        }
        return {kHttpOk, std::move(text), std::string(kPrometheusContentType)};
      });
}

namespace {

Reply NoWebhooks() {
  return ErrorReply(
      FromStatus(Status::FailedPrecondition("", "webhook delivery is not running on this server")));
}

}  // namespace

void HttpApi::CreateSubscription(const HttpRequestPtr& req, const ExchangePtr& ex) {
  if (webhooks_ == nullptr) return ex->Respond(NoWebhooks());
  SubscriptionSpec spec;
  Status status = ParseSubscriptionRequest(req->body, &spec);
  // Refused before the engine sees it: a host outside the policy is never logged.
  if (status.ok()) status = webhooks_->policy().CheckUrl(spec.url);
  if (!status.ok()) return ex->Respond(ErrorReply(FromStatus(status)));
  OnEngine(
      ex,
      [spec](Engine& engine) {
        Outcome<SubscriptionView> out;
        out.status = engine.CreateSubscription(spec, &out.value.info);
        out.value.last_seq = engine.LastTransitionSeq();
        out.value.with_secret = true;
        return out;
      },
      [this](Outcome<SubscriptionView> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        webhooks_->Kick();
        return JsonReply(kHttpCreated, SubscriptionJson(out.value));
      });
}

void HttpApi::ListSubscriptions(const HttpRequestPtr&, const ExchangePtr& ex) {
  if (webhooks_ == nullptr) return ex->Respond(NoWebhooks());
  OnEngine(
      ex, [](Engine& engine) { return engine.ListSubscriptions(); },
      [this](std::vector<SubscriptionInfo> subs) {
        const uint64_t last_seq = engine_.Stream().LastTransitionSeq();
        std::vector<SubscriptionView> views;
        for (SubscriptionInfo& info : subs) {
          std::optional<DeliveryStatus> delivery = webhooks_->StatusOf(info.id);
          views.push_back({std::move(info), std::move(delivery), last_seq, false});
        }
        return OkJson(SubscriptionListJson(views));
      });
}

void HttpApi::GetSubscription(const HttpRequestPtr& req, const ExchangePtr& ex) {
  if (webhooks_ == nullptr) return ex->Respond(NoWebhooks());
  std::string id = PathSegment(*req, kSubscriptionSegment);
  OnEngine(
      ex,
      [id](Engine& engine) {
        Outcome<SubscriptionInfo> out;
        out.status = engine.GetSubscription(id, &out.value);
        return out;
      },
      [this](Outcome<SubscriptionInfo> out) {
        if (!out.status.ok()) return ErrorReply(FromStatus(out.status));
        SubscriptionView view{out.value, webhooks_->StatusOf(out.value.id),
                              engine_.Stream().LastTransitionSeq(), false};
        return OkJson(SubscriptionJson(view));
      });
}

void HttpApi::DeleteSubscription(const HttpRequestPtr& req, const ExchangePtr& ex) {
  if (webhooks_ == nullptr) return ex->Respond(NoWebhooks());
  std::string id = PathSegment(*req, kSubscriptionSegment);
  OnEngine(
      ex, [id](Engine& engine) { return engine.DeleteSubscription(id); },
      [this, id](Status status) {
        if (!status.ok()) return ErrorReply(FromStatus(status));
        webhooks_->Kick();
        JsonWriter w;
        w.BeginObject().Key("id").String(id).Key("deleted").Bool(true).EndObject();
        return OkJson(w.Take());
      });
}

}  // namespace bucketd::server
