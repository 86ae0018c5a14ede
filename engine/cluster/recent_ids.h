#pragma once
// The ids of the records a partition's fold applied within the cluster's idempotency window
// (docs/cluster.md, "Idempotency"): a record whose id is here is a second copy (a producer's
// retry after JetStream's duplicate window, a record stored twice) and is skipped. What is
// here depends only on the partition's stream (ids and instants of the records folded), so
// every fold of the partition skips the same records, and the set travels in snapshots.
//
// Why hashes in a flat set and a queue by instant: an id is 8 bytes of xxh64 (a collision
// between two records of one partition within the window is ~3e-8 at a million ids), the
// set answers a lookup in one probe, and expiry pops the queue's front, oldest first, as the
// fold's time moves on: 29-36 bytes per id remembered (measured: docs/cluster.md).
//
// Threading: the fold's thread.
#include <absl/container/flat_hash_set.h>

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "bucketd/status.h"
#include "bucketd/types.h"

namespace bucketd::cluster {

class RecentIds {
 public:
  // window_ms 0: nothing is remembered, nothing skipped.
  explicit RecentIds(TimeMs window_ms) : window_ms_(window_ms) {}

  // Called for every record of the partition in stream order, with its instant as the record
  // carries it (not as the fold clamps it: what a fold refuses must not change what is
  // remembered, so that a re-read of the stream that knows nothing of the fold's refusals
  // skips the same records). True when `id` was remembered within the window before the
  // latest instant seen (the caller skips the record); else remembers it. An id of 0 (none)
  // is never skipped nor remembered.
  bool SeenElseRemember(uint64_t id, TimeMs at);

  size_t size() const { return ids_.size(); }
  TimeMs window_ms() const { return window_ms_; }

  // Appends the remembered ids and their instants to `*out`; Decode takes them back.
  void Encode(std::string* out) const;
  // Corruption when `data` is not Encode's; the set is then left empty.
  Status Decode(std::string_view data);

 private:
  struct Entry {
    uint64_t id;
    TimeMs at;
  };
  void Expire(TimeMs now);

  TimeMs window_ms_;
  TimeMs now_ = 0;  // the latest instant seen
  std::deque<Entry> by_instant_;
  absl::flat_hash_set<uint64_t> ids_;
};

}  // namespace bucketd::cluster
