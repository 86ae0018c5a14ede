#include "log/log.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <rocksdb/db.h>
#include <catch2/catch.hpp>

#include "tests/log_test_support.h"
#include "tests/test_support.h"

#include "log/chunk.h"
#include "log/record_codec.h"

namespace bucketd {
namespace {

using testing::ManualOptions;
using testing::OpenLog;
using testing::OpenOrFail;
using testing::SeenKey;
using testing::TempDir;

// A record whose content is a function of its seq, so a reader can check what it got.
Record EventRecord(uint64_t seq) {
  Record r;
  r.seq = seq;
  r.at = 1'700'000'000'000 + static_cast<TimeMs>(seq);
  r.kind = RecordKind::kEvent;
  r.user_id = "user-" + std::to_string(seq % 1000);
  r.event_name = "page_view";
  r.occurred_at = r.at - 5;
  r.properties = {{"plan", PropertyValue::String("pro")}, {"n", PropertyValue::Number(seq)}};
  r.idempotency_key = "evt-" + std::to_string(seq);
  return r;
}

Transition MakeTransition(uint64_t seq) {
  Transition t;
  t.seq = seq;
  t.kind = TransitionKind::kEntered;
  t.bucket_id = "power-users";
  t.bucket_name = "Power users";
  t.user_id = "user-" + std::to_string(seq);
  t.entry_count = 1;
  t.at = 1'700'000'000'000;
  t.detected_at = t.at;
  return t;
}

std::vector<Record> ReadAll(const Log& log, uint64_t from_seq, Status* status) {
  std::vector<Record> records;
  std::unique_ptr<RecordReader> reader = log.ReadFrom(from_seq);
  Record record;
  while (reader->Next(&record)) records.push_back(record);
  *status = reader->status();
  return records;
}

// Every kind, every field, property values of every type, optional fields both ways.
std::vector<Record> AllKindsOfRecords() {
  std::vector<Record> records;
  auto add = [&](RecordKind kind) -> Record& {
    Record& r = records.emplace_back();
    r.seq = records.size();
    r.at = 1'700'000'000'000 + static_cast<TimeMs>(records.size()) * 1000;
    r.kind = kind;
    return r;
  };
  Record& full = add(RecordKind::kEvent);
  full.user_id = "u1";
  full.event_name = "purchase";
  full.occurred_at = -42;  // before the epoch: signed times survive
  full.email = "a@b.c";
  full.idempotency_key = "idem-1";
  PropertyValue array{PropertyValue::Type::kArray, false, 0, "[1,\"x\",{\"k\":null}]"};
  PropertyValue object{PropertyValue::Type::kObject, false, 0, "{\"a\":[true]}"};
  full.properties = {
      {"gone", PropertyValue::Null()},
      {"vip", PropertyValue::Bool(true)},
      {"off", PropertyValue::Bool(false)},
      {"score", PropertyValue::Number(-12.5e300)},
      {"zero", PropertyValue::Number(0)},
      {"name", PropertyValue::String("Zoë \"quoted\"")},
      {"empty", PropertyValue::String("")},
      {"tags", array},
      {"meta", object},
      {"", PropertyValue::String("empty key")},
  };
  // Numbers in each of the compact encoding's forms (log_format.md, "Compact properties"):
  // integers as varints up to 2^53, anything else as the double's bits; and a value only an
  // embedded caller can build (fields beyond its type's set), which must replay as it was.
  full.event_properties = {
      {"amount", PropertyValue::Number(129)},
      {"refund", PropertyValue::Number(-7)},
      {"price", PropertyValue::Number(19.99)},
      {"exact", PropertyValue::Number(9007199254740992.0)},
      {"beyond", PropertyValue::Number(9007199254740994.0)},
      {"tiny", PropertyValue::Number(-1e-300)},
      {"paid", PropertyValue::Bool(false)},
      {"plan", PropertyValue::String("pro")},
      {"odd", PropertyValue{PropertyValue::Type::kString, true, 3.5, "x"}},
      {"odd-null", PropertyValue{PropertyValue::Type::kNull, false, -0.0, ""}},
  };
  Record& purchase = add(RecordKind::kEvent);  // event properties only, as §3b's purchases
  purchase.user_id = "u4";
  purchase.event_name = "purchase";
  purchase.event_properties = {{"amount", PropertyValue::Number(42)},
                               {"plan", PropertyValue::String("basic")}};
  Record& bare = add(RecordKind::kEvent);  // optional fields absent
  bare.user_id = "u2";
  bare.event_name = "login";
  Record& empty_optionals = add(RecordKind::kEvent);  // present but empty is not absent
  empty_optionals.user_id = "u3";
  empty_optionals.email = "";
  empty_optionals.idempotency_key = "";
  add(RecordKind::kContactDelete).user_id = "u1";
  Record& define = add(RecordKind::kBucketDefine);
  define.bucket_id = "b1";
  define.definition_json = R"({"id":"b1","name":"B one","criteria":{"all":[]}})";
  add(RecordKind::kBucketEnable).bucket_id = "b1";
  add(RecordKind::kBucketDisable).bucket_id = "b1";
  Record& member_add = add(RecordKind::kMemberAdd);
  member_add.user_id = "u2";
  member_add.bucket_id = "b1";
  Record& member_remove = add(RecordKind::kMemberRemove);
  member_remove.user_id = "u2";
  member_remove.bucket_id = "b1";
  add(RecordKind::kBucketDelete).bucket_id = "b1";
  add(RecordKind::kClockAdvance);
  add(RecordKind::kSweep).at = std::numeric_limits<TimeMs>::max();
  return records;
}

std::vector<Transition> AllKindsOfTransitions() {
  std::vector<Transition> transitions;
  Transition entered = MakeTransition(1);
  entered.email = "a@b.c";
  entered.source = MembershipSource::kBackfill;
  entered.entry_count = 4'000'000'000u;
  transitions.push_back(entered);
  Transition left = MakeTransition(2);
  left.kind = TransitionKind::kLeft;
  left.reason = LeaveReason::kMaxDwell;
  left.source = MembershipSource::kManual;
  left.email = "";
  left.detected_at = left.at + 30'000;
  transitions.push_back(left);
  Transition dwell = MakeTransition(3);
  dwell.kind = TransitionKind::kDwell;
  dwell.dwell_label = "every-3600000";
  dwell.dwell_count = 7;
  dwell.source = MembershipSource::kReconcile;
  dwell.reason = LeaveReason::kManual;
  transitions.push_back(dwell);
  return transitions;
}

// Raw RocksDB access to the log's families, to damage it the way a disk might.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& name : names)
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* db = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), path, descriptors, &handles_, &db).ok());
    db_.reset(db);
    for (size_t i = 0; i < names.size(); ++i) by_name_[names[i]] = handles_[i];
  }
  ~RawDb() {
    for (auto* handle : handles_) db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  void Put(const std::string& family, uint64_t seq, const std::string& value) {
    REQUIRE(db_->Put(rocksdb::WriteOptions(), by_name_.at(family), Key(seq), value).ok());
  }
  void Delete(const std::string& family, uint64_t seq) {
    REQUIRE(db_->Delete(rocksdb::WriteOptions(), by_name_.at(family), Key(seq)).ok());
  }
  std::string Get(const std::string& family, uint64_t seq) {
    std::string value;
    REQUIRE(db_->Get(rocksdb::ReadOptions(), by_name_.at(family), Key(seq), &value).ok());
    return value;
  }
  bool Has(const std::string& family, uint64_t seq) {
    std::string value;
    return db_->Get(rocksdb::ReadOptions(), by_name_.at(family), Key(seq), &value).ok();
  }
  void PutNamed(const std::string& family, const std::string& key, const std::string& value) {
    REQUIRE(db_->Put(rocksdb::WriteOptions(), by_name_.at(family), key, value).ok());
  }
  std::string GetNamed(const std::string& family, const std::string& key) {
    std::string value;
    REQUIRE(db_->Get(rocksdb::ReadOptions(), by_name_.at(family), key, &value).ok());
    return value;
  }

 private:
  static std::string Key(uint64_t seq) {
    std::string key(8, '\0');
    for (int i = 7; i >= 0; --i, seq >>= 8) key[i] = static_cast<char>(seq & 0xff);
    return key;
  }
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

void StageAndCommit(Log* log, uint64_t first, uint64_t last, size_t transitions_each = 0) {
  for (uint64_t seq = first; seq <= last; ++seq) {
    std::vector<Transition> transitions;
    for (size_t i = 0; i < transitions_each; ++i) {
      transitions.push_back(MakeTransition(log->last_transition_seq() + 1 + i));
    }
    log->Stage(EventRecord(seq), transitions);
  }
  REQUIRE(log->Commit().ok());
}

TEST_CASE("every record kind and field round-trips through the log") {
  TempDir dir;
  const std::vector<Record> records = AllKindsOfRecords();
  const std::vector<Transition> transitions = AllKindsOfTransitions();
  {
    auto log = OpenLog(dir.log());
    CHECK(log->last_seq() == 0);
    CHECK(log->last_transition_seq() == 0);
    CHECK_FALSE(log->last_record_at().has_value());
    for (const Record& record : records) {
      log->Stage(record, record.seq == 1 ? std::span<const Transition>(transitions)
                                         : std::span<const Transition>());
    }
    REQUIRE(log->Commit().ok());
  }
  auto log = OpenLog(dir.log());
  Status status;
  std::vector<Record> read = ReadAll(*log, 1, &status);
  REQUIRE(status.ok());
  REQUIRE(read.size() == records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    INFO("seq " << records[i].seq);
    CHECK(read[i] == records[i]);
  }
  CHECK_FALSE(read[2].email.has_value());
  CHECK_FALSE(read[2].idempotency_key.has_value());
  REQUIRE(read[3].email.has_value());
  CHECK(read[3].email->empty());

  std::vector<Transition> read_transitions;
  REQUIRE(log->ReadTransitions(0, 100, &read_transitions).ok());
  CHECK(read_transitions == transitions);
  CHECK_FALSE(read_transitions[0].bucket_name.empty());
  CHECK_FALSE(read_transitions[2].email.has_value());
}

TEST_CASE("decoding into a reused record clears what the new record lacks") {
  const PropertyEncoding encoding = GENERATE(PropertyEncoding::kTables, PropertyEncoding::kCompact);
  INFO((encoding == PropertyEncoding::kTables ? "tables" : "compact"));
  const std::vector<Record> records = AllKindsOfRecords();
  flatbuffers::FlatBufferBuilder builder;
  Record reused;
  for (const Record& record : records) {
    EncodeRecord(record, encoding, &builder);
    std::string_view bytes(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                           builder.GetSize());
    REQUIRE(DecodeRecord(bytes, &reused).ok());
    CHECK(reused == record);
    // A misaligned copy decodes the same (RocksDB values sit at any offset).
    std::string shifted = "x" + std::string(bytes);
    Record fresh;
    REQUIRE(DecodeRecord(std::string_view(shifted).substr(1), &fresh).ok());
    CHECK(fresh == record);
  }
}

TEST_CASE("the codec rejects damaged bytes") {
  Record record;
  CHECK(DecodeRecord("", &record).code() == StatusCode::kCorruption);
  CHECK(DecodeRecord("garbage bytes, not a flatbuffer", &record).code() == StatusCode::kCorruption);
  flatbuffers::FlatBufferBuilder builder;
  EncodeTransition(MakeTransition(1), &builder);
  std::string transition(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                         builder.GetSize());
  // A transition is not a record, even though both are flatbuffers.
  CHECK(DecodeRecord(transition, &record).code() == StatusCode::kCorruption);
  Transition decoded;
  REQUIRE(DecodeTransition(transition, &decoded).ok());
  CHECK(DecodeTransition(transition.substr(0, transition.size() / 2), &decoded).code() ==
        StatusCode::kCorruption);
}

std::string Encoded(const Record& record, PropertyEncoding encoding) {
  flatbuffers::FlatBufferBuilder builder;
  EncodeRecord(record, encoding, &builder);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

TEST_CASE("compact properties keep every value bit for bit and take a fraction of the bytes") {
  Record record = AllKindsOfRecords()[0];
  // Values == cannot tell apart: -0, NaN with a payload.
  record.event_properties.push_back({"minus-zero", PropertyValue::Number(-0.0)});
  record.event_properties.push_back(
      {"nan", PropertyValue::Number(std::bit_cast<double>(uint64_t{0x7ff8'0000'dead'beef}))});
  const std::string compact = Encoded(record, PropertyEncoding::kCompact);
  Record decoded;
  REQUIRE(DecodeRecord(compact, &decoded).ok());
  REQUIRE(decoded.event_properties.size() == record.event_properties.size());
  for (size_t i = 0; i < record.event_properties.size(); ++i) {
    const PropertyValue& want = record.event_properties[i].value;
    const PropertyValue& got = decoded.event_properties[i].value;
    INFO(record.event_properties[i].key);
    CHECK(decoded.event_properties[i].key == record.event_properties[i].key);
    CHECK(got.type == want.type);
    CHECK(got.boolean == want.boolean);
    CHECK(std::bit_cast<uint64_t>(got.number) == std::bit_cast<uint64_t>(want.number));
    CHECK(got.text == want.text);
  }
  CHECK(decoded.properties == record.properties);
  // A purchase of the §3b mix (amount and plan): the tables spend ~100 bytes on vtables,
  // offsets and padding around ~20 bytes of keys and values.
  const Record purchase = AllKindsOfRecords()[1];
  const size_t tables = Encoded(purchase, PropertyEncoding::kTables).size();
  const size_t compact_size = Encoded(purchase, PropertyEncoding::kCompact).size();
  INFO("tables " << tables << " compact " << compact_size);
  CHECK(compact_size + 80 <= tables);
}

TEST_CASE("a record written by format version 5's encoder (checked in) still decodes") {
  // tests/data/record-v5-properties.bin: written by main at 22890b7, before version 6, with
  // contact and event properties as flatbuffers tables.
  std::ifstream in(std::string(BUCKETD_TEST_DATA) + "/record-v5-properties.bin", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() == 504);
  Record want;
  want.seq = 42;
  want.at = 1'793'491'200'000;
  want.kind = RecordKind::kEvent;
  want.user_id = "ada";
  want.event_name = "purchase";
  want.occurred_at = want.at - 1000;
  want.email = "ada@example.com";
  want.idempotency_key = "order-7";
  want.properties = {{"plan", PropertyValue::String("pro")},
                     {"ltv", PropertyValue::Number(1234.5)},
                     {"beta", PropertyValue::Bool(true)},
                     {"old", PropertyValue::Null()},
                     {"tags", PropertyValue{PropertyValue::Type::kArray, false, 0, "[\"a\",1]"}}};
  want.event_properties = {{"amount", PropertyValue::Number(129)},
                           {"plan", PropertyValue::String("basic")},
                           {"gift", PropertyValue::Bool(false)}};
  Record decoded = AllKindsOfRecords()[0];  // a used record: every field must be overwritten
  REQUIRE(DecodeRecord(bytes, &decoded).ok());
  CHECK(decoded == want);
  // A version 1-5 log is appended in the same bytes its own build wrote.
  CHECK(Encoded(want, PropertyEncoding::kTables) == bytes);
  CHECK(Encoded(want, PropertyEncoding::kCompact).size() < bytes.size() - 150);
}

TEST_CASE("damaged compact properties are corruption, never a crash") {
  const Record purchase = AllKindsOfRecords()[1];
  const std::string good = Encoded(purchase, PropertyEncoding::kCompact);
  // The field's bytes: no contact properties, two event properties ("amount": the integer
  // 42 as a zigzag varint, "plan": the string "basic").
  const std::string field(
      "\x00\x02\x06"
      "amount\x04\x54\x04"
      "plan\x05\x05"
      "basic",
      23);
  const size_t at = good.find(field);
  REQUIRE(at != std::string::npos);
  const auto damaged = [&](size_t offset, char byte) {
    std::string bytes = good;
    bytes[at + offset] = byte;
    Record record;
    return DecodeRecord(bytes, &record);
  };
  CHECK(damaged(1, '\x03').code() == StatusCode::kCorruption);   // a third property is missing
  CHECK(damaged(1, '\x7f').code() == StatusCode::kCorruption);   // a count beyond the bytes
  CHECK(damaged(1, '\x01').code() == StatusCode::kCorruption);   // trailing bytes
  CHECK(damaged(9, '\x09').code() == StatusCode::kCorruption);   // no such form
  CHECK(damaged(2, '\x70').code() == StatusCode::kCorruption);   // a key past the end
  CHECK(damaged(17, '\x09').code() == StatusCode::kCorruption);  // a string past the end
  // Every byte of the field set to every value: each decodes or is Corruption (under ASan,
  // nothing reads outside the buffer).
  for (size_t offset = 0; offset < field.size(); ++offset) {
    for (int value = 0; value < 256; ++value) {
      const Status s = damaged(offset, static_cast<char>(value));
      if (!s.ok()) REQUIRE(s.code() == StatusCode::kCorruption);
    }
  }
}

TEST_CASE("the compact transition encoding round-trips every field and is the smaller") {
  std::vector<Transition> transitions = AllKindsOfTransitions();
  transitions[1].entered_at = transitions[1].at - 30LL * 86'400'000;
  Transition extreme = MakeTransition(std::numeric_limits<uint64_t>::max());
  extreme.at = std::numeric_limits<TimeMs>::min();
  extreme.detected_at = std::numeric_limits<TimeMs>::max();
  extreme.entered_at = std::numeric_limits<TimeMs>::max();
  extreme.entry_count = extreme.dwell_count = std::numeric_limits<uint32_t>::max();
  extreme.user_id = std::string(300, 'u');
  extreme.email = "";
  transitions.push_back(extreme);
  Transition bare;  // every field at its default
  transitions.push_back(bare);
  flatbuffers::FlatBufferBuilder builder;
  for (const Transition& t : transitions) {
    INFO("seq " << t.seq);
    std::string compact;
    EncodeTransitionCompact(t, &compact);
    Transition decoded = AllKindsOfTransitions()[2];  // stale fields to overwrite
    REQUIRE(DecodeTransitionCompact(compact, &decoded).ok());
    CHECK(decoded == t);
    EncodeTransition(t, &builder);
    CHECK(compact.size() < builder.GetSize());
  }
  // The sweep's typical transition (a maxDwell leave with an email): 82 bytes against 196.
  Transition left = MakeTransition(123'456);
  left.kind = TransitionKind::kLeft;
  left.reason = LeaveReason::kMaxDwell;
  left.bucket_id = "trial";
  left.bucket_name = "Trial users";
  left.user_id = "user-0123456";
  left.email = "user-0123456@example.com";
  left.at = 1'769'817'600'000;
  left.detected_at = left.at + 60'000;
  left.entered_at = left.at - 30LL * 86'400'000;
  std::string compact;
  EncodeTransitionCompact(left, &compact);
  EncodeTransition(left, &builder);
  CHECK(compact.size() * 2 < builder.GetSize());
}

TEST_CASE("the compact codec rejects damaged bytes") {
  std::vector<Transition> all = AllKindsOfTransitions();
  all[1].entered_at = all[1].at - 1000;
  Transition decoded;
  CHECK(DecodeTransitionCompact("", &decoded).code() == StatusCode::kCorruption);
  for (const Transition& t : all) {
    std::string compact;
    EncodeTransitionCompact(t, &compact);
    for (size_t size = 0; size < compact.size(); ++size) {
      INFO("seq " << t.seq << ", cut at " << size);
      CHECK(DecodeTransitionCompact(compact.substr(0, size), &decoded).code() ==
            StatusCode::kCorruption);
    }
    CHECK(DecodeTransitionCompact(compact + '\0', &decoded).code() == StatusCode::kCorruption);
    std::string untagged = compact;
    untagged[0] = 0x1c;
    CHECK(DecodeTransitionCompact(untagged, &decoded).code() == StatusCode::kCorruption);
    std::string bad_kind = compact;
    bad_kind[1] = static_cast<char>(bad_kind[1] | 3);
    CHECK(DecodeTransitionCompact(bad_kind, &decoded).code() == StatusCode::kCorruption);
  }
  // A varint of eleven bytes, or one past 64 bits, as the seq.
  std::string compact;
  EncodeTransitionCompact(all[0], &compact);
  const std::string head = compact.substr(0, 2);
  CHECK(DecodeTransitionCompact(head + std::string(10, '\xff') + '\x01', &decoded).code() ==
        StatusCode::kCorruption);
  CHECK(DecodeTransitionCompact(head + std::string(9, '\xff') + '\x02', &decoded).code() ==
        StatusCode::kCorruption);
  // A flatbuffers transition is not a compact one, nor the reverse.
  flatbuffers::FlatBufferBuilder builder;
  EncodeTransition(all[0], &builder);
  const std::string flat(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                         builder.GetSize());
  CHECK(DecodeTransitionCompact(flat, &decoded).code() == StatusCode::kCorruption);
  CHECK(DecodeTransition(compact, &decoded).code() == StatusCode::kCorruption);
}

TEST_CASE(
    "a new log is version 6 (compact transitions and properties); a version 5 or 2 log keeps "
    "its encodings") {
  TempDir dir;
  const std::string version = GENERATE(std::string(), std::string("5"), std::string("2"));
  INFO((version.empty() ? "new log" : "version " + version));
  const bool compact_transitions = version != "2";
  const PropertyEncoding properties =
      version.empty() ? PropertyEncoding::kCompact : PropertyEncoding::kTables;
  OpenLog(dir.log());  // creates the families and writes the version
  if (!version.empty()) RawDb(dir.log()).PutNamed("meta", "format_version", version);
  std::vector<Transition> transitions = AllKindsOfTransitions();
  transitions[1].entered_at = transitions[1].at - 1000;
  {
    auto log = OpenLog(dir.log());
    log->Stage(EventRecord(1), transitions);
    REQUIRE(log->Commit().ok());
  }
  {
    RawDb raw(dir.log());
    const std::string value = raw.Get("transitions", 1);
    ChunkReader chunk(value, /*framed=*/true);
    std::string_view element;
    bool broken = false;
    for (const Transition& t : transitions) {
      REQUIRE(chunk.Next(&element, &broken));
      Transition decoded;
      if (compact_transitions) {
        REQUIRE(DecodeTransitionCompact(element, &decoded).ok());
      } else {
        REQUIRE(DecodeTransition(element, &decoded).ok());
      }
      CHECK(decoded == t);
    }
    const std::string record_value = raw.Get("records", 1);
    ChunkReader records(record_value, /*framed=*/true);
    REQUIRE(records.Next(&element, &broken));
    CHECK(element == Encoded(EventRecord(1), properties));
  }
  auto log = OpenLog(dir.log());
  std::vector<Transition> read;
  REQUIRE(log->ReadTransitions(0, 10, &read).ok());
  CHECK(read == transitions);
  // A record that needs version 4 (an event's own properties) leaves a version 5 or 6 log
  // as it was and makes a version 2 log 4, its transitions still flatbuffers.
  Record with_properties = EventRecord(2);
  with_properties.event_properties = {{"plan", PropertyValue::String("pro")}};
  log->Stage(with_properties, {});
  REQUIRE(log->Commit().ok());
  log.reset();
  CHECK(RawDb(dir.log()).GetNamed("meta", "format_version") == (version.empty()  ? "6"
                                                                : version == "5" ? "5"
                                                                                 : "4"));
  log = OpenLog(dir.log());
  REQUIRE(log->ReadTransitions(0, 10, &read).ok());
  CHECK(read == transitions);
  Status status;
  const std::vector<Record> records = ReadAll(*log, 1, &status);
  REQUIRE(status.ok());
  CHECK(records == std::vector<Record>{EventRecord(1), with_properties});
}

TEST_CASE("seqs continue across staging, commits and reopen") {
  TempDir dir;
  {
    auto log = OpenLog(dir.log());
    log->Stage(EventRecord(1), {});
    CHECK(log->last_seq() == 1);  // staged counts
    CHECK(log->has_staged());
    std::vector<Transition> transitions = {MakeTransition(1), MakeTransition(2)};
    log->Stage(EventRecord(2), transitions);
    CHECK(log->last_transition_seq() == 2);
    CHECK(log->last_record_at() == EventRecord(2).at);
    REQUIRE(log->Commit().ok());
    CHECK_FALSE(log->has_staged());
    REQUIRE(log->Commit().ok());  // nothing staged: a no-op
    StageAndCommit(log.get(), 3, 10, 1);
    CHECK(log->last_seq() == 10);
    CHECK(log->last_transition_seq() == 10);
  }
  auto log = OpenLog(dir.log());
  CHECK(log->last_seq() == 10);
  CHECK(log->last_transition_seq() == 10);
  CHECK(log->last_record_at() == EventRecord(10).at);
  Status status;
  std::vector<Record> tail = ReadAll(*log, 7, &status);
  REQUIRE(status.ok());
  REQUIRE(tail.size() == 4);
  CHECK(tail.front() == EventRecord(7));
  CHECK(tail.back() == EventRecord(10));
  CHECK(ReadAll(*log, 0, &status).size() == 10);  // 0 means from the start
  CHECK(ReadAll(*log, 11, &status).empty());
  CHECK(status.ok());
}

TEST_CASE("a started commit calls back once, when its write has ended") {
  TempDir dir;
  auto log = OpenLog(dir.log());
  std::atomic<int> calls = 0;
  const auto count = [&] { ++calls; };

  // Nothing staged: nothing goes in flight, so the callback has run on return.
  REQUIRE(log->StartCommit(count).ok());
  CHECK(calls == 1);

  log->Stage(EventRecord(1), {});
  REQUIRE(log->StartCommit(count).ok());
  // The callback runs on the log's thread once the write is done, without FinishCommit.
  for (int i = 0; i < 5000 && calls < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(calls == 2);
  REQUIRE(log->FinishCommit().ok());
  CHECK(calls == 2);

  // A commit that starts while one is in flight finishes that one first; each calls once.
  log->Stage(EventRecord(2), {});
  REQUIRE(log->StartCommit(count).ok());
  log->Stage(EventRecord(3), {});
  REQUIRE(log->StartCommit(count).ok());
  REQUIRE(log->FinishCommit().ok());
  for (int i = 0; i < 5000 && calls < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(calls == 4);
  Status status;
  CHECK(ReadAll(*log, 1, &status).size() == 3);
}

TEST_CASE("staged records are not readable until committed") {
  TempDir dir;
  auto log = OpenLog(dir.log());
  StageAndCommit(log.get(), 1, 3);
  log->Stage(EventRecord(4), {});
  Status status;
  CHECK(ReadAll(*log, 1, &status).size() == 3);
  REQUIRE(log->Commit().ok());
  CHECK(ReadAll(*log, 1, &status).size() == 4);
}

TEST_CASE("uncommitted records are lost on close, and seqs resume after the last commit") {
  TempDir dir;
  {
    auto log = OpenLog(dir.log());
    StageAndCommit(log.get(), 1, 3);
    log->Stage(EventRecord(4), {});
  }
  auto log = OpenLog(dir.log());
  CHECK(log->last_seq() == 3);
  CHECK_FALSE(SeenKey(*log, "evt-4"));
}

TEST_CASE("a record out of seq order stops the process") {
  TempDir dir;
  auto log = OpenLog(dir.log());
  StageAndCommit(log.get(), 1, 2);
  for (bool bad_record : {true, false}) {
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      signal(SIGABRT, SIG_DFL);  // not Catch2's handler, which would report a failure
      close(STDOUT_FILENO);
      close(STDERR_FILENO);
      if (bad_record) {
        log->Stage(EventRecord(4), {});
      } else {
        std::vector<Transition> transitions = {MakeTransition(5)};
        log->Stage(EventRecord(3), transitions);
      }
      _exit(0);
    }
    int wait_status = 0;
    REQUIRE(waitpid(child, &wait_status, 0) == child);
    CHECK(WIFSIGNALED(wait_status));
    CHECK(WTERMSIG(wait_status) == SIGABRT);
  }
}

TEST_CASE("idempotency keys are seen while staged, once committed and after reopen") {
  TempDir dir;
  {
    auto log = OpenLog(dir.log());
    CHECK_FALSE(SeenKey(*log, "evt-1"));
    log->Stage(EventRecord(1), {});
    CHECK(SeenKey(*log, "evt-1"));
    REQUIRE(log->Commit().ok());
    CHECK(SeenKey(*log, "evt-1"));
    CHECK_FALSE(SeenKey(*log, "evt-2"));
    Record no_key = EventRecord(2);
    no_key.idempotency_key.reset();
    log->Stage(no_key, {});
    REQUIRE(log->Commit().ok());
    CHECK_FALSE(SeenKey(*log, "evt-2"));
  }
  auto log = OpenLog(dir.log());
  CHECK(SeenKey(*log, "evt-1"));
  CHECK_FALSE(SeenKey(*log, "evt-2"));
  CHECK_FALSE(SeenKey(*log, ""));
}

TEST_CASE("ReadTransitions pages through the stream") {
  TempDir dir;
  auto log = OpenLog(dir.log());
  StageAndCommit(log.get(), 1, 25, 3);  // transitions 1..75
  std::vector<Transition> page;
  uint64_t after = 0;
  uint64_t total = 0;
  while (true) {
    REQUIRE(log->ReadTransitions(after, 10, &page).ok());
    if (page.empty()) break;
    CHECK(page.size() <= 10);
    for (const Transition& t : page) CHECK(t.seq == ++after);
    total += page.size();
  }
  CHECK(total == 75);
  REQUIRE(log->ReadTransitions(70, 100, &page).ok());
  CHECK(page.size() == 5);
  REQUIRE(log->ReadTransitions(70, 0, &page).ok());
  CHECK(page.empty());
  REQUIRE(log->ReadTransitions(75, 10, &page).ok());
  CHECK(page.empty());
}

TEST_CASE("ReadTransitions runs on other threads while the writer commits") {
  TempDir dir;
  auto log = OpenLog(dir.log(), /*sync=*/false);
  constexpr uint64_t kRecords = 2000;
  std::atomic<bool> done{false};
  std::atomic<bool> ordered{true};
  std::thread reader([&] {
    uint64_t after = 0;
    std::vector<Transition> page;
    while (!done.load() || after < kRecords) {
      if (!log->ReadTransitions(after, 64, &page).ok()) {
        ordered = false;
        return;
      }
      for (const Transition& t : page) {
        if (t.seq != after + 1) ordered = false;
        after = t.seq;
      }
    }
  });
  for (uint64_t seq = 1; seq <= kRecords; seq += 10) StageAndCommit(log.get(), seq, seq + 9, 1);
  done = true;
  reader.join();
  CHECK(ordered);
}

TEST_CASE("a read-only log reads and refuses writes") {
  TempDir dir;
  {
    auto log = OpenLog(dir.log());
    StageAndCommit(log.get(), 1, 5, 1);
  }
  auto log = OpenLog(dir.log(), true, /*read_only=*/true);
  CHECK(log->last_seq() == 5);
  CHECK(log->last_transition_seq() == 5);
  CHECK(SeenKey(*log, "evt-3"));
  Status status;
  CHECK(ReadAll(*log, 1, &status).size() == 5);
  CHECK(status.ok());
  log->Stage(EventRecord(6), {});
  CHECK(log->Commit().code() == StatusCode::kFailedPrecondition);
  CHECK(log->last_seq() == 5);
  CHECK(log->Flush().ok());
  CHECK(log->ApproximateBytes() > 0);

  std::unique_ptr<Log> missing;
  CHECK_FALSE(Log::Open(LogOptions{dir.log() + "-missing", true, true}, &missing).ok());
}

// Three commits, so three chunks in each family: seqs 1-2, 3-4 and 5 (a chunk never spans
// two commits).
void WriteThreeChunks(const std::string& path) {
  auto log = OpenLog(path);
  StageAndCommit(log.get(), 1, 2, 1);
  StageAndCommit(log.get(), 3, 4, 1);
  StageAndCommit(log.get(), 5, 5, 1);
}

TEST_CASE("damaged records are reported as corruption") {
  TempDir dir;
  WriteThreeChunks(dir.log());
  size_t readable = 2;  // records before the damage
  SECTION("garbage bytes") {
    RawDb(dir.log()).Put("records", 3, "\x10\x00\x00\x00not a flatbuffer at all");
  }
  SECTION("a truncated chunk") {
    RawDb raw(dir.log());
    raw.Put("records", 3, raw.Get("records", 3).substr(0, 20));
  }
  SECTION("a damaged length inside a chunk") {
    RawDb raw(dir.log());
    std::string value = raw.Get("records", 3);
    const size_t first = static_cast<uint8_t>(value[0]) | static_cast<uint8_t>(value[1]) << 8;
    value[4 + first + 2] = '\x7f';  // the second element's length now runs past the end
    raw.Put("records", 3, value);
    readable = 3;
  }
  SECTION("a chunk under the wrong key") {
    RawDb raw(dir.log());
    raw.Put("records", 3, raw.Get("records", 5));
  }
  SECTION("a gap") { RawDb(dir.log()).Delete("records", 3); }
  auto log = OpenLog(dir.log());
  Status status;
  std::vector<Record> read = ReadAll(*log, 1, &status);
  CHECK(read.size() == readable);
  CHECK(status.code() == StatusCode::kCorruption);
  INFO(status.ToString());
}

TEST_CASE("damaged transitions are reported as corruption") {
  TempDir dir;
  WriteThreeChunks(dir.log());
  SECTION("garbage bytes") { RawDb(dir.log()).Put("transitions", 3, "garbage"); }
  SECTION("a gap") { RawDb(dir.log()).Delete("transitions", 3); }
  SECTION("a record in the transitions family") {
    RawDb raw(dir.log());
    raw.Put("transitions", 3, raw.Get("records", 3));
  }
  auto log = OpenLog(dir.log());
  std::vector<Transition> page;
  CHECK(log->ReadTransitions(0, 10, &page).code() == StatusCode::kCorruption);
  CHECK(page.size() >= 2);  // the ones before the damage came back first
  CHECK(page[1].seq == 2);
}

TEST_CASE("records and transitions are packed in chunks; reads start at any seq") {
  TempDir dir;
  constexpr uint64_t kBig = 200;  // one commit: chunks at 1, 65, 129, 193
  {
    auto log = OpenLog(dir.log());
    StageAndCommit(log.get(), 1, kBig, 1);
    StageAndCommit(log.get(), kBig + 1, kBig + 3, 1);
  }
  {
    RawDb raw(dir.log());
    for (const char* family : {"records", "transitions"}) {
      INFO(family);
      for (uint64_t key : {1, 65, 129, 193, 201}) CHECK(raw.Has(family, key));
      for (uint64_t key : {2, 64, 66, 200, 202}) CHECK_FALSE(raw.Has(family, key));
    }
  }
  auto log = OpenLog(dir.log());
  CHECK(log->last_seq() == kBig + 3);
  CHECK(log->last_transition_seq() == kBig + 3);
  CHECK(log->last_record_at() == EventRecord(kBig + 3).at);
  for (uint64_t from : {1, 2, 63, 64, 65, 66, 128, 129, 200, 201, 203, 204, 500}) {
    INFO("from " << from);
    Status status;
    std::vector<Record> read = ReadAll(*log, from, &status);
    REQUIRE(status.ok());
    const uint64_t want = from > kBig + 3 ? 0 : kBig + 3 - from + 1;
    REQUIRE(read.size() == want);
    for (size_t i = 0; i < read.size(); ++i) REQUIRE(read[i] == EventRecord(from + i));

    std::vector<Transition> page;
    REQUIRE(log->ReadTransitions(from - 1, 70, &page).ok());
    REQUIRE(page.size() == std::min<uint64_t>(want, 70));
    for (size_t i = 0; i < page.size(); ++i) REQUIRE(page[i].seq == from + i);
  }
}

TEST_CASE("a version 1 log (one value per element) is read and appended as version 1") {
  TempDir dir;
  OpenLog(dir.log());  // creates the families
  {
    RawDb raw(dir.log());
    raw.PutNamed("meta", "format_version", "1");
    flatbuffers::FlatBufferBuilder builder;
    for (uint64_t seq = 1; seq <= 3; ++seq) {
      EncodeRecord(EventRecord(seq), PropertyEncoding::kTables, &builder);
      raw.Put("records", seq,
              std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                          builder.GetSize()));
      EncodeTransition(MakeTransition(seq), &builder);
      raw.Put("transitions", seq,
              std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                          builder.GetSize()));
    }
  }
  {
    auto log = OpenLog(dir.log());
    CHECK(log->last_seq() == 3);
    CHECK(log->last_transition_seq() == 3);
    CHECK(log->last_record_at() == EventRecord(3).at);
    StageAndCommit(log.get(), 4, 6, 1);
  }
  {
    RawDb raw(dir.log());
    for (uint64_t seq = 1; seq <= 6; ++seq) CHECK(raw.Has("records", seq));  // unpacked
  }
  auto log = OpenLog(dir.log());
  Status status;
  std::vector<Record> read = ReadAll(*log, 2, &status);
  REQUIRE(status.ok());
  REQUIRE(read.size() == 5);
  for (size_t i = 0; i < read.size(); ++i) CHECK(read[i] == EventRecord(2 + i));
  std::vector<Transition> page;
  REQUIRE(log->ReadTransitions(0, 10, &page).ok());
  REQUIRE(page.size() == 6);
  CHECK(page[3].seq == 4);
}

TEST_CASE("a damaged last record fails the open") {
  TempDir dir;
  {
    auto log = OpenLog(dir.log());
    StageAndCommit(log.get(), 1, 3);
  }
  RawDb(dir.log()).Put("records", 3, "garbage");
  std::unique_ptr<Log> log;
  CHECK(Log::Open(LogOptions{dir.log(), true, false}, &log).code() == StatusCode::kCorruption);
}

TEST_CASE("ApproximateBytes grows with the log") {
  TempDir dir;
  auto log = OpenLog(dir.log());
  const uint64_t empty = log->ApproximateBytes();
  StageAndCommit(log.get(), 1, 1000, 1);
  CHECK(log->ApproximateBytes() > empty);
  CHECK(log->Flush().ok());
}

// The crash test's child: a writer that reports each committed seq on a pipe.
// It runs as a hidden test case in a fresh exec of this binary rather than in a bare fork():
// a fork of a process with RocksDB's background threads would inherit their locks but not
// the threads.
constexpr char kCrashChildEnv[] = "BUCKETD_LOG_TEST_CRASH_CHILD";

[[noreturn]] void RunCrashChild(const char* spec) {
  // spec: "<sync 0|1>:<report fd>:<seed>:<db path>"
  std::istringstream in(spec);
  int sync = 0;
  int fd = -1;
  uint64_t seed = 0;
  char colon = 0;
  std::string path;
  in >> sync >> colon >> fd >> colon >> seed >> colon;
  std::getline(in, path);
  std::mt19937_64 random(seed);
  std::unique_ptr<Log> log;
  if (!Log::Open(LogOptions{path, sync == 1, false}, &log).ok()) _exit(2);
  for (;;) {
    const size_t batch = 1 + random() % 50;
    for (size_t i = 0; i < batch; ++i) {
      const uint64_t seq = log->last_seq() + 1;
      std::vector<Transition> transitions = {MakeTransition(log->last_transition_seq() + 1)};
      log->Stage(EventRecord(seq), transitions);
    }
    if (!log->Commit().ok()) _exit(3);
    const uint64_t committed = log->last_seq();
    if (write(fd, &committed, sizeof committed) != sizeof committed) _exit(4);
  }
}

constexpr char kCrashChildTag[] = "[.crash_child]";

TEST_CASE("crash test child", kCrashChildTag) {
  const char* spec = std::getenv(kCrashChildEnv);
  REQUIRE(spec != nullptr);
  RunCrashChild(spec);
}

// A SIGKILL spares the OS page cache, so async mode must not lose a commit either.
TEST_CASE("a SIGKILLed writer never loses a committed record, in sync or async mode") {
  const uint64_t seed = std::random_device()();
  INFO("seed " << seed);
  std::mt19937_64 random(seed);
  TempDir dir;
  uint64_t reported_max = 0;
  for (int round = 0; round < 6; ++round) {
    const bool sync = round % 2 == 0;
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const std::string spec = std::to_string(sync) + ":" + std::to_string(fds[1]) + ":" +
                             std::to_string(random()) + ":" + dir.log();
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      close(fds[0]);
      setenv(kCrashChildEnv, spec.c_str(), 1);
      execl("/proc/self/exe", "log_test", kCrashChildTag, static_cast<char*>(nullptr));
      _exit(5);
    }
    close(fds[1]);
    // Let the child commit for a random while, at least until its first report.
    const auto run_for = std::chrono::milliseconds(50 + random() % 400);
    const auto deadline = std::chrono::steady_clock::now() + run_for;
    uint64_t committed = 0;
    bool reported = false;
    while (std::chrono::steady_clock::now() < deadline || !reported) {
      if (read(fds[0], &committed, sizeof committed) != sizeof committed) break;
      reported = true;
      reported_max = std::max(reported_max, committed);
    }
    REQUIRE(kill(child, SIGKILL) == 0);
    int wait_status = 0;
    REQUIRE(waitpid(child, &wait_status, 0) == child);
    CHECK(WIFSIGNALED(wait_status));
    // Reports still in the pipe were made after a Commit() returned: they count too.
    while (read(fds[0], &committed, sizeof committed) == sizeof committed) {
      reported_max = std::max(reported_max, committed);
    }
    close(fds[0]);

    auto log = OpenLog(dir.log());
    INFO("round " << round << " sync " << sync << ": reported " << reported_max << ", recovered "
                  << log->last_seq());
    REQUIRE(reported_max > 0);
    REQUIRE(log->last_seq() >= reported_max);
    CHECK(log->last_transition_seq() == log->last_seq());
    Status status;
    std::unique_ptr<RecordReader> reader = log->ReadFrom(1);
    Record record;
    uint64_t seq = 0;
    while (reader->Next(&record)) {
      ++seq;
      if (record != EventRecord(seq)) FAIL("record " << seq << " differs");
    }
    REQUIRE(reader->status().ok());
    CHECK(seq == log->last_seq());
    for (uint64_t s = 1; s <= reported_max; s += 97) {
      CHECK(SeenKey(*log, "evt-" + std::to_string(s)));
    }
  }
}

}  // namespace
}  // namespace bucketd
