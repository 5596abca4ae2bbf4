#include "services/inputs/file_follower.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/common/fingerprint.h"

namespace palisade {
namespace {

// Of two rotated names of one path (`path_size` its length) last written at the same time,
// whether `a` is the newer: PATH.N the smaller its N; a date (PATH-YYYYMMDD) the later it sorts.
bool NewerName(absl::string_view a, absl::string_view b, size_t path_size) {
  auto number = [path_size](absl::string_view name, uint64_t* n) {
    const absl::string_view suffix = name.substr(path_size);
    if (suffix.size() < 2 || suffix.size() > 7 || suffix[0] != '.') return false;
    *n = 0;
    for (char c : suffix.substr(1)) {
      if (!absl::ascii_isdigit(c)) return false;
      *n = *n * 10 + static_cast<uint64_t>(c - '0');
    }
    return true;
  };
  uint64_t na = 0, nb = 0;
  if (number(a, &na) && number(b, &nb)) return na < nb;
  return a > b;
}

// Of two rotated names of one path (`path_size` its length), whether `a` was rotated after `b`,
// as their names say, clock or no clock: PATH.N the smaller its N (each rotation renames PATH.N
// to PATH.N+1); suffixes of one shape (digits and separators at the same places: the dates of
// one dateformat) the later it sorts. nullopt when the names are of two schemes (PATH.2 and
// PATH-20261205): only their last writes can say then.
std::optional<bool> RotatedAfterByName(absl::string_view a, absl::string_view b,
                                       size_t path_size) {
  const absl::string_view sa = a.substr(path_size), sb = b.substr(path_size);
  auto numeric = [](absl::string_view suffix) {
    return suffix.size() >= 2 && suffix.size() <= 7 && suffix[0] == '.' &&
           std::all_of(suffix.begin() + 1, suffix.end(), absl::ascii_isdigit);
  };
  if (numeric(sa) && numeric(sb)) return NewerName(a, b, path_size);
  if (numeric(sa) || numeric(sb) || sa.size() != sb.size()) return std::nullopt;
  for (size_t i = 0; i < sa.size(); ++i) {
    const bool digit = absl::ascii_isdigit(sa[i]);
    if (digit != absl::ascii_isdigit(sb[i]) || (!digit && sa[i] != sb[i])) return std::nullopt;
  }
  return sa > sb;
}

// When the file `st` is of was last written: Unix nanoseconds, by the file system's clock.
int64_t WrittenNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
         static_cast<int64_t>(st.st_mtim.tv_nsec);
}

// Appends `c` to `list`, keeping the last 16.
void KeepLast16(std::vector<palisade::v1::FileCheckpoint>* list, palisade::v1::FileCheckpoint c) {
  if (list->size() >= 16) list->erase(list->begin());
  list->push_back(std::move(c));
}

// Where the data of the open file `fd` begins at or after `from`: past a hole (SEEK_DATA, which
// finds the block the data begins in) and the NULs before the first byte written in that block.
// A file truncated in place under a writer without O_APPEND is a hole up to the writer's offset,
// and the NULs there are no line. Scans at most 1 MiB of NULs (a file system without SEEK_DATA
// calls the whole file data); the file's size when it holds nothing else. `*zeros_on` is set
// when the scan stopped there with only NULs seen and the file goes on: the reader skips the
// NULs after it as well (after_truncation_), or they are read as one long line.
uint64_t DataFrom(int fd, uint64_t from, bool* zeros_on = nullptr) {
  if (zeros_on != nullptr) *zeros_on = false;
  struct stat st;
  if (::fstat(fd, &st) != 0) return from;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const off_t data = ::lseek(fd, static_cast<off_t>(from), SEEK_DATA);
  // ENXIO: a hole to the end. Another error (no SEEK_DATA): the NULs are scanned from `from`.
  if (data < 0 && errno == ENXIO) return std::max(from, size);
  uint64_t at = data < 0 ? from : static_cast<uint64_t>(data);
  constexpr uint64_t kMaxScan = 1 << 20;
  const uint64_t scan_end = std::min(size, at + kMaxScan);
  char buf[4096];
  while (at < scan_end) {
    const ssize_t n =
        ::pread(fd, buf, std::min<uint64_t>(sizeof(buf), scan_end - at), static_cast<off_t>(at));
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\0') return at + static_cast<uint64_t>(i);
    }
    at += static_cast<uint64_t>(n);
  }
  if (zeros_on != nullptr) *zeros_on = at == scan_end && scan_end < size;
  return at;
}

// Whether `name` ends in a suffix logrotate's compress (compressext) gives a copy; its length.
size_t CompressedSuffix(absl::string_view name) {
  for (absl::string_view ext : {".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z"}) {
    if (absl::EndsWith(name, ext)) return ext.size();
  }
  return 0;
}

// The uncompressed size a gzip file's trailer records (ISIZE: the last 4 bytes, little-endian,
// mod 2^32); nullopt when `path` is no gzip file. Complete when read: the compressor removes the
// uncompressed file only after it wrote the whole of this one.
std::optional<uint32_t> GzipSize(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  struct stat st;
  unsigned char magic[2] = {0, 0}, trailer[4];
  const bool gzip = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 18 &&
                    ::pread(fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b &&
                    ::pread(fd, trailer, 4, st.st_size - 4) == 4;
  ::close(fd);
  if (!gzip) return std::nullopt;
  return static_cast<uint32_t>(trailer[0]) | static_cast<uint32_t>(trailer[1]) << 8 |
         static_cast<uint32_t>(trailer[2]) << 16 | static_cast<uint32_t>(trailer[3]) << 24;
}

// The first `bytes` bytes a gzip file inflates to (fewer when it holds fewer, or is cut or
// corrupt); nullopt when `path` is no gzip file (xz, zstd: not told). Bounded: at most 1 MiB of
// it is read (a few hundred bytes of text come from far less).
std::optional<std::string> GunzipHead(const std::string& path, size_t bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  unsigned char magic[2] = {0, 0};
  if (::pread(fd, magic, 2, 0) != 2 || magic[0] != 0x1f || magic[1] != 0x8b) {
    ::close(fd);
    return std::nullopt;
  }
  std::string out(bytes, '\0');
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
    ::close(fd);
    return std::string();
  }
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  unsigned char in[16 * 1024];
  uint64_t read = 0;
  while (z.avail_out > 0 && read < (1 << 20)) {
    if (z.avail_in == 0) {
      const ssize_t n = ::pread(fd, in, sizeof(in), static_cast<off_t>(read));
      if (n <= 0) break;
      read += static_cast<uint64_t>(n);
      z.next_in = in;
      z.avail_in = static_cast<uInt>(n);
    }
    if (inflate(&z, Z_NO_FLUSH) != Z_OK) break;  // the end, or not deflate: what came out
  }
  out.resize(out.size() - z.avail_out);
  inflateEnd(&z);
  ::close(fd);
  return out;
}

