// Fuzzes the bucket definition parser (engine/definition/definition.h) and the public
// ReadBucketId (bucketd/engine.h) with arbitrary bytes as a definition body.
//
// Beyond "no crash, no undefined behaviour, no leak", it checks what the log relies on: the
// canonical JSON of an accepted definition parses back to an equal definition and is a fixed
// point (replay and every snapshot load parse it again), ReadBucketId accepts exactly what
// the parser accepts and with the same id, and an id taken from the path (PUT) stands in for
// an absent one only.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bucketd/engine.h"
#include "engine/base/check.h"
#include "engine/definition/definition.h"

namespace bucketd {
namespace {

constexpr std::string_view kPathId = "from-the-path";

void CheckCanonicalRoundTrip(const BucketDefinition& def) {
  const std::string canonical = ToCanonicalJson(def);
  BucketDefinition reparsed;
  const Status status = ParseBucketDefinition(canonical, &reparsed);
  BUCKETD_CHECK_MSG(status.ok(), status.ToString() + " on canonical " + canonical);
  BUCKETD_CHECK_MSG(reparsed == def, "canonical JSON parses to another definition: " + canonical);
  BUCKETD_CHECK_MSG(ToCanonicalJson(reparsed) == canonical, "canonical JSON is not a fixed point");
  BUCKETD_CHECK(CriteriaFingerprint(reparsed) == CriteriaFingerprint(def));
  if (def.criteria) BUCKETD_CHECK(IsTimeBased(*reparsed.criteria) == IsTimeBased(*def.criteria));
}

void FuzzOne(std::string_view json) {
  BucketDefinition def;
  const Status status = ParseBucketDefinition(json, &def);

  std::string id;
  const Status read = ReadBucketId(json, &id);
  BUCKETD_CHECK_MSG(read.ok() == status.ok(), read.ToString() + " vs " + status.ToString());

  BucketDefinition with_path;
  const Status path_status = ParseBucketDefinition(json, &with_path, kPathId);
  if (status.ok()) {
    BUCKETD_CHECK(id == def.id);
    BUCKETD_CHECK(path_status.ok() && with_path == def);
    (void)CheckNewBucketId(def.id);
    CheckCanonicalRoundTrip(def);
  } else if (path_status.ok()) {
    // Only a missing id may make the difference; the path's id then fills it in.
    BUCKETD_CHECK_MSG(status.field() == "id" && with_path.id == kPathId, status.ToString());
    CheckCanonicalRoundTrip(with_path);
  }
}

}  // namespace
}  // namespace bucketd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bucketd::FuzzOne(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
