#include "engine/cluster/node.h"

#include <algorithm>
#include <utility>

#include "engine/base/check.h"
#include "engine/cluster/partition.h"

namespace bucketd::cluster {

TimeMs WallClockNow() { return WallClock().Now(); }

ClusterNode::ClusterNode(const NodeOptions& options, std::shared_ptr<NatsConnection> nats)
    : options_(options), nats_(std::move(nats)) {}

ClusterNode::~ClusterNode() {
  for (auto it = owned_.begin(); it != owned_.end();) {
    const auto next = std::next(it);
    Drop(it);
    it = next;
  }
  for (auto& [p, msg] : inbox_.queue) natsMsg_Destroy(msg);
}

void ClusterNode::Drop(std::map<uint32_t, Owned>::iterator it) {
  if (natsSubscription* sub = it->second.queries; sub != nullptr) {
    // Drained, not just unsubscribed: the wait ends once no callback of it can still run.
    if (natsSubscription_Drain(sub) == NATS_OK) {
      natsSubscription_WaitForDrainCompletion(sub, nats_->timeout_ms());
    }
    natsSubscription_Destroy(sub);
  }
  owned_.erase(it);
}

void ClusterNode::SetQueryHandler(QueryHandler handler, std::function<void()> arrived) {
  BUCKETD_CHECK(owned_.empty());
  query_handler_ = std::move(handler);
  inbox_.arrived = std::move(arrived);
}

void ClusterNode::OnQuery(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  const auto* c = static_cast<const QueryClosure*>(closure);
  {
    std::lock_guard<std::mutex> lock(c->inbox->mu);
    c->inbox->queue.emplace_back(c->partition, msg);
  }
  if (c->inbox->arrived) c->inbox->arrived();
}

Status ClusterNode::SubscribeQueries(uint32_t p, Owned* owned) {
  if (!query_handler_) return Status::Ok();
  QueryClosure& closure = query_closures_.emplace_back(QueryClosure{&inbox_, p});
  const std::string subject = input_->QuerySubject(p);
  const natsStatus s = natsConnection_Subscribe(&owned->queries, nats_->connection(),
                                                subject.c_str(), &ClusterNode::OnQuery, &closure);
  if (s != NATS_OK) {
    owned->queries = nullptr;
    return NatsFailed("subscribe " + subject, s);
  }
  return Status::Ok();
}

void ClusterNode::ServeQueries() {
  std::deque<std::pair<uint32_t, natsMsg*>> queries;
  {
    std::lock_guard<std::mutex> lock(inbox_.mu);
    queries.swap(inbox_.queue);
  }
  for (auto& [p, msg] : queries) {
    const auto it = owned_.find(p);
    const char* reply = natsMsg_GetReply(msg);
    if (it != owned_.end() && reply != nullptr && query_handler_) {
      const std::string answer =
          query_handler_(p, FoldReader(it->second.fold->fold()), options_.clock->Now(),
                         std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
      natsConnection_Publish(nats_->connection(), reply, answer.data(),
                             static_cast<int>(answer.size()));
      ++stats_.queries_answered;
    }
    natsMsg_Destroy(msg);
  }
}

Status ClusterNode::Open(const NodeOptions& options, std::unique_ptr<ClusterNode>* out) {
  if (!ValidNameToken(options.node_id)) {
    return Status::InvalidArgument("nodeId", "must be 1-64 characters of [A-Za-z0-9_-]");
  }
  if (options.renew_every_ms <= 0 || options.renew_every_ms * 2 > options.lease_ttl_ms) {
    return Status::InvalidArgument("renewEvery", "must be positive and at most half the lease TTL");
  }
  std::shared_ptr<NatsConnection> nats;
  if (Status s = NatsConnection::Connect(options.stream.url, options.stream.timeout_ms, &nats);
      !s.ok()) {
    return s;
  }
  std::unique_ptr<ClusterNode> node(new ClusterNode(options, nats));
  if (Status s = PartitionStream::Open(nats, options.stream, &node->input_); !s.ok()) return s;
  OutputOptions output;
  output.cluster = options.stream.cluster;
  output.partitions = options.stream.partitions;
  output.replicas = options.stream.replicas;
  output.duplicate_window_ms = options.output_duplicate_window_ms;
  if (Status s = OutputStream::Open(nats, output, &node->output_); !s.ok()) return s;
  LeaseOptions leases;
  leases.cluster = options.stream.cluster;
  leases.ttl_ms = options.lease_ttl_ms;
  leases.replicas = options.stream.replicas;
  if (Status s = LeaseTable::Open(nats, leases, &node->leases_); !s.ok()) return s;
  SnapshotOptions snapshots;
  snapshots.cluster = options.stream.cluster;
  snapshots.replicas = options.stream.replicas;
  if (Status s = SnapshotStream::Open(nats, snapshots, &node->snapshots_); !s.ok()) return s;
  *out = std::move(node);
  return Status::Ok();
}

std::vector<uint32_t> ClusterNode::owned() const {
  std::vector<uint32_t> out;
  for (const auto& [p, owned] : owned_) out.push_back(p);
  return out;
}

const PartitionFold* ClusterNode::partition(uint32_t p) const {
  const auto it = owned_.find(p);
  return it != owned_.end() ? it->second.fold.get() : nullptr;
}

size_t ClusterNode::pending() const {
  size_t n = 0;
  for (const auto& [p, owned] : owned_) n += owned.pending.size();
  return n;
}

void ClusterNode::KeepAlive(Status* first_error) {
  auto note = [first_error](Status s) {
    if (!s.ok() && first_error->ok()) *first_error = std::move(s);
  };
  const std::string& self = options_.node_id;
  TimeMs now = options_.clock->Now();
  if (!announced_ || now - announced_at_ >= options_.renew_every_ms) {
    Status s = leases_->Announce(self);
    if (s.ok()) {
      announced_ = true;
      announced_at_ = now;
    }
    note(std::move(s));
  }
  for (auto it = owned_.begin(); it != owned_.end();) {
    Owned& o = it->second;
    now = options_.clock->Now();
    bool lost = false;
    if (now - o.renewed_at >= options_.renew_every_ms) {
      Status s = leases_->Renew(it->first, self, &o.lease_revision);
      if (s.ok()) {
        o.renewed_at = now;
      } else if (s.code() == StatusCode::kFailedPrecondition) {
        lost = true;
      } else {
        // NATS could not say; past the TTL the lease is gone whatever NATS would say.
        lost = now - o.renewed_at >= options_.lease_ttl_ms;
        note(std::move(s));
      }
    }
    if (lost) {
      ++stats_.leases_lost;
      const auto next = std::next(it);
      Drop(it);
      it = next;
    } else {
      ++it;
    }
  }
}

Status ClusterNode::Tick() {
  Status first_error;
  auto note = [&first_error](Status s) {
    if (!s.ok() && first_error.ok()) first_error = std::move(s);
  };
  const std::string& self = options_.node_id;
  KeepAlive(&first_error);

  std::vector<std::string> live;
  if (Status s = leases_->LiveNodes(&live); !s.ok()) {
    // Without the live set, keep what is held and take nothing new.
    note(std::move(s));
  } else {
    if (!std::binary_search(live.begin(), live.end(), self)) {
      live.insert(std::lower_bound(live.begin(), live.end(), self), self);
    }
    live_nodes_ = live;
    for (uint32_t p = 0; p < options_.stream.partitions; ++p) {
      const bool preferred = PreferredOwner(p, live) == self;
      const auto it = owned_.find(p);
      if (it != owned_.end() && !preferred) {
        // A handover: what was folded goes out first, so the next owner starts after it.
        Owned& o = it->second;
        if (Status s = FoldNew(&o); !s.ok()) {
          note(std::move(s));
          continue;
        }
        if (Status s = PublishPending(p, &o); !s.ok() || !o.pending.empty()) {
          note(std::move(s));
          continue;
        }
        // The next owner starts from where this one is, not from an older snapshot.
        if (Status s = Snapshot(p, &o, /*handover=*/true); !s.ok()) {
          note(std::move(s));
          continue;
        }
        Status s = leases_->Release(p, self, o.lease_revision);
        if (s.ok()) ++stats_.leases_released;
        if (s.ok() || s.code() == StatusCode::kFailedPrecondition) {
          Drop(it);
        } else {
          note(std::move(s));
        }
      } else if (it == owned_.end() && preferred) {
        uint64_t revision = 0;
        Status s = leases_->Acquire(p, self, &revision);
        if (s.ok()) {
          note(TakeOver(p, revision, options_.clock->Now()));
        } else if (s.code() != StatusCode::kFailedPrecondition) {
          note(std::move(s));  // held by another node: it hands over, or its lease expires
        }
      }
    }
  }

  for (const uint32_t p : owned()) {
    KeepAlive(&first_error);
    ServeQueries();
    const auto it = owned_.find(p);
    if (it != owned_.end()) note(Advance(p, &it->second, options_.clock->Now()));
  }
  ServeQueries();
  return first_error;
}

Status ClusterNode::TakeOver(uint32_t p, uint64_t lease_revision, TimeMs now) {
  uint64_t published_through = 0;
  if (Status s = output_->LastTransitionSeq(p, &published_through); !s.ok()) {
    // Unknown where the previous owner stopped: publishing from the start could repeat past
    // the duplicate window. Give the lease back and try again next round.
    (void)leases_->Release(p, options_.node_id, lease_revision);
    return s;
  }
  Owned& o = owned_[p];
  o.lease_revision = lease_revision;
  o.renewed_at = now;
  o.fold = std::make_unique<PartitionFold>(input_.get(), p);
  o.published_through = published_through;
  ++stats_.leases_taken;
  StartFromSnapshot(p, &o);
  // Without its query subscription the partition is still folded and published; the queries
  // it misses fail by their deadline, and the next takeover subscribes again.
  return SubscribeQueries(p, &o);
}

void ClusterNode::StartFromSnapshot(uint32_t p, Owned* o) {
  SnapshotManifest manifest;
  std::string payload;
  bool found = false;
  const Status s = snapshots_->Latest(p, &manifest, &payload, &found);
  if (s.ok() && !found) return;
  // A snapshot whose transitions the output stream does not all hold would skip publishing
  // the missing ones: only a snapshot at or before the output's end is used.
  Status usable = s;
  if (usable.ok() && manifest.transition_seq > o->published_through) {
    usable = Status::FailedPrecondition("", "snapshot ahead of the output stream");
  }
  if (usable.ok()) usable = o->fold->RestoreSnapshot(payload, manifest.input_seq);
  if (!usable.ok()) {
    // Folded from the start instead: slower, never wrong. A failed restore may have left the
    // fold half-built, so it starts over.
    ++stats_.snapshots_refused;
    last_snapshot_refusal_ = "partition " + std::to_string(p) + ": " + usable.ToString();
    o->fold = std::make_unique<PartitionFold>(input_.get(), p);
    return;
  }
  o->snapshot_at = manifest.input_seq;
  ++stats_.snapshots_restored;
}

Status ClusterNode::Snapshot(uint32_t p, Owned* o, bool handover) {
  const uint64_t position = o->fold->next_seq() - 1;
  if (options_.snapshot_every_records == 0 || !o->pending.empty() || position <= o->snapshot_at) {
    return Status::Ok();
  }
  if (!handover && position - o->snapshot_at < options_.snapshot_every_records) {
    return Status::Ok();
  }
  std::string payload;
  if (Status s = o->fold->EncodeSnapshot(&payload); !s.ok()) return s;
  SnapshotManifest manifest;
  manifest.id =
      std::to_string(position) + "-" + options_.node_id + "-" + std::to_string(++snapshots_made_);
  manifest.input_seq = position;
  manifest.transition_seq = o->fold->fold().state().transition_seq;
  if (Status s = snapshots_->Publish(p, payload, &manifest); !s.ok()) return s;
  o->snapshot_at = position;
  ++stats_.snapshots_published;
  return Status::Ok();
}

Status ClusterNode::FoldNew(Owned* o) {
  std::vector<Transition> folded;
  Status s = o->fold->CatchUp(&folded);  // what it folded before an error stays folded
  for (Transition& t : folded) {
    if (t.seq <= o->published_through) {
      ++stats_.transitions_suppressed;
    } else {
      o->pending.push_back(std::move(t));
    }
  }
  return s;
}

Status ClusterNode::PublishPending(uint32_t p, Owned* o) {
  while (!o->pending.empty()) {
    const Transition& t = o->pending.front();
    if (Status s = output_->Publish(p, t); !s.ok()) return s;
    BUCKETD_CHECK(t.seq > o->published_through);
    o->published_through = t.seq;
    ++stats_.transitions_published;
    o->pending.pop_front();
  }
  return Status::Ok();
}

Status ClusterNode::Advance(uint32_t p, Owned* o, TimeMs now) {
  if (Status s = FoldNew(o); !s.ok()) return s;
  if (Status s = PublishPending(p, o); !s.ok()) return s;
  if (Status s = Snapshot(p, o, /*handover=*/false); !s.ok()) return s;
  const uint64_t folded_through = o->fold->next_seq() - 1;
  if (!options_.publish_sweeps || folded_through == 0 || !o->fold->fold().HasDue(now)) {
    return Status::Ok();
  }
  Record sweep;
  sweep.kind = RecordKind::kSweep;
  sweep.at = now;
  uint64_t seq = 0;
  Status s = input_->Publish(p, sweep, PublishOptions{"", folded_through}, &seq);
  if (s.code() == StatusCode::kFailedPrecondition) {
    ++stats_.sweeps_fenced;  // newer records to fold first; the next round sweeps again
    return Status::Ok();
  }
  if (!s.ok()) return s;
  ++stats_.sweeps_published;
  if (Status f = FoldNew(o); !f.ok()) return f;
  return PublishPending(p, o);
}

Status ClusterNode::Leave() {
  Status first_error;
  for (auto it = owned_.begin(); it != owned_.end();) {
    Status s = PublishPending(it->first, &it->second);
    if (s.ok()) s = Snapshot(it->first, &it->second, /*handover=*/true);
    if (s.ok()) s = leases_->Release(it->first, options_.node_id, it->second.lease_revision);
    if (s.ok()) ++stats_.leases_released;
    if (!s.ok() && first_error.ok()) first_error = s;
    const auto next = std::next(it);
    Drop(it);
    it = next;
  }
  if (Status s = leases_->Withdraw(options_.node_id); !s.ok() && first_error.ok()) {
    first_error = s;
  }
  announced_ = false;
  return first_error;
}

}  // namespace bucketd::cluster
