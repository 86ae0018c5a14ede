#include "auth_token_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "bucketd/limits.h"

namespace bucketd::server {

Status ReadAuthTokenFile(const std::string& path, AuthTokenFile* out) {
  const std::string flag = "--auth-token-file";
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) {
    return Status::InvalidArgument(flag, "cannot read " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(info.st_mode)) {
    return Status::InvalidArgument(flag, path + " is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::InvalidArgument(flag, "cannot read " + path + ": " + std::strerror(errno));
  }
  std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Status::InvalidArgument(flag, "cannot read " + path);
  if (token.ends_with('\n')) token.pop_back();
  if (token.ends_with('\r')) token.pop_back();
  if (token.empty()) return Status::InvalidArgument(flag, path + " holds no token");
  // A token travels in a header: one longer than the server takes in headers could never match.
  if (token.size() > kRequestHeaderBytesMax) {
    return Status::InvalidArgument(
        flag, path + " holds more than " + std::to_string(kRequestHeaderBytesMax) + " bytes");
  }
  for (const char c : token) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte == 0x7f) {
      return Status::InvalidArgument(
          flag, path + ": a token is one line without spaces or control characters");
    }
  }
  out->token = std::move(token);
  out->readable_by_others = (info.st_mode & (S_IRGRP | S_IROTH)) != 0;
  return Status::Ok();
}

}  // namespace bucketd::server
