#pragma once
// Every limit of the engine, in one place (TigerBeetle's "put a limit on everything").
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bucketd {

// Names starting with this are the engine's own (transition names, SPEC §7); inputs may
// not use it for event names (SPEC §1).
inline constexpr std::string_view kReservedEventPrefix = "bucket:";

inline constexpr size_t kUserIdBytesMax = 256;
inline constexpr size_t kBucketIdCharsMax = 128;
inline constexpr size_t kBucketNameBytesMax = 200;
// Descriptions are for humans; a bound keeps a definition (and every log record that
// carries it) small.
inline constexpr size_t kDescriptionBytesMax = 4096;
inline constexpr size_t kPropertyKeyBytesMax = 200;  // a property a criteria leg names
// Each reaction is a due entry per member in the time index; a handful is the real need.
inline constexpr size_t kDwellReactionsMax = 32;
// No duration the engine reasons about is longer than a century (36525 days), and the
// bound keeps every `instant + duration` far from int64 overflow.
inline constexpr int64_t kDurationMsMax = 36525LL * 24 * 60 * 60 * 1000;
// The latest instant the engine's clock takes (9999-12-31T23:59:59.999Z), and with it the
// latest record stamp and event instant: the state keeps such instants in 48 bits
// (engine/state/time48.h).
inline constexpr int64_t kInstantMsMax = 253402300799999;
inline constexpr size_t kEventNameBytesMax = 200;
inline constexpr size_t kCriteriaDepthMax = 16;
inline constexpr size_t kCriteriaLeavesMax = 64;
// An event's own properties (SPEC §3b): a flat object of scalars.
inline constexpr size_t kEventPropertiesMax = 64;
inline constexpr size_t kWhereClausesMax = 16;
inline constexpr size_t kSequenceStepsMin = 2;
inline constexpr size_t kSequenceStepsMax = 5;
// What an aggregate leg retains per user (docs/design.md, "Aggregates"): a windowed sum,
// avg, min or max its newest contributions in the window, distinct its newest values.
// `distinct` thresholds stay below kDistinctValuesMax, so the capped count decides exactly.
inline constexpr size_t kAggregateContributionsMax = 1024;
inline constexpr size_t kDistinctValuesMax = 256;
// The later steps' occurrences a sequence keeps after its latest start (per step).
inline constexpr size_t kSequenceOccurrencesMax = 64;
inline constexpr size_t kMembersPageMax = 1000;
// The userIds a bucket preview shows (POST /v1/buckets/preview).
inline constexpr size_t kPreviewSampleMax = 20;
inline constexpr size_t kTransitionsPageMax = 10000;
inline constexpr size_t kBatchItemsMax = 100000;
inline constexpr size_t kIdempotencyKeyBytesMax = 256;
inline constexpr size_t kMembersPageDefault = 100;
inline constexpr size_t kTransitionsPageDefault = 100;
// A filtered read of the stream looks at no more than this many transitions per call (its
// cursor moves on past them), so a filter that matches rarely costs a bounded call.
inline constexpr size_t kTransitionsScanMax = 100000;
// Steps of one bucket history answer (GET /v1/buckets/{id}/history): a week by the minute.
inline constexpr uint64_t kHistoryStepsMax = 10000;
// Webhook subscriptions (SPEC §10). Each one is a cursor in the state and a delivery loop in
// the server; a few dozen is the real need (one per consuming service).
inline constexpr size_t kSubscriptionsMax = 100;
inline constexpr size_t kSubscriptionUrlBytesMax = 2048;
// A secret shorter than 16 bytes is guessable offline from one signed delivery.
inline constexpr size_t kSubscriptionSecretBytesMin = 16;
inline constexpr size_t kSubscriptionSecretBytesMax = 256;
// Transitions per delivery (one POST): the server's --webhook-batch-max is at most this.
inline constexpr size_t kWebhookBatchMax = 1000;
inline constexpr size_t kWebhookBatchDefault = 100;

// The sidecar's: a request body (whatever its transfer encoding), its request line and
// headers together, and the longest long-poll of GET /v1/transitions.
inline constexpr size_t kRequestBodyBytesMax = size_t{16} << 20;
inline constexpr size_t kRequestHeaderBytesMax = size_t{16} << 10;
inline constexpr int64_t kLongPollMsMax = 30'000;

// "must be 1-256 bytes": refusal messages name the limit from the constant itself.
inline std::string MustBeBetween(size_t min, size_t max, std::string_view unit = "") {
  std::string text = "must be " + std::to_string(min) + "-" + std::to_string(max);
  if (!unit.empty()) {
    text += ' ';
    text += unit;
  }
  return text;
}

}  // namespace bucketd
