#include "engine/cluster/nats_connection.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

namespace bucketd::cluster {

Status NatsFailed(std::string_view what, natsStatus s, jsErrCode js_error) {
  std::string message = std::string(what) + ": " + natsStatus_GetText(s);
  if (js_error != 0) message += " (JetStream error " + std::to_string(js_error) + ")";
  if (const char* detail = nats_GetLastError(nullptr); detail != nullptr && *detail != '\0') {
    message += ": " + std::string(detail);
  }
  return Status::IoError(message);
}

bool ValidNameToken(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status EnsureStream(const NatsConnection& nats, jsStreamConfig config,
                    std::optional<std::string>* existing_description) {
  const std::string name = config.Name;
  for (int attempt = 0; attempt < 2; ++attempt) {
    jsStreamInfo* info = nullptr;
    jsErrCode js_error = jsErrCode(0);
    natsStatus s = js_GetStreamInfo(&info, nats.js(), name.c_str(), nullptr, &js_error);
    if (s == NATS_OK) {
      if (existing_description != nullptr) {
        const char* found = info->Config->Description;
        *existing_description = std::string(found != nullptr ? found : "");
      }
      jsStreamInfo_Destroy(info);
      return Status::Ok();
    }
    if (s != NATS_NOT_FOUND && js_error != JSStreamNotFoundErr) {
      return NatsFailed("stream info " + name, s, js_error);
    }
    config.Storage = js_FileStorage;
    config.Retention = js_LimitsPolicy;
    config.AllowDirect = true;
    js_error = jsErrCode(0);
    s = js_AddStream(&info, nats.js(), &config, nullptr, &js_error);
    jsStreamInfo_Destroy(info);
    if (s == NATS_OK) return Status::Ok();
    // Another node created it meanwhile: look at what it created.
    if (js_error != JSStreamNameExistErr) return NatsFailed("create stream " + name, s, js_error);
  }
  return Status::IoError("stream " + name + ": created and not found");
}

Status LastMessage(const NatsConnection& nats, const std::string& stream,
                   const std::string& subject, natsMsg** out) {
  *out = nullptr;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s =
      js_GetLastMsg(out, nats.js(), stream.c_str(), subject.c_str(), nullptr, &js_error);
  if (s == NATS_NOT_FOUND) {
    *out = nullptr;
    return Status::Ok();
  }
  if (s != NATS_OK) return NatsFailed("last message of " + subject, s, js_error);
  return Status::Ok();
}

Status NatsConnection::Connect(const std::string& url, TimeMs timeout_ms,
                               std::shared_ptr<NatsConnection>* out) {
  std::shared_ptr<NatsConnection> nats(new NatsConnection(timeout_ms));
  // SetURL takes one URL; a comma-separated list is the client's server list.
  std::vector<std::string> servers;
  for (size_t begin = 0; begin <= url.size();) {
    const size_t comma = std::min(url.find(',', begin), url.size());
    if (comma > begin) servers.push_back(url.substr(begin, comma - begin));
    begin = comma + 1;
  }
  if (servers.empty()) return Status::InvalidArgument("url", "no NATS URL given");
  natsOptions* options = nullptr;
  if (natsOptions_Create(&options) != NATS_OK) return Status::IoError("natsOptions_Create");
  std::vector<const char*> server_list;
  for (const std::string& s : servers) server_list.push_back(s.c_str());
  natsOptions_SetServers(options, server_list.data(), static_cast<int>(server_list.size()));
  natsOptions_SetTimeout(options, timeout_ms);
  // Keep reconnecting: a NATS server's restart or the loss of one of three is routine, and a
  // publish that cannot reach JetStream fails by its own timeout.
  natsOptions_SetMaxReconnect(options, -1);
  natsOptions_SetReconnectWait(options, 100);
  natsStatus s = natsConnection_Connect(&nats->connection_, options);
  natsOptions_Destroy(options);
  if (s != NATS_OK) return NatsFailed("connect to " + url, s);
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.Wait = timeout_ms;
  s = natsConnection_JetStream(&nats->js_, nats->connection_, &js_options);
  if (s != NATS_OK) return NatsFailed("JetStream context", s);
  js_options.Wait = std::min(timeout_ms, kQuickWaitMs);
  s = natsConnection_JetStream(&nats->js_quick_, nats->connection_, &js_options);
  if (s != NATS_OK) return NatsFailed("JetStream context", s);
  *out = std::move(nats);
  return Status::Ok();
}

NatsConnection::~NatsConnection() {
  jsCtx_Destroy(js_quick_);
  jsCtx_Destroy(js_);
  natsConnection_Destroy(connection_);
}

SubjectTail::SubjectTail(std::shared_ptr<NatsConnection> nats, std::string stream,
                         std::string subject, uint64_t from_seq)
    : nats_(std::move(nats)),
      stream_(std::move(stream)),
      subject_(std::move(subject)),
      next_seq_(from_seq) {}

SubjectTail::~SubjectTail() { Drop(); }

void SubjectTail::Drop() {
  if (sub_ == nullptr) return;
  natsSubscription_Unsubscribe(sub_);
  natsSubscription_Destroy(sub_);
  sub_ = nullptr;
}

Status SubjectTail::Subscribe() {
  jsSubOptions sub_options;
  jsSubOptions_Init(&sub_options);
  sub_options.Stream = stream_.c_str();
  sub_options.Ordered = true;
  sub_options.Config.DeliverPolicy = js_DeliverByStartSequence;
  sub_options.Config.OptStartSeq = next_seq_;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s = js_SubscribeSync(&sub_, nats_->js_quick(), subject_.c_str(), nullptr,
                                        &sub_options, &js_error);
  if (s != NATS_OK) {
    sub_ = nullptr;
    return NatsFailed("read " + subject_, s, js_error);
  }
  // No client-side limit on what the server may push ahead of the reader: flow control
  // bounds it, and a limit hit would drop messages the ordered consumer then re-fetches.
  natsSubscription_SetPendingLimits(sub_, -1, -1);
  return Status::Ok();
}

Status SubjectTail::Read(uint64_t through_seq, size_t max_messages,
                         const std::function<void(const StoredMessage&)>& visit) {
  if (through_seq < next_seq_ || max_messages == 0) return Status::Ok();
  const auto now = std::chrono::steady_clock::now();
  size_t visited = 0;
  if (now >= direct_until_) {
    Status s = sub_ != nullptr ? Status::Ok() : Subscribe();
    if (s.ok()) s = Drain(through_seq, max_messages, &visited, visit);
    if (s.ok()) return s;
    // The consumer could not be made or delivered nothing while messages are known to be
    // there: after a NATS server's death, JetStream may place a new consumer on the dead
    // server until it notices. Direct gets, answered by any live replica, carry the reads
    // for a while; then a consumer is tried again.
    Drop();
    direct_until_ = now + kDirectReadsFor;
  }
  return DirectRead(through_seq, max_messages - visited, visit);
}

Status SubjectTail::DirectRead(uint64_t through_seq, size_t max_messages,
                               const std::function<void(const StoredMessage&)>& visit) {
  for (size_t visited = 0; visited < max_messages && next_seq_ <= through_seq; ++visited) {
    jsDirectGetMsgOptions options;
    jsDirectGetMsgOptions_Init(&options);
    options.Sequence = next_seq_;
    options.NextBySubject = subject_.c_str();
    natsMsg* msg = nullptr;
    const natsStatus s = js_DirectGetMsg(&msg, nats_->js(), stream_.c_str(), nullptr, &options);
    if (s == NATS_NOT_FOUND) return Status::Ok();  // nothing at or after next_seq_
    if (s != NATS_OK) return NatsFailed("direct read " + subject_, s);
    StoredMessage m;
    m.stream_seq = natsMsg_GetSequence(msg);
    m.stored_at_ms = natsMsg_GetTime(msg) / 1'000'000;
    if (m.stream_seq < next_seq_) {
      natsMsg_Destroy(msg);
      return Status::IoError("direct read " + subject_ + ": a message before the one asked for");
    }
    if (m.stream_seq > through_seq) {
      natsMsg_Destroy(msg);
      return Status::Ok();
    }
    Visit(msg, &m, visit);
  }
  return Status::Ok();
}

void SubjectTail::Visit(natsMsg* msg, StoredMessage* m,
                        const std::function<void(const StoredMessage&)>& visit) {
  m->data = std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  m->msg = msg;
  visit(*m);
  natsMsg_Destroy(msg);
  next_seq_ = m->stream_seq + 1;
}

Status SubjectTail::Drain(uint64_t through_seq, size_t max_messages, size_t* visited,
                          const std::function<void(const StoredMessage&)>& visit) {
  // A consumer delivers within milliseconds a message known to be stored; this long without
  // one is a stall.
  const int64_t stall_ms = std::min<int64_t>(nats_->timeout_ms(), 1000);
  while (*visited < max_messages && next_seq_ <= through_seq) {
    natsMsg* msg = nullptr;
    natsStatus s = natsSubscription_NextMsg(&msg, sub_, stall_ms);
    if (s != NATS_OK) return NatsFailed("read " + subject_, s);
    jsMsgMetaData* meta = nullptr;
    s = natsMsg_GetMetaData(&meta, msg);
    if (s != NATS_OK) {
      natsMsg_Destroy(msg);
      return NatsFailed("metadata of a message of " + subject_, s);
    }
    StoredMessage m;
    m.stream_seq = meta->Sequence.Stream;
    m.stored_at_ms = meta->Timestamp / 1'000'000;
    jsMsgMetaData_Destroy(meta);
    if (m.stream_seq < next_seq_) {
      // Delivered again (seen under NATS server kills, as the client re-creates an ordered
      // consumer): a reader takes each message once, in stream order.
      natsMsg_Destroy(msg);
      continue;
    }
    Visit(msg, &m, visit);
    ++*visited;
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
