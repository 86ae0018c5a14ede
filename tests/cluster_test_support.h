#pragma once
// What the cluster suites share: a single-process engine's run of a churny workload (the
// reference every cluster result is compared with) and the routing of its inputs onto the
// partition streams as a bucketd node routes them.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/churny_workload.h"
#include "tests/nats_test_support.h"
#include "tests/test_support.h"

#include "engine/cluster/partition.h"
#include "engine/cluster/partition_stream.h"
#include "log/log.h"

namespace bucketd::testing {

inline constexpr TimeMs kStartMs = 1'767'225'600'000;

// A single-process engine's log after a seeded churny workload: the inputs, each stamped with
// its processing instant, exactly as a routing node would stamp them.
struct Reference {
  std::vector<Record> records;
  std::vector<Transition> transitions;
  std::map<std::string, uint64_t> counts;  // active members per live bucket
};

inline Reference RunReference(uint64_t seed, uint64_t events) {
  TempDir dir;
  Reference ref;
  {
    auto engine = OpenOrFail(ManualOptions(dir.path(), kStartMs));
    workload::Generator gen(Churny(seed, events, 200));
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

inline bool NamesUser(RecordKind kind) {
  return kind == RecordKind::kEvent || kind == RecordKind::kContactDelete ||
         kind == RecordKind::kMemberAdd || kind == RecordKind::kMemberRemove;
}

inline cluster::StreamOptions TestStream(const NatsCluster& nats, uint32_t partitions) {
  cluster::StreamOptions o;
  o.url = nats.url();
  o.cluster = "test";
  o.partitions = partitions;
  o.replicas = 1;
  return o;
}

// Routes inputs as a bucketd node does: a user's to the user's partition, the rest
// (definitions, enable/disable/delete, clock moves) to every partition, each with the instant
// the single engine gave it. `publish_us`, if given, receives each publish's latency. A
// publish JetStream did not acknowledge (a NATS server killed, a leader being elected) is
// retried with the same message id ("ref-<seq>-<partition>", hence distinct seqs) for up to
// 30 s, so it is stored once. `after_each`, if given, runs after each record is stored (a test
// keeps its nodes' rounds going meanwhile, as their runners would).
inline void PublishRouted(cluster::PartitionStream* stream, std::span<const Record> records,
                          std::vector<double>* publish_us = nullptr,
                          const std::function<void()>& after_each = nullptr) {
  auto publish = [&](uint32_t partition, const Record& r) {
    REQUIRE(r.seq != 0);  // the message id is made of it
    const auto start = std::chrono::steady_clock::now();
    const cluster::PublishOptions options{
        "ref-" + std::to_string(r.seq) + "-" + std::to_string(partition), 0};
    uint64_t seq = 0;
    for (Status s = stream->Publish(partition, r, options, &seq); !s.ok();
         s = stream->Publish(partition, r, options, &seq)) {
      INFO(s.ToString());
      REQUIRE(s.code() == StatusCode::kIoError);
      REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::seconds(30));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (publish_us != nullptr) {
      publish_us->push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count());
    }
  };
  for (const Record& r : records) {
    if (NamesUser(r.kind)) {
      publish(cluster::PartitionOf(r.user_id, stream->partitions()), r);
    } else {
      for (uint32_t p = 0; p < stream->partitions(); ++p) publish(p, r);
    }
    if (after_each) after_each();
  }
}

}  // namespace bucketd::testing
