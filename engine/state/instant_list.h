#pragma once
// The newest instants an EventHistory keeps, ascending, in 16 bytes: up to two inline,
// more in a heap block. There is an EventHistory per (user, event name), so its size is
// paid tens of millions of times; absl::InlinedVector<TimeMs, 2> takes 24 (a size word
// beside the two), and here the size is read from the values instead. Instants are never
// negative (ValidateOccurredAt, and the snapshot decoder refuses one), so an inline word
// below zero is an empty place, and the second word set to kHeapTag marks the heap form
// (the first then holds the block's address; the block holds size and capacity).
//
// The subset of std::vector's surface the fold, the preview and the snapshot use;
// iterators are pointers.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "bucketd/types.h"

namespace bucketd {

class InstantList {
 public:
  using value_type = TimeMs;
  static constexpr size_t kInline = 2;

  InstantList() = default;
  InstantList(const InstantList& other) { assign(other.begin(), other.end()); }
  InstantList(InstantList&& other) noexcept : words_{other.words_[0], other.words_[1]} {
    other.words_[0] = other.words_[1] = kEmpty;
  }
  InstantList& operator=(const InstantList& other) {
    if (this != &other) assign(other.begin(), other.end());
    return *this;
  }
  InstantList& operator=(InstantList&& other) noexcept {
    std::swap(words_, other.words_);
    return *this;
  }
  ~InstantList() { clear(); }

  size_t size() const {
    if (OnHeap()) return Heap()->size;
    return static_cast<size_t>(words_[0] >= 0) + static_cast<size_t>(words_[1] >= 0);
  }
  size_t capacity() const { return OnHeap() ? Heap()->capacity : kInline; }
  bool empty() const { return size() == 0; }
  TimeMs* data() { return OnHeap() ? HeapData() : words_; }
  const TimeMs* data() const { return OnHeap() ? HeapData() : words_; }
  TimeMs* begin() { return data(); }
  TimeMs* end() { return data() + size(); }
  const TimeMs* begin() const { return data(); }
  const TimeMs* end() const { return data() + size(); }
  TimeMs operator[](size_t i) const { return data()[i]; }
  TimeMs front() const { return data()[0]; }
  TimeMs back() const { return data()[size() - 1]; }
  // The heap block, or null (memory accounting).
  const void* allocation() const { return OnHeap() ? Heap() : nullptr; }
  friend bool operator==(const InstantList& a, const InstantList& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

  void clear() {
    if (OnHeap()) std::free(Heap());
    words_[0] = words_[1] = kEmpty;
  }
  // Room for `n` instants, if there is less.
  void reserve(size_t n) {
    if (n > capacity()) Reallocate(n);
  }
  // New instants are 0. REQUIRES: what the caller then writes is not negative.
  void resize(size_t n) {
    const size_t old = size();
    if (n > capacity()) Reallocate(n);
    TimeMs* d = data();
    for (size_t i = old; i < n; ++i) d[i] = 0;
    SetSize(n);
  }
  // REQUIRES: t >= 0, and `pos` in [begin(), end()].
  TimeMs* insert(const TimeMs* pos, TimeMs t) {
    const size_t i = static_cast<size_t>(pos - begin());
    const size_t n = size();
    if (n == capacity()) Reallocate(2 * n);
    TimeMs* d = data();
    std::copy_backward(d + i, d + n, d + n + 1);
    d[i] = t;
    if (OnHeap()) Heap()->size = static_cast<uint32_t>(n + 1);
    return d + i;
  }
  TimeMs* erase(const TimeMs* first, const TimeMs* last) {
    const size_t i = static_cast<size_t>(first - begin());
    const size_t j = static_cast<size_t>(last - begin());
    const size_t n = size();
    TimeMs* d = data();
    std::copy(d + j, d + n, d + i);
    SetSize(n - (j - i));
    return data() + i;
  }
  // REQUIRES: no instant in [first, last) is negative.
  void assign(const TimeMs* first, const TimeMs* last) {
    const auto n = static_cast<size_t>(last - first);
    if (first >= begin() && first < end()) {  // a range of this list: move it to the front
      erase(begin(), first);
      resize(n);
      return;
    }
    clear();
    resize(n);
    std::copy(first, last, data());
  }

 private:
  struct Block {
    uint32_t size;
    uint32_t capacity;
  };
  static constexpr TimeMs kEmpty = -1;
  static constexpr TimeMs kHeapTag = -2;

  bool OnHeap() const { return words_[1] == kHeapTag; }
  Block* Heap() const { return std::bit_cast<Block*>(static_cast<intptr_t>(words_[0])); }
  TimeMs* HeapData() const { return reinterpret_cast<TimeMs*>(Heap() + 1); }
  // Moves the instants into a heap block of `capacity` (> kInline, >= size()).
  void Reallocate(size_t capacity) {
    const size_t n = size();
    auto* block = static_cast<Block*>(std::malloc(sizeof(Block) + capacity * sizeof(TimeMs)));
    if (block == nullptr) throw std::bad_alloc();
    block->size = static_cast<uint32_t>(n);
    block->capacity = static_cast<uint32_t>(capacity);
    std::copy(data(), data() + n, reinterpret_cast<TimeMs*>(block + 1));
    if (OnHeap()) std::free(Heap());
    words_[0] = static_cast<TimeMs>(std::bit_cast<intptr_t>(block));
    words_[1] = kHeapTag;
  }
  // The first n instants are the list (they are in place); a heap list that fits inline
  // again moves back, so memory follows a depth that was lowered.
  void SetSize(size_t n) {
    if (OnHeap()) {
      if (n > kInline) {
        Heap()->size = static_cast<uint32_t>(n);
        return;
      }
      Block* block = Heap();
      const TimeMs* from = reinterpret_cast<const TimeMs*>(block + 1);
      words_[0] = n > 0 ? from[0] : kEmpty;
      words_[1] = n > 1 ? from[1] : kEmpty;
      std::free(block);
      return;
    }
    for (size_t i = n; i < kInline; ++i) words_[i] = kEmpty;
  }

  TimeMs words_[kInline] = {kEmpty, kEmpty};
};
static_assert(sizeof(InstantList) == 16);

}  // namespace bucketd
