// palisadectl: the command-line client of palisaded.
//
//   palisadectl ship FILE... [--format F] [--source S] [--shipper_id ID] [--retime]
//   palisadectl ship --follow FILE... --state_file S [--shipper_id ID] [--verbose]
//   (the source defaults to "<shipper_id>:<absolute path>", the shipper id to the host name)
//   palisadectl decisions list [--active] [--target T] [--rule R] [--page_size N] [--json]
//
// Human output escapes what peers and logs wrote (control characters, bidi marks, invalid
// UTF-8): a log line or a batch source must not be able to forge lines on an operator's screen.
//   palisadectl decisions add ADDRESS|CIDR --duration 1h [--reason TEXT]
//   palisadectl decisions delete ID
//   palisadectl rules test PACK FILE [--format F] [--json] [--remote]
//                              [--config C] [--time_zone Z]   (local; --remote: the server's)
//   palisadectl rules import-fail2ban FILTER.conf [--report] [--filter_params=k=v,...]
//                              [--jail=jail.conf[,jail.local] [--jail_name=J]] | DIR --report
//   palisadectl rules reload
//   palisadectl actions release [--max N]
//   palisadectl bouncers add NAME | list [--json] | delete NAME
//   palisadectl replay FILE... [--format F] [--config C | --rules PACK,...] [--batch_lines N]
//                              [--threads N] [--time_zone Z] [--source S] [--json]
//   palisadectl status
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "palisade/v1/palisade.grpc.pb.h"
#include "services/cli/follow_shipper.h"
#include "services/cli/shipper.h"
#include "services/inputs/line_reader.h"
#include "services/common/huge_pages.h"
#include "services/common/proto_time.h"
#include "services/engine/rule_set.h"
#include "services/server/auth.h"
#include "services/server/config.h"
#include "services/events/event_hub.h"
#include "services/events/sinks.h"
#include "services/feeds/feed_parser.h"
#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"
#include "services/pipeline/pipeline.h"
#include "services/fail2ban/fail2ban_import.h"
#include "services/replay/replay.h"
#include "services/cloudflare/credentials.h"
#include "services/cloudflare/token_check.h"
#include "services/server/edge.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "palisaded's gRPC address.");
ABSL_FLAG(std::string, token_file, "",
          "A file holding the bearer token for palisaded's api.clients (default: the "
          "PALISADE_TOKEN environment variable, if set).");
ABSL_FLAG(std::string, tls_ca, "",
          "Connect over TLS, trusting this PEM CA bundle (--tls_cert and --tls_key need it).");
