#pragma once
// A user and its slots (one per bucket the clock can change for it): the plain data the
// containers of this folder hold pointers to, without the containers (state.h).
#include <algorithm>
#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/inlined_vector.h>

#include "bucketd/limits.h"
#include "bucketd/types.h"
#include "engine/base/check.h"
#include "engine/base/property_view.h"
#include "engine/state/compact_vector.h"
#include "engine/state/instant_list.h"
#include "engine/state/split_vector.h"
#include "engine/state/time48.h"

namespace bucketd {

inline constexpr TimeMs kNever = INT64_MAX;
// Past memberships kept per user for queries (the transition stream keeps them all).
inline constexpr size_t kPastMembershipsPerUserMax = 64;

struct User;

// An optional instant in 8 bytes where std::optional<TimeMs> takes 16; it sits in every
// slot, so the difference is paid per membership. INT64_MIN (never a real instant) means
// none. Same surface as the std::optional it replaces, and converts to it.
class OptionalTime {
 public:
  OptionalTime() = default;
  OptionalTime(std::nullopt_t) {}
  OptionalTime(TimeMs t) : value_(t) {}
  OptionalTime(const std::optional<TimeMs>& t) : value_(t ? *t : kNone) {}
  OptionalTime(const OptionalTime48& t) : value_(t.value_or(kNone)) {}
  explicit operator bool() const { return value_ != kNone; }
  bool has_value() const { return value_ != kNone; }
  TimeMs operator*() const { return value_; }
  TimeMs value_or(TimeMs fallback) const { return has_value() ? value_ : fallback; }
  void reset() { value_ = kNone; }
  operator std::optional<TimeMs>() const {
    return has_value() ? std::optional<TimeMs>(value_) : std::nullopt;
  }
  friend bool operator==(const OptionalTime&, const OptionalTime&) = default;

 private:
  static constexpr TimeMs kNone = INT64_MIN;
  TimeMs value_ = kNone;
};

// An optional string in one pointer (8 bytes where std::optional<std::string> takes 40):
// a contact's email sits in every User, and most users have none or one that never
// changes. The bytes live in one malloc'd block behind their length. Same surface as the
// std::optional<std::string> it replaces, except that the value reads as a string_view.
class OptionalString {
 public:
  OptionalString() = default;
  OptionalString(const OptionalString& other) { *this = other; }
  OptionalString(OptionalString&& other) noexcept : block_(other.block_) { other.block_ = nullptr; }
  OptionalString& operator=(const OptionalString& other) {
    if (this != &other) {
      if (other) {
        assign(*other);
      } else {
        reset();
      }
    }
    return *this;
  }
  OptionalString& operator=(OptionalString&& other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }
  ~OptionalString() {
    if (block_ != nullptr) std::free(block_);
  }

  explicit operator bool() const { return block_ != nullptr; }
  bool has_value() const { return block_ != nullptr; }
  // REQUIRES: has_value().
  std::string_view operator*() const { return {Bytes(), Size()}; }
  // Where the bytes are (for a prefetch); REQUIRES: has_value().
  const char* data() const { return Bytes(); }
  // The heap block, or null (memory accounting).
  const void* allocation() const { return block_; }
  void assign(std::string_view value) {
    // A value read from this string's own bytes is copied out first: the realloc below may
    // move them, and a copy onto themselves would overlap.
    const std::less<const char*> before;
    if (block_ != nullptr && !value.empty() && !before(value.data(), Bytes()) &&
        before(value.data(), Bytes() + Size())) {
      return assign(std::string(value));
    }
    if (!block_ || Size() != value.size()) {
      void* block = std::realloc(block_, sizeof(uint32_t) + value.size());
      if (block == nullptr) throw std::bad_alloc();
      block_ = static_cast<char*>(block);
      const auto size = static_cast<uint32_t>(value.size());
      std::memcpy(block_, &size, sizeof size);
    }
    if (!value.empty()) std::memcpy(block_ + sizeof(uint32_t), value.data(), value.size());
  }
  void reset() {
    std::free(block_);
    block_ = nullptr;
  }
  operator std::optional<std::string>() const {
    return block_ ? std::optional<std::string>(std::string(**this)) : std::nullopt;
  }
  friend bool operator==(const OptionalString& a, const OptionalString& b) {
    return a.has_value() == b.has_value() && (!a || *a == *b);
  }

 private:
  uint32_t Size() const {
    uint32_t size;
    std::memcpy(&size, block_, sizeof size);
    return size;
  }
  const char* Bytes() const { return block_ + sizeof(uint32_t); }
  char* block_ = nullptr;  // the length (uint32_t) then the bytes; null: none
};

// A string in 16 bytes where std::string takes 32, for the id every User holds: up to 15
// bytes inline (ids like "user-48213", numeric ids, short hashes), longer ones (a UUID's 36)
// in one malloc'd block of their own. Reads as a std::string_view, converts to a
// std::string, and compares as its bytes.
class InlineString {
 public:
  InlineString() = default;
  InlineString(std::string_view value) { assign(value); }  // NOLINT: as std::string
  InlineString(const InlineString& other) { assign(other); }
  InlineString(InlineString&& other) noexcept {
    std::memcpy(bytes_, other.bytes_, sizeof bytes_);
    other.bytes_[kTag] = 0;  // the block, if any, is this one's now
  }
  InlineString& operator=(std::string_view value) {
    assign(value);
    return *this;
  }
  InlineString& operator=(const InlineString& other) {
    if (this != &other) assign(other);
    return *this;
  }
  InlineString& operator=(InlineString&& other) noexcept {
    if (this != &other) {
      Free();
      std::memcpy(bytes_, other.bytes_, sizeof bytes_);
      other.bytes_[kTag] = 0;
    }
    return *this;
  }
  ~InlineString() { Free(); }

