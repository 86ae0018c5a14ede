#pragma once
// A seeded workload driven through the public Engine API: a few buckets shaped like
// examples/buckets (windowed counts, absence, properties, a composite, a manual bucket
// with dwell reactions), then a stream of operations drawn from one seed. The same seed
// against the same engine gives the same log. Used by `bucketctl workload`, the snapshot
// and replay tests, and the snapshot benchmark. Header-only so tests and benches can use
// it without linking the tool.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bucketd/engine.h"

namespace bucketd::workload {

struct Options {
  uint64_t users = 1000;
  uint64_t events = 10000;  // events ingested in total
  uint64_t seed = 1;
  // Manual clock: the workload advances time (and so sweeps) between operations. On a
  // wall clock it only calls Sweep().
  bool manual_clock = true;
  // Events per IngestBatch call (1 = Ingest, one operation each).
  uint32_t batch = 1;
  // Definition changes, enable/disable, bucket delete + re-create, contact deletes and
  // manual adds/removes between batches. Off: events and clock moves only.
  bool churn = true;
};

struct Counters {
  uint64_t events_accepted = 0;
  uint64_t events_rejected = 0;
  uint64_t operations = 0;  // every engine call the workload made
};

inline constexpr TimeMs kHourMs = 3'600'000;
inline constexpr TimeMs kDayMs = 24 * kHourMs;

// The bucket definitions, `window_days` varied by redefinitions.
inline std::string ActiveDefinition(int window_days) {
  return R"({"id":"active","name":"Active","criteria":{"type":"event","eventName":"feature.used",)"
         R"("check":"count","operator":"gte","value":3,"within":")" +
         std::to_string(window_days) +
         R"(d"},"entryLimit":"once_per_period","entryPeriod":"3d","minDwell":"1h",)"
         R"("maxDwell":"20d","dwell":[{"after":"1d"},{"every":"2d"}]})";
}
inline std::vector<std::string> BucketDefinitions() {
  return {
      ActiveDefinition(7),
      R"({"id":"dormant","name":"Went dormant","criteria":{"type":"composite","operator":"and",)"
      R"("conditions":[{"type":"event","eventName":"app.opened","check":"exists"},)"
      R"({"type":"event","eventName":"app.opened","check":"not_exists","within":"5d"}]},)"
      R"("dwell":[{"after":"2d"}]})",
      R"({"id":"trial","name":"Trial expiring","criteria":{"type":"composite","operator":"and",)"
      R"("conditions":[{"type":"property","property":"plan","operator":"eq","value":"trial"},)"
      R"({"type":"property","property":"daysLeft","operator":"lte","value":3}]},)"
      R"("entryLimit":"once","maxDwell":"4d"})",
      R"({"id":"buyers","name":"Buyers","criteria":{"type":"composite","operator":"or",)"
      R"("conditions":[{"type":"event","eventName":"purchase","check":"count","operator":"gte",)"
      R"("value":2,"within":"10d"},{"type":"property","property":"plan","operator":"eq",)"
      R"("value":"pro"}]},"entryLimit":"unlimited"})",
      R"({"id":"vip","name":"VIP","kind":"manual","dwell":[{"every":"1d"}],"maxDwell":"6d"})",
  };
}

class Generator {
 public:
  explicit Generator(const Options& options) : options_(options), rng_(options.seed) {}

  // Defines the buckets (create-or-replace, so a re-run on the same dir is harmless).
  Status Setup(Engine* engine) {
    for (const std::string& json : BucketDefinitions()) {
      if (Status s = engine->DefineBucket(json, DefineMode::kCreateOrReplace, {}, nullptr);
          !s.ok()) {
        return s;
      }
      ++counters_.operations;
    }
    return Status::Ok();
  }

  // Runs until `options.events` events were offered. `after_step` (optional) runs after
  // every operation: tests snapshot, record digests or stop there. Returning false stops.
  Status Run(Engine* engine, const std::function<bool(uint64_t events_done)>& after_step = {}) {
    while (events_done_ < options_.events) {
      if (Status s = Step(engine); !s.ok()) return s;
      if (after_step && !after_step(events_done_)) break;
    }
    return Status::Ok();
  }

  // One operation: usually a batch of events, sometimes a clock move or a churn input.
  Status Step(Engine* engine) {
    ++counters_.operations;
    const uint64_t roll = Below(100);
    if (roll < 8) return MoveClock(engine);
    if (options_.churn && roll < 14) return Churn(engine);
    return Events(engine);
  }

