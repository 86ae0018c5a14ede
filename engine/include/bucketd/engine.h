#pragma once
// The embedded bucketd engine: the one header a host program (and the bucketd server and
// bucketctl) includes. See ../shared/SPEC.md for the semantics every call implements.
//
// Threading: an Engine is owned by one thread; every method except those marked
// "thread-safe" must be called from that thread. The server funnels requests to its owner
// thread; readers get a consistent view because no mutation can interleave with a call.
//
// Errors are Status values (never exceptions), except running out of memory: the engine
// does not catch std::bad_alloc, which then ends the process (or reaches a host that
// catches it, with the engine unusable: destroy it and open again). Nothing acknowledged
// is lost either way: the log on disk is the source of truth.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/limits.h"
#include "bucketd/status.h"
#include "bucketd/types.h"

namespace bucketd {

enum class Durability : uint8_t {
  kSync,   // acknowledged after the log is fsynced (group commit amortizes the fsync)
  kAsync,  // acknowledged after the write; a machine crash may lose the last moments
};

enum class ClockMode : uint8_t {
  kWall,    // now = the OS wall clock
  kManual,  // now moves only through AdvanceClock(); starts at the last logged instant
};

struct Options {
  std::string data_dir = "./bucketd-data";
  Durability durability = Durability::kSync;
  ClockMode clock = ClockMode::kWall;
  // Manual clock on a data dir with an empty log: the starting instant (else wall time).
  std::optional<TimeMs> start_time_ms;

  // Automatic snapshots: after this many log records / this much time (0 disables each).
  uint64_t snapshot_every_records = 1'000'000;
  TimeMs snapshot_every_ms = 10 * 60 * 1000;
  uint32_t snapshots_kept = 3;
  // Automatic snapshots are written by a fork()ed child (copy-on-write, like Redis's
  // BGSAVE): the owner thread pauses only for the fork. The child is reaped by the engine
  // (waitpid on its pid), so a host that reaps every child itself (SIGCHLD handler with
  // waitpid(-1), or SIGCHLD ignored) must set this false: snapshots are then written on
  // the calling thread, which blocks for the whole serialization (~1 s per 10M
  // memberships). On-demand TakeSnapshot() never forks.
  bool snapshot_fork = true;

