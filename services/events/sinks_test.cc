#include "services/events/sinks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/common/proto_time.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using json = nlohmann::json;
using palisade::v1::Event;
using ::testing::HasSubstr;
using testing::IsOk;
using testing::StatusIs;

Event Detection() {
  Event e;
  e.set_sequence(41);
  *e.mutable_time() = ToProtoTime(absl::FromUnixMillis(1795000000123));
  e.set_kind(palisade::v1::EVENT_KIND_DETECTION);
  e.set_correlation_id("00c0ffee00c0ffee");
  e.set_rule_id("sshd|odd=rule");  // CEF must escape both
  e.set_origin(palisade::v1::ORIGIN_RULE);
  auto* d = e.mutable_detection();
  d->mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
  d->mutable_target()->set_value("203.0.113.7");
  d->add_evidence("Failed password for root from 203.0.113.7 port 22 ssh2");
  d->set_source("web-1:/var/log/auth.log");
  d->add_feeds("drop");
  return e;
}

Event Decision() {
  Event e;
  e.set_sequence(42);
  *e.mutable_time() = ToProtoTime(absl::FromUnixMillis(1795000000456));
  e.set_kind(palisade::v1::EVENT_KIND_DECISION);
  e.set_correlation_id("00c0ffee00c0ffee");
  e.set_rule_id("sshd-failed-password");
  e.set_origin(palisade::v1::ORIGIN_RULE);
  e.mutable_decision()->set_change("created");
  auto* d = e.mutable_decision()->mutable_decision();
  d->set_id("00c0ffee00c0ffee");
  d->mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
  d->mutable_target()->set_value("203.0.113.7");
  d->set_action(palisade::v1::ACTION_BLOCK);
  d->set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  *d->mutable_expiry() = ToProtoTime(absl::FromUnixSeconds(1795003600));
  d->set_offence(2);
  return e;
}

Event Action(const std::string& outcome) {
  Event e;
  e.set_sequence(43);
  *e.mutable_time() = ToProtoTime(absl::FromUnixMillis(1795000000789));
  e.set_kind(palisade::v1::EVENT_KIND_ACTION);
  e.set_correlation_id("00c0ffee00c0ffee");
  e.set_rule_id("sshd-failed-password");
  e.set_origin(palisade::v1::ORIGIN_RULE);
  auto* a = e.mutable_action();
  a->set_outcome(outcome);
  a->set_actuator(palisade::v1::ACTUATOR_ACCESS_RULE);
  a->set_operation("apply");
  a->mutable_target()->set_kind(palisade::v1::TARGET_KIND_IP);
  a->mutable_target()->set_value("203.0.113.7");
  a->set_attempt(3);
  if (outcome == "failed") a->set_detail("cloudflare: 403 (10000): Authentication error");
  return e;
}

