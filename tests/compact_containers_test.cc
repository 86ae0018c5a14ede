// The one-pointer containers a User and a Slot hold (engine/state/compact_vector.h,
// InlineString, OptionalString, DwellStamps and Property in engine/state/user.h): each behaves as
// the std type it replaced, element by element, through growth, inserts, erases, copies and moves,
// with elements that own memory (LeakSanitizer and ASan in the sanitizer lane see a slip).
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bucketd/limits.h"
#include "engine/state/compact_vector.h"
#include "engine/state/split_vector.h"
#include "engine/state/time48.h"
#include "engine/state/user.h"

// GCC 12 at -O3 reports OptionalString::assign's realloc as a use after free where this
// file's self-assignment checks inline it (it cannot see that bytes of the string's own
// are copied out first); which inlining trips it changes with unrelated code in the file.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

namespace bucketd {
namespace {

// Longer than a std::string's inline buffer: every element owns heap memory.
std::string Value(int i) { return "a-value-longer-than-fifteen-bytes-" + std::to_string(i); }

template <typename A, typename B>
bool Same(const A& a, const B& b) {
  return std::vector<typename B::value_type>(a.begin(), a.end()) == b;
}

TEST_CASE("a compact vector matches std::vector through random inserts and erases") {
  std::mt19937 rng(7);
  CompactVector<std::string> compact;
  std::vector<std::string> reference;
  CHECK(compact.allocation() == nullptr);
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 4) {
      compact.push_back(Value(step));
      reference.push_back(Value(step));
    } else if (op < 7) {
      const size_t at = reference.empty() ? 0 : rng() % (reference.size() + 1);
      const std::string* placed = compact.insert(compact.begin() + at, Value(step));
      CHECK(*placed == Value(step));
      reference.insert(reference.begin() + static_cast<std::ptrdiff_t>(at), Value(step));
    } else if (!reference.empty()) {
      const size_t at = rng() % reference.size();
      const size_t n = std::min<size_t>(1 + rng() % 3, reference.size() - at);
      compact.erase(compact.begin() + at, compact.begin() + at + n);
      reference.erase(reference.begin() + static_cast<std::ptrdiff_t>(at),
                      reference.begin() + static_cast<std::ptrdiff_t>(at + n));
    }
    REQUIRE(compact.size() == reference.size());
    if (step % 97 == 0) REQUIRE(Same(compact, reference));
  }
  REQUIRE(Same(compact, reference));

  CompactVector<std::string> copy = compact;
  CHECK(Same(copy, reference));
  CompactVector<std::string> moved = std::move(copy);
  CHECK(Same(moved, reference));
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): a moved-from vector is empty
  moved.erase(moved.begin(), moved.end());
  CHECK(moved.empty());
  CHECK(moved.allocation() == nullptr);  // emptied by erase: the block is freed
  compact = {};
  CHECK(compact.allocation() == nullptr);
}

TEST_CASE("reserve makes room exactly once; an empty vector costs no block") {
  CompactVector<std::string> v;
  v.reserve(3);
  CHECK(v.capacity() == 3);
  const void* block = v.allocation();
  for (int i = 0; i < 3; ++i) v.emplace_back(Value(i));
  CHECK(v.allocation() == block);  // no reallocation within the reserved room
  v.push_back(Value(3));
  CHECK(v.capacity() == 5);  // 3 + max(2, 3 / 2)
  CHECK(v[3] == Value(3));
  CHECK(v.back() == Value(3));
  v.clear();
  CHECK(v.allocation() == nullptr);
}

