#pragma once
// Encodes the log's values (log_record.fbs) and decodes them back. Decoding runs the
// flatbuffers Verifier first: bytes read from disk are untrusted until it accepts them.
// Only log/ uses this header.
#include <string>
#include <string_view>

#include <flatbuffers/flatbuffers.h>

#include "bucketd/status.h"
#include "bucketd/types.h"
#include "engine/base/record.h"
#include "engine/base/transition_view.h"

namespace bucketd {

// How a record's property lists are written: flatbuffers `Property` tables (format versions
// 1-5) or the compact encoding (version 6, log_format.md "Compact properties"). DecodeRecord
// reads either.
enum class PropertyEncoding { kTables, kCompact };

// Clears `builder` and finishes the encoding in it; the bytes are
// builder->GetBufferPointer() / GetSize() until the builder's next use.
void EncodeRecord(const Record& record, PropertyEncoding encoding,
                  flatbuffers::FlatBufferBuilder* builder);
void EncodeTransition(const Transition& transition, flatbuffers::FlatBufferBuilder* builder);
void EncodeTransition(const TransitionView& transition, flatbuffers::FlatBufferBuilder* builder);

// Overwrite every field of `out`, reusing its strings' capacity: replay decodes millions of
// records into one Record. Corruption if `bytes` is not a valid encoding.
Status DecodeRecord(std::string_view bytes, Record* out);
Status DecodeTransition(std::string_view bytes, Transition* out);

// Format version 5's transition element (log_format.md, "Compact transitions"): a flags
// byte, varints and length-prefixed strings, ~40% of the flatbuffers encoding's bytes for
// a typical transition. Encode replaces `out`'s contents; Decode checks every length and
// varint against the bytes and wants them consumed exactly (Corruption otherwise).
void EncodeTransitionCompact(const TransitionView& transition, std::string* out);
void EncodeTransitionCompact(const Transition& transition, std::string* out);
Status DecodeTransitionCompact(std::string_view bytes, Transition* out);

}  // namespace bucketd
