// bucketctl: offline tools on a data dir (SPEC §9): replay, snapshot, verify, inspect,
// salvage, erase and a seeded workload generator. `inspect` and `salvage` read the log and the
// snapshot directory directly; everything else goes through the public Engine API.
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "bucketd/engine.h"
#include "bucketd/time_format.h"
#include "log/log.h"
#include "snapshot/snapshot_store.h"
#include "tools/bucketctl/workload.h"
#include "tools/build_info.h"

namespace bucketd {
namespace {

// 2026-01-01T00:00:00Z: where a manual clock starts on an empty data dir.
constexpr TimeMs kDefaultStartMs = 1'767'225'600'000;

int Fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "bucketctl: %s: %s\n", what.c_str(), s.ToString().c_str());
  return 2;
}

void PrintWarnings(const std::vector<std::string>& warnings) {
  for (const std::string& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
}

// Offline opens never read the wall clock: a manual clock starts at the log's last instant.
Options OfflineOptions(const std::string& dir) {
  Options options;
  options.data_dir = dir;
  options.clock = ClockMode::kManual;
  options.start_time_ms = kDefaultStartMs;
  options.snapshot_every_records = 0;
  options.snapshot_every_ms = 0;
  return options;
}

Status OpenEngine(const Options& options, std::unique_ptr<Engine>* engine) {
  std::vector<std::string> warnings;
  Status s = Engine::Open(options, engine, &warnings);
  PrintWarnings(warnings);
  return s;
}

Status ParseInstant(const std::string& text, TimeMs* out) {
  if (!text.empty() && text.find_first_not_of("0123456789-") == std::string::npos) {
    *out = std::stoll(text);
    return Status::Ok();
  }
  return ParseRfc3339(text, out);
}

void PrintState(const Engine& engine) {
  const StateInfo info = engine.State();
  std::printf("log seq         %llu\n", static_cast<unsigned long long>(info.log_seq));
  std::printf("transition seq  %llu\n", static_cast<unsigned long long>(info.transition_seq));
  std::printf("now             %s\n", FormatRfc3339(info.now).c_str());
  std::printf("digest          %s\n", info.digest.c_str());
}

int Replay(const std::string& dir, const std::optional<std::string>& until, bool from_scratch,
           uint32_t threads) {
  Options options = OfflineOptions(dir);
  options.read_only = true;
  options.use_snapshots = !from_scratch;
  options.replay_threads = threads;
  if (until) {
    TimeMs t = 0;
    if (Status s = ParseInstant(*until, &t); !s.ok()) return Fail("--until", s);
    options.replay_until_ms = t;
  }
  std::unique_ptr<Engine> engine;
  if (Status s = OpenEngine(options, &engine); !s.ok()) return Fail("open " + dir, s);
  const EngineStats stats = engine->Stats();
  for (const BucketInfo& b : engine->ListBuckets()) {
    std::printf("bucket %-32s %-8s active %-10llu entered %-10llu left %llu\n", b.id.c_str(),
                b.enabled ? "enabled" : "disabled",
                static_cast<unsigned long long>(b.counts.active),
                static_cast<unsigned long long>(b.counts.entered),
                static_cast<unsigned long long>(b.counts.left));
  }
  PrintState(*engine);
  const double seconds = static_cast<double>(stats.open_micros) / 1e6;
  std::printf("replayed        %llu records in %.3f s (%.0f records/s, open total, %u %s)\n",
              static_cast<unsigned long long>(stats.replayed_records), seconds,
              seconds > 0 ? static_cast<double>(stats.replayed_records) / seconds : 0.0,
              stats.replay_threads, stats.replay_threads == 1 ? "thread" : "threads");
  return 0;
}

int Snapshot(const std::string& dir) {
  std::unique_ptr<Engine> engine;
  if (Status s = OpenEngine(OfflineOptions(dir), &engine); !s.ok()) return Fail("open " + dir, s);
  SnapshotInfo info;
  if (Status s = engine->TakeSnapshot(&info); !s.ok()) return Fail("snapshot", s);
  std::printf("%s  log seq %llu  %llu bytes  %.3f s\n", info.path.c_str(),
              static_cast<unsigned long long>(info.log_seq),
              static_cast<unsigned long long>(info.bytes),
              static_cast<double>(info.write_micros) / 1e6);
  return engine->Close().ok() ? 0 : 2;
}

int Verify(const std::string& dir) {
  StateInfo with_snapshot;
  uint64_t tail = 0;
  {
    Options options = OfflineOptions(dir);
    options.read_only = true;
    std::unique_ptr<Engine> engine;
    if (Status s = OpenEngine(options, &engine); !s.ok()) return Fail("open " + dir, s);
    with_snapshot = engine->State();
    tail = engine->Stats().replayed_records;
  }
  Options options = OfflineOptions(dir);
  options.read_only = true;
  options.use_snapshots = false;
  // The whole log is read and checked too: checksums, transitions, idempotency keys.
  options.check_log = true;
  std::unique_ptr<Engine> engine;
  if (Status s = OpenEngine(options, &engine); !s.ok()) return Fail("verify " + dir, s);
  const StateInfo full = engine->State();
  const bool used_snapshot = tail < full.log_seq || full.log_seq == 0;
  std::printf("snapshot + tail  %s  (log seq %llu, tail %llu records%s)\n",
              with_snapshot.digest.c_str(), static_cast<unsigned long long>(with_snapshot.log_seq),
              static_cast<unsigned long long>(tail), used_snapshot ? "" : ", no snapshot used");
  std::printf("full replay      %s  (log seq %llu, transitions %llu as stored)\n",
              full.digest.c_str(), static_cast<unsigned long long>(full.log_seq),
              static_cast<unsigned long long>(full.transition_seq));
  if (with_snapshot.digest != full.digest || with_snapshot.log_seq != full.log_seq ||
      with_snapshot.transition_seq != full.transition_seq) {
    std::fprintf(stderr,
                 "bucketctl verify: MISMATCH: the newest snapshot plus the log tail does not "
                 "equal a full replay of the log\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}

int Inspect(const std::string& dir) {
  std::unique_ptr<Log> log;
  LogOptions log_options;
  log_options.path = dir + "/log";
  log_options.read_only = true;
  if (Status s = Log::Open(log_options, &log); !s.ok()) return Fail("open log", s);
  static const char* const kKindNames[] = {
      "event",         "contact_delete", "bucket_define", "bucket_enable", "bucket_disable",
      "bucket_delete", "member_add",     "member_remove", "clock_advance", "sweep"};
  std::array<uint64_t, std::size(kKindNames)> by_kind{};
  uint64_t first_seq = 0, last_seq = 0;
  TimeMs first_at = 0, last_at = 0;
  auto reader = log->ReadFrom(1);
  Record r;
  while (reader->Next(&r)) {
    if (first_seq == 0) {
      first_seq = r.seq;
      first_at = r.at;
    }
    last_seq = r.seq;
    last_at = r.at;
    const auto kind = static_cast<size_t>(r.kind);
    if (kind < by_kind.size()) ++by_kind[kind];
  }
  if (Status s = reader->status(); !s.ok()) return Fail("read log", s);
  if (first_seq == 0) {
    std::printf("log             empty\n");
  } else {
    std::printf("log             seq %llu .. %llu\n", static_cast<unsigned long long>(first_seq),
                static_cast<unsigned long long>(last_seq));
    std::printf("instants        %s .. %s\n", FormatRfc3339(first_at).c_str(),
                FormatRfc3339(last_at).c_str());
  }
  for (size_t i = 0; i < by_kind.size(); ++i) {
    if (by_kind[i] > 0) {
      std::printf("  %-16s %llu\n", kKindNames[i], static_cast<unsigned long long>(by_kind[i]));
    }
  }
  std::printf("transitions     %llu\n",
              static_cast<unsigned long long>(log->last_transition_seq()));
  std::printf("log bytes       ~%llu\n", static_cast<unsigned long long>(log->ApproximateBytes()));
  const SnapshotStore store(dir + "/snapshots", 1);
  const std::vector<SnapshotFile> files = store.List();
  std::printf("snapshots       %zu\n", files.size());
  for (const SnapshotFile& f : files) {
    std::printf("  log seq %-12llu %12llu bytes  %s\n", static_cast<unsigned long long>(f.log_seq),
                static_cast<unsigned long long>(f.bytes), f.path.c_str());
  }
  return 0;
}

// A log damaged before its end does not open (Log::Open). Shows what a point-in-time
// recovery would keep and, with `truncate`, makes it so; the next start then sets aside
// snapshots beyond the kept end and replays.
int Salvage(const std::string& dir, bool truncate) {
  LogOptions log_options;
  log_options.path = dir + "/log";
  log_options.read_only = true;
  std::unique_ptr<Log> log;
  const Status plain = Log::Open(log_options, &log);
  if (plain.ok()) {
    std::printf("the log opens cleanly (seq 1 .. %llu): nothing to salvage\n",
                static_cast<unsigned long long>(log->last_seq()));
    return 0;
  }
  if (plain.code() != StatusCode::kCorruption) return Fail("open log", plain);
  std::printf("damage: %s\n", plain.message().c_str());
  log_options.salvage = true;
  log_options.read_only = !truncate;
  log.reset();
  if (Status s = Log::Open(log_options, &log); !s.ok()) return Fail("salvage", s);
  const uint64_t kept = log->last_seq();
  if (!truncate) {
    std::printf(
        "records 1 .. %llu are readable before the damage; `bucketctl salvage --truncate` "
        "keeps them and drops the rest\n",
        static_cast<unsigned long long>(kept));
    return 1;
  }
  // Writes the recovered records into table files, retiring the damaged write-ahead file.
  if (Status s = log->Flush(); !s.ok()) return Fail("salvage", s);
  log.reset();
  std::printf("kept records 1 .. %llu; the rest is dropped\n",
              static_cast<unsigned long long>(kept));
  std::unique_ptr<Engine> engine;
  if (Status s = OpenEngine(OfflineOptions(dir), &engine); !s.ok()) return Fail("open " + dir, s);
  PrintState(*engine);
  return engine->Close().ok() ? 0 : 2;
}

// Erasure (SPEC §11) with the server stopped: the same call the server's
// DELETE /v1/contacts/{userId}?erase=true makes.
int Erase(const std::string& dir, const std::string& user_id) {
  std::unique_ptr<Engine> engine;
  if (Status s = OpenEngine(OfflineOptions(dir), &engine); !s.ok()) return Fail("open " + dir, s);
  ErasureResult erased;
  if (Status s = engine->EraseContact(user_id, &erased); !s.ok()) return Fail("erase", s);
  std::printf("erased as %s: %llu records, %llu transitions, %llu idempotency keys (%.3f s)\n",
              erased.pseudonym.c_str(), static_cast<unsigned long long>(erased.records),
              static_cast<unsigned long long>(erased.transitions),
              static_cast<unsigned long long>(erased.idempotency_keys),
              static_cast<double>(erased.micros) / 1e6);
  return engine->Close().ok() ? 0 : 2;
}

// A backup of a stopped server's data dir: the same Engine::Backup as the server's
// POST /v1/admin/backup. The open takes the log's lock, so a running server's dir is refused
// (back that up through the route).
int Backup(const std::string& dir, const std::string& target) {
  std::unique_ptr<Engine> engine;
  if (Status s = OpenEngine(OfflineOptions(dir), &engine); !s.ok()) return Fail("open " + dir, s);
  BackupInfo info;
  if (Status s = engine->Backup(target, &info); !s.ok()) return Fail("backup", s);
  std::printf("backup          %s\n", info.path.c_str());
  std::printf("log seq         %llu\n", static_cast<unsigned long long>(info.log_seq));
  std::printf("transition seq  %llu\n", static_cast<unsigned long long>(info.transition_seq));
  std::printf("digest          %s\n", info.digest.c_str());
  if (info.snapshot_log_seq) {
    std::printf("snapshot        log seq %llu\n",
                static_cast<unsigned long long>(*info.snapshot_log_seq));
  } else {
    std::printf("snapshot        none (a restore replays the whole log)\n");
  }
  return engine->Close().ok() ? 0 : 2;
}

int Workload(const std::string& dir, const workload::Options& w, bool sync, TimeMs start_time_ms) {
  Options options = OfflineOptions(dir);
  options.clock = w.manual_clock ? ClockMode::kManual : ClockMode::kWall;
  options.start_time_ms = start_time_ms;
  options.durability = sync ? Durability::kSync : Durability::kAsync;
  std::unique_ptr<Engine> engine;
  if (Status s = OpenEngine(options, &engine); !s.ok()) return Fail("open " + dir, s);
  const auto start = std::chrono::steady_clock::now();
  workload::Generator generator(w);
  if (Status s = generator.Setup(engine.get()); !s.ok()) return Fail("define buckets", s);
  if (Status s = generator.Run(engine.get()); !s.ok()) return Fail("workload", s);
  if (Status s = engine->Close(); !s.ok()) return Fail("close", s);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const workload::Counters& c = generator.counters();
  std::printf("events          %llu accepted, %llu rejected\n",
              static_cast<unsigned long long>(c.events_accepted),
              static_cast<unsigned long long>(c.events_rejected));
  std::printf("operations      %llu in %.3f s (%.0f events/s)\n",
              static_cast<unsigned long long>(c.operations), seconds,
              static_cast<double>(c.events_accepted) / seconds);
  PrintState(*engine);
  return 0;
}

}  // namespace
}  // namespace bucketd

int main(int argc, char** argv) {
  using namespace bucketd;
  CLI::App app{"bucketctl: offline tools on a bucketd data dir"};
  app.require_subcommand(1);
  // The server's version string: both binaries come from one build and share its data format.
  app.set_version_flag("--version", std::string("bucketd ") + bucketd::build_info::kVersion + " (" +
                                        bucketd::build_info::kCommit + ")");
  std::string dir;
  // The server's variable, so a shell set up for `bucketd` points bucketctl at the same dir.
  // Still required (from the flag or the variable): salvage --truncate and erase rewrite the
  // data dir, and a default path would let them act on whatever the current directory holds.
  const auto add_data = [&dir](CLI::App* command) {
    command->add_option("--data", dir, "data dir")->envname("BUCKETD_DATA")->required();
  };

  auto* replay = app.add_subcommand("replay", "rebuild the state from the log, print counts");
  add_data(replay);
  std::optional<std::string> until;
  replay->add_option("--until", until,
                     "state as of this instant (ms or RFC 3339; default: the end of the log)");
  bool from_scratch = false;
  replay->add_flag("--from-scratch", from_scratch, "ignore snapshots, replay the whole log");
  uint32_t threads = 0;
  replay
      ->add_option("--threads", threads,
                   "threads for a replay without a snapshot (0: one per core but one; 1: one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));

  auto* snapshot = app.add_subcommand("snapshot", "take a snapshot now");
  add_data(snapshot);

  auto* verify = app.add_subcommand("verify", "newest snapshot + log tail vs a full replay");
  add_data(verify);

  auto* inspect = app.add_subcommand("inspect", "log range, record kinds, snapshots");
  add_data(inspect);

  auto* salvage = app.add_subcommand(
      "salvage", "a log damaged before its end: show what is readable; --truncate keeps it");
  add_data(salvage);
  bool truncate = false;
  salvage->add_flag("--truncate", truncate,
                    "keep the records before the damage and drop the rest (irreversible)");

  auto* erase = app.add_subcommand(
      "erase", "privacy erasure of one contact: no byte of its id or email left in the data dir");
  add_data(erase);
  std::string erase_user;
  erase->add_option("--user", erase_user, "the contact's userId")->required();

  auto* backup = app.add_subcommand(
      "backup", "copy a stopped server's data dir consistently (a running one: the HTTP route)");
  add_data(backup);
  std::string backup_to;
  backup->add_option("--to", backup_to, "the backup's directory (must not exist)")->required();

  auto* gen = app.add_subcommand("workload", "ingest a seeded synthetic workload");
  add_data(gen);
  workload::Options w;
  w.batch = 1000;
  bool sync = false;
  TimeMs start_time_ms = kDefaultStartMs;
  gen->add_option("--users", w.users, "distinct users")->required();
  gen->add_option("--events", w.events, "events in total")->required();
  gen->add_option("--seed", w.seed, "random seed")->required();
  gen->add_option("--batch", w.batch, "events per IngestBatch call")->capture_default_str();
  bool manual_clock = false;
  gen->add_flag("--manual-clock", manual_clock, "manual clock: the workload moves time");
  gen->add_option("--start-time", start_time_ms, "manual clock start (ms) on an empty dir")
      ->capture_default_str();
  bool no_churn = false;
  gen->add_flag("--no-churn", no_churn, "events and clock moves only");
  gen->add_flag("--sync", sync, "fsync every call (default async)");

  CLI11_PARSE(app, argc, argv);
  if (*replay) return Replay(dir, until, from_scratch, threads);
  if (*snapshot) return Snapshot(dir);
  if (*verify) return Verify(dir);
  if (*inspect) return Inspect(dir);
  if (*salvage) return Salvage(dir, truncate);
  if (*erase) return Erase(dir, erase_user);
  if (*backup) return Backup(dir, backup_to);
  w.manual_clock = manual_clock;
  w.churn = !no_churn;
  if (w.batch == 0) w.batch = 1;
  return Workload(dir, w, sync, start_time_ms);
}
