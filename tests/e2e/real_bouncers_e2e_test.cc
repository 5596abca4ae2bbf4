// Issue 16: Debian's real CrowdSec bouncers enforce decisions pulled from a Local API.
// Each test runs against palisaded's bouncer_api and against Debian's crowdsec 1.4.6 LAPI (the
// reference: the same test passing there proves the harness and the expectations):
//  - crowdsec-custom-bouncer (bin_path = a script appending its arguments to a file, 1 s pulls):
//    `add VALUE ...` for each decision (Ip and Range, ban and captcha, IPv6; on palisaded also
//    the ban a shipped sshd attack log earns), `del VALUE` after a delete and after an expiry,
//    and across a restart of the API in the middle nothing is lost and nothing is repeated; with
//    a key the API does not know it is refused (403) and runs nothing;
//  - crowdsec-firewall-bouncer in nftables mode: a banned address and range enter its nftables
//    sets, a captcha decision does not (it enforces bans only), a deleted decision and an
//    expired one leave;
//  - palisaded only (crowdsec 1.4.6 serves an extension as a second decision, which both
//    bouncers skip as already held): an extended ban reaches both bouncers, the nftables
//    element's timeout and the custom bouncer's script.
// The whole test process runs in its own network namespace (entered before any thread starts),
// so nftables rules never touch the host; where that or nftables cannot run, the firewall test
// says so plainly and is skipped while the rest runs. Polls with 60 s deadlines, no fixed sleeps.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/e2e/bouncer_lapi.h"
#include "tests/e2e/daemon.h"

namespace palisade {
namespace {

using ::palisade::testing::Child;
using ::palisade::testing::LapiBackend;
using ::palisade::testing::LapiDecision;
using ::palisade::testing::ReadFileOrEmpty;
using ::palisade::testing::RunCommand;
using ::palisade::testing::WaitFor;

// Entered at static initialisation, before gtest or gRPC start a thread (namespaces are per
// thread): "" when this process has its own network namespace with loopback up.
const std::string& NetnsError() {
  static const std::string* error =
      new std::string(::palisade::testing::EnterPrivateNetworkNamespace());
  return *error;
}
const bool kNetnsEntered = NetnsError().empty();

constexpr absl::Duration kDeadline = absl::Seconds(60);
// A ban that ends by itself while the test looks. The bouncers poll every second: a ban must
// outlive a poll or two on a busy machine, or it comes and goes between them unseen.
constexpr absl::Duration kShortBan = absl::Seconds(10);

// The script lines: "add VALUE DURATION REASON JSON" / "del VALUE ...".
std::vector<std::vector<std::string>> Calls(const std::string& file) {
  std::vector<std::vector<std::string>> calls;
  for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(file), '\n', absl::SkipEmpty())) {
    calls.push_back(absl::StrSplit(line, absl::MaxSplits(' ', 3)));
  }
  return calls;
}

int Count(const std::string& file, const std::string& verb, const std::string& value) {
  int n = 0;
  for (const auto& call : Calls(file)) {
    if (call.size() >= 2 && call[0] == verb && call[1] == value) ++n;
  }
  return n;
}

class RealBouncersTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(test.begin(), test.end(), '/', '_');
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", test);
    mkdir(dir_.c_str(), 0700);
    absl::StatusOr<std::unique_ptr<LapiBackend>> backend =
        GetParam() == "crowdsec" ? ::palisade::testing::StartCrowdsecLapi(dir_ + "/lapi")
                                 : ::palisade::testing::StartPalisadedLapi(dir_ + "/lapi");
    if (absl::IsNotFound(backend.status())) GTEST_SKIP() << backend.status();
    ASSERT_TRUE(backend.ok()) << backend.status();
    api_ = *std::move(backend);
  }

  std::string Add(const std::string& scope, const std::string& value, const std::string& type,
                  absl::Duration duration) {
    absl::StatusOr<std::string> id =
        api_->AddDecision(LapiDecision{scope, value, type, duration, "palisade/e2e"});
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : "";
  }

  // crowdsec-custom-bouncer's YAML (1 s pulls) with `key`; its bin_path script appends its
  // arguments to calls(). Returns the YAML's path.
  std::string WriteCustomBouncerConfig(const std::string& key) {
    const std::string script = dir_ + "/record.sh";
    std::ofstream(script) << "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " << calls() << "\n";
    chmod(script.c_str(), 0700);
    const std::string config = dir_ + "/custom.yaml";
    std::ofstream(config) << "bin_path: " << script << "\nfeed_via_stdin: false\n"
                          << "piddir: " << dir_ << "/\nupdate_frequency: 1s\n"
                          << "cache_retention_duration: 10s\ndaemonize: false\n"
                          << "log_mode: file\nlog_dir: " << dir_ << "/\nlog_level: info\n"
                          << "api_url: http://127.0.0.1:" << api_->port() << "/\n"
                          << "api_key: " << key << "\nprometheus:\n  enabled: false\n";
    return config;
  }
  std::string calls() const { return dir_ + "/calls.txt"; }

  // Why crowdsec-firewall-bouncer cannot run here ("" when it can), said plainly on stdout.
  static std::string FirewallCannotRun() {
    std::string why;
    if (!kNetnsEntered) {
      why = absl::StrCat("no private network namespace (", NetnsError(), ")");
    } else if (access("/usr/bin/crowdsec-firewall-bouncer", X_OK) != 0 ||
               access("/usr/sbin/nft", X_OK) != 0) {
      why = "crowdsec-firewall-bouncer or nft is not installed (bash tools/setup.sh)";
    } else if (absl::StatusOr<std::string> nft = RunCommand("/usr/sbin/nft list ruleset");
               !nft.ok()) {
      why = nft.status().ToString();
    }
    if (!why.empty()) {
      std::cout << "NFTABLES CANNOT RUN HERE: " << why
                << "; the firewall-bouncer test is skipped, the others ran" << std::endl;
    }
    return why;
  }
  // crowdsec-firewall-bouncer's YAML (nftables, 1 s pulls, tables crowdsec and crowdsec6) with
  // `key`. Returns its path.
  std::string WriteFirewallBouncerConfig(const std::string& key) {
    const std::string config = dir_ + "/firewall.yaml";
    std::ofstream(config) << "mode: nftables\npid_dir: " << dir_ << "/\nupdate_frequency: 1s\n"
                          << "daemonize: false\nlog_mode: file\nlog_dir: " << dir_
                          << "/\nlog_level: info\n"
                          << "api_url: http://127.0.0.1:" << api_->port() << "/\n"
                          << "api_key: " << key << "\ninsecure_skip_verify: false\n"
                          << "disable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n"
                          << "supported_decisions_types:\n  - ban\n"
                          << "blacklists_ipv4: crowdsec-blacklists\n"
                          << "blacklists_ipv6: crowdsec6-blacklists\n"
                          << "nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n"
                          << "    table: crowdsec\n    chain: crowdsec-chain\n"
                          << "  ipv6:\n    enabled: true\n    set-only: false\n"
                          << "    table: crowdsec6\n    chain: crowdsec6-chain\n"
                          << "prometheus:\n  enabled: false\n";
    return config;
  }

  std::string dir_;
  std::unique_ptr<LapiBackend> api_;
};

