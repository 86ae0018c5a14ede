#include "cluster_api.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "bucketd/engine.h"
#include "bucketd/limits.h"
#include "engine/base/json_writer.h"
#include "engine/cluster/partition.h"
#include "engine/cluster/record_json.h"
#include "http_errors.h"
#include "json_requests.h"
#include "json_responses.h"

namespace bucketd::server {
namespace {

constexpr size_t kBucketSegment = 3;      // /v1/buckets/{id}
constexpr size_t kUserSegment = 3;        // /v1/users/{id}
constexpr size_t kMemberUserSegment = 5;  // /v1/buckets/{id}/members/{userId}

// A publish JetStream did not acknowledge is tried again with the same message id (stored
// once) this many times before the request fails.
constexpr int kPublishAttempts = 3;

TimeMs Now() { return cluster::WallClockNow(); }

Status PublishWithRetry(cluster::PartitionStream& stream, uint32_t partition, const Record& r,
                        const cluster::PublishOptions& options, bool* duplicate) {
  Status s;
  for (int attempt = 0; attempt < kPublishAttempts; ++attempt) {
    uint64_t seq = 0;
    s = stream.Publish(partition, r, options, &seq, duplicate);
    if (s.code() != StatusCode::kIoError) return s;
  }
  return s;
}

// What the routes answer when the input stream cannot take an input: 503, with how much of
// the request was stored (a retry with the same idempotency keys stores the rest once).
Reply PublishFailed(const Status& status, size_t stored, size_t total) {
  HttpError error = FromStatus(status);
  error.message = "stored " + std::to_string(stored) + " of " + std::to_string(total) +
                  " inputs; " + status.ToString();
  return ErrorReply(error);
}

Reply PublishFailed(const Status& status, const std::vector<cluster::BatchAck>& acks) {
  const auto stored = std::count_if(acks.begin(), acks.end(),
                                    [](const cluster::BatchAck& a) { return a.status.ok(); });
  return PublishFailed(status, static_cast<size_t>(stored), acks.size());
}

// A query to the partitions' owners: {"op", "bucketId", "userId", "cursor", "limit"}, and
// a preview's definition (canonical JSON) in "definition".
std::string QueryJson(std::string_view op, std::string_view bucket_id = "",
                      std::string_view user_id = "", std::string_view cursor = "",
                      uint64_t limit = 0, std::string_view definition = "") {
  JsonWriter w;
  w.BeginObject().Key("op").String(op).Key("bucketId").String(bucket_id);
  w.Key("userId").String(user_id).Key("cursor").String(cursor).Key("limit").Uint(limit);
  if (!definition.empty()) w.Key("definition").Raw(definition);
  w.EndObject();
  return w.Take();
}

std::string Envelope(int http_status, std::string_view body) {
  JsonWriter w;
  w.BeginObject().Key("status").Int(http_status).Key("body").Raw(body).EndObject();
  return w.Take();
}

bool ReadEnvelope(std::string_view reply, int* status, std::string* body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(reply.data(), reply.size()).get(doc) != simdjson::SUCCESS) return false;
  int64_t code = 0;
  simdjson::dom::element inner;
  if (doc["status"].get_int64().get(code) != simdjson::SUCCESS ||
      doc["body"].get(inner) != simdjson::SUCCESS) {
    return false;
  }
  *status = static_cast<int>(code);
  *body = simdjson::minify(inner);
  return true;
}

// A number field of an owner's answer (a body this server's own code wrote): 0 if absent.
template <typename T>
T NumberField(const simdjson::dom::element& doc, const char* key) {
  T value{};
  if (doc[key].get(value) != simdjson::SUCCESS) return T{};
  return value;
}

uint64_t JsonUint(std::string_view json, const char* key) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) return 0;
  return NumberField<uint64_t>(doc, key);
}

// Appends a members page's members (userId, the member's JSON); true if the page says more
// follow.
bool ReadMembersPage(std::string_view json,
                     std::vector<std::pair<std::string, std::string>>* members) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS) return false;
  simdjson::dom::array list;
  if (doc["members"].get_array().get(list) == simdjson::SUCCESS) {
    for (simdjson::dom::element m : list) {
      std::string_view user;
      if (m["userId"].get_string().get(user) != simdjson::SUCCESS) continue;
      members->emplace_back(std::string(user), simdjson::minify(m));
    }
  }
  return doc["cursor"].is_string();
}

// One bucket as every partition's owner described it (the same definition, each with its
// partition's counts): the first description with the counts summed.
std::string SumBucketCounts(const std::vector<std::string>& descriptions) {
  uint64_t active = 0, entered = 0, left = 0;
  simdjson::dom::parser parser;
  for (const std::string& json : descriptions) {
    simdjson::dom::element doc;
    if (parser.parse(json).get(doc) != simdjson::SUCCESS) continue;
    uint64_t n = 0;
    if (doc["counts"]["active"].get_uint64().get(n) == simdjson::SUCCESS) active += n;
    if (doc["counts"]["entered"].get_uint64().get(n) == simdjson::SUCCESS) entered += n;
    if (doc["counts"]["left"].get_uint64().get(n) == simdjson::SUCCESS) left += n;
  }
  simdjson::dom::element first;
  simdjson::dom::object fields;
  if (parser.parse(descriptions.front()).get(first) != simdjson::SUCCESS ||
      first.get_object().get(fields) != simdjson::SUCCESS) {
    return descriptions.front();
  }
  JsonWriter w;
  w.BeginObject();
  for (const auto field : fields) {
    w.Key(field.key);
    if (field.key == "counts") {
      w.BeginObject().Key("active").Uint(active).Key("entered").Uint(entered);
      w.Key("left").Uint(left).EndObject();
    } else {
      w.Raw(simdjson::minify(field.value));
    }
  }
  w.EndObject();
  return w.Take();
}

Reply PassThrough(const std::map<uint32_t, std::string>& bodies) {
  return JsonReply(kHttpOk, bodies.begin()->second);
}

}  // namespace

