// ReadAheadReader: the same records as the plain reader, in order, through Next and
// NextBatch and across batch boundaries; a prompt stop when the consumer quits early; errors
// reported after the records that preceded them.
#include "log/read_ahead.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <rocksdb/db.h>
#include <catch2/catch.hpp>

#include "tests/log_test_support.h"
#include "tests/test_support.h"

#include "log/log.h"

namespace bucketd {
namespace {

using testing::TempDir;

// Async: these tests read logs, they do not test durability.
std::unique_ptr<Log> OpenLog(const std::string& path) {
  return testing::OpenLog(path, /*sync=*/false);
}

// A record of a kind and content that depend on its seq, so neighbours differ in kind and
// in which fields are set (a recycled Record must not keep a field of an earlier one).
Record VariedRecord(uint64_t seq) {
  Record r;
  r.seq = seq;
  r.at = 1'700'000'000'000 + static_cast<TimeMs>(seq) * 10;
  const std::string n = std::to_string(seq);
  switch (seq % 7) {
    case 0:
    case 1:
    case 2:
      r.kind = RecordKind::kEvent;
      r.user_id = "user-" + std::to_string(seq % 313);
      r.event_name = seq % 2 == 0 ? "page_view" : "purchase";
      r.occurred_at = r.at - static_cast<TimeMs>(seq % 5);
      if (seq % 3 == 0) r.email = "u" + n + "@example.com";
      if (seq % 4 != 0) r.idempotency_key = "evt-" + n;
      for (uint64_t i = 0; i < seq % 4; ++i) {
        r.properties.push_back({"p" + std::to_string(i), PropertyValue::Number(seq * i)});
      }
      if (seq % 5 == 0) r.properties.push_back({"gone", PropertyValue::Null()});
      break;
    case 3:
      r.kind = RecordKind::kBucketDefine;
      r.bucket_id = "b" + std::to_string(seq % 11);
      r.definition_json =
          R"({"id":")" + r.bucket_id + R"(","name":"bucket )" + n + R"(","criteria":{"all":[]}})";
      break;
    case 4:
      r.kind = seq % 2 == 0 ? RecordKind::kMemberAdd : RecordKind::kMemberRemove;
      r.user_id = "user-" + std::to_string(seq % 313);
      r.bucket_id = "b" + std::to_string(seq % 11);
      break;
    case 5:
      r.kind = seq % 2 == 0 ? RecordKind::kBucketEnable : RecordKind::kBucketDisable;
      r.bucket_id = "b" + std::to_string(seq % 11);
      break;
    default:
      r.kind = seq % 2 == 0 ? RecordKind::kContactDelete : RecordKind::kSweep;
      if (r.kind == RecordKind::kContactDelete) r.user_id = "user-" + std::to_string(seq % 313);
      break;
  }
  return r;
}

void WriteLog(const std::string& path, uint64_t count, uint64_t commit_every = 1000) {
  auto log = OpenLog(path);
  for (uint64_t seq = 1; seq <= count; ++seq) {
    log->Stage(VariedRecord(seq), {});
    if (seq % commit_every == 0) REQUIRE(log->Commit().ok());
  }
  REQUIRE(log->Commit().ok());
}

// Reads like a replay does, into one reused Record, and scribbles on it after copying, so
// a record that comes back for reuse holds stale values the next decode must overwrite.
std::vector<Record> DrainNext(RecordReader* reader) {
  std::vector<Record> records;
  Record record;
  while (reader->Next(&record)) {
    records.push_back(record);
    record.definition_json = "stale";
    record.email = "stale@example.com";
    record.properties.push_back({"stale", PropertyValue::Bool(true)});
  }
  return records;
}

std::vector<Record> DrainBatches(ReadAheadReader* reader, size_t batch_size,
                                 std::vector<size_t>* sizes) {
  std::vector<Record> records;
  std::vector<Record> batch;
  while (reader->NextBatch(&batch)) {
    sizes->push_back(batch.size());
    records.insert(records.end(), batch.begin(), batch.end());
    for (Record& r : batch) r.user_id = "stale";
  }
  CHECK_FALSE(reader->NextBatch(&batch));  // the end stays the end
  for (size_t i = 0; i < sizes->size(); ++i) {
    INFO("batch " << i << " of " << sizes->size());
    CHECK((*sizes)[i] > 0);
    if (i + 1 < sizes->size()) CHECK((*sizes)[i] == batch_size);
    CHECK((*sizes)[i] <= batch_size);
  }
  return records;
}

void CheckSame(const std::vector<Record>& got, const std::vector<Record>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) FAIL("record " << i << " (seq " << want[i].seq << ") differs");
  }
}

