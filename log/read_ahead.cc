#include "log/read_ahead.h"

#include <algorithm>
#include <utility>

namespace bucketd {

ReadAheadReader::ReadAheadReader(std::unique_ptr<RecordReader> inner, size_t batch_size,
                                 size_t queue_depth)
    : inner_(std::move(inner)),
      batch_size_(std::max<size_t>(batch_size, 1)),
      queue_depth_(std::max<size_t>(queue_depth, 1)),
      producer_([this] { Produce(); }) {}

ReadAheadReader::~ReadAheadReader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_relaxed);
  }
  room_or_stop_.notify_one();
  producer_.join();
}

void ReadAheadReader::Produce() {
  std::vector<Record> batch;
  for (;;) {
    // Decode into the Records already in `batch` (a recycled one): DecodeRecord overwrites
    // every field and reuses the strings' capacity. Grow it only the first time round.
    if (batch.size() > batch_size_) batch.resize(batch_size_);
    size_t filled = 0;
    bool more = true;
    while (filled < batch_size_) {
      if (stop_.load(std::memory_order_relaxed)) return;
      if (filled == batch.size()) batch.emplace_back();
      if (!inner_->Next(&batch[filled])) {
        more = false;
        break;
      }
      ++filled;
    }
    // Shrinks only at the end (or drops a record the failed Next may have half written).
    batch.resize(filled);

    std::unique_lock<std::mutex> lock(mutex_);
    // The bound on memory: wait until the consumer has taken a batch.
    room_or_stop_.wait(lock, [this] {
      return stop_.load(std::memory_order_relaxed) || ready_.size() < queue_depth_;
    });
    if (stop_.load(std::memory_order_relaxed)) return;
    if (filled > 0) ready_.push_back(std::move(batch));
    if (!more) {
      // Published together with the last batch, so the consumer sees the error only after it.
      producer_status_ = inner_->status();
      producer_done_ = true;
    }
    batch.clear();  // moved-from: make it a valid empty vector whatever the library did
    if (more && !spare_.empty()) {
      batch = std::move(spare_.back());
      spare_.pop_back();
    }
    lock.unlock();
    ready_or_done_.notify_one();
    if (!more) return;
  }
}

bool ReadAheadReader::TakeBatch(std::vector<Record>* batch) {
  if (finished_) return false;
  std::unique_lock<std::mutex> lock(mutex_);
  ready_or_done_.wait(lock, [this] { return !ready_.empty() || producer_done_; });
  if (ready_.empty()) {
    finished_ = true;
    status_ = producer_status_;
    return false;
  }
  std::vector<Record> used = std::exchange(*batch, std::move(ready_.front()));
  ready_.pop_front();
  lock.unlock();
  room_or_stop_.notify_one();
  Recycle(&used);
  return true;
}

void ReadAheadReader::Recycle(std::vector<Record>* used) {
  // A vector without Records saves the producer nothing.
  if (used->empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Enough to refill every batch that can be in flight; more would only hold memory (a
    // caller could feed in vectors of its own).
    if (spare_.size() <= queue_depth_) {
      spare_.push_back(std::move(*used));
      used->clear();
      return;
    }
  }
  // Freed outside the lock: destroying a batch of Records is slow.
  std::vector<Record>().swap(*used);
}

bool ReadAheadReader::Next(Record* out) {
  if (next_ == current_.size()) {
    if (!TakeBatch(&current_)) return false;
    next_ = 0;
  }
  // A swap rather than a move: the caller's previous record, with its strings' capacity,
  // goes back into the batch for the producer to decode into again.
  std::swap(*out, current_[next_]);
  ++next_;
  return true;
}

bool ReadAheadReader::NextBatch(std::vector<Record>* batch) {
  if (next_ < current_.size()) {
    // What Next left of the current batch comes first.
    current_.erase(current_.begin(), current_.begin() + static_cast<std::ptrdiff_t>(next_));
    batch->swap(current_);
    Recycle(&current_);
    current_.clear();
    next_ = 0;
    return true;
  }
  return TakeBatch(batch);
}

std::unique_ptr<ReadAheadReader> Log::ReadAheadFrom(uint64_t from_seq) const {
  return std::make_unique<ReadAheadReader>(ReadFrom(from_seq));
}

}  // namespace bucketd
