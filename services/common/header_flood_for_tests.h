// Test helper: a client whose request headers never end, for the bounded HTTP servers' tests
// (bouncer_api_test, metrics_https_test). Test-only.
#ifndef PALISADE_SERVICES_COMMON_HEADER_FLOOD_FOR_TESTS_H_
#define PALISADE_SERVICES_COMMON_HEADER_FLOOD_FOR_TESTS_H_

#include <cstddef>
#include <string>

namespace palisade::testing {

// Sends "GET `target`" with headers that never end (4 KiB lines) on a raw loopback connection
// to `port`, until the server stops reading or `max` bytes went; the bytes sent.
size_t FloodHeaders(int port, const std::string& target, size_t max);

}  // namespace palisade::testing

#endif  // PALISADE_SERVICES_COMMON_HEADER_FLOOD_FOR_TESTS_H_
