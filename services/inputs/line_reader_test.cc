#include "services/inputs/line_reader.h"

#include <cstdlib>
#include <fstream>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;

std::string WriteFile(const std::string& name, const std::string& content) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::vector<std::string> ReadAll(const std::string& path, LineReaderOptions options,
                                 uint64_t* cut = nullptr) {
  auto reader = LineReader::Open(path, options);
  EXPECT_THAT(reader, IsOk());
  std::vector<std::string> lines;
  absl::string_view line;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&line);
    EXPECT_THAT(more, IsOk());
    if (!more.ok() || !*more) break;
    lines.emplace_back(line);
  }
  if (cut != nullptr) *cut = (*reader)->cut_lines();
  return lines;
}

TEST(LineReaderTest, LinesAcrossChunkBoundariesComeOutWhole) {
  // Random line lengths over many 4 KiB chunks: every line, in order, byte for byte.
  std::mt19937 rng(3);
  std::vector<std::string> want;
  std::string content;
  for (int i = 0; i < 5000; ++i) {
    std::string line = absl::StrCat(i, ":", std::string(rng() % 300, 'a' + i % 26));
    content += line + (i % 7 == 0 ? "\r\n" : "\n");
    want.push_back(line);
  }
  content += "last line without newline";
  want.push_back("last line without newline");
  LineReaderOptions options;
  options.chunk_bytes = 4096;
  options.max_line_bytes = 1024;
  EXPECT_EQ(ReadAll(WriteFile("a.log", content), options), want);
}

TEST(LineReaderTest, LongLinesAreCutAndCountedAndTheNextLineSurvives) {
  LineReaderOptions options;
  options.chunk_bytes = 4096;
  options.max_line_bytes = 100;
  const std::string huge(50'000, 'x');  // many chunks, no newline for a long while
  uint64_t cut = 0;
  std::vector<std::string> lines = ReadAll(
      WriteFile("b.log", "first\n" + huge + "\n" + std::string(150, 'y') + "\nafter\n"), options,
      &cut);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "first");
  EXPECT_EQ(lines[1], std::string(100, 'x'));
  EXPECT_EQ(lines[2], std::string(100, 'y'));
  EXPECT_EQ(lines[3], "after");
  EXPECT_EQ(cut, 2u);
}

// A line of exactly the cap and a longer one cut there read alike; last_cut tells them apart
// (what a shipper flags as LogRecord.cut), line by line.
TEST(LineReaderTest, LastCutTellsACutLineFromOneOfExactlyTheCap) {
  LineReaderOptions options;
  options.max_line_bytes = 100;
  absl::StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(
      WriteFile("cut.log", std::string(100, 'a') + "\n" + std::string(101, 'b') + "\nc\n"),
      options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<bool> cut;
  absl::string_view line;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&line);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    cut.push_back((*reader)->last_cut());
  }
  EXPECT_EQ(cut, (std::vector<bool>{false, true, false}));
}

TEST(LineReaderTest, EmptyFilesAndEmptyLines) {
  EXPECT_TRUE(ReadAll(WriteFile("c.log", ""), {}).empty());
  EXPECT_EQ(ReadAll(WriteFile("d.log", "\n\nx\n"), {}), (std::vector<std::string>{"", "", "x"}));
}

TEST(LineReaderTest, ErrorsNameThePath) {
  EXPECT_THAT(LineReader::Open("/nonexistent/x.log"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("/nonexistent/x.log")));
  EXPECT_THAT(LineReader::Open(std::getenv("TEST_TMPDIR")),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("directory")));
}

// Every line NextBatch gives, batch after batch; each batch read into a buffer of its own among
// `buffers` in turn, and every line checked again at the end (before the buffers are reused):
// a batch's views stay valid while later batches are read.
std::vector<std::string> ReadBatches(LineSource& source, size_t max_lines, size_t max_bytes,
                                     size_t buffers = 1, std::vector<size_t>* sizes = nullptr) {
  std::vector<std::string> out;
  std::vector<LineBuffer> bufs(buffers);
  std::vector<std::pair<size_t, std::vector<absl::string_view>>> held(buffers);
  auto check = [&](size_t b) {  // a batch's views still read as they did
    for (size_t i = 0; i < held[b].second.size(); ++i) {
      EXPECT_EQ(held[b].second[i], out[held[b].first + i]) << "line " << held[b].first + i;
    }
  };
  for (size_t n = 0;; ++n) {
    const size_t b = n % buffers;
    check(b);
    held[b].first = out.size();
    absl::StatusOr<size_t> got = source.NextBatch(max_lines, max_bytes, &bufs[b], &held[b].second);
    EXPECT_THAT(got, IsOk());
    if (!got.ok() || *got == 0) break;
    EXPECT_EQ(*got, held[b].second.size());
    if (sizes != nullptr) sizes->push_back(*got);
    for (absl::string_view line : held[b].second) out.emplace_back(line);
  }
  for (size_t b = 0; b < buffers; ++b) check(b);
  return out;
}

