#include "services/inputs/journal_input.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <limits>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace palisade {
namespace {

std::string Errno(int negative) { return std::strerror(-negative); }

// A round scans at most this many times batch_lines entries (PollOnce): the entries it skips (a
// user's, no MESSAGE) add nothing to a batch, so a reading bounded by the batch alone would go on
// through a whole backlog of them (a user's chatty service, millions of entries) under mu_,
// which every input's snapshot waits for (JournalsHeld). 8: a round of skips costs a few times a
// full batch's reading, and a backlog is still read past eight times as fast as it is delivered.
constexpr size_t kScanPerBatch = 8;

// journalctl's field names: [A-Z0-9_], not starting with a digit, at most 64 bytes.
bool ValidMatch(const std::string& match) {
  const size_t eq = match.find('=');
  if (eq == std::string::npos || eq == 0 || eq > 64) return false;
  if (absl::ascii_isdigit(static_cast<unsigned char>(match[0]))) return false;
  for (size_t i = 0; i < eq; ++i) {
    const char c = match[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// Keeps the bytes a syslog host or tag may hold; anything else (spaces, '[', ':', controls,
// non-ASCII) becomes '_', so a writer's identifier cannot end the tag early or pass for a pid.
std::string Token(absl::string_view text, size_t max) {
  std::string out(text.substr(0, max));
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-' || c == '/';
    if (!ok) c = '_';
  }
  return out;
}

bool AllDigits(absl::string_view s) {
  if (s.empty() || s.size() > 10) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Whether the sender of an entry with this _UID may be read as a daemon (or it is one of
// trusted_uids, JournalInput::ReadWriterLocked): with no matches (every
// entry read) `logger -t sshd "Failed password for root from VICTIM port 22 ssh2"`, or `logger -t
// x` and a pam line (for the rules that name no programs), run by any local user, would otherwise
// ban an address the user chose. Others' entries are skipped (or, with read_user_entries, tagged
// "user-UID/..."). _UID is the field to decide on: journald sets it from the kernel's credentials
// of the sending socket (SCM_CREDENTIALS, SO_PEERCRED), on every transport a local process can
// write through, and a process can only give a uid it holds. The others do not fit: _COMM and _EXE
// are the user's to choose for a process of theirs (prctl, a copy of logger named sshd); a session
// scope and _SYSTEMD_OWNER_UID hold root's processes too (sshd after a login, sudo, su), whose
// lines would be lost; _SYSTEMD_USER_UNIT's processes run as its user, whom the uid already names.
// Trusted, among the accounts journald keeps in the system journal rather than in a
// user-UID.journal: the system accounts (0..999: SYS_UID_MAX in login.defs, systemd's
// SYSTEM_UID_MAX; sshd, postfix, dovecot, mysql, www-data...), systemd's DynamicUser= range
// (61184..65519) and nobody (65534), none of which a user can run as. Not trusted: everything else,
// the regular users (UID_MIN 1000 up), systemd-homed's, and the uids past 65535 (the subordinate
// uids a user's rootless containers run as; container ranges, whose root is not the host's). A
// system account can still name itself anything (a web app's syslog() as www-data): `matches` on
// _SYSTEMD_UNIT or _UID narrow an input to the daemons meant.
bool SystemUid(uint64_t n) { return n <= 999 || (n >= 61184 && n <= 65519) || n == 65534; }

// The number a _UID holds; false when it is not one (a remote host's upload holds anything).
bool ParseUid(absl::string_view uid, uint64_t* n) {
  return AllDigits(uid) && absl::SimpleAtoi(uid, n);
}

// A unit whose processes are a person's, not a daemon's: a login's (session-N.scope) or a user
// manager's (user@UID.service, which every --user unit runs under beside the user's own shells
// and dbus). Trusting such a uid reads whatever the person writes as a daemon's line.
bool PersonsUnit(absl::string_view unit) {
  return (absl::StartsWith(unit, "session-") && absl::EndsWith(unit, ".scope")) ||
         (absl::StartsWith(unit, "user@") && absl::EndsWith(unit, ".service"));
}

// The value of `field` in the current entry, at most `max` bytes of it (copied: sd_journal's
// pointer is valid only until the next get_data). false when the entry has no such field.
bool Field(sd_journal* j, const char* field, size_t max, std::string* out, size_t* full_size) {
  const void* data = nullptr;
  size_t length = 0;
  if (sd_journal_get_data(j, field, &data, &length) < 0) return false;
  const size_t prefix = std::strlen(field) + 1;  // "FIELD="
  if (length < prefix) return false;
  const size_t n = length - prefix;
  if (full_size != nullptr) *full_size = n;
  out->assign(static_cast<const char*>(data) + prefix, std::min(n, max));
  return true;
}

// The value of `key` ("s", "t"...) in a cursor ("s=...;i=...;b=...;m=...;t=...;x=..."), or "".
std::string CursorPart(absl::string_view cursor, absl::string_view key) {
  for (absl::string_view part : absl::StrSplit(cursor, ';')) {
    if (part.size() > key.size() && absl::StartsWith(part, key) && part[key.size()] == '=') {
      return std::string(part.substr(key.size() + 1));
    }
  }
  return "";
}

// A journal file's writer: the sequence number id in its header (offset 72, after the
// signature, flags, state, file id, machine id and boot id), as the cursors' "s=" print it; and
// its own file id (offset 24) in `file_id`. Read from the header, not through sd_journal: that
// needs no entry, and a file just made by a rotation has none yet. "" when the file is not
// (yet) a journal file.
std::string ReadWriterId(const std::string& path, std::string* file_id) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return "";
  unsigned char header[88];
  const ssize_t n = ::pread(fd, header, sizeof(header), 0);
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof(header)) || std::memcmp(header, "LPKSHHRH", 8) != 0) {
    return "";
  }
  *file_id = absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(header) + 24, 16));
  const std::string id =
      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(header) + 72, 16));
  return id == std::string(32, '0') ? "" : id;
}

