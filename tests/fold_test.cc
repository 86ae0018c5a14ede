// The fold driven directly by log records: the pure function at the heart of the engine.
#include <algorithm>
#include <catch2/catch.hpp>

#include "engine/definition/definition.h"
#include "engine/fold/fold.h"
#include "engine/state/digest.h"
#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;
using V = std::vector<std::string>;

namespace {

class Records {
 public:
  Status Define(const std::string& json, TimeMs at) {
    BucketDefinition def;
    REQUIRE(ParseBucketDefinition(json, &def).ok());
    Record r = Next(RecordKind::kBucketDefine, at);
    r.bucket_id = def.id;
    r.definition_json = ToCanonicalJson(def);
    return Apply(r);
  }
  Status Event(const std::string& user, const std::string& name, TimeMs at) {
    Record r = Next(RecordKind::kEvent, at);
    r.user_id = user;
    r.event_name = name;
    r.occurred_at = kT0 + at;
    return Apply(r);
  }
  Status Sweep(TimeMs at) { return Apply(Next(RecordKind::kSweep, at)); }
  Status Delete(const std::string& bucket, TimeMs at) {
    Record r = Next(RecordKind::kBucketDelete, at);
    r.bucket_id = bucket;
    return Apply(r);
  }
  // Serves the records applied so far as the fold's history, counting the re-reads.
  void ServeHistory() {
    fold.SetHistorySource([this](uint64_t before_seq, const Fold::RecordsVisitor& visit) {
      ++history_reads;
      std::vector<Record> run;
      for (const Record& r : log) {
        if (r.seq < before_seq) run.push_back(r);
      }
      visit(run);
      return Status::Ok();
    });
  }

  Fold fold;
  std::vector<Transition> out;
  std::vector<Record> log;
  int history_reads = 0;

 private:
  Record Next(RecordKind kind, TimeMs at) {
    Record r;
    r.seq = fold.state().applied_seq + 1;
    // Stamped as the engine stamps: its now never moves back (an earlier `at` is a late
    // event's occurredAt).
    r.at = std::max(kT0 + at, fold.state().now);
    r.kind = kind;
    return r;
  }
  Status Apply(const Record& r) {
    Status s = fold.Apply(r, &out);
    if (s.ok()) log.push_back(r);
    return s;
  }
};

}  // namespace

TEST_CASE("ingest first applies the user's changes that fell due, with their own instants") {
  Records r;
  RequireOk(r.Define(
      R"({"id":"recent","criteria":{"type":"event","eventName":"buy","check":"exists","within":"1d"}})",
      0));
  RequireOk(r.Event("u", "buy", 0));
  // No sweep ran; the next event at 2d must first apply the leave that fell due at 1d.
  RequireOk(r.Event("u", "buy", 2 * kDay));
  REQUIRE(Describe(r.out) ==
          V{"entered:recent:u@0", "left:recent:u@86400000:criteria", "entered:recent:u@172800000"});
  CHECK(r.out[1].detected_at == kT0 + 2 * kDay);
}

TEST_CASE("the fold refuses a bad record without changing anything") {
  Records r;
  RequireOk(
      r.Define(R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"exists"}})", 0));
  const uint64_t seq = r.fold.state().applied_seq;
  CHECK(r.Event("", "x", 0).code() == StatusCode::kInvalidArgument);
  CHECK(r.Event("u", "bucket:x", 0).code() == StatusCode::kInvalidArgument);
  // Not UTF-8: a lone continuation byte, a truncated sequence, an overlong encoding.
  for (const std::string& id : V{"u\x80", "caf\xc3", "\xc0\xaf", std::string(300, 'u')}) {
    const Status s = r.Event(id, "x", 0);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.field() == "userId");
  }
  CHECK(r.fold.state().applied_seq == seq);
  CHECK(r.fold.state().users.empty());
  RequireOk(r.Event("caf\xc3\xa9-\xe2\x82\xac", "x", 0));  // UTF-8 beyond ASCII is fine
  CHECK(r.fold.state().users.size() == 1);
}

