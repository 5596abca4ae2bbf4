#include "services/inputs/file_inputs.h"

#include <fnmatch.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "services/formats/json_parser.h"
#include "services/formats/line_parser.h"

namespace palisade {
namespace {

bool IsGlob(const std::string& path) { return path.find_first_of("*?[") != std::string::npos; }

bool Compressed(const std::string& path) {
  for (const char* ext : {".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z"}) {
    if (absl::EndsWith(path, ext)) return true;
  }
  return false;
}

// A batch ends once its lines hold this many bytes (or batch_lines lines).
constexpr size_t kBatchBytes = 1 << 20;

// Whether `path` is a rotated copy of `base` as logrotate names them: base.N, base-YYYYMMDD
// (dateext; up to ten digits with an hour). Left out by name alone, always: no writer logs live
// under such a name beside its base. Wider names (FileFollower::RotatedName: base.2026-12-07,
// base-1) are also live logs of their own (rotatelogs, rsyslog dynafiles, per-instance logs).
bool RotatedCopyOf(absl::string_view path, absl::string_view base) {
  if (path.size() <= base.size() + 1 || !absl::StartsWith(path, base)) return false;
  const absl::string_view suffix = path.substr(base.size() + 1);
  const char sep = path[base.size()];
  if (sep != '.' && sep != '-') return false;
  if (sep == '-' && (suffix.size() < 8 || suffix.size() > 10)) return false;
  return std::all_of(suffix.begin(), suffix.end(), [](char c) { return absl::ascii_isdigit(c); });
}

// Whether `path` is one of the input's paths as it is, not a glob's match.
bool Named(const palisade::v1::FileInput& config, const std::string& path) {
  for (const std::string& p : config.paths()) {
    if (p == path) return true;
  }
  return false;
}

// Whether a symbolic link may be followed: root's or the daemon's user's, as a configured path's
// (FileFollowerOptions::follow_owned_symlink). Another user's could lead to any file the daemon
// may read (its API token) and have it read as log lines.
bool TrustedLink(const struct stat& st) { return st.st_uid == 0 || st.st_uid == ::geteuid(); }

struct Match {
  std::string path;
  struct stat st;     // through a link followed
  bool link = false;  // a symbolic link of root's or the daemon's user, followed
  // A symbolic link of another user's, or under one: skipped.
  bool foreign_link = false;
};

// What `pattern` (absolute) matches: the files, and what is neither a file nor a directory (a
// FIFO, a socket: the caller says it skips them). Directories, compressed files and links that
// lead nowhere are left out. A link is followed only when root or the daemon's user owns it
// (Kubernetes' /var/log/containers/*.log, rotatelogs -L's live name), at the last part and at
// each directory part from the first a wildcard matched on (glob(3) goes through them all: with
// /var/www/*/storage/logs/*, a tenant's storage/logs -> /etc/palisade); the parts above are
// the configuration's. Whatever another user's link leads to is marked foreign_link.
// The directory before `pattern`'s first part with a wildcard: the configuration's, trusted;
// below it a glob's follower opens each directory without following another user's link
// (FileFollowerOptions::trusted_dir).
std::string LiteralDir(const std::string& pattern) {
  std::string dir;
  for (absl::string_view part : absl::StrSplit(pattern, '/', absl::SkipEmpty())) {
    if (IsGlob(std::string(part))) break;
    absl::StrAppend(&dir, "/", part);
  }
  return dir.empty() ? "/" : dir;
}

std::vector<Match> Glob(const std::string& pattern) {
  const std::vector<absl::string_view> pattern_parts =
      absl::StrSplit(pattern, '/', absl::SkipEmpty());
  size_t wild = 0;
  while (wild < pattern_parts.size() && !IsGlob(std::string(pattern_parts[wild]))) ++wild;
  std::vector<Match> out;
  glob_t g;
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      Match m;
      m.path = g.gl_pathv[i];
      if (Compressed(m.path) || ::lstat(m.path.c_str(), &m.st) != 0 || S_ISDIR(m.st.st_mode)) {
        continue;
      }
      const std::vector<absl::string_view> parts =
          absl::StrSplit(m.path, '/', absl::SkipEmpty());
      std::string dir;
      for (size_t part = 0; part + 1 < parts.size() && !m.foreign_link; ++part) {
        absl::StrAppend(&dir, "/", parts[part]);
        struct stat st;
        m.foreign_link = part >= wild && ::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode) &&
                         !TrustedLink(st);
      }
      if (!m.foreign_link && S_ISLNK(m.st.st_mode)) {
        m.foreign_link = !TrustedLink(m.st);
        if (!m.foreign_link) {
          // Its chain of links is judged again as the follower opens it (O_PATH, each link's
          // owner): a link put between this look and that open is not followed.
          if (::stat(m.path.c_str(), &m.st) != 0 || S_ISDIR(m.st.st_mode)) continue;
          m.link = true;
        }
      }
      out.push_back(std::move(m));
    }
  }
  ::globfree(&g);
  return out;
}

// The paths `path` may be a rotated name of (RotatedCopyOf, FileFollower::RotatedName): `path`
// less a suffix of a separator, a digit and more digits and separators. Found from the name
// rather than by trying every path the globs match against every other (quadratic: 60,000
// files in a globbed directory were 3.6e9 comparisons a round).
std::vector<std::string> RotatedBases(absl::string_view path) {
  std::vector<std::string> out;
  auto separator = [](char c) { return c == '.' || c == '-' || c == '_'; };
  for (size_t i = path.size();
       i > 0 && (absl::ascii_isdigit(path[i - 1]) || separator(path[i - 1])); --i) {
    if (separator(path[i - 1]) && i < path.size() && absl::ascii_isdigit(path[i])) {
      out.emplace_back(path.substr(0, i - 1));
    }
  }
  return out;
}

// Files an input follows at most when its config says none (FileInput.max_files).
constexpr uint32_t kDefaultMaxFiles = 1024;
// And at most, all inputs together (FileInputs::Create refuses more): each file followed holds
// a descriptor of the unit's LimitNOFILE (65,536), which gRPC, Logpush and snapshot writes share.
constexpr uint32_t kMaxMaxFiles = 16384;

size_t MaxFiles(const palisade::v1::FileInput& f) {
  return f.max_files() > 0 ? f.max_files() : kDefaultMaxFiles;
}

// The files an input may follow at once, counted against kMaxMaxFiles for all inputs together:
// its named paths (always followed, one each); with a glob, max_files (its named paths among
// them) or its named paths when more. An input of named paths only follows no more than those:
// counted at the 1,024 default, 17 inputs of one log each were refused.
size_t Places(const palisade::v1::FileInput& f) {
  size_t named = 0;
  bool glob = false;
  for (const std::string& p : f.paths()) {
    if (IsGlob(p)) {
      glob = true;
    } else {
      ++named;
    }
  }
  return glob ? std::max(MaxFiles(f), named) : named;
}

}  // namespace

