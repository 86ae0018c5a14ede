#include "engine/cluster/nats_connection.h"

#include <simdjson.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <utility>
#include <vector>

#include "bucketd/time_format.h"

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
      Status updated;
      if (config.Duplicates != 0 && info->Config->Duplicates != config.Duplicates) {
        // The duplicate window is the one setting an operator changes on a running cluster
        // (a node restarted with another window sets it; docs/cluster.md, "Idempotency").
        jsStreamConfig changed = *info->Config;
        changed.Duplicates = config.Duplicates;
        jsStreamInfo* after = nullptr;
        js_error = jsErrCode(0);
        s = js_UpdateStream(&after, nats.js(), &changed, nullptr, &js_error);
        jsStreamInfo_Destroy(after);
        if (s != NATS_OK) updated = NatsFailed("duplicate window of stream " + name, s, js_error);
      }
      jsStreamInfo_Destroy(info);
      return updated;
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

Status LastPoint(const NatsConnection& nats, const std::string& stream, const std::string& subject,
                 StreamPoint* out) {
  *out = StreamPoint{};
  natsMsg* msg = nullptr;
  if (Status s = LastMessage(nats, stream, subject, &msg); !s.ok() || msg == nullptr) return s;
  const StoredMessage m = StoredOf(msg);
  *out = StreamPoint{m.stream_seq, FingerprintOf(m)};
  natsMsg_Destroy(msg);
  return Status::Ok();
}

uint64_t FingerprintOf(const StoredMessage& m) {
  // Each part hashed with the previous parts' hash and its own length as the seed, so that
  // moving bytes from one part to the next changes the result.
  uint64_t hash = 0;
  auto add = [&hash](const void* data, size_t size) {
    hash = XXH64(data, size, hash ^ (size * 0x9e3779b97f4a7c15ULL));
  };
  const char* subject = natsMsg_GetSubject(m.msg);
  const std::string_view subject_text = subject != nullptr ? subject : "";
  add(subject_text.data(), subject_text.size());
  add(m.data.data(), m.data.size());
  const char* id = nullptr;
  const std::string_view id_text =
      natsMsgHeader_Get(m.msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr ? id : "";
  add(id_text.data(), id_text.size());
  add(&m.stored_at_ms, sizeof m.stored_at_ms);
  return hash;
}

namespace {

// Standard base64 with padding, as Go encodes a []byte in JSON: false if `text` is not.
bool DecodeBase64(std::string_view text, std::string* out) {
  static constexpr std::array<int8_t, 256> kValues = [] {
    std::array<int8_t, 256> v{};
    v.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) v[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
    return v;
  }();
  out->clear();
  if (text.size() % 4 != 0) return false;
  out->reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t bits = 0;
    int padding = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        ++padding;
        bits <<= 6;
        continue;
      }
      const int8_t value = kValues[static_cast<uint8_t>(c)];
      if (value < 0 || padding > 0) return false;
      bits = (bits << 6) | static_cast<uint32_t>(value);
    }
    out->push_back(static_cast<char>(bits >> 16));
    if (padding < 2) out->push_back(static_cast<char>((bits >> 8) & 0xff));
    if (padding < 1) out->push_back(static_cast<char>(bits & 0xff));
  }
  return true;
}

// A stored message's header block ("NATS/1.0\r\nKey: Value\r\n...\r\n\r\n") onto `msg`.
natsStatus AddHeaders(std::string_view block, natsMsg* msg) {
  size_t at = block.find("\r\n");  // past the version line
  while (at != std::string_view::npos) {
    const size_t begin = at + 2;
    const size_t end = block.find("\r\n", begin);
    if (end == std::string_view::npos || end == begin) break;
    const std::string_view line = block.substr(begin, end - begin);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      const std::string key(line.substr(0, colon));
      if (natsStatus s = natsMsgHeader_Add(msg, key.c_str(), std::string(value).c_str());
          s != NATS_OK) {
        return s;
      }
    }
    at = end;
  }
  return NATS_OK;
}

// JetStream's "no message found".
constexpr int64_t kNoMessageFound = 10037;

}  // namespace

StoredMessage ViewOf(uint64_t stream_seq, TimeMs stored_at_ms, natsMsg* msg) {
  StoredMessage m;
  m.stream_seq = stream_seq;
  m.stored_at_ms = stored_at_ms;
  m.data = std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  m.msg = msg;
  return m;
}

StoredMessage StoredOf(natsMsg* msg) {
  return ViewOf(natsMsg_GetSequence(msg), natsMsg_GetTime(msg) / 1'000'000, msg);
}

