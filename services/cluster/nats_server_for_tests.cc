#include "services/cluster/nats_server_for_tests.h"

#include <signal.h>
#include <spawn.h>
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

absl::StatusOr<std::unique_ptr<NatsServerForTests>> NatsServerForTests::Start() {
  static int counter = 0;
  const char* tmp = std::getenv("TEST_TMPDIR");
  auto server = std::unique_ptr<NatsServerForTests>(new NatsServerForTests());
  server->dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/nats-", getpid(), "-", ++counter);
  if (std::system(absl::StrCat("mkdir -p ", server->dir_, "/store").c_str()) != 0) {
    return absl::InternalError("cannot make " + server->dir_);
  }
  absl::Status s = server->Spawn("-1");
  if (!s.ok()) return s;
  return server;
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

}  // namespace palisade::cluster
