// Who may call what on the gRPC API: bearer tokens, each with roles (config `api.clients`),
// checked at the start of every method. Tokens are stored as SHA-256 hashes and compared in
// constant time; a call without a known token is UNAUTHENTICATED, one whose token lacks the
// method's role is PERMISSION_DENIED, and both are counted by method. With no clients
// configured every call is allowed (and palisaded only listens on loopback).
// An allowed call's client is named by the Check that found it (ApiClient.name, not empty):
// what a client holds (its streams' share of ApiLimits, its ShipDedup positions) is keyed by
// that name, never by the token or its hash. Entries of one name are one client (an old and a
// new token during a rotation share what it holds). With no clients configured there is one
// anonymous client, named "".
// Thread-safety: Check may be called concurrently.
#ifndef PALISADE_SERVICES_SERVER_AUTH_H_
#define PALISADE_SERVICES_SERVER_AUTH_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "palisade/v1/config.pb.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace palisade {

enum class Role { kIngest, kRead, kAdmin };

class Authorizer {
 public:
  // kInvalidArgument for a hash that is not 64 hex characters, a client without roles, or an
  // empty name (a name is whose positions and share a call uses; "" the anonymous client's).
  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(const palisade::v1::ApiConfig& config,
                                                            prometheus::Registry& registry);

  bool enabled() const { return !clients_.empty(); }
  // `method` is a metric label, e.g. "Decisions.Add".
  grpc::Status Check(const grpc::CallbackServerContext* context, Role needed,
                     const char* method) const {
    return Check(context, needed, method, nullptr);
  }
  // The same; when the call is allowed and `client` is set, `*client` is the name of the client
  // whose token it carries ("" with no clients configured: the anonymous client). A refused
  // call leaves it empty.
  grpc::Status Check(const grpc::CallbackServerContext* context, Role needed, const char* method,
                     std::string* client) const {
    return Check(context->client_metadata(), needed, method, client);
  }
  // The same with the call's metadata.
  grpc::Status Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                     Role needed, const char* method, std::string* client) const;

  // The configured clients' names, each once (entries of one name are one client); empty with
  // no clients configured (only the anonymous client, "").
  absl::flat_hash_set<std::string> client_names() const;

  // The SHA-256 of a token, as the config wants it.
  static std::string HashToken(absl::string_view token);

 private:
  struct Client {
    std::string name;
    std::array<uint8_t, 32> hash;
    bool ingest = false, read = false, admin = false;
  };
  explicit Authorizer(prometheus::Registry& registry);
  prometheus::Family<prometheus::Counter>& refused_;
  std::vector<Client> clients_;
};

// Services hold one of these; a null authorizer allows everything.
class Guarded {
 public:
  void set_authorizer(const Authorizer* auth) { auth_ = auth; }

  // The first thing every method does, before it reads its request (grpc_services.h): OK, or
  // the authorizer's refusal (counted).
  grpc::Status Allow(const grpc::CallbackServerContext* context, Role role,
                     const char* method) const {
    return Allow(context, role, method, nullptr);
  }
  // The same, and the allowed caller's client name in `*client` (Authorizer::Check; "" for the
  // anonymous client of an API without clients).
  grpc::Status Allow(const grpc::CallbackServerContext* context, Role role, const char* method,
                     std::string* client) const {
    if (auth_ != nullptr) return auth_->Check(context, role, method, client);
    if (client != nullptr) client->clear();
    return grpc::Status::OK;
  }

 private:
  const Authorizer* auth_ = nullptr;
};

// True for "127.0.0.1:…", "[::1]:…", "localhost:…", "unix:…".
bool IsLoopbackListen(absl::string_view listen);

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_AUTH_H_
