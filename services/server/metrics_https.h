// /metrics over HTTPS (config `metrics_tls`), for when Prometheus scrapes across a network.
// prometheus-cpp's own server (civetweb) loads OpenSSL at run time and crashes with Debian's
// OpenSSL 3, so HTTPS is served by cpp-httplib instead, rendering the same registry with
// prometheus-cpp's text serializer. With client_ca_file, scrapers must present a certificate.
#ifndef PALISADE_SERVICES_SERVER_METRICS_HTTPS_H_
#define PALISADE_SERVICES_SERVER_METRICS_HTTPS_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "palisade/v1/config.pb.h"
#include "prometheus/registry.h"

namespace httplib {
class SSLServer;
}

namespace palisade {

class MetricsHttpsServer {
 public:
  // `listen` is host:port (port 0: any free port).
  static absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> Start(
      const std::string& listen, const palisade::v1::TlsConfig& tls,
      std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpsServer();
  int port() const { return port_; }

 private:
  MetricsHttpsServer() = default;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_METRICS_HTTPS_H_