std::string AnswerPartitionQuery(uint32_t, const FoldReader& reader, TimeMs now,
                                 std::string_view request) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view op, bucket_id, user_id, cursor;
  uint64_t limit = 0;
  if (parser.parse(request.data(), request.size()).get(doc) != simdjson::SUCCESS ||
      doc["op"].get_string().get(op) != simdjson::SUCCESS) {
    return Envelope(kHttpBadRequest, ErrorBody(BadRequest("op", "not a query")));
  }
  // The asking node writes every field (QueryJson); a missing one reads as empty.
  if (doc["bucketId"].get_string().get(bucket_id) != simdjson::SUCCESS) bucket_id = {};
  if (doc["userId"].get_string().get(user_id) != simdjson::SUCCESS) user_id = {};
  if (doc["cursor"].get_string().get(cursor) != simdjson::SUCCESS) cursor = {};
  if (doc["limit"].get_uint64().get(limit) != simdjson::SUCCESS) limit = 0;
  auto answer = [](const Status& s, const std::function<std::string()>& body) {
    if (!s.ok()) return Envelope(FromStatus(s).http_status, ErrorBody(FromStatus(s)));
    return Envelope(kHttpOk, body());
  };
  if (op == "count") {
    uint64_t count = 0;
    const Status s = reader.Count(bucket_id, &count);
    return answer(s, [&] {
      JsonWriter w;
      w.BeginObject().Key("count").Uint(count).EndObject();
      return w.Take();
    });
  }
  if (op == "metrics") {
    BucketMetrics metrics;
    const Status s = reader.Metrics(bucket_id, &metrics);
    return answer(s, [&] { return BucketMetricsJson(metrics); });
  }
  if (op == "members") {
    MembersPage page;
    const Status s = reader.Members(bucket_id, cursor, limit, &page);
    return answer(s, [&] { return MembersPageJson(page); });
  }
  if (op == "member") {
    Member member;
    const Status s = reader.GetMember(bucket_id, user_id, &member);
    return answer(s, [&] { return MemberJson(member); });
  }
  if (op == "memberships") {
    std::vector<MembershipRecord> memberships;
    const Status s = reader.UserMemberships(user_id, &memberships);
    return answer(s, [&] { return MembershipsJson(user_id, memberships); });
  }
  if (op == "user") {
    UserInfo user;
    const Status s = reader.GetUser(user_id, &user);
    return answer(s, [&] { return UserJson(user); });
  }
  if (op == "explain") {
    ExplainResult explain;
    const Status s = reader.Explain(bucket_id, user_id, now, &explain);
    return answer(s, [&] { return ExplainJson(explain); });
  }
  if (op == "preview") {
    simdjson::dom::element definition;
    if (doc["definition"].get(definition) != simdjson::SUCCESS) {
      return Envelope(kHttpBadRequest, ErrorBody(BadRequest("definition", "missing")));
    }
    PreviewResult preview;
    const Status s = reader.Preview(simdjson::minify(definition), now, &preview);
    return answer(s, [&] { return PreviewJson(preview); });
  }
  if (op == "state") return Envelope(kHttpOk, StateJson(reader.State(now)));
  if (op == "buckets") return Envelope(kHttpOk, BucketListJson(reader.ListBuckets()));
  if (op == "bucket") {
    BucketInfo info;
    const Status s = reader.GetBucket(bucket_id, &info);
    return answer(s, [&] { return BucketJson(info); });
  }
  return Envelope(kHttpBadRequest, ErrorBody(BadRequest("op", "unknown query")));
}

// --- NodeRunner ---

NodeRunner::NodeRunner(std::unique_ptr<cluster::ClusterNode> node, std::chrono::milliseconds every)
    : node_(std::move(node)), every_(every) {
  status_.node_id = node_->node_id();
  status_.last_round = Status::IoError("no round yet");
  node_->SetQueryHandler(&AnswerPartitionQuery, [this] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queries_arrived_ = true;
    }
    wake_.notify_all();
  });
}

NodeRunner::~NodeRunner() {
  Stop();
  // Before mu_ and wake_ go: a query arriving until the node's subscriptions are drained
  // calls back into them.
  node_.reset();
}

void NodeRunner::Start() {
  thread_ = std::thread([this] { Run(); });
}

void NodeRunner::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (Status s = node_->Leave(); !s.ok()) {
    spdlog::warn("event=cluster_leave_failed error=\"{}\"", s.ToString());
  }
}

void NodeRunner::Run() {
  for (;;) {
    const Status round = node_->Tick();
    if (!round.ok()) spdlog::warn("event=cluster_round_failed error=\"{}\"", round.ToString());
    Publish(round);
    // Between rounds, queries are answered as they arrive.
    const auto next_round = std::chrono::steady_clock::now() + every_;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_until(lock, next_round, [this] { return stopping_ || queries_arrived_; });
      if (stopping_) return;
      if (!queries_arrived_) break;  // time for the next round
      queries_arrived_ = false;
      lock.unlock();
      node_->ServeQueries();
    }
  }
}

void NodeRunner::Publish(const Status& round) {
  NodeStatus s;
  s.node_id = node_->node_id();
  s.cluster = node_->input()->stream_name();
  s.partitions = node_->input()->partitions();
  s.live_nodes = node_->live_nodes();
  for (const uint32_t p : node_->owned()) {
    const cluster::PartitionFold* fold = node_->partition(p);
    s.owned.push_back(
        {p, fold->next_seq(), fold->stream_last_seq(), fold->refused(), fold->undecodable(),
         fold->fold().state().transition_seq, fold->control_seq(), fold->control_copies_skipped(),
         fold->duplicates_skipped(), fold->ids_remembered(), fold->replica_mismatches()});
  }
  s.stats = node_->stats();
  s.last_snapshot_refusal = node_->last_snapshot_refusal();
  s.pending = node_->pending();
  std::lock_guard<std::mutex> lock(mu_);
  s.rounds = status_.rounds + 1;
  s.last_round = round;
  s.last_round_at = Now();
  status_ = std::move(s);
}

NodeStatus NodeRunner::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

// --- ClusterApi ---

