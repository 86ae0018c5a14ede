// The first vertical slice of cluster mode (docs/cluster.md): records through JetStream. The
// record encoding round-trips every record a churny workload logs; a PartitionStream against
// a real one-server JetStream publishes (acknowledged, fenced) and reads a partition back; and
// a workload's inputs, routed to P=4 partitions by the partition function (definitions and
// clock moves fanned out to all), folded partition by partition from the stream, give exactly
// the transitions of one single-process engine fed the same inputs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/cluster_test_support.h"
#include "tests/nats_test_support.h"
#include "tests/test_support.h"

#include "engine/cluster/control_log.h"
#include "engine/cluster/partition.h"
#include "engine/cluster/partition_fold.h"
#include "engine/cluster/partition_stream.h"
#include "engine/cluster/record_json.h"
#include "engine/core/fold_reader.h"
#include "engine/state/digest.h"

namespace bucketd::cluster {
namespace {

using testing::kStartMs;
using testing::NatsCluster;
using testing::PublishRouted;
using testing::Reference;
using testing::RequireOk;
using testing::RunReference;
using testing::TestStream;

TEST_CASE("the record encoding round-trips every record a churny workload logs") {
  const Reference ref = RunReference(11, 2500);
  std::map<RecordKind, int> kinds;
  for (const Record& r : ref.records) {
    Record back;
    const std::string json = EncodeRecord(r);
    INFO(json);
    RequireOk(DecodeRecord(json, /*stored_at_ms=*/0, &back));
    back.seq = r.seq;
    CHECK(back == r);
    ++kinds[r.kind];
  }
  // The equivalence below folds the same workload: it has every kind of input it routes.
  CHECK(kinds[RecordKind::kEvent] > 100);
  CHECK(kinds[RecordKind::kBucketDefine] > 5);
  CHECK(kinds[RecordKind::kClockAdvance] > 5);
  CHECK(kinds[RecordKind::kContactDelete] > 0);
  CHECK(kinds[RecordKind::kMemberAdd] > 0);
  CHECK(kinds[RecordKind::kBucketDisable] > 0);
  CHECK(kinds[RecordKind::kBucketEnable] > 0);
}

TEST_CASE("a direct producer's event takes JetStream's stored instant and is clamped") {
  Record r;
  RequireOk(DecodeRecord(R"({"userId":"ada","event":"app.opened","occurredAt":9000})", 5000, &r));
  CHECK(r.kind == RecordKind::kEvent);
  CHECK(r.at == 5000);
  CHECK(r.occurred_at == 5000);  // later than the instant: clamped, as Engine::Ingest does
  RequireOk(
      DecodeRecord(R"({"userId":"ada","event":"x","contactProperties":{"plan":null}})", 5000, &r));
  CHECK(r.occurred_at == 5000);
  REQUIRE(r.properties.size() == 1);
  CHECK(r.properties[0].value.type == PropertyValue::Type::kNull);
  CHECK(DecodeRecord(R"({"event":"x"})", 0, &r).code() == StatusCode::kInvalidArgument);
  CHECK(DecodeRecord(R"({"kind":"nope"})", 0, &r).field() == "kind");
  CHECK(DecodeRecord(R"({"kind":"bucketEnable"})", 0, &r).field() == "bucketId");
  CHECK(DecodeRecord("not json", 0, &r).code() == StatusCode::kInvalidArgument);
  // Stateless event rules refuse the record for every reader alike.
  CHECK(DecodeRecord(R"({"userId":"ada","event":"bucket:x"})", 0, &r).field() == "event");
  CHECK(DecodeRecord(R"({"userId":"ada","event":"x","contactProperties":{"":1}})", 0, &r).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("a partition stream publishes with JetStream's ack, fences, and reads back in order") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &stream));
  CHECK(stream->stream_name() == "BUCKETD_IN_test");
  CHECK(stream->Subject(3) == "bucketd.test.in.3");

  Record e;
  e.kind = RecordKind::kEvent;
  e.user_id = "ada";
  e.event_name = "app.opened";
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 5; ++i) {
    e.at = kStartMs + i;
    e.occurred_at = e.at;
    uint64_t seq = 0;
    RequireOk(stream->Publish(static_cast<uint32_t>(i % 2), e, {}, &seq));
    seqs.push_back(seq);
  }
  CHECK(seqs == std::vector<uint64_t>{1, 2, 3, 4, 5});

