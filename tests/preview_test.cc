// Engine::PreviewBucket (POST /v1/buckets/preview) and Engine::GetUser (GET /v1/users/{id}),
// through the public engine API: what a preview answers is what defining the bucket then
// does, nothing is logged or changed, refusals are a definition's, and history deeper than
// memory keeps is re-read from the log.
#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/test_support.h"

namespace bucketd::testing {
namespace {

std::string Uid(int i) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "u%03d", i);
  return buffer;
}

PreviewResult Preview(Engine& engine, const std::string& json) {
  PreviewResult out;
  RequireOk(engine.PreviewBucket(json, &out));
  return out;
}

uint64_t CountOf(Engine& engine, const std::string& id) {
  uint64_t n = 0;
  RequireOk(engine.Count(id, &n));
  return n;
}

std::vector<std::string> MemberIds(Engine& engine, const std::string& id) {
  MembersPage page;
  RequireOk(engine.Members(id, "", kMembersPageMax, &page));
  std::vector<std::string> ids;
  for (const Member& m : page.members) ids.push_back(m.user_id);
  return ids;
}

std::string Windowed(const std::string& id, const std::string& event, const std::string& op,
                     int value, const std::string& within = "30d") {
  return R"({"id":")" + id + R"(","criteria":{"type":"event","eventName":")" + event +
         R"(","check":"count","operator":")" + op + R"(","value":)" + std::to_string(value) +
         R"(,"within":")" + within + R"("}})";
}

TEST_CASE("user: the contact, its properties and a summary per event name", "[user]") {
  Scenario s;
  UserInfo user;
  CHECK(s.engine().GetUser("nobody", &user).code() == StatusCode::kNotFound);

  EventInput in;
  in.user_id = "alice";
  in.event = "app.opened";
  in.email = "  Alice@Example.COM ";
  in.contact_properties = {{"plan", PropertyValue::String("pro")},
                           {"seats", PropertyValue::Number(3)},
                           {"admin", PropertyValue::Bool(true)}};
  in.occurred_at_ms = kT0 - kHour;
  IngestResult ingested;
  RequireOk(s.engine().Ingest(in, &ingested));
  s.At(kHour);
  s.Event("alice", "app.opened");
  s.Event("alice", "checkout.started", {{"seats", PropertyValue::Null()}});
  s.Event("bob", "app.opened");

  RequireOk(s.engine().GetUser("alice", &user));
  CHECK(user.user_id == "alice");
  CHECK(user.email == "alice@example.com");
  CHECK_FALSE(user.deleted);
  // By key; a null in a patch removed the key.
  REQUIRE(user.properties.size() == 2);
  CHECK(user.properties[0].key == "admin");
  CHECK(user.properties[0].value == PropertyValue::Bool(true));
  CHECK(user.properties[1].key == "plan");
  CHECK(user.properties[1].value == PropertyValue::String("pro"));
  // By name.
  REQUIRE(user.events.size() == 2);
  CHECK(user.events[0].event == "app.opened");
  CHECK(user.events[0].count == 2);
  CHECK(user.events[0].first_at == kT0 - kHour);
  CHECK(user.events[0].last_at == kT0 + kHour);
  CHECK(user.events[1].event == "checkout.started");
  CHECK(user.events[1].count == 1);
  CHECK(user.events[1].first_at == kT0 + kHour);

  // A contact added to a manual bucket only has no events.
  s.Define(R"({"id":"vip","kind":"manual"})");
  RequireOk(s.engine().AddMember("vip", "carol"));
  RequireOk(s.engine().GetUser("carol", &user));
  CHECK(user.events.empty());
  CHECK_FALSE(user.email.has_value());

  // Deleted: only the flag; erased: unknown.
  RequireOk(s.engine().DeleteContact("alice"));
  RequireOk(s.engine().GetUser("alice", &user));
  CHECK(user.deleted);
  CHECK(user.properties.empty());
  CHECK(user.events.empty());
  CHECK_FALSE(user.email.has_value());
  ErasureResult erased;
  RequireOk(s.engine().EraseContact("bob", &erased));
  CHECK(s.engine().GetUser("bob", &user).code() == StatusCode::kNotFound);
}

