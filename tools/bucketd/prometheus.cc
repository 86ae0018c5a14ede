#include "prometheus.h"

#include <spdlog/fmt/fmt.h>
#include <algorithm>

#include "process_metrics.h"
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

// One histogram's series: cumulative `_bucket`s (the last +Inf), `_sum` and `_count`, with
// `labels` ("route=\"x\",status=\"200\"" or empty) on each.
template <size_t N>
void HistogramSeries(std::string& out, std::string_view name, std::string_view labels,
                     const std::array<double, N>& bounds, const std::array<uint64_t, N + 1>& counts,
                     double sum) {
  const std::string before_le = labels.empty() ? "" : std::string(labels) + ",";
  const std::string braces = labels.empty() ? "" : "{" + std::string(labels) + "}";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < N; ++i) {
    cumulative += counts[i];
    out += fmt::format("{}_bucket{{{}le=\"{}\"}} {}\n", name, before_le, bounds[i], cumulative);
  }
  cumulative += counts[N];
  out += fmt::format("{}_bucket{{{}le=\"+Inf\"}} {}\n", name, before_le, cumulative);
  out += fmt::format("{}_sum{} {}\n", name, braces, sum);
  out += fmt::format("{}_count{} {}\n", name, braces, cumulative);
}

}  // namespace

void ServerMetrics::RecordRequest(std::string_view route, int http_status, double seconds) {
  // lower_bound: a value equal to a bound falls in that bucket (`le`: less or equal).
  const size_t bucket =
      std::lower_bound(kRequestBucketsSeconds.begin(), kRequestBucketsSeconds.end(), seconds) -
      kRequestBucketsSeconds.begin();
  std::lock_guard lock(mu_);
  RequestHistogram& histogram = requests_[{std::string(route), http_status}];
  ++histogram.counts[bucket];
  histogram.seconds_sum += seconds;
  ++histogram.count;
}

void ServerMetrics::RecordSweep(int64_t micros) {
  const double seconds = static_cast<double>(micros) / 1e6;
  const size_t bucket =
      std::lower_bound(kSweepBucketsSeconds.begin(), kSweepBucketsSeconds.end(), seconds) -
      kSweepBucketsSeconds.begin();
  std::lock_guard lock(mu_);
  ++sweep_counts_[bucket];
  sweep_micros_sum_ += micros;
  ++sweep_count_;
}

