#include "services/events/sinks.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "services/common/proto_time.h"

namespace palisade {
namespace {

using json = nlohmann::json;
using palisade::v1::Event;

constexpr char kVersion[] = "0.1.0";

std::string Rfc3339(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", FromProtoTime(t), absl::UTCTimeZone());
}

std::string OriginName(palisade::v1::Origin o) {
  switch (o) {
    case palisade::v1::ORIGIN_RULE:
      return "rule";
    case palisade::v1::ORIGIN_MANUAL:
      return "manual";
    case palisade::v1::ORIGIN_FEED:
      return "feed";
    default:
      return "unknown";
  }
}

std::string KindName(palisade::v1::TargetKind k) {
  switch (k) {
    case palisade::v1::TARGET_KIND_IP:
      return "ip";
    case palisade::v1::TARGET_KIND_RANGE:
      return "range";
    case palisade::v1::TARGET_KIND_TOKEN_FINGERPRINT:
      return "token_fingerprint";
    case palisade::v1::TARGET_KIND_PATH:
      return "path";
    case palisade::v1::TARGET_KIND_TOKEN_ID:
      return "token_id";
    default:
      return "unknown";
  }
}

// Lower-case enum value without its prefix: ACTION_BLOCK -> "block".
std::string Short(const std::string& name, absl::string_view prefix) {
  std::string s = name.substr(std::min(name.size(), prefix.size()));
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

const palisade::v1::Target* TargetOf(const Event& e) {
  switch (e.body_case()) {
    case Event::kDetection:
      return &e.detection().target();
    case Event::kDecision:
      return &e.decision().decision().target();
    case Event::kAction:
      return &e.action().target();
    case Event::kAlert:
      return &e.alert().target();
    default:
      return nullptr;
  }
}

std::string ActionOf(const Event& e) {
  switch (e.body_case()) {
    case Event::kDetection:
      return "detection";
    case Event::kDecision:
      return "decision-" + e.decision().change();
    case Event::kAction:
      return e.action().operation() + "-" + e.action().outcome();
    case Event::kAlert:
      return "alert-" + e.alert().kind();
    default:
      return "unknown";
  }
}

int CefSeverity(const Event& e) {
  switch (e.body_case()) {
    case Event::kDetection:
      return 7;
    case Event::kDecision:
      return e.decision().change() == "created" ? 6 : 3;
    case Event::kAction:
      if (e.action().outcome() == "failed") return 8;
      if (e.action().outcome() == "refused" || e.action().outcome() == "held") return 5;
      return 3;
    case Event::kAlert:
      return 9;  // an operator must look now
    default:
      return 3;
  }
}

std::string CefHeader(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"|", "\\|"}, {"\n", " "}, {"\r", " "}});
}

std::string CefValue(absl::string_view s) {
  return absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"=", "\\="}, {"\n", "\\n"}, {"\r", "\\r"}});
}

}  // namespace

std::string EventSummary(const Event& e) {
  const palisade::v1::Target* t = TargetOf(e);
  const std::string target = t == nullptr ? "-" : t->value();
  switch (e.body_case()) {
    case Event::kDetection:
      return absl::StrCat("detection by ", e.rule_id(), ": ", target, " from ",
                          e.detection().source(), ", ", e.detection().evidence_size(),
                          " evidence line(s)",
                          e.detection().feeds().empty()
                              ? ""
                              : absl::StrCat(", listed by ", absl::StrJoin(e.detection().feeds(), ",")));
    case Event::kDecision:
      return absl::StrCat(
          "decision ", e.decision().change(), ": ",
          Short(palisade::v1::Action_Name(e.decision().decision().action()), "ACTION_"), " ",
          target, " until ", Rfc3339(e.decision().decision().expiry()));
    case Event::kAction:
      return absl::StrCat(
          e.action().operation(), " ",
          Short(palisade::v1::Actuator_Name(e.action().actuator()), "ACTUATOR_"), " ",
          target, ": ", e.action().outcome(),
          e.action().detail().empty() ? "" : absl::StrCat(" (", e.action().detail(), ")"));
    case Event::kAlert:
      return absl::StrCat("ALERT ", e.alert().kind(), ": ", target, ": ", e.alert().detail());
    default:
      return "event";
  }
}