  operator std::string_view() const {  // NOLINT: reads as a string_view
    if (!OnHeap()) return {bytes_, static_cast<size_t>(bytes_[kTag])};
    uint32_t size;
    std::memcpy(&size, bytes_ + sizeof(char*), sizeof size);
    return {HeapData(), size};
  }
  operator std::string() const { return std::string(std::string_view(*this)); }  // NOLINT
  const char* data() const { return std::string_view(*this).data(); }
  size_t size() const { return std::string_view(*this).size(); }
  bool empty() const { return size() == 0; }
  // The heap block, or null (memory accounting).
  const void* allocation() const { return OnHeap() ? HeapData() : nullptr; }

  void assign(std::string_view value) {
    // Bytes read from this string's own (inline or block) are copied out first: they are
    // overwritten or freed below.
    if (!value.empty()) {
      const std::less<const char*> before;
      const std::string_view mine = *this;
      if (!before(value.data(), mine.data()) && before(value.data(), mine.data() + mine.size())) {
        return assign(std::string(value));
      }
    }
    Free();
    if (value.size() <= kInlineMax) {
      if (!value.empty()) std::memcpy(bytes_, value.data(), value.size());
      bytes_[kTag] = static_cast<char>(value.size());
      return;
    }
    BUCKETD_CHECK(value.size() <= UINT32_MAX);
    char* block = static_cast<char*>(std::malloc(value.size()));
    if (block == nullptr) throw std::bad_alloc();
    std::memcpy(block, value.data(), value.size());
    const auto size = static_cast<uint32_t>(value.size());
    std::memcpy(bytes_, &block, sizeof block);
    std::memcpy(bytes_ + sizeof block, &size, sizeof size);
    bytes_[kTag] = kOnHeap;
  }

  friend bool operator==(const InlineString& a, const InlineString& b) {
    return std::string_view(a) == std::string_view(b);
  }
  friend bool operator==(const InlineString& a, std::string_view b) {
    return std::string_view(a) == b;
  }
  friend auto operator<=>(const InlineString& a, const InlineString& b) {
    return std::string_view(a) <=> std::string_view(b);
  }
  friend auto operator<=>(const InlineString& a, std::string_view b) {
    return std::string_view(a) <=> b;
  }

 private:
  static constexpr size_t kTag = 15;  // the last byte: the inline size, or kOnHeap
  static constexpr size_t kInlineMax = kTag;
  static constexpr char kOnHeap = static_cast<char>(0xFF);
  bool OnHeap() const { return bytes_[kTag] == kOnHeap; }
  char* HeapData() const {
    char* block;
    std::memcpy(&block, bytes_, sizeof block);
    return block;
  }
  void Free() {
    if (OnHeap()) std::free(HeapData());
    bytes_[kTag] = 0;
  }

  alignas(8) char bytes_[16] = {};
};
static_assert(sizeof(InlineString) == 16, "a user id in every User");

// Event name ids (State::event_names: the names events carry and the derived streams'
// keys) fit the 24 bits an EventHistory keeps for them: a state interns at most this many
// over its life, refused beyond by Fold::Check and the snapshot decoder.
inline constexpr uint32_t kEventNameIdsMax = uint32_t{1} << 24;
// The most events of one name (or stream) one user is counted, in the 40 bits an
// EventHistory keeps for its all-time count: about 1.1 trillion. The fold refuses an event
// beyond it, and the snapshot decoder a count above it.
inline constexpr uint64_t kEventCountMax = (uint64_t{1} << 40) - 1;

// Per (user, event name): what criteria legs need of that user's events of that name.
// 32 bytes: the name id (24 bits) and the all-time count (40 bits) in one word, the first
// and last instant in 48 bits each (event instants are the clock's, time48.h), and the
// newest instants in 12 (InstantList). Storing a value past its field's limit fails a check
// in every build; the fold and the snapshot decoder refuse one before it gets here.
struct EventHistory {
 private:
  static constexpr int kNameIdBits = 24;
  static constexpr uint64_t kNameIdMask = (uint64_t{1} << kNameIdBits) - 1;
  static_assert(kEventNameIdsMax - 1 == kNameIdMask);
  static_assert(kEventCountMax == UINT64_MAX >> kNameIdBits);
  uint64_t name_and_count_ = 0;  // the name id in the low 24 bits, the count above

 public:
  uint32_t name_id() const { return static_cast<uint32_t>(name_and_count_ & kNameIdMask); }
  uint64_t total_count() const { return name_and_count_ >> kNameIdBits; }
  void set_name_id(uint32_t id) {
    BUCKETD_CHECK_MSG(id < kEventNameIdsMax, "an event name id past kEventNameIdsMax");
    name_and_count_ = (name_and_count_ & ~kNameIdMask) | id;
  }
  void set_total_count(uint64_t count) {
    BUCKETD_CHECK_MSG(count <= kEventCountMax, "an event count past kEventCountMax");
    name_and_count_ = count << kNameIdBits | (name_and_count_ & kNameIdMask);
  }

