// The transition stream as a consumer reads it through the embedded API: its identity
// (StreamId), a cursor beyond its end, filters, and the past members of a bucket.
#include <algorithm>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <catch2/catch.hpp>

#include "tests/test_support.h"

namespace bucketd::testing {
namespace {

// Joins on 2 "used" within a day, leaves when one of them ages out.
const char* kPower =
    R"({"id":"power","name":"Power","criteria":{"type":"event","eventName":"used",)"
    R"("check":"count","operator":"gte","value":2,"within":"1d"}})";
const char* kVip = R"({"id":"vip","name":"VIP","kind":"manual","dwell":[{"after":"1h"}]})";

// Removes the stream id from a closed data dir's log, as a version before stream ids left it.
void DropStreamId(const std::string& log_dir) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : {"default", "records", "transitions", "idempotency", "meta"}) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), log_dir, families, &handles, &db).ok());
  REQUIRE(db->Delete(rocksdb::WriteOptions(), handles[4], "stream_id").ok());
  for (auto* handle : handles) REQUIRE(db->DestroyColumnFamilyHandle(handle).ok());
  delete db;
}

std::unique_ptr<Engine> OpenAt(const std::string& dir, bool use_snapshots = true,
                               bool read_only = false) {
  Options o = ManualOptions(dir);
  o.use_snapshots = use_snapshots;
  o.read_only = read_only;
  return OpenOrFail(o);
}

bool IsUuid(const std::string& id) {
  static const std::regex kUuid(
      "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  return std::regex_match(id, kUuid);
}

std::vector<std::string> Users(const PastMembersPage& page) {
  std::vector<std::string> out;
  for (const PastMember& m : page.members) out.push_back(m.user_id);
  return out;
}

}  // namespace

