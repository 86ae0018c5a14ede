// Engine::ExplainMembership (GET /v1/buckets/{id}/explain/{userId}, SPEC §3b): what it says
// agrees with what then happens. For each leg the clock can flip, the `next` instant it
// reports is exactly the `at` of the join or leave the clock then makes; the blockers it
// names are the ones the fold applies; and it logs nothing.
#include <catch2/catch.hpp>

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

ExplainResult Explain(Scenario& s, const std::string& bucket, const std::string& user) {
  ExplainResult out;
  RequireOk(s.engine().ExplainMembership(bucket, user, &out));
  CHECK(out.bucket_id == bucket);
  CHECK(out.user_id == user);
  CHECK(out.now == s.engine().Now());
  return out;
}

const ExplainLeg& Leg(const ExplainResult& r, const std::string& path) {
  for (const ExplainLeg& leg : r.legs) {
    if (leg.path == path) return leg;
  }
  FAIL("no leg " << path);
  return r.legs.front();
}

const ExplainBlocker* Blocker(const ExplainResult& r, const std::string& kind) {
  for (const ExplainBlocker& b : r.blockers) {
    if (b.kind == kind) return &b;
  }
  return nullptr;
}

// Moves the clock to T0 + offset: it must make exactly one transition, returned.
Transition OnlyTransition(Scenario& s, TimeMs offset) {
  s.At(offset);
  const std::vector<Transition> t = s.Drain();
  std::string all;
  for (const std::string& d : Describe(t)) all += d + " ";
  INFO(all);
  REQUIRE(t.size() == 1);
  return t[0];
}

}  // namespace

TEST_CASE("explain: a windowed count leaves at exactly the `next` it reports") {
  Scenario s;
  s.Define(R"({"id":"active","criteria":{"type":"event","eventName":"login","check":"count",
    "operator":"gte","value":2,"within":"7d"}})");
  s.At(0);
  s.Event("u", "login");
  // One login: the count cannot reach 2 by the clock.
  ExplainResult r = Explain(s, "active", "u");
  CHECK_FALSE(r.member);
  REQUIRE(r.holds.has_value());
  CHECK_FALSE(*r.holds);
  CHECK_FALSE(r.next.has_value());
  CHECK_FALSE(r.membership.has_value());
  REQUIRE(r.legs.size() == 1);
  CHECK(r.legs[0].path == "criteria");
  CHECK(r.legs[0].type == "event");
  CHECK(r.legs[0].check == "count");
  CHECK(r.legs[0].count == 1u);
  CHECK(r.legs[0].window_start == kT0 - 7 * kDay);
  CHECK(r.blockers.empty());

  s.At(kDay);
  s.Event("u", "login");
  s.Drain();
  s.At(2 * kDay);
  r = Explain(s, "active", "u");
  CHECK(r.member);
  CHECK(*r.holds);
  CHECK(r.legs[0].count == 2u);
  CHECK_FALSE(r.legs[0].capped);
  CHECK(r.legs[0].held_since == kT0 + kDay);
  REQUIRE(r.next.has_value());
  CHECK(*r.next == kT0 + 7 * kDay);  // the first login ages out
  CHECK(r.legs[0].next == r.next);
  REQUIRE(r.membership.has_value());
  CHECK(r.membership->active);
  CHECK(r.membership->entered_at == kT0 + kDay);
  CHECK(r.membership->entry_count == 1);
  CHECK(r.membership->source == MembershipSource::kEvent);
  CHECK(r.next_due_at == r.next);

  const Transition left = OnlyTransition(s, 10 * kDay);
  CHECK(left.kind == TransitionKind::kLeft);
  CHECK(left.at == *r.next);
}

