#pragma once
// Which webhook targets this server may connect to (no open SSRF by default). A webhook URL
// is a request the server makes on a client's behalf from inside its network: by default
// only loopback targets are allowed; --webhook-allow-hosts names the others (host names or
// IP literals, compared exactly), --webhook-allow-any allows any.
//
// Checked twice: when a subscription is created (CheckUrl, by name: no DNS lookup on a
// client's input), and at every delivery on the addresses the name resolved to, right
// before connecting and again on the address connected to (AllowsAddress), so a name that
// later resolves elsewhere (DNS rebinding) reaches nothing the policy does not allow.
#include <set>
#include <string>
#include <string_view>

#include <boost/asio/ip/address.hpp>

#include "bucketd/status.h"
#include "engine/base/http_url.h"

namespace bucketd::server {

class WebhookPolicy {
 public:
  WebhookPolicy() = default;
  WebhookPolicy(bool allow_any, std::set<std::string> allow_hosts)
      : allow_any_(allow_any), allow_hosts_(std::move(allow_hosts)) {}
  // A comma-separated --webhook-allow-hosts value: names (lower-cased) and IP literals
  // (IPv6 without brackets). InvalidArgument naming the flag for an empty or bracketed entry.
  static Status ParseAllowHosts(std::string_view text, std::set<std::string>* out);

  // A subscription's URL: InvalidArgument naming "url" when it is malformed or names a host
  // outside the policy.
  Status CheckUrl(std::string_view url) const;
  // Whether a delivery to `url` may use `address`: loopback always; with --webhook-allow-any
  // anything; a host named in --webhook-allow-hosts any address but link-local (cloud
  // metadata services live there) and unspecified ones, unless the link-local address is
  // itself the listed host.
  bool AllowsAddress(const HttpUrl& url, const boost::asio::ip::address& address) const;

  bool allow_any() const { return allow_any_; }

 private:
  bool allow_any_ = false;
  std::set<std::string> allow_hosts_;
};

}  // namespace bucketd::server
