#pragma once
// Where users live. A state holds one User per contact ever seen (584 bytes with its
// inline arrays, state.h), and users are never freed one by one (a deleted contact keeps
// its User), so they are carved in order out of 2 MiB blocks (huge_block.h) instead of
// being malloc'd: snapshot load reserves the blocks for all its users at once and has
// them faulted in on another core while it decodes, where faulting in a fresh heap was
// about a third of load time.
//
// Not thread-safe: the fold owns its arena, like the rest of State.
#include <cstddef>
#include <vector>

#include "engine/state/user.h"

namespace bucketd {

class UserArena {
 public:
  UserArena() = default;
  UserArena(UserArena&& other) noexcept;
  UserArena& operator=(UserArena&& other) noexcept;
  UserArena(const UserArena&) = delete;
  UserArena& operator=(const UserArena&) = delete;
  ~UserArena();  // destroys every user

  // A default-initialized user: every User field has an initializer, so nothing is zeroed
  // first.
  User* New();
  // Maps blocks for `count` more users up front and returns them, in the order New() will
  // use them, for PrefaultInBackground (huge_block.h).
  std::vector<void*> Reserve(size_t count);
  // Takes over every user of `other` (which ends empty), so that states folded apart can
  // be merged without moving a user: pointers to them stay valid.
  void Adopt(UserArena&& other);

  size_t reserved_bytes() const;

 private:
  struct Block {
    void* memory = nullptr;
    size_t used = 0;  // users constructed in it, in order
  };
  void Release();

  std::vector<Block> blocks_;
  size_t current_ = 0;  // the block New() carves from; later ones are reserved
};

}  // namespace bucketd
