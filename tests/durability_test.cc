// Every input acknowledged in sync mode survives a SIGKILL at a random moment.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;

namespace {

// A child process's engine: sync mode, manual clock, no automatic snapshots, and a bucket
// "seen" every user with an `x` event joins. Exits the child (2, 3) if that fails.
std::unique_ptr<Engine> OpenChildEngine(const std::string& dir) {
  Options options;
  options.data_dir = dir;
  options.durability = Durability::kSync;
  options.clock = ClockMode::kManual;
  options.start_time_ms = kT0;
  options.snapshot_every_records = 0;
  options.snapshot_every_ms = 0;
  std::unique_ptr<Engine> engine;
  if (!Engine::Open(options, &engine).ok()) _exit(2);
  bool created;
  if (!engine
           ->DefineBucket(
               R"({"id":"seen","criteria":{"type":"event","eventName":"x","check":"exists"}})",
               DefineMode::kCreateOrReplace, std::nullopt, &created)
           .ok()) {
    _exit(3);
  }
  return engine;
}

// The child: ingests batches forever in sync mode and reports each acknowledged batch's
// last user number through the pipe. It never returns. `pipelined`: each batch is its own
// group ended with EndGroupPipelined, so it is written while the next one folds, and is
// acknowledged only once the next EndGroupPipelined (which awaits it) returns.
[[noreturn]] void IngestUntilKilled(const std::string& dir, int fd, bool pipelined) {
  std::unique_ptr<Engine> engine = OpenChildEngine(dir);
  uint32_t in_flight = 0;  // pipelined: users below this are in the group being written
  for (uint32_t n = 0;;) {
    std::vector<EventInput> batch;
    for (int i = 0; i < 1 + static_cast<int>(n % 7); ++i, ++n) {
      batch.push_back(
          {"u" + std::to_string(n), "x", std::nullopt, std::nullopt, {}, "k" + std::to_string(n)});
    }
    BatchResult result;
    if (pipelined) engine->BeginGroup();
    if (!engine->IngestBatch(batch, &result).ok() || result.accepted != batch.size()) _exit(4);
    uint32_t acked = n;  // users u0 .. u(acked-1) are acknowledged
    if (pipelined) {
      if (!engine->EndGroupPipelined(nullptr).ok()) _exit(6);
      acked = std::exchange(in_flight, n);  // the previous group is durable now
    }
    if (write(fd, &acked, sizeof acked) != sizeof acked) _exit(5);
  }
}

// The children run as a hidden test case in a fresh exec of this binary, not in a bare
// fork(): earlier test cases left RocksDB's background threads running, and a fork keeps
// their locks but not the threads (ThreadSanitizer refuses such a child outright).
constexpr char kChildEnv[] = "BUCKETD_DURABILITY_TEST_CHILD";  // "<role>:<fd>:<data dir>"
constexpr char kChildTag[] = "[.durability_child]";

pid_t SpawnChild(const std::string& spec) {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    setenv(kChildEnv, spec.c_str(), 1);
    execl("/proc/self/exe", "durability_test", kChildTag, static_cast<char*>(nullptr));
    _exit(127);
  }
  return child;
}

[[noreturn]] void FailWritesAndCheckSticky(const std::string& dir);

TEST_CASE("durability test child", kChildTag) {
  const char* spec = std::getenv(kChildEnv);
  REQUIRE(spec != nullptr);
  const std::string_view s = spec;
  const size_t role_end = s.find(':');
  const size_t fd_end = s.find(':', role_end + 1);
  const std::string role(s.substr(0, role_end));
  const int fd = std::stoi(std::string(s.substr(role_end + 1, fd_end - role_end - 1)));
  const std::string dir(s.substr(fd_end + 1));
  if (role == "fail") FailWritesAndCheckSticky(dir);
  IngestUntilKilled(dir, fd, role == "pipelined");
}

