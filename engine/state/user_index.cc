#include "engine/state/user_index.h"

#include <algorithm>

#include <absl/hash/hash.h>

#include "engine/base/check.h"
#include "engine/state/user.h"

namespace bucketd {
namespace {

// Grown before it is more than 5/8 full: linear probing's expected probe lengths stay
// under ~2 entries for a hit and ~4 for a miss.
constexpr size_t kLoadNumerator = 5;
constexpr size_t kLoadDenominator = 8;
constexpr size_t kMinCapacity = 16;

}  // namespace

uint64_t UserIndex::Hash(std::string_view id) { return absl::Hash<std::string_view>{}(id); }

User* UserIndex::Find(std::string_view id, uint64_t hash) const {
  if (entries_.empty()) return nullptr;
  const Entry tag = Tag(hash);
  for (size_t i = Home(hash);; i = (i + 1) & mask_) {
    const Entry e = entries_[i];
    if (e == 0) return nullptr;
    if ((e & kTagMask) == tag && UserOf(e)->id == id) return UserOf(e);
  }
}

User* UserIndex::FindByHash(uint64_t hash) const {
  if (entries_.empty()) return nullptr;
  const Entry tag = Tag(hash);
  for (size_t i = Home(hash);; i = (i + 1) & mask_) {
    const Entry e = entries_[i];
    if (e == 0) return nullptr;
    if ((e & kTagMask) == tag) return UserOf(e);
  }
}

void UserIndex::Prefetch(uint64_t hash) const {
  if (entries_.empty()) return;
  const Entry* home = &entries_[Home(hash)];
  __builtin_prefetch(home);
  // A probe runs on into the next line when its home is near the end of one.
  __builtin_prefetch(reinterpret_cast<const char*>(home) + 64);
}

bool UserIndex::Insert(User* user) {
  const uint64_t hash = hash_(user->id);
  if (Find(user->id, hash) != nullptr) return false;
  const auto address = reinterpret_cast<uintptr_t>(user);
  BUCKETD_CHECK(address != 0 && address <= kAddressMask);
  if ((size_ + 1) * kLoadDenominator > entries_.size() * kLoadNumerator) {
    Grow(std::max(kMinCapacity, entries_.size() * 2));
  }
  Place(Tag(hash) | address, hash);
  ++size_;
  return true;
}

bool UserIndex::Remove(std::string_view id, uint64_t hash) {
  if (entries_.empty()) return false;
  const Entry tag = Tag(hash);
  size_t hole = Home(hash);
  for (;; hole = (hole + 1) & mask_) {
    const Entry e = entries_[hole];
    if (e == 0) return false;
    if ((e & kTagMask) == tag && UserOf(e)->id == id) break;
  }
  // Backward-shift deletion (no tombstones, so probes stay as short as before): each later
  // entry of the run moves up into the hole unless its home lies cyclically in (hole, j],
  // where moving it would put it before its home and out of its probe's reach. The entry
  // keeps only a tag, so its home comes from hashing its user's id again.
  for (size_t j = (hole + 1) & mask_; entries_[j] != 0; j = (j + 1) & mask_) {
    const size_t home = Home(hash_(UserOf(entries_[j])->id));
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      entries_[hole] = entries_[j];
      hole = j;
    }
  }
  entries_[hole] = 0;
  --size_;
  return true;
}

void UserIndex::Reserve(size_t users) {
  size_t capacity = kMinCapacity;
  while (users * kLoadDenominator > capacity * kLoadNumerator) capacity *= 2;
  if (capacity > entries_.size()) Grow(capacity);
}

// Re-files every entry by its user's id, hashed again (the entry keeps only the tag). The
// users are read in the old table's order, which is random in memory, so a few entries
// ahead each user's id is fetched, then (once it has arrived) a long id's own block. The
// writes need no help: a doubling files the entries of old home h at h or h + the old
// capacity, two streams in order.
void UserIndex::Grow(size_t capacity) {
  std::vector<Entry> old = std::move(entries_);
  entries_.assign(capacity, 0);
  mask_ = capacity - 1;
  constexpr size_t kAhead = 8;
  const size_t n = old.size();
  for (size_t k = 0; k < n; ++k) {
    if (k + 2 * kAhead < n && old[k + 2 * kAhead] != 0) {
      const char* id = reinterpret_cast<const char*>(&UserOf(old[k + 2 * kAhead])->id);
      __builtin_prefetch(id);
      __builtin_prefetch(id + sizeof(InlineString) - 1);  // it may end on the next line
    }
    if (k + kAhead < n && old[k + kAhead] != 0) {
      __builtin_prefetch(std::string_view(UserOf(old[k + kAhead])->id).data());
    }
    const Entry e = old[k];
    if (e != 0) Place(e, hash_(UserOf(e)->id));
  }
}

}  // namespace bucketd