  ReadResult read;
  RequireOk(stream->Read(0, 1, kReadRecordsMax, &read));
  REQUIRE(read.records.size() == 3);
  CHECK(read.records[0].seq == 1);
  CHECK(read.records[1].seq == 3);
  CHECK(read.records[2].seq == 5);
  CHECK(read.records[2].at == kStartMs + 4);
  CHECK(read.next_seq == 6);
  RequireOk(stream->Read(0, 4, 1, &read));
  REQUIRE(read.records.size() == 1);
  CHECK(read.records[0].seq == 5);
  RequireOk(stream->Read(2, 1, kReadRecordsMax, &read));
  CHECK(read.records.empty());

  // The owner's fence: stored only while the partition's last record is the one expected.
  uint64_t seq = 0;
  RequireOk(stream->Publish(1, e, PublishOptions{"", 4}, &seq));
  CHECK(seq == 6);
  CHECK(stream->Publish(1, e, PublishOptions{"", 4}, &seq).code() ==
        StatusCode::kFailedPrecondition);
  // A retry with the same message id within the duplicate window is stored once.
  uint64_t first = 0, again = 0;
  RequireOk(stream->Publish(2, e, PublishOptions{"retry-1", 0}, &first));
  RequireOk(stream->Publish(2, e, PublishOptions{"retry-1", 0}, &again));
  CHECK(first == again);
  uint64_t last = 0;
  RequireOk(stream->LastSeq(2, &last));
  CHECK(last == first);

  // Another node opening the same stream with another partition count is refused.
  std::unique_ptr<PartitionStream> other;
  CHECK(PartitionStream::Open(TestStream(nats, 8), &other).code() ==
        StatusCode::kFailedPrecondition);
}

TEST_CASE("a batch is published without waiting per record, in order, each msg id once") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &stream));
  // 3,000 records over 4 partitions, more than the client keeps in flight at once (4,096 is
  // its bound; 3,000 here plus a second batch checks a batch after a batch).
  std::vector<Record> records(3000);
  std::vector<BatchPublish> batch(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    Record& r = records[i];
    r.kind = RecordKind::kEvent;
    r.user_id = "u" + std::to_string(i % 7);
    r.event_name = "e" + std::to_string(i);
    r.at = kStartMs + static_cast<TimeMs>(i);
    r.occurred_at = r.at;
    batch[i] = {static_cast<uint32_t>(i % 4), &r, "b-" + std::to_string(i)};
  }
  std::vector<BatchAck> acks;
  RequireOk(stream->PublishBatch(batch, 3, &acks));
  REQUIRE(acks.size() == records.size());
  std::vector<uint64_t> seqs;
  for (const BatchAck& ack : acks) {
    CHECK(ack.status.ok());
    CHECK_FALSE(ack.duplicate);
    seqs.push_back(ack.stream_seq);
  }
  // Sent in order on one connection: stored in the batch's order.
  std::vector<uint64_t> expected(records.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = i + 1;
  CHECK(seqs == expected);
  ReadResult read;
  RequireOk(stream->Read(1, 1, kReadRecordsMax, &read));
  REQUIRE(read.records.size() == 750);
  for (size_t k = 0; k < read.records.size(); ++k) {
    CHECK(read.records[k].event_name == "e" + std::to_string(4 * k + 1));
  }

  // The same batch again (a retried request): every record is a duplicate, nothing stored.
  RequireOk(stream->PublishBatch(batch, 3, &acks));
  for (size_t i = 0; i < acks.size(); ++i) {
    CHECK(acks[i].duplicate);
    CHECK(acks[i].stream_seq == i + 1);
  }
  uint64_t last = 0;
  RequireOk(stream->LastSeq(3, &last));
  CHECK(last == 3000);
}

