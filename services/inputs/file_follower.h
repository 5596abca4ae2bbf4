// Following one log file as `tail -F` does, with a checkpoint that says exactly where its lines
// were taken (issue 14 §1). Poll() hands out the complete lines written since the last call:
//   - a partial last line (no newline yet) is held until its newline comes;
//   - rotation by rename + create: the old file is read on until the new one holds a byte
//     (logrotate's writer writes to the old one until its postrotate reopen), then to its end,
//     then the files rotated after it (a follower behind by more than one rotation: found by
//     the old file's name now, last written after it, oldest first), then the new file from its
//     start: lines written around the rename are not lost;
//   - rotation by copytruncate (the file shrinks below what was taken, or its first bytes are no
//     longer the ones fingerprinted, when it was written past the old offset before we looked):
//     the copy (under a rotated name of the path: PATH.1, PATH-YYYYMMDD; told by its first
//     bytes, the last written of several) is read on from where the follower stood, for the
//     lines written after its last read, then the copies made after it (a second copytruncate
//     while it was drained, or while the daemon was down: under rotated names, last written
//     after it, oldest first), then the file from its start, counted as a truncation
//     (NULs before its first line are the hole a writer without O_APPEND leaves, writing on at
//     its old offset: skipped, as is such a hole at the start of any file rotated after the one
//     read, SEEK_DATA; a second truncation under it is told by the bytes where the data
//     began after the hole); where it stood then (at the copy's end when the copy was read)
//     is kept for TakeTruncated (a glob tells the copy by it); a copy compressed before the
//     follower looked (compress without delaycompress: PATH.1.gz only; told by its first bytes
//     inflated) is not read, and what it held past the position is said lost
//     (TakeLostToCompression, gzip's trailer counting it: a lower bound past 4 GiB);
//   - a file that does not exist yet is waited for, not an error; one removed (rm, find
//     -delete) is read to its end (a last line without its newline is a line), then closed
//     (its space freed; descriptors do not pile up) and its path waited for again;
//   - a path that is not a regular file (a FIFO, a socket, a device) is refused, each Poll an
//     error naming it (kFailedPrecondition): it is opened without blocking, never read;
//   - lines longer than max_line_bytes are cut there and counted;
//   - a symbolic link is not followed (O_NOFOLLOW; its rotated names lstat'ed, a link among them
//     no rotated file), but at a configured path owned by root or the daemon's user
//     (FileFollowerOptions::follow_owned_symlink): an error naming the path, each Poll;
//   - between polls the read buffer holds about a partial line (a read grows it by what the
//     file holds, not by read_bytes zero-filled; a long record's room is given back).
// Which files were rotated after another the names say when they are of one scheme (PATH.N
// counts down, a date up; a clock stepped back moves no name), else their last writes; a name
// does not admit a file its last write says is older unless the clock was seen stepped back (a
// stray PATH.0 is no file rotated after PATH.1). A file another follower follows live or read
// (options.followed_elsewhere: app.log-1 beside app.log, and its app.log-1.1) is never one of
// them.
// checkpoint() is the position after the last line handed out: device, inode, offset, a fingerprint
// of the file's first bytes (an inode reused by another file is not mistaken for the same file),
// and when the file was last written as last seen. A follower created from a checkpoint resumes
// there: at the offset when the file is the same; in the rotated file (PATH.1, where logrotate
// moves it, or another name that starts with the path's: PATH-YYYYMMDD) when the file was rotated
// meanwhile, then the files rotated after it (rotated more than once: PATH.2, then PATH.1; last
// written after it, oldest first; one gone before its turn is given up: TakeLost; read at once, as
// they say the writer moved on; those rotated while it was read are found as above), then the new
// file, each from its start (a rotated file read to its end and removed while the path is absent is
// let go of); when the file was truncated below the offset, in its copy as above, then the file
// from its start; from the start when it was replaced, or truncated with no copy found (a
// checkpoint whose file is found nowhere, compressed away or removed, or truncated and its copy
// compressed, is given up: TakeLost, but for a truncation whose copy a glob may read on under
// another name; the files under a rotated name last written after the time it says, rotated
// after its file, are read first, oldest first: only that file's rest is lost. A path holding
// the checkpoint's inode with other first bytes may be a new file given the freed inode or the
// file truncated: both are handled so). A checkpoint taken while the rest of a cut
// line was being dropped is inside that line: the resumed follower drops that rest too. A
// checkpoint whose file is there but cannot be opened (EACCES, out of descriptors) is kept: Poll
// says so and tries again, rather than read the file again from its start, and checkpoint()
// meanwhile is that checkpoint (a snapshot taken while it waits keeps the position).
//
// Thread-safety: none; one follower per thread.
#ifndef PALISADE_SERVICES_INPUTS_FILE_FOLLOWER_H_
#define PALISADE_SERVICES_INPUTS_FILE_FOLLOWER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "palisade/v1/state.pb.h"

