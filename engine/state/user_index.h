#pragma once
// The map from user id to User, the first lookup of every event.
//
// Why not absl::flat_hash_map<std::string, User*>: its 40-byte slots (a copy of the id and
// a pointer) sit 16 to a group, so the slot a lookup compares is one of ten cache lines
// past the group's control bytes, and a prefetch cannot tell which. Replay lookups were
// ~10% of a 200K-user replay when measured, most of it that miss. Here an entry is one
// 64-bit word (8 bytes, eight to a line) in an open-addressed table with linear probing at
// most 5/8 full, so the entries a lookup reads are on the line a prefetch of its home
// fetched, or the next one. At 1M users the table has 2^21 entries: 16.8 bytes per user
// (33.6 when an entry was the id's whole hash and the user, 16 bytes).
//
// A word is the user's address in its low 48 bits (user-space addresses fit, as for
// Pointer48 in user.h; Insert checks it in every build) and a tag in its top 16: the top
// 16 bits of the id's hash. 0 is empty (no user is at address 0). The home slot comes from
// the hash's low bits, and the tag from bits the home does not fix: entries of one probe
// run have the same or nearby homes, so bits that chose the home would mostly be equal
// among them, where these differ but once in 65536. A lookup reads a user, a cache miss,
// to compare ids only where the tag matches. Why a tag: without one, every entry probed
// would cost that read. Why 16 bits: they are what the address leaves in one word (a wider
// tag means a wider entry, the cost this layout removes), and they are enough: a miss at
// 5/8 full probes ~4 entries, so at most about one lookup in 16K reads another id's user.
// That is all a tag collision costs Find and Remove, one wasted read: they compare ids.
//
// The word does not keep the rest of the hash, so an entry's home is known only by hashing
// its user's id again. Grow re-files every user that way: it reads each User (prefetched a
// few entries ahead), where it read only the table before. That is n reads per doubling,
// O(1) amortized per insert, paid only as the count of users crosses a power of two; a
// snapshot load or a shard merge reserves first and grows nothing. Measured on a 2-core
// VM (users in the arena's huge pages): one Grow from 2^23 to 2^24 entries, at 5.2M
// users, takes 0.9-1.4 s, about what it took reading only the table, whose 16-byte
// entries had twice the pages to fault in; either way a pause of the fold at the insert
// that crosses the size. Remove's backward shift re-hashes the ids of the entries in the
// run it walks (a couple of users).
//
// A lookup by hash alone (FindByHash) reads only the table: the replay's lookahead uses it
// to find a user many records early without waiting on the user's own memory, and checks
// the id once that memory has arrived (see Fold::Lookahead). It compares tags only, so the
// user it returns may have another id (before, only on a 64-bit collision): once in 65536
// entries probed. The lookahead then hands out no user for that input (Lookahead::user
// compares ids), and the apply looks the id up with Find: slower for that input, never
// wrong. It never misses a present id: that id's entry is in the run, with its tag.
//
// Users are removed only to be filed again under another id (erasure renames a deleted
// contact), which is rare: deletion shifts the run back, with no tombstones.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/state/user.h"

namespace bucketd {

class UserIndex {
 public:
  // How ids are hashed: Hash, unless an index is built with another function.
  using HashFunction = uint64_t (*)(std::string_view id);
  static uint64_t Hash(std::string_view id);

  UserIndex() = default;
  // For tests: an index that hashes ids with `hash`, to make chosen ids collide. Every
  // lookup, insert and re-filing by this index then uses it (Fold::Lookahead does not: it
  // calls Hash, and its users are checked by id anyway).
  explicit UserIndex(HashFunction hash) : hash_(hash) {}

  // The user with this id (`hash` = this index's hash of id), or nullptr.
  User* Find(std::string_view id) const { return Find(id, hash_(id)); }
  User* Find(std::string_view id, uint64_t hash) const;
  // The first user in `hash`'s probe run whose id's hash has the same top 16 bits (the tag),
  // found without comparing ids or reading any user: usually the one with the id hashed,
  // but another id 1 time in 65536 per entry probed. nullptr means no id has that hash.
  User* FindByHash(uint64_t hash) const;
  // Fetches into the cache what looking `hash` up will read.
  void Prefetch(uint64_t hash) const;

  // Files `user` under user->id. False (and nothing changes) if that id is present. There
  // is no Insert with a hash given: the index keeps only 16 bits of it and re-hashes the id
  // when it grows, so a hash other than the id's would be lost then (tests that need ids to
  // collide build the index with their own HashFunction).
  bool Insert(User* user);
  void Reserve(size_t users);
  // Unfiles the user with this id (erasure renames a user: Remove, change the id, Insert).
  // False if no user has it.
  bool Remove(std::string_view id) { return Remove(id, hash_(id)); }
  bool Remove(std::string_view id, uint64_t hash);

  size_t size() const { return size_; }
  size_t bytes() const { return entries_.capacity() * sizeof(Entry); }

 private:
  // The user's address in the low 48 bits, the tag in the top 16; 0: empty.
  using Entry = uint64_t;
  static constexpr unsigned kAddressBits = 48;
  static constexpr Entry kAddressMask = (Entry{1} << kAddressBits) - 1;
  static constexpr Entry kTagMask = ~kAddressMask;

  static Entry Tag(uint64_t hash) { return hash & kTagMask; }
  static User* UserOf(Entry e) { return reinterpret_cast<User*>(e & kAddressMask); }
  // The low bits: never the tag's, as a table has fewer than 2^48 entries.
  size_t Home(uint64_t hash) const { return hash & mask_; }
  // Files a non-empty entry whose id hashes to `hash`, in a table with room.
  void Place(Entry e, uint64_t hash) {
    size_t i = Home(hash);
    while (entries_[i] != 0) i = (i + 1) & mask_;
    entries_[i] = e;
  }
  void Grow(size_t capacity);

  std::vector<Entry> entries_;  // empty, or a power of two entries
  size_t mask_ = 0;
  size_t size_ = 0;
  HashFunction hash_ = &Hash;
};

}  // namespace bucketd
