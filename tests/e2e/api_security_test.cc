// API security on the real palisaded: every method refuses a call without a token
// (UNAUTHENTICATED), refuses a token without the method's role (PERMISSION_DENIED), and serves
// the right role; refusals are counted. A non-loopback listener without tokens refuses to
// start. gRPC over TLS, and mutual TLS, with certificates made by openssl for the test.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "google/protobuf/text_format.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/server/auth.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::ByteBufferString;
using ::palisade::testing::Daemon;
using ::palisade::testing::HttpGet;
using ::palisade::testing::MetricValue;
using ::palisade::testing::ScrapeMetric;
using ::testing::HasSubstr;

constexpr char kIngestToken[] = "ingest-token-0123456789abcdef0123456789";
constexpr char kReadToken[] = "read-token-0123456789abcdef0123456789abc";
constexpr char kAdminToken[] = "admin-token-0123456789abcdef0123456789ab";

std::string Tmp(const std::string& name) { return std::string(std::getenv("TEST_TMPDIR")) + "/" + name; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string WriteConfig(const std::string& name, const std::string& extra) {
  const std::string path = Tmp(name);
  std::ofstream out(path);
  out << "rule_files: \"" << std::getenv("TEST_SRCDIR") << "/palisade/rules/sshd.textproto\"\n"
      << "feeds { name: \"drop\" format: FEED_FORMAT_PLAIN }\n"
      << extra;
  return path;
}

std::string ClientsConfig() {
  return absl::StrCat(
      "api {\n",
      "  clients { name: \"shipper\" token_sha256: \"", Authorizer::HashToken(kIngestToken),
      "\" roles: API_ROLE_INGEST }\n",
      "  clients { name: \"siem\" token_sha256: \"", Authorizer::HashToken(kReadToken),
      "\" roles: API_ROLE_READ }\n",
      "  clients { name: \"ops\" token_sha256: \"", Authorizer::HashToken(kAdminToken),
      "\" roles: API_ROLE_ADMIN }\n", "}\n");
}

// One call of each method; returns its status code.
using Call = std::function<grpc::StatusCode(grpc::ClientContext*)>;

struct Method {
  std::string name;
  Role role;
  Call call;
};

std::vector<Method> Methods(const std::shared_ptr<grpc::Channel>& channel) {
  auto ingest = std::shared_ptr<palisade::v1::Ingest::Stub>(palisade::v1::Ingest::NewStub(channel));
  auto decisions =
      std::shared_ptr<palisade::v1::Decisions::Stub>(palisade::v1::Decisions::NewStub(channel));
  auto admin = std::shared_ptr<palisade::v1::Admin::Stub>(palisade::v1::Admin::NewStub(channel));
  auto feeds = std::shared_ptr<palisade::v1::Feeds::Stub>(palisade::v1::Feeds::NewStub(channel));
  auto events = std::shared_ptr<palisade::v1::Events::Stub>(palisade::v1::Events::NewStub(channel));
  return {
      {"Ingest.Ship", Role::kIngest,
       [ingest](grpc::ClientContext* ctx) {
         auto stream = ingest->Ship(ctx);
         palisade::v1::LogBatch batch;
         batch.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
         batch.add_records()->set_line("Mar  3 14:02:01 h sshd[1]: hello");
         stream->Write(batch);
         stream->WritesDone();
         palisade::v1::BatchAck ack;
         while (stream->Read(&ack)) {
         }
         return stream->Finish().error_code();
       }},
      {"Feeds.Push", Role::kIngest,
       [feeds](grpc::ClientContext* ctx) {
         palisade::v1::PushFeedResponse resp;
         auto w = feeds->Push(ctx, &resp);
         palisade::v1::FeedChunk chunk;
         chunk.set_feed("drop");
         chunk.set_data("198.51.100.1\n");
         chunk.set_last(true);
         w->Write(chunk);
         w->WritesDone();
         return w->Finish().error_code();
       }},
      {"Decisions.List", Role::kRead,
       [decisions](grpc::ClientContext* ctx) {
         palisade::v1::ListDecisionsResponse r;
         return decisions->List(ctx, {}, &r).error_code();
       }},
      {"Decisions.Get", Role::kRead,
       [decisions](grpc::ClientContext* ctx) {
         palisade::v1::GetDecisionRequest req;
         req.set_id("0000000000000000");
         palisade::v1::Decision d;
         return decisions->Get(ctx, req, &d).error_code();  // NOT_FOUND when allowed
       }},
      {"Feeds.List", Role::kRead,
       [feeds](grpc::ClientContext* ctx) {
         palisade::v1::ListFeedsResponse r;
         return feeds->List(ctx, {}, &r).error_code();
       }},
      {"Feeds.Get", Role::kRead,
       [feeds](grpc::ClientContext* ctx) {
         palisade::v1::GetFeedRequest req;
         req.set_name("drop");
         palisade::v1::GetFeedResponse r;
         return feeds->Get(ctx, req, &r).error_code();
       }},
      {"Events.Watch", Role::kRead,
       [events](grpc::ClientContext* ctx) {
         // Allowed, the watch runs until the deadline; refused, it ends at once. The deadline
         // is long enough that a refusal comes before it on a busy machine too.
         ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
         auto reader = events->Watch(ctx, {});
         palisade::v1::Event e;
         while (reader->Read(&e)) {
         }
         grpc::StatusCode code = reader->Finish().error_code();
         return code == grpc::StatusCode::DEADLINE_EXCEEDED ? grpc::StatusCode::OK : code;
       }},
      {"Admin.Status", Role::kRead,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::StatusResponse r;
         return admin->Status(ctx, {}, &r).error_code();
       }},
      {"Admin.TestRules", Role::kRead,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::TestRulesRequest req;
         req.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
         req.add_lines("Mar  3 14:02:01 h sshd[1]: hello");
         palisade::v1::TestRulesResponse r;
         return admin->TestRules(ctx, req, &r).error_code();
       }},
      {"Decisions.Add", Role::kAdmin,
       [decisions](grpc::ClientContext* ctx) {
         palisade::v1::AddDecisionRequest req;
         req.mutable_target()->set_value("198.51.100.77");
         req.mutable_duration()->set_seconds(60);
         palisade::v1::Decision d;
         return decisions->Add(ctx, req, &d).error_code();
       }},
      {"Decisions.Delete", Role::kAdmin,
       [decisions](grpc::ClientContext* ctx) {
         palisade::v1::DeleteDecisionRequest req;
         req.set_id("0000000000000000");
         palisade::v1::Decision d;
         return decisions->Delete(ctx, req, &d).error_code();  // NOT_FOUND when allowed
       }},
      {"Admin.ReloadRules", Role::kAdmin,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::ReloadRulesResponse r;
         return admin->ReloadRules(ctx, {}, &r).error_code();
       }},
      {"Admin.ReleaseHeld", Role::kAdmin,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::ReleaseHeldResponse r;
         // FAILED_PRECONDITION when allowed: no edge in this config.
         return admin->ReleaseHeld(ctx, {}, &r).error_code();
       }},
      // The bouncer methods: FAILED_PRECONDITION when allowed (no bouncer_api in this config),
      // answered after the role is checked. Adding one hands out its API key (a credential that
      // reads every decision), deleting one cuts an edge off: the admin role's; listing them
      // is a dashboard's.
      {"Admin.AddBouncer", Role::kAdmin,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::AddBouncerRequest req;
         req.set_name("edge-1");
         palisade::v1::AddBouncerResponse r;
         return admin->AddBouncer(ctx, req, &r).error_code();
       }},
      {"Admin.DeleteBouncer", Role::kAdmin,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::DeleteBouncerRequest req;
         req.set_name("edge-1");
         palisade::v1::DeleteBouncerResponse r;
         return admin->DeleteBouncer(ctx, req, &r).error_code();
       }},
      {"Admin.ListBouncers", Role::kRead,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::ListBouncersResponse r;
         return admin->ListBouncers(ctx, {}, &r).error_code();
       }},
      // Rolls the Cloudflare token (FAILED_PRECONDITION when allowed: no edge in this config).
      {"Admin.RotateToken", Role::kAdmin,
       [admin](grpc::ClientContext* ctx) {
         palisade::v1::RotateTokenResponse r;
         return admin->RotateToken(ctx, {}, &r).error_code();
       }},
  };
}

