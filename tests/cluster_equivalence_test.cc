// The cluster as an operator runs it (issue 15's acceptance): three nats-servers (R3), three
// bucketd nodes on P=16 partitions with a manual clock, fed over HTTP the same seeded workload
// (every bucket shape, definition changes, enable/disable, deletes, manual membership, clock
// moves) as one single-process bucketd. Midway a bucketd node is SIGKILLed and its data dir
// deleted (it comes back on the empty dir, restored from JetStream's snapshots), a
// nats-server is SIGKILLed and restarted, and a fourth node joins; then two
// nats-servers go down and ingest is refused with a 503 until one returns. At the end the
// cluster's output stream holds exactly the single node's transitions (each once, compared by
// idempotencyKey on every field but the node-local seq), and the counts and members of every
// bucket agree.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <catch2/catch.hpp>

#include "tests/cluster_test_support.h"
#include "tests/nats_test_support.h"
#include "tests/sidecar_test_support.h"
#include "tests/test_support.h"

#include "engine/base/json_writer.h"
#include "engine/cluster/nats_connection.h"
#include "engine/cluster/output_stream.h"
#include "engine/cluster/partition_fold.h"
#include "engine/cluster/partition_stream.h"
#include "engine/state/digest.h"

namespace bucketd::testing {
namespace {

constexpr uint32_t kPartitions = 16;

std::vector<std::string> NodeArgs(const NatsCluster& nats, const std::string& id) {
  return {"--clock",
          "manual",
          "--start-time",
          kSidecarStart,
          "--cluster-url",
          nats.url(),
          "--cluster-name",
          "eq",
          "--partitions",
          std::to_string(kPartitions),
          "--node-id",
          id,
          "--cluster-replicas",
          "3",
          "--lease-ttl",
          "2s",
          "--snapshot-every-records",
          "100"};
}

// One HTTP request a logged record stands for (SPEC §9's routes); nothing for a sweep, which
// a manual clock's move already did.
struct Request {
  std::string method;
  std::string path;
  std::string body;
};

std::optional<Request> RequestFor(const Record& r) {
  JsonWriter w;
  switch (r.kind) {
    case RecordKind::kEvent: {
      w.BeginObject().Key("userId").String(r.user_id).Key("event").String(r.event_name);
      w.Key("occurredAt").Int(r.occurred_at);
      if (r.email) w.Key("email").String(*r.email);
      // Every event carries a key, so a request retried after a 503 stores each event once
      // (an event without one is stored again by a retry: docs/cluster.md).
      w.Key("idempotencyKey").String(r.idempotency_key.value_or("w-" + std::to_string(r.seq)));
      if (!r.properties.empty()) {
        w.Key("contactProperties").BeginObject();
        for (const PropertyPatch& p : r.properties) WritePropertyValue(p.value, &w.Key(p.key));
        w.EndObject();
      }
      w.EndObject();
      return Request{"POST", "/v1/events", w.Take()};
    }
    case RecordKind::kBucketDefine:
      return Request{"PUT", "/v1/buckets/" + r.bucket_id, r.definition_json};
    case RecordKind::kBucketEnable:
      return Request{"PATCH", "/v1/buckets/" + r.bucket_id, R"({"enabled":true})"};
    case RecordKind::kBucketDisable:
      return Request{"PATCH", "/v1/buckets/" + r.bucket_id, R"({"enabled":false})"};
    case RecordKind::kBucketDelete:
      return Request{"DELETE", "/v1/buckets/" + r.bucket_id, ""};
    case RecordKind::kContactDelete:
      return Request{"DELETE", "/v1/contacts/" + r.user_id, ""};
    case RecordKind::kMemberAdd:
      w.BeginObject().Key("userId").String(r.user_id).EndObject();
      return Request{"POST", "/v1/buckets/" + r.bucket_id + "/members", w.Take()};
    case RecordKind::kMemberRemove:
      return Request{"DELETE", "/v1/buckets/" + r.bucket_id + "/members/" + r.user_id, ""};
    case RecordKind::kClockAdvance:
      w.BeginObject().Key("now").Int(r.at).EndObject();
      return Request{"POST", "/v1/clock", w.Take()};
    case RecordKind::kSweep:
    // A cluster has no webhook subscriptions (a single engine's inputs).
    case RecordKind::kSubscriptionCreate:
    case RecordKind::kSubscriptionDelete:
    case RecordKind::kSubscriptionAdvance:
      return std::nullopt;
  }
  return std::nullopt;
}

httplib::Result Send(const Sidecar& node, const Request& r) {
  httplib::Client client = node.Client();
  if (r.method == "POST") return client.Post(r.path, r.body, "application/json");
  if (r.method == "PUT") return client.Put(r.path, r.body, "application/json");
  if (r.method == "PATCH") return client.Patch(r.path, r.body, "application/json");
  return client.Delete(r.path);
}

// A cluster node's answer: accepted, or 503 while JetStream cannot take it (a leader being
// elected after a server's death), retried then. Anything else fails the test.
void SendToCluster(const Sidecar& node, const Request& r) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  for (;;) {
    auto res = Send(node, r);
    REQUIRE(res);
    INFO(r.method << " " << r.path << " " << r.body << " -> " << res->status << " " << res->body);
    if (res->status == 503 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    REQUIRE((res->status == 200 || res->status == 202));
    if (r.path == "/v1/events") CHECK(res->body.find(R"("rejected":[])") != std::string::npos);
    return;
  }
}

// A transition's JSON without its leading "seq" (node-local: a partition's count there, the
// log's here); everything else must be equal.
std::string WithoutSeq(const std::string& json) {
  REQUIRE(json.rfind(R"({"seq":)", 0) == 0);
  return "{" + json.substr(json.find(',') + 1);
}

std::string KeyOf(const std::string& json) {
  const std::string marker = R"("idempotencyKey":")";
  const size_t at = json.find(marker);
  REQUIRE(at != std::string::npos);
  const size_t begin = at + marker.size();
  return json.substr(begin, json.find('"', begin) - begin);
}

// The transition objects of a GET /v1/transitions page, as the server wrote them: each starts
// with {"seq": (WriteTransition's first key).
std::vector<std::string> TransitionObjects(const std::string& body) {
  std::vector<std::string> objects;
  for (size_t at = body.find(R"({"seq":)"); at != std::string::npos;) {
    const size_t next = body.find(R"({"seq":)", at + 1);
    objects.push_back(
        body.substr(at, (next == std::string::npos ? body.rfind(']') : next - 1) - at));
    at = next;
  }
  return objects;
}

// The single node's transitions by idempotencyKey, paged from GET /v1/transitions.
std::map<std::string, std::string> SingleTransitions(const Sidecar& single) {
  std::map<std::string, std::string> out;
  httplib::Client client = single.Client();
  for (uint64_t after = 0;;) {
    auto res = client.Get("/v1/transitions?limit=1000&after=" + std::to_string(after));
    REQUIRE(res);
    REQUIRE(res->status == 200);
    const std::vector<std::string> objects = TransitionObjects(res->body);
    for (const std::string& object : objects) {
      after = std::stoull(object.substr(7));
      CHECK(out.emplace(KeyOf(object), WithoutSeq(object)).second);
    }
    if (objects.empty()) break;
  }
  return out;
}

// The output stream's transitions by message id (= idempotencyKey); one twice fails the test.
// Empty when the stream could not be read (a leader being elected): the caller asks again.
std::map<std::string, std::string> ClusterTransitions(cluster::OutputStream* output) {
  std::map<std::string, std::string> out;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    for (uint64_t from = 1;;) {
      std::vector<cluster::OutputMessage> page;
      if (!output->Read(p, from, 1000, &page).ok()) return {};
      if (page.empty()) break;
      for (const cluster::OutputMessage& m : page) {
        INFO(m.json);
        CHECK(m.msg_id == KeyOf(m.json));
        CHECK(out.emplace(m.msg_id, WithoutSeq(m.json)).second);
      }
      from = page.back().stream_seq + 1;
    }
  }
  return out;
}

