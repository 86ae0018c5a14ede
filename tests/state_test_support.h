#pragma once
// For tests that reach inside: snapshots into a Fold the engine's way (decode a State, then
// Fold::Restore), and a copy of a fold's state that a test may change.
#include <cstdlib>
#include <string>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "engine/fold/fold.h"
#include "engine/state/snapshot_codec.h"
#include "snapshot/snapshot_store.h"

namespace bucketd::testing {

inline Status DecodeInto(const uint8_t* payload, size_t size, Fold* fold, size_t threads = 0) {
  State state;
  if (Status s = DecodeSnapshot(payload, size, &state, threads); !s.ok()) return s;
  return fold->Restore(std::move(state));
}

inline Status LoadNewestInto(const SnapshotStore& store, uint64_t max_seq, TimeMs max_at,
                             Fold* fold, bool* loaded, std::vector<std::string>* warnings) {
  State state;
  Status s = store.LoadNewest(max_seq, max_at, &state, loaded, warnings);
  if (!s.ok() || !*loaded) return s;
  return fold->Restore(std::move(state));
}

// Encoded and decoded: plain data, without the tables a Fold::Restore derives.
inline State CopyState(const State& state) {
  flatbuffers::DetachedBuffer payload;
  State copy;
  if (!EncodeSnapshot(state, &payload).ok() ||
      !DecodeSnapshot(payload.data(), payload.size(), &copy).ok()) {
    std::abort();
  }
  return copy;
}

}  // namespace bucketd::testing