std::vector<std::string> ReadBatches(const std::string& path, LineReaderOptions options,
                                     size_t max_lines, size_t max_bytes, size_t buffers = 1,
                                     uint64_t* cut = nullptr) {
  auto reader = LineReader::Open(path, options);
  EXPECT_THAT(reader, IsOk());
  std::vector<std::string> lines = ReadBatches(**reader, max_lines, max_bytes, buffers);
  EXPECT_EQ((*reader)->lines(), lines.size());
  if (cut != nullptr) *cut = (*reader)->cut_lines();
  return lines;
}

// Lines of random lengths (some empty, some past the cap, some CRLF, one of a 50,000-byte run),
// a last line without its newline: NextBatch gives exactly Next's lines and cut count, whatever
// the batch's line and byte limits and however many batches are held at once.
TEST(LineReaderTest, BatchesHoldExactlyTheLinesNextGives) {
  std::mt19937 rng(7);
  std::string content;
  for (int i = 0; i < 4000; ++i) {
    const size_t len = rng() % 8 == 0 ? 0 : rng() % 16 == 0 ? 90 + rng() % 300 : rng() % 120;
    content += std::string(len, 'a' + i % 26);
    content += i % 5 == 0 ? "\r\n" : "\n";
    if (i == 2000) content += std::string(50'000, 'x') + "\n";
  }
  content += "last\r";
  const std::string path = WriteFile("batches.log", content);
  for (size_t chunk : {4096, 1 << 20}) {
    LineReaderOptions options;
    options.chunk_bytes = chunk;
    options.max_line_bytes = 200;
    uint64_t want_cut = 0;
    const std::vector<std::string> want = ReadAll(path, options, &want_cut);
    ASSERT_GT(want_cut, 10u);
    ASSERT_EQ(want.back(), "last");
    for (size_t max_lines : {1, 7, 1000, 100000}) {
      for (size_t max_bytes : {size_t{1}, size_t{3000}, SIZE_MAX}) {
        for (size_t buffers : {1, 3}) {
          uint64_t cut = 0;
          EXPECT_EQ(ReadBatches(path, options, max_lines, max_bytes, buffers, &cut), want)
              << "chunk " << chunk << " max_lines " << max_lines << " max_bytes " << max_bytes;
          EXPECT_EQ(cut, want_cut);
        }
      }
    }
  }
}

// A batch stops at max_lines, or after the line that brings its bytes to max_bytes.
TEST(LineReaderTest, BatchesStopAtTheirLinesOrBytes) {
  const std::string path = WriteFile("sizes.log", "aaaa\nbbbb\ncccc\ndddd\ne\n");
  LineReaderOptions options;
  std::vector<size_t> sizes;
  auto reader = LineReader::Open(path, options);
  ASSERT_THAT(reader, IsOk());
  ReadBatches(**reader, 2, SIZE_MAX, 1, &sizes);
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 2, 1}));
  sizes.clear();
  reader = LineReader::Open(path, options);
  ASSERT_THAT(reader, IsOk());
  ReadBatches(**reader, 100, 5, 1, &sizes);  // 4 bytes: one more line; 8: stop
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 2, 1}));
  std::vector<std::string> lines = {"aaaa", "bbbb", "cccc", "dddd", "e"};
  VectorLineSource vector(lines);
  sizes.clear();
  EXPECT_EQ(ReadBatches(vector, 100, 5, 1, &sizes), lines);
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 2, 1}));
}

// A line of exactly the cap is whole wherever it falls, also when the chunk ends right after it
// (before its newline was read): it was cut there, counted, and a CRLF line kept its "\r".
TEST(LineReaderTest, ALineOfExactlyTheCapIsWholeWhereverItFalls) {
  LineReaderOptions options;
  options.chunk_bytes = 4096;
  options.max_line_bytes = 100;
  // 36 lines of 110 bytes and 36 more bytes: the next line starts 100 bytes before the chunk's
  // end.
  std::string content;
  std::vector<std::string> want;
  for (int i = 0; i < 36; ++i) {
    want.push_back(std::string(109, 'a'));
    content += std::string(109, 'a') + "\n";
  }
  want.push_back(std::string(35, 'b'));
  content += std::string(35, 'b') + "\n";
  for (const std::string& end : {std::string("\n"), std::string("\r\n")}) {
    const std::string line(100 - (end.size() - 1), 'c');  // 100 bytes before the "\n"
    const std::string path = WriteFile("cap.log", content + line + end + "after\n");
    std::vector<std::string> expected = want;
    for (std::string& l : expected) l.resize(std::min<size_t>(l.size(), 100));
    expected.push_back(line);
    expected.push_back("after");
    uint64_t cut = 0;
    EXPECT_EQ(ReadAll(path, options, &cut), expected) << "end " << end.size();
    EXPECT_EQ(cut, 36u) << "end " << end.size();
    EXPECT_EQ(ReadBatches(path, options, 1000, SIZE_MAX, 1, &cut), expected);
    EXPECT_EQ(cut, 36u);
  }
}

