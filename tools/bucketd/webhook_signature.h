#pragma once
// The signature of a webhook delivery, in the form Stripe made familiar:
//   Bucketd-Signature: t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, "<t>.<body>")>
// Signing the timestamp with the body lets a receiver refuse an old delivery replayed by
// someone who captured it (docs/api.md has verification snippets).
#include <cstdint>
#include <string>
#include <string_view>

namespace bucketd::server {

inline constexpr std::string_view kSignatureHeader = "Bucketd-Signature";

// Lower-case hex of HMAC-SHA256(key, message).
std::string HmacSha256Hex(std::string_view key, std::string_view message);
// "t=<unix_seconds>,v1=<HmacSha256Hex(secret, "<unix_seconds>.<body>")>".
std::string SignatureHeaderValue(std::string_view secret, int64_t unix_seconds,
                                 std::string_view body);

}  // namespace bucketd::server
