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
// The user is found by the id's hash alone (UserIndex::FindByHash) and its id compared
// only when the input is applied, once the user's memory has arrived.
#include <algorithm>
#include <array>
#include <cstddef>
#include <string_view>

#include "engine/fold/fold.h"

namespace bucketd {

class Fold::Lookahead {
 public:
  explicit Lookahead(const Fold& fold) : fold_(fold) {}

  // Call before applying input `i` of a run of `count` inputs, for i = 0, 1, ... in order
  // (a new run starts again at 0). `user_id(j)` names input j's user (empty: none).
  template <typename UserIdAt>
  void Advance(size_t i, size_t count, const UserIdAt& user_id) {
    if (i == 0) {
      // A run starts with the first stage for the inputs before the pipeline's reach too,
      // so that short runs (small ingest batches) are not left out entirely.
      ring_.fill(Entry{});
      for (size_t j = 0; j < std::min(count, 4 * kDistance); ++j) StartLookup(j, user_id(j));
    }
    if (const size_t j = i + 4 * kDistance; j < count) StartLookup(j, user_id(j));
    if (const size_t j = i + 3 * kDistance; j < count) {
      Entry& e = ring_[j % kRing];
      if (e.input == j) {
        // By hash alone: comparing ids would wait for the user's memory, which this
        // stage only starts fetching. user() compares them.
        e.user = fold_.state_.user_ids.FindByHash(e.hash);
        if (e.user != nullptr) fold_.PrefetchUserState(e.user, 1);
      }
    }
    for (int stage = 2; stage < kPrefetchStages; ++stage) {
      const size_t j = i + static_cast<size_t>(kPrefetchStages - stage) * kDistance;
      if (const Entry& e = ring_[j % kRing]; e.input == j && e.user != nullptr) {
        fold_.PrefetchUserState(e.user, stage);
      }
    }
  }

  // Advance over a run of log records that another thread decoded (replay): each record is
  // in that thread's core's cache, so it is fetched too, before the lookahead reads its
  // user id. `record(j)` is the run's record j.
  template <typename RecordAt>
  void AdvanceOverRecords(size_t i, size_t count, const RecordAt& record) {
    if (const size_t j = i + kRecordDistance; j < count) {
      const auto* bytes = reinterpret_cast<const char*>(&record(j));
      for (size_t offset = 0; offset < sizeof(Record); offset += 64) {
        __builtin_prefetch(bytes + offset);
      }
    }
    // Then what the record owns on the heap and the apply reads: its email (compared with
    // the contact's) and its property patches (checked, then applied).
    if (const size_t j = i + kRecordHeapDistance; j < count) {
      const Record& r = record(j);
      if (r.email) __builtin_prefetch(r.email->data());
      if (!r.patch().empty()) {
        const auto* bytes = reinterpret_cast<const char*>(r.patch().data());
        const size_t size = r.patch().size() * sizeof(PropertyPatch);
        for (size_t offset = 0; offset < size; offset += 64) __builtin_prefetch(bytes + offset);
      }
    }
    Advance(i, count, [&](size_t j) -> std::string_view { return record(j).user_id; });
  }

  // Input i's user (`id` names it) as found a few inputs earlier, or nullptr if it was
  // not found then (a new user; a run's first inputs; another id with the same hash).
  User* user(size_t i, std::string_view id) const {
    const Entry& e = ring_[i % kRing];
    if (e.input != i || e.user == nullptr || e.user->id != id) return nullptr;
    return e.user;
  }

 private:
  // Stage 0: hashes input j's id and fetches its place in the id map.
  void StartLookup(size_t j, std::string_view id) {
    if (id.empty()) return;
    const uint64_t hash = UserIndex::Hash(id);
    ring_[j % kRing] = Entry{j, hash, nullptr};
    fold_.state_.user_ids.Prefetch(hash);
  }

  static constexpr size_t kDistance = 4;                    // inputs between two stages
  static constexpr size_t kRecordDistance = 6 * kDistance;  // before stage 0 reads the id
  static constexpr size_t kRecordHeapDistance = 2 * kDistance;
  static constexpr size_t kRing = 32;  // > 4 * kDistance: inputs in flight
  static_assert(kRing > 4 * kDistance);

  struct Entry {
    size_t input = SIZE_MAX;
    uint64_t hash = 0;
    User* user = nullptr;  // by hash: the id is not compared yet
  };

  const Fold& fold_;
  std::array<Entry, kRing> ring_{};
};

}  // namespace bucketd