ClusterApi::ClusterApi(const NodeRunner& node, InputRouter& router, ControlWriter& control,
                       QueryRouter& queries, TransitionsFeed& transitions, ServerMetrics& metrics,
                       ClusterApiConfig config)
    : node_(node),
      router_(router),
      control_(control),
      queries_(queries),
      transitions_(transitions),
      metrics_(metrics),
      config_(std::move(config)),
      routes_(metrics, AccessConfig{config_.auth_token, {}}) {
  AddRoutes();
}

void ClusterApi::SetAuthorities(std::vector<std::string> authorities) {
  routes_.SetAuthorities(std::move(authorities));
}

std::optional<Reply> ClusterApi::Screen(const HttpRequest& req) const {
  return routes_.Screen(req);
}

void ClusterApi::Dispatch(HttpRequestPtr req, Exchange::Poster post,
                          Exchange::Responder respond) const {
  routes_.Dispatch(std::move(req), std::move(post), std::move(respond));
}

void ClusterApi::RecordServed(std::string_view route, int http_status, double seconds) const {
  routes_.RecordServed(route, http_status, seconds);
}

void ClusterApi::AddRoutes() {
  using M = HttpMethod;
  using B = Router::Body;
  auto add = [this](M method, std::string_view path_template, const char* route,
                    void (ClusterApi::*handler)(const HttpRequestPtr&, const ExchangePtr&),
                    B body = B::kJson) {
    routes_.Add(method, path_template, route, body,
                [this, handler](const HttpRequestPtr& req, const ExchangePtr& ex) {
                  (this->*handler)(req, ex);
                });
  };
  add(M::kPost, "/v1/events", "events", &ClusterApi::PostEvents, B::kJsonOrNdjson);
  routes_.Add(M::kPost, "/v1/buckets", "buckets", B::kJson,
              [this](const HttpRequestPtr& req, const ExchangePtr& ex) {
                DefineBucket(req, ex, /*id_from_path=*/false);
              });
  routes_.Add(M::kPut, "/v1/buckets/{}", "bucket", B::kJson,
              [this](const HttpRequestPtr& req, const ExchangePtr& ex) {
                DefineBucket(req, ex, /*id_from_path=*/true);
              });
  add(M::kPatch, "/v1/buckets/{}", "bucket", &ClusterApi::PatchBucket);
  add(M::kDelete, "/v1/buckets/{}", "bucket", &ClusterApi::DeleteBucket);
  add(M::kGet, "/v1/cluster", "cluster", &ClusterApi::ClusterState);
  add(M::kGet, "/v1/buckets/{}/count", "bucket_count", &ClusterApi::CountMembers);
  add(M::kGet, "/v1/buckets/{}/metrics", "bucket_metrics", &ClusterApi::BucketMetricsOf);
  add(M::kGet, "/v1/buckets/{}/members", "members", &ClusterApi::ListMembers);
  add(M::kGet, "/v1/buckets/{}/members/{}", "member", &ClusterApi::GetMember);
  add(M::kGet, "/v1/users/{}/memberships", "memberships", &ClusterApi::UserMemberships);
  add(M::kGet, "/v1/users/{}", "user", &ClusterApi::GetUser);
  add(M::kGet, "/v1/state", "state", &ClusterApi::State);
  add(M::kGet, "/v1/buckets", "buckets", &ClusterApi::ListBuckets);
  add(M::kGet, "/v1/buckets/{}", "bucket", &ClusterApi::GetBucket);
  add(M::kDelete, "/v1/contacts/{}", "contact", &ClusterApi::DeleteContact);
  add(M::kPost, "/v1/buckets/{}/members", "members", &ClusterApi::AddMember);
  add(M::kDelete, "/v1/buckets/{}/members/{}", "member", &ClusterApi::RemoveMember);
  add(M::kPost, "/v1/clock", "clock", &ClusterApi::AdvanceClock);
  add(M::kGet, "/v1/transitions", "transitions", &ClusterApi::ReadTransitions);
  add(M::kGet, "/metrics", "metrics", &ClusterApi::PrometheusMetrics);
  add(M::kGet, "/healthz", "healthz", &ClusterApi::Healthz);
  add(M::kGet, "/readyz", "readyz", &ClusterApi::Readyz);
  add(M::kPost, "/v1/buckets/preview", "bucket_preview", &ClusterApi::PreviewBucket);
  add(M::kGet, "/v1/buckets/{}/explain/{}", "bucket_explain", &ClusterApi::ExplainMembership);
  // The single engine's other routes: a cluster node answers 501 with what to use instead
  // (docs/cluster.md, "Routes a cluster node does not serve").
  const std::string owners =
      "not served by a cluster node (docs/cluster.md, \"Routes a cluster node does not "
      "serve\"): ";
  const std::string subscriptions =
      owners +
      "in cluster mode the output stream is the delivery channel: read it with a JetStream "
      "consumer on bucketd.<cluster>.out.> or with GET /v1/transitions on any node";
  for (const auto& [method, path, route, why] :
       std::vector<std::tuple<M, const char*, const char*, std::string>>{
           {M::kPost, "/v1/sweep", "sweep", owners + "each partition's owner sweeps it"},
           {M::kPost, "/v1/snapshots", "snapshots",
            owners + "each partition's owner stores its snapshots (--snapshot-every-records)"},
           {M::kPost, "/v1/subscriptions", "subscriptions", subscriptions},
           {M::kGet, "/v1/subscriptions", "subscriptions", subscriptions},
           {M::kGet, "/v1/subscriptions/{}", "subscription", subscriptions},
           {M::kDelete, "/v1/subscriptions/{}", "subscription", subscriptions},
           {M::kGet, "/v1/buckets/{}/history", "bucket_history",
            owners + "a bucket's history is computed from one log, which a cluster does not have"},
           {M::kPost, "/v1/admin/backup", "backup",
            owners + "the log of record is in JetStream: back up its streams"}}) {
    // A copy, not the binding: clang refuses to capture a structured binding before C++20's
    // P1091 (the fuzz tree builds with clang).
    routes_.Add(method, path, route, B::kJson,
                [reason = why](const HttpRequestPtr&, const ExchangePtr& ex) {
                  ex->Respond(ErrorReply(NotImplemented(reason)));
                });
  }
}

