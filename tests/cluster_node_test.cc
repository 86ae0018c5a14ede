// Cluster nodes (docs/cluster.md, "Ownership: leases", "The output stream"): nodes share the
// partitions by rendezvous hashing over the live ones, hand partitions over when a node
// joins, take a dead node's partitions when its leases expire, and publish every transition
// of the single engine's run exactly once, in each partition's order; an owner in wall-clock
// mode appends the sweeps that make clock-driven transitions happen.
//
// A node "dies" here by being destroyed without Leave(): it stops renewing, exactly what the
// rest of the cluster sees of a killed process. (Killing a real bucketd process in cluster
// mode comes with the server's cluster flags.)
#include <chrono>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/cluster_test_support.h"
#include "tests/nats_test_support.h"
#include "tests/test_support.h"

#include "engine/base/json_writer.h"
#include "engine/cluster/leases.h"
#include "engine/cluster/local_store.h"
#include "engine/cluster/node.h"
#include "engine/cluster/partition.h"
#include "engine/cluster/record_json.h"
#include "engine/cluster/snapshot_stream.h"
#include "engine/state/digest.h"

namespace bucketd::cluster {
namespace {

using testing::NatsCluster;
using testing::PublishRouted;
using testing::Reference;
using testing::RequireOk;
using testing::RunReference;
using testing::TestStream;

constexpr uint32_t kPartitions = 8;
constexpr TimeMs kLeaseTtlMs = 1500;

// The output stream's duplicate window in the takeover scenario: far shorter than a takeover,
// so that only Bucketd-Transition-Seq keeps a new owner from publishing again what the old one
// published (the message ids' window is checked on its own below).
constexpr TimeMs kShortDuplicateWindowMs = 100;

NodeOptions TestNode(const NatsCluster& nats, const std::string& id, bool sweeps) {
  NodeOptions o;
  o.stream = TestStream(nats, kPartitions);
  o.node_id = id;
  o.lease_ttl_ms = kLeaseTtlMs;
  o.renew_every_ms = 300;
  o.manual_clock = !sweeps;
  // Sweeping nodes are the second test's: its output stream keeps the default window.
  if (!sweeps) o.output_duplicate_window_ms = kShortDuplicateWindowMs;
  return o;
}

std::unique_ptr<ClusterNode> OpenNode(const NatsCluster& nats, const std::string& id,
                                      std::shared_ptr<ManualClock> clock = nullptr,
                                      uint64_t snapshot_every_records = 0) {
  NodeOptions o = TestNode(nats, id, /*sweeps=*/clock != nullptr);
  o.snapshot_every_records = snapshot_every_records;
  if (clock != nullptr) o.clock = clock;
  std::unique_ptr<ClusterNode> node;
  RequireOk(ClusterNode::Open(o, &node));
  return node;
}

// Every partition owned by exactly the node rendezvous hashing prefers among `nodes`, each
// owner's fold at the partition's last record, nothing left to publish.
bool Settled(const std::vector<ClusterNode*>& nodes, PartitionStream* input) {
  std::vector<std::string> ids;
  for (ClusterNode* n : nodes) ids.push_back(n->node_id());
  std::sort(ids.begin(), ids.end());
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const std::string preferred = PreferredOwner(p, ids);
    uint64_t last = 0;
    if (!input->LastSeq(p, &last).ok()) return false;  // JetStream electing a leader: later
    for (ClusterNode* n : nodes) {
      const PartitionFold* fold = n->partition(p);
      if ((fold != nullptr) != (n->node_id() == preferred)) return false;
      if (fold != nullptr && fold->next_seq() != last + 1) return false;
    }
  }
  for (ClusterNode* n : nodes) {
    if (n->pending() != 0) return false;
  }
  return true;
}

enum class Faults { kNone, kExpected };

// Ticks the nodes (with the wall clock) until they settle; returns how long it took. A round
// must not fail unless NATS faults are expected.
std::chrono::milliseconds TickUntilSettled(const std::vector<ClusterNode*>& nodes,
                                           PartitionStream* input, Faults faults = Faults::kNone) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(60);
  std::map<std::string, std::string> last_error;
  for (;;) {
    for (ClusterNode* n : nodes) {
      Status s = n->Tick();
      INFO(n->node_id() << ": " << s.ToString());
      if (faults == Faults::kNone) CHECK(s.ok());
      if (!s.ok()) last_error[n->node_id()] = s.ToString();
    }
    if (Settled(nodes, input)) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      for (ClusterNode* n : nodes) {
        std::string owned;
        for (uint32_t p : n->owned()) {
          owned += " " + std::to_string(p) + "@" + std::to_string(n->partition(p)->next_seq());
        }
        UNSCOPED_INFO(n->node_id() << " owns" << owned << ", pending " << n->pending()
                                   << ", last error: " << last_error[n->node_id()]);
      }
      for (uint32_t p = 0; p < kPartitions; ++p) {
        uint64_t last = 0;
        UNSCOPED_INFO("partition " << p << " last " << last << " "
                                   << input->LastSeq(p, &last).ToString() << " " << last);
      }
      FAIL("the nodes did not settle in 60 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start);
}

// Publishes `records` as PublishRouted does while `nodes` go on with their rounds (one at most
// every 100 ms), as their runners would: live nodes keep their leases however long the
// publishing takes (a sanitizer build on a loaded machine can take longer than the lease TTL).
void PublishWhileTicking(PartitionStream* input, std::span<const Record> records,
                         const std::vector<ClusterNode*>& nodes) {
  auto last = std::chrono::steady_clock::now();
  PublishRouted(input, records, nullptr, [&] {
    if (std::chrono::steady_clock::now() - last < std::chrono::milliseconds(100)) return;
    for (ClusterNode* n : nodes) {
      Status s = n->Tick();
      INFO(n->node_id() << ": " << s.ToString());
      CHECK(s.ok());
    }
    last = std::chrono::steady_clock::now();
  });
}

// The transition's JSON without its "seq" (a partition's number on the output stream, the
// single engine's global number in the reference).
std::string WithoutSeq(const std::string& json) {
  static const std::regex seq(R"(^\{"seq":[0-9]+,)");
  return std::regex_replace(json, seq, "{");
}

std::string JsonOf(const Transition& t) {
  JsonWriter w;
  WriteTransition(t, &w);
  return w.Take();
}

// Every message of the output stream, checked per partition: message id = idempotencyKey,
// Bucketd-Transition-Seq gap-free from 1 in stream order, each transition in its user's
// partition. Returns the transitions (without seq) by idempotencyKey; a key twice fails.
std::map<std::string, std::string> ReadOutput(OutputStream* output) {
  std::map<std::string, std::string> by_key;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    uint64_t expected_seq = 1;
    for (uint64_t from = 1;;) {
      std::vector<OutputMessage> page;
      RequireOk(output->Read(p, from, 1000, &page));
      if (page.empty()) break;
      for (const OutputMessage& m : page) {
        INFO("partition " << p << ": " << m.json);
        CHECK(m.transition_seq == expected_seq++);
        CHECK(m.json.find("\"seq\":" + std::to_string(m.transition_seq) + ",") == 1);
        CHECK(m.json.find("\"idempotencyKey\":\"" + m.msg_id + "\"") != std::string::npos);
        CHECK(by_key.emplace(m.msg_id, WithoutSeq(m.json)).second);
      }
      from = page.back().stream_seq + 1;
    }
  }
  return by_key;
}

// The output stream holds exactly the single engine's transitions, each once, equal but for
// their seq.
void CheckOutputIsReference(OutputStream* output, const Reference& ref) {
  const std::map<std::string, std::string> out = ReadOutput(output);
  CHECK(out.size() == ref.transitions.size());
  for (const Transition& t : ref.transitions) {
    INFO(t.IdempotencyKey());
    const auto it = out.find(t.IdempotencyKey());
    REQUIRE(it != out.end());
    CHECK(it->second == WithoutSeq(JsonOf(t)));
  }
}

TEST_CASE(
    "nodes share partitions, hand over on a join, take over after a death, and publish "
    "each transition once") {
  const Reference ref = RunReference(11, 2500);
  REQUIRE(ref.transitions.size() > 500);
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> input;
  RequireOk(PartitionStream::Open(TestStream(nats, kPartitions), &input));
  const std::span<const Record> records(ref.records);
  const size_t third = records.size() / 3;

  // The partitions these two ids split: both get some (checked, so the handover is real).
  const std::vector<std::string> both = {"node-a", "node-b"};
  std::set<uint32_t> b_share;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    if (PreferredOwner(p, both) == "node-b") b_share.insert(p);
  }
  REQUIRE(!b_share.empty());
  REQUIRE(b_share.size() < kPartitions);

