#include "engine_thread.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "prometheus.h"

namespace bucketd::server {
namespace {

constexpr std::chrono::milliseconds kSweepGapMin{1};

}  // namespace

EngineThread::EngineThread(std::unique_ptr<Engine> engine, Config config, ServerMetrics* metrics)
    : engine_(std::move(engine)),
      config_(config),
      metrics_(metrics),
      waiters_(engine_->LastTransitionSeq()) {}

EngineThread::~EngineThread() {
  if (thread_.joinable()) Stop();
}

void EngineThread::Start() {
  last_sweep_ = std::chrono::steady_clock::now();
  thread_ = std::thread([this] { Loop(); });
}

void EngineThread::Stop() {
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  CloseStream();
}

void EngineThread::CloseStream() { waiters_.Close(); }

Engine& EngineThread::StoppedEngine() { return *engine_; }

void EngineThread::Enqueue(WorkItem item) {
  {
    std::lock_guard lock(queue_mu_);
    queue_.push_back(std::move(item));
  }
  queue_cv_.notify_one();
}

void EngineThread::Loop() {
  std::vector<WorkItem> round;
  Round folded;     // answers of the round just folded
  Round in_flight;  // answers of the round being written
  for (;;) {
    {
      std::unique_lock lock(queue_mu_);
      if (queue_.empty() && !stopping_) {
        if (!in_flight.answers.empty()) {
          // A round is being written: wake for new work, folded while the write goes on,
          // or for the write's end, to answer the round at once.
          queue_cv_.wait(lock, [this] {
            return !queue_.empty() || stopping_ || groups_written_ >= groups_started_;
          });
        } else if (config_.background_sweeps) {
          queue_cv_.wait_for(lock, TimeUntilSweep(),
                             [this] { return !queue_.empty() || stopping_; });
        } else {
          queue_cv_.wait(lock, [this] { return !queue_.empty() || stopping_; });
        }
      }
      if (queue_.empty() && stopping_ && in_flight.answers.empty()) {
        // AwaitGroup can return before the log's thread has run the last group's
        // callback, which touches this object: let it finish first.
        queue_cv_.wait(lock, [this] { return groups_written_ >= groups_started_; });
        return;
      }
      round.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
      queue_.clear();
    }
    // Every item queued so far runs in this round and shares one log write and one fsync
    // (group commit). The write runs on the log's thread while the next round folds here
    // (pipelined); nobody is answered before their round is durable.
    folded.answers.clear();
    if (!round.empty()) {
      folded.folded_healthy = engine_->Health().ok();
      engine_->BeginGroup();
      for (WorkItem& item : round) folded.answers.push_back(item(*engine_));
      round.clear();
    }
    AnswerDurableRound(&in_flight);
    if (!folded.answers.empty()) {
      Status status = engine_->EndGroupPipelined([this, group = ++groups_started_] {
        {
          std::lock_guard lock(queue_mu_);
          // Callbacks can arrive out of order: AwaitGroup returns before the log's thread
          // has run the callback, so a later group's may run (synchronously) first.
          groups_written_ = std::max(groups_written_, group);
        }
        queue_cv_.notify_one();
      });
      if (!status.ok()) CommitFailed(status);
      std::swap(in_flight, folded);
    }
    if (config_.background_sweeps && TimeUntilSweep().count() <= 0) BackgroundSweep();
    PublishTransitions();
  }
}

void EngineThread::AnswerDurableRound(Round* round) {
  Status written = engine_->AwaitGroup();
  if (!written.ok()) CommitFailed(written);
  if (!round->folded_healthy) written = Status::Ok();
  for (Completion& done : round->answers) done(written);
  round->answers.clear();
}

void EngineThread::CommitFailed(const Status& status) {
  // Nothing of the failed round is acknowledged; the engine refuses later inputs and keeps
  // answering reads, and /healthz reports it. A restart replays the log.
  if (!commit_failed_.ok()) return;
  commit_failed_ = status;
  spdlog::critical("event=group_commit_failed error=\"{}\"", status.ToString());
}

std::chrono::milliseconds EngineThread::TimeUntilSweep() const {
  using std::chrono::milliseconds;
  auto since_last =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - last_sweep_);
  milliseconds wait = config_.sweep_interval - since_last;
  if (std::optional<TimeMs> due = engine_->NextDueMs()) {
    wait = std::min(wait, milliseconds(*due - engine_->Now()));
  }
  // At least kSweepGapMin between background sweeps, so a due item the sweep cannot clear
  // (it should not exist) costs a wake-up per millisecond, not a spinning core.
  return std::max(wait, kSweepGapMin - since_last);
}

void EngineThread::BackgroundSweep() {
  last_sweep_ = std::chrono::steady_clock::now();
  SweepResult result;
  Status status = engine_->Sweep(&result);
  if (!status.ok()) {
    spdlog::error("event=sweep_failed error=\"{}\"", status.ToString());
    return;
  }
  metrics_->RecordSweep(result.micros);
  if (result.transitions > 0) {
    spdlog::debug("event=sweep due={} transitions={} micros={}", result.due, result.transitions,
                  result.micros);
  }
}

void EngineThread::PublishTransitions() { waiters_.Publish(engine_->LastTransitionSeq()); }

}  // namespace bucketd::server
