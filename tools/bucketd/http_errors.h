#pragma once
// The one place where an engine Status becomes an HTTP status and an error body
// {"error":{"code":"…","message":"…","field":"…"}} (SPEC §9).
#include <string>
#include <string_view>

#include "bucketd/status.h"

namespace bucketd::server {

inline constexpr int kHttpOk = 200;
inline constexpr int kHttpCreated = 201;
inline constexpr int kHttpAccepted = 202;
inline constexpr int kHttpBadRequest = 400;
inline constexpr int kHttpUnauthorized = 401;
inline constexpr int kHttpForbidden = 403;
inline constexpr int kHttpNotFound = 404;
inline constexpr int kHttpConflict = 409;
inline constexpr int kHttpLengthRequired = 411;
inline constexpr int kHttpPayloadTooLarge = 413;
inline constexpr int kHttpUnsupportedMediaType = 415;
inline constexpr int kHttpHeaderTooLarge = 431;
inline constexpr int kHttpNotImplemented = 501;
inline constexpr int kHttpUnavailable = 503;
inline constexpr int kHttpInsufficientStorage = 507;

// An HTTP error: the status line and the body's code / message / field.
struct HttpError {
  int http_status = kHttpBadRequest;
  std::string code;
  std::string message;
  std::string field;
};

// invalid_argument -> 400, not_found -> 404, already_exists / failed_precondition -> 409,
// io_error / corruption -> 503 "unavailable" (the store cannot serve; retrying may help),
// no_space -> 507 "insufficient_storage" (the disk is full).
HttpError FromStatus(const Status& status);

HttpError BadRequest(std::string field, std::string message);
HttpError Unauthorized();
HttpError NotFound(std::string message);
HttpError FailedPrecondition(std::string field, std::string message);
HttpError PayloadTooLarge(std::string message);
// The request's `header` names something this server does not serve (tokenless mode's
// Host and Origin checks): 403 "forbidden", the header as the field.
HttpError Forbidden(std::string header, std::string message);
HttpError LengthRequired();
// 415 "unsupported_media_type", the header (Content-Type, Content-Encoding) as the field.
HttpError UnsupportedMediaType(std::string header, std::string message);
HttpError HeaderTooLarge(std::string message);
// 501 "not_implemented": a route this server (a cluster node) does not serve yet.
HttpError NotImplemented(std::string message);

// The JSON body of an error; `field` is written only when non-empty.
std::string ErrorBody(const HttpError& error);
// The body object {"code","message","field"} without the "error" wrapper (batch items).
std::string ErrorObject(const Status& status);

}  // namespace bucketd::server
