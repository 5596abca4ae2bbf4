#include "services/cli/follow_shipper.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "services/common/fingerprint.h"
#include "services/formats/json_parser.h"
#include "services/inputs/file_follower.h"
#include "services/pipeline/pipeline.h"

namespace palisade {
namespace {

using palisade::v1::BatchAck;
using palisade::v1::FileCheckpoint;
using palisade::v1::LogBatch;

// What ShipDedup::Validate (services/server/ship_dedup.cc) takes in a batch's origin, repeated
// here since the shipper cannot depend on the server: a batch outside them is refused whenever
// it is sent, so the shipper must never build one.
constexpr size_t kMaxPathBytes = 1024;
// The first line's fingerprint covers at most this many bytes: a JSON record may be longer (up
// to max_record_bytes), and a client writes it (Caddy logs request headers).
constexpr size_t kMaxFingerprintBytes = size_t{1} << 20;

// A path or name for an error: escaped (it may not be UTF-8) and cut after 256 bytes.
std::string Shown(absl::string_view name) {
  if (name.size() <= 256) return absl::CHexEscape(name);
  return absl::StrCat(absl::CHexEscape(name.substr(0, 256)), "... (", name.size(), " bytes)");
}

// Refusals that sending the same batch again, or with the same token, cannot cure.
bool Permanent(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT ||
         code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED;
}

bool ValidShipperId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Whether `next` (the position after a line) is in the same file as `prev` (the position after
// the line before): same device and inode, not moved back (a copytruncate starts again at 0),
// and the same first bytes when both fingerprints cover as many.
bool SameFile(const FileCheckpoint& prev, const FileCheckpoint& next) {
  return prev.device() == next.device() && prev.inode() == next.inode() &&
         next.offset() >= prev.offset() &&
         (prev.fingerprint_bytes() != next.fingerprint_bytes() ||
          prev.fingerprint() == next.fingerprint());
}

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) return path;
  return absl::StrCat(cwd, "/", path);
}

// A batch written (or to be written) on the stream and not acked yet.
struct Pending {
  LogBatch batch;
  size_t file = 0;
  FollowPosition after;  // the file's position once this batch is acked
  bool sent_once = false;
};

struct Followed {
  std::string path;
  std::string source;  // its batches' LogBatch.source
  std::unique_ptr<FileFollower> follower;
  // A line taken from the follower that starts another file (a rotation or a truncation
  // between two lines of a batch): the first line of the next batch.
  // `cut`: the follower cut it at its cap (LogRecord.cut).
  struct Carried {
    std::string line;
    FileCheckpoint after;
    bool cut = false;
  };
  std::optional<Carried> carry;
  std::optional<FileCheckpoint> last;  // after the last line put in a batch
  // The current file's first line, once read (the server's way to tell files apart).
  std::string first_fp;
  uint32_t first_len = 0;
  // The follower found the checkpoint's file emptied or rewritten in place when it resumed:
  // its next line starts another file, whatever the inode says.
  bool resumed_anew = false;
  std::string last_error;
};

}  // namespace

absl::StatusOr<std::map<std::string, FollowPosition>> FollowShipper::ReadState(
    const std::string& path) {
  std::map<std::string, FollowPosition> files;
  std::ifstream in(path, std::ios::binary);
  if (!in) return files;  // first run
  std::stringstream content;
  content << in.rdbuf();
  nlohmann::json state = nlohmann::json::parse(content.str(), nullptr, /*allow_exceptions=*/false);
  if (state.is_discarded() || !state.is_object() || !state.contains("files") ||
      !state["files"].is_array()) {
    return absl::DataLossError(absl::StrCat(path, ": not a ship --follow state file"));
  }
  for (const nlohmann::json& f : state["files"]) {
    if (!f.is_object() || !f.value("path", nlohmann::json()).is_string() ||
        !f.value("offset", nlohmann::json()).is_number_unsigned()) {
      return absl::DataLossError(absl::StrCat(path, ": a file entry without path or offset"));
    }
    // The optional fields, checked before they are read: nlohmann's value() throws on a field
    // of another type, and a damaged state file must read as one (kDataLoss), not crash.
    bool ok = true;
    auto number = [&](const char* name, uint64_t max) -> uint64_t {
      if (!f.contains(name)) return 0;
      const nlohmann::json& v = f[name];
      if (!v.is_number_unsigned() || v.get<uint64_t>() > max) {
        ok = false;
        return 0;
      }
      return v.get<uint64_t>();
    };
    auto text = [&](const char* name) -> std::string {
      if (!f.contains(name)) return "";
      if (!f[name].is_string()) {
        ok = false;
        return "";
      }
      return f[name].get<std::string>();
    };
    FollowPosition p;
    FileCheckpoint& c = p.checkpoint;
    c.set_path(f["path"].get<std::string>());
    c.set_device(number("device", UINT64_MAX));
    c.set_inode(number("inode", UINT64_MAX));
    c.set_offset(f["offset"].get<uint64_t>());
    c.set_fingerprint(text("fingerprint"));
    c.set_fingerprint_bytes(static_cast<uint32_t>(number("fingerprint_bytes", UINT32_MAX)));
    p.first_line_fingerprint = text("first_line_fingerprint");
    p.first_line_bytes = static_cast<uint32_t>(number("first_line_bytes", UINT32_MAX));
    if (!ok) {
      return absl::DataLossError(
          absl::StrCat(path, ": the entry of ", c.path(), " has a field of the wrong type"));
    }
    files[c.path()] = std::move(p);
  }
  return files;
}