TEST(EcsTest, FieldsByKind) {
  json d = json::parse(ToEcsJson(Detection()));
  EXPECT_EQ(d["@timestamp"], "2026-11-18T11:06:40.123Z");
  EXPECT_EQ(d["ecs"]["version"], "8.11.0");
  EXPECT_EQ(d["event"]["kind"], "alert");
  EXPECT_EQ(d["event"]["category"], json::array({"intrusion_detection"}));
  EXPECT_EQ(d["event"]["action"], "detection");
  EXPECT_EQ(d["event"]["sequence"], 41);
  EXPECT_EQ(d["event"]["provider"], "web-1:/var/log/auth.log");
  EXPECT_EQ(d["source"]["ip"], "203.0.113.7");
  EXPECT_EQ(d["rule"]["id"], "sshd|odd=rule");
  EXPECT_EQ(d["threat"]["feed"]["name"], "drop");
  EXPECT_EQ(d["palisade"]["correlation_id"], "00c0ffee00c0ffee");
  EXPECT_EQ(d["palisade"]["evidence"][0],
            "Failed password for root from 203.0.113.7 port 22 ssh2");

  json c = json::parse(ToEcsJson(Decision()));
  EXPECT_EQ(c["event"]["kind"], "event");
  EXPECT_EQ(c["event"]["type"], json::array({"creation"}));
  EXPECT_EQ(c["event"]["action"], "decision-created");
  EXPECT_EQ(c["palisade"]["decision"]["action"], "block");
  EXPECT_EQ(c["palisade"]["decision"]["actuator"], "access_rule");
  EXPECT_EQ(c["palisade"]["decision"]["expiry"], "2026-11-18T12:06:40.000Z");
  EXPECT_EQ(c["palisade"]["decision"]["offence"], 2);

  json ok = json::parse(ToEcsJson(Action("applied")));
  EXPECT_EQ(ok["event"]["outcome"], "success");
  EXPECT_EQ(ok["event"]["action"], "apply-applied");
  EXPECT_EQ(ok["palisade"]["action"]["attempt"], 3);
  json failed = json::parse(ToEcsJson(Action("failed")));
  EXPECT_EQ(failed["event"]["outcome"], "failure");
  EXPECT_EQ(failed["error"]["message"], "cloudflare: 403 (10000): Authentication error");

  palisade::v1::Event alert;
  alert.set_kind(palisade::v1::EVENT_KIND_ALERT);
  alert.set_rule_id("cloudflare-token-misuse");
  alert.mutable_alert()->set_kind("own_token_misuse");
  alert.mutable_alert()->mutable_target()->set_kind(palisade::v1::TARGET_KIND_TOKEN_ID);
  alert.mutable_alert()->mutable_target()->set_value("0123456789abcdef0123456789abcdef");
  alert.mutable_alert()->set_detail("not revoked");
  alert.mutable_alert()->add_evidence("{\"actor\":{}}");
  json a = json::parse(ToEcsJson(alert));
  EXPECT_EQ(a["event"]["kind"], "alert");
  EXPECT_EQ(a["event"]["dataset"], "palisade.alert");
  EXPECT_EQ(a["event"]["action"], "alert-own_token_misuse");
  EXPECT_EQ(a["palisade"]["alert"]["kind"], "own_token_misuse");
  EXPECT_EQ(a["palisade"]["target"]["value"], "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(a["palisade"]["evidence"][0], "{\"actor\":{}}");
  EXPECT_THAT(ToCef(alert), ::testing::HasSubstr("|alert-own_token_misuse|"));
}

// Splits a CEF record back: the 7 header fields, and the extension's key=value pairs.
struct Cef {
  std::vector<std::string> header;
  std::map<std::string, std::string> ext;
};

Cef ParseCef(const std::string& s) {
  Cef out;
  std::string field;
  size_t i = 0;
  for (; i < s.size() && out.header.size() < 7; ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      field.push_back(s[++i]);
    } else if (s[i] == '|') {
      out.header.push_back(field);
      field.clear();
    } else {
      field.push_back(s[i]);
    }
  }
  // Extension: keys are [A-Za-z0-9]+ followed by '='; values run to the next " key=".
  std::string key, value;
  bool in_key = true;
  for (; i <= s.size(); ++i) {
    if (i == s.size()) {
      if (!key.empty()) out.ext[key] = value;
      break;
    }
    const char ch = s[i];
    if (in_key) {
      if (ch == '=') {
        in_key = false;
      } else {
        key.push_back(ch);
      }
      continue;
    }
    if (ch == '\\' && i + 1 < s.size()) {
      const char next = s[++i];
      value.push_back(next == 'n' ? '\n' : next == 'r' ? '\r' : next);
      continue;
    }
    if (ch == ' ') {
      size_t eq = s.find('=', i + 1), sp = s.find(' ', i + 1);
      if (eq != std::string::npos && (sp == std::string::npos || eq < sp) && s[eq - 1] != '\\') {
        out.ext[key] = value;
        key.clear();
        value.clear();
        in_key = true;
        continue;
      }
    }
    value.push_back(ch);
  }
  return out;
}

TEST(CefTest, HeaderAndExtensionParseBack) {
  Cef d = ParseCef(ToCef(Detection()));
  ASSERT_EQ(d.header.size(), 7u);
  EXPECT_EQ(d.header[0], "CEF:0");
  EXPECT_EQ(d.header[1], "Palisade");
  EXPECT_EQ(d.header[2], "palisaded");
  EXPECT_EQ(d.header[4], "detection");
  EXPECT_THAT(d.header[5], HasSubstr("detection by sshd|odd=rule: 203.0.113.7"));
  EXPECT_EQ(d.header[6], "7");
  EXPECT_EQ(d.ext["rt"], "1795000000123");
  EXPECT_EQ(d.ext["src"], "203.0.113.7");
  EXPECT_EQ(d.ext["cs1Label"], "rule");
  EXPECT_EQ(d.ext["cs1"], "sshd|odd=rule");
  EXPECT_EQ(d.ext["cs2"], "00c0ffee00c0ffee");
  EXPECT_EQ(d.ext["cn1"], "41");
  EXPECT_EQ(d.ext["cs5"], "drop");

  Cef c = ParseCef(ToCef(Decision()));
  EXPECT_EQ(c.header[4], "decision-created");
  EXPECT_EQ(c.header[6], "6");
  EXPECT_EQ(c.ext["act"], "block");
  EXPECT_EQ(c.ext["end"], "1795003600000");

  Cef f = ParseCef(ToCef(Action("failed")));
  EXPECT_EQ(f.header[4], "apply-failed");
  EXPECT_EQ(f.header[6], "8");
  EXPECT_EQ(f.ext["outcome"], "failed");
}

TEST(SyslogTest, Rfc5424Frame) {
  const std::string m = ToSyslog5424(Action("failed"), "CEF:0|x", "web-1");
  // <authpriv.err>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
  EXPECT_THAT(m, ::testing::MatchesRegex(
                     "<83>1 2026-11-18T11:06:40\\.789Z web-1 palisaded [0-9]+ action - CEF:0\\|x"));
  EXPECT_THAT(ToSyslog5424(Decision(), "m", ""), ::testing::StartsWith("<84>1 "));
}

