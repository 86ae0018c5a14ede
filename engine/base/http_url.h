#pragma once
// The one URL form a webhook may have: http://host[:port][/path][?query]. Parsed here once,
// so the engine's validation of a subscription and the server's connection agree on what the
// host and port are (a second parser is where SSRF filters are usually bypassed).
#include <cstdint>
#include <string>
#include <string_view>

#include "bucketd/status.h"

namespace bucketd {

struct HttpUrl {
  std::string host;    // a name, a dotted IPv4 address, or an IPv6 address without brackets
  uint16_t port = 80;  // explicit, or 80
  std::string target;  // path and query, "/" when absent
  bool ipv6_literal = false;
};

// InvalidArgument naming `field`: another scheme (https is not delivered: put a TLS proxy on
// loopback in front), user info ("user@host" hides the real host from a reader), a
// fragment, an empty or malformed host, a port outside 1-65535, whitespace or control
// characters anywhere.
Status ParseHttpUrl(std::string_view url, HttpUrl* out, std::string_view field = "url");

}  // namespace bucketd
