#include "engine/state/snapshot_codec.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>
#include <string_view>
#include <thread>
#include <vector>

#include "bucketd/limits.h"
#include "engine/base/huge_block.h"
#include "engine/definition/definition.h"
#include "engine/state/id_prefix.h"
#include "engine/state/snapshot_generated.h"
#include "engine/state/time48.h"

namespace bucketd {
namespace {

// Bits of the flag bytes in user_stream (snapshot_format.md).
constexpr uint8_t kUserHasEmail = 1 << 0;
constexpr uint8_t kUserDeleted = 1 << 1;
constexpr uint8_t kUserHasEvents = 1 << 2;
constexpr uint8_t kUserHasLegs = 1 << 3;  // aggregate and sequence histories follow (version 4)
constexpr uint8_t kSlotActive = 1 << 0;
constexpr uint8_t kSlotRejoinBlocked = 1 << 1;
constexpr uint8_t kSlotHasAnchor = 1 << 2;
constexpr uint8_t kSlotHasLastLeft = 1 << 3;
constexpr uint8_t kSlotFiled = 1 << 4;
constexpr uint8_t kPastHasAnchor = 1 << 0;

constexpr size_t kVarintBytesMax = 10;
// A state needs far fewer; this only keeps a damaged-but-checksummed file from making the
// Verifier walk forever. Tables: one per bucket plus the root.
constexpr flatbuffers::uoffset_t kVerifierTablesMax = 1u << 24;
constexpr flatbuffers::uoffset_t kVerifierDepthMax = 16;

uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

// Appends LEB128 varints and raw bytes to a growing buffer. Reserve() once per item, then
// unchecked writes: the stream is ~10M slots and per-byte capacity checks would show.
class StreamWriter {
 public:
  explicit StreamWriter(TimeMs now) : now_(now) {}

  void Reserve(size_t bytes) {
    if (buf_.size() - size_ >= bytes) return;
    buf_.resize(std::max(buf_.size() * 2, size_ + bytes));
  }
  void U(uint64_t v) {
    while (v >= 0x80) {
      buf_[size_++] = static_cast<uint8_t>(v | 0x80);
      v >>= 7;
    }
    buf_[size_++] = static_cast<uint8_t>(v);
  }
  void S(int64_t v) { U(ZigZag(v)); }
  // Instants as deltas from the state's now (wrapping, so every int64 round-trips).
  void Time(TimeMs t) {
    U(ZigZag(static_cast<int64_t>(static_cast<uint64_t>(t) - static_cast<uint64_t>(now_))));
  }
  void Byte(uint8_t b) { buf_[size_++] = b; }
  // Length-prefixed; reserves for itself.
  void Str(std::string_view s) {
    Reserve(s.size() + kVarintBytesMax);
    U(s.size());
    if (s.empty()) return;  // an empty view's data may be null, which memcpy must not get
    std::memcpy(buf_.data() + size_, s.data(), s.size());
    size_ += s.size();
  }
  void F64(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    for (int i = 0; i < 8; ++i) buf_[size_++] = static_cast<uint8_t>(bits >> (8 * i));
  }

  const uint8_t* data() const { return buf_.data(); }
  size_t size() const { return size_; }

 private:
  TimeMs now_;
  std::vector<uint8_t> buf_;
  size_t size_ = 0;
};

// Reads what StreamWriter wrote. Every read is bounds-checked; after the first failure
// ok() is false and reads return zeros, so callers check once per item.
class StreamReader {
 public:
  StreamReader(const uint8_t* data, size_t size, TimeMs now)
      : p_(data), end_(data + size), now_(now) {}

