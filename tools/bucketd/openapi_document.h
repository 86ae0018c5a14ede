#pragma once
// The OpenAPI 3.1 description of the sidecar's routes, docs/openapi.json, embedded at build
// time (tools/bucketd/embed_file.cmake): GET /v1/openapi.json serves exactly the repo's file.
#include <string_view>

namespace bucketd::server {

// The bytes of docs/openapi.json as of the build.
std::string_view OpenApiDocument();

}  // namespace bucketd::server