TEST_CASE("preview: count, sample, entering and leaving against the stored bucket", "[preview]") {
  Scenario s;
  // 30 users: u000-u029; user i uses the feature i % 5 times.
  for (int i = 0; i < 30; ++i) {
    for (int k = 0; k < i % 5; ++k) s.Event(Uid(i), "used");
    s.Event(Uid(i), "seen", {{"tier", PropertyValue::Number(i % 3)}});
  }
  s.Define(Windowed("power", "used", "gte", 3));  // i % 5 in {3, 4}: 12 users
  REQUIRE(CountOf(s.engine(), "power") == 12);
  const StateInfo before = s.engine().State();

  SECTION("no stored bucket: everyone selected is entering") {
    const PreviewResult p = Preview(s.engine(), Windowed("fresh", "used", "gte", 1));
    CHECK(p.count == 24);
    CHECK_FALSE(p.stored);
    CHECK(p.entering == 24);
    CHECK(p.leaving == 0);
    // The smallest 20 ids, ascending.
    REQUIRE(p.sample.size() == kPreviewSampleMax);
    CHECK(std::is_sorted(p.sample.begin(), p.sample.end()));
    CHECK(p.sample.front() == "u001");
    CHECK(p.sample[3] == "u004");
    CHECK(p.sample[4] == "u006");
  }
  SECTION("a replacement of the stored bucket: who would enter and leave") {
    // i % 5 >= 2 or tier == 0.
    const std::string json =
        R"({"id":"power","criteria":{"type":"composite","operator":"or","conditions":[)"
        R"({"type":"event","eventName":"used","check":"count","operator":"gte","value":2,)"
        R"("within":"30d"},{"type":"property","property":"tier","operator":"eq","value":0}]}})";
    std::set<std::string> expected;
    for (int i = 0; i < 30; ++i) {
      if (i % 5 >= 2 || i % 3 == 0) expected.insert(Uid(i));
    }
    const PreviewResult p = Preview(s.engine(), json);
    CHECK(p.stored);
    CHECK(p.count == expected.size());
    const std::vector<std::string> members = MemberIds(s.engine(), "power");
    const std::set<std::string> stored(members.begin(), members.end());
    uint64_t entering = 0;
    for (const std::string& id : expected) entering += stored.count(id) == 0 ? 1 : 0;
    CHECK(p.entering == entering);
    CHECK(p.leaving == 0);  // every old member still holds
    CHECK(p.sample == std::vector<std::string>(expected.begin(),
                                               std::next(expected.begin(), kPreviewSampleMax)));
    // Nothing logged, nothing changed.
    const StateInfo after = s.engine().State();
    CHECK(after.log_seq == before.log_seq);
    CHECK(after.digest == before.digest);
    // And defining it does what the preview said.
    s.Drain();
    s.Define(json);
    CHECK(CountOf(s.engine(), "power") == p.count);
    BucketInfo info;
    RequireOk(s.engine().GetBucket("power", &info));
    CHECK(info.counts.entered == 12 + p.entering);
    CHECK(info.counts.left == p.leaving);
  }
  SECTION("a narrower replacement: leavers") {
    const PreviewResult p = Preview(s.engine(), Windowed("power", "used", "gte", 4));
    CHECK(p.count == 6);
    CHECK(p.entering == 0);
    CHECK(p.leaving == 6);
    s.Drain();
    s.Define(Windowed("power", "used", "gte", 4));
    uint64_t left = 0;
    for (const Transition& t : s.Drain()) left += t.kind == TransitionKind::kLeft ? 1 : 0;
    CHECK(left == p.leaving);
  }
  SECTION("as of now: the clock moved since the last input") {
    s.At(31 * kDay);
    const PreviewResult p = Preview(s.engine(), Windowed("power", "used", "gte", 1));
    CHECK(p.count == 0);
    CHECK(p.leaving == 0);  // the sweep emptied the stored bucket
  }
}