  // Start-up: false ignores snapshots and replays the whole log.
  bool use_snapshots = true;
  // Replay only records with an instant <= this (state as of T). Implies read_only.
  std::optional<TimeMs> replay_until_ms;
  // Open the log without accepting inputs (bucketctl). Mutating calls fail.
  bool read_only = false;
  // Open also checks the whole log (every checksum, record, transition and idempotency
  // key) and that a full replay reproduces the stored transition stream exactly; any
  // difference fails the open with Corruption. REQUIRES: read_only, !use_snapshots.
  // For `bucketctl verify`: it reads everything and replays on one thread.
  bool check_log = false;
  // Threads that replay the log when there is no snapshot to start from: 0 picks one per
  // core but one (the log's reader takes it; at most 8) for a log of 10,000 records or
  // more, else 1; 1 replays on the opening thread. The state is the same either way.
  uint32_t replay_threads = 0;
};

struct EventInput {
  std::string user_id;
  std::string event;
  std::optional<TimeMs> occurred_at_ms;  // default: the engine's now; later than now: clamped
  std::optional<std::string> email;
  std::vector<PropertyPatch> contact_properties;
  std::optional<std::string> idempotency_key;
  // The event's own properties (SPEC §3b): scalars, at most kEventPropertiesMax keys; not
  // merged into the contact. Only `where` filters, aggregates and sequences read them. Last,
  // so that embedders' aggregate initializers written before it keep compiling.
  std::vector<PropertyPatch> properties = {};
};

struct IngestResult {
  bool duplicate = false;
  uint32_t transitions = 0;
  uint64_t log_seq = 0;  // the log position after this input
};

struct BatchItemError {
  size_t index = 0;
  Status error;
};

struct BatchResult {
  uint32_t accepted = 0;
  uint32_t duplicates = 0;
  std::vector<BatchItemError> rejected;
  uint32_t transitions = 0;
  uint64_t log_seq = 0;
};

struct SweepResult {
  uint64_t due = 0;  // due items popped from the time indices
  uint32_t transitions = 0;
  int64_t micros = 0;  // wall time the sweep took (measurement only)
};

// What an erasure (Engine::EraseContact) did.
struct ErasureResult {
  // What the log and the transition stream call the contact from now on: "erased-" and 32
  // random hex digits, drawn at the erasure (not derived from the id, so nothing confirms
  // a guess).
  std::string pseudonym;
  uint64_t records = 0;           // log records rewritten
  uint64_t transitions = 0;       // transitions rewritten
  uint64_t idempotency_keys = 0;  // keys forgotten
  int64_t micros = 0;             // wall time, compaction included (measurement only)
};

struct BucketCounts {
  uint64_t active = 0;
  uint64_t entered = 0;  // memberships ever opened (including silent ones)
  uint64_t left = 0;     // memberships ever closed
};

struct BucketInfo {
  std::string id;
  bool enabled = true;
  // The normalized definition as JSON, including the derived flags
  // ("timeBased", "reconcileJoins", "criteriaFingerprint").
  std::string definition_json;
  BucketCounts counts;
  uint64_t due_queue_depth = 0;  // entries in the bucket's time index
};

struct BucketMetrics {
  uint64_t size = 0;
  uint64_t entered = 0;
  uint64_t left = 0;
  double average_dwell_seconds = 0;  // over closed memberships
};

struct Member {
  std::string user_id;
  std::optional<std::string> email;
  TimeMs entered_at = 0;
  uint32_t entry_count = 0;
  MembershipSource source = MembershipSource::kEvent;
  std::optional<TimeMs> dwell_anchor_at;
};

struct MembersPage {
  std::vector<Member> members;
  std::optional<std::string> next_cursor;  // the last userId of this page, if more follow
};

struct MembershipRecord {
  std::string bucket_id;
  bool active = false;
  uint32_t entry_count = 0;
  MembershipSource source = MembershipSource::kEvent;
  TimeMs entered_at = 0;
  std::optional<TimeMs> left_at;
  std::optional<LeaveReason> reason;
  std::optional<TimeMs> dwell_anchor_at;
};

// A contact as the state holds it (GET /v1/users/{userId}): its properties, and per event
// name the state retains (every name the user sent) how many and the first and last instant.
struct UserEventSummary {
  std::string event;
  uint64_t count = 0;
  TimeMs first_at = 0;
  TimeMs last_at = 0;
};

struct UserInfo {
  std::string user_id;
  std::optional<std::string> email;
  // A deleted contact (SPEC §2) keeps only its id: no email, properties or events.
  bool deleted = false;
  std::vector<PropertyPatch> properties;  // by key; never a null value
  std::vector<UserEventSummary> events;   // by event name
};

// What a definition's criteria select now (POST /v1/buckets/preview), against the stored
// bucket of the same id. Nothing is logged and no state changes.
struct PreviewResult {
  uint64_t count = 0;               // live contacts for whom the criteria hold now
  std::vector<std::string> sample;  // the smallest kPreviewSampleMax of their ids, ascending
  uint64_t entering = 0;            // of them, not an active member of the stored bucket
  uint64_t leaving = 0;             // active members of the stored bucket they do not hold for
  bool stored = false;              // a bucket of that id exists (else leaving is 0)
  // Users whose retained event history was too shallow for the definition, whose events
  // were re-read from the log for the preview (docs/design.md, "Preview").
  uint64_t history_reread_users = 0;
  int64_t micros = 0;  // wall time the call took (measurement only)
};

// Why a user is or is not a member of a bucket (GET /v1/buckets/{id}/explain/{userId},
// SPEC §3b): Engine::ExplainMembership. Nothing is logged and no state changes.
//
// One node of the bucket's criteria tree, as the evaluation sees it now. Which value fields
// are set depends on the leg (docs/api.md, "Explain").
struct ExplainLeg {
  std::string path;  // "criteria", "criteria.conditions[1]", ...: preorder, root first
  std::string type;  // property, event, composite, sequence, bucket
  // property: its operator; event: its check; composite: and/or; sequence: its outcome
  // (completed/abandoned); bucket: member/not_member.
  std::string check;
  bool holds = false;
  std::optional<TimeMs> held_since;  // since when it has held without a break, where derivable
  std::optional<TimeMs> next;        // the earliest instant the clock alone can change it
  // property legs: the contact's value (absent: not set); before/after: that value read as a
  // time (absent: not a time) and the threshold now + offset (before holds while
  // time <= threshold, after while time > threshold).
  std::optional<PropertyValue> current;
  std::optional<TimeMs> time;
  std::optional<TimeMs> threshold;
  // exists / not_exists / count: the events counted (in the window, if any). `capped`: the
  // count (or an aggregate) read only what the engine retains and more may lie beyond it
  // (a windowed count stops at the depth its operator needs, which decides it alike).
  std::optional<uint64_t> count;
  bool capped = false;
  // sum avg min max: the value over `contributions` contributions (absent over none);
  // distinct: the number of distinct values.
  std::optional<double> aggregate;
  std::optional<uint64_t> contributions;
  std::optional<TimeMs> window_start;  // windowed legs: events after this instant count
  std::optional<TimeMs> first_at;      // first_seen: the first matching event
  // sequence: the latest step-1 occurrence t1, the earliest completion after it (even a
  // late one), t1 + within, and t1 + lookback.
  std::optional<TimeMs> started_at;
  std::optional<TimeMs> completed_at;
  std::optional<TimeMs> deadline;
  std::optional<TimeMs> lookback_ends_at;
  // bucket legs: the inner bucket, whether the user is an active member of it, and since when.
  std::string bucket_id;
  bool inner_member = false;
  std::optional<TimeMs> inner_entered_at;
};

// What holds a join or a leave off (or makes a join silent).
struct ExplainBlocker {
  // "disabled": the bucket is disabled (nothing joins or leaves until it is enabled).
  // "entryLimit": a join opens the membership without `entered` (or this one did).
  // "minDwell": a leave is deferred until `until`.
  // "maxDwell": left by maxDwell while the criteria held; no re-join until they stop holding.
  // "reconcileJoins": reconcileJoins is false, so the clock does not join; an event does.
  std::string kind;
  std::optional<TimeMs> until;  // when it stops blocking, where an instant says it
  std::string message;
};

// The user's slot in the bucket: the active membership or the last one.
struct ExplainMembershipState {
  bool active = false;
  TimeMs entered_at = 0;
  uint32_t entry_count = 0;
  MembershipSource source = MembershipSource::kEvent;
  std::optional<TimeMs> dwell_anchor_at;
  std::optional<TimeMs> left_at;       // the last leave, if any
  std::optional<TimeMs> max_dwell_at;  // active with maxDwell: when it ends by maxDwell
};

struct ExplainResult {
  std::string bucket_id;
  std::string user_id;
  TimeMs now = 0;       // the instant explained (Engine::Now())
  bool member = false;  // an active member now
  bool dynamic = true;  // a manual bucket has no criteria (no legs, `holds` absent)
  bool enabled = true;
  std::optional<bool> holds;         // the criteria as a whole
  std::optional<TimeMs> held_since;  // as HeldSince derives it (dwellAnchorAt on backfill)
  std::optional<TimeMs> next;        // the criteria's next possible change by the clock
  // When the engine's time index next looks at this (user, bucket): a join, a leave, a dwell
  // reaction or a deferred re-check (absent: nothing filed).
  std::optional<TimeMs> next_due_at;
  std::optional<ExplainMembershipState> membership;  // absent: never a member
  std::vector<ExplainLeg> legs;
  std::vector<ExplainBlocker> blockers;
};

struct StateInfo {
  uint64_t log_seq = 0;
  uint64_t transition_seq = 0;
  std::string digest;  // hex of the canonical state hash (docs/design.md, "The state digest")
  TimeMs now = 0;
  std::string stream_id;  // Engine::StreamId()
};

// Which transitions a filtered read returns (GET /v1/transitions?bucket=&kind=).
struct TransitionFilter {
  std::string bucket_id;              // empty: every bucket
  std::vector<TransitionKind> kinds;  // empty: every kind

