// Test helpers for issue 16's bouncer-API tests: an HTTP client that keeps the status and the
// content type, the two Local APIs real CrowdSec bouncers are pointed at (Debian's crowdsec
// 1.4.6 LAPI, the reference, and palisaded's bouncer_api), child processes (the bouncers), and a
// private network namespace for the firewall bouncer's nftables. Test-only; nothing here is
// thread-safe (one test thread drives it).
#ifndef PALISADE_TESTS_E2E_BOUNCER_LAPI_H_
#define PALISADE_TESTS_E2E_BOUNCER_LAPI_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/e2e/daemon.h"

namespace palisade::testing {

struct HttpReply {
  long status = 0;
  std::string content_type;
  std::string body;
};

// `method` `target` (path and query) on http://127.0.0.1:port, with `X-Api-Key: *key` when `key`
// is set. An error only when no HTTP reply came.
absl::StatusOr<HttpReply> LapiRequest(int port, const std::string& method,
                                      const std::string& target,
                                      const std::optional<std::string>& key);

// A decision as cscli and the Decisions API both make it.
struct LapiDecision {
  std::string scope;  // "Ip" or "Range"
  std::string value;  // "192.0.2.10", "198.51.100.0/24"
  std::string type;   // "ban" or "captcha"
  absl::Duration duration;
  std::string reason;
};

// A Local API bouncers can pull: add bouncers and decisions, delete decisions, restart.
class LapiBackend {
 public:
  virtual ~LapiBackend() = default;
  virtual std::string name() const = 0;
  virtual int port() const = 0;
  // The new bouncer's X-Api-Key.
  virtual absl::StatusOr<std::string> AddBouncer(const std::string& bouncer) = 0;
  // Returns an id for DeleteDecision.
  virtual absl::StatusOr<std::string> AddDecision(const LapiDecision& decision) = 0;
  virtual absl::Status DeleteDecision(const std::string& id) = 0;
  // Stops the API and starts it again on the same port with the same state.
  virtual absl::Status Restart() = 0;
  // Ships an sshd brute force from `ip` (six failed passwords, syslog format) that the shipped
  // sshd pack bans for an hour. kUnimplemented where the API reads no logs (crowdsec -no-cs).
  virtual absl::Status ShipSshAttack(const std::string& ip) {
    return absl::UnimplementedError("no log input");
  }
};

// Debian's crowdsec LAPI alone (`crowdsec -no-cs`) with a throwaway config and sqlite database in
// `dir` (no Central API), decisions through cscli. kNotFound when crowdsec is not installed.
absl::StatusOr<std::unique_ptr<LapiBackend>> StartCrowdsecLapi(const std::string& dir);
// palisaded with the shipped sshd pack and `bouncer_api { listen }` on a free port, its state
// file in `dir`; bouncers
// through Admin.AddBouncer, decisions through the Decisions API. `extra_config` is added to the
// config's top level. Needs //rules:packs in the test's data.
absl::StatusOr<std::unique_ptr<LapiBackend>> StartPalisadedLapi(
    const std::string& dir, const std::string& extra_config = "");

// A child process (a bouncer) with stdout and stderr in `log_file`; SIGTERM then SIGKILL at Stop
// or destruction.
class Child {
 public:
  static absl::StatusOr<std::unique_ptr<Child>> Spawn(const std::vector<std::string>& argv,
                                                      const std::string& log_file);
  ~Child();
  void Stop();
  // True while it runs (reaps it when it exited).
  bool Running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Runs `command` through /bin/sh; its stdout, or an error naming the command and its status.
absl::StatusOr<std::string> RunCommand(const std::string& command);

// Moves the whole process into a new network namespace with loopback up, so the firewall
// bouncer's nftables rules never touch the host. Call before any thread starts (namespaces are
// per thread). "" on success, else why it could not (not root, no user namespaces...).
std::string EnterPrivateNetworkNamespace();

std::string ReadFileOrEmpty(const std::string& path);

}  // namespace palisade::testing

#endif  // PALISADE_TESTS_E2E_BOUNCER_LAPI_H_
