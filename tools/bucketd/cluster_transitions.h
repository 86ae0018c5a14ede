#pragma once
// GET /v1/transitions on a cluster node (docs/cluster.md, "The output stream"): pages of the
// cluster's output stream in stream order, every partition's transitions, with long-polls.
// The stream's sequence is the cursor: gap-free and the same from every node, so a consumer
// may page through any node and fail over to another with its cursor. Each transition's `seq`
// is that stream sequence (the partition's own number stays in the output message's
// Bucketd-Transition-Seq header), so a client written for one node's stream (`after` = the
// last `seq` or `next`) reads the cluster's unchanged.
//
// One thread of its own reads the stream and answers; polls park here, not on a transport or
// router thread, and are answered when the stream passes their cursor or their wait ends.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bucketd/engine.h"
#include "engine/cluster/output_stream.h"
#include "http_request.h"

namespace bucketd::server {

class TransitionsFeed {
 public:
  explicit TransitionsFeed(std::unique_ptr<cluster::OutputStream> output);
  ~TransitionsFeed();
  TransitionsFeed(const TransitionsFeed&) = delete;
  TransitionsFeed& operator=(const TransitionsFeed&) = delete;

  // Answers with the transitions after stream sequence `after` that `filter` matches, among
  // at most `limit` looked at, waiting up to `wait` for a match when there is none yet;
  // `next` is the last sequence looked at, matched or not, as on a single node. 409 naming
  // `after` when it is beyond the stream's end (the cursor belongs to another stream); 503
  // when the stream cannot be read.
  void Read(uint64_t after, uint64_t limit, TransitionFilter filter, std::chrono::milliseconds wait,
            ExchangePtr ex);
  // Answers every parked poll now (shutdown) and every later one at once.
  void WakeAll();

 private:
  struct Poll {
    uint64_t after = 0;
    uint64_t limit = 0;
    TransitionFilter filter;
    std::chrono::steady_clock::time_point deadline;
    ExchangePtr ex;
  };
  // How often parked polls look at the stream's end (one stream-info request each time).
  static constexpr std::chrono::milliseconds kLookEvery{50};

  void Run();
  // Answers `poll` with the page after its cursor, the stream's last sequence being `last`;
  // false (and the poll's cursor moved past what it looked at) when nothing matched and the
  // poll may wait on.
  bool Answer(Poll& poll, uint64_t last, bool may_wait);

  std::unique_ptr<cluster::OutputStream> output_;
  // The reader of the last page, kept for a consumer asking for the next one.
  std::unique_ptr<cluster::SubjectTail> tail_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Poll> polls_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread thread_;
};

}  // namespace bucketd::server
