#include "services/inputs/line_reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"

namespace palisade {
namespace {

// Points `lines`, views into bytes that moved from `from` to `to`, at them.
void Rebase(const char* from, const char* to, std::vector<absl::string_view>* lines) {
  for (absl::string_view& line : *lines) {
    line = absl::string_view(to + (line.data() - from), line.size());
  }
}

// A buffer's first capacity (then it doubles).
constexpr size_t kMinBufferBytes = 64 << 10;

// Whether the `avail` bytes at `start`, with no newline among them, are a line of exactly `max`
// bytes and its CRLF's "\r": not past the cap before its "\n" is seen.
bool CrAfterCap(const char* start, size_t avail, size_t max) {
  return avail == max + 1 && start[max] == '\r';
}

}  // namespace

bool AllPlainAscii(const char* p, size_t n) {
  size_t i = 0;
#if defined(__SSE2__)
  // A byte with its high bit set shows in the OR of the blocks; a NUL in their unsigned minimum.
  const __m128i zero = _mm_setzero_si128();
  auto load = [p](size_t at) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at)); };
  // 128 bytes a step (~30 instructions; 64 a step cost ~0.35 instructions a byte).
  for (; i + 128 <= n; i += 128) {
    const __m128i a = load(i), b = load(i + 16), c = load(i + 32), d = load(i + 48);
    const __m128i e = load(i + 64), f = load(i + 80), g = load(i + 96), h = load(i + 112);
    const __m128i high = _mm_or_si128(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)),
                                      _mm_or_si128(_mm_or_si128(e, f), _mm_or_si128(g, h)));
    const __m128i low = _mm_min_epu8(_mm_min_epu8(_mm_min_epu8(a, b), _mm_min_epu8(c, d)),
                                     _mm_min_epu8(_mm_min_epu8(e, f), _mm_min_epu8(g, h)));
    if (_mm_movemask_epi8(_mm_or_si128(high, _mm_cmpeq_epi8(low, zero))) != 0) return false;
  }
  for (; i + 16 <= n; i += 16) {
    const __m128i v = load(i);
    if (_mm_movemask_epi8(_mm_or_si128(v, _mm_cmpeq_epi8(v, zero))) != 0) return false;
  }
#endif
  for (; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(p[i]);
    if (c == 0 || c >= 0x80) return false;
  }
  return true;
}

void LineBuffer::Reserve(size_t capacity, size_t keep) {
  if (capacity <= capacity_) return;
  std::unique_ptr<char[]> bigger(new char[capacity]);
  if (keep > 0) std::memcpy(bigger.get(), data_.get(), keep);
  data_ = std::move(bigger);
  capacity_ = capacity;
}

absl::StatusOr<size_t> LineSource::NextBatch(size_t max_lines, size_t max_bytes, LineBuffer* buffer,
                                             std::vector<absl::string_view>* lines) {
  lines->clear();
  buffer->set_plain(false);
  size_t used = 0;
  absl::string_view line;
  while (lines->size() < max_lines && used < max_bytes) {
    absl::StatusOr<bool> next = Next(&line);
    if (!next.ok()) return next.status();
    if (!*next) break;
    if (used + line.size() > buffer->capacity()) {
      const char* old = buffer->data();
      buffer->Reserve(std::max({2 * buffer->capacity(), used + line.size(), kMinBufferBytes}),
                      used);
      Rebase(old, buffer->data(), lines);
    }
    if (!line.empty()) std::memcpy(buffer->data() + used, line.data(), line.size());
    lines->emplace_back(buffer->data() + used, line.size());
    used += line.size();
  }
  return lines->size();
}

absl::StatusOr<size_t> VectorLineSource::NextBatch(size_t max_lines, size_t max_bytes,
                                                   LineBuffer* buffer,
                                                   std::vector<absl::string_view>* lines) {
  lines->clear();
  buffer->set_plain(false);
  size_t bytes = 0;
  while (next_ < lines_.size() && lines->size() < max_lines && bytes < max_bytes) {
    lines->emplace_back(lines_[next_]);
    bytes += lines_[next_].size();
    ++next_;
  }
  return lines->size();
}

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
  absl::StatusOr<size_t> n = Read(buf_.get() + end_, room);
  if (!n.ok()) return n.status();
  end_ += *n;
  return *n > 0;
}

absl::StatusOr<size_t> LineReader::Read(char* to, size_t n) {
  if (eof_) return 0;
  const size_t got = std::fread(to, 1, n, file_);
  if (got < n) {
    if (std::ferror(file_)) {
      return absl::DataLossError(absl::StrCat(path_, ": read failed: ", std::strerror(errno)));
    }
    eof_ = true;
  }
  return got;
}

