#include "engine/cluster/record_json.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <utility>

#include "bucketd/time_format.h"
#include "engine/base/check.h"
#include "engine/base/input_rules.h"
#include "engine/base/json_values.h"
#include "engine/base/json_writer.h"
#include "engine/definition/definition.h"

namespace bucketd::cluster {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

constexpr std::array<std::pair<RecordKind, std::string_view>, 10> kKindNames = {{
    {RecordKind::kEvent, "event"},
    {RecordKind::kContactDelete, "contactDelete"},
    {RecordKind::kBucketDefine, "bucketDefine"},
    {RecordKind::kBucketEnable, "bucketEnable"},
    {RecordKind::kBucketDisable, "bucketDisable"},
    {RecordKind::kBucketDelete, "bucketDelete"},
    {RecordKind::kMemberAdd, "memberAdd"},
    {RecordKind::kMemberRemove, "memberRemove"},
    {RecordKind::kClockAdvance, "clockAdvance"},
    {RecordKind::kSweep, "sweep"},
}};

std::string_view KindName(RecordKind kind) {
  for (const auto& [k, name] : kKindNames) {
    if (k == kind) return name;
  }
  return "";
}

bool ParseKind(std::string_view name, RecordKind* out) {
  for (const auto& [k, n] : kKindNames) {
    if (n == name) {
      *out = k;
      return true;
    }
  }
  return false;
}

bool HasUser(RecordKind kind) {
  return kind == RecordKind::kEvent || kind == RecordKind::kContactDelete ||
         kind == RecordKind::kMemberAdd || kind == RecordKind::kMemberRemove;
}

bool HasBucket(RecordKind kind) {
  return kind != RecordKind::kEvent && kind != RecordKind::kContactDelete &&
         kind != RecordKind::kClockAdvance && kind != RecordKind::kSweep;
}

Status ReadString(element value, std::string_view field, std::string* out) {
  std::string_view s;
  if (value.get(s) != simdjson::SUCCESS) {
    return Status::InvalidArgument(std::string(field), "must be a string");
  }
  *out = std::string(s);
  return Status::Ok();
}

// Integer milliseconds (what bucketd writes) or RFC 3339 (what a person types).
Status ReadTime(element value, std::string_view field, TimeMs* out) {
  int64_t ms = 0;
  if (value.get(ms) == simdjson::SUCCESS) {
    *out = ms;
    return Status::Ok();
  }
  std::string_view text;
  if (value.get(text) == simdjson::SUCCESS) {
    if (Status s = ParseRfc3339(text, out); !s.ok()) {
      return Status::InvalidArgument(std::string(field), s.message());
    }
    return Status::Ok();
  }
  return Status::InvalidArgument(std::string(field),
                                 "must be an integer of milliseconds or an RFC 3339 string");
}

Status ReadField(std::string_view key, element value, Record* r, bool* has_at,
                 bool* has_occurred_at) {
  if (key == "v") {
    int64_t version = 0;
    if (value.get(version) != simdjson::SUCCESS || version != 1) {
      return Status::InvalidArgument("v", "this node reads record version 1");
    }
    return Status::Ok();
  }
  if (key == "kind") {
    std::string_view name;
    if (value.get(name) != simdjson::SUCCESS || !ParseKind(name, &r->kind)) {
      return Status::InvalidArgument("kind", "unknown record kind");
    }
    return Status::Ok();
  }
  if (key == "at") {
    *has_at = true;
    return ReadTime(value, key, &r->at);
  }
  if (key == "controlSeq") {
    if (value.get(r->control_seq) != simdjson::SUCCESS || r->control_seq == 0) {
      return Status::InvalidArgument("controlSeq", "must be a positive integer");
    }
    return Status::Ok();
  }
  if (key == "userId") return ReadString(value, key, &r->user_id);
  if (key == "event") return ReadString(value, key, &r->event_name);
  if (key == "bucketId") return ReadString(value, key, &r->bucket_id);
  if (value.is_null()) return Status::Ok();  // the optional fields below: null is absent
  if (key == "occurredAt") {
    *has_occurred_at = true;
    return ReadTime(value, key, &r->occurred_at);
  }
  if (key == "email") return ReadString(value, key, &r->email.emplace());
  if (key == "idempotencyKey") return ReadString(value, key, &r->idempotency_key.emplace());
  if (key == "contactProperties" || key == "properties") {
    object properties;
    if (value.get(properties) != simdjson::SUCCESS) {
      return Status::InvalidArgument(std::string(key), "must be an object");
    }
    auto* out = key == "properties" ? &r->event_properties : &r->properties;
    for (auto [name, property] : properties) {
      out->push_back(PropertyPatch{std::string(name), ToPropertyValue(property)});
    }
    return Status::Ok();
  }
  if (key == "definition") {
    if (value.type() != element_type::OBJECT) {
      return Status::InvalidArgument("definition", "must be an object");
    }
    r->definition_json = simdjson::minify(value);
    return Status::Ok();
  }
  return Status::InvalidArgument(std::string(key), "unknown field");
}

}  // namespace

