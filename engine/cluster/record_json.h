#pragma once
// The body of one message on a partition subject: a Record as JSON (docs/cluster.md, "The
// record on the stream"). JSON because producers in any language publish it directly; an
// event is exactly what `POST /v1/events` takes for one event, so a direct producer needs
// nothing more. The record's seq is not in the body: it is the message's stream sequence.
#include <optional>
#include <string>
#include <string_view>

#include "bucketd/engine.h"
#include "bucketd/status.h"
#include "engine/base/record.h"

namespace bucketd::cluster {

// Every field of `record` but seq, with "at" (the processing instant).
std::string EncodeRecord(const Record& record);

// Fills every field of `*out` but seq. `stored_at_ms` is the instant JetStream stored the
// message at: the record's instant when the body has no "at" (a direct producer's event). An
// event's occurredAt defaults to the instant and is clamped to it, as Engine::Ingest does.
// InvalidArgument (naming the field) for a body that is not a record, or an event that
// breaks a rule of SPEC §1-2 that does not depend on the state (input_rules.h); what depends on
// the state (a deleted contact, an unknown bucket) is left to the fold.
Status DecodeRecord(std::string_view json, TimeMs stored_at_ms, Record* out);

// The record a routing node publishes for an event it accepted at instant `at`: occurredAt
// defaults to `at` and is clamped to it, as Engine::Ingest does.
// REQUIRES: ValidateEvent(event) is OK.
Record EventRecord(const EventInput& event, TimeMs at);

// The record a routing node publishes to `user_id`'s partition for a contact delete or a
// manual member add / remove (kContactDelete, kMemberAdd, kMemberRemove; `bucket_id` for the
// latter two). InvalidArgument naming the field for an id breaking SPEC §1.
Status UserRecord(RecordKind kind, std::string_view user_id, std::string_view bucket_id, TimeMs at,
                  Record* out);

// Definition changes and clock moves: the records fanned out to every partition, in the
// cluster's control-log order (control_log.h).
inline bool IsControl(RecordKind kind) {
  return kind == RecordKind::kBucketDefine || kind == RecordKind::kBucketEnable ||
         kind == RecordKind::kBucketDisable || kind == RecordKind::kBucketDelete ||
         kind == RecordKind::kClockAdvance;
}

// The record a routing node fans out to move the cluster's manual clock to `now` (POST
// /v1/clock). InvalidArgument naming `now` when it is out of range, as Engine::AdvanceClock.
Status ClockRecord(TimeMs now, Record* out);

// The record a routing node fans out for a bucket definition (POST /v1/buckets, PUT
// /v1/buckets/{id} with `path_id`): parsed with every refusal of SPEC §3 (errors name the
// field), the id checked as a new one, the definition in canonical JSON as the log stores it.
Status DefinitionRecord(std::string_view json, std::optional<std::string_view> path_id, TimeMs at,
                        Record* out);

}  // namespace bucketd::cluster