// Counts the records the background thread has pulled, to see how far ahead it reads.
class CountingReader final : public RecordReader {
 public:
  CountingReader(std::unique_ptr<RecordReader> inner, std::atomic<uint64_t>* count)
      : inner_(std::move(inner)), count_(count) {}
  bool Next(Record* out) override {
    if (!inner_->Next(out)) return false;
    count_->fetch_add(1);
    return true;
  }
  Status status() const override { return inner_->status(); }

 private:
  std::unique_ptr<RecordReader> inner_;
  std::atomic<uint64_t>* count_;
};

// Yields records 1..n, then fails (or ends cleanly with `fail` false).
class FakeReader final : public RecordReader {
 public:
  FakeReader(uint64_t n, bool fail, std::atomic<bool>* destroyed = nullptr)
      : n_(n), fail_(fail), destroyed_(destroyed) {}
  ~FakeReader() override {
    if (destroyed_ != nullptr) destroyed_->store(true);
  }
  bool Next(Record* out) override {
    if (!status_.ok()) std::abort();  // nobody may read on after an error
    if (next_ > n_) {
      if (fail_) status_ = Status::Corruption("record " + std::to_string(next_) + " is damaged");
      return false;
    }
    *out = VariedRecord(next_++);
    return true;
  }
  Status status() const override { return status_; }

 private:
  const uint64_t n_;
  const bool fail_;
  std::atomic<bool>* destroyed_;
  uint64_t next_ = 1;
  Status status_;
};

std::vector<Record> VariedRecords(uint64_t first, uint64_t last) {
  std::vector<Record> records;
  for (uint64_t seq = first; seq <= last; ++seq) records.push_back(VariedRecord(seq));
  return records;
}

struct Shape {
  size_t batch_size;
  size_t queue_depth;
};

