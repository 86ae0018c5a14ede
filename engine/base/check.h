#pragma once
// Invariants, checked in every build (TigerBeetle's assertions): a broken one means the
// state is no longer a fold of the log, and going on would corrupt it quietly. So the
// process stops, loudly, with where and what. Not for bad input: that is a Status.
#include <string>

namespace bucketd {

[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const std::string& detail);

}  // namespace bucketd

// BUCKETD_CHECK(a == b); BUCKETD_CHECK_MSG(ok, "record " + std::to_string(seq)): the
// message is built only when the check fails.
#define BUCKETD_CHECK(condition)                                             \
  do {                                                                       \
    if (__builtin_expect(!(condition), 0)) {                                 \
      ::bucketd::CheckFailed(__FILE__, __LINE__, #condition, std::string()); \
    }                                                                        \
  } while (false)

#define BUCKETD_CHECK_MSG(condition, detail)                            \
  do {                                                                  \
    if (__builtin_expect(!(condition), 0)) {                            \
      ::bucketd::CheckFailed(__FILE__, __LINE__, #condition, (detail)); \
    }                                                                   \
  } while (false)
