#pragma once
// How the server reads a request's framing with Beast's parser: what it refuses beyond what
// the parser does, the errors it answers, and the HttpRequest it hands the API. One home for
// the transport (http_server.cc) and for the fuzz target that feeds it raw bytes
// (tests/fuzz/http_request_fuzz.cc).
#include <memory>
#include <optional>
#include <string>

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include "http_errors.h"
#include "http_request.h"

namespace bucketd::server {

using RequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;

HttpMethod MethodOf(boost::beast::http::verb verb);
std::optional<std::string> HeaderOf(const boost::beast::http::request_header<>& header,
                                    boost::beast::http::field field);

// The answer to a request the parser refused (431, 413, 400 naming the header).
HttpError ParseError(const boost::beast::error_code& ec);
HttpError BodyTooLarge();

// What Beast's parser lets through but this server refuses before reading a body: a
// repeated Content-Length, a Transfer-Encoding other than chunked, a repeated Host, a body
// method without a length (411).
std::optional<HttpError> CheckFraming(const RequestParser& parser);

// The request the API sees, from a parsed header (the body is added once read).
std::shared_ptr<HttpRequest> RequestFromHeader(const RequestParser& parser,
                                               std::string local_authority);

}  // namespace bucketd::server
