// The operator's view of the real binaries (issue 19): what `--version` prints, what /metrics
// says about the build, how the server takes signals and probes, and the shape of its logs.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>

#include <httplib.h>
#include <catch2/catch.hpp>

#include "tests/sidecar_test_support.h"

namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "bucketd-operations-test-XXXXXX").string();
    path = mkdtemp(templ.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

struct Run {
  int exit_code = -1;
  std::string out;  // stdout only: a version string goes there, diagnostics do not
};

// Runs `command` through the shell and captures its stdout.
Run Shell(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  Run run;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) run.out.append(buffer, n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

std::string BucketctlBinary() {
  const char* bin = std::getenv("BUCKETCTL_BIN");
  REQUIRE(bin != nullptr);  // CTest sets it
  return bin;
}

}  // namespace

TEST_CASE("--version: bucketd and bucketctl print the same version and commit, exit 0",
          "[operations]") {
  const Run server = Shell(bucketd::testing::SidecarBinary() + " --version");
  CHECK(server.exit_code == 0);
  INFO(server.out);
  CHECK(std::regex_match(server.out, std::regex(R"(bucketd \d+\.\d+\.\d+ \([^()\s]+\)\n)")));
  const Run ctl = Shell(BucketctlBinary() + " --version");
  CHECK(ctl.exit_code == 0);
  CHECK(ctl.out == server.out);
}

TEST_CASE("/metrics: bucketd_build_info names the version and commit --version prints",
          "[operations]") {
  const Run version = Shell(bucketd::testing::SidecarBinary() + " --version");
  std::smatch printed;
  REQUIRE(std::regex_match(version.out, printed, std::regex(R"(bucketd (\S+) \((\S+)\)\n)")));
  TempDir dir;
  bucketd::testing::Sidecar server(dir.path);
  httplib::Client c = server.Client();
  auto res = c.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const std::string gauge = "bucketd_build_info{version=\"" + printed[1].str() + "\",commit=\"" +
                            printed[2].str() + "\"} 1\n";
  INFO(res->body);
  CHECK(res->body.find("# TYPE bucketd_build_info gauge\n" + gauge) != std::string::npos);
}

TEST_CASE("bucketctl: BUCKETD_DATA stands for --data; help shows the defaults", "[operations]") {
  TempDir dir;
  {
    bucketd::testing::Sidecar server(dir.path);
    httplib::Client c = server.Client();
    auto res = c.Put("/v1/buckets/vip", R"({"name":"VIP","kind":"manual"})", "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 201);
    REQUIRE(server.Stop() == 0);
  }
  // The variable alone: the log the server wrote is the one inspected.
  const Run inspect =
      Shell("env BUCKETD_DATA='" + dir.path.string() + "' " + BucketctlBinary() + " inspect");
  INFO(inspect.out);
  CHECK(inspect.exit_code == 0);
  CHECK(inspect.out.find("log             seq 1 ..") != std::string::npos);
  // Neither the flag nor the variable: refused, not run on the current directory.
  CHECK(Shell("env -u BUCKETD_DATA " + BucketctlBinary() + " inspect 2>/dev/null").exit_code != 0);

  const Run replay_help = Shell(BucketctlBinary() + " replay --help");
  CHECK(replay_help.out.find("BUCKETD_DATA") != std::string::npos);
  CHECK(std::regex_search(replay_help.out, std::regex(R"(--threads\s.*=0\s)")));
  const Run workload_help = Shell(BucketctlBinary() + " workload --help");
  CHECK(std::regex_search(workload_help.out, std::regex(R"(--batch\s.*=1000\s)")));
  CHECK(std::regex_search(workload_help.out, std::regex(R"(--start-time\s.*=1767225600000\s)")));
}
