// Fuzzes the log's value decoders (log/record_codec.h: DecodeRecord in both property
// encodings, DecodeTransition, DecodeTransitionCompact) and
// the chunk framing around them (log/chunk.h: ChunkReader), with arbitrary bytes as a value
// read back from RocksDB.
//
// Every input is tried as one record, as one transition in each encoding, and as a framed (format
// 2) and an unframed (format 1) chunk whose elements are decoded as both. Beyond "no crash, no
// undefined behaviour, no leak", it checks that a value that decodes re-encodes to bytes
// that decode to the same value (compared through their encodings, so a NaN property
// compares equal to itself), and that an undamaged framed chunk is exactly what ChunkBuilder
// writes for its elements.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "engine/base/check.h"
#include "log/chunk.h"
#include "log/record_codec.h"

namespace bucketd {
namespace {

std::string_view Bytes(const flatbuffers::FlatBufferBuilder& builder) {
  return std::string_view(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                          builder.GetSize());
}

// Values with every field set, to decode into: a decode must overwrite each one (replay
// reuses one Record for millions of records).
Record UsedRecord() {
  Record r;
  r.seq = 7;
  r.at = 7;
  r.kind = RecordKind::kMemberAdd;
  r.user_id = r.event_name = r.bucket_id = r.definition_json = "stale";
  r.occurred_at = 7;
  r.email = r.idempotency_key = "stale";
  r.properties.assign(3, PropertyPatch{"stale", PropertyValue::String("stale")});
  r.event_properties.assign(2, PropertyPatch{"stale", PropertyValue::Number(7)});
  return r;
}

Transition UsedTransition() {
  Transition t;
  t.seq = 7;
  t.kind = TransitionKind::kDwell;
  t.bucket_id = t.bucket_name = t.user_id = t.dwell_label = "stale";
  t.email = "stale";
  t.entry_count = t.dwell_count = 7;
  t.source = MembershipSource::kBackfill;
  t.reason = LeaveReason::kManual;
  t.at = t.detected_at = 7;
  return t;
}

template <typename Value, typename Decode, typename Encode>
void CheckRoundTrip(std::string_view bytes, const Value& used, Decode decode, Encode encode) {
  Value first;
  if (!decode(bytes, &first).ok()) return;
  flatbuffers::FlatBufferBuilder builder;
  encode(first, &builder);
  const std::string encoded(Bytes(builder));

  Value second = used;
  Status status = decode(bytes, &second);
  BUCKETD_CHECK_MSG(status.ok(), status.ToString());
  encode(second, &builder);
  BUCKETD_CHECK_MSG(Bytes(builder) == encoded, "decoding into a used value kept a stale field");

  Value third = used;
  status = decode(encoded, &third);
  BUCKETD_CHECK_MSG(status.ok(), status.ToString());
  encode(third, &builder);
  BUCKETD_CHECK_MSG(Bytes(builder) == encoded, "a decoded value re-encodes differently");
}

// The same for the compact transition encoding (format version 5), which encodes into a
// string.
void CheckCompactRoundTrip(std::string_view bytes, const Transition& used) {
  Transition first;
  if (!DecodeTransitionCompact(bytes, &first).ok()) return;
  std::string encoded;
  EncodeTransitionCompact(first, &encoded);

  Transition second = used;
  Status status = DecodeTransitionCompact(bytes, &second);
  BUCKETD_CHECK_MSG(status.ok(), status.ToString());
  BUCKETD_CHECK_MSG(second == first, "decoding into a used value kept a stale field");

  Transition third = used;
  status = DecodeTransitionCompact(encoded, &third);
  BUCKETD_CHECK_MSG(status.ok(), status.ToString());
  BUCKETD_CHECK_MSG(third == first, "a decoded value re-encodes differently");
}

void DecodeAsBoth(std::string_view bytes) {
  static const Record kUsedRecord = UsedRecord();
  static const Transition kUsedTransition = UsedTransition();
  // Records in both property encodings (format versions 1-5 and 6), whichever the bytes
  // hold: a decoded record must re-encode stably in either.
  for (PropertyEncoding encoding : {PropertyEncoding::kTables, PropertyEncoding::kCompact}) {
    CheckRoundTrip(bytes, kUsedRecord, DecodeRecord,
                   [encoding](const Record& r, flatbuffers::FlatBufferBuilder* builder) {
                     EncodeRecord(r, encoding, builder);
                   });
  }
  CheckRoundTrip(bytes, kUsedTransition, DecodeTransition,
                 [](const Transition& t, flatbuffers::FlatBufferBuilder* builder) {
                   EncodeTransition(t, builder);
                 });
  CheckCompactRoundTrip(bytes, kUsedTransition);
}

void ReadChunk(std::string_view value, bool framed) {
  ChunkReader reader(value, framed);
  ChunkBuilder rebuilt(framed);
  std::string_view element;
  bool broken = false;
  size_t elements = 0;
  while (reader.Next(&element, &broken)) {
    BUCKETD_CHECK(!element.empty() || !framed);
    BUCKETD_CHECK(element.data() >= value.data() &&
                  element.data() + element.size() <= value.data() + value.size());
    DecodeAsBoth(element);
    rebuilt.Add(elements, element);
    ++elements;
  }
  BUCKETD_CHECK(broken == (elements == 0 || (framed && rebuilt.value() != value)));
  BUCKETD_CHECK(!framed || elements == 0 || value.size() >= elements * 5);
  BUCKETD_CHECK(framed || elements <= 1);
}

}  // namespace
}  // namespace bucketd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  bucketd::DecodeAsBoth(bytes);
  bucketd::ReadChunk(bytes, /*framed=*/true);
  bucketd::ReadChunk(bytes, /*framed=*/false);
  return 0;
}
