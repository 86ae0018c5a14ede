#pragma once
// Converts the fold's State to and from a snapshot payload (snapshot.fbs, encoding in
// snapshot_format.md). The file around the payload is SnapshotStore's business.
#include <cstddef>
#include <cstdint>

#include <flatbuffers/flatbuffers.h>

#include "bucketd/status.h"
#include "engine/state/state.h"

namespace bucketd {

// Users between the places where the user stream may be cut for a parallel decode.
inline constexpr uint32_t kSnapshotUsersPerMark = 1 << 16;

// Serializes the whole state. Allocates, but takes no locks and starts no threads, so a
// forked child of a multi-threaded process may call it (SnapshotStore::StartBackground).
// `users_per_mark` is for tests (small states cut into many pieces).
Status EncodeSnapshot(const State& state, flatbuffers::DetachedBuffer* out,
                      uint32_t users_per_mark = kSnapshotUsersPerMark);

// Checks a payload with the flatbuffers Verifier and rebuilds the state from it into `*out`
// (Fold::Restore then rebuilds what is derived). `*out` changes only if it returns OK.
// The user stream is decoded in up to `threads` pieces at once (0: one per core, at most
// 8), where the payload marks places to cut it.
Status DecodeSnapshot(const uint8_t* payload, size_t size, State* out, size_t threads = 0);

}  // namespace bucketd