std::string ServerMetrics::Render(const EngineReport& report, TimeMs now_ms) const {
  std::string out;
  const EngineStats& stats = report.stats;

  Header(out, "bucketd_events_total", "counter", "Events ingested since start, by outcome.");
  out += fmt::format("bucketd_events_total{{outcome=\"accepted\"}} {}\n", stats.events_accepted);
  out += fmt::format("bucketd_events_total{{outcome=\"duplicate\"}} {}\n", stats.events_duplicate);
  out += fmt::format("bucketd_events_total{{outcome=\"rejected\"}} {}\n", stats.events_rejected);

  Header(out, "bucketd_transitions_total", "counter", "Transitions emitted since start.");
  out += fmt::format("bucketd_transitions_total {}\n", stats.transitions_emitted);
  Header(out, "bucketd_transition_seq", "gauge", "The last transition seq of the stream.");
  out += fmt::format("bucketd_transition_seq {}\n", stats.transition_seq);
  Header(out, "bucketd_log_seq", "gauge", "The last log position.");
  out += fmt::format("bucketd_log_seq {}\n", stats.log_seq);
  Header(out, "bucketd_log_size_bytes", "gauge", "Size of the RocksDB log.");
  out += fmt::format("bucketd_log_size_bytes {}\n", stats.log_bytes);
  Header(out, "bucketd_contacts", "gauge", "Live contacts.");
  out += fmt::format("bucketd_contacts {}\n", stats.contacts);
  Header(out, "bucketd_state_pool_bytes", "gauge",
         "Memory mapped for the state's slots and users (not in malloc statistics).");
  out += fmt::format("bucketd_state_pool_bytes {}\n", stats.pool_bytes);
  Header(out, "bucketd_log_memory_bytes", "gauge",
         "Memory the RocksDB log holds: memtables, table readers and block cache.");
  out += fmt::format("bucketd_log_memory_bytes {}\n", stats.log_memory_bytes);
  Header(out, "bucketd_sweeps_total", "counter", "Sweeps run since start.");
  out += fmt::format("bucketd_sweeps_total {}\n", stats.sweeps);
  Header(out, "bucketd_sweep_due_items_total", "counter", "Due items popped by sweeps.");
  out += fmt::format("bucketd_sweep_due_items_total {}\n", stats.sweep_due_items);
  Header(out, "bucketd_sweep_phase_seconds_total", "counter",
         "Sweep time on the engine thread by phase: fold (pop, re-assess, encode the "
         "transitions into the log's next write), stage (the sweep's record).");
  out += fmt::format("bucketd_sweep_phase_seconds_total{{phase=\"fold\"}} {:.6f}\n",
                     static_cast<double>(stats.sweep_fold_nanos) / 1e9);
  out += fmt::format("bucketd_sweep_phase_seconds_total{{phase=\"stage\"}} {:.6f}\n",
                     static_cast<double>(stats.sweep_stage_nanos) / 1e9);
  Header(out, "bucketd_log_commits_total", "counter", "Log writes (group commits).");
  out += fmt::format("bucketd_log_commits_total {}\n", stats.log_commits);
  Header(out, "bucketd_log_write_bytes_total", "counter", "Bytes of the log's writes.");
  out += fmt::format("bucketd_log_write_bytes_total {}\n", stats.log_write_bytes);
  Header(out, "bucketd_log_write_seconds_total", "counter",
         "Time in the log's writes, fsync included.");
  out += fmt::format("bucketd_log_write_seconds_total {:.6f}\n",
                     static_cast<double>(stats.log_write_nanos) / 1e9);
  Header(out, "bucketd_log_fsync_seconds_total", "counter",
         "Time in the log's fsyncs (sync durability).");
  out += fmt::format("bucketd_log_fsync_seconds_total {:.6f}\n",
                     static_cast<double>(stats.log_fsync_nanos) / 1e9);
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

  {
    std::lock_guard lock(mu_);
    Header(out, "bucketd_sweep_duration_seconds", "histogram", "Sweep latency.");
    HistogramSeries(out, "bucketd_sweep_duration_seconds", "", kSweepBucketsSeconds, sweep_counts_,
                    static_cast<double>(sweep_micros_sum_) / 1e6);
  }
  out += RenderServer();
  return out;
}

std::string ServerMetrics::RenderServer() const {
  std::string out;
  // The info-metric convention: a constant 1 whose labels say what is running, so a query can
  // join on it and a dashboard can show a rollout.
  Header(out, "bucketd_build_info", "gauge", "The running build: version and commit.");
  out += fmt::format("bucketd_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
                     EscapeLabel(build_info::kVersion), EscapeLabel(build_info::kCommit));
  {
    std::lock_guard lock(mu_);
    Header(out, "bucketd_http_requests_total", "counter", "HTTP requests by route and status.");
    for (const auto& [key, histogram] : requests_) {
      out += fmt::format("bucketd_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n",
                         EscapeLabel(key.first), key.second, histogram.count);
    }
    Header(out, "bucketd_http_request_duration_seconds", "histogram",
           "HTTP request latency, from the request parsed to the reply written, by route and "
           "status.");
    for (const auto& [key, histogram] : requests_) {
      HistogramSeries(out, "bucketd_http_request_duration_seconds",
                      fmt::format("route=\"{}\",status=\"{}\"", EscapeLabel(key.first), key.second),
                      kRequestBucketsSeconds, histogram.counts, histogram.seconds_sum);
    }
  }
  AppendProcessMetrics(&out);
  return out;
}

}  // namespace bucketd::server