StoredMessage LeaderMessage::view() const { return ViewOf(stream_seq, stored_at_ms, msg.get()); }

Status LeaderGet(const NatsConnection& nats, const std::string& stream, uint64_t seq,
                 const std::string& next_subject, LeaderMessage* out, bool* found) {
  *found = false;
  std::string request = "{\"seq\":" + std::to_string(seq);
  // Subjects are [A-Za-z0-9_.*>-] here: nothing to escape.
  if (!next_subject.empty()) request += ",\"next_by_subj\":\"" + next_subject + "\"";
  request += "}";
  const std::string api = "$JS.API.STREAM.MSG.GET." + stream;
  natsMsg* reply = nullptr;
  const natsStatus sent =
      natsConnection_Request(&reply, nats.connection(), api.c_str(), request.data(),
                             static_cast<int>(request.size()), nats.timeout_ms());
  if (sent != NATS_OK) return NatsFailed("leader get from " + stream, sent);
  const OwnedMsg owned_reply(reply);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(natsMsg_GetData(reply), natsMsg_GetDataLength(reply)).get(doc) !=
      simdjson::SUCCESS) {
    return Status::IoError("leader get from " + stream + ": not JSON");
  }
  simdjson::dom::element error;
  if (doc["error"].get(error) == simdjson::SUCCESS) {
    int64_t code = 0;
    if (error["err_code"].get_int64().get(code) == simdjson::SUCCESS && code == kNoMessageFound) {
      return Status::Ok();
    }
    std::string_view description;
    if (error["description"].get_string().get(description) != simdjson::SUCCESS) description = "";
    return Status::IoError("leader get from " + stream + ": " + std::string(description));
  }
  simdjson::dom::element message;
  std::string_view subject, time, headers_b64, data_b64;
  uint64_t stream_seq = 0;
  if (doc["message"].get(message) != simdjson::SUCCESS ||
      message["subject"].get_string().get(subject) != simdjson::SUCCESS ||
      message["seq"].get_uint64().get(stream_seq) != simdjson::SUCCESS ||
      message["time"].get_string().get(time) != simdjson::SUCCESS) {
    return Status::IoError("leader get from " + stream + ": no message in the answer");
  }
  if (message["hdrs"].get_string().get(headers_b64) != simdjson::SUCCESS) headers_b64 = "";
  if (message["data"].get_string().get(data_b64) != simdjson::SUCCESS) data_b64 = "";
  std::string headers, data;
  TimeMs stored_at_ms = 0;
  if (!DecodeBase64(headers_b64, &headers) || !DecodeBase64(data_b64, &data) ||
      !ParseRfc3339(time, &stored_at_ms).ok()) {
    return Status::IoError("leader get from " + stream + ": a message that does not decode");
  }
  natsMsg* msg = nullptr;
  const std::string subject_text(subject);
  natsStatus s = natsMsg_Create(&msg, subject_text.c_str(), nullptr, data.data(),
                                static_cast<int>(data.size()));
  if (s != NATS_OK) return NatsFailed("leader get from " + stream, s);
  out->msg.reset(msg);
  if (s = AddHeaders(headers, msg); s != NATS_OK) return NatsFailed("leader get headers", s);
  out->stream_seq = stream_seq;
  out->stored_at_ms = stored_at_ms;
  *found = true;
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
                         std::string subject, uint64_t from_seq, StreamPoint anchor)
    : nats_(std::move(nats)),
      stream_(std::move(stream)),
      leader_stream_(stream_),
      subject_(std::move(subject)),
      next_seq_(from_seq),
      anchor_(anchor) {}

SubjectTail::~SubjectTail() { Drop(); }