  // One node alone takes every partition.
  // Without snapshots, a new owner folds each partition from the start and publishes only
  // past what the old owner did (Bucketd-Transition-Seq); with snapshots every 50 of a
  // partition's records (and at each handover), it starts from the newest.
  const uint64_t snapshot_every = GENERATE(0, 50);
  INFO("snapshot_every_records " << snapshot_every);
  auto a = OpenNode(nats, "node-a", nullptr, snapshot_every);
  PublishRouted(input.get(), records.subspan(0, third));
  TickUntilSettled({a.get()}, input.get());
  CHECK(a->owned().size() == kPartitions);
  CHECK(a->stats().leases_taken == kPartitions);
  const uint64_t a_published = a->stats().transitions_published;
  CHECK(a_published > 0);

  // A second node joins: node-a hands node-b its share, which goes on from where node-a
  // stopped publishing.
  auto b = OpenNode(nats, "node-b", nullptr, snapshot_every);
  PublishWhileTicking(input.get(), records.subspan(third, third), {a.get(), b.get()});
  TickUntilSettled({a.get(), b.get()}, input.get());
  CHECK(a->stats().leases_released == b_share.size());
  CHECK(b->stats().leases_taken == b_share.size());
  if (snapshot_every == 0) {
    CHECK(b->stats().transitions_suppressed > 0);
  } else {
    // node-a stored a snapshot of each at the handover: node-b started from them.
    CHECK(b->stats().snapshots_restored == b_share.size());
    CHECK(b->stats().snapshots_refused == 0);
  }
  const std::vector<uint32_t> b_owned = b->owned();
  CHECK(std::set<uint32_t>(b_owned.begin(), b_owned.end()) == b_share);

