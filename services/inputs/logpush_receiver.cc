#include "services/inputs/logpush_receiver.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <zlib.h>

#include <deque>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "services/common/bounded_http_server.h"
#include "services/common/bounded_task_queue.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

constexpr size_t kChunk = 64 * 1024;
// The request line and headers of an upload, in all.
constexpr size_t kMaxHeaderBytes = 64 * 1024;
// Where the receiver keeps the sender's Content-Encoding once httplib must no longer see it.
constexpr char kEncodingHeader[] = "X-Palisade-Sent-Content-Encoding";

std::string Sha256(absl::string_view s) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  return std::string(reinterpret_cast<const char*>(md), sizeof(md));
}

bool ValidPath(const std::string& path) {
  if (path.empty() || path.size() > 256 || path[0] != '/') return false;
  for (char c : path) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '/' && c != '_' && c != '.' &&
        c != '-') {
      return false;
    }
  }
  return true;
}

// Why an upload failed while its body was read; each is a value of the outcome label.
enum class ReadFailure { kNone, kTooLarge, kInflatedTooLarge, kNotGzip };

}  // namespace

// --- BoundedInflater -------------------------------------------------------------------------

BoundedInflater::BoundedInflater(size_t max_out) : max_out_(max_out) {
  auto* z = new z_stream{};
  // 16 + MAX_WBITS: gzip only (a raw or zlib stream is not what Logpush sends).
  if (inflateInit2(z, 16 + MAX_WBITS) != Z_OK) failed_ = true;
  stream_ = z;
}

BoundedInflater::~BoundedInflater() {
  auto* z = static_cast<z_stream*>(stream_);
  inflateEnd(z);
  delete z;
}

absl::Status BoundedInflater::Feed(absl::string_view in, std::string* out) {
  if (failed_) return absl::InvalidArgumentError("the body is not gzip");
  auto* z = static_cast<z_stream*>(stream_);
  unsigned char buf[kChunk];
  z->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z->avail_in = static_cast<uInt>(in.size());
  // Output zlib still holds when a piece runs out (a match mid-copy) comes out with the next
  // piece, and a member's trailer is read only after all its output, so the last piece always
  // drains it (OutputPendingWhenAPieceEndsIsNotLost).
  while (z->avail_in > 0) {
    member_open_ = true;
    z->next_out = buf;
    z->avail_out = sizeof(buf);
    const int rc = inflate(z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      failed_ = true;
      return absl::InvalidArgumentError("the body is not valid gzip");
    }
    const size_t n = sizeof(buf) - z->avail_out;
    if (n > max_out_ - produced_) {
      failed_ = true;
      return absl::ResourceExhaustedError(
          absl::StrCat("the body inflates to more than ", max_out_, " bytes"));
    }
    produced_ += n;
    out->append(reinterpret_cast<const char*>(buf), n);
    if (rc == Z_STREAM_END) {
      // A member ended; another may follow (concatenated gzip files).
      member_open_ = false;
      if (inflateReset(z) != Z_OK) {
        failed_ = true;
        return absl::InvalidArgumentError("the body is not valid gzip");
      }
    } else if (rc == Z_BUF_ERROR && n == 0) {
      break;  // no progress possible: wants more input
    }
  }
  return absl::OkStatus();
}

absl::Status BoundedInflater::Finish() {
  if (failed_) return absl::InvalidArgumentError("the body is not valid gzip");
  if (member_open_) return absl::InvalidArgumentError("the gzip body is cut short");
  return absl::OkStatus();
}

// --- pure helpers ----------------------------------------------------------------------------

bool LogpushReceiver::SecretMatches(absl::string_view secret, absl::string_view got) {
  // Equal-length digests: the compare takes the same time whatever `got` is, and its length
  // says nothing about the secret's.
  const std::string a = Sha256(secret);
  const std::string b = Sha256(got);
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0 && !secret.empty();
}

