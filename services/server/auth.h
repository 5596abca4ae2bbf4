// Who may call what on the gRPC API: bearer tokens, each with roles (config `api.clients`),
// checked at the start of every method. Tokens are stored as SHA-256 hashes and compared in
// constant time; a call without a known token is UNAUTHENTICATED, one whose token lacks the
// method's role is PERMISSION_DENIED, and both are counted by method. With no clients
// configured every call is allowed (and palisaded only listens on loopback).
// Thread-safety: Check may be called concurrently.
#ifndef PALISADE_SERVICES_SERVER_AUTH_H_
#define PALISADE_SERVICES_SERVER_AUTH_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

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
  // kInvalidArgument for a hash that is not 64 hex characters or a client without roles.
  static absl::StatusOr<std::unique_ptr<Authorizer>> Create(const palisade::v1::ApiConfig& config,
                                                            prometheus::Registry& registry);

  bool enabled() const { return !clients_.empty(); }
  // `method` is a metric label, e.g. "Decisions.Add".
  grpc::Status Check(const grpc::CallbackServerContext* context, Role needed,
                     const char* method) const;

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
    return auth_ == nullptr ? grpc::Status::OK : auth_->Check(context, role, method);
  }

  // Whether callers are told apart by their tokens (clients are configured): without, any token
  // a caller sends is ignored and names no one.
  bool authenticates() const { return auth_ != nullptr && auth_->enabled(); }

 private:
  const Authorizer* auth_ = nullptr;
};

// True for "127.0.0.1:…", "[::1]:…", "localhost:…", "unix:…".
bool IsLoopbackListen(absl::string_view listen);

}  // namespace palisade

#endif  // PALISADE_SERVICES_SERVER_AUTH_H_
