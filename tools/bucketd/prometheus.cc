#include "prometheus.h"

#include <spdlog/fmt/fmt.h>
#include <algorithm>

#include "tools/build_info.h"

namespace bucketd::server {
namespace {

// Label values escape backslash, double quote and newline (exposition format 0.0.4).
std::string EscapeLabel(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

void ServerMetrics::RecordRequest(std::string_view route, int http_status) {
  std::lock_guard lock(mu_);
  ++requests_[{std::string(route), http_status}];
}

void ServerMetrics::RecordSweep(int64_t micros) {
  auto bucket = std::lower_bound(kSweepBucketsMicros.begin(), kSweepBucketsMicros.end(), micros);
  std::lock_guard lock(mu_);
  ++sweep_counts_[bucket - kSweepBucketsMicros.begin()];
  sweep_micros_sum_ += micros;
  ++sweep_count_;
}

std::string ServerMetrics::Render(const EngineReport& report, TimeMs now_ms) const {
  std::string out;
  const EngineStats& stats = report.stats;

  // The info-metric convention: a constant 1 whose labels say what is running, so a query can
  // join on it and a dashboard can show a rollout.
  Header(out, "bucketd_build_info", "gauge", "The running build: version and commit.");
  out += fmt::format("bucketd_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
                     EscapeLabel(build_info::kVersion), EscapeLabel(build_info::kCommit));

  Header(out, "bucketd_events_total", "counter", "Events ingested since start, by outcome.");
  out += fmt::format("bucketd_events_total{{outcome=\"accepted\"}} {}\n", stats.events_accepted);
  out += fmt::format("bucketd_events_total{{outcome=\"duplicate\"}} {}\n", stats.events_duplicate);
  out += fmt::format("bucketd_events_total{{outcome=\"rejected\"}} {}\n", stats.events_rejected);

  Header(out, "bucketd_transitions_total", "counter", "Transitions emitted since start.");
  out += fmt::format("bucketd_transitions_total {}\n", stats.transitions_emitted);
  Header(out, "bucketd_transition_seq", "gauge", "The last transition seq of the stream.");
  out += fmt::format("bucketd_transition_seq {}\n", report.state.transition_seq);
  Header(out, "bucketd_log_seq", "gauge", "The last log position.");
  out += fmt::format("bucketd_log_seq {}\n", report.state.log_seq);
  Header(out, "bucketd_log_size_bytes", "gauge", "Size of the RocksDB log.");
  out += fmt::format("bucketd_log_size_bytes {}\n", stats.log_bytes);
  Header(out, "bucketd_contacts", "gauge", "Live contacts.");
  out += fmt::format("bucketd_contacts {}\n", stats.contacts);
  Header(out, "bucketd_state_pool_bytes", "gauge",
         "Memory mapped for the state's slots and users (not in malloc statistics).");
  out += fmt::format("bucketd_state_pool_bytes {}\n", stats.pool_bytes);
  Header(out, "bucketd_sweeps_total", "counter", "Sweeps run since start.");
  out += fmt::format("bucketd_sweeps_total {}\n", stats.sweeps);
  Header(out, "bucketd_sweep_due_items_total", "counter", "Due items popped by sweeps.");
  out += fmt::format("bucketd_sweep_due_items_total {}\n", stats.sweep_due_items);
  if (stats.last_snapshot_at_ms) {
    Header(out, "bucketd_snapshot_age_seconds", "gauge", "Time since the newest snapshot.");
    out += fmt::format("bucketd_snapshot_age_seconds {:.3f}\n",
                       static_cast<double>(now_ms - *stats.last_snapshot_at_ms) / 1000.0);
  }

  Header(out, "bucketd_bucket_members", "gauge", "Active members per bucket.");
  for (const BucketInfo& bucket : report.buckets) {
    out += fmt::format("bucketd_bucket_members{{bucket=\"{}\"}} {}\n", EscapeLabel(bucket.id),
                       bucket.counts.active);
  }
  Header(out, "bucketd_bucket_due_queue_depth", "gauge", "Entries in a bucket's time index.");
  for (const BucketInfo& bucket : report.buckets) {
    out += fmt::format("bucketd_bucket_due_queue_depth{{bucket=\"{}\"}} {}\n",
                       EscapeLabel(bucket.id), bucket.due_queue_depth);
  }

  std::lock_guard lock(mu_);
  Header(out, "bucketd_http_requests_total", "counter", "HTTP requests by route and status.");
  for (const auto& [key, count] : requests_) {
    out += fmt::format("bucketd_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n",
                       EscapeLabel(key.first), key.second, count);
  }
  Header(out, "bucketd_sweep_duration_micros", "histogram", "Sweep latency in microseconds.");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kSweepBucketsMicros.size(); ++i) {
    cumulative += sweep_counts_[i];
    out += fmt::format("bucketd_sweep_duration_micros_bucket{{le=\"{}\"}} {}\n",
                       kSweepBucketsMicros[i], cumulative);
  }
  cumulative += sweep_counts_.back();
  out += fmt::format("bucketd_sweep_duration_micros_bucket{{le=\"+Inf\"}} {}\n", cumulative);
  out += fmt::format("bucketd_sweep_duration_micros_sum {}\n", sweep_micros_sum_);
  out += fmt::format("bucketd_sweep_duration_micros_count {}\n", sweep_count_);
  return out;
}

}  // namespace bucketd::server
