// bucketd: the sidecar server. Flags, start-up, signals and shutdown; the routes live in
// http_api, the transport in http_server, the owner thread in engine_thread.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#ifdef BUCKETD_WITH_CLUSTER
#include "cluster_api.h"
#endif
#include "auth_token_file.h"
#include "bucket_files.h"
#include "bucketd/engine.h"
#include "bucketd/time_format.h"
#include "engine_thread.h"
#include "http_api.h"
#include "http_server.h"
#include "json_requests.h"
#include "log_format.h"
#include "prometheus.h"
#include "service_switch.h"
#include "starting_service.h"
#include "systemd_notify.h"
#include "tools/build_info.h"
#include "webhook_deliverer.h"

namespace bucketd::server {
namespace {

// I/O threads only parse, route and render: engine work runs on the owner thread and
// long-polls park as callbacks, so two threads keep two cores busy.
constexpr size_t kHttpThreadsDefault = 2;

struct Flags {
  std::string listen = "127.0.0.1:7411";
  std::string data_dir = "./bucketd-data";
  std::string clock = "wall";
  std::string start_time;
  std::string sweep_interval = "1s";
  std::string durability = "sync";
  std::string auth_token;
  std::string auth_token_file;
  std::string buckets;
  bool prune_buckets = false;
  uint64_t snapshot_every_records = Options().snapshot_every_records;
  std::string snapshot_every = "10m";
  bool snapshot_on_exit = false;
  std::string log_level = "info";
  std::string log_format = "text";
  size_t http_threads = kHttpThreadsDefault;
  size_t max_connections = HttpServerConfig().connections_max;
  std::string idle_timeout = "60s";
  std::string header_timeout = "10s";
  std::string body_timeout = "30s";
  uint32_t replay_threads = Options().replay_threads;
  // Cluster mode (docs/cluster.md) when cluster_url is set.
  std::string cluster_url;
  std::string cluster_name = "default";
  uint32_t partitions = 64;
  std::string node_id;
  int cluster_replicas = 3;
  std::string lease_ttl = "10s";
  std::string idempotency_window = "1h";
  std::string duplicate_window = "2m";
  std::string output_duplicate_window = "10m";
  std::string backup_dir;
  // Webhook delivery (docs/operations.md).
  std::string webhook_allow_hosts;
  bool webhook_allow_any = false;
  size_t webhook_batch_max = kWebhookBatchDefault;
  std::string webhook_timeout = "10s";
  std::string webhook_log_every = "1s";
};

void AddFlags(CLI::App& app, Flags& f) {
  app.add_option("--listen", f.listen, "host:port to serve on (port 0: any free port)")
      ->envname("BUCKETD_LISTEN")
      ->capture_default_str();
  app.add_option("--data", f.data_dir,
                 "data directory (cluster mode: the node's own copies of its snapshots)")
      ->envname("BUCKETD_DATA")
      ->capture_default_str();
  app.add_option("--clock", f.clock, "wall, or manual (time moves only by POST /v1/clock)")
      ->envname("BUCKETD_CLOCK")
      ->check(CLI::IsMember({"wall", "manual"}))
      ->capture_default_str();
  app.add_option(
         "--start-time", f.start_time,
         "manual clock on a new data dir or a new cluster: the first instant (ms or RFC 3339)")
      ->envname("BUCKETD_START_TIME");
  app.add_option("--sweep-interval", f.sweep_interval, "longest gap between background sweeps")
      ->envname("BUCKETD_SWEEP_INTERVAL")
      ->capture_default_str();
  app.add_option("--durability", f.durability, "sync (fsync before ack) or async")
      ->envname("BUCKETD_DURABILITY")
      ->check(CLI::IsMember({"sync", "async"}))
      ->capture_default_str();
  app.add_option("--auth-token", f.auth_token, "bearer token every /v1 call must carry")
      ->envname("BUCKETD_TOKEN");
  app.add_option("--auth-token-file", f.auth_token_file,
                 "read the bearer token from this file (one line; not with --auth-token)")
      ->envname("BUCKETD_TOKEN_FILE");
  app.add_option("--buckets", f.buckets, "definitions to apply at start: a JSON file or a dir")
      ->envname("BUCKETD_BUCKETS");
  app.add_flag("--prune-buckets", f.prune_buckets,
               "with --buckets: delete buckets that no file defines")
      ->envname("BUCKETD_PRUNE_BUCKETS");
  app.add_option("--snapshot-every-records", f.snapshot_every_records,
                 "automatic snapshot after this many log records (cluster mode: after this "
                 "many of a partition's messages, into JetStream and --data; 0: never)")
      ->envname("BUCKETD_SNAPSHOT_EVERY_RECORDS")
      ->capture_default_str();
  app.add_option("--snapshot-every", f.snapshot_every,
                 "automatic snapshot after this much time (duration, or 0: never)")
      ->envname("BUCKETD_SNAPSHOT_EVERY")
      ->capture_default_str();
  app.add_flag("--snapshot-on-exit", f.snapshot_on_exit, "take a snapshot on shutdown")
      ->envname("BUCKETD_SNAPSHOT_ON_EXIT");
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error, off")
      ->envname("BUCKETD_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--log-format", f.log_format,
                 "text (time level=... key=value) or json (one object a line: ts, level, msg)")
      ->envname("BUCKETD_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--replay-threads", f.replay_threads,
                 "threads for a start without a snapshot (0: one per core but one, on long logs)")
      ->envname("BUCKETD_REPLAY_THREADS")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  app.add_option("--http-threads", f.http_threads,
                 "HTTP I/O threads (connections are asynchronous: not one thread each)")
      ->envname("BUCKETD_HTTP_THREADS")
      ->check(CLI::Range(size_t{1}, size_t{64}))
      ->capture_default_str();
  app.add_option("--max-connections", f.max_connections,
                 "open connections at most; later ones are accepted and closed at once")
      ->envname("BUCKETD_MAX_CONNECTIONS")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--idle-timeout", f.idle_timeout,
                 "close a connection that sends no request for this long")
      ->envname("BUCKETD_IDLE_TIMEOUT")
      ->capture_default_str();
  app.add_option("--header-timeout", f.header_timeout,
                 "close a connection whose request headers take longer than this")
      ->envname("BUCKETD_HEADER_TIMEOUT")
      ->capture_default_str();
  app.add_option("--body-timeout", f.body_timeout,
                 "close a connection whose request body (or response) takes longer than this")
      ->envname("BUCKETD_BODY_TIMEOUT")
      ->capture_default_str();
  app.add_option("--webhook-allow-hosts", f.webhook_allow_hosts,
                 "webhook targets besides loopback: comma-separated host names or IP addresses")
      ->envname("BUCKETD_WEBHOOK_ALLOW_HOSTS");
  app.add_flag("--webhook-allow-any", f.webhook_allow_any,
               "webhook targets may be any host (trust every client that can create one)")
      ->envname("BUCKETD_WEBHOOK_ALLOW_ANY");
  app.add_option("--webhook-batch-max", f.webhook_batch_max, "transitions per webhook delivery")
      ->envname("BUCKETD_WEBHOOK_BATCH_MAX")
      ->check(CLI::Range(size_t{1}, kWebhookBatchMax))
      ->capture_default_str();
  app.add_option("--webhook-timeout", f.webhook_timeout,
                 "each step of a delivery (resolve, connect, send, answer) at most this long")
      ->envname("BUCKETD_WEBHOOK_TIMEOUT")
      ->capture_default_str();
  app.add_option("--webhook-log-every", f.webhook_log_every,
                 "log a delivering subscription's cursor at most this often (and when caught up)")
      ->envname("BUCKETD_WEBHOOK_LOG_EVERY")
      ->capture_default_str();
  app.add_option("--backup-dir", f.backup_dir,
                 "where POST /v1/admin/backup writes (default: off); outside --data")
      ->envname("BUCKETD_BACKUP_DIR");
  app.add_option("--cluster-url", f.cluster_url,
                 "cluster mode: NATS URLs, comma-separated (docs/cluster.md)")
      ->envname("BUCKETD_CLUSTER_URL");
  app.add_option("--cluster-name", f.cluster_name,
                 "cluster mode: names the streams and the lease bucket ([A-Za-z0-9_-])")
      ->envname("BUCKETD_CLUSTER_NAME")
      ->capture_default_str();
  app.add_option("--partitions", f.partitions,
                 "cluster mode: partition count, fixed when the cluster is created")
      ->envname("BUCKETD_PARTITIONS")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--node-id", f.node_id,
                 "cluster mode: this node's unique id (default: <hostname>-<port>)")
      ->envname("BUCKETD_NODE_ID");
  app.add_option("--cluster-replicas", f.cluster_replicas,
                 "cluster mode: replicas of the streams and leases this node creates")
      ->envname("BUCKETD_CLUSTER_REPLICAS")
      ->check(CLI::Range(1, 5))
      ->capture_default_str();
  app.add_option("--lease-ttl", f.lease_ttl,
                 "cluster mode: a dead node's partitions move after this long")
      ->envname("BUCKETD_LEASE_TTL")
      ->capture_default_str();
  app.add_option("--idempotency-window", f.idempotency_window,
                 "cluster mode, fixed when the cluster is created: a partition skips a record "
                 "whose id (idempotencyKey, else Nats-Msg-Id) it applied this recently (0: off)")
      ->envname("BUCKETD_IDEMPOTENCY_WINDOW")
      ->capture_default_str();
  app.add_option("--duplicate-window", f.duplicate_window,
                 "cluster mode: JetStream's duplicate window on the input stream (a publish "
                 "with a Nats-Msg-Id seen this recently is not stored); set on the stream")
      ->envname("BUCKETD_DUPLICATE_WINDOW")
      ->capture_default_str();
  app.add_option("--output-duplicate-window", f.output_duplicate_window,
                 "cluster mode: JetStream's duplicate window on the output stream (a "
                 "transition re-published this recently is stored once); above a failover")
      ->envname("BUCKETD_OUTPUT_DUPLICATE_WINDOW")
      ->capture_default_str();
}

