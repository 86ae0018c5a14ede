#pragma once
// A bucket's time index: the slots whose state the clock alone can change, popped in
// (due instant, user index) order so that a sweep is deterministic.
//
// A calendar of pages, not one ordered tree. Filing is on the ingest path and mostly lands
// far ahead of the clock (now + a window, a dwell, a maxDwell), where order does not matter
// yet. So a page holds the entries of one span of time (2^kPageShift ms) unsorted, and
// filing is an append; a page is sorted once, when it becomes the front (the earliest
// page). Before this, every filing was a descent through an absl B-tree of all the
// bucket's entries, a cache miss or three per level and the largest single cost of replay
// when measured.
//
// An entry stored in a page is 12 bytes, paid per filed slot: the instant's offset in its
// page (kPageShift bits) and the user index, which together are the key the page sorts
// by, and the slot's index in the state's slot pool (SlotPool::IndexOf; a pointer was 8
// bytes, 16 an entry). The page's number gives the rest of the instant back. So the index
// files and hands out slot indices, which the fold resolves with SlotPool::At; they are
// valid until the pool's next Adopt, so a time index is filled after the pools are merged.
//
// Erasing from a page marks the entry instead of moving anything; marked entries are
// dropped when their page comes to the front, or all at once when they outnumber the live
// ones. In a small unsorted page it finds the entry by a scan and clears its slot; in a
// sorted page by binary search. A big unsorted page is not searched at all: the erased
// (entry, slot) pair is noted beside it (`dropped`) and the entry is dropped when the page
// is sorted. (Sorting a big page for an erase, as this did before, sent every later filing
// into that page to the B-tree below until the clock reached it: a sequence's 15-minute
// deadlines, filed on page views and erased on purchases, paid a B-tree insert each.)
// Entries filed into the front page after it was sorted go to a B-tree beside it (`late`):
// the front page takes filings at the clock (a due instant already past is filed at now);
// it is never sorted or merged again.
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include <absl/container/btree_map.h>
#include <absl/container/flat_hash_map.h>

#include "bucketd/types.h"
#include "engine/state/slot_pool.h"

namespace bucketd {

struct DueKey {
  TimeMs due_at = 0;
  uint32_t user_index = 0;
  friend auto operator<=>(const DueKey&, const DueKey&) = default;
};

class DueIndex {
 public:
  // A slot's index in its pool (SlotPool::IndexOf).
  using SlotIndex = uint32_t;
  static constexpr SlotIndex kErased = SlotPool::kNoIndex;

  struct Entry {
    DueKey key;
    SlotIndex slot = kErased;
  };
  // How a page stores an entry: the offset of due_at in the page and the user index (as
  // one 64-bit key, packed(), they order a page's entries as their keys do), and the slot.
  // Three 32-bit words, not a word and a pointer: 12 bytes per filed slot, not 16.
  struct Stored {
    uint32_t offset = 0;
    uint32_t user_index = 0;
    SlotIndex slot = kErased;
    uint64_t packed() const { return uint64_t{offset} << 32 | user_index; }
  };
  static_assert(sizeof(Stored) == 12 && alignof(Stored) == 4, "an entry per filed slot");

  // How many entries a bulk load (snapshot load) will file into each page, counted as the
  // filings are found so that Reserve can size every page once: growing pages by doubling
  // touched about three times the memory the entries need.
  class PageTally {
   public:
    void Add(TimeMs due_at) {
      const int64_t page = PageOf(due_at);
      if (page != last_page_ || pending_ == 0) {
        Flush();
        last_page_ = page;
      }
      ++pending_;
      ++total_;
    }
    void Merge(PageTally&& other);
    uint64_t total() const { return total_; }

   private:
    friend class DueIndex;
    void Flush();

    absl::flat_hash_map<int64_t, uint64_t> counts_;
    // Filings come in runs of one page: counted here, flushed when the page changes.
    int64_t last_page_ = 0;
    uint64_t pending_ = 0;
    uint64_t total_ = 0;
  };
  // Makes room in each page for the filings `tally` counted.
  void Reserve(PageTally&& tally);

  // Files the slot (its pool index) under `key`. REQUIRES (not checked: it would cost a
  // search per filing): the key is not filed already (one slot per user and bucket, and a
  // slot is filed once); `slot` is not kErased.
  void Insert(DueKey key, SlotIndex slot);
  // Removes the entry under `key`, which must be there, filed with `slot` (a big unsorted
  // page notes the pair and drops it when sorted, checking then that it was there).
  void Erase(DueKey key, SlotIndex slot);
  // Removes the earliest entry, which must be filed under `key` (the popped slot's).
  // REQUIRES: !empty().
  void EraseFront(DueKey key);

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // The earliest entry. REQUIRES: !empty(). Logically const, but not safe to call from two
  // threads at once: it may sort the front page and drop erased entries, which changes no
  // answer. (The fold is single-threaded; nothing else reads a time index.)
  DueKey front_key() const { return Front().key; }
  SlotIndex front() const { return Front().slot; }
  void clear();

