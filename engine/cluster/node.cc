#include "engine/cluster/node.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
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
    // Drained, not just unsubscribed: the wait ends once no callback of it can still run
    // (bounded: a NATS outage must not stall the round for long).
    if (natsSubscription_Drain(sub) == NATS_OK) {
      natsSubscription_WaitForDrainCompletion(sub, std::min<int64_t>(nats_->timeout_ms(), 500));
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
  QueryClosure& closure = query_closures_.at(p);
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
      const Fold& fold = it->second.fold->fold();
      const TimeMs now = options_.manual_clock ? fold.state().now : options_.clock->Now();
      const std::string answer =
          query_handler_(p, FoldReader(fold), now,
                         std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
      natsConnection_Publish(nats_->connection(), reply, answer.data(),
                             static_cast<int>(answer.size()));
      ++stats_.queries_answered;
    }
    natsMsg_Destroy(msg);
  }
}

OutputOptions OutputOptionsOf(const NodeOptions& options) {
  OutputOptions output;
  output.cluster = options.stream.cluster;
  output.partitions = options.stream.partitions;
  output.replicas = options.stream.replicas;
  output.duplicate_window_ms = options.output_duplicate_window_ms;
  return output;
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
  for (uint32_t p = 0; p < options.stream.partitions; ++p) {
    node->query_closures_.push_back(QueryClosure{&node->inbox_, p});
  }
  if (Status s = PartitionStream::Open(nats, options.stream, &node->input_); !s.ok()) return s;
  node->control_ = std::make_unique<ControlLog>(node->input_.get());
  if (Status s = OutputStream::Open(nats, OutputOptionsOf(options), &node->output_); !s.ok()) {
    return s;
  }
  LeaseOptions leases;
  leases.cluster = options.stream.cluster;
  leases.ttl_ms = options.lease_ttl_ms;
  leases.replicas = options.stream.replicas;
  if (Status s = LeaseTable::Open(nats, leases, &node->leases_); !s.ok()) return s;
  SnapshotOptions snapshots;
  snapshots.cluster = options.stream.cluster;
  snapshots.replicas = options.stream.replicas;
  if (Status s = SnapshotStream::Open(nats, snapshots, &node->snapshots_); !s.ok()) return s;
  if (!options.local_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(options.local_dir, error);
    if (error) {
      return Status::IoError("local snapshot store " + options.local_dir + ": " + error.message());
    }
    if (Status s = LocalStore::Open(options.local_dir, &node->local_); !s.ok()) return s;
  }
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

void ClusterNode::KeepAlive(Status* first_error, bool may_drop) {
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
    if (!o.lost && now - o.renewed_at >= options_.renew_every_ms) {
      Status s = leases_->Renew(it->first, self, &o.lease_revision);
      if (s.ok()) {
        o.renewed_at = now;
      } else if (s.code() == StatusCode::kFailedPrecondition) {
        o.lost = true;
      } else {
        // NATS could not say; past the TTL the lease is gone whatever NATS would say.
        o.lost = now - o.renewed_at >= options_.lease_ttl_ms;
        note(std::move(s));
      }
      if (o.lost) ++stats_.leases_lost;
    }
    if (o.lost && may_drop) {
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
  KeepAlive(&first_error, /*may_drop=*/true);
  // A control record whose writer died (or gave up) before it finished the fan-out reaches
  // every partition, once it is old enough not to be in progress (control_log.h).
  note(control_->CompleteLast());

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
        if (Status s = FoldNew(&o, nullptr); !s.ok()) {
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
          // The next owner's snapshots will be newer than this node's copy.
          if (local_ != nullptr) (void)local_->Remove(input_->stream_name(), p);
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
    KeepAlive(&first_error, /*may_drop=*/true);
    ServeQueries();
    const auto it = owned_.find(p);
    if (it != owned_.end()) note(Advance(p, &it->second, options_.clock->Now()));
  }
  ServeQueries();
  return first_error;
}

Status ClusterNode::TakeOver(uint32_t p, uint64_t lease_revision, TimeMs now) {
  uint64_t published_through = 0;
  uint64_t output_seq = 0;
  if (Status s = output_->Last(p, &published_through, &output_seq); !s.ok()) {
    // Unknown where the previous owner stopped. Give the lease back and try next round.
    (void)leases_->Release(p, options_.node_id, lease_revision);
    return s;
  }
  Owned o;
  o.lease_revision = lease_revision;
  o.renewed_at = now;
  o.fold = std::make_unique<PartitionFold>(input_.get(), p);
  o.published_through = published_through;
  o.output_seq = output_seq;
  if (Status s = StartFromSnapshot(p, &o); !s.ok()) {
    (void)leases_->Release(p, options_.node_id, lease_revision);
    return s;
  }
  owned_.emplace(p, std::move(o));
  ++stats_.leases_taken;
  // Queries on the partition are answered once its fold has caught up (Advance).
  return Status::Ok();
}

Status ClusterNode::StartFromSnapshot(uint32_t p, Owned* o) {
  const std::string& stream = input_->stream_name();
  SnapshotManifest local_manifest;
  bool local_found = false;
  if (local_ != nullptr) {
    if (Status s = local_->GetManifest(stream, p, &local_manifest, &local_found); !s.ok()) {
      ++stats_.snapshots_refused;
      last_snapshot_refusal_ = "partition " + std::to_string(p) + " (local): " + s.ToString();
    }
  }
  SnapshotManifest shared_manifest;
  bool shared_found = false;
  const Status shared = snapshots_->LatestManifest(p, &shared_manifest, &shared_found);
  // NATS could not say: without a local snapshot the takeover waits for the next round
  // rather than fold from the start (a partition's whole stream) because of a passing fault.
  if (shared.code() == StatusCode::kIoError && !local_found) return shared;
  if (!shared.ok()) {
    ++stats_.snapshots_refused;
    last_snapshot_refusal_ = "partition " + std::to_string(p) + ": " + shared.ToString();
  }
  shared_found = shared_found && shared.ok();
  // The one further on first (less of the stream to fold after it); the node's own when they
  // are at one position (no transfer). The other is the fallback.
  const bool local_first =
      local_found && (!shared_found || local_manifest.input_seq >= shared_manifest.input_seq);
  for (const bool local : {local_first, !local_first}) {
    if (local ? !local_found : !shared_found) continue;
    SnapshotManifest manifest;
    std::string payload;
    bool found = false;
    Status s = local ? local_->Get(stream, p, &manifest, &payload, &found)
                     : snapshots_->Latest(p, &manifest, &payload, &found);
    if (s.code() == StatusCode::kIoError && !local) return s;
    if (s.ok() && !found) continue;  // gone since the manifest was read
    if (s.ok()) s = Restore(p, o, manifest, payload);
    if (s.code() == StatusCode::kIoError && !local) return s;
    if (s.ok()) {
      o->snapshot_at = manifest.input_seq;
      ++stats_.snapshots_restored;
      if (local) ++stats_.snapshots_restored_local;
      return Status::Ok();
    }
    // Folded from the other snapshot or from the start instead: slower, never wrong.
    ++stats_.snapshots_refused;
    last_snapshot_refusal_ =
        "partition " + std::to_string(p) + (local ? " (local): " : ": ") + s.ToString();
  }
  return Status::Ok();
}

Status ClusterNode::Restore(uint32_t p, Owned* o, const SnapshotManifest& manifest,
                            const std::string& payload) {
  // A snapshot whose transitions the output stream does not all hold would skip publishing
  // the missing ones: only a snapshot at or before the output's end is used.
  Status usable;
  if (manifest.transition_seq > o->published_through) {
    usable = Status::FailedPrecondition("", "snapshot ahead of the output stream");
  }
  if (usable.ok()) {
    usable = o->fold->RestoreSnapshot(payload, manifest.state_bytes, manifest.input_seq,
                                      manifest.control_seq);
  }
  // A failed restore may have left the fold half-built: it starts over.
  if (!usable.ok()) o->fold = std::make_unique<PartitionFold>(input_.get(), p);
  return usable;
}

Status ClusterNode::Snapshot(uint32_t p, Owned* o, bool handover) {
  const uint64_t position = o->fold->next_seq() - 1;
  if (options_.snapshot_every_records == 0 || !o->pending.empty() || position <= o->snapshot_at) {
    return Status::Ok();
  }
  // Counted in the partition's own messages (not stream positions, which all partitions
  // share): the cost of a new owner's catch-up is what it bounds.
  if (!handover &&
      o->fold->records_read() - o->records_at_snapshot < options_.snapshot_every_records) {
    return Status::Ok();
  }
  std::string payload;
  SnapshotManifest manifest;
  if (Status s = o->fold->EncodeSnapshot(&payload, &manifest.state_bytes); !s.ok()) return s;
  manifest.id =
      std::to_string(position) + "-" + options_.node_id + "-" + std::to_string(++snapshots_made_);
  manifest.input_seq = position;
  manifest.transition_seq = o->fold->fold().state().transition_seq;
  manifest.control_seq = o->fold->control_seq();
  if (local_ != nullptr && !local_->Put(input_->stream_name(), p, manifest, payload).ok()) {
    ++stats_.local_snapshot_failures;  // JetStream's copy still goes out
  }
  if (Status s = snapshots_->Publish(p, payload, &manifest); !s.ok()) return s;
  o->snapshot_at = position;
  o->records_at_snapshot = o->fold->records_read();
  ++stats_.snapshots_published;
  return Status::Ok();
}

Status ClusterNode::FoldNew(Owned* o, bool* caught_up,
                            std::optional<std::chrono::steady_clock::time_point> until) {
  std::vector<Transition> folded;
  Status s = o->fold->CatchUp(&folded, caught_up, until);  // what it folded before an error stays
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
  // Leases are renewed while a long backlog goes out (a definition that enters a million
  // users); a lease lost meanwhile stops the publishing.
  constexpr uint64_t kRenewEveryPublishes = 256;
  for (uint64_t published = 0; !o->pending.empty(); ++published) {
    if (published % kRenewEveryPublishes == kRenewEveryPublishes - 1) {
      Status ignored;  // reported by the round's own KeepAlive
      KeepAlive(&ignored, /*may_drop=*/false);
    }
    if (o->lost) return Status::FailedPrecondition("", "lease lost");
    const Transition& t = o->pending.front();
    uint64_t stream_seq = 0;
    const Status s = output_->Publish(p, t, o->output_seq, &stream_seq);
    if (s.code() == StatusCode::kFailedPrecondition) {
      // Someone appended since this node last looked: a stale owner still publishing the
      // same transitions, or this node's own publish whose ack was lost. Go on from the
      // output's end; what it holds already is not published again.
      uint64_t transition_seq = 0;
      if (Status l = output_->Last(p, &transition_seq, &o->output_seq); !l.ok()) return l;
      o->published_through = std::max(o->published_through, transition_seq);
      while (!o->pending.empty() && o->pending.front().seq <= o->published_through) {
        o->pending.pop_front();
        ++stats_.transitions_suppressed;
      }
      ++stats_.output_resyncs;
      continue;
    }
    if (!s.ok()) return s;
    BUCKETD_CHECK(t.seq > o->published_through);
    o->output_seq = stream_seq;
    o->published_through = t.seq;
    ++stats_.transitions_published;
    o->pending.pop_front();
  }
  return Status::Ok();
}

Status ClusterNode::Advance(uint32_t p, Owned* o, TimeMs now) {
  // A slice of the catch-up per partition and round: a node that took over partitions with
  // long streams behind them (no snapshot, or an old one) still comes back to the top of the
  // round soon, where it takes the leases that expired meanwhile. Folding whole backlogs in
  // turn made the rounds last tens of seconds on a loaded machine, and the dead node's last
  // partitions waited that long for an owner (bench/README.md, "Failover at 1M users").
  constexpr auto kCatchUpSlice = std::chrono::milliseconds(200);
  bool caught_up = false;
  if (Status s = FoldNew(o, &caught_up, std::chrono::steady_clock::now() + kCatchUpSlice);
      !s.ok()) {
    return s;
  }
  if (caught_up && !o->serving) {
    // From now on its answers are the fold of the stream as it was moments ago, not of a
    // state still replaying: until then queries on it go unanswered (and fail at their
    // deadline), never wrong.
    if (Status s = SubscribeQueries(p, o); !s.ok()) return s;
    o->serving = true;
  }
  if (Status s = PublishPending(p, o); !s.ok()) return s;
  if (Status s = Snapshot(p, o, /*handover=*/false); !s.ok()) return s;
  const uint64_t folded_through = o->fold->next_seq() - 1;
  if (options_.manual_clock || !caught_up || folded_through == 0 || !o->fold->fold().HasDue(now)) {
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
  if (Status f = FoldNew(o, nullptr); !f.ok()) return f;
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