std::string ToEcsJson(const Event& e) {
  json j;
  j["@timestamp"] = Rfc3339(e.time());
  j["ecs"]["version"] = "8.11.0";
  j["message"] = EventSummary(e);
  j["observer"] = {{"vendor", "Palisade"}, {"product", "palisaded"}, {"version", kVersion}};
  json& ev = j["event"];
  ev["id"] = std::to_string(e.sequence());
  ev["sequence"] = e.sequence();
  ev["module"] = "palisade";
  ev["dataset"] = absl::StrCat("palisade.", EventKindName(e.kind()));
  ev["action"] = ActionOf(e);
  ev["severity"] = CefSeverity(e);
  if (!e.rule_id().empty()) j["rule"] = {{"id", e.rule_id()}, {"name", e.rule_id()}};
  json& p = j["palisade"];
  p["correlation_id"] = e.correlation_id();
  p["origin"] = OriginName(e.origin());
  if (const palisade::v1::Target* t = TargetOf(e)) {
    p["target"] = {{"kind", KindName(t->kind()) }, {"value", t->value()}};
    if (t->kind() == palisade::v1::TARGET_KIND_IP) {
      j["source"] = {{"ip", t->value()}, {"address", t->value()}};
      j["related"]["ip"] = json::array({t->value()});
    } else if (t->kind() == palisade::v1::TARGET_KIND_RANGE) {
      j["source"]["address"] = t->value();
    }
  }
  switch (e.body_case()) {
    case Event::kDetection: {
      ev["kind"] = "alert";
      ev["category"] = json::array({"intrusion_detection"});
      ev["type"] = json::array({"indicator"});
      ev["provider"] = e.detection().source();
      p["evidence"] = json::array();
      for (const std::string& line : e.detection().evidence()) p["evidence"].push_back(line);
      if (!e.detection().feeds().empty()) {
        j["threat"]["feed"]["name"] = e.detection().feeds(0);
        p["feeds"] = json::array();
        for (const std::string& f : e.detection().feeds()) p["feeds"].push_back(f);
      }
      break;
    }
    case Event::kDecision: {
      const palisade::v1::Decision& d = e.decision().decision();
      const std::string& change = e.decision().change();
      ev["kind"] = "event";
      ev["category"] = json::array({"intrusion_detection"});
      ev["type"] = json::array({change == "created"    ? "creation"
                                : change == "extended" ? "change"
                                                       : "deletion"});
      p["decision"] = {
          {"id", d.id()},
          {"change", change},
          {"action", Short(palisade::v1::Action_Name(d.action()), "ACTION_")},
          {"actuator", Short(palisade::v1::Actuator_Name(d.actuator()), "ACTUATOR_")},
          {"start", Rfc3339(d.start())},
          {"expiry", Rfc3339(d.expiry())},
          {"offence", d.offence()},
          {"dry_run", d.dry_run()}};
      if (!d.reason().empty()) p["decision"]["reason"] = d.reason();
      break;
    }
    case Event::kAction: {
      const palisade::v1::ActionEvent& a = e.action();
      ev["kind"] = "event";
      ev["category"] = json::array({"configuration"});
      ev["type"] = json::array({"change"});
      ev["outcome"] = (a.outcome() == "applied" || a.outcome() == "dry_run") ? "success"
                      : (a.outcome() == "failed" || a.outcome() == "refused") ? "failure"
                                                                               : "unknown";
      p["action"] = {{"actuator", Short(palisade::v1::Actuator_Name(a.actuator()), "ACTUATOR_")},
                     {"operation", a.operation()},
                     {"outcome", a.outcome()},
                     {"attempt", a.attempt()}};
      if (!a.detail().empty()) {
        p["action"]["detail"] = a.detail();
        if (a.outcome() == "failed") j["error"]["message"] = a.detail();
      }
      break;
    }
    case Event::kAlert: {
      ev["kind"] = "alert";
      ev["category"] = json::array({"iam"});
      ev["type"] = json::array({"indicator"});
      p["alert"] = {{"kind", e.alert().kind()}, {"detail", e.alert().detail()}};
      p["evidence"] = json::array();
      for (const std::string& line : e.alert().evidence()) p["evidence"].push_back(line);
      break;
    }
    default:
      ev["kind"] = "event";
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string ToCef(const Event& e) {
  std::vector<std::string> ext;
  auto add = [&ext](absl::string_view key, absl::string_view value) {
    ext.push_back(absl::StrCat(key, "=", CefValue(value)));
  };
  add("rt", std::to_string(absl::ToUnixMillis(FromProtoTime(e.time()))));
  add("cn1Label", "sequence");
  add("cn1", std::to_string(e.sequence()));
  add("cs1Label", "rule");
  add("cs1", e.rule_id());
  add("cs2Label", "correlationId");
  add("cs2", e.correlation_id());
  add("cs3Label", "origin");
  add("cs3", OriginName(e.origin()));
  if (const palisade::v1::Target* t = TargetOf(e)) {
    if (t->kind() == palisade::v1::TARGET_KIND_IP) add("src", t->value());
    add("cs4Label", "target");
    add("cs4", t->value());
  }
  if (e.body_case() == Event::kDecision) {
    add("act", Short(palisade::v1::Action_Name(e.decision().decision().action()), "ACTION_"));
    add("end", std::to_string(absl::ToUnixMillis(FromProtoTime(e.decision().decision().expiry()))));
  }
  if (e.body_case() == Event::kAction) add("outcome", e.action().outcome());
  if (e.body_case() == Event::kDetection && !e.detection().feeds().empty()) {
    add("cs5Label", "feeds");
    add("cs5", absl::StrJoin(e.detection().feeds(), ","));
  }
  add("msg", EventSummary(e));
  return absl::StrCat("CEF:0|Palisade|palisaded|", kVersion, "|", CefHeader(ActionOf(e)), "|",
                      CefHeader(EventSummary(e)), "|", CefSeverity(e), "|",
                      absl::StrJoin(ext, " "));
}

std::string ToSyslog5424(const Event& e, absl::string_view message, absl::string_view hostname) {
  const int cef = CefSeverity(e);
  const int severity = cef >= 8 ? 3 : cef >= 6 ? 4 : cef == 5 ? 5 : 6;  // err, warning, notice, info
  const int pri = 10 * 8 + severity;                                     // facility authpriv
  return absl::StrCat("<", pri, ">1 ", Rfc3339(e.time()), " ", hostname.empty() ? "-" : hostname,
                      " palisaded ", getpid(), " ", EventKindName(e.kind()), " - ", message);
}

// --- EcsFileOutput -----------------------------------------------------------------------------

namespace {
int OpenForAppend(const std::string& path) {
  return open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
}

uint64_t FileSize(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// Whether the file at `path` (`size` bytes) ends with something other than a newline. Read
// through a descriptor of its own: the one written is write-only.
bool EndsInsideALine(const std::string& path, uint64_t size) {
  if (size == 0) return false;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // cannot tell: as before, appended to as it is
  char last = '\n';
  const bool read = pread(fd, &last, 1, static_cast<off_t>(size - 1)) == 1;
  close(fd);
  return read && last != '\n';
}
}  // namespace

absl::StatusOr<std::unique_ptr<EcsFileOutput>> EcsFileOutput::Open(
    const palisade::v1::EcsFileSink& c, EcsFileOptions options) {
  const int fd = OpenForAppend(c.path());
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("ecs_file ", c.path(), ": ", std::strerror(errno)));
  }
  return std::unique_ptr<EcsFileOutput>(new EcsFileOutput(c, std::move(options), fd));
}

EcsFileOutput::EcsFileOutput(palisade::v1::EcsFileSink config, EcsFileOptions options, int fd)
    : config_(std::move(config)), options_(std::move(options)), fd_(fd) {
  Opened();
}

void EcsFileOutput::Opened() {
  torn_ = EndsInsideALine(config_.path(), FileSize(fd_));
}

EcsFileOutput::~EcsFileOutput() {
  if (fd_ >= 0) close(fd_);
}

absl::Status EcsFileOutput::Rotate() {
  const uint32_t keep = config_.max_files() > 0 ? config_.max_files() : 5;
  const std::string& path = config_.path();
  // The current file moves aside first. If it cannot move (a directory palisaded may not
  // write), nothing else is touched and it is appended to: starting it anew would destroy the
  // events in it, which a shipper may not have read.
  const std::string aside = path + ".rotating";
  if (std::rename(path.c_str(), aside.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("ecs_file ", path, ": cannot rotate (",
                                               std::strerror(errno), "); appending to it"));
  }
  std::remove(absl::StrCat(path, ".", keep).c_str());
  for (uint32_t i = keep - 1; i >= 1; --i) {
    std::rename(absl::StrCat(path, ".", i).c_str(), absl::StrCat(path, ".", i + 1).c_str());
  }
  if (std::rename(aside.c_str(), (path + ".1").c_str()) != 0) {
    const int err = errno;
    std::rename(aside.c_str(), path.c_str());  // back: the file is appended to (still open)
    return absl::UnavailableError(absl::StrCat("ecs_file ", path, ": cannot rotate (",
                                               std::strerror(err), "); appending to it"));
  }
  close(fd_);
  fd_ = OpenForAppend(path);
  torn_ = false;  // a new, empty file
  if (fd_ < 0) {
    return absl::UnavailableError(absl::StrCat("ecs_file ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status EcsFileOutput::Write(const Event& event) {
  const std::string line = ToEcsJson(event) + "\n";
  const uint64_t max = config_.max_bytes() > 0 ? config_.max_bytes() : (100ull << 20);
  if (fd_ < 0) {
    // The last rotation could not open the new file: open it now (never rotate again, which
    // would push every kept file one place down per event).
    fd_ = OpenForAppend(config_.path());
    if (fd_ < 0) {
      return absl::UnavailableError(
          absl::StrCat("ecs_file ", config_.path(), ": ", std::strerror(errno)));
    }
    Opened();
  }
  // Where this line starts: the file's end (O_APPEND), read now rather than counted, since a
  // logrotate copytruncate may have emptied the file under us.
  uint64_t start = FileSize(fd_);
  if (start > 0 && start + line.size() > max) {
    if (absl::Status s = Rotate(); !s.ok()) {
      if (fd_ < 0) return s;
      if (std::string(s.message()) != rotate_error_) {  // said once, not per event
        rotate_error_ = std::string(s.message());
        std::fprintf(stderr, "palisaded: %s\n", rotate_error_.c_str());
      }
    } else {
      rotate_error_.clear();
    }
    start = FileSize(fd_);  // 0 after a rotation
  }
  // A file that may end inside a line gets a newline first: the broken part stays a line of its
  // own (a reader skips it) instead of swallowing this event.
  const std::string bytes = torn_ ? "\n" + line : line;
  size_t done = 0;
  int err = 0;
  while (done < bytes.size()) {
    const ssize_t n = options_.write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(n);  // a short write: the rest goes in the next call
  }
  if (done < bytes.size()) {
    std::string what = std::strerror(err);
    if (done > 0) {
      // Part of the line is in the file; the next line would be appended to it, and a reader
      // would see one merged line and parse neither event. Cut it off: back to `start`, the end
      // of the last whole line. Only if the file holds exactly what this write added: one that
      // shrank meanwhile (copytruncate) would be lengthened with zeros.
      const uint64_t now = FileSize(fd_);
      if (now >= start && now <= start + done &&
          ftruncate(fd_, static_cast<off_t>(start)) == 0) {
        absl::StrAppend(&what, " (the part of the line written was cut off)");
      } else {
        torn_ = true;  // cannot cut: the next line starts on a line of its own
        absl::StrAppend(&what, " (part of a line left in the file)");
      }
    }
    // The event is not in the file: the runner counts it failed.
    return absl::UnavailableError(absl::StrCat("ecs_file ", config_.path(), ": ", what));
  }
  torn_ = false;
  return absl::OkStatus();
}

// --- CefSyslogOutput ---------------------------------------------------------------------------

namespace {
// Whether the peer of a connected stream socket has closed it or reset it. A collector sends
// nothing, so anything readable is its FIN (recv 0) or an error; bytes it did send are ignored.
bool PeerClosed(int fd) {
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}
}  // namespace

absl::StatusOr<std::unique_ptr<CefSyslogOutput>> CefSyslogOutput::Open(
    const palisade::v1::CefSyslogSink& c, absl::Duration io_timeout) {
  const std::string& address = c.address();
  size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("cef_syslog.address \"", address, "\" is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string& transport = c.transport();
  if (!transport.empty() && transport != "udp" && transport != "tcp") {
    return absl::InvalidArgumentError("cef_syslog.transport must be udp or tcp");
  }
  std::unique_ptr<CefSyslogOutput> out(
      new CefSyslogOutput(transport == "tcp", host, port, io_timeout));
  // A collector not reachable yet, or whose name does not resolve yet (DNS not up at boot), does
  // not hold palisaded's start: each write resolves and connects again until one goes out.
  (void)out->Connect();
  return out;
}

CefSyslogOutput::CefSyslogOutput(bool tcp, std::string host, int port, absl::Duration io_timeout)
    : tcp_(tcp), host_(std::move(host)), port_(port), io_timeout_(io_timeout) {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) == 0) hostname_ = name;
}

CefSyslogOutput::~CefSyslogOutput() {
  if (fd_ >= 0) close(fd_);
}

absl::Status CefSyslogOutput::Connect() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  addrinfo hints{};
  hints.ai_socktype = tcp_ ? SOCK_STREAM : SOCK_DGRAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(port_);
  if (int rc = getaddrinfo(host_.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cef_syslog ", host_, ":", port_, ": ", gai_strerror(rc)));
  }
  // Non-blocking while connecting, so a collector that does not answer costs io_timeout, not
  // the kernel's minutes of SYN retries; then blocking with a send deadline.
  int fd = socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const int64_t ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(io_timeout_));
      const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, INT32_MAX)));
      socklen_t len = sizeof(err);
      if (ready == 0) {
        err = ETIMEDOUT;
      } else if (ready < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
      }
    }
  }
  if (err == 0) {
    const timeval tv = absl::ToTimeval(io_timeout_);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
      err = errno;
    }
  }
  freeaddrinfo(found);
  if (err != 0) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("cef_syslog ", host_, ":", port_, ": ", std::strerror(err)));
  }
  fd_ = fd;
  return absl::OkStatus();
}