// The default cap: a 1 MiB line is whole, one byte more is cut (counted) and the next line
// survives; lines straddle the 1 MiB chunks of a file larger than the buffer.
TEST(LineReaderTest, OneMebibyteLines) {
  const std::string mib(1 << 20, 'm');
  std::string content = "first\n" + mib + "\n" + mib + "n\r\n";
  for (int i = 0; i < 30000; ++i) content += absl::StrCat("line ", i, "\n");
  content += mib;  // the last line, without its newline
  const std::string path = WriteFile("mib.log", content);
  std::vector<std::string> want = {"first", mib, mib};
  for (int i = 0; i < 30000; ++i) want.push_back(absl::StrCat("line ", i));
  want.push_back(mib);
  uint64_t cut = 0;
  const std::vector<std::string> lines = ReadAll(path, {}, &cut);
  EXPECT_TRUE(lines == want);
  EXPECT_EQ(cut, 1u);
  for (size_t buffers : {1, 4}) {
    EXPECT_TRUE(ReadBatches(path, {}, 1000, size_t{4} << 20, buffers, &cut) == want);
    EXPECT_EQ(cut, 1u);
  }
}

// Lines taken one at a time, then in batches, then one at a time again: one stream.
TEST(LineReaderTest, NextAndNextBatchShareTheStream) {
  std::string content;
  std::vector<std::string> want;
  for (int i = 0; i < 3000; ++i) {
    want.push_back(absl::StrCat("line ", i));
    content += want.back() + "\n";
  }
  LineReaderOptions options;
  options.chunk_bytes = 4096;
  auto reader = LineReader::Open(WriteFile("mixed.log", content), options);
  ASSERT_THAT(reader, IsOk());
  std::vector<std::string> got;
  absl::string_view line;
  LineBuffer buffer;
  std::vector<absl::string_view> batch;
  for (int round = 0; round < 50; ++round) {  // 67 lines a round: past the end
    for (int i = 0; i < 17; ++i) {
      absl::StatusOr<bool> more = (*reader)->Next(&line);
      ASSERT_THAT(more, IsOk());
      if (*more) got.emplace_back(line);
    }
    ASSERT_THAT((*reader)->NextBatch(50, SIZE_MAX, &buffer, &batch), IsOk());
    for (absl::string_view l : batch) got.emplace_back(l);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ((*reader)->lines(), want.size());
}

// A source with Next() only: the default NextBatch copies its lines (Next's views last until the
// next call) into the buffer.
TEST(LineReaderTest, TheDefaultBatchCopiesNextsLines) {
  class Counting : public LineSource {
   public:
    absl::StatusOr<bool> Next(absl::string_view* line) override {
      if (n_ == 100000) return false;
      text_ = absl::StrCat("line ", n_++);
      *line = text_;
      return true;
    }

   private:
    int n_ = 0;
    std::string text_;
  } counting;
  std::vector<std::string> want;
  for (int i = 0; i < 100000; ++i) want.push_back(absl::StrCat("line ", i));
  EXPECT_EQ(ReadBatches(counting, 30000, SIZE_MAX, 3), want);
}

// A file that cannot be read (here /proc/self/mem at offset 0: EIO) is an error naming the path,
// one line at a time or in batches.
TEST(LineReaderTest, AReadErrorIsDataLossNamingThePath) {
  auto reader = LineReader::Open("/proc/self/mem");
  ASSERT_THAT(reader, IsOk());
  absl::string_view line;
  EXPECT_THAT((*reader)->Next(&line),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("/proc/self/mem")));
  reader = LineReader::Open("/proc/self/mem");
  ASSERT_THAT(reader, IsOk());
  LineBuffer buffer;
  std::vector<absl::string_view> lines;
  EXPECT_THAT(
      (*reader)->NextBatch(1000, SIZE_MAX, &buffer, &lines),
      StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("/proc/self/mem: read failed")));
}

