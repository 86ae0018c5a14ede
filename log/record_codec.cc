#include "log/record_codec.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "engine/base/check.h"
#include "log/log_record_generated.h"

namespace bucketd {
namespace {

// Transition values get their own identifier (log_record.fbs names only the Record one), so
// a value stored in the wrong column family fails verification.
constexpr char kTransitionIdentifier[] = "BKT1";

// The C++ enums are cast to the on-disk ones and back; their numbering must not drift.
#define BUCKETD_SAME_ENUM(ours, theirs) \
  static_assert(static_cast<uint8_t>(ours) == static_cast<uint8_t>(theirs))
BUCKETD_SAME_ENUM(RecordKind::kEvent, fb::RecordKind::Event);
BUCKETD_SAME_ENUM(RecordKind::kContactDelete, fb::RecordKind::ContactDelete);
BUCKETD_SAME_ENUM(RecordKind::kBucketDefine, fb::RecordKind::BucketDefine);
BUCKETD_SAME_ENUM(RecordKind::kBucketEnable, fb::RecordKind::BucketEnable);
BUCKETD_SAME_ENUM(RecordKind::kBucketDisable, fb::RecordKind::BucketDisable);
BUCKETD_SAME_ENUM(RecordKind::kBucketDelete, fb::RecordKind::BucketDelete);
BUCKETD_SAME_ENUM(RecordKind::kMemberAdd, fb::RecordKind::MemberAdd);
BUCKETD_SAME_ENUM(RecordKind::kMemberRemove, fb::RecordKind::MemberRemove);
BUCKETD_SAME_ENUM(RecordKind::kClockAdvance, fb::RecordKind::ClockAdvance);
BUCKETD_SAME_ENUM(RecordKind::kSweep, fb::RecordKind::Sweep);
BUCKETD_SAME_ENUM(RecordKind::kSubscriptionCreate, fb::RecordKind::SubscriptionCreate);
BUCKETD_SAME_ENUM(RecordKind::kSubscriptionDelete, fb::RecordKind::SubscriptionDelete);
BUCKETD_SAME_ENUM(RecordKind::kSubscriptionAdvance, fb::RecordKind::SubscriptionAdvance);
BUCKETD_SAME_ENUM(PropertyValue::Type::kNull, fb::PropertyType::Null);
BUCKETD_SAME_ENUM(PropertyValue::Type::kBool, fb::PropertyType::Bool);
BUCKETD_SAME_ENUM(PropertyValue::Type::kNumber, fb::PropertyType::Number);
BUCKETD_SAME_ENUM(PropertyValue::Type::kString, fb::PropertyType::String);
BUCKETD_SAME_ENUM(PropertyValue::Type::kArray, fb::PropertyType::Array);
BUCKETD_SAME_ENUM(PropertyValue::Type::kObject, fb::PropertyType::Object);
BUCKETD_SAME_ENUM(TransitionKind::kEntered, fb::TransitionKind::Entered);
BUCKETD_SAME_ENUM(TransitionKind::kLeft, fb::TransitionKind::Left);
BUCKETD_SAME_ENUM(TransitionKind::kDwell, fb::TransitionKind::Dwell);
BUCKETD_SAME_ENUM(MembershipSource::kEvent, fb::MembershipSource::Event);
BUCKETD_SAME_ENUM(MembershipSource::kManual, fb::MembershipSource::Manual);
BUCKETD_SAME_ENUM(MembershipSource::kReconcile, fb::MembershipSource::Reconcile);
BUCKETD_SAME_ENUM(MembershipSource::kBackfill, fb::MembershipSource::Backfill);
BUCKETD_SAME_ENUM(LeaveReason::kCriteria, fb::LeaveReason::Criteria);
BUCKETD_SAME_ENUM(LeaveReason::kMaxDwell, fb::LeaveReason::MaxDwell);
BUCKETD_SAME_ENUM(LeaveReason::kManual, fb::LeaveReason::Manual);
#undef BUCKETD_SAME_ENUM

template <typename To, typename From>
To CastEnum(From value) {
  return static_cast<To>(static_cast<uint8_t>(value));
}

// The Verifier does not check enum ranges; an out-of-range byte must not become a C++ enum
// value no switch handles.
template <typename FbEnum>
bool InRange(FbEnum value) {
  return static_cast<uint8_t>(value) <= static_cast<uint8_t>(FbEnum::MAX);
}

// Empty strings are left absent: they decode as "" and cost no bytes.
flatbuffers::Offset<flatbuffers::String> CreateIfNotEmpty(flatbuffers::FlatBufferBuilder* builder,
                                                          std::string_view s) {
  return s.empty() ? 0 : builder->CreateString(s.data(), s.size());
}

// An optional string is present on disk exactly when it is engaged, even if empty.
flatbuffers::Offset<flatbuffers::String> CreateIfPresent(flatbuffers::FlatBufferBuilder* builder,
                                                         const std::optional<std::string>& s) {
  return s.has_value() ? builder->CreateString(*s) : 0;
}

flatbuffers::Offset<flatbuffers::String> CreateIfPresent(flatbuffers::FlatBufferBuilder* builder,
                                                         std::optional<std::string_view> s) {
  return s.has_value() ? builder->CreateString(s->data(), s->size()) : 0;
}

void AssignString(const flatbuffers::String* from, std::string* to) {
  if (from == nullptr) {
    to->clear();
  } else {
    to->assign(from->data(), from->size());
  }
}

void AssignOptional(const flatbuffers::String* from, std::optional<std::string>* to) {
  if (from == nullptr) {
    to->reset();
    return;
  }
  if (!to->has_value()) to->emplace();
  (*to)->assign(from->data(), from->size());
}

// flatbuffers reads scalars in place, so the buffer must be aligned to the widest scalar
// (8 bytes). RocksDB hands out values at arbitrary offsets inside a block; those few are
// copied into aligned storage. Values are small, so the stack buffer nearly always fits.
class AlignedBytes {
 public:
  explicit AlignedBytes(std::string_view bytes) {
    if (reinterpret_cast<uintptr_t>(bytes.data()) % kAlignment == 0) {
      data_ = reinterpret_cast<const uint8_t*>(bytes.data());
    } else {
      uint64_t* target = stack_;
      if (bytes.size() > sizeof(stack_)) {
        heap_ = std::make_unique<uint64_t[]>(bytes.size() / sizeof(uint64_t) + 1);
        target = heap_.get();
      }
      std::memcpy(target, bytes.data(), bytes.size());
      data_ = reinterpret_cast<const uint8_t*>(target);
    }
    size_ = bytes.size();
  }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  static constexpr size_t kAlignment = alignof(uint64_t);
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint64_t stack_[128];  // 1 KiB
  std::unique_ptr<uint64_t[]> heap_;
};

// --- the compact encoding's pieces (log_format.md, "Compact transitions", "Compact
// properties") ---

// Writes `v` at `p` (at most kVarintMax bytes), returning the end.
constexpr size_t kVarintMax = 10;
char* PutVarint(uint64_t v, char* p) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

// Zigzag: small magnitudes of either sign take few bytes. Differences wrap in uint64_t, so
// any two instants round-trip exactly.
uint64_t Zigzag(uint64_t v) {
  return (v << 1) ^ static_cast<uint64_t>(static_cast<int64_t>(v) >> 63);
}
uint64_t Unzigzag(uint64_t v) { return (v >> 1) ^ (~(v & 1) + 1); }

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

char* PutFixed64(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i, v >>= 8) *p++ = static_cast<char>(v & 0xff);
  return p;
}

char* PutString(std::string_view s, char* p) {
  p = PutVarint(s.size(), p);
  // An empty view may hold a null pointer, which memcpy must not be given even for 0 bytes.
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

// Reads the compact encoding front to back; any read past the end, or a varint longer than
// ten bytes or beyond 64 bits, fails it for good.
class CompactReader {
 public:
  explicit CompactReader(std::string_view bytes) : rest_(bytes) {}

  bool ok() const { return ok_; }
  bool at_end() const { return rest_.empty(); }

  uint8_t Byte() {
    if (rest_.empty()) return Fail(), 0;
    const uint8_t b = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }
  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest_.empty()) return Fail(), 0;
      const uint8_t b = static_cast<uint8_t>(rest_.front());
      rest_.remove_prefix(1);
      if (shift == 63 && b > 1) return Fail(), 0;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return Fail(), 0;
  }
  uint32_t Varint32() {
    const uint64_t v = Varint();
    if (v > UINT32_MAX) return Fail(), 0;
    return static_cast<uint32_t>(v);
  }
  void String(std::string* out) {
    const uint64_t size = Varint();
    if (!ok_ || size > rest_.size()) return Fail();
    out->assign(rest_.data(), size);
    rest_.remove_prefix(size);
  }
  // Eight bytes, little-endian.
  uint64_t Fixed64() {
    if (rest_.size() < 8) return Fail(), 0;
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(rest_[i]);
    rest_.remove_prefix(8);
    return v;
  }
  size_t remaining() const { return rest_.size(); }

