#include "webhook_signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "engine/base/check.h"

namespace bucketd::server {

std::string HmacSha256Hex(std::string_view key, std::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  const unsigned char* result =
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length);
  // HMAC fails only for an unknown digest or an allocation failure: nothing to deliver then.
  BUCKETD_CHECK(result != nullptr && length == 32);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

std::string SignatureHeaderValue(std::string_view secret, int64_t unix_seconds,
                                 std::string_view body) {
  const std::string t = std::to_string(unix_seconds);
  std::string signed_payload;
  signed_payload.reserve(t.size() + 1 + body.size());
  signed_payload.append(t).append(".").append(body);
  return "t=" + t + ",v1=" + HmacSha256Hex(secret, signed_payload);
}

}  // namespace bucketd::server
