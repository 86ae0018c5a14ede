// bucketd processes in cluster mode (docs/cluster.md): events and definitions POSTed to any
// node are routed by partition and acknowledged after JetStream's ack; the nodes share the
// partitions, and when one is SIGKILLed the other takes its partitions over after the lease
// TTL: every acknowledged event's transition reaches the output stream exactly once.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <catch2/catch.hpp>

#include "tests/cluster_test_support.h"
#include "tests/command_test_support.h"
#include "tests/nats_test_support.h"
#include "tests/sidecar_test_support.h"
#include "tests/test_support.h"

#include "engine/cluster/nats_connection.h"
#include "engine/cluster/output_stream.h"
#include "engine/cluster/partition.h"

namespace bucketd::testing {
namespace {

constexpr uint32_t kPartitions = 8;

std::vector<std::string> NodeArgs(const NatsCluster& nats, const std::string& id) {
  return {"--clock",
          "wall",
          "--cluster-url",
          nats.url(),
          "--cluster-name",
          "srv",
          "--partitions",
          "8",
          "--node-id",
          id,
          "--cluster-replicas",
          "1",
          "--lease-ttl",
          "2s",
          "--snapshot-every-records",
          "50"};
}

// Every message of the output stream by message id (a key twice fails the test).
std::map<std::string, std::string> OutputByKey(cluster::OutputStream* output) {
  std::map<std::string, std::string> out;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    for (uint64_t from = 1;;) {
      std::vector<cluster::OutputMessage> page;
      RequireOk(output->Read(p, from, 1000, &page));
      if (page.empty()) break;
      for (const cluster::OutputMessage& m : page) {
        INFO(m.json);
        CHECK(out.emplace(m.msg_id, m.json).second);
      }
      from = page.back().stream_seq + 1;
    }
  }
  return out;
}

std::map<std::string, std::string> WaitForOutput(cluster::OutputStream* output, size_t count) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    std::map<std::string, std::string> out = OutputByKey(output);
    if (out.size() >= count || std::chrono::steady_clock::now() > deadline) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// POSTs one event per user in [from, to), alternating single objects and batches of 10.
void PostUsers(const Sidecar& node, int from, int to) {
  httplib::Client client = node.Client();
  for (int i = from; i < to;) {
    std::string body;
    const int n = (i % 20 == 0) ? 10 : 1;
    if (n == 1) {
      body = R"({"userId":"u)" + std::to_string(i) +
             R"(","event":"app.opened","idempotencyKey":"k)" + std::to_string(i) + R"("})";
    } else {
      body = "[";
      for (int j = i; j < std::min(i + n, to); ++j) {
        body += std::string(j > i ? "," : "") + R"({"userId":"u)" + std::to_string(j) +
                R"(","event":"app.opened","idempotencyKey":"k)" + std::to_string(j) + R"("})";
      }
      body += "]";
    }
    auto res = client.Post("/v1/events", body, "application/json");
    REQUIRE(res);
    INFO(res->body);
    REQUIRE(res->status == 200);
    CHECK(res->body.find(R"("rejected":[])") != std::string::npos);
    i = std::min(i + n, to);
  }
}

