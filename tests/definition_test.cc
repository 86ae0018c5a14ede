#include "engine/definition/definition.h"

#include <catch2/catch.hpp>
#include <string>

#include "bucketd/engine.h"

namespace bucketd {
namespace {

constexpr TimeMs kHourMs = 3600000;
constexpr TimeMs kDayMs = 24 * kHourMs;

BucketDefinition ParseOk(const std::string& json) {
  BucketDefinition def;
  const Status status = ParseBucketDefinition(json, &def);
  INFO(json << "\n -> " << status.ToString());
  REQUIRE(status.ok());
  return def;
}

// Expects a refusal naming `field`.
void ExpectRefused(const std::string& json, const std::string& field) {
  BucketDefinition def;
  def.id = "untouched";
  const Status status = ParseBucketDefinition(json, &def);
  INFO(json << "\n -> " << status.ToString());
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK(status.field() == field);
  CHECK_FALSE(status.message().empty());
  CHECK(def.id == "untouched");
}

// A dynamic bucket "b" with the given criteria and extra top-level fields.
std::string Dynamic(const std::string& criteria, const std::string& extra = "") {
  return R"({"id":"b","criteria":)" + criteria + (extra.empty() ? "" : ",") + extra + "}";
}

const std::string kUsed = R"({"type":"event","eventName":"used","check":"exists"})";

void ExpectRoundTrip(const BucketDefinition& def) {
  const std::string canonical = ToCanonicalJson(def);
  INFO(canonical);
  const BucketDefinition again = ParseOk(canonical);
  CHECK(again == def);
  CHECK(ToCanonicalJson(again) == canonical);
}

TEST_CASE("The spec's example parses with defaults filled in", "[definition]") {
  const BucketDefinition def = ParseOk(R"({
    "id": "power-users", "name": "Power users", "description": "Heavy users", "enabled": true,
    "kind": "dynamic",
    "criteria": {"type":"event","eventName":"feature.used","check":"count",
                 "operator":"gte","value":10,"within":"30d"},
    "entryLimit": "once_per_period", "entryPeriod": "7d",
    "minDwell": "1h", "maxDwell": "14d",
    "dwell": [{"after": "30d"}, {"every": "7d"}] })");
  CHECK(def.id == "power-users");
  CHECK(def.name == "Power users");
  CHECK(def.description == "Heavy users");
  CHECK(def.enabled);
  CHECK(def.kind == BucketKind::kDynamic);
  REQUIRE(def.criteria.has_value());
  CHECK(def.criteria->type == CriteriaType::kEvent);
  CHECK(def.criteria->event_name == "feature.used");
  CHECK(def.criteria->check == EventCheck::kCount);
  CHECK(def.criteria->count_op == CountOp::kGte);
  CHECK(def.criteria->count_value == 10);
  CHECK(def.criteria->within_ms == 30 * kDayMs);
  CHECK(def.entry_limit == EntryLimit::kOncePerPeriod);
  CHECK(def.entry_period_ms == 7 * kDayMs);
  CHECK(def.min_dwell_ms == kHourMs);
  CHECK(def.max_dwell_ms == 14 * kDayMs);
  REQUIRE(def.dwell.size() == 2);
  CHECK(def.dwell[0].kind == DwellReaction::Kind::kAfter);
  CHECK(def.dwell[0].Label() == "after-2592000000");
  CHECK(def.dwell[1].Label() == "every-604800000");
  CHECK(def.reconcile_joins);
  CHECK(IsTimeBased(*def.criteria));
  CHECK(ToCanonicalJson(def) ==
        R"({"id":"power-users","name":"Power users","description":"Heavy users",)"
        R"("kind":"dynamic","enabled":true,"criteria":{"type":"event","eventName":"feature.used",)"
        R"("check":"count","operator":"gte","value":10,"within":2592000000},)"
        R"("entryLimit":"once_per_period","entryPeriod":604800000,"minDwell":3600000,)"
        R"("maxDwell":1209600000,"dwell":[{"after":2592000000},{"every":604800000}],)"
        R"("reconcileJoins":true})");
  ExpectRoundTrip(def);
}

TEST_CASE("A minimal definition gets every default", "[definition]") {
  const BucketDefinition def = ParseOk(Dynamic(kUsed));
  CHECK(def.id == "b");
  CHECK(def.name == "b");
  CHECK(def.description.empty());
  CHECK(def.enabled);
  CHECK(def.kind == BucketKind::kDynamic);
  CHECK(def.entry_limit == EntryLimit::kUnlimited);
  CHECK_FALSE(def.entry_period_ms.has_value());
  CHECK_FALSE(def.min_dwell_ms.has_value());
  CHECK_FALSE(def.max_dwell_ms.has_value());
  CHECK(def.dwell.empty());
  CHECK(def.reconcile_joins);
  CHECK_FALSE(IsTimeBased(*def.criteria));
  CHECK(ToCanonicalJson(def) ==
        R"({"id":"b","name":"b","kind":"dynamic","enabled":true,)"
        R"("criteria":{"type":"event","eventName":"used","check":"exists"},)"
        R"("entryLimit":"unlimited","reconcileJoins":true})");
}

TEST_CASE("Manual buckets have no criteria", "[definition]") {
  const BucketDefinition def =
      ParseOk(R"({"id":"vip","kind":"manual","maxDwell":{"hours":2},"dwell":[{"after":1000}]})");
  CHECK(def.kind == BucketKind::kManual);
  CHECK_FALSE(def.criteria.has_value());
  CHECK(def.max_dwell_ms == 2 * kHourMs);
  CHECK(CriteriaFingerprint(def).empty());
  ExpectRoundTrip(def);
  ExpectRefused(R"({"id":"vip","kind":"manual","criteria":)" + kUsed + "}", "criteria");
  // null means "not set".
  CHECK_FALSE(ParseOk(R"({"id":"vip","kind":"manual","criteria":null})").criteria.has_value());
}

TEST_CASE("Malformed or non-object JSON is refused at the root", "[definition]") {
  for (const char* json : {"", "{", "nope", R"({"id":"b",})", "[]", "42", "\"b\"", "null"}) {
    ExpectRefused(json, "");
  }
}

TEST_CASE("Bad ids are refused", "[definition]") {
  ExpectRefused(R"({"criteria":)" + kUsed + "}", "id");
  ExpectRefused(R"({"id":"","criteria":)" + kUsed + "}", "id");
  ExpectRefused(R"({"id":null,"criteria":)" + kUsed + "}", "id");
  ExpectRefused(R"({"id":7,"criteria":)" + kUsed + "}", "id");
  for (const char* id : {"a b", "a/b", "a:b", "é", "a\\u0000"}) {
    ExpectRefused(R"({"id":")" + std::string(id) + R"(","criteria":)" + kUsed + "}", "id");
  }
  const std::string longest(kBucketIdCharsMax, 'x');
  CHECK(ParseOk(R"({"id":")" + longest + R"(","criteria":)" + kUsed + "}").id == longest);
  ExpectRefused(R"({"id":")" + longest + R"(x","criteria":)" + kUsed + "}", "id");
  CHECK(ParseOk(R"({"id":"A-z_0.9","criteria":)" + kUsed + "}").id == "A-z_0.9");
}

TEST_CASE("The path segments . and .. are refused as ids; other dotted ids are not",
          "[definition]") {
  // Clients and proxies collapse them in /v1/buckets/{id}: such a bucket could not be reached.
  // New definitions only: one already in a log still parses, so its data dir opens.
  for (const char* id : {".", ".."}) {
    CHECK(CheckNewBucketId(id).field() == "id");
    CHECK(ParseOk(R"({"id":")" + std::string(id) + R"(","criteria":)" + kUsed + "}").id == id);
  }
  for (const char* id : {"...", ".a", "a.", "a..b", ".hidden"}) {
    CHECK(CheckNewBucketId(id).ok());
    CHECK(ParseOk(R"({"id":")" + std::string(id) + R"(","criteria":)" + kUsed + "}").id == id);
  }
}

TEST_CASE("Bad names and descriptions are refused", "[definition]") {
  ExpectRefused(Dynamic(kUsed, R"("name":"")"), "name");
  ExpectRefused(Dynamic(kUsed, R"("name":5)"), "name");
  ExpectRefused(Dynamic(kUsed, R"("name":")" + std::string(201, 'n') + "\""), "name");
  CHECK(ParseOk(Dynamic(kUsed, R"("name":")" + std::string(200, 'n') + "\"")).name.size() == 200);
  CHECK(ParseOk(Dynamic(kUsed, R"("name":null)")).name == "b");
  ExpectRefused(Dynamic(kUsed, R"("description":false)"), "description");
  ExpectRefused(Dynamic(kUsed, R"("description":")" + std::string(4097, 'd') + "\""),
                "description");
  CHECK(ParseOk(Dynamic(kUsed, R"("description":"")")).description.empty());
}

