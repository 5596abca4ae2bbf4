// Test helper for the Cloudflare client's callers' tests (client_test, token_vetter_test): an
// HttpTransport that answers every request with one canned status and body. Test-only; not
// thread-safe beyond what a const answer needs.
#ifndef PALISADE_SERVICES_CLOUDFLARE_SCRIPTED_TRANSPORT_FOR_TESTS_H_
#define PALISADE_SERVICES_CLOUDFLARE_SCRIPTED_TRANSPORT_FOR_TESTS_H_

#include <string>
#include <utility>

#include "services/cloudflare/http_transport.h"

namespace palisade::testing {

class ScriptedTransport final : public HttpTransport {
 public:
  ScriptedTransport(int status, std::string body) : status_(status), body_(std::move(body)) {}
  absl::StatusOr<HttpResponse> Send(const HttpRequest&) override {
    HttpResponse r;
    r.status = status_;
    r.body = body_;
    return r;
  }

 private:
  int status_;
  std::string body_;
};

}  // namespace palisade::testing

#endif  // PALISADE_SERVICES_CLOUDFLARE_SCRIPTED_TRANSPORT_FOR_TESTS_H_
