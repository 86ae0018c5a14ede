#pragma once
// A bucket's active members, and its past members (slots that held a membership and hold
// none now), each ordered by userId for keyset paging.
//
// Why lazy: keeping a B-tree ordered by userId costs a string compare (and a cache miss
// through the slot to its user) per level on every join and leave, the single largest
// cost of ingest when measured. Member pages are read far less often than memberships
// change, so joins and leaves only mark the slot (O(1)); the first read after changes
// sorts the marked slots and merges them into the B-tree in one pass. Past members ride on the
// same marks (every join and leave marks its slot): settling files a slot in whichever set its
// state says, so they cost ingest nothing more; the second B-tree costs ~1.2 pointers per past
// member, and only once a page has been read.
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
  // A slot that held a membership and holds none now (a state being rebuilt).
  void AddPast(Slot* slot) { Touch(slot); }
  // Drops every reference the index holds to `slot`, which is about to be freed.
  // REQUIRES: the slot is not a member (Removed, or never Added).
  void Forget(Slot* slot);
  size_t size() const { return count_; }
  // Bytes held for the changes not yet settled (memory accounting and tests).
  size_t pending_bytes() const { return touched_.capacity() * sizeof(Slot*); }
  // Forgets every slot, active or past (bookkeeping flags reset).
  void clear();
  // The bucket is deleted: every active member becomes a past one, silently.
  void EndAll();

  // The members in userId order, brought up to date first.
  const Sorted& sorted() const;
  // The past members in userId order, brought up to date first.
  const Sorted& past_sorted() const;

 private:
  void Touch(Slot* slot);
  void Settle() const;
  // Empties `touched_`, releasing its buffer past kTouchedKeptMax: the marks are transient,
  // and a burst of changes (a backfill, a replay, a load) must not hold its buffer for good
  // once settled (8 bytes a change: 8.4 B per membership in sweep_bench, more than the
  // B-tree's own 9.3).
  void ClearTouched() const;
  static constexpr size_t kTouchedKeptMax = 4096;

  size_t count_ = 0;
  mutable Sorted sorted_;
  mutable Sorted past_;
  mutable std::vector<Slot*> touched_;
};

}  // namespace bucketd