 private:
  void Fail() {
    ok_ = false;
    rest_ = {};
  }

  std::string_view rest_;
  bool ok_ = true;
};

using PropertiesOffset =
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Property>>>;

PropertiesOffset EncodeProperties(const std::vector<PropertyPatch>& patches,
                                  flatbuffers::FlatBufferBuilder* builder) {
  if (patches.empty()) return 0;
  // The offsets of a typical list (a few keys) on the stack: a heap vector here was a
  // malloc and a free per encoded list, on the ingest path of every event with properties.
  constexpr size_t kOnStack = 16;
  flatbuffers::Offset<fb::Property> on_stack[kOnStack];
  std::vector<flatbuffers::Offset<fb::Property>> on_heap;
  flatbuffers::Offset<fb::Property>* offsets = on_stack;
  if (patches.size() > kOnStack) {
    on_heap.resize(patches.size());
    offsets = on_heap.data();
  }
  size_t count = 0;
  for (const PropertyPatch& patch : patches) {
    const PropertyValue& value = patch.value;
    auto key = builder->CreateString(patch.key);
    auto text = CreateIfNotEmpty(builder, value.text);
    fb::PropertyBuilder property(*builder);
    property.add_key(key);
    property.add_type(CastEnum<fb::PropertyType>(value.type));
    property.add_boolean(value.boolean);
    property.add_number(value.number);
    property.add_text(text);
    offsets[count++] = property.Finish();
  }
  return builder->CreateVector(offsets, count);
}

