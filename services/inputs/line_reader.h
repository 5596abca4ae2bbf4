// Reading log lines from a file (or standard input) with bounded memory, whatever the file's
// size: `palisadectl ship` and `replay` stream a file through a LineReader instead of reading it
// whole (a million-line log cost ~490 MiB that way). The file is read in chunks of
// `chunk_bytes`; a line is handed out as a view into the chunk buffer, valid until the next call.
// A line longer than `max_line_bytes` is cut there (its rest skipped up to the newline, the cut
// counted): the reader never holds more than chunk_bytes + max_line_bytes. A trailing "\r" is
// dropped (CRLF logs); a last line without its newline is still a line.
//
// LineSource is what the consumers (replay, the shipper) read from: a LineReader, or a vector of
// lines (tests, the gRPC-fed paths).
//
// Thread-safety: none; one reader per thread.
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

// A stream of lines. Next() returns true with the next line in `*line` (a view valid until the
// next call), false at the end, or an error naming what failed.
class LineSource {
 public:
  virtual ~LineSource() = default;
  virtual absl::StatusOr<bool> Next(absl::string_view* line) = 0;
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

  // Lines handed out so far, and how many of them were cut at max_line_bytes.
  uint64_t lines() const { return lines_; }
  uint64_t cut_lines() const { return cut_lines_; }

 private:
  LineReader(std::FILE* file, std::string path, LineReaderOptions options);
  // Reads more of the file after the unread part of the buffer; false at the end of the file.
  absl::StatusOr<bool> Fill();

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
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_LINE_READER_H_