TEST(EcsFileTest, RotatesBySizeAndKeepsMaxFiles) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/events.ndjson");
  for (const char* suffix : {"", ".1", ".2", ".3"}) std::remove((path + suffix).c_str());
  palisade::v1::EcsFileSink config;
  config.set_path(path);
  config.set_max_bytes(3000);
  config.set_max_files(2);
  absl::StatusOr<std::unique_ptr<EcsFileOutput>> out = EcsFileOutput::Open(config);
  ASSERT_THAT(out, IsOk());
  for (int i = 1; i <= 40; ++i) {
    Event e = Decision();
    e.set_sequence(i);
    ASSERT_THAT((*out)->Write(e), IsOk());
  }
  out->reset();
  std::vector<uint64_t> sequences;
  for (const char* suffix : {".2", ".1", ""}) {
    std::ifstream in(path + suffix);
    ASSERT_TRUE(in) << suffix;
    std::string line;
    uint64_t bytes = 0;
    while (std::getline(in, line)) {
      bytes += line.size() + 1;
      sequences.push_back(json::parse(line)["event"]["sequence"].get<uint64_t>());
    }
    EXPECT_LE(bytes, 3000u);
  }
  EXPECT_FALSE(std::ifstream(path + ".3"));
  // The newest events, in order, with nothing missing between the kept files.
  ASSERT_FALSE(sequences.empty());
  EXPECT_EQ(sequences.back(), 40u);
  for (size_t i = 1; i < sequences.size(); ++i) EXPECT_EQ(sequences[i], sequences[i - 1] + 1);
}

// Rotation moves the file before it starts a new one. When the move fails (the directory is
// not writable by palisaded, the usual /var/log layout with a file handed to it; here: the
// rotated names taken by directories, which even root cannot rename over), the file was
// truncated anyway ("w"), so each rotation destroyed up to max_bytes of events a shipper may
// not have read. It is kept and appended to instead.
TEST(EcsFileTest, ARotationThatCannotMoveTheFileLosesNoEvent) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/stuck.ndjson");
  std::remove(path.c_str());
  for (const char* suffix : {".1", ".2"}) {
    const std::string dir = path + suffix;
    mkdir(dir.c_str(), 0700);
    std::ofstream(dir + "/keep") << "x";  // a directory that is not empty cannot be replaced
  }
  palisade::v1::EcsFileSink config;
  config.set_path(path);
  config.set_max_bytes(1500);
  config.set_max_files(2);
  absl::StatusOr<std::unique_ptr<EcsFileOutput>> out = EcsFileOutput::Open(config);
  ASSERT_THAT(out, IsOk());
  for (int i = 1; i <= 10; ++i) {
    Event e = Decision();
    e.set_sequence(i);
    (*out)->Write(e).IgnoreError();  // the status may say the rotation failed; the event stays
  }
  out->reset();
  std::vector<uint64_t> sequences;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    sequences.push_back(json::parse(line)["event"]["sequence"].get<uint64_t>());
  }
  EXPECT_EQ(sequences, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
}

// The sequence numbers of an NDJSON file, in order; a line that is not one JSON object is "?".
std::vector<std::string> SequencesIn(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    out.push_back(j.is_discarded() ? "?" : std::to_string(j["event"]["sequence"].get<uint64_t>()));
  }
  return out;
}

// A disk that fills up half way through a line (write(2) takes part of it, then ENOSPC) left
// those bytes in the file, and the next event was appended to them: the SIEM saw one merged line
// it could not parse, and lost the next event too. The sink cuts the file back to the end of the
// last whole line; the event that did not fit is reported failed (the runner writes it again).
TEST(EcsFileTest, AShortWriteLeavesNoPartLineForTheNextToJoin) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/short.ndjson");
  std::remove(path.c_str());
  palisade::v1::EcsFileSink config;
  config.set_path(path);
  ssize_t room = -1;  // >= 0: the disk takes that many more bytes, then is full
  EcsFileOptions options;
  options.write = [&room](int fd, const void* data, size_t size) -> ssize_t {
    if (room < 0) return ::write(fd, data, size);
    if (room == 0) {
      errno = ENOSPC;
      return -1;
    }
    const ssize_t n = ::write(fd, data, std::min(size, static_cast<size_t>(room)));
    if (n > 0) room -= n;
    return n;
  };
  absl::StatusOr<std::unique_ptr<EcsFileOutput>> out = EcsFileOutput::Open(config, options);
  ASSERT_THAT(out, IsOk());
  Event e = Decision();
  e.set_sequence(1);
  ASSERT_THAT((*out)->Write(e), IsOk());
  room = 25;  // a short write of 25 bytes, then ENOSPC
  e.set_sequence(2);
  EXPECT_THAT((*out)->Write(e),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("No space left on device")));
  room = -1;  // space again
  e.set_sequence(3);
  ASSERT_THAT((*out)->Write(e), IsOk());
  out->reset();
  EXPECT_EQ(SequencesIn(path), (std::vector<std::string>{"1", "3"}));
}