TEST_CASE("the fold keeps the clock's last instant exactly and refuses a record after it") {
  // Slots and histories keep the clock's instants in 48 bits (engine/state/time48.h).
  Records r;
  RequireOk(
      r.Define(R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"exists"}})", 0));
  RequireOk(r.Event("u", "x", kInstantMsMax - kT0));
  REQUIRE(Describe(r.out) == V{"entered:b:u@" + std::to_string(kInstantMsMax - kT0)});
  const User& user = *r.fold.state().users.at(0);
  CHECK(TimeMs{user.slots.at(0)->entered_at} == kInstantMsMax);
  CHECK(TimeMs{user.events.at(0).first_at} == kInstantMsMax);
  const uint64_t seq = r.fold.state().applied_seq;
  CHECK(r.Event("u", "x", kInstantMsMax - kT0 + 1).code() == StatusCode::kCorruption);
  CHECK(r.fold.state().applied_seq == seq);
}

TEST_CASE("a threshold leg keeps only the instants it needs") {
  Records r;
  RequireOk(r.Define(
      R"({"id":"p","criteria":{"type":"event","eventName":"used","check":"count","operator":"gte","value":10,"within":"30d"}})",
      0));
  for (int i = 0; i < 5000; ++i) RequireOk(r.Event("u", "used", i));
  const User& user = *r.fold.state().users[0];
  REQUIRE(user.events.size() == 1);
  CHECK(user.events[0].total_count() == 5000);
  CHECK(user.events[0].newest.size() == 10);
  CHECK(user.events[0].newest.front() == kT0 + 4990);
}

TEST_CASE("histories that keep as many instants as fit inline never spill to the heap") {
  Records r;
  RequireOk(r.Define(
      R"({"id":"p","criteria":{"type":"event","eventName":"used","check":"count","operator":"gte","value":2,"within":"30d"}})",
      0));
  static_assert(EventHistory::kNewestInline == 2 && kNewestKeptMin == 2);
  // "used" keeps 2 (its depth), "other" 2 (the floor); late events land in place.
  for (int i = 0; i < 100; ++i) {
    RequireOk(r.Event("u", "used", 1000 + i));
    RequireOk(r.Event("u", "other", 1000 + i));
    RequireOk(r.Event("u", i % 2 ? "used" : "other", 1000 + i - 50));
  }
  const User& user = *r.fold.state().users[0];
  REQUIRE(user.events.size() == 2);
  for (const EventHistory& h : user.events) {
    CHECK(h.newest.size() == EventHistory::kNewestInline);
    CHECK(h.newest.capacity() == EventHistory::kNewestInline);  // still inline
    const Instants newest = h.newest.view();  // one view: its iterators are its own
    CHECK(std::vector<TimeMs>(newest.begin(), newest.end()) ==
          std::vector<TimeMs>{kT0 + 1098, kT0 + 1099});
  }
}

TEST_CASE("an event that would count a derived stream past kEventCountMax is refused") {
  // An aggregate's count shares a word with its stream id (40 bits, as an event name's
  // count): the fold refuses the event that would pass it, as it refuses one past the
  // name's own count, instead of failing the check that guards the word.
  Records r;
  RequireOk(r.Define(
      R"({"id":"spent","criteria":{"type":"event","eventName":"purchase","check":"sum","property":"amount","operator":"gte","value":100}})",
      0));
  const auto purchase = [](uint64_t seq, TimeMs at) {
    Record e;
    e.seq = seq;
    e.at = e.occurred_at = kT0 + at;
    e.kind = RecordKind::kEvent;
    e.user_id = "u";
    e.event_name = "purchase";
    e.event_properties = {{"amount", PropertyValue::Number(5)}};
    return e;
  };
  RequireOk(r.fold.Apply(purchase(r.fold.state().applied_seq + 1, 1000), nullptr));
  State state = r.fold.Release();
  REQUIRE(state.users.size() == 1);
  REQUIRE(state.users[0]->legs.aggregates().size() == 1);
  // A state that has applied kEventCountMax records, each of them this user's purchase,
  // some with the amount twice (keys may repeat: each counts), one short of the limit.
  state.applied_seq = kEventCountMax;
  state.users[0]->legs.aggregates()[0].set_count(kEventCountMax - 1);
  Fold fold;
  RequireOk(fold.Restore(std::move(state)));
  Record twice = purchase(kEventCountMax + 1, 2000);
  twice.event_properties.push_back({"amount", PropertyValue::Number(6)});
  const Status refused = fold.Apply(twice, nullptr);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(refused.message(), Catch::Contains("events of this name"));
  CHECK(fold.state().applied_seq == kEventCountMax);  // nothing applied
  CHECK(fold.state().users[0]->legs.aggregates()[0].count() == kEventCountMax - 1);
  // One contribution still fits; then the count is full.
  RequireOk(fold.Apply(purchase(kEventCountMax + 1, 2000), nullptr));
  CHECK(fold.state().users[0]->legs.aggregates()[0].count() == kEventCountMax);
  CHECK(fold.Apply(purchase(kEventCountMax + 2, 3000), nullptr).code() ==
        StatusCode::kFailedPrecondition);
  // An event feeding no full count is still applied.
  Record other = purchase(kEventCountMax + 2, 3000);
  other.event_name = "viewed";
  RequireOk(fold.Apply(other, nullptr));
}

