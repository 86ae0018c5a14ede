#pragma once
// bucketd as a cluster node (docs/cluster.md): the node's rounds on a thread of their own
// (NodeRunner), the inputs routed by partition onto the input stream and acknowledged after
// JetStream's ack (InputRouter), and the routes a cluster node serves (ClusterApi): events,
// bucket definitions fanned out to every partition, the node's view of the cluster, health,
// readiness and metrics, and the queries over the cluster's state by scatter-gather (each
// partition's owner answers for its partition, this node merges).
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bucketd/status.h"
#include "cluster_transitions.h"
#include "engine/cluster/control_log.h"
#include "engine/cluster/node.h"
#include "engine/cluster/partition_stream.h"
#include "engine/cluster/query_client.h"
#include "engine/core/fold_reader.h"
#include "http_request.h"
#include "http_route.h"
#include "http_service.h"
#include "prometheus.h"

namespace bucketd::server {

// A copy of a node's state after its last round, for the routes (any thread).
struct NodeStatus {
  std::string node_id;
  std::string cluster;
  uint32_t partitions = 0;
  std::vector<std::string> live_nodes;
  struct Partition {
    uint32_t partition = 0;
    uint64_t next_seq = 0;
    uint64_t stream_last_seq = 0;  // the partition's last message when the owner last looked
    uint64_t refused = 0;
    uint64_t undecodable = 0;
    uint64_t transitions = 0;  // the partition's transition count (its last seq)
    uint64_t control_seq = 0;  // the last control record folded (its place in the control log)
    // Copies of control records folded already, skipped (a fan-out completed again after the
    // duplicate window); anything else than a rare one is worth a look.
    uint64_t control_copies_skipped = 0;
    // Records skipped as second copies by id (docs/cluster.md, "Idempotency"), and the ids
    // remembered now.
    uint64_t duplicates_skipped = 0;
    uint64_t ids_remembered = 0;
    // Runs a replica delivered that the stream's leader did not confirm: each one is a
    // replica whose sequences drifted ("Reading through the leader"); worth a look.
    uint64_t replica_mismatches = 0;
  };
  std::vector<Partition> owned;
  cluster::NodeStats stats;
  std::string last_snapshot_refusal;
  size_t pending = 0;
  uint64_t rounds = 0;
  // The last round's first error; OK when it had none.
  Status last_round;
  TimeMs last_round_at = 0;
};

// Runs a ClusterNode's rounds every `every` on its own thread until Stop(), which leaves the
// cluster (releasing the leases: the others take the partitions at once).
class NodeRunner {
 public:
  // Answers queries on the owned partitions with AnswerPartitionQuery, between rounds.
  NodeRunner(std::unique_ptr<cluster::ClusterNode> node, std::chrono::milliseconds every);
  ~NodeRunner();
  NodeRunner(const NodeRunner&) = delete;
  NodeRunner& operator=(const NodeRunner&) = delete;

  void Start();
  void Stop();
  NodeStatus status() const;

 private:
  void Run();
  void Publish(const Status& round);

  std::unique_ptr<cluster::ClusterNode> node_;
  const std::chrono::milliseconds every_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool queries_arrived_ = false;
  NodeStatus status_;
  std::thread thread_;
};

// Runs jobs on one thread of its own, in submission order, each with the resource it owns
// (a PartitionStream or a QueryClient is for one thread at a time, and its calls wait on
// JetStream or on the partitions' owners: never on a transport thread).
template <typename Resource>
class SerialWorker {
 public:
  using Job = std::function<void(Resource&)>;

  explicit SerialWorker(std::unique_ptr<Resource> resource)
      : resource_(std::move(resource)), thread_([this] { Run(); }) {}
  ~SerialWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  void Submit(Job job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
  }

 private:
  void Run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and every job submitted has run
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job(*resource_);
    }
  }

  std::unique_ptr<Resource> resource_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

// A few SerialWorkers taking jobs in turn: jobs that wait on others (queries wait up to their
// deadline for a partition's owner) do not all queue behind one.
template <typename Resource>
class WorkerPool {
 public:
  explicit WorkerPool(std::vector<std::unique_ptr<Resource>> resources) {
    for (auto& r : resources) {
      workers_.push_back(std::make_unique<SerialWorker<Resource>>(std::move(r)));
    }
  }
  void Submit(typename SerialWorker<Resource>::Job job) {
    workers_[next_++ % workers_.size()]->Submit(std::move(job));
  }

 private:
  std::vector<std::unique_ptr<SerialWorker<Resource>>> workers_;
  std::atomic<size_t> next_{0};
};

// Publishes inputs routed by partition, a few requests at a time (each its own NATS
// connection); within a request each input after the previous one's ack, so a request's
// events for a user reach the stream in its order. Two requests in flight at once have no
// order between them, as with the single engine.
using InputRouter = WorkerPool<cluster::PartitionStream>;
// Control records (definition changes, clock moves) go through the cluster's control log
// (engine/cluster/control_log.h), one at a time per node, on a thread of their own.
struct ControlPublisher {
  explicit ControlPublisher(std::unique_ptr<cluster::PartitionStream> input)
      : stream(std::move(input)), log(stream.get()) {}
  std::unique_ptr<cluster::PartitionStream> stream;
  cluster::ControlLog log;
};
using ControlWriter = SerialWorker<ControlPublisher>;
inline constexpr size_t kInputWorkers = 4;
// Asks the partitions' owners and gathers their answers, a few queries at a time.
using QueryRouter = WorkerPool<cluster::QueryClient>;
inline constexpr size_t kQueryWorkers = 4;