// A file that already ends inside a line (palisaded killed while a full disk had it cut, or a
// cut that could not be undone) gets the next event on a line of its own, never joined to it.
TEST(EcsFileTest, AFileEndingInsideALineGetsTheNextEventOnALineOfItsOwn) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/torn.ndjson");
  std::remove(path.c_str());
  std::ofstream(path) << R"({"event":{"sequence":1}}
{"@timestamp":"2026-11-18T11:0)";
  palisade::v1::EcsFileSink config;
  config.set_path(path);
  absl::StatusOr<std::unique_ptr<EcsFileOutput>> out = EcsFileOutput::Open(config);
  ASSERT_THAT(out, IsOk());
  Event e = Decision();
  e.set_sequence(3);
  ASSERT_THAT((*out)->Write(e), IsOk());
  e.set_sequence(4);
  ASSERT_THAT((*out)->Write(e), IsOk());
  out->reset();
  EXPECT_EQ(SequencesIn(path), (std::vector<std::string>{"1", "?", "3", "4"}));
}

int Listen(int type, int* port) {
  int fd = socket(AF_INET, type, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  if (type == SOCK_STREAM) listen(fd, 1);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

TEST(SinkRunnerTest, CefOverUdpAndTcpFollowsTheHub) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHub hub({}, clock, registry);
  int udp_port = 0, tcp_port = 0;
  const int udp = Listen(SOCK_DGRAM, &udp_port);
  const int tcp = Listen(SOCK_STREAM, &tcp_port);
  palisade::v1::SinkConfig u;
  u.set_name("udp");
  u.mutable_cef_syslog()->set_address(absl::StrCat("127.0.0.1:", udp_port));
  u.add_kinds("decision");
  palisade::v1::SinkConfig t;
  t.set_name("tcp");
  t.mutable_cef_syslog()->set_address(absl::StrCat("127.0.0.1:", tcp_port));
  t.mutable_cef_syslog()->set_transport("tcp");
  auto udp_out = SinkRunner::OutputFor(u);
  ASSERT_THAT(udp_out, IsOk());
  auto tcp_out = SinkRunner::OutputFor(t);
  ASSERT_THAT(tcp_out, IsOk());
  {
    SinkRunner udp_sink(u, *std::move(udp_out), hub, registry);
    SinkRunner tcp_sink(t, *std::move(tcp_out), hub, registry);
    Event det = Detection(), dec = Decision();
    det.clear_sequence();
    dec.clear_sequence();
    hub.Publish(det);
    hub.Publish(dec);
  }  // subscribed when built; each runner writes what it took before it stops
  // UDP: only the decision (the sink's kinds), one datagram.
  char buf[8192];
  ssize_t n = recv(udp, buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  std::string datagram(buf, static_cast<size_t>(n));
  EXPECT_THAT(datagram, HasSubstr(" palisaded "));
  const std::string cef = datagram.substr(datagram.find("CEF:0"));
  EXPECT_EQ(ParseCef(cef).header[4], "decision-created");
  EXPECT_EQ(ParseCef(cef).ext["cn1"], "2");
  // TCP: both events, octet-counted.
  int conn = accept(tcp, nullptr, nullptr);
  ASSERT_GE(conn, 0);
  std::string stream;
  while ((n = recv(conn, buf, sizeof(buf), 0)) > 0) stream.append(buf, static_cast<size_t>(n));
  std::vector<std::string> messages;
  while (!stream.empty()) {
    size_t space = stream.find(' ');
    ASSERT_NE(space, std::string::npos);
    const size_t len = std::stoul(stream.substr(0, space));
    messages.push_back(stream.substr(space + 1, len));
    stream.erase(0, space + 1 + len);
  }
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(ParseCef(messages[0].substr(messages[0].find("CEF:0"))).header[4], "detection");
  EXPECT_EQ(ParseCef(messages[1].substr(messages[1].find("CEF:0"))).header[4], "decision-created");
  close(conn);
  close(udp);
  close(tcp);
}

// An output that blocks until opened and records the sequence of every event it writes.
class GatedOutput final : public SinkOutput {
 public:
  absl::Status Write(const Event& event) override {
    {
      absl::MutexLock lock(&mu_);
      entered_ = true;
    }
    open_.WaitForNotification();
    absl::MutexLock lock(&mu_);
    written_.push_back(event.sequence());
    return absl::OkStatus();
  }
  void Open() { open_.Notify(); }
  // Polls (wide deadline, no machine-speed assumption) until `done` holds for what was written.
  bool WaitFor(const std::function<bool(bool entered, const std::vector<uint64_t>&)>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done(entered_, written_); };
    return mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  }
  std::vector<uint64_t> written() {
    absl::MutexLock lock(&mu_);
    return written_;
  }

 private:
  absl::Notification open_;
  absl::Mutex mu_;
  bool entered_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint64_t> written_ ABSL_GUARDED_BY(mu_);
};

double MetricValue(prometheus::Registry& registry, absl::string_view name,
                   absl::string_view label_value) {
  for (const prometheus::MetricFamily& f : registry.Collect()) {
    if (f.name != name) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      bool match = label_value.empty();
      for (const prometheus::ClientMetric::Label& l : m.label) match |= l.value == label_value;
      if (!match) continue;
      return f.type == prometheus::MetricType::Gauge ? m.gauge.value : m.counter.value;
    }
  }
  return -1;
}

