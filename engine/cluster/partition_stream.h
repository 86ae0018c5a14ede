#pragma once
// The log of record in cluster mode: one JetStream stream per cluster, one subject per
// partition (docs/cluster.md). PartitionStream ensures the stream exists, publishes a record to
// a partition and returns once JetStream acknowledged it (stored on a majority of the stream's
// replicas), and reads a partition's records back in order. The only code that knows the
// stream's name, subjects and configuration; the record body is record_json.h's.
//
// Threading: one thread at a time per PartitionStream (the NATS connection itself is
// thread-safe; the reader state here is not).
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/base/record.h"
#include "engine/cluster/nats_connection.h"

namespace bucketd::cluster {

// A record read from a partition is at most this many bytes (a JSON event with the largest
// properties patch the sidecar takes fits well within it); the stream refuses a larger one.
inline constexpr int32_t kRecordBytesMax = 1 << 20;
// Records one Read returns at most.
inline constexpr size_t kReadRecordsMax = 10'000;

struct StreamOptions {
  std::string url = "nats://127.0.0.1:4222";  // one or more, comma-separated
  // Names the stream and the subjects: [A-Za-z0-9_-], 1..64 characters.
  std::string cluster = "default";
  // Fixed at cluster creation; Open refuses a stream created with another count.
  uint32_t partitions = 64;
  // Replicas of the stream when Open creates it: 3 in production (a majority survives one
  // server's loss), 1 in tests.
  int replicas = 3;
  // JetStream's duplicate window for Nats-Msg-Id (a producer's retry of the same record):
  // set when Open creates the stream, and set on an existing stream that has another.
  TimeMs duplicate_window_ms = 2 * 60 * 1000;
  // How long a partition's fold remembers the ids of the records it applied, to skip a
  // record whose id it saw (docs/cluster.md, "Idempotency"). Fixed when Open creates the
  // stream (kept in its description); a stream that has one keeps it (idempotency_window_ms()).
  TimeMs idempotency_window_ms = 60 * 60 * 1000;
  // How long a publish waits for JetStream's ack, and a read for the next message.
  TimeMs timeout_ms = 5000;
};

struct PublishOptions {
  // Nats-Msg-Id: a retry with the same id within the duplicate window is stored once.
  std::string msg_id;
  // Nats-Expected-Last-Subject-Sequence: JetStream stores the record only if the partition's
  // last record is this stream sequence (the fence a partition's owner puts on its sweeps).
  // 0: no fence.
  uint64_t expected_last_subject_seq = 0;
  // Stored only if the subject has no message yet (the control log's first append).
  bool expect_subject_empty = false;
};

// One record of a PublishBatch and what became of it.
struct BatchPublish {
  uint32_t partition = 0;
  const Record* record = nullptr;
  std::string msg_id;  // Nats-Msg-Id; empty: none (a retry may then store it twice)
};
struct BatchAck {
  // OK once JetStream acknowledged it; IoError when it did not after every attempt (it may
  // or may not be stored); another code when JetStream refused it.
  Status status = Status::IoError("not published");
  uint64_t stream_seq = 0;
  bool duplicate = false;  // JetStream had stored this msg_id within the window
};

struct ReadResult {
  // In stream order; each record's seq is its stream sequence (gaps are other partitions').
  std::vector<Record> records;
  // records[i]'s id (RecordIdOf), 0 when it has none.
  std::vector<uint64_t> record_ids;
  // Stream sequences of messages that are not records (record_json.h refused them): every
  // reader skips the same ones, so the partition's fold stays a function of its stream.
  std::vector<uint64_t> undecodable;
  // Where the next Read starts: one past the last message looked at.
  uint64_t next_seq = 0;
};

// A record's id, what a partition's fold skips a second copy of a record by (docs/cluster.md,
// "Idempotency"): an event's idempotencyKey when it has one (whatever its message id, so a
// direct producer's retry is caught too), else the message's Nats-Msg-Id; a hash, never 0.
// 0: the record has neither, or is a control record's copy (those have controlSeq).
uint64_t RecordIdOf(const Record& record, natsMsg* msg);

// Where the owner of `partition` of cluster `cluster` answers queries (core NATS
// request/reply, not a stream; docs/cluster.md, "Queries").
std::string QuerySubjectOf(std::string_view cluster, uint32_t partition);

class PartitionStream {
 public:
  // Connects and ensures the stream exists (creates it, or checks an existing one has this
  // partition count). IoError when NATS or JetStream cannot be reached.
  static Status Open(const StreamOptions& options, std::unique_ptr<PartitionStream>* out);
  // The same on a connection shared with the node's other JetStream users (`options.url` and
  // `options.timeout_ms` are the connection's then).
  static Status Open(std::shared_ptr<NatsConnection> nats, const StreamOptions& options,
                     std::unique_ptr<PartitionStream>* out);
  ~PartitionStream();
  PartitionStream(const PartitionStream&) = delete;
  PartitionStream& operator=(const PartitionStream&) = delete;

  const std::string& stream_name() const { return stream_name_; }
  uint32_t partitions() const { return options_.partitions; }
  // The cluster's idempotency window, as its stream's description records it (0 on a stream
  // made before there was one: no record is skipped by id).
  TimeMs idempotency_window_ms() const { return idempotency_window_ms_; }
  std::string Subject(uint32_t partition) const;
  // Where the partition's owner answers queries (core NATS request/reply, not a stream).
  std::string QuerySubject(uint32_t partition) const;

