#pragma once
// Shared helpers for tests that drive a real Engine on a temporary data dir.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "bucketd/engine.h"

namespace bucketd::testing {

inline constexpr TimeMs kSecond = 1000;
inline constexpr TimeMs kMinute = 60 * kSecond;
inline constexpr TimeMs kHour = 60 * kMinute;
inline constexpr TimeMs kDay = 24 * kHour;
// 2026-11-01T00:00:00Z: every scenario starts here.
inline constexpr TimeMs kT0 = 1793491200000;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "bucketd-test-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // Where an engine on this data dir keeps its log and its snapshots.
  std::string log() const { return path_ + "/log"; }
  std::string snapshots() const { return path_ + "/snapshots"; }

 private:
  std::string path_;
};

inline void RequireOk(const Status& s) {
  INFO(s.ToString());
  REQUIRE(s.ok());
}

// A manual-clock engine without automatic snapshots, starting at `start_ms`.
inline Options ManualOptions(const std::string& dir, TimeMs start_ms = kT0) {
  Options o;
  o.data_dir = dir;
  o.clock = ClockMode::kManual;
  o.start_time_ms = start_ms;
  o.durability = Durability::kAsync;
  o.snapshot_every_records = 0;
  o.snapshot_every_ms = 0;
  return o;
}

inline std::unique_ptr<Engine> OpenOrFail(const Options& o,
                                          std::vector<std::string>* warnings = nullptr) {
  std::unique_ptr<Engine> engine;
  const Status s = Engine::Open(o, &engine, warnings);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return engine;
}

// An engine on a manual clock, with shorthands that keep scenarios readable.
class Scenario {
 public:
  explicit Scenario(Durability durability = Durability::kAsync) { Open(durability); }

  void Open(Durability durability = Durability::kAsync) {
    engine_.reset();
    Options options;
    options.data_dir = dir_.path();
    options.clock = ClockMode::kManual;
    options.start_time_ms = kT0;
    options.durability = durability;
    options.snapshot_every_records = 0;
    options.snapshot_every_ms = 0;
    RequireOk(Engine::Open(options, &engine_));
  }
  void Reopen() { Open(); }

  Engine& engine() { return *engine_; }
  const std::string& dir() const { return dir_.path(); }

  void Define(const std::string& json) {
    RequireOk(engine_->DefineBucket(json, DefineMode::kCreateOrReplace, std::nullopt, nullptr));
  }

  IngestResult Event(const std::string& user, const std::string& event,
                     std::vector<PropertyPatch> properties = {},
                     std::optional<TimeMs> occurred_at = std::nullopt,
                     std::optional<std::string> idempotency_key = std::nullopt) {
    EventInput in;
    in.user_id = user;
    in.event = event;
    in.contact_properties = std::move(properties);
    in.occurred_at_ms = occurred_at;
    in.idempotency_key = std::move(idempotency_key);
    IngestResult result;
    RequireOk(engine_->Ingest(in, &result));
    return result;
  }

  // An event with its own properties (SPEC §3b), occurred at T0 + offset when given.
  IngestResult Fire(const std::string& user, const std::string& event,
                    std::vector<PropertyPatch> event_properties,
                    std::optional<TimeMs> occurred_offset_ms = std::nullopt) {
    EventInput in;
    in.user_id = user;
    in.event = event;
    in.properties = std::move(event_properties);
    if (occurred_offset_ms) in.occurred_at_ms = kT0 + *occurred_offset_ms;
    IngestResult result;
    RequireOk(engine_->Ingest(in, &result));
    return result;
  }

  // Moves the manual clock to T0 + offset and sweeps.
  SweepResult At(TimeMs offset_ms) {
    SweepResult result;
    RequireOk(engine_->AdvanceClock(kT0 + offset_ms, &result));
    return result;
  }

  // Transitions emitted since the last call.
  std::vector<Transition> Drain() {
    std::vector<Transition> out;
    for (;;) {
      std::vector<Transition> page;
      RequireOk(engine_->ReadTransitions(read_seq_, kTransitionsPageMax, &page));
      if (page.empty()) break;
      read_seq_ = page.back().seq;
      out.insert(out.end(), page.begin(), page.end());
    }
    return out;
  }

  std::vector<Transition> All() {
    std::vector<Transition> out;
    uint64_t after = 0;
    for (;;) {
      std::vector<Transition> page;
      RequireOk(engine_->ReadTransitions(after, kTransitionsPageMax, &page));
      if (page.empty()) break;
      after = page.back().seq;
      out.insert(out.end(), page.begin(), page.end());
    }
    return out;
  }

  bool IsMember(const std::string& bucket, const std::string& user) {
    Member m;
    return engine_->GetMember(bucket, user, &m).ok();
  }

  uint64_t Count(const std::string& bucket) {
    uint64_t n = 0;
    RequireOk(engine_->Count(bucket, &n));
    return n;
  }

 private:
  TempDir dir_;
  std::unique_ptr<Engine> engine_;
  uint64_t read_seq_ = 0;
};

// "entered@<offset>" style summaries make expected streams easy to read in failures.
inline std::string Describe(const Transition& t) {
  std::string s = std::string(ToString(t.kind)) + ":" + t.bucket_id + ":" + t.user_id + "@" +
                  std::to_string(t.at - kT0);
  if (t.kind == TransitionKind::kLeft) s += ":" + std::string(ToString(t.reason));
  if (t.kind == TransitionKind::kDwell)
    s += ":" + t.dwell_label + "#" + std::to_string(t.dwell_count);
  return s;
}

inline std::vector<std::string> Describe(const std::vector<Transition>& ts) {
  std::vector<std::string> out;
  for (const Transition& t : ts) out.push_back(Describe(t));
  return out;
}

}  // namespace bucketd::testing