absl::Status CefSyslogOutput::Write(const Event& event) {
  const std::string message = ToSyslog5424(event, ToCef(event), hostname_);
  // RFC 6587 octet counting over TCP; one datagram per message over UDP.
  const std::string frame = tcp_ ? absl::StrCat(message.size(), " ", message) : message;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (fd_ >= 0 && tcp_ && PeerClosed(fd_)) {
      // The collector closed its end (it restarted): a send would still be taken by the kernel
      // and then lost to the peer's reset, so this event goes out on a new connection.
      close(fd_);
      fd_ = -1;
    }
    if (fd_ < 0) {
      if (absl::Status s = Connect(); !s.ok()) return s;
    }
    size_t sent = 0;
    while (sent < frame.size()) {
      ssize_t n = send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    if (sent == frame.size()) return absl::OkStatus();
    close(fd_);  // a collector that restarted: reconnect once
    fd_ = -1;
  }
  return absl::UnavailableError(absl::StrCat("cef_syslog ", host_, ":", port_, ": send failed"));
}

// --- SinkRunner --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SinkOutput>> SinkRunner::OutputFor(
    const palisade::v1::SinkConfig& config) {
  switch (config.kind_case()) {
    case palisade::v1::SinkConfig::kEcsFile: {
      absl::StatusOr<std::unique_ptr<EcsFileOutput>> out = EcsFileOutput::Open(config.ecs_file());
      if (!out.ok()) return out.status();
      return std::unique_ptr<SinkOutput>(std::move(*out));
    }
    case palisade::v1::SinkConfig::kCefSyslog: {
      absl::StatusOr<std::unique_ptr<CefSyslogOutput>> out =
          CefSyslogOutput::Open(config.cef_syslog());
      if (!out.ok()) return out.status();
      return std::unique_ptr<SinkOutput>(std::move(*out));
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("sink \"", config.name(), "\": set ecs_file or cef_syslog"));
  }
}

