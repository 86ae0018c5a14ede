// The criteria of SPEC §3b on the manual clock: event properties and `where` filters,
// aggregates, time properties, first seen, sequences and bucket legs. Every flip the clock
// alone causes happens at its exact instant; replays and snapshots reproduce the state.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include <xxhash.h>

#include "engine/fold/criteria_eval.h"
#include "engine/state/digest.h"
#include "tests/state_test_support.h"
#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;
using V = std::vector<std::string>;

namespace {

PropertyPatch Str(const std::string& key, const std::string& value) {
  return {key, PropertyValue::String(value)};
}
PropertyPatch Num(const std::string& key, double value) {
  return {key, PropertyValue::Number(value)};
}

Status DefineStatus(Scenario& s, const std::string& json) {
  return s.engine().DefineBucket(json, DefineMode::kCreateOrReplace, std::nullopt, nullptr);
}

}  // namespace

TEST_CASE("a where filter counts only the matching events, and ages them out exactly") {
  Scenario s;
  s.Define(R"({"id":"pro-buyers","criteria":{"type":"event","eventName":"purchase",
    "check":"exists","within":"30d","where":[{"property":"plan","operator":"eq","value":"pro"}]}})");
  s.At(kHour);
  s.Fire("u", "purchase", {Str("plan", "basic")});
  s.Fire("v", "purchase", {});  // no plan at all
  CHECK(s.Drain().empty());
  s.At(2 * kHour);
  s.Fire("u", "purchase", {Str("plan", "pro"), Num("amount", 20)});
  CHECK(Describe(s.Drain()) == V{"entered:pro-buyers:u@7200000"});
  s.At(40 * kDay);
  CHECK(Describe(s.Drain()) ==
        V{"left:pro-buyers:u@" + std::to_string(2 * kHour + 30 * kDay) + ":criteria"});
  // An unfiltered leg on the same name still sees every event.
  s.Define(R"({"id":"buyers","criteria":{"type":"event","eventName":"purchase","check":"count",
    "operator":"gte","value":2}})");
  CHECK(s.IsMember("buyers", "u"));
  CHECK_FALSE(s.IsMember("buyers", "v"));
  // The filter's stream is the engine's own: a contact's events list names only.
  UserInfo user;
  RequireOk(s.engine().GetUser("u", &user));
  REQUIRE(user.events.size() == 1);
  CHECK(user.events[0].event == "purchase");
  CHECK(user.events[0].count == 2);
}

TEST_CASE("a new filter sees the events folded before it was defined") {
  Scenario s;
  s.At(kHour);
  s.Fire("u", "purchase", {Str("plan", "pro")});
  s.Fire("w", "purchase", {Str("plan", "basic")});
  s.At(2 * kHour);
  s.Define(R"({"id":"pro-buyers","dwell":[{"after":"1d"}],"criteria":{"type":"event",
    "eventName":"purchase","check":"exists","where":[{"property":"plan","operator":"eq",
    "value":"pro"}]}})");
  CHECK(s.IsMember("pro-buyers", "u"));
  CHECK_FALSE(s.IsMember("pro-buyers", "w"));
  Member m;
  RequireOk(s.engine().GetMember("pro-buyers", "u", &m));
  CHECK(m.source == MembershipSource::kBackfill);
  // The anchor is the matching event's instant, so the dwell fires a day after it.
  REQUIRE(m.dwell_anchor_at.has_value());
  CHECK(*m.dwell_anchor_at == kT0 + kHour);
  s.At(kDay + kHour);
  CHECK(Describe(s.Drain()) ==
        V{"dwell:pro-buyers:u@" + std::to_string(kDay + kHour) + ":after-86400000#1"});
}

TEST_CASE("sum within a window: joins when it reaches the value, leaves when a part ages out") {
  Scenario s;
  s.Define(R"({"id":"big-spenders","criteria":{"type":"event","eventName":"purchase",
    "check":"sum","property":"amount","operator":"gte","value":100,"within":"30d"}})");
  s.At(0);
  s.Fire("u", "purchase", {Num("amount", 60)});
  s.Fire("u", "purchase", {Str("amount", "500")});  // a string: contributes nothing
  CHECK(s.Drain().empty());
  s.At(10 * kDay);
  s.Fire("u", "purchase", {Num("amount", 50)});
  CHECK(Describe(s.Drain()) == V{"entered:big-spenders:u@" + std::to_string(10 * kDay)});
  // At 30d the 60 ages out: 50 < 100.
  s.At(30 * kDay - 1);
  CHECK(s.IsMember("big-spenders", "u"));
  s.At(35 * kDay);
  CHECK(Describe(s.Drain()) == V{"left:big-spenders:u@" + std::to_string(30 * kDay) + ":criteria"});
}

TEST_CASE("a distinct value's hash is XXH3 of its type's byte and its contents") {
  // Stored in snapshots and hashed into the digest: the bytes hashed must never change.
  auto expected = [](const PropertyValue& v, std::string contents) {
    const std::string bytes = std::string(1, static_cast<char>(v.type)) + contents;
    return XXH3_64bits(bytes.data(), bytes.size());
  };
  auto number_bytes = [](double x) {
    std::string bytes(sizeof x, '\0');
    std::memcpy(bytes.data(), &x, sizeof x);
    return bytes;
  };
  CHECK(ValueHash(PropertyValue::Bool(true)) == expected(PropertyValue::Bool(true), "1"));
  CHECK(ValueHash(PropertyValue::Bool(false)) == expected(PropertyValue::Bool(false), "0"));
  CHECK(ValueHash(PropertyValue::Number(12.5)) ==
        expected(PropertyValue::Number(12.5), number_bytes(12.5)));
  CHECK(ValueHash(PropertyValue::Number(-0.0)) == ValueHash(PropertyValue::Number(0)));
  CHECK(ValueHash(PropertyValue::Number(1)) != ValueHash(PropertyValue::String("1")));
  for (size_t n : {0, 1, 14, 15, 62, 63, 64, 200}) {
    const std::string text(n, 'x');
    CHECK(ValueHash(PropertyValue::String(text)) == expected(PropertyValue::String(text), text));
  }
}

