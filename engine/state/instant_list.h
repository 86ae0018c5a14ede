#pragma once
// The newest instants an EventHistory keeps, ascending, in 12 bytes: up to two inline in
// 48 bits each (time48.h), more in a heap block of 64-bit instants. There is an
// EventHistory per (user, event name), so its size is paid tens of millions of times;
// absl::InlinedVector<TimeMs, 2> takes 24 (a size word beside the two), two 64-bit words
// with the size read from their values 16, and here two 48-bit places 12. The size is read
// from the values: a place holding kEmptyBits (all ones) is empty, and the second place
// holding kHeapBits marks the heap form, the first then holding the block's address (the
// block holds size and capacity). Instants kept are within [0, kMax], above every instant
// the engine accepts (kInstantMsMax); storing one outside fails a check in every build.
//
// Inline instants are not TimeMs in memory, so readers take them decoded: view() and
// Last() hand out an Instants, a span-like copy of the inline ones (or a view of the heap
// block's), whose iterators are pointers valid while it lives.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>
#include <vector>

#include "bucketd/limits.h"
#include "bucketd/types.h"
#include "engine/base/check.h"
#include "engine/base/huge_block.h"
#include "engine/state/time48.h"

namespace bucketd {

// Instants read out of an InstantList, ascending: the surface of std::span<const TimeMs>
// that readers use. The inline form's instants are copied into it, so copy it freely but
// take no pointer into it that outlives it.
class Instants {
 public:
  Instants() = default;
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const TimeMs* begin() const { return heap_ != nullptr ? heap_ : decoded_; }
  const TimeMs* end() const { return begin() + size_; }
  TimeMs operator[](size_t i) const { return begin()[i]; }
  TimeMs front() const { return begin()[0]; }
  TimeMs back() const { return begin()[size_ - 1]; }
  std::span<const TimeMs> span() const { return {begin(), size_}; }
  // The `count` instants from index `offset` on. REQUIRES: offset + count <= size().
  Instants Slice(size_t offset, size_t count) const {
    BUCKETD_CHECK(offset + count <= size_);
    Instants out = *this;
    if (heap_ != nullptr) {
      out.heap_ = heap_ + offset;
    } else {
      std::copy(decoded_ + offset, decoded_ + offset + count, out.decoded_);
    }
    out.size_ = count;
    return out;
  }

 private:
  friend class InstantList;
  const TimeMs* heap_ = nullptr;  // the heap block's instants, or null: decoded_
  TimeMs decoded_[2] = {0, 0};
  size_t size_ = 0;
};

class InstantList {
 public:
  using value_type = TimeMs;
  static constexpr size_t kInline = 2;
  // The latest instant a list keeps: the two patterns above it mark empty and heap places.
  static constexpr TimeMs kMax = static_cast<TimeMs>(time48::kNoneBits) - 2;
  static_assert(kInstantMsMax <= kMax, "every instant the engine accepts fits");
  static constexpr bool Fits(TimeMs t) { return t >= 0 && t <= kMax; }

  InstantList() = default;
  InstantList(const InstantList& other) { assign(other.view().span()); }
  InstantList(InstantList&& other) noexcept {
    std::memcpy(words_, other.words_, sizeof words_);
    other.SetEmpty();
  }
  InstantList& operator=(const InstantList& other) {
    if (this != &other) assign(other.view().span());
    return *this;
  }
  InstantList& operator=(InstantList&& other) noexcept {
    std::swap(words_, other.words_);
    return *this;
  }
  ~InstantList() { clear(); }

