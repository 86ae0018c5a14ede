// Damaged files and failing disks: each test really damages a file of a data dir (or fills
// the disk under it) and checks that the damage is reported, never silently skipped, and
// that nothing acknowledged is lost.
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/metadata.h>
#include <catch2/catch.hpp>

#include "log/log.h"
#include "tests/command_test_support.h"
#include "tests/log_test_support.h"
#include "tests/test_support.h"

namespace bucketd {
namespace {

namespace fs = std::filesystem;
using testing::kT0;
using testing::ManualOptions;
using testing::OpenLog;
using testing::OpenOrFail;
using testing::RequireOk;
using testing::TempDir;

// An event that folds on an empty engine: user u<seq>, one event each.
Record UserEvent(uint64_t seq) {
  Record r;
  r.seq = seq;
  r.at = kT0 + static_cast<TimeMs>(seq);
  r.kind = RecordKind::kEvent;
  r.user_id = "u" + std::to_string(seq);
  r.event_name = "x";
  r.occurred_at = r.at;
  r.idempotency_key = "k" + std::to_string(seq);
  return r;
}

// Writes records 1..count in commits of `per_commit` and closes the log without flushing
// its memtables, as a killed process leaves it: every record is only in the write-ahead file.
void WriteUnflushed(const std::string& path, uint64_t count, uint64_t per_commit) {
  auto log = OpenLog(path, /*sync=*/false);
  for (uint64_t seq = 1; seq <= count; ++seq) {
    log->Stage(UserEvent(seq), {});
    if (seq % per_commit == 0) RequireOk(log->Commit());
  }
  RequireOk(log->Commit());
}

// The largest file of `dir` whose name ends with `suffix`.
std::string LargestFile(const std::string& dir, const std::string& suffix) {
  std::string best;
  uintmax_t best_size = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(suffix) || entry.file_size() <= best_size) continue;
    best = entry.path().string();
    best_size = entry.file_size();
  }
  REQUIRE(!best.empty());
  return best;
}

// Inverts the byte at `offset`.
void FlipByte(const std::string& path, uintmax_t offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(file.good());
  file.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  file.get(c);
  file.seekp(static_cast<std::streamoff>(offset));
  file.put(static_cast<char>(~c));
  REQUIRE(file.good());
}

// The table file (path) of one column family of a closed log.
std::string TableFileOf(const std::string& log_path, const std::string& family) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), log_path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names)
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), log_path, descriptors, &handles, &raw)
              .ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::vector<rocksdb::LiveFileMetaData> files;
  db->GetLiveFilesMetaData(&files);
  for (auto* handle : handles) db->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  std::string found;
  for (const rocksdb::LiveFileMetaData& f : files) {
    if (f.column_family_name == family) found = f.db_path + f.name;
  }
  REQUIRE(!found.empty());
  return found;
}

using Run = testing::CommandRun;

// Runs bucketctl with `args`, capturing stdout and stderr.
Run Bucketctl(const std::string& args) {
  const char* bin = std::getenv("BUCKETCTL_BIN");
  REQUIRE(bin != nullptr);
  return testing::RunCommand(std::string(bin) + " " + args + " 2>&1");
}

std::string Digest(const std::string& dir, bool use_snapshots) {
  Options options = ManualOptions(dir);
  options.read_only = true;
  options.use_snapshots = use_snapshots;
  return OpenOrFail(options)->State().digest;
}

bool Contains(const std::vector<std::string>& lines, const std::string& part) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& line) { return line.find(part) != std::string::npos; });
}

}  // namespace

