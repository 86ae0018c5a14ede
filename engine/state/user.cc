#include "engine/state/user.h"

#include <type_traits>

namespace bucketd {
namespace {

// Where the stream's history is, or would go (the arrays are sorted by stream id).
template <typename History>
size_t PlaceOf(std::span<History> histories, uint32_t stream_id) {
  return static_cast<size_t>(
      std::ranges::lower_bound(histories, stream_id, {}, &History::stream_id) - histories.begin());
}

template <typename History>
History* FindById(std::span<History> histories, uint32_t stream_id) {
  const size_t at = PlaceOf(histories, stream_id);
  return at < histories.size() && histories[at].stream_id() == stream_id ? &histories[at] : nullptr;
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
History* LegHistories::Grow(size_t at) {
  constexpr bool kAggregate = std::is_same_v<History, AggregateHistory>;
  const size_t none = SIZE_MAX;  // no gap
  Header* grown =
      Allocate(AggregateCount() + (kAggregate ? 1 : 0), SequenceCount() + (kAggregate ? 0 : 1));
  MoveAround(aggregates(), AggregatesOf(grown), kAggregate ? at : none);
  MoveAround(sequences(), SequencesOf(grown), kAggregate ? none : at);
  History* added;
  if constexpr (kAggregate) {
    added = new (AggregatesOf(grown) + at) AggregateHistory();
  } else {
    added = new (SequencesOf(grown) + at) SequenceHistory();
  }
  clear();
  block_ = grown;
  return added;
}

template <typename History>
History& LegHistories::FindOrInsertIn(std::span<History> histories, uint32_t stream_id) {
  if (History* found = FindById(histories, stream_id)) return *found;
  History* added = Grow<History>(PlaceOf(histories, stream_id));
  added->set_stream_id(stream_id);
  return *added;
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

}  // namespace bucketd
