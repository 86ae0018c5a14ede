#pragma once
// The map from user id to User, the first lookup of every event.
//
// Why not absl::flat_hash_map<std::string, User*>: its 40-byte slots (a copy of the id and
// a pointer) sit 16 to a group, so the slot a lookup compares is one of ten cache lines
// past the group's control bytes, and a prefetch cannot tell which. Replay lookups were
// ~10% of a 200K-user replay when measured, most of it that miss. Here an entry is the
// id's 64-bit hash and the user (16 bytes, four to a line) in an open-addressed table
// with linear probing at most 5/8 full, so the entries a lookup reads are on the line a
// prefetch of its home fetched, or the next one.
//
// A lookup by hash alone (FindByHash) reads only the table: the replay's lookahead uses it
// to find a user many records early without waiting on the user's own memory, and checks
// the id once that memory has arrived (see Fold::Lookahead). Find compares the id too.
//
// Users are never removed (a deleted contact keeps its User), so there is no erase.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/state/user.h"

namespace bucketd {

class UserIndex {
 public:
  static uint64_t Hash(std::string_view id);

  // The user with this id (`hash` = Hash(id)), or nullptr.
  User* Find(std::string_view id) const { return Find(id, Hash(id)); }
  User* Find(std::string_view id, uint64_t hash) const;
  // A user whose id has this hash, found without comparing ids: usually the one with the
  // id hashed, but different ids may collide. nullptr means no id has it.
  User* FindByHash(uint64_t hash) const;
  // Fetches into the cache what looking `hash` up will read.
  void Prefetch(uint64_t hash) const;

  // Files `user` under user->id. False (and nothing changes) if that id is present.
  bool Insert(User* user);
  // The same with the hash given; tests pass another than Hash(user->id) to make ids
  // collide, which Find(id, hash) must then tell apart.
  bool Insert(User* user, uint64_t hash);
  void Reserve(size_t users);
  // Unfiles the user with this id (erasure renames a user: Remove, change the id, Insert).
  // False if no user has it.
  bool Remove(std::string_view id) { return Remove(id, Hash(id)); }
  bool Remove(std::string_view id, uint64_t hash);

  size_t size() const { return size_; }
  size_t bytes() const { return entries_.capacity() * sizeof(Entry); }

 private:
  struct Entry {
    uint64_t hash = 0;
    User* user = nullptr;  // null: empty
  };

  size_t Home(uint64_t hash) const { return hash & mask_; }
  void Grow(size_t capacity);

  std::vector<Entry> entries_;  // empty, or a power of two entries
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace bucketd
