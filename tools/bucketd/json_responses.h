#pragma once
// Engine results -> response bodies, written with JsonWriter. Times are RFC 3339 with
// milliseconds; optional values are written as null.
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/engine.h"
#include "engine/base/json_writer.h"
#include "json_requests.h"

namespace bucketd::server {

std::string TransitionsPageJson(const std::vector<Transition>& transitions, uint64_t next);

// The definition object flattened with "counts": {"active","entered","left"} added.
std::string BucketJson(const BucketInfo& info);
std::string BucketListJson(const std::vector<BucketInfo>& buckets);

std::string MemberJson(const Member& member);
std::string MembersPageJson(const MembersPage& page);
std::string MembershipsJson(std::string_view user_id,
                            const std::vector<MembershipRecord>& memberships);
std::string BucketMetricsJson(const BucketMetrics& metrics);

// POST /v1/events. `parsed` maps engine batch indices back to the body's item indices and
// holds the items refused before reaching the engine.
std::string IngestResultJson(const IngestResult& result);
std::string BatchResultJson(const ParsedEvents& parsed, const BatchResult& result);

std::string SweepJson(const SweepResult& result, TimeMs now_ms);
std::string StateJson(const StateInfo& state);
// GET /healthz of an engine that refuses inputs: {"status":"failed","error":{code,message}}.
std::string HealthFailedJson(const Status& health);
std::string SnapshotJson(const SnapshotInfo& info);
std::string BackupJson(const BackupInfo& info);

}  // namespace bucketd::server
