#include "snapshot/snapshot_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string_view>

#include <xxhash.h>

#include "engine/base/check.h"
#include "engine/state/snapshot_codec.h"

namespace bucketd {
namespace {

// File header (snapshot_format.md). Little-endian integers at fixed offsets.
constexpr char kMagic[8] = {'B', 'K', 'T', 'S', 'N', 'A', 'P', '1'};
// Written: 4. Read: 4; 3 (no user has aggregate or sequence histories, version 4's user
// flag); and 2 (no history floor: histories kept exactly their depth, which a floor of 0
// reproduces). A version-3 reader would misread a user with that flag, and a version-2
// reader would take a version-3 history's extra instants for its depth: each skips the
// newer files instead.
constexpr uint32_t kFormatVersion = 4;
constexpr uint32_t kOldestReadableVersion = 2;
constexpr size_t kHeaderBytes = 56;
static_assert(kHeaderBytes % 8 == 0, "the payload is read in place: it must stay 8-aligned");
constexpr size_t kHeaderChecksummedBytes = 48;
constexpr char kNamePrefix[] = "snapshot-";
constexpr char kNameSuffix[] = ".bkts";
constexpr char kTempMarker[] = ".tmp-";
constexpr char kSetAsideDir[] = "set-aside";
constexpr size_t kSeqDigits = 20;
constexpr size_t kChildMessageBytes = 256;

struct Header {
  uint32_t version = 0;
  uint64_t log_seq = 0;
  TimeMs now = 0;
  uint64_t payload_bytes = 0;
  uint64_t payload_checksum = 0;
};

void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void EncodeHeader(const Header& h, uint8_t out[kHeaderBytes]) {
  std::memcpy(out, kMagic, sizeof kMagic);
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<uint8_t>(h.version >> (8 * i));
  std::memset(out + 12, 0, 4);
  PutU64(out + 16, h.log_seq);
  PutU64(out + 24, static_cast<uint64_t>(h.now));
  PutU64(out + 32, h.payload_bytes);
  PutU64(out + 40, h.payload_checksum);
  PutU64(out + 48, XXH3_64bits(out, kHeaderChecksummedBytes));
}

// The reason a header cannot be trusted, or empty.
std::string DecodeHeader(const uint8_t in[kHeaderBytes], Header* h) {
  if (std::memcmp(in, kMagic, sizeof kMagic) != 0) return "wrong magic (not a bucketd snapshot)";
  h->version = 0;
  for (int i = 0; i < 4; ++i) h->version |= static_cast<uint32_t>(in[8 + i]) << (8 * i);
  if (XXH3_64bits(in, kHeaderChecksummedBytes) != GetU64(in + 48)) {
    return "header checksum mismatch";
  }
  if (h->version < kOldestReadableVersion || h->version > kFormatVersion) {
    return "format version " + std::to_string(h->version) + ", this build reads " +
           std::to_string(kOldestReadableVersion) + " to " + std::to_string(kFormatVersion);
  }
  h->log_seq = GetU64(in + 16);
  h->now = static_cast<TimeMs>(GetU64(in + 24));
  h->payload_bytes = GetU64(in + 32);
  h->payload_checksum = GetU64(in + 40);
  return {};
}

std::string FileName(uint64_t log_seq) {
  char name[64];
  std::snprintf(name, sizeof name, "%s%020llu%s", kNamePrefix,
                static_cast<unsigned long long>(log_seq), kNameSuffix);
  return name;
}

// The seq of "snapshot-<20 digits>.bkts"; false for anything else (temp files included).
bool ParseFileName(std::string_view name, uint64_t* log_seq) {
  const size_t prefix = sizeof kNamePrefix - 1;
  const size_t suffix = sizeof kNameSuffix - 1;
  if (name.size() != prefix + kSeqDigits + suffix || !name.starts_with(kNamePrefix) ||
      !name.ends_with(kNameSuffix)) {
    return false;
  }
  uint64_t seq = 0;
  for (char c : name.substr(prefix, kSeqDigits)) {
    if (c < '0' || c > '9') return false;
    seq = seq * 10 + static_cast<uint64_t>(c - '0');
  }
  *log_seq = seq;
  return true;
}

Status Errno(const std::string& what) {
  return Status::IoError(what + ": " + std::strerror(errno));
}

Status WriteAll(int fd, const uint8_t* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write " + path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status ReadAll(int fd, uint8_t* data, size_t size, size_t* got) {
  *got = 0;
  while (*got < size) {
    const ssize_t n = ::read(fd, data + *got, size - *got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("read");
    }
    if (n == 0) break;
    *got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// A file's bytes mapped read-only from the page cache. Reading a payload into a fresh
// buffer faulted in (and zeroed) as much new memory as the file is large, which a fresh
// process pays at VM first-touch rates (~0.3 s for a 194 MB snapshot here), and copied it.
// Snapshot files are never written after their rename, only replaced or unlinked, and
// neither disturbs a mapping; the size is checked on the open file before mapping. Another
// program truncating a snapshot file while it loads would kill the process (SIGBUS) where
// a read would have skipped the file: the data dir is bucketd's alone.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }

  Status Map(int fd, size_t expected_size) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return Errno("fstat");
    if (static_cast<size_t>(st.st_size) != expected_size) {
      return Status::IoError("changed size while being opened");
    }
    void* data = ::mmap(nullptr, expected_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (data == MAP_FAILED) return Errno("mmap");
    data_ = data;
    size_ = expected_size;
    return Status::Ok();
  }
  const uint8_t* data() const { return static_cast<const uint8_t*>(data_); }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open " + dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync " + dir);
  return Status::Ok();
}

Status EnsureDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Errno("mkdir " + dir);
  return Status::Ok();
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Serializes, then temp file -> write -> fsync -> rename -> fsync dir, so a crash at any
// point leaves either the old set of files or the old set plus the complete new one.
// Safe in a forked child: plain syscalls and malloc, no locks, no threads.
Status WriteSnapshotFile(const std::string& dir, const State& state, SnapshotInfo* info) {
  const int64_t start_us = NowMicros();
  flatbuffers::DetachedBuffer payload;
  if (Status s = EncodeSnapshot(state, &payload); !s.ok()) return s;

  Header h;
  h.version = kFormatVersion;
  h.log_seq = state.applied_seq;
  h.now = state.now;
  h.payload_bytes = payload.size();
  h.payload_checksum = XXH3_64bits(payload.data(), payload.size());
  uint8_t header[kHeaderBytes];
  EncodeHeader(h, header);

  const std::string path = dir + "/" + FileName(state.applied_seq);
  const std::string temp = path + kTempMarker + std::to_string(::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create " + temp);
  Status s = WriteAll(fd, header, sizeof header, temp);
  if (s.ok()) s = WriteAll(fd, payload.data(), payload.size(), temp);
  if (s.ok() && ::fsync(fd) != 0) s = Errno("fsync " + temp);
  if (::close(fd) != 0 && s.ok()) s = Errno("close " + temp);
  if (s.ok() && ::rename(temp.c_str(), path.c_str()) != 0) s = Errno("rename " + temp);
  if (!s.ok()) {
    ::unlink(temp.c_str());
    return s;
  }
  if (Status d = SyncDir(dir); !d.ok()) return d;
  info->path = path;
  info->log_seq = state.applied_seq;
  info->bytes = kHeaderBytes + payload.size();
  info->write_micros = NowMicros() - start_us;
  return Status::Ok();
}

// What a background child reports through its pipe: fixed size, one write().
struct ChildResult {
  int32_t code = 0;  // StatusCode; 0 = ok
  uint64_t bytes = 0;
  int64_t write_micros = 0;
  char message[kChildMessageBytes] = {};
};

// The child's whole life. Never returns: the parent's stack above us must not unwind in
// the child (no destructors, no atexit handlers, no stdio flush).
// The child holds copies of every descriptor of the parent: a server's listening socket
// among them, which would keep the port open (and, with SO_REUSEPORT, take requests) if
// the parent died first. It closes all but stdio and its pipe, and dies with the parent.
void DetachFromParent(int pipe_fd, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) _exit(1);  // the parent died before prctl took effect
  const unsigned keep = static_cast<unsigned>(pipe_fd);
  if (keep > 3) ::close_range(3, keep - 1, 0);
  ::close_range(keep + 1, ~0U, 0);
}

[[noreturn]] void RunChild(int pipe_fd, pid_t parent, const std::string& dir, const State& state) {
  DetachFromParent(pipe_fd, parent);
  ChildResult result;
  try {
    SnapshotInfo info;
    const Status s = WriteSnapshotFile(dir, state, &info);
    result.code = static_cast<int32_t>(s.code());
    result.bytes = info.bytes;
    result.write_micros = info.write_micros;
    std::snprintf(result.message, sizeof result.message, "%s", s.message().c_str());
  } catch (...) {
    result.code = static_cast<int32_t>(StatusCode::kIoError);
    std::snprintf(result.message, sizeof result.message, "snapshot child threw (out of memory?)");
  }
  const ssize_t n = ::write(pipe_fd, &result, sizeof result);
  _exit(n == static_cast<ssize_t>(sizeof result) && result.code == 0 ? 0 : 1);
}

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Skip(const std::string& path, const std::string& reason) {
  return "snapshot " + path + ": " + reason + "; skipped";
}

}  // namespace

SnapshotStore::SnapshotStore(std::string dir, uint32_t keep)
    : dir_(std::move(dir)), keep_(std::max<uint32_t>(keep, 1)) {}

SnapshotStore::~SnapshotStore() {
  Status ignored;
  SnapshotInfo info;
  WaitBackground(&ignored, &info);
}

Status SnapshotStore::Write(const State& state, SnapshotInfo* info) {
  if (Status s = EnsureDir(dir_); !s.ok()) return s;
  SnapshotInfo local;
  if (Status s = WriteSnapshotFile(dir_, state, &local); !s.ok()) return s;
  Prune();
  if (info) *info = local;
  return Status::Ok();
}

Status SnapshotStore::StartBackground(const State& state) {
  if (background_running()) {
    return Status::FailedPrecondition("", "a background snapshot is already running");
  }
  if (Status s = EnsureDir(dir_); !s.ok()) return s;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Errno("pipe");
  const int64_t started_us = NowMicros();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const Status s = Errno("fork");
    ::close(fds[0]);
    ::close(fds[1]);
    return s;
  }
  if (pid == 0) {
    ::close(fds[0]);
    RunChild(fds[1], parent, dir_, state);
  }
  ::close(fds[1]);
  child_pid_ = pid;
  child_pipe_ = fds[0];
  child_started_us_ = started_us;
  child_info_ = SnapshotInfo{};
  child_info_.path = dir_ + "/" + FileName(state.applied_seq);
  child_info_.log_seq = state.applied_seq;
  return Status::Ok();
}

