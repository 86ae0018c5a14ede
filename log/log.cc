#include "log/log.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>
#include <absl/strings/string_view.h>
#include <flatbuffers/flatbuffers.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/iostats_context.h>
#include <rocksdb/options.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>
#include <xxhash.h>

#include "engine/base/check.h"
#include "log/chunk.h"
#include "log/record_codec.h"

namespace bucketd {
namespace {

// Names and version written down in log_format.md.
constexpr char kRecordsFamily[] = "records";
constexpr char kTransitionsFamily[] = "transitions";
constexpr char kIdempotencyFamily[] = "idempotency";
constexpr char kMetaFamily[] = "meta";
// meta: how many erasures the log has been through (ASCII decimal); written by Erase.
constexpr char kErasuresKey[] = "erasures";
constexpr char kFormatVersionKey[] = "format_version";
// meta: the stream's identity (log_format.md, "Stream id"), a random UUID in text form.
constexpr char kStreamIdKey[] = "stream_id";
constexpr char kFormatVersion[] = "2";          // chunked values; written by new logs
constexpr char kFormatVersionUnframed[] = "1";  // one element per value; still read and appended
// Version 2's layout, and records of the subscription kinds may appear: a version 2 log
// becomes version 3 in the batch of its first such record, so a build that knows only 2
// refuses it at open ("not supported") instead of meeting an unknown record kind in the
// middle of a replay and calling the log corrupt (an operator might then salvage it).
constexpr char kFormatVersionSubscriptions[] = "3";
// Version 3, and events may carry their own properties and definitions use the criteria of
// SPEC §3b (RecordNeedsCriteriaFormat): a build that knows only 3 would drop the properties
// or refuse a definition midway through a replay, so it must refuse the log at open.
constexpr char kFormatVersionCriteria[] = "4";
// Version 4's content (subscription records, event properties and §3b criteria allowed
// from the start) with transitions in the compact encoding (log_format.md, "Compact
// transitions"): what new logs are created as. Logs of versions 1-4 keep the flatbuffers
// transitions they were written with.
constexpr char kFormatVersionCompact[] = "5";
// Version 5 with records' property lists in the compact encoding (log_format.md, "Compact
// properties"): what new logs are created as. Logs of versions 1-5 keep the flatbuffers
// property tables they were written with.
constexpr char kFormatVersionCompactProperties[] = "6";

// Handle order in RocksLog::families_; index 0 is RocksDB's mandatory default family.
enum Family : size_t { kDefault, kRecords, kTransitions, kIdempotency, kMeta, kFamilyCount };

constexpr size_t kMiB = size_t{1} << 20;
// Replay reads the records family front to back; big reads keep it off the syscall path.
constexpr size_t kReplayReadaheadBytes = 4 * kMiB;
// A checkpoint copies the write-ahead files up to this total (the WAL is capped at 256 MiB,
// MakeDbOptions); beyond it the memtables are flushed first and only table files, linked,
// are taken. Copying a small WAL is quicker than a flush and leaves no small table files
// behind in the live log; flushing bounds a backup's copy when the WAL is large.
constexpr uint64_t kCheckpointWalCopyBytesMax = 64 * kMiB;

// Big-endian, so RocksDB's bytewise order is seq order.
using SeqKey = std::array<char, sizeof(uint64_t)>;

SeqKey EncodeSeq(uint64_t seq) {
  SeqKey key;
  for (size_t i = 0; i < key.size(); ++i) {
    key[i] = static_cast<char>(seq >> (8 * (key.size() - 1 - i)));
  }
  return key;
}

bool DecodeSeq(rocksdb::Slice bytes, uint64_t* seq) {
  if (bytes.size() != sizeof(uint64_t)) return false;
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  }
  *seq = value;
  return true;
}

uint64_t KeyHash(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

// A version 4 UUID (RFC 9562) from 122 random bits: a consumer compares it as a string, and
// the UUID form is one every language already parses and stores.
std::string NewStreamId() {
  std::random_device random;
  std::array<uint8_t, 16> bytes;
  for (size_t i = 0; i < bytes.size(); i += 4) {
    const uint32_t word = random();
    for (size_t j = 0; j < 4; ++j) bytes[i + j] = static_cast<uint8_t>(word >> (8 * j));
  }
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 9562 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) id += '-';
    id += kHex[bytes[i] >> 4];
    id += kHex[bytes[i] & 0x0f];
  }
  return id;
}

#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
#endif

// While one lives, ThreadSanitizer does not check this thread's reads. It spans the decoding
// of bytes an iterator points at: they may lie in a memtable block that Debian's RocksDB
// (not built with -fsanitize=thread) allocated on the writer's thread and published with
// synchronization ThreadSanitizer cannot see, so every read of it looks like a race with the
// allocation. Writes stay checked, and so do reads everywhere else (the read-ahead queue, the
// decoded records handed between threads). A no-op in every other build.
class RocksBytesReads {
 public:
#if defined(__SANITIZE_THREAD__)
  RocksBytesReads() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__); }
  ~RocksBytesReads() { AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
#else
  RocksBytesReads() {}  // user-provided, so a guard is never an unused variable
  ~RocksBytesReads() {}
#endif
  RocksBytesReads(const RocksBytesReads&) = delete;
  RocksBytesReads& operator=(const RocksBytesReads&) = delete;
};

rocksdb::Slice AsSlice(const SeqKey& key) { return rocksdb::Slice(key.data(), key.size()); }

std::string_view AsView(rocksdb::Slice slice) {
  return std::string_view(slice.data(), slice.size());
}

Status FromRocks(const rocksdb::Status& status, std::string_view what) {
  if (status.ok()) return Status::Ok();
  std::string message = std::string(what) + ": " + status.ToString();
  if (status.IsCorruption()) return Status::Corruption(std::move(message));
  if (status.IsNoSpace()) return Status::NoSpace(std::move(message));
  return Status::IoError(std::move(message));
}

