#pragma once
// Value types shared by the public API, the log and the snapshot.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bucketd {

// Milliseconds since the Unix epoch, UTC. Durations are milliseconds too.
using TimeMs = int64_t;

// A contact property value, or a criteria comparison value. JSON types stay distinct:
// `eq` is type-strict, orderings hold only between numbers, `contains` only for strings.
struct PropertyValue {
  enum class Type : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  double number = 0;
  // The string's contents, or the minified JSON text of an array or object.
  std::string text;

  static PropertyValue Null() { return {}; }
  static PropertyValue Bool(bool b) { return {Type::kBool, b, 0, {}}; }
  static PropertyValue Number(double d) { return {Type::kNumber, false, d, {}}; }
  static PropertyValue String(std::string s) { return {Type::kString, false, 0, std::move(s)}; }

  friend bool operator==(const PropertyValue&, const PropertyValue&) = default;
};

// One key of a contactProperties patch; a kNull value removes the key.
struct PropertyPatch {
  std::string key;
  PropertyValue value;
  friend bool operator==(const PropertyPatch&, const PropertyPatch&) = default;
};

enum class MembershipSource : uint8_t { kEvent, kManual, kReconcile, kBackfill };
enum class LeaveReason : uint8_t { kCriteria, kMaxDwell, kManual };
enum class TransitionKind : uint8_t { kEntered, kLeft, kDwell };

std::string_view ToString(MembershipSource source);
std::string_view ToString(LeaveReason reason);
std::string_view ToString(TransitionKind kind);
// The inverse of ToString: "entered", "left" or "dwell"; false for anything else.
bool ParseTransitionKind(std::string_view name, TransitionKind* kind);

// A snapshot file written (Engine::TakeSnapshot, SnapshotStore).
struct SnapshotInfo {
  std::string path;
  uint64_t log_seq = 0;
  uint64_t bytes = 0;
  int64_t write_micros = 0;
};

// One membership change, as emitted on the output stream (SPEC §7).
struct Transition {
  uint64_t seq = 0;
  TransitionKind kind = TransitionKind::kEntered;
  std::string bucket_id;
  std::string bucket_name;
  std::string user_id;
  std::optional<std::string> email;
  uint32_t entry_count = 0;
  MembershipSource source = MembershipSource::kEvent;  // of the membership
  LeaveReason reason = LeaveReason::kCriteria;         // kLeft only
  std::string dwell_label;                             // kDwell only: "after-<ms>" / "every-<ms>"
  uint32_t dwell_count = 0;                            // kDwell only
  TimeMs at = 0;
  TimeMs detected_at = 0;
  // kLeft: the closed membership's enteredAt, so the stream alone tells how long each
  // membership lasted (bucket history). Absent in transitions logged before it was recorded.
  std::optional<TimeMs> entered_at;

  // "bucket:entered:<id>", "bucket:left:<id>", "bucket:dwell:<id>:<label>".
  std::string Name() const;
  // "bucket:<id>:<user>:entered:<n>", ":left:<n>", ":dwell:<label>:<n>:<k>".
  std::string IdempotencyKey() const;

  friend bool operator==(const Transition&, const Transition&) = default;
};

}  // namespace bucketd
