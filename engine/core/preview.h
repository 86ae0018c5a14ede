#pragma once
// A bucket preview (SPEC §3b, POST /v1/buckets/preview): who a definition's criteria select
// now, computed from a fold's state without changing it (docs/design.md, "Preview").
//
// Threading: the fold's thread, like every read of its state.
#include <functional>

#include "bucketd/engine.h"
#include "engine/definition/definition.h"
#include "engine/fold/fold.h"

namespace bucketd {

// Evaluates `def`'s criteria (CompiledCriteria::Evaluate, the fold's own entry point) for
// every live contact at `now`, and compares the result with the active members of the
// stored bucket of the same id, if any. REQUIRES: now >= fold.state().now.
//
// A contact whose retained instants of an event name are fewer than the definition needs
// (a deeper threshold than any bucket's, on a name the contact sent more often than the
// fold keeps) cannot be decided from memory: those instants are re-read from the log
// through the fold's history source, after `before_reread` (which makes staged records
// durable: the source sees committed ones only). Without a source, such a preview is
// refused (FailedPrecondition) rather than answered with a count that may be wrong.
Status PreviewDefinition(const Fold& fold, const BucketDefinition& def, TimeMs now,
                         const std::function<Status()>& before_reread, PreviewResult* out);

}  // namespace bucketd