  // node-a dies: no Leave, no more renewals. node-b takes its partitions once their leases
  // expire, folds them from their streams and publishes only what node-a had not.
  const uint64_t b_taken_before = b->stats().leases_taken;
  const uint64_t b_restored_before = b->stats().snapshots_restored;
  const uint64_t b_suppressed_before = b->stats().transitions_suppressed;
  CHECK((a->stats().snapshots_published > 0) == (snapshot_every > 0));
  a.reset();
  const auto died = std::chrono::steady_clock::now();
  PublishWhileTicking(input.get(), records.subspan(2 * third), {b.get()});
  TickUntilSettled({b.get()}, input.get());
  const auto failover = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - died);
  CHECK(b->owned().size() == kPartitions);
  CHECK(b->stats().leases_taken - b_taken_before == kPartitions - b_share.size());
  // Not before the dead node's leases expired: node-a renewed them at most a renewal period
  // (and a round) before its death, so they lived at least TTL - 300 ms after it. Counted from
  // the death, not from the end of the publishing, which may outlast the TTL.
  CHECK(failover.count() >= kLeaseTtlMs / 2);
  if (snapshot_every == 0) {
    CHECK(b->stats().transitions_suppressed > b_suppressed_before);
  } else {
    // From node-a's periodic snapshots where it had stored one (a partition whose position
    // had not folded 50 more records since the handover is folded from the start), then the tails.
    CHECK(b->stats().snapshots_restored > b_restored_before);
    INFO(b->last_snapshot_refusal());
    CHECK(b->stats().snapshots_refused == 0);
  }
  std::printf("takeover of %zu partitions after a node's death: %lld ms (lease TTL %lld ms)\n",
              kPartitions - b_share.size(), static_cast<long long>(failover.count()),
              static_cast<long long>(kLeaseTtlMs));

  // The output stream: the single engine's transitions, each exactly once.
  CheckOutputIsReference(b->output(), ref);
  std::map<std::string, uint64_t> counts;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    for (const auto& bucket : b->partition(p)->fold().state().buckets) {
      if (bucket->live()) counts[bucket->def.id] += bucket->members.size();
    }
  }
  CHECK(counts == ref.counts);
  // Started from snapshots or not, each partition's state is the fold of its stream: a fresh
  // fold of the whole stream reaches the same digest.
  for (uint32_t p = 0; p < kPartitions; ++p) {
    PartitionFold fresh(input.get(), p);
    std::vector<Transition> ignored;
    RequireOk(fresh.CatchUp(&ignored));
    INFO("partition " << p);
    CHECK(ComputeDigest(fresh.fold().state()) == ComputeDigest(b->partition(p)->fold().state()));
    CHECK(fresh.next_seq() == b->partition(p)->next_seq());
    // One server: no replica can drift, so every run the consumers delivered (records with
    // message ids, hence headers) matched the leader's copy.
    CHECK(b->partition(p)->replica_mismatches() == 0);
    CHECK(fresh.replica_mismatches() == 0);
  }

  // A node that leaves hands everything over at once. (A round first: the checks above took
  // no rounds, and a sanitizer build may spend longer than the lease TTL on them.)
  TickUntilSettled({b.get()}, input.get());
  const uint64_t released_before = b->stats().leases_released;
  RequireOk(b->Leave());
  CHECK(b->stats().leases_released - released_before == kPartitions);
  CHECK(b->owned().empty());
  std::string holder = "?";
  RequireOk(b->leases()->Holder(0, &holder));
  CHECK(holder.empty());
  std::vector<std::string> live;
  RequireOk(b->leases()->LiveNodes(&live));
  CHECK(live.empty());
}