TEST_CASE("enabled, kind, entryLimit and reconcileJoins are typed", "[definition]") {
  CHECK_FALSE(ParseOk(Dynamic(kUsed, R"("enabled":false)")).enabled);
  ExpectRefused(Dynamic(kUsed, R"("enabled":"yes")"), "enabled");
  ExpectRefused(Dynamic(kUsed, R"("enabled":1)"), "enabled");
  ExpectRefused(Dynamic(kUsed, R"("kind":"static")"), "kind");
  ExpectRefused(Dynamic(kUsed, R"("kind":"Dynamic")"), "kind");
  CHECK(ParseOk(Dynamic(kUsed, R"("entryLimit":"once")")).entry_limit == EntryLimit::kOnce);
  CHECK(ParseOk(Dynamic(kUsed, R"("entryLimit":"unlimited")")).entry_limit ==
        EntryLimit::kUnlimited);
  CHECK(ParseOk(Dynamic(kUsed, R"("entryLimit":"once_per_period")")).entry_limit ==
        EntryLimit::kOncePerPeriod);
  ExpectRefused(Dynamic(kUsed, R"("entryLimit":"twice")"), "entryLimit");
  CHECK_FALSE(ParseOk(Dynamic(kUsed, R"("reconcileJoins":false)")).reconcile_joins);
  ExpectRefused(Dynamic(kUsed, R"("reconcileJoins":"no")"), "reconcileJoins");
}

