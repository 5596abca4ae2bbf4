// A journald input (issue 14 §1): the config's `inputs { journal { ... } }`, read through
// sd_journal (libsystemd) as `journalctl -f` reads it, on a thread of its own that hands batches
// to a sink (the daemon's Pipeline::ProcessBatch, the path file and gRPC batches take).
//
// Each entry becomes one LogRecord of format syslog: the line is rebuilt as
//   "<realtime, RFC 3339 UTC> <_HOSTNAME> <tag>[<_PID>]: <MESSAGE>"
// and event_time is the entry's realtime stamp, so the syslog rules (sshd...) and sessions keyed
// by pid work unchanged. The tag is SYSLOG_IDENTIFIER (else _COMM) and MESSAGE is the writer's:
// so an entry is read as is only when journald's _UID says a system account sent it (0..999,
// DynamicUser=, nobody; or one of trusted_uids), or when there is no _UID at all (the kernel's;
// the audit's carry the record's uid= as _UID, judged by it). A user's entry is skipped,
// counted (skipped_total{reason="user_entry"}) and read past, since its MESSAGE alone meets the
// rules that name no programs (`logger -t x "pam_unix(sshd:auth): authentication failure; ...
// rhost=VICTIM"`); the first one skipped is logged, once per input (its _UID and _SYSTEMD_UNIT,
// not its MESSAGE; a trusted_uids value is suggested only for a uint32 whose unit is not a
// login's session-N.scope nor a user manager's user@N.service). With read_user_entries it is
// read, tagged "user-UID/<identifier>" (`logger -t sshd` run by uid 1000: user-1000/sshd, not a
// program any daemon's rule names).
// In a directory or files (journal-remote's output) _UID is what the uploading host sent.
// A round scans at most 8 x batch_lines entries, skipped ones included, so that a backlog of
// them does not hold the lock snapshots wait for (PollOnce's `more`: read on at once).
// What the writer of an entry read controls cannot pass for the header: host and tag are cut
// to the characters a syslog tag may hold (others become '_'), a pid that is not digits is left
// out, and MESSAGE comes after the header, its CR and LF turned to spaces (an entry is one line)
// and the line cut one byte past max_line_bytes (so the pipeline sees it longer than its cap,
// cuts and flags it: its end is not the writer's). The time is the journal's, never one parsed
// from MESSAGE. Entries without MESSAGE are skipped and counted. A system account can still name
// itself anything (a web app's syslog() as www-data): `matches` on _SYSTEMD_UNIT keep an input
// to the daemons meant.
//
// Writers: a directory (a journal-remote output: remote-HOST.journal per host, rotated to
// remote-HOST@....journal) or a set of files may hold the entries of several writers (hosts,
// journalds), each numbering its entries in a sequence of its own (the sequence number id in
// each file's header, the cursors' "s="). One sd_journal over all of them orders different
// writers' entries by wall clock and reads only past its place in time, so a host whose clock
// is slow, or which uploads a backlog, would have its entries skipped. So each writer is read
// through an sd_journal of its own, on from its own position; the directory is listed again
// when sd_journal, watching it, reports a file added or removed (SD_JOURNAL_INVALIDATE: a new
// host, a rotation, a vacuum; libsystemd 252 reports both), and otherwise once per
// list_interval, a safety net, so that new hosts and rotated files are read. Not every round:
// while a backlog drains that would cost as much as the reading, under the lock snapshots wait
// for. A *.journal whose header cannot be read (no permission, empty or torn) is left out until
// its change time or size moves or the next periodic listing, not looked at every round.
// The system journal (no directory nor files) is one journald's: it is read as one.
//
// Exactness across restarts, as the file inputs: a batch's entries are counted once the sink
// returned OK, and the cursor of each writer's last entry among them is what Consistent()
// reports (JournalCheckpoint.writer_cursors), so the daemon saves the engine's windows and these
// cursors as one snapshot. A restart reads each writer on from the entry after its cursor, and a
// writer with no cursor from its head. None is read twice; none is lost unless the files
// holding a writer's unread entries were removed (vacuumed) first: its entries then resume at
// the first one left, and the gap, which the sequence numbers (the cursors' "i=") show, is
// logged and counted in cursor_lost (so is one found when a writer is reopened while running,
// on a file added). A file removed while running before the writer's handle read past it is
// read on through that handle, which holds it open, until the handle reads to its end (so a
// reader behind loses nothing to a vacuum); the writer's files added meanwhile (its next file)
// are read after it, from the handle reopened then, in the same round. So are a writer's last
// files: it is found gone once its handle read them to their end.
// With matches a cursor is the writer's last entry that matched: the entries after it that a
// read scanned to the writer's end (JournalCheckpoint.writers_scanned) are no gap.
// A checkpoint with one cursor (an older version's) is its writer's position, and the other
// writers are read on from its time. A writer none of whose files is left is logged; it is
// counted only when it had not been read to its end (JournalCheckpoint.writers_at_end: at a
// restart, or while running when its handle failed), as its unread entries went with its
// files; once: found gone while running, it is marked
// (JournalCheckpoint.writers_gone) and a restart does not log nor count it again. The other
// writers are not read again. For the system journal, a cursor no longer in it is logged and
// counted, and it is read from its head.
// A batch the sink refuses is kept and offered again (nothing skipped).
//
// Errors: a journal (directory or file) that cannot be opened refuses the start, naming the input
// (kNotFound / kPermissionDenied / kInvalidArgument / kUnavailable); an error while reading is
// logged when it starts or changes, counted in palisade_input_errors_total{input}, and retried
// every round. A directory removed while running is such an error; made again, it is opened
// anew and each writer read on from its position (a new one from its head).
// Metrics per input: palisade_input_lines_total, palisade_input_bytes_total (shared with the file
// inputs), palisade_journal_lag_seconds (now - realtime of the newest entry taken),
// palisade_journal_skipped_total{reason}, palisade_journal_cursor_lost_total.
//
// Thread-safety: Start/Stop from one thread; Consistent from any thread. The sd_journal handles
// are used only by Create and then the input's own thread.
#ifndef PALISADE_SERVICES_INPUTS_JOURNAL_INPUT_H_
#define PALISADE_SERVICES_INPUTS_JOURNAL_INPUT_H_

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
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
  // How often a directory input lists its directory when sd_journal reported no change: a
  // safety net (files added and removed are reported), and when files whose header could not
  // be read are tried again. A listing stats every file: cheap at this pace.
  absl::Duration list_interval = absl::Seconds(10);
  uint32_t batch_lines = 1000;
  size_t max_line_bytes = 16 * 1024;
  // Where each journal input stood at the last snapshot (EngineSnapshot.journal_cursors).
  std::vector<palisade::v1::JournalCheckpoint> checkpoints;
  std::function<void(const std::string&)> log;
  Clock* clock = nullptr;  // for the lag and when to list a directory; default the real clock
  // Called each time a directory input lists its directory (for tests).
  std::function<void()> listed;
  // Called with its path each time a journal file's header is read (for tests).
  std::function<void(const std::string&)> header_read;
};