TEST_CASE("preview: refusals are a definition's, with the same field paths", "[preview]") {
  Scenario s;
  s.Event("u1", "used");
  const StateInfo before = s.engine().State();
  const std::vector<std::string> bad = {
      "{not json",
      R"([1])",
      R"({"criteria":{"type":"event","eventName":"used","check":"exists"}})",
      R"({"id":"a b","criteria":{"type":"event","eventName":"used","check":"exists"}})",
      R"({"id":"..","criteria":{"type":"event","eventName":"used","check":"exists"}})",
      R"({"id":"x","criteria":{"type":"event","eventName":"used","check":"exists","colour":1}})",
      R"({"id":"x","criteria":{"type":"event","eventName":"used","check":"count","operator":"gt"}})",
      R"({"id":"x","criteria":{"type":"event","eventName":"bucket:x","check":"exists"}})",
      R"({"id":"x","criteria":{"type":"property","property":"p","operator":"not_exists"}})",
      R"({"id":"x","criteria":{"type":"event","eventName":"used","check":"exists","within":"0d"}})",
      R"({"id":"x","criteria":{"type":"composite","operator":"and","conditions":[]}})",
      R"({"id":"x","minDwell":"2d","maxDwell":"1d","criteria":{"type":"event","eventName":"u",)"
      R"("check":"exists"}})",
  };
  for (const std::string& json : bad) {
    INFO(json);
    PreviewResult p;
    const Status preview = s.engine().PreviewBucket(json, &p);
    const Status define = s.engine().DefineBucket(json, DefineMode::kCreate, std::nullopt, nullptr);
    REQUIRE_FALSE(define.ok());
    CHECK(preview.code() == define.code());
    CHECK(preview.field() == define.field());
    CHECK(preview.message() == define.message());
  }
  PreviewResult p;
  const Status manual = s.engine().PreviewBucket(R"({"id":"vip","kind":"manual"})", &p);
  CHECK(manual.code() == StatusCode::kInvalidArgument);
  CHECK(manual.field() == "kind");
  CHECK(s.engine().State().digest == before.digest);
  CHECK(s.engine().State().log_seq == before.log_seq);
}

// The fold keeps the newest max(depth, 4) instants per (user, name): a threshold deeper than
// any bucket's is decided from the log, exactly, and the answer is what a define then does.
TEST_CASE("preview: history deeper than memory keeps is re-read from the log", "[preview]") {
  Scenario s;
  std::mt19937 random(7);
  // 40 users with 0-14 events each spread over 20 days.
  std::vector<int> counts(40);
  for (int i = 0; i < 40; ++i) {
    counts[i] = static_cast<int>(random() % 15);
    for (int k = 0; k < counts[i]; ++k) {
      s.Event(Uid(i), "used", {}, kT0 - static_cast<TimeMs>(random() % (20 * kDay)));
    }
  }
  s.At(kHour);
  for (const auto& [op, value, within] : std::vector<std::tuple<std::string, int, std::string>>{
           {"eq", 4, "15d"}, {"lt", 6, "10d"}, {"gte", 8, "30d"}, {"gt", 10, "30d"}}) {
    // Each threshold deeper than the one defined before it.
    const std::string json = Windowed("deep-" + op, "used", op, value, within);
    INFO(json);
    const PreviewResult p = Preview(s.engine(), json);
    CHECK(p.history_reread_users > 0);
    s.Define(json);
    CHECK(CountOf(s.engine(), "deep-" + op) == p.count);
    // Defined, the depth is retained: the same preview reads nothing more.
    const PreviewResult again = Preview(s.engine(), json);
    CHECK(again.history_reread_users == 0);
    CHECK(again.count == p.count);
    CHECK(again.entering == 0);
    CHECK(again.leaving == 0);
  }

  SECTION("within a group: staged events count") {
    s.engine().BeginGroup();
    for (int k = 0; k < 12; ++k) s.Event("late", "used");
    const PreviewResult p = Preview(s.engine(), Windowed("p", "used", "gte", 12));
    RequireOk(s.engine().EndGroup());
    const PreviewResult again = Preview(s.engine(), Windowed("p", "used", "gte", 12));
    CHECK(p.count == again.count);
    CHECK(std::find(p.sample.begin(), p.sample.end(), "late") != p.sample.end());
  }
}

// A contact with far more events than the depth: the re-read keeps only the newest, and the
// answer is still what a define then does.
TEST_CASE("preview: a re-read keeps the newest instants of a long history", "[preview]") {
  Scenario s;
  s.At(100 * kDay);
  // "many": one event a day for 60 days, sent newest first (late events land in place).
  for (int k = 0; k < 60; ++k) s.Event("many", "used", {}, kT0 + (99 - k) * kDay);
  for (int k = 0; k < 5; ++k) s.Event("few", "used", {}, kT0 + (90 + k) * kDay);
  for (const auto& [op, value, within, holds_many] :
       std::vector<std::tuple<std::string, int, std::string, bool>>{{"gte", 7, "10d", true},
                                                                    {"lt", 9, "8d", true},
                                                                    {"eq", 9, "10d", true},
                                                                    {"gte", 12, "11d", false}}) {
    const std::string json = Windowed("many-" + op, "used", op, value, within);
    INFO(json);
    const PreviewResult p = Preview(s.engine(), json);
    CHECK(p.history_reread_users >= 1);
    CHECK((std::find(p.sample.begin(), p.sample.end(), "many") != p.sample.end()) == holds_many);
    s.Define(json);
    CHECK(CountOf(s.engine(), "many-" + op) == p.count);
    CHECK(MemberIds(s.engine(), "many-" + op) == p.sample);
  }
}