  bool Matches(const Transition& t) const;
};

// A webhook subscription (SPEC §10) to create: the stream, filtered, pushed to `url` by the
// sidecar's delivery worker (an embedding host delivers itself: ReadTransitions with the
// subscription's filter from its cursor, then AdvanceSubscription once the receiver has it).
struct SubscriptionSpec {
  std::string url;  // http://host[:port]/path (engine/base/http_url.h); reachability is the host's
  TransitionFilter filter;
  std::optional<std::string> secret;  // absent: one is drawn ("whsec_" and 64 hex digits)
  std::optional<uint64_t> after;      // where delivery starts; absent: the stream's end now
};

struct SubscriptionInfo {
  std::string id;  // "sub_" and 24 hex digits, drawn at creation
  std::string url;
  TransitionFilter filter;
  std::string secret;  // the HMAC-SHA256 key of its signatures
  // Delivered through this seq, as last logged (the worker coalesces its advances).
  uint64_t cursor = 0;
  TimeMs created_at = 0;
};

// A filtered page of the stream. `next` is the cursor to read on from (the `after` of the
// next call): the last seq looked at, matched or not, so a page that matched nothing still
// moves the reader on and nothing is scanned twice.
struct TransitionsPage {
  std::vector<Transition> transitions;
  uint64_t next = 0;
  uint64_t last_seq = 0;  // the stream's last durable seq when the page was read
};

// Past members of a bucket (status=left): users who were members and are not now.
struct PastMember {
  std::string user_id;
  std::optional<std::string> email;
  TimeMs entered_at = 0;  // of their last membership
  TimeMs left_at = 0;     // its end
  uint32_t entry_count = 0;
  MembershipSource source = MembershipSource::kEvent;
  // Why it ended: absent when the user's retained past memberships no longer hold it
  // (kPastMembershipsPerUserMax) or when it ended by the bucket's deletion (an id re-created).
  std::optional<LeaveReason> reason;
  std::optional<TimeMs> dwell_anchor_at;
};

// A bucket's history (GET /v1/buckets/{id}/history): steps of `step_ms` from `from_ms`, the
// last one ending at `to_ms` (shorter if the span is not a multiple of the step).
struct HistoryQuery {
  TimeMs from_ms = 0;
  TimeMs to_ms = 0;
  TimeMs step_ms = 0;
};

struct HistoryStep {
  TimeMs start = 0;      // exclusive
  TimeMs end = 0;        // inclusive
  uint64_t size = 0;     // members at `end` (after everything at that instant)
  uint64_t entered = 0;  // memberships opened in (start, end], silent ones included
  uint64_t left = 0;     // memberships closed in (start, end]
};

// What a bucket's history needs from the state (the stream cannot tell): when each active
// member's membership began (a silent join emits nothing), read at one stream position.
struct HistoryBase {
  std::string bucket_id;
  uint64_t transition_seq = 0;            // the stream's end the state matches
  TimeMs now = 0;                         // history may not reach past it
  std::vector<TimeMs> active_entered_at;  // sorted
};

struct PastMembersPage {
  std::vector<PastMember> members;
  std::optional<std::string> next_cursor;  // the last userId of this page, if more follow
};

struct EngineStats {
  uint64_t log_seq = 0;         // the state's position: StateInfo::log_seq without the digest
  uint64_t transition_seq = 0;  // the last transition folded (committed or in a group)
  uint64_t events_accepted = 0;
  uint64_t events_duplicate = 0;
  uint64_t events_rejected = 0;
  uint64_t transitions_emitted = 0;
  uint64_t sweeps = 0;
  uint64_t sweep_due_items = 0;
  uint64_t log_bytes = 0;
  uint64_t contacts = 0;         // known and not deleted
  uint64_t contacts_erased = 0;  // since the engine opened
  // Memory mapped for the state's slots and users (huge-page blocks that malloc
  // statistics do not see).
  uint64_t pool_bytes = 0;
  // Memory the log holds (RocksDB's memtables, table readers and block cache): not the
  // state's, and bounded by the log's options, not by the number of users.
  uint64_t log_memory_bytes = 0;
  std::optional<TimeMs> last_snapshot_at_ms;
  uint64_t replayed_records = 0;  // at open
  uint32_t replay_threads = 1;    // that replayed them
  int64_t open_micros = 0;
  // Where the time of sweeps and commits went, totals since open (measurement only). A
  // sweep folds (pops its due items, re-assesses them, encodes their transitions into the
  // log's next write as it makes them), then stages its record; the write itself, with
  // its fsync in sync mode, is a commit, shared by every input of its group.
  uint64_t sweep_fold_nanos = 0;
  uint64_t sweep_stage_nanos = 0;
  uint64_t log_commits = 0;
  uint64_t log_write_bytes = 0;
  uint64_t log_write_nanos = 0;  // the log's writes, fsync included
  uint64_t log_fsync_nanos = 0;  // of which the fsync
};

// What Engine::Backup wrote.
struct BackupInfo {
  std::string path;
  uint64_t log_seq = 0;  // the backup's last log record: it opens at this position
  uint64_t transition_seq = 0;
  std::string digest;                        // the state digest at log_seq, as StateInfo::digest
  std::optional<uint64_t> snapshot_log_seq;  // the snapshot it holds, if the data dir had one
  int64_t micros = 0;                        // wall time the call took (measurement only)
};

enum class DefineMode : uint8_t { kCreate, kCreateOrReplace };

class Engine {
 public:
  // Opens (or creates) the data dir: loads the newest valid snapshot and replays the log
  // tail. Damaged snapshots are reported in `warnings` and skipped.
  static Status Open(const Options& options, std::unique_ptr<Engine>* out,
                     std::vector<std::string>* warnings = nullptr);
  virtual ~Engine() = default;