TEST_CASE("a restarted node takes its partitions back from its own snapshots, at their position") {
  const Reference ref = RunReference(17, 1500);
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> input;
  RequireOk(PartitionStream::Open(TestStream(nats, kPartitions), &input));
  const std::span<const Record> records(ref.records);
  testing::TempDir dir;
  const std::string local_dir = dir.path() + "/cluster";
  auto open = [&] {
    NodeOptions o = TestNode(nats, "node-a", /*sweeps=*/false);
    o.snapshot_every_records = 40;
    o.local_dir = local_dir;
    std::unique_ptr<ClusterNode> node;
    RequireOk(ClusterNode::Open(o, &node));
    return node;
  };
  auto a = open();
  // Two nodes may not share a store.
  {
    NodeOptions o = TestNode(nats, "node-b", /*sweeps=*/false);
    o.local_dir = local_dir;
    std::unique_ptr<ClusterNode> b;
    CHECK(ClusterNode::Open(o, &b).code() == StatusCode::kIoError);
  }
  PublishRouted(input.get(), records.subspan(0, records.size() / 2));
  TickUntilSettled({a.get()}, input.get());
  CHECK(a->stats().snapshots_published > 0);
  CHECK(a->stats().local_snapshot_failures == 0);

  // node-a dies (no Leave: no handover snapshot), and JetStream loses every snapshot: only
  // node-a's disk knows where each partition was.
  a.reset();
  {
    std::shared_ptr<NatsConnection> connection;
    RequireOk(NatsConnection::Connect(nats.url(), 5000, &connection));
    REQUIRE(js_PurgeStream(connection->js(), "BUCKETD_SNAP_test", nullptr, nullptr) == NATS_OK);
  }
  // Each partition's stored position, and how many of its messages follow it.
  std::map<uint32_t, uint64_t> tail_after_restart;
  {
    std::unique_ptr<LocalStore> store;
    RequireOk(LocalStore::Open(local_dir, &store));
    PublishRouted(input.get(), records.subspan(records.size() / 2));
    for (uint32_t p = 0; p < kPartitions; ++p) {
      SnapshotManifest manifest;
      bool found = false;
      RequireOk(store->GetManifest(input->stream_name(), p, &manifest, &found));
      REQUIRE(found);
      CHECK(manifest.input_seq > 0);
      for (uint64_t from = manifest.input_seq + 1;;) {
        ReadResult read;
        RequireOk(input->Read(p, from, kReadRecordsMax, &read));
        tail_after_restart[p] += read.records.size() + read.undecodable.size();
        if (read.next_seq == from) break;
        from = read.next_seq;
      }
    }
  }

  // Back under the same id on the same disk: once its old leases expire, it restores each
  // partition from its store and reads only what follows the stored position.
  a = open();
  TickUntilSettled({a.get()}, input.get());
  INFO(a->last_snapshot_refusal());
  CHECK(a->stats().snapshots_refused == 0);
  CHECK(a->stats().snapshots_restored == kPartitions);
  CHECK(a->stats().snapshots_restored_local == kPartitions);
  for (uint32_t p = 0; p < kPartitions; ++p) {
    INFO("partition " << p);
    CHECK(a->partition(p)->records_read() == tail_after_restart[p]);
    PartitionFold fresh(input.get(), p);
    std::vector<Transition> ignored;
    RequireOk(fresh.CatchUp(&ignored));
    CHECK(ComputeDigest(fresh.fold().state()) == ComputeDigest(a->partition(p)->fold().state()));
  }
  CheckOutputIsReference(a->output(), ref);

  // A node's copy of a snapshot that the stream's leader does not recognise (another stream
  // of the same name since: here, its last message read deleted) is refused, and the
  // partition folded from the start.
  auto store_of = [&] {
    a.reset();
    std::unique_ptr<LocalStore> store;
    RequireOk(LocalStore::Open(local_dir, &store));
    return store;
  };
  {
    auto store = store_of();
    SnapshotManifest manifest;
    std::string payload;
    bool found = false;
    RequireOk(store->Get(input->stream_name(), 0, &manifest, &payload, &found));
    REQUIRE(found);
    const StreamPoint anchor{[&] {
                               uint64_t seq = 0;
                               for (int i = 7; i >= 0; --i) {
                                 seq = (seq << 8) |
                                       static_cast<uint8_t>(payload[manifest.state_bytes + i]);
                               }
                               return seq;
                             }(),
                             0};
    REQUIRE(anchor.seq > 0);
    std::shared_ptr<NatsConnection> connection;
    RequireOk(NatsConnection::Connect(nats.url(), 5000, &connection));
    REQUIRE(js_DeleteMsg(connection->js(), input->stream_name().c_str(), anchor.seq, nullptr,
                         nullptr) == NATS_OK);
  }
  a = open();
  TickUntilSettled({a.get()}, input.get());
  // (JetStream's copy, when the restarted node stored one since, has the same last message
  // read: refused too.)
  CHECK(a->stats().snapshots_refused >= 1);
  CHECK(a->last_snapshot_refusal().find("partition 0") == 0);
  CHECK(a->stats().snapshots_restored_local == kPartitions - 1);
  PartitionFold fresh(input.get(), 0);
  std::vector<Transition> ignored;
  RequireOk(fresh.CatchUp(&ignored));
  CHECK(ComputeDigest(fresh.fold().state()) == ComputeDigest(a->partition(0)->fold().state()));
}