TEST_CASE("a split vector matches std::vector through random inserts, erases and sorts") {
  std::mt19937 rng(11);
  SplitVector<std::string, 3> split;
  std::vector<std::string> reference;
  CHECK(split.allocation() == nullptr);
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 12);
    if (op < 4) {
      GrowForOneMore(&split);
      split.push_back(Value(step));
      reference.push_back(Value(step));
    } else if (op < 7) {
      // Inserting in the middle as the state does (RecordInHistories): append, rotate.
      const size_t at = rng() % (reference.size() + 1);
      split.emplace_back(Value(step));
      std::rotate(split.begin() + static_cast<std::ptrdiff_t>(at), split.end() - 1, split.end());
      reference.insert(reference.begin() + static_cast<std::ptrdiff_t>(at), Value(step));
    } else if (op < 10 && !reference.empty()) {
      const size_t at = rng() % reference.size();
      const size_t n = std::min<size_t>(1 + rng() % 3, reference.size() - at);
      const auto next = split.erase(split.begin() + static_cast<std::ptrdiff_t>(at),
                                    split.begin() + static_cast<std::ptrdiff_t>(at + n));
      CHECK(next.index() == at);
      reference.erase(reference.begin() + static_cast<std::ptrdiff_t>(at),
                      reference.begin() + static_cast<std::ptrdiff_t>(at + n));
    } else if (op == 10) {
      std::sort(split.begin(), split.end());
      std::sort(reference.begin(), reference.end());
      if (!reference.empty()) {
        const std::string& probe = reference[rng() % reference.size()];
        CHECK(*std::lower_bound(split.begin(), split.end(), probe) == probe);
      }
    } else if (!reference.empty()) {
      split.pop_back();
      reference.pop_back();
    }
    REQUIRE(split.size() == reference.size());
    REQUIRE(split.capacity() >= split.size());
    if (step % 97 == 0) REQUIRE(Same(split, reference));
  }
  REQUIRE(Same(split, reference));
  for (size_t i = 0; i < reference.size(); ++i) REQUIRE(split.at(i) == reference[i]);

  SplitVector<std::string, 3> copy = split;
  CHECK(Same(copy, reference));
  SplitVector<std::string, 3> moved = std::move(copy);
  CHECK(Same(moved, reference));
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): a moved-from vector is empty
  CHECK(copy.allocation() == nullptr);
  copy = moved;  // assigned back after the move
  CHECK(Same(copy, reference));
  moved.clear();
  CHECK(moved.empty());
  CHECK(moved.allocation() == nullptr);
}

TEST_CASE("a split vector keeps its first elements inline and only the rest on the heap") {
  static_assert(sizeof(SplitVector<EventHistory, 3>) ==
                sizeof(absl::InlinedVector<EventHistory, 3>));
  static_assert(sizeof(SplitVector<Pointer48<Slot>, 4>) ==
                sizeof(absl::InlinedVector<Pointer48<Slot>, 4>));
  SplitVector<std::string, 3> v;
  const auto* object = reinterpret_cast<const char*>(&v);
  const auto inside = [&](const std::string& e) {
    const auto* p = reinterpret_cast<const char*>(&e);
    return p >= object && p < object + sizeof v;
  };
  for (int i = 0; i < 3; ++i) {
    GrowForOneMore(&v);
    v.push_back(Value(i));
  }
  CHECK(v.allocation() == nullptr);  // three fit inline: no block
  CHECK(v.capacity() == 3);
  GrowForOneMore(&v);
  CHECK(v.capacity() == 5);  // 3 + max(2, 3 / 4): the block has room for two
  CHECK(v.tail_size() == 0);
  for (int i = 3; i < 10; ++i) {
    GrowForOneMore(&v);
    v.push_back(Value(i));
  }
  CHECK(v.capacity() == 11);  // 5 -> 7 -> 9 -> 11, as GrowForOneMore grew the whole array
  CHECK(v.tail_size() == 7);
  for (int i = 0; i < 10; ++i) CHECK(inside(v[static_cast<size_t>(i)]) == (i < 3));
  CHECK(v.inline_data() == &v[0]);
  CHECK(v.tail_data() == &v[3]);
  // Erasing back to fewer than the inline places keeps the block (until clear()) and the
  // elements in their places.
  v.erase(v.begin() + 1, v.end());
  CHECK(v.size() == 1);
  CHECK(v[0] == Value(0));
  CHECK(v.allocation() != nullptr);
  v.push_back(Value(42));
  CHECK(inside(v[1]));
  // reserve() is exact past the inline places, and makes room before any element exists.
  SplitVector<std::string, 3> reserved;
  reserved.reserve(8);
  CHECK(reserved.capacity() == 8);
  CHECK(reserved.empty());
  for (int i = 0; i < 8; ++i) reserved.emplace_back(Value(i));
  CHECK(reserved.capacity() == 8);
  CHECK(reserved.back() == Value(7));
  // Appending past the room grows it by a quarter (at least two), not by one.
  reserved.push_back(Value(8));
  CHECK(reserved.capacity() == 10);
  // An empty range erases nothing, in the middle too.
  const auto at = reserved.erase(reserved.begin() + 4, reserved.begin() + 4);
  CHECK(at.index() == 4);
  CHECK(reserved.size() == 9);
  for (size_t i = 0; i < reserved.size(); ++i) CHECK(reserved[i] == Value(static_cast<int>(i)));
}

