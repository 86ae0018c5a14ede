// Embeds the bucketd engine in a host program: opens an engine on a manual clock in a fresh
// data dir, defines the went-dormant bucket, ingests events, moves the clock, and reads the
// transition stream. It checks the stream it reads, so it doubles as a test of a build or an
// install of bucketd (tools/check-embedding.sh runs it): exit status 0 only if every
// expected transition arrived, in order, and nothing else.
#include <bucketd/engine.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace {

using bucketd::TimeMs;

constexpr TimeMs kHourMs = 60 * 60 * 1000;
constexpr TimeMs kDayMs = 24 * kHourMs;
// 2026-11-01T00:00:00Z: the manual clock starts here.
constexpr TimeMs kStartMs = 1793491200000;

// The same definition as examples/buckets/went-dormant.json: users who opened the app
// before, but not in the last 7 days; a dwell reaction 30 days after joining.
constexpr const char* kWentDormant = R"({
  "id": "went-dormant",
  "name": "Went dormant",
  "kind": "dynamic",
  "criteria": {
    "type": "composite",
    "operator": "and",
    "conditions": [
      {"type": "event", "eventName": "app.opened", "check": "exists"},
      {"type": "event", "eventName": "app.opened", "check": "not_exists", "within": "7d"}
    ]
  },
  "dwell": [{"after": "30d"}]
})";

// A failed call ends the program: this host has no way to carry on without its engine.
void Check(const bucketd::Status& status, const char* what) {
  if (status.ok()) return;
  std::fprintf(stderr, "embed_example: %s: %s\n", what, status.ToString().c_str());
  std::exit(1);
}

// "2026-11-08T00:00:00Z" (whole seconds are enough here).
std::string FormatUtc(TimeMs time_ms) {
  const std::time_t seconds = time_ms / 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// One line per transition: "bucket:entered:went-dormant ada at 2026-11-08T00:00:00Z".
std::string Describe(const bucketd::Transition& t) {
  return t.Name() + " " + t.user_id + " at " + FormatUtc(t.at);
}

// The transitions after `after_seq`, page by page.
std::vector<bucketd::Transition> ReadAll(const bucketd::Engine& engine, uint64_t after_seq) {
  std::vector<bucketd::Transition> all;
  for (;;) {
    std::vector<bucketd::Transition> page;
    Check(engine.ReadTransitions(after_seq, bucketd::kTransitionsPageMax, &page),
          "ReadTransitions");
    if (page.empty()) return all;
    after_seq = page.back().seq;
    all.insert(all.end(), page.begin(), page.end());
  }
}

void Ingest(bucketd::Engine& engine, const std::string& user_id, const std::string& event) {
  bucketd::EventInput input;
  input.user_id = user_id;
  input.event = event;
  bucketd::IngestResult result;
  Check(engine.Ingest(input, &result), "Ingest");
}

void AdvanceTo(bucketd::Engine& engine, TimeMs now_ms) {
  bucketd::SweepResult sweep;
  Check(engine.AdvanceClock(now_ms, &sweep), "AdvanceClock");
}

// Ada opens the app once and goes quiet; she joins a week later, comes back (leaves), and
// goes quiet again. Bob's second visit pushes his join back to a week after it.
std::vector<std::string> RunScenario(bucketd::Engine& engine) {
  bool created = false;
  Check(engine.DefineBucket(kWentDormant, bucketd::DefineMode::kCreate, std::nullopt, &created),
        "DefineBucket");

  Ingest(engine, "ada", "app.opened");
  Ingest(engine, "bob", "app.opened");
  AdvanceTo(engine, kStartMs + 5 * kDayMs);
  Ingest(engine, "bob", "app.opened");
  AdvanceTo(engine, kStartMs + 9 * kDayMs);
  Ingest(engine, "ada", "app.opened");
  AdvanceTo(engine, kStartMs + 60 * kDayMs);

  uint64_t count = 0;
  Check(engine.Count("went-dormant", &count), "Count");
  std::printf("went-dormant has %llu members at %s\n", static_cast<unsigned long long>(count),
              FormatUtc(engine.Now()).c_str());

  std::vector<std::string> seen;
  for (const bucketd::Transition& t : ReadAll(engine, 0)) seen.push_back(Describe(t));
  return seen;
}

}  // namespace

int main() {
  std::string data_dir = (std::filesystem::temp_directory_path() / "bucketd-embed-XXXXXX").string();
  if (mkdtemp(data_dir.data()) == nullptr) {
    std::perror("embed_example: mkdtemp");
    return 1;
  }

  bucketd::Options options;
  options.data_dir = data_dir;
  options.clock = bucketd::ClockMode::kManual;
  options.start_time_ms = kStartMs;
  // A short-lived run: no automatic snapshots (they fork a child to write the file).
  options.snapshot_every_records = 0;
  options.snapshot_every_ms = 0;

  std::unique_ptr<bucketd::Engine> engine;
  Check(bucketd::Engine::Open(options, &engine), "Open");
  const std::vector<std::string> seen = RunScenario(*engine);
  Check(engine->Close(), "Close");
  engine.reset();
  std::error_code error;
  std::filesystem::remove_all(data_dir, error);

  const std::vector<std::string> expected = {
      "bucket:entered:went-dormant ada at 2026-11-08T00:00:00Z",
      "bucket:left:went-dormant ada at 2026-11-10T00:00:00Z",
      "bucket:entered:went-dormant bob at 2026-11-13T00:00:00Z",
      "bucket:entered:went-dormant ada at 2026-11-17T00:00:00Z",
      "bucket:dwell:went-dormant:after-2592000000 bob at 2026-12-13T00:00:00Z",
      "bucket:dwell:went-dormant:after-2592000000 ada at 2026-12-17T00:00:00Z",
  };
  for (const std::string& line : seen) std::printf("%s\n", line.c_str());
  if (seen != expected) {
    std::fprintf(stderr, "embed_example: FAIL: expected these %zu transitions:\n", expected.size());
    for (const std::string& line : expected) std::fprintf(stderr, "  %s\n", line.c_str());
    return 1;
  }
  std::printf("embed_example: OK, %zu transitions as expected\n", seen.size());
  return 0;
}