TEST_CASE("Dynamic buckets need criteria", "[definition]") {
  ExpectRefused(R"({"id":"b"})", "criteria");
  ExpectRefused(R"({"id":"b","kind":"dynamic","criteria":null})", "criteria");
  ExpectRefused(Dynamic("[]"), "criteria");
  ExpectRefused(Dynamic("\"x\""), "criteria");
}

TEST_CASE("Unknown fields are refused wherever they appear", "[definition]") {
  ExpectRefused(Dynamic(kUsed, R"("crtieria":1)"), "crtieria");
  ExpectRefused(Dynamic(kUsed, R"("maxdwell":"1h")"), "maxdwell");
  ExpectRefused(Dynamic(R"({"type":"event","eventNmae":"x","check":"exists"})"),
                "criteria.eventNmae");
  ExpectRefused(Dynamic(R"({"type":"composite","operator":"and","conditions":[)"
                        R"({"type":"event","eventNmae":"used","check":"exists"}]})"),
                "criteria.conditions[0].eventNmae");
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","operator":"eq","value":1,"x":2})"),
                "criteria.x");
  // A field of another criteria type is unknown for this one.
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","operator":"eq","value":1,)"
                        R"("within":"1h"})"),
                "criteria.within");
  ExpectRefused(Dynamic(R"({"type":"composite","operator":"and","conditions":[)" + kUsed +
                        R"(],"eventName":"x"})"),
                "criteria.eventName");
  ExpectRefused(Dynamic(kUsed, R"("dwell":[{"after":"1h","label":"x"}])"), "dwell[0].label");
  ExpectRefused(Dynamic(kUsed, R"("maxDwell":{"hours":1,"hour":2})"), "maxDwell.hour");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"x","check":"exists",)"
                        R"("within":{"weeks":1}})"),
                "criteria.within.weeks");
}

TEST_CASE("Duplicate keys are refused", "[definition]") {
  ExpectRefused(Dynamic(kUsed, R"("name":"a","name":"b")"), "name");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"a","eventName":"b","check":"exists"})"),
                "criteria.eventName");
}