// A partition owner's answer to a query (the request as the asking node sent it): the
// single engine's JSON for the same route, in an envelope with its HTTP status,
// {"status":200,"body":{...}}. Runs on the node's thread.
std::string AnswerPartitionQuery(uint32_t partition, const FoldReader& reader, TimeMs now,
                                 std::string_view request);

struct ClusterApiConfig {
  std::string auth_token;  // empty: /v1 is open, and Host and Origin are checked
  std::string node_id;     // names this node in the message ids of its fan-outs
  uint32_t partitions = 0;
  // How long a query waits for the partitions' owners.
  TimeMs query_timeout_ms = 5000;
  // --clock manual: inputs are stamped with the cluster's manual clock (kept on the input
  // stream, moved by POST /v1/clock on any node) instead of this node's wall clock.
  bool manual_clock = false;
};

class ClusterApi final : public HttpService {
 public:
  ClusterApi(const NodeRunner& node, InputRouter& router, ControlWriter& control,
             QueryRouter& queries, TransitionsFeed& transitions, ServerMetrics& metrics,
             ClusterApiConfig config);

  // REQUIRES: not serving yet.
  void SetAuthorities(std::vector<std::string> authorities);
  std::optional<Reply> Screen(const HttpRequest& req) const override;
  void Dispatch(HttpRequestPtr req, Exchange::Poster post,
                Exchange::Responder respond) const override;
  void RecordServed(std::string_view route, int http_status, double seconds) const override;
  // From now on /readyz answers 503. Thread-safe.
  void BeginShutdown() {
    shutting_down_ = true;
    transitions_.WakeAll();
  }

 private:
  void AddRoutes();
  void PostEvents(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DefineBucket(const HttpRequestPtr& req, const ExchangePtr& ex, bool id_from_path);
  void PatchBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DeleteBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ClusterState(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DeleteContact(const HttpRequestPtr& req, const ExchangePtr& ex);
  void AddMember(const HttpRequestPtr& req, const ExchangePtr& ex);
  void RemoveMember(const HttpRequestPtr& req, const ExchangePtr& ex);
  // Publishes a record naming a user to the user's partition, then answers 202 `answer`.
  void RouteToUser(Record record, const ExchangePtr& ex, std::string answer);
  void PrometheusMetrics(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Healthz(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Readyz(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ReadTransitions(const HttpRequestPtr& req, const ExchangePtr& ex);
  void CountMembers(const HttpRequestPtr& req, const ExchangePtr& ex);
  void BucketMetricsOf(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ListMembers(const HttpRequestPtr& req, const ExchangePtr& ex);
  void GetMember(const HttpRequestPtr& req, const ExchangePtr& ex);
  void UserMemberships(const HttpRequestPtr& req, const ExchangePtr& ex);
  void GetUser(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ExplainMembership(const HttpRequestPtr& req, const ExchangePtr& ex);
  void PreviewBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void State(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ListBuckets(const HttpRequestPtr& req, const ExchangePtr& ex);
  void GetBucket(const HttpRequestPtr& req, const ExchangePtr& ex);

  // The owners' answers of a query: to every partition, or to one user's. `merge` turns the
  // replies' bodies (all with HTTP status 200) into the response; any other status from an
  // owner is the response as it is, and an owner that does not answer makes it a 503.
  using Merge = std::function<Reply(const std::map<uint32_t, std::string>& bodies)>;
  void Ask(const ExchangePtr& ex, std::string request, std::vector<uint32_t> partitions,
           Merge merge);
  std::vector<uint32_t> AllPartitions() const;

  // Appends `record` (stamped now) to the cluster's control log, which fans it out to every
  // partition in the log's order, then answers 202 `answer`; `create`: 409 when the log
  // defines the bucket already (POST /v1/buckets).
  void FanOut(Record record, const ExchangePtr& ex, std::string answer, bool create = false);
  // The message ids of one publishing request start with this (see publish_requests_).
  std::string MessageIdPrefix() const;
  // An input's instant: the wall clock, or the cluster's manual clock. On a router thread.
  Status Stamp(cluster::PartitionStream& stream, TimeMs* at) const;
  void AdvanceClock(const HttpRequestPtr& req, const ExchangePtr& ex);

  const NodeRunner& node_;
  InputRouter& router_;
  ControlWriter& control_;
  QueryRouter& queries_;
  TransitionsFeed& transitions_;
  const ServerMetrics& metrics_;
  const ClusterApiConfig config_;
  Router routes_;
  std::atomic<bool> shutting_down_{false};
  // Numbers this node's publishing requests: the message ids of a request's events without
  // an idempotency key are "<node>-<wall ms>-<n>-<index>", so a publish retried after a lost
  // ack is stored once.
  mutable std::atomic<uint64_t> publish_requests_{0};
};

}  // namespace bucketd::server
