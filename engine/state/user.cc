#include "engine/state/user.h"

#include <type_traits>

namespace bucketd {
namespace {

template <typename History>
History* FindById(std::span<History> histories, uint32_t stream_id) {
  auto it = std::ranges::lower_bound(histories, stream_id, {}, &History::stream_id);
  return it != histories.end() && it->stream_id == stream_id ? &*it : nullptr;
}

template <typename History>
size_t PlaceOf(std::span<History> histories, uint32_t stream_id) {
  return static_cast<size_t>(
      std::ranges::lower_bound(histories, stream_id, {}, &History::stream_id) - histories.begin());
}

// Move-constructs `from` into the raw memory at `to`, leaving a place for one more before
// `from[gap]` (none when gap >= from.size(); the caller fills a gap at the end).
template <typename History>
void MoveAround(std::span<History> from, History* to, size_t gap) {
  for (size_t i = 0; i < from.size(); ++i) new (to + i + (i >= gap)) History(std::move(from[i]));
}

}  // namespace

LegHistories& LegHistories::operator=(const LegHistories& other) {
  if (this == &other) return *this;
  clear();
  if (other.empty()) return *this;
  Header* block = Allocate(other.AggregateCount(), other.SequenceCount());
  std::uninitialized_copy(other.aggregates().begin(), other.aggregates().end(),
                          AggregatesOf(block));
  std::uninitialized_copy(other.sequences().begin(), other.sequences().end(), SequencesOf(block));
  block_ = block;
  return *this;
}

void LegHistories::clear() {
  if (block_ == nullptr) return;
  std::destroy(aggregates().begin(), aggregates().end());
  std::destroy(sequences().begin(), sequences().end());
  ::operator delete(block_);
  block_ = nullptr;
}

const AggregateHistory* LegHistories::FindAggregate(uint32_t stream_id) const {
  return FindById(aggregates(), stream_id);
}

const SequenceHistory* LegHistories::FindSequence(uint32_t stream_id) const {
  return FindById(sequences(), stream_id);
}

template <typename History>
History& LegHistories::FindOrInsertIn(std::span<History> histories, uint32_t stream_id) {
  const size_t at = PlaceOf(histories, stream_id);
  if (at < histories.size() && histories[at].stream_id == stream_id) return histories[at];
  auto* h = static_cast<History*>(Grow(std::is_same_v<History, AggregateHistory>, at));
  h->stream_id = stream_id;
  return *h;
}

AggregateHistory& LegHistories::FindOrInsertAggregate(uint32_t stream_id) {
  return FindOrInsertIn(aggregates(), stream_id);
}

SequenceHistory& LegHistories::FindOrInsertSequence(uint32_t stream_id) {
  return FindOrInsertIn(sequences(), stream_id);
}

void LegHistories::SortByStream() {
  std::ranges::sort(aggregates(), {}, &AggregateHistory::stream_id);
  std::ranges::sort(sequences(), {}, &SequenceHistory::stream_id);
}

void LegHistories::Resize(size_t aggregates, size_t sequences) {
  BUCKETD_CHECK(empty());
  if (aggregates + sequences == 0) return;
  Header* block = Allocate(aggregates, sequences);
  std::uninitialized_value_construct_n(AggregatesOf(block), aggregates);
  std::uninitialized_value_construct_n(SequencesOf(block), sequences);
  block_ = block;
}

LegHistories::Header* LegHistories::Allocate(size_t aggregates, size_t sequences) {
  BUCKETD_CHECK(aggregates <= UINT32_MAX && sequences <= UINT32_MAX);
  return new (::operator new(BlockBytes(aggregates, sequences)))
      Header{static_cast<uint32_t>(aggregates), static_cast<uint32_t>(sequences)};
}

void* LegHistories::Grow(bool aggregate, size_t at) {
  const size_t aggregates = AggregateCount(), sequences = SequenceCount();
  Header* grown = Allocate(aggregates + (aggregate ? 1 : 0), sequences + (aggregate ? 0 : 1));
  const size_t none = SIZE_MAX;  // no gap
  MoveAround(this->aggregates(), AggregatesOf(grown), aggregate ? at : none);
  MoveAround(this->sequences(), SequencesOf(grown), aggregate ? none : at);
  void* added = aggregate ? static_cast<void*>(new (AggregatesOf(grown) + at) AggregateHistory())
                          : static_cast<void*>(new (SequencesOf(grown) + at) SequenceHistory());
  clear();
  block_ = grown;
  return added;
}

}  // namespace bucketd