  const Counters& counters() const { return counters_; }
  uint64_t events_done() const { return events_done_; }

 private:
  uint64_t Below(uint64_t n) { return rng_() % n; }

  std::string UserId() { return "user-" + std::to_string(Below(options_.users)); }

  EventInput MakeEvent(Engine* engine) {
    static const char* const kNames[] = {"feature.used", "feature.used", "app.opened", "purchase",
                                         "page.view"};
    EventInput e;
    e.user_id = UserId();
    e.event = kNames[Below(5)];
    if (Below(10) == 0) e.occurred_at_ms = engine->Now() - static_cast<TimeMs>(Below(3 * kDayMs));
    if (Below(4) == 0) e.email = " " + e.user_id + "@Example.com ";
    const uint64_t patch = Below(10);
    if (patch == 0) {
      static const char* const kPlans[] = {"trial", "pro", "free"};
      e.contact_properties.push_back({"plan", PropertyValue::String(kPlans[Below(3)])});
    } else if (patch == 1) {
      e.contact_properties.push_back(
          {"daysLeft", PropertyValue::Number(static_cast<double>(Below(10)))});
    } else if (patch == 2) {
      e.contact_properties.push_back({"plan", PropertyValue::Null()});
    }
    if (Below(20) == 0) e.idempotency_key = "k-" + std::to_string(Below(options_.events));
    return e;
  }

  Status Events(Engine* engine) {
    const uint64_t left = options_.events - events_done_;
    const uint64_t n = std::min<uint64_t>(left, options_.batch);
    events_done_ += n;
    if (n == 1) {
      IngestResult result;
      const Status s = engine->Ingest(MakeEvent(engine), &result);
      // Refusals (a deleted contact) are part of the workload, not failures of it.
      if (s.ok()) {
        ++counters_.events_accepted;
      } else if (s.code() == StatusCode::kIoError) {
        return s;
      } else {
        ++counters_.events_rejected;
      }
      return Status::Ok();
    }
    std::vector<EventInput> batch;
    batch.reserve(n);
    for (uint64_t i = 0; i < n; ++i) batch.push_back(MakeEvent(engine));
    BatchResult result;
    if (Status s = engine->IngestBatch(batch, &result); !s.ok()) return s;
    counters_.events_accepted += result.accepted;
    counters_.events_rejected += result.rejected.size();
    return Status::Ok();
  }

  Status MoveClock(Engine* engine) {
    SweepResult result;
    if (!options_.manual_clock) return engine->Sweep(&result);
    // Mostly minutes to hours; now and then days, so windows, dwells and maxDwell pass.
    const TimeMs step = Below(5) == 0 ? 1 + static_cast<TimeMs>(Below(3 * kDayMs))
                                      : 1 + static_cast<TimeMs>(Below(6 * kHourMs));
    return engine->AdvanceClock(engine->Now() + step, &result);
  }

  // Inputs that refuse are fine (unknown member, deleted contact): only I/O errors stop.
  Status Churn(Engine* engine) {
    Status s;
    switch (Below(8)) {
      case 0:
        s = engine->DefineBucket(ActiveDefinition(3 + static_cast<int>(Below(8))),
                                 DefineMode::kCreateOrReplace, {}, nullptr);
        break;
      case 1: {
        static const char* const kIds[] = {"active", "dormant", "trial", "buyers"};
        s = engine->SetBucketEnabled(kIds[Below(4)], Below(2) == 0);
        break;
      }
      case 2:
        if (Below(4) == 0) {
          s = engine->DeleteBucket("buyers");
          if (s.ok() || s.code() == StatusCode::kNotFound) {
            s = engine->DefineBucket(BucketDefinitions()[3], DefineMode::kCreateOrReplace, {},
                                     nullptr);
          }
        }
        break;
      case 3:
        if (Below(5) == 0) s = engine->DeleteContact(UserId());
        break;
      case 4:
      case 5:
        s = engine->AddMember("vip", UserId());
        break;
      default:
        s = engine->RemoveMember("vip", UserId());
        break;
    }
    if (s.code() == StatusCode::kIoError || s.code() == StatusCode::kCorruption) return s;
    return Status::Ok();
  }

  Options options_;
  std::mt19937_64 rng_;
  uint64_t events_done_ = 0;
  Counters counters_;
};

}  // namespace bucketd::workload