bool Refused(grpc::StatusCode c) {
  return c == grpc::StatusCode::UNAUTHENTICATED || c == grpc::StatusCode::PERMISSION_DENIED;
}

TEST(ApiSecurityTest, EveryMethodChecksTokenAndRole) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig("auth.textproto", ClientsConfig())});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  const std::vector<Method> methods = Methods(channel);
  ASSERT_EQ(methods.size(), 17u);  // every method of Ingest, Decisions, Admin, Feeds, Events
  int expected_denied = 0;
  for (const Method& m : methods) {
    SCOPED_TRACE(m.name);
    {
      grpc::ClientContext ctx;
      EXPECT_EQ(m.call(&ctx), grpc::StatusCode::UNAUTHENTICATED);
    }
    {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer not-a-known-token-0123456789abcdef");
      EXPECT_EQ(m.call(&ctx), grpc::StatusCode::UNAUTHENTICATED);
    }
    for (const auto& [token, role] : {std::pair<const char*, Role>{kIngestToken, Role::kIngest},
                                      {kReadToken, Role::kRead},
                                      {kAdminToken, Role::kAdmin}}) {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", std::string("Bearer ") + token);
      const grpc::StatusCode code = m.call(&ctx);
      const bool allowed = role == Role::kAdmin || role == m.role;
      if (allowed) {
        EXPECT_FALSE(Refused(code)) << token << " got " << code;
      } else {
        EXPECT_EQ(code, grpc::StatusCode::PERMISSION_DENIED) << token;
        ++expected_denied;
      }
    }
  }
  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "palisade_api_refused_total",
                        {"method=\"Decisions.Add\"", "reason=\"permission_denied\""}),
            2);
  EXPECT_EQ(MetricValue(*metrics, "palisade_api_refused_total",
                        {"method=\"Ingest.Ship\"", "reason=\"unauthenticated\""}),
            2);
  // Ingest's 2 methods deny the read token, read's 8 the ingest token, admin's 7 both.
  EXPECT_EQ(expected_denied, 2 + 8 + 7 * 2);
  EXPECT_EQ(MetricValue(*metrics, "palisade_api_refused_total",
                        {"method=\"Admin.AddBouncer\"", "reason=\"permission_denied\""}),
            2);
}

