#include "engine/cluster/snapshot_stream.h"

#include <simdjson.h>
#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <utility>

#include "engine/base/json_writer.h"

namespace bucketd::cluster {
namespace {

constexpr const char* kSnapshotHeader = "Bucketd-Snapshot";
constexpr const char* kChunkHeader = "Bucketd-Chunk";
// Snapshots kept per partition: the newest, and the one before in case the newest is damaged
// or was being purged while a new owner read it.
constexpr int kManifestsKept = 2;

}  // namespace

std::string SnapshotManifestJson(const SnapshotManifest& m) {
  JsonWriter w;
  w.BeginObject().Key("id").String(m.id).Key("inputSeq").Uint(m.input_seq);
  w.Key("transitionSeq").Uint(m.transition_seq).Key("controlSeq").Uint(m.control_seq);
  w.Key("chunks").Uint(m.chunks);
  w.Key("bytes").Uint(m.bytes).Key("stateBytes").Uint(m.state_bytes);
  w.Key("xxh64").Uint(m.xxh64).Key("firstSeq").Uint(m.first_seq);
  w.EndObject();
  return w.Take();
}

Status ParseSnapshotManifest(std::string_view json, SnapshotManifest* m) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string_view id;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS ||
      doc["id"].get_string().get(id) != simdjson::SUCCESS ||
      doc["inputSeq"].get_uint64().get(m->input_seq) != simdjson::SUCCESS ||
      doc["transitionSeq"].get_uint64().get(m->transition_seq) != simdjson::SUCCESS ||
      doc["chunks"].get_uint64().get(m->chunks) != simdjson::SUCCESS ||
      doc["bytes"].get_uint64().get(m->bytes) != simdjson::SUCCESS ||
      doc["xxh64"].get_uint64().get(m->xxh64) != simdjson::SUCCESS ||
      doc["firstSeq"].get_uint64().get(m->first_seq) != simdjson::SUCCESS) {
    return Status::Corruption("snapshot manifest is not one: " + std::string(json.substr(0, 200)));
  }
  // Absent in the manifests written before control sequences: no control record was seen.
  m->control_seq = 0;
  if (doc["controlSeq"].error() != simdjson::NO_SUCH_FIELD &&
      doc["controlSeq"].get_uint64().get(m->control_seq) != simdjson::SUCCESS) {
    return Status::Corruption("snapshot manifest has a controlSeq that is not a number");
  }
  // Absent in the manifests written before the fold kept anything beside the state: the
  // payload is the state.
  m->state_bytes = m->bytes;
  if (doc["stateBytes"].error() != simdjson::NO_SUCH_FIELD &&
      (doc["stateBytes"].get_uint64().get(m->state_bytes) != simdjson::SUCCESS ||
       m->state_bytes > m->bytes)) {
    return Status::Corruption("snapshot manifest has a stateBytes that is not a size within it");
  }
  m->id = std::string(id);
  return Status::Ok();
}

namespace {

std::string Header(natsMsg* msg, const char* name) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, name, &value) != NATS_OK || value == nullptr) return {};
  return value;
}

}  // namespace

SnapshotStream::SnapshotStream(std::shared_ptr<NatsConnection> nats, const SnapshotOptions& options)
    : nats_(std::move(nats)), options_(options), stream_name_("BUCKETD_SNAP_" + options.cluster) {}

Status SnapshotStream::Open(std::shared_ptr<NatsConnection> nats, const SnapshotOptions& options,
                            std::unique_ptr<SnapshotStream>* out) {
  if (!ValidNameToken(options.cluster)) {
    return Status::InvalidArgument("cluster", "must be 1-64 characters of [A-Za-z0-9_-]");
  }
  std::unique_ptr<SnapshotStream> stream(new SnapshotStream(std::move(nats), options));
  if (Status s = stream->EnsureStream(); !s.ok()) return s;
  *out = std::move(stream);
  return Status::Ok();
}

std::string SnapshotStream::ChunkSubject(uint32_t partition) const {
  return "bucketd." + options_.cluster + ".snap." + std::to_string(partition) + ".chunks";
}

std::string SnapshotStream::ManifestSubject(uint32_t partition) const {
  return "bucketd." + options_.cluster + ".snap." + std::to_string(partition) + ".manifest";
}

Status SnapshotStream::EnsureStream() {
  const std::string subjects = "bucketd." + options_.cluster + ".snap.>";
  const char* subject_list[] = {subjects.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = stream_name_.c_str();
  config.Description = "bucketd partition snapshots";
  config.Subjects = subject_list;
  config.SubjectsLen = 1;
  config.Replicas = options_.replicas;
  return bucketd::cluster::EnsureStream(*nats_, config);
}

Status SnapshotStream::LastManifest(uint32_t partition, SnapshotManifest* manifest, bool* found) {
  *found = false;
  natsMsg* msg = nullptr;
  if (Status s = LastMessage(*nats_, stream_name_, ManifestSubject(partition), &msg);
      !s.ok() || msg == nullptr) {
    return s;
  }
  const Status parsed = ParseSnapshotManifest(
      std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)), manifest);
  natsMsg_Destroy(msg);
  *found = parsed.ok();
  return parsed;
}

