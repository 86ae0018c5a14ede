#include "engine/cluster/output_stream.h"

#include <charconv>
#include <utility>

#include "engine/base/check.h"
#include "engine/base/json_writer.h"
#include "engine/cluster/partition.h"

namespace bucketd::cluster {
namespace {

// The header's value, 0 when it is missing or not a number (a message some other publisher
// put on the subject: it proves nothing about what an owner published).
uint64_t TransitionSeqOf(natsMsg* msg) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, kTransitionSeqHeader, &value) != NATS_OK || value == nullptr) {
    return 0;
  }
  const std::string_view text(value);
  uint64_t seq = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seq);
  return error == std::errc() && end == text.data() + text.size() ? seq : 0;
}

}  // namespace

OutputStream::OutputStream(std::shared_ptr<NatsConnection> nats, const OutputOptions& options)
    : nats_(std::move(nats)), options_(options), stream_name_("BUCKETD_OUT_" + options.cluster) {}

Status OutputStream::Open(std::shared_ptr<NatsConnection> nats, const OutputOptions& options,
                          std::unique_ptr<OutputStream>* out) {
  if (!ValidNameToken(options.cluster)) {
    return Status::InvalidArgument("cluster", "must be 1-64 characters of [A-Za-z0-9_-]");
  }
  if (options.partitions < 1 || options.partitions > kPartitionsMax) {
    return Status::InvalidArgument("partitions", "must be 1.." + std::to_string(kPartitionsMax));
  }
  std::unique_ptr<OutputStream> stream(new OutputStream(std::move(nats), options));
  if (Status s = stream->EnsureStream(); !s.ok()) return s;
  *out = std::move(stream);
  return Status::Ok();
}

std::string OutputStream::Subject(uint32_t partition) const {
  return "bucketd." + options_.cluster + ".out." + std::to_string(partition);
}

std::string OutputStream::AllSubjects() const { return "bucketd." + options_.cluster + ".out.*"; }

Status OutputStream::EnsureStream() {
  const std::string subjects = AllSubjects();
  const char* subject_list[] = {subjects.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = stream_name_.c_str();
  config.Description = "bucketd transitions";
  config.Subjects = subject_list;
  config.SubjectsLen = 1;
  config.Replicas = options_.replicas;
  config.Duplicates = options_.duplicate_window_ms * 1'000'000;  // nanoseconds
  return bucketd::cluster::EnsureStream(*nats_, config);
}

Status OutputStream::Publish(uint32_t partition, const Transition& t, uint64_t expected_last_seq,
                             uint64_t* stream_seq) {
  BUCKETD_CHECK(partition < options_.partitions);
  const std::string subject = Subject(partition);
  JsonWriter w;
  WriteTransition(t, &w);
  const std::string& body = w.str();
  const std::string seq = std::to_string(t.seq);
  natsMsg* msg = nullptr;
  natsStatus s =
      natsMsg_Create(&msg, subject.c_str(), nullptr, body.data(), static_cast<int>(body.size()));
  if (s != NATS_OK) return NatsFailed("message for " + subject, s);
  s = natsMsgHeader_Set(msg, kTransitionSeqHeader, seq.c_str());
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = nats_->timeout_ms();
  const std::string msg_id = t.IdempotencyKey();
  options.MsgId = msg_id.c_str();
  if (expected_last_seq == 0) {
    options.ExpectNoMessage = true;
  } else {
    options.ExpectLastSubjectSeq = expected_last_seq;
  }
  jsPubAck* ack = nullptr;
  jsErrCode js_error = jsErrCode(0);
  if (s == NATS_OK) s = js_PublishMsg(&ack, nats_->js(), msg, &options, &js_error);
  natsMsg_Destroy(msg);
  if (s == NATS_OK) *stream_seq = ack->Sequence;
  jsPubAck_Destroy(ack);
  if (s == NATS_OK) return Status::Ok();
  if (js_error == JSStreamWrongLastSequenceErr) {
    return Status::FailedPrecondition("", subject + " has another last message than expected");
  }
  return NatsFailed("publish to " + subject, s, js_error);
}

Status OutputStream::Last(uint32_t partition, uint64_t* transition_seq, uint64_t* stream_seq) {
  BUCKETD_CHECK(partition < options_.partitions);
  natsMsg* msg = nullptr;
  if (Status s = LastMessage(*nats_, stream_name_, Subject(partition), &msg); !s.ok()) return s;
  *transition_seq = msg != nullptr ? TransitionSeqOf(msg) : 0;
  *stream_seq = msg != nullptr ? natsMsg_GetSequence(msg) : 0;
  natsMsg_Destroy(msg);
  return Status::Ok();
}

namespace {
// A stored message as a consumer reads it.
void ToOutputMessage(const StoredMessage& m, std::vector<OutputMessage>* out) {
  OutputMessage& o = out->emplace_back();
  o.stream_seq = m.stream_seq;
  o.transition_seq = TransitionSeqOf(m.msg);
  const char* id = nullptr;
  if (natsMsgHeader_Get(m.msg, "Nats-Msg-Id", &id) == NATS_OK && id) o.msg_id = id;
  o.json = std::string(m.data);
}
}  // namespace

Status OutputStream::Read(uint32_t partition, uint64_t from_seq, size_t max_messages,
                          std::vector<OutputMessage>* out) {
  BUCKETD_CHECK(partition < options_.partitions);
  out->clear();
  const std::string subject = Subject(partition);
  StreamPoint through;
  if (Status s = LastPoint(*nats_, stream_name_, subject, &through); !s.ok() || through.seq == 0) {
    return s;
  }
  SubjectTail tail(nats_, stream_name_, subject, from_seq);
  return tail.Read(through, max_messages, [&](const StoredMessage& m) { ToOutputMessage(m, out); });
}

Status OutputStream::LastSeq(uint64_t* seq) {
  jsStreamInfo* info = nullptr;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s =
      js_GetStreamInfo(&info, nats_->js(), stream_name_.c_str(), nullptr, &js_error);
  if (s != NATS_OK) return NatsFailed("stream info " + stream_name_, s, js_error);
  *seq = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  return Status::Ok();
}

std::unique_ptr<SubjectTail> OutputStream::TailAll(uint64_t from_seq) const {
  BUCKETD_CHECK(from_seq >= 1);
  return std::make_unique<SubjectTail>(nats_, stream_name_, AllSubjects(), from_seq);
}

Status OutputStream::ReadAll(SubjectTail* tail, uint64_t through_seq, size_t max_messages,
                             std::vector<OutputMessage>* out) {
  out->clear();
  return tail->Read(StreamPoint{through_seq, 0}, max_messages,
                    [&](const StoredMessage& m) { ToOutputMessage(m, out); });
}

}  // namespace bucketd::cluster