  // Calls visit(position, slot index) for the entries after the front, in pop order, while
  // position < count (position 1 is the next pop) and they are in the front page: a sweep
  // warms them ahead. REQUIRES: !empty().
  template <typename Visit>
  void VisitUpcoming(size_t count, const Visit& visit) const;

  // Every entry, in pop order (tests and checks; sorts a copy).
  std::vector<Entry> Sorted() const;
  // Entries stored, erased ones included: memory, and tests of the compaction bound.
  size_t stored() const { return size_ + erased_; }
  // Room for entries across the pages (tests of Reserve's sizing).
  size_t capacity() const;
  // Entries filed beside sorted pages (tests: only the front page takes them).
  size_t late_size() const;

  // A page spans 2^20 ms (~17.5 minutes): ingest files a few pages ahead at most, and a
  // sweep sorts a page only when the clock reaches it.
  static constexpr int kPageShift = 20;
  // A page's room grows by a quarter of its entries, at least this many.
  static constexpr size_t kPageGrowthMin = 8;

 private:
  struct Page {
    int64_t number = 0;  // its key in pages_: due instants from number << kPageShift on
    // Unsorted until the page is the front (or big and erased from); then sorted
    // descending, so a pop is a pop_back and nothing moves.
    std::vector<Stored> entries;
    bool sorted = false;
    // Filed after `entries` was sorted; never marked. Keyed as `entries` are (Stored::packed:
    // the offset in the page and the user index), 16 bytes a value where a DueKey made 24:
    // the front page takes every filing near the clock (in ingest_bench, a day-long window's
    // renewals: ~10 bytes per user in B-tree nodes with DueKey).
    absl::btree_map<uint64_t, SlotIndex> late;
    // Erased from `entries` while unsorted and big: (packed, slot) and how many copies of
    // that pair to drop at the sort (a key erased, filed and erased again has two).
    absl::flat_hash_map<std::pair<uint64_t, SlotIndex>, uint32_t> dropped;
    DueKey KeyOf(const Stored& e) const { return KeyOf(e.packed()); }
    DueKey KeyOf(uint64_t packed) const {
      return DueKey{number << kPageShift | static_cast<TimeMs>(packed >> 32),
                    static_cast<uint32_t>(packed)};
    }
  };
  using Pages = absl::btree_map<int64_t, Page>;

  static int64_t PageOf(TimeMs due_at) { return due_at >> kPageShift; }  // floor
  static Stored Store(DueKey key, SlotIndex slot) {
    constexpr uint64_t kOffsetMask = (uint64_t{1} << kPageShift) - 1;
    return Stored{static_cast<uint32_t>(static_cast<uint64_t>(key.due_at) & kOffsetMask),
                  key.user_index, slot};
  }
  static uint64_t Pack(DueKey key) { return Store(key, kErased).packed(); }
  // The page numbered so, created if absent.
  Page& PageAt(int64_t number) const;
  // The front page, sorted, with no erased entry at the back of `entries`.
  // REQUIRES: !empty().
  Page& FrontPage() const;
  void Sort(Page* page) const;
  // Marks the live entry stored under `packed` in a small unsorted or a sorted page, which
  // must be there.
  static void MarkErased(Page* page, uint64_t packed);
  // Drops the entries `page->dropped` notes, which must all be there. Returns how many.
  static size_t DropNoted(Page* page);
  // Whether the page's next pop is from `late` rather than `entries`. REQUIRES: one holds some.
  static bool LateFirst(const Page& page) {
    return page.entries.empty() ||
           (!page.late.empty() && page.late.begin()->first < page.entries.back().packed());
  }
  Entry Front() const;
  // Drops every erased entry (when they outnumber the live ones, so memory stays bounded).
  void Compact();

  mutable Pages pages_;
  size_t size_ = 0;            // live entries
  mutable size_t erased_ = 0;  // erased entries still stored
};

template <typename Visit>
void DueIndex::VisitUpcoming(size_t count, const Visit& visit) const {
  const Page& page = FrontPage();
  // Merges the sorted entries (from the back) with the late ones (from the front).
  auto sorted = page.entries.rbegin();
  auto late = page.late.begin();
  for (size_t position = 0; position < count;) {
    while (sorted != page.entries.rend() && sorted->slot == kErased) ++sorted;
    const bool sorted_left = sorted != page.entries.rend();
    if (!sorted_left && late == page.late.end()) return;
    SlotIndex slot;
    if (late != page.late.end() && (!sorted_left || late->first < sorted->packed())) {
      slot = (late++)->second;
    } else {
      slot = (sorted++)->slot;
    }
    if (position != 0) visit(position, slot);
    ++position;
  }
}

}  // namespace bucketd
