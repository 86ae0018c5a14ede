#pragma once
// The HTTP/1.1 transport: Boost.Beast's parser on an Asio io_context run by a few threads.
// Every socket is a small state machine driven by completions, so an idle keep-alive
// connection, a slow client or a parked long-poll costs memory and a descriptor, never a
// thread; requests go to an HttpService (HttpApi, ClusterApi) as transport-neutral HttpRequests.
//
// Limits enforced here, before a byte of body is buffered: the header size (431), the body
// size whatever its transfer encoding (413), ambiguous framing (Transfer-Encoding with
// Content-Length, repeated Content-Length: 400), a body without a length (411); the
// routes' header checks (HttpService::Screen) also run before the body is read. Timeouts drop
// slow clients: the wait for a request, the header once it started, the body, the write.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "bucketd/status.h"
#include "http_service.h"

namespace bucketd::server {

struct HttpServerConfig {
  size_t io_threads = 2;
  size_t connections_max = 16384;
  // A keep-alive connection may sit this long between requests (and before its first).
  std::chrono::milliseconds idle_timeout{60'000};
  // From a request's first byte to the end of its headers (slowloris).
  std::chrono::milliseconds header_timeout{10'000};
  // The whole body, and the whole response write.
  std::chrono::milliseconds body_timeout{30'000};
};

class HttpServer {
 public:
  HttpServer(HttpService& api, HttpServerConfig config);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds `host` (an address or a name; "[::1]" for IPv6) and `port` (0: any free port) and
  // listens with the system's largest backlog. SO_REUSEADDR only: a port another process
  // listens on is an error ("address already in use"), never a shared port.
  Status Listen(const std::string& host, uint16_t port);
  // The bound port, also after Shutdown. REQUIRES: Listen succeeded.
  uint16_t port() const;
  // Serves on config.io_threads threads (this one among them) until Shutdown() has run and
  // the last connection has ended. REQUIRES: Listen succeeded.
  void Run();
  // Thread-safe, any time (before Run too): stops accepting, closes connections waiting
  // for a request, lets requests in progress finish and closes their connections after the
  // answer. Wake long-polls first (EngineThread::CloseStream) so none waits out its poll.
  void Shutdown();

  class Impl;  // http_server.cc: the io_context, the acceptor, the connections

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace bucketd::server
