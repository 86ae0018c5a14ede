#pragma once
// Runs a program the way an operator would, for the suites that check bucketctl's and
// bucketd's command lines (fault_test, operations_test, torture_test).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

namespace bucketd::testing {

struct CommandRun {
  int exit_code = -1;  // -1 when a signal ended it
  std::string output;  // stdout; add " 2>&1" to the command for stderr too
};

// Runs `command` through the shell and captures its stdout.
inline CommandRun RunCommand(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  CommandRun run;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) run.output.append(buffer, n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// `promtool check metrics` (Debian package prometheus, installed by tools/setup.sh) on an
// exposition: its exit code, and its findings (stdout and stderr) as output. A missing promtool
// fails the calling test rather than skipping it: the check is part of the suite.
inline CommandRun PromtoolCheckMetrics(const std::string& exposition) {
  REQUIRE(RunCommand("command -v promtool").exit_code == 0);  // tools/setup.sh installs it
  std::string path = (std::filesystem::temp_directory_path() / "bucketd-metrics-XXXXXX").string();
  const int fd = mkstemp(path.data());
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << exposition;
  CommandRun run = RunCommand("promtool check metrics < '" + path + "' 2>&1");
  std::filesystem::remove(path);
  return run;
}

}  // namespace bucketd::testing
