// Reading log lines from a file (or standard input) with bounded memory, whatever the file's
// size: `palisadectl ship` and `replay` stream a file through a LineReader instead of reading it
// whole (a million-line log cost ~490 MiB that way). The file is read in chunks of
// `chunk_bytes`; a line is handed out as a view into the chunk buffer, valid until the next call.
// A line longer than `max_line_bytes` is cut there (its rest skipped up to the newline, the cut
// counted): the reader never holds more than chunk_bytes + max_line_bytes. A trailing "\r" is
// dropped (CRLF logs); a last line without its newline is still a line.
//
// Lines come one at a time (Next) or a batch at a time (NextBatch): a batch is read straight into
// a buffer the caller owns, its lines views into it, so the caller can keep several batches at
// once (replay prematches batches ahead on other threads) without copying a line, and pays one
// call and one status per batch instead of per line.
//
// LineSource is what the consumers (replay, the shipper) read from: a LineReader, or a vector of
// lines (tests, the gRPC-fed paths).
//
// Thread-safety: none; one reader per thread (a batch's lines may be read on any thread).
#ifndef PALISADE_SERVICES_INPUTS_LINE_READER_H_
#define PALISADE_SERVICES_INPUTS_LINE_READER_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace palisade {

// The bytes a batch of lines may be read into (LineSource::NextBatch): owned by the caller, reused
// from batch to batch (it keeps its capacity; it never shrinks).
class LineBuffer {
 public:
  char* data() const { return data_.get(); }
  size_t capacity() const { return capacity_; }
  // Makes the capacity at least `capacity`, keeping the first `keep` bytes (moved if it grows).
  void Reserve(size_t capacity, size_t keep);
  // Set by NextBatch: true when every byte of the lines it gave is ASCII and none is NUL (no
  // line holds a byte the pipeline must replace or count: LineBatch::plain), false when one may.
  // LineReader checks the bytes it read into the batch at once, 128 at a time; other sources
  // say false.
  bool plain() const { return plain_; }
  void set_plain(bool plain) { plain_ = plain; }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
  bool plain_ = false;
};

// Whether the `n` bytes at `p` are all ASCII and none is NUL (128 at a time with SSE2).
bool AllPlainAscii(const char* p, size_t n);

// A stream of lines. Next() returns true with the next line in `*line` (a view valid until the
// next call), false at the end, or an error naming what failed.
class LineSource {
 public:
  virtual ~LineSource() = default;
  virtual absl::StatusOr<bool> Next(absl::string_view* line) = 0;
  // Replaces `*lines` with the next lines: up to `max_lines`, and no more once their bytes reach
  // `max_bytes` (the line that reaches it included). Returns how many; 0 at the end. The lines
  // are those Next() would give, as views into `*buffer` (or into memory the source keeps for its
  // life), valid until `buffer` is given to NextBatch again or destroyed, whatever else is read
  // meanwhile. On an error the lines read into this batch are lost. This default copies Next()'s
  // lines into the buffer; LineReader reads the file into it and copies none.
  virtual absl::StatusOr<size_t> NextBatch(size_t max_lines, size_t max_bytes, LineBuffer* buffer,
                                           std::vector<absl::string_view>* lines);
};

// Lines held in memory.
class VectorLineSource : public LineSource {
 public:
  explicit VectorLineSource(const std::vector<std::string>& lines) : lines_(lines) {}
  absl::StatusOr<bool> Next(absl::string_view* line) override {
    if (next_ >= lines_.size()) return false;
    *line = lines_[next_++];
    return true;
  }
  // Views into the vector's strings (none copied).
  absl::StatusOr<size_t> NextBatch(size_t max_lines, size_t max_bytes, LineBuffer* buffer,
                                   std::vector<absl::string_view>* lines) override;

 private:
  const std::vector<std::string>& lines_;
  size_t next_ = 0;
};

struct LineReaderOptions {
  size_t chunk_bytes = 1 << 20;
  // Longer lines are cut here (the pipeline cuts again at engine.max_line_bytes).
  size_t max_line_bytes = 1 << 20;
};

class LineReader : public LineSource {
 public:
  // Opens `path` ("-": standard input). kNotFound / kPermissionDenied / kInvalidArgument (a
  // directory) name the path.
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path,
                                                          LineReaderOptions options = {});
  ~LineReader() override;

  absl::StatusOr<bool> Next(absl::string_view* line) override;
  // Reads the file into `buffer` (reads sized to the batch from the lines' mean length) and splits
  // it there: no line is copied; only what was read past the batch's last line is, to come first
  // in the next call's buffer. At most max_bytes + 2 x max_line_bytes + chunk_bytes + 2 bytes a
  // line (their newlines) are read into the buffer, whose capacity doubles as it must.
  absl::StatusOr<size_t> NextBatch(size_t max_lines, size_t max_bytes, LineBuffer* buffer,
                                   std::vector<absl::string_view>* lines) override;

  // Lines handed out so far, and how many of them were cut at max_line_bytes.
  uint64_t lines() const { return lines_; }
  uint64_t cut_lines() const { return cut_lines_; }
  // Whether the line the last Next() handed out was cut at max_line_bytes (a line of exactly
  // the cap and a longer one cut there look alike: a shipper flags the cut one, LogRecord.cut).
  bool last_cut() const { return cut_lines_ != cut_lines_before_next_; }

 private:
  LineReader(std::FILE* file, std::string path, LineReaderOptions options);
  // Reads more of the file after the unread part of the buffer; false at the end of the file.
  absl::StatusOr<bool> Fill();
  // Reads up to `n` bytes of the file to `to`: how many (0 at the end of the file).
  absl::StatusOr<size_t> Read(char* to, size_t n);

  std::FILE* file_;
  bool owned_;
  std::string path_;
  LineReaderOptions options_;
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;
  size_t begin_ = 0;  // the unread part: [begin_, end_)
  size_t end_ = 0;
  bool eof_ = false;
  bool skipping_ = false;  // the rest of a cut line, up to its newline
  uint64_t lines_ = 0;
  uint64_t cut_lines_ = 0;
  uint64_t cut_lines_before_next_ = 0;  // cut_lines_ when the last Next() began (last_cut)
  uint64_t batch_bytes_ = 0;  // bytes NextBatch consumed (newlines and cut parts included)
  uint64_t batch_lines_ = 0;  // and the lines they held: the mean sizes its reads
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_LINE_READER_H_
