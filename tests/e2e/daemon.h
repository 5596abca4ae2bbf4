// Test helper: runs a real palisaded binary on free loopback ports (port 0, read back from its
// --port_file), and stops it at the end. Test-only.
#ifndef PALISADE_TESTS_E2E_DAEMON_H_
#define PALISADE_TESTS_E2E_DAEMON_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace palisade::testing {

class Daemon {
 public:
  // Starts services/server/palisaded with `args` (plus the listen and port-file flags, and a
  // fresh state file unless `state_file` names one) and waits until it listens.
  // kDeadlineExceeded if it does not within 20 s.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(std::vector<std::string> args,
                                                       const std::string& state_file = "");
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

// GET / POST http://127.0.0.1:port/path through libcurl.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path,
                                    const std::vector<std::string>& headers = {});
absl::StatusOr<std::string> HttpPost(int port, const std::string& path, const std::string& body,
                                     const std::vector<std::string>& headers = {});

// Sum of the samples of `name` in a Prometheus text exposition whose labels contain every
// `k="v"` in `labels` (e.g. {"rule=\"x\""}).
double MetricValue(const std::string& exposition, const std::string& name,
                   const std::vector<std::string>& labels = {});

}  // namespace palisade::testing

#endif  // PALISADE_TESTS_E2E_DAEMON_H_
