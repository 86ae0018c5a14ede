#include "engine/core/bucket_history.h"

#include <algorithm>
#include <climits>
#include <string>

#include <absl/container/flat_hash_map.h>

#include "bucketd/limits.h"
#include "bucketd/time_format.h"

namespace bucketd {
namespace {

// The first seq whose transition was detected after `from` (last + 1 if none). `at` is never
// later than `detectedAt`, and detectedAt never decreases along the stream, so every
// membership change after `from` lies at or after it: a binary search of point reads.
Status FirstDetectedAfter(const Log& log, TimeMs from, uint64_t last, uint64_t* first) {
  uint64_t lo = 1;
  uint64_t hi = last + 1;
  std::vector<Transition> one;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (Status s = log.ReadTransitions(mid - 1, 1, &one); !s.ok()) return s;
    if (one.empty()) return Status::Corruption("transition " + std::to_string(mid) + " is missing");
    if (one[0].detected_at > from) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  *first = lo;
  return Status::Ok();
}

uint64_t CountUpTo(const std::vector<TimeMs>& sorted, TimeMs t) {
  return static_cast<uint64_t>(std::upper_bound(sorted.begin(), sorted.end(), t) - sorted.begin());
}

}  // namespace

Status ComputeBucketHistory(const Log& log, const HistoryBase& base, const HistoryQuery& query,
                            std::vector<HistoryStep>* out) {
  out->clear();
  if (query.step_ms <= 0) return Status::InvalidArgument("step", "must be > 0");
  if (query.from_ms >= query.to_ms) return Status::InvalidArgument("to", "must be after from");
  if (query.to_ms > base.now) {
    return Status::InvalidArgument("to", "must not be after now (" + FormatRfc3339(base.now) + ")");
  }
  const uint64_t span = static_cast<uint64_t>(query.to_ms) - static_cast<uint64_t>(query.from_ms);
  const uint64_t steps = span / static_cast<uint64_t>(query.step_ms) +
                         (span % static_cast<uint64_t>(query.step_ms) != 0 ? 1 : 0);
  if (steps > kHistoryStepsMax) {
    return Status::InvalidArgument("step", "gives " + std::to_string(steps) + " steps; at most " +
                                               std::to_string(kHistoryStepsMax) +
                                               " fit one answer (a longer step or a "
                                               "shorter span)");
  }

  // Every membership that overlaps (from, now]: the active ones (from the state), and those
  // closed after `from` (each by a `left`, which carries its enteredAt).
  std::vector<TimeMs> entered = base.active_entered_at;
  std::vector<TimeMs> left;
  uint64_t first = 0;
  if (Status s = FirstDetectedAfter(log, query.from_ms, base.transition_seq, &first); !s.ok()) {
    return s;
  }
  // A `left` logged before enteredAt was recorded pairs with its `entered` (same user and
  // entryCount) when that is in the scan; when it is not, the membership began before `from`
  // or silently (documented). Transitions with enteredAt come after all those without, so
  // the pairing stops at the first one.
  bool pairing = true;
  absl::flat_hash_map<std::string, TimeMs> entered_by_key;
  const auto key = [](const Transition& t) {
    return t.user_id + '\0' + std::to_string(t.entry_count);
  };
  Status scanned = log.ScanTransitions(first - 1, [&](Transition&& t) {
    if (t.seq > base.transition_seq) return false;
    if (t.bucket_id != base.bucket_id) return true;
    if (t.kind == TransitionKind::kEntered && pairing) entered_by_key[key(t)] = t.at;
    if (t.kind != TransitionKind::kLeft) return true;
    if (t.entered_at && pairing) {
      pairing = false;
      entered_by_key.clear();
    }
    if (t.at <= query.from_ms) return true;  // closed before the history starts
    TimeMs began = INT64_MIN;                // before `from`, as far as the stream shows
    if (t.entered_at) {
      began = *t.entered_at;
    } else if (auto it = entered_by_key.find(key(t)); it != entered_by_key.end()) {
      began = it->second;
    }
    entered.push_back(began);
    left.push_back(t.at);
    return true;
  });
  if (!scanned.ok()) return scanned;
  std::sort(entered.begin(), entered.end());
  std::sort(left.begin(), left.end());

  // Members at t: memberships begun at or before t minus those ended at or before t (a
  // membership ends no earlier than it begins).
  out->reserve(steps);
  TimeMs start = query.from_ms;
  uint64_t entered_before = CountUpTo(entered, start);
  uint64_t left_before = CountUpTo(left, start);
  for (uint64_t i = 0; i < steps; ++i) {
    const TimeMs end = std::min(query.to_ms, start + query.step_ms);
    const uint64_t entered_by_end = CountUpTo(entered, end);
    const uint64_t left_by_end = CountUpTo(left, end);
    out->push_back(HistoryStep{start, end, entered_by_end - left_by_end,
                               entered_by_end - entered_before, left_by_end - left_before});
    entered_before = entered_by_end;
    left_before = left_by_end;
    start = end;
  }
  return Status::Ok();
}

}  // namespace bucketd
