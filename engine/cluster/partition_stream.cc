#include "engine/cluster/partition_stream.h"

#include <chrono>
#include <utility>

#include "engine/base/check.h"
#include "engine/cluster/partition.h"
#include "engine/cluster/record_json.h"

namespace bucketd::cluster {
namespace {

// The stream records its partition count in its description (JetStream 2.9 streams have no
// metadata map), so that a node started with another count is refused instead of routing
// users to partitions no one else uses.
std::string Description(uint32_t partitions) {
  return "bucketd input log; partitions=" + std::to_string(partitions);
}

}  // namespace

PartitionStream::PartitionStream(const StreamOptions& options, std::shared_ptr<NatsConnection> nats)
    : options_(options), stream_name_("BUCKETD_IN_" + options.cluster), nats_(std::move(nats)) {}

PartitionStream::~PartitionStream() = default;

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
  const std::string description = Description(options_.partitions);
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
  if (existing && *existing != description) {
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
  const std::string subject = Subject(partition);
  const std::string body = EncodeRecord(record);
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = nats_->timeout_ms();
  if (!publish.msg_id.empty()) options.MsgId = publish.msg_id.c_str();
  options.ExpectLastSubjectSeq = publish.expected_last_subject_seq;
  jsPubAck* ack = nullptr;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s = js_Publish(&ack, nats_->js(), subject.c_str(), body.data(),
                                  static_cast<int>(body.size()), &options, &js_error);
  if (s != NATS_OK) {
    if (js_error == JSStreamWrongLastSequenceErr) {
      return Status::FailedPrecondition(
          "", "partition " + std::to_string(partition) +
                  " has a record after the expected one (another owner appended)");
    }
    return NatsFailed("publish to " + subject, s, js_error);
  }
  *stream_seq = ack->Sequence;
  if (duplicate != nullptr) *duplicate = ack->Duplicate;
  jsPubAck_Destroy(ack);
  return Status::Ok();
}

Status PartitionStream::LastSeq(uint32_t partition, uint64_t* seq) {
  BUCKETD_CHECK(partition < options_.partitions);
  natsMsg* msg = nullptr;
  if (Status s = LastMessage(*nats_, stream_name_, Subject(partition), &msg); !s.ok()) return s;
  *seq = msg != nullptr ? natsMsg_GetSequence(msg) : 0;
  natsMsg_Destroy(msg);
  return Status::Ok();
}

std::unique_ptr<SubjectTail> PartitionStream::Tail(uint32_t partition, uint64_t from_seq) const {
  BUCKETD_CHECK(partition < options_.partitions);
  BUCKETD_CHECK(from_seq >= 1);
  return std::make_unique<SubjectTail>(nats_, stream_name_, Subject(partition), from_seq);
}

Status PartitionStream::Read(uint32_t partition, uint64_t from_seq, size_t max_records,
                             ReadResult* out) {
  uint64_t last = 0;
  if (Status s = LastSeq(partition, &last); !s.ok()) {
    out->records.clear();
    out->undecodable.clear();
    out->next_seq = from_seq;
    return s;
  }
  return Read(partition, Tail(partition, from_seq).get(), last, max_records, out);
}

Status PartitionStream::Read(uint32_t partition, SubjectTail* tail, uint64_t through_seq,
                             size_t max_records, ReadResult* out) {
  BUCKETD_CHECK(partition < options_.partitions);
  BUCKETD_CHECK(tail->subject() == Subject(partition));
  BUCKETD_CHECK(max_records <= kReadRecordsMax);
  out->records.clear();
  out->undecodable.clear();
  out->next_seq = tail->next_seq();
  Status s = tail->Read(through_seq, max_records, [&](const StoredMessage& m) {
    Record record;
    const Status decoded = DecodeRecord(m.data, m.stored_at_ms, &record);
    if (decoded.ok()) {
      record.seq = m.stream_seq;
      out->records.push_back(std::move(record));
    } else {
      out->undecodable.push_back(m.stream_seq);
    }
  });
  out->next_seq = tail->next_seq();
  return s;
}

}  // namespace bucketd::cluster