// Opens `path` to read (O_NONBLOCK) without following a symbolic link at its last component;
// with `owned_links`, following those owned by root or the daemon's user, each of a chain (at
// most 8), a relative target taken from the link's directory. Each link is judged as opened
// (O_PATH) and its target read from that descriptor: no other link put at its name between the
// look and the read is followed. -1 with errno set, ELOOP for a link not followed. The
// directories above are looked up as usual: they are the configuration's, as logrotate's are
// (but those below a trusted directory: OpenBelow).
int OpenNoForeignLink(const std::string& path, bool owned_links) {
  std::string at = path;
  for (int links = 0; links <= 8; ++links) {
    const int fd = ::open(at.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd >= 0 || errno != ELOOP || !owned_links) return fd;
    const int link = ::open(at.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (link < 0) return -1;
    struct stat st;
    char target[4096];
    ssize_t n = -1;
    if (::fstat(link, &st) == 0 && S_ISLNK(st.st_mode) &&
        (st.st_uid == 0 || st.st_uid == ::geteuid())) {
      n = ::readlinkat(link, "", target, sizeof(target));
    }
    ::close(link);
    if (n <= 0 || static_cast<size_t>(n) >= sizeof(target)) {
      errno = ELOOP;
      return -1;
    }
    const absl::string_view to(target, static_cast<size_t>(n));
    const size_t slash = at.rfind('/');
    at = to[0] == '/' || slash == std::string::npos
             ? std::string(to)
             : absl::StrCat(absl::string_view(at).substr(0, slash + 1), to);
  }
  errno = ELOOP;
  return -1;
}

// Opens `path` as OpenNoForeignLink does, its directories below `trusted` (one above it: a
// glob's literal part) each opened in turn from the one before (openat, O_PATH | O_NOFOLLOW):
// a link among them is followed only when root or the daemon's user owns it (ELOOP else), its
// target resolved from that directory's descriptor, so a directory swapped for another user's
// link between two polls leads nowhere. `path` not below `trusted`: OpenNoForeignLink.
int OpenBelow(const std::string& trusted, const std::string& path, bool owned_links) {
  if (trusted.empty() || !absl::StartsWith(path, trusted) || path.size() <= trusted.size() ||
      (trusted.back() != '/' && path[trusted.size()] != '/')) {
    return OpenNoForeignLink(path, owned_links);
  }
  const std::vector<std::string> parts =
      absl::StrSplit(absl::string_view(path).substr(trusted.size()), '/', absl::SkipEmpty());
  if (parts.empty()) return OpenNoForeignLink(path, owned_links);
  int dir = ::open(trusted.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  auto fail = [&dir](int error) {
    if (dir >= 0) ::close(dir);
    errno = error;
    return -1;
  };
  if (dir < 0) return -1;
  // The target of the link open as `link` (owned by root or the daemon's user, else ELOOP),
  // opened with `flags` from the directory `dir` the link is in.
  auto through = [&dir](int link, int flags) {
    struct stat st;
    char target[4096];
    ssize_t n = -1;
    if (::fstat(link, &st) == 0 && S_ISLNK(st.st_mode) &&
        (st.st_uid == 0 || st.st_uid == ::geteuid())) {
      n = ::readlinkat(link, "", target, sizeof(target));
    }
    if (n <= 0 || static_cast<size_t>(n) >= sizeof(target)) {
      errno = ELOOP;
      return -1;
    }
    target[n] = '\0';
    return ::openat(dir, target, flags);  // an absolute target: from the root
  };
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int next = ::openat(dir, parts[i].c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return fail(errno);
    struct stat st;
    if (::fstat(next, &st) != 0) {
      const int error = errno;
      ::close(next);
      return fail(error);
    }
    if (S_ISLNK(st.st_mode)) {
      const int to = through(next, O_PATH | O_DIRECTORY | O_CLOEXEC);
      const int error = errno;
      ::close(next);
      if (to < 0) return fail(error);
      next = to;
    } else if (!S_ISDIR(st.st_mode)) {
      ::close(next);
      return fail(ENOTDIR);
    }
    ::close(dir);
    dir = next;
  }
  const std::string& last = parts.back();
  const int fd = ::openat(dir, last.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (fd >= 0 || errno != ELOOP || !owned_links) return fd < 0 ? fail(errno) : (::close(dir), fd);
  // The path's own link, of root's or the daemon's user: an absolute target is the link
  // owner's choice, opened as a configured path's (each link of its chain judged: Kubernetes'
  // containers/*.log -> pods/.../0.log -> docker's); a relative one from the link's directory
  // (a link there again is not followed).
  const int link = ::openat(dir, last.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (link < 0) return fail(errno);
  struct stat st;
  char target[4096];
  ssize_t n = -1;
  if (::fstat(link, &st) == 0 && S_ISLNK(st.st_mode) &&
      (st.st_uid == 0 || st.st_uid == ::geteuid())) {
    n = ::readlinkat(link, "", target, sizeof(target) - 1);
  }
  ::close(link);
  if (n <= 0) return fail(ELOOP);
  target[n] = '\0';
  const int to = target[0] == '/' ? OpenNoForeignLink(target, true)
                                  : ::openat(dir, target, O_RDONLY | O_CLOEXEC | O_NONBLOCK |
                                                              O_NOFOLLOW);
  if (to < 0) return fail(errno);
  ::close(dir);
  return to;
}

// The buffer a follower keeps between polls beyond a partial line's bytes.
constexpr size_t kKeptBufferBytes = 16 * 1024;

}  // namespace

FileFollower::FileFollower(std::string path, FileFollowerOptions options,
                           std::optional<palisade::v1::FileCheckpoint> from)
    : path_(std::move(path)), options_(options) {
  if (options_.max_line_bytes < 64) options_.max_line_bytes = 64;
  if (options_.max_batch_bytes == 0) options_.max_batch_bytes = 1;
  if (options_.read_bytes < 4096) options_.read_bytes = 4096;
  if (from) Resume(*from);
}

FileFollower::~FileFollower() { Close(); }

bool FileFollower::FollowedElsewhere(const std::string& name, uint64_t device,
                                     uint64_t inode) const {
  return options_.followed_elsewhere && options_.followed_elsewhere(name, device, inode);
}

bool FileFollower::RotatedFromElsewhere(absl::string_view rotated) const {
  for (size_t i = path_.size() + 1; i + 1 < rotated.size(); ++i) {
    if (rotated[i] != '.' && rotated[i] != '-' && rotated[i] != '_') continue;
    const std::string log(rotated.substr(0, i));
    struct stat st;
    if (RotatedName(rotated, log) && ::stat(log.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        FollowedElsewhere(log, st.st_dev, st.st_ino)) {
      return true;
    }
  }
  return false;
}

void FileFollower::Close() {
  if (open_.fd >= 0) ::close(open_.fd);
  open_ = Open();
  std::string().swap(pending_);  // its memory given back (a long record's up to 8 MiB)
  hole_from_ = 0;
  skipping_ = false;
  after_truncation_ = false;
  data_at_ = 0;
  data_head_.clear();
  read_offset_ = 0;
  fingerprint_.clear();
  fingerprint_bytes_ = 0;
  written_ns_ = 0;
}

std::string FileFollower::FingerprintOf(int fd, uint32_t* bytes) const {
  std::string head(options_.fingerprint_bytes, '\0');
  const ssize_t n = ::pread(fd, head.data(), head.size(), 0);
  *bytes = n > 0 ? static_cast<uint32_t>(n) : 0;
  if (n <= 0) return "";
  head.resize(static_cast<size_t>(n));
  return Fingerprint(head);
}

absl::StatusOr<bool> FileFollower::OpenAt(const std::string& path, uint64_t offset) {
  Close();
  // O_NONBLOCK: a FIFO put at the path opens at once instead of waiting for a writer (with the
  // file inputs' lock held), and is refused below. On a regular file it changes nothing.
  const bool owned_links = options_.follow_owned_symlink && path == path_;
  const int fd = OpenBelow(options_.trusted_dir, path, owned_links);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) return false;
    // ELOOP is also a loop of directory links above the path: a link only when one is there.
    struct stat link;
    if (error == ELOOP && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, owned_links ? ": a symbolic link not owned by root or the daemon's user"
                            : ": a symbolic link",
          ", not followed"));
    }
    return absl::PermissionDeniedError(absl::StrCat(path, ": ", std::strerror(error)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(path, ": ", std::strerror(error)));
  }
  if (!S_ISREG(st.st_mode)) {
    // A FIFO, a socket, a device, a directory: no offsets to keep (pread fails with ESPIPE).
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  }
  open_.fd = fd;
  open_.device = st.st_dev;
  open_.inode = st.st_ino;
  read_offset_ = offset;
  written_ns_ = WrittenNs(st);
  fingerprint_ = FingerprintOf(fd, &fingerprint_bytes_);
  return true;
}

void FileFollower::Resume(const palisade::v1::FileCheckpoint& from) {
  resume_.reset();
  rotated_after_.clear();
  next_file_pending_ = false;
  // Set when the checkpoint's file is there but cannot be opened (EACCES, EMFILE): whether it
  // is the same file cannot be told, so nothing is decided; Poll tries again.
  std::string cannot_open;
  auto same_file = [&](const std::string& path) {
    // A rotated name that is a symbolic link is no rotated file (FileFollowerOptions::
    // follow_owned_symlink); the path's own link is judged where it is opened (OpenAt).
    const bool rotated = path != path_;
    struct stat st;
    if ((rotated ? ::lstat(path.c_str(), &st) : ::stat(path.c_str(), &st)) != 0) {
      if (errno != ENOENT) cannot_open = absl::StrCat(path, ": ", std::strerror(errno));
      return false;
    }
    if (st.st_dev != from.device() || st.st_ino != from.inode() || !S_ISREG(st.st_mode)) {
      return false;
    }
    const int fd =
        ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | (rotated ? O_NOFOLLOW : 0));
    if (fd < 0) {
      cannot_open = absl::StrCat(path, ": ", std::strerror(errno));
      return false;
    }
    // The same bytes at the start as when the checkpoint was taken (an inode reused by a new
    // file has others), and at least as many bytes as were taken.
    std::string head(from.fingerprint_bytes(), '\0');
    const ssize_t n = from.fingerprint_bytes() == 0 ? 0 : ::pread(fd, head.data(), head.size(), 0);
    ::close(fd);
    const bool same_head = from.fingerprint_bytes() == 0 ||
                           (n == static_cast<ssize_t>(head.size()) &&
                            Fingerprint(head) == from.fingerprint());
    return same_head && static_cast<uint64_t>(st.st_size) >= from.offset();
  };
  // A checkpoint is at a line's start, but for one taken while the rest of a cut line was being
  // dropped: that rest (client-written text) is dropped again, not taken for a line.
  auto open_at_checkpoint = [&](const std::string& path) {
    absl::StatusOr<bool> opened = OpenAt(path, from.offset());
    if (!opened.ok()) cannot_open = std::string(opened.status().message());
    if (!opened.ok() || !*opened) return false;
    char before = '\n';
    if (from.offset() > 0 &&
        ::pread(open_.fd, &before, 1, static_cast<off_t>(from.offset() - 1)) == 1 &&
        before != '\n') {
      // Inside the hole a truncation left (nothing but NULs before it: a checkpoint taken
      // before the file's first line, NextFile): the data after the hole is read whole. NULs
      // written out (a non-sparse copy) are scanned 1 MiB at a time up to the checkpoint.
      bool zeros_on = false;
      uint64_t data = before == '\0' ? DataFrom(open_.fd, 0, &zeros_on) : 0;
      while (zeros_on && data < from.offset()) data = DataFrom(open_.fd, data, &zeros_on);
      if (before == '\0' && data >= from.offset()) {
        read_offset_ = DataFrom(open_.fd, from.offset());
        // As after the truncation itself: where the data begins is recorded (data_at_), so a
        // second truncation, the writer writing on further out behind NULs again, is seen.
        after_truncation_ = true;
      } else {
        skipping_ = true;
      }
    }
    return true;
  };
  if (same_file(path_) && open_at_checkpoint(path_)) return;
  // Rotated while we were away: logrotate moves the file to PATH.1 (PATH-YYYYMMDD with
  // dateext). Read it on from the checkpoint, then the new file from its start.
  for (const std::string& rotated : RotatedNames(path_)) {
    if (same_file(rotated) && open_at_checkpoint(rotated)) {
      draining_rotated_ = true;
      ++stats_.rotations;
      // No copy told apart here: the checkpoint's fingerprint may hold only a few bytes (taken
      // when the file was short), which the files after it may start with too.
      QueueRotatedAfter(rotated, palisade::v1::FileCheckpoint());
      return;
    }
  }
  if (!cannot_open.empty()) {
    resume_ = PendingResume{from, std::move(cannot_open)};
    return;
  }
  // Replaced or truncated below the checkpoint: from the start of what is there now.
  struct stat st;
  bool truncated = false;
  if (::stat(path_.c_str(), &st) == 0) {
    truncated = st.st_dev == from.device() && st.st_ino == from.inode();
    ++(truncated ? stats_.truncations : stats_.rotations);
  }
  if (truncated) {
    // copytruncate: what was written after the checkpoint is in the copy. Read on there first.
    uint64_t copy_size = 0;
    const std::string copy = CopyOf(from, &copy_size);
    if (!copy.empty() && open_at_checkpoint(copy)) {
      draining_rotated_ = true;
      then_truncated_ = true;
      palisade::v1::FileCheckpoint at = from;
      at.set_offset(copy_size);
      KeepLast16(&truncated_, std::move(at));
      return;
    }
  }
  // No copy of it found: the file is nowhere (compressed away, removed), or it was truncated and
  // its copy compressed (copytruncate with compress). The path holding its inode cannot tell
  // the two apart: ext4 gives a freed inode to the next file created, so logrotate's `create`
  // after gzip freed it makes a new file with the checkpoint's inode and other first bytes, as
  // a truncation written again does. Nothing needs telling: either way what was written to it
  // after the checkpoint is not read (lost, said), and what came after went on in the files
  // rotated since (logrotate's compress with delaycompress, down across two rotations: it is
  // PATH.2.gz, the next day PATH.1; copytruncate's copies likewise).
  // A copy under another name that starts with the path's (app.log.old) still holds the rest:
  // a glob reads it on from the truncation said (TakeTruncated); not lost. One holding exactly
  // the checkpoint's offset (copytruncate with nothing written after it) has no rest: not lost.
  if (truncated) KeepLast16(&truncated_, from);
  if (!truncated || !RestKeptElsewhere(from)) KeepLast16(&lost_, from);
  if (from.written_ns() != 0) {
    // Those last written after it was when the checkpoint was taken, oldest first, then the
    // path. Its own name is gone, so a tie (the same tick of the file clock) is a file written
    // before it: one already read, read again, would count its lines twice. Truncated, a copy
    // of it (copytruncate's, made after the checkpoint) no longer than the checkpoint's offset
    // holds nothing after it: left out. Else none is told (its fingerprint may hold only a few
    // bytes, taken when the file was short, that a file rotated after it starts with too).
    // The path's file, another inode holding lines (written after the checkpoint's file: the
    // writer moved on), dated before the checkpoint says the clock was stepped back meanwhile:
    // the last writes then cannot tell the files rotated after it (dated before it too, they
    // were skipped, unread and unsaid). logrotate compresses and removes the oldest files first,
    // so with the checkpoint's file gone, those left uncompressed under a rotated name are the
    // ones rotated after it: all are read, oldest first by their names.
    struct stat path_st;
    const bool clock_back = !truncated && ::stat(path_.c_str(), &path_st) == 0 &&
                            S_ISREG(path_st.st_mode) && path_st.st_size > 0 &&
                            WrittenNs(path_st) < from.written_ns();
    QueueWrittenAfter(clock_back ? std::numeric_limits<int64_t>::min() : from.written_ns(), "",
                      {from.device(), from.inode()},
                      truncated ? from : palisade::v1::FileCheckpoint());
    queued_after_lost_ = rotated_after_.size();
    if (!rotated_after_.empty()) {
      then_truncated_ = truncated;  // the path after them: a hole may start it
      // Opened at the first Poll, not here: at a restart the file inputs make every restored
      // follower before any polls, and one of the queued files may be another's live log
      // (app.log-1 beside app.log) whose follower does not exist yet (followed_elsewhere).
      // Opened here, it was read from byte 0 by this follower as well as by its own.
      next_file_pending_ = true;
      return;
    }
  }
  (void)OpenAt(path_, 0);
  after_truncation_ = truncated;
}

