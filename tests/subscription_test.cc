// Webhook subscriptions in the embedded API: their records in the log, replay (full, parallel,
// snapshot + tail) reproducing them and their cursors, refusals that change nothing, and the
// log format version a subscription moves a log to.
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <catch2/catch.hpp>

#include "tests/test_support.h"

namespace bucketd::testing {
namespace {

const char* kPower =
    R"({"id":"power","name":"Power","criteria":{"type":"event","eventName":"used",)"
    R"("check":"count","operator":"gte","value":1,"within":"1d"}})";

std::unique_ptr<Engine> OpenAt(const std::string& dir, bool use_snapshots = true,
                               uint32_t replay_threads = 1) {
  Options o = ManualOptions(dir);
  o.use_snapshots = use_snapshots;
  o.replay_threads = replay_threads;
  return OpenOrFail(o);
}

// Emits one `entered` per new user.
void Enter(Engine& engine, const std::string& user) {
  IngestResult r;
  RequireOk(engine.Ingest(EventInput{user, "used", {}, std::nullopt, {}, std::nullopt}, &r));
}

// "id url bucket kinds cursor created" of every subscription, secret included.
std::vector<std::string> Describe(const std::vector<SubscriptionInfo>& subs) {
  std::vector<std::string> out;
  for (const SubscriptionInfo& s : subs) {
    std::string kinds;
    for (TransitionKind k : s.filter.kinds) kinds += std::string(ToString(k)) + ",";
    out.push_back(s.id + " " + s.url + " " + s.filter.bucket_id + " " + kinds + " " + s.secret +
                  " " + std::to_string(s.cursor) + " " + std::to_string(s.created_at));
  }
  return out;
}

std::string MetaValue(const std::string& log_dir, const std::string& key) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : {"default", "records", "transitions", "idempotency", "meta"}) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  REQUIRE(
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), log_dir, families, &handles, &db).ok());
  std::string value;
  REQUIRE(db->Get(rocksdb::ReadOptions(), handles[4], key, &value).ok());
  for (auto* handle : handles) REQUIRE(db->DestroyColumnFamilyHandle(handle).ok());
  delete db;
  return value;
}

// Overwrites a value of the log's meta family (the log closed), as an older build's log.
void SetMetaValue(const std::string& log_dir, const std::string& key, const std::string& value) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : {"default", "records", "transitions", "idempotency", "meta"}) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), log_dir, families, &handles, &db).ok());
  REQUIRE(db->Put(rocksdb::WriteOptions(), handles[4], key, value).ok());
  for (auto* handle : handles) REQUIRE(db->DestroyColumnFamilyHandle(handle).ok());
  delete db;
}

}  // namespace

TEST_CASE("a subscription is created, advanced and deleted by logged inputs") {
  TempDir dir;
  auto engine = OpenAt(dir.path());
  RequireOk(engine->DefineBucket(kPower, DefineMode::kCreate, std::nullopt, nullptr));
  Enter(*engine, "a");  // transition 1, before the subscription: not delivered

  SubscriptionSpec spec;
  spec.url = "http://127.0.0.1:9/hook";
  spec.filter.bucket_id = "power";
  spec.filter.kinds = {TransitionKind::kLeft, TransitionKind::kEntered, TransitionKind::kLeft};
  SubscriptionInfo sub;
  const uint64_t log_before = engine->State().log_seq;
  RequireOk(engine->CreateSubscription(spec, &sub));
  CHECK(engine->State().log_seq == log_before + 1);
  CHECK(sub.id.size() == 4 + 24);
  CHECK(sub.id.starts_with("sub_"));
  CHECK(sub.secret.size() == 6 + 64);
  CHECK(sub.secret.starts_with("whsec_"));
  CHECK(sub.cursor == 1);  // the stream's end when it was created
  CHECK(sub.created_at == kT0);
  // Sorted, without repeats.
  CHECK(sub.filter.kinds == std::vector{TransitionKind::kEntered, TransitionKind::kLeft});

  Enter(*engine, "b");
  Enter(*engine, "c");
  RequireOk(engine->AdvanceSubscription(sub.id, 3));
  SubscriptionInfo read;
  RequireOk(engine->GetSubscription(sub.id, &read));
  CHECK(read.cursor == 3);
  // Moving to where it is logs nothing.
  const uint64_t log_at = engine->State().log_seq;
  RequireOk(engine->AdvanceSubscription(sub.id, 3));
  CHECK(engine->State().log_seq == log_at);

  RequireOk(engine->DeleteSubscription(sub.id));
  CHECK(engine->ListSubscriptions().empty());
  CHECK(engine->GetSubscription(sub.id, &read).code() == StatusCode::kNotFound);
  CHECK(engine->DeleteSubscription(sub.id).code() == StatusCode::kNotFound);
  CHECK(engine->AdvanceSubscription(sub.id, 3).code() == StatusCode::kNotFound);
}

