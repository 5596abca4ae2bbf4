#include "services/inputs/file_inputs.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace palisade {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FileInputsTest : public ::testing::Test {
 protected:
  FileInputsTest() {
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::system(absl::StrCat("rm -rf ", dir_, " && mkdir -p ", dir_).c_str());
  }
  void Append(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name, std::ios::app | std::ios::binary) << text;
  }
  palisade::v1::InputsConfig Config(const std::vector<std::string>& paths) {
    palisade::v1::InputsConfig config;
    auto* f = config.add_files();
    f->set_name("auth");
    f->set_format("syslog");
    for (const auto& p : paths) f->add_paths(dir_ + "/" + p);
    return config;
  }
  std::unique_ptr<FileInputs> Make(const palisade::v1::InputsConfig& config,
                                   std::vector<palisade::v1::FileCheckpoint> from = {}) {
    FileInputsOptions options;
    options.batch_lines = 2;
    options.checkpoints = std::move(from);
    auto inputs = FileInputs::Create(
        config, options,
        [this](const palisade::v1::LogBatch& b) {
          if (refuse_) return absl::UnavailableError("shutting down");
          EXPECT_EQ(b.source(), "auth");
          EXPECT_EQ(b.format(), palisade::v1::LOG_FORMAT_SYSLOG);
          for (const auto& r : b.records()) lines_.push_back(r.line());
          return absl::OkStatus();
        },
        registry_);
    EXPECT_TRUE(inputs.ok()) << inputs.status();
    return inputs.ok() ? *std::move(inputs) : nullptr;
  }

  std::string dir_;
  prometheus::Registry registry_;
  std::vector<std::string> lines_;
  bool refuse_ = false;
};

TEST_F(FileInputsTest, GlobsFindNewFilesAndSkipCompressedOnes) {
  Append("a.log", "a1\n");
  Append("old.log.1.gz", "zipped\n");
  auto inputs = Make(Config({"*.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  Append("b.log", "b1\nb2\nb3\n");  // appears later; three lines in batches of two
  EXPECT_EQ(inputs->PollOnce(), 3u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "b2", "b3"));
}

// A glob that also matches the rotated names (app.log*) follows app.log across its rotation and
// does not read app.log.1 (or a dated copy) again from its start as a new file: each line once.
TEST_F(FileInputsTest, AGlobDoesNotReadRotatedCopiesAgain) {
  Append("app.log", "a1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
  Append("app.log", "b1\n");
  Append("app.log-20261204", "a1\n");  // dateext's copy
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1"));
  // A file of its own that the glob matches is still read.
  Append("app.log.old", "c1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "c1"));
}

TEST_F(FileInputsTest, ARefusedBatchIsOfferedAgainAndNotCheckpointed) {
  Append("auth.log", "l1\nl2\n");
  auto inputs = Make(Config({"auth.log"}));
  refuse_ = true;
  EXPECT_EQ(inputs->PollOnce(), 0u);
  // Nothing taken yet: no position to save (a restart reads the file from its start).
  EXPECT_TRUE(inputs->Checkpoints().empty());
  refuse_ = false;
  EXPECT_EQ(inputs->PollOnce(), 2u);
  EXPECT_THAT(lines_, ElementsAre("l1", "l2"));
  std::vector<palisade::v1::FileCheckpoint> c = inputs->Checkpoints();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].offset(), 6u);
  EXPECT_EQ(c[0].input(), "auth");
}

// The batch's records are reused from one batch to the next: a shorter batch or shorter lines
// after longer ones carry nothing over, and a refused reused batch is offered again as it was.
TEST_F(FileInputsTest, ReusedBatchesCarryNothingOver) {
  Append("auth.log", "a much longer first line\nl2\n");
  auto inputs = Make(Config({"auth.log"}));
  EXPECT_EQ(inputs->PollOnce(), 2u);
  Append("auth.log", "x\n");
  refuse_ = true;
  EXPECT_EQ(inputs->PollOnce(), 0u);
  refuse_ = false;
  EXPECT_EQ(inputs->PollOnce(), 1u);
  Append("auth.log", "y\nz\n");
  EXPECT_EQ(inputs->PollOnce(), 2u);
  EXPECT_THAT(lines_, ElementsAre("a much longer first line", "l2", "x", "y", "z"));
  std::vector<palisade::v1::FileCheckpoint> c = inputs->Checkpoints();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].offset(), 34u);
}