TEST_CASE("avg, min and max over all time, and an aggregate over nothing is false") {
  Scenario s;
  s.Define(R"({"id":"avg","criteria":{"type":"event","eventName":"rate","check":"avg",
    "property":"stars","operator":"gte","value":4}})");
  s.Define(R"({"id":"low","criteria":{"type":"event","eventName":"rate","check":"min",
    "property":"stars","operator":"lte","value":1}})");
  s.Define(R"({"id":"top","criteria":{"type":"event","eventName":"rate","check":"max",
    "property":"stars","operator":"eq","value":5}})");
  s.Define(R"({"id":"small","criteria":{"type":"event","eventName":"rate","check":"sum",
    "property":"stars","operator":"lt","value":100}})");
  s.Fire("u", "rate", {Num("stars", 5)});
  s.Fire("u", "rate", {Num("stars", 4)});
  s.Fire("x", "rate", {Str("stars", "five")});
  CHECK(s.IsMember("avg", "u"));
  CHECK(s.IsMember("top", "u"));
  CHECK_FALSE(s.IsMember("low", "u"));
  CHECK(s.IsMember("small", "u"));
  CHECK_FALSE(s.IsMember("small", "x"));  // no contributions: false even for `lt`
  s.Fire("u", "rate", {Num("stars", 1)});
  CHECK_FALSE(s.IsMember("avg", "u"));  // 10 / 3
  CHECK(s.IsMember("low", "u"));
}

TEST_CASE("distinct values in a window join and leave exactly") {
  Scenario s;
  s.Define(R"({"id":"explorers","criteria":{"type":"event","eventName":"view","check":"distinct",
    "property":"category","operator":"gte","value":3,"within":"7d"}})");
  s.At(0);
  s.Fire("u", "view", {Str("category", "shoes")});
  s.At(kDay);
  s.Fire("u", "view", {Str("category", "hats")});
  s.Fire("u", "view", {Str("category", "hats")});
  s.At(2 * kDay);
  s.Fire("u", "view", {Num("category", 7)});
  CHECK(Describe(s.Drain()) == V{"entered:explorers:u@" + std::to_string(2 * kDay)});
  // shoes ages out at 7d.
  s.At(9 * kDay);
  CHECK(Describe(s.Drain()) == V{"left:explorers:u@" + std::to_string(7 * kDay) + ":criteria"});
}

TEST_CASE("a time property joins at exactly t - offset and leaves when the value changes") {
  Scenario s;
  s.Define(R"({"id":"trial-ending","criteria":{"type":"property","property":"trialEndsAt",
    "operator":"before","value":"+3d"}})");
  s.Define(R"({"id":"trial-long","criteria":{"type":"property","property":"trialEndsAt",
    "operator":"after","value":"+3d"}})");
  s.At(0);
  // Ends at T0 + 10d: within 3 days of now from T0 + 7d on.
  s.Event("u", "signup", {{"trialEndsAt", PropertyValue::String("2026-11-11T00:00:00Z")}});
  s.Event("v", "signup", {{"trialEndsAt", PropertyValue::Number(double(kT0 + 2 * kDay))}});
  s.Event("w", "signup", {{"trialEndsAt", PropertyValue::String("soon")}});  // not a time
  auto t = s.Drain();
  CHECK(Describe(t) == V{"entered:trial-long:u@0", "entered:trial-ending:v@0"});
  s.At(8 * kDay);
  t = s.Drain();
  // One instant: in bucket order.
  REQUIRE(Describe(t) == V{"entered:trial-ending:u@" + std::to_string(7 * kDay),
                           "left:trial-long:u@" + std::to_string(7 * kDay) + ":criteria"});
  CHECK(t[0].source == MembershipSource::kReconcile);
  CHECK_FALSE(s.IsMember("trial-ending", "w"));
  CHECK_FALSE(s.IsMember("trial-long", "w"));
  // The trial is extended: u leaves at once.
  s.Event("u", "extend", {{"trialEndsAt", PropertyValue::Number(double(kT0 + 60 * kDay))}});
  CHECK(Describe(s.Drain()) == V{"left:trial-ending:u@" + std::to_string(8 * kDay) + ":criteria",
                                 "entered:trial-long:u@" + std::to_string(8 * kDay)});
}

TEST_CASE("first_seen holds for W after the first matching event, and late events move it") {
  Scenario s;
  s.Define(R"({"id":"new-users","criteria":{"type":"event","eventName":"app.opened",
    "check":"first_seen","within":"7d"}})");
  s.At(kDay);
  s.Event("u", "app.opened");
  s.At(3 * kDay);
  s.Event("u", "app.opened");  // not the first: changes nothing
  CHECK(Describe(s.Drain()) == V{"entered:new-users:u@" + std::to_string(kDay)});
  s.At(9 * kDay);
  CHECK(Describe(s.Drain()) == V{"left:new-users:u@" + std::to_string(8 * kDay) + ":criteria"});
  // A late first event 8 days ago: v was never new within the week.
  EventInput late;
  late.user_id = "v";
  late.event = "app.opened";
  late.occurred_at_ms = kT0 + kDay;
  IngestResult r;
  RequireOk(s.engine().Ingest(late, &r));
  CHECK(s.Drain().empty());
}

