#include "services/inputs/file_inputs.h"

#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

std::vector<std::string> Glob(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g;
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      struct stat st;
      if (::stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode) && !Compressed(g.gl_pathv[i])) {
        out.emplace_back(g.gl_pathv[i]);
      }
    }
  }
  ::globfree(&g);
  return out;
}

}  // namespace

bool ValidInputName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<FileInputs>> FileInputs::Create(
    const palisade::v1::InputsConfig& config, FileInputsOptions options, BatchSink sink,
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
  auto& lag = prometheus::BuildGauge()
                  .Name("palisade_input_lag_bytes")
                  .Help("Bytes written to a file input's files and not yet taken.")
                  .Register(registry);
  std::set<std::string> names;
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
    for (const std::string& path : f.paths()) {
      if (path.empty() || path[0] != '/') {
        return absl::InvalidArgumentError(where + "path \"" + path + "\" must be absolute");
      }
      if (IsGlob(path)) continue;
      // A file that is there but cannot be read is a mistake to say at once; one that is not
      // there yet is waited for.
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
    input.lag = &lag.Add({{"input", f.name()}});
    inputs->inputs_.push_back(std::move(input));
  }
  for (Input& input : inputs->inputs_) inputs->DiscoverLocked(input);
  return inputs;
}

FileInputs::~FileInputs() { Stop(); }

void FileInputs::Log(const std::string& message) const {
  if (options_.log) options_.log(message);
}

void FileInputs::DiscoverLocked(Input& input) {
  std::vector<std::string> paths;
  for (const std::string& p : input.config.paths()) {
    if (IsGlob(p)) {
      for (std::string& m : Glob(p)) paths.push_back(std::move(m));
    } else {
      paths.push_back(p);
    }
  }
  for (const std::string& path : paths) {
    if (input.files.count(path) > 0) continue;
    std::optional<palisade::v1::FileCheckpoint> from;
    for (const auto& c : options_.checkpoints) {
      if (c.input() == input.config.name() && c.path() == path) from = c;
    }
    FileFollowerOptions follower;
    follower.max_line_bytes = options_.max_line_bytes;
    File& file = input.files[path];
    file.follower = std::make_unique<FileFollower>(path, follower, from);
    file.taken = file.follower->checkpoint();
  }
}

namespace {

// A batch whose lines held more than this is not kept for reuse once taken: the strings'
// capacity would otherwise stay allocated per file (up to batch_lines * max_line_bytes when
// a sender writes long lines).
constexpr size_t kReuseBatchBytes = 1 << 20;

}  // namespace

size_t FileInputs::PollFileLocked(Input& input, const std::string& path, File& file) {
  palisade::v1::LogBatch& batch = file.held;
  if (batch.records_size() == 0) {
    // Cleared records are kept by the repeated field and handed out again by add_records():
    // their strings keep their capacity.
    auto* records = batch.mutable_records();
    absl::StatusOr<size_t> n = file.follower->Poll(
        options_.batch_lines,
        [records](absl::string_view line) { records->Add()->set_line(line.data(), line.size()); });
    if (!n.ok()) {
      input.errors->Increment();
      const std::string message = absl::StrCat("input ", input.config.name(), ": ", n.status().message());
      // Logged when it starts or changes, not every poll.
      if (last_error_[path] != message) Log(message);
      last_error_[path] = message;
    } else if (last_error_.erase(path) > 0) {
      Log(absl::StrCat("input ", input.config.name(), ": ", path, " readable again"));
    }
  }
  if (batch.records_size() == 0) return 0;
  batch.set_source(input.config.source());
  batch.set_format(input.format);
  batch.set_json_format(input.config.json_format());
  absl::Status s = sink_(batch);
  if (!s.ok()) {
    // Kept to be offered again: nothing is skipped.
    input.errors->Increment();
    Log(absl::StrCat("input ", input.config.name(), ": batch refused: ", s.message()));
    return 0;
  }
  const size_t n = static_cast<size_t>(batch.records_size());
  size_t bytes = 0;
  for (const auto& record : batch.records()) bytes += record.line().capacity();
  if (bytes > kReuseBatchBytes) {
    palisade::v1::LogBatch().Swap(&batch);  // released
  } else {
    batch.mutable_records()->Clear();  // kept for the next batch
  }
  file.taken = file.follower->checkpoint();
  return n;
}

void FileInputs::PublishLocked(Input& input, const std::string& path, const File& file) {
  const FollowerStats& now = file.follower->stats();
  FollowerStats& was = input.published[path];
  input.bytes->Increment(static_cast<double>(now.bytes - was.bytes));
  input.rotations->Increment(static_cast<double>(now.rotations - was.rotations));
  input.truncations->Increment(static_cast<double>(now.truncations - was.truncations));
  was = now;
}

size_t FileInputs::PollOnce() {
  absl::MutexLock lock(&mu_);
  size_t total = 0;
  for (Input& input : inputs_) {
    DiscoverLocked(input);
    double lag = 0;
    for (auto& [path, file] : input.files) {
      // A busy file gets several batches a round, up to a bound so the others get their turn.
      for (int i = 0; i < 16; ++i) {
        const size_t n = PollFileLocked(input, path, file);
        input.lines->Increment(static_cast<double>(n));
        total += n;
        if (n < options_.batch_lines) break;
      }
      PublishLocked(input, path, file);
      lag += static_cast<double>(file.follower->lag_bytes());
    }
    input.lag->Set(lag);
  }
  return total;
}

void FileInputs::Start() {
  thread_ = std::thread([this] {
    while (!stop_.HasBeenNotified()) {
      // A round that delivered a full batch goes again at once; a quiet one waits.
      if (PollOnce() < options_.batch_lines) {
        stop_.WaitForNotificationWithTimeout(options_.poll_interval);
      }
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
    for (const auto& [path, file] : input.files) {
      palisade::v1::FileCheckpoint c = file.taken;
      if (c.inode() == 0) continue;  // never opened
      c.set_input(input.config.name());
      c.set_path(path);
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
