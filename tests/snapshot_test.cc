// Snapshots: a loaded state equals the written one (digest and later behaviour), damaged
// files are reported and skipped, background snapshots, and `bucketctl verify`.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <xxhash.h>
#include <catch2/catch.hpp>

#include "tests/state_test_support.h"
#include "tests/test_support.h"

#include "engine/definition/definition.h"
#include "engine/fold/fold.h"
#include "engine/state/digest.h"
#include "engine/state/snapshot_codec.h"
#include "engine/state/snapshot_generated.h"
#include "log/log.h"
#include "snapshot/snapshot_store.h"
#include "tools/bucketctl/workload.h"

namespace bucketd {
namespace {

using testing::CopyState;
using testing::DecodeInto;
using testing::LoadNewestInto;
using testing::ManualOptions;
using testing::OpenOrFail;
using testing::TempDir;

constexpr TimeMs kStartMs = 1'767'225'600'000;

// Replays the whole log into `fold`.
void ReplayLog(const std::string& dir, Fold* fold) {
  std::unique_ptr<Log> log;
  REQUIRE(Log::Open(LogOptions{dir + "/log", false, true}, &log).ok());
  auto reader = log->ReadFrom(fold->state().applied_seq + 1);
  Record r;
  while (reader->Next(&r)) REQUIRE(fold->Apply(r, nullptr).ok());
  REQUIRE(reader->status().ok());
}

// Runs a churn-heavy workload, taking snapshots at random points.
std::string RunWorkload(const std::string& dir, uint64_t seed, uint64_t events) {
  auto engine = OpenOrFail(ManualOptions(dir, kStartMs));
  workload::Options w;
  w.users = 300;
  w.events = events;
  w.seed = seed;
  w.batch = 4;
  workload::Generator gen(w);
  REQUIRE(gen.Setup(engine.get()).ok());
  std::mt19937_64 rng(seed * 7919);
  REQUIRE(gen.Run(engine.get(),
                  [&](uint64_t) {
                    if (rng() % 150 == 0) {
                      SnapshotInfo info;
                      REQUIRE(engine->TakeSnapshot(&info).ok());
                    }
                    return true;
                  })
              .ok());
  const std::string digest = engine->State().digest;
  REQUIRE(engine->Close().ok());
  return digest;
}

TEST_CASE("a loaded snapshot has the digest of the state that was written") {
  for (uint64_t seed : {1, 2, 3}) {
    TempDir dir;
    RunWorkload(dir.path(), seed, 3000);
    Fold live;
    ReplayLog(dir.path(), &live);

    SnapshotStore store(dir.snapshots(), 3);
    SnapshotInfo info;
    REQUIRE(store.Write(live.state(), &info).ok());
    CHECK(info.log_seq == live.state().applied_seq);
    CHECK(info.bytes == std::filesystem::file_size(info.path));

    Fold loaded;
    bool ok = false;
    std::vector<std::string> warnings;
    REQUIRE(LoadNewestInto(store, UINT64_MAX, kNever, &loaded, &ok, &warnings).ok());
    REQUIRE(ok);
    CHECK(warnings.empty());
    CHECK(ComputeDigest(loaded.state()) == ComputeDigest(live.state()));
    // The member sets and time indices were rebuilt, not just counted.
    for (size_t b = 0; b < live.state().buckets.size(); ++b) {
      const Bucket& x = *live.state().buckets[b];
      const Bucket& y = *loaded.state().buckets[b];
      REQUIRE(x.members.size() == y.members.size());
      auto it = y.members.sorted(loaded.state().users, y.index).begin();
      for (const Slot* s : x.members.sorted(live.state().users, x.index))
        CHECK((*it++)->user->id == s->user->id);
      REQUIRE(x.due_index.size() == y.due_index.size());
      const std::vector<DueIndex::Entry> loaded_due = y.due_index.Sorted();
      auto jt = loaded_due.begin();
      for (const DueIndex::Entry& e : x.due_index.Sorted()) {
        CHECK(jt->key == e.key);
        // Filed by pool index: each state's own pool finds the slot, the one filed.
        const Slot* written_slot = live.state().slot_pool.At(e.slot);
        const Slot* read_slot = loaded.state().slot_pool.At((jt++)->slot);
        CHECK(written_slot->due_at == e.key.due_at);
        CHECK(written_slot->user->index == e.key.user_index);
        CHECK(read_slot->due_at == e.key.due_at);
        CHECK(read_slot->user->index == e.key.user_index);
        CHECK(read_slot->bucket == b);
      }
      // And pops in that order (copies: popping changes nothing of either fold).
      DueIndex written = x.due_index;
      DueIndex read = y.due_index;
      while (!written.empty()) {
        REQUIRE(!read.empty());
        const DueKey key = written.front_key();
        REQUIRE(read.front_key() == key);
        CHECK(loaded.state().slot_pool.At(read.front())->user->id ==
              live.state().slot_pool.At(written.front())->user->id);
        written.EraseFront(key);
        read.EraseFront(key);
      }
      CHECK(read.empty());
    }
    CHECK(store.List().size() <= 3);
  }
}

TEST_CASE("an empty state round-trips") {
  TempDir dir;
  Fold empty;
  SnapshotStore store(dir.snapshots(), 2);
  REQUIRE(store.Write(empty.state(), nullptr).ok());
  Fold loaded;
  bool ok = false;
  std::vector<std::string> warnings;
  REQUIRE(LoadNewestInto(store, 0, kNever, &loaded, &ok, &warnings).ok());
  CHECK(ok);
  CHECK(ComputeDigest(loaded.state()) == ComputeDigest(empty.state()));
}

TEST_CASE("a payload whose user holds two slots of one bucket is refused") {
  TempDir dir;
  RunWorkload(dir.path(), 5, 600);
  Fold fold;
  ReplayLog(dir.path(), &fold);
  State state = CopyState(fold.state());
  User* user = nullptr;
  for (auto& u : state.users) {
    if (u->slots.size() >= 2) user = u;
  }
  REQUIRE(user != nullptr);
  {
    flatbuffers::DetachedBuffer good;
    REQUIRE(EncodeSnapshot(fold.state(), &good).ok());
    Fold loaded;
    REQUIRE(DecodeInto(good.data(), good.size(), &loaded).ok());
  }
  user->slots[1]->bucket = user->slots[0]->bucket;  // written as is by the encoder
  flatbuffers::DetachedBuffer bad;
  REQUIRE(EncodeSnapshot(state, &bad).ok());
  Fold loaded;
  const Status s = DecodeInto(bad.data(), bad.size(), &loaded);
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK_THAT(s.message(), Catch::Contains("two slots of a bucket"));
  CHECK(loaded.state().users.empty());  // nothing of the payload was kept
}

TEST_CASE(
    "a payload with a membership entered after the state's now, a past membership that "
    "ends before it starts, or a negative dwell total is refused") {
  TempDir dir;
  RunWorkload(dir.path(), 5, 600);
  Fold fold;
  ReplayLog(dir.path(), &fold);
  // The snapshot fuzzer's finding: such a state reached signed overflow in Fold::Leave.
  const auto refused = [](const State& state, const std::string& why) {
    flatbuffers::DetachedBuffer bad;
    REQUIRE(EncodeSnapshot(state, &bad).ok());
    Fold loaded;
    const Status s = DecodeInto(bad.data(), bad.size(), &loaded);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains(why));
  };
  {
    State state = CopyState(fold.state());
    Slot* slot = nullptr;
    for (auto& u : state.users) {
      if (!u->slots.empty()) slot = u->slots[0];
    }
    REQUIRE(slot != nullptr);
    slot->entered_at = state.now + 1;
    refused(state, "entered after the state's now");
  }
  {
    State state = CopyState(fold.state());
    PastMembership* past = nullptr;
    for (auto& u : state.users) {
      if (!u->past.empty()) past = &u->past[0];
    }
    REQUIRE(past != nullptr);
    past->entered_at = past->left_at + 1;
    refused(state, "past membership out of range");
  }
  {
    State state = CopyState(fold.state());
    state.buckets[0]->closed_dwell_ms_total = -1;
    refused(state, "negative closed dwell total");
  }
}

// Applies the same later inputs to both folds: an event for every user, days on (so that
// each user's due items are applied at ingest, behind User::next_due_floor), then a sweep.
void ContinueBoth(Fold* a, Fold* b) {
  REQUIRE(a->state().applied_seq == b->state().applied_seq);
  uint64_t seq = a->state().applied_seq;
  constexpr TimeMs kDayMs = 86'400'000;
  const TimeMs at = a->state().now + 9 * kDayMs;
  std::vector<std::string> ids;
  for (const User* user : a->state().users) ids.push_back(user->id);
  for (size_t i = 0; i < ids.size(); ++i) {
    Record r;
    r.seq = seq + 1;  // a refused record (a deleted contact's) spends no seq
    r.at = r.occurred_at = at + static_cast<TimeMs>(i);
    r.kind = RecordKind::kEvent;
    r.user_id = ids[i];
    r.event_name = std::string(a->state().event_names.Name(static_cast<uint32_t>(i % 3)));
    const Status x = a->Apply(r, nullptr);
    const Status y = b->Apply(r, nullptr);
    REQUIRE(x.code() == y.code());
    if (x.ok()) ++seq;
  }
  Record sweep;
  sweep.seq = ++seq;
  sweep.at = at + 30 * kDayMs;
  sweep.kind = RecordKind::kSweep;
  REQUIRE(a->Apply(sweep, nullptr).ok());
  REQUIRE(b->Apply(sweep, nullptr).ok());
}

TEST_CASE("a payload with an aggregate count past what its records could add is refused") {
  // The fold's check of kEventCountMax (CheckHistoryLimits) relies on an aggregate's count
  // being at most kEventPropertiesMax contributions a record folded.
  Fold fold;
  BucketDefinition def;
  REQUIRE(
      ParseBucketDefinition(
          R"({"id":"spent","criteria":{"type":"event","eventName":"purchase","check":"sum","property":"amount","operator":"gte","value":100}})",
          &def)
          .ok());
  Record define;
  define.seq = 1;
  define.at = testing::kT0;
  define.kind = RecordKind::kBucketDefine;
  define.bucket_id = def.id;
  define.definition_json = ToCanonicalJson(def);
  REQUIRE(fold.Apply(define, nullptr).ok());
  Record purchase;
  purchase.seq = 2;
  purchase.at = purchase.occurred_at = testing::kT0 + 1000;
  purchase.kind = RecordKind::kEvent;
  purchase.user_id = "u";
  purchase.event_name = "purchase";
  purchase.event_properties = {{"amount", PropertyValue::Number(5)}};
  REQUIRE(fold.Apply(purchase, nullptr).ok());
  const auto decode = [&](uint64_t count) {
    State state = CopyState(fold.state());
    state.users[0]->legs.aggregates()[0].set_count(count);
    flatbuffers::DetachedBuffer bytes;
    REQUIRE(EncodeSnapshot(state, &bytes).ok());
    Fold loaded;
    return DecodeInto(bytes.data(), bytes.size(), &loaded);
  };
  REQUIRE(fold.state().applied_seq == 2);
  CHECK(decode(2 * kEventPropertiesMax).ok());
  const Status s = decode(2 * kEventPropertiesMax + 1);
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK_THAT(s.message(), Catch::Contains("aggregate count out of range"));
}

TEST_CASE("a user stream cut at its marks decodes on any number of threads to the same state") {
  TempDir dir;
  RunWorkload(dir.path(), 11, 3000);
  Fold live;
  ReplayLog(dir.path(), &live);
  REQUIRE(live.state().users.size() > 200);
  REQUIRE(live.state().event_names.size() >= 3);
  flatbuffers::DetachedBuffer payload;
  REQUIRE(EncodeSnapshot(live.state(), &payload, /*users_per_mark=*/7).ok());
  REQUIRE(snap::GetState(payload.data())->user_stream_marks()->size() ==
          (live.state().users.size() - 1) / 7);
  const std::string digest = ComputeDigest(live.state());
  for (size_t threads : {1, 2, 3, 5, 64}) {
    Fold loaded;
    REQUIRE(DecodeInto(payload.data(), payload.size(), &loaded, threads).ok());
    CHECK(ComputeDigest(loaded.state()) == digest);
    for (size_t i = 0; i < live.state().users.size(); ++i) {
      REQUIRE(loaded.state().users[i]->index == i);
      REQUIRE(loaded.state().users[i]->id == live.state().users[i]->id);
      REQUIRE(loaded.state().user_ids.Find(live.state().users[i]->id) == loaded.state().users[i]);
    }
    for (size_t b = 0; b < live.state().buckets.size(); ++b) {
      const std::vector<DueIndex::Entry> x = live.state().buckets[b]->due_index.Sorted();
      const std::vector<DueIndex::Entry> y = loaded.state().buckets[b]->due_index.Sorted();
      REQUIRE(x.size() == y.size());
      for (size_t i = 0; i < x.size(); ++i) REQUIRE(x[i].key == y[i].key);
    }
    // Every user's due items are found at ingest, as the live fold finds them.
    Fold replayed;
    ReplayLog(dir.path(), &replayed);
    ContinueBoth(&replayed, &loaded);
    CHECK(ComputeDigest(loaded.state()) == ComputeDigest(replayed.state()));
  }
}

TEST_CASE("user stream marks out of order, out of range or misplaced are refused") {
  TempDir dir;
  RunWorkload(dir.path(), 12, 1500);
  Fold fold;
  ReplayLog(dir.path(), &fold);
  const auto damage = [&](const std::function<void(snap::UserStreamMark*)>& edit, size_t threads) {
    flatbuffers::DetachedBuffer payload;
    REQUIRE(EncodeSnapshot(fold.state(), &payload, /*users_per_mark=*/50).ok());
    auto* marks = snap::GetMutableState(payload.data())->mutable_user_stream_marks();
    REQUIRE(marks->size() >= 2);
    edit(marks->GetMutableObject(1));
    Fold loaded;
    const Status s = DecodeInto(payload.data(), payload.size(), &loaded, threads);
    CHECK(loaded.state().users.empty());  // nothing of the payload was kept
    CHECK(loaded.state().buckets.empty());
    return s;
  };
  Status s = damage([](snap::UserStreamMark* m) { m->mutate_first_user(0); }, 1);
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK_THAT(s.message(), Catch::Contains("user stream marks out of order or range"));
  s = damage([&](snap::UserStreamMark* m) { m->mutate_first_user(UINT32_MAX); }, 2);
  CHECK_THAT(s.message(), Catch::Contains("user stream marks out of order or range"));
  s = damage([&](snap::UserStreamMark* m) { m->mutate_offset(1ull << 40); }, 2);
  CHECK_THAT(s.message(), Catch::Contains("user stream marks out of order or range"));
  // In range and in order, but not where the user starts: the piece before it does not end
  // there. Every cut is tried, so the damaged mark is one of them.
  for (int shift : {-1, 1}) {
    s = damage([&](snap::UserStreamMark* m) { m->mutate_offset(m->offset() + shift); }, 64);
    CHECK(s.code() == StatusCode::kCorruption);
  }
  s = damage([&](snap::UserStreamMark* m) { m->mutate_first_user(m->first_user() + 1); }, 64);
  CHECK(s.code() == StatusCode::kCorruption);
}

TEST_CASE("user stream marks left misaligned by a damaged offset are refused, not read") {
  // Found by tests/fuzz/snapshot_fuzz.cc (corpus/snapshot/crash-misaligned-marks): the
  // Verifier checks a vector of structs for the alignment of its length only, and reading
  // an 8-byte mark at an address that is 4 mod 8 is undefined (UBSan stops there).
  TempDir dir;
  RunWorkload(dir.path(), 12, 1500);
  Fold fold;
  ReplayLog(dir.path(), &fold);
  flatbuffers::DetachedBuffer payload;
  REQUIRE(EncodeSnapshot(fold.state(), &payload, /*users_per_mark=*/50).ok());
  auto* root = snap::GetMutableState(payload.data());
  REQUIRE(root->user_stream_marks()->size() >= 2);
  // Point the field 4 bytes on: the length is then read from the first mark's first_user
  // (50) and the marks from 4 bytes past an 8-aligned address, all inside the buffer.
  // snap::State derives from flatbuffers::Table privately; the table is at the same address.
  auto* table = reinterpret_cast<flatbuffers::Table*>(root);
  const flatbuffers::voffset_t field =
      table->GetOptionalFieldOffset(snap::State::VT_USER_STREAM_MARKS);
  REQUIRE(field != 0);
  uint8_t* at = reinterpret_cast<uint8_t*>(table) + field;
  flatbuffers::WriteScalar(at, flatbuffers::ReadScalar<flatbuffers::uoffset_t>(at) + 4);
  REQUIRE(reinterpret_cast<uintptr_t>(root->user_stream_marks()->Data()) % 8 == 4);
  Fold loaded;
  const Status s = DecodeInto(payload.data(), payload.size(), &loaded, 2);
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK_THAT(s.message(), Catch::Contains("user stream marks misaligned"));
  CHECK(loaded.state().users.empty());
}

TEST_CASE("the history floor round-trips, is 0 when absent, and a huge one is refused") {
  TempDir dir;
  RunWorkload(dir.path(), 13, 600);
  Fold fold;
  ReplayLog(dir.path(), &fold);
  REQUIRE(fold.state().history_floor == kNewestKeptMin);
  State state = CopyState(fold.state());
  for (const uint32_t floor : {kNewestKeptMin, 0u}) {
    state.history_floor = floor;  // 0 is written as an absent field
    flatbuffers::DetachedBuffer payload;
    REQUIRE(EncodeSnapshot(state, &payload).ok());
    Fold loaded;
    REQUIRE(DecodeInto(payload.data(), payload.size(), &loaded).ok());
    CHECK(loaded.state().history_floor == floor);
  }
  flatbuffers::DetachedBuffer payload;
  REQUIRE(EncodeSnapshot(fold.state(), &payload).ok());
  REQUIRE(snap::GetMutableState(payload.data())->mutate_history_floor(1u << 20));
  Fold loaded;
  const Status s = DecodeInto(payload.data(), payload.size(), &loaded);
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK_THAT(s.message(), Catch::Contains("history floor out of range"));
  CHECK(loaded.state().users.empty());
}

TEST_CASE(
    "an event count at its 40-bit limit round-trips and takes no more events; a count past "
    "it, or past the records folded, is refused") {
  Fold fold;
  const auto event = [](Fold* f, const std::string& user, const std::string& name) {
    Record r;
    r.seq = f->state().applied_seq + 1;
    r.at = r.occurred_at = kStartMs + static_cast<TimeMs>(r.seq % 1000);
    r.kind = RecordKind::kEvent;
    r.user_id = user;
    r.event_name = name;
    return f->Apply(r, nullptr);
  };
  REQUIRE(event(&fold, "u", "x").ok());
  REQUIRE(event(&fold, "u", "y").ok());
  REQUIRE(event(&fold, "v", "x").ok());
  // The history of user `u` and name `x` (both first: index and name id 0).
  const auto history = [](State& state) -> EventHistory& {
    REQUIRE(state.users[0]->id == "u");
    REQUIRE(state.users[0]->events[0].name_id() == 0);
    return state.users[0]->events[0];
  };
  const auto refused = [](const uint8_t* data, size_t size, const std::string& why) {
    Fold loaded;
    const Status s = DecodeInto(data, size, &loaded);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains(why));
  };