void ClusterApi::ReadTransitions(const HttpRequestPtr& req, const ExchangePtr& ex) {
  uint64_t after = 0;
  uint64_t limit = 0;
  int64_t wait_ms = 0;
  Status status = QueryUint(*req, "after", 0, 0, UINT64_MAX, &after);
  if (status.ok()) {
    status = QueryUint(*req, "limit", kTransitionsPageDefault, 1, kTransitionsPageMax, &limit);
  }
  if (status.ok()) status = QueryWait(*req, &wait_ms);
  TransitionFilter filter;
  if (status.ok()) status = QueryTransitionFilter(*req, &filter);
  if (!status.ok()) return ex->Respond(ErrorReply(FromStatus(status)));
  if (shutting_down_) wait_ms = 0;
  transitions_.Read(after, limit, std::move(filter), std::chrono::milliseconds(wait_ms), ex);
}

std::vector<uint32_t> ClusterApi::AllPartitions() const {
  std::vector<uint32_t> all(config_.partitions);
  for (uint32_t p = 0; p < config_.partitions; ++p) all[p] = p;
  return all;
}

void ClusterApi::Ask(const ExchangePtr& ex, std::string request, std::vector<uint32_t> partitions,
                     Merge merge) {
  queries_.Submit([ex, request = std::move(request), partitions = std::move(partitions),
                   merge = std::move(merge),
                   timeout = config_.query_timeout_ms](cluster::QueryClient& client) {
    std::map<uint32_t, std::string> replies;
    if (Status s = client.Ask(partitions, request, timeout, &replies); !s.ok()) {
      return ex->Respond(ErrorReply(FromStatus(s)));
    }
    std::map<uint32_t, std::string> bodies;
    for (const auto& [p, reply] : replies) {
      int status = 0;
      std::string body;
      if (!ReadEnvelope(reply, &status, &body)) {
        return ex->Fail("an undecodable answer from the owner of partition " + std::to_string(p));
      }
      if (status != kHttpOk) return ex->Respond(JsonReply(status, std::move(body)));
      bodies.emplace(p, std::move(body));
    }
    ex->Post([ex, merge, bodies = std::move(bodies)] { ex->Respond(merge(bodies)); });
  });
}

void ClusterApi::CountMembers(const HttpRequestPtr& req, const ExchangePtr& ex) {
  Ask(ex, QueryJson("count", PathSegment(*req, kBucketSegment)), AllPartitions(),
      [](const std::map<uint32_t, std::string>& bodies) {
        uint64_t count = 0;
        for (const auto& [p, body] : bodies) count += JsonUint(body, "count");
        JsonWriter w;
        w.BeginObject().Key("count").Uint(count).EndObject();
        return JsonReply(kHttpOk, w.Take());
      });
}

void ClusterApi::BucketMetricsOf(const HttpRequestPtr& req, const ExchangePtr& ex) {
  Ask(ex, QueryJson("metrics", PathSegment(*req, kBucketSegment)), AllPartitions(),
      [](const std::map<uint32_t, std::string>& bodies) {
        BucketMetrics sum;
        double dwell_seconds = 0;  // over every closed membership
        simdjson::dom::parser parser;
        for (const auto& [p, body] : bodies) {
          simdjson::dom::element doc;
          if (parser.parse(body).get(doc) != simdjson::SUCCESS) continue;
          sum.size += NumberField<uint64_t>(doc, "size");
          sum.entered += NumberField<uint64_t>(doc, "entered");
          const uint64_t left = NumberField<uint64_t>(doc, "left");
          sum.left += left;
          // get_double() reads an integer too.
          dwell_seconds +=
              NumberField<double>(doc, "averageDwellSeconds") * static_cast<double>(left);
        }
        sum.average_dwell_seconds =
            sum.left == 0 ? 0.0 : dwell_seconds / static_cast<double>(sum.left);
        return JsonReply(kHttpOk, BucketMetricsJson(sum));
      });
}

void ClusterApi::ListMembers(const HttpRequestPtr& req, const ExchangePtr& ex) {
  uint64_t limit = 0;
  Status status = QueryUint(*req, "limit", kMembersPageDefault, 1, kMembersPageMax, &limit);
  if (!status.ok()) return ex->Respond(ErrorReply(FromStatus(status)));
  const std::string cursor = req->Query("cursor").value_or("");
  // Each partition's page after the same cursor, merged by userId and cut at `limit`: the
  // pages stay keyset-ordered by userId across partitions.
  Ask(ex, QueryJson("members", PathSegment(*req, kBucketSegment), "", cursor, limit),
      AllPartitions(), [limit](const std::map<uint32_t, std::string>& bodies) {
        std::vector<std::pair<std::string, std::string>> members;  // userId, member JSON
        bool more = false;
        for (const auto& [p, body] : bodies) more |= ReadMembersPage(body, &members);
        std::sort(members.begin(), members.end());
        if (members.size() > limit) {
          members.resize(limit);
          more = true;
        }
        JsonWriter w;
        w.BeginObject().Key("members").BeginArray();
        for (const auto& [user, json] : members) w.Raw(json);
        w.EndArray().Key("cursor");
        if (more && !members.empty()) {
          w.String(members.back().first);
        } else {
          w.Null();
        }
        w.EndObject();
        return JsonReply(kHttpOk, w.Take());
      });
}

void ClusterApi::GetMember(const HttpRequestPtr& req, const ExchangePtr& ex) {
  const std::string user_id = PathSegment(*req, kMemberUserSegment);
  Ask(ex, QueryJson("member", PathSegment(*req, kBucketSegment), user_id),
      {cluster::PartitionOf(user_id, config_.partitions)}, PassThrough);
}

void ClusterApi::UserMemberships(const HttpRequestPtr& req, const ExchangePtr& ex) {
  const std::string user_id = PathSegment(*req, kUserSegment);
  Ask(ex, QueryJson("memberships", "", user_id),
      {cluster::PartitionOf(user_id, config_.partitions)}, PassThrough);
}