bool FileFollower::RestKeptElsewhere(const palisade::v1::FileCheckpoint& from) const {
  for (const std::string& name : RotatedNames(path_)) {
    struct stat st;
    if (::lstat(name.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<uint64_t>(st.st_size) >= from.offset() && IsCopyOf(name, from)) {
      return true;
    }
  }
  return false;
}

void FileFollower::QueueRotatedAfter(const std::string& resumed_in,
                                     const palisade::v1::FileCheckpoint& left) {
  struct stat resumed;
  if (::lstat(resumed_in.c_str(), &resumed) != 0) return;
  QueueWrittenAfter(WrittenNs(resumed), resumed_in, {resumed.st_dev, resumed.st_ino}, left);
}

void FileFollower::QueueWrittenAfter(int64_t after_ns, const std::string& name,
                                     std::pair<uint64_t, uint64_t> file,
                                     const palisade::v1::FileCheckpoint& left) {
  // Rotated more than once while the daemon was down: the files written after the checkpoint's
  // and rotated since lie between it and the path. Which is newer their names say within one
  // scheme (PATH.N counts down, a date up: RotatedAfterByName), else their last writes do (each
  // file's after the one before it; the names only for a tie, two rotations within one tick of
  // the file clock). RotatedNames are the path with a suffix: compared by that suffix.
  struct stat now;
  const bool path_there = ::stat(path_.c_str(), &now) == 0;
  // The path's file, another inode holding lines, is written after every rotated file: dated
  // before the file left, it says the clock was stepped back since (NTP after a drift forward).
  const bool clock_back = path_there && S_ISREG(now.st_mode) && now.st_size > 0 &&
                          !(now.st_dev == file.first && now.st_ino == file.second) &&
                          WrittenNs(now) < after_ns;
  std::vector<std::pair<int64_t, std::string>> newer;
  for (const std::string& rotated : RotatedNames(path_)) {
    struct stat st;
    if (rotated == name || !RotatedName(rotated, path_) ||
        ::lstat(rotated.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
        (st.st_dev == file.first && st.st_ino == file.second) ||
        (path_there && st.st_dev == now.st_dev && st.st_ino == now.st_ino) ||
        FollowedElsewhere(rotated, st.st_dev, st.st_ino) || RotatedFromElsewhere(rotated)) {
      // A live log of its own (app.log-1) is read by its follower, not here; so are its rotated
      // files (app.log-1.1), whether that follower holds them still or no more.
      continue;
    }
    // A file that starts as the one left does is a copy of it (dateext's, copytruncate's), not
    // a file written after it; a copy is no longer than what was left (a short file's few bytes,
    // "service started", may begin the next file rotated too, which is longer).
    if (IsCopyOf(rotated, left) && static_cast<uint64_t>(st.st_size) <= left.offset()) continue;
    newer.emplace_back(WrittenNs(st), rotated);
  }
  // Which were rotated after the file left, oldest first: by the names when they and its own are
  // of one scheme (logrotate renames in order whatever the clock: a clock stepped back while the
  // daemon was down dated a file written after the one left before it, and that file was
  // skipped, unread and unsaid), else by their last writes. Never the two mixed: an order by
  // names here and by times there can go round, the files read again and again.
  // With no name for the file left (gone; let go of with no name), the last writes say which
  // were rotated after it, the names (all of one scheme) in which order.
  const bool by_names = std::all_of(newer.begin(), newer.end(), [&](const auto& n) {
    return RotatedAfterByName(n.second, name.empty() ? newer.front().second : name,
                              path_.size())
        .has_value();
  });
  // The names order; they admit a file its last write says is older only when the clock was
  // seen stepped back. Else a stray name sorting later (PATH.0 left by hand; PATH-20270315 from
  // a clock once stepped forward, kept longest by logrotate) was read again from its start at
  // every rotation.
  auto rotated_before = [&](const std::pair<int64_t, std::string>& n) {
    const bool older =
        n.first < after_ns ||
        (n.first == after_ns && (name.empty() || !NewerName(n.second, name, path_.size())));
    if (by_names && !name.empty()) {
      return !*RotatedAfterByName(n.second, name, path_.size()) || (older && !clock_back);
    }
    return older;
  };
  newer.erase(std::remove_if(newer.begin(), newer.end(), rotated_before), newer.end());
  std::sort(newer.begin(), newer.end(), [this, by_names](const auto& a, const auto& b) {
    if (by_names) return *RotatedAfterByName(b.second, a.second, path_.size());
    if (a.first != b.first) return a.first < b.first;
    return NewerName(b.second, a.second, path_.size());
  });
  for (const auto& [when, rotated] : newer) {
    struct stat st;
    if (::lstat(rotated.c_str(), &st) != 0) continue;
    palisade::v1::FileCheckpoint c;
    c.set_path(rotated);
    c.set_device(st.st_dev);
    c.set_inode(st.st_ino);
    rotated_after_.push_back(std::move(c));
  }
}

absl::StatusOr<size_t> FileFollower::ReadMore() {
  if (open_.fd < 0) return 0;
  if (fingerprint_bytes_ < options_.fingerprint_bytes) {
    fingerprint_ = FingerprintOf(open_.fd, &fingerprint_bytes_);  // the file was short: again
  }
  // What the file holds past the offset, at most read_bytes: the buffer grows by what is there.
  // Grown by a read's worth each time (resize zero-fills), an idle follower wrote 256 KiB of
  // zeros at each poll, 20 times a second, and kept them.
  struct stat st;
  if (::fstat(open_.fd, &st) != 0) {
    return absl::DataLossError(absl::StrCat(path_, ": fstat failed: ", std::strerror(errno)));
  }
  if (static_cast<uint64_t>(st.st_size) <= read_offset_) return 0;
  const size_t want = static_cast<size_t>(
      std::min<uint64_t>(options_.read_bytes, static_cast<uint64_t>(st.st_size) - read_offset_));
  const size_t old = pending_.size();
  pending_.resize(old + want);
  const ssize_t n =
      ::pread(open_.fd, pending_.data() + old, want, static_cast<off_t>(read_offset_));
  if (n < 0) {
    pending_.resize(old);
    return absl::DataLossError(absl::StrCat(path_, ": read failed: ", std::strerror(errno)));
  }
  pending_.resize(old + static_cast<size_t>(n));
  read_offset_ += static_cast<uint64_t>(n);
  stats_.bytes += static_cast<uint64_t>(n);
  return static_cast<size_t>(n);
}

size_t FileFollower::TakeLines(size_t max_lines, size_t* bytes_left,
                               absl::FunctionRef<void(absl::string_view)> on_line) {
  size_t taken = 0;
  size_t at = 0;
  const char* const data = pending_.data();
  const size_t size = pending_.size();
  auto hand_out = [&](absl::string_view line) {
    on_line(line);
    *bytes_left -= std::min(*bytes_left, line.size() + 1);
    ++taken;
  };
  while (taken < max_lines && *bytes_left > 0 && at < size) {
    if (after_truncation_ && at >= hole_from_) {
      // copytruncate with a writer that did not open the file O_APPEND: it writes on at its old
      // offset, and what lies before is a hole of NULs, no line of its own. Looked for in the
      // open file's bytes only: a line carried over from the file before (hole_from_) comes
      // first, and its bytes neither end the hole nor count in where its data begins.
      while (at < size && data[at] == '\0') ++at;
      if (at == size) break;
      after_truncation_ = false;
      const uint64_t data_at = read_offset_ + at >= size ? read_offset_ + at - size : 0;
      if (data_at > 0) {
        data_at_ = data_at;
        data_head_.assign(data + at, std::min<size_t>(size - at, 64));
      }
    }
    const void* found = std::memchr(data + at, '\n', size - at);
    const size_t nl = found == nullptr ? std::string::npos
                                       : static_cast<size_t>(static_cast<const char*>(found) - data);
    if (skipping_) {
      if (nl == std::string::npos) {
        at = size;
        break;
      }
      skipping_ = false;
      at = nl + 1;
      continue;
    }
    if (nl == std::string::npos) {
      // Wait for the newline; also after a line of exactly the cap and its CRLF's "\r" (the
      // "\r" is no part of the line: cut here, the whole line was handed out as cut).
      if (size - at <= options_.max_line_bytes ||
          (size - at == options_.max_line_bytes + 1 && data[size - 1] == '\r')) {
        break;
      }
      hand_out(absl::string_view(data + at, options_.max_line_bytes));
      ++stats_.cut_lines;
      skipping_ = true;
      at = size;
      break;
    }
    size_t len = nl - at;
    if (len > 0 && data[at + len - 1] == '\r') --len;
    if (len > options_.max_line_bytes) {
      len = options_.max_line_bytes;
      ++stats_.cut_lines;
    }
    hand_out(absl::string_view(data + at, len));
    at = nl + 1;
  }
  pending_.erase(0, at);
  hole_from_ -= std::min(hole_from_, at);
  stats_.lines += taken;
  return taken;
}

absl::StatusOr<bool> FileFollower::CheckFile() {
  if (draining_rotated_) {
    // The path gone and not created again (nocreate, a retired service): the rotated file,
    // removed (find -delete, maxage) and read to its end, is let go of as the path's own would
    // be (its space freed; no position kept in a file that is no more). Not while files rotated
    // after it wait: they are read first.
    struct stat st;
    if (rotated_after_.empty() && ::stat(path_.c_str(), &st) != 0 && errno == ENOENT) {
      if (LetGoIfRemoved()) return true;
      if (open_.fd < 0) {
        draining_rotated_ = false;
        then_truncated_ = false;
        return false;
      }
    }
    // The rotated file is read to its end: on to the next once the writer writes there (files
    // rotated after it say it has moved on: no need to wait for the path's first byte).
    absl::StatusOr<OldFile> old = OldFileState(/*writer_moved=*/!rotated_after_.empty());
    if (!old.ok()) return old.status();
    if (*old != OldFile::kDone) return *old == OldFile::kMoreRead;
    return NextFile();
  }
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return absl::PermissionDeniedError(absl::StrCat(path_, ": ", std::strerror(errno)));
    }
    // Renamed, the new one not created yet (read on); not there yet; or removed.
    return LetGoIfRemoved();
  }
  if (open_.fd < 0) return OpenAt(path_, 0);  // it appeared
  if (st.st_dev != open_.device || st.st_ino != open_.inode) {
    // Renamed and created again: the old file is read to its end once the writer writes to the
    // new one.
    absl::StatusOr<OldFile> old = OldFileState();
    if (!old.ok()) return old.status();
    if (*old != OldFile::kDone) return *old == OldFile::kMoreRead;
    ++stats_.rotations;
    absl::StatusOr<bool> next = NextFile();
    return next.ok() ? absl::StatusOr<bool>(true) : next;
  }
  struct stat open_st;
  if (::fstat(open_.fd, &open_st) == 0 && static_cast<uint64_t>(open_st.st_size) < read_offset_) {
    // Copied and truncated in place: what is there now is new.
    Truncated();
    return true;
  }
  return false;
}

