#pragma once
// The cluster's transitions (docs/cluster.md, "The output stream"): one JetStream stream,
// BUCKETD_OUT_<cluster>, one subject per partition, each message one transition as SPEC §7
// has it. Its `seq` is the partition's transition number (gap-free per partition, the same
// for whoever folds the partition); the message id (Nats-Msg-Id) is the transition's
// idempotencyKey, so JetStream stores a re-emission within the duplicate window once, and the
// header Bucketd-Transition-Seq repeats `seq`, so a new owner knows where the old one
// stopped, past any window; and each publish is fenced on the partition's last message, so
// two owners (a stale one and its successor) cannot both append the same transition.
//
// Threading: one thread at a time.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/cluster/nats_connection.h"

namespace bucketd::cluster {

inline constexpr const char* kTransitionSeqHeader = "Bucketd-Transition-Seq";

struct OutputOptions {
  std::string cluster = "default";
  uint32_t partitions = 64;
  int replicas = 3;
  // Must exceed a failover (lease TTL + the new owner's catch-up) for the message ids to
  // catch every re-emission; Bucketd-Transition-Seq catches the rest.
  TimeMs duplicate_window_ms = 10 * 60 * 1000;
};

// A message of the output stream, as a consumer reads it.
struct OutputMessage {
  uint64_t stream_seq = 0;      // the consumer's cursor
  uint64_t transition_seq = 0;  // Bucketd-Transition-Seq
  std::string msg_id;           // Nats-Msg-Id: the transition's idempotencyKey
  std::string json;             // SPEC §7
};

class OutputStream {
 public:
  // Ensures the stream exists (creates it with these options if not).
  static Status Open(std::shared_ptr<NatsConnection> nats, const OutputOptions& options,
                     std::unique_ptr<OutputStream>* out);

  const std::string& stream_name() const { return stream_name_; }
  std::string Subject(uint32_t partition) const;
  // Every partition's subject: bucketd.<cluster>.out.*
  std::string AllSubjects() const;

  // Publishes `t` (folded in `partition`) if the partition's last message is still stream
  // sequence `expected_last_seq` (0: the partition has none), and returns once JetStream
  // acknowledged it, with its stream sequence in `*stream_seq`. The fence makes an output
  // appended at most once whoever publishes it: FailedPrecondition when another publisher
  // appended meanwhile (read Last again). IoError: not known to be stored; publish it again
  // (the message id makes a retry within the duplicate window harmless).
  Status Publish(uint32_t partition, const Transition& t, uint64_t expected_last_seq,
                 uint64_t* stream_seq);
  // The partition's last message: its Bucketd-Transition-Seq and stream sequence, both 0
  // when it has none.
  Status Last(uint32_t partition, uint64_t* transition_seq, uint64_t* stream_seq);
  // The partition's messages from stream sequence `from_seq` on, at most `max_messages`, up
  // to its last message when the call began.
  Status Read(uint32_t partition, uint64_t from_seq, size_t max_messages,
              std::vector<OutputMessage>* out);

  // The whole stream, every partition's transitions in the order JetStream stored them: a
  // total order of the cluster's transitions whose stream sequences are gap-free (nothing is
  // ever deleted from it), the cursor of GET /v1/transitions on a cluster node.
  // The stream's last sequence, 0 when it is empty.
  Status LastSeq(uint64_t* seq);
  // A reader kept open from stream sequence `from_seq` on (a consumer paging on reuses it).
  std::unique_ptr<SubjectTail> TailAll(uint64_t from_seq) const;
  // Through stream sequence `through_seq` (<= LastSeq()), at most `max_messages`, from the
  // tail's position. REQUIRES: `tail` is TailAll()'s.
  Status ReadAll(SubjectTail* tail, uint64_t through_seq, size_t max_messages,
                 std::vector<OutputMessage>* out);

 private:
  OutputStream(std::shared_ptr<NatsConnection> nats, const OutputOptions& options);
  Status EnsureStream();

  std::shared_ptr<NatsConnection> nats_;
  OutputOptions options_;
  std::string stream_name_;
};

}  // namespace bucketd::cluster