TEST_CASE(
    "damage in the middle of the write-ahead file stops the start; salvage keeps the "
    "records before it") {
  TempDir dir;
  constexpr uint64_t kRecords = 3000;
  WriteUnflushed(dir.log(), kRecords, 10);
  const std::string wal = LargestFile(dir.log(), ".log");
  FlipByte(wal, fs::file_size(wal) / 2);

  std::unique_ptr<Engine> engine;
  const Status opened = Engine::Open(ManualOptions(dir.path()), &engine);
  INFO(opened.ToString());
  CHECK(opened.code() == StatusCode::kCorruption);
  CHECK(opened.message().find("damaged before its end") != std::string::npos);
  CHECK(opened.message().find("bucketctl salvage") != std::string::npos);

  // Looking changes nothing; truncating keeps a prefix, on an explicit request only.
  const Run look = Bucketctl("salvage --data " + dir.path());
  INFO(look.output);
  CHECK(look.exit_code == 1);
  CHECK(look.output.find("readable before the damage") != std::string::npos);
  CHECK(Engine::Open(ManualOptions(dir.path()), &engine).code() == StatusCode::kCorruption);

  const Run cut = Bucketctl("salvage --truncate --data " + dir.path());
  INFO(cut.output);
  REQUIRE(cut.exit_code == 0);
  engine = OpenOrFail(ManualOptions(dir.path()));
  const uint64_t kept = engine->State().log_seq;
  CHECK(kept > 0);
  CHECK(kept < kRecords);
  // What is kept is whole commits, and exactly the prefix.
  CHECK(kept % 10 == 0);
  CHECK(engine->Stats().contacts == kept);
  engine.reset();
  CHECK(Bucketctl("verify --data " + dir.path()).exit_code == 0);
}

TEST_CASE("a torn tail of the write-ahead file (a write the crash cut short) is dropped") {
  TempDir dir;
  WriteUnflushed(dir.log(), 3000, 10);
  const std::string wal = LargestFile(dir.log(), ".log");
  fs::resize_file(wal, fs::file_size(wal) - 7);
  auto engine = OpenOrFail(ManualOptions(dir.path()));
  CHECK(engine->State().log_seq == 2990);
}

TEST_CASE("damage in a table file of records fails the start and bucketctl verify") {
  TempDir dir;
  {
    auto log = OpenLog(dir.log(), false);
    for (uint64_t seq = 1; seq <= 20000; ++seq) {
      log->Stage(UserEvent(seq), {});
      if (seq % 100 == 0) RequireOk(log->Commit());
    }
    RequireOk(log->Flush());
  }
  const std::string table = TableFileOf(dir.log(), "records");
  FlipByte(table, fs::file_size(table) / 3);
  std::unique_ptr<Engine> engine;
  const Status opened = Engine::Open(ManualOptions(dir.path()), &engine);
  INFO(opened.ToString());
  CHECK(opened.code() == StatusCode::kCorruption);
  const Run verify = Bucketctl("verify --data " + dir.path());
  INFO(verify.output);
  CHECK(verify.exit_code != 0);
  CHECK(verify.output.find("orruption") != std::string::npos);
}

TEST_CASE("a snapshot beyond the log's end is set aside, never loaded once new writes pass it") {
  TempDir dir;
  const std::string saved_log = dir.path() + "/log-before-tail";
  const auto ingest = [](Engine& engine, int from, int to) {
    for (int n = from; n < to; ++n) {
      IngestResult r;
      RequireOk(
          engine.Ingest({"u" + std::to_string(n), "x", std::nullopt, std::nullopt, {}, {}}, &r));
    }
  };
  {
    auto engine = OpenOrFail(ManualOptions(dir.path()));
    RequireOk(engine->DefineBucket(
        R"({"id":"seen","criteria":{"type":"event","eventName":"x","check":"exists"}})",
        DefineMode::kCreate, std::nullopt, nullptr));
    ingest(*engine, 0, 50);
  }
  fs::copy(dir.log(), saved_log, fs::copy_options::recursive);
  {
    auto engine = OpenOrFail(ManualOptions(dir.path()));
    ingest(*engine, 50, 100);
    RequireOk(engine->DeleteContact("u10"));
    SnapshotInfo info;
    RequireOk(engine->TakeSnapshot(&info));
  }
  // The log loses its tail (a restore from an older copy, a salvage): records 52..102 gone.
  fs::remove_all(dir.log());
  fs::rename(saved_log, dir.log());

  std::vector<std::string> warnings;
  {
    auto engine = OpenOrFail(ManualOptions(dir.path()), &warnings);
    CHECK(Contains(warnings, "beyond the log's last record"));
    ingest(*engine, 200, 300);  // the log passes the old snapshot's seq
  }
  CHECK(fs::exists(dir.snapshots() + "/set-aside"));
  auto engine = OpenOrFail(ManualOptions(dir.path()));
  Member m;
  CHECK(engine->GetMember("seen", "u10", &m).ok());
  CHECK(engine->GetMember("seen", "u60", &m).code() == StatusCode::kNotFound);
  uint64_t count = 0;
  RequireOk(engine->Count("seen", &count));
  CHECK(count == 150);
  const std::string live = engine->State().digest;
  engine.reset();
  CHECK(Digest(dir.path(), false) == live);
}

