// palisaded's file inputs (issue 14 §1): the config's `inputs { files { ... } }`, each a set of
// paths or globs followed by a FileFollower, read by one thread that hands batches of lines to a
// sink (the daemon's: PipelineLineSink, Pipeline::ProcessLines, which decides as ProcessBatch,
// the path gRPC batches take). A batch ends at batch_lines lines or 1 MiB (a newline counted per
// line); a round takes up to 16 batches of each file, and while a file has more the thread goes
// round again at once (a backlog is not read one round per poll_interval).
//
// Globs. A glob leaves out the rotated copies of a file it follows: the follower reads that file
// across its rotation, and the copy read anew would count its lines twice. A copy is told by its
// name: logrotate's (PATH.N, PATH-YYYYMMDD) always, any other the follower reads on through
// (FileFollower::RotatedName: PATH-2024-12-05, PATH.2024-12-05, PATH-20241205-1733356800) only
// while that follower reads a file other than its path's (FileFollower::reading_rotated), as
// such names are also live logs of their own (rotatelogs' access.log.2026-12-07, app.log-1);
// or, under any name (PATH.old, PATH.2024-12-05T10-00), by its inode and first bytes: those of a
// file a follower of the input has open or read to its end across a rotation (remembered while
// the glob matches it), or by its inode alone when a follower queued it to read next
// (FileFollower::queued: rotated after its position's file). A copytruncate copy
// (an inode of its own) is told by its first bytes: those of a file a follower found truncated in
// place, read on from where that follower stood then (the lines written between its last read and
// the copy are in the copy only; under a rotated name of the path, PATH-2024-12-05, the follower
// reads that rest itself, FileFollower::CopyOf, and the copy is left out), or of a file open (left
// out). What a glob matches that is not a regular file (a FIFO, a socket) is skipped and logged
// once, and so is a symbolic link of another user's than root or the daemon's, at the match or
// at a directory part from the glob's first wildcard down (its owner could point it at a secret
// the daemon may read); a link of theirs is followed, at a named path as at a glob's match
// (FileFollowerOptions::follow_owned_symlink: Kubernetes' /var/log/containers/*.log). An input
// follows at most max_files files (FileInput.max_files, default 1,024: each holds a descriptor
// and a buffer; places first come, restored positions counted), newest first among new matches
// that do not all fit (a last write in the future ranks oldest); the further matches are
// skipped before they are looked at, said when it starts (at most once a minute; counted as an
// error) and counted in palisade_input_files_not_followed{input}. A glob's follower opens the
// directories below the glob's literal part one by one (FileFollowerOptions::trusted_dir): one
// swapped for another user's link after the match was taken leads nowhere, and the follower of
// a match Glob now finds under such a link is dropped. A file removed (rm, find -delete) is
// read to its end and let go of: its descriptor closed, its position no longer saved; a glob's
// follower of it is dropped (a file created again there is a new one), a named path is waited
// for as before it appeared.
//
// On two threads (FileInputsOptions::threads; issue 14 §4), as replay does (issue 18): a second
// thread reads the file's next batches ahead and runs the sink's `prematch` over them
// (Pipeline::Prematch: parse and the RE2::Set passes, which depend on nothing but the line)
// while the round's thread hands the batch before to `process` (ProcessLines: captures,
// sessions, windows, decisions), in the file's order. The round's thread prematches a later
// batch itself rather than wait idle. Everything with state stays on the round's thread, in
// order: the decisions and positions are those of one thread.
//
// Exactness across restarts: a batch's lines are counted once the sink returned OK, and the
// position after them is what Checkpoints() reports. Consistent(fn) runs `fn` while no batch is
// in flight, so the daemon saves the engine's windows and these positions as one snapshot: after
// a restart (or a kill -9) the windows come back as they were at that snapshot and every file is
// read on from the position that matches them, so no line is lost and none is counted twice.
// A copy a glob leaves out by its inode or first bytes (not by its name) is saved too, at its
// end: the restarted daemon does not know it for a copy, and follows it from there (a
// descriptor each, as any file the glob matches) rather than read it again from its start.
// Saved marked left out (FileCheckpoint.left_out), as is such a copy's position after a
// restart while nothing more was read of it: read completely, so gone from its path at the
// next restart (compressed, removed) it is dropped without an error or a log.
// A restored position not resumed from yet (its file cannot be opened yet; a glob's file rotated
// to a name the glob does not match, PATH.1 of *.log, and not created again yet) is reported as
// it was restored, so a snapshot taken meanwhile does not lose it; one whose file was rotated to
// another name the glob matches is read on there (under a name the glob leaves out, PATH.N or
// PATH-YYYYMMDD, by the path's follower, started at once even while the path is not there
// again, which then reads the files rotated after it and the path's new file from its start:
// FileFollower; each line once). One whose file is nowhere (neither at its path nor under a
// rotated name: compressed, removed) is given up: logged, naming the path and offset, and
// counted as an error; a follower resumed from it (a named path's, or a glob's whose path is
// there) first reads the files rotated after it (FileFollower). A
// batch the sink refuses is kept and offered again on the next round (nothing skipped).
//
// A file a follower of the input follows live, or read to its end and let go of, is never read
// by another as one of its path's rotated files (app.log-1 and app.log-1.1 under app.log*:
// FileFollowerOptions::followed_elsewhere). A copytruncate whose copy was compressed before it
// was read (compress without delaycompress) is logged with the bytes lost (gzip's trailer; "at
// least" past 4 GiB) and counted as an error.
//
// Errors (permission denied, a read failing) are logged through `log` and counted in
// palisade_input_errors_total{input}, and retried every round; they never stop the thread. A
// line longer than the input's cap (max_line_bytes; a JSON format's max_record_bytes) is cut
// one byte past it, its rest dropped, and counted in palisade_input_lines_cut_total{input} (the
// first of each file logged, without its content); the pipeline then sees it longer than its
// cap, cuts, flags (ParsedLine::cut) and counts it too; not an error, since any client can
// write a long line.
// Metrics per input: lines, bytes, rotations, truncations, errors, cut lines, lag in bytes.
//
// Thread-safety: Start/Stop from one thread; Consistent and Checkpoints from any thread.
// PollOnce from one thread at a time (Start's, or the caller's when not started).
#ifndef PALISADE_SERVICES_INPUTS_FILE_INPUTS_H_
#define PALISADE_SERVICES_INPUTS_FILE_INPUTS_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "palisade/v1/state.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/inputs/file_follower.h"
#include "services/pipeline/pipeline.h"

