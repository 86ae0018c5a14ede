#pragma once
// --buckets PATH: bucket definitions read at start-up from a JSON file (one definition or an
// array of them) or from every *.json file of a directory, in file-name order.
#include <string>
#include <vector>

#include "bucketd/status.h"

namespace bucketd::server {

struct DefinitionSource {
  std::string origin;  // "path/file.json" or "path/file.json[2]", for error messages
  std::string json;
};

Status ReadBucketDefinitions(const std::string& path, std::vector<DefinitionSource>* out);

}  // namespace bucketd::server
