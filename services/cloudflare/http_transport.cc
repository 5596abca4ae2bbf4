#include "services/cloudflare/http_transport.h"

#include <curl/curl.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace palisade {
namespace {

constexpr char kNeverSentUrl[] = "type.palisade.dev/http_transport.never_sent";

// One reply being read, within the transport's caps.
struct Reply {
  HttpResponse* response;
  size_t max_body;
  size_t max_headers;
  size_t header_bytes = 0;
  bool body_too_large = false;
  bool headers_too_large = false;
};

size_t WriteBody(char* data, size_t size, size_t n, void* out) {
  auto* reply = static_cast<Reply*>(out);
  const size_t bytes = size * n;
  if (reply->response->body.size() + bytes > reply->max_body) {
    reply->body_too_large = true;
    return 0;  // aborts the transfer
  }
  reply->response->body.append(data, bytes);
  return bytes;
}

size_t WriteHeader(char* data, size_t size, size_t n, void* out) {
  auto* reply = static_cast<Reply*>(out);
  const size_t bytes = size * n;
  reply->header_bytes += bytes;
  if (reply->header_bytes > reply->max_headers) {
    reply->headers_too_large = true;
    return 0;  // aborts the transfer
  }
  absl::string_view line(data, bytes);
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    reply->response->headers[name] = value;
  }
  return bytes;
}

struct CurlInit {
  CurlInit() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

// libcurl's codes for a failure before any of the request left: no name, no connection.
bool BeforeSending(CURLcode rc) {
  return rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_COULDNT_RESOLVE_HOST ||
         rc == CURLE_COULDNT_CONNECT;
}

// The URL's scheme ("file" of "file:///x"), for an error: never the rest, whose query may hold
// anything.
std::string SchemeOf(absl::string_view url) {
  const size_t end = url.find("://");
  return end == absl::string_view::npos ? "" : std::string(url.substr(0, end));
}

// Whether a repeat of `method` leaves the server as one call would (RFC 9110 9.2.2). POST and
// PATCH are not: the client's own list (client.cc) treats them as such unless a call says so.
bool Idempotent(absl::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" ||
         method == "OPTIONS";
}

}  // namespace

absl::Status MarkTransportNeverSent(absl::Status status) {
  if (!status.ok()) status.SetPayload(kNeverSentUrl, absl::Cord("1"));
  return status;
}

bool TransportNeverSent(const absl::Status& status) {
  return status.GetPayload(kNeverSentUrl).has_value();
}

CurlTransport::CurlTransport(CurlTransportOptions options) : options_(options) {
  static CurlInit init;
}

CurlTransport::~CurlTransport() {
  absl::MutexLock lock(&mu_);
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* CurlTransport::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void CurlTransport::Release(void* handle) {
  absl::MutexLock lock(&mu_);
  idle_.push_back(handle);
}

absl::StatusOr<HttpResponse> CurlTransport::Send(const HttpRequest& request) {
  CURL* curl = static_cast<CURL*>(Acquire());
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_easy_reset(curl);  // keeps the connection cache, clears the options
  HttpResponse response;
  curl_slist* headers = nullptr;
  for (const auto& [k, v] : request.headers) {
    headers = curl_slist_append(headers, absl::StrCat(k, ": ", v).c_str());
  }
  // Only HTTP(S) is ever spoken, whatever the URL (a mistyped api_base, file:// or ftp://, would
  // read a local file or send the credentials in clear), and no redirect is followed: the API
  // sends none, and one followed would carry the credential headers to wherever it points. The
  // client reads a 3xx as an error. A proxy's CONNECT reply is not this reply's headers.
#if LIBCURL_VERSION_NUM >= 0x075500  // 7.85: the bitmask options are deprecated
  const CURLcode protocols = curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  const CURLcode redirects = curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  const CURLcode protocols = curl_easy_setopt(curl, CURLOPT_PROTOCOLS,
                                              static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  const CURLcode redirects = curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS,
                                              static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  if (protocols != CURLE_OK || redirects != CURLE_OK) {
    curl_slist_free_all(headers);
    Release(curl);
    return absl::InternalError("HTTP transport: libcurl cannot be held to http and https");
  }
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
      request.method == "PATCH") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(request.timeout)));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  // libcurl silently sends a request again on a new connection when a kept one dies before any
  // reply, and reports only the second try: a call that had reached the server could come back
  // as refused (never sent) and be sent twice by the client. A call a repeat could apply twice
  // therefore never goes out on a kept connection; the one it opens stays kept for later calls
  // (a later call of this kind opens its own again). So does a call of another method that
  // asks for it (a token roll: a PUT whose repeat retires the secret the first one returned).
  if (!Idempotent(request.method) || request.fresh_connection) {
    curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L);
  }
  Reply reply{&response, options_.max_reply_bytes, options_.max_header_bytes};
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply);
  // A length declared over the cap is refused before any of the body is read.
  curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(options_.max_reply_bytes));
  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  Release(curl);
  if (reply.headers_too_large) {
    return absl::OutOfRangeError(absl::StrCat("HTTP transport: the reply has over ",
                                              options_.max_header_bytes,
                                              " bytes of headers (the cap); not read"));
  }
  if (reply.body_too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    return absl::OutOfRangeError(absl::StrCat("HTTP transport: the reply is over the cap of ",
                                              options_.max_reply_bytes, " bytes; not read"));
  }
  if (rc == CURLE_UNSUPPORTED_PROTOCOL) {
    // Nothing left: no connection is made for a scheme refused.
    return MarkTransportNeverSent(absl::FailedPreconditionError(
        absl::StrCat("HTTP transport: the URL's scheme \"", SchemeOf(request.url),
                     "\" is refused; only http and https are spoken")));
  }
  if (rc != CURLE_OK) {
    // The message names the failure, never the URL's query or any header.
    absl::Status failed =
        absl::UnavailableError(absl::StrCat("HTTP transport: ", curl_easy_strerror(rc)));
    return BeforeSending(rc) ? MarkTransportNeverSent(std::move(failed)) : failed;
  }
  response.status = static_cast<int>(status);
  return response;
}

}  // namespace palisade
