// Where users and slots live (engine/state/user_arena.h, engine/state/slot_pool.h,
// engine/base/huge_block.h): objects stay where they were made through growth, reservation and
// adoption; reserved blocks are used before new ones are mapped; every object is destroyed with its
// pool (LeakSanitizer would report a user whose id was never freed).
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include "engine/base/huge_block.h"
#include "engine/state/slot_pool.h"
#include "engine/state/state.h"
#include "engine/state/user_arena.h"

namespace bucketd {
namespace {

constexpr size_t kUsersPerBlock = kHugeBlockBytes / sizeof(User);

// Ids longer than a std::string's inline buffer, so that a user never destroyed leaks.
std::string LongId(size_t i) { return "a-user-id-longer-than-fifteen-" + std::to_string(i); }

TEST_CASE("users made across many blocks keep their place and their fields") {
  UserArena arena;
  std::vector<User*> users;
  const size_t count = 3 * kUsersPerBlock + 17;
  for (size_t i = 0; i < count; ++i) {
    User* user = arena.New();
    // Default-initialized: the members' initializers ran.
    REQUIRE(user->events.empty());
    REQUIRE(user->slots.empty());
    REQUIRE(!user->deleted);
    REQUIRE(user->next_due_floor() == kNever);
    user->id = LongId(i);
    user->index = static_cast<uint32_t>(i);
    users.push_back(user);
  }
  CHECK(std::set<User*>(users.begin(), users.end()).size() == count);
  CHECK(arena.reserved_bytes() == 4 * kHugeBlockBytes);
  for (size_t i = 0; i < count; ++i) {
    REQUIRE(users[i]->id == LongId(i));
    REQUIRE(users[i]->index == i);
  }
}

TEST_CASE("a user reservation maps its blocks once, and New() uses them before mapping more") {
  UserArena arena;
  arena.New()->id = LongId(0);
  const std::vector<void*> reserved = arena.Reserve(2 * kUsersPerBlock);
  // The first block's room counts: one user is in it.
  CHECK(reserved.size() == 2);
  CHECK(arena.reserved_bytes() == 3 * kHugeBlockBytes);
  CHECK(arena.Reserve(2 * kUsersPerBlock).empty());  // already there
  for (size_t i = 1; i <= 2 * kUsersPerBlock; ++i) {
    User* user = arena.New();
    user->id = LongId(i);
    if (i == kUsersPerBlock) CHECK(static_cast<void*>(user) == reserved[0]);
  }
  // 1 + 2 * kUsersPerBlock made: the last reserved block has room for kUsersPerBlock - 1.
  for (size_t i = 1; i < kUsersPerBlock; ++i) arena.New();
  CHECK(arena.reserved_bytes() == 3 * kHugeBlockBytes);
  arena.New();
  CHECK(arena.reserved_bytes() == 4 * kHugeBlockBytes);
}

TEST_CASE("an adopted arena's users stay where they are, and both keep making users") {
  UserArena mine, theirs;
  std::vector<User*> users;
  for (size_t i = 0; i < kUsersPerBlock + 5; ++i) users.push_back(mine.New());
  for (size_t i = 0; i < 10; ++i) users.push_back(theirs.New());
  REQUIRE(!theirs.Reserve(5 * kUsersPerBlock).empty());  // untouched blocks are returned
  for (size_t i = 0; i < users.size(); ++i) users[i]->id = LongId(i);
  mine.Adopt(std::move(theirs));
  CHECK(theirs.reserved_bytes() == 0);
  CHECK(mine.reserved_bytes() == 3 * kHugeBlockBytes);
  for (size_t i = 0; i < users.size(); ++i) REQUIRE(users[i]->id == LongId(i));
  // New users come from this arena's current block, not over adopted ones.
  std::set<User*> seen(users.begin(), users.end());
  for (size_t i = 0; i < kUsersPerBlock; ++i) {
    User* user = mine.New();
    REQUIRE(seen.insert(user).second);
    user->id = LongId(users.size() + i);
  }
  UserArena empty;
  empty.Adopt(std::move(mine));  // an empty arena takes the other whole
  CHECK(empty.reserved_bytes() == 4 * kHugeBlockBytes);
  for (size_t i = 0; i < users.size(); ++i) REQUIRE(users[i]->id == LongId(i));
}

TEST_CASE("a slot reservation counts the free list and the current block") {
  SlotPool pool;
  std::vector<Slot*> slots;
  for (int i = 0; i < 1000; ++i) slots.push_back(pool.New());
  for (int i = 0; i < 500; ++i) pool.Delete(slots[i]);
  CHECK(pool.Reserve(400).empty());  // the free list covers it
  const size_t before = pool.reserved_bytes();
  const std::vector<void*> reserved = pool.Reserve(200'000);
  CHECK(!reserved.empty());
  CHECK(pool.reserved_bytes() == before + reserved.size() * kHugeBlockBytes);
  CHECK(pool.Reserve(200'000).empty());  // already there
  for (int i = 0; i < 200'000; ++i) pool.New()->entry_count = 7;
  CHECK(pool.reserved_bytes() == before + reserved.size() * kHugeBlockBytes);
  CHECK(pool.live() == 500 + 200'000);
}

// Every slot's pool index finds it in `pool`, and says where it is: block << 16 | position.
void CheckIndices(const SlotPool& pool, const std::vector<Slot*>& slots) {
  std::set<uint32_t> seen;
  for (Slot* slot : slots) {
    const uint32_t index = pool.IndexOf(slot);
    REQUIRE(index != SlotPool::kNoIndex);
    REQUIRE((index & 0xFFFF) < SlotPool::kSlotsPerBlock);
    REQUIRE(pool.At(index) == slot);
    REQUIRE(seen.insert(index).second);
  }
}

TEST_CASE("a slot's pool index finds it, across blocks and after adoption") {
  constexpr size_t kPerBlock = SlotPool::kSlotsPerBlock;
  STATIC_REQUIRE(kPerBlock < 0xFFFF);
  SlotPool pool;
  std::vector<Slot*> mine;
  for (size_t i = 0; i < 2 * kPerBlock + 100; ++i) mine.push_back(pool.New());
  CheckIndices(pool, mine);
  // Carved in order: block i / kPerBlock, position i % kPerBlock.
  for (size_t i : {size_t{0}, size_t{1}, kPerBlock - 1, kPerBlock, 2 * kPerBlock + 99}) {
    CHECK(pool.IndexOf(mine[i]) == (i / kPerBlock << 16 | i % kPerBlock));
  }
  // A deleted slot made again keeps its index.
  const uint32_t reused = pool.IndexOf(mine[kPerBlock + 3]);
  pool.Delete(mine[kPerBlock + 3]);
  mine[kPerBlock + 3] = pool.New();
  CHECK(pool.IndexOf(mine[kPerBlock + 3]) == reused);
  // Reserved blocks after the current one, carved from after an adoption below.
  CHECK(!pool.Reserve(3 * kPerBlock).empty());
  const auto my_blocks = static_cast<uint32_t>(pool.reserved_bytes() / kHugeBlockBytes);
  CHECK(my_blocks >= 5);

  // Another pool's blocks (two carved from, reserved ones after) go in front: every block
  // is renumbered, so this pool's slots have new indices, and both pools' slots are found.
  SlotPool other;
  std::vector<Slot*> theirs;
  for (size_t i = 0; i < kPerBlock + 5; ++i) theirs.push_back(other.New());
  CHECK(!other.Reserve(2 * kPerBlock).empty());
  const auto their_blocks = static_cast<uint32_t>(other.reserved_bytes() / kHugeBlockBytes);
  CHECK(their_blocks >= 3);
  const uint32_t before = pool.IndexOf(mine[7]);
  pool.Adopt(std::move(other));
  CHECK(pool.reserved_bytes() == (my_blocks + their_blocks) * kHugeBlockBytes);
  CHECK(pool.IndexOf(mine[7]) == before + (their_blocks << 16));
  CHECK(pool.IndexOf(theirs[0]) == 0);
  CHECK(pool.IndexOf(theirs[kPerBlock + 4]) == (1 << 16 | 4));
  std::vector<Slot*> all = theirs;
  all.insert(all.end(), mine.begin(), mine.end());
  // New slots: the other's uncarved room (through the free list), the rest of this pool's
  // current block, then into its reserved blocks, with no block mapped.
  const size_t fresh = their_blocks * kPerBlock + 2 * kPerBlock;
  for (size_t i = 0; i < fresh; ++i) all.push_back(pool.New());
  CHECK(pool.reserved_bytes() == (my_blocks + their_blocks) * kHugeBlockBytes);
  CHECK(pool.IndexOf(all.back()) >> 16 == my_blocks + their_blocks - 1);  // the last
  CheckIndices(pool, all);
  CHECK(pool.live() == all.size());

  // An empty pool takes another whole: the blocks keep their numbers.
  SlotPool empty;
  const uint32_t last = pool.IndexOf(all.back());
  empty.Adopt(std::move(pool));
  CHECK(empty.IndexOf(all.back()) == last);
  CheckIndices(empty, all);
}

TEST_CASE("a pool reserved before its first slot indexes its slots from block 0") {
  SlotPool pool;
  CHECK(!pool.Reserve(SlotPool::kSlotsPerBlock + 10).empty());
  std::vector<Slot*> slots;
  for (size_t i = 0; i < SlotPool::kSlotsPerBlock + 10; ++i) slots.push_back(pool.New());
  CHECK(pool.IndexOf(slots.back()) == (1 << 16 | 9));
  CheckIndices(pool, slots);
}

TEST_CASE("blocks are prefaulted at every list's pace") {
  int a[6], b[2];
  const std::vector<void*> six{&a[0], &a[1], &a[2], &a[3], &a[4], &a[5]};
  const std::vector<void*> two{&b[0], &b[1]};
  // Ties go to the earlier list; then whichever is less far along.
  CHECK(MergeByProgress({six, two}) ==
        std::vector<void*>{&a[0], &b[0], &a[1], &a[2], &a[3], &b[1], &a[4], &a[5]});
  CHECK(MergeByProgress({{}, two}) == two);
  CHECK(MergeByProgress({}).empty());
}

}  // namespace
}  // namespace bucketd
