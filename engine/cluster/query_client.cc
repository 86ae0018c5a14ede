#include "engine/cluster/query_client.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <utility>

#include "engine/base/check.h"

namespace bucketd::cluster {

QueryClient::~QueryClient() = default;

Status QueryClient::Open(const StreamOptions& options, std::unique_ptr<QueryClient>* out) {
  std::shared_ptr<NatsConnection> nats;
  if (Status s = NatsConnection::Connect(options.url, options.timeout_ms, &nats); !s.ok()) {
    return s;
  }
  out->reset(new QueryClient(options, std::move(nats)));
  return Status::Ok();
}

Status QueryClient::Ask(const std::vector<uint32_t>& partitions, const std::string& request,
                        TimeMs timeout_ms, std::map<uint32_t, std::string>* replies) {
  replies->clear();
  if (partitions.empty()) return Status::Ok();
  // One inbox per request, a reply subject per partition under it: the replies of all the
  // partitions come back on one subscription, each naming its partition.
  char* inbox = nullptr;
  if (natsInbox_Create(&inbox) != NATS_OK) return Status::IoError("natsInbox_Create");
  std::string prefix(inbox);
  natsInbox_Destroy(inbox);
  prefix += '.';
  prefix += std::to_string(++asked_);
  prefix += '.';
  std::string wildcard = prefix;
  wildcard += '*';
  natsSubscription* sub = nullptr;
  natsStatus s = natsConnection_SubscribeSync(&sub, nats_->connection(), (prefix + "*").c_str());
  if (s != NATS_OK) return NatsFailed("subscribe " + prefix + "*", s);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  // Asks the partitions not answered yet. During a handover a partition may have no owner
  // subscribed for a moment (the server answers "no responders"): those are asked again
  // every kResendEvery until the deadline (a busy owner answers each copy it gets, so not
  // often).
  constexpr auto kResendEvery = std::chrono::milliseconds(500);
  auto ask_missing = [&]() -> Status {
    for (const uint32_t p : partitions) {
      if (replies->count(p) != 0) continue;
      BUCKETD_CHECK(p < options_.partitions);
      const std::string subject = QuerySubjectOf(options_.cluster, p);
      std::string reply = prefix;
      reply += std::to_string(p);
      const natsStatus ps =
          natsConnection_PublishRequest(nats_->connection(), subject.c_str(), reply.c_str(),
                                        request.data(), static_cast<int>(request.size()));
      if (ps != NATS_OK) return NatsFailed("query " + subject, ps);
    }
    return Status::Ok();
  };
  Status result = ask_missing();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto next_resend = std::chrono::steady_clock::now() + kResendEvery;
  while (result.ok() && replies->size() < partitions.size()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    if (now >= next_resend) {
      result = ask_missing();
      next_resend = now + kResendEvery;
      continue;
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min(deadline, next_resend) - now);
    natsMsg* msg = nullptr;
    s = natsSubscription_NextMsg(&msg, sub, std::max<int64_t>(1, wait.count()));
    if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS) {
      natsMsg_Destroy(msg);
      continue;
    }
    if (s != NATS_OK) {
      result = NatsFailed("query replies", s);
      break;
    }
    const std::string_view subject = natsMsg_GetSubject(msg);
    const std::string_view tail = subject.substr(std::min(prefix.size(), subject.size()));
    const uint32_t p = static_cast<uint32_t>(std::strtoul(std::string(tail).c_str(), nullptr, 10));
    // The first answer per partition counts (an old and a new owner may both answer during a
    // handover; both folded the same stream).
    if (natsMsg_GetDataLength(msg) > 0) {
      replies->emplace(p, std::string(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)));
    }
    natsMsg_Destroy(msg);
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  if (!result.ok()) return result;
  if (replies->size() < partitions.size()) {
    std::string missing;
    for (const uint32_t p : partitions) {
      if (replies->count(p) != 0) continue;
      if (!missing.empty()) missing += ',';
      missing += std::to_string(p);
    }
    return Status::IoError("no answer within " + std::to_string(timeout_ms) +
                           " ms from the owners of partitions " + missing);
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
