#pragma once
// A vector in one pointer, for the arrays a User holds that most users leave empty (past
// memberships, contact properties): std::vector's three pointers are 24 bytes in every
// user, paid ten million times, where this is 8; the size and capacity sit in the heap
// block, before the elements, and only users with elements have one. It grows by half (at
// least two) at a time instead of doubling: a user's arrays outlive the event that grew
// them, so slack is memory held for good. Still amortized O(1) per insert.
//
// The subset of std::vector's surface the state uses; iterators are pointers.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <new>
#include <utility>

namespace bucketd {

template <typename T>
class CompactVector {
 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  CompactVector() = default;
  CompactVector(std::initializer_list<T> values) {
    reserve(values.size());
    for (const T& v : values) push_back(v);
  }
  CompactVector(const CompactVector& other) { *this = other; }
  CompactVector(CompactVector&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  CompactVector& operator=(const CompactVector& other) {
    if (this == &other) return *this;
    clear();
    reserve(other.size());
    for (const T& v : other) push_back(v);
    return *this;
  }
  CompactVector& operator=(CompactVector&& other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }
  ~CompactVector() { clear(); }

  size_t size() const { return block_ == nullptr ? 0 : block_->size; }
  size_t capacity() const { return block_ == nullptr ? 0 : block_->capacity; }
  bool empty() const { return size() == 0; }
  T* data() { return Elements(); }
  const T* data() const { return Elements(); }
  T* begin() { return Elements(); }
  T* end() { return Elements() + size(); }
  const T* begin() const { return Elements(); }
  const T* end() const { return Elements() + size(); }
  T& operator[](size_t i) { return Elements()[i]; }
  const T& operator[](size_t i) const { return Elements()[i]; }
  T& back() { return end()[-1]; }
  const T& back() const { return end()[-1]; }
  // The heap block, or null (memory accounting).
  const void* allocation() const { return block_; }

  // Destroys the elements and frees the block.
  void clear() {
    if (block_ == nullptr) return;
    std::destroy(begin(), end());
    ::operator delete(block_);
    block_ = nullptr;
  }
  // Room for exactly `n` elements, if there is less.
  void reserve(size_t n) {
    if (n > capacity()) Relocate(n);
  }
  template <typename... Args>
  T& emplace_back(Args&&... args) {
    MakeRoomForOne();
    T* slot = new (end()) T(std::forward<Args>(args)...);
    ++block_->size;
    return *slot;
  }
  void push_back(T value) { emplace_back(std::move(value)); }
  // Inserts before `pos`; returns where the value went.
  T* insert(const T* pos, T value) {
    const size_t i = static_cast<size_t>(pos - begin());
    const size_t n = size();
    if (i == n) return &emplace_back(std::move(value));
    MakeRoomForOne();
    T* d = data();
    new (d + n) T(std::move(d[n - 1]));
    ++block_->size;
    std::move_backward(d + i, d + n - 1, d + n);
    d[i] = std::move(value);
    return d + i;
  }
  T* erase(const T* pos) { return erase(pos, pos + 1); }
  T* erase(const T* first, const T* last) {
    if (first == last) return begin() + (first - begin());
    T* from = begin() + (first - begin());
    T* to = begin() + (last - begin());
    T* kept_end = std::move(to, end(), from);
    std::destroy(kept_end, end());
    block_->size -= static_cast<uint32_t>(to - from);
    if (block_->size == 0) clear();
    return from;
  }

 private:
  struct Block {
    uint32_t size;
    uint32_t capacity;
  };
  static_assert(alignof(T) <= sizeof(Block), "elements follow the 8-byte header unpadded");

  T* Elements() const {
    return block_ == nullptr ? nullptr
                             : std::launder(reinterpret_cast<T*>(reinterpret_cast<char*>(block_) +
                                                                 sizeof(Block)));
  }
  void MakeRoomForOne() {
    const size_t n = size();
    if (n == capacity()) Relocate(n + std::max<size_t>(2, n / 2));
  }
  // Moves the elements into a new block of `capacity` (>= size()).
  void Relocate(size_t capacity) {
    void* memory = ::operator new(sizeof(Block) + capacity * sizeof(T));
    Block* grown =
        new (memory) Block{static_cast<uint32_t>(size()), static_cast<uint32_t>(capacity)};
    T* to = reinterpret_cast<T*>(static_cast<char*>(memory) + sizeof(Block));
    if (block_ != nullptr) {
      std::uninitialized_move(begin(), end(), to);
      std::destroy(begin(), end());
      ::operator delete(block_);
    }
    block_ = grown;
  }

  Block* block_ = nullptr;
};

}  // namespace bucketd