// A journal file's header, for what a read scanned: whether it is archived (state, offset 16:
// 2, written no more) and its tail_entry_seqnum (offset 160, the number of its last entry).
// false when `path` is no longer the file `key` names (rotated away meanwhile, replaced) or
// cannot be read: its number is then left out, which can only make a gap look longer.
// journald numbers an entry just before linking it: read while one is being appended, the
// number is one ahead of what a read sees, for the microseconds that takes; that entry's loss
// alone, were its file vacuumed before the next read, could then go uncounted.
// `st_out`: the file's status as its header was read.
bool ReadTail(const std::string& path, std::pair<uint64_t, uint64_t> key, bool* archived,
              uint64_t* tail, struct stat* st_out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return false;
  struct stat& st = *st_out;
  unsigned char header[168];
  const bool ok = ::fstat(fd, &st) == 0 && st.st_dev == key.first && st.st_ino == key.second &&
                  ::pread(fd, header, sizeof(header), 0) == static_cast<ssize_t>(sizeof(header)) &&
                  std::memcmp(header, "LPKSHHRH", 8) == 0;
  ::close(fd);
  if (!ok) return false;
  *archived = header[16] == 2;
  *tail = 0;
  for (int i = 7; i >= 0; --i) *tail = (*tail << 8) | header[160 + i];  // little-endian
  return true;
}

// The sequence number of the last entry `j`'s files hold, matched or not (the cursor's "i="; 0
// when none can be read). The matches are flushed to find it and `j` is left at that entry: the
// caller adds them again, and reads `j` no more before it is reopened.
uint64_t LastSeqnum(sd_journal* j) {
  sd_journal_flush_matches(j);
  char* cursor = nullptr;
  if (sd_journal_seek_tail(j) < 0 || sd_journal_previous(j) <= 0 ||
      sd_journal_get_cursor(j, &cursor) < 0) {
    return 0;
  }
  const uint64_t out = std::strtoull(CursorPart(cursor, "i").c_str(), nullptr, 16);
  std::free(cursor);
  return out;
}

int64_t CtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

bool IsJournalFile(absl::string_view name) {
  return absl::EndsWith(name, ".journal") || absl::EndsWith(name, ".journal~");
}

bool IsMachineId(absl::string_view name) {
  if (name.size() != 32) return false;
  for (char c : name) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

std::string JournalInput::BuildLine(absl::Time realtime, absl::string_view hostname,
                                    absl::string_view identifier, absl::string_view pid,
                                    absl::string_view message, size_t max_line_bytes) {
  std::string line =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", realtime, absl::UTCTimeZone());
  if (!hostname.empty()) absl::StrAppend(&line, " ", Token(hostname, 64));
  std::string tag = Token(identifier, 48);
  if (tag.empty()) tag = "-";
  absl::StrAppend(&line, " ", tag);
  if (AllDigits(pid)) absl::StrAppend(&line, "[", pid, "]");
  line += ": ";
  const size_t room = max_line_bytes > line.size() ? max_line_bytes - line.size() : 0;
  const size_t at = line.size();
  line.append(message.data(), std::min(message.size(), room));
  // One entry is one line: a newline in MESSAGE must not start what looks like another.
  for (size_t i = at; i < line.size(); ++i) {
    if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
  }
  return line;
}

JournalInput::JournalInput(palisade::v1::JournalInput config, JournalInputOptions options,
                           BatchSink sink)
    : config_(std::move(config)), options_(std::move(options)), sink_(std::move(sink)) {
  if (options_.batch_lines == 0) options_.batch_lines = 1000;
  if (options_.max_line_bytes < 64) options_.max_line_bytes = 64;
  if (options_.clock == nullptr) options_.clock = &RealClock::Get();
  if (options_.wait_interval <= absl::ZeroDuration()) options_.wait_interval = absl::Milliseconds(50);
  if (options_.list_interval <= absl::ZeroDuration()) options_.list_interval = absl::Seconds(10);
  trusted_uids_.insert(config_.trusted_uids().begin(), config_.trusted_uids().end());
}

absl::StatusOr<std::unique_ptr<JournalInput>> JournalInput::Create(
    int index, const palisade::v1::JournalInput& config, JournalInputOptions options,
    BatchSink sink, prometheus::Registry& registry) {
  const std::string where = absl::StrCat("inputs.journal[", index, "] (\"", config.name(), "\"): ");
  if (!ValidInputName(config.name())) {
    return absl::InvalidArgumentError(where + "name must match [a-z0-9_-]{1,64}");
  }
  for (const std::string& m : config.matches()) {
    if (!ValidMatch(m)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "match \"", absl::CHexEscape(m.substr(0, 80)),
          "\" is not FIELD=value (FIELD: A-Z, 0-9 and _, not starting with a digit, at most 64)"));
    }
  }
  if (!config.directory().empty() && config.files_size() > 0) {
    return absl::InvalidArgumentError(where + "directory and files are exclusive");
  }
  std::unique_ptr<JournalInput> input(
      new JournalInput(config, std::move(options), std::move(sink)));
  if (input->config_.source().empty()) input->config_.set_source(config.name());
  for (const auto& c : input->options_.checkpoints) {
    if (c.input() != config.name()) continue;
    input->restored_cursor_ = c.cursor();
    for (const std::string& w : c.writer_cursors()) {
      const std::string id = CursorPart(w, "s");
      if (!id.empty()) input->restored_[id] = w;
    }
    input->restored_at_end_.insert(c.writers_at_end().begin(), c.writers_at_end().end());
    input->restored_scanned_.insert(c.writers_scanned().begin(), c.writers_scanned().end());
    input->restored_gone_.insert(c.writers_gone().begin(), c.writers_gone().end());
    // Written before writer_cursors: the one cursor is its writer's position, and the other
    // writers had been read (as sd_journal orders them) up to its time.
    if (c.writer_cursors_size() == 0 && !c.cursor().empty()) {
      const std::string id = CursorPart(c.cursor(), "s");
      if (!id.empty()) input->restored_[id] = c.cursor();
      input->legacy_after_usec_ = std::strtoull(CursorPart(c.cursor(), "t").c_str(), nullptr, 16);
    }
  }
  const prometheus::Labels labels = {{"input", config.name()}};
  input->lines_ = &prometheus::BuildCounter()
                       .Name("palisade_input_lines_total")
                       .Help("Lines read from a file input and taken by the pipeline.")
                       .Register(registry)
                       .Add(labels);
  input->bytes_ = &prometheus::BuildCounter()
                       .Name("palisade_input_bytes_total")
                       .Help("Bytes read from a file input.")
                       .Register(registry)
                       .Add(labels);
  input->errors_ = &prometheus::BuildCounter()
                        .Name("palisade_input_errors_total")
                        .Help("Errors reading a file input (logged, retried every poll).")
                        .Register(registry)
                        .Add(labels);
  auto& skipped = prometheus::BuildCounter()
                      .Name("palisade_journal_skipped_total")
                      .Help("Journal entries not turned into lines, by reason (no_message; "
                            "user_entry: a user's, without read_user_entries).")
                      .Register(registry);
  input->no_message_ = &skipped.Add({{"input", config.name()}, {"reason", "no_message"}});
  input->user_entry_ = &skipped.Add({{"input", config.name()}, {"reason", "user_entry"}});
  input->cursor_lost_ = &prometheus::BuildCounter()
                             .Name("palisade_journal_cursor_lost_total")
                             .Help("Journal entries removed (vacuumed) before they were read: "
                                   "a gap after a writer's cursor, a writer gone with entries "
                                   "left unread, or the system journal's cursor no longer in it "
                                   "(read from its head). Once per occurrence, not per entry.")
                             .Register(registry)
                             .Add(labels);
  input->lag_ = &prometheus::BuildGauge()
                     .Name("palisade_journal_lag_seconds")
                     .Help("Now less the realtime stamp of the newest journal entry taken.")
                     .Register(registry)
                     .Add(labels);
  input->where_ = where;
  absl::MutexLock lock(&input->mu_);
  if (absl::Status s = input->Open(where); !s.ok()) return s;
  return input;
}

