// Engine: the edge between the outside world and the fold. It stamps inputs with the
// clock, refuses bad ones before they spend a sequence number, folds them, stages the
// record and its transitions in the log and commits (one fsync per call in sync mode, so
// a batch shares one).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <string_view>
#include <thread>

#include "bucketd/engine.h"
#include "engine/base/input_rules.h"
#include "engine/core/bucket_history.h"
#include "engine/core/clock.h"
#include "engine/core/data_dir_backup.h"
#include "engine/core/explain.h"
#include "engine/core/fold_reader.h"
#include "engine/core/preview.h"
#include "engine/fold/fold.h"
#include "engine/fold/fold_lookahead.h"
#include "engine/replay/parallel_replay.h"
#include "engine/state/digest.h"
#include "log/log.h"
#include "log/read_ahead.h"
#include "snapshot/snapshot_store.h"

namespace bucketd {
namespace {

int64_t MicrosSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

constexpr uint32_t kReplayThreadsMax = 64;

// Compares the transitions a replay produces with the stream stored in the log, in order
// (Options::check_log): the fold is a pure function of the log, so they must be equal.
class StoredStreamCheck {
 public:
  explicit StoredStreamCheck(const Log& log) : log_(log) {}

  Status Expect(uint64_t record_seq, const std::vector<Transition>& produced) {
    for (const Transition& t : produced) {
      if (next_ == page_.size()) {
        const uint64_t after = page_.empty() ? t.seq - 1 : page_.back().seq;
        constexpr size_t kPage = 4096;
        if (Status s = log_.ReadTransitions(after, kPage, &page_); !s.ok()) return s;
        next_ = 0;
      }
      if (next_ == page_.size() || !Same(page_[next_], t)) {
        return Status::Corruption("record " + std::to_string(record_seq) +
                                  " replays to transition " + std::to_string(t.seq) + " (" +
                                  t.IdempotencyKey() +
                                  "), which differs from the one the log holds");
      }
      ++next_;
    }
    return Status::Ok();
  }

 private:
  // A transition logged before `enteredAt` was recorded lacks it; the rest must be equal.
  static bool Same(const Transition& stored, const Transition& produced) {
    if (stored.entered_at || !produced.entered_at) return stored == produced;
    Transition without = produced;
    without.entered_at.reset();
    return stored == without;
  }

  const Log& log_;
  std::vector<Transition> page_;
  size_t next_ = 0;
};

class EngineImpl final : public Engine {
 public:
  explicit EngineImpl(const Options& options)
      : options_(options),
        snapshots_(options.data_dir + "/snapshots", std::max<uint32_t>(options.snapshots_kept, 1)) {
  }

  Status OpenImpl(std::vector<std::string>* warnings) {
    const auto start = std::chrono::steady_clock::now();
    if (options_.replay_threads > kReplayThreadsMax) {
      return Status::InvalidArgument("replay_threads",
                                     "must be 0-" + std::to_string(kReplayThreadsMax));
    }
    // The fold refuses a record stamped outside the clock's range (the state keeps instants
    // in 48 bits), so a clock starting there is refused here, before anything is logged.
    if (options_.start_time_ms) {
      if (Status s = ValidateClockInstant(*options_.start_time_ms, "start_time_ms"); !s.ok()) {
        return s;
      }
    }
    std::error_code ec;
    std::filesystem::create_directories(options_.data_dir, ec);
    if (ec)
      return Status::IoError("cannot create data dir " + options_.data_dir + ": " + ec.message());
    read_only_ = options_.read_only || options_.replay_until_ms.has_value();
    LogOptions log_options;
    log_options.path = options_.data_dir + "/log";
    log_options.sync = options_.durability == Durability::kSync;
    log_options.read_only = read_only_;
    if (options_.check_log && (!read_only_ || options_.use_snapshots)) {
      return Status::InvalidArgument("check_log", "needs read_only and no snapshots");
    }
    if (Status s = Log::Open(log_options, &log_); !s.ok()) return s;
    if (options_.check_log) {
      LogVerifyReport report;
      if (Status s = log_->Verify(&report); !s.ok()) return s;
    }
    // A definition that needs more event history than the fold retained re-reads it
    // from the log (definitions change rarely; retaining everything would cost memory
    // on every event).
    fold_.SetHistorySource([this](uint64_t before_seq, const Fold::RecordsVisitor& visit) {
      auto reader = log_->ReadAheadFrom(1);
      std::vector<Record> batch;
      while (reader->NextBatch(&batch)) {
        const auto end = std::find_if(batch.begin(), batch.end(),
                                      [&](const Record& r) { return r.seq >= before_seq; });
        visit(std::span<const Record>(batch.begin(), end));
        if (end != batch.end()) return Status::Ok();
      }
      return reader->status();
    });

    const TimeMs until = options_.replay_until_ms.value_or(kNever);
    std::vector<std::string> snapshot_warnings;
    // A snapshot beyond the log's end is skipped by the load below; writable, it is also
    // moved away before new records can reach its seq and make it look loadable.
    if (!read_only_) {
      if (Status s = snapshots_.SetAsideBeyond(log_->last_seq(), &snapshot_warnings); !s.ok()) {
        return s;
      }
    }
    if (options_.use_snapshots) {
      bool loaded = false;
      bucketd::State snapshot;  // qualified: Engine::State() is a method
      if (Status s = snapshots_.LoadNewest(log_->last_seq(), until, &snapshot, &loaded,
                                           &snapshot_warnings);
          !s.ok()) {
        return s;
      }
      if (loaded) {
        if (Status s = fold_.Restore(std::move(snapshot)); !s.ok()) return s;
        last_snapshot_seq_ = fold_.state().applied_seq;
        // The snapshot's age survives a restart. Dated by the instant the file records (its
        // state's `now`, checksummed in the header), not by its mtime: the age is measured
        // on the engine's clock, which may be a manual clock that mtime knows nothing of,
        // and a data dir restored from a backup keeps its recorded instants where a copy
        // resets mtimes. The cost: `now` is the last record folded, so a snapshot taken
        // after an idle spell looks older by that spell (the direction a staleness alert
        // can live with).
        stats_.last_snapshot_at_ms = fold_.state().now;
      }
    }
    if (warnings) {
      warnings->insert(warnings->end(), snapshot_warnings.begin(), snapshot_warnings.end());
    }
    if (Status s = ReplayTail(until); !s.ok()) return s;
    if (!options_.replay_until_ms && fold_.state().transition_seq != log_->last_transition_seq()) {
      return Status::Corruption("replay produced " + std::to_string(fold_.state().transition_seq) +
                                " transitions but the log holds " +
                                std::to_string(log_->last_transition_seq()));
    }
    committed_transition_seq_ = fold_.state().transition_seq;

    if (options_.clock == ClockMode::kManual) {
      TimeMs start_at = fold_.state().now;
      if (log_->last_seq() == 0) start_at = options_.start_time_ms.value_or(WallClock().Now());
      clock_ = std::make_unique<ManualClock>(start_at);
    } else {
      clock_ = std::make_unique<WallClock>();
    }
    stats_.open_micros = MicrosSince(start);
    last_snapshot_time_ = std::chrono::steady_clock::now();
    return Status::Ok();
  }