TEST_CASE("explain: an aggregate's value and the instant a contribution ages out") {
  Scenario s;
  s.Define(R"({"id":"big-spenders","criteria":{"type":"event","eventName":"purchase",
    "check":"sum","property":"amount","operator":"gte","value":100,"within":"30d"}})");
  s.At(0);
  s.Fire("u", "purchase", {Num("amount", 60)});
  s.Fire("u", "purchase", {Str("amount", "500")});  // contributes nothing
  ExplainResult r = Explain(s, "big-spenders", "u");
  CHECK_FALSE(*r.holds);
  CHECK(r.legs[0].check == "sum");
  CHECK(r.legs[0].aggregate == 60.0);
  CHECK(r.legs[0].contributions == 1u);
  CHECK_FALSE(r.next.has_value());
  s.At(10 * kDay);
  s.Fire("u", "purchase", {Num("amount", 50)});
  s.Drain();
  r = Explain(s, "big-spenders", "u");
  CHECK(r.member);
  CHECK(r.legs[0].aggregate == 110.0);
  CHECK(r.legs[0].contributions == 2u);
  // Since the contribution that took the window's sum to 100 or more.
  CHECK(r.legs[0].held_since == kT0 + 10 * kDay);
  REQUIRE(r.next.has_value());
  CHECK(*r.next == kT0 + 30 * kDay);
  const Transition left = OnlyTransition(s, 35 * kDay);
  CHECK(left.kind == TransitionKind::kLeft);
  CHECK(left.at == *r.next);
  // Over no contributions in the window the value is absent (and the leg false).
  r = Explain(s, "big-spenders", "u");
  CHECK(r.legs[0].aggregate == 50.0);
  s.At(45 * kDay);
  r = Explain(s, "big-spenders", "u");
  CHECK_FALSE(r.legs[0].aggregate.has_value());
  CHECK(r.legs[0].contributions == 0u);
}

TEST_CASE("explain: a time property's instant and threshold, and the join at t - offset") {
  Scenario s;
  s.Define(R"({"id":"trial-ending","criteria":{"type":"property","property":"trialEndsAt",
    "operator":"before","value":"+3d"}})");
  s.At(0);
  s.Event("u", "signup", {Str("trialEndsAt", "2026-11-11T00:00:00Z")});  // T0 + 10d
  s.Event("w", "signup", {Str("trialEndsAt", "soon")});
  CHECK(s.Drain().empty());
  ExplainResult r = Explain(s, "trial-ending", "u");
  const ExplainLeg& leg = r.legs[0];
  CHECK(leg.type == "property");
  CHECK(leg.check == "before");
  REQUIRE(leg.current.has_value());
  CHECK(leg.current->text == "2026-11-11T00:00:00Z");
  CHECK(leg.time == kT0 + 10 * kDay);
  CHECK(leg.threshold == kT0 + 3 * kDay);
  CHECK_FALSE(leg.holds);
  REQUIRE(r.next.has_value());
  CHECK(*r.next == kT0 + 7 * kDay);
  CHECK(r.next_due_at == r.next);  // the fold filed the join at that instant
  // Not a time: no instant, no next.
  const ExplainResult w = Explain(s, "trial-ending", "w");
  CHECK_FALSE(w.legs[0].time.has_value());
  CHECK_FALSE(w.next.has_value());

  const Transition entered = OnlyTransition(s, 8 * kDay);
  CHECK(entered.kind == TransitionKind::kEntered);
  CHECK(entered.source == MembershipSource::kReconcile);
  CHECK(entered.at == *r.next);
  r = Explain(s, "trial-ending", "u");
  CHECK(r.member);
  CHECK(r.legs[0].held_since == kT0 + 7 * kDay);
  CHECK_FALSE(r.next.has_value());
}

TEST_CASE("explain: first_seen reports the first event and leaves at first + W") {
  Scenario s;
  s.Define(R"({"id":"new-users","criteria":{"type":"event","eventName":"app.opened",
    "check":"first_seen","within":"7d"}})");
  s.At(kDay);
  s.Event("u", "app.opened");
  s.At(3 * kDay);
  s.Event("u", "app.opened");
  s.Drain();
  const ExplainResult r = Explain(s, "new-users", "u");
  CHECK(r.member);
  CHECK(r.legs[0].check == "first_seen");
  CHECK(r.legs[0].first_at == kT0 + kDay);
  CHECK(r.legs[0].held_since == kT0 + kDay);
  REQUIRE(r.next.has_value());
  CHECK(*r.next == kT0 + 8 * kDay);
  const Transition left = OnlyTransition(s, 9 * kDay);
  CHECK(left.kind == TransitionKind::kLeft);
  CHECK(left.at == *r.next);
}