absl::Status JournalInput::Open(const std::string& where) {
  if (config_.directory().empty() && config_.files_size() == 0) return OpenSystem(where);
  int r;
  std::vector<FoundFile> found;
  if (!config_.directory().empty()) {
    const std::string& dir = config_.directory();
    struct stat st;
    if (dir[0] != '/') {
      return absl::InvalidArgumentError(where + "directory \"" + dir + "\" must be absolute");
    }
    if (::stat(dir.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat(where, "directory ", dir, ": ", std::strerror(errno)));
    }
    if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(where, dir, " is not a directory"));
    }
    if (::access(dir.c_str(), R_OK | X_OK) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat(where, "directory ", dir, ": ", std::strerror(errno)));
    }
    directory_device_ = st.st_dev;
    directory_inode_ = st.st_ino;
    r = sd_journal_open_directory(&journal_, dir.c_str(), 0);
    // Watched from now on, so that sd_journal_process reports files added.
    if (r >= 0) watched_ = sd_journal_get_fd(journal_) >= 0;
    std::string error;
    if (r >= 0 && !ListDirectory(&found, &error)) {
      return absl::UnavailableError(absl::StrCat(where, error));
    }
    listed_at_ = options_.clock->TimeNow();
  } else {
    std::vector<const char*> paths;
    for (const std::string& f : config_.files()) {
      if (f.empty() || f[0] != '/') {
        return absl::InvalidArgumentError(where + "file \"" + f + "\" must be absolute");
      }
      if (::access(f.c_str(), F_OK) != 0) {
        return absl::NotFoundError(absl::StrCat(where, "file ", f, ": ", std::strerror(errno)));
      }
      if (::access(f.c_str(), R_OK) != 0) {
        return absl::PermissionDeniedError(
            absl::StrCat(where, "file ", f, ": ", std::strerror(errno)));
      }
      paths.push_back(f.c_str());
      struct stat st;
      if (::stat(f.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        found.push_back({{st.st_dev, st.st_ino}, f, CtimeNs(st), st.st_size});
      }
    }
    paths.push_back(nullptr);
    // Only waited on: files are a fixed set, grouped by writer once, here.
    r = sd_journal_open_files(&journal_, paths.data(), 0);
  }
  if (r < 0) {
    journal_ = nullptr;
    return absl::UnavailableError(absl::StrCat(where, "cannot open the journal: ", Errno(r)));
  }
  return GroupLocked(found, /*initial=*/true);
}

absl::Status JournalInput::OpenSystem(const std::string& where) {
  int r = sd_journal_open(&journal_, SD_JOURNAL_LOCAL_ONLY);
  if (r < 0) {
    journal_ = nullptr;
    return absl::UnavailableError(absl::StrCat(where, "cannot open the journal: ", Errno(r)));
  }
  // The system journal opens without error when none of its files can be read (palisaded not
  // root nor in the systemd-journal group): said at once rather than reading nothing silently.
  if (sd_journal_has_runtime_files(journal_) <= 0 &&
      sd_journal_has_persistent_files(journal_) <= 0) {
    Log(absl::StrCat("input ", config_.name(),
                     ": no system journal file is readable yet (is palisaded root or in the "
                     "systemd-journal group?); waiting for one"));
  }
  // Compressed fields are inflated only this far: a huge MESSAGE costs no more than a line.
  sd_journal_set_data_threshold(journal_, options_.max_line_bytes + 64);
  // One journald writes it, so one cursor is its position. The saved cursor is found before
  // the matches are added, so that the entry it names is found even if the matches changed;
  // the matches then apply to the entries after it.
  bool found = false;
  const std::string& cursor = restored_cursor_;
  if (!cursor.empty()) {
    if (sd_journal_seek_cursor(journal_, cursor.c_str()) >= 0 && sd_journal_next(journal_) > 0 &&
        sd_journal_test_cursor(journal_, cursor.c_str()) > 0) {
      found = true;
    }
    if (!found) {
      cursor_lost_->Increment();
      Log(absl::StrCat("input ", config_.name(),
                       ": the saved journal cursor is no longer in the journal (vacuumed?); "
                       "reading from the journal's head"));
    }
  }
  if (!found) sd_journal_seek_head(journal_);
  for (const std::string& m : config_.matches()) {
    r = sd_journal_add_match(journal_, m.data(), m.size());
    if (r < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "match \"", absl::CHexEscape(m.substr(0, 80)), "\": ", Errno(r)));
    }
  }
  if (found) {
    taken_cursor_ = cursor;
    pending_cursor_ = cursor;
  }
  Writer& w = writers_[""];
  w.journal = journal_;
  w.owned = false;
  return absl::OkStatus();
}

