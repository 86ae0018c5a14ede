#include "engine/cluster/leases.h"

#include <algorithm>
#include <string_view>
#include <utility>

namespace bucketd::cluster {
namespace {

constexpr std::string_view kNodePrefix = "node.";

std::string LeaseKey(uint32_t partition) { return "p." + std::to_string(partition); }
std::string NodeKey(const std::string& node_id) { return std::string(kNodePrefix) + node_id; }

}  // namespace

LeaseTable::LeaseTable(std::shared_ptr<NatsConnection> nats, std::string bucket, kvStore* kv)
    : nats_(std::move(nats)), bucket_(std::move(bucket)), stream_("KV_" + bucket_), kv_(kv) {}

LeaseTable::~LeaseTable() { kvStore_Destroy(kv_); }

Status LeaseTable::Open(std::shared_ptr<NatsConnection> nats, const LeaseOptions& options,
                        std::unique_ptr<LeaseTable>* out) {
  if (!ValidNameToken(options.cluster)) {
    return Status::InvalidArgument("cluster", "must be 1-64 characters of [A-Za-z0-9_-]");
  }
  if (options.ttl_ms < 100) return Status::InvalidArgument("leaseTtl", "must be at least 100ms");
  const std::string bucket = "BUCKETD_LEASES_" + options.cluster;
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, nats->js(), bucket.c_str());
  if (s == NATS_NOT_FOUND) {
    kvConfig config;
    kvConfig_Init(&config);
    config.Bucket = bucket.c_str();
    config.Description = "bucketd partition leases and live nodes";
    config.History = 1;
    config.TTL = options.ttl_ms * 1'000'000;  // nanoseconds: the stream's MaxAge
    config.StorageType = js_FileStorage;
    config.Replicas = options.replicas;
    s = js_CreateKeyValue(&kv, nats->js(), &config);
    // Another node created it meanwhile.
    if (s != NATS_OK) s = js_KeyValue(&kv, nats->js(), bucket.c_str());
  }
  if (s != NATS_OK) return NatsFailed("lease bucket " + bucket, s);
  // Every node must judge expiry by the bucket's TTL: one renewing less often than the
  // bucket expires would lose its leases, one waiting longer would take over late.
  kvStatus* status = nullptr;
  s = kvStore_Status(&status, kv);
  if (s != NATS_OK) {
    kvStore_Destroy(kv);
    return NatsFailed("lease bucket " + bucket, s);
  }
  const int64_t ttl_ns = kvStatus_TTL(status);
  kvStatus_Destroy(status);
  if (ttl_ns != options.ttl_ms * 1'000'000) {
    kvStore_Destroy(kv);
    return Status::FailedPrecondition("leaseTtl", "bucket " + bucket + " has a TTL of " +
                                                      std::to_string(ttl_ns / 1'000'000) +
                                                      " ms; every node of the cluster must use it");
  }
  out->reset(new LeaseTable(std::move(nats), bucket, kv));
  return Status::Ok();
}

Status LeaseTable::Announce(const std::string& node_id) {
  const std::string key = NodeKey(node_id);
  const natsStatus s = kvStore_PutString(nullptr, kv_, key.c_str(), node_id.c_str());
  return s == NATS_OK ? Status::Ok() : NatsFailed("announce " + key, s);
}

Status LeaseTable::Withdraw(const std::string& node_id) {
  // A purge of the key's subject, not a KV delete: a delete leaves a marker message that
  // LiveNodes would count as a live node until the TTL.
  const std::string subject = "$KV." + bucket_ + "." + NodeKey(node_id);
  jsOptions options;
  jsOptions_Init(&options);
  options.Stream.Purge.Subject = subject.c_str();
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s = js_PurgeStream(nats_->js(), stream_.c_str(), &options, &js_error);
  return s == NATS_OK ? Status::Ok() : NatsFailed("withdraw " + subject, s, js_error);
}