Status ParseOptionalDuration(const std::string& text, std::string_view field, TimeMs* out) {
  if (text == "0") {
    *out = 0;
    return Status::Ok();
  }
  Status status = ParseDurationString(text, out);
  if (!status.ok()) return Status::InvalidArgument(std::string(field), status.message());
  return Status::Ok();
}

Status ParseTimeout(const std::string& text, std::string_view flag,
                    std::chrono::milliseconds* out) {
  TimeMs ms = 0;
  if (Status status = ParseDurationString(text, &ms); !status.ok() || ms <= 0) {
    return Status::InvalidArgument(std::string(flag),
                                   "must be a positive duration such as \"10s\"");
  }
  *out = std::chrono::milliseconds(ms);
  return Status::Ok();
}

Status ToServerConfig(const Flags& f, HttpServerConfig* config) {
  config->io_threads = f.http_threads;
  config->connections_max = f.max_connections;
  Status status = ParseTimeout(f.idle_timeout, "--idle-timeout", &config->idle_timeout);
  if (status.ok())
    status = ParseTimeout(f.header_timeout, "--header-timeout", &config->header_timeout);
  if (status.ok()) status = ParseTimeout(f.body_timeout, "--body-timeout", &config->body_timeout);
  return status;
}

Status ToOptions(const Flags& f, Options* options, TimeMs* sweep_interval_ms) {
  options->data_dir = f.data_dir;
  options->durability = f.durability == "async" ? Durability::kAsync : Durability::kSync;
  options->clock = f.clock == "manual" ? ClockMode::kManual : ClockMode::kWall;
  if (!f.start_time.empty()) {
    TimeMs start = 0;
    if (Status status = ParseTimeText(f.start_time, &start); !status.ok()) {
      return Status::InvalidArgument("--start-time", status.message());
    }
    options->start_time_ms = start;
  }
  options->snapshot_every_records = f.snapshot_every_records;
  options->replay_threads = f.replay_threads;
  Status status =
      ParseOptionalDuration(f.snapshot_every, "--snapshot-every", &options->snapshot_every_ms);
  if (!status.ok()) return status;
  status = ParseDurationString(f.sweep_interval, sweep_interval_ms);
  if (!status.ok()) return Status::InvalidArgument("--sweep-interval", status.message());
  return Status::Ok();
}

