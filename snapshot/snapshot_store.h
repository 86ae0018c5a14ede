#pragma once
// Snapshot files of the fold's State (SPEC §8), in <data_dir>/snapshots, one per log
// position: snapshot-<20-digit log seq>.bkts. A file is
//   56-byte header (magic "BKTSNAP1", format version, log seq, now, payload size, payload
//   XXH3-64, header XXH3-64) | payload: one flatbuffers State (snapshot.fbs)
// Byte layout and encoding: snapshot_format.md. Only this class and snapshot_codec touch
// these files.
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"

namespace bucketd {

struct State;  // engine/state/state.h: the payload, encoded by engine/state/snapshot_codec.h

struct SnapshotFile {
  std::string path;
  uint64_t log_seq = 0;  // the state is the fold of records 1..log_seq
  uint64_t bytes = 0;
};

class SnapshotStore {
 public:
  SnapshotStore(std::string dir, uint32_t keep);
  // Waits for a running background snapshot: it is cheap to let it finish, and a killed
  // one would only leave a temp file behind.
  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // Writes the state atomically (temp file, fsync, rename, fsync dir) and removes
  // all but the newest `keep` files. Blocks for the whole serialization: for on-demand
  // snapshots and tools. The engine's automatic snapshots use StartBackground.
  Status Write(const State& state, SnapshotInfo* info);

  // Starts a snapshot of the state as it is now in a forked child (copy-on-write, as Redis's
  // BGSAVE) and returns at once; the caller keeps mutating the state meanwhile. The pause
  // is the fork itself (copying page tables: ~10 ms per GB of state). At most one runs at
  // a time: FailedPrecondition while one is running. The child writes the same file as
  // Write() would and exits; it makes no RocksDB call and takes no lock.
  Status StartBackground(const State& state);
  // Never blocks. True when a background snapshot has finished since the last call: then
  // `*status` is its outcome and, on success, `*info` describes the file (write_micros is
  // from fork to exit) and the old files beyond `keep` are gone.
  bool PollBackground(Status* status, SnapshotInfo* info);
  // Blocks until the running background snapshot, if any, finishes; false if none ran.
  bool WaitBackground(Status* status, SnapshotInfo* info);
  bool background_running() const { return child_pid_ > 0; }

  // Loads the newest snapshot that passes its checksums and the flatbuffers Verifier and
  // whose state is not later than `max_seq` / `max_at`; each file skipped is reported in
  // `warnings` with its name and the reason. `loaded` is false when no usable snapshot
  // exists (the caller replays all); `*out` is set only when it is true.
  Status LoadNewest(uint64_t max_seq, TimeMs max_at, State* out, bool* loaded,
                    std::vector<std::string>* warnings) const;

  // Moves every snapshot taken at a log position beyond `last_seq` (the log lost its tail
  // after it was taken) into <dir>/set-aside/, reporting each in `warnings`. Such a file
  // is not the fold of this log: once new writes pass its seq it would be loaded, and
  // pruning would keep it over good ones. Moved, not deleted, so an operator can look.
  Status SetAsideBeyond(uint64_t last_seq, std::vector<std::string>* warnings) const;

  // Erasure (SPEC §11): deletes every snapshot but the one at `kept_seq` (taken after the
  // erasure) and everything set aside, since each may hold the erased contact's id. No
  // background snapshot may be running (it would hold the state from before).
  Status RemoveAllBut(uint64_t kept_seq) const;

  // Puts the newest snapshot into `dir` (created if missing) under its own name, for a
  // backup of the data dir: a hard link when `dir` is on the same filesystem, else a copy
  // (fsynced); then `dir` is fsynced. A link is as good as a copy here because a snapshot
  // file is never written after its rename, only unlinked. `*exported` is the file put
  // there (its path in `dir`); `*found` is false, and `dir` empty, when there is none.
  Status ExportNewest(const std::string& dir, SnapshotFile* exported, bool* found) const;

  // Newest first. Only complete files (never temp files).
  std::vector<SnapshotFile> List() const;
  const std::string& dir() const { return dir_; }

 private:
  // Removes all but the newest `keep_` snapshots and temp files no running writer owns.
  void Prune() const;
  bool Reap(bool block, Status* status, SnapshotInfo* info);

  std::string dir_;
  uint32_t keep_;
  pid_t child_pid_ = -1;
  int child_pipe_ = -1;  // read end: the child's result
  SnapshotInfo child_info_;
  int64_t child_started_us_ = 0;
};

}  // namespace bucketd