bool LogpushReceiver::IsCheckUpload(absl::string_view body) {
  if (body.size() > 1024) return false;  // the check file is tiny; spare parsing anything else
  const nlohmann::json j = nlohmann::json::parse(body.begin(), body.end(), nullptr,
                                                 /*allow_exceptions=*/false);
  if (!j.is_object() || j.empty() || j.size() > 2) return false;
  auto content = j.find("content");
  if (content == j.end() || !content->is_string()) return false;
  const std::string& c = content->get_ref<const std::string&>();
  if (c != "test" && c != "tests") return false;
  if (j.size() == 2) {
    auto filename = j.find("filename");
    if (filename == j.end() || !filename->is_string()) return false;
  }
  return true;
}

LogpushReceiver::Split LogpushReceiver::SplitLines(absl::string_view body, size_t max_records,
                                                   size_t max_held_bytes,
                                                   palisade::v1::LogBatch* batch) {
  size_t taken = 0;
  size_t held = 0;
  while (!body.empty()) {
    const size_t nl = body.find('\n');
    absl::string_view line = body.substr(0, nl);
    body = nl == absl::string_view::npos ? absl::string_view() : body.substr(nl + 1);
    while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (++taken > max_records) return Split::kTooManyRecords;
    held += line.size() + kRecordHeldBytes;
    if (held > max_held_bytes) return Split::kTooManyBytes;
    batch->add_records()->set_line(std::string(line));
  }
  return Split::kOk;
}

