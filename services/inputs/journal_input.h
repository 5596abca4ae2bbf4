// A journald input (issue 14 §1): the config's `inputs { journal { ... } }`, read through
// sd_journal (libsystemd) as `journalctl -f` reads it, on a thread of its own that hands batches
// to a sink (the daemon's Pipeline::ProcessBatch, the path file and gRPC batches take).
//
// Each entry becomes one LogRecord of format syslog: the line is rebuilt as
//   "<realtime, RFC 3339 UTC> <_HOSTNAME> <SYSLOG_IDENTIFIER or _COMM>[<_PID>]: <MESSAGE>"
// and event_time is the entry's realtime stamp, so the syslog rules (sshd...) and sessions keyed
// by pid work unchanged. What the writer of an entry controls cannot pass for the header: host
// and identifier are cut to the characters a syslog tag may hold (others become '_'), a pid that
// is not digits is left out, and MESSAGE comes after the header, its CR and LF turned to spaces
// (an entry is one line) and cut at max_line_bytes. The time is the journal's, never one parsed
// from MESSAGE. Entries without MESSAGE are skipped and counted.
//
// Exactness across restarts, as the file inputs: a batch's entries are counted once the sink
// returned OK, and the cursor of the last of them is what Consistent() reports, so the daemon
// saves the engine's windows and these cursors as one snapshot. A restart seeks to the saved
// cursor and reads on from the entry after it (none lost, none twice). A cursor that is no longer
// in the journal (vacuumed) is logged and counted, and the journal is read from its head.
// A batch the sink refuses is kept and offered again (nothing skipped).
//
// Errors: a journal (directory or file) that cannot be opened refuses the start, naming the input
// (kNotFound / kPermissionDenied / kInvalidArgument); an error while reading is logged when it
// starts or changes, counted in palisade_input_errors_total{input}, and retried every round. A
// directory removed while running is such an error; made again, it is opened anew and read on
// after the last entry read (from its head when that entry is not in it).
// Metrics per input: palisade_input_lines_total, palisade_input_bytes_total (shared with the file
// inputs), palisade_journal_lag_seconds (now - realtime of the newest entry taken),
// palisade_journal_skipped_total{reason}, palisade_journal_cursor_lost_total.
//
// Thread-safety: Start/Stop from one thread; Consistent from any thread. The sd_journal handle is
// used only by Create and then the input's own thread.
#ifndef PALISADE_SERVICES_INPUTS_JOURNAL_INPUT_H_
#define PALISADE_SERVICES_INPUTS_JOURNAL_INPUT_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "palisade/v1/state.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/inputs/file_inputs.h"

typedef struct sd_journal sd_journal;

namespace palisade {

struct JournalInputOptions {
  // The longest sd_journal_wait: how soon Stop() is seen while the journal is quiet.
  absl::Duration wait_interval = absl::Milliseconds(50);
  uint32_t batch_lines = 1000;
  size_t max_line_bytes = 16 * 1024;
  // Where each journal input stood at the last snapshot (EngineSnapshot.journal_cursors).
  std::vector<palisade::v1::JournalCheckpoint> checkpoints;
  std::function<void(const std::string&)> log;
  Clock* clock = nullptr;  // for the lag; default the real clock
};

class JournalInput {
 public:
  // Validates the config (name, matches as FIELD=value, directory or files) and opens the
  // journal, seeking past the saved cursor: errors name the input ("inputs.journal[i] (\"x\"): ").
  static absl::StatusOr<std::unique_ptr<JournalInput>> Create(
      int index, const palisade::v1::JournalInput& config, JournalInputOptions options,
      BatchSink sink, prometheus::Registry& registry);
  ~JournalInput();
  JournalInput(const JournalInput&) = delete;
  JournalInput& operator=(const JournalInput&) = delete;

  const std::string& name() const { return config_.name(); }
  const std::string& source() const { return config_.source(); }

  // Starts / stops the reading thread. Stop waits for the batch in flight (at most one
  // wait_interval more).
  void Start();
  void Stop();

  // One round (what the thread does before each wait): reads up to batch_lines entries and
  // delivers them. Returns the entries delivered. Only from one thread, and not while started.
  size_t PollOnce();

  // Runs `fn` with this input's position (empty cursor: nothing taken yet) while no batch is in
  // flight.
  void Consistent(const std::function<void(const palisade::v1::JournalCheckpoint&)>& fn);
  friend class JournalsHeld;

  // Builds the syslog line of an entry from its fields (exposed for tests). `message` is cut
  // at max_line_bytes.
  static std::string BuildLine(absl::Time realtime, absl::string_view hostname,
                               absl::string_view identifier, absl::string_view pid,
                               absl::string_view message, size_t max_line_bytes);

 private:
  JournalInput(palisade::v1::JournalInput config, JournalInputOptions options, BatchSink sink);
  // Opens the journal and seeks past `cursor` (*found: it was there; else from the head).
  absl::Status Open(const std::string& where, const std::string& cursor, bool* found);
  // A directory input whose directory was removed and made again is opened anew (sd_journal
  // would watch the old one forever); one that is gone is an error counted every round.
  void CheckDirectoryLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads entries into held_ (and pending_cursor_); false when the journal failed.
  void ReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Error(const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(const std::string& message) const;

  palisade::v1::JournalInput config_;
  JournalInputOptions options_;
  BatchSink sink_;
  sd_journal* journal_ = nullptr;  // null while a replaced directory cannot be opened
  std::string where_;             // "inputs.journal[i] (\"name\"): ", for errors
  std::string restored_cursor_;
  uint64_t directory_device_ = 0;  // the opened directory's identity
  uint64_t directory_inode_ = 0;

  absl::Mutex mu_;  // held across a round: a batch in flight excludes Consistent
  std::vector<palisade::v1::LogRecord> held_ ABSL_GUARDED_BY(mu_);
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::string pending_cursor_ ABSL_GUARDED_BY(mu_);  // of the last entry in held_
  absl::Time pending_newest_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string taken_cursor_ ABSL_GUARDED_BY(mu_);    // of the last entry the sink took
  absl::Time taken_newest_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_error_ ABSL_GUARDED_BY(mu_);

  prometheus::Counter* lines_ = nullptr;
  prometheus::Counter* bytes_ = nullptr;
  prometheus::Counter* errors_ = nullptr;
  prometheus::Counter* no_message_ = nullptr;
  prometheus::Counter* cursor_lost_ = nullptr;
  prometheus::Gauge* lag_ = nullptr;

  absl::Notification stop_;
  std::thread thread_;
};

// Holds every journal input's lock from construction to destruction, so that no journal batch
// is in flight while the daemon takes the engine's windows, and gives their positions (inputs
// that took nothing yet are left out). Locks are taken in the vector's order.
class JournalsHeld {
 public:
  explicit JournalsHeld(const std::vector<std::unique_ptr<JournalInput>>& inputs);
  ~JournalsHeld();
  JournalsHeld(const JournalsHeld&) = delete;
  JournalsHeld& operator=(const JournalsHeld&) = delete;
  const std::vector<palisade::v1::JournalCheckpoint>& cursors() const { return cursors_; }

 private:
  const std::vector<std::unique_ptr<JournalInput>>& inputs_;
  std::vector<palisade::v1::JournalCheckpoint> cursors_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_JOURNAL_INPUT_H_
