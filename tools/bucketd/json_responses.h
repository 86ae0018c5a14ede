#pragma once
// Engine results -> response bodies, written with JsonWriter. Times are RFC 3339 with
// milliseconds; optional values are written as null.
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/engine.h"
#include "engine/base/json_writer.h"
#include "json_requests.h"
#include "webhook_status.h"

namespace bucketd::server {

// GET /v1/transitions: {"transitions":[…],"next","lastSeq","streamId"}.
std::string TransitionsPageJson(const TransitionsPage& page, std::string_view stream_id);
// The 409 of a cursor beyond the stream's end: the error object also carries "lastSeq" and
// "streamId", so a consumer learns which stream it is talking to without another call.
std::string CursorAheadJson(const Status& status, uint64_t last_seq, std::string_view stream_id);

// The definition object flattened with "counts": {"active","entered","left"} added.
std::string BucketJson(const BucketInfo& info);
std::string BucketListJson(const std::vector<BucketInfo>& buckets);

std::string MemberJson(const Member& member);
std::string MembersPageJson(const MembersPage& page);
std::string PastMembersPageJson(const PastMembersPage& page);
std::string MembershipsJson(std::string_view user_id,
                            const std::vector<MembershipRecord>& memberships);
// GET /v1/users/{userId}: {"userId","email","deleted","properties":{…},"events":{name:{count,
// firstAt,lastAt}}}.
std::string UserJson(const UserInfo& user);
// POST /v1/buckets/preview: {"count","sample","entering","leaving"}.
std::string PreviewJson(const PreviewResult& preview);
// GET /v1/buckets/{id}/explain/{userId}: {"bucketId","userId","now","member","kind","enabled",
// "holds","heldSince","next","nextDueAt","membership","legs":[…],"blockers":[…]}.
std::string ExplainJson(const ExplainResult& explain);
// GET /v1/buckets/{id}/history: {"bucketId","from","to","step"(ms),"steps":[{start,end,size,
// entered,left}]}.
std::string HistoryJson(std::string_view bucket_id, const HistoryQuery& query,
                        const std::vector<HistoryStep>& steps);
std::string BucketMetricsJson(const BucketMetrics& metrics);

// POST /v1/events. `parsed` maps engine batch indices back to the body's item indices and
// holds the items refused before reaching the engine.
std::string IngestResultJson(const IngestResult& result);
std::string BatchResultJson(const ParsedEvents& parsed, const BatchResult& result);

// A subscription as GET /v1/subscriptions/{id} shows it: what the log holds and what the
// delivery worker knows (`delivery`, absent before the worker has seen it). `secret` is
// written only when given (the answer of POST: the one time a generated secret is shown).
struct SubscriptionView {
  SubscriptionInfo info;
  std::optional<DeliveryStatus> delivery;
  uint64_t last_seq = 0;
  bool with_secret = false;
};
std::string SubscriptionJson(const SubscriptionView& view);
std::string SubscriptionListJson(const std::vector<SubscriptionView>& views);

std::string SweepJson(const SweepResult& result, TimeMs now_ms);
// "streamId" is written when the engine has one (a cluster node's state has none).
std::string StateJson(const StateInfo& state);
// GET /healthz of an engine that refuses inputs: {"status":"failed","error":{code,message}}.
std::string HealthFailedJson(const Status& health);
std::string SnapshotJson(const SnapshotInfo& info);
std::string BackupJson(const BackupInfo& info);

}  // namespace bucketd::server
