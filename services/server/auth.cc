#include "services/server/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/ip.h"

namespace palisade {
namespace {

std::array<uint8_t, 32> Sha256(absl::string_view s) {
  std::array<uint8_t, 32> out;
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out.data());
  return out;
}

}  // namespace

std::string Authorizer::HashToken(absl::string_view token) {
  const std::array<uint8_t, 32> h = Sha256(token);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(h.data()), 32));
}

Authorizer::Authorizer(prometheus::Registry& registry)
    : refused_(prometheus::BuildCounter()
                   .Name("palisade_api_refused_total")
                   .Help("gRPC calls refused: no or unknown token (unauthenticated), or a token "
                         "without the method's role (permission_denied).")
                   .Register(registry)) {}

absl::StatusOr<std::unique_ptr<Authorizer>> Authorizer::Create(
    const palisade::v1::ApiConfig& config, prometheus::Registry& registry) {
  std::unique_ptr<Authorizer> auth(new Authorizer(registry));
  for (int i = 0; i < config.clients_size(); ++i) {
    const palisade::v1::ApiClient& c = config.clients(i);
    // The name is whose stream share and shipped positions a call uses, and the empty one the
    // anonymous client's (no clients). The config loader refuses it too, naming the file; this
    // holds for any other caller. Entries of one name are one client (a token rotation).
    if (c.name().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("api.clients[", i, "]: name is required"));
    }
    const std::string& hex = c.token_sha256();
    if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), [](char ch) {
          return absl::ascii_isdigit(ch) || (ch >= 'a' && ch <= 'f');
        })) {
      return absl::InvalidArgumentError(absl::StrCat(
          "api.clients[", i, "] (\"", c.name(),
          "\"): token_sha256 must be 64 lowercase hex characters (palisadectl hash-token)"));
    }
    if (std::none_of(c.roles().begin(), c.roles().end(), [](int r) {
          return r == palisade::v1::API_ROLE_INGEST || r == palisade::v1::API_ROLE_READ ||
                 r == palisade::v1::API_ROLE_ADMIN;
        })) {
      return absl::InvalidArgumentError(
          absl::StrCat("api.clients[", i, "] (\"", c.name(), "\"): no roles"));
    }
    Client client;
    client.name = c.name();
    const std::string bytes = absl::HexStringToBytes(hex);
    std::copy(bytes.begin(), bytes.end(), client.hash.begin());
    for (int r : c.roles()) {
      client.ingest |= r == palisade::v1::API_ROLE_INGEST;
      client.read |= r == palisade::v1::API_ROLE_READ;
      client.admin |= r == palisade::v1::API_ROLE_ADMIN;
    }
    auth->clients_.push_back(std::move(client));
  }
  return auth;
}

grpc::Status Authorizer::Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                               Role needed, const char* method, std::string* client) const {
  if (client != nullptr) client->clear();
  if (clients_.empty()) return grpc::Status::OK;
  auto it = metadata.find("authorization");
  absl::string_view header =
      it == metadata.end() ? absl::string_view()
                           : absl::string_view(it->second.data(), it->second.size());
  if (!absl::ConsumePrefix(&header, "Bearer ") || header.empty()) {
    refused_.Add({{"method", method}, {"reason", "unauthenticated"}}).Increment();
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "send \"authorization: Bearer <token>\"");
  }
  // Every client is compared, in constant time, whatever matches first.
  const std::array<uint8_t, 32> presented = Sha256(header);
  const Client* found = nullptr;
  for (const Client& c : clients_) {
    if (CRYPTO_memcmp(presented.data(), c.hash.data(), presented.size()) == 0) found = &c;
  }
  if (found == nullptr) {
    refused_.Add({{"method", method}, {"reason", "unauthenticated"}}).Increment();
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token");
  }
  const bool allowed = found->admin || (needed == Role::kIngest && found->ingest) ||
                       (needed == Role::kRead && found->read);
  if (!allowed) {
    refused_.Add({{"method", method}, {"reason", "permission_denied"}}).Increment();
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("client \"", found->name, "\" may not call ", method));
  }
  if (client != nullptr) *client = found->name;
  return grpc::Status::OK;
}

absl::flat_hash_set<std::string> Authorizer::client_names() const {
  absl::flat_hash_set<std::string> names;
  for (const Client& c : clients_) names.insert(c.name);
  return names;
}

bool IsLoopbackListen(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  size_t colon = listen.rfind(':');
  absl::string_view host = listen.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  if (host == "localhost") return true;
  std::optional<IpAddress> ip = IpAddress::Parse(host);
  if (!ip) return false;
  static const Cidr v4 = *Cidr::Parse("127.0.0.0/8");
  static const Cidr v6 = *Cidr::Parse("::1/128");
  return v4.Contains(*ip) || v6.Contains(*ip);
}

}  // namespace palisade
