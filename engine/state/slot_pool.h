#pragma once
// Where slots live. There is one slot per tracked (user, bucket) pair, so a big state has
// tens of millions: allocating each with malloc cost a heap header per slot, a malloc
// call per slot on ingest and snapshot load, and a page fault per 4 KiB of fresh slots
// (a third of snapshot load time when measured). The pool carves slots out of 2 MiB
// blocks advised as huge pages and recycles freed ones, so none of that is paid per slot.
//
// A slot also has a 32-bit index in its pool (IndexOf, At): its block's number << 16 | its
// position in the block. The time indices file slots by index, 12 bytes an entry instead
// of 16 with a pointer (due_index.h). The pool finds a block's number by its address in a
// small table (not in the block's header: every header sits at the same offset in a 2 MiB
// huge page, so all of them share one cache set and evict each other; that slowed a 10M
// sweep measurably). Adopt renumbers the blocks, which makes every index taken before it
// stale.
//
// Not thread-safe: the fold owns its pool, like the rest of State.
#include <cstddef>
#include <cstdint>
#include <vector>

#include <absl/container/flat_hash_map.h>

#include "engine/base/check.h"
#include "engine/base/huge_block.h"
#include "engine/state/user.h"

namespace bucketd {

class SlotPool {
 public:
  SlotPool() = default;
  SlotPool(SlotPool&& other) noexcept;
  SlotPool& operator=(SlotPool&& other) noexcept;
  SlotPool(const SlotPool&) = delete;
  SlotPool& operator=(const SlotPool&) = delete;
  ~SlotPool();  // destroys the slots still live

  Slot* New();  // a default-constructed slot
  void Delete(Slot* slot);
  // Takes over every slot of `other` (which ends empty), so that states folded apart can
  // be merged without moving a slot: pointers to them stay valid. Indices do not: the
  // blocks are renumbered, so an index taken before (IndexOf) no longer finds its slot.
  void Adopt(SlotPool&& other);

  // The slot's index. REQUIRES: a slot of this pool (checked: its block must be one).
  uint32_t IndexOf(const Slot* slot) const {
    const auto address = reinterpret_cast<uintptr_t>(slot);
    const uintptr_t block = address & ~(kBlockBytes - 1);
    const auto number = numbers_.find(block);
    BUCKETD_CHECK_MSG(number != numbers_.end(), "a slot of another pool");
    const auto position = static_cast<uint32_t>((address - block - kHeaderBytes) / sizeof(Slot));
    return number->second << kPositionBits | position;
  }
  // The slot with that index. REQUIRES: an index of this pool's, taken since its last Adopt.
  // A shift, a load of the (hot) block list and an add: no cache miss of its own.
  Slot* At(uint32_t index) const {
    return reinterpret_cast<Slot*>(static_cast<std::byte*>(blocks_[index >> kPositionBits]) +
                                   kHeaderBytes) +
           (index & kPositionMask);
  }

  // Maps blocks for `count` more slots up front and returns them, in the order New() will
  // use them, for PrefaultInBackground (huge_block.h).
  std::vector<void*> Reserve(size_t count);
  size_t live() const { return live_; }
  size_t reserved_bytes() const { return blocks_.size() * kBlockBytes; }

  static constexpr size_t kBlockBytes = kHugeBlockBytes;
  // Never an index of a slot (no block holds 2^16 slots): "no slot" where indices are kept.
  static constexpr uint32_t kNoIndex = UINT32_MAX;
  // A block's number has 16 bits: a pool holds at most 2^16 blocks (128 GiB of slots),
  // checked in every build where a block is added.
  static constexpr size_t kMaxBlocks = size_t{1} << 16;

 private:
  static constexpr int kPositionBits = 16;
  static constexpr uint32_t kPositionMask = (uint32_t{1} << kPositionBits) - 1;
  // A block's header: the bitmap of its live slots.
  static constexpr size_t kWordBits = 64;
  static constexpr size_t kBitmapWords = (kBlockBytes / sizeof(Slot) + kWordBits - 1) / kWordBits;
  static constexpr size_t kHeaderBytes =
      (kBitmapWords * sizeof(uint64_t) + alignof(Slot) - 1) / alignof(Slot) * alignof(Slot);

 public:
  static constexpr size_t kSlotsPerBlock = (kBlockBytes - kHeaderBytes) / sizeof(Slot);
  static_assert(kSlotsPerBlock < kPositionMask, "a position in 16 bits, and kNoIndex never one");

 private:
  static uint64_t* Bitmap(void* block);
  static Slot* Slots(void* block);
  static void SetLive(Slot* slot, bool live);
  void Release();
  // Maps a block at the end of blocks_. Checks the pool has room for it.
  void AddBlock();

  // Each block starts with a bitmap of its live slots (constructed, not deleted), found
  // from any slot by masking its address: blocks are aligned to their size.
  std::vector<void*> blocks_;
  absl::flat_hash_map<uintptr_t, uint32_t> numbers_;  // a block's address: its place in blocks_
  size_t current_ = 0;          // the block New() carves from; later ones are reserved
  size_t used_in_current_ = 0;  // slots handed out of it so far
  std::vector<Slot*> free_;     // deleted slots, reused first
  size_t live_ = 0;
};

}  // namespace bucketd
