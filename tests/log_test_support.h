#pragma once
// Helpers for the tests that drive log/ directly (log_test, read_ahead_test).
#include <memory>
#include <string>
#include <string_view>

#include <catch2/catch.hpp>

#include "log/log.h"

namespace bucketd::testing {

inline std::unique_ptr<Log> OpenLog(const std::string& path, bool sync = true,
                                    bool read_only = false) {
  std::unique_ptr<Log> log;
  Status s = Log::Open(LogOptions{path, sync, read_only}, &log);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return log;
}

// Whether the log has seen an idempotency key; the lookup itself must succeed.
inline bool SeenKey(const Log& log, std::string_view key) {
  bool seen = false;
  Status s = log.LookupIdempotencyKey(key, &seen);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return seen;
}

}  // namespace bucketd::testing
