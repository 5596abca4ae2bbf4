// Serves a FakeCloudflare over HTTP on loopback (cpp-httplib), for the client's tests, the
// end-to-end tests and the demo. The API lives under /client/v4/; the emulator's own admin
// endpoints under /__emulator/ (state, faults, tokens, clock).
// Thread-safety: Start and Stop from one thread; requests are served concurrently.
#ifndef PALISADE_TESTS_CLOUDFLARE_FAKE_EMULATOR_SERVER_H_
#define PALISADE_TESTS_CLOUDFLARE_FAKE_EMULATOR_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "tests/cloudflare_fake/fake_cloudflare.h"

namespace httplib {
class Server;
}

namespace palisade::fake {

class EmulatorServer {
 public:
  // `advance`, when set, serves POST /__emulator/advance?seconds=N (moves the fake's clock).
  EmulatorServer(FakeCloudflare& fake, std::function<void(absl::Duration)> advance = nullptr);
  ~EmulatorServer();

  // Listens on 127.0.0.1:`port` (0: any free port) and returns the port.
  absl::StatusOr<int> Start(int port = 0);
  void Stop();
  std::string base_url() const;

 private:
  FakeCloudflare& fake_;
  std::function<void(absl::Duration)> advance_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace palisade::fake

#endif  // PALISADE_TESTS_CLOUDFLARE_FAKE_EMULATOR_SERVER_H_
