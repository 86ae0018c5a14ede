// The fold driven directly by log records: the pure function at the heart of the engine.
#include <catch2/catch.hpp>

#include "engine/definition.h"
#include "engine/fold.h"
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

  Fold fold;
  std::vector<Transition> out;

 private:
  Record Next(RecordKind kind, TimeMs at) {
    Record r;
    r.seq = fold.state().applied_seq + 1;
    r.at = kT0 + at;
    r.kind = kind;
    return r;
  }
  Status Apply(const Record& r) { return fold.Apply(r, &out); }
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

TEST_CASE("a threshold leg keeps only the instants it needs") {
  Records r;
  RequireOk(r.Define(
      R"({"id":"p","criteria":{"type":"event","eventName":"used","check":"count","operator":"gte","value":10,"within":"30d"}})",
      0));
  for (int i = 0; i < 5000; ++i) RequireOk(r.Event("u", "used", i));
  const User& user = *r.fold.state().users[0];
  REQUIRE(user.events.size() == 1);
  CHECK(user.events[0].total_count == 5000);
  CHECK(user.events[0].newest.size() == 10);
  CHECK(user.events[0].newest.front() == kT0 + 4990);
}
