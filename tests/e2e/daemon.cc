#include "tests/e2e/daemon.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/common/proto_time.h"

extern char** environ;

namespace palisade::testing {

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(std::vector<std::string> args,
                                                      const std::string& state_file,
                                                      const std::string& log_file) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  static int counter = 0;
  const std::string port_file =
      absl::StrCat(tmp ? tmp : "/tmp", "/palisaded-ports-", getpid(), "-", ++counter);
  std::remove(port_file.c_str());
  // Free loopback ports unless the caller chose where to listen.
  for (const char* flag : {"--grpc_listen=", "--metrics_listen="}) {
    const bool given = std::any_of(args.begin(), args.end(),
                                   [&](const std::string& a) { return absl::StartsWith(a, flag); });
    if (!given) args.push_back(absl::StrCat(flag, "127.0.0.1:0"));
  }
  args.insert(args.begin(), "services/server/palisaded");
  args.push_back("--port_file=" + port_file);
  args.push_back("--state_file=" +
                 (state_file.empty() ? absl::StrCat(port_file, ".db") : state_file));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  auto daemon = std::unique_ptr<Daemon>(new Daemon());
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!log_file.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, log_file.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  const int spawned =
      posix_spawn(&daemon->pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return absl::InternalError("cannot spawn palisaded");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(daemon->pid_, &status, WNOHANG) == daemon->pid_) {
      daemon->pid_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat("palisaded exited early with status ", WEXITSTATUS(status)));
    }
    std::ifstream in(port_file);
    std::string line;
    while (std::getline(in, line)) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, '=');
      if (kv.first == "grpc") (void)absl::SimpleAtoi(kv.second, &daemon->grpc_port_);
      if (kv.first == "metrics") (void)absl::SimpleAtoi(kv.second, &daemon->metrics_port_);
    }
    if (daemon->grpc_port_ > 0) return daemon;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("palisaded did not start listening within 60 s");
}

void Daemon::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int Daemon::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Daemon::~Daemon() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

absl::StatusOr<std::unique_ptr<Emulator>> Emulator::Start(std::vector<std::string> args) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  static int counter = 0;
  const std::string base = absl::StrCat(tmp ? tmp : "/tmp", "/emulator-", getpid(), "-", ++counter);
  auto emulator = std::unique_ptr<Emulator>(new Emulator());
  emulator->token_file_ = base + ".token";
  const std::string port_file = base + ".port";
  args.insert(args.begin(), "tests/cloudflare_fake/cloudflare_emulator");
  args.push_back("--port_file=" + port_file);
  args.push_back("--token_file=" + emulator->token_file_);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (posix_spawn(&emulator->pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    return absl::InternalError("cannot spawn cloudflare_emulator");
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    std::ifstream in(port_file);
    if (in >> emulator->port_ && emulator->port_ > 0) return emulator;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("cloudflare_emulator did not start within 20 s");
}

Emulator::~Emulator() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
}

std::string WriteEdgeConfig(const Emulator& emulator, const std::string& token_file,
                            const std::vector<std::string>& packs, const std::string& top,
                            const std::string& cloudflare_extra) {
  static int counter = 0;
  const std::string path =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/edge-config-", ++counter, ".textproto");
  std::ofstream out(path);
  for (const std::string& pack : packs) {
    out << "rule_files: \"" << std::getenv("TEST_SRCDIR") << "/palisade/" << pack << "\"\n";
  }
  out << "sweep_interval { nanos: 100000000 }\n"
      << top << "cloudflare {\n  enabled: true\n  api_base: \"" << emulator.api_base() << "\"\n"
      << "  account_id: \"" << kEmulatorAccount << "\"\n  zone_id: \"" << kEmulatorZone
      << "\"\n  token_file: \"" << token_file << "\"\n  flush_interval { nanos: 100000000 }\n"
      << cloudflare_extra << "}\n";
  return path;
}

