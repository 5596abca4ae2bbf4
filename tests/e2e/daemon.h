// Test helper: runs a real palisaded binary on free loopback ports (port 0, read back from its
// --port_file), and stops it at the end. Test-only.
#ifndef PALISADE_TESTS_E2E_DAEMON_H_
#define PALISADE_TESTS_E2E_DAEMON_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/support/byte_buffer.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/shipper.h"

namespace palisade::testing {

class Daemon {
 public:
  // Starts services/server/palisaded with `args` (plus the port-file flag, free loopback ports
  // for --grpc_listen and --metrics_listen unless `args` sets them, and a fresh state file
  // unless `state_file` names one) and waits until it listens.
  // kDeadlineExceeded if it does not within 60 s. With `log_file`, its stdout and stderr go
  // there (appended) instead of the test's.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(std::vector<std::string> args,
                                                       const std::string& state_file = "",
                                                       const std::string& log_file = "");
  // SIGKILL, as a crash would.
  void Kill();
  ~Daemon();

  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  // SIGTERM, then waits; returns the exit status.
  int Stop();

 private:
  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// The Cloudflare emulator binary on a free loopback port, with one seeded API token.
class Emulator {
 public:
  static absl::StatusOr<std::unique_ptr<Emulator>> Start(std::vector<std::string> args = {});
  ~Emulator();
  int port() const { return port_; }
  std::string api_base() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/client/v4";
  }
  // A file holding the seeded token (for palisaded's token_file).
  const std::string& token_file() const { return token_file_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string token_file_;
};

// The account and zone the emulator serves by default.
constexpr char kEmulatorAccount[] = "0123456789abcdef0123456789abcdef";
constexpr char kEmulatorZone[] = "fedcba9876543210fedcba9876543210";

// Writes a palisaded config (in TEST_TMPDIR) that drives `emulator` with the token in
// `token_file`: `packs` are runfiles paths ("tests/e2e/testdata/edge.textproto"), `top` is
// added at the top level and `cloudflare_extra` inside the cloudflare section. Sweeps and flushes
// run every 100 ms. Returns the file's path.
std::string WriteEdgeConfig(const Emulator& emulator, const std::string& token_file,
                            const std::vector<std::string>& packs, const std::string& top = "",
                            const std::string& cloudflare_extra = "");

// The emulator's whole state (GET /__emulator/state), or null when it does not answer.
nlohmann::json EmulatorState(const Emulator& emulator);

// The emulator's IP list `list` as item value -> item id, its values alone, and the values of
// its access rules (empty when the emulator does not answer).
std::map<std::string, std::string> EmulatorListItems(const Emulator& emulator,
                                                     const std::string& list = "palisade_block");
std::set<std::string> EmulatorListedValues(const Emulator& emulator,
                                           const std::string& list = "palisade_block");
std::set<std::string> EmulatorAccessRuleValues(const Emulator& emulator);
// The emulator's access rules counted by value (a value twice: two rules), and the successful
// access-rule creates in its account's audit log (-1 when it does not answer; a create the
// emulator refused as a duplicate leaves none): "one create per decision" in the edge tests.
std::map<std::string, int> EmulatorAccessRuleCounts(const Emulator& emulator);
int EmulatorAccessRuleCreates(const Emulator& emulator);

// Admin.Status's actions_pending, or 2^30 when the daemon does not answer.
uint32_t ActionsPending(const Daemon& daemon);

// `lines` as log records without an event time (the daemon reads each line's own timestamp),
// and stamped with `event_time` (as a shipper stamps the time it read them).
std::vector<palisade::v1::LogRecord> Records(const std::vector<std::string>& lines);
std::vector<palisade::v1::LogRecord> Records(const std::vector<std::string>& lines,
                                             absl::Time event_time);

// Ships `lines`, stamped now, as `format` from `source`; an error when the call fails or a line
// is malformed (every caller's lines are well-formed), else the summary.
absl::StatusOr<ShipSummary> ShipLines(palisade::v1::Ingest::Stub& stub,
                                      palisade::v1::LogFormat format,
                                      const std::vector<std::string>& lines,
                                      const std::string& source = "e2e");

// palisaded run to its end, for a start that must be refused (Daemon::Start says only "exited
// early"): `args` plus free loopback ports and a fresh state file, as Daemon::Start adds them.
struct Exit {
  int status = -1;     // the exit status; -1 when a signal ended it
  std::string output;  // stdout and stderr
};
Exit RunToExit(std::vector<std::string> args);

// `command` run through the shell: what it wrote on stdout (add " 2>&1" for stderr too), and its
// exit status in *exit_code (-1 when a signal ended it).
std::string RunShell(const std::string& command, int* exit_code);

// The first line of a file ("" when it cannot be read), e.g. a token file.
std::string FirstLine(const std::string& path);

// A port free on 127.0.0.1 for both TCP and UDP now (the daemon binds it a moment later); 0 when
// none was found in 50 tries.
int FreeLoopbackPort();

// A TCP listener on a free 127.0.0.1 port, held until destroyed: a port in use. port() is 0 when
// none could be bound.
class HeldLoopbackPort {
 public:
  HeldLoopbackPort();
  ~HeldLoopbackPort();
  HeldLoopbackPort(const HeldLoopbackPort&) = delete;
  HeldLoopbackPort& operator=(const HeldLoopbackPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Polls `done` every 50 ms until it holds or `timeout` passes; returns its last answer.
bool WaitFor(const std::function<bool()>& done, absl::Duration timeout);

// GET / POST http://127.0.0.1:port/path through libcurl.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path,
                                    const std::vector<std::string>& headers = {});
absl::StatusOr<std::string> HttpPost(int port, const std::string& path, const std::string& body,
                                     const std::vector<std::string>& headers = {});

// Sum of the samples of `name` in a Prometheus text exposition whose labels contain every
// `k="v"` in `labels` (e.g. {"rule=\"x\""}).
double MetricValue(const std::string& exposition, const std::string& name,
                   const std::vector<std::string>& labels = {});
// MetricValue of the daemon's /metrics now, or -1 when it does not answer.
double ScrapeMetric(const Daemon& daemon, const std::string& name,
                    const std::vector<std::string>& labels = {});

// Waits up to a minute until `daemon` counts `n` event-stream subscribers (its Watch calls and
// its sinks). A Watch without after_sequence gets only the events published once the server has
// subscribed it, which on a busy machine may be well after the client's call returned: a test
// ships its lines after this, not after a sleep.
bool WaitForSubscribers(const Daemon& daemon, int n);

// The bytes of a gRPC message as it came on the wire (a generic call's request or answer).
std::string ByteBufferString(const grpc::ByteBuffer& buffer);

}  // namespace palisade::testing

#endif  // PALISADE_TESTS_E2E_DAEMON_H_