  // A count can reach the limit only in a log that long: the fold, loaded with one there,
  // refuses one more event of that user and name, clearly, and takes every other.
  State state = CopyState(fold.state());
  state.applied_seq = kEventCountMax + 3;
  history(state).set_total_count(kEventCountMax);
  flatbuffers::DetachedBuffer payload;
  REQUIRE(EncodeSnapshot(state, &payload).ok());
  Fold loaded;
  REQUIRE(DecodeInto(payload.data(), payload.size(), &loaded).ok());
  CHECK(ComputeDigest(loaded.state()) == ComputeDigest(state));
  CHECK(loaded.state().users[0]->events[0].total_count() == kEventCountMax);
  const Status s = event(&loaded, "u", "x");
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(s.message(), Catch::Contains("events of this name, the most a state counts"));
  CHECK(loaded.state().users[0]->events[0].total_count() == kEventCountMax);
  CHECK(loaded.state().applied_seq == kEventCountMax + 3);  // nothing applied
  CHECK(event(&loaded, "u", "y").ok());
  CHECK(event(&loaded, "v", "x").ok());
  CHECK(event(&loaded, "w", "x").ok());

  // Past the limit (the varint of 2^40 - 1 turned into 2^40, same length): refused.
  const std::vector<uint8_t> max_count{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F};
  std::vector<uint8_t> bytes(payload.data(), payload.data() + payload.size());
  const auto at = std::search(bytes.begin(), bytes.end(), max_count.begin(), max_count.end());
  REQUIRE(at != bytes.end());
  REQUIRE(std::search(at + 1, bytes.end(), max_count.begin(), max_count.end()) == bytes.end());
  std::copy_n(std::vector<uint8_t>{0x80, 0x80, 0x80, 0x80, 0x80, 0x20}.begin(), 6, at);
  refused(bytes.data(), bytes.size(), "an event count out of range");

