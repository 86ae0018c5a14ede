#include "engine/replay/parallel_replay.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/fold/fold_lookahead.h"
#include "engine/replay/shard_merge.h"

namespace bucketd {
namespace {

// Records about one user go to that user's shard; the others to every shard.
bool UserScoped(RecordKind kind) {
  switch (kind) {
    case RecordKind::kEvent:
    case RecordKind::kContactDelete:
    case RecordKind::kMemberAdd:
    case RecordKind::kMemberRemove:
      return true;
    default:
      return false;
  }
}

// A batch from the reader, shared by the shards: each folds the records it was given.
struct SharedBatch {
  std::vector<Record> records;
  std::vector<std::vector<uint32_t>> picks;  // per shard: indices into records, ascending
  size_t pending = 0;                        // shards still folding it (under the mutex)
};

class ShardedReplay {
 public:
  ShardedReplay(const ParallelReplayOptions& options, const Fold& target) : options_(options) {
    for (uint32_t s = 0; s < options.shards; ++s) {
      shards_.push_back(std::make_unique<ReplayShard>());
      shards_.back()->fold.SetHistorySource(target.history_source());
    }
    queues_.resize(options.shards);
    statuses_.resize(options.shards);
    for (size_t i = 0; i < kBatchesInFlight; ++i) {
      batches_.push_back(std::make_unique<SharedBatch>());
      batches_.back()->picks.resize(options.shards);
      free_.push_back(batches_.back().get());
    }
  }

  Status Run(RecordBatchReader* reader, Fold* fold, uint64_t* replayed) {
    for (uint32_t s = 0; s < options_.shards; ++s) threads_.emplace_back([this, s] { Loop(s); });
    TimeMs now = fold->state().now;
    uint64_t last_seq = 0;
    uint64_t count = 0;
    bool reader_ended = false;
    bool until_reached = false;
    while (!until_reached) {
      SharedBatch* batch = TakeFree();
      if (batch == nullptr) break;  // a shard failed
      if (!reader->NextBatch(&batch->records)) {
        Release(batch);
        reader_ended = true;
        break;
      }
      for (auto& picks : batch->picks) picks.clear();
      for (uint32_t i = 0; i < batch->records.size(); ++i) {
        Record& r = batch->records[i];
        if (r.at > options_.until) {
          until_reached = true;
          break;
        }
        // The fold never lets time go back, whatever a record says; a shard does not see
        // every record, so each record's instant is settled here, where all of them pass.
        r.at = std::max(r.at, now);
        now = r.at;
        if (UserScoped(r.kind)) {
          batch->picks[ShardOf(r.user_id)].push_back(i);
        } else {
          for (auto& picks : batch->picks) picks.push_back(i);
        }
        last_seq = r.seq;
        ++count;
      }
      Publish(batch);
    }
    StopAndJoin();
    for (const Status& s : statuses_) {
      if (!s.ok()) return s;
    }
    if (reader_ended && !reader->status().ok()) return reader->status();
    if (Status s = MergeShards(&shards_, last_seq, now, fold); !s.ok()) return s;
    *replayed = count;
    return Status::Ok();
  }

 private:
  static constexpr size_t kBatchesInFlight = 4;

  uint32_t ShardOf(std::string_view user_id) const {
    // Not the user maps' hash: each shard's map would then see keys of one residue only.
    const uint64_t h = std::hash<std::string_view>{}(user_id);
    return static_cast<uint32_t>((static_cast<unsigned __int128>(h) * options_.shards) >> 64);
  }

  SharedBatch* TakeFree() {
    std::unique_lock lock(mutex_);
    freed_.wait(lock, [&] { return !free_.empty() || failed_; });
    if (failed_) return nullptr;
    SharedBatch* batch = free_.back();
    free_.pop_back();
    return batch;
  }

  void Release(SharedBatch* batch) {
    std::lock_guard lock(mutex_);
    free_.push_back(batch);
  }

  void Publish(SharedBatch* batch) {
    {
      std::lock_guard lock(mutex_);
      batch->pending = shards_.size();
      for (auto& queue : queues_) queue.push_back(batch);
    }
    work_.notify_all();
  }

  void StopAndJoin() {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    work_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // One shard's thread: folds its picks of each batch, in order, until closing.
  void Loop(uint32_t s) {
    for (;;) {
      SharedBatch* batch = nullptr;
      bool skip = false;
      {
        std::unique_lock lock(mutex_);
        work_.wait(lock, [&] { return !queues_[s].empty() || closing_; });
        if (queues_[s].empty()) return;
        batch = queues_[s].front();
        queues_[s].pop_front();
        skip = failed_;
      }
      const bool ok = skip || FoldPicks(s, *batch);
      std::lock_guard lock(mutex_);
      if (!ok) failed_ = true;
      if (--batch->pending == 0 || failed_) {
        if (batch->pending == 0) free_.push_back(batch);
        freed_.notify_one();
      }
    }
  }

  bool FoldPicks(uint32_t s, const SharedBatch& batch) {
    ReplayShard& shard = *shards_[s];
    const std::vector<uint32_t>& picks = batch.picks[s];
    Fold::Lookahead lookahead(shard.fold);
    for (size_t i = 0; i < picks.size(); ++i) {
      lookahead.AdvanceOverRecords(
          i, picks.size(), [&](size_t j) -> const Record& { return batch.records[picks[j]]; });
      const Record& r = batch.records[picks[i]];
      if (r.seq != shard.fold.state().applied_seq + 1) shard.fold.SkipTo(r.seq);
      if (Status st = shard.fold.Apply(r, nullptr, lookahead.user(i, r.user_id)); !st.ok()) {
        statuses_[s] = Status::Corruption("log record " + std::to_string(r.seq) +
                                          " does not fold: " + st.ToString());
        return false;
      }
      shard.NoteFirstAppearances(r.seq);
    }
    return true;
  }

  const ParallelReplayOptions options_;
  std::vector<std::unique_ptr<ReplayShard>> shards_;
  std::vector<Status> statuses_;  // by shard; each written by its own thread only
  std::vector<std::unique_ptr<SharedBatch>> batches_;
  std::vector<std::thread> threads_;

  std::mutex mutex_;
  std::condition_variable work_;   // shards wait for a batch (or closing)
  std::condition_variable freed_;  // the router waits for a free batch (or a failure)
  // Guarded by mutex_:
  std::vector<std::deque<SharedBatch*>> queues_;  // by shard, oldest first
  std::vector<SharedBatch*> free_;
  bool closing_ = false;
  bool failed_ = false;
};

}  // namespace

Status ReplayParallel(RecordBatchReader* reader, const ParallelReplayOptions& options, Fold* fold,
                      uint64_t* replayed) {
  ShardedReplay replay(options, *fold);
  return replay.Run(reader, fold, replayed);
}

}  // namespace bucketd