nlohmann::json EmulatorState(const Emulator& emulator) {
  absl::StatusOr<std::string> body = HttpGet(emulator.port(), "/__emulator/state");
  return body.ok() ? nlohmann::json::parse(*body)["result"] : nlohmann::json();
}

std::map<std::string, std::string> EmulatorListItems(const Emulator& emulator,
                                                     const std::string& list) {
  std::map<std::string, std::string> out;
  nlohmann::json state = EmulatorState(emulator);
  if (!state.is_object() || !state.contains("lists") || !state["lists"].contains(list)) return out;
  for (const auto& item : state["lists"][list]) {
    out[item["ip"].get<std::string>()] = item.value("id", "");
  }
  return out;
}

std::set<std::string> EmulatorListedValues(const Emulator& emulator, const std::string& list) {
  std::set<std::string> out;
  for (const auto& [value, id] : EmulatorListItems(emulator, list)) out.insert(value);
  return out;
}

std::set<std::string> EmulatorAccessRuleValues(const Emulator& emulator) {
  std::set<std::string> out;
  nlohmann::json state = EmulatorState(emulator);
  if (!state.is_object() || !state.contains("access_rules")) return out;
  for (const auto& r : state["access_rules"]) {
    out.insert(r["configuration"]["value"].get<std::string>());
  }
  return out;
}

std::map<std::string, int> EmulatorAccessRuleCounts(const Emulator& emulator) {
  std::map<std::string, int> out;
  nlohmann::json state = EmulatorState(emulator);
  if (!state.is_object() || !state.contains("access_rules")) return out;
  for (const auto& r : state["access_rules"]) {
    ++out[r["configuration"]["value"].get<std::string>()];
  }
  return out;
}

int EmulatorAccessRuleCreates(const Emulator& emulator) {
  const std::string token = FirstLine(emulator.token_file());
  int creates = 0;
  for (int page = 1;; ++page) {
    absl::StatusOr<std::string> audit =
        HttpGet(emulator.port(),
                absl::StrCat("/client/v4/accounts/", kEmulatorAccount,
                             "/audit_logs?per_page=1000&page=", page),
                {"Authorization: Bearer " + token});
    if (!audit.ok()) return -1;
    nlohmann::json entries = nlohmann::json::parse(*audit)["result"];
    if (entries.empty()) break;
    for (const auto& e : entries) {
      creates += e["resource"]["type"] == "firewall.access_rule" && e["action"]["type"] == "create";
    }
  }
  return creates;
}

uint32_t ActionsPending(const Daemon& daemon) {
  auto admin = palisade::v1::Admin::NewStub(
      grpc::CreateChannel(daemon.grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  palisade::v1::StatusResponse status;
  if (!admin->Status(&ctx, {}, &status).ok()) return 1u << 30;
  return status.actions_pending();
}

std::vector<palisade::v1::LogRecord> Records(const std::vector<std::string>& lines) {
  std::vector<palisade::v1::LogRecord> out(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) out[i].set_line(lines[i]);
  return out;
}

std::vector<palisade::v1::LogRecord> Records(const std::vector<std::string>& lines,
                                             absl::Time event_time) {
  std::vector<palisade::v1::LogRecord> out = Records(lines);
  const google::protobuf::Timestamp t = ToProtoTime(event_time);
  for (auto& r : out) *r.mutable_event_time() = t;
  return out;
}

absl::StatusOr<ShipSummary> ShipLines(palisade::v1::Ingest::Stub& stub,
                                      palisade::v1::LogFormat format,
                                      const std::vector<std::string>& lines,
                                      const std::string& source) {
  ShipOptions options;
  options.format = format;
  options.source = source;
  absl::StatusOr<ShipSummary> shipped = Ship(stub, Records(lines, absl::Now()), options);
  if (shipped.ok() && shipped->malformed != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(shipped->malformed, " of ", lines.size(), " lines were malformed"));
  }
  return shipped;
}

Exit RunToExit(std::vector<std::string> args) {
  static int counter = 0;
  const std::string out =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/palisaded-run-", getpid(), "-", ++counter);
  std::string command = "services/server/palisaded";
  for (const std::string& a : args) absl::StrAppend(&command, " '", a, "'");
  for (const char* flag : {"--grpc_listen=", "--metrics_listen="}) {
    const bool given = std::any_of(args.begin(), args.end(),
                                   [&](const std::string& a) { return absl::StartsWith(a, flag); });
    if (!given) absl::StrAppend(&command, " ", flag, "127.0.0.1:0");
  }
  absl::StrAppend(&command, " --state_file=", out, ".db > ", out, " 2>&1");
  const int status = std::system(command.c_str());
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str()};
}

