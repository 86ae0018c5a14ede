// Writes the seed corpora of the fuzz targets (docs/testing.md, "Fuzzing"):
//   make_seeds <examples/buckets dir> <corpus dir>
// Deterministic: the same tree writes the same files, so the committed corpus can be checked
// and regenerated. The JSON seeds are the example definitions and bodies as clients send
// them; the binary ones are encodings of what a small fold writes (records, transitions,
// chunks, snapshot payloads).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "engine/base/check.h"
#include "engine/definition/definition.h"
#include "engine/fold/fold.h"
#include "engine/state/snapshot_codec.h"
#include "log/chunk.h"
#include "log/record_codec.h"

namespace bucketd {
namespace {

namespace fs = std::filesystem;

constexpr TimeMs kSecond = 1000;
constexpr TimeMs kDay = 24 * 60 * 60 * kSecond;
// 2026-11-01T00:00:00Z, as the tests' scenarios.
constexpr TimeMs kT0 = 1793491200000;

void Write(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  BUCKETD_CHECK_MSG(out.good(), "cannot write " + path.string());
}

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  BUCKETD_CHECK_MSG(in.good(), "cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string_view Bytes(const flatbuffers::FlatBufferBuilder& builder) {
  return std::string_view(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                          builder.GetSize());
}

// Drives a fold with records as the engine stamps them, keeping every record and transition.
class Log {
 public:
  void Define(const std::string& json, TimeMs at) {
    BucketDefinition def;
    const Status status = ParseBucketDefinition(json, &def);
    BUCKETD_CHECK_MSG(status.ok(), status.ToString());
    Record r = Next(RecordKind::kBucketDefine, at);
    r.bucket_id = def.id;
    r.definition_json = ToCanonicalJson(def);
    Apply(r);
  }
  void Event(const std::string& user, const std::string& name, TimeMs at,
             std::vector<PropertyPatch> properties = {},
             std::optional<std::string> email = std::nullopt) {
    Record r = Next(RecordKind::kEvent, at);
    r.user_id = user;
    r.event_name = name;
    r.occurred_at = r.at;
    r.properties = std::move(properties);
    r.email = std::move(email);
    r.idempotency_key = user + ":" + name + ":" + std::to_string(r.seq);
    Apply(r);
  }
  void Bucket(RecordKind kind, const std::string& bucket_id, TimeMs at) {
    Record r = Next(kind, at);
    r.bucket_id = bucket_id;
    Apply(r);
  }
  void Member(RecordKind kind, const std::string& bucket_id, const std::string& user, TimeMs at) {
    Record r = Next(kind, at);
    r.bucket_id = bucket_id;
    r.user_id = user;
    Apply(r);
  }
  void DeleteContact(const std::string& user, TimeMs at) {
    Record r = Next(RecordKind::kContactDelete, at);
    r.user_id = user;
    Apply(r);
  }
  void Clock(RecordKind kind, TimeMs at) { Apply(Next(kind, at)); }

  const Fold& fold() const { return fold_; }
  const std::vector<Record>& records() const { return records_; }
  const std::vector<Transition>& transitions() const { return transitions_; }

 private:
  Record Next(RecordKind kind, TimeMs at) {
    Record r;
    r.seq = fold_.state().applied_seq + 1;
    r.at = std::max(kT0 + at, fold_.state().now);
    r.kind = kind;
    return r;
  }
  void Apply(const Record& r) {
    const Status status = fold_.Apply(r, &transitions_);
    BUCKETD_CHECK_MSG(status.ok(), status.ToString());
    records_.push_back(r);
  }

