// Fold::Lookahead (engine/fold/fold_lookahead.h): the users it remembers for a run of inputs,
// and a fold fed those users (Fold::Apply's known_user) ending where a plain fold does.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "engine/definition/definition.h"
#include "engine/fold/fold.h"
#include "engine/fold/fold_lookahead.h"
#include "engine/state/digest.h"
#include "tests/test_support.h"

using namespace bucketd;
using namespace bucketd::testing;

namespace {

Record Define(const std::string& json) {
  BucketDefinition def;
  REQUIRE(ParseBucketDefinition(json, &def).ok());
  Record r;
  r.kind = RecordKind::kBucketDefine;
  r.bucket_id = def.id;
  r.definition_json = ToCanonicalJson(def);
  return r;
}

// Runs of events in which users first appear, repeat within a few inputs (closer than the
// lookahead's reach, so it saw them absent), and one contact (deleted midway) keeps
// sending events.
std::vector<std::vector<Record>> Runs(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<Record>> runs;
  runs.push_back({Define(R"({"id":"buyers","criteria":{"type":"event","eventName":"buy",)"
                         R"("check":"count","operator":"gte","value":2,"within":"1d"}})"),
                  Define(R"({"id":"seen","criteria":{"type":"event","eventName":"open",)"
                         R"("check":"exists","within":"2h"}})")});
  TimeMs at = kT0;
  uint32_t users = 0;
  for (int run = 0; run < 60; ++run) {
    std::vector<Record> records(std::uniform_int_distribution<size_t>(1, 120)(rng));
    for (Record& r : records) {
      at += std::uniform_int_distribution<TimeMs>(0, 60'000)(rng);
      r.at = at;
      const uint32_t pick = std::uniform_int_distribution<uint32_t>(0, 9)(rng);
      if (pick == 0) {
        r.kind = RecordKind::kSweep;
        continue;
      }
      r.kind = RecordKind::kEvent;
      if (pick < 3 || users == 0) ++users;  // a new user, often repeated right after
      const uint32_t user = pick == 9 ? 5
                                      : std::uniform_int_distribution<uint32_t>(
                                            users > 20 ? users - 20 : 0, users - 1)(rng);
      r.user_id = "user-" + std::to_string(user);
      r.event_name = pick % 2 ? "buy" : "open";
      r.occurred_at = at;
    }
    runs.push_back(std::move(records));
  }
  return runs;
}

// Applies the runs (numbering the records as they go; refused ones take no number) and
// returns the fold's digest, with each record's status code in `codes`.
std::string FoldRuns(std::vector<std::vector<Record>> runs, bool with_lookahead,
                     std::vector<StatusCode>* codes, uint64_t* transitions, uint64_t* known_users) {
  Fold fold;
  std::vector<Transition> out;
  Fold::Lookahead lookahead(fold);
  const auto apply = [&](Record& r, User* known) {
    r.seq = fold.state().applied_seq + 1;
    codes->push_back(fold.Apply(r, &out, known).code());
  };
  bool deleted = false;
  for (std::vector<Record>& run : runs) {
    for (size_t i = 0; i < run.size(); ++i) {
      if (with_lookahead) {
        lookahead.Advance(i, run.size(),
                          [&](size_t j) -> std::string_view { return run[j].user_id; });
      }
      User* known = with_lookahead ? lookahead.user(i, run[i].user_id) : nullptr;
      if (known != nullptr) {
        CHECK(known == fold.user(run[i].user_id));
        ++*known_users;
      }
      apply(run[i], known);
      if (!deleted && fold.state().users.size() > 40) {
        // A deleted contact keeps its User, so the lookahead still names it: its later
        // events must be refused all the same.
        Record del;
        del.at = run[i].at;
        del.kind = RecordKind::kContactDelete;
        del.user_id = "user-5";
        apply(del, nullptr);
        deleted = true;
      }
    }
  }
  *transitions = out.size();
  return ComputeDigest(fold.state());
}

}  // namespace

TEST_CASE("a fold given the lookahead's users ends where a plain fold does") {
  for (uint32_t seed : {1u, 2u, 3u}) {
    INFO("seed " << seed);
    std::vector<StatusCode> plain_codes;
    std::vector<StatusCode> ahead_codes;
    uint64_t plain_transitions = 0;
    uint64_t ahead_transitions = 0;
    uint64_t known_users = 0;
    const std::string plain =
        FoldRuns(Runs(seed), false, &plain_codes, &plain_transitions, &known_users);
    REQUIRE(known_users == 0);
    const std::string ahead =
        FoldRuns(Runs(seed), true, &ahead_codes, &ahead_transitions, &known_users);
    // Many inputs were applied with the user the lookahead found (not the first 16 of a
    // run, nor sweeps or new users).
    CHECK(known_users > ahead_codes.size() / 3);
    CHECK(ahead == plain);
    CHECK(ahead_transitions == plain_transitions);
    CHECK(ahead_codes == plain_codes);
    CHECK(plain_transitions > 100);
    // The deleted contact's later events were refused.
    CHECK(std::count(plain_codes.begin(), plain_codes.end(), StatusCode::kFailedPrecondition) > 5);
  }
}

TEST_CASE("the lookahead names only users it found, under the id asked for") {
  Fold fold;
  uint64_t seq = 0;
  const auto event = [&](const std::string& user) {
    Record r;
    r.seq = ++seq;
    r.at = kT0;
    r.kind = RecordKind::kEvent;
    r.user_id = user;
    r.event_name = "open";
    r.occurred_at = kT0;
    RequireOk(fold.Apply(r, nullptr));
  };
  for (int u = 0; u < 50; ++u) event("known-" + std::to_string(u));

  // A run of 40 inputs: known users, unknown ones, and inputs without a user.
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    ids.push_back(i % 3 == 0   ? "known-" + std::to_string(i)
                  : i % 3 == 1 ? "new-" + std::to_string(i)
                               : "");
  }
  Fold::Lookahead lookahead(fold);
  for (size_t i = 0; i < ids.size(); ++i) {
    lookahead.Advance(i, ids.size(), [&](size_t j) -> std::string_view { return ids[j]; });
    User* user = lookahead.user(i, ids[i]);
    if (i < 12 || ids[i].rfind("known-", 0) != 0) {
      // A run's first 12 inputs are applied before the lookahead finds users (its stage 1
      // runs 12 inputs ahead); unknown ids and no id have no user.
      CHECK(user == nullptr);
    } else {
      CHECK(user == fold.user(ids[i]));
      CHECK(user != nullptr);
    }
    CHECK(lookahead.user(i, "someone-else") == nullptr);
  }
}

