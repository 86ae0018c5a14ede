#include "http_errors.h"

#include <utility>

#include "engine/base/json_writer.h"

namespace bucketd::server {
namespace {

void WriteErrorFields(JsonWriter& w, std::string_view code, std::string_view message,
                      std::string_view field) {
  w.BeginObject().Key("code").String(code).Key("message").String(message);
  if (!field.empty()) w.Key("field").String(field);
  w.EndObject();
}

}  // namespace

HttpError FromStatus(const Status& status) {
  HttpError error;
  error.code = std::string(status.code_name());
  error.message = status.message();
  error.field = status.field();
  switch (status.code()) {
    case StatusCode::kOk:
    case StatusCode::kInvalidArgument:
      error.http_status = kHttpBadRequest;
      break;
    case StatusCode::kNotFound:
      error.http_status = kHttpNotFound;
      break;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
      error.http_status = kHttpConflict;
      break;
    case StatusCode::kIoError:
    case StatusCode::kCorruption:
      error.http_status = kHttpUnavailable;
      error.code = "unavailable";
      error.message = status.ToString();
      break;
    case StatusCode::kNoSpace:
      error.http_status = kHttpInsufficientStorage;
      error.code = "insufficient_storage";
      break;
  }
  return error;
}

HttpError BadRequest(std::string field, std::string message) {
  return {kHttpBadRequest, "invalid_argument", std::move(message), std::move(field)};
}

HttpError Unauthorized() {
  return {kHttpUnauthorized, "unauthorized", "missing or wrong bearer token", ""};
}

HttpError NotImplemented(std::string message) {
  return {kHttpNotImplemented, "not_implemented", std::move(message), ""};
}

HttpError NotFound(std::string message) {
  return {kHttpNotFound, "not_found", std::move(message), ""};
}

HttpError FailedPrecondition(std::string field, std::string message) {
  return {kHttpConflict, "failed_precondition", std::move(message), std::move(field)};
}

HttpError PayloadTooLarge(std::string message) {
  return {kHttpPayloadTooLarge, "payload_too_large", std::move(message), ""};
}

HttpError Forbidden(std::string header, std::string message) {
  return {kHttpForbidden, "forbidden", std::move(message), std::move(header)};
}

HttpError LengthRequired() {
  return {kHttpLengthRequired, "length_required",
          "a request with a body needs Content-Length or Transfer-Encoding: chunked", ""};
}

HttpError UnsupportedMediaType(std::string header, std::string message) {
  return {kHttpUnsupportedMediaType, "unsupported_media_type", std::move(message),
          std::move(header)};
}

HttpError HeaderTooLarge(std::string message) {
  return {kHttpHeaderTooLarge, "header_too_large", std::move(message), ""};
}

std::string ErrorBody(const HttpError& error) {
  JsonWriter w;
  w.BeginObject().Key("error");
  WriteErrorFields(w, error.code, error.message, error.field);
  w.EndObject();
  return w.Take();
}

std::string ErrorObject(const Status& status) {
  JsonWriter w;
  WriteErrorFields(w, status.code_name(), status.message(), status.field());
  return w.Take();
}

}  // namespace bucketd::server