  // --- inputs (each is logged before it returns OK) ---
  virtual Status Ingest(const EventInput& event, IngestResult* result) = 0;
  // Each item is applied or refused on its own; in sync mode one fsync covers the batch.
  virtual Status IngestBatch(std::span<const EventInput> events, BatchResult* result) = 0;
  virtual Status DeleteContact(std::string_view user_id) = 0;
  // Privacy erasure (SPEC §11): DeleteContact (unless done before), then removes the
  // contact's identity from the data dir. Every log record and transition naming them
  // names a pseudonym instead (the state too, so a full replay still gives the live
  // digest), without their email, idempotency keys or the property values no definition
  // ever read; event names and instants stay (the history the stream was built from).
  // Every snapshot is replaced by one taken after the erasure, and the log is compacted,
  // so no file keeps a byte of the id or email. Blocks for a full compaction of the log.
  // Nothing remembers an erased id: NotFound for it, as for an id never seen, and a later
  // event with that id starts a new contact. Within a group, the group's inputs so far are
  // committed first.
  virtual Status EraseContact(std::string_view user_id, ErasureResult* result) = 0;

  // `json` is a bucket definition (SPEC §3). `path_id`, when given (PUT /v1/buckets/{id}),
  // must equal the body's id or fills it in. `created` reports create vs replace.
  virtual Status DefineBucket(std::string_view json, DefineMode mode,
                              std::optional<std::string_view> path_id, bool* created) = 0;
  virtual Status SetBucketEnabled(std::string_view bucket_id, bool enabled) = 0;
  virtual Status DeleteBucket(std::string_view bucket_id) = 0;
  virtual Status AddMember(std::string_view bucket_id, std::string_view user_id) = 0;
  virtual Status RemoveMember(std::string_view bucket_id, std::string_view user_id) = 0;