bool JournalInput::ListDirectory(std::vector<FoundFile>* out, std::string* error) const {
  if (options_.listed) options_.listed();
  out->clear();
  std::vector<std::string> dirs = {config_.directory()};
  for (size_t i = 0; i < dirs.size(); ++i) {
    DIR* d = ::opendir(dirs[i].c_str());
    if (d == nullptr) {
      if (i > 0) continue;  // a machine-id subdirectory gone meanwhile
      *error = absl::StrCat("directory ", dirs[i], ": ", std::strerror(errno));
      return false;
    }
    while (const struct dirent* e = ::readdir(d)) {
      const absl::string_view name = e->d_name;
      const bool file = IsJournalFile(name);
      if (!file && (i > 0 || !IsMachineId(name))) continue;
      const std::string path = absl::StrCat(dirs[i], "/", name);
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) continue;  // removed meanwhile
      if (file && S_ISREG(st.st_mode)) {
        out->push_back({{st.st_dev, st.st_ino}, path, CtimeNs(st), st.st_size});
      } else if (!file && S_ISDIR(st.st_mode)) {
        dirs.push_back(path);
      }
    }
    ::closedir(d);
  }
  return true;
}

absl::Status JournalInput::GroupLocked(const std::vector<FoundFile>& found, bool initial) {
  std::map<std::string, std::vector<FoundFile>> groups;
  std::map<std::pair<uint64_t, uint64_t>, CachedId> ids;
  std::map<std::pair<uint64_t, uint64_t>, std::pair<int64_t, int64_t>> unreadable;
  for (FoundFile f : found) {
    std::string id;
    const std::pair<int64_t, int64_t> stamp = {f.ctime_ns, f.size};
    if (auto it = file_ids_.find(f.key);
        it != file_ids_.end() && it->second.ctime_ns == f.ctime_ns) {
      id = it->second.id;
      f.file_id = it->second.file_id;
    } else if (auto u = unreadable_.find(f.key); u != unreadable_.end() && u->second == stamp) {
      // Unchanged since its header could not be read: not opened again at every listing.
      unreadable[f.key] = stamp;
      continue;
    } else {
      // New, or changed: maybe another file that reused the inode of a removed one.
      if (options_.header_read) options_.header_read(f.path);
      id = ReadWriterId(f.path, &f.file_id);
    }
    if (id.empty()) {
      // Not a journal file (yet), or not readable: looked at again when it changes (a file
      // being made gets its header; sd_journal then reports it) or at the periodic listing.
      // Not by listing again every round: a file left empty or torn, or palisaded lacking the
      // permission, would make every round list and stat the whole directory.
      unreadable[f.key] = stamp;
      continue;
    }
    ids[f.key] = {f.ctime_ns, id, f.file_id};
    groups[id].push_back(std::move(f));
  }
  file_ids_ = std::move(ids);
  unreadable_ = std::move(unreadable);
  if (initial) {
    for (const auto& [id, cursor] : restored_) {
      if (groups.count(id) == 0) {
        // Found gone by the run that saved the checkpoint: logged and counted then.
        if (restored_gone_.count(id) == 0) {
          WriterGoneLocked(id, restored_at_end_.count(id) > 0);
        }
        continue;
      }
      pending_cursors_[id] = cursor;
      taken_cursors_[id] = cursor;
      if (restored_at_end_.count(id) > 0) {
        pending_at_end_.insert(id);
        taken_at_end_.insert(id);
      }
      if (auto s = restored_scanned_.find(id); s != restored_scanned_.end()) {
        pending_scanned_[id] = s->second;
        taken_scanned_[id] = s->second;
      }
    }
    taken_cursor_ = restored_cursor_;
    pending_cursor_ = restored_cursor_;
  }
  for (auto& [id, files] : groups) {
    std::sort(files.begin(), files.end(),
              [](const FoundFile& a, const FoundFile& b) { return a.key < b.key; });
    Writer& w = writers_[id];
    std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> keys;
    for (const FoundFile& f : files) keys.push_back({f.key, f.file_id});
    if (w.journal != nullptr && keys == w.files && !w.reopen) continue;
    gone_.erase(id);  // its files are back, if it had none: counted again should they go
    if (w.journal != nullptr && !w.reopen &&
        (w.holds_removed ||
         !std::includes(keys.begin(), keys.end(), w.files.begin(), w.files.end()))) {
      // A file of its handle removed (a vacuum): the handle still reads it, as it holds it
      // open, so a reader behind (a backlog, a restart's) reads on the rest of the file being
      // vacuumed under it, which reopening without it would lose (libsystemd 252 opens no file
      // that has no name left, not even by descriptor: EIDRM). A handle that read to its end
      // once is kept too: its file may have been written on since, then rotated away and
      // vacuumed, all between two listings. Its files added meanwhile (the writer's next file:
      // a rotation) hold later entries: the handle is reopened over the files then listed once
      // it reads to its end, in the same round, which lets the removed files' space go. Until
      // then its files, tails and paths stay the handle's; with matches, what it scanned is
      // read from the handle at its end.
      w.holds_removed = true;
      continue;
    }
    // New, a file added (a rotation), or a handle read past the files removed under it
    // (Writer.reopen): reopened, on from its position. A file only renamed (rotated away) keeps
    // its inode and is read on.
    if (w.id.empty()) {
      w.id = id;
      if (initial && restored_.count(id) == 0) w.start_after_usec = legacy_after_usec_;
    }
    if (w.journal != nullptr) sd_journal_close(w.journal);
    w.journal = nullptr;
    w.reopen = false;
    w.holds_removed = false;
    w.files = std::move(keys);
    w.paths.clear();
    for (const FoundFile& f : files) w.paths.push_back(f.path);
    if (absl::Status s = OpenWriterLocked(w); !s.ok()) {
      if (w.journal != nullptr) sd_journal_close(w.journal);
      w.journal = nullptr;
      w.files.clear();  // opened again next round
      relist_ = true;
      if (initial) return absl::Status(s.code(), where_ + std::string(s.message()));
      Error(std::string(s.message()));
    }
  }
  // The header facts of files neither listed nor held by a writer's handle are dropped.
  std::set<std::pair<uint64_t, uint64_t>> held;
  for (const auto& [id, w] : writers_) {
    for (const auto& f : w.files) held.insert(f.first);
  }
  for (auto it = headers_.begin(); it != headers_.end();) {
    const bool keep = file_ids_.count(it->first) > 0 || held.count(it->first) > 0;
    it = keep ? std::next(it) : headers_.erase(it);
  }
  for (auto& [id, w] : writers_) {
    if (groups.count(id) > 0 || w.journal == nullptr) continue;
    if (!w.reopen) {
      // None of its files is listed, but its handle holds them open: read on to its end first,
      // as for a file removed (its unread rest would be lost), then found gone (Writer.reopen).
      w.holds_removed = true;
      continue;
    }
    // None of its files is left and its handle read to its end (or failed); its position is
    // kept, should they come back, and marked so that a restart does not log and count it a
    // second time.
    WriterGoneLocked(id, pending_at_end_.count(id) > 0);
    gone_.insert(id);
    sd_journal_close(w.journal);
    w.journal = nullptr;
    w.files.clear();
    w.holds_removed = false;
    w.reopen = false;
  }
  return absl::OkStatus();
}