  Time48 first_at;
  Time48 last_at;
  // The newest occurredAt instants, ascending: the newest max(depth, State::history_floor)
  // of the name's events. A threshold leg `count gte N within W` is decided by its N-th
  // newest instant alone, so the depth is the largest N(+1) any leg on this name needs,
  // not the number of events; criteria read only the newest `depth` (Newest()). Two fit
  // inline (a history is 32 bytes, paid per user and name): `exists` and `not_exists`
  // legs cost no allocation and no second cache miss; deeper histories of users with
  // three or more events of the name spill to the heap.
  static constexpr uint32_t kNewestInline = InstantList::kInline;
  InstantList newest;
};
static_assert(sizeof(EventHistory) <= 32, "a history per (user, name)");

// Every name keeps at least this many newest instants, whatever its depth: they fit the
// room EventHistory::newest has inline anyway, and a definition that needs no more (most
// thresholds, or a bucket deleted and defined again) then finds them kept instead of
// re-reading the whole log (Fold::RestoreHistory).
inline constexpr uint32_t kNewestKeptMin = EventHistory::kNewestInline;

// A name's retention depth in a State::history_depth table; ids past its end: 0.
inline uint32_t DepthOf(const std::vector<uint32_t>& history_depth, uint32_t name_id) {
  return name_id < history_depth.size() ? history_depth[name_id] : 0;
}

// What criteria, and the digest, see of a history: its newest `depth` instants, decoded
// (Instants: the inline ones are not TimeMs in memory). Those kept beyond are only there
// for a later, deeper definition.
inline Instants Newest(const EventHistory& h, uint32_t depth) { return h.newest.Last(depth); }

// A contact property: its key, when it took its current value, and the value, in 24 bytes
// where a PropertyValue alone takes 48 (a Property took 64, paid per user and key): the
// type, then the number, or the text inline when it fits 12 bytes (country codes, plans,
// flags) or else in one malloc'd block of its own. Values are kept canonical: only the
// field the type uses is kept (a boolean's flag, a number, a string's or JSON's text), the
// others read as false, 0 and "", as every value parsed from JSON already had them. So an
// embedded caller's stray fields (a number's unused text) reach neither the digest nor
// the snapshot, and a live state and its replay agree whatever the input held.
class Property {
 public:
  Property() = default;
  Property(uint32_t key, PropertyValueView value, TimeMs at) : key_id(key), changed_at(at) {
    set_value(value);
  }
  Property(const Property& other) : key_id(other.key_id), changed_at(other.changed_at) {
    set_value(other.value());
  }
  Property(Property&& other) noexcept
      : key_id(other.key_id), changed_at(other.changed_at), type_(other.type_), meta_(other.meta_) {
    std::memcpy(payload_, other.payload_, sizeof payload_);
    other.type_ = PropertyValue::Type::kNull;  // the block, if any, is this one's now
  }
  Property& operator=(const Property& other) {
    if (this != &other) {
      key_id = other.key_id;
      changed_at = other.changed_at;
      set_value(other.value());
    }
    return *this;
  }
  Property& operator=(Property&& other) noexcept {
    if (this != &other) {
      FreeText();
      key_id = other.key_id;
      changed_at = other.changed_at;
      type_ = other.type_;
      meta_ = other.meta_;
      std::memcpy(payload_, other.payload_, sizeof payload_);
      other.type_ = PropertyValue::Type::kNull;
    }
    return *this;
  }
  ~Property() { FreeText(); }

  PropertyValueView value() const {
    PropertyValueView view;
    view.type = type_;
    switch (type_) {
      case PropertyValue::Type::kNull:
        break;
      case PropertyValue::Type::kBool:
        view.boolean = meta_ != 0;
        break;
      case PropertyValue::Type::kNumber:
        std::memcpy(&view.number, payload_, sizeof view.number);
        break;
      default:
        view.text = Text();
    }
    return view;
  }
  // Whether the value is `value` (SameValue: a stray field of `value` does not count).
  bool Holds(PropertyValueView value) const { return SameValue(this->value(), value); }
  void set_value(PropertyValueView value) {
    // A text read from this property's own bytes (inline or its block) is copied out
    // first: they are cleared or freed below.
    if (!value.text.empty() && HasText()) {
      const std::less<const char*> before;
      const std::string_view mine = Text();
      if (!before(value.text.data(), mine.data()) &&
          before(value.text.data(), mine.data() + mine.size())) {
        return set_value(PropertyValueView(value.ToValue()));
      }
    }
    FreeText();
    type_ = value.type;
    meta_ = 0;
    std::memset(payload_, 0, sizeof payload_);
    switch (value.type) {
      case PropertyValue::Type::kNull:
        return;
      case PropertyValue::Type::kBool:
        meta_ = value.boolean ? 1 : 0;
        return;
      case PropertyValue::Type::kNumber:
        std::memcpy(payload_, &value.number, sizeof value.number);
        return;
      default:
        break;
    }
    if (value.text.size() <= kTextInlineMax) {
      meta_ = static_cast<uint8_t>(value.text.size());
      if (!value.text.empty()) std::memcpy(payload_, value.text.data(), value.text.size());
      return;
    }
    BUCKETD_CHECK(value.text.size() <= UINT32_MAX);
    char* block = static_cast<char*>(std::malloc(value.text.size()));
    if (block == nullptr) throw std::bad_alloc();
    std::memcpy(block, value.text.data(), value.text.size());
    const auto size = static_cast<uint32_t>(value.text.size());
    std::memcpy(payload_, &block, sizeof block);
    std::memcpy(payload_ + sizeof block, &size, sizeof size);
    meta_ = kTextOnHeap;
  }
  // The text's own block, or null (memory accounting).
  const void* allocation() const { return OnHeap() ? HeapData() : nullptr; }

 private:
  static constexpr size_t kTextInlineMax = 12;
  static constexpr uint8_t kTextOnHeap = 0xFF;
  bool HasText() const {
    return type_ == PropertyValue::Type::kString || type_ == PropertyValue::Type::kArray ||
           type_ == PropertyValue::Type::kObject;
  }
  bool OnHeap() const { return HasText() && meta_ == kTextOnHeap; }
  char* HeapData() const {
    char* block;
    std::memcpy(&block, payload_, sizeof block);
    return block;
  }
  std::string_view Text() const {
    if (!OnHeap()) return {reinterpret_cast<const char*>(payload_), meta_};
    uint32_t size;
    std::memcpy(&size, payload_ + sizeof(char*), sizeof size);
    return {HeapData(), size};
  }
  void FreeText() {
    if (OnHeap()) std::free(HeapData());
    type_ = PropertyValue::Type::kNull;
  }

  // A number's bytes, the inline text, or the block's address then the text's length. First
  // and 8-aligned: LeakSanitizer finds the block only through an aligned whole word.
  alignas(8) unsigned char payload_[kTextInlineMax] = {};

