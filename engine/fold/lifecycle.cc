// Bucket definitions over time: define, replace, enable, disable, delete (SPEC §6).
#include <algorithm>
#include <queue>
#include <set>

#include "engine/fold/emitter.h"
#include "engine/fold/fold.h"

namespace bucketd {

bool Fold::fresh() const {
  return state_.applied_seq == 0 && state_.users.empty() && state_.buckets.empty();
}

Status Fold::Restore(State&& state) {
  if (!fresh()) return Status::FailedPrecondition("", "a state restores only into a fresh fold");
  state_ = std::move(state);
  deleted_contacts_ = 0;
  for (const User* user : state_.users) deleted_contacts_ += user->deleted ? 1 : 0;
  RebuildInvertedIndices();
  return Status::Ok();
}

State Fold::Release() {
  State out = std::move(state_);
  state_ = State();
  deleted_contacts_ = 0;
  RebuildInvertedIndices();  // compiled criteria point into the state that left
  return out;
}

void Fold::RebuildInvertedIndices() {
  compiled_.clear();
  compiled_.resize(state_.buckets.size());
  state_.buckets_by_event.clear();
  state_.buckets_by_property.clear();
  state_.streams_by_event.clear();
  state_.dependents.clear();
  state_.eval_rank.clear();
  std::fill(state_.history_depth.begin(), state_.history_depth.end(), 0);
  const auto bucket_index = [this](std::string_view id) {
    return state_.bucket_ids.at(std::string(id));
  };
  bool any_refs = false;
  for (const auto& bucket : state_.buckets) {
    if (bucket->deleted || !bucket->def.criteria) continue;
    auto compiled = std::make_unique<CompiledCriteria>(*bucket->def.criteria, &state_.event_names,
                                                       &state_.property_keys, &state_.history_depth,
                                                       bucket_index);
    // Every live bucket's streams are fed, disabled ones' too (as their depths are kept).
    for (const CompiledCriteria::StreamUse& use : compiled->streams()) {
      if (state_.streams_by_event.size() <= use.name_id) {
        state_.streams_by_event.resize(use.name_id + 1);
      }
      auto& specs = state_.streams_by_event[use.name_id];
      const bool known = std::any_of(specs.begin(), specs.end(), [&](const StreamSpec& s) {
        return s.id == use.spec.id && s.step == use.spec.step;
      });
      if (!known) specs.push_back(use.spec);
    }
    any_refs = any_refs || !compiled->bucket_refs().empty();
    // Disabled buckets keep their history retained so that enabling catches up exactly.
    for (const auto& [name_id, depth] : compiled->name_depths()) {
      if (state_.history_depth.size() <= name_id) state_.history_depth.resize(name_id + 1, 0);
      state_.history_depth[name_id] = std::max(state_.history_depth[name_id], depth);
    }
    if (bucket->def.enabled) {
      for (uint32_t id : compiled->event_name_ids()) {
        if (state_.buckets_by_event.size() <= id) state_.buckets_by_event.resize(id + 1);
        state_.buckets_by_event[id].push_back(bucket->index);
      }
      for (uint32_t id : compiled->property_key_ids()) {
        if (state_.buckets_by_property.size() <= id) state_.buckets_by_property.resize(id + 1);
        state_.buckets_by_property[id].push_back(bucket->index);
      }
    }
    compiled_[bucket->index] = std::move(compiled);
  }
  if (any_refs) RankByDependencies();
}

// Readers after what they read: Kahn's order over the bucket legs, ties by bucket index,
// so that one evaluation per bucket and instant sees its inner buckets settled.
void Fold::RankByDependencies() {
  const size_t n = state_.buckets.size();
  state_.dependents.assign(n, {});
  std::vector<uint32_t> pending(n, 0);  // unranked buckets each one reads
  for (uint32_t b = 0; b < n; ++b) {
    if (compiled_[b] == nullptr) continue;
    for (uint32_t inner : compiled_[b]->bucket_refs()) {
      state_.dependents[inner].push_back(b);
      ++pending[b];
    }
  }
  state_.eval_rank.assign(n, 0);
  std::priority_queue<uint32_t, std::vector<uint32_t>, std::greater<>> ready;
  for (uint32_t b = 0; b < n; ++b) {
    if (pending[b] == 0) ready.push(b);
  }
  uint32_t rank = 0;
  while (!ready.empty()) {
    const uint32_t b = ready.top();
    ready.pop();
    state_.eval_rank[b] = rank++;
    for (uint32_t reader : state_.dependents[b]) {
      if (--pending[reader] == 0) ready.push(reader);
    }
  }
  // Definitions are refused when they would close a cycle (CheckBucketRefs).
  BUCKETD_CHECK_MSG(rank == n, "bucket legs form a cycle");
  for (auto& readers : state_.dependents) {
    std::sort(readers.begin(), readers.end(),
              [&](uint32_t a, uint32_t b) { return state_.eval_rank[a] < state_.eval_rank[b]; });
  }
}

Status Fold::CheckBucketRefs(const BucketDefinition& def) const {
  if (!def.criteria) return Status::Ok();
  std::set<std::string> refs;
  CollectBucketRefs(*def.criteria, &refs);
  const auto own = state_.bucket_ids.find(def.id);
  const bool own_live = own != state_.bucket_ids.end() && !state_.buckets[own->second]->deleted;
  for (const std::string& id : refs) {
    if (id == def.id) {
      return Status::InvalidArgument("criteria", "a bucket leg reads the bucket itself");
    }
    const Bucket* inner = FindBucket(id);
    if (inner == nullptr) {
      return Status::InvalidArgument(
          "criteria", "a bucket leg reads bucket \"" + id + "\", which does not exist");
    }
    if (!own_live) continue;  // nothing reads a bucket that does not exist yet
    // A cycle: the bucket being defined is reachable from what it would read.
    std::vector<uint32_t> stack{inner->index};
    std::vector<bool> seen(state_.buckets.size(), false);
    while (!stack.empty()) {
      const uint32_t b = stack.back();
      stack.pop_back();
      if (b == own->second) {
        return Status::InvalidArgument("criteria", "bucket legs would form a cycle: \"" + id +
                                                       "\" reads \"" + def.id +
                                                       "\" (directly or through other buckets)");
      }
      if (seen[b] || compiled_[b] == nullptr) continue;
      seen[b] = true;
      for (uint32_t next : compiled_[b]->bucket_refs()) stack.push_back(next);
    }
  }
  return Status::Ok();
}

Status Fold::ApplyDefine(const Record& r, Emitter* emit) {
  BucketDefinition def;
  if (Status s = ParseBucketDefinition(r.definition_json, &def); !s.ok()) return s;
  const TimeMs now = state_.now;
  Bucket* bucket = nullptr;
  bool fresh = false;
  if (auto it = state_.bucket_ids.find(def.id); it != state_.bucket_ids.end()) {
    bucket = state_.buckets[it->second].get();
    fresh = bucket->deleted;
  } else {
    // Fold::Check refused a bucket id beyond them before it was logged.
    BUCKETD_CHECK_MSG(state_.buckets.size() < kBucketIdsMax, "more bucket ids than a slot holds");
    auto created = std::make_unique<Bucket>();
    created->index = static_cast<uint32_t>(state_.buckets.size());
    bucket = created.get();
    state_.bucket_ids.emplace(def.id, bucket->index);
    state_.buckets.push_back(std::move(created));
    fresh = true;
  }
  const std::string fingerprint = CriteriaFingerprint(def);
  const bool criteria_changed = !fresh && fingerprint != bucket->fingerprint;
  const bool was_enabled = !fresh && bucket->def.enabled;
  if (fresh) {
    // A re-created id starts over, except that entryCount continues (kept in the slots).
    bucket->deleted = false;
    bucket->ever_enabled = false;
    bucket->entered_total = bucket->left_total = 0;
    bucket->closed_dwell_ms_total = 0;
  }
  bucket->def = std::move(def);
  bucket->canonical_json = ToCanonicalJson(bucket->def);
  bucket->fingerprint = fingerprint;
  const std::vector<uint32_t> previous_depth = state_.history_depth;
  const std::vector<uint32_t> previous_streams = StreamIds();
  RebuildInvertedIndices();
  // A new filter, aggregate or sequence reads every earlier event of its names; a new
  // name or a deeper threshold needs instants the fold did not keep: re-read them.
  if (Status s = RestoreStreams(previous_streams); !s.ok()) return s;
  if (Status s = RestoreHistory(previous_depth); !s.ok()) return s;

  if (!bucket->def.enabled) {
    while (!bucket->due_index.empty()) Unfile(state_.slot_pool.At(bucket->due_index.front()));
  } else if (!bucket->ever_enabled) {
    Reevaluate(bucket, now, Reevaluation::kBackfill, emit);
  } else if (!was_enabled) {
    Reevaluate(bucket, now, Reevaluation::kCatchUp, emit);
  } else if (criteria_changed) {
    Reevaluate(bucket, now, Reevaluation::kCriteriaChanged, emit);
  } else {
    Reevaluate(bucket, now, Reevaluation::kRefileOnly, emit);
  }
  return Status::Ok();
}

Status Fold::ApplyEnable(const Record& r, bool enabled, Emitter* emit) {
  Bucket* bucket = FindBucket(r.bucket_id);
  if (bucket->def.enabled == enabled) return Status::Ok();
  bucket->def.enabled = enabled;
  bucket->canonical_json = ToCanonicalJson(bucket->def);
  RebuildInvertedIndices();
  if (!enabled) {
    // Nothing is evaluated for a disabled bucket; members stay, the index empties.
    while (!bucket->due_index.empty()) Unfile(state_.slot_pool.At(bucket->due_index.front()));
    return Status::Ok();
  }
  Reevaluate(bucket, state_.now,
             bucket->ever_enabled ? Reevaluation::kCatchUp : Reevaluation::kBackfill, emit);
  return Status::Ok();
}

Status Fold::ApplyBucketDelete(const Record& r) {
  Bucket* bucket = FindBucket(r.bucket_id);
  // Active memberships end silently; the slots stay so a re-created id continues
  // entryCount.
  for (auto& user : state_.users) {
    Slot* slot = FindSlot(user, bucket->index);
    if (slot == nullptr) continue;
    Unfile(slot);
    if (slot->active) {
      slot->active = false;
      slot->last_left_at = state_.now;
      slot->user->dwell.EraseBucket(slot->bucket);
      slot->rejoin_blocked = false;
    }
  }
  // Every member left: moving them all at once beats settling each removal (a sort of them
  // all). They are past members, which a re-created id shows (entryCount continues too).
  bucket->members.EndAll();
  bucket->deleted = true;
  RebuildInvertedIndices();
  return Status::Ok();
}

void Fold::Reevaluate(Bucket* bucket, TimeMs at, Reevaluation mode, Emitter* emit) {
  bucket->ever_enabled = true;
  const bool dynamic = bucket->def.kind == BucketKind::kDynamic;
  const CompiledCriteria* criteria = compiled_[bucket->index].get();
  const auto& users = state_.users;
  for (size_t i = 0; i < users.size(); ++i) {
    // Users are adjacent in their arena, which the hardware prefetcher streams; what it
    // cannot guess is where their slots are (PrefetchUserState's last stage, with the
    // histories and properties), fetched a few users ahead. Prefetching whole users as
    // well was slower.
    constexpr size_t kAhead = 8;
    if (i + kAhead < users.size()) PrefetchUserState(users[i + kAhead], kPrefetchStages - 1);
    User* user = users[i];
    if (user->deleted) continue;
    Slot* slot = FindSlot(user, bucket->index);
    if (mode == Reevaluation::kRefileOnly || !dynamic) {
      if (slot != nullptr) {
        if (mode == Reevaluation::kCatchUp) {
          Unfile(slot);
          ProcessDue(slot, at, at, at, emit);
        } else {
          Refile(slot, at);
        }
      }
      continue;
    }
    const auto outlook = criteria->Assess(*user, at);
    const bool may_join_by_clock = bucket->def.reconcile_joins && outlook.next != kNever;
    if (slot == nullptr) {
      if (!outlook.value && !may_join_by_clock) continue;
      slot = GetOrCreateSlot(user, bucket->index);
    }
    Unfile(slot);
    switch (mode) {
      case Reevaluation::kBackfill:
      case Reevaluation::kCriteriaChanged:
        if (slot->active && !outlook.value) {
          Leave(slot, at, LeaveReason::kCriteria, false, emit);
        } else if (!slot->active && outlook.value && !slot->rejoin_blocked) {
          // Backfilled members join silently: a deploy must not flood journeys. Their
          // dwell clock starts when the criteria really began to hold, where provable.
          Join(slot, at, MembershipSource::kBackfill, true, emit);
          slot->dwell_anchor_at = criteria->HeldSince(*user, at);
        }
        Refile(slot, at);
        break;
      case Reevaluation::kCatchUp:
        ProcessDue(slot, at, at, at, emit);
        break;
      case Reevaluation::kRefileOnly:
        break;
    }
  }
}

}  // namespace bucketd
