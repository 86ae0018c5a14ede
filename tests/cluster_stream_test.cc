// The first vertical slice of cluster mode (docs/cluster.md): records through JetStream. The
// record encoding round-trips every record a churny workload logs; a PartitionStream against
// a real one-server JetStream publishes (acknowledged, fenced) and reads a partition back; and
// a workload's inputs, routed to P=4 partitions by the partition function (definitions and
// clock moves fanned out to all), folded partition by partition from the stream, give exactly
// the transitions of one single-process engine fed the same inputs.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/cluster_test_support.h"
#include "tests/nats_test_support.h"
#include "tests/test_support.h"

#include "engine/cluster/partition.h"
#include "engine/cluster/partition_fold.h"
#include "engine/cluster/partition_stream.h"
#include "engine/cluster/record_json.h"

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

TEST_CASE("P=4 partitions folded from JetStream give the transitions of one engine") {
  constexpr uint32_t kPartitions = 4;
  const Reference ref = RunReference(11, 2500);
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(TestStream(nats, kPartitions), &stream));

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
      "JetStream publish (R1, 1 server, sync ack): %zu publishes, p50 %.0f us, p99 %.0f us\n",
      publish_us.size(), p50, p99);
}

}  // namespace
}  // namespace bucketd::cluster
