// Pulls a feed over http(s):// or file:// with libcurl: conditional requests (ETag /
// If-Modified-Since, so an unchanged feed costs a 304), a size cap enforced while receiving,
// a whole-transfer timeout, cancellation (checked while connecting and receiving, at least
// once a second), at most 3 redirects, only to http(s) (from an https URL, only to https).
// Thread-safety: Fetch may be called from any thread.
#ifndef PALISADE_SERVICES_FEEDS_FETCHER_H_
#define PALISADE_SERVICES_FEEDS_FETCHER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace palisade {

struct FetchRequest {
  std::string url;
  // Validators from the last good fetch; sent as If-None-Match / If-Modified-Since.
  std::string etag;
  std::string last_modified;
  absl::Duration timeout = absl::Seconds(30);
  uint64_t max_bytes = 64ull << 20;
  // When set and true, the transfer stops (kCancelled): the caller is shutting down. Null: none.
  const std::atomic<bool>* cancel = nullptr;
};

struct FetchResult {
  bool not_modified = false;  // 304: keep the current version
  std::string body;
  std::string etag;
  std::string last_modified;
};

// kUnavailable for transport failures and 5xx, kFailedPrecondition for other HTTP errors (a 304
// to a request without validators included),
// kResourceExhausted past max_bytes, kInvalidArgument for a URL of another scheme, kCancelled
// when request.cancel was set. Messages
// name the URL without its credentials or query (RedactUrl).
absl::StatusOr<FetchResult> Fetch(const FetchRequest& request);

// The protocols a redirect from `url` may go to (curl's CURLOPT_REDIR_PROTOCOLS_STR): from
// https:// only "https"; else "http,https" (never file://, nor anything else).
const char* RedirectProtocols(absl::string_view url);

// "https://user:secret@host/path?key=…" -> "https://host/path": feed URLs may carry API keys.
std::string RedactUrl(absl::string_view url);

}  // namespace palisade

#endif  // PALISADE_SERVICES_FEEDS_FETCHER_H_
