#include "services/server/metrics_https.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "prometheus/text_serializer.h"

namespace palisade {

absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> MetricsHttpsServer::Start(
    const std::string& listen, const palisade::v1::TlsConfig& tls,
    std::shared_ptr<prometheus::Registry> registry) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_listen \"", listen, "\" is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  for (const std::string* f : {&tls.cert_file(), &tls.key_file()}) {
    if (f->empty() || !std::ifstream(*f)) {
      return absl::NotFoundError(
          absl::StrCat("metrics_tls: cannot read \"", *f, "\" (cert_file and key_file are required)"));
    }
  }
  std::unique_ptr<MetricsHttpsServer> out(new MetricsHttpsServer());
  out->server_ = std::make_unique<httplib::SSLServer>(
      tls.cert_file().c_str(), tls.key_file().c_str(),
      tls.client_ca_file().empty() ? nullptr : tls.client_ca_file().c_str());
  if (!out->server_->is_valid()) {
    return absl::InvalidArgumentError("metrics_tls: the certificate or key does not load");
  }
  out->server_->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(prometheus::TextSerializer().Serialize(registry->Collect()),
                    "text/plain; version=0.0.4");
  });
  out->port_ = port == 0 ? out->server_->bind_to_any_port(host)
                         : (out->server_->bind_to_port(host, port) ? port : -1);
  if (out->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics_tls: cannot listen on ", listen));
  }
  httplib::SSLServer* server = out->server_.get();
  out->thread_ = std::thread([server] { server->listen_after_bind(); });
  return out;
}

MetricsHttpsServer::~MetricsHttpsServer() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace palisade
