// Membership evaluated on ingest (SPEC §4), driven through the public Engine API.
#include <catch2/catch.hpp>

#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;
using V = std::vector<std::string>;

namespace {

const char* kPowerUsers = R"({"id":"power","criteria":{"type":"event","eventName":"used",
  "check":"count","operator":"gte","value":3}})";

PropertyPatch Prop(std::string key, PropertyValue value) {
  return {std::move(key), std::move(value)};
}

}  // namespace

TEST_CASE("a user joins when the criteria start to hold, and a stable member emits nothing") {
  Scenario s;
  s.Define(kPowerUsers);
  s.Event("u1", "used");
  s.Event("u1", "used");
  CHECK(s.Drain().empty());
  s.Event("u1", "used");
  auto t = s.Drain();
  REQUIRE(t.size() == 1);
  CHECK(t[0].Name() == "bucket:entered:power");
  CHECK(t[0].kind == TransitionKind::kEntered);
  CHECK(t[0].source == MembershipSource::kEvent);
  CHECK(t[0].entry_count == 1);
  CHECK(t[0].IdempotencyKey() == "bucket:power:u1:entered:1");
  CHECK(t[0].at == kT0);
  CHECK(s.IsMember("power", "u1"));
  s.Event("u1", "used");
  s.Event("u1", "other");
  CHECK(s.Drain().empty());
  CHECK(s.Count("power") == 1);
}

TEST_CASE("a property change makes a member leave with reason criteria") {
  Scenario s;
  s.Define(
      R"({"id":"trial","criteria":{"type":"property","property":"plan","operator":"eq","value":"trial"}})");
  s.Event("u1", "x", {Prop("plan", PropertyValue::String("trial"))});
  s.At(kHour);
  s.Event("u1", "x", {Prop("plan", PropertyValue::String("pro"))});
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:trial:u1@0", "left:trial:u1@3600000:criteria"});
  CHECK(t[1].IdempotencyKey() == "bucket:trial:u1:left:1");
  CHECK_FALSE(s.IsMember("trial", "u1"));
  // Removing the key with null is a change too.
  s.Event("u2", "x", {Prop("plan", PropertyValue::String("trial"))});
  s.Event("u2", "x", {Prop("plan", PropertyValue::Null())});
  CHECK(Describe(s.Drain()) == V{"entered:trial:u2@3600000", "left:trial:u2@3600000:criteria"});
}

TEST_CASE("entryLimit governs which joins emit entered") {
  auto flip = [](Scenario& s, const std::string& user, TimeMs at) {
    s.At(at);
    s.Event(user, "x", {{"on", PropertyValue::Bool(true)}});
    s.Event(user, "x", {{"on", PropertyValue::Bool(false)}});
  };
  const std::string criteria =
      R"("criteria":{"type":"property","property":"on","operator":"eq","value":true})";

  SECTION("unlimited emits every time") {
    Scenario s;
    s.Define(R"({"id":"b","entryLimit":"unlimited",)" + criteria + "}");
    flip(s, "u", 0);
    flip(s, "u", kDay);
    auto t = s.Drain();
    REQUIRE(t.size() == 4);
    CHECK(t[2].entry_count == 2);
    CHECK(t[2].IdempotencyKey() == "bucket:b:u:entered:2");
  }
  SECTION("once emits only the first entry; later memberships still exist") {
    Scenario s;
    s.Define(R"({"id":"b","entryLimit":"once",)" + criteria + "}");
    flip(s, "u", 0);
    s.At(kDay);
    s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
    auto t = s.Drain();
    CHECK(Describe(t) == V{"entered:b:u@0", "left:b:u@0:criteria"});
    Member m;
    RequireOk(s.engine().GetMember("b", "u", &m));
    CHECK(m.entry_count == 2);
  }
  SECTION("once_per_period emits again only after the period since the last leave") {
    Scenario s;
    s.Define(R"({"id":"b","entryLimit":"once_per_period","entryPeriod":"7d",)" + criteria + "}");
    flip(s, "u", 0);          // entry 1: emitted, left at 0
    flip(s, "u", 3 * kDay);   // entry 2: 3d after the leave, suppressed (its left still emits)
    flip(s, "u", 10 * kDay);  // entry 3: 7d after the last leave at 3d, emitted
    auto entered = s.Drain();
    V names;
    for (auto& t : entered) {
      if (t.kind == TransitionKind::kEntered)
        names.push_back(Describe(t) + "#" + std::to_string(t.entry_count));
    }
    CHECK(names == V{"entered:b:u@0#1", "entered:b:u@864000000#3"});
  }
  SECTION("once_per_period without entryPeriod always emits") {
    Scenario s;
    s.Define(R"({"id":"b","entryLimit":"once_per_period",)" + criteria + "}");
    flip(s, "u", 0);
    flip(s, "u", kMinute);
    int entered = 0;
    for (auto& t : s.Drain()) entered += t.kind == TransitionKind::kEntered;
    CHECK(entered == 2);
  }
}

