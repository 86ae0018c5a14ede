#include "engine/state/user_arena.h"

#include <new>
#include <utility>

#include "engine/base/huge_block.h"
#include "engine/state/user.h"

namespace bucketd {
namespace {

constexpr size_t kUsersPerBlock = kHugeBlockBytes / sizeof(User);
static_assert(alignof(User) <= kHugeBlockBytes);

User* Users(void* block) { return static_cast<User*>(block); }

}  // namespace

UserArena::UserArena(UserArena&& other) noexcept
    : blocks_(std::move(other.blocks_)), current_(std::exchange(other.current_, 0)) {
  other.blocks_.clear();
}

UserArena& UserArena::operator=(UserArena&& other) noexcept {
  if (this != &other) {
    Release();
    blocks_ = std::move(other.blocks_);
    current_ = std::exchange(other.current_, 0);
    other.blocks_.clear();
  }
  return *this;
}

UserArena::~UserArena() { Release(); }

void UserArena::Release() {
  for (const Block& block : blocks_) {
    for (size_t i = 0; i < block.used; ++i) Users(block.memory)[i].~User();
    UnmapHugeBlock(block.memory);
  }
  blocks_.clear();
  current_ = 0;
}

User* UserArena::New() {
  if (blocks_.empty()) {
    blocks_.push_back(Block{MapHugeBlock(), 0});
    current_ = 0;
  } else if (blocks_[current_].used == kUsersPerBlock) {
    if (current_ + 1 == blocks_.size()) blocks_.push_back(Block{MapHugeBlock(), 0});
    ++current_;
  }
  Block& block = blocks_[current_];
  // Default-initialization (no parentheses): the members' initializers run, no memset.
  return new (Users(block.memory) + block.used++) User;
}

std::vector<void*> UserArena::Reserve(size_t count) {
  const size_t left = blocks_.empty() ? 0 : kUsersPerBlock - blocks_[current_].used;
  const size_t reserved_after = blocks_.empty() ? 0 : blocks_.size() - current_ - 1;
  const size_t available = left + reserved_after * kUsersPerBlock;
  if (count <= available) return {};
  const size_t new_blocks = (count - available + kUsersPerBlock - 1) / kUsersPerBlock;
  std::vector<void*> reserved;
  try {
    for (size_t i = 0; i < new_blocks; ++i) {
      blocks_.push_back(Block{MapHugeBlock(), 0});
      reserved.push_back(blocks_.back().memory);
    }
  } catch (const std::bad_alloc&) {
    // A reservation is only a head start: New() maps (and reports) for real if needed.
  }
  return reserved;
}

void UserArena::Adopt(UserArena&& other) {
  if (this == &other || other.blocks_.empty()) return;
  if (blocks_.empty()) {
    *this = std::move(other);
    return;
  }
  // The other arena's carved blocks go in front of this one's current block, so New()
  // keeps carving where it was; its untouched reserved blocks are returned.
  std::vector<Block> taken;
  for (const Block& block : other.blocks_) {
    if (block.used > 0) {
      taken.push_back(block);
    } else {
      UnmapHugeBlock(block.memory);
    }
  }
  blocks_.insert(blocks_.begin() + static_cast<std::ptrdiff_t>(current_), taken.begin(),
                 taken.end());
  current_ += taken.size();
  other.blocks_.clear();
  other.current_ = 0;
}

size_t UserArena::reserved_bytes() const { return blocks_.size() * kHugeBlockBytes; }

}  // namespace bucketd
