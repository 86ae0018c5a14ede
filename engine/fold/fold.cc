#include "engine/fold/fold.h"

#include <algorithm>

#include <simdjson.h>

#include "bucketd/limits.h"
#include "engine/base/check.h"
#include "engine/base/input_rules.h"
#include "engine/fold/emitter.h"
#include "engine/fold/fold_lookahead.h"

namespace bucketd {
namespace {

// Trimmed and lower-cased (ASCII, as the "C" locale's isspace and tolower do), written over
// `out`: a contact's events mostly repeat its email, so the fold normalizes into a scratch
// string (no allocation) and rewrites the user's only when it differs.
void NormalizeEmailInto(std::string_view email, std::string* out) {
  const auto space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  while (!email.empty() && space(email.front())) email.remove_prefix(1);
  while (!email.empty() && space(email.back())) email.remove_suffix(1);
  out->assign(email);
  for (char& c : *out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
}

}  // namespace

Fold::Fold() = default;
Fold::~Fold() = default;

const CompiledCriteria* Fold::compiled(uint32_t bucket) const {
  return bucket < compiled_.size() ? compiled_[bucket].get() : nullptr;
}

Status Fold::Check(const Record& r) const {
  switch (r.kind) {
    case RecordKind::kEvent: {
      User* user = nullptr;
      return CheckEvent(r, &user);
    }
    case RecordKind::kContactDelete: {
      if (Status s = ValidateUserId(r.user_id); !s.ok()) return s;
      if (FindUser(r.user_id) == nullptr) return Status::NotFound("unknown contact");
      return Status::Ok();
    }
    case RecordKind::kBucketDefine: {
      BucketDefinition def;
      if (Status s = ParseBucketDefinition(r.definition_json, &def); !s.ok()) return s;
      // What a definition may intern: per leaf, an event name and a stream key, or a
      // sequence's key and step names. Refused where that could pass kEventNameIdsMax, even
      // if its names are all known already (a bound, not a count: the ids are far off).
      constexpr size_t kNameIdsPerDefinitionMax = kCriteriaLeavesMax * (1 + kSequenceStepsMax);
      if (state_.event_names.size() + kNameIdsPerDefinitionMax > kEventNameIdsMax) {
        return Status::FailedPrecondition(
            "criteria", "this state already names " + std::to_string(state_.event_names.size()) +
                            " event names and derived streams, near the most it holds (" +
                            std::to_string(kEventNameIdsMax) + ")");
      }
      if (!state_.bucket_ids.contains(def.id) && state_.buckets.size() >= kBucketIdsMax) {
        return Status::FailedPrecondition(
            "id", "this state already names " + std::to_string(kBucketIdsMax) +
                      " bucket ids, the most it holds (a deleted id can be defined again)");
      }
      return CheckBucketRefs(def);
    }
    case RecordKind::kBucketEnable:
    case RecordKind::kBucketDisable:
      if (FindBucket(r.bucket_id) == nullptr) return Status::NotFound("unknown bucket");
      return Status::Ok();
    case RecordKind::kBucketDelete: {
      const Bucket* bucket = FindBucket(r.bucket_id);
      if (bucket == nullptr) return Status::NotFound("unknown bucket");
      // A bucket leg must not point at nothing (SPEC §3b): delete the readers first.
      if (bucket->index < state_.dependents.size()) {
        for (uint32_t reader : state_.dependents[bucket->index]) {
          return Status::FailedPrecondition(
              "bucketId", "bucket \"" + state_.buckets[reader]->def.id +
                              "\" reads it in a bucket leg; change or delete that one first");
        }
      }
      return Status::Ok();
    }
    case RecordKind::kMemberAdd:
    case RecordKind::kMemberRemove: {
      const Bucket* bucket = FindBucket(r.bucket_id);
      if (bucket == nullptr) return Status::NotFound("unknown bucket");
      if (Status s = ValidateUserId(r.user_id); !s.ok()) return s;
      if (bucket->def.kind != BucketKind::kManual) {
        return Status::FailedPrecondition("bucketId",
                                          "members of a dynamic bucket follow its criteria");
      }
      if (!bucket->def.enabled) {
        return Status::FailedPrecondition("bucketId", "bucket is disabled");
      }
      User* user = FindUser(r.user_id);
      if (user != nullptr && user->deleted) {
        return Status::FailedPrecondition("userId", "contact was deleted");
      }
      if (r.kind == RecordKind::kMemberRemove) {
        const Slot* slot = user ? FindSlot(user, bucket->index) : nullptr;
        if (slot == nullptr || !slot->active) return Status::NotFound("not a member");
      }
      return Status::Ok();
    }
    case RecordKind::kClockAdvance:
    case RecordKind::kSweep:
      return Status::Ok();
    case RecordKind::kSubscriptionCreate:
    case RecordKind::kSubscriptionDelete:
    case RecordKind::kSubscriptionAdvance:
      return CheckSubscription(r);
  }
  return Status::InvalidArgument("kind", "unknown record kind");
}

// An EventHistory keeps its name id in 24 bits and its count in 40, and an
// AggregateHistory its stream id and count the same way (user.h): an event that would pass
// either limit is refused. Both are far off, so the hot path pays two comparisons: a new
// name needs a look only once the state interned kEventNameIdsMax of them, and a count (at
// most the records folded, each event counting once per history and at most
// kEventPropertiesMax times per aggregate; the snapshot decoder refuses more) only once the
// log holds kEventCountMax / kEventPropertiesMax records.
Status Fold::CheckHistoryLimits(const Record& r, const User* user) const {
  const bool names_full = state_.event_names.size() >= kEventNameIdsMax;
  // An event adds one to each history's count but up to kEventPropertiesMax to an
  // aggregate's (one contribution per key that matches, and keys may repeat).
  if (!names_full && state_.applied_seq < kEventCountMax / kEventPropertiesMax) {
    return Status::Ok();
  }
  const uint32_t name_id = state_.event_names.Find(r.event_name);
  if (name_id == Interner::kNone) {
    if (!names_full) return Status::Ok();
    return Status::FailedPrecondition(
        "event", "this state already names " + std::to_string(kEventNameIdsMax) +
                     " event names and derived streams, the most it holds");
  }
  if (user == nullptr) return Status::Ok();
  // The name's own count, and the counts of the streams derived from it (a filtered
  // stream's history, an aggregate's contributions), which an event of it may add to.
  const auto counts_full = [&](uint32_t id) {
    const EventHistory* history = FindHistory(*user, id);
    return history != nullptr && history->total_count() >= kEventCountMax;
  };
  bool full = counts_full(name_id);
  if (name_id < state_.streams_by_event.size()) {
    for (const StreamSpec& spec : state_.streams_by_event[name_id]) {
      full = full || counts_full(spec.id);
      if (spec.kind != StreamSpec::Kind::kAggregate) continue;
      const AggregateHistory* aggregate = user->legs.FindAggregate(spec.id);
      if (aggregate == nullptr) continue;
      const auto matches = static_cast<uint64_t>(std::ranges::count_if(
          r.event_patch(), [&](const PropertyPatch& p) { return p.key == spec.property; }));
      full = full || aggregate->count() + matches > kEventCountMax;
    }
  }
  if (full) {
    return Status::FailedPrecondition("event", "this contact already has " +
                                                   std::to_string(kEventCountMax) +
                                                   " events of this name, the most a state counts");
  }
  return Status::Ok();
}

// `*user` is the user if known already, else looked up here.
Status Fold::CheckEvent(const Record& r, User** user) const {
  if (Status s = ValidateUserId(r.user_id); !s.ok()) return s;
  if (Status s = ValidateEventName(r.event_name); !s.ok()) return s;
  // The engine refuses these before logging; a log that is not the engine's must not bring
  // one in either: histories keep no instant before 1970 (InstantList::Fits).
  if (Status s = ValidateOccurredAt(r.occurred_at); !s.ok()) return s;
  if (*user == nullptr) *user = FindUser(r.user_id);
  if (*user != nullptr && (*user)->deleted) {
    return Status::FailedPrecondition("userId", "contact was deleted");
  }
  if (Status s = CheckHistoryLimits(r, *user); !s.ok()) return s;
  if (Status s = ValidateContactProperties(r.patch()); !s.ok()) return s;
  return ValidateEventProperties(r.event_patch());
}

Status Fold::Apply(const Record& r, std::vector<Transition>* out, User* known_user) {
  return ApplyWith(r, out, nullptr, known_user);
}

Status Fold::ApplyTo(const Record& r, TransitionSink* sink, User* known_user) {
  return ApplyWith(r, nullptr, sink, known_user);
}

Status Fold::ApplyWith(const Record& r, std::vector<Transition>* out, TransitionSink* sink,
                       User* known_user) {
  BUCKETD_CHECK_MSG(r.seq == state_.applied_seq + 1, "record " + std::to_string(r.seq) + " after " +
                                                         std::to_string(state_.applied_seq));
  // Comparing ids, not looking the user up again: that lookup is what a Lookahead saves.
  BUCKETD_CHECK(known_user == nullptr || known_user->id == r.user_id);
  // Time never moves backwards inside the fold: the engine stamps records with its now,
  // which never does either, so an earlier instant is a log that is not the engine's.
  if (r.at < state_.now) {
    return Status::Corruption("record " + std::to_string(r.seq) + " is stamped " +
                              std::to_string(r.at) + ", before the state's now " +
                              std::to_string(state_.now));
  }
  // Nor past the clock's range (ValidateClockInstant): the state keeps instants the clock
  // took in 48 bits (engine/state/time48.h), so a later one is refused, not cut.
  if (r.at > kInstantMsMax) {
    return Status::Corruption("record " + std::to_string(r.seq) + " is stamped " +
                              std::to_string(r.at) + ", after the end of year 9999");
  }
  // Events are the hot path: checked once, keeping the user lookup for the apply.
  User* event_user = known_user;
  Status check = r.kind == RecordKind::kEvent ? CheckEvent(r, &event_user) : Check(r);
  if (!check.ok()) return check;
  const TimeMs at = r.at;
  state_.now = at;
  Emitter emit(&state_, out, sink, at);
  Status status;
  switch (r.kind) {
    case RecordKind::kEvent:
      status = ApplyEvent(r, event_user, &emit);
      break;
    case RecordKind::kContactDelete:
      status = ApplyContactDelete(r);
      break;
    case RecordKind::kBucketDefine:
      status = ApplyDefine(r, &emit);
      break;
    case RecordKind::kBucketEnable:
      status = ApplyEnable(r, true, &emit);
      break;
    case RecordKind::kBucketDisable:
      status = ApplyEnable(r, false, &emit);
      break;
    case RecordKind::kBucketDelete:
      status = ApplyBucketDelete(r);
      break;
    case RecordKind::kMemberAdd:
      status = ApplyMemberAdd(r, &emit);
      break;
    case RecordKind::kMemberRemove:
      status = ApplyMemberRemove(r, &emit);
      break;
    case RecordKind::kClockAdvance:
    case RecordKind::kSweep:
      last_sweep_due_ = SweepTo(at, &emit);
      break;
    case RecordKind::kSubscriptionCreate:
    case RecordKind::kSubscriptionDelete:
    case RecordKind::kSubscriptionAdvance:
      ApplySubscription(r);
      break;
  }
  // Check() ran first, so an applier can fail only if re-reading the log failed midway:
  // memory would no longer be a fold of the log, so stop loudly rather than diverge.
  BUCKETD_CHECK_MSG(status.ok(), "fold of record " + std::to_string(r.seq) +
                                     " failed midway: " + status.ToString());
  state_.applied_seq = r.seq;
  return Status::Ok();  // not `status`: a copy of two strings per record
}

// --- lookups ---

User* Fold::FindUser(std::string_view id) const { return state_.user_ids.Find(id); }

void Fold::PrefetchUserState(const User* user, int stage) const {
  const auto line = [](const void* p) { __builtin_prefetch(p); };
  // Every line the object overlaps: a 56-byte slot or a 264-byte user is not aligned to
  // lines, so its last bytes may sit on one more line than its size suggests.
  const auto lines = [&](const void* p, size_t bytes) {
    const char* const begin = static_cast<const char*>(p);
    for (size_t offset = 0; offset < bytes; offset += 64) line(begin + offset);
    if (bytes > 0) line(begin + bytes - 1);
  };
  switch (stage) {
    case 1:
      lines(user, sizeof(User));
      break;
    case 2:
      // The arrays' elements past their inline places (null: none, prefetches nothing).
      line(user->events.tail_data());
      line(user->slots.tail_data());
      line(user->properties.data());
      // Events mostly repeat the contact's email, which is compared.
      if (user->email) line(user->email.data());
      line(user->past.allocation());  // a leave appends to it (null: prefetches nothing)
      // The §3b histories are one block (LegHistories), read by every event that feeds a
      // stream and by its legs' evaluation. Its size is in its first line, which has not
      // arrived: the lines of a block with one history of each kind.
      if (user->legs) lines(user->legs.allocation(), LegHistories::kTypicalBytes);
      break;
    default:
      for (const Slot* slot : user->slots) lines(slot, sizeof(Slot));
      // Every line of the histories past the inline ones (which came with the user), without
      // reading them (they may not have arrived: reading one here, to find a deep history's
      // own block, stalled the lookahead). Their count is in the block's first line, which
      // the previous stage fetched.
      lines(user->events.tail_data(), user->events.tail_size() * sizeof(EventHistory));
      lines(user->properties.data(), user->properties.size() * sizeof(Property));
      break;
  }
}

User* Fold::GetOrCreateUser(std::string_view id) {
  if (User* user = FindUser(id)) return user;
  User* user = state_.user_arena.New();
  user->index = static_cast<uint32_t>(state_.users.size());
  user->id = std::string(id);
  state_.users.push_back(user);
  state_.user_ids.Insert(user);
  return user;
}

Slot* Fold::FindSlot(User* user, uint32_t bucket) const {
  for (Slot* slot : user->slots) {
    if (slot->bucket == bucket) return slot;
  }
  return nullptr;
}

Slot* Fold::GetOrCreateSlot(User* user, uint32_t bucket) {
  if (Slot* slot = FindSlot(user, bucket)) return slot;
  Slot* slot = state_.slot_pool.New();
  slot->user = user;
  slot->bucket = bucket;
  GrowForOneMore(&user->slots);
  user->slots.push_back(slot);
  return slot;
}

Bucket* Fold::FindBucket(std::string_view id) const {
  auto it = state_.bucket_ids.find(std::string(id));
  if (it == state_.bucket_ids.end()) return nullptr;
  Bucket* bucket = state_.buckets[it->second].get();
  return bucket->deleted ? nullptr : bucket;
}

// --- events and contacts ---

void Fold::RecordEvent(User* user, uint32_t name_id, TimeMs occurred_at) {
  RecordInHistories(&user->events, name_id, occurred_at, state_.kept_depth(name_id));
}

void Fold::FeedStreams(User* user, uint32_t name_id, const Record& r, TimeMs occurred_at,
                       const std::vector<uint32_t>* only) {
  for (const StreamSpec& spec : state_.streams_by_event[name_id]) {
    if (only != nullptr && !std::binary_search(only->begin(), only->end(), spec.id)) continue;
    if (!FilterHolds(spec.where, r.event_patch())) continue;
    switch (spec.kind) {
      case StreamSpec::Kind::kFiltered:
        RecordEvent(user, spec.id, occurred_at);
        break;
      case StreamSpec::Kind::kAggregate:
      case StreamSpec::Kind::kDistinct:
        for (const PropertyPatch& p : r.event_patch()) {
          if (p.key == spec.property) AddContribution(&user->legs, spec, p.value, occurred_at);
        }
        break;
      case StreamSpec::Kind::kSequence:
        AddSequenceOccurrence(&user->legs, spec, occurred_at);
        break;
    }
  }
}

std::vector<uint32_t> Fold::StreamIds() const {
  std::vector<uint32_t> ids;
  for (const auto& specs : state_.streams_by_event) {
    for (const StreamSpec& spec : specs) ids.push_back(spec.id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

Status Fold::RestoreStreams(const std::vector<uint32_t>& previous) {
  std::vector<uint32_t> fresh;
  for (uint32_t id : StreamIds()) {
    if (!std::binary_search(previous.begin(), previous.end(), id)) fresh.push_back(id);
  }
  if (fresh.empty()) return Status::Ok();
  const auto is_fresh = [&](uint32_t id) {
    return std::binary_search(fresh.begin(), fresh.end(), id);
  };
  // What a stream kept while no definition read it (deleted, now defined again) is stale.
  for (User* user : state_.users) {
    user->events.erase(std::remove_if(user->events.begin(), user->events.end(),
                                      [&](const EventHistory& h) { return is_fresh(h.name_id()); }),
                       user->events.end());
    user->legs.EraseIf(is_fresh);
  }
  if (!history_source_) return Status::Ok();
  return history_source_(state_.applied_seq + 1, [&](std::span<const Record> run) {
    for (const Record& r : run) {
      if (r.kind != RecordKind::kEvent) continue;
      const uint32_t name_id = state_.event_names.Find(r.event_name);
      if (name_id >= state_.streams_by_event.size() || state_.streams_by_event[name_id].empty()) {
        continue;
      }
      User* user = FindUser(r.user_id);
      if (user == nullptr || user->deleted) continue;
      FeedStreams(user, name_id, r, std::min(r.occurred_at, r.at), &fresh);
    }
  });
}

Status Fold::RestoreHistory(const std::vector<uint32_t>& previous_depth) {
  // Only a name now keeping more than it kept needs its instants re-read. Every interned
  // name is looked at: one no bucket references has no depth entry but keeps the floor.
  const uint32_t previous_floor = state_.history_floor;
  std::vector<bool> deeper;
  const auto find_deeper = [&] {
    deeper.assign(state_.event_names.size(), false);
    bool any = false;
    for (uint32_t id = 0; id < deeper.size(); ++id) {
      const uint32_t before = id < previous_depth.size() ? previous_depth[id] : 0;
      deeper[id] = state_.kept_depth(id) > std::max(before, previous_floor);
      any = any || deeper[id];
    }
    return any;
  };
  if (!find_deeper() || !history_source_) return Status::Ok();
  // A state loaded from a version-2 snapshot keeps exactly each depth (floor 0). This pass
  // reads the log anyway, so every name gets the floor's instants back as well.
  if (previous_floor < kNewestKeptMin) {
    state_.history_floor = kNewestKeptMin;
    find_deeper();
  }
  for (auto& user : state_.users) {
    for (EventHistory& h : user->events) {
      if (deeper[h.name_id()]) h.newest.clear();
    }
  }
  // Re-read every earlier event of those names; deleted contacts stay forgotten. The whole
  // log is read, so its users are fetched ahead like a replay's (Lookahead).
  // A filtered stream is deepened through the name that feeds it.
  std::vector<bool> feeds_deeper(deeper.size(), false);
  for (uint32_t id = 0; id < state_.streams_by_event.size() && id < deeper.size(); ++id) {
    for (const StreamSpec& spec : state_.streams_by_event[id]) {
      if (spec.kind == StreamSpec::Kind::kFiltered && spec.id < deeper.size() && deeper[spec.id]) {
        feeds_deeper[id] = true;
      }
    }
  }
  constexpr uint32_t kUnwanted = UINT32_MAX;
  std::vector<uint32_t> name_ids;  // per record of a run: a deepened name, or kUnwanted
  return history_source_(state_.applied_seq + 1, [&](std::span<const Record> run) {
    name_ids.assign(run.size(), kUnwanted);
    for (size_t i = 0; i < run.size(); ++i) {
      if (run[i].kind != RecordKind::kEvent) continue;
      const uint32_t name_id = state_.event_names.Find(run[i].event_name);
      if (name_id < deeper.size() && (deeper[name_id] || feeds_deeper[name_id])) {
        name_ids[i] = name_id;
      }
    }
    Lookahead lookahead(*this);
    for (size_t i = 0; i < run.size(); ++i) {
      lookahead.Advance(i, run.size(), [&](size_t j) -> std::string_view {
        return name_ids[j] != kUnwanted ? std::string_view(run[j].user_id) : std::string_view();
      });
      const uint32_t name_id = name_ids[i];
      if (name_id == kUnwanted) continue;
      const Record& r = run[i];
      User* user = lookahead.user(i, r.user_id);
      if (user == nullptr) user = FindUser(r.user_id);
      if (user == nullptr || user->deleted) continue;
      const auto retain = [&](uint32_t id) {
        auto it =
            std::lower_bound(user->events.begin(), user->events.end(), id,
                             [](const EventHistory& h, uint32_t key) { return h.name_id() < key; });
        if (it != user->events.end() && it->name_id() == id) {
          RetainNewest(&*it, std::min(r.occurred_at, r.at), state_.kept_depth(id));
        }
      };
      if (deeper[name_id]) retain(name_id);
      if (!feeds_deeper[name_id]) continue;
      for (const StreamSpec& spec : state_.streams_by_event[name_id]) {
        if (spec.kind == StreamSpec::Kind::kFiltered && spec.id < deeper.size() &&
            deeper[spec.id] && FilterHolds(spec.where, r.event_patch())) {
          retain(spec.id);
        }
      }
    }
  });
}

void Fold::PatchProperties(User* user, const std::vector<PropertyPatch>& patch, TimeMs at) {
  patched_keys_scratch_.clear();
  const auto find = [user](uint32_t key_id) {
    return std::lower_bound(user->properties.begin(), user->properties.end(), key_id,
                            [](const Property& q, uint32_t id) { return q.key_id < id; });
  };
  // The keys the patch adds, counted first so that the user's array grows once and exactly:
  // it is held for as long as the contact.
  size_t added = 0;
  for (const PropertyPatch& p : patch) {
    const uint32_t key_id = state_.property_keys.Intern(p.key);
    patched_keys_scratch_.push_back(key_id);
    if (p.value.type == PropertyValue::Type::kNull) continue;
    const auto it = find(key_id);
    added += it == user->properties.end() || it->key_id != key_id;
  }
  if (user->properties.size() + added > user->properties.capacity()) {
    user->properties.reserve(user->properties.size() + added);
  }
  for (size_t i = 0; i < patch.size(); ++i) {
    const PropertyPatch& p = patch[i];
    const uint32_t key_id = patched_keys_scratch_[i];
    auto it = find(key_id);
    const bool present = it != user->properties.end() && it->key_id == key_id;
    if (p.value.type == PropertyValue::Type::kNull) {
      if (present) user->properties.erase(it);
    } else if (!present) {
      user->properties.insert(it, Property{key_id, p.value, at});
    } else if (!it->Holds(p.value)) {
      it->set_value(p.value);
      it->changed_at = at;
    }
  }
}

Status Fold::ApplyEvent(const Record& r, User* user, Emitter* emit) {
  const TimeMs now = state_.now;
  if (user == nullptr) user = GetOrCreateUser(r.user_id);
  ApplyUserDue(user, now, emit);

  const bool first_event = !user->has_events;
  user->has_events = true;
  if (r.email) {
    NormalizeEmailInto(*r.email, &email_scratch_);
    if (!user->email || *user->email != email_scratch_) user->email.assign(email_scratch_);
  }
  PatchProperties(user, r.patch(), now);
  const uint32_t name_id = state_.event_names.Intern(r.event_name);
  const TimeMs occurred_at = std::min(r.occurred_at, now);
  RecordEvent(user, name_id, occurred_at);
  if (name_id < state_.streams_by_event.size()) FeedStreams(user, name_id, r, occurred_at);

  // Only buckets that reference the event name or a patched key can change (inverted
  // indices); a contact's first event evaluates them all (absence predicates).
  std::vector<uint32_t>& affected = affected_scratch_;
  affected.clear();
  if (first_event) {
    for (auto& bucket : state_.buckets) affected.push_back(bucket->index);
  } else {
    if (name_id < state_.buckets_by_event.size()) {
      affected.assign(state_.buckets_by_event[name_id].begin(),
                      state_.buckets_by_event[name_id].end());
    }
    for (const uint32_t key_id : patched_keys_scratch_) {
      if (key_id >= state_.buckets_by_property.size()) continue;
      const std::vector<uint32_t>& by_key = state_.buckets_by_property[key_id];
      affected.insert(affected.end(), by_key.begin(), by_key.end());
    }
    // Each list is in bucket order without repeats; only merging lists needs a sort.
    if (!patched_keys_scratch_.empty()) {
      std::sort(affected.begin(), affected.end());
      affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    }
  }
  // A bucket read by another's bucket leg goes first (its change re-evaluates the reader).
  if (!state_.dependents.empty()) {
    std::sort(affected.begin(), affected.end(),
              [&](uint32_t a, uint32_t b) { return state_.eval_rank[a] < state_.eval_rank[b]; });
  }
  dependent_source_ = MembershipSource::kEvent;
  for (uint32_t index : affected) {
    Bucket& bucket = *state_.buckets[index];
    if (!bucket.evaluable() || bucket.def.kind != BucketKind::kDynamic) continue;
    const auto outlook = compiled_[index]->Assess(*user, now);
    Slot* slot = FindSlot(user, index);
    if (slot == nullptr) {
      const bool may_join_by_clock = bucket.def.reconcile_joins && outlook.next != kNever;
      if (!outlook.value && !may_join_by_clock) continue;
      slot = GetOrCreateSlot(user, index);
    }
    EvaluateOnIngest(slot, now, outlook, emit);
  }
  dependent_source_ = MembershipSource::kReconcile;
  return Status::Ok();
}

Status Fold::ApplyContactDelete(const Record& r) {
  User* user = FindUser(r.user_id);
  if (user->deleted) return Status::Ok();
  // Privacy: the contact drops out of every count, list and index at once, silently.
  for (Slot* slot : user->slots) {
    Unfile(slot);
    if (slot->active) {
      slot->active = false;
      state_.buckets[slot->bucket]->members.Remove(slot);
    }
    // The member index must not point at the slot once it is freed.
    state_.buckets[slot->bucket]->members.Forget(slot);
  }
  for (Slot* slot : user->slots) state_.slot_pool.Delete(slot);
  user->slots.clear();
  // The contact is gone, and with it the memory it held (clear() would keep capacity).
  user->past = {};
  user->properties = {};
  user->events.clear();
  user->legs.clear();
  user->email.reset();
  user->dwell = DwellStamps();
  user->deleted = true;
  ++deleted_contacts_;
  return Status::Ok();
}

Status Fold::RenameDeletedUser(std::string_view user_id, const std::string& pseudonym) {
  User* user = FindUser(user_id);
  if (user == nullptr || !user->deleted) {
    return Status::FailedPrecondition("userId", "only a deleted contact is renamed");
  }
  if (FindUser(pseudonym) != nullptr) {
    return Status::FailedPrecondition("userId", "a contact is already called " + pseudonym);
  }
  // A deleted contact holds nothing but its id (ApplyContactDelete cleared the rest), and
  // its index, which stays: the digest hashes users in index order.
  BUCKETD_CHECK(state_.user_ids.Remove(user_id));
  user->id = pseudonym;
  BUCKETD_CHECK(state_.user_ids.Insert(user));
  return Status::Ok();
}

// --- manual membership ---

Status Fold::ApplyMemberAdd(const Record& r, Emitter* emit) {
  Bucket* bucket = FindBucket(r.bucket_id);
  User* user = GetOrCreateUser(r.user_id);
  ApplyUserDue(user, state_.now, emit);
  Slot* slot = GetOrCreateSlot(user, bucket->index);
  if (!slot->active) Join(slot, state_.now, MembershipSource::kManual, false, emit);
  Refile(slot, state_.now);
  return Status::Ok();
}

Status Fold::ApplyMemberRemove(const Record& r, Emitter* emit) {
  Bucket* bucket = FindBucket(r.bucket_id);
  User* user = FindUser(r.user_id);
  ApplyUserDue(user, state_.now, emit);
  Slot* slot = FindSlot(user, bucket->index);
  // A maxDwell leave that fell due just before may already have ended it.
  if (slot->active) Leave(slot, state_.now, LeaveReason::kManual, false, emit);
  Refile(slot, state_.now);
  return Status::Ok();
}

}  // namespace bucketd
