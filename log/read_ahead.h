#pragma once
// Replay reads and decodes records on a background thread, so the thread that folds them
// only folds. Reading a record (RocksDB iteration + flatbuffers verification and decoding,
// ~0.7 us) is independent of folding it (~4 us), so the two overlap on two cores.
//
// Records travel in batches (std::vector<Record>) through a small bounded queue: one lock
// round trip per batch instead of per record, and a bounded amount of read-ahead memory.
// Consumed batches go back to the reading thread, which decodes into the same Records again,
// so their strings' capacity is reused and steady-state replay allocates (almost) nothing.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bucketd/status.h"
#include "engine/base/record.h"
#include "log/log.h"

namespace bucketd {

// Wraps another RecordReader and runs it on its own thread. Like every RecordReader it has
// one consumer: Next, NextBatch and status are called from one thread (or externally
// serialized); only the inner reader moves to the background thread.
//
// Either Next or NextBatch may be used, and they may be mixed: Next hands out one record at
// a time from the current batch; NextBatch first returns what Next left of the current
// batch, then whole batches. Either way each record is delivered exactly once, in order.
//
// The inner reader (and whatever it reads, e.g. the Log behind Log::ReadFrom) must outlive
// this reader; it is destroyed with it, after the background thread has stopped.
class ReadAheadReader final : public RecordReader, public RecordBatchReader {
 public:
  static constexpr size_t kDefaultBatchSize = 1024;  // records per hand-over
  static constexpr size_t kDefaultQueueDepth = 4;    // full batches waiting, at most

  // Starts reading `inner` at once. At most `queue_depth` full batches wait to be consumed,
  // plus the one being filled, so the reader is never more than about
  // (queue_depth + 1) * batch_size records ahead of the consumer. Zeros count as 1.
  explicit ReadAheadReader(std::unique_ptr<RecordReader> inner,
                           size_t batch_size = kDefaultBatchSize,
                           size_t queue_depth = kDefaultQueueDepth);
  // Stops the background thread and joins it, also when it waits on a full queue, so a
  // consumer may stop reading anywhere (e.g. replay --until). The thread checks for the stop
  // between records: it cannot interrupt one inner Next() call that is in progress.
  ~ReadAheadReader() override;

  ReadAheadReader(const ReadAheadReader&) = delete;
  ReadAheadReader& operator=(const ReadAheadReader&) = delete;

  // Swaps the next record into `out` (the record `out` held goes back for reuse); false at
  // the end or on error, and from then on (see status()).
  bool Next(Record* out) override;
  // Replaces `*batch` with the next batch of records, never empty; the vector `*batch` held
  // goes back to the reading thread for reuse, so passing the same vector each time is
  // cheapest. False at the end or on error (see status()); `*batch` is then left as it was.
  bool NextBatch(std::vector<Record>* batch) override;
  // The inner reader's status, reported only once Next or NextBatch has returned false, that
  // is after every record before an error was delivered. Ok until then.
  Status status() const override { return status_; }

 private:
  void Produce();  // the background thread's body
  // Waits for the next full batch and swaps it into `*batch`, recycling the old contents.
  bool TakeBatch(std::vector<Record>* batch);
  // Hands a consumed vector back to the producer (or frees it if enough are spare).
  void Recycle(std::vector<Record>* used);

  const std::unique_ptr<RecordReader> inner_;  // used by the background thread only
  const size_t batch_size_;
  const size_t queue_depth_;

  std::mutex mutex_;
  std::condition_variable ready_or_done_;  // the consumer waits on it
  std::condition_variable room_or_stop_;   // the producer waits on it
  // Guarded by mutex_:
  std::deque<std::vector<Record>> ready_;   // full batches, oldest first, never empty ones
  std::vector<std::vector<Record>> spare_;  // consumed batches, for the producer to refill
  bool producer_done_ = false;              // no batch will follow those in ready_
  Status producer_status_;                  // the inner reader's status once done
  // Set under mutex_ (so a waiting producer cannot miss it) and read without it between
  // records, so a stop does not wait for a whole batch to be read.
  std::atomic<bool> stop_{false};

  // Consumer thread only:
  std::vector<Record> current_;  // the batch Next hands out from
  size_t next_ = 0;              // index in current_ of the record Next returns next
  bool finished_ = false;        // Next/NextBatch returned false
  Status status_;

  std::thread producer_;  // last: starts once every member above is initialized
};

}  // namespace bucketd
