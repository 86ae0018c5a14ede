#pragma once
// What the webhook delivery worker knows of a subscription (webhook_deliverer.h), apart from
// the worker so that the JSON and metrics code can show it without the HTTP client.
#include <cstdint>
#include <optional>
#include <string>

#include "bucketd/types.h"

namespace bucketd::server {

// What the worker knows of one subscription beyond its logged cursor.
struct DeliveryStatus {
  uint64_t cursor = 0;         // delivered through (in memory)
  uint64_t logged_cursor = 0;  // the cursor in the log
  uint64_t delivered = 0;      // transitions delivered since the server started
  uint64_t failed_attempts = 0;
  uint32_t failures_in_row = 0;
  std::string last_error;
  std::optional<TimeMs> last_error_at;    // engine time
  std::optional<TimeMs> next_attempt_at;  // engine time; set while backing off
  std::optional<TimeMs> last_delivered_at;
};

}  // namespace bucketd::server