TEST_CASE("a user's first leave takes room for one past membership, later ones grow it") {
  Records r;
  RequireOk(r.Define(
      R"({"id":"recent","criteria":{"type":"event","eventName":"used","check":"exists","within":"1h"}})",
      0));
  RequireOk(r.Event("u", "used", 1000));
  RequireOk(r.Sweep(1000 + 3'600'000));  // the hour has passed: left
  const User& user = *r.fold.state().users[0];
  REQUIRE(user.past.size() == 1);
  CHECK(user.past.capacity() == 1);
  CHECK(TimeMs{user.past[0].entered_at} == kT0 + 1000);
  CHECK(TimeMs{user.past[0].left_at} == kT0 + 1000 + 3'600'000);
  CHECK(user.past[0].reason == LeaveReason::kCriteria);
  CHECK_FALSE(user.past[0].dwell_anchor_at);
  RequireOk(r.Event("u", "used", 2 * 3'600'000));
  RequireOk(r.Sweep(3 * 3'600'000));
  REQUIRE(user.past.size() == 2);
  CHECK(user.past.capacity() > 2);  // grown by the usual rule from one
  CHECK(user.past[1].entry_count == 2);
  CHECK(TimeMs{user.past[1].left_at} == kT0 + 3 * 3'600'000);
}

TEST_CASE("every history keeps its newest two instants, so shallow definitions re-read nothing") {
  const auto gte = [](int n) {
    return R"({"id":"b","criteria":{"type":"event","eventName":"buy","check":"count","operator":"gte","value":)" +
           std::to_string(n) + R"(,"within":"1d"}})";
  };
  std::vector<std::string> digests;
  for (const uint32_t floor : {kNewestKeptMin, 0u}) {
    Records r;
    r.ServeHistory();
    // 0: a state loaded from a snapshot written before the floor existed.
    State fresh;
    fresh.history_floor = floor;
    RequireOk(r.fold.Restore(std::move(fresh)));
    // No bucket looks at "buy" yet.
    for (int i = 0; i < 6; ++i) RequireOk(r.Event("u", "buy", i * kHour));
    RequireOk(r.Event("v", "buy", 0));
    const EventHistory& h = r.fold.state().users[0]->events[0];
    CHECK(h.newest.size() == floor);

    RequireOk(r.Define(gte(kNewestKeptMin - 1), 6 * kHour));
    CHECK(r.history_reads == (floor == 0 ? 1 : 0));
    CHECK(r.fold.bucket("b")->members.size() == 2);  // u and v (gte 1), from the kept instants
    // A re-read raises a floor of 0 (every name is re-read then).
    CHECK(r.fold.state().history_floor == kNewestKeptMin);
    CHECK(h.newest.size() == kNewestKeptMin);  // re-read up to the raised floor
    // Deleted (its depth goes), then defined again one deeper: within the floor.
    RequireOk(r.Delete("b", 6 * kHour));
    RequireOk(r.Define(gte(kNewestKeptMin), 6 * kHour));
    CHECK(r.history_reads == (floor == 0 ? 1 : 0));
    CHECK(r.fold.bucket("b")->members.size() == 1);
    // Deeper than anything kept: re-read.
    RequireOk(r.Define(gte(6), 6 * kHour));
    CHECK(r.history_reads == (floor == 0 ? 2 : 1));
    CHECK(r.fold.bucket("b")->members.size() == 1);
    CHECK(h.newest.size() == 6);
    // u leaves when its 6th-newest instant (0h) ages out, exactly.
    RequireOk(r.Sweep(kDay));
    REQUIRE(Describe(r.out) == V{"left:b:u@86400000:criteria"});
    digests.push_back(ComputeDigest(r.fold.state()));
  }
  CHECK(digests[0] == digests[1]);  // the same state, whatever was kept beyond the depths
}