// api.max_streams was one pool for the process: a read-only token opened every slot with
// Events.Watch calls it never reads (each holding up to 16 MiB of queue), and every shipper's
// Ingest.Ship was refused (RESOURCE_EXHAUSTED): a read token blinded detection. A client holds
// at most its share of the pool (half by default); the shipper's Ship still gets a slot.
TEST(ApiSecurityTest, OneClientsStreamsCannotStarveAnothersShip) {
  const std::string config = absl::StrCat(
      "api {\n  max_streams: 4\n",
      "  clients { name: \"shipper\" token_sha256: \"", Authorizer::HashToken(kIngestToken),
      "\" roles: API_ROLE_INGEST }\n",
      "  clients { name: \"siem\" token_sha256: \"", Authorizer::HashToken(kReadToken),
      "\" roles: API_ROLE_READ }\n}\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig("share.textproto", config)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto events = palisade::v1::Events::NewStub(channel);
  // The read token asks for every slot; each Watch that got one runs (its reader waits), each
  // refused ends at once.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<palisade::v1::Event>>> watches;
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    contexts.back()->AddMetadata("authorization", std::string("Bearer ") + kReadToken);
    watches.push_back(events->Watch(contexts.back().get(), {}));
  }
  // Each Watch has either taken a slot or been refused (polled: the server handles them in
  // its own time).
  auto settled = [&] {
    const double open = ScrapeMetric(**daemon, "palisade_api_streams_open");
    double refusals = 0;
    for (const char* limit : {"max_streams", "max_streams_per_client"}) {
      refusals += std::max(0.0, ScrapeMetric(**daemon, "palisade_api_limit_refusals_total",
                                             {"method=\"Events.Watch\"",
                                              absl::StrCat("limit=\"", limit, "\"")}));
    }
    return open + refusals == 4;
  };
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (!settled() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(settled());
  // The shipper's Ship.
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  grpc::ClientContext ship_context;
  ship_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  ship_context.AddMetadata("authorization", std::string("Bearer ") + kIngestToken);
  auto ship = ingest->Ship(&ship_context);
  palisade::v1::LogBatch batch;
  batch.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  batch.add_records()->set_line("Mar  3 14:02:01 h sshd[1]: hello");
  ship->Write(batch);
  ship->WritesDone();
  palisade::v1::BatchAck ack;
  EXPECT_TRUE(ship->Read(&ack));
  while (ship->Read(&ack)) {
  }
  const grpc::Status shipped = ship->Finish();
  EXPECT_TRUE(shipped.ok()) << shipped.error_code() << ": " << shipped.error_message();
  // The read token's share is 2 of the 4: its other two calls were refused for it. The Ship's
  // slot is let go once the server is done with the call, which may come after the client saw
  // its end (polled: under ASan it came after the first scrape).
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_api_limit_refusals_total",
                         {"method=\"Events.Watch\"", "limit=\"max_streams_per_client\""}),
            2);
  const absl::Time ship_gone = absl::Now() + absl::Seconds(60);
  while (ScrapeMetric(**daemon, "palisade_api_streams_open") != 2 && absl::Now() < ship_gone) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(ScrapeMetric(**daemon, "palisade_api_streams_open"), 2);
  for (size_t i = 0; i < watches.size(); ++i) {
    contexts[i]->TryCancel();
    (void)watches[i]->Finish();
  }
}

