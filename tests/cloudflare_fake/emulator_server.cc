#include "tests/cloudflare_fake/emulator_server.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"

namespace palisade::fake {

EmulatorServer::EmulatorServer(FakeCloudflare& fake, std::function<void(absl::Duration)> advance)
    : fake_(fake), advance_(std::move(advance)), server_(std::make_unique<httplib::Server>()) {}

EmulatorServer::~EmulatorServer() { Stop(); }

std::string EmulatorServer::base_url() const {
  return absl::StrCat("http://127.0.0.1:", port_, "/client/v4");
}

absl::StatusOr<int> EmulatorServer::Start(int port) {
  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    Request r;
    r.method = req.method;
    r.path = req.path;
    for (const auto& [k, v] : req.params) r.query[k] = v;
    for (const auto& [k, v] : req.headers) r.headers[absl::AsciiStrToLower(k)] = v;
    r.body = req.body;
    r.remote_ip = req.remote_addr;
    Response out;
    if (r.path == "/__emulator/advance" && r.method == "POST" && advance_) {
      int seconds = 0;
      auto it = r.query.find("seconds");
      if (it == r.query.end() || !absl::SimpleAtoi(it->second, &seconds) || seconds < 0) {
        res.status = 400;
        res.set_content("{\"error\":\"seconds=N required\"}", "application/json");
        return;
      }
      advance_(absl::Seconds(seconds));
      res.set_content("{\"success\":true}", "application/json");
      return;
    }
    out = absl::StartsWith(r.path, "/__emulator/") ? fake_.HandleAdmin(r) : fake_.Handle(r);
    if (out.delay > absl::ZeroDuration()) absl::SleepFor(out.delay);
    if (out.drop_connection) {
      // Promise a body, then abort: the client sees the connection die mid-reply.
      res.set_content_provider(64, "application/json",
                               [](size_t, size_t, httplib::DataSink&) { return false; });
      return;
    }
    res.status = out.status;
    for (const auto& [k, v] : out.headers) {
      if (k != "content-type") res.set_header(k, v);
    }
    res.set_content(out.body, "application/json");
  };
  server_->set_tcp_nodelay(true);  // else Nagle and delayed ACKs add ~40 ms per reply
  server_->Get(".*", handler);
  server_->Post(".*", handler);
  server_->Put(".*", handler);
  server_->Patch(".*", handler);
  server_->Delete(".*", handler);
  if (port == 0) {
    port_ = server_->bind_to_any_port("127.0.0.1");
  } else {
    port_ = server_->bind_to_port("127.0.0.1", port) ? port : -1;
  }
  if (port_ <= 0) return absl::UnavailableError("emulator: cannot bind a loopback port");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // Wait until it serves.
  for (int i = 0; i < 200 && !server_->is_running(); ++i) absl::SleepFor(absl::Milliseconds(5));
  return port_;
}

void EmulatorServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace palisade::fake
