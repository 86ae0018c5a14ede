#include "json_requests.h"

#include <algorithm>
#include <string>
#include <utility>

#include <simdjson.h>

#include "bucketd/time_format.h"
#include "engine/base/json_values.h"

namespace bucketd::server {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

Status NotJson(std::string_view field, simdjson::error_code error) {
  return Status::InvalidArgument(std::string(field),
                                 std::string("malformed JSON: ") + simdjson::error_message(error));
}

Status ParseDocument(simdjson::dom::parser& parser, std::string_view json, element* out) {
  if (simdjson::error_code error = parser.parse(json.data(), json.size()).get(*out)) {
    return NotJson("body", error);
  }
  return Status::Ok();
}

Status RequireObject(element value, std::string_view what, object* out) {
  if (value.get(*out) != simdjson::SUCCESS) {
    return Status::InvalidArgument("body", std::string(what) + " must be a JSON object");
  }
  return Status::Ok();
}

Status ParseString(element value, std::string_view field, std::string* out) {
  std::string_view text;
  if (value.get(text) != simdjson::SUCCESS) {
    return Status::InvalidArgument(std::string(field), "must be a string");
  }
  *out = std::string(text);
  return Status::Ok();
}

Status ParseTime(element value, std::string_view field, TimeMs* out) {
  switch (value.type()) {
    case element_type::INT64:
      *out = value.get_int64().value_unsafe();
      return Status::Ok();
    case element_type::STRING:
      if (Status status = ParseRfc3339(value.get_string().value_unsafe(), out); !status.ok()) {
        return Status::InvalidArgument(std::string(field), status.message());
      }
      return Status::Ok();
    default:
      return Status::InvalidArgument(std::string(field),
                                     "must be an integer of milliseconds or an RFC 3339 string");
  }
}

// A JSON object of properties (`field`: contactProperties, or an event's own properties).
Status ParseProperties(element value, std::string_view field, std::vector<PropertyPatch>* out) {
  object properties;
  if (value.get(properties) != simdjson::SUCCESS) {
    return Status::InvalidArgument(std::string(field), "must be an object");
  }
  for (auto [key, property] : properties) {
    for (const PropertyPatch& earlier : *out) {
      if (earlier.key == key) {
        return Status::InvalidArgument(std::string(field) + "." + std::string(key),
                                       "appears twice");
      }
    }
    PropertyPatch patch;
    patch.key = std::string(key);  // ValidateEvent checks it
    patch.value = ToPropertyValue(property);
    out->push_back(std::move(patch));
  }
  return Status::Ok();
}

Status ParseEventField(std::string_view key, element value, EventInput* event, bool* seen_user,
                       bool* seen_event) {
  const bool is_null = value.is_null();
  if (key == "userId") {
    *seen_user = true;
    return ParseString(value, key, &event->user_id);
  }
  if (key == "event") {
    *seen_event = true;
    return ParseString(value, key, &event->event);
  }
  if (key == "occurredAt") {
    if (is_null) return Status::Ok();
    TimeMs at = 0;
    Status status = ParseTime(value, key, &at);
    if (status.ok()) event->occurred_at_ms = at;
    return status;
  }
  if (key == "email") {
    if (is_null) return Status::Ok();
    event->email.emplace();
    return ParseString(value, key, &*event->email);
  }
  if (key == "idempotencyKey") {
    if (is_null) return Status::Ok();
    event->idempotency_key.emplace();
    return ParseString(value, key, &*event->idempotency_key);
  }
  if (key == "contactProperties") {
    if (is_null) return Status::Ok();
    return ParseProperties(value, key, &event->contact_properties);
  }
  if (key == "properties") {
    if (is_null) return Status::Ok();
    return ParseProperties(value, key, &event->properties);
  }
  return Status::InvalidArgument(std::string(key), "unknown field");
}

Status ParseEvent(element value, EventInput* event) {
  object fields;
  Status status = RequireObject(value, "an event", &fields);
  if (!status.ok()) return status;
  bool seen_user = false;
  bool seen_event = false;
  // A repeated key has no single meaning (definitions refuse them too). An event has at
  // most seven known keys, so a scan of the ones seen is all it takes.
  std::vector<std::string_view> seen_keys;
  for (auto [key, field_value] : fields) {
    if (std::find(seen_keys.begin(), seen_keys.end(), key) != seen_keys.end()) {
      return Status::InvalidArgument(std::string(key), "appears twice");
    }
    seen_keys.push_back(key);
    status = ParseEventField(key, field_value, event, &seen_user, &seen_event);
    if (!status.ok()) return status;
  }
  if (!seen_user) return Status::InvalidArgument("userId", "is required");
  if (!seen_event) return Status::InvalidArgument("event", "is required");
  return bucketd::ValidateEvent(*event);
}

void AddItem(element value, size_t index, ParsedEvents* out) {
  EventInput event;
  Status status = ParseEvent(value, &event);
  if (!status.ok()) {
    std::string_view key;
    if (value["idempotencyKey"].get(key) != simdjson::SUCCESS) {
      out->rejected.push_back({index, std::move(status)});
      return;
    }
    // The stand-in for the engine's duplicate check (ParsedEvents).
    event = EventInput{};
    event.idempotency_key = std::string(key);
  }
  out->events.push_back(std::move(event));
  out->indices.push_back(index);
  out->refusals.push_back(std::move(status));
}

bool IsBlank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

Status ParseNdjson(std::string_view body, ParsedEvents* out) {
  simdjson::dom::parser parser;
  size_t index = 0;
  while (!body.empty()) {
    size_t end = body.find('\n');
    std::string_view line = body.substr(0, end);
    body = end == std::string_view::npos ? std::string_view() : body.substr(end + 1);
    if (IsBlank(line)) continue;
    if (index == kBatchItemsMax) {
      out->over_limit = true;
      return Status::Ok();
    }
    element value;
    if (simdjson::error_code error = parser.parse(line.data(), line.size()).get(value)) {
      out->rejected.push_back({index, NotJson("", error)});
    } else {
      AddItem(value, index, out);
    }
    ++index;
  }
  out->items = index;
  return Status::Ok();
}

Status ParseJsonEvents(std::string_view body, ParsedEvents* out) {
  simdjson::dom::parser parser;
  element root;
  Status status = ParseDocument(parser, body, &root);
  if (!status.ok()) return status;
  simdjson::dom::array items;
  if (root.get(items) != simdjson::SUCCESS) {
    object single;
    status = RequireObject(root, "the body", &single);
    if (!status.ok()) return status;
    out->single = true;
    out->items = 1;
    AddItem(root, 0, out);
    return Status::Ok();
  }
  if (items.size() > kBatchItemsMax) {
    out->over_limit = true;
    return Status::Ok();
  }
  size_t index = 0;
  for (element item : items) AddItem(item, index++, out);
  out->items = index;
  return Status::Ok();
}

// Parses a small request object and hands each field to `on_field`, refusing unknown ones.
template <typename OnField>
Status ParseRequestObject(std::string_view body, OnField on_field) {
  simdjson::dom::parser parser;
  element root;
  Status status = ParseDocument(parser, body, &root);
  if (!status.ok()) return status;
  object fields;
  status = RequireObject(root, "the body", &fields);
  if (!status.ok()) return status;
  for (auto [key, value] : fields) {
    status = on_field(key, value);
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

}  // namespace

Status ParseEventsBody(std::string_view body, bool ndjson, ParsedEvents* out) {
  return ndjson ? ParseNdjson(body, out) : ParseJsonEvents(body, out);
}

Status ParseClockMove(bool manual_clock, std::string_view body, TimeMs* now_ms) {
  if (!manual_clock) {
    return Status::FailedPrecondition("now",
                                      "the clock is the wall clock; start with --clock manual");
  }
  return ParseClockRequest(body, now_ms);
}

Status ParseClockRequest(std::string_view body, TimeMs* now_ms) {
  bool seen = false;
  Status status = ParseRequestObject(body, [&](std::string_view key, element value) {
    if (key != "now") return Status::InvalidArgument(std::string(key), "unknown field");
    seen = true;
    return ParseTime(value, "now", now_ms);
  });
  if (status.ok() && !seen) return Status::InvalidArgument("now", "is required");
  return status;
}

Status ParseEnabledPatch(std::string_view body, bool* enabled) {
  bool seen = false;
  Status status = ParseRequestObject(body, [&](std::string_view key, element value) {
    if (key != "enabled") return Status::InvalidArgument(std::string(key), "unknown field");
    seen = true;
    if (value.get(*enabled) != simdjson::SUCCESS) {
      return Status::InvalidArgument("enabled", "must be a boolean");
    }
    return Status::Ok();
  });
  if (status.ok() && !seen) return Status::InvalidArgument("enabled", "is required");
  return status;
}

Status ParseAddMemberRequest(std::string_view body, std::string* user_id) {
  bool seen = false;
  Status status = ParseRequestObject(body, [&](std::string_view key, element value) {
    if (key != "userId") return Status::InvalidArgument(std::string(key), "unknown field");
    seen = true;
    return ParseString(value, "userId", user_id);
  });
  if (!status.ok()) return status;
  if (!seen) return Status::InvalidArgument("userId", "is required");
  // The rest of the user id's rules are the engine's (AddMember checks them).
  return Status::Ok();
}

Status ParseSubscriptionRequest(std::string_view body, SubscriptionSpec* spec) {
  bool has_url = false;
  Status status = ParseRequestObject(body, [&](std::string_view key, element value) {
    if (key == "url") {
      has_url = true;
      return ParseString(value, "url", &spec->url);
    }
    if (key == "bucket") {
      if (value.is_null()) return Status::Ok();
      return ParseString(value, "bucket", &spec->filter.bucket_id);
    }
    if (key == "secret") {
      if (value.is_null()) return Status::Ok();
      spec->secret.emplace();
      return ParseString(value, "secret", &*spec->secret);
    }
    if (key == "after") {
      uint64_t after = 0;
      if (value.get(after) != simdjson::SUCCESS) {
        return Status::InvalidArgument("after", "must be a seq (an integer >= 0)");
      }
      spec->after = after;
      return Status::Ok();
    }
    if (key == "kinds") {
      if (value.is_null()) return Status::Ok();
      simdjson::dom::array kinds;
      if (value.get(kinds) != simdjson::SUCCESS) {
        return Status::InvalidArgument("kinds", "must be an array of entered, left, dwell");
      }
      for (element item : kinds) {
        std::string_view name;
        TransitionKind kind;
        if (item.get(name) != simdjson::SUCCESS || !ParseTransitionKind(name, &kind)) {
          return Status::InvalidArgument("kinds", "must be an array of entered, left, dwell");
        }
        spec->filter.kinds.push_back(kind);
      }
      return Status::Ok();
    }
    return Status::InvalidArgument(std::string(key), "unknown field");
  });
  if (!status.ok()) return status;
  if (!has_url) return Status::InvalidArgument("url", "is required");
  return Status::Ok();
}

std::string DefinitionId(std::string_view json) {
  simdjson::dom::parser parser;
  element root;
  std::string_view id;
  if (ParseDocument(parser, json, &root).ok() && root["id"].get(id) == simdjson::SUCCESS) {
    return std::string(id);
  }
  return "";
}

Status ParseDefinitionsFile(std::string_view json, std::vector<std::string>* definitions) {
  simdjson::dom::parser parser;
  element root;
  Status status = ParseDocument(parser, json, &root);
  if (!status.ok()) return status;
  simdjson::dom::array items;
  if (root.get(items) != simdjson::SUCCESS) {
    definitions->push_back(simdjson::minify(root));
    return Status::Ok();
  }
  for (element item : items) definitions->push_back(simdjson::minify(item));
  return Status::Ok();
}

Status ParseTimeText(std::string_view text, TimeMs* out) {
  if (!text.empty() && text.find_first_not_of("-0123456789") == std::string_view::npos) {
    simdjson::dom::parser parser;
    element value;
    if (parser.parse(text.data(), text.size()).get(value) == simdjson::SUCCESS) {
      return ParseTime(value, "", out);
    }
  }
  return ParseRfc3339(text, out);
}

}  // namespace bucketd::server
