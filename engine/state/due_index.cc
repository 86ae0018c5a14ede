#include "engine/state/due_index.h"

#include "engine/base/check.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>

namespace bucketd {
namespace {

using Stored = DueIndex::Stored;
// Descending key order: a sorted page pops from its back.
bool After(const Stored& a, const Stored& b) { return a.packed() > b.packed(); }
bool Erased(const Stored& e) { return e.slot == DueIndex::kErased; }

// Sorts a page's entries by descending key. An LSD radix sort, 11 bits a pass, on the
// key's 52 significant bits (the instant's offset in its page, then the user index),
// skipping passes whose digit all entries share: sorting pages was ~8% of a long replay
// with std::sort, whose comparisons on random keys mispredict about every other branch.
// Small pages use std::sort.
void SortDescending(std::vector<Stored>* entries) {
  constexpr size_t kRadixMin = 256;
  const size_t n = entries->size();
  if (n < kRadixMin) {
    std::sort(entries->begin(), entries->end(), After);
    return;
  }
  const auto key = [](const Stored& e) { return e.packed(); };
  constexpr int kDigitBits = 11;
  constexpr size_t kDigits = size_t{1} << kDigitBits;
  // One per thread, kept between sorts of ordinary pages; released after a huge one.
  constexpr size_t kScratchKeptMax = size_t{1} << 16;
  thread_local std::vector<Stored> scratch;
  scratch.resize(n);
  std::vector<uint32_t> count(kDigits);
  Stored* from = entries->data();
  Stored* to = scratch.data();
  for (int shift = 0; shift < 32 + DueIndex::kPageShift; shift += kDigitBits) {
    std::fill(count.begin(), count.end(), 0);
    for (size_t i = 0; i < n; ++i) ++count[(key(from[i]) >> shift) & (kDigits - 1)];
    if (std::find(count.begin(), count.end(), n) != count.end()) continue;  // one digit
    uint32_t at = 0;  // the highest digit first: descending
    for (size_t d = kDigits; d-- > 0;) at += std::exchange(count[d], at);
    for (size_t i = 0; i < n; ++i) to[count[(key(from[i]) >> shift) & (kDigits - 1)]++] = from[i];
    std::swap(from, to);
  }
  if (from != entries->data()) std::copy(from, from + n, entries->data());
  if (scratch.capacity() > kScratchKeptMax) std::vector<Stored>().swap(scratch);
}

// Erased entries are dropped all at once when they outnumber the live ones by this many.
constexpr size_t kCompactSlack = 1024;
// Erasing scans an unsorted page up to this size; from a bigger one it is noted and done
// when the page is sorted.
constexpr size_t kScanMax = 256;

}  // namespace

void DueIndex::PageTally::Flush() {
  if (pending_ > 0) counts_[last_page_] += pending_;
  pending_ = 0;
}

void DueIndex::PageTally::Merge(PageTally&& other) {
  Flush();
  other.Flush();
  for (const auto& [page, count] : other.counts_) counts_[page] += count;
  total_ += other.total_;
  other = PageTally();
}

void DueIndex::Reserve(PageTally&& tally) {
  tally.Flush();
  for (const auto& [number, count] : tally.counts_) {
    std::vector<Stored>& entries = PageAt(number).entries;
    entries.reserve(entries.size() + count);
  }
  tally = PageTally();
}

size_t DueIndex::capacity() const {
  size_t room = 0;
  for (const auto& [number, page] : pages_) room += page.entries.capacity();
  return room;
}

DueIndex::Page& DueIndex::PageAt(int64_t number) const {
  auto [it, added] = pages_.try_emplace(number);
  if (added) it->second.number = number;
  return it->second;
}

void DueIndex::Insert(DueKey key, SlotIndex slot) {
  Page& page = PageAt(PageOf(key.due_at));
  if (page.sorted) {
    page.late.emplace(Pack(key), slot);
  } else {
    // Grown by a quarter, not doubled: a page fills over the whole time ingest files into
    // it and is held until the clock reaches it, so its slack is memory held per filed slot
    // (sweep_bench at 10M: doubling held 21.6 bytes per 16-byte entry, a quarter 16.9). The
    // extra copies are sequential and amortized (four per entry).
    GrowForOneMore(&page.entries, kPageGrowthMin);
    page.entries.push_back(Store(key, slot));
  }
  ++size_;
}

void DueIndex::Erase(DueKey key, SlotIndex slot) {
  auto it = pages_.find(PageOf(key.due_at));
  BUCKETD_CHECK_MSG(it != pages_.end(), "a filed slot missing from its time index");
  Page& page = it->second;
  const uint64_t packed = Pack(key);
  if (page.late.erase(packed) == 1) {
    --size_;
    return;
  }
  if (!page.sorted && page.entries.size() > kScanMax) {
    // Noted, not searched: the sort drops it (and checks it was there).
    ++page.dropped[{packed, slot}];
  } else {
    MarkErased(&page, packed);
  }
  --size_;
  ++erased_;
  if (erased_ > size_ + kCompactSlack) Compact();
}

void DueIndex::MarkErased(Page* page, uint64_t packed) {
  // An erased entry keeps its key, so a sorted page stays sorted; the key may repeat
  // (filed, erased, filed again), but only one of the repeats is live.
  Stored* found = nullptr;
  if (page->sorted) {
    auto e = std::lower_bound(page->entries.begin(), page->entries.end(), packed,
                              [](const Stored& x, uint64_t k) { return x.packed() > k; });
    for (; e != page->entries.end() && e->packed() == packed; ++e) {
      if (!Erased(*e)) found = &*e;
    }
  } else {
    auto e = std::find_if(page->entries.begin(), page->entries.end(),
                          [&](const Stored& x) { return x.packed() == packed && !Erased(x); });
    if (e != page->entries.end()) found = &*e;
  }
  BUCKETD_CHECK_MSG(found != nullptr, "a filed slot missing from its time index");
  found->slot = kErased;
}

void DueIndex::EraseFront(DueKey key) {
  Page& page = FrontPage();
  if (LateFirst(page)) {
    BUCKETD_CHECK_MSG(page.KeyOf(page.late.begin()->first) == key,
                      "a slot filed under another instant");
    page.late.erase(page.late.begin());
  } else {
    BUCKETD_CHECK_MSG(page.KeyOf(page.entries.back()) == key, "a slot filed under another instant");
    page.entries.pop_back();
  }
  --size_;
  if (erased_ > size_ + kCompactSlack) Compact();
}

void DueIndex::clear() {
  pages_.clear();
  size_ = 0;
  erased_ = 0;
}

size_t DueIndex::late_size() const {
  size_t late = 0;
  for (const auto& [number, page] : pages_) late += page.late.size();
  return late;
}

std::vector<DueIndex::Entry> DueIndex::Sorted() const {
  std::vector<Entry> all;
  all.reserve(size_);
  for (const auto& [number, page] : pages_) {
    auto dropped = page.dropped;  // copies still to skip
    for (const Stored& e : page.entries) {
      if (Erased(e)) continue;
      if (auto d = dropped.find({e.packed(), e.slot}); d != dropped.end() && d->second > 0) {
        --d->second;
        continue;
      }
      all.push_back(Entry{page.KeyOf(e), e.slot});
    }
    for (const auto& [packed, slot] : page.late) all.push_back(Entry{page.KeyOf(packed), slot});
  }
  std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) { return a.key < b.key; });
  return all;
}

