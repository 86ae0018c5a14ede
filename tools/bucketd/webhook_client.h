#pragma once
// One webhook POST with Boost.Beast's client: resolve, keep only the addresses the policy
// allows, connect, check the address actually connected to, write, read the answer. Every
// step has a deadline (a receiver that accepts and never answers costs at most `timeout`),
// the answer's body is read up to 64 KiB and dropped, and redirects are not followed (a
// 3xx is a failed delivery: following one would let a receiver point the server anywhere).
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "bucketd/status.h"
#include "engine/base/http_url.h"
#include "webhook_policy.h"

namespace bucketd::server {

struct WebhookResponse {
  int status = 0;  // the HTTP status, when one was read
};

// `headers` are added to Host, Content-Type (application/json), Content-Length and
// User-Agent. IoError (with what failed) when no status was read: resolution,
// refused addresses, connection, timeout, a malformed answer.
Status PostWebhook(const HttpUrl& url, const WebhookPolicy& policy,
                   const std::vector<std::pair<std::string, std::string>>& headers,
                   const std::string& body, std::chrono::milliseconds timeout,
                   WebhookResponse* response);

}  // namespace bucketd::server