// RocksDB's own diagnostics (flushes, compactions, errors) in <log dir>/LOG. Written with
// stdio, ignoring write errors: RocksDB's default logger asserts (aborting the process in
// Debian's build) when it writes again after a failed write, which a full disk causes at
// the first failed commit. The previous run's file is kept as LOG.old.
class InfoLogFile final : public rocksdb::Logger {
 public:
  explicit InfoLogFile(const std::string& dir)
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL) {
    const std::string path = dir + "/LOG";
    std::rename(path.c_str(), (path + ".old").c_str());
    file_ = std::fopen(path.c_str(), "ae");
  }
  ~InfoLogFile() override {
    if (file_ != nullptr) std::fclose(file_);
  }
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    if (file_ == nullptr) return;
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
        1'000'000;
    std::tm utc;
    gmtime_r(&seconds, &utc);
    char stamp[40];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
    flockfile(file_);
    std::fprintf(file_, "%s.%06lldZ ", stamp, static_cast<long long>(micros));
    std::vfprintf(file_, format, ap);
    std::fputc('\n', file_);
    std::fflush(file_);
    funlockfile(file_);
  }

 private:
  std::FILE* file_ = nullptr;
};

rocksdb::DBOptions MakeDbOptions(const LogOptions& options) {
  rocksdb::DBOptions db;
  if (!options.read_only) {
    std::error_code ignored;  // DB::Open reports a directory it cannot create
    std::filesystem::create_directories(options.path, ignored);
    db.info_log = std::make_shared<InfoLogFile>(options.path);
  }
  db.create_if_missing = !options.read_only;
  db.create_missing_column_families = !options.read_only;
  // Every family shares the WAL, and a WAL file lives until every family holding data in it
  // has flushed. Rarely written families (meta) would pin old WAL files forever without a
  // cap; crossing it flushes them.
  db.max_total_wal_size = 256 * kMiB;
  // Each Write() hands its bytes to the OS before returning (no user-space WAL buffer), so
  // a killed process loses nothing that Commit() returned for, even in async mode.
  db.manual_wal_flush = false;
  // After a crash, an incomplete last entry of a WAL file (a write the kill cut short,
  // never acknowledged) is dropped. Damage before the end fails the open instead: with
  // point-in-time recovery RocksDB would silently drop everything after it, acknowledged
  // inputs included. Salvage (an operator's explicit request) accepts exactly that loss.
  db.wal_recovery_mode = options.salvage ? rocksdb::WALRecoveryMode::kPointInTimeRecovery
                                         : rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  db.max_background_jobs = 2;
  // Every change to the set of table files (a flush, a compaction) starts a new MANIFEST
  // holding only the current files, and the old one is deleted. The MANIFEST records each
  // table file's smallest and largest key, and an idempotency key may hold a contact's id:
  // an erasure must not leave it behind in a MANIFEST that only grows (see Erase). A
  // MANIFEST lists a few hundred files, so writing a fresh one per flush costs little.
  db.max_manifest_file_size = 1;
  return db;
}

// Records and transitions: append-only, keys ascending, read by long forward scans.
rocksdb::ColumnFamilyOptions SequenceFamilyOptions() {
  rocksdb::ColumnFamilyOptions family;
  // Fewer, larger flushes for an append stream; memory is taken only as it fills.
  family.write_buffer_size = 64 * kMiB;
  // LZ4: records repeat names, ids and JSON keys, so they shrink ~2x, and LZ4 decompresses at
  // GB/s, keeping replay bound by decoding rather than by I/O. Zstd would save a little more
  // disk at a replay-speed cost; no compression would double the bytes replay reads.
  family.compression = rocksdb::kLZ4Compression;
  // Keys arrive in order, so levels fill without overlap; dynamic sizing keeps the space
  // overhead of leveled compaction low.
  family.level_compaction_dynamic_level_bytes = true;
  // Every key shares its first byte (a big-endian seq below 2^56), so with this extractor
  // each memtable insert starts from the previous one's position: appending in key order
  // costs O(1) instead of a skiplist descent (the descent's key compares were ~10% of
  // ingest CPU).
  family.memtable_insert_with_hint_prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(1));
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 32 * 1024;  // scans dominate; bigger blocks mean less per-block work
  family.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return family;
}

// Idempotency: point lookups of random keys, and most lookups miss (a key is new). A bloom
// filter answers a miss without reading a data block.
rocksdb::ColumnFamilyOptions IdempotencyFamilyOptions() {
  rocksdb::ColumnFamilyOptions family;
  family.write_buffer_size = 32 * kMiB;
  family.compression = rocksdb::kLZ4Compression;
  family.level_compaction_dynamic_level_bytes = true;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));  // ~1% false positives
  family.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return family;
}

std::vector<rocksdb::ColumnFamilyDescriptor> FamilyDescriptors() {
  rocksdb::ColumnFamilyOptions small;
  small.write_buffer_size = 4 * kMiB;
  std::vector<rocksdb::ColumnFamilyDescriptor> families(kFamilyCount);
  families[kDefault] = {rocksdb::kDefaultColumnFamilyName, small};
  families[kRecords] = {kRecordsFamily, SequenceFamilyOptions()};
  families[kTransitions] = {kTransitionsFamily, SequenceFamilyOptions()};
  families[kIdempotency] = {kIdempotencyFamily, IdempotencyFamilyOptions()};
  families[kMeta] = {kMetaFamily, small};
  return families;
}

// Walks the elements of a sequence family (records or transitions) in seq order from
// `from_seq`, checking that each chunk starts where the previous one ended. Yields each
// element's bytes (valid until the next call) and the seq its place implies; the caller
// decodes it and checks that it holds that seq.
class SequenceWalker {
 public:
  SequenceWalker(std::unique_ptr<rocksdb::Iterator> iterator, uint64_t from_seq, bool framed,
                 std::string_view what)
      : iterator_(std::move(iterator)), from_seq_(from_seq), framed_(framed), what_(what) {
    // The chunk holding from_seq starts at or before it.
    iterator_->SeekForPrev(AsSlice(EncodeSeq(from_seq)));
    if (!iterator_->Valid() && iterator_->status().ok()) iterator_->SeekToFirst();
  }

  bool Next(std::string_view* element, uint64_t* seq) {
    if (!status_.ok()) return false;
    for (;;) {
      if (!in_chunk_ && !LoadChunk()) return false;
      bool broken = false;
      if (!chunk_.Next(element, &broken)) {
        if (broken)
          return Fail("the " + what_ + " chunk at seq " + std::to_string(chunk_seq_) +
                      " is damaged");
        in_chunk_ = false;
        iterator_->Next();
        continue;
      }
      *seq = next_seq_++;
      if (*seq >= from_seq_) return true;  // else: before from_seq in the first chunk
    }
  }

