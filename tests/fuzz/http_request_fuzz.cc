// Fuzzes the HTTP request path from the request body on: the first input byte picks a route,
// the rest is its body, parsed as that route's handler parses it (tools/bucketd/http_api.cc
// with json_requests.h, and the engine's definition parser for the bucket routes).
//
// The request itself (request line, headers, chunked and compressed transfer) is parsed by
// the HTTP layer, which is being rewritten on Boost.Beast (issue 21, "An HTTP layer that
// survives hostile clients"). Once it lands, this target takes the whole input as a raw
// request: feed it to a beast::http::request_parser<http::string_body> with the server's body
// limit, and dispatch what it accepts by method and target through the server's router to the
// parsers below, in place of the route byte. Until then the route byte stands in for routing.
//
// Beyond "no crash, no undefined behaviour, no leak", it checks what the handlers rely on:
// a bucket body's id as the server reads it back (DefinitionId) is the id the engine defines,
// and a parser that refuses names the field it refuses.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "bucketd/types.h"
#include "engine/base/check.h"
#include "engine/definition/definition.h"
#include "json_requests.h"

namespace bucketd {
namespace {

enum class Route : uint8_t {
  kPostEvents,        // POST /v1/events, application/json
  kPostEventsNdjson,  // POST /v1/events, application/x-ndjson
  kPostBucket,        // POST /v1/buckets
  kPutBucket,         // PUT /v1/buckets/{id}
  kPatchBucket,       // PATCH /v1/buckets/{id}
  kAddMember,         // POST /v1/buckets/{id}/members
  kClock,             // POST /v1/clock
  kCount,
};

constexpr std::string_view kPathId = "from-the-path";

void CheckRefusal(const Status& status) {
  BUCKETD_CHECK_MSG(status.ok() || !status.field().empty() || !status.message().empty(),
                    "a refusal says nothing");
}

// What HttpApi::DefineBucket does before the engine call, and the engine's parse.
void DefineBucket(std::string_view body, std::optional<std::string_view> path_id) {
  const std::string id = path_id ? std::string(*path_id) : server::DefinitionId(body);
  BucketDefinition def;
  const Status status = ParseBucketDefinition(body, &def, path_id);
  CheckRefusal(status);
  if (!status.ok()) return;
  if (!CheckNewBucketId(def.id).ok()) return;
  // The engine refuses a body id that differs from the path's; otherwise the server reads
  // back the bucket it defined.
  if (path_id && def.id != *path_id) return;
  BUCKETD_CHECK_MSG(id == def.id, "the server would read back bucket '" + id +
                                      "' after defining '" + def.id + "'");
}

void FuzzOne(Route route, std::string_view body) {
  switch (route) {
    case Route::kPostEvents:
    case Route::kPostEventsNdjson: {
      server::ParsedEvents parsed;
      const Status status =
          server::ParseEventsBody(body, route == Route::kPostEventsNdjson, &parsed);
      CheckRefusal(status);
      for (const BatchItemError& item : parsed.rejected) CheckRefusal(item.error);
      break;
    }
    case Route::kPostBucket:
      DefineBucket(body, std::nullopt);
      break;
    case Route::kPutBucket:
      DefineBucket(body, kPathId);
      break;
    case Route::kPatchBucket: {
      bool enabled = false;
      CheckRefusal(server::ParseEnabledPatch(body, &enabled));
      break;
    }
    case Route::kAddMember: {
      std::string user_id;
      CheckRefusal(server::ParseAddMemberRequest(body, &user_id));
      break;
    }
    case Route::kClock: {
      TimeMs now_ms = 0;
      CheckRefusal(server::ParseClockRequest(body, &now_ms));
      break;
    }
    case Route::kCount:
      break;
  }
}

}  // namespace
}  // namespace bucketd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto route =
      static_cast<bucketd::Route>(data[0] % static_cast<uint8_t>(bucketd::Route::kCount));
  bucketd::FuzzOne(route, std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  return 0;
}