TEST_CASE(
    "a damaged idempotency block refuses inputs with the reason, keeps reads, and fails "
    "verify") {
  TempDir dir;
  constexpr int kEvents = 4000;
  {
    Options options = ManualOptions(dir.path());
    auto engine = OpenOrFail(options);
    RequireOk(engine->DefineBucket(
        R"({"id":"seen","criteria":{"type":"event","eventName":"x","check":"exists"}})",
        DefineMode::kCreate, std::nullopt, nullptr));
    std::vector<EventInput> batch;
    for (int n = 0; n < kEvents; ++n) {
      batch.push_back({"u" + std::to_string(n),
                       "x",
                       std::nullopt,
                       std::nullopt,
                       {},
                       "key-" + std::to_string(n)});
    }
    BatchResult result;
    RequireOk(engine->IngestBatch(batch, &result));
    REQUIRE(result.accepted == kEvents);
  }  // Close() writes the memtables into table files
  const std::string table = TableFileOf(dir.log(), "idempotency");
  FlipByte(table, fs::file_size(table) / 4);

  auto engine = OpenOrFail(ManualOptions(dir.path()));  // replay needs no idempotency key
  CHECK(engine->Health().ok());
  // Retries of events already logged: the one whose key sits in the damaged block is
  // refused with the reason instead of being taken for new (or crashing the process).
  Status refused;
  for (int n = 0; n < kEvents && refused.ok(); ++n) {
    IngestResult r;
    refused = engine->Ingest(
        {"u" + std::to_string(n), "x", std::nullopt, std::nullopt, {}, "key-" + std::to_string(n)},
        &r);
    if (refused.ok()) CHECK(r.duplicate);
  }
  INFO(refused.ToString());
  REQUIRE(refused.code() == StatusCode::kCorruption);
  CHECK(engine->Health().code() == StatusCode::kCorruption);
  // Every later input is refused with the same reason; reads go on.
  IngestResult r;
  CHECK(engine->Ingest({"new", "x", std::nullopt, std::nullopt, {}, {}}, &r).code() ==
        StatusCode::kCorruption);
  uint64_t count = 0;
  RequireOk(engine->Count("seen", &count));
  CHECK(count == kEvents);
  engine.reset();

  const Run verify = Bucketctl("verify --data " + dir.path());
  INFO(verify.output);
  CHECK(verify.exit_code != 0);
}