  // --- inputs ---

  Status Ingest(const EventInput& event, IngestResult* result) override {
    if (closed_) return Closed();
    if (Status s = Writable(); !s.ok()) return s;
    *result = IngestResult{};
    if (Status s = StageEvent(event, Now(), &result->duplicate, &result->transitions); !s.ok()) {
      return s;
    }
    if (Status s = Commit(); !s.ok()) return s;
    result->log_seq = log_->last_seq();
    return Status::Ok();
  }

  Status IngestBatch(std::span<const EventInput> events, BatchResult* result) override {
    if (closed_) return Closed();
    if (Status s = Writable(); !s.ok()) return s;
    *result = BatchResult{};
    if (events.size() > kBatchItemsMax) {
      return Status::InvalidArgument(
          "events", "a batch holds at most " + std::to_string(kBatchItemsMax) + " items");
    }
    const TimeMs now = Now();
    Fold::Lookahead lookahead(fold_);
    for (size_t i = 0; i < events.size(); ++i) {
      lookahead.Advance(i, events.size(),
                        [&](size_t j) -> std::string_view { return events[j].user_id; });
      bool duplicate = false;
      uint32_t transitions = 0;
      Status s = StageEvent(events[i], now, &duplicate, &transitions,
                            lookahead.user(i, events[i].user_id));
      if (!s.ok()) {
        result->rejected.push_back({i, std::move(s)});
      } else if (duplicate) {
        ++result->duplicates;
      } else {
        ++result->accepted;
        result->transitions += transitions;
      }
    }
    if (Status s = Commit(); !s.ok()) return s;
    result->log_seq = log_->last_seq();
    return Status::Ok();
  }

  Status DeleteContact(std::string_view user_id) override {
    Record r = NewRecord(RecordKind::kContactDelete);
    r.user_id = std::string(user_id);
    return ApplyAndCommit(r, nullptr);
  }

  Status EraseContact(std::string_view user_id, ErasureResult* result) override {
    if (Status s = Writable(); !s.ok()) return s;
    const auto start = std::chrono::steady_clock::now();
    const User* user = fold_.user(user_id);
    if (user == nullptr) return Status::NotFound("unknown contact");
    if (!user->deleted) {
      if (Status s = DeleteContact(user_id); !s.ok()) return s;
    }
    // The log is rewritten with nothing staged: within a group, the group's inputs so far
    // (and the delete) are made durable now, sooner than EndGroup would, which its
    // contract allows.
    if (Status s = CommitNow(); !s.ok()) return s;
    // A forked snapshot still writing the state from before would bring the id back.
    ReapSnapshot(true);
    std::set<std::string> read_keys, read_event_keys;
    if (Status s = PropertyKeysEverRead(&read_keys, &read_event_keys); !s.ok()) {
      return LogFailed(s, false);
    }
    ErasureResult local;
    local.pseudonym = NewPseudonym();
    LogErasure erasure{
        std::string(user_id), local.pseudonym,
        [&](std::string_view key) { return read_keys.contains(std::string(key)); },
        [&](std::string_view key) { return read_event_keys.contains(std::string(key)); }};
    LogErasureReport report;
    // From a failure on, the log may name the pseudonym while memory names the id: refuse
    // inputs until a restart folds the log again.
    if (Status s = log_->Erase(erasure, &report); !s.ok()) return LogWriteFailed(s);
    BUCKETD_CHECK(fold_.RenameDeletedUser(user_id, local.pseudonym).ok());
    // Every snapshot holds the id (a deleted contact keeps its id in the state): one taken
    // now replaces them all.
    SnapshotInfo snapshot;
    if (Status s = snapshots_.Write(fold_.state(), &snapshot); !s.ok()) return s;
    if (Status s = snapshots_.RemoveAllBut(snapshot.log_seq); !s.ok()) return s;
    last_snapshot_seq_ = snapshot.log_seq;
    last_snapshot_time_ = std::chrono::steady_clock::now();
    local.records = report.records;
    local.transitions = report.transitions;
    local.idempotency_keys = report.idempotency_keys;
    local.micros = MicrosSince(start);
    ++stats_.contacts_erased;
    if (result) *result = std::move(local);
    return Status::Ok();
  }