void JournalInput::WriterGoneLocked(const std::string& id, bool at_end) {
  if (at_end) {
    // Its last entry had been read: removing its files (a host gone, retention) lost nothing.
    Log(absl::StrCat("input ", config_.name(), ": writer s=", id,
                     " has no file left (removed or vacuumed); it had been read to its end"));
    return;
  }
  cursor_lost_->Increment();
  Log(absl::StrCat("input ", config_.name(),
                   ": the saved journal cursor is no longer in the journal (no file of its "
                   "writer s=", id, " is left: vacuumed or removed?) and its entries after it "
                   "were not read; the other writers read on from their own positions"));
}

absl::Status JournalInput::OpenWriterLocked(Writer& w) {
  std::vector<const char*> paths;
  for (const std::string& p : w.paths) paths.push_back(p.c_str());
  paths.push_back(nullptr);
  int r = sd_journal_open_files(&w.journal, paths.data(), 0);
  if (r < 0) {
    w.journal = nullptr;
    return absl::UnavailableError(absl::StrCat("cannot open the journal files of writer s=", w.id,
                                               " (", w.paths.front(), "...): ", Errno(r)));
  }
  // Compressed fields are inflated only this far: a huge MESSAGE costs no more than a line.
  sd_journal_set_data_threshold(w.journal, options_.max_line_bytes + 64);
  // Positioned before the matches are added, so that the entry a cursor names is found even if
  // the matches changed; the matches then apply to the entries after it. Within one writer
  // entries are ordered by sequence number: when the cursor's entry itself is gone (vacuumed),
  // seeking to it leaves the next read at the first entry after it.
  const auto it = pending_cursors_.find(w.id);
  if (it != pending_cursors_.end() && !it->second.empty()) {
    const char* cursor = it->second.c_str();
    if (sd_journal_seek_cursor(w.journal, cursor) < 0) {
      return absl::InternalError(absl::StrCat("seeking writer s=", w.id, "'s cursor failed"));
    }
    if (!(sd_journal_next(w.journal) > 0 && sd_journal_test_cursor(w.journal, cursor) > 0)) {
      // The entry after the cursor's should be numbered one more (a writer numbers each entry,
      // and its files hold them all): a larger number means the entries between were removed
      // unread. Read before the matches apply, which leave out entries of their own.
      char* next = nullptr;
      if (sd_journal_get_cursor(w.journal, &next) >= 0) {
        const std::string first = next;
        std::free(next);
        const uint64_t saved = std::strtoull(CursorPart(it->second, "i").c_str(), nullptr, 16);
        const uint64_t found = std::strtoull(CursorPart(first, "i").c_str(), nullptr, 16);
        // With matches the cursor is the last entry that matched: the entries after it that
        // were scanned to the writer's end did not match, and none was lost.
        uint64_t read = saved;
        if (auto s = pending_scanned_.find(w.id); s != pending_scanned_.end()) {
          read = std::max(read, s->second);
        }
        if (CursorPart(first, "s") == w.id && saved > 0 && found > read + 1) {
          cursor_lost_->Increment();
          Log(absl::StrCat("input ", config_.name(), ": writer s=", w.id, "'s entries ",
                           read + 1, " to ", found - 1, " (", found - read - 1,
                           ") were removed (vacuumed?) before they were read; reading on from ",
                           found));
        }
      }
      sd_journal_seek_cursor(w.journal, cursor);
    }
  } else if (w.start_after_usec > 0) {
    sd_journal_seek_realtime_usec(w.journal, w.start_after_usec + 1);
  } else {
    sd_journal_seek_head(w.journal);
  }
  for (const std::string& m : config_.matches()) {
    r = sd_journal_add_match(w.journal, m.data(), m.size());
    if (r < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("match \"", absl::CHexEscape(m.substr(0, 80)), "\": ", Errno(r)));
    }
  }
  SplitArchivedLocked(w);
  return absl::OkStatus();
}

void JournalInput::SplitArchivedLocked(Writer& w) {
  w.archived_tail = 0;
  w.live.clear();
  if (config_.matches_size() == 0) return;
  for (size_t i = 0; i < w.files.size(); ++i) {
    bool archived = false;
    uint64_t tail = 0;
    if (HeaderLocked(w.paths[i], w.files[i].first, &archived, &tail) && archived) {
      w.archived_tail = std::max(w.archived_tail, tail);
    } else {
      w.live.push_back(i);
    }
  }
}