// The bearer token: --auth-token, or the content of --auth-token-file (never both: which one
// wins would be a guess, and a forgotten variable in an environment file would silently
// replace the token an operator just rotated).
Status ResolveAuthToken(const Flags& f, std::string* token) {
  if (f.auth_token_file.empty()) {
    *token = f.auth_token;
    return Status::Ok();
  }
  if (!f.auth_token.empty()) {
    return Status::InvalidArgument("--auth-token-file",
                                   "give --auth-token (BUCKETD_TOKEN) or --auth-token-file "
                                   "(BUCKETD_TOKEN_FILE), not both");
  }
  AuthTokenFile file;
  if (Status status = ReadAuthTokenFile(f.auth_token_file, &file); !status.ok()) return status;
  if (file.readable_by_others) {
    spdlog::warn(
        "event=auth_token_file_readable path={} note=\"the token file is readable by its group "
        "or others: chmod 600 it\"",
        f.auth_token_file);
  }
  *token = std::move(file.token);
  return Status::Ok();
}

bool SplitHostPort(const std::string& listen, std::string* host, int* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  *host = listen.substr(0, colon);
  try {
    size_t used = 0;
    *port = std::stoi(listen.substr(colon + 1), &used);
    return used == listen.size() - colon - 1 && *port >= 0 && *port <= 65535;
  } catch (const std::exception&) {
    return false;
  }
}