  Status DefineBucket(std::string_view json, DefineMode mode,
                      std::optional<std::string_view> path_id, bool* created) override {
    if (closed_) return Closed();
    if (Status s = Writable(); !s.ok()) return s;
    BucketDefinition def;
    if (Status s = ValidateDefinition(json, path_id, &def); !s.ok()) return s;
    const Bucket* existing = fold_.bucket(def.id);
    if (existing != nullptr && mode == DefineMode::kCreate) {
      return Status::AlreadyExists("bucket " + def.id + " already exists");
    }
    if (created) *created = existing == nullptr;
    // Re-applying an identical definition (a restart with --buckets) changes nothing.
    if (existing != nullptr && existing->canonical_json == ToCanonicalJson(def)) {
      return Status::Ok();
    }
    // A definition may re-read earlier events from the log (Fold::RestoreHistory), which
    // sees committed records only: make whatever a group staged durable first.
    if (Status s = CommitNow(); !s.ok()) return s;
    Record r = NewRecord(RecordKind::kBucketDefine);
    r.bucket_id = def.id;
    r.definition_json = ToCanonicalJson(def);
    return ApplyAndCommit(r, nullptr);
  }

  Status SetBucketEnabled(std::string_view bucket_id, bool enabled) override {
    Record r = NewRecord(enabled ? RecordKind::kBucketEnable : RecordKind::kBucketDisable);
    r.bucket_id = std::string(bucket_id);
    return ApplyAndCommit(r, nullptr);
  }

  Status DeleteBucket(std::string_view bucket_id) override {
    Record r = NewRecord(RecordKind::kBucketDelete);
    r.bucket_id = std::string(bucket_id);
    return ApplyAndCommit(r, nullptr);
  }

  Status AddMember(std::string_view bucket_id, std::string_view user_id) override {
    Record r = NewRecord(RecordKind::kMemberAdd);
    r.bucket_id = std::string(bucket_id);
    r.user_id = std::string(user_id);
    return ApplyAndCommit(r, nullptr);
  }

  Status RemoveMember(std::string_view bucket_id, std::string_view user_id) override {
    Record r = NewRecord(RecordKind::kMemberRemove);
    r.bucket_id = std::string(bucket_id);
    r.user_id = std::string(user_id);
    return ApplyAndCommit(r, nullptr);
  }

  Status CreateSubscription(const SubscriptionSpec& spec, SubscriptionInfo* out) override {
    if (Status s = Writable(); !s.ok()) return s;
    if (Status s = ValidateSubscriptionUrl(spec.url); !s.ok()) return s;
    if (spec.secret) {
      if (Status s = ValidateSubscriptionSecret(*spec.secret); !s.ok()) return s;
    }
    if (!spec.filter.bucket_id.empty()) {
      if (Status s = ValidateBucketId(spec.filter.bucket_id, "bucket"); !s.ok()) return s;
    }
    // The fold's end, not the durable one: the subscription gets everything emitted by the
    // records after its own, whether or not this round's group is written yet.
    const uint64_t end = fold_.state().transition_seq;
    if (spec.after && *spec.after > end) {
      return Status::InvalidArgument("after", "after " + std::to_string(*spec.after) +
                                                  " is beyond the last seq " + std::to_string(end));
    }
    Record r = NewRecord(RecordKind::kSubscriptionCreate);
    r.subscription_id = NewRandomId("sub_", 3);
    r.url = spec.url;
    r.secret = spec.secret ? *spec.secret : NewRandomId("whsec_", 8);
    r.bucket_id = spec.filter.bucket_id;
    r.kinds = spec.filter.kinds;
    std::sort(r.kinds.begin(), r.kinds.end());
    r.kinds.erase(std::unique(r.kinds.begin(), r.kinds.end()), r.kinds.end());
    r.through_seq = spec.after.value_or(end);
    if (Status s = ApplyAndCommit(r, nullptr); !s.ok()) return s;
    if (out) return GetSubscription(r.subscription_id, out);
    return Status::Ok();
  }

  Status DeleteSubscription(std::string_view id) override {
    Record r = NewRecord(RecordKind::kSubscriptionDelete);
    r.subscription_id = std::string(id);
    return ApplyAndCommit(r, nullptr);
  }

  Status AdvanceSubscription(std::string_view id, uint64_t through_seq) override {
    if (Status s = Writable(); !s.ok()) return s;
    const Subscription* sub = fold_.subscription(id);
    if (sub == nullptr) return Status::NotFound("unknown subscription");
    if (through_seq == sub->cursor) return Status::Ok();
    if (through_seq > fold_.state().transition_seq) {
      return Status::InvalidArgument(
          "cursor", "beyond the stream's last seq " + std::to_string(fold_.state().transition_seq));
    }
    Record r = NewRecord(RecordKind::kSubscriptionAdvance);
    r.subscription_id = std::string(id);
    r.through_seq = through_seq;
    return ApplyAndCommit(r, nullptr);
  }

  std::vector<SubscriptionInfo> ListSubscriptions() const override {
    std::vector<SubscriptionInfo> out;
    for (const Subscription& sub : fold_.state().subscriptions) out.push_back(InfoOf(sub));
    return out;
  }

  Status GetSubscription(std::string_view id, SubscriptionInfo* out) const override {
    if (closed_) return Closed();
    const Subscription* sub = fold_.subscription(id);
    if (sub == nullptr) return Status::NotFound("unknown subscription");
    *out = InfoOf(*sub);
    return Status::Ok();
  }

  void BeginGroup() override { grouping_ = true; }

  Status EndGroup() override {
    if (closed_) return Closed();
    grouping_ = false;
    return Commit();
  }

