// The cluster's command channel (issue 17; docs/ARCHITECTURE.md, "Cluster"): requests that only
// the edge writer may carry out (a manual ban or unban, a feed sync) travel from any node to
// whichever node holds the `edge-writer` lease, over NATS request/reply on `palisade.commands`.
//
// CommandServer: run by the writer while it holds the lease (started when Ownership grants it,
// destroyed when it is lost, so a former writer stops answering at once). It subscribes in a
// queue group, so were two nodes to believe they hold the lease for a moment, each command
// still goes to one of them. Each command carries an id chosen by the caller; the server
// remembers the replies it gave (bounded in count and bytes), so a caller that retries after a
// lost reply gets the first reply and the command is carried out once. After a take-over the new
// writer does not know the old one's ids: a retried command is carried out again, which the
// table makes harmless (a second manual ban extends the first; a second unban is refused as
// already inactive). A kUnavailable reply is not remembered: it says the command could not be
// completed yet (the decision log did not take its change), so a retry is carried out again,
// which the handler must make harmless.
//
// CommandClient: used by every node, the writer included (one path for all). Call() sends the
// command and waits for the reply; while no writer answers (NATS' "no responders": the lease is
// between holders) or a reply is lost, it retries with the same id until its deadline, then
// fails with kUnavailable naming the subject. A command over NATS' payload limit fails at once
// with kInvalidArgument (no attempt can carry it).
//
// Messages: a request is "C1 <id> <kind>\n<body>"; a reply "OK\n<body>" or "ERR <code>\n<text>"
// (written here: a header line before opaque bytes; the body is the caller's serialized proto).
// What a sender writes is not trusted: a request over max_request_bytes, or not of that form,
// is refused with a reason and counted, and its body never reaches an error.
//
// Both take the connection they run on (NatsClient::connection(), or any natsConnection).
// Thread-safe: CommandServer's handler is called on one libnats thread, one command at a time;
// CommandClient::Call may be called from any thread.
#ifndef PALISADE_SERVICES_CLUSTER_COMMAND_CHANNEL_H_
#define PALISADE_SERVICES_CLUSTER_COMMAND_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

typedef struct __natsConnection natsConnection;
typedef struct __natsSubscription natsSubscription;
typedef struct __natsMsg natsMsg;

namespace palisade::cluster {

inline constexpr char kCommandSubject[] = "palisade.commands";

struct CommandServerOptions {
  std::string subject = kCommandSubject;
  // Carries out one command: `kind` (e.g. "decisions.add") and the caller's body; the reply's
  // body, or the error to send back (its message must name no secret).
  std::function<absl::StatusOr<std::string>(absl::string_view kind, absl::string_view body)> handle;
  size_t max_request_bytes = 1u << 20;
  // Replies remembered for retried commands: at most this many, and this many bytes.
  size_t remember = 10'000;
  size_t remember_bytes = 16u << 20;
};

class CommandServer {
 public:
  static absl::StatusOr<std::unique_ptr<CommandServer>> Start(natsConnection* nc,
                                                              CommandServerOptions options);
  // Stops answering (unsubscribes; a command being carried out finishes first).
  ~CommandServer();

  uint64_t handled() const { return handled_.load(); }    // carried out
  uint64_t repeated() const { return repeated_.load(); }  // retries answered from memory
  uint64_t refused() const { return refused_.load(); }    // malformed or too large

 private:
  explicit CommandServer(CommandServerOptions options) : options_(std::move(options)) {}
  // What libnats calls back with: it may call the handler once more after the subscription is
  // closed from another thread, so the server is reached through this gate, cleared (after the
  // running command) when the server goes. Owned by the server and by libnats' closure (a
  // shared_ptr freed once libnats says the subscription is done,
  // natsSubscription_SetOnCompleteCB).
  struct Gate {
    absl::Mutex mu;
    CommandServer* server ABSL_GUARDED_BY(mu) = nullptr;
  };
  static void OnMessage(natsConnection* nc, natsSubscription* sub, natsMsg* msg, void* gate);
  std::string Handle(absl::string_view request);
  void Remember(const std::string& id, const std::string& reply);

  const CommandServerOptions options_;
  natsSubscription* sub_ = nullptr;
  std::shared_ptr<Gate> gate_;
  natsConnection* nc_ = nullptr;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> replies_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // ids, oldest first
  size_t reply_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> handled_{0}, repeated_{0}, refused_{0};
};

struct CommandClientOptions {
  std::string subject = kCommandSubject;
  // Prefix of the commands' ids ("<node>:<random>:<n>"): unique across nodes and restarts.
  std::string node_id;
  // One attempt's wait for a reply; Call retries until its own deadline.
  absl::Duration attempt_timeout = absl::Seconds(2);
  absl::Duration retry = absl::Milliseconds(200);
};

class CommandClient {
 public:
  CommandClient(natsConnection* nc, CommandClientOptions options);

  // Sends the command to the writer and returns its reply's body, or the writer's error (same
  // code, its text). kUnavailable when no writer answered within `deadline`.
  absl::StatusOr<std::string> Call(absl::string_view kind, absl::string_view body,
                                   absl::Duration deadline);
  // The same with a caller-chosen id (a caller that retries across its own restarts).
  absl::StatusOr<std::string> CallWithId(const std::string& id, absl::string_view kind,
                                         absl::string_view body, absl::Duration deadline);

  uint64_t attempts() const { return attempts_.load(); }

 private:
  natsConnection* const nc_;
  const CommandClientOptions options_;
  const std::string id_prefix_;
  std::atomic<uint64_t> next_{0}, attempts_{0};
};

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_COMMAND_CHANNEL_H_
