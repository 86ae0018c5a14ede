#include "engine/cluster/partition_stream.h"

#include <nats/nats.h>

#include <chrono>
#include <utility>

#include "engine/base/check.h"
#include "engine/cluster/partition.h"
#include "engine/cluster/record_json.h"

namespace bucketd::cluster {
namespace {

Status NatsFailed(std::string_view what, natsStatus s, jsErrCode js_error = jsErrCode(0)) {
  std::string message = std::string(what) + ": " + natsStatus_GetText(s);
  if (js_error != 0) message += " (JetStream error " + std::to_string(js_error) + ")";
  if (const char* detail = nats_GetLastError(nullptr); detail != nullptr && *detail != '\0') {
    message += ": " + std::string(detail);
  }
  return Status::IoError(message);
}

bool ValidClusterName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// The stream records its partition count in its description (JetStream 2.9 streams have no
// metadata map), so that a node started with another count is refused instead of routing
// users to partitions no one else uses.
std::string Description(uint32_t partitions) {
  return "bucketd input log; partitions=" + std::to_string(partitions);
}

}  // namespace

struct PartitionStream::Nats {
  natsConnection* connection = nullptr;
  jsCtx* js = nullptr;
  ~Nats() {
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
  }
};

PartitionStream::PartitionStream(const StreamOptions& options, std::unique_ptr<Nats> nats)
    : options_(options), stream_name_("BUCKETD_IN_" + options.cluster), nats_(std::move(nats)) {}

PartitionStream::~PartitionStream() = default;

Status PartitionStream::Open(const StreamOptions& options, std::unique_ptr<PartitionStream>* out) {
  if (!ValidClusterName(options.cluster)) {
    return Status::InvalidArgument("cluster", "must be 1-64 characters of [A-Za-z0-9_-]");
  }
  if (options.partitions < 1 || options.partitions > kPartitionsMax) {
    return Status::InvalidArgument("partitions", "must be 1.." + std::to_string(kPartitionsMax));
  }
  auto nats = std::make_unique<Nats>();
  natsOptions* nats_options = nullptr;
  if (natsOptions_Create(&nats_options) != NATS_OK) return Status::IoError("natsOptions_Create");
  natsOptions_SetURL(nats_options, options.url.c_str());
  natsOptions_SetTimeout(nats_options, options.timeout_ms);
  // Keep reconnecting: a NATS server's restart or the loss of one of three is routine, and a
  // publish that cannot reach JetStream fails by its own timeout.
  natsOptions_SetMaxReconnect(nats_options, -1);
  natsOptions_SetReconnectWait(nats_options, 100);
  natsStatus s = natsConnection_Connect(&nats->connection, nats_options);
  natsOptions_Destroy(nats_options);
  if (s != NATS_OK) return NatsFailed("connect to " + options.url, s);
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.Wait = options.timeout_ms;
  s = natsConnection_JetStream(&nats->js, nats->connection, &js_options);
  if (s != NATS_OK) return NatsFailed("JetStream context", s);
  std::unique_ptr<PartitionStream> stream(new PartitionStream(options, std::move(nats)));
  if (Status st = stream->EnsureStream(); !st.ok()) return st;
  *out = std::move(stream);
  return Status::Ok();
}

std::string PartitionStream::Subject(uint32_t partition) const {
  return "bucketd." + options_.cluster + ".in." + std::to_string(partition);
}

Status PartitionStream::EnsureStream() {
  jsStreamInfo* info = nullptr;
  jsErrCode js_error = jsErrCode(0);
  natsStatus s = js_GetStreamInfo(&info, nats_->js, stream_name_.c_str(), nullptr, &js_error);
  if (s == NATS_OK) {
    const char* found = info->Config->Description;
    const bool same = found != nullptr && Description(options_.partitions) == found;
    const std::string found_text = found != nullptr ? found : "";
    jsStreamInfo_Destroy(info);
    if (!same) {
      return Status::FailedPrecondition(
          "partitions", "stream " + stream_name_ + " exists with another partition count (\"" +
                            found_text + "\"); the count is fixed at cluster creation");
    }
    return Status::Ok();
  }
  if (s != NATS_NOT_FOUND && js_error != JSStreamNotFoundErr) {
    return NatsFailed("stream info " + stream_name_, s, js_error);
  }
  const std::string subjects = "bucketd." + options_.cluster + ".in.*";
  const char* subject_list[] = {subjects.c_str()};
  const std::string description = Description(options_.partitions);
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = stream_name_.c_str();
  config.Description = description.c_str();
  config.Subjects = subject_list;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  config.Replicas = options_.replicas;
  config.MaxMsgSize = kRecordBytesMax;
  config.Duplicates = options_.duplicate_window_ms * 1'000'000;  // nanoseconds
  // The log of record: no limits, nothing aged out (docs/cluster.md, "Retention"). Deletes
  // stay allowed: an erasure will have to remove a contact's messages.
  config.Retention = js_LimitsPolicy;
  config.AllowDirect = true;
  js_error = jsErrCode(0);
  s = js_AddStream(&info, nats_->js, &config, nullptr, &js_error);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return Status::Ok();
  }
  // Another node created it meanwhile: check what it created.
  if (js_error == JSStreamNameExistErr) return EnsureStream();
  return NatsFailed("create stream " + stream_name_, s, js_error);
}