ABSL_FLAG(std::string, tls_cert, "", "TLS client certificate (PEM), for mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "TLS client key (PEM), for mutual TLS.");
ABSL_FLAG(std::string, format, "syslog",
          "Log format: syslog, syslog5424, combined, combined_vhost, raw, nginx_error, "
          "apache_error, nginx_json, caddy_json, traefik_json, envoy_json, "
          "logpush_http_requests, logpush_firewall_events, or json with --json_format; "
          "rules test and replay also read cloudflare_audit (audit logs v2 records).");
ABSL_FLAG(std::string, json_format, "",
          "ship, replay --format=json: the name of the mapping in palisaded's json_formats that "
          "reads these lines (replay: in --config's).");
ABSL_FLAG(std::string, source, "",
          "ship: the lines' source (default: \"<shipper_id>:<absolute path>\", e.g. "
          "web-1:/var/log/auth.log); palisaded keeps each source's time (the year of year-less "
          "stamps, the event time windows age by, source_time_zones), so hosts shipping the "
          "same file must not share one. replay: the lines' source, whose zone in --config's "
          "source_time_zones or inputs applies.");
ABSL_FLAG(bool, retime, false,
          "ship: move the lines' event times so the last line happened now (for demos and "
          "tests that ship a recorded log to a live daemon).");
ABSL_FLAG(int32_t, batch_lines, 1000,
          "ship, replay: lines per batch (replay's result does not depend on it).");
ABSL_FLAG(int32_t, threads, 0,
          "replay: threads that match (0: one per core); the result does not depend on it.");
ABSL_FLAG(bool, follow, false,
          "ship: follow the files as tail -F does (rotation, copytruncate) until SIGTERM, "
          "sending again after a reconnect from the last ack; needs --state_file.");
ABSL_FLAG(std::string, state_file, "",
          "ship --follow: where the acked positions are kept (written atomically).");
ABSL_FLAG(std::string, shipper_id, "",
          "ship: this host's name to the server (default: the host name), the first half of the "
          "default --source; ship --follow: the server drops what a shipper sends again per "
          "shipper id and path.");
ABSL_FLAG(bool, verbose, false, "ship --follow: a status line (acks, lag) every 10 s.");
ABSL_FLAG(bool, json, false, "Machine-readable output.");
ABSL_FLAG(bool, active, false, "decisions list: only active decisions.");
ABSL_FLAG(std::string, target, "", "decisions list: only this target.");
ABSL_FLAG(std::string, rule, "", "decisions list: only this rule.");
ABSL_FLAG(int32_t, page_size, 0,
          "decisions list: decisions per call (0: the server's default); every page is read.");
ABSL_FLAG(absl::Duration, duration, absl::Hours(1), "decisions add: how long.");
ABSL_FLAG(std::string, reason, "", "decisions add: free text.");
ABSL_FLAG(bool, remote, false, "rules test: run through the server's Admin.TestRules.");
ABSL_FLAG(bool, report, false,
          "rules import-fail2ban: print what became of each regex instead of the pack.");
ABSL_FLAG(std::string, filter_params, "",
          "rules import-fail2ban: filter parameters, as a jail's `filter = sshd[mode=aggressive]` "
          "sets them (comma-separated k=v).");
ABSL_FLAG(std::vector<std::string>, jail, {},
          "rules import-fail2ban: jail.conf[,jail.local]: read the jail's maxretry, findtime, "
          "bantime, bantime.increment/factor/maxtime and ignoreip.");
ABSL_FLAG(std::string, jail_name, "",
          "rules import-fail2ban --jail: the jail to read (default: the filter's name).");
ABSL_FLAG(int32_t, max, 0, "actions release: at most this many (0: all).");
ABSL_FLAG(std::vector<std::string>, rules, {},
          "replay: rule pack files (comma-separated). Default: --config's rule_files, else the "
          "shipped packs from --rules_dir or the install locations.");
ABSL_FLAG(std::string, rules_dir, "",
          "replay: where the shipped packs are (default: /usr/share/palisade/rules, "
          "/usr/local/share/palisade/rules, then ./rules).");
ABSL_FLAG(std::string, config, "",
          "replay: palisaded's config; its rule_files, cidr_sets, allowlist, engine limits, "
          "time zones and json_formats apply, as in palisaded. rules test (local): its "
          "time_zone, and engine.max_line_bytes and max_record_bytes (where lines are cut).");
ABSL_FLAG(std::string, time_zone, "",
          "replay, rules test (local): zone of times without a UTC offset (default: --config's, "
          "else the host's, as palisaded).");
ABSL_FLAG(std::string, reference_time, "",
          "replay: when the log was written (RFC 3339, e.g. 2024-03-31T00:00:00Z): the year of "
          "its first yearless line, and where a first line far ahead is judged from (default: "
          "now; a yearless log over a year old needs it, or Feb 29 and DST days go wrong).");
ABSL_FLAG(std::vector<std::string>, kinds, {},
          "watch: only these kinds (detection, decision, action, alert; comma-separated).");
ABSL_FLAG(uint64_t, after, 0, "watch: resume after this sequence number (0: new events only).");
ABSL_FLAG(std::string, stream, "",
          "watch: with --after, the stream that sequence counts in (printed on stderr when a "
          "watch starts): refused if palisaded restarted since, rather than other events.");
ABSL_FLAG(std::string, origin, "", "watch: only this origin (rule, manual, feed).");
ABSL_FLAG(int32_t, count, 0, "watch: stop after this many events (0: follow until interrupted).");
ABSL_FLAG(std::string, mode, "replace", "feeds push: replace, add or remove.");
ABSL_FLAG(bool, force, false,
          "feeds push: apply even if the shrink or the growth guard would hold it (takes the "
          "admin role).");
ABSL_FLAG(std::string, lookup, "", "feeds show: only the entry containing this address.");
ABSL_FLAG(int32_t, entries, 20, "feeds show: at most this many entries.");
ABSL_FLAG(std::string, csv_column, "ip", "feeds test: CSV address column.");
ABSL_FLAG(std::string, csv_confidence_column, "", "feeds test: CSV confidence column.");
ABSL_FLAG(int32_t, min_confidence, 0, "feeds test: least confidence kept.");
ABSL_FLAG(int32_t, min_prefix_v4, palisade::FeedParseOptions::kDefaultMinPrefixV4,
          "feeds test: the widest IPv4 range kept (palisaded's default).");
ABSL_FLAG(int32_t, min_prefix_v6, palisade::FeedParseOptions::kDefaultMinPrefixV6,
          "feeds test: the widest IPv6 range kept (palisaded's default).");
ABSL_FLAG(uint64_t, max_parsed_bytes, palisade::FeedParseOptions::kDefaultMaxParsedBytes,
          "feeds test: what the parsed feed may hold, as the feed's max_parsed_bytes (0: "
          "palisaded's default, 256 MiB).");

namespace palisade {
namespace {

using palisade::v1::LogFormat;

// How files of `format` are read: a JSON record whole up to engine.max_record_bytes (a client's
// long headers come before the status; palisaded's default unless given), other lines up to
// 1 MiB, or one byte past max_line_bytes if that is longer (the pipeline cuts them again at
// engine.max_line_bytes, and that byte tells it a line went on: ReplayReaderOptions).
LineReaderOptions ReaderOptionsFor(LogFormat format, size_t max_line_bytes = 0,
                                   size_t max_record_bytes = PipelineOptions().max_record_bytes) {
  return ReplayReaderOptions(format, max_line_bytes, max_record_bytes);
}

// A shipped batch ends once its lines hold this many bytes: well under palisaded's default
// api.max_message_bytes (16 MiB), which refuses a larger batch (and with it the whole ship).
constexpr size_t kShipBatchBytes = size_t{4} << 20;

// How much of the heap a replay on more than one thread keeps faulted ahead (huge_pages.h): a
// 1 M-line replay grows its heap by ~80 MiB in well under a second, 2 MiB at a time.
constexpr size_t kReplayFaultAheadBytes = size_t{16} << 20;

// Walks `s` by UTF-8 code point: `cp` is -1 for a byte that starts no valid sequence (bad
// lead, truncated, overlong, surrogate, past U+10FFFF), whose `len` is then 1.
template <typename F>
void ForEachCodePoint(absl::string_view s, F f) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    int32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      ok = (c & 0xC0) == 0x80;
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr int32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (ok && (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      f(-1, s.substr(i, 1));
      ++i;
      continue;
    }
    f(cp, s.substr(i, static_cast<size_t>(len)));
    i += static_cast<size_t>(len);
  }
}

// Characters a terminal must not get raw from text a peer or a log wrote (issue 12: a newline
// in LogBatch.source forged whole lines of `watch`): the C0 controls, DEL, the C1 controls, and
// the ones that reorder or hide text (bidi marks, embeddings, overrides and isolates; the line
// and paragraph separators).
bool Unsafe(int32_t cp) {
  return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C ||
         cp == 0x200E || cp == 0x200F || (cp >= 0x2028 && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

// Text for a human: every unsafe character escaped (\n, \t, \r, \xNN, \u{NNNN}), every
// invalid UTF-8 byte as \xNN, and the backslash doubled so an escape cannot be forged either.
std::string Safe(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  ForEachCodePoint(s, [&out](int32_t cp, absl::string_view bytes) {
    if (cp < 0) {
      absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned char>(bytes[0]));
    } else if (cp == '\\') {
      out += "\\\\";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x80 && Unsafe(cp)) {
      absl::StrAppendFormat(&out, "\\x%02x", cp);
    } else if (Unsafe(cp)) {
      absl::StrAppendFormat(&out, "\\u{%04x}", cp);
    } else {
      out.append(bytes.data(), bytes.size());
    }
  });
  return out;
}

int Fail(const std::string& message) {
  std::cerr << "palisadectl: " << Safe(message) << std::endl;
  return 1;
}

int Fail(const grpc::Status& s, absl::string_view what) {
  return Fail(absl::StrCat(what, ": ", s.error_message(), " (code ", s.error_code(), ")"));
}

// A file's whole content. A directory (or a block device) is an error naming the path, as is a
// failed read: neither is an empty file. A pipe or character device is read to its end
// (--token_file=<(...), feeds push /dev/null).
absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", strerror(errno)));
  struct stat st;
  std::string out;
  absl::Status status;
  if (fstat(fd, &st) != 0) {
    status = absl::InternalError(absl::StrCat(path, ": cannot stat: ", strerror(errno)));
  } else if (S_ISDIR(st.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat(path, ": is a directory"));
  } else if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  } else {
    char buf[1 << 16];
    while (true) {
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = absl::DataLossError(absl::StrCat(path, ": read error: ", strerror(errno)));
        break;
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  if (!status.ok()) return status;
  return out;
}

// For credentials: a file that cannot be read, or holds nothing, ends the command (nothing can
// be sent without it; an empty --tls_ca would mean gRPC's default roots, the public CAs).
std::string ReadFileOrExit(absl::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> content = ReadFile(path);
  if (!content.ok()) std::exit(Fail(absl::StrCat(flag, ": ", content.status().message())));
  if (content->find_first_not_of(" \t\r\n") == std::string::npos) {
    std::exit(Fail(absl::StrCat(flag, " ", path, ": empty")));
  }
  return *std::move(content);
}

// The bearer token: --token_file, else $PALISADE_TOKEN, else none. Never printed.
const std::string& Token() {
  static const std::string* token = [] {
    std::string t;
    if (!absl::GetFlag(FLAGS_token_file).empty()) {
      t = ReadFileOrExit("--token_file", absl::GetFlag(FLAGS_token_file));
    } else if (const char* env = std::getenv("PALISADE_TOKEN")) {
      t = env;
    }
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    return new std::string(t);
  }();
  return *token;
}

// TLS only with a CA to trust, and a client certificate only whole: a flag that cannot take
// effect ends the command rather than send the token in clear or without the certificate.
std::shared_ptr<grpc::Channel> Channel() {
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (ca.empty() && (!cert.empty() || !key.empty())) {
    std::exit(Fail("--tls_cert and --tls_key need --tls_ca (the CA that signed palisaded's "
                   "certificate): without it the connection would not use TLS"));
  }
  if (cert.empty() != key.empty()) {
    std::exit(Fail(cert.empty() ? "--tls_key needs --tls_cert" : "--tls_cert needs --tls_key"));
  }
  if (ca.empty()) {
    return grpc::CreateChannel(absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials());
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFileOrExit("--tls_ca", ca);
  if (!cert.empty()) {
    ssl.pem_cert_chain = ReadFileOrExit("--tls_cert", cert);
    ssl.pem_private_key = ReadFileOrExit("--tls_key", key);
  }
  return grpc::CreateChannel(absl::GetFlag(FLAGS_server), grpc::SslCredentials(ssl));
}

void Authorize(grpc::ClientContext* ctx) {
  if (!Token().empty()) ctx->AddMetadata("authorization", "Bearer " + Token());
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  Authorize(ctx.get());
  return ctx;
}

// The lines of a file as replay reads them, and which of them the reader cut at its cap.
struct FileLines {
  std::vector<std::string> lines;
  std::vector<bool> cut;  // cut[i]: line i is the reader's first bytes of a longer line
};

// The lines of `path`, read as replay reads them (LineReader: each kept up to one byte past the
// caps the pipeline cuts them at, and at least 1 MiB; a directory or a read error is an error
// naming the path, not an empty log).
absl::StatusOr<FileLines> ReadLines(const std::string& path, LogFormat format,
                                    size_t max_line_bytes, size_t max_record_bytes) {
  absl::StatusOr<std::unique_ptr<LineReader>> reader =
      LineReader::Open(path, ReaderOptionsFor(format, max_line_bytes, max_record_bytes));
  if (!reader.ok()) return reader.status();
  FileLines out;
  absl::string_view line;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&line);
    if (!more.ok()) return more.status();
    if (!*more) return out;
    out.lines.emplace_back(line);
    // As the shipper flags it (AddLines): a line of exactly the cap and a longer one cut there
    // look alike, and the cut one must not be judged whole (TestRules).
    out.cut.push_back((*reader)->last_cut());
  }
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

// The latest time `format`'s parser reads in `file` (streamed), for --retime.
absl::StatusOr<std::optional<absl::Time>> LatestTime(const std::string& file, LogFormat format,
                                                     absl::Time now) {
  absl::StatusOr<std::unique_ptr<LineReader>> reader =
      LineReader::Open(file, ReaderOptionsFor(format));
  if (!reader.ok()) return reader.status();
  LineParser parser(format);
  ParsedLine parsed;
  std::optional<absl::Time> last;
  absl::string_view line;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&line);
    if (!more.ok()) return more.status();
    if (!*more) return last;
    if (parser.Parse(line, now, &parsed).ok() && parsed.time) {
      last = last ? std::max(*last, *parsed.time) : *parsed.time;
    }
  }
}

// --format and --json_format together: json needs the mapping's name, and only json takes one.
absl::StatusOr<LogFormat> ShipFormat() {
  absl::StatusOr<LogFormat> format = ParseFormatName(absl::GetFlag(FLAGS_format));
  if (!format.ok()) return format.status();
  const bool json = *format == palisade::v1::LOG_FORMAT_JSON;
  if (json != !absl::GetFlag(FLAGS_json_format).empty()) {
    return absl::InvalidArgumentError(
        "ship: --format=json needs --json_format=NAME (a mapping in palisaded's json_formats), "
        "and --json_format goes with --format=json only");
  }
  if (json && absl::GetFlag(FLAGS_retime)) {
    return absl::InvalidArgumentError(
        "ship --retime: a custom json mapping's times are read by palisaded, not here");
  }
  return format;
}

// ship --follow: runs until SIGTERM or SIGINT (taken by a thread of its own with sigwait), then
// waits a little for the batches in flight and prints what was acked.
int FollowFiles(const std::vector<std::string>& files) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Before any thread (gRPC's included) starts, so they all inherit the mask.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::StatusOr<LogFormat> format = ShipFormat();
  if (!format.ok()) return Fail(std::string(format.status().message()));
  FollowOptions options;
  options.paths = files;
  options.state_file = absl::GetFlag(FLAGS_state_file);
  options.shipper_id = absl::GetFlag(FLAGS_shipper_id);
  options.source = absl::GetFlag(FLAGS_source);
  options.format = *format;
  options.json_format = absl::GetFlag(FLAGS_json_format);
  options.batch_lines = static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_batch_lines)));
  options.bearer_token = Token();
  options.verbose = absl::GetFlag(FLAGS_verbose);
  options.log = [](const std::string& m) { std::cerr << "palisadectl: " << Safe(m) << std::endl; };
  FollowShipper shipper(std::move(options));
  std::thread waiter([&shipper, signals] {
    int sig = 0;
    while (sigwait(&signals, &sig) != 0) {
    }
    shipper.Stop();
  });
  auto stub = palisade::v1::Ingest::NewStub(Channel());
  absl::StatusOr<FollowSummary> summary = shipper.Run(*stub);
  if (!summary.ok()) {
    // The waiter still waits for a signal: end the process without joining it.
    std::exit(Fail(std::string(summary.status().message())));
  }
  waiter.join();
  std::printf(
      "ship --follow: %llu lines acked in %llu batches (%llu accepted, %llu malformed, %llu "
      "already taken, %llu detections); %llu reconnects, %llu batches sent again, lag %llu "
      "bytes\n",
      static_cast<unsigned long long>(summary->lines_acked),
      static_cast<unsigned long long>(summary->batches_acked),
      static_cast<unsigned long long>(summary->accepted),
      static_cast<unsigned long long>(summary->malformed),
      static_cast<unsigned long long>(summary->duplicates),
      static_cast<unsigned long long>(summary->detections),
      static_cast<unsigned long long>(summary->reconnects),
      static_cast<unsigned long long>(summary->resent_batches),
      static_cast<unsigned long long>(summary->lag_bytes));
  return 0;
}

