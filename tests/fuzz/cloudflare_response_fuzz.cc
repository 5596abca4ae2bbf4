// libFuzzer target: the Cloudflare client's response handling. A scripted transport answers
// every request with the fuzzer's bytes (the first byte picks the HTTP status); each typed call
// must turn any answer into a value or a status, never a crash. The credentials check reads
// the same bytes as its token's details (policies included).
#include <cstddef>
#include <cstdint>
#include <string>

#include "services/cloudflare/client.h"
#include "services/cloudflare/token_check.h"
#include "services/common/clock.h"

namespace {

class ScriptedTransport final : public palisade::HttpTransport {
 public:
  absl::StatusOr<palisade::HttpResponse> Send(const palisade::HttpRequest&) override {
    if (++calls_ > 8) return absl::UnavailableError("enough");
    palisade::HttpResponse r;
    static const int kStatus[] = {200, 200, 200, 400, 403, 404, 429, 500, 503};
    r.status = kStatus[status_ % 9];
    r.body = body_;
    if (status_ & 0x10) r.headers["retry-after"] = "1";
    if (status_ & 0x20) r.headers["ratelimit"] = "\"default\";r=0;t=1";
    return r;
  }
  uint8_t status_ = 0;
  std::string body_;
  int calls_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ScriptedTransport transport;
  transport.status_ = data[0];
  transport.body_.assign(reinterpret_cast<const char*>(data + 1), size - 1);
  palisade::SimulatedClock clock;
  prometheus::Registry registry;
  palisade::ClientOptions options;
  options.base_url = "http://127.0.0.1:1/client/v4";
  options.account_id = "0123456789abcdef0123456789abcdef";
  options.zone_id = "fedcba9876543210fedcba9876543210";
  options.max_attempts = 2;
  options.poll_timeout = absl::Seconds(3);
  palisade::Credentials creds;
  creds.token = palisade::Secret("cfut_fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz");
  palisade::CloudflareClient client(transport, clock, options, creds, registry);
  // % 10 against the status's % 9: every call meets every status.
  switch (data[0] % 10) {
    case 0:
      (void)client.VerifyToken();
      break;
    case 1:
      (void)client.ListAllAccessRules(palisade::RuleScope::kZone, {});
      break;
    case 2:
      (void)client.ListAllItems("0123456789abcdef0123456789abcdef");
      break;
    case 3:
      (void)client.WaitForOperation("op");
      break;
    case 4:
      (void)client.GetEntrypoint("http_ratelimit");
      break;
    case 5:
      (void)client.ListAuditLogs(absl::UnixEpoch(), absl::UnixEpoch() + absl::Hours(48));
      break;
    case 6:
      (void)client.DisableToken("0123456789abcdef0123456789abcdef", false);
      break;
    case 7:
      // The roll reads its reply outside Send's retries (SendOnce, under the writer gate).
      (void)client.RollToken("0123456789abcdef0123456789abcdef", data[0] & 0x40,
                             [](const palisade::Secret&) { return absl::OkStatus(); });
      break;
    case 8: {
      palisade::TokenNeeds needs;
      needs.account_id = options.account_id;
      needs.zone_id = options.zone_id;
      needs.audit_log = true;
      (void)palisade::CheckCredentials(client, needs, clock.TimeNow());
      break;
    }
    default:
      (void)client.CreateAccessRule(palisade::RuleScope::kZone, "block", "ip", "203.0.113.7", "n");
      break;
  }
  return 0;
}
