#include "services/inputs/logpush_receiver.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "services/common/bounded_http_server.h"
#include "services/common/bounded_task_queue.h"
#include "services/common/fingerprint.h"
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

// Whether `line`, an NDJSON record, is an object with the key "RayID" at its top level. Not a
// substring match: a client whose User-Agent or Referer is exactly RayID is written
// `"ClientRequestUserAgent":"RayID"`, and a batch of such records without a RayID was taken for
// one whose records are distinct. A scan, not a parse (it runs on every record; the pipeline
// parses them): a string is skipped to its first quote not escaped (inside a string a quote is
// always escaped), and only a string at depth 1 right after '{' or ',' and followed by ':' is a
// key. A record cut at max_record_bytes counts the keys before the cut.
bool HasRayIdKey(absl::string_view line) {
  constexpr absl::string_view kKey = "\"RayID\"";
  if (!absl::StrContains(line, kKey)) return false;  // every record of a job without RayID
  constexpr absl::string_view kSpace = " \t\r\n";
  size_t i = line.find_first_not_of(kSpace);
  if (i == absl::string_view::npos || line[i] != '{') return false;
  int depth = 0;
  bool key_next = false;  // at depth 1 after '{' or ',': the next string is a key
  for (; i < line.size(); ++i) {
    switch (line[i]) {
      case '"':
        if (key_next && line.substr(i, kKey.size()) == kKey) {
          const size_t colon = line.find_first_not_of(kSpace, i + kKey.size());
          if (colon != absl::string_view::npos && line[colon] == ':') return true;
        }
        for (++i; i < line.size() && line[i] != '"'; ++i) {
          if (line[i] == '\\') ++i;  // the escaped byte is skipped with it
        }
        key_next = false;
        break;
      case '{':
      case '[':
        ++depth;
        key_next = depth == 1;  // the record's own '{' (its first byte is one)
        break;
      case '}':
      case ']':
        if (--depth <= 0) return false;  // the record's end
        key_next = false;
        break;
      case ',':
        key_next = depth == 1;
        break;
      default:
        break;  // whitespace, ':', numbers and literals
    }
  }
  return false;
}

// Why an upload failed while its body was read; each is a value of the outcome label.
// kSplitStopped: the UploadSplitter stopped (its stop() says why).
enum class ReadFailure { kNone, kTooLarge, kInflatedTooLarge, kNotGzip, kSplitStopped };

// Cuts an upload's inflated bytes, fed in pieces as they arrive, into records as SplitLines does
// (a record over max_record_bytes cut one byte past it, its rest dropped and counted), and the
// records into batches of at most max_batch_records holding at most max_batch_bytes, each handed
// to `hand` as it fills, with its chain digest: SHA-256 of the previous batch's digest and this
// batch's lines. Batches are cut by the records alone, so the same upload (however its bytes
// arrive, gzipped or not) gives the same batches and digests: what its resend is known by.
class UploadSplitter {
 public:
  enum class Stop { kNone, kTooManyRecords, kHandFailed };
  // `ray_ids`: every record of the batch has the top-level key "RayID" (HasRayIdKey: what makes
  // two files' records differ; without it, two uploads of a quiet zone can be the same lines).
  using Hand = std::function<absl::Status(palisade::v1::LogBatch&, const std::string& digest,
                                          bool ray_ids)>;

  UploadSplitter(const LogpushReceiverOptions& o, Hand hand)
      : max_records_(o.max_records),
        max_batch_records_(o.max_batch_records),
        max_batch_bytes_(o.max_batch_bytes),
        max_record_bytes_(o.max_record_bytes),
        hand_(std::move(hand)),
        digest_(SHA256_DIGEST_LENGTH, '\0') {}

