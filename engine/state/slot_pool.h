#pragma once
// Where slots live. There is one slot per tracked (user, bucket) pair, so a big state has
// tens of millions: allocating each with malloc cost a heap header per slot, a malloc
// call per slot on ingest and snapshot load, and a page fault per 4 KiB of fresh slots
// (a third of snapshot load time when measured). The pool carves slots out of 2 MiB
// blocks advised as huge pages and recycles freed ones, so none of that is paid per slot.
//
// Not thread-safe: the fold owns its pool, like the rest of State.
#include <cstddef>
#include <cstdint>
#include <vector>

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
  // be merged without moving a slot: pointers to them stay valid.
  void Adopt(SlotPool&& other);

  // Maps blocks for `count` more slots up front and returns them, in the order New() will
  // use them, for PrefaultInBackground (huge_block.h).
  std::vector<void*> Reserve(size_t count);
  size_t live() const { return live_; }
  size_t reserved_bytes() const { return blocks_.size() * kBlockBytes; }

  static constexpr size_t kBlockBytes = kHugeBlockBytes;

 private:
  void Release();

  // Each block starts with a bitmap of its live slots (constructed, not deleted), found
  // from any slot by masking its address: blocks are aligned to their size.
  std::vector<void*> blocks_;
  size_t current_ = 0;          // the block New() carves from; later ones are reserved
  size_t used_in_current_ = 0;  // slots handed out of it so far
  std::vector<Slot*> free_;     // deleted slots, reused first
  size_t live_ = 0;
};

}  // namespace bucketd