Status DecodeProperties(const flatbuffers::Vector<flatbuffers::Offset<fb::Property>>* properties,
                        std::vector<PropertyPatch>* out) {
  const size_t property_count = properties == nullptr ? 0 : properties->size();
  out->resize(property_count);
  for (size_t i = 0; i < property_count; ++i) {
    const fb::Property* property = properties->Get(i);
    if (!InRange(property->type())) return Status::Corruption("property type out of range");
    PropertyPatch& patch = (*out)[i];
    AssignString(property->key(), &patch.key);
    patch.value.type = CastEnum<PropertyValue::Type>(property->type());
    patch.value.boolean = property->boolean();
    patch.value.number = property->number();
    AssignString(property->text(), &patch.value.text);
  }
  return Status::Ok();
}

// --- compact properties (format version 6, log_format.md "Compact properties") ---

// What follows a property's key: one byte naming the value's form, then its bytes. A value
// whose fields other than its type's are not the defaults (which only an embedded caller
// can build) is written verbatim, every field, so a replay sees exactly what ingest saw.
enum class CompactValue : uint8_t {
  kNull,
  kFalse,
  kTrue,
  kDouble,    // 8 bytes, the IEEE 754 bits little-endian
  kInteger,   // a zigzag varint: an integral number within +-2^53 (not -0)
  kString,    // a string
  kArray,     // a string: the minified JSON
  kObject,    // a string: the minified JSON
  kVerbatim,  // type byte, boolean byte (0 or 1), 8-byte number, text string
};
constexpr uint8_t kCompactValueMax = static_cast<uint8_t>(CompactValue::kVerbatim);
// Integers up to 2^53 are exact in a double, so the varint form round-trips.
constexpr int64_t kExactInteger = int64_t{1} << 53;
constexpr double kExactIntegerMax = static_cast<double>(kExactInteger);

