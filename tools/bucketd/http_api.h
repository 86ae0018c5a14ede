#pragma once
// The /v1 routes of SPEC §9, plus /metrics and /healthz. Handlers parse on the HTTP
// thread, then hand the engine call to the owner thread and wait for it.
#include <memory>
#include <string>

#include <httplib.h>

#include "engine_thread.h"
#include "http_route.h"
#include "prometheus.h"

namespace bucketd::server {

struct ApiConfig {
  std::string auth_token;  // empty: /v1 is open
  bool manual_clock = false;
};

class HttpApi {
 public:
  HttpApi(EngineThread& engine, ServerMetrics& metrics, ApiConfig config);

  // Adds every route to `server`.
  void Register(httplib::Server& server);

 private:
  Reply PostEvents(const httplib::Request& req);
  Reply DeleteContact(const httplib::Request& req);
  Reply DefineBucket(const httplib::Request& req, DefineMode mode);
  Reply ListBuckets(const httplib::Request& req);
  Reply GetBucket(const httplib::Request& req);
  Reply PatchBucket(const httplib::Request& req);
  Reply DeleteBucket(const httplib::Request& req);
  Reply CountMembers(const httplib::Request& req);
  Reply BucketMetricsOf(const httplib::Request& req);
  Reply ListMembers(const httplib::Request& req);
  Reply GetMember(const httplib::Request& req);
  Reply AddMember(const httplib::Request& req);
  Reply RemoveMember(const httplib::Request& req);
  Reply UserMemberships(const httplib::Request& req);
  Reply ReadTransitions(const httplib::Request& req);
  Reply AdvanceClock(const httplib::Request& req);
  Reply Sweep(const httplib::Request& req);
  Reply TakeSnapshot(const httplib::Request& req);
  Reply State(const httplib::Request& req);
  Reply PrometheusMetrics(const httplib::Request& req);

  // The bucket as the API shows it, read after a change on the owner thread.
  Reply BucketReply(int http_status, const std::string& bucket_id);

  EngineThread& engine_;
  ServerMetrics& metrics_;
  const ApiConfig config_;
  std::unique_ptr<Router> router_;
};

}  // namespace bucketd::server