TEST_CASE("read-ahead delivers the plain reader's records in order") {
  constexpr uint64_t kCount = 10'000;
  TempDir dir;
  WriteLog(dir.log(), kCount);
  auto log = OpenLog(dir.log());
  const uint64_t from = GENERATE(as<uint64_t>(), 1, 4'321);
  std::unique_ptr<RecordReader> plain = log->ReadFrom(from);
  const std::vector<Record> want = DrainNext(plain.get());
  REQUIRE(plain->status().ok());
  REQUIRE(want.size() == kCount - from + 1);
  REQUIRE(want.front() == VariedRecord(from));
  REQUIRE(want.back() == VariedRecord(kCount));

  const Shape shape = GENERATE(Shape{7, 2}, Shape{1, 1}, Shape{3, 1}, Shape{1024, 4},
                               Shape{1000, 3}, Shape{kCount, 1}, Shape{2 * kCount, 2}, Shape{0, 0});
  INFO("from " << from << ", batch " << shape.batch_size << ", depth " << shape.queue_depth);

  SECTION("via Next") {
    ReadAheadReader reader(log->ReadFrom(from), shape.batch_size, shape.queue_depth);
    CheckSame(DrainNext(&reader), want);
    CHECK(reader.status().ok());
    Record record;
    CHECK_FALSE(reader.Next(&record));
    CHECK(reader.status().ok());
  }
  SECTION("via NextBatch") {
    ReadAheadReader reader(log->ReadFrom(from), shape.batch_size, shape.queue_depth);
    std::vector<size_t> sizes;
    CheckSame(DrainBatches(&reader, std::max<size_t>(shape.batch_size, 1), &sizes), want);
    CHECK(reader.status().ok());
  }
}

TEST_CASE("Log::ReadAheadFrom reads with the defaults") {
  TempDir dir;
  WriteLog(dir.log(), 3'000);
  auto log = OpenLog(dir.log());
  std::unique_ptr<ReadAheadReader> reader = log->ReadAheadFrom(0);  // 0: from the start
  std::vector<size_t> sizes;
  CheckSame(DrainBatches(reader.get(), ReadAheadReader::kDefaultBatchSize, &sizes),
            VariedRecords(1, 3'000));
  CHECK(sizes == std::vector<size_t>{1024, 1024, 952});
  CHECK(reader->status().ok());
  CheckSame(DrainNext(log->ReadAheadFrom(2'990).get()), VariedRecords(2'990, 3'000));
}

TEST_CASE("Next and NextBatch mix, each record delivered once") {
  constexpr uint64_t kCount = 5'000;
  TempDir dir;
  WriteLog(dir.log(), kCount);
  auto log = OpenLog(dir.log());
  const uint64_t seed = GENERATE(1, 2, 3, 4);
  std::mt19937_64 random(seed);
  ReadAheadReader reader(log->ReadFrom(1), 7, 2);
  std::vector<Record> got;
  Record record;
  std::vector<Record> batch;
  for (;;) {
    if (random() % 3 == 0) {
      if (!reader.NextBatch(&batch)) break;
      REQUIRE_FALSE(batch.empty());
      CHECK(batch.size() <= 7);
      got.insert(got.end(), batch.begin(), batch.end());
    } else {
      if (!reader.Next(&record)) break;
      got.push_back(record);
    }
  }
  CHECK(reader.status().ok());
  CheckSame(got, VariedRecords(1, kCount));

  // Next, then NextBatch: the rest of the current batch comes first.
  ReadAheadReader again(log->ReadFrom(1), 7, 2);
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    REQUIRE(again.Next(&record));
    CHECK(record == VariedRecord(seq));
  }
  REQUIRE(again.NextBatch(&batch));
  CheckSame(batch, VariedRecords(4, 7));
  REQUIRE(again.NextBatch(&batch));
  CheckSame(batch, VariedRecords(8, 14));
  REQUIRE(again.Next(&record));
  CHECK(record == VariedRecord(15));
}

TEST_CASE("an empty log reads as empty") {
  TempDir dir;
  auto log = OpenLog(dir.log());
  SECTION("via Next") {
    std::unique_ptr<ReadAheadReader> reader = log->ReadAheadFrom(1);
    Record record;
    CHECK_FALSE(reader->Next(&record));
    CHECK(reader->status().ok());
    CHECK_FALSE(reader->Next(&record));
  }
  SECTION("via NextBatch") {
    ReadAheadReader reader(log->ReadFrom(1), 7, 2);
    std::vector<Record> batch = VariedRecords(1, 2);
    CHECK_FALSE(reader.NextBatch(&batch));
    CHECK(batch.size() == 2);  // left as it was
    CHECK(reader.status().ok());
  }
  SECTION("past the end of a non-empty log") {
    log->Stage(VariedRecord(1), {});
    REQUIRE(log->Commit().ok());
    ReadAheadReader reader(log->ReadFrom(2), 7, 2);
    Record record;
    CHECK_FALSE(reader.Next(&record));
    CHECK(reader.status().ok());
  }
}

TEST_CASE("stopping early stops the background thread, even when it waits on a full queue") {
  constexpr uint64_t kCount = 10'000;
  constexpr size_t kBatch = 7;
  constexpr size_t kDepth = 2;
  TempDir dir;
  WriteLog(dir.log(), kCount);
  auto log = OpenLog(dir.log());
  const uint64_t consumed = GENERATE(as<uint64_t>(), 0, 3, 7, 8, 100);
  INFO("consumed " << consumed);
  std::atomic<uint64_t> pulled{0};
  {
    ReadAheadReader reader(std::make_unique<CountingReader>(log->ReadFrom(1), &pulled), kBatch,
                           kDepth);
    std::vector<Record> got;
    Record record;
    while (got.size() < consumed) {
      REQUIRE(reader.Next(&record));
      got.push_back(record);
    }
    CheckSame(got, VariedRecords(1, consumed));
    // The producer stops when the queue is full: kDepth batches queued plus the one it holds,
    // on top of the batch the consumer reads from (none yet if nothing was consumed).
    const uint64_t batches_taken = (consumed + kBatch - 1) / kBatch;
    const uint64_t blocked_at = (batches_taken + kDepth + 1) * kBatch;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (pulled.load() < blocked_at && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE(pulled.load() == blocked_at);
    // ... and stays there: the read-ahead is bounded.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(pulled.load() == blocked_at);
  }  // The destructor must unblock and join it: this test finishing is the assertion.
  CHECK(pulled.load() < kCount);
}

TEST_CASE("destroying the reader while the producer is mid-batch or done does not hang") {
  std::atomic<bool> destroyed{false};
  SECTION("mid-way through a big log") {
    auto reader = std::make_unique<ReadAheadReader>(
        std::make_unique<FakeReader>(1'000'000, false, &destroyed), 1024, 4);
    Record record;
    REQUIRE(reader->Next(&record));
    CHECK(record == VariedRecord(1));
    reader.reset();
  }
  SECTION("after the producer has finished") {
    auto reader = std::make_unique<ReadAheadReader>(
        std::make_unique<FakeReader>(10, true, &destroyed), 1024, 4);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    reader.reset();
  }
  SECTION("immediately") {
    std::make_unique<ReadAheadReader>(std::make_unique<FakeReader>(1'000'000, false, &destroyed))
        .reset();
  }
  CHECK(destroyed.load());  // the inner reader goes with it
}

TEST_CASE("an inner reader's error comes after every record before it") {
  const uint64_t n = GENERATE(as<uint64_t>(), 0, 1, 6, 7, 8, 14, 1'000);
  INFO(n << " good records");
  SECTION("via Next") {
    ReadAheadReader reader(std::make_unique<FakeReader>(n, true), 7, 2);
    std::vector<Record> got;
    Record record;
    while (reader.Next(&record)) {
      got.push_back(record);
      // The producer has long seen the error, but it is not the consumer's yet.
      REQUIRE(reader.status().ok());
    }
    CheckSame(got, VariedRecords(1, n));
    CHECK(reader.status().code() == StatusCode::kCorruption);
    CHECK(reader.status().message() == "record " + std::to_string(n + 1) + " is damaged");
    CHECK_FALSE(reader.Next(&record));
    CHECK(reader.status().code() == StatusCode::kCorruption);
  }
  SECTION("via NextBatch") {
    ReadAheadReader reader(std::make_unique<FakeReader>(n, true), 7, 2);
    std::vector<Record> got;
    std::vector<Record> batch;
    while (reader.NextBatch(&batch)) {
      got.insert(got.end(), batch.begin(), batch.end());
      REQUIRE(reader.status().ok());
    }
    CheckSame(got, VariedRecords(1, n));
    CHECK(reader.status().code() == StatusCode::kCorruption);
    CHECK_FALSE(reader.NextBatch(&batch));
    CHECK(reader.status().code() == StatusCode::kCorruption);
  }
}

TEST_CASE("a damaged log through read-ahead: the records before the damage, then corruption") {
  TempDir dir;
  WriteLog(dir.log(), 50, 19);  // commits end chunks: records 1-19, 20-38, 39-50
  {
    // Delete the chunk of records 20-38 behind the log's back: the plain reader stops there
    // with corruption.
    std::vector<std::string> names;
    REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.log(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& name : names) {
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), dir.log(), descriptors, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    const std::string key("\0\0\0\0\0\0\0\x14", 8);  // big-endian 20
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "records") REQUIRE(db->Delete(rocksdb::WriteOptions(), handles[i], key).ok());
    }
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      REQUIRE(db->DestroyColumnFamilyHandle(handle).ok());
    }
  }
  auto log = OpenLog(dir.log());
  std::unique_ptr<RecordReader> plain = log->ReadFrom(5);
  CheckSame(DrainNext(plain.get()), VariedRecords(5, 19));
  REQUIRE(plain->status().code() == StatusCode::kCorruption);

  const Shape shape = GENERATE(Shape{7, 2}, Shape{1024, 4}, Shape{15, 1});
  INFO("batch " << shape.batch_size << ", depth " << shape.queue_depth);
  ReadAheadReader reader(log->ReadFrom(5), shape.batch_size, shape.queue_depth);
  std::vector<Record> got;
  Record record;
  while (reader.Next(&record)) {
    got.push_back(record);
    REQUIRE(reader.status().ok());
  }
  CheckSame(got, VariedRecords(5, 19));
  CHECK(reader.status().code() == StatusCode::kCorruption);
  CHECK(reader.status().message() == plain->status().message());
}

}  // namespace
}  // namespace bucketd