TEST_CASE("minDwell defers a leave, recorded as a deadline, and re-checks then") {
  Scenario s;
  s.Define(
      R"({"id":"b","minDwell":"1h","criteria":{"type":"property","property":"on","operator":"eq","value":true}})");
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(10 * kMinute);
  s.Event("u", "x", {{"on", PropertyValue::Bool(false)}});
  CHECK(Describe(s.Drain()) == V{"entered:b:u@0"});
  CHECK(s.IsMember("b", "u"));
  CHECK(s.engine().NextDueMs() == kT0 + kHour);  // the deferred re-check is filed
  s.At(kHour);
  CHECK(Describe(s.Drain()) == V{"left:b:u@3600000:criteria"});

  // Criteria holding again by the deadline cancel the deferred leave.
  s.Event("v", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(kHour + kMinute);
  s.Event("v", "x", {{"on", PropertyValue::Bool(false)}});
  s.At(kHour + 2 * kMinute);
  s.Event("v", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(3 * kHour);
  CHECK(Describe(s.Drain()) == V{"entered:b:v@3600000"});
  CHECK(s.IsMember("b", "v"));
}

TEST_CASE("maxDwell stamps a deadline at enteredAt + maxDwell") {
  Scenario s;
  s.Define(
      R"({"id":"b","maxDwell":"2h","criteria":{"type":"event","eventName":"x","check":"exists"}})");
  s.At(kMinute);
  s.Event("u", "x");
  CHECK(s.engine().NextDueMs() == kT0 + kMinute + 2 * kHour);
}

TEST_CASE("property operators compare JSON types strictly") {
  struct Case {
    const char* op;
    const char* value;
    PropertyValue actual;
    bool expected;
  };
  const std::vector<Case> cases = {
      {"eq", "10", PropertyValue::Number(10), true},
      {"eq", "10", PropertyValue::String("10"), false},
      {"eq", "\"10\"", PropertyValue::String("10"), true},
      {"eq", "true", PropertyValue::Bool(true), true},
      {"eq", "true", PropertyValue::Number(1), false},
      {"neq", "10", PropertyValue::String("10"), true},
      {"neq", "10", PropertyValue::Number(10), false},
      {"gt", "5", PropertyValue::Number(6), true},
      {"gt", "5", PropertyValue::String("6"), false},
      {"gte", "5", PropertyValue::Number(5), true},
      {"lt", "5", PropertyValue::Number(4.5), true},
      {"lt", "5", PropertyValue::Bool(false), false},
      {"lte", "5", PropertyValue::Number(5), true},
      {"contains", "\"ell\"", PropertyValue::String("hello"), true},
      {"contains", "\"1\"", PropertyValue::Number(1), false},
      {"exists", nullptr, PropertyValue::Number(0), true},
      {"not_exists", nullptr, PropertyValue::String(""), false},
  };
  for (const Case& c : cases) {
    Scenario s;
    std::string criteria =
        std::string(R"({"type":"property","property":"p","operator":")") + c.op + "\"";
    if (c.value) criteria += std::string(",\"value\":") + c.value;
    criteria += "}";
    // not_exists alone is an all-negative definition: pair it with a positive leg.
    if (std::string(c.op) == "not_exists" || std::string(c.op) == "neq") {
      criteria = R"({"type":"composite","operator":"and","conditions":[)" + criteria +
                 R"(,{"type":"event","eventName":"x","check":"exists"}]})";
    }
    s.Define(R"({"id":"b","criteria":)" + criteria + "}");
    s.Event("u", "x", {{"p", c.actual}});
    INFO(c.op << " " << (c.value ? c.value : ""));
    CHECK(s.IsMember("b", "u") == c.expected);
  }
}

TEST_CASE("a missing property satisfies neq and not_exists only") {
  Scenario s;
  s.Define(R"({"id":"neq","criteria":{"type":"composite","operator":"and","conditions":[
    {"type":"property","property":"p","operator":"neq","value":1},
    {"type":"event","eventName":"x","check":"exists"}]}})");
  s.Define(
      R"({"id":"gt","criteria":{"type":"property","property":"p","operator":"gt","value":1}})");
  s.Event("u", "x");
  CHECK(s.IsMember("neq", "u"));
  CHECK_FALSE(s.IsMember("gt", "u"));
}