absl::StatusOr<bool> FileFollower::NextFile() {
  LetGo();
  // A last line without its newline will never be finished: it is a line.
  if (!pending_.empty() && !skipping_) pending_.push_back('\n');
  std::string rest = std::move(pending_);
  // Rotated again while it was read (a follower behind by more than one rotation: a flood
  // under size rotation, a long resume drain): the files rotated after it lie between it and
  // the path, found from its name now. After a copytruncate's copy too: a second copytruncate
  // while it was drained (or while the daemon was down) made another copy, under a rotated name
  // and written after it, of what the path held since the first; only that copy holds those
  // lines (the path was truncated again). Copies of the drained copy itself are left out
  // (QueueWrittenAfter). Before 2026-12-07 the re-query was skipped after a copy and those lines
  // were neither read nor said lost. Only uncompressed copies are found: one compressed at once
  // (compress without delaycompress: PATH.1.gz) is neither read (the follower reads no
  // compressed file) nor said lost; its lines are read only when logrotate delays compression.
  // A file with no name left (`rotate 1`, maxage: removed while it was drained through its
  // descriptor) is followed by the files last written after it; a tie is one written before it
  // (its name cannot order them), and a copy of it no longer than what was read is no later file.
  // Before 2026-12-07 nothing was queued then, and the next file skipped without a word.
  if (rotated_after_.empty()) {
    const std::string now = RotatedNameOfOpen();
    struct stat st;
    if (!now.empty()) {
      QueueRotatedAfter(now, checkpoint());
    } else if (open_.fd >= 0 && ::fstat(open_.fd, &st) == 0) {
      QueueWrittenAfter(WrittenNs(st), "", {open_.device, open_.inode}, checkpoint());
    }
  }
  // Then each file rotated after it, oldest first (under its name now: a rotation since may
  // have moved it on), and the path last.
  while (!rotated_after_.empty()) {
    const palisade::v1::FileCheckpoint next = std::move(rotated_after_.front());
    rotated_after_.erase(rotated_after_.begin());
    std::string at;
    auto is_next = [&next](const std::string& p) {
      struct stat st;
      return ::lstat(p.c_str(), &st) == 0 && st.st_dev == next.device() &&
             st.st_ino == next.inode();
    };
    if (is_next(next.path())) {
      at = next.path();
    } else {
      for (const std::string& rotated : RotatedNames(path_)) {
        if (is_next(rotated)) {
          at = rotated;
          break;
        }
      }
    }
    // Followed live by another follower since it was queued (one made after this one at a
    // restart, for a per-instance log app.log-1): read there, neither here nor lost.
    if (!at.empty() && FollowedElsewhere(at, next.device(), next.inode())) continue;
    absl::StatusOr<bool> opened = at.empty() ? absl::StatusOr<bool>(false) : OpenAt(at, 0);
    if (!opened.ok() || !*opened) {
      // Gone (compressed, removed) before it was read: its lines are not, and that is said.
      KeepLast16(&lost_, next);
      continue;
    }
    // From its data: a file truncated in place under a writer without O_APPEND (the path's
    // file renamed since, or copytruncate's sparse copy of it) starts with a hole, no line.
    // Read from byte 0, its NULs were a line cut at the cap and the first real line its rest.
    bool zeros_on = false;
    read_offset_ = DataFrom(open_.fd, 0, &zeros_on);
    after_truncation_ = zeros_on;
    // After a copytruncate's copy, the next file is another copy: the path truncated again.
    ++(then_truncated_ ? stats_.truncations : stats_.rotations);
    draining_rotated_ = true;
    hole_from_ = rest.size();
    pending_ = std::move(rest);
    return true;
  }
  draining_rotated_ = false;
  absl::StatusOr<bool> opened = OpenAt(path_, 0);
  hole_from_ = rest.size();
  pending_ = std::move(rest);
  // After a copytruncate's copy, the file it was copied from: a hole may start it. So may it
  // when the follower resumed in the copy (a restart while it was drained: the truncation is
  // not known then): a file that starts with a NUL starts with such a hole (a text log writes
  // none), and its NULs are no line.
  char first = 1;
  after_truncation_ = opened.ok() && *opened &&
                      (then_truncated_ || (::pread(open_.fd, &first, 1, 0) == 1 && first == '\0'));
  then_truncated_ = false;
  return opened;
}