TEST_CASE(
    "a data dir's stream id is drawn at creation and survives restarts, snapshots, replays, "
    "erasures and copies") {
  TempDir dir;
  std::string id;
  {
    auto engine = OpenAt(dir.path());
    id = engine->StreamId();
    CHECK(IsUuid(id));
    CHECK(engine->State().stream_id == id);
    RequireOk(engine->DefineBucket(kPower, DefineMode::kCreate, std::nullopt, nullptr));
    EventInput e{"alice", "used", {}, std::nullopt, {}, std::nullopt};
    IngestResult r;
    RequireOk(engine->Ingest(e, &r));
    RequireOk(engine->Ingest(e, &r));
    SnapshotInfo snapshot;
    RequireOk(engine->TakeSnapshot(&snapshot));
  }
  CHECK(OpenAt(dir.path())->StreamId() == id);                           // snapshot + tail
  CHECK(OpenAt(dir.path(), /*use_snapshots=*/false)->StreamId() == id);  // full replay
  CHECK(OpenAt(dir.path(), true, /*read_only=*/true)->StreamId() == id);
  {
    auto engine = OpenAt(dir.path());
    ErasureResult erased;
    RequireOk(engine->EraseContact("alice", &erased));
    CHECK(engine->StreamId() == id);
  }
  CHECK(OpenAt(dir.path())->StreamId() == id);

  TempDir copy;
  std::filesystem::copy(
      dir.path(), copy.path(),
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  CHECK(OpenAt(copy.path())->StreamId() == id);

  TempDir other;
  const std::string other_id = OpenAt(other.path())->StreamId();
  CHECK(IsUuid(other_id));
  CHECK(other_id != id);
}

TEST_CASE("a data dir from before stream ids gets one at its first writable open, and keeps it") {
  TempDir dir;
  {
    auto engine = OpenAt(dir.path());
    RequireOk(engine->DefineBucket(kVip, DefineMode::kCreate, std::nullopt, nullptr));
    RequireOk(engine->AddMember("vip", "alice"));
  }
  DropStreamId(dir.log());
  CHECK(OpenAt(dir.path(), true, /*read_only=*/true)->StreamId().empty());
  std::string id;
  {
    auto engine = OpenAt(dir.path());
    id = engine->StreamId();
    CHECK(IsUuid(id));
    CHECK(engine->LastTransitionSeq() == 1);  // the stream itself is untouched
  }
  CHECK(OpenAt(dir.path())->StreamId() == id);
}

TEST_CASE("a cursor beyond the stream's last seq is refused, naming after and the last seq") {
  Scenario s;
  s.Define(kVip);
  RequireOk(s.engine().AddMember("vip", "alice"));
  TransitionsPage page;
  RequireOk(s.engine().ReadTransitions(1, 10, TransitionFilter{}, &page));
  CHECK(page.transitions.empty());
  CHECK(page.next == 1);
  CHECK(page.last_seq == 1);

  const Status ahead = s.engine().ReadTransitions(2, 10, TransitionFilter{}, &page);
  CHECK(ahead.code() == StatusCode::kFailedPrecondition);
  CHECK(ahead.field() == "after");
  CHECK(ahead.message().find("last seq 1 ") != std::string::npos);
  CHECK(ahead.message().find(s.engine().StreamId()) != std::string::npos);
  CHECK(page.last_seq == 1);
}

TEST_CASE("filtered reads return only matching transitions and move the cursor past the rest") {
  Scenario s;
  s.Define(kPower);
  s.Define(kVip);
  s.Event("alice", "used");
  s.Event("alice", "used");                          // 1 entered power alice @0
  RequireOk(s.engine().AddMember("vip", "bob"));     // 2 entered vip bob @0
  s.At(kHour);                                       // 3 dwell vip bob @1h
  RequireOk(s.engine().RemoveMember("vip", "bob"));  // 4 left vip bob @1h
  s.At(kDay);                                        // 5 left power alice @1d (the first ages out)
  s.At(kDay + kHour);
  s.Event("carol", "used");
  s.Event("carol", "used");  // 6 entered power carol @1d1h

  const auto read = [&](uint64_t after, size_t limit, TransitionFilter filter) {
    TransitionsPage page;
    RequireOk(s.engine().ReadTransitions(after, limit, filter, &page));
    std::vector<std::string> got = Describe(page.transitions);
    got.push_back("next=" + std::to_string(page.next));
    return got;
  };
  using V = std::vector<std::string>;
  CHECK(read(0, 100, {"power", {}}) == V{"entered:power:alice@0",
                                         "left:power:alice@86400000:criteria",
                                         "entered:power:carol@90000000", "next=6"});
  CHECK(read(0, 100, {"", {TransitionKind::kLeft}}) ==
        V{"left:vip:bob@3600000:manual", "left:power:alice@86400000:criteria", "next=6"});
  CHECK(read(0, 100, {"vip", {TransitionKind::kEntered, TransitionKind::kDwell}}) ==
        V{"entered:vip:bob@0", "dwell:vip:bob@3600000:after-3600000#1", "next=6"});
  // A page stops at its limit: `next` is its last transition.
  CHECK(read(0, 1, {"power", {}}) == V{"entered:power:alice@0", "next=1"});
  CHECK(read(1, 1, {"power", {}}) == V{"left:power:alice@86400000:criteria", "next=5"});
  // Nothing matches: the cursor still moves to the end, so nothing is scanned twice.
  CHECK(read(0, 100, {"nobody", {}}) == V{"next=6"});
  CHECK(read(6, 100, {"power", {TransitionKind::kDwell}}) == V{"next=6"});

  TransitionsPage page;
  CHECK(s.engine().ReadTransitions(0, 10, {"bad id!", {}}, &page).field() == "bucket");
  CHECK(s.engine().ReadTransitions(0, 0, {}, &page).field() == "limit");
}

TEST_CASE("past members page by userId with when they left, and leave the list when they rejoin") {
  Scenario s;
  s.Define(kPower);
  for (const char* user : {"dave", "alice", "carol", "bob"}) {
    s.Event(user, "used");
    s.Event(user, "used");
  }
  s.At(kHour);
  s.Event("carol", "used");  // carol stays a member a while longer
  s.Event("carol", "used");
  s.At(kDay);  // alice, bob, dave leave by the clock (their second event ages out)
  PastMembersPage page;
  RequireOk(s.engine().PastMembers("power", "", 2, &page));
  CHECK(Users(page) == std::vector<std::string>{"alice", "bob"});
  REQUIRE(page.next_cursor == "bob");
  CHECK(page.members[0].entered_at == kT0);
  CHECK(page.members[0].left_at == kT0 + kDay);
  CHECK(page.members[0].entry_count == 1);
  CHECK(page.members[0].reason == LeaveReason::kCriteria);
  RequireOk(s.engine().PastMembers("power", "bob", 2, &page));
  CHECK(Users(page) == std::vector<std::string>{"dave"});
  CHECK(!page.next_cursor);

  // bob rejoins (no longer past), alice is deleted (gone from every list), carol leaves.
  s.At(kDay + kMinute);
  s.Event("bob", "used");
  s.Event("bob", "used");
  RequireOk(s.engine().DeleteContact("alice"));
  s.At(kDay + kHour);
  RequireOk(s.engine().PastMembers("power", "", 10, &page));
  CHECK(Users(page) == std::vector<std::string>{"carol", "dave"});
  CHECK(page.members[0].left_at == kT0 + kDay + kHour);
  uint64_t active = 0;
  RequireOk(s.engine().Count("power", &active));
  CHECK(active == 1);

  // The same pages after a restart from a snapshot, and after a full replay.
  SnapshotInfo snapshot;
  RequireOk(s.engine().TakeSnapshot(&snapshot));
  for (bool use_snapshots : {true, false}) {
    auto reopened = OpenAt(s.dir(), use_snapshots, /*read_only=*/true);
    PastMembersPage again;
    RequireOk(reopened->PastMembers("power", "", 10, &again));
    CHECK(Users(again) == std::vector<std::string>{"carol", "dave"});
  }

  // Deleting the bucket ends bob's membership silently; the re-created id shows him as a
  // past member (entryCount continues), without a reason.
  RequireOk(s.engine().DeleteBucket("power"));
  CHECK(s.engine().PastMembers("power", "", 10, &page).code() == StatusCode::kNotFound);
  s.Define(R"({"id":"power","kind":"manual"})");
  RequireOk(s.engine().PastMembers("power", "", 10, &page));
  CHECK(Users(page) == std::vector<std::string>{"bob", "carol", "dave"});
  CHECK(page.members[0].entry_count == 2);
  CHECK(page.members[0].left_at == kT0 + kDay + kHour);
  CHECK(!page.members[0].reason);
  CHECK(s.engine().PastMembers("power", "", 0, &page).field() == "limit");
}

}  // namespace bucketd::testing