TEST_CASE("count without operator means more than zero") {
  Scenario s;
  s.Define(R"({"id":"b","criteria":{"type":"event","eventName":"buy","check":"count"}})");
  s.Event("u", "view");
  CHECK_FALSE(s.IsMember("b", "u"));
  s.Event("u", "buy");
  CHECK(s.IsMember("b", "u"));
}

TEST_CASE("nested and/or composites") {
  Scenario s;
  s.Define(R"({"id":"b","criteria":{"type":"composite","operator":"or","conditions":[
    {"type":"property","property":"vip","operator":"eq","value":true},
    {"type":"composite","operator":"and","conditions":[
      {"type":"event","eventName":"buy","check":"count","operator":"gte","value":2},
      {"type":"property","property":"country","operator":"eq","value":"NL"}]}]}})");
  s.Event("a", "buy", {{"vip", PropertyValue::Bool(true)}});
  s.Event("b", "buy", {{"country", PropertyValue::String("NL")}});
  s.Event("c", "buy", {{"country", PropertyValue::String("DE")}});
  s.Event("c", "buy");
  CHECK(s.IsMember("b", "a"));
  CHECK_FALSE(s.IsMember("b", "b"));
  CHECK_FALSE(s.IsMember("b", "c"));
  s.Event("b", "buy");
  CHECK(s.IsMember("b", "b"));
}

TEST_CASE("an idempotencyKey seen before makes a duplicate, also after reopening") {
  Scenario s;
  s.Define(kPowerUsers);
  CHECK_FALSE(s.Event("u", "used", {}, std::nullopt, "k1").duplicate);
  CHECK(s.Event("u", "used", {}, std::nullopt, "k1").duplicate);
  s.Reopen();
  CHECK(s.Event("u", "used", {}, std::nullopt, "k1").duplicate);
  CHECK_FALSE(s.Event("u", "used", {}, std::nullopt, "k2").duplicate);
  CHECK_FALSE(s.IsMember("power", "u"));  // two counted events, not four
  s.Event("u", "used");
  CHECK(s.IsMember("power", "u"));
}