CompactValue CompactForm(const PropertyValue& value) {
  using Type = PropertyValue::Type;
  const bool no_number = std::bit_cast<uint64_t>(value.number) == 0;  // +0.0 exactly
  const bool no_text = value.text.empty();
  switch (value.type) {
    case Type::kNull:
      if (!value.boolean && no_number && no_text) return CompactValue::kNull;
      break;
    case Type::kBool:
      if (no_number && no_text) return value.boolean ? CompactValue::kTrue : CompactValue::kFalse;
      break;
    case Type::kNumber:
      if (value.boolean || !no_text) break;
      // -0 is integral but would come back as +0.
      if (std::trunc(value.number) == value.number && std::fabs(value.number) <= kExactIntegerMax &&
          (value.number != 0 || no_number)) {
        return CompactValue::kInteger;
      }
      return CompactValue::kDouble;
    case Type::kString:
    case Type::kArray:
    case Type::kObject:
      if (value.boolean || !no_number) break;
      return value.type == Type::kString  ? CompactValue::kString
             : value.type == Type::kArray ? CompactValue::kArray
                                          : CompactValue::kObject;
  }
  return CompactValue::kVerbatim;
}

size_t CompactValueSize(const PropertyValue& value, CompactValue form) {
  switch (form) {
    case CompactValue::kNull:
    case CompactValue::kFalse:
    case CompactValue::kTrue:
      return 0;
    case CompactValue::kDouble:
      return 8;
    case CompactValue::kInteger:
      return VarintSize(Zigzag(static_cast<uint64_t>(static_cast<int64_t>(value.number))));
    case CompactValue::kString:
    case CompactValue::kArray:
    case CompactValue::kObject:
      return VarintSize(value.text.size()) + value.text.size();
    case CompactValue::kVerbatim:
      return 2 + 8 + VarintSize(value.text.size()) + value.text.size();
  }
  return 0;
}

size_t CompactListSize(const std::vector<PropertyPatch>& patches) {
  size_t size = VarintSize(patches.size());
  for (const PropertyPatch& patch : patches) {
    size += VarintSize(patch.key.size()) + patch.key.size() + 1 +
            CompactValueSize(patch.value, CompactForm(patch.value));
  }
  return size;
}

char* PutCompactList(const std::vector<PropertyPatch>& patches, char* p) {
  p = PutVarint(patches.size(), p);
  for (const PropertyPatch& patch : patches) {
    const PropertyValue& value = patch.value;
    const CompactValue form = CompactForm(value);
    p = PutString(patch.key, p);
    *p++ = static_cast<char>(form);
    switch (form) {
      case CompactValue::kNull:
      case CompactValue::kFalse:
      case CompactValue::kTrue:
        break;
      case CompactValue::kDouble:
        p = PutFixed64(std::bit_cast<uint64_t>(value.number), p);
        break;
      case CompactValue::kInteger:
        p = PutVarint(Zigzag(static_cast<uint64_t>(static_cast<int64_t>(value.number))), p);
        break;
      case CompactValue::kString:
      case CompactValue::kArray:
      case CompactValue::kObject:
        p = PutString(value.text, p);
        break;
      case CompactValue::kVerbatim:
        *p++ = static_cast<char>(value.type);
        *p++ = static_cast<char>(value.boolean ? 1 : 0);
        p = PutFixed64(std::bit_cast<uint64_t>(value.number), p);
        p = PutString(value.text, p);
        break;
    }
  }
  return p;
}

