#include "log/chunk.h"

namespace bucketd {
namespace {

constexpr size_t kLengthBytes = 4;

}  // namespace

bool ChunkBuilder::Add(uint64_t seq, std::string_view element) {
  if (count_ == 0) first_seq_ = seq;
  ++count_;
  if (!framed_) {
    value_.assign(element);
    return true;
  }
  const auto length = static_cast<uint32_t>(element.size());
  char prefix[kLengthBytes];
  for (size_t i = 0; i < kLengthBytes; ++i) prefix[i] = static_cast<char>(length >> (8 * i));
  value_.append(prefix, kLengthBytes);
  value_.append(element);
  return count_ >= kChunkElementsMax || value_.size() >= kChunkBytesMax;
}

void ChunkBuilder::Clear() {
  value_.clear();
  count_ = 0;
}

bool ChunkReader::Next(std::string_view* element, bool* broken) {
  *broken = false;
  if (rest_.empty()) {
    *broken = taken_ == 0;
    return false;
  }
  ++taken_;
  if (!framed_) {
    *element = rest_;
    rest_ = {};
    return true;
  }
  if (rest_.size() < kLengthBytes) {
    *broken = true;
    return false;
  }
  uint32_t length = 0;
  for (size_t i = 0; i < kLengthBytes; ++i) {
    length |= static_cast<uint32_t>(static_cast<uint8_t>(rest_[i])) << (8 * i);
  }
  rest_.remove_prefix(kLengthBytes);
  if (length == 0 || length > rest_.size()) {
    *broken = true;
    return false;
  }
  *element = rest_.substr(0, length);
  rest_.remove_prefix(length);
  return true;
}

}  // namespace bucketd