namespace palisade {

struct FileFollowerOptions {
  size_t max_line_bytes = 16 * 1024;
  size_t read_bytes = 256 * 1024;  // per read() call
  // The first bytes of a file whose hash tells one file from another with the same inode.
  size_t fingerprint_bytes = 256;
  // A Poll hands out lines until they hold this many bytes, a newline counted for each (at
  // least one line): with long lines (JSON records read whole, up to max_line_bytes) a batch
  // stays bounded in bytes, not only in lines.
  size_t max_batch_bytes = 1 << 20;
  // Whether another follower (of the same file input) follows the file (device, inode) live:
  // such a file is never read as one of this path's rotated files, whatever its name (a
  // per-instance log, app.log-1, is a RotatedName of app.log and written after app.log.1: it was
  // read again from byte 0 when app.log rotated). Asked at a rotation, not per line. Unset: none.
  // `name` is where this follower found the file (a rotated name of its path, or a log it may
  // be a rotated copy of): the file's first bytes can be checked there.
  std::function<bool(const std::string& name, uint64_t device, uint64_t inode)>
      followed_elsewhere;
  // Whether the path may be a symbolic link: a configured path's or a glob's match (FileInputs
  // sets it for a link it found root's or the daemon's), and only a link owned by root or by
  // the daemon's user (the same of each link it leads to), as logrotate trusts no directory
  // others may write. Without it the path is opened with O_NOFOLLOW, and so are the path's
  // rotated files always (PATH.1, PATH-YYYYMMDD: not looked at when they are links):
  // whoever owns a log directory could otherwise point a log's name at a file the daemon may
  // read (its API token) and have its content read as log lines.
  bool follow_owned_symlink = false;
  // A directory above the path trusted as the configuration's (a glob's literal part: the
  // directories before its first wildcard). Set, each directory below it down to the path's is
  // opened in turn (openat, O_PATH | O_NOFOLLOW) and a link among them followed only when root
  // or the daemon's user owns it: whoever owns a directory a glob matched into could otherwise
  // swap it for a link to a secret's directory between two polls (seen as a rotation) and have
  // the secret read. Empty: the directories above the path are looked up as usual.
  std::string trusted_dir;
};

struct FollowerStats {
  uint64_t lines = 0;
  uint64_t bytes = 0;
  uint64_t rotations = 0;    // rename + create seen
  uint64_t truncations = 0;  // copytruncate (or a shrink) seen
  uint64_t cut_lines = 0;
};

class FileFollower {
 public:
  FileFollower(std::string path, FileFollowerOptions options = {},
               std::optional<palisade::v1::FileCheckpoint> from = std::nullopt);
  ~FileFollower();
  FileFollower(const FileFollower&) = delete;
  FileFollower& operator=(const FileFollower&) = delete;

  // Appends up to `max_lines` complete new lines to `*lines` and returns how many. An error
  // (a read failing, permission denied) names the path; the follower stays usable and retries
  // on the next call.
  absl::StatusOr<size_t> Poll(size_t max_lines, std::vector<std::string>* lines);
  // The same, handing each line to `on_line` as a view into the read buffer, valid only during
  // the call: no string is made per line (the file inputs copy it straight into a reused
  // batch; a std::string per line was a malloc and a free per line).
  absl::StatusOr<size_t> Poll(size_t max_lines,
                              absl::FunctionRef<void(absl::string_view)> on_line);