TEST_P(RealBouncersTest, CustomBouncerAddsDeletesExpiresAndSurvivesARestart) {
  if (access("/usr/bin/crowdsec-custom-bouncer", X_OK) != 0) {
    GTEST_SKIP() << "crowdsec-custom-bouncer is not installed (bash tools/setup.sh)";
  }
  absl::StatusOr<std::string> key = api_->AddBouncer("custom-e2e");
  ASSERT_TRUE(key.ok()) << key.status();
  const std::string calls = this->calls();
  const std::string config = WriteCustomBouncerConfig(*key);
  const std::string ban = Add("Ip", "192.0.2.10", "ban", absl::Hours(1));
  const std::string range = Add("Range", "198.51.100.0/24", "ban", absl::Hours(1));
  Add("Ip", "192.0.2.11", "captcha", absl::Hours(1));
  Add("Ip", "2001:db8::7", "ban", absl::Hours(2));
  // palisaded: an attack log shipped, banned by the sshd pack (crowdsec -no-cs reads no logs).
  const absl::Status shipped = api_->ShipSshAttack("192.0.2.50");
  const bool attack = !absl::IsUnimplemented(shipped);
  if (attack) {
    ASSERT_TRUE(shipped.ok()) << shipped;
  }

  absl::StatusOr<std::unique_ptr<Child>> bouncer =
      Child::Spawn({"/usr/bin/crowdsec-custom-bouncer", "-c", config}, dir_ + "/custom.stdout");
  ASSERT_TRUE(bouncer.ok()) << bouncer.status();
  auto log = [&] {
    return absl::StrCat("calls:\n", ReadFileOrEmpty(calls), "\nbouncer log:\n",
                        ReadFileOrEmpty(dir_ + "/crowdsec-custom-bouncer.log"),
                        ReadFileOrEmpty(dir_ + "/custom.stdout"));
  };

  // Every decision, each once, with its time left.
  ASSERT_TRUE(WaitFor(
      [&] {
        return Count(calls, "add", "192.0.2.10") == 1 &&
               Count(calls, "add", "198.51.100.0/24") == 1 &&
               Count(calls, "add", "192.0.2.11") == 1 && Count(calls, "add", "2001:db8::7") == 1 &&
               (!attack || Count(calls, "add", "192.0.2.50") == 1);
      },
      kDeadline))
      << log();
  for (const auto& call : Calls(calls)) {
    if (call.size() >= 3 && (call[1] == "192.0.2.10" || call[1] == "192.0.2.50")) {
      // The bouncer passes the time left in whole seconds: under the hour, not long under it.
      int seconds = 0;
      ASSERT_TRUE(absl::SimpleAtoi(call[2], &seconds)) << log();
      EXPECT_GT(seconds, 3000) << log();
      EXPECT_LE(seconds, 3600) << log();
    }
    if (call.size() >= 4 && call[1] == "192.0.2.11") {
      EXPECT_TRUE(absl::StrContains(call[3], "\"captcha\"")) << log();
    }
  }

  // A delete.
  ASSERT_TRUE(api_->DeleteDecision(ban).ok());
  ASSERT_TRUE(WaitFor([&] { return Count(calls, "del", "192.0.2.10") == 1; }, kDeadline)) << log();

  // An expiry.
  Add("Ip", "192.0.2.20", "ban", kShortBan);
  ASSERT_TRUE(WaitFor([&] { return Count(calls, "add", "192.0.2.20") == 1; }, kDeadline)) << log();
  ASSERT_TRUE(WaitFor([&] { return Count(calls, "del", "192.0.2.20") == 1; }, kDeadline)) << log();

  // A delete the bouncer has most likely not pulled yet, then the API restarts; then a new ban.
  ASSERT_TRUE(api_->DeleteDecision(range).ok());
  ASSERT_TRUE(api_->Restart().ok());
  Add("Ip", "192.0.2.30", "ban", absl::Hours(1));
  ASSERT_TRUE(WaitFor(
      [&] {
        return Count(calls, "del", "198.51.100.0/24") >= 1 &&
               Count(calls, "add", "192.0.2.30") >= 1;
      },
      kDeadline))
      << log();
  // Two more pulls' worth: a replay after the restart would show by the time this one lands.
  Add("Ip", "192.0.2.31", "ban", absl::Hours(1));
  ASSERT_TRUE(WaitFor([&] { return Count(calls, "add", "192.0.2.31") == 1; }, kDeadline)) << log();
  EXPECT_TRUE(bouncer.value()->Running()) << log();

  // Nothing lost, nothing repeated.
  for (const char* value : {"192.0.2.10", "198.51.100.0/24", "192.0.2.11", "2001:db8::7",
                            "192.0.2.20", "192.0.2.30", "192.0.2.31"}) {
    EXPECT_EQ(Count(calls, "add", value), 1) << value << "\n" << log();
  }
  for (const char* value : {"192.0.2.10", "192.0.2.20", "198.51.100.0/24"}) {
    EXPECT_EQ(Count(calls, "del", value), 1) << value << "\n" << log();
  }
  for (const char* value : {"192.0.2.11", "2001:db8::7", "192.0.2.30", "192.0.2.31"}) {
    EXPECT_EQ(Count(calls, "del", value), 0) << value << "\n" << log();
  }
  if (attack) {
    EXPECT_EQ(Count(calls, "add", "192.0.2.50"), 1) << log();
    EXPECT_EQ(Count(calls, "del", "192.0.2.50"), 0) << log();
  }
}

