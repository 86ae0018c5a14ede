// What a host embedding the engine relies on beyond the calls themselves: waiting for the
// stream from another thread, sweeps on a thread of their own, snapshots without fork().
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "bucketd/sweep_thread.h"
#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;
using namespace std::chrono_literals;

namespace {

const char* kSeen = R"({"id":"seen","criteria":{"type":"event","eventName":"x","check":"exists"}})";

IngestResult Ingest(Engine& engine, const std::string& user) {
  IngestResult result;
  RequireOk(engine.Ingest({user, "x", std::nullopt, std::nullopt, {}, {}}, &result));
  return result;
}

}  // namespace

TEST_CASE("WaitForTransitions wakes a consumer thread once a transition is durable") {
  TempDir dir;
  auto engine = OpenOrFail(ManualOptions(dir.path()));
  RequireOk(engine->DefineBucket(kSeen, DefineMode::kCreate, std::nullopt, nullptr));
  CHECK_FALSE(engine->WaitForTransitions(0, 1ms));  // nothing yet: times out

  std::atomic<bool> woke = false;
  std::thread consumer([&] { woke = engine->WaitForTransitions(0, 30s); });
  Ingest(*engine, "u");  // enters "seen": transition 1
  consumer.join();
  CHECK(woke);
  CHECK(engine->LastTransitionSeq() == 1);
  CHECK(engine->WaitForTransitions(0, 0ms));  // already there: at once

  // Close() wakes a waiter with nothing new.
  std::thread waiter([&] { woke = engine->WaitForTransitions(1, 30s); });
  std::this_thread::sleep_for(20ms);
  RequireOk(engine->Close());
  waiter.join();
  CHECK_FALSE(woke);
}

TEST_CASE("SweepThread finds a clock-driven leave on the wall clock without the host sweeping") {
  TempDir dir;
  Options options = ManualOptions(dir.path());
  options.clock = ClockMode::kWall;
  auto engine = OpenOrFail(options);
  std::mutex engine_mu;
  {
    std::lock_guard lock(engine_mu);
    RequireOk(engine->DefineBucket(
        R"({"id":"brief","criteria":{"type":"event","eventName":"x","check":"exists","within":"200ms"}})",
        DefineMode::kCreate, std::nullopt, nullptr));
    Ingest(*engine, "u");
  }
  SweepThread sweeper(*engine, engine_mu, 50ms);
  // The host only waits: the leave at occurredAt + 200 ms comes from the sweep thread.
  REQUIRE(engine->WaitForTransitions(1, 30s));
  sweeper.Stop();
  RequireOk(sweeper.last_error());
  CHECK(sweeper.sweeps() >= 1);
  std::vector<Transition> t;
  RequireOk(engine->ReadTransitions(0, 10, &t));
  REQUIRE(t.size() == 2);
  CHECK(t[1].kind == TransitionKind::kLeft);
  CHECK(t[1].at == t[0].at + 200);
}

TEST_CASE("snapshot_fork = false writes automatic snapshots on the calling thread") {
  TempDir dir;
  Options options = ManualOptions(dir.path());
  options.snapshot_every_records = 10;
  options.snapshot_fork = false;
  auto engine = OpenOrFail(options);
  RequireOk(engine->DefineBucket(kSeen, DefineMode::kCreate, std::nullopt, nullptr));
  // The definition is record 1; record 10 makes a snapshot due, and the file exists when
  // the Ingest that logged it returns.
  for (int n = 0; n < 8; ++n) Ingest(*engine, "u" + std::to_string(n));
  const auto snapshot_files = [&] {
    size_t n = 0;
    if (!std::filesystem::exists(dir.snapshots())) return n;
    for (const auto& entry : std::filesystem::directory_iterator(dir.snapshots())) {
      n += entry.path().extension() == ".bkts";
    }
    return n;
  };
  CHECK(snapshot_files() == 0);
  Ingest(*engine, "u9");
  CHECK(snapshot_files() == 1);
  CHECK(engine->Stats().last_snapshot_at_ms.has_value());
}
