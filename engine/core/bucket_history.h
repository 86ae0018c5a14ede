#pragma once
// A bucket's history from the transition stream and the active members' entry instants
// (Engine::ReadHistory): sizes and the memberships opened and closed per step.
#include <vector>

#include "bucketd/engine.h"
#include "log/log.h"

namespace bucketd {

// Checks the query against the base (bounds named by field) and computes the steps from
// the transitions of `log` up to base.transition_seq. Thread-safe against one writer.
Status ComputeBucketHistory(const Log& log, const HistoryBase& base, const HistoryQuery& query,
                            std::vector<HistoryStep>* out);

}  // namespace bucketd
