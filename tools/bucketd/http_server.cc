#include "http_server.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "bucketd/limits.h"
#include "http_framing.h"

namespace bucketd::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using beast::error_code;

// The first read of a request: small, since an idle connection keeps it (Beast grows the
// buffer for a longer header or a body, and it shrinks back after the request).
constexpr size_t kFirstReadBytes = 512;
// A buffer a request grew beyond this is freed after it: a connection that sent one 16 MiB
// body must not keep it while idle, and one that sends batches keeps its buffer.
constexpr size_t kKeepBufferBytesMax = size_t{1} << 20;
// After an answer that closes the connection, what the client still sends is read and
// dropped for a while before the close: closing with unread bytes sends a reset, and the
// client could lose the answer (a 413 while it is still sending its body).
constexpr std::chrono::seconds kLingerTimeout{2};
constexpr size_t kLingerBytesMax = 2 * kRequestBodyBytesMax;
constexpr size_t kLingerReadBytes = 16384;
// The most a Content-Length body grows per read: it is read straight into the request's
// string, which grows (zero-filled) only as bytes arrive, so a client that declares 16 MiB
// and sends nothing holds no more than this (and its reservation, not yet touched).
constexpr size_t kBodyReadBytes = 65536;
// Accepting fails while the descriptor table is full; trying again at once would spin.
constexpr std::chrono::milliseconds kAcceptRetryDelay{100};
constexpr uint64_t kRefusalLogEvery = 1000;

// The authority a client that typed this socket's address would send in Host.
std::string AuthorityOf(const tcp::endpoint& endpoint) {
  net::ip::address address = endpoint.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6());
  }
  std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(endpoint.port());
}

bool IsParseError(const error_code& ec) {
  static const error_code kHttpError = http::error::bad_method;
  // end_of_stream and partial_message: the client went away, there is no one to answer.
  return ec.category() == kHttpError.category() && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

}  // namespace

class Session;

// Shared with every connection: the last owner of a connection may be a completion the
// owner thread drops after Run() returned, and its unregistering must find this alive.
class HttpServer::Impl : public std::enable_shared_from_this<HttpServer::Impl> {
 public:
  Impl(HttpService& api, HttpServerConfig config)
      : api_(api),
        config_(config),
        work_(net::make_work_guard(ioc_)),
        acceptor_(net::make_strand(ioc_)),
        accept_retry_(acceptor_.get_executor()) {}

  Status Listen(const std::string& host, uint16_t port);
  uint16_t port() const { return port_; }
  void Run();
  void Shutdown();

  HttpService& api() { return api_; }
  const HttpServerConfig& config() const { return config_; }
  bool ShuttingDown() const { return shutting_down_.load(std::memory_order_acquire); }
  void Register(Session* session);
  void Forget(Session* session);

 private:
  void Accept();
  void OnAccept(const error_code& ec, tcp::socket socket);
  void RunThread();
  // Lets Run return once shutting down and the last connection has ended. REQUIRES: mu_.
  void FinishIfDrained();

  HttpService& api_;
  const HttpServerConfig config_;
  std::atomic<bool> shutting_down_{false};
  uint64_t refused_connections_ = 0;  // acceptor strand only
  // Kept from Listen: the acceptor forgets it once Shutdown closed it.
  uint16_t port_ = 0;

  // Declared before the io_context: connections still queued in it when it is destroyed
  // unregister themselves here.
  std::mutex mu_;
  std::unordered_set<Session*> sessions_;

  net::io_context ioc_;
  // Keeps run() going while nothing is pending (long-polls park outside the io_context).
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  tcp::acceptor acceptor_;
  net::steady_timer accept_retry_;
};