  Status status() const { return status_; }
  // Ends the walk with corruption the caller found in an element (it decodes them).
  bool Fail(std::string message) {
    status_ = Status::Corruption(std::move(message));
    return false;
  }

 private:
  bool LoadChunk() {
    if (!iterator_->Valid()) {
      status_ = FromRocks(iterator_->status(), "reading log " + what_ + "s");
      return false;
    }
    if (!DecodeSeq(iterator_->key(), &chunk_seq_)) return Fail(what_ + " key is not a seq");
    // The first chunk may start before from_seq; each later one where the last ended.
    const uint64_t expected = started_ ? next_seq_ : from_seq_;
    if (started_ ? chunk_seq_ != expected : chunk_seq_ > expected) {
      return Fail("gap in " + what_ + "s: expected seq " + std::to_string(expected) + ", found " +
                  std::to_string(chunk_seq_));
    }
    started_ = true;
    next_seq_ = chunk_seq_;
    chunk_ = ChunkReader(AsView(iterator_->value()), framed_);
    in_chunk_ = true;
    return true;
  }

  std::unique_ptr<rocksdb::Iterator> iterator_;
  const uint64_t from_seq_;
  const bool framed_;
  const std::string what_;
  ChunkReader chunk_;
  bool in_chunk_ = false;
  bool started_ = false;
  uint64_t chunk_seq_ = 0;  // the current chunk's key
  uint64_t next_seq_ = 0;   // the seq of the chunk's next element
  Status status_;
};

class RocksRecordReader final : public RecordReader {
 public:
  RocksRecordReader(std::unique_ptr<rocksdb::Iterator> iterator, uint64_t from_seq, bool framed)
      : walker_(std::move(iterator), from_seq, framed, "record") {}

  bool Next(Record* out) override {
    const RocksBytesReads rocks_bytes;
    std::string_view element;
    uint64_t seq = 0;
    if (!walker_.Next(&element, &seq)) return false;
    Status decoded = DecodeRecord(element, out);
    if (!decoded.ok()) {
      return walker_.Fail("record " + std::to_string(seq) + ": " + decoded.message());
    }
    if (out->seq != seq) {
      return walker_.Fail("record " + std::to_string(seq) + " holds another seq");
    }
    return true;
  }

  Status status() const override { return walker_.status(); }

 private:
  SequenceWalker walker_;
};

class RocksLog final : public Log {
 public:
  RocksLog(const LogOptions& options, rocksdb::DB* db,
           std::vector<rocksdb::ColumnFamilyHandle*> families)
      : options_(options), db_(db), families_(std::move(families)) {}

  ~RocksLog() override {
    // A started commit completes (its batch may already be on disk); then the committer
    // stops. Staged but uncommitted writes are dropped: they were never acknowledged.
    (void)FinishCommit();
    if (committer_.joinable()) {
      {
        std::lock_guard lock(committer_mu_);
        committer_stopping_ = true;
      }
      committer_cv_.notify_all();
      committer_.join();
    }
    for (rocksdb::ColumnFamilyHandle* family : families_) {
      db_->DestroyColumnFamilyHandle(family).PermitUncheckedError();
    }
    db_->Close().PermitUncheckedError();
  }

  Status Recover();

  uint64_t last_seq() const override { return last_seq_.load(std::memory_order_acquire); }
  uint64_t last_transition_seq() const override {
    return last_transition_seq_.load(std::memory_order_acquire);
  }
  std::optional<TimeMs> last_record_at() const override { return last_record_at_; }
  const std::string& stream_id() const override { return stream_id_; }

  void Stage(const Record& record, std::span<const Transition> transitions) override;
  void StageTransition(const TransitionView& transition) override;
  Status LookupIdempotencyKey(std::string_view key, bool* seen) const override;
  Status Commit() override;
  Status StartCommit(std::function<void()> on_written) override;
  Status FinishCommit() override;
  bool has_staged() const override { return pending_.Count() > 0 || !record_chunk_.empty(); }

  std::unique_ptr<RecordReader> ReadFrom(uint64_t from_seq) const override;
  Status ReadTransitions(uint64_t after_seq, size_t limit,
                         std::vector<Transition>* out) const override;
  Status ScanTransitions(uint64_t after_seq, const TransitionVisitor& visit) const override;

  Status Verify(LogVerifyReport* report) const override;
  Status Erase(const LogErasure& erasure, LogErasureReport* report) override;
  Status Checkpoint(const std::string& dir) override;
  uint64_t ApproximateBytes() const override;
  uint64_t MemoryBytes() const override;
  LogWriteTimes write_times() const override;
  Status Flush() override;

 private:
  // DB::Write of a commit's batch, timed into the LogWriteTimes counters (on the engine's
  // thread or the committer's).
  rocksdb::Status TimedWrite(rocksdb::WriteBatch* batch);
  rocksdb::ColumnFamilyHandle* family(Family which) const { return families_[which]; }
  Status CheckFormatVersion();
  // A transitions element in this log's encoding: compact (version 5 or 6) or flatbuffers.
  Status DecodeStoredTransition(std::string_view element, Transition* out) const {
    return compact_transitions_ ? DecodeTransitionCompact(element, out)
                                : DecodeTransition(element, out);
  }
  Status LoadStreamId();
  // A log keeps the property encoding it was created with (one encoding per log).
  PropertyEncoding property_encoding() const {
    return compact_properties_ ? PropertyEncoding::kCompact : PropertyEncoding::kTables;
  }
  rocksdb::Slice BuiltBytes() const {
    return rocksdb::Slice(reinterpret_cast<const char*>(builder_.GetBufferPointer()),
                          builder_.GetSize());
  }
  // WriteBatch::Put copies, so builder_ is free for the next value once this returns.
  void StagePut(Family which, rocksdb::Slice key, rocksdb::Slice value) {
    rocksdb::Status s = pending_.Put(family(which), key, value);
    if (!s.ok() && error_.ok()) error_ = FromRocks(s, "staging a log write");
  }
  // Appends `element` (holding `seq`) to the family's open chunk, staging it when full.
  void StageElement(Family which, ChunkBuilder* chunk, uint64_t seq) {
    if (chunk->Add(seq, AsView(BuiltBytes()))) StageChunk(which, chunk);
  }
  void StageChunk(Family which, ChunkBuilder* chunk) {
    if (chunk->empty()) return;
    const std::string_view value = chunk->value();
    StagePut(which, AsSlice(EncodeSeq(chunk->first_seq())),
             rocksdb::Slice(value.data(), value.size()));
    chunk->Clear();
  }
  // Closes the open chunks: a chunk never spans two write batches.
  void StageOpenChunks() {
    StageChunk(kRecords, &record_chunk_);
    StageChunk(kTransitions, &transition_chunk_);
  }
  // Stages into `batch` every chunk of `which` holding an element `rewrite` changes: it gets
  // an element's bytes and sets *changed with the new bytes in *out. A rewritten chunk keeps
  // its key and element count, so every seq stays where it was.
  using ElementRewrite =
      std::function<Status(std::string_view element, std::string* out, bool* changed)>;
  Status RewriteChunks(Family which, const ElementRewrite& rewrite, rocksdb::WriteBatch* batch);
  // The seq of the last element in `which` (0 if it is empty) and, if `element` is not
  // null, a copy of that element's bytes.
  Status LastSeq(Family which, uint64_t* seq, std::string* element) const;