  // More events counted than records folded: not a fold of any log.
  State more = CopyState(fold.state());
  history(more).set_total_count(more.applied_seq + 1);
  flatbuffers::DetachedBuffer bad;
  REQUIRE(EncodeSnapshot(more, &bad).ok());
  refused(bad.data(), bad.size(), "an event count out of range");
}

TEST_CASE("only the newest `keep` snapshots stay") {
  TempDir dir;
  RunWorkload(dir.path(), 9, 2000);
  auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs));
  for (int i = 0; i < 5; ++i) {
    SweepResult sweep;
    REQUIRE(engine->AdvanceClock(engine->Now() + 1000, &sweep).ok());
    REQUIRE(engine->TakeSnapshot(nullptr).ok());
  }
  SnapshotStore store(dir.snapshots(), 3);
  const auto files = store.List();
  REQUIRE(files.size() == 3);
  CHECK(files[0].log_seq == engine->State().log_seq);
  CHECK(files[0].log_seq > files[1].log_seq);
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x5a));
}

// Rewrites the header's version and recomputes its checksum: a well-formed file of
// another format version.
void SetVersion(const std::string& path, uint32_t version) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  unsigned char header[56];
  f.read(reinterpret_cast<char*>(header), sizeof header);
  for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<unsigned char>(version >> (8 * i));
  const uint64_t sum = XXH3_64bits(header, 48);
  for (int i = 0; i < 8; ++i) header[48 + i] = static_cast<unsigned char>(sum >> (8 * i));
  f.seekp(0);
  f.write(reinterpret_cast<const char*>(header), sizeof header);
}