  // The position after the last line handed out (input name left empty); while a checkpoint
  // waits to be resumed from (its file could not be opened yet), that checkpoint.
  palisade::v1::FileCheckpoint checkpoint() const;
  // Whether a file is open (or a checkpoint waits to be resumed from, or files queued after one
  // given up wait for the first Poll to open them): false before the file appears, and after
  // it was removed and read to its end (checkpoint() then names no file).
  bool following() const { return open_.fd >= 0 || resume_.has_value() || next_file_pending_; }
  // Bytes written to the file and not yet handed out (the lag), as of the last Poll.
  uint64_t lag_bytes() const { return lag_bytes_; }
  const FollowerStats& stats() const { return stats_; }
  // Whether the last Poll stopped at a limit (max_lines, or max_batch_bytes: the lines' bytes
  // and a newline each) rather than at the end of what was written: the file may have more, to
  // be polled for at once.
  bool stopped_at_limit() const { return stopped_at_limit_; }
  const std::string& path() const { return path_; }
  // The bytes the follower's read buffer holds allocated between polls (a partial line's).
  size_t buffer_bytes() const { return pending_.capacity(); }
  // The files read to their end and let go of at a rotation (rename + create) since the last
  // call, each as its checkpoint there (device, inode, fingerprint): a glob that matches them
  // under their new names tells them from new files (FileInputs). At most the last 16.
  std::vector<palisade::v1::FileCheckpoint> TakeLetGo();
  // The files rotated after the one being read, to be read next, oldest first (path, device and
  // inode as they were queued): a glob that matches one under a name it does not know for a
  // copy's (PATH.2024-12-05) tells it from a new file by them (FileInputs).
  const std::vector<palisade::v1::FileCheckpoint>& queued() const { return rotated_after_; }
  // Whether the follower reads, or has queued, a file other than its path's (a rotated file
  // drained, a copytruncate's copy, files rotated after them): while it does, a glob leaves
  // out every RotatedName of its path, the files it may read next (FileInputs).
  bool reading_rotated() const { return draining_rotated_ || !rotated_after_.empty(); }
  // The positions at which the follower found its file truncated in place (copytruncate), or
  // its checkpoint's file truncated when it resumed, since the last call: the checkpoint then
  // (device, inode, offset, the fingerprint of the bytes before the truncation), at the copy's
  // end when the follower read the copy's rest itself (CopyOf). A glob that
  // matches the copy under another name tells it by those bytes (FileInputs). At most the last 16.
  std::vector<palisade::v1::FileCheckpoint> TakeTruncated();
  // The checkpoints given up since the last call: their file was found neither at the path nor
  // under a rotated name (RotatedNames), so what was written to it after them is not read.
  std::vector<palisade::v1::FileCheckpoint> TakeLost();
  // A truncation in place (copytruncate) whose copy was compressed before the follower looked
  // (compress without delaycompress: PATH.1.gz, the uncompressed copy gone): what was written
  // after the follower's last read is in that copy only, and not read (no compressed file is).
  struct CompressedCopyLoss {
    palisade::v1::FileCheckpoint at;  // where the follower stood in the file truncated
    std::string compressed;           // the compressed copy (PATH.1.gz)
    // The bytes past `at` the copy held, as gzip's trailer says (its size mod 2^32); unknown for
    // another compression (xz, zstd, bzip2).
    std::optional<uint64_t> bytes;
    // `bytes` is a lower bound: gzip counts mod 2^32, and the position is at or past 4 GiB or
    // the copy may hold 4 GiB or more (compressed, more than 4 GiB / 1032, deflate's best ratio).
    bool at_least = false;
  };
  // Those since the last call, at most the last 16. A copy holding no byte past the position
  // (gzip's trailer says so) lost nothing and is not among them.
  std::vector<CompressedCopyLoss> TakeLostToCompression();
  // How many files rotated after a checkpoint given up at the resume (TakeLost) were queued to be
  // read, oldest first, before the path: 0 when none was (compress without delaycompress, the
  // common layout: only the path holds lines written after it).
  size_t queued_after_lost() const { return queued_after_lost_; }

