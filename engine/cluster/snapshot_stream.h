#pragma once
// Partition snapshots kept in JetStream (docs/cluster.md, "Snapshots in JetStream"), so that a
// partition's new owner starts from a recent state instead of the start of the stream, and
// needs nothing of the old owner's disk. Stream BUCKETD_SNAP_<cluster>: a snapshot is its
// payload (the state layer's snapshot encoding) in chunks on bucketd.<cluster>.snap.<p>.chunks,
// then a manifest on bucketd.<cluster>.snap.<p>.manifest naming them with their checksum and
// the input-stream position the state is at. The last two manifests and their chunks are
// kept; older ones are purged.
//
// Threading: one thread at a time.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/cluster/nats_connection.h"

namespace bucketd::cluster {

// A snapshot chunk is at most this many bytes (NATS's default largest message is 1 MiB).
inline constexpr size_t kSnapshotChunkBytes = 512 * 1024;

struct SnapshotManifest {
  std::string id;               // unique: "<inputSeq>-<node>-<n>"
  uint64_t input_seq = 0;       // the last input-stream sequence the state folded
  uint64_t transition_seq = 0;  // the partition's transitions up to it
  uint64_t control_seq = 0;     // the last control record folded (0 in manifests before it)
  uint64_t chunks = 0;
  uint64_t bytes = 0;
  // The payload's first state_bytes are the state; the rest is what the partition's fold
  // keeps beside it (PartitionFold::EncodeSnapshot). Absent in older manifests: bytes.
  uint64_t state_bytes = 0;
  uint64_t xxh64 = 0;      // of the whole payload
  uint64_t first_seq = 0;  // the snapshot stream sequence of its first chunk
};

// The manifest as JSON, the one encoding of it (in JetStream and in a node's local store).
std::string SnapshotManifestJson(const SnapshotManifest& manifest);
Status ParseSnapshotManifest(std::string_view json, SnapshotManifest* manifest);

struct SnapshotOptions {
  std::string cluster = "default";
  int replicas = 3;
};

class SnapshotStream {
 public:
  static Status Open(std::shared_ptr<NatsConnection> nats, const SnapshotOptions& options,
                     std::unique_ptr<SnapshotStream>* out);

  const std::string& stream_name() const { return stream_name_; }

  // Stores `payload` as the partition's newest snapshot (chunks, then the manifest), then
  // purges all but the last two. `manifest` has id, input_seq and transition_seq set; the
  // rest is filled in.
  Status Publish(uint32_t partition, std::string_view payload, SnapshotManifest* manifest);
  // The partition's newest snapshot: `*found` false when it has none. Corruption when its
  // chunks are missing or fail the checksum (the caller folds from the start instead).
  Status Latest(uint32_t partition, SnapshotManifest* manifest, std::string* payload, bool* found);
  // Its manifest alone (one request).
  Status LatestManifest(uint32_t partition, SnapshotManifest* manifest, bool* found) {
    return LastManifest(partition, manifest, found);
  }

 private:
  SnapshotStream(std::shared_ptr<NatsConnection> nats, const SnapshotOptions& options);
  Status EnsureStream();
  std::string ChunkSubject(uint32_t partition) const;
  std::string ManifestSubject(uint32_t partition) const;
  Status LastManifest(uint32_t partition, SnapshotManifest* manifest, bool* found);

  std::shared_ptr<NatsConnection> nats_;
  SnapshotOptions options_;
  std::string stream_name_;
};

}  // namespace bucketd::cluster