namespace palisade {

struct FileInputsOptions {
  absl::Duration poll_interval = absl::Milliseconds(50);
  uint32_t batch_lines = 1000;
  // Threads: 1 reads, matches and decides on one; 2 (at most 4) read the batches ahead and
  // prematch them on the others (when the sink has a `prematch`). 0: 2 when the machine has
  // more than one core, else 1. The decisions and positions do not depend on it.
  uint32_t threads = 0;
  size_t max_line_bytes = 16 * 1024;
  // Inputs of a JSON format read a record whole up to this many bytes (engine.max_record_bytes).
  size_t max_record_bytes = 8 << 20;
  // Where each file stood at the last snapshot (EngineSnapshot.inputs).
  std::vector<palisade::v1::FileCheckpoint> checkpoints;
  std::function<void(const std::string&)> log;
};

using BatchSink = std::function<absl::Status(const palisade::v1::LogBatch&)>;

// The file inputs' lines as views into a reused buffer (no record or string per line).
struct LineSink {
  // Optional. Any thread, concurrently with `process` of the batches before: the part of matching
  // that changes no state (Pipeline::Prematch). Returns what must stay alive while the batch's
  // prematch may be read (the rules it matched with).
  std::function<std::shared_ptr<const void>(LineBatch*)> prematch;
  // The reading thread, batch after batch in the files' order: the rest. A batch refused (not
  // OK) is kept and offered again on the next round.
  std::function<absl::Status(const LineBatch&)> process;
};

// The daemon's sink: Pipeline::Prematch, then Pipeline::ProcessLines. A batch prematched with
// rules swapped out before its ProcessLines is matched there again (nothing stale is used).
LineSink PipelineLineSink(Pipeline& pipeline);

// An input's name: [a-z0-9_-]{1,64} (a metric label and a key of saved positions).
bool ValidInputName(const std::string& name);

class FileInputs {
 public:
  // Validates the inputs (names, formats, paths): kInvalidArgument naming the input; a named
  // path that exists but is not a regular file (a FIFO: opening it would wait for a writer) is
  // refused (kInvalidArgument, naming the input and the path), as is a file that cannot be read
  // (kPermissionDenied); one that does not exist yet is waited for. A glob skips what it
  // matches that is not a regular file, logging it once.
  static absl::StatusOr<std::unique_ptr<FileInputs>> Create(
      const palisade::v1::InputsConfig& config, FileInputsOptions options, LineSink sink,
      prometheus::Registry& registry);
  // The same with each batch as a LogBatch (a record per line: tests, other sinks), matched on
  // one thread.
  static absl::StatusOr<std::unique_ptr<FileInputs>> Create(
      const palisade::v1::InputsConfig& config, FileInputsOptions options, BatchSink sink,
      prometheus::Registry& registry);
  ~FileInputs();

