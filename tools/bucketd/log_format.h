#pragma once
// How bucketd's log lines look. Both formats write to stderr (stdout carries nothing), with
// UTC RFC 3339 timestamps to the millisecond and a `Z`: lines from hosts in different zones,
// or from before and after a DST change, sort and compare as text.
namespace bucketd::server {

enum class LogFormat {
  kText,  // 2026-01-01T00:00:00.000Z level=info event=listening address=...
  kJson,  // {"ts":"2026-01-01T00:00:00.000Z","level":"info","msg":"event=listening ..."}
};

// Replaces spdlog's default logger with one that writes `format` to stderr. Call once, before
// any thread logs.
void SetUpLogging(LogFormat format);

}  // namespace bucketd::server