  const LogOptions options_;
  const std::unique_ptr<rocksdb::DB> db_;
  const std::vector<rocksdb::ColumnFamilyHandle*> families_;

  // Written by the single writer thread; atomics so other threads may read them.
  std::atomic<uint64_t> last_seq_{0};
  std::atomic<uint64_t> last_transition_seq_{0};
  // Writer thread only, like everything below.
  std::optional<TimeMs> last_record_at_;
  std::string stream_id_;  // set by Recover, then constant
  bool framed_ = true;     // format version 2 (chunks); false for a version 1 log
  // The log says version 3 (or a staged batch does): see kFormatVersionSubscriptions.
  bool subscriptions_version_ = false;
  // The log says version 4, 5 or 6 (or a staged batch says 4): see kFormatVersionCriteria.
  bool criteria_version_ = false;
  bool compact_transitions_ = false;  // format version 5 or 6
  bool compact_properties_ = false;   // format version 6
  std::string compact_scratch_;       // StageTransition's element in the compact encoding
  rocksdb::WriteBatch pending_;
  ChunkBuilder record_chunk_;      // staged records not yet in pending_
  ChunkBuilder transition_chunk_;  // staged transitions not yet in pending_
  absl::flat_hash_set<std::string> pending_idempotency_keys_;
  flatbuffers::FlatBufferBuilder builder_;
  // Sticky: after a failed write or lookup, every Commit() fails and the engine stops.
  mutable Status error_;

  // The started commit (StartCommit): the batch and keys belong to the committer thread
  // from StartCommit until FinishCommit sees it done.
  void CommitterLoop();
  bool in_flight_ = false;
  rocksdb::WriteBatch in_flight_batch_;
  absl::flat_hash_set<std::string> in_flight_idempotency_keys_;
  std::thread committer_;  // started with the first StartCommit
  std::mutex committer_mu_;
  std::condition_variable committer_cv_;
  bool write_requested_ = false;  // guarded by committer_mu_, like the two below
  bool committer_stopping_ = false;
  std::function<void()> on_written_;  // StartCommit's callback for the write in flight
  rocksdb::Status write_status_;

  // LogWriteTimes, written by whichever thread writes (one at a time), read by any.
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> write_bytes_{0};
  std::atomic<uint64_t> write_nanos_{0};
  std::atomic<uint64_t> fsync_nanos_{0};
};

Status RocksLog::Recover() {
  if (Status s = CheckFormatVersion(); !s.ok()) return s;
  if (Status s = LoadStreamId(); !s.ok()) return s;
  record_chunk_ = ChunkBuilder(framed_);
  transition_chunk_ = ChunkBuilder(framed_);
  uint64_t seq = 0;
  std::string value;
  if (Status s = LastSeq(kRecords, &seq, &value); !s.ok()) return s;
  last_seq_.store(seq, std::memory_order_release);
  if (seq > 0) {
    Record last;
    if (Status s = DecodeRecord(value, &last); !s.ok()) {
      return Status::Corruption("last record " + std::to_string(seq) + ": " + s.message());
    }
    if (last.seq != seq) {
      return Status::Corruption("last record " + std::to_string(seq) + " holds another seq");
    }
    last_record_at_ = last.at;
  }
  if (Status s = LastSeq(kTransitions, &seq, nullptr); !s.ok()) return s;
  last_transition_seq_.store(seq, std::memory_order_release);
  return Status::Ok();
}

Status RocksLog::CheckFormatVersion() {
  std::string version;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), family(kMeta), kFormatVersionKey, &version);
  if (s.ok()) {
    if (version != kFormatVersion && version != kFormatVersionUnframed &&
        version != kFormatVersionSubscriptions && version != kFormatVersionCriteria &&
        version != kFormatVersionCompact && version != kFormatVersionCompactProperties) {
      return Status::Corruption("log format version " + version + " is not supported (want " +
                                kFormatVersionUnframed + ", " + kFormatVersion + ", " +
                                kFormatVersionSubscriptions + ", " + kFormatVersionCriteria + ", " +
                                kFormatVersionCompact + " or " + kFormatVersionCompactProperties +
                                ")");
    }
    // A version 1 log stays version 1: it is read and appended one element per value.
    framed_ = version != kFormatVersionUnframed;
    compact_properties_ = version == kFormatVersionCompactProperties;
    compact_transitions_ = compact_properties_ || version == kFormatVersionCompact;
    criteria_version_ = compact_transitions_ || version == kFormatVersionCriteria;
    subscriptions_version_ = criteria_version_ || version == kFormatVersionSubscriptions;
    return Status::Ok();
  }
  if (!s.IsNotFound()) return FromRocks(s, "reading log format version");
  // Any key at all, whatever its layout, means a log written without a version.
  std::unique_ptr<rocksdb::Iterator> records(
      db_->NewIterator(rocksdb::ReadOptions(), family(kRecords)));
  records->SeekToFirst();
  if (records->Valid()) return Status::Corruption("log has records but no format version");
  if (Status s = FromRocks(records->status(), "reading the log"); !s.ok()) return s;
  if (options_.read_only) return Status::Ok();
  rocksdb::WriteOptions write;
  write.sync = true;
  if (Status s = FromRocks(
          db_->Put(write, family(kMeta), kFormatVersionKey, kFormatVersionCompactProperties),
          "writing log format version");
      !s.ok()) {
    return s;
  }
  subscriptions_version_ = criteria_version_ = true;
  compact_transitions_ = compact_properties_ = true;
  return Status::Ok();
}

