#pragma once
// A backup of a data dir written while its engine runs (Engine::Backup): the log's RocksDB
// checkpoint in <target>/log and the newest snapshot in <target>/snapshots, the same layout
// as a data dir, so the target opens as one. Built in <target>.partial and renamed, so a
// crash mid-way never leaves something at <target> that looks like a backup.
#include <cstdint>
#include <optional>
#include <string>

#include "bucketd/status.h"
#include "log/log.h"
#include "snapshot/snapshot_store.h"

namespace bucketd {

// The suffix of the directory a backup is built in before its rename.
inline constexpr char kBackupPartialSuffix[] = ".partial";

// Checks that `target_dir` can receive a backup of `data_dir`: it does not exist yet, and it
// is not inside the data dir (a checkpoint inside the live log's directory, or a backup
// that a later backup would copy, is never wanted).
Status CheckBackupTarget(const std::string& data_dir, const std::string& target_dir);

// Writes the backup. REQUIRES: CheckBackupTarget passed, nothing staged in `log` (the
// engine commits first), and no concurrent writer of `log` or pruning of `snapshots` (the
// engine's owner thread calls it). `*snapshot_log_seq` is the seq of the snapshot included,
// if the data dir had one.
Status WriteBackup(Log& log, const SnapshotStore& snapshots, const std::string& target_dir,
                   std::optional<uint64_t>* snapshot_log_seq);

}  // namespace bucketd