// A sink that falls behind resumes from the hub's replay buffer. When the catch-up is more than
// its queue holds, the replay fails half way (kResourceExhausted): the runner must not keep that
// half-filled subscriber registered and then free it (a use-after-free in the hub, caught by
// ASan), nor count as lost what the replay buffer still holds.
TEST(SinkRunnerTest, CatchingUpMoreThanTheQueueHoldsLosesNothingAndLeavesNoSubscriberBehind) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHubOptions hub_options;
  hub_options.replay_capacity = 20000;
  EventHub hub(hub_options, clock, registry);
  palisade::v1::SinkConfig config;
  config.set_name("slow");
  auto output = std::make_unique<GatedOutput>();
  GatedOutput* out = output.get();
  {
    SinkRunner sink(config, std::move(output), hub, registry);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (MetricValue(registry, "palisade_events_subscribers", "") < 1 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));  // polls for the subscription
    }
    ASSERT_EQ(MetricValue(registry, "palisade_events_subscribers", ""), 1);
    Event e = Decision();
    e.clear_sequence();
    hub.Publish(e);  // the sink takes it and blocks writing it
    ASSERT_TRUE(out->WaitFor([](bool entered, const std::vector<uint64_t>&) { return entered; }));
    // 4096 fill the sink's queue, the next one drops it; more than a queue's worth follow, so
    // the catch-up cannot fit in one go.
    constexpr uint64_t kTotal = 9000;
    for (uint64_t i = 1; i < kTotal; ++i) hub.Publish(e);
    out->Open();
    ASSERT_TRUE(out->WaitFor(
        [](bool, const std::vector<uint64_t>& w) { return !w.empty() && w.back() >= kTotal; }))
        << "the sink stopped at " << out->written().size() << " events";
    EXPECT_EQ(MetricValue(registry, "palisade_sink_events_total", "lost"), 0);
    std::vector<uint64_t> written = out->written();
    ASSERT_EQ(written.size(), kTotal);
    for (uint64_t i = 0; i < kTotal; ++i) ASSERT_EQ(written[i], i + 1);
    // One subscriber, the live one: publishing again reaches it (and nothing freed).
    EXPECT_EQ(MetricValue(registry, "palisade_events_subscribers", ""), 1);
    hub.Publish(e);
    ASSERT_TRUE(out->WaitFor(
        [](bool, const std::vector<uint64_t>& w) { return w.back() == kTotal + 1; }));
  }
}

// A sink further behind than the replay buffer reaches resumes with what the buffer still holds:
// the range that left it is counted lost (exactly: its sequence numbers) and said in the log,
// with its bounds. It resumed with new events only, skipping what the buffer still held (counted
// lost, though it was there), said nothing in the log, and between reading the stream's last
// sequence and subscribing anew it could miss events without counting them.
TEST(SinkRunnerTest, EventsThatLeftTheReplayBufferAreCountedAndLoggedAndTheRestWritten) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHubOptions hub_options;
  hub_options.replay_capacity = 100;
  EventHub hub(hub_options, clock, registry);
  palisade::v1::SinkConfig config;
  config.set_name("behind");
  auto output = std::make_unique<GatedOutput>();
  GatedOutput* out = output.get();
  std::vector<uint64_t> written;
  ::testing::internal::CaptureStderr();
  {
    SinkRunner sink(config, std::move(output), hub, registry);
    Event e = Decision();
    e.clear_sequence();
    hub.Publish(e);  // the sink takes 1 and blocks writing it
    ASSERT_TRUE(out->WaitFor([](bool entered, const std::vector<uint64_t>&) { return entered; }));
    // 2..4097 fill its queue, 4098 drops it; the buffer keeps the last 100 (4901..5000).
    for (int i = 2; i <= 5000; ++i) hub.Publish(e);
    out->Open();
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (MetricValue(registry, "palisade_sink_events_total", "lost") <= 0 &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));  // polls for the catch-up
    }
    hub.Publish(e);  // 5001, after the catch-up
    ASSERT_TRUE(out->WaitFor(
        [](bool, const std::vector<uint64_t>& w) { return !w.empty() && w.back() == 5001; }));
    written = out->written();  // here: the runner owns the output, and frees it when it stops
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  std::vector<uint64_t> expected;
  for (uint64_t i = 1; i <= 4097; ++i) expected.push_back(i);
  for (uint64_t i = 4901; i <= 5001; ++i) expected.push_back(i);
  EXPECT_EQ(written.size(), expected.size());
  size_t differ = 0;  // the first place they differ, for the failure message
  while (differ < std::min(written.size(), expected.size()) &&
         written[differ] == expected[differ]) {
    ++differ;
  }
  EXPECT_TRUE(written == expected)
      << "at " << differ << ": wrote "
      << (differ < written.size() ? std::to_string(written[differ]) : "nothing") << ", expected "
      << (differ < expected.size() ? std::to_string(expected[differ]) : "nothing");
  EXPECT_EQ(MetricValue(registry, "palisade_sink_events_total", "lost"), 803);
  EXPECT_THAT(log, HasSubstr("sink behind: 803 events lost between seq 4098 and 4900"));
}

// An output that records what it is given.
class RecordingOutput final : public SinkOutput {
 public:
  explicit RecordingOutput(std::vector<uint64_t>* written) : written_(written) {}
  absl::Status Write(const Event& event) override {
    written_->push_back(event.sequence());
    return absl::OkStatus();
  }