TEST_CASE("bucketd nodes route inputs, share partitions, and survive a SIGKILLed node") {
  NatsCluster nats(1);
  TempDir dir_a, dir_b;
  auto a = std::make_unique<Sidecar>(dir_a.path(), NodeArgs(nats, "node-a"));
  auto b = std::make_unique<Sidecar>(dir_b.path(), NodeArgs(nats, "node-b"));
  std::shared_ptr<cluster::NatsConnection> connection;
  RequireOk(cluster::NatsConnection::Connect(nats.url(), 5000, &connection));
  std::unique_ptr<cluster::OutputStream> output;
  cluster::OutputOptions output_options;
  output_options.cluster = "srv";
  output_options.partitions = kPartitions;
  output_options.replicas = 1;
  RequireOk(cluster::OutputStream::Open(connection, output_options, &output));

  httplib::Client client_a = a->Client();
  // Refusals name the field and publish nothing.
  auto bad = client_a.Post("/v1/events", R"({"userId":"","event":"x"})", "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(bad->body.find(R"("field":"userId")") != std::string::npos);
  bad = client_a.Put("/v1/buckets/active", R"({"id":"active","criteria":{"type":"nope"}})",
                     "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(bad->body.find(R"("field":"criteria.type")") != std::string::npos);
  // What a cluster node does not serve says so, and what to use instead.
  auto not_yet = client_a.Post("/v1/sweep", "", "application/json");
  REQUIRE(not_yet);
  CHECK(not_yet->status == 501);
  auto webhook = client_a.Post("/v1/subscriptions",
                               R"({"url":"http://127.0.0.1:9/hook","secret":"0123456789abcdef"})",
                               "application/json");
  REQUIRE(webhook);
  CHECK(webhook->status == 501);
  CHECK(webhook->body.find("the output stream is the delivery channel") != std::string::npos);
  auto hooks = client_a.Get("/v1/subscriptions");
  REQUIRE(hooks);
  CHECK(hooks->status == 501);

  auto defined = client_a.Put(
      "/v1/buckets/active",
      R"({"id":"active","criteria":{"type":"event","eventName":"app.opened","check":"exists",)"
      R"("within":"30d"}})",
      "application/json");
  REQUIRE(defined);
  INFO(defined->body);
  CHECK(defined->status == 202);
  // POST creates: an id the cluster's control log defines already is a 409, from any node.
  auto again = b->Client().Post(
      "/v1/buckets",
      R"({"id":"active","criteria":{"type":"event","eventName":"x","check":"exists"}})",
      "application/json");
  REQUIRE(again);
  INFO(again->body);
  CHECK(again->status == 409);

  // Both nodes alive: inputs to either one.
  PostUsers(*a, 0, 60);
  PostUsers(*b, 60, 120);
  CHECK(WaitForOutput(output.get(), 120).size() == 120);

  // GET /v1/transitions on either node pages the cluster's output stream by its sequence.
  auto page = client_a.Get("/v1/transitions?after=0&limit=1000");
  REQUIRE(page);
  REQUIRE(page->status == 200);
  CHECK(page->body.find(R"({"seq":120,)") != std::string::npos);
  CHECK(page->body.find(R"({"seq":121,)") == std::string::npos);
  CHECK(page->body.find(R"("next":120,"lastSeq":120})") != std::string::npos);
  CHECK(page->body.find(R"("idempotencyKey":"bucket:active:u119:entered:1")") != std::string::npos);
  // Filters as on a single node: `next` is the last looked at, matched or not.
  auto lefts = client_a.Get("/v1/transitions?after=0&limit=1000&kind=left");
  REQUIRE(lefts);
  CHECK(lefts->body == R"({"transitions":[],"next":120,"lastSeq":120})");
  auto entered =
      client_a.Get("/v1/transitions?after=0&limit=1000&kind=dwell,entered&bucket=active");
  REQUIRE(entered);
  CHECK(entered->body == page->body);
  auto bad_kind = client_a.Get("/v1/transitions?kind=joined");
  REQUIRE(bad_kind);
  CHECK(bad_kind->status == 400);
  CHECK(bad_kind->body.find(R"("field":"kind")") != std::string::npos);
  auto ahead = client_a.Get("/v1/transitions?after=500");
  REQUIRE(ahead);
  CHECK(ahead->status == 409);
  CHECK(ahead->body.find(R"("field":"after")") != std::string::npos);
  // A long-poll on the other node wakes for the next transition, wherever it is folded.
  int polled_status = 0;
  std::string polled;
  std::thread long_poll([&] {
    if (auto res = b->Client().Get("/v1/transitions?after=120&wait=20s")) {
      polled_status = res->status;
      polled = res->body;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  PostUsers(*a, 120, 121);
  long_poll.join();
  INFO(polled);
  CHECK(polled_status == 200);
  CHECK(polled.find(R"({"seq":121,)") != std::string::npos);
  CHECK(polled.find(R"("userId":"u120")") != std::string::npos);
  // The partitions are split between the two nodes (rendezvous over node-a and node-b).
  auto cluster_a = client_a.Get("/v1/cluster");
  REQUIRE(cluster_a);
  CHECK(cluster_a->body.find(R"("liveNodes":["node-a","node-b"])") != std::string::npos);

  // node-a dies mid-stream: inputs keep going to node-b, which takes node-a's partitions over
  // once their leases expire and publishes what node-a had not.
  CHECK(a->Stop(SIGKILL) == 128 + SIGKILL);
  PostUsers(*b, 121, 200);
  // A retry of acknowledged events within the duplicate window is stored once.
  httplib::Client client_b = b->Client();
  auto retry =
      client_b.Post("/v1/events", R"({"userId":"u7","event":"app.opened","idempotencyKey":"k7"})",
                    "application/json");
  REQUIRE(retry);
  CHECK(retry->body.find(R"("duplicates":1)") != std::string::npos);
  std::map<std::string, std::string> out = WaitForOutput(output.get(), 200);
  CHECK(out.size() == 200);
  // node-b now holds every partition.
  auto cluster_b = client_b.Get("/v1/cluster");
  REQUIRE(cluster_b);
  INFO(cluster_b->body);
  CHECK(cluster_b->body.find(R"("liveNodes":["node-b"])") != std::string::npos);
  for (uint32_t p = 0; p < kPartitions; ++p) {
    CHECK(cluster_b->body.find(R"({"partition":)" + std::to_string(p) + ",") != std::string::npos);
  }

  // node-a comes back (same id): the partitions rendezvous gives it move back, handed over.
  a = std::make_unique<Sidecar>(dir_a.path(), NodeArgs(nats, "node-a"));
  PostUsers(*a, 200, 260);
  out = WaitForOutput(output.get(), 260);
  CHECK(out.size() == 260);
  for (int i = 0; i < 260; ++i) {
    INFO(i);
    CHECK(out.count("bucket:active:u" + std::to_string(i) + ":entered:1") == 1);
  }
  // Queries answer for the whole cluster from either node, by scatter-gather.
  for (const Sidecar* node : {a.get(), b.get()}) {
    httplib::Client client = node->Client();
    auto count = client.Get("/v1/buckets/active/count");
    REQUIRE(count);
    CHECK(count->status == 200);
    CHECK(count->body == R"({"count":260})");
  }
  // Members pages stay keyset-ordered by userId across partitions.
  std::vector<std::string> expected;
  for (int i = 0; i < 260; ++i) expected.push_back("u" + std::to_string(i));
  std::sort(expected.begin(), expected.end());
  std::vector<std::string> paged;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto res = client_b.Get("/v1/buckets/active/members?limit=100" +
                            (cursor.empty() ? std::string() : "&cursor=" + cursor));
    REQUIRE(res);
    REQUIRE(res->status == 200);
    for (size_t at = res->body.find(R"("userId":")"); at != std::string::npos;
         at = res->body.find(R"("userId":")", at + 1)) {
      const size_t begin = at + 10;
      paged.push_back(res->body.substr(begin, res->body.find('"', begin) - begin));
    }
    const size_t c = res->body.find(R"("cursor":")");
    if (c == std::string::npos) {
      CHECK(res->body.find(R"("cursor":null)") != std::string::npos);
      break;
    }
    cursor = res->body.substr(c + 10, res->body.find('"', c + 10) - (c + 10));
  }
  CHECK(paged == expected);
  auto memberships = client_b.Get("/v1/users/u42/memberships");
  REQUIRE(memberships);
  CHECK(memberships->status == 200);
  CHECK(memberships->body.find(R"("bucketId":"active","active":true)") != std::string::npos);
  // A direct producer's copy of u7's event under a message id of its own: JetStream stores it
  // (its window knows that id not), the owner's fold skips it by its idempotencyKey.
  {
    const std::string subject =
        "bucketd.srv.in." + std::to_string(cluster::PartitionOf("u7", kPartitions));
    const std::string body = R"({"userId":"u7","event":"app.opened","idempotencyKey":"k7"})";
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = "producer-copy-7";
    jsPubAck* ack = nullptr;
    REQUIRE(js_Publish(&ack, connection->js(), subject.c_str(), body.data(),
                       static_cast<int>(body.size()), &options, nullptr) == NATS_OK);
    CHECK_FALSE(ack->Duplicate);
    jsPubAck_Destroy(ack);
    bool skipped = false;
    for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
         !skipped && std::chrono::steady_clock::now() < until;) {
      for (const Sidecar* node : {a.get(), b.get()}) {
        auto view = node->Client().Get("/v1/cluster");
        skipped |= view && view->body.find(R"("duplicatesSkipped":1,)") != std::string::npos;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(skipped);
    auto u7 = client_b.Get("/v1/users/u7");
    REQUIRE(u7);
    CHECK(u7->body.find(R"("app.opened":{"count":1,)") != std::string::npos);
  }
  // A user's contact, from the owner of its partition, whichever node is asked.
  for (const Sidecar* node : {a.get(), b.get()}) {
    auto user = node->Client().Get("/v1/users/u42");
    REQUIRE(user);
    CHECK(user->status == 200);
    CHECK(user->body.find(R"("userId":"u42")") != std::string::npos);
    CHECK(user->body.find(R"("app.opened":{"count":1,)") != std::string::npos);
    auto nobody = node->Client().Get("/v1/users/nobody");
    REQUIRE(nobody);
    CHECK(nobody->status == 404);
  }
  // A preview asks every partition and adds up: the whole cluster's count, the smallest ids
  // of all partitions' samples, entering and leaving against the stored bucket.
  std::string first_twenty = "[";
  for (size_t i = 0; i < 20; ++i) first_twenty += (i ? ",\"" : "\"") + expected[i] + "\"";
  first_twenty += "]";
  for (const Sidecar* node : {a.get(), b.get()}) {
    auto same = node->Client().Post(
        "/v1/buckets/preview",
        R"({"id":"active","criteria":{"type":"event","eventName":"app.opened","check":"exists",)"
        R"("within":"30d"}})",
        "application/json");
    REQUIRE(same);
    INFO(same->body);
    CHECK(same->status == 200);
    CHECK(same->body ==
          R"({"count":260,"sample":)" + first_twenty + R"(,"entering":0,"leaving":0})");
  }
  auto none = client_b.Post(
      "/v1/buckets/preview",
      R"({"id":"active","criteria":{"type":"event","eventName":"never","check":"exists"}})",
      "application/json");
  REQUIRE(none);
  CHECK(none->body == R"({"count":0,"sample":[],"entering":0,"leaving":260})");
  auto fresh = client_b.Post(
      "/v1/buckets/preview",
      R"({"id":"fresh","criteria":{"type":"event","eventName":"app.opened","check":"exists"}})",
      "application/json");
  REQUIRE(fresh);
  CHECK(fresh->body ==
        R"({"count":260,"sample":)" + first_twenty + R"(,"entering":260,"leaving":0})");
  auto bad_preview = client_b.Post("/v1/buckets/preview", R"({"id":"p","criteria":{"type":"x"}})",
                                   "application/json");
  REQUIRE(bad_preview);
  CHECK(bad_preview->status == 400);
  CHECK(bad_preview->body.find(R"("field":"criteria.type")") != std::string::npos);
  // Explain: the owner of the user's partition answers, whichever node is asked.
  for (const Sidecar* node : {a.get(), b.get()}) {
    auto explain = node->Client().Get("/v1/buckets/active/explain/u42");
    REQUIRE(explain);
    INFO(explain->body);
    CHECK(explain->status == 200);
    CHECK(explain->body.find(R"({"bucketId":"active","userId":"u42",)") == 0);
    CHECK(explain->body.find(R"("member":true,"kind":"dynamic","enabled":true,"holds":true,)") !=
          std::string::npos);
    auto stranger_explained = node->Client().Get("/v1/buckets/active/explain/nobody");
    REQUIRE(stranger_explained);
    CHECK(stranger_explained->status == 404);
    auto unknown_bucket = node->Client().Get("/v1/buckets/nope/explain/u42");
    REQUIRE(unknown_bucket);
    CHECK(unknown_bucket->status == 404);
  }
  auto member = client_b.Get("/v1/buckets/active/members/u42");
  REQUIRE(member);
  CHECK(member->status == 200);
  auto stranger = client_b.Get("/v1/buckets/active/members/nobody");
  REQUIRE(stranger);
  CHECK(stranger->status == 404);
  auto unknown = client_b.Get("/v1/buckets/nope/count");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  auto metrics_of = client_b.Get("/v1/buckets/active/metrics");
  REQUIRE(metrics_of);
  CHECK(metrics_of->body.find(R"("size":260)") != std::string::npos);
  auto bucket = client_b.Get("/v1/buckets/active");
  REQUIRE(bucket);
  INFO(bucket->body);
  CHECK(bucket->status == 200);
  CHECK(bucket->body.find(R"("counts":{"active":260,"entered":260,"left":0})") !=
        std::string::npos);
  CHECK(bucket->body.find(R"("eventName":"app.opened")") != std::string::npos);
  auto buckets = a->Client().Get("/v1/buckets");
  REQUIRE(buckets);
  CHECK(buckets->status == 200);
  CHECK(buckets->body.find(R"("counts":{"active":260,"entered":260,"left":0})") !=
        std::string::npos);
  auto state = client_b.Get("/v1/state");
  REQUIRE(state);
  CHECK(state->status == 200);
  for (uint32_t p = 0; p < kPartitions; ++p) {
    CHECK(state->body.find(R"({"partition":)" + std::to_string(p) + R"(,"state":{)") !=
          std::string::npos);
  }

  // Manual membership and contact deletes are routed to the user's partition; their effect is
  // visible once the owner folded them.
  auto poll = [&](const std::string& path, const std::string& want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      auto res = client_b.Get(path);
      if (res && res->body == want) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  auto vip = client_b.Put("/v1/buckets/vip", R"({"id":"vip","kind":"manual"})", "application/json");
  REQUIRE(vip);
  CHECK(vip->status == 202);
  CHECK(poll("/v1/buckets/vip/count", R"({"count":0})"));
  auto added = client_b.Post("/v1/buckets/vip/members", R"({"userId":"u5"})", "application/json");
  REQUIRE(added);
  CHECK(added->status == 202);
  CHECK(poll("/v1/buckets/vip/count", R"({"count":1})"));
  auto removed = client_b.Delete("/v1/buckets/vip/members/u5");
  REQUIRE(removed);
  CHECK(removed->status == 202);
  CHECK(poll("/v1/buckets/vip/count", R"({"count":0})"));
  auto bad_member =
      client_b.Post("/v1/buckets/vip/members", R"({"userId":""})", "application/json");
  REQUIRE(bad_member);
  CHECK(bad_member->status == 400);
  auto erase = client_b.Delete("/v1/contacts/u6?erase=true");
  REQUIRE(erase);
  CHECK(erase->status == 501);
  CHECK(erase->body.find("erasure (SPEC §11) is not available in cluster mode") !=
        std::string::npos);
  auto deleted = client_b.Delete("/v1/contacts/u6");
  REQUIRE(deleted);
  CHECK(deleted->status == 202);
  CHECK(poll("/v1/buckets/active/count", R"({"count":259})"));
  auto gone = client_b.Get("/v1/users/u6/memberships");
  REQUIRE(gone);
  CHECK(gone->status == 404);

  // node-b handed node-a its share back.
  cluster_b = client_b.Get("/v1/cluster");
  REQUIRE(cluster_b);
  CHECK(cluster_b->body.find(R"("liveNodes":["node-a","node-b"])") != std::string::npos);
  CHECK(cluster_b->body.find(R"("leasesReleased":0)") == std::string::npos);
  // node-b handed over with snapshots, and node-a restarted from them.
  CHECK(cluster_b->body.find(R"("snapshotsPublished":0)") == std::string::npos);
  auto cluster_a2 = a->Client().Get("/v1/cluster");
  REQUIRE(cluster_a2);
  INFO(cluster_a2->body);
  CHECK(cluster_a2->body.find(R"("snapshotsRestored":0)") == std::string::npos);
  CHECK(cluster_a2->body.find(R"("snapshotsRefused":0)") != std::string::npos);
  auto metrics = client_b.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("bucketd_cluster_leases_taken_total ") != std::string::npos);
  CHECK(b->Stop(SIGTERM) == 0);
  CHECK(a->Stop(SIGTERM) == 0);
}

TEST_CASE("bucketd --help documents every cluster flag, its variable and its default") {
  const CommandRun help = RunCommand("'" + SidecarBinary() + "' --help");
  REQUIRE(help.exit_code == 0);
  INFO(help.output);
  // Each cluster flag (docs/cluster.md, "Running bucketd as a cluster node") with its
  // environment variable and default, and a line saying it is cluster mode's.
  for (const char* flag :
       {"--cluster-url TEXT (Env:BUCKETD_CLUSTER_URL)",
        "--cluster-name TEXT=default (Env:BUCKETD_CLUSTER_NAME)",
        "--partitions UINT:INT in [1 - 4096]=64 (Env:BUCKETD_PARTITIONS)",
        "--node-id TEXT (Env:BUCKETD_NODE_ID)",
        "--cluster-replicas INT:INT in [1 - 5]=3 (Env:BUCKETD_CLUSTER_REPLICAS)",
        "--lease-ttl TEXT=10s (Env:BUCKETD_LEASE_TTL)",
        "--idempotency-window TEXT=1h (Env:BUCKETD_IDEMPOTENCY_WINDOW)",
        "--duplicate-window TEXT=2m (Env:BUCKETD_DUPLICATE_WINDOW)",
        "--output-duplicate-window TEXT=10m (Env:BUCKETD_OUTPUT_DUPLICATE_WINDOW)",
        "--snapshot-every-records UINT=1000000 (Env:BUCKETD_SNAPSHOT_EVERY_RECORDS)"}) {
    INFO(flag);
    const size_t at = help.output.find(flag);
    REQUIRE(at != std::string::npos);
    const size_t line_end = help.output.find('\n', help.output.find('\n', at) + 1);
    CHECK(help.output.substr(at, line_end - at).find("cluster mode") != std::string::npos);
  }
}

TEST_CASE("a bucketd node: --auth-token-file guards /v1, and promtool accepts its /metrics") {
  NatsCluster nats(1);
  TempDir dir;
  const std::filesystem::path token = std::filesystem::path(dir.path()) / "token";
  std::ofstream(token) << "node-token\n";
  std::filesystem::permissions(token, std::filesystem::perms::owner_read);
  std::vector<std::string> args = NodeArgs(nats, "node-t");
  args.insert(args.end(), {"--auth-token-file", token.string()});
  Sidecar node((std::filesystem::path(dir.path()) / "data").string(), args);
  httplib::Client client = node.Client();
  const std::string event = R"({"userId":"u1","event":"app.opened"})";
  auto refused = client.Post("/v1/events", event, "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 401);
  client.set_bearer_token_auth("node-token");
  auto accepted = client.Post("/v1/events", event, "application/json");
  REQUIRE(accepted);
  CHECK(accepted->status == 200);

  // The server records a request's duration once the response is written, which can come
  // after the client has read it and asked for /metrics on another connection: poll.
  const std::string served =
      "bucketd_http_request_duration_seconds_count{route=\"events\",status=\"200\"} 1\n";
  std::string body;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    auto metrics = client.Get("/metrics");
    REQUIRE(metrics);
    REQUIRE(metrics->status == 200);
    body = metrics->body;
    if (body.find(served) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (std::chrono::steady_clock::now() < deadline);
  INFO(body);
  const CommandRun promtool = PromtoolCheckMetrics(body);
  INFO(promtool.output);
  CHECK(promtool.exit_code == 0);
  CHECK(promtool.output.empty());
  // The server-side families of a single engine's /metrics, on a node too.
  CHECK(body.find(served) != std::string::npos);
  CHECK(body.find("\nprocess_resident_memory_bytes ") != std::string::npos);
  CHECK(body.find("\nbucketd_build_info{") != std::string::npos);
  CHECK(node.Stop(SIGTERM) == 0);
}

}  // namespace
}  // namespace bucketd::testing