  // Whether the file at `path` is the one `c` was taken in: a regular file with the same device
  // and inode, whose first bytes are the ones fingerprinted (an inode reused by another file has
  // others). Opens it without blocking; false when it cannot tell.
  static bool IsFileOf(const std::string& path, const palisade::v1::FileCheckpoint& c);
  // Whether the file at `path` starts as the one `c` was taken in did, as a copy of it does
  // (copytruncate's): a regular file whose first bytes are the ones fingerprinted, whatever its
  // inode. False when `c` fingerprinted no byte.
  static bool IsCopyOf(const std::string& path, const palisade::v1::FileCheckpoint& c);
  // Where logrotate may have moved the file at `path`: PATH.1 first, then the other names in its
  // directory that start with its own (PATH.N, dateext's PATH-YYYYMMDD, PATH.2024-12-05), sorted.
  static std::vector<std::string> RotatedNames(const std::string& path);
  // Whether `rotated` is `path` with a suffix logrotate (or a rotating handler) adds: a
  // separator, then digits and date separators (.1, -20261204, .2026-12-05,
  // -20261206-1733356800); not another log whose name only starts with the path's
  // (app-worker.log, app.log.old), nor a compressed copy. The names the follower reads on
  // through (drained, queued, a copytruncate's copy), so the names a glob leaves out while the
  // follower reads them (reading_rotated; FileInputs).
  static bool RotatedName(absl::string_view rotated, absl::string_view path);

 private:
  struct Open {
    int fd = -1;
    uint64_t device = 0;
    uint64_t inode = 0;
  };
  // Opens `path` at `offset`; false when it does not exist.
  absl::StatusOr<bool> OpenAt(const std::string& path, uint64_t offset);
  void Close();
  // Reads what the open file has past `read_offset_` into the pending buffer; returns bytes read.
  absl::StatusOr<size_t> ReadMore();
  // Moves complete lines out of the pending buffer, while `*bytes_left` (less each line's
  // bytes) lasts.
  size_t TakeLines(size_t max_lines, size_t* bytes_left,
                   absl::FunctionRef<void(absl::string_view)> on_line);
  // At the end of the open file: rotation, truncation, a file appearing. True when the follower
  // switched files or position (read again).
  absl::StatusOr<bool> CheckFile();
  // The path is gone (ENOENT): when the open file was removed (no link left) and read to its
  // end, hands out a last line without its newline (true: read again), then closes it.
  bool LetGoIfRemoved();
  // After a rename, the old file: still written to (the new one holds no byte yet, unless
  // `writer_moved`: a file rotated after it is there), more of it read now, or read to its end
  // with the writer on the new one.
  enum class OldFile { kStillWritten, kMoreRead, kDone };
  absl::StatusOr<OldFile> OldFileState(bool writer_moved = false);
  std::string FingerprintOf(int fd, uint32_t* bytes) const;
  // The open file's first bytes are no longer the ones fingerprinted, or those where the data
  // began after a hole no longer the ones seen there: rewritten in place.
  bool HeadChanged() const;
  // options_.followed_elsewhere, false when unset.
  bool FollowedElsewhere(const std::string& name, uint64_t device, uint64_t inode) const;
  // Whether `rotated`, a rotated name of the path, is also a rotated name of a log another
  // follower follows live (app.log-1.1 of app.log-1: FollowedElsewhere): that log's file.
  bool RotatedFromElsewhere(absl::string_view rotated) const;
  // Resumes from a checkpoint (constructor).
  void Resume(const palisade::v1::FileCheckpoint& from);

