// Replay: snapshot + tail == full replay == the live engine, in digest and in the
// transition stream; replay as of an instant; a writer killed mid-snapshot.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/churny_workload.h"
#include "tests/state_test_support.h"
#include "tests/test_support.h"

#include "engine/fold/fold.h"
#include "engine/state/digest.h"
#include "log/log.h"
#include "snapshot/snapshot_store.h"
#include "tools/bucketctl/workload.h"

namespace bucketd {
namespace {

using testing::ManualOptions;
using testing::OpenOrFail;
using testing::TempDir;

constexpr TimeMs kStartMs = 1'767'225'600'000;

std::vector<Transition> AllTransitions(const Engine& engine, uint64_t after = 0) {
  std::vector<Transition> all;
  for (;;) {
    std::vector<Transition> page;
    REQUIRE(engine.ReadTransitions(after, kTransitionsPageMax, &page).ok());
    if (page.empty()) return all;
    after = page.back().seq;
    all.insert(all.end(), page.begin(), page.end());
  }
}

// Folds the log from `fold`'s position on, collecting what the fold emits.
void FoldLog(const std::string& dir, Fold* fold, std::vector<Transition>* out) {
  std::unique_ptr<Log> log;
  REQUIRE(Log::Open(LogOptions{dir + "/log", false, true}, &log).ok());
  auto reader = log->ReadFrom(fold->state().applied_seq + 1);
  Record r;
  while (reader->Next(&r)) REQUIRE(fold->Apply(r, out).ok());
  REQUIRE(reader->status().ok());
}

workload::Options Churny(uint64_t seed, uint64_t events) {
  return testing::Churny(seed, events, 250);
}

TEST_CASE("snapshot + tail == full replay == live, in digest and transitions") {
  for (uint64_t seed : {21, 22, 23, 24}) {
    TempDir dir;
    auto live = OpenOrFail(ManualOptions(dir.path(), kStartMs));
    workload::Generator gen(Churny(seed, 4000));
    REQUIRE(gen.Setup(live.get()).ok());
    std::mt19937_64 rng(seed);
    REQUIRE(gen.Run(live.get(),
                    [&](uint64_t) {
                      if (rng() % 100 == 0) REQUIRE(live->TakeSnapshot(nullptr).ok());
                      return true;
                    })
                .ok());
    const StateInfo live_state = live->State();
    const std::vector<Transition> live_stream = AllTransitions(*live);
    REQUIRE(live_stream.size() == live_state.transition_seq);
    REQUIRE(live->Close().ok());
    live.reset();

    // The fold itself, from nothing: same state, same transitions as were logged.
    Fold full;
    std::vector<Transition> full_stream;
    FoldLog(dir.path(), &full, &full_stream);
    CHECK(ComputeDigest(full.state()) == live_state.digest);
    CHECK(full_stream == live_stream);

    // From the newest snapshot: the tail emits exactly the logged tail.
    SnapshotStore store(dir.path() + "/snapshots", 3);
    REQUIRE_FALSE(store.List().empty());
    Fold restored;
    bool loaded = false;
    std::vector<std::string> warnings;
    REQUIRE(testing::LoadNewestInto(store, UINT64_MAX, kNever, &restored, &loaded, &warnings).ok());
    REQUIRE(loaded);
    const uint64_t first_tail = restored.state().transition_seq;
    std::vector<Transition> tail_stream;
    FoldLog(dir.path(), &restored, &tail_stream);
    CHECK(ComputeDigest(restored.state()) == live_state.digest);
    CHECK(tail_stream ==
          std::vector<Transition>(live_stream.begin() + first_tail, live_stream.end()));

    // Through the engine both ways, then the same further inputs on both.
    Options from_snapshot_options = ManualOptions(dir.path(), kStartMs);
    TempDir copy;
    std::filesystem::copy(dir.path(), copy.path(), std::filesystem::copy_options::recursive);
    Options scratch_options = ManualOptions(copy.path(), kStartMs);
    scratch_options.use_snapshots = false;
    auto a = OpenOrFail(from_snapshot_options);
    auto b = OpenOrFail(scratch_options);
    CHECK(a->State().digest == live_state.digest);
    CHECK(b->State().digest == live_state.digest);
    CHECK(a->Stats().replayed_records < b->Stats().replayed_records);
    workload::Options more = Churny(seed + 100, 800);
    workload::Generator ga(more), gb(more);
    REQUIRE(ga.Run(a.get()).ok());
    REQUIRE(gb.Run(b.get()).ok());
    CHECK(a->State().digest == b->State().digest);
    CHECK(AllTransitions(*a, live_state.transition_seq) ==
          AllTransitions(*b, live_state.transition_seq));
  }
}

TEST_CASE("replay until T equals the live state at T") {
  TempDir dir;
  std::map<TimeMs, std::string> digest_at;  // the state when the clock was about to leave T
  {
    auto live = OpenOrFail(ManualOptions(dir.path(), kStartMs));
    workload::Options w = Churny(31, 3000);
    workload::Generator gen(w);
    REQUIRE(gen.Setup(live.get()).ok());
    std::mt19937_64 rng(31);
    TimeMs last_now = live->Now();
    std::string last_digest = live->State().digest;
    REQUIRE(gen.Run(live.get(),
                    [&](uint64_t) {
                      if (live->Now() != last_now) {
                        if (rng() % 4 == 0) digest_at[last_now] = last_digest;
                        last_now = live->Now();
                      }
                      last_digest = live->State().digest;
                      if (rng() % 120 == 0) REQUIRE(live->TakeSnapshot(nullptr).ok());
                      return true;
                    })
                .ok());
    REQUIRE(live->Close().ok());
  }
  REQUIRE(digest_at.size() >= 5);
  for (bool use_snapshots : {true, false}) {
    for (const auto& [t, digest] : digest_at) {
      Options o = ManualOptions(dir.path(), kStartMs);
      o.replay_until_ms = t;
      o.use_snapshots = use_snapshots;
      std::vector<std::string> warnings;
      auto engine = OpenOrFail(o, &warnings);
      INFO("until " << t << " snapshots " << use_snapshots);
      CHECK(engine->State().digest == digest);
      CHECK(engine->State().now <= t);
    }
  }
}

TEST_CASE("a writer killed mid-snapshot leaves a loadable data dir") {
  TempDir dir;
  {
    auto live = OpenOrFail(ManualOptions(dir.path(), kStartMs));
    workload::Generator gen(Churny(41, 6000));
    REQUIRE(gen.Setup(live.get()).ok());
    REQUIRE(gen.Run(live.get()).ok());
    REQUIRE(live->TakeSnapshot(nullptr).ok());
    REQUIRE(live->Close().ok());
  }
  Fold fold;
  FoldLog(dir.path(), &fold, nullptr);
  const std::string expected = ComputeDigest(fold.state());

  std::mt19937_64 rng(41);
  for (int round = 0; round < 8; ++round) {
    // The child only rewrites the snapshot file in a loop (no RocksDB in a forked child)
    // until it is killed at a random moment: mid-encode, mid-write, mid-rename.
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      SnapshotStore store(dir.path() + "/snapshots", 2);
      for (;;) {
        if (!store.Write(fold.state(), nullptr).ok()) _exit(3);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40'000));
    REQUIRE(kill(pid, SIGKILL) == 0);
    int wstatus = 0;
    REQUIRE(waitpid(pid, &wstatus, 0) == pid);
    REQUIRE(WIFSIGNALED(wstatus));

    std::vector<std::string> warnings;
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs), &warnings);
    INFO("round " << round);
    CHECK(warnings.empty());
    CHECK(engine->State().digest == expected);
    REQUIRE(engine->Close().ok());
  }
  // Whatever temp files the kills left are cleaned up by the next write.
  SnapshotStore store(dir.path() + "/snapshots", 2);
  REQUIRE(store.Write(fold.state(), nullptr).ok());
  for (const auto& entry : std::filesystem::directory_iterator(dir.path() + "/snapshots")) {
    CHECK(entry.path().string().find(".tmp-") == std::string::npos);
  }
}

}  // namespace
}  // namespace bucketd