namespace {
prometheus::Family<prometheus::Counter>& SinkEvents(prometheus::Registry& registry) {
  return prometheus::BuildCounter()
      .Name("palisade_sink_events_total")
      .Help("Events written by a SIEM sink, or not (result=failed: the output refused it; "
            "lost: gone from the replay buffer before the sink got it).")
      .Register(registry);
}
}  // namespace

SinkRunner::SinkRunner(const palisade::v1::SinkConfig& config, std::unique_ptr<SinkOutput> output,
                       EventHub& hub, prometheus::Registry& registry,
                       SinkRunnerOptions options)
    : config_(config),
      options_(options),
      output_(std::move(output)),
      hub_(hub),
      written_(SinkEvents(registry).Add({{"sink", config.name()}, {"result", "written"}})),
      failed_(SinkEvents(registry).Add({{"sink", config.name()}, {"result", "failed"}})),
      lost_(SinkEvents(registry).Add({{"sink", config.name()}, {"result", "lost"}})) {
  // Subscribed here, not on the thread: an event published as soon as the runner exists (the
  // daemon starts the feeds right after the sinks) must reach it.
  for (const std::string& k : config_.kinds()) {
    if (k == "detection") filter_.add_kinds(palisade::v1::EVENT_KIND_DETECTION);
    if (k == "decision") filter_.add_kinds(palisade::v1::EVENT_KIND_DECISION);
    if (k == "action") filter_.add_kinds(palisade::v1::EVENT_KIND_ACTION);
    if (k == "alert") filter_.add_kinds(palisade::v1::EVENT_KIND_ALERT);
  }
  subscriber_ = std::make_unique<QueueSubscriber>(4096);
  (void)hub_.Subscribe(subscriber_.get(), filter_);
  subscribed_at_ = hub_.last_sequence();
  thread_ = std::thread([this] { Run(); });
}