class JournalInput {
 public:
  // Validates the config (name, matches as FIELD=value, directory or files) and opens the
  // journal, each writer past its saved cursor: errors name the input
  // ("inputs.journal[i] (\"x\"): ").
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
  // delivers them. Returns the entries delivered; `more`: the round stopped before the
  // journal's end (read on at once, without waiting). Only from one thread, and not while
  // started.
  size_t PollOnce(bool* more = nullptr);

  // Runs `fn` with this input's position (empty cursor and writer_cursors: nothing taken yet)
  // while no batch is in flight.
  void Consistent(const std::function<void(const palisade::v1::JournalCheckpoint&)>& fn);
  friend class JournalsHeld;

  // Builds the syslog line of an entry from its fields (exposed for tests). `message` is cut
  // at max_line_bytes.
  static std::string BuildLine(absl::Time realtime, absl::string_view hostname,
                               absl::string_view identifier, absl::string_view pid,
                               absl::string_view message, size_t max_line_bytes);

 private:
  // The entries of one writer: the files that share a sequence number id (the cursors' "s="),
  // i.e. one host's remote-HOST.journal and its rotated remote-HOST@....journal, or one
  // journald's files. sd_journal orders the entries of one writer by sequence number, exactly,
  // but those of different writers by wall clock; so each writer is read through an sd_journal
  // of its own, on from its own position.
  struct Writer {
    std::string id;  // the sequence number id, 32 hex digits; "" for the system journal
    // ((device, inode), the file id in its header), sorted: a new file that reused a removed
    // one's inode is told apart by its file id.
    std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> files;
    std::vector<std::string> paths;                    // in the order of files
    sd_journal* journal = nullptr;  // null while its files cannot be opened or are gone
    bool owned = true;              // false: the system journal, which is journal_
    // Nothing read yet: from its head (0), or its entries after this realtime (a checkpoint
    // that kept one cursor for all writers, see JournalCheckpoint).
    uint64_t start_after_usec = 0;
    // With matches, what a read that reaches the end has scanned through: the largest
    // tail_entry_seqnum of its archived files (read once, when opened; they are written no
    // more), and the indexes in `files` of the others, whose header facts are looked at before
    // each read (HeaderLocked: read again only once the file changed).
    uint64_t archived_tail = 0;
    std::vector<size_t> live;
    // Its handle still reads files removed since it was opened (all of them: a writer gone),
    // until it reads to its end; files, paths, archived_tail and live stay the handle's, and
    // files listed meanwhile wait.
    bool holds_removed = false;
    // Read to its end since (or failed): reopened at the next listing, or found gone, freeing
    // them.
    bool reopen = false;
  };
  struct FoundFile {
    std::pair<uint64_t, uint64_t> key;  // (device, inode)
    std::string path;
    int64_t ctime_ns = 0;  // its change time: another file with this inode has a later one
    int64_t size = 0;      // a file being made is empty until its header is written
    std::string file_id;   // its header's, once read
  };
  struct HeaderFacts {
    // The file's size and modification time when its header was read.
    int64_t size = 0;
    int64_t mtime_ns = 0;
    bool settled = false;  // modified before the read's clock tick: a later write changes it
    bool archived = false;
    uint64_t tail = 0;  // tail_entry_seqnum
  };
  struct CachedId {
    int64_t ctime_ns = 0;  // the file's change time when the ids were read from its header
    std::string id;        // its writer's
    std::string file_id;
  };