TEST_CASE("bad subscription input is refused naming the field, and nothing changes") {
  TempDir dir;
  auto engine = OpenAt(dir.path());
  Enter(*engine, "a");
  const StateInfo before = engine->State();
  const auto refused = [&](SubscriptionSpec spec, const std::string& field) {
    SubscriptionInfo out;
    const Status s = engine->CreateSubscription(spec, &out);
    INFO(s.ToString());
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.field() == field);
  };
  SubscriptionSpec ok;
  ok.url = "http://localhost:8080/hook";
  for (const char* url :
       {"", "https://localhost/", "ftp://x/", "http://", "http://a b/", "http://user@localhost/",
        "http://localhost:0/", "http://localhost:99999/", "http://localhost/#frag", "http://[::1/",
        "http://ex_ample.com/"}) {
    SubscriptionSpec spec = ok;
    spec.url = url;
    refused(spec, "url");
  }
  SubscriptionSpec spec = ok;
  spec.url = "http://localhost/" + std::string(kSubscriptionUrlBytesMax, 'a');
  refused(spec, "url");
  spec = ok;
  spec.secret = "short";
  refused(spec, "secret");
  spec.secret = "sixteen bytes!!!";  // a space
  refused(spec, "secret");
  spec = ok;
  spec.filter.bucket_id = "no spaces";
  refused(spec, "bucket");
  spec = ok;
  spec.after = 2;  // the stream holds nothing yet: no bucket
  refused(spec, "after");

  SubscriptionInfo sub;
  RequireOk(engine->CreateSubscription(ok, &sub));
  CHECK(engine->AdvanceSubscription(sub.id, 5).field() == "cursor");
  const StateInfo after_create = engine->State();
  CHECK(after_create.log_seq == before.log_seq + 1);

  // The cap on subscriptions.
  for (size_t i = 1; i < kSubscriptionsMax; ++i) RequireOk(engine->CreateSubscription(ok, nullptr));
  CHECK(engine->CreateSubscription(ok, nullptr).code() == StatusCode::kFailedPrecondition);
  CHECK(engine->ListSubscriptions().size() == kSubscriptionsMax);
}

TEST_CASE("a cursor never moves back") {
  TempDir dir;
  auto engine = OpenAt(dir.path());
  RequireOk(engine->DefineBucket(kPower, DefineMode::kCreate, std::nullopt, nullptr));
  SubscriptionSpec spec;
  spec.url = "http://[::1]:8080/";
  SubscriptionInfo sub;
  RequireOk(engine->CreateSubscription(spec, &sub));
  CHECK(sub.cursor == 0);
  Enter(*engine, "a");
  Enter(*engine, "b");
  RequireOk(engine->AdvanceSubscription(sub.id, 2));
  const Status back = engine->AdvanceSubscription(sub.id, 1);
  CHECK(back.code() == StatusCode::kFailedPrecondition);
  CHECK(back.field() == "cursor");
}

