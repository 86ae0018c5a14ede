// Crash torture (RocksDB's crash test, against the real sidecar): concurrent clients ingest
// with idempotency keys, define and redefine buckets, delete contacts and move the clock
// while automatic snapshots run; the server is SIGKILLed at a random moment, restarted, and
// then every acknowledged event must be in the log (re-sent, each is a duplicate) and the
// state the server reports must equal a full replay of the log (`bucketctl verify` and its
// digest). The default run is 20 rounds; BUCKETD_SOAK=1 runs 1,000.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <simdjson.h>
#include <catch2/catch.hpp>

#include "tests/command_test_support.h"
#include "tests/sidecar_test_support.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A bucketd child on a free loopback port: manual clock, sync durability, frequent
// automatic snapshots (forked while clients write).
class Sidecar : public bucketd::testing::Sidecar {
 public:
  explicit Sidecar(const fs::path& data)
      : bucketd::testing::Sidecar(data, {"--durability", "sync", "--snapshot-every-records", "300",
                                         "--log-level", "error"}) {}
};

std::string EventJson(uint64_t n, std::mt19937_64& rng) {
  static const char* const kNames[] = {"open", "used", "buy", "view"};
  return R"({"userId":"u)" + std::to_string(rng() % 400) + R"(","event":")" + kNames[rng() % 4] +
         R"(","idempotencyKey":"e)" + std::to_string(n) + R"(","contactProperties":{"plan":")" +
         (rng() % 2 ? "pro" : "free") + R"("}})";
}

std::string Definition(uint64_t variant) {
  const std::string threshold = std::to_string(1 + variant % 4);
  switch (variant % 3) {
    case 0:
      return R"({"id":"power","criteria":{"type":"event","eventName":"used","check":"count",)"
             R"("operator":"gte","value":)" +
             threshold + R"(,"within":"2d"},"dwell":[{"every":"1d"}]})";
    case 1:
      return R"({"id":"dormant","criteria":{"type":"composite","operator":"and","conditions":[)"
             R"({"type":"event","eventName":"open","check":"exists"},)"
             R"({"type":"event","eventName":"open","check":"not_exists","within":")" +
             threshold + R"(d"}]}})";
    default:
      return R"({"id":"pro","criteria":{"type":"property","property":"plan","operator":"eq",)"
             R"("value":"pro"},"maxDwell":")" +
             threshold + R"(d"})";
  }
}

struct Acknowledged {
  std::mutex mu;
  std::vector<std::string> events;  // bodies of events answered 200
  // Catch2's assertions are for the test's own thread only: writers count what they would
  // have failed on, and the test checks the count.
  std::atomic<int> malformed_answers = 0;
};

// One writer: batches of events with fresh idempotency keys until told to stop; keeps the
// ones the server acknowledged.
void Writer(int port, uint64_t first_key, std::atomic<bool>* stop, Acknowledged* acked,
            uint64_t seed) {
  std::mt19937_64 rng(seed);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  for (uint64_t n = first_key; !*stop; n += 16) {
    std::vector<std::string> batch;
    for (int i = 0; i < 16; ++i) batch.push_back(EventJson(n + i, rng));
    std::string body = "[";
    for (const std::string& e : batch) body += (body.size() > 1 ? "," : "") + e;
    body += "]";
    auto res = client.Post("/v1/events", body, "application/json");
    if (!res) return;  // killed
    if (res->status != 200) continue;
    simdjson::dom::parser parser;
    simdjson::dom::array rejected;
    if (parser.parse(res->body)["rejected"].get(rejected) != simdjson::SUCCESS) {
      ++acked->malformed_answers;
      continue;
    }
    // Items refused for their content (a deleted contact) are not acknowledged inputs.
    std::vector<bool> refused(batch.size(), false);
    for (simdjson::dom::element item : rejected) {
      int64_t index = -1;
      if (item["index"].get(index) != simdjson::SUCCESS || index < 0 ||
          static_cast<size_t>(index) >= batch.size()) {
        ++acked->malformed_answers;
        continue;
      }
      refused[static_cast<size_t>(index)] = true;
    }
    std::lock_guard lock(acked->mu);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!refused[i]) acked->events.push_back(batch[i]);
    }
  }
}

// The churn: redefinitions, contact deletes and clock moves, each one request.
void Churn(int port, std::atomic<bool>* stop, uint64_t seed, int64_t* clock_ms) {
  std::mt19937_64 rng(seed);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  while (!*stop) {
    httplib::Result res = [&] {
      switch (rng() % 3) {
        case 0: {
          const std::string def = Definition(rng());
          const std::string id = def.substr(7, def.find('"', 7) - 7);
          return client.Put(("/v1/buckets/" + id).c_str(), def, "application/json");
        }
        case 1:
          return client.Delete(("/v1/contacts/u" + std::to_string(rng() % 400)).c_str());
        default: {
          *clock_ms += static_cast<int64_t>(rng() % (6 * 3600 * 1000));
          return client.Post("/v1/clock", R"({"now":)" + std::to_string(*clock_ms) + "}",
                             "application/json");
        }
      }
    }();
    if (!res) return;
    std::this_thread::sleep_for(2ms);
  }
}

