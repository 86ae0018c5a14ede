// Membership changed by the clock (SPEC §5), on the manual clock.
#include <catch2/catch.hpp>
#include <map>
#include <random>

#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;
using V = std::vector<std::string>;

namespace {

const char* kPowerUsers = R"({"id":"power","criteria":{"type":"event","eventName":"used",
  "check":"count","operator":"gte","value":10,"within":"30d"}})";
const char* kWentDormant = R"({"id":"dormant","criteria":{"type":"composite","operator":"and",
  "conditions":[{"type":"event","eventName":"open","check":"exists"},
                {"type":"event","eventName":"open","check":"not_exists","within":"7d"}]}})";

}  // namespace

TEST_CASE("power-users leave exactly when the 10th-newest event ages out") {
  Scenario s;
  s.Define(kPowerUsers);
  for (int i = 0; i < 12; ++i) {
    s.At(i * kHour);
    s.Event("u", "used");
  }
  // Joined at the 10th event (9h); the 10th-newest is then the event at 2h... after the
  // 12 events the newest ten are at 2h..11h, so the count drops below 10 at 2h + 30d.
  s.At(2 * kHour + 30 * kDay - 1);
  CHECK(s.IsMember("power", "u"));
  s.At(40 * kDay);
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:power:u@32400000", "left:power:u@2599200000:criteria"});
  CHECK(t[1].detected_at == kT0 + 40 * kDay);
}

TEST_CASE("power-users stay while new events keep the count up") {
  Scenario s;
  s.Define(kPowerUsers);
  for (int i = 0; i < 90; ++i) {  // one event every 2 days: 15 in every 30-day window
    s.At(i * 2 * kDay);
    s.Event("u", "used");
  }
  auto t = s.Drain();
  REQUIRE(t.size() == 1);
  CHECK(t[0].kind == TransitionKind::kEntered);
  CHECK(s.IsMember("power", "u"));
}

TEST_CASE("went-dormant joins at last activity + 7d with no event, leaves on return") {
  Scenario s;
  s.Define(kWentDormant);
  s.At(kHour);
  s.Event("u", "open");
  s.Event("never", "signup");  // never active: never joins
  s.At(30 * kDay);
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:dormant:u@608400000"});
  CHECK(t[0].source == MembershipSource::kReconcile);
  CHECK(t[0].detected_at == kT0 + 30 * kDay);
  s.Event("u", "open");
  CHECK(Describe(s.Drain()) == V{"left:dormant:u@2592000000:criteria"});
  s.At(60 * kDay);
  CHECK(Describe(s.Drain()) == V{"entered:dormant:u@3196800000"});
  CHECK_FALSE(s.IsMember("dormant", "never"));
}

TEST_CASE("reconcileJoins false opts a bucket out of clock-driven joins") {
  Scenario s;
  s.Define(
      R"({"id":"dormant","reconcileJoins":false,"criteria":{"type":"composite","operator":"and",
  "conditions":[{"type":"event","eventName":"open","check":"exists"},
                {"type":"event","eventName":"open","check":"not_exists","within":"7d"}]}})");
  s.Event("u", "open");
  s.At(30 * kDay);
  CHECK(s.Drain().empty());
}

TEST_CASE("minDwell defers a window leave to enteredAt + minDwell, or cancels it") {
  Scenario s;
  s.Define(R"({"id":"active","minDwell":"3d","criteria":{"type":"event","eventName":"open",
    "check":"exists","within":"1d"}})");
  s.Event("u", "open");
  s.At(10 * kDay);
  CHECK(Describe(s.Drain()) == V{"entered:active:u@0", "left:active:u@259200000:criteria"});

  s.Event("v", "open");     // joins at 10d
  s.At(11 * kDay + kHour);  // window lapsed at 11d, deferred to 13d
  CHECK(s.IsMember("active", "v"));
  s.Event("v", "open");         // holds again before the deadline
  s.At(12 * kDay + 2 * kHour);  // lapses again at 12d+1h, still inside minDwell
  s.At(20 * kDay);
  CHECK(Describe(s.Drain()) ==
        V{"entered:active:v@864000000", "left:active:v@1123200000:criteria"});
}

