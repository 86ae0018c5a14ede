// The id -> User map (engine/state/user_index.h): every user is found by its id through growth,
// absent ids are not, duplicates are refused, and ids whose hashes collide are told apart.
#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "engine/state/state.h"
#include "engine/state/user_index.h"

namespace bucketd {
namespace {

std::unique_ptr<User> MakeUser(std::string id, uint32_t index) {
  auto user = std::make_unique<User>();
  user->id = std::move(id);
  user->index = index;
  return user;
}

TEST_CASE("every user is found by its id while the index grows, and no other id is") {
  UserIndex index;
  std::vector<std::unique_ptr<User>> users;
  CHECK(index.Find("nobody") == nullptr);  // empty: no table yet
  CHECK(index.FindByHash(UserIndex::Hash("nobody")) == nullptr);
  for (uint32_t i = 0; i < 50'000; ++i) {
    // Short ids, and long ones that do not fit a std::string's inline buffer.
    users.push_back(MakeUser((i % 3 == 0 ? "a-much-longer-user-id-" : "u") + std::to_string(i), i));
    REQUIRE(index.Insert(users.back().get()));
  }
  CHECK(index.size() == users.size());
  for (const auto& user : users) {
    REQUIRE(index.Find(user->id) == user.get());
    REQUIRE(index.FindByHash(UserIndex::Hash(user->id)) == user.get());
  }
  for (uint32_t i = 50'000; i < 51'000; ++i) {
    REQUIRE(index.Find("u" + std::to_string(i)) == nullptr);
  }
  // At most 5/8 full: 16 bytes per entry, so under 16 * 8 / 5 * 2 bytes per user.
  CHECK(index.bytes() <= users.size() * 52);
}

TEST_CASE("a second user with a present id is refused and changes nothing") {
  UserIndex index;
  auto first = MakeUser("same", 0);
  auto second = MakeUser("same", 1);
  REQUIRE(index.Insert(first.get()));
  CHECK_FALSE(index.Insert(second.get()));
  CHECK(index.size() == 1);
  CHECK(index.Find("same") == first.get());
}

TEST_CASE("ids with one hash are told apart by Find, not by FindByHash") {
  UserIndex index;
  constexpr uint64_t kHash = 0x1234'5678'9abc'def0;
  std::vector<std::unique_ptr<User>> users;
  for (uint32_t i = 0; i < 40; ++i) {  // a long probe run, across growth
    users.push_back(MakeUser("collide-" + std::to_string(i), i));
    REQUIRE(index.Insert(users.back().get(), kHash));
  }
  for (const auto& user : users) CHECK(index.Find(user->id, kHash) == user.get());
  CHECK(index.Find("collide-40", kHash) == nullptr);
  CHECK_FALSE(index.Insert(users[7].get(), kHash));
  // By hash alone, one of them: the caller must compare ids (Fold::Lookahead does).
  User* found = index.FindByHash(kHash);
  CHECK(std::any_of(users.begin(), users.end(), [&](const auto& u) { return u.get() == found; }));
}

TEST_CASE("removing a user keeps every other one findable, in runs that wrap around the table") {
  // 16 entries (the smallest table); homes 13..15 and 0 make one probe run that wraps past
  // the end, and equal hashes make entries share a home.
  const std::vector<uint64_t> hashes = {13, 14, 13, 15, 14, 0, 13, 1, 15};
  for (size_t removed = 0; removed < hashes.size(); ++removed) {
    UserIndex index;
    std::vector<std::unique_ptr<User>> users;
    for (size_t i = 0; i < hashes.size(); ++i) {
      users.push_back(MakeUser("u" + std::to_string(i), static_cast<uint32_t>(i)));
      REQUIRE(index.Insert(users.back().get(), hashes[i]));
    }
    INFO("removed u" << removed);
    REQUIRE(index.Remove(users[removed]->id, hashes[removed]));
    CHECK(index.size() == hashes.size() - 1);
    CHECK(index.Find(users[removed]->id, hashes[removed]) == nullptr);
    CHECK_FALSE(index.Remove(users[removed]->id, hashes[removed]));
    for (size_t i = 0; i < hashes.size(); ++i) {
      if (i != removed) CHECK(index.Find(users[i]->id, hashes[i]) == users[i].get());
    }
    // Filed again under a new id (erasure's rename), it is found by that id only.
    users[removed]->id = "renamed";
    REQUIRE(index.Insert(users[removed].get(), 14));
    CHECK(index.Find("renamed", 14) == users[removed].get());
  }
  UserIndex empty;
  CHECK_FALSE(empty.Remove("nobody"));
}

TEST_CASE("reserving keeps the users filed and makes room without growing later") {
  UserIndex index;
  std::vector<std::unique_ptr<User>> users;
  for (uint32_t i = 0; i < 100; ++i) {
    users.push_back(MakeUser("r" + std::to_string(i), i));
    REQUIRE(index.Insert(users.back().get()));
  }
  index.Reserve(10'000);
  const size_t reserved = index.bytes();
  for (uint32_t i = 100; i < 10'000; ++i) {
    users.push_back(MakeUser("r" + std::to_string(i), i));
    REQUIRE(index.Insert(users.back().get()));
  }
  CHECK(index.bytes() == reserved);
  for (const auto& user : users) REQUIRE(index.Find(user->id) == user.get());
}

}  // namespace
}  // namespace bucketd