  Fold fold_;
  std::vector<Record> records_;
  std::vector<Transition> transitions_;
};

// A small history touching every record kind, the example buckets and a manual one.
void RunWorkload(const std::vector<std::string>& definitions, Log* log) {
  for (const std::string& json : definitions) log->Define(json, 0);
  log->Define(R"({"id":"vip","name":"VIP","kind":"manual","maxDwell":"30d"})", 0);
  const std::vector<PropertyPatch> trial = {
      {"plan", PropertyValue::String("trial")},
      {"trialEndsInDays", PropertyValue::Number(2)},
      {"seats", PropertyValue{PropertyValue::Type::kArray, false, 0, R"([1,2.5,"x"])"}},
      {"beta", PropertyValue::Bool(true)},
  };
  log->Event("alice", "app.opened", kSecond, trial, "alice@example.com");
  log->Event("bob", "app.opened", 2 * kSecond, {{"plan", PropertyValue::String("pro")}});
  for (int i = 0; i < 12; ++i) log->Event("carol", "feature.used", (10 + i) * kSecond);
  log->Event("dave", "signup", 30 * kSecond, {{"note", PropertyValue::Null()}});
  log->Member(RecordKind::kMemberAdd, "vip", "bob", 40 * kSecond);
  log->Member(RecordKind::kMemberAdd, "vip", "erin", 41 * kSecond);
  log->Bucket(RecordKind::kBucketDisable, "power-users", 50 * kSecond);
  log->Bucket(RecordKind::kBucketEnable, "power-users", 60 * kSecond);
  log->Clock(RecordKind::kClockAdvance, 8 * kDay);
  log->Member(RecordKind::kMemberRemove, "vip", "erin", 9 * kDay);
  log->Event("bob", "app.opened", 9 * kDay + kSecond);
  log->DeleteContact("dave", 10 * kDay);
  log->Clock(RecordKind::kSweep, 40 * kDay);
  log->Event("frank", "feature.used", 40 * kDay + kSecond, {}, "");
}

void WriteLogSeeds(const Log& log, const fs::path& dir) {
  flatbuffers::FlatBufferBuilder builder;
  std::map<RecordKind, int> per_kind;
  ChunkBuilder records_chunk;
  for (const Record& r : log.records()) {
    EncodeRecord(r, PropertyEncoding::kTables, &builder);  // format versions 1-5
    // Two of each kind: the corpus stays small, every kind is there.
    const bool seed = per_kind[r.kind]++ < 2;
    if (seed) Write(dir / ("record-" + std::to_string(r.seq)), Bytes(builder));
    if (r.seq <= 8) records_chunk.Add(r.seq, Bytes(builder));
    if (seed && (!r.properties.empty() || !r.event_properties.empty())) {
      EncodeRecord(r, PropertyEncoding::kCompact, &builder);  // format version 6
      Write(dir / ("record-compact-" + std::to_string(r.seq)), Bytes(builder));
    }
  }
  Write(dir / "chunk-records", records_chunk.value());
  // An event with its own properties in each of the compact encoding's value forms (the
  // workload's events carry contact properties only).
  Record purchase;
  purchase.seq = log.records().size() + 1;
  purchase.at = purchase.occurred_at = kT0 + 41 * kDay;
  purchase.kind = RecordKind::kEvent;
  purchase.user_id = "alice";
  purchase.event_name = "purchase";
  purchase.event_properties = {{"amount", PropertyValue::Number(129)},
                               {"price", PropertyValue::Number(19.99)},
                               {"plan", PropertyValue::String("pro")},
                               {"gift", PropertyValue::Bool(false)}};
  purchase.properties = {{"lastPurchase", PropertyValue::Null()}};
  EncodeRecord(purchase, PropertyEncoding::kCompact, &builder);
  Write(dir / "record-compact-purchase", Bytes(builder));

  std::map<TransitionKind, int> per_transition_kind;
  ChunkBuilder transitions_chunk;
  for (const Transition& t : log.transitions()) {
    EncodeTransition(t, &builder);
    if (per_transition_kind[t.kind]++ < 2) {
      Write(dir / ("transition-" + std::to_string(t.seq)), Bytes(builder));
      std::string compact;  // format version 5's encoding
      EncodeTransitionCompact(t, &compact);
      Write(dir / ("transition-compact-" + std::to_string(t.seq)), compact);
    }
    if (t.seq <= 6) transitions_chunk.Add(t.seq, Bytes(builder));
  }
  BUCKETD_CHECK(per_transition_kind.size() == 3);  // entered, left and dwell are all there
  Write(dir / "chunk-transitions", transitions_chunk.value());
}

void WriteSnapshotSeeds(const Log& log, const fs::path& dir) {
  flatbuffers::DetachedBuffer payload;
  BUCKETD_CHECK(EncodeSnapshot(log.fold().state(), &payload).ok());
  Write(dir / "state",
        std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
  // Marked every two users: decoded in pieces.
  BUCKETD_CHECK(EncodeSnapshot(log.fold().state(), &payload, 2).ok());
  Write(dir / "state-marked",
        std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
  const Fold empty;
  BUCKETD_CHECK(EncodeSnapshot(empty.state(), &payload).ok());
  Write(dir / "state-empty",
        std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
}

// Event bodies as clients send them: one object, an array, NDJSON, with and without the
// optional fields, and items the server refuses.
const std::map<std::string, std::string> kEventBodies = {
    {"single.json",
     R"({"userId":"alice","event":"app.opened","occurredAt":"2026-11-01T10:00:00Z",)"
     R"("email":"alice@example.com","idempotencyKey":"k-1",)"
     R"("contactProperties":{"plan":"trial","trialEndsInDays":3,"beta":true,"tags":["a","b"],)"
     R"("address":{"city":"Lyon"},"old":null}})"},
    {"batch.json", R"([{"userId":"bob","event":"feature.used","occurredAt":1793491200000},)"
                   R"({"userId":"carol","event":"signup","email":null},)"
                   R"({"userId":"","event":"x","idempotencyKey":"k-2"},)"
                   R"({"event":"no-user"},"not an object",)"
                   R"({"userId":"dave","event":"bucket:entered:x"}])"},
    {"events.ndjson",
     "{\"userId\":\"alice\",\"event\":\"app.opened\"}\n"
     "\n"
     "{\"userId\":\"bob\",\"event\":\"feature.used\",\"contactProperties\":{\"plan\":\"pro\"}}\r\n"
     "{not json, \"idempotencyKey\":\"k\"}\n"
     "{\"userId\":\"carol\",\"event\":\"x\",\"unknown\":1,\"idempotencyKey\":\"k-3\"}\n"},
};

// Bodies of the other routes.
const std::map<std::string, std::string> kRouteBodies = {
    {"patch-enable", R"({"enabled":false})"},
    {"add-member", R"({"userId":"alice"})"},
    {"clock-ms", R"({"now":1793491200000})"},
    {"clock-rfc3339", R"({"now":"2026-11-01T12:30:00.250+02:00"})"},
};

// A request as a client sends it (http_request_fuzz.cc takes raw requests), naming the
// authority the fuzz target's server checks Host against.
std::string Raw(const std::string& method, const std::string& target,
                const std::string& content_type = "", const std::string& body = "") {
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1:7411\r\n";
  if (!content_type.empty()) request += "Content-Type: " + content_type + "\r\n";
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return request + "\r\n" + body;
}

// The same body sent chunked, in two chunks.
std::string RawChunked(const std::string& method, const std::string& target,
                       const std::string& content_type, const std::string& body) {
  const size_t half = body.size() / 2;
  const auto chunk = [](std::string_view part) {
    char size[32];
    std::snprintf(size, sizeof size, "%zx", part.size());
    return std::string(size) + "\r\n" + std::string(part) + "\r\n";
  };
  return method + " " + target +
         " HTTP/1.1\r\nHost: 127.0.0.1:7411\r\nContent-Type: " + content_type +
         "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(std::string_view(body).substr(0, half)) +
         chunk(std::string_view(body).substr(half)) + "0\r\n\r\n";
}

// A hand-written definition seed: one the parser accepts, so that mutations start from it.
void WriteDefinition(const fs::path& path, const std::string& json) {
  BucketDefinition def;
  const Status status = ParseBucketDefinition(json, &def, "from-the-path");
  BUCKETD_CHECK_MSG(status.ok(), path.string() + ": " + status.ToString());
  Write(path, json);
}

void WriteJsonSeeds(const std::vector<std::string>& definitions,
                    const std::vector<std::string>& names, const fs::path& corpus) {
  for (size_t i = 0; i < definitions.size(); ++i) {
    Write(corpus / "definition" / names[i], definitions[i]);
    Write(corpus / "http_request" / ("post-bucket-" + names[i]),
          Raw("POST", "/v1/buckets", "application/json", definitions[i]));
    BucketDefinition def;
    BUCKETD_CHECK(ParseBucketDefinition(definitions[i], &def).ok());
    Write(corpus / "definition" / ("canonical-" + names[i]), ToCanonicalJson(def));
  }
  const std::string manual =
      R"({"name":"VIP","kind":"manual","enabled":false,"maxDwell":{"days":30}})";
  WriteDefinition(corpus / "definition" / "manual.json", manual);
  Write(corpus / "http_request" / "put-bucket-manual.json",
        Raw("PUT", "/v1/buckets/vip", "application/json", manual));
  WriteDefinition(corpus / "definition" / "operators.json",
                  R"({"id":"ops","name":"Operators","kind":"dynamic","entryLimit":"once",)"
                  R"("criteria":{"type":"composite","operator":"and","conditions":[)"
                  R"({"type":"property","property":"a","operator":"neq","value":"x"},)"
                  R"({"type":"property","property":"b","operator":"lte","value":10},)"
                  R"({"type":"property","property":"c","operator":"gte","value":-1},)"
                  R"({"type":"property","property":"d","operator":"lt","value":0.5},)"
                  R"({"type":"property","property":"e","operator":"exists"},)"
                  R"({"type":"composite","operator":"or","conditions":[)"
                  R"({"type":"property","property":"f","operator":"not_exists"},)"
                  R"({"type":"event","eventName":"g","check":"not_exists",)"
                  R"("within":{"seconds":90,"milliseconds":5}}]}]},)"
                  R"("minDwell":{"minutes":1},"dwell":[{"every":"12h"}]})");
  WriteDefinition(
      corpus / "definition" / "every-options.json",
      R"({"id":"all_options-1","name":"All","description":"d","enabled":true,"kind":"dynamic",)"
      R"("criteria":{"type":"composite","operator":"or","conditions":[)"
      R"({"type":"property","property":"score","operator":"gt","value":1.5e3},)"
      R"({"type":"property","property":"email","operator":"contains","value":"@acme"},)"
      R"({"type":"property","property":"tags","operator":"eq","value":["a",{"b":null}]},)"
      R"({"type":"event","eventName":"paid","check":"count","operator":"eq","value":3,)"
      R"("within":{"hours":1.5,"minutes":30}}]},)"
      R"("entryLimit":"once_per_period","entryPeriod":86400000,"minDwell":"1h",)"
      R"("maxDwell":"2d12h","dwell":[{"after":"1d"},{"every":{"days":7}}],)"
      R"("reconcileJoins":false,"timeBased":true,"reconcileEvery":"5m","fastExpiry":false})");

  for (const auto& [name, body] : kEventBodies) {
    Write(corpus / "events" / name, body);
    const bool ndjson = name.ends_with(".ndjson");
    const std::string type = ndjson ? "application/x-ndjson" : "application/json";
    Write(corpus / "http_request" / ("post-events-" + name), Raw("POST", "/v1/events", type, body));
    Write(corpus / "http_request" / ("post-events-chunked-" + name),
          RawChunked("POST", "/v1/events", type, body));
  }
  const std::map<std::string, std::pair<std::string, std::string>> route_of = {
      {"patch-enable", {"PATCH", "/v1/buckets/power-users"}},
      {"add-member", {"POST", "/v1/buckets/vip/members"}},
      {"clock-ms", {"POST", "/v1/clock"}},
      {"clock-rfc3339", {"POST", "/v1/clock"}}};
  for (const auto& [name, body] : kRouteBodies) {
    const auto& [method, target] = route_of.at(name);
    Write(corpus / "http_request" / (name + ".json"),
          Raw(method, target, "application/json", body));
  }
  // Reads, deletes and the erasure, and framings the server refuses.
  const std::map<std::string, std::string> requests = {
      {"get-transitions", Raw("GET", "/v1/transitions?after=0&limit=5")},
      {"get-members", Raw("GET", "/v1/buckets/power-users/members?limit=2&cursor=u1")},
      {"get-memberships", Raw("GET", "/v1/users/alice/memberships")},
      {"get-state", Raw("GET", "/v1/state")},
      {"get-metrics", Raw("GET", "/metrics")},
      {"healthz", Raw("GET", "/healthz")},
      {"delete-contact", Raw("DELETE", "/v1/contacts/alice")},
      {"erase-contact", Raw("DELETE", "/v1/contacts/bob?erase=true")},
      {"delete-member", Raw("DELETE", "/v1/buckets/vip/members/a%2Fb")},
      {"post-sweep", Raw("POST", "/v1/sweep")},
      {"te-and-cl",
       "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:7411\r\nContent-Type: "
       "application/json\r\nContent-Length: 2\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n"},
      {"no-length", "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:7411\r\n\r\n"},
      {"foreign-origin",
       "POST /v1/clock HTTP/1.1\r\nHost: 127.0.0.1:7411\r\nOrigin: "
       "http://evil.example\r\nContent-Type: application/json\r\n"
       "Content-Length: 9\r\n\r\n{\"now\":1}"},
  };
  for (const auto& [name, request] : requests) Write(corpus / "http_request" / name, request);
}

int Main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <examples/buckets dir> <corpus dir>\n", argv[0]);
    return 2;
  }
  const fs::path examples = argv[1];
  const fs::path corpus = argv[2];
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(examples)) {
    if (entry.path().extension() == ".json") names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> definitions;
  for (const std::string& name : names) definitions.push_back(Read(examples / name));

  Log log;
  RunWorkload(definitions, &log);
  WriteLogSeeds(log, corpus / "record");
  WriteSnapshotSeeds(log, corpus / "snapshot");
  WriteJsonSeeds(definitions, names, corpus);
  return 0;
}

}  // namespace
}  // namespace bucketd

int main(int argc, char** argv) { return bucketd::Main(argc, argv); }
