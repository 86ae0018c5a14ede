// The id -> User map (engine/state/user_index.h): every user is found by its id through growth,
// absent ids are not, duplicates are refused, and ids whose hashes collide (wholly, or in the
// 16-bit tag an entry keeps) are told apart.
#include <catch2/catch.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/state/state.h"
#include "engine/state/user_index.h"

namespace bucketd {
namespace {

constexpr uint64_t kTagMask = ~((uint64_t{1} << 48) - 1);  // the hash bits an entry keeps

std::unique_ptr<User> MakeUser(std::string id, uint32_t index) {
  auto user = std::make_unique<User>();
  user->id = std::move(id);
  user->index = index;
  return user;
}

// Ids that carry the hash they are to have, for an index built with ForcedHash: "<hex>/<name>"
// hashes to <hex>, so chosen ids collide, and still do after the index grows (it hashes ids
// again then). Other ids hash as in production.
std::string Forced(uint64_t hash, const std::string& name) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(hash));
  return std::string(hex) + "/" + name;
}

uint64_t ForcedHash(std::string_view id) {
  const size_t slash = id.find('/');
  if (slash == std::string_view::npos) return UserIndex::Hash(id);
  uint64_t hash = 0;
  const auto [end, error] = std::from_chars(id.data(), id.data() + slash, hash, 16);
  if (error != std::errc() || end != id.data() + slash) std::abort();
  return hash;
}

// The production hash with only 4 tags: most entries of a run share a tag, so lookups compare
// ids all the time.
uint64_t CrowdedHash(std::string_view id) { return UserIndex::Hash(id) & ~(kTagMask << 2); }