TEST_CASE("Property criteria", "[definition]") {
  const BucketDefinition eq =
      ParseOk(Dynamic(R"({"type":"property","property":"plan","operator":"eq","value":"pro"})"));
  CHECK(eq.criteria->type == CriteriaType::kProperty);
  CHECK(eq.criteria->property == "plan");
  CHECK(eq.criteria->property_op == PropertyOp::kEq);
  CHECK(eq.criteria->value == PropertyValue::String("pro"));

  struct Case {
    const char* op;
    PropertyOp expected;
  };
  for (const Case c :
       {Case{"neq", PropertyOp::kNeq}, Case{"gt", PropertyOp::kGt}, Case{"gte", PropertyOp::kGte},
        Case{"lt", PropertyOp::kLt}, Case{"lte", PropertyOp::kLte}}) {
    // neq alone is all-negative; pair it with a positive leg.
    const std::string leaf =
        std::string(R"({"type":"property","property":"n","operator":")") + c.op + R"(","value":3})";
    const BucketDefinition def = ParseOk(Dynamic(
        R"({"type":"composite","operator":"and","conditions":[)" + leaf + "," + kUsed + "]}"));
    CHECK(def.criteria->conditions[0].property_op == c.expected);
    CHECK(def.criteria->conditions[0].value == PropertyValue::Number(3));
  }
  CHECK(ParseOk(Dynamic(R"({"type":"property","property":"e","operator":"contains",)"
                        R"("value":"@acme"})"))
            .criteria->property_op == PropertyOp::kContains);
  const BucketDefinition exists =
      ParseOk(Dynamic(R"({"type":"property","property":"e","operator":"exists"})"));
  CHECK(exists.criteria->property_op == PropertyOp::kExists);
  // A value sent with exists is dropped.
  CHECK(ParseOk(Dynamic(R"({"type":"property","property":"e","operator":"exists","value":""})")) ==
        exists);
}

TEST_CASE("Property values keep their JSON type", "[definition]") {
  auto value_of = [](const std::string& json) {
    return ParseOk(Dynamic(R"({"type":"property","property":"p","operator":"eq","value":)" + json +
                           "}"))
        .criteria->value;
  };
  CHECK(value_of("null") == PropertyValue::Null());
  CHECK(value_of("true") == PropertyValue::Bool(true));
  CHECK(value_of("false") == PropertyValue::Bool(false));
  CHECK(value_of("10") == PropertyValue::Number(10));
  CHECK(value_of("-2.5") == PropertyValue::Number(-2.5));
  CHECK(value_of("18446744073709551615") == PropertyValue::Number(18446744073709551615.0));
  CHECK(value_of("\"10\"") == PropertyValue::String("10"));
  const PropertyValue array = value_of(R"([1, "a" ,{"b" : null}])");
  CHECK(array.type == PropertyValue::Type::kArray);
  CHECK(array.text == R"([1,"a",{"b":null}])");
  const PropertyValue object = value_of(R"({ "k" : [true] })");
  CHECK(object.type == PropertyValue::Type::kObject);
  CHECK(object.text == R"({"k":[true]})");
}

TEST_CASE("Bad property criteria are refused", "[definition]") {
  ExpectRefused(Dynamic(R"({"type":"property","operator":"eq","value":1})"), "criteria.property");
  ExpectRefused(Dynamic(R"({"type":"property","property":"","operator":"eq","value":1})"),
                "criteria.property");
  ExpectRefused(Dynamic(R"({"type":"property","property":")" + std::string(201, 'p') +
                        R"(","operator":"eq","value":1})"),
                "criteria.property");
  ExpectRefused(Dynamic(R"({"type":"property","property":3,"operator":"eq","value":1})"),
                "criteria.property");
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","value":1})"), "criteria.operator");
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","operator":"like","value":1})"),
                "criteria.operator");
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","operator":"eq"})"), "criteria.value");
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","operator":"gt","value":"3"})"),
                "criteria.value");
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","operator":"lte","value":null})"),
                "criteria.value");
  ExpectRefused(Dynamic(R"({"type":"property","property":"p","operator":"contains","value":3})"),
                "criteria.value");
}

TEST_CASE("Event criteria", "[definition]") {
  const BucketDefinition exists = ParseOk(Dynamic(kUsed));
  CHECK(exists.criteria->type == CriteriaType::kEvent);
  CHECK(exists.criteria->check == EventCheck::kExists);
  CHECK_FALSE(exists.criteria->within_ms.has_value());

  const BucketDefinition absent = ParseOk(
      Dynamic(R"({"type":"event","eventName":"login","check":"not_exists","within":{"days":7}})"));
  CHECK(absent.criteria->check == EventCheck::kNotExists);
  CHECK(absent.criteria->within_ms == 7 * kDayMs);
  CHECK(IsTimeBased(*absent.criteria));

  // count without operator and value means "> 0".
  const BucketDefinition count =
      ParseOk(Dynamic(R"({"type":"event","eventName":"used","check":"count"})"));
  CHECK(count.criteria->check == EventCheck::kCount);
  CHECK(count.criteria->count_op == CountOp::kGt);
  CHECK(count.criteria->count_value == 0);
  CHECK(count ==
        ParseOk(Dynamic(R"({"type":"event","eventName":"used","check":"count","operator":"gt",)"
                        R"("value":0})")));
  CHECK(CriteriaFingerprint(count) ==
        R"({"type":"event","eventName":"used","check":"count","operator":"gt","value":0})");

  struct Case {
    const char* op;
    CountOp expected;
  };
  for (const Case c :
       {Case{"gt", CountOp::kGt}, Case{"gte", CountOp::kGte}, Case{"lt", CountOp::kLt},
        Case{"lte", CountOp::kLte}, Case{"eq", CountOp::kEq}}) {
    const BucketDefinition def = ParseOk(
        Dynamic(std::string(R"({"type":"event","eventName":"used","check":"count","operator":")") +
                c.op + R"(","value":3})"));
    CHECK(def.criteria->count_op == c.expected);
    CHECK(def.criteria->count_value == 3);
  }
  CHECK(ParseOk(Dynamic(R"({"type":"event","eventName":"used","check":"count","operator":"eq",)"
                        R"("value":0})"))
            .criteria->count_value == 0);
  CHECK(ParseOk(Dynamic(R"({"type":"event","eventName":"used","check":"count","operator":"eq",)"
                        R"("value":5.0})"))
            .criteria->count_value == 5);
  const std::string longest(kEventNameBytesMax, 'e');
  CHECK(ParseOk(Dynamic(R"({"type":"event","eventName":")" + longest + R"(","check":"exists"})"))
            .criteria->event_name == longest);
  CHECK(ParseOk(Dynamic(R"({"type":"event","eventName":"Bucket:x","check":"exists"})"))
            .criteria->event_name == "Bucket:x");
}

