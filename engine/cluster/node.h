#pragma once
// A bucketd node in cluster mode (docs/cluster.md): it announces itself, holds leases on the
// partitions rendezvous hashing gives it among the live nodes, folds each one it holds from
// the partition's input stream, and publishes the transitions to the output stream, each
// exactly once: JetStream drops a re-emission by its message id (the idempotencyKey) and a
// new owner starts publishing after the Bucketd-Transition-Seq of the partition's last
// output. In wall-clock mode the owner also appends a `sweep` record when something in a
// partition falls due, fenced on the last record it folded, so a stale owner cannot append.
//
// Tick() does one round of all of it; the caller owns the loop (and so the thread and the
// cadence). A node that stops ticking without Leave() is, to the others, a node that died:
// its leases expire after lease_ttl_ms and the survivors take its partitions over.
//
// Threading: one thread at a time.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/cluster/control_log.h"
#include "engine/cluster/leases.h"
#include "engine/cluster/local_store.h"
#include "engine/cluster/output_stream.h"
#include "engine/cluster/partition_fold.h"
#include "engine/cluster/partition_stream.h"
#include "engine/cluster/snapshot_stream.h"
#include "engine/core/clock.h"
#include "engine/core/fold_reader.h"

namespace bucketd::cluster {

// Now on the OS clock (engine/core/clock.h's WallClock), ms since the epoch: what a routing
// node stamps the inputs it accepts with.
TimeMs WallClockNow();

struct NodeOptions {
  // The input stream; its url, cluster, partitions, replicas and timeout are the node's.
  StreamOptions stream;
  // Unique among the cluster's nodes: [A-Za-z0-9_-], 1..64 characters.
  std::string node_id;
  TimeMs lease_ttl_ms = 10'000;
  // Announce and renew leases this often; well under the TTL (a third leaves two misses).
  TimeMs renew_every_ms = 3'000;
  TimeMs output_duplicate_window_ms = 10 * 60 * 1000;
  // Leases, announcements and sweeps read it, never a fold. Tests give a ManualClock.
  std::shared_ptr<const Clock> clock = std::make_shared<WallClock>();
  // The cluster's time moves only by clockAdvance records (docs/cluster.md, "Manual clock"),
  // as the single engine's does with --clock manual: owners publish no sweeps, and queries
  // answer at the partition's time. Otherwise (wall clock) an owner appends a `sweep` record
  // stamped `now` when something in its partition is due at `now`, and queries answer at now.
  bool manual_clock = false;
  // An owner stores a partition's snapshot in JetStream after this many input-stream
  // positions past its last one (and before handing the partition over); a new owner starts
  // from the newest. 0: never (a new owner folds the partition from the start).
  uint64_t snapshot_every_records = 100'000;
  // Where the node keeps its own copy of each snapshot it takes (a RocksDB: LocalStore), so
  // that it takes its partitions back from its disk after a restart. Empty: none.
  std::string local_dir;
};

// The output stream's options a node with these options opens it with (a reader of the
// stream on the same cluster opens it alike).
OutputOptions OutputOptionsOf(const NodeOptions& options);

// Answers one query on a partition this node owns (docs/cluster.md, "Queries"), on the
// node's thread: `request` as the asking node sent it, the reply body returned.
using QueryHandler = std::function<std::string(uint32_t partition, const FoldReader& reader,
                                               TimeMs now, std::string_view request)>;

struct NodeStats {
  uint64_t transitions_published = 0;
  // Transitions a takeover folded again and did not publish: the previous owner had.
  uint64_t transitions_suppressed = 0;
  uint64_t sweeps_published = 0;
  // Sweeps the input stream refused because the partition had moved on (new inputs, or
  // another owner): the next round folds those first.
  uint64_t sweeps_fenced = 0;
  uint64_t leases_taken = 0;
  uint64_t leases_released = 0;
  uint64_t leases_lost = 0;
  uint64_t queries_answered = 0;
  uint64_t snapshots_published = 0;
  // Takeovers that started from a snapshot, and those that found one unusable (damaged,
  // or ahead of the output stream) and folded from the start instead.
  uint64_t snapshots_restored = 0;
  uint64_t snapshots_refused = 0;
  // Of the restored ones, those read from the node's own store, not from JetStream.
  uint64_t snapshots_restored_local = 0;
  // Snapshots the node's own store could not keep (JetStream's copy was still published).
  uint64_t local_snapshot_failures = 0;
  // Publishes of outputs refused by the fence because someone had appended meanwhile.
  uint64_t output_resyncs = 0;
};

class ClusterNode {
 public:
  static Status Open(const NodeOptions& options, std::unique_ptr<ClusterNode>* out);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // One round: announce, renew leases or drop the lost ones, hand over partitions another
  // live node should own, take the free ones this node should own, fold what is new in each
  // owned partition and publish its transitions, sweep. Announcements and renewals due are
  // also made between partitions, so a round slowed by a NATS fault does not let the leases
  // lapse. Returns the first error met; the round still did what it could, and the next one
  // retries the rest.
  Status Tick();
  // Serves queries on the owned partitions' subjects (PartitionStream::QuerySubject) with
  // `handler`; `arrived` is called (on a NATS thread) when one arrives, so the caller can run
  // ServeQueries soon. REQUIRES: before the first Tick.
  void SetQueryHandler(QueryHandler handler, std::function<void()> arrived);
  // Answers the queries that arrived since the last call (Tick calls it too). A query on a
  // partition no longer owned is dropped: its new owner answers it.
  void ServeQueries();
  // Publishes what is pending, releases every lease and withdraws the node: the others take
  // its partitions at their next round instead of after the TTL.
  Status Leave();