// A bouncer with a key the API does not know (a deleted bouncer's, a typo) is refused and runs
// nothing; it says why in its log.
TEST_P(RealBouncersTest, CustomBouncerWithAWrongKeyGetsNothing) {
  if (access("/usr/bin/crowdsec-custom-bouncer", X_OK) != 0) {
    GTEST_SKIP() << "crowdsec-custom-bouncer is not installed (bash tools/setup.sh)";
  }
  ASSERT_TRUE(api_->AddBouncer("custom-e2e").ok());
  Add("Ip", "192.0.2.60", "ban", absl::Hours(1));
  const std::string calls = this->calls();
  const std::string config = WriteCustomBouncerConfig("0123456789abcdef0123456789abcdef");
  absl::StatusOr<std::unique_ptr<Child>> bouncer =
      Child::Spawn({"/usr/bin/crowdsec-custom-bouncer", "-c", config}, dir_ + "/custom.stdout");
  ASSERT_TRUE(bouncer.ok()) << bouncer.status();
  auto log = [&] {
    return ReadFileOrEmpty(dir_ + "/crowdsec-custom-bouncer.log") +
           ReadFileOrEmpty(dir_ + "/custom.stdout");
  };
  // crowdsec-custom-bouncer 0.0.15 logs the API's 403 message and stops.
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(log(), "access forbidden"); }, kDeadline))
      << log();
  EXPECT_EQ(ReadFileOrEmpty(calls), "") << log();
}

// The elements of an nftables set, as `nft list set` prints them ("" when it does not exist).
std::string NftSet(const std::string& family, const std::string& table, const std::string& set) {
  absl::StatusOr<std::string> out =
      RunCommand(absl::StrCat("/usr/sbin/nft list set ", family, " ", table, " ", set));
  return out.ok() ? *out : "";
}

// Whether `set` (nft's listing) holds the element `value` ("192.0.2.40 timeout ...", "...}").
bool HasElement(const std::string& set, const std::string& value) {
  for (size_t at = set.find(value); at != std::string::npos; at = set.find(value, at + 1)) {
    const char before = at == 0 ? ' ' : set[at - 1];
    const char after = at + value.size() < set.size() ? set[at + value.size()] : ' ';
    if ((before == ' ' || before == '{' || before == ',') &&
        (after == ' ' || after == ',' || after == '}' || after == '/' || after == '\n')) {
      return true;
    }
  }
  return false;
}