// Feeds.Push with force skips the shrink and growth guards, a feed with a url is the operator's
// own pull, and a push-only to_edge feed's entries go to the Cloudflare list past the
// blast-radius guard's budget: each push needs the admin role, refused on the push's first
// chunk, naming why, unless the to_edge feed says ingest_may_push. A plain push to a push-only
// feed is an ingest client's, as before. Before, the ingest token could do all of them.
TEST(ApiSecurityTest, ForcedPushesAndPushesToPulledOrEdgeFeedsNeedTheAdminRole) {
  const std::string pulled = Tmp("pulled.txt");
  {
    std::ofstream out(pulled);
    out << "198.51.100.9\n";
  }
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
      {"--config=" +
       WriteConfig("push_roles.textproto",
                   absl::StrCat(ClientsConfig(), "feeds { name: \"pulled\" format: ",
                                "FEED_FORMAT_PLAIN url: \"file://", pulled,
                                "\" interval { seconds: 3600 } }\n",
                                "feeds { name: \"edge\" format: FEED_FORMAT_PLAIN to_edge: true }\n",
                                "feeds { name: \"edge_open\" format: FEED_FORMAT_PLAIN to_edge: "
                                "true ingest_may_push: true }\n"))});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto feeds = palisade::v1::Feeds::NewStub(
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials()));
  auto push = [&](const char* token, const std::string& feed, bool force) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    ctx.AddMetadata("authorization", std::string("Bearer ") + token);
    palisade::v1::PushFeedResponse resp;
    auto w = feeds->Push(&ctx, &resp);
    palisade::v1::FeedChunk chunk;
    chunk.set_feed(feed);
    chunk.set_force(force);
    chunk.set_data("198.51.100.1\n");
    chunk.set_last(true);
    w->Write(chunk);
    w->WritesDone();
    return w->Finish();
  };
  grpc::Status s = push(kIngestToken, "drop", false);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = push(kIngestToken, "drop", true);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "client \"shipper\" may not call Feeds.Push: a push with force (which skips the "
            "shrink and growth guards) needs the admin role");
  s = push(kIngestToken, "pulled", false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "client \"shipper\" may not call Feeds.Push: a push to feed \"pulled\", which is "
            "pulled from its url, needs the admin role");
  s = push(kIngestToken, "edge", false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "client \"shipper\" may not call Feeds.Push: a push to feed \"edge\", which goes to "
            "the edge (set ingest_may_push to let ingest clients push it), needs the admin role");
  s = push(kIngestToken, "edge_open", false);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = push(kAdminToken, "drop", true);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = push(kAdminToken, "pulled", false);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = push(kAdminToken, "edge", false);
  EXPECT_TRUE(s.ok()) << s.error_message();

  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "palisade_api_refused_total",
                        {"method=\"Feeds.Push\"", "reason=\"permission_denied\""}),
            3);
}

// Admin.TestRules on the running rules is a read-only (dashboard) token's; with a pack of the
// request's own it compiles the client's patterns and runs them over up to 200,000 lines on a
// gRPC thread, CPU only the admin role may spend. Before, the read token could.
TEST(ApiSecurityTest, TestingAPackOfTheRequestsOwnNeedsTheAdminRole) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig("test_rules_roles.textproto", ClientsConfig())});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto admin = palisade::v1::Admin::NewStub(
      grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials()));
  palisade::v1::RulePack pack;
  {
    std::ifstream in(absl::StrCat(std::getenv("TEST_SRCDIR"), "/palisade/rules/sshd.textproto"));
    std::stringstream text;
    text << in.rdbuf();
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text.str(), &pack));
  }
  auto test = [&](const char* token, bool with_pack, palisade::v1::TestRulesResponse* r) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    ctx.AddMetadata("authorization", std::string("Bearer ") + token);
    palisade::v1::TestRulesRequest req;
    req.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
    req.add_lines(
        "Mar  3 14:02:01 h sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2");
    if (with_pack) *req.mutable_pack() = pack;
    return admin->TestRules(&ctx, req, r);
  };
  palisade::v1::TestRulesResponse r;
  grpc::Status s = test(kReadToken, false, &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = test(kReadToken, true, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "client \"siem\" may not call Admin.TestRules: testing a pack of the request's own "
            "needs the admin role");
  r.Clear();
  s = test(kAdminToken, true, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.matched_lines(), 1u);
}

