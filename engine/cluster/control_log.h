#pragma once
// The cluster's control log (docs/cluster.md, "Control records"): definition changes
// (define, enable, disable, delete) and manual clock moves reach every partition, and every
// partition must fold them in the same order, or two nodes changing definitions at once
// would leave partitions with different definitions. So a control record is first appended
// to one subject of the input stream, `bucketd.<cluster>.in.ctl`, fenced on the subject's
// last message (one writer at a time: its stream sequence is its place in a total order),
// then fanned out to every partition with that place in `controlSeq` and message ids
// `ctl-<place>-<partition>`, and the fan-out is then marked complete on
// `bucketd.<cluster>.in.ctl-done`. A writer appends only once the record before its own is
// marked complete, so a partition receives the control records in the log's order.
//
// Nothing is published twice while writers finish what they start: JetStream 2.9 replicates
// every publish of a message id it stored already (it finds the duplicate only when it applies
// it), and enough of those make a replica that restarts store messages a second time and
// shift its sequences (docs/cluster.md, "Control records"). A record whose fan-out is not
// marked complete `abandoned_after_ms` after its append (its writer died, or gave up on a
// NATS fault) is completed by whoever looks next: the next writer, or any node's round
// (CompleteLast). Copies a partition already holds are deduplicated by their ids within the
// duplicate window; after it, a partition's fold skips a copy at or below the last place it
// folded, so each record is folded once.
//
// Threading: one thread at a time.
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/base/record.h"
#include "engine/cluster/partition_stream.h"

namespace bucketd::cluster {

class ControlLog {
 public:
  // What the control log says, as far as this reader has read it.
  struct View {
    std::set<std::string> buckets;  // defined and not deleted since
  };
  // How long a writer has to fan its record out and mark it complete before others complete
  // it: two of PublishBatch's waits for acks at the default 5 s timeout. Longer only delays the
  // completion of an abandoned fan-out; shorter makes a slow writer's copies be published twice.
  static constexpr TimeMs kAbandonedAfterMs = 10'000;

  // REQUIRES: `stream` outlives this.
  explicit ControlLog(PartitionStream* stream, TimeMs abandoned_after_ms = kAbandonedAfterMs);

  // Appends `record` (IsControl(kind)) once the record before it reached every partition
  // (waiting up to abandoned_after_ms for its writer to mark it, then completing it) and
  // `check` accepts the log read through that record (its refusal is returned as it is), then
  // fans it out to every partition and marks that; `*control_seq`: its place. Another writer
  // appending meanwhile: read again and retry. IoError when JetStream cannot take it: the
  // record may be in the log, and whoever writes next (or a node's round) fans it out.
  Status Append(Record record, const std::function<Status(const View&)>& check,
                uint64_t* control_seq);
  // Fans the log's last record out to every partition when its writer has not marked it
  // complete within abandoned_after_ms (it died between its append and the end of its
  // fan-out); never waits. One request when this log knows the record complete, two else.
  Status CompleteLast();

  // The records this log fanned out (its own appends, and the completions it made).
  uint64_t fan_outs() const { return fan_outs_; }

 private:
  struct Last {
    bool found = false;
    uint64_t seq = 0;
    Record record;
    TimeMs stored_at_ms = 0;
  };
  // Done when the fan-out of `last` is marked complete; else its writer may still be at it:
  // `wait`: until it is abandoned, then it is completed here; not `wait`: only if abandoned.
  Status Complete(const Last& last, bool wait);
  // The record at `seq` to every partition, with ids that make a second time a no-op, then
  // the mark that it is complete.
  Status FanOut(uint64_t seq, Record record);
  // Reads the log's records through `through_seq` into view_.
  Status ReadThrough(uint64_t through_seq);

  PartitionStream* stream_;
  const TimeMs abandoned_after_ms_;
  View view_;
  uint64_t read_through_ = 0;
  std::unique_ptr<SubjectTail> tail_;
  // The last record known to have reached every partition: nothing to complete up to it.
  uint64_t fanned_out_ = 0;
  // The last record this log appended: its fan-out, if unfinished, is this log's to redo.
  uint64_t appended_ = 0;
  uint64_t fan_outs_ = 0;
};

}  // namespace bucketd::cluster
