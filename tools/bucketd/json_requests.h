#pragma once
// Request bodies -> engine inputs. All JSON parsing goes through simdjson (DOM); errors
// are InvalidArgument statuses naming the field ("occurredAt", "contactProperties.plan").
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/engine.h"

namespace bucketd::server {

// The items of a POST /v1/events body. `events[i]` came from item `indices[i]` of the
// body; items refused here are in `rejected` with their item index, except those that
// carry a string idempotencyKey: a key seen before makes even a malformed event a duplicate
// (docs/design.md), and only the engine knows the keys. Such an item goes to the engine as
// a stand-in `events[i]` holding just the key, which the engine reports as a duplicate or
// refuses (it has no userId); `refusals[i]` is then why the item was refused here, the
// error to answer unless it is a duplicate. `refusals[i]` is OK for an event to apply.
struct ParsedEvents {
  bool single = false;      // the body was one JSON object (not an array, not NDJSON)
  bool over_limit = false;  // more than kBatchItemsMax items: nothing else is filled in
  size_t items = 0;
  std::vector<EventInput> events;
  std::vector<size_t> indices;
  std::vector<Status> refusals;
  std::vector<BatchItemError> rejected;
};

// One object, a JSON array of objects, or (ndjson) one object per non-blank line; an
// NDJSON item's index counts non-blank lines from 0. Fails as a whole (field "body") when
// a JSON body is malformed or is neither an object nor an array; a malformed NDJSON line
// is only that item's refusal.
Status ParseEventsBody(std::string_view body, bool ndjson, ParsedEvents* out);

// POST /v1/clock {"now": T}, T an int of ms or an RFC 3339 string.
Status ParseClockRequest(std::string_view body, TimeMs* now_ms);
// The same on a server whose clock is manual or not: on the wall clock, FailedPrecondition
// naming `now` (the clock cannot be moved there).
Status ParseClockMove(bool manual_clock, std::string_view body, TimeMs* now_ms);
// PATCH /v1/buckets/{id} {"enabled": bool}.
Status ParseEnabledPatch(std::string_view body, bool* enabled);
// POST /v1/buckets/{id}/members {"userId": "..."}.
Status ParseAddMemberRequest(std::string_view body, std::string* user_id);

// POST /v1/subscriptions {"url", "bucket"?, "kinds"?: ["entered"|"left"|"dwell"], "secret"?,
// "after"?}. Unknown fields are refused, naming them; the engine checks the values.
Status ParseSubscriptionRequest(std::string_view body, SubscriptionSpec* spec);

// The "id" of a bucket definition body, or "" when it has none (the engine then refuses it).
std::string DefinitionId(std::string_view json);

// A definitions file for --buckets: one definition object or an array of them. Each is
// returned as minified JSON text for Engine::DefineBucket.
Status ParseDefinitionsFile(std::string_view json, std::vector<std::string>* definitions);

// A time in either input form (SPEC §1): an integer of ms or an RFC 3339 string.
Status ParseTimeText(std::string_view text, TimeMs* out);

}  // namespace bucketd::server