bool SnapshotStore::PollBackground(Status* status, SnapshotInfo* info) {
  return Reap(false, status, info);
}

bool SnapshotStore::WaitBackground(Status* status, SnapshotInfo* info) {
  return Reap(true, status, info);
}

bool SnapshotStore::Reap(bool block, Status* status, SnapshotInfo* info) {
  if (!background_running()) return false;
  int wstatus = 0;
  pid_t done;
  do {
    done = ::waitpid(child_pid_, &wstatus, block ? 0 : WNOHANG);
  } while (done < 0 && errno == EINTR);
  if (done == 0) return false;

  ChildResult result;
  size_t got = 0;
  const Status read =
      done > 0 ? ReadAll(child_pipe_, reinterpret_cast<uint8_t*>(&result), sizeof result, &got)
               : Errno("waitpid");
  ::close(child_pipe_);
  child_pipe_ = -1;
  child_pid_ = -1;

  if (!read.ok()) {
    *status = read;
  } else if (WIFSIGNALED(wstatus)) {
    *status = Status::IoError("background snapshot killed by signal " +
                              std::to_string(WTERMSIG(wstatus)));
  } else if (got != sizeof result) {
    *status = Status::IoError("background snapshot exited without a result");
  } else if (result.code != 0) {
    result.message[kChildMessageBytes - 1] = '\0';
    *status = static_cast<StatusCode>(result.code) == StatusCode::kCorruption
                  ? Status::Corruption(result.message)
                  : Status::IoError(result.message);
  } else {
    *status = Status::Ok();
    *info = child_info_;
    info->bytes = result.bytes;
    info->write_micros = NowMicros() - child_started_us_;
    Prune();
  }
  return true;
}

