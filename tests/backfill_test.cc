// Backfill, historical dwell anchors, criteria changes and the definition lifecycle
// (SPEC §6), on the manual clock.
#include <catch2/catch.hpp>

#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;
using V = std::vector<std::string>;

namespace {

const char* kWentDormant = R"({"id":"dormant","dwell":[{"after":"30d"},{"every":"7d"}],
  "criteria":{"type":"composite","operator":"and","conditions":[
    {"type":"event","eventName":"open","check":"exists"},
    {"type":"event","eventName":"open","check":"not_exists","within":"7d"}]}})";

Member GetMember(Scenario& s, const std::string& bucket, const std::string& user) {
  Member m;
  RequireOk(s.engine().GetMember(bucket, user, &m));
  return m;
}

}  // namespace

TEST_CASE("a new bucket backfills silently, anchored where the criteria began to hold") {
  Scenario s;
  s.Event("old", "open");  // dormant since 7d
  s.At(20 * kDay);
  s.Event("recent", "open");  // active: not a member
  s.At(45 * kDay);
  s.Define(kWentDormant);
  CHECK(s.Drain().empty());  // no entered: a deploy must not flood journeys
  CHECK(s.Count("dormant") == 2);
  const Member old = GetMember(s, "dormant", "old");
  CHECK(old.source == MembershipSource::kBackfill);
  CHECK(old.entered_at == kT0 + 45 * kDay);
  CHECK(old.dwell_anchor_at == kT0 + 7 * kDay);
  CHECK(GetMember(s, "dormant", "recent").dwell_anchor_at == kT0 + 27 * kDay);

  // The first sweep fires dwell for those whose anchor is already old enough: `after 30d`
  // once, `every 7d` coalesced to the latest elapsed ordinal.
  s.At(45 * kDay + 1);
  auto t = s.Drain();
  V described = Describe(t);
  std::sort(described.begin(), described.end());
  CHECK(described == V{"dwell:dormant:old@3888000000:after-2592000000#1",
                       "dwell:dormant:old@3888000000:every-604800000#5",
                       "dwell:dormant:recent@3888000000:every-604800000#2"});
  // Later fires stay on the anchor's grid.
  s.At(49 * kDay);
  CHECK(Describe(s.Drain()) == V{"dwell:dormant:recent@4147200000:every-604800000#3",
                                 "dwell:dormant:old@4233600000:every-604800000#6"});
}

TEST_CASE("backfill continues entryCount from earlier memberships of a re-created id") {
  Scenario s;
  const std::string def =
      R"({"id":"b","criteria":{"type":"property","property":"on","operator":"eq","value":true}})";
  s.Define(def);
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  RequireOk(s.engine().DeleteBucket("b"));
  CHECK(s.engine().Count("b", nullptr).code() == StatusCode::kNotFound);
  s.Define(def);
  const Member m = GetMember(s, "b", "u");
  CHECK(m.entry_count == 2);
  CHECK(m.source == MembershipSource::kBackfill);
  CHECK(Describe(s.Drain()) == V{"entered:b:u@0"});  // only the original, live entry
}

TEST_CASE("a criteria change re-evaluates everyone: leavers emit left, joiners are silent") {
  Scenario s;
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"score","operator":"gte","value":10}})");
  s.Event("low", "x", {{"score", PropertyValue::Number(5)}});
  s.Event("mid", "x", {{"score", PropertyValue::Number(15)}});
  s.Event("high", "x", {{"score", PropertyValue::Number(50)}});
  s.Drain();
  s.At(kHour);
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"score","operator":"gte","value":1},"name":"renamed"})");
  CHECK(s.Drain().empty());  // low joins silently; nobody leaves
  CHECK(GetMember(s, "b", "low").source == MembershipSource::kBackfill);
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"score","operator":"gte","value":20}})");
  auto t = s.Drain();
  V described = Describe(t);
  std::sort(described.begin(), described.end());
  CHECK(described == V{"left:b:low@3600000:criteria", "left:b:mid@3600000:criteria"});
  CHECK(s.Count("b") == 1);
}

TEST_CASE("other field changes apply to current members from their existing enteredAt") {
  Scenario s;
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"on","operator":"eq","value":true}})");
  s.Event("u", "x", {{"on", PropertyValue::Bool(true)}});
  s.At(10 * kDay);
  s.Drain();
  // A shortened maxDwell makes the member due at once.
  s.Define(
      R"({"id":"b","maxDwell":"3d","criteria":{"type":"property","property":"on","operator":"eq","value":true}})");
  s.At(10 * kDay + 1);
  CHECK(Describe(s.Drain()) == V{"left:b:u@864000000:maxDwell"});
}

TEST_CASE("a definition referencing history it never retained re-reads it from the log") {
  Scenario s;
  // No bucket looks at "buy": the fold keeps only counts, not instants.
  for (int i = 0; i < 12; ++i) {
    s.At(i * kHour);
    s.Event("u", "buy");
  }
  s.Event("v", "buy");
  s.At(13 * kHour);
  s.Define(
      R"({"id":"big","criteria":{"type":"event","eventName":"buy","check":"count","operator":"gte","value":10,"within":"1d"}})");
  CHECK(s.IsMember("big", "u"));
  CHECK_FALSE(s.IsMember("big", "v"));
  // The re-read instants drive the clock exactly: u leaves when its 10th-newest ages out.
  s.At(3 * kDay);
  CHECK(Describe(s.Drain()) == V{"left:big:u@93600000:criteria"});
  // And replay (which re-reads from the same log) agrees.
  const std::string digest = s.engine().State().digest;
  s.Reopen();
  CHECK(s.engine().State().digest == digest);
}