bool ValidInputName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

LineSink PipelineLineSink(Pipeline& pipeline) {
  LineSink sink;
  sink.prematch = [&pipeline](LineBatch* batch) -> std::shared_ptr<const void> {
    // Held from before Prematch: while it is alive no other rule set can have its address, so
    // the pointer Prematch keeps says whether it matched with these rules.
    std::shared_ptr<const RuleSet> rules = pipeline.rules();
    pipeline.Prematch(batch);
    if (batch->prematched_with != rules.get()) batch->prematched_with = nullptr;
    return rules;
  };
  sink.process = [&pipeline](const LineBatch& batch) {
    return pipeline.ProcessLines(batch).status();
  };
  return sink;
}

absl::StatusOr<std::unique_ptr<FileInputs>> FileInputs::Create(
    const palisade::v1::InputsConfig& config, FileInputsOptions options, BatchSink sink,
    prometheus::Registry& registry) {
  auto batch = std::make_shared<palisade::v1::LogBatch>();
  LineSink lines;
  lines.process = [sink = std::move(sink), batch](const LineBatch& b) {
    // Cleared records are kept by the repeated field and handed out again by Add().
    batch->mutable_records()->Clear();
    batch->set_source(b.source);
    batch->set_format(b.format);
    batch->set_json_format(b.json_format);
    for (absl::string_view line : b.lines) batch->add_records()->set_line(line.data(), line.size());
    return sink(*batch);
  };
  return Create(config, std::move(options), std::move(lines), registry);
}

absl::StatusOr<std::unique_ptr<FileInputs>> FileInputs::Create(
    const palisade::v1::InputsConfig& config, FileInputsOptions options, LineSink sink,
    prometheus::Registry& registry) {
  std::unique_ptr<FileInputs> inputs(new FileInputs(std::move(options), std::move(sink)));
  if (inputs->options_.batch_lines == 0) inputs->options_.batch_lines = 1000;
  auto& lines = prometheus::BuildCounter()
                    .Name("palisade_input_lines_total")
                    .Help("Lines read from a file input and taken by the pipeline.")
                    .Register(registry);
  auto& bytes = prometheus::BuildCounter()
                    .Name("palisade_input_bytes_total")
                    .Help("Bytes read from a file input.")
                    .Register(registry);
  auto& rotations = prometheus::BuildCounter()
                        .Name("palisade_input_rotations_total")
                        .Help("Rotations (rename + create) seen on a file input.")
                        .Register(registry);
  auto& truncations = prometheus::BuildCounter()
                          .Name("palisade_input_truncations_total")
                          .Help("Truncations (copytruncate, or a file replaced) seen on a file "
                                "input: read again from the start.")
                          .Register(registry);
  auto& errors = prometheus::BuildCounter()
                     .Name("palisade_input_errors_total")
                     .Help("Errors reading a file input (logged, retried every poll).")
                     .Register(registry);
  // Not among the errors: any client can write a long line (an 8 KiB request line with a long
  // Referer and User-Agent), and the errors are what says an input is broken.
  auto& cut = prometheus::BuildCounter()
                  .Name("palisade_input_lines_cut_total")
                  .Help("Lines of a file input longer than its cap (engine.max_line_bytes; "
                        "JSON: max_record_bytes), cut there and their rest dropped.")
                  .Register(registry);
  auto& not_followed =
      prometheus::BuildGauge()
          .Name("palisade_input_files_not_followed")
          .Help("Files a file input's globs match and it does not follow, past its max_files "
                "(inputs.files.max_files; copies told by their content, app.log.old, which "
                "would be left out anyway, may be among them).")
          .Register(registry);
  auto& lag = prometheus::BuildGauge()
                  .Name("palisade_input_lag_bytes")
                  .Help("Bytes written to a file input's files and not yet taken.")
                  .Register(registry);
  std::set<std::string> names;
  size_t max_files = 0;
  absl::MutexLock lock(&inputs->mu_);
  for (int i = 0; i < config.files_size(); ++i) {
    const palisade::v1::FileInput& f = config.files(i);
    const std::string where = absl::StrCat("inputs.files[", i, "] (\"", f.name(), "\"): ");
    if (!ValidInputName(f.name())) {
      return absl::InvalidArgumentError(where + "name must match [a-z0-9_-]{1,64}");
    }
    if (!names.insert(f.name()).second) {
      return absl::InvalidArgumentError(where + "name is used twice");
    }
    absl::StatusOr<palisade::v1::LogFormat> format = ParseFormatName(f.format());
    if (!format.ok()) return absl::InvalidArgumentError(where + std::string(format.status().message()));
    if (*format == palisade::v1::LOG_FORMAT_DECISIONS) {
      return absl::InvalidArgumentError(where + "the decisions stream is Palisade's own, not a log");
    }
    if (f.paths().empty()) return absl::InvalidArgumentError(where + "no paths");
    if (f.max_files() > kMaxMaxFiles) {
      // Each file followed holds a descriptor, from the unit's LimitNOFILE (65,536) that gRPC,
      // Logpush and snapshot writes share: a cap near it would not keep theirs.
      return absl::InvalidArgumentError(absl::StrCat(where, "max_files ", f.max_files(),
                                                     " is over ", kMaxMaxFiles));
    }
    max_files += Places(f);
    if (max_files > kMaxMaxFiles) {
      // Four inputs of 16,384 would take every descriptor: bounded together too.
      return absl::InvalidArgumentError(absl::StrCat(
          where, "the file inputs' max_files (1,024 where not set; an input without a glob "
          "counts its paths) add up to ", max_files, " with this one's, over ", kMaxMaxFiles));
    }
    for (const std::string& path : f.paths()) {
      if (path.empty() || path[0] != '/') {
        return absl::InvalidArgumentError(where + "path \"" + path + "\" must be absolute");
      }
      if (IsGlob(path)) continue;
      // A file that is there but cannot be read is a mistake to say at once; one that is not
      // there yet is waited for. A FIFO (or a socket, a device, a directory) has no offsets to
      // follow, and opening a FIFO waits for a writer: refused.
      struct stat st;
      if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        return absl::InvalidArgumentError(absl::StrCat(where, path, ": not a regular file"));
      }
      if (::access(path.c_str(), F_OK) == 0 && ::access(path.c_str(), R_OK) != 0) {
        return absl::PermissionDeniedError(
            absl::StrCat(where, path, ": ", std::strerror(errno)));
      }
    }
    Input input;
    input.config = f;
    if (input.config.source().empty()) input.config.set_source(f.name());
    input.format = *format;
    input.lines = &lines.Add({{"input", f.name()}});
    input.bytes = &bytes.Add({{"input", f.name()}});
    input.rotations = &rotations.Add({{"input", f.name()}});
    input.truncations = &truncations.Add({{"input", f.name()}});
    input.errors = &errors.Add({{"input", f.name()}});
    input.cut = &cut.Add({{"input", f.name()}});
    input.lag = &lag.Add({{"input", f.name()}});
    input.not_followed = &not_followed.Add({{"input", f.name()}});
    for (const palisade::v1::FileCheckpoint& c : inputs->options_.checkpoints) {
      if (c.input() == f.name()) input.restored[c.path()] = c;
    }
    inputs->inputs_.push_back(std::move(input));
  }
  inputs->options_.checkpoints.clear();  // each input holds its own
  for (Input& input : inputs->inputs_) inputs->DiscoverLocked(input);
  uint32_t threads = inputs->options_.threads;
  if (threads == 0) threads = std::thread::hardware_concurrency() > 1 ? 2 : 1;
  threads = std::min<uint32_t>(threads, 4);
  if (!inputs->sink_.prematch) threads = 1;
  prometheus::BuildGauge()
      .Name("palisade_file_input_threads")
      .Help("Threads the file inputs' rounds run on (inputs.threads): one decides in file order, "
            "the others read ahead and prematch.")
      .Register(registry)
      .Add({})
      .Set(threads);
  if (threads > 1) {
    // Two batches in flight per thread: one being read or prematched, one waiting for it.
    inputs->depth_ = 2 * threads;
    for (uint32_t t = 1; t < threads; ++t) {
      inputs->workers_.emplace_back([raw = inputs.get()] { raw->Work(); });
    }
  }
  return inputs;
}

