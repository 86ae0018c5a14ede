#include "engine/replay/shard_merge.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <utility>

#include <absl/container/flat_hash_map.h>

namespace bucketd {
namespace {

// Where something first appeared: the record, then (for a record every shard folded) the
// order the lowest shard met it in. A name first met in a shared record was new to every
// shard there, and every shard interns a shared record's names in the same order.
struct FirstUse {
  uint64_t seq;
  uint32_t shard;
  uint32_t local;
  bool operator<(const FirstUse& o) const {
    return std::tie(seq, shard, local) < std::tie(o.seq, o.shard, o.local);
  }
};

using Remap = std::vector<uint32_t>;  // a shard's id -> the merged id

// Interns every shard's names into `merged` in order of first use in the log.
std::vector<Remap> MergeNames(const std::vector<std::unique_ptr<ReplayShard>>& shards,
                              const std::vector<State>& states, Interner State::*names,
                              std::vector<uint64_t> ReplayShard::*first_seq, Interner* merged) {
  absl::flat_hash_map<std::string, FirstUse> first;
  for (uint32_t s = 0; s < shards.size(); ++s) {
    const Interner& local = states[s].*names;
    for (uint32_t id = 0; id < local.size(); ++id) {
      const FirstUse use{((*shards[s]).*first_seq)[id], s, id};
      auto [it, inserted] = first.try_emplace(local.Name(id), use);
      if (!inserted && use < it->second) it->second = use;
    }
  }
  std::vector<std::pair<FirstUse, std::string>> order;
  order.reserve(first.size());
  for (auto& [name, use] : first) order.emplace_back(use, name);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [use, name] : order) merged->Intern(name);

  std::vector<Remap> remaps(shards.size());
  for (uint32_t s = 0; s < shards.size(); ++s) {
    const Interner& local = states[s].*names;
    for (uint32_t id = 0; id < local.size(); ++id) {
      remaps[s].push_back(merged->Find(local.Name(id)));
    }
  }
  return remaps;
}

// Renames a user's ids into the merged numbering; the vectors stay sorted by id.
void RemapUser(const Remap& event_names, const Remap& property_keys, User* user) {
  for (EventHistory& h : user->events) h.set_name_id(event_names[h.name_id()]);
  auto by_name = [](const EventHistory& a, const EventHistory& b) {
    return a.name_id() < b.name_id();
  };
  if (!std::is_sorted(user->events.begin(), user->events.end(), by_name)) {
    std::sort(user->events.begin(), user->events.end(), by_name);
  }
  for (Property& p : user->properties) p.key_id = property_keys[p.key_id];
  auto by_key = [](const Property& a, const Property& b) { return a.key_id < b.key_id; };
  if (!std::is_sorted(user->properties.begin(), user->properties.end(), by_key)) {
    std::sort(user->properties.begin(), user->properties.end(), by_key);
  }
  for (AggregateHistory& h : user->legs.aggregates()) h.set_stream_id(event_names[h.stream_id()]);
  for (SequenceHistory& h : user->legs.sequences()) h.set_stream_id(event_names[h.stream_id()]);
  user->legs.SortByStream();
}

}  // namespace

void ReplayShard::NoteFirstAppearances(uint64_t seq) {
  const State& st = fold.state();
  user_first_seq.resize(st.users.size(), seq);
  event_name_first_seq.resize(st.event_names.size(), seq);
  property_key_first_seq.resize(st.property_keys.size(), seq);
}

