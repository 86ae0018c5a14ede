#pragma once
// Who folds which partition (docs/cluster.md, "Ownership: leases"): a JetStream key-value
// bucket, BUCKETD_LEASES_<cluster>, whose entries all expire `ttl_ms` after their last write
// (the bucket's TTL). A live node keeps `node.<id>` written; the holder of partition p keeps
// `p.<p>` (value: its node id) written by compare-and-set on the revision it last wrote, so
// a holder that stopped writing for a TTL has lost the lease to whoever creates the key next.
// A lease alone cannot fence across clocks: a stale holder's appends are fenced on the input
// stream and its outputs deduplicated on the output stream.
//
// Threading: one thread at a time.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/cluster/nats_connection.h"

namespace bucketd::cluster {

struct LeaseOptions {
  std::string cluster = "default";
  // An entry not written for this long expires (node gone, lease free).
  TimeMs ttl_ms = 10'000;
  int replicas = 3;  // of the bucket when Open creates it
};

class LeaseTable {
 public:
  // Binds to the bucket, creating it if it does not exist yet. FailedPrecondition (field
  // leaseTtl) when it exists with another TTL.
  static Status Open(std::shared_ptr<NatsConnection> nats, const LeaseOptions& options,
                     std::unique_ptr<LeaseTable>* out);
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  const std::string& bucket_name() const { return bucket_; }

  // Writes `node.<node_id>`: the node is live for another TTL.
  Status Announce(const std::string& node_id);
  // Removes it: the node leaves now rather than at its TTL.
  Status Withdraw(const std::string& node_id);
  // The ids of the nodes announced within the last TTL, sorted.
  Status LiveNodes(std::vector<std::string>* out);

  // Creates `p.<partition>` for `node_id`. FailedPrecondition when another node holds it.
  // One `node_id` already holds (a lost reply, a restarted process) is written again, so its
  // TTL counts from this call. `*revision`: the revision written, the one to renew with.
  Status Acquire(uint32_t partition, const std::string& node_id, uint64_t* revision);
  // Writes the lease again if `*revision` is still its last write. FailedPrecondition when the
  // lease is lost (expired and perhaps taken); IoError when NATS could not say.
  Status Renew(uint32_t partition, const std::string& node_id, uint64_t* revision);
  // Gives the lease up at once (a handover), if still held at `revision`.
  Status Release(uint32_t partition, const std::string& node_id, uint64_t revision);
  // The node holding the partition's lease, "" when none does.
  Status Holder(uint32_t partition, std::string* node_id);
  // The same with the revision of the lease's last write (0 when none holds it).
  Status HolderAt(uint32_t partition, std::string* node_id, uint64_t* revision);

 private:
  LeaseTable(std::shared_ptr<NatsConnection> nats, std::string bucket, kvStore* kv);

  std::shared_ptr<NatsConnection> nats_;
  std::string bucket_;
  std::string stream_;  // the bucket's stream: KV_<bucket>
  kvStore* kv_;
};

}  // namespace bucketd::cluster
