#include "engine/cluster/partition_stream.h"

#include <xxhash.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <utility>

#include "engine/base/check.h"
#include "engine/cluster/partition.h"
#include "engine/cluster/record_json.h"

namespace bucketd::cluster {
namespace {

// The stream records its partition count and idempotency window in its description
// (JetStream 2.9 streams have no metadata map), so that a node started with another count is
// refused instead of routing users to partitions no one else uses, and every fold of a
// partition skips the same records by id.
constexpr std::string_view kDescriptionPrefix = "bucketd input log; partitions=";
constexpr std::string_view kWindowField = "; idempotencyWindowMs=";

std::string Description(uint32_t partitions, TimeMs idempotency_window_ms) {
  return std::string(kDescriptionPrefix) + std::to_string(partitions) + std::string(kWindowField) +
         std::to_string(idempotency_window_ms);
}

// A description's partition count and window (0 when it has none: a stream made before the
// window was); false when it is not a bucketd input log's.
bool ParseDescription(std::string_view text, uint32_t* partitions, TimeMs* window_ms) {
  if (text.substr(0, kDescriptionPrefix.size()) != kDescriptionPrefix) return false;
  text.remove_prefix(kDescriptionPrefix.size());
  const char* end = text.data() + text.size();
  const auto [after_count, count_error] = std::from_chars(text.data(), end, *partitions);
  if (count_error != std::errc()) return false;
  std::string_view rest(after_count, static_cast<size_t>(end - after_count));
  *window_ms = 0;
  if (rest.empty()) return true;
  if (rest.substr(0, kWindowField.size()) != kWindowField) return false;
  rest.remove_prefix(kWindowField.size());
  const auto [after_window, window_error] =
      std::from_chars(rest.data(), rest.data() + rest.size(), *window_ms);
  return window_error == std::errc() && after_window == rest.data() + rest.size();
}

}  // namespace

PartitionStream::PartitionStream(const StreamOptions& options, std::shared_ptr<NatsConnection> nats)
    : options_(options), stream_name_("BUCKETD_IN_" + options.cluster), nats_(std::move(nats)) {}

PartitionStream::~PartitionStream() {
  if (async_js_ != nullptr) jsCtx_Destroy(async_js_);
}

Status PartitionStream::Open(const StreamOptions& options, std::unique_ptr<PartitionStream>* out) {
  std::shared_ptr<NatsConnection> nats;
  if (Status s = NatsConnection::Connect(options.url, options.timeout_ms, &nats); !s.ok()) {
    return s;
  }
  return Open(std::move(nats), options, out);
}

Status PartitionStream::Open(std::shared_ptr<NatsConnection> nats, const StreamOptions& options,
                             std::unique_ptr<PartitionStream>* out) {
  if (!ValidNameToken(options.cluster)) {
    return Status::InvalidArgument("cluster", "must be 1-64 characters of [A-Za-z0-9_-]");
  }
  if (options.partitions < 1 || options.partitions > kPartitionsMax) {
    return Status::InvalidArgument("partitions", "must be 1.." + std::to_string(kPartitionsMax));
  }
  std::unique_ptr<PartitionStream> stream(new PartitionStream(options, std::move(nats)));
  if (Status st = stream->EnsureStream(); !st.ok()) return st;
  *out = std::move(stream);
  return Status::Ok();
}

std::string PartitionStream::Subject(uint32_t partition) const {
  return "bucketd." + options_.cluster + ".in." + std::to_string(partition);
}

std::string QuerySubjectOf(std::string_view cluster, uint32_t partition) {
  return "bucketd." + std::string(cluster) + ".q." + std::to_string(partition);
}

std::string PartitionStream::QuerySubject(uint32_t partition) const {
  return QuerySubjectOf(options_.cluster, partition);
}

Status PartitionStream::EnsureStream() {
  const std::string subjects = "bucketd." + options_.cluster + ".in.*";
  const char* subject_list[] = {subjects.c_str()};
  const std::string description = Description(options_.partitions, options_.idempotency_window_ms);
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = stream_name_.c_str();
  config.Description = description.c_str();
  config.Subjects = subject_list;
  config.SubjectsLen = 1;
  config.Replicas = options_.replicas;
  config.MaxMsgSize = kRecordBytesMax;
  config.Duplicates = options_.duplicate_window_ms * 1'000'000;  // nanoseconds
  // The log of record: no limits, nothing aged out (docs/cluster.md, "Retention"). Deletes
  // stay allowed: an erasure will have to remove a contact's messages.
  std::optional<std::string> existing;
  if (Status s = bucketd::cluster::EnsureStream(*nats_, config, &existing); !s.ok()) return s;
  idempotency_window_ms_ = options_.idempotency_window_ms;
  if (!existing) return Status::Ok();
  uint32_t partitions = 0;
  if (!ParseDescription(*existing, &partitions, &idempotency_window_ms_) ||
      partitions != options_.partitions) {
    return Status::FailedPrecondition(
        "partitions", "stream " + stream_name_ + " exists with another partition count (\"" +
                          *existing + "\"); the count is fixed at cluster creation");
  }
  return Status::Ok();
}

Status PartitionStream::Publish(uint32_t partition, const Record& record,
                                const PublishOptions& publish, uint64_t* stream_seq,
                                bool* duplicate) {
  BUCKETD_CHECK(partition < options_.partitions);
  const Status s =
      PublishBody(Subject(partition), EncodeRecord(record), publish, stream_seq, duplicate);
  if (s.code() == StatusCode::kFailedPrecondition) {
    return Status::FailedPrecondition(
        "", "partition " + std::to_string(partition) +
                " has a record after the expected one (another owner appended)");
  }
  return s;
}

Status PartitionStream::PublishBody(const std::string& subject, const std::string& body,
                                    const PublishOptions& publish, uint64_t* stream_seq,
                                    bool* duplicate) {
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = nats_->timeout_ms();
  if (!publish.msg_id.empty()) options.MsgId = publish.msg_id.c_str();
  options.ExpectLastSubjectSeq = publish.expected_last_subject_seq;
  options.ExpectNoMessage = publish.expect_subject_empty;
  jsPubAck* ack = nullptr;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s = js_Publish(&ack, nats_->js(), subject.c_str(), body.data(),
                                  static_cast<int>(body.size()), &options, &js_error);
  if (s != NATS_OK) {
    if (js_error == JSStreamWrongLastSequenceErr) {
      return Status::FailedPrecondition("", subject + " has a message after the expected one");
    }
    return NatsFailed("publish to " + subject, s, js_error);
  }
  if (stream_seq != nullptr) *stream_seq = ack->Sequence;
  if (duplicate != nullptr) *duplicate = ack->Duplicate;
  jsPubAck_Destroy(ack);
  return Status::Ok();
}

Status PartitionStream::AsyncContext(jsCtx** js) {
  if (async_js_ == nullptr) {
    jsOptions options;
    jsOptions_Init(&options);
    options.Wait = nats_->timeout_ms();
    options.PublishAsync.AckHandler = &PartitionStream::OnAsyncAck;
    options.PublishAsync.AckHandlerClosure = this;
    // A batch larger than this waits (StallWait) for acks before sending more: bounds the
    // client's buffered messages, not the batch.
    options.PublishAsync.MaxPending = 4096;
    options.PublishAsync.StallWait = nats_->timeout_ms();
    const natsStatus s = natsConnection_JetStream(&async_js_, nats_->connection(), &options);
    if (s != NATS_OK) return NatsFailed("JetStream context", s);
  }
  *js = async_js_;
  return Status::Ok();
}

void PartitionStream::OnAsyncAck(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error,
                                 void* closure) {
  auto* self = static_cast<PartitionStream*>(closure);
  {
    std::lock_guard<std::mutex> lock(self->async_mu_);
    const auto it = self->in_flight_.find(msg);
    if (it != self->in_flight_.end()) {
      BatchAck& out = (*self->round_acks_)[it->second];
      if (ack != nullptr) {
        out.status = Status::Ok();
        out.stream_seq = ack->Sequence;
        out.duplicate = ack->Duplicate;
      } else if (error != nullptr) {
        const std::string what = std::string("publish to ") + natsMsg_GetSubject(msg);
        out.status = NatsFailed(what, error->Err, error->ErrCode);
      }
      self->in_flight_.erase(it);
    }
  }
  natsMsg_Destroy(msg);
}

void PartitionStream::PublishRound(jsCtx* js, std::span<const BatchPublish> items,
                                   const std::vector<size_t>& round, std::vector<BatchAck>* acks) {
  {
    std::lock_guard<std::mutex> lock(async_mu_);
    round_acks_ = acks;
  }
  for (const size_t i : round) {
    const BatchPublish& item = items[i];
    BUCKETD_CHECK(item.partition < options_.partitions);
    const std::string subject = Subject(item.partition);
    const std::string body = EncodeRecord(*item.record);
    natsMsg* msg = nullptr;
    natsStatus s =
        natsMsg_Create(&msg, subject.c_str(), nullptr, body.data(), static_cast<int>(body.size()));
    if (s != NATS_OK) {
      (*acks)[i].status = NatsFailed("publish to " + subject, s);
      continue;
    }
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = nats_->timeout_ms();  // the library fails the message after this long
    if (!item.msg_id.empty()) options.MsgId = item.msg_id.c_str();
    {
      // Registered before it is sent: its ack can arrive before the call returns.
      std::lock_guard<std::mutex> lock(async_mu_);
      in_flight_[msg] = i;
    }
    natsMsg* sent = msg;
    s = js_PublishMsgAsync(js, &sent, &options);
    if (s != NATS_OK) {
      // Not taken by the library (`sent` is still ours): it was never sent.
      std::lock_guard<std::mutex> lock(async_mu_);
      in_flight_.erase(msg);
      (*acks)[i].status = NatsFailed("publish to " + subject, s);
      natsMsg_Destroy(sent);
    }
  }
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = 2 * nats_->timeout_ms();
  if (js_PublishAsyncComplete(js, &wait) != NATS_OK) {
    // Messages the library still holds (no ack, no timeout yet) come back to us: failed
    // this round; a later ack for one of them is dropped by the library.
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK) {
      std::lock_guard<std::mutex> lock(async_mu_);
      for (int k = 0; k < pending.Count; ++k) {
        const auto it = in_flight_.find(pending.Msgs[k]);
        if (it != in_flight_.end()) {
          (*acks)[it->second].status = Status::IoError("publish: no ack from JetStream");
          in_flight_.erase(it);
        }
      }
      natsMsgList_Destroy(&pending);
    }
  }
  std::lock_guard<std::mutex> lock(async_mu_);
  // Whatever is left was neither acknowledged nor handed back: failed this round.
  for (const auto& [msg, i] : in_flight_) {
    (*acks)[i].status = Status::IoError("publish: no ack from JetStream");
  }
  in_flight_.clear();
  round_acks_ = nullptr;
}

