#pragma once
// One partition's state, folded from its stream as the partition's owner does
// (docs/cluster.md, "The record on the stream"): each record at its stream sequence (the gaps
// are other partitions' records), at max(its instant, the partition's now), a record whose id
// the fold applied within the cluster's idempotency window skipped ("Idempotency"), and a
// definition that needs history it did not retain re-reads it from the same stream. The same
// stream gives the same state and the same transitions, whoever folds it.
//
// Threading: one thread, like the Fold it owns.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/cluster/partition_stream.h"
#include "engine/cluster/recent_ids.h"
#include "engine/fold/fold.h"

namespace bucketd::cluster {

class PartitionFold {
 public:
  // How long a history re-read keeps retrying a failing read before the fold gives up (and
  // the process stops: see ReadHistory).
  static constexpr std::chrono::seconds kHistoryPatience{120};

  // REQUIRES: `stream` outlives this; partition < stream->partitions().
  PartitionFold(PartitionStream* stream, uint32_t partition);
  PartitionFold(const PartitionFold&) = delete;
  PartitionFold& operator=(const PartitionFold&) = delete;

  // Folds the records from the position on, up to the partition's last record when the call
  // began and at most kCatchUpRecordsMax of them, appending the transitions they caused to
  // `*out`; `*caught_up` (if given): the position reached that last record. Given `until`,
  // it also stops after the first read that ends past that instant (at least one read each
  // call). IoError if the stream cannot be read (what was folded before the error stays
  // folded; call again to resume).
  Status CatchUp(std::vector<Transition>* out, bool* caught_up = nullptr,
                 std::optional<std::chrono::steady_clock::time_point> until = std::nullopt);
  static constexpr size_t kCatchUpRecordsMax = 50'000;

  // The partition as a snapshot payload, at position next_seq() - 1: the state (the state
  // layer's encoding) in its first `*state_bytes`, then what the fold keeps beside it (the
  // last message read, the record ids remembered).
  Status EncodeSnapshot(std::string* payload, uint64_t* state_bytes) const;
  // Takes a snapshot payload taken at input-stream position `input_seq`, where the last
  // control record folded was `control_seq`; the next catch-up reads from input_seq + 1.
  // `state_bytes`: EncodeSnapshot's (a payload of the state alone, as older snapshots are, has
  // it equal to its size). FailedPrecondition unless nothing was folded yet; Corruption when
  // the stream's leader does not hold the last message the snapshot's fold read (a snapshot of
  // another stream of the same name, or of a history the leader no longer has); IoError when
  // the leader could not be asked. Nothing is taken on an error.
  Status RestoreSnapshot(std::string_view payload, uint64_t state_bytes, uint64_t input_seq,
                         uint64_t control_seq);

  const Fold& fold() const { return fold_; }
  uint32_t partition() const { return partition_; }
  // The stream sequence the next record is read from.
  uint64_t next_seq() const { return next_seq_; }
  // Records the fold refused (changing nothing), and messages that were not records.
  uint64_t refused() const { return refused_; }
  // Messages of the partition read since this fold began (records and not), for snapshot
  // cadence.
  uint64_t records_read() const { return records_read_; }
  uint64_t undecodable() const { return undecodable_; }
  // The last control record folded (its control_seq), and the copies of control records
  // folded already that were skipped (a fan-out completed twice, past the duplicate window).
  uint64_t control_seq() const { return control_seq_; }
  uint64_t control_copies_skipped() const { return control_copies_skipped_; }
  // The partition's last stream sequence when the last CatchUp looked (0 before one): the
  // fold is behind by the partition's messages in (next_seq() - 1, this].
  uint64_t stream_last_seq() const { return stream_last_seq_; }
  // Records skipped because the fold had applied a record of the same id within the
  // idempotency window, and how many ids it remembers now.
  uint64_t duplicates_skipped() const { return duplicates_skipped_; }
  size_t ids_remembered() const { return recent_ids_.size(); }
  // Runs of messages a replica delivered that the stream's leader did not confirm (read
  // again through the leader; SubjectTail).
  uint64_t replica_mismatches() const;
  // The last message of the partition read, as the leader held it.
  const StreamPoint& anchor() const { return anchor_; }

 private:
  void Apply(Record record, uint64_t id, std::vector<Transition>* out);
  Status ReadHistory(uint64_t before_seq, const Fold::RecordsVisitor& visit);

  PartitionStream* stream_;
  uint32_t partition_;
  // Kept open between catch-ups (created at the first, re-created after a read error).
  std::unique_ptr<SubjectTail> tail_;
  Fold fold_;
  uint64_t stream_last_seq_ = 0;
  uint64_t control_seq_ = 0;
  uint64_t control_copies_skipped_ = 0;
  uint64_t next_seq_ = 1;
  StreamPoint anchor_;
  RecentIds recent_ids_;
  uint64_t duplicates_skipped_ = 0;
  uint64_t replica_mismatches_before_ = 0;  // of the readers replaced
  uint64_t refused_ = 0;
  uint64_t undecodable_ = 0;
  uint64_t records_read_ = 0;
};

}  // namespace bucketd::cluster