TEST_CASE("version 2 and 3 files still load; versions this build does not read are skipped") {
  TempDir dir;
  RunWorkload(dir.path(), 14, 600);
  Fold live;
  ReplayLog(dir.path(), &live);
  // What a version-2 writer wrote: no history floor.
  State old = CopyState(live.state());
  old.history_floor = 0;
  SnapshotStore store(dir.snapshots(), 1);
  SnapshotInfo info;
  REQUIRE(store.Write(old, &info).ok());
  // A version-3 file is a version-4 one in which no user has aggregate or sequence
  // histories, as every state without §3b legs is.
  for (const uint32_t version : {2u, 3u, 4u}) {
    SetVersion(info.path, version);
    Fold loaded;
    bool ok = false;
    std::vector<std::string> warnings;
    REQUIRE(LoadNewestInto(store, UINT64_MAX, kNever, &loaded, &ok, &warnings).ok());
    CHECK(ok);
    CHECK(warnings.empty());
    CHECK(loaded.state().history_floor == 0);
    CHECK(ComputeDigest(loaded.state()) == ComputeDigest(live.state()));
  }
  for (const uint32_t version : {1u, 5u}) {
    SetVersion(info.path, version);
    Fold loaded;
    bool ok = true;
    std::vector<std::string> warnings;
    REQUIRE(LoadNewestInto(store, UINT64_MAX, kNever, &loaded, &ok, &warnings).ok());
    CHECK_FALSE(ok);
    REQUIRE(warnings.size() == 1);
    CHECK_THAT(warnings[0], Catch::Contains("format version " + std::to_string(version) +
                                            ", this build reads 2 to 4"));
  }
}