// Ships each file streamed (memory bounded by the batches in flight, whatever the file's size).
int ShipFiles(const std::vector<std::string>& files) {
  if (files.empty()) return Fail("ship: no files given");
  if (absl::GetFlag(FLAGS_follow)) return FollowFiles(files);
  absl::StatusOr<LogFormat> format = ShipFormat();
  if (!format.ok()) return Fail(std::string(format.status().message()));
  auto stub = palisade::v1::Ingest::NewStub(Channel());
  const bool tty = isatty(STDERR_FILENO);
  int rc = 0;
  for (const std::string& file : files) {
    // --retime shifts every parsed time by (now - the file's latest time): a first pass finds
    // that time (the file is read twice, never held whole; standard input cannot be).
    const absl::Time now = absl::Now();
    std::optional<absl::Duration> shift;
    if (absl::GetFlag(FLAGS_retime)) {
      if (file == "-") return Fail("ship --retime: standard input cannot be read twice");
      absl::StatusOr<std::optional<absl::Time>> latest = LatestTime(file, *format, now);
      if (!latest.ok()) return Fail(std::string(latest.status().message()));
      if (*latest) shift = now - **latest;
    }
    absl::StatusOr<std::unique_ptr<LineReader>> reader =
        LineReader::Open(file, ReaderOptionsFor(*format));
    if (!reader.ok()) return Fail(std::string(reader.status().message()));
    LineParser parser(*format);
    ParsedLine parsed;
    uint64_t lines = 0;
    // A line the reader cut is shipped flagged cut (AddLines, LogRecord.cut).
    auto retime = [&](absl::string_view line, palisade::v1::LogRecord* record) {
      if (shift && parser.Parse(line, now, &parsed).ok() && parsed.time) {
        *record->mutable_event_time() = ToProtoTime(*parsed.time + *shift);
      }
    };
    RecordSource source = [&](palisade::v1::LogBatch* batch, size_t max) -> absl::StatusOr<size_t> {
      absl::StatusOr<size_t> n = AddLines(**reader, max, kShipBatchBytes, batch, retime);
      if (n.ok()) lines += *n;
      return n;
    };
    ShipOptions options;
    options.format = *format;
    options.json_format = absl::GetFlag(FLAGS_json_format);
    // Empty: "<host>:<path>" (ShipOptions), one source per host and file.
    options.source = absl::GetFlag(FLAGS_source);
    options.host = absl::GetFlag(FLAGS_shipper_id);
    options.path = file;
    options.bearer_token = Token();
    options.batch_lines = static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_batch_lines)));
    if (tty) {
      options.progress = [&file](uint64_t done, uint64_t) {
        std::fprintf(stderr, "\r%s: %llu lines acked", Safe(file).c_str(),
                     static_cast<unsigned long long>(done));
      };
    }
    const absl::Time start = absl::Now();
    absl::StatusOr<ShipSummary> summary = Ship(*stub, source, options);
    if (tty) std::fprintf(stderr, "\n");
    if (!summary.ok()) {
      rc = Fail(absl::StrCat("ship ", file, ": ", summary.status().message()));
      continue;
    }
    if ((*reader)->cut_lines() > 0) {
      std::fprintf(stderr, "%s: %llu line(s) longer than %zu bytes cut (shipped marked cut)\n",
                   Safe(file).c_str(), static_cast<unsigned long long>((*reader)->cut_lines()),
                   ReaderOptionsFor(*format).max_line_bytes);
    }
    const double secs = std::max(1e-9, absl::ToDoubleSeconds(absl::Now() - start));
    std::printf(
        "%s: %llu lines in %llu batches: %llu accepted, %llu malformed, %llu matched, "
        "%llu ignored, %llu detections (%.0f lines/s)\n",
        Safe(file).c_str(), static_cast<unsigned long long>(lines),
        static_cast<unsigned long long>(summary->batches),
        static_cast<unsigned long long>(summary->accepted),
        static_cast<unsigned long long>(summary->malformed),
        static_cast<unsigned long long>(summary->matched),
        static_cast<unsigned long long>(summary->ignored),
        static_cast<unsigned long long>(summary->detections), lines / secs);
  }
  return rc;
}

std::string ShortAction(palisade::v1::Action a) {
  std::string s = palisade::v1::Action_Name(a);
  return s.rfind("ACTION_", 0) == 0 ? s.substr(7) : s;
}

int DecisionsList() {
  auto stub = palisade::v1::Decisions::NewStub(Channel());
  palisade::v1::ListDecisionsRequest req;
  req.set_active_only(absl::GetFlag(FLAGS_active));
  req.set_target(absl::GetFlag(FLAGS_target));
  req.set_rule_id(absl::GetFlag(FLAGS_rule));
  req.set_page_size(std::max(0, absl::GetFlag(FLAGS_page_size)));
  const bool json = absl::GetFlag(FLAGS_json);
  if (!json) {
    std::printf("%-16s  %-39s  %-17s  %-26s  %-7s  %-20s  %s\n", "ID", "TARGET", "ACTION",
                "RULE", "OFFENCE", "EXPIRES (UTC)", "ACTIVE");
  }
  // The server pages the list (issue 12): each page is printed as it comes, so a long list
  // costs the client one page of memory too.
  int total = 0;
  int pages = 0;
  for (;;) {
    palisade::v1::ListDecisionsResponse resp;
    grpc::Status s = stub->List(Context().get(), req, &resp);
    if (!s.ok()) return Fail(s, "decisions list");
    ++pages;
    total += resp.decisions_size();
    for (const auto& d : resp.decisions()) {
      if (json) {
        std::printf("%s\n", Json(d).c_str());
        continue;
      }
      std::printf("%-16s  %-39s  %-17s  %-26s  %-7u  %-20s  %s\n", Safe(d.id()).c_str(),
                  Safe(d.target().value()).c_str(), ShortAction(d.action()).c_str(),
                  (d.rule_id().empty() ? "(manual)" : Safe(d.rule_id())).c_str(), d.offence(),
                  absl::FormatTime("%Y-%m-%d %H:%M:%S", FromProtoTime(d.expiry()),
                                   absl::UTCTimeZone())
                      .c_str(),
                  d.active() ? "yes" : "no");
    }
    if (resp.next_page_token().empty()) break;
    if (resp.next_page_token() == req.page_token()) {
      return Fail("decisions list: the server repeated a page");
    }
    req.set_page_token(resp.next_page_token());
  }
  if (!json) {
    if (pages > 1) {
      std::printf("%d decisions in %d pages\n", total, pages);
    } else {
      std::printf("%d decisions\n", total);
    }
  }
  return 0;
}

int DecisionsAdd(const std::string& target) {
  auto stub = palisade::v1::Decisions::NewStub(Channel());
  palisade::v1::AddDecisionRequest req;
  bool range = target.find('/') != std::string::npos;
  req.mutable_target()->set_kind(range ? palisade::v1::TARGET_KIND_RANGE
                                       : palisade::v1::TARGET_KIND_IP);
  req.mutable_target()->set_value(target);
  *req.mutable_duration() = ToProtoDuration(absl::GetFlag(FLAGS_duration));
  req.set_reason(absl::GetFlag(FLAGS_reason));
  palisade::v1::Decision d;
  grpc::Status s = stub->Add(Context().get(), req, &d);
  if (!s.ok()) return Fail(s, "decisions add");
  std::printf("%s\n", Json(d).c_str());
  return 0;
}

int DecisionsDelete(const std::string& id) {
  auto stub = palisade::v1::Decisions::NewStub(Channel());
  palisade::v1::DeleteDecisionRequest req;
  req.set_id(id);
  palisade::v1::Decision d;
  grpc::Status s = stub->Delete(Context().get(), req, &d);
  if (!s.ok()) return Fail(s, "decisions delete");
  std::printf("withdrawn: %s on %s\n", Safe(d.id()).c_str(), Safe(d.target().value()).c_str());
  return 0;
}