  // False once stopped: past max_records, or `hand` failed (hand_status()).
  bool Add(absl::string_view bytes) {
    inflated_ += bytes.size();
    if (head_.size() <= kCheckBytes) {
      head_.append(bytes.data(), std::min(bytes.size(), kCheckBytes + 1 - head_.size()));
    }
    while (!bytes.empty()) {
      const size_t nl = bytes.find('\n');
      const absl::string_view part = bytes.substr(0, nl);
      // The line is kept up to one byte past the cap: a longer one is cut there (the pipeline then
      // sees it over its cap, and cuts and flags it as it does a file input's line).
      const size_t room = max_record_bytes_ + 1 - line_.size();
      if (part.size() > room) {
        line_.append(part.data(), room);
        over_ = true;
      } else {
        line_.append(part.data(), part.size());
      }
      if (nl == absl::string_view::npos) break;
      bytes.remove_prefix(nl + 1);
      if (!EndRecord()) return false;
    }
    return true;
  }
  // The stream ended whole: a last line without its newline is a record too; the last batch is
  // handed.
  bool Finish() {
    if ((!line_.empty() || over_) && !EndRecord()) return false;
    return batch_.records_size() == 0 || HandBatch();
  }

  Stop stop() const { return stop_; }
  const absl::Status& hand_status() const { return hand_status_; }
  size_t inflated() const { return inflated_; }
  size_t cut() const { return cut_; }
  size_t handed() const { return handed_; }
  // The whole upload when it is at most kCheckBytes (Cloudflare's check upload is tiny).
  bool IsCheckUpload() const {
    return inflated_ <= kCheckBytes && handed_ == 0 && LogpushReceiver::IsCheckUpload(head_);
  }

 private:
  static constexpr size_t kCheckBytes = 1024;

  bool EndRecord() {
    absl::string_view line = line_;
    if (!over_) {
      while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    }
    const bool cut = over_;
    if (line.empty()) {
      line_.clear();
      return true;
    }
    if (++records_ > max_records_) {
      stop_ = Stop::kTooManyRecords;
      return false;
    }
    const size_t held = line.size() + LogpushReceiver::kRecordHeldBytes;
    if (batch_.records_size() > 0 &&
        (static_cast<size_t>(batch_.records_size()) >= max_batch_records_ ||
         held_ + held > max_batch_bytes_)) {
      if (!HandBatch()) return false;
    }
    batch_.add_records()->set_line(line.data(), line.size());
    ray_ids_ = ray_ids_ && HasRayIdKey(line);
    held_ += held;
    if (cut) ++cut_;
    line_.clear();
    over_ = false;
    return true;
  }

  bool HandBatch() {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
              EVP_DigestUpdate(ctx, digest_.data(), digest_.size()) == 1;
    for (const auto& r : batch_.records()) {
      ok = ok && EVP_DigestUpdate(ctx, r.line().data(), r.line().size()) == 1 &&
           EVP_DigestUpdate(ctx, "\n", 1) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(ctx, reinterpret_cast<unsigned char*>(digest_.data()), &n) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
      hand_status_ = absl::InternalError("SHA-256 failed");
      stop_ = Stop::kHandFailed;
      return false;
    }
    hand_status_ = hand_(batch_, digest_, ray_ids_);
    if (!hand_status_.ok()) {
      stop_ = Stop::kHandFailed;
      return false;
    }
    ++handed_;
    // A fresh batch, not Clear(): a cleared batch keeps its records and each line's capacity, so
    // a batch of short lines after long ones would hold the long ones' bytes again (j short
    // records after batches of long ones: j long lines' worth), past max_batch_bytes.
    palisade::v1::LogBatch().Swap(&batch_);
    held_ = 0;
    ray_ids_ = true;
    return true;
  }

  const size_t max_records_;
  const size_t max_batch_records_;
  const size_t max_batch_bytes_;
  const size_t max_record_bytes_;
  Hand hand_;
  std::string digest_;  // the last batch handed's (zeros before the first)
  palisade::v1::LogBatch batch_;
  size_t held_ = 0;     // what batch_'s records hold (lines plus kRecordHeldBytes each)
  bool ray_ids_ = true;  // every record of batch_ has the top-level key "RayID"
  std::string line_;    // the line being read, up to max_record_bytes + 1
  bool over_ = false;   // line_ was cut
  std::string head_;    // the first kCheckBytes + 1 inflated bytes
  size_t inflated_ = 0;
  size_t records_ = 0;
  size_t cut_ = 0;
  size_t handed_ = 0;
  Stop stop_ = Stop::kNone;
  absl::Status hand_status_;
};

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
  return Feed(in, [out](absl::string_view piece) {
    out->append(piece.data(), piece.size());
    return absl::OkStatus();
  });
}

