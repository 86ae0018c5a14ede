#include "engine/base/check.h"

#include <cstdio>
#include <cstdlib>

namespace bucketd {

void CheckFailed(const char* file, int line, const char* condition, const std::string& detail) {
  std::fprintf(stderr, "bucketd: invariant violated at %s:%d: %s%s%s\n", file, line, condition,
               detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace bucketd