std::string FileFollower::RotatedNameOfOpen() const {
  if (open_.fd < 0) return "";
  for (const std::string& rotated : RotatedNames(path_)) {
    struct stat st;
    if (RotatedName(rotated, path_) && ::lstat(rotated.c_str(), &st) == 0 &&
        st.st_dev == open_.device && st.st_ino == open_.inode) {
      return rotated;
    }
  }
  return "";
}

bool FileFollower::LetGoIfRemoved() {
  struct stat st;
  // Still linked (renamed: the writer may write on until it reopens), or written past what was
  // read (a writer that holds it open writes on into it): kept, read on.
  if (open_.fd < 0 || ::fstat(open_.fd, &st) != 0 || st.st_nlink > 0 ||
      static_cast<uint64_t>(st.st_size) > read_offset_) {
    return false;
  }
  // A last line without its newline will never be finished: it is a line, handed out first.
  if (!pending_.empty() && !skipping_) {
    pending_.push_back('\n');
    return true;
  }
  // Removed and read to its end: closed, so its space is freed and descriptors do not pile up.
  Close();
  return false;
}

absl::StatusOr<FileFollower::OldFile> FileFollower::OldFileState(bool writer_moved) {
  // logrotate's `create` renames the file and creates an empty one; the writer goes on writing
  // to the old one until its postrotate reopen. Until the new file holds a byte, the old one is
  // read on. Once it does (or `writer_moved`), the writer has moved: the old file is read to its
  // end, and is done when a read finds nothing more.
  struct stat st;
  if (!writer_moved && (::stat(path_.c_str(), &st) != 0 || st.st_size == 0)) {
    return OldFile::kStillWritten;
  }
  absl::StatusOr<size_t> n = ReadMore();
  if (!n.ok()) return n.status();
  return *n == 0 ? OldFile::kDone : OldFile::kMoreRead;
}

