#include "services/inputs/line_reader.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace palisade {

absl::StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::string& path,
                                                             LineReaderOptions options) {
  if (path == "-") {
    return std::unique_ptr<LineReader>(new LineReader(stdin, "standard input", options));
  }
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int err = errno;
    const std::string why = absl::StrCat(path, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(why);
    if (err == EACCES) return absl::PermissionDeniedError(why);
    return absl::InvalidArgumentError(why);
  }
  struct stat st;
  if (fstat(fileno(file), &st) == 0 && S_ISDIR(st.st_mode)) {
    std::fclose(file);
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory"));
  }
  return std::unique_ptr<LineReader>(new LineReader(file, path, options));
}

LineReader::LineReader(std::FILE* file, std::string path, LineReaderOptions options)
    : file_(file), owned_(file != stdin), path_(std::move(path)), options_(options) {
  if (options_.chunk_bytes < 4096) options_.chunk_bytes = 4096;
  if (options_.max_line_bytes < 64) options_.max_line_bytes = 64;
  cap_ = options_.chunk_bytes + options_.max_line_bytes;
  buf_.reset(new char[cap_]);
}

LineReader::~LineReader() {
  if (owned_) std::fclose(file_);
}

absl::StatusOr<bool> LineReader::Fill() {
  if (eof_) return false;
  // Keep the unread part (a line begun in the previous chunk) at the front.
  if (begin_ > 0) {
    std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  const size_t room = std::min(cap_ - end_, options_.chunk_bytes);
  const size_t n = std::fread(buf_.get() + end_, 1, room, file_);
  if (n < room) {
    if (std::ferror(file_)) {
      return absl::DataLossError(absl::StrCat(path_, ": read failed: ", std::strerror(errno)));
    }
    eof_ = true;
  }
  end_ += n;
  return n > 0;
}

absl::StatusOr<bool> LineReader::Next(absl::string_view* line) {
  size_t scanned = 0;  // bytes of [begin_, end_) known to hold no newline
  while (true) {
    const char* start = buf_.get() + begin_;
    const size_t avail = end_ - begin_;
    const void* nl = avail > scanned ? std::memchr(start + scanned, '\n', avail - scanned)
                                     : nullptr;
    if (skipping_) {
      // The rest of a cut line: drop it up to and including its newline.
      if (nl == nullptr) {
        begin_ = end_ = 0;
        scanned = 0;
        absl::StatusOr<bool> more = Fill();
        if (!more.ok()) return more.status();
        if (!*more) return false;
        continue;
      }
      begin_ += static_cast<const char*>(nl) - start + 1;
      skipping_ = false;
      scanned = 0;
      continue;
    }
    size_t len;
    if (nl != nullptr) {
      len = static_cast<size_t>(static_cast<const char*>(nl) - start);
      if (len > options_.max_line_bytes) {
        // A line that came whole in one chunk but is longer than the cap.
        *line = absl::string_view(start, options_.max_line_bytes);
        ++cut_lines_;
        ++lines_;
        begin_ += len + 1;
        return true;
      }
      begin_ += len + 1;
    } else if (avail >= options_.max_line_bytes) {
      // No newline within the cap: cut the line here and skip its rest.
      *line = absl::string_view(start, options_.max_line_bytes);
      begin_ += options_.max_line_bytes;
      skipping_ = true;
      ++cut_lines_;
      ++lines_;
      return true;
    } else {
      scanned = avail;
      absl::StatusOr<bool> more = Fill();
      if (!more.ok()) return more.status();
      if (*more) continue;  // Fill moved the unread part to the front; `scanned` still holds
      if (end_ == begin_) return false;
      // The last line has no newline.
      len = end_ - begin_;
      start = buf_.get() + begin_;
      begin_ = end_;
    }
    if (len > 0 && start[len - 1] == '\r') --len;
    *line = absl::string_view(start, len);
    ++lines_;
    return true;
  }
}

}  // namespace palisade
