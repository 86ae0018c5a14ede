// Sharded replay (engine/replay/parallel_replay.h): whatever the number of shards, the state is
// the one a single fold of the log builds, byte for byte in its snapshot encoding, and an
// engine opened that way goes on exactly like one opened by a single-thread replay.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/churny_workload.h"
#include "tests/test_support.h"

#include "engine/fold/fold.h"
#include "engine/replay/parallel_replay.h"
#include "engine/state/digest.h"
#include "engine/state/snapshot_codec.h"
#include "log/log.h"
#include "log/read_ahead.h"
#include "tools/bucketctl/workload.h"

namespace bucketd {
namespace {

using testing::kDay;
using testing::kHour;
using testing::ManualOptions;
using testing::OpenOrFail;
using testing::RequireOk;
using testing::TempDir;

constexpr TimeMs kStartMs = 1'767'225'600'000;

// A data dir's log, read-only, with the history source the engine gives its fold.
class LogForReplay {
 public:
  explicit LogForReplay(const std::string& dir) {
    RequireOk(Log::Open(LogOptions{dir + "/log", false, true}, &log_));
  }
  Log& log() { return *log_; }

  void Attach(Fold* fold) const {
    fold->SetHistorySource([this](uint64_t before_seq, const Fold::RecordsVisitor& visit) {
      // Runs of 100: the history re-read's lookahead restarts at each run's start.
      auto reader = log_->ReadFrom(1);
      std::vector<Record> run;
      Record r;
      while (reader->Next(&r) && r.seq < before_seq) {
        run.push_back(r);
        if (run.size() == 100) {
          visit(run);
          run.clear();
        }
      }
      if (!reader->status().ok()) return reader->status();
      visit(run);
      return Status::Ok();
    });
  }

  void FoldSequentially(Fold* fold) const {
    Attach(fold);
    auto reader = log_->ReadFrom(1);
    Record r;
    while (reader->Next(&r)) RequireOk(fold->Apply(r, nullptr));
    RequireOk(reader->status());
  }

  Status FoldSharded(uint32_t shards, Fold* fold, uint64_t* replayed) const {
    Attach(fold);
    auto reader = log_->ReadAheadFrom(1);
    return ReplayParallel(reader.get(), {shards, kNever}, fold, replayed);
  }

