#include "engine/state/digest.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include <xxhash.h>

namespace bucketd {
namespace {

// Feeds values in a fixed, platform-independent encoding: integers little-endian 8 bytes,
// strings length-prefixed, optionals as a presence byte then the value.
class Hasher {
 public:
  Hasher() : state_(XXH3_createState()) { XXH3_128bits_reset(state_); }
  ~Hasher() { XXH3_freeState(state_); }

  void U64(uint64_t v) {
    unsigned char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(v >> (8 * i));
    XXH3_128bits_update(state_, bytes, sizeof bytes);
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Bool(bool v) { U64(v ? 1 : 0); }
  void Str(std::string_view s) {
    U64(s.size());
    XXH3_128bits_update(state_, s.data(), s.size());
  }
  void OptTime(const std::optional<TimeMs>& t) {
    Bool(t.has_value());
    if (t) I64(*t);
  }
  void Value(const PropertyValueView& v) {
    U64(static_cast<uint64_t>(v.type));
    Bool(v.boolean);
    uint64_t bits;
    static_assert(sizeof bits == sizeof v.number);
    std::memcpy(&bits, &v.number, sizeof bits);
    U64(bits);
    Str(v.text);
  }
  std::string Hex() {
    const XXH128_hash_t h = XXH3_128bits_digest(state_);
    char out[33];
    std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
    return out;
  }

 private:
  XXH3_state_t* state_;
};

void HashLegs(const State& state, const LegHistories& legs, Hasher* h) {
  const auto& name = [&](uint32_t id) -> const std::string& { return state.event_names.Name(id); };
  std::vector<const AggregateHistory*> aggregates;
  for (const AggregateHistory& a : legs.aggregates()) aggregates.push_back(&a);
  std::sort(aggregates.begin(), aggregates.end(), [&](const auto* a, const auto* b) {
    return name(a->stream_id()) < name(b->stream_id());
  });
  h->Str("legs");
  h->U64(aggregates.size());
  for (const AggregateHistory* a : aggregates) {
    h->Str(name(a->stream_id()));
    h->U64(a->count());
    h->Value(PropertyValue::Number(a->sum));
    h->Value(PropertyValue::Number(a->min));
    h->Value(PropertyValue::Number(a->max));
    h->U64(a->newest.size());
    for (const Contribution& c : a->newest) {
      h->I64(c.at);
      h->Value(PropertyValue::Number(c.number));
    }
    h->U64(a->distinct.size());
    for (const DistinctValue& v : a->distinct) {
      h->U64(v.hash);
      h->I64(v.latest);
    }
  }
  std::vector<const SequenceHistory*> sequences;
  for (const SequenceHistory& q : legs.sequences()) sequences.push_back(&q);
  std::sort(sequences.begin(), sequences.end(), [&](const auto* a, const auto* b) {
    return name(a->stream_id()) < name(b->stream_id());
  });
  h->U64(sequences.size());
  for (const SequenceHistory* q : sequences) {
    h->Str(name(q->stream_id()));
    h->OptTime(q->start);
    h->U64(q->later_steps());
    for (uint32_t step = 0; step < q->later_steps(); ++step) {
      const Instants occurrences = q->Later(step);
      h->U64(occurrences.size());
      for (TimeMs t : occurrences) h->I64(t);
    }
  }
}

void HashUser(const State& state, const User& user, Hasher* h) {
  h->Str(user.id);
  h->Bool(user.email.has_value());
  if (user.email) h->Str(*user.email);
  h->Bool(user.deleted);
  h->Bool(user.has_events);

  // Interned ids depend on first use; the canonical form orders by the strings.
  std::vector<const Property*> properties;
  for (const Property& p : user.properties) properties.push_back(&p);
  std::sort(properties.begin(), properties.end(), [&](const Property* a, const Property* b) {
    return state.property_keys.Name(a->key_id) < state.property_keys.Name(b->key_id);
  });
  h->U64(properties.size());
  for (const Property* p : properties) {
    h->Str(state.property_keys.Name(p->key_id));
    h->Value(p->value());
    h->I64(p->changed_at);
  }

  std::vector<const EventHistory*> events;
  for (const EventHistory& e : user.events) events.push_back(&e);
  std::sort(events.begin(), events.end(), [&](const EventHistory* a, const EventHistory* b) {
    return state.event_names.Name(a->name_id()) < state.event_names.Name(b->name_id());
  });
  h->U64(events.size());
  for (const EventHistory* e : events) {
    h->Str(state.event_names.Name(e->name_id()));
    h->U64(e->total_count());
    h->I64(e->first_at);
    h->I64(e->last_at);
    // What criteria see: instants kept beyond the depth are a cache for later definitions.
    const Instants newest = Newest(*e, state.depth(e->name_id()));
    h->U64(newest.size());
    for (TimeMs t : newest) h->I64(t);
  }

  std::vector<const Slot*> slots;
  for (const Slot* s : user.slots) slots.push_back(s);
  std::sort(slots.begin(), slots.end(),
            [](const Slot* a, const Slot* b) { return a->bucket < b->bucket; });
  h->U64(slots.size());
  for (const Slot* s : slots) {
    h->Str(state.buckets[s->bucket]->def.id);
    h->U64(s->entry_count);
    h->I64(s->due_at);
    h->Bool(s->active);
    h->Bool(s->rejoin_blocked);
    h->U64(static_cast<uint64_t>(s->source));
    h->I64(s->entered_at);
    h->OptTime(s->dwell_anchor_at);
    h->OptTime(s->last_left_at);
    std::vector<DwellStamp> dwell;
    for (const DwellStamp& d : user.dwell) {
      if (d.bucket == s->bucket) dwell.push_back(d);
    }
    std::sort(dwell.begin(), dwell.end(),
              [](const DwellStamp& a, const DwellStamp& b) { return a.label_key < b.label_key; });
    h->U64(dwell.size());
    for (const DwellStamp& d : dwell) {
      h->I64(d.label_key);
      h->U64(d.count);
    }
  }

  h->U64(user.past.size());
  for (const PastMembership& p : user.past) {
    h->Str(state.buckets[p.bucket]->def.id);
    h->U64(p.entry_count);
    h->U64(static_cast<uint64_t>(p.source));
    h->U64(static_cast<uint64_t>(p.reason));
    h->I64(p.entered_at);
    h->I64(p.left_at);
    h->OptTime(p.dwell_anchor_at);
  }
  // Hashed only where a user has them, so a state without them keeps its digest.
  if (user.legs) HashLegs(state, user.legs, h);
}

}  // namespace

std::string ComputeDigest(const State& state) {
  Hasher h;
  h.Str("bucketd-state-v1");
  h.U64(state.applied_seq);
  h.U64(state.transition_seq);
  h.I64(state.now);
  h.U64(state.buckets.size());
  for (const auto& b : state.buckets) {
    h.Str(b->def.id);
    h.Str(b->canonical_json);
    h.Bool(b->deleted);
    h.Bool(b->ever_enabled);
    h.U64(b->entered_total);
    h.U64(b->left_total);
    h.I64(b->closed_dwell_ms_total);
    h.U64(b->members.size());
    h.U64(b->due_index.size());
  }
  h.U64(state.users.size());
  for (const auto& user : state.users) HashUser(state, *user, &h);
  // Only when there are any, so a state without subscriptions keeps the digest it had
  // before they existed (digests recorded by older builds still compare equal).
  if (!state.subscriptions.empty()) {
    h.Str("subscriptions");
    h.U64(state.subscriptions.size());
    for (const Subscription& sub : state.subscriptions) {
      h.Str(sub.id);
      h.Str(sub.url);
      h.Str(sub.secret);
      h.Str(sub.bucket_id);
      h.U64(sub.kinds.size());
      for (TransitionKind kind : sub.kinds) h.U64(static_cast<uint64_t>(kind));
      h.U64(sub.cursor);
      h.I64(sub.created_at);
    }
  }
  return h.Hex();
}

}  // namespace bucketd
