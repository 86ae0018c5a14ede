#pragma once
// Ten buckets of mixed shapes (property, windowed count, absence composite), shared by
// the benchmarks so their figures describe the same workload.
#include <array>

namespace bucketd::bench {

inline constexpr std::array<const char*, 10> kBenchBuckets = {
    R"({"id":"power-users","criteria":{"type":"event","eventName":"feature.used","check":"count","operator":"gte","value":10,"within":"30d"}})",
    R"({"id":"active-7d","criteria":{"type":"event","eventName":"app.opened","check":"exists","within":"7d"}})",
    R"({"id":"went-dormant","dwell":[{"after":"30d"}],"criteria":{"type":"composite","operator":"and","conditions":[{"type":"event","eventName":"app.opened","check":"exists"},{"type":"event","eventName":"app.opened","check":"not_exists","within":"7d"}]}})",
    R"({"id":"trial","maxDwell":"14d","entryLimit":"once","criteria":{"type":"property","property":"plan","operator":"eq","value":"trial"}})",
    R"({"id":"big-spender","criteria":{"type":"property","property":"ltv","operator":"gte","value":1000}})",
    R"({"id":"buyers","criteria":{"type":"event","eventName":"purchase","check":"count","operator":"gte","value":1}})",
    R"({"id":"recent-buyer","criteria":{"type":"event","eventName":"purchase","check":"exists","within":"1d"}})",
    R"({"id":"enterprise-active","criteria":{"type":"composite","operator":"and","conditions":[{"type":"property","property":"plan","operator":"eq","value":"enterprise"},{"type":"event","eventName":"feature.used","check":"count","operator":"gte","value":3,"within":"7d"}]}})",
    R"({"id":"low-engagement","criteria":{"type":"composite","operator":"and","conditions":[{"type":"event","eventName":"app.opened","check":"exists"},{"type":"event","eventName":"feature.used","check":"count","operator":"lt","value":3,"within":"14d"}]}})",
    R"({"id":"dutch","criteria":{"type":"property","property":"country","operator":"eq","value":"NL"}})",
};

}  // namespace bucketd::bench
