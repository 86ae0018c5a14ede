#pragma once
// A bucket's active members, ordered by userId for keyset paging.
//
// Why lazy: keeping a B-tree ordered by userId costs a string compare (and a cache miss
// through the slot to its user) per level on every join and leave, the single largest
// cost of ingest when measured. Member pages are read far less often than memberships
// change, so joins and leaves only mark the slot (O(1)); the first read after changes
// sorts the marked slots and merges them into the B-tree in one pass.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <absl/container/btree_set.h>

#include "engine/state/user.h"

namespace bucketd {

struct MemberOrder {
  using is_transparent = void;  // lets pages seek by a userId cursor
  bool operator()(const Slot* a, const Slot* b) const;
  bool operator()(const Slot* a, std::string_view b) const;
  bool operator()(std::string_view a, const Slot* b) const;
};

class MemberIndex {
 public:
  using Sorted = absl::btree_set<Slot*, MemberOrder>;

  void Add(Slot* slot);
  void Remove(Slot* slot);
  // Drops every reference the index holds to `slot`, which is about to be freed.
  // REQUIRES: the slot is not a member (Removed, or never Added).
  void Forget(Slot* slot);
  size_t size() const { return count_; }
  void clear();

  // The members in userId order, brought up to date first.
  const Sorted& sorted() const;

 private:
  void Touch(Slot* slot);

  size_t count_ = 0;
  mutable Sorted sorted_;
  mutable std::vector<Slot*> touched_;
};

}  // namespace bucketd
