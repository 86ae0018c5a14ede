// Erasure (SPEC §11, Engine::EraseContact): after it, no file of the data dir holds a byte
// of the contact's id, email or unread properties (the whole dir is searched, log, snapshots
// and set-aside included), the stream names a pseudonym instead, and a full replay of the
// rewritten log gives the live digest and reproduces the stored stream exactly.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "test_support.h"

namespace bucketd {
namespace {

using namespace testing;
namespace fs = std::filesystem;

// Every file under `dir` holding `needle`, as "path" (the test's failure message).
std::vector<std::string> FilesHolding(const std::string& dir, const std::string& needle) {
  std::vector<std::string> found;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.find(needle) != std::string::npos) found.push_back(entry.path().string());
  }
  return found;
}

EventInput Event(const std::string& user, const std::string& name, const std::string& key) {
  EventInput in;
  in.user_id = user;
  in.event = name;
  in.email = user + "@example.com";
  in.contact_properties = {{"plan", PropertyValue::String("pro")},
                           {"phone", PropertyValue::String("+1-555-" + user + "-0199")}};
  in.idempotency_key = key;
  // The event's own: `amount` is read by a definition (kept), `note` is not (dropped).
  in.properties = {{"amount", PropertyValue::Number(7)},
                   {"note", PropertyValue::String("note-" + user + "-private")}};
  return in;
}

// A history for alice and bob across the log: buckets on a property and on a windowed event
// count with dwell reactions, events with idempotency keys, sweeps, automatic and on-demand
// snapshots, and alice's contact delete in the middle.
struct History {
  TempDir dir;
  std::unique_ptr<Engine> engine;

  explicit History(bool delete_alice_first) {
    Options options = ManualOptions(dir.path());
    options.snapshot_every_records = 7;  // automatic snapshots hold alice too
    options.snapshot_fork = false;
    engine = OpenOrFail(options);
    for (const char* definition :
         {R"({"id":"pro","criteria":{"type":"property","property":"plan","operator":"eq",)"
          R"("value":"pro"},"dwell":[{"after":"1h"}]})",
          R"({"id":"busy","criteria":{"type":"event","eventName":"used","check":"count",)"
          R"("operator":"gte","value":2,"within":"1d"},"dwell":[{"every":"2h"}]})",
          R"({"id":"spent","criteria":{"type":"event","eventName":"used","check":"sum",)"
          R"("property":"amount","operator":"gte","value":14,"within":"1d"}})"}) {
      RequireOk(engine->DefineBucket(definition, DefineMode::kCreate, std::nullopt, nullptr));
    }
    SweepResult sweep;
    for (int round = 0; round < 6; ++round) {
      for (const char* user : {"alice", "bob"}) {
        IngestResult ingested;
        RequireOk(engine->Ingest(
            Event(user, "used", std::string(user) + "-key-" + std::to_string(round)), &ingested));
      }
      RequireOk(engine->AdvanceClock(kT0 + (round + 1) * 3 * kHour, &sweep));
      if (round == 2) RequireOk(engine->TakeSnapshot(nullptr));
    }
    if (delete_alice_first) RequireOk(engine->DeleteContact("alice"));
    RequireOk(engine->AdvanceClock(kT0 + 2 * kDay, &sweep));
  }

  std::vector<Transition> Stream() {
    std::vector<Transition> out;
    for (std::vector<Transition> page;; out.insert(out.end(), page.begin(), page.end())) {
      RequireOk(engine->ReadTransitions(out.empty() ? 0 : out.back().seq, 1000, &page));
      if (page.empty()) return out;
    }
  }
};