TEST_CASE("a history re-read across several read batches sees what a bucket defined first saw") {
  // Deeper than the instants every history keeps (kNewestKeptMin), so they are re-read.
  const std::string big =
      R"({"id":"big","criteria":{"type":"event","eventName":"buy","check":"count","operator":"gte","value":6,"within":"2d"}})";
  const auto events = [](Scenario& s) {
    // 3,000 events (the log is re-read in batches of 1,024), 30 users, ~5 h apart each.
    for (int i = 0; i < 3000; ++i) {
      s.At(i * 10 * kMinute);
      s.Event("u" + std::to_string(i * 7 % 30), i % 4 ? "buy" : "open");
    }
  };
  const auto members = [](Scenario& s) {
    V m;
    for (int u = 0; u < 30; ++u) {
      if (s.IsMember("big", "u" + std::to_string(u))) m.push_back("u" + std::to_string(u));
    }
    return m;
  };
  Scenario first;
  first.Define(big);
  events(first);
  Scenario later;
  events(later);
  later.Define(big);  // retains "buy" instants from now on, and re-reads the earlier ones
  CHECK(members(later).size() > 10);
  CHECK(members(later) == members(first));
  // The re-read instants drive the clock: members leave at the same instants.
  for (TimeMs at : {500 * kHour + 12 * kHour, 500 * kHour + 20 * kHour, 524 * kHour}) {
    first.At(at);
    later.At(at);
    CHECK(members(later) == members(first));
  }
  CHECK(members(later).empty());
  // Replay re-reads only the records before the definition: with events after it, it stops
  // inside a read batch.
  for (int u = 0; u < 30; ++u) later.Event("u" + std::to_string(u), "buy");
  const std::string digest = later.engine().State().digest;
  later.Reopen();
  CHECK(later.engine().State().digest == digest);
}

TEST_CASE("disable keeps members and evaluates nothing; enable catches up") {
  Scenario s;
  s.Define(
      R"({"id":"b","criteria":{"type":"event","eventName":"x","check":"exists","within":"1d"}})");
  s.Event("u", "x");
  RequireOk(s.engine().SetBucketEnabled("b", false));
  s.At(2 * kDay);
  s.Event("v", "x");
  CHECK(s.IsMember("b", "u"));
  CHECK_FALSE(s.IsMember("b", "v"));
  RequireOk(s.engine().SetBucketEnabled("b", true));
  auto t = Describe(s.Drain());
  std::sort(t.begin(), t.end());
  CHECK(t == V{"entered:b:u@0", "entered:b:v@172800000", "left:b:u@172800000:criteria"});
}

TEST_CASE("a bucket created disabled is backfilled silently when first enabled") {
  Scenario s;
  s.Event("u", "x");
  s.Define(
      R"({"id":"b","enabled":false,"criteria":{"type":"event","eventName":"x","check":"exists"}})");
  CHECK(s.Count("b") == 0);
  RequireOk(s.engine().SetBucketEnabled("b", true));
  CHECK(s.Count("b") == 1);
  CHECK(s.Drain().empty());
}

TEST_CASE("replay reproduces backfills and re-evaluations exactly") {
  Scenario s;
  for (int i = 0; i < 50; ++i) {
    s.At(i * 3 * kHour);
    s.Event("u" + std::to_string(i % 7), i % 2 ? "open" : "buy",
            {{"score", PropertyValue::Number(i)}});
  }
  s.Define(kWentDormant);
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"score","operator":"gte","value":20}})");
  s.At(30 * kDay);
  s.Define(
      R"({"id":"b","criteria":{"type":"property","property":"score","operator":"gte","value":40}})");
  s.Define(
      R"({"id":"c","criteria":{"type":"event","eventName":"buy","check":"count","operator":"gte","value":3,"within":"2d"}})");
  s.At(31 * kDay);
  const StateInfo live = s.engine().State();
  const auto stream = s.All();
  s.Reopen();
  CHECK(s.engine().State().digest == live.digest);
  CHECK(s.All() == stream);
}

TEST_CASE("a definition inside a group commit re-reads the events staged before it") {
  Scenario s;
  s.engine().BeginGroup();
  for (int i = 0; i < 5; ++i) s.Event("u", "buy");
  // Deeper than the instants every history keeps (kNewestKeptMin), so they are re-read.
  s.Define(
      R"({"id":"b","criteria":{"type":"event","eventName":"buy","check":"count","operator":"gte","value":5,"within":"1d"}})");
  RequireOk(s.engine().EndGroup());
  CHECK(s.IsMember("b", "u"));
  const std::string digest = s.engine().State().digest;
  s.Reopen();
  CHECK(s.engine().State().digest == digest);
}
