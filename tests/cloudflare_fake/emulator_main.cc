// cloudflare_emulator: the local Cloudflare API emulator as a process, for the demo and for
// tests that run palisaded against it.
//   cloudflare_emulator --port=0 --port_file=F --token_file=T [--plan=business]
// It seeds one API token with every permission; its value is written to --token_file (never
// printed). State, faults and the clock are driven through /__emulator/ endpoints.
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "services/common/clock.h"
#include "tests/cloudflare_fake/emulator_server.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

ABSL_FLAG(int32_t, port, 0, "Loopback port (0: any free port).");
ABSL_FLAG(std::string, port_file, "", "Writes the port here once listening.");
ABSL_FLAG(std::string, token_file, "", "Writes the seeded API token's value here (mode 0600).");
ABSL_FLAG(std::string, token_value, "", "Use this value for the seeded token.");
ABSL_FLAG(std::vector<std::string>, token_permissions,
          std::vector<std::string>({"firewall_services", "lists", "rulesets", "tokens",
                                    "audit_logs"}),
          "The seeded token's permissions (TokenSpec short names or permission group names); "
          "the default is exactly what Palisade's actuators need with zone access rules "
          "(account access rules take access_rules instead of firewall_services).");
ABSL_FLAG(std::vector<std::string>, token_ip_in, {},
          "The seeded token's condition.request.ip.in (CIDRs); empty: no IP condition.");
ABSL_FLAG(int64_t, token_expires_in_hours, 0, "The seeded token expires this far ahead (0: never).");
ABSL_FLAG(std::string, token_resources, "exact", "exact, all_zones or all_accounts.");
ABSL_FLAG(int32_t, max_list_items, 10000, "Plan quota: items across all lists.");
ABSL_FLAG(std::string, plan, "business",
          "The zone's plan (free, pro, business, enterprise): allowed rate-limit values.");
ABSL_FLAG(int32_t, max_ratelimit_rules, 5, "Plan quota: rate limiting rules per zone.");
ABSL_FLAG(int32_t, operation_delay_ms, 100, "Pending and running time of list operations.");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  palisade::OffsetClock clock;
  palisade::fake::Options options;
  options.max_list_items = absl::GetFlag(FLAGS_max_list_items);
  options.max_ratelimit_rules = absl::GetFlag(FLAGS_max_ratelimit_rules);
  options.plan = absl::GetFlag(FLAGS_plan);
  options.operation_pending = absl::Milliseconds(absl::GetFlag(FLAGS_operation_delay_ms));
  options.operation_running = options.operation_pending;
  palisade::fake::FakeCloudflare fake(clock, options);
  palisade::fake::TokenSpec spec;
  spec.name = "palisade-enforcer";
  spec.value = absl::GetFlag(FLAGS_token_value);
  for (const std::string& p : absl::GetFlag(FLAGS_token_permissions)) spec.permissions.insert(p);
  spec.ip_in = absl::GetFlag(FLAGS_token_ip_in);
  spec.resources = absl::GetFlag(FLAGS_token_resources);
  if (absl::GetFlag(FLAGS_token_expires_in_hours) > 0) {
    spec.expires_on = clock.TimeNow() + absl::Hours(absl::GetFlag(FLAGS_token_expires_in_hours));
  }
  auto [id, value] = fake.AddToken(spec);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    std::ofstream out(absl::GetFlag(FLAGS_token_file));
    out << value << "\n";
    out.close();
    // As the flag says: palisaded refuses a token file open to group or others.
    chmod(absl::GetFlag(FLAGS_token_file).c_str(), 0600);
  }
  palisade::fake::EmulatorServer server(fake, [&clock](absl::Duration d) { clock.Advance(d); });
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::StatusOr<int> port = server.Start(absl::GetFlag(FLAGS_port));
  if (!port.ok()) {
    std::cerr << "cloudflare_emulator: " << port.status().message() << std::endl;
    return 2;
  }
  std::cerr << "cloudflare_emulator: serving " << server.base_url() << " (token id " << id << ")"
            << std::endl;
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    const std::string path = absl::GetFlag(FLAGS_port_file);
    {
      std::ofstream out(path + ".tmp");
      out << *port << "\n";
    }
    std::rename((path + ".tmp").c_str(), path.c_str());
  }
  int sig = 0;
  sigwait(&signals, &sig);
  server.Stop();
  return 0;
}
