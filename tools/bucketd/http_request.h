#pragma once
// The transport-neutral request and answer every route handler sees: the HTTP server fills
// an HttpRequest from Beast's parser, a test or fuzz harness can build one by hand, and no
// handler depends on how the bytes arrived.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http_errors.h"

namespace bucketd::server {

enum class HttpMethod { kGet, kPost, kPut, kPatch, kDelete, kOther };

struct HttpRequest {
  HttpMethod method = HttpMethod::kGet;
  std::string target;  // the raw request-target: path and query, as sent
  // The headers the routes read; a header absent from the request is nullopt (an empty
  // value is present: an empty Origin is still an origin to check).
  std::optional<std::string> host;
  std::optional<std::string> origin;
  std::optional<std::string> authorization;
  std::optional<std::string> content_type;
  std::optional<std::string> content_encoding;
  // "address:port" of the socket the request arrived on, as a client that typed that
  // address would send it in Host ("127.0.0.1:7411", "[::1]:7411"); empty without a socket.
  std::string local_authority;
  // The client declared a body (Content-Length > 0 or chunked), known before it is read.
  bool body_declared = false;
  std::string body;

  // The target without its query.
  std::string_view Path() const;
  // The first value of the query parameter `name`, percent-decoded with '+' as a space;
  // nullopt when the query does not name it.
  std::optional<std::string> Query(std::string_view name) const;
  // Every value of the query parameter `name`, in order (a parameter that may repeat).
  std::vector<std::string> QueryAll(std::string_view name) const;
  // Content-Type's media type, lower-case, without parameters ("Application/JSON;
  // charset=utf-8" -> "application/json"); empty when absent.
  std::string MediaType() const;
  bool HasBody() const { return body_declared || !body.empty(); }
};

using HttpRequestPtr = std::shared_ptr<const HttpRequest>;

struct Reply {
  int http_status = kHttpOk;
  std::string body;
  std::string content_type = "application/json";
  // The route that answered, as metrics and logs name it (the Router sets it); the transport
  // records the reply under it once written (HttpService::RecordServed).
  std::string route = "unmatched";
};

Reply JsonReply(int http_status, std::string body);
Reply ErrorReply(const HttpError& error);

// "%41b%2F" -> "Ab/"; a '%' not followed by two hex digits stays as it is. With
// `plus_is_space` (query strings), '+' decodes to ' '.
std::string PercentDecode(std::string_view text, bool plus_is_space = false);
std::string AsciiLower(std::string_view text);
// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
std::string_view TrimSpace(std::string_view text);

// One request being answered. A handler answers exactly once, at once or later from any
// thread; work that must not run on the thread that finished it (the engine's owner thread,
// the long-poll waiter) goes back to the transport with Post. An exception thrown by posted
// work answers 503 instead of escaping into the transport's event loop.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  using Task = std::function<void()>;
  using Poster = std::function<void(Task)>;
  using Responder = std::function<void(Reply)>;

  Exchange(Poster post, Responder respond);

  // Runs `task` on the transport's executor for this request.
  // REQUIRES: this Exchange is owned by a shared_ptr (ExchangePtr).
  void Post(Task task);
  // REQUIRES: not answered yet.
  void Respond(Reply reply);
  // Answers 503 (an internal error) unless already answered; logs `what`.
  void Fail(std::string_view what);

 private:
  Poster post_;
  Responder respond_;
  std::atomic<bool> answered_{false};
};

using ExchangePtr = std::shared_ptr<Exchange>;

}  // namespace bucketd::server
