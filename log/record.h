#pragma once
// The decoded form of one log record. The on-disk layout (log_record.fbs) is known only
// to log/; everything else sees these plain structs.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bucketd/types.h"

namespace bucketd {

enum class RecordKind : uint8_t {
  kEvent,
  kContactDelete,
  kBucketDefine,  // create or replace; `definition_json` is the canonical definition
  kBucketEnable,
  kBucketDisable,
  kBucketDelete,
  kMemberAdd,
  kMemberRemove,
  kClockAdvance,
  kSweep,
};

struct Record {
  uint64_t seq = 0;  // gap-free, starting at 1
  TimeMs at = 0;     // the engine's processing instant
  RecordKind kind = RecordKind::kEvent;

  // kEvent, kContactDelete, kMemberAdd, kMemberRemove
  std::string user_id;
  // kEvent
  std::string event_name;
  TimeMs occurred_at = 0;  // already defaulted and clamped to `at`
  std::optional<std::string> email;
  std::vector<PropertyPatch> properties;
  std::optional<std::string> idempotency_key;
  // kBucket*, kMember*
  std::string bucket_id;
  // kBucketDefine
  std::string definition_json;

  friend bool operator==(const Record&, const Record&) = default;
};

// Replay folds records that the read-ahead thread decoded on another core, so each one's
// first read waits on that core's cache. Fetching the record itself this many records
// before it is folded (ahead of Fold::Lookahead's 16, which reads its user id) hides that.
inline constexpr size_t kRecordPrefetchDistance = 24;
inline void PrefetchRecord(const Record& r) {
  for (size_t offset = 0; offset < sizeof(Record); offset += 64)
    __builtin_prefetch(reinterpret_cast<const char*>(&r) + offset);
}

}  // namespace bucketd