TEST_CASE("a damaged transitions block is reported to readers of the stream and fails verify") {
  TempDir dir;
  constexpr int kEvents = 4000;
  {
    auto engine = OpenOrFail(ManualOptions(dir.path()));
    RequireOk(engine->DefineBucket(
        R"({"id":"seen","criteria":{"type":"event","eventName":"x","check":"exists"}})",
        DefineMode::kCreate, std::nullopt, nullptr));
    std::vector<EventInput> batch;
    for (int n = 0; n < kEvents; ++n) {
      batch.push_back({"u" + std::to_string(n), "x", std::nullopt, std::nullopt, {}, {}});
    }
    BatchResult result;
    RequireOk(engine->IngestBatch(batch, &result));
    REQUIRE(result.transitions == kEvents);  // one `entered` each
  }
  const std::string table = TableFileOf(dir.log(), "transitions");
  FlipByte(table, fs::file_size(table) / 4);

  // The fold does not read the stream: the engine opens and takes inputs. A reader paging
  // through the stream gets Corruption at the damaged block, never a silently shorter stream.
  auto engine = OpenOrFail(ManualOptions(dir.path()));
  Status read;
  uint64_t after = 0;
  for (std::vector<Transition> page; read.ok();) {
    read = engine->ReadTransitions(after, 100, &page);
    if (!read.ok() || page.empty()) break;
    for (const Transition& t : page) REQUIRE(t.seq == ++after);  // gap-free up to the damage
  }
  INFO(read.ToString());
  CHECK(read.code() == StatusCode::kCorruption);
  CHECK(after < kEvents);
  engine.reset();

  const Run verify = Bucketctl("verify --data " + dir.path());
  INFO(verify.output);
  CHECK(verify.exit_code != 0);
}

// A filesystem of a few MiB that fills up. Needs the right to mount (root, as in CI); where
// that is missing the test says so and checks nothing.
class SmallDisk {
 public:
  explicit SmallDisk(const std::string& path, const char* size) : path_(path) {
    fs::create_directories(path_);
    const std::string options = std::string("size=") + size;
    mounted_ = ::mount("tmpfs", path_.c_str(), "tmpfs", 0, options.c_str()) == 0;
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

TEST_CASE(
    "a full disk refuses inputs with no_space, keeps reads, and loses nothing "
    "acknowledged") {
  TempDir dir;
  const std::string mount_point = dir.path() + "/small";
  SmallDisk disk(mount_point, "24m");
  if (!disk.mounted()) {
    WARN("cannot mount a small tmpfs here (not root?): the full-disk test did not run");
    return;
  }
  const std::string data = mount_point + "/data";
  Options options = ManualOptions(data);
  options.durability = Durability::kSync;
  auto engine = OpenOrFail(options);
  RequireOk(engine->DefineBucket(
      R"({"id":"seen","criteria":{"type":"event","eventName":"x","check":"exists"}})",
      DefineMode::kCreate, std::nullopt, nullptr));
  const std::string padding(2000, 'p');  // big records fill the disk in few batches
  int acknowledged = 0;
  Status failed;
  for (int round = 0; round < 100000 && failed.ok(); ++round) {
    std::vector<EventInput> batch;
    for (int i = 0; i < 100; ++i) {
      const int n = round * 100 + i;
      batch.push_back({"u" + std::to_string(n),
                       "x",
                       std::nullopt,
                       std::nullopt,
                       {{"pad", PropertyValue::String(padding)}},
                       {}});
    }
    BatchResult result;
    failed = engine->IngestBatch(batch, &result);
    if (failed.ok()) acknowledged += static_cast<int>(result.accepted);
  }
  INFO(failed.ToString());
  REQUIRE(failed.code() == StatusCode::kNoSpace);
  CHECK(acknowledged > 0);
  CHECK(engine->Health().code() == StatusCode::kNoSpace);
  IngestResult r;
  CHECK(engine->Ingest({"late", "x", std::nullopt, std::nullopt, {}, {}}, &r).code() ==
        StatusCode::kNoSpace);
  uint64_t count = 0;
  RequireOk(engine->Count("seen", &count));
  CHECK(count >= static_cast<uint64_t>(acknowledged));
  engine.reset();

  // Moved to a disk with room, every acknowledged input is there.
  const std::string moved = dir.path() + "/moved";
  fs::copy(data, moved, fs::copy_options::recursive);
  auto reopened = OpenOrFail(ManualOptions(moved));
  for (int n = 0; n < acknowledged; ++n) {
    Member m;
    if (!reopened->GetMember("seen", "u" + std::to_string(n), &m).ok()) {
      FAIL("acknowledged user u" << n << " is missing");
    }
  }
}

}  // namespace bucketd