Status RocksLog::LoadStreamId() {
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), family(kMeta), kStreamIdKey, &stream_id_);
  if (!s.ok() && !s.IsNotFound()) return FromRocks(s, "reading the stream id");
  // A writable salvage drops acknowledged records, and the seqs after the cut will be used
  // again by different transitions: a consumer must see another stream, not a continuation.
  const bool rotate = options_.salvage && !options_.read_only;
  if (s.ok() && !rotate) return Status::Ok();
  // A log created before stream ids existed gets one at its first writable open; read-only,
  // it has none (empty) until then.
  stream_id_.clear();
  if (options_.read_only) return Status::Ok();
  std::string id = NewStreamId();
  rocksdb::WriteOptions write;
  write.sync = true;  // an id handed to a consumer must never change under it
  if (Status w =
          FromRocks(db_->Put(write, family(kMeta), kStreamIdKey, id), "writing the stream id");
      !w.ok()) {
    return w;
  }
  stream_id_ = std::move(id);
  return Status::Ok();
}

Status RocksLog::LastSeq(Family which, uint64_t* seq, std::string* element) const {
  std::unique_ptr<rocksdb::Iterator> iterator(
      db_->NewIterator(rocksdb::ReadOptions(), family(which)));
  iterator->SeekToLast();
  *seq = 0;
  if (!iterator->Valid()) return FromRocks(iterator->status(), "seeking the end of the log");
  uint64_t chunk_seq = 0;
  if (!DecodeSeq(iterator->key(), &chunk_seq)) return Status::Corruption("log key is not a seq");
  const RocksBytesReads rocks_bytes;
  ChunkReader chunk(AsView(iterator->value()), framed_);
  std::string_view last;
  size_t count = 0;
  bool broken = false;
  for (std::string_view e; chunk.Next(&e, &broken);) {
    last = e;
    ++count;
  }
  if (broken) {
    return Status::Corruption("the last chunk (seq " + std::to_string(chunk_seq) + ") is damaged");
  }
  *seq = chunk_seq + count - 1;
  if (element != nullptr) element->assign(last);
  return Status::Ok();
}

void RocksLog::Stage(const Record& record, std::span<const Transition> transitions) {
  // Nothing is staged on a read-only log; Commit() reports the misuse as a value.
  if (options_.read_only) return;
  const uint64_t seq = last_seq();
  // The caller's state and the log disagree: writing on would make a log that cannot be
  // replayed.
  BUCKETD_CHECK_MSG(record.seq == seq + 1, "staged record seq " + std::to_string(record.seq) +
                                               " does not follow " + std::to_string(seq));
  const SeqKey key = EncodeSeq(record.seq);
  // In the same batch as the record, so no crash leaves one without the other. Flagged at
  // once: a batch that fails to commit fails the log for good (error_), and the next open
  // reads the version again. A version 1 log stays 1 (its layout is what the version names;
  // builds that old predate version 2 anyway).
  if (RecordNeedsCriteriaFormat(record) && framed_ && !criteria_version_) {
    StagePut(kMeta, kFormatVersionKey, kFormatVersionCriteria);
    criteria_version_ = subscriptions_version_ = true;
  }
  if (IsSubscriptionRecord(record.kind) && framed_ && !subscriptions_version_) {
    StagePut(kMeta, kFormatVersionKey, kFormatVersionSubscriptions);
    subscriptions_version_ = true;
  }
  EncodeRecord(record, property_encoding(), &builder_);
  StageElement(kRecords, &record_chunk_, record.seq);
  if (record.idempotency_key.has_value()) {
    StagePut(kIdempotency, *record.idempotency_key, AsSlice(key));
    pending_idempotency_keys_.insert(*record.idempotency_key);
  }

  for (const Transition& transition : transitions) StageTransition(TransitionView::Of(transition));
  last_seq_.store(record.seq, std::memory_order_release);
  last_record_at_ = record.at;
}

void RocksLog::StageTransition(const TransitionView& transition) {
  if (options_.read_only) return;
  const uint64_t seq = last_transition_seq();
  BUCKETD_CHECK_MSG(transition.seq == seq + 1, "staged transition seq " +
                                                   std::to_string(transition.seq) +
                                                   " does not follow " + std::to_string(seq));
  if (compact_transitions_) {
    EncodeTransitionCompact(transition, &compact_scratch_);
    if (transition_chunk_.Add(transition.seq, compact_scratch_)) {
      StageChunk(kTransitions, &transition_chunk_);
    }
  } else {
    EncodeTransition(transition, &builder_);
    StageElement(kTransitions, &transition_chunk_, transition.seq);
  }
  last_transition_seq_.store(transition.seq, std::memory_order_release);
}

Status RocksLog::LookupIdempotencyKey(std::string_view key, bool* seen) const {
  // Debian's Abseil has its own string_view type, not an alias of std::string_view.
  const absl::string_view k(key.data(), key.size());
  *seen = true;
  if (pending_idempotency_keys_.contains(k) || in_flight_idempotency_keys_.contains(k)) {
    return Status::Ok();
  }
  rocksdb::PinnableSlice seq;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), family(kIdempotency),
                               rocksdb::Slice(key.data(), key.size()), &seq);
  if (s.ok()) return Status::Ok();
  *seen = false;
  if (s.IsNotFound()) return Status::Ok();
  return FromRocks(s, "looking up an idempotency key");
}

Status RocksLog::Commit() {
  if (options_.read_only) return Status::FailedPrecondition("log", "the log is open read-only");
  if (Status s = FinishCommit(); !s.ok()) return s;
  StageOpenChunks();
  if (!error_.ok()) return error_;
  if (pending_.Count() == 0) return Status::Ok();
  // One write and, in sync mode, one fsync for everything staged since the last Commit():
  // the group commit. WriteOptions::sync rather than Write() + SyncWAL() because with
  // sync the batch becomes visible to readers (ReadTransitions on subscriber threads) only
  // once it is durable, so no reader ever sees a transition a crash could take back
  // (TimedWrite sets it).
  rocksdb::Status s = TimedWrite(&pending_);
  if (!s.ok()) {
    error_ = FromRocks(s, "committing to the log");
    return error_;
  }
  pending_.Clear();
  pending_idempotency_keys_.clear();
  return Status::Ok();
}