// `rules import-fail2ban FILTER.conf`: the converted pack on stdout (or, with --report, what
// became of each regex), the counts on stderr. A filter refused whole (CheckFail2banImport: no
// failregex converted, an ignoreregex refused) or unreadable fails, --report too (exit 1 after
// the report). On a directory (--report only): one line per filter.d/*.conf and the totals;
// exit 1 when any of them is refused or unreadable (an include file, with no failregex, is
// neither).
int RulesImportFail2ban(const std::string& path) {
  Fail2banImportOptions options;
  for (absl::string_view kv :
       absl::StrSplit(absl::GetFlag(FLAGS_filter_params), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty()) return Fail(absl::StrCat("--filter_params: \"", kv, "\" is not k=v"));
    options.params[p.first] = p.second;
  }
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    if (!absl::GetFlag(FLAGS_report)) {
      return Fail("rules import-fail2ban DIR: only with --report (import filters one by one)");
    }
    std::vector<std::string> names;
    if (DIR* dir = opendir(path.c_str())) {
      while (dirent* e = readdir(dir)) {
        std::string n = e->d_name;
        if (n.size() > 5 && n.compare(n.size() - 5, 5, ".conf") == 0) names.push_back(n);
      }
      closedir(dir);
    }
    std::sort(names.begin(), names.end());
    int converted = 0, includes = 0, refused = 0, errors = 0, regex[3] = {0, 0, 0};
    for (const std::string& n : names) {
      const std::string file = absl::StrCat(path, "/", n);
      absl::StatusOr<Fail2banImport> r = ConvertFail2banFilter(file, options);
      std::printf("%s\n", Fail2banSummaryLine(n.substr(0, n.size() - 5), r).c_str());
      if (!r.ok()) {
        ++errors;
        continue;
      }
      ++(CheckFail2banImport(file, *r).ok() ? converted
         : Fail2banIncludeOnly(*r)           ? includes
                                             : refused);
      regex[0] += r->failregexes(RegexOutcome::kConverted);
      regex[1] += r->failregexes(RegexOutcome::kRewritten);
      regex[2] += r->failregexes(RegexOutcome::kRefused);
    }
    std::printf("total: %zu files: %d converted, %d include files, %d refused, %d errors; "
                "failregex %d converted, %d rewritten, %d refused\n",
                names.size(), converted, includes, refused, errors, regex[0], regex[1], regex[2]);
    if (refused + errors > 0) {
      std::fflush(stdout);
      return Fail(absl::StrCat("rules import-fail2ban ", path, ": ", refused, " refused, ",
                               errors, " errors"));
    }
    return 0;
  }
  if (!absl::GetFlag(FLAGS_jail).empty()) {
    std::string jail = absl::GetFlag(FLAGS_jail_name);
    if (jail.empty()) {
      jail = path.substr(path.rfind('/') + 1);
      if (jail.size() > 5 && jail.compare(jail.size() - 5, 5, ".conf") == 0) jail.resize(jail.size() - 5);
    }
    absl::Status s = ReadFail2banJail(absl::GetFlag(FLAGS_jail), jail, &options);
    if (!s.ok()) return Fail(absl::StrCat("rules import-fail2ban --jail: ", s.message()));
  }
  // --report says what became of every regex, even of a filter refused whole (then exit 1).
  absl::StatusOr<Fail2banImport> imported = absl::GetFlag(FLAGS_report)
                                                ? ConvertFail2banFilter(path, options)
                                                : ImportFail2banFilter(path, options);
  if (!imported.ok()) {
    return Fail(absl::StrCat("rules import-fail2ban: ", imported.status().message()));
  }
  const std::string out = absl::GetFlag(FLAGS_report) ? Fail2banReportText(*imported)
                                                      : Fail2banPackText(*imported);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::cerr << "palisadectl: " << Safe(imported->filter) << ": "
            << imported->count(RegexOutcome::kConverted) << " converted, "
            << imported->count(RegexOutcome::kRewritten) << " rewritten, "
            << imported->count(RegexOutcome::kRefused) << " refused" << std::endl;
  if (!imported->ignoreip.empty()) {
    std::cerr << "palisadectl: the jail's ignoreip is not in the pack: add it to palisaded's "
                 "config allowlist (see the pack's header)" << std::endl;
  }
  if (absl::Status refused = CheckFail2banImport(path, *imported); !refused.ok()) {
    std::fflush(stdout);
    return Fail(absl::StrCat("rules import-fail2ban: ", refused.message()));
  }
  return 0;
}

// --format for the offline tools (rules test, replay) is read with ParseOfflineFormatName: also
// "cloudflare_audit", which inputs and shippers may not name, to test the audit pack over saved
// records (nothing here reaches an edge).

int RulesTest(const std::string& pack_path, const std::string& file) {
  absl::StatusOr<LogFormat> format = ParseOfflineFormatName(absl::GetFlag(FLAGS_format));
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<LoadedPack> pack = LoadRulePackFile(pack_path);
  if (!pack.ok()) return Fail(std::string(pack.status().message()));
  palisade::v1::TestRulesResponse resp;
  const absl::Time start = absl::Now();
  if (absl::GetFlag(FLAGS_remote)) {
    // The file streamed in requests of about kShipBatchBytes of lines (api.max_message_bytes
    // refuses a larger request whole), the answers merged. Each request is tested alone: a pid
    // session open at a request's end is not carried into the next.
    absl::StatusOr<std::unique_ptr<LineReader>> reader =
        LineReader::Open(file, ReaderOptionsFor(*format));
    if (!reader.ok()) return Fail(std::string(reader.status().message()));
    auto stub = palisade::v1::Admin::NewStub(Channel());
    std::map<std::string, palisade::v1::RuleSummary> rules;
    bool more = true;
    for (bool first = true; more; first = false) {
      palisade::v1::TestRulesRequest req;
      *req.mutable_pack() = pack->pack;
      req.set_format(*format);
      size_t bytes = 0;
      absl::string_view line;
      while (bytes < kShipBatchBytes) {
        absl::StatusOr<bool> next = (*reader)->Next(&line);
        if (!next.ok()) return Fail(std::string(next.status().message()));
        if (!(more = *next)) break;
        // A line this reader cut is sent flagged (TestRulesRequest.cut_lines): palisaded then
        // judges it cut, as a shipped LogRecord.cut line, whatever its own cap.
        if ((*reader)->last_cut()) req.add_cut_lines(req.lines_size());
        req.add_lines(line.data(), line.size());
        bytes += line.size();
      }
      if (req.lines().empty() && !first) break;
      palisade::v1::TestRulesResponse part;
      grpc::Status s = stub->TestRules(Context().get(), req, &part);
      if (!s.ok()) return Fail(s, "rules test");
      const uint32_t offset = resp.lines();
      resp.set_lines(resp.lines() + part.lines());
      resp.set_malformed(resp.malformed() + part.malformed());
      resp.set_matched_lines(resp.matched_lines() + part.matched_lines());
      resp.set_truncated(resp.truncated() || part.truncated());
      for (palisade::v1::LineMatch& m : *part.mutable_matches()) {
        m.set_line_number(m.line_number() + offset);
        *resp.add_matches() = std::move(m);
      }
      for (const palisade::v1::RuleSummary& r : part.rules()) {
        palisade::v1::RuleSummary& merged = rules[r.rule_id()];
        merged.set_rule_id(r.rule_id());
        merged.set_matches(merged.matches() + r.matches());
        for (const std::string& k : r.keys()) {
          if (merged.keys_size() < 20 &&
              std::find(merged.keys().begin(), merged.keys().end(), k) == merged.keys().end()) {
            merged.add_keys(k);
          }
        }
      }
    }
    for (auto& [id, r] : rules) *resp.add_rules() = std::move(r);
  } else {
    absl::StatusOr<std::shared_ptr<const RuleSet>> rules = RuleSet::Compile({*pack});
    if (!rules.ok()) return Fail(std::string(rules.status().message()));
    // Zoneless times as palisaded reads them (as replay does): --time_zone, else --config's
    // time_zone, else (palisaded's default) the host's zone. Lines cut where palisaded cuts
    // them: --config's engine.max_line_bytes and max_record_bytes, else palisaded's defaults.
    absl::StatusOr<absl::TimeZone> host = TimeZoneNamed("");
    if (!host.ok()) return Fail(absl::StrCat("rules test: ", host.status().message()));
    absl::TimeZone zone = *host;
    uint32_t max_line_bytes = PipelineOptions().max_line_bytes;
    uint32_t max_record_bytes = PipelineOptions().max_record_bytes;
    if (!absl::GetFlag(FLAGS_config).empty()) {
      absl::StatusOr<palisade::v1::Config> config =
          LoadConfigFile(absl::GetFlag(FLAGS_config));
      if (!config.ok()) return Fail(std::string(config.status().message()));
      absl::StatusOr<ReplayOptions> from_config = ReplayOptionsFromConfig(*config);
      if (!from_config.ok()) {
        return Fail(absl::StrCat("rules test: ", absl::GetFlag(FLAGS_config), ": ",
                                 from_config.status().message()));
      }
      zone = from_config->time_zone;
      max_line_bytes = from_config->max_line_bytes;
      max_record_bytes = from_config->max_record_bytes;
    }
    if (!absl::GetFlag(FLAGS_time_zone).empty()) {
      absl::StatusOr<absl::TimeZone> named = TimeZoneNamed(absl::GetFlag(FLAGS_time_zone));
      if (!named.ok()) return Fail(absl::StrCat("rules test: ", named.status().message()));
      zone = *named;
    }
    absl::StatusOr<FileLines> lines =
        ReadLines(file, *format, max_line_bytes, max_record_bytes);
    if (!lines.ok()) return Fail(std::string(lines.status().message()));
    // A line the reader cut, or one past the caps, is cut as palisaded cuts it: a match pinned
    // to its end is not taken there (it reported the forged tail the daemon refuses).
    resp = Pipeline::TestRules(*rules, *format, lines->lines, absl::Now(), zone,
                               std::numeric_limits<size_t>::max(), max_line_bytes,
                               max_record_bytes, lines->cut);
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);

  if (absl::GetFlag(FLAGS_json)) {
    for (const auto& m : resp.matches()) {
      // Fields in this order; invalid UTF-8 becomes U+FFFD (JSON text is UTF-8), as in the ECS
      // sink.
      const nlohmann::ordered_json line = {
          {"line", m.line_number()},
          {"rule", m.rule_id()},
          {"key", m.key()},
          {"time", m.has_event_time() ? absl::FormatTime(absl::RFC3339_full,
                                                         FromProtoTime(m.event_time()),
                                                         absl::UTCTimeZone())
                                      : ""}};
      std::printf("%s\n",
                  line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    }
    if (resp.truncated()) {
      std::fprintf(stderr, "rules test: the server's answer reached its cap; the matches "
                           "listed stop there (test fewer lines at a time)\n");
      return 1;
    }
    return 0;
  }
  std::printf(
      "Running tests\n=============\n\nUse   rules file : %s (pack \"%s\")\nUse   log file   : %s"
      " (%s)\n\nResults\n=======\n\n",
      Safe(pack_path).c_str(), Safe(pack->pack.name()).c_str(), Safe(file).c_str(),
      std::string(FormatName(*format)).c_str());
  std::printf("%-28s %10s  %s\n", "rule", "matches", "keys (first 20)");
  for (const auto& r : resp.rules()) {
    std::string keys;
    for (const auto& k : r.keys()) absl::StrAppend(&keys, keys.empty() ? "" : " ", Safe(k));
    std::printf("%-28s %10u  %s\n", Safe(r.rule_id()).c_str(), r.matches(), keys.c_str());
  }
  std::printf("\nLines: %u lines, %u matched, %u missed, %u malformed [processed in %.2f s]\n",
              resp.lines(), resp.matched_lines(),
              resp.lines() - resp.matched_lines() - resp.malformed(), resp.malformed(), secs);
  if (resp.truncated()) {
    std::printf("The server's answer reached its cap: the keys listed stop there (the counts "
                "cover every line); test fewer lines at a time to see them all.\n");
  }
  return 0;
}

int RulesReload() {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::ReloadRulesResponse resp;
  grpc::Status s = stub->ReloadRules(Context().get(), {}, &resp);
  if (!s.ok()) return Fail(s, "rules reload");
  std::printf("reloaded: %u rules\n", resp.rules_loaded());
  return 0;
}

// CrowdSec bouncers (palisaded's bouncer_api). `add` prints the new key alone on standard
// output (the one time it is shown: palisaded keeps only its SHA-256), the advice on stderr.
int BouncersAdd(const std::string& name) {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::AddBouncerRequest req;
  req.set_name(name);
  palisade::v1::AddBouncerResponse resp;
  grpc::Status s = stub->AddBouncer(Context().get(), req, &resp);
  if (!s.ok()) return Fail(s, "bouncers add");
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  std::fprintf(stderr,
               "bouncer \"%s\" added; its API key follows. It is shown this once (palisaded "
               "keeps only a hash): put it in the bouncer's api_key.\n",
               Safe(resp.name()).c_str());
  std::printf("%s\n", resp.api_key().c_str());
  return 0;
}

int BouncersList() {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::ListBouncersResponse resp;
  grpc::Status s = stub->ListBouncers(Context().get(), {}, &resp);
  if (!s.ok()) return Fail(s, "bouncers list");
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  std::printf("%-24s %-25s %-40s %s\n", "name", "last pull", "address", "version");
  for (const auto& b : resp.bouncers()) {
    const std::string last =
        b.has_last_pull()
            ? absl::FormatTime(absl::RFC3339_sec, FromProtoTime(b.last_pull()), absl::UTCTimeZone())
            : std::string("never");
    std::printf("%-24s %-25s %-40s %s%s\n", Safe(b.name()).c_str(), last.c_str(),
                Safe(b.address()).c_str(), Safe(b.version()).c_str(), b.stale() ? "  (stale)" : "");
  }
  return 0;
}

int BouncersDelete(const std::string& name) {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::DeleteBouncerRequest req;
  req.set_name(name);
  palisade::v1::DeleteBouncerResponse resp;
  grpc::Status s = stub->DeleteBouncer(Context().get(), req, &resp);
  if (!s.ok()) return Fail(s, "bouncers delete");
  std::printf("bouncer \"%s\" deleted: its key is refused from now on\n", Safe(name).c_str());
  return 0;
}

// palisadectl cluster status: the node asked, the writer, the live nodes, who owns which
// partition, and how far its copy of the decision log is.
int ClusterStatus() {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::StatusResponse resp;
  grpc::Status s = stub->Status(Context().get(), {}, &resp);
  if (!s.ok()) return Fail(s, "cluster status");
  if (!resp.has_cluster()) {
    std::fprintf(stderr,
                 "palisadectl: cluster status: this palisaded runs alone (no cluster {} in its "
                 "config)\n");
    return 1;
  }
  const palisade::v1::ClusterStatus& c = resp.cluster();
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(c).c_str());
    return 0;
  }
  std::vector<std::string> live;
  for (const auto& n : c.live_nodes()) live.push_back(Safe(n));
  std::map<uint32_t, std::string> owners;
  for (const auto& p : c.partition_owners()) owners[p.partition()] = Safe(p.node());
  std::string owned, by, unowned;
  for (uint32_t p : c.owned()) absl::StrAppend(&owned, owned.empty() ? "" : ",", p);
  for (uint32_t p = 0; p < c.partitions(); ++p) {
    auto it = owners.find(p);
    if (it == owners.end()) {
      absl::StrAppend(&unowned, unowned.empty() ? "" : ",", p);
    } else {
      absl::StrAppend(&by, by.empty() ? "" : " ", p, "=", it->second);
    }
  }
  std::printf("node:       %s (NATS %s)\n", Safe(c.node_id()).c_str(),
              c.nats_connected() ? "connected" : "DISCONNECTED");
  std::printf("writer:     %s\n",
              c.writer_node().empty()
                  ? "NONE: no node writes to Cloudflare now"
                  : absl::StrCat(Safe(c.writer_node()), c.writer() ? " (this node)" : "").c_str());
  std::printf("nodes:      %d live: %s\n", c.live_nodes_size(), absl::StrJoin(live, ", ").c_str());
  std::printf("partitions: %u; this node's: %s\n", c.partitions(),
              owned.empty() ? "none" : owned.c_str());
  std::printf("owners:     %s\n", by.empty() ? "none" : by.c_str());
  if (!unowned.empty()) std::printf("UNOWNED:    %s (counted by no node)\n", unowned.c_str());
  std::printf("decision log: applied %llu of %llu (lag %llu)\n",
              static_cast<unsigned long long>(c.log_applied()),
              static_cast<unsigned long long>(c.log_last_sequence()),
              static_cast<unsigned long long>(c.replica_lag()));
  std::printf("detections: %llu sent to the writer, %llu dropped\n",
              static_cast<unsigned long long>(c.detections_forwarded()),
              static_cast<unsigned long long>(c.detections_dropped()));
  if (!c.last_error().empty()) std::printf("error:      %s\n", Safe(c.last_error()).c_str());
  return 0;
}