TEST_CASE(
    "nodes on a 3-server JetStream (R3) lose nothing and repeat nothing when a NATS "
    "server is killed and restarted") {
  const Reference ref = RunReference(23, 1500);
  NatsCluster nats(3);
  StreamOptions stream = TestStream(nats, kPartitions);
  stream.replicas = 3;
  std::unique_ptr<PartitionStream> input;
  RequireOk(PartitionStream::Open(stream, &input));
  const std::span<const Record> records(ref.records);
  const size_t third = records.size() / 3;
  auto open = [&](const std::string& id) {
    NodeOptions o = TestNode(nats, id, false);
    o.stream = stream;
    // A request to a JetStream electing a leader waits up to its 5 s timeout: leases long
    // enough that one such wait does not lose them (losing them is safe, only slower).
    o.lease_ttl_ms = 8000;
    o.renew_every_ms = 1000;
    std::unique_ptr<ClusterNode> node;
    RequireOk(ClusterNode::Open(o, &node));
    return node;
  };
  auto a = open("node-a");
  auto b = open("node-b");
  PublishRouted(input.get(), records.subspan(0, third));
  TickUntilSettled({a.get(), b.get()}, input.get());

  // Each server in turn: killed while inputs arrive and the nodes fold and publish, then
  // restarted. The streams and the lease bucket have a majority throughout.
  for (int server = 0; server < 2; ++server) {
    nats.Kill(server);
    const size_t from = third + static_cast<size_t>(server) * (third / 2);
    const size_t count = server == 0 ? third / 2 : records.size() - from;
    PublishRouted(input.get(), records.subspan(from, count));
    TickUntilSettled({a.get(), b.get()}, input.get(), Faults::kExpected);
    nats.Restart(server);
  }
  TickUntilSettled({a.get(), b.get()}, input.get(), Faults::kExpected);

  CheckOutputIsReference(a->output(), ref);
  std::printf("NATS server kills: leases lost %llu, taken %llu; suppressed %llu\n",
              static_cast<unsigned long long>(a->stats().leases_lost + b->stats().leases_lost),
              static_cast<unsigned long long>(a->stats().leases_taken + b->stats().leases_taken),
              static_cast<unsigned long long>(a->stats().transitions_suppressed +
                                              b->stats().transitions_suppressed));
}

