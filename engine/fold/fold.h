#pragma once
// The fold: a pure, deterministic function from log records to State. It never reads
// the OS clock; every instant comes from a record. Apply() either refuses a record
// (returning an error and changing nothing) or applies it completely, appending the
// transitions it caused.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "bucketd/status.h"
#include "engine/base/check.h"
#include "engine/base/record.h"
#include "engine/base/transition_view.h"
#include "engine/fold/criteria_eval.h"
#include "engine/state/state.h"

namespace bucketd {

class Fold {
 public:
  Fold();
  ~Fold();
  Fold(const Fold&) = delete;
  Fold& operator=(const Fold&) = delete;

  // Where the fold re-reads earlier records when a new definition needs event history it
  // did not retain: the source visits every record with seq < before_seq, in order, in
  // runs (a run lets the fold fetch the users of its next records while it folds one).
  // Without a source, such a definition sees only the retained history.
  using RecordsVisitor = std::function<void(std::span<const Record> run)>;
  using HistorySource = std::function<Status(uint64_t before_seq, const RecordsVisitor& visit)>;
  void SetHistorySource(HistorySource source) { history_source_ = std::move(source); }
  const HistorySource& history_source() const { return history_source_; }

  // REQUIRES: record.seq == state().applied_seq + 1 (checked: a broken one stops the
  // process). A record stamped before state().now is refused (Corruption).
  // `known_user`, if not null, is the user record.user_id names, as a Lookahead found it:
  // it spares an event the id lookup (other records ignore it). A wrong one would fold the
  // event into another user: checked by comparing ids.
  Status Apply(const Record& record, std::vector<Transition>* out, User* known_user = nullptr);
  // The same, handing each transition to `sink` (may be null) as a view instead of
  // appending a Transition to a vector: no string is copied.
  Status ApplyTo(const Record& record, TransitionSink* sink, User* known_user = nullptr);
  // Checks what Apply would refuse, without changing anything (the engine calls this
  // before it spends a sequence number).
  Status Check(const Record& record) const;
  // A replay shard (parallel_replay.h) folds only some of the log's records: the ones
  // before `seq` were folded elsewhere, and Apply takes record `seq` next.
  // REQUIRES: seq > state().applied_seq.
  void SkipTo(uint64_t seq) {
    BUCKETD_CHECK(seq > state_.applied_seq);
    state_.applied_seq = seq - 1;
  }

  // Warms the caches for the users of the next inputs of a run (replay and ingest
  // batches) and remembers who they are: see Lookahead (fold_lookahead.h).
  class Lookahead;

  // True when some enabled bucket has an item due at or before `t` (a sweep at t would
  // change something and so must be logged). Const, but like the rest of the fold for one
  // thread only: a look at a time index may sort its earliest page (due_index.h).
  bool HasDue(TimeMs t) const;
  std::optional<TimeMs> NextDue() const;

  const State& state() const { return state_; }
  // Contacts not deleted (the state keeps a deleted contact's id, so users.size() counts it).
  uint64_t live_contacts() const { return state_.users.size() - deleted_contacts_; }
  // Query lookups: a live (not deleted) bucket; a contact, deleted ones included.
  const Bucket* bucket(std::string_view id) const { return FindBucket(id); }
  const User* user(std::string_view id) const { return FindUser(id); }
  const Subscription* subscription(std::string_view id) const { return FindSubscription(id); }
  // Takes a whole state (a decoded snapshot, merged replay shards) and rebuilds what is
  // derived from its definitions (compiled criteria, inverted indices, retention depths).
  // Users' next_due_floor is the state's maker's to set.
  // FailedPrecondition unless the fold is fresh (nothing applied, restored or released).
  Status Restore(State&& state);
  // Gives the state away (a replay shard to the merge) and leaves the fold fresh.
  State Release();
  // Erasure (SPEC §11): a deleted contact is known by `pseudonym` from now on, as the
  // rewritten log names it, so that the state stays the fold of the log. FailedPrecondition
  // unless `user_id` is a deleted contact and no contact is called `pseudonym`.
  Status RenameDeletedUser(std::string_view user_id, const std::string& pseudonym);

  // Due items popped by sweeps, for tests and metrics: a sweep over a bucket with nothing
  // due must pop (touch) none.
  uint64_t sweep_due_popped() const { return sweep_due_popped_; }
  // Pops made by the replay shards merged into this fold (shard_merge.h).
  void CountSweepDuePopped(uint64_t popped) { sweep_due_popped_ += popped; }
  uint64_t last_sweep_due() const { return last_sweep_due_; }

  const CompiledCriteria* compiled(uint32_t bucket) const;
  // Whether a join of `slot` (its entry_count already counting the join) at `at` emits
  // `entered` under the bucket's entryLimit (membership.cc; public for explain).
  bool EntryAllowed(const Bucket& bucket, const Slot& slot, TimeMs at) const;

 private:
  struct Emitter;
  // Apply and ApplyTo: transitions to `out` or to `sink` (at most one set).
  Status ApplyWith(const Record& record, std::vector<Transition>* out, TransitionSink* sink,
                   User* known_user);

  // Inputs.
  Status CheckEvent(const Record& r, User** user) const;
  Status CheckHistoryLimits(const Record& r, const User* user) const;
  Status ApplyEvent(const Record& r, User* user, Emitter* emit);
  Status ApplyContactDelete(const Record& r);
  Status ApplyDefine(const Record& r, Emitter* emit);
  Status ApplyEnable(const Record& r, bool enabled, Emitter* emit);
  Status ApplyBucketDelete(const Record& r);
  Status ApplyMemberAdd(const Record& r, Emitter* emit);
  Status ApplyMemberRemove(const Record& r, Emitter* emit);
  // Webhook subscriptions (subscriptions.cc): no transitions, no effect on memberships.
  Status CheckSubscription(const Record& r) const;
  void ApplySubscription(const Record& r);
  const Subscription* FindSubscription(std::string_view id) const;