  // Starts / stops the reading thread. Stop waits for the batch in flight. (The prematching
  // threads live as long as the object.)
  void Start();
  void Stop();

  // One round over every file (what the thread does each poll_interval, or at once while a
  // file has more than a round takes): finds new files of the globs, reads and delivers new
  // lines. Returns the lines delivered.
  size_t PollOnce();

  // Runs `fn` with every file's position while no batch is in flight.
  void Consistent(const std::function<void(const std::vector<palisade::v1::FileCheckpoint>&)>& fn);
  std::vector<palisade::v1::FileCheckpoint> Checkpoints();

 private:
  // A batch read: its lines' bytes in one buffer, the views into it, the position after it.
  // Slots are reused (a line costs a copy into room already there, not a malloc and a free).
  struct Slot {
    // kFilled: read, not to be prematched (yet); kQueued: waiting for a prematching thread;
    // kClaimed: being prematched; kReady: prematched.
    enum class State { kFilled, kQueued, kClaimed, kReady };
    std::string bytes;
    std::vector<std::pair<size_t, size_t>> spans;  // (offset, length) of each line in bytes
    LineBatch batch;
    palisade::v1::FileCheckpoint after;  // the follower's position after the batch's last line
    // The follower stopped at a limit (batch_lines, or 1 MiB with the newlines as it counts
    // them), not at the end of the file: the file may have more.
    bool full = false;
    std::shared_ptr<const void> hold;    // what the prematch needs alive (its rules)
    State state = State::kFilled;        // under work_mu_
  };
  struct File {
    std::unique_ptr<FileFollower> follower;
    // Read and not yet taken by the sink, in order: the batches read ahead during a round, and
    // after a round only what the sink refused (offered again first on the next round).
    std::deque<std::unique_ptr<Slot>> ahead;  // under work_mu_ while a round has workers
    std::string last_error;  // logged when it starts or changes, not every poll
    bool cut_said = false;   // a line longer than the cap logged (once per file)
    // The position after the last line the sink took (what a snapshot may say).
    palisade::v1::FileCheckpoint taken;
    // Resumed from a copy's left-out position (FileCheckpoint.left_out): that position. While
    // `taken` is still there (nothing read from the copy), it is saved as left out again.
    palisade::v1::FileCheckpoint left_out;
  };
  // A file as the file system knows it: (device, inode).
  using FileKey = std::pair<uint64_t, uint64_t>;
  struct Input {
    palisade::v1::FileInput config;
    palisade::v1::LogFormat format;
    std::map<std::string, File> files;  // by path
    prometheus::Counter* lines = nullptr;
    prometheus::Counter* bytes = nullptr;
    prometheus::Counter* rotations = nullptr;
    prometheus::Counter* truncations = nullptr;
    prometheus::Counter* errors = nullptr;
    prometheus::Counter* cut = nullptr;  // lines cut at the input's cap
    prometheus::Gauge* lag = nullptr;
    // Glob matches not followed past max_files (FileInput.max_files), and whether this episode
    // of them was said (false while there are none).
    prometheus::Gauge* not_followed = nullptr;
    bool over_said = false;
    absl::Time over_said_at = absl::InfinitePast();  // when last said (at most once a minute)
    // What the followers' running totals were when last published.
    std::map<std::string, FollowerStats> published;
    // Restored positions (FileInputsOptions::checkpoints) of files with no follower yet, by
    // path: a glob's file rotated away while the daemon was down (PATH.1, not matched) and not
    // created again yet. Saved on in every snapshot until a follower takes them; dropped (logged,
    // counted as an error) once their file is neither at its path nor under a rotated name
    // (FileFollower::RotatedNames: no follower could resume from them); a copy left out
    // (FileCheckpoint.left_out) once not at its path, silently (it was read completely).
    std::map<std::string, palisade::v1::FileCheckpoint> restored;
    // What the globs match that is not a regular file (a FIFO, a socket): skipped, said once.
    // Forgotten once no longer matched.
    std::set<std::string> skipped;
    // The files this input's followers have open or read to their end across a rotation, as
    // their last checkpoints (device, inode, fingerprint): a glob match that is one of them
    // under another name (a rotated copy: app.log-2024-12-05) is not read again as a new file.
    // Forgotten once neither open nor matched (the inode may be reused).
    std::map<FileKey, palisade::v1::FileCheckpoint> known;
    // Glob matches found to be one of `known` (by their first bytes), or a copytruncate copy
    // that holds no more than was read, as that file's checkpoint (its device and inode the
    // match's, its fingerprint): left out again without a read while the path holds that file,
    // and saved at its end in every snapshot (a restart reads nothing of it). Forgotten once
    // not matched.
    std::map<std::string, palisade::v1::FileCheckpoint> copies;
    // Where this input's followers found their file truncated in place (TakeTruncated): a glob
    // match of another inode that starts with that file's first bytes is its copy
    // (copytruncate's), read on from there rather than from its start. At most 16; one is
    // dropped once a copy was read on from it.
    std::vector<palisade::v1::FileCheckpoint> truncated;
  };