TEST_CASE("explain: an abandoned sequence's start and deadline, and the join at the deadline") {
  Scenario s;
  s.Define(R"({"id":"abandoned","criteria":{"type":"sequence","steps":[
    {"eventName":"checkout.started"},{"eventName":"payment.completed"}],
    "within":"15m","outcome":"abandoned","lookback":"1d"}})");
  s.At(0);
  s.Fire("b", "checkout.started", {});
  s.At(5 * kMinute);
  ExplainResult r = Explain(s, "abandoned", "b");
  const ExplainLeg& leg = r.legs[0];
  CHECK(leg.type == "sequence");
  CHECK(leg.check == "abandoned");
  CHECK_FALSE(leg.holds);
  CHECK(leg.started_at == kT0);
  CHECK_FALSE(leg.completed_at.has_value());
  CHECK(leg.deadline == kT0 + 15 * kMinute);
  CHECK(leg.lookback_ends_at == kT0 + kDay);
  REQUIRE(r.next.has_value());
  CHECK(*r.next == kT0 + 15 * kMinute);
  const Transition entered = OnlyTransition(s, kHour);
  CHECK(entered.kind == TransitionKind::kEntered);
  CHECK(entered.at == *r.next);
  // Held since the deadline, until the lookback ends.
  r = Explain(s, "abandoned", "b");
  CHECK(r.legs[0].held_since == kT0 + 15 * kMinute);
  REQUIRE(r.next.has_value());
  CHECK(*r.next == kT0 + kDay);
  const Transition left = OnlyTransition(s, 2 * kDay);
  CHECK(left.kind == TransitionKind::kLeft);
  CHECK(left.at == *r.next);
}

TEST_CASE("explain: a bucket leg with `for` reports the inner membership and joins on time") {
  Scenario s;
  s.Define(R"({"id":"buyers","criteria":{"type":"event","eventName":"purchase",
    "check":"exists"}})");
  s.Define(R"({"id":"loyal","criteria":{"type":"composite","operator":"and","conditions":[
    {"type":"bucket","bucketId":"buyers","check":"member","for":"1d"},
    {"type":"property","property":"plan","operator":"eq","value":"pro"}]}})");
  s.At(kHour);
  s.Event("u", "purchase", {Str("plan", "pro")});
  CHECK(Describe(s.Drain()) == V{"entered:buyers:u@3600000"});
  ExplainResult r = Explain(s, "loyal", "u");
  REQUIRE(r.legs.size() == 3);
  CHECK(r.legs[0].path == "criteria");
  CHECK(r.legs[0].type == "composite");
  CHECK(r.legs[0].check == "and");
  CHECK_FALSE(r.legs[0].holds);
  const ExplainLeg& bucket = Leg(r, "criteria.conditions[0]");
  CHECK(bucket.type == "bucket");
  CHECK(bucket.check == "member");
  CHECK(bucket.bucket_id == "buyers");
  CHECK(bucket.inner_member);
  CHECK(bucket.inner_entered_at == kT0 + kHour);
  CHECK_FALSE(bucket.holds);
  CHECK(bucket.next == kT0 + kHour + kDay);
  const ExplainLeg& plan = Leg(r, "criteria.conditions[1]");
  CHECK(plan.holds);
  CHECK(plan.held_since == kT0 + kHour);
  CHECK_FALSE(plan.next.has_value());
  REQUIRE(r.next.has_value());
  CHECK(*r.next == kT0 + kHour + kDay);
  const Transition entered = OnlyTransition(s, 3 * kDay);
  CHECK(entered.bucket_id == "loyal");
  CHECK(entered.kind == TransitionKind::kEntered);
  CHECK(entered.at == *r.next);
  r = Explain(s, "loyal", "u");
  CHECK(r.member);
  CHECK(r.held_since == kT0 + kHour + kDay);
}

