#pragma once
// The in-memory state the fold builds from the log. Plain data: the fold (fold.h) owns
// and mutates it; the digest and the snapshot read it; nothing else touches it.
//
// Layout choices (Redis-style: each structure picked for its cost):
// - A Slot is one (user, bucket) pair the engine tracks: the active membership, or a
//   non-member whose state the clock can change. Slots live in a pool (slot_pool.h) and
//   are filed in their bucket's time index (due_index.h) while the clock can change them.
// - Each bucket keeps its active members in a B-tree ordered by userId (keyset paging),
//   at ~1.2 pointers per member instead of a std::set's 4-pointer node, maintained lazily
//   (member_index.h).
// - Event history keeps, per (user, event name), only the newest instants any criteria leg
//   can still look at (see EventHistory), plus the all-time count and first/last instant.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <absl/container/btree_set.h>
#include <absl/container/flat_hash_map.h>
#include <absl/container/inlined_vector.h>

#include "bucketd/types.h"
#include "engine/base/interner.h"
#include "engine/definition/definition.h"
#include "engine/state/due_index.h"
#include "engine/state/member_index.h"
#include "engine/state/slot_pool.h"
#include "engine/state/user.h"
#include "engine/state/user_arena.h"
#include "engine/state/user_index.h"

namespace bucketd {

struct Bucket {
  uint32_t index = 0;  // dense, in order of first definition; never reused
  BucketDefinition def;
  std::string canonical_json;
  std::string fingerprint;
  bool deleted = false;
  // Backfilled once: enabling a bucket that never was evaluated backfills it silently
  // instead of catching up with emitted transitions.
  bool ever_enabled = false;

  DueIndex due_index;
  MemberIndex members;
  uint64_t entered_total = 0;
  uint64_t left_total = 0;
  int64_t closed_dwell_ms_total = 0;

  bool live() const { return !deleted; }
  bool evaluable() const { return !deleted && def.enabled; }
};

// A webhook subscription (SPEC §10) as the log built it. Delivery itself (attempts, errors,
// backoff) is not state: it lives in the server's delivery worker, and only its outcome,
// "delivered through seq N", comes back through the log as a cursor advance.
struct Subscription {
  std::string id;
  std::string url;
  std::string secret;
  std::string bucket_id;              // empty: every bucket
  std::vector<TransitionKind> kinds;  // empty: every kind
  uint64_t cursor = 0;                // delivered through this transition seq
  TimeMs created_at = 0;

  friend bool operator==(const Subscription&, const Subscription&) = default;
};

// A stream of events some criteria leg of SPEC §3b reads: the events of one name that pass
// a `where` filter, kept per user as an EventHistory (kFiltered, like a name's own), an
// AggregateHistory (kAggregate) or one step of a SequenceHistory (kSequence). Its id is an
// interned key in State::event_names starting with kReservedEventPrefix, which no input
// event name can, so stream ids and event name ids share one space without meeting.
struct StreamSpec {
  enum class Kind : uint8_t { kFiltered, kAggregate, kSequence };
  Kind kind = Kind::kFiltered;
  uint32_t id = 0;
  std::vector<PropertyFilter> where;
  std::string property;  // kAggregate: the property aggregated
  uint32_t step = 0;     // kSequence: which step (0-based) this name and filter feed
  uint32_t steps = 0;    // kSequence: how many steps
};

struct State {
  uint64_t applied_seq = 0;     // last log record folded
  uint64_t transition_seq = 0;  // last transition emitted
  TimeMs now = 0;               // instant of the last record folded

  Interner event_names;
  Interner property_keys;
  // Retention depth per event name id (see EventHistory::newest); ids past the end: 0.
  std::vector<uint32_t> history_depth;
  // The fewest newest instants kept per (user, name): kNewestKeptMin, or 0 in a state
  // loaded from a snapshot written before the floor existed (it kept exactly the depth).
  uint32_t history_floor = kNewestKeptMin;

  uint32_t depth(uint32_t name_id) const { return DepthOf(history_depth, name_id); }
  // How many newest instants a history of the name keeps.
  uint32_t kept_depth(uint32_t name_id) const { return std::max(depth(name_id), history_floor); }

  std::vector<std::unique_ptr<Bucket>> buckets;  // by Bucket::index
  absl::flat_hash_map<std::string, uint32_t> bucket_ids;
  // Inverted indices: which live buckets an event name / property key can affect.
  // Indexed by event name id / property key id (dense); ids past the end concern none.
  std::vector<std::vector<uint32_t>> buckets_by_event;
  std::vector<std::vector<uint32_t>> buckets_by_property;
  // Derived like them: the streams fed by each event name id (every live bucket's, disabled
  // ones too, so that enabling catches up exactly), the buckets whose bucket legs read each
  // bucket, and each bucket's place in an order where a bucket comes after those it reads.
  std::vector<std::vector<StreamSpec>> streams_by_event;
  std::vector<std::vector<uint32_t>> dependents;
  std::vector<uint32_t> eval_rank;

  SlotPool slot_pool;        // owns every User::slots entry
  UserArena user_arena;      // owns every User
  std::vector<User*> users;  // by User::index
  UserIndex user_ids;        // by User::id

  // In creation order. A vector searched linearly: at most kSubscriptionsMax of them.
  std::vector<Subscription> subscriptions;
};

}  // namespace bucketd
