#include "process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <spdlog/fmt/fmt.h>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>
#include <vector>

namespace bucketd::server {
namespace {

// The fields of /proc/self/stat after the command name, which is in parentheses and may itself
// hold spaces and parentheses: the fields start after its last ')'. Index 0 is field 3
// (state) of proc(5).
std::vector<std::string> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  const size_t name_end = line.rfind(')');
  if (name_end == std::string::npos) return {};
  std::istringstream rest(line.substr(name_end + 1));
  std::vector<std::string> fields;
  for (std::string field; rest >> field;) fields.push_back(field);
  return fields;
}

// proc(5) field numbers (1-based, as the manual numbers them).
constexpr size_t kFirstField = 3;
constexpr size_t kUtimeField = 14;
constexpr size_t kStimeField = 15;
constexpr size_t kStartTimeField = 22;
constexpr size_t kVsizeField = 23;
constexpr size_t kRssField = 24;

std::optional<uint64_t> Field(const std::vector<std::string>& fields, size_t number) {
  const size_t index = number - kFirstField;
  if (index >= fields.size()) return std::nullopt;
  try {
    return std::stoull(fields[index]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The boot time, seconds since the epoch: /proc/stat's btime line.
std::optional<uint64_t> BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      uint64_t seconds = 0;
      if (in >> seconds) return seconds;
      return std::nullopt;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return std::nullopt;
}

std::optional<uint64_t> OpenFds() {
  std::error_code ec;
  uint64_t count = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++count;
  }
  if (ec) return std::nullopt;
  return count;
}

void Metric(std::string* out, std::string_view name, std::string_view type, std::string_view help,
            auto value) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
}

}  // namespace

void AppendProcessMetrics(std::string* out) {
  const std::vector<std::string> stat = StatFields();
  const long ticks_per_second = sysconf(_SC_CLK_TCK);
  const long page_bytes = sysconf(_SC_PAGESIZE);
  const auto utime = Field(stat, kUtimeField);
  const auto stime = Field(stat, kStimeField);
  if (utime && stime && ticks_per_second > 0) {
    Metric(out, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.",
           static_cast<double>(*utime + *stime) / static_cast<double>(ticks_per_second));
  }
  if (const auto rss_pages = Field(stat, kRssField); rss_pages && page_bytes > 0) {
    Metric(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           *rss_pages * static_cast<uint64_t>(page_bytes));
  }
  if (const auto vsize = Field(stat, kVsizeField)) {
    Metric(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", *vsize);
  }
  if (const auto fds = OpenFds()) {
    Metric(out, "process_open_fds", "gauge", "Number of open file descriptors.", *fds);
  }
  if (rlimit limit{}; getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    // The soft limit, the one that makes open() fail (RLIM_INFINITY prints as its value, as the
    // client libraries do).
    Metric(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
           static_cast<uint64_t>(limit.rlim_cur));
  }
  const auto start_ticks = Field(stat, kStartTimeField);
  const auto boot_seconds = BootTimeSeconds();
  if (start_ticks && boot_seconds && ticks_per_second > 0) {
    Metric(out, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.",
           static_cast<double>(*boot_seconds) +
               static_cast<double>(*start_ticks) / static_cast<double>(ticks_per_second));
  }
}

}  // namespace bucketd::server
