// Edge load tool: decision → API call latency to the local emulator, and how many API requests
// the IP-list actuator needs per decision (batching), under the default request budget.
//   bazel run -c opt //tests/bench:edge_bench -- --decisions=1000 --rate=200
// It runs the real Dispatcher, actuators, Cloudflare client and libcurl against an in-process
// emulator on loopback, with the real clock.
#include <algorithm>
#include <cstdio>
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "services/actions/actuators.h"
#include "services/actions/dispatcher.h"
#include "services/common/proto_time.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

ABSL_FLAG(int32_t, decisions, 1000, "Decisions per scenario.");
ABSL_FLAG(int32_t, rate, 200, "Decisions per second offered.");
ABSL_FLAG(int32_t, operation_ms, 50, "Emulated list operation pending and running time.");
ABSL_FLAG(std::string, only, "", "Run one scenario: access or list.");
ABSL_FLAG(int32_t, poll_ms, 25, "How often the client polls a list bulk operation.");

namespace palisade {
namespace {

// Wraps an actuator and records when each decision's apply came back OK.
class Timed final : public Actuator {
 public:
  explicit Timed(std::unique_ptr<Actuator> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  void Run(std::vector<ActionOp*>& ops) override {
    inner_->Run(ops);
    absl::MutexLock lock(&mu_);
    ++batches_;
    for (ActionOp* op : ops) {
      if (op->result.ok()) done_[op->decision.id()] = absl::Now();
    }
  }
  std::map<std::string, absl::Time> done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  int batches() {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  std::unique_ptr<Actuator> inner_;
  absl::Mutex mu_;
  std::map<std::string, absl::Time> done_;
  int batches_ = 0;
};

void Scenario(const char* title, palisade::v1::Actuator kind) {
  RealClock& clock = RealClock::Get();
  fake::Options fo;
  fo.operation_pending = fo.operation_running =
      absl::Milliseconds(absl::GetFlag(FLAGS_operation_ms));
  fo.max_list_items = 1'000'000;
  fake::FakeCloudflare fake(clock, fo);
  fake::TokenSpec spec;
  spec.permissions = {"firewall_services", "lists", "rulesets", "tokens"};
  const std::string token = fake.AddToken(spec).second;
  fake::EmulatorServer server(fake);
  if (!server.Start().ok()) std::abort();

  prometheus::Registry registry;
  CurlTransport transport;
  ClientOptions co;
  co.base_url = server.base_url();
  co.account_id = fo.account_id;
  co.zone_id = fo.zone_id;
  co.poll_interval = absl::Milliseconds(absl::GetFlag(FLAGS_poll_ms));
  Credentials creds;
  creds.token = Secret(token);
  CloudflareClient client(transport, clock, co, creds, registry);

  DispatcherOptions dopts;
  dopts.flush_interval = absl::Milliseconds(100);
  Dispatcher dispatcher(clock, dopts, registry);
  Timed* timed;
  if (kind == palisade::v1::ACTUATOR_ACCESS_RULE) {
    auto t =
        std::make_unique<Timed>(std::make_unique<AccessRuleActuator>(client, RuleScope::kZone));
    timed = t.get();
    dispatcher.AddActuator(kind, std::move(t));
  } else {
    IpListOptions lo;
    lo.max_items = 1'000'000;
    auto t = std::make_unique<Timed>(std::make_unique<IpListActuator>(client, lo, registry));
    timed = t.get();
    dispatcher.AddActuator(kind, std::move(t));
  }
  dispatcher.Start();

  const int n = absl::GetFlag(FLAGS_decisions);
  const absl::Duration gap = absl::Seconds(1) / std::max(1, absl::GetFlag(FLAGS_rate));
  std::map<std::string, absl::Time> created;
  const int64_t calls_before = fake.calls();
  const absl::Time start = absl::Now();
  for (int i = 0; i < n; ++i) {
    DecisionUpdate u;
    u.change = DecisionChange::kCreated;
    u.decision.set_id(absl::StrCat("bench", i));
    u.decision.set_actuator(kind);
    u.decision.set_action(palisade::v1::ACTION_BLOCK);
    u.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    u.decision.mutable_target()->set_value(
        absl::StrCat("10.", i / 65536, ".", (i / 256) % 256, ".", i % 256));
    created[u.decision.id()] = absl::Now();
    dispatcher.OnDecision(u);
    const absl::Duration ahead = start + gap * (i + 1) - absl::Now();
    if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (dispatcher.pending() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  dispatcher.Stop();

  std::vector<double> ms;
  for (const auto& [id, t] : timed->done()) {
    ms.push_back(absl::ToDoubleMilliseconds(t - created[id]));
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) {
    return ms.empty() ? 0 : ms[std::min(ms.size() - 1, size_t(p * ms.size()))];
  };
  const int64_t calls = fake.calls() - calls_before;
  std::printf("%s: %d decisions offered at %d/s, %zu applied in %.2f s\n", title, n,
              absl::GetFlag(FLAGS_rate), ms.size(), wall);
  std::printf("  decision -> confirmed at the edge: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
              pct(0.50), pct(0.99), ms.empty() ? 0 : ms.back());
  std::printf(
      "  API requests: %lld (%.2f per decision, %.1f decisions per request), %d actuator runs\n",
      static_cast<long long>(calls), n ? double(calls) / n : 0,
      calls ? double(ms.size()) / calls : 0, timed->batches());
  server.Stop();
}

}  // namespace
}  // namespace palisade

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string only = absl::GetFlag(FLAGS_only);
  if (only.empty() || only == "access") {
    palisade::Scenario("access rules", palisade::v1::ACTUATOR_ACCESS_RULE);
  }
  if (only.empty() || only == "list") palisade::Scenario("ip list", palisade::v1::ACTUATOR_IP_LIST);
  return 0;
}