TEST_P(RealBouncersTest, FirewallBouncerPutsBansInItsNftablesSetsAndTakesThemOut) {
  if (std::string why = FirewallCannotRun(); !why.empty()) GTEST_SKIP() << why;
  absl::StatusOr<std::string> key = api_->AddBouncer("firewall-e2e");
  ASSERT_TRUE(key.ok()) << key.status();
  const std::string config = WriteFirewallBouncerConfig(*key);
  const std::string ban = Add("Ip", "192.0.2.40", "ban", absl::Hours(1));
  Add("Ip", "192.0.2.41", "captcha", absl::Hours(1));
  const std::string range = Add("Range", "198.51.100.0/24", "ban", absl::Hours(1));
  Add("Ip", "2001:db8::40", "ban", absl::Hours(1));

  absl::StatusOr<std::unique_ptr<Child>> bouncer =
      Child::Spawn({"/usr/bin/crowdsec-firewall-bouncer", "-c", config}, dir_ + "/firewall.stdout");
  ASSERT_TRUE(bouncer.ok()) << bouncer.status();
  auto v4 = [] { return NftSet("ip", "crowdsec", "crowdsec-blacklists"); };
  auto v6 = [] { return NftSet("ip6", "crowdsec6", "crowdsec6-blacklists"); };
  auto log = [&] {
    return absl::StrCat("ipv4 set:\n", v4(), "\nipv6 set:\n", v6(), "\nbouncer log:\n",
                        ReadFileOrEmpty(dir_ + "/crowdsec-firewall-bouncer.log"),
                        ReadFileOrEmpty(dir_ + "/firewall.stdout"));
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        // crowdsec-firewall-bouncer 0.0.25's sets have no interval flag: a Range goes in as
        // its first address (198.51.100.0), with crowdsec's own LAPI too.
        const std::string set = v4();
        return HasElement(set, "192.0.2.40") && HasElement(set, "198.51.100.0") &&
               HasElement(v6(), "2001:db8::40");
      },
      kDeadline))
      << log();
  EXPECT_FALSE(HasElement(v4(), "192.0.2.41")) << "a captcha is not a ban\n" << log();

  ASSERT_TRUE(api_->DeleteDecision(ban).ok());
  ASSERT_TRUE(api_->DeleteDecision(range).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string set = v4();
        return !HasElement(set, "192.0.2.40") && !HasElement(set, "198.51.100.0");
      },
      kDeadline))
      << log();
  EXPECT_TRUE(HasElement(v6(), "2001:db8::40")) << log();

  // A ban that ends by itself: in, then out.
  Add("Ip", "192.0.2.42", "ban", kShortBan);
  ASSERT_TRUE(WaitFor([&] { return HasElement(v4(), "192.0.2.42"); }, kDeadline)) << log();
  ASSERT_TRUE(WaitFor([&] { return !HasElement(v4(), "192.0.2.42"); }, kDeadline)) << log();
  EXPECT_TRUE(bouncer.value()->Running()) << log();
  bouncer.value()->Stop();
}

// The timeout nft lists for element `value` of `set` ("1m", "2h59m30s"; "" when it is not there).
std::string ElementTimeout(const std::string& set, const std::string& value) {
  const std::string prefix = value + " timeout ";
  const size_t at = set.find(prefix);
  if (at == std::string::npos) return "";
  const size_t start = at + prefix.size();
  const size_t end = set.find_first_of(" ,}\n", start);
  return set.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// An extension of a ban the bouncer holds (a recidivist's longer ban, an operator's): the
// firewall bouncer skips a value already in its set, so an extension served as `new` alone
// left the element's first timeout, and the host let the address in again while palisaded
// still banned it. palisaded serves it as a deletion and a new entry, 30 s after the first
// entry at the soonest (AnExtensionSoonAfterItsNewIsHeld), and the element is re-added.
TEST_P(RealBouncersTest, FirewallBouncerFollowsAnExtension) {
  if (GetParam() != "palisaded") GTEST_SKIP() << "crowdsec 1.4.6 serves a second decision";
  if (std::string why = FirewallCannotRun(); !why.empty()) GTEST_SKIP() << why;
  absl::StatusOr<std::string> key = api_->AddBouncer("firewall-e2e");
  ASSERT_TRUE(key.ok()) << key.status();
  const std::string config = WriteFirewallBouncerConfig(*key);
  Add("Ip", "192.0.2.43", "ban", absl::Minutes(2));
  absl::StatusOr<std::unique_ptr<Child>> bouncer =
      Child::Spawn({"/usr/bin/crowdsec-firewall-bouncer", "-c", config}, dir_ + "/firewall.stdout");
  ASSERT_TRUE(bouncer.ok()) << bouncer.status();
  auto v4 = [] { return NftSet("ip", "crowdsec", "crowdsec-blacklists"); };
  auto log = [&] {
    return absl::StrCat("ipv4 set:\n", v4(), "\nbouncer log:\n",
                        ReadFileOrEmpty(dir_ + "/crowdsec-firewall-bouncer.log"),
                        ReadFileOrEmpty(dir_ + "/firewall.stdout"));
  };
  ASSERT_TRUE(WaitFor([&] { return HasElement(v4(), "192.0.2.43"); }, kDeadline)) << log();
  Add("Ip", "192.0.2.43", "ban", absl::Hours(3));  // extends it
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string timeout = ElementTimeout(v4(), "192.0.2.43");
        return absl::StartsWith(timeout, "2h") || absl::StartsWith(timeout, "3h");
      },
      kDeadline))
      << log();
  EXPECT_TRUE(bouncer.value()->Running()) << log();
  bouncer.value()->Stop();
}

