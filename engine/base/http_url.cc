#include "engine/base/http_url.h"

#include <algorithm>
#include <charconv>

namespace bucketd {
namespace {

bool HostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.';
}

bool Ipv6Char(char c) {
  return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') || c == ':' ||
         c == '.';
}

}  // namespace

Status ParseHttpUrl(std::string_view url, HttpUrl* out, std::string_view field) {
  const auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(std::string(field), std::string(why));
  };
  constexpr std::string_view kScheme = "http://";
  if (url.size() < kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), url.begin(),
                  [](char a, char b) { return a == (b >= 'A' && b <= 'Z' ? b - 'A' + 'a' : b); })) {
    return bad("must be an http:// URL");
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return bad("must not hold whitespace or control characters");
    }
  }
  if (url.find('#') != std::string_view::npos) return bad("must not have a fragment");
  std::string_view rest = url.substr(kScheme.size());
  const size_t authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  const std::string_view target =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) return bad("must not have user info");
  HttpUrl parsed;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("has an unclosed [ in its host");
    parsed.host = std::string(authority.substr(1, close - 1));
    parsed.ipv6_literal = true;
    if (parsed.host.empty() || !std::all_of(parsed.host.begin(), parsed.host.end(), Ipv6Char)) {
      return bad("has a malformed IPv6 host");
    }
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("has a malformed host");
      port_text = after.substr(1);
      if (port_text.empty()) return bad("has an empty port");
    }
  } else {
    const size_t colon = authority.find(':');
    parsed.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return bad("has an empty port");
    }
    if (parsed.host.empty()) return bad("must name a host");
    if (!std::all_of(parsed.host.begin(), parsed.host.end(), HostChar)) {
      return bad("has a malformed host");
    }
    // Host names compare case-insensitively; the allow-list check compares this form.
    for (char& c : parsed.host) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
  }
  if (!port_text.empty()) {
    unsigned port = 0;
    auto [end, error] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (error != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      return bad("has a port outside 1-65535");
    }
    parsed.port = static_cast<uint16_t>(port);
  }
  // A query without a path ("http://h?x") targets "/?x".
  const bool query_only = !target.empty() && target.front() == '?';
  parsed.target = target.empty() ? "/" : (query_only ? "/" : "") + std::string(target);
  *out = std::move(parsed);
  return Status::Ok();
}

}  // namespace bucketd
