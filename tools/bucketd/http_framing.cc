#include "http_framing.h"

#include <algorithm>

#include "bucketd/limits.h"

namespace bucketd::server {

namespace beast = boost::beast;
namespace http = beast::http;
using beast::error_code;

HttpMethod MethodOf(http::verb verb) {
  switch (verb) {
    case http::verb::get:
      return HttpMethod::kGet;
    case http::verb::post:
      return HttpMethod::kPost;
    case http::verb::put:
      return HttpMethod::kPut;
    case http::verb::patch:
      return HttpMethod::kPatch;
    case http::verb::delete_:
      return HttpMethod::kDelete;
    default:
      return HttpMethod::kOther;
  }
}

std::optional<std::string> HeaderOf(const http::request_header<>& header, http::field field) {
  auto it = header.find(field);
  if (it == header.end()) return std::nullopt;
  return std::string(it->value());
}

HttpError BodyTooLarge() {
  return PayloadTooLarge("the request body is larger than " +
                         std::to_string(kRequestBodyBytesMax >> 20) + " MiB");
}

HttpError ParseError(const error_code& ec) {
  if (ec == http::error::header_limit) {
    return HeaderTooLarge("the request line and headers are larger than " +
                          std::to_string(kRequestHeaderBytesMax >> 10) + " KiB");
  }
  if (ec == http::error::body_limit) return BodyTooLarge();
  // Beast refuses Content-Length with Transfer-Encoding under either name, depending on
  // which came first.
  if (ec == http::error::bad_content_length) {
    return BadRequest("Content-Length",
                      "Content-Length is malformed, conflicting, or sent with Transfer-Encoding");
  }
  if (ec == http::error::bad_transfer_encoding) {
    return BadRequest("Transfer-Encoding",
                      "Transfer-Encoding is repeated or sent with Content-Length");
  }
  return BadRequest("", "malformed HTTP request: " + ec.message());
}

// What Beast's parser lets through but this server refuses before reading a body.
std::optional<HttpError> CheckFraming(const RequestParser& parser) {
  const http::request_header<>& header = parser.get();
  // Beast merges repeated equal Content-Lengths (RFC 9110 allows it); a proxy in front may
  // have read another copy, so any repeat is refused like a conflict.
  const size_t lengths = header.count(http::field::content_length);
  if (lengths > 1 ||
      (lengths == 1 && header[http::field::content_length].find(',') != beast::string_view::npos)) {
    return BadRequest("Content-Length", "Content-Length is repeated");
  }
  // Beast reads a body only when chunked is the last coding and treats any other as no
  // body at all: the body would then be read as the next request (request smuggling).
  if (auto te = HeaderOf(header, http::field::transfer_encoding);
      te && AsciiLower(TrimSpace(*te)) != "chunked") {
    return BadRequest("Transfer-Encoding", "Transfer-Encoding must be chunked, and only chunked");
  }
  if (header.count(http::field::host) > 1) return BadRequest("Host", "Host is repeated");
  const HttpMethod method = MethodOf(header.method());
  const bool body_method =
      method == HttpMethod::kPost || method == HttpMethod::kPut || method == HttpMethod::kPatch;
  // `lengths` rather than parser.content_length(): a parsed header holds a valid one exactly
  // when it has the field, and GCC's -Wmaybe-uninitialized misreads the boost::optional copy.
  if (body_method && lengths == 0 && !parser.chunked()) return LengthRequired();
  return std::nullopt;
}

std::shared_ptr<HttpRequest> RequestFromHeader(const RequestParser& parser,
                                               std::string local_authority) {
  const http::request_header<>& header = parser.get();
  auto request = std::make_shared<HttpRequest>();
  request->method = MethodOf(header.method());
  request->target = std::string(header.target());
  request->host = HeaderOf(header, http::field::host);
  request->origin = HeaderOf(header, http::field::origin);
  request->authorization = HeaderOf(header, http::field::authorization);
  request->content_type = HeaderOf(header, http::field::content_type);
  request->content_encoding = HeaderOf(header, http::field::content_encoding);
  request->local_authority = std::move(local_authority);
  // From the header field rather than parser.content_length() (see CheckFraming): a parsed
  // Content-Length is digits, and it declares a body unless every digit is 0.
  const beast::string_view length = header[http::field::content_length];
  request->body_declared = parser.chunked() || std::any_of(length.begin(), length.end(),
                                                           [](char c) { return c != '0'; });
  return request;
}

}  // namespace bucketd::server