// Audit records revoke API tokens by id, so only an admin client may ship them (Decisions.Add
// already lets it revoke): before, an ingest token shipped a forged record as raw and palisaded
// decided to revoke the token it named; now the format is refused from it (PERMISSION_DENIED).
TEST(ApiSecurityTest, OnlyAnAdminMayShipAuditRecords) {
  const std::string extra = absl::StrCat(
      ClientsConfig(), "rule_files: \"", std::getenv("TEST_SRCDIR"),
      "/palisade/rules/cloudflare-audit.textproto\"\n",
      "cidr_sets { key: \"cloudflare_token_ips\" value { cidrs: \"192.0.2.0/24\" } }\n");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig("audit_roles.textproto", extra)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  auto ingest = palisade::v1::Ingest::NewStub(channel);
  auto decisions = palisade::v1::Decisions::NewStub(channel);
  auto ship = [&](const char* token, const std::string& token_id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    ctx.AddMetadata("authorization", std::string("Bearer ") + token);
    auto stream = ingest->Ship(&ctx);
    palisade::v1::LogBatch batch;
    batch.set_format(palisade::v1::LOG_FORMAT_CLOUDFLARE_AUDIT);
    batch.add_records()->set_line(absl::StrCat(
        R"({"actor":{"ip_address":"203.0.113.9","token_id":")", token_id, R"("}})"));
    stream->Write(batch);
    stream->WritesDone();
    palisade::v1::BatchAck ack;
    while (stream->Read(&ack)) {
    }
    return stream->Finish();
  };
  auto revoked = [&](const std::string& token_id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    ctx.AddMetadata("authorization", std::string("Bearer ") + kAdminToken);
    palisade::v1::ListDecisionsRequest req;
    req.set_target(token_id);
    palisade::v1::ListDecisionsResponse resp;
    grpc::Status s = decisions->List(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.decisions_size();
  };
  const std::string victim = "feedfacefeedfacefeedfacefeedface";
  grpc::Status s = ship(kIngestToken, victim);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(revoked(victim), 0);
  const std::string misused = "ed17574386854bf78a67040be0a770b0";
  s = ship(kAdminToken, misused);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(revoked(misused), 1);
}

// Every method that takes a request message: its path, its name in errors and metrics, the type
// of its request, its role, and whether it streams its answer.
struct RequestMethod {
  const char* path;
  const char* name;
  const char* request;
  Role role;
  bool server_streaming;
};
constexpr RequestMethod kRequestMethods[] = {
    {"/palisade.v1.Decisions/List", "Decisions.List", "ListDecisionsRequest", Role::kRead, false},
    {"/palisade.v1.Decisions/Get", "Decisions.Get", "GetDecisionRequest", Role::kRead, false},
    {"/palisade.v1.Decisions/Add", "Decisions.Add", "AddDecisionRequest", Role::kAdmin, false},
    {"/palisade.v1.Decisions/Delete", "Decisions.Delete", "DeleteDecisionRequest", Role::kAdmin,
     false},
    {"/palisade.v1.Admin/Status", "Admin.Status", "StatusRequest", Role::kRead, false},
    {"/palisade.v1.Admin/ReloadRules", "Admin.ReloadRules", "ReloadRulesRequest", Role::kAdmin,
     false},
    {"/palisade.v1.Admin/TestRules", "Admin.TestRules", "TestRulesRequest", Role::kRead, false},
    {"/palisade.v1.Admin/ReleaseHeld", "Admin.ReleaseHeld", "ReleaseHeldRequest", Role::kAdmin,
     false},
    {"/palisade.v1.Admin/AddBouncer", "Admin.AddBouncer", "AddBouncerRequest", Role::kAdmin, false},
    {"/palisade.v1.Admin/ListBouncers", "Admin.ListBouncers", "ListBouncersRequest", Role::kRead,
     false},
    {"/palisade.v1.Admin/DeleteBouncer", "Admin.DeleteBouncer", "DeleteBouncerRequest",
     Role::kAdmin, false},
    {"/palisade.v1.Admin/RotateToken", "Admin.RotateToken", "RotateTokenRequest", Role::kAdmin,
     false},
    {"/palisade.v1.Feeds/List", "Feeds.List", "ListFeedsRequest", Role::kRead, false},
    {"/palisade.v1.Feeds/Get", "Feeds.Get", "GetFeedRequest", Role::kRead, false},
    {"/palisade.v1.Events/Watch", "Events.Watch", "WatchRequest", Role::kRead, true},
};

const RequestMethod& Named(absl::string_view name) {
  for (const RequestMethod& m : kRequestMethods) {
    if (m.name == name) return m;
  }
  std::abort();
}

// Calls `m` with `body` as the request's bytes on the wire (a generic stub: nothing serialized
// or checked on the client) and `token` (none when null); its status, and the first message
// answered in `*answer`. A streaming answer is read to its end or the deadline.
grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const RequestMethod& m,
                     const std::string& body, const char* token, std::string* answer = nullptr,
                     std::chrono::seconds deadline = std::chrono::seconds(60)) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  if (token != nullptr) ctx.AddMetadata("authorization", std::string("Bearer ") + token);
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::Status status;
  if (!m.server_streaming) {
    absl::Notification done;
    stub.UnaryCall(&ctx, m.path, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
      status = std::move(s);
      done.Notify();
    });
    done.WaitForNotification();
    if (answer != nullptr) *answer = ByteBufferString(response);
    return status;
  }
  grpc::CompletionQueue cq;
  auto next = [&cq] {
    void* tag;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    return ok;
  };
  auto call = stub.PrepareCall(&ctx, m.path, &cq);
  call->StartCall(nullptr);
  next();
  call->Write(request, nullptr);
  next();
  call->WritesDone(nullptr);
  next();
  bool first = true;
  for (;;) {
    call->Read(&response, nullptr);
    if (!next()) break;
    if (first && answer != nullptr) *answer = ByteBufferString(response);
    first = false;
  }
  call->Finish(&status, nullptr);
  next();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// gRPC's callback API parses a request before the method's handler runs: a caller without a
