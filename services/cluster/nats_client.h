// A connection to NATS JetStream, the transport of the cluster (issue 17; docs/ARCHITECTURE.md,
// "Cluster"). It does three things the cluster needs and nothing more:
//   - connects to the configured servers (optionally TLS with a CA file, and a NATS credentials
//     file), failing with a clear error that names the servers when none answers;
//   - makes sure a stream exists with the settings Palisade needs, and refuses a stream of that
//     name made by someone else with other settings, naming each setting that differs (it never
//     changes another's stream);
//   - publishes with a de-duplication id and waits for the stream's ack, so a retried publish is
//     stored once (the ack then says "duplicate" and gives the first copy's sequence).
// The wrapped libnats (Debian's libnats-dev 3.4) reconnects by itself; calls made while it is
// disconnected fail with kUnavailable and the caller decides (buffer, retry, count).
//
// Thread-safe: libnats connections and JetStream contexts may be shared between threads.
#ifndef PALISADE_SERVICES_CLUSTER_NATS_CLIENT_H_
#define PALISADE_SERVICES_CLUSTER_NATS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

// libnats' opaque handles (nats.h is included by the .cc only).
typedef struct __natsConnection natsConnection;
typedef struct __jsCtx jsCtx;
typedef struct __kvStore kvStore;

namespace palisade::cluster {

struct NatsOptions {
  // "nats://host:port" or "tls://host:port", tried in order.
  std::vector<std::string> servers;
  // TLS: the CA that signed the servers' certificates ("" = plain TCP unless a tls:// URL).
  std::string ca_file;
  // A NATS credentials file (user JWT and NKey seed); "" = none. Its content never reaches an
  // error message.
  std::string credentials_file;
  // The connection's name as the servers show it (e.g. the node id).
  std::string name;
  // For the first connection and for each request (stream info, publish ack).
  absl::Duration timeout = absl::Seconds(5);
};

// The settings of a stream Palisade owns. Compared field by field with an existing stream.
struct StreamSpec {
  std::string name;
  std::vector<std::string> subjects;
  int replicas = 1;
  absl::Duration max_age = absl::ZeroDuration();  // zero: kept until limits remove them
  // The stream's size on each server, at most; past it the oldest messages go first. 0: none.
  int64_t max_bytes = 0;
  // Publishes with the same id within this window are stored once.
  absl::Duration duplicate_window = absl::Minutes(2);
  bool memory_storage = false;  // false: file storage (survives a server restart)
};

class NatsClient {
 public:
  static absl::StatusOr<std::unique_ptr<NatsClient>> Connect(const NatsOptions& options);
  ~NatsClient();
  NatsClient(const NatsClient&) = delete;
  NatsClient& operator=(const NatsClient&) = delete;

  // Creates the stream, or checks that the existing one has these settings. kFailedPrecondition
  // naming every difference ("stream S exists with other settings: subjects [...] (want [...]),
  // ...") when it does not.
  absl::Status EnsureStream(const StreamSpec& spec);

  struct Ack {
    uint64_t sequence = 0;   // the message's sequence in the stream (the first copy's, if dup)
    bool duplicate = false;  // the stream already had a message with this id
  };
  // Publishes `data` to `subject` with de-duplication id `msg_id` and waits for the ack.
  absl::StatusOr<Ack> Publish(const std::string& subject, absl::string_view data,
                              const std::string& msg_id);

  // The KV bucket `bucket`, created with one value per key, `replicas` copies and, when `ttl`
  // is positive, keys dropped that long after their last write, when it does not exist yet.
  // One that exists with another number of replicas is refused (kFailedPrecondition naming
  // both); its TTL is not compared.
  // The caller owns the returned store (kvStore_Destroy). What `what` names leads an error.
  absl::StatusOr<kvStore*> OpenKeyValue(const std::string& bucket, int replicas,
                                        absl::Duration ttl, absl::string_view what);

  // Messages and last sequence of a stream (for tests and `cluster status`).
  struct StreamState {
    uint64_t messages = 0;
    uint64_t last_sequence = 0;
  };
  absl::StatusOr<StreamState> State(const std::string& stream);

  // For the components built on this connection (the lease table's KV bucket; the match
  // publisher makes its own JetStream context for its acknowledgement callback).
  jsCtx* jetstream() const { return js_; }
  natsConnection* connection() const { return nc_; }
  absl::Duration timeout() const { return timeout_; }

 private:
  NatsClient() = default;

  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  absl::Duration timeout_;
};

// `url` as it may be shown (errors, logs, status): a user and password or a token in front of
// the host ("nats://user:pass@host:port") become "***" ("nats://***@host:port").
std::string RedactedServerUrl(absl::string_view url);

// The error libnats gives for `status` (an int: natsStatus), as an absl::Status with `what` in
// front. Shared by the components of this package.
absl::Status NatsError(int status, absl::string_view what);

// One key of a KV bucket (OpenKeyValue): its value, nullopt when the bucket has none; and a
// write of it. `what` names the bucket's keys in errors ("cluster: reading <what> key K: ...").
absl::StatusOr<std::optional<std::string>> KvGet(kvStore* kv, const std::string& key,
                                                 absl::string_view what);
absl::Status KvPut(kvStore* kv, const std::string& key, absl::string_view value,
                   absl::string_view what);

}  // namespace palisade::cluster

#endif  // PALISADE_SERVICES_CLUSTER_NATS_CLIENT_H_
