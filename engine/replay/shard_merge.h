#pragma once
// Merges the states of replay shards (parallel_replay.h) into one state, equal to the one
// a single fold of the whole log builds.
//
// Each shard numbered what it met in its own order: users, event names and property keys
// got dense ids in order of first appearance *in that shard*. The single fold numbers them
// in order of first appearance in the log, so the merge renumbers everything by the log
// seq where each first appeared (recorded by the shard as it folded). Per-bucket counters
// are summed; time indices and member sets are rebuilt over the renumbered users; slots
// stay where they are (the merged pool adopts the shards' blocks).
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/fold/fold.h"

namespace bucketd {

struct ReplayShard {
  Fold fold;
  // The log seq where each of the shard's users, event names and property keys first
  // appeared, by the shard's own id.
  std::vector<uint64_t> user_first_seq;
  std::vector<uint64_t> event_name_first_seq;
  std::vector<uint64_t> property_key_first_seq;

  // Notes the first appearance of whatever the fold numbered while applying record `seq`.
  void NoteFirstAppearances(uint64_t seq);
};

// Moves the shards' states into `into` (Fold::Release, Fold::Restore). `applied_seq`
// and `now` are the last record folded and its instant (the shards may not all have seen
// it). What is left of the shards may only be destroyed.
// REQUIRES: `into` is fresh; every shard folded the same shared records (sweeps, clock
// moves, definitions) and disjoint sets of users.
Status MergeShards(std::vector<std::unique_ptr<ReplayShard>>* shards, uint64_t applied_seq,
                   TimeMs now, Fold* into);

}  // namespace bucketd
