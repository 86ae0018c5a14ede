#include "engine/state/member_index.h"

#include "engine/base/check.h"
#include "engine/state/id_prefix.h"
#include "engine/state/user.h"

namespace bucketd {
namespace {

// A past member held a membership (entryCount > 0) and holds none now.
bool IsPastMember(const Slot& slot) { return !slot.active && slot.entry_count > 0; }

}  // namespace

bool MemberOrder::operator()(const Slot* a, const Slot* b) const {
  return a->user->id < b->user->id;
}
bool MemberOrder::operator()(const Slot* a, std::string_view b) const { return a->user->id < b; }
bool MemberOrder::operator()(std::string_view a, const Slot* b) const { return a < b->user->id; }

void MemberIndex::Touch(Slot* slot) {
  if (slot->member_touched) return;
  slot->member_touched = true;
  touched_.push_back(slot);
  // Marks past what the sets hold cost more than building the sets again at the next
  // read (a scan and a sort, which settling that many marks costs anyway).
  if (touched_.size() > std::max(kTouchedKeptMax, sorted_.size() + past_.size())) Unbuild();
}

void MemberIndex::Add(Slot* slot) {
  ++count_;
  if (built_) Touch(slot);
}

void MemberIndex::Remove(Slot* slot) {
  BUCKETD_CHECK(count_ > 0);
  --count_;
  if (built_) Touch(slot);
}

void MemberIndex::Forget(Slot* slot) {
  if (!built_) return;  // nothing refers to any slot
  // Settling sorts every pending change; finding this one among a few is cheaper, and a
  // contact delete comes between a handful of joins and leaves. Among many, settle.
  constexpr size_t kScanMax = 4096;
  if (slot->member_touched && touched_.size() > kScanMax) Settle();
  if (slot->member_touched) {
    auto it = std::find(touched_.begin(), touched_.end(), slot);
    *it = touched_.back();  // order does not matter: settling sorts them
    touched_.pop_back();
    slot->member_touched = false;
  }
  if (slot->member_listed) {
    sorted_.erase(sorted_.find(slot));
    slot->member_listed = false;
  }
  if (slot->past_listed) {
    past_.erase(past_.find(slot));
    slot->past_listed = false;
  }
}

void MemberIndex::clear() {
  Unbuild();
  count_ = 0;
}

void MemberIndex::Unbuild() const {
  for (Slot* slot : touched_) slot->member_touched = false;
  for (Slot* slot : sorted_) slot->member_listed = false;
  for (Slot* slot : past_) slot->past_listed = false;
  std::vector<Slot*>().swap(touched_);
  sorted_.clear();
  past_.clear();
  built_ = false;
}

void MemberIndex::EndAll() {
  count_ = 0;
  if (!built_) return;  // the next read finds every slot inactive: a past member
  Settle();
  // Both sets are in userId order, so each insert lands at the end hint's neighbourhood.
  for (Slot* slot : sorted_) {
    slot->member_listed = false;
    if (!slot->past_listed) {
      past_.insert(slot);
      slot->past_listed = true;
    }
  }
  sorted_.clear();
}

const MemberIndex::Sorted& MemberIndex::sorted(std::span<User* const> users,
                                               uint32_t bucket) const {
  if (built_) {
    Settle();
  } else {
    Build(users, bucket);
  }
  return sorted_;
}

const MemberIndex::Sorted& MemberIndex::past_sorted(std::span<User* const> users,
                                                    uint32_t bucket) const {
  sorted(users, bucket);
  return past_;
}

void MemberIndex::Build(std::span<User* const> users, uint32_t bucket) const {
  // Each slot with its id's first bytes beside it (id_prefix.h).
  struct Keyed {
    IdPrefix prefix;
    Slot* slot;
  };
  std::vector<Keyed> active;
  std::vector<Keyed> past;
  active.reserve(count_);
  for (User* user : users) {
    for (Slot* slot : user->slots) {
      if (slot->bucket != bucket) continue;
      if (slot->active) {
        active.push_back({IdPrefixOf(user->id), slot});
      } else if (IsPastMember(*slot)) {
        past.push_back({IdPrefixOf(user->id), slot});
      }
    }
  }
  // Every Add and Remove was counted; the slots must say the same.
  BUCKETD_CHECK(active.size() == count_);
  const auto by_id = [](const Keyed& a, const Keyed& b) {
    if (a.prefix != b.prefix) return a.prefix < b.prefix;
    return MemberOrder()(a.slot, b.slot);
  };
  std::sort(active.begin(), active.end(), by_id);
  std::sort(past.begin(), past.end(), by_id);
  // In order, each insert goes at the end: a B-tree built left to right.
  for (const Keyed& k : active) {
    sorted_.insert(sorted_.end(), k.slot);
    k.slot->member_listed = true;
  }
  for (const Keyed& k : past) {
    past_.insert(past_.end(), k.slot);
    k.slot->past_listed = true;
  }
  built_ = true;
}

void MemberIndex::Settle() const {
  if (touched_.empty()) return;
  // Sorted inserts walk the trees left to right, so each one starts near the last.
  std::sort(touched_.begin(), touched_.end(), MemberOrder());
  auto hint = sorted_.begin();
  auto past_hint = past_.begin();
  for (Slot* slot : touched_) {
    slot->member_touched = false;
    if (slot->active && !slot->member_listed) {
      hint = std::next(sorted_.insert(hint, slot));
      slot->member_listed = true;
    } else if (!slot->active && slot->member_listed) {
      hint = sorted_.erase(sorted_.find(slot));
      slot->member_listed = false;
    } else {
      hint = sorted_.lower_bound(slot);
    }
    const bool past = IsPastMember(*slot);
    if (past && !slot->past_listed) {
      past_hint = std::next(past_.insert(past_hint, slot));
      slot->past_listed = true;
    } else if (!past && slot->past_listed) {
      past_hint = past_.erase(past_.find(slot));
      slot->past_listed = false;
    } else {
      past_hint = past_.lower_bound(slot);
    }
  }
  ClearTouched();
}

void MemberIndex::ClearTouched() const {
  if (touched_.capacity() > kTouchedKeptMax) {
    std::vector<Slot*>().swap(touched_);  // (`= {}` assigns an empty list, keeping the buffer)
  } else {
    touched_.clear();
  }
}

}  // namespace bucketd