// Both lists in one `[ubyte]` field, or none when both are empty.
flatbuffers::Offset<flatbuffers::Vector<uint8_t>> EncodeCompactProperties(
    const Record& record, flatbuffers::FlatBufferBuilder* builder) {
  const std::vector<PropertyPatch>& patch = record.patch();
  const std::vector<PropertyPatch>& event_patch = record.event_patch();
  if (patch.empty() && event_patch.empty()) return 0;
  // Sized exactly first, then written in place: no scratch buffer, no copy.
  const size_t size = CompactListSize(patch) + CompactListSize(event_patch);
  uint8_t* bytes = nullptr;
  const auto offset = builder->CreateUninitializedVector(size, &bytes);
  char* const begin = reinterpret_cast<char*>(bytes);
  char* const end = PutCompactList(event_patch, PutCompactList(patch, begin));
  BUCKETD_CHECK(end == begin + size);
  return offset;
}

Status DecodeCompactList(CompactReader* in, std::vector<PropertyPatch>* out) {
  const uint64_t count = in->Varint();
  // Every property takes at least two bytes (its key's length and its form), so a damaged
  // count cannot make a vector larger than the bytes could fill.
  if (!in->ok() || count > in->remaining() / 2) {
    return Status::Corruption("compact property count is damaged");
  }
  out->resize(count);
  for (PropertyPatch& patch : *out) {
    PropertyValue& value = patch.value;
    in->String(&patch.key);
    const uint8_t form = in->Byte();
    if (!in->ok()) break;
    if (form > kCompactValueMax) return Status::Corruption("compact property form out of range");
    // The defaults first: each form below sets only what it carries.
    value.boolean = false;
    value.number = 0;
    value.text.clear();
    switch (static_cast<CompactValue>(form)) {
      case CompactValue::kNull:
        value.type = PropertyValue::Type::kNull;
        break;
      case CompactValue::kFalse:
      case CompactValue::kTrue:
        value.type = PropertyValue::Type::kBool;
        value.boolean = form == static_cast<uint8_t>(CompactValue::kTrue);
        break;
      case CompactValue::kDouble:
        value.type = PropertyValue::Type::kNumber;
        value.number = std::bit_cast<double>(in->Fixed64());
        break;
      case CompactValue::kInteger: {
        value.type = PropertyValue::Type::kNumber;
        const auto integer = static_cast<int64_t>(Unzigzag(in->Varint()));
        if (integer > kExactInteger || integer < -kExactInteger) {
          return Status::Corruption("compact integer property out of range");
        }
        value.number = static_cast<double>(integer);
        break;
      }
      case CompactValue::kString:
      case CompactValue::kArray:
      case CompactValue::kObject:
        value.type =
            form == static_cast<uint8_t>(CompactValue::kString)  ? PropertyValue::Type::kString
            : form == static_cast<uint8_t>(CompactValue::kArray) ? PropertyValue::Type::kArray
                                                                 : PropertyValue::Type::kObject;
        in->String(&value.text);
        break;
      case CompactValue::kVerbatim: {
        const auto type = static_cast<fb::PropertyType>(in->Byte());
        const uint8_t boolean = in->Byte();
        if (in->ok() && (!InRange(type) || boolean > 1)) {
          return Status::Corruption("verbatim compact property out of range");
        }
        value.type = CastEnum<PropertyValue::Type>(type);
        value.boolean = boolean == 1;
        value.number = std::bit_cast<double>(in->Fixed64());
        in->String(&value.text);
        break;
      }
    }
  }
  if (!in->ok()) return Status::Corruption("compact properties are truncated or malformed");
  return Status::Ok();
}

Status DecodeCompactProperties(const flatbuffers::Vector<uint8_t>* bytes, Record* out) {
  CompactReader in(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
  if (Status s = DecodeCompactList(&in, &out->properties); !s.ok()) return s;
  if (Status s = DecodeCompactList(&in, &out->event_properties); !s.ok()) return s;
  if (!in.at_end()) return Status::Corruption("compact properties have trailing bytes");
  return Status::Ok();
}

}  // namespace