 private:
  std::vector<uint64_t>* written_;  // read once the runner is gone
};

// palisaded starts the sinks and then, at once, the feeds (whose restored entries become
// decisions): the runner subscribed from its thread, some time after it was built, so events
// published in between never reached the SIEM. A runner is subscribed once built.
TEST(SinkRunnerTest, EventsPublishedAsSoonAsTheSinkIsBuiltAreWritten) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHub hub({}, clock, registry);
  palisade::v1::SinkConfig config;
  config.set_name("early");
  for (int round = 0; round < 10; ++round) {
    std::vector<uint64_t> written;
    {
      SinkRunner sink(config, std::make_unique<RecordingOutput>(&written), hub, registry);
      Event e = Decision();
      e.clear_sequence();
      hub.Publish(e);
    }  // the runner writes what it took, then stops
    ASSERT_EQ(written.size(), 1u) << "round " << round;
    EXPECT_EQ(written[0], hub.last_sequence());
  }
}

// Reads one octet-counted frame from `fd` (the SO_RCVTIMEO of the listener it came from).
std::string ReadFrame(int fd) {
  std::string stream;
  char buf[8192];
  for (;;) {
    size_t space = stream.find(' ');
    if (space != std::string::npos) {
      const size_t len = std::stoul(stream.substr(0, space));
      if (stream.size() >= space + 1 + len) return stream.substr(space + 1, len);
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return "";
    stream.append(buf, static_cast<size_t>(n));
  }
}

// A collector that restarts closes its end of the connection. The next send still succeeds
// (the kernel takes it; the peer answers with a reset), so that event was counted written and
// lost. A closed connection is noticed before a write, which goes out on a new one.
TEST(CefSyslogTest, AnEventAfterTheCollectorClosedTheConnectionIsNotLost) {
  int port = 0;
  const int listener = Listen(SOCK_STREAM, &port);
  palisade::v1::SinkConfig config;
  config.set_name("tcp");
  config.mutable_cef_syslog()->set_address(absl::StrCat("127.0.0.1:", port));
  config.mutable_cef_syslog()->set_transport("tcp");
  absl::StatusOr<std::unique_ptr<SinkOutput>> out = SinkRunner::OutputFor(config);
  ASSERT_THAT(out, IsOk());
  Event first = Decision(), second = Decision();
  first.set_sequence(1);
  second.set_sequence(2);
  ASSERT_THAT((*out)->Write(first), IsOk());
  const int conn = accept(listener, nullptr, nullptr);
  ASSERT_GE(conn, 0);
  timeval tv{5, 0};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_THAT(ReadFrame(conn), HasSubstr("cn1=1 "));
  // The collector restarts: its FIN goes out, and once the sink's side has acknowledged it
  // (this side then waits in FIN_WAIT2) the sink's socket knows, whatever the machine's speed.
  ASSERT_EQ(shutdown(conn, SHUT_WR), 0);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  tcp_info info{};
  socklen_t size = sizeof(info);
  while (getsockopt(conn, IPPROTO_TCP, TCP_INFO, &info, &size) == 0 &&
         info.tcpi_state != TCP_FIN_WAIT2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(info.tcpi_state, TCP_FIN_WAIT2);
  close(conn);
  ASSERT_THAT((*out)->Write(second), IsOk());
  const int again = accept(listener, nullptr, nullptr);
  ASSERT_GE(again, 0) << "the event went to the closed connection";
  setsockopt(again, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  EXPECT_THAT(ReadFrame(again), HasSubstr("cn1=2 "));
  close(again);
  close(listener);
}

// A collector that stops reading (hung, or a full disk behind it): once the socket buffers
// were full, send() blocked the sink's thread for good, and palisaded's stop, which joins the
// sinks, with it. Sends and connects have a deadline; past it the write fails (counted) and
// the sink goes on.
TEST(CefSyslogTest, ACollectorThatStopsReadingCannotWedgeTheSink) {
  int port = 0;
  const int listener = Listen(SOCK_STREAM, &port);  // never accepts, never reads
  palisade::v1::CefSyslogSink config;
  config.set_address(absl::StrCat("127.0.0.1:", port));
  config.set_transport("tcp");
  absl::StatusOr<std::unique_ptr<CefSyslogOutput>> out =
      CefSyslogOutput::Open(config, /*io_timeout=*/absl::Milliseconds(500));
  ASSERT_THAT(out, IsOk());
  Event e = Detection();
  e.mutable_detection()->set_source(std::string(4000, 's'));  // fills the buffers sooner
  absl::Notification done;
  absl::Status failed;
  int writes = 0;
  std::thread writer([&] {
    for (; writes < 200000; ++writes) {
      absl::Status s = (*out)->Write(e);
      if (!s.ok()) {
        failed = s;
        break;
      }
    }
    done.Notify();
  });
  // Wide: a wedged writer never finishes; a working one fails within a few deadlines.
  const bool finished = done.WaitForNotificationWithTimeout(absl::Seconds(60));
  if (!finished) close(listener);  // resets the connection, which ends the blocked send
  writer.join();
  EXPECT_TRUE(finished) << "a write blocked past every deadline, after " << writes << " writes";
  EXPECT_THAT(failed, StatusIs(absl::StatusCode::kUnavailable));
  if (finished) close(listener);
}

// A UDP collector whose name did not resolve when palisaded started (DNS not up yet, a name
// added later) refused the start, though a TCP one starts and retries. Both start; the name is
// resolved at each write until it does. Only an address or transport that is malformed refuses.
// (.invalid never resolves, RFC 6761; whether the resolver says so or cannot be reached, the
// write fails kUnavailable: no timing involved.)
TEST(CefSyslogTest, AUdpCollectorWhoseNameDoesNotResolveYetDoesNotRefuseTheStart) {
  palisade::v1::CefSyslogSink config;
  config.set_address("siem.invalid:514");
  config.set_transport("udp");
  absl::StatusOr<std::unique_ptr<CefSyslogOutput>> out = CefSyslogOutput::Open(config);
  ASSERT_THAT(out, IsOk());
  EXPECT_THAT((*out)->Write(Decision()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cef_syslog siem.invalid:514")));
  config.set_address("siem.invalid");
  EXPECT_THAT(CefSyslogOutput::Open(config), StatusIs(absl::StatusCode::kInvalidArgument));
  config.set_address("siem.invalid:514");
  config.set_transport("sctp");
  EXPECT_THAT(CefSyslogOutput::Open(config), StatusIs(absl::StatusCode::kInvalidArgument));
}

// An output whose collector is gone: each write fails after a while (the send deadline).
class FailingOutput final : public SinkOutput {
 public:
  // What the test sees of it: the runner owns the output, and destroys it when it stops.
  struct Seen {
    absl::Notification gate;  // the first write waits for the test
    std::atomic<int> writes{0};
  };
  explicit FailingOutput(Seen& seen) : seen_(seen) {}
  absl::Status Write(const Event&) override {
    seen_.gate.WaitForNotification();
    ++seen_.writes;
    return absl::UnavailableError("cef_syslog 192.0.2.1:514: Resource temporarily unavailable");
  }

 private:
  Seen& seen_;
};

// Stopping writes what the runner took, but not against an output that fails: each failed
// write costs a send deadline, and a full queue of them (4,096) held palisaded's stop for hours.
// Once stopping, the first failure ends the runner; the rest are counted failed, not tried.
TEST(SinkRunnerTest, StoppingGivesUpAtTheFirstFailure) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHub hub({}, clock, registry);
  palisade::v1::SinkConfig config;
  config.set_name("gone");
  FailingOutput::Seen seen;
  auto sink =
      std::make_unique<SinkRunner>(config, std::make_unique<FailingOutput>(seen), hub, registry);
  Event e = Decision();
  e.clear_sequence();
  for (int i = 0; i < 100; ++i) hub.Publish(e);  // one being written (or about to be), 99 queued
  // The stop is asked for before the first write fails, whatever the machine's speed.
  sink->RequestStop();
  seen.gate.Notify();
  sink.reset();
  EXPECT_LE(seen.writes.load(), 2);
  EXPECT_EQ(MetricValue(registry, "palisade_sink_events_total", "failed"), 100);
}

// An output that fails the writes its script says (by call, from 0; past the script's end every
// write succeeds) and records the sequence of every event it wrote. The test owns what it sees:
// the runner owns the output, and destroys it when it stops.
class ScriptedOutput final : public SinkOutput {
 public:
  struct Seen {
    std::vector<bool> fails;    // fails[i]: call i fails
    absl::Notification gate;    // every write waits for it; notified by the test
    absl::Mutex mu;
    int calls ABSL_GUARDED_BY(mu) = 0;
    std::vector<uint64_t> written ABSL_GUARDED_BY(mu);
    // Polls (wide deadline, no machine-speed assumption) until `done` holds.
    bool WaitFor(const std::function<bool(int calls, const std::vector<uint64_t>&)>& done) {
      absl::MutexLock lock(&mu);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return done(calls, written); };
      return mu.AwaitWithDeadline(absl::Condition(&ready), absl::Now() + absl::Seconds(60));
    }
    std::vector<uint64_t> Written() {
      absl::MutexLock lock(&mu);
      return written;
    }
    int Calls() {
      absl::MutexLock lock(&mu);
      return calls;
    }
  };
  explicit ScriptedOutput(Seen& seen) : seen_(seen) {}
  absl::Status Write(const Event& event) override {
    size_t call;
    {
      absl::MutexLock lock(&seen_.mu);
      call = static_cast<size_t>(seen_.calls++);
    }
    seen_.gate.WaitForNotification();
    if (call < seen_.fails.size() && seen_.fails[call]) {
      return absl::UnavailableError("cef_syslog 192.0.2.1:514: Connection refused");
    }
    absl::MutexLock lock(&seen_.mu);
    seen_.written.push_back(event.sequence());
    return absl::OkStatus();
  }

 private:
  Seen& seen_;
};

// Retries a few milliseconds apart: the tests do not wait for the real backoff's seconds.
SinkRunnerOptions QuickRetries() {
  SinkRunnerOptions options;
  options.first_retry = absl::Milliseconds(1);
  options.max_retry = absl::Milliseconds(4);
  return options;
}

// A collector restarting (20 s) made every write of those 20 s fail, and the sink went on to the
// next event after each: all of them were lost, though the hub's replay buffer held them. A
// failed write is tried again after a pause, and nothing is counted failed.
TEST(SinkRunnerTest, AnOutputThatFailsForAWhileGetsItsEventsAgain) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHub hub({}, clock, registry);
  palisade::v1::SinkConfig config;
  config.set_name("restarting");
  ScriptedOutput::Seen seen;
  seen.fails = {true, true, true};
  seen.gate.Notify();
  std::vector<uint64_t> written;
  {
    SinkRunner sink(config, std::make_unique<ScriptedOutput>(seen), hub, registry,
                    QuickRetries());
    Event e = Decision();
    e.clear_sequence();
    for (int i = 0; i < 5; ++i) hub.Publish(e);
    ASSERT_TRUE(seen.WaitFor(
        [](int, const std::vector<uint64_t>& w) { return !w.empty() && w.back() == 5; }));
  }
  EXPECT_EQ(seen.Written(), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(MetricValue(registry, "palisade_sink_events_total", "failed"), 0);
  EXPECT_EQ(MetricValue(registry, "palisade_sink_events_total", "written"), 5);
}

// A sink that had fallen behind (dropped by the hub) when palisaded stopped wrote what its queue
// held and then stopped, without the catch-up: what the replay buffer held for it was neither
// written nor counted. It catches up while stopping; against an output that fails, it gives up
// at the first failure and counts the rest failed. Either way every event is accounted for.
TEST(SinkRunnerTest, StoppingWhileBehindWritesOrCountsWhatTheBufferHolds) {
  constexpr uint64_t kTotal = 5000;  // more than the sink's queue (4096), less than the buffer
  for (const bool failing : {false, true}) {
    SCOPED_TRACE(failing ? "an output that fails" : "an output that works");
    SimulatedClock clock;
    prometheus::Registry registry;
    EventHub hub({}, clock, registry);
    palisade::v1::SinkConfig config;
    config.set_name("behind");
    ScriptedOutput::Seen seen;
    if (failing) seen.fails.assign(kTotal, true);
    auto sink = std::make_unique<SinkRunner>(config, std::make_unique<ScriptedOutput>(seen), hub,
                                             registry, QuickRetries());
    Event e = Decision();
    e.clear_sequence();
    hub.Publish(e);  // the sink takes 1 and waits at the gate writing it
    ASSERT_TRUE(seen.WaitFor([](int calls, const std::vector<uint64_t>&) { return calls > 0; }));
    // 2..4097 fill its queue, 4098 drops it; the replay buffer holds them all.
    for (uint64_t i = 2; i <= kTotal; ++i) hub.Publish(e);
    sink->RequestStop();
    seen.gate.Notify();
    sink.reset();
    const double written = MetricValue(registry, "palisade_sink_events_total", "written");
    const double failed = MetricValue(registry, "palisade_sink_events_total", "failed");
    const double lost = MetricValue(registry, "palisade_sink_events_total", "lost");
    EXPECT_EQ(written + failed + lost, kTotal)
        << "written " << written << ", failed " << failed << ", lost " << lost;
    if (failing) {
      EXPECT_EQ(failed, kTotal);
      EXPECT_EQ(seen.Calls(), 1);  // the stop was asked before the first write failed
    } else {
      std::vector<uint64_t> expected;
      for (uint64_t i = 1; i <= kTotal; ++i) expected.push_back(i);
      EXPECT_TRUE(seen.Written() == expected) << "wrote " << seen.Written().size();
      EXPECT_EQ(written, kTotal);
    }
  }
}

int Count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// A sink's error was logged once per process: after a collector came back, its next outage
// (the same error) said nothing. Each outage is logged once, and its end too.
TEST(SinkRunnerTest, EachOutageIsLoggedOnceAndItsEndToo) {
  SimulatedClock clock;
  prometheus::Registry registry;
  EventHub hub({}, clock, registry);
  palisade::v1::SinkConfig config;
  config.set_name("flaky");
  ScriptedOutput::Seen seen;
  seen.fails = {true, true, false, true};  // event 1 fails twice, event 2 once
  seen.gate.Notify();
  ::testing::internal::CaptureStderr();
  {
    SinkRunner sink(config, std::make_unique<ScriptedOutput>(seen), hub, registry,
                    QuickRetries());
    Event e = Decision();
    e.clear_sequence();
    hub.Publish(e);
    hub.Publish(e);
    EXPECT_TRUE(seen.WaitFor(
        [](int, const std::vector<uint64_t>& w) { return !w.empty() && w.back() == 2; }));
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(Count(log, "palisaded: sink flaky: cef_syslog 192.0.2.1:514: Connection refused\n"),
            2)
      << log;
  EXPECT_EQ(Count(log, "palisaded: sink flaky: recovered"), 2) << log;
  EXPECT_EQ(seen.Written(), (std::vector<uint64_t>{1, 2}));
}

}  // namespace
}  // namespace palisade