TEST_CASE("sequences: abandoned joins at exactly t1 + X, completed on the last step") {
  Scenario s;
  const char* steps = R"("steps":[{"eventName":"checkout.started"},
    {"eventName":"payment.completed","where":[{"property":"status","operator":"eq","value":"ok"}]}])";
  s.Define(std::string(R"({"id":"abandoned","criteria":{"type":"sequence",)") + steps +
           R"(,"within":"15m","outcome":"abandoned"}})");
  s.Define(std::string(R"({"id":"completed","criteria":{"type":"sequence",)") + steps +
           R"(,"within":"15m","outcome":"completed","lookback":"1d"}})");
  s.At(0);
  s.Fire("a", "checkout.started", {});
  s.Fire("b", "checkout.started", {});
  s.At(10 * kMinute);
  s.Fire("b", "payment.completed", {Str("status", "failed")});  // filtered out
  s.Fire("a", "payment.completed", {Str("status", "ok")});
  CHECK(Describe(s.Drain()) == V{"entered:completed:a@" + std::to_string(10 * kMinute)});
  s.At(kHour);
  CHECK(Describe(s.Drain()) == V{"entered:abandoned:b@" + std::to_string(15 * kMinute)});
  // Paying after the deadline does not complete it.
  s.Fire("b", "payment.completed", {Str("status", "ok")});
  CHECK(s.Drain().empty());
  // The lookback ends the completed one a day after its start.
  s.At(2 * kDay);
  CHECK(Describe(s.Drain()) == V{"left:completed:a@" + std::to_string(kDay) + ":criteria"});
  // A new start resets: b leaves abandoned at once, and may abandon again.
  s.Fire("b", "checkout.started", {});
  CHECK(Describe(s.Drain()) == V{"left:abandoned:b@" + std::to_string(2 * kDay) + ":criteria"});
  s.At(3 * kDay);
  CHECK(Describe(s.Drain()) == V{"entered:abandoned:b@" + std::to_string(2 * kDay + 15 * kMinute)});
}

TEST_CASE("bucket legs: a reader follows its inner bucket at the same instant, inner first") {
  Scenario s;
  s.Define(R"({"id":"high-value","criteria":{"type":"event","eventName":"purchase","check":"sum",
    "property":"amount","operator":"gte","value":100,"within":"30d"}})");
  s.Define(R"({"id":"nudge","criteria":{"type":"composite","operator":"and","conditions":[
    {"type":"event","eventName":"app.opened","check":"exists"},
    {"type":"bucket","bucketId":"high-value","check":"not_member"}]}})");
  s.Define(R"({"id":"loyal","criteria":{"type":"bucket","bucketId":"high-value","check":"member",
    "for":"7d"}})");
  s.At(0);
  s.Event("u", "app.opened");
  CHECK(Describe(s.Drain()) == V{"entered:nudge:u@0"});
  s.At(kDay);
  s.Fire("u", "purchase", {Num("amount", 150)});
  CHECK(Describe(s.Drain()) == V{"entered:high-value:u@" + std::to_string(kDay),
                                 "left:nudge:u@" + std::to_string(kDay) + ":criteria"});
  // loyal: a member of high-value for 7 days, at exactly enteredAt + 7d.
  s.At(10 * kDay);
  CHECK(Describe(s.Drain()) == V{"entered:loyal:u@" + std::to_string(8 * kDay)});
  // The purchase ages out at 31d: high-value leaves, and both readers follow at that instant.
  s.At(40 * kDay);
  const auto t = s.Drain();
  CHECK(Describe(t) == V{"left:high-value:u@" + std::to_string(31 * kDay) + ":criteria",
                         "entered:nudge:u@" + std::to_string(31 * kDay),
                         "left:loyal:u@" + std::to_string(31 * kDay) + ":criteria"});
  CHECK(t[1].source == MembershipSource::kReconcile);
}

