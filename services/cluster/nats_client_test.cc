#include "services/cluster/nats_client.h"

#include <nats/nats.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/cluster/nats_server_for_tests.h"

namespace palisade::cluster {
namespace {

using ::testing::HasSubstr;

class NatsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = NatsServerForTests::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto client = NatsClient::Connect({.servers = {server_->url()}, .name = "test"});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }
  StreamSpec Matches() {
    return {.name = "MATCHES", .subjects = {"palisade.matches.*"}, .replicas = 1};
  }
  std::unique_ptr<NatsServerForTests> server_;
  std::unique_ptr<NatsClient> client_;
};

TEST_F(NatsClientTest, EnsureStreamCreatesThenAcceptsTheSameSettings) {
  ASSERT_TRUE(client_->EnsureStream(Matches()).ok());
  EXPECT_TRUE(client_->EnsureStream(Matches()).ok());
  auto state = client_->State("MATCHES");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->messages, 0u);
}

// A stream of that name made with other settings is never changed: refused, naming each setting.
TEST_F(NatsClientTest, AStreamMadeWithOtherSettingsIsRefusedNamingWhatDiffers) {
  StreamSpec theirs = Matches();
  theirs.subjects = {"other.>"};
  theirs.duplicate_window = absl::Seconds(30);
  theirs.max_bytes = 1 << 20;
  ASSERT_TRUE(client_->EnsureStream(theirs).ok());
  const absl::Status s = client_->EnsureStream(Matches());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("stream MATCHES exists with other settings"));
  EXPECT_THAT(s.message(), HasSubstr("subjects [other.>] (want [palisade.matches.*])"));
  EXPECT_THAT(s.message(), HasSubstr("duplicate_window 30s (want 2m)"));
  EXPECT_THAT(s.message(), HasSubstr("max_bytes 1048576 (want none)"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("replicas")));
}

// A KV bucket made with fewer copies than the config asks for is refused, naming both, as a
// stream with other settings is: used as it was, the leases, windows or feeds it holds would
// be lost with one server though the operator configured three.
TEST_F(NatsClientTest, AKeyValueBucketWithOtherReplicasIsRefused) {
  absl::StatusOr<kvStore*> made = client_->OpenKeyValue("b", 1, absl::ZeroDuration(), "test");
  ASSERT_TRUE(made.ok()) << made.status();
  kvStore_Destroy(*made);
  absl::StatusOr<kvStore*> same = client_->OpenKeyValue("b", 1, absl::Minutes(1), "test");
  ASSERT_TRUE(same.ok()) << same.status();  // its TTL is not compared (leases: the term's)
  kvStore_Destroy(*same);
  absl::StatusOr<kvStore*> other = client_->OpenKeyValue("b", 3, absl::ZeroDuration(), "test");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition) << other.status();
  EXPECT_THAT(other.status().message(), HasSubstr("test b exists with replicas 1 (want 3)"));
  if (other.ok()) kvStore_Destroy(*other);
}

// A publish retried with the same id (the ack was lost, say) is stored once.
TEST_F(NatsClientTest, ARetriedPublishWithTheSameIdIsStoredOnce) {
  ASSERT_TRUE(client_->EnsureStream(Matches()).ok());
  auto first = client_->Publish("palisade.matches.3", "m1", "node-a:17");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->duplicate);
  auto again = client_->Publish("palisade.matches.3", "m1", "node-a:17");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->sequence, first->sequence);
  auto other = client_->Publish("palisade.matches.3", "m2", "node-a:18");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->sequence, first->sequence + 1);
  auto state = client_->State("MATCHES");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->messages, 2u);
}

TEST_F(NatsClientTest, APublishToASubjectNoStreamTakesFails) {
  ASSERT_TRUE(client_->EnsureStream(Matches()).ok());
  auto r = client_->Publish("elsewhere", "x", "id-1");
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("publishing to elsewhere"));
}

// Nobody listening: a clear error naming the servers, not a hang.
TEST(NatsClientConnectTest, NoServerIsAClearError) {
  auto server = NatsServerForTests::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string url = (*server)->url();
  server->reset();  // stopped: its port now refuses
  auto client = NatsClient::Connect({.servers = {url}, .timeout = absl::Seconds(2)});
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(client.status().message(), HasSubstr(absl::StrCat("nats: connecting to ", url)));
  EXPECT_FALSE(NatsClient::Connect({}).ok());
}

// A server URL may carry a user and password, or a token ("nats://user:pass@host:port"), which
// the config accepts: the error names the server, never what is before its '@'.
TEST(NatsClientConnectTest, CredentialsInAServerUrlAreNotInTheError) {
  auto server = NatsServerForTests::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string url = (*server)->url();
  server->reset();  // stopped: its port now refuses
  const std::string hostport = url.substr(url.find("://") + 3);
  auto client =
      NatsClient::Connect({.servers = {absl::StrCat("nats://alice:pw-SECRET1@", hostport),
                                       absl::StrCat("nats://tok-SECRET2@", hostport),
                                       absl::StrCat("nats://bob:p/w?#-SECRET3@", hostport)},
                           .timeout = absl::Seconds(2)});
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(client.status().message(), HasSubstr(hostport));
  EXPECT_THAT(client.status().message(), ::testing::Not(HasSubstr("SECRET")));
  EXPECT_THAT(client.status().message(), ::testing::Not(HasSubstr("alice")));
  EXPECT_EQ(RedactedServerUrl("nats://bob:p/w?#-SECRET3@h:4222"), "nats://***@h:4222");
  EXPECT_EQ(RedactedServerUrl("tls://h:4222"), "tls://h:4222");
}

// The credentials file's content is a secret: a bad one is named by its path only.
TEST(NatsClientConnectTest, ABadCredentialsFileIsNamedNotPrinted) {
  auto server = NatsServerForTests::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string creds = absl::StrCat(std::getenv("TEST_TMPDIR"), "/bad.creds");
  FILE* f = std::fopen(creds.c_str(), "w");
  std::fputs("SUAGARBAGESEEDSECRET-0123456789\n", f);
  std::fclose(f);
  auto client = NatsClient::Connect({.servers = {(*server)->url()}, .credentials_file = creds});
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(client.status().message(), HasSubstr(creds));
  EXPECT_THAT(client.status().message(), ::testing::Not(HasSubstr("SUAGARBAGE")));
}

}  // namespace
}  // namespace palisade::cluster