TEST_CASE("explain: minDwell defers a leave until the instant it names") {
  Scenario s;
  s.Define(R"({"id":"recent","minDwell":"3d","criteria":{"type":"event","eventName":"visit",
    "check":"exists","within":"1d"}})");
  s.At(0);
  s.Event("u", "visit");
  s.Drain();
  ExplainResult r = Explain(s, "recent", "u");
  // Holding, but the criteria lapse at 1d, before minDwell ends: that leave is deferred.
  CHECK(r.next == kT0 + kDay);
  const ExplainBlocker* b = Blocker(r, "minDwell");
  REQUIRE(b != nullptr);
  CHECK(b->until == kT0 + 3 * kDay);
  s.At(2 * kDay);
  CHECK(s.Drain().empty());
  r = Explain(s, "recent", "u");
  CHECK(r.member);
  CHECK_FALSE(*r.holds);
  b = Blocker(r, "minDwell");
  REQUIRE(b != nullptr);
  REQUIRE(b->until.has_value());
  CHECK(*b->until == kT0 + 3 * kDay);
  CHECK(r.next_due_at == b->until);
  const Transition left = OnlyTransition(s, 4 * kDay);
  CHECK(left.kind == TransitionKind::kLeft);
  CHECK(left.at == *b->until);
  r = Explain(s, "recent", "u");
  CHECK(Blocker(r, "minDwell") == nullptr);
  REQUIRE(r.membership.has_value());
  CHECK_FALSE(r.membership->active);
  CHECK(r.membership->left_at == kT0 + 3 * kDay);
}

TEST_CASE("explain: a maxDwell leave blocks the re-join while the criteria hold") {
  Scenario s;
  s.Define(R"({"id":"pro","maxDwell":"1d","criteria":{"type":"property","property":"plan",
    "operator":"eq","value":"pro"}})");
  s.At(0);
  s.Event("u", "signup", {Str("plan", "pro")});
  s.Drain();
  ExplainResult r = Explain(s, "pro", "u");
  REQUIRE(r.membership.has_value());
  CHECK(r.membership->max_dwell_at == kT0 + kDay);
  CHECK(r.next_due_at == kT0 + kDay);
  CHECK(r.blockers.empty());
  const Transition left = OnlyTransition(s, 2 * kDay);
  CHECK(left.reason == LeaveReason::kMaxDwell);
  CHECK(left.at == kT0 + kDay);
  r = Explain(s, "pro", "u");
  CHECK(*r.holds);
  CHECK_FALSE(r.member);
  const ExplainBlocker* b = Blocker(r, "maxDwell");
  REQUIRE(b != nullptr);
  CHECK_FALSE(b->until.has_value());
  // Once the criteria stop holding, the block is gone, and they join again.
  s.Event("u", "downgrade", {Str("plan", "free")});
  CHECK(Blocker(Explain(s, "pro", "u"), "maxDwell") == nullptr);
  s.Event("u", "upgrade", {Str("plan", "pro")});
  CHECK(s.IsMember("pro", "u"));
}

TEST_CASE("explain: entryLimit once names the silent join, before and after it") {
  Scenario s;
  s.Define(R"({"id":"pro","entryLimit":"once","criteria":{"type":"property","property":"plan",
    "operator":"eq","value":"pro"}})");
  s.At(0);
  s.Event("u", "signup", {Str("plan", "pro")});
  CHECK(Explain(s, "pro", "u").blockers.empty());  // the first membership emitted `entered`
  s.Event("u", "downgrade", {Str("plan", "free")});
  s.Drain();
  ExplainResult r = Explain(s, "pro", "u");
  const ExplainBlocker* b = Blocker(r, "entryLimit");
  REQUIRE(b != nullptr);  // a join now would be silent
  CHECK_FALSE(b->until.has_value());
  s.Event("u", "upgrade", {Str("plan", "pro")});
  CHECK(s.Drain().empty());  // joined without `entered`
  r = Explain(s, "pro", "u");
  CHECK(r.member);
  CHECK(r.membership->entry_count == 2);
  CHECK(Blocker(r, "entryLimit") != nullptr);
}

TEST_CASE("explain: once_per_period says until when a join is silent") {
  Scenario s;
  s.Define(R"({"id":"pro","entryLimit":"once_per_period","entryPeriod":"7d",
    "criteria":{"type":"property","property":"plan","operator":"eq","value":"pro"}})");
  s.At(0);
  s.Event("u", "signup", {Str("plan", "pro")});
  s.At(kDay);
  s.Event("u", "downgrade", {Str("plan", "free")});
  s.At(2 * kDay);
  const ExplainBlocker* b = nullptr;
  ExplainResult r = Explain(s, "pro", "u");
  b = Blocker(r, "entryLimit");
  REQUIRE(b != nullptr);
  CHECK(b->until == kT0 + 8 * kDay);
  s.At(8 * kDay);
  CHECK(Blocker(Explain(s, "pro", "u"), "entryLimit") == nullptr);
}

