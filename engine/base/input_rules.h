#pragma once
// The rules every input's ids and names follow (SPEC §1), in one place: the fold applies
// them to every record, the public ValidateEvent to an event before it is logged, and the
// definition parser to the event names a criteria leg names.
#include <span>
#include <string_view>

#include "bucketd/status.h"
#include "bucketd/types.h"

namespace bucketd {

// 1-kUserIdBytesMax bytes of UTF-8.
Status ValidateUserId(std::string_view user_id, std::string_view field = "userId");
// 1-kEventNameBytesMax bytes, not starting with kReservedEventPrefix.
Status ValidateEventName(std::string_view name, std::string_view field = "event");
// At or after the Unix epoch.
Status ValidateOccurredAt(TimeMs occurred_at, std::string_view field = "occurredAt");
// Every key non-empty.
Status ValidateContactProperties(std::span<const PropertyPatch> patch,
                                 std::string_view field = "contactProperties");
// An event's own properties: at most kEventPropertiesMax keys, each non-empty and at most
// kPropertyKeyBytesMax bytes, each value a string, number or boolean.
Status ValidateEventProperties(std::span<const PropertyPatch> properties,
                               std::string_view field = "properties");
// A manual clock's instant: from 1970 to the end of year 9999 (kInstantMsMax), far enough
// from int64's end that instant + duration (capped at 100 years) cannot overflow in the fold,
// and within the 48 bits the state keeps instants in (engine/state/time48.h).
Status ValidateClockInstant(TimeMs now_ms, std::string_view field = "now");
// 1-kBucketIdCharsMax characters of [A-Za-z0-9._-].
Status ValidateBucketId(std::string_view id, std::string_view field = "id");
// 1-kIdempotencyKeyBytesMax bytes.
Status ValidateIdempotencyKey(std::string_view key, std::string_view field = "idempotencyKey");

// A webhook's URL: at most kSubscriptionUrlBytesMax bytes, and what ParseHttpUrl accepts.
Status ValidateSubscriptionUrl(std::string_view url, std::string_view field = "url");
// kSubscriptionSecretBytesMin-kSubscriptionSecretBytesMax bytes of printable ASCII (it goes
// into every receiver's configuration, often through an environment variable).
Status ValidateSubscriptionSecret(std::string_view secret, std::string_view field = "secret");

}  // namespace bucketd
