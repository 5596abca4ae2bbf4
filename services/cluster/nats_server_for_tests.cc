#include "services/cluster/nats_server_for_tests.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace palisade::cluster {

absl::StatusOr<std::unique_ptr<NatsServerForTests>> NatsServerForTests::Make() {
  static int counter = 0;
  const char* tmp = std::getenv("TEST_TMPDIR");
  auto server = std::unique_ptr<NatsServerForTests>(new NatsServerForTests());
  server->dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/nats-", getpid(), "-", ++counter);
  if (std::system(absl::StrCat("mkdir -p ", server->dir_, "/store").c_str()) != 0) {
    return absl::InternalError("cannot make " + server->dir_);
  }
  return server;
}

absl::StatusOr<std::unique_ptr<NatsServerForTests>> NatsServerForTests::Start() {
  absl::StatusOr<std::unique_ptr<NatsServerForTests>> server = Make();
  if (!server.ok()) return server.status();
  absl::Status s = (*server)->Spawn("-1");
  if (!s.ok()) return s;
  return server;
}

namespace {
// A TCP port free on 127.0.0.1 now (the server binds it a moment later).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  socklen_t len = sizeof(a);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}
}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>>
NatsServerForTests::StartCluster() {
  // The route ports are picked free and bound by nats-server a moment later: another test
  // running beside this one may take one in between, and that server exits at once. A few new
  // picks make the clash as good as impossible (before 2026-12-07 the test failed on it).
  absl::Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>> servers = TryStartCluster();
    if (servers.ok() || !absl::IsInternal(servers.status())) return servers;
    last = servers.status();  // the servers started so far are killed as they go
  }
  return last;
}

absl::StatusOr<std::vector<std::unique_ptr<NatsServerForTests>>>
NatsServerForTests::TryStartCluster() {
  int cluster_ports[3];
  for (int& p : cluster_ports) p = FreePort();
  std::string routes;
  for (int p : cluster_ports) {
    absl::StrAppend(&routes, routes.empty() ? "" : ",", "nats://127.0.0.1:", p);
  }
  std::vector<std::unique_ptr<NatsServerForTests>> servers;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::unique_ptr<NatsServerForTests>> server = Make();
    if (!server.ok()) return server.status();
    (*server)->extra_args_ = {"-n",
                              absl::StrCat("n", i),
                              "--cluster_name",
                              "palisade-test",
                              "--cluster",
                              absl::StrCat("nats://127.0.0.1:", cluster_ports[i]),
                              "--routes",
                              routes};
    absl::Status s = (*server)->Spawn("-1");
    if (!s.ok()) return s;
    servers.push_back(*std::move(server));
  }
  return servers;
}

absl::Status NatsServerForTests::Restart() {
  Kill();
  const size_t colon = url_.rfind(':');
  return Spawn(url_.substr(colon + 1));
}

absl::Status NatsServerForTests::Spawn(const std::string& port) {
  std::vector<std::string> args = {
      "/usr/sbin/nats-server", "-js", "-a", "127.0.0.1",       "-p", port, "-sd", dir_ + "/store",
      "--ports_file_dir",      dir_,  "-l", dir_ + "/nats.log"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
    return absl::InternalError("cannot spawn /usr/sbin/nats-server (tools/setup.sh installs it)");
  }
  const std::string ports = absl::StrCat(dir_, "/nats-server_", pid_, ".ports");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    std::ifstream in(ports);
    std::stringstream text;
    text << in.rdbuf();
    const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
    if (j.is_object() && j.contains("nats") && j["nats"].is_array() && !j["nats"].empty()) {
      url_ = j["nats"][0].get<std::string>();
      return absl::OkStatus();
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("nats-server exited early; see ", dir_, "/nats.log"));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("nats-server did not write its ports file in 60 s");
}

std::string NatsServerForTests::LogTail(size_t bytes) const {
  std::ifstream in(dir_ + "/nats.log", std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  return all.size() <= bytes ? all : all.substr(all.size() - bytes);
}

void NatsServerForTests::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

NatsServerForTests::~NatsServerForTests() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 300; ++i) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    absl::SleepFor(absl::Milliseconds(20));
  }
  Kill();
}

std::vector<std::string> UrlsOf(const std::vector<std::unique_ptr<NatsServerForTests>>& servers) {
  std::vector<std::string> urls;
  for (const auto& s : servers) urls.push_back(s->url());
  return urls;
}

std::string LogTails(const std::vector<std::unique_ptr<NatsServerForTests>>& servers) {
  std::string out;
  for (const auto& s : servers) absl::StrAppend(&out, "\n--- ", s->url(), " ---\n", s->LogTail());
  return out;
}

absl::Status EnsureStreamOnceElected(NatsClient& client, const StreamSpec& spec) {
  absl::Status made;
  for (int i = 0; i < 120; ++i) {
    made = client.EnsureStream(spec);
    if (made.ok()) break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  return made;
}

}  // namespace palisade::cluster