SinkRunner::~SinkRunner() {
  if (!stopping_.HasBeenNotified()) stopping_.Notify();
  thread_.join();
}

void SinkRunner::Run() {
  palisade::v1::WatchRequest filter = filter_;
  std::unique_ptr<QueueSubscriber> subscriber = std::move(subscriber_);
  uint64_t last = subscribed_at_;  // the last event written, or counted failed
  // Taken, and its write failed (kUnavailable): written again after a pause, before the next.
  // Kept here rather than taken again from the hub: after_sequence 0 would replay nothing.
  std::optional<Event> retry;
  absl::Duration backoff = absl::ZeroDuration();
  std::string last_error;
  // Stopping, and a write failed: what is left is not tried against an output that fails (each
  // try costs its deadline, and a full queue of them would hold the stop for hours), but taken
  // and counted failed, the replay buffer's part too.
  bool giving_up = false;
  for (;;) {
    std::optional<Event> e = std::move(retry);
    retry.reset();
    if (!e.has_value()) {
      e = subscriber->Next(giving_up ? absl::ZeroDuration() : absl::Milliseconds(200));
    }
    if (e.has_value() && giving_up) {
      failed_.Increment();
      last = e->sequence();
      continue;
    }
    if (e.has_value()) {
      absl::Status s = output_->Write(*e);
      if (s.ok()) {
        written_.Increment();
        last = e->sequence();
        backoff = absl::ZeroDuration();
        if (!last_error.empty()) {  // the outage is over: the next one is logged again
          std::fprintf(stderr, "palisaded: sink %s: recovered\n", config_.name().c_str());
          last_error.clear();
        }
        continue;
      }
      if (std::string(s.message()) != last_error) {  // one log line per outage and error
        last_error = std::string(s.message());
        std::fprintf(stderr, "palisaded: sink %s: %s\n", config_.name().c_str(),
                     last_error.c_str());
      }
      if (absl::IsUnavailable(s) && !stopping_.HasBeenNotified()) {
        // An outage (a collector restarting, a full disk): the event is tried again after a
        // pause, doubling while it lasts; meanwhile the queue fills and then the replay buffer,
        // which the catch-up below reads once the queue is written. A stop ends the pause.
        backoff = backoff == absl::ZeroDuration()
                      ? options_.first_retry
                      : std::min(2 * backoff, options_.max_retry);
        if (!stopping_.WaitForNotificationWithTimeout(backoff)) {
          retry = std::move(e);
          continue;
        }
      }
      failed_.Increment();
      last = e->sequence();
      giving_up = stopping_.HasBeenNotified();
      continue;  // or an error that is not an outage: this event cannot be written
    }
    // Stopping too: what the replay buffer holds for a sink that fell behind is written (or,
    // giving up, counted), not dropped unsaid.
    if (subscriber->dropped()) {
      // Fell behind (and everything it took is written or counted): pick up after the last one,
      // from the hub's replay buffer. The old subscriber goes first: a failed catch-up leaves
      // one that the hub may still hold (it is removed only when a delivery fails).
      hub_.Unsubscribe(subscriber.get());
      subscriber = std::make_unique<QueueSubscriber>(4096);
      filter.set_after_sequence(last);
      // When the buffer no longer holds what followed `last`, the hub resumes from the oldest
      // event it still has, and says where, in the same step: the gap is exactly
      // last + 1 .. resumed_after. (It used to resume with new events only, after reading the
      // stream's last sequence: what the buffer still held was skipped, and what was published
      // between the two calls was neither written nor counted. Nothing said where the gap was.)
      uint64_t resumed_after = last;
      absl::Status s = hub_.SubscribeSkippingGone(subscriber.get(), filter, &resumed_after);
      if (resumed_after > last) {
        // Counted in sequence numbers: with a `kinds` filter some of them were not the sink's
        // (the events are gone, so which is unknown). Said once per gap, with its bounds.
        const uint64_t missed = resumed_after - last;
        lost_.Increment(static_cast<double>(missed));
        std::fprintf(stderr,
                     "palisaded: sink %s: %llu events lost between seq %llu and %llu (they left "
                     "the replay buffer before the sink caught up)\n",
                     config_.name().c_str(), static_cast<unsigned long long>(missed),
                     static_cast<unsigned long long>(last + 1),
                     static_cast<unsigned long long>(resumed_after));
        last = resumed_after;
      }
      // kResourceExhausted: more to catch up than the queue holds. The subscriber was not added
      // and holds the first part: the loop writes it and then resumes from there again.
      if (!s.ok() && !absl::IsResourceExhausted(s)) {
        // Cannot happen (`last` came from the hub, so it is not ahead of the stream); said, and
        // followed by new events rather than by nothing at all.
        std::fprintf(stderr, "palisaded: sink %s: cannot resume: %s\n", config_.name().c_str(),
                     std::string(s.message()).c_str());
        subscriber = std::make_unique<QueueSubscriber>(4096);
        filter.set_after_sequence(0);
        (void)hub_.Subscribe(subscriber.get(), filter);
      }
      continue;
    }
    if (stopping_.HasBeenNotified()) break;
  }
  hub_.Unsubscribe(subscriber.get());
}

}  // namespace palisade