// --- the server ------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<LogpushReceiver>> LogpushReceiver::Start(
    const palisade::v1::LogpushInput& config, LogpushReceiverOptions options, BatchSink sink,
    prometheus::Registry& registry) {
  const std::string where = absl::StrCat("inputs.logpush \"", config.name(), "\": ");
  if (!ValidInputName(config.name())) {
    return absl::InvalidArgumentError(where + "name must match [a-z0-9_-]{1,64}");
  }
  if (config.listen().empty()) return absl::InvalidArgumentError(where + "listen is required");
  std::unique_ptr<LogpushReceiver> r(
      new LogpushReceiver(config, std::move(options), std::move(sink)));
  palisade::v1::LogpushInput& c = r->config_;
  if (c.path().empty()) c.set_path("/logpush");
  if (!ValidPath(c.path())) {
    return absl::InvalidArgumentError(
        where + "path must be \"/\" then letters, digits, '/', '_', '.', '-' (at most 256)");
  }
  if (c.format().empty()) {
    return absl::InvalidArgumentError(
        where + "format is required (logpush_http_requests or logpush_firewall_events)");
  }
  absl::StatusOr<palisade::v1::LogFormat> format = ParseFormatName(c.format());
  if (!format.ok()) return absl::InvalidArgumentError(where + std::string(format.status().message()));
  if (*format == palisade::v1::LOG_FORMAT_DECISIONS) {
    return absl::InvalidArgumentError(where + "format decisions cannot be received");
  }
  r->format_ = *format;
  if (c.source().empty()) c.set_source(c.name());
  if (c.max_body_bytes() == 0) c.set_max_body_bytes(16u << 20);
  if (c.max_inflated_bytes() == 0) c.set_max_inflated_bytes(64u << 20);
  for (auto [field, value] : {std::pair<const char*, uint32_t>{"max_body_bytes", c.max_body_bytes()},
                              {"max_inflated_bytes", c.max_inflated_bytes()}}) {
    if (value < 1024 || value > (1u << 30)) {
      return absl::InvalidArgumentError(absl::StrCat(where, field, " must be 1 KiB..1 GiB"));
    }
  }
  if (r->options_.max_in_flight <= 0) r->options_.max_in_flight = 4;
  if (r->options_.max_queued_connections <= 0) r->options_.max_queued_connections = 16;
  if (r->options_.max_connections_per_address <= 0 ||
      r->options_.max_connections_per_address > r->options_.max_in_flight + 1) {
    r->options_.max_connections_per_address = r->options_.max_in_flight + 1;
  }
  if (r->options_.clock == nullptr) r->options_.clock = &RealClock::Get();
  if (r->options_.request_timeout <= absl::ZeroDuration()) {
    r->options_.request_timeout = absl::Seconds(60);
  }

  // The secret: required; read once; never echoed (errors name the file only).
  if (c.secret_file().empty()) {
    return absl::InvalidArgumentError(
        where + "secret_file is required (the Authorization header value Logpush sends)");
  }
  {
    std::ifstream in(c.secret_file(), std::ios::binary);
    std::stringstream ss;
    if (in) ss << in.rdbuf();
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat(where, "cannot read secret_file \"", c.secret_file(), "\""));
    }
    r->secret_ = ss.str();
    while (!r->secret_.empty() && (r->secret_.back() == '\n' || r->secret_.back() == '\r')) {
      r->secret_.pop_back();
    }
    if (r->secret_.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "secret_file \"", c.secret_file(), "\" is empty"));
    }
  }

  const size_t colon = c.listen().rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(c.listen().substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "listen \"", c.listen(), "\" is not host:port"));
  }
  std::string host = c.listen().substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }

  // A request is read up to its body cap and kMaxHeaderBytes of request line and headers, all
  // before the secret is checked: past that the connection is closed. It must arrive whole,
  // headers and TLS handshake included, within request_timeout; past that the server answers
  // 408, counts a timeout and closes the connection.
  LogpushReceiver* self = r.get();
  BoundedHttpOptions server_options;
  server_options.request_budget = c.max_body_bytes() + kMaxHeaderBytes;
  server_options.request_deadline = r->options_.request_timeout;
  Clock* clock = r->options_.clock;
  server_options.now = [clock] { return clock->TimeNow(); };
  server_options.on_deadline = [self] { self->Count("timeout"); };
  // The secret is checked only once the headers are in: one address sending them slowly gets
  // max_in_flight + 1 of the max_in_flight + 2 workers at most (its uploads, and one to be
  // answered 503 busy), so other senders find one.
  server_options.max_connections_per_address =
      static_cast<size_t>(r->options_.max_connections_per_address);
  server_options.on_address_refused = [self] { self->Count("address_busy"); };
  if (!c.tls_cert_file().empty() || !c.tls_key_file().empty()) {
    for (const std::string* f : {&c.tls_cert_file(), &c.tls_key_file()}) {
      if (f->empty() || !std::ifstream(*f)) {
        return absl::NotFoundError(absl::StrCat(
            where, "cannot read \"", *f, "\" (tls_cert_file and tls_key_file go together)"));
      }
    }
    r->server_ = MakeBoundedHttpsServer(std::move(server_options), c.tls_cert_file().c_str(),
                                        c.tls_key_file().c_str(), /*client_ca=*/nullptr);
    if (!r->server_->is_valid()) {
      return absl::InvalidArgumentError(
          where + "the TLS certificate or key does not load (PEM expected, matching each other)");
    }
  } else {
    r->server_ = MakeBoundedHttpServer(std::move(server_options));
  }

  const prometheus::Labels input = {{"input", c.name()}};
  r->requests_ = &prometheus::BuildCounter()
                      .Name("palisade_logpush_requests_total")
                      .Help("Logpush uploads by outcome: ok, check (Cloudflare's destination "
                            "check), unauthorized, too_large, inflated_too_large, "
                            "too_many_records, records_too_large (their lines plus what each "
                            "record holds pass max_inflated_bytes), malformed, bad_encoding, "
                            "bad_content_type, busy, timeout (not arrived whole within the "
                            "request timeout), address_busy (closed unread: its address had "
                            "max_in_flight + 1 connections served), read_error, unavailable (the "
                            "pipeline refused the batch).")
                      .Register(registry);
  r->malformed_ = &prometheus::BuildCounter()
                       .Name("palisade_logpush_malformed_total")
                       .Help("Logpush uploads refused for their content, by reason: gzip (not "
                             "valid gzip), encoding (an unsupported Content-Encoding), "
                             "content_type (multipart/form-data).")
                       .Register(registry);
  r->lines_ = &prometheus::BuildCounter()
                   .Name("palisade_logpush_lines_total")
                   .Help("NDJSON records of Logpush uploads the pipeline took.")
                   .Register(registry)
                   .Add(input);
  auto& bytes = prometheus::BuildCounter()
                    .Name("palisade_logpush_body_bytes_total")
                    .Help("Logpush upload bytes read: as sent, and once inflated.")
                    .Register(registry);
  r->sent_bytes_ = &bytes.Add({{"input", c.name()}, {"form", "sent"}});
  r->inflated_bytes_ = &bytes.Add({{"input", c.name()}, {"form", "inflated"}});
  r->in_flight_gauge_ = &prometheus::BuildGauge()
                             .Name("palisade_logpush_in_flight")
                             .Help("Logpush uploads being handled.")
                             .Register(registry)
                             .Add(input);

  httplib::Server& server = *r->server_;
  const int threads = r->options_.max_in_flight + 2;  // the extra ones answer 503 when busy
  const size_t queued = static_cast<size_t>(r->options_.max_queued_connections);
  server.new_task_queue = [threads, queued] { return new BoundedTaskQueue(threads, queued); };
  const int64_t io_us = absl::ToInt64Microseconds(r->options_.io_timeout);
  server.set_read_timeout(io_us / 1000000, io_us % 1000000);
  server.set_write_timeout(io_us / 1000000, io_us % 1000000);
  server.set_keep_alive_timeout(5);
  // The reply's head and body go out in two writes: without this, Nagle's algorithm holds the
  // second until the sender's delayed ACK (~40 ms per upload).
  server.set_tcp_nodelay(true);
  server.set_payload_max_length(c.max_body_bytes());
  // Every request passes here before httplib reads a body: anything but POST <path> is answered
  // without reading one (httplib would read it whole, and inflate it without a cap).
  server.set_pre_routing_handler([self](const httplib::Request& req, httplib::Response& res) {
    if (req.path != self->config_.path()) {
      res.status = 404;
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "POST") {
      res.status = 405;
      res.set_header("Allow", "POST");
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    }
    // Take Content-Encoding away so httplib hands the body over as sent (it would inflate
    // gzip itself, without a cap); the handler reads the value under kEncodingHeader. httplib
    // owns `req` as a non-const object, so writing to it is defined.
    auto& headers = const_cast<httplib::Request&>(req).headers;
    headers.erase(kEncodingHeader);
    // Every spelling of the name (`content-encoding` too): httplib's header map compares names
    // case-insensitively, and so does its own Content-Encoding lookup.
    std::string encoding;
    const auto [first, last] = headers.equal_range("Content-Encoding");
    for (auto it = first; it != last; ++it) {
      if (!encoding.empty()) encoding += ",";
      encoding += it->second;
    }
    headers.erase(first, last);
    if (!encoding.empty()) headers.emplace(kEncodingHeader, encoding);
    return httplib::Server::HandlerResponse::Unhandled;
  });

  std::string pattern;  // the path as a regex (httplib routes are regexes); '.' is its only
  for (char ch : c.path()) {  // special character among those ValidPath allows
    if (ch == '.') pattern += '\\';
    pattern += ch;
  }
  server.Post(pattern, [self](const httplib::Request& req, httplib::Response& res,
                              const httplib::ContentReader& content_reader) {
    auto reply = [&res](int status, const std::string& outcome_text) {
      res.status = status;
      res.set_content(outcome_text + "\n", "text/plain");
    };
    // A refused upload's body is not read: close the connection after the reply.
    auto refuse = [&](int status, const std::string& outcome, const std::string& text) {
      self->Count(outcome);
      res.set_header("Connection", "close");
      reply(status, text);
    };
    if (self->in_flight_.fetch_add(1) >= self->options_.max_in_flight) {
      self->in_flight_.fetch_sub(1);
      res.set_header("Retry-After", "1");
      refuse(503, "busy", "busy: retry");
      return;
    }
    self->in_flight_gauge_->Increment();
    struct Release {
      LogpushReceiver* self;
      ~Release() {
        self->in_flight_.fetch_sub(1);
        self->in_flight_gauge_->Decrement();
      }
    } release{self};

    if (!SecretMatches(self->secret_, req.get_header_value("Authorization"))) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"palisade-logpush\"");
      refuse(401, "unauthorized", "the Authorization header does not hold the secret");
      return;
    }
    std::string encoding = absl::AsciiStrToLower(
        absl::StripAsciiWhitespace(req.get_header_value(kEncodingHeader)));
    const bool said_gzip = encoding == "gzip" || encoding == "x-gzip";
    if (!said_gzip && !encoding.empty() && encoding != "identity") {
      self->malformed_->Add({{"input", self->config_.name()}, {"reason", "encoding"}}).Increment();
      refuse(415, "bad_encoding", "Content-Encoding must be gzip or identity");
      return;
    }
    // httplib reads a multipart/form-data body with its multipart reader, which this handler's
    // plain content receiver cannot serve (httplib would answer 500). Logpush sends the file as
    // the body.
    const std::string content_type = absl::AsciiStrToLower(
        absl::StripLeadingAsciiWhitespace(req.get_header_value("Content-Type")));
    if (req.is_multipart_form_data() || absl::StartsWith(content_type, "multipart/form-data")) {
      self->malformed_->Add({{"input", self->config_.name()}, {"reason", "content_type"}})
          .Increment();
      refuse(415, "bad_content_type",
             "Content-Type multipart/form-data is not supported: send the file as the body");
      return;
    }

    // Read the body: count it as sent, decide gzip from the header or its first two bytes,
    // inflate with the cap as it arrives (nothing but the inflated text is kept).
    const palisade::v1::LogpushInput& c = self->config_;
    std::string head;  // the first bytes, until gzip or not is known
    std::unique_ptr<BoundedInflater> inflater;
    bool decided = false;
    std::string body;
    size_t sent = 0;
    ReadFailure failure = ReadFailure::kNone;
    auto take = [&](const char* data, size_t n) -> bool {
      sent += n;
      if (sent > c.max_body_bytes()) {
        failure = ReadFailure::kTooLarge;
        return false;
      }
      absl::string_view in(data, n);
      if (!decided) {
        head.append(in.data(), in.size());
        if (head.size() < 2) return true;
        decided = true;
        const bool magic = head[0] == '\x1f' && head[1] == '\x8b';
        if (said_gzip && !magic) {
          failure = ReadFailure::kNotGzip;
          return false;
        }
        if (magic) inflater = std::make_unique<BoundedInflater>(c.max_inflated_bytes());
        in = head;
      }
      if (inflater != nullptr) {
        absl::Status s = inflater->Feed(in, &body);
        if (absl::IsResourceExhausted(s)) failure = ReadFailure::kInflatedTooLarge;
        if (!s.ok() && failure == ReadFailure::kNone) failure = ReadFailure::kNotGzip;
        return s.ok();
      }
      if (body.size() + in.size() > c.max_inflated_bytes()) {
        failure = ReadFailure::kInflatedTooLarge;
        return false;
      }
      body.append(in.data(), in.size());
      return true;
    };
    const bool read = content_reader(
        [&](const char* data, size_t n) { return take(data, n); });
    self->sent_bytes_->Increment(static_cast<double>(sent));
    // Past request_timeout, or the server stopping: the server answers (408) or closes, and
    // counts the timeout (on_deadline).
    if (!read && RequestCutShort()) return;
    if (read && failure == ReadFailure::kNone && !decided && !head.empty()) {
      // A one-byte body: plain text.
      if (said_gzip) {
        failure = ReadFailure::kNotGzip;
      } else {
        body = head;
      }
    }
    if (read && failure == ReadFailure::kNone && inflater != nullptr &&
        !inflater->Finish().ok()) {
      failure = ReadFailure::kNotGzip;
    }
    self->inflated_bytes_->Increment(static_cast<double>(body.size()));
    switch (failure) {
      case ReadFailure::kNone:
        break;
      case ReadFailure::kTooLarge:
        refuse(413, "too_large", absl::StrCat("the body is over ", c.max_body_bytes(), " bytes"));
        return;
      case ReadFailure::kInflatedTooLarge:
        refuse(413, "inflated_too_large",
               absl::StrCat("the body inflates to over ", c.max_inflated_bytes(), " bytes"));
        return;
      case ReadFailure::kNotGzip:
        self->malformed_->Add({{"input", c.name()}, {"reason", "gzip"}}).Increment();
        refuse(400, "malformed", "the body is not valid gzip");
        return;
    }
    if (!read) {
      // httplib's own refusal: a Content-Length over the cap (413), or a read that failed.
      if (res.status == 413) {
        refuse(413, "too_large", absl::StrCat("the body is over ", c.max_body_bytes(), " bytes"));
      } else {
        refuse(400, "read_error", "the body could not be read");
      }
      return;
    }
    if (IsCheckUpload(body)) {
      self->Count("check");
      reply(200, "ok");
      return;
    }
    palisade::v1::LogBatch batch;
    switch (SplitLines(body, self->options_.max_records, c.max_inflated_bytes(), &batch)) {
      case Split::kOk:
        break;
      case Split::kTooManyRecords:
        refuse(413, "too_many_records",
               absl::StrCat("more than ", self->options_.max_records, " records"));
        return;
      case Split::kTooManyBytes:
        refuse(413, "records_too_large",
               absl::StrCat("the records would hold more than ", c.max_inflated_bytes(),
                            " bytes (each its line plus ", kRecordHeldBytes, ")"));
        return;
    }
    body.clear();
    body.shrink_to_fit();
    batch.set_format(self->format_);
    batch.set_source(c.source());
    const size_t lines = static_cast<size_t>(batch.records_size());
    if (lines > 0) {
      absl::Status s;
      {
        absl::MutexLock lock(&self->sink_mu_);
        s = self->sink_(batch);
      }
      if (!s.ok()) {
        // Not taken: Logpush sends the same file again, which then counts once.
        self->Log(absl::StrCat("input ", c.name(), ": upload of ", lines,
                               " records refused by the pipeline (503, Logpush retries): ",
                               s.message()));
        res.set_header("Retry-After", "1");
        self->Count("unavailable");
        reply(503, "the pipeline did not take the batch: retry");
        return;
      }
    }
    self->lines_->Increment(static_cast<double>(lines));
    self->Count("ok");
    reply(200, "ok");
  });

  r->port_ = port == 0 ? server.bind_to_any_port(host)
                       : (server.bind_to_port(host, port) ? port : -1);
  if (r->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat(where, "cannot listen on ", c.listen(), " (in use, or not an address here)"));
  }
  r->thread_ = std::thread([&server] { server.listen_after_bind(); });
  // httplib's stop() does nothing until the server runs: wait for that, so Stop always stops it.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!server.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  return r;
}

LogpushReceiver::LogpushReceiver(palisade::v1::LogpushInput config,
                                 LogpushReceiverOptions options, BatchSink sink)
    : config_(std::move(config)), options_(std::move(options)), sink_(std::move(sink)) {}

LogpushReceiver::~LogpushReceiver() { Stop(); }

void LogpushReceiver::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void LogpushReceiver::Count(const std::string& outcome) {
  requests_->Add({{"input", config_.name()}, {"outcome", outcome}}).Increment();
}

void LogpushReceiver::Log(const std::string& message) const {
  if (options_.log) options_.log(message);
}

}  // namespace palisade
