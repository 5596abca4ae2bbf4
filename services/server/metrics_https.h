// /metrics served by cpp-httplib, for when the plain prometheus-cpp exposer is not enough: over
// HTTPS (config `metrics_tls`; with client_ca_file, scrapers must present a certificate), and/or
// behind bearer tokens (config `metrics_auth`: a scrape without a known token gets 401 and is
// counted in palisade_metrics_scrapes_refused_total).
// prometheus-cpp's own server (civetweb) loads OpenSSL at run time and crashes with Debian's
// OpenSSL 3, and cannot check a bearer token, so this serves the same registry with
// prometheus-cpp's text serializer.
// Thread-safety: the server runs on its own threads; Start and the destructor are called once.
#ifndef PALISADE_SERVICES_SERVER_METRICS_HTTPS_H_
#define PALISADE_SERVICES_SERVER_METRICS_HTTPS_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "palisade/v1/config.pb.h"
#include "prometheus/registry.h"

namespace httplib {
class Server;
}

namespace palisade {

class BoundedTaskQueue;

class MetricsHttpsServer {
 public:
  // `listen` is host:port (port 0: any free port). TLS when tls.cert_file is set (then key_file
  // is required), plain HTTP otherwise; bearer tokens when auth has any.
  static absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> Start(
      const std::string& listen, const palisade::v1::TlsConfig& tls,
      const palisade::v1::MetricsAuthConfig& auth, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpsServer();
  int port() const { return port_; }

  // Workers serving scrapes, and accepted connections waiting for one; past that, connections
  // wait in the kernel's listen backlog (BoundedTaskQueue).
  static constexpr int kThreads = 4;
  static constexpr int kQueuedConnections = 16;
  // The longest that queue has been (for tests: never above kQueuedConnections).
  size_t most_queued() const;

 private:
  MetricsHttpsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::atomic<BoundedTaskQueue*> queue_{nullptr};  // owned by server_ while it listens
  std::thread thread_;
  int port_ = 0;
};

// metrics_tls's files as Start loads them: cert_file and key_file readable, and the key the
// certificate's; client_ca_file, when set, readable and holding a certificate. kNotFound or
// kInvalidArgument naming the field and the file. palisaded checks them before it opens a port.
absl::Status CheckMetricsTls(const palisade::v1::TlsConfig& tls);

// Whether a /metrics listener is protected enough to face a network: bearer tokens, or TLS
// that asks scrapers for a certificate. TLS alone encrypts but lets anyone scrape.
bool MetricsProtected(const palisade::v1::TlsConfig& tls,
                      const palisade::v1::MetricsAuthConfig& auth);

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_METRICS_HTTPS_H_
