#include "services/server/metrics_https.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/text_serializer.h"
#include "services/common/bounded_http_server.h"
#include "services/common/bounded_task_queue.h"
#include "services/server/auth.h"

namespace palisade {
namespace {

// A scrape is a GET with a few headers: read up to this much of a request before the token is
// checked (httplib alone reads headers without a bound on their count).
constexpr size_t kMaxRequestBytes = 16 << 10;

// Compares every configured hash whatever matches first, in constant time (as Authorizer does):
// the time taken says nothing about how close a guess was.
bool KnownToken(const std::vector<std::string>& hashes, const std::string& authorization) {
  if (!absl::StartsWith(authorization, "Bearer ")) return false;
  const std::string hash = Authorizer::HashToken(authorization.substr(7));
  bool found = false;
  for (const std::string& h : hashes) {
    found |= h.size() == hash.size() && CRYPTO_memcmp(h.data(), hash.data(), hash.size()) == 0;
  }
  return found;
}

}  // namespace

bool MetricsProtected(const palisade::v1::TlsConfig& tls,
                      const palisade::v1::MetricsAuthConfig& auth) {
  return !auth.token_sha256().empty() ||
         (!tls.cert_file().empty() && !tls.client_ca_file().empty());
}

absl::Status CheckMetricsTls(const palisade::v1::TlsConfig& tls) {
  for (const std::string* f : {&tls.cert_file(), &tls.key_file()}) {
    if (f->empty() || !std::ifstream(*f)) {
      return absl::NotFoundError(absl::StrCat(
          "metrics_tls: cannot read \"", *f, "\" (cert_file and key_file are required)"));
    }
  }
  // httplib takes a client CA that does not load without a word, and then fails every
  // scrape's handshake.
  if (const std::string& ca = tls.client_ca_file(); !ca.empty()) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(ca.c_str(), "r"), &BIO_free);
    if (bio == nullptr) {
      ERR_clear_error();
      return absl::NotFoundError(
          absl::StrCat("metrics_tls.client_ca_file: cannot read \"", ca, "\""));
    }
    std::unique_ptr<X509, decltype(&X509_free)> cert(
        PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
    ERR_clear_error();
    if (cert == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("metrics_tls.client_ca_file: \"", ca,
                                                     "\" holds no certificate (PEM)"));
    }
  }
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()),
                                                         &SSL_CTX_free);
  const bool loads =
      ctx != nullptr &&
      SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file().c_str()) == 1 &&
      SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key_file().c_str(), SSL_FILETYPE_PEM) == 1 &&
      SSL_CTX_check_private_key(ctx.get()) == 1;
  ERR_clear_error();
  if (!loads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics_tls: the certificate \"", tls.cert_file(), "\" or the key \"", tls.key_file(),
        "\" does not load, or the key is not the certificate's"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MetricsHttpsServer>> MetricsHttpsServer::Start(
    const std::string& listen, const palisade::v1::TlsConfig& tls,
    const palisade::v1::MetricsAuthConfig& auth, std::shared_ptr<prometheus::Registry> registry) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_listen \"", listen, "\" is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::unique_ptr<MetricsHttpsServer> out(new MetricsHttpsServer());
  if (!tls.cert_file().empty()) {
    if (absl::Status s = CheckMetricsTls(tls); !s.ok()) return s;
    out->server_ = MakeBoundedHttpsServer(
        kMaxRequestBytes, tls.cert_file().c_str(), tls.key_file().c_str(),
        tls.client_ca_file().empty() ? nullptr : tls.client_ca_file().c_str());
    if (!out->server_->is_valid()) {
      return absl::InvalidArgumentError("metrics_tls: the certificate or key does not load");
    }
  } else {
    out->server_ = MakeBoundedHttpServer(kMaxRequestBytes);
  }
  // A bounded backlog (httplib 0.11's own pool queues connections without a bound): past
  // kQueuedConnections waiting, further ones wait in the kernel's listen backlog.
  MetricsHttpsServer* self = out.get();
  out->server_->new_task_queue = [self] {
    auto* queue = new BoundedTaskQueue(kThreads, kQueuedConnections);
    self->queue_ = queue;
    return queue;
  };
  std::vector<std::string> hashes(auth.token_sha256().begin(), auth.token_sha256().end());
  prometheus::Counter& refused = prometheus::BuildCounter()
                                     .Name("palisade_metrics_scrapes_refused_total")
                                     .Help("/metrics requests refused for a missing or unknown "
                                           "bearer token (metrics_auth).")
                                     .Register(*registry)
                                     .Add({});
  out->server_->Get("/metrics", [registry, hashes, &refused](const httplib::Request& req,
                                                             httplib::Response& res) {
    if (!hashes.empty() && !KnownToken(hashes, req.get_header_value("Authorization"))) {
      refused.Increment();
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer realm=\"palisade\"");
      res.set_content("send \"Authorization: Bearer <token>\" (metrics_auth)\n", "text/plain");
      return;
    }
    res.set_content(prometheus::TextSerializer().Serialize(registry->Collect()),
                    "text/plain; version=0.0.4");
  });
  out->port_ = port == 0 ? out->server_->bind_to_any_port(host)
                         : (out->server_->bind_to_port(host, port) ? port : -1);
  if (out->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", listen));
  }
  httplib::Server* server = out->server_.get();
  out->thread_ = std::thread([server] { server->listen_after_bind(); });
  // httplib's stop() does nothing until the server runs: wait for that, so the destructor
  // always stops it (a server destroyed at once waited for ever in join).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!server->is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  return out;
}

size_t MetricsHttpsServer::most_queued() const {
  BoundedTaskQueue* queue = queue_.load();
  return queue == nullptr ? 0 : queue->most_queued();
}

MetricsHttpsServer::~MetricsHttpsServer() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace palisade
