// The NATS harness itself (tests/nats_test_support.h): one server and a three-server
// cluster come up with JetStream on free loopback ports, take a JetStream publish, and a
// SIGKILLed server of three neither stops an R3 stream nor fails to come back.
#include <chrono>
#include <string>
#include <thread>

#include <nats/nats.h>
#include <catch2/catch.hpp>

#include "tests/nats_test_support.h"

namespace bucketd {
namespace {

using testing::NatsCluster;

struct Js {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  explicit Js(const std::string& url) {
    REQUIRE(natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK);
    REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
  }
  ~Js() {
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
};

void AddStream(Js* c, int64_t replicas) {
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  const char* subjects[] = {"harness.>"};
  config.Name = "HARNESS";
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Replicas = replicas;
  jsStreamInfo* info = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  const natsStatus s = js_AddStream(&info, c->js, &config, nullptr, &err);
  INFO(natsStatus_GetText(s) << " " << err << " " << nats_GetLastError(nullptr));
  REQUIRE(s == NATS_OK);
  jsStreamInfo_Destroy(info);
}

// Publishes and returns the stream sequence JetStream acknowledged. Retries for up to
// `patience`: after a server dies, the stream's leader may be re-elected first.
uint64_t Publish(Js* c, std::chrono::seconds patience) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    jsPubAck* ack = nullptr;
    const natsStatus s = js_Publish(&ack, c->js, "harness.a", "x", 1, nullptr, nullptr);
    if (s == NATS_OK) {
      const uint64_t seq = ack->Sequence;
      jsPubAck_Destroy(ack);
      return seq;
    }
    INFO(natsStatus_GetText(s) << " " << nats_GetLastError(nullptr));
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

TEST_CASE("one NATS server with JetStream takes a publish") {
  NatsCluster nats(1);
  Js c(nats.url());
  AddStream(&c, 1);
  CHECK(Publish(&c, std::chrono::seconds(0)) == 1);
  CHECK(Publish(&c, std::chrono::seconds(0)) == 2);
}

TEST_CASE("three NATS servers keep an R3 stream through the SIGKILL and restart of one") {
  NatsCluster nats(3);
  Js c(nats.url());
  AddStream(&c, 3);
  CHECK(Publish(&c, std::chrono::seconds(0)) == 1);
  // Server 0 is the one the client most likely talks to: its death also tests reconnect.
  nats.Kill(0);
  CHECK(Publish(&c, std::chrono::seconds(20)) == 2);
  nats.Restart(0);
  CHECK(Publish(&c, std::chrono::seconds(20)) == 3);
}

}  // namespace
}  // namespace bucketd
