// A bucket's member index (engine/state/member_index.h) against a set of user ids: random joins,
// leaves and forgotten (freed) slots, read back in userId order after every few changes.
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
  explicit Harness(size_t users) {
    for (size_t i = 0; i < users; ++i) {
      auto user = std::make_unique<User>();
      user->id = "user-" + std::to_string(i * 7919 % users);
      auto slot = std::make_unique<Slot>();
      slot->user = user.get();
      owners.push_back(std::move(user));
      slots.push_back(std::move(slot));
    }
  }
  void Join(size_t i) {
    Slot* slot = slots[i].get();
    if (slot == nullptr || slot->active) return;
    slot->active = true;
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
    slots[i].reset();
  }
  void Check() {
    REQUIRE(index.size() == model.size());
    std::vector<std::string> listed;
    for (const Slot* slot : index.sorted()) listed.push_back(slot->user->id);
    REQUIRE(listed == std::vector<std::string>(model.begin(), model.end()));
  }

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

TEST_CASE("settling releases a burst's buffer of pending changes, keeping a small one") {
  Harness h(20000);
  for (size_t i = 0; i < 20000; ++i) h.Join(i);
  CHECK(h.index.pending_bytes() >= 20000 * sizeof(Slot*));
  h.Check();  // reads the members: settles
  CHECK(h.index.pending_bytes() == 0);
  // A few changes keep their small buffer between reads (no allocation per burst).
  for (size_t i = 0; i < 100; ++i) h.Leave(i);
  const size_t small = h.index.pending_bytes();
  CHECK(small >= 100 * sizeof(Slot*));
  h.Check();
  CHECK(h.index.pending_bytes() == small);
  for (size_t i = 0; i < 100; ++i) h.Join(i);
  h.Check();
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