int ActionsRelease(int max) {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::ReleaseHeldRequest req;
  req.set_max(static_cast<uint32_t>(std::max(0, max)));
  palisade::v1::ReleaseHeldResponse resp;
  grpc::Status s = stub->ReleaseHeld(Context().get(), req, &resp);
  if (!s.ok()) return Fail(s, "actions release");
  std::printf("released %u held action(s)\n", resp.released());
  return 0;
}

int Status() {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::StatusResponse resp;
  grpc::Status s = stub->Status(Context().get(), {}, &resp);
  if (!s.ok()) return Fail(s, "status");
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  std::string packs;
  for (const auto& p : resp.packs()) absl::StrAppend(&packs, packs.empty() ? "" : ", ", Safe(p));
  std::printf(
      "palisaded %s, up %s\nrules:     %u (%s)\nlines:     %llu received, %llu malformed, %llu "
      "matched\ndetections: %llu\ndecisions: %u active\nactions:   %u pending, %u held by "
      "the guard\n",
      Safe(resp.version()).c_str(),
      absl::FormatDuration(absl::Trunc(FromProtoDuration(resp.uptime()), absl::Seconds(1))).c_str(),
      resp.rules_loaded(), packs.c_str(), static_cast<unsigned long long>(resp.lines_received()),
      static_cast<unsigned long long>(resp.lines_malformed()),
      static_cast<unsigned long long>(resp.lines_matched()),
      static_cast<unsigned long long>(resp.detections()), resp.decisions_active(),
      resp.actions_pending(), resp.actions_held());
  if (resp.bouncers_registered() > 0) {
    std::printf("bouncers:  %u registered, %u stale   (palisadectl bouncers list)\n",
                resp.bouncers_registered(), resp.bouncers_stale());
  }
  // The credentials check made at start (palisadectl cloudflare check for the details).
  for (const auto& a : resp.actuator_states()) {
    if (!a.enabled()) {
      std::printf("actuator:  %s DISABLED: %s\n", Safe(a.actuator()).c_str(),
                  Safe(a.reason()).c_str());
    }
  }
  if (resp.has_cloudflare_token_expires()) {
    std::printf("token:     expires %s\n",
                absl::FormatTime(absl::RFC3339_sec, FromProtoTime(resp.cloudflare_token_expires()),
                                 absl::UTCTimeZone())
                    .c_str());
  }
  if (resp.has_credentials_checked()) {
    std::printf("credentials: checked %s%s%s\n",
                absl::FormatTime(absl::RFC3339_sec, FromProtoTime(resp.credentials_checked()),
                                 absl::UTCTimeZone())
                    .c_str(),
                resp.credentials_check_error().empty() ? "" : "; the last check failed: ",
                Safe(resp.credentials_check_error()).c_str());
  }
  if (resp.credential_findings_size() > 0) {
    std::printf("credentials: %d finding(s):", resp.credential_findings_size());
    for (const auto& f : resp.credential_findings()) std::printf(" %s", Safe(f.kind()).c_str());
    std::printf("   (palisadectl cloudflare check)\n");
  }
  return 0;
}