FileInputs::~FileInputs() {
  Stop();
  {
    absl::MutexLock lock(&work_mu_);
    stop_work_ = true;
  }
  for (std::thread& w : workers_) w.join();
}

void FileInputs::Log(const std::string& message) const {
  if (options_.log) options_.log(message);
}

void FileInputs::DiscoverLocked(Input& input) {
  std::vector<std::string> paths;
  std::map<std::string, FileKey> globbed;  // the regular files the globs match
  std::map<std::string, uint64_t> sizes;   // and their sizes
  std::map<std::string, int64_t> written;  // and when each was last written (ns)
  std::set<std::string> linked;  // the matches that are links of root's or the daemon's user
  std::map<std::string, std::string> trusted_dir;  // each match's glob's literal directory
  // And what they match that is not read, and whether that is for another user's link.
  std::map<std::string, bool> not_regular;
  for (const std::string& p : input.config.paths()) {
    if (IsGlob(p)) {
      for (Match& m : Glob(p)) {
        if (!m.foreign_link && S_ISREG(m.st.st_mode)) {
          globbed[m.path] = {m.st.st_dev, m.st.st_ino};
          sizes[m.path] = static_cast<uint64_t>(m.st.st_size);
          written[m.path] = int64_t{m.st.st_mtim.tv_sec} * 1000000000 + m.st.st_mtim.tv_nsec;
          if (m.link) linked.insert(m.path);
          trusted_dir.emplace(m.path, LiteralDir(p));
          paths.push_back(std::move(m.path));
        } else {
          not_regular[std::move(m.path)] = m.foreign_link;
        }
      }
    } else {
      paths.push_back(p);
    }
  }
  // A FIFO or a socket a glob matches has no offsets to follow (and opening a FIFO waits for a
  // writer), another user's link may lead to a secret (Glob): skipped, said once (and counted
  // once as an error) while the glob matches it.
  for (const auto& [path, link] : not_regular) {
    if (!input.skipped.insert(path).second) continue;
    input.errors->Increment();
    Log(absl::StrCat("input ", input.config.name(), ": ", path,
                     link ? ": a symbolic link not owned by root or the daemon's user, or under "
                            "one, skipped (its owner could point it at any file the daemon may "
                            "read)"
                          : ": not a regular file, skipped"));
  }
  for (auto it = input.skipped.begin(); it != input.skipped.end();) {
    it = not_regular.count(*it) > 0 ? std::next(it) : input.skipped.erase(it);
  }
  // A glob's match followed and now another user's link, or under one (its directory swapped
  // for a link): its follower is dropped (it opens nothing through the link: trusted_dir; kept,
  // it counted an error each poll), once what it read was taken.
  for (auto it = input.files.begin(); it != input.files.end();) {
    auto bad = not_regular.find(it->first);
    if (bad == not_regular.end() || !bad->second || Named(input.config, it->first) ||
        !it->second.ahead.empty()) {
      ++it;
      continue;
    }
    input.published.erase(it->first);
    it = input.files.erase(it);
  }
  // The files the followers have open, and those they read to their end across a rotation.
  std::set<FileKey> open;
  for (auto& [path, file] : input.files) {
    for (palisade::v1::FileCheckpoint& c : file.follower->TakeLetGo()) {
      input.known[{c.device(), c.inode()}] = std::move(c);
    }
    palisade::v1::FileCheckpoint c = file.follower->checkpoint();
    if (c.inode() == 0) continue;
    open.insert({c.device(), c.inode()});
    input.known[{c.device(), c.inode()}] = std::move(c);
  }
  // A glob match that is one of them under another name (a rotated copy: app.log.1,
  // app.log-2024-12-05, app.log.2024-12-05) is left out: the follower reads the file across its
  // rotation, and the copy read as a new file would count its lines again. Its name says so
  // (RotatedCopyOf: PATH.N, PATH-YYYYMMDD, without a look at the file), or its inode and first
  // bytes do (app.log.old). Any name the follower reads on through (FileFollower::RotatedName:
  // a copy under `-%Y%m%d-%s` it drains, or made while it drains one) is left out by name only
  // while that follower reads a file other than its path's (reading_rotated); after, its
  // let-go checkpoint tells the file by inode. Always left out, such names hid live logs of
  // their own (access.log.2026-12-07 of rotatelogs beside a stale access.log, app.log-1).
  // A copy of another inode (copytruncate's) is told by its first bytes (below): `*from` is
  // then where to read it on from, when it holds more than was read.
  const std::set<std::string> path_set(paths.begin(), paths.end());
  // Told by its name alone (cheap: no file looked at).
  auto rotated_by_name = [&](const std::string& path) {
    if (Named(input.config, path)) return false;
    for (const std::string& base : RotatedBases(path)) {
      if (path_set.count(base) > 0 && RotatedCopyOf(path, base)) return true;
      auto file = input.files.find(base);
      if (file != input.files.end() &&
          (RotatedCopyOf(path, base) ||
           (file->second.follower->reading_rotated() && FileFollower::RotatedName(path, base)))) {
        return true;
      }
    }
    return false;
  };
  auto rotated_copy = [&](const std::string& path,
                          std::optional<palisade::v1::FileCheckpoint>* from) {
    if (Named(input.config, path)) return false;
    if (rotated_by_name(path)) return true;
    auto match = globbed.find(path);
    if (match == globbed.end()) return false;
    if (auto copy = input.copies.find(path);
        copy != input.copies.end() &&
        FileKey{copy->second.device(), copy->second.inode()} == match->second) {
      return true;  // seen to be that file (or a copy of one) before: not read again
    }
    auto known = input.known.find(match->second);
    if (known != input.known.end() && FileFollower::IsFileOf(path, known->second)) {
      input.copies[path] = known->second;
      return true;
    }
    // The file a follower holds or reads next, told by its identity, not its name: one started
    // this round (a restart) is not in `known` yet, nor are the files rotated after its
    // position's that it queued (PATH.2024-12-05). Read as new files too, their lines were
    // counted twice. Not remembered: judged again each round (let go of, a file is in `known`).
    for (const auto& [other, file] : input.files) {
      const palisade::v1::FileCheckpoint c = file.follower->checkpoint();
      if (c.inode() != 0 && FileKey{c.device(), c.inode()} == match->second &&
          FileFollower::IsFileOf(path, c)) {
        return true;
      }
      for (const palisade::v1::FileCheckpoint& q : file.follower->queued()) {
        if (FileKey{q.device(), q.inode()} == match->second) return true;
      }
    }
    // The copy of a file found truncated: read on from where its follower stood then (lines
    // written between its last read and the copy are in the copy only), or left out when it
    // holds no more than that.
    for (auto t = input.truncated.begin(); t != input.truncated.end(); ++t) {
      if (FileKey{t->device(), t->inode()} == match->second || !FileFollower::IsCopyOf(path, *t)) {
        continue;
      }
      if (sizes[path] <= t->offset()) {
        palisade::v1::FileCheckpoint copy = *t;  // its first bytes are the file's
        copy.set_device(match->second.first);
        copy.set_inode(match->second.second);
        input.copies[path] = std::move(copy);
        return true;
      }
      palisade::v1::FileCheckpoint c = std::move(*t);
      input.truncated.erase(t);
      c.set_path(path);
      c.set_device(match->second.first);
      c.set_inode(match->second.second);
      *from = std::move(c);
      return false;
    }
    // The copy of a file open whose follower has not found it truncated yet (copied and
    // truncated since its last poll; or a copy only): left out this round, and not remembered:
    // judged again each round, so a new file that only begins as a young one does (a date)
    // is followed once that one has grown past what they share.
    for (const auto& [other, file] : input.files) {
      const palisade::v1::FileCheckpoint c = file.follower->checkpoint();
      if (c.inode() != 0 && FileKey{c.device(), c.inode()} != match->second &&
          FileFollower::IsCopyOf(path, c)) {
        return true;
      }
    }
    return false;
  };
  // A restored position whose file is neither at its path nor at PATH.1 but under another name
  // the glob matches (rotated while the daemon was down to app.log.old): read on from it there,
  // rather than the copy from its start as a new file. Not under a rotated name of the path
  // (FileFollower::RotatedName: PATH.N, PATH-2024-12-05): the follower of the path resumes
  // there, and goes on through the files rotated after it, while the glob leaves them out
  // (reading_rotated; rotated twice: the middle one is left out too).
  for (auto it = input.restored.begin(); it != input.restored.end();) {
    const palisade::v1::FileCheckpoint& c = it->second;
    std::string moved_to;
    for (const auto& [path, key] : globbed) {
      if (key == FileKey{c.device(), c.inode()} && path != c.path() &&
          !FileFollower::RotatedName(path, c.path()) && input.files.count(path) == 0 &&
          input.restored.count(path) == 0) {
        moved_to = path;
        break;
      }
    }
    // Only looked at when a match has its inode (rare): a hard link left at its path or PATH.1
    // is resumed from there as before.
    if (moved_to.empty() || FileFollower::IsFileOf(c.path(), c) ||
        FileFollower::IsFileOf(c.path() + ".1", c) || !FileFollower::IsFileOf(moved_to, c)) {
      ++it;
      continue;
    }
    palisade::v1::FileCheckpoint moved = std::move(it->second);
    moved.set_path(moved_to);
    it = input.restored.erase(it);
    input.restored[moved_to] = std::move(moved);
  }
  auto follow = [&](const std::string& path, std::optional<palisade::v1::FileCheckpoint> from) {
    FileFollowerOptions follower;
    follower.max_batch_bytes = kBatchBytes;
    // A configured path, or a glob's match, may be a link of root's or the daemon's user.
    follower.follow_owned_symlink = Named(input.config, path) || linked.count(path) > 0;
    if (auto dir = trusted_dir.find(path); dir != trusted_dir.end()) {
      follower.trusted_dir = dir->second;
    } else if (!Named(input.config, path)) {
      // A glob's file not matched now (a restored position whose file the glob matches only
      // under a rotated name, its path not created again yet): the first glob whose pattern
      // takes the path gives the directory. Without it the path, once there, was opened through
      // any link a tenant put in place of a directory below the glob's literal part.
      for (const std::string& p : input.config.paths()) {
        if (IsGlob(p) && ::fnmatch(p.c_str(), path.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0) {
          follower.trusted_dir = LiteralDir(p);
          break;
        }
      }
    }
    // One byte past the pipeline's cap: a line cut here still reaches the pipeline longer than
    // its cap, so the pipeline cuts it again, flags it (ParsedLine::cut: its end is not its
    // writer's, no rule may take a key pinned to it) and counts it. Cut at the cap exactly, it
    // looked whole there, and a client's ~16 KiB user name could end in a forged key.
    follower.max_line_bytes =
        LineCapFor(input.format, options_.max_line_bytes, options_.max_record_bytes) + 1;
    // A file another follower of the input holds or has queued is read there, never as one of
    // this path's rotated files: a per-instance log (app.log-1) is a rotated name of app.log,
    // and was read again from byte 0 at each rotation of app.log. Asked at a rotation, on the
    // thread reading this file while the round holds mu_ (no other follower moves meanwhile);
    // `input` and the map's entries outlive the follower. Not across inputs: two inputs may
    // follow one path, each reading its rotated files itself. Nor a file another follower read
    // to its end and let go of (app.log-1's own rotated copy, app.log-1.1: a rotated name of
    // app.log too, written after app.log.1): `known` holds it with that follower's path, told
    // by its first bytes (the inode may be another file's now). Read again whole, else.
    follower.followed_elsewhere = [&input, path](const std::string& name, uint64_t device,
                                                 uint64_t inode) {
      for (const auto& [other, file] : input.files) {
        if (other == path || file.follower == nullptr) continue;  // null: being made
        const palisade::v1::FileCheckpoint c = file.follower->checkpoint();
        if (c.inode() == inode && c.device() == device) return true;
        // At its path: the file it reads next (resumed in app.log-1.1 at a restart, it reads
        // the new app.log-1 once that is drained).
        struct stat st;
        if (::stat(other.c_str(), &st) == 0 && st.st_dev == device && st.st_ino == inode) {
          return true;
        }
        for (const palisade::v1::FileCheckpoint& q : file.follower->queued()) {
          if (q.inode() == inode && q.device() == device) return true;
        }
      }
      auto known = input.known.find({device, inode});
      return known != input.known.end() && known->second.path() != path &&
             FileFollower::IsFileOf(name, known->second);
    };
    File& file = input.files[path];
    if (from.has_value() && from->left_out()) file.left_out = *from;
    file.follower = std::make_unique<FileFollower>(path, follower, std::move(from));
    file.taken = file.follower->checkpoint();
  };
  // Named paths and restored positions first (a restored position says which file it is: not a
  // copy to leave out): one whose file was truncated meanwhile is then among the truncations.
  for (const std::string& path : paths) {
    if (input.files.count(path) > 0) continue;
    auto restored = input.restored.find(path);
    if (restored == input.restored.end()) {
      if (Named(input.config, path)) follow(path, std::nullopt);
      continue;
    }
    palisade::v1::FileCheckpoint from = std::move(restored->second);
    input.restored.erase(restored);
    // A copy left out was read completely; another file at its name now (the name used again:
    // app.log.old, the path's file rotated there while down) is not it. Dropped without a word
    // (nothing of it is lost): followed, it found its file gone, said so falsely, and read the
    // other file from its start, which the path's follower reads on from its own position.
    if (from.left_out() && !FileFollower::IsFileOf(path, from)) continue;
    // Restored followers count against max_files: each followed, 60,000 copies left out (hard
    // links to a drained file) took a descriptor each. Past it a copy left out holding nothing
    // past its position is a copy again, without a follower (saved on at its end); another
    // position waits for a place (saved on as restored).
    if (input.files.size() >= MaxFiles(input.config) && !Named(input.config, path)) {
      if (from.left_out() && globbed.count(path) > 0 && sizes[path] <= from.offset()) {
        input.copies[path] = std::move(from);
      } else {
        input.restored[path] = std::move(from);
      }
      continue;
    }
    follow(path, std::move(from));
  }
  // A restored position whose path is not there (not created again yet) and whose file the glob
  // matches under a rotated name of the path (PATH-YYYYMMDD, PATH.N): the path's follower starts
  // now, reads the file on from the position there and then the path's new file from its start, and
  // the copy is left out (its name is a rotated one of a followed path). Read as a new file
  // instead, its lines were counted twice: from its start now, its tail again once PATH came.
  // (Under a name the glob does not match, PATH.1 of *.log, it waits: nothing is read twice.)
  for (auto it = input.restored.begin(); it != input.restored.end();) {
    const palisade::v1::FileCheckpoint& c = it->second;
    bool matched_elsewhere = false;
    if (input.files.count(c.path()) == 0) {
      for (const auto& [path, key] : globbed) {
        if (key == FileKey{c.device(), c.inode()} && FileFollower::RotatedName(path, c.path()) &&
            FileFollower::IsFileOf(path, c)) {
          matched_elsewhere = true;
          break;
        }
      }
    }
    // Counted against max_files as the restored positions above: past it the position waits
    // for a place (saved on as restored).
    if (!matched_elsewhere ||
        (input.files.size() >= MaxFiles(input.config) && !Named(input.config, it->first))) {
      ++it;
      continue;
    }
    const std::string path = it->first;
    palisade::v1::FileCheckpoint from = std::move(it->second);
    it = input.restored.erase(it);
    follow(path, std::move(from));
  }
  bool truncations = false;
  for (auto& [path, file] : input.files) {
    for (palisade::v1::FileCheckpoint& c : file.follower->TakeTruncated()) {
      constexpr size_t kMaxTruncated = 16;
      if (input.truncated.size() >= kMaxTruncated) input.truncated.erase(input.truncated.begin());
      input.truncated.push_back(std::move(c));
      truncations = true;
    }
  }
  if (truncations) input.copies.clear();  // a copy left out may be one to read on now
  // At most max_files followed: each holds a descriptor and a buffer, and whoever may create
  // files where a glob looks could otherwise run the daemon out of both (gRPC, Logpush and
  // snapshot writes failing with EMFILE). Past it a match is skipped before it is looked at
  // (rotated_copy compares it with every follower), said once while it lasts and counted. A
  // rotated copy told by its name takes no place and is not counted. Places are first come: a
  // file followed keeps its place until removed. New matches that do not all fit are taken
  // newest first, so names pre-created to sort first (aaa*.log) do not take them by name.
  const size_t max_files = MaxFiles(input.config);
  std::vector<std::string> wanted;
  for (const std::string& path : paths) {
    if (input.files.count(path) > 0 || rotated_by_name(path)) continue;
    // A copy known (left out again without a read) takes no place either.
    auto copy = input.copies.find(path);
    auto match = globbed.find(path);
    if (copy != input.copies.end() && match != globbed.end() &&
        FileKey{copy->second.device(), copy->second.inode()} == match->second) {
      continue;
    }
    wanted.push_back(path);
  }
  if (input.files.size() + wanted.size() > max_files) {
    // A last write in the future (touch -d 2100: anyone who may write there can set it) ranks
    // as the oldest, not first.
    const int64_t future = absl::ToUnixNanos(absl::Now() + absl::Minutes(1));
    std::stable_sort(wanted.begin(), wanted.end(),
                     [&written, future](const std::string& a, const std::string& b) {
                       auto rank = [&](const std::string& p) {
                         auto at = written.find(p);  // a named path: first
                         if (at == written.end()) return INT64_MAX;
                         return at->second > future ? INT64_MIN : at->second;
                       };
                       return rank(a) > rank(b);
                     });
  }
  size_t over = 0;
  for (const std::string& path : wanted) {
    if (input.files.count(path) > 0) continue;
    if (input.files.size() >= max_files && !Named(input.config, path)) {
      ++over;
      continue;
    }
    std::optional<palisade::v1::FileCheckpoint> from;
    if (rotated_copy(path, &from)) continue;
    follow(path, std::move(from));
  }
  input.not_followed->Set(static_cast<double>(over));
  // Said when it starts, at most once a minute (matches coming and going toggle it each round).
  // An episode the minute kept unsaid is said once the minute is over (over_said is set only
  // when said: set at once, one starting within a minute of the last was never said).
  if (over == 0) {
    input.over_said = false;
  } else if (!input.over_said && absl::Now() - input.over_said_at >= absl::Minutes(1)) {
    input.over_said = true;
    input.over_said_at = absl::Now();
    input.errors->Increment();
    Log(absl::StrCat("input ", input.config.name(), ": its globs match more files than max_files (",
                     max_files, "): ", over, " not followed (palisade_input_files_not_followed); "
                     "raise inputs.files.max_files, or narrow the globs"));
  }
  // Bounded: a file neither open nor matched any more is forgotten (its inode may be reused).
  std::set<FileKey> matched;
  for (const auto& [path, key] : globbed) matched.insert(key);
  for (auto it = input.known.begin(); it != input.known.end();) {
    const bool keep = open.count(it->first) > 0 || matched.count(it->first) > 0;
    it = keep ? std::next(it) : input.known.erase(it);
  }
  for (auto it = input.copies.begin(); it != input.copies.end();) {
    auto match = globbed.find(it->first);
    const bool keep = match != globbed.end() &&
                      match->second == FileKey{it->second.device(), it->second.inode()};
    it = keep ? std::next(it) : input.copies.erase(it);
  }
  // A restored position with no follower yet is of use only while its file is where a follower
  // would resume from it: at its path, or under a rotated name (PATH.1, PATH-YYYYMMDD). A copy
  // left out only at its path: no file comes there again to read on through its rotations.
  auto resumable = [](const palisade::v1::FileCheckpoint& c) {
    auto there = [&c](const std::string& at) {
      struct stat st;
      if (::stat(at.c_str(), &st) != 0) return errno != ENOENT;  // cannot tell: kept
      return st.st_dev == c.device() && st.st_ino == c.inode();
    };
    if (there(c.path())) return true;
    if (c.left_out()) return false;
    for (const std::string& at : FileFollower::RotatedNames(c.path())) {
      if (there(at)) return true;
    }
    return false;
  };
  for (auto it = input.restored.begin(); it != input.restored.end();) {
    if (resumable(it->second)) {
      ++it;
      continue;
    }
    // A copy left out was read completely: gone (compressed, removed), nothing of it is lost.
    if (it->second.left_out()) {
      it = input.restored.erase(it);
      continue;
    }
    input.errors->Increment();
    Log(absl::StrCat("input ", input.config.name(), ": ", it->first, ": saved position (offset ",
                     it->second.offset(), ") not found: its file is neither there nor under a "
                     "rotated name; given up"));
    it = input.restored.erase(it);
  }
}

namespace {

// A slot whose lines held more than this is not kept for reuse once taken: its buffer would
// otherwise stay allocated (up to kBatchBytes and a JSON record when a sender writes long lines).
constexpr size_t kReuseBatchBytes = 1 << 20;

// Batches of one file per round, so the others get their turn.
constexpr int kBatchesPerRound = 16;

}  // namespace

std::unique_ptr<FileInputs::Slot> FileInputs::NewSlot() {
  absl::MutexLock lock(&work_mu_);
  if (free_.empty()) return std::make_unique<Slot>();
  std::unique_ptr<Slot> slot = std::move(free_.back());
  free_.pop_back();
  return slot;
}

void FileInputs::Release(std::unique_ptr<Slot> slot) {
  slot->hold.reset();
  slot->batch.Clear();
  if (slot->bytes.capacity() > kReuseBatchBytes) std::string().swap(slot->bytes);  // released
  slot->state = Slot::State::kFilled;
  absl::MutexLock lock(&work_mu_);
  free_.push_back(std::move(slot));
}

size_t FileInputs::Fill(Input& input, const std::string& path, File& file, Slot& slot) {
  slot.bytes.clear();
  slot.spans.clear();
  slot.batch.Clear();
  slot.hold.reset();
  slot.full = false;
  // Lines longer than the input's cap: the follower keeps cap + 1 bytes so the pipeline knows
  // a cut, and counts only the lines it cut (longer than cap + 1); one of exactly cap + 1 bytes
  // is handed out whole and is longer than the cap all the same (the pipeline cuts it). Counted
  // here, as read (a batch refused is offered again, not read again): each such line once.
  const size_t cap = LineCapFor(input.format, options_.max_line_bytes, options_.max_record_bytes);
  uint64_t cut = 0;
  // Offsets first: the buffer may move while it grows.
  absl::StatusOr<size_t> n = file.follower->Poll(
      options_.batch_lines, [&slot, &cut, cap](absl::string_view line) {
        slot.spans.emplace_back(slot.bytes.size(), line.size());
        slot.bytes.append(line.data(), line.size());
        if (line.size() > cap) ++cut;
      });
  if (cut > 0) {
    input.cut->Increment(static_cast<double>(cut));
    // Said once per file, not per line (a client can write many), without its content.
    if (!file.cut_said) {
      file.cut_said = true;
      Log(absl::StrCat("input ", input.config.name(), ": ", path, ": a line longer than ", cap,
                       " bytes cut there, its rest dropped (each such line counted in "
                       "palisade_input_lines_cut_total)"));
    }
  }
  if (!n.ok()) {
    input.errors->Increment();
    const std::string message = absl::StrCat("input ", input.config.name(), ": ", n.status().message());
    // Logged when it starts or changes, not every poll.
    if (file.last_error != message) Log(message);
    file.last_error = message;
  } else if (!file.last_error.empty()) {
    file.last_error.clear();
    Log(absl::StrCat("input ", input.config.name(), ": ", path, " readable again"));
  }
  std::vector<absl::string_view>& lines = slot.batch.lines;
  for (const auto& [offset, length] : slot.spans) {
    lines.emplace_back(slot.bytes.data() + offset, length);
  }
  if (lines.empty()) return 0;
  // As the follower counted: its lines and a newline each (the stripped \r's not).
  slot.full = file.follower->stopped_at_limit();
  slot.batch.source = input.config.source();
  slot.batch.format = input.format;
  slot.batch.json_format = input.config.json_format();
  slot.after = file.follower->checkpoint();
  return lines.size();
}

void FileInputs::Prematch(Slot* slot) { slot->hold = sink_.prematch(&slot->batch); }

bool FileInputs::CanFill(const Job& job) const {
  return !job.stop && !job.filling && job.more && job.read < kBatchesPerRound &&
         job.file->ahead.size() < depth_;
}

void FileInputs::Work() {
  while (true) {
    Slot* slot = nullptr;
    Job* job = nullptr;
    {
      absl::MutexLock lock(&work_mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_) {
        return stop_work_ || !queue_.empty() || (job_ != nullptr && CanFill(*job_));
      };
      work_mu_.Await(absl::Condition(&work));
      if (stop_work_) return;
      if (job_ != nullptr && CanFill(*job_)) {
        // Reading first: it is cheap and keeps the batches coming.
        job = job_;
        job->filling = true;
      } else {
        slot = queue_.front();
        queue_.pop_front();
        slot->state = Slot::State::kClaimed;
      }
    }
    if (job != nullptr) {
      std::unique_ptr<Slot> next = NewSlot();
      const size_t n = Fill(*job->input, *job->path, *job->file, *next);
      const bool more = n > 0 && next->full;
      if (n == 0) Release(std::move(next));
      absl::MutexLock lock(&work_mu_);
      job->filling = false;
      job->more = more;
      if (n > 0) {
        ++job->read;
        // Kept even when the sink refused meanwhile: its lines were read.
        if (!job->stop) {
          next->state = Slot::State::kQueued;
          queue_.push_back(next.get());
        }
        job->file->ahead.push_back(std::move(next));
      }
      continue;
    }
    Prematch(slot);
    absl::MutexLock lock(&work_mu_);
    slot->state = Slot::State::kReady;
  }
}

size_t FileInputs::PollFileLocked(Input& input, const std::string& path, File& file,
                                  bool* more_to_read) {
  if (!workers_.empty()) return PollFileWithWorkersLocked(input, path, file, more_to_read);
  // One thread: read a batch, hand it to the sink (which matches it itself), and so on.
  size_t taken = 0;
  // A batch refused last round counts in this round's 16.
  int read = static_cast<int>(file.ahead.size());
  bool more = true;  // the follower may have more: its last batch was full
  while (true) {
    if (file.ahead.empty()) {
      if (!more) break;
      if (read >= kBatchesPerRound) {
        *more_to_read = true;
        break;
      }
      std::unique_ptr<Slot> slot = NewSlot();
      const size_t n = Fill(input, path, file, *slot);
      more = slot->full;
      if (n == 0) {
        Release(std::move(slot));
        break;
      }
      ++read;
      file.ahead.push_back(std::move(slot));
    }
    Slot* head = file.ahead.front().get();
    absl::Status s = sink_.process(head->batch);
    if (!s.ok()) {
      // Kept to be offered again: nothing is skipped.
      input.errors->Increment();
      Log(absl::StrCat("input ", input.config.name(), ": batch refused: ", s.message()));
      break;
    }
    const size_t n = head->batch.lines.size();
    input.lines->Increment(static_cast<double>(n));
    taken += n;
    file.taken = head->after;
    Release(std::move(file.ahead.front()));
    file.ahead.pop_front();
  }
  return taken;
}

size_t FileInputs::PollFileWithWorkersLocked(Input& input, const std::string& path, File& file,
                                             bool* more_to_read) {
  Job job;
  job.input = &input;
  job.path = &path;
  job.file = &file;
  size_t taken = 0;
  {
    absl::MutexLock lock(&work_mu_);
    // What the sink refused last round goes first, prematched again (the rules may have
    // changed), and counts in this round's 16 batches: the batches a round takes do not depend
    // on how many were read ahead, so the positions after a round are the one thread's.
    job.read = static_cast<int>(file.ahead.size());
    for (auto& slot : file.ahead) {
      slot->state = Slot::State::kQueued;
      queue_.push_back(slot.get());
    }
    job_ = &job;
  }
  while (true) {
    Slot* head = nullptr;
    Slot* mine = nullptr;
    {
      absl::MutexLock lock(&work_mu_);
      auto next = [this, &job, &file]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_) {
        if (file.ahead.empty()) {
          return !job.filling && (!job.more || job.read >= kBatchesPerRound);
        }
        // The head prematched, or one this thread can prematch rather than wait.
        return file.ahead.front()->state != Slot::State::kClaimed || !queue_.empty();
      };
      work_mu_.Await(absl::Condition(&next));
      if (file.ahead.empty()) {
        if (job.more) *more_to_read = true;  // stopped at the round's 16 batches
        job_ = nullptr;
        break;
      }
      head = file.ahead.front().get();
      if (head->state == Slot::State::kQueued) {
        queue_.erase(std::find(queue_.begin(), queue_.end(), head));
        mine = head;
      } else if (head->state == Slot::State::kClaimed) {
        // The head is being prematched: take the latest batch queued meanwhile (the workers
        // take the oldest).
        mine = queue_.back();
        queue_.pop_back();
      }
      if (mine != nullptr) mine->state = Slot::State::kClaimed;
    }
    if (mine != nullptr) {
      Prematch(mine);
      absl::MutexLock lock(&work_mu_);
      mine->state = Slot::State::kReady;
      continue;
    }
    absl::Status s = sink_.process(head->batch);
    if (!s.ok()) {
      // Kept to be offered again, with what was read after it: nothing is skipped.
      input.errors->Increment();
      Log(absl::StrCat("input ", input.config.name(), ": batch refused: ", s.message()));
      absl::MutexLock lock(&work_mu_);
      job.stop = true;
      for (auto& slot : file.ahead) {
        if (slot->state == Slot::State::kQueued) {
          queue_.erase(std::find(queue_.begin(), queue_.end(), slot.get()));
          slot->state = Slot::State::kFilled;
        }
      }
      // No worker reads or prematches this file's batches once the round is over.
      auto idle = [&job, &file]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_) {
        if (job.filling) return false;
        for (const auto& slot : file.ahead) {
          if (slot->state == Slot::State::kClaimed) return false;
        }
        return true;
      };
      work_mu_.Await(absl::Condition(&idle));
      for (auto& slot : file.ahead) slot->state = Slot::State::kFilled;
      job_ = nullptr;
      break;
    }
    const size_t n = head->batch.lines.size();
    input.lines->Increment(static_cast<double>(n));
    taken += n;
    file.taken = head->after;
    std::unique_ptr<Slot> done;
    {
      absl::MutexLock lock(&work_mu_);
      done = std::move(file.ahead.front());
      file.ahead.pop_front();
    }
    Release(std::move(done));
  }
  return taken;
}