// Applies the definition files: new ids are backfilled, changed criteria re-evaluated,
// identical definitions change nothing (SPEC §6). With `prune`, buckets no file defines
// are deleted; otherwise they stay.
Status ApplyBucketFiles(const std::string& path, bool prune, EngineThread& engine) {
  std::vector<DefinitionSource> sources;
  Status status = ReadBucketDefinitions(path, &sources);
  if (!status.ok()) return status;
  std::set<std::string> defined;
  for (const DefinitionSource& source : sources) {
    std::string id;
    status = ReadBucketId(source.json, &id);
    if (!status.ok()) return Status::InvalidArgument(source.origin, status.ToString());
    defined.insert(id);
  }
  // In file order, in rounds: a definition refused in one round (a bucket leg reading a
  // bucket a later file defines: SPEC §3b, the id must exist) is tried again in the next,
  // while a round applies something; then the first refusal left is the answer.
  std::vector<const DefinitionSource*> pending;
  for (const DefinitionSource& source : sources) pending.push_back(&source);
  while (!pending.empty()) {
    std::vector<const DefinitionSource*> refused;
    Status first_refusal;
    for (const DefinitionSource* source : pending) {
      bool created = false;
      status = engine.Call([&](Engine& e) {
        return e.DefineBucket(source->json, DefineMode::kCreateOrReplace, std::nullopt, &created);
      });
      if (!status.ok()) {
        if (refused.empty())
          first_refusal = Status::InvalidArgument(source->origin, status.ToString());
        refused.push_back(source);
        continue;
      }
      spdlog::info("event=bucket_loaded origin={} created={}", source->origin, created);
    }
    if (refused.size() == pending.size()) return first_refusal;
    pending = std::move(refused);
  }
  if (!prune) return Status::Ok();
  return engine.Call([&](Engine& e) {
    // Readers go before the buckets they read (a read bucket cannot be deleted): rounds
    // until none is left or a round deletes nothing.
    for (bool progress = true; progress;) {
      progress = false;
      Status last = Status::Ok();
      for (const BucketInfo& bucket : e.ListBuckets()) {
        if (defined.count(bucket.id) != 0) continue;
        last = e.DeleteBucket(bucket.id);
        if (!last.ok()) continue;
        progress = true;
        spdlog::info("event=bucket_pruned id={}", bucket.id);
      }
      if (!progress && !last.ok()) return last;
    }
    return Status::Ok();
  });
}

// The signals the watcher takes with sigwait; blocked in every thread from the start of main,
// before any thread exists, so none of them ever runs a default action (SIGHUP's is to exit).
sigset_t WatchedSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  return signals;
}

// Waits for signals on its own thread from start-up on. Until Arm (while the log replays), a
// stop signal stops the HTTP server and the start-up is abandoned once the engine has opened;
// SIGHUP is ignored, since the definitions are applied once replay is done anyway. Once armed,
// SIGTERM / SIGINT run `stop` (which wakes the long-polls and stops the server: it finishes its
// in-flight requests before Run() returns) and SIGHUP runs `reload` and goes on waiting: a
// reload never stops the server, whatever it finds. A stop runs once: the watcher then returns.
class SignalWatcher {
 public:
  explicit SignalWatcher(HttpServer& server) : server_(server), thread_([this] { Watch(); }) {}
  ~SignalWatcher() {
    serving_done_ = true;
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }

  // Arms `stop` and `reload`, then runs `armed` before any signal is handled (the switch to
  // the engine's routes and READY=1 come before any STOPPING=1). False, and nothing run, when
  // a stop signal came first: the server is stopping already.
  bool Arm(std::function<void()> stop, std::function<void()> reload,
           const std::function<void()>& armed) {
    std::lock_guard lock(mu_);
    if (stop_requested_) return false;
    stop_ = std::move(stop);
    reload_ = std::move(reload);
    armed();
    return true;
  }

 private:
  void Watch() {
    const sigset_t signals = WatchedSignals();
    int signal = 0;
    for (;;) {
      sigwait(&signals, &signal);
      if (serving_done_) return;
      std::lock_guard lock(mu_);
      if (signal != SIGHUP) break;
      if (reload_) {
        reload_();
      } else {
        spdlog::info(
            "event=reload note=\"still starting: the definitions are applied once the "
            "log has replayed\"");
      }
    }
    spdlog::info("event=shutdown signal={}", signal);
    NotifyStopping();
    std::lock_guard lock(mu_);
    stop_requested_ = true;
    if (stop_) {
      stop_();
    } else {
      server_.Shutdown();
    }
  }

  HttpServer& server_;
  std::mutex mu_;  // held while a callback runs: Arm cannot race a signal
  std::function<void()> stop_;
  std::function<void()> reload_;
  bool stop_requested_ = false;
  std::atomic<bool> serving_done_{false};
  std::thread thread_;  // last: starts once the members above exist
};

// The HTTP server on its own threads from start-up on, so that the port answers while the
// log replays (StartingService) and the start-up can go on on the main thread.
class ServingThread {
 public:
  explicit ServingThread(HttpServer& server)
      : server_(server), thread_([&server] { server.Run(); }) {}
  ~ServingThread() { Finish(); }
  ServingThread(const ServingThread&) = delete;
  ServingThread& operator=(const ServingThread&) = delete;

  // Until a stop signal has stopped the server and its last connection has ended.
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  // Stops the server (a no-op after a stop signal did) and joins it.
  void Finish() {
    server_.Shutdown();
    Join();
  }

 private:
  HttpServer& server_;
  std::thread thread_;
};