TEST_CASE("damaged snapshots are reported, skipped, and start-up still agrees") {
  TempDir dir;
  const std::string live_digest = RunWorkload(dir.path(), 5, 1500);
  // Four snapshots at four log positions; damage them newest first, one way each.
  {
    Options o = ManualOptions(dir.path(), kStartMs);
    o.snapshots_kept = 10;
    auto engine = OpenOrFail(o);
    for (int i = 0; i < 4; ++i) {
      SweepResult sweep;
      REQUIRE(engine->AdvanceClock(engine->Now() + 60'000, &sweep).ok());
      REQUIRE(engine->TakeSnapshot(nullptr).ok());
    }
  }
  Options o = ManualOptions(dir.path(), kStartMs);
  o.read_only = true;
  o.use_snapshots = false;
  const std::string full = OpenOrFail(o)->State().digest;

  SnapshotStore store(dir.snapshots(), 10);
  std::vector<SnapshotFile> files = store.List();
  REQUIRE(files.size() >= 4);
  const std::string flipped = files[0].path, truncated = files[1].path, magic = files[2].path,
                    version = files[3].path;
  FlipByte(flipped, files[0].bytes / 2);
  std::filesystem::resize_file(truncated, files[1].bytes - 100);
  FlipByte(magic, 0);
  SetVersion(version, 99);

  SECTION("an older good snapshot is used") {
    std::vector<std::string> warnings;
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs), &warnings);
    CHECK(engine->State().digest == full);
    REQUIRE(warnings.size() == 4);
    CHECK(warnings[0].find(flipped) != std::string::npos);
    CHECK(warnings[0].find("checksum") != std::string::npos);
    CHECK(warnings[1].find(truncated) != std::string::npos);
    CHECK(warnings[1].find("truncated") != std::string::npos);
    CHECK(warnings[2].find("magic") != std::string::npos);
    CHECK(warnings[3].find("version 99") != std::string::npos);
    CHECK(engine->Stats().replayed_records < engine->State().log_seq);
  }
  SECTION("with every snapshot damaged, a full replay is used") {
    for (size_t i = 4; i < files.size(); ++i) FlipByte(files[i].path, 60);
    std::vector<std::string> warnings;
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs), &warnings);
    CHECK(engine->State().digest == full);
    CHECK(warnings.size() == files.size());
    CHECK(engine->Stats().replayed_records == engine->State().log_seq);
  }
  SECTION("a snapshot beyond the log is skipped") {
    Fold fold;
    ReplayLog(dir.path(), &fold);
    State ahead = CopyState(fold.state());
    ahead.applied_seq += 1000;
    REQUIRE(store.Write(ahead, nullptr).ok());
    std::vector<std::string> warnings;
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs), &warnings);
    CHECK(engine->State().digest == full);
    CHECK(warnings[0].find("beyond the log") != std::string::npos);
  }
  (void)live_digest;
}

