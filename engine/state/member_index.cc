#include "engine/state/member_index.h"

#include "engine/state/user.h"

namespace bucketd {

bool MemberOrder::operator()(const Slot* a, const Slot* b) const {
  return a->user->id < b->user->id;
}
bool MemberOrder::operator()(const Slot* a, std::string_view b) const { return a->user->id < b; }
bool MemberOrder::operator()(std::string_view a, const Slot* b) const { return a < b->user->id; }

void MemberIndex::Touch(Slot* slot) {
  if (slot->member_touched) return;
  slot->member_touched = true;
  touched_.push_back(slot);
}

void MemberIndex::Add(Slot* slot) {
  ++count_;
  Touch(slot);
}

void MemberIndex::Remove(Slot* slot) {
  --count_;
  Touch(slot);
}

void MemberIndex::Forget(Slot* slot) {
  // Settling sorts every pending change; finding this one among a few is cheaper, and a
  // contact delete comes between a handful of joins and leaves. Among many, settle.
  constexpr size_t kScanMax = 4096;
  if (slot->member_touched && touched_.size() > kScanMax) sorted();
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
  for (Slot* slot : touched_) slot->member_touched = false;
  for (Slot* slot : sorted_) slot->member_listed = false;
  for (Slot* slot : past_) slot->past_listed = false;
  ClearTouched();
  sorted_.clear();
  past_.clear();
  count_ = 0;
}

void MemberIndex::EndAll() {
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
  count_ = 0;
}

const MemberIndex::Sorted& MemberIndex::sorted() const {
  Settle();
  return sorted_;
}

const MemberIndex::Sorted& MemberIndex::past_sorted() const {
  Settle();
  return past_;
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
    // A past member held a membership (entryCount > 0) and holds none now.
    const bool past = !slot->active && slot->entry_count > 0;
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