  uint64_t U() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return Fail();
      const uint8_t b = *p_++;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return Fail();
  }
  uint32_t U32() {
    const uint64_t v = U();
    if (v > UINT32_MAX) return static_cast<uint32_t>(Fail());
    return static_cast<uint32_t>(v);
  }
  int64_t S() { return UnZigZag(U()); }
  TimeMs Time() {
    return static_cast<TimeMs>(static_cast<uint64_t>(now_) + static_cast<uint64_t>(S()));
  }
  uint8_t Byte() {
    if (p_ == end_) return static_cast<uint8_t>(Fail());
    return *p_++;
  }
  std::string_view Str() {
    const uint64_t n = U();
    if (n > remaining()) return Fail(), std::string_view();
    std::string_view s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  double F64() {
    if (remaining() < 8) return static_cast<double>(Fail());
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits |= static_cast<uint64_t>(p_[i]) << (8 * i);
    p_ += 8;
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  }
  // A count of items that each take at least one byte: larger than what is left means
  // damage, and refusing it keeps a bad count from reserving gigabytes.
  uint64_t Count() {
    const uint64_t n = U();
    if (n > remaining()) return Fail();
    return n;
  }

  bool ok() const { return ok_; }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

 private:
  uint64_t Fail() {
    ok_ = false;
    p_ = end_;
    return 0;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  TimeMs now_;
  bool ok_ = true;
};

void EncodeLegs(const LegHistories& legs, StreamWriter* w) {
  w->Reserve(kVarintBytesMax);
  w->U(legs.aggregates().size());
  for (const AggregateHistory& a : legs.aggregates()) {
    w->Reserve(kVarintBytesMax * 3 + 8 * 3);
    w->U(a.stream_id());
    w->U(a.count());
    w->F64(a.sum);
    w->F64(a.min);
    w->F64(a.max);
    w->U(a.newest.size());
    for (const Contribution& c : a.newest) {
      w->Reserve(kVarintBytesMax + 8);
      w->Time(c.at);
      w->F64(c.number);
    }
    w->Reserve(kVarintBytesMax);
    w->U(a.distinct.size());
    for (const DistinctValue& v : a.distinct) {
      w->Reserve(kVarintBytesMax * 2);
      w->U(v.hash);
      w->Time(v.latest);
    }
  }
  w->Reserve(kVarintBytesMax);
  w->U(legs.sequences().size());
  for (const SequenceHistory& q : legs.sequences()) {
    w->Reserve(kVarintBytesMax * 3 + 1);
    w->U(q.stream_id());
    w->Byte(q.start ? 1 : 0);
    if (q.start) w->Time(*q.start);
    w->U(q.later_steps());
    for (uint32_t step = 0; step < q.later_steps(); ++step) {
      const Instants occurrences = q.Later(step);
      w->Reserve(kVarintBytesMax * (1 + occurrences.size()));
      w->U(occurrences.size());
      for (TimeMs t : occurrences) w->Time(t);
    }
  }
}

void EncodeUser(const User& user, StreamWriter* w) {
  w->Str(user.id);
  w->Reserve(kVarintBytesMax * 2);
  uint8_t flags = 0;
  if (user.email) flags |= kUserHasEmail;
  if (user.deleted) flags |= kUserDeleted;
  if (user.has_events) flags |= kUserHasEvents;
  if (user.legs) flags |= kUserHasLegs;
  w->Byte(flags);
  if (user.email) w->Str(*user.email);

  w->Reserve(kVarintBytesMax);
  w->U(user.properties.size());
  for (const Property& p : user.properties) {
    w->Reserve(kVarintBytesMax + 2 + 8);
    w->U(p.key_id);
    const PropertyValueView value = p.value();
    w->Byte(static_cast<uint8_t>(value.type));
    w->Byte(value.boolean ? 1 : 0);
    w->F64(value.number);
    w->Str(value.text);
    w->Reserve(kVarintBytesMax);
    w->Time(p.changed_at);
  }

  w->Reserve(kVarintBytesMax);
  w->U(user.events.size());
  for (const EventHistory& e : user.events) {
    w->Reserve(kVarintBytesMax * (5 + e.newest.size()));
    w->U(e.name_id());
    w->U(e.total_count());
    w->Time(e.first_at);
    w->Time(e.last_at);
    const Instants newest = e.newest.view();
    w->U(newest.size());
    for (TimeMs t : newest) w->Time(t);
  }

  w->Reserve(kVarintBytesMax);
  w->U(user.slots.size());
  for (const auto& slot : user.slots) {
    const Slot& s = *slot;
    // The slot's dwell stamps are the user's with its bucket, in the order they fired.
    size_t stamps = 0;
    for (const DwellStamp& d : user.dwell) stamps += d.bucket == s.bucket;
    w->Reserve(kVarintBytesMax * (7 + 2 * stamps) + 2);
    uint8_t slot_flags = 0;
    if (s.active) slot_flags |= kSlotActive;
    if (s.rejoin_blocked) slot_flags |= kSlotRejoinBlocked;
    if (s.dwell_anchor_at) slot_flags |= kSlotHasAnchor;
    if (s.last_left_at) slot_flags |= kSlotHasLastLeft;
    if (s.due_at != kNever) slot_flags |= kSlotFiled;
    w->U(s.bucket);
    w->U(s.entry_count);
    w->Byte(slot_flags);
    w->Byte(static_cast<uint8_t>(s.source));
    if (s.due_at != kNever) w->Time(s.due_at);
    w->Time(s.entered_at);
    if (s.dwell_anchor_at) w->Time(*s.dwell_anchor_at);
    if (s.last_left_at) w->Time(*s.last_left_at);
    w->U(stamps);
    for (const DwellStamp& d : user.dwell) {
      if (d.bucket != s.bucket) continue;
      w->S(d.label_key);
      w->U(d.count);
    }
  }

  w->Reserve(kVarintBytesMax);
  w->U(user.past.size());
  for (const PastMembership& p : user.past) {
    w->Reserve(kVarintBytesMax * 5 + 3);
    w->U(p.bucket);
    w->U(p.entry_count);
    w->Byte(static_cast<uint8_t>(p.source));
    w->Byte(static_cast<uint8_t>(p.reason));
    w->Byte(p.dwell_anchor_at ? kPastHasAnchor : 0);
    w->Time(p.entered_at);
    w->Time(p.left_at);
    if (p.dwell_anchor_at) w->Time(*p.dwell_anchor_at);
  }
  if (user.legs) EncodeLegs(user.legs, w);
}

// Per bucket, what the user stream holds for its indices: the filed slots counted by time
// index page (checked against the stored index size) and the active slots (checked against
// the member set).
struct BucketTally {
  DueIndex::PageTally filed;
  uint64_t active = 0;
  uint32_t last_user = UINT32_MAX;  // the last user with a slot here: a second is refused
};

// What one decoding thread builds from its piece of user_stream (users first_user to
// end_user, bytes begin to end). Pieces are merged into the State in order.
struct DecodedPiece {
  uint32_t first_user = 0;
  uint32_t end_user = 0;
  size_t begin = 0;
  size_t end = 0;
  UserArena user_arena;
  SlotPool slot_pool;
  std::vector<User*> users;
  std::vector<BucketTally> tally;  // by bucket
  Status status;
};

Status Damaged(const std::string& what) { return Status::Corruption("snapshot payload: " + what); }

Status DecodeLegs(StreamReader* r, const State& st, User* user) {
  // Decoded beside the user, then moved into one block: the counts are not trusted before
  // their histories have been read.
  absl::InlinedVector<AggregateHistory, 1> aggregates;
  absl::InlinedVector<SequenceHistory, 1> sequences;
  const uint64_t aggregate_count = r->Count();
  for (uint64_t i = 0; i < aggregate_count && r->ok(); ++i) {
    AggregateHistory& a = aggregates.emplace_back();
    const uint32_t stream_id = r->U32();
    if (stream_id >= st.event_names.size() ||
        (i > 0 && aggregates[i - 1].stream_id() >= stream_id)) {
      return Status::Corruption(": aggregate history out of range or order");
    }
    a.set_stream_id(stream_id);
    const uint64_t count = r->U();
    // At most kEventPropertiesMax contributions a record (one per matching key), which the
    // fold's check of kEventCountMax relies on, as it does on an event count's bound.
    if (count > kEventCountMax ||
        (count + kEventPropertiesMax - 1) / kEventPropertiesMax > st.applied_seq) {
      return Status::Corruption(": aggregate count out of range");
    }
    a.set_count(count);
    a.sum = r->F64();
    a.min = r->F64();
    a.max = r->F64();
    const uint64_t newest = r->Count();
    if (newest > kAggregateContributionsMax) return Status::Corruption(": too many contributions");
    a.newest.resize(newest);
    for (Contribution& c : a.newest) {
      c.at = r->Time();
      c.number = r->F64();
    }
    const uint64_t distinct = r->Count();
    if (distinct > kDistinctValuesMax) return Status::Corruption(": too many distinct values");
    a.distinct.reserve(distinct);
    for (uint64_t k = 0; k < distinct && r->ok(); ++k) {
      DistinctValue& v = a.distinct.emplace_back();
      v.hash = r->U();
      v.latest = r->Time();
    }
    if (!std::is_sorted(a.newest.begin(), a.newest.end(),
                        [](const Contribution& x, const Contribution& y) { return x.at < y.at; }) ||
        !std::is_sorted(
            a.distinct.begin(), a.distinct.end(),
            [](const DistinctValue& x, const DistinctValue& y) { return x.hash <= y.hash; })) {
      return Status::Corruption(": aggregate history out of range or order");
    }
  }
  const uint64_t sequence_count = r->Count();
  for (uint64_t i = 0; i < sequence_count && r->ok(); ++i) {
    SequenceHistory& q = sequences.emplace_back();
    q.set_stream_id(r->U32());
    if (r->Byte() != 0) q.start = r->Time();
    const uint64_t later = r->Count();
    if (later >= kSequenceStepsMax) return Status::Corruption(": too many sequence steps");
    q.SetLaterSteps(static_cast<uint32_t>(later));
    for (uint32_t step = 0; step < later; ++step) {
      const uint64_t n = r->Count();
      if (n > kSequenceOccurrencesMax) return Status::Corruption(": too many occurrences");
      TimeMs previous = INT64_MIN;
      for (uint64_t k = 0; k < n && r->ok(); ++k) {
        const TimeMs t = r->Time();
        if (t < previous || !InstantList::Fits(t)) {
          return Status::Corruption(": sequence occurrences out of order or range");
        }
        q.AppendLater(step, t);
        previous = t;
      }
    }
    if (q.stream_id() >= st.event_names.size() ||
        (i > 0 && sequences[i - 1].stream_id() >= q.stream_id())) {
      return Status::Corruption(": sequence history out of range or order");
    }
  }
  if (!r->ok()) return Status::Corruption(" is truncated");
  user->legs.Resize(aggregates.size(), sequences.size());
  std::ranges::move(aggregates, user->legs.aggregates().begin());
  std::ranges::move(sequences, user->legs.sequences().begin());
  return Status::Ok();
}

// Appends the user to piece->users (it is owned by the arena also when this fails).
Status DecodeUser(StreamReader* r, const State& st, uint32_t index, DecodedPiece* piece) {
  User* user = piece->user_arena.New();
  piece->users.push_back(user);
  std::vector<BucketTally>* tally = &piece->tally;
  user->index = index;
  user->id = std::string(r->Str());
  const uint8_t flags = r->Byte();
  if (flags & kUserHasEmail) user->email.assign(r->Str());
  user->deleted = (flags & kUserDeleted) != 0;
  user->has_events = (flags & kUserHasEvents) != 0;
  // Built only on failure: formatting it for each of a million users shows in load time.
  const auto where = [index] { return "user " + std::to_string(index); };
  if (!r->ok()) return Damaged(where() + " is truncated");

  const uint64_t property_count = r->Count();
  user->properties.reserve(property_count);
  for (uint64_t i = 0; i < property_count; ++i) {
    Property& p = user->properties.emplace_back();
    p.key_id = r->U32();
    const uint8_t type = r->Byte();
    PropertyValueView value;
    value.boolean = r->Byte() != 0;
    value.number = r->F64();
    value.text = r->Str();
    const TimeMs changed_at = r->Time();
    if (type > static_cast<uint8_t>(PropertyValue::Type::kObject)) {
      return Damaged(where() + ": bad property type");
    }
    if (!time48::Fits(changed_at)) return Damaged(where() + ": property instant out of range");
    value.type = static_cast<PropertyValue::Type>(type);
    // Kept canonical (user.h): a snapshot holding a stray field loads without it.
    p.set_value(value);
    p.changed_at = changed_at;
    if (p.key_id >= st.property_keys.size() ||
        (i > 0 && user->properties[i - 1].key_id >= p.key_id)) {
      return Damaged(where() + ": property key ids out of range or order");
    }
  }

  const uint64_t event_count = r->Count();
  user->events.reserve(event_count);
  for (uint64_t i = 0; i < event_count; ++i) {
    EventHistory& e = user->events.emplace_back();
    // Kept in 24 and 40 bits beside each other: a name id past what the state interns, or
    // a count past kEventCountMax, is refused, not cut.
    const uint32_t name_id = r->U32();
    if (name_id >= st.event_names.size() || (i > 0 && user->events[i - 1].name_id() >= name_id)) {
      return Damaged(where() + ": event name ids out of range or order");
    }
    e.set_name_id(name_id);  // fits: DecodeSnapshot refuses more than kEventNameIdsMax names
    const uint64_t total_count = r->U();
    // A count is at most the records folded (each event counts once per history), which the
    // fold's check of kEventCountMax relies on.
    if (total_count > kEventCountMax || total_count > st.applied_seq) {
      return Damaged(where() + ": an event count out of range");
    }
    e.set_total_count(total_count);
    // Kept in 48 bits (time48.h): an event instant the engine could not have taken is
    // refused, not cut.
    const TimeMs first_at = r->Time(), last_at = r->Time();
    if (!time48::Fits(first_at) || !time48::Fits(last_at)) {
      return Damaged(where() + ": an event instant out of range");
    }
    e.first_at = first_at;
    e.last_at = last_at;
    const uint64_t newest = r->Count();
    e.newest.reserve(newest);
    for (size_t k = 0; k < newest; ++k) {
      // Kept in 48 bits inline (InstantList::Fits, which every instant the engine takes
      // does): one outside is refused before it lands.
      const TimeMs t = r->Time();
      if (!InstantList::Fits(t)) return Damaged(where() + ": an event instant out of range");
      e.newest.push_back(t);
    }
  }

  const uint64_t slot_count = r->Count();
  user->slots.reserve(slot_count);
  for (uint64_t i = 0; i < slot_count; ++i) {
    // Owned by the pool from here on, also when the decode fails below.
    Slot* slot = piece->slot_pool.New();
    user->slots.push_back(slot);
    Slot& s = *slot;
    s.user = user;
    const uint32_t bucket = r->U32();
    s.entry_count = r->U32();
    const uint8_t slot_flags = r->Byte();
    const uint8_t source = r->Byte();
    s.due_at = (slot_flags & kSlotFiled) ? r->Time() : kNever;
    // The instants the clock took are kept in 48 bits (time48.h): one the engine could not
    // have taken is refused, not cut.
    const TimeMs entered_at = r->Time();
    const TimeMs anchor_at = (slot_flags & kSlotHasAnchor) ? r->Time() : 0;
    const TimeMs last_left_at = (slot_flags & kSlotHasLastLeft) ? r->Time() : 0;
    if (!time48::Fits(entered_at) || !time48::Fits(anchor_at) || !time48::Fits(last_left_at)) {
      return Damaged(where() + ": a slot instant out of range");
    }
    s.entered_at = entered_at;
    if (slot_flags & kSlotHasAnchor) s.dwell_anchor_at = anchor_at;
    if (slot_flags & kSlotHasLastLeft) s.last_left_at = last_left_at;
    s.active = (slot_flags & kSlotActive) != 0;
    s.rejoin_blocked = (slot_flags & kSlotRejoinBlocked) != 0;
    const uint64_t stamps = r->Count();
    for (uint64_t k = 0; k < stamps; ++k) {
      user->dwell.push_back(DwellStamp{});
      DwellStamp& d = user->dwell.back();
      d.label_key = r->S();
      d.count = r->U32();
      d.bucket = bucket;
    }
    if (bucket >= st.buckets.size() || source > static_cast<uint8_t>(MembershipSource::kBackfill)) {
      return Damaged(where() + ": slot bucket or source out of range");
    }
    s.bucket = bucket;  // fits: DecodeBuckets refuses more than kBucketIdsMax buckets
    uint32_t& last_user = (*tally)[s.bucket].last_user;
    if (last_user == index) return Damaged(where() + ": two slots of a bucket");
    last_user = index;
    if ((slot_flags & kSlotFiled) && s.due_at == kNever)
      return Damaged(where() + ": bad due instant");
    // A membership opens at or before the state's now (the fold never runs ahead of it).
    if (s.entered_at > st.now) return Damaged(where() + ": slot entered after the state's now");
    s.source = static_cast<MembershipSource>(source);
    if (s.due_at != kNever) {
      (*tally)[s.bucket].filed.Add(s.due_at);
      user->lower_next_due_floor(s.due_at);
    }
    if (s.active) ++(*tally)[s.bucket].active;
  }

  const uint64_t past_count = r->Count();
  user->past.reserve(past_count);
  for (uint64_t i = 0; i < past_count; ++i) {
    PastMembership& p = user->past.emplace_back();
    p.bucket = r->U32();
    p.entry_count = r->U32();
    const uint8_t source = r->Byte();
    const uint8_t reason = r->Byte();
    const uint8_t past_flags = r->Byte();
    const TimeMs entered_at = r->Time();
    const TimeMs left_at = r->Time();
    const TimeMs anchor_at = (past_flags & kPastHasAnchor) ? r->Time() : 0;
    if (p.bucket >= st.buckets.size() ||
        source > static_cast<uint8_t>(MembershipSource::kBackfill) ||
        reason > static_cast<uint8_t>(LeaveReason::kManual) || entered_at > left_at ||
        left_at > st.now || !time48::Fits(entered_at) || !time48::Fits(left_at) ||
        !time48::Fits(anchor_at)) {
      return Damaged(where() + ": past membership out of range");
    }
    p.entered_at = entered_at;
    p.left_at = left_at;
    if (past_flags & kPastHasAnchor) p.dwell_anchor_at = anchor_at;
    p.source = static_cast<MembershipSource>(source);
    p.reason = static_cast<LeaveReason>(reason);
  }
  if (flags & kUserHasLegs) {
    if (Status s = DecodeLegs(r, st, user); !s.ok()) return Damaged(where() + s.message());
  }
  if (!r->ok()) return Damaged(where() + " is truncated");
  return Status::Ok();
}

Status DecodeBuckets(const snap::State& root, State* st) {
  if (root.buckets()->size() > kBucketIdsMax) return Damaged("more bucket ids than a state holds");
  for (const snap::Bucket* b : *root.buckets()) {
    auto bucket = std::make_unique<Bucket>();
    bucket->index = static_cast<uint32_t>(st->buckets.size());
    const std::string_view json = b->canonical_json()->string_view();
    if (Status s = ParseBucketDefinition(json, &bucket->def); !s.ok()) {
      return Damaged("bucket " + std::to_string(bucket->index) + ": " + s.ToString());
    }
    bucket->canonical_json = std::string(json);
    bucket->fingerprint = CriteriaFingerprint(bucket->def);
    bucket->deleted = b->deleted();
    bucket->ever_enabled = b->ever_enabled();
    bucket->entered_total = b->entered_total();
    bucket->left_total = b->left_total();
    bucket->closed_dwell_ms_total = b->closed_dwell_ms_total();
    if (bucket->closed_dwell_ms_total < 0) {
      return Damaged("bucket " + bucket->def.id + ": negative closed dwell total");
    }
    if (!st->bucket_ids.emplace(bucket->def.id, bucket->index).second) {
      return Damaged("bucket id " + bucket->def.id + " appears twice");
    }
    st->buckets.push_back(std::move(bucket));
  }
  return Status::Ok();
}

// Rebuilds each bucket's time index from its filed slots, walking the users (in memory
// order: the arena's, then the pool's). Each page is sized once from the pieces' tallies.
// Filing is an append in any order (due_index.h), and no key repeats: DecodeUser refuses a
// user with two slots of a bucket. Reads only the slots' due_at, user index and bucket (and
// the pool's table of blocks), so it may run beside RebuildMembers. It files slots by pool
// index (SlotPool::IndexOf), so it runs after every piece's pool is adopted into the state's.
Status RebuildDueIndices(const snap::State& root, std::vector<DecodedPiece>* pieces, State* st) {
  for (uint32_t b = 0; b < st->buckets.size(); ++b) {
    Bucket& bucket = *st->buckets[b];
    DueIndex::PageTally filed;
    for (DecodedPiece& piece : *pieces) filed.Merge(std::move(piece.tally[b].filed));
    if (filed.total() != root.buckets()->Get(b)->due_count()) {
      return Damaged("bucket " + bucket.def.id + ": time index size disagrees with its slots");
    }
    bucket.due_index.Reserve(std::move(filed));
  }
  for (const User* user : st->users) {
    for (Slot* slot : user->slots) {
      if (slot->due_at == kNever) continue;
      st->buckets[slot->bucket]->due_index.Insert(DueKey{slot->due_at, slot->user_index()},
                                                  st->slot_pool.IndexOf(slot));
    }
  }
  return Status::Ok();
}

// The id map, filled once all ids are known so that each insert's place in the table is
// fetched a few users ahead instead of waited for.
Status BuildUserIds(State* st) {
  constexpr size_t kPrefetchDistance = 8;
  st->user_ids.Reserve(st->users.size());
  for (size_t i = 0; i < st->users.size(); ++i) {
    if (i + kPrefetchDistance < st->users.size()) {
      st->user_ids.Prefetch(UserIndex::Hash(st->users[i + kPrefetchDistance]->id));
    }
    if (!st->user_ids.Insert(st->users[i])) return Damaged("user id appears twice");
  }
  return Status::Ok();
}

// Counts each bucket's members (the member index builds its sets at the first read,
// member_index.h) to check them against the pieces' tallies, and checks users_by_id.
Status RebuildMembers(const snap::State& root, const std::vector<DecodedPiece>& pieces, State* st) {
  const auto* by_id = root.users_by_id();
  if (by_id->size() != st->users.size()) return Damaged("users_by_id has the wrong size");
  for (uint32_t user_index : *by_id) {
    if (user_index >= st->users.size()) return Damaged("users_by_id entry out of range");
    for (Slot* slot : st->users[user_index]->slots) {
      if (slot->active) st->buckets[slot->bucket]->members.Add(slot);
    }
  }
  for (uint32_t b = 0; b < st->buckets.size(); ++b) {
    const Bucket& bucket = *st->buckets[b];
    uint64_t active = 0;
    for (const DecodedPiece& piece : pieces) active += piece.tally[b].active;
    if (bucket.members.size() != active ||
        bucket.members.size() != root.buckets()->Get(b)->member_count()) {
      return Damaged("bucket " + bucket.def.id + ": member count disagrees with its slots");
    }
  }
  return Status::Ok();
}

// User indices ordered by user id (id_prefix.h).
std::vector<uint32_t> UsersById(const State& state) {
  struct Keyed {
    IdPrefix prefix;
    uint32_t user_index;
  };
  std::vector<Keyed> keys;
  keys.reserve(state.users.size());
  for (const auto& user : state.users) keys.push_back({IdPrefixOf(user->id), user->index});
  std::sort(keys.begin(), keys.end(), [&](const Keyed& a, const Keyed& b) {
    if (a.prefix != b.prefix) return a.prefix < b.prefix;
    return state.users[a.user_index]->id < state.users[b.user_index]->id;
  });
  std::vector<uint32_t> by_id;
  by_id.reserve(keys.size());
  for (const Keyed& k : keys) by_id.push_back(k.user_index);
  return by_id;
}

// Runs a decoding step on a thread of its own: an exception escaping a thread would end the
// process, so running out of memory becomes an error, as it is on the calling thread.
template <typename Step>
Status OnThread(const Step& step) {
  try {
    return step();
  } catch (const std::bad_alloc&) {
    return Status::IoError("out of memory while loading a snapshot");
  }
}

// Cuts user_stream at its marks into at most `threads` pieces of about equal bytes.
// Marks are checked here for order and range; that each falls exactly on its user's first
// byte is checked by the decode (the piece before it must end there).
Status PlanPieces(const snap::State& root, size_t threads, std::vector<DecodedPiece>* pieces) {
  const size_t stream_bytes = root.user_stream()->size();
  const uint32_t user_count = root.user_count();
  if (user_count > stream_bytes) return Damaged("user count exceeds the stream");
  std::vector<const snap::UserStreamMark*> marks;
  if (const auto* stored = root.user_stream_marks()) {
    // The Verifier (flatbuffers 2.0) checks a vector of structs for the alignment of its
    // length only; a damaged offset can leave the 8-byte marks misaligned, and reading them
    // then is undefined. The writer aligns a non-empty vector (the payload is 8-aligned
    // where it is read); an empty one it does not pad, and nothing of it is read.
    if (stored->size() > 0 &&
        reinterpret_cast<uintptr_t>(stored->Data()) % alignof(snap::UserStreamMark) != 0) {
      return Damaged("user stream marks misaligned");
    }
    for (const snap::UserStreamMark* mark : *stored) {
      const bool after_previous =
          marks.empty() || (mark->first_user() > marks.back()->first_user() &&
                            mark->offset() > marks.back()->offset());
      if (!after_previous || mark->first_user() == 0 || mark->first_user() >= user_count ||
          mark->offset() == 0 || mark->offset() >= stream_bytes) {
        return Damaged("user stream marks out of order or range");
      }
      marks.push_back(mark);
    }
  }
  if (threads == 0) threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
  pieces->reserve(threads);  // `piece` points into it
  size_t next_mark = 0;
  DecodedPiece* piece = &pieces->emplace_back();
  for (size_t cut = 1; cut < threads; ++cut) {
    const size_t target = stream_bytes / threads * cut;
    while (next_mark < marks.size() && marks[next_mark]->offset() < target) ++next_mark;
    if (next_mark == marks.size()) break;
    const snap::UserStreamMark& mark = *marks[next_mark++];
    piece->end_user = mark.first_user();
    piece->end = mark.offset();
    piece = &pieces->emplace_back();
    piece->first_user = mark.first_user();
    piece->begin = mark.offset();
  }
  piece->end_user = user_count;
  piece->end = stream_bytes;

  for (DecodedPiece& p : *pieces) p.tally.resize(root.buckets()->size());
  return Status::Ok();
}

Status DecodePiece(const snap::State& root, const State& st, DecodedPiece* piece) {
  StreamReader reader(root.user_stream()->data() + piece->begin, piece->end - piece->begin, st.now);
  piece->users.reserve(piece->end_user - piece->first_user);
  for (uint32_t i = piece->first_user; i < piece->end_user; ++i) {
    if (Status s = DecodeUser(&reader, st, i, piece); !s.ok()) return s;
  }
  if (reader.remaining() != 0) {
    return Damaged(piece->end == root.user_stream()->size()
                       ? "bytes left over after the last user"
                       : "user " + std::to_string(piece->end_user) + " is not where its mark says");
  }
  return Status::Ok();
}

}  // namespace

Status EncodeSnapshot(const State& state, flatbuffers::DetachedBuffer* out,
                      uint32_t users_per_mark) {
  size_t slot_count = 0;
  for (const auto& user : state.users) slot_count += user->slots.size();

  StreamWriter stream(state.now);
  stream.Reserve(state.users.size() * 48 + slot_count * 20);
  std::vector<snap::UserStreamMark> marks;
  for (const User* user : state.users) {
    if (users_per_mark > 0 && user->index > 0 && user->index % users_per_mark == 0) {
      marks.emplace_back(user->index, stream.size());
    }
    EncodeUser(*user, &stream);
  }

  const std::vector<uint32_t> by_id = UsersById(state);

  constexpr size_t kSlackBytes = 1 << 20;
  const size_t estimate =
      stream.size() + by_id.size() * sizeof(uint32_t) + state.buckets.size() * 4096 + kSlackBytes;
  if (estimate >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return Status::IoError("state too large for one snapshot file (" + std::to_string(estimate) +
                           " bytes, flatbuffers caps a buffer at 2 GiB)");
  }
  flatbuffers::FlatBufferBuilder fbb(estimate);

  std::vector<flatbuffers::Offset<flatbuffers::String>> event_names;
  for (size_t i = 0; i < state.event_names.size(); ++i) {
    event_names.push_back(fbb.CreateString(state.event_names.Name(static_cast<uint32_t>(i))));
  }
  std::vector<flatbuffers::Offset<flatbuffers::String>> property_keys;
  for (size_t i = 0; i < state.property_keys.size(); ++i) {
    property_keys.push_back(fbb.CreateString(state.property_keys.Name(static_cast<uint32_t>(i))));
  }
  std::vector<flatbuffers::Offset<snap::Bucket>> buckets;
  for (const auto& bucket : state.buckets) {
    const auto json = fbb.CreateString(bucket->canonical_json);
    buckets.push_back(snap::CreateBucket(
        fbb, json, bucket->deleted, bucket->ever_enabled, bucket->entered_total, bucket->left_total,
        bucket->closed_dwell_ms_total, bucket->members.size(), bucket->due_index.size()));
  }
  uint8_t* stream_bytes = nullptr;
  const auto user_stream = fbb.CreateUninitializedVector(stream.size(), &stream_bytes);
  // An empty state has an empty stream: memcpy from its null data() is undefined.
  if (stream.size() > 0) std::memcpy(stream_bytes, stream.data(), stream.size());
  const auto users_by_id = fbb.CreateVector(by_id);
  const auto user_stream_marks = fbb.CreateVectorOfStructs(marks);
  std::vector<flatbuffers::Offset<snap::Subscription>> subscriptions;
  for (const Subscription& sub : state.subscriptions) {
    std::vector<uint8_t> kinds;
    for (TransitionKind kind : sub.kinds) kinds.push_back(static_cast<uint8_t>(kind));
    subscriptions.push_back(snap::CreateSubscription(
        fbb, fbb.CreateString(sub.id), fbb.CreateString(sub.url), fbb.CreateString(sub.secret),
        sub.bucket_id.empty() ? 0 : fbb.CreateString(sub.bucket_id),
        kinds.empty() ? 0 : fbb.CreateVector(kinds), sub.cursor, sub.created_at));
  }

  const auto root = snap::CreateState(
      fbb, state.applied_seq, state.transition_seq, state.now, fbb.CreateVector(event_names),
      fbb.CreateVector(property_keys), fbb.CreateVector(buckets),
      static_cast<uint32_t>(state.users.size()), user_stream, users_by_id, slot_count,
      user_stream_marks, state.history_floor,
      subscriptions.empty() ? 0 : fbb.CreateVector(subscriptions));
  snap::FinishStateBuffer(fbb, root);
  *out = fbb.Release();
  return Status::Ok();
}

static Status DecodeSubscriptions(const snap::State& root, State* st) {
  if (root.subscriptions() == nullptr) return Status::Ok();
  for (const snap::Subscription* in : *root.subscriptions()) {
    Subscription sub;
    sub.id = in->id()->str();
    sub.url = in->url()->str();
    sub.secret = in->secret()->str();
    if (in->bucket_id() != nullptr) sub.bucket_id = in->bucket_id()->str();
    if (in->kinds() != nullptr) {
      for (uint8_t kind : *in->kinds()) {
        if (kind > static_cast<uint8_t>(TransitionKind::kDwell)) {
          return Damaged("subscription kind out of range");
        }
        sub.kinds.push_back(static_cast<TransitionKind>(kind));
      }
    }
    sub.cursor = in->cursor();
    sub.created_at = in->created_at();
    if (sub.cursor > st->transition_seq) return Damaged("subscription cursor beyond the stream");
    st->subscriptions.push_back(std::move(sub));
  }
  return Status::Ok();
}

Status DecodeSnapshot(const uint8_t* payload, size_t size, State* out, size_t threads) {
  if (size >= FLATBUFFERS_MAX_BUFFER_SIZE) return Damaged("larger than a flatbuffer can be");
  flatbuffers::Verifier verifier(payload, size, kVerifierDepthMax, kVerifierTablesMax);
  if (!snap::VerifyStateBuffer(verifier)) return Damaged("fails flatbuffers verification");
  const snap::State& root = *snap::GetState(payload);

  State st;
  st.applied_seq = root.applied_seq();
  st.transition_seq = root.transition_seq();
  st.now = root.now();
  // Any floor keeps the state correct (it only decides what RestoreHistory must re-read);
  // a huge one would make every history grow without bound.
  constexpr uint32_t kHistoryFloorMax = 1024;
  if (root.history_floor() > kHistoryFloorMax) return Damaged("history floor out of range");
  // Kept instants beyond the depths are a cache for later definitions, which criteria and
  // the digest never see: a snapshot written when the floor was higher loads with today's.
  st.history_floor = std::min<uint32_t>(root.history_floor(), kNewestKeptMin);
  if (root.event_names()->size() > kEventNameIdsMax) {
    return Damaged("more event names than a state holds");
  }
  for (const auto* name : *root.event_names()) {
    if (st.event_names.Intern(name->string_view()) != st.event_names.size() - 1) {
      return Damaged("event name interned twice");
    }
  }
  for (const auto* key : *root.property_keys()) {
    if (st.property_keys.Intern(key->string_view()) != st.property_keys.size() - 1) {
      return Damaged("property key interned twice");
    }
  }
  if (Status s = DecodeBuckets(root, &st); !s.ok()) return s;
  if (Status s = DecodeSubscriptions(root, &st); !s.ok()) return s;

  std::vector<DecodedPiece> pieces;
  if (Status s = PlanPieces(root, threads, &pieces); !s.ok()) return s;
  {
    const auto* stream = root.user_stream();
    // A lone piece has the other core free: it faults the piece's memory in ahead of it.
    std::jthread prefault;
    if (pieces.size() == 1) {
      // Every slot takes at least 6 stream bytes and every user 6, so a lying count cannot
      // reserve more than the file could describe.
      const uint64_t slot_count = std::min<uint64_t>(root.slot_count(), stream->size() / 6);
      const uint64_t user_count = std::min<uint64_t>(root.user_count(), stream->size() / 6);
      prefault = PrefaultInBackground(
          {pieces[0].user_arena.Reserve(user_count), pieces[0].slot_pool.Reserve(slot_count)});
    }
    std::vector<std::jthread> decoders;
    for (size_t p = 1; p < pieces.size(); ++p) {
      decoders.emplace_back([&, p] {
        pieces[p].status = OnThread([&] { return DecodePiece(root, st, &pieces[p]); });
      });
    }
    pieces[0].status = DecodePiece(root, st, &pieces[0]);
  }
  for (const DecodedPiece& piece : pieces) {
    if (!piece.status.ok()) return piece.status;
  }
  st.users.reserve(root.user_count());
  for (DecodedPiece& piece : pieces) {
    st.users.insert(st.users.end(), piece.users.begin(), piece.users.end());
    st.user_arena.Adopt(std::move(piece.user_arena));
    st.slot_pool.Adopt(std::move(piece.slot_pool));
  }
  // What is left touches disjoint data, so it runs on two cores (once every pool is adopted:
  // the time indices file slots by pool index, which Adopt changes): the time indices (sized
  // from the tallies, filled from the slots) on one, the id map and the member sets on the
  // other.
  Status due_status;
  {
    std::jthread due_builder(
        [&] { due_status = OnThread([&] { return RebuildDueIndices(root, &pieces, &st); }); });
    if (Status s = BuildUserIds(&st); !s.ok()) return s;
    if (Status s = RebuildMembers(root, pieces, &st); !s.ok()) return s;
  }
  if (!due_status.ok()) return due_status;
  *out = std::move(st);
  return Status::Ok();
}

}  // namespace bucketd
