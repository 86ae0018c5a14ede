#pragma once
// A node's own copy of the snapshots it takes of its partitions (docs/cluster.md, "Local
// snapshots"): a RocksDB in the node's data dir, one snapshot per partition (the newest this
// node took: its payload and its manifest, whose input_seq is the partition's stream position
// the state is at). A node that restarts takes its partitions back from here instead of
// transferring JetStream's copies, and a JetStream snapshot that is missing or damaged has a
// second copy on the node that took it. JetStream's copy stays the one every node can reach.
//
// Threading: one thread at a time (RocksDB itself is thread-safe; nothing here needs more).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "bucketd/status.h"
#include "engine/cluster/snapshot_stream.h"

namespace rocksdb {
class DB;
}

namespace bucketd::cluster {

class LocalStore {
 public:
  // Opens the store at `path`, creating it. IoError when it cannot (another process holds it:
  // two nodes must not share a data dir).
  static Status Open(const std::string& path, std::unique_ptr<LocalStore>* out);
  ~LocalStore();
  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;

  // Replaces the partition's snapshot (of input stream `stream`) with `payload`, durably
  // (fsync'd) before it returns. `manifest` as for SnapshotStream::Publish; bytes and xxh64
  // are set here (chunks and first_seq mean nothing locally: 0).
  Status Put(std::string_view stream, uint32_t partition, SnapshotManifest manifest,
             std::string_view payload);
  // The partition's manifest: `*found` false when there is none.
  Status GetManifest(std::string_view stream, uint32_t partition, SnapshotManifest* manifest,
                     bool* found);
  // The partition's snapshot, checked against its manifest's size and checksum (Corruption
  // when it fails them).
  Status Get(std::string_view stream, uint32_t partition, SnapshotManifest* manifest,
             std::string* payload, bool* found);
  // Forgets the partition's snapshot (handed over: the next owner's are newer).
  Status Remove(std::string_view stream, uint32_t partition);

 private:
  explicit LocalStore(rocksdb::DB* db) : db_(db) {}
  rocksdb::DB* db_;
};

}  // namespace bucketd::cluster