// The same for the custom bouncer, whose cache (cache_retention_duration, 10 s here as in
// Debian's config) skips an add of a value it added less than that before: the extension comes
// as a `del` and an `add` with the new time left, not within that cache.
TEST_P(RealBouncersTest, CustomBouncerFollowsAnExtension) {
  if (GetParam() != "palisaded") GTEST_SKIP() << "crowdsec 1.4.6 serves a second decision";
  if (access("/usr/bin/crowdsec-custom-bouncer", X_OK) != 0) {
    GTEST_SKIP() << "crowdsec-custom-bouncer is not installed (bash tools/setup.sh)";
  }
  absl::StatusOr<std::string> key = api_->AddBouncer("custom-e2e");
  ASSERT_TRUE(key.ok()) << key.status();
  const std::string calls = this->calls();
  const std::string config = WriteCustomBouncerConfig(*key);
  Add("Ip", "192.0.2.44", "ban", absl::Hours(1));
  absl::StatusOr<std::unique_ptr<Child>> bouncer =
      Child::Spawn({"/usr/bin/crowdsec-custom-bouncer", "-c", config}, dir_ + "/custom.stdout");
  ASSERT_TRUE(bouncer.ok()) << bouncer.status();
  auto log = [&] {
    return absl::StrCat("calls:\n", ReadFileOrEmpty(calls), "\nbouncer log:\n",
                        ReadFileOrEmpty(dir_ + "/crowdsec-custom-bouncer.log"),
                        ReadFileOrEmpty(dir_ + "/custom.stdout"));
  };
  ASSERT_TRUE(WaitFor([&] { return Count(calls, "add", "192.0.2.44") == 1; }, kDeadline)) << log();
  Add("Ip", "192.0.2.44", "ban", absl::Hours(3));  // at once: within the bouncer's cache
  ASSERT_TRUE(WaitFor([&] { return Count(calls, "add", "192.0.2.44") == 2; }, kDeadline)) << log();
  EXPECT_EQ(Count(calls, "del", "192.0.2.44"), 1) << log();
  // The last call is the add, with the extension's time left (whole seconds).
  const auto all = Calls(calls);
  ASSERT_FALSE(all.empty());
  ASSERT_GE(all.back().size(), 3u) << log();
  EXPECT_EQ(all.back()[0], "add") << log();
  int seconds = 0;
  ASSERT_TRUE(absl::SimpleAtoi(all.back()[2], &seconds)) << log();
  EXPECT_GT(seconds, 3 * 3600 - 120) << log();
  EXPECT_TRUE(bouncer.value()->Running()) << log();
}

INSTANTIATE_TEST_SUITE_P(Apis, RealBouncersTest, ::testing::Values("palisaded", "crowdsec"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace palisade
