#include "engine/state/user_index.h"

#include <algorithm>

#include <absl/hash/hash.h>

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
  for (size_t i = Home(hash);; i = (i + 1) & mask_) {
    const Entry& e = entries_[i];
    if (e.user == nullptr) return nullptr;
    if (e.hash == hash && e.user->id == id) return e.user;
  }
}

User* UserIndex::FindByHash(uint64_t hash) const {
  if (entries_.empty()) return nullptr;
  for (size_t i = Home(hash);; i = (i + 1) & mask_) {
    const Entry& e = entries_[i];
    if (e.user == nullptr || e.hash == hash) return e.user;
  }
}

void UserIndex::Prefetch(uint64_t hash) const {
  if (entries_.empty()) return;
  const Entry* home = &entries_[Home(hash)];
  __builtin_prefetch(home);
  // A probe runs on into the next line when its home is near the end of one.
  __builtin_prefetch(reinterpret_cast<const char*>(home) + 64);
}

bool UserIndex::Insert(User* user) { return Insert(user, Hash(user->id)); }

bool UserIndex::Insert(User* user, uint64_t hash) {
  if (Find(user->id, hash) != nullptr) return false;
  if ((size_ + 1) * kLoadDenominator > entries_.size() * kLoadNumerator) {
    Grow(std::max(kMinCapacity, entries_.size() * 2));
  }
  size_t i = Home(hash);
  while (entries_[i].user != nullptr) i = (i + 1) & mask_;
  entries_[i] = Entry{hash, user};
  ++size_;
  return true;
}

bool UserIndex::Remove(std::string_view id, uint64_t hash) {
  if (entries_.empty()) return false;
  size_t hole = Home(hash);
  for (;; hole = (hole + 1) & mask_) {
    const Entry& e = entries_[hole];
    if (e.user == nullptr) return false;
    if (e.hash == hash && e.user->id == id) break;
  }
  // Backward-shift deletion (no tombstones, so probes stay as short as before): each later
  // entry of the run moves up into the hole unless its home lies cyclically in (hole, j],
  // where moving it would put it before its home and out of its probe's reach.
  for (size_t j = (hole + 1) & mask_; entries_[j].user != nullptr; j = (j + 1) & mask_) {
    const size_t home = Home(entries_[j].hash);
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      entries_[hole] = entries_[j];
      hole = j;
    }
  }
  entries_[hole] = Entry{};
  --size_;
  return true;
}

void UserIndex::Reserve(size_t users) {
  size_t capacity = kMinCapacity;
  while (users * kLoadDenominator > capacity * kLoadNumerator) capacity *= 2;
  if (capacity > entries_.size()) Grow(capacity);
}

// Re-files every entry by its stored hash: no user is read.
void UserIndex::Grow(size_t capacity) {
  std::vector<Entry> old = std::move(entries_);
  entries_.assign(capacity, Entry{});
  mask_ = capacity - 1;
  for (const Entry& e : old) {
    if (e.user == nullptr) continue;
    size_t i = Home(e.hash);
    while (entries_[i].user != nullptr) i = (i + 1) & mask_;
    entries_[i] = e;
  }
}

}  // namespace bucketd