TEST_CASE("replay reproduces subscriptions and cursors: full, parallel, snapshot + tail") {
  TempDir dir;
  std::vector<std::string> live;
  std::string digest;
  {
    auto engine = OpenAt(dir.path());
    RequireOk(engine->DefineBucket(kPower, DefineMode::kCreate, std::nullopt, nullptr));
    SubscriptionSpec first;
    first.url = "http://127.0.0.1:7000/a";
    first.secret = "a-secret-of-16-bytes";
    SubscriptionInfo a;
    RequireOk(engine->CreateSubscription(first, &a));
    for (int i = 0; i < 40; ++i) Enter(*engine, "u" + std::to_string(i));
    RequireOk(engine->AdvanceSubscription(a.id, 10));
    SnapshotInfo snapshot;
    RequireOk(engine->TakeSnapshot(&snapshot));
    SweepResult sweep;
    RequireOk(engine->AdvanceClock(kT0 + kHour, &sweep));
    SubscriptionSpec second;
    second.url = "http://localhost:7001/b";
    second.filter.kinds = {TransitionKind::kLeft};
    second.after = 5;
    SubscriptionInfo b;
    RequireOk(engine->CreateSubscription(second, &b));
    RequireOk(engine->AdvanceSubscription(a.id, 30));
    RequireOk(engine->AdvanceSubscription(b.id, 40));
    SubscriptionSpec third;
    third.url = "http://localhost:7002/c";
    SubscriptionInfo c;
    RequireOk(engine->CreateSubscription(third, &c));
    RequireOk(engine->DeleteSubscription(c.id));
    live = Describe(engine->ListSubscriptions());
    digest = engine->State().digest;
    REQUIRE(live.size() == 2);
  }
  {
    auto engine = OpenAt(dir.path());  // the snapshot and the tail
    CHECK(Describe(engine->ListSubscriptions()) == live);
    CHECK(engine->State().digest == digest);
  }
  {
    auto engine = OpenAt(dir.path(), /*use_snapshots=*/false);
    CHECK(Describe(engine->ListSubscriptions()) == live);
    CHECK(engine->State().digest == digest);
  }
  {
    auto engine = OpenAt(dir.path(), /*use_snapshots=*/false, /*replay_threads=*/3);
    CHECK(Describe(engine->ListSubscriptions()) == live);
    CHECK(engine->State().digest == digest);
  }
  {
    // A snapshot taken with subscriptions, then loaded alone.
    auto engine = OpenAt(dir.path());
    SnapshotInfo snapshot;
    RequireOk(engine->TakeSnapshot(&snapshot));
  }
  auto engine = OpenAt(dir.path());
  CHECK(Describe(engine->ListSubscriptions()) == live);
  CHECK(engine->State().digest == digest);
}

TEST_CASE(
    "a version 2 log without subscriptions keeps format version 2 and its digest; the first "
    "subscription makes it version 3") {
  TempDir dir;
  std::string digest;
  OpenAt(dir.path());  // an empty log, then made version 2 (new logs are version 6)
  SetMetaValue(dir.path() + "/log", "format_version", "2");
  {
    auto engine = OpenAt(dir.path());
    RequireOk(engine->DefineBucket(kPower, DefineMode::kCreate, std::nullopt, nullptr));
    Enter(*engine, "a");
    SnapshotInfo snapshot;
    RequireOk(engine->TakeSnapshot(&snapshot));  // a snapshot without the subscriptions field
    digest = engine->State().digest;
  }
  CHECK(MetaValue(dir.path() + "/log", "format_version") == "2");
  {
    // What an older build wrote loads as it was: same digest, no subscriptions.
    auto engine = OpenAt(dir.path());
    CHECK(engine->State().digest == digest);
    CHECK(engine->ListSubscriptions().empty());
    SubscriptionSpec spec;
    spec.url = "http://localhost:1/";
    RequireOk(engine->CreateSubscription(spec, nullptr));
    CHECK(engine->State().digest != digest);
  }
  CHECK(MetaValue(dir.path() + "/log", "format_version") == "3");
  auto engine = OpenAt(dir.path(), /*use_snapshots=*/false);
  CHECK(engine->ListSubscriptions().size() == 1);
}

TEST_CASE("a new log is format version 6 and stays 6 with subscriptions") {
  TempDir dir;
  {
    auto engine = OpenAt(dir.path());
    RequireOk(engine->DefineBucket(kPower, DefineMode::kCreate, std::nullopt, nullptr));
    Enter(*engine, "a");
    SubscriptionSpec spec;
    spec.url = "http://localhost:1/";
    RequireOk(engine->CreateSubscription(spec, nullptr));
  }
  CHECK(MetaValue(dir.path() + "/log", "format_version") == "6");
  auto engine = OpenAt(dir.path(), /*use_snapshots=*/false);
  CHECK(engine->ListSubscriptions().size() == 1);
}

}  // namespace bucketd::testing