Status LeaseTable::LiveNodes(std::vector<std::string>* out) {
  out->clear();
  // The bucket stream's subjects with messages, from one stream-info request: no consumer is
  // created (a KV keys listing creates one per call, which a loaded JetStream cluster
  // answers slowly), and an entry past its TTL is gone from the subjects.
  const std::string prefix = "$KV." + bucket_ + "." + std::string(kNodePrefix);
  const std::string filter = prefix + ">";
  jsOptions options;
  jsOptions_Init(&options);
  options.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* info = nullptr;
  jsErrCode js_error = jsErrCode(0);
  const natsStatus s = js_GetStreamInfo(&info, nats_->js(), stream_.c_str(), &options, &js_error);
  if (s != NATS_OK) return NatsFailed("live nodes of " + bucket_, s, js_error);
  if (const jsStreamStateSubjects* subjects = info->State.Subjects; subjects != nullptr) {
    for (int i = 0; i < subjects->Count; ++i) {
      const std::string_view subject = subjects->List[i].Subject;
      if (subjects->List[i].Msgs > 0 && subject.starts_with(prefix)) {
        out->emplace_back(subject.substr(prefix.size()));
      }
    }
  }
  jsStreamInfo_Destroy(info);
  std::sort(out->begin(), out->end());
  return Status::Ok();
}

Status LeaseTable::Acquire(uint32_t partition, const std::string& node_id, uint64_t* revision) {
  const std::string key = LeaseKey(partition);
  const natsStatus s = kvStore_CreateString(revision, kv_, key.c_str(), node_id.c_str());
  if (s == NATS_OK) return Status::Ok();
  // The client reports "the key exists" as a failed write; tell it from a failed request.
  std::string holder;
  uint64_t held_at = 0;
  if (Status h = HolderAt(partition, &holder, &held_at); !h.ok()) return h;
  if (holder == node_id) {
    // An earlier create of this node's timed out but was stored, or this node's previous
    // process (same id) held it when it died: the lease is this node's. Written again at once,
    // so that its TTL counts from now: the caller takes the lease as renewed now, and the
    // earlier write may be most of a TTL old (a restarted node's), which would expire before
    // the caller's first renewal and let another node take a partition this one still folds.
    *revision = held_at;
    return Renew(partition, node_id, revision);
  }
  if (!holder.empty()) {
    return Status::FailedPrecondition(
        "", "partition " + std::to_string(partition) + " is leased to node " + holder);
  }
  // No holder now, yet the create failed: the lease was released or expired between the two
  // requests (a handover in progress). Not an error: the next round takes it.
  return Status::FailedPrecondition(
      "", "partition " + std::to_string(partition) + " was held a moment ago; free now");
}

Status LeaseTable::Renew(uint32_t partition, const std::string& node_id, uint64_t* revision) {
  const std::string key = LeaseKey(partition);
  uint64_t written = 0;
  const natsStatus s = kvStore_UpdateString(&written, kv_, key.c_str(), node_id.c_str(), *revision);
  if (s == NATS_OK) {
    *revision = written;
    return Status::Ok();
  }
  std::string holder;
  uint64_t held_at = 0;
  if (Status h = HolderAt(partition, &holder, &held_at); !h.ok())
    return NatsFailed("renew " + key, s);
  if (holder == node_id && held_at != *revision) {
    // An earlier renewal of this node's timed out but was stored: adopt its revision, and
    // renew again next time.
    *revision = held_at;
    return Status::Ok();
  }
  if (holder != node_id || held_at != *revision) {
    return Status::FailedPrecondition(
        "", "lease on partition " + std::to_string(partition) + " expired or was taken");
  }
  return NatsFailed("renew " + key, s);
}

Status LeaseTable::Release(uint32_t partition, const std::string& node_id, uint64_t revision) {
  // Renewing first proves the lease is still ours; nobody can take an existing key, so the
  // delete right after removes our lease and not a successor's.
  if (Status s = Renew(partition, node_id, &revision); !s.ok()) return s;
  const std::string key = LeaseKey(partition);
  const natsStatus s = kvStore_Delete(kv_, key.c_str());
  return s == NATS_OK ? Status::Ok() : NatsFailed("release " + key, s);
}

Status LeaseTable::Holder(uint32_t partition, std::string* node_id) {
  uint64_t revision = 0;
  return HolderAt(partition, node_id, &revision);
}

Status LeaseTable::HolderAt(uint32_t partition, std::string* node_id, uint64_t* revision) {
  node_id->clear();
  *revision = 0;
  const std::string key = LeaseKey(partition);
  kvEntry* entry = nullptr;
  const natsStatus s = kvStore_Get(&entry, kv_, key.c_str());
  if (s == NATS_NOT_FOUND) return Status::Ok();
  if (s != NATS_OK) return NatsFailed("lease " + key, s);
  *node_id = std::string(static_cast<const char*>(kvEntry_Value(entry)), kvEntry_ValueLen(entry));
  *revision = kvEntry_Revision(entry);
  kvEntry_Destroy(entry);
  return Status::Ok();
}

}  // namespace bucketd::cluster
