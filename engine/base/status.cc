#include "bucketd/status.h"

namespace bucketd {

std::string_view Status::code_name() const {
  switch (code_) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kInvalidArgument:
      return "invalid_argument";
    case StatusCode::kNotFound:
      return "not_found";
    case StatusCode::kAlreadyExists:
      return "already_exists";
    case StatusCode::kFailedPrecondition:
      return "failed_precondition";
    case StatusCode::kIoError:
      return "io_error";
    case StatusCode::kCorruption:
      return "corruption";
    case StatusCode::kNoSpace:
      return "no_space";
  }
  return "unknown";
}

std::string Status::ToString() const {
  std::string out(code_name());
  if (ok()) return out;
  if (!field_.empty()) {
    out += ": ";
    out += field_;
  }
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

Status Status::WithFieldPrefix(std::string_view prefix) const {
  if (ok() || prefix.empty()) return *this;
  std::string field(prefix);
  // An index ("[2]") attaches directly; a member name needs the dot.
  if (!field_.empty()) {
    if (field_.front() != '[') field += '.';
    field += field_;
  }
  return Status(code_, message_, std::move(field));
}

}  // namespace bucketd
