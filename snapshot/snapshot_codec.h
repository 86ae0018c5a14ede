#pragma once
// Converts the fold's State to and from a snapshot payload (snapshot.fbs, encoding in
// snapshot_format.md). The file around the payload is SnapshotStore's business.
#include <cstddef>
#include <cstdint>

#include <flatbuffers/flatbuffers.h>

#include "bucketd/status.h"
#include "engine/fold.h"

namespace bucketd {

// Serializes the whole state. Allocates, but takes no locks and starts no threads, so a
// forked child of a multi-threaded process may call it (SnapshotStore::StartBackground).
Status EncodeSnapshot(const State& state, flatbuffers::DetachedBuffer* out);

// Checks a payload with the flatbuffers Verifier and rebuilds the state from it into
// `fold`, then its derived structures. Nothing in `fold` changes unless it returns OK.
// REQUIRES: `fold` is fresh (nothing applied yet).
Status DecodeSnapshot(const uint8_t* payload, size_t size, Fold* fold);

}  // namespace bucketd