  std::string path_;
  FileFollowerOptions options_;
  Open open_;
  uint64_t read_offset_ = 0;   // file offset after the bytes read into pending_
  std::string pending_;        // read, not yet handed out (a partial line at most, after Poll)
  bool skipping_ = false;      // dropping the rest of a cut line
  // Truncated in place (copytruncate): NULs before the first line are a hole, not a line.
  bool after_truncation_ = false;
  // Where the open file's bytes start in pending_: after the last line of the file read before
  // (NextFile carries it over), which holds no hole; 0 once that line is handed out.
  size_t hole_from_ = 0;
  // Where the data began after the hole a truncation left (0: no hole), and its first bytes: a
  // hole as long as the fingerprinted bytes hides a second truncation from them, not from these.
  uint64_t data_at_ = 0;
  std::string data_head_;
  std::string fingerprint_;    // of the open file (empty until it has a byte)
  uint32_t fingerprint_bytes_ = 0;
  // When the open file was last written (Unix ns, the file system's clock), as last seen: at
  // its open and at the end of each Poll, with the lines handed out in it (0: no file).
  int64_t written_ns_ = 0;
  uint64_t lag_bytes_ = 0;
  bool stopped_at_limit_ = false;
  FollowerStats stats_;
  // Resuming into the rotated file: after it is drained, the files rotated after it
  // (rotated_after_, oldest first), then the current file, each from its start.
  bool draining_rotated_ = false;
  std::vector<palisade::v1::FileCheckpoint> rotated_after_;  // path, device, inode
  // Resumed from a checkpoint given up, files queued after it: the first is opened at the first
  // Poll (NextFile), once the followers that may hold one live exist (followed_elsewhere).
  bool next_file_pending_ = false;
  // The path's file is read next as after a truncation (a hole may start it): after a
  // copytruncate's copy, or after files queued behind a path that was truncated.
  bool then_truncated_ = false;
  // The copy copytruncate made of the file `at` was taken in that holds more than `at` took
  // (its size in `*size`): a rotated name of the path (RotatedName) whose first bytes are the
  // file's, the last written of several; empty when none.
  std::string CopyOf(const palisade::v1::FileCheckpoint& at, uint64_t* size) const;
  // Queues the files rotated after `resumed_in` (the checkpoint's file, or the file just left,
  // under a rotated name; `left` its checkpoint): regular files under a rotated name of the path
  // (RotatedName) last written after it, but for copies of it (IsCopyOf `left`; none told when
  // `left` fingerprinted no byte).
  void QueueRotatedAfter(const std::string& resumed_in, const palisade::v1::FileCheckpoint& left);
  // The same after a file last written at `after_ns` (WrittenNs), under the rotated name `name`
  // (empty when it is gone: a tie is then a file written before it), `file` its device and
  // inode.
  void QueueWrittenAfter(int64_t after_ns, const std::string& name,
                         std::pair<uint64_t, uint64_t> file,
                         const palisade::v1::FileCheckpoint& left);
  // The open file read to its end and let go of: on to the next, the files rotated after it
  // (rotated_after_, or found from its name now: RotatedNameOfOpen) and the path last. True
  // when a file was opened.
  absl::StatusOr<bool> NextFile();
  // The rotated name of the path (RotatedName) the open file is under now; empty when none.
  std::string RotatedNameOfOpen() const;
  // A checkpoint whose file could not be opened (why): resumed from at the next Poll.
  struct PendingResume {
    palisade::v1::FileCheckpoint from;
    std::string why;
  };
  std::optional<PendingResume> resume_;
  // Files let go of at a rotation, not yet taken by TakeLetGo (oldest first).
  std::vector<palisade::v1::FileCheckpoint> let_go_;
  // Records the open file as let go of (before the follower moves to the new one).
  void LetGo();
  // Truncated in place: records the position, then reads the rest of the copy (CopyOf) if
  // there is one, and the file again from its start.
  void Truncated();
  // Positions at a truncation, not yet taken by TakeTruncated (oldest first).
  std::vector<palisade::v1::FileCheckpoint> truncated_;
  // Truncated with no uncompressed copy found: records the loss when a compressed copy of the
  // path, written since the follower's last look (`at`), holds bytes past `at`.
  void CompressedCopyLost(const palisade::v1::FileCheckpoint& at);
  std::vector<CompressedCopyLoss> lost_to_compression_;  // not yet taken, oldest first
  // Checkpoints given up, not yet taken by TakeLost (oldest first).
  std::vector<palisade::v1::FileCheckpoint> lost_;
  // The files rotated after a checkpoint given up at the resume, queued to be read before the
  // path (0: none, or no checkpoint given up).
  size_t queued_after_lost_ = 0;
  // Whether a file under a name that starts with the path's (one a glob may match) is a copy of
  // the checkpoint's file holding at least what `from` took: its rest (if any) is there, not
  // lost.
  bool RestKeptElsewhere(const palisade::v1::FileCheckpoint& from) const;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_FILE_FOLLOWER_H_