TEST_CASE("a user found by another id's hash is not handed out") {
  Fold fold;
  Record r;
  r.seq = 1;
  r.at = kT0;
  r.kind = RecordKind::kEvent;
  r.user_id = "real";
  r.event_name = "open";
  r.occurred_at = kT0;
  RequireOk(fold.Apply(r, nullptr));
  const User* real = fold.user("real");
  REQUIRE(real != nullptr);
  // An id the index cannot tell from "real" by hash alone (the same home and the same
  // 16-bit tag, UserIndex), found by trying ids: the lookahead finds "real" for it.
  std::string ghost;
  for (uint64_t n = 0; n < (uint64_t{1} << 28) && ghost.empty(); ++n) {
    const std::string id = "ghost-" + std::to_string(n);
    if (fold.state().user_ids.FindByHash(UserIndex::Hash(id)) == real) ghost = id;
  }
  REQUIRE_FALSE(ghost.empty());
  REQUIRE(fold.user(ghost) == nullptr);

  // It must still not name that user for the ghost's inputs, and applying them with what it
  // names files a user of the ghost's own.
  const std::vector<std::string> ids(30, ghost);
  Fold::Lookahead lookahead(fold);
  for (size_t i = 0; i < ids.size(); ++i) {
    lookahead.Advance(i, ids.size(), [&](size_t j) -> std::string_view { return ids[j]; });
    User* user = lookahead.user(i, ghost);
    CHECK(user == nullptr);
    r.seq = i + 2;
    r.user_id = ghost;
    RequireOk(fold.Apply(r, nullptr, user));
  }
  const User* ghostly = fold.user(ghost);
  REQUIRE(ghostly != nullptr);
  CHECK(ghostly != real);
  CHECK(fold.user("real") == real);
  CHECK(fold.state().users.size() == 2);
}