TEST_CASE("maxDwell leaves with reason maxDwell, then entryLimit decides the re-join") {
  const std::string base = R"("maxDwell":"2d","criteria":{"type":"event","eventName":"ping",
    "check":"exists","within":"3d"}})";
  SECTION("once: the later re-join emits nothing") {
    Scenario s;
    s.Define(R"({"id":"b","entryLimit":"once",)" + base);
    s.Event("u", "ping");
    s.At(kDay);
    s.Event("u", "ping");  // criteria still hold at the maxDwell leave
    s.At(2 * kDay);
    CHECK(Describe(s.Drain()) == V{"entered:b:u@0", "left:b:u@172800000:maxDwell"});
    CHECK_FALSE(s.IsMember("b", "u"));
    s.Event("u", "ping");  // still holding: not newly, no re-join
    CHECK_FALSE(s.IsMember("b", "u"));
    s.At(10 * kDay);       // window lapses: the block clears
    s.Event("u", "ping");  // newly holds: re-joins, silently (once)
    CHECK(s.IsMember("b", "u"));
    CHECK(s.Drain().empty());
  }
  SECTION("unlimited: the re-join emits again") {
    Scenario s;
    s.Define(R"({"id":"b","entryLimit":"unlimited",)" + base);
    s.Event("u", "ping");
    s.At(10 * kDay);
    s.Event("u", "ping");
    auto t = s.Drain();
    REQUIRE(Describe(t) ==
            V{"entered:b:u@0", "left:b:u@172800000:maxDwell", "entered:b:u@864000000"});
    CHECK(t[2].entry_count == 2);
  }
}

TEST_CASE("dwell: after fires once; every coalesces an outage and stays on the grid") {
  Scenario s;
  s.Define(R"({"id":"b","dwell":[{"after":"1d"},{"every":"1h"}],"criteria":{"type":"property",
    "property":"on","operator":"eq","value":true}})");
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(kHour);
  s.At(2 * kHour);
  s.At(5 * kHour + 30 * kMinute);  // an outage of 3.5 intervals: one fire, ordinal 5
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:b:u@0", "dwell:b:u@3600000:every-3600000#1",
                           "dwell:b:u@7200000:every-3600000#2",
                           "dwell:b:u@18000000:every-3600000#5"});
  CHECK(t[3].Name() == "bucket:dwell:b:every-3600000");
  CHECK(t[3].IdempotencyKey() == "bucket:b:u:dwell:every-3600000:1:5");
  CHECK(t[3].detected_at == kT0 + 5 * kHour + 30 * kMinute);
  s.At(6 * kHour);
  s.At(kDay);
  t = s.Drain();
  REQUIRE(t.size() == 3);
  CHECK(Describe(t[0]) == "dwell:b:u@21600000:every-3600000#6");
  CHECK(Describe(t[1]) == "dwell:b:u@86400000:every-3600000#24");
  CHECK(Describe(t[2]) == "dwell:b:u@86400000:after-86400000#1");
}

TEST_CASE(
    "dwell: an or whose shorter leg lapses while the other holds fires one coalesced "
    "every per sweep") {
  Scenario s;
  s.Define(R"({"id":"b","dwell":[{"every":"1d"}],"criteria":{"type":"composite","operator":"or",
    "conditions":[{"type":"event","eventName":"a","check":"exists","within":"36h"},
                  {"type":"event","eventName":"b","check":"exists","within":"10d"}]}})");
  s.Event("u", "a");
  s.Event("u", "b");
  s.At(3 * kDay + kHour);  // the a leg lapsed at 36h; b holds until 10d
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:b:u@0", "dwell:b:u@259200000:every-86400000#3"});
  s.At(12 * kDay);  // b lapses at 10d: dwells up to just before it, then the leave
  t = s.Drain();
  REQUIRE(Describe(t) == V{"dwell:b:u@777600000:every-86400000#9", "left:b:u@864000000:criteria"});
}

TEST_CASE("dwell: a leave ends the clock and a re-join restarts it") {
  Scenario s;
  s.Define(R"({"id":"b","dwell":[{"after":"2h"}],"criteria":{"type":"property",
    "property":"on","operator":"eq","value":true}})");
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(kHour);
  s.Event("u", "x", {{"on", PropertyValue::Bool(false)}});
  s.At(90 * kMinute);
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(3 * kHour);
  s.At(4 * kHour);
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:b:u@0", "left:b:u@3600000:criteria", "entered:b:u@5400000",
                           "dwell:b:u@12600000:after-7200000#1"});
  CHECK(t[3].IdempotencyKey() == "bucket:b:u:dwell:after-7200000:2:1");
}

