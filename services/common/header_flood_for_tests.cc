#include "services/common/header_flood_for_tests.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace palisade::testing {

size_t FloodHeaders(int port, const std::string& target, size_t max) {
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  size_t sent = 0;
  if (::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string chunk = "GET " + target + " HTTP/1.1\r\nHost: x\r\n";
    const std::string line = "X-Filler: " + std::string(4000, 'a') + "\r\n";
    while (sent < max) {
      while (chunk.size() < (64 << 10)) chunk += line;
      const ssize_t n = ::send(sock, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
      chunk.erase(0, static_cast<size_t>(n));
    }
  }
  ::close(sock);
  return sent;
}

}  // namespace palisade::testing