absl::Status FollowShipper::WriteState(const std::string& path, const std::string& shipper_id,
                                       const std::map<std::string, FollowPosition>& files) {
  nlohmann::json state;
  state["shipper_id"] = shipper_id;
  state["files"] = nlohmann::json::array();
  for (const auto& [p, position] : files) {
    const FileCheckpoint& c = position.checkpoint;
    state["files"].push_back({{"path", p},
                              {"device", c.device()},
                              {"inode", c.inode()},
                              {"offset", c.offset()},
                              {"fingerprint", c.fingerprint()},
                              {"fingerprint_bytes", c.fingerprint_bytes()},
                              {"first_line_fingerprint", position.first_line_fingerprint},
                              {"first_line_bytes", position.first_line_bytes}});
  }
  const std::string text = state.dump(1) + "\n";
  const std::string tmp = path + ".tmp";
  auto fail = [&](absl::string_view what) {
    return absl::FailedPreconditionError(
        absl::StrCat("state file ", path, ": ", what, ": ", std::strerror(errno)));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail("cannot create the temporary file");
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return fail("write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return fail("fsync");
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename");
  // The rename itself is durable once the directory is.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::StatusOr<FollowSummary> FollowShipper::Run(palisade::v1::Ingest::StubInterface& stub) {
  FollowOptions& o = options_;
  if (o.paths.empty()) return absl::InvalidArgumentError("ship --follow: no files given");
  if (o.state_file.empty()) {
    return absl::InvalidArgumentError(
        "ship --follow needs --state_file (where the acked positions are kept)");
  }
  if (o.shipper_id.empty()) o.shipper_id = DefaultShipperId();
  if (!ValidShipperId(o.shipper_id)) {
    return absl::InvalidArgumentError(
        "ship --follow: --shipper_id must be 1 to 128 characters of [A-Za-z0-9._:-]");
  }
  if (!IsValidUtf8(o.json_format)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ship --follow: --json_format ", Shown(o.json_format), " is not UTF-8"));
  }
  auto log = [&](const std::string& m) {
    if (o.log) o.log(m);
  };
  const size_t batch_lines = std::max<uint32_t>(1, o.batch_lines);
  const size_t window = std::max<uint32_t>(1, o.max_in_flight);

  std::map<std::string, FollowPosition> state;
  if (absl::StatusOr<std::map<std::string, FollowPosition>> read = ReadState(o.state_file);
      read.ok()) {
    state = *std::move(read);
  } else {
    // The server drops what it took already: starting over costs a resend, not a double count.
    log(absl::StrCat(read.status().message(), "; reading the files from their start"));
  }
  std::vector<Followed> files;
  std::map<std::string, FollowPosition> acked;  // what the state file says, for these paths
  FileFollowerOptions follower_options;
  follower_options.max_line_bytes = LineCapFor(o.format, o.max_line_bytes, o.max_record_bytes);
  // Lines are taken one at a time (to know where each ends): a small read buffer keeps the
  // follower's per-line bookkeeping cheap.
  follower_options.read_bytes = 16 * 1024;
  // A path named here is its user's choice: it may be a symlink they (or root) own.
  follower_options.follow_owned_symlink = true;
  std::set<std::string> seen;
  for (const std::string& raw : o.paths) {
    Followed f;
    f.path = Absolute(raw);
    if (!seen.insert(f.path).second) continue;  // named twice: followed once
    f.source = o.source.empty() ? DefaultSource(o.shipper_id, f.path) : o.source;
    // The server would refuse every batch of such a file (and used to be sent them forever).
    if (f.path.size() > kMaxPathBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("ship --follow: the path ", Shown(f.path), " is ", f.path.size(),
                       " bytes once absolute; the server takes at most ", kMaxPathBytes));
    }
    if (!IsValidUtf8(f.path)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ship --follow: the path ", Shown(f.path),
          " is not UTF-8, which the server requires (follow it through a symlink that is)"));
    }
    if (!IsValidUtf8(f.source)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ship --follow: --source ", Shown(f.source), " is not UTF-8"));
    }
    std::optional<FileCheckpoint> from;
    if (auto it = state.find(f.path); it != state.end()) {
      from = it->second.checkpoint;
      f.last = it->second.checkpoint;
      f.first_fp = it->second.first_line_fingerprint;
      f.first_len = it->second.first_line_bytes;
      acked[f.path] = it->second;
    }
    f.follower = std::make_unique<FileFollower>(f.path, follower_options, from);
    f.resumed_anew = from.has_value() && f.follower->stats().truncations > 0;
    files.push_back(std::move(f));
  }
  if (absl::Status s = WriteState(o.state_file, o.shipper_id, acked); !s.ok()) return s;

  FollowSummary summary;
  std::deque<Pending> unacked;  // oldest first; at most `window`
  size_t next_file = 0;

  // Up to batch_lines lines of one file into `out`; false when none of its lines are new.
  auto build = [&](Followed& f, size_t index, Pending* out) {
    LogBatch& b = out->batch;
    palisade::v1::BatchOrigin* origin = b.mutable_origin();
    std::optional<FileCheckpoint> first, last;
    uint64_t start = 0;
    // `fresh`: the line is the first one taken from another file than the line before.
    // `cut`: the follower cut the line at its cap (LogRecord.cut).
    auto add = [&](std::string line, const FileCheckpoint& after, bool fresh, bool cut) {
      const std::optional<FileCheckpoint>& prev = last ? last : f.last;
      if (fresh) {
        f.first_fp.clear();
        f.first_len = 0;
      }
      const uint64_t prev_end = fresh || !prev ? 0 : prev->offset();
      // The file's first line: from offset 0 to past it (a line carried over from the previous
      // file on rotation ends at 0 and is not it), fingerprinted over at most its first
      // kMaxFingerprintBytes: the server refuses a batch whose fingerprint covers more, so a
      // longer first record stalled the file (and every file behind it).
      if (f.first_fp.empty() && prev_end == 0 && after.offset() > 0) {
        const absl::string_view head = absl::string_view(line).substr(0, kMaxFingerprintBytes);
        f.first_fp = Fingerprint(head);
        f.first_len = static_cast<uint32_t>(head.size());
      }
      if (!first) {
        first = after;
        start = prev_end;
      }
      last = after;
      palisade::v1::LogRecord* record = b.add_records();
      record->set_line(std::move(line));
      // Its end is the cap's, not its writer's: the server must not take it for the line's
      // end, whatever its own cap (a cap at or above ours would see the line whole).
      if (cut) record->set_cut(true);
      origin->add_line_ends(after.offset());
    };
    if (f.carry) {
      add(std::move(f.carry->line), f.carry->after, /*fresh=*/true, f.carry->cut);
      f.carry.reset();
    }
    std::vector<std::string> lines;
    size_t bytes = 0;
    while (static_cast<size_t>(b.records_size()) < batch_lines && bytes < o.max_batch_bytes) {
      lines.clear();
      const FollowerStats& stats = f.follower->stats();
      const uint64_t switches = stats.rotations + stats.truncations;
      const uint64_t cut_before = stats.cut_lines;  // the follower counts a cut as it hands it
      absl::StatusOr<size_t> got = f.follower->Poll(1, &lines);
      if (!got.ok()) {
        if (std::string m(got.status().message()); m != f.last_error) {
          log(absl::StrCat("ship --follow: ", m, " (retried)"));
          f.last_error = m;
        }
        break;
      }
      f.last_error.clear();
      if (*got == 0) break;
      const FileCheckpoint after = f.follower->checkpoint();
      const std::optional<FileCheckpoint>& prev = last ? last : f.last;
      // Another file: its inode or its first bytes differ, it moved back, or the follower saw
      // a rotation or a truncation on the way.
      const bool fresh = !prev || !SameFile(*prev, after) ||
                         stats.rotations + stats.truncations != switches || f.resumed_anew;
      f.resumed_anew = false;
      const bool cut = stats.cut_lines != cut_before;
      if (fresh && last) {
        f.carry = Followed::Carried{std::move(lines[0]), after, cut};
        break;
      }
      bytes += lines[0].size();
      add(std::move(lines[0]), after, fresh, cut);
    }
    if (b.records_size() == 0) return false;
    summary.lines_read += static_cast<uint64_t>(b.records_size());
    (void)first;
    f.last = last;
    b.set_source(f.source);
    b.set_format(o.format);
    b.set_json_format(o.json_format);
    origin->set_shipper_id(o.shipper_id);
    origin->set_path(f.path);
    origin->set_device(last->device());
    origin->set_inode(last->inode());
    origin->set_fingerprint(f.first_fp);
    origin->set_fingerprint_bytes(f.first_len);
    origin->set_start_offset(start);
    origin->set_end_offset(last->offset());
    out->file = index;
    out->after.checkpoint = *last;
    out->after.checkpoint.set_path(f.path);
    out->after.first_line_fingerprint = f.first_fp;
    out->after.first_line_bytes = f.first_len;
    return true;
  };

  auto lag = [&] {
    uint64_t bytes = 0;
    for (const Followed& f : files) bytes += f.follower->lag_bytes();
    for (const Pending& p : unacked) {
      const uint64_t end = p.after.checkpoint.offset();
      bytes += end - std::min(end, p.batch.origin().start_offset());
    }
    return bytes;
  };
  absl::Time next_status = absl::Now() + o.status_every;
  auto status_line = [&](bool force) {
    if (!o.verbose || (!force && absl::Now() < next_status)) return;
    next_status = absl::Now() + o.status_every;
    log(absl::StrCat("ship --follow: ", summary.lines_acked, " lines acked (",
                     summary.duplicates, " already taken), ", unacked.size(),
                     " batch(es) in flight, lag ", lag(), " bytes, ", summary.reconnects,
                     " reconnect(s)"));
  };

  // Acks taken since the state file was last written, and when that was.
  bool state_dirty = false;
  absl::Time state_written = absl::Now();
  auto write_state = [&](bool force) {
    if (!state_dirty) return;
    if (!force && !unacked.empty() && absl::Now() - state_written < o.state_interval) return;
    if (absl::Status s = WriteState(o.state_file, o.shipper_id, acked); !s.ok()) {
      log(std::string(s.message()));  // a restart would resend more; the server drops it
      return;
    }
    state_dirty = false;
    state_written = absl::Now();
  };

  absl::Duration backoff = o.backoff_min;
  while (!stop_.HasBeenNotified()) {
    grpc::ClientContext context;
    if (!o.bearer_token.empty()) {
      context.AddMetadata("authorization", "Bearer " + o.bearer_token);
    }
    std::unique_ptr<grpc::ClientReaderWriterInterface<LogBatch, BatchAck>> stream =
        stub.Ship(&context);
    absl::Mutex mu;
    std::deque<BatchAck> acks;
    bool reader_done = false;
    std::thread reader([&] {
      BatchAck ack;
      while (stream->Read(&ack)) {
        absl::MutexLock lock(&mu);
        acks.push_back(ack);
      }
      absl::MutexLock lock(&mu);
      reader_done = true;
    });

    size_t sent = 0;    // unacked[0, sent) are written on this stream
    uint64_t sequence = 0;
    bool broken = false;
    bool server_ended = false;  // the reader saw the call end: Finish() holds the server's status
    bool acked_any = false;
    // Takes the acks read so far, in order; the state file follows them.
    auto take_acks = [&] {
      std::deque<BatchAck> got;
      {
        absl::MutexLock lock(&mu);
        got.swap(acks);
      }
      bool moved = false;
      for (const BatchAck& ack : got) {
        if (sent == 0 || ack.sequence() != unacked.front().batch.sequence()) {
          log(absl::StrCat("ship --follow: ack for batch ", ack.sequence(),
                           " arrived out of order; reconnecting"));
          broken = true;
          break;
        }
        Pending& p = unacked.front();
        const uint64_t n = static_cast<uint64_t>(p.batch.records_size());
        const uint64_t counted = uint64_t{ack.accepted()} + ack.malformed();
        summary.lines_acked += n;
        summary.accepted += ack.accepted();
        summary.malformed += ack.malformed();
        summary.detections += ack.detections();
        summary.duplicates += n > counted ? n - counted : 0;
        ++summary.batches_acked;
        acked[files[p.file].path] = p.after;
        unacked.pop_front();
        --sent;
        moved = true;
      }
      if (moved) {
        acked_any = true;
        state_dirty = true;
      }
      write_state(/*force=*/false);
    };

    absl::Time drain_deadline = absl::InfiniteFuture();
    bool clean = false;
    while (true) {
      take_acks();
      bool done;
      {
        absl::MutexLock lock(&mu);
        done = reader_done;
      }
      server_ended = done;
      if (broken || done) break;
      if (stop_.HasBeenNotified()) {
        if (drain_deadline == absl::InfiniteFuture()) drain_deadline = absl::Now() + o.drain_timeout;
        if (sent == 0) {
          clean = true;
          break;
        }
        if (absl::Now() >= drain_deadline) break;
      } else if (sent < unacked.size()) {
        Pending& p = unacked[sent];
        p.batch.set_sequence(++sequence);
        if (p.sent_once) ++summary.resent_batches;
        p.sent_once = true;
        if (!stream->Write(p.batch)) {
          // The call is over (the server ended it, a refusal of an earlier batch perhaps, or
          // the connection went): Finish() says which, unless it is cancelled now.
          server_ended = true;
          broken = true;
          break;
        }
        ++sent;
        continue;
      } else if (unacked.size() < window) {
        bool built = false;
        for (size_t k = 0; k < files.size() && !built; ++k) {
          const size_t i = (next_file + k) % files.size();
          Pending p;
          if (build(files[i], i, &p)) {
            unacked.push_back(std::move(p));
            next_file = (i + 1) % files.size();
            built = true;
          }
        }
        if (built) continue;
      }
      status_line(false);
      absl::MutexLock lock(&mu);
      auto woken = [&] { return !acks.empty() || reader_done; };
      mu.AwaitWithTimeout(absl::Condition(&woken), o.poll_interval);
    }
    if (clean) {
      stream->WritesDone();  // every batch acked: the server ends the call
    } else if (!server_ended) {
      // Not once the server ended the call: Finish() would report the cancel (CANCELLED)
      // instead of the server's status, which tells a refusal for good from a dropped stream.
      context.TryCancel();
    }
    reader.join();
    take_acks();  // those read before the stream ended
    grpc::Status status = stream->Finish();
    write_state(/*force=*/true);
    if (clean) break;
    if (stop_.HasBeenNotified()) break;
    if (Permanent(status.error_code())) {
      // Sent again, the same batch (first in line, ahead of every file's) or the same token
      // would be refused again: the shipper would stall for good. The state file keeps what
      // was acked, so a restart once the cause is fixed loses nothing.
      const std::string code =
          absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
      std::string what = "the stream";
      if (!unacked.empty()) {
        const Pending& p = unacked.front();
        what = absl::StrCat("the batch of ", Shown(files[p.file].path), " (bytes ",
                            p.batch.origin().start_offset(), " to ",
                            p.batch.origin().end_offset(), ")");
      }
      const bool auth = status.error_code() != grpc::StatusCode::INVALID_ARGUMENT;
      return absl::Status(
          static_cast<absl::StatusCode>(status.error_code()),
          absl::StrCat("ship --follow: the server refused ", what, " for good (", code, ": ",
                       status.error_message(), ")",
                       auth ? "; check the token and that its role may ingest" : "",
                       "; not retried, the state file keeps the acked positions"));
    }
    ++summary.reconnects;
    if (acked_any) backoff = o.backoff_min;
    log(absl::StrCat("ship --follow: the stream ended (",
                     status.ok() ? "ok" : status.error_message(), ", code ",
                     static_cast<int>(status.error_code()), "); ", unacked.size(),
                     " batch(es) to send again, reconnecting in ", absl::FormatDuration(backoff)));
    stop_.WaitForNotificationWithTimeout(backoff);
    backoff = std::min(backoff * 2, o.backoff_max);
  }
  state_dirty = true;  // written on the way out whatever happened
  write_state(/*force=*/true);
  summary.lag_bytes = lag();
  for (const Followed& f : files) {
    summary.rotations += f.follower->stats().rotations;
    summary.truncations += f.follower->stats().truncations;
  }
  status_line(true);
  return summary;
}

}  // namespace palisade