 private:
  std::unique_ptr<Log> log_;
};

std::string Encoded(const State& state) {
  flatbuffers::DetachedBuffer buffer;
  RequireOk(EncodeSnapshot(state, &buffer));
  return std::string(reinterpret_cast<const char*>(buffer.data()), buffer.size());
}

std::vector<Transition> TransitionsAfter(const Engine& engine, uint64_t after) {
  std::vector<Transition> all;
  for (;;) {
    std::vector<Transition> page;
    RequireOk(engine.ReadTransitions(after, kTransitionsPageMax, &page));
    if (page.empty()) return all;
    after = page.back().seq;
    all.insert(all.end(), page.begin(), page.end());
  }
}

// Every member of every bucket, in page order, with what a member page says of them.
std::vector<std::string> AllMembers(const Engine& engine, const std::string& bucket_id) {
  std::vector<std::string> members;
  std::string cursor;
  for (;;) {
    MembersPage page;
    RequireOk(engine.Members(bucket_id, cursor, 97, &page));
    for (const Member& m : page.members) {
      members.push_back(m.user_id + " " + std::to_string(m.entered_at) + " " +
                        std::to_string(m.entry_count));
    }
    if (!page.next_cursor) return members;
    cursor = *page.next_cursor;
  }
}

void CheckSameMembers(const Engine& expected, const Engine& actual) {
  for (const BucketInfo& bucket : expected.ListBuckets()) {
    INFO("bucket " << bucket.id);
    const std::vector<std::string> members = AllMembers(expected, bucket.id);
    uint64_t count = 0;
    RequireOk(actual.Count(bucket.id, &count));
    CHECK(count == members.size());
    CHECK(AllMembers(actual, bucket.id) == members);
  }
}

// One data dir opened twice, the second time on a copy: by a one-thread replay and by a
// replay on `threads` threads (0: the automatic choice).
struct OpenedBothWays {
  TempDir copy;  // first: outlives the engine on it
  std::unique_ptr<Engine> single;
  std::unique_ptr<Engine> sharded;
};

std::unique_ptr<OpenedBothWays> OpenBothWays(const std::string& dir, uint32_t threads) {
  auto both = std::make_unique<OpenedBothWays>();
  std::filesystem::copy(dir, both->copy.path(), std::filesystem::copy_options::recursive);
  Options single = ManualOptions(dir, kStartMs);
  single.replay_threads = 1;
  Options sharded = ManualOptions(both->copy.path(), kStartMs);
  sharded.replay_threads = threads;
  both->single = OpenOrFail(single);
  both->sharded = OpenOrFail(sharded);
  return both;
}

workload::Options Churny(uint64_t seed, uint64_t events) {
  return testing::Churny(seed, events, 300);
}

void RunWorkload(const std::string& dir, const workload::Options& w) {
  auto live = OpenOrFail(ManualOptions(dir, kStartMs));
  workload::Generator gen(w);
  RequireOk(gen.Setup(live.get()));
  RequireOk(gen.Run(live.get()));
  RequireOk(live->Close());
}

void CheckShardedEqualsSequential(const std::string& dir) {
  LogForReplay replay(dir);
  Fold sequential;
  replay.FoldSequentially(&sequential);
  const std::string expected = Encoded(sequential.state());
  for (uint32_t shards : {1u, 2u, 3u, 5u}) {
    INFO(shards << " shards");
    Fold sharded;
    uint64_t replayed = 0;
    RequireOk(replay.FoldSharded(shards, &sharded, &replayed));
    CHECK(replayed == replay.log().last_seq());
    CHECK(sharded.state().applied_seq == sequential.state().applied_seq);
    CHECK(sharded.state().transition_seq == sequential.state().transition_seq);
    CHECK(ComputeDigest(sharded.state()) == ComputeDigest(sequential.state()));
    CHECK(Encoded(sharded.state()) == expected);
  }
}

TEST_CASE("a sharded replay builds the state a single fold builds, byte for byte") {
  // Churn: redefinitions (history re-reads), enable/disable catch-ups, bucket delete and
  // re-create, contact deletes, manual adds and removes, clock moves and sweeps.
  for (uint64_t seed : {51, 52, 53}) {
    INFO("seed " << seed);
    TempDir dir;
    RunWorkload(dir.path(), Churny(seed, 5000));
    CheckShardedEqualsSequential(dir.path());
  }
}

TEST_CASE("names and users first met in different shards are numbered as one fold does") {
  // Event names and property keys reach the shards in different orders, some first in an
  // event and later in a definition, some the other way round; users first appear through
  // events and through manual adds; one is deleted and comes back as a tombstone.
  TempDir dir;
  {
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs));
    RequireOk(engine->DefineBucket(
        R"({"id":"vip","name":"VIP","kind":"manual","dwell":[{"after":"1d"}]})",
        DefineMode::kCreate, {}, nullptr));
    const std::vector<std::string> names = {"n7", "n3", "n9", "n1", "n5", "n2", "n8"};
    for (int round = 0; round < 3; ++round) {
      for (int u = 0; u < 24; ++u) {
        EventInput e;
        e.user_id = "u" + std::to_string((u * 7 + round) % 24);
        e.event = names[static_cast<size_t>(u + round) % names.size()];
        e.contact_properties.push_back(
            {"k" + std::to_string((u + 2 * round) % 5), PropertyValue::Number(u)});
        IngestResult result;
        RequireOk(engine->Ingest(e, &result));
      }
      RequireOk(engine->AddMember("vip", "m" + std::to_string(round)));
      SweepResult sweep;
      RequireOk(engine->AdvanceClock(engine->Now() + 5 * kHour, &sweep));
    }
    // Names a definition meets first (n0, k9) and names events met first (n9, k3).
    RequireOk(engine->DefineBucket(
        R"({"id":"mixed","name":"Mixed","criteria":{"type":"composite","operator":"or",)"
        R"("conditions":[{"type":"event","eventName":"n0","check":"exists"},)"
        R"({"type":"event","eventName":"n9","check":"count","operator":"gte","value":2,)"
        R"("within":"2d"},{"type":"property","property":"k9","operator":"exists"},)"
        R"({"type":"property","property":"k3","operator":"gte","value":4}]}})",
        DefineMode::kCreate, {}, nullptr));
    RequireOk(engine->DeleteContact("u5"));
    for (int u = 0; u < 24; ++u) {
      EventInput e;
      e.user_id = "w" + std::to_string(u);
      e.event = u % 2 == 0 ? "n0" : "n9";
      if (u % 3 == 0) e.contact_properties.push_back({"k9", PropertyValue::Bool(true)});
      IngestResult result;
      RequireOk(engine->Ingest(e, &result));
    }
    SweepResult sweep;
    RequireOk(engine->AdvanceClock(engine->Now() + 3 * kDay, &sweep));
    RequireOk(engine->Close());
  }
  CheckShardedEqualsSequential(dir.path());
}

