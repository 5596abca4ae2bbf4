// Test helper: a real nats-server (Debian's nats-server 2.9, JetStream on) on a free loopback
// port, its store in the test's temporary directory, stopped (SIGTERM, then SIGKILL) when
// destroyed. Test-only; not thread-safe.
#ifndef PALISADE_SERVICES_CLUSTER_NATS_SERVER_FOR_TESTS_H_
#define PALISADE_SERVICES_CLUSTER_NATS_SERVER_FOR_TESTS_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace palisade::cluster {

class NatsServerForTests {
 public:
  // Starts it and waits (60 s at most) until it wrote its ports file.
  static absl::StatusOr<std::unique_ptr<NatsServerForTests>> Start();
  ~NatsServerForTests();
  // "nats://127.0.0.1:PORT".
  const std::string& url() const { return url_; }
  // SIGKILL, as a crash would.
  void Kill();
  // Starts it again (after Kill) on the same port with the same store.
  absl::Status Restart();

 private:
  absl::Status Spawn(const std::string& port);
  pid_t pid_ = -1;
  std::string dir_;
  std::string url_;
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_NATS_SERVER_FOR_TESTS_H_