TEST_CASE("a background snapshot captures the state at the fork") {
  TempDir dir;
  RunWorkload(dir.path(), 11, 2000);
  Fold fold;
  ReplayLog(dir.path(), &fold);
  const std::string at_fork = ComputeDigest(fold.state());
  const uint64_t seq = fold.state().applied_seq;

  SnapshotStore store(dir.snapshots(), 3);
  State state = CopyState(fold.state());
  REQUIRE(store.StartBackground(state).ok());
  CHECK(store.background_running());
  CHECK(store.StartBackground(state).code() == StatusCode::kFailedPrecondition);
  // The parent keeps mutating: the child must not see it.
  state.buckets[0]->entered_total += 12345;
  Status status;
  SnapshotInfo info;
  REQUIRE(store.WaitBackground(&status, &info));
  INFO(status.ToString());
  REQUIRE(status.ok());
  CHECK(info.log_seq == seq);
  CHECK(info.bytes == std::filesystem::file_size(info.path));
  CHECK_FALSE(store.background_running());
  CHECK_FALSE(store.PollBackground(&status, &info));

  Fold loaded;
  bool ok = false;
  std::vector<std::string> warnings;
  REQUIRE(LoadNewestInto(store, seq, kNever, &loaded, &ok, &warnings).ok());
  REQUIRE(ok);
  CHECK(ComputeDigest(loaded.state()) == at_fork);
}