// AllPlainAscii against a byte loop: buffers of 0 to 200 bytes, plain or with one NUL or one
// byte past ASCII at every place (the 64- and 16-byte blocks, the bytes after the last).
TEST(LineReaderTest, AllPlainAsciiFindsEveryHostileByte) {
  std::mt19937_64 rng(23);
  for (size_t n = 0; n <= 200; ++n) {
    std::string plain(n, ' ');
    for (char& c : plain) c = static_cast<char>(1 + rng() % 127);
    EXPECT_TRUE(AllPlainAscii(plain.data(), n)) << n;
    for (size_t at = 0; at < n; ++at) {
      for (unsigned char bad : {0x00, 0x80, 0xC3, 0xFF}) {
        std::string s = plain;
        s[at] = static_cast<char>(bad);
        EXPECT_FALSE(AllPlainAscii(s.data(), n)) << n << " " << at << " " << int{bad};
      }
    }
  }
}

// A batch's buffer is plain exactly when none of its lines holds a NUL or a byte past ASCII.
TEST(LineReaderTest, ABatchIsPlainWhenItsLinesAre) {
  std::string content;
  std::vector<bool> hostile;
  for (int i = 0; i < 500; ++i) {
    std::string line = absl::StrCat("Mar  3 12:00:00 h sshd[", i, "]: line ", i);
    const bool bad = i % 37 == 5 || i % 53 == 9;
    if (i % 37 == 5) line[10 + i % 5] = '\0';
    if (i % 53 == 9) line += "\xC3\xA9";
    hostile.push_back(bad);
    content += line + (i % 2 == 0 ? "\n" : "\r\n");
  }
  LineReaderOptions options;
  options.chunk_bytes = 4096;
  auto reader = LineReader::Open(WriteFile("plain.log", content), options);
  ASSERT_THAT(reader, IsOk());
  LineBuffer buffer;
  std::vector<absl::string_view> lines;
  size_t first = 0;
  int plain_batches = 0, other_batches = 0;
  while (true) {
    absl::StatusOr<size_t> n = (*reader)->NextBatch(10, SIZE_MAX, &buffer, &lines);
    ASSERT_THAT(n, IsOk());
    if (*n == 0) break;
    bool any = false;
    for (size_t i = first; i < first + *n; ++i) any = any || hostile[i];
    EXPECT_EQ(buffer.plain(), !any) << "lines from " << first;
    (any ? other_batches : plain_batches)++;
    first += *n;
  }
  EXPECT_EQ(first, 500u);
  EXPECT_GT(plain_batches, 10);
  EXPECT_GT(other_batches, 10);
  // Other sources do not say.
  std::vector<std::string> held = {"a", "b"};
  VectorLineSource in_memory(held);
  ASSERT_THAT(in_memory.NextBatch(10, SIZE_MAX, &buffer, &lines), IsOk());
  EXPECT_FALSE(buffer.plain());
}

// A CRLF line whose text is exactly the cap is whole (its "\r" is no part of it): it was counted
// as cut, its "\r" making it one byte longer, before the "\r" was dropped. Also when a chunk
// ends at its "\r", before its newline was read.
TEST(LineReaderTest, ACrlfLineOfExactlyTheCapIsNotCut) {
  LineReaderOptions options;
  options.chunk_bytes = 4096;
  options.max_line_bytes = 100;
  const std::string line(100, 'c');
  for (size_t lead : {size_t{0}, size_t{3990}, size_t{3994}, size_t{3995}, size_t{3996}}) {
    // `lead` bytes of short lines first: the "\r" falls at or about the first chunk's end.
    std::string content;
    std::vector<std::string> want;
    while (content.size() + 10 <= lead) {
      content += "123456789\n";
      want.push_back("123456789");
    }
    if (content.size() < lead) {
      want.push_back(std::string(lead - content.size() - 1, 'b'));
      content += want.back() + "\n";
    }
    want.push_back(line);
    want.push_back("after");
    const std::string path = WriteFile("crlf_cap.log", content + line + "\r\nafter\r\n");
    uint64_t cut = 99;
    EXPECT_EQ(ReadAll(path, options, &cut), want) << "lead " << lead;
    EXPECT_EQ(cut, 0u) << "lead " << lead;
    cut = 99;
    EXPECT_EQ(ReadBatches(path, options, 1000, SIZE_MAX, 1, &cut), want) << "lead " << lead;
    EXPECT_EQ(cut, 0u) << "lead " << lead;
    // The same line last, without its newline.
    const std::string last = WriteFile("crlf_cap_last.log", content + line + "\r");
    want.pop_back();
    EXPECT_EQ(ReadAll(last, options, &cut), want) << "lead " << lead;
    EXPECT_EQ(cut, 0u) << "lead " << lead;
  }
}

}  // namespace
}  // namespace palisade