Status PartitionStream::PublishBatch(std::span<const BatchPublish> items, int attempts,
                                     std::vector<BatchAck>* acks) {
  acks->assign(items.size(), BatchAck{});
  jsCtx* js = nullptr;
  if (Status s = AsyncContext(&js); !s.ok()) {
    for (BatchAck& ack : *acks) ack.status = s;
    return s;
  }
  std::vector<size_t> round(items.size());
  for (size_t i = 0; i < items.size(); ++i) round[i] = i;
  for (int attempt = 0; attempt < attempts && !round.empty(); ++attempt) {
    for (const size_t i : round) (*acks)[i] = BatchAck{};
    PublishRound(js, items, round, acks);
    std::vector<size_t> again;
    for (const size_t i : round) {
      if ((*acks)[i].status.code() == StatusCode::kIoError) again.push_back(i);
    }
    round = std::move(again);
  }
  for (const BatchAck& ack : *acks) {
    if (!ack.status.ok()) return ack.status;
  }
  return Status::Ok();
}

Status PartitionStream::LastSeq(uint32_t partition, uint64_t* seq) {
  StreamPoint last;
  const Status s = LastPoint(partition, &last);
  *seq = last.seq;
  return s;
}

Status PartitionStream::LastPoint(uint32_t partition, StreamPoint* out) {
  BUCKETD_CHECK(partition < options_.partitions);
  return bucketd::cluster::LastPoint(*nats_, stream_name_, Subject(partition), out);
}

