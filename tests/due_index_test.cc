// The time index (engine/state/due_index.h) against an ordered map of the same entries: random
// filings, erasures and pops, across page boundaries, negative instants, filings into the
// front page after it was sorted, keys filed again after being erased, big pages (sorted
// to erase from, then filed into), the radix sort's digits, and compaction. Slots are filed
// by pool index (SlotPool::IndexOf): here made-up indices, unlike the keys' user indices and
// using all 32 bits, so that an entry's words cannot be confused.
#include <catch2/catch.hpp>

#include <cstdint>
#include <iterator>
#include <map>
#include <random>
#include <vector>

#include "engine/state/due_index.h"

namespace bucketd {
namespace {

constexpr TimeMs kPageMs = TimeMs{1} << DueIndex::kPageShift;
using SlotIndex = DueIndex::SlotIndex;

// The slot index filed for user u: high bits set, never the user index nor kErased.
SlotIndex SlotOf(uint32_t user) { return 0xFFFE'0000u - 3 * user; }

TEST_CASE("an entry is 12 bytes: two key words and a slot index") {
  STATIC_REQUIRE(sizeof(DueIndex::Stored) == 12);
  STATIC_REQUIRE(alignof(DueIndex::Stored) == 4);
  STATIC_REQUIRE(sizeof(DueIndex::SlotIndex) == 4);
  // Room is counted in entries: a page reserved for 1,000 holds 12,000 bytes of them.
  DueIndex index;
  DueIndex::PageTally tally;
  for (int i = 0; i < 1'000; ++i) tally.Add(5);
  index.Reserve(std::move(tally));
  CHECK(index.capacity() * sizeof(DueIndex::Stored) == 12'000);
}

// The index and the model hold the same entries, and the index pops in the model's order.
void CheckSame(const DueIndex& index, const std::map<DueKey, SlotIndex>& model) {
  REQUIRE(index.size() == model.size());
  // Erased entries never outnumber the live ones by more than the compaction slack.
  CHECK(index.stored() <= 2 * index.size() + 1024);
  REQUIRE(index.empty() == model.empty());
  const std::vector<DueIndex::Entry> sorted = index.Sorted();
  REQUIRE(sorted.size() == model.size());
  auto it = model.begin();
  for (const DueIndex::Entry& e : sorted) {
    CHECK(e.key == it->first);
    CHECK(e.slot == it->second);
    ++it;
  }
  if (!model.empty()) {
    CHECK(index.front_key() == model.begin()->first);
    CHECK(index.front() == model.begin()->second);
  }
}

struct Harness {
  explicit Harness(uint32_t users) {
    slots.reserve(users);
    for (uint32_t u = 0; u < users; ++u) slots.push_back(SlotOf(u));
  }

  // A key for user u, not filed yet: one entry per user, like one slot per user and bucket.
  void File(uint32_t user, TimeMs due) {
    if (filed.contains(user)) return;
    const DueKey key{due, user};
    index.Insert(key, slots[user]);
    model.emplace(key, slots[user]);
    filed.emplace(user, key);
  }
  void Unfile(uint32_t user) {
    auto it = filed.find(user);
    if (it == filed.end()) return;
    index.Erase(it->second, slots[user]);
    model.erase(it->second);
    filed.erase(it);
  }
  // Pops the earliest entry, checking it is the model's earliest.
  void Pop() {
    if (model.empty()) return;
    const auto [key, slot] = *model.begin();
    REQUIRE(index.front_key() == key);
    REQUIRE(index.front() == slot);
    index.EraseFront(key);
    model.erase(model.begin());
    filed.erase(key.user_index);
  }

  std::vector<SlotIndex> slots;
  DueIndex index;
  std::map<DueKey, SlotIndex> model;
  std::map<uint32_t, DueKey> filed;
};

TEST_CASE("random filings, erasures and pops pop in (due, user) order") {
  std::mt19937_64 rng(GENERATE(1, 2, 3, 4));
  const uint32_t users = 2'000;
  Harness h(users);
  std::uniform_int_distribution<uint32_t> user(0, users - 1);
  TimeMs now = -3 * kPageMs;  // instants before the epoch too
  for (int step = 0; step < 60'000; ++step) {
    const uint32_t op = static_cast<uint32_t>(rng() % 100);
    if (op < 50) {
      // Mostly ahead of the clock, some at it (the front page, after it was sorted), and
      // many on the same instant (ties broken by user).
      TimeMs due = now + static_cast<TimeMs>(rng() % (8 * kPageMs));
      if (op < 10) due = now + static_cast<TimeMs>(rng() % 1000);
      if (op >= 45) due = now + kPageMs;
      h.File(user(rng), due);
    } else if (op < 70) {
      h.Unfile(user(rng));
    } else if (op < 95) {
      h.Pop();
    } else {
      now += static_cast<TimeMs>(rng() % kPageMs);
      // A sweep to `now`: pops everything due by then.
      while (!h.model.empty() && h.model.begin()->first.due_at <= now) h.Pop();
    }
    if (step % 997 == 0) CheckSame(h.index, h.model);
  }
  CheckSame(h.index, h.model);
  while (!h.model.empty()) h.Pop();
  CHECK(h.index.empty());
}

TEST_CASE("big pages: erasing from them is noted and done at the sort") {
  // Every instant within two pages, so pages hold thousands of entries: erasing from an
  // unsorted one notes the entry, the front page's sort drops it, and keys erased, filed
  // and erased again repeat in the notes.
  std::mt19937_64 rng(GENERATE(5, 6));
  const uint32_t users = 30'000;
  Harness h(users);
  std::uniform_int_distribution<uint32_t> user(0, users - 1);
  std::uniform_int_distribution<TimeMs> due(0, 2 * kPageMs - 1);
  for (uint32_t u = 0; u < users; u += 2) h.File(u, due(rng));
  for (int step = 0; step < 80'000; ++step) {
    const uint32_t op = static_cast<uint32_t>(rng() % 100);
    if (op < 55) {
      h.File(user(rng), due(rng));
    } else if (op < 85) {
      h.Unfile(user(rng));
    } else {
      h.Pop();
    }
    if (step % 4999 == 0) CheckSame(h.index, h.model);
  }
  CheckSame(h.index, h.model);
  while (!h.model.empty()) h.Pop();
  CHECK(h.index.empty());
}

TEST_CASE("erasing from a big page ahead of the clock leaves it unsorted") {
  // A sequence's deadlines: filed ahead on page views, erased on purchases, filed again.
  // Nothing goes beside a page until it is the front one.
  Harness h(2'000);
  const TimeMs ahead = 5 * kPageMs;
  for (uint32_t u = 0; u < 1'000; ++u) h.File(u, ahead + u * 7);
  for (uint32_t u = 0; u < 1'000; u += 3) h.Unfile(u);
  for (uint32_t u = 1'000; u < 2'000; ++u) h.File(u, ahead + u * 5);
  for (uint32_t u = 0; u < 1'000; u += 3) h.File(u, ahead + u * 7);  // the same keys again
  for (uint32_t u = 0; u < 1'000; u += 6) h.Unfile(u);               // and some erased again
  CHECK(h.index.late_size() == 0);
  CheckSame(h.index, h.model);
  // The front page now: filings into it wait beside its sorted entries.
  h.Pop();
  h.File(0, ahead + 1);
  CHECK(h.index.late_size() == 1);
  CheckSame(h.index, h.model);
  while (!h.model.empty()) h.Pop();
  CHECK(h.index.empty());
}

TEST_CASE("a key filed again after being erased is one entry, popped once") {
  Harness h(4);
  h.File(1, 500);
  h.File(2, 500);
  h.File(3, 400);
  h.Unfile(3);
  h.File(3, 400);  // the same key again, beside its erased copy in an unsorted page
  CheckSame(h.index, h.model);
  h.Pop();  // sorts the page and pops (400, 3); (500, 2) and (500, 1) remain, sorted
  h.Unfile(2);
  h.File(2, 500);  // into the sorted front page: waits beside it, its erased copy stays
  CheckSame(h.index, h.model);
  h.Unfile(2);  // found beside the page, not as the erased copy
  h.File(2, 500);
  CheckSame(h.index, h.model);
  h.Pop();
  h.Pop();
  CHECK(h.index.empty());
  h.File(0, 300);  // an earlier instant after the front page emptied
  CheckSame(h.index, h.model);
}

TEST_CASE("erased entries are dropped once they outnumber the live ones") {
  Harness h(50'000);
  for (uint32_t u = 0; u < 50'000; ++u) h.File(u, static_cast<TimeMs>(u) * 997);
  // Erase all but every 100th, spread over every page: compaction runs on the way.
  for (uint32_t u = 0; u < 50'000; ++u) {
    if (u % 100 != 0) h.Unfile(u);
  }
  CheckSame(h.index, h.model);
  CHECK(h.index.size() == 500);
  // Refile the erased ones elsewhere and pop everything in order.
  for (uint32_t u = 0; u < 50'000; ++u) h.File(u, 10'000'000 - static_cast<TimeMs>(u));
  CheckSame(h.index, h.model);
  while (!h.model.empty()) h.Pop();
  CHECK(h.index.empty());
}

TEST_CASE("upcoming entries are visited in pop order after the front") {
  Harness h(200);
  for (uint32_t u = 0; u < 100; ++u) h.File(u, static_cast<TimeMs>((u * 37) % 100) * 2 + 2);
  h.Unfile(5);
  CHECK(h.index.front_key() == h.model.begin()->first);  // sorts the front page
  // Filed into the sorted front page: visited in their place among the sorted ones.
  for (uint32_t u = 100; u < 110; ++u) h.File(u, static_cast<TimeMs>(u - 100) * 2 + 1);
  h.File(110, 0);  // the new front, from beside the sorted entries
  std::vector<SlotIndex> visited;
  h.index.VisitUpcoming(30, [&](size_t position, SlotIndex slot) {
    CHECK(position == visited.size() + 1);
    visited.push_back(slot);
  });
  REQUIRE(visited.size() == 29);
  auto it = std::next(h.model.begin());
  for (SlotIndex slot : visited) CHECK(slot == (it++)->second);
}

TEST_CASE("a page sorts by instant, then by user, whatever the digits") {
  // Big pages take the radix sort: instants before the epoch, every entry on one instant
  // (passes over the instant's digits are skipped), few users (passes over the user
  // index's high digits are skipped), and user indices using all 32 bits.
  struct Case {
    TimeMs base;
    TimeMs spread;       // instants in [base, base + spread)
    uint32_t user_step;  // user indices are i * user_step
  };
  const TimeMs page = kPageMs;
  for (const Case c :
       {Case{-5 * page, page, 1}, Case{-page / 2, page, 7}, Case{3 * page + 17, 1, 1},
        Case{0, page, 2'147'483'647}, Case{-7 * page, 1, 4'000'037}, Case{page, page / 3, 1}}) {
    const uint32_t count = 5'000;
    DueIndex index;
    std::map<DueKey, SlotIndex> model;
    std::mt19937_64 rng(static_cast<uint64_t>(c.base) ^ c.user_step);
    for (uint32_t i = 0; i < count; ++i) {
      const DueKey key{c.base + static_cast<TimeMs>(rng() % static_cast<uint64_t>(c.spread)),
                       static_cast<uint32_t>(i * static_cast<uint64_t>(c.user_step))};
      if (!model.emplace(key, SlotOf(i)).second) continue;
      index.Insert(key, SlotOf(i));
    }
    CheckSame(index, model);
    for (const auto& [key, slot] : model) {
      REQUIRE(index.front_key() == key);
      REQUIRE(index.front() == slot);
      index.EraseFront(key);
    }
    CHECK(index.empty());
  }
}

TEST_CASE("a bulk load's tallies size every page once, and the index pops as usual") {
  std::mt19937_64 rng(77);
  Harness h(60'000);
  // Two tallies (two decoding threads), each counting runs of filings in a few pages.
  DueIndex::PageTally first, second;
  std::vector<std::pair<uint32_t, TimeMs>> filings;
  for (uint32_t user = 0; user < 60'000; ++user) {
    const TimeMs due = -3 * kPageMs + static_cast<TimeMs>(rng() % (9 * kPageMs));
    filings.emplace_back(user, (user / 100) % 2 ? due : due / 7);  // runs, then jumps
    (user < 25'000 ? first : second).Add(filings.back().second);
  }
  CHECK(first.total() == 25'000);
  first.Merge(std::move(second));
  CHECK(first.total() == 60'000);
  CHECK(second.total() == 0);
  h.index.Reserve(std::move(first));
  const size_t room = h.index.capacity();
  CHECK(room == 60'000);
  for (const auto& [user, due] : filings) h.File(user, due);
  CHECK(h.index.capacity() == room);  // no page grew
  CheckSame(h.index, h.model);
  while (!h.model.empty()) h.Pop();
  CHECK(h.index.empty());
}

TEST_CASE("clear forgets every entry") {
  Harness h(10);
  for (uint32_t u = 0; u < 10; ++u) h.File(u, u * kPageMs);
  h.index.clear();
  CHECK(h.index.empty());
  CHECK(h.index.size() == 0);
  CHECK(h.index.Sorted().empty());
  h.index.Insert(DueKey{7, 3}, h.slots[3]);
  CHECK(h.index.front_key() == DueKey{7, 3});
  CHECK(h.index.front() == SlotOf(3));
}

}  // namespace
}  // namespace bucketd