TEST_CASE("automatic snapshots run in the background and the newest is loaded") {
  TempDir dir;
  std::string live;
  {
    Options o = ManualOptions(dir.path(), kStartMs);
    o.snapshot_every_records = 40;
    auto engine = OpenOrFail(o);
    workload::Options w;
    w.users = 300;
    w.events = 4000;
    w.seed = 17;
    w.batch = 4;
    workload::Generator gen(w);
    REQUIRE(gen.Setup(engine.get()).ok());
    REQUIRE(gen.Run(engine.get()).ok());
    live = engine->State().digest;
    // Close waits for a running child, so its file is complete afterwards.
    REQUIRE(engine->Close().ok());
  }
  SnapshotStore store(dir.snapshots(), 3);
  const std::vector<SnapshotFile> files = store.List();
  REQUIRE_FALSE(files.empty());
  CHECK(files.size() <= 3);
  for (const auto& entry : std::filesystem::directory_iterator(dir.snapshots())) {
    CHECK(entry.path().string().find(".tmp-") == std::string::npos);
  }

  std::vector<std::string> warnings;
  auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs), &warnings);
  CHECK(warnings.empty());
  const uint64_t log_seq = engine->State().log_seq;
  CHECK(files[0].log_seq > 0);
  CHECK(engine->Stats().replayed_records == log_seq - files[0].log_seq);
  CHECK(engine->Stats().replayed_records < log_seq);
  CHECK(engine->State().digest == live);

  Options full = ManualOptions(dir.path(), kStartMs);
  full.read_only = true;
  full.use_snapshots = false;
  CHECK(OpenOrFail(full)->State().digest == live);
}