TEST_CASE("bucket legs: unknown buckets and cycles are refused, a read bucket is not deleted") {
  Scenario s;
  s.Define(R"({"id":"a","criteria":{"type":"event","eventName":"x","check":"exists"}})");
  Status st = DefineStatus(
      s, R"({"id":"b","criteria":{"type":"bucket","bucketId":"nope","check":"member"}})");
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(st.message(), Catch::Contains("does not exist"));
  s.Define(R"({"id":"b","criteria":{"type":"bucket","bucketId":"a","check":"member"}})");
  st =
      DefineStatus(s, R"({"id":"a","criteria":{"type":"bucket","bucketId":"b","check":"member"}})");
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK_THAT(st.message(), Catch::Contains("cycle"));
  st =
      DefineStatus(s, R"({"id":"a","criteria":{"type":"bucket","bucketId":"a","check":"member"}})");
  CHECK_THAT(st.message(), Catch::Contains("itself"));
  st = s.engine().DeleteBucket("a");
  CHECK(st.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(st.message(), Catch::Contains("\"b\""));
  RequireOk(s.engine().DeleteBucket("b"));
  RequireOk(s.engine().DeleteBucket("a"));
}

TEST_CASE("malformed §3b shapes are refused with the field path") {
  Scenario s;
  const auto refusal = [&](const std::string& criteria) {
    const Status st = DefineStatus(s, R"({"id":"x","criteria":)" + criteria + "}");
    REQUIRE_FALSE(st.ok());
    return std::string(st.field()) + ": " + st.message();
  };
  CHECK_THAT(
      refusal(R"({"type":"event","eventName":"p","check":"sum","operator":"gte","value":1})"),
      Catch::StartsWith("criteria.property: required"));
  CHECK_THAT(refusal(R"({"type":"event","eventName":"p","check":"sum","property":"a"})"),
             Catch::StartsWith("criteria.operator: required"));
  CHECK_THAT(
      refusal(
          R"({"type":"event","eventName":"p","check":"exists","where":[{"property":"a","operator":"before","value":"1d"}]})"),
      Catch::StartsWith("criteria.where[0].operator: must be one of"));
  CHECK_THAT(refusal(R"({"type":"event","eventName":"p","check":"exists","where":[]})"),
             Catch::StartsWith("criteria.where: must not be empty"));
  CHECK_THAT(refusal(R"({"type":"event","eventName":"p","check":"exists","property":"a"})"),
             Catch::StartsWith("criteria.property: only allowed"));
  CHECK_THAT(refusal(R"({"type":"event","eventName":"p","check":"first_seen"})"),
             Catch::StartsWith("criteria.within: required"));
  CHECK_THAT(
      refusal(
          R"({"type":"event","eventName":"p","check":"distinct","property":"a","operator":"gte","value":256})"),
      Catch::StartsWith("criteria.value: must be an integer from 0 to 255"));
  CHECK_THAT(
      refusal(
          R"({"type":"sequence","steps":[{"eventName":"a"}],"within":"1h","outcome":"completed"})"),
      Catch::StartsWith("criteria.steps: must have 2 to 5 steps"));
  CHECK_THAT(
      refusal(
          R"({"type":"sequence","steps":[{"eventName":"a"},{"eventName":"b"},{"eventName":"c"},{"eventName":"d"},{"eventName":"e"},{"eventName":"f"}],"within":"1h","outcome":"completed"})"),
      Catch::StartsWith("criteria.steps: must have 2 to 5 steps"));
  CHECK_THAT(
      refusal(
          R"({"type":"sequence","steps":[{"eventName":"a"},{"eventName":"b","wher":[]}],"within":"1h","outcome":"completed"})"),
      Catch::StartsWith("criteria.steps[1].wher: unknown field"));
  CHECK_THAT(
      refusal(
          R"({"type":"sequence","steps":[{"eventName":"a"},{"eventName":"b"}],"outcome":"completed"})"),
      Catch::StartsWith("criteria.within: required"));
  CHECK_THAT(refusal(R"({"type":"property","property":"t","operator":"before","value":"soon"})"),
             Catch::StartsWith("criteria.value: must be a signed duration"));
  CHECK_THAT(refusal(R"({"type":"bucket","bucketId":"a","check":"in"})"),
             Catch::StartsWith("criteria.check: must be one of"));
  CHECK_THAT(refusal(R"({"type":"bucket","bucketId":"a","check":"not_member"})"),
             Catch::StartsWith("criteria: every condition is negative"));
}

TEST_CASE("event properties are checked: scalars only, at most 64 keys") {
  Scenario s;
  EventInput in;
  in.user_id = "u";
  in.event = "e";
  in.properties = {{"nested", PropertyValue{PropertyValue::Type::kObject, false, 0, "{}"}}};
  IngestResult r;
  Status st = s.engine().Ingest(in, &r);
  CHECK(st.field() == "properties.nested");
  in.properties.clear();
  for (int i = 0; i < 65; ++i) in.properties.push_back(Num("k" + std::to_string(i), i));
  st = s.engine().Ingest(in, &r);
  CHECK(st.field() == "properties");
  CHECK(s.engine().State().log_seq == 0);
}

TEST_CASE("pending §3b flips survive a restart") {
  Scenario s;
  s.Define(R"({"id":"abandoned","criteria":{"type":"sequence","steps":[{"eventName":"start"},
    {"eventName":"pay"}],"within":"15m","outcome":"abandoned"}})");
  s.Define(R"({"id":"spend","criteria":{"type":"event","eventName":"buy","check":"sum",
    "property":"n","operator":"gte","value":10,"within":"1h"}})");
  s.At(0);
  s.Fire("u", "start", {});
  s.Fire("u", "buy", {Num("n", 12)});
  CHECK(Describe(s.Drain()) == V{"entered:spend:u@0"});
  s.Reopen();
  s.At(2 * kHour);
  CHECK(Describe(s.Drain()) == V{"entered:abandoned:u@" + std::to_string(15 * kMinute),
                                 "left:spend:u@" + std::to_string(kHour) + ":criteria"});
}

namespace {

const std::vector<std::string> kBeyondDefinitions = {
    R"({"id":"pro","criteria":{"type":"event","eventName":"buy","check":"count","operator":"gte","value":2,"within":"1d","where":[{"property":"plan","operator":"eq","value":"pro"}]}})",
    R"({"id":"spend","dwell":[{"every":"6h"}],"criteria":{"type":"event","eventName":"buy","check":"sum","property":"amount","operator":"gte","value":100,"within":"2d"}})",
    R"({"id":"variety","criteria":{"type":"event","eventName":"buy","check":"distinct","property":"plan","operator":"gte","value":2,"within":"1d"}})",
    R"({"id":"new","criteria":{"type":"event","eventName":"open","check":"first_seen","within":"3d"}})",
    R"({"id":"ending","criteria":{"type":"property","property":"ends","operator":"before","value":"+1d"}})",
    R"({"id":"abandon","minDwell":"1h","criteria":{"type":"sequence","steps":[{"eventName":"open"},{"eventName":"buy","where":[{"property":"amount","operator":"gt","value":10}]}],"within":"2h","outcome":"abandoned","lookback":"2d"}})",
    R"({"id":"nudge","maxDwell":"3d","criteria":{"type":"composite","operator":"and","conditions":[{"type":"event","eventName":"open","check":"exists","within":"1d"},{"type":"bucket","bucketId":"spend","check":"not_member"}]}})",
    R"({"id":"loyal","criteria":{"type":"bucket","bucketId":"spend","check":"member","for":"12h"}})",
};

// Returns the clock's offset at the end; a later run starts there.
TimeMs RunBeyondWorkload(Scenario& s, uint64_t seed, int steps, TimeMs t = 0) {
  std::mt19937_64 rng(seed);
  for (auto& d : kBeyondDefinitions) s.Define(d);
  const char* plans[] = {"pro", "basic", "team"};
  for (int i = 0; i < steps; ++i) {
    const std::string user = "u" + std::to_string(rng() % 30);
    switch (rng() % 25) {
      case 0:
        t += static_cast<TimeMs>(rng() % kDay);
        s.At(t);
        break;
      case 1:
        (void)s.engine().DeleteContact(user);
        break;
      case 2:  // a definition changes: the streams it reads are rebuilt from the log
        s.Define(
            rng() % 2
                ? kBeyondDefinitions[1]
                : R"({"id":"spend","criteria":{"type":"event","eventName":"buy","check":"avg","property":"amount","operator":"gte","value":40,"within":"1d","where":[{"property":"plan","operator":"neq","value":"team"}]}})");
        break;
      default: {
        t += static_cast<TimeMs>(rng() % (20 * kMinute));
        s.At(t);
        EventInput in;
        in.user_id = user;
        in.event = rng() % 3 == 0 ? "open" : "buy";
        in.properties.push_back(Str("plan", plans[rng() % 3]));
        if (rng() % 4) in.properties.push_back(Num("amount", double(rng() % 80)));
        if (rng() % 9 == 0) {
          in.contact_properties.push_back(
              {"ends", PropertyValue::Number(double(kT0 + t + TimeMs(rng() % (3 * kDay))))});
        }
        if (rng() % 6 == 0) in.occurred_at_ms = kT0 + t - static_cast<TimeMs>(rng() % kDay);
        IngestResult r;
        (void)s.engine().Ingest(in, &r);  // deleted contacts are refused: that is fine here
      }
    }
  }
  return t;
}

}  // namespace