  // Group commit across calls (the server's owner thread, once per round of requests):
  // between BeginGroup() and EndGroup(), mutating calls fold and stage their records but
  // do not make them durable; EndGroup() writes them all in one batch with one fsync.
  // REQUIRES: nothing a grouped call returned is acknowledged before EndGroup() is OK.
  virtual void BeginGroup() = 0;
  virtual Status EndGroup() = 0;
  // EndGroup in two halves, so a server can fold its next group while this one is written
  // and fsynced on the log's thread: EndGroupPipelined() hands the group to the log and
  // returns; AwaitGroup() waits until it is durable. At most one group is in flight (the
  // next EndGroupPipelined, and any call that commits, awaits it first). Reads see the
  // in-flight group's effects, as they see a group's own earlier calls; the transition
  // stream (LastTransitionSeq, ReadTransitions) shows them only once durable.
  // After a failed log write both keep failing (the engine must be restarted).
  // `on_written` (may be empty) runs exactly once, when AwaitGroup() would no longer block:
  // on the log's thread when the write ends, or before EndGroupPipelined returns if nothing
  // went in flight. It must not call the engine; it lets an owner thread sleep until either
  // new work or the group's end arrives, instead of blocking in AwaitGroup().
  // REQUIRES: nothing of a group is acknowledged before AwaitGroup() is OK.
  virtual Status EndGroupPipelined(std::function<void()> on_written) = 0;
  virtual Status AwaitGroup() = 0;

  // --- webhook subscriptions (SPEC §10): inputs, logged like the others ---
  // InvalidArgument naming "url", "secret", "bucket" or "after" (beyond the stream's end);
  // FailedPrecondition beyond kSubscriptionsMax. Which hosts a URL may name is the server's
  // policy (loopback only by default), not the engine's.
  virtual Status CreateSubscription(const SubscriptionSpec& spec, SubscriptionInfo* out) = 0;
  virtual Status DeleteSubscription(std::string_view id) = 0;
  // "Delivered through seq `through_seq`": logged, so a restart resumes after it. Moving to
  // the cursor it has is OK and logs nothing; backwards is FailedPrecondition ("cursor");
  // beyond the stream's end InvalidArgument ("cursor"); NotFound for an unknown id.
  virtual Status AdvanceSubscription(std::string_view id, uint64_t through_seq) = 0;
  virtual std::vector<SubscriptionInfo> ListSubscriptions() const = 0;
  virtual Status GetSubscription(std::string_view id, SubscriptionInfo* out) const = 0;