// GET `path` on `node` until it answers `want` (the owners fold asynchronously).
bool Converges(const Sidecar& node, const std::string& path, const std::string& want) {
  httplib::Client client = node.Client();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string last;
  for (;;) {
    auto res = client.Get(path);
    if (res && res->status == 200 && res->body == want) return true;
    if (res) last = std::to_string(res->status) + " " + res->body;
    if (std::chrono::steady_clock::now() > deadline) {
      UNSCOPED_INFO(path << ": last answer " << last << ", wanted " << want);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// How many partitions a node's GET /v1/cluster says it owns.
size_t OwnedCount(const std::string& view) {
  size_t n = 0;
  for (size_t at = view.find(R"({"partition":)"); at != std::string::npos;
       at = view.find(R"({"partition":)", at + 1)) {
    ++n;
  }
  return n;
}

std::string Get(const Sidecar& node, const std::string& path) {
  auto res = node.Client().Get(path);
  REQUIRE(res);
  INFO(path << " -> " << res->body);
  REQUIRE(res->status == 200);
  return res->body;
}

TEST_CASE("three nodes on an R3 NATS cluster equal one bucketd through node and server deaths") {
  const Reference ref = RunReference(23, 1600);
  std::vector<Request> requests;
  for (const Record& r : ref.records) {
    if (auto request = RequestFor(r)) requests.push_back(std::move(*request));
  }
  REQUIRE(requests.size() > 1000);

  NatsCluster nats(3);
  TempDir single_dir;
  Sidecar single(single_dir.path());
  std::vector<std::unique_ptr<TempDir>> dirs;
  std::vector<std::unique_ptr<Sidecar>> nodes;
  auto start_node = [&](const std::string& id) {
    dirs.push_back(std::make_unique<TempDir>());
    nodes.push_back(std::make_unique<Sidecar>(dirs.back()->path(), NodeArgs(nats, id)));
  };
  for (const char* id : {"n1", "n2", "n3"}) start_node(id);
  std::set<size_t> live = {0, 1, 2};

  const size_t quarter = requests.size() / 4;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (i == quarter) {
      // A node dies with its data dir: its partitions move after the lease TTL, restored
      // from the snapshots in JetStream.
      CHECK(nodes[1]->Stop(SIGKILL) == 128 + SIGKILL);
      std::filesystem::remove_all(dirs[1]->path());
      live.erase(1);
    }
    if (i == quarter + quarter / 2) {
      // The survivors took the dead node's partitions (after its leases expired) before it
      // returns. Otherwise a node back within the TTL finds its own leases live and simply
      // keeps them, folding from the start where it had published no snapshot yet: correct,
      // but not the handover this step is about.
      bool taken_over = false;
      for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
           !taken_over && std::chrono::steady_clock::now() < until;) {
        taken_over =
            OwnedCount(Get(*nodes[0], "/v1/cluster")) + OwnedCount(Get(*nodes[2], "/v1/cluster")) ==
            kPartitions;
        if (!taken_over) std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      REQUIRE(taken_over);
      // The dead node comes back under its id on an empty disk: the partitions rendezvous
      // gives it again are handed over to it, restored from the snapshots in JetStream (it has
      // none of its own).
      nodes[1] = std::make_unique<Sidecar>(dirs[1]->path(), NodeArgs(nats, "n2"));
      live.insert(1);
      std::string view;
      for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
           std::chrono::steady_clock::now() < until;) {
        view = Get(*nodes[1], "/v1/cluster");
        if (view.find(R"("owned":[])") == std::string::npos &&
            view.find(R"("snapshotsRestored":0,)") == std::string::npos) {
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      INFO(view);
      CHECK(view.find(R"("owned":[])") == std::string::npos);
      CHECK(view.find(R"("snapshotsRestoredLocal":0,)") != std::string::npos);
      CHECK(view.find(R"("snapshotsRestored":0,)") == std::string::npos);
    }
    if (i == 2 * quarter) nats.Kill(2);  // R3 keeps a majority: ingest goes on
    if (i == 2 * quarter + 100) nats.Restart(2);
    if (i == 3 * quarter) {
      start_node("n4");  // a fourth node joins: partitions hand over by snapshot
      live.insert(nodes.size() - 1);
    }
    const Request& r = requests[i];
    auto single_res = Send(single, r);
    REQUIRE(single_res);
    // Round-robin over the live nodes: every node routes every kind of input.
    auto it = live.begin();
    std::advance(it, static_cast<long>(i % live.size()));
    SendToCluster(*nodes[*it], r);
  }

  // Two nats-servers down: no majority, so JetStream cannot store; ingest is refused with a
  // 503 that says so (after the node's attempts), and resumes once one server is back.
  nats.Kill(0);
  nats.Kill(1);
  const Request late{"POST", "/v1/events",
                     R"({"userId":"late-user","event":"app.opened","idempotencyKey":"late-1"})"};
  auto refused = Send(*nodes[0], late);
  REQUIRE(refused);
  INFO(refused->body);
  CHECK(refused->status == 503);
  CHECK(refused->body.find("stored 0 of 1") != std::string::npos);
  nats.Restart(1);
  SendToCluster(*nodes[0], late);
  nats.Restart(0);
  REQUIRE(Send(single, late)->status == 200);

  // Every transition of the single node, exactly once and equal, on the output stream.
  const std::map<std::string, std::string> want = SingleTransitions(single);
  REQUIRE(want.size() > 500);
  std::shared_ptr<cluster::NatsConnection> connection;
  RequireOk(cluster::NatsConnection::Connect(nats.url(), 5000, &connection));
  std::unique_ptr<cluster::OutputStream> output;
  cluster::OutputOptions output_options;
  output_options.cluster = "eq";
  output_options.partitions = kPartitions;
  output_options.replicas = 3;
  // The servers just came back: the stream may still be electing its leader.
  const auto open_by = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (Status s = cluster::OutputStream::Open(connection, output_options, &output); !s.ok();
       s = cluster::OutputStream::Open(connection, output_options, &output)) {
    INFO(s.ToString());
    REQUIRE(std::chrono::steady_clock::now() < open_by);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  std::map<std::string, std::string> got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    got = ClusterTransitions(output.get());
  } while (got.size() < want.size() && std::chrono::steady_clock::now() < deadline);
  CHECK(got.size() == want.size());
  for (const auto& [key, json] : got) {
    INFO(key << " " << json);
    CHECK(want.count(key) == 1);  // nothing the single node did not emit
  }
  for (const auto& [key, json] : want) {
    INFO(key);
    const auto found = got.find(key);
    REQUIRE(found != got.end());
    CHECK(found->second == json);
  }

  // GET /v1/transitions on a node pages the same transitions, in the output stream's order:
  // seq is the stream's sequence, gap-free from 1.
  std::map<std::string, std::string> paged;
  uint64_t expected_seq = 1;
  for (uint64_t after = 0;;) {
    auto res = nodes[0]->Client().Get("/v1/transitions?limit=250&after=" + std::to_string(after));
    REQUIRE(res);
    REQUIRE(res->status == 200);
    const std::vector<std::string> objects = TransitionObjects(res->body);
    for (const std::string& object : objects) {
      CHECK(std::stoull(object.substr(7)) == expected_seq++);
      CHECK(paged.emplace(KeyOf(object), WithoutSeq(object)).second);
    }
    if (objects.empty()) break;
    after = expected_seq - 1;
  }
  CHECK(paged == got);

  // Counts and members of every bucket agree, asked of any node.
  const Sidecar& asked = *nodes[*live.begin()];
  for (const auto& [bucket, active] : ref.counts) {
    INFO(bucket);
    const std::string count = Get(single, "/v1/buckets/" + bucket + "/count");
    CHECK(count == R"({"count":)" + std::to_string(active) + "}");
    CHECK(Converges(asked, "/v1/buckets/" + bucket + "/count", count));
    CHECK(Get(asked, "/v1/buckets/" + bucket + "/members?limit=1000") ==
          Get(single, "/v1/buckets/" + bucket + "/members?limit=1000"));
  }
  // Preview and explain answer as the single node does: a preview deeper than any history the
  // folds kept (each partition re-reads its stream, the single node its log), and explain for
  // users of every bucket.
  auto post = [](const Sidecar& node, const std::string& path, const std::string& body) {
    auto res = node.Client().Post(path, body, "application/json");
    REQUIRE(res);
    return std::to_string(res->status) + " " + res->body;
  };
  const std::string probe =
      R"({"id":"probe","criteria":{"type":"event","eventName":"feature.used","check":"count",)"
      R"("operator":"gte","value":14,"within":"30d"}})";
  const std::string previewed = post(single, "/v1/buckets/preview", probe);
  CHECK(previewed.find("200 {\"count\":") == 0);
  CHECK(post(asked, "/v1/buckets/preview", probe) == previewed);
  for (const auto& [bucket, active] : ref.counts) {
    for (int u = 0; u < 200; u += 37) {
      const std::string path = "/v1/buckets/" + bucket + "/explain/user-" + std::to_string(u);
      auto want = single.Client().Get(path);
      auto have = asked.Client().Get(path);
      REQUIRE(want);
      REQUIRE(have);
      INFO(path);
      CHECK(have->status == want->status);
      CHECK(have->body == want->body);
    }
  }
  // GET /v1/state: each partition's digest and position as its owner has them, which a fresh
  // fold of the partition's stream (what a replay does) reproduces.
  {
    std::unique_ptr<cluster::PartitionStream> input;
    cluster::StreamOptions stream = TestStream(nats, kPartitions);
    stream.cluster = "eq";  // the nodes' --cluster-name
    stream.replicas = 3;
    RequireOk(cluster::PartitionStream::Open(connection, stream, &input));
    // (A partition whose lease moves after the NATS outage answers once its new owner caught
    // up: 503 until then.)
    std::string state;
    for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);;) {
      auto res = asked.Client().Get("/v1/state");
      REQUIRE(res);
      if (res->status == 200) {
        state = res->body;
        break;
      }
      INFO(res->body);
      REQUIRE(std::chrono::steady_clock::now() < until);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    for (uint32_t p = 0; p < kPartitions; ++p) {
      cluster::PartitionFold fresh(input.get(), p);
      std::vector<Transition> ignored;
      for (bool caught_up = false; !caught_up;) RequireOk(fresh.CatchUp(&ignored, &caught_up));
      INFO("partition " << p << ": " << state);
      CHECK(state.find(R"({"partition":)" + std::to_string(p) + R"(,"state":{"logSeq":)" +
                       std::to_string(fresh.fold().state().applied_seq) + R"(,"transitionSeq":)" +
                       std::to_string(fresh.fold().state().transition_seq) + R"(,"digest":")" +
                       ComputeDigest(fresh.fold().state()) + "\"") != std::string::npos);
    }
  }
  // The fourth node took partitions over, and the survivors restored the dead one's.
  // (Leases lost while two servers were down come back within a few rounds.)
  std::string n4;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       std::chrono::steady_clock::now() < until;) {
    n4 = Get(*nodes.back(), "/v1/cluster");
    if (n4.find(R"("owned":[])") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  INFO(n4);
  CHECK(n4.find(R"("owned":[])") == std::string::npos);
  CHECK(n4.find(R"("snapshotsRestored":0)") == std::string::npos);
}

}  // namespace
}  // namespace bucketd::testing
