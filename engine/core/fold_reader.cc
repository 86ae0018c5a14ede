#include "engine/core/fold_reader.h"

#include <algorithm>
#include <string>

#include "bucketd/limits.h"
#include "engine/core/explain.h"
#include "engine/core/preview.h"
#include "engine/definition/definition.h"
#include "engine/state/digest.h"

namespace bucketd {
namespace {

Member ToMember(const Slot& slot) {
  return Member{slot.user->id,    slot.user->email, slot.entered_at,
                slot.entry_count, slot.source,      slot.dwell_anchor_at};
}

// The slot keeps its last membership's fields after the leave; the reason is only in the
// user's retained past memberships (the newest kPastMembershipsPerUserMax).
PastMember ToPastMember(const Slot& slot) {
  PastMember m{slot.user->id,    slot.user->email, slot.entered_at, slot.last_left_at.value_or(0),
               slot.entry_count, slot.source,      std::nullopt,    slot.dwell_anchor_at};
  for (const PastMembership& p : slot.user->past) {
    if (p.bucket == slot.bucket && p.entry_count == slot.entry_count) m.reason = p.reason;
  }
  return m;
}

// One page of `sorted` (keyset-ordered by userId) after `cursor`, each slot as `to` makes it;
// the next cursor is the page's last userId when more follow. Members and past members page
// alike.
template <typename Page, typename Convert>
Status KeysetPage(const MemberIndex::Sorted& sorted, std::string_view cursor, size_t limit,
                  Convert to, Page* out) {
  if (limit == 0 || limit > kMembersPageMax) {
    return Status::InvalidArgument("limit", MustBeBetween(1, kMembersPageMax));
  }
  out->members.clear();
  out->next_cursor.reset();
  auto it = cursor.empty() ? sorted.begin() : sorted.upper_bound(cursor);
  for (; it != sorted.end() && out->members.size() < limit; ++it) {
    out->members.push_back(to(**it));
  }
  if (it != sorted.end()) out->next_cursor = out->members.back().user_id;
  return Status::Ok();
}

}  // namespace

Status FoldReader::UnknownBucket(std::string_view id) {
  return Status::NotFound("unknown bucket " + std::string(id));
}

BucketInfo FoldReader::Info(const Bucket& b) const {
  BucketInfo info;
  info.id = b.def.id;
  info.enabled = b.def.enabled;
  // The canonical definition plus the flags the engine derives from it.
  std::string json = b.canonical_json;
  json.pop_back();
  json += ",\"timeBased\":";
  json += b.def.criteria && IsTimeBased(*b.def.criteria) ? "true" : "false";
  json += "}";
  info.definition_json = std::move(json);
  info.counts = BucketCounts{b.members.size(), b.entered_total, b.left_total};
  info.due_queue_depth = b.due_index.size();
  return info;
}

std::vector<BucketInfo> FoldReader::ListBuckets() const {
  std::vector<const Bucket*> live;
  for (const auto& b : fold_.state().buckets) {
    if (b->live()) live.push_back(b.get());
  }
  std::sort(live.begin(), live.end(),
            [](const Bucket* a, const Bucket* b) { return a->def.id < b->def.id; });
  std::vector<BucketInfo> out;
  for (const Bucket* b : live) out.push_back(Info(*b));
  return out;
}

Status FoldReader::GetBucket(std::string_view bucket_id, BucketInfo* out) const {
  const Bucket* b = fold_.bucket(bucket_id);
  if (b == nullptr) return UnknownBucket(bucket_id);
  *out = Info(*b);
  return Status::Ok();
}

Status FoldReader::Count(std::string_view bucket_id, uint64_t* count) const {
  const Bucket* b = fold_.bucket(bucket_id);
  if (b == nullptr) return UnknownBucket(bucket_id);
  *count = b->members.size();
  return Status::Ok();
}

Status FoldReader::Metrics(std::string_view bucket_id, BucketMetrics* out) const {
  const Bucket* b = fold_.bucket(bucket_id);
  if (b == nullptr) return UnknownBucket(bucket_id);
  out->size = b->members.size();
  out->entered = b->entered_total;
  out->left = b->left_total;
  out->average_dwell_seconds = b->left_total == 0 ? 0.0
                                                  : static_cast<double>(b->closed_dwell_ms_total) /
                                                        1000.0 / static_cast<double>(b->left_total);
  return Status::Ok();
}

Status FoldReader::Members(std::string_view bucket_id, std::string_view cursor, size_t limit,
                           MembersPage* out) const {
  const Bucket* b = fold_.bucket(bucket_id);
  if (b == nullptr) return UnknownBucket(bucket_id);
  return KeysetPage(b->members.sorted(fold_.state().users, b->index), cursor, limit, ToMember, out);
}

Status FoldReader::PastMembers(std::string_view bucket_id, std::string_view cursor, size_t limit,
                               PastMembersPage* out) const {
  const Bucket* b = fold_.bucket(bucket_id);
  if (b == nullptr) return UnknownBucket(bucket_id);
  return KeysetPage(b->members.past_sorted(fold_.state().users, b->index), cursor, limit,
                    ToPastMember, out);
}

Status FoldReader::GetMember(std::string_view bucket_id, std::string_view user_id,
                             Member* out) const {
  const Bucket* b = fold_.bucket(bucket_id);
  if (b == nullptr) return UnknownBucket(bucket_id);
  if (const User* user = fold_.user(user_id)) {
    for (const auto& slot : user->slots) {
      if (slot->bucket != b->index || !slot->active) continue;
      *out = ToMember(*slot);
      return Status::Ok();
    }
  }
  return Status::NotFound("not a member");
}

Status FoldReader::UserMemberships(std::string_view user_id,
                                   std::vector<MembershipRecord>* out) const {
  const User* found = fold_.user(user_id);
  if (found == nullptr || found->deleted) return Status::NotFound("unknown contact");
  const User& user = *found;
  const auto& buckets = fold_.state().buckets;
  out->clear();
  for (const PastMembership& p : user.past) {
    if (buckets[p.bucket]->deleted) continue;
    out->push_back(MembershipRecord{buckets[p.bucket]->def.id, false, p.entry_count, p.source,
                                    p.entered_at, p.left_at, p.reason, p.dwell_anchor_at});
  }
  for (const auto& slot : user.slots) {
    if (!slot->active || buckets[slot->bucket]->deleted) continue;
    out->push_back(MembershipRecord{buckets[slot->bucket]->def.id, true, slot->entry_count,
                                    slot->source, slot->entered_at, std::nullopt, std::nullopt,
                                    slot->dwell_anchor_at});
  }
  return Status::Ok();
}

Status FoldReader::GetUser(std::string_view user_id, UserInfo* out) const {
  const User* user = fold_.user(user_id);
  if (user == nullptr) return Status::NotFound("unknown contact");
  *out = UserInfo{};
  out->user_id = user->id;
  out->deleted = user->deleted;
  out->email = user->email;
  // A deleted contact's properties and events are gone (Fold::ApplyContactDelete).
  const bucketd::State& state = fold_.state();
  for (const Property& p : user->properties) {
    out->properties.push_back(
        PropertyPatch{state.property_keys.Name(p.key_id), p.value().ToValue()});
  }
  std::sort(out->properties.begin(), out->properties.end(),
            [](const PropertyPatch& a, const PropertyPatch& b) { return a.key < b.key; });
  for (const EventHistory& h : user->events) {
    const std::string& name = state.event_names.Name(h.name_id());
    // The derived streams of filters (docs/design.md) are the engine's, not event names.
    if (name.starts_with(kReservedEventPrefix)) continue;
    out->events.push_back(UserEventSummary{name, h.total_count(), h.first_at, h.last_at});
  }
  std::sort(out->events.begin(), out->events.end(),
            [](const UserEventSummary& a, const UserEventSummary& b) { return a.event < b.event; });
  return Status::Ok();
}

Status FoldReader::CaptureHistory(std::string_view bucket_id, TimeMs now, HistoryBase* out) const {
  const Bucket* b = fold_.bucket(bucket_id);
  if (b == nullptr) return UnknownBucket(bucket_id);
  out->bucket_id = std::string(bucket_id);
  out->transition_seq = fold_.state().transition_seq;
  out->now = now;
  out->active_entered_at.clear();
  out->active_entered_at.reserve(b->members.size());
  for (const Slot* slot : b->members.sorted(fold_.state().users, b->index))
    out->active_entered_at.push_back(slot->entered_at);
  std::sort(out->active_entered_at.begin(), out->active_entered_at.end());
  return Status::Ok();
}

StateInfo FoldReader::State(TimeMs now) const {
  return StateInfo{fold_.state().applied_seq,
                   fold_.state().transition_seq,
                   ComputeDigest(fold_.state()),
                   now,
                   {}};
}

Status FoldReader::Explain(std::string_view bucket_id, std::string_view user_id, TimeMs now,
                           ExplainResult* out) const {
  return ExplainMembership(fold_, bucket_id, user_id, std::max(now, fold_.state().now), out);
}

Status FoldReader::Preview(std::string_view definition_json, TimeMs now, PreviewResult* out) const {
  BucketDefinition def;
  if (Status s = ParseBucketDefinition(definition_json, &def, std::nullopt); !s.ok()) return s;
  if (Status s = CheckNewBucketId(def.id); !s.ok()) return s;
  Record r;
  r.kind = RecordKind::kBucketDefine;
  r.bucket_id = def.id;
  r.definition_json = ToCanonicalJson(def);
  if (Status s = fold_.Check(r); !s.ok()) return s;
  return PreviewDefinition(
      fold_, def, std::max(now, fold_.state().now), [] { return Status::Ok(); }, out);
}

}  // namespace bucketd
