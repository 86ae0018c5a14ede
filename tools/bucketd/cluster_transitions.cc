#include "cluster_transitions.h"

#include <simdjson.h>

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

void TransitionsFeed::Read(uint64_t after, uint64_t limit, TransitionFilter filter,
                           std::chrono::milliseconds wait, ExchangePtr ex) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    polls_.push_back(
        {after, limit, std::move(filter), std::chrono::steady_clock::now() + wait, std::move(ex)});
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
      } else if (poll.after == last && now < poll.deadline && !woken) {
        parked.push_back(std::move(poll));
      } else if (!Answer(poll, last, now < poll.deadline && !woken)) {
        parked.push_back(std::move(poll));  // nothing matched yet: waits on from its new cursor
      }
    }
    polls = std::move(parked);
  }
}

namespace {

// Whether `filter` matches a transition as the output stream holds it (SPEC §7 JSON).
bool Matches(const TransitionFilter& filter, std::string_view json) {
  if (filter.bucket_id.empty() && filter.kinds.empty()) return true;
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view bucket, kind;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS ||
      doc["bucketId"].get_string().get(bucket) != simdjson::SUCCESS ||
      doc["kind"].get_string().get(kind) != simdjson::SUCCESS) {
    return false;
  }
  if (!filter.bucket_id.empty() && bucket != filter.bucket_id) return false;
  return filter.kinds.empty() ||
         std::any_of(filter.kinds.begin(), filter.kinds.end(),
                     [kind](TransitionKind k) { return ToString(k) == kind; });
}

}  // namespace

bool TransitionsFeed::Answer(Poll& poll, uint64_t last, bool may_wait) {
  if (poll.after > last) {
    poll.ex->Respond(ErrorReply(FromStatus(Status::FailedPrecondition(
        "after", "beyond the end of this cluster's transitions (the last is " +
                     std::to_string(last) + "): the cursor belongs to another stream"))));
    return true;
  }
  std::vector<cluster::OutputMessage> page;
  if (poll.after < last) {
    if (tail_ == nullptr || tail_->next_seq() != poll.after + 1) {
      tail_ = output_->TailAll(poll.after + 1);
    }
    const uint64_t through = std::min(last, poll.after + poll.limit);
    if (Status s = output_->ReadAll(tail_.get(), through, poll.limit, &page); !s.ok()) {
      tail_.reset();
      poll.ex->Respond(ErrorReply(FromStatus(s)));
      return true;
    }
  }
  JsonWriter w;
  w.BeginObject().Key("transitions").BeginArray();
  uint64_t next = poll.after;
  size_t matched = 0;
  for (const cluster::OutputMessage& m : page) {
    next = m.stream_seq;
    if (!Matches(poll.filter, m.json)) continue;
    // {"seq":<the partition's>,... -> {"seq":<the stream's>,... (WriteTransition's first key).
    const size_t comma = m.json.find(',');
    w.Raw("{\"seq\":" + std::to_string(m.stream_seq) + m.json.substr(comma));
    ++matched;
  }
  if (matched == 0 && may_wait && next > poll.after) {
    poll.after = next;
    return false;
  }
  w.EndArray().Key("next").Uint(next).Key("lastSeq").Uint(last).EndObject();
  poll.ex->Respond(JsonReply(kHttpOk, w.Take()));
  return true;
}

}  // namespace bucketd::server