int ReplayFiles(const std::vector<std::string>& files) {
  if (files.empty()) return Fail("replay: no files given");
  absl::StatusOr<LogFormat> format = ParseOfflineFormatName(absl::GetFlag(FLAGS_format));
  if (!format.ok()) return Fail(std::string(format.status().message()));
  // The rules, sets, allowlist and zone of a real config when one is given (the packs that
  // test CIDR sets, like cloudflare-audit, need its cidr_sets); else the shipped packs, found
  // where an installed palisaded finds them.
  palisade::v1::Config config;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::StatusOr<palisade::v1::Config> loaded = LoadConfigFile(absl::GetFlag(FLAGS_config));
    if (!loaded.ok()) return Fail(absl::StrCat("replay: ", loaded.status().message()));
    config = *std::move(loaded);
  }
  if (!absl::GetFlag(FLAGS_rules).empty()) {
    config.clear_rule_files();
    for (const std::string& f : absl::GetFlag(FLAGS_rules)) config.add_rule_files(f);
  }
  if (config.rule_files().empty()) {
    std::vector<std::string> dirs;
    if (!absl::GetFlag(FLAGS_rules_dir).empty()) {
      dirs.push_back(absl::GetFlag(FLAGS_rules_dir));
    } else {
      dirs = {"/usr/share/palisade/rules", "/usr/local/share/palisade/rules", "rules"};
    }
    std::string looked;
    for (const std::string& dir : dirs) {
      absl::StrAppend(&looked, looked.empty() ? "" : ", ", dir);
      if (std::ifstream(absl::StrCat(dir, "/sshd.textproto")).good()) {
        for (const char* p : {"sshd", "nginx", "cloudflare-tokens"}) {
          config.add_rule_files(absl::StrCat(dir, "/", p, ".textproto"));
        }
        break;
      }
    }
    if (config.rule_files().empty()) {
      return Fail(absl::StrCat("replay: no rule packs found (looked for sshd.textproto in ", looked,
                               "); give --config=palisade.textproto, --rules_dir=DIR or "
                               "--rules=PACK,..."));
    }
  }
  // The engine's caps, session ttl, evidence, allowlist, line caps, zones and json_formats of
  // the config, as palisaded takes them; without one, palisaded's defaults.
  ReplayOptions options;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    absl::StatusOr<ReplayOptions> from_config = ReplayOptionsFromConfig(config);
    if (!from_config.ok()) {
      return Fail(absl::StrCat("replay: ", absl::GetFlag(FLAGS_config), ": ",
                               from_config.status().message()));
    }
    options = *std::move(from_config);
  } else {
    absl::StatusOr<absl::TimeZone> host = TimeZoneNamed("");
    if (!host.ok()) return Fail(absl::StrCat("replay: ", host.status().message()));
    options.time_zone = *host;
  }
  if (!absl::GetFlag(FLAGS_time_zone).empty()) {
    absl::StatusOr<absl::TimeZone> zone = TimeZoneNamed(absl::GetFlag(FLAGS_time_zone));
    if (!zone.ok()) return Fail(absl::StrCat("replay: ", zone.status().message()));
    options.time_zone = *zone;
  }
  if (!absl::GetFlag(FLAGS_reference_time).empty()) {
    absl::Time reference;
    std::string why;
    if (!absl::ParseTime(absl::RFC3339_full, absl::GetFlag(FLAGS_reference_time), &reference,
                         &why)) {
      return Fail(absl::StrCat("replay: --reference_time \"", absl::GetFlag(FLAGS_reference_time),
                               "\" is not an RFC 3339 time (", why, ")"));
    }
    options.reference = reference;
  }
  options.source = absl::GetFlag(FLAGS_source);
  options.json_format = absl::GetFlag(FLAGS_json_format);
  options.batch_lines = static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_batch_lines)));
  options.threads = static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_threads)));
  // With a second core, the kernel's zeroing of the heap's new pages moves off the thread that
  // counts in order, which bounds a replay on two threads (huge_pages.h; PERFORMANCE.md,
  // "Nineteenth pass"). On one thread the replay keeps to its one core.
  if (options.threads != 1 && std::thread::hardware_concurrency() > 1) {
    FaultHeapAhead(kReplayFaultAheadBytes).IgnoreError();  // a sanitizer build has no such heap
  }
  // The packs load on the threads that will match, with the Sets of the one format read (and
  // of the decisions the pipeline feeds back to its recidive rules) built.
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = LoadRules(
      config,
      options.threads != 0 ? static_cast<int>(std::min(options.threads, kMaxReplayThreads))
                           : static_cast<int>(std::thread::hardware_concurrency()),
      {*format, LogFormat::LOG_FORMAT_DECISIONS},
      // A replay reads no feed; a config given names the daemon's feeds, and its packs are
      // checked against them as the daemon checks them.
      absl::GetFlag(FLAGS_config).empty() ? FeedNames::kAny : FeedNames::kConfigured);
  if (!rules.ok()) return Fail(absl::StrCat("replay: ", rules.status().message()));
  // The files one after the other, streamed: memory bounded by a batch, whatever their size.
  class Files : public LineSource {
   public:
    Files(const std::vector<std::string>& paths, LineReaderOptions options)
        : paths_(paths), options_(options) {}
    absl::StatusOr<bool> Next(absl::string_view* line) override {
      while (true) {
        if (reader_ == nullptr) {
          if (next_ >= paths_.size()) return false;
          absl::StatusOr<std::unique_ptr<LineReader>> r =
              LineReader::Open(paths_[next_++], options_);
          if (!r.ok()) return r.status();
          reader_ = *std::move(r);
        }
        absl::StatusOr<bool> more = reader_->Next(line);
        if (!more.ok() || *more) return more;
        reader_.reset();
      }
    }
    // The reader's batches (read into `buffer`, no line copied); a batch ends with its file.
    absl::StatusOr<size_t> NextBatch(size_t max_lines, size_t max_bytes, LineBuffer* buffer,
                                     std::vector<absl::string_view>* lines) override {
      while (true) {
        if (reader_ == nullptr) {
          lines->clear();
          if (next_ >= paths_.size()) return 0;
          absl::StatusOr<std::unique_ptr<LineReader>> r =
              LineReader::Open(paths_[next_++], options_);
          if (!r.ok()) return r.status();
          reader_ = *std::move(r);
        }
        absl::StatusOr<size_t> n = reader_->NextBatch(max_lines, max_bytes, buffer, lines);
        if (!n.ok() || *n > 0) return n;
        reader_.reset();
      }
    }

   private:
    const std::vector<std::string>& paths_;
    const LineReaderOptions options_;
    size_t next_ = 0;
    std::unique_ptr<LineReader> reader_;
  };
  Files source(files, ReaderOptionsFor(*format, options.max_line_bytes, options.max_record_bytes));
  const bool json = absl::GetFlag(FLAGS_json);
  // The summary names how many targets the decisions were on: the decisions themselves are not
  // kept (--json prints them once the replay has ended, whole or not at all).
  absl::flat_hash_set<std::string> targets;
  if (!json) {
    options.on_decision = [&targets](const palisade::v1::Decision& d) {
      targets.insert(d.target().value());
    };
    options.engine.max_evidence = 0;  // nothing printed reads a decision's lines
  }
  absl::StatusOr<ReplaySummary> summary = Replay(*rules, *format, source, options);
  if (!summary.ok()) return Fail(std::string(summary.status().message()));
  // Lines of which none parsed: the wrong --format (or not a log), not a quiet log.
  const bool none_parsed = summary->lines > 0 && summary->malformed == summary->lines;
  const double secs = std::max(1e-9, absl::ToDoubleSeconds(summary->wall));
  const std::string counts = absl::StrFormat(
      "replayed %llu lines (%llu malformed, %llu cut, %llu matched) in %.3f s: %.0f lines/s",
      static_cast<unsigned long long>(summary->lines),
      static_cast<unsigned long long>(summary->malformed),
      static_cast<unsigned long long>(summary->truncated),
      static_cast<unsigned long long>(summary->matched), secs, summary->lines / secs);
  const std::string unparsed =
      absl::StrCat("replay: none of the ", summary->lines, " lines parsed as ",
                   FormatName(*format), " (--format)");
  // Lines without a time replay at the clock: a log of them is one instant, and its windows
  // fill as no daemon reading it live would see them. Said on stderr, as the counts in --json.
  if (summary->untimed > 0 && !none_parsed) {
    std::fprintf(stderr,
                 "replay: %llu of %llu lines had no time of their own in format %s (no stamp "
                 "of a shape it reads): each was counted at the latest line time before it, or "
                 "at the replay's start before the first timed line\n",
                 static_cast<unsigned long long>(summary->untimed),
                 static_cast<unsigned long long>(summary->lines),
                 std::string(FormatName(*format)).c_str());
  }
  if (json) {
    // One decision per line; a stale one (would already have been over) is not active and has
    // no id. The counts go to stderr: stdout holds decisions only.
    for (const auto& d : summary->decisions) std::printf("%s\n", Json(d).c_str());
    for (const auto& d : summary->stale) std::printf("%s\n", Json(d).c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "%s; %llu detections, %llu decisions, %zu stale\n", counts.c_str(),
                 static_cast<unsigned long long>(summary->detections),
                 static_cast<unsigned long long>(summary->decisions_created),
                 summary->stale.size());
    return none_parsed ? Fail(unparsed) : 0;
  }
  std::printf("%s\n", counts.c_str());
  std::printf("%-28s %10s\n", "rule", "matches");
  for (const auto& [rule, n] : summary->matches_per_rule) {
    std::printf("%-28s %10llu\n", Safe(rule).c_str(), static_cast<unsigned long long>(n));
  }
  std::printf("detections: %llu, decisions: %llu, targets that would be acted on: %zu\n",
              static_cast<unsigned long long>(summary->detections),
              static_cast<unsigned long long>(summary->decisions_created), targets.size());
  if (summary->windows_evicted > 0 || summary->sessions_evicted > 0) {
    // The caps bound while the state was live: what was evicted may have hidden a detection.
    std::printf(
        "evicted while live: %llu windows, %llu sessions (engine.max_keys_per_rule, "
        "memory_budget_bytes, max_sessions): a larger budget could detect more\n",
        static_cast<unsigned long long>(summary->windows_evicted),
        static_cast<unsigned long long>(summary->sessions_evicted));
  }
  if (!summary->stale.empty()) {
    // Not enforced (they would already have been over when their line came, the log being out of
    // order), but never silently lost.
    std::printf("stale: %zu detection(s) whose decision would already have ended:\n",
                summary->stale.size());
    for (const auto& d : summary->stale) {
      std::printf("  %s %s at %s\n", Safe(d.rule_id()).c_str(), Safe(d.target().value()).c_str(),
                  absl::FormatTime("%Y-%m-%d %H:%M:%S", FromProtoTime(d.start()),
                                   absl::UTCTimeZone())
                      .c_str());
    }
  }
  if (none_parsed) {
    std::fflush(stdout);
    return Fail(unparsed);
  }
  return 0;
}

// Feed commands take --format as a feed format; "syslog" is the flag's default for logs.
absl::StatusOr<palisade::v1::FeedFormat> FeedFormatFlag(bool required) {
  const std::string name = absl::GetFlag(FLAGS_format);
  if (name == "syslog") {
    if (required) return absl::InvalidArgumentError("--format is required (plain, spamhaus, "
                                                    "spamhaus-json, firehol, csv, stix)");
    return palisade::v1::FEED_FORMAT_UNSPECIFIED;
  }
  return ParseFeedFormatName(name);
}

std::string Time(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0) return "never";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", FromProtoTime(t), absl::UTCTimeZone());
}

void PrintPush(const palisade::v1::PushFeedResponse& r) {
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(r).c_str());
    return;
  }
  for (const auto& rej : r.rejections()) {
    std::printf("line %u: %s: %s\n", rej.line(), Safe(rej.reason()).c_str(),
                Safe(rej.text()).c_str());
  }
  std::printf("accepted %u, rejected %u, ignored %u, never-ban %u\n", r.accepted(), r.rejected(),
              r.ignored(), r.never_ban());
  if (r.held()) {
    std::printf("HELD: %s\n", Safe(r.held_reason()).c_str());
  } else {
    std::printf("version %llu: %u added, %u removed\n",
                static_cast<unsigned long long>(r.version()), r.added(), r.removed());
  }
}

