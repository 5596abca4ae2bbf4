#include "services/inputs/line_reader.h"

#include <cstdlib>
#include <fstream>
#include <random>

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

}  // namespace
}  // namespace palisade
