#include "engine/cluster/recent_ids.h"

#include <algorithm>

#include "engine/cluster/fixed64.h"

namespace bucketd::cluster {

void RecentIds::Expire(TimeMs now) {
  while (!by_instant_.empty() && by_instant_.front().at <= now - window_ms_) {
    ids_.erase(by_instant_.front().id);
    by_instant_.pop_front();
  }
}

bool RecentIds::SeenElseRemember(uint64_t id, TimeMs at) {
  if (window_ms_ == 0) return false;
  now_ = std::max(now_, at);
  Expire(now_);
  if (id == 0) return false;
  if (!ids_.insert(id).second) return true;
  by_instant_.push_back(Entry{id, now_});
  return false;
}

void RecentIds::Encode(std::string* out) const {
  PutFixed64(static_cast<uint64_t>(now_), out);
  PutFixed64(by_instant_.size(), out);
  for (const Entry& e : by_instant_) {
    PutFixed64(e.id, out);
    PutFixed64(static_cast<uint64_t>(e.at), out);
  }
}

Status RecentIds::Decode(std::string_view data) {
  by_instant_.clear();
  ids_.clear();
  auto fail = [this] {
    now_ = 0;
    by_instant_.clear();
    ids_.clear();
    return Status::Corruption("the snapshot's record ids do not decode");
  };
  constexpr size_t kHeader = 16;  // now, count
  if (data.size() < kHeader) return fail();
  now_ = static_cast<TimeMs>(GetFixed64(data));
  const uint64_t count = GetFixed64(data.substr(8));
  if ((data.size() - kHeader) % 16 != 0 || (data.size() - kHeader) / 16 != count) return fail();
  for (uint64_t i = 0; i < count; ++i) {
    const std::string_view entry = data.substr(kHeader + i * 16, 16);
    const Entry e{GetFixed64(entry), static_cast<TimeMs>(GetFixed64(entry.substr(8)))};
    if (e.id == 0 || e.at > now_ || (!by_instant_.empty() && e.at < by_instant_.back().at) ||
        !ids_.insert(e.id).second) {
      return fail();
    }
    by_instant_.push_back(e);
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
