#include "services/feeds/fetcher.h"

#include <curl/curl.h>

#include <atomic>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace palisade {
namespace {

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

struct Transfer {
  const std::atomic<bool>* cancel = nullptr;
  std::string body;
  uint64_t max_bytes = 0;
  bool too_large = false;
  std::string etag;
  std::string last_modified;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  if (t->body.size() + bytes > t->max_bytes) {
    t->too_large = true;
    return 0;  // aborts the transfer
  }
  t->body.append(data, bytes);
  return bytes;
}

// libcurl calls it while connecting and transferring, at least once a second even when nothing
// arrives: a non-zero answer aborts the transfer.
int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* t = static_cast<const Transfer*>(user);
  return t->cancel != nullptr && t->cancel->load() ? 1 : 0;
}

// A validator is echoed back as sent and kept in the stored version, a proto3 string: one with
// bytes that are not printable ASCII (or an absurd length) is not kept, and the next fetch asks
// for the whole content.
std::string Validator(absl::string_view value) {
  if (value.size() > 1024) return "";
  for (char c : value) {
    if (c < 0x20 || c > 0x7e) return "";
  }
  return std::string(value);
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  absl::string_view line(data, size * n);
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    absl::string_view name = line.substr(0, colon);
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    // Each response of a redirect chain starts over.
    if (absl::EqualsIgnoreCase(name, "etag")) t->etag = Validator(value);
    if (absl::EqualsIgnoreCase(name, "last-modified")) t->last_modified = Validator(value);
  } else if (absl::StartsWith(line, "HTTP/")) {
    t->etag.clear();
    t->last_modified.clear();
  }
  return size * n;
}

}  // namespace

std::string RedactUrl(absl::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == absl::string_view::npos) return "(url)";
  absl::string_view rest = url.substr(scheme + 3);
  const size_t end = rest.find_first_of("/?#");  // where the authority ends (RFC 3986)
  absl::string_view authority = rest.substr(0, end);
  const size_t at = authority.rfind('@');
  if (at != absl::string_view::npos) {
    authority.remove_prefix(at + 1);
  } else if (end != absl::string_view::npos && rest.find('@', end) != absl::string_view::npos) {
    // An '@' past the authority: a '@' in the path or query, or credentials whose password
    // holds an unencoded '/', '?' or '#' ("user:pa/ss@host"). Which one cannot be told, so
    // nothing of it is shown.
    return absl::StrCat(url.substr(0, scheme), "://(address not shown: it holds '@')");
  }
  absl::string_view path = end == absl::string_view::npos ? "" : rest.substr(end);
  path = path.substr(0, path.find_first_of("?#"));
  return absl::StrCat(url.substr(0, scheme), "://", authority, path);
}

const char* RedirectProtocols(absl::string_view url) {
  // An https feed stays https: a redirect to http would hand its content (and any credentials
  // in a redirected URL) to whoever sits on the path, and let them write the feed.
  return absl::StartsWith(url, "https://") ? "https" : "http,https";
}

absl::StatusOr<FetchResult> Fetch(const FetchRequest& request) {
  static CurlGlobal global;
  const std::string shown = RedactUrl(request.url);
  const bool file = absl::StartsWith(request.url, "file://");
  if (!file && !absl::StartsWith(request.url, "http://") &&
      !absl::StartsWith(request.url, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, ": only http://, https:// and file:// feeds are fetched"));
  }
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  Transfer t;
  t.cancel = request.cancel;
  t.max_bytes = request.max_bytes;
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https,file");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, RedirectProtocols(request.url));
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(request.timeout)));
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");  // gzip and friends, decoded
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(request.max_bytes));
  curl_easy_setopt(h, CURLOPT_USERAGENT, "palisaded-feeds/1");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  if (request.cancel != nullptr) {
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, OnProgress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
  }
  struct curl_slist* headers = nullptr;
  if (!file) {
    if (!request.etag.empty()) {
      headers = curl_slist_append(headers, ("If-None-Match: " + request.etag).c_str());
    }
    if (!request.last_modified.empty()) {
      headers =
          curl_slist_append(headers, ("If-Modified-Since: " + request.last_modified).c_str());
    }
  }
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_list(headers, curl_slist_free_all);
  if (headers != nullptr) curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

  const CURLcode rc = curl_easy_perform(h);
  if (rc == CURLE_ABORTED_BY_CALLBACK && t.cancel != nullptr && t.cancel->load()) {
    return absl::CancelledError(absl::StrCat(shown, ": cancelled (stopping)"));
  }
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    return absl::ResourceExhaustedError(
        absl::StrCat(shown, ": larger than the feed's cap of ", request.max_bytes, " bytes"));
  }
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(shown, ": ", curl_easy_strerror(rc)));
  }
  FetchResult result;
  if (!file) {
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status == 304 && request.etag.empty() && request.last_modified.empty()) {
      // Nothing was asked conditionally: "not modified" gives no content and no version.
      return absl::FailedPreconditionError(
          absl::StrCat(shown, ": HTTP 304 to a request without validators"));
    }
    if (status == 304) {
      result.not_modified = true;
      result.etag = request.etag;
      result.last_modified = request.last_modified;
      return result;
    }
    if (status >= 500) {
      return absl::UnavailableError(absl::StrCat(shown, ": HTTP ", status));
    }
    if (status != 200) {
      return absl::FailedPreconditionError(absl::StrCat(shown, ": HTTP ", status));
    }
    result.etag = t.etag;
    result.last_modified = t.last_modified;
  }
  result.body = std::move(t.body);
  return result;
}

}  // namespace palisade