  JournalInput(palisade::v1::JournalInput config, JournalInputOptions options, BatchSink sink);
  // Opens the journal (journal_, and the writers found), each writer positioned after its
  // restored cursor; a restored writer none of whose files is left is logged and counted.
  absl::Status Open(const std::string& where) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The system journal (one writer): seeks past restored_cursor_, or its head when that is
  // not in it (logged and counted).
  absl::Status OpenSystem(const std::string& where) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The journal files of the directory (and of its machine-id subdirectories, as
  // sd_journal_open_directory reads them); false when it cannot be listed.
  bool ListDirectory(std::vector<FoundFile>* out, std::string* error) const;
  // Groups `found` by writer and (re)opens each writer a file was added to; one with a file
  // removed, or with none left, reads on with the handle it has, reopened (or closed, found
  // gone) once that reads to its end (Writer.holds_removed).
  // `initial`: the restored positions are applied (and errors returned).
  absl::Status GroupLocked(const std::vector<FoundFile>& found, bool initial)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Opens a writer's files, positioned after its position (pending_cursors_), else as its
  // start_after_usec says, and adds the matches. Entries between its cursor (or what was
  // scanned, pending_scanned_, if further) and the first one left (removed before they were
  // read) are logged and counted.
  absl::Status OpenWriterLocked(Writer& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets archived_tail and live from its files' headers (with matches only).
  void SplitArchivedLocked(Writer& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The largest sequence number in a writer's files now (0 when none can be read).
  uint64_t TailLocked(const Writer& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A journal file's header facts (archived, tail_entry_seqnum), from headers_ while the file
  // (`key`, at `path`) kept its size and modification time, else read (ReadTail); false when
  // neither can be had.
  bool HeaderLocked(const std::string& path, std::pair<uint64_t, uint64_t> key, bool* archived,
                    uint64_t* tail) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A writer none of whose files is left: logged, and counted lost unless it had been read to
  // its end (`at_end`).
  void WriterGoneLocked(const std::string& id, bool at_end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A directory input: a directory removed and made again is opened anew (sd_journal would
  // watch the old one forever); one that is gone is an error counted every round (false).
  // Then the directory is listed when a file was added to or removed from it, when a writer's
  // files could not be opened yet, or once list_interval passed since it was last listed (which
  // also tries again the files whose header could not be read), so that new writers and
  // rotated files are read.
  bool CheckDirectoryLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads entries into held_ (and the pending positions), writer after writer, a different
  // writer first each round so that a busy one cannot starve the others.
  void ReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads one writer's entries until held_ is full or scan_left_ runs out; false when its
  // journal failed.
  bool ReadWriterLocked(Writer& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  palisade::v1::JournalCheckpoint CheckpointLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Error(const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(const std::string& message) const;

  palisade::v1::JournalInput config_;
  JournalInputOptions options_;
  BatchSink sink_;
  // The journal waited on (sd_journal_wait) for changes: the directory's or the files' (then
  // only waited on; the writers are read), or the system journal, also read. Null while a
  // replaced directory cannot be opened.
  sd_journal* journal_ = nullptr;
  std::string where_;            // "inputs.journal[i] (\"name\"): ", for errors
  std::string restored_cursor_;  // JournalCheckpoint.cursor
  std::map<std::string, std::string> restored_;  // writer id -> its restored cursor
  std::set<std::string> restored_at_end_;        // JournalCheckpoint.writers_at_end
  std::map<std::string, uint64_t> restored_scanned_;  // JournalCheckpoint.writers_scanned
  std::set<std::string> restored_gone_;               // JournalCheckpoint.writers_gone
  uint64_t legacy_after_usec_ = 0;  // a checkpoint with one cursor: that cursor's realtime
  uint64_t directory_device_ = 0;   // the opened directory's identity
  uint64_t directory_inode_ = 0;

  absl::Mutex mu_;  // held across a round: a batch in flight excludes Consistent
  // By writer id. Used only by Create and then the input's own thread (under mu_).
  std::map<std::string, Writer> writers_ ABSL_GUARDED_BY(mu_);
  // The writer ids read from the files' headers, by (device, inode), for the files last seen.
  // An inode can be reused by another writer's file between two listings, so an id is read
  // again when the file's change time moved (which a file written to does too: the few live
  // files' headers are read again, the many rotated ones are not).
  std::map<std::pair<uint64_t, uint64_t>, CachedId> file_ids_ ABSL_GUARDED_BY(mu_);
  // The files last listed whose header could not be read, by (device, inode): their (change
  // time, size) then. Read again when either moved, or at the periodic listing.
  std::map<std::pair<uint64_t, uint64_t>, std::pair<int64_t, int64_t>> unreadable_
      ABSL_GUARDED_BY(mu_);
  // With matches, the header facts of the writers' files, by (device, inode): each read needs
  // its live files' tails (what it will have scanned), every writer's every round; a file whose
  // size and modification time did not move since costs a stat, not an open, a stat, a read
  // and a close. Dropped for files neither listed nor held by a writer's handle.
  std::map<std::pair<uint64_t, uint64_t>, HeaderFacts> headers_ ABSL_GUARDED_BY(mu_);
  size_t round_ ABSL_GUARDED_BY(mu_) = 0;  // which writer is read first
  // The directory is to be listed again: sd_journal reported a file added or removed, it was
  // opened anew, or a writer's files could not be opened. Always, when it cannot be watched.
  bool relist_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time listed_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();  // options_.clock's
  bool watched_ ABSL_GUARDED_BY(mu_) = false;  // sd_journal watches the directory (inotify)
  // A writer holding removed files read to its end this round: listed and reopened at once.
  bool reopen_due_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<palisade::v1::LogRecord> held_ ABSL_GUARDED_BY(mu_);
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Per writer id, the cursor of its last entry read (pending) and taken by the sink (taken);
  // kept for writers whose files are gone (a directory replaced may bring them back).
  std::map<std::string, std::string> pending_cursors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> taken_cursors_ ABSL_GUARDED_BY(mu_);
  // The writer ids whose last read reached their end, as of the pending and taken cursors.
  std::set<std::string> pending_at_end_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> taken_at_end_ ABSL_GUARDED_BY(mu_);
  // Per writer id, the sequence number its files held up to when a read last reached their end
  // (matches only), as of the pending and taken cursors (JournalCheckpoint.writers_scanned).
  std::map<std::string, uint64_t> pending_scanned_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> taken_scanned_ ABSL_GUARDED_BY(mu_);
  // The writer ids found with no file left while running, already logged and counted; cleared
  // when their files are back (JournalCheckpoint.writers_gone).
  std::set<std::string> gone_ ABSL_GUARDED_BY(mu_);
  std::string pending_cursor_ ABSL_GUARDED_BY(mu_);  // of the last entry in held_
  absl::Time pending_newest_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string taken_cursor_ ABSL_GUARDED_BY(mu_);    // of the last entry the sink took
  absl::Time taken_newest_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  // Entries this round may still scan (sd_journal_next): set by PollOnce, 0 stops the reading.
  size_t scan_left_ ABSL_GUARDED_BY(mu_) = 0;
  bool warned_user_ ABSL_GUARDED_BY(mu_) = false;  // the first user entry skipped was logged
  std::set<uint64_t> trusted_uids_;                // config_.trusted_uids

  prometheus::Counter* lines_ = nullptr;
  prometheus::Counter* bytes_ = nullptr;
  prometheus::Counter* errors_ = nullptr;
  prometheus::Counter* no_message_ = nullptr;
  prometheus::Counter* user_entry_ = nullptr;  // skipped_total{reason="user_entry"}
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
