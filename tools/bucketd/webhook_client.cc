#include "webhook_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "tools/build_info.h"

namespace bucketd::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

constexpr uint64_t kResponseBodyBytesMax = 64 * 1024;

Status Failed(const std::string& what) { return Status::IoError(what); }

}  // namespace

Status PostWebhook(const HttpUrl& url, const WebhookPolicy& policy,
                   const std::vector<std::pair<std::string, std::string>>& headers,
                   const std::string& body, std::chrono::milliseconds timeout,
                   WebhookResponse* response) {
  boost::asio::io_context io;
  // Resolution has no socket to put a deadline on: run_for bounds it (getaddrinfo itself
  // goes on in asio's resolver thread, and its answer is then dropped).
  tcp::resolver resolver(io);
  beast::error_code ec;
  tcp::resolver::results_type results;
  bool resolved = false;
  resolver.async_resolve(url.host, std::to_string(url.port),
                         [&](const beast::error_code& e, tcp::resolver::results_type r) {
                           ec = e;
                           results = std::move(r);
                           resolved = true;
                         });
  io.run_for(timeout);
  if (!resolved) {
    resolver.cancel();
    io.restart();
    io.run();
    return Failed("resolving " + url.host + " timed out");
  }
  if (ec) return Failed("resolving " + url.host + ": " + ec.message());
  std::vector<tcp::endpoint> allowed;
  std::string refused;
  for (const auto& entry : results) {
    if (policy.AllowsAddress(url, entry.endpoint().address())) {
      allowed.push_back(entry.endpoint());
    } else {
      refused = entry.endpoint().address().to_string();
    }
  }
  if (allowed.empty()) {
    return Failed(url.host + " resolves to " + (refused.empty() ? "nothing" : refused) +
                  ", which the webhook policy does not allow");
  }

  beast::tcp_stream stream(io);
  http::request<http::string_body> request{http::verb::post, url.target, 11};
  const std::string host = url.ipv6_literal ? "[" + url.host + "]" : url.host;
  request.set(http::field::host, url.port == 80 ? host : host + ":" + std::to_string(url.port));
  request.set(http::field::user_agent, std::string("bucketd/") + build_info::kVersion);
  request.set(http::field::content_type, "application/json");
  request.set(http::field::connection, "close");
  for (const auto& [name, value] : headers) request.set(name, value);
  request.body() = body;
  request.prepare_payload();
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kResponseBodyBytesMax);
  std::string failure;

  // One deadline per step, on the stream: connect, then write, then read.
  stream.expires_after(timeout);
  stream.async_connect(allowed, [&](const beast::error_code& e, const tcp::endpoint&) {
    if (e) {
      failure = "connecting to " + host + ": " + e.message();
      return;
    }
    // The address connected to, not the one looked up: what the policy must allow.
    beast::error_code peer_error;
    const tcp::endpoint peer = stream.socket().remote_endpoint(peer_error);
    if (peer_error || !policy.AllowsAddress(url, peer.address())) {
      failure = "connected to an address the webhook policy does not allow";
      stream.close();
      return;
    }
    stream.expires_after(timeout);
    http::async_write(stream, request, [&](const beast::error_code& we, size_t) {
      if (we) {
        failure = "sending to " + host + ": " + we.message();
        return;
      }
      stream.expires_after(timeout);
      http::async_read(stream, buffer, parser, [&](const beast::error_code& re, size_t) {
        if (re) failure = "reading the answer of " + host + ": " + re.message();
      });
    });
  });
  io.restart();
  io.run();
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  if (!failure.empty()) return Failed(failure);
  response->status = static_cast<int>(parser.get().result_int());
  return Status::Ok();
}

}  // namespace bucketd::server