  const std::string& node_id() const { return options_.node_id; }
  std::vector<uint32_t> owned() const;
  // The live nodes as the last round saw them (this one included).
  const std::vector<std::string>& live_nodes() const { return live_nodes_; }
  // The partition's fold while this node owns it, else nullptr.
  const PartitionFold* partition(uint32_t p) const;
  const NodeStats& stats() const { return stats_; }
  // Why the last unusable snapshot was refused ("" if none was).
  const std::string& last_snapshot_refusal() const { return last_snapshot_refusal_; }
  // Transitions folded and not yet acknowledged by the output stream, over owned partitions.
  size_t pending() const;
  PartitionStream* input() { return input_.get(); }
  OutputStream* output() { return output_.get(); }
  LeaseTable* leases() { return leases_.get(); }

 private:
  struct Owned {
    // The subscription to the partition's query subject, while a handler is set.
    natsSubscription* queries = nullptr;
    uint64_t lease_revision = 0;
    TimeMs renewed_at = 0;
    std::unique_ptr<PartitionFold> fold;
    // Folded, not yet acknowledged by the output stream; published in order.
    std::deque<Transition> pending;
    // The last transition seq the output stream holds for the partition.
    uint64_t published_through = 0;
    // The output stream sequence of the partition's last output (0: none): the fence.
    uint64_t output_seq = 0;
    // The input-stream position of the partition's newest snapshot in JetStream, and the
    // fold's records_read() then.
    uint64_t snapshot_at = 0;
    uint64_t records_at_snapshot = 0;
    // The lease was found lost in the middle of something; dropped at the next safe point.
    bool lost = false;
    // Answering queries (subscribed once the fold first caught up).
    bool serving = false;
  };

  // Queries received on a NATS thread, waiting for the node's thread.
  struct QueryInbox {
    std::mutex mu;
    std::deque<std::pair<uint32_t, natsMsg*>> queue;
    std::function<void()> arrived;
  };
  static void OnQuery(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  Status SubscribeQueries(uint32_t p, Owned* owned);

  ClusterNode(const NodeOptions& options, std::shared_ptr<NatsConnection> nats);
  void Drop(std::map<uint32_t, Owned>::iterator it);
  Status TakeOver(uint32_t p, uint64_t lease_revision, TimeMs now);
  // Announces the node and renews the leases whose renewal is due; drops the lost ones, or
  // (not `may_drop`: in the middle of work on a partition) marks them lost.
  void KeepAlive(Status* first_error, bool may_drop);
  Status Advance(uint32_t p, Owned* owned, TimeMs now);
  // Folds what the partition's stream holds beyond the fold (PartitionFold::CatchUp, `until`
  // included) into the owned partition's pending transitions.
  Status FoldNew(Owned* owned, bool* caught_up,
                 std::optional<std::chrono::steady_clock::time_point> until = std::nullopt);
  Status PublishPending(uint32_t p, Owned* owned);
  // Stores a snapshot when `due` (or always, for a handover) and nothing is pending.
  Status Snapshot(uint32_t p, Owned* owned, bool handover);
  // Starts a new owner's fold from the partition's newest usable snapshot, its own or
  // JetStream's (the one further on first; its own when they are at one position); IoError
  // when it could not be read (the takeover waits for the next round).
  Status StartFromSnapshot(uint32_t p, Owned* owned);
  // Restores `payload` into a fresh fold of `owned`, or says why it cannot be used (the fold
  // is fresh again then).
  Status Restore(uint32_t p, Owned* owned, const SnapshotManifest& manifest,
                 const std::string& payload);

  NodeOptions options_;
  std::shared_ptr<NatsConnection> nats_;
  std::unique_ptr<PartitionStream> input_;
  std::unique_ptr<ControlLog> control_;  // on input_
  std::unique_ptr<OutputStream> output_;
  std::unique_ptr<LeaseTable> leases_;
  std::unique_ptr<SnapshotStream> snapshots_;
  std::unique_ptr<LocalStore> local_;  // null without options_.local_dir
  uint64_t snapshots_made_ = 0;        // numbers this node's snapshot ids
  std::string last_snapshot_refusal_;
  std::map<uint32_t, Owned> owned_;
  std::vector<std::string> live_nodes_;
  QueryHandler query_handler_;
  // Shared with the subscriptions' callbacks; each subscription's closure is {inbox, p}.
  QueryInbox inbox_;
  // A subscription's closure: where its messages go and for which partition, one per
  // partition, made at Open (their addresses never change). A subscription is drained
  // before its partition is dropped, so no callback runs after.
  struct QueryClosure {
    QueryInbox* inbox;
    uint32_t partition;
  };
  std::vector<QueryClosure> query_closures_;
  TimeMs announced_at_ = 0;
  bool announced_ = false;
  NodeStats stats_;
};

}  // namespace bucketd::cluster