// token could make palisaded parse api.max_message_bytes of it (unknown fields held ~30x in
// memory) before the handler refused the call. Every method takes its request as bytes and
// checks the token and the role first: bytes that are no protobuf at all get UNAUTHENTICATED or
// PERMISSION_DENIED (they are never read), and only an allowed caller learns they do not parse
// (INVALID_ARGUMENT naming the method). Before, each got UNIMPLEMENTED from gRPC's own parse,
// whoever called.
TEST(ApiSecurityTest, TokenIsCheckedBeforeTheRequestIsParsed) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig("parse.textproto", ClientsConfig())});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  const std::string garbage("\xff\xff\xff", 3);  // a tag whose varint never ends
  for (const RequestMethod& m : kRequestMethods) {
    SCOPED_TRACE(m.path);
    grpc::Status s = RawCall(channel, m, garbage, nullptr);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    s = RawCall(channel, m, garbage, "not-a-known-token-0123456789abcdef");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    s = RawCall(channel, m, garbage, m.role == Role::kAdmin ? kReadToken : kIngestToken);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
    s = RawCall(channel, m, garbage, kAdminToken);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_EQ(s.error_message(),
              absl::StrCat(m.name, ": the request is not a palisade.v1.", m.request));
  }
  // The same bytes path with a request that parses: served, and answered in full.
  std::string answer;
  grpc::Status s = RawCall(channel, Named("Admin.Status"), "", kReadToken, &answer);
  ASSERT_TRUE(s.ok()) << s.error_message();
  palisade::v1::StatusResponse status;
  ASSERT_TRUE(status.ParseFromString(answer));
  EXPECT_FALSE(status.version().empty());
  EXPECT_EQ(status.packs_size(), 1);
  // A Watch with a valid request runs until the client's deadline.
  s = RawCall(channel, Named("Events.Watch"), "", kReadToken, nullptr, std::chrono::seconds(2));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();

  absl::StatusOr<std::string> metrics = HttpGet((*daemon)->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricValue(*metrics, "palisade_api_refused_total",
                        {"method=\"Admin.Status\"", "reason=\"unauthenticated\""}),
            2);
  EXPECT_EQ(MetricValue(*metrics, "palisade_api_refused_total",
                        {"method=\"Events.Watch\"", "reason=\"permission_denied\""}),
            1);
}