void FileInputs::PublishLocked(Input& input, const std::string& path, const File& file) {
  for (const palisade::v1::FileCheckpoint& c : file.follower->TakeLost()) {
    input.errors->Increment();
    // The follower reads on through the files rotated after it when the position said when
    // its file was last written (FileCheckpoint.written_ns): only that file's rest is lost.
    // Said only when it queued some (none under compress without delaycompress, the common
    // layout: the path alone holds what came after).
    const size_t queued = c.written_ns() != 0 ? file.follower->queued_after_lost() : 0;
    // The path still holding the position's inode is a truncation whose copy (if any) is
    // compressed or gone, or a new file given the freed inode: which cannot be told, so the
    // loss is only possible.
    struct stat st;
    const bool inode_there = ::stat(path.c_str(), &st) == 0 && st.st_dev == c.device() &&
                             st.st_ino == c.inode();
    Log(absl::StrCat("input ", input.config.name(), ": ", path, ": saved position (offset ",
                     c.offset(), ") not found: ",
                     inode_there ? "its file was truncated; no copy holds what came after the "
                                   "position (possibly lost), "
                                 : "its file is neither there nor under a rotated name "
                                   "(compressed, removed); lines written to it after that "
                                   "position lost, ",
                     queued > 0 ? absl::StrCat("the ", queued, queued == 1 ? " file" : " files",
                                               " rotated after it read first, then ")
                                : std::string(),
                     "the path read from its start"));
  }
  for (const FileFollower::CompressedCopyLoss& loss : file.follower->TakeLostToCompression()) {
    input.errors->Increment();
    Log(absl::StrCat("input ", input.config.name(), ": ", path,
                     ": truncated in place (copytruncate) and its copy compressed before it was "
                     "read (", loss.compressed, ": compress without delaycompress): ",
                     loss.bytes.has_value()
                         ? absl::StrCat(loss.at_least ? "at least " : "the ", *loss.bytes,
                                        " bytes written after offset ", loss.at.offset(),
                                        " lost", loss.at_least ? " (gzip counts mod 4 GiB)" : "")
                         : absl::StrCat("what was written after offset ", loss.at.offset(),
                                        " is possibly lost"),
                     " (compressed files are not read; delaycompress keeps them readable)"));
  }
  const FollowerStats& now = file.follower->stats();
  FollowerStats& was = input.published[path];
  input.bytes->Increment(static_cast<double>(now.bytes - was.bytes));
  input.rotations->Increment(static_cast<double>(now.rotations - was.rotations));
  input.truncations->Increment(static_cast<double>(now.truncations - was.truncations));
  // Lines cut (longer than the cap: the pipeline cuts, flags and counts them again in
  // palisade_ingest_lines_truncated_total) are counted as read (Fill), not from the follower's
  // cut_lines: it misses a line of exactly cap + 1 bytes.
  was = now;
}