void EncodeRecord(const Record& record, PropertyEncoding encoding,
                  flatbuffers::FlatBufferBuilder* builder) {
  builder->Clear();
  // Children first: flatbuffers builds bottom-up, a table cannot be open meanwhile.
  PropertiesOffset properties = 0;
  PropertiesOffset event_properties = 0;
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> properties_compact = 0;
  if (encoding == PropertyEncoding::kCompact) {
    properties_compact = EncodeCompactProperties(record, builder);
  } else {
    properties = EncodeProperties(record.patch(), builder);
    event_properties = EncodeProperties(record.event_patch(), builder);
  }
  auto user_id = CreateIfNotEmpty(builder, record.user_id);
  auto event_name = CreateIfNotEmpty(builder, record.event_name);
  auto email = CreateIfPresent(builder, record.email);
  auto idempotency_key = CreateIfPresent(builder, record.idempotency_key);
  auto bucket_id = CreateIfNotEmpty(builder, record.bucket_id);
  auto definition_json = CreateIfNotEmpty(builder, record.definition_json);
  auto subscription_id = CreateIfNotEmpty(builder, record.subscription_id);
  auto url = CreateIfNotEmpty(builder, record.url);
  auto secret = CreateIfNotEmpty(builder, record.secret);
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> kinds = 0;
  if (!record.kinds.empty()) {
    std::vector<uint8_t> bytes;
    for (TransitionKind kind : record.kinds) bytes.push_back(static_cast<uint8_t>(kind));
    kinds = builder->CreateVector(bytes);
  }

  fb::RecordBuilder out(*builder);
  out.add_seq(record.seq);
  out.add_at(record.at);
  out.add_kind(CastEnum<fb::RecordKind>(record.kind));
  out.add_user_id(user_id);
  out.add_event_name(event_name);
  out.add_occurred_at(record.occurred_at);
  out.add_email(email);
  out.add_properties(properties);
  out.add_idempotency_key(idempotency_key);
  out.add_bucket_id(bucket_id);
  out.add_definition_json(definition_json);
  out.add_subscription_id(subscription_id);
  out.add_url(url);
  out.add_secret(secret);
  out.add_kinds(kinds);
  out.add_event_properties(event_properties);
  out.add_properties_compact(properties_compact);
  out.add_through_seq(record.through_seq);
  fb::FinishRecordBuffer(*builder, out.Finish());
}

void EncodeTransition(const Transition& transition, flatbuffers::FlatBufferBuilder* builder) {
  EncodeTransition(TransitionView::Of(transition), builder);
}

void EncodeTransition(const TransitionView& transition, flatbuffers::FlatBufferBuilder* builder) {
  builder->Clear();
  auto bucket_id = CreateIfNotEmpty(builder, transition.bucket_id);
  auto bucket_name = CreateIfNotEmpty(builder, transition.bucket_name);
  auto user_id = CreateIfNotEmpty(builder, transition.user_id);
  auto email = CreateIfPresent(builder, transition.email);
  auto dwell_label = CreateIfNotEmpty(builder, transition.dwell_label);

  fb::TransitionBuilder out(*builder);
  out.add_seq(transition.seq);
  out.add_kind(CastEnum<fb::TransitionKind>(transition.kind));
  out.add_bucket_id(bucket_id);
  out.add_bucket_name(bucket_name);
  out.add_user_id(user_id);
  out.add_email(email);
  out.add_entry_count(transition.entry_count);
  out.add_source(CastEnum<fb::MembershipSource>(transition.source));
  out.add_reason(CastEnum<fb::LeaveReason>(transition.reason));
  out.add_dwell_label(dwell_label);
  out.add_dwell_count(transition.dwell_count);
  out.add_at(transition.at);
  out.add_detected_at(transition.detected_at);
  if (transition.entered_at) out.add_entered_at(*transition.entered_at);
  builder->Finish(out.Finish(), kTransitionIdentifier);
}

