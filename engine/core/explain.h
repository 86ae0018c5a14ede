#pragma once
// Why a user is or is not a member of a bucket (SPEC §3b, GET /v1/buckets/{id}/explain/
// {userId}), computed from a fold's state without changing it (docs/design.md, "Explain").
//
// Threading: the fold's thread, like every read of its state.
#include <string_view>

#include "bucketd/engine.h"
#include "engine/fold/fold.h"

namespace bucketd {

// The legs come from CompiledCriteria::Explain (the evaluation's own per-leg outlooks), the
// blockers from the rules the fold applies (Fold::EntryAllowed; minDwell, maxDwell's rejoin
// block, reconcileJoins and enabled as membership.cc reads them). REQUIRES: now >=
// fold.state().now.
Status ExplainMembership(const Fold& fold, std::string_view bucket_id, std::string_view user_id,
                         TimeMs now, ExplainResult* out);

}  // namespace bucketd