// Whether the owner thread answers a no-op within `deadline` and the log has not failed: what
// the systemd watchdog pings on. A stuck owner thread or a failed log withholds the ping, so
// systemd restarts the process (and the restart replays the log).
bool EngineResponsive(EngineThread& engine, std::chrono::microseconds deadline) {
  if (!engine.Stream().Health().ok()) return false;
  auto answered = std::make_shared<std::promise<void>>();
  std::future<void> done = answered->get_future();
  engine.CallAsync([](Engine&) { return 0; }, [answered](int) { answered->set_value(); });
  return done.wait_for(deadline) == std::future_status::ready;
}

// SIGHUP: the --buckets files again, through the same diff as at start (unchanged definitions
// change nothing). An error is logged and the server keeps what it has: a file that is not
// JSON or names no id stops the reload before anything is applied; a definition the engine
// refuses stops it at that file, the files before it staying applied (the log names it).
void ReloadBucketFiles(const Flags& flags, EngineThread& engine) {
  if (flags.buckets.empty()) {
    spdlog::info("event=reload note=\"no --buckets: nothing to reload\"");
    return;
  }
  spdlog::info("event=reload buckets={}", flags.buckets);
  if (Status status = ApplyBucketFiles(flags.buckets, flags.prune_buckets, engine); !status.ok()) {
    spdlog::error("event=reload_failed buckets={} error=\"{}\"", flags.buckets, status.ToString());
    return;
  }
  spdlog::info("event=reloaded buckets={}", flags.buckets);
}

// Every connection holds a descriptor: the soft limit (often 1024) would cap connections
// long before --max-connections, so it goes up to the hard limit.
void RaiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const rlim_t before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn("event=rlimit_nofile_unchanged soft={}", before);
    return;
  }
  spdlog::debug("event=rlimit_nofile soft={} raised_to={}", before, limit.rlim_cur);
}

bool IsLoopbackHost(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host == "::1" ||
         host.starts_with("127.");
}

// The names a tokenless request's Host (and Origin) may give this server.
std::vector<std::string> Authorities(const std::string& host, uint16_t port) {
  const std::string suffix = ":" + std::to_string(port);
  std::vector<std::string> out = {"localhost" + suffix, "127.0.0.1" + suffix, "[::1]" + suffix};
  std::string listen = AsciiLower(host);
  if (listen.find(':') != std::string::npos && !listen.starts_with("[")) {
    listen = "[" + listen + "]";
  }
  if (!listen.empty()) out.push_back(listen + suffix);
  return out;
}

