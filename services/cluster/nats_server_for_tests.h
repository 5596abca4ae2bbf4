// Test helper: real nats-servers (Debian's nats-server 2.9, JetStream on) on free loopback
// ports, their stores in the test's temporary directory, stopped (SIGTERM, then SIGKILL) when
// destroyed: one alone, or three in a JetStream cluster (for replicated streams and the loss of
// a server). Test-only; not thread-safe.
#ifndef PALISADE_SERVICES_CLUSTER_NATS_SERVER_FOR_TESTS_H_
#define PALISADE_SERVICES_CLUSTER_NATS_SERVER_FOR_TESTS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/cluster/nats_client.h"

namespace palisade::cluster {

class NatsServerForTests {
 public:
  // Starts it and waits (60 s at most) until it wrote its ports file.
  static absl::StatusOr<std::unique_ptr<NatsServerForTests>> Start();
  // Three servers routed into one JetStream cluster ("palisade-test"), each on its own free
  // client and cluster ports. The cluster elects its JetStream leader a moment later: callers
  // retry their first JetStream request.
  static absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>> StartCluster();
  ~NatsServerForTests();
  // "nats://127.0.0.1:PORT".
  const std::string& url() const { return url_; }
  // SIGKILL, as a crash would.
  void Kill();
  // Starts it again (after Kill) on the same port with the same store.
  absl::Status Restart();
  // The last `bytes` of the server's log, for a failing test's message.
  std::string LogTail(size_t bytes = 3000) const;

 private:
  // One try of StartCluster: INTERNAL when a server exited early (its route port taken).
  static absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>> TryStartCluster();
  static absl::StatusOr<std::unique_ptr<NatsServerForTests>> Make();
  absl::Status Spawn(const std::string& port);
  pid_t pid_ = -1;
  std::string dir_;
  std::vector<std::string> extra_args_;  // a cluster member's name, cluster port and routes
  std::string url_;
};

// The servers' URLs, in order (for NatsOptions::servers).
std::vector<std::string> UrlsOf(const std::vector<std::unique_ptr<NatsServerForTests>>& servers);

// Each server's log tail, headed by its URL (for a failing test's message).
std::string LogTails(const std::vector<std::unique_ptr<NatsServerForTests>>& servers);

// NatsClient::EnsureStream, tried again for 60 s while it fails: a fresh cluster elects its
// JetStream leader a moment after it forms.
absl::Status EnsureStreamOnceElected(NatsClient& client, const StreamSpec& spec);

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_NATS_SERVER_FOR_TESTS_H_