TEST_CASE("explain: a disabled bucket and reconcileJoins false are named") {
  Scenario s;
  s.Define(R"({"id":"trial","reconcileJoins":false,"criteria":{"type":"property",
    "property":"trialEndsAt","operator":"before","value":"+3d"}})");
  s.At(0);
  s.Event("u", "signup", {Num("trialEndsAt", double(kT0 + 10 * kDay))});
  ExplainResult r = Explain(s, "trial", "u");
  CHECK(r.next == kT0 + 7 * kDay);
  const ExplainBlocker* b = Blocker(r, "reconcileJoins");
  REQUIRE(b != nullptr);
  s.At(8 * kDay);
  CHECK(s.Drain().empty());  // the clock does not join
  r = Explain(s, "trial", "u");
  CHECK(*r.holds);
  CHECK_FALSE(r.member);
  CHECK(Blocker(r, "reconcileJoins") != nullptr);
  // An input the bucket reads does (here a change of the property, still within 3 days).
  s.Event("u", "extend", {Num("trialEndsAt", double(kT0 + 9 * kDay))});
  CHECK(s.IsMember("trial", "u"));
  CHECK(Blocker(Explain(s, "trial", "u"), "reconcileJoins") == nullptr);

  RequireOk(s.engine().SetBucketEnabled("trial", false));
  r = Explain(s, "trial", "u");
  CHECK_FALSE(r.enabled);
  b = Blocker(r, "disabled");
  REQUIRE(b != nullptr);
  CHECK_FALSE(b->message.empty());
}

TEST_CASE("explain: a manual bucket has no legs; unknown ids and deleted contacts are 404") {
  Scenario s;
  s.Define(R"({"id":"vip","kind":"manual"})");
  s.Define(R"({"id":"any","criteria":{"type":"event","eventName":"visit","check":"exists"}})");
  s.Event("u", "visit");
  RequireOk(s.engine().AddMember("vip", "u"));
  ExplainResult r = Explain(s, "vip", "u");
  CHECK_FALSE(r.dynamic);
  CHECK(r.member);
  CHECK(r.legs.empty());
  CHECK_FALSE(r.holds.has_value());
  CHECK(r.membership->source == MembershipSource::kManual);

  CHECK(s.engine().ExplainMembership("nope", "u", &r).code() == StatusCode::kNotFound);
  CHECK(s.engine().ExplainMembership("any", "nobody", &r).code() == StatusCode::kNotFound);
  RequireOk(s.engine().DeleteContact("u"));
  const Status deleted = s.engine().ExplainMembership("any", "u", &r);
  CHECK(deleted.code() == StatusCode::kNotFound);
  CHECK(deleted.message().find("deleted") != std::string::npos);
}

TEST_CASE("explain logs nothing and changes nothing") {
  Scenario s;
  s.Define(R"({"id":"recent","criteria":{"type":"composite","operator":"or","conditions":[
    {"type":"event","eventName":"visit","check":"count","operator":"gte","value":3,
     "within":"1d"},
    {"type":"event","eventName":"purchase","check":"max","property":"amount","operator":"gt",
     "value":10}]}})");
  s.At(0);
  s.Event("u", "visit");
  s.Fire("u", "purchase", {Num("amount", 20)});
  const StateInfo before = s.engine().State();
  for (int i = 0; i < 3; ++i) (void)Explain(s, "recent", "u");
  const StateInfo after = s.engine().State();
  CHECK(after.log_seq == before.log_seq);
  CHECK(after.transition_seq == before.transition_seq);
  CHECK(after.digest == before.digest);
  const ExplainResult r = Explain(s, "recent", "u");
  CHECK(r.legs.size() == 3);
  CHECK(Leg(r, "criteria.conditions[0]").count == 1u);
  CHECK(Leg(r, "criteria.conditions[1]").aggregate == 20.0);
  CHECK(Leg(r, "criteria.conditions[1]").holds);
  CHECK(r.legs[0].check == "or");
  CHECK(*r.holds);
}