  // --- the clock ---
  virtual TimeMs Now() const = 0;
  // Manual clock only: move to `now_ms` (never backwards) and sweep.
  virtual Status AdvanceClock(TimeMs now_ms, SweepResult* result) = 0;
  // Applies everything due at or before Now().
  virtual Status Sweep(SweepResult* result) = 0;
  // The earliest due instant in any enabled bucket's time index, if any.
  virtual std::optional<TimeMs> NextDueMs() const = 0;

  // --- queries ---
  virtual std::vector<BucketInfo> ListBuckets() const = 0;
  virtual Status GetBucket(std::string_view bucket_id, BucketInfo* out) const = 0;
  virtual Status Count(std::string_view bucket_id, uint64_t* count) const = 0;
  virtual Status Metrics(std::string_view bucket_id, BucketMetrics* out) const = 0;
  // Keyset page of active members ordered by userId, starting after `cursor`.
  virtual Status Members(std::string_view bucket_id, std::string_view cursor, size_t limit,
                         MembersPage* out) const = 0;
  // The active membership of a user, or NotFound.
  virtual Status GetMember(std::string_view bucket_id, std::string_view user_id,
                           Member* out) const = 0;
  virtual Status UserMemberships(std::string_view user_id,
                                 std::vector<MembershipRecord>* out) const = 0;
  // The contact and a summary of its events; NotFound for an id never seen (or erased). A
  // deleted contact answers with `deleted` and nothing else.
  virtual Status GetUser(std::string_view user_id, UserInfo* out) const = 0;
  // Who the criteria of the definition `json` select as of Now(): every refusal of
  // DefineBucket's for the same body (with the same field paths), and InvalidArgument
  // ("kind") for a manual bucket. Nothing is logged, no state changes. Usually a pass over
  // every contact (~0.1 s per million); when some contact's retained events are too few for
  // a deeper threshold than any bucket needs, those events are re-read from the log first,
  // as a definition does (a group's staged inputs are made durable before that read).
  virtual Status PreviewBucket(std::string_view json, PreviewResult* out) = 0;
  // Whether `user_id` is an active member of `bucket_id` and why, as of Now(): every leg of
  // the criteria with whether it holds, its value, since when and its next possible change
  // by the clock (computed by the evaluation itself, so it agrees with what then happens),
  // and what holds a join or leave off. NotFound for an unknown bucket, a contact never
  // seen (or erased), and a deleted contact (the message says so). Nothing is logged.
  virtual Status ExplainMembership(std::string_view bucket_id, std::string_view user_id,
                                   ExplainResult* out) const = 0;

  // Keyset page of past members (users who were members and are not now) ordered by
  // userId, starting after `cursor`. Every user whose membership ended is here, whatever
  // its age, until they join again or are deleted; a re-created bucket id keeps the past
  // members of its earlier life (their entryCount continues too).
  virtual Status PastMembers(std::string_view bucket_id, std::string_view cursor, size_t limit,
                             PastMembersPage* out) const = 0;

  // The exact history of a live bucket: per step its size at the step's end and the
  // memberships opened and closed within it, from the active members (the state) and the
  // transition stream after `from_ms` (each `left` carries its membership's enteredAt).
  // InvalidArgument naming "from", "to" or "step": from_ms >= to_ms, to_ms after Now(), more
  // than kHistoryStepsMax steps. NotFound for an unknown or deleted bucket. Not counted: a
  // membership that a contact delete ended (it emits nothing, and the contact drops out of
  // every count) or that the bucket's deletion ended (a re-created id's history spans its
  // lives otherwise). Cost: a scan of every transition detected after from_ms.
  // CaptureHistory (the state's part) and ReadHistory (the stream's, thread-safe) split it,
  // so a server scans the stream off the owner thread; REQUIRES for ReadHistory: the base's
  // transitions are durable (LastTransitionSeq() >= base.transition_seq), else
  // FailedPrecondition.
  Status BucketHistory(std::string_view bucket_id, const HistoryQuery& query,
                       std::vector<HistoryStep>* out) const;
  virtual Status CaptureHistory(std::string_view bucket_id, HistoryBase* out) const = 0;
  virtual Status ReadHistory(const HistoryBase& base, const HistoryQuery& query,
                             std::vector<HistoryStep>* out) const = 0;