Status RocksLog::StartCommit(std::function<void()> on_written) {
  // Nothing goes in flight unless the end: on_written has then already run.
  const auto written_now = [&on_written](Status status) {
    if (on_written) on_written();
    return status;
  };
  if (options_.read_only) {
    return written_now(Status::FailedPrecondition("log", "the log is open read-only"));
  }
  if (Status s = FinishCommit(); !s.ok()) return written_now(s);
  StageOpenChunks();
  if (!error_.ok()) return written_now(error_);
  if (pending_.Count() == 0) return written_now(Status::Ok());
  // Started before anything is handed over, so a failure to start leaves no batch in limbo.
  if (!committer_.joinable()) committer_ = std::thread([this] { CommitterLoop(); });
  std::swap(in_flight_batch_, pending_);
  std::swap(in_flight_idempotency_keys_, pending_idempotency_keys_);
  in_flight_ = true;
  {
    std::lock_guard lock(committer_mu_);
    write_requested_ = true;
    on_written_ = std::move(on_written);
  }
  committer_cv_.notify_all();
  return Status::Ok();
}

Status RocksLog::FinishCommit() {
  if (!in_flight_) return Status::Ok();
  rocksdb::Status written;
  {
    std::unique_lock lock(committer_mu_);
    committer_cv_.wait(lock, [this] { return !write_requested_; });
    written = write_status_;
  }
  in_flight_ = false;
  in_flight_batch_.Clear();
  in_flight_idempotency_keys_.clear();
  if (!written.ok()) error_ = FromRocks(written, "committing to the log");
  return error_;
}

rocksdb::Status RocksLog::TimedWrite(rocksdb::WriteBatch* batch) {
  rocksdb::WriteOptions write;
  write.sync = options_.sync;
  // RocksDB's timers (the fsync's among them) for this write only: the level is
  // thread-local, and left on it would time every idempotency lookup of the thread too.
  // A few clock reads per commit.
  const rocksdb::PerfLevel level = rocksdb::GetPerfLevel();
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableTimeExceptForMutex);
  rocksdb::IOStatsContext* io = rocksdb::get_iostats_context();
  const uint64_t fsync_before = io->fsync_nanos;
  const size_t bytes = batch->GetDataSize();
  const auto start = std::chrono::steady_clock::now();
  rocksdb::Status s = db_->Write(write, batch);
  rocksdb::SetPerfLevel(level);
  const auto nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  commits_.fetch_add(1, std::memory_order_relaxed);
  write_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  write_nanos_.fetch_add(static_cast<uint64_t>(nanos), std::memory_order_relaxed);
  fsync_nanos_.fetch_add(io->fsync_nanos - fsync_before, std::memory_order_relaxed);
  return s;
}

LogWriteTimes RocksLog::write_times() const {
  return LogWriteTimes{
      commits_.load(std::memory_order_relaxed), write_bytes_.load(std::memory_order_relaxed),
      write_nanos_.load(std::memory_order_relaxed), fsync_nanos_.load(std::memory_order_relaxed)};
}

void RocksLog::CommitterLoop() {
  std::unique_lock lock(committer_mu_);
  for (;;) {
    committer_cv_.wait(lock, [this] { return write_requested_ || committer_stopping_; });
    if (!write_requested_) return;  // stopping, nothing in flight
    lock.unlock();
    // Same options as Commit(): visible to readers only once durable.
    rocksdb::Status s = TimedWrite(&in_flight_batch_);
    // The callback runs before the write is reported finished: until then FinishCommit
    // cannot return, so the writer cannot go on to destroy what the callback touches (a
    // server's condition variable at shutdown, which ThreadSanitizer caught being
    // signalled while destroyed). The writer cannot start another commit meanwhile either:
    // StartCommit finishes this one first.
    lock.lock();
    std::function<void()> on_written = std::move(on_written_);
    on_written_ = nullptr;
    lock.unlock();
    if (on_written) on_written();
    lock.lock();
    write_status_ = s;
    write_requested_ = false;
    committer_cv_.notify_all();
  }
}

std::unique_ptr<RecordReader> RocksLog::ReadFrom(uint64_t from_seq) const {
  rocksdb::ReadOptions read;
  read.readahead_size = kReplayReadaheadBytes;
  // A replay touches each block once; caching it would only evict what live reads need.
  read.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> iterator(db_->NewIterator(read, family(kRecords)));
  return std::make_unique<RocksRecordReader>(std::move(iterator), std::max<uint64_t>(from_seq, 1),
                                             framed_);
}

Status RocksLog::ReadTransitions(uint64_t after_seq, size_t limit,
                                 std::vector<Transition>* out) const {
  out->clear();
  if (limit == 0) return Status::Ok();
  return ScanTransitions(after_seq, [&](Transition&& t) {
    out->push_back(std::move(t));
    return out->size() < limit;
  });
}

Status RocksLog::ScanTransitions(uint64_t after_seq, const TransitionVisitor& visit) const {
  SequenceWalker walker(std::unique_ptr<rocksdb::Iterator>(
                            db_->NewIterator(rocksdb::ReadOptions(), family(kTransitions))),
                        after_seq + 1, framed_, "transition");
  const RocksBytesReads rocks_bytes;
  std::string_view element;
  uint64_t seq = 0;
  Transition transition;
  while (walker.Next(&element, &seq)) {
    if (Status s = DecodeStoredTransition(element, &transition); !s.ok()) {
      return Status::Corruption("transition " + std::to_string(seq) + ": " + s.message());
    }
    if (transition.seq != seq) {
      return Status::Corruption("transition " + std::to_string(seq) + " holds another seq");
    }
    if (!visit(std::move(transition))) return Status::Ok();
  }
  return walker.status();
}