DueIndex::Page& DueIndex::FrontPage() const {
  for (;;) {
    BUCKETD_CHECK_MSG(!pages_.empty(), "live entries missing from the time index");
    auto it = pages_.begin();
    Page& page = it->second;
    if (!page.sorted) Sort(&page);
    while (!page.entries.empty() && Erased(page.entries.back())) {
      page.entries.pop_back();
      --erased_;
    }
    if (!page.entries.empty() || !page.late.empty()) return page;
    pages_.erase(it);
  }
}

void DueIndex::Sort(Page* page) const {
  erased_ -= std::erase_if(page->entries, Erased);
  erased_ -= DropNoted(page);
  SortDescending(&page->entries);
  page->sorted = true;
}

size_t DueIndex::DropNoted(Page* page) {
  if (page->dropped.empty()) return 0;
  const size_t dropped = std::erase_if(page->entries, [&](const Stored& e) {
    auto d = page->dropped.find({e.packed(), e.slot});
    if (d == page->dropped.end()) return false;
    if (--d->second == 0) page->dropped.erase(d);
    return true;
  });
  BUCKETD_CHECK_MSG(page->dropped.empty(), "an erased slot missing from its time index");
  page->dropped = {};  // its table's memory too
  return dropped;
}

DueIndex::Entry DueIndex::Front() const {
  const Page& page = FrontPage();
  if (LateFirst(page))
    return Entry{page.KeyOf(page.late.begin()->first), page.late.begin()->second};
  return Entry{page.KeyOf(page.entries.back()), page.entries.back().slot};
}

void DueIndex::Compact() {
  for (auto it = pages_.begin(); it != pages_.end();) {
    Page& page = it->second;
    std::erase_if(page.entries, Erased);  // keeps a sorted page sorted
    DropNoted(&page);
    if (page.entries.empty() && page.late.empty()) {
      it = pages_.erase(it);
    } else {
      ++it;
    }
  }
  erased_ = 0;
}

}  // namespace bucketd
