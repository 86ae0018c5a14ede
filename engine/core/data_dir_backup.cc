#include "engine/core/data_dir_backup.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace bucketd {
namespace {

namespace fs = std::filesystem;

Status FsError(const std::string& what, const std::error_code& error) {
  return Status::IoError(what + ": " + error.message());
}

Status SyncDir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("open " + dir.string() + ": " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int fsync_errno = errno;
  ::close(fd);
  if (rc != 0) return Status::IoError("fsync " + dir.string() + ": " + std::strerror(fsync_errno));
  return Status::Ok();
}

// True if `path` is `dir` or below it (both absolute and normalized).
bool IsWithin(const fs::path& path, const fs::path& dir) {
  auto p = path.begin();
  for (auto d = dir.begin(); d != dir.end(); ++d, ++p) {
    if (d->empty()) continue;  // the trailing "" of a path ending in '/'
    if (p == path.end() || *p != *d) return false;
  }
  return true;
}

}  // namespace

Status CheckBackupTarget(const std::string& data_dir, const std::string& target_dir) {
  std::error_code error;
  if (fs::exists(target_dir, error) || error) {
    return error ? FsError("checking " + target_dir, error)
                 : Status::AlreadyExists("backup target " + target_dir + " already exists");
  }
  // weakly_canonical resolves the symlinks of the part that exists, so a link into the
  // data dir is caught too.
  const fs::path data = fs::weakly_canonical(fs::absolute(data_dir), error);
  if (error) return FsError("resolving " + data_dir, error);
  const fs::path target = fs::weakly_canonical(fs::absolute(target_dir), error);
  if (error) return FsError("resolving " + target_dir, error);
  if (IsWithin(target, data)) {
    return Status::InvalidArgument("target", "a backup must be outside the data dir " + data_dir);
  }
  return Status::Ok();
}

Status WriteBackup(Log& log, const SnapshotStore& snapshots, const std::string& target_dir,
                   std::optional<uint64_t>* snapshot_log_seq) {
  const fs::path target = fs::absolute(target_dir).lexically_normal();
  const fs::path partial = target.string() + kBackupPartialSuffix;
  std::error_code error;
  // A leftover of an interrupted backup to this same target: never a complete backup.
  fs::remove_all(partial, error);
  if (error) return FsError("removing " + partial.string(), error);
  fs::create_directories(partial, error);
  if (error) return FsError("creating " + partial.string(), error);
  const auto fail = [&partial](Status status) {
    std::error_code ignored;
    fs::remove_all(partial, ignored);
    return status;
  };
  // The log first: the snapshot taken next is at or before its end, as a snapshot must be
  // (the engine never writes one ahead of the durable log, and nothing commits meanwhile).
  if (Status s = log.Checkpoint((partial / "log").string()); !s.ok()) return fail(s);
  SnapshotFile exported;
  bool found = false;
  if (Status s = snapshots.ExportNewest((partial / "snapshots").string(), &exported, &found);
      !s.ok()) {
    return fail(s);
  }
  *snapshot_log_seq = found ? std::optional<uint64_t>(exported.log_seq) : std::nullopt;
  if (Status s = SyncDir(partial); !s.ok()) return fail(s);
  fs::rename(partial, target, error);
  if (error) return fail(FsError("renaming " + partial.string(), error));
  return SyncDir(target.parent_path());
}

}  // namespace bucketd