// The owner of the user's partition explains: the user's whole history is there.
void ClusterApi::ExplainMembership(const HttpRequestPtr& req, const ExchangePtr& ex) {
  const std::string user_id = PathSegment(*req, kMemberUserSegment);
  Ask(ex, QueryJson("explain", PathSegment(*req, kBucketSegment), user_id),
      {cluster::PartitionOf(user_id, config_.partitions)}, PassThrough);
}

// Every partition previews its own users; the counts add up, and the samples (each
// partition's smallest ids) merge into the cluster's smallest kPreviewSampleMax.
void ClusterApi::PreviewBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  Record r;  // the definition checked here as a define is (SPEC §3), before any partition
  if (Status s = cluster::DefinitionRecord(req->body, std::nullopt, 0, &r); !s.ok()) {
    return ex->Respond(ErrorReply(FromStatus(s)));
  }
  Ask(ex, QueryJson("preview", "", "", "", 0, r.definition_json), AllPartitions(),
      [](const std::map<uint32_t, std::string>& bodies) {
        PreviewResult sum;
        simdjson::dom::parser parser;
        for (const auto& [p, body] : bodies) {
          simdjson::dom::element doc;
          if (parser.parse(body).get(doc) != simdjson::SUCCESS) continue;
          sum.count += NumberField<uint64_t>(doc, "count");
          sum.entering += NumberField<uint64_t>(doc, "entering");
          sum.leaving += NumberField<uint64_t>(doc, "leaving");
          simdjson::dom::array sample;
          if (doc["sample"].get_array().get(sample) != simdjson::SUCCESS) continue;
          for (simdjson::dom::element id : sample) {
            std::string_view text;
            if (id.get_string().get(text) == simdjson::SUCCESS) sum.sample.emplace_back(text);
          }
        }
        std::sort(sum.sample.begin(), sum.sample.end());
        if (sum.sample.size() > kPreviewSampleMax) sum.sample.resize(kPreviewSampleMax);
        return JsonReply(kHttpOk, PreviewJson(sum));
      });
}

void ClusterApi::GetUser(const HttpRequestPtr& req, const ExchangePtr& ex) {
  const std::string user_id = PathSegment(*req, kUserSegment);
  Ask(ex, QueryJson("user", "", user_id), {cluster::PartitionOf(user_id, config_.partitions)},
      PassThrough);
}

void ClusterApi::ListBuckets(const HttpRequestPtr&, const ExchangePtr& ex) {
  Ask(ex, QueryJson("buckets"), AllPartitions(), [](const std::map<uint32_t, std::string>& bodies) {
    // By id: each partition's description of it (a definition being fanned out may be in
    // some partitions only for a moment).
    std::map<std::string, std::vector<std::string>> buckets;
    simdjson::dom::parser parser;
    for (const auto& [p, body] : bodies) {
      simdjson::dom::element doc;
      simdjson::dom::array list;
      if (parser.parse(body).get(doc) != simdjson::SUCCESS ||
          doc["buckets"].get_array().get(list) != simdjson::SUCCESS) {
        continue;
      }
      for (simdjson::dom::element b : list) {
        std::string_view id;
        if (b["id"].get_string().get(id) != simdjson::SUCCESS) continue;
        buckets[std::string(id)].push_back(simdjson::minify(b));
      }
    }
    JsonWriter w;
    w.BeginObject().Key("buckets").BeginArray();
    for (const auto& [id, descriptions] : buckets) w.Raw(SumBucketCounts(descriptions));
    w.EndArray().EndObject();
    return JsonReply(kHttpOk, w.Take());
  });
}

void ClusterApi::GetBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  Ask(ex, QueryJson("bucket", PathSegment(*req, kBucketSegment)), AllPartitions(),
      [](const std::map<uint32_t, std::string>& bodies) {
        std::vector<std::string> descriptions;
        for (const auto& [p, body] : bodies) descriptions.push_back(body);
        return JsonReply(kHttpOk, SumBucketCounts(descriptions));
      });
}

void ClusterApi::State(const HttpRequestPtr&, const ExchangePtr& ex) {
  // Each partition's state: its stream position, transition count and digest (a replay of
  // the partition's stream reproduces the digest).
  Ask(ex, QueryJson("state"), AllPartitions(), [](const std::map<uint32_t, std::string>& bodies) {
    JsonWriter w;
    w.BeginObject().Key("partitions").BeginArray();
    for (const auto& [p, body] : bodies) {
      w.BeginObject().Key("partition").Uint(p).Key("state").Raw(body).EndObject();
    }
    w.EndArray().EndObject();
    return JsonReply(kHttpOk, w.Take());
  });
}