void SubjectTail::Drop() {
  anchor_checked_ = false;  // the next source is checked against the leader first
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

Status SubjectTail::CheckAnchor() {
  if (anchor_checked_ || anchor_.seq == 0) {
    anchor_checked_ = true;
    return Status::Ok();
  }
  LeaderMessage held;
  bool found = false;
  if (Status s = LeaderGet(*nats_, leader_stream_, anchor_.seq, "", &held, &found); !s.ok()) {
    return s;
  }
  if (!found || FingerprintOf(held.view()) != anchor_.fingerprint) {
    return Status::Corruption(
        stream_ + " sequence " + std::to_string(anchor_.seq) + " (" + subject_ +
        "): the stream's leader no longer holds the message read there; its replicas disagree "
        "(nats-server 2.9 can let a replica's sequences drift: docs/cluster.md, \"Reading "
        "through the leader\")");
  }
  anchor_checked_ = true;
  return Status::Ok();
}

Status SubjectTail::Read(const StreamPoint& through, size_t max_messages,
                         const std::function<void(const StoredMessage&)>& visit) {
  if (through.seq < next_seq_ || max_messages == 0) return Status::Ok();
  // Whatever source the reads take from here, they resume where the leader has the anchor.
  if (Status s = CheckAnchor(); !s.ok()) return s;
  const auto now = std::chrono::steady_clock::now();
  if (now >= leader_until_) {
    std::vector<RunMessage> run;
    Status s = sub_ != nullptr ? Status::Ok() : Subscribe();
    if (s.ok()) s = Drain(through, max_messages, &run);
    bool confirmed = run.empty();
    if (s.ok() && !run.empty()) s = Confirmed(run.back().view(), through, &confirmed);
    if (s.ok() && confirmed) {
      for (const RunMessage& m : run) Visit(m.view(), visit);
      return s;
    }
    if (s.ok()) {
      // The consumer's replica holds other messages at these sequences than the leader:
      // nothing of the run is seen, and the leader is asked whether it still holds the
      // anchor before the reads resume through it.
      ++replica_mismatches_;
      anchor_checked_ = false;
      if (Status a = CheckAnchor(); !a.ok()) {
        Drop();
        return a;
      }
    }
    // Otherwise the consumer could not be made or delivered nothing while messages are known
    // to be there: after a NATS server's death, JetStream may place a new consumer on the dead
    // server until it notices. Either way the leader carries the reads for a while; then a
    // consumer is tried again.
    Drop();
    leader_until_ = now + kLeaderReadsFor;
  }
  return LeaderRead(through, max_messages, visit);
}

Status SubjectTail::Confirmed(const StoredMessage& last, const StreamPoint& through,
                              bool* confirmed) {
  const uint64_t copy = FingerprintOf(last);
  if (last.stream_seq == through.seq && through.fingerprint != 0) {
    *confirmed = copy == through.fingerprint;
    return Status::Ok();
  }
  LeaderMessage held;
  bool found = false;
  if (Status s = LeaderGet(*nats_, leader_stream_, last.stream_seq, "", &held, &found); !s.ok()) {
    return s;
  }
  *confirmed = found && FingerprintOf(held.view()) == copy;
  return Status::Ok();
}

Status SubjectTail::LeaderRead(const StreamPoint& through, size_t max_messages,
                               const std::function<void(const StoredMessage&)>& visit) {
  for (size_t visited = 0; visited < max_messages && next_seq_ <= through.seq; ++visited) {
    LeaderMessage m;
    bool found = false;
    if (Status s = LeaderGet(*nats_, leader_stream_, next_seq_, subject_, &m, &found); !s.ok()) {
      return s;
    }
    if (!found || m.stream_seq > through.seq) return Status::Ok();
    if (m.stream_seq < next_seq_) {
      return Status::IoError("read " + subject_ + ": a message before the one asked for");
    }
    Visit(m.view(), visit);
  }
  return Status::Ok();
}

void SubjectTail::Visit(const StoredMessage& m,
                        const std::function<void(const StoredMessage&)>& visit) {
  visit(m);
  next_seq_ = m.stream_seq + 1;
  anchor_ = StreamPoint{m.stream_seq, FingerprintOf(m)};
}

StoredMessage SubjectTail::RunMessage::view() const {
  return ViewOf(stream_seq, stored_at_ms, msg.get());
}

Status SubjectTail::Drain(const StreamPoint& through, size_t max_messages,
                          std::vector<RunMessage>* run) {
  // A consumer delivers within milliseconds a message known to be stored; this long without
  // one is a stall.
  const int64_t stall_ms = std::min<int64_t>(nats_->timeout_ms(), 1000);
  uint64_t next = next_seq_;
  while (run->size() < max_messages && next <= through.seq) {
    natsMsg* msg = nullptr;
    natsStatus s = natsSubscription_NextMsg(&msg, sub_, stall_ms);
    if (s != NATS_OK) return NatsFailed("read " + subject_, s);
    RunMessage m;
    m.msg.reset(msg);
    jsMsgMetaData* meta = nullptr;
    s = natsMsg_GetMetaData(&meta, msg);
    if (s != NATS_OK) return NatsFailed("metadata of a message of " + subject_, s);
    m.stream_seq = meta->Sequence.Stream;
    m.stored_at_ms = meta->Timestamp / 1'000'000;
    jsMsgMetaData_Destroy(meta);
    // Delivered again (seen under NATS server kills, as the client re-creates an ordered
    // consumer): a reader takes each message once, in stream order.
    if (m.stream_seq < next) continue;
    next = m.stream_seq + 1;
    run->push_back(std::move(m));
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
