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
    REQUIRE(user->next_due_floor == kNever);
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
