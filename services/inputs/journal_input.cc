#include "services/inputs/journal_input.h"

#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

std::string Errno(int negative) { return std::strerror(-negative); }

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
    if (c.input() == config.name()) input->restored_cursor_ = c.cursor();
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
                      .Help("Journal entries not turned into lines, by reason (no_message).")
                      .Register(registry);
  input->no_message_ = &skipped.Add({{"input", config.name()}, {"reason", "no_message"}});
  input->cursor_lost_ = &prometheus::BuildCounter()
                             .Name("palisade_journal_cursor_lost_total")
                             .Help("Saved journal cursors no longer in the journal (vacuumed): "
                                   "the journal was read from its head.")
                             .Register(registry)
                             .Add(labels);
  input->lag_ = &prometheus::BuildGauge()
                     .Name("palisade_journal_lag_seconds")
                     .Help("Now less the realtime stamp of the newest journal entry taken.")
                     .Register(registry)
                     .Add(labels);
  input->where_ = where;
  bool found = false;
  if (absl::Status s = input->Open(where, input->restored_cursor_, &found); !s.ok()) return s;
  if (found) {
    absl::MutexLock lock(&input->mu_);
    input->taken_cursor_ = input->restored_cursor_;
    input->pending_cursor_ = input->restored_cursor_;
  }
  return input;
}

absl::Status JournalInput::Open(const std::string& where, const std::string& cursor,
                                bool* found) {
  int r;
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
  } else if (config_.files_size() > 0) {
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
    }
    paths.push_back(nullptr);
    r = sd_journal_open_files(&journal_, paths.data(), 0);
  } else {
    r = sd_journal_open(&journal_, SD_JOURNAL_LOCAL_ONLY);
  }
  if (r < 0) {
    journal_ = nullptr;
    return absl::UnavailableError(absl::StrCat(where, "cannot open the journal: ", Errno(r)));
  }
  // The system journal opens without error when none of its files can be read (palisaded not
  // root nor in the systemd-journal group): said at once rather than reading nothing silently.
  if (config_.directory().empty() && config_.files_size() == 0 &&
      sd_journal_has_runtime_files(journal_) <= 0 && sd_journal_has_persistent_files(journal_) <= 0) {
    Log(absl::StrCat("input ", config_.name(),
                     ": no system journal file is readable yet (is palisaded root or in the "
                     "systemd-journal group?); waiting for one"));
  }
  // Compressed fields are inflated only this far: a huge MESSAGE costs no more than a line.
  sd_journal_set_data_threshold(journal_, options_.max_line_bytes + 64);
  // The saved cursor is found before the matches are added, so that the entry it names is
  // found even if the matches changed; the matches then apply to the entries after it.
  *found = false;
  if (!cursor.empty()) {
    if (sd_journal_seek_cursor(journal_, cursor.c_str()) >= 0 && sd_journal_next(journal_) > 0 &&
        sd_journal_test_cursor(journal_, cursor.c_str()) > 0) {
      *found = true;
    }
    if (!*found) {
      cursor_lost_->Increment();
      Log(absl::StrCat("input ", config_.name(),
                       ": the saved journal cursor is no longer in the journal (vacuumed?); "
                       "reading from the journal's head"));
    }
  }
  if (!*found) sd_journal_seek_head(journal_);
  for (const std::string& m : config_.matches()) {
    r = sd_journal_add_match(journal_, m.data(), m.size());
    if (r < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "match \"", absl::CHexEscape(m.substr(0, 80)), "\": ", Errno(r)));
    }
  }
  return absl::OkStatus();
}