 public:
  uint32_t key_id = 0;
  Time48 changed_at;  // when the key took its current value (backfill anchors)

 private:
  PropertyValue::Type type_ = PropertyValue::Type::kNull;
  // A boolean's value, a text's inline length, or kTextOnHeap.
  uint8_t meta_ = 0;
};
static_assert(sizeof(Property) <= 24, "a property per user and key");

struct DwellStamp {
  int64_t label_key = 0;  // DwellReaction packed: duration_ms * 2 + kind
  uint32_t count = 0;     // dwell fires so far in the active membership (latest ordinal)
  uint32_t bucket = 0;    // the slot's (Slot::bucket): a user keeps its slots' stamps together
};

// The dwell stamps of a user's slots, in one pointer: most users have none (no reaction of
// their buckets ever fired), so a user pays 8 bytes for them and a slot nothing (it paid 8
// for a pointer of its own, per membership, before); the stamps, once there were any, sit
// in one malloc'd block with their count, kept for the next membership. A slot's are the
// ones with its bucket, in the order they fired. Copyable (tests and the preview copy
// users), with the surface of the std::vector it replaces.
class DwellStamps {
 public:
  DwellStamps() = default;
  DwellStamps(const DwellStamps& other) { *this = other; }
  DwellStamps(DwellStamps&& other) noexcept : block_(other.block_) { other.block_ = nullptr; }
  DwellStamps& operator=(const DwellStamps& other) {
    if (this != &other) {
      resize(other.size());
      std::copy(other.begin(), other.end(), begin());
    }
    return *this;
  }
  DwellStamps& operator=(DwellStamps&& other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }
  ~DwellStamps() {
    if (block_ != nullptr) std::free(block_);
  }

  size_t size() const { return block_ == nullptr ? 0 : block_->size; }
  bool empty() const { return size() == 0; }
  DwellStamp* begin() { return Stamps(); }
  DwellStamp* end() { return Stamps() + size(); }
  const DwellStamp* begin() const { return Stamps(); }
  const DwellStamp* end() const { return Stamps() + size(); }
  DwellStamp& back() { return end()[-1]; }
  // Keeps the block, as std::vector keeps its capacity: every join and leave clears, and a
  // bucket with reactions fires them again in the next membership, so freeing here was a
  // free and a malloc per membership (measured: a fifth of replay went to malloc).
  void clear() {
    if (block_ != nullptr) block_->size = 0;
  }
  // Drops the stamps of one bucket's slot, keeping the others in order (and the block, as
  // clear() does).
  void EraseBucket(uint32_t bucket) {
    if (block_ == nullptr) return;
    DwellStamp* kept =
        std::remove_if(begin(), end(), [&](const DwellStamp& s) { return s.bucket == bucket; });
    block_->size = static_cast<uint32_t>(kept - begin());
  }
  // The stamp of `label_key` in `bucket`'s slot, or null.
  DwellStamp* Find(uint32_t bucket, int64_t label_key) {
    for (DwellStamp& stamp : *this) {
      if (stamp.bucket == bucket && stamp.label_key == label_key) return &stamp;
    }
    return nullptr;
  }
  const DwellStamp* Find(uint32_t bucket, int64_t label_key) const {
    return const_cast<DwellStamps*>(this)->Find(bucket, label_key);
  }
  void push_back(const DwellStamp& stamp) {
    const size_t n = size();
    resize(n + 1);
    Stamps()[n] = stamp;
  }
  // New stamps are value-initialized.
  void resize(size_t n);
  // The heap block, or null (memory accounting).
  const void* allocation() const { return block_; }

 private:
  struct Block {
    uint32_t size;
    uint32_t capacity;
  };
  static_assert(sizeof(Block) % alignof(DwellStamp) == 0);
  DwellStamp* Stamps() const {
    return block_ == nullptr ? nullptr : reinterpret_cast<DwellStamp*>(block_ + 1);
  }
  Block* block_ = nullptr;
};

inline void DwellStamps::resize(size_t n) {
  if (n == 0) return clear();
  const size_t old = size();
  if (block_ == nullptr || n > block_->capacity) {
    const size_t capacity = std::max<size_t>(n, old * 2);
    void* grown = std::realloc(block_, sizeof(Block) + capacity * sizeof(DwellStamp));
    if (grown == nullptr) throw std::bad_alloc();
    block_ = static_cast<Block*>(grown);
    block_->capacity = static_cast<uint32_t>(capacity);
  }
  block_->size = static_cast<uint32_t>(n);
  for (size_t i = old; i < n; ++i) Stamps()[i] = DwellStamp{};
}

// Bucket indices fit the 24 bits a Slot keeps for them: a state names at most this many
// bucket ids over its life (a deleted id defined again keeps its index).
inline constexpr uint32_t kBucketIdsMax = uint32_t{1} << 24;

// A pointer in 48 bits (alignment 2), for the one a Slot holds to its user and the ones a
// User holds to its slots: user-space
// addresses are below 2^47 on x86-64 and below 2^48 on AArch64 unless a program asks mmap
// for higher ones, which nothing here does; storing one that does not fit fails a check
// instead of keeping a wrong one. Converts to and from T*.
template <typename T>
class Pointer48 {
 public:
  Pointer48() = default;
  Pointer48(T* p) { *this = p; }
  Pointer48& operator=(T* p) {
    const auto address = reinterpret_cast<uintptr_t>(p);
    BUCKETD_CHECK(address <= time48::kNoneBits);
    time48::Store(words_, address);
    return *this;
  }
  operator T*() const { return reinterpret_cast<T*>(time48::Load(words_)); }
  T* operator->() const { return *this; }
  T& operator*() const { return *static_cast<T*>(*this); }