std::vector<SnapshotFile> SnapshotStore::List() const {
  std::vector<SnapshotFile> files;
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return files;
  while (const dirent* entry = ::readdir(d)) {
    SnapshotFile f;
    if (!ParseFileName(entry->d_name, &f.log_seq)) continue;
    f.path = dir_ + "/" + entry->d_name;
    struct stat st;
    if (::stat(f.path.c_str(), &st) != 0) continue;
    f.bytes = static_cast<uint64_t>(st.st_size);
    files.push_back(std::move(f));
  }
  ::closedir(d);
  std::sort(files.begin(), files.end(),
            [](const SnapshotFile& a, const SnapshotFile& b) { return a.log_seq > b.log_seq; });
  return files;
}

Status SnapshotStore::ExportNewest(const std::string& dir, SnapshotFile* exported,
                                   bool* found) const {
  *found = false;
  if (Status s = EnsureDir(dir); !s.ok()) return s;
  const std::vector<SnapshotFile> files = List();
  if (files.empty()) return SyncDir(dir);
  const SnapshotFile& newest = files.front();
  const std::string target = dir + "/" + FileName(newest.log_seq);
  if (::link(newest.path.c_str(), target.c_str()) != 0) {
    // EXDEV: another filesystem; EPERM: one without hard links. Either way, copy.
    if (errno != EXDEV && errno != EPERM) return Errno("linking " + newest.path + " to " + target);
    std::error_code error;
    std::filesystem::copy_file(newest.path, target, error);
    if (error) return Status::IoError("copying " + newest.path + ": " + error.message());
    const ScopedFd fd(::open(target.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0 || ::fsync(fd.get()) != 0) return Errno("fsync " + target);
  }
  if (Status s = SyncDir(dir); !s.ok()) return s;
  *exported = SnapshotFile{target, newest.log_seq, newest.bytes};
  *found = true;
  return Status::Ok();
}

Status SnapshotStore::SetAsideBeyond(uint64_t last_seq, std::vector<std::string>* warnings) const {
  const std::string aside = dir_ + "/" + kSetAsideDir;
  bool moved = false;
  for (const SnapshotFile& file : List()) {
    if (file.log_seq <= last_seq) break;  // newest first
    if (::mkdir(aside.c_str(), 0755) != 0 && errno != EEXIST) return Errno("creating " + aside);
    const std::string name = file.path.substr(dir_.size() + 1);
    if (::rename(file.path.c_str(), (aside + "/" + name).c_str()) != 0) {
      return Errno("setting aside " + file.path);
    }
    moved = true;
    warnings->push_back("snapshot " + name + " (log seq " + std::to_string(file.log_seq) +
                        ") is beyond the log's last record " + std::to_string(last_seq) +
                        ": the log lost its tail after it was taken; moved to " + aside);
  }
  if (!moved) return Status::Ok();
  if (Status s = SyncDir(aside); !s.ok()) return s;
  return SyncDir(dir_);
}

Status SnapshotStore::RemoveAllBut(uint64_t kept_seq) const {
  BUCKETD_CHECK_MSG(!background_running(), "a background snapshot holds the state before");
  for (const SnapshotFile& file : List()) {
    if (file.log_seq != kept_seq && ::unlink(file.path.c_str()) != 0 && errno != ENOENT) {
      return Errno("removing " + file.path);
    }
  }
  const std::string aside = dir_ + "/" + kSetAsideDir;
  std::error_code error;
  std::filesystem::remove_all(aside, error);
  if (error) return Status::IoError("removing " + aside + ": " + error.message());
  Prune();  // temp files a killed writer left
  return SyncDir(dir_);
}

void SnapshotStore::Prune() const {
  const std::vector<SnapshotFile> files = List();
  for (size_t i = keep_; i < files.size(); ++i) ::unlink(files[i].path.c_str());
  // Temp files are what a writer killed mid-way left behind; a running child's is its own.
  const std::string running =
      background_running() ? std::string(kTempMarker) + std::to_string(child_pid_) : "";
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (const dirent* entry = ::readdir(d)) {
    const std::string_view name = entry->d_name;
    if (!name.starts_with(kNamePrefix) || name.find(kTempMarker) == std::string_view::npos) {
      continue;
    }
    if (!running.empty() && name.ends_with(running)) continue;
    stale.push_back(dir_ + "/" + std::string(name));
  }
  ::closedir(d);
  for (const std::string& path : stale) ::unlink(path.c_str());
}

Status SnapshotStore::LoadNewest(uint64_t max_seq, TimeMs max_at, State* out, bool* loaded,
                                 std::vector<std::string>* warnings) const {
  *loaded = false;
  for (const SnapshotFile& file : List()) {
    const ScopedFd fd(::open(file.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      warnings->push_back(Skip(file.path, std::string("cannot open: ") + std::strerror(errno)));
      continue;
    }
    uint8_t header_bytes[kHeaderBytes];
    size_t got = 0;
    if (Status s = ReadAll(fd.get(), header_bytes, sizeof header_bytes, &got); !s.ok()) {
      warnings->push_back(Skip(file.path, s.message()));
      continue;
    }
    if (got != sizeof header_bytes) {
      warnings->push_back(Skip(file.path, "truncated header (" + std::to_string(got) + " bytes)"));
      continue;
    }
    Header h;
    if (std::string reason = DecodeHeader(header_bytes, &h); !reason.empty()) {
      warnings->push_back(Skip(file.path, reason));
      continue;
    }
    if (h.log_seq != file.log_seq) {
      warnings->push_back(Skip(file.path, "header log seq " + std::to_string(h.log_seq) +
                                              " disagrees with the file name"));
      continue;
    }
    if (file.bytes != kHeaderBytes + h.payload_bytes) {
      warnings->push_back(Skip(file.path, "truncated or overlong: " + std::to_string(file.bytes) +
                                              " bytes, header says " +
                                              std::to_string(kHeaderBytes + h.payload_bytes)));
      continue;
    }
    if (h.log_seq > max_seq) {
      warnings->push_back(Skip(file.path, "log seq " + std::to_string(h.log_seq) +
                                              " is beyond the log's last record " +
                                              std::to_string(max_seq)));
      continue;
    }
    if (h.now > max_at) {
      warnings->push_back(Skip(file.path, "state instant " + std::to_string(h.now) +
                                              " is later than the replay limit " +
                                              std::to_string(max_at)));
      continue;
    }
    MappedFile mapped;
    if (Status s = mapped.Map(fd.get(), kHeaderBytes + h.payload_bytes); !s.ok()) {
      warnings->push_back(Skip(file.path, s.message()));
      continue;
    }
    // The payload starts 56 bytes into a page-aligned mapping: aligned for any scalar, as
    // the flatbuffers Verifier requires.
    const uint8_t* payload = mapped.data() + kHeaderBytes;
    if (XXH3_64bits(payload, h.payload_bytes) != h.payload_checksum) {
      warnings->push_back(Skip(file.path, "payload checksum mismatch"));
      continue;
    }
    State st;
    if (Status s = DecodeSnapshot(payload, h.payload_bytes, &st); !s.ok()) {
      warnings->push_back(Skip(file.path, s.message()));
      continue;
    }
    if (st.applied_seq != h.log_seq || st.now != h.now) {
      // Both checksums held, so this is a writer bug.
      return Status::Corruption("snapshot " + file.path + ": payload disagrees with its header");
    }
    *out = std::move(st);
    *loaded = true;
    return Status::Ok();
  }
  return Status::Ok();
}

}  // namespace bucketd
