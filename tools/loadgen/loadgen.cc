// bucketd_loadgen: sends NDJSON batches of events to POST /v1/events from N keep-alive
// connections for a fixed duration and reports events/s and request latency percentiles.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <httplib.h>
#include <CLI/CLI.hpp>

namespace {

struct Config {
  std::string host = "127.0.0.1";
  int port = 7411;
  size_t connections = 4;
  size_t batch = 1000;
  double seconds = 10;
  size_t users = 100'000;
  std::string token;
  // Users in turn instead of at random, so that U events reach exactly U users (a failover
  // measured "at 1M users" must hold them all): this process's connection i of C sends ids
  // shard*C + i, then every shards*C-th after it, modulo `users`.
  bool in_turn = false;
  size_t shard = 0;
  size_t shards = 1;
};

// The user ids one connection sends.
class UserIds {
 public:
  UserIds(const Config& config, size_t connection, uint64_t seed)
      : config_(config),
        rng_(seed),
        random_(0, config.users - 1),
        next_(config.shard * config.connections + connection),
        stride_(config.shards * config.connections) {}

  size_t Next() {
    if (!config_.in_turn) return random_(rng_);
    const size_t id = next_ % config_.users;
    if (next_ < config_.users) ++first_pass_;
    next_ += stride_;
    return id;
  }

  // Ids sent before this connection's sequence wrapped around `users`: distinct, and no
  // other connection's (each first pass is its own residue modulo the stride).
  size_t first_pass() const { return first_pass_; }

  std::mt19937_64& rng() { return rng_; }

 private:
  const Config& config_;
  std::mt19937_64 rng_;
  std::uniform_int_distribution<size_t> random_;
  size_t next_;
  size_t stride_;
  size_t first_pass_ = 0;
};

// Events for the example buckets: feature use, app opens and plan properties. Appends
// into a reused buffer: the generator shares the server's two cores in the benchmark, so
// building a body must cost little next to ingesting it.
void MakeBatch(UserIds& users, const Config& config, std::string* body) {
  static constexpr std::string_view kEvents[] = {"feature.used", "app.opened", "page.viewed"};
  std::mt19937_64& rng = users.rng();
  std::uniform_int_distribution<int> event(0, 2);
  std::uniform_int_distribution<int> days(0, 14);
  const auto append_number = [body](auto n) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof(digits), n).ptr;
    body->append(digits, end);
  };
  body->clear();
  for (size_t i = 0; i < config.batch; ++i) {
    body->append(R"({"userId":"user-)");
    append_number(users.Next());
    body->append(R"(","event":")");
    body->append(kEvents[event(rng)]);
    body->append(R"(","contactProperties":{"plan":"trial","trialEndsInDays":)");
    append_number(days(rng));
    body->append("}}\n");
  }
}

struct WorkerResult {
  std::vector<double> latencies_ms;
  uint64_t events = 0;
  uint64_t users_reached = 0;  // with --users-in-turn: distinct ids in acknowledged requests
  uint64_t failures = 0;
};

void Worker(const Config& config, std::chrono::steady_clock::time_point deadline, size_t connection,
            WorkerResult* out) {
  UserIds users(config, connection, 1234 + connection);
  httplib::Client client(config.host, config.port);
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);  // a request is headers + body: no Nagle wait between them
  client.set_read_timeout(60, 0);
  httplib::Headers headers;
  if (!config.token.empty()) headers.emplace("Authorization", "Bearer " + config.token);
  std::string body;
  while (std::chrono::steady_clock::now() < deadline) {
    const size_t first_pass_before = users.first_pass();
    MakeBatch(users, config, &body);
    auto start = std::chrono::steady_clock::now();
    auto res = client.Post("/v1/events", headers, body, "application/x-ndjson");
    auto end = std::chrono::steady_clock::now();
    if (!res || res->status != 200) {
      ++out->failures;
      continue;
    }
    out->latencies_ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
    out->events += config.batch;
    out->users_reached += users.first_pass() - first_pass_before;  // a refused batch is not
  }
}

double Percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t index = std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()));
  return sorted[index];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bucketd_loadgen: NDJSON ingest load over HTTP"};
  Config config;
  app.add_option("--host", config.host)->capture_default_str();
  app.add_option("--port", config.port)->capture_default_str();
  app.add_option("--connections", config.connections)->capture_default_str();
  app.add_option("--batch", config.batch, "events per request")->capture_default_str();
  app.add_option("--seconds", config.seconds, "run time")->capture_default_str();
  app.add_option("--users", config.users, "distinct user ids")->capture_default_str();
  app.add_option("--auth-token", config.token)->envname("BUCKETD_TOKEN");
  app.add_flag("--users-in-turn", config.in_turn,
               "user ids in turn, not at random: U events reach all U users");
  app.add_option("--shard", config.shard, "with --users-in-turn: this process's index")
      ->capture_default_str();
  app.add_option("--shards", config.shards, "with --users-in-turn: how many processes")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (config.users == 0 || config.connections == 0 || config.shards == 0 ||
      config.shard >= config.shards) {
    std::fprintf(stderr,
                 "--users, --connections and --shards must be positive, --shard below "
                 "--shards\n");
    return 2;
  }

  auto started = std::chrono::steady_clock::now();
  auto deadline = started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(config.seconds));
  std::vector<WorkerResult> results(config.connections);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < config.connections; ++i) {
    threads.emplace_back(Worker, std::cref(config), deadline, i, &results[i]);
  }
  for (std::thread& t : threads) t.join();
  double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  std::vector<double> latencies;
  uint64_t events = 0;
  uint64_t failures = 0;
  uint64_t users_reached = 0;
  for (WorkerResult& r : results) {
    users_reached += r.users_reached;
    latencies.insert(latencies.end(), r.latencies_ms.begin(), r.latencies_ms.end());
    events += r.events;
    failures += r.failures;
  }
  std::sort(latencies.begin(), latencies.end());
  if (config.in_turn) {
    std::printf("users_in_turn_reached=%llu\n", static_cast<unsigned long long>(users_reached));
  }
  std::printf(
      "connections=%zu batch=%zu requests=%zu failures=%llu events=%llu seconds=%.2f "
      "events_per_s=%.0f p50_ms=%.2f p99_ms=%.2f\n",
      config.connections, config.batch, latencies.size(), static_cast<unsigned long long>(failures),
      static_cast<unsigned long long>(events), elapsed_s, events / elapsed_s,
      Percentile(latencies, 0.50), Percentile(latencies, 0.99));
  return failures == 0 ? 0 : 1;
}