int FeedsList() {
  auto stub = palisade::v1::Feeds::NewStub(Channel());
  palisade::v1::ListFeedsResponse resp;
  grpc::Status s = stub->List(Context().get(), {}, &resp);
  if (!s.ok()) return Fail(s, "feeds list");
  if (absl::GetFlag(FLAGS_json)) {
    for (const auto& f : resp.feeds()) std::printf("%s\n", Json(f).c_str());
    return 0;
  }
  std::printf("%-20s  %-22s  %9s  %7s  %-19s  %-5s  %s\n", "FEED", "FORMAT", "ENTRIES", "VERSION",
              "LAST SUCCESS (UTC)", "EDGE", "STATE");
  for (const auto& f : resp.feeds()) {
    std::string state = f.held() ? "held: " + f.held_reason()
                        : !f.last_error().empty() ? "error: " + f.last_error()
                                                   : "ok";
    std::printf("%-20s  %-22s  %9llu  %7llu  %-19s  %-5s  %s\n", Safe(f.name()).c_str(),
                palisade::v1::FeedFormat_Name(f.format()).c_str(),
                static_cast<unsigned long long>(f.entries()),
                static_cast<unsigned long long>(f.version()), Time(f.last_success()).c_str(),
                f.to_edge() ? "yes" : "no", Safe(state).c_str());
  }
  return 0;
}

int FeedsShow(const std::string& name) {
  auto stub = palisade::v1::Feeds::NewStub(Channel());
  palisade::v1::GetFeedRequest req;
  req.set_name(name);
  req.set_lookup(absl::GetFlag(FLAGS_lookup));
  req.set_max_entries(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_entries))));
  palisade::v1::GetFeedResponse resp;
  grpc::Status s = stub->Get(Context().get(), req, &resp);
  if (!s.ok()) return Fail(s, "feeds show");
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  const auto& f = resp.info();
  const std::string from = f.url().empty() ? " (pushed)" : ", from " + Safe(f.url());
  const std::string held = f.held() ? ", HELD: " + Safe(f.held_reason()) : "";
  std::printf("%s: %llu entries, version %llu, last success %s%s%s\n", Safe(f.name()).c_str(),
              static_cast<unsigned long long>(f.entries()),
              static_cast<unsigned long long>(f.version()), Time(f.last_success()).c_str(),
              from.c_str(), held.c_str());
  for (const auto& e : resp.entries()) {
    std::printf("  %-43s  first %s  last %s  expires %s  %s\n", Safe(e.cidr()).c_str(),
                Time(e.first_seen()).c_str(), Time(e.last_seen()).c_str(),
                Time(e.expiry()).c_str(), Safe(e.ref()).c_str());
  }
  if (!req.lookup().empty() && resp.entries().empty()) {
    std::printf("  %s is not listed\n", Safe(req.lookup()).c_str());
    return 3;
  }
  return 0;
}

int FeedsPush(const std::string& name, const std::string& path) {
  absl::StatusOr<palisade::v1::FeedFormat> format = FeedFormatFlag(/*required=*/false);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  palisade::v1::FeedPushMode mode;
  const std::string mode_name = absl::GetFlag(FLAGS_mode);
  if (mode_name == "replace") mode = palisade::v1::FEED_PUSH_MODE_REPLACE;
  else if (mode_name == "add") mode = palisade::v1::FEED_PUSH_MODE_ADD;
  else if (mode_name == "remove") mode = palisade::v1::FEED_PUSH_MODE_REMOVE;
  else return Fail("--mode must be replace, add or remove");
  absl::StatusOr<std::string> content = ReadFile(path);
  if (!content.ok()) return Fail(std::string(content.status().message()));
  auto stub = palisade::v1::Feeds::NewStub(Channel());
  auto ctx = Context();
  palisade::v1::PushFeedResponse resp;
  std::unique_ptr<grpc::ClientWriter<palisade::v1::FeedChunk>> writer =
      stub->Push(ctx.get(), &resp);
  constexpr size_t kChunk = 1 << 20;
  size_t offset = 0;
  do {
    palisade::v1::FeedChunk chunk;
    if (offset == 0) {
      chunk.set_feed(name);
      chunk.set_mode(mode);
      chunk.set_format(*format);
      chunk.set_force(absl::GetFlag(FLAGS_force));
    }
    chunk.set_data(content->substr(offset, kChunk));
    offset += kChunk;
    // The server applies a push only once it has the chunk marked last: a push cut off on the
    // way (a deadline, this process killed) is refused rather than applied in part.
    chunk.set_last(offset >= content->size());
    if (!writer->Write(chunk)) break;
  } while (offset < content->size());
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return Fail(s, "feeds push");
  PrintPush(resp);
  return resp.held() ? 3 : 0;
}

int FeedsTest(const std::string& path) {
  absl::StatusOr<palisade::v1::FeedFormat> format = FeedFormatFlag(/*required=*/true);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<std::string> content = ReadFile(path);
  if (!content.ok()) return Fail(std::string(content.status().message()));
  FeedParseOptions options;
  options.csv_column = absl::GetFlag(FLAGS_csv_column);
  options.csv_confidence_column = absl::GetFlag(FLAGS_csv_confidence_column);
  options.min_confidence = static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_min_confidence)));
  options.min_prefix_v4 = absl::GetFlag(FLAGS_min_prefix_v4);
  options.min_prefix_v6 = absl::GetFlag(FLAGS_min_prefix_v6);
  if (absl::GetFlag(FLAGS_max_parsed_bytes) > 0) {
    options.max_parsed_bytes = absl::GetFlag(FLAGS_max_parsed_bytes);
  }
  options.now = absl::Now();
  absl::StatusOr<ParsedFeed> parsed = ParseFeed(*format, *content, options);
  if (!parsed.ok()) return Fail(absl::StrCat(path, ": ", parsed.status().message()));
  palisade::v1::PushFeedResponse summary;  // the same shape as a push's answer, minus the apply
  summary.set_accepted(static_cast<uint32_t>(parsed->indicators.size()));
  summary.set_rejected(static_cast<uint32_t>(parsed->rejected));
  summary.set_ignored(static_cast<uint32_t>(parsed->ignored));
  for (const FeedRejection& r : parsed->rejections) {
    auto* out = summary.add_rejections();
    out->set_line(r.line);
    out->set_text(r.text);
    out->set_reason(r.reason);
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(summary).c_str());
  } else {
    for (const auto& rej : summary.rejections()) {
      // A STIX rejection is numbered by object, not by line.
      std::printf(*format == palisade::v1::FEED_FORMAT_STIX ? "%s: object %u: %s: %s\n"
                                                            : "%s:%u: %s: %s\n",
                  Safe(path).c_str(), rej.line(), Safe(rej.reason()).c_str(),
                  Safe(rej.text()).c_str());
    }
    std::vector<Cidr> cidrs;
    for (const Indicator& i : parsed->indicators) cidrs.push_back(i.cidr);
    std::printf("%u indicators (%zu ranges once merged), %u rejected, %u ignored\n",
                summary.accepted(), MergeCidrs(cidrs).size(), summary.rejected(),
                summary.ignored());
  }
  return parsed->rejected > 0 ? 1 : 0;
}

// One human line per event: "#seq time kind rule correlation summary". The whole line is escaped:
// its fields come from log lines and batch sources an attacker may have written.
std::string HumanEvent(const palisade::v1::Event& e) {
  return Safe(absl::StrFormat("#%llu %s %-9s %-24s %-16s %s",
                         static_cast<unsigned long long>(e.sequence()),
                         absl::FormatTime("%H:%M:%S", FromProtoTime(e.time()), absl::UTCTimeZone()),
                         EventKindName(e.kind()), e.rule_id().empty() ? "-" : e.rule_id(),
                         e.correlation_id().empty() ? "-" : e.correlation_id(), EventSummary(e)));
}

