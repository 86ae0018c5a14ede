// A bucket's history (Engine::BucketHistory, GET /v1/buckets/{id}/history) against a scenario
// driven through the engine and the manual clock: joins by ingest, by backfill (silent) and
// leaves by the clock, each step's size and changes known exactly in advance.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/test_support.h"

namespace bucketd::testing {
namespace {

const char* kPower =
    R"({"id":"power","criteria":{"type":"event","eventName":"used","check":"count",)"
    R"("operator":"gte","value":2,"within":"1d"}})";
// Backfilled when defined: its members join silently (no `entered`).
const char* kLater =
    R"({"id":"later","criteria":{"type":"event","eventName":"used","check":"exists","within":"1d"}})";
const char* kRecent =
    R"({"id":"recent","criteria":{"type":"event","eventName":"used","check":"exists","within":"1d"}})";

// "start-end:size/+entered/-left" with hours from T0, for readable failures.
std::vector<std::string> Steps(const std::vector<HistoryStep>& steps) {
  std::vector<std::string> out;
  for (const HistoryStep& s : steps) {
    out.push_back(std::to_string((s.start - kT0) / kHour) + "-" +
                  std::to_string((s.end - kT0) / kHour) + ":" + std::to_string(s.size) + "/+" +
                  std::to_string(s.entered) + "/-" + std::to_string(s.left));
  }
  return out;
}

std::vector<std::string> History(Engine& engine, const std::string& bucket, TimeMs from_h,
                                 TimeMs to_h, TimeMs step_h) {
  std::vector<HistoryStep> steps;
  RequireOk(engine.BucketHistory(
      bucket, HistoryQuery{kT0 + from_h * kHour, kT0 + to_h * kHour, step_h * kHour}, &steps));
  return Steps(steps);
}

// power: alice [0h, 24h), bob [1h, 25h), carol [12h, 26h), all by ingest, left by the clock.
// later (defined at 20h): alice [20h, 24h), bob [20h, 25h), carol [20h, 36h) silently
// backfilled; dave [47h, -) by ingest. recent (defined at 47.5h): dave [47.5h, -) silently.
void Drive(Scenario& s) {
  s.Define(kPower);
  s.Event("alice", "used");
  s.Event("alice", "used");
  s.At(1 * kHour);
  s.Event("bob", "used");
  s.Event("bob", "used");
  s.At(2 * kHour);
  s.Event("carol", "used");
  s.At(12 * kHour);
  s.Event("carol", "used");
  s.At(20 * kHour);
  s.Define(kLater);
  s.At(30 * kHour);
  s.At(40 * kHour);
  s.At(47 * kHour);
  s.Event("dave", "used");
  s.At(47 * kHour + 30 * kMinute);
  s.Define(kRecent);
  s.At(48 * kHour);
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("history gives each step's exact size and the memberships opened and closed in it") {
  Scenario s;
  Drive(s);
  CHECK(History(s.engine(), "power", 0, 48, 6) ==
        V{"0-6:2/+1/-0", "6-12:3/+1/-0", "12-18:3/+0/-0", "18-24:2/+0/-1", "24-30:0/+0/-2",
          "30-36:0/+0/-0", "36-42:0/+0/-0", "42-48:0/+0/-0"});
  // Silent joins count (their `left` carries enteredAt; an active one is in the state).
  CHECK(History(s.engine(), "later", 0, 48, 6) ==
        V{"0-6:0/+0/-0", "6-12:0/+0/-0", "12-18:0/+0/-0", "18-24:2/+3/-1", "24-30:1/+0/-1",
          "30-36:0/+0/-1", "36-42:0/+0/-0", "42-48:1/+1/-0"});
  CHECK(History(s.engine(), "recent", 40, 48, 4) == V{"40-44:0/+0/-0", "44-48:1/+1/-0"});
  // A span that is not a multiple of the step ends with a shorter step; a later `from` sees
  // the members it starts with.
  CHECK(History(s.engine(), "power", 11, 25, 10) == V{"11-21:3/+1/-0", "21-25:1/+0/-2"});
  CHECK(History(s.engine(), "power", 12, 13, 1) == V{"12-13:3/+0/-0"});

  // The same after a restart from a snapshot (the state part) and a full replay.
  SnapshotInfo snapshot;
  RequireOk(s.engine().TakeSnapshot(&snapshot));
  for (bool use_snapshots : {true, false}) {
    Options o = ManualOptions(s.dir());
    o.use_snapshots = use_snapshots;
    o.read_only = true;
    auto reopened = OpenOrFail(o);
    CHECK(History(*reopened, "later", 0, 48, 6) ==
          V{"0-6:0/+0/-0", "6-12:0/+0/-0", "12-18:0/+0/-0", "18-24:2/+3/-1", "24-30:1/+0/-1",
            "30-36:0/+0/-1", "36-42:0/+0/-0", "42-48:1/+1/-0"});
  }
}

TEST_CASE("a left transition carries its membership's enteredAt") {
  Scenario s;
  Drive(s);
  std::vector<std::string> lefts;
  for (const Transition& t : s.All()) {
    if (t.kind != TransitionKind::kLeft) continue;
    REQUIRE(t.entered_at);
    lefts.push_back(Describe(t) + " from " + std::to_string((*t.entered_at - kT0) / kHour));
  }
  CHECK(lefts ==
        V{"left:power:alice@86400000:criteria from 0", "left:later:alice@86400000:criteria from 20",
          "left:power:bob@90000000:criteria from 1", "left:later:bob@90000000:criteria from 20",
          "left:power:carol@93600000:criteria from 12",
          "left:later:carol@129600000:criteria from 20"});
}

TEST_CASE("history refuses bad bounds naming the field, and deleted buckets") {
  Scenario s;
  Drive(s);
  std::vector<HistoryStep> steps;
  const auto field = [&](TimeMs from, TimeMs to, TimeMs step) {
    return s.engine().BucketHistory("power", HistoryQuery{from, to, step}, &steps).field();
  };
  CHECK(field(kT0, kT0, kHour) == "to");
  CHECK(field(kT0 + kHour, kT0, kHour) == "to");
  CHECK(field(kT0, kT0 + 49 * kHour, kHour) == "to");  // after now
  CHECK(field(kT0, kT0 + kHour, 0) == "step");
  CHECK(field(kT0, kT0 + 10001, 1) == "step");  // 10,001 steps
  RequireOk(s.engine().BucketHistory("power", HistoryQuery{kT0, kT0 + 10000, 1}, &steps));
  CHECK(steps.size() == kHistoryStepsMax);
  CHECK(s.engine().BucketHistory("nope", HistoryQuery{kT0, kT0 + 1, 1}, &steps).code() ==
        StatusCode::kNotFound);
  RequireOk(s.engine().DeleteBucket("power"));
  CHECK(s.engine().BucketHistory("power", HistoryQuery{kT0, kT0 + 1, 1}, &steps).code() ==
        StatusCode::kNotFound);
}

}  // namespace bucketd::testing
