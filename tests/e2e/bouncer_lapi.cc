#include "tests/e2e/bouncer_lapi.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/common/proto_time.h"

extern char** environ;

namespace palisade::testing {
namespace {

size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// Single-quotes `s` for /bin/sh.
std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// Waits until something answers HTTP on the port (any status: a 403 says the API is up).
bool WaitForHttp(int port) {
  return WaitFor(
      [&] {
        absl::StatusOr<HttpReply> r = LapiRequest(port, "GET", "/v1/decisions", std::nullopt);
        return r.ok() && r->status != 0;
      },
      absl::Seconds(60));
}

// ------------------------------------------------------------------------------------------
// crowdsec

class CrowdsecLapi : public LapiBackend {
 public:
  static absl::StatusOr<std::unique_ptr<LapiBackend>> Start(const std::string& dir) {
    if (access("/usr/bin/crowdsec", X_OK) != 0 || access("/usr/bin/cscli", X_OK) != 0) {
      return absl::NotFoundError("crowdsec is not installed (bash tools/setup.sh)");
    }
    auto lapi = std::unique_ptr<CrowdsecLapi>(new CrowdsecLapi(dir));
    if (absl::Status s = lapi->WriteConfig(); !s.ok()) return s;
    absl::StatusOr<std::string> machine =
        lapi->Cscli("machines add palisade-test --password notasecret0123456789 --force -f " +
                    ShellQuote(lapi->dir_ + "/etc/local_api_credentials.yaml") + " --url " +
                    ShellQuote(absl::StrCat("http://127.0.0.1:", lapi->port_, "/")));
    if (!machine.ok()) return machine.status();
    if (absl::Status s = lapi->Launch(); !s.ok()) return s;
    return lapi;
  }

  ~CrowdsecLapi() override { process_.reset(); }

  std::string name() const override { return "crowdsec"; }
  int port() const override { return port_; }

  absl::StatusOr<std::string> AddBouncer(const std::string& bouncer) override {
    absl::StatusOr<std::string> key = Cscli("-oraw bouncers add " + ShellQuote(bouncer));
    if (!key.ok()) return key.status();
    return std::string(absl::StripAsciiWhitespace(*key));
  }

  absl::StatusOr<std::string> AddDecision(const LapiDecision& d) override {
    const std::string flag = d.scope == "Range" ? "--range" : "--ip";
    absl::StatusOr<std::string> out = Cscli(absl::StrCat(
        "decisions add ", flag, " ", ShellQuote(d.value), " --duration ",
        absl::FormatDuration(d.duration), " --type ", d.type, " --reason ", ShellQuote(d.reason)));
    if (!out.ok()) return out.status();
    decisions_[d.value] = d;
    return d.value;
  }

  absl::Status DeleteDecision(const std::string& id) override {
    auto it = decisions_.find(id);
    if (it == decisions_.end()) return absl::NotFoundError(id);
    const std::string flag = it->second.scope == "Range" ? "--range" : "--ip";
    return Cscli("decisions delete " + flag + " " + ShellQuote(id)).status();
  }

  absl::Status Restart() override {
    process_.reset();
    return Launch();
  }

 private:
  explicit CrowdsecLapi(const std::string& dir) : dir_(dir), port_(FreeLoopbackPort()) {}

