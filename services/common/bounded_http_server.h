// httplib servers whose requests are bounded in bytes. httplib 0.11 (Debian's) reads a request
// line and its headers with no bound on their count, only on each line's length: a client that
// sends headers that never end makes the server hold all it sent, before any handler (and any
// key or token check) runs. These are httplib's Server and SSLServer with each connection served
// by httplib's keep-alive loop over a stream that hands httplib at most `request_budget` bytes
// per request (request line, headers and body) and then fails the read: httplib answers 400 and
// the connection is closed. Used by the bouncer API, palisaded's /metrics over HTTPS and the
// Logpush receiver.
// Thread-safety: as httplib::Server's.
#ifndef PALISADE_SERVICES_COMMON_BOUNDED_HTTP_SERVER_H_
#define PALISADE_SERVICES_COMMON_BOUNDED_HTTP_SERVER_H_

#include <cstddef>
#include <memory>

#include "httplib.h"

namespace palisade {

std::unique_ptr<httplib::Server> MakeBoundedHttpServer(size_t request_budget);
// As httplib::SSLServer(cert, key, client_ca) (client_ca may be null); check is_valid().
std::unique_ptr<httplib::Server> MakeBoundedHttpsServer(size_t request_budget, const char* cert,
                                                        const char* key, const char* client_ca);

}  // namespace palisade

#endif  // PALISADE_SERVICES_COMMON_BOUNDED_HTTP_SERVER_H_
