#pragma once
// The process_* metrics every Prometheus client library exports on Linux, with the same names,
// types and sources (/proc/self/stat, /proc/self/fd, /proc/stat, RLIMIT_NOFILE), so the
// dashboards and alerts written for any such process work on bucketd unchanged.
#include <string>

namespace bucketd::server {

// Appends process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds and
// process_start_time_seconds to `out`; a metric whose source cannot be read is left out
// rather than reported as 0, which would read as a fact.
void AppendProcessMetrics(std::string* out);

}  // namespace bucketd::server