Status RocksLog::Verify(LogVerifyReport* report) const {
  *report = LogVerifyReport{};
  // Block checksums of every table file, whatever family: damage in a block no scan below
  // happens to read (an index, a filter) is found too.
  if (Status s = FromRocks(db_->VerifyChecksum(), "checking the log's table files"); !s.ok()) {
    return s;
  }
  std::unique_ptr<RecordReader> records = ReadFrom(1);
  // Each idempotency key's hash -> the first record that carried it, to check the
  // idempotency family against (16 bytes a key instead of the key itself; two keys sharing
  // a 64-bit hash would be a false alarm, never a missed one).
  absl::flat_hash_map<uint64_t, uint64_t> first_carrier;
  for (Record r; records->Next(&r); ++report->records) {
    if (r.idempotency_key) first_carrier.try_emplace(KeyHash(*r.idempotency_key), r.seq);
  }
  if (Status s = records->status(); !s.ok()) return s;
  if (report->records != last_seq()) {
    return Status::Corruption("the log holds " + std::to_string(report->records) +
                              " records but ends at seq " + std::to_string(last_seq()));
  }
  std::vector<Transition> page;
  for (uint64_t after = 0;; after = page.back().seq) {
    constexpr size_t kPage = 4096;
    if (Status s = ReadTransitions(after, kPage, &page); !s.ok()) return s;
    report->transitions += page.size();
    if (page.size() < kPage) break;
  }
  if (report->transitions != last_transition_seq()) {
    return Status::Corruption("the log holds " + std::to_string(report->transitions) +
                              " transitions but ends at seq " +
                              std::to_string(last_transition_seq()));
  }
  std::unique_ptr<rocksdb::Iterator> keys(
      db_->NewIterator(rocksdb::ReadOptions(), family(kIdempotency)));
  for (keys->SeekToFirst(); keys->Valid(); keys->Next(), ++report->idempotency_keys) {
    const RocksBytesReads rocks_bytes;
    const std::string_view key = AsView(keys->key());
    uint64_t seq = 0;
    const auto carrier = first_carrier.find(KeyHash(key));
    if (!DecodeSeq(keys->value(), &seq) || carrier == first_carrier.end() ||
        carrier->second != seq) {
      return Status::Corruption("idempotency key \"" + std::string(key) +
                                "\" does not map to the first record that carried it");
    }
  }
  if (Status s = FromRocks(keys->status(), "reading the idempotency keys"); !s.ok()) return s;
  if (report->idempotency_keys != first_carrier.size()) {
    return Status::Corruption(std::to_string(first_carrier.size() - report->idempotency_keys) +
                              " idempotency keys of logged records are missing");
  }
  return Status::Ok();
}

Status RocksLog::RewriteChunks(Family which, const ElementRewrite& rewrite,
                               rocksdb::WriteBatch* batch) {
  rocksdb::ReadOptions read;
  read.fill_cache = false;  // one pass over everything: keep the cache for live reads
  std::unique_ptr<rocksdb::Iterator> chunks(db_->NewIterator(read, family(which)));
  std::vector<std::string_view> elements;
  std::vector<std::string> rewritten;
  std::vector<bool> was_changed;
  for (chunks->SeekToFirst(); chunks->Valid(); chunks->Next()) {
    uint64_t first_seq = 0;
    if (!DecodeSeq(chunks->key(), &first_seq)) return Status::Corruption("log key is not a seq");
    const RocksBytesReads rocks_bytes;
    ChunkReader reader(AsView(chunks->value()), framed_);
    elements.clear();
    rewritten.clear();
    was_changed.clear();
    bool any_changed = false;
    std::string_view element;
    bool broken = false;
    while (reader.Next(&element, &broken)) {
      std::string out;
      bool changed = false;
      if (Status s = rewrite(element, &out, &changed); !s.ok()) return s;
      elements.push_back(element);
      rewritten.push_back(std::move(out));
      was_changed.push_back(changed);
      any_changed |= changed;
    }
    if (broken) {
      return Status::Corruption("the chunk at seq " + std::to_string(first_seq) + " is damaged");
    }
    if (!any_changed) continue;
    // Kept whole even if a longer pseudonym takes it past kChunkBytesMax: readers locate
    // elements by key and position, never by size.
    ChunkBuilder chunk(framed_);
    for (size_t i = 0; i < elements.size(); ++i) {
      (void)chunk.Add(first_seq + i, was_changed[i] ? rewritten[i] : elements[i]);
    }
    const std::string_view value = chunk.value();
    if (Status s = FromRocks(
            batch->Put(family(which), chunks->key(), rocksdb::Slice(value.data(), value.size())),
            "staging an erasure");
        !s.ok()) {
      return s;
    }
  }
  return FromRocks(chunks->status(), "reading the log for an erasure");
}

