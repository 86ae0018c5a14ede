// Fuzzes the snapshot payload decoder (engine/state/snapshot_codec.h: DecodeSnapshot) with
// arbitrary bytes as a payload whose file checksum passed, and hands an accepted state to
// Fold::Restore as a snapshot load does.
//
// Beyond "no crash, no undefined behaviour, no leak", for a payload that loads it checks the
// round trip: the loaded state encoded again (cut into pieces every few users) loads on one
// thread and on several to the same state digest (engine/state/digest.h); and that the fold
// can go on from it, as the engine does after a load: an event of a loaded user, a bucket
// re-enabled and a sweep far ahead run without tripping an invariant (BUCKETD_CHECK), so a
// state the decoder accepts is one the fold can keep folding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "engine/base/check.h"
#include "engine/fold/fold.h"
#include "engine/state/digest.h"
#include "engine/state/snapshot_codec.h"

namespace bucketd {
namespace {

// Small, so that even a small state is cut into several pieces for the parallel decode.
constexpr uint32_t kUsersPerMark = 2;

// Decodes and restores as a snapshot load does. The digest is taken after Restore, which
// sets the retention depths the digest reads.
Status Load(const uint8_t* data, size_t size, size_t threads, Fold* fold) {
  State state;
  if (Status s = DecodeSnapshot(data, size, &state, threads); !s.ok()) return s;
  const Status restored = fold->Restore(std::move(state));
  BUCKETD_CHECK_MSG(restored.ok(), restored.ToString());
  return Status::Ok();
}

std::string ReloadedDigest(const flatbuffers::DetachedBuffer& payload, size_t threads) {
  Fold fold;
  const Status status = Load(payload.data(), payload.size(), threads, &fold);
  BUCKETD_CHECK_MSG(status.ok(), "a re-encoded state fails to decode: " + status.ToString());
  return ComputeDigest(fold.state());
}

// Records stamped after the loaded state's now. A refusal is fine (a record the state makes
// invalid); an invariant broken inside the fold is not.
void FoldOn(Fold* fold) {
  constexpr TimeMs kDayMs = 24 * 60 * 60 * 1000;
  std::vector<Transition> transitions;
  const auto next = [&](RecordKind kind, TimeMs after_ms) {
    const State& state = fold->state();
    Record r;
    r.seq = state.applied_seq + 1;
    r.at = state.now > kNever - after_ms ? state.now : state.now + after_ms;
    r.kind = kind;
    return r;
  };
  const State& state = fold->state();
  if (!state.users.empty()) {
    Record event = next(RecordKind::kEvent, 1000);
    event.user_id = state.users.front()->id;
    event.event_name = state.event_names.size() > 0 ? state.event_names.Name(0) : "e";
    event.occurred_at = event.at;
    (void)fold->Apply(event, &transitions);
  }
  if (!state.buckets.empty()) {
    Record enable = next(RecordKind::kBucketEnable, 2000);
    enable.bucket_id = state.buckets.front()->def.id;
    (void)fold->Apply(enable, &transitions);
  }
  (void)fold->Apply(next(RecordKind::kSweep, 400 * kDayMs), &transitions);
}

void FuzzOne(const uint8_t* data, size_t size) {
  // Two threads: a payload with marks is decoded in pieces, as a large snapshot is.
  Fold fold;
  if (!Load(data, size, /*threads=*/2, &fold).ok()) return;
  const std::string digest = ComputeDigest(fold.state());

  flatbuffers::DetachedBuffer payload;
  const Status encoded = EncodeSnapshot(fold.state(), &payload, kUsersPerMark);
  BUCKETD_CHECK_MSG(encoded.ok(), encoded.ToString());
  BUCKETD_CHECK_MSG(ReloadedDigest(payload, 1) == digest, "the round trip changed the digest");
  BUCKETD_CHECK_MSG(ReloadedDigest(payload, 3) == digest, "a decode in pieces changed the digest");

  FoldOn(&fold);
}

}  // namespace
}  // namespace bucketd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bucketd::FuzzOne(data, size);
  return 0;
}
