#pragma once
// The state digest: a hash of the canonical form of State (docs/design.md, "The state digest"),
// equal exactly when two folds of the same log prefix agree.
#include <string>

#include "engine/state/state.h"

namespace bucketd {

// 32 hex digits of XXH3-128 over the canonical serialization.
std::string ComputeDigest(const State& state);

}  // namespace bucketd