size_t FileInputs::PollOnce() {
  bool more = false;
  return Round(&more);
}

size_t FileInputs::Round(bool* more) {
  absl::MutexLock lock(&mu_);
  size_t total = 0;
  for (Input& input : inputs_) {
    DiscoverLocked(input);
    double lag = 0;
    for (auto it = input.files.begin(); it != input.files.end();) {
      const std::string& path = it->first;
      File& file = it->second;
      total += PollFileLocked(input, path, file, more);
      PublishLocked(input, path, file);
      lag += static_cast<double>(file.follower->lag_bytes());
      if (!file.ahead.empty() || file.follower->following()) {
        ++it;
        continue;
      }
      // No file (removed and read to its end, or not there yet), every line taken: no position
      // to save. A glob's file removed is let go of; a named path is waited for. Its name is
      // looked at (lstat), and through it only when it is a link (one leading nowhere, its
      // file removed, is let go of too: Glob no longer matches it).
      file.taken = file.follower->checkpoint();
      struct stat st;
      const bool there = ::lstat(path.c_str(), &st) == 0
                             ? !S_ISLNK(st.st_mode) || ::stat(path.c_str(), &st) == 0 ||
                                   errno != ENOENT
                             : errno != ENOENT;
      if (Named(input.config, path) || there) {
        ++it;
        continue;
      }
      input.published.erase(path);
      it = input.files.erase(it);
    }
    input.lag->Set(lag);
  }
  return total;
}