TEST_CASE("preview: a read-only engine previews; a deleted contact is never counted", "[preview]") {
  TempDir dir;
  {
    auto engine = OpenOrFail(ManualOptions(dir.path()));
    for (int i = 0; i < 5; ++i) {
      EventInput in{Uid(i), "used", std::nullopt, std::nullopt, {}, std::nullopt};
      IngestResult r;
      for (int k = 0; k < 6; ++k) RequireOk(engine->Ingest(in, &r));
    }
    RequireOk(engine->DeleteContact(Uid(2)));
    RequireOk(engine->Close());
  }
  Options options = ManualOptions(dir.path());
  options.read_only = true;
  auto engine = OpenOrFail(options);
  const PreviewResult p = Preview(*engine, Windowed("p", "used", "gte", 6));
  CHECK(p.count == 4);
  CHECK(p.history_reread_users == 4);
  CHECK(p.sample == std::vector<std::string>{Uid(0), Uid(1), Uid(3), Uid(4)});
}

}  // namespace
}  // namespace bucketd::testing

namespace bucketd::testing {
namespace {

// SPEC §3b legs read streams that nothing keeps until a bucket reads them: the preview
// rebuilds them from the log, and answers what defining the bucket then does.
TEST_CASE("preview: where filters, aggregates, sequences and bucket legs", "[preview]") {
  Scenario s;
  std::mt19937_64 rng(5);
  const char* plans[] = {"pro", "basic"};
  for (int i = 0; i < 300; ++i) {
    s.At(i * kMinute);
    const std::string user = Uid(static_cast<int>(rng() % 60));
    const std::string event = rng() % 3 == 0 ? "checkout" : "buy";
    s.Fire(user, event,
           {{"plan", PropertyValue::String(plans[rng() % 2])},
            {"amount", PropertyValue::Number(double(rng() % 50))}});
  }
  s.Define(R"({"id":"buyers","criteria":{"type":"event","eventName":"buy","check":"count",
    "operator":"gte","value":3}})");
  const std::vector<std::string> definitions = {
      R"({"id":"pro","criteria":{"type":"event","eventName":"buy","check":"count","operator":"gte","value":2,"within":"2h","where":[{"property":"plan","operator":"eq","value":"pro"}]}})",
      R"({"id":"spend","criteria":{"type":"event","eventName":"buy","check":"sum","property":"amount","operator":"gte","value":120,"within":"3h"}})",
      R"({"id":"variety","criteria":{"type":"event","eventName":"buy","check":"distinct","property":"amount","operator":"gte","value":4}})",
      R"({"id":"abandon","criteria":{"type":"sequence","steps":[{"eventName":"checkout"},{"eventName":"buy","where":[{"property":"amount","operator":"gt","value":30}]}],"within":"20m","outcome":"abandoned"}})",
      R"({"id":"quiet-buyers","criteria":{"type":"composite","operator":"and","conditions":[{"type":"bucket","bucketId":"buyers","check":"member"},{"type":"event","eventName":"checkout","check":"first_seen","within":"2h","where":[{"property":"plan","operator":"eq","value":"basic"}]}]}})",
  };
  for (const std::string& json : definitions) {
    INFO(json);
    const PreviewResult p = Preview(s.engine(), json);
    const auto log_seq = s.engine().State().log_seq;
    s.Define(json);
    CHECK(s.engine().State().log_seq == log_seq + 1);
    const std::string id = json.substr(7, json.find('"', 7) - 7);
    CHECK(p.count == CountOf(s.engine(), id));
    CHECK(p.count > 0);
    std::vector<std::string> members = MemberIds(s.engine(), id);
    members.resize(std::min<size_t>(members.size(), p.sample.size()));
    CHECK(p.sample == members);
    // Now that a bucket reads them, the streams are kept: the same answer from memory.
    const PreviewResult again = Preview(s.engine(), json);
    CHECK(again.count == p.count);
    CHECK(again.history_reread_users == 0);
  }
}

}  // namespace
}  // namespace bucketd::testing
