#include "engine/core/preview.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <queue>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_map.h>

#include "bucketd/limits.h"
#include "engine/fold/criteria_eval.h"

namespace bucketd {
namespace {

// What the preview reads of a contact is what the fold keeps for every contact whatever the
// definitions: properties, and per event name the count, first/last instant and the newest
// instants (deepened from the log below when a threshold needs more). A leg that reads
// anything else (data the fold retains only once a definition references it) must be added
// here with how the preview obtains it: the switches have no default, so a new type or
// check does not compile until it is.
Status CheckPreviewable(const Criteria& c, const std::string& path) {
  switch (c.type) {
    case CriteriaType::kProperty:
      return Status::Ok();
    case CriteriaType::kEvent:
      switch (c.check) {
        case EventCheck::kExists:
        case EventCheck::kNotExists:
        case EventCheck::kCount:
        case EventCheck::kFirstSeen:
          // A `where` reads a derived stream: kept when a bucket reads it, else re-read
          // from the log below (missing streams).
          return Status::Ok();
        case EventCheck::kSum:
        case EventCheck::kAvg:
        case EventCheck::kMin:
        case EventCheck::kMax:
        case EventCheck::kDistinct:
          return Status::Ok();  // a derived stream, as a `where`
      }
      return Status::FailedPrecondition(path, "this check cannot be previewed yet");
    case CriteriaType::kSequence:  // a derived stream, as a `where`
    case CriteriaType::kBucket:    // reads the inner bucket's memberships, which are kept
      return Status::Ok();
    case CriteriaType::kComposite:
      for (size_t i = 0; i < c.conditions.size(); ++i) {
        const std::string child = path + ".conditions[" + std::to_string(i) + "]";
        if (Status s = CheckPreviewable(c.conditions[i], child); !s.ok()) return s;
      }
      return Status::Ok();
  }
  return Status::FailedPrecondition(path, "this criteria type cannot be previewed yet");
}

// A (contact, event name) whose retained instants are too few for the definition.
struct Shallow {
  uint32_t user_index;
  uint32_t name_id;
  friend bool operator==(const Shallow&, const Shallow&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Shallow& s) {
    return H::combine(std::move(h), s.user_index, s.name_id);
  }
};

// What a contact's events would have put in the derived streams no bucket reads yet (a new
// `where`, aggregate or sequence), re-read from the log.
struct MissingStreams {
  std::vector<EventHistory> filtered;  // sorted by name_id (the stream id)
  LegHistories legs;
};

bool ActiveMemberOf(const User& user, uint32_t bucket) {
  for (const Slot* slot : user.slots) {
    if (slot->bucket == bucket) return slot->active;
  }
  return false;
}

}  // namespace

Status PreviewDefinition(const Fold& fold, const BucketDefinition& def, TimeMs now,
                         const std::function<Status()>& before_reread, PreviewResult* out) {
  const auto start = std::chrono::steady_clock::now();
  *out = PreviewResult{};
  if (!def.criteria) {
    return Status::InvalidArgument("kind", "a preview needs a dynamic bucket's criteria");
  }
  if (Status s = CheckPreviewable(*def.criteria, "criteria"); !s.ok()) return s;
  const State& state = fold.state();

  // Compiled against copies of the interners: a name or key the state never saw gets an id
  // past the state's, which no contact has, and the state stays untouched.
  Interner names = state.event_names;
  Interner keys = state.property_keys;
  std::vector<uint32_t> depth;  // what the criteria read of each name: filled in below
  // A bucket leg's inner bucket exists (checked as for a define).
  const auto bucket_index = [&](std::string_view id) { return fold.bucket(id)->index; };
  const CompiledCriteria criteria(*def.criteria, &names, &keys, &depth, bucket_index);
  // As a definition would see it: the depth every bucket needs, deepened by this one's.
  depth = state.history_depth;
  depth.resize(std::max<size_t>(depth.size(), names.size()), 0);
  std::vector<std::pair<uint32_t, uint32_t>> needs;  // (name id, depth) of names contacts have
  for (const auto& [name_id, need] : criteria.name_depths()) {
    depth[name_id] = std::max(depth[name_id], need);
    if (name_id < state.event_names.size()) needs.emplace_back(name_id, need);
  }
  // One entry per name, with the deepest need of its legs.
  std::sort(needs.begin(), needs.end(), std::greater<>());
  needs.erase(std::unique(needs.begin(), needs.end(),
                          [](const auto& a, const auto& b) { return a.first == b.first; }),
              needs.end());

  // Contacts whose retained instants cannot decide a leg: fewer than it needs, and not all
  // of the contact's events of that name.
  absl::flat_hash_map<Shallow, std::vector<TimeMs>> shallow;
  std::vector<bool> deep_name(state.event_names.size(), false);
  if (!needs.empty()) {
    for (const User* user : state.users) {
      if (user->deleted) continue;
      for (const auto& [name_id, need] : needs) {
        const EventHistory* h = FindHistory(*user, name_id);
        if (h == nullptr || h->newest.size() >= need || h->newest.size() == h->total_count()) {
          continue;
        }
        shallow.try_emplace(Shallow{user->index, name_id});
        deep_name[name_id] = true;
      }
    }
  }
  // The derived streams the criteria read that no bucket reads (so nothing keeps them):
  // rebuilt per contact from the log, as defining the bucket would (Fold::RestoreStreams).
  std::vector<bool> registered(names.size(), false);
  for (const auto& specs : state.streams_by_event) {
    for (const StreamSpec& spec : specs) registered[spec.id] = true;
  }
  std::vector<std::vector<StreamSpec>> missing_by_name;  // by event name id
  for (const CompiledCriteria::StreamUse& use : criteria.streams()) {
    if (registered[use.spec.id] || use.name_id >= state.event_names.size()) continue;
    if (missing_by_name.size() <= use.name_id) missing_by_name.resize(use.name_id + 1);
    missing_by_name[use.name_id].push_back(use.spec);
  }
  absl::flat_hash_map<uint32_t, MissingStreams> missing;  // by user index
  const bool reread_streams = !missing_by_name.empty();

  if (!shallow.empty() || reread_streams) {
    if (!fold.history_source()) {
      return Status::FailedPrecondition(
          "criteria",
          "the preview needs more of some contacts' past events than memory keeps, and this "
          "engine cannot re-read its log; define the bucket to have them re-read");
    }
    if (Status s = before_reread(); !s.ok()) return s;
    Status s = fold.history_source()(state.applied_seq + 1, [&](std::span<const Record> run) {
      for (const Record& r : run) {
        if (r.kind != RecordKind::kEvent) continue;
        const uint32_t name_id = state.event_names.Find(r.event_name);
        if (name_id < missing_by_name.size() && !missing_by_name[name_id].empty()) {
          const User* user = fold.user(r.user_id);
          if (user == nullptr || user->deleted) continue;
          const TimeMs at = std::min(r.occurred_at, r.at);
          MissingStreams* streams = nullptr;
          for (const StreamSpec& spec : missing_by_name[name_id]) {
            if (!FilterHolds(spec.where, r.event_patch())) continue;
            if (streams == nullptr) streams = &missing[user->index];
            switch (spec.kind) {
              case StreamSpec::Kind::kFiltered:
                RecordInHistories(&streams->filtered, spec.id, at,
                                  std::max(DepthOf(depth, spec.id), kNewestKeptMin));
                break;
              case StreamSpec::Kind::kAggregate:
              case StreamSpec::Kind::kDistinct:
                for (const PropertyPatch& p : r.event_patch()) {
                  if (p.key == spec.property) AddContribution(&streams->legs, spec, p.value, at);
                }
                break;
              case StreamSpec::Kind::kSequence:
                AddSequenceOccurrence(&streams->legs, spec, at);
                break;
            }
          }
        }
        if (name_id >= deep_name.size() || !deep_name[name_id]) continue;
        const User* user = fold.user(r.user_id);
        if (user == nullptr || user->deleted) continue;
        auto it = shallow.find(Shallow{user->index, name_id});
        if (it == shallow.end()) continue;
        // As the fold records it (Fold::RestoreHistory): clamped to the record's instant.
        // Only the newest `depth` are read: past twice that, the older ones go, so what a
        // contact holds here stays bounded by the depth, not by its events.
        std::vector<TimeMs>& instants = it->second;
        instants.push_back(std::min(r.occurred_at, r.at));
        const size_t keep = std::max<uint32_t>(depth[name_id], 1);
        if (instants.size() >= 2 * keep) {
          std::nth_element(instants.begin(), instants.end() - keep, instants.end());
          instants.erase(instants.begin(), instants.end() - keep);
        }
      }
    });
    if (!s.ok()) return s;
  }

  // Against the stored bucket: entering = selected - selected members, leaving = members -
  // selected members (every member is a live contact). Only a selected contact's slots are
  // looked at: the member index's sorted view would first have to settle every change since
  // its last read (a sort of them all).
  const Bucket* stored = fold.bucket(def.id);
  out->stored = stored != nullptr;
  uint64_t selected_members = 0;

  // The sample: the smallest ids seen so far, the largest of them on top.
  std::priority_queue<std::string_view> sample;
  User scratch;  // a contact with its re-read instants, when it has some
  for (const User* user : state.users) {
    if (user->deleted) continue;
    const User* subject = user;
    if (reread_streams) {
      if (auto it = missing.find(user->index); it != missing.end()) {
        CopyUser(*user, &scratch);
        subject = &scratch;
        ++out->history_reread_users;
        MissingStreams& streams = it->second;
        // Stream ids are past every id the contact has (new interned keys) or ids no
        // bucket reads (whose stale histories the rebuilt ones replace).
        for (EventHistory& h : streams.filtered) {
          const uint32_t id = h.name_id();
          scratch.events.erase(
              std::remove_if(scratch.events.begin(), scratch.events.end(),
                             [&](const EventHistory& e) { return e.name_id() == id; }),
              scratch.events.end());
          scratch.events.push_back(std::move(h));
        }
        std::sort(
            scratch.events.begin(), scratch.events.end(),
            [](const EventHistory& a, const EventHistory& b) { return a.name_id() < b.name_id(); });
        // The rebuilt histories replace the kept ones of their streams.
        for (AggregateHistory& rebuilt : streams.legs.aggregates()) {
          scratch.legs.FindOrInsertAggregate(rebuilt.stream_id()) = std::move(rebuilt);
        }
        for (SequenceHistory& rebuilt : streams.legs.sequences()) {
          scratch.legs.FindOrInsertSequence(rebuilt.stream_id()) = std::move(rebuilt);
        }
      }
    }
    for (const auto& [name_id, need] : needs) {
      if (shallow.empty()) break;
      auto it = shallow.find(Shallow{user->index, name_id});
      if (it == shallow.end()) continue;
      if (subject != &scratch) {
        CopyUser(*user, &scratch);
        subject = &scratch;
        ++out->history_reread_users;
      }
      std::vector<TimeMs>& instants = it->second;
      std::sort(instants.begin(), instants.end());
      const size_t keep = std::min<size_t>(instants.size(), depth[name_id]);
      for (EventHistory& h : scratch.events) {
        if (h.name_id() == name_id) {
          h.newest.assign(std::span<const TimeMs>(instants).last(keep));
        }
      }
    }
    if (!criteria.Evaluate(*subject, now)) continue;
    ++out->count;
    if (stored != nullptr && ActiveMemberOf(*user, stored->index)) ++selected_members;
    if (sample.size() < kPreviewSampleMax) {
      sample.push(user->id);
    } else if (std::string_view(user->id) < sample.top()) {
      sample.pop();
      sample.push(user->id);
    }
  }
  if (stored != nullptr) {
    out->entering = out->count - selected_members;
    out->leaving = stored->members.size() - selected_members;
  } else {
    out->entering = out->count;
  }
  out->sample.resize(sample.size());
  for (size_t i = sample.size(); i > 0; --i) {
    out->sample[i - 1] = std::string(sample.top());
    sample.pop();
  }
  out->micros = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
  return Status::Ok();
}

}  // namespace bucketd