void FileInputs::Start() {
  thread_ = std::thread([this] {
    while (!stop_.HasBeenNotified()) {
      // A round that left a file with more to read goes again at once (however few lines that
      // was: long lines fill a batch's 1 MiB first); one that read every file to its end waits.
      bool more = false;
      Round(&more);
      if (!more) stop_.WaitForNotificationWithTimeout(options_.poll_interval);
    }
  });
}

void FileInputs::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void FileInputs::Consistent(
    const std::function<void(const std::vector<palisade::v1::FileCheckpoint>&)>& fn) {
  absl::MutexLock lock(&mu_);
  std::vector<palisade::v1::FileCheckpoint> out;
  for (const Input& input : inputs_) {
    // The files a follower's position (or the file it reads) is in: resumed from after a
    // restart (under a rotated name if need be), read once there.
    std::set<FileKey> followed;
    for (const auto& [path, file] : input.files) {
      palisade::v1::FileCheckpoint c = file.taken;
      const palisade::v1::FileCheckpoint now = file.follower->checkpoint();
      followed.insert({now.device(), now.inode()});
      if (c.inode() == 0) continue;  // never opened
      followed.insert({c.device(), c.inode()});
      // A copy resumed from its left-out position and read no further: still a copy left out.
      const palisade::v1::FileCheckpoint& copy = file.left_out;
      if (copy.inode() != 0 && c.device() == copy.device() && c.inode() == copy.inode() &&
          c.offset() == copy.offset()) {
        c.set_left_out(true);
      }
      c.set_input(input.config.name());
      c.set_path(path);
      out.push_back(std::move(c));
    }
    // Not resumed from yet: saved on as they were restored.
    for (const auto& [path, c] : input.restored) out.push_back(c);
    // The copies left out (read to their end by a follower, or a copytruncate copy holding no
    // more than was read): at their end, so a restart, which no longer knows them, does not
    // read them again from their start as new files. Only while the copy is still that file.
    for (const auto& [path, copy] : input.copies) {
      struct stat st;
      if (followed.count({copy.device(), copy.inode()}) > 0 || ::stat(path.c_str(), &st) != 0 ||
          !S_ISREG(st.st_mode) || st.st_dev != copy.device() || st.st_ino != copy.inode()) {
        continue;
      }
      palisade::v1::FileCheckpoint c = copy;
      c.set_input(input.config.name());
      c.set_path(path);
      c.set_offset(static_cast<uint64_t>(st.st_size));
      c.set_left_out(true);  // gone at a restart: dropped, no error (read completely)
      out.push_back(std::move(c));
    }
  }
  fn(out);
}

std::vector<palisade::v1::FileCheckpoint> FileInputs::Checkpoints() {
  std::vector<palisade::v1::FileCheckpoint> out;
  Consistent([&](const std::vector<palisade::v1::FileCheckpoint>& c) { out = c; });
  return out;
}

}  // namespace palisade
