// The bouncer API's live mode (GET /v1/decisions?ip=, which nginx's and HAProxy's bouncers ask
// once per request their server takes) with a large feed loaded: 100,000 active decisions, as
// a FireHOL-sized feed makes them (addresses, some /24s, some IPv6 addresses and /48s). What a
// question costs while decisions keep changing (one change, then one question, as during an
// attack), a question alone, a change alone (the table's listener's share), and a range=
// question (answered over every active row) for comparison.
//   bazel run -c opt //tests/bench:bouncer_live_bench
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/registry.h"
#include "services/bouncer_api/bouncer_api.h"
#include "services/common/clock.h"
#include "services/store/store.h"

namespace palisade {
namespace {

constexpr int kDecisions = 100'000;
constexpr int kQuestions = 1'024;

std::string V4(uint32_t v) {
  return absl::StrCat((v >> 24) & 255, ".", (v >> 16) & 255, ".", (v >> 8) & 255, ".", v & 255);
}

// 2001:db8:ffff::/64's address number `i`, in canonical form.
std::string V6(int i) {
  if (i >> 16 == 0) return absl::StrCat("2001:db8:ffff::", absl::Hex(i));
  return absl::StrCat("2001:db8:ffff::", absl::Hex(i >> 16), ":", absl::Hex(i & 0xFFFF));
}

// Decision i of the feed: mostly IPv4 addresses (from 11.0.0.0 up, as feed_bench's), every
// 50th a /24, every 10th an IPv6 address and every 100th an IPv6 /48.
palisade::v1::Decision FeedDecision(int i, absl::Time now) {
  palisade::v1::Decision d;
  d.set_id(absl::StrCat("feed-", i));
  const uint32_t v = 0x0B000000u + static_cast<uint32_t>(i) * 7;
  if (i % 50 == 0) {
    d.mutable_target()->set_kind(palisade::v1::TARGET_KIND_RANGE);
    d.mutable_target()->set_value(absl::StrCat(V4(v & 0xFFFFFF00u), "/24"));
  } else if (i % 100 == 1) {
    d.mutable_target()->set_kind(palisade::v1::TARGET_KIND_RANGE);
    d.mutable_target()->set_value(absl::StrCat("2001:db8:", absl::Hex(i / 100), "::/48"));
  } else if (i % 10 == 3) {
    d.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    d.mutable_target()->set_value(V6(i));
  } else {
    d.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    d.mutable_target()->set_value(V4(v));
  }
  d.set_action(palisade::v1::ACTION_BLOCK);
  d.set_origin(palisade::v1::ORIGIN_FEED);
  d.set_reason("firehol_level3");
  d.set_active(true);
  // Distinct ends, as a feed's decisions have (each made when its entry was first listed).
  const absl::Time expiry = now + absl::Hours(24) + absl::Milliseconds(i);
  d.mutable_expiry()->set_seconds(absl::ToUnixSeconds(expiry));
  d.mutable_expiry()->set_nanos(static_cast<int32_t>(
      (expiry - absl::FromUnixSeconds(absl::ToUnixSeconds(expiry))) / absl::Nanoseconds(1)));
  return d;
}

// The API over a store in a temporary directory, the feed's decisions logged, one live-mode
// bouncer, and the questions it asks: a quarter on banned addresses, a quarter inside a banned
// range (v4 /24 or v6 /48), half on addresses nothing decides on (most visitors).
struct Setup {
  Setup() {
    char tmpl[] = "/tmp/palisade-bouncer-live-bench-XXXXXX";
    dir = ::mkdtemp(tmpl);
    store = *Store::Open(dir + "/state.db");
    palisade::v1::BouncerApiConfig config;
    config.set_listen("127.0.0.1:0");
    api = *BouncerApi::Create(config, clock, store.get(), registry);
    key = *api->AddBouncer("nginx");
    const absl::Time now = clock.TimeNow();
    for (int i = 0; i < kDecisions; ++i) {
      decisions.push_back(FeedDecision(i, now));
      api->OnUpdates({{DecisionChange::kCreated, decisions.back()}});
    }
    (void)api->Flush();
    for (int q = 0; q < kQuestions; ++q) {
      const int i = (q * 7919) % kDecisions;  // spread over the feed
      auto v4_of = [](int j) { return 0x0B000000u + static_cast<uint32_t>(j) * 7; };
      std::string ip;
      switch (q % 8) {
        case 0:
          ip = V4(v4_of(i - i % 10 + 2));  // a banned address (decision i - i % 10 + 2)
          break;
        case 1:
          ip = V6(i - i % 10 + 3);  // a banned IPv6 address
          break;
        case 2:
          ip = absl::StrCat("2001:db8:", absl::Hex(i / 100), ":abcd::1");  // in a /48
          break;
        case 3:
          ip = V4((v4_of(i - i % 50) & 0xFFFFFF00u) | 3);  // in a /24
          break;
        case 4:
        case 5:
          ip = V4(0xCB007100u + static_cast<uint32_t>(q % 250));  // 203.0.113.x: nothing
          break;
        default:
          ip = absl::StrCat("2a00:1450:4001::", absl::Hex(q));  // nothing
      }
      questions.push_back(Question("ip", ip));
      ranges.push_back(Question("range", ip));
    }
  }
  ~Setup() {
    api.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }

  BouncerRequest Question(const std::string& param, const std::string& value) const {
    BouncerRequest r;
    r.path = "/v1/decisions";
    r.params.emplace(param, value);
    r.target_bytes = r.path.size() + param.size() + value.size() + 2;
    r.api_key = key;
    r.address = "127.0.0.1";
    r.user_agent = "crowdsec-nginx-bouncer/v1.0.0";
    return r;
  }

  // The next change: decision `next_change` extended by a second (a new row for it in the log,
  // as a detection on a listed address extends its ban).
  void Change() {
    palisade::v1::Decision& d = decisions[next_change++ % kDecisions];
    d.mutable_expiry()->set_seconds(d.expiry().seconds() + 1);
    api->OnUpdates({{DecisionChange::kExtended, d}});
  }

  SimulatedClock clock;
  prometheus::Registry registry;
  std::string dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<BouncerApi> api;
  std::string key;
  std::vector<palisade::v1::Decision> decisions;
  std::vector<BouncerRequest> questions;
  std::vector<BouncerRequest> ranges;  // the same addresses as range=a/32 or a/128
  size_t next_change = 0;
};

Setup& Shared() {
  // Built once (logging 100,000 decisions takes seconds), and destroyed at exit with its files.
  static Setup s;
  return s;
}

// Asks `requests` in turn; counts the answers that decide on their address.
void Ask(benchmark::State& state, const std::vector<BouncerRequest>& requests, bool change) {
  Setup& s = Shared();
  size_t q = 0;
  int64_t decided = 0;
  for (auto _ : state) {
    if (change) s.Change();
    BouncerReply reply = s.api->Handle(requests[q++ % requests.size()]);
    if (reply.status != 200) {
      state.SkipWithError(reply.body.c_str());
      break;
    }
    decided += reply.body != "null";
  }
  state.counters["decided"] =
      benchmark::Counter(static_cast<double>(decided) / static_cast<double>(state.iterations()));
}

void BM_LiveQuestionWhileChanging(benchmark::State& state) { Ask(state, Shared().questions, true); }
BENCHMARK(BM_LiveQuestionWhileChanging)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_LiveQuestion(benchmark::State& state) { Ask(state, Shared().questions, false); }
BENCHMARK(BM_LiveQuestion)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_Change(benchmark::State& state) {
  Setup& s = Shared();
  for (auto _ : state) s.Change();
}
BENCHMARK(BM_Change)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_LiveRangeQuestion(benchmark::State& state) { Ask(state, Shared().ranges, false); }
BENCHMARK(BM_LiveRangeQuestion)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace palisade

BENCHMARK_MAIN();
