#pragma once
// One connection to NATS and its JetStream context, shared by everything a node keeps on
// JetStream (the input stream, the leases, the output stream): the C client's connection is
// thread-safe and reconnects by itself, so one per process is enough. The only place that
// connects; NatsFailed is the one way a NATS error becomes a Status.
#include <nats/nats.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"

namespace bucketd::cluster {

class NatsConnection {
 public:
  // `url`: one or more NATS URLs, comma-separated (the client fails over between them).
  // `timeout_ms` bounds a connect, a JetStream request and a publish's wait for its ack.
  static Status Connect(const std::string& url, TimeMs timeout_ms,
                        std::shared_ptr<NatsConnection>* out);
  ~NatsConnection();
  NatsConnection(const NatsConnection&) = delete;
  NatsConnection& operator=(const NatsConnection&) = delete;

  natsConnection* connection() const { return connection_; }
  jsCtx* js() const { return js_; }
  // The same context with a short wait (kQuickWaitMs), for requests that have a fallback:
  // creating a reader's consumer (direct gets replace it).
  jsCtx* js_quick() const { return js_quick_; }
  static constexpr TimeMs kQuickWaitMs = 1000;
  TimeMs timeout_ms() const { return timeout_ms_; }

 private:
  explicit NatsConnection(TimeMs timeout_ms) : timeout_ms_(timeout_ms) {}

  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
  jsCtx* js_quick_ = nullptr;
  TimeMs timeout_ms_;
};

// IoError naming `what`, with the client's text for `s`, the JetStream error code if any and
// the client's last error detail.
Status NatsFailed(std::string_view what, natsStatus s, jsErrCode js_error = jsErrCode(0));

// A message of a stream as a reader sees it; `msg` (headers) and `data` live during the visit.
struct StoredMessage {
  uint64_t stream_seq = 0;
  TimeMs stored_at_ms = 0;  // JetStream's stored timestamp, set once by the stream's leader
  std::string_view data;
  natsMsg* msg = nullptr;
};

// What two copies of a stored message are compared by: subject, body, Nats-Msg-Id and stored
// instant, hashed (xxh64). Two copies of one message agree; a replica's copy at a sequence
// where the leader holds another message does not (docs/cluster.md, "Reading through the
// leader").
uint64_t FingerprintOf(const StoredMessage& m);

// A message of a stream as the stream's leader holds it: its sequence and fingerprint. Where
// a read stops (the subject's last message, looked up on the leader) and where it resumes
// (the last message a reader visited). 0 and 0: none, or not known.
struct StreamPoint {
  uint64_t seq = 0;
  uint64_t fingerprint = 0;
};

// A stored message the reader owns (destroyed with it).
struct NatsMsgDeleter {
  void operator()(natsMsg* msg) const { natsMsg_Destroy(msg); }
};
using OwnedMsg = std::unique_ptr<natsMsg, NatsMsgDeleter>;
struct LeaderMessage {
  uint64_t stream_seq = 0;
  TimeMs stored_at_ms = 0;
  OwnedMsg msg;  // subject, headers and body
  StoredMessage view() const;
};

// The message of `stream` at sequence `seq` as the stream's leader holds it, or with
// `next_subject` the first at or after `seq` whose subject matches it (a wildcard too):
// the non-direct $JS.API.STREAM.MSG.GET, which only the stream's leader answers, unlike a
// direct get (any replica) or a consumer (placed on any replica). `*found` false when there
// is none.
Status LeaderGet(const NatsConnection& nats, const std::string& stream, uint64_t seq,
                 const std::string& next_subject, LeaderMessage* out, bool* found);

// An ordered consumer on one subject of a stream (ephemeral, flow-controlled, no acks,
// delivered in stream order, re-created by the client from the last sequence seen if a
// message goes missing), kept open for a reader that comes back for more, as a partition's
// owner does: creating a consumer per read costs a JetStream API round trip, and a loaded
// cluster answers those slowly.
//
// The consumer may sit on any replica of the stream, and nats-server 2.9 can let a replica's
// sequences drift from the leader's (docs/cluster.md, "Reading through the leader"), so what
// it delivers is checked against the leader before anyone sees it: each run's last message
// must be the leader's message at that sequence (one leader get per run, none when the run
// ends at `through`, whose fingerprint the caller looked up on the leader). A run that fails
// the check is dropped unseen and the reads go through the leader, a message per request, for
// a while. Where the reader resumes (its anchor: the last message it visited) is checked
// against the leader whenever the reads change source: a leader whose message there differs
// (the leader itself moved onto a drifted replica) stops the reader with Corruption rather
// than skip or repeat messages.
class SubjectTail {
 public:
  SubjectTail(std::shared_ptr<NatsConnection> nats, std::string stream, std::string subject,
              uint64_t from_seq, StreamPoint anchor = {});
  ~SubjectTail();
  SubjectTail(const SubjectTail&) = delete;
  SubjectTail& operator=(const SubjectTail&) = delete;

