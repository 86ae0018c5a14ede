#include "cluster_transitions.h"

#include <algorithm>
#include <string>
#include <utility>

#include "engine/base/json_writer.h"
#include "http_errors.h"

namespace bucketd::server {

TransitionsFeed::TransitionsFeed(std::unique_ptr<cluster::OutputStream> output)
    : output_(std::move(output)), thread_([this] { Run(); }) {}

TransitionsFeed::~TransitionsFeed() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void TransitionsFeed::Read(uint64_t after, uint64_t limit, std::chrono::milliseconds wait,
                           ExchangePtr ex) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    polls_.push_back({after, limit, std::chrono::steady_clock::now() + wait, std::move(ex)});
  }
  wake_.notify_all();
}

void TransitionsFeed::WakeAll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  wake_.notify_all();
}

void TransitionsFeed::Run() {
  std::vector<Poll> polls;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // New polls are looked at at once; parked ones every kLookEvery.
      wake_.wait_for(lock, kLookEvery, [this] { return stopping_ || !polls_.empty(); });
      std::move(polls_.begin(), polls_.end(), std::back_inserter(polls));
      polls_.clear();
      if (stopping_ && polls.empty()) return;
    }
    if (polls.empty()) continue;
    uint64_t last = 0;
    const Status s = output_->LastSeq(&last);
    const auto now = std::chrono::steady_clock::now();
    bool woken = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      woken = woken_ || stopping_;
    }
    std::vector<Poll> parked;
    for (Poll& poll : polls) {
      if (!s.ok()) {
        poll.ex->Respond(ErrorReply(FromStatus(s)));
      } else if (poll.after != last || now >= poll.deadline || woken) {
        Answer(poll, last);
      } else {
        parked.push_back(std::move(poll));
      }
    }
    polls = std::move(parked);
  }
}

void TransitionsFeed::Answer(const Poll& poll, uint64_t last) {
  if (poll.after > last) {
    return poll.ex->Respond(ErrorReply(FromStatus(Status::FailedPrecondition(
        "after", "beyond the end of this cluster's transitions (the last is " +
                     std::to_string(last) + "): the cursor belongs to another stream"))));
  }
  std::vector<cluster::OutputMessage> page;
  if (poll.after < last) {
    if (tail_ == nullptr || tail_->next_seq() != poll.after + 1) {
      tail_ = output_->TailAll(poll.after + 1);
    }
    const uint64_t through = std::min(last, poll.after + poll.limit);
    if (Status s = output_->ReadAll(tail_.get(), through, poll.limit, &page); !s.ok()) {
      tail_.reset();
      return poll.ex->Respond(ErrorReply(FromStatus(s)));
    }
  }
  JsonWriter w;
  w.BeginObject().Key("transitions").BeginArray();
  uint64_t next = poll.after;
  for (const cluster::OutputMessage& m : page) {
    // {"seq":<the partition's>,... -> {"seq":<the stream's>,... (WriteTransition's first key).
    const size_t comma = m.json.find(',');
    w.Raw("{\"seq\":" + std::to_string(m.stream_seq) + m.json.substr(comma));
    next = m.stream_seq;
  }
  w.EndArray().Key("next").Uint(next).Key("lastSeq").Uint(last).EndObject();
  poll.ex->Respond(JsonReply(kHttpOk, w.Take()));
}

}  // namespace bucketd::server