  // Publishes `record` (its seq is ignored) to `partition`'s subject; OK once JetStream
  // acknowledged it, with the stream sequence it got in `*stream_seq`. A fence that does not
  // hold: FailedPrecondition, nothing stored. IoError when JetStream did not acknowledge
  // (the record may or may not be stored: retry with the same msg_id). `*duplicate`, if
  // given: JetStream had stored a record with this msg_id within the window (this one was not).
  // REQUIRES: partition < partitions().
  Status Publish(uint32_t partition, const Record& record, const PublishOptions& publish,
                 uint64_t* stream_seq, bool* duplicate = nullptr);

  // Publishes every item without waiting for each ack in turn (JetStream's asynchronous
  // publish: a batch costs about one round trip, not one per record), then waits for the
  // acks; an item JetStream did not acknowledge is sent again with its msg_id, up to
  // `attempts` rounds. `(*acks)[i]` is items[i]'s outcome. JetStream stores the records of a
  // round in the order they were sent, so a partition's records keep the batch's order
  // unless one of them needed another round (it then follows those stored in the first).
  // OK when every item was acknowledged; else the first failure (the acks say which).
  // REQUIRES: every partition < partitions(), no fences (events and fan-outs only).
  Status PublishBatch(std::span<const BatchPublish> items, int attempts,
                      std::vector<BatchAck>* acks);

  // The partition's records with stream sequence >= from_seq, at most `max_records`, up to
  // the partition's last record when the call began (never waits for new ones).
  // REQUIRES: partition < partitions(), from_seq >= 1, max_records <= kReadRecordsMax.
  Status Read(uint32_t partition, uint64_t from_seq, size_t max_records, ReadResult* out);
  // The same through a reader kept open on the partition (its owner's), from tail->next_seq()
  // through `through` (the partition's last record when the caller looked: LastPoint).
  // REQUIRES: `tail` is Tail(partition, ...)'s.
  Status Read(uint32_t partition, SubjectTail* tail, const StreamPoint& through, size_t max_records,
              ReadResult* out);
  // A reader from `from_seq` on; `anchor`: the message before it as it was read (checked
  // against the leader before the first read; SubjectTail).
  std::unique_ptr<SubjectTail> Tail(uint32_t partition, uint64_t from_seq,
                                    StreamPoint anchor = {}) const;

  // The stream sequence of the partition's last record, 0 if it has none.
  Status LastSeq(uint32_t partition, uint64_t* seq);
  // The partition's last record as the stream's leader holds it.
  Status LastPoint(uint32_t partition, StreamPoint* out);
  // Whether the stream's leader holds the message `point` names (its fingerprint at its
  // sequence): a reader resuming after it reads the stream it read before.
  Status LeaderHolds(const StreamPoint& point, bool* holds);

  // The cluster's manual clock (docs/cluster.md, "Manual clock"): the last instant set, kept
  // on the input stream's subject `bucketd.<cluster>.in.clock` (no partition reads it), with
  // that message's stream sequence; 0 and 0 when it was never set.
  Status ReadClock(TimeMs* now, uint64_t* seq);
  // Sets it to `now` if its last message is still `expected_seq` (0: if it was never set);
  // FailedPrecondition when another node set it in between.
  Status SetClock(TimeMs now, uint64_t expected_seq);

  // The cluster's control log (control_log.h): control records on the input stream's subject
  // `bucketd.<cluster>.in.ctl` (no partition reads it), their stream sequences their order.
  // The last one, with its stored time (the stream leader's clock): `*found` false when there
  // is none.
  Status LastControl(uint64_t* seq, Record* record, TimeMs* stored_at_ms, bool* found);
  // Appends `record` if the log's last message is still `expected_seq` (0: if it is empty),
  // with its sequence in `*seq`; FailedPrecondition when another writer appended meanwhile.
  Status AppendControl(const Record& record, uint64_t expected_seq, uint64_t* seq);
  // The control record whose fan-out was last marked complete (subject
  // `bucketd.<cluster>.in.ctl-done`, a decimal control sequence): 0 when none was (or the
  // subject's last message is not a decimal).
  Status LastControlDone(uint64_t* control_seq);
  // Marks the fan-out of the control record `control_seq` complete.
  Status MarkControlDone(uint64_t control_seq);
  // A reader of the control log from stream sequence `from_seq` on; read it with ReadControl.
  std::unique_ptr<SubjectTail> ControlTail(uint64_t from_seq) const;
  Status ReadControl(SubjectTail* tail, uint64_t through_seq, ReadResult* out);

 private:
  PartitionStream(const StreamOptions& options, std::shared_ptr<NatsConnection> nats);
  Status EnsureStream();
  // Publishes `body` to `subject` and waits for the ack: Publish's, SetClock's and the control
  // log's one path.
  // A fence that does not hold: FailedPrecondition. `*stream_seq`, `*duplicate` if given.
  Status PublishBody(const std::string& subject, const std::string& body,
                     const PublishOptions& publish, uint64_t* stream_seq,
                     bool* duplicate = nullptr);
  // The asynchronous-publish context, created on first use (its ack handler is this stream's).
  Status AsyncContext(jsCtx** js);
  // One round of PublishBatch: sends items[i] for each i in `round`, waits for their acks.
  void PublishRound(jsCtx* js, std::span<const BatchPublish> items,
                    const std::vector<size_t>& round, std::vector<BatchAck>* acks);
  static void OnAsyncAck(jsCtx* js, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error, void* closure);

  StreamOptions options_;
  std::string stream_name_;
  TimeMs idempotency_window_ms_ = 0;
  std::shared_ptr<NatsConnection> nats_;
  jsCtx* async_js_ = nullptr;
  // The round in flight: which item each sent message is, and where its outcome goes. The
  // ack handler runs on the client's thread, hence the mutex.
  std::mutex async_mu_;
  std::unordered_map<natsMsg*, size_t> in_flight_;
  std::vector<BatchAck>* round_acks_ = nullptr;
};

}  // namespace bucketd::cluster
