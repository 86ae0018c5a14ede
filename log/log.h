#pragma once
// The append-only input log in RocksDB, with the transitions each input caused and the
// idempotency keys seen. Column families (layout in log_format.md):
//   records      key = big-endian seq of a chunk's first -> up to 64 log_record.fbs Records
//   transitions  key = big-endian seq of a chunk's first -> up to 64 Transitions
//   idempotency  key = idempotency key -> big-endian seq of the event that carried it
//   meta         small named values
// Writes are staged into one pending batch and made durable by Commit(): many inputs
// share one write and, in sync mode, one fsync (group commit).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/base/record.h"
#include "engine/base/transition_view.h"

namespace bucketd {

class ReadAheadReader;  // log/read_ahead.h

struct LogOptions {
  std::string path;  // the RocksDB directory
  bool sync = true;  // fsync the WAL on Commit()
  bool read_only = false;
  // Opening a log whose write-ahead file is damaged before its end fails (Corruption):
  // the inputs after the damage were acknowledged, so dropping them silently would lose
  // data. `salvage` opens it anyway, keeping every record before the first damaged one
  // and dropping the rest (RocksDB's point-in-time recovery); a writable salvage makes
  // that permanent. Only `bucketctl salvage --truncate` sets it, on an operator's request.
  bool salvage = false;
};

// What Log::Verify found: the counts it read, each checked.
struct LogVerifyReport {
  uint64_t records = 0;
  uint64_t transitions = 0;
  uint64_t idempotency_keys = 0;
};

// Erasure (SPEC §11): who is erased, what the log calls them afterwards, and which of
// their property patches stay.
struct LogErasure {
  std::string user_id;
  std::string pseudonym;
  // Property keys some definition reads: those values stay in the user's patches, so that a
  // replay of the rewritten log reproduces the transitions it produced before; every other
  // key of the user's patches is dropped.
  std::function<bool(std::string_view key)> keep_property;
  // The same for the events' own properties (what `where` filters, aggregates and
  // sequences read); unset: every one is dropped.
  std::function<bool(std::string_view key)> keep_event_property;
};

// What an erasure rewrote.
struct LogErasureReport {
  uint64_t records = 0;
  uint64_t transitions = 0;
  uint64_t idempotency_keys = 0;
};

// What the log's commits cost so far (measurement only: metrics and benches). Each
// DB::Write of a commit is timed whole, and the fsync inside it by RocksDB's I/O stats.
struct LogWriteTimes {
  uint64_t commits = 0;      // write batches written
  uint64_t bytes = 0;        // their sizes (what the write-ahead file received)
  uint64_t write_nanos = 0;  // the writes, fsync included
  uint64_t fsync_nanos = 0;  // of which the fsync (sync mode)
};

class RecordReader {
 public:
  virtual ~RecordReader() = default;
  // Fills `out` with the next record; false at the end (or on error: see status()).
  virtual bool Next(Record* out) = 0;
  virtual Status status() const = 0;
};

class Log {
 public:
  static Status Open(const LogOptions& options, std::unique_ptr<Log>* out);
  virtual ~Log() = default;

  virtual uint64_t last_seq() const = 0;             // 0 when empty; includes staged records
  virtual uint64_t last_transition_seq() const = 0;  // includes staged transitions
  virtual std::optional<TimeMs> last_record_at() const = 0;
  // The stream's identity: a random UUID written when the log is created (or at the first
  // writable open of a log from before stream ids; a writable salvage draws a new one).
  // Empty only for such an older log opened read-only. Constant while open; thread-safe.
  virtual const std::string& stream_id() const = 0;

