#pragma once
// The asking side of cluster queries (docs/cluster.md, "Queries: scatter-gather"): one
// request to each of a set of partitions' owners (core NATS request/reply on
// PartitionStream::QuerySubject), sent at once, the replies gathered until a deadline. The
// answering side is ClusterNode::SetQueryHandler.
//
// Threading: one thread at a time.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/cluster/nats_connection.h"
#include "engine/cluster/partition_stream.h"

namespace bucketd::cluster {

class QueryClient {
 public:
  // Connects on its own connection (a slow query never holds up the node's traffic).
  static Status Open(const StreamOptions& options, std::unique_ptr<QueryClient>* out);
  ~QueryClient();

  uint32_t partitions() const { return options_.partitions; }

  // Sends `request` to the owner of each partition in `partitions` and fills `*replies` by
  // partition. IoError naming the partitions whose owner did not answer within
  // `timeout_ms` (none owns it yet, or its owner is busy or gone): a partial answer is never
  // returned as whole.
  Status Ask(const std::vector<uint32_t>& partitions, const std::string& request, TimeMs timeout_ms,
             std::map<uint32_t, std::string>* replies);

 private:
  QueryClient(const StreamOptions& options, std::shared_ptr<NatsConnection> nats)
      : options_(options), nats_(std::move(nats)) {}

  StreamOptions options_;
  std::shared_ptr<NatsConnection> nats_;
  uint64_t asked_ = 0;  // numbers the reply subjects of this client's requests
};

}  // namespace bucketd::cluster
