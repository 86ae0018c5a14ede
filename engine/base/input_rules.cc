#include "engine/base/input_rules.h"

#include <string>

#include <simdjson.h>

#include "bucketd/limits.h"
#include "engine/base/http_url.h"

namespace bucketd {
namespace {

// Most ids are ASCII, which is valid UTF-8: checking that inline skips simdjson's dispatch
// and SIMD setup, which cost more than the check itself on a short id.
bool IsAscii(std::string_view text) {
  unsigned char any = 0;
  for (const char c : text) any |= static_cast<unsigned char>(c);
  return any < 0x80;
}

}  // namespace

Status ValidateUserId(std::string_view user_id, std::string_view field) {
  if (user_id.empty() || user_id.size() > kUserIdBytesMax) {
    return Status::InvalidArgument(std::string(field), MustBeBetween(1, kUserIdBytesMax, "bytes"));
  }
  if (!IsAscii(user_id) && !simdjson::validate_utf8(user_id.data(), user_id.size())) {
    return Status::InvalidArgument(std::string(field), "must be valid UTF-8");
  }
  return Status::Ok();
}

Status ValidateBucketId(std::string_view id, std::string_view field) {
  bool ok = !id.empty() && id.size() <= kBucketIdCharsMax;
  for (const char c : id) {
    ok = ok && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-');
  }
  if (ok) return Status::Ok();
  return Status::InvalidArgument(
      std::string(field), MustBeBetween(1, kBucketIdCharsMax, "characters of [A-Za-z0-9._-]"));
}

Status ValidateEventName(std::string_view name, std::string_view field) {
  if (name.empty() || name.size() > kEventNameBytesMax) {
    return Status::InvalidArgument(std::string(field),
                                   MustBeBetween(1, kEventNameBytesMax, "bytes"));
  }
  if (name.starts_with(kReservedEventPrefix)) {
    return Status::InvalidArgument(
        std::string(field),
        "names starting with \"" + std::string(kReservedEventPrefix) + "\" are reserved");
  }
  return Status::Ok();
}

Status ValidateOccurredAt(TimeMs occurred_at, std::string_view field) {
  if (occurred_at < 0)
    return Status::InvalidArgument(std::string(field), "must be at or after 1970-01-01");
  return Status::Ok();
}

Status ValidateContactProperties(std::span<const PropertyPatch> patch, std::string_view field) {
  for (const PropertyPatch& p : patch) {
    if (p.key.empty()) {
      return Status::InvalidArgument(std::string(field), "a property key must not be empty");
    }
  }
  return Status::Ok();
}

Status ValidateEventProperties(std::span<const PropertyPatch> properties, std::string_view field) {
  if (properties.size() > kEventPropertiesMax) {
    return Status::InvalidArgument(std::string(field),
                                   "at most " + std::to_string(kEventPropertiesMax) + " keys");
  }
  for (const PropertyPatch& p : properties) {
    if (p.key.empty() || p.key.size() > kPropertyKeyBytesMax) {
      return Status::InvalidArgument(std::string(field) + "." + p.key,
                                     "a key " + MustBeBetween(1, kPropertyKeyBytesMax, "bytes"));
    }
    using Type = PropertyValue::Type;
    if (p.value.type != Type::kString && p.value.type != Type::kNumber &&
        p.value.type != Type::kBool) {
      return Status::InvalidArgument(std::string(field) + "." + p.key,
                                     "must be a string, number or boolean");
    }
  }
  return Status::Ok();
}

Status ValidateIdempotencyKey(std::string_view key, std::string_view field) {
  if (key.empty() || key.size() > kIdempotencyKeyBytesMax) {
    return Status::InvalidArgument(std::string(field),
                                   MustBeBetween(1, kIdempotencyKeyBytesMax, "bytes"));
  }
  return Status::Ok();
}

Status ValidateSubscriptionUrl(std::string_view url, std::string_view field) {
  if (url.empty() || url.size() > kSubscriptionUrlBytesMax) {
    return Status::InvalidArgument(std::string(field),
                                   MustBeBetween(1, kSubscriptionUrlBytesMax, "bytes"));
  }
  HttpUrl parsed;
  return ParseHttpUrl(url, &parsed, field);
}

Status ValidateSubscriptionSecret(std::string_view secret, std::string_view field) {
  if (secret.size() < kSubscriptionSecretBytesMin || secret.size() > kSubscriptionSecretBytesMax) {
    return Status::InvalidArgument(
        std::string(field),
        MustBeBetween(kSubscriptionSecretBytesMin, kSubscriptionSecretBytesMax, "bytes"));
  }
  for (char c : secret) {
    if (c < 0x21 || c > 0x7e) {
      return Status::InvalidArgument(std::string(field), "must be printable ASCII without spaces");
    }
  }
  return Status::Ok();
}

Status ValidateClockInstant(TimeMs now_ms, std::string_view field) {
  if (now_ms < 0 || now_ms > kInstantMsMax)
    return Status::InvalidArgument(std::string(field), "must be from 1970 to the end of year 9999");
  return Status::Ok();
}

}  // namespace bucketd