TEST_CASE("an instant list matches std::vector and keeps two inline in 48 bits") {
  std::mt19937 rng(11);
  InstantList list;
  std::vector<TimeMs> reference;
  CHECK(sizeof(InstantList) == 12);
  const auto all = [](const InstantList& l) {
    const Instants v = l.view();
    return std::vector<TimeMs>(v.begin(), v.end());
  };
  for (int step = 0; step < 50000; ++step) {
    const int op = static_cast<int>(rng() % 13);
    // 0 and the largest instant kept included: both are valid.
    const TimeMs t = rng() % 50 == 0 ? InstantList::kMax : static_cast<TimeMs>(rng() % 1000);
    if (op < 5) {
      const auto place = std::upper_bound(reference.begin(), reference.end(), t);
      const size_t at = static_cast<size_t>(place - reference.begin());
      REQUIRE(list.UpperBound(t) == at);
      list.insert(at, t);
      reference.insert(place, t);
    } else if (op < 8 && !reference.empty()) {
      const size_t at = rng() % reference.size();
      const size_t n = std::min<size_t>(1 + rng() % 4, reference.size() - at);
      list.erase(at, at + n);
      reference.erase(reference.begin() + static_cast<std::ptrdiff_t>(at),
                      reference.begin() + static_cast<std::ptrdiff_t>(at + n));
    } else if (op == 8 && !reference.empty()) {  // the oldest gives way
      const size_t place = 1 + rng() % reference.size();
      list.DropOldestInsert(place, t);
      reference.erase(reference.begin());
      reference.insert(reference.begin() + static_cast<std::ptrdiff_t>(place - 1), t);
    } else if (op == 9) {
      const size_t n = rng() % 6;
      list.resize(n);
      reference.resize(n, 0);
    } else if (op == 10 && !reference.empty()) {  // keep a suffix, from itself
      const size_t keep = rng() % (reference.size() + 1);
      list.assign(list.view().span().last(keep));
      reference.assign(reference.end() - static_cast<std::ptrdiff_t>(keep), reference.end());
    } else if (op == 11) {
      InstantList copy = list;
      CHECK(copy == list);
      list = std::move(copy);
    } else if (op == 12) {
      list.push_back(t);
      reference.push_back(t);
    }
    REQUIRE(list.size() == reference.size());
    REQUIRE(all(list) == reference);
    // Two or fewer are inline: no heap block, whatever came before.
    REQUIRE((list.allocation() == nullptr) == (reference.size() <= InstantList::kInline));
    if (!reference.empty()) {
      REQUIRE(list.front() == reference.front());
      REQUIRE(list.back() == reference.back());
      REQUIRE(list[reference.size() / 2] == reference[reference.size() / 2]);
    }
    const size_t n = rng() % 4;
    const Instants last = list.Last(n);
    const Instants copied = last;  // a copy reads its own decoded instants
    REQUIRE(std::vector<TimeMs>(copied.begin(), copied.end()) ==
            std::vector<TimeMs>(
                reference.end() - static_cast<std::ptrdiff_t>(std::min(n, reference.size())),
                reference.end()));
  }
  const std::vector<TimeMs> from{5, 6, 7, 8};
  list.assign(from);
  CHECK(all(list) == from);
  CHECK(list.back() == 8);
  list.clear();
  CHECK(list.empty());
  CHECK(list.capacity() == InstantList::kInline);
}