TEST_CASE("a dwell reaction added later fires for members already past due") {
  Scenario s;
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"on","operator":"eq","value":true}})");
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(3 * kDay);
  s.Drain();
  s.Define(
      R"({"id":"b","dwell":[{"after":"1d"}],"criteria":{"type":"property","property":"on","operator":"eq","value":true}})");
  s.At(3 * kDay + 1);
  CHECK(Describe(s.Drain()) == V{"dwell:b:u@86400000:after-86400000#1"});
}

TEST_CASE("a late event counts until occurredAt + W and never rewrites the past") {
  Scenario s;
  s.Define(
      R"({"id":"recent","criteria":{"type":"event","eventName":"buy","check":"exists","within":"1d"}})");
  s.At(10 * kHour);
  s.Event("u", "buy", {}, kT0);  // occurred 10h ago: counts until 24h
  s.At(2 * kDay);
  CHECK(Describe(s.Drain()) == V{"entered:recent:u@36000000", "left:recent:u@86400000:criteria"});
  s.Event("v", "buy", {}, kT0);  // already outside its window: never counts
  CHECK_FALSE(s.IsMember("recent", "v"));
}

TEST_CASE("disabled buckets are skipped; enabling catches up at the enable instant") {
  Scenario s;
  s.Define(kWentDormant);
  s.Event("u", "open");
  RequireOk(s.engine().SetBucketEnabled("dormant", false));
  s.At(30 * kDay);
  CHECK(s.Drain().empty());
  RequireOk(s.engine().SetBucketEnabled("dormant", true));
  auto t = s.Drain();
  REQUIRE(Describe(t) == V{"entered:dormant:u@2592000000"});
}

TEST_CASE("a sweep with nothing due touches no member") {
  Scenario s;
  s.Define(kPowerUsers);
  for (int u = 0; u < 2000; ++u) {
    for (int i = 0; i < 10; ++i) s.Event("u" + std::to_string(u), "used");
  }
  REQUIRE(s.Count("power") == 2000);
  const uint64_t before = s.engine().Stats().sweep_due_items;
  for (int i = 1; i <= 100; ++i) {
    SweepResult r = s.At(i * kMinute);
    CHECK(r.due == 0);
  }
  CHECK(s.engine().Stats().sweep_due_items == before);
  // ...and exactly the due ones when something is due.
  SweepResult r = s.At(31 * kDay);
  CHECK(r.due == 2000);
  CHECK(s.Count("power") == 0);
}

// Cadence independence: one seeded workload, swept at different cadences, must give the
// same transitions per (user, bucket) with the same `at`; only detectedAt may differ.
TEST_CASE("the sweep cadence changes only detectedAt") {
  struct Input {
    TimeMs at;
    std::string user;
    std::string event;
  };
  std::mt19937_64 rng(42);
  std::vector<Input> inputs;
  TimeMs t = 0;
  for (int i = 0; i < 400; ++i) {
    t += static_cast<TimeMs>(rng() % (6 * kHour));
    inputs.push_back({t, "u" + std::to_string(rng() % 20), rng() % 3 == 0 ? "open" : "used"});
  }
  const TimeMs end = t + 40 * kDay;
  const std::vector<std::string> defs = {
      R"({"id":"power","minDwell":"2h","maxDwell":"20d","criteria":{"type":"event","eventName":"used","check":"count","operator":"gte","value":3,"within":"1d"}})",
      kWentDormant,
      R"({"id":"calm","dwell":[{"after":"12h"}],"criteria":{"type":"composite","operator":"and","conditions":[{"type":"event","eventName":"used","check":"exists"},{"type":"event","eventName":"used","check":"count","operator":"lt","value":2,"within":"12h"}]}})",
  };
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
      s.Event(in.user, in.event);
    }
    s.At(end);
    std::map<std::string, std::vector<std::string>> per_pair;
    for (const Transition& tr : s.All()) {
      per_pair[tr.bucket_id + "/" + tr.user_id].push_back(tr.IdempotencyKey() + "@" +
                                                          std::to_string(tr.at));
    }
    return per_pair;
  };
  const auto fine = run(kMinute);
  const auto hourly = run(kHour);
  const auto once = run(0);
  CHECK(fine.size() > 10);
  CHECK(fine == hourly);
  CHECK(fine == once);
}