TEST_CASE("an engine opened by a sharded replay goes on like one opened by a single thread") {
  TempDir dir;
  RunWorkload(dir.path(), Churny(61, 5000));
  const auto both = OpenBothWays(dir.path(), 2);
  Engine* a = both->single.get();
  Engine* b = both->sharded.get();
  CHECK(a->Stats().replay_threads == 1);
  CHECK(b->Stats().replay_threads == 2);
  CHECK(b->Stats().replayed_records == a->Stats().replayed_records);
  const StateInfo opened = a->State();
  CHECK(b->State().digest == opened.digest);
  CHECK(b->State().transition_seq == opened.transition_seq);
  CHECK(b->Stats().sweep_due_items == a->Stats().sweep_due_items);
  CheckSameMembers(*a, *b);

  // The merged state must behave, not only hash, the same: same inputs, same transitions.
  workload::Options more = Churny(62, 2000);
  workload::Generator ga(more), gb(more);
  RequireOk(ga.Run(a));
  RequireOk(gb.Run(b));
  CHECK(a->State().digest == b->State().digest);
  CheckSameMembers(*a, *b);
  const std::vector<Transition> after = TransitionsAfter(*a, opened.transition_seq);
  CHECK(!after.empty());
  CHECK(TransitionsAfter(*b, opened.transition_seq) == after);
}

TEST_CASE("members listed by the shards' indices are listed after the merge") {
  // Contact deletes settle a shard's member index (its slots are then marked as listed);
  // the merged index must list, and later drop, those members like any other.
  TempDir dir;
  auto live = OpenOrFail(ManualOptions(dir.path(), kStartMs));
  RequireOk(live->DefineBucket(R"({"id":"vip","name":"VIP","kind":"manual"})", DefineMode::kCreate,
                               {}, nullptr));
  for (int u = 0; u < 40; ++u) RequireOk(live->AddMember("vip", "u" + std::to_string(u)));
  for (int u = 0; u < 40; u += 10) RequireOk(live->DeleteContact("u" + std::to_string(u)));
  RequireOk(live->AddMember("vip", "late"));
  RequireOk(live->Close());
  live.reset();

  const auto both = OpenBothWays(dir.path(), 2);
  Engine* a = both->single.get();
  Engine* b = both->sharded.get();
  CHECK(AllMembers(*a, "vip").size() == 37);
  CheckSameMembers(*a, *b);
  for (int u = 1; u < 40; ++u) {
    if (u % 10 == 0) continue;
    RequireOk(a->RemoveMember("vip", "u" + std::to_string(u)));
    RequireOk(b->RemoveMember("vip", "u" + std::to_string(u)));
  }
  CHECK(AllMembers(*b, "vip").size() == 1);
  CheckSameMembers(*a, *b);
}