Status PartitionStream::LeaderHolds(const StreamPoint& point, bool* holds) {
  LeaderMessage held;
  bool found = false;
  if (Status s = LeaderGet(*nats_, stream_name_, point.seq, "", &held, &found); !s.ok()) return s;
  *holds = found && FingerprintOf(held.view()) == point.fingerprint;
  return Status::Ok();
}

uint64_t RecordIdOf(const Record& record, natsMsg* msg) {
  if (record.control_seq != 0) return 0;
  std::string id;
  if (record.kind == RecordKind::kEvent && record.idempotency_key) {
    id = "e:" + *record.idempotency_key;  // what a routing node sends as its message id
  } else {
    const char* header = nullptr;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &header) != NATS_OK || header == nullptr) return 0;
    id = header;
  }
  const uint64_t hash = XXH64(id.data(), id.size(), 0);
  return hash != 0 ? hash : 1;
}

namespace {
std::string ClockSubject(const std::string& cluster) { return "bucketd." + cluster + ".in.clock"; }
std::string ControlSubject(const std::string& cluster) { return "bucketd." + cluster + ".in.ctl"; }
std::string ControlDoneSubject(const std::string& cluster) {
  return "bucketd." + cluster + ".in.ctl-done";
}
}  // namespace

Status PartitionStream::LastControl(uint64_t* seq, Record* record, TimeMs* stored_at_ms,
                                    bool* found) {
  natsMsg* msg = nullptr;
  if (Status s = LastMessage(*nats_, stream_name_, ControlSubject(options_.cluster), &msg);
      !s.ok()) {
    return s;
  }
  *found = msg != nullptr;
  *seq = 0;
  *stored_at_ms = 0;
  if (msg == nullptr) return Status::Ok();
  *seq = natsMsg_GetSequence(msg);
  *stored_at_ms = natsMsg_GetTime(msg) / 1'000'000;
  const std::string_view data(natsMsg_GetData(msg),
                              static_cast<size_t>(natsMsg_GetDataLength(msg)));
  Status s = DecodeRecord(data, *stored_at_ms, record);
  natsMsg_Destroy(msg);
  if (!s.ok()) {
    return Status::Corruption("control record " + std::to_string(*seq) + ": " + s.ToString());
  }
  return Status::Ok();
}