uint64_t JournalInput::TailLocked(const Writer& w) {
  uint64_t out = w.archived_tail;
  for (size_t i : w.live) {
    bool archived = false;
    uint64_t tail = 0;
    if (HeaderLocked(w.paths[i], w.files[i].first, &archived, &tail)) out = std::max(out, tail);
  }
  return out;
}

bool JournalInput::HeaderLocked(const std::string& path, std::pair<uint64_t, uint64_t> key,
                                bool* archived, uint64_t* tail) {
  const auto cached = headers_.find(key);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || st.st_dev != key.first || st.st_ino != key.second) {
    // The path names it no more (rotated away, removed) while a writer's handle still reads
    // it: what was read of it last, which misses the entries written to it since (a lower
    // bound: it can only make a gap look longer). A handle holding removed files takes what it
    // scanned from itself once it reads to its end (ReadWriterLocked).
    if (cached == headers_.end()) return false;
    *archived = cached->second.archived;
    *tail = cached->second.tail;
    return true;
  }
  if (cached != headers_.end() && cached->second.settled && cached->second.size == st.st_size &&
      cached->second.mtime_ns == MtimeNs(st)) {
    *archived = cached->second.archived;
    *tail = cached->second.tail;
    return true;
  }
  // The kernel's coarse clock, which stamps the files (not options_.clock: this is no time of
  // the input's, only the order of a write and this read): a file last modified in the tick
  // this read starts in could be written again within it, its modification time unchanged.
  // Its header is then read again next round, until a read comes after that tick.
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
  const int64_t read_at = static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
  if (options_.header_read) options_.header_read(path);
  if (!ReadTail(path, key, archived, tail, &st)) {
    if (cached != headers_.end()) headers_.erase(cached);
    return false;
  }
  HeaderFacts& facts = headers_[key];
  facts.size = st.st_size;
  facts.mtime_ns = MtimeNs(st);
  facts.settled = facts.mtime_ns < read_at;
  facts.archived = *archived;
  facts.tail = *tail;
  return true;
}

JournalInput::~JournalInput() {
  Stop();
  absl::MutexLock lock(&mu_);
  for (auto& [id, w] : writers_) {
    if (w.owned && w.journal != nullptr) sd_journal_close(w.journal);
  }
  if (journal_ != nullptr) sd_journal_close(journal_);
}

void JournalInput::Log(const std::string& message) const {
  if (options_.log) options_.log(message);
}

void JournalInput::Error(const std::string& message) {
  errors_->Increment();
  const std::string m = absl::StrCat("input ", config_.name(), ": ", message);
  if (m != last_error_) Log(m);  // when it starts or changes, not every round
  last_error_ = m;
}

void JournalInput::ReadLocked() {
  std::vector<Writer*> open;
  for (auto& [id, w] : writers_) {
    if (w.journal != nullptr) open.push_back(&w);
  }
  bool ok = true;
  const size_t first = open.empty() ? 0 : round_++ % open.size();
  for (size_t i = 0; i < open.size() && held_.size() < options_.batch_lines && scan_left_ > 0;
       ++i) {
    if (!ReadWriterLocked(*open[(first + i) % open.size()])) ok = false;
  }
  if (ok && !last_error_.empty()) {
    Log(absl::StrCat("input ", config_.name(), ": reading again"));
    last_error_.clear();
  }
}