Status PartitionStream::Publish(uint32_t partition, const Record& record,
                                const PublishOptions& publish, uint64_t* stream_seq) {
  BUCKETD_CHECK(partition < options_.partitions);
  const std::string subject = Subject(partition);
  const std::string body = EncodeRecord(record);
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = options_.timeout_ms;
  if (!publish.msg_id.empty()) options.MsgId = publish.msg_id.c_str();
  options.ExpectLastSubjectSeq = publish.expected_last_subject_seq;
  jsPubAck* ack = nullptr;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s = js_Publish(&ack, nats_->js, subject.c_str(), body.data(),
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
  jsPubAck_Destroy(ack);
  return Status::Ok();
}

Status PartitionStream::LastSeq(uint32_t partition, uint64_t* seq) {
  BUCKETD_CHECK(partition < options_.partitions);
  const std::string subject = Subject(partition);
  natsMsg* msg = nullptr;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s =
      js_GetLastMsg(&msg, nats_->js, stream_name_.c_str(), subject.c_str(), nullptr, &js_error);
  if (s == NATS_NOT_FOUND) {
    *seq = 0;
    return Status::Ok();
  }
  if (s != NATS_OK) return NatsFailed("last record of " + subject, s, js_error);
  *seq = natsMsg_GetSequence(msg);
  natsMsg_Destroy(msg);
  return Status::Ok();
}

Status PartitionStream::Read(uint32_t partition, uint64_t from_seq, size_t max_records,
                             ReadResult* out) {
  BUCKETD_CHECK(partition < options_.partitions);
  BUCKETD_CHECK(from_seq >= 1);
  BUCKETD_CHECK(max_records <= kReadRecordsMax);
  out->records.clear();
  out->undecodable.clear();
  out->next_seq = from_seq;
  uint64_t last = 0;
  if (Status st = LastSeq(partition, &last); !st.ok()) return st;
  if (last < from_seq || max_records == 0) return Status::Ok();

  // An ordered consumer: ephemeral, flow-controlled, no acks, delivered in stream order and
  // recreated by the client from the last sequence seen if a message goes missing.
  const std::string subject = Subject(partition);
  jsSubOptions sub_options;
  jsSubOptions_Init(&sub_options);
  sub_options.Stream = stream_name_.c_str();
  sub_options.Ordered = true;
  sub_options.Config.DeliverPolicy = js_DeliverByStartSequence;
  sub_options.Config.OptStartSeq = from_seq;
  natsSubscription* sub = nullptr;
  jsErrCode js_error = jsErrCode(0);
  natsStatus s =
      js_SubscribeSync(&sub, nats_->js, subject.c_str(), nullptr, &sub_options, &js_error);
  if (s != NATS_OK) return NatsFailed("read " + subject, s, js_error);
  Status result;
  while (out->records.size() + out->undecodable.size() < max_records && out->next_seq <= last) {
    natsMsg* msg = nullptr;
    s = natsSubscription_NextMsg(&msg, sub, options_.timeout_ms);
    if (s != NATS_OK) {
      result = NatsFailed("read " + subject, s);
      break;
    }
    jsMsgMetaData* meta = nullptr;
    s = natsMsg_GetMetaData(&meta, msg);
    if (s != NATS_OK) {
      natsMsg_Destroy(msg);
      result = NatsFailed("metadata of a message of " + subject, s);
      break;
    }
    const uint64_t seq = meta->Sequence.Stream;
    const TimeMs stored_at_ms = meta->Timestamp / 1'000'000;
    jsMsgMetaData_Destroy(meta);
    Record record;
    const Status decoded = DecodeRecord(
        std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)), stored_at_ms, &record);
    natsMsg_Destroy(msg);
    if (decoded.ok()) {
      record.seq = seq;
      out->records.push_back(std::move(record));
    } else {
      out->undecodable.push_back(seq);
    }
    out->next_seq = seq + 1;
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  return result;
}

}  // namespace bucketd::cluster