Status PartitionStream::AppendControl(const Record& record, uint64_t expected_seq, uint64_t* seq) {
  PublishOptions fence;
  fence.expected_last_subject_seq = expected_seq;
  fence.expect_subject_empty = expected_seq == 0;
  const Status s = PublishBody(ControlSubject(options_.cluster), EncodeRecord(record), fence, seq);
  if (s.code() == StatusCode::kFailedPrecondition) {
    return Status::FailedPrecondition("", "another node appended a control record meanwhile");
  }
  return s;
}

Status PartitionStream::LastControlDone(uint64_t* control_seq) {
  *control_seq = 0;
  natsMsg* msg = nullptr;
  const std::string subject = ControlDoneSubject(options_.cluster);
  if (Status s = LastMessage(*nats_, stream_name_, subject, &msg); !s.ok()) return s;
  if (msg == nullptr) return Status::Ok();
  const std::string text(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
  natsMsg_Destroy(msg);
  // Anything else than a decimal (a stray publish) reads as no mark: the last control record
  // is then completed once more, which stores nothing new.
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *control_seq);
  if (error != std::errc() || end != text.data() + text.size()) *control_seq = 0;
  return Status::Ok();
}

Status PartitionStream::MarkControlDone(uint64_t control_seq) {
  return PublishBody(ControlDoneSubject(options_.cluster), std::to_string(control_seq),
                     PublishOptions{}, nullptr);
}