  // Membership (membership.cc).
  void EvaluateOnIngest(Slot* slot, TimeMs now, const CompiledCriteria::Outlook& outlook,
                        Emitter* emit, MembershipSource source = MembershipSource::kEvent);
  // After the user's membership of `bucket` changed at `at`: the buckets whose bucket legs
  // read it are evaluated for the user at that instant (SPEC §3b), in dependency order.
  void ReevaluateDependents(User* user, uint32_t bucket, TimeMs at, Emitter* emit);
  // Applies what is due for the slot at instant `due`. `horizon` is the sweep instant
  // (`every` dwell fires coalesce up to it); `at_floor` raises every transition's `at`
  // (the enable instant when a disabled bucket catches up).
  void ProcessDue(Slot* slot, TimeMs due, TimeMs horizon, TimeMs at_floor, Emitter* emit);
  void Join(Slot* slot, TimeMs at, MembershipSource source, bool silent, Emitter* emit);
  void Leave(Slot* slot, TimeMs at, LeaveReason reason, bool silent, Emitter* emit);
  void FireDwell(Slot* slot, TimeMs due, TimeMs limit, TimeMs at_floor, Emitter* emit);
  TimeMs LeaveBound(const Slot& slot, const CompiledCriteria::Outlook& outlook) const;
  // How a definition change reaches the existing population (SPEC §6).
  enum class Reevaluation { kBackfill, kCriteriaChanged, kRefileOnly, kCatchUp };
  void Reevaluate(Bucket* bucket, TimeMs at, Reevaluation mode, Emitter* emit);

  // Time indices (sweep.cc).
  TimeMs ComputeDue(const Slot& slot, TimeMs t) const;
  TimeMs ComputeDue(const Slot& slot, const CompiledCriteria::Outlook& outlook) const;
  CompiledCriteria::Outlook AssessSlot(const Slot& slot, TimeMs t) const;
  void Refile(Slot* slot, TimeMs t);
  // Refile with the criteria outlook at t already known (saves an evaluation).
  void Refile(Slot* slot, TimeMs t, const CompiledCriteria::Outlook& outlook);
  void Unfile(Slot* slot);
  void ApplyUserDue(User* user, TimeMs now, Emitter* emit);
  void PrefetchDue(const DueIndex& index) const;
  uint64_t SweepTo(TimeMs t, Emitter* emit);

  // Helpers.
  User* FindUser(std::string_view id) const;
  // Cache warming, in stages each run a few inputs after the previous one: 0 fetches the
  // id's place in the user map (UserIndex::Prefetch), 1 the user, 2 the user's arrays and
  // email, 3 its slots, histories and properties. Changes nothing, decides nothing.
  static constexpr int kPrefetchStages = 4;
  void PrefetchUserState(const User* user, int stage) const;  // stages 1..3
  User* GetOrCreateUser(std::string_view id);
  Slot* FindSlot(User* user, uint32_t bucket) const;
  Slot* GetOrCreateSlot(User* user, uint32_t bucket);
  Bucket* FindBucket(std::string_view id) const;  // live buckets only
  void RecordEvent(User* user, uint32_t name_id, TimeMs occurred_at);
  // Feeds an event to the derived streams of its name (State::streams_by_event); with
  // `only`, just to the streams whose ids it holds (sorted).
  void FeedStreams(User* user, uint32_t name_id, const Record& r, TimeMs occurred_at,
                   const std::vector<uint32_t>* only = nullptr);
  // The ids of every registered stream, sorted.
  std::vector<uint32_t> StreamIds() const;
  // Rebuilds the streams registered just now (not in `previous`) from the log: a new
  // filter, aggregate or sequence sees every earlier event, as a new name's count does.
  Status RestoreStreams(const std::vector<uint32_t>& previous);
  // Why a definition's bucket legs cannot be accepted (an unknown bucket, a cycle).
  Status CheckBucketRefs(const BucketDefinition& def) const;
  // Refills the retained instants of names whose retention depth just grew.
  Status RestoreHistory(const std::vector<uint32_t>& previous_depth);
  void PatchProperties(User* user, const std::vector<PropertyPatch>& patch, TimeMs at);
  void RebuildInvertedIndices();
  void RankByDependencies();
  bool fresh() const;

  State state_;
  std::vector<std::unique_ptr<CompiledCriteria>> compiled_;  // by bucket index
  std::vector<uint32_t> affected_scratch_;                   // reused by ApplyEvent
  std::vector<uint32_t> patched_keys_scratch_;  // PatchProperties' key ids, for ApplyEvent
  std::string email_scratch_;                   // ApplyEvent's normalized email
  // How a dependent bucket's join is sourced: "event" while an event is applied, else the
  // clock's "reconcile".
  MembershipSource dependent_source_ = MembershipSource::kReconcile;
  // During a sweep: called when a slot is filed, so that a dependent filed at or before the
  // sweep's instant is popped in it too.
  std::function<void(uint32_t bucket)> on_filed_;
  HistorySource history_source_;
  uint64_t sweep_due_popped_ = 0;
  uint64_t deleted_contacts_ = 0;  // state_.users that are deleted, for live_contacts()
  uint64_t last_sweep_due_ = 0;
};

}  // namespace bucketd