TEST_CASE("a §3b workload replays, and loads from a snapshot plus tail, to the same digest") {
  Scenario s;
  const TimeMs end = RunBeyondWorkload(s, 11, 2500);
  const StateInfo live = s.engine().State();
  const auto stream = s.All();
  REQUIRE(stream.size() > 100);
  // Every kind of leg emitted something.
  for (const std::string bucket :
       {"pro", "spend", "variety", "new", "ending", "abandon", "nudge", "loyal"}) {
    INFO(bucket);
    CHECK(std::any_of(stream.begin(), stream.end(),
                      [&](const Transition& t) { return t.bucket_id == bucket; }));
  }
  s.Reopen();  // a full replay
  CHECK(s.engine().State().digest == live.digest);
  CHECK(s.All() == stream);

  // Snapshot, more of the workload, reopen: snapshot + tail equals the live state.
  SnapshotInfo info;
  RequireOk(s.engine().TakeSnapshot(&info));
  RunBeyondWorkload(s, 12, 800, end);
  const StateInfo live2 = s.engine().State();
  const auto stream2 = s.All();
  s.Reopen();
  CHECK(s.engine().State().digest == live2.digest);
  CHECK(s.All() == stream2);

  // A second engine fed the same inputs agrees.
  Scenario other;
  RunBeyondWorkload(other, 12, 800, RunBeyondWorkload(other, 11, 2500));
  CHECK(other.engine().State().digest == live2.digest);
}

TEST_CASE("the aggregate bounds: a window sums its newest 1,024 contributions") {
  Scenario s;
  s.Define(R"({"id":"all","criteria":{"type":"event","eventName":"e","check":"sum",
    "property":"n","operator":"gte","value":1024,"within":"30d"}})");
  s.Define(R"({"id":"beyond","criteria":{"type":"event","eventName":"e","check":"sum",
    "property":"n","operator":"gte","value":1025,"within":"30d"}})");
  s.Define(R"({"id":"count","criteria":{"type":"event","eventName":"e","check":"count",
    "operator":"gte","value":1100,"within":"30d"}})");
  s.Define(R"({"id":"total","criteria":{"type":"event","eventName":"e","check":"sum",
    "property":"n","operator":"gte","value":1100}})");
  for (int i = 0; i < 1100; ++i) {
    s.At(i * kSecond);
    s.Fire("u", "e", {Num("n", 1)});
  }
  // Documented (docs/design.md, "Aggregates"): the windowed sum is over the newest 1,024;
  // counts and all-time sums see every event.
  CHECK(s.IsMember("all", "u"));
  CHECK_FALSE(s.IsMember("beyond", "u"));
  CHECK(s.IsMember("count", "u"));
  CHECK(s.IsMember("total", "u"));
  // The newest 1,024 began at 76 s: the first of them ages out at 76 s + 30 d.
  s.At(30 * kDay + 76 * kSecond - 1);
  CHECK(s.IsMember("all", "u"));
  s.At(30 * kDay + 77 * kSecond);
  CHECK_FALSE(s.IsMember("all", "u"));
}

TEST_CASE("the distinct bound: past 256 values the capped count still decides exactly") {
  Scenario s;
  s.Define(R"({"id":"many","criteria":{"type":"event","eventName":"e","check":"distinct",
    "property":"v","operator":"gte","value":255,"within":"1000m"}})");
  // 300 distinct values, one a minute: 256 are kept (those seen most recently).
  for (int i = 0; i < 300; ++i) {
    s.At(i * kMinute);
    s.Fire("u", "e", {Num("v", i)});
  }
  CHECK(Describe(s.Drain()) == V{"entered:many:u@" + std::to_string(254 * kMinute)});
  // The true count falls to 254 when 46 values have aged out: value 45 at 45m + 1000m.
  s.At(2000 * kMinute);
  CHECK(Describe(s.Drain()) ==
        V{"left:many:u@" + std::to_string(45 * kMinute + 1000 * kMinute) + ":criteria"});
}

