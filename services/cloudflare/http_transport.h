// The HTTP seam under the Cloudflare client: HttpTransport is the interface, CurlTransport the
// libcurl implementation (connection reuse, TLS verification on, a timeout on every call). A
// call that is not idempotent (POST, PATCH), or that asks for it (HttpRequest::fresh_connection),
// goes out on a new connection, never a kept one: libcurl resends a request whose kept
// connection died, and reports only the second try.
// A transport failure (refused, reset, timed out, cut mid-reply) is kUnavailable; HTTP error
// statuses are not failures here: the client reads them. A reply is held in bounded memory: a
// body over CurlTransportOptions::max_reply_bytes (declared by Content-Length or streamed) or
// headers over max_header_bytes end the transfer with kOutOfRange naming the cap. That code is
// neither a throttle (kResourceExhausted) nor retried by the client: the same call would bring
// the same reply. A failure that came before any of the request left (the host or the proxy
// did not resolve, no connection was made) is marked so (TransportNeverSent): a call that
// changes state may be sent again after it, and after no other failure.
// Only http and https are spoken: a URL of another scheme (file://, ftp://) is kFailedPrecondition
// naming the scheme alone, marked never sent. No redirect is followed: a 3xx is the reply.
// Thread-safety: CurlTransport::Send may be called from any thread.
#ifndef PALISADE_SERVICES_CLOUDFLARE_HTTP_TRANSPORT_H_
#define PALISADE_SERVICES_CLOUDFLARE_HTTP_TRANSPORT_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace palisade {

struct HttpRequest {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  absl::Duration timeout = absl::Seconds(10);
  // Sent on a new connection, never a kept one, whatever the method: for a call a repeat must
  // not reach the server again (a token roll is a PUT, yet a resend retires the secret it
  // just got). POST and PATCH always are.
  bool fresh_connection = false;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// `status` (a transport failure) marked as one that came before any of the request left. Set by
// CurlTransport from libcurl's code, never from its text (which changes between versions); a
// fake transport marks its own failures with it.
absl::Status MarkTransportNeverSent(absl::Status status);
// Whether `status` was marked so: false for any other failure (a timeout, a reset, a reply cut
// off), which may have come after the server acted.
bool TransportNeverSent(const absl::Status& status);

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual absl::StatusOr<HttpResponse> Send(const HttpRequest& request) = 0;
};

struct CurlTransportOptions {
  // The Cloudflare replies Palisade reads are pages of at most 500 list items or 100 access
  // rules (well under 1 MiB); this leaves room and still bounds what a peer can make it hold.
  size_t max_reply_bytes = 8 * 1024 * 1024;
  // Every header line of one reply together (Cloudflare sends a few KiB).
  size_t max_header_bytes = 64 * 1024;
};

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(CurlTransportOptions options = CurlTransportOptions());
  ~CurlTransport() override;
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request) override;

 private:
  void* Acquire();
  void Release(void* handle);

  const CurlTransportOptions options_;
  absl::Mutex mu_;
  std::vector<void*> idle_ ABSL_GUARDED_BY(mu_);  // CURL* handles, kept for connection reuse
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_CLOUDFLARE_HTTP_TRANSPORT_H_