JournalInput::~JournalInput() {
  Stop();
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
  const size_t max = options_.max_line_bytes;
  std::string host, ident, pid, message;
  // The cursor is formatted once per round, for the last entry read (sd_journal_next returning
  // 0 or failing leaves the current entry where it was): a third of the reading time when it
  // was taken per entry.
  bool moved = false;
  auto mark = [&] {
    if (!moved) return;
    char* cursor = nullptr;
    if (const int r = sd_journal_get_cursor(journal_, &cursor); r < 0) {
      Error(absl::StrCat("reading an entry's cursor: ", Errno(r)));
      return;
    }
    pending_cursor_ = cursor;
    std::free(cursor);
  };
  while (held_.size() < options_.batch_lines) {
    int r = sd_journal_next(journal_);
    if (r < 0) {
      mark();
      Error(absl::StrCat("reading the journal: ", Errno(r)));
      return;
    }
    if (r == 0) break;
    moved = true;
    uint64_t usec = 0;
    if ((r = sd_journal_get_realtime_usec(journal_, &usec)) < 0) {
      mark();
      Error(absl::StrCat("reading an entry's time: ", Errno(r)));
      return;
    }
    size_t message_size = 0;
    if (!Field(journal_, "MESSAGE", max, &message, &message_size)) {
      no_message_->Increment();
      continue;
    }
    if (!Field(journal_, "_HOSTNAME", 256, &host, nullptr)) host.clear();
    if (!Field(journal_, "SYSLOG_IDENTIFIER", 256, &ident, nullptr) &&
        !Field(journal_, "_COMM", 256, &ident, nullptr)) {
      ident.clear();
    }
    if (!Field(journal_, "_PID", 16, &pid, nullptr)) pid.clear();
    const absl::Time when = absl::FromUnixMicros(static_cast<int64_t>(usec));
    palisade::v1::LogRecord record;
    record.set_line(BuildLine(when, host, ident, pid, message, max));
    record.mutable_event_time()->set_seconds(static_cast<int64_t>(usec / 1000000));
    record.mutable_event_time()->set_nanos(static_cast<int32_t>(usec % 1000000) * 1000);
    held_bytes_ += message_size;
    pending_newest_ = std::max(pending_newest_, when);
    held_.push_back(std::move(record));
  }
  mark();
  if (!last_error_.empty()) {
    Log(absl::StrCat("input ", config_.name(), ": reading again"));
    last_error_.clear();
  }
}

void JournalInput::CheckDirectoryLocked() {
  if (config_.directory().empty()) return;
  struct stat st;
  if (::stat(config_.directory().c_str(), &st) != 0) {
    Error(absl::StrCat("directory ", config_.directory(), ": ", std::strerror(errno),
                       " (retried every round)"));
    return;
  }
  if (journal_ != nullptr && st.st_dev == directory_device_ && st.st_ino == directory_inode_) {
    return;
  }
  // Removed and made again (or never opened): sd_journal watches the old one only, so the
  // journal is opened anew and read on after the last entry read, if it is there.
  Log(absl::StrCat("input ", config_.name(), ": directory ", config_.directory(),
                   " was replaced; opening it again"));
  if (journal_ != nullptr) sd_journal_close(journal_);
  journal_ = nullptr;
  bool found = false;
  if (absl::Status s = Open(where_, pending_cursor_, &found); !s.ok()) {
    if (journal_ != nullptr) sd_journal_close(journal_);
    journal_ = nullptr;
    Error(std::string(s.message()));
  }
}

size_t JournalInput::PollOnce() {
  absl::MutexLock lock(&mu_);
  CheckDirectoryLocked();
  if (held_.empty() && journal_ != nullptr) ReadLocked();
  if (held_.empty()) {
    // Entries skipped (no MESSAGE) are taken too: a restart does not look at them again.
    taken_cursor_ = pending_cursor_;
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
    lines_->Increment(static_cast<double>(n));
    bytes_->Increment(static_cast<double>(held_bytes_));
    held_.clear();
    held_bytes_ = 0;
    taken_cursor_ = pending_cursor_;
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
      if (PollOnce() >= options_.batch_lines) continue;  // more may be waiting
      if (journal_ == nullptr) {  // a directory gone: looked for again next round
        stop_.WaitForNotificationWithTimeout(options_.wait_interval);
        continue;
      }
      // Quiet (or a batch refused): wait for the journal to change, at most wait_interval.
      const int r = sd_journal_wait(
          journal_, static_cast<uint64_t>(absl::ToInt64Microseconds(options_.wait_interval)));
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

void JournalInput::Consistent(
    const std::function<void(const palisade::v1::JournalCheckpoint&)>& fn) {
  absl::MutexLock lock(&mu_);
  palisade::v1::JournalCheckpoint c;
  c.set_input(config_.name());
  c.set_cursor(taken_cursor_);
  fn(c);
}

JournalsHeld::JournalsHeld(const std::vector<std::unique_ptr<JournalInput>>& inputs)
    ABSL_NO_THREAD_SAFETY_ANALYSIS : inputs_(inputs) {
  for (const auto& input : inputs_) {
    input->mu_.Lock();
    if (input->taken_cursor_.empty()) continue;
    palisade::v1::JournalCheckpoint c;
    c.set_input(input->config_.name());
    c.set_cursor(input->taken_cursor_);
    cursors_.push_back(std::move(c));
  }
}

JournalsHeld::~JournalsHeld() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (auto it = inputs_.rbegin(); it != inputs_.rend(); ++it) (*it)->mu_.Unlock();
}

}  // namespace palisade
