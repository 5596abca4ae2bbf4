#include "services/server/auth.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

// Client i's token is "token-i"; `roles` applies to all.
palisade::v1::ApiConfig Clients(const std::vector<std::string>& names,
                                palisade::v1::ApiRole role = palisade::v1::API_ROLE_INGEST) {
  palisade::v1::ApiConfig api;
  for (size_t i = 0; i < names.size(); ++i) {
    palisade::v1::ApiClient* c = api.add_clients();
    c->set_name(names[i]);
    c->set_token_sha256(Authorizer::HashToken("token-" + std::to_string(i)));
    c->add_roles(role);
  }
  return api;
}

// A call's metadata with `header` as its authorization (the views point into `header`).
std::multimap<grpc::string_ref, grpc::string_ref> Authorization(const std::string& header) {
  return {{grpc::string_ref("authorization"), grpc::string_ref(header)}};
}

// A client's name keys what it holds (its share of the streams, its shipped positions), and the
// empty name is the anonymous client's (no api.clients), whose positions a configured client
// must not take over: refused. Entries of one name are one client: an old and a new token
// during a rotation share the client's positions and stream share.
TEST(AuthorizerTest, ANameIsRequiredAndEntriesOfOneNameAreOneClient) {
  prometheus::Registry registry;
  EXPECT_THAT(Authorizer::Create(Clients({"host-a", "host-b"}), registry), IsOk());
  EXPECT_THAT(Authorizer::Create(Clients({"host-a", ""}), registry),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("api.clients[1]: name is required")));
  absl::StatusOr<std::unique_ptr<Authorizer>> rotating =
      Authorizer::Create(Clients({"host-a", "host-b", "host-a"}), registry);
  ASSERT_THAT(rotating, IsOk());
  EXPECT_THAT((*rotating)->client_names(), UnorderedElementsAre("host-a", "host-b"));
  for (const std::string token : {"token-0", "token-2"}) {
    const std::string header = "Bearer " + token;
    std::string client;
    EXPECT_TRUE(
        (*rotating)->Check(Authorization(header), Role::kIngest, "Ingest.Ship", &client).ok());
    EXPECT_EQ(client, "host-a") << token;
  }
}

// An allowed call names its client; a refused one names no one, whatever `*client` held (a
// caller reusing the string must not go on as the client it named before).
TEST(AuthorizerTest, CheckNamesTheAllowedClientAndNoOneOnRefusal) {
  prometheus::Registry registry;
  palisade::v1::ApiConfig api = Clients({"host-a"});
  palisade::v1::ApiClient* reader = api.add_clients();
  reader->set_name("dash");
  reader->set_token_sha256(Authorizer::HashToken("token-dash"));
  reader->add_roles(palisade::v1::API_ROLE_READ);
  absl::StatusOr<std::unique_ptr<Authorizer>> auth = Authorizer::Create(api, registry);
  ASSERT_THAT(auth, IsOk());

  const std::string a = "Bearer token-0";
  std::string client = "stale";
  EXPECT_TRUE((*auth)->Check(Authorization(a), Role::kIngest, "Ingest.Ship", &client).ok());
  EXPECT_EQ(client, "host-a");
  EXPECT_TRUE((*auth)->Check(Authorization(a), Role::kIngest, "Ingest.Ship", nullptr).ok());

  const std::string unknown = "Bearer token-9";
  const std::string dash = "Bearer token-dash";
  const std::string bare = "token-0";
  const struct {
    std::multimap<grpc::string_ref, grpc::string_ref> metadata;
    grpc::StatusCode code;
  } refused[] = {
      {{}, grpc::StatusCode::UNAUTHENTICATED},
      {Authorization(bare), grpc::StatusCode::UNAUTHENTICATED},
      {Authorization(unknown), grpc::StatusCode::UNAUTHENTICATED},
      {Authorization(dash), grpc::StatusCode::PERMISSION_DENIED},  // read-only, calling Ship
  };
  for (const auto& [metadata, code] : refused) {
    client = "host-a";
    EXPECT_EQ((*auth)->Check(metadata, Role::kIngest, "Ingest.Ship", &client).error_code(), code);
    EXPECT_EQ(client, "") << static_cast<int>(code);
  }

  // Without clients: every call allowed, as the anonymous client "".
  prometheus::Registry other;
  absl::StatusOr<std::unique_ptr<Authorizer>> open =
      Authorizer::Create(palisade::v1::ApiConfig(), other);
  ASSERT_THAT(open, IsOk());
  EXPECT_TRUE((*open)->client_names().empty());
  client = "stale";
  EXPECT_TRUE((*open)->Check(Authorization(a), Role::kAdmin, "Decisions.Add", &client).ok());
  EXPECT_EQ(client, "");
}

}  // namespace
}  // namespace palisade
