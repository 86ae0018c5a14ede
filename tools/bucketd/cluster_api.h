#pragma once
// bucketd as a cluster node (docs/cluster.md): the node's rounds on a thread of their own
// (NodeRunner), the inputs routed by partition onto the input stream and acknowledged after
// JetStream's ack (InputRouter), and the routes a cluster node serves (ClusterApi): events,
// bucket definitions fanned out to every partition, the node's view of the cluster, health,
// readiness and metrics. Queries over the cluster's state (counts, members, memberships,
// metrics, state) are not served yet: they answer 501 naming what to use meanwhile.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bucketd/status.h"
#include "engine/cluster/node.h"
#include "engine/cluster/partition_stream.h"
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
    uint64_t refused = 0;
    uint64_t undecodable = 0;
    uint64_t transitions = 0;  // the partition's transition count (its last seq)
  };
  std::vector<Partition> owned;
  cluster::NodeStats stats;
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
  NodeStatus status_;
  std::thread thread_;
};

// Publishes inputs on one thread of its own, in submission order (a PartitionStream is for
// one thread at a time; each publish waits for JetStream's ack).
class InputRouter {
 public:
  explicit InputRouter(std::unique_ptr<cluster::PartitionStream> stream);
  ~InputRouter();
  InputRouter(const InputRouter&) = delete;
  InputRouter& operator=(const InputRouter&) = delete;

  using Job = std::function<void(cluster::PartitionStream&)>;
  void Submit(Job job);
  uint32_t partitions() const { return partitions_; }

 private:
  void Run();

  std::unique_ptr<cluster::PartitionStream> stream_;
  const uint32_t partitions_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

struct ClusterApiConfig {
  std::string auth_token;  // empty: /v1 is open, and Host and Origin are checked
  std::string node_id;     // names this node in the message ids of its fan-outs
};

class ClusterApi final : public HttpService {
 public:
  ClusterApi(const NodeRunner& node, InputRouter& router, ServerMetrics& metrics,
             ClusterApiConfig config);

  // REQUIRES: not serving yet.
  void SetAuthorities(std::vector<std::string> authorities);
  std::optional<Reply> Screen(const HttpRequest& req) const override;
  void Dispatch(HttpRequestPtr req, Exchange::Poster post,
                Exchange::Responder respond) const override;
  void RecordUnrouted(int http_status) const override;
  // From now on /readyz answers 503. Thread-safe.
  void BeginShutdown() { shutting_down_ = true; }

 private:
  void AddRoutes();
  void PostEvents(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DefineBucket(const HttpRequestPtr& req, const ExchangePtr& ex, bool id_from_path);
  void PatchBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void DeleteBucket(const HttpRequestPtr& req, const ExchangePtr& ex);
  void ClusterState(const HttpRequestPtr& req, const ExchangePtr& ex);
  void PrometheusMetrics(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Healthz(const HttpRequestPtr& req, const ExchangePtr& ex);
  void Readyz(const HttpRequestPtr& req, const ExchangePtr& ex);
  void NotYet(const HttpRequestPtr& req, const ExchangePtr& ex);

  // Publishes `record` (stamped now) to every partition, then answers `answer`.
  void FanOut(Record record, const ExchangePtr& ex, std::string answer);

  const NodeRunner& node_;
  InputRouter& router_;
  ServerMetrics& metrics_;
  const ClusterApiConfig config_;
  Router routes_;
  std::atomic<bool> shutting_down_{false};
  // Numbers this node's fan-outs: their message ids are "<node>-<n>-<partition>", so a
  // retried publish of one copy is stored once.
  mutable std::atomic<uint64_t> fan_outs_{0};
};

}  // namespace bucketd::server