TEST_CASE("a catch-up given an instant stops after the read that passes it") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(TestStream(nats, 1), &stream));
  // More than one read's worth of records (kReadRecordsMax), fewer than a call's bound.
  constexpr size_t kRecords = kReadRecordsMax + 500;
  static_assert(kRecords < PartitionFold::kCatchUpRecordsMax);
  std::vector<Record> records(kRecords);
  std::vector<BatchPublish> batch(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    Record& r = records[i];
    r.kind = RecordKind::kEvent;
    r.user_id = "u" + std::to_string(i % 97);
    r.event_name = "app.opened";
    r.at = kStartMs + static_cast<TimeMs>(i);
    r.occurred_at = r.at;
    batch[i] = {0, &r, "slice-" + std::to_string(i)};
  }
  std::vector<BatchAck> acks;
  RequireOk(stream->PublishBatch(batch, 3, &acks));

  PartitionFold sliced(stream.get(), 0);
  std::vector<Transition> out;
  bool caught_up = true;
  // An instant already past: one read, then back to the caller (a node's round goes on).
  RequireOk(sliced.CatchUp(&out, &caught_up, std::chrono::steady_clock::now()));
  CHECK_FALSE(caught_up);
  CHECK(sliced.next_seq() == kReadRecordsMax + 1);
  RequireOk(sliced.CatchUp(&out, &caught_up, std::chrono::steady_clock::now()));
  CHECK(caught_up);
  CHECK(sliced.next_seq() == kRecords + 1);

  // Without one, a call folds everything up to its bound.
  PartitionFold whole(stream.get(), 0);
  RequireOk(whole.CatchUp(&out, &caught_up));
  CHECK(caught_up);
  CHECK(whole.next_seq() == kRecords + 1);
  CHECK(whole.fold().state().applied_seq == sliced.fold().state().applied_seq);
}

TEST_CASE("a batch JetStream cannot take fails with what it stored") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> stream;
  StreamOptions options = TestStream(nats, 2);
  options.timeout_ms = 500;
  RequireOk(PartitionStream::Open(options, &stream));
  Record r;
  r.kind = RecordKind::kEvent;
  r.user_id = "ada";
  r.event_name = "x";
  r.at = r.occurred_at = kStartMs;
  std::vector<BatchPublish> batch = {{0, &r, "a"}, {1, &r, "b"}};
  std::vector<BatchAck> acks;
  RequireOk(stream->PublishBatch(batch, 1, &acks));
  nats.Kill(0);
  batch = {{0, &r, "c"}, {1, &r, "d"}};
  const Status s = stream->PublishBatch(batch, 2, &acks);
  CHECK(s.code() == StatusCode::kIoError);
  REQUIRE(acks.size() == 2);
  CHECK_FALSE(acks[0].status.ok());
  CHECK_FALSE(acks[1].status.ok());
}

Record Define(const std::string& id, int version) {
  Record r;
  RequireOk(DefinitionRecord(R"({"id":")" + id + R"(","criteria":{"type":"event","eventName":"e)" +
                                 std::to_string(version) + R"(","check":"exists"}})",
                             std::nullopt, kStartMs, &r));
  return r;
}

// Each partition's control records as its fold keeps them: by control_seq, a copy at or
// below the last one skipped.
std::vector<std::pair<uint64_t, std::string>> ControlOrder(PartitionStream* stream, uint32_t p) {
  std::vector<std::pair<uint64_t, std::string>> order;
  ReadResult read;
  RequireOk(stream->Read(p, 1, kReadRecordsMax, &read));
  for (const Record& r : read.records) {
    REQUIRE(r.control_seq != 0);
    if (!order.empty() && r.control_seq <= order.back().first) continue;
    order.emplace_back(r.control_seq, r.bucket_id + " " + r.definition_json);
  }
  return order;
}

