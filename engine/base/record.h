#pragma once
// The decoded form of one log record. The on-disk layout (log_record.fbs) is known only
// to log/; everything else sees these plain structs.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/status.h"
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
  // Webhook subscriptions (SPEC §10): inputs like any other, so a replay rebuilds every
  // subscription and its cursor. They emit no transitions.
  kSubscriptionCreate,
  kSubscriptionDelete,
  kSubscriptionAdvance,  // the delivery worker's "delivered through seq N"
};

inline bool IsSubscriptionRecord(RecordKind kind) {
  return kind == RecordKind::kSubscriptionCreate || kind == RecordKind::kSubscriptionDelete ||
         kind == RecordKind::kSubscriptionAdvance;
}

struct Record;
// Whether a record needs log format version 4 (log_format.md): an event with its own
// properties, or a definition using a criteria construct of SPEC §3b. The canonical
// definition JSON (ToCanonicalJson) writes these keys and values only for §3b legs, and
// never unescaped inside a string, so a substring names them exactly.
bool RecordNeedsCriteriaFormat(const Record& record);

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
  // Read them through patch() and event_patch(), which see borrowed ones too.
  std::vector<PropertyPatch> properties;        // the contact patch (contactProperties)
  std::vector<PropertyPatch> event_properties;  // the event's own (SPEC §3b)
  // The engine's ingest points these at the input's own vectors instead of copying them
  // into the two above: the copy (a malloc per long string value, an element built per
  // property) was a fifth of what the SPEC §3b mix's properties cost on ingest
  // (bench/README.md). Only while the engine stages one input: a record that outlives the
  // call owns its vectors. Equality ignores them (a borrowing record is never compared).
  struct Borrowed {
    const std::vector<PropertyPatch>* properties = nullptr;
    const std::vector<PropertyPatch>* event_properties = nullptr;
    friend bool operator==(const Borrowed&, const Borrowed&) { return true; }
  };
  Borrowed borrowed;
  std::optional<std::string> idempotency_key;
  // kBucket*, kMember*
  std::string bucket_id;
  // kBucketDefine
  std::string definition_json;
  // kSubscription*: the subscription. kSubscriptionCreate also: url, secret, kinds (empty:
  // every kind), bucket_id (empty: every bucket) and the starting cursor in through_seq.
  // kSubscriptionAdvance: the new cursor in through_seq.
  std::string subscription_id;
  std::string url;
  std::string secret;
  std::vector<TransitionKind> kinds;
  uint64_t through_seq = 0;
  // Cluster mode only (never in a single node's log): a control record's place in the
  // cluster's control log, the same in every partition's copy, so a partition folds each
  // control record once and in that order (docs/cluster.md, "Control records"). 0: none.
  uint64_t control_seq = 0;

  const std::vector<PropertyPatch>& patch() const {
    return borrowed.properties ? *borrowed.properties : properties;
  }
  const std::vector<PropertyPatch>& event_patch() const {
    return borrowed.event_properties ? *borrowed.event_properties : event_properties;
  }

  friend bool operator==(const Record&, const Record&) = default;
};

inline bool RecordNeedsCriteriaFormat(const Record& record) {
  if (record.kind == RecordKind::kEvent) return !record.event_patch().empty();
  if (record.kind != RecordKind::kBucketDefine) return false;
  static constexpr std::string_view kMarkers[] = {"\"where\":",
                                                  "\"steps\":",
                                                  "\"bucketId\":",
                                                  "\"operator\":\"before\"",
                                                  "\"operator\":\"after\"",
                                                  "\"check\":\"sum\"",
                                                  "\"check\":\"avg\"",
                                                  "\"check\":\"min\"",
                                                  "\"check\":\"max\"",
                                                  "\"check\":\"distinct\"",
                                                  "\"check\":\"first_seen\""};
  for (std::string_view marker : kMarkers) {
    if (record.definition_json.find(marker) != std::string::npos) return true;
  }
  return false;
}

// Records in log order, a batch at a time: what replay reads (log/read_ahead.h's
// ReadAheadReader is one), without knowing the log.
class RecordBatchReader {
 public:
  virtual ~RecordBatchReader() = default;
  // Replaces `*batch` with the next records, never empty; false at the end or on error.
  virtual bool NextBatch(std::vector<Record>* batch) = 0;
  // Ok until NextBatch has returned false; then why it did.
  virtual Status status() const = 0;
};

}  // namespace bucketd