 private:
  uint16_t words_[3] = {0, 0, 0};  // null
};

struct Slot {
  // 40 bytes, paid per membership: the bucket index packed with the flags in one word, the
  // due instant, the user's address and the instants the clock took (entered, anchor, last
  // leave) in 48 bits each (time48.h), then no padding. The due instant stays 64-bit: it
  // can lie anywhere past the clock (a time property's date), and kNever marks "not filed".
  // The dwell stamps fired in the membership are the user's (User::dwell). The bucket
  // first: finding a user's slot of a bucket reads only it, and a slot's first bytes are on
  // the line a prefetch of its address fetches.
  uint32_t bucket : 24 = 0;  // < kBucketIdsMax
  // The flags below start a memory location of their own: snapshot load reads `bucket` on
  // one thread (RebuildDueIndices) while another reads the slots' state (RebuildMembers),
  // and a write of the member index's flags must never be a write to the word `bucket` is
  // in (TSan found one when RebuildMembers set them).
  unsigned char : 0;

  bool active : 1 = false;
  bool member_touched : 1 = false;  // MemberIndex bookkeeping
  bool member_listed : 1 = false;
  bool past_listed : 1 = false;  // in MemberIndex's past members
  // Left by maxDwell while the criteria still held: no re-join until they stop holding.
  bool rejoin_blocked : 1 = false;
  MembershipSource source : 2 = MembershipSource::kEvent;
  uint32_t entry_count = 0;  // memberships opened so far, the active one included
  TimeMs due_at = kNever;    // filed in Bucket::due_index at (due_at, user->index) unless kNever
  Pointer48<User> user;
  Time48 entered_at;
  OptionalTime48 dwell_anchor_at;
  OptionalTime48 last_left_at;

  TimeMs anchor() const { return dwell_anchor_at.value_or(entered_at); }
  // The time index's tie-break (the user's dense index).
  uint32_t user_index() const;
};
static_assert(sizeof(Slot) <= 40, "a slot per membership: its size is paid ten million times");

// A membership the user has left, as its slot had it: instants in 48 bits as in the Slot
// (28 bytes where 64-bit instants took 40), so a user who has left one bucket once, the
// most common past, holds a 48-byte malloc chunk (bench/README.md).
struct PastMembership {
  uint32_t bucket = 0;
  uint32_t entry_count = 0;
  MembershipSource source = MembershipSource::kEvent;
  LeaveReason reason = LeaveReason::kCriteria;
  Time48 entered_at;
  Time48 left_at;
  OptionalTime48 dwell_anchor_at;
};
static_assert(sizeof(PastMembership) <= 28, "the newest few per user who has left a bucket");

// What the aggregate and sequence legs of SPEC §3b need of a user's events, per stream
// (State::StreamSpec): only users with a matching event have any. A User holds them in one
// heap block sized to what it has (LegHistories, below): an event that feeds the streams
// meets one dependent cache miss behind the user, not one per container (user -> legs ->
// vector -> element -> occurrences, each its own allocation, was most of the §3b mix's
// fold cost; bench/README.md). Larger histories spill to the heap, with the same answers.
struct Contribution {
  TimeMs at = 0;
  double number = 0;
  friend bool operator==(const Contribution&, const Contribution&) = default;
};
struct DistinctValue {
  uint64_t hash = 0;  // of the value's type and contents (ValueHash)
  TimeMs latest = 0;  // its newest occurrence
  friend bool operator==(const DistinctValue&, const DistinctValue&) = default;
};
// Per (user, aggregate stream: event name, where, property). A numeric stream (sum avg min
// max) fills the totals and `newest`, a distinct stream only `distinct`, so `distinct` is
// one pointer (empty in every numeric history) where an inline array took 24 bytes.
struct AggregateHistory {
 private:
  // The stream's event name id and the count of numeric contributions ever in one word, as
  // EventHistory packs a name and its count: a block holding one history of each kind then
  // fits a 128-byte malloc chunk (bench/README.md). A stream's contributions are events of
  // its name, so their count is bounded as the name's is (kEventCountMax, which the fold
  // refuses an event past, CheckHistoryLimits).
  static constexpr int kStreamBits = 24;
  static constexpr uint64_t kStreamMask = (uint64_t{1} << kStreamBits) - 1;
  static_assert(kEventNameIdsMax - 1 == kStreamMask);
  static_assert(kEventCountMax == UINT64_MAX >> kStreamBits);
  uint64_t stream_and_count_ = 0;

 public:
  uint32_t stream_id() const { return static_cast<uint32_t>(stream_and_count_ & kStreamMask); }
  void set_stream_id(uint32_t id) {
    BUCKETD_CHECK_MSG(id < kEventNameIdsMax, "a stream id past kEventNameIdsMax");
    stream_and_count_ = (stream_and_count_ & ~kStreamMask) | id;
  }
  // Every numeric contribution ever (the legs without `within`).
  uint64_t count() const { return stream_and_count_ >> kStreamBits; }
  void set_count(uint64_t count) {
    BUCKETD_CHECK_MSG(count <= kEventCountMax, "an aggregate count past kEventCountMax");
    stream_and_count_ = count << kStreamBits | (stream_and_count_ & kStreamMask);
  }
  double sum = 0;
  double min = 0;  // meaningful once count() > 0
  double max = 0;
  // The newest numeric contributions, ascending by `at` (equal instants in log order), at
  // most kAggregateContributionsMax (the windowed legs read these; docs/design.md).
  absl::InlinedVector<Contribution, 2> newest;
  // Distinct scalar values with their newest occurrence, sorted by hash; at most
  // kDistinctValuesMax, the value seen least recently giving way.
  CompactVector<DistinctValue> distinct;
  friend bool operator==(const AggregateHistory& a, const AggregateHistory& b) {
    return a.stream_and_count_ == b.stream_and_count_ && a.sum == b.sum && a.min == b.min &&
           a.max == b.max && a.newest == b.newest &&
           std::equal(a.distinct.begin(), a.distinct.end(), b.distinct.begin(), b.distinct.end());
  }
};
static_assert(sizeof(AggregateHistory) <= 80, "one per (user, aggregate stream)");
// Per (user, sequence stream: its steps).
class SequenceHistory {
 public:
  OptionalTime start;  // the latest occurrence of step 1