absl::Status BoundedInflater::Feed(absl::string_view in,
                                   const std::function<absl::Status(absl::string_view)>& each) {
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
    if (n > 0) {
      if (absl::Status s = each(absl::string_view(reinterpret_cast<const char*>(buf), n));
          !s.ok()) {
        failed_ = true;
        return s;
      }
    }
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
  if (!format.ok()) {
    return absl::InvalidArgumentError(where + std::string(format.status().message()));
  }
  if (*format == palisade::v1::LOG_FORMAT_DECISIONS) {
    return absl::InvalidArgumentError(where + "format decisions cannot be received");
  }
  r->format_ = *format;
  if (c.source().empty()) c.set_source(c.name());
  if (c.max_body_bytes() == 0) c.set_max_body_bytes(16u << 20);
  // Any file Logpush sends whose gzip fits max_body_bytes inflates within this (its
  // max_upload_bytes is at most 1 GB of inflated data); what is inflated is held a batch at a
  // time, so this bounds the inflating work, not the memory.
  if (c.max_inflated_bytes() == 0) c.set_max_inflated_bytes(1u << 30);
  for (auto [field, value] :
       {std::pair<const char*, uint32_t>{"max_body_bytes", c.max_body_bytes()},
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
  LogpushReceiverOptions& o = r->options_;
  const LogpushReceiverOptions defaults;
  if (o.max_records == 0) o.max_records = defaults.max_records;
  if (o.max_batch_records == 0) o.max_batch_records = defaults.max_batch_records;
  if (o.max_record_bytes == 0) o.max_record_bytes = defaults.max_record_bytes;
  if (o.max_batch_bytes == 0) o.max_batch_bytes = defaults.max_batch_bytes;
  // A batch holds at least one record cut at the cap.
  o.max_batch_bytes = std::max(o.max_batch_bytes, o.max_record_bytes + 1 + kRecordHeldBytes);
  // Zero: resends are not looked for (every batch is handed).
  if (o.duplicate_window < absl::ZeroDuration()) o.duplicate_window = defaults.duplicate_window;
  if (o.max_remembered_batches == 0) o.max_remembered_batches = defaults.max_remembered_batches;
  if (r->options_.request_timeout <= absl::ZeroDuration()) {
    r->options_.request_timeout = absl::Seconds(60);
  }

  // The secret: required; read once; never echoed (errors name the file only, and a token typed
  // as its name only by its fingerprint).
  if (c.secret_file().empty()) {
    return absl::InvalidArgumentError(
        where + "secret_file is required (the Authorization header value Logpush sends)");
  }
  {
    std::string shown;
    if (!RedactTokenShapes(c.secret_file(), &shown)) shown = c.secret_file();
    // Opened once and checked on the descriptor: a regular file, owner-only. A secret others on
    // the host can read (or rewrite) is one already shared; the Cloudflare token files are held
    // to the same rule (CheckSecretFileMode, which ingest does not link: it is the Cloudflare
    // client's). O_NONBLOCK: a FIFO is refused instead of blocking the start.
    const int fd = ::open(c.secret_file().c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      return absl::NotFoundError(absl::StrCat(where, "cannot read secret_file \"", shown, "\""));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(where, "secret_file \"", shown, "\" is not a regular file"));
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
      ::close(fd);
      char mode[8];
      snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return absl::PermissionDeniedError(absl::StrCat(
          where, "secret_file \"", shown, "\" is accessible by group or others (mode ", mode,
          "); it holds a secret: chmod 600 it (owner only)"));
    }
    // One header value: a file past 64 KiB is not one (a log or an image named by mistake), and
    // is refused rather than read whole into memory.
    constexpr size_t kMaxSecretBytes = 64 << 10;
    std::string secret;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n == 0) break;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ::close(fd);
        return absl::NotFoundError(
            absl::StrCat(where, "cannot read secret_file \"", shown, "\""));
      }
      secret.append(buf, static_cast<size_t>(n));
      if (secret.size() > kMaxSecretBytes) {
        ::close(fd);
        return absl::InvalidArgumentError(absl::StrCat(
            where, "secret_file \"", shown, "\" is over 64 KiB: it is not a header value"));
      }
    }
    ::close(fd);
    r->secret_ = std::move(secret);
    while (!r->secret_.empty() && (r->secret_.back() == '\n' || r->secret_.back() == '\r')) {
      r->secret_.pop_back();
    }
    if (r->secret_.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "secret_file \"", shown, "\" is empty"));
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
                            "too_many_records, duplicate (every batch of it was taken within "
                            "the hour: a resend, not taken again), malformed, bad_encoding, "
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
  r->cut_ = &prometheus::BuildCounter()
                .Name("palisade_logpush_records_cut_total")
                .Help("Logpush records longer than the record cap, cut one byte past it (the "
                      "pipeline then cuts and flags them).")
                .Register(registry)
                .Add(input);
  r->not_deduplicated_ =
      &prometheus::BuildCounter()
           .Name("palisade_logpush_batches_not_deduplicated_total")
           .Help("Logpush batches handed without being remembered for resends: a record of "
                 "them has no RayID field (the job's fields should include RayID), or "
                 "duplicate_window is 0.")
           .Register(registry)
           .Add(input);
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
      self->LogRefusal(absl::StrCat("input ", self->config_.name(), ": upload refused with ",
                                    status, " (", outcome, "): ", text));
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

    // Read the body as sent, whole, within request_timeout (at most max_body_bytes), and only
    // then inflate it and hand its records to the sink in bounded batches as they fill, with no
    // deadline: the pipeline's time is not the sender's, and batches handed between reads made a
    // long upload (a million records, ~15 s of pipeline, four in flight) end in 408. Memory:
    // the body as sent plus a batch and a record per upload.
    const palisade::v1::LogpushInput& c = self->config_;
    std::string body;
    // Sized once by Content-Length (at most the cap): appending doubles the capacity, so a
    // 16 MiB body read in pieces held up to 32 MiB.
    uint64_t length = 0;
    if (absl::SimpleAtoi(req.get_header_value("Content-Length"), &length)) {
      body.reserve(static_cast<size_t>(std::min<uint64_t>(length, c.max_body_bytes())));
    }
    ReadFailure failure = ReadFailure::kNone;
    const bool read = content_reader([&](const char* data, size_t n) {
      if (n > c.max_body_bytes() - body.size()) {
        failure = ReadFailure::kTooLarge;
        return false;
      }
      body.append(data, n);
      return true;
    });
    self->sent_bytes_->Increment(static_cast<double>(body.size()));
    // Past request_timeout, or the server stopping: the server answers (408) or closes, and
    // counts the timeout (on_deadline). Nothing was handed to the sink.
    if (!read && RequestCutShort()) return;
    size_t taken = 0, duplicates = 0, lines = 0;
    // The batches without RayIDs this upload handed (or skipped as a refused upload's): remembered
    // if it ends non-2xx, since Logpush then sends the same file again.
    std::vector<std::string> without_ray_ids;
    UploadSplitter splitter(
        self->options_,
        [&](palisade::v1::LogBatch& batch, const std::string& digest, bool dedupable) {
          bool duplicate = false;
          absl::Status s = self->Hand(batch, digest, dedupable, &duplicate);
          if (!s.ok()) return s;
          if (!dedupable && without_ray_ids.size() < self->options_.max_remembered_batches) {
            without_ray_ids.push_back(digest);
          }
          if (duplicate) {
            ++duplicates;
          } else {
            ++taken;
            lines += static_cast<size_t>(batch.records_size());
            self->lines_->Increment(static_cast<double>(batch.records_size()));
          }
          return absl::OkStatus();
        });
    auto split = [&](absl::string_view piece) {
      if (splitter.Add(piece)) return absl::OkStatus();
      failure = ReadFailure::kSplitStopped;
      return absl::AbortedError("the upload was stopped");
    };
    if (read && !body.empty()) {
      // Gzip by the header or by its first two bytes.
      const bool magic = body.size() >= 2 && body[0] == '\x1f' && body[1] == '\x8b';
      if (said_gzip && !magic) {
        failure = ReadFailure::kNotGzip;
      } else if (magic) {
        BoundedInflater inflater(c.max_inflated_bytes());
        absl::Status s = inflater.Feed(body, split);
        if (failure == ReadFailure::kNone && absl::IsResourceExhausted(s)) {
          failure = ReadFailure::kInflatedTooLarge;
        }
        if (!s.ok() && failure == ReadFailure::kNone) failure = ReadFailure::kNotGzip;
        if (s.ok() && !inflater.Finish().ok()) failure = ReadFailure::kNotGzip;
      } else if (body.size() > c.max_inflated_bytes()) {
        failure = ReadFailure::kInflatedTooLarge;
      } else {
        split(body).IgnoreError();
      }
    }
    std::string().swap(body);
    const bool check = read && failure == ReadFailure::kNone && splitter.IsCheckUpload();
    if (read && failure == ReadFailure::kNone && !check && !splitter.Finish()) {
      failure = ReadFailure::kSplitStopped;
    }
    self->inflated_bytes_->Increment(static_cast<double>(splitter.inflated()));
    if (splitter.cut() > 0) self->cut_->Increment(static_cast<double>(splitter.cut()));
    // A refusal after batches were taken: they are remembered, so the resend skips them (those
    // with RayIDs were when taken; those without, now: the resend of a refused upload is the same
    // file). Every failure below is answered non-2xx.
    if (!read || failure != ReadFailure::kNone) self->RememberRefused(without_ray_ids);
    const std::string after =
        taken + duplicates == 0
            ? std::string()
            : absl::StrCat(" (after ", taken + duplicates,
                           " batches taken; its resend skips them)");
    switch (failure) {
      case ReadFailure::kNone:
        break;
      case ReadFailure::kTooLarge:
        refuse(413, "too_large", absl::StrCat("the body is over ", c.max_body_bytes(), " bytes"));
        return;
      case ReadFailure::kInflatedTooLarge:
        refuse(413, "inflated_too_large",
               absl::StrCat("the body inflates to over ", c.max_inflated_bytes(), " bytes", after));
        return;
      case ReadFailure::kNotGzip:
        self->malformed_->Add({{"input", c.name()}, {"reason", "gzip"}}).Increment();
        refuse(400, "malformed", "the body is not valid gzip" + after);
        return;
      case ReadFailure::kSplitStopped:
        if (splitter.stop() == UploadSplitter::Stop::kTooManyRecords) {
          refuse(413, "too_many_records",
                 absl::StrCat("more than ", self->options_.max_records, " records", after));
          return;
        }
        // The sink did not take a batch: the reply says "retry"; the batches it took before are
        // remembered, so Logpush's resend of the same file hands only the rest.
        // Rate-limited as the other refusals: a pipeline refusing every batch is one per upload.
        self->LogRefusal(absl::StrCat("input ", c.name(),
                                      ": a batch of an upload refused by the pipeline", after,
                                      " (503, Logpush retries): ",
                                      splitter.hand_status().message()));
        res.set_header("Retry-After", "1");
        self->Count("unavailable");
        res.set_header("Connection", "close");
        reply(503, "the pipeline did not take the batch: retry");
        return;
    }
    if (!read) {
      // httplib's own refusal: a Content-Length over the cap (413), or a read that failed.
      if (res.status == 413) {
        refuse(413, "too_large", absl::StrCat("the body is over ", c.max_body_bytes(), " bytes"));
      } else {
        refuse(400, "read_error", "the body could not be read" + after);
      }
      return;
    }
    if (check) {
      self->Count("check");
      reply(200, "ok");
      return;
    }
    // Every batch was taken before (a resend whose 200 was lost, or a replay): not again.
    self->Count(duplicates > 0 && taken == 0 ? "duplicate" : "ok");
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