  Status EndGroupPipelined(std::function<void()> on_written) override {
    if (closed_) return Closed();
    grouping_ = false;
    const auto written_now = [&on_written](Status status) {
      if (on_written) on_written();
      return status;
    };
    if (Status s = FinishGroup(); !s.ok()) return written_now(s);
    if (!log_->has_staged()) return written_now(Status::Ok());
    // A snapshot must not include a group that is not durable yet: commit in one piece.
    if (SnapshotDue()) return written_now(CommitNow());
    // The log runs on_written in every case, also when it fails to start.
    if (Status s = log_->StartCommit(std::move(on_written)); !s.ok()) return LogWriteFailed(s);
    in_flight_transition_seq_ = fold_.state().transition_seq;
    group_in_flight_ = true;
    return Status::Ok();
  }

  Status AwaitGroup() override {
    if (closed_) return Closed();
    return FinishGroup();
  }

  // AwaitGroup's work, for Close() and the commits too.
  Status FinishGroup() {
    // Sticky: once a write failed, no later call may report the group (or anything after
    // it) durable, whoever noticed the failure first.
    if (memory_ahead_of_log_) return failed_;
    if (!group_in_flight_) return Status::Ok();
    group_in_flight_ = false;
    if (Status s = log_->FinishCommit(); !s.ok()) return LogWriteFailed(s);
    PublishTransitions(in_flight_transition_seq_);
    return Status::Ok();
  }

  // --- the clock ---

  TimeMs Now() const override {
    // The fold's time never moves backwards, even if the wall clock does.
    return std::max(clock_->Now(), fold_.state().now);
  }

  Status AdvanceClock(TimeMs now_ms, SweepResult* result) override {
    if (closed_) return Closed();
    if (options_.clock != ClockMode::kManual) {
      return Status::FailedPrecondition("now", "the clock can be set only in manual-clock mode");
    }
    if (now_ms < Now()) {
      return Status::FailedPrecondition("now", "the clock cannot move backwards");
    }
    if (Status s = ValidateClockInstant(now_ms); !s.ok()) return s;
    static_cast<ManualClock*>(clock_.get())->Set(now_ms);
    Record r = NewRecord(RecordKind::kClockAdvance);
    return SweepRecord(r, result);
  }

  Status Sweep(SweepResult* result) override {
    if (closed_) return Closed();
    if (Status s = Writable(); !s.ok()) return s;
    // An idle engine commits nothing, so this (every --sweep-interval in wall mode) is
    // where a finished background snapshot gets reaped.
    ReapSnapshot(false);
    const TimeMs now = Now();
    if (!fold_.HasDue(now)) {
      // Nothing due: nothing changes, so nothing is logged.
      *result = SweepResult{};
      ++stats_.sweeps;
      return Status::Ok();
    }
    Record r = NewRecord(RecordKind::kSweep);
    return SweepRecord(r, result);
  }

  std::optional<TimeMs> NextDueMs() const override { return fold_.NextDue(); }

  // --- queries ---

  std::vector<BucketInfo> ListBuckets() const override { return FoldReader(fold_).ListBuckets(); }

  Status GetBucket(std::string_view bucket_id, BucketInfo* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).GetBucket(bucket_id, out);
  }