Status DecodeRecord(std::string_view bytes, Record* out) {
  AlignedBytes buffer(bytes);
  flatbuffers::Verifier verifier(buffer.data(), buffer.size());
  if (!fb::VerifyRecordBuffer(verifier)) {
    return Status::Corruption("record failed flatbuffers verification");
  }
  const fb::Record* record = fb::GetRecord(buffer.data());
  if (!InRange(record->kind())) return Status::Corruption("record kind out of range");

  out->seq = record->seq();
  out->at = record->at();
  out->kind = CastEnum<RecordKind>(record->kind());
  AssignString(record->user_id(), &out->user_id);
  AssignString(record->event_name(), &out->event_name);
  out->occurred_at = record->occurred_at();
  AssignOptional(record->email(), &out->email);
  AssignOptional(record->idempotency_key(), &out->idempotency_key);
  AssignString(record->bucket_id(), &out->bucket_id);
  AssignString(record->definition_json(), &out->definition_json);
  AssignString(record->subscription_id(), &out->subscription_id);
  AssignString(record->url(), &out->url);
  AssignString(record->secret(), &out->secret);
  out->through_seq = record->through_seq();
  out->kinds.clear();
  if (const auto* kinds = record->kinds(); kinds != nullptr) {
    for (uint8_t kind : *kinds) {
      if (kind > static_cast<uint8_t>(fb::TransitionKind::MAX)) {
        return Status::Corruption("subscription kind out of range");
      }
      out->kinds.push_back(static_cast<TransitionKind>(kind));
    }
  }

  if (const auto* compact = record->properties_compact(); compact != nullptr) {
    // A record holds its properties in one encoding: both would leave one list ambiguous.
    if (record->properties() != nullptr || record->event_properties() != nullptr) {
      return Status::Corruption("record has properties in both encodings");
    }
    return DecodeCompactProperties(compact, out);
  }
  if (Status s = DecodeProperties(record->properties(), &out->properties); !s.ok()) return s;
  return DecodeProperties(record->event_properties(), &out->event_properties);
}

Status DecodeTransition(std::string_view bytes, Transition* out) {
  AlignedBytes buffer(bytes);
  flatbuffers::Verifier verifier(buffer.data(), buffer.size());
  if (!verifier.VerifyBuffer<fb::Transition>(kTransitionIdentifier)) {
    return Status::Corruption("transition failed flatbuffers verification");
  }
  const auto* transition = flatbuffers::GetRoot<fb::Transition>(buffer.data());
  if (!InRange(transition->kind()) || !InRange(transition->source()) ||
      !InRange(transition->reason())) {
    return Status::Corruption("transition enum out of range");
  }
  out->seq = transition->seq();
  out->kind = CastEnum<TransitionKind>(transition->kind());
  AssignString(transition->bucket_id(), &out->bucket_id);
  AssignString(transition->bucket_name(), &out->bucket_name);
  AssignString(transition->user_id(), &out->user_id);
  AssignOptional(transition->email(), &out->email);
  out->entry_count = transition->entry_count();
  out->source = CastEnum<MembershipSource>(transition->source());
  out->reason = CastEnum<LeaveReason>(transition->reason());
  AssignString(transition->dwell_label(), &out->dwell_label);
  out->dwell_count = transition->dwell_count();
  out->at = transition->at();
  out->detected_at = transition->detected_at();
  const TimeMs entered_at = transition->entered_at();
  out->entered_at = entered_at == INT64_MIN ? std::nullopt : std::optional<TimeMs>(entered_at);
  return Status::Ok();
}

// --- compact transitions (format version 5, log_format.md "Compact transitions") ---

namespace {

// The flags byte: kind, source and reason in two bits each, then whether email and
// entered_at are present. The enums must fit their two bits.
static_assert(static_cast<uint8_t>(fb::TransitionKind::MAX) < 4);
static_assert(static_cast<uint8_t>(fb::MembershipSource::MAX) < 4);
static_assert(static_cast<uint8_t>(fb::LeaveReason::MAX) < 4);
// The first byte of every compact element. A flatbuffers element starts with its root
// offset's low byte, always below 64 (the identifier and a vtable of at most 15 fields),
// so an element stored in the wrong family or encoding fails here.
constexpr uint8_t kCompactTag = 0xB4;
constexpr uint8_t kCompactHasEmail = 1u << 6;
constexpr uint8_t kCompactHasEnteredAt = 1u << 7;

}  // namespace

