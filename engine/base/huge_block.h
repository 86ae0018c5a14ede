#pragma once
// Fixed 2 MiB blocks of memory for the pools that hold the state's many small objects
// (slot_pool.h, user_arena.h). Each is aligned to its size and advised as a huge page, so
// the kernel faults it in once instead of 512 times, and it can be faulted in ahead of use
// on another core: zeroing fresh pages was a third of snapshot load time when measured.
#include <cstddef>
#include <thread>
#include <vector>

namespace bucketd {

inline constexpr size_t kHugeBlockBytes = size_t{2} << 20;

// A fresh, zeroed block aligned to kHugeBlockBytes. Throws std::bad_alloc.
void* MapHugeBlock();
void UnmapHugeBlock(void* block);

// Tells LeakSanitizer, in sanitizer builds (nothing otherwise), that the malloc'd `block`
// is owned through a pointer it cannot find: one packed into 48 bits (InstantList's heap
// form), which its scan for whole aligned words does not read as a pointer, so a live
// engine's blocks would be reported as leaked by libFuzzer's per-input leak check. Such a
// block is still freed by its owner; only the report is withheld.
void KeepFromLeakReports(void* block);

// Faults the blocks of every list in on a background thread (joined when the returned
// thread is destroyed), in MergeByProgress order: a decoder filling users and slots
// together finds both ready. The thread touches page tables only, never the blocks'
// contents. Kernels without MADV_POPULATE_WRITE (before 5.14) skip it; the blocks then
// fault in on first use.
[[nodiscard]] std::jthread PrefaultInBackground(const std::vector<std::vector<void*>>& lists);

// The lists' blocks in one order that keeps every list at the same relative pace: next
// is always a block of the list least far along (ties to the earlier list).
std::vector<void*> MergeByProgress(const std::vector<std::vector<void*>>& lists);

}  // namespace bucketd