// The two-record stream of the wall-clock tests: bucket "active" (app.opened at least once
// within 1h), defined at kStartMs, and ada opening the app a minute later.
void PublishAdaActive(PartitionStream* input) {
  Record define;
  RequireOk(DecodeRecord(
      R"({"kind":"bucketDefine","at":1767225600000,"bucketId":"active","definition":{"id":)"
      R"("active","name":"Active","criteria":{"type":"event","eventName":"app.opened",)"
      R"("check":"count","operator":"gte","value":1,"within":"1h"}}})",
      0, &define));
  Record opened;
  RequireOk(
      DecodeRecord(R"({"userId":"ada","event":"app.opened","at":1767225660000})", 0, &opened));
  define.seq = 1;  // the message ids PublishRouted gives are by the reference's seqs
  opened.seq = 2;
  PublishRouted(input, std::vector<Record>{define, opened});
}

// ada's leave of "active" as an owner publishes it (what a stale owner would append).
Transition AdaLeft(uint64_t seq, uint32_t entry_count) {
  Transition t;
  t.seq = seq;
  t.kind = TransitionKind::kLeft;
  t.bucket_id = "active";
  t.bucket_name = "Active";
  t.user_id = "ada";
  t.entry_count = entry_count;
  return t;
}

TEST_CASE("an owner in wall-clock mode appends the sweeps that make clock-driven leaves") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> input;
  RequireOk(PartitionStream::Open(TestStream(nats, kPartitions), &input));
  constexpr TimeMs kT0 = testing::kStartMs;
  constexpr TimeMs kHour = 3'600'000;
  PublishAdaActive(input.get());
  const uint32_t p = PartitionOf("ada", kPartitions);

  auto clock = std::make_shared<ManualClock>(kT0 + kHour / 2);
  auto node = OpenNode(nats, "node-a", clock);
  // Half an hour in: ada is a member, nothing is due, nothing is appended.
  RequireOk(node->Tick());
  REQUIRE(node->owned().size() == kPartitions);
  uint64_t last = 0;
  RequireOk(input->LastSeq(p, &last));
  clock->Set(kT0 + kHour / 2 + 1000);
  RequireOk(node->Tick());
  uint64_t still = 0;
  RequireOk(input->LastSeq(p, &still));
  CHECK(still == last);
  CHECK(node->stats().sweeps_published == 0);

  // Two hours in, the window has let ada go: the owner appends one sweep stamped now, and the
  // leave happens at the instant the window closed, detected at the sweep's instant.
  clock->Set(kT0 + 2 * kHour);
  RequireOk(node->Tick());
  CHECK(node->stats().sweeps_published == 1);
  CHECK(node->stats().output_resyncs == 0);
  ReadResult read;
  RequireOk(input->Read(p, last + 1, kReadRecordsMax, &read));
  REQUIRE(read.records.size() == 1);
  CHECK(read.records[0].kind == RecordKind::kSweep);
  CHECK(read.records[0].at == kT0 + 2 * kHour);

  std::vector<OutputMessage> out;
  RequireOk(node->output()->Read(p, 1, 100, &out));
  REQUIRE(out.size() == 2);
  CHECK(out[0].msg_id == "bucket:active:ada:entered:1");
  CHECK(out[1].msg_id == "bucket:active:ada:left:1");
  CHECK(out[1].json.find(R"("at":"2026-01-01T01:01:00.000Z")") != std::string::npos);
  CHECK(out[1].json.find(R"("detectedAt":"2026-01-01T02:00:00.000Z")") != std::string::npos);
  // A re-emission within the duplicate window (a stale owner's, say) is stored once, even
  // where the fence alone would let it through.
  Transition left = AdaLeft(/*seq=*/2, /*entry_count=*/1);
  uint64_t stored_at = 0;
  RequireOk(node->output()->Publish(p, left, out[1].stream_seq, &stored_at));
  CHECK(stored_at == out[1].stream_seq);  // the first one's
  // And a publisher that has not seen the partition's last output cannot append at all.
  left.seq = 3;
  left.entry_count = 2;
  CHECK(node->output()->Publish(p, left, out[0].stream_seq, &stored_at).code() ==
        StatusCode::kFailedPrecondition);
  RequireOk(node->output()->Read(p, 1, 100, &out));
  CHECK(out.size() == 2);
  // Nothing is due any more: later rounds append nothing.
  clock->Set(kT0 + 3 * kHour);
  RequireOk(node->Tick());
  CHECK(node->stats().sweeps_published == 1);

  // A stale owner's sweep is fenced: the partition moved on past what it folded.
  Record sweep;
  sweep.kind = RecordKind::kSweep;
  sweep.at = kT0 + 4 * kHour;
  uint64_t seq = 0;
  CHECK(input->Publish(p, sweep, PublishOptions{"", last}, &seq).code() ==
        StatusCode::kFailedPrecondition);
}