void EncodeTransitionCompact(const TransitionView& t, std::string* out) {
  // Written through a pointer into room for the longest encoding, then cut to size: a
  // sweep encodes one per due item, and appending field by field (a capacity check each)
  // was most of the encoding's time.
  const size_t email_size = t.email ? t.email->size() : 0;
  const size_t max = 2 + 11 * kVarintMax + t.bucket_id.size() + t.bucket_name.size() +
                     t.user_id.size() + email_size + t.dwell_label.size();
  out->resize(max);
  char* const begin = out->data();
  char* p = begin;
  uint8_t flags =
      static_cast<uint8_t>(static_cast<uint8_t>(t.kind) | static_cast<uint8_t>(t.source) << 2 |
                           static_cast<uint8_t>(t.reason) << 4);
  if (t.email) flags |= kCompactHasEmail;
  if (t.entered_at) flags |= kCompactHasEnteredAt;
  *p++ = static_cast<char>(kCompactTag);
  *p++ = static_cast<char>(flags);
  p = PutVarint(t.seq, p);
  p = PutString(t.bucket_id, p);
  p = PutString(t.bucket_name, p);
  p = PutString(t.user_id, p);
  if (t.email) p = PutString(*t.email, p);
  p = PutVarint(t.entry_count, p);
  p = PutString(t.dwell_label, p);
  p = PutVarint(t.dwell_count, p);
  const auto detected = static_cast<uint64_t>(t.detected_at);
  p = PutVarint(Zigzag(detected), p);
  p = PutVarint(Zigzag(static_cast<uint64_t>(t.at) - detected), p);
  if (t.entered_at) {
    p = PutVarint(Zigzag(static_cast<uint64_t>(t.at) - static_cast<uint64_t>(*t.entered_at)), p);
  }
  out->resize(static_cast<size_t>(p - begin));
}

void EncodeTransitionCompact(const Transition& t, std::string* out) {
  EncodeTransitionCompact(TransitionView::Of(t), out);
}

Status DecodeTransitionCompact(std::string_view bytes, Transition* out) {
  CompactReader in(bytes);
  if (in.Byte() != kCompactTag) return Status::Corruption("not a compact transition");
  const uint8_t flags = in.Byte();
  const auto kind = static_cast<fb::TransitionKind>(flags & 3);
  const auto source = static_cast<fb::MembershipSource>((flags >> 2) & 3);
  const auto reason = static_cast<fb::LeaveReason>((flags >> 4) & 3);
  if (in.ok() && (!InRange(kind) || !InRange(source) || !InRange(reason))) {
    return Status::Corruption("transition enum out of range");
  }
  out->kind = CastEnum<TransitionKind>(kind);
  out->source = CastEnum<MembershipSource>(source);
  out->reason = CastEnum<LeaveReason>(reason);
  out->seq = in.Varint();
  in.String(&out->bucket_id);
  in.String(&out->bucket_name);
  in.String(&out->user_id);
  if (flags & kCompactHasEmail) {
    in.String(&out->email.emplace());
  } else {
    out->email.reset();
  }
  out->entry_count = in.Varint32();
  in.String(&out->dwell_label);
  out->dwell_count = in.Varint32();
  const uint64_t detected = Unzigzag(in.Varint());
  const uint64_t at = detected + Unzigzag(in.Varint());
  out->detected_at = static_cast<TimeMs>(detected);
  out->at = static_cast<TimeMs>(at);
  if (flags & kCompactHasEnteredAt) {
    out->entered_at = static_cast<TimeMs>(at - Unzigzag(in.Varint()));
  } else {
    out->entered_at.reset();
  }
  if (!in.ok()) return Status::Corruption("compact transition is truncated or malformed");
  if (!in.at_end()) return Status::Corruption("compact transition has trailing bytes");
  return Status::Ok();
}

}  // namespace bucketd