bool FileFollower::HeadChanged() const {
  if (open_.fd < 0 || fingerprint_bytes_ == 0) return false;
  std::string head(fingerprint_bytes_, '\0');
  ssize_t n = ::pread(open_.fd, head.data(), head.size(), 0);
  if (n != static_cast<ssize_t>(head.size()) || Fingerprint(head) != fingerprint_) return true;
  if (data_at_ == 0) return false;
  // Truncated again, the writer writing on further out: the hole now reaches past data_at_.
  head.resize(data_head_.size());
  n = ::pread(open_.fd, head.data(), head.size(), static_cast<off_t>(data_at_));
  return n != static_cast<ssize_t>(head.size()) || head != data_head_;
}

absl::StatusOr<size_t> FileFollower::Poll(size_t max_lines, std::vector<std::string>* lines) {
  return Poll(max_lines, [lines](absl::string_view line) { lines->emplace_back(line); });
}

absl::StatusOr<size_t> FileFollower::Poll(size_t max_lines,
                                          absl::FunctionRef<void(absl::string_view)> on_line) {
  stopped_at_limit_ = false;
  if (resume_) {
    Resume(palisade::v1::FileCheckpoint(resume_->from));
    if (resume_) {
      return absl::UnavailableError(
          absl::StrCat(resume_->why, " (to resume from its checkpoint; tried again next poll)"));
    }
  }
  if (next_file_pending_) {
    next_file_pending_ = false;
    (void)NextFile();
  }
  size_t taken = 0;
  absl::Status error;
  // Truncated and written again past our offset before we looked (copytruncate while the
  // daemon writes fast): the size cannot tell, the first bytes can.
  if (!draining_rotated_ && HeadChanged()) Truncated();
  size_t bytes_left = options_.max_batch_bytes;
  while (taken < max_lines) {
    taken += TakeLines(max_lines - taken, &bytes_left, on_line);
    if (taken >= max_lines || bytes_left == 0) break;
    absl::StatusOr<size_t> n = ReadMore();
    if (!n.ok()) {
      error = n.status();
      break;
    }
    if (*n > 0) continue;
    absl::StatusOr<bool> switched = CheckFile();
    if (!switched.ok()) {
      error = switched.status();
      break;
    }
    if (!*switched) break;
  }
  stopped_at_limit_ = taken >= max_lines || bytes_left == 0;
  // Caught up: what stays allocated is about a partial line's bytes, not a read's or a long
  // record's (up to 8 MiB for a JSON format) held by every idle follower of a glob. Kept while
  // more is to be read at once (the next batch's Poll fills it again).
  if (!stopped_at_limit_ && pending_.capacity() > kKeptBufferBytes &&
      pending_.capacity() > 2 * pending_.size()) {
    pending_.shrink_to_fit();
  }
  struct stat st;
  const bool stated = open_.fd >= 0 && ::fstat(open_.fd, &st) == 0;
  if (stated) written_ns_ = WrittenNs(st);  // with the lines handed out in it
  const uint64_t at = checkpoint().offset();
  lag_bytes_ = stated && static_cast<uint64_t>(st.st_size) > at
                   ? static_cast<uint64_t>(st.st_size) - at
                   : 0;
  if (taken == 0 && !error.ok()) return error;
  return taken;
}

