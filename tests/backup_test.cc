// Backups of a running data dir (Engine::Backup, POST /v1/admin/backup, `bucketctl backup`):
// the backup is a data dir that opens at the position it was taken with the state the source
// had there, whatever ran before and after it, and the source keeps serving.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <simdjson.h>
#include <catch2/catch.hpp>

#include "tests/command_test_support.h"
#include "tests/sidecar_test_support.h"
#include "tests/test_support.h"
#include "tools/bucketctl/workload.h"

namespace bucketd {
namespace {

namespace fs = std::filesystem;
using testing::ManualOptions;
using testing::OpenOrFail;
using testing::RequireOk;
using testing::TempDir;

// The state a data dir opens to, read-only; `use_snapshots` false replays the whole log.
StateInfo OpenedState(const std::string& dir, bool use_snapshots, EngineStats* stats = nullptr) {
  Options options = ManualOptions(dir);
  options.read_only = true;
  options.use_snapshots = use_snapshots;
  auto engine = OpenOrFail(options);
  if (stats) *stats = engine->Stats();
  return engine->State();
}

// `bucketctl verify` on a data dir: every checksum, the stored stream, snapshot vs replay.
testing::CommandRun Verify(const std::string& dir) {
  const char* bin = std::getenv("BUCKETCTL_BIN");
  REQUIRE(bin != nullptr);  // CTest sets it
  return testing::RunCommand(std::string(bin) + " verify --data " + dir + " 2>&1");
}

EventInput Event(const std::string& user, const std::string& event) {
  EventInput in;
  in.user_id = user;
  in.event = event;
  return in;
}

TEST_CASE("a backup taken mid-workload opens at its position with the source's state there",
          "[backup]") {
  TempDir source;
  TempDir backups;
  auto engine = OpenOrFail(ManualOptions(source.path()));
  workload::Options w;
  w.users = 300;
  w.events = 6000;
  w.seed = 19;
  w.batch = 8;
  workload::Generator generator(w);
  RequireOk(generator.Setup(engine.get()));
  const std::string target = backups.path() + "/nested/b1";
  BackupInfo info;
  StateInfo at_backup;
  RequireOk(generator.Run(engine.get(), [&](uint64_t events_done) {
    // A snapshot a third of the way in, the backup two thirds in: the backup holds the
    // snapshot and a log tail after it, and the workload goes on after the backup.
    if (events_done >= w.events / 3 && engine->Stats().last_snapshot_at_ms == std::nullopt) {
      SnapshotInfo snapshot;
      RequireOk(engine->TakeSnapshot(&snapshot));
    }
    if (events_done >= 2 * w.events / 3 && info.path.empty()) {
      RequireOk(engine->Backup(target, &info));
      at_backup = engine->State();
    }
    return true;
  }));
  REQUIRE_FALSE(info.path.empty());
  CHECK(info.path == target);
  CHECK(info.log_seq == at_backup.log_seq);
  CHECK(info.transition_seq == at_backup.transition_seq);
  CHECK(info.digest == at_backup.digest);
  REQUIRE(info.snapshot_log_seq.has_value());
  CHECK(*info.snapshot_log_seq < info.log_seq);
  // The source went on past the backup.
  const StateInfo source_end = engine->State();
  CHECK(source_end.log_seq > info.log_seq);
  RequireOk(engine->Close());
  CHECK_FALSE(fs::exists(target + ".partial"));

  EngineStats stats;
  const StateInfo from_snapshot = OpenedState(target, true, &stats);
  CHECK(from_snapshot.log_seq == info.log_seq);
  CHECK(from_snapshot.transition_seq == info.transition_seq);
  CHECK(from_snapshot.digest == info.digest);
  CHECK(stats.replayed_records == info.log_seq - *info.snapshot_log_seq);
  const StateInfo replayed = OpenedState(target, false);
  CHECK(replayed.digest == info.digest);
  const testing::CommandRun verified = Verify(target);
  INFO(verified.output);
  CHECK(verified.exit_code == 0);
  // The source, reopened, is where it was left: the backup took nothing from it.
  CHECK(OpenedState(source.path(), true).digest == source_end.digest);

  // A backup is a data dir to run on, not only to read.
  auto restored = OpenOrFail(ManualOptions(target));
  IngestResult ingested;
  RequireOk(restored->Ingest(Event("after-restore", "feature.used"), &ingested));
  CHECK(ingested.log_seq == info.log_seq + 1);
}

TEST_CASE("a backup within a group holds the group's inputs; without a snapshot it replays all",
          "[backup]") {
  TempDir source;
  TempDir backups;
  auto engine = OpenOrFail(ManualOptions(source.path()));
  engine->BeginGroup();
  IngestResult ingested;
  RequireOk(engine->Ingest(Event("u1", "feature.used"), &ingested));
  RequireOk(engine->Ingest(Event("u2", "feature.used"), &ingested));
  BackupInfo info;
  RequireOk(engine->Backup(backups.path() + "/b", &info));
  RequireOk(engine->EndGroup());
  CHECK(info.log_seq == 2);
  CHECK_FALSE(info.snapshot_log_seq.has_value());
  EngineStats stats;
  CHECK(OpenedState(info.path, true, &stats).digest == info.digest);
  CHECK(stats.replayed_records == 2);
}

TEST_CASE("a backup refuses an existing target, one inside the data dir, and a read-only engine",
          "[backup]") {
  TempDir source;
  TempDir backups;
  auto engine = OpenOrFail(ManualOptions(source.path()));
  IngestResult ingested;
  RequireOk(engine->Ingest(Event("u1", "feature.used"), &ingested));
  BackupInfo info;

  const std::string existing = backups.path() + "/existing";
  fs::create_directories(existing);
  CHECK(engine->Backup(existing, &info).code() == StatusCode::kAlreadyExists);
  CHECK(fs::is_empty(existing));

  CHECK(engine->Backup(source.path() + "/backup", &info).code() == StatusCode::kInvalidArgument);
  CHECK(engine->Backup(source.path() + "/log/../x", &info).code() == StatusCode::kInvalidArgument);
  // A symlink pointing into the data dir is inside it too.
  fs::create_directory_symlink(source.path(), backups.path() + "/link");
  CHECK(engine->Backup(backups.path() + "/link/b", &info).code() == StatusCode::kInvalidArgument);
  CHECK_FALSE(fs::exists(source.path() + "/b"));

  // What an interrupted backup left under the target's name is not a backup: replaced.
  const std::string target = backups.path() + "/b";
  fs::create_directories(target + ".partial/log");
  std::ofstream(target + ".partial/log/CURRENT") << "garbage";
  RequireOk(engine->Backup(target, &info));
  CHECK_FALSE(fs::exists(target + ".partial"));
  CHECK(OpenedState(target, true).digest == info.digest);
  RequireOk(engine->Close());

  Options read_only = ManualOptions(source.path());
  read_only.read_only = true;
  auto reader = OpenOrFail(read_only);
  CHECK(reader->Backup(backups.path() + "/ro", &info).code() == StatusCode::kFailedPrecondition);
  CHECK_FALSE(fs::exists(backups.path() + "/ro"));
}

// --- the server and bucketctl ---

struct Json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  explicit Json(const std::string& text) { REQUIRE(parser.parse(text).get(root) == 0); }
  simdjson::dom::element operator[](std::string_view key) { return root[key].value(); }
};

uint64_t Uint(simdjson::dom::element e) { return e.get_uint64().value(); }
std::string Str(simdjson::dom::element e) { return std::string(e.get_string().value()); }

httplib::Result PostJson(httplib::Client& c, const std::string& path, const std::string& body) {
  return c.Post(path.c_str(), body, "application/json");
}

// Posts batches of events from its own thread until stopped, as a client would during a
// backup; counts the batches the server accepted whole.
class Ingester {
 public:
  Ingester(const testing::Sidecar& server, const std::string& token) : client_(server.Client()) {
    client_.set_bearer_token_auth(token);
    thread_ = std::thread([this] { Loop(); });
  }
  ~Ingester() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t accepted_batches() const { return accepted_; }
  uint64_t failed_batches() const { return failed_; }