Status MergeShards(std::vector<std::unique_ptr<ReplayShard>>* shards_in, uint64_t applied_seq,
                   TimeMs now, Fold* into) {
  std::vector<std::unique_ptr<ReplayShard>>& shards = *shards_in;
  std::vector<State> states;
  uint64_t sweep_due_popped = 0;
  for (auto& shard : shards) {
    sweep_due_popped += shard->fold.sweep_due_popped();
    states.push_back(shard->fold.Release());
  }
  State out;
  const std::vector<Remap> event_names = MergeNames(
      shards, states, &State::event_names, &ReplayShard::event_name_first_seq, &out.event_names);
  const std::vector<Remap> property_keys =
      MergeNames(shards, states, &State::property_keys, &ReplayShard::property_key_first_seq,
                 &out.property_keys);
  // Each shard refused names past the limit on its own; together they may name more (a log
  // a sequential fold would refuse), which histories could not hold (EventHistory).
  if (out.event_names.size() > kEventNameIdsMax) {
    return Status::Corruption("the log names more than " + std::to_string(kEventNameIdsMax) +
                              " event names and derived streams");
  }

  // Every shard keeps at least this many instants per history (the same floor in each,
  // today; the lowest is the one every history is sure to meet).
  out.history_floor = states[0].history_floor;
  // Subscription records are shared (every shard folded all of them), so any shard's are
  // the log's.
  out.subscriptions = std::move(states[0].subscriptions);
  for (const State& st : states) out.history_floor = std::min(out.history_floor, st.history_floor);

  // Buckets: every shard defined the same ones; their totals are per shard.
  State& first = states[0];
  for (size_t s = 1; s < states.size(); ++s) {
    const State& other = states[s];
    for (size_t b = 0; b < first.buckets.size(); ++b) {
      first.buckets[b]->entered_total += other.buckets[b]->entered_total;
      first.buckets[b]->left_total += other.buckets[b]->left_total;
      first.buckets[b]->closed_dwell_ms_total += other.buckets[b]->closed_dwell_ms_total;
    }
  }
  // Every shard's member indices are emptied first: that resets the bookkeeping flags on
  // the slots they reference, or the merged index would take those slots as already queued
  // (or listed) and leave them out of its pages.
  for (State& st : states) {
    for (auto& bucket : st.buckets) bucket->members.clear();
  }
  out.buckets = std::move(first.buckets);
  out.bucket_ids = std::move(first.bucket_ids);
  for (auto& bucket : out.buckets) bucket->due_index.clear();
  // The shards' slots join one pool before the time indices are filled: they file a slot
  // by its index in the pool, which Adopt changes (slot_pool.h).
  for (State& st : states) out.slot_pool.Adopt(std::move(st.slot_pool));

  // Users, in order of first appearance: a k-way merge of the shards' user lists, each
  // already in that order.
  size_t total_users = 0;
  for (const State& st : states) total_users += st.users.size();
  out.users.reserve(total_users);
  std::vector<size_t> next(shards.size(), 0);
  for (size_t n = 0; n < total_users; ++n) {
    size_t pick = shards.size();
    for (size_t s = 0; s < shards.size(); ++s) {
      if (next[s] == shards[s]->user_first_seq.size()) continue;
      if (pick == shards.size() ||
          shards[s]->user_first_seq[next[s]] < shards[pick]->user_first_seq[next[pick]]) {
        pick = s;
      }
    }
    User* user = states[pick].users[next[pick]++];
    user->index = static_cast<uint32_t>(out.users.size());
    RemapUser(event_names[pick], property_keys[pick], user);
    for (Slot* slot : user->slots) {
      if (slot->due_at != kNever) {
        out.buckets[slot->bucket]->due_index.Insert(DueKey{slot->due_at, user->index},
                                                    out.slot_pool.IndexOf(slot));
      }
      // Counted only: the merged index builds its sets at the first read.
      if (slot->active) out.buckets[slot->bucket]->members.Add(slot);
    }
    out.users.push_back(user);
  }

  constexpr size_t kPrefetchDistance = 8;
  out.user_ids.Reserve(out.users.size());
  for (size_t i = 0; i < out.users.size(); ++i) {
    if (i + kPrefetchDistance < out.users.size()) {
      out.user_ids.Prefetch(UserIndex::Hash(out.users[i + kPrefetchDistance]->id));
    }
    out.user_ids.Insert(out.users[i]);
  }

  for (State& st : states) {
    out.transition_seq += st.transition_seq;
    out.user_arena.Adopt(std::move(st.user_arena));
    st.users.clear();
  }
  out.applied_seq = applied_seq;
  out.now = now;
  into->CountSweepDuePopped(sweep_due_popped);
  return into->Restore(std::move(out));
}

}  // namespace bucketd
