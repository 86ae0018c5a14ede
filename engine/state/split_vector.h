#pragma once
// A vector whose first N elements live inline and the rest in a heap block of their own:
// where absl::InlinedVector moves every element to the heap once it outgrows N (and leaves
// its N inline places unused), this keeps them inline and puts only the elements past N
// on the heap. A User holds two such arrays (its event histories and its slot pointers):
// a user with ten names and ten buckets paid 96 + 24 bytes of inline room it did not use
// and heap room for all ten of each; now the heap holds seven and six.
//
// Same size as the InlinedVector it replaces: one word, then the inline places. The word
// is odd while there is no heap block ((size << 1) | 1), and the block's address once
// there is one; the block starts with the size (of all elements) and the room after N,
// then the elements past N. Once it has a block it keeps it until clear().
//
// The subset of std::vector's surface the state uses, with random-access iterators; not
// contiguous, so there is no data(): inline_data() and tail_data() give the two parts (for
// prefetches).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "engine/base/check.h"

namespace bucketd {

// The room a full array of `size` elements grows to: a quarter more, at least
// `min_growth`, where std::vector doubles. The state's arrays outlive the insert that grew
// them, so slack is memory held for good; still amortized O(1) per insert. The one home of
// this rule: GrowForOneMore (user.h) and SplitVector's own appends use it.
constexpr size_t GrownCapacity(size_t size, size_t min_growth = 2) {
  return size + std::max(min_growth, size / 4);
}

template <typename T, size_t N>
class SplitVector {
  static_assert(N > 0);

 public:
  using value_type = T;
  using size_type = size_t;

  template <bool kConst>
  class Iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = std::conditional_t<kConst, const T*, T*>;
    using reference = std::conditional_t<kConst, const T&, T&>;

    Iterator() = default;
    Iterator(pointer inline_part, pointer tail, size_t i)
        : inline_(inline_part), tail_(tail), i_(i) {}
    operator Iterator<true>() const requires(!kConst) { return Iterator<true>(inline_, tail_, i_); }

    reference operator*() const { return i_ < N ? inline_[i_] : tail_[i_ - N]; }
    pointer operator->() const { return &**this; }
    reference operator[](difference_type d) const { return *(*this + d); }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    Iterator operator++(int) { return Iterator(inline_, tail_, i_++); }
    Iterator& operator--() {
      --i_;
      return *this;
    }
    Iterator operator--(int) { return Iterator(inline_, tail_, i_--); }
    Iterator& operator+=(difference_type d) {
      i_ = static_cast<size_t>(static_cast<difference_type>(i_) + d);
      return *this;
    }
    Iterator& operator-=(difference_type d) { return *this += -d; }
    friend Iterator operator+(Iterator it, difference_type d) { return it += d; }
    friend Iterator operator+(difference_type d, Iterator it) { return it += d; }
    friend Iterator operator-(Iterator it, difference_type d) { return it -= d; }
    friend difference_type operator-(const Iterator& a, const Iterator& b) {
      return static_cast<difference_type>(a.i_) - static_cast<difference_type>(b.i_);
    }
    friend bool operator==(const Iterator& a, const Iterator& b) { return a.i_ == b.i_; }
    friend auto operator<=>(const Iterator& a, const Iterator& b) { return a.i_ <=> b.i_; }
    size_t index() const { return i_; }

   private:
    pointer inline_ = nullptr;
    pointer tail_ = nullptr;  // the elements past N (null: none)
    size_t i_ = 0;
  };
  using iterator = Iterator<false>;
  using const_iterator = Iterator<true>;

  SplitVector() = default;
  SplitVector(const SplitVector& other) { *this = other; }
  SplitVector(SplitVector&& other) noexcept { MoveFrom(&other); }
  SplitVector& operator=(const SplitVector& other) {
    if (this == &other) return *this;
    clear();
    reserve(other.size());
    for (const T& v : other) push_back(v);
    return *this;
  }
  SplitVector& operator=(SplitVector&& other) noexcept {
    if (this != &other) {
      clear();
      MoveFrom(&other);
    }
    return *this;
  }
  ~SplitVector() { clear(); }

  size_t size() const { return Spilled() ? Head()->size : word_ >> 1; }
  bool empty() const { return size() == 0; }
  size_t capacity() const { return N + (Spilled() ? Head()->tail_capacity : 0); }

  iterator begin() { return iterator(Inline(), Tail(), 0); }
  iterator end() { return iterator(Inline(), Tail(), size()); }
  const_iterator begin() const { return const_iterator(Inline(), Tail(), 0); }
  const_iterator end() const { return const_iterator(Inline(), Tail(), size()); }
  T& operator[](size_t i) { return i < N ? Inline()[i] : Tail()[i - N]; }
  const T& operator[](size_t i) const { return i < N ? Inline()[i] : Tail()[i - N]; }
  T& at(size_t i) {
    BUCKETD_CHECK(i < size());
    return (*this)[i];
  }
  const T& at(size_t i) const {
    BUCKETD_CHECK(i < size());
    return (*this)[i];
  }
  T& back() { return (*this)[size() - 1]; }
  const T& back() const { return (*this)[size() - 1]; }

