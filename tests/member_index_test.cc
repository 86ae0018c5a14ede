// A bucket's member index (engine/state/member_index.h) against a set of user ids: random joins,
// leaves and forgotten (freed) slots, read back in userId order after every few changes; the
// index built by the first read, marks kept only while it is built, and let go of when they
// outgrow the sets.
#include <catch2/catch.hpp>

#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/state/member_index.h"
#include "engine/state/state.h"

namespace bucketd {
namespace {

struct Harness {
  explicit Harness(size_t count) {
    for (size_t i = 0; i < count; ++i) {
      auto user = std::make_unique<User>();
      user->id = "user-" + std::to_string(i * 7919 % count);
      auto slot = std::make_unique<Slot>();
      slot->user = user.get();
      user->slots.push_back(slot.get());
      users.push_back(user.get());
      owners.push_back(std::move(user));
      slots.push_back(std::move(slot));
    }
  }
  void Join(size_t i) {
    Slot* slot = slots[i].get();
    if (slot == nullptr || slot->active) return;
    slot->active = true;
    ++slot->entry_count;
    index.Add(slot);
    model.insert(slot->user->id);
  }
  void Leave(size_t i) {
    Slot* slot = slots[i].get();
    if (slot == nullptr || !slot->active) return;
    slot->active = false;
    index.Remove(slot);
    model.erase(slot->user->id);
  }
  // A deleted contact: leaves, then its slot is freed. The index must not read it again.
  void Free(size_t i) {
    Leave(i);
    if (slots[i] == nullptr) return;
    index.Forget(slots[i].get());
    slots[i]->user->slots.clear();  // as the fold does before freeing a contact's slots
    slots[i].reset();
  }
  void Check() {
    REQUIRE(index.size() == model.size());
    std::vector<std::string> listed;
    for (const Slot* slot : index.sorted(users, 0)) listed.push_back(slot->user->id);
    REQUIRE(listed == std::vector<std::string>(model.begin(), model.end()));
    // Past members: slots that held a membership and hold none now.
    std::set<std::string> past;
    for (const auto& slot : slots) {
      if (slot != nullptr && !slot->active && slot->entry_count > 0) past.insert(slot->user->id);
    }
    listed.clear();
    for (const Slot* slot : index.past_sorted(users, 0)) listed.push_back(slot->user->id);
    REQUIRE(listed == std::vector<std::string>(past.begin(), past.end()));
  }

  std::vector<User*> users;  // as State::users: every user, by index
  std::vector<std::unique_ptr<User>> owners;
  std::vector<std::unique_ptr<Slot>> slots;
  MemberIndex index;
  std::set<std::string> model;
};

TEST_CASE("joins, leaves and freed slots read back in userId order") {
  std::mt19937_64 rng(5);
  // More slots than Forget scans among (4,096 pending), so that it settles at times.
  Harness h(9000);
  for (int round = 0; round < 400; ++round) {
    // Few changes between reads (a freed slot is found among the pending ones), and now
    // and then thousands (the index settles before forgetting).
    const int changes = round % 50 == 0 ? 20000 : static_cast<int>(rng() % 40);
    for (int c = 0; c < changes; ++c) {
      const size_t i = rng() % h.slots.size();
      switch (rng() % 10) {
        case 0:
          h.Free(i);
          break;
        case 1:
        case 2:
        case 3:
          h.Leave(i);
          break;
        default:
          h.Join(i);
      }
    }
    h.Check();
  }
}

TEST_CASE("the index holds nothing until a read builds it, then marks changes until settled") {
  Harness h(20000);
  for (size_t i = 0; i < 20000; ++i) h.Join(i);
  CHECK(h.index.size() == 20000);
  CHECK(!h.index.built());
  CHECK(h.index.pending_bytes() == 0);
  h.Check();  // the first read builds both sets from the users' slots
  CHECK(h.index.built());
  CHECK(h.index.pending_bytes() == 0);
  // A few changes keep their small buffer between reads (no allocation per burst).
  for (size_t i = 0; i < 100; ++i) h.Leave(i);
  const size_t small = h.index.pending_bytes();
  CHECK(small >= 100 * sizeof(Slot*));
  h.Check();
  CHECK(h.index.pending_bytes() == small);
  for (size_t i = 0; i < 100; ++i) h.Join(i);
  h.Check();
  CHECK(h.index.built());
}

TEST_CASE("marks that outgrow the sets let go of the index; the next read builds it again") {
  Harness h(30000);
  for (size_t i = 0; i < 5000; ++i) h.Join(i);
  h.Check();
  REQUIRE(h.index.built());
  // 5,000 members and no past ones: the 5,001st mark is one more than the sets hold (and
  // past the 4,096 kept at least).
  for (size_t i = 5000; i < 10000; ++i) h.Join(i);
  CHECK(h.index.built());
  CHECK(h.index.pending_bytes() >= 5000 * sizeof(Slot*));
  h.Join(10000);
  CHECK(!h.index.built());
  CHECK(h.index.pending_bytes() == 0);
  // Changes while let go are counted only; flags were reset, so the rebuild lists all.
  for (size_t i = 0; i < 3000; ++i) h.Leave(i);
  for (size_t i = 20000; i < 21000; ++i) h.Join(i);
  h.Free(4000);
  h.Check();
  CHECK(h.index.built());
}

TEST_CASE("a deleted bucket's members all become past members, built or not") {
  for (const bool read_first : {false, true}) {
    INFO("read before the delete: " << read_first);
    Harness h(50);
    for (size_t i = 0; i < 30; ++i) h.Join(i);
    for (size_t i = 0; i < 10; ++i) h.Leave(i);
    if (read_first) h.Check();
    for (size_t i = 10; i < 30; ++i) {  // the fold ends each membership, then EndAll
      h.slots[i]->active = false;
      h.model.erase(h.slots[i]->user->id);
    }
    h.index.EndAll();
    CHECK(h.index.size() == 0);
    h.Check();  // no members; past members 0-29
    CHECK(h.index.past_sorted(h.users, 0).size() == 30);
  }
}

TEST_CASE("a slot freed right after joining and leaving, before any read, is forgotten") {
  Harness h(10);
  h.Join(3);
  h.Check();  // listed
  h.Leave(3);
  h.Join(4);
  h.Free(3);  // listed and pending
  h.Join(5);
  h.Leave(5);
  h.Free(5);  // pending only
  h.Free(6);  // never a member
  h.Check();
  CHECK(h.index.size() == 1);
}

}  // namespace
}  // namespace bucketd