TEST_CASE("a deleted contact drops out silently and later events are refused") {
  Scenario s;
  s.Define(kPowerUsers);
  for (int i = 0; i < 3; ++i) s.Event("u", "used");
  s.Drain();
  CHECK(s.Count("power") == 1);
  RequireOk(s.engine().DeleteContact("u"));
  CHECK(s.Count("power") == 0);
  CHECK(s.Drain().empty());  // no left
  EventInput in{"u", "used", std::nullopt, std::nullopt, {}, std::nullopt};
  IngestResult r;
  Status status = s.engine().Ingest(in, &r);
  CHECK(status.code() == StatusCode::kFailedPrecondition);
  CHECK(status.field() == "userId");
  std::vector<MembershipRecord> memberships;
  CHECK(s.engine().UserMemberships("u", &memberships).code() == StatusCode::kNotFound);
  s.Reopen();
  CHECK(s.engine().Ingest(in, &r).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("manual buckets change only by add and remove") {
  Scenario s;
  s.Define(R"({"id":"vip","kind":"manual","entryLimit":"once"})");
  RequireOk(s.engine().AddMember("vip", "u"));
  RequireOk(s.engine().AddMember("vip", "u"));  // already a member: no-op
  s.Event("u", "anything");
  RequireOk(s.engine().RemoveMember("vip", "u"));
  CHECK(s.engine().RemoveMember("vip", "u").code() == StatusCode::kNotFound);
  RequireOk(s.engine().AddMember("vip", "u"));
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:vip:u@0", "left:vip:u@0:manual"});
  CHECK(t[0].source == MembershipSource::kManual);
  Member m;
  RequireOk(s.engine().GetMember("vip", "u", &m));
  CHECK(m.entry_count == 2);  // the second entry exists, but `once` withheld its entered
  // Dynamic buckets refuse manual membership.
  s.Define(kPowerUsers);
  CHECK(s.engine().AddMember("power", "u").code() == StatusCode::kFailedPrecondition);
  CHECK(s.engine().AddMember("nope", "u").code() == StatusCode::kNotFound);
}

TEST_CASE("bad inputs are refused naming the field and change nothing") {
  Scenario s;
  s.Define(kPowerUsers);
  const StateInfo before = s.engine().State();
  IngestResult r;
  auto refuse = [&](EventInput in, const std::string& field) {
    Status status = s.engine().Ingest(in, &r);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    CHECK(status.field() == field);
  };
  refuse({"", "used", {}, {}, {}, {}}, "userId");
  refuse({std::string(257, 'u'), "used", {}, {}, {}, {}}, "userId");
  refuse({"u", "", {}, {}, {}, {}}, "event");
  refuse({"u", "bucket:entered:power", {}, {}, {}, {}}, "event");
  refuse({"u", std::string(201, 'e'), {}, {}, {}, {}}, "event");
  refuse({"u", "used", {}, {}, {}, std::string()}, "idempotencyKey");
  refuse({"u", "used", TimeMs{-1}, {}, {}, {}}, "occurredAt");
  SweepResult sweep;
  CHECK(s.engine().AdvanceClock(INT64_MAX, &sweep).code() == StatusCode::kInvalidArgument);
  CHECK(s.engine().AdvanceClock(kInstantMsMax + 1, &sweep).code() == StatusCode::kInvalidArgument);
  CHECK(s.engine().State().digest == before.digest);
  CHECK(s.engine().State().log_seq == before.log_seq);

  BatchResult batch;
  std::vector<EventInput> items = {
      {"a", "used", {}, {}, {}, {}}, {"", "used", {}, {}, {}, {}}, {"b", "used", {}, {}, {}, {}}};
  RequireOk(s.engine().IngestBatch(items, &batch));
  CHECK(batch.accepted == 2);
  REQUIRE(batch.rejected.size() == 1);
  CHECK(batch.rejected[0].index == 1);
  CHECK(batch.rejected[0].error.field() == "userId");
}

TEST_CASE("a manual clock starts from 1970 to the end of year 9999") {
  // The state keeps the clock's instants in 48 bits (engine/state/time48.h): a start outside
  // the range is refused at open, before anything is logged.
  for (const TimeMs start : {TimeMs{-1}, kInstantMsMax + 1}) {
    TempDir dir;
    Options options;
    options.data_dir = dir.path();
    options.clock = ClockMode::kManual;
    options.start_time_ms = start;
    std::unique_ptr<Engine> engine;
    const Status status = Engine::Open(options, &engine);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    CHECK(status.field() == "start_time_ms");
  }
  TempDir dir;
  Options options;
  options.data_dir = dir.path();
  options.clock = ClockMode::kManual;
  options.start_time_ms = kInstantMsMax;
  std::unique_ptr<Engine> engine = OpenOrFail(options);
  RequireOk(engine->DefineBucket(
      R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"exists"}})",
      DefineMode::kCreateOrReplace, std::nullopt, nullptr));
  EventInput in;
  in.user_id = "u";
  in.event = "x";
  IngestResult result;
  RequireOk(engine->Ingest(in, &result));
  CHECK(result.transitions == 1);
  Member member;
  RequireOk(engine->GetMember("b", "u", &member));
  CHECK(member.entered_at == kInstantMsMax);  // the last instant, kept exactly
}