std::unique_ptr<SubjectTail> PartitionStream::ControlTail(uint64_t from_seq) const {
  BUCKETD_CHECK(from_seq >= 1);
  return std::make_unique<SubjectTail>(nats_, stream_name_, ControlSubject(options_.cluster),
                                       from_seq);
}

Status PartitionStream::ReadControl(SubjectTail* tail, uint64_t through_seq, ReadResult* out) {
  BUCKETD_CHECK(tail->subject() == ControlSubject(options_.cluster));
  out->records.clear();
  out->record_ids.clear();
  out->undecodable.clear();
  Status s = tail->Read(StreamPoint{through_seq, 0}, kReadRecordsMax, [&](const StoredMessage& m) {
    Record record;
    if (DecodeRecord(m.data, m.stored_at_ms, &record).ok()) {
      record.seq = m.stream_seq;
      out->records.push_back(std::move(record));
      out->record_ids.push_back(0);
    } else {
      out->undecodable.push_back(m.stream_seq);
    }
  });
  out->next_seq = tail->next_seq();
  return s;
}

Status PartitionStream::ReadClock(TimeMs* now, uint64_t* seq) {
  natsMsg* msg = nullptr;
  if (Status s = LastMessage(*nats_, stream_name_, ClockSubject(options_.cluster), &msg); !s.ok()) {
    return s;
  }
  *now = 0;
  *seq = 0;
  if (msg == nullptr) return Status::Ok();
  const std::string text(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
  *seq = natsMsg_GetSequence(msg);
  natsMsg_Destroy(msg);
  char* end = nullptr;
  const long long parsed = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || parsed < 0) {
    return Status::Corruption("the cluster clock's message is not an instant: \"" + text + "\"");
  }
  *now = parsed;
  return Status::Ok();
}

Status PartitionStream::SetClock(TimeMs now, uint64_t expected_seq) {
  // JetStream reads 0 as "no expectation": the first set is unfenced, and two nodes setting
  // the start instant at once both store it (the clock is the last one).
  const Status s = PublishBody(ClockSubject(options_.cluster), std::to_string(now),
                               PublishOptions{"", expected_seq}, nullptr);
  if (s.code() == StatusCode::kFailedPrecondition) {
    return Status::FailedPrecondition("now", "another node moved the clock at the same time");
  }
  return s;
}

std::unique_ptr<SubjectTail> PartitionStream::Tail(uint32_t partition, uint64_t from_seq,
                                                   StreamPoint anchor) const {
  BUCKETD_CHECK(partition < options_.partitions);
  BUCKETD_CHECK(from_seq >= 1);
  return std::make_unique<SubjectTail>(nats_, stream_name_, Subject(partition), from_seq, anchor);
}

Status PartitionStream::Read(uint32_t partition, uint64_t from_seq, size_t max_records,
                             ReadResult* out) {
  StreamPoint last;
  if (Status s = LastPoint(partition, &last); !s.ok()) {
    out->records.clear();
    out->record_ids.clear();
    out->undecodable.clear();
    out->next_seq = from_seq;
    return s;
  }
  return Read(partition, Tail(partition, from_seq).get(), last, max_records, out);
}

Status PartitionStream::Read(uint32_t partition, SubjectTail* tail, const StreamPoint& through,
                             size_t max_records, ReadResult* out) {
  BUCKETD_CHECK(partition < options_.partitions);
  BUCKETD_CHECK(tail->subject() == Subject(partition));
  BUCKETD_CHECK(max_records <= kReadRecordsMax);
  out->records.clear();
  out->record_ids.clear();
  out->undecodable.clear();
  out->next_seq = tail->next_seq();
  Status s = tail->Read(through, max_records, [&](const StoredMessage& m) {
    Record record;
    const Status decoded = DecodeRecord(m.data, m.stored_at_ms, &record);
    if (decoded.ok()) {
      record.seq = m.stream_seq;
      out->record_ids.push_back(RecordIdOf(record, m.msg));
      out->records.push_back(std::move(record));
    } else {
      out->undecodable.push_back(m.stream_seq);
    }
  });
  out->next_seq = tail->next_seq();
  return s;
}

}  // namespace bucketd::cluster