TEST_CASE("Bad event criteria are refused", "[definition]") {
  ExpectRefused(Dynamic(R"({"type":"event","check":"exists"})"), "criteria.eventName");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"","check":"exists"})"),
                "criteria.eventName");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":")" + std::string(201, 'e') +
                        R"(","check":"exists"})"),
                "criteria.eventName");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"bucket:entered:x","check":"exists"})"),
                "criteria.eventName");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used"})"), "criteria.check");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used","check":"some"})"), "criteria.check");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used","check":"exists","operator":"gt"})"),
                "criteria.operator");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used","check":"not_exists",)"
                        R"("within":"1d","value":1})"),
                "criteria.value");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used","check":"count","operator":"gt"})"),
                "criteria.value");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used","check":"count","value":2})"),
                "criteria.operator");
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used","check":"count","operator":"neq",)"
                        R"("value":2})"),
                "criteria.operator");
  for (const char* value : {"-1", "1.5", "\"3\"", "true", "1e30", "[1]"}) {
    ExpectRefused(Dynamic(std::string(R"({"type":"event","eventName":"used","check":"count",)") +
                          R"("operator":"gte","value":)" + value + "}"),
                  "criteria.value");
  }
  ExpectRefused(Dynamic(R"({"type":"event","eventName":"used","check":"count","within":0})"),
                "criteria.within");
}

TEST_CASE("Criteria types", "[definition]") {
  ExpectRefused(Dynamic(R"({"eventName":"used","check":"exists"})"), "criteria.type");
  ExpectRefused(Dynamic(R"({"type":"events","eventName":"used","check":"exists"})"),
                "criteria.type");
  ExpectRefused(Dynamic(R"({"type":null,"eventName":"used","check":"exists"})"), "criteria.type");
}

TEST_CASE("Composite criteria", "[definition]") {
  const BucketDefinition def = ParseOk(
      Dynamic(R"({"type":"composite","operator":"or","conditions":[)" + kUsed +
              R"(,{"type":"composite","operator":"and","conditions":[)"
              R"({"type":"property","property":"plan","operator":"eq","value":"pro"},)"
              R"({"type":"event","eventName":"x","check":"count","operator":"gte","value":2,)"
              R"("within":"1h"}]}]})"));
  const Criteria& root = *def.criteria;
  CHECK(root.type == CriteriaType::kComposite);
  CHECK_FALSE(root.is_and);
  REQUIRE(root.conditions.size() == 2);
  CHECK(root.conditions[1].is_and);
  CHECK(root.conditions[1].conditions[1].within_ms == kHourMs);
  CHECK(IsTimeBased(root));
  ExpectRoundTrip(def);

  ExpectRefused(Dynamic(R"({"type":"composite","operator":"and","conditions":[]})"),
                "criteria.conditions");
  ExpectRefused(Dynamic(R"({"type":"composite","operator":"and"})"), "criteria.conditions");
  ExpectRefused(Dynamic(R"({"type":"composite","operator":"and","conditions":{}})"),
                "criteria.conditions");
  ExpectRefused(Dynamic(R"({"type":"composite","operator":"xor","conditions":[)" + kUsed + "]}"),
                "criteria.operator");
  ExpectRefused(Dynamic(R"({"type":"composite","conditions":[)" + kUsed + "]}"),
                "criteria.operator");
  ExpectRefused(
      Dynamic(R"({"type":"composite","operator":"and","conditions":[)" + kUsed + R"(,1]})"),
      "criteria.conditions[1]");
  ExpectRefused(Dynamic(R"({"type":"composite","operator":"and","conditions":[)" + kUsed +
                        R"(,{"type":"composite","operator":"or","conditions":[)" + kUsed +
                        R"(,{"type":"property","property":"p","operator":"eq"}]}]})"),
                "criteria.conditions[1].conditions[1].value");
}

// Wraps `leaf` in composites until the tree has `depth` levels.
std::string Nested(size_t depth, const std::string& leaf) {
  std::string json = leaf;
  for (size_t level = 1; level < depth; ++level) {
    json = R"({"type":"composite","operator":"and","conditions":[)" + json + "]}";
  }
  return json;
}

TEST_CASE("Criteria depth is bounded", "[definition]") {
  const BucketDefinition deepest = ParseOk(Dynamic(Nested(kCriteriaDepthMax, kUsed)));
  ExpectRoundTrip(deepest);
  std::string field = "criteria";
  for (size_t level = 1; level < kCriteriaDepthMax + 1; ++level) field += ".conditions[0]";
  ExpectRefused(Dynamic(Nested(kCriteriaDepthMax + 1, kUsed)), field);
  // Far deeper input is refused at the same place, without deep recursion.
  ExpectRefused(Dynamic(Nested(500, kUsed)), field);
}

