#pragma once
// A bucket's time index: the slots whose state the clock alone can change, popped in
// (due instant, user index) order so that a sweep is deterministic.
//
// A calendar of pages, not one ordered tree. Filing is on the ingest path and mostly lands
// far ahead of the clock (now + a window, a dwell, a maxDwell), where order does not matter
// yet. So a page holds the entries of one span of time (kPageMs) unsorted, and filing is an
// append; a page is sorted once, when it becomes the front (the earliest page). Before
// this, every filing was a descent through an absl B-tree of all the bucket's entries, a
// cache miss or three per level and the largest single cost of replay when measured.
//
// Erasing marks the entry (its slot becomes null) instead of moving anything; marked
// entries are dropped when their page comes to the front, or all at once when they
// outnumber the live ones. Erasing finds the entry by a scan of a small page, or by binary
// search in a big one (sorting it first, once). Entries filed into a page after it was
// sorted wait in a small heap beside it (`late`), merged into the page when it grows, so
// a sort is never repeated and no search scans more than a few thousand entries.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

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
  struct Entry {
    DueKey key;
    Slot* slot = nullptr;  // null: erased
  };

  // Files `slot` under `key`; the key must not be filed already (one slot per user and
  // bucket, and a slot is filed once).
  void Insert(DueKey key, Slot* slot);
  // Removes the entry under `key`, which must be there.
  void Erase(DueKey key);
  // Removes the earliest entry, which must be filed under `key` (the popped slot's).
  // REQUIRES: !empty().
  void EraseFront(DueKey key);

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // The earliest entry. REQUIRES: !empty(). Logically const: it may sort the front page and
  // drop erased entries, which changes no answer.
  const DueKey& front_key() const { return Front().key; }
  Slot* front() const { return Front().slot; }
  void clear();

  // Calls visit(position, slot) for the entries after the front, in pop order, while
  // position < count (position 1 is the next pop): a sweep warms them ahead. Entries filed
  // into the front page after it was sorted are skipped. REQUIRES: !empty().
  template <typename Visit>
  void VisitUpcoming(size_t count, const Visit& visit) const;

  // Every entry, in pop order (tests and checks; sorts a copy).
  std::vector<Entry> Sorted() const;

  // A page spans 2^20 ms (~17.5 minutes): ingest files a few pages ahead at most, and a
  // sweep sorts a page only when the clock reaches it.
  static constexpr int kPageShift = 20;

 private:
  struct Page {
    // Unsorted until the page is the front; then sorted descending, so a pop is a
    // pop_back and nothing moves.
    std::vector<Entry> entries;
    bool sorted = false;
    std::vector<Entry> late;  // a min-heap: filed after `entries` was sorted
  };
  using Pages = absl::btree_map<int64_t, Page>;

  static int64_t PageOf(TimeMs due_at) { return due_at >> kPageShift; }  // floor
  // The front page, sorted, with no erased entry at either pop position. REQUIRES: !empty().
  Page& FrontPage() const;
  void Sort(Page* page) const;
  static void MergeLate(Page* page);
  const Entry& Front() const;
  // Drops every erased entry (when they outnumber the live ones, so memory stays bounded).
  void Compact();
  [[noreturn]] static void Broken(const char* what);

  mutable Pages pages_;
  size_t size_ = 0;            // live entries
  mutable size_t erased_ = 0;  // erased entries still stored
};

template <typename Visit>
void DueIndex::VisitUpcoming(size_t count, const Visit& visit) const {
  const Page& page = FrontPage();
  size_t position = 0;
  for (auto it = page.entries.rbegin(); it != page.entries.rend() && position < count; ++it) {
    if (it->slot == nullptr) continue;
    if (position != 0) visit(position, it->slot);
    ++position;
  }
}

}  // namespace bucketd