TEST_CASE("an owner refused by the output fence goes on after what the output holds") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> input;
  RequireOk(PartitionStream::Open(TestStream(nats, kPartitions), &input));
  constexpr TimeMs kT0 = testing::kStartMs;
  constexpr TimeMs kHour = 3'600'000;
  PublishAdaActive(input.get());
  const uint32_t p = PartitionOf("ada", kPartitions);

  // A sweeping node whose output stream forgets message ids after 100 ms: only the fence can
  // stop a second append of the same transition.
  auto clock = std::make_shared<ManualClock>(kT0 + kHour / 2);
  NodeOptions o = TestNode(nats, "node-a", /*sweeps=*/true);
  o.clock = clock;
  o.output_duplicate_window_ms = kShortDuplicateWindowMs;
  std::unique_ptr<ClusterNode> node;
  RequireOk(ClusterNode::Open(o, &node));
  RequireOk(node->Tick());
  std::vector<OutputMessage> out;
  RequireOk(node->output()->Read(p, 1, 100, &out));
  REQUIRE(out.size() == 1);
  CHECK(out[0].msg_id == "bucket:active:ada:entered:1");

  // A stale owner of the partition publishes ada's leave first, then the window passes.
  Transition stale = AdaLeft(/*seq=*/2, /*entry_count=*/1);
  uint64_t stored_at = 0;
  RequireOk(node->output()->Publish(p, stale, out[0].stream_seq, &stored_at));
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * kShortDuplicateWindowMs));
  const uint64_t published_before = node->stats().transitions_published;
  clock->Set(kT0 + 2 * kHour);
  RequireOk(node->Tick());
  CHECK(node->stats().sweeps_published == 1);
  CHECK(node->stats().output_resyncs == 1);
  CHECK(node->stats().transitions_published == published_before);
  RequireOk(node->output()->Read(p, 1, 100, &out));
  REQUIRE(out.size() == 2);
  CHECK(out[1].msg_id == "bucket:active:ada:left:1");
  CHECK(out[1].stream_seq == stored_at);
}

TEST_CASE("leases: one holder, a lost reply adopted, the bucket's TTL the same for all") {
  NatsCluster nats(1);
  std::shared_ptr<NatsConnection> connection;
  RequireOk(NatsConnection::Connect(nats.url(), 5000, &connection));
  LeaseOptions options;
  options.cluster = "test";
  options.ttl_ms = 5000;
  options.replicas = 1;
  std::unique_ptr<LeaseTable> leases;
  RequireOk(LeaseTable::Open(connection, options, &leases));

  uint64_t a_rev = 0, b_rev = 0;
  RequireOk(leases->Acquire(3, "node-a", &a_rev));
  CHECK(leases->Acquire(3, "node-b", &b_rev).code() == StatusCode::kFailedPrecondition);
  // node-a's create was stored but it never heard: asking again gives it its lease back.
  uint64_t again = 0;
  RequireOk(leases->Acquire(3, "node-a", &again));
  CHECK(again > a_rev);  // written again, so its TTL counts from now (a restarted node's too)
  std::string holder = "?";
  RequireOk(leases->Holder(3, &holder));
  CHECK(holder == "node-a");
  // A renewal stored whose reply was lost: the next one, made with the old revision, adopts
  // the stored one instead of taking the lease for lost.
  uint64_t renewed = again;
  RequireOk(leases->Renew(3, "node-a", &renewed));
  CHECK(renewed > again);
  uint64_t stale = again;
  RequireOk(leases->Renew(3, "node-a", &stale));
  CHECK(stale == renewed);
  // Another node cannot renew it (it never holds a revision of it); a release gives it up.
  uint64_t other = b_rev;
  CHECK(leases->Renew(3, "node-b", &other).code() == StatusCode::kFailedPrecondition);
  RequireOk(leases->Release(3, "node-a", renewed));
  holder = "?";
  RequireOk(leases->Holder(3, &holder));
  CHECK(holder.empty());
  RequireOk(leases->Acquire(3, "node-b", &b_rev));

  // Live nodes: announced ones, until withdrawn.
  RequireOk(leases->Announce("node-a"));
  RequireOk(leases->Announce("node-b"));
  std::vector<std::string> live;
  RequireOk(leases->LiveNodes(&live));
  CHECK(live == std::vector<std::string>{"node-a", "node-b"});
  RequireOk(leases->Withdraw("node-a"));
  RequireOk(leases->LiveNodes(&live));
  CHECK(live == std::vector<std::string>{"node-b"});

  // A node configured with another TTL is refused, naming the field.
  std::unique_ptr<LeaseTable> mismatched;
  options.ttl_ms = 7000;
  const Status s = LeaseTable::Open(connection, options, &mismatched);
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK(s.field() == "leaseTtl");
}

