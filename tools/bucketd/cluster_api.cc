#include "cluster_api.h"

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

namespace bucketd::server {
namespace {

constexpr size_t kBucketSegment = 3;

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
                  " inputs before: " + status.ToString();
  return ErrorReply(error);
}

}  // namespace

// --- NodeRunner ---

NodeRunner::NodeRunner(std::unique_ptr<cluster::ClusterNode> node, std::chrono::milliseconds every)
    : node_(std::move(node)), every_(every) {
  status_.node_id = node_->node_id();
  status_.last_round = Status::IoError("no round yet");
}

NodeRunner::~NodeRunner() { Stop(); }

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
    std::unique_lock<std::mutex> lock(mu_);
    if (wake_.wait_for(lock, every_, [this] { return stopping_; })) return;
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
    s.owned.push_back({p, fold->next_seq(), fold->refused(), fold->undecodable(),
                       fold->fold().state().transition_seq});
  }
  s.stats = node_->stats();
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

// --- InputRouter ---

InputRouter::InputRouter(std::unique_ptr<cluster::PartitionStream> stream)
    : stream_(std::move(stream)), partitions_(stream_->partitions()), thread_([this] { Run(); }) {}

InputRouter::~InputRouter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void InputRouter::Submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
}

void InputRouter::Run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and every job submitted has run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job(*stream_);
  }
}

// --- ClusterApi ---

ClusterApi::ClusterApi(const NodeRunner& node, InputRouter& router, ServerMetrics& metrics,
                       ClusterApiConfig config)
    : node_(node),
      router_(router),
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

void ClusterApi::RecordUnrouted(int http_status) const { routes_.RecordUnrouted(http_status); }

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
  add(M::kGet, "/metrics", "metrics", &ClusterApi::PrometheusMetrics);
  add(M::kGet, "/healthz", "healthz", &ClusterApi::Healthz);
  add(M::kGet, "/readyz", "readyz", &ClusterApi::Readyz);
  // The single engine's other routes, not served by a cluster node yet (docs/cluster.md).
  for (const auto& [method, path, route] : std::vector<std::tuple<M, const char*, const char*>>{
           {M::kDelete, "/v1/contacts/{}", "contact"},
           {M::kGet, "/v1/buckets", "buckets"},
           {M::kGet, "/v1/buckets/{}", "bucket"},
           {M::kGet, "/v1/buckets/{}/count", "bucket_count"},
           {M::kGet, "/v1/buckets/{}/metrics", "bucket_metrics"},
           {M::kGet, "/v1/buckets/{}/members", "members"},
           {M::kPost, "/v1/buckets/{}/members", "members"},
           {M::kGet, "/v1/buckets/{}/members/{}", "member"},
           {M::kDelete, "/v1/buckets/{}/members/{}", "member"},
           {M::kGet, "/v1/users/{}/memberships", "memberships"},
           {M::kGet, "/v1/transitions", "transitions"},
           {M::kPost, "/v1/clock", "clock"},
           {M::kPost, "/v1/sweep", "sweep"},
           {M::kPost, "/v1/snapshots", "snapshots"},
           {M::kGet, "/v1/state", "state"}}) {
    add(method, path, route, &ClusterApi::NotYet);
  }
}

void ClusterApi::NotYet(const HttpRequestPtr&, const ExchangePtr& ex) {
  ex->Respond(ErrorReply(NotImplemented(
      "not served by a cluster node yet (docs/cluster.md): transitions are on the output "
      "stream BUCKETD_OUT_<cluster>, the node's partitions at GET /v1/cluster")));
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
  auto records = std::make_shared<std::vector<Record>>();
  const TimeMs at = Now();
  for (size_t i = 0; i < parsed->events.size(); ++i) {
    Status refusal = parsed->refusals[i];
    if (refusal.ok()) refusal = ValidateEvent(parsed->events[i]);
    if (!refusal.ok()) {
      rejected->push_back({parsed->indices[i], refusal});
      continue;
    }
    records->push_back(cluster::EventRecord(parsed->events[i], at));
  }
  std::sort(rejected->begin(), rejected->end(),
            [](const BatchItemError& a, const BatchItemError& b) { return a.index < b.index; });
  if (parsed->single && !rejected->empty()) {
    return ex->Respond(ErrorReply(FromStatus(rejected->front().error)));
  }
  router_.Submit([records, rejected, ex](cluster::PartitionStream& stream) {
    uint64_t accepted = 0;
    uint64_t duplicates = 0;
    for (size_t i = 0; i < records->size(); ++i) {
      const Record& r = (*records)[i];
      cluster::PublishOptions options;
      if (r.idempotency_key) options.msg_id = "e:" + *r.idempotency_key;
      bool duplicate = false;
      const Status s = PublishWithRetry(
          stream, cluster::PartitionOf(r.user_id, stream.partitions()), r, options, &duplicate);
      if (!s.ok()) return ex->Respond(PublishFailed(s, i, records->size()));
      ++(duplicate ? duplicates : accepted);
    }
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

void ClusterApi::FanOut(Record record, const ExchangePtr& ex, std::string answer) {
  record.at = Now();
  const std::string id_prefix =
      config_.node_id + "-" + std::to_string(record.at) + "-" + std::to_string(++fan_outs_) + "-";
  router_.Submit([record = std::move(record), id_prefix, answer = std::move(answer),
                  ex](cluster::PartitionStream& stream) {
    for (uint32_t p = 0; p < stream.partitions(); ++p) {
      const cluster::PublishOptions options{id_prefix + std::to_string(p), 0};
      if (Status s = PublishWithRetry(stream, p, record, options, nullptr); !s.ok()) {
        return ex->Respond(PublishFailed(s, p, stream.partitions()));
      }
    }
    ex->Respond(JsonReply(kHttpAccepted, answer));
  });
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
  w.Key("partitions").Uint(router_.partitions()).EndObject();
  FanOut(std::move(r), ex, w.Take());
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
  w.Key("partitions").Uint(router_.partitions()).EndObject();
  FanOut(std::move(r), ex, w.Take());
}

void ClusterApi::DeleteBucket(const HttpRequestPtr& req, const ExchangePtr& ex) {
  Record r;
  r.kind = RecordKind::kBucketDelete;
  r.bucket_id = PathSegment(*req, kBucketSegment);
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(r.bucket_id).Key("deleted").Bool(true);
  w.Key("partitions").Uint(router_.partitions()).EndObject();
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
    w.Key("transitions").Uint(p.transitions).Key("refused").Uint(p.refused);
    w.Key("undecodable").Uint(p.undecodable).EndObject();
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
  w.EndObject().EndObject();
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
  ex->Respond(Reply{kHttpOk, std::move(out), "text/plain; version=0.0.4; charset=utf-8"});
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