// SPEC §5's cadence independence, for the §3b legs: one seeded workload swept at different
// cadences gives the same transitions per (user, bucket) with the same `at`.
TEST_CASE("§3b legs: the sweep cadence changes only detectedAt") {
  struct Input {
    TimeMs at;
    std::string user;
    std::string event;
    double amount;
    std::string plan;
  };
  std::mt19937_64 rng(43);
  std::vector<Input> inputs;
  TimeMs t = 0;
  const char* plans[] = {"pro", "basic", "team"};
  for (int i = 0; i < 500; ++i) {
    t += static_cast<TimeMs>(rng() % (3 * kHour));
    inputs.push_back({t, "u" + std::to_string(rng() % 15), rng() % 3 == 0 ? "open" : "buy",
                      double(rng() % 60), plans[rng() % 3]});
  }
  const TimeMs end = t + 10 * kDay;
  std::vector<std::string> defs(kBeyondDefinitions.begin(), kBeyondDefinitions.end());
  // `every` dwell fires coalesce by cadence (SPEC §5's one exception): a once-only one here.
  defs[1] =
      R"({"id":"spend","dwell":[{"after":"6h"}],"criteria":{"type":"event","eventName":"buy","check":"sum","property":"amount","operator":"gte","value":100,"within":"2d"}})";
  auto run = [&](TimeMs cadence) {
    Scenario s;
    for (auto& d : defs) s.Define(d);
    TimeMs next_sweep = cadence;
    for (const Input& in : inputs) {
      while (cadence > 0 && next_sweep < in.at) {
        s.At(next_sweep);
        next_sweep += cadence;
      }
      s.At(in.at);
      EventInput e;
      e.user_id = in.user;
      e.event = in.event;
      e.properties = {Num("amount", in.amount), Str("plan", in.plan)};
      if (in.amount < 3) e.contact_properties = {Num("ends", double(kT0 + in.at + 2 * kDay))};
      IngestResult r;
      RequireOk(s.engine().Ingest(e, &r));
    }
    s.At(end);
    std::map<std::string, std::vector<std::string>> per_pair;
    for (const Transition& tr : s.All()) {
      per_pair[tr.bucket_id + "/" + tr.user_id].push_back(tr.IdempotencyKey() + "@" +
                                                          std::to_string(tr.at));
    }
    return per_pair;
  };
  const auto fine = run(10 * kMinute);
  const auto hourly = run(kHour);
  const auto once = run(0);
  CHECK(fine.size() > 30);
  CHECK(fine == hourly);
  CHECK(fine == once);
}

namespace {

// Events only, after every definition: no backfill, so the state is the histories' and the
// memberships they give, whatever the backfill rules derive.
void RunPinnedWorkload(Scenario& s) {
  for (auto& d : kBeyondDefinitions) s.Define(d);
  s.Define(R"({"id":"funnel","criteria":{"type":"sequence","steps":[{"eventName":"open"},
    {"eventName":"buy"},{"eventName":"open"},{"eventName":"buy"}],"within":"1d",
    "outcome":"completed"}})");
  std::mt19937_64 rng(5);
  const char* plans[] = {"pro", "basic", "team"};
  TimeMs t = 0;
  for (int i = 0; i < 2000; ++i) {
    t += static_cast<TimeMs>(rng() % (20 * kMinute));
    s.At(t);
    EventInput in;
    in.user_id = "u" + std::to_string(rng() % 30);
    in.event = rng() % 3 == 0 ? "open" : "buy";
    in.properties.push_back(Str("plan", plans[rng() % 3]));
    if (rng() % 4) in.properties.push_back(Num("amount", double(rng() % 80)));
    if (rng() % 6 == 0) in.occurred_at_ms = kT0 + t - static_cast<TimeMs>(rng() % kDay);
    IngestResult r;
    RequireOk(s.engine().Ingest(in, &r));
  }
}

}  // namespace

TEST_CASE("a snapshot written before the §3b histories became one block loads to the same state") {
  // tests/data/beyond-histories-v4.bkts is the snapshot this workload gave at ab5f67f, when
  // each list of a user's §3b histories was its own allocation (vectors of vectors): the
  // layout changed, the snapshot encoding and the digest's definition did not.
  Scenario s;
  RunPinnedWorkload(s);
  const std::string digest = s.engine().State().digest;
  CHECK(digest == "bf71dedfe329ec37326d5cda10f25919");  // the digest at ab5f67f
  TempDir dir;
  std::filesystem::create_directories(dir.snapshots());
  std::filesystem::copy_file(std::string(BUCKETD_TEST_DATA) + "/beyond-histories-v4.bkts",
                             dir.snapshots() + "/snapshot-00000000000000004009.bkts");
  SnapshotStore store(dir.snapshots(), 1);
  Fold loaded;
  bool ok = false;
  std::vector<std::string> warnings;
  RequireOk(LoadNewestInto(store, UINT64_MAX, kNever, &loaded, &ok, &warnings));
  REQUIRE(ok);
  CHECK(warnings.empty());
  CHECK(loaded.state().applied_seq == 4009);
  CHECK(ComputeDigest(loaded.state()) == digest);
  // Every user's histories decode as the live engine folded them.
  size_t with_sequences = 0, with_aggregates = 0;
  for (const User* user : loaded.state().users) {
    if (!user->legs) continue;
    with_aggregates += user->legs.aggregates().empty() ? 0 : 1;
    for (const SequenceHistory& q : user->legs.sequences()) {
      CHECK(q.later_steps() >= 1);
      with_sequences += 1;
    }
  }
  CHECK(with_aggregates == 30);
  CHECK(with_sequences == 60);  // `abandon` and `funnel` for each of the 30 users
}

TEST_CASE("a sequence's later steps keep their earliest occurrences, each step apart") {
  SequenceHistory h;
  h.SetLaterSteps(3);
  h.start = 100;
  auto later = [&](uint32_t step) {
    const auto span = h.Later(step);
    return std::vector<TimeMs>(span.begin(), span.end());
  };
  h.InsertLater(1, 300);
  h.InsertLater(0, 250);
  h.InsertLater(2, 500);
  h.InsertLater(1, 200);
  h.InsertLater(0, 400);
  h.InsertLater(1, 200);  // an equal instant is kept after the first
  CHECK(later(0) == std::vector<TimeMs>{250, 400});
  CHECK(later(1) == std::vector<TimeMs>{200, 200, 300});
  CHECK(later(2) == std::vector<TimeMs>{500});
  // A new start drops what is not after it, in every step.
  h.DropLaterUpTo(250);
  CHECK(later(0) == std::vector<TimeMs>{400});
  CHECK(later(1) == std::vector<TimeMs>{300});
  CHECK(later(2) == std::vector<TimeMs>{500});
  CHECK(h.occurrences().size() == 3);
  // Past kSequenceOccurrencesMax a step keeps its earliest: the latest gives way.
  for (TimeMs t = 1000; t < 1000 + TimeMs(kSequenceOccurrencesMax); ++t) h.InsertLater(1, t);
  REQUIRE(h.Later(1).size() == kSequenceOccurrencesMax);
  CHECK(h.Later(1).front() == 300);
  CHECK(h.Later(1).back() == 1000 + TimeMs(kSequenceOccurrencesMax) - 2);
  h.InsertLater(1, 301);
  CHECK(h.Later(1).size() == kSequenceOccurrencesMax);
  CHECK(h.Later(1)[1] == 301);
  CHECK(h.Later(1).back() == 1000 + TimeMs(kSequenceOccurrencesMax) - 3);
  CHECK(later(0) == std::vector<TimeMs>{400});
  CHECK(later(2) == std::vector<TimeMs>{500});
}