// One connection: reads a request, screens its headers, reads its body, hands it to the
// API, writes the answer, and waits for the next. Runs on its own strand; one operation
// is pending at a time.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, std::shared_ptr<HttpServer::Impl> owner)
      : owner_(std::move(owner)), server_(*owner_), stream_(std::move(socket)) {
    error_code ec;
    tcp::endpoint local = stream_.socket().local_endpoint(ec);
    if (!ec) local_authority_ = AuthorityOf(local);
    server_.Register(this);
  }
  ~Session() { server_.Forget(this); }

  net::any_io_executor executor() { return stream_.get_executor(); }

  void Start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->WaitForRequest(); });
  }

  // Shutdown: a connection between requests closes now; one serving a request finishes it.
  void CloseIfIdle() {
    if (phase_ == Phase::kIdle) Close();
  }

 private:
  enum class Phase { kIdle, kBody, kServing, kClosing };

  void WaitForRequest() {
    phase_ = Phase::kIdle;
    if (server_.ShuttingDown()) return Close();
    if (buffer_.size() > 0) return ReadHeader();  // pipelined
    stream_.expires_after(server_.config().idle_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            [self = shared_from_this()](error_code ec, size_t bytes) {
                              if (ec) return self->OnReadError(ec, "idle");
                              self->buffer_.commit(bytes);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(kRequestHeaderBytesMax);
    parser_->body_limit(kRequestBodyBytesMax);
    stream_.expires_after(server_.config().header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](error_code ec, size_t) {
                              if (ec) return self->OnReadError(ec, "header");
                              self->OnHeader();
                            });
  }

  void OnHeader() {
    if (std::optional<HttpError> error = CheckFraming(*parser_)) return Refuse(*error);
    const http::request_header<>& header = parser_->get();
    version_ = header.version();
    keep_alive_ = parser_->keep_alive();
    request_ = RequestFromHeader(*parser_, local_authority_);
    // A refusal on the headers is timed from here; a served request from its body's end.
    parsed_at_ = std::chrono::steady_clock::now();
    if (std::optional<Reply> refusal = server_.api().Screen(*request_)) {
      // The body, if any, stays unread: the connection cannot carry another request.
      return Write(std::move(*refusal), request_->body_declared || !keep_alive_);
    }
    if (parser_->is_done()) return Serve();
    phase_ = Phase::kBody;
    auto expect = HeaderOf(header, http::field::expect);
    if (expect && AsciiLower(TrimSpace(*expect)) == "100-continue") return SendContinue();
    ReadBody();
  }

  // curl and others wait for this before sending a body larger than 1 KiB.
  void SendContinue() {
    auto interim =
        std::make_shared<http::response<http::empty_body>>(http::status::continue_, version_);
    stream_.expires_after(server_.config().body_timeout);
    http::async_write(stream_, *interim,
                      [self = shared_from_this(), interim](error_code ec, size_t) {
                        if (ec) return self->Close();
                        self->ReadBody();
                      });
  }

  void ReadBody() {
    // One deadline for the whole body: the reads below do not re-arm it.
    stream_.expires_after(server_.config().body_timeout);
    if (!parser_->chunked()) return ReadSizedBody(*parser_->content_length());
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, size_t) {
                       if (ec) return self->OnReadError(ec, "body");
                       self->Serve();
                     });
  }

  // A Content-Length body (the parser refused one over the limit with the header) is read
  // into the request's string without the parser: Beast's read loop reads at most what the
  // buffer holds, 512 bytes for a buffer sized for idle connections, so a 100 KiB batch
  // took ~200 recvmsg, epoll_wait and timer re-arms, then a copy out of the buffer.
  void ReadSizedBody(uint64_t length) {
    sized_body_ = true;
    std::string& body = request_->body;
    // Reserved, not touched: pages are committed only as bytes arrive.
    body.reserve(length);
    const size_t buffered = std::min<uint64_t>(buffer_.size(), length);
    body.resize(buffered);
    net::buffer_copy(net::buffer(body.data(), buffered), buffer_.data());
    buffer_.consume(buffered);  // what follows the body stays for the next request
    body_remaining_ = length - buffered;
    ReadMoreBody();
  }

  void ReadMoreBody() {
    if (body_remaining_ == 0) return Serve();
    std::string& body = request_->body;
    const size_t start = body.size();
    const size_t want = std::min<uint64_t>(body_remaining_, kBodyReadBytes);
    body.resize(start + want);
    stream_.async_read_some(net::buffer(body.data() + start, want),
                            [self = shared_from_this(), start](error_code ec, size_t bytes) {
                              self->request_->body.resize(start + bytes);
                              self->body_remaining_ -= bytes;
                              if (ec == net::error::eof) ec = http::error::partial_message;
                              if (ec) return self->OnReadError(ec, "body");
                              self->ReadMoreBody();
                            });
  }

  void Serve() {
    phase_ = Phase::kServing;
    parsed_at_ = std::chrono::steady_clock::now();
    // A long-poll holds the connection for up to kLongPollMsMax: no deadline while the API
    // has the request.
    stream_.expires_never();
    if (!sized_body_) request_->body = std::move(parser_->get().body());
    sized_body_ = false;
    parser_.reset();
    auto self = shared_from_this();
    server_.api().Dispatch(
        std::move(request_),
        [self](Exchange::Task task) { net::post(self->stream_.get_executor(), std::move(task)); },
        [self](Reply reply) {
          net::post(self->stream_.get_executor(), [self, reply = std::move(reply)]() mutable {
            self->Write(std::move(reply), !self->keep_alive_);
          });
        });
  }

  void OnReadError(const error_code& ec, const char* phase) {
    if (IsParseError(ec)) return Refuse(ParseError(ec));
    if (ec == beast::error::timeout) {
      spdlog::debug("event=connection_timeout phase={} peer_waited={}", phase,
                    phase_ == Phase::kIdle ? "request" : "body");
    }
    Close();
  }

  // A request refused before it could be routed: answered, then the connection closes
  // (its framing cannot be trusted, or its body was not read).
  void Refuse(const HttpError& error) {
    parsed_at_ = std::chrono::steady_clock::now();
    request_.reset();
    Write(ErrorReply(error), true);
  }

  void Write(Reply reply, bool close) {
    phase_ = Phase::kServing;
    close = close || server_.ShuttingDown();
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(reply.http_status), version_);
    response->set(http::field::content_type, reply.content_type);
    response->body() = std::move(reply.body);
    response->keep_alive(!close);
    response->prepare_payload();
    stream_.expires_after(server_.config().body_timeout);
    http::async_write(
        stream_, *response,
        [self = shared_from_this(), response, close, route = std::move(reply.route)](error_code ec,
                                                                                     size_t) {
          // A failed write is recorded too: the request was answered, the client left.
          const std::chrono::duration<double> took =
              std::chrono::steady_clock::now() - self->parsed_at_;
          self->server_.api().RecordServed(route, response->result_int(), took.count());
          if (ec) return self->Close();
          if (close) return self->Linger();
          self->parser_.reset();
          if (self->buffer_.size() == 0 && self->buffer_.capacity() > kKeepBufferBytesMax) {
            self->buffer_.shrink_to_fit();
          }
          self->WaitForRequest();
        });
  }

  void Linger() {
    phase_ = Phase::kClosing;
    parser_.reset();
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kLingerTimeout);
    Drain();
  }

  void Drain() {
    buffer_.consume(buffer_.size());
    stream_.async_read_some(buffer_.prepare(kLingerReadBytes),
                            [self = shared_from_this()](error_code ec, size_t bytes) {
                              self->lingered_bytes_ += bytes;
                              if (ec || self->lingered_bytes_ > kLingerBytesMax) {
                                return self->Close();
                              }
                              self->buffer_.commit(bytes);
                              self->Drain();
                            });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    phase_ = Phase::kClosing;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  // First, so it is destroyed last: the stream unregisters from the owner's io_context.
  const std::shared_ptr<HttpServer::Impl> owner_;
  HttpServer::Impl& server_;
  beast::tcp_stream stream_;
  std::string local_authority_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  std::shared_ptr<HttpRequest> request_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool sized_body_ = false;      // the body is read into request_ directly (ReadSizedBody)
  uint64_t body_remaining_ = 0;  // its bytes still to read
  // When the request being answered was parsed: its latency runs from here to the reply written.
  std::chrono::steady_clock::time_point parsed_at_;
  Phase phase_ = Phase::kIdle;
  bool closed_ = false;
  size_t lingered_bytes_ = 0;
};