  Status Count(std::string_view bucket_id, uint64_t* count) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).Count(bucket_id, count);
  }

  Status Metrics(std::string_view bucket_id, BucketMetrics* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).Metrics(bucket_id, out);
  }

  Status Members(std::string_view bucket_id, std::string_view cursor, size_t limit,
                 MembersPage* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).Members(bucket_id, cursor, limit, out);
  }

  Status PastMembers(std::string_view bucket_id, std::string_view cursor, size_t limit,
                     PastMembersPage* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).PastMembers(bucket_id, cursor, limit, out);
  }

  Status GetMember(std::string_view bucket_id, std::string_view user_id,
                   Member* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).GetMember(bucket_id, user_id, out);
  }

  Status UserMemberships(std::string_view user_id,
                         std::vector<MembershipRecord>* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).UserMemberships(user_id, out);
  }

  Status GetUser(std::string_view user_id, UserInfo* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).GetUser(user_id, out);
  }

  Status PreviewBucket(std::string_view json, PreviewResult* out) override {
    if (closed_) return Closed();
    BucketDefinition def;
    if (Status s = ValidateDefinition(json, std::nullopt, &def); !s.ok()) return s;
    // A re-read of past events sees committed records only (as a definition's does).
    return PreviewDefinition(
        fold_, def, Now(), [this] { return CommitNow(); }, out);
  }

  Status ExplainMembership(std::string_view bucket_id, std::string_view user_id,
                           ExplainResult* out) const override {
    if (closed_) return Closed();
    return bucketd::ExplainMembership(fold_, bucket_id, user_id, Now(), out);
  }

  Status CaptureHistory(std::string_view bucket_id, HistoryBase* out) const override {
    if (closed_) return Closed();
    return FoldReader(fold_).CaptureHistory(bucket_id, Now(), out);
  }

  Status ReadHistory(const HistoryBase& base, const HistoryQuery& query,
                     std::vector<HistoryStep>* out) const override {
    if (closed_) return Closed();
    if (base.transition_seq > LastTransitionSeq()) {
      return Status::FailedPrecondition("",
                                        "the stream is not yet durable up to the history's base");
    }
    return ComputeBucketHistory(*log_, base, query, out);
  }

  // --- the output stream ---

  Status ReadTransitions(uint64_t after_seq, size_t limit,
                         std::vector<Transition>* out) const override {
    if (closed_) return Closed();
    if (limit == 0 || limit > kTransitionsPageMax) {
      return Status::InvalidArgument("limit", MustBeBetween(1, kTransitionsPageMax));
    }
    return log_->ReadTransitions(after_seq, limit, out);
  }

  Status ReadTransitions(uint64_t after_seq, size_t limit, const TransitionFilter& filter,
                         TransitionsPage* out) const override {
    if (closed_) return Closed();
    if (limit == 0 || limit > kTransitionsPageMax) {
      return Status::InvalidArgument("limit", MustBeBetween(1, kTransitionsPageMax));
    }
    // Any valid id may be asked for, also one not defined (yet, or any more): the stream
    // holds the transitions of deleted and re-created buckets too.
    if (!filter.bucket_id.empty()) {
      if (Status s = ValidateBucketId(filter.bucket_id, "bucket"); !s.ok()) return s;
    }
    // Read once: the page stops there, so `next` never passes what a reader may see.
    const uint64_t last = committed_transition_seq_.load();
    out->transitions.clear();
    out->next = after_seq;
    out->last_seq = last;
    if (after_seq > last) {
      return Status::FailedPrecondition(
          "after", "after " + std::to_string(after_seq) + " is beyond the last seq " +
                       std::to_string(last) + " of stream " + StreamId() +
                       ": the cursor belongs to another stream");
    }
    size_t scanned = 0;
    return log_->ScanTransitions(after_seq, [&](Transition&& t) {
      if (t.seq > last) return false;
      out->next = t.seq;
      if (filter.Matches(t)) out->transitions.push_back(std::move(t));
      return out->transitions.size() < limit && ++scanned < kTransitionsScanMax;
    });
  }

  uint64_t LastTransitionSeq() const override { return committed_transition_seq_.load(); }

  const std::string& StreamId() const override { return log_->stream_id(); }

  bool WaitForTransitions(uint64_t after_seq, std::chrono::milliseconds timeout) const override {
    std::unique_lock lock(stream_mu_);
    stream_cv_.wait_for(lock, timeout,
                        [&] { return committed_transition_seq_.load() > after_seq || closed_; });
    return committed_transition_seq_.load() > after_seq;
  }

  // --- state, snapshots ---

  StateInfo State() const override {
    StateInfo state = FoldReader(fold_).State(Now());
    state.stream_id = StreamId();
    return state;
  }

  // Synchronous (on demand and for tools); automatic snapshots run in the background.
  Status TakeSnapshot(SnapshotInfo* info) override {
    if (closed_) return Closed();
    // A snapshot must never be ahead of the durable log (a crash would let a different
    // log reach its seq): commit what a group has staged first.
    if (Status s = CommitNow(); !s.ok()) return s;
    SnapshotInfo local;
    if (Status s = snapshots_.Write(fold_.state(), &local); !s.ok()) return s;
    last_snapshot_seq_ = std::max(last_snapshot_seq_, local.log_seq);
    last_snapshot_time_ = std::chrono::steady_clock::now();
    stats_.last_snapshot_at_ms = Now();
    if (info) *info = local;
    return Status::Ok();
  }

  Status Backup(const std::string& target_dir, BackupInfo* info) override {
    if (closed_) return Closed();
    if (read_only_) return Status::FailedPrecondition("", "the engine is open read-only");
    // After a failed write memory is ahead of the log: its digest would not describe the
    // backup, which holds the log.
    if (!failed_.ok()) return failed_;
    const auto start = std::chrono::steady_clock::now();
    if (Status s = CheckBackupTarget(options_.data_dir, target_dir); !s.ok()) return s;
    // The checkpoint takes what is committed; the state must be the fold of exactly that.
    if (Status s = CommitNow(); !s.ok()) return s;
    BackupInfo local;
    if (Status s = WriteBackup(*log_, snapshots_, target_dir, &local.snapshot_log_seq); !s.ok()) {
      return s;
    }
    const StateInfo state = State();
    BUCKETD_CHECK(state.log_seq == log_->last_seq());
    local.path = target_dir;
    local.log_seq = state.log_seq;
    local.transition_seq = state.transition_seq;
    local.digest = state.digest;
    local.micros = MicrosSince(start);
    if (info) *info = std::move(local);
    return Status::Ok();
  }

  Status Health() const override {
    if (closed_) return Closed();
    std::lock_guard lock(health_mu_);
    return health_;
  }

  EngineStats Stats() const override {
    EngineStats s = stats_;
    s.log_seq = fold_.state().applied_seq;
    s.transition_seq = fold_.state().transition_seq;
    s.log_bytes = log_->ApproximateBytes();
    s.log_memory_bytes = log_->MemoryBytes();
    s.contacts = fold_.live_contacts();
    s.pool_bytes =
        fold_.state().slot_pool.reserved_bytes() + fold_.state().user_arena.reserved_bytes();
    s.sweep_due_items = fold_.sweep_due_popped();
    const LogWriteTimes log = log_->write_times();
    s.log_commits = log.commits;
    s.log_write_bytes = log.bytes;
    s.log_write_nanos = log.write_nanos;
    s.log_fsync_nanos = log.fsync_nanos;
    return s;
  }

  Status Close() override {
    if (closed_) return Status::Ok();
    {
      std::lock_guard lock(stream_mu_);
      closed_ = true;
    }
    stream_cv_.notify_all();
    // A running snapshot is cheap to let finish; a killed one would only be wasted work.
    ReapSnapshot(true);
    // A failed open has no log to flush.
    if (read_only_ || log_ == nullptr) return Status::Ok();
    if (Status s = FinishGroup(); !s.ok()) return s;
    return log_->Flush();
  }

  // A host that wants the outcome calls Close() first; a second Close() is OK at once.
  ~EngineImpl() override { (void)Close(); }

  // For tests and benchmarks of the fold (not part of the public API).
  const Fold& fold() const { return fold_; }

 private:
  static Status Closed() { return Status::FailedPrecondition("", "the engine is closed"); }

  Status Writable() const {
    if (closed_) return Closed();
    if (read_only_) return Status::FailedPrecondition("", "the engine is open read-only");
    if (!failed_.ok()) return failed_;
    return Status::Ok();
  }

  // Every refusal of a definition before it is logged (DefineBucket, and PreviewBucket, which
  // refuses what a define would): the parser's, the id rules for new ids, the path's id, and
  // what the fold refuses given the state.
  Status ValidateDefinition(std::string_view json, std::optional<std::string_view> path_id,
                            BucketDefinition* def) const {
    if (Status s = ParseBucketDefinition(json, def, path_id); !s.ok()) return s;
    if (Status s = CheckNewBucketId(def->id); !s.ok()) return s;
    if (path_id && *path_id != def->id) {
      return Status::InvalidArgument("id", "must match the bucket id in the path");
    }
    Record r;
    r.kind = RecordKind::kBucketDefine;
    r.bucket_id = def->id;
    r.definition_json = ToCanonicalJson(*def);
    return fold_.Check(r);
  }

  Record NewRecord(RecordKind kind) const {
    Record r;
    r.seq = log_->last_seq() + 1;
    r.at = Now();
    r.kind = kind;
    return r;
  }

  // `known_user`: the event's user if a Fold::Lookahead found it, else null. `transitions`:
  // how many the event made.
  Status StageEvent(const EventInput& event, TimeMs now, bool* duplicate, uint32_t* transitions,
                    User* known_user = nullptr) {
    *duplicate = false;
    if (event.idempotency_key) {
      if (Status s = ValidateIdempotencyKey(*event.idempotency_key); !s.ok()) return s;
      bool seen = false;
      // Refused before the fold: memory stays the fold of the log, and what this group
      // staged before still commits.
      if (Status s = log_->LookupIdempotencyKey(*event.idempotency_key, &seen); !s.ok()) {
        return LogFailed(s, /*memory_ahead=*/false);
      }
      if (seen) {
        *duplicate = true;
        ++stats_.events_duplicate;
        return Status::Ok();
      }
    }
    // The fold checks the rest of what ValidateEvent does (every record, replayed too).
    if (event.occurred_at_ms) {
      if (Status s = ValidateOccurredAt(*event.occurred_at_ms); !s.ok()) return Rejected(s);
    }
    Record& r = record_scratch_;
    r.seq = log_->last_seq() + 1;
    r.at = now;
    r.kind = RecordKind::kEvent;
    r.user_id = event.user_id;
    r.event_name = event.event;
    r.occurred_at = std::min(event.occurred_at_ms.value_or(now), now);
    r.email = event.email;
    // Borrowed, not copied: the fold and the log's encoding read them within this call.
    r.properties.clear();
    r.event_properties.clear();
    r.borrowed = {&event.contact_properties, &event.properties};
    r.idempotency_key = event.idempotency_key;
    // The fold validates (and refuses without changing anything) before it applies. Its
    // transitions are staged as it makes them, as a sweep's are (LogStagingSink): nobody
    // needs them as objects, and building each (its bucket id, name, user id and email
    // copied into strings, a malloc for each longer than 15 bytes) was most of the mallocs
    // of joins and leaves on ingest (bench/README.md). The log takes a record's
    // transitions before or after the record, within the same group.
    LogStagingSink sink(log_.get());
    Status applied = fold_.ApplyTo(r, &sink, known_user);
    if (applied.ok()) log_->Stage(r, {});
    r.borrowed = {};  // the input may be gone by the next use of the scratch record
    *transitions = sink.count();
    if (!applied.ok()) return Rejected(applied);
    ++stats_.events_accepted;
    return Status::Ok();
  }

  // The contact property keys, and the event property keys, any definition in the log has
  // read: an erasure keeps those values of the erased contact's patches and events, so
  // that a replay reproduces the same stream.
  Status PropertyKeysEverRead(std::set<std::string>* keys,
                              std::set<std::string>* event_keys) const {
    std::unique_ptr<RecordReader> records = log_->ReadFrom(1);
    for (Record r; records->Next(&r);) {
      if (r.kind != RecordKind::kBucketDefine) continue;
      BucketDefinition def;
      if (Status s = ParseBucketDefinition(r.definition_json, &def); !s.ok()) {
        return Status::Corruption("definition at seq " + std::to_string(r.seq) + ": " +
                                  s.message());
      }
      if (def.criteria) CollectPropertyKeys(*def.criteria, keys);
      if (def.criteria) CollectEventPropertyKeys(*def.criteria, event_keys);
    }
    return records->status();
  }

  static SubscriptionInfo InfoOf(const Subscription& sub) {
    SubscriptionInfo info;
    info.id = sub.id;
    info.url = sub.url;
    info.filter.bucket_id = sub.bucket_id;
    info.filter.kinds = sub.kinds;
    info.secret = sub.secret;
    info.cursor = sub.cursor;
    info.created_at = sub.created_at;
    return info;
  }

  // `prefix` and `words` * 32 random bits in hex (std::random_device: the OS's randomness),
  // never the id of a subscription already.
  std::string NewRandomId(std::string_view prefix, int words) const {
    std::random_device random;
    for (;;) {
      std::string id(prefix);
      for (int i = 0; i < words; ++i) {
        char word[9];
        std::snprintf(word, sizeof word, "%08x", static_cast<unsigned>(random()));
        id += word;
      }
      if (fold_.subscription(id) == nullptr) return id;
    }
  }

  // "erased-" and 128 random bits in hex; never a contact's id already.
  std::string NewPseudonym() const {
    std::random_device random;
    for (;;) {
      std::string pseudonym = "erased-";
      for (int i = 0; i < 4; ++i) {
        char word[9];
        std::snprintf(word, sizeof word, "%08x", static_cast<unsigned>(random()));
        pseudonym += word;
      }
      if (fold_.user(pseudonym) == nullptr) return pseudonym;
    }
  }

  Status Rejected(Status s) {
    ++stats_.events_rejected;
    return s;
  }

  Status ApplyAndCommit(const Record& r, std::vector<Transition>* transitions) {
    if (Status s = Writable(); !s.ok()) return s;
    std::vector<Transition> local;
    if (transitions == nullptr) transitions = &local;
    if (Status s = fold_.Apply(r, transitions); !s.ok()) return s;
    log_->Stage(r, *transitions);
    return Commit();
  }

  // Stages each transition of a sweep in the log as the fold makes it: nobody else needs
  // them as objects (readers decode them from the log), so none is built.
  class LogStagingSink final : public TransitionSink {
   public:
    explicit LogStagingSink(Log* log) : log_(log) {}
    void Add(const TransitionView& t) override {
      log_->StageTransition(t);
      ++count_;
    }
    uint32_t count() const { return count_; }

   private:
    Log* log_;
    uint32_t count_ = 0;
  };

  // ApplyAndCommit for a sweep, its transitions staged as they are made, with the fold
  // (transitions' encoding included) and the record's staging timed apart
  // (EngineStats::sweep_*).
  Status SweepRecord(const Record& r, SweepResult* result) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    if (Status s = Writable(); !s.ok()) return s;
    LogStagingSink sink(log_.get());
    if (Status s = fold_.ApplyTo(r, &sink); !s.ok()) return s;
    const auto folded = Clock::now();
    log_->Stage(r, {});
    const auto staged = Clock::now();
    stats_.sweep_fold_nanos += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(folded - start).count());
    stats_.sweep_stage_nanos += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(staged - folded).count());
    if (Status s = Commit(); !s.ok()) return s;
    ++stats_.sweeps;
    *result = SweepResult{fold_.last_sweep_due(), sink.count(), MicrosSince(start)};
    return Status::Ok();
  }

  // The stream is durable up to `seq`: readers may see it, waiters wake.
  void PublishTransitions(uint64_t seq) {
    stats_.transitions_emitted += seq - committed_transition_seq_;
    {
      std::lock_guard lock(stream_mu_);
      committed_transition_seq_ = seq;
    }
    stream_cv_.notify_all();
  }

  // Makes staged records durable, unless a group defers that to EndGroup().
  Status Commit() { return grouping_ ? Status::Ok() : CommitNow(); }

  Status CommitNow() {
    if (Status s = FinishGroup(); !s.ok()) return s;
    if (!log_->has_staged()) return Status::Ok();
    if (Status s = log_->Commit(); !s.ok()) return LogWriteFailed(s);
    PublishTransitions(fold_.state().transition_seq);
    MaybeSnapshot();
    return Status::Ok();
  }

  // Memory is now ahead of the log: refuse every input until a restart replays it.
  Status LogWriteFailed(const Status& s) { return LogFailed(s, /*memory_ahead=*/true); }

  // A log that failed a write or a read refuses every later input with the same error
  // (NoSpace for a full disk, else IoError or Corruption), while reads of the state go on
  // and Health() reports it. After a failed write, memory holds the effects of inputs
  // that were never acknowledged (their callers got this error) until a restart.
  Status LogFailed(const Status& s, bool memory_ahead) {
    memory_ahead_of_log_ = memory_ahead_of_log_ || memory_ahead;
    if (!failed_.ok()) return failed_;
    const std::string what = "the log failed, inputs are refused until a restart: " + s.message();
    switch (s.code()) {
      case StatusCode::kNoSpace:
        failed_ = Status::NoSpace(what);
        break;
      case StatusCode::kCorruption:
        failed_ = Status::Corruption(what);
        break;
      default:
        failed_ = Status::IoError(what);
        break;
    }
    std::lock_guard lock(health_mu_);
    health_ = failed_;
    return failed_;
  }

  // Automatic snapshots fork (SnapshotStore::StartBackground), so ingest pauses only for
  // the fork instead of the whole serialization; at most one runs at a time. The interval
  // counts from the fork, so a failing disk is retried once per interval, not per commit.

  // True when an automatic snapshot is due and none is running.
  bool SnapshotDue() {
    ReapSnapshot(false);
    if (snapshots_.background_running()) return false;
    const uint64_t since = fold_.state().applied_seq - last_snapshot_seq_;
    const bool by_records =
        options_.snapshot_every_records > 0 && since >= options_.snapshot_every_records;
    const bool by_time = options_.snapshot_every_ms > 0 && since > 0 &&
                         std::chrono::steady_clock::now() - last_snapshot_time_ >=
                             std::chrono::milliseconds(options_.snapshot_every_ms);
    return by_records || by_time;
  }

  void MaybeSnapshot() {
    if (!SnapshotDue()) return;
    last_snapshot_seq_ = fold_.state().applied_seq;
    last_snapshot_time_ = std::chrono::steady_clock::now();
    if (!options_.snapshot_fork) {
      // On this thread, blocking for the whole serialization; a failure is retried at the
      // next interval like a failed background one.
      SnapshotInfo info;
      if (snapshots_.Write(fold_.state(), &info).ok()) stats_.last_snapshot_at_ms = Now();
      return;
    }
    // A fork that fails (out of memory, process limit) is as a failed write: retried later.
    (void)snapshots_.StartBackground(fold_.state());
  }

  // Collects a finished background snapshot (waits for a running one if `block`). A failed
  // one changes nothing: the log is the source of truth and the next interval retries.
  void ReapSnapshot(bool block) {
    Status status;
    SnapshotInfo info;
    const bool done = block ? snapshots_.WaitBackground(&status, &info)
                            : snapshots_.PollBackground(&status, &info);
    if (done && status.ok()) stats_.last_snapshot_at_ms = Now();
  }

  // Folds the log after the state's position. Records are read and decoded on a second
  // thread (ReadAheadReader) and the fold prefetches the state of the users a few records
  // ahead, so this thread mostly folds instead of waiting on the disk or on memory.
  Status ReplayTail(TimeMs until) {
    auto reader = log_->ReadAheadFrom(fold_.state().applied_seq + 1);
    stats_.replay_threads = ReplayThreads();
    if (stats_.replay_threads > 1) {
      return ReplayParallel(reader.get(), {stats_.replay_threads, until}, &fold_,
                            &stats_.replayed_records);
    }
    std::vector<Record> batch;
    uint64_t replayed = 0;
    Fold::Lookahead lookahead(fold_);
    StoredStreamCheck stream(*log_);
    std::vector<Transition>* produced = options_.check_log ? &scratch_ : nullptr;
    while (reader->NextBatch(&batch)) {
      for (size_t i = 0; i < batch.size(); ++i) {
        lookahead.AdvanceOverRecords(i, batch.size(),
                                     [&](size_t j) -> const Record& { return batch[j]; });
        const Record& r = batch[i];
        if (r.at > until) {
          stats_.replayed_records = replayed;
          return Status::Ok();
        }
        scratch_.clear();
        if (Status s = fold_.Apply(r, produced, lookahead.user(i, r.user_id)); !s.ok()) {
          return Status::Corruption("log record " + std::to_string(r.seq) +
                                    " does not fold: " + s.ToString());
        }
        if (produced != nullptr) {
          if (Status s = stream.Expect(r.seq, *produced); !s.ok()) return s;
        }
        ++replayed;
      }
    }
    stats_.replayed_records = replayed;
    return reader->status();
  }

  // Shards for replaying the log tail (parallel_replay.h): only a replay from nothing
  // (no snapshot) can be sharded, and with no setting, only a long one on 3+ cores.
  uint32_t ReplayThreads() const {
    // Checking the stored stream compares transitions in the order one fold emits them.
    if (fold_.state().applied_seq != 0 || options_.check_log) return 1;
    if (options_.replay_threads != 0) return options_.replay_threads;
    constexpr uint64_t kParallelReplayRecordsMin = 10'000;
    constexpr uint32_t kAutoReplayThreadsMax = 8;
    if (log_->last_seq() < kParallelReplayRecordsMin) return 1;
    // The log's reader keeps one core busy: a shard on it would slow both down (on 2 cores,
    // 2 shards replayed slower than 1 when measured).
    const uint32_t cores = std::max(std::thread::hardware_concurrency(), 1u);
    return std::clamp(cores - 1, 1u, kAutoReplayThreadsMax);
  }

  Options options_;
  std::unique_ptr<Log> log_;
  Fold fold_;
  SnapshotStore snapshots_;
  std::unique_ptr<Clock> clock_;
  bool read_only_ = false;
  std::atomic<bool> closed_ = false;  // read by the thread-safe calls too
  bool grouping_ = false;
  Status failed_;  // owner thread; Health() reads the copy below
  bool memory_ahead_of_log_ = false;
  mutable std::mutex health_mu_;
  Status health_;
  std::vector<Transition> scratch_;
  Record record_scratch_;  // reused so ingest keeps its string capacity
  std::atomic<uint64_t> committed_transition_seq_{0};
  mutable std::mutex stream_mu_;  // WaitForTransitions sleeps on stream_cv_
  mutable std::condition_variable stream_cv_;
  bool group_in_flight_ = false;  // EndGroupPipelined started a commit not yet awaited
  uint64_t in_flight_transition_seq_ = 0;
  uint64_t last_snapshot_seq_ = 0;
  std::chrono::steady_clock::time_point last_snapshot_time_;
  mutable EngineStats stats_;
};

}  // namespace

