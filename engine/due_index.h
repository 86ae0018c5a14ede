#pragma once
// A bucket's time index: the slots whose state the clock alone can change, ordered by
// (due instant, user index) so that a sweep pops them in a deterministic order.
//
// Why a B-tree and not an intrusive red-black tree through the slots: re-filing is on the
// ingest path, and a descent through slots scattered over gigabytes costs a cache miss
// per level (~17 levels for 100K entries, the largest single cost of replay when
// measured). The B-tree keeps the keys packed ~10 per node, so the upper levels stay in
// cache and a descent misses two or three times; slots also lose their 24-byte hook.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>

#include <absl/container/btree_map.h>

#include "bucketd/types.h"
#include "engine/state_fwd.h"

namespace bucketd {

struct DueKey {
  TimeMs due_at = 0;
  uint32_t user_index = 0;
  friend auto operator<=>(const DueKey&, const DueKey&) = default;
};

class DueIndex {
 public:
  using Entries = absl::btree_map<DueKey, Slot*>;

  // Files `slot` under `key`; the key must not be present (one slot per user and bucket).
  void Insert(DueKey key, Slot* slot) {
    // New instants are usually the latest in their bucket (now + a window): appending
    // with the end as hint skips the descent.
    if (entries_.empty() || std::prev(entries_.end())->first < key) {
      entries_.emplace_hint(entries_.end(), key, slot);
    } else if (!entries_.emplace(key, slot).second) {
      Broken("a slot filed twice");
    }
  }
  // Removes the entry under `key`, which must be there (a slot's key is its due_at).
  void Erase(DueKey key) {
    if (entries_.erase(key) != 1) Broken("a filed slot missing from its time index");
  }

  // Removes the earliest entry (a sweep's pop: no descent), which must be filed under
  // `key` (the popped slot's). REQUIRES: !empty().
  void EraseFront(DueKey key) {
    if (entries_.begin()->first != key) Broken("a slot filed under another instant");
    entries_.erase(entries_.begin());
  }

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  // The earliest entry. REQUIRES: !empty().
  const DueKey& front_key() const { return entries_.begin()->first; }
  Slot* front() const { return entries_.begin()->second; }
  void clear() { entries_.clear(); }

  Entries::const_iterator begin() const { return entries_.begin(); }
  Entries::const_iterator end() const { return entries_.end(); }

 private:
  // The index and the slots' due instants disagree: the state is no longer a fold of the
  // log, and going on could loop or diverge. Stop loudly.
  [[noreturn]] static void Broken(const char* what) {
    std::fprintf(stderr, "bucketd: time index invariant violated: %s\n", what);
    std::abort();
  }

  Entries entries_;
};

}  // namespace bucketd