TEST_CASE("Criteria leaves are bounded", "[definition]") {
  auto with_leaves = [](size_t count) {
    std::string json = R"({"type":"composite","operator":"or","conditions":[)";
    for (size_t i = 0; i < count; ++i) json += (i == 0 ? "" : ",") + kUsed;
    return Dynamic(json + "]}");
  };
  CHECK(ParseOk(with_leaves(kCriteriaLeavesMax)).criteria->conditions.size() == kCriteriaLeavesMax);
  ExpectRefused(with_leaves(kCriteriaLeavesMax + 1), "criteria");
  ExpectRefused(with_leaves(10000), "criteria");
}

TEST_CASE("Criteria made only of negative leaves are refused", "[definition]") {
  const std::string neq = R"({"type":"property","property":"p","operator":"neq","value":1})";
  const std::string not_exists = R"({"type":"property","property":"p","operator":"not_exists"})";
  const std::string never = R"({"type":"event","eventName":"e","check":"not_exists"})";
  const std::string lapsed =
      R"({"type":"event","eventName":"e","check":"not_exists","within":"7d"})";
  ExpectRefused(Dynamic(neq), "criteria");
  ExpectRefused(Dynamic(not_exists), "criteria");
  ExpectRefused(Dynamic(never), "criteria");
  ExpectRefused(
      Dynamic(R"({"type":"composite","operator":"or","conditions":[)" + neq + "," + never +
              R"(,{"type":"composite","operator":"and","conditions":[)" + not_exists + "]}]}"),
      "criteria");
  // A windowed absence is positive: the clock brings users in.
  CHECK(ParseOk(Dynamic(lapsed)).criteria->check == EventCheck::kNotExists);
  ParseOk(
      Dynamic(R"({"type":"composite","operator":"and","conditions":[)" + neq + "," + kUsed + "]}"));
}

TEST_CASE("Durations accept every form", "[definition]") {
  auto max_dwell = [](const std::string& duration) {
    return *ParseOk(Dynamic(kUsed, R"("maxDwell":)" + duration)).max_dwell_ms;
  };
  CHECK(max_dwell("1") == 1);
  CHECK(max_dwell("86400000") == kDayMs);
  CHECK(max_dwell("1e3") == 1000);
  CHECK(max_dwell("\"30d\"") == 30 * kDayMs);
  CHECK(max_dwell("\"1d12h\"") == 36 * kHourMs);
  CHECK(max_dwell("\"500ms\"") == 500);
  CHECK(max_dwell(R"({"hours":1})") == kHourMs);
  CHECK(max_dwell(R"({"minutes":90})") == 90 * 60000);
  CHECK(max_dwell(R"({"seconds":5})") == 5000);
  CHECK(max_dwell(R"({"hours":1,"minutes":30,"seconds":15})") == kHourMs + 30 * 60000 + 15000);
  CHECK(max_dwell(R"({"days":2,"milliseconds":1})") == 2 * kDayMs + 1);
  CHECK(max_dwell(R"({"hours":1.5})") == 90 * 60000);
  CHECK(max_dwell(R"({"hours":0,"seconds":1})") == 1000);
  CHECK(max_dwell(R"({"seconds":1,"minutes":null})") == 1000);
  // Every duration field takes the same forms.
  const BucketDefinition def =
      ParseOk(Dynamic(R"({"type":"event","eventName":"e","check":"exists","within":{"hours":1}})",
                      R"("entryLimit":"once_per_period","entryPeriod":{"minutes":1},)"
                      R"("minDwell":60000,"dwell":[{"after":{"seconds":1}},{"every":"2h"}])"));
  CHECK(def.criteria->within_ms == kHourMs);
  CHECK(def.entry_period_ms == 60000);
  CHECK(def.min_dwell_ms == 60000);
  CHECK(def.dwell[0].duration_ms == 1000);
  CHECK(def.dwell[1].duration_ms == 2 * kHourMs);
}

TEST_CASE("Bad durations are refused with their field", "[definition]") {
  for (const char* duration :
       {"0", "-5", "1.5", "true", "[1]", "\"\"", "\"0s\"", "\"1.5h\"", "\"10\"", "\"1y\"", R"({})",
        R"({"hours":0})", R"({"seconds":0.0001})", "18446744073709551615", "1e300", "\"200000w\"",
        R"({"days":1e9})"}) {
    ExpectRefused(Dynamic(kUsed, std::string(R"("minDwell":)") + duration), "minDwell");
  }
  ExpectRefused(Dynamic(kUsed, R"("minDwell":{"hours":-1})"), "minDwell.hours");
  ExpectRefused(Dynamic(kUsed, R"("minDwell":{"hours":"1"})"), "minDwell.hours");
  ExpectRefused(Dynamic(kUsed, R"("entryLimit":"once_per_period","entryPeriod":0)"), "entryPeriod");
  ExpectRefused(Dynamic(kUsed, R"("maxDwell":"0ms")"), "maxDwell");
  ExpectRefused(Dynamic(kUsed, R"("dwell":[{"after":"1h"},{"every":-1}])"), "dwell[1].every");
  ExpectRefused(Dynamic(kUsed, R"("reconcileEvery":"soon")"), "reconcileEvery");
}

