#pragma once
// The seeded workload the replay suites fold many ways: few users, so definitions,
// toggles, deletes and manual adds (the generator's churn) touch the same contacts often,
// committed in groups of 3 so that groups and single inputs both occur.
#include <cstdint>

#include "tools/bucketctl/workload.h"

namespace bucketd::testing {

inline workload::Options Churny(uint64_t seed, uint64_t events, uint64_t users) {
  workload::Options w;
  w.users = users;
  w.events = events;
  w.seed = seed;
  w.batch = 3;
  return w;
}

}  // namespace bucketd::testing