Status SnapshotStream::Publish(uint32_t partition, std::string_view payload,
                               SnapshotManifest* manifest) {
  // The manifest before this one: its chunks are the oldest still kept afterwards.
  // (Unreadable, it is not purged after: old chunks stay until a later publish.)
  SnapshotManifest previous;
  bool had_previous = false;
  if (!LastManifest(partition, &previous, &had_previous).ok()) had_previous = false;
  manifest->bytes = payload.size();
  manifest->xxh64 = XXH64(payload.data(), payload.size(), 0);
  manifest->chunks =
      std::max<uint64_t>(1, (payload.size() + kSnapshotChunkBytes - 1) / kSnapshotChunkBytes);
  const std::string chunks = ChunkSubject(partition);
  for (uint64_t i = 0; i < manifest->chunks; ++i) {
    const size_t begin = i * kSnapshotChunkBytes;
    const size_t size = std::min(kSnapshotChunkBytes, payload.size() - begin);
    natsMsg* msg = nullptr;
    natsStatus s = natsMsg_Create(&msg, chunks.c_str(), nullptr, payload.data() + begin,
                                  static_cast<int>(size));
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, kSnapshotHeader, manifest->id.c_str());
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, kChunkHeader, std::to_string(i).c_str());
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = nats_->timeout_ms();
    jsPubAck* ack = nullptr;
    jsErrCode js_error = jsErrCode(0);
    if (s == NATS_OK) s = js_PublishMsg(&ack, nats_->js(), msg, &options, &js_error);
    natsMsg_Destroy(msg);
    if (s != NATS_OK) return NatsFailed("snapshot chunk to " + chunks, s, js_error);
    if (i == 0) manifest->first_seq = ack->Sequence;
    jsPubAck_Destroy(ack);
  }
  const std::string body = SnapshotManifestJson(*manifest);
  const std::string subject = ManifestSubject(partition);
  jsPubAck* ack = nullptr;
  jsErrCode js_error = jsErrCode(0);
  natsStatus s = js_Publish(&ack, nats_->js(), subject.c_str(), body.data(),
                            static_cast<int>(body.size()), nullptr, &js_error);
  jsPubAck_Destroy(ack);
  if (s != NATS_OK) return NatsFailed("snapshot manifest to " + subject, s, js_error);

  // Keep the last two manifests and the chunks from the previous one's on. A failed purge
  // only leaves old snapshots behind: the new one is stored.
  jsOptions purge;
  jsOptions_Init(&purge);
  purge.Stream.Purge.Subject = subject.c_str();
  purge.Stream.Purge.Keep = kManifestsKept;
  (void)js_PurgeStream(nats_->js(), stream_name_.c_str(), &purge, nullptr);
  // A filtered purge "up to sequence 1" purges the whole subject on nats-server 2.9 (a
  // sequence of 0 or 1 reads as "no bound"): with nothing before sequence 2, skip it.
  if (had_previous && previous.first_seq > 1) {
    jsOptions_Init(&purge);
    purge.Stream.Purge.Subject = chunks.c_str();
    purge.Stream.Purge.Sequence = previous.first_seq;  // up to, not including
    (void)js_PurgeStream(nats_->js(), stream_name_.c_str(), &purge, nullptr);
  }
  return Status::Ok();
}

Status SnapshotStream::Latest(uint32_t partition, SnapshotManifest* manifest, std::string* payload,
                              bool* found) {
  payload->clear();
  if (Status s = LastManifest(partition, manifest, found); !s.ok() || !*found) return s;
  // Chunks through the stream's leader from the first one on (a replica's copy may have
  // drifted: nats_connection.h), skipping chunks of another snapshot (a stale owner's,
  // published in between).
  const std::string chunks = ChunkSubject(partition);
  uint64_t next_index = 0;
  for (uint64_t seq = manifest->first_seq; next_index < manifest->chunks;) {
    LeaderMessage chunk;
    bool found_chunk = false;
    if (Status s = LeaderGet(*nats_, stream_name_, seq, chunks, &chunk, &found_chunk); !s.ok()) {
      return s;
    }
    if (!found_chunk) break;
    natsMsg* msg = chunk.msg.get();
    if (Header(msg, kSnapshotHeader) == manifest->id &&
        Header(msg, kChunkHeader) == std::to_string(next_index)) {
      payload->append(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
      ++next_index;
    }
    if (chunk.stream_seq < seq) {
      return Status::IoError("snapshot chunks of " + chunks + " read out of order");
    }
    seq = chunk.stream_seq + 1;
  }
  if (next_index != manifest->chunks || payload->size() != manifest->bytes ||
      XXH64(payload->data(), payload->size(), 0) != manifest->xxh64) {
    return Status::Corruption("snapshot " + manifest->id + " of partition " +
                              std::to_string(partition) +
                              ": chunks missing or damaged (checksum mismatch)");
  }
  return Status::Ok();
}

}  // namespace bucketd::cluster