Status ValidateEvent(const EventInput& event) {
  if (event.idempotency_key) {
    if (Status s = ValidateIdempotencyKey(*event.idempotency_key); !s.ok()) return s;
  }
  if (Status s = ValidateUserId(event.user_id); !s.ok()) return s;
  if (Status s = ValidateEventName(event.event); !s.ok()) return s;
  if (event.occurred_at_ms) {
    if (Status s = ValidateOccurredAt(*event.occurred_at_ms); !s.ok()) return s;
  }
  if (Status s = ValidateContactProperties(event.contact_properties); !s.ok()) return s;
  return ValidateEventProperties(event.properties);
}

Status Engine::BucketHistory(std::string_view bucket_id, const HistoryQuery& query,
                             std::vector<HistoryStep>* out) const {
  HistoryBase base;
  if (Status s = CaptureHistory(bucket_id, &base); !s.ok()) return s;
  return ReadHistory(base, query, out);
}

bool TransitionFilter::Matches(const Transition& t) const {
  if (!bucket_id.empty() && t.bucket_id != bucket_id) return false;
  return kinds.empty() || std::find(kinds.begin(), kinds.end(), t.kind) != kinds.end();
}

Status ReadBucketId(std::string_view definition_json, std::string* id) {
  BucketDefinition def;
  if (Status s = ParseBucketDefinition(definition_json, &def); !s.ok()) return s;
  *id = std::move(def.id);
  return Status::Ok();
}

Status Engine::Open(const Options& options, std::unique_ptr<Engine>* out,
                    std::vector<std::string>* warnings) {
  auto engine = std::make_unique<EngineImpl>(options);
  if (Status s = engine->OpenImpl(warnings); !s.ok()) return s;
  *out = std::move(engine);
  return Status::Ok();
}

}  // namespace bucketd