TEST_CASE("refused definitions name the field path") {
  Scenario s;
  bool created = false;
  auto refuse = [&](const std::string& json, const std::string& field) {
    Status status = s.engine().DefineBucket(json, DefineMode::kCreate, std::nullopt, &created);
    INFO(json);
    CHECK(status.code() == StatusCode::kInvalidArgument);
    CHECK(status.field() == field);
  };
  refuse(R"({"id":"bad id","criteria":{"type":"event","eventName":"x","check":"exists"}})", "id");
  refuse(R"({"id":"b"})", "criteria");
  refuse(
      R"({"id":"b","kind":"manual","criteria":{"type":"event","eventName":"x","check":"exists"}})",
      "criteria");
  refuse(R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"not_exists"}})",
         "criteria");
  refuse(R"({"id":"b","criteria":{"type":"event","eventName":"bucket:x","check":"exists"}})",
         "criteria.eventName");
  refuse(
      R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"count","operator":"gte"}})",
      "criteria.value");
  refuse(
      R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"count","operator":"gte","value":-1}})",
      "criteria.value");
  refuse(
      R"({"id":"b","maxDwell":"1h","minDwell":"2h","criteria":{"type":"event","eventName":"x","check":"exists"}})",
      "maxDwell");
  refuse(
      R"({"id":"b","dwell":[{"after":"1d","every":"1d"}],"criteria":{"type":"event","eventName":"x","check":"exists"}})",
      "dwell[0]");
  refuse(R"({"id":"b","crteria":{}})", "crteria");
  CHECK(s.engine().ListBuckets().empty());
}

TEST_CASE("a contact's first event evaluates every bucket, joining an absence bucket") {
  Scenario s;
  s.Define(
      R"({"id":"no-purchase","criteria":{"type":"event","eventName":"purchase","check":"not_exists","within":"7d"}})");
  s.Event("u", "signup");
  CHECK(Describe(s.Drain()) == V{"entered:no-purchase:u@0"});
  s.Event("u", "purchase");
  CHECK(Describe(s.Drain()) == V{"left:no-purchase:u@0:criteria"});
}

TEST_CASE("a user's memberships list active and past ones") {
  Scenario s;
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"on","operator":"eq","value":true}})");
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(kHour);
  s.Event("u", "x", {{"on", PropertyValue::Bool(false)}});
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  std::vector<MembershipRecord> m;
  RequireOk(s.engine().UserMemberships("u", &m));
  REQUIRE(m.size() == 2);
  CHECK_FALSE(m[0].active);
  CHECK(m[0].left_at == kT0 + kHour);
  CHECK(m[0].reason == LeaveReason::kCriteria);
  CHECK(m[1].active);
  CHECK(m[1].entry_count == 2);
}

TEST_CASE("members are paged by userId with a keyset cursor") {
  Scenario s;
  s.Define(R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"exists"}})");
  for (int i = 0; i < 25; ++i) s.Event("user-" + std::to_string(100 + i), "x");
  std::vector<std::string> seen;
  std::string cursor;
  for (int pages = 0;; ++pages) {
    REQUIRE(pages < 10);
    MembersPage page;
    RequireOk(s.engine().Members("b", cursor, 10, &page));
    for (auto& m : page.members) seen.push_back(m.user_id);
    if (!page.next_cursor) break;
    cursor = *page.next_cursor;
  }
  REQUIRE(seen.size() == 25);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
}