// Runs `f` in a child process: true if it stopped on a failed check (SIGABRT, with the
// check's message on stderr) instead of going on.
bool StopsOnCheck(const std::function<void()>& f) {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Catch's handler would report the abort as a failure of the child's copy of the test,
    // and the check's message is expected: neither belongs in the log.
    std::signal(SIGABRT, SIG_DFL);
    std::freopen("/dev/null", "w", stderr);
    f();
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

TEST_CASE("an instant list refuses an instant it cannot keep") {
  // Past kMax the two patterns that mark an empty place and the heap form begin: storing one
  // fails a check (every build) rather than reading back as something else.
  CHECK(InstantList::Fits(0));
  CHECK(InstantList::Fits(InstantList::kMax));
  CHECK(InstantList::Fits(kInstantMsMax));
  CHECK_FALSE(InstantList::Fits(InstantList::kMax + 1));
  CHECK_FALSE(InstantList::Fits(-1));
  CHECK(StopsOnCheck([] { InstantList().insert(0, InstantList::kMax + 1); }));
  CHECK(StopsOnCheck([] { InstantList().push_back(-1); }));
  CHECK(StopsOnCheck([] {
    InstantList list;
    list.push_back(1);
    list.DropOldestInsert(1, InstantList::kMax + 1);
  }));
  CHECK_FALSE(StopsOnCheck([] { InstantList().insert(0, InstantList::kMax); }));
}

TEST_CASE("an event history packs its name id and count in one word, refusing past either") {
  CHECK(sizeof(EventHistory) == 32);
  EventHistory h;
  h.set_name_id(kEventNameIdsMax - 1);
  h.set_total_count(kEventCountMax);
  CHECK(h.name_id() == kEventNameIdsMax - 1);  // neither spills into the other
  CHECK(h.total_count() == kEventCountMax);
  h.set_name_id(7);
  CHECK(h.total_count() == kEventCountMax);
  h.set_total_count(0);
  CHECK(h.name_id() == 7);
  // Past either limit: a failed check, never a wrapped count or another name's id.
  CHECK(StopsOnCheck([] { EventHistory().set_name_id(kEventNameIdsMax); }));
  CHECK(StopsOnCheck([] { EventHistory().set_total_count(kEventCountMax + 1); }));
  CHECK(StopsOnCheck([] {
    std::vector<EventHistory> histories(1);
    histories[0].set_total_count(kEventCountMax);
    RecordInHistories(&histories, 0, 1000, 2);
  }));
  CHECK(StopsOnCheck([] {
    std::vector<EventHistory> histories;
    RecordInHistories(&histories, kEventNameIdsMax, 1000, 2);
  }));
  std::vector<EventHistory> histories(1);
  histories[0].set_total_count(kEventCountMax - 1);
  RecordInHistories(&histories, 0, 1000, 2);
  CHECK(histories[0].total_count() == kEventCountMax);
}

TEST_CASE("an optional string behaves as std::optional<std::string>") {
  OptionalString s;
  CHECK(!s);
  CHECK(static_cast<std::optional<std::string>>(s) == std::nullopt);
  s.assign("ada@example.com");
  REQUIRE(s.has_value());
  CHECK(*s == "ada@example.com");
  s.assign("");  // an empty value is a value, not none
  REQUIRE(s.has_value());
  CHECK((*s).empty());
  s.assign("a-longer-address-than-before@example.com");
  CHECK(*s == "a-longer-address-than-before@example.com");
  OptionalString copy = s;
  CHECK(copy == s);
  copy.assign("grace@example.com");
  CHECK(!(copy == s));
  CHECK(*s == "a-longer-address-than-before@example.com");  // the copy owns its bytes
  OptionalString moved = std::move(copy);
  CHECK(*moved == "grace@example.com");
  CHECK(static_cast<std::optional<std::string>>(moved) ==
        std::optional<std::string>("grace@example.com"));
  // Assigned from its own bytes: all of them, a shorter part, a part at the end.
  moved.assign(*moved);
  CHECK(*moved == "grace@example.com");
  moved.assign((*moved).substr(0, 5));
  CHECK(*moved == "grace");
  moved.assign((*moved).substr(2));
  CHECK(*moved == "ace");
  moved.reset();
  CHECK(!moved.has_value());
  CHECK(moved.allocation() == nullptr);
}

TEST_CASE("an inline string behaves as std::string, 15 bytes inline and longer ones in a block") {
  STATIC_REQUIRE(sizeof(InlineString) == 16);
  const std::string texts[] = {"",
                               "u",
                               "user-48213",
                               "fifteen-bytes!!",
                               "sixteen-bytes!!!",
                               "3f2b8c1e-9a4d-4e7f-b6a2-0c5d8e1f7a93",
                               Value(3)};
  for (const std::string& text : texts) {
    CAPTURE(text);
    InlineString s(text);
    CHECK(std::string_view(s) == text);
    CHECK(std::string(s) == text);
    CHECK(s.size() == text.size());
    CHECK(s == text);
    CHECK((s.allocation() != nullptr) == (text.size() > 15));
    InlineString copy = s;
    CHECK(copy == s);
    CHECK((copy.allocation() == nullptr || copy.allocation() != s.allocation()));
    InlineString moved = std::move(copy);
    CHECK(moved == text);
    moved = std::string_view(moved);  // from its own bytes: all of them, then a tail
    CHECK(moved == text);
    if (!text.empty()) {
      moved = std::string_view(moved).substr(1);
      CHECK(moved == std::string_view(text).substr(1));
      moved = text;
    }
    moved = "other";
    CHECK(moved == "other");
    CHECK(moved.allocation() == nullptr);
    moved = s;
    CHECK(moved == text);
  }
  // Orders as its bytes, as std::string did (member pages page by userId).
  std::vector<std::string> sorted(std::begin(texts), std::end(texts));
  std::vector<InlineString> strings(sorted.begin(), sorted.end());
  std::sort(sorted.begin(), sorted.end());
  std::sort(strings.begin(), strings.end());
  for (size_t i = 0; i < sorted.size(); ++i) CHECK(strings[i] == sorted[i]);
  CHECK(InlineString("user-1") < std::string_view("user-2"));
  CHECK(InlineString("b") > InlineString("a-longer-one-than-fifteen"));
}

TEST_CASE("a contact property keeps its value canonical in 24 bytes, long texts in a block") {
  STATIC_REQUIRE(sizeof(Property) <= 24);
  const std::string long_text = Value(7);  // past the 12 inline bytes
  const PropertyValue values[] = {
      PropertyValue::Bool(true),
      PropertyValue::Bool(false),
      PropertyValue::Number(-0.25),
      PropertyValue::String(""),
      PropertyValue::String("DE"),
      PropertyValue::String("twelve-bytes"),
      PropertyValue::String(long_text),
      PropertyValue{PropertyValue::Type::kArray, false, 0, "[1,2]"},
      PropertyValue{PropertyValue::Type::kObject, false, 0,
                    "{\"a\":" + long_text.substr(0, 20) + "}"},
  };
  for (const PropertyValue& v : values) {
    CAPTURE(v.text);
    Property p(3, v, 1'700'000'000'123);
    CHECK(p.key_id == 3);
    CHECK(TimeMs{p.changed_at} == 1'700'000'000'123);
    CHECK(p.value().ToValue() == v);
    CHECK(p.Holds(v));
    CHECK((p.allocation() != nullptr) == (v.text.size() > 12));
    Property copy = p;  // owns its own block
    CHECK(copy.value().ToValue() == v);
    CHECK((copy.allocation() == nullptr || copy.allocation() != p.allocation()));
    Property moved = std::move(copy);
    CHECK(moved.value().ToValue() == v);
    // Set from its own bytes: the whole text, and a part that starts inside it.
    moved.set_value(moved.value());
    CHECK(moved.value().ToValue() == v);
    if (!v.text.empty()) {
      PropertyValueView tail = moved.value();
      tail.text = tail.text.substr(1);
      moved.set_value(tail);
      CHECK(moved.value().text == v.text.substr(1));
    }
    moved = p;
    CHECK(moved.value().ToValue() == v);
  }
  // Only the field the type uses is kept: a stray number or text is dropped, so what the
  // digest and the snapshot see is the same for every input that means the same value.
  const PropertyValue stray{PropertyValue::Type::kNumber, true, 5, "junk"};
  Property p(1, stray, 0);
  CHECK(p.value().ToValue() == PropertyValue::Number(5));
  CHECK(p.Holds(PropertyValue::Number(5)));
  CHECK(p.Holds(stray));  // the same number
  CHECK(!p.Holds(PropertyValue::Number(6)));
  CHECK(!p.Holds(PropertyValue::String("5")));
  p.set_value(PropertyValue{PropertyValue::Type::kBool, true, 9, "x"});
  CHECK(p.value().ToValue() == PropertyValue::Bool(true));
  p.set_value(PropertyValue{PropertyValue::Type::kString, true, 9, long_text});
  CHECK(p.value().ToValue() == PropertyValue::String(long_text));
  p.set_value(PropertyValue::Number(1));
  CHECK(p.allocation() == nullptr);  // the block went with the text
}

TEST_CASE("dwell stamps behave as a vector of stamps and cost nothing until a reaction fires") {
  DwellStamps stamps;
  CHECK(stamps.empty());
  CHECK(stamps.allocation() == nullptr);
  for (uint32_t i = 0; i < 40; ++i) {
    stamps.push_back(DwellStamp{int64_t{i} * 2 + 1, i});
    CHECK(stamps.back().count == i);
  }
  REQUIRE(stamps.size() == 40);
  uint32_t i = 0;
  for (const DwellStamp& d : stamps) {
    CHECK(d.label_key == int64_t{i} * 2 + 1);
    CHECK(d.count == i);
    ++i;
  }
  DwellStamps copy = stamps;
  copy.back().count = 1000;
  CHECK(stamps.back().count == 39);
  stamps.resize(2);
  CHECK(stamps.size() == 2);
  stamps.resize(4);  // new stamps are value-initialized
  CHECK(stamps.begin()[3].label_key == 0);
  CHECK(stamps.begin()[3].count == 0);
  const void* block = stamps.allocation();
  stamps.clear();
  CHECK(stamps.empty());
  CHECK(stamps.allocation() == block);  // kept for the next membership's stamps
  stamps.push_back(DwellStamp{7, 1});
  CHECK(stamps.allocation() == block);
  CHECK(stamps.size() == 1);
  DwellStamps moved = std::move(copy);
  CHECK(moved.size() == 40);
  CHECK(moved.back().count == 1000);
}

TEST_CASE("a user's dwell stamps keep each slot's apart, in the order they fired") {
  DwellStamps stamps;
  for (uint32_t i = 0; i < 12; ++i) stamps.push_back(DwellStamp{int64_t{i % 4}, i, i % 3});
  REQUIRE(stamps.Find(1, 1) != nullptr);
  CHECK(stamps.Find(1, 1)->count == 1);  // the first fired of bucket 1 with key 1
  CHECK(stamps.Find(2, 3) != nullptr);
  CHECK(stamps.Find(7, 0) == nullptr);
  const void* block = stamps.allocation();
  stamps.EraseBucket(1);
  CHECK(stamps.size() == 8);
  CHECK(stamps.Find(1, 1) == nullptr);
  std::vector<uint32_t> counts;
  for (const DwellStamp& d : stamps) counts.push_back(d.count);
  CHECK(counts == std::vector<uint32_t>{0, 2, 3, 5, 6, 8, 9, 11});  // the others, in order
  stamps.EraseBucket(0);
  stamps.EraseBucket(2);
  CHECK(stamps.empty());
  CHECK(stamps.allocation() == block);  // kept for the next membership's stamps
}

TEST_CASE("a slot is 40 bytes and keeps every bucket index below the limit") {
  STATIC_REQUIRE(sizeof(Slot) == 40);
  STATIC_REQUIRE(sizeof(EventHistory) == 32);
  Slot slot;
  slot.bucket = kBucketIdsMax - 1;
  slot.active = true;
  slot.source = MembershipSource::kBackfill;
  slot.rejoin_blocked = true;
  CHECK(slot.bucket == kBucketIdsMax - 1);  // the flags beside it do not touch it
  CHECK(slot.source == MembershipSource::kBackfill);
  CHECK(slot.active);
  CHECK(!slot.member_listed);
}

TEST_CASE("a user's due floor is a lower bound in 2^18 ms units beside its flags") {
  User user;
  CHECK(user.next_due_floor() == kNever);
  CHECK(!user.deleted);
  CHECK(!user.has_events);
  const TimeMs t = 1793491200123;  // not a multiple of 2^18
  user.lower_next_due_floor(t);
  CHECK(user.next_due_floor() <= t);
  CHECK(t - user.next_due_floor() < (TimeMs{1} << kDueFloorShift));
  user.lower_next_due_floor(t + 3'600'000);  // later: no change
  CHECK(user.next_due_floor() <= t);
  user.set_next_due_floor(kNever);
  CHECK(user.next_due_floor() == kNever);
  // Every instant the clock can take stays below the floor that reads as never, so a user
  // with something due there is still walked when the clock gets there.
  user.set_next_due_floor(kInstantMsMax);
  CHECK(user.next_due_floor() != kNever);
  CHECK(user.next_due_floor() <= kInstantMsMax);
  user.set_next_due_floor(-5);  // (due instants are not negative; a floor of 0 still bounds)
  CHECK(user.next_due_floor() == 0);
  // The flags share the floor's word and leave it alone.
  user.set_next_due_floor(t);
  user.deleted = true;
  user.has_events = true;
  CHECK(user.next_due_floor() <= t);
  CHECK(t - user.next_due_floor() < (TimeMs{1} << kDueFloorShift));
  user.set_next_due_floor(kNever);
  CHECK(user.deleted);
  CHECK(user.has_events);
}

TEST_CASE("48-bit instants keep every instant the engine accepts exactly") {
  // The range's ends, the clock's last instant, and values whose high or low half is all
  // ones or zero (the words are stored apart).
  for (const TimeMs t : std::vector<TimeMs>{0, 1, 0xFFFF'FFFF, 0x1'0000'0000, kInstantMsMax,
                                            time48::kMax, time48::kMax - 0xFFFF'FFFF}) {
    CAPTURE(t);
    Time48 time = t;
    CHECK(TimeMs{time} == t);
    OptionalTime48 optional = t;
    REQUIRE(optional.has_value());
    CHECK(*optional == t);
    CHECK(optional.value_or(-1) == t);
    CHECK(OptionalTime(optional) == OptionalTime(t));
    CHECK(std::optional<TimeMs>(optional) == t);
  }
  CHECK(time48::Fits(kInstantMsMax));
  CHECK(!time48::Fits(-1));
  CHECK(!time48::Fits(time48::kMax + 1));  // the pattern that means none
  OptionalTime48 none;
  CHECK(!none.has_value());
  CHECK(none.value_or(-5) == -5);
  CHECK(!OptionalTime(none).has_value());
  OptionalTime48 set = TimeMs{42};
  set.reset();
  CHECK(set == none);
  CHECK(OptionalTime48(std::optional<TimeMs>()) == none);
  Slot slot;
  CHECK(TimeMs{slot.entered_at} == 0);
  CHECK(!slot.dwell_anchor_at);
  CHECK(!slot.last_left_at);
  slot.entered_at = kInstantMsMax;
  slot.dwell_anchor_at = kInstantMsMax - 1;
  CHECK(slot.anchor() == kInstantMsMax - 1);
  slot.dwell_anchor_at.reset();
  CHECK(slot.anchor() == kInstantMsMax);
  // The user's address, in 48 bits too.
  CHECK(static_cast<User*>(slot.user) == nullptr);
  auto value = std::make_unique<int>(17);
  Pointer48<int> pointer = value.get();
  CHECK(static_cast<int*>(pointer) == value.get());
  CHECK(*pointer == 17);
}

}  // namespace
}  // namespace bucketd