  uint32_t stream_id() const { return stream_id_; }
  void set_stream_id(uint32_t id) { stream_id_ = id; }

 private:
  uint32_t stream_id_ = 0;
  // How many later steps (3 bits), then each later step's count of occurrences (7 bits
  // each): one word where a byte and an array of four took eight with their padding.
  static constexpr size_t kLaterStepsMax = kSequenceStepsMax - 1;
  static constexpr int kStepsBits = 3;
  static constexpr int kCountBits = 7;
  static_assert(kLaterStepsMax < (1u << kStepsBits) &&
                    kSequenceOccurrencesMax < (1u << kCountBits) &&
                    kStepsBits + kCountBits * kLaterStepsMax <= 32,
                "the later steps and their counts fit one word");
  uint32_t steps_ = 0;

 public:
  // Steps 2..n (0-based here): for each, its occurrences after `start`, ascending, the
  // earliest kSequenceOccurrencesMax (the earliest completion needs no later ones).
  uint32_t later_steps() const { return steps_ & ((1u << kStepsBits) - 1); }
  Instants Later(uint32_t step) const {
    return occurrences_.view().Slice(Offset(step), Count(step));
  }
  void SetLaterSteps(uint32_t steps);  // REQUIRES: no occurrences yet; steps < kSequenceStepsMax
  // Files an occurrence of a later step in order; beyond kSequenceOccurrencesMax the
  // latest goes. REQUIRES: step < later_steps().
  void InsertLater(uint32_t step, TimeMs at);
  // Drops every later step's occurrences at or before `at` (a new start).
  void DropLaterUpTo(TimeMs at);
  // Appends to the last step that has any, or a later one (decoding, in step order).
  // REQUIRES: step < later_steps(), at no earlier than the step's last, fewer than
  // kSequenceOccurrencesMax in the step.
  void AppendLater(uint32_t step, TimeMs at);
  // Every later step's occurrences, step after step (for memory accounting).
  const InstantList& occurrences() const { return occurrences_; }
  friend bool operator==(const SequenceHistory&, const SequenceHistory&) = default;