void CheckAcknowledgedSurviveKill(bool pipelined) {
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < 3; ++round) {
    TempDir dir;
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const pid_t child = SpawnChild(std::string(pipelined ? "pipelined" : "ingest") + ":" +
                                   std::to_string(fds[1]) + ":" + dir.path());
    close(fds[1]);
    // Wait for the first acknowledgement (start-up time varies with the machine's load),
    // then kill at a random moment of the ingest.
    uint32_t acked = 0, value = 0;
    do {
      REQUIRE(read(fds[0], &acked, sizeof acked) == sizeof acked);
    } while (acked == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
    REQUIRE(kill(child, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    while (read(fds[0], &value, sizeof value) == sizeof value) acked = value;
    close(fds[0]);
    INFO("acknowledged " << acked << " events before the kill");
    REQUIRE(acked > 0);

    Options options;
    options.data_dir = dir.path();
    options.clock = ClockMode::kManual;
    std::unique_ptr<Engine> engine;
    RequireOk(Engine::Open(options, &engine));
    uint64_t count = 0;
    RequireOk(engine->Count("seen", &count));
    CHECK(count >= acked);
    for (uint32_t n = 0; n < acked; ++n) {
      Member m;
      if (!engine->GetMember("seen", "u" + std::to_string(n), &m).ok()) {
        FAIL("acknowledged user u" << n << " is missing");
      }
    }
    // The idempotency keys survived too.
    IngestResult r;
    RequireOk(engine->Ingest({"u0", "x", std::nullopt, std::nullopt, {}, "k0"}, &r));
    CHECK(r.duplicate);
  }
}

}  // namespace

TEST_CASE("acknowledged inputs survive SIGKILL in sync mode") {
  CheckAcknowledgedSurviveKill(false);
}

TEST_CASE("acknowledged inputs survive SIGKILL with pipelined group commits") {
  CheckAcknowledgedSurviveKill(true);
}

TEST_CASE("a pipelined group: keys count as seen at once, transitions show once durable") {
  TempDir dir;
  Options options;
  options.data_dir = dir.path();
  options.durability = Durability::kSync;
  options.clock = ClockMode::kManual;
  options.start_time_ms = kT0;
  std::unique_ptr<Engine> engine;
  RequireOk(Engine::Open(options, &engine));
  bool created = false;
  RequireOk(engine->DefineBucket(
      R"({"id":"seen","criteria":{"type":"event","eventName":"x","check":"exists"}})",
      DefineMode::kCreateOrReplace, std::nullopt, &created));
  const uint64_t before = engine->LastTransitionSeq();

  engine->BeginGroup();
  IngestResult r;
  RequireOk(engine->Ingest({"a", "x", std::nullopt, std::nullopt, {}, "key-1"}, &r));
  REQUIRE(r.transitions == 1);
  RequireOk(engine->EndGroupPipelined(nullptr));
  // Not acknowledged yet: the stream does not show the join...
  CHECK(engine->LastTransitionSeq() == before);
  // ...but the next group already sees the key (no duplicate slips in between).
  engine->BeginGroup();
  RequireOk(engine->Ingest({"b", "x", std::nullopt, std::nullopt, {}, "key-1"}, &r));
  CHECK(r.duplicate);
  RequireOk(engine->Ingest({"c", "x", std::nullopt, std::nullopt, {}, "key-2"}, &r));
  // Ending this group awaits the first: its join is durable and visible now.
  RequireOk(engine->EndGroupPipelined(nullptr));
  CHECK(engine->LastTransitionSeq() == before + 1);
  RequireOk(engine->AwaitGroup());
  CHECK(engine->LastTransitionSeq() == before + 2);
  std::vector<Transition> stream;
  RequireOk(engine->ReadTransitions(before, 10, &stream));
  REQUIRE(stream.size() == 2);
  CHECK(stream[0].user_id == "a");
  CHECK(stream[1].user_id == "c");

  // Both groups survive a reopen; "b" was refused as a duplicate.
  engine.reset();
  RequireOk(Engine::Open(options, &engine));
  uint64_t count = 0;
  RequireOk(engine->Count("seen", &count));
  CHECK(count == 2);
  Member m;
  CHECK(engine->GetMember("seen", "c", &m).ok());
  CHECK_FALSE(engine->GetMember("seen", "b", &m).ok());
}

namespace {

// The child: ingests in pipelined groups until a log write fails (its files may not grow
// past RLIMIT_FSIZE), then checks that the failure sticks. Exit code 0 means it did.
[[noreturn]] void FailWritesAndCheckSticky(const std::string& dir) {
  std::unique_ptr<Engine> engine = OpenChildEngine(dir);
  // Writes past 1 MiB now fail with EFBIG instead of killing the process.
  signal(SIGXFSZ, SIG_IGN);
  const rlimit limit{1 << 20, 1 << 20};
  if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(4);
  const std::string padding(200, 'p');
  bool failed = false;
  for (uint32_t n = 0; n < 200'000 && !failed;) {
    std::vector<EventInput> batch;
    for (int i = 0; i < 100; ++i, ++n) {
      batch.push_back(
          {"u" + std::to_string(n) + padding, "x", std::nullopt, std::nullopt, {}, std::nullopt});
    }
    engine->BeginGroup();
    BatchResult result;
    if (!engine->IngestBatch(batch, &result).ok()) break;  // refused: the failure was seen
    failed = !engine->EndGroupPipelined(nullptr).ok();
  }
  // Whoever noticed the failure first, every later await, commit and snapshot fails too.
  if (engine->AwaitGroup().ok()) _exit(5);
  if (engine->AwaitGroup().ok()) _exit(6);
  if (engine->EndGroupPipelined(nullptr).ok()) _exit(7);
  if (engine->TakeSnapshot(nullptr).ok()) _exit(8);
  IngestResult r;
  if (engine->Ingest({"late", "x", std::nullopt, std::nullopt, {}, std::nullopt}, &r).ok()) {
    _exit(9);
  }
  _exit(0);
}

}  // namespace

TEST_CASE("a failed pipelined log write sticks: nothing after it is reported durable") {
  TempDir dir;
  const pid_t child = SpawnChild("fail:-1:" + dir.path());
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