// Server reflection is gRPC's own service: it takes no token, and its handler parses each request
// into a C++ protobuf (api.max_message_bytes of empty unknown fields held ~30x). With clients
// configured it is not served at all, so a caller without a token makes palisaded parse nothing;
// without clients (loopback only, every call allowed anyway) it is (standard_services_test).
// Before, it answered this caller with the list of services.
TEST(ApiSecurityTest, ReflectionIsNotServedWhenClientsAreConfigured) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig("reflection.textproto", ClientsConfig())});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  auto next = [&cq] {
    void* tag;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    return ok;
  };
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(nullptr);
  next();
  // list_services (field 7), as grpcurl asks it.
  grpc::Slice slice(std::string("\x3a\x00", 2));
  call->Write(grpc::ByteBuffer(&slice, 1), nullptr);
  next();
  call->WritesDone(nullptr);
  next();
  std::string listed;
  grpc::ByteBuffer response;
  for (;;) {
    call->Read(&response, nullptr);
    if (!next()) break;
    listed += ByteBufferString(response);
  }
  grpc::Status status;
  call->Finish(&status, nullptr);
  next();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  EXPECT_EQ(listed, "");
  EXPECT_TRUE(status.error_code() == grpc::StatusCode::UNIMPLEMENTED ||
              status.error_code() == grpc::StatusCode::UNAUTHENTICATED)
      << status.error_code() << ": " << status.error_message();
}

// A batch whose source or followed path is not UTF-8 (a file name on the shipper's host need not
// be) cannot be a protobuf string: the batch is refused, and the error names the field and why,
// told to an allowed caller. Before, it said only "the message is not a palisade.v1.LogBatch",
// for every batch of that file, with nothing for the operator to go on.
TEST(ApiSecurityTest, ABatchWithAFieldThatIsNotUtf8IsRefusedNamingTheField) {
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + WriteConfig("utf8.textproto", ClientsConfig())});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  const RequestMethod ship = {"/palisade.v1.Ingest/Ship", "Ingest.Ship", "LogBatch",
                              Role::kIngest, true};
  // A batch with `valid` in place of 0xE9 (é in Latin-1), serialized, then the byte swapped in.
  auto batch_with = [](const std::function<void(palisade::v1::LogBatch&)>& set) {
    palisade::v1::LogBatch batch;
    batch.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
    batch.add_records()->set_line("Mar  3 14:02:01 h sshd[1]: hello");
    set(batch);
    std::string wire = batch.SerializeAsString();
    const size_t at = wire.find("caf@");
    EXPECT_NE(at, std::string::npos);
    wire[at + 3] = '\xe9';
    return wire;
  };
  const std::string source = batch_with([](palisade::v1::LogBatch& b) {
    b.set_source("web-1:/var/log/caf@.log");
  });
  grpc::Status s = RawCall(channel, ship, source, kIngestToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "Ingest.Ship: LogBatch.source is not UTF-8 (byte 0xe9 at 18), as a protobuf string "
            "must be");
  const std::string path = batch_with([](palisade::v1::LogBatch& b) {
    b.set_source("web-1");
    b.mutable_origin()->set_shipper_id("web-1");
    b.mutable_origin()->set_path("/var/log/caf@.log");
    b.mutable_origin()->add_line_ends(33);
  });
  s = RawCall(channel, ship, path, kIngestToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "Ingest.Ship: LogBatch.origin.path is not UTF-8 (byte 0xe9 at 12), as a protobuf "
            "string must be");
  const std::string field = batch_with([](palisade::v1::LogBatch& b) {
    b.add_records()->set_line("Mar  3 14:02:02 h sshd[1]: hello");
    (*b.mutable_records(1)->mutable_fields())["unit"] = "caf@";
  });
  s = RawCall(channel, ship, field, kIngestToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(),
            "Ingest.Ship: LogBatch.records[1].fields[0].value is not UTF-8 (byte 0xe9 at 3), as a "
            "protobuf string must be");
  // Bytes that are no protobuf at all keep the error they had.
  s = RawCall(channel, ship, std::string("\xff\xff\xff", 3), kIngestToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(), "the message is not a palisade.v1.LogBatch");
}

TEST(ApiSecurityTest, NonLoopbackWithoutTokensRefusesToStart) {
  const std::string config = WriteConfig("open.textproto", "");
  const std::string log = Tmp("open.log");
  const int status = std::system(
      absl::StrCat("services/server/palisaded --config=", config,
                   " --grpc_listen=0.0.0.0:0 --metrics_listen=off --state_file=:memory: 2>", log)
          .c_str());
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_THAT(ReadFile(log), HasSubstr("is not a loopback address and api.clients is empty"));
  // A malformed hash is refused by name.
  const std::string bad = WriteConfig(
      "bad.textproto", "api { clients { name: \"x\" token_sha256: \"abc\" roles: API_ROLE_READ } }\n");
  const int bad_status = std::system(
      absl::StrCat("services/server/palisaded --config=", bad,
                   " --metrics_listen=off --state_file=:memory: 2>", log)
          .c_str());
  EXPECT_EQ(WEXITSTATUS(bad_status), 2);
  EXPECT_THAT(ReadFile(log), HasSubstr("api.clients[0] (\"x\"): token_sha256 must be 64"));
}