TEST_CASE("two nodes changing definitions at once: every partition folds one order") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> a, b;
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &a));
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &b));
  ControlLog log_a(a.get()), log_b(b.get());
  // Both replace the same bucket (and each defines its own) as fast as they can: without one
  // order, partitions would end with different definitions of "shared".
  constexpr int kWrites = 30;
  std::vector<uint64_t> seqs_a, seqs_b;
  // The records are built here and the statuses checked after the join: Catch2's assertions
  // are for the test's own thread only.
  std::vector<Record> records_a, records_b;
  for (int i = 0; i < kWrites; ++i) {
    records_a.push_back(Define(i % 2 ? "shared" : "own-a", i));
    records_b.push_back(Define(i % 2 ? "shared" : "own-b", 1000 + i));
  }
  Status status_a, status_b;
  auto writer = [](ControlLog* log, const std::vector<Record>* records, std::vector<uint64_t>* out,
                   Status* status) {
    for (const Record& record : *records) {
      uint64_t seq = 0;
      *status = log->Append(record, nullptr, &seq);
      if (!status->ok()) return;
      out->push_back(seq);
    }
  };
  std::thread ta(writer, &log_a, &records_a, &seqs_a, &status_a);
  std::thread tb(writer, &log_b, &records_b, &seqs_b, &status_b);
  ta.join();
  tb.join();
  RequireOk(status_a);
  RequireOk(status_b);
  std::vector<uint64_t> all = seqs_a;
  all.insert(all.end(), seqs_b.begin(), seqs_b.end());
  std::sort(all.begin(), all.end());
  REQUIRE(std::adjacent_find(all.begin(), all.end()) == all.end());
  const auto order = ControlOrder(a.get(), 0);
  REQUIRE(order.size() == all.size());
  for (size_t i = 0; i < order.size(); ++i) CHECK(order[i].first == all[i]);
  for (uint32_t p = 1; p < 4; ++p) CHECK(ControlOrder(a.get(), p) == order);

  // POST's check sees every definition appended before, by either node.
  uint64_t seq = 0;
  auto exists = [](const std::string& id) {
    return [id](const ControlLog::View& view) {
      return view.buckets.count(id) ? Status::AlreadyExists(id) : Status::Ok();
    };
  };
  CHECK(log_a.Append(Define("own-b", 1), exists("own-b"), &seq).code() ==
        StatusCode::kAlreadyExists);
  Record gone;
  gone.kind = RecordKind::kBucketDelete;
  gone.bucket_id = "own-b";
  RequireOk(log_b.Append(gone, nullptr, &seq));
  RequireOk(log_a.Append(Define("own-b", 2), exists("own-b"), &seq));
}

TEST_CASE("writers that finish their fan-outs publish each control record's copies once") {
  // JetStream 2.9 replicates every publish of a message id it stored already, and enough of
  // those shift a restarted replica's sequences (docs/cluster.md, "Control records"): a
  // record whose writer marked its fan-out complete is not published again, by the next
  // writer or by a node's round, however old it is.
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> a, b, c;
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &a));
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &b));
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &c));
  ControlLog log_a(a.get()), log_b(b.get());
  ControlLog round(c.get(), /*abandoned_after_ms=*/0);
  constexpr int kWrites = 10;
  for (int i = 0; i < kWrites; ++i) {
    uint64_t seq = 0;
    RequireOk((i % 2 ? log_b : log_a).Append(Define("b" + std::to_string(i), i), nullptr, &seq));
    RequireOk(round.CompleteLast());
  }
  CHECK(log_a.fan_outs() + log_b.fan_outs() == kWrites);
  CHECK(round.fan_outs() == 0);
  for (uint32_t p = 0; p < 4; ++p) CHECK(ControlOrder(a.get(), p).size() == kWrites);
}

TEST_CASE("a control record its writer did not fan out reaches every partition, once") {
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(TestStream(nats, 4), &stream));
  // A writer that died between its append and its fan-out.
  uint64_t seq = 0;
  RequireOk(stream->AppendControl(Define("orphan", 1), 0, &seq));
  for (uint32_t p = 0; p < 4; ++p) CHECK(ControlOrder(stream.get(), p).empty());
  // A node's round leaves it to its writer for a while (it may still be fanning it out)...
  ControlLog patient(stream.get());
  RequireOk(patient.CompleteLast());
  CHECK(patient.fan_outs() == 0);
  for (uint32_t p = 0; p < 4; ++p) CHECK(ControlOrder(stream.get(), p).empty());
  // ...then completes it, once it is older than that.
  ControlLog other(stream.get(), /*abandoned_after_ms=*/0);
  RequireOk(other.CompleteLast());
  CHECK(other.fan_outs() == 1);
  RequireOk(other.CompleteLast());
  CHECK(other.fan_outs() == 1);
  for (uint32_t p = 0; p < 4; ++p) {
    const auto order = ControlOrder(stream.get(), p);
    REQUIRE(order.size() == 1);
    CHECK(order[0].first == seq);
  }
  // Completed again past the duplicate window (new message ids): stored twice, folded once.
  Record copy = Define("orphan", 1);
  copy.control_seq = seq;
  uint64_t stored = 0;
  RequireOk(stream->Publish(2, copy, PublishOptions{"late-copy", 0}, &stored));
  PartitionFold fold(stream.get(), 2);
  std::vector<Transition> out;
  RequireOk(fold.CatchUp(&out));
  CHECK(fold.control_seq() == seq);
  CHECK(fold.control_copies_skipped() == 1);
  CHECK(fold.refused() == 0);
}