std::string RunShell(const std::string& command, int* exit_code) {
  FILE* p = popen(command.c_str(), "r");
  std::string out;
  if (p == nullptr) {
    *exit_code = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

namespace {
sockaddr_in Loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  return a;
}
}  // namespace

int FreeLoopbackPort() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const int t = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = Loopback(0);
    socklen_t len = sizeof(a);
    const bool tcp_bound = ::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                           ::getsockname(t, reinterpret_cast<sockaddr*>(&a), &len) == 0;
    const int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    const bool udp_free = tcp_bound && ::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    ::close(t);
    ::close(u);
    if (udp_free) return ntohs(a.sin_port);
  }
  return 0;
}

HeldLoopbackPort::HeldLoopbackPort() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
  sockaddr_in a = Loopback(0);
  socklen_t len = sizeof(a);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && ::listen(fd_, 1) == 0 &&
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port_ = ntohs(a.sin_port);
  }
}

HeldLoopbackPort::~HeldLoopbackPort() {
  if (fd_ >= 0) ::close(fd_);
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return done();
}

namespace {
size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

absl::StatusOr<std::string> Http(int port, const std::string& path, const std::string* post,
                                 const std::vector<std::string>& headers) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  std::string body;
  const std::string url = absl::StrCat("http://127.0.0.1:", port, path);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  if (post != nullptr) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, post->c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(post->size()));
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  // Only a hung peer waits this out (a refusal or an error status answers at once): room for a
  // busy machine, where a one-shot scrape must not read as "no answer".
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
  CURLcode rc = curl_easy_perform(curl);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(curl);
  curl_slist_free_all(list);
  if (rc != CURLE_OK) return absl::UnavailableError(curl_easy_strerror(rc));
  if (code != 200) return absl::UnavailableError(absl::StrCat("HTTP ", code, ": ", body));
  return body;
}
}  // namespace

absl::StatusOr<std::string> HttpGet(int port, const std::string& path,
                                    const std::vector<std::string>& headers) {
  return Http(port, path, nullptr, headers);
}

absl::StatusOr<std::string> HttpPost(int port, const std::string& path, const std::string& body,
                                     const std::vector<std::string>& headers) {
  return Http(port, path, &body, headers);
}

double MetricValue(const std::string& exposition, const std::string& name,
                   const std::vector<std::string>& labels) {
  double total = 0;
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (!absl::StartsWith(line, name)) continue;
    char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool ok = true;
    for (const auto& l : labels) ok &= absl::StrContains(line, l);
    if (!ok) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) total += v;
  }
  return total;
}

double ScrapeMetric(const Daemon& daemon, const std::string& name,
                    const std::vector<std::string>& labels) {
  absl::StatusOr<std::string> metrics = HttpGet(daemon.metrics_port(), "/metrics");
  return metrics.ok() ? MetricValue(*metrics, name, labels) : -1;
}

bool WaitForSubscribers(const Daemon& daemon, int n) {
  return WaitFor([&] { return ScrapeMetric(daemon, "palisade_events_subscribers") == n; },
                 absl::Seconds(60));
}

std::string ByteBufferString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

}  // namespace palisade::testing
