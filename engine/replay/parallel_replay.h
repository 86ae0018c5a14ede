#pragma once
// Full replay on several threads.
//
// Why it is exact: a user's state depends only on the records about that user (events,
// contact deletes, manual adds and removes) and on the records about everyone (sweeps,
// clock moves, bucket definitions), each applied in log order. So users are partitioned
// over N shards by a hash of their id; each shard is a Fold of its own, folding its users'
// records and every shared record on its own thread, and at the end the shards are merged
// into the one state a single fold of the log builds (shard_merge.h). Transitions inside a
// shard are numbered without the other shards', but replay emits none: only their count
// is state, and it is summed.
//
// Why it pays: replaying a large state is bound by memory latency (~2 us per record, most
// of it waiting on cache misses), which two cores wait on in parallel. The record reader's
// own thread and this one (routing batches) cost little next to that.
#include <cstdint>

#include "bucketd/status.h"
#include "engine/base/record.h"
#include "engine/fold/fold.h"

namespace bucketd {

struct ParallelReplayOptions {
  uint32_t shards = 2;
  // Stops before the first record whose instant is after this (state as of `until`).
  TimeMs until = kNever;
};

// Folds what `reader` delivers into `fold`, as Fold::Apply on each record in turn would,
// and sets `*replayed` to the number of records folded. A record that does not fold fails
// the replay (Corruption) and leaves `fold` as it was.
// REQUIRES: `fold` is fresh (nothing applied), shards >= 1; its history source, if any,
// may be called from several threads at once.
Status ReplayParallel(RecordBatchReader* reader, const ParallelReplayOptions& options, Fold* fold,
                      uint64_t* replayed);

}  // namespace bucketd