  // --- the output stream (thread-safe) ---
  virtual Status ReadTransitions(uint64_t after_seq, size_t limit,
                                 std::vector<Transition>* out) const = 0;
  // The transitions with seq > after_seq that match `filter`, at most `limit` (1 to
  // kTransitionsPageMax), looking at no more than kTransitionsScanMax transitions and none
  // beyond LastTransitionSeq(). FailedPrecondition (field "after") when after_seq is beyond
  // LastTransitionSeq(): the cursor belongs to another stream (StreamId()), e.g. a data dir
  // that was reset; the message names the last seq. InvalidArgument ("bucket") for a
  // filter's malformed bucket id; an id never defined matches nothing.
  virtual Status ReadTransitions(uint64_t after_seq, size_t limit, const TransitionFilter& filter,
                                 TransitionsPage* out) const = 0;
  virtual uint64_t LastTransitionSeq() const = 0;
  // The identity of this data dir's stream: a random UUID drawn when the data dir was created
  // (or at the first writable open of one from before stream ids), kept in the log, so it
  // survives restarts, snapshots, replays, erasures and a copy of the data dir. A consumer
  // stores it with its cursor: another id means another stream, whose seqs are unrelated.
  // Empty only for a data dir from before stream ids opened read-only.
  virtual const std::string& StreamId() const = 0;
  // Waits until a transition with seq > after_seq is durable (true), or `timeout` passes
  // or the engine is closed (false unless one arrived). For hosts that consume the stream
  // on their own threads. Thread-safe.
  virtual bool WaitForTransitions(uint64_t after_seq, std::chrono::milliseconds timeout) const = 0;

  // --- state, snapshots ---
  virtual StateInfo State() const = 0;
  virtual Status TakeSnapshot(SnapshotInfo* info) = 0;
  // Writes a consistent copy of the data dir to `target_dir` while the engine runs: a
  // RocksDB checkpoint of the log up to its last committed record (table files hard-linked
  // when on the same filesystem, else copied; write-ahead files copied, or the memtables
  // flushed first when those exceed 64 MiB) and the newest snapshot (linked, else copied).
  // The target is a data dir: Open() on it gives the state at `info->log_seq`, whose digest
  // is `info->digest`, and `bucketctl verify` accepts it. It is built in
  // `<target_dir>.partial` and renamed when complete, so `target_dir` holds a whole backup
  // or nothing; missing parents are created. AlreadyExists if `target_dir` exists;
  // InvalidArgument if it is inside the data dir; FailedPrecondition when read-only. Blocks
  // for the checkpoint and the digest (a full pass over the state, as State()). Within a
  // group, the group's inputs so far are committed first. A backup on the same filesystem
  // shares the files it links: it survives the data dir's deletion, not the disk's loss.
  virtual Status Backup(const std::string& target_dir, BackupInfo* info) = 0;
  virtual EngineStats Stats() const = 0;
  // OK while the engine accepts inputs. After the log failed a write or a read (a full
  // disk: NoSpace; a damaged block: Corruption; else IoError) every input is refused with
  // that status until a restart, and this returns it; reads keep working. Thread-safe.
  virtual Status Health() const = 0;
  // Finishes a group in flight, flushes the log (async mode) and closes cleanly. Every
  // Status call after it fails with FailedPrecondition ("the engine is closed"), a second
  // Close() excepted (OK); the value calls (ListBuckets, State, Stats, ...) answer from the
  // state as it was. The destructor closes an engine not closed yet.
  virtual Status Close() = 0;
};

// Checks an event's fields as Ingest does (SPEC §1-2): idempotencyKey, userId, event name,
// occurredAt and contact property keys, naming the field. Ingest refuses what this refuses,
// except that a seen idempotencyKey makes the event a duplicate first; it also refuses
// what depends on the state (an event for a deleted contact).
Status ValidateEvent(const EventInput& event);

// The id of a bucket definition, validating the whole definition (SPEC §3).
Status ReadBucketId(std::string_view definition_json, std::string* id);

}  // namespace bucketd