void LogpushReceiver::LogRefusal(const std::string& message) {
  size_t not_logged = 0;
  {
    absl::MutexLock lock(&log_mu_);
    const absl::Time now = options_.clock->TimeNow();
    if (now - last_refusal_log_ < absl::Seconds(10)) {
      ++refusals_not_logged_;
      return;
    }
    last_refusal_log_ = now;
    not_logged = std::exchange(refusals_not_logged_, 0);
  }
  Log(not_logged == 0 ? message
                      : absl::StrCat(message, " (", not_logged, " refusals before not logged)"));
}

absl::Status LogpushReceiver::Hand(palisade::v1::LogBatch& batch, const std::string& digest,
                                   bool ray_ids, bool* duplicate) {
  absl::MutexLock lock(&sink_mu_);
  batch.set_format(format_);
  batch.set_source(config_.source());
  // Files are not distinct by themselves (second-resolution timestamps; a field list without
  // RayID; a quiet zone's identical requests in one second): a batch whose records do not all
  // carry a RayID may be another upload's same lines, so it is not remembered when taken.
  if (options_.duplicate_window == absl::ZeroDuration()) {
    absl::Status s = sink_(batch);
    if (s.ok()) not_deduplicated_->Increment();
    return s;
  }
  const absl::Time now = options_.clock->TimeNow();
  if (!ray_ids) {
    // Handed, but for the resend of an upload answered non-2xx after it had handed this batch
    // (RememberRefused): that is the same file, and the batch is skipped, once.
    ForgetRefused(now);
    if (refused_digests_.erase(digest) > 0) {
      *duplicate = true;
      return absl::OkStatus();
    }
    absl::Status s = sink_(batch);
    if (s.ok()) not_deduplicated_->Increment();
    return s;
  }
  while (!taken_.empty() && (now - taken_.front().first >= options_.duplicate_window ||
                             taken_.size() > options_.max_remembered_batches)) {
    taken_digests_.erase(taken_.front().second);
    taken_.pop_front();
  }
  if (taken_digests_.count(digest) > 0) {
    *duplicate = true;
    return absl::OkStatus();
  }
  absl::Status s = sink_(batch);
  if (!s.ok()) return s;
  // Remembered once taken (under the lock: a resend racing its first send waits for it).
  if (taken_digests_.insert(digest).second) {
    taken_.emplace_back(now, digest);
    if (taken_.size() > options_.max_remembered_batches) {
      taken_digests_.erase(taken_.front().second);
      taken_.pop_front();
    }
  }
  return absl::OkStatus();
}

void LogpushReceiver::RememberRefused(const std::vector<std::string>& digests) {
  if (digests.empty() || options_.duplicate_window == absl::ZeroDuration()) return;
  absl::MutexLock lock(&sink_mu_);
  const absl::Time now = options_.clock->TimeNow();
  for (const std::string& digest : digests) {
    refused_digests_[digest] = now;
    refused_.emplace_back(now, digest);
  }
  ForgetRefused(now);
}

void LogpushReceiver::ForgetRefused(absl::Time now) {
  while (!refused_.empty() && (now - refused_.front().first >= options_.duplicate_window ||
                               refused_.size() > options_.max_remembered_batches)) {
    // An entry skipped since (and perhaps remembered again, later) is not the live one.
    auto it = refused_digests_.find(refused_.front().second);
    if (it != refused_digests_.end() && it->second == refused_.front().first) {
      refused_digests_.erase(it);
    }
    refused_.pop_front();
  }
}

}  // namespace palisade