  // Visits the subject's messages from next_seq() through stream sequence `through.seq` (the
  // caller looked up the subject's last on the leader; `through.fingerprint` 0 if it did not
  // keep it), at most `max_messages`, in order. An IoError leaves what was visited visited;
  // Corruption: the leader no longer holds the anchor (nothing visited).
  Status Read(const StreamPoint& through, size_t max_messages,
              const std::function<void(const StoredMessage&)>& visit);
  // One past the last message visited.
  uint64_t next_seq() const { return next_seq_; }
  // The last message visited (or the one the reader was created after).
  const StreamPoint& anchor() const { return anchor_; }
  const std::string& subject() const { return subject_; }
  // Runs a replica delivered that the leader did not confirm (dropped unseen).
  uint64_t replica_mismatches() const { return replica_mismatches_; }

  // Tests only: checks the copies against stream `stream` instead (a stream whose sequences
  // differ from the one read stands in for a replica that drifted).
  void CheckAgainstForTesting(std::string stream) { leader_stream_ = std::move(stream); }

 private:
  // How long reads go through the leader after a consumer failed or was caught drifting.
  static constexpr std::chrono::seconds kLeaderReadsFor{10};

  // A message of a run from the consumer, held until the run is confirmed.
  struct RunMessage {
    OwnedMsg msg;
    uint64_t stream_seq = 0;
    TimeMs stored_at_ms = 0;
    StoredMessage view() const;
  };

  Status Subscribe();
  // Collects a run from the consumer into `*run`, through `through.seq` and at most
  // `max_messages`.
  Status Drain(const StreamPoint& through, size_t max_messages, std::vector<RunMessage>* run);
  // True when the leader holds `last` (the run's last message) at its sequence.
  Status Confirmed(const StoredMessage& last, const StreamPoint& through, bool* confirmed);
  Status LeaderRead(const StreamPoint& through, size_t max_messages,
                    const std::function<void(const StoredMessage&)>& visit);
  // Corruption unless the leader holds the anchor (when there is one).
  Status CheckAnchor();
  void Drop();
  // Hands `m` to `visit` and moves past it.
  void Visit(const StoredMessage& m, const std::function<void(const StoredMessage&)>& visit);

  std::shared_ptr<NatsConnection> nats_;
  std::string stream_;
  std::string leader_stream_;  // the stream the copies are checked against: stream_
  std::string subject_;
  uint64_t next_seq_;
  StreamPoint anchor_;
  bool anchor_checked_ = false;
  natsSubscription* sub_ = nullptr;
  std::chrono::steady_clock::time_point leader_until_{};
  uint64_t replica_mismatches_ = 0;
};

// Creates the stream `config` describes (file storage, limits retention, direct gets allowed
// are set here) unless a stream of its name exists; then `*existing_description` (if given)
// receives that stream's description, and its duplicate window is set to config.Duplicates
// if that is not 0 and differs. Two nodes creating it at once are both fine.
Status EnsureStream(const NatsConnection& nats, jsStreamConfig config,
                    std::optional<std::string>* existing_description = nullptr);

// The last message of `subject` in `stream`, as the stream's leader holds it: nullptr in
// `*out` when it has none. The caller destroys it.
Status LastMessage(const NatsConnection& nats, const std::string& stream,
                   const std::string& subject, natsMsg** out);
// The same as a point: its sequence and fingerprint (0 and 0 when it has none).
Status LastPoint(const NatsConnection& nats, const std::string& stream, const std::string& subject,
                 StreamPoint* out);
// A message a JetStream get returned (js_GetMsg, js_GetLastMsg) as a reader sees it.
StoredMessage StoredOf(natsMsg* msg);
// A stored message `msg` (subject, headers, body) at `stream_seq`, stored at `stored_at_ms`.
StoredMessage ViewOf(uint64_t stream_seq, TimeMs stored_at_ms, natsMsg* msg);

// Cluster names and node ids become parts of stream, subject and key names, where '.', '*',
// '>' and spaces have meanings: [A-Za-z0-9_-], 1..64 characters.
bool ValidNameToken(std::string_view name);

}  // namespace bucketd::cluster