  size_t size() const {
    const uint64_t second = Place(1);
    if (second == kHeapBits) return Heap()->size;
    return static_cast<size_t>(Place(0) != kEmptyBits) + static_cast<size_t>(second != kEmptyBits);
  }
  size_t capacity() const { return OnHeap() ? Heap()->capacity : kInline; }
  bool empty() const { return size() == 0; }
  // Every instant, ascending.
  Instants view() const { return Last(SIZE_MAX); }
  // The newest min(n, size()) instants, ascending.
  Instants Last(size_t n) const {
    Instants out;
    if (OnHeap()) {
      const size_t size = Heap()->size;
      out.size_ = std::min(n, size);
      out.heap_ = HeapData() + (size - out.size_);
      return out;
    }
    TimeMs all[kInline];
    const size_t size = Decode(all);
    out.size_ = std::min(n, size);
    std::copy(all + (size - out.size_), all + size, out.decoded_);
    return out;
  }
  TimeMs operator[](size_t i) const {
    return OnHeap() ? HeapData()[i] : static_cast<TimeMs>(Place(i));
  }
  TimeMs front() const { return (*this)[0]; }
  TimeMs back() const { return (*this)[size() - 1]; }
  // Where the first instant is after `t` (std::upper_bound's index).
  size_t UpperBound(TimeMs t) const {
    if (OnHeap()) {
      const TimeMs* d = HeapData();
      return static_cast<size_t>(std::upper_bound(d, d + Heap()->size, t) - d);
    }
    TimeMs all[kInline];
    const size_t size = Decode(all);
    return static_cast<size_t>(std::upper_bound(all, all + size, t) - all);
  }
  // The heap block, or null (memory accounting).
  const void* allocation() const { return OnHeap() ? Heap() : nullptr; }
  friend bool operator==(const InstantList& a, const InstantList& b) {
    const Instants x = a.view(), y = b.view();
    return std::equal(x.begin(), x.end(), y.begin(), y.end());
  }

  void clear() {
    if (OnHeap()) Free(Heap());
    SetEmpty();
  }
  // Room for `n` instants, if there is less.
  void reserve(size_t n) {
    if (n > capacity()) Reallocate(n);
  }
  // New instants are 0.
  void resize(size_t n) {
    const size_t old = size();
    if (n <= old) return erase(n, old);
    if (n > capacity()) Reallocate(n);
    for (size_t i = old; i < n; ++i) Append(0);
  }
  // Files `t` at index `i`. REQUIRES: i <= size(); Fits(t) is checked.
  void insert(size_t i, TimeMs t) {
    BUCKETD_CHECK(Fits(t));
    const size_t n = size();
    if (n == capacity()) Reallocate(2 * n);
    if (OnHeap()) {
      TimeMs* d = HeapData();
      std::copy_backward(d + i, d + n, d + n + 1);
      d[i] = t;
      Heap()->size = static_cast<uint32_t>(n + 1);
      return;
    }
    TimeMs all[kInline + 1];
    Decode(all);
    std::copy_backward(all + i, all + n, all + n + 1);
    all[i] = t;
    StoreInline(all, n + 1);
  }
  // Drops the oldest instant and files `t` at index `i - 1`, the size unchanged (a full
  // history taking a newer instant, with no moment at size + 1 that would spill it).
  // REQUIRES: 0 < i <= size(); Fits(t) is checked.
  void DropOldestInsert(size_t i, TimeMs t) {
    BUCKETD_CHECK(Fits(t));
    if (OnHeap()) {
      TimeMs* d = HeapData();
      std::move(d + 1, d + i, d);
      d[i - 1] = t;
      return;
    }
    TimeMs all[kInline];
    const size_t n = Decode(all);
    std::move(all + 1, all + i, all);
    all[i - 1] = t;
    StoreInline(all, n);
  }
  // Drops the instants at indices [first, last).
  void erase(size_t first, size_t last) {
    const size_t n = size();
    if (OnHeap()) {
      TimeMs* d = HeapData();
      std::copy(d + last, d + n, d + first);
      return SetHeapSize(n - (last - first));
    }
    TimeMs all[kInline];
    Decode(all);
    std::copy(all + last, all + n, all + first);
    StoreInline(all, n - (last - first));
  }
  // Every instant `instants` holds (in its order). Fits() of each is checked.
  void assign(std::span<const TimeMs> instants) {
    if (OnHeap() && !instants.empty() && instants.data() >= HeapData() &&
        instants.data() < HeapData() + Heap()->capacity) {
      // A range of this list's own block: copied out first, since the block may go.
      const std::vector<TimeMs> copy(instants.begin(), instants.end());
      return assign(copy);
    }
    clear();
    reserve(instants.size());
    for (TimeMs t : instants) Append(t);
  }
  // Files `t` after every instant. Fits(t) is checked; the order is the caller's.
  void push_back(TimeMs t) {
    const size_t n = size();
    if (n == capacity()) Reallocate(std::max<size_t>(2 * n, kInline));
    Append(t);
  }