 private:
  void Loop() {
    std::mt19937_64 rng(7);
    for (uint64_t batch = 0; !stop_; ++batch) {
      std::string body = "[";
      for (int i = 0; i < 50; ++i) {
        if (i > 0) body += ",";
        body += R"({"userId":"u)" + std::to_string(rng() % 500) +
                R"(","event":"feature.used","idempotencyKey":"k)" + std::to_string(batch) + "-" +
                std::to_string(i) + R"("})";
      }
      body += "]";
      auto res = PostJson(client_, "/v1/events", body);
      if (res && res->status == 200) {
        ++accepted_;
      } else {
        ++failed_;
      }
    }
  }

  httplib::Client client_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> failed_{0};
  std::thread thread_;
};

const char* kActive =
    R"({"id":"active","name":"Active","criteria":{"type":"event","eventName":"feature.used",)"
    R"("check":"count","operator":"gte","value":3,"within":"1d"}})";

bool EventuallyAccepted(const Ingester& ingester, uint64_t batches) {
  using namespace std::chrono_literals;
  for (int i = 0; i < 2000 && ingester.accepted_batches() < batches; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  return ingester.accepted_batches() >= batches;
}

TEST_CASE(
    "POST /v1/admin/backup while events arrive: the backup opens at its position with the "
    "digest answered, and the server goes on",
    "[backup][server]") {
  TempDir dir;
  const std::string data = dir.path() + "/data";
  const std::string backup_dir = dir.path() + "/backups";
  testing::Sidecar server(data, {"--backup-dir", backup_dir, "--auth-token", "secret"});
  httplib::Client c = server.Client();
  c.set_bearer_token_auth("secret");
  REQUIRE(PostJson(c, "/v1/buckets", kActive)->status == 201);
  REQUIRE(c.Post("/v1/snapshots", "", "application/json")->status == 201);

  Ingester ingester(server, "secret");
  REQUIRE(EventuallyAccepted(ingester, 20));
  auto res = c.Post("/v1/admin/backup", "", "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 201);
  Json answer(res->body);
  const std::string path = Str(answer["path"]);
  const uint64_t log_seq = Uint(answer["logSeq"]);
  const std::string digest = Str(answer["digest"]);
  CHECK(fs::path(path).parent_path() == fs::path(backup_dir));
  CHECK(fs::path(path).filename().string().starts_with("backup-"));
  CHECK(Uint(answer["snapshotLogSeq"]) >= 1);
  // The server keeps taking events after the backup.
  const uint64_t accepted_at_backup = ingester.accepted_batches();
  REQUIRE(EventuallyAccepted(ingester, accepted_at_backup + 20));
  ingester.Stop();
  CHECK(ingester.failed_batches() == 0);
  res = c.Get("/v1/state");
  REQUIRE(res);
  const uint64_t source_seq = Uint(Json(res->body)["logSeq"]);
  CHECK(source_seq > log_seq);

  // A running server's data dir is locked: bucketctl refuses it (the route is the way).
  const char* ctl = std::getenv("BUCKETCTL_BIN");
  REQUIRE(ctl != nullptr);
  const testing::CommandRun locked = testing::RunCommand(
      std::string(ctl) + " backup --data " + data + " --to " + dir.path() + "/offline 2>&1");
  CHECK(locked.exit_code != 0);
  CHECK_FALSE(fs::exists(dir.path() + "/offline"));

  // Without the token the route is refused like any /v1 call.
  httplib::Client anonymous = server.Client();
  res = anonymous.Post("/v1/admin/backup", "", "application/json");
  REQUIRE(res);
  CHECK(res->status == 401);
  CHECK(server.Stop() == 0);

  const StateInfo opened = OpenedState(path, true);
  CHECK(opened.log_seq == log_seq);
  CHECK(opened.digest == digest);
  const testing::CommandRun verified = Verify(path);
  INFO(verified.output);
  CHECK(verified.exit_code == 0);
  CHECK(verified.output.find(digest) != std::string::npos);

  // Stopped, the data dir backs up offline too, with the server's last state.
  const testing::CommandRun offline = testing::RunCommand(
      std::string(ctl) + " backup --data " + data + " --to " + dir.path() + "/offline 2>&1");
  INFO(offline.output);
  CHECK(offline.exit_code == 0);
  const StateInfo source = OpenedState(data, true);
  CHECK(source.log_seq == source_seq);
  CHECK(offline.output.find(source.digest) != std::string::npos);
  CHECK(OpenedState(dir.path() + "/offline", false).digest == source.digest);
}

TEST_CASE("POST /v1/admin/backup without --backup-dir is refused and writes nothing",
          "[backup][server]") {
  TempDir dir;
  testing::Sidecar server(dir.path() + "/data");
  httplib::Client c = server.Client();
  auto res = c.Post("/v1/admin/backup", "", "application/json");
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == 409);
  CHECK(Str(Json(res->body)["error"]["field"]) == "--backup-dir");
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    entries.push_back(entry.path().filename().string());
  }
  CHECK(entries == std::vector<std::string>{"data"});
}

}  // namespace
}  // namespace bucketd
