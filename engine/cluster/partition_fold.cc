#include "engine/cluster/partition_fold.h"

#include <algorithm>
#include <chrono>
#include <span>
#include <thread>
#include <utility>

#include "engine/base/check.h"
#include "engine/cluster/fixed64.h"
#include "engine/state/snapshot_codec.h"

namespace bucketd::cluster {

PartitionFold::PartitionFold(PartitionStream* stream, uint32_t partition)
    : stream_(stream), partition_(partition), recent_ids_(stream->idempotency_window_ms()) {
  BUCKETD_CHECK(partition < stream->partitions());
  fold_.SetHistorySource([this](uint64_t before_seq, const Fold::RecordsVisitor& visit) {
    return ReadHistory(before_seq, visit);
  });
}

namespace {
constexpr size_t kAnchorBytes = 16;  // seq, fingerprint
}  // namespace

uint64_t PartitionFold::replica_mismatches() const {
  return replica_mismatches_before_ + (tail_ != nullptr ? tail_->replica_mismatches() : 0);
}

Status PartitionFold::EncodeSnapshot(std::string* payload, uint64_t* state_bytes) const {
  flatbuffers::DetachedBuffer buffer;
  if (Status s = bucketd::EncodeSnapshot(fold_.state(), &buffer); !s.ok()) return s;
  payload->assign(reinterpret_cast<const char*>(buffer.data()), buffer.size());
  *state_bytes = payload->size();
  PutFixed64(anchor_.seq, payload);
  PutFixed64(anchor_.fingerprint, payload);
  recent_ids_.Encode(payload);
  return Status::Ok();
}

Status PartitionFold::RestoreSnapshot(std::string_view payload, uint64_t state_bytes,
                                      uint64_t input_seq, uint64_t control_seq) {
  if (next_seq_ != 1) return Status::FailedPrecondition("", "the partition was folded already");
  if (state_bytes > payload.size()) {
    return Status::Corruption("snapshot state of " + std::to_string(state_bytes) +
                              " bytes in a payload of " + std::to_string(payload.size()));
  }
  const std::string_view extras = payload.substr(state_bytes);
  StreamPoint anchor;
  if (!extras.empty()) {
    if (extras.size() < kAnchorBytes) return Status::Corruption("snapshot extras cut short");
    anchor = StreamPoint{GetFixed64(extras), GetFixed64(extras.substr(8))};
    if (anchor.seq > input_seq) {
      return Status::Corruption("snapshot's last message read is past its position");
    }
    if (anchor.seq != 0) {
      bool holds = false;
      if (Status s = stream_->LeaderHolds(anchor, &holds); !s.ok()) return s;
      if (!holds) {
        return Status::Corruption(
            "the stream's leader does not hold the snapshot's last message "
            "read (sequence " +
            std::to_string(anchor.seq) + ")");
      }
    }
  }
  RecentIds ids(stream_->idempotency_window_ms());
  if (extras.size() > kAnchorBytes) {
    if (Status s = ids.Decode(extras.substr(kAnchorBytes)); !s.ok()) return s;
  }
  State state;
  if (Status s =
          DecodeSnapshot(reinterpret_cast<const uint8_t*>(payload.data()), state_bytes, &state, 1);
      !s.ok()) {
    return s;
  }
  // The state's last record is at or before the position (the records after it up to the
  // position were other partitions' or not records).
  if (state.applied_seq > input_seq) {
    return Status::Corruption("snapshot state at record " + std::to_string(state.applied_seq) +
                              " is past its position " + std::to_string(input_seq));
  }
  if (Status s = fold_.Restore(std::move(state)); !s.ok()) return s;
  next_seq_ = input_seq + 1;
  anchor_ = anchor;
  recent_ids_ = std::move(ids);
  control_seq_ = control_seq;
  tail_.reset();
  return Status::Ok();
}

Status PartitionFold::CatchUp(std::vector<Transition>* out, bool* caught_up,
                              std::optional<std::chrono::steady_clock::time_point> until) {
  if (caught_up != nullptr) *caught_up = false;
  if (tail_ == nullptr || tail_->next_seq() != next_seq_) {
    if (tail_ != nullptr) replica_mismatches_before_ += tail_->replica_mismatches();
    tail_ = stream_->Tail(partition_, next_seq_, anchor_);
  }
  // Up to the partition's last record when the call began, and at most kCatchUpRecordsMax
  // records: under steady ingest the end moves on, and the caller has leases to renew and
  // other partitions to fold between calls.
  StreamPoint through;
  if (Status s = stream_->LastPoint(partition_, &through); !s.ok()) return s;
  stream_last_seq_ = through.seq;
  for (size_t folded = 0; next_seq_ <= through.seq && folded < kCatchUpRecordsMax;) {
    ReadResult read;
    const Status s = stream_->Read(partition_, tail_.get(), through,
                                   std::min(kReadRecordsMax, kCatchUpRecordsMax - folded), &read);
    undecodable_ += read.undecodable.size();
    records_read_ += read.records.size() + read.undecodable.size();
    folded += read.records.size() + read.undecodable.size();
    for (size_t i = 0; i < read.records.size(); ++i) {
      Apply(std::move(read.records[i]), read.record_ids[i], out);
    }
    const bool stuck = read.next_seq == next_seq_;
    next_seq_ = read.next_seq;  // what was read before an error stays folded
    anchor_ = tail_->anchor();
    if (!s.ok()) return s;
    if (stuck) break;  // the subject's last message is not a record: nothing more to read
    if (until && std::chrono::steady_clock::now() >= *until) break;
  }
  if (caught_up != nullptr) *caught_up = next_seq_ > through.seq;
  return Status::Ok();
}

void PartitionFold::Apply(Record r, uint64_t id, std::vector<Transition>* out) {
  // A second copy of a record applied within the idempotency window (a producer's retry
  // after JetStream's duplicate window): skipped, as every reader of the stream skips it.
  // Asked first, for every record: the ids' clock moves with each (ReadHistory does alike).
  const bool duplicate = recent_ids_.SeenElseRemember(id, r.at);
  if (r.control_seq != 0) {
    // Control records reach every partition in the control log's order (control_log.h);
    // a copy of one folded already (a fan-out completed again after the duplicate window)
    // is skipped, as every reader of the stream skips it.
    if (r.control_seq <= control_seq_) {
      ++control_copies_skipped_;
      return;
    }
    control_seq_ = r.control_seq;
  }
  if (duplicate) {
    ++duplicates_skipped_;
    return;
  }
  if (r.seq > fold_.state().applied_seq + 1) fold_.SkipTo(r.seq);
  // A direct producer's instant (JetStream's stored time) may step back when the stream's
  // leader moves to a server whose clock is behind, and nodes' clocks differ: the fold's
  // time never goes back, and this clamp depends only on the stream, so replays agree.
  r.at = std::max(r.at, fold_.state().now);
  if (!fold_.Apply(r, out).ok()) ++refused_;
}

// The fold's history re-read: the partition's records before `before_seq`, in runs of one
// read each, without the ones the live fold skipped by id (the same RecentIds over the same
// records from the start skips the same ones). The fold is midway through a definition when
// it asks, and a failure there stops the process (Fold::Apply checks it: memory would no
// longer be the fold of the stream). A NATS fault is routine in a cluster, so a run that
// fails is read again, with backoff, for up to kHistoryPatience before that happens.
Status PartitionFold::ReadHistory(uint64_t before_seq, const Fold::RecordsVisitor& visit) {
  const auto give_up = std::chrono::steady_clock::now() + kHistoryPatience;
  std::chrono::milliseconds backoff(50);
  RecentIds ids(stream_->idempotency_window_ms());
  std::vector<Record> run;
  for (uint64_t from = 1; from < before_seq;) {
    ReadResult read;
    if (Status s = stream_->Read(partition_, from, kReadRecordsMax, &read); !s.ok()) {
      if (std::chrono::steady_clock::now() + backoff > give_up) return s;
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      continue;  // the same run again; nothing of the failed read was visited
    }
    run.clear();
    bool ended = false;
    for (size_t i = 0; i < read.records.size(); ++i) {
      Record& r = read.records[i];
      if (r.seq >= before_seq) {
        ended = true;
        break;
      }
      if (!ids.SeenElseRemember(read.record_ids[i], r.at)) run.push_back(std::move(r));
    }
    visit(std::span<const Record>(run.data(), run.size()));
    if (ended || read.next_seq == from) break;
    from = read.next_seq;
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
