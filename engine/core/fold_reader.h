#pragma once
// The queries of the public API (engine.h) answered from a fold's state: one home for what a
// count, a members page, a user's memberships or a bucket's metrics mean, used by the
// single engine and by a cluster node for each partition it owns.
//
// Threading: the fold's thread (a read of the time indices may sort their earliest page).
#include <cstddef>
#include <string_view>
#include <vector>

#include "bucketd/engine.h"
#include "engine/fold/fold.h"

namespace bucketd {

class FoldReader {
 public:
  explicit FoldReader(const Fold& fold) : fold_(fold) {}

  // Live buckets, by id.
  std::vector<BucketInfo> ListBuckets() const;
  Status GetBucket(std::string_view bucket_id, BucketInfo* out) const;
  Status Count(std::string_view bucket_id, uint64_t* count) const;
  Status Metrics(std::string_view bucket_id, BucketMetrics* out) const;
  // Active members by userId after `cursor` (empty: from the first), at most `limit`.
  Status Members(std::string_view bucket_id, std::string_view cursor, size_t limit,
                 MembersPage* out) const;
  // Past members (entryCount > 0, not active) by userId after `cursor`, at most `limit`.
  Status PastMembers(std::string_view bucket_id, std::string_view cursor, size_t limit,
                     PastMembersPage* out) const;
  Status GetMember(std::string_view bucket_id, std::string_view user_id, Member* out) const;
  Status UserMemberships(std::string_view user_id, std::vector<MembershipRecord>* out) const;
  // The contact and a summary of its events per name (Engine::GetUser).
  Status GetUser(std::string_view user_id, UserInfo* out) const;
  // The state's part of a bucket's history: the active members' entry instants, sorted.
  Status CaptureHistory(std::string_view bucket_id, TimeMs now, HistoryBase* out) const;
  // log_seq: the last record folded; `now`: the caller's.
  StateInfo State(TimeMs now) const;
  // Why the user is or is not a member of the bucket (explain.h), at `now` (no earlier than
  // the fold's own time).
  Status Explain(std::string_view bucket_id, std::string_view user_id, TimeMs now,
                 ExplainResult* out) const;
  // What a definition's criteria select at `now` (preview.h), the definition refused as a
  // define of it would be. A re-read of history goes through the fold's history source (a
  // cluster partition's stream: durable already, nothing to commit first).
  Status Preview(std::string_view definition_json, TimeMs now, PreviewResult* out) const;

  static Status UnknownBucket(std::string_view id);

 private:
  BucketInfo Info(const Bucket& b) const;

  const Fold& fold_;
};

}  // namespace bucketd