  absl::Status WriteConfig() {
    for (const char* sub : {"", "/etc", "/data", "/hub", "/logs"}) {
      mkdir((dir_ + sub).c_str(), 0700);
    }
    std::ofstream(dir_ + "/etc/local_api_credentials.yaml") << "";
    std::ofstream(dir_ + "/etc/simulation.yaml") << "simulation: off\n";
    std::ofstream(dir_ + "/etc/profiles.yaml")
        << "name: default_ip_remediation\nfilters:\n"
        << " - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n"
        << "decisions:\n - type: ban\n   duration: 4h\non_success: break\n";
    std::ofstream(dir_ + "/hub/.index.json") << "{}";
    std::ofstream cfg(dir_ + "/etc/config.yaml");
    cfg << "common:\n  daemonize: false\n  log_media: file\n  log_level: info\n"
        << "  log_dir: " << dir_ << "/logs/\n  working_dir: .\n"
        << "config_paths:\n  config_dir: " << dir_ << "/etc/\n  data_dir: " << dir_
        << "/data/\n  simulation_path: " << dir_ << "/etc/simulation.yaml\n  hub_dir: " << dir_
        << "/hub/\n  index_path: " << dir_ << "/hub/.index.json\n  notification_dir: " << dir_
        << "/etc/notifications/\n  plugin_dir: /usr/lib/crowdsec/plugins/\n"
        << "cscli:\n  output: human\n  color: \"no\"\n"
        << "db_config:\n  log_level: info\n  type: sqlite\n  db_path: " << dir_
        << "/data/crowdsec.db\n  use_wal: false\n"
        << "api:\n  client:\n    insecure_skip_verify: false\n    credentials_path: " << dir_
        << "/etc/local_api_credentials.yaml\n  server:\n    log_level: info\n"
        << "    listen_uri: 127.0.0.1:" << port_ << "\n    profiles_path: " << dir_
        << "/etc/profiles.yaml\n    trusted_ips:\n      - 127.0.0.1\n"
        << "prometheus:\n  enabled: false\n";
    if (!cfg.good()) return absl::InternalError("cannot write " + dir_ + "/etc/config.yaml");
    return absl::OkStatus();
  }