TEST_CASE(
    "an erased contact leaves no byte of its id, email or unread properties in the data "
    "dir, and a full replay of the rewritten log still gives the live digest") {
  const bool delete_first = GENERATE(false, true);
  INFO((delete_first ? "deleted, then erased" : "erased without a delete first"));
  History history(delete_first);
  Engine& engine = *history.engine;
  const std::string dir = history.dir.path();
  const std::vector<Transition> before = history.Stream();
  size_t alice_transitions = 0;
  for (const Transition& t : before) alice_transitions += t.user_id == "alice" ? 1 : 0;
  REQUIRE(alice_transitions >= 4);  // entered twice, dwells: the stream really named her
  REQUIRE_FALSE(FilesHolding(dir, "alice").empty());
  // A snapshot set aside (beyond a log that lost its tail) holds her too.
  fs::create_directories(history.dir.snapshots() + "/set-aside");
  for (const auto& entry : fs::directory_iterator(history.dir.snapshots())) {
    if (entry.is_regular_file()) {
      fs::copy_file(entry.path(),
                    history.dir.snapshots() + "/set-aside/" + entry.path().filename().string());
    }
  }

  ErasureResult erased;
  RequireOk(engine.EraseContact("alice", &erased));
  CHECK(erased.pseudonym.starts_with("erased-"));
  CHECK(erased.pseudonym.size() == 7 + 32);
  CHECK(erased.records >= 7);  // six events and the delete
  CHECK(erased.transitions == alice_transitions);
  CHECK(erased.idempotency_keys == 6);

  // The stream: the same seqs and kinds, her transitions under the pseudonym without email;
  // bob's untouched.
  const std::vector<Transition> after = history.Stream();
  REQUIRE(after.size() == before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    Transition expected = before[i];
    if (expected.user_id == "alice") {
      expected.user_id = erased.pseudonym;
      expected.email.reset();
    }
    CHECK(after[i] == expected);
  }
  CHECK(after.back().IdempotencyKey().find("alice") == std::string::npos);

  // Nothing of her is left in any file; bob is still there.
  for (const std::string needle :
       {"alice", "alice@example.com", "+1-555-alice-0199", "note-alice-private"}) {
    INFO(needle);
    CHECK(FilesHolding(dir, needle) == std::vector<std::string>{});
  }
  CHECK_FALSE(FilesHolding(dir, "bob@example.com").empty());
  // Not the whole "note-bob-private": the table files are LZ4, which may write any four
  // bytes seen just before as a back-reference (the key "note" right before its value in
  // log format 6, the "bob-" of his phone number); "private" is his note's own.
  CHECK_FALSE(FilesHolding(dir, "private").empty());
  CHECK_FALSE(fs::exists(history.dir.snapshots() + "/set-aside"));

  // Her keys are forgotten; bob's are not. Nothing remembers her id.
  IngestResult again;
  RequireOk(engine.Ingest(Event("bob", "used", "bob-key-0"), &again));
  CHECK(again.duplicate);
  CHECK(engine.EraseContact("alice", nullptr).code() == StatusCode::kNotFound);
  CHECK(engine.Stats().contacts == 1);
  CHECK(engine.Stats().contacts_erased == 1);

  // The live state is the fold of the rewritten log: a full replay (which also checks that
  // it reproduces every stored transition) and a start from the new snapshot agree with it.
  const StateInfo live = engine.State();
  RequireOk(engine.Close());
  history.engine.reset();
  Options replay = ManualOptions(dir);
  replay.read_only = true;
  replay.use_snapshots = false;
  replay.check_log = true;
  CHECK(OpenOrFail(replay)->State().digest == live.digest);
  auto reopened = OpenOrFail(ManualOptions(dir));
  CHECK(reopened->State().digest == live.digest);
  CHECK(reopened->Stats().replayed_records == 0);  // from the snapshot taken at the erasure
  CHECK(reopened->Stats().contacts == 1);          // the contacts gauge counts no deleted contact

  // A later event with her id starts a new contact.
  IngestResult back;
  RequireOk(reopened->Ingest(Event("alice", "used", "alice-key-0"), &back));
  CHECK_FALSE(back.duplicate);
  Member member;
  CHECK(reopened->GetMember("pro", "alice", &member).ok());
  CHECK(reopened->Stats().contacts == 2);
}

TEST_CASE("erasing an unknown contact changes nothing") {
  History history(false);
  Engine& engine = *history.engine;
  const StateInfo before = engine.State();
  CHECK(engine.EraseContact("carol", nullptr).code() == StatusCode::kNotFound);
  CHECK(engine.State().digest == before.digest);
  CHECK_FALSE(FilesHolding(history.dir.path(), "alice@example.com").empty());
}

TEST_CASE("an erasure within a group (the server's rounds) commits the group's inputs first") {
  History history(false);
  Engine& engine = *history.engine;
  engine.BeginGroup();
  IngestResult staged;
  RequireOk(engine.Ingest(Event("bob", "used", "bob-key-in-group"), &staged));
  RequireOk(engine.EraseContact("alice", nullptr));
  RequireOk(engine.EndGroup());
  CHECK(FilesHolding(history.dir.path(), "alice") == std::vector<std::string>{});
  const StateInfo live = engine.State();
  RequireOk(engine.Close());
  history.engine.reset();
  Options replay = ManualOptions(history.dir.path());
  replay.read_only = true;
  replay.use_snapshots = false;
  replay.check_log = true;
  auto replayed = OpenOrFail(replay);
  CHECK(replayed->State().digest == live.digest);
  CHECK(replayed->State().log_seq == live.log_seq);  // bob's event and the delete are logged
}

}  // namespace
}  // namespace bucketd
