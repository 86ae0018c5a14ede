#include "engine/state/slot_pool.h"

#include <cstddef>
#include <new>
#include <string>
#include <utility>

#include "engine/base/check.h"
#include "engine/state/user.h"

namespace bucketd {
namespace {

void* BlockOf(Slot* slot) {
  return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(slot) & ~(SlotPool::kBlockBytes - 1));
}

}  // namespace

uint64_t* SlotPool::Bitmap(void* block) { return static_cast<uint64_t*>(block); }

Slot* SlotPool::Slots(void* block) {
  return reinterpret_cast<Slot*>(static_cast<std::byte*>(block) + kHeaderBytes);
}

void SlotPool::SetLive(Slot* slot, bool live) {
  void* block = BlockOf(slot);
  const size_t i = static_cast<size_t>(slot - Slots(block));
  const uint64_t bit = uint64_t{1} << (i % kWordBits);
  if (live) {
    Bitmap(block)[i / kWordBits] |= bit;
  } else {
    Bitmap(block)[i / kWordBits] &= ~bit;
  }
}

void SlotPool::AddBlock() {
  BUCKETD_CHECK_MSG(blocks_.size() < kMaxBlocks,
                    "slot pool full: " + std::to_string(blocks_.size()) + " blocks");
  void* block = MapHugeBlock();
  blocks_.push_back(block);
  numbers_[reinterpret_cast<uintptr_t>(block)] = static_cast<uint32_t>(blocks_.size() - 1);
}

SlotPool::SlotPool(SlotPool&& other) noexcept
    : blocks_(std::move(other.blocks_)),
      numbers_(std::move(other.numbers_)),
      current_(std::exchange(other.current_, 0)),
      used_in_current_(std::exchange(other.used_in_current_, 0)),
      free_(std::move(other.free_)),
      live_(std::exchange(other.live_, 0)) {
  other.blocks_.clear();
  other.numbers_.clear();
  other.free_.clear();
}

SlotPool& SlotPool::operator=(SlotPool&& other) noexcept {
  if (this != &other) {
    Release();
    blocks_ = std::move(other.blocks_);
    numbers_ = std::move(other.numbers_);
    current_ = std::exchange(other.current_, 0);
    used_in_current_ = std::exchange(other.used_in_current_, 0);
    free_ = std::move(other.free_);
    live_ = std::exchange(other.live_, 0);
    other.blocks_.clear();
    other.numbers_.clear();
    other.free_.clear();
  }
  return *this;
}

SlotPool::~SlotPool() { Release(); }

void SlotPool::Release() {
  for (void* block : blocks_) {
    for (size_t word = 0; word < kBitmapWords; ++word) {
      for (uint64_t bits = Bitmap(block)[word]; bits != 0; bits &= bits - 1) {
        Slots(block)[word * kWordBits + static_cast<size_t>(__builtin_ctzll(bits))].~Slot();
      }
    }
    UnmapHugeBlock(block);
  }
  blocks_.clear();
  numbers_.clear();
  free_.clear();
  current_ = 0;
  used_in_current_ = 0;
  live_ = 0;
}

std::vector<void*> SlotPool::Reserve(size_t count) {
  if (count <= free_.size()) return {};
  count -= free_.size();
  // Room already mapped: the rest of the current block and any reserved after it.
  const size_t reserved_after = blocks_.empty() ? 0 : blocks_.size() - current_ - 1;
  const size_t available =
      (blocks_.empty() ? 0 : kSlotsPerBlock - used_in_current_) + reserved_after * kSlotsPerBlock;
  if (count <= available) return {};
  const bool was_empty = blocks_.empty();
  const size_t new_blocks = (count - available + kSlotsPerBlock - 1) / kSlotsPerBlock;
  std::vector<void*> reserved;
  try {
    for (size_t i = 0; i < new_blocks; ++i) {
      AddBlock();
      reserved.push_back(blocks_.back());
    }
  } catch (const std::bad_alloc&) {
    // A reservation is only a head start: New() maps (and reports) for real if needed.
  }
  if (was_empty) current_ = used_in_current_ = 0;  // start at block 0
  return reserved;
}

Slot* SlotPool::New() {
  Slot* storage = nullptr;
  if (!free_.empty()) {
    storage = free_.back();
    free_.pop_back();
  } else {
    if (blocks_.empty()) {
      AddBlock();
      current_ = used_in_current_ = 0;
    } else if (used_in_current_ == kSlotsPerBlock) {
      if (current_ + 1 == blocks_.size()) AddBlock();  // none reserved
      ++current_;
      used_in_current_ = 0;
    }
    storage = Slots(blocks_[current_]) + used_in_current_++;
  }
  Slot* slot = new (storage) Slot();
  SetLive(slot, true);
  ++live_;
  return slot;
}

void SlotPool::Adopt(SlotPool&& other) {
  if (this == &other || other.blocks_.empty()) return;
  if (blocks_.empty()) {
    *this = std::move(other);
    return;
  }
  // The other pool's blocks go in front of this one's current block, so New() keeps
  // carving where it was. What the other had not carved yet (the rest of its current block
  // and its reserved blocks) is reused through the free list.
  for (size_t b = other.current_; b < other.blocks_.size(); ++b) {
    const size_t carved = b == other.current_ ? other.used_in_current_ : 0;
    for (size_t i = carved; i < kSlotsPerBlock; ++i) free_.push_back(Slots(other.blocks_[b]) + i);
  }
  free_.insert(free_.end(), other.free_.begin(), other.free_.end());
  BUCKETD_CHECK_MSG(blocks_.size() + other.blocks_.size() <= kMaxBlocks,
                    "slot pool full: " + std::to_string(blocks_.size()) + " + " +
                        std::to_string(other.blocks_.size()) + " blocks");
  blocks_.insert(blocks_.begin(), other.blocks_.begin(), other.blocks_.end());
  current_ += other.blocks_.size();
  // Every block has a new number: the indices taken before are stale now.
  for (size_t b = 0; b < blocks_.size(); ++b) {
    numbers_[reinterpret_cast<uintptr_t>(blocks_[b])] = static_cast<uint32_t>(b);
  }
  live_ += other.live_;
  other.blocks_.clear();
  other.numbers_.clear();
  other.free_.clear();
  other.current_ = other.used_in_current_ = other.live_ = 0;
}

void SlotPool::Delete(Slot* slot) {
  SetLive(slot, false);
  slot->~Slot();
  free_.push_back(slot);
  --live_;
}

}  // namespace bucketd