TEST_CASE("after Close() every Status call fails as closed; a second Close() is OK") {
  Scenario s;
  s.Define(R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"exists"}})");
  s.Event("u", "x");
  Engine& e = s.engine();
  RequireOk(e.Close());
  RequireOk(e.Close());
  const auto closed = [](const Status& st) {
    INFO(st.ToString());
    return st.code() == StatusCode::kFailedPrecondition &&
           st.message().find("closed") != std::string::npos;
  };
  IngestResult r;
  CHECK(closed(e.Ingest({"v", "x", std::nullopt, std::nullopt, {}, {}}, &r)));
  BatchResult batch;
  CHECK(closed(e.IngestBatch({}, &batch)));
  CHECK(closed(e.DeleteContact("u")));
  CHECK(closed(
      e.DefineBucket(R"({"id":"c","kind":"manual"})", DefineMode::kCreate, std::nullopt, nullptr)));
  CHECK(closed(e.SetBucketEnabled("b", false)));
  CHECK(closed(e.DeleteBucket("b")));
  CHECK(closed(e.AddMember("b", "u")));
  CHECK(closed(e.RemoveMember("b", "u")));
  CHECK(closed(e.EndGroup()));
  CHECK(closed(e.EndGroupPipelined(nullptr)));
  CHECK(closed(e.AwaitGroup()));
  SweepResult sweep;
  CHECK(closed(e.AdvanceClock(kT0 + kDay, &sweep)));
  CHECK(closed(e.Sweep(&sweep)));
  BucketInfo info;
  CHECK(closed(e.GetBucket("b", &info)));
  uint64_t count = 0;
  CHECK(closed(e.Count("b", &count)));
  BucketMetrics metrics;
  CHECK(closed(e.Metrics("b", &metrics)));
  MembersPage page;
  CHECK(closed(e.Members("b", "", 10, &page)));
  Member member;
  CHECK(closed(e.GetMember("b", "u", &member)));
  std::vector<MembershipRecord> memberships;
  CHECK(closed(e.UserMemberships("u", &memberships)));
  std::vector<Transition> transitions;
  CHECK(closed(e.ReadTransitions(0, 10, &transitions)));
  SnapshotInfo snapshot;
  CHECK(closed(e.TakeSnapshot(&snapshot)));
  CHECK(closed(e.Health()));
}

TEST_CASE("ValidateEvent names the field of each rule Ingest applies") {
  const auto field = [](EventInput in) { return ValidateEvent(in).field(); };
  const EventInput good{"u", "x", std::nullopt, std::nullopt, {}, {}};
  RequireOk(ValidateEvent(good));
  EventInput in = good;
  in.user_id = "";
  CHECK(field(in) == "userId");
  in = good;
  in.user_id = std::string(kUserIdBytesMax + 1, 'u');
  CHECK(field(in) == "userId");
  in = good;
  in.user_id = "\xff";
  CHECK(field(in) == "userId");
  in = good;
  in.event = std::string(kReservedEventPrefix) + "entered:b";
  CHECK(field(in) == "event");
  in = good;
  in.event = std::string(kEventNameBytesMax + 1, 'e');
  CHECK(field(in) == "event");
  in = good;
  in.occurred_at_ms = -1;
  CHECK(field(in) == "occurredAt");
  in = good;
  in.idempotency_key = std::string(kIdempotencyKeyBytesMax + 1, 'k');
  CHECK(field(in) == "idempotencyKey");
  in = good;
  in.contact_properties = {{"", PropertyValue::Bool(true)}};
  CHECK(field(in) == "contactProperties");
  // What ValidateEvent refuses, Ingest refuses with the same field.
  Scenario s;
  IngestResult r;
  CHECK(s.engine().Ingest(in, &r).field() == "contactProperties");
}
