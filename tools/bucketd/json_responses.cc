#include "json_responses.h"

#include <algorithm>

#include "engine/base/check.h"
#include "http_errors.h"

namespace bucketd::server {
namespace {

void OptionalString(JsonWriter& w, const std::optional<std::string>& value) {
  if (value) {
    w.String(*value);
  } else {
    w.Null();
  }
}

void OptionalTime(JsonWriter& w, const std::optional<TimeMs>& value) {
  if (value) {
    w.Time(*value);
  } else {
    w.Null();
  }
}

void WriteMember(JsonWriter& w, const Member& m) {
  w.BeginObject();
  w.Key("userId").String(m.user_id);
  w.Key("email");
  OptionalString(w, m.email);
  w.Key("enteredAt").Time(m.entered_at);
  w.Key("entryCount").Uint(m.entry_count);
  w.Key("source").String(ToString(m.source));
  w.Key("dwellAnchorAt");
  OptionalTime(w, m.dwell_anchor_at);
  w.EndObject();
}

void WriteMembership(JsonWriter& w, const MembershipRecord& m) {
  w.BeginObject();
  w.Key("bucketId").String(m.bucket_id);
  w.Key("active").Bool(m.active);
  w.Key("entryCount").Uint(m.entry_count);
  w.Key("source").String(ToString(m.source));
  w.Key("enteredAt").Time(m.entered_at);
  w.Key("leftAt");
  OptionalTime(w, m.left_at);
  w.Key("reason");
  if (m.reason) {
    w.String(ToString(*m.reason));
  } else {
    w.Null();
  }
  w.Key("dwellAnchorAt");
  OptionalTime(w, m.dwell_anchor_at);
  w.EndObject();
}

// The stored definition is a JSON object; the counts are appended as its last member so a
// bucket reads as one flat object (docs/api.md).
std::string FlattenedBucket(const BucketInfo& info) {
  std::string_view definition = info.definition_json;
  while (!definition.empty() && definition.back() != '}') definition.remove_suffix(1);
  BUCKETD_CHECK_MSG(!definition.empty(), "definition_json must be a JSON object");
  definition.remove_suffix(1);
  const size_t last = definition.find_last_not_of(" \t\r\n");
  const bool has_members = last != std::string_view::npos && definition[last] != '{';
  JsonWriter counts;
  counts.BeginObject()
      .Key("active")
      .Uint(info.counts.active)
      .Key("entered")
      .Uint(info.counts.entered)
      .Key("left")
      .Uint(info.counts.left)
      .EndObject();
  std::string out(definition);
  out += has_members ? ",\"counts\":" : "\"counts\":";
  out += counts.str();
  out += '}';
  return out;
}

}  // namespace

std::string TransitionsPageJson(const TransitionsPage& page, std::string_view stream_id) {
  JsonWriter w;
  w.BeginObject().Key("transitions").BeginArray();
  for (const Transition& t : page.transitions) WriteTransition(t, &w);
  w.EndArray().Key("next").Uint(page.next).Key("lastSeq").Uint(page.last_seq);
  w.Key("streamId").String(stream_id).EndObject();
  return w.Take();
}

std::string CursorAheadJson(const Status& status, uint64_t last_seq, std::string_view stream_id) {
  const HttpError error = FromStatus(status);
  JsonWriter w;
  w.BeginObject().Key("error").BeginObject();
  w.Key("code").String(error.code).Key("message").String(error.message);
  w.Key("field").String(error.field);
  w.Key("lastSeq").Uint(last_seq).Key("streamId").String(stream_id);
  w.EndObject().EndObject();
  return w.Take();
}

std::string BucketJson(const BucketInfo& info) { return FlattenedBucket(info); }

std::string BucketListJson(const std::vector<BucketInfo>& buckets) {
  JsonWriter w;
  w.BeginObject().Key("buckets").BeginArray();
  for (const BucketInfo& info : buckets) w.Raw(FlattenedBucket(info));
  w.EndArray().EndObject();
  return w.Take();
}

std::string MemberJson(const Member& member) {
  JsonWriter w;
  WriteMember(w, member);
  return w.Take();
}

std::string MembersPageJson(const MembersPage& page) {
  JsonWriter w;
  w.BeginObject().Key("members").BeginArray();
  for (const Member& m : page.members) WriteMember(w, m);
  w.EndArray().Key("cursor");
  OptionalString(w, page.next_cursor);
  w.EndObject();
  return w.Take();
}

std::string PastMembersPageJson(const PastMembersPage& page) {
  JsonWriter w;
  w.BeginObject().Key("members").BeginArray();
  for (const PastMember& m : page.members) {
    w.BeginObject();
    w.Key("userId").String(m.user_id);
    w.Key("email");
    OptionalString(w, m.email);
    w.Key("enteredAt").Time(m.entered_at);
    w.Key("leftAt").Time(m.left_at);
    w.Key("entryCount").Uint(m.entry_count);
    w.Key("source").String(ToString(m.source));
    w.Key("reason");
    if (m.reason) {
      w.String(ToString(*m.reason));
    } else {
      w.Null();
    }
    w.Key("dwellAnchorAt");
    OptionalTime(w, m.dwell_anchor_at);
    w.EndObject();
  }
  w.EndArray().Key("cursor");
  OptionalString(w, page.next_cursor);
  w.EndObject();
  return w.Take();
}

std::string MembershipsJson(std::string_view user_id,
                            const std::vector<MembershipRecord>& memberships) {
  JsonWriter w;
  w.BeginObject().Key("userId").String(user_id).Key("memberships").BeginArray();
  for (const MembershipRecord& m : memberships) WriteMembership(w, m);
  w.EndArray().EndObject();
  return w.Take();
}

std::string UserJson(const UserInfo& user) {
  JsonWriter w;
  w.BeginObject().Key("userId").String(user.user_id).Key("email");
  if (user.email) {
    w.String(*user.email);
  } else {
    w.Null();
  }
  w.Key("deleted").Bool(user.deleted).Key("properties").BeginObject();
  for (const PropertyPatch& p : user.properties) WritePropertyValue(p.value, &w.Key(p.key));
  w.EndObject().Key("events").BeginObject();
  for (const UserEventSummary& e : user.events) {
    w.Key(e.event).BeginObject().Key("count").Uint(e.count);
    w.Key("firstAt").Time(e.first_at).Key("lastAt").Time(e.last_at).EndObject();
  }
  w.EndObject().EndObject();
  return w.Take();
}

std::string PreviewJson(const PreviewResult& preview) {
  JsonWriter w;
  w.BeginObject().Key("count").Uint(preview.count).Key("sample").BeginArray();
  for (const std::string& id : preview.sample) w.String(id);
  w.EndArray().Key("entering").Uint(preview.entering).Key("leaving").Uint(preview.leaving);
  w.EndObject();
  return w.Take();
}

namespace {

void WriteExplainLeg(JsonWriter& w, const ExplainLeg& leg) {
  w.BeginObject();
  w.Key("path").String(leg.path);
  w.Key("type").String(leg.type);
  w.Key("check").String(leg.check);
  w.Key("holds").Bool(leg.holds);
  w.Key("heldSince");
  OptionalTime(w, leg.held_since);
  w.Key("next");
  OptionalTime(w, leg.next);
  // The current value: the fields of the leg's kind (docs/api.md, "Explain").
  w.Key("value").BeginObject();
  if (leg.type == "property") {
    w.Key("current");
    if (leg.current) {
      WritePropertyValue(*leg.current, &w);
    } else {
      w.Null();
    }
    if (leg.check == "before" || leg.check == "after") {
      w.Key("time");
      OptionalTime(w, leg.time);
      w.Key("threshold");
      OptionalTime(w, leg.threshold);
    }
  } else if (leg.type == "event") {
    if (leg.count) w.Key("count").Uint(*leg.count);
    if (leg.contributions) {
      w.Key("aggregate");
      if (leg.aggregate) {
        w.Double(*leg.aggregate);
      } else {
        w.Null();
      }
      w.Key("contributions").Uint(*leg.contributions);
    }
    if (leg.check == "first_seen") {
      w.Key("firstAt");
      OptionalTime(w, leg.first_at);
    }
    if (leg.count || leg.contributions) w.Key("capped").Bool(leg.capped);
    w.Key("windowStart");
    OptionalTime(w, leg.window_start);
  } else if (leg.type == "sequence") {
    w.Key("startedAt");
    OptionalTime(w, leg.started_at);
    w.Key("completedAt");
    OptionalTime(w, leg.completed_at);
    w.Key("deadline");
    OptionalTime(w, leg.deadline);
    w.Key("lookbackEndsAt");
    OptionalTime(w, leg.lookback_ends_at);
  } else if (leg.type == "bucket") {
    w.Key("bucketId").String(leg.bucket_id);
    w.Key("member").Bool(leg.inner_member);
    w.Key("enteredAt");
    OptionalTime(w, leg.inner_entered_at);
  }
  w.EndObject();
  w.EndObject();
}

}  // namespace

std::string ExplainJson(const ExplainResult& r) {
  JsonWriter w;
  w.BeginObject();
  w.Key("bucketId").String(r.bucket_id);
  w.Key("userId").String(r.user_id);
  w.Key("now").Time(r.now);
  w.Key("member").Bool(r.member);
  w.Key("kind").String(r.dynamic ? "dynamic" : "manual");
  w.Key("enabled").Bool(r.enabled);
  w.Key("holds");
  if (r.holds) {
    w.Bool(*r.holds);
  } else {
    w.Null();
  }
  w.Key("heldSince");
  OptionalTime(w, r.held_since);
  w.Key("next");
  OptionalTime(w, r.next);
  w.Key("nextDueAt");
  OptionalTime(w, r.next_due_at);
  w.Key("membership");
  if (r.membership) {
    const ExplainMembershipState& m = *r.membership;
    w.BeginObject();
    w.Key("active").Bool(m.active);
    w.Key("enteredAt").Time(m.entered_at);
    w.Key("entryCount").Uint(m.entry_count);
    w.Key("source").String(ToString(m.source));
    w.Key("dwellAnchorAt");
    OptionalTime(w, m.dwell_anchor_at);
    w.Key("leftAt");
    OptionalTime(w, m.left_at);
    w.Key("maxDwellAt");
    OptionalTime(w, m.max_dwell_at);
    w.EndObject();
  } else {
    w.Null();
  }
  w.Key("legs").BeginArray();
  for (const ExplainLeg& leg : r.legs) WriteExplainLeg(w, leg);
  w.EndArray();
  w.Key("blockers").BeginArray();
  for (const ExplainBlocker& b : r.blockers) {
    w.BeginObject();
    w.Key("kind").String(b.kind);
    w.Key("until");
    OptionalTime(w, b.until);
    w.Key("message").String(b.message);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.Take();
}

std::string HistoryJson(std::string_view bucket_id, const HistoryQuery& query,
                        const std::vector<HistoryStep>& steps) {
  JsonWriter w;
  w.BeginObject().Key("bucketId").String(bucket_id);
  w.Key("from").Time(query.from_ms).Key("to").Time(query.to_ms).Key("step").Int(query.step_ms);
  w.Key("steps").BeginArray();
  for (const HistoryStep& step : steps) {
    w.BeginObject().Key("start").Time(step.start).Key("end").Time(step.end);
    w.Key("size").Uint(step.size).Key("entered").Uint(step.entered).Key("left").Uint(step.left);
    w.EndObject();
  }
  w.EndArray().EndObject();
  return w.Take();
}

std::string BucketMetricsJson(const BucketMetrics& metrics) {
  JsonWriter w;
  w.BeginObject()
      .Key("size")
      .Uint(metrics.size)
      .Key("entered")
      .Uint(metrics.entered)
      .Key("left")
      .Uint(metrics.left)
      .Key("averageDwellSeconds")
      .Double(metrics.average_dwell_seconds)
      .EndObject();
  return w.Take();
}

std::string IngestResultJson(const IngestResult& result) {
  JsonWriter w;
  w.BeginObject()
      .Key("accepted")
      .Uint(result.duplicate ? 0 : 1)
      .Key("duplicates")
      .Uint(result.duplicate ? 1 : 0)
      .Key("rejected")
      .BeginArray()
      .EndArray()
      .Key("transitions")
      .Uint(result.transitions)
      .Key("logSeq")
      .Uint(result.log_seq)
      .EndObject();
  return w.Take();
}

std::string BatchResultJson(const ParsedEvents& parsed, const BatchResult& result) {
  std::vector<BatchItemError> rejected = parsed.rejected;
  for (const BatchItemError& error : result.rejected) {
    BUCKETD_CHECK(error.index < parsed.indices.size());
    rejected.push_back({parsed.indices[error.index], error.error});
  }
  std::sort(rejected.begin(), rejected.end(),
            [](const BatchItemError& a, const BatchItemError& b) { return a.index < b.index; });
  JsonWriter w;
  w.BeginObject();
  w.Key("accepted").Uint(result.accepted);
  w.Key("duplicates").Uint(result.duplicates);
  w.Key("rejected").BeginArray();
  for (const BatchItemError& error : rejected) {
    w.BeginObject().Key("index").Uint(error.index).Key("error").Raw(ErrorObject(error.error));
    w.EndObject();
  }
  w.EndArray();
  w.Key("transitions").Uint(result.transitions);
  w.Key("logSeq").Uint(result.log_seq);
  w.EndObject();
  return w.Take();
}

namespace {

void WriteSubscription(JsonWriter& w, const SubscriptionView& view) {
  const SubscriptionInfo& info = view.info;
  w.BeginObject();
  w.Key("id").String(info.id);
  w.Key("url").String(info.url);
  w.Key("bucket");
  if (info.filter.bucket_id.empty()) {
    w.Null();
  } else {
    w.String(info.filter.bucket_id);
  }
  w.Key("kinds").BeginArray();
  for (TransitionKind kind : info.filter.kinds) w.String(ToString(kind));
  w.EndArray();
  if (view.with_secret) w.Key("secret").String(info.secret);
  w.Key("createdAt").Time(info.created_at);
  DeliveryStatus st;
  if (view.delivery) st = *view.delivery;
  // The worker's cursor runs ahead of the logged one between coalesced advances.
  const uint64_t cursor = std::max(st.cursor, info.cursor);
  w.Key("cursor").Uint(cursor);
  w.Key("loggedCursor").Uint(std::max(st.logged_cursor, info.cursor));
  w.Key("lastSeq").Uint(view.last_seq);
  w.Key("lag").Uint(view.last_seq > cursor ? view.last_seq - cursor : 0);
  w.Key("delivered").Uint(st.delivered);
  w.Key("failedAttempts").Uint(st.failed_attempts);
  w.Key("consecutiveFailures").Uint(st.failures_in_row);
  w.Key("lastError");
  if (st.last_error.empty()) {
    w.Null();
  } else {
    w.String(st.last_error);
  }
  w.Key("lastErrorAt");
  OptionalTime(w, st.last_error_at);
  w.Key("nextAttemptAt");
  OptionalTime(w, st.next_attempt_at);
  w.Key("lastDeliveredAt");
  OptionalTime(w, st.last_delivered_at);
  w.EndObject();
}

}  // namespace

std::string SubscriptionJson(const SubscriptionView& view) {
  JsonWriter w;
  WriteSubscription(w, view);
  return w.Take();
}

std::string SubscriptionListJson(const std::vector<SubscriptionView>& views) {
  JsonWriter w;
  w.BeginObject().Key("subscriptions").BeginArray();
  for (const SubscriptionView& view : views) WriteSubscription(w, view);
  w.EndArray().EndObject();
  return w.Take();
}

std::string SweepJson(const SweepResult& result, TimeMs now_ms) {
  JsonWriter w;
  w.BeginObject()
      .Key("due")
      .Uint(result.due)
      .Key("transitions")
      .Uint(result.transitions)
      .Key("micros")
      .Int(result.micros)
      .Key("now")
      .Time(now_ms)
      .EndObject();
  return w.Take();
}

std::string HealthFailedJson(const Status& health) {
  JsonWriter w;
  w.BeginObject().Key("status").String("failed").Key("error").Raw(ErrorObject(health)).EndObject();
  return w.Take();
}

std::string StateJson(const StateInfo& state) {
  JsonWriter w;
  w.BeginObject()
      .Key("logSeq")
      .Uint(state.log_seq)
      .Key("transitionSeq")
      .Uint(state.transition_seq)
      .Key("digest")
      .String(state.digest)
      .Key("now")
      .Time(state.now);
  if (!state.stream_id.empty()) w.Key("streamId").String(state.stream_id);
  w.EndObject();
  return w.Take();
}

std::string SnapshotJson(const SnapshotInfo& info) {
  JsonWriter w;
  w.BeginObject()
      .Key("path")
      .String(info.path)
      .Key("logSeq")
      .Uint(info.log_seq)
      .Key("bytes")
      .Uint(info.bytes)
      .Key("writeMicros")
      .Int(info.write_micros)
      .EndObject();
  return w.Take();
}

std::string BackupJson(const BackupInfo& info) {
  JsonWriter w;
  w.BeginObject()
      .Key("path")
      .String(info.path)
      .Key("logSeq")
      .Uint(info.log_seq)
      .Key("transitionSeq")
      .Uint(info.transition_seq)
      .Key("digest")
      .String(info.digest)
      .Key("snapshotLogSeq");
  if (info.snapshot_log_seq) {
    w.Uint(*info.snapshot_log_seq);
  } else {
    w.Null();
  }
  w.Key("micros").Int(info.micros).EndObject();
  return w.Take();
}

}  // namespace bucketd::server