  absl::Status Launch() {
    absl::StatusOr<std::unique_ptr<Child>> child = Child::Spawn(
        {"/usr/bin/crowdsec", "-c", dir_ + "/etc/config.yaml", "-no-cs"}, dir_ + "/logs/stdout");
    if (!child.ok()) return child.status();
    process_ = *std::move(child);
    if (!WaitForHttp(port_)) {
      return absl::DeadlineExceededError("crowdsec's LAPI did not answer within 60 s: " +
                                         ReadFileOrEmpty(dir_ + "/logs/crowdsec_api.log"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Cscli(const std::string& args) {
    return RunCommand("/usr/bin/cscli -c " + ShellQuote(dir_ + "/etc/config.yaml") + " --error " +
                      args);
  }

  std::string dir_;
  int port_;
  std::unique_ptr<Child> process_;
  std::map<std::string, LapiDecision> decisions_;
};

// ------------------------------------------------------------------------------------------
// palisaded

class PalisadedLapi : public LapiBackend {
 public:
  static absl::StatusOr<std::unique_ptr<LapiBackend>> Start(const std::string& dir,
                                                            const std::string& extra) {
    auto lapi = std::unique_ptr<PalisadedLapi>(new PalisadedLapi(dir));
    mkdir(dir.c_str(), 0700);
    const std::string config = dir + "/palisade.textproto";
    std::ofstream(config) << "rule_files: \"" << std::getenv("TEST_SRCDIR")
                          << "/palisade/rules/sshd.textproto\"\n"
                          << "bouncer_api { listen: \"127.0.0.1:" << lapi->port_ << "\" }\n"
                          << "sweep_interval { nanos: 100000000 }\n"
                          << extra << "\n";
    lapi->args_ = {"--config=" + config, "--shutdown_grace=200ms"};
    if (absl::Status s = lapi->Launch(); !s.ok()) return s;
    return lapi;
  }

  std::string name() const override { return "palisaded"; }
  int port() const override { return port_; }

  absl::StatusOr<std::string> AddBouncer(const std::string& bouncer) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    palisade::v1::AddBouncerRequest req;
    req.set_name(bouncer);
    palisade::v1::AddBouncerResponse resp;
    if (absl::Status s = FromGrpc(admin_->AddBouncer(&ctx, req, &resp)); !s.ok()) return s;
    return resp.api_key();
  }

  absl::StatusOr<std::string> AddDecision(const LapiDecision& d) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    palisade::v1::AddDecisionRequest req;
    req.mutable_target()->set_kind(d.scope == "Range" ? palisade::v1::TARGET_KIND_RANGE
                                                      : palisade::v1::TARGET_KIND_IP);
    req.mutable_target()->set_value(d.value);
    req.set_action(d.type == "captcha" ? palisade::v1::ACTION_CHALLENGE
                                       : palisade::v1::ACTION_BLOCK);
    *req.mutable_duration() = ToProtoDuration(d.duration);
    req.set_reason(d.reason);
    palisade::v1::Decision resp;
    if (absl::Status s = FromGrpc(decisions_->Add(&ctx, req, &resp)); !s.ok()) return s;
    return resp.id();
  }

  absl::Status DeleteDecision(const std::string& id) override {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    palisade::v1::DeleteDecisionRequest req;
    req.set_id(id);
    palisade::v1::Decision resp;
    return FromGrpc(decisions_->Delete(&ctx, req, &resp));
  }

  absl::Status ShipSshAttack(const std::string& ip) override {
    std::vector<std::string> lines;
    const std::string now =
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
    for (int i = 0; i < 6; ++i) {
      lines.push_back(absl::StrCat(now, " web-1 sshd[", 4000 + i,
                                   "]: Failed password for root from ", ip, " port ", 50000 + i,
                                   " ssh2"));
    }
    auto channel = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
    auto ingest = palisade::v1::Ingest::NewStub(channel);
    return ShipLines(*ingest, palisade::v1::LOG_FORMAT_SYSLOG, lines).status();
  }

  absl::Status Restart() override {
    if (int status = daemon_->Stop(); status != 0) {
      return absl::InternalError(absl::StrCat("palisaded exited with status ", status));
    }
    daemon_.reset();
    return Launch();
  }

 private:
  explicit PalisadedLapi(const std::string& dir)
      : dir_(dir), state_file_(dir + "/state.db"), port_(FreeLoopbackPort()) {}

  absl::Status Launch() {
    absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(args_, state_file_);
    if (!daemon.ok()) return daemon.status();
    daemon_ = *std::move(daemon);
    auto channel = grpc::CreateChannel(daemon_->grpc_address(), grpc::InsecureChannelCredentials());
    admin_ = palisade::v1::Admin::NewStub(channel);
    decisions_ = palisade::v1::Decisions::NewStub(channel);
    if (!WaitForHttp(port_)) {
      return absl::DeadlineExceededError("palisaded's bouncer_api did not answer within 60 s");
    }
    return absl::OkStatus();
  }

  std::string dir_;
  std::string state_file_;
  int port_;
  std::vector<std::string> args_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<palisade::v1::Admin::Stub> admin_;
  std::unique_ptr<palisade::v1::Decisions::Stub> decisions_;
};

// libcurl builds a request in a buffer of at most 1 MiB: bigger targets go over a plain socket
// (HTTP/1.1, Connection: close; the server may answer and close before reading it all).
absl::StatusOr<HttpReply> RawRequest(int port, const std::string& method, const std::string& target,
                                     const std::optional<std::string>& key) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect: ", strerror(errno)));
  }
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string request = absl::StrCat(method, " ", target, " HTTP/1.1\r\nHost: 127.0.0.1:", port,
                                     "\r\nUser-Agent: palisade-e2e\r\nConnection: close\r\n");
  if (key.has_value()) absl::StrAppend(&request, "X-Api-Key: ", *key, "\r\n");
  request += "\r\n";
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // refused midway: read what it answered
    sent += n;
  }
  std::string raw;
  char buf[65536];
  // Until the server closes, or the reply is whole by its Content-Length (a server may keep the
  // connection to drain the rest of the request).
  auto whole = [&raw] {
    const size_t end = raw.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    const std::string head = absl::AsciiStrToLower(raw.substr(0, end));
    const size_t at = head.find("\r\ncontent-length:");
    size_t length = 0;
    if (at == std::string::npos) return false;
    const size_t eol = head.find("\r\n", at + 2);
    return absl::SimpleAtoi(
               absl::StripAsciiWhitespace(head.substr(
                   at + 17, eol == std::string::npos ? std::string::npos : eol - at - 17)),
               &length) &&
           raw.size() >= end + 4 + length;
  };
  for (ssize_t n; !whole() && (n = recv(fd, buf, sizeof buf, 0)) > 0;) raw.append(buf, n);
  close(fd);
  HttpReply reply;
  // "HTTP/1.1 414 URI Too Long\r\n...headers...\r\n\r\nbody" (a chunked body stays raw).
  if (!absl::StartsWith(raw, "HTTP/1.") || raw.size() < 12 ||
      !absl::SimpleAtoi(raw.substr(9, 3), &reply.status)) {
    return absl::UnavailableError(absl::StrCat(method, " of ", target.size(),
                                               " bytes: no HTTP reply (", raw.size(), " bytes)"));
  }
  const size_t end = raw.find("\r\n\r\n");
  const std::string head = raw.substr(0, end);
  for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
    if (absl::StartsWithIgnoreCase(line, "content-type:")) {
      reply.content_type = std::string(absl::StripAsciiWhitespace(line.substr(13)));
    }
  }
  if (end != std::string::npos) reply.body = raw.substr(end + 4);
  return reply;
}

}  // namespace