  // Stages a record (its seq must be last_seq() + 1) and the transitions it caused (their
  // seqs must continue last_transition_seq()). Records its idempotency key, if any.
  virtual void Stage(const Record& record, std::span<const Transition> transitions) = 0;
  // Stage's transitions one at a time, as a fold makes them (its TransitionSink): each seq
  // must continue last_transition_seq(). Then Stage(record, {}) stages the record that
  // caused them; both go in the same write, so no crash keeps one without the other.
  virtual void StageTransition(const TransitionView& transition) = 0;
  // Sets `seen` if the key was committed or staged before. A lookup that fails (a damaged
  // block) returns the error and leaves the log usable: the caller refuses the input.
  virtual Status LookupIdempotencyKey(std::string_view key, bool* seen) const = 0;
  // Writes every staged record in one batch; fsyncs in sync mode. On error the engine's
  // memory is ahead of the log and it must stop (see Engine). Finishes a started commit
  // first.
  virtual Status Commit() = 0;
  // Commit in two halves, so the writer can stage the next batch while this one is
  // written (and fsynced) on the log's own thread: StartCommit hands the staged batch
  // over and returns; FinishCommit waits for it and reports how it went. At most one is
  // in flight (StartCommit finishes the previous one first). Until FinishCommit returns
  // OK nothing of the batch is durable or visible to readers; its idempotency keys count
  // as seen from StartCommit on. `on_written` (may be empty) runs exactly once, when the
  // write has finished well or badly: on the log's thread (and FinishCommit returns only
  // after it has run), or before StartCommit returns if nothing went in flight (nothing
  // staged, or an error). It must not call the log; it
  // lets a writer sleep until either new work or the write's end arrives.
  virtual Status StartCommit(std::function<void()> on_written) = 0;
  virtual Status FinishCommit() = 0;
  virtual bool has_staged() const = 0;

  // Records with seq >= from_seq, in order (committed ones only).
  virtual std::unique_ptr<RecordReader> ReadFrom(uint64_t from_seq) const = 0;
  // ReadFrom(from_seq) read and decoded on a background thread, with the default batch size
  // and queue depth, so a replay's fold does not wait for RocksDB and the decoder. Include
  // log/read_ahead.h to use it; the log must outlive the reader.
  std::unique_ptr<ReadAheadReader> ReadAheadFrom(uint64_t from_seq) const;
  // Up to `limit` transitions with seq > after_seq. Thread-safe against one writer.
  virtual Status ReadTransitions(uint64_t after_seq, size_t limit,
                                 std::vector<Transition>* out) const = 0;
  // Decodes the transitions with seq > after_seq in order and hands each to `visit`, until
  // it returns false or the end. Thread-safe against one writer.
  using TransitionVisitor = std::function<bool(Transition&&)>;
  virtual Status ScanTransitions(uint64_t after_seq, const TransitionVisitor& visit) const = 0;

  // Reads everything committed and checks it: every table file's block checksums, the
  // records and transitions (decoded, gap-free, each holding its seq) and every
  // idempotency key (mapping to a record that exists and carries it). For `bucketctl
  // verify`; it reads the whole log.
  virtual Status Verify(LogVerifyReport* report) const = 0;

  // Erasure: rewrites, in one synced write, every record naming `erasure.user_id` to name
  // the pseudonym instead, without email, idempotency key or the properties no definition
  // reads; every transition naming them to name the pseudonym, without email; and deletes
  // their idempotency keys. Then writes the memtables out and compacts every family to its
  // last level, so that no file of the log keeps the old bytes (the write-ahead files holding
  // them are deleted once flushed). Takes as long as a full compaction. REQUIRES: nothing
  // staged or in flight (the engine commits first).
  virtual Status Erase(const LogErasure& erasure, LogErasureReport* report) = 0;

  // Writes a RocksDB checkpoint of everything committed to `dir` (which must not exist; its
  // parent must): a log that opens with this one's last committed record as its last. Table
  // files are hard-linked when `dir` is on the same filesystem (else copied) and write-ahead
  // files copied, or the memtables are flushed first when the write-ahead files are large
  // (kCheckpointWalCopyBytesMax in log.cc). Finishes a started commit first. For backups
  // of a running engine (Engine::Backup); REQUIRES: a writable log.
  virtual Status Checkpoint(const std::string& dir) = 0;

  virtual uint64_t ApproximateBytes() const = 0;
  // Memory the log holds (memtables, table readers, block cache): the process's memory
  // that is not the state's, told apart from it in EngineStats and /metrics.
  virtual uint64_t MemoryBytes() const = 0;
  // Totals since open; thread-safe.
  virtual LogWriteTimes write_times() const = 0;
  // At close: fsyncs whatever is written (async mode) and writes the memtables out.
  virtual Status Flush() = 0;
};

}  // namespace bucketd