 private:
  struct Block {
    uint32_t size;
    uint32_t capacity;
  };
  static constexpr uint64_t kEmptyBits = time48::kNoneBits;
  static constexpr uint64_t kHeapBits = time48::kNoneBits - 1;

  uint64_t Place(size_t i) const {
    uint32_t low;
    uint16_t high;
    std::memcpy(&low, &words_[3 * i], sizeof low);
    std::memcpy(&high, &words_[3 * i + 2], sizeof high);
    return uint64_t{high} << 32 | low;
  }
  void SetPlace(size_t i, uint64_t bits) {
    const auto low = static_cast<uint32_t>(bits);
    const auto high = static_cast<uint16_t>(bits >> 32);
    std::memcpy(&words_[3 * i], &low, sizeof low);
    std::memcpy(&words_[3 * i + 2], &high, sizeof high);
  }
  void SetEmpty() { std::memset(words_, 0xFF, sizeof words_); }
  bool OnHeap() const { return Place(1) == kHeapBits; }
  // Not inlined: GCC 12 follows a freshly emptied list into the heap branch and reports
  // the empty pattern's "address" freed (-Wfree-nonheap-object); blocks are freed rarely.
  [[gnu::noinline]] static void Free(Block* block) { std::free(block); }
  Block* Heap() const { return reinterpret_cast<Block*>(static_cast<uintptr_t>(Place(0))); }
  TimeMs* HeapData() const { return reinterpret_cast<TimeMs*>(Heap() + 1); }
  // The inline instants into `out`; their number. REQUIRES: !OnHeap().
  size_t Decode(TimeMs* out) const {
    size_t n = 0;
    for (size_t i = 0; i < kInline; ++i) {
      const uint64_t bits = Place(i);
      if (bits == kEmptyBits) break;
      out[n++] = static_cast<TimeMs>(bits);
    }
    return n;
  }
  // The inline form with `n` <= kInline instants. REQUIRES: !OnHeap(); each fits (checked
  // where it came in).
  void StoreInline(const TimeMs* instants, size_t n) {
    for (size_t i = 0; i < kInline; ++i) {
      SetPlace(i, i < n ? static_cast<uint64_t>(instants[i]) : kEmptyBits);
    }
  }
  // REQUIRES: size() < capacity().
  void Append(TimeMs t) {
    BUCKETD_CHECK(Fits(t));
    if (OnHeap()) {
      HeapData()[Heap()->size++] = t;
      return;
    }
    SetPlace(Place(0) == kEmptyBits ? 0 : 1, static_cast<uint64_t>(t));
  }
  // Moves the instants into a heap block of `capacity` (> kInline, >= size()).
  void Reallocate(size_t capacity) {
    const Instants all = view();
    auto* block = static_cast<Block*>(std::malloc(sizeof(Block) + capacity * sizeof(TimeMs)));
    if (block == nullptr) throw std::bad_alloc();
    KeepFromLeakReports(block);  // its address is kept in 48 bits
    block->size = static_cast<uint32_t>(all.size());
    block->capacity = static_cast<uint32_t>(capacity);
    std::copy(all.begin(), all.end(), reinterpret_cast<TimeMs*>(block + 1));
    if (OnHeap()) Free(Heap());
    const auto address = reinterpret_cast<uintptr_t>(block);
    // As Pointer48 (user.h): user-space addresses fit 48 bits.
    BUCKETD_CHECK(address <= time48::kNoneBits);
    SetPlace(0, address);
    SetPlace(1, kHeapBits);
  }
  // The first n instants of the block are the list; a list that fits inline again moves
  // back, so memory follows a depth that was lowered.
  void SetHeapSize(size_t n) {
    if (n > kInline) {
      Heap()->size = static_cast<uint32_t>(n);
      return;
    }
    Block* block = Heap();
    StoreInline(reinterpret_cast<const TimeMs*>(block + 1), n);
    Free(block);
  }

  // Two 48-bit places as 16-bit words (alignment 2): place i is words 3i..3i+2, its low 32
  // bits then its high 16, as time48::Load/Store.
  uint16_t words_[3 * kInline] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF};
};
static_assert(sizeof(InstantList) == 12 && alignof(InstantList) == 2);

}  // namespace bucketd