TEST_CASE("a typical user's §3b histories are one block, sized to them") {
  // One aggregate stream and one sequence, with a few contributions and occurrences each,
  // live in one heap block: the fold meets one cache miss behind the user for them.
  LegHistories legs;
  CHECK(legs.empty());
  CHECK(legs.allocation() == nullptr);
  StreamSpec sum;
  sum.kind = StreamSpec::Kind::kAggregate;
  sum.id = 7;
  StreamSpec step0;
  step0.kind = StreamSpec::Kind::kSequence;
  step0.id = 9;
  step0.steps = 2;
  StreamSpec step1 = step0;
  step1.step = 1;
  // A sequence alone: a block with room for it and nothing else.
  AddSequenceOccurrence(&legs, step0, 30);
  CHECK(legs.allocation_bytes() == 8 + sizeof(SequenceHistory));
  AddContribution(&legs, sum, PropertyValue::Number(5), 10);
  AddContribution(&legs, sum, PropertyValue::Number(7), 20);
  AddContribution(&legs, sum, PropertyValue::String("x"), 25);  // contributes to nothing
  AddSequenceOccurrence(&legs, step1, 40);
  AddSequenceOccurrence(&legs, step1, 50);
  CHECK(legs.allocation_bytes() == LegHistories::kTypicalBytes);
  const auto* begin = static_cast<const char*>(legs.allocation());
  const auto* end = begin + legs.allocation_bytes();
  const auto inside = [&](const void* p) {
    return static_cast<const char*>(p) >= begin && static_cast<const char*>(p) < end;
  };
  REQUIRE(legs.aggregates().size() == 1);
  REQUIRE(legs.sequences().size() == 1);
  CHECK(inside(legs.aggregates().data()));
  CHECK(inside(legs.aggregates()[0].newest.data()));
  CHECK(inside(legs.sequences().data()));
  // Two occurrences sit inline in the history, in the block: nothing of their own.
  CHECK(legs.sequences()[0].occurrences().allocation() == nullptr);
  CHECK(legs.aggregates()[0].sum == 12);
  CHECK(legs.aggregates()[0].newest[1] == Contribution{20, 7});
  CHECK(*legs.sequences()[0].start == 30);
  const Instants later = legs.sequences()[0].Later(0);
  CHECK(std::vector<TimeMs>(later.begin(), later.end()) == std::vector<TimeMs>{40, 50});
  // The sizes the layout is for: with malloc's 8-byte header, a block with one history of
  // each kind fills a 128-byte chunk and a block with a sequence alone a 48-byte one.
  CHECK(LegHistories::kTypicalBytes + 8 <= 128);
  CHECK(8 + sizeof(SequenceHistory) + 8 <= 48);
}

TEST_CASE("a user's §3b histories stay sorted by stream as streams come and go") {
  LegHistories legs;
  // Streams arrive out of order, each kind into its own array.
  for (uint32_t id : {40u, 10u, 30u, 20u}) legs.FindOrInsertAggregate(id).set_count(id);
  for (uint32_t id : {5u, 50u, 25u}) legs.FindOrInsertSequence(id).start = TimeMs{id};
  legs.FindOrInsertAggregate(30).sum = 3;  // found, not inserted again
  const auto ids = [](auto histories) {
    std::vector<uint32_t> out;
    for (const auto& h : histories) out.push_back(h.stream_id());
    return out;
  };
  CHECK(ids(legs.aggregates()) == std::vector<uint32_t>{10, 20, 30, 40});
  CHECK(ids(legs.sequences()) == std::vector<uint32_t>{5, 25, 50});
  CHECK(legs.allocation_bytes() == 8 + 4 * sizeof(AggregateHistory) + 3 * sizeof(SequenceHistory));
  REQUIRE(legs.FindAggregate(30) != nullptr);
  CHECK(legs.FindAggregate(30)->count() == 30);
  CHECK(legs.FindAggregate(30)->sum == 3);
  CHECK(legs.FindAggregate(35) == nullptr);
  CHECK(*legs.FindSequence(25)->start == 25);
  CHECK(legs.FindSequence(30) == nullptr);
  // A copy is deep and equal; a change to it leaves the original.
  LegHistories copy = legs;
  CHECK(copy == legs);
  CHECK(copy.allocation() != legs.allocation());
  copy.FindOrInsertAggregate(10).set_count(11);
  CHECK(!(copy == legs));
  // Erasing streams shrinks the block to what is left; erasing all frees it.
  legs.EraseIf([](uint32_t id) { return id == 20 || id == 5; });
  CHECK(ids(legs.aggregates()) == std::vector<uint32_t>{10, 30, 40});
  CHECK(ids(legs.sequences()) == std::vector<uint32_t>{25, 50});
  CHECK(legs.allocation_bytes() == 8 + 3 * sizeof(AggregateHistory) + 2 * sizeof(SequenceHistory));
  CHECK(legs.FindAggregate(40)->count() == 40);
  // Renumbered streams (a shard merge) are sorted again.
  for (AggregateHistory& h : legs.aggregates()) h.set_stream_id(100 - h.stream_id());
  legs.SortByStream();
  CHECK(ids(legs.aggregates()) == std::vector<uint32_t>{60, 70, 90});
  CHECK(legs.FindAggregate(90)->count() == 10);
  legs.EraseIf([](uint32_t) { return true; });
  CHECK(legs.empty());
  CHECK(legs.allocation() == nullptr);
}

