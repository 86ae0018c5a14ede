#pragma once
// Errors are values: every fallible call of the public API returns a Status.
#include <string>
#include <string_view>
#include <utility>

namespace bucketd {

enum class StatusCode {
  kOk,
  kInvalidArgument,     // bad input; `field` names the offending field path
  kNotFound,            // unknown bucket, member or user
  kAlreadyExists,       // create of an existing bucket id
  kFailedPrecondition,  // valid input refused by state: clock backwards, deleted contact, ...
  kIoError,             // the log or a snapshot could not be read or written
  kCorruption,          // stored bytes failed a checksum or verification
  kNoSpace,             // the disk holding the log or a snapshot is full
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string field, std::string message) {
    return Status(StatusCode::kInvalidArgument, std::move(message), std::move(field));
  }
  static Status NotFound(std::string message) {
    return Status(StatusCode::kNotFound, std::move(message), {});
  }
  static Status AlreadyExists(std::string message) {
    return Status(StatusCode::kAlreadyExists, std::move(message), {});
  }
  static Status FailedPrecondition(std::string field, std::string message) {
    return Status(StatusCode::kFailedPrecondition, std::move(message), std::move(field));
  }
  static Status IoError(std::string message) {
    return Status(StatusCode::kIoError, std::move(message), {});
  }
  static Status Corruption(std::string message) {
    return Status(StatusCode::kCorruption, std::move(message), {});
  }
  static Status NoSpace(std::string message) {
    return Status(StatusCode::kNoSpace, std::move(message), {});
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::string& field() const { return field_; }

  // Stable snake_case name of the code, used in error bodies: "invalid_argument", ...
  std::string_view code_name() const;
  // "invalid_argument: criteria.value: must be >= 0" — for logs and CLI output.
  std::string ToString() const;

  // Prefixes the field path, so nested parsers can report "criteria.conditions[2].value".
  Status WithFieldPrefix(std::string_view prefix) const;

 private:
  Status(StatusCode code, std::string message, std::string field)
      : code_(code), message_(std::move(message)), field_(std::move(field)) {}

  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string field_;
};

}  // namespace bucketd
