// Fuzzes POST /v1/events body parsing as the server does it (tools/bucketd/json_requests.h:
// ParseEventsBody): every input is parsed both as a JSON body and as an NDJSON body.
//
// Beyond "no crash, no undefined behaviour, no leak", it checks the contract the server's
// reply is built on: every item of the body is accounted for exactly once (an event for the
// engine, or a refusal with its index), in body order; an event handed over as acceptable
// passes the engine's own ValidateEvent; a refused one goes to the engine only as a stand-in
// holding its idempotencyKey; a malformed NDJSON line refuses that item, not the body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bucketd/engine.h"
#include "bucketd/limits.h"
#include "engine/base/check.h"
#include "json_requests.h"

namespace bucketd {
namespace {

void CheckParsed(const server::ParsedEvents& parsed, bool ndjson) {
  if (parsed.over_limit) return;
  BUCKETD_CHECK(parsed.events.size() == parsed.indices.size());
  BUCKETD_CHECK(parsed.events.size() == parsed.refusals.size());
  BUCKETD_CHECK(parsed.items == parsed.events.size() + parsed.rejected.size());
  BUCKETD_CHECK(parsed.items <= kBatchItemsMax);
  BUCKETD_CHECK(!parsed.single || (!ndjson && parsed.items == 1));

  // Both index lists ascend; together they are 0 .. items-1, each once.
  std::vector<bool> seen(parsed.items, false);
  for (size_t i = 0; i < parsed.indices.size(); ++i) {
    const size_t index = parsed.indices[i];
    BUCKETD_CHECK(index < parsed.items && !seen[index]);
    BUCKETD_CHECK(i == 0 || parsed.indices[i - 1] < index);
    seen[index] = true;
  }
  for (size_t i = 0; i < parsed.rejected.size(); ++i) {
    const BatchItemError& error = parsed.rejected[i];
    BUCKETD_CHECK(error.index < parsed.items && !seen[error.index]);
    BUCKETD_CHECK(i == 0 || parsed.rejected[i - 1].index < error.index);
    BUCKETD_CHECK(!error.error.ok());
    seen[error.index] = true;
  }

  for (size_t i = 0; i < parsed.events.size(); ++i) {
    const EventInput& event = parsed.events[i];
    if (parsed.refusals[i].ok()) {
      const Status valid = ValidateEvent(event);
      BUCKETD_CHECK_MSG(valid.ok(), valid.ToString());
    } else {
      // The stand-in: just the key, which the engine reports as a duplicate or refuses.
      BUCKETD_CHECK(event.idempotency_key.has_value());
      BUCKETD_CHECK(event.user_id.empty() && event.event.empty());
      BUCKETD_CHECK(event.contact_properties.empty() && !event.email && !event.occurred_at_ms);
    }
  }
}

void FuzzOne(std::string_view body) {
  for (const bool ndjson : {false, true}) {
    server::ParsedEvents parsed;
    const Status status = server::ParseEventsBody(body, ndjson, &parsed);
    if (ndjson) BUCKETD_CHECK_MSG(status.ok(), status.ToString());
    if (status.ok()) {
      CheckParsed(parsed, ndjson);
    } else {
      BUCKETD_CHECK(status.field() == "body");
    }
  }
}

}  // namespace
}  // namespace bucketd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bucketd::FuzzOne(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