TEST_F(FileInputsTest, ARestartFromTheCheckpointsReadsOnExactly) {
  Append("auth.log", "l1\nl2\nl3\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"auth.log"}));
    inputs->Start();
    // The thread reads all three lines; the checkpoint then says so.
    auto read_all = [&] {
      std::vector<palisade::v1::FileCheckpoint> c = inputs->Checkpoints();
      return !c.empty() && c[0].offset() == 9;
    };
    for (int i = 0; i < 6000 && !read_all(); ++i) absl::SleepFor(absl::Milliseconds(10));
    inputs->Stop();
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 1u);
  ASSERT_EQ(saved[0].offset(), 9u);
  Append("auth.log", "l4\n");
  lines_.clear();
  auto again = Make(Config({"auth.log"}), saved);
  EXPECT_EQ(again->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("l4"));
}

// A JSON input reads each record whole up to max_record_bytes (a client's long headers, logged
// before the status, must not cut it), and a batch stops once its lines hold 1 MiB.
TEST_F(FileInputsTest, JsonRecordsAreReadWholeInBatchesBoundedInBytes) {
  palisade::v1::InputsConfig config = Config({"access.log"});
  config.mutable_files(0)->set_format("caddy_json");
  FileInputsOptions options;
  std::vector<size_t> batch_bytes;
  std::vector<size_t> line_sizes;
  auto inputs = FileInputs::Create(
      config, options,
      [&](const palisade::v1::LogBatch& b) {
        EXPECT_EQ(b.format(), palisade::v1::LOG_FORMAT_CADDY_JSON);
        size_t bytes = 0;
        for (const auto& r : b.records()) {
          line_sizes.push_back(r.line().size());
          bytes += r.line().size();
        }
        batch_bytes.push_back(bytes);
        return absl::OkStatus();
      },
      registry_);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  const std::string record =
      absl::StrCat(R"({"request":{"headers":{"X-Pad":[")", std::string(600000, 'A'), R"("]}}})");
  Append("access.log", record + "\n" + record + "\n" + record + "\n");
  EXPECT_EQ((*inputs)->PollOnce(), 3u);
  EXPECT_THAT(line_sizes, ElementsAre(record.size(), record.size(), record.size()));
  // The first batch ends with the line that brought it past 1 MiB.
  EXPECT_THAT(batch_bytes, ElementsAre(2 * record.size(), record.size()));
}

TEST_F(FileInputsTest, BadInputsAreRefusedNamingThem) {
  palisade::v1::InputsConfig config = Config({"auth.log"});
  config.mutable_files(0)->set_format("nonsense");
  FileInputsOptions options;
  auto sink = [](const palisade::v1::LogBatch&) { return absl::OkStatus(); };
  EXPECT_THAT(FileInputs::Create(config, options, sink, registry_).status().message(),
              HasSubstr("inputs.files[0] (\"auth\"): unknown format"));
  config = Config({"auth.log"});
  config.mutable_files(0)->set_paths(0, "relative.log");
  EXPECT_THAT(FileInputs::Create(config, options, sink, registry_).status().message(),
              HasSubstr("must be absolute"));
  config = Config({"auth.log"});
  *config.add_files() = config.files(0);
  EXPECT_THAT(FileInputs::Create(config, options, sink, registry_).status().message(),
              HasSubstr("inputs.files[1] (\"auth\"): name is used twice"));
  config = Config({"auth.log"});
  config.mutable_files(0)->set_format("decisions");
  EXPECT_FALSE(FileInputs::Create(config, options, sink, registry_).ok());
}

}  // namespace
}  // namespace palisade