// Plain gRPC beyond loopback with tokens starts (a mesh may carry the TLS) but says that the
// tokens travel in clear, as /metrics does; on loopback it says nothing. Before, it was silent.
TEST(ApiSecurityTest, PlainGrpcBeyondLoopbackWarnsThatTokensTravelInClear) {
  const std::string config = WriteConfig("plain.textproto", ClientsConfig());
  for (const bool exposed : {true, false}) {
    SCOPED_TRACE(exposed);
    const std::string log = Tmp(exposed ? "plain_exposed.log" : "plain_loopback.log");
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
        {"--config=" + config, exposed ? "--grpc_listen=0.0.0.0:0" : "--grpc_listen=127.0.0.1:0"},
        "", log);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    // Said before the daemon listens, so it is in the log once Start returned.
    EXPECT_EQ(absl::StrContains(ReadFile(log), "gRPC takes bearer tokens over plain text"),
              exposed);
  }
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, by openssl.
void MakeCertificates() {
  const std::string d = Tmp("");
  const std::string script = absl::StrCat(
      "set -e; cd ", d, "; ",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key "
      "-out ca.pem 2>/dev/null; ",
      "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext; ",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=palisaded -keyout server.key -out server.csr "
      "2>/dev/null; ",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
      "-extfile san.ext -out server.pem 2>/dev/null; ",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr "
      "2>/dev/null; ",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
      "-out client.pem 2>/dev/null");
  {
    std::ofstream out(d + "certs.sh");
    out << script << "\n";
  }
  ASSERT_EQ(std::system(("bash " + d + "certs.sh").c_str()), 0);
}

// Admin.Status's code over `channel`. A refused handshake fails the call at once (UNAVAILABLE:
// not wait-for-ready); the deadline only bounds an accepted one, with room for a busy machine.
grpc::StatusCode StatusOver(const std::shared_ptr<grpc::Channel>& channel) {
  auto admin = palisade::v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  palisade::v1::StatusResponse r;
  return admin->Status(&ctx, {}, &r).error_code();
}

TEST(ApiSecurityTest, TlsAndMutualTls) {
  MakeCertificates();
  const std::string d = Tmp("");
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(
      {"--config=" + WriteConfig("tls.textproto",
                                 absl::StrCat("api { tls { cert_file: \"", d, "server.pem\" key_file: \"",
                                              d, "server.key\" client_ca_file: \"", d,
                                              "ca.pem\" } }\n",
                                              "metrics_tls { cert_file: \"", d, "server.pem\" key_file: \"", d,
                                              "server.key\" }\n"))});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(d + "ca.pem");
  // Without a client certificate: refused by mutual TLS.
  EXPECT_EQ(StatusOver(grpc::CreateChannel((*daemon)->grpc_address(), grpc::SslCredentials(ssl))),
            grpc::StatusCode::UNAVAILABLE);
  // Plain text to a TLS port: no.
  EXPECT_EQ(StatusOver(grpc::CreateChannel((*daemon)->grpc_address(),
                                           grpc::InsecureChannelCredentials())),
            grpc::StatusCode::UNAVAILABLE);
  ssl.pem_cert_chain = ReadFile(d + "client.pem");
  ssl.pem_private_key = ReadFile(d + "client.key");
  EXPECT_EQ(StatusOver(grpc::CreateChannel((*daemon)->grpc_address(), grpc::SslCredentials(ssl))),
            grpc::StatusCode::OK);

  // /metrics over HTTPS, verified against the CA; plain HTTP gets nothing.
  const std::string port = std::to_string((*daemon)->metrics_port());
  const std::string out = Tmp("metrics.txt");
  EXPECT_EQ(std::system(absl::StrCat("curl -sf --cacert ", d, "ca.pem https://127.0.0.1:", port,
                                     "/metrics -o ", out)
                            .c_str()),
            0);
  EXPECT_THAT(ReadFile(out), HasSubstr("palisade_build_info"));
  EXPECT_NE(std::system(absl::StrCat("curl -sf -m 5 http://127.0.0.1:", port, "/metrics -o /dev/null")
                            .c_str()),
            0);
}

}  // namespace
}  // namespace palisade
