#include "webhook_policy.h"

#include "bucketd/limits.h"

namespace bucketd::server {
namespace {

bool IsLoopbackName(const std::string& host) { return host == "localhost"; }

bool IsLinkLocal(const boost::asio::ip::address& a) {
  if (a.is_v4()) return (a.to_v4().to_uint() & 0xffff0000u) == 0xa9fe0000u;  // 169.254/16
  const boost::asio::ip::address_v6 v6 = a.to_v6();
  if (v6.is_v4_mapped()) {
    return (boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_uint() &
            0xffff0000u) == 0xa9fe0000u;
  }
  return v6.is_link_local();
}

bool IsLoopback(const boost::asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6()).is_loopback();
  }
  return a.is_loopback();
}

}  // namespace

Status WebhookPolicy::ParseAllowHosts(std::string_view text, std::set<std::string>* out) {
  while (!text.empty()) {
    const size_t comma = text.find(',');
    std::string host(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    for (char& c : host) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (host.empty() || host.front() == '[') {
      return Status::InvalidArgument("--webhook-allow-hosts",
                                     "must be comma-separated host names or IP addresses "
                                     "(IPv6 without brackets)");
    }
    out->insert(std::move(host));
  }
  return Status::Ok();
}

Status WebhookPolicy::CheckUrl(std::string_view url) const {
  // The engine validates the URL again (engine/base/input_rules.h): the same parser.
  if (url.empty() || url.size() > kSubscriptionUrlBytesMax) {
    return Status::InvalidArgument("url", MustBeBetween(1, kSubscriptionUrlBytesMax, "bytes"));
  }
  HttpUrl parsed;
  if (Status s = ParseHttpUrl(url, &parsed); !s.ok()) return s;
  if (allow_any_ || allow_hosts_.contains(parsed.host) || IsLoopbackName(parsed.host)) {
    return Status::Ok();
  }
  boost::system::error_code ec;
  const boost::asio::ip::address address = boost::asio::ip::make_address(parsed.host, ec);
  if (!ec && IsLoopback(address)) return Status::Ok();
  return Status::InvalidArgument(
      "url", "host " + parsed.host +
                 " is not loopback; the server allows others only with --webhook-allow-hosts or "
                 "--webhook-allow-any");
}

bool WebhookPolicy::AllowsAddress(const HttpUrl& url,
                                  const boost::asio::ip::address& address) const {
  if (IsLoopback(address) || allow_any_) return true;
  if (!allow_hosts_.contains(url.host)) return false;
  if (address.is_unspecified()) return false;
  return !IsLinkLocal(address) || address.to_string() == url.host;
}

}  // namespace bucketd::server
