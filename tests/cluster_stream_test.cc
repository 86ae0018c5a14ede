// The first vertical slice of cluster mode (docs/cluster.md): records through JetStream. The
// record encoding round-trips every record a churny workload logs; a PartitionStream against
// a real one-server JetStream publishes (acknowledged, fenced) and reads a partition back; and
// a workload's inputs, routed to P=4 partitions by the partition function (definitions and
// clock moves fanned out to all), folded partition by partition from the stream, give exactly
// the transitions of one single-process engine fed the same inputs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/churny_workload.h"
#include "tests/nats_test_support.h"
#include "tests/test_support.h"

#include "engine/cluster/partition.h"
#include "engine/cluster/partition_fold.h"
#include "engine/cluster/partition_stream.h"
#include "engine/cluster/record_json.h"
#include "log/log.h"

namespace bucketd::cluster {
namespace {

using testing::ManualOptions;
using testing::NatsCluster;
using testing::OpenOrFail;
using testing::RequireOk;
using testing::TempDir;

constexpr TimeMs kStartMs = 1'767'225'600'000;

// A single-process engine's log after a seeded churny workload: the inputs, each stamped with
// its processing instant, exactly as a routing node would stamp them.
struct Reference {
  std::vector<Record> records;
  std::vector<Transition> transitions;
  std::map<std::string, uint64_t> counts;  // active members per live bucket
};

Reference RunReference(uint64_t seed, uint64_t events) {
  TempDir dir;
  Reference ref;
  {
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs));
    workload::Generator gen(testing::Churny(seed, events, 200));
    RequireOk(gen.Setup(engine.get()));
    RequireOk(gen.Run(engine.get()));
    // A count deeper than any history kept so far: the fold re-reads the log (the partition's
    // stream, in cluster mode) for the instants it did not retain.
    RequireOk(engine->DefineBucket(
        R"({"id":"heavy","name":"Heavy","criteria":{"type":"event","eventName":"feature.used",)"
        R"("check":"count","operator":"gte","value":12,"within":"30d"}})",
        DefineMode::kCreate, {}, nullptr));
    for (uint64_t after = 0;;) {
      std::vector<Transition> page;
      RequireOk(engine->ReadTransitions(after, kTransitionsPageMax, &page));
      if (page.empty()) break;
      after = page.back().seq;
      ref.transitions.insert(ref.transitions.end(), page.begin(), page.end());
    }
    for (const BucketInfo& b : engine->ListBuckets()) ref.counts[b.id] = b.counts.active;
    RequireOk(engine->Close());
  }
  std::unique_ptr<Log> log;
  RequireOk(Log::Open(LogOptions{dir.log(), false, true}, &log));
  auto reader = log->ReadFrom(1);
  for (Record r; reader->Next(&r);) ref.records.push_back(r);
  RequireOk(reader->status());
  return ref;
}

bool NamesUser(RecordKind kind) {
  return kind == RecordKind::kEvent || kind == RecordKind::kContactDelete ||
         kind == RecordKind::kMemberAdd || kind == RecordKind::kMemberRemove;
}

StreamOptions TestStream(const NatsCluster& nats, uint32_t partitions) {
  StreamOptions o;
  o.url = nats.url();
  o.cluster = "test";
  o.partitions = partitions;
  o.replicas = 1;
  return o;
}

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

TEST_CASE("P=4 partitions folded from JetStream give the transitions of one engine") {
  constexpr uint32_t kPartitions = 4;
  const Reference ref = RunReference(11, 2500);
  NatsCluster nats(1);
  std::unique_ptr<PartitionStream> stream;
  RequireOk(PartitionStream::Open(TestStream(nats, kPartitions), &stream));

  // Route every input as a bucketd node would: a user's to the user's partition, the rest
  // (definitions, enable/disable/delete, clock moves) to every partition, each stamped with
  // the instant the single engine gave it.
  std::vector<double> publish_us;
  auto publish = [&](uint32_t partition, const Record& r) {
    const auto start = std::chrono::steady_clock::now();
    uint64_t seq = 0;
    RequireOk(stream->Publish(partition, r, {}, &seq));
    publish_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
  };
  for (const Record& r : ref.records) {
    if (NamesUser(r.kind)) {
      publish(PartitionOf(r.user_id, kPartitions), r);
    } else {
      for (uint32_t p = 0; p < kPartitions; ++p) publish(p, r);
    }
  }

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