absl::StatusOr<bool> LineReader::Next(absl::string_view* line) {
  cut_lines_before_next_ = cut_lines_;
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
      // A CRLF line's "\r" is no part of it: dropped before the line is measured against the cap
      // (a line of exactly the cap was counted as cut, and handed out without its last byte).
      if (len > options_.max_line_bytes + (len > 0 && start[len - 1] == '\r' ? 1 : 0)) {
        // A line that came whole in one chunk but is longer than the cap.
        *line = absl::string_view(start, options_.max_line_bytes);
        ++cut_lines_;
        ++lines_;
        begin_ += len + 1;
        return true;
      }
      begin_ += len + 1;
    } else if (avail > options_.max_line_bytes &&
               !CrAfterCap(start, avail, options_.max_line_bytes)) {
      // No newline within the cap and a byte past it (not the "\r" of a CRLF line of exactly
      // the cap, whose "\n" was not read yet): cut the line here and skip its rest.
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

absl::StatusOr<size_t> LineReader::NextBatch(size_t max_lines, size_t max_bytes, LineBuffer* buffer,
                                             std::vector<absl::string_view>* lines) {
  lines->clear();
  buffer->set_plain(false);
  const size_t max_line = options_.max_line_bytes;
  // What an earlier call read past its last line comes first.
  size_t end = end_ - begin_;  // the bytes read into the buffer: [0, end)
  buffer->Reserve(std::max(end, kMinBufferBytes), 0);
  if (end > 0) std::memcpy(buffer->data(), buf_.get() + begin_, end);
  begin_ = end_ = 0;
  char* data = buffer->data();
  size_t pos = 0;      // where the next line starts
  size_t scanned = 0;  // bytes of [pos, end) known to hold no newline
  size_t bytes = 0;    // the lines' bytes
  uint64_t cut = 0;
  while (lines->size() < max_lines && bytes < max_bytes) {
    char* start = data + pos;
    const size_t avail = end - pos;
    const char* nl =
        avail > scanned
            ? static_cast<const char*>(std::memchr(start + scanned, '\n', avail - scanned))
            : nullptr;
    if (skipping_) {
      // The rest of a cut line: drop it up to and including its newline.
      if (nl != nullptr) {
        pos += nl - start + 1;
        skipping_ = false;
        scanned = 0;
        continue;
      }
      end = pos;  // dropped as it comes: the buffer does not grow with it
      scanned = 0;
    } else if (nl != nullptr) {
      const size_t len = nl - start;
      if (len <= max_line + (len > 0 && start[len - 1] == '\r' ? 1 : 0)) {
        lines->emplace_back(start, len > 0 && start[len - 1] == '\r' ? len - 1 : len);
        pos += len + 1;
      } else {
        // A line that came whole but is longer than the cap: its rest is dropped, and what was
        // read after it moves down (the buffer holds no more than the lines it hands out).
        lines->emplace_back(start, max_line);
        ++cut;
        std::memmove(start + max_line, nl + 1, end - (nl + 1 - data));
        end -= len + 1 - max_line;
        pos += max_line;
      }
      bytes += lines->back().size();
      scanned = 0;
      continue;
    } else if (avail > max_line && !CrAfterCap(start, avail, max_line)) {
      // No newline within the cap and a byte past it (not the "\r" of a CRLF line of exactly
      // the cap, whose "\n" was not read yet): cut the line here and skip its rest.
      lines->emplace_back(start, max_line);
      ++cut;
      bytes += max_line;
      pos += max_line;
      skipping_ = true;
      scanned = 0;
      continue;
    } else {
      scanned = avail;
    }
    // More of the file: what the batch still needs by the lines' mean length (rather short: what
    // is read past the batch is copied for the next call, where a short read costs one more),
    // at least as much again as the line begun (a long line takes few reads), at most a chunk.
    const size_t mean = batch_lines_ > 0 ? std::max<uint64_t>(1, batch_bytes_ / batch_lines_) : 128;
    const size_t left = max_lines - lines->size();
    size_t want = left > options_.chunk_bytes / mean ? options_.chunk_bytes : left * mean;
    if (max_bytes - bytes < want) want = max_bytes - bytes + mean;
    want = std::clamp(std::max(want, end - pos), size_t{256}, options_.chunk_bytes);
    if (end + want > buffer->capacity()) {
      const char* old = data;
      buffer->Reserve(std::max(2 * buffer->capacity(), end + want), end);
      data = buffer->data();
      Rebase(old, data, lines);
    }
    absl::StatusOr<size_t> got = Read(data + end, want);
    if (!got.ok()) return got.status();
    if (*got > 0) {
      end += *got;
      continue;
    }
    // The end of the file: a last line without its newline is still a line.
    if (!skipping_ && end > pos) {
      const size_t len = end - pos;
      lines->emplace_back(data + pos, data[end - 1] == '\r' ? len - 1 : len);
      pos = end;
    }
    break;
  }
  // The batch's bytes at once (its lines, their newlines and any cut line's dropped rest, which
  // can only make it say false): a line is then not looked at again for hostile bytes.
  buffer->set_plain(AllPlainAscii(data, pos));
  // What was read past the batch waits in the reader's own buffer (at most a chunk and a line).
  std::memcpy(buf_.get(), data + pos, end - pos);
  end_ = end - pos;
  batch_bytes_ += pos;
  batch_lines_ += lines->size();
  lines_ += lines->size();
  cut_lines_ += cut;
  return lines->size();
}

}  // namespace palisade