TEST_CASE("every user is found by its id while the index grows, and no other id is") {
  UserIndex index;
  std::vector<std::unique_ptr<User>> users;
  CHECK(index.Find("nobody") == nullptr);  // empty: no table yet
  CHECK(index.FindByHash(UserIndex::Hash("nobody")) == nullptr);
  CHECK(index.bytes() == 0);
  for (uint32_t i = 0; i < 200'000; ++i) {
    // Short ids, and long ones that do not fit a User's inline id.
    users.push_back(MakeUser((i % 3 == 0 ? "a-much-longer-user-id-" : "u") + std::to_string(i), i));
    REQUIRE(index.Insert(users.back().get()));
  }
  CHECK(index.size() == users.size());
  size_t others = 0;  // found by hash, but another id with the same tag earlier in the run
  for (const auto& user : users) {
    REQUIRE(index.Find(user->id) == user.get());
    const uint64_t hash = UserIndex::Hash(user->id);
    User* by_hash = index.FindByHash(hash);
    REQUIRE(by_hash != nullptr);  // never a false "absent"
    if (by_hash != user.get()) {
      ++others;
      CHECK((UserIndex::Hash(by_hash->id) & kTagMask) == (hash & kTagMask));
    }
  }
  // About one lookup in 65536 per entry probed ahead of the user's own.
  CHECK(others < users.size() / 1000);
  for (uint32_t i = 200'000; i < 210'000; ++i) {
    REQUIRE(index.Find("u" + std::to_string(i)) == nullptr);
  }
  // At most 5/8 full: 8 bytes per entry, so under 8 * 8/5 * 2 = 25.6 bytes per user; here
  // 2^19 entries (200K users need 320K).
  CHECK(index.bytes() == (size_t{1} << 19) * 8);
  CHECK(index.bytes() <= users.size() * 26);
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

TEST_CASE("ids with one hash are told apart by Find, not by FindByHash, through growth") {
  UserIndex index(&ForcedHash);
  constexpr uint64_t kHash = 0x1234'5678'9abc'def0;
  constexpr size_t kColliding = 40;
  std::vector<std::unique_ptr<User>> users;
  for (uint32_t i = 0; i < kColliding; ++i) {  // a long probe run, across growth
    users.push_back(MakeUser(Forced(kHash, "collide-" + std::to_string(i)), i));
    REQUIRE(index.Insert(users.back().get()));
  }
  for (const auto& user : users) {
    CHECK(index.Find(user->id) == user.get());
    CHECK(index.Find(user->id, kHash) == user.get());
  }
  CHECK(index.Find(Forced(kHash, "collide-40")) == nullptr);
  CHECK_FALSE(index.Insert(users[7].get()));
  // By hash alone, one of them: the caller must compare ids (Fold::Lookahead does).
  const auto one_of_them = [&](const User* found) {
    return std::any_of(users.begin(), users.begin() + kColliding,
                       [&](const auto& u) { return u.get() == found; });
  };
  CHECK(one_of_them(index.FindByHash(kHash)));
  // Many more users, so the index doubles several times more and re-files the colliding
  // ones by hashing their ids again: still one run, still told apart.
  for (uint32_t i = 0; i < 20'000; ++i) {
    users.push_back(MakeUser("other-" + std::to_string(i), static_cast<uint32_t>(users.size())));
    REQUIRE(index.Insert(users.back().get()));
  }
  for (size_t i = 0; i < kColliding; ++i) CHECK(index.Find(users[i]->id) == users[i].get());
  for (size_t i = kColliding; i < users.size(); ++i) {
    REQUIRE(index.Find(users[i]->id) == users[i].get());
  }
  CHECK(index.Find(Forced(kHash, "collide-40")) == nullptr);
  CHECK(one_of_them(index.FindByHash(kHash)));
  // Removing them one by one keeps the rest of the run findable.
  for (size_t i = 0; i < kColliding; ++i) {
    REQUIRE(index.Remove(users[i]->id));
    CHECK(index.Find(users[i]->id) == nullptr);
    for (size_t k = i + 1; k < kColliding; ++k) CHECK(index.Find(users[k]->id) == users[k].get());
  }
  CHECK_FALSE(one_of_them(index.FindByHash(kHash)));
  CHECK(index.size() == users.size() - kColliding);
}

TEST_CASE("ids with one tag: FindByHash may return the other user, Find never does") {
  // A 16-entry table (homes are the hash's low 4 bits). "a" and "b" share tag T; "y" has home
  // 5 too, but another tag.
  constexpr uint64_t kT = uint64_t{0xbeef} << 48;
  constexpr uint64_t kU = uint64_t{0x1234} << 48;
  UserIndex index(&ForcedHash);
  auto y = MakeUser(Forced(kU | 0x55, "y"), 0);  // home 5
  auto a = MakeUser(Forced(kT | 0xa5, "a"), 1);  // home 5, filed at 6 (after y)
  auto b = MakeUser(Forced(kT | 0x36, "b"), 2);  // home 6, filed at 7 (after a)
  auto c = MakeUser(Forced(kT | 0x36, "c"), 3);  // b's whole hash: filed at 8
  for (User* u : {y.get(), a.get(), b.get(), c.get()}) REQUIRE(index.Insert(u));
  const uint64_t hash_a = ForcedHash(a->id), hash_b = ForcedHash(b->id);

  // The probe from b's home meets a first, with b's tag: FindByHash returns a, though a's
  // hash differs from b's (another home). Find compares ids and finds each.
  CHECK(index.FindByHash(hash_b) == a.get());
  CHECK(index.FindByHash(hash_a) == a.get());
  CHECK(index.FindByHash(ForcedHash(y->id)) == y.get());
  CHECK(index.Find(a->id) == a.get());
  CHECK(index.Find(b->id) == b.get());
  CHECK(index.Find(c->id) == c.get());
  CHECK(index.Find(y->id) == y.get());
  // An absent id with that tag and home: FindByHash names a user (the caller compares ids),
  // Find none.
  CHECK(index.FindByHash(ForcedHash(Forced(kT | 0x46, "d"))) == a.get());
  CHECK(index.Find(Forced(kT | 0x46, "d")) == nullptr);
  CHECK(index.FindByHash(kT | 0x9) == nullptr);  // an empty home: no id has that hash
  CHECK(index.FindByHash(kU | 0x6) == nullptr);  // y's tag, but y lies before home 6

  // Without a, b is the first with its tag from its home (the backward shift moved it there).
  REQUIRE(index.Remove(a->id));
  CHECK(index.FindByHash(hash_b) == b.get());
  CHECK(index.FindByHash(hash_a) == b.get());  // a's home now leads to b, with a's tag
  CHECK(index.Find(a->id) == nullptr);
  CHECK(index.Find(b->id) == b.get());
  CHECK(index.Find(c->id) == c.get());
  REQUIRE(index.Insert(a.get()));
  CHECK(index.Find(a->id) == a.get());
}

TEST_CASE("real ids that share a tag and a home are told apart, through growth") {
  // The production hash: an id found by trying, that the index cannot tell from "first" by
  // hash alone while the table has 16 entries.
  UserIndex index;
  std::vector<std::unique_ptr<User>> users;
  users.push_back(MakeUser("first", 0));
  REQUIRE(index.Insert(users[0].get()));
  std::string twin;
  for (uint64_t n = 0; n < (uint64_t{1} << 28) && twin.empty(); ++n) {
    const std::string id = "twin-" + std::to_string(n);
    if (index.FindByHash(UserIndex::Hash(id)) == users[0].get()) twin = id;
  }
  REQUIRE_FALSE(twin.empty());
  CHECK((UserIndex::Hash(twin) & kTagMask) == (UserIndex::Hash("first") & kTagMask));
  CHECK(index.Find(twin) == nullptr);
  users.push_back(MakeUser(twin, 1));
  REQUIRE(index.Insert(users[1].get()));
  CHECK(index.FindByHash(UserIndex::Hash(twin)) == users[0].get());  // first in the run
  CHECK(index.Find(twin) == users[1].get());
  CHECK(index.Find("first") == users[0].get());
  for (uint32_t i = 2; i < 5'000; ++i) {
    users.push_back(MakeUser("g" + std::to_string(i), i));
    REQUIRE(index.Insert(users.back().get()));
  }
  CHECK(index.Find(twin) == users[1].get());
  CHECK(index.Find("first") == users[0].get());
  REQUIRE(index.Remove("first"));
  CHECK(index.Find("first") == nullptr);
  CHECK(index.Find(twin) == users[1].get());
  // Now the twin, unless one of the others has that tag too, earlier in the run.
  User* by_hash = index.FindByHash(UserIndex::Hash(twin));
  REQUIRE(by_hash != nullptr);
  CHECK((UserIndex::Hash(by_hash->id) & kTagMask) == (UserIndex::Hash(twin) & kTagMask));
}

TEST_CASE("removing a user keeps every other one findable, in runs that wrap around the table") {
  // 16 entries (the smallest table); homes 13..15 and 0 make one probe run that wraps past
  // the end, and equal homes make entries share one. Once with one tag for all (every probe
  // compares ids), once with a tag each.
  const std::vector<uint64_t> homes = {13, 14, 13, 15, 14, 0, 13, 1, 15};
  for (const bool tagged : {false, true}) {
    const auto hash = [&](size_t i) { return homes[i] | (tagged ? (i + 1) << 48 : 0); };
    for (size_t removed = 0; removed < homes.size(); ++removed) {
      UserIndex index(&ForcedHash);
      std::vector<std::unique_ptr<User>> users;
      for (size_t i = 0; i < homes.size(); ++i) {
        users.push_back(
            MakeUser(Forced(hash(i), "u" + std::to_string(i)), static_cast<uint32_t>(i)));
        REQUIRE(index.Insert(users.back().get()));
      }
      REQUIRE(index.bytes() == 16 * 8);  // no growth: the run really wraps
      INFO("removed u" << removed << (tagged ? ", a tag each" : ", one tag"));
      REQUIRE(index.Remove(users[removed]->id));
      CHECK(index.size() == homes.size() - 1);
      CHECK(index.Find(users[removed]->id) == nullptr);
      CHECK_FALSE(index.Remove(users[removed]->id));
      for (size_t i = 0; i < homes.size(); ++i) {
        if (i != removed) {
          CHECK(index.Find(users[i]->id) == users[i].get());
          CHECK(index.FindByHash(hash(i)) != nullptr);
          if (tagged) CHECK(index.FindByHash(hash(i)) == users[i].get());
        }
      }
      // Filed again under a new id (erasure's rename), it is found by that id only.
      const std::string old_id = std::string(std::string_view(users[removed]->id));
      users[removed]->id = Forced(14, "renamed");
      REQUIRE(index.Insert(users[removed].get()));
      CHECK(index.Find(Forced(14, "renamed")) == users[removed].get());
      CHECK(index.Find(old_id) == nullptr);
    }
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
  for (const auto& user : users) REQUIRE(index.Find(user->id) == user.get());
  for (uint32_t i = 100; i < 10'000; ++i) {
    users.push_back(MakeUser("r" + std::to_string(i), i));
    REQUIRE(index.Insert(users.back().get()));
  }
  CHECK(index.bytes() == reserved);
  for (const auto& user : users) REQUIRE(index.Find(user->id) == user.get());
}

// Inserts (of new and present ids), removals, renames and lookups, against a std::unordered_map.
void RandomOps(UserIndex::HashFunction hash, uint32_t seed) {
  UserIndex index(hash);
  std::unordered_map<std::string, User*> expected;
  std::vector<std::unique_ptr<User>> users;  // alive to the end: the index does not own them
  std::mt19937 rng(seed);
  const auto pick = [&](uint32_t n) {
    return std::uniform_int_distribution<uint32_t>(0, n - 1)(rng);
  };
  const auto some_id = [&] {
    return (pick(4) == 0 ? "long-user-id-0000-" : "id") + std::to_string(pick(40'000));
  };
  const auto present_id = [&]() -> std::string {
    // A bucket's first element: not uniform, which does not matter here.
    for (;;) {
      const size_t bucket = pick(static_cast<uint32_t>(expected.bucket_count()));
      if (expected.bucket_size(bucket) > 0) return expected.begin(bucket)->first;
    }
  };
  size_t inserted = 0, removed = 0, renamed = 0, found = 0;
  for (int op = 0; op < 100'000; ++op) {
    const uint32_t kind = pick(100);
    if (kind < 45 || expected.empty()) {
      std::string id = some_id();
      const bool present = expected.count(id) > 0;
      users.push_back(MakeUser(id, static_cast<uint32_t>(users.size())));
      REQUIRE(index.Insert(users.back().get()) == !present);
      if (!present) {
        expected[id] = users.back().get();
        ++inserted;
      }
    } else if (kind < 60) {
      const std::string id = pick(4) == 0 ? some_id() : present_id();
      const bool present = expected.count(id) > 0;
      REQUIRE(index.Remove(id) == present);
      if (present) {
        expected.erase(id);
        ++removed;
      }
    } else if (kind < 65) {
      // Erasure's rename: Remove, change the id, Insert.
      const std::string id = present_id();
      const std::string to = "renamed-" + std::to_string(op);
      User* user = expected[id];
      REQUIRE(index.Remove(id));
      user->id = to;
      REQUIRE(index.Insert(user));
      expected.erase(id);
      expected[to] = user;
      ++renamed;
    } else {
      const std::string id = kind < 85 ? present_id() : some_id();
      const auto it = expected.find(id);
      User* want = it == expected.end() ? nullptr : it->second;
      REQUIRE(index.Find(id) == want);
      User* by_hash = index.FindByHash(hash(id));
      if (want != nullptr) {
        REQUIRE(by_hash != nullptr);
        found += by_hash == want;
      }
      if (by_hash != nullptr) REQUIRE((hash(by_hash->id) & kTagMask) == (hash(id) & kTagMask));
    }
    REQUIRE(index.size() == expected.size());
  }
  INFO("inserted " << inserted << ", removed " << removed << ", renamed " << renamed);
  CHECK(removed > 5'000);
  CHECK(renamed > 2'000);
  CHECK(found > 10'000);
  for (const auto& [id, user] : expected) REQUIRE(index.Find(id) == user);
  for (const auto& user : users) {
    const auto it = expected.find(std::string(std::string_view(user->id)));
    if (it == expected.end() || it->second != user.get()) {
      REQUIRE(index.Find(user->id) != user.get());
    }
  }
}

TEST_CASE("random inserts, removals, renames and lookups agree with std::unordered_map") {
  SECTION("production hash") { RandomOps(&UserIndex::Hash, 20); }
  SECTION("four tags: most probes compare ids") { RandomOps(&CrowdedHash, 21); }
}

}  // namespace
}  // namespace bucketd
