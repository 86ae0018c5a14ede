#pragma once
// Chunks: how the records and transitions families pack consecutive elements (each one
// flatbuffers value) into one RocksDB value, keyed by the first element's seq
// (log_format.md, "Chunks"). Packing cuts the per-key work of every write (memtable
// inserts, flush, index entries) and of every scan. Only log.cc uses this.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bucketd {

// A chunk is closed after this many elements or bytes (or at the end of a commit: a chunk
// never spans two write batches).
inline constexpr size_t kChunkElementsMax = 64;
inline constexpr size_t kChunkBytesMax = 64 * 1024;

// Collects consecutive elements into one value. Framed (format version 2): each element
// is a 4-byte little-endian length, then its bytes. Unframed (version 1): the value is a
// single element's bytes, so every element closes its chunk.
class ChunkBuilder {
 public:
  explicit ChunkBuilder(bool framed = true) : framed_(framed) {}

  bool empty() const { return count_ == 0; }
  uint64_t first_seq() const { return first_seq_; }
  // Appends the element holding `seq` (the previous one's seq + 1). True when the chunk is
  // full: store value(), then Clear().
  bool Add(uint64_t seq, std::string_view element);
  std::string_view value() const { return value_; }
  void Clear();

 private:
  bool framed_;
  std::string value_;
  size_t count_ = 0;
  uint64_t first_seq_ = 0;
};

// Splits a stored value back into its elements.
class ChunkReader {
 public:
  ChunkReader() = default;
  ChunkReader(std::string_view value, bool framed) : rest_(value), framed_(framed) {}

  // The next element; false at the end of the value, with *broken set if the framing is
  // damaged (a length running past the end, or a value with no element at all).
  bool Next(std::string_view* element, bool* broken);

 private:
  std::string_view rest_;
  bool framed_ = true;
  size_t taken_ = 0;
};

}  // namespace bucketd