std::string EncodeRecord(const Record& r) {
  JsonWriter w;
  w.BeginObject().Key("v").Int(1).Key("kind").String(KindName(r.kind)).Key("at").Int(r.at);
  if (HasUser(r.kind)) w.Key("userId").String(r.user_id);
  if (HasBucket(r.kind)) w.Key("bucketId").String(r.bucket_id);
  if (r.kind == RecordKind::kBucketDefine) w.Key("definition").Raw(r.definition_json);
  if (r.control_seq != 0) w.Key("controlSeq").Uint(r.control_seq);
  if (r.kind == RecordKind::kEvent) {
    w.Key("event").String(r.event_name).Key("occurredAt").Int(r.occurred_at);
    if (r.email) w.Key("email").String(*r.email);
    if (r.idempotency_key) w.Key("idempotencyKey").String(*r.idempotency_key);
    if (!r.patch().empty()) {
      w.Key("contactProperties").BeginObject();
      for (const PropertyPatch& p : r.patch()) WritePropertyValue(p.value, &w.Key(p.key));
      w.EndObject();
    }
    if (!r.event_patch().empty()) {
      w.Key("properties").BeginObject();
      for (const PropertyPatch& p : r.event_patch()) {
        WritePropertyValue(p.value, &w.Key(p.key));
      }
      w.EndObject();
    }
  }
  w.EndObject();
  return w.Take();
}

Status DecodeRecord(std::string_view json, TimeMs stored_at_ms, Record* out) {
  // One parser per thread: a partition's reader decodes on one thread, and a parser reuses
  // its buffers across messages.
  thread_local simdjson::dom::parser parser;
  element root;
  if (parser.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS) {
    return Status::InvalidArgument("", "the message is not JSON");
  }
  object fields;
  if (root.get(fields) != simdjson::SUCCESS) {
    return Status::InvalidArgument("", "the message is not a JSON object");
  }
  Record r;
  bool has_at = false;
  bool has_occurred_at = false;
  for (auto [key, value] : fields) {
    if (Status s = ReadField(key, value, &r, &has_at, &has_occurred_at); !s.ok()) return s;
  }
  if (!has_at) r.at = stored_at_ms;
  if (HasUser(r.kind) && r.user_id.empty()) {
    return Status::InvalidArgument("userId", "is required");
  }
  if (HasBucket(r.kind) && r.bucket_id.empty()) {
    return Status::InvalidArgument("bucketId", "is required");
  }
  if (r.kind == RecordKind::kBucketDefine && r.definition_json.empty()) {
    return Status::InvalidArgument("definition", "is required");
  }
  if (r.control_seq != 0 && !IsControl(r.kind)) {
    return Status::InvalidArgument("controlSeq", "only a control record has one");
  }
  if (r.kind == RecordKind::kEvent) {
    if (r.event_name.empty()) return Status::InvalidArgument("event", "is required");
    // What does not depend on the state is refused here, for every reader alike: such an
    // event then never reaches the fold, nor a history re-read, which could not tell that the
    // live fold refused it. (The state-dependent refusal, a deleted contact, the history pass
    // skips by itself.)
    if (has_occurred_at) {
      if (Status s = ValidateOccurredAt(r.occurred_at); !s.ok()) return s;
    }
    if (Status s = ValidateUserId(r.user_id); !s.ok()) return s;
    if (Status s = ValidateEventName(r.event_name); !s.ok()) return s;
    if (Status s = ValidateContactProperties(r.patch()); !s.ok()) return s;
    if (Status s = ValidateEventProperties(r.event_patch()); !s.ok()) return s;
    if (r.idempotency_key) {
      if (Status s = ValidateIdempotencyKey(*r.idempotency_key); !s.ok()) return s;
    }
    r.occurred_at = has_occurred_at ? std::min(r.occurred_at, r.at) : r.at;
  }
  *out = std::move(r);
  return Status::Ok();
}

Record EventRecord(const EventInput& event, TimeMs at) {
  Record r;
  r.at = at;
  r.kind = RecordKind::kEvent;
  r.user_id = event.user_id;
  r.event_name = event.event;
  r.occurred_at = std::min(event.occurred_at_ms.value_or(at), at);
  r.email = event.email;
  r.properties = event.contact_properties;
  r.event_properties = event.properties;
  r.idempotency_key = event.idempotency_key;
  return r;
}

Status ClockRecord(TimeMs now, Record* out) {
  if (Status s = ValidateClockInstant(now); !s.ok()) return s;
  *out = Record();
  out->kind = RecordKind::kClockAdvance;
  out->at = now;
  return Status::Ok();
}

Status UserRecord(RecordKind kind, std::string_view user_id, std::string_view bucket_id, TimeMs at,
                  Record* out) {
  BUCKETD_CHECK(kind == RecordKind::kContactDelete || kind == RecordKind::kMemberAdd ||
                kind == RecordKind::kMemberRemove);
  if (Status s = ValidateUserId(user_id); !s.ok()) return s;
  if (kind != RecordKind::kContactDelete && bucket_id.empty()) {
    return Status::InvalidArgument("bucketId", "is required");
  }
  *out = Record();
  out->at = at;
  out->kind = kind;
  out->user_id = std::string(user_id);
  if (kind != RecordKind::kContactDelete) out->bucket_id = std::string(bucket_id);
  return Status::Ok();
}

Status DefinitionRecord(std::string_view json, std::optional<std::string_view> path_id, TimeMs at,
                        Record* out) {
  BucketDefinition def;
  if (Status s = ParseBucketDefinition(json, &def, path_id); !s.ok()) return s;
  if (path_id && def.id != *path_id) {
    return Status::InvalidArgument("id", "must match the id in the path");
  }
  if (Status s = CheckNewBucketId(def.id); !s.ok()) return s;
  *out = Record();
  out->at = at;
  out->kind = RecordKind::kBucketDefine;
  out->bucket_id = def.id;
  out->definition_json = ToCanonicalJson(def);
  return Status::Ok();
}

}  // namespace bucketd::cluster
