#pragma once
// Cache warming for loops that know which users their next inputs concern (replay and
// ingest batches). With a big state, applying an input mostly waits on memory: the user
// map, the user, its arrays, its slots, each a miss that depends on the one before. The
// lookahead runs the fold's prefetch stages a few inputs ahead, one stage per distance, so
// that each stage's memory has arrived when the next one reads it.
//
// It also remembers the user it found for each input: the later stages and the apply
// (Fold::Apply's known_user) use it instead of hashing and comparing the id again, three
// or four lookups per input otherwise. That is safe because a fold never destroys a user
// (a deleted contact keeps its User), and a user not found yet is simply looked up again.
#include <array>
#include <cstddef>
#include <string_view>

#include "engine/fold.h"

namespace bucketd {

class Fold::Lookahead {
 public:
  explicit Lookahead(const Fold& fold) : fold_(fold) {}

  // Call before applying input `i` of a run of `count` inputs, for i = 0, 1, ... in order
  // (a new run starts again at 0). `user_id(j)` names input j's user (empty: none).
  template <typename UserIdAt>
  void Advance(size_t i, size_t count, const UserIdAt& user_id) {
    if (i == 0) ring_.fill(Entry{});
    if (const size_t j = i + 4 * kDistance; j < count) fold_.PrefetchUserId(user_id(j));
    if (const size_t j = i + 3 * kDistance; j < count) {
      const std::string_view id = user_id(j);
      User* user = id.empty() ? nullptr : fold_.FindUser(id);
      ring_[j % kRing] = Entry{j, user};
      if (user != nullptr) fold_.PrefetchUserState(user, 1);
    }
    for (int stage = 2; stage < kPrefetchStages; ++stage) {
      const size_t j = i + static_cast<size_t>(kPrefetchStages - stage) * kDistance;
      if (User* user = this->user(j)) fold_.PrefetchUserState(user, stage);
    }
  }

  // Input i's user as found a few inputs earlier, or nullptr if it was not known then (a
  // new user; the first inputs of a run).
  User* user(size_t i) const {
    const Entry& e = ring_[i % kRing];
    return e.input == i ? e.user : nullptr;
  }

 private:
  static constexpr size_t kDistance = 4;  // inputs between two stages
  static constexpr size_t kRing = 16;     // > 3 * kDistance: inputs with a user remembered
  static_assert(kRing > 3 * kDistance);

  struct Entry {
    size_t input = SIZE_MAX;
    User* user = nullptr;
  };

  const Fold& fold_;
  std::array<Entry, kRing> ring_{};
};

}  // namespace bucketd