bool JournalInput::ReadWriterLocked(Writer& w) {
  sd_journal* const j = w.journal;
  const size_t max = options_.max_line_bytes;
  std::string host, ident, uid, pid, message;
  // The cursor is formatted once per round, for the last entry read (sd_journal_next returning
  // 0 or failing leaves the current entry where it was): a third of the reading time when it
  // was taken per entry.
  bool moved = false;
  auto mark = [&] {
    if (!moved) return;
    char* cursor = nullptr;
    if (const int r = sd_journal_get_cursor(j, &cursor); r < 0) {
      Error(absl::StrCat("reading an entry's cursor: ", Errno(r)));
      return;
    }
    pending_cursor_ = cursor;
    if (!w.id.empty()) pending_cursors_[w.id] = cursor;
    std::free(cursor);
  };
  // Whether this read reached the writer's end: its position is then its last entry, so its
  // files removed later lose nothing (JournalCheckpoint.writers_at_end).
  if (!w.id.empty()) pending_at_end_.erase(w.id);
  // With matches, what the files held before this read is scanned once it reaches their end
  // (read first: an entry written meanwhile may not have been).
  const uint64_t tail = !w.id.empty() && config_.matches_size() > 0 ? TailLocked(w) : 0;
  while (held_.size() < options_.batch_lines && scan_left_ > 0) {
    int r = sd_journal_next(j);
    if (r < 0) {
      mark();
      Error(absl::StrCat("reading the journal: ", Errno(r)));
      // A handle that fails is not kept for the files removed under it (it might never reach
      // their end): reopened over the files listed, a gap after its cursor counted then.
      if (w.holds_removed) {
        w.reopen = true;
        relist_ = true;
      }
      return false;
    }
    if (r == 0) {
      if (!w.id.empty()) pending_at_end_.insert(w.id);
      uint64_t through = tail;
      if (w.holds_removed) {  // read past the files removed: reopened without them
        // With matches, what it scanned is taken from the handle: a removed file's header can
        // no longer be read by its path, and the one read a round earlier misses the entries
        // written to it since (then counted as a gap at the reopen). The handle holds exactly
        // what it scanned; an entry written to a file of it still listed after this read ended
        // is counted in too, though the reopened handle reads it (on from the cursor).
        if (!w.id.empty() && config_.matches_size() > 0) {
          through = std::max(through, LastSeqnum(j));
          for (const std::string& m : config_.matches()) {
            sd_journal_add_match(j, m.data(), m.size());  // reopened before it is read again
          }
        }
        w.reopen = true;
        relist_ = true;
        reopen_due_ = true;
      }
      if (through > 0) {
        uint64_t& scanned = pending_scanned_[w.id];
        scanned = std::max(scanned, through);
      }
      break;
    }
    moved = true;
    --scan_left_;
    uint64_t usec = 0;
    if ((r = sd_journal_get_realtime_usec(j, &usec)) < 0) {
      mark();
      Error(absl::StrCat("reading an entry's time: ", Errno(r)));
      return false;
    }
    // A process of a user's (SystemUid, not one of trusted_uids): its MESSAGE is as much the
    // user's as its tag, and the rules that name no programs read any tag, so it is skipped
    // unless read_user_entries (before its MESSAGE is inflated), and read past as an entry
    // without MESSAGE is. No _UID at all: the kernel's entries, which no process sent: read.
    // (The audit's carry the record's uid= as _UID: judged by it.)
    uint64_t uid_number = 0;
    const bool user = Field(j, "_UID", 16, &uid, nullptr) &&
                      !(ParseUid(uid, &uid_number) &&
                        (SystemUid(uid_number) || trusted_uids_.count(uid_number) > 0));
    if (user && !config_.read_user_entries()) {
      user_entry_->Increment();
      if (!warned_user_) {
        // Once: a daemon run as a regular uid (an `adduser mastodon` with a unit of its own)
        // loses its lines to this, and the counter alone goes unseen. Its unit, not its MESSAGE
        // (the user's words, maybe a secret), names what to trust. A value for trusted_uids is
        // suggested only for what may be a daemon's uid: the first entry skipped is most often
        // a person's (PersonsUnit), whose uid pasted in would read their words as a daemon's;
        // and one trusted_uids holds (uint32: a remote upload's _UID is any digits), written as
        // the number (a textproto reads a leading 0 as octal).
        warned_user_ = true;
        std::string unit;
        const bool has_unit = Field(j, "_SYSTEMD_UNIT", 256, &unit, nullptr);
        const bool suggest = ParseUid(uid, &uid_number) &&
                             uid_number <= std::numeric_limits<uint32_t>::max() &&
                             !(has_unit && PersonsUnit(unit));
        Log(absl::StrCat(
            "warning: input ", config_.name(),
            ": skipping the entries of users' processes (_UID not a system account's; the "
            "first: _UID=", Token(uid, 16),
            has_unit ? absl::StrCat(", _SYSTEMD_UNIT=", Token(unit, 128)) : "",
            "), counted in palisade_journal_skipped_total{reason=\"user_entry\"}. ",
            suggest ? absl::StrCat("A daemon that runs as that uid: trusted_uids: ", uid_number,
                                   "; ")
                    : "That one is no daemon's uid to trust (a login session's or a user "
                      "manager's processes, or no uid_t): if the counter grows with a daemon's "
                      "entries, its own uid goes in trusted_uids; ",
            "read_user_entries: true reads every user's, only where every local user is "
            "trusted. Logged once."));
      }
      continue;
    }
    size_t message_size = 0;
    if (!Field(j, "MESSAGE", max, &message, &message_size)) {
      no_message_->Increment();
      continue;
    }
    if (!Field(j, "_HOSTNAME", 256, &host, nullptr)) host.clear();
    if (!Field(j, "SYSLOG_IDENTIFIER", 256, &ident, nullptr) &&
        !Field(j, "_COMM", 256, &ident, nullptr)) {
      ident.clear();
    }
    // Read, a user's entry keeps its identifier behind "user-UID/", as journald names the
    // journal it keeps such entries in: still plain to read and to write a rule for, never a
    // daemon's name (none starts so), and first, where the tag's cut cannot drop it.
    if (user) ident = absl::StrCat("user-", AllDigits(uid) ? uid : "_", "/", ident);
    if (!Field(j, "_PID", 16, &pid, nullptr)) pid.clear();
    const absl::Time when = absl::FromUnixMicros(static_cast<int64_t>(usec));
    palisade::v1::LogRecord record;
    // One byte past the cap: the pipeline then sees a line over its cap as longer, cuts it and
    // flags it (ParsedLine::cut); cut to exactly the cap here, a forged tail right before the
    // cut would read as the writer's end to rules pinned to `$`.
    record.set_line(BuildLine(when, host, ident, pid, message, max + 1));
    record.mutable_event_time()->set_seconds(static_cast<int64_t>(usec / 1000000));
    record.mutable_event_time()->set_nanos(static_cast<int32_t>(usec % 1000000) * 1000);
    held_bytes_ += message_size;
    pending_newest_ = std::max(pending_newest_, when);
    held_.push_back(std::move(record));
  }
  mark();
  return true;
}

bool JournalInput::CheckDirectoryLocked() {
  if (config_.directory().empty()) return true;
  struct stat st;
  if (::stat(config_.directory().c_str(), &st) != 0) {
    Error(absl::StrCat("directory ", config_.directory(), ": ", std::strerror(errno),
                       " (retried every round)"));
    return false;
  }
  if (journal_ == nullptr || st.st_dev != directory_device_ || st.st_ino != directory_inode_) {
    // Removed and made again (or never opened): sd_journal watches the old one only, so it is
    // opened anew; the writers are read on from their positions (a new one from its head).
    Log(absl::StrCat("input ", config_.name(), ": directory ", config_.directory(),
                     " was replaced; opening it again"));
    if (journal_ != nullptr) sd_journal_close(journal_);
    journal_ = nullptr;
    if (const int r = sd_journal_open_directory(&journal_, config_.directory().c_str(), 0);
        r < 0) {
      journal_ = nullptr;
      Error(absl::StrCat("cannot open the journal: ", Errno(r)));
      return false;
    }
    directory_device_ = st.st_dev;
    directory_inode_ = st.st_ino;
    watched_ = sd_journal_get_fd(journal_) >= 0;
    relist_ = true;
  }
  // sd_journal watches the directory (and its machine-id subdirectories): a file added (a new
  // host, a rotation's new name) or removed (a vacuum) is reported as SD_JOURNAL_INVALIDATE
  // (libsystemd 252 reports both), here or by the thread's sd_journal_wait. The interval is a
  // safety net, and tries again the files whose header could not be read.
  const absl::Time now = options_.clock->TimeNow();
  const bool periodic = now - listed_at_ >= options_.list_interval;
  if (sd_journal_process(journal_) == SD_JOURNAL_INVALIDATE || !watched_ || periodic) {
    relist_ = true;
  }
  if (!relist_) return true;
  if (periodic) unreadable_.clear();
  std::vector<FoundFile> found;
  std::string error;
  if (!ListDirectory(&found, &error)) {
    Error(error);
    return false;
  }
  relist_ = false;  // set again by GroupLocked for a writer whose files it could not open
  listed_at_ = now;
  GroupLocked(found, /*initial=*/false).IgnoreError();  // errors counted per writer
  return true;
}