void ClusterApi::PostEvents(const HttpRequestPtr& req, const ExchangePtr& ex) {
  auto parsed = std::make_shared<ParsedEvents>();
  const bool ndjson = req->MediaType() == "application/x-ndjson";
  if (Status status = ParseEventsBody(req->body, ndjson, parsed.get()); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  if (parsed->over_limit) {
    return ex->Respond(ErrorReply(
        PayloadTooLarge("a batch holds at most " + std::to_string(kBatchItemsMax) + " items")));
  }
  // Stateless refusals here (SPEC §1-2); what depends on the state (a deleted contact, a key
  // seen beyond JetStream's duplicate window) is the partition owner's fold's to refuse.
  auto rejected = std::make_shared<std::vector<BatchItemError>>(parsed->rejected);
  auto valid = std::make_shared<std::vector<size_t>>();  // indices into parsed->events
  for (size_t i = 0; i < parsed->events.size(); ++i) {
    Status refusal = parsed->refusals[i];
    if (refusal.ok()) refusal = ValidateEvent(parsed->events[i]);
    if (!refusal.ok()) {
      rejected->push_back({parsed->indices[i], refusal});
      continue;
    }
    valid->push_back(i);
  }
  std::sort(rejected->begin(), rejected->end(),
            [](const BatchItemError& a, const BatchItemError& b) { return a.index < b.index; });
  if (parsed->single && !rejected->empty()) {
    return ex->Respond(ErrorReply(FromStatus(rejected->front().error)));
  }
  // Every event gets a message id, so that a publish retried after a lost ack is stored once:
  // the event's own key, or one naming this node, this request and the event's place in it.
  const std::string id_prefix = MessageIdPrefix();
  router_.Submit([this, parsed, valid, rejected, id_prefix, ex](cluster::PartitionStream& stream) {
    TimeMs at = 0;
    if (Status s = Stamp(stream, &at); !s.ok()) return ex->Respond(PublishFailed(s, 0, 1));
    std::vector<Record> records;
    records.reserve(valid->size());
    for (const size_t i : *valid) records.push_back(cluster::EventRecord(parsed->events[i], at));
    std::vector<cluster::BatchPublish> batch(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      const Record& r = records[i];
      batch[i].partition = cluster::PartitionOf(r.user_id, stream.partitions());
      batch[i].record = &r;
      batch[i].msg_id =
          r.idempotency_key ? "e:" + *r.idempotency_key : id_prefix + std::to_string(i);
    }
    std::vector<cluster::BatchAck> acks;
    if (Status s = stream.PublishBatch(batch, kPublishAttempts, &acks); !s.ok()) {
      return ex->Respond(PublishFailed(s, acks));
    }
    uint64_t accepted = 0;
    uint64_t duplicates = 0;
    for (const cluster::BatchAck& ack : acks) ++(ack.duplicate ? duplicates : accepted);
    JsonWriter w;
    w.BeginObject().Key("accepted").Uint(accepted).Key("duplicates").Uint(duplicates);
    w.Key("rejected").BeginArray();
    for (const BatchItemError& error : *rejected) {
      w.BeginObject().Key("index").Uint(error.index).Key("error").Raw(ErrorObject(error.error));
      w.EndObject();
    }
    w.EndArray().EndObject();
    ex->Respond(JsonReply(kHttpOk, w.Take()));
  });
}

void ClusterApi::FanOut(Record record, const ExchangePtr& ex, std::string answer, bool create) {
  control_.Submit([this, record = std::move(record), answer = std::move(answer), create,
                   ex](ControlPublisher& control) mutable {
    if (Status s = Stamp(*control.stream, &record.at); !s.ok()) {
      return ex->Respond(PublishFailed(s, 0, 1));
    }
    // POST /v1/buckets creates: refused when the control log already defines the id, and
    // decided there, so two nodes creating one id at once cannot both succeed.
    std::function<Status(const cluster::ControlLog::View&)> check;
    if (create) {
      check = [id = record.bucket_id](const cluster::ControlLog::View& view) {
        return view.buckets.count(id) != 0
                   ? Status::AlreadyExists("bucket " + id + " already exists")
                   : Status::Ok();
      };
    }
    uint64_t control_seq = 0;
    const Status s = control.log.Append(std::move(record), check, &control_seq);
    if (!s.ok()) {
      return ex->Respond(s.code() == StatusCode::kIoError ? PublishFailed(s, 0, 1)
                                                          : ErrorReply(FromStatus(s)));
    }
    ex->Respond(JsonReply(kHttpAccepted, answer));
  });
}

std::string ClusterApi::MessageIdPrefix() const {
  // The wall clock, whatever the cluster's clock: a node restarted under the same id (its
  // counter back at 0) must not reuse an id within the duplicate window, and a manual clock
  // may stand still across the restart.
  return config_.node_id + "-" + std::to_string(cluster::WallClockNow()) + "-" +
         std::to_string(++publish_requests_) + "-";
}

Status ClusterApi::Stamp(cluster::PartitionStream& stream, TimeMs* at) const {
  if (!config_.manual_clock) {
    *at = cluster::WallClockNow();
    return Status::Ok();
  }
  uint64_t seq = 0;
  return stream.ReadClock(at, &seq);
}

void ClusterApi::AdvanceClock(const HttpRequestPtr& req, const ExchangePtr& ex) {
  TimeMs now_ms = 0;
  if (Status status = ParseClockMove(config_.manual_clock, req->body, &now_ms); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  Record record;
  if (Status status = cluster::ClockRecord(now_ms, &record); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  control_.Submit([now_ms, record = std::move(record), ex](ControlPublisher& control) mutable {
    // The clock's subject first, fenced on the instant read: a move backwards, or one racing
    // another node's, is refused before any partition sees it. Then the control log, which
    // orders it among definition changes in every partition.
    cluster::PartitionStream& stream = *control.stream;
    TimeMs current = 0;
    uint64_t seq = 0;
    Status s = stream.ReadClock(&current, &seq);
    if (s.ok() && now_ms < current) {
      s = Status::FailedPrecondition("now", "the clock cannot move backwards");
    }
    if (s.ok()) s = stream.SetClock(now_ms, seq);
    uint64_t control_seq = 0;
    if (s.ok()) s = control.log.Append(std::move(record), nullptr, &control_seq);
    if (!s.ok()) {
      return ex->Respond(s.code() == StatusCode::kIoError ? PublishFailed(s, 0, 1)
                                                          : ErrorReply(FromStatus(s)));
    }
    JsonWriter w;
    w.BeginObject().Key("now").Time(now_ms).Key("partitions").Uint(stream.partitions());
    w.EndObject();
    ex->Respond(JsonReply(kHttpAccepted, w.Take()));
  });
}

void ClusterApi::RouteToUser(Record record, const ExchangePtr& ex, std::string answer) {
  // A message id as an event without a key gets: a publish retried after a lost ack is
  // stored once, and the fold skips a second copy by it ("Idempotency").
  const std::string msg_id = MessageIdPrefix() + "0";
  router_.Submit([this, record = std::move(record), answer = std::move(answer), msg_id,
                  ex](cluster::PartitionStream& stream) mutable {
    const uint32_t p = cluster::PartitionOf(record.user_id, stream.partitions());
    Status s = Stamp(stream, &record.at);
    if (s.ok()) s = PublishWithRetry(stream, p, record, cluster::PublishOptions{msg_id}, nullptr);
    if (!s.ok()) return ex->Respond(PublishFailed(s, 0, 1));
    ex->Respond(JsonReply(kHttpAccepted, answer));
  });
}

// The partition's owner applies it as the single engine does (a delete of an unknown contact,
// an add to an unknown bucket: refused by the fold, changing nothing); the answer here is that
// the input is in the partition's stream.
void ClusterApi::DeleteContact(const HttpRequestPtr& req, const ExchangePtr& ex) {
  const std::optional<std::string> erase = req->Query("erase");
  if (erase && *erase != "true" && *erase != "false") {
    return ex->Respond(
        ErrorReply(FromStatus(Status::InvalidArgument("erase", "must be true or false"))));
  }
  if (erase == "true") {
    // SPEC §11 in a cluster would rewrite replicated streams and every snapshot holding the
    // contact: not offered (docs/cluster.md, "Erasure"). Nothing is published.
    return ex->Respond(ErrorReply(NotImplemented(
        "erasure (SPEC §11) is not available in cluster mode: the contact's records stay in "
        "the JetStream input stream, its transitions in the output stream and its state in "
        "partition snapshots (docs/cluster.md, \"Erasure\"); DELETE without erase=true "
        "deletes the contact (SPEC §2)")));
  }
  const std::string user_id = PathSegment(*req, kUserSegment);
  Record r;
  if (Status s = cluster::UserRecord(RecordKind::kContactDelete, user_id, "", 0, &r); !s.ok()) {
    return ex->Respond(ErrorReply(FromStatus(s)));
  }
  JsonWriter w;
  w.BeginObject().Key("userId").String(user_id).Key("deleted").Bool(true).EndObject();
  RouteToUser(std::move(r), ex, w.Take());
}

void ClusterApi::AddMember(const HttpRequestPtr& req, const ExchangePtr& ex) {
  std::string user_id;
  if (Status s = ParseAddMemberRequest(req->body, &user_id); !s.ok()) {
    return ex->Respond(ErrorReply(FromStatus(s)));
  }
  const std::string bucket_id = PathSegment(*req, kBucketSegment);
  Record r;
  if (Status s = cluster::UserRecord(RecordKind::kMemberAdd, user_id, bucket_id, 0, &r); !s.ok()) {
    return ex->Respond(ErrorReply(FromStatus(s)));
  }
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(bucket_id).Key("userId").String(user_id);
  w.Key("added").Bool(true).EndObject();
  RouteToUser(std::move(r), ex, w.Take());
}

void ClusterApi::RemoveMember(const HttpRequestPtr& req, const ExchangePtr& ex) {
  const std::string bucket_id = PathSegment(*req, kBucketSegment);
  const std::string user_id = PathSegment(*req, kMemberUserSegment);
  Record r;
  if (Status s = cluster::UserRecord(RecordKind::kMemberRemove, user_id, bucket_id, 0, &r);
      !s.ok()) {
    return ex->Respond(ErrorReply(FromStatus(s)));
  }
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(bucket_id).Key("userId").String(user_id);
  w.Key("removed").Bool(true).EndObject();
  RouteToUser(std::move(r), ex, w.Take());
}

void ClusterApi::DefineBucket(const HttpRequestPtr& req, const ExchangePtr& ex, bool id_from_path) {
  std::optional<std::string> path_id;
  if (id_from_path) path_id = PathSegment(*req, kBucketSegment);
  Record r;
  if (Status s = cluster::DefinitionRecord(req->body, path_id, 0, &r); !s.ok()) {
    return ex->Respond(ErrorReply(FromStatus(s)));
  }
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(r.bucket_id).Key("definition").Raw(r.definition_json);
  w.Key("partitions").Uint(config_.partitions).EndObject();
  FanOut(std::move(r), ex, w.Take(), /*create=*/!id_from_path);
}

void ClusterApi::PatchBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  bool enabled = false;
  if (Status status = ParseEnabledPatch(req->body, &enabled); !status.ok()) {
    return ex->Respond(ErrorReply(FromStatus(status)));
  }
  Record r;
  r.kind = enabled ? RecordKind::kBucketEnable : RecordKind::kBucketDisable;
  r.bucket_id = PathSegment(*req, kBucketSegment);
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(r.bucket_id).Key("enabled").Bool(enabled);
  w.Key("partitions").Uint(config_.partitions).EndObject();
  FanOut(std::move(r), ex, w.Take());
}

void ClusterApi::DeleteBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  Record r;
  r.kind = RecordKind::kBucketDelete;
  r.bucket_id = PathSegment(*req, kBucketSegment);
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(r.bucket_id).Key("deleted").Bool(true);
  w.Key("partitions").Uint(config_.partitions).EndObject();
  FanOut(std::move(r), ex, w.Take());
}

void ClusterApi::ClusterState(const HttpRequestPtr&, const ExchangePtr& ex) {
  const NodeStatus s = node_.status();
  JsonWriter w;
  w.BeginObject();
  w.Key("nodeId").String(s.node_id).Key("stream").String(s.cluster);
  w.Key("partitions").Uint(s.partitions);
  w.Key("liveNodes").BeginArray();
  for (const std::string& n : s.live_nodes) w.String(n);
  w.EndArray();
  w.Key("owned").BeginArray();
  for (const NodeStatus::Partition& p : s.owned) {
    w.BeginObject().Key("partition").Uint(p.partition).Key("nextSeq").Uint(p.next_seq);
    w.Key("streamLastSeq").Uint(p.stream_last_seq);
    w.Key("transitions").Uint(p.transitions).Key("refused").Uint(p.refused);
    w.Key("undecodable").Uint(p.undecodable).Key("controlSeq").Uint(p.control_seq);
    w.Key("controlCopiesSkipped").Uint(p.control_copies_skipped);
    w.Key("duplicatesSkipped")
        .Uint(p.duplicates_skipped)
        .Key("idsRemembered")
        .Uint(p.ids_remembered);
    w.Key("replicaMismatches").Uint(p.replica_mismatches).EndObject();
  }
  w.EndArray();
  w.Key("pending").Uint(s.pending).Key("rounds").Uint(s.rounds);
  w.Key("lastRound").String(s.last_round.ok() ? "ok" : s.last_round.ToString());
  w.Key("stats").BeginObject();
  w.Key("transitionsPublished").Uint(s.stats.transitions_published);
  w.Key("transitionsSuppressed").Uint(s.stats.transitions_suppressed);
  w.Key("sweepsPublished").Uint(s.stats.sweeps_published);
  w.Key("sweepsFenced").Uint(s.stats.sweeps_fenced);
  w.Key("leasesTaken").Uint(s.stats.leases_taken);
  w.Key("leasesReleased").Uint(s.stats.leases_released);
  w.Key("leasesLost").Uint(s.stats.leases_lost);
  w.Key("queriesAnswered").Uint(s.stats.queries_answered);
  w.Key("snapshotsPublished").Uint(s.stats.snapshots_published);
  w.Key("snapshotsRestored").Uint(s.stats.snapshots_restored);
  w.Key("snapshotsRefused").Uint(s.stats.snapshots_refused);
  w.Key("snapshotsRestoredLocal").Uint(s.stats.snapshots_restored_local);
  w.Key("localSnapshotFailures").Uint(s.stats.local_snapshot_failures);
  w.EndObject();
  w.Key("lastSnapshotRefusal").String(s.last_snapshot_refusal);
  w.EndObject();
  ex->Respond(JsonReply(kHttpOk, w.Take()));
}

void ClusterApi::PrometheusMetrics(const HttpRequestPtr&, const ExchangePtr& ex) {
  const NodeStatus s = node_.status();
  std::string out;
  auto metric = [&out](const char* name, const char* type, const char* help, uint64_t value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + " " + std::to_string(value) + "\n";
  };
  metric("bucketd_cluster_partitions_owned", "gauge", "Partitions this node holds leases on.",
         s.owned.size());
  metric("bucketd_cluster_live_nodes", "gauge", "Live nodes as this node's last round saw them.",
         s.live_nodes.size());
  metric("bucketd_cluster_transitions_pending", "gauge",
         "Transitions folded and not yet acknowledged by the output stream.", s.pending);
  metric("bucketd_cluster_rounds_total", "counter", "Rounds this node ran.", s.rounds);
  metric("bucketd_cluster_transitions_published_total", "counter",
         "Transitions published to the output stream.", s.stats.transitions_published);
  metric("bucketd_cluster_transitions_suppressed_total", "counter",
         "Transitions a takeover folded again and did not publish.",
         s.stats.transitions_suppressed);
  metric("bucketd_cluster_sweeps_published_total", "counter", "Sweep records appended.",
         s.stats.sweeps_published);
  metric("bucketd_cluster_sweeps_fenced_total", "counter",
         "Sweeps refused because the partition had moved on.", s.stats.sweeps_fenced);
  metric("bucketd_cluster_leases_taken_total", "counter", "Partition leases taken.",
         s.stats.leases_taken);
  metric("bucketd_cluster_leases_released_total", "counter", "Partition leases handed over.",
         s.stats.leases_released);
  metric("bucketd_cluster_leases_lost_total", "counter", "Partition leases lost (expired).",
         s.stats.leases_lost);
  metric("bucketd_cluster_queries_answered_total", "counter",
         "Queries this node answered for the partitions it owns.", s.stats.queries_answered);
  metric("bucketd_cluster_snapshots_published_total", "counter",
         "Partition snapshots stored in JetStream.", s.stats.snapshots_published);
  metric("bucketd_cluster_snapshots_restored_total", "counter",
         "Takeovers that started from a snapshot.", s.stats.snapshots_restored);
  metric("bucketd_cluster_snapshots_refused_total", "counter",
         "Takeovers that found the newest snapshot unusable and folded from the start.",
         s.stats.snapshots_refused);
  metric("bucketd_cluster_snapshots_restored_local_total", "counter",
         "Takeovers that started from the node's own copy of a snapshot.",
         s.stats.snapshots_restored_local);
  metric("bucketd_cluster_local_snapshot_failures_total", "counter",
         "Snapshots the node's own store could not keep.", s.stats.local_snapshot_failures);
  uint64_t duplicates = 0, ids = 0, mismatches = 0;
  for (const NodeStatus::Partition& p : s.owned) {
    duplicates += p.duplicates_skipped;
    ids += p.ids_remembered;
    mismatches += p.replica_mismatches;
  }
  // Counters over the partitions owned now (they start again with a partition's new owner).
  metric("bucketd_cluster_duplicates_skipped", "gauge",
         "Records the owned partitions' folds skipped as second copies by id.", duplicates);
  metric("bucketd_cluster_ids_remembered", "gauge",
         "Record ids the owned partitions' folds remember within the idempotency window.", ids);
  metric("bucketd_cluster_replica_mismatches", "gauge",
         "Runs of messages a replica delivered that the stream leader did not confirm.",
         mismatches);
  out += metrics_.RenderServer();
  ex->Respond(Reply{kHttpOk, std::move(out), std::string(kPrometheusContentType)});
}

void ClusterApi::Healthz(const HttpRequestPtr&, const ExchangePtr& ex) {
  const NodeStatus s = node_.status();
  // A round that met an error (NATS unreachable, JetStream electing a leader) says so; the
  // node keeps trying, and the next good round makes it healthy again.
  if (s.rounds > 0 && s.last_round.ok()) {
    return ex->Respond(JsonReply(kHttpOk, R"({"status":"ok"})"));
  }
  JsonWriter w;
  w.BeginObject().Key("status").String("failing").Key("error").Raw(ErrorObject(s.last_round));
  w.EndObject();
  ex->Respond(JsonReply(kHttpUnavailable, w.Take()));
}

void ClusterApi::Readyz(const HttpRequestPtr&, const ExchangePtr& ex) {
  const NodeStatus s = node_.status();
  if (shutting_down_ || s.rounds == 0) {
    return ex->Respond(JsonReply(kHttpUnavailable, R"({"status":"not_ready"})"));
  }
  ex->Respond(JsonReply(kHttpOk, R"({"status":"ready"})"));
}

}  // namespace bucketd::server
