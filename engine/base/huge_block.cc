#include "engine/base/huge_block.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>
#include <utility>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUCKETD_LEAK_CHECKED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define BUCKETD_LEAK_CHECKED 1
#endif
#if defined(BUCKETD_LEAK_CHECKED)
#include <sanitizer/lsan_interface.h>
#endif

namespace bucketd {

void* MapHugeBlock() {
  // Mapped directly: an aligned malloc of 2 MiB would reserve twice that.
  constexpr size_t kSize = kHugeBlockBytes;
  void* mapped =
      mmap(nullptr, 2 * kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(mapped);
  const uintptr_t aligned = (start + kSize - 1) & ~(kSize - 1);
  if (aligned > start) munmap(mapped, aligned - start);
  if (aligned + kSize < start + 2 * kSize) {
    munmap(reinterpret_cast<void*>(aligned + kSize), start + 2 * kSize - (aligned + kSize));
  }
  void* block = reinterpret_cast<void*>(aligned);
  // A hint the kernel may ignore.
  madvise(block, kSize, MADV_HUGEPAGE);
#if defined(BUCKETD_LEAK_CHECKED)
  // Users and slots in the block point at heap memory (histories, properties): without this
  // LeakSanitizer, which scans only the heap, stacks and globals, would take what a live
  // engine holds for leaks (a leak check while an engine is open: libFuzzer's per-input one).
  __lsan_register_root_region(block, kSize);
#endif
  return block;
}

void UnmapHugeBlock(void* block) {
#if defined(BUCKETD_LEAK_CHECKED)
  __lsan_unregister_root_region(block, kHugeBlockBytes);
#endif
  munmap(block, kHugeBlockBytes);
}

void KeepFromLeakReports([[maybe_unused]] void* block) {
#if defined(BUCKETD_LEAK_CHECKED)
  __lsan_ignore_object(block);
#endif
}

std::vector<void*> MergeByProgress(const std::vector<std::vector<void*>>& lists) {
  std::vector<void*> order;
  std::vector<size_t> next(lists.size(), 0);
  for (;;) {
    size_t pick = lists.size();
    for (size_t l = 0; l < lists.size(); ++l) {
      if (next[l] == lists[l].size()) continue;
      // next[l] / size[l] < next[pick] / size[pick], without division.
      if (pick == lists.size() || next[l] * lists[pick].size() < next[pick] * lists[l].size()) {
        pick = l;
      }
    }
    if (pick == lists.size()) break;
    order.push_back(lists[pick][next[pick]++]);
  }
  return order;
}

std::jthread PrefaultInBackground(const std::vector<std::vector<void*>>& lists) {
  std::vector<void*> order = MergeByProgress(lists);
  if (order.empty()) return {};
  return std::jthread([order = std::move(order)] {
    for (void* block : order) {
      if (madvise(block, kHugeBlockBytes, MADV_POPULATE_WRITE) != 0) return;
    }
  });
}

}  // namespace bucketd
