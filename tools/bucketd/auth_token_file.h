#pragma once
// --auth-token-file: the bearer token read from a file, so that it stays out of the command
// line (visible to every user in /proc/<pid>/cmdline and `ps`) and out of the environment
// (/proc/<pid>/environ, inherited by children); a secret store or systemd's credentials
// (LoadCredential=) write such files.
#include <string>

#include "bucketd/status.h"

namespace bucketd::server {

struct AuthTokenFile {
  std::string token;
  // The file is readable by its group or by others: worth a warning, not a refusal (a
  // group-readable secret can be deliberate, e.g. a group shared with a sidecar).
  bool readable_by_others = false;
};

// Reads the token: the file's content without its trailing line break ("\n" or "\r\n").
// Refuses a file that cannot be read, an empty token, and a token with a space or a control
// character (it could not travel in an Authorization header, so no client could match it).
Status ReadAuthTokenFile(const std::string& path, AuthTokenFile* out);

}  // namespace bucketd::server