TEST_CASE("maxDwell may not be shorter than minDwell", "[definition]") {
  ExpectRefused(Dynamic(kUsed, R"("minDwell":"2h","maxDwell":"1h")"), "maxDwell");
  const BucketDefinition equal = ParseOk(Dynamic(kUsed, R"("minDwell":"1h","maxDwell":3600000)"));
  CHECK(equal.min_dwell_ms == equal.max_dwell_ms);
}

TEST_CASE("entryPeriod is optional and only read by once_per_period", "[definition]") {
  // SPEC §3 lists every refusal; a period beside another limit is kept but unused.
  CHECK(ParseOk(Dynamic(kUsed, R"("entryLimit":"once","entryPeriod":"7d")")).entry_period_ms ==
        604800000);
  CHECK_FALSE(
      ParseOk(Dynamic(kUsed, R"("entryLimit":"once_per_period")")).entry_period_ms.has_value());
}

TEST_CASE("Bad dwell entries are refused", "[definition]") {
  ExpectRefused(Dynamic(kUsed, R"("dwell":{"after":"1h"})"), "dwell");
  ExpectRefused(Dynamic(kUsed, R"("dwell":["1h"])"), "dwell[0]");
  ExpectRefused(Dynamic(kUsed, R"("dwell":[{"after":"1h"},{}])"), "dwell[1]");
  ExpectRefused(Dynamic(kUsed, R"("dwell":[{"after":"1h","every":"1h"}])"), "dwell[0]");
  ExpectRefused(Dynamic(kUsed, R"("dwell":[{"after":"1h"},{"every":"1h"},{"after":3600000}])"),
                "dwell[2]");
  std::string many = R"("dwell":[)";
  for (int i = 1; i <= 33; ++i)
    many += std::string(i == 1 ? "" : ",") + R"({"after":)" + std::to_string(i) + "}";
  ExpectRefused(Dynamic(kUsed, many + "]"), "dwell");
  // after and every of the same length have different labels.
  CHECK(ParseOk(Dynamic(kUsed, R"("dwell":[{"after":"1h"},{"every":"1h"}])")).dwell.size() == 2);
  CHECK(ParseOk(Dynamic(kUsed, R"("dwell":[])")).dwell.empty());
}

TEST_CASE("Compatibility fields are accepted and ignored", "[definition]") {
  const BucketDefinition plain = ParseOk(Dynamic(kUsed));
  CHECK(ParseOk(Dynamic(kUsed, R"("timeBased":true,"reconcileEvery":"5m","fastExpiry":false)")) ==
        plain);
  CHECK(ParseOk(Dynamic(kUsed, R"("reconcileEvery":{"minutes":5})")) == plain);
  CHECK(ParseOk(Dynamic(kUsed, R"("timeBased":null)")) == plain);
  ExpectRefused(Dynamic(kUsed, R"("timeBased":"yes")"), "timeBased");
  ExpectRefused(Dynamic(kUsed, R"("fastExpiry":1)"), "fastExpiry");
}

TEST_CASE("Criteria fingerprints compare normalized criteria", "[definition]") {
  const BucketDefinition a = ParseOk(Dynamic(
      R"({"type":"event","eventName":"used","check":"count","within":"1d"})", R"("name":"A")"));
  const BucketDefinition b =
      ParseOk(Dynamic(R"({"within":{"hours":24},"operator":"gt","check":"count","value":0,)"
                      R"("eventName":"used","type":"event"})",
                      R"("name":"B","maxDwell":"2d")"));
  CHECK(CriteriaFingerprint(a) == CriteriaFingerprint(b));
  CHECK(ToCanonicalJson(a) != ToCanonicalJson(b));
  const BucketDefinition c = ParseOk(Dynamic(
      R"({"type":"event","eventName":"used","check":"count","within":"2d"})", R"("name":"A")"));
  CHECK(CriteriaFingerprint(a) != CriteriaFingerprint(c));
}