TEST_CASE("partition snapshots in JetStream: the newest read back, two kept, damage refused") {
  NatsCluster nats(1);
  std::shared_ptr<NatsConnection> connection;
  RequireOk(NatsConnection::Connect(nats.url(), 5000, &connection));
  std::unique_ptr<SnapshotStream> snapshots;
  SnapshotOptions options;
  options.cluster = "test";
  options.replicas = 1;
  RequireOk(SnapshotStream::Open(connection, options, &snapshots));
  // Payloads of one and of three chunks, over rounds on three partitions.
  auto payload_of = [](int round, uint32_t p) {
    const size_t size = p == 1 ? 2 * kSnapshotChunkBytes + 1000 + round : 100 + round;
    std::string payload(size, static_cast<char>('a' + round));
    payload[size / 2] = static_cast<char>('0' + p);
    return payload;
  };
  for (int round = 1; round <= 4; ++round) {
    for (uint32_t p = 0; p < 3; ++p) {
      SnapshotManifest m;
      m.id = std::to_string(round) + "-test-" + std::to_string(p);
      m.input_seq = static_cast<uint64_t>(round) * 10;
      m.transition_seq = static_cast<uint64_t>(round);
      const std::string payload = payload_of(round, p);
      RequireOk(snapshots->Publish(p, payload, &m));
      CHECK(m.chunks == (p == 1 ? 3u : 1u));
      SnapshotManifest back;
      std::string read;
      bool found = false;
      RequireOk(snapshots->Latest(p, &back, &read, &found));
      INFO("round " << round << ", partition " << p);
      REQUIRE(found);
      CHECK(read == payload);
      CHECK(back.id == m.id);
      CHECK(back.input_seq == m.input_seq);
      CHECK(back.transition_seq == m.transition_seq);
    }
  }
  // Only the last two snapshots' chunks and manifests are kept per partition.
  jsStreamInfo* info = nullptr;
  REQUIRE(js_GetStreamInfo(&info, connection->js(), snapshots->stream_name().c_str(), nullptr,
                           nullptr) == NATS_OK);
  CHECK(info->State.Msgs == 3 * 2 /*manifests*/ + 2 * (1 + 3 + 1) /*chunks*/);
  jsStreamInfo_Destroy(info);
  bool found = true;
  SnapshotManifest none;
  std::string nothing;
  RequireOk(snapshots->Latest(7, &none, &nothing, &found));
  CHECK_FALSE(found);

  // A manifest whose chunks do not match (damage, or a purge raced) is refused loudly.
  const std::string damaged =
      R"({"id":"4-test-0","inputSeq":40,"transitionSeq":4,"chunks":1,"bytes":104,)"
      R"("xxh64":12345,"firstSeq":1})";
  REQUIRE(js_Publish(nullptr, connection->js(), "bucketd.test.snap.0.manifest", damaged.data(),
                     static_cast<int>(damaged.size()), nullptr, nullptr) == NATS_OK);
  SnapshotManifest m;
  std::string read;
  CHECK(snapshots->Latest(0, &m, &read, &found).code() == StatusCode::kCorruption);
}

}  // namespace
}  // namespace bucketd::cluster