Status HttpServer::Impl::Listen(const std::string& host, uint16_t port) {
  const std::string address = host + ":" + std::to_string(port);
  std::string name = host;
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  error_code ec;
  tcp::resolver resolver(ioc_);
  auto endpoints = resolver.resolve(name, std::to_string(port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return Status::InvalidArgument("--listen", "cannot resolve " + address + ": " + ec.message());
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto failed = [&](const char* step) {
    return Status::IoError("cannot listen on " + address + ": " + step + ": " + ec.message());
  };
  if (acceptor_.open(endpoint.protocol(), ec); ec) return failed("socket");
  // SO_REUSEADDR lets a restart bind while old connections sit in TIME_WAIT; SO_REUSEPORT is
  // never set, so a second server on a busy port fails here instead of sharing it.
  if (acceptor_.set_option(net::socket_base::reuse_address(true), ec); ec) return failed("option");
  if (acceptor_.bind(endpoint, ec); ec) return failed("bind");
  if (acceptor_.listen(net::socket_base::max_listen_connections, ec); ec) return failed("listen");
  port_ = acceptor_.local_endpoint().port();
  Accept();
  return Status::Ok();
}

void HttpServer::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpServer::Impl::OnAccept(const error_code& ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
  if (ec) {
    spdlog::warn("event=accept_failed error=\"{}\"", ec.message());
    accept_retry_.expires_after(kAcceptRetryDelay);
    accept_retry_.async_wait([this](error_code wait_ec) {
      if (!wait_ec && acceptor_.is_open()) Accept();
    });
    return;
  }
  size_t connections = 0;
  {
    std::lock_guard lock(mu_);
    connections = sessions_.size();
  }
  if (ShuttingDown()) {
    error_code ignored;
    socket.close(ignored);
  } else if (connections >= config_.connections_max) {
    // Accepted and closed at once: the backlog keeps draining and the client learns at
    // once, where not accepting would leave it waiting on a full queue.
    if (refused_connections_++ % kRefusalLogEvery == 0) {
      spdlog::warn("event=connection_refused reason=max_connections max={} refused={}",
                   config_.connections_max, refused_connections_);
    }
    error_code ignored;
    socket.close(ignored);
  } else {
    error_code ignored;
    // Headers and body go out in one write, but a delayed ACK still held small responses
    // ~40 ms under Nagle's algorithm when they did not.
    socket.set_option(tcp::no_delay(true), ignored);
    std::make_shared<Session>(std::move(socket), shared_from_this())->Start();
  }
  Accept();
}

void HttpServer::Impl::Register(Session* session) {
  std::lock_guard lock(mu_);
  sessions_.insert(session);
}

void HttpServer::Impl::Forget(Session* session) {
  std::lock_guard lock(mu_);
  sessions_.erase(session);
  FinishIfDrained();
}

void HttpServer::Impl::FinishIfDrained() {
  if (ShuttingDown() && sessions_.empty() && work_) work_.reset();
}

void HttpServer::Impl::Shutdown() {
  if (shutting_down_.exchange(true, std::memory_order_acq_rel)) return;
  net::post(acceptor_.get_executor(), [this] {
    error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
    std::lock_guard lock(mu_);
    for (Session* session : sessions_) {
      std::weak_ptr<Session> weak = session->weak_from_this();
      net::post(session->executor(), [weak] {
        if (auto live = weak.lock()) live->CloseIfIdle();
      });
    }
    FinishIfDrained();
  });
}

void HttpServer::Impl::RunThread() {
  for (;;) {
    try {
      ioc_.run();
      return;
    } catch (const std::exception& e) {
      // A handler threw past every catch: log it and keep serving the other connections.
      spdlog::error("event=io_exception error=\"{}\"", e.what());
    }
  }
}

void HttpServer::Impl::Run() {
  std::vector<std::thread> threads;
  for (size_t i = 1; i < config_.io_threads; ++i) threads.emplace_back([this] { RunThread(); });
  RunThread();
  for (std::thread& thread : threads) thread.join();
}

HttpServer::HttpServer(HttpService& api, HttpServerConfig config)
    : impl_(std::make_shared<Impl>(api, config)) {}

HttpServer::~HttpServer() = default;

Status HttpServer::Listen(const std::string& host, uint16_t port) {
  return impl_->Listen(host, port);
}

uint16_t HttpServer::port() const { return impl_->port(); }

void HttpServer::Run() { impl_->Run(); }

void HttpServer::Shutdown() { impl_->Shutdown(); }

}  // namespace bucketd::server
