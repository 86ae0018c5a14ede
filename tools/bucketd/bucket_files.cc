#include "bucket_files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "json_requests.h"

namespace bucketd::server {
namespace {

namespace fs = std::filesystem;

Status ReadFile(const fs::path& file, std::vector<DefinitionSource>* out) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::IoError("cannot read " + file.string());
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> definitions;
  Status status = ParseDefinitionsFile(text.str(), &definitions);
  if (!status.ok()) {
    return Status::InvalidArgument(file.string(), status.message());
  }
  for (size_t i = 0; i < definitions.size(); ++i) {
    std::string origin = file.string();
    if (definitions.size() > 1) origin += "[" + std::to_string(i) + "]";
    out->push_back({std::move(origin), std::move(definitions[i])});
  }
  return Status::Ok();
}

}  // namespace

Status ReadBucketDefinitions(const std::string& path, std::vector<DefinitionSource>* out) {
  std::error_code error;
  if (!fs::is_directory(path, error)) return ReadFile(path, out);
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(path, error)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") {
      files.push_back(entry.path());
    }
  }
  if (error) return Status::IoError("cannot list " + path + ": " + error.message());
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    Status status = ReadFile(file, out);
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

}  // namespace bucketd::server