void BlockWatchedSignals() {
  const sigset_t signals = WatchedSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

#ifdef BUCKETD_WITH_CLUSTER
// A node is responsive while its runner completes rounds (a round that meets a NATS error
// still completes, and /healthz reports it): the watchdog catches a stuck runner thread.
bool NodeResponsive(const NodeRunner& runner, std::chrono::microseconds deadline) {
  const uint64_t before = runner.status().rounds;
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (runner.status().rounds == before) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::string DefaultNodeId(int port) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string id;
  for (const char* c = host; *c != '\0' && id.size() < 48; ++c) {
    const bool ok = std::isalnum(static_cast<unsigned char>(*c)) || *c == '-' || *c == '_';
    id += ok ? *c : '_';
  }
  if (id.empty()) id = "node";
  return id + "-" + std::to_string(port != 0 ? port : static_cast<int>(getpid()));
}

// bucketd as a cluster node: no local engine; inputs go to the partition streams, the node
// folds the partitions it leases and publishes their transitions (docs/cluster.md).
int ServeCluster(const Flags& flags) {
  std::string host;
  int port = 0;
  if (!SplitHostPort(flags.listen, &host, &port)) {
    spdlog::critical("event=bad_flags error=\"--listen must be host:port\"");
    return EXIT_FAILURE;
  }
  HttpServerConfig server_config;
  TimeMs lease_ttl_ms = 0;
  Status status = ToServerConfig(flags, &server_config);
  const bool manual_clock = flags.clock == "manual";
  TimeMs start_ms = cluster::WallClockNow();
  if (status.ok() && !flags.start_time.empty()) {
    status = ParseTimeText(flags.start_time, &start_ms);
    if (!status.ok()) status = Status::InvalidArgument("--start-time", status.message());
  }
  if (status.ok()) {
    status = ParseDurationString(flags.lease_ttl, &lease_ttl_ms);
    if (!status.ok() || lease_ttl_ms < 1000) {
      status = Status::InvalidArgument("--lease-ttl", "must be a duration of at least 1s");
    }
  }
  TimeMs idempotency_window_ms = 0, duplicate_window_ms = 0, output_duplicate_window_ms = 0;
  if (status.ok()) {
    status = ParseOptionalDuration(flags.idempotency_window, "--idempotency-window",
                                   &idempotency_window_ms);
  }
  // JetStream refuses a window under 100 ms.
  for (const auto& [text, flag, out] :
       {std::tuple{&flags.duplicate_window, "--duplicate-window", &duplicate_window_ms},
        std::tuple{&flags.output_duplicate_window, "--output-duplicate-window",
                   &output_duplicate_window_ms}}) {
    if (!status.ok()) break;
    if (!ParseDurationString(*text, out).ok() || *out < 100) {
      status = Status::InvalidArgument(flag, "must be a duration of at least 100ms");
    }
  }
  std::string auth_token;
  if (status.ok()) status = ResolveAuthToken(flags, &auth_token);
  if (!status.ok()) {
    spdlog::critical("event=bad_flags error=\"{}\"", status.ToString());
    return EXIT_FAILURE;
  }
  RaiseDescriptorLimit();

  cluster::NodeOptions node_options;
  node_options.stream.url = flags.cluster_url;
  node_options.stream.cluster = flags.cluster_name;
  node_options.stream.partitions = flags.partitions;
  node_options.stream.replicas = flags.cluster_replicas;
  node_options.node_id = flags.node_id.empty() ? DefaultNodeId(port) : flags.node_id;
  node_options.lease_ttl_ms = lease_ttl_ms;
  node_options.renew_every_ms = lease_ttl_ms / 3;
  // The node's own copies of its partitions' snapshots (docs/cluster.md, "Local snapshots").
  node_options.local_dir = (std::filesystem::path(flags.data_dir) / "cluster").string();
  node_options.stream.idempotency_window_ms = idempotency_window_ms;
  node_options.stream.duplicate_window_ms = duplicate_window_ms;
  node_options.output_duplicate_window_ms = output_duplicate_window_ms;
  // Counted in each partition's own messages: a new owner's catch-up is bounded by it.
  node_options.snapshot_every_records = flags.snapshot_every_records;
  node_options.manual_clock = manual_clock;
  std::unique_ptr<cluster::ClusterNode> node;
  status = cluster::ClusterNode::Open(node_options, &node);
  std::vector<std::unique_ptr<cluster::PartitionStream>> router_streams(kInputWorkers);
  for (auto& stream : router_streams) {
    if (status.ok()) status = cluster::PartitionStream::Open(node_options.stream, &stream);
  }
  if (status.ok() && manual_clock) {
    // A new cluster's manual clock starts at --start-time (or now); a running one keeps its
    // own, as a single node's data dir does.
    TimeMs now = 0;
    uint64_t clock_seq = 0;
    status = router_streams[0]->ReadClock(&now, &clock_seq);
    if (status.ok() && clock_seq == 0) status = router_streams[0]->SetClock(start_ms, 0);
  }
  std::unique_ptr<cluster::PartitionStream> control_stream;
  if (status.ok()) status = cluster::PartitionStream::Open(node_options.stream, &control_stream);
  // GET /v1/transitions reads the output stream on a connection of its own.
  std::unique_ptr<cluster::OutputStream> output;
  if (status.ok()) {
    std::shared_ptr<cluster::NatsConnection> connection;
    status = cluster::NatsConnection::Connect(node_options.stream.url,
                                              node_options.stream.timeout_ms, &connection);
    if (status.ok()) {
      status =
          cluster::OutputStream::Open(connection, cluster::OutputOptionsOf(node_options), &output);
    }
  }
  std::vector<std::unique_ptr<cluster::QueryClient>> query_clients(kQueryWorkers);
  for (auto& client : query_clients) {
    if (status.ok()) status = cluster::QueryClient::Open(node_options.stream, &client);
  }
  if (!status.ok()) {
    spdlog::critical("event=cluster_open_failed url={} error=\"{}\"", flags.cluster_url,
                     status.ToString());
    std::fprintf(stderr, "bucketd: %s\n", status.ToString().c_str());
    return EXIT_FAILURE;
  }
  // The cluster's, from its stream: every fold of a partition must skip the same records.
  const TimeMs cluster_window_ms = node->input()->idempotency_window_ms();
  if (cluster_window_ms != idempotency_window_ms) {
    spdlog::warn(
        "event=idempotency_window_kept cluster_ms={} flag_ms={} note=\"fixed when the cluster "
        "was created\"",
        cluster_window_ms, idempotency_window_ms);
  }
  ServerMetrics metrics;
  NodeRunner runner(std::move(node), std::chrono::milliseconds(100));
  InputRouter router(std::move(router_streams));
  QueryRouter queries(std::move(query_clients));
  TransitionsFeed transitions(std::move(output));
  ControlWriter control(std::make_unique<ControlPublisher>(std::move(control_stream)));
  ClusterApi api(runner, router, control, queries, transitions, metrics,
                 {.auth_token = auth_token,
                  .node_id = node_options.node_id,
                  .partitions = flags.partitions,
                  .manual_clock = manual_clock});
  HttpServer server(api, server_config);
  status = server.Listen(host, static_cast<uint16_t>(port));
  if (!status.ok()) {
    spdlog::critical("event=listen_failed listen={} error=\"{}\"", flags.listen, status.message());
    std::fprintf(stderr, "bucketd: %s\n", status.message().c_str());
    return EXIT_FAILURE;
  }
  api.SetAuthorities(Authorities(host, server.port()));
  if (auth_token.empty() && !IsLoopbackHost(host)) {
    spdlog::warn("event=tokenless_public_listen address={}", flags.listen);
  }
  runner.Start();
  spdlog::info(
      "event=listening address={}:{} mode=cluster cluster={} node={} partitions={} "
      "lease_ttl_ms={} idempotency_window_ms={} duplicate_window_ms={} "
      "output_duplicate_window_ms={} clock={} auth={}",
      host, server.port(), flags.cluster_name, node_options.node_id, flags.partitions, lease_ttl_ms,
      cluster_window_ms, duplicate_window_ms, output_duplicate_window_ms, flags.clock,
      auth_token.empty() ? "off" : "bearer");
  {
    ServingThread serving(server);
    SignalWatcher watcher(server);
    std::atomic<bool> stopping{false};
    // SIGHUP: nothing to reload in cluster mode yet. The node leaves the cluster after the
    // server has stopped.
    if (watcher.Arm(
            [&] {
              stopping = true;
              api.BeginShutdown();
              server.Shutdown();
            },
            [] {
              NotifyReloading();
              spdlog::info("event=reload note=\"cluster mode: nothing to reload\"");
              NotifyReady("serving");
            },
            [] {})) {
      // Ready as /readyz is: once the first round has run.
      while (runner.status().rounds == 0 && !stopping) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (!stopping) NotifyReady("serving as cluster node " + node_options.node_id);
      SystemdWatchdog watchdog([&runner](std::chrono::microseconds deadline) {
        return NodeResponsive(runner, deadline);
      });
      serving.Join();
    }
  }
  runner.Stop();  // hands the partitions over at once
  spdlog::info("event=stopped");
  return EXIT_SUCCESS;
}
#endif

Status ToWebhookConfig(const Flags& flags, WebhookConfig* out) {
  std::set<std::string> hosts;
  if (Status s = WebhookPolicy::ParseAllowHosts(flags.webhook_allow_hosts, &hosts); !s.ok()) {
    return s;
  }
  out->policy = WebhookPolicy(flags.webhook_allow_any, std::move(hosts));
  out->batch_max = flags.webhook_batch_max;
  TimeMs timeout_ms = 0;
  if (!ParseDurationString(flags.webhook_timeout, &timeout_ms).ok() || timeout_ms < 1) {
    return Status::InvalidArgument("--webhook-timeout", "must be a duration such as 10s");
  }
  out->timeout = std::chrono::milliseconds(timeout_ms);
  TimeMs log_every_ms = 0;
  if (flags.webhook_log_every != "0" &&
      (!ParseDurationString(flags.webhook_log_every, &log_every_ms).ok() || log_every_ms < 0)) {
    return Status::InvalidArgument("--webhook-log-every", "must be a duration such as 1s, or 0");
  }
  out->log_every = std::chrono::milliseconds(log_every_ms);
  return Status::Ok();
}

int Serve(const Flags& flags) {
#ifdef BUCKETD_WITH_CLUSTER
  if (!flags.cluster_url.empty()) return ServeCluster(flags);
#else
  if (!flags.cluster_url.empty()) {
    std::fprintf(stderr, "bucketd: built without cluster mode (BUCKETD_BUILD_CLUSTER=OFF)\n");
    return EXIT_FAILURE;
  }
#endif
  Options options;
  TimeMs sweep_interval_ms = 0;
  std::string host;
  int port = 0;
  if (Status status = ToOptions(flags, &options, &sweep_interval_ms); !status.ok()) {
    spdlog::critical("event=bad_flags error=\"{}\"", status.ToString());
    return EXIT_FAILURE;
  }
  if (!SplitHostPort(flags.listen, &host, &port)) {
    spdlog::critical("event=bad_flags error=\"--listen must be host:port\"");
    return EXIT_FAILURE;
  }
  HttpServerConfig server_config;
  std::string auth_token;
  WebhookConfig webhook_config;
  Status status = ToServerConfig(flags, &server_config);
  if (status.ok()) status = ResolveAuthToken(flags, &auth_token);
  if (status.ok()) status = ToWebhookConfig(flags, &webhook_config);
  if (!status.ok()) {
    spdlog::critical("event=bad_flags error=\"{}\"", status.ToString());
    return EXIT_FAILURE;
  }
  RaiseDescriptorLimit();

  // The port is bound before the log replays: a busy port fails the start-up at once, not
  // after a long replay, and probes are answered (StartingService) while it runs.
  ServerMetrics metrics;
  StartingService starting(metrics);
  ServiceSwitch service(starting);
  HttpServer server(service, server_config);
  status = server.Listen(host, static_cast<uint16_t>(port));
  if (!status.ok()) {
    spdlog::critical("event=listen_failed listen={} error=\"{}\"", flags.listen, status.message());
    // Also on stderr, whatever the log level: the one reason start-up failed.
    std::fprintf(stderr, "bucketd: %s\n", status.message().c_str());
    return EXIT_FAILURE;
  }
  if (auth_token.empty() && !IsLoopbackHost(host)) {
    spdlog::warn(
        "event=tokenless_public_listen address={} note=\"no --auth-token: anyone who can "
        "reach this address can change state; only Host and Origin are checked\"",
        flags.listen);
  }
  spdlog::info(
      "event=listening address={}:{} status=starting clock={} durability={} auth={} "
      "io_threads={}",
      host, server.port(), flags.clock, flags.durability, auth_token.empty() ? "off" : "bearer",
      server_config.io_threads);
  ServingThread serving(server);
  SignalWatcher watcher(server);
  NotifyStatus("opening the data dir and replaying the log");

  std::unique_ptr<Engine> engine;
  std::vector<std::string> warnings;
  status = Engine::Open(options, &engine, &warnings);
  for (const std::string& warning : warnings) spdlog::warn("event=open_warning {}", warning);
  if (!status.ok()) {
    spdlog::critical("event=open_failed data={} error=\"{}\"", options.data_dir, status.ToString());
    return EXIT_FAILURE;
  }
  EngineStats stats = engine->Stats();
  spdlog::info("event=opened data={} replayed_records={} replay_threads={} open_micros={} now={}",
               options.data_dir, stats.replayed_records, stats.replay_threads, stats.open_micros,
               FormatRfc3339(engine->Now()));

  const bool manual_clock = options.clock == ClockMode::kManual;
  EngineThread engine_thread(std::move(engine),
                             {.background_sweeps = !manual_clock,
                              .sweep_interval = std::chrono::milliseconds(sweep_interval_ms)},
                             &metrics);
  engine_thread.Start();
  WebhookDeliverer webhooks(engine_thread, std::move(webhook_config));

  int exit_code = EXIT_SUCCESS;
  if (!flags.buckets.empty())
    status = ApplyBucketFiles(flags.buckets, flags.prune_buckets, engine_thread);
  if (!status.ok()) {
    spdlog::critical("event=buckets_failed error=\"{}\"", status.ToString());
    exit_code = EXIT_FAILURE;
  } else {
    HttpApi api(engine_thread, metrics, {auth_token, manual_clock, flags.backup_dir});
    api.SetAuthorities(Authorities(host, server.port()));
    api.SetWebhooks(&webhooks);
    webhooks.Start();
    const bool armed = watcher.Arm(
        [&] {
          api.BeginShutdown();
          engine_thread.CloseStream();
          server.Shutdown();
        },
        [&flags, &engine_thread] {
          NotifyReloading();
          ReloadBucketFiles(flags, engine_thread);
          NotifyReady("serving");
        },
        [&] {
          service.SwitchTo(api);
          spdlog::info("event=ready address={}:{}", host, server.port());
          NotifyReady("serving");
        });
    // Not armed: a stop signal came during the replay and the server is stopping already.
    if (armed) {
      SystemdWatchdog watchdog([&engine_thread](std::chrono::microseconds deadline) {
        return EngineResponsive(engine_thread, deadline);
      });
      serving.Join();
    }
    // Before the routes go: until the server has stopped, a request may reach them.
    serving.Finish();
  }
  serving.Finish();  // after a failed --buckets: the starting service was still serving

  // Before the owner thread: it logs the cursors delivered since the last logged advance.
  webhooks.Stop();
  engine_thread.Stop();
  Engine& owned = engine_thread.StoppedEngine();
  if (flags.snapshot_on_exit && exit_code == EXIT_SUCCESS) {
    SnapshotInfo info;
    status = owned.TakeSnapshot(&info);
    if (status.ok()) {
      spdlog::info("event=snapshot path={} log_seq={} bytes={}", info.path, info.log_seq,
                   info.bytes);
    } else {
      spdlog::error("event=snapshot_failed error=\"{}\"", status.ToString());
    }
  }
  status = owned.Close();
  if (!status.ok()) {
    spdlog::critical("event=close_failed error=\"{}\"", status.ToString());
    return EXIT_FAILURE;
  }
  spdlog::info("event=stopped");
  return exit_code;
}

}  // namespace
}  // namespace bucketd::server

int main(int argc, char** argv) {
  bucketd::server::BlockWatchedSignals();
  CLI::App app{"bucketd: real-time bucket membership, served over HTTP/JSON"};
  bucketd::server::Flags flags;
  bucketd::server::AddFlags(app, flags);
  app.set_version_flag("--version", std::string("bucketd ") + bucketd::build_info::kVersion + " (" +
                                        bucketd::build_info::kCommit + ")");
  CLI11_PARSE(app, argc, argv);
  bucketd::server::SetUpLogging(flags.log_format == "json" ? bucketd::server::LogFormat::kJson
                                                           : bucketd::server::LogFormat::kText);
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  return bucketd::server::Serve(flags);
}