std::string Digest(httplib::Client& client) {
  auto res = client.Get("/v1/state");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(res->body).get(root) == simdjson::SUCCESS);
  return std::string(root["digest"].get_string().value());
}

// bucketctl verify: snapshot + tail = full replay, the stored transitions reproduced, every
// checksum; returns the full replay's digest.
std::string VerifyOffline(const fs::path& data) {
  const char* bin = std::getenv("BUCKETCTL_BIN");
  REQUIRE(bin != nullptr);
  const bucketd::testing::CommandRun verify =
      bucketd::testing::RunCommand(std::string(bin) + " verify --data " + data.string() + " 2>&1");
  const std::string& output = verify.output;
  INFO(output);
  REQUIRE(verify.exit_code == 0);
  const size_t at = output.find("full replay");
  REQUIRE(at != std::string::npos);
  const size_t start = output.find_first_not_of(' ', at + 11);
  return output.substr(start, output.find(' ', start) - start);
}

}  // namespace

TEST_CASE(
    "SIGKILL under concurrent load, snapshots and definition churn loses nothing "
    "acknowledged, and the state always equals a full replay") {
  const bool soak = std::getenv("BUCKETD_SOAK") != nullptr;
  const int rounds = soak ? 1000 : 20;
  const int rounds_per_dir = 40;  // a fresh data dir now and then keeps verify's replay short
  const uint64_t seed = std::random_device()();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  fs::path root = fs::temp_directory_path() / ("bucketd-torture-" + std::to_string(getpid()));
  uint64_t next_key = 0;
  int64_t clock_ms = 1767225600000;  // --start-time
  uint64_t acknowledged_total = 0;
  int snapshots_seen = 0;
  for (int round = 0; round < rounds; ++round) {
    const fs::path data = root / std::to_string(round / rounds_per_dir);
    if (round % rounds_per_dir == 0) clock_ms = 1767225600000;
    Acknowledged acked;
    {
      Sidecar server(data);
      std::atomic<bool> stop = false;
      std::vector<std::thread> clients;
      for (uint64_t w = 0; w < 3; ++w) {
        clients.emplace_back(Writer, server.port(), next_key + w * 1'000'000'000, &stop, &acked,
                             rng());
      }
      clients.emplace_back(Churn, server.port(), &stop, rng(), &clock_ms);
      next_key += 3'000'000'000;
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
      CHECK(server.Stop(SIGKILL) == 128 + SIGKILL);
      stop = true;
      for (std::thread& t : clients) t.join();
    }
    INFO("round " << round << ": " << acked.events.size() << " events acknowledged");
    CHECK(acked.malformed_answers == 0);
    // Restarted: every acknowledged event is in the log (its key is known), and the state
    // is the fold of the log.
    Sidecar server(data);
    auto client = server.Client();
    for (size_t i = 0; i < acked.events.size(); i += 500) {
      std::string body = "[";
      for (size_t j = i; j < std::min(acked.events.size(), i + 500); ++j) {
        body += (j > i ? "," : "") + acked.events[j];
      }
      body += "]";
      auto res = client.Post("/v1/events", body, "application/json");
      REQUIRE(res);
      REQUIRE(res->status == 200);
      simdjson::dom::parser parser;
      simdjson::dom::element result;
      REQUIRE(parser.parse(res->body).get(result) == simdjson::SUCCESS);
      INFO(res->body);
      REQUIRE(result["accepted"].get_int64().value() == 0);
      REQUIRE(result["duplicates"].get_int64().value() ==
              static_cast<int64_t>(std::min(acked.events.size(), i + 500) - i));
    }
    acknowledged_total += acked.events.size();
    const std::string live = Digest(client);
    REQUIRE(server.Stop(SIGTERM) == 0);
    CHECK(VerifyOffline(data) == live);
    size_t snapshots = 0;
    if (fs::exists(data / "snapshots")) {
      for (const auto& entry : fs::directory_iterator(data / "snapshots")) {
        snapshots += entry.is_regular_file() ? 1 : 0;
      }
    }
    snapshots_seen += snapshots > 0 ? 1 : 0;
  }
  // The run proves something only if clients were acknowledged and snapshots were written
  // between kills.
  std::printf("torture: %d rounds, %llu events acknowledged, %d rounds with snapshots, seed %llu\n",
              rounds, static_cast<unsigned long long>(acknowledged_total), snapshots_seen,
              static_cast<unsigned long long>(seed));
  CHECK(acknowledged_total > 0);
  CHECK(snapshots_seen > 0);
  fs::remove_all(root);
}
