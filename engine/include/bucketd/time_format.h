#pragma once
// Times and durations in the forms SPEC §1 accepts, and the one form outputs use.
#include <string>
#include <string_view>

#include "bucketd/status.h"
#include "bucketd/types.h"

namespace bucketd {

// RFC 3339, e.g. "2026-11-26T17:00:00Z", "2026-11-26T18:00:00.250+01:00".
Status ParseRfc3339(std::string_view text, TimeMs* out);
// Always UTC with milliseconds: "2026-11-26T17:00:00.000Z".
std::string FormatRfc3339(TimeMs time_ms);
// One or more "<number><unit>" parts, units ms s m h d w: "30d", "1d12h", "500ms". Must be > 0.
Status ParseDurationString(std::string_view text, TimeMs* out_ms);

}  // namespace bucketd