Status RocksLog::Erase(const LogErasure& erasure, LogErasureReport* report) {
  *report = LogErasureReport{};
  if (options_.read_only) return Status::FailedPrecondition("", "the log is open read-only");
  if (Status s = FinishCommit(); !s.ok()) return s;
  BUCKETD_CHECK_MSG(!has_staged(), "an erasure needs every staged input committed first");
  if (!error_.ok()) return error_;

  rocksdb::WriteBatch batch;
  flatbuffers::FlatBufferBuilder builder;
  std::vector<std::string> keys;
  const auto bytes = [&builder] {
    return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                       builder.GetSize());
  };
  Status s = RewriteChunks(
      kRecords,
      [&](std::string_view element, std::string* out, bool* changed) {
        Record r;
        if (Status d = DecodeRecord(element, &r); !d.ok()) return d;
        *changed = r.user_id == erasure.user_id;
        if (!*changed) return Status::Ok();
        r.user_id = erasure.pseudonym;
        r.email.reset();
        if (r.idempotency_key) keys.push_back(*std::exchange(r.idempotency_key, std::nullopt));
        std::erase_if(r.properties,
                      [&](const PropertyPatch& p) { return !erasure.keep_property(p.key); });
        std::erase_if(r.event_properties, [&](const PropertyPatch& p) {
          return !erasure.keep_event_property || !erasure.keep_event_property(p.key);
        });
        EncodeRecord(r, property_encoding(), &builder);
        *out = bytes();
        ++report->records;
        return Status::Ok();
      },
      &batch);
  if (!s.ok()) return s;
  s = RewriteChunks(
      kTransitions,
      [&](std::string_view element, std::string* out, bool* changed) {
        Transition t;
        if (Status d = DecodeStoredTransition(element, &t); !d.ok()) return d;
        *changed = t.user_id == erasure.user_id;
        if (!*changed) return Status::Ok();
        t.user_id = erasure.pseudonym;
        t.email.reset();
        if (compact_transitions_) {
          EncodeTransitionCompact(t, out);
        } else {
          EncodeTransition(t, &builder);
          *out = bytes();
        }
        ++report->transitions;
        return Status::Ok();
      },
      &batch);
  if (!s.ok()) return s;
  for (const std::string& key : keys) {
    if (s = FromRocks(batch.Delete(family(kIdempotency), key), "staging an erasure"); !s.ok()) {
      return s;
    }
  }
  report->idempotency_keys = keys.size();

  rocksdb::WriteOptions write;
  write.sync = true;  // acknowledged erasures stay erased, whatever the durability mode
  if (s = FromRocks(db_->Write(write, &batch), "writing an erasure"); !s.ok()) {
    error_ = s;  // as for any failed write: the engine stops taking inputs
    return s;
  }
  // The old bytes are still in table files (and the write-ahead files of their first write
  // and of the contact delete). Writing the memtables out makes those write-ahead files
  // obsolete, so RocksDB deletes them; a forced compaction to the last level rewrites every
  // table file without the overwritten values and the keys' deletion markers.
  rocksdb::FlushOptions flush;
  flush.wait = true;
  if (s = FromRocks(db_->Flush(flush, families_), "flushing an erasure"); !s.ok()) return s;
  rocksdb::CompactRangeOptions compact;
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (rocksdb::ColumnFamilyHandle* handle : families_) {
    if (s = FromRocks(db_->CompactRange(compact, handle, nullptr, nullptr),
                      "compacting after an erasure");
        !s.ok()) {
      return s;
    }
  }
  // A MANIFEST started by the compactions above began with the file list from before them
  // (old table files' boundary keys included); one more change to the files (flushing a
  // count of erasures) starts one that lists only the compacted files.
  std::string count = "0";
  if (rocksdb::Status got = db_->Get(rocksdb::ReadOptions(), family(kMeta), kErasuresKey, &count);
      !got.ok() && !got.IsNotFound()) {
    return FromRocks(got, "reading the erasure count");
  }
  count = std::to_string(std::stoull(count) + 1);
  if (s = FromRocks(db_->Put(write, family(kMeta), kErasuresKey, count), "counting an erasure");
      !s.ok()) {
    return s;
  }
  return FromRocks(db_->Flush(flush, family(kMeta)), "flushing after an erasure");
}

Status RocksLog::Checkpoint(const std::string& dir) {
  if (options_.read_only) return Status::FailedPrecondition("", "the log is open read-only");
  // A write in flight is not a commit yet: the checkpoint takes what is written, so finish it.
  if (Status s = FinishCommit(); !s.ok()) return s;
  rocksdb::Checkpoint* raw = nullptr;
  if (Status s = FromRocks(rocksdb::Checkpoint::Create(db_.get(), &raw), "checkpoint"); !s.ok()) {
    return s;
  }
  const std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  return FromRocks(checkpoint->CreateCheckpoint(dir, kCheckpointWalCopyBytesMax),
                   "writing a checkpoint of the log to " + dir);
}

uint64_t RocksLog::ApproximateBytes() const {
  uint64_t bytes = 0;
  db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kTotalSstFilesSize, &bytes);
  rocksdb::VectorLogPtr wal_files;
  // Not supported on a read-only open; the SST total is then the whole answer.
  if (db_->GetSortedWalFiles(wal_files).ok()) {
    for (const std::unique_ptr<rocksdb::LogFile>& wal : wal_files) bytes += wal->SizeFileBytes();
  }
  return bytes;
}

uint64_t RocksLog::MemoryBytes() const {
  uint64_t total = 0;
  for (const std::string& property : {rocksdb::DB::Properties::kCurSizeAllMemTables,
                                      rocksdb::DB::Properties::kEstimateTableReadersMem,
                                      rocksdb::DB::Properties::kBlockCacheUsage}) {
    uint64_t bytes = 0;
    if (db_->GetAggregatedIntProperty(property, &bytes)) total += bytes;
  }
  return total;
}

Status RocksLog::Flush() {
  if (options_.read_only) return Status::Ok();
  if (Status s = FinishCommit(); !s.ok()) return s;
  if (Status s = FromRocks(db_->FlushWAL(/*sync=*/true), "syncing the log"); !s.ok()) return s;
  // Also write the memtables out: the next open (a restart, `bucketctl replay`) then reads
  // table files instead of re-inserting the whole WAL into a memtable first, which cost
  // ~8% of a full replay when measured. Durability does not depend on it.
  rocksdb::FlushOptions options;
  options.wait = true;
  return FromRocks(db_->Flush(options, families_), "flushing the log's memtables");
}

}  // namespace

Status Log::Open(const LogOptions& options, std::unique_ptr<Log>* out) {
  const std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = FamilyDescriptors();
  std::vector<rocksdb::ColumnFamilyHandle*> families;
  rocksdb::DB* db = nullptr;
  const rocksdb::DBOptions db_options = MakeDbOptions(options);
  // Flushes and compactions run at a lower CPU priority than the engine's threads: on a
  // small machine they would otherwise take turns with the fold, the one thread that
  // bounds ingest. They still get every idle cycle, and writes stall (slowing ingest to
  // their pace) if they ever fall behind, so they cannot be starved for long. The pools
  // belong to the process-wide default Env, so this holds for every log in the process.
  if (!options.read_only) {
    db_options.env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::HIGH);
    db_options.env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW);
  }
  rocksdb::Status s =
      options.read_only
          ? rocksdb::DB::OpenForReadOnly(db_options, options.path, descriptors, &families, &db)
          : rocksdb::DB::Open(db_options, options.path, descriptors, &families, &db);
  if (s.IsCorruption() && !options.salvage) {
    return Status::Corruption(
        "the log at " + options.path + " is damaged before its end (" + s.ToString() +
        "); the records after the damage were acknowledged, so it is not opened. "
        "`bucketctl salvage` shows what is readable; `bucketctl salvage --truncate` keeps the "
        "records before the damage and drops the rest");
  }
  if (!s.ok()) return FromRocks(s, "opening the log at " + options.path);
  auto log = std::make_unique<RocksLog>(options, db, std::move(families));
  if (Status recovered = log->Recover(); !recovered.ok()) return recovered;
  *out = std::move(log);
  return Status::Ok();
}

}  // namespace bucketd
