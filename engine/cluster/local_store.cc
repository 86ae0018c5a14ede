#include "engine/cluster/local_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <xxhash.h>

namespace bucketd::cluster {
namespace {

std::string Key(std::string_view stream, uint32_t partition, std::string_view part) {
  return std::string(stream) + "/" + std::to_string(partition) + "/" + std::string(part);
}

Status Failed(std::string_view what, const rocksdb::Status& s) {
  return Status::IoError("local snapshot store: " + std::string(what) + ": " + s.ToString());
}

}  // namespace

Status LocalStore::Open(const std::string& path, std::unique_ptr<LocalStore>* out) {
  rocksdb::Options options;
  options.create_if_missing = true;
  // Snapshots of a few MB to a few hundred: written rarely, read at a takeover. Large values
  // go to their own files (BlobDB) rather than through compactions.
  options.enable_blob_files = true;
  options.min_blob_size = 4096;
  rocksdb::DB* db = nullptr;
  const rocksdb::Status s = rocksdb::DB::Open(options, path, &db);
  if (!s.ok()) return Failed("open " + path, s);
  out->reset(new LocalStore(db));
  return Status::Ok();
}

LocalStore::~LocalStore() {
  db_->Close();
  delete db_;
}

Status LocalStore::Put(std::string_view stream, uint32_t partition, SnapshotManifest manifest,
                       std::string_view payload) {
  manifest.bytes = payload.size();
  manifest.xxh64 = XXH64(payload.data(), payload.size(), 0);
  manifest.chunks = 0;
  manifest.first_seq = 0;
  rocksdb::WriteBatch batch;
  batch.Put(Key(stream, partition, "payload"), rocksdb::Slice(payload.data(), payload.size()));
  batch.Put(Key(stream, partition, "manifest"), SnapshotManifestJson(manifest));
  rocksdb::WriteOptions write;
  write.sync = true;
  if (rocksdb::Status s = db_->Write(write, &batch); !s.ok()) return Failed("write", s);
  return Status::Ok();
}

Status LocalStore::GetManifest(std::string_view stream, uint32_t partition,
                               SnapshotManifest* manifest, bool* found) {
  *found = false;
  std::string json;
  const rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), Key(stream, partition, "manifest"), &json);
  if (s.IsNotFound()) return Status::Ok();
  if (!s.ok()) return Failed("read", s);
  if (Status parsed = ParseSnapshotManifest(json, manifest); !parsed.ok()) return parsed;
  *found = true;
  return Status::Ok();
}

Status LocalStore::Get(std::string_view stream, uint32_t partition, SnapshotManifest* manifest,
                       std::string* payload, bool* found) {
  if (Status s = GetManifest(stream, partition, manifest, found); !s.ok() || !*found) return s;
  const rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), Key(stream, partition, "payload"), payload);
  if (!s.ok() && !s.IsNotFound()) return Failed("read", s);
  if (s.IsNotFound() || payload->size() != manifest->bytes ||
      XXH64(payload->data(), payload->size(), 0) != manifest->xxh64) {
    return Status::Corruption("local snapshot " + manifest->id + " of partition " +
                              std::to_string(partition) + ": missing or damaged");
  }
  return Status::Ok();
}

Status LocalStore::Remove(std::string_view stream, uint32_t partition) {
  rocksdb::WriteBatch batch;
  batch.Delete(Key(stream, partition, "manifest"));
  batch.Delete(Key(stream, partition, "payload"));
  if (rocksdb::Status s = db_->Write(rocksdb::WriteOptions(), &batch); !s.ok()) {
    return Failed("remove", s);
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