void FileFollower::LetGo() {
  if (open_.fd < 0) return;
  constexpr size_t kMaxLetGo = 16;
  if (let_go_.size() >= kMaxLetGo) let_go_.erase(let_go_.begin());
  let_go_.push_back(checkpoint());
}

std::string FileFollower::CopyOf(const palisade::v1::FileCheckpoint& at, uint64_t* size) const {
  // Under a rotated name of the path, another inode, the file's first bytes, more than `at`
  // took; of several (a file whose first lines are always the same), the last written.
  std::string copy;
  std::pair<int64_t, int64_t> newest;
  for (const std::string& rotated : RotatedNames(path_)) {
    struct stat st;
    if (!RotatedName(rotated, path_) || ::lstat(rotated.c_str(), &st) != 0 ||
        !S_ISREG(st.st_mode) || (st.st_dev == at.device() && st.st_ino == at.inode()) ||
        static_cast<uint64_t>(st.st_size) <= at.offset() ||
        FollowedElsewhere(rotated, st.st_dev, st.st_ino) || !IsCopyOf(rotated, at)) {
      continue;
    }
    const std::pair<int64_t, int64_t> written(st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (copy.empty() || written > newest) {
      copy = rotated;
      newest = written;
      *size = static_cast<uint64_t>(st.st_size);
    }
  }
  return copy;
}

void FileFollower::Truncated() {
  // Where the copy (if one was made) holds what was not handed out yet: read on there first
  // when it is under a rotated name (a named path's copy is read by nothing else; a glob's
  // copy is told by the position said, at its end, and left out).
  palisade::v1::FileCheckpoint at = checkpoint();
  const bool was_skipping = skipping_;
  uint64_t copy_size = 0;
  const std::string copy = CopyOf(at, &copy_size);
  ++stats_.truncations;
  if (!copy.empty()) {
    const uint64_t from = at.offset();
    at.set_offset(copy_size);
    KeepLast16(&truncated_, std::move(at));
    absl::StatusOr<bool> opened = OpenAt(copy, from);
    if (opened.ok() && *opened) {
      skipping_ = was_skipping;  // the rest of a cut line is dropped there
      draining_rotated_ = true;
      then_truncated_ = true;
      return;
    }
    // Gone meanwhile: the file from its start, as without a copy.
    (void)OpenAt(path_, 0);
    after_truncation_ = true;
    return;
  }
  // No copy under a rotated name: compressed at once (copytruncate with compress and no
  // delaycompress, the copy PATH.1.gz before we looked), what was written after the last read
  // is in it only. Said (TakeLostToCompression); before 2026-12-07 it was neither read nor said.
  CompressedCopyLost(at);
  KeepLast16(&truncated_, std::move(at));
  pending_.clear();
  hole_from_ = 0;
  skipping_ = false;
  data_at_ = 0;
  data_head_.clear();
  read_offset_ = 0;
  fingerprint_ = FingerprintOf(open_.fd, &fingerprint_bytes_);
  after_truncation_ = true;
}

void FileFollower::CompressedCopyLost(const palisade::v1::FileCheckpoint& at) {
  // A compressed file under a rotated name of the path (PATH.1.gz, PATH-20261207.gz) written
  // since the follower last looked at the file, newest first (a tie, the same tick, goes by the
  // name: PATH.1 before PATH.2), that is a copy of it: a gzip file whose first bytes inflated
  // are the file's (those fingerprinted). Any .gz made meanwhile (another log's, beside a
  // truncation by hand: : > PATH) was taken for the copy. One whose compression cannot be read
  // here (xz, zstd) is taken unless it is a rotated copy of a log another follower holds
  // (PATH-1.1.xz of PATH-1): its first bytes cannot be told.
  std::vector<std::pair<int64_t, std::string>> candidates;
  for (const std::string& name : RotatedNames(path_)) {
    const size_t ext = CompressedSuffix(name);
    struct stat st;
    if (ext == 0) continue;
    const absl::string_view stripped = absl::string_view(name).substr(0, name.size() - ext);
    if (!RotatedName(stripped, path_) || ::lstat(name.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
        WrittenNs(st) < at.written_ns() || RotatedFromElsewhere(stripped)) {
      continue;
    }
    candidates.emplace_back(WrittenNs(st), name);
  }
  auto stripped = [](const std::string& name) {
    return absl::string_view(name).substr(0, name.size() - CompressedSuffix(name));
  };
  std::sort(candidates.begin(), candidates.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return NewerName(stripped(a.second), stripped(b.second), path_.size());
  });
  std::string newest;
  for (const auto& [when, name] : candidates) {
    std::optional<std::string> head = GunzipHead(name, at.fingerprint_bytes());
    if (at.fingerprint_bytes() == 0 || !head.has_value() ||
        (head->size() == at.fingerprint_bytes() && Fingerprint(*head) == at.fingerprint())) {
      newest = name;
      break;
    }
  }
  if (newest.empty()) return;  // truncated by hand (: > app.log), or the copy kept elsewhere
  CompressedCopyLoss loss{at, newest, std::nullopt};
  std::optional<uint32_t> size = GzipSize(newest);
  // The copy holds what was read and what came after, up to the truncation: its size less the
  // position, mod 2^32 as gzip counts. Exact only from a position below 4 GiB in a copy below
  // 4 GiB (told by its compressed size: deflate inflates at most 1032-fold); else at least
  // that. One smaller than the position is another file (the follower's file below 4 GiB), or
  // a copy past 4 GiB: how much was lost is not known.
  struct stat gz;
  const bool exact = at.offset() < (uint64_t{1} << 32) && ::lstat(newest.c_str(), &gz) == 0 &&
                     static_cast<uint64_t>(gz.st_size) < (uint64_t{1} << 32) / 1032;
  if (size.has_value() && (at.offset() >= (uint64_t{1} << 32) || *size >= at.offset())) {
    loss.bytes = static_cast<uint32_t>(*size - static_cast<uint32_t>(at.offset()));
    loss.at_least = !exact;
    if (*loss.bytes == 0) {
      if (exact) return;  // nothing written after the last read
      loss.bytes.reset();  // nothing, or a multiple of 4 GiB
      loss.at_least = false;
    }
  }
  if (lost_to_compression_.size() >= 16) lost_to_compression_.erase(lost_to_compression_.begin());
  lost_to_compression_.push_back(std::move(loss));
}

std::vector<FileFollower::CompressedCopyLoss> FileFollower::TakeLostToCompression() {
  std::vector<CompressedCopyLoss> out;
  out.swap(lost_to_compression_);
  return out;
}

std::vector<palisade::v1::FileCheckpoint> FileFollower::TakeTruncated() {
  std::vector<palisade::v1::FileCheckpoint> out;
  out.swap(truncated_);
  return out;
}

std::vector<palisade::v1::FileCheckpoint> FileFollower::TakeLost() {
  std::vector<palisade::v1::FileCheckpoint> out;
  out.swap(lost_);
  return out;
}

std::vector<palisade::v1::FileCheckpoint> FileFollower::TakeLetGo() {
  std::vector<palisade::v1::FileCheckpoint> out;
  out.swap(let_go_);
  return out;
}

bool FileFollower::IsFileOf(const std::string& path, const palisade::v1::FileCheckpoint& c) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  struct stat st;
  bool same = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == c.device() &&
              st.st_ino == c.inode();
  if (same && c.fingerprint_bytes() > 0) {
    std::string head(c.fingerprint_bytes(), '\0');
    same = ::pread(fd, head.data(), head.size(), 0) == static_cast<ssize_t>(head.size()) &&
           Fingerprint(head) == c.fingerprint();
  }
  ::close(fd);
  return same;
}

