// httplib servers whose requests are bounded in bytes and in time.
//
// In bytes: httplib 0.11 (Debian's) reads a request line and its headers with no bound on their
// count, only on each line's length: a client that sends headers that never end makes the server
// hold all it sent, before any handler (and any key or token check) runs. Each connection is
// served by httplib's keep-alive loop over a stream that hands httplib at most `request_budget`
// bytes per request (request line, headers and body) and then fails the read: the connection is
// answered (431 when nothing was) and closed.
//
// In time: httplib bounds each read (set_read_timeout), not a request: a client that sends a
// byte of its headers, of a chunk-size line or of a TLS handshake within each read timeout holds
// a worker for as long as it goes on. Each request must arrive whole by a deadline fixed when
// the server starts waiting for its first byte (for a connection's first request: when a worker
// takes the connection, so the TLS handshake counts too; for the next ones: after the previous
// answer, so keep-alive idle time counts). A read past the deadline fails; from then on nothing
// httplib or the handler writes is sent: the server answers 408 itself (when nothing was
// answered and the handshake was done), calls `on_deadline` and closes the connection.
// A deadline bounds how long a request holds a worker, not how many a client holds: with
// `max_connections_per_address`, a peer address with that many connections being served has its
// next one closed unread as soon as a worker takes it (on_address_refused), so one address that
// sends its requests slowly cannot hold every worker. An IPv6 peer counts by its /64 (one client
// holds a whole /64 and can take a new address per connection), an IPv4 one, mapped or not, by
// its address (PeerLimitKey in services/common/ip.h).
// Once the server stops (stop()), every read or write that has to wait fails within 100 ms, so
// the listen loop and stop's callers return even with such clients connected; a request cut
// short by the stop is closed without an answer.
//
// Used by the bouncer API, palisaded's /metrics over HTTPS and the Logpush receiver (the bouncer
// API, unless its max_connections_per_address is 0, and the Logpush receiver set
// max_connections_per_address).
// Thread-safety: as httplib::Server's. The options' callbacks are called from the server's
// worker threads, concurrently. RequestCutShort() is for handlers, from the thread that runs them.
#ifndef PALISADE_SERVICES_COMMON_BOUNDED_HTTP_SERVER_H_
#define PALISADE_SERVICES_COMMON_BOUNDED_HTTP_SERVER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "httplib.h"

namespace palisade {

struct BoundedHttpOptions {
  // Bytes one request may take: request line, headers and body.
  size_t request_budget = 64 * 1024;
  // Time one request may take to arrive whole (see above). 60 s: a request of some MiB over a
  // slow link arrives well within it, while no client holds a worker for longer.
  absl::Duration request_deadline = absl::Seconds(60);
  // The clock request_deadline is measured on; null: the real clock (absl::Now). The socket
  // waits themselves are real time, in slices of at most 100 ms, so a simulated clock's moves
  // are seen within one slice.
  std::function<absl::Time()> now;
  // Called once for each request cut short by its deadline, before its connection is closed
  // (for the server's metrics). May be null.
  std::function<void()> on_deadline;
  // Connections from one peer address (IPv6: from one /64) served at once at most; past it a
  // connection is closed unread and on_address_refused called (may be null). 0: no cap. Below
  // the server's worker count, other addresses always find a worker.
  size_t max_connections_per_address = 0;
  std::function<void()> on_address_refused;
  // Peers (the address text accept gave) max_connections_per_address does not apply to, e.g.
  // loopback ones where every local user may connect from any 127.x.y.z. Null: none.
  std::function<bool(const std::string&)> exempt_from_address_limit;
  // For tests: the peer address (text) a connection counts as, given the one accept gave (a
  // test on lo cannot connect from two addresses of one IPv6 /64). Null: that one.
  std::function<std::string(const std::string&)> peer_address_for_tests;
};

std::unique_ptr<httplib::Server> MakeBoundedHttpServer(BoundedHttpOptions options);
// As httplib::SSLServer(cert, key, client_ca) (client_ca may be null); check is_valid().
std::unique_ptr<httplib::Server> MakeBoundedHttpsServer(BoundedHttpOptions options,
                                                        const char* cert, const char* key,
                                                        const char* client_ca);

// The same with the default deadline and no callback.
std::unique_ptr<httplib::Server> MakeBoundedHttpServer(size_t request_budget);
std::unique_ptr<httplib::Server> MakeBoundedHttpsServer(size_t request_budget, const char* cert,
                                                        const char* key, const char* client_ca);

// From a handler of one of these servers (httplib runs it on the thread that reads its request):
// whether a read of the request failed because its deadline passed or the server is stopping.
// The server then answers or closes the connection itself and counts a deadline (on_deadline):
// the handler should neither answer nor count the request. False on any other thread.
bool RequestCutShort();

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_BOUNDED_HTTP_SERVER_H_