 private:
  static int CountShift(uint32_t step) { return kStepsBits + kCountBits * static_cast<int>(step); }
  uint32_t Count(uint32_t step) const {
    return (steps_ >> CountShift(step)) & ((1u << kCountBits) - 1);
  }
  void SetCount(uint32_t step, uint32_t count) {
    const uint32_t mask = ((1u << kCountBits) - 1) << CountShift(step);
    steps_ = (steps_ & ~mask) | (count << CountShift(step));
  }
  size_t Offset(uint32_t step) const {
    size_t offset = 0;
    for (uint32_t i = 0; i < step; ++i) offset += Count(i);
    return offset;
  }
  // Every later step's occurrences, step after step, each step's ascending: two inline in
  // 12 bytes (an InlinedVector took 24), so a block holding one history of each kind fits
  // a 128-byte malloc chunk and one holding a sequence alone a 48-byte one (bench/README.md).
  InstantList occurrences_;
};
static_assert(sizeof(SequenceHistory) <= 32, "one per (user, sequence stream)");

// A user's aggregate and sequence histories in one heap block sized to them: a header with
// the two counts, the aggregate histories, then the sequence histories, each array sorted
// by stream id. One pointer in the User, null while it has none. A block with room for one
// of each (168 bytes, most of it unused by a user with a sequence only) was 128 of the §3b
// mix's 158 extra bytes per user (bench/README.md); a user gains a stream rarely (once per
// stream), so a block moved on each insert costs little.
class LegHistories {
 public:
  LegHistories() = default;
  LegHistories(const LegHistories& other) { *this = other; }
  LegHistories(LegHistories&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  LegHistories& operator=(const LegHistories& other);
  LegHistories& operator=(LegHistories&& other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }
  ~LegHistories() { clear(); }

  // No block: the user has no history of any stream.
  bool empty() const { return block_ == nullptr; }
  explicit operator bool() const { return !empty(); }
  void clear();

  std::span<AggregateHistory> aggregates() { return {Aggregates(), AggregateCount()}; }
  std::span<const AggregateHistory> aggregates() const { return {Aggregates(), AggregateCount()}; }
  std::span<SequenceHistory> sequences() { return {Sequences(), SequenceCount()}; }
  std::span<const SequenceHistory> sequences() const { return {Sequences(), SequenceCount()}; }

  // The stream's history, or null.
  const AggregateHistory* FindAggregate(uint32_t stream_id) const;
  const SequenceHistory* FindSequence(uint32_t stream_id) const;
  // The stream's history, a new empty one in its place if there is none. A new one moves
  // the block: references into it do not survive the call.
  AggregateHistory& FindOrInsertAggregate(uint32_t stream_id);
  SequenceHistory& FindOrInsertSequence(uint32_t stream_id);
  // Drops the histories whose stream `drop` names; the block goes with the last.
  template <typename Drop>
  void EraseIf(Drop drop);
  // Sorts each array by stream id again (after the ids are renumbered: a shard merge).
  void SortByStream();
  // Decoding: `aggregates` and `sequences` empty histories, to fill in place (the stream
  // ids and their order are the caller's). REQUIRES: empty().
  void Resize(size_t aggregates, size_t sequences);

  // The size of a block with one history of each kind (what a prefetch fetches before the
  // header, with the counts, has arrived).
  static constexpr size_t kTypicalBytes = 8 + sizeof(AggregateHistory) + sizeof(SequenceHistory);
  // The block and its size (prefetches, memory accounting), or null and 0.
  const void* allocation() const { return block_; }
  size_t allocation_bytes() const {
    return empty() ? 0 : BlockBytes(AggregateCount(), SequenceCount());
  }

  friend bool operator==(const LegHistories& a, const LegHistories& b) {
    return std::ranges::equal(a.aggregates(), b.aggregates()) &&
           std::ranges::equal(a.sequences(), b.sequences());
  }

 private:
  struct Header {
    uint32_t aggregates = 0;
    uint32_t sequences = 0;
  };
  static_assert(sizeof(Header) == 8 && alignof(AggregateHistory) <= sizeof(Header) &&
                    alignof(SequenceHistory) <= sizeof(Header) &&
                    sizeof(AggregateHistory) % alignof(SequenceHistory) == 0,
                "the arrays follow the header unpadded");
  static size_t BlockBytes(size_t aggregates, size_t sequences) {
    return sizeof(Header) + aggregates * sizeof(AggregateHistory) +
           sequences * sizeof(SequenceHistory);
  }
  size_t AggregateCount() const { return empty() ? 0 : block_->aggregates; }
  size_t SequenceCount() const { return empty() ? 0 : block_->sequences; }
  static AggregateHistory* AggregatesOf(Header* block) {
    return std::launder(
        reinterpret_cast<AggregateHistory*>(reinterpret_cast<char*>(block) + sizeof(Header)));
  }
  static SequenceHistory* SequencesOf(Header* block) {
    return std::launder(
        reinterpret_cast<SequenceHistory*>(reinterpret_cast<char*>(block) + sizeof(Header) +
                                           block->aggregates * sizeof(AggregateHistory)));
  }
  AggregateHistory* Aggregates() const { return empty() ? nullptr : AggregatesOf(block_); }
  SequenceHistory* Sequences() const { return empty() ? nullptr : SequencesOf(block_); }
  // A block for the given counts, its histories not yet constructed.
  static Header* Allocate(size_t aggregates, size_t sequences);
  // The history at its place in `histories` (one of this block's arrays), inserted there
  // new and empty if absent.
  template <typename History>
  History& FindOrInsertIn(std::span<History> histories, uint32_t stream_id);
  // Moves the histories into a block with one more `History` (an aggregate or a sequence
  // history), new and empty, at place `at` of its array, and frees this one; returns it.
  template <typename History>
  History* Grow(size_t at);

  Header* block_ = nullptr;
};

inline void SequenceHistory::SetLaterSteps(uint32_t steps) {
  BUCKETD_CHECK(steps <= kLaterStepsMax && occurrences_.empty());
  steps_ = steps;  // no occurrences: every count 0
}

inline void SequenceHistory::InsertLater(uint32_t step, TimeMs at) {
  BUCKETD_CHECK(step < later_steps());
  const size_t begin = Offset(step);
  const uint32_t count = Count(step);
  const Instants later = Later(step);
  occurrences_.insert(
      begin + static_cast<size_t>(std::upper_bound(later.begin(), later.end(), at) - later.begin()),
      at);
  if (count < kSequenceOccurrencesMax) {
    SetCount(step, count + 1);
  } else {
    occurrences_.erase(begin + count, begin + count + 1);
  }
}

inline void SequenceHistory::DropLaterUpTo(TimeMs at) {
  // Each step's occurrences are ascending: its kept ones are a suffix of them.
  size_t begin = 0;
  for (uint32_t step = 0; step < later_steps(); ++step) {
    const size_t n = Count(step);
    const Instants later = Later(step);
    const auto dropped =
        static_cast<size_t>(std::upper_bound(later.begin(), later.end(), at) - later.begin());
    occurrences_.erase(begin, begin + dropped);
    SetCount(step, static_cast<uint32_t>(n - dropped));
    begin += n - dropped;
  }
}

inline void SequenceHistory::AppendLater(uint32_t step, TimeMs at) {
  BUCKETD_CHECK(step < later_steps() && Count(step) < kSequenceOccurrencesMax);
  for (uint32_t i = step + 1; i < later_steps(); ++i) BUCKETD_CHECK(Count(i) == 0);
  occurrences_.insert(occurrences_.size(), at);
  SetCount(step, Count(step) + 1);
}

template <typename Drop>
void LegHistories::EraseIf(Drop drop) {
  const auto aggregates_kept = std::ranges::count_if(
      aggregates(), [&](const AggregateHistory& h) { return !drop(h.stream_id()); });
  const auto sequences_kept = std::ranges::count_if(
      sequences(), [&](const SequenceHistory& h) { return !drop(h.stream_id()); });
  if (static_cast<size_t>(aggregates_kept) == AggregateCount() &&
      static_cast<size_t>(sequences_kept) == SequenceCount()) {
    return;
  }
  LegHistories kept;
  if (aggregates_kept + sequences_kept > 0) {
    kept.block_ =
        Allocate(static_cast<size_t>(aggregates_kept), static_cast<size_t>(sequences_kept));
    AggregateHistory* a = AggregatesOf(kept.block_);
    for (AggregateHistory& h : aggregates()) {
      if (!drop(h.stream_id())) new (a++) AggregateHistory(std::move(h));
    }
    SequenceHistory* q = SequencesOf(kept.block_);
    for (SequenceHistory& h : sequences()) {
      if (!drop(h.stream_id())) new (q++) SequenceHistory(std::move(h));
    }
  }
  *this = std::move(kept);
}

// User::due_floor_units: a due floor in units of 2^kDueFloorShift ms, rounded down.
inline constexpr int kDueFloorShift = 18;
inline constexpr uint32_t kDueFloorNever = (uint32_t{1} << 30) - 1;
static_assert((TimeMs{kDueFloorNever} << kDueFloorShift) > kInstantMsMax,
              "the clock never reaches the floor that reads as never");
inline constexpr uint32_t DueFloorUnits(TimeMs t) {
  if (t <= 0) return 0;
  return static_cast<uint32_t>(std::min<TimeMs>(t >> kDueFloorShift, kDueFloorNever));
}

// Every field has an initializer: new users are default-initialized (UserArena::New),
// since zeroing the whole object first cost 7% of replay.
struct User {
  uint32_t index = 0;  // dense, in order of first appearance in the log
  // No slot of this user is due before next_due_floor() (a lower bound, tightened when the
  // user's due items are applied): most ingests skip the walk over the user's slots. Kept
  // rounded down to units of 2^18 ms (~4.4 minutes) in 30 bits beside the two flags, so
  // that the index, the floor, the flags and the id take 24 bytes (a TimeMs and padding
  // made it 32). Coarser costs only a walk that finds nothing due, for an event within
  // 4.4 minutes before a due instant; that walk reads the slots the event's evaluation
  // reads anyway. The largest unit (about year 10889, past every instant the clock can
  // take) reads as never.
  uint32_t due_floor_units : 30 = kDueFloorNever;
  bool deleted : 1 = false;
  bool has_events : 1 = false;  // the first event evaluates every bucket
  InlineString id;              // ids up to 15 bytes inline
  OptionalString email;
  // The arrays every event reads are inline for a typical user (a few names and buckets):
  // the user is then one block the lookahead fetches at once, with no dependent miss
  // behind each array header and no malloc per array. A larger user's elements past the
  // inline ones go to the heap (SplitVector: the inline places stay in use), growing a
  // quarter at a time (GrowForOneMore). Contact properties (24 bytes each) and
  // past memberships are out of line, behind one pointer each: most users have none.
  SplitVector<EventHistory, 2> events;  // sorted by name_id
  // From State::slot_pool, in 48 bits each (Pointer48): four inline in the room three
  // Slot* took, and 6 bytes a membership once spilled.
  SplitVector<Pointer48<Slot>, 4> slots;
  CompactVector<Property> properties;  // sorted by key_id
  CompactVector<PastMembership> past;
  LegHistories legs;  // empty until an aggregate or sequence leg needs one
  // One stamp per dwell reaction fired in each active membership, tagged with its slot's
  // bucket (out of the slots, which are paid per membership while most have none).
  DwellStamps dwell;

