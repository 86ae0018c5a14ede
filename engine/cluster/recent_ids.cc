#include "engine/cluster/recent_ids.h"

#include <algorithm>

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

namespace {
void PutU64(uint64_t v, std::string* out) {
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(bytes, 8);
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
}  // namespace

void RecentIds::Encode(std::string* out) const {
  PutU64(static_cast<uint64_t>(now_), out);
  PutU64(by_instant_.size(), out);
  for (const Entry& e : by_instant_) {
    PutU64(e.id, out);
    PutU64(static_cast<uint64_t>(e.at), out);
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
  now_ = static_cast<TimeMs>(GetU64(data.data()));
  const uint64_t count = GetU64(data.data() + 8);
  if ((data.size() - kHeader) % 16 != 0 || (data.size() - kHeader) / 16 != count) return fail();
  for (uint64_t i = 0; i < count; ++i) {
    const char* p = data.data() + kHeader + i * 16;
    const Entry e{GetU64(p), static_cast<TimeMs>(GetU64(p + 8))};
    if (e.id == 0 || e.at > now_ || (!by_instant_.empty() && e.at < by_instant_.back().at) ||
        !ids_.insert(e.id).second) {
      return fail();
    }
    by_instant_.push_back(e);
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