  FileInputs(FileInputsOptions options, LineSink sink) : options_(std::move(options)),
                                                         sink_(std::move(sink)) {}
  // Adds followers for paths (and glob matches) not followed yet, each from its restored
  // position if there is one.
  void DiscoverLocked(Input& input) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One round over every file (PollOnce); `*more` is set when a file stopped at the round's 16
  // batches with more to read (the reading thread then goes round again at once).
  size_t Round(bool* more);
  // Up to 16 batches of one file (the others get their turn). Returns the lines taken; sets
  // `*more` when the file has more to read than the round took (a refused batch is not more:
  // it is offered again after poll_interval).
  size_t PollFileLocked(Input& input, const std::string& path, File& file, bool* more)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The same on several threads: the others read the file's batches ahead and prematch them
  // while this one hands them to the sink in order (prematching one itself rather than wait).
  size_t PollFileWithWorkersLocked(Input& input, const std::string& path, File& file, bool* more)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads the file's next batch into `slot`: the lines read (0 at the end or on an error). One
  // thread at a time per file (the round's, or the one reading for it).
  size_t Fill(Input& input, const std::string& path, File& file, Slot& slot);
  void Prematch(Slot* slot);
  void Work();  // a reading and prematching thread
  std::unique_ptr<Slot> NewSlot();
  void Release(std::unique_ptr<Slot> slot);
  void PublishLocked(Input& input, const std::string& path, const File& file)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(const std::string& message) const;

  FileInputsOptions options_;
  LineSink sink_;
  size_t depth_ = 1;  // batches read ahead of the one the sink takes, plus it
  absl::Mutex mu_;  // held across a round: a batch in flight excludes Consistent
  std::vector<Input> inputs_ ABSL_GUARDED_BY(mu_);
  absl::Mutex work_mu_;
  std::vector<std::unique_ptr<Slot>> free_ ABSL_GUARDED_BY(work_mu_);  // slots to reuse
  std::deque<Slot*> queue_ ABSL_GUARDED_BY(work_mu_);  // kQueued, oldest first
  // The file whose round runs on several threads: its batches are read ahead by the workers
  // (one at a time), up to depth_ in file.ahead and 16 a round.
  struct Job {
    Input* input;
    const std::string* path;
    File* file;
    int read = 0;          // batches this round, those left from the last one included
    bool more = true;      // the follower's last batch was full (Slot::full)
    bool filling = false;  // a worker is reading the next batch
    bool stop = false;     // the sink refused: read no more this round
  };
  bool CanFill(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(work_mu_);
  Job* job_ ABSL_GUARDED_BY(work_mu_) = nullptr;
  bool stop_work_ ABSL_GUARDED_BY(work_mu_) = false;
  std::vector<std::thread> workers_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_FILE_INPUTS_H_
