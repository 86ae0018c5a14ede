#pragma once
// Ten buckets of mixed shapes (property, windowed count, absence composite), shared by
// the benchmarks so their figures describe the same workload; and the "beyond" mix (SPEC
// §3b, issue 16): the same ten with five replaced by buckets using the new legs.
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

// Today's ten with five replaced, one per new leg, each by a bucket of a similar purpose
// over the same events, so the two mixes differ in the legs and not in the workload's size:
// `trial` by a time property (`trialEndsAt` within 3 days), `big-spender` by a windowed sum
// (purchases' `amount` ≥ 100 in 30 days), `buyers` by a `where` filter (pro purchases in
// 90 days), `recent-buyer` by a sequence (a page view not followed by a purchase within 15
// minutes, in the last day) and `low-engagement` by a composite with a bucket leg (not a
// member of `big-spender-30d`, defined before it as a bucket leg requires).
inline constexpr std::array<const char*, 10> kBeyondBuckets = {
    kBenchBuckets[0],  // power-users
    kBenchBuckets[1],  // active-7d
    kBenchBuckets[2],  // went-dormant
    R"({"id":"trial-ending","maxDwell":"14d","entryLimit":"once","criteria":{"type":"composite","operator":"and","conditions":[{"type":"property","property":"plan","operator":"eq","value":"trial"},{"type":"property","property":"trialEndsAt","operator":"before","value":"+3d"},{"type":"property","property":"trialEndsAt","operator":"after","value":"+0s"}]}})",
    R"({"id":"big-spender-30d","criteria":{"type":"event","eventName":"purchase","check":"sum","property":"amount","operator":"gte","value":100,"within":"30d"}})",
    R"({"id":"pro-buyers","criteria":{"type":"event","eventName":"purchase","check":"exists","within":"90d","where":[{"property":"plan","operator":"eq","value":"pro"}]}})",
    R"({"id":"abandoned-browse","criteria":{"type":"sequence","steps":[{"eventName":"page.viewed"},{"eventName":"purchase"}],"within":"15m","outcome":"abandoned","lookback":"1d"}})",
    kBenchBuckets[7],  // enterprise-active
    R"({"id":"low-engagement-not-spender","criteria":{"type":"composite","operator":"and","conditions":[{"type":"event","eventName":"app.opened","check":"exists"},{"type":"event","eventName":"feature.used","check":"count","operator":"lt","value":3,"within":"14d"},{"type":"bucket","bucketId":"big-spender-30d","check":"not_member"}]}})",
    kBenchBuckets[9],  // dutch
};

}  // namespace bucketd::bench