namespace {

OptionalTime AnchorOf(Scenario& s, const std::string& bucket, const std::string& user) {
  Member m;
  RequireOk(s.engine().GetMember(bucket, user, &m));
  CHECK(m.source == MembershipSource::kBackfill);
  return m.dwell_anchor_at;
}

}  // namespace

TEST_CASE("backfill anchors an aggregate where its retained contributions show it began") {
  Scenario s;
  s.At(0);
  // A windowed sum: 60 + 50 holds from 5d until the 60 ages out at 30d; 50 + 70 from 32d.
  s.Fire("spender", "purchase", {Num("amount", 60)});
  s.At(5 * kDay);
  s.Fire("spender", "purchase", {Num("amount", 50)});
  s.Fire("steady", "purchase", {Num("amount", 100)});  // holds from 5d, never broken
  s.At(32 * kDay);
  s.Fire("spender", "purchase", {Num("amount", 70)});
  s.Fire("steady", "purchase", {Num("amount", 100)});  // before the first ages out (35d)
  // An all-time average: 5 (holds), 2 (3.5: breaks), 5 (4: holds again), 4 (4.0). Distinct
  // plans in a day: a second value from 33d + 2h.
  s.At(33 * kDay);
  s.Fire("rater", "rate", {Num("stars", 5)});
  s.At(33 * kDay + kHour);
  s.Fire("rater", "rate", {Num("stars", 2)});
  s.Fire("switcher", "buy", {Str("plan", "pro")});
  s.At(33 * kDay + 2 * kHour);
  s.Fire("rater", "rate", {Num("stars", 5)});
  s.Fire("switcher", "buy", {Str("plan", "basic")});
  s.Fire("switcher", "buy", {Str("plan", "pro")});  // pro's latest moves: still two values
  s.At(33 * kDay + 3 * kHour);
  s.Fire("rater", "rate", {Num("stars", 4)});

  s.At(33 * kDay + 12 * kHour);
  s.Define(R"({"id":"big-spenders","dwell":[{"after":"1d"}],"criteria":{"type":"event",
    "eventName":"purchase","check":"sum","property":"amount","operator":"gte","value":100,
    "within":"30d"}})");
  s.Define(R"({"id":"fans","criteria":{"type":"event","eventName":"rate","check":"avg",
    "property":"stars","operator":"gte","value":4}})");
  s.Define(R"({"id":"switchers","criteria":{"type":"event","eventName":"buy","check":"distinct",
    "property":"plan","operator":"gte","value":2,"within":"1d"}})");
  s.Define(R"({"id":"mixed","criteria":{"type":"composite","operator":"and","conditions":[
    {"type":"event","eventName":"purchase","check":"max","property":"amount","operator":"gte",
     "value":70},{"type":"event","eventName":"purchase","check":"count","operator":"gte","value":1}]}})");
  CHECK(s.Drain().empty());  // backfill emits nothing
  CHECK(AnchorOf(s, "big-spenders", "spender") == kT0 + 32 * kDay);
  CHECK(AnchorOf(s, "big-spenders", "steady") == kT0 + 5 * kDay);
  CHECK(AnchorOf(s, "fans", "rater") == kT0 + 33 * kDay + 2 * kHour);
  CHECK(AnchorOf(s, "switchers", "switcher") == kT0 + 33 * kDay + 2 * kHour);
  // An and: the later of its legs' starts (max >= 70 from the 70 at 32d; steady's 100 at 5d).
  CHECK(AnchorOf(s, "mixed", "spender") == kT0 + 32 * kDay);
  CHECK(AnchorOf(s, "mixed", "steady") == kT0 + 5 * kDay);
  // Dwell runs from the anchor: spender's `after 1d` at 33d, which the first sweep fires at
  // once (at = enteredAt, the anchor's instant having passed); steady's as well.
  s.At(33 * kDay + 12 * kHour + 1);
  V fired = Describe(s.Drain());
  std::sort(fired.begin(), fired.end());
  const std::string entered = std::to_string(33 * kDay + 12 * kHour);
  CHECK(fired == V{"dwell:big-spenders:spender@" + entered + ":after-86400000#1",
                   "dwell:big-spenders:steady@" + entered + ":after-86400000#1"});
  // Leaves stay exact: switcher's "basic" ages out at 34d + 2h; spender's 50 at 35d (70
  // left); steady's first 100 then too, leaving 100, which still holds.
  s.At(36 * kDay);
  CHECK(Describe(s.Drain()) ==
        V{"left:switchers:switcher@" + std::to_string(34 * kDay + 2 * kHour) + ":criteria",
          "left:big-spenders:spender@" + std::to_string(35 * kDay) + ":criteria"});
}

TEST_CASE("backfill leaves an aggregate's anchor absent where retention cannot show it") {
  Scenario s;
  s.At(0);
  // An all-time max past the retained contributions: the dropped ones' max is unknown.
  for (size_t i = 0; i <= kAggregateContributionsMax; ++i) {
    s.Fire("heavy", "purchase", {Num("amount", i == 0 ? 500 : 1)});
  }
  // Distinct with `lt`: a value's earlier occurrences are not kept, so past counts are
  // only lower bounds.
  s.Fire("narrow", "buy", {Str("plan", "pro")});
  s.At(kHour);
  s.Define(R"({"id":"whale","criteria":{"type":"event","eventName":"purchase","check":"max",
    "property":"amount","operator":"gte","value":100}})");
  s.Define(R"({"id":"single-plan","criteria":{"type":"event","eventName":"buy",
    "check":"distinct","property":"plan","operator":"lt","value":2}})");
  CHECK_FALSE(AnchorOf(s, "whale", "heavy").has_value());
  CHECK_FALSE(AnchorOf(s, "single-plan", "narrow").has_value());
}