int Watch() {
  palisade::v1::WatchRequest req;
  for (const std::string& k : absl::GetFlag(FLAGS_kinds)) {
    if (k == "detection") req.add_kinds(palisade::v1::EVENT_KIND_DETECTION);
    else if (k == "decision") req.add_kinds(palisade::v1::EVENT_KIND_DECISION);
    else if (k == "action") req.add_kinds(palisade::v1::EVENT_KIND_ACTION);
    else if (k == "alert") req.add_kinds(palisade::v1::EVENT_KIND_ALERT);
    else return Fail(absl::StrCat("--kinds: unknown kind \"", k,
                                  "\" (detection, decision, action, alert)"));
  }
  const std::string origin = absl::GetFlag(FLAGS_origin);
  if (origin == "rule") req.set_origin(palisade::v1::ORIGIN_RULE);
  else if (origin == "manual") req.set_origin(palisade::v1::ORIGIN_MANUAL);
  else if (origin == "feed") req.set_origin(palisade::v1::ORIGIN_FEED);
  else if (!origin.empty()) return Fail("--origin must be rule, manual or feed");
  req.set_rule_id(absl::GetFlag(FLAGS_rule));
  req.set_after_sequence(absl::GetFlag(FLAGS_after));
  req.set_stream(absl::GetFlag(FLAGS_stream));
  auto stub = palisade::v1::Events::NewStub(Channel());
  grpc::ClientContext ctx;  // no deadline: a watch follows until stopped
  Authorize(&ctx);
  std::unique_ptr<grpc::ClientReader<palisade::v1::Event>> reader = stub->Watch(&ctx, req);
  const int max = absl::GetFlag(FLAGS_count);
  const bool json = absl::GetFlag(FLAGS_json);
  int seen = 0;
  bool told_stream = false;
  palisade::v1::Event e;
  while (reader->Read(&e)) {
    if (!told_stream && !json) {
      // What a later `watch --after SEQ --stream ID` needs (JSON lines carry it in each event).
      std::fprintf(stderr, "stream %s\n", Safe(e.stream()).c_str());
      told_stream = true;
    }
    std::printf("%s\n", json ? Json(e).c_str() : HumanEvent(e).c_str());
    std::fflush(stdout);
    if (max > 0 && ++seen >= max) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (max > 0 && seen >= max) return 0;
  if (!s.ok()) return Fail(s, "watch");
  return 0;
}

// The credentials check, run here with the config's cloudflare section and token: what the token
// may do against what the actuators need. Exit 1 when an actuator could not run with it.
int CloudflareCheck() {
  if (absl::GetFlag(FLAGS_config).empty()) {
    return Fail("cloudflare check: --config (palisaded's config file) is required");
  }
  absl::StatusOr<palisade::v1::Config> config = LoadConfigFile(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return Fail(std::string(config.status().message()));
  const palisade::v1::CloudflareConfig& cf = config->cloudflare();
  if (cf.token_file().empty() && cf.token_env().empty()) {
    return Fail("cloudflare check: the config names no API token (cloudflare.token_file or "
                "token_env); the Global API Key has no permissions to check");
  }
  CredentialSource source;
  source.token_file = cf.token_file();
  source.token_env = cf.token_env();
  absl::StatusOr<Credentials> creds = LoadCredentials(source);
  if (!creds.ok()) return Fail(absl::StrCat("cloudflare check: ", creds.status().message()));
  const bool account_token = absl::StartsWith(creds->token.value(), "cfat_");
  ClientOptions options;
  options.base_url = cf.api_base();
  options.account_id = cf.account_id();
  options.zone_id = cf.zone_id();
  options.max_attempts = 3;
  CurlTransport transport;
  prometheus::Registry registry;
  CloudflareClient client(transport, RealClock::Get(), options, *std::move(creds), registry);
  // The rules say whether the token must read the audit logs (the cloudflare-audit pack).
  absl::StatusOr<std::shared_ptr<const RuleSet>> rules = LoadRules(*config);
  if (!rules.ok()) {
    return Fail(absl::StrCat("cloudflare check: the config's rules do not load (palisaded would "
                             "not start either): ",
                             rules.status().message()));
  }
  absl::StatusOr<CredentialReport> report = CheckCredentials(
      client, TokenNeedsFor(cf, ReadsAuditLogs(**rules)), absl::Now(), account_token);
  if (!report.ok()) return Fail(absl::StrCat("cloudflare check: ", report.status().message()));
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", report->ToJson().dump().c_str());
  } else {
    std::printf("%s", report->ToText().c_str());
  }
  for (const ActuatorState& a : report->actuators) {
    if (!a.enabled) return 1;
  }
  return 0;
}

// One roll of palisaded's own Cloudflare token now, by the running daemon (Admin.RotateToken):
// the token id, the expiry and the next scheduled roll; never the secret (it is only in the
// token file, which this command does not read).
int CloudflareRotate() {
  auto stub = palisade::v1::Admin::NewStub(Channel());
  palisade::v1::RotateTokenResponse resp;
  grpc::Status s = stub->RotateToken(Context().get(), {}, &resp);
  if (!s.ok()) return Fail(s, "cloudflare rotate");
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", Json(resp).c_str());
    return 0;
  }
  auto at = [](const google::protobuf::Timestamp& t) {
    return absl::FormatTime(absl::RFC3339_sec, FromProtoTime(t), absl::UTCTimeZone());
  };
  std::printf("rolled token %s at %s\n", Safe(resp.token_id()).c_str(),
              at(resp.rolled_at()).c_str());
  std::printf("expires:   %s%s\n", resp.has_expires() ? at(resp.expires()).c_str() : "never",
              resp.expires_read() ? "" : " (as known at start: the token may not read itself)");
  std::printf("next roll: %s\n", at(resp.next_roll()).c_str());
  return 0;
}

// Reads a token on standard input and prints the SHA-256 that api.clients wants.
int HashToken() {
  std::string token;
  std::getline(std::cin, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.size() < 32) return Fail("hash-token: a token should be at least 32 characters");
  std::printf("%s\n", Authorizer::HashToken(token).c_str());
  return 0;
}

int Usage() {
  std::cerr << absl::ProgramUsageMessage() << std::endl;
  return 2;
}

}  // namespace
}  // namespace palisade

int main(int argc, char** argv) {
  // tcmalloc's heap in 2 MiB-aligned regions taken in order (services/common/huge_pages.h): the
  // kernel backs them with huge pages where its policy says so, and a replay on two threads
  // faults them ahead. A build without tcmalloc (the sanitizers') has none, and needs none.
  palisade::BackHeapWithRegions().IgnoreError();
  // Abseil's deadlock detector (on in Debian's build of Abseil) costs several hundred
  // instructions per lock and unlock, on every line's path (the clock, the decision table). It
  // is a debugging aid: the tests keep it on, the binaries turn it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "palisadectl COMMAND [flags]\n"
      "  ship FILE... [--format F] [--source S] [--shipper_id ID] [--retime]\n"
      "  ship --follow FILE... --state_file S [--shipper_id ID] [--format F] [--source S]\n"
      "        [--verbose]   (tail -F to the server until SIGTERM; nothing counted twice)\n"
      "        (--source defaults to \"<shipper_id>:<absolute path>\", --shipper_id to the\n"
      "        host name: palisaded keeps each source's time, so hosts must not share one)\n"
      "  decisions list [--active] [--target T] [--rule R] [--page_size N] [--json]\n"
      "  decisions add ADDRESS|CIDR [--duration 1h] [--reason TEXT]\n"
      "  decisions delete ID\n"
      "  rules test PACK FILE [--format F] [--json] [--remote]\n"
      "        [--config C] [--time_zone Z]   (local: lines cut and times read as C's palisaded;\n"
      "        --remote: as the server's)\n"
      "  rules import-fail2ban FILTER.conf [--report] [--filter_params=mode=aggressive]\n"
      "        [--jail=jail.conf[,jail.local] [--jail_name=sshd]]   (or FILTER_DIR --report)\n"
      "  rules reload\n"
      "  replay FILE... [--format F] [--config C | --rules A,B | --rules_dir D] [--batch_lines N]\n"
      "        [--threads N] [--time_zone Z] [--source S] [--json]   (offline, event time, dry "
      "run)\n"
      "  actions release [--max N]   (let actions held by the blast-radius guard go out)\n"
      "  bouncers add NAME [--json]   (a CrowdSec bouncer for bouncer_api; prints its key once)\n"
      "  bouncers list [--json]\n"
      "  bouncers delete NAME\n"
      "  status [--json]\n"
      "  cluster status [--json]   (writer, live nodes, partition owners, decision log lag)\n"
      "  watch [--kinds detection,decision,action,alert] [--rule R] [--origin rule|manual|feed]\n"
      "        [--after SEQ [--stream ID]] [--count N] [--json]   (follow the event stream)\n"
      "  feeds list [--json]\n"
      "  feeds show NAME [--lookup IP] [--entries N] [--json]\n"
      "  feeds push NAME FILE [--format F] [--mode replace|add|remove] [--force] [--json]\n"
      "  feeds test FILE --format F [--csv_column C] [--csv_confidence_column C] "
      "[--min_confidence N] [--min_prefix_v4 N] [--min_prefix_v6 N]\n"
      "        [--max_parsed_bytes N]   (as palisaded would parse the file for that feed)\n"
      "  hash-token < TOKEN   (the token_sha256 for a client in the config's api.clients)\n"
      "  cloudflare check --config C [--json]   (the API token's permissions against what the\n"
      "        actuators need; exit 1 when one cannot run)\n"      "  cloudflare rotate [--json]   (the running palisaded rolls its API token now; prints\n"
      "        the token id, its expiry and the next roll, never the secret)\n"
      "Common: --server host:port (default 127.0.0.1:50051), --token_file F (or $PALISADE_TOKEN),\n"
      "        --tls_ca CA.pem [--tls_cert C.pem --tls_key K.pem]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  using palisade::Usage;
  if (args.empty()) return Usage();
  const std::string& cmd = args[0];
  if (cmd == "ship") return palisade::ShipFiles({args.begin() + 1, args.end()});
  if (cmd == "status" && args.size() == 1) return palisade::Status();
  if (cmd == "cluster" && args.size() == 2 && args[1] == "status") {
    return palisade::ClusterStatus();
  }
  if (cmd == "replay") return palisade::ReplayFiles({args.begin() + 1, args.end()});
  if (cmd == "decisions" && args.size() >= 2) {
    if (args[1] == "list" && args.size() == 2) return palisade::DecisionsList();
    if (args[1] == "add" && args.size() == 3) return palisade::DecisionsAdd(args[2]);
    if (args[1] == "delete" && args.size() == 3) return palisade::DecisionsDelete(args[2]);
  }
  if (cmd == "actions" && args.size() == 2 && args[1] == "release") {
    return palisade::ActionsRelease(absl::GetFlag(FLAGS_max));
  }
  if (cmd == "bouncers" && args.size() >= 2) {
    if (args[1] == "add" && args.size() == 3) return palisade::BouncersAdd(args[2]);
    if (args[1] == "list" && args.size() == 2) return palisade::BouncersList();
    if (args[1] == "delete" && args.size() == 3) return palisade::BouncersDelete(args[2]);
  }
  if (cmd == "watch" && args.size() == 1) return palisade::Watch();
  if (cmd == "hash-token" && args.size() == 1) return palisade::HashToken();
  if (cmd == "cloudflare" && args.size() == 2 && args[1] == "check") {
    return palisade::CloudflareCheck();
  }
  if (cmd == "cloudflare" && args.size() == 2 && args[1] == "rotate") {
    return palisade::CloudflareRotate();
  }
  if (cmd == "feeds" && args.size() >= 2) {
    if (args[1] == "list" && args.size() == 2) return palisade::FeedsList();
    if (args[1] == "show" && args.size() == 3) return palisade::FeedsShow(args[2]);
    if (args[1] == "push" && args.size() == 4) return palisade::FeedsPush(args[2], args[3]);
    if (args[1] == "test" && args.size() == 3) return palisade::FeedsTest(args[2]);
  }
  if (cmd == "rules" && args.size() >= 2) {
    if (args[1] == "test" && args.size() == 4) return palisade::RulesTest(args[2], args[3]);
    if (args[1] == "reload" && args.size() == 2) return palisade::RulesReload();
    if (args[1] == "import-fail2ban" && args.size() == 3) {
      return palisade::RulesImportFail2ban(args[2]);
    }
  }
  return Usage();
}
