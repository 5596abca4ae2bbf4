#include "services/bouncer_api/bouncer_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <zlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "prometheus/text_serializer.h"
#include "services/common/header_flood_for_tests.h"
#include "services/common/clock.h"
#include "services/common/ip.h"
#include "services/common/status_matchers.h"
#include "services/store/sql_for_tests.h"

namespace palisade {
namespace {

using ::nlohmann::json;
using ::palisade::testing::FloodHeaders;
using ::palisade::testing::IsOk;
using ::palisade::testing::IsOkAndHolds;
using ::palisade::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

std::string FreshPath(const std::string& name) {
  std::string p = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((p + suffix).c_str());
  return p;
}

std::string Serialized(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

// palisaded's pieces as it wires them: a store file, the decision table restored from it, and
// the bouncer API attached to the table and serving on a free loopback port. Destroying one and
// building another on the same file is a restart.
// `never_ban`: set before Attach, as palisaded does at start.
struct Daemon {
  Daemon(const std::string& path, SimulatedClock& clock, palisade::v1::BouncerApiConfig config = {},
         const CidrSet* never_ban = nullptr,
         const std::function<void(BouncerApi&)>& before_start = nullptr)
      : table(clock) {
    store = *Store::Open(path);
    table.SetStore(store.get(), {});
    EXPECT_THAT(table.Restore(), IsOk());
    config.set_listen("127.0.0.1:0");
    auto created = BouncerApi::Create(config, clock, store.get(), registry);
    EXPECT_THAT(created, IsOk());
    api = *std::move(created);
    if (never_ban != nullptr) api->SetNeverBan(*never_ban);
    EXPECT_THAT(api->Attach(table), IsOk());
    if (before_start) before_start(*api);
    EXPECT_THAT(api->Start(), IsOk());
  }
  ~Daemon() { api.reset(); }

  std::string Ban(const std::string& value, absl::Duration d = absl::Hours(4),
                  palisade::v1::TargetKind kind = palisade::v1::TARGET_KIND_IP,
                  palisade::v1::Action action = palisade::v1::ACTION_BLOCK) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(kind);
    req.mutable_target()->set_value(value);
    req.set_action(action);
    req.mutable_duration()->set_seconds(absl::ToInt64Seconds(d));
    req.set_reason("by hand");
    absl::StatusOr<palisade::v1::Decision> made = table.AddManual(req);
    EXPECT_THAT(made, IsOk());
    return made.ok() ? made->id() : "";
  }

  // GET path (with its query) with `key`; the status and the body.
  std::pair<int, std::string> Get(const std::string& target, const std::string& key,
                                  const std::string& user_agent = "crowdsec-test/v1") {
    httplib::Client client("127.0.0.1", api->port());
    httplib::Headers headers = {{"User-Agent", user_agent}};
    if (!key.empty()) headers.emplace("X-Api-Key", key);
    httplib::Result r = client.Get(target.c_str(), headers);
    // A pull is recorded once its answer was written, which the client may see first: what the
    // test checks next (a position, a metric, the next pull of another bouncer) follows it.
    EXPECT_TRUE(api->WaitForAnswersForTesting(absl::Seconds(60)));
    if (!r) return {-1, ""};
    return {r->status, r->body};
  }
  json Pull(const std::string& key, bool startup = false, const std::string& extra = "") {
    auto [status, body] =
        Get(absl::StrCat("/v1/decisions/stream?startup=", startup ? "true" : "false", extra), key);
    EXPECT_EQ(status, 200) << body;
    return json::parse(body, nullptr, false);
  }
  std::string Metrics() { return Serialized(registry); }

  prometheus::Registry registry;
  std::unique_ptr<Store> store;
  DecisionTable table;
  std::unique_ptr<BouncerApi> api;
};

// palisaded's pieces as Daemon wires them, but not serving: no ticker either, so that every
// change, flush, fold and trim is one the test makes. Destroying one and building another on the
// same file is a restart. The API's log lines are kept (`lines`).
struct Attached {
  Attached(const std::string& path, SimulatedClock& clock) : table(clock) {
    store = *Store::Open(path);
    table.SetStore(store.get(), {});
    EXPECT_THAT(table.Restore(), IsOk());
    palisade::v1::BouncerApiConfig config;
    config.set_listen("127.0.0.1:0");
    auto created =
        BouncerApi::Create(config, clock, store.get(), registry, [this](const std::string& line) {
          absl::MutexLock lock(&lines_mu);
          lines.push_back(line);
        });
    EXPECT_THAT(created, IsOk());
    api = *std::move(created);
    EXPECT_THAT(api->Attach(table), IsOk());
  }

  std::string Ban(const std::string& value) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    req.mutable_target()->set_value(value);
    req.set_action(palisade::v1::ACTION_BLOCK);
    req.mutable_duration()->set_seconds(4 * 3600);
    req.set_reason("by hand");
    absl::StatusOr<palisade::v1::Decision> made = table.AddManual(req);
    EXPECT_THAT(made, IsOk());
    return made.ok() ? made->id() : "";
  }
  // The log lines that contain `part`.
  int64_t LinesWith(absl::string_view part) {
    absl::MutexLock lock(&lines_mu);
    return std::count_if(lines.begin(), lines.end(),
                         [&](const std::string& l) { return absl::StrContains(l, part); });
  }

  absl::Mutex lines_mu;
  std::vector<std::string> lines ABSL_GUARDED_BY(lines_mu);
  prometheus::Registry registry;
  std::unique_ptr<Store> store;
  DecisionTable table;
  std::unique_ptr<BouncerApi> api;
};

BouncerRequest Request(const std::string& path, const std::string& key,
                       std::multimap<std::string, std::string> params) {
  BouncerRequest r;
  r.path = path;
  r.target_bytes = path.size() + 32;
  r.params = std::move(params);
  r.api_key = key;
  r.address = "127.0.0.1";
  r.user_agent = "crowdsec-test/v1";
  return r;
}

// A client connection on a plain socket, for what httplib's client does not do: send part of a
// request, or keep a connection open and idle.
class RawConnection {
 public:
  // `receive_buffer` > 0: SO_RCVBUF, set before connecting so that it bounds the window the
  // server may fill (a reader that reads nothing then holds a large answer in the server's send).
  // `from`: the local address to connect from (a loopback one: 127.0.0.0/8 is all on lo).
  explicit RawConnection(int port, int receive_buffer = 0, const char* from = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      EXPECT_EQ(::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer)),
                0);
    }
    if (from != nullptr) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      inet_pton(AF_INET, from, &local.sin_addr);
      EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)), 0);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  }
  ~RawConnection() { ::close(fd_); }

  // Whether it was sent whole (not once the server closed the connection).
  bool Send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // Reads what the server sent within `wait`; closed() once it closed the connection.
  void Read(absl::Duration wait) {
    pollfd p{fd_, POLLIN, 0};
    if (closed_ || ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(wait))) <= 0) return;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) {
      closed_ = true;
    } else {
      got_.append(buf, static_cast<size_t>(n));
    }
  }
  // Reads until a whole answer (headers and Content-Length bytes) came, the connection closed
  // or 30 s passed (a bound on what is expected at once); the answer, taken from got().
  std::string ReadAnswer() {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    for (;;) {
      const size_t end = got_.find("\r\n\r\n");
      if (end != std::string::npos) {
        const size_t at = got_.find("Content-Length: ");
        size_t length = 0;
        if (at != std::string::npos && at < end) length = std::stoul(got_.substr(at + 16));
        if (got_.size() >= end + 4 + length) {
          std::string answer = got_.substr(0, end + 4 + length);
          got_.erase(0, answer.size());
          return answer;
        }
      }
      if (closed_ || absl::Now() > give_up) return "";
      Read(absl::Milliseconds(100));
    }
  }
  bool closed() const { return closed_; }
  const std::string& got() const { return got_; }

 private:
  int fd_ = -1;
  bool closed_ = false;
  std::string got_;
};

// `n` feed addresses (~400 bytes each as served) decided at once: a stream answer far larger
// than a small reader's buffers.
void SyncLargeFeed(DecisionTable& table, int n) {
  std::vector<DecisionTable::FeedTarget> feed(n);
  for (int i = 0; i < n; ++i) {
    feed[i].target.set_kind(palisade::v1::TARGET_KIND_IP);
    feed[i].target.set_value(absl::StrCat("11.", i / 65536, ".", i / 256 % 256, ".", i % 256));
    feed[i].reason = std::string(250, 'r');
  }
  palisade::v1::DecisionSpec spec;
  spec.set_action(palisade::v1::ACTION_BLOCK);
  spec.set_actuator(palisade::v1::ACTUATOR_IP_LIST);
  spec.mutable_duration()->set_seconds(24 * 3600);
  ASSERT_THAT(table.SyncFeed(feed, spec, absl::InfinitePast()), SizeIs(n));
}

// Sends a stream pull on `reader` and waits (60 s at most, a bound) for the answer's head: the
// handler returned and the body is being written.
void StartPull(RawConnection& reader, const std::string& key, bool startup) {
  ASSERT_TRUE(reader.Send(absl::StrCat("GET /v1/decisions/stream?startup=",
                                       startup ? "true" : "false", " HTTP/1.1\r\n",
                                       "Host: palisade\r\nX-Api-Key: ", key, "\r\n\r\n")));
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!absl::StrContains(reader.got(), "\r\n\r\n") && !reader.closed() &&
         absl::Now() < give_up) {
    reader.Read(absl::Milliseconds(100));
  }
  ASSERT_THAT(reader.got(), HasSubstr("HTTP/1.1 200"));
}

// The values of a stream list (null: none).
std::set<std::string> Values(const json& list) {
  std::set<std::string> out;
  if (list.is_null()) return out;
  for (const json& d : list) out.insert(d["value"].get<std::string>());
  return out;
}

