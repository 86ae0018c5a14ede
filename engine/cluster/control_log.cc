#include "engine/cluster/control_log.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "engine/base/check.h"
#include "engine/cluster/node.h"
#include "engine/cluster/record_json.h"

namespace bucketd::cluster {
namespace {

// Fan-out publishes JetStream did not acknowledge are sent again this many rounds.
constexpr int kFanOutAttempts = 3;
// Appends that lose the race to another writer are tried again this many times.
constexpr int kAppendAttempts = 20;
// How often a writer waiting for the record before its own looks at the completion mark.
constexpr TimeMs kCompletionPollMs = 20;

}  // namespace

ControlLog::ControlLog(PartitionStream* stream, TimeMs abandoned_after_ms)
    : stream_(stream), abandoned_after_ms_(abandoned_after_ms) {}

Status ControlLog::FanOut(uint64_t seq, Record record) {
  record.control_seq = seq;
  ++fan_outs_;
  std::vector<BatchPublish> batch(stream_->partitions());
  for (uint32_t p = 0; p < stream_->partitions(); ++p) {
    batch[p] = {p, &record, "ctl-" + std::to_string(seq) + "-" + std::to_string(p)};
  }
  std::vector<BatchAck> acks;
  if (Status s = stream_->PublishBatch(batch, kFanOutAttempts, &acks); !s.ok()) return s;
  fanned_out_ = std::max(fanned_out_, seq);
  // Best effort: without the mark the next writer (or a node's round, once the record is
  // abandoned) publishes the copies again, which stores nothing new.
  (void)stream_->MarkControlDone(seq);
  return Status::Ok();
}

Status ControlLog::Complete(const Last& last, bool wait) {
  const auto started = std::chrono::steady_clock::now();
  for (;;) {
    uint64_t done = 0;
    if (Status s = stream_->LastControlDone(&done); !s.ok()) return s;
    if (done >= last.seq) {
      fanned_out_ = std::max(fanned_out_, last.seq);
      return Status::Ok();
    }
    // This log's own append, whose fan-out failed: nobody else is at it.
    if (last.seq == appended_) break;
    // Its age by this node's clock against the stream leader's: a skew only moves the moment
    // others step in (a second publish of copies already stored is deduplicated).
    const TimeMs waited = static_cast<TimeMs>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - started)
                                                  .count());
    const TimeMs age = std::max(WallClockNow() - last.stored_at_ms, waited);
    if (age >= abandoned_after_ms_) break;
    if (!wait) return Status::Ok();  // its writer may still be at it; the next round looks again
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(kCompletionPollMs, abandoned_after_ms_ - age)));
  }
  return FanOut(last.seq, last.record);
}

Status ControlLog::ReadThrough(uint64_t through_seq) {
  while (read_through_ < through_seq) {
    if (tail_ == nullptr || tail_->next_seq() != read_through_ + 1) {
      tail_ = stream_->ControlTail(read_through_ + 1);
    }
    ReadResult read;
    const Status s = stream_->ReadControl(tail_.get(), through_seq, &read);
    for (const Record& r : read.records) {
      if (r.kind == RecordKind::kBucketDefine) view_.buckets.insert(r.bucket_id);
      if (r.kind == RecordKind::kBucketDelete) view_.buckets.erase(r.bucket_id);
    }
    const bool moved = read.next_seq > read_through_ + 1;
    read_through_ = std::max(read_through_, read.next_seq - 1);  // what was read stays read
    if (!s.ok()) return s;
    if (!moved) break;  // nothing more on the subject up to there
  }
  return Status::Ok();
}

Status ControlLog::Append(Record record, const std::function<Status(const View&)>& check,
                          uint64_t* control_seq) {
  BUCKETD_CHECK(IsControl(record.kind));
  for (int attempt = 0; attempt < kAppendAttempts; ++attempt) {
    Last last;
    if (Status s = stream_->LastControl(&last.seq, &last.record, &last.stored_at_ms, &last.found);
        !s.ok()) {
      return s;
    }
    // The record before this one reaches every partition first: then no partition can see
    // this one before it, whoever wrote it and whether or not they are still alive.
    if (last.found && last.seq > fanned_out_) {
      if (Status s = Complete(last, /*wait=*/true); !s.ok()) return s;
    }
    if (Status s = ReadThrough(last.seq); !s.ok()) return s;
    if (check) {
      if (Status s = check(view_); !s.ok()) return s;
    }
    uint64_t seq = 0;
    Status s = stream_->AppendControl(record, last.found ? last.seq : 0, &seq);
    if (s.code() == StatusCode::kFailedPrecondition) continue;  // another writer was first
    if (!s.ok()) return s;
    appended_ = seq;
    *control_seq = seq;
    return FanOut(seq, std::move(record));
  }
  return Status::IoError("control log: other nodes kept appending first; try again");
}

Status ControlLog::CompleteLast() {
  Last last;
  if (Status s = stream_->LastControl(&last.seq, &last.record, &last.stored_at_ms, &last.found);
      !s.ok()) {
    return s;
  }
  if (!last.found || last.seq <= fanned_out_) return Status::Ok();
  return Complete(last, /*wait=*/false);
}

}  // namespace bucketd::cluster