TEST_CASE("a long log opens on one thread per core but one by default, to the same state") {
  TempDir dir;
  workload::Options w = Churny(81, 10'500);
  w.churn = false;
  RunWorkload(dir.path(), w);
  const auto both = OpenBothWays(dir.path(), 0);
  Engine* a = both->single.get();
  Engine* b = both->sharded.get();
  REQUIRE(a->Stats().replayed_records >= 10'000);
  const uint32_t cores = std::thread::hardware_concurrency();
  CHECK(b->Stats().replay_threads == (cores > 2 ? std::min(cores - 1, 8u) : 1u));
  CHECK(b->State().digest == a->State().digest);
  CheckSameMembers(*a, *b);
}

TEST_CASE("a sharded replay until T equals a single-thread one") {
  TempDir dir;
  RunWorkload(dir.path(), Churny(71, 3000));
  TimeMs end = 0;
  {
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs));
    end = engine->Now();
  }
  for (TimeMs back : {TimeMs{0}, 2 * kDay, 9 * kDay}) {
    INFO("until end - " << back);
    std::string digests[2];
    for (uint32_t threads : {1u, 3u}) {
      Options o = ManualOptions(dir.path(), kStartMs);
      o.replay_until_ms = end - back;
      o.use_snapshots = false;
      o.replay_threads = threads;
      auto engine = OpenOrFail(o);
      CHECK(engine->Stats().replay_threads == threads);
      CHECK(engine->State().now <= end - back);
      digests[threads == 1 ? 0 : 1] = engine->State().digest;
    }
    CHECK(digests[0] == digests[1]);
  }
}

TEST_CASE("a record that does not fold fails a sharded replay") {
  // Events around it span several batches, so shards are busy when one fails.
  constexpr uint64_t kBad = 2500;
  constexpr uint64_t kLast = 6000;
  TempDir dir;
  {
    std::unique_ptr<Log> log;
    RequireOk(Log::Open(LogOptions{dir.log(), false, false}, &log));
    for (uint64_t seq = 1; seq <= kLast; ++seq) {
      Record r;
      r.seq = seq;
      r.at = kStartMs + static_cast<TimeMs>(seq);
      r.user_id = "u" + std::to_string(seq % 97);
      if (seq == kBad) {  // a manual remove from a bucket that was never defined
        r.kind = RecordKind::kMemberRemove;
        r.bucket_id = "nowhere";
      } else {
        r.event_name = "opened";
        r.occurred_at = r.at;
      }
      log->Stage(r, {});
      if (seq % 500 == 0) RequireOk(log->Commit());
    }
    RequireOk(log->Commit());
  }
  LogForReplay replay(dir.path());
  for (uint32_t shards : {1u, 2u, 4u}) {
    INFO(shards << " shards");
    Fold fold;
    uint64_t replayed = 0;
    const Status s = replay.FoldSharded(shards, &fold, &replayed);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK(s.ToString().find("log record " + std::to_string(kBad)) != std::string::npos);
    CHECK(replayed == 0);
    CHECK(fold.state().applied_seq == 0);
    CHECK(fold.state().users.empty());
  }
}

TEST_CASE("replay_threads out of range is refused, naming the option") {
  TempDir dir;
  Options o = ManualOptions(dir.path(), kStartMs);
  o.replay_threads = 65;
  std::unique_ptr<Engine> engine;
  const Status s = Engine::Open(o, &engine);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.ToString().find("replay_threads") != std::string::npos);
}

}  // namespace
}  // namespace bucketd