// A stream of its own on `nats` (subjects `<prefix>.*`), for the reader tests.
void AddStream(NatsConnection& nats, const std::string& name, const std::string& subjects,
               jsStreamSource* source = nullptr) {
  const char* subject_list[] = {subjects.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name.c_str();
  config.Subjects = subject_list;
  config.SubjectsLen = 1;
  jsStreamSource* sources[] = {source};
  if (source != nullptr) {
    config.Sources = sources;
    config.SourcesLen = 1;
  }
  RequireOk(EnsureStream(nats, config));
}

uint64_t PublishBody(NatsConnection& nats, const std::string& subject, const std::string& body) {
  jsPubAck* ack = nullptr;
  REQUIRE(js_Publish(&ack, nats.js(), subject.c_str(), body.data(), static_cast<int>(body.size()),
                     nullptr, nullptr) == NATS_OK);
  const uint64_t seq = ack->Sequence;
  jsPubAck_Destroy(ack);
  return seq;
}

std::vector<std::pair<uint64_t, std::string>> ReadAll(SubjectTail* tail, const StreamPoint& through,
                                                      Status* status) {
  std::vector<std::pair<uint64_t, std::string>> seen;
  *status = tail->Read(through, 100, [&](const StoredMessage& m) {
    seen.emplace_back(m.stream_seq, std::string(m.data));
  });
  return seen;
}

TEST_CASE("a leader get returns the leader's copy, by sequence and next by subject") {
  NatsCluster nats(1);
  std::shared_ptr<NatsConnection> connection;
  RequireOk(NatsConnection::Connect(nats.url(), 5000, &connection));
  AddStream(*connection, "LG", "lg.*");
  PublishBody(*connection, "lg.a", "first");
  natsMsg* with_id = nullptr;
  REQUIRE(natsMsg_Create(&with_id, "lg.b", nullptr, "second\0bytes", 12) == NATS_OK);
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MsgId = "id-2";
  jsPubAck* ack = nullptr;
  REQUIRE(js_PublishMsg(&ack, connection->js(), with_id, &options, nullptr) == NATS_OK);
  jsPubAck_Destroy(ack);
  natsMsg_Destroy(with_id);
  PublishBody(*connection, "lg.a", "third");

  LeaderMessage m;
  bool found = false;
  RequireOk(LeaderGet(*connection, "LG", 2, "", &m, &found));
  REQUIRE(found);
  CHECK(m.stream_seq == 2);
  CHECK(std::string(natsMsg_GetSubject(m.msg.get())) == "lg.b");
  CHECK(m.view().data == std::string_view("second\0bytes", 12));
  const char* id = nullptr;
  REQUIRE(natsMsgHeader_Get(m.msg.get(), "Nats-Msg-Id", &id) == NATS_OK);
  CHECK(std::string(id) == "id-2");
  // The same message as the library's own get (and a consumer) sees it: the same fingerprint.
  natsMsg* library = nullptr;
  REQUIRE(js_GetMsg(&library, connection->js(), "LG", 2, nullptr, nullptr) == NATS_OK);
  CHECK(FingerprintOf(StoredOf(library)) == FingerprintOf(m.view()));
  CHECK(StoredOf(library).stored_at_ms == m.stored_at_ms);
  natsMsg_Destroy(library);
  // Next by subject, a wildcard too; past the end, none.
  RequireOk(LeaderGet(*connection, "LG", 2, "lg.a", &m, &found));
  REQUIRE(found);
  CHECK(m.stream_seq == 3);
  CHECK(m.view().data == "third");
  RequireOk(LeaderGet(*connection, "LG", 2, "lg.*", &m, &found));
  CHECK(m.stream_seq == 2);
  RequireOk(LeaderGet(*connection, "LG", 4, "lg.a", &m, &found));
  CHECK_FALSE(found);
  RequireOk(LeaderGet(*connection, "LG", 9, "", &m, &found));
  CHECK_FALSE(found);
}

TEST_CASE("a reader drops a replica's run the leader does not hold and reads through the leader") {
  NatsCluster nats(1);
  std::shared_ptr<NatsConnection> connection;
  RequireOk(NatsConnection::Connect(nats.url(), 5000, &connection));
  // LEADER holds the partition as its leader does; DRIFTED sources it after a message of its
  // own, so the same messages sit one sequence later there, as on a replica whose sequences
  // drifted.
  AddStream(*connection, "LEADER", "p.*");
  jsStreamSource source;
  std::memset(&source, 0, sizeof source);
  source.Name = "LEADER";
  AddStream(*connection, "DRIFTED", "own.*", &source);
  PublishBody(*connection, "own.x", "drift");
  // Sourcing starts when the stream is created: let it settle before the partition's
  // messages, so they all follow "drift" there.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (const char* body : {"a", "b", "c"}) PublishBody(*connection, "p.1", body);
  PublishBody(*connection, "p.2", "other");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    StreamPoint last;
    RequireOk(LastPoint(*connection, "DRIFTED", "p.2", &last));
    if (last.seq == 5) break;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  StreamPoint through;
  RequireOk(LastPoint(*connection, "LEADER", "p.1", &through));
  CHECK(through.seq == 3);

  // A reader whose consumer sits on the drifted copy: its run (b at 3) is not the leader's
  // message at 3, so nothing of it is seen; the leader gives a, b, c at their sequences.
  SubjectTail drifted(connection, "DRIFTED", "p.1", 1);
  drifted.CheckAgainstForTesting("LEADER");
  Status status;
  auto seen = ReadAll(&drifted, through, &status);
  RequireOk(status);
  CHECK(seen == std::vector<std::pair<uint64_t, std::string>>{{1, "a"}, {2, "b"}, {3, "c"}});
  CHECK(drifted.replica_mismatches() == 1);
  CHECK(drifted.anchor().seq == 3);
  CHECK(drifted.anchor().fingerprint == through.fingerprint);

  // A reader on the leader's copy: one run, confirmed by the fingerprint looked up with the
  // last sequence, no mismatch.
  SubjectTail faithful(connection, "LEADER", "p.1", 1);
  seen = ReadAll(&faithful, through, &status);
  RequireOk(status);
  CHECK(seen.size() == 3);
  CHECK(faithful.replica_mismatches() == 0);
  // A run cut before the end is confirmed by a leader get of its last message.
  SubjectTail cut(connection, "LEADER", "p.1", 1);
  std::vector<uint64_t> first_two;
  RequireOk(
      cut.Read(through, 2, [&](const StoredMessage& m) { first_two.push_back(m.stream_seq); }));
  CHECK(first_two == std::vector<uint64_t>{1, 2});
  CHECK(cut.replica_mismatches() == 0);

  // Resuming after a message the leader still holds reads on; after one it no longer holds
  // (a leader whose sequences moved under the reader), the reader stops with Corruption
  // instead of skipping or repeating messages.
  const StreamPoint after_b = cut.anchor();
  SubjectTail resumed(connection, "LEADER", "p.1", 3, after_b);
  seen = ReadAll(&resumed, through, &status);
  RequireOk(status);
  CHECK(seen == std::vector<std::pair<uint64_t, std::string>>{{3, "c"}});
  SubjectTail misplaced(connection, "LEADER", "p.1", 3, StreamPoint{2, after_b.fingerprint + 1});
  seen = ReadAll(&misplaced, through, &status);
  CHECK(status.code() == StatusCode::kCorruption);
  CHECK(seen.empty());
  REQUIRE(js_DeleteMsg(connection->js(), "LEADER", 2, nullptr, nullptr) == NATS_OK);
  SubjectTail gone(connection, "LEADER", "p.1", 3, after_b);
  seen = ReadAll(&gone, through, &status);
  CHECK(status.code() == StatusCode::kCorruption);
  CHECK(seen.empty());
}

Record KeyedEvent(const std::string& user, const std::string& name, TimeMs at,
                  std::optional<std::string> key) {
  Record e;
  e.kind = RecordKind::kEvent;
  e.user_id = user;
  e.event_name = name;
  e.at = at;
  e.occurred_at = at;
  e.idempotency_key = std::move(key);
  return e;
}

TEST_CASE("a partition's fold skips a record whose id it applied within the window") {
  NatsCluster nats(1);
  StreamOptions options = TestStream(nats, 1);
  // JetStream stores a retry after this long (and purges its ids on a timer of that period:
  // a retry is new for sure after twice the window).
  options.duplicate_window_ms = 100;
  options.idempotency_window_ms = 60'000;
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(options, &stream));
  CHECK(stream->idempotency_window_ms() == 60'000);
  // A node started with another window keeps the cluster's: it is in the stream.
  StreamOptions other = options;
  other.idempotency_window_ms = 5;
  std::unique_ptr<PartitionStream> second;
  RequireOk(PartitionStream::Open(other, &second));
  CHECK(second->idempotency_window_ms() == 60'000);

  auto publish = [&](const Record& r, const std::string& msg_id) {
    uint64_t seq = 0;
    bool duplicate = false;
    RequireOk(stream->Publish(0, r, PublishOptions{msg_id, 0}, &seq, &duplicate));
    REQUIRE_FALSE(duplicate);
  };
  // ada's key k1 three times: a direct producer's copy under another message id, and a
  // routing node's retry after JetStream's window. bob's keyless event under one message id
  // twice; cy's twice without any id (two events, both applied).
  publish(KeyedEvent("ada", "e", kStartMs, "k1"), "e:k1");
  publish(KeyedEvent("ada", "e", kStartMs + 1000, "k1"), "producer-uuid-1");
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  publish(KeyedEvent("ada", "e", kStartMs + 2000, "k1"), "e:k1");
  publish(KeyedEvent("bob", "e", kStartMs + 3000, std::nullopt), "node-1-2-0");
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  publish(KeyedEvent("bob", "e", kStartMs + 4000, std::nullopt), "node-1-2-0");
  publish(KeyedEvent("cy", "e", kStartMs + 5000, std::nullopt), "");
  publish(KeyedEvent("cy", "e", kStartMs + 6000, std::nullopt), "");
  // Past the window, a key is new again.
  publish(KeyedEvent("ada", "e", kStartMs + 62'001, "k1"), "e:k1");
  // Five events each for dan (the last a direct producer's copy of the fourth) and eve: more
  // than the four instants a fold keeps per name without a definition asking for more.
  for (int i = 0; i < 5; ++i) {
    const std::string key = "d" + std::to_string(std::min(i, 3));
    publish(KeyedEvent("dan", "e", kStartMs + 62'001, key), i < 4 ? "e:" + key : "copy");
    publish(KeyedEvent("eve", "e", kStartMs + 62'001, "v" + std::to_string(i)), "");
  }

  // A bucket defined after the events needs more history than the fold kept: its re-read of
  // the stream skips the same copies (dan has four events, not five).
  Record define;
  RequireOk(
      DefinitionRecord(R"({"id":"five","criteria":{"type":"event","eventName":"e","check":"count",)"
                       R"("operator":"gte","value":5,"within":"30d"}})",
                       std::nullopt, kStartMs + 62'002, &define));
  uint64_t seq = 0;
  RequireOk(stream->Publish(0, define, {}, &seq));

  PartitionFold fold(stream.get(), 0);
  std::vector<Transition> out;
  RequireOk(fold.CatchUp(&out));
  CHECK(fold.duplicates_skipped() == 4);
  CHECK(fold.refused() == 0);
  std::map<std::string, uint64_t> counts;
  for (const auto& [user, events] : std::map<std::string, int>{{"ada", 0}, {"bob", 0}, {"cy", 0}}) {
    UserInfo info;
    RequireOk(FoldReader(fold.fold()).GetUser(user, &info));
    REQUIRE(info.events.size() == 1);
    counts[user] = info.events[0].count;
  }
  // ada: k1 at 0 and again past the window; bob: once; cy: twice.
  CHECK(counts == std::map<std::string, uint64_t>{{"ada", 2}, {"bob", 1}, {"cy", 2}});
  // Backfilled (no transitions): eve alone has five events in the re-read.
  MembersPage page;
  RequireOk(FoldReader(fold.fold()).Members("five", "", 10, &page));
  std::vector<std::string> members;
  for (const Member& m : page.members) members.push_back(m.user_id);
  CHECK(members == std::vector<std::string>{"eve"});

  // The ids travel in the snapshot: a fold restored from it skips a late copy as this one does.
  std::string payload;
  uint64_t state_bytes = 0;
  RequireOk(fold.EncodeSnapshot(&payload, &state_bytes));
  CHECK(state_bytes < payload.size());
  PartitionFold restored(stream.get(), 0);
  RequireOk(restored.RestoreSnapshot(payload, state_bytes, fold.next_seq() - 1, 0));
  CHECK(restored.ids_remembered() == fold.ids_remembered());
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  // bob's id was remembered at +3s: gone from the window at +63.001s; ada's k1 (at +62.001s)
  // is not.
  publish(KeyedEvent("bob", "e", kStartMs + 63'001, std::nullopt), "node-1-2-0");
  publish(KeyedEvent("ada", "e", kStartMs + 63'002, "k1"), "again");
  out.clear();
  RequireOk(restored.CatchUp(&out));
  CHECK(restored.duplicates_skipped() == 1);  // ada's; bob's first copy left the window
  RequireOk(fold.CatchUp(&out));
  CHECK(fold.duplicates_skipped() == 5);
  CHECK(ComputeDigest(fold.fold().state()) == ComputeDigest(restored.fold().state()));

  // JetStream's duplicate window, in contrast, is the stream's setting a node sets (an
  // operator changes it by restarting the nodes with another).
  auto duplicates_ms = [&] {
    std::shared_ptr<NatsConnection> connection;
    RequireOk(NatsConnection::Connect(nats.url(), 5000, &connection));
    jsStreamInfo* info = nullptr;
    REQUIRE(js_GetStreamInfo(&info, connection->js(), "BUCKETD_IN_test", nullptr, nullptr) ==
            NATS_OK);
    const int64_t ms = info->Config->Duplicates / 1'000'000;
    jsStreamInfo_Destroy(info);
    return ms;
  };
  CHECK(duplicates_ms() == 100);
  other.duplicate_window_ms = 300;
  RequireOk(PartitionStream::Open(other, &second));
  CHECK(duplicates_ms() == 300);
}

// The case below prints the publish latency bench/README.md quotes ("JetStream publish
// latency"): on one nats-server at R1, or with BUCKETD_TEST_PUBLISH_REPLICAS=3 on three
// clustered servers with the stream at R3 (each ack then waits for a replication round).
int PublishLatencyReplicas() {
  const char* env = std::getenv("BUCKETD_TEST_PUBLISH_REPLICAS");
  if (env == nullptr || *env == '\0') return 1;
  const std::string value(env);
  REQUIRE((value == "1" || value == "3"));
  return value == "3" ? 3 : 1;
}

TEST_CASE("P=4 partitions folded from JetStream give the transitions of one engine") {
  constexpr uint32_t kPartitions = 4;
  const Reference ref = RunReference(11, 2500);
  const int replicas = PublishLatencyReplicas();
  NatsCluster nats(replicas);
  StreamOptions options = TestStream(nats, kPartitions);
  options.replicas = replicas;
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(options, &stream));

  std::vector<double> publish_us;
  PublishRouted(stream.get(), ref.records, &publish_us);

  std::map<std::string, Transition> cluster;
  std::map<std::string, uint64_t> counts;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    PartitionFold pf(stream.get(), p);
    std::vector<Transition> transitions;
    RequireOk(pf.CatchUp(&transitions));
    CHECK(pf.undecodable() == 0);
    // Every record was accepted by the single engine, so by its partition too.
    CHECK(pf.refused() == 0);
    for (const Transition& t : transitions) {
      CHECK(PartitionOf(t.user_id, kPartitions) == p);
      CHECK(cluster.emplace(t.IdempotencyKey(), t).second);  // no key emitted twice
    }
    for (const auto& b : pf.fold().state().buckets) {
      if (b->live()) counts[b->def.id] += b->members.size();
    }
  }

  REQUIRE(ref.transitions.size() > 500);
  CHECK(cluster.size() == ref.transitions.size());
  for (const Transition& t : ref.transitions) {
    INFO(t.IdempotencyKey());
    auto it = cluster.find(t.IdempotencyKey());
    REQUIRE(it != cluster.end());
    const Transition& c = it->second;
    CHECK(std::tie(c.kind, c.at, c.entry_count, c.dwell_count, c.reason) ==
          std::tie(t.kind, t.at, t.entry_count, t.dwell_count, t.reason));
    // Stamped instants from the stream: detection happens at the same instants as well.
    CHECK(c.detected_at == t.detected_at);
  }
  CHECK(counts == ref.counts);

  std::sort(publish_us.begin(), publish_us.end());
  const double p50 = publish_us[publish_us.size() / 2];
  const double p99 = publish_us[publish_us.size() * 99 / 100];
  std::printf(
      "JetStream publish (R%d, %d server%s, sync ack): %zu publishes, p50 %.0f us, p99 %.0f us\n",
      replicas, replicas, replicas == 1 ? "" : "s", publish_us.size(), p50, p99);
}

}  // namespace
}  // namespace bucketd::cluster