size_t JournalInput::PollOnce(bool* more) {
  if (more != nullptr) *more = false;
  absl::MutexLock lock(&mu_);
  const bool listed = CheckDirectoryLocked();
  bool cut = false;  // the scan bound stopped the reading: entries are left
  if (held_.empty() && listed) {
    scan_left_ = static_cast<size_t>(options_.batch_lines) * kScanPerBatch;
    reopen_due_ = false;
    ReadLocked();
    // A writer read past the files removed under it: reopened now over its files listed, and
    // read on into them (its next file), rather than a round that delivers nothing first.
    if (reopen_due_ && held_.size() < options_.batch_lines && scan_left_ > 0 &&
        CheckDirectoryLocked()) {
      ReadLocked();
    }
    reopen_due_ = false;
    cut = scan_left_ == 0;
  }
  if (held_.empty()) {
    // Entries skipped (no MESSAGE, a user's) are taken too: a restart does not look at them
    // again. A round that only skipped entries up to the scan bound says so: the thread reads
    // on at once rather than wait on a journal that has more.
    if (more != nullptr) *more = cut;
    taken_cursor_ = pending_cursor_;
    taken_cursors_ = pending_cursors_;
    taken_at_end_ = pending_at_end_;
    taken_scanned_ = pending_scanned_;
  } else {
    palisade::v1::LogBatch batch;
    batch.set_source(config_.source());
    batch.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
    batch.mutable_records()->Reserve(static_cast<int>(held_.size()));
    for (auto& r : held_) *batch.add_records() = std::move(r);
    absl::Status s = sink_(batch);
    if (!s.ok()) {
      // Kept to be offered again: nothing is skipped.
      for (int i = 0; i < batch.records_size(); ++i) {
        held_[static_cast<size_t>(i)] = std::move(*batch.mutable_records(i));
      }
      Error(absl::StrCat("batch refused: ", s.message()));
      return 0;
    }
    const size_t n = held_.size();
    if (more != nullptr) *more = n >= options_.batch_lines || cut;
    lines_->Increment(static_cast<double>(n));
    bytes_->Increment(static_cast<double>(held_bytes_));
    held_.clear();
    held_bytes_ = 0;
    taken_cursor_ = pending_cursor_;
    taken_cursors_ = pending_cursors_;
    taken_at_end_ = pending_at_end_;
    taken_scanned_ = pending_scanned_;
    taken_newest_ = std::max(taken_newest_, pending_newest_);
    if (taken_newest_ != absl::InfinitePast()) {
      lag_->Set(std::max(0.0, absl::ToDoubleSeconds(options_.clock->TimeNow() - taken_newest_)));
    }
    return n;
  }
  if (taken_newest_ != absl::InfinitePast()) {
    lag_->Set(std::max(0.0, absl::ToDoubleSeconds(options_.clock->TimeNow() - taken_newest_)));
  }
  return 0;
}

void JournalInput::Start() {
  thread_ = std::thread([this] {
    while (!stop_.HasBeenNotified()) {
      bool more = false;
      PollOnce(&more);
      if (more) continue;  // a full batch, or the scan bound: more is waiting
      if (journal_ == nullptr) {  // a directory gone: looked for again next round
        stop_.WaitForNotificationWithTimeout(options_.wait_interval);
        continue;
      }
      // Quiet (or a batch refused): wait for the journal to change, at most wait_interval.
      const int r = sd_journal_wait(
          journal_, static_cast<uint64_t>(absl::ToInt64Microseconds(options_.wait_interval)));
      if (r == SD_JOURNAL_INVALIDATE) {  // a file added: the next round lists the directory
        absl::MutexLock lock(&mu_);
        relist_ = true;
      }
      if (r < 0) {
        {
          absl::MutexLock lock(&mu_);
          Error(absl::StrCat("waiting on the journal: ", Errno(r)));
        }
        stop_.WaitForNotificationWithTimeout(options_.wait_interval);
      }
    }
  });
}

void JournalInput::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

palisade::v1::JournalCheckpoint JournalInput::CheckpointLocked() const {
  palisade::v1::JournalCheckpoint c;
  c.set_input(config_.name());
  c.set_cursor(taken_cursor_);
  for (const auto& [id, cursor] : taken_cursors_) {
    c.add_writer_cursors(cursor);
    if (taken_at_end_.count(id) > 0) c.add_writers_at_end(id);
    if (auto s = taken_scanned_.find(id); s != taken_scanned_.end()) {
      (*c.mutable_writers_scanned())[id] = s->second;
    }
    if (gone_.count(id) > 0) c.add_writers_gone(id);
  }
  return c;
}

void JournalInput::Consistent(
    const std::function<void(const palisade::v1::JournalCheckpoint&)>& fn) {
  absl::MutexLock lock(&mu_);
  fn(CheckpointLocked());
}

JournalsHeld::JournalsHeld(const std::vector<std::unique_ptr<JournalInput>>& inputs)
    ABSL_NO_THREAD_SAFETY_ANALYSIS : inputs_(inputs) {
  for (const auto& input : inputs_) {
    input->mu_.Lock();
    if (input->taken_cursor_.empty() && input->taken_cursors_.empty()) continue;
    cursors_.push_back(input->CheckpointLocked());
  }
}

JournalsHeld::~JournalsHeld() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (auto it = inputs_.rbegin(); it != inputs_.rend(); ++it) (*it)->mu_.Unlock();
}

}  // namespace palisade