  TimeMs next_due_floor() const {
    return due_floor_units == kDueFloorNever ? kNever : TimeMs{due_floor_units} << kDueFloorShift;
  }
  void set_next_due_floor(TimeMs t) { due_floor_units = DueFloorUnits(t); }
  void lower_next_due_floor(TimeMs t) {
    due_floor_units = std::min<uint32_t>(due_floor_units, DueFloorUnits(t));
  }
};
static_assert(sizeof(User) <= 168, "a user per contact ever seen");

// Makes room for one more element in a vector that is full, by GrownCapacity (a quarter,
// at least `min_growth`) where the vector's own growth doubles: a user's arrays and a time
// index's pages. For std::vector and SplitVector, whose reserve() is exact.
template <typename Vector>
void GrowForOneMore(Vector* v, size_t min_growth = 2) {
  if (v->size() < v->capacity()) return;
  v->reserve(GrownCapacity(v->size(), min_growth));
}

// Keeps `at` among the newest `depth` instants of `h` (ascending): late events land in
// place and only the newest `depth` are kept. The one home of this rule: the fold records
// events with it, and the preview rebuilds the histories the fold did not keep with it.
inline void RetainNewest(EventHistory* h, TimeMs at, uint32_t depth) {
  if (depth == 0) return;
  InstantList& newest = h->newest;
  size_t n = newest.size();
  // More than the depth are kept when it was lowered since: the oldest go first.
  if (n > depth) {
    newest.erase(0, n - depth);
    n = depth;
  }
  if (n < depth && n == newest.capacity()) {
    // Doubling up to the depth, never past it: a history never holds more.
    newest.reserve(std::min<size_t>(depth, 2 * n));
  }
  const size_t place = newest.UpperBound(at);
  if (n < depth) return newest.insert(place, at);
  // Full: the oldest gives way in place. Inserting first would hold depth + 1 for a moment,
  // which spills a full inline array to the heap for good (a cache miss per event after).
  if (place == 0) return;  // older than all it would displace
  newest.DropOldestInsert(place, at);
}

// Counts an event of `name_id` at `at` into `histories` (sorted by name_id): its count,
// first and last instant, and its newest `depth` instants, adding the name's history if
// the user had none. REQUIRES: name_id < kEventNameIdsMax, and the count below
// kEventCountMax (the fold refuses an event otherwise; both are checked here too).
template <typename Histories>
void RecordInHistories(Histories* histories, uint32_t name_id, TimeMs at, uint32_t depth) {
  auto it = std::lower_bound(histories->begin(), histories->end(), name_id,
                             [](const EventHistory& h, uint32_t id) { return h.name_id() < id; });
  if (it == histories->end() || it->name_id() != name_id) {
    // Appended, then rotated into place: inserting in the middle of the vector moves
    // through a temporary that GCC 12 falsely reports as maybe-uninitialized.
    const auto place = it - histories->begin();
    GrowForOneMore(histories);
    EventHistory& added = histories->emplace_back();
    added.set_name_id(name_id);
    added.first_at = added.last_at = at;
    it = histories->begin() + place;
    std::rotate(it, histories->end() - 1, histories->end());
  }
  EventHistory& h = *it;
  h.set_total_count(h.total_count() + 1);
  h.first_at = std::min<TimeMs>(h.first_at, at);
  h.last_at = std::max<TimeMs>(h.last_at, at);
  RetainNewest(&h, at, depth);
}

inline uint32_t Slot::user_index() const { return user->index; }

// A copy of a user (its slots still point at the original's), for reads that evaluate it
// with something added (the preview); the fold never copies users.
inline void CopyUser(const User& from, User* to) {
  to->index = from.index;
  to->id = from.id;
  to->email = from.email;
  to->deleted = from.deleted;
  to->has_events = from.has_events;
  to->due_floor_units = from.due_floor_units;
  to->properties = from.properties;
  to->events = from.events;
  to->slots = from.slots;
  to->past = from.past;
  to->dwell = from.dwell;
  to->legs = from.legs;
}

}  // namespace bucketd