TEST_CASE("Canonical JSON round-trips", "[definition]") {
  const char* definitions[] = {
      R"({"id":"m","kind":"manual"})",
      R"({"id":"m","kind":"manual","enabled":false,"entryLimit":"once","minDwell":1,)"
      R"("maxDwell":2,"reconcileJoins":false})",
      R"({"id":"x","name":"Quote \" and \\ and \n and \u0001 and é","description":"d\td",)"
      R"("criteria":{"type":"property","property":"na\"me","operator":"eq","value":"v\u0000"}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"gte","value":0.1}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"lt","value":-1e300}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"gt",)"
      R"("value":123456789012345678}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"eq","value":null}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"eq","value":false}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"eq",)"
      R"("value":[1.5,"a",{"b":[null,true,-0.25]},10]}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"eq",)"
      R"("value":{"z":1,"a":{}}}})",
      R"({"id":"x","criteria":{"type":"property","property":"n","operator":"exists"},)"
      R"("kind":"dynamic","enabled":true,"entryLimit":"unlimited","reconcileJoins":true,)"
      R"("name":"x"})",
      R"({"id":"x","criteria":{"type":"event","eventName":"e","check":"not_exists",)"
      R"("within":"7d"},"reconcileJoins":false,"entryLimit":"once_per_period"})",
      R"({"id":"x","criteria":{"type":"event","eventName":"e","check":"count","operator":"lte",)"
      R"("value":3,"within":{"seconds":30}},"minDwell":"1h","maxDwell":"1h",)"
      R"("dwell":[{"every":"1d"},{"after":"12h"},{"after":"1w"}]})",
      R"({"id":"x","criteria":{"type":"composite","operator":"and","conditions":[)"
      R"({"type":"property","property":"plan","operator":"neq","value":"free"},)"
      R"({"type":"composite","operator":"or","conditions":[)"
      R"({"type":"event","eventName":"a","check":"exists","within":1},)"
      R"({"type":"property","property":"e","operator":"contains","value":"@"}]}]}})",
  };
  for (const char* json : definitions) {
    ExpectRoundTrip(ParseOk(json));
  }
  // A definition with the spec's example shape, and one exercising every default.
  BucketDefinition built;
  built.id = "built";
  built.name = "Built";
  built.kind = BucketKind::kManual;
  built.entry_limit = EntryLimit::kOncePerPeriod;
  built.entry_period_ms = 5;
  built.dwell = {{DwellReaction::Kind::kEvery, 7}};
  ExpectRoundTrip(built);
}

TEST_CASE("Status names codes and joins field paths", "[status]") {
  CHECK(Status::Ok().ToString() == "ok");
  CHECK(Status::NotFound("no bucket x").code_name() == "not_found");
  CHECK(Status::AlreadyExists("x").code_name() == "already_exists");
  CHECK(Status::FailedPrecondition("", "x").code_name() == "failed_precondition");
  CHECK(Status::IoError("x").code_name() == "io_error");
  CHECK(Status::Corruption("x").code_name() == "corruption");
  const Status value = Status::InvalidArgument("conditions[1].value", "must be >= 0");
  CHECK(value.ToString() == "invalid_argument: conditions[1].value: must be >= 0");
  CHECK(value.WithFieldPrefix("criteria").field() == "criteria.conditions[1].value");
  CHECK(Status::InvalidArgument("[2]", "x").WithFieldPrefix("dwell").field() == "dwell[2]");
  CHECK(Status::InvalidArgument("", "x").WithFieldPrefix("maxDwell").field() == "maxDwell");
  CHECK(value.WithFieldPrefix("").field() == "conditions[1].value");
  CHECK(Status::NotFound("gone").ToString() == "not_found: gone");
  CHECK(Status::Ok().WithFieldPrefix("x").ok());
}

TEST_CASE("Transitions are named and keyed as SPEC section 7 says", "[types]") {
  Transition transition;
  transition.bucket_id = "power-users";
  transition.user_id = "u1";
  transition.entry_count = 2;
  CHECK(transition.Name() == "bucket:entered:power-users");
  CHECK(transition.IdempotencyKey() == "bucket:power-users:u1:entered:2");
  transition.kind = TransitionKind::kLeft;
  CHECK(transition.Name() == "bucket:left:power-users");
  CHECK(transition.IdempotencyKey() == "bucket:power-users:u1:left:2");
  transition.kind = TransitionKind::kDwell;
  transition.dwell_label = DwellReaction{DwellReaction::Kind::kEvery, 604800000}.Label();
  transition.dwell_count = 3;
  CHECK(transition.Name() == "bucket:dwell:power-users:every-604800000");
  CHECK(transition.IdempotencyKey() == "bucket:power-users:u1:dwell:every-604800000:2:3");
  CHECK(ToString(MembershipSource::kEvent) == "event");
  CHECK(ToString(MembershipSource::kManual) == "manual");
  CHECK(ToString(MembershipSource::kReconcile) == "reconcile");
  CHECK(ToString(MembershipSource::kBackfill) == "backfill");
  CHECK(ToString(LeaveReason::kCriteria) == "criteria");
  CHECK(ToString(LeaveReason::kMaxDwell) == "maxDwell");
  CHECK(ToString(LeaveReason::kManual) == "manual");
  CHECK(ToString(TransitionKind::kDwell) == "dwell");
}

}  // namespace
}  // namespace bucketd