absl::StatusOr<HttpReply> LapiRequest(int port, const std::string& method,
                                      const std::string& target,
                                      const std::optional<std::string>& key) {
  if (target.size() > (512 << 10)) return RawRequest(port, method, target, key);
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_slist* list = nullptr;
  std::string key_header;
  if (key.has_value()) {
    key_header = "X-Api-Key: " + *key;
    list = curl_slist_append(list, key_header.c_str());
  }
  list = curl_slist_append(list, "User-Agent: palisade-e2e");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  const std::string url = absl::StrCat("http://127.0.0.1:", port, target);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
  }
  HttpReply reply;
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
  CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
  char* ctype = nullptr;
  curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ctype);
  if (ctype != nullptr) reply.content_type = ctype;
  curl_easy_cleanup(curl);
  curl_slist_free_all(list);
  // A server may answer an oversized request and close before reading it all (a send error
  // after the reply): the reply counts.
  if (rc != CURLE_OK && reply.status == 0) {
    return absl::UnavailableError(
        absl::StrCat(method, " ", target.substr(0, 200), ": ", curl_easy_strerror(rc)));
  }
  return reply;
}

absl::StatusOr<std::unique_ptr<LapiBackend>> StartCrowdsecLapi(const std::string& dir) {
  return CrowdsecLapi::Start(dir);
}

absl::StatusOr<std::unique_ptr<LapiBackend>> StartPalisadedLapi(const std::string& dir,
                                                                const std::string& extra_config) {
  return PalisadedLapi::Start(dir, extra_config);
}

absl::StatusOr<std::unique_ptr<Child>> Child::Spawn(const std::vector<std::string>& argv,
                                                    const std::string& log_file) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  auto child = std::unique_ptr<Child>(new Child());
  int rc = posix_spawn(&child->pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    child->pid_ = -1;
    return absl::InternalError(absl::StrCat("cannot spawn ", argv[0], ": ", strerror(rc)));
  }
  return child;
}

bool Child::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void Child::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const bool exited = WaitFor([&] { return !Running(); }, absl::Seconds(20));
  if (!exited && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
}

Child::~Child() { Stop(); }

absl::StatusOr<std::string> RunCommand(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return absl::InternalError("popen failed: " + command);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  int status = pclose(pipe);
  if (status != 0) {
    return absl::InternalError(absl::StrCat("`", command, "` exited ", status, ": ", out));
  }
  return out;
}

std::string EnterPrivateNetworkNamespace() {
  if (unshare(CLONE_NEWNET) != 0) {
    return absl::StrCat("unshare(CLONE_NEWNET): ", strerror(errno));
  }
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return absl::StrCat("socket: ", strerror(errno));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  std::string error;
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
    error = absl::StrCat("SIOCGIFFLAGS lo: ", strerror(errno));
  } else {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) {
      error = absl::StrCat("SIOCSIFFLAGS lo: ", strerror(errno));
    }
  }
  close(fd);
  return error;
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace palisade::testing