int RunBucketctl(const std::string& args) {
  const char* bin = std::getenv("BUCKETCTL_BIN");
  if (bin == nullptr || !std::filesystem::exists(bin)) return -1;
  const int rc = std::system((std::string(bin) + " " + args + " > /dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -2;
}

TEST_CASE("bucketctl verify: 0 on a good dir, 1 when the snapshot disagrees") {
  if (std::getenv("BUCKETCTL_BIN") == nullptr) {
    WARN("BUCKETCTL_BIN not set (run through ctest); skipped");
    return;
  }
  TempDir dir;
  RunWorkload(dir.path(), 13, 2000);
  REQUIRE(RunBucketctl("snapshot --data " + dir.path()) == 0);
  CHECK(RunBucketctl("verify --data " + dir.path()) == 0);

  // A well-formed snapshot of a different state at a plausible seq.
  SnapshotStore store(dir.snapshots(), 3);
  Fold fold;
  bool ok = false;
  std::vector<std::string> warnings;
  REQUIRE(LoadNewestInto(store, UINT64_MAX, kNever, &fold, &ok, &warnings).ok());
  REQUIRE(ok);
  State changed = CopyState(fold.state());
  changed.buckets[0]->left_total += 1;
  REQUIRE(store.Write(changed, nullptr).ok());
  CHECK(RunBucketctl("verify --data " + dir.path()) == 1);
}

TEST_CASE("a background snapshot's child keeps none of the parent's descriptors") {
  TempDir dir;
  Fold fold;
  // Users enough that the child still writes well after it started.
  for (uint64_t seq = 1; seq <= 150'000; ++seq) {
    Record r;
    r.seq = seq;
    r.at = r.occurred_at = testing::kT0;
    r.kind = RecordKind::kEvent;
    r.user_id = "user-" + std::to_string(seq);
    r.event_name = "x";
    REQUIRE(fold.Apply(r, nullptr).ok());
  }
  // Stands for a server's listening socket: inherited by a fork, not closed on exec.
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  SnapshotStore store(dir.snapshots(), 3);
  REQUIRE(store.StartBackground(fold.state()).ok());
  close(fds[1]);
  // EOF once no process holds the write end: the child closed its copy at its start. Had
  // it kept it, EOF would come only with its exit, and it would be done by now.
  char byte = 0;
  REQUIRE(read(fds[0], &byte, 1) == 0);
  close(fds[0]);
  Status status;
  SnapshotInfo info;
  CHECK_FALSE(store.PollBackground(&status, &info));
  REQUIRE(store.WaitBackground(&status, &info));
  INFO(status.ToString());
  CHECK(status.ok());
}

}  // namespace
}  // namespace bucketd