  // The two parts, for prefetches: the inline places, and the elements past N (null when
  // there is no heap block).
  const T* inline_data() const { return Inline(); }
  const T* tail_data() const { return Tail(); }
  size_t tail_size() const { return size() > N ? size() - N : 0; }
  // The heap block, or null (memory accounting).
  const void* allocation() const { return Spilled() ? Head() : nullptr; }

  // Room for `n` elements in all: past N, exactly that many in the heap block.
  void reserve(size_t n) {
    if (n > capacity()) Relocate(n - N);
  }
  template <typename... Args>
  T& emplace_back(Args&&... args) {
    const size_t n = size();
    // Full (an append without GrowForOneMore ahead of it): grown by the same rule.
    if (n == capacity()) Relocate(GrownCapacity(n) - N);
    T* place = n < N ? Inline() + n : Tail() + (n - N);
    new (place) T(std::forward<Args>(args)...);
    SetSize(n + 1);
    return *place;
  }
  void push_back(const T& value) { emplace_back(value); }
  void push_back(T&& value) { emplace_back(std::move(value)); }
  void pop_back() {
    const size_t n = size();
    BUCKETD_CHECK(n > 0);
    std::destroy_at(&(*this)[n - 1]);
    SetSize(n - 1);
  }
  iterator erase(const_iterator pos) { return erase(pos, pos + 1); }
  iterator erase(const_iterator first, const_iterator last) {
    // Nothing to erase: moving the elements after it onto themselves would self-move them.
    if (first == last) return begin() + (first - cbegin());
    const iterator from = begin() + (first - cbegin());
    const iterator to = begin() + (last - cbegin());
    const iterator kept_end = std::move(to, end(), from);
    const size_t kept = kept_end.index();
    for (size_t i = size(); i > kept; --i) std::destroy_at(&(*this)[i - 1]);
    SetSize(kept);
    return begin() + from.index();
  }
  // Destroys the elements and frees the heap block.
  void clear() {
    for (size_t i = size(); i > 0; --i) std::destroy_at(&(*this)[i - 1]);
    if (Spilled()) ::operator delete(Head());
    word_ = 1;
  }

 private:
  struct BlockHeader {
    uint32_t size;           // all elements, the inline ones included
    uint32_t tail_capacity;  // places in the block, after this header
  };
  static_assert(alignof(T) <= sizeof(BlockHeader), "the tail follows the 8-byte header unpadded");

  const_iterator cbegin() const { return begin(); }
  bool Spilled() const { return (word_ & 1) == 0; }
  BlockHeader* Head() const { return reinterpret_cast<BlockHeader*>(word_); }
  T* Inline() const { return reinterpret_cast<T*>(const_cast<unsigned char*>(inline_)); }
  T* Tail() const {
    return Spilled() ? reinterpret_cast<T*>(reinterpret_cast<char*>(word_) + sizeof(BlockHeader))
                     : nullptr;
  }
  void SetSize(size_t n) {
    if (Spilled()) {
      Head()->size = static_cast<uint32_t>(n);
    } else {
      word_ = n << 1 | 1;
    }
  }
  // Moves the elements past N into a new block with room for `tail_capacity` of them.
  void Relocate(size_t tail_capacity) {
    BUCKETD_CHECK(tail_capacity <= UINT32_MAX - N);
    const size_t n = size();
    void* memory = ::operator new(sizeof(BlockHeader) + tail_capacity * sizeof(T));
    auto* grown =
        new (memory) BlockHeader{static_cast<uint32_t>(n), static_cast<uint32_t>(tail_capacity)};
    if (Spilled()) {
      T* from = Tail();
      const size_t tail_size = n > N ? n - N : 0;
      T* to = reinterpret_cast<T*>(static_cast<char*>(memory) + sizeof(BlockHeader));
      std::uninitialized_move(from, from + tail_size, to);
      std::destroy(from, from + tail_size);
      ::operator delete(Head());
    }
    word_ = reinterpret_cast<uintptr_t>(grown);
  }
  void MoveFrom(SplitVector* other) {
    word_ = std::exchange(other->word_, 1);
    const size_t inline_size = std::min(size(), N);
    std::uninitialized_move(other->Inline(), other->Inline() + inline_size, Inline());
    std::destroy(other->Inline(), other->Inline() + inline_size);
  }

  uintptr_t word_ = 1;  // (size << 1) | 1, or the heap block's address
  alignas(T) unsigned char inline_[N * sizeof(T)];
};

}  // namespace bucketd