bool FileFollower::RotatedName(absl::string_view rotated, absl::string_view path) {
  if (rotated.size() < path.size() + 2 || !absl::StartsWith(rotated, path)) return false;
  const absl::string_view suffix = rotated.substr(path.size());
  if (suffix[0] != '.' && suffix[0] != '-' && suffix[0] != '_') return false;
  if (!absl::ascii_isdigit(suffix[1]) || !absl::ascii_isdigit(suffix.back())) return false;
  return std::all_of(suffix.begin() + 1, suffix.end(), [](char c) {
    return absl::ascii_isdigit(c) || c == '-' || c == '_' || c == '.';
  });
}

std::vector<std::string> FileFollower::RotatedNames(const std::string& path) {
  std::vector<std::string> out = {path + ".1"};
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  std::vector<std::string> more;
  while (const struct dirent* e = ::readdir(d)) {
    const absl::string_view name = e->d_name;
    if (name.size() > base.size() && absl::StartsWith(name, base) && name != base + ".1") {
      more.push_back(absl::StrCat(slash == std::string::npos ? "" : dir, name));
    }
  }
  ::closedir(d);
  std::sort(more.begin(), more.end());
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

bool FileFollower::IsCopyOf(const std::string& path, const palisade::v1::FileCheckpoint& c) {
  if (c.fingerprint_bytes() == 0) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  struct stat st;
  std::string head(c.fingerprint_bytes(), '\0');
  const bool copy = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                    ::pread(fd, head.data(), head.size(), 0) == static_cast<ssize_t>(head.size()) &&
                    Fingerprint(head) == c.fingerprint();
  ::close(fd);
  return copy;
}

palisade::v1::FileCheckpoint FileFollower::checkpoint() const {
  palisade::v1::FileCheckpoint c;
  if (resume_) {
    // Waiting to resume: nothing was read since, so the position is still the checkpoint's (a
    // snapshot taken meanwhile must keep it, not "no file").
    c = resume_->from;
    c.clear_input();
    c.set_path(path_);
    return c;
  }
  c.set_path(path_);  // the input's path; which file it is, the inode and fingerprint say
  c.set_device(open_.device);
  c.set_inode(open_.inode);
  // After the last line handed out: what was read less what waits in the buffer. Lines that
  // the last rotation's buffer carried over belong to the previous file: the new file's
  // position is then 0 until they are taken.
  const uint64_t held = skipping_ ? 0 : pending_.size();
  c.set_offset(read_offset_ >= held ? read_offset_ - held : 0);
  c.set_fingerprint(fingerprint_);
  c.set_fingerprint_bytes(fingerprint_bytes_);
  c.set_written_ns(written_ns_);
  return c;
}

}  // namespace palisade