TEST(GoDurationTest, WritesWhatGoWrites) {
  EXPECT_EQ(GoDuration(absl::ZeroDuration()), "0s");
  EXPECT_EQ(GoDuration(absl::Milliseconds(999)), "999ms");
  EXPECT_EQ(GoDuration(absl::Microseconds(1500)), "1.5ms");
  EXPECT_EQ(GoDuration(absl::Microseconds(800)), "800\u00b5s");
  EXPECT_EQ(GoDuration(absl::Nanoseconds(7)), "7ns");
  EXPECT_EQ(GoDuration(absl::Nanoseconds(3 * 3600'000'000'000LL + 59 * 60'000'000'000LL +
                                         57'079'254'260LL)),
            "3h59m57.07925426s");
  EXPECT_EQ(GoDuration(-absl::Nanoseconds(1'269'024'417)), "-1.269024417s");
  EXPECT_EQ(GoDuration(absl::Seconds(59)), "59s");
  EXPECT_EQ(GoDuration(absl::Seconds(60)), "1m0s");
  EXPECT_EQ(GoDuration(absl::Hours(1)), "1h0m0s");
  EXPECT_EQ(GoDuration(absl::Hours(4) - absl::Seconds(2) + absl::Milliseconds(500)), "3h59m58.5s");
  EXPECT_EQ(GoDuration(absl::Hours(200) + absl::Seconds(1)), "200h0m1s");
  EXPECT_EQ(GoDuration(-absl::Seconds(2)), "-2s");
  EXPECT_EQ(GoDuration(-absl::Minutes(3) - absl::Seconds(2)), "-3m2s");
}

TEST(BouncerApiConfigTest, DefaultsAndErrorsNamingTheField) {
  auto c = BouncerApiConfigWithDefaults({});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->listen(), "127.0.0.1:8081");
  EXPECT_EQ(c->max_query_bytes(), 2048u);
  EXPECT_EQ(c->stale_after().seconds(), 300);
  EXPECT_EQ(c->deletion_retention().seconds(), 7 * 86400);
  // Half the 8 workers per address; off below 4 workers; 0 stays off.
  EXPECT_EQ(c->max_connections_per_address(), 4u);
  palisade::v1::BouncerApiConfig few;
  few.set_max_concurrent_requests(3);
  EXPECT_EQ(BouncerApiConfigWithDefaults(few)->max_connections_per_address(), 0u);
  few.set_max_concurrent_requests(4);
  EXPECT_EQ(BouncerApiConfigWithDefaults(few)->max_connections_per_address(), 2u);
  few.set_max_connections_per_address(0);
  EXPECT_EQ(BouncerApiConfigWithDefaults(few)->max_connections_per_address(), 0u);
  palisade::v1::BouncerApiConfig bad;
  bad.set_max_concurrent_requests(4);
  bad.set_max_connections_per_address(4);
  EXPECT_THAT(BouncerApiConfigWithDefaults(bad).status().message(),
              HasSubstr("bouncer_api.max_connections_per_address"));
  bad.Clear();
  bad.set_max_query_bytes(10);
  EXPECT_THAT(BouncerApiConfigWithDefaults(bad).status().message(),
              HasSubstr("bouncer_api.max_query_bytes"));
  bad.Clear();
  bad.set_listen("nowhere");
  EXPECT_THAT(BouncerApiConfigWithDefaults(bad).status().message(),
              HasSubstr("bouncer_api.listen"));
  bad.Clear();
  bad.mutable_tls()->set_cert_file("/x.pem");
  EXPECT_THAT(BouncerApiConfigWithDefaults(bad).status().message(), HasSubstr("bouncer_api.tls"));
  bad.Clear();
  bad.mutable_stale_after()->set_seconds(0);
  bad.mutable_stale_after()->set_nanos(1000);
  EXPECT_THAT(BouncerApiConfigWithDefaults(bad).status().message(),
              HasSubstr("bouncer_api.stale_after"));
}

TEST(BouncerApiTest, KeysAuthenticateAndAreStoredHashed) {
  SimulatedClock clock;
  const std::string path = FreshPath("auth.db");
  Daemon d(path, clock);
  absl::StatusOr<std::string> key = d.api->AddBouncer("fw");
  ASSERT_THAT(key, IsOk());
  EXPECT_EQ(key->size(), 64u);
  EXPECT_THAT(d.api->AddBouncer("fw"), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(d.api->AddBouncer("bad name"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(d.api->AddBouncer(std::string(65, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument));

  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=true", ""),
            std::make_pair(403, std::string("{\"message\":\"access forbidden\"}")));
  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=true", *key + "x").first, 403);
  EXPECT_EQ(d.Get("/v1/decisions?ip=1.2.3.4", "nope").first, 403);
  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=true", *key).first, 200);

  // The key is nowhere in the store: only its SHA-256.
  auto rows = d.store->LoadBouncers();
  ASSERT_THAT(*rows, SizeIs(1));
  EXPECT_EQ((*rows)[0].key_hash.size(), 32u);
  EXPECT_THAT((*rows)[0].key_hash, ::testing::Not(HasSubstr(*key)));
  d.api.reset();
  std::FILE* f = std::fopen(path.c_str(), "rb");
  std::string bytes;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) bytes.append(buf, n);
  std::fclose(f);
  EXPECT_EQ(bytes.find(*key), std::string::npos);

  EXPECT_THAT(d.Metrics(), ::testing::Not(HasSubstr(*key)));
}

TEST(BouncerApiTest, DeletedBouncerIsRefused) {
  SimulatedClock clock;
  Daemon d(FreshPath("delete.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=true", key).first, 200);
  ASSERT_THAT(d.api->DeleteBouncer("fw"), IsOk());
  EXPECT_THAT(d.api->DeleteBouncer("fw"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=true", key).first, 403);
  EXPECT_THAT(d.Metrics(), ::testing::Not(HasSubstr("bouncer=\"fw\"")));
}

TEST(BouncerApiTest, StreamServesChangesSinceTheLastPullInCrowdSecShapes) {
  SimulatedClock clock;
  Daemon d(FreshPath("stream.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  // Nothing yet: both lists are null, as CrowdSec 1.4.6 writes empty (nil) lists.
  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=true", key).second,
            "{\"deleted\":null,\"new\":null}");

  const std::string ip = d.Ban("203.0.113.7");
  d.Ban("198.51.100.0/24", absl::Hours(1), palisade::v1::TARGET_KIND_RANGE);
  d.Ban("2001:db8::5", absl::Hours(2), palisade::v1::TARGET_KIND_IP,
        palisade::v1::ACTION_MANAGED_CHALLENGE);
  clock.Advance(absl::Seconds(2));
  json first = d.Pull(key, true);
  EXPECT_TRUE(first["deleted"].is_null());
  ASSERT_THAT(first["new"], SizeIs(3));
  // By end, soonest first, as CrowdSec lists them: the range (1 h), the v6 (2 h), the ban (4 h).
  EXPECT_EQ(first["new"][0]["scope"], "Range");
  EXPECT_EQ(first["new"][0]["value"], "198.51.100.0/24");
  EXPECT_EQ(first["new"][1]["type"], "captcha");
  const json& ban = first["new"][2];
  EXPECT_EQ(ban["value"], "203.0.113.7");
  EXPECT_EQ(ban["scope"], "Ip");
  EXPECT_EQ(ban["type"], "ban");
  EXPECT_EQ(ban["origin"], "cscli");
  EXPECT_EQ(ban["scenario"], "by hand");
  EXPECT_EQ(ban["duration"], "3h59m58s");
  EXPECT_TRUE(ban["id"].is_number_integer());
  // Exactly the keys CrowdSec 1.4.6 writes, in its order.
  EXPECT_EQ(ban.dump().substr(0, 13), "{\"duration\":\"");
  std::vector<std::string> keys;
  for (auto it = ban.begin(); it != ban.end(); ++it) keys.push_back(it.key());
  EXPECT_THAT(keys, ::testing::ElementsAre("duration", "id", "origin", "scenario", "scope", "type",
                                           "value"));
  const int64_t id = ban["id"];

  // Nothing new since: null and null.
  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=false", key).second,
            "{\"deleted\":null,\"new\":null}");
  // A new ban and a withdrawal: one each, the withdrawn one with its id.
  d.Ban("192.0.2.9");
  ASSERT_THAT(d.table.Withdraw(ip), IsOk());
  json next = d.Pull(key);
  EXPECT_EQ(Values(next["new"]), std::set<std::string>{"192.0.2.9"});
  ASSERT_THAT(next["deleted"], SizeIs(1));
  EXPECT_EQ(next["deleted"][0]["value"], "203.0.113.7");
  EXPECT_EQ(next["deleted"][0]["id"], id);
  EXPECT_EQ(next["deleted"][0]["duration"], "0s");
  // Served once.
  json again = d.Pull(key);
  EXPECT_TRUE(again["new"].is_null());
  EXPECT_TRUE(again["deleted"].is_null());

  // A second bouncer has its own position: it never pulled, so it gets what is active.
  std::string key2 = *d.api->AddBouncer("nginx");
  json other = d.Pull(key2);
  EXPECT_EQ(Values(other["new"]),
            (std::set<std::string>{"198.51.100.0/24", "2001:db8::5", "192.0.2.9"}));

  const std::string metrics = d.Metrics();
  EXPECT_THAT(metrics,
              HasSubstr("palisade_bouncer_pulls_total{bouncer=\"fw\",kind=\"startup\"} 2"));
  EXPECT_THAT(metrics, HasSubstr("palisade_bouncer_pulls_total{bouncer=\"fw\",kind=\"stream\"} 3"));
  EXPECT_THAT(metrics,
              HasSubstr("palisade_bouncer_decisions_served_total{bouncer=\"fw\",list=\"new\"} 4"));
  EXPECT_THAT(
      metrics,
      HasSubstr("palisade_bouncer_decisions_served_total{bouncer=\"fw\",list=\"deleted\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("palisade_bouncers_registered 2"));

  std::vector<BouncerInfo> list = d.api->ListBouncers();
  ASSERT_THAT(list, SizeIs(2));
  EXPECT_EQ(list[0].name, "fw");
  EXPECT_EQ(list[0].address, "127.0.0.1");
  EXPECT_EQ(list[0].user_agent, "crowdsec-test/v1");
  EXPECT_EQ(list[0].last_pull, clock.TimeNow());
}

// An extension (a later end) or a change of type of a decision a bouncer holds. It was served
// in `new` alone, with the same id, on purpose (a bouncer keys by id), but
// crowdsec-firewall-bouncer 0.0.25 skips a value already in its nftables set ("already in set"),
// so the host's ban still ended at the first timeout while palisaded kept the address banned.
// It is now served as a deletion and a new entry, same id, in one pull: the bouncer applies the
// deletions first, and re-adds the value with the new timeout.
TEST(BouncerApiTest, AnExtensionIsServedAsADeletionAndANew) {
  SimulatedClock clock;
  Daemon d(FreshPath("extend.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7", absl::Hours(1));
  json first = d.Pull(key);
  ASSERT_THAT(first["new"], SizeIs(1));
  const json id = first["new"][0]["id"];
  clock.Advance(absl::Minutes(1));       // past the hold (AnExtensionSoonAfterItsNewIsHeld)
  d.Ban("203.0.113.7", absl::Hours(3));  // extends the active decision
  json next = d.Pull(key);
  ASSERT_THAT(next["deleted"], SizeIs(1)) << next;
  EXPECT_EQ(next["deleted"][0]["value"], "203.0.113.7");
  EXPECT_EQ(next["deleted"][0]["id"], id);
  ASSERT_THAT(next["new"], SizeIs(1)) << next;
  EXPECT_EQ(next["new"][0]["value"], "203.0.113.7");
  EXPECT_EQ(next["new"][0]["id"], id);
  EXPECT_EQ(next["new"][0]["duration"], "3h0m0s");
  // Served once.
  json again = d.Pull(key);
  EXPECT_TRUE(again["deleted"].is_null()) << again;
  EXPECT_TRUE(again["new"].is_null()) << again;
  // A bouncer that never pulled held nothing: the new entry only.
  std::string key2 = *d.api->AddBouncer("fw2");
  json other = d.Pull(key2);
  EXPECT_TRUE(other["deleted"].is_null()) << other;
  EXPECT_EQ(Values(other["new"]), std::set<std::string>{"203.0.113.7"});

  // A change of type (a captcha becoming a ban) too: the bouncer holds the captcha.
  auto update = [&](palisade::v1::Action action) {
    DecisionUpdate u;
    u.change = DecisionChange::kExtended;
    u.decision.set_id("typed");
    u.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    u.decision.mutable_target()->set_value("203.0.113.8");
    u.decision.set_action(action);
    u.decision.set_active(true);
    u.decision.set_origin(palisade::v1::ORIGIN_RULE);
    u.decision.set_rule_id("sshd-bf");
    u.decision.mutable_expiry()->set_seconds(absl::ToUnixSeconds(clock.TimeNow()) + 600);
    d.api->OnUpdates({u});
  };
  update(palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(d.Pull(key)["new"][0]["type"], "captcha");
  clock.Advance(absl::Minutes(1));
  update(palisade::v1::ACTION_BLOCK);
  json typed = d.Pull(key);
  ASSERT_THAT(typed["deleted"], SizeIs(1)) << typed;
  EXPECT_EQ(typed["deleted"][0]["type"], "captcha");
  ASSERT_THAT(typed["new"], SizeIs(1)) << typed;
  EXPECT_EQ(typed["new"][0]["type"], "ban");
  // A shorter end needs no reissue: the deletion at the end takes the value out.
  clock.Advance(absl::Minutes(1));
  d.api->OnUpdates({[&] {
    DecisionUpdate u;
    u.change = DecisionChange::kExtended;
    u.decision.set_id("typed");
    u.decision.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    u.decision.mutable_target()->set_value("203.0.113.8");
    u.decision.set_action(palisade::v1::ACTION_BLOCK);
    u.decision.set_active(true);
    u.decision.set_origin(palisade::v1::ORIGIN_RULE);
    u.decision.set_rule_id("sshd-bf");
    u.decision.mutable_expiry()->set_seconds(absl::ToUnixSeconds(clock.TimeNow()) + 60);
    return u;
  }()});
  json shorter = d.Pull(key);
  EXPECT_TRUE(shorter["deleted"].is_null()) << shorter;
  EXPECT_EQ(Values(shorter["new"]), std::set<std::string>{"203.0.113.8"});
}

// crowdsec-custom-bouncer 0.0.15 keeps the values it added for cache_retention_duration (10 s
// in Debian's config) and skips an add of a value still there, though a delete came between:
// a deletion and a new entry of a value added less than ~10 s before ends with the value
// deleted. So a reissue waits until 30 s after its value was logged as new (the bouncer polls
// every 10 s: ~20 s to spare); the ban in force meanwhile is the earlier one.
TEST(BouncerApiTest, AnExtensionSoonAfterItsNewIsHeld) {
  SimulatedClock clock;
  Daemon d(FreshPath("extend-held.db"), clock);
  std::string key = *d.api->AddBouncer("custom");
  d.Ban("203.0.113.7", absl::Hours(1));
  json first = d.Pull(key);
  ASSERT_THAT(first["new"], SizeIs(1));
  clock.Advance(absl::Seconds(5));
  d.Ban("203.0.113.7", absl::Hours(3));  // logged 5 s after the first entry
  json held = d.Pull(key);
  EXPECT_TRUE(held["deleted"].is_null()) << held;
  EXPECT_TRUE(held["new"].is_null()) << held;
  clock.Advance(absl::Seconds(24));  // 29 s after the first entry
  json still = d.Pull(key);
  EXPECT_TRUE(still["deleted"].is_null()) << still;
  EXPECT_TRUE(still["new"].is_null()) << still;
  clock.Advance(absl::Seconds(1));
  json next = d.Pull(key);
  EXPECT_EQ(Values(next["deleted"]), std::set<std::string>{"203.0.113.7"});
  ASSERT_THAT(next["new"], SizeIs(1)) << next;
  EXPECT_EQ(next["new"][0]["duration"], "2h59m35s");  // the extension's end, 3 h after it

  // A held extension whose decision ends meanwhile: its deletion only, once.
  const std::string gone = d.Ban("203.0.113.9", absl::Hours(1));
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.9"});
  clock.Advance(absl::Seconds(2));
  d.Ban("203.0.113.9", absl::Hours(3));
  ASSERT_THAT(d.table.Withdraw(gone), IsOk());
  json ended = d.Pull(key);
  EXPECT_EQ(Values(ended["deleted"]), std::set<std::string>{"203.0.113.9"});
  EXPECT_THAT(ended["deleted"], SizeIs(1));
  EXPECT_TRUE(ended["new"].is_null()) << ended;
  clock.Advance(absl::Minutes(1));
  json after = d.Pull(key);
  EXPECT_TRUE(after["deleted"].is_null()) << after;
  EXPECT_TRUE(after["new"].is_null()) << after;
}

// Holds are not stored: a restart during a replacement's hold logged the replaced row's deletion
// and the new row at once (Attach), and custom-bouncer, which had added the value less than
// 10 s before, ran its del and skipped the add. Attach holds it again: a loaded row no longer
// visible, logged less than kReissueHold before, keeps its value covered until then, and a
// visible decision new to bouncers on that value is logged with its deletion. The bouncer is
// modelled as in AReplacementSoonAfterTheReplacedNewIsHeld, across the daemon's restart.
TEST(BouncerApiTest, AReplacementHeldAtARestartIsHeldAgain) {
  SimulatedClock clock;
  const std::string path = FreshPath("replace-restart.db");
  const std::string value = "203.0.113.7";
  std::map<std::string, std::string> host;  // value -> type the host enforces
  std::map<std::string, absl::Time> added;   // custom-bouncer's cache: value -> last add
  std::string key;
  auto pull = [&](Daemon& d) {
    json answer = d.Pull(key);
    const absl::Time now = clock.TimeNow();
    if (!answer["deleted"].is_null()) {
      for (const json& x : answer["deleted"]) host.erase(x["value"].get<std::string>());
    }
    if (!answer["new"].is_null()) {
      for (const json& x : answer["new"]) {
        const std::string v = x["value"].get<std::string>();
        auto it = added.find(v);
        if (it != added.end() && now - it->second < absl::Seconds(10)) continue;  // skipped
        added[v] = now;
        host[v] = x["type"].get<std::string>();
      }
    }
  };
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("custom");
    d.Ban(value, absl::Hours(1), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_CHALLENGE);
    pull(d);
    ASSERT_EQ(host[value], "captcha");
    clock.Advance(absl::Seconds(3));
    d.Ban(value, absl::Hours(2), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_BLOCK);
    pull(d);
    ASSERT_EQ(host[value], "captcha");  // held
  }
  clock.Advance(absl::Seconds(1));
  Daemon d(path, clock);
  for (int i = 0; i < 60; ++i) {
    pull(d);
    ASSERT_EQ(host.count(value), 1u) << "the host is open to it " << i << " s after the restart";
    clock.Advance(absl::Seconds(1));
  }
  EXPECT_EQ(host[value], "ban");
  json again = d.Pull(key);
  EXPECT_TRUE(again["deleted"].is_null()) << again;
  EXPECT_TRUE(again["new"].is_null()) << again;
  const std::string key2 = *d.api->AddBouncer("fresh");
  json fresh = d.Pull(key2, /*startup=*/true);
  ASSERT_THAT(fresh["new"], SizeIs(1)) << fresh;
  EXPECT_EQ(fresh["new"][0]["type"], "ban");
}

// A never-ban set that came to cover a replaced row during its replacement's hold withheld the
// replaced decision, already withdrawn, and nothing took it out of withheld_: once the set no
// longer covered the address, that decision was served again until its end, though the table
// had no such decision. Its row is now taken back only; the replacement is withheld when due.
TEST(BouncerApiTest, ANeverBanSetDuringAReplacementsHoldWithholdsOnlyTheReplacement) {
  SimulatedClock clock;
  Daemon d(FreshPath("replace-never-ban.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  const std::string value = "203.0.113.7";
  d.Ban(value, absl::Hours(1), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{value});
  clock.Advance(absl::Seconds(5));
  d.Ban(value, absl::Hours(2), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_BLOCK);
  EXPECT_TRUE(d.Pull(key)["deleted"].is_null());  // held
  d.api->SetNeverBan(*CidrSet::Parse({"203.0.113.0/24"}));
  json taken = d.Pull(key);
  ASSERT_THAT(taken["deleted"], SizeIs(1)) << taken;
  EXPECT_EQ(taken["deleted"][0]["type"], "captcha");
  EXPECT_TRUE(taken["new"].is_null()) << taken;
  clock.Advance(absl::Minutes(1));  // the hold is over: the block is withheld
  json held = d.Pull(key);
  EXPECT_TRUE(held["deleted"].is_null()) << held;
  EXPECT_TRUE(held["new"].is_null()) << held;
  d.api->SetNeverBan(CidrSet());
  json back = d.Pull(key);
  ASSERT_THAT(back["new"], SizeIs(1)) << back;
  EXPECT_EQ(back["new"][0]["type"], "ban");
  const std::string key2 = *d.api->AddBouncer("fresh");
  json fresh = d.Pull(key2, /*startup=*/true);
  ASSERT_THAT(fresh["new"], SizeIs(1)) << fresh;
  EXPECT_EQ(fresh["new"][0]["type"], "ban");
}

// An extension made while no bouncer API listened (a crash between the table's store write and
// its listeners) is found at start, and reissued as the listener would have.
// A stronger claim replacing a decision (a block taking over a challenge on the address) is a
// set of two: the challenge withdrawn, the block created, another id. The hold only guarded a
// decision's own reissue: the withdrawal and the new entry on the same value were logged at
// once, and crowdsec-custom-bouncer, which skips an add of a value it added less than 10 s
// before (a delete between or not), ran its script's del and skipped the add: the host stayed
// open to the address for the whole block. A replacement less than kReissueHold after the
// replaced row was logged now keeps that row served until then, and the deletion and the new
// entry are logged together. The bouncer here is modelled as custom-bouncer applies a pull:
// deletions first, then the adds its cache does not skip; it pulls every simulated second.
TEST(BouncerApiTest, AReplacementSoonAfterTheReplacedNewIsHeld) {
  SimulatedClock clock;
  Daemon d(FreshPath("replace-held.db"), clock);
  const std::string key = *d.api->AddBouncer("custom");
  const std::string value = "203.0.113.7";
  std::map<std::string, std::string> host;   // value -> type the host enforces
  std::map<std::string, absl::Time> added;    // custom-bouncer's cache: value -> last add
  auto pull = [&] {
    json answer = d.Pull(key);
    const absl::Time now = clock.TimeNow();
    if (!answer["deleted"].is_null()) {
      for (const json& x : answer["deleted"]) host.erase(x["value"].get<std::string>());
    }
    if (!answer["new"].is_null()) {
      for (const json& x : answer["new"]) {
        const std::string v = x["value"].get<std::string>();
        auto it = added.find(v);
        if (it != added.end() && now - it->second < absl::Seconds(10)) continue;  // skipped
        added[v] = now;
        host[v] = x["type"].get<std::string>();
      }
    }
  };
  d.Ban(value, absl::Hours(1), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_CHALLENGE);
  pull();
  ASSERT_EQ(host[value], "captcha");
  clock.Advance(absl::Seconds(5));
  d.Ban(value, absl::Hours(2), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_BLOCK);
  for (int i = 0; i < 60; ++i) {
    pull();
    ASSERT_EQ(host.count(value), 1u) << "the host is open to it " << i + 1 << " s after";
    clock.Advance(absl::Seconds(1));
  }
  EXPECT_EQ(host[value], "ban");
  // Served once: nothing more.
  json again = d.Pull(key);
  EXPECT_TRUE(again["deleted"].is_null()) << again;
  EXPECT_TRUE(again["new"].is_null()) << again;
  // A bouncer that pulls afresh gets the block alone.
  const std::string key2 = *d.api->AddBouncer("fresh");
  json fresh = d.Pull(key2, /*startup=*/true);
  ASSERT_THAT(fresh["new"], SizeIs(1)) << fresh;
  EXPECT_EQ(fresh["new"][0]["type"], "ban");

  // A held replacement withdrawn meanwhile: the replaced row's deletion only, at once.
  const std::string other = "203.0.113.9";
  d.Ban(other, absl::Hours(1), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_CHALLENGE);
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{other});
  clock.Advance(absl::Seconds(2));
  const std::string block =
      d.Ban(other, absl::Hours(2), palisade::v1::TARGET_KIND_IP, palisade::v1::ACTION_BLOCK);
  EXPECT_TRUE(d.Pull(key)["deleted"].is_null());
  ASSERT_THAT(d.table.Withdraw(block), IsOk());
  json ended = d.Pull(key);
  ASSERT_THAT(ended["deleted"], SizeIs(1)) << ended;
  EXPECT_EQ(ended["deleted"][0]["type"], "captcha");
  EXPECT_TRUE(ended["new"].is_null()) << ended;
  clock.Advance(absl::Minutes(1));
  json after = d.Pull(key);
  EXPECT_TRUE(after["deleted"].is_null()) << after;
  EXPECT_TRUE(after["new"].is_null()) << after;
}

TEST(BouncerApiTest, AnExtensionTheLogMissedIsReissuedAtStart) {
  SimulatedClock clock;
  const std::string path = FreshPath("extend-attach.db");
  std::string key;
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("fw");
    d.Ban("203.0.113.7", absl::Hours(1));
    EXPECT_THAT(d.Pull(key)["new"], SizeIs(1));
  }
  clock.Advance(absl::Minutes(1));
  {
    auto store = *Store::Open(path);
    DecisionTable table(clock);
    table.SetStore(store.get(), {});
    ASSERT_THAT(table.Restore(), IsOk());
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
    req.mutable_target()->set_value("203.0.113.7");
    req.set_action(palisade::v1::ACTION_BLOCK);
    req.mutable_duration()->set_seconds(3 * 3600);
    req.set_reason("by hand");
    ASSERT_THAT(table.AddManual(req), IsOk());
  }
  Daemon d(path, clock);
  json next = d.Pull(key);
  EXPECT_EQ(Values(next["deleted"]), std::set<std::string>{"203.0.113.7"});
  ASSERT_THAT(next["new"], SizeIs(1)) << next;
  EXPECT_EQ(next["new"][0]["duration"], "3h0m0s");
}

// Bouncers are never served a decision on a never-ban address (Cloudflare's ranges, this
// host's addresses, the allowlist: palisaded's NeverBanSet): the edge guard refuses those, but
// crowdsec-firewall-bouncer on an origin behind Cloudflare would drop a Cloudflare address, and
// with it every visitor that address carries. Withheld and counted; the set can change (a
// reload): what it now covers is taken back, what it no longer covers is served.
TEST(BouncerApiTest, DecisionsOnNeverBanAddressesAreWithheld) {
  SimulatedClock clock;
  const std::string path = FreshPath("never-ban.db");
  std::string key;
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("fw");
    d.Ban("203.0.113.7");
    d.Ban("198.51.100.7", absl::Hours(1));
    d.Ban("198.51.0.0/16", absl::Hours(2), palisade::v1::TARGET_KIND_RANGE);  // overlaps
    EXPECT_THAT(d.Pull(key)["new"], SizeIs(3));

    d.api->SetNeverBan(*CidrSet::Parse({"198.51.100.0/24"}));  // a reload adds it
    json taken = d.Pull(key);
    EXPECT_EQ(Values(taken["deleted"]), (std::set<std::string>{"198.51.100.7", "198.51.0.0/16"}));
    EXPECT_TRUE(taken["new"].is_null()) << taken;
    // New decisions and changes on it are withheld too, live questions included.
    d.Ban("198.51.100.8");
    clock.Advance(absl::Minutes(1));
    d.Ban("198.51.100.7", absl::Hours(5));
    json none = d.Pull(key);
    EXPECT_TRUE(none["deleted"].is_null()) << none;
    EXPECT_TRUE(none["new"].is_null()) << none;
    EXPECT_EQ(d.Get("/v1/decisions?ip=198.51.100.8", key).second, "null");
    EXPECT_THAT(d.Metrics(), HasSubstr("palisade_bouncer_decisions_withheld_total 3"));

    d.api->SetNeverBan(CidrSet());  // and a reload takes it out: served at the next pull
    json back = d.Pull(key);
    EXPECT_TRUE(back["deleted"].is_null()) << back;
    EXPECT_EQ(Values(back["new"]),
              (std::set<std::string>{"198.51.100.7", "198.51.100.8", "198.51.0.0/16"}));
    for (const json& e : back["new"]) {
      if (e["value"] == "198.51.100.7") {
        EXPECT_EQ(e["duration"], "5h0m0s");
      }
    }
  }
  // At start (SetNeverBan before Attach, as palisaded does), the log is brought in line.
  const CidrSet never_ban = *CidrSet::Parse({"198.51.100.0/24"});
  Daemon d(path, clock, {}, &never_ban);
  json start = d.Pull(key);
  EXPECT_EQ(Values(start["deleted"]),
            (std::set<std::string>{"198.51.100.7", "198.51.100.8", "198.51.0.0/16"}));
  EXPECT_TRUE(start["new"].is_null()) << start;
  EXPECT_EQ(Values(d.Pull(key, /*startup=*/true)["new"]), std::set<std::string>{"203.0.113.7"});
}

// Bouncers withhold what the edge's guard refuses (TouchesNeverBan): the never-ban set and the
// non-public ranges, even before any set is given, and an IPv6 address or range that embeds
// one. They withheld the set only: a host's firewall bouncer behind a load balancer or proxy on
// a private network dropped it, and every visitor with it, once a rule took its address for
// the client's (no realip). CrowdSec's default whitelist never decides on those ranges either.
TEST(BouncerApiTest, DecisionsOnNonPublicAddressesAreWithheldAsAtTheEdge) {
  SimulatedClock clock;
  Daemon d(FreshPath("non-public.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  d.Ban("2001:db8::7");
  d.Ban("10.0.0.5");
  d.Ban("100.64.0.9");     // CGNAT
  d.Ban("fd00::5");        // ULA
  d.Ban("2002:a00:1::1");  // 6to4: 10.0.0.1
  d.Ban("192.168.0.0/16", absl::Hours(2), palisade::v1::TARGET_KIND_RANGE);
  d.Ban("172.0.0.0/8", absl::Hours(2), palisade::v1::TARGET_KIND_RANGE);  // holds 172.16/12
  EXPECT_EQ(Values(d.Pull(key)["new"]), (std::set<std::string>{"203.0.113.7", "2001:db8::7"}));
  EXPECT_EQ(d.Get("/v1/decisions?ip=10.0.0.5", key).second, "null");
  EXPECT_EQ(d.Get("/v1/decisions?ip=192.168.1.1", key).second, "null");
  EXPECT_THAT(d.Metrics(), HasSubstr("palisade_bouncer_decisions_withheld_total 6"));
}

TEST(BouncerApiTest, ExpiryOnTheClockIsADeletion) {
  SimulatedClock clock;
  Daemon d(FreshPath("expiry.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7", absl::Minutes(10));
  d.Ban("203.0.113.8", absl::Hours(10));
  EXPECT_THAT(d.Pull(key)["new"], SizeIs(2));
  clock.Advance(absl::Minutes(10) + absl::Seconds(3));
  d.table.ExpireDue();
  json next = d.Pull(key);
  EXPECT_TRUE(next["new"].is_null());
  ASSERT_THAT(next["deleted"], SizeIs(1));
  EXPECT_EQ(next["deleted"][0]["value"], "203.0.113.7");
  EXPECT_EQ(next["deleted"][0]["duration"], "-3s");  // as CrowdSec: the time since it ended
  // On startup, only what is active.
  json startup = d.Pull(key, true);
  EXPECT_EQ(Values(startup["new"]), std::set<std::string>{"203.0.113.8"});
  EXPECT_TRUE(startup["deleted"].is_null());
}

// A decision past its end is not served as new or live (CrowdSec serves until > now only),
// though the sweeper has not expired it yet: up to a sweep interval after each end, and, after
// a restart, for what ended while palisaded was down (the API serves before the first sweep).
// Its deletion comes once the sweep ends it.
TEST(BouncerApiTest, ADecisionPastItsEndIsNotServedBeforeTheSweep) {
  SimulatedClock clock;
  const std::string path = FreshPath("past-end.db");
  std::string stream_key, live_key;
  {
    Daemon d(path, clock);
    stream_key = *d.api->AddBouncer("fw");
    live_key = *d.api->AddBouncer("nginx");
    EXPECT_TRUE(d.Pull(stream_key)["new"].is_null());
    d.Ban("203.0.113.7", absl::Minutes(10));
    clock.Advance(absl::Minutes(10) + absl::Seconds(30));  // no ExpireDue
    EXPECT_EQ(d.Get("/v1/decisions?ip=203.0.113.7", live_key).second, "null");
    EXPECT_TRUE(d.Pull(stream_key)["new"].is_null());
    EXPECT_TRUE(d.Pull(stream_key, /*startup=*/true)["new"].is_null());
    d.table.ExpireDue();
    EXPECT_EQ(Values(d.Pull(stream_key)["deleted"]), std::set<std::string>{"203.0.113.7"});

    d.Ban("203.0.113.8", absl::Minutes(10));
    EXPECT_EQ(Values(d.Pull(stream_key)["new"]), std::set<std::string>{"203.0.113.8"});
  }
  clock.Advance(absl::Hours(1));  // palisaded down while 203.0.113.8 ends
  Daemon d(path, clock);
  EXPECT_EQ(d.Get("/v1/decisions?ip=203.0.113.8", live_key).second, "null");
  EXPECT_TRUE(d.Pull(stream_key, /*startup=*/true)["new"].is_null());
  d.table.ExpireDue();
  EXPECT_EQ(Values(d.Pull(stream_key)["deleted"]), std::set<std::string>{"203.0.113.8"});
}

// A stronger claim replaces a decision in one change set: the old one withdrawn, the new one
// created on the same address. A pull between the two was served the deletion alone, and the
// bouncer let the address through until its next poll. The log now takes a change set whole.
TEST(BouncerApiTest, APullNeverSplitsAChangeSet) {
  SimulatedClock clock;
  Daemon d(FreshPath("replace.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  palisade::v1::AddDecisionRequest req;
  req.mutable_target()->set_value("203.0.113.7");
  req.mutable_duration()->set_seconds(3600);
  req.set_actuator(palisade::v1::ACTUATOR_NONE);  // local only
  ASSERT_THAT(d.table.AddManual(req), IsOk());
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.7"});
  // Heard after the API's listener (added by Attach): a pull made here lands where a bouncer's
  // pull could land while the set is being heard.
  std::optional<json> between;
  const uint64_t listener = d.table.AddListener([&](const DecisionUpdate& u) {
    if (u.change == DecisionChange::kWithdrawn && !between) between = d.Pull(key);
  });
  req.set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);  // at the edge: replaces it
  ASSERT_THAT(d.table.AddManual(req), IsOk());
  d.table.RemoveListener(listener);
  ASSERT_TRUE(between.has_value());
  EXPECT_TRUE((*between)["deleted"].is_null() ||
              Values((*between)["new"]).count("203.0.113.7") == 1)
      << "the pull between the withdrawal and the creation: " << *between;
}

TEST(BouncerApiTest, ARestartOfPalisadedNeitherLosesNorReplays) {
  SimulatedClock clock;
  // Real clocks have nanoseconds; the store keeps milliseconds (a restart compared the two and
  // served every active decision again).
  clock.Advance(absl::Nanoseconds(123'456'789));
  const std::string path = FreshPath("restart.db");
  std::string key;
  std::string withdrawn;
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("fw");
    withdrawn = d.Ban("203.0.113.7");
    d.Ban("203.0.113.8");
    EXPECT_THAT(d.Pull(key, true)["new"], SizeIs(2));
    // Changed after the bouncer's pull, before the restart: still owed to it.
    ASSERT_THAT(d.table.Withdraw(withdrawn), IsOk());
    d.Ban("203.0.113.9");
  }
  {
    Daemon d(path, clock);
    json next = d.Pull(key);
    EXPECT_EQ(Values(next["new"]), std::set<std::string>{"203.0.113.9"});
    EXPECT_EQ(Values(next["deleted"]), std::set<std::string>{"203.0.113.7"});
  }
  {
    Daemon d(path, clock);
    // Served before this restart: never again.
    json next = d.Pull(key);
    EXPECT_TRUE(next["new"].is_null()) << next;
    EXPECT_TRUE(next["deleted"].is_null()) << next;
    // The bouncer restarting: startup=true gives what is active, ids unchanged.
    json startup = d.Pull(key, true);
    EXPECT_EQ(Values(startup["new"]), (std::set<std::string>{"203.0.113.8", "203.0.113.9"}));
  }
}

// A pull's position was stored before its answer was written (httplib writes after the handler
// returns), so an answer cut off by a stop (or kill, or a reset) moved the position and
// delivered nothing: the next pull skipped those decisions for good. The position now moves
// only once the answer was written whole. The answer here (~12 MB) is far more than loopback's
// buffers hold (the server's send buffer grows to tcp_wmem's 4 MiB at most; the reader's window
// is 4 KiB and it reads only the head), so it is still being written when the daemon stops.
TEST(BouncerApiTest, AnAnswerCutByStopIsServedAgainAfterTheRestart) {
  SimulatedClock clock;
  const std::string path = FreshPath("cut-by-stop.db");
  constexpr int kFeed = 30'000;
  std::string key;
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("fw");
    SyncLargeFeed(d.table, kFeed);
    RawConnection reader(d.api->port(), /*receive_buffer=*/4096);
    StartPull(reader, key, /*startup=*/false);
    d.api->Stop();  // with the reader still there: the stop cuts the answer, not a reset
  }
  {
    Daemon d(path, clock);
    httplib::Client client("127.0.0.1", d.api->port());
    client.set_read_timeout(120, 0);  // a bound, not a speed: the answer is ~12 MB
    httplib::Result r = client.Get("/v1/decisions/stream?startup=false", {{"X-Api-Key", key}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    json next = json::parse(r->body, nullptr, false);
    EXPECT_THAT(next["new"], SizeIs(kFeed)) << r->body.substr(0, 200);
  }
}

// A Range header asked httplib for any bytes of a stream answer, and the provider handed over
// what was asked, past the answer's end: another bouncer's key or the heap next to it, with a
// valid key. A ranged request is refused (416) and counted; the position does not move.
TEST(BouncerApiTest, ARangedRequestIsRefusedNotServedPastTheAnswer) {
  SimulatedClock clock;
  Daemon d(FreshPath("ranged.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  RawConnection c(d.api->port());
  ASSERT_TRUE(c.Send(absl::StrCat("GET /v1/decisions/stream?startup=true HTTP/1.1\r\n",
                                  "Host: palisade\r\nX-Api-Key: ", key,
                                  "\r\nRange: bytes=0-1048575\r\n\r\n")));
  const std::string answer = c.ReadAnswer();
  EXPECT_THAT(answer, ::testing::StartsWith("HTTP/1.1 416 ")) << answer.substr(0, 300);
  EXPECT_LT(answer.size(), 4096u);
  EXPECT_THAT(d.Metrics(),
              HasSubstr("palisade_bouncer_requests_refused_total{reason=\"bad_request\"} 1"));
  EXPECT_TRUE(d.api->WaitForAnswersForTesting(absl::Seconds(60)));
  EXPECT_EQ((*d.store->LoadBouncers())[0].position, 0);
  EXPECT_EQ(Values(d.Pull(key, true)["new"]), std::set<std::string>{"203.0.113.7"});
}

// Go's client asks for gzip, and a startup answer with feeds runs to megabytes: it is gzipped
// (it was before the answer was written in pieces, which httplib does not compress).
TEST(BouncerApiTest, AStreamAnswerIsGzippedWhenAsked) {
  SimulatedClock clock;
  Daemon d(FreshPath("gzip.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  std::set<std::string> banned;
  for (int i = 1; i <= 40; ++i) banned.insert(absl::StrCat("203.0.113.", i));
  for (const std::string& ip : banned) d.Ban(ip);
  RawConnection c(d.api->port());
  ASSERT_TRUE(c.Send(absl::StrCat("GET /v1/decisions/stream?startup=true HTTP/1.1\r\n",
                                  "Host: palisade\r\nX-Api-Key: ", key,
                                  "\r\nAccept-Encoding: gzip\r\n\r\n")));
  const std::string answer = c.ReadAnswer();
  const size_t end = answer.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << answer;
  EXPECT_THAT(answer.substr(0, end), HasSubstr("Content-Encoding: gzip"));
  const std::string gz = answer.substr(end + 4);
  z_stream z{};
  ASSERT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string text(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  z.next_out = reinterpret_cast<Bytef*>(text.data());
  z.avail_out = static_cast<uInt>(text.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  text.resize(z.total_out);
  inflateEnd(&z);
  EXPECT_LT(gz.size(), text.size());
  EXPECT_EQ(Values(json::parse(text, nullptr, false)["new"]), banned);
}

// A gzipped answer is kept whole for as long as its reader takes. Its buffer was sized for the
// text (deflateBound) and never shrunk: a startup answer of ~100 MB (a million deletions) held
// ~100 MB more than its few gzipped MB while written, at each pull of a key holder who reads it
// slowly or closes it early.
TEST(GzipAnswerTest, HoldsNoMoreThanItsBytes) {
  std::string text;
  for (int i = 0; i < 100'000; ++i) {
    absl::StrAppend(&text, "{\"id\":", i, ",\"value\":\"11.", i / 65536, ".", i / 256 % 256, ".",
                    i % 256, "\",\"scenario\":\"feed\"},");
  }
  absl::StatusOr<std::string> gz = GzipAnswer(text);
  ASSERT_THAT(gz, IsOk());
  EXPECT_LT(gz->size(), text.size() / 4);
  EXPECT_LE(gz->capacity(), gz->size() + (size_t{64} << 10));
  z_stream z{};
  ASSERT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  std::string back(text.size() + 1, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz->data()));
  z.avail_in = static_cast<uInt>(gz->size());
  z.next_out = reinterpret_cast<Bytef*>(back.data());
  z.avail_out = static_cast<uInt>(back.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  back.resize(z.total_out);
  inflateEnd(&z);
  EXPECT_EQ(back, text);
}

// A bouncer's first answer (position 0) is being written when a decision it serves is withdrawn:
// Trim must keep that deletion for its next pull. It left a bouncer at 0 out (one that never
// pulled holds nothing back), so the deletion was trimmed and the host kept the ban.
TEST(BouncerApiTest, TrimKeepsTheDeletionsAFirstAnswerInFlightHasNotServed) {
  SimulatedClock clock;
  Daemon d(FreshPath("trim-in-flight.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  constexpr int kFeed = 30'000;  // an answer far larger than the reader's buffers
  SyncLargeFeed(d.table, kFeed);
  const std::string x = d.Ban("203.0.113.7");
  RawConnection reader(d.api->port(), /*receive_buffer=*/4096);
  StartPull(reader, key, /*startup=*/true);
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  ASSERT_THAT(d.api->Flush(), IsOk());
  ASSERT_THAT(d.api->Trim(), IsOk());
  std::string answer = reader.ReadAnswer();  // the rest, read whole
  ASSERT_THAT(answer, HasSubstr("203.0.113.7"));
  ASSERT_TRUE(d.api->WaitForAnswersForTesting(absl::Seconds(120)));
  EXPECT_EQ(Values(d.Pull(key)["deleted"]), std::set<std::string>{"203.0.113.7"});
}

// Two pulls of one key at once (two hosts that share a key, or a bouncer's retry beside its
// first pull) both went past the wait for the previous answer before either claimed the turn, and
// both read the same position: the second was served the first's rows again. The wait and the
// claim are one step now: the second waits for the first's answer (on the API's clock, which
// stands still here), then serves what came after it.
TEST(BouncerApiTest, TwoPullsOfOneKeyAtOnceAreNotServedTheSameRows) {
  SimulatedClock clock;
  Daemon d(FreshPath("two-at-once.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  constexpr int kFeed = 30'000;  // the first answer far larger than its reader's buffers
  SyncLargeFeed(d.table, kFeed);
  absl::Notification first_chosen, let_first_go, second_waits;
  std::atomic<int> answers{0};
  d.api->SetAnswerHookForTesting([&] {
    if (answers++ > 0) return;
    first_chosen.Notify();
    let_first_go.WaitForNotification();
  });
  d.api->SetPullWaitHookForTesting([&] {
    if (!second_waits.HasBeenNotified()) second_waits.Notify();
  });
  RawConnection reader(d.api->port(), /*receive_buffer=*/4096);
  ASSERT_TRUE(reader.Send(absl::StrCat("GET /v1/decisions/stream?startup=false HTTP/1.1\r\n",
                                       "Host: palisade\r\nX-Api-Key: ", key, "\r\n\r\n")));
  ASSERT_TRUE(first_chosen.WaitForNotificationWithTimeout(absl::Seconds(60)))
      << "the first pull never chose its rows";
  // After the first pull's rows: the second's.
  d.Ban("203.0.113.7");
  BouncerReply second;
  std::thread puller([&] {
    second = d.api->Handle(Request("/v1/decisions/stream", key, {{"startup", "false"}}));
  });
  // A bound, not a speed: a pull that waits reaches the hook at once.
  EXPECT_TRUE(second_waits.WaitForNotificationWithTimeout(absl::Seconds(30)))
      << "the second pull went past the wait while the first's answer was not written";
  let_first_go.Notify();
  const std::string answer = reader.ReadAnswer();
  ASSERT_THAT(answer, HasSubstr("HTTP/1.1 200"));
  const json first = json::parse(answer.substr(answer.find("\r\n\r\n") + 4), nullptr, false);
  EXPECT_THAT(first["new"], SizeIs(kFeed));
  puller.join();
  ASSERT_EQ(second.status, 200) << second.body;
  const json next = json::parse(second.body, nullptr, false);
  EXPECT_EQ(Values(next["new"]), std::set<std::string>{"203.0.113.7"});
  EXPECT_TRUE(next["deleted"].is_null());
  // Nothing skipped either: nothing is left to serve.
  EXPECT_EQ(d.Get("/v1/decisions/stream?startup=false", key).second,
            "{\"deleted\":null,\"new\":null}");
}

// Two pulls of one key overlap once the second waited kAnswerInFlightWait for the first (on the
// API's clock, moved past it here) and went on. The in-flight mark was one flag per bouncer: the
// first answer's cut cleared it while the second was still being written, and Trim took the
// bouncer, still at 0, for one served nothing: it dropped a deletion the second's next pull
// needed, and the host kept the ban. Each answer in flight now counts, with what it served.
TEST(BouncerApiTest, TrimKeepsTheDeletionsEveryOverlappingAnswerInFlightHasNotServed) {
  SimulatedClock clock;
  Daemon d(FreshPath("trim-two-in-flight.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  constexpr int kFeed = 30'000;  // answers far larger than their readers' buffers
  SyncLargeFeed(d.table, kFeed);
  const std::string x = d.Ban("203.0.113.7");
  // The second pull finds the first's answer in flight: its wait is made to run out at once.
  std::atomic<bool> advanced{false};
  d.api->SetPullWaitHookForTesting([&] {
    if (!advanced.exchange(true)) clock.Advance(absl::Seconds(16));
  });
  auto first = std::make_unique<RawConnection>(d.api->port(), /*receive_buffer=*/4096);
  StartPull(*first, key, /*startup=*/false);
  RawConnection second(d.api->port(), /*receive_buffer=*/4096);
  StartPull(second, key, /*startup=*/false);
  ASSERT_TRUE(advanced) << "the second pull did not wait for the first's answer";
  first.reset();  // a reset: the first answer is cut
  ASSERT_TRUE(d.api->WaitForAnswersForTesting(absl::Seconds(60), /*left=*/1));
  // Served by the second answer, and withdrawn while it is written: the next pull's deletion.
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  ASSERT_THAT(d.api->Flush(), IsOk());
  absl::StatusOr<int64_t> trimmed = d.api->Trim();
  ASSERT_THAT(trimmed, IsOk());
  EXPECT_EQ(*trimmed, 0) << "the deletion the second answer's next pull needs was trimmed";
  const std::string answer = second.ReadAnswer();  // the rest, read whole
  ASSERT_THAT(answer, HasSubstr("203.0.113.7"));
  ASSERT_TRUE(d.api->WaitForAnswersForTesting(absl::Seconds(120)));
  EXPECT_EQ(Values(d.Pull(key)["deleted"]), std::set<std::string>{"203.0.113.7"});
}

// Both answers of an overlap are in flight when Trim runs: the first (A, position 0) serves x,
// x is withdrawn, and the second (B, past kAnswerInFlightWait) serves the deletion. Trim must
// keep the deletions above the LOWER position served: B may be cut and A delivered, and then
// the next pull reads from A's position and needs x's deletion. (The test above has one answer
// left in flight at Trim time, so keeping those above the higher passed it too.)
TEST(BouncerApiTest, TrimKeepsTheDeletionsAboveTheLowestOfTwoAnswersInFlight) {
  SimulatedClock clock;
  Daemon d(FreshPath("trim-lowest-in-flight.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  constexpr int kFeed = 30'000;  // answers far larger than their readers' buffers
  SyncLargeFeed(d.table, kFeed);
  const std::string x = d.Ban("203.0.113.7");
  // B finds A's answer in flight: its wait is made to run out at once.
  std::atomic<bool> advanced{false};
  d.api->SetPullWaitHookForTesting([&] {
    if (!advanced.exchange(true)) clock.Advance(absl::Seconds(16));
  });
  RawConnection a(d.api->port(), /*receive_buffer=*/4096);
  StartPull(a, key, /*startup=*/false);
  // After A's read, before B's: A serves x, B its deletion.
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  ASSERT_THAT(d.api->Flush(), IsOk());
  auto b = std::make_unique<RawConnection>(d.api->port(), /*receive_buffer=*/4096);
  StartPull(*b, key, /*startup=*/false);
  ASSERT_TRUE(advanced) << "B did not wait for A's answer";
  absl::StatusOr<int64_t> trimmed = d.api->Trim();
  ASSERT_THAT(trimmed, IsOk());
  EXPECT_EQ(*trimmed, 0) << "the deletion A's next pull needs was trimmed";
  b.reset();  // a reset: B's answer is cut
  ASSERT_TRUE(d.api->WaitForAnswersForTesting(absl::Seconds(60), /*left=*/1));
  const std::string answer = a.ReadAnswer();  // the rest, read whole
  ASSERT_THAT(answer, HasSubstr("203.0.113.7"));
  ASSERT_TRUE(d.api->WaitForAnswersForTesting(absl::Seconds(120)));
  EXPECT_EQ(Values(d.Pull(key)["deleted"]), std::set<std::string>{"203.0.113.7"});
}

// A bouncer's first answer (position 0) is being written when a decision it serves is withdrawn,
// and a second pull of the key goes on past kAnswerInFlightWait. The second read the live rows
// only, as a first pull does, and moved the position past the deletion: the host kept the ban
// the first answer brought. A pull beside another of its key in flight reads the deletions too
// (a replay of some, never a loss).
TEST(BouncerApiTest, APullBesideAFirstAnswerInFlightServesTheDeletionsAfterIt) {
  SimulatedClock clock;
  Daemon d(FreshPath("beside-first.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  constexpr int kFeed = 30'000;  // an answer far larger than its reader's buffers
  SyncLargeFeed(d.table, kFeed);
  const std::string x = d.Ban("203.0.113.7");
  std::atomic<bool> advanced{false};
  d.api->SetPullWaitHookForTesting([&] {
    if (!advanced.exchange(true)) clock.Advance(absl::Seconds(16));
  });
  RawConnection first(d.api->port(), /*receive_buffer=*/4096);
  StartPull(first, key, /*startup=*/false);
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  BouncerReply second = d.api->Handle(Request("/v1/decisions/stream", key, {{"startup", "false"}}));
  ASSERT_TRUE(advanced) << "the second pull did not wait for the first's answer";
  ASSERT_EQ(second.status, 200) << second.body.substr(0, 200);
  const std::string answer = first.ReadAnswer();  // the rest, read whole
  ASSERT_THAT(answer, HasSubstr("203.0.113.7"));
  ASSERT_TRUE(d.api->WaitForAnswersForTesting(absl::Seconds(120)));
  std::set<std::string> deleted = Values(json::parse(second.body, nullptr, false)["deleted"]);
  deleted.merge(Values(d.Pull(key)["deleted"]));
  EXPECT_EQ(deleted, std::set<std::string>{"203.0.113.7"});
}

using ::palisade::testing::ExecSql;

// A pull's claim on its bouncer's turn was given back by its settle only, or by a cleanup that
// stood down once the answer was handed to settle: anything that threw after that (bad_alloc
// building the settle function, the gzip, the provider) dropped the settle unrun, and every
// later pull of the key waited kAnswerInFlightWait for an answer no one was writing. The claim
// gives itself back, not delivered, when what holds it goes unrun.
TEST(BouncerApiTest, APullWhoseAnswerIsDroppedUnsettledGivesItsTurnBack) {
  SimulatedClock clock;
  Daemon d(FreshPath("dropped-unsettled.db"), clock);
  const std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  // A pull that waits would wait forever on the clock that stands still: it is let go at once.
  std::atomic<bool> waited{false};
  d.api->SetPullWaitHookForTesting([&] {
    if (!waited.exchange(true)) clock.Advance(absl::Seconds(16));
  });
  const BouncerReply dropped =
      d.api->AnswerAndDropForTesting(Request("/v1/decisions/stream", key, {{"startup", "false"}}));
  ASSERT_EQ(dropped.status, 200) << dropped.body;
  EXPECT_TRUE(d.api->WaitForAnswersForTesting(absl::ZeroDuration()))
      << "the dropped answer is still counted in flight";
  // Not delivered: the position stays, and the next pull serves the same changes, at once.
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.7"});
  EXPECT_FALSE(waited) << "the next pull waited for an answer no one was writing";
  EXPECT_EQ((*d.store->LoadBouncers())[0].position, d.api->last_seq());
}

// A pull whose position cannot be written leaves its position where it was: the next pull
// serves the same changes again, none skipped. Over HTTP the pull is recorded once its answer
// was written, so the bouncer has it (a replay later, not a loss); Handle, which takes its
// answer as delivered, records first and answers 500.
TEST(BouncerApiTest, APullThatCannotBeRecordedIsServedAgain) {
  SimulatedClock clock;
  const std::string path = FreshPath("pull-fails.db");
  Daemon d(path, clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  ExecSql(path, R"sql(
      CREATE TRIGGER break_pull BEFORE UPDATE ON bouncers
        BEGIN SELECT RAISE(ABORT, 'injected: pull not recorded'); END;)sql");
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(d.api->Handle(Request("/v1/decisions/stream", key, {{"startup", "false"}})).status,
            500);
  EXPECT_EQ((*d.store->LoadBouncers())[0].position, 0);
  ExecSql(path, "DROP TRIGGER break_pull;");
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ((*d.store->LoadBouncers())[0].position, d.api->last_seq());
}

// A bouncer's first answer (position 0) is written whole but its pull cannot be recorded: the
// position stays 0, yet the bouncer holds what the answer brought. Its next pull was taken for a
// first one (the live rows only) and never served the deletion of a decision withdrawn
// meanwhile; Trim took the bouncer for one that holds nothing back and forgot that deletion
// too. The host kept the ban until its timeout.
// The pulls of every kind counted for `bouncer` in a metrics exposition.
int PullsOf(const std::string& metrics, const std::string& bouncer) {
  int total = 0;
  for (const char* kind : {"startup", "stream", "live"}) {
    const std::string line = absl::StrCat("palisade_bouncer_pulls_total{bouncer=\"", bouncer,
                                          "\",kind=\"", kind, "\"} ");
    const size_t at = metrics.find(line);
    if (at != std::string::npos) total += std::atoi(metrics.c_str() + at + line.size());
  }
  return total;
}

void FirstPullNotRecordedThenWithdrawn(bool trim_before_the_next_pull) {
  SimulatedClock clock;
  const std::string path =
      FreshPath(trim_before_the_next_pull ? "first-unrecorded-trim.db" : "first-unrecorded.db");
  Daemon d(path, clock);
  const std::string key = *d.api->AddBouncer("fw");
  const std::string x = d.Ban("203.0.113.7");
  ExecSql(path, R"sql(
      CREATE TRIGGER break_pull BEFORE UPDATE ON bouncers
        BEGIN SELECT RAISE(ABORT, 'injected: pull not recorded'); END;)sql");
  ASSERT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.7"});
  ASSERT_EQ((*d.store->LoadBouncers())[0].position, 0);
  // Delivered: counted as a pull (the staleness alert is for bouncers that stopped asking),
  // and the store's refusal has its own counter.
  const std::string metrics = d.Metrics();
  EXPECT_EQ(PullsOf(metrics, "fw"), 1) << metrics;
  EXPECT_THAT(metrics,
              HasSubstr("palisade_bouncer_pull_record_failures_total{bouncer=\"fw\"} 1"));
  ExecSql(path, "DROP TRIGGER break_pull;");
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  if (trim_before_the_next_pull) {
    ASSERT_THAT(d.api->Flush(), IsOk());
    absl::StatusOr<int64_t> trimmed = d.api->Trim();
    ASSERT_THAT(trimmed, IsOk());
    EXPECT_EQ(*trimmed, 0) << "the deletion the bouncer's next pull needs was trimmed";
  }
  EXPECT_EQ(Values(d.Pull(key)["deleted"]), std::set<std::string>{"203.0.113.7"});
}

TEST(BouncerApiTest, AFirstPullThatCannotBeRecordedStillGetsItsDeletions) {
  FirstPullNotRecordedThenWithdrawn(/*trim_before_the_next_pull=*/false);
}

TEST(BouncerApiTest, AFirstPullThatCannotBeRecordedStillGetsItsDeletionsPastTrim) {
  FirstPullNotRecordedThenWithdrawn(/*trim_before_the_next_pull=*/true);
}

// The deletions owed after an answer the store refused to record (unrecorded_served) are
// in memory only: the ticker and Stop retry the record, so a clean restart keeps them.
TEST(BouncerApiTest, AFirstPullNotRecordedSurvivesACleanRestart) {
  SimulatedClock clock;
  const std::string path = FreshPath("first-unrecorded-restart.db");
  std::string key;
  std::string x;
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("fw");
    x = d.Ban("203.0.113.7");
    ExecSql(path, R"sql(
        CREATE TRIGGER break_pull BEFORE UPDATE ON bouncers
          BEGIN SELECT RAISE(ABORT, 'injected: pull not recorded'); END;)sql");
    ASSERT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.7"});
    ASSERT_EQ((*d.store->LoadBouncers())[0].position, 0);
    ExecSql(path, "DROP TRIGGER break_pull;");
  }
  Daemon d(path, clock);
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  EXPECT_EQ(Values(d.Pull(key)["deleted"]), std::set<std::string>{"203.0.113.7"});
}

// The same, but the daemon dies while the store still refuses (a crash, or a stop that cannot
// record either): the bouncer's first answer is recorded nowhere, and its position is 0 at the
// next start. The bouncer asks startup=false, for what changed since the answer it holds: it was
// served the live rows only, as a first pull, and never the deletion of the decision withdrawn
// since. CrowdSec's bouncers ask startup=true first (and after their own restart), so
// startup=false at position 0 says the record of an answer was lost: it reads the deletions
// logged since the bouncer was registered (none older: AFirstPullWithoutStartupIsSentNoDeletion).
TEST(BouncerApiTest, AFirstPullNotRecordedGetsItsDeletionsAfterACrash) {
  SimulatedClock clock;
  const std::string path = FreshPath("first-unrecorded-crash.db");
  std::string key;
  std::string x;
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("fw");
    x = d.Ban("203.0.113.7");
    d.Ban("203.0.113.8");
    ExecSql(path, R"sql(
        CREATE TRIGGER break_pull BEFORE UPDATE ON bouncers
          BEGIN SELECT RAISE(ABORT, 'injected: pull not recorded'); END;)sql");
    ASSERT_EQ(Values(d.Pull(key, /*startup=*/true)["new"]),
              (std::set<std::string>{"203.0.113.7", "203.0.113.8"}));
  }  // stopped with the trigger in place: the record at Stop fails too
  ExecSql(path, "DROP TRIGGER break_pull;");
  Daemon d(path, clock);
  ASSERT_EQ((*d.store->LoadBouncers())[0].position, 0);
  clock.Advance(absl::Minutes(1));  // the restart
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  const json next = d.Pull(key);
  EXPECT_EQ(Values(next["deleted"]), std::set<std::string>{"203.0.113.7"}) << next;
  EXPECT_EQ(Values(next["new"]), std::set<std::string>{"203.0.113.8"}) << next;
  EXPECT_TRUE(d.Pull(key)["deleted"].is_null());  // told once
}

// The same crash, but Trim runs (every minute) before the bouncer's first pull after the restart
// (every 10 s): at position 0, with no answer in flight nor unrecorded in this process, the
// bouncer held nothing back, and the deletion that pull is owed was trimmed before it. A bouncer
// with no pull recorded nor made in this process now holds back the deletions logged after its
// registration (age and count still trim them); those from before it still go.
TEST(BouncerApiTest, TrimKeepsTheDeletionsOwedToAFirstPullNotRecorded) {
  SimulatedClock clock;
  const std::string path = FreshPath("first-unrecorded-trim.db");
  std::string key;
  std::string x;
  {
    Daemon d(path, clock);
    ASSERT_THAT(d.table.Withdraw(d.Ban("198.51.100.1")), IsOk());  // before the bouncer
    clock.Advance(absl::Seconds(10));
    key = *d.api->AddBouncer("fw");
    clock.Advance(absl::Seconds(10));
    x = d.Ban("203.0.113.7");
    d.Ban("203.0.113.8");
    ExecSql(path, R"sql(
        CREATE TRIGGER break_pull BEFORE UPDATE ON bouncers
          BEGIN SELECT RAISE(ABORT, 'injected: pull not recorded'); END;)sql");
    ASSERT_EQ(Values(d.Pull(key, /*startup=*/true)["new"]),
              (std::set<std::string>{"203.0.113.7", "203.0.113.8"}));
  }  // stopped with the trigger in place: the record at Stop fails too
  ExecSql(path, "DROP TRIGGER break_pull;");
  Daemon d(path, clock);
  ASSERT_EQ((*d.store->LoadBouncers())[0].position, 0);
  clock.Advance(absl::Minutes(1));  // the restart
  ASSERT_THAT(d.table.Withdraw(x), IsOk());
  EXPECT_THAT(d.api->Trim(), IsOkAndHolds(1));  // 198.51.100.1's deletion only
  const json next = d.Pull(key);
  EXPECT_EQ(Values(next["deleted"]), std::set<std::string>{"203.0.113.7"}) << next;
  EXPECT_EQ(Values(next["new"]), std::set<std::string>{"203.0.113.8"}) << next;
  // Its pull was recorded: its position holds back what it was not served yet, as any other.
  EXPECT_THAT(d.api->Trim(), IsOkAndHolds(1));
}

// Changes reach the store in batches; a pull writes what waits first, so the position it
// serves is always one the store holds (a crash then loses nothing a bouncer was told).
TEST(BouncerApiTest, APullWritesTheWaitingChangesFirst) {
  SimulatedClock clock;
  Daemon d(FreshPath("batch.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  for (int i = 1; i <= 50; ++i) d.Ban(absl::StrCat("203.0.113.", i));
  EXPECT_THAT(d.Pull(key)["new"], SizeIs(50));
  EXPECT_THAT(*d.store->LoadBouncerChanges(0, false), SizeIs(50));
  EXPECT_EQ(d.store->LoadBouncerLogMeta()->last_seq, d.api->last_seq());
  EXPECT_EQ((*d.store->LoadBouncers())[0].position, d.api->last_seq());
}

// A bouncer that restarts asks with startup=true: everything active, and the deletions it was
// not told of yet (what ended while it was away), as CrowdSec lists recent deletions then.
TEST(BouncerApiTest, StartupListsTheDeletionsTheBouncerMissed) {
  SimulatedClock clock;
  Daemon d(FreshPath("startup-deleted.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  const std::string gone = d.Ban("203.0.113.7");
  d.Ban("203.0.113.8");
  EXPECT_THAT(d.Pull(key)["new"], SizeIs(2));
  ASSERT_THAT(d.table.Withdraw(gone), IsOk());
  json startup = d.Pull(key, true);
  EXPECT_EQ(Values(startup["new"]), std::set<std::string>{"203.0.113.8"});
  EXPECT_EQ(Values(startup["deleted"]), std::set<std::string>{"203.0.113.7"});
  // Told once.
  EXPECT_TRUE(d.Pull(key, true)["deleted"].is_null());
}

// The table stores a change before its listeners hear of it: a crash in between leaves the log
// behind, and the next start logs only the difference.
TEST(BouncerApiTest, AttachLogsWhatTheLogMissed) {
  SimulatedClock clock;
  const std::string path = FreshPath("attach.db");
  std::string key;
  {
    Daemon d(path, clock);
    key = *d.api->AddBouncer("fw");
    d.Ban("203.0.113.7");
    d.Ban("203.0.113.8");
    EXPECT_THAT(d.Pull(key)["new"], SizeIs(2));
  }
  std::string missed;
  {
    // The table changes with no bouncer API listening (the crash window).
    auto store = *Store::Open(path);
    DecisionTable table(clock);
    table.SetStore(store.get(), {});
    ASSERT_THAT(table.Restore(), IsOk());
    DecisionFilter f;
    f.target = "203.0.113.7";
    f.active_only = true;
    std::vector<palisade::v1::Decision> found = table.List(f);
    ASSERT_THAT(found, SizeIs(1));
    ASSERT_THAT(table.Withdraw(found[0].id()), IsOk());
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value("203.0.113.10");
    req.mutable_duration()->set_seconds(3600);
    ASSERT_THAT(table.AddManual(req), IsOk());
  }
  Daemon d(path, clock);
  json next = d.Pull(key);
  EXPECT_EQ(Values(next["new"]), std::set<std::string>{"203.0.113.10"});
  EXPECT_EQ(Values(next["deleted"]), std::set<std::string>{"203.0.113.7"});
}

TEST(BouncerApiTest, OnlyAddressAndRangeDecisionsThatActAreServed) {
  SimulatedClock clock;
  Daemon d(FreshPath("visible.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  auto update = [&](const std::string& id, palisade::v1::TargetKind kind, const std::string& v,
                    bool dry_run, palisade::v1::Action action = palisade::v1::ACTION_BLOCK) {
    DecisionUpdate u;
    u.change = DecisionChange::kCreated;
    u.decision.set_id(id);
    u.decision.mutable_target()->set_kind(kind);
    u.decision.mutable_target()->set_value(v);
    u.decision.set_action(action);
    u.decision.set_active(true);
    u.decision.set_dry_run(dry_run);
    u.decision.set_origin(palisade::v1::ORIGIN_RULE);
    u.decision.set_rule_id("sshd-bf");
    u.decision.mutable_expiry()->set_seconds(absl::ToUnixSeconds(clock.TimeNow()) + 60);
    d.api->OnUpdates({u});
  };
  update("a", palisade::v1::TARGET_KIND_IP, "203.0.113.1", false);
  update("b", palisade::v1::TARGET_KIND_IP, "203.0.113.2", true);  // dry run
  update("c", palisade::v1::TARGET_KIND_PATH, "/login", false, palisade::v1::ACTION_RATE_LIMIT);
  update("d", palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT, "sha256:0123456789abcdef", false,
         palisade::v1::ACTION_REVOKE_TOKEN);
  update("e", palisade::v1::TARGET_KIND_RANGE, "198.51.100.0/24", false);
  json pulled = d.Pull(key);
  EXPECT_EQ(Values(pulled["new"]), (std::set<std::string>{"203.0.113.1", "198.51.100.0/24"}));
  EXPECT_EQ(pulled["new"][0]["origin"], "crowdsec");
  EXPECT_EQ(pulled["new"][0]["scenario"], "sshd-bf");
  EXPECT_EQ(pulled["new"][0]["duration"], "1m0s");
  // A decision that turns dry run is taken back.
  update("a", palisade::v1::TARGET_KIND_IP, "203.0.113.1", true);
  EXPECT_EQ(Values(d.Pull(key)["deleted"]), std::set<std::string>{"203.0.113.1"});
}

TEST(BouncerApiTest, StreamFilters) {
  SimulatedClock clock;
  Daemon d(FreshPath("filters.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  d.Ban("198.51.100.0/24", absl::Hours(1), palisade::v1::TARGET_KIND_RANGE);
  auto values = [&](const std::string& query) {
    auto [status, body] = d.Get("/v1/decisions/stream?startup=true&" + query, key);
    EXPECT_EQ(status, 200) << query << ": " << body;
    return Values(json::parse(body, nullptr, false)["new"]);
  };
  EXPECT_EQ(values("scopes=ip"), std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(values("scopes=Range"), std::set<std::string>{"198.51.100.0/24"});
  EXPECT_EQ(values("scopes=ip,range"), (std::set<std::string>{"203.0.113.7", "198.51.100.0/24"}));
  EXPECT_EQ(values("scopes=country"), std::set<std::string>{});
  EXPECT_EQ(values("origins=cscli"), (std::set<std::string>{"203.0.113.7", "198.51.100.0/24"}));
  EXPECT_EQ(values("origins=crowdsec,lists"), std::set<std::string>{});
  EXPECT_EQ(values("scenarios_containing=hand"),
            (std::set<std::string>{"203.0.113.7", "198.51.100.0/24"}));
  EXPECT_EQ(values("scenarios_containing=ssh,http"), std::set<std::string>{});
  EXPECT_EQ(values("scenarios_not_containing=hand"), std::set<std::string>{});
  EXPECT_EQ(values("scenarios_not_containing=ssh"),
            (std::set<std::string>{"203.0.113.7", "198.51.100.0/24"}));
}

TEST(BouncerApiTest, BadInputIsAClearClientError) {
  SimulatedClock clock;
  Daemon d(FreshPath("bad.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  for (const char* target : {
           "/v1/decisions/stream?startup=maybe",
           "/v1/decisions/stream?startup=true&scopes=planet",
           "/v1/decisions/stream?startup=true&origins=somewhere",
           "/v1/decisions/stream?startup=true&scopes=",
           "/v1/decisions/stream?startup=true&startup=false",
           "/v1/decisions/stream?startup=true&evil=1",
           "/v1/decisions?ip=not-an-ip",
           "/v1/decisions?range=10.0.0.1/8",
           "/v1/decisions?type=tarpit",
       }) {
    auto [status, body] = d.Get(target, key);
    EXPECT_EQ(status, 400) << target;
    json j = json::parse(body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << body;
    EXPECT_TRUE(j["message"].is_string()) << body;
  }
  EXPECT_THAT(d.Get("/v1/decisions/stream?startup=maybe", key).second, HasSubstr("startup"));
  EXPECT_THAT(d.Get("/v1/decisions/stream?evil=1", key).second, HasSubstr("'evil'"));
  // A huge query string: 414, nothing served, whatever the key.
  const std::string huge =
      "/v1/decisions/stream?startup=true&scenarios_containing=" + std::string(5000, 'a');
  EXPECT_EQ(d.Get(huge, key).first, 414);
  EXPECT_EQ(d.Get(huge, "").first, 414);
  // Beyond httplib's own cap (8 KiB) it is still an error, never an answer.
  EXPECT_EQ(d.Get("/v1/decisions?ip=" + std::string(10000, '1'), key).first, 414);
  EXPECT_EQ(d.Get("/v1/other", key), std::make_pair(405, std::string()));
  EXPECT_EQ(d.Get("/v1/decisions/stream/x", key).first, 405);
  httplib::Client client("127.0.0.1", d.api->port());
  auto post = client.Post("/v1/decisions/stream", {{"X-Api-Key", key}}, "{}", "application/json");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  // A refused pull moved nothing: the bouncer still gets the decision.
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.7"});
  const std::string metrics = d.Metrics();
  EXPECT_THAT(metrics,
              HasSubstr("palisade_bouncer_requests_refused_total{reason=\"bad_request\"} 11"));
  EXPECT_THAT(metrics, HasSubstr("palisade_bouncer_requests_refused_total{reason=\"too_long\"} 2"));
}

TEST(BouncerApiTest, LiveMode) {
  SimulatedClock clock;
  Daemon d(FreshPath("live.db"), clock);
  std::string key = *d.api->AddBouncer("nginx");
  d.Ban("203.0.113.7");
  d.Ban("198.51.100.0/24", absl::Hours(1), palisade::v1::TARGET_KIND_RANGE,
        palisade::v1::ACTION_CHALLENGE);
  auto live = [&](const std::string& query) {
    auto [status, body] = d.Get("/v1/decisions" + query, key);
    EXPECT_EQ(status, 200) << query << ": " << body;
    return json::parse(body, nullptr, false);
  };
  EXPECT_EQ(Values(live("?ip=203.0.113.7")), std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(Values(live("?ip=198.51.100.77")), std::set<std::string>{"198.51.100.0/24"});
  EXPECT_EQ(live("?ip=198.51.100.77")[0]["type"], "captcha");
  EXPECT_EQ(d.Get("/v1/decisions?ip=192.0.2.1", key).second, "null");
  EXPECT_EQ(Values(live("?range=198.51.100.0/25")), std::set<std::string>{"198.51.100.0/24"});
  EXPECT_EQ(Values(live("?range=198.51.0.0/16&contains=false")),
            std::set<std::string>{"198.51.100.0/24"});
  EXPECT_TRUE(live("?range=198.51.0.0/16").is_null());
  EXPECT_EQ(Values(live("?scope=ip&value=203.0.113.7")), std::set<std::string>{"203.0.113.7"});
  EXPECT_EQ(Values(live("?type=captcha")), std::set<std::string>{"198.51.100.0/24"});
  EXPECT_EQ(Values(live("")), (std::set<std::string>{"203.0.113.7", "198.51.100.0/24"}));
  EXPECT_THAT(d.Metrics(),
              HasSubstr("palisade_bouncer_pulls_total{bouncer=\"nginx\",kind=\"live\"} 10"));
}

// The rows of `table` in the store's file (through a second connection).
int64_t RowsIn(const std::string& path, const std::string& table) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* q = nullptr;
    if (sqlite3_prepare_v2(db, ("SELECT COUNT(*) FROM " + table).c_str(), -1, &q, nullptr) ==
            SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
      n = sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
  }
  sqlite3_close(db);
  return n;
}

// A live-mode bouncer (nginx, HAProxy) asks once per request its server takes, so whoever
// sends requests to that server sets the pace: a question must not be a write transaction in
// the store (under the API's lock, which the decision table's listener waits for). Its last
// pull is kept in memory, and stored at most once a minute and at Stop.
TEST(BouncerApiTest, LiveQuestionsAreNotAStoreWriteEach) {
  SimulatedClock clock;
  const std::string path = FreshPath("live-writes.db");
  Daemon d(path, clock);
  std::string key = *d.api->AddBouncer("nginx");
  d.Ban("203.0.113.7");
  ExecSql(path, R"sql(
      CREATE TABLE pull_writes(n INTEGER);
      CREATE TRIGGER count_pull_writes AFTER UPDATE ON bouncers
        BEGIN INSERT INTO pull_writes VALUES(1); END;)sql");
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(d.Get("/v1/decisions?ip=203.0.113.7", key).first, 200);
  }
  EXPECT_LE(RowsIn(path, "pull_writes"), 1);
  EXPECT_THAT(d.Metrics(),
              HasSubstr("palisade_bouncer_pulls_total{bouncer=\"nginx\",kind=\"live\"} 100"));
  // A minute on, the next question stores the pull again.
  clock.Advance(absl::Minutes(2));
  ASSERT_EQ(d.Get("/v1/decisions?ip=203.0.113.7", key).first, 200);
  EXPECT_EQ((*d.store->LoadBouncers())[0].last_pull, clock.TimeNow());
  // And at Stop, the last one (not yet stored) is.
  clock.Advance(absl::Seconds(5));
  ASSERT_EQ(d.Get("/v1/decisions?ip=203.0.113.7", key).first, 200);
  d.api->Stop();
  EXPECT_EQ((*d.store->LoadBouncers())[0].last_pull, clock.TimeNow());
  EXPECT_LE(RowsIn(path, "pull_writes"), 3);
}

// While the store refused the pull's row (a full disk), every live question past the minute
// retried the write under the API's lock and logged a line: 500 questions a second, 500 failed
// transactions and log lines. A failed store waits a minute, as a stored one does, and is
// logged once until a write goes through.
TEST(BouncerApiTest, ALiveQuestionsRefusedPullIsRetriedAMinuteLaterAndLoggedOnce) {
  SimulatedClock clock;
  const std::string path = FreshPath("live-refused.db");
  Attached d(path, clock);
  const std::string key = *d.api->AddBouncer("nginx");
  d.Ban("203.0.113.7");
  const BouncerRequest question = Request("/v1/decisions", key, {{"ip", "203.0.113.7"}});
  ASSERT_EQ(d.api->Handle(question).status, 200);
  ExecSql(path, R"sql(
      CREATE TRIGGER refuse_pull BEFORE UPDATE ON bouncers
        BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END;)sql");
  clock.Advance(absl::Minutes(2));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(d.api->Handle(question).status, 200) << i;
  EXPECT_EQ(d.LinesWith("injected"), 1);
  // A minute on it is tried again (not logged again); once the store takes it, it is stored.
  clock.Advance(absl::Minutes(1));
  ASSERT_EQ(d.api->Handle(question).status, 200);
  EXPECT_EQ(d.LinesWith("injected"), 1);
  ExecSql(path, "DROP TRIGGER refuse_pull;");
  clock.Advance(absl::Minutes(1));
  ASSERT_EQ(d.api->Handle(question).status, 200);
  EXPECT_EQ((*d.store->LoadBouncers())[0].last_pull, clock.TimeNow());
}

// Holds `request` in the middle of its answer (the answer hook: its rows are chosen, its
// answer not yet written), makes a decision on `ban` from another thread meanwhile, and says
// whether the table's listener (BouncerApi::OnUpdates, called on that thread) was through before
// the answer was let go. The 30 s are no speed threshold: a listener that does not wait for the
// answer is through at once, one that waits is never through while the answer is held.
bool ListenerWasThroughDuring(Daemon& d, const BouncerRequest& request, const std::string& ban,
                              BouncerReply* reply) {
  absl::Notification held, let_go;
  d.api->SetAnswerHookForTesting([&] {
    if (!held.HasBeenNotified()) held.Notify();
    let_go.WaitForNotification();
  });
  std::thread asker([&] { *reply = d.api->Handle(request); });
  bool through = false;
  if (held.WaitForNotificationWithTimeout(absl::Seconds(30))) {
    absl::Notification heard;
    std::thread table([&] {
      d.Ban(ban);
      heard.Notify();
    });
    through = heard.WaitForNotificationWithTimeout(absl::Seconds(30));
    let_go.Notify();
    table.join();
  } else {
    ADD_FAILURE() << "the request never reached its answer";
    let_go.Notify();
  }
  asker.join();
  d.api->SetAnswerHookForTesting(nullptr);
  return through;
}

// With 100,000 feed ranges a startup answer is long to choose and write, and it was written
// under the API's lock, which the decision table's listener takes: a bouncer's restart held up
// every decision's way to the edge. The answer is now written outside the lock, from the active
// rows as they were at the position it serves; what changed meanwhile comes with the next pull.
TEST(BouncerApiTest, TheListenerGoesOnWhileAStartupAnswerIsWritten) {
  SimulatedClock clock;
  Daemon d(FreshPath("startup-no-wait.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("198.51.100.0/24", absl::Hours(4), palisade::v1::TARGET_KIND_RANGE);
  BouncerReply startup;
  EXPECT_TRUE(ListenerWasThroughDuring(
      d, Request("/v1/decisions/stream", key, {{"startup", "true"}}), "203.0.113.9", &startup))
      << "the decision table's listener waited for a startup answer being written";
  ASSERT_EQ(startup.status, 200) << startup.body;
  json answer = json::parse(startup.body, nullptr, false);
  EXPECT_EQ(Values(answer["new"]), std::set<std::string>{"198.51.100.0/24"});
  EXPECT_EQ(Values(d.Pull(key)["new"]), std::set<std::string>{"203.0.113.9"});
  EXPECT_TRUE(d.Pull(key)["new"].is_null());
}

// A live-mode bouncer asks once per request its server takes, and each question matched every
// active range (parsing each) under the API's lock: traffic to a protected site set how long
// the table's listener waited. The question is now answered outside the lock, over ranges
// parsed once, when they were logged.
TEST(BouncerApiTest, TheListenerGoesOnWhileALiveQuestionIsAnswered) {
  SimulatedClock clock;
  Daemon d(FreshPath("live-no-wait.db"), clock);
  std::string key = *d.api->AddBouncer("nginx");
  d.Ban("198.51.100.0/24", absl::Hours(4), palisade::v1::TARGET_KIND_RANGE);
  BouncerReply live;
  EXPECT_TRUE(ListenerWasThroughDuring(d, Request("/v1/decisions", key, {{"ip", "198.51.100.7"}}),
                                       "198.51.100.8", &live))
      << "the decision table's listener waited for a live question being answered";
  ASSERT_EQ(live.status, 200) << live.body;
  EXPECT_EQ(Values(json::parse(live.body, nullptr, false)),
            std::set<std::string>{"198.51.100.0/24"});
  EXPECT_EQ(Values(json::parse(d.Get("/v1/decisions?ip=198.51.100.8", key).second, nullptr, false)),
            (std::set<std::string>{"198.51.100.0/24", "198.51.100.8"}));
}

// The active rows are a snapshot with the changes since in a layer above it (folded by the
// next reader): an ended decision the snapshot holds is marked, one it never held is dropped,
// and every answer is that of the rows at its position, whatever the changes around it.
TEST(BouncerApiTest, AnswersFollowTheChangesAroundTheirSnapshot) {
  SimulatedClock clock;
  Daemon d(FreshPath("layers.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  // Live mode: the values on `ip` (every active one for "").
  auto live = [&](const std::string& ip) {
    std::multimap<std::string, std::string> params;
    if (!ip.empty()) params.emplace("ip", ip);
    BouncerReply r = d.api->Handle(Request("/v1/decisions", key, std::move(params)));
    EXPECT_EQ(r.status, 200) << r.body;
    return Values(json::parse(r.body, nullptr, false));
  };
  const std::string a = d.Ban("203.0.113.1");
  d.Ban("198.51.100.0/24", absl::Hours(4), palisade::v1::TARGET_KIND_RANGE);
  EXPECT_EQ(live(""), (std::set<std::string>{"203.0.113.1", "198.51.100.0/24"}));
  ASSERT_THAT(d.table.Withdraw(a), IsOk());  // in the snapshot: marked
  const std::string c = d.Ban("203.0.113.3");
  ASSERT_THAT(d.table.Withdraw(c), IsOk());  // never in one: dropped
  d.Ban("198.51.100.0/24", absl::Hours(8), palisade::v1::TARGET_KIND_RANGE);  // extended
  EXPECT_EQ(live("203.0.113.1"), std::set<std::string>{});
  EXPECT_EQ(live("198.51.100.9"), std::set<std::string>{"198.51.100.0/24"});
  EXPECT_EQ(Values(d.Pull(key, /*startup=*/true)["new"]), std::set<std::string>{"198.51.100.0/24"});

  // Changes and answers at once: a stream bouncer that applies what it is served ends with
  // what is active, and so do a live question and a startup pull afterwards.
  std::string stream_key = *d.api->AddBouncer("stream");
  std::set<std::string> held;  // the values the stream bouncer holds (one decision each)
  auto pull = [&](bool startup) {
    BouncerReply r = d.api->Handle(
        Request("/v1/decisions/stream", stream_key, {{"startup", startup ? "true" : "false"}}));
    ASSERT_EQ(r.status, 200) << r.body;
    json j = json::parse(r.body, nullptr, false);
    if (!j["deleted"].is_null()) {
      for (const json& x : j["deleted"]) held.erase(x["value"].get<std::string>());
    }
    if (!j["new"].is_null()) {
      for (const json& x : j["new"]) held.insert(x["value"].get<std::string>());
    }
  };
  pull(true);
  absl::Notification done;
  std::thread table([&] {
    for (int i = 1; i <= 200; ++i) {
      const std::string id = d.Ban(absl::StrCat("192.0.2.", i));
      if (i % 2 == 0) {
        EXPECT_THAT(d.table.Withdraw(id), IsOk());
      }
    }
    done.Notify();
  });
  std::thread asker([&] {
    while (!done.HasBeenNotified()) live("192.0.2.7");
  });
  while (!done.HasBeenNotified()) pull(false);
  table.join();
  asker.join();
  pull(false);
  std::set<std::string> active = {"198.51.100.0/24"};
  for (int i = 1; i <= 200; i += 2) active.insert(absl::StrCat("192.0.2.", i));
  EXPECT_EQ(live(""), active);
  EXPECT_EQ(Values(d.Pull(*d.api->AddBouncer("fresh"), /*startup=*/true)["new"]), active);
  EXPECT_EQ(held, active);
}

TEST(BouncerApiTest, TrimmingForgetsServedDeletionsAndAFarBehindBouncerStartsOver) {
  SimulatedClock clock;
  palisade::v1::BouncerApiConfig config;
  config.mutable_deletion_retention()->set_seconds(3600);
  Daemon d(FreshPath("trim.db"), clock, config);
  std::string fast = *d.api->AddBouncer("fast");
  std::string slow = *d.api->AddBouncer("slow");
  const std::string a = d.Ban("203.0.113.1", absl::Hours(100));
  d.Ban("203.0.113.2", absl::Hours(100));
  d.Pull(fast);
  d.Pull(slow);
  ASSERT_THAT(d.table.Withdraw(a), IsOk());
  d.Pull(fast);
  // slow has not been served the deletion: it stays.
  EXPECT_EQ(*d.api->Trim(), 0);
  // Two hours later the deletion is past deletion_retention: forgotten, slow is behind.
  clock.Advance(absl::Hours(2));
  EXPECT_EQ(*d.api->Trim(), 1);
  const std::string c = d.Ban("203.0.113.3", absl::Hours(100));
  json caught_up = d.Pull(slow);
  // Every active decision, as at startup (the lost deletion cannot be told).
  EXPECT_EQ(Values(caught_up["new"]), (std::set<std::string>{"203.0.113.2", "203.0.113.3"}));
  EXPECT_THAT(d.Metrics(),
              HasSubstr("palisade_bouncer_pulls_total{bouncer=\"slow\",kind=\"startup\"} 1"));
  // fast was served everything before: only what is new.
  EXPECT_EQ(Values(d.Pull(fast)["new"]), std::set<std::string>{"203.0.113.3"});
  // Once both were served, deletions go at the next trim.
  ASSERT_THAT(d.table.Withdraw(c), IsOk());
  d.Pull(fast);
  d.Pull(slow);
  EXPECT_EQ(*d.api->Trim(), 1);
}

// A live-mode bouncer's position never moves, and one that never pulled stays at 0: the
// minimum over every bouncer's position was 0, and no served deletion was ever trimmed. A
// bouncer at 0 was served nothing: it holds no deletion back, but for one never pulled the
// deletions logged after its registration (TrimKeepsTheDeletionsOwedToAFirstPullNotRecorded):
// "idle" is registered after this one.
TEST(BouncerApiTest, ABouncerThatWasServedNothingDoesNotHoldDeletionsBack) {
  SimulatedClock clock;
  Attached d(FreshPath("trim-live.db"), clock);
  const std::string fw = *d.api->AddBouncer("fw");
  const std::string nginx = *d.api->AddBouncer("nginx");
  auto pull = [&] {
    ASSERT_EQ(d.api->Handle(Request("/v1/decisions/stream", fw, {{"startup", "false"}})).status,
              200);
  };
  const std::string a = d.Ban("203.0.113.1");
  pull();
  ASSERT_THAT(d.table.Withdraw(a), IsOk());
  pull();
  ASSERT_EQ(d.api->Handle(Request("/v1/decisions", nginx, {{"ip", "203.0.113.1"}})).status, 200);
  clock.Advance(absl::Seconds(10));
  d.api->AddBouncer("idle").IgnoreError();
  EXPECT_EQ(*d.api->Trim(), 1);
}

// Trim ran its store transaction (a bulk delete, once a minute) under the API's lock: every key
// check, live question and decision change waited for it. It now holds the pulls' lock only.
// The 30 s are no speed threshold: what does not wait for Trim is through at once, what waits
// is never through while Trim is held.
TEST(BouncerApiTest, QuestionsAndChangesGoOnWhileTrimWritesTheStore) {
  SimulatedClock clock;
  Attached d(FreshPath("trim-no-wait.db"), clock);
  const std::string key = *d.api->AddBouncer("nginx");
  d.Ban("203.0.113.7");
  absl::Notification held, let_go;
  d.api->SetTrimHookForTesting([&] {
    held.Notify();
    let_go.WaitForNotification();
  });
  absl::StatusOr<int64_t> trimmed;
  std::thread trimmer([&] { trimmed = d.api->Trim(); });
  ASSERT_TRUE(held.WaitForNotificationWithTimeout(absl::Seconds(30)))
      << "Trim never reached the store";
  absl::Notification answered, changed;
  BouncerReply live;
  std::thread asker([&] {
    live = d.api->Handle(Request("/v1/decisions", key, {{"ip", "203.0.113.7"}}));
    answered.Notify();
  });
  std::thread table([&] {
    d.Ban("203.0.113.8");
    changed.Notify();
  });
  EXPECT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(30)))
      << "a live question waited for Trim's store transaction";
  EXPECT_TRUE(changed.WaitForNotificationWithTimeout(absl::Seconds(30)))
      << "the decision table's listener waited for Trim's store transaction";
  let_go.Notify();
  trimmer.join();
  asker.join();
  table.join();
  EXPECT_THAT(trimmed, IsOk());
  EXPECT_EQ(live.status, 200);
  EXPECT_EQ(Values(json::parse(live.body, nullptr, false)), std::set<std::string>{"203.0.113.7"});
}

// A bouncer's first pull without startup read every row of the log, and was sent every
// deletion held (up to max_deletions) though it had nothing to delete. It is sent the deletions
// logged after its registration only (owed to an answer whose record a crash lost:
// AFirstPullNotRecordedGetsItsDeletionsAfterACrash), here none; the store does not even read
// the older ones (store_test: BouncerChangesSinceARegistrationLeaveOlderDeletionsOut).
TEST(BouncerApiTest, AFirstPullWithoutStartupIsSentNoDeletion) {
  SimulatedClock clock;
  Attached d(FreshPath("first-pull.db"), clock);
  const std::string fw = *d.api->AddBouncer("fw");
  std::vector<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    ids.push_back(d.Ban(absl::StrCat("203.0.", i / 256, ".", i % 256)));
  }
  d.Ban("198.51.100.1");
  auto pull = [&](const std::string& key) {
    BouncerReply r = d.api->Handle(Request("/v1/decisions/stream", key, {{"startup", "false"}}));
    EXPECT_EQ(r.status, 200) << r.body.substr(0, 200);
    return json::parse(r.body, nullptr, false);
  };
  EXPECT_THAT(pull(fw)["new"], SizeIs(1001));
  for (const std::string& id : ids) ASSERT_THAT(d.table.Withdraw(id), IsOk());
  EXPECT_THAT(pull(fw)["deleted"], SizeIs(1000));
  clock.Advance(absl::Seconds(10));
  json first = pull(*d.api->AddBouncer("fresh"));
  EXPECT_TRUE(first["deleted"].is_null()) << first["deleted"].size() << " deletions";
  EXPECT_EQ(Values(first["new"]), std::set<std::string>{"198.51.100.1"});
}

// httplib 0.11 reads a request's headers with no bound on their count: before anything checks
// the key, one connection could make the daemon hold as many bytes as it sent (200 MB of
// headers made 389 MB of resident memory). A request is read up to max_query_bytes plus 16 KiB
// of headers; past that the connection is answered 431 and closed, and the request is never
// handled.
TEST(BouncerApiTest, ARequestsHeadersAreBoundedInBytesBeforeTheKeyIsChecked) {
  SimulatedClock clock;
  Daemon d(FreshPath("headers.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  constexpr size_t kFlood = size_t{48} << 20;
  EXPECT_LT(FloodHeaders(d.api->port(), "/v1/decisions/stream?startup=true", kFlood), kFlood);
  EXPECT_THAT(d.Metrics(), Not(HasSubstr("reason=\"auth\"")));
  // Requests as bouncers send them are served as before (a client that keeps its connection
  // alive opens the next one when told this one closes).
  httplib::Client client("127.0.0.1", d.api->port());
  client.set_keep_alive(true);
  const httplib::Headers headers = {{"X-Api-Key", key}, {"User-Agent", "crowdsec-test/v1"}};
  for (int i = 0; i < 3; ++i) {
    httplib::Result r = client.Get("/v1/decisions?ip=203.0.113.7", headers);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_THAT(r->body, HasSubstr("203.0.113.7"));
  }
}

// A request past its byte budget is answered (a 4xx a client can tell), not dropped without a
// word: a bouncer or a curl that sent a long query sees why.
TEST(BouncerApiTest, ARequestPastItsBudgetIsAnsweredNotDropped) {
  SimulatedClock clock;
  Daemon d(FreshPath("long-query.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  httplib::Client client("127.0.0.1", d.api->port());
  // httplib's client gives up on a write after 5 s: on a loaded machine the server's thread can
  // be off the core that long while the client writes 6 MiB (the full suite failed once here).
  client.set_write_timeout(120, 0);
  // The answer comes while the client is still writing the longer ones; what it still sends is
  // read and dropped (up to 8 MiB), so closing does not reset the answer away.
  for (size_t size : {size_t{64} << 10, size_t{2} << 20, size_t{6} << 20}) {
    httplib::Result r = client.Get("/v1/decisions?ip=203.0.113.7&pad=" + std::string(size, 'a'),
                                   {{"X-Api-Key", key}});
    ASSERT_TRUE(r) << size << ": " << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 431) << size;
    EXPECT_THAT(r->body, Not(HasSubstr("203.0.113.7"))) << size;
  }
  // The next connection is served as before.
  httplib::Result r = client.Get("/v1/decisions?ip=203.0.113.7", {{"X-Api-Key", key}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// The request deadline ran on the real clock, not the API's, and a request cut short by it was
// not counted. Now it is measured on the API's clock and counted (reason "timeout").
TEST(BouncerApiTest, ARequestPastItsDeadlineOnTheApisClockIs408AndCounted) {
  SimulatedClock clock;
  Daemon d(FreshPath("deadline.db"), clock);
  const std::string key = *d.api->AddBouncer("nginx");
  std::string answer;
  // The clock moves 61 s a step, past any deadline a worker fixed before, until the server
  // answers or closes. A step that lands between the worker's fixing the deadline and its first
  // look at the request closes the connection quietly (nothing of a request came): another.
  for (int tries = 0; tries < 5 && answer.empty(); ++tries) {
    RawConnection c(d.api->port());
    ASSERT_TRUE(c.Send("GET /v1/decisions?ip=203.0.113.7 HT"));
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (!c.closed() && c.got().empty() && absl::Now() < give_up) {
      clock.Advance(absl::Seconds(61));
      c.Read(absl::Milliseconds(50));
    }
    answer = c.ReadAnswer();
  }
  EXPECT_THAT(answer, ::testing::StartsWith("HTTP/1.1 408 "));
  EXPECT_THAT(d.Metrics(),
              HasSubstr("palisade_bouncer_requests_refused_total{reason=\"timeout\"} 1"));
  // The clock standing still, requests are served as before.
  EXPECT_EQ(d.Get("/v1/decisions?ip=203.0.113.7", key).first, 200);
}

// A worker serves a connection's requests one after another and waits for the next one in
// between (the keep-alive wait, 30 s), so connections kept alive and idle held every worker,
// without a key, for up to five requests each: no bouncer was answered meanwhile. A connection
// now carries one request and is closed after its answer; the next one takes its turn in the
// queue. With one worker: A is told its connection closes, a second request on it is not
// served, and B is answered.
TEST(BouncerApiTest, AConnectionCarriesOneRequestSoNoWorkerWaitsOnAnIdleOne) {
  SimulatedClock clock;
  palisade::v1::BouncerApiConfig config;
  config.set_max_concurrent_requests(1);
  Daemon d(FreshPath("keep-alive.db"), clock, config);
  const std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  RawConnection a(d.api->port());
  const std::string keyless =
      "GET /v1/decisions?ip=203.0.113.7 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  ASSERT_TRUE(a.Send(keyless));
  const std::string first = a.ReadAnswer();
  EXPECT_THAT(first, ::testing::StartsWith("HTTP/1.1 403 "));
  EXPECT_THAT(first, HasSubstr("Connection: close"));
  // Sent whole or refused: either way the server does not read it (ReadAnswer: "" once closed).
  (void)a.Send(keyless);
  EXPECT_EQ(a.ReadAnswer(), "") << "a second request was served on the connection";
  EXPECT_TRUE(a.closed());
  // Requests as bouncers send them (httplib's client keeps connections alive) are served.
  httplib::Client b("127.0.0.1", d.api->port());
  b.set_keep_alive(true);
  for (int i = 0; i < 3; ++i) {
    httplib::Result r = b.Get("/v1/decisions?ip=203.0.113.7", {{"X-Api-Key", key}});
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200);
  }
}

// Connections from one address could hold every worker and the queue behind them, with no key:
// a worker waits 30 s for a silent connection's first byte, and up to the request deadline for a
// request sent a byte at a time. Any peer that reaches the listener then starved every bouncer:
// no new blocks, no withdrawals. A remote address is now served on at most
// max_connections_per_address workers (default: half of them, room for a live-mode bouncer's
// parallel ?ip= questions); its further connections are closed unread and counted (reason
// "address_busy"). A test can only connect over loopback, which is not limited: here
// 127.0.0.1 stands for a remote peer (SetLoopbackPeerForTesting). It opens one connection per
// worker and keeps each alive with a header byte well within every read timeout (the request
// deadline, on the simulated clock, never passes); a bouncer on 127.0.0.2 is still answered.
TEST(BouncerApiTest, OneRemoteAddressCannotHoldEveryWorker) {
  SimulatedClock clock;
  palisade::v1::BouncerApiConfig config;
  config.set_max_concurrent_requests(4);  // 2 per address (the default)
  Daemon d(FreshPath("per-address.db"), clock, config, nullptr, [](BouncerApi& api) {
    api.SetLoopbackPeerForTesting([](absl::string_view peer) { return peer != "127.0.0.1"; });
  });
  const std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  std::vector<std::unique_ptr<RawConnection>> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(std::make_unique<RawConnection>(d.api->port(), 0, "127.0.0.1"));
    ASSERT_TRUE(slow.back()->Send("GET /v1/decisions?ip=203.0.113.7 HTTP/1.1\r\nX-Pad: "));
  }
  RawConnection bouncer(d.api->port(), 0, "127.0.0.2");
  ASSERT_TRUE(bouncer.Send(absl::StrCat("GET /v1/decisions?ip=203.0.113.7 HTTP/1.1\r\n",
                                        "Host: palisade\r\nX-Api-Key: ", key, "\r\n\r\n")));
  // A bound, not a pace: served at once with the cap, never without it.
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!absl::StrContains(bouncer.got(), "\r\n\r\n") && !bouncer.closed() &&
         absl::Now() < give_up) {
    for (auto& c : slow) (void)c->Send("a");
    bouncer.Read(absl::Milliseconds(200));
  }
  ASSERT_THAT(bouncer.got(), ::testing::StartsWith("HTTP/1.1 200 "))
      << "not answered while one address held its connections";
  const std::string answer = bouncer.ReadAnswer();
  EXPECT_THAT(answer, ::testing::StartsWith("HTTP/1.1 200 "));
  EXPECT_THAT(answer, HasSubstr("203.0.113.7"));
  // The workers that closed the others may still be counting (a bound, polled).
  const std::string busy = "palisade_bouncer_requests_refused_total{reason=\"address_busy\"} 2";
  const absl::Time counted = absl::Now() + absl::Seconds(60);
  while (!absl::StrContains(d.Metrics(), busy) && absl::Now() < counted) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_THAT(d.Metrics(), HasSubstr(busy));
}

// The limit cannot tell local users apart (each connects from any 127.x.y.z): limiting
// loopback peers stopped none of them and let one starve the co-located bouncers, 2 silent
// connections from 127.0.0.1 having every local pull closed unread. Loopback peers are not
// limited: 3 slow connections from 127.0.0.1, then a bouncer's question from 127.0.0.1 too, is
// answered on the 4th worker, and nothing is closed unread.
TEST(BouncerApiTest, ALoopbackPeerIsNotLimited) {
  SimulatedClock clock;
  palisade::v1::BouncerApiConfig config;
  config.set_max_concurrent_requests(4);  // 2 per address (the default), for remote peers
  Daemon d(FreshPath("per-address-loopback.db"), clock, config);
  const std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  std::vector<std::unique_ptr<RawConnection>> slow;
  for (int i = 0; i < 3; ++i) {
    slow.push_back(std::make_unique<RawConnection>(d.api->port(), 0, "127.0.0.1"));
    ASSERT_TRUE(slow.back()->Send("GET /v1/decisions?ip=203.0.113.7 HTTP/1.1\r\nX-Pad: "));
  }
  RawConnection bouncer(d.api->port(), 0, "127.0.0.1");
  ASSERT_TRUE(bouncer.Send(absl::StrCat("GET /v1/decisions?ip=203.0.113.7 HTTP/1.1\r\n",
                                        "Host: palisade\r\nX-Api-Key: ", key, "\r\n\r\n")));
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!absl::StrContains(bouncer.got(), "\r\n\r\n") && !bouncer.closed() &&
         absl::Now() < give_up) {
    for (auto& c : slow) (void)c->Send("a");
    bouncer.Read(absl::Milliseconds(200));
  }
  ASSERT_THAT(bouncer.got(), ::testing::StartsWith("HTTP/1.1 200 "))
      << "a loopback peer's 4th connection was not answered";
  for (auto& c : slow) {
    c->Read(absl::Milliseconds(100));
    EXPECT_FALSE(c->closed());
  }
  EXPECT_THAT(d.Metrics(),
              HasSubstr("palisade_bouncer_requests_refused_total{reason=\"address_busy\"} 0"));
}

TEST(IsLoopbackPeerTest, LoopbackOnly) {
  for (const char* peer : {"127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.2"}) {
    EXPECT_TRUE(IsLoopbackPeer(peer)) << peer;
  }
  for (const char* peer : {"203.0.113.7", "10.0.0.1", "128.0.0.1", "::ffff:203.0.113.7",
                           "2001:db8::1", "::2", "", "not an address"}) {
    EXPECT_FALSE(IsLoopbackPeer(peer)) << peer;
  }
}

TEST(BouncerApiTest, OverTlsWhenConfigured) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string cert = dir + "/b-cert.pem", key_file = dir + "/b-key.pem";
  ASSERT_EQ(std::system(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "
                                     "/CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout ",
                                     key_file, " -out ", cert, " 2>/dev/null")
                            .c_str()),
            0);
  SimulatedClock clock;
  palisade::v1::BouncerApiConfig config;
  config.mutable_tls()->set_cert_file(cert);
  config.mutable_tls()->set_key_file(key_file);
  Daemon d(FreshPath("tls.db"), clock, config);
  std::string key = *d.api->AddBouncer("fw");
  d.Ban("203.0.113.7");
  httplib::SSLClient tls("127.0.0.1", d.api->port());
  tls.set_ca_cert_path(cert.c_str());
  tls.enable_server_certificate_verification(true);
  httplib::Result r = tls.Get("/v1/decisions/stream?startup=true", {{"X-Api-Key", key}});
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Values(json::parse(r->body)["new"]), std::set<std::string>{"203.0.113.7"});
  // Plain HTTP to the TLS port is not served.
  EXPECT_NE(d.Get("/v1/decisions/stream?startup=true", key).first, 200);

  palisade::v1::BouncerApiConfig missing = config;
  missing.set_listen("127.0.0.1:0");
  missing.mutable_tls()->set_cert_file(dir + "/no-such.pem");
  prometheus::Registry registry;
  auto store = *Store::Open(FreshPath("tls-missing.db"));
  auto api = BouncerApi::Create(missing, clock, store.get(), registry);
  ASSERT_THAT(api, IsOk());
  EXPECT_THAT((*api)->Start(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no-such.pem")));
}

TEST(BouncerApiTest, StalenessAndCounts) {
  SimulatedClock clock;
  Daemon d(FreshPath("stale.db"), clock);
  std::string key = *d.api->AddBouncer("fw");
  d.api->AddBouncer("idle").IgnoreError();
  EXPECT_EQ(d.api->BouncerCounts(), std::make_pair(2u, 0u));
  clock.Advance(absl::Minutes(6));
  d.Pull(key);
  EXPECT_EQ(d.api->BouncerCounts(), std::make_pair(2u, 1u));
  std::vector<BouncerInfo> list = d.api->ListBouncers();
  EXPECT_FALSE(list[0].stale);
  EXPECT_TRUE(list[1].stale);
  EXPECT_EQ(list[1].last_pull, absl::InfinitePast());
}

// When the store refuses the bouncer log (a full disk), every decision change retried the whole
// backlog inside the table's listener (~2,000 failed writes, and log lines, for 12,000 bans)
// and the backlog grew without bound. Now a failed write is retried by the ticker and by pulls
// only, and past a cap in bytes the backlog is dropped: bouncers then get a startup-style
// answer, and the log is rebuilt from the active decisions once the store takes it again.
TEST(BouncerApiTest, ARefusedLogIsRetriedOutsideTheListenerAndCappedInBytes) {
  SimulatedClock clock;
  const std::string path = FreshPath("log-refused.db");
  auto store = *Store::Open(path);
  DecisionTable table(clock);
  table.SetStore(store.get(), {});
  ASSERT_THAT(table.Restore(), IsOk());
  prometheus::Registry registry;
  absl::Mutex lines_mu;
  std::vector<std::string> lines;
  palisade::v1::BouncerApiConfig config;
  config.set_listen("127.0.0.1:0");
  auto created =
      BouncerApi::Create(config, clock, store.get(), registry, [&](const std::string& line) {
        absl::MutexLock lock(&lines_mu);
        lines.push_back(line);
      });
  ASSERT_THAT(created, IsOk());
  std::unique_ptr<BouncerApi> api = *std::move(created);
  // Not started: no ticker, so every write is one this test makes happen.
  constexpr size_t kCap = size_t{512} << 10;
  api->SetMaxPendingBytesForTesting(kCap);
  ASSERT_THAT(api->Attach(table), IsOk());
  const std::string key = *api->AddBouncer("fw");
  auto ban = [&](const std::string& ip) {
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_value(ip);
    req.mutable_duration()->set_seconds(3600);
    ASSERT_THAT(table.AddManual(req), IsOk());
  };
  auto pull = [&](bool startup) {
    return api->Handle(
        Request("/v1/decisions/stream", key, {{"startup", startup ? "true" : "false"}}));
  };
  ban("198.51.100.1");
  BouncerReply first = pull(false);
  ASSERT_EQ(first.status, 200) << first.body;

  // The log's rows and its position, as a full disk refuses them.
  ExecSql(path, R"sql(
      CREATE TRIGGER refuse_rows BEFORE INSERT ON bouncer_changes
        BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END;
      CREATE TRIGGER refuse_position BEFORE INSERT ON bouncer_log
        BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END;)sql");
  constexpr int kBans = 12'000;
  size_t most = 0;
  for (int i = 0; i < kBans; ++i) {
    ban(absl::StrCat("203.0.", i / 256, ".", i % 256));
    if (i % 500 == 0) most = std::max(most, api->pending_bytes());
  }
  most = std::max(most, api->pending_bytes());
  auto count_lines = [&](absl::string_view part) {
    absl::MutexLock lock(&lines_mu);
    return std::count_if(lines.begin(), lines.end(),
                         [&](const std::string& l) { return absl::StrContains(l, part); });
  };
  EXPECT_LE(count_lines("injected: disk full"), 10);
  EXPECT_EQ(count_lines("dropped;"), 1);
  EXPECT_LE(most, kCap);
  // A pull is not served past what the store holds.
  EXPECT_EQ(pull(false).status, 500);

  ExecSql(path, "DROP TRIGGER refuse_rows; DROP TRIGGER refuse_position;");
  BouncerReply caught_up = pull(false);
  ASSERT_EQ(caught_up.status, 200) << caught_up.body.substr(0, 200);
  json answer = json::parse(caught_up.body, nullptr, false);
  EXPECT_THAT(answer["new"], SizeIs(kBans + 1));
  EXPECT_THAT(Serialized(registry),
              HasSubstr("palisade_bouncer_pulls_total{bouncer=\"fw\",kind=\"startup\"} 1"));
  EXPECT_THAT(Serialized(registry), HasSubstr("palisade_bouncer_log_overflows_total"));
  // The log is whole again: a bouncer that never pulled reads every active decision from it.
  EXPECT_THAT(*store->LoadBouncerChanges(0, /*live_only=*/true), SizeIs(kBans + 1));
  const std::string fresh = *api->AddBouncer("fresh");
  BouncerReply from_log =
      api->Handle(Request("/v1/decisions/stream", fresh, {{"startup", "false"}}));
  ASSERT_EQ(from_log.status, 200);
  EXPECT_THAT(json::parse(from_log.body, nullptr, false)["new"], SizeIs(kBans + 1));
  EXPECT_TRUE(json::parse(pull(false).body, nullptr, false)["new"].is_null());
}

// A live ip= question (a live-mode bouncer asks one per request its server takes) matched every
// active row, after folding the changes since the last question into a new snapshot: with
// 100,000 feed decisions, 47 ms a question while decisions changed (tests/bench's
// bouncer_live_bench). It is now answered from an index of the rows by what they decide on.
// Whatever the decisions (addresses and ranges of both families at many prefix lengths, values
// written in other forms or not parsing, several on one address), their changes (made,
// extended, replaced, withdrawn, expired, past their end before the sweep, ended by a restart's
// Attach, kept through it) and the question's filters, the index's answer is the scan's, byte
// for byte.
TEST(BouncerApiTest, LiveIpAnswersFromTheIndexAreTheScansAnswers) {
  SimulatedClock clock;
  const std::string path = FreshPath("live-index.db");
  std::mt19937 rng(16);  // fixed: a divergence reproduces
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  // Addresses close together, so that decisions and questions meet: 198.51.100.0/22 and
  // 2001:db8:0:0-3:0-1::0-ff.
  auto address = [&](bool v6) {
    std::array<uint8_t, 16> b{};
    if (v6) {
      b = {0x20, 0x01, 0x0d, 0xb8};
      b[5] = static_cast<uint8_t>(pick(4));
      b[7] = static_cast<uint8_t>(pick(2));
      b[15] = static_cast<uint8_t>(pick(256));
    } else {
      b = {198, 51, static_cast<uint8_t>(100 + pick(4)), static_cast<uint8_t>(pick(256))};
    }
    return IpAddress::FromBytes(!v6, b);
  };
  const std::vector<int> v4_lengths = {0, 8, 16, 22, 23, 24, 25, 30, 31, 32};
  const std::vector<int> v6_lengths = {0, 32, 45, 48, 63, 64, 120, 127, 128};
  // A target: its kind and value, the value sometimes in another form than the canonical one.
  auto target = [&](palisade::v1::Target* t) {
    const bool v6 = pick(3) == 0;
    const IpAddress a = address(v6);
    const bool range = pick(3) == 0;
    t->set_kind(range ? palisade::v1::TARGET_KIND_RANGE : palisade::v1::TARGET_KIND_IP);
    const std::vector<int>& lengths = v6 ? v6_lengths : v4_lengths;
    const int length = range ? lengths[pick(static_cast<int>(lengths.size()))] : a.bit_length();
    const Cidr c = Cidr::Covering(a, length);
    std::string value = range ? c.ToString() : a.ToString();
    switch (pick(24)) {
      case 0:
        value = absl::AsciiStrToUpper(value);
        break;
      case 1:  // IPv4-mapped: folded to IPv4 when parsed
        if (!v6) {
          value = range ? absl::StrCat("::ffff:", c.base().ToString(), "/", length + 96)
                        : absl::StrCat("::ffff:", value);
        }
        break;
      case 2:
        value = "not-an-address";
        break;
      case 3:  // a range written as its bare address
        if (range && length == a.bit_length()) value = a.ToString();
        break;
    }
    t->set_value(value);
  };
  auto expiry_of = [](const palisade::v1::Decision& d) {
    return absl::FromUnixSeconds(d.expiry().seconds()) + absl::Nanoseconds(d.expiry().nanos());
  };
  auto set_expiry = [](palisade::v1::Decision& d, absl::Time t) {
    d.mutable_expiry()->set_seconds(absl::ToUnixSeconds(t));
    d.mutable_expiry()->set_nanos(static_cast<int32_t>(
        (t - absl::FromUnixSeconds(absl::ToUnixSeconds(t))) / absl::Nanoseconds(1)));
  };
  auto act = [&](palisade::v1::Decision& d) {
    const int a = pick(10);
    d.set_action(a < 5   ? palisade::v1::ACTION_BLOCK
                 : a < 7 ? palisade::v1::ACTION_CHALLENGE
                 : a < 9 ? palisade::v1::ACTION_MANAGED_CHALLENGE
                         : palisade::v1::ACTION_RATE_LIMIT);  // not served
  };
  int made = 0;
  auto decision = [&] {
    palisade::v1::Decision d;
    d.set_id(absl::StrCat("d", ++made));
    target(d.mutable_target());
    act(d);
    const int o = pick(3);
    d.set_origin(o == 0   ? palisade::v1::ORIGIN_RULE
                 : o == 1 ? palisade::v1::ORIGIN_MANUAL
                          : palisade::v1::ORIGIN_FEED);
    if (pick(2) == 0) {
      d.set_rule_id(pick(2) == 0 ? "sshd-bruteforce" : "nginx-scan");
    } else if (pick(2) == 0) {
      d.set_reason("firehol_level3");
    }
    d.set_dry_run(pick(30) == 0);
    d.set_active(true);
    // Some past their end already (served by neither until the sweep ends them).
    set_expiry(d,
               clock.TimeNow() + absl::Seconds(pick(7200) - 600) + absl::Milliseconds(pick(1000)));
    return d;
  };
  auto question = [&] {
    std::multimap<std::string, std::string> params;
    const IpAddress a = address(pick(3) == 0);
    std::string ip = a.ToString();
    if (pick(10) == 0) ip = a.is_v4() ? absl::StrCat("::ffff:", ip) : absl::AsciiStrToUpper(ip);
    params.emplace("ip", ip);
    if (pick(8) == 0) params.emplace("type", pick(2) == 0 ? "ban" : "captcha");
    if (pick(8) == 0) params.emplace("scopes", pick(2) == 0 ? "ip" : "range,Ip");
    if (pick(12) == 0) params.emplace("scope", pick(2) == 0 ? "range" : "IP");
    if (pick(8) == 0) params.emplace("origins", pick(2) == 0 ? "lists" : "crowdsec,cscli");
    if (pick(10) == 0) params.emplace("scenarios_containing", "ssh,scan");
    if (pick(10) == 0) params.emplace("scenarios_not_containing", "firehol");
    if (pick(20) == 0) params.emplace("value", a.ToString());
    if (pick(12) == 0) {
      params.emplace("range", Cidr::Covering(a, a.bit_length() - 8).ToString());
      if (pick(2) == 0) params.emplace("contains", "false");
    }
    return params;
  };

  auto node = std::make_unique<Attached>(path, clock);
  const std::string key = *node->api->AddBouncer("nginx");
  std::map<std::string, palisade::v1::Decision> active;  // the test's decisions, by id
  int asked = 0, decided = 0, several = 0;
  // One question, answered from the index and by the scan at the same time on the clock.
  auto compare = [&] {
    const std::multimap<std::string, std::string> params = question();
    const BouncerRequest request = Request("/v1/decisions", key, params);
    node->api->SetLiveScanForTesting(false);
    const BouncerReply indexed = node->api->Handle(request);
    node->api->SetLiveScanForTesting(true);
    const BouncerReply scanned = node->api->Handle(request);
    std::string query;
    for (const auto& [k, v] : params) absl::StrAppend(&query, "&", k, "=", v);
    ASSERT_EQ(indexed.status, 200) << query << ": " << indexed.body;
    ASSERT_EQ(indexed.body, scanned.body) << "?" << query.substr(1);
    ++asked;
    if (indexed.body != "null") ++decided;
    if (json::parse(indexed.body, nullptr, false).size() > 1) ++several;
  };
  auto any = [&]() -> palisade::v1::Decision& {
    auto it = active.begin();
    std::advance(it, pick(static_cast<int>(active.size())));
    return it->second;
  };
  auto end = [&](palisade::v1::Decision& d, DecisionChange why) {
    d.set_active(false);
    DecisionUpdate u{why, d};
    active.erase(d.id());
    return u;
  };
  auto run = [&](int steps) {
    for (int step = 0; step < steps && !::testing::Test::HasFailure(); ++step) {
      const int op = pick(100);
      std::vector<DecisionUpdate> set;
      if (op < 40 || active.empty()) {
        palisade::v1::Decision d = decision();
        active[d.id()] = d;
        set.push_back({DecisionChange::kCreated, d});
      } else if (op < 58) {  // extended, its action sometimes changed
        palisade::v1::Decision& d = any();
        set_expiry(d, expiry_of(d) + absl::Seconds(pick(3600)));
        if (pick(4) == 0) act(d);
        set.push_back({DecisionChange::kExtended, d});
      } else if (op < 70) {
        set.push_back(end(any(), DecisionChange::kWithdrawn));
      } else if (op < 80) {  // the soonest to end expires
        auto soonest = std::min_element(active.begin(), active.end(), [&](auto& a, auto& b) {
          return expiry_of(a.second) < expiry_of(b.second);
        });
        set.push_back(end(soonest->second, DecisionChange::kExpired));
      } else if (op < 88) {  // one set: a replacement on the same target, made and extended
        palisade::v1::Decision& old = any();
        palisade::v1::Decision d = decision();
        *d.mutable_target() = old.target();
        set.push_back(end(old, DecisionChange::kWithdrawn));
        set.push_back({DecisionChange::kCreated, d});
        set_expiry(d, expiry_of(d) + absl::Minutes(5));
        set.push_back({DecisionChange::kExtended, d});
        active[d.id()] = d;
      } else {
        clock.Advance(absl::Seconds(pick(900)));
      }
      if (!set.empty()) node->api->OnUpdates(set);
      // Questions after some steps only: changes pile up in the layer between two folds.
      for (int q = pick(4) - 1; q > 0; --q) compare();
    }
  };
  run(2000);

  // Decisions the table holds (the test's own are unknown to it): a restart's Attach keeps
  // their rows, loaded from the log, and ends the others.
  for (int i = 0; i < 40; ++i) {
    palisade::v1::AddDecisionRequest req;
    target(req.mutable_target());
    req.set_action(pick(2) == 0 ? palisade::v1::ACTION_BLOCK : palisade::v1::ACTION_CHALLENGE);
    req.mutable_duration()->set_seconds(86400 + i);
    req.set_reason("by hand");
    (void)node->table.AddManual(req);  // refused for a value that does not parse
  }
  for (int q = 0; q < 200 && !::testing::Test::HasFailure(); ++q) compare();
  node.reset();
  node = std::make_unique<Attached>(path, clock);
  active.clear();
  for (int q = 0; q < 200 && !::testing::Test::HasFailure(); ++q) compare();
  run(1000);

  // Enough questions met decisions, and several at once, for the comparison to mean something.
  const std::string counts =
      absl::StrCat(asked, " questions, ", decided, " decided, ", several, " on several");
  EXPECT_GT(asked, 2000) << counts;
  EXPECT_GT(decided, asked / 4) << counts;
  EXPECT_GT(several, asked / 10) << counts;
}

}  // namespace
}  // namespace palisade
