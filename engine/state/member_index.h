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
//
// Why built on the first read, not before: until a bucket's members are read, the index
// only counts. A marked change costs 8 bytes until a read settles it, and a server whose
// journeys run off the transition stream may never read a member page: it held one mark
// per membership ever changed (20.6 B per user in ingest_bench, issue 20), and so did
// every bucket after a snapshot load or a replay. The first read builds both sets from the
// users' slots instead (a scan of every user, then a sort: what settling that many marks
// cost anyway). Once built, the index marks changes as above; if the marks outgrow the
// sets themselves (a burst, or nothing read for long), it lets go of both and builds
// again at the next read, so marks never hold more than the sets would.
#include <algorithm>
#include <cstdint>
#include <span>
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
  // Whether a read built the sets, which changes since then keep up to date (tests).
  bool built() const { return built_; }
  // Bytes held for the changes not yet settled (memory accounting and tests).
  size_t pending_bytes() const { return touched_.capacity() * sizeof(Slot*); }
  // Forgets every slot, active or past (bookkeeping flags reset).
  void clear();
  // The bucket is deleted: every active member becomes a past one, silently.
  // REQUIRES: every member's slot is no longer active.
  void EndAll();

  // The members in userId order, brought up to date first. `users` are the state's
  // (State::users) and `bucket` this index's bucket: a first read builds the sets from
  // their slots.
  const Sorted& sorted(std::span<User* const> users, uint32_t bucket) const;
  // The past members in userId order, brought up to date first.
  const Sorted& past_sorted(std::span<User* const> users, uint32_t bucket) const;

 private:
  void Touch(Slot* slot);
  void Build(std::span<User* const> users, uint32_t bucket) const;
  void Settle() const;
  // Lets go of both sets and every mark (flags reset); the next read builds them again.
  void Unbuild() const;
  // Empties `touched_`, releasing its buffer past kTouchedKeptMax: the marks are transient,
  // and a burst of changes must not hold its buffer for good once settled (8 bytes a
  // change: 8.4 B per membership in sweep_bench, more than the B-tree's own 9.3).
  void ClearTouched() const;
  static constexpr size_t kTouchedKeptMax = 4096;

  size_t count_ = 0;
  mutable bool built_ = false;
  mutable Sorted sorted_;
  mutable Sorted past_;
  mutable std::vector<Slot*> touched_;
};

}  // namespace bucketd
