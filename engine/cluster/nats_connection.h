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

// An ordered consumer on one subject of a stream (ephemeral, flow-controlled, no acks,
// delivered in stream order, re-created by the client from the last sequence seen if a
// message goes missing), kept open for a reader that comes back for more, as a partition's
// owner does: creating a consumer per read costs a JetStream API round trip, and a loaded
// cluster answers those slowly.
class SubjectTail {
 public:
  SubjectTail(std::shared_ptr<NatsConnection> nats, std::string stream, std::string subject,
              uint64_t from_seq);
  ~SubjectTail();
  SubjectTail(const SubjectTail&) = delete;
  SubjectTail& operator=(const SubjectTail&) = delete;

  // Visits the subject's messages from next_seq() through stream sequence `through_seq` (the
  // caller looked up the subject's last), at most `max_messages`, in order. When the
  // consumer fails, the reads go on by direct gets (one request per message, answered by
  // any live replica) for a while. An IoError leaves what was visited visited.
  Status Read(uint64_t through_seq, size_t max_messages,
              const std::function<void(const StoredMessage&)>& visit);
  // One past the last message visited.
  uint64_t next_seq() const { return next_seq_; }
  const std::string& subject() const { return subject_; }

 private:
  // How long reads go by direct gets after a consumer failed.
  static constexpr std::chrono::seconds kDirectReadsFor{10};

  Status Subscribe();
  Status Drain(uint64_t through_seq, size_t max_messages, size_t* visited,
               const std::function<void(const StoredMessage&)>& visit);
  Status DirectRead(uint64_t through_seq, size_t max_messages,
                    const std::function<void(const StoredMessage&)>& visit);
  void Drop();
  // Hands `msg` (its seq and time in `*m`) to `visit`, destroys it and moves past it.
  void Visit(natsMsg* msg, StoredMessage* m,
             const std::function<void(const StoredMessage&)>& visit);

  std::shared_ptr<NatsConnection> nats_;
  std::string stream_;
  std::string subject_;
  uint64_t next_seq_;
  natsSubscription* sub_ = nullptr;
  std::chrono::steady_clock::time_point direct_until_{};
};

// Creates the stream `config` describes (file storage, limits retention, direct gets allowed
// are set here) unless a stream of its name exists; then `*existing_description` (if given)
// receives that stream's description. Two nodes creating it at once are both fine.
Status EnsureStream(const NatsConnection& nats, jsStreamConfig config,
                    std::optional<std::string>* existing_description = nullptr);

// The last message of `subject` in `stream`: nullptr in `*out` when it has none. The caller
// destroys it.
Status LastMessage(const NatsConnection& nats, const std::string& stream,
                   const std::string& subject, natsMsg** out);

// Cluster names and node ids become parts of stream, subject and key names, where '.', '*',
// '>' and spaces have meanings: [A-Za-z0-9_-], 1..64 characters.
bool ValidNameToken(std::string_view name);

}  // namespace bucketd::cluster
