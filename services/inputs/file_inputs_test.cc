#include "services/inputs/file_inputs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/inputs/gzip_for_tests.h"
#include "services/inputs/removed_files_for_tests.h"

namespace palisade {
namespace {

using ::palisade::testing::AllDescriptorsTaken;
using ::palisade::testing::HoldsRemoved;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using ::palisade::testing::Gzip;

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
    options.max_line_bytes = max_line_bytes_;
    options.checkpoints = std::move(from);
    options.log = [this](const std::string& message) { logs_.push_back(message); };
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

  // Sets when the file `name` was last written: `seconds` from now (the file system's clock).
  void SetWritten(const std::string& name, int seconds) {
    struct timespec times[2];
    ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
    times[0].tv_sec += seconds;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ + "/" + name).c_str(), times, 0), 0);
  }

  // The sum of a counter's series (every input's) in registry_.
  double Counter(const std::string& name) {
    double sum = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& metric : family.metric) sum += metric.counter.value;
    }
    return sum;
  }

  // The sum of a gauge's series (every input's) in registry_.
  double Gauge(const std::string& name) {
    double sum = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& metric : family.metric) sum += metric.gauge.value;
    }
    return sum;
  }

  std::string dir_;
  prometheus::Registry registry_;
  std::vector<std::string> lines_;
  std::vector<std::string> logs_;
  bool refuse_ = false;
  size_t max_line_bytes_ = 16 * 1024;
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

// Rotated copies under dated names (logrotate's dateformat -%Y-%m-%d, Python's
// TimedRotatingFileHandler, a date and a time) are told by their name or their inode: the file a
// follower has open or read to its end across a rotation is not read again from its start
// under its new name.
TEST_F(FileInputsTest, AGlobDoesNotReadACopyRenamedAnyHowAgain) {
  auto rotate = [&](const std::string& to) {
    ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/" + to).c_str()), 0);
  };
  Append("app.log", "a1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  rotate("app.log-2026-12-04");
  Append("app.log", "b1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_EQ(inputs->PollOnce(), 0u);  // the copy, read to its end and let go: still not read
  EXPECT_THAT(lines_, ElementsAre("a1", "b1"));
  rotate("app.log.2026-12-05");
  Append("app.log", "c1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  rotate("app.log-20261206-1733356800");
  Append("app.log", "d1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "c1", "d1"));
  // A file of its own that the glob matches is still read.
  Append("app.log.old", "e1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "c1", "d1", "e1"));
}

// A file rotated to a name the glob matches but does not know for a copy by its name (a date
// logrotate's dateformat writes, a name RotatedNames does not know) is the file the path's
// follower holds, and reads to its end after the rename: it is told by its identity (device,
// inode, first bytes), not by its name, and not followed again from its start. A guard, not a
// failing-first test: it passed before the check of the files a follower holds or queued was
// added (the files open or let go of, `known` by inode and first bytes, already tell this one);
// it keeps that so.
TEST_F(FileInputsTest, AFileRotatedToADatedNameIsReadOnceByItsIdentity) {
  for (const char* to : {"app.log.2026-12-05", "app.log-2026-12-05", "app.log.2026-12-05T10-00",
                         "app.log.old"}) {
    SCOPED_TRACE(to);
    std::system(absl::StrCat("rm -rf ", dir_, "/*").c_str());
    lines_.clear();
    Append("app.log", "a1\na2\n");
    auto inputs = Make(Config({"app.log*"}));
    inputs->PollOnce();
    ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/" + to).c_str()), 0);
    Append("app.log", "");  // created
    Append("app.log", "b1\n");
    inputs->PollOnce();
    inputs->PollOnce();
    EXPECT_THAT(lines_, ElementsAre("a1", "a2", "b1"));
  }
}

// A copy's name used again (app.log rotated to app.log.old twice) across a restart: the saved
// position of the first copy, left out, names app.log.old, where another file is now (the path's
// file, rotated while down, that the path's follower resumes in). That position is dropped, not
// followed: else it found its file gone (an error, a false "lost" log) and read the new
// app.log.old from its start (b1 again).
TEST_F(FileInputsTest, ARestartWithACopysNameReusedReadsEachLineOnce) {
  Append("app.log", "a1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    inputs->PollOnce();
    ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.old").c_str()), 0);
    Append("app.log", "b1\n");
    inputs->PollOnce();
    inputs->PollOnce();
    EXPECT_THAT(lines_, ElementsAre("a1", "b1"));
    saved = inputs->Checkpoints();
  }
  bool copy_left_out = false;
  for (const palisade::v1::FileCheckpoint& c : saved) {
    copy_left_out |= c.path() == dir_ + "/app.log.old" && c.left_out();
  }
  ASSERT_TRUE(copy_left_out) << "precondition: the copy's position saved, left out";
  lines_.clear();
  Append("app.log", "b2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.old").c_str()), 0);
  Append("app.log", "c1\n");
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 4; ++i) again->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("b2", "c1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, IsEmpty());
}

// Rotated while the daemon was down under a name other than a rotated one of the path
// (FileFollower::RotatedName; a date and a time): the restored position is
// the copy's (its inode and first bytes say so), so the copy is read on from it and the new
// file from its start; the copy was read again from its start as a new file.
TEST_F(FileInputsTest, ARestartReadsACopyRenamedAnyHowOnFromItsPosition) {
  Append("app.log", "a1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 1u);
  Append("app.log", "a2\n");
  ASSERT_EQ(
      std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log-2026-12-04T10-00").c_str()), 0);
  Append("app.log", "b1\n");
  auto again = Make(Config({"app.log*"}), saved);
  EXPECT_EQ(again->PollOnce(), 2u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a1", "a2", "b1"));
  std::vector<palisade::v1::FileCheckpoint> c = again->Checkpoints();
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].path(), dir_ + "/app.log");
  EXPECT_EQ(c[0].offset(), 3u);
  EXPECT_EQ(c[1].path(), dir_ + "/app.log-2026-12-04T10-00");
  EXPECT_EQ(c[1].offset(), 6u);
}

// copytruncate under a dated name (dateformat -%Y-%m-%d): the copy is a new
// inode holding what was read already. It was read from its start as a new file, every line
// counted twice; it is told by its first bytes and read on from where the follower stood when
// it found its file truncated (a line written between the last poll and the copy is read once).
TEST_F(FileInputsTest, AGlobDoesNotReadACopyTruncateCopyAgain) {
  auto copy_truncate = [&](const std::string& to) {
    std::ifstream in(dir_ + "/app.log", std::ios::binary);
    std::ofstream(dir_ + "/" + to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate((dir_ + "/app.log").c_str(), 0), 0);
  };
  Append("app.log", "a1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  Append("app.log", "a2\n");  // not polled before the copy
  copy_truncate("app.log-2026-12-04");
  Append("app.log", "b1\n");
  inputs->PollOnce();
  inputs->PollOnce();
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a1", "a2", "b1"));
  EXPECT_EQ(Counter("palisade_input_truncations_total"), 1.0);
  // The same across a restart: copied and truncated while the daemon was down.
  std::vector<palisade::v1::FileCheckpoint> saved = inputs->Checkpoints();
  inputs.reset();
  lines_.clear();
  Append("app.log", "b2\n");
  copy_truncate("app.log-2026-12-05");
  Append("app.log", "c1\n");
  auto again = Make(Config({"app.log*"}), saved);
  again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("b2", "c1"));
}

// Copies a glob leaves out (names FileFollower::RotatedName does not know; a copytruncate copy that
// holds no more than was read) were left out only while the daemon remembered them: a restart
// read each from its start as a new file, every line counted twice. Each has its position in
// the snapshot, at its end: a restart reads nothing of it.
TEST_F(FileInputsTest, ARestartDoesNotReadACopyLeftOutAgain) {
  Append("app.log", "a1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  ASSERT_EQ(
      std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.2026-12-04T10-00").c_str()), 0);
  Append("app.log", "b1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  // copytruncate under a dated name, everything in the copy read before.
  {
    std::ifstream in(dir_ + "/app.log", std::ios::binary);
    std::ofstream(dir_ + "/app.log-2026-12-05T10-00", std::ios::binary) << in.rdbuf();
  }
  ASSERT_EQ(::truncate((dir_ + "/app.log").c_str(), 0), 0);
  Append("app.log", "c1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "c1"));
  std::vector<palisade::v1::FileCheckpoint> saved = inputs->Checkpoints();
  inputs.reset();
  lines_.clear();
  auto again = Make(Config({"app.log*"}), saved);
  EXPECT_EQ(again->PollOnce(), 0u);
  Append("app.log", "c2\n");
  EXPECT_EQ(again->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("c2"));
  // And again from the snapshot taken after the restart.
  saved = again->Checkpoints();
  again.reset();
  auto third = Make(Config({"app.log*"}), saved);
  EXPECT_EQ(third->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("c2"));
}

// A copy left out is saved at its end so a restart does not read it again; one compressed or
// removed while the daemon was down was read completely, so its position is dropped without an
// error or a log (it was counted in palisade_input_errors_total and logged as given up). The
// same for a copy resumed from its end after a restart and saved again.
TEST_F(FileInputsTest, ACopyLeftOutAndGoneAtARestartIsNoError) {
  Append("app.log", "a1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  ASSERT_EQ(
      std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.2026-12-04T10-00").c_str()), 0);
  Append("app.log", "b1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  {
    std::ifstream in(dir_ + "/app.log", std::ios::binary);
    std::ofstream(dir_ + "/app.log-2026-12-05T10-00", std::ios::binary) << in.rdbuf();
  }
  ASSERT_EQ(::truncate((dir_ + "/app.log").c_str(), 0), 0);
  Append("app.log", "c1\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "c1"));
  std::vector<palisade::v1::FileCheckpoint> saved = inputs->Checkpoints();
  ASSERT_EQ(saved.size(), 3u);
  inputs.reset();
  lines_.clear();
  ASSERT_EQ(std::remove((dir_ + "/app.log.2026-12-04T10-00").c_str()), 0);
  auto again = Make(Config({"app.log*"}), saved);
  EXPECT_EQ(again->PollOnce(), 0u);
  Append("app.log", "c2\n");
  EXPECT_EQ(again->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("c2"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, ::testing::IsEmpty());
  // The other copy, resumed from its end by this restart, is compressed before the next one.
  saved = again->Checkpoints();
  ASSERT_EQ(saved.size(), 2u);
  again.reset();
  ASSERT_EQ(std::rename((dir_ + "/app.log-2026-12-05T10-00").c_str(),
                        (dir_ + "/app.log-2026-12-05T10-00.gz").c_str()),
            0);
  auto third = Make(Config({"app.log*"}), saved);
  EXPECT_EQ(third->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("c2"));
  EXPECT_EQ(third->Checkpoints().size(), 1u);
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, ::testing::IsEmpty());
}

// Renamed under a dated name and still written (the writer reopens later) when the snapshot was
// taken: the file is read on from its position under its new name, once (no position of its
// own is saved for the copy: the file's is).
TEST_F(FileInputsTest, ARestartDoesNotReadTheFileItResumesInAgainUnderItsNewName) {
  Append("app.log", "a1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.2026-12-04").c_str()), 0);
  Append("app.log.2026-12-04", "a2\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  std::vector<palisade::v1::FileCheckpoint> saved = inputs->Checkpoints();
  inputs.reset();
  Append("app.log.2026-12-04", "a3\n");
  Append("app.log", "b1\n");
  auto again = Make(Config({"app.log*"}), saved);
  again->PollOnce();
  again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a1", "a2", "a3", "b1"));
}

// Rotated twice while the daemon was down under dateext's names, which the glob leaves out: the
// checkpoint's file, the one written between the rotations, then the new file, each line once.
// The position was moved to the oldest copy's name and read on there alone; the middle copy,
// left out by its name, was never read.
TEST_F(FileInputsTest, ARestartReadsEveryFileAGlobRotatedTwiceWhileDown) {
  Append("app.log", "a1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log-20261204").c_str()), 0);
  Append("app.log", "b1\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log-20261205").c_str()), 0);
  Append("app.log", "c1\n");
  auto again = Make(Config({"app.log*"}), saved);
  again->PollOnce();
  again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("a1", "a2", "b1", "c1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
}

// Rotated while the daemon was down to a name the glob leaves out as a copy (PATH-YYYYMMDD,
// PATH.N), and PATH not created again yet at the restart: the file is read on from its position
// there, then the new file from its start, each line once. It was read from its start as a new
// file, and its tail again once PATH appeared.
TEST_F(FileInputsTest, ARestartWithThePathRotatedAwayReadsEachLineOnce) {
  for (const auto& [glob, file, rotated] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"app.log*", "app.log", "app.log-20261204"},
           {"app.log*", "app.log", "app.log.2"},
           {"app.log*", "app.log", "app.log.1"},
           {"dir/*", "dir/app.log", "dir/app.log-20261204"}}) {
    SCOPED_TRACE(rotated);
    std::system(absl::StrCat("rm -rf ", dir_, "/* && mkdir -p ", dir_, "/dir").c_str());
    lines_.clear();
    Append(file, "a1\n");
    std::vector<palisade::v1::FileCheckpoint> saved;
    {
      auto inputs = Make(Config({glob}));
      EXPECT_EQ(inputs->PollOnce(), 1u);
      saved = inputs->Checkpoints();
    }
    ASSERT_EQ(saved.size(), 1u);
    lines_.clear();
    Append(file, "a2\n");
    ASSERT_EQ(std::rename((dir_ + "/" + file).c_str(), (dir_ + "/" + rotated).c_str()), 0);
    auto again = Make(Config({glob}), saved);
    again->PollOnce();
    EXPECT_EQ(again->PollOnce(), 0u);
    EXPECT_THAT(lines_, ElementsAre("a2"));
    lines_.clear();
    Append(file, "b1\n");
    again->PollOnce();
    EXPECT_EQ(again->PollOnce(), 0u);
    EXPECT_THAT(lines_, ElementsAre("b1"));
    EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
    EXPECT_THAT(logs_, ::testing::IsEmpty());
  }
}

// The same with the path never coming back (nocreate, a retired service) and the copy then
// removed (find -delete, maxage): the copy, read to its end, is let go of, and no position is
// saved in it. Its descriptor was held for ever (its space not freed), and the next restart
// gave up that position as not found: an error and a log for a file read completely.
TEST_F(FileInputsTest, APathRotatedAwayWhoseCopyIsRemovedLeavesNoPosition) {
  Append("app.log", "a1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 1u);
  Append("app.log", "a2\n");
  const std::string copy = dir_ + "/app.log-20261204";
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), copy.c_str()), 0);
  {
    auto again = Make(Config({"app.log*"}), saved);
    again->PollOnce();
    EXPECT_EQ(again->PollOnce(), 0u);
    EXPECT_THAT(lines_, ElementsAre("a1", "a2"));
    ASSERT_EQ(std::remove(copy.c_str()), 0);
    again->PollOnce();
    EXPECT_EQ(again->PollOnce(), 0u);
    EXPECT_FALSE(HoldsRemoved(copy));
    saved = again->Checkpoints();
    EXPECT_THAT(saved, ::testing::IsEmpty());
  }
  auto restarted = Make(Config({"app.log*"}), saved);
  EXPECT_EQ(restarted->PollOnce(), 0u);
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, ::testing::IsEmpty());
}

// A named path rotated while the daemon was down under a dated name (dateext) is read on from
// its position there; only PATH.1 was looked at, and the lines after it were lost unsaid. A
// position whose file is nowhere is given up, and that is logged and counted.
TEST_F(FileInputsTest, ARestartFindsANamedFileRotatedUnderADateAndSaysWhenItCannot) {
  Append("secure", "l1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"secure"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  Append("secure", "l2\n");
  ASSERT_EQ(std::rename((dir_ + "/secure").c_str(), (dir_ + "/secure-20261204").c_str()), 0);
  Append("secure", "l3\n");
  {
    auto again = Make(Config({"secure"}), saved);
    EXPECT_EQ(again->PollOnce(), 2u);
    saved = again->Checkpoints();
  }
  EXPECT_THAT(lines_, ElementsAre("l1", "l2", "l3"));
  EXPECT_THAT(logs_, ::testing::IsEmpty());
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  ASSERT_EQ(std::rename((dir_ + "/secure").c_str(), (dir_ + "/away").c_str()), 0);
  Append("secure", "b1\n");
  auto lost = Make(Config({"secure"}), saved);
  EXPECT_EQ(lost->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("l1", "l2", "l3", "b1"));
  ASSERT_EQ(logs_.size(), 1u);
  EXPECT_THAT(logs_[0], HasSubstr(dir_ + "/secure: saved position (offset 3) not found"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);
}

// Debian's nginx logrotate (daily, compress, delaycompress), palisaded down across two
// rotations: the saved position's file is app.log.2.gz, the next day's app.log.1 (left out by
// its name), the path a new file. That day was never read and the log said its lines were
// lost: it is read once, then the path; only the rest of the compressed file is lost (logged,
// counted).
TEST_F(FileInputsTest, ARestartWithItsFileCompressedAwayReadsTheFilesRotatedAfterIt) {
  Append("app.log", "a1\n");
  {
    // Last written well before what follows, however fast this runs.
    struct timespec times[2];
    ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
    times[0].tv_sec -= 300;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ + "/app.log").c_str(), times, 0), 0);
  }
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 1u);
  lines_.clear();
  const std::string path = dir_ + "/app.log";
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename(path.c_str(), (path + ".1").c_str()), 0);
  Append("app.log", "b1\nb2\nb3\n");
  ASSERT_EQ(std::rename((path + ".1").c_str(), (path + ".2").c_str()), 0);
  ASSERT_EQ(std::rename(path.c_str(), (path + ".1").c_str()), 0);
  Append("app.log", "c1\n");
  Append("app.log.2.gz", "\x1f\x8b compressed");  // gzip: a new file, then the old one removed
  ASSERT_EQ(std::remove((path + ".2").c_str()), 0);
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 4; ++i) again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("b1", "b2", "b3", "c1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);
  ASSERT_EQ(logs_.size(), 1u);
  EXPECT_THAT(logs_[0], HasSubstr(path + ": saved position (offset 3) not found"));
  EXPECT_THAT(logs_[0], HasSubstr("the 1 file rotated after it read first"));
  // Each line once across the next restart too.
  saved = again->Checkpoints();
  again.reset();
  lines_.clear();
  Append("app.log", "c2\n");
  auto third = Make(Config({"app.log*"}), saved);
  third->PollOnce();
  EXPECT_EQ(third->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("c2"));
}

// copytruncate with compress and delaycompress under a glob, down across two rotations: A's
// copy is app.log.2.gz, B's copy (b1 b2) app.log.1, the path truncated twice. The path's
// follower reads B's copy (written after its checkpoint) before the path; the glob leaves it out
// (queued); A's rest is said lost.
TEST_F(FileInputsTest, ARestartWithACopytruncatedFileWhoseCopyWasCompressedReadsEachCopyAfterIt) {
  const std::string path = dir_ + "/app.log";
  Append("app.log", "a1\n");
  {
    struct timespec times[2];
    ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
    times[0].tv_sec -= 300;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  }
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  lines_.clear();
  auto copytruncate = [&](const std::string& to) {
    std::ifstream in(path, std::ios::binary);
    std::ofstream(dir_ + "/" + to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  };
  Append("app.log", "a2\n");
  copytruncate("app.log.1");
  Append("app.log", "b1\nb2\n");
  ASSERT_EQ(std::rename((path + ".1").c_str(), (path + ".2").c_str()), 0);
  copytruncate("app.log.1");
  Append("app.log.2.gz", "\x1f\x8b compressed");
  ASSERT_EQ(std::remove((path + ".2").c_str()), 0);
  Append("app.log", "c1\n");
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 4; ++i) again->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("b1", "b2", "c1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);
  // The path holds A's inode: a truncation, not a file found nowhere.
  EXPECT_THAT(logs_, ::testing::Contains(HasSubstr(
                         "truncated; no copy holds what came after the position (possibly lost)")));
}

// Plain copytruncate (no compression) under a glob, down across two rotations: A's copy is
// app.log.2 (a1 a2), B's copy app.log.1 (b1 b2), the path truncated twice. The path's follower
// reads A's copy on from the position, then B's copy, then the path; the glob reads neither copy
// again. B's copy was neither read nor said lost.
TEST_F(FileInputsTest, ARestartAfterTwoCopyTruncatesReadsEveryCopyOnce) {
  const std::string path = dir_ + "/app.log";
  auto written_ago = [](const std::string& p, int seconds) {
    struct timespec times[2];
    ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
  };
  Append("app.log", "a1\n");
  written_ago(path, 300);
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  lines_.clear();
  auto copytruncate = [&](const std::string& to) {
    std::ifstream in(path, std::ios::binary);
    std::ofstream(dir_ + "/" + to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  };
  Append("app.log", "a2\n");
  copytruncate("app.log.1");
  Append("app.log", "b1\nb2\n");
  ASSERT_EQ(std::rename((path + ".1").c_str(), (path + ".2").c_str()), 0);
  written_ago(path + ".2", 200);
  copytruncate("app.log.1");
  written_ago(path + ".1", 100);
  Append("app.log", "c1\n");
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 4; ++i) again->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("a2", "b1", "b2", "c1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, IsEmpty());
}

// Two copytruncates while down under logrotate's `dateformat -%Y%m%d-%s` names: A's copy
// (a1 a2) then B's (b1 b2). The path's follower reads A's copy on from the position, then B's
// (a rotated name of the path, FileFollower::RotatedName, written after A's), then the path. The
// glob left out by name only PATH.N and PATH-YYYYMMDD: B, a new inode that starts with other
// bytes than anything read, was followed from its start as a new file and read twice.
TEST_F(FileInputsTest, ARestartAfterTwoCopyTruncatesToDatedNamesReadsEveryCopyOnce) {
  const std::string path = dir_ + "/app.log";
  const std::string a = "app.log-20261206-1733270400", b = "app.log-20261207-1733356800";
  auto written_ago = [](const std::string& p, int seconds) {
    struct timespec times[2];
    ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
  };
  Append("app.log", "a1\n");
  written_ago(path, 300);
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  lines_.clear();
  auto copytruncate = [&](const std::string& to) {
    std::ifstream in(path, std::ios::binary);
    std::ofstream(dir_ + "/" + to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  };
  Append("app.log", "a2\n");
  copytruncate(a);
  written_ago(dir_ + "/" + a, 200);
  Append("app.log", "b1\nb2\n");
  copytruncate(b);
  written_ago(dir_ + "/" + b, 100);
  Append("app.log", "c1\n");
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 4; ++i) again->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("a2", "b1", "b2", "c1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, IsEmpty());
}

// The same live: a second copytruncate (B, a `-%Y%m%d-%s` name) while the follower still drains
// the first copy (A: more than a round takes). The follower reads B after A; the glob reads
// neither again. B was followed from its start as a new file as soon as the glob matched it.
TEST_F(FileInputsTest, ASecondCopyTruncateToADatedNameWhileTheFirstIsDrainedIsReadOnce) {
  const std::string path = dir_ + "/app.log";
  const std::string a = "app.log-20261206-1733270400", b = "app.log-20261207-1733356800";
  auto written_ago = [](const std::string& p, int seconds) {
    struct timespec times[2];
    ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
  };
  auto copytruncate = [&](const std::string& to) {
    std::ifstream in(path, std::ios::binary);
    std::ofstream(dir_ + "/" + to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  };
  std::vector<std::string> want = {"x0"};
  Append("app.log", "x0\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  // A round takes 16 batches of 2 lines: 40 lines leave A half drained.
  for (int i = 1; i <= 40; ++i) {
    Append("app.log", absl::StrCat("a", i, "\n"));
    want.push_back(absl::StrCat("a", i));
  }
  copytruncate(a);
  written_ago(dir_ + "/" + a, 100);
  EXPECT_EQ(inputs->PollOnce(), 32u);
  Append("app.log", "b1\nb2\n");
  copytruncate(b);
  Append("app.log", "c1\n");
  for (const char* line : {"b1", "b2", "c1"}) want.push_back(line);
  for (int i = 0; i < 6; ++i) inputs->PollOnce();
  EXPECT_THAT(lines_, ::testing::ElementsAreArray(want));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
}

// A glob leaves out by name alone only logrotate's own copies (PATH.N, PATH-YYYYMMDD): a live
// log beside a stale base under one glob (Apache `rotatelogs access.log.%Y-%m-%d`, rsyslog
// dynafiles, logback's app.log.2026-12-07) is followed. The wider names a follower reads on
// through (FileFollower::RotatedName) are left out only while it drains or queues them; from
// cc29368 on they were left out always, and the live log was never read.
TEST_F(FileInputsTest, ALiveDatedLogBesideAStaleBaseIsFollowed) {
  Append("access.log", "old1\n");
  Append("access.log.2026-12-07", "d1\n");
  auto inputs = Make(Config({"access.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 2u);
  Append("access.log.2026-12-07", "d2\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("old1", "d1", "d2"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
}

// Per-instance logs (app.log-1, app.log-2 beside app.log) are logs of their own: followed live,
// not only read from byte 0 once app.log rotated.
TEST_F(FileInputsTest, PerInstanceLogsBesideTheBaseAreFollowedLive) {
  Append("app.log", "a1\n");
  Append("app.log-1", "i1\n");
  Append("app.log-2", "j1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 3u);
  Append("app.log-1", "i2\n");
  Append("app.log-2", "j2\n");
  EXPECT_EQ(inputs->PollOnce(), 2u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a1", "i1", "j1", "i2", "j2"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
}

// A per-instance log (app.log-1) is a RotatedName of app.log, and written after app.log.1: the
// base's follower, reading on through the files rotated after its file, took it for one and
// read it again from byte 0 though the glob's follower of app.log-1 follows it live. A file
// another follower of the inputs holds is never read as a rotated file (live and at a restart,
// when the base resumes in app.log.1 and queued app.log-1 before its follower was made).
TEST_F(FileInputsTest, APerInstanceLogIsNotReadAgainWhenItsBaseRotates) {
  Append("app.log", "a1\n");
  Append("app.log-1", "i1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 2u);
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
  SetWritten("app.log.1", -300);  // the instance's log is written after it, however fast this runs
  Append("app.log", "b1\n");
  Append("app.log-1", "i2\n");
  for (int i = 0; i < 3; ++i) inputs->PollOnce();
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a1", "i1", "a2", "b1", "i2"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
}

TEST_F(FileInputsTest, ARestartWithTheBaseRotatedWhileDownDoesNotReadAPerInstanceLogAgain) {
  Append("app.log", "a1\n");
  Append("app.log-1", "i1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 2u);
    saved = inputs->Checkpoints();
  }
  lines_.clear();
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
  SetWritten("app.log.1", -300);
  Append("app.log", "b1\n");
  Append("app.log-1", "i2\n");
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 3; ++i) again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a2", "b1", "i2"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, IsEmpty());
}

// compress without delaycompress, down across a rotation: app.log's file (the checkpoint's) is
// app.log.1.gz, gone, and the files under a rotated name of app.log last written after it are
// queued: app.log-1, a per-instance log, is one. The base's follower opened it in its
// constructor, before app.log-1's own follower was made, and read it from byte 0 while that
// one read on from its position: every line of it counted twice.
TEST_F(FileInputsTest, ARestartWithTheBaseCompressedAwayDoesNotReadAPerInstanceLogAgain) {
  Append("app.log", "a1\n");
  SetWritten("app.log", -300);  // the instance's log is written after it, however fast this runs
  Append("app.log-1", "i1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 2u);
    saved = inputs->Checkpoints();
  }
  lines_.clear();
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
  Append("app.log.1.gz", Gzip("a1\na2\n"));
  Append("app.log", "b1\n");
  ASSERT_EQ(std::remove((dir_ + "/app.log.1").c_str()), 0);
  Append("app.log-1", "i2\n");
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 3; ++i) again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("b1", "i2"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);  // a2, given up with app.log's file
}

// A per-instance log's own rotated copy (app.log-1.1, a rotated name of app.log too), read by
// app.log-1's follower and let go of: no follower holds it now, yet it is read there. At app.log's
// next rotation its follower queued it (written after app.log.1) and read it again whole.
TEST_F(FileInputsTest, APerInstanceLogsOwnRotatedCopyIsNotReadAgainWhenItsBaseRotates) {
  Append("app.log", "a1\n");
  Append("app.log-1", "i1\n");
  auto inputs = Make(Config({"app.log*"}));
  EXPECT_EQ(inputs->PollOnce(), 2u);
  ASSERT_EQ(std::rename((dir_ + "/app.log-1").c_str(), (dir_ + "/app.log-1.1").c_str()), 0);
  Append("app.log-1", "i2\n");
  for (int i = 0; i < 3; ++i) inputs->PollOnce();
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
  SetWritten("app.log.1", -300);  // app.log-1.1 is written after it, however fast this runs
  Append("app.log", "b1\n");
  for (int i = 0; i < 3; ++i) inputs->PollOnce();
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a1", "i1", "i2", "a2", "b1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
}

// The same with named paths (no glob keeps the let-go file known), and across a restart with
// app.log's file compressed away (nothing known yet; every file rotated after it queued): a
// rotated name of a log another follower follows live is that log's, never the base's.
TEST_F(FileInputsTest, APerInstanceLogsRotatedCopyIsNotReadByItsBaseWhenNamedOrAfterARestart) {
  Append("app.log", "a1\n");
  SetWritten("app.log", -300);  // app.log-1 and its copy are written after it
  Append("app.log-1", "i1\n");
  auto inputs = Make(Config({"app.log", "app.log-1"}));
  EXPECT_EQ(inputs->PollOnce(), 2u);
  const std::vector<palisade::v1::FileCheckpoint> saved = inputs->Checkpoints();
  ASSERT_EQ(std::rename((dir_ + "/app.log-1").c_str(), (dir_ + "/app.log-1.1").c_str()), 0);
  Append("app.log-1", "i2\n");
  for (int i = 0; i < 3; ++i) inputs->PollOnce();
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
  SetWritten("app.log.1", -300);
  Append("app.log", "b1\n");
  for (int i = 0; i < 3; ++i) inputs->PollOnce();
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("a1", "i1", "i2", "a2", "b1"));
  inputs.reset();
  // Restarted from the first snapshot, app.log.1 compressed away: a2 is lost (said); i1 is
  // read on in app.log-1.1 by app.log-1's follower only, then i2.
  lines_.clear();
  Append("app.log.1.gz", Gzip("a1\na2\n"));
  ASSERT_EQ(std::remove((dir_ + "/app.log.1").c_str()), 0);
  auto again = Make(Config({"app.log", "app.log-1"}), saved);
  for (int i = 0; i < 3; ++i) again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ::testing::UnorderedElementsAre("b1", "i2"));
}

// copytruncate with compress and no delaycompress while running: the copy is app.log.1.gz
// before the follower looks, and the lines written after its last read are in it only. Counted
// as an error and said, with the bytes lost (gzip's trailer); they were neither read nor said.
TEST_F(FileInputsTest, ACopyTruncateWhoseCopyIsCompressedAtOnceIsSaidLost) {
  const std::string path = dir_ + "/app.log";
  Append("app.log", "a1\n");
  auto inputs = Make(Config({"app.log"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  Append("app.log", "a2\na3\n");
  Append("app.log.1.gz", Gzip("a1\na2\na3\n"));  // the copy: 9 bytes, its first the file's
  std::ofstream(path, std::ios::trunc | std::ios::binary) << "b1\n";
  inputs->PollOnce();
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);
  ASSERT_EQ(logs_.size(), 1u);
  EXPECT_THAT(logs_[0], HasSubstr(path + ": truncated in place (copytruncate) and its copy "
                                         "compressed before it was read (" + path + ".1.gz"));
  EXPECT_THAT(logs_[0], HasSubstr("the 6 bytes written after offset 3 lost"));
}

// copytruncate while down with nothing written after the position: the copy (app.log.1) holds
// exactly the position's offset, so nothing is lost: no error, no log.
TEST_F(FileInputsTest, ACopyTruncateWhileDownWithNothingAfterThePositionLosesNothing) {
  const std::string path = dir_ + "/app.log";
  Append("app.log", "a1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  lines_.clear();
  {
    std::ifstream in(path, std::ios::binary);
    std::ofstream(path + ".1", std::ios::binary) << in.rdbuf();
  }
  ASSERT_EQ(::truncate(path.c_str(), 0), 0);
  Append("app.log", "b1\n");
  auto again = Make(Config({"app.log"}), saved);
  for (int i = 0; i < 3; ++i) again->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("b1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_THAT(logs_, IsEmpty());
}

// compress without delaycompress (the common layout): the checkpoint's file is PATH.1.gz at
// once, nothing rotated after it to read but the path. The log says the loss and does not claim
// files rotated after it were read.
TEST_F(FileInputsTest, ARestartWithItsFileCompressedAtOnceSaysNoFilesRotatedAfterItRead) {
  Append("app.log", "a1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 1u);
  ASSERT_NE(saved[0].written_ns(), 0);
  lines_.clear();
  const std::string path = dir_ + "/app.log";
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename(path.c_str(), (path + ".1").c_str()), 0);
  Append("app.log", "b1\n");
  Append("app.log.1.gz", "\x1f\x8b compressed");
  ASSERT_EQ(std::remove((path + ".1").c_str()), 0);
  auto again = Make(Config({"app.log"}), saved);
  for (int i = 0; i < 3; ++i) again->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("b1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);
  ASSERT_EQ(logs_.size(), 1u);
  EXPECT_THAT(logs_[0], HasSubstr(path + ": saved position (offset 3) not found"));
  EXPECT_THAT(logs_[0], ::testing::Not(HasSubstr("rotated after it read")));
}

// The same under logrotate's dateformat .%Y-%m-%d (names a glob does not know for copies by
// their name), down three days: the days after the compressed one, app.log.2026-12-05 and
// -06, are the files the path's follower resumes in and queues; the glob, which matches them,
// tells them by their identity (device and inode, in the follower's hands or queue) and does
// not read them again from their start as new files.
TEST_F(FileInputsTest, ARestartWithItsFileCompressedAwayReadsADatedFileRotatedAfterItOnce) {
  Append("app.log", "a1\n");
  {
    struct timespec times[2];
    ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
    times[0].tv_sec -= 300;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ + "/app.log").c_str(), times, 0), 0);
  }
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"app.log*"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  lines_.clear();
  const std::string path = dir_ + "/app.log";
  const std::string a = path + ".2026-12-04", b = path + ".2026-12-05";
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename(path.c_str(), a.c_str()), 0);
  Append("app.log", "b1\nb2\nb3\n");
  ASSERT_EQ(std::rename(path.c_str(), b.c_str()), 0);
  Append("app.log", "c1\n");
  ASSERT_EQ(std::rename(path.c_str(), (path + ".2026-12-06").c_str()), 0);
  Append("app.log", "d1\n");
  Append("app.log.2026-12-04.gz", "\x1f\x8b compressed");
  ASSERT_EQ(std::remove(a.c_str()), 0);
  auto again = Make(Config({"app.log*"}), saved);
  for (int i = 0; i < 4; ++i) again->PollOnce();
  EXPECT_EQ(again->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("b1", "b2", "b3", "c1", "d1"));
  // And across the next restart: the day's file, read to its end, is not read again.
  saved = again->Checkpoints();
  again.reset();
  lines_.clear();
  Append("app.log", "d2\n");
  auto third = Make(Config({"app.log*"}), saved);
  third->PollOnce();
  EXPECT_EQ(third->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("d2"));
}

// A glob's file removed (find -delete on old files) is let go of once read to its end: its
// descriptor closed (disk space freed, descriptors not piling up to EMFILE) and its position
// gone from the snapshot. A file created again at its path is a new file.
TEST_F(FileInputsTest, ARemovedGlobFileIsLetGoOf) {
  Append("a.log", "a1\n");
  Append("b.log", "b1\n");
  auto inputs = Make(Config({"*.log"}));
  EXPECT_EQ(inputs->PollOnce(), 2u);
  EXPECT_EQ(inputs->Checkpoints().size(), 2u);
  ASSERT_EQ(std::remove((dir_ + "/a.log").c_str()), 0);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  std::vector<palisade::v1::FileCheckpoint> c = inputs->Checkpoints();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].path(), dir_ + "/b.log");
  EXPECT_FALSE(HoldsRemoved(dir_ + "/a.log"));
  Append("a.log", "a2\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "a2"));
  EXPECT_EQ(Counter("palisade_input_bytes_total"), 9.0);  // each byte once
}

// A named path's file removed is let go of too (no position saved for it); the path is
// followed again when a file comes back there.
TEST_F(FileInputsTest, ARemovedNamedFileIsLetGoOfAndWaitedFor) {
  Append("auth.log", "l1\n");
  auto inputs = Make(Config({"auth.log"}));
  EXPECT_EQ(inputs->PollOnce(), 1u);
  ASSERT_EQ(std::remove((dir_ + "/auth.log").c_str()), 0);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_TRUE(inputs->Checkpoints().empty());
  EXPECT_FALSE(HoldsRemoved(dir_ + "/auth.log"));
  Append("auth.log", "l2\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("l1", "l2"));
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

// A restored position whose file cannot be opened yet (out of descriptors here; EACCES alike)
// is still the file's position in the snapshot: the next restart reads on from it, not from the
// file's start (every line counted twice).
TEST_F(FileInputsTest, APositionWaitingToResumeIsStillSaved) {
  Append("auth.log", "l1\nl2\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"auth.log"}));
    EXPECT_EQ(inputs->PollOnce(), 2u);
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 1u);
  ASSERT_EQ(saved[0].offset(), 6u);
  std::unique_ptr<FileInputs> again;
  size_t read = 0;
  std::vector<palisade::v1::FileCheckpoint> waiting;
  {
    AllDescriptorsTaken taken;
    ASSERT_TRUE(taken.ok());
    again = Make(Config({"auth.log"}), saved);
    read = again->PollOnce();
    waiting = again->Checkpoints();
  }
  EXPECT_EQ(read, 0u);
  ASSERT_EQ(waiting.size(), 1u);
  EXPECT_EQ(waiting[0].DebugString(), saved[0].DebugString());
  Append("auth.log", "l3\n");
  EXPECT_EQ(again->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("l1", "l2", "l3"));
}

// A glob's file that was rotated away while the daemon was down (app.log is now app.log.1, which
// the glob does not match, and no new app.log yet) has no follower; its restored position is
// kept in the snapshot until the new file comes, and the follower then reads the rotated file
// on from it.
TEST_F(FileInputsTest, ARestoredPositionWithNoFileYetIsKept) {
  Append("app.log", "a1\n");
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(Config({"*.log"}));
    EXPECT_EQ(inputs->PollOnce(), 1u);
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 1u);
  Append("app.log", "a2\n");
  ASSERT_EQ(std::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
  auto again = Make(Config({"*.log"}), saved);
  EXPECT_EQ(again->PollOnce(), 0u);
  std::vector<palisade::v1::FileCheckpoint> kept = again->Checkpoints();
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].DebugString(), saved[0].DebugString());
  Append("app.log", "b1\n");
  EXPECT_EQ(again->PollOnce(), 2u);
  EXPECT_THAT(lines_, ElementsAre("a1", "a2", "b1"));
  // A restored position whose file is gone for good (neither at its path nor rotated to
  // PATH.1) is of no use to a follower, and is not saved on.
  lines_.clear();
  std::remove((dir_ + "/app.log").c_str());
  std::remove((dir_ + "/app.log.1").c_str());
  auto gone = Make(Config({"*.log"}), saved);
  EXPECT_EQ(gone->PollOnce(), 0u);
  EXPECT_TRUE(gone->Checkpoints().empty());
  // Given up, and said.
  EXPECT_THAT(logs_, ElementsAre(HasSubstr("/app.log: saved position (offset 3) not found")));
}

// A line longer than the input's cap is cut one byte past it (its rest dropped, so the
// pipeline sees it longer than its cap and flags it cut) and counted in
// palisade_input_lines_cut_total{input}, once however it was read. Not in
// palisade_input_errors_total: any client can write a long line (a long request line, a
// Referer), and that counter must show what is wrong with the input (permissions, lost
// positions).
TEST_F(FileInputsTest, ACutLineIsCounted) {
  max_line_bytes_ = 64;  // the follower's least
  const std::string x(100, 'x'), y(100, 'y');
  Append("auth.log", "short\n" + x + "\nok\n");
  auto inputs = Make(Config({"auth.log"}));
  inputs->PollOnce();
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre("short", x.substr(0, 65), "ok"));
  EXPECT_EQ(Counter("palisade_input_lines_cut_total"), 1.0);
  ASSERT_EQ(logs_.size(), 1u);  // the first cut line of the file is said, without its content
  EXPECT_THAT(logs_[0], HasSubstr("a line longer than 64 bytes cut there"));
  EXPECT_THAT(logs_[0], ::testing::Not(HasSubstr("xxxx")));
  // Over the cap before its newline came: cut at once, its rest (read later) dropped, once.
  Append("auth.log", y);
  EXPECT_EQ(inputs->PollOnce(), 1u);
  Append("auth.log", y + "\nend\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("short", x.substr(0, 65), "ok", y.substr(0, 65), "end"));
  EXPECT_EQ(Counter("palisade_input_lines_cut_total"), 2.0);
  EXPECT_EQ(logs_.size(), 1u);  // once per file
  EXPECT_EQ(Counter("palisade_input_errors_total"), 0.0);
  EXPECT_EQ(Counter("palisade_input_lines_total"), 5.0);
}

// A line of exactly the cap and one byte is handed out whole (the follower keeps cap + 1 bytes
// so the pipeline knows a cut), yet it is longer than the cap: the pipeline cuts it, and it is
// counted as cut. It was not: only lines longer than cap + 1 were.
TEST_F(FileInputsTest, ALineOneByteOverTheCapIsCounted) {
  max_line_bytes_ = 64;
  const std::string at_cap(64, 'x'), over(65, 'y');
  Append("auth.log", at_cap + "\n" + over + "\nok\n");
  auto inputs = Make(Config({"auth.log"}));
  inputs->PollOnce();
  EXPECT_EQ(inputs->PollOnce(), 0u);
  EXPECT_THAT(lines_, ElementsAre(at_cap, over, "ok"));
  EXPECT_EQ(Counter("palisade_input_lines_cut_total"), 1.0);
  ASSERT_EQ(logs_.size(), 1u);
  EXPECT_THAT(logs_[0], HasSubstr("a line longer than 64 bytes cut there"));
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

// A batch that ended at 1 MiB (the follower counts each line's newline) is full: the round
// reads the file's next batches at once. It used to compare only the lines' bytes, so with
// lines of 1,500 bytes a batch of 699 lines (1,048,500 bytes, 1,049,199 with newlines) looked
// short: the round ended and a backlog was read at 1 MiB per poll interval.
TEST_F(FileInputsTest, ABatchEndedByItsBytesIsFullAndTheRoundReadsOn) {
  const std::string line = std::string(1500, 'x') + "\n";
  std::string backlog;
  for (int i = 0; i < 2800; ++i) backlog += line;  // 4 MiB: four batches of 699 lines and more
  Append("auth.log", backlog);
  // On one thread, and on two (batches read ahead by the other).
  for (uint32_t threads : {1u, 2u}) {
    SCOPED_TRACE(absl::StrCat(threads, " thread(s)"));
    FileInputsOptions options;  // batch_lines 1000
    options.threads = threads;
    size_t delivered = 0;
    LineSink sink;
    sink.prematch = [](LineBatch*) { return std::shared_ptr<const void>(); };
    sink.process = [&](const LineBatch& b) {
      delivered += b.lines.size();
      return absl::OkStatus();
    };
    prometheus::Registry registry;
    auto inputs = FileInputs::Create(Config({"auth.log"}), options, sink, registry);
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    EXPECT_EQ((*inputs)->PollOnce(), 2800u);
    EXPECT_EQ(delivered, 2800u);
  }
}

// The reading thread goes round again at once while a file has more to read (a round takes at
// most 16 batches of a file), however few lines that was: with long lines 16 batches of 1 MiB
// hold fewer lines than batch_lines, and it used to wait poll_interval (an hour here) then.
TEST_F(FileInputsTest, TheThreadReadsABacklogWithoutWaitingBetweenRounds) {
  FileInputsOptions options;
  options.batch_lines = 20000;
  options.poll_interval = absl::Hours(1);
  std::atomic<size_t> delivered{0};
  auto inputs = FileInputs::Create(
      Config({"auth.log"}), options,
      [&](const palisade::v1::LogBatch& b) {
        delivered += static_cast<size_t>(b.records_size());
        return absl::OkStatus();
      },
      registry_);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  // 18 MiB of 1,500-byte lines: more than one round's 16 batches of 1 MiB (699 lines each).
  const std::string line = std::string(1500, 'x') + "\n";
  std::string part;
  for (int i = 0; i < 1000; ++i) part += line;
  for (int i = 0; i < 12; ++i) Append("auth.log", part);
  (*inputs)->Start();
  // A generous deadline: the rounds follow each other at once; only the hour would be missed.
  for (int i = 0; i < 12000 && delivered.load() < 12000; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  (*inputs)->Stop();
  EXPECT_EQ(delivered.load(), 12000u);
}

// A named path that is a FIFO is refused at once, naming the input and the path: following it
// blocked in open() (no writer yet) with the inputs' lock held, or failed every read (ESPIPE).
TEST_F(FileInputsTest, ANamedFifoIsRefused) {
  ASSERT_EQ(::mkfifo((dir_ + "/auth.log").c_str(), 0600), 0);
  FileInputsOptions options;
  auto sink = [](const palisade::v1::LogBatch&) { return absl::OkStatus(); };
  // Never polled: a poll would block (before the fix) and hang the test.
  auto made = FileInputs::Create(Config({"auth.log"}), options, sink, registry_);
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(made.status().message(),
              HasSubstr("inputs.files[0] (\"auth\"): " + dir_ + "/auth.log: not a regular file"));
}

// A glob that matches a FIFO among its files skips it, said once in the log and counted once as
// an error; the regular files are read.
TEST_F(FileInputsTest, AGlobSkipsAFifoAndSaysSoOnce) {
  Append("a.log", "a1\n");
  ASSERT_EQ(::mkfifo((dir_ + "/b.log").c_str(), 0600), 0);
  Append("c.log", "c1\n");
  auto inputs = Make(Config({"*.log"}));
  EXPECT_EQ(inputs->PollOnce(), 2u);
  Append("c.log", "c2\n");
  EXPECT_EQ(inputs->PollOnce(), 1u);
  EXPECT_THAT(lines_, ElementsAre("a1", "c1", "c2"));
  EXPECT_THAT(logs_, ElementsAre(HasSubstr("input auth: " + dir_ +
                                           "/b.log: not a regular file, skipped")));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);
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

// A glob follows at most max_files files: each follower holds a descriptor and a buffer, and
// whoever writes the globbed directory (www-data under /var/log/nginx/*.log) could create
// files until the daemon's descriptors (gRPC, Logpush, snapshots) and memory ran out. The rest
// are skipped, said once and counted; a place freed (a file removed) is taken by another.
TEST_F(FileInputsTest, AGlobFollowsAtMostMaxFilesAndCountsTheRest) {
  // Each its own first bytes: a file that starts as one followed does is left out as its copy.
  for (const char* name : {"a", "b", "c", "d", "e"}) {
    Append(absl::StrCat(name, ".log"), absl::StrCat(name, "1\n"));
  }
  // Newest first past the cap: a, b, c newer than d and e (d newer than e).
  for (const char* name : {"a", "b", "c"}) SetWritten(absl::StrCat(name, ".log"), -60);
  SetWritten("d.log", -120);
  SetWritten("e.log", -180);
  palisade::v1::InputsConfig config = Config({"*.log"});
  config.mutable_files(0)->set_max_files(3);
  auto inputs = Make(config);
  EXPECT_EQ(inputs->PollOnce(), 3u);
  EXPECT_EQ(inputs->Checkpoints().size(), 3u);
  EXPECT_EQ(Gauge("palisade_input_files_not_followed"), 2.0);
  EXPECT_EQ(inputs->PollOnce(), 0u);
  int said = 0;
  for (const std::string& log : logs_) said += log.find("max_files") != std::string::npos;
  EXPECT_EQ(said, 1);
  ASSERT_EQ(std::remove((dir_ + "/a.log").c_str()), 0);
  inputs->PollOnce();  // a.log let go of
  inputs->PollOnce();  // its place taken
  EXPECT_THAT(lines_, ElementsAre("a1", "b1", "c1", "d1"));
  EXPECT_EQ(Gauge("palisade_input_files_not_followed"), 1.0);
}

TEST_F(FileInputsTest, MaxFilesPastWhatDescriptorsAllowIsRefused) {
  palisade::v1::InputsConfig config = Config({"*.log"});
  config.mutable_files(0)->set_max_files(100000);
  absl::StatusOr<std::unique_ptr<FileInputs>> inputs = FileInputs::Create(
      config, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry_);
  ASSERT_FALSE(inputs.ok());
  EXPECT_EQ(inputs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inputs.status().message()), HasSubstr("max_files 100000"));
}

// A glob match that is a symbolic link is read when root or the daemon's user owns it
// (Kubernetes' /var/log/containers/*.log are root's links into /var/log/pods, rotatelogs -L's
// live name is one), through it as the file it leads to. One of another user's is not (the owner
// of a log directory could point it at the daemon's API token): skipped, said and counted.
TEST_F(FileInputsTest, AGlobReadsASymlinkOwnedByRootOrTheDaemonOnly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a link another owner";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p ", dir_, "/pods/a ", dir_, "/pods/b").c_str()), 0);
  Append("pods/a/0.log", "a1\n");
  Append("pods/b/0.log", "token\n");
  ASSERT_EQ(::symlink((dir_ + "/pods/a/0.log").c_str(), (dir_ + "/a.log").c_str()), 0);
  ASSERT_EQ(::symlink((dir_ + "/pods/b/0.log").c_str(), (dir_ + "/evil.log").c_str()), 0);
  ASSERT_EQ(::lchown((dir_ + "/evil.log").c_str(), 12345, 12345), 0);
  auto inputs = Make(Config({"*.log"}));
  inputs->PollOnce();
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("a1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 1.0);
  EXPECT_THAT(logs_, ElementsAre(HasSubstr(
                         "evil.log: a symbolic link not owned by root or the daemon's user")));
  Append("pods/a/0.log", "a2\n");
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("a1", "a2"));
}

// A wildcard in a directory part of a glob (/var/www/*/storage/logs/*.log) does not lead through
// a link of another user's, there or below it: a tenant's storage/logs -> /etc/palisade was read.
// Root's or the daemon's links are followed as at the last part.
TEST_F(FileInputsTest, AGlobDoesNotGoThroughAnotherUsersDirectoryLink) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a link another owner";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p ", dir_, "/www/t1/logs ", dir_, "/www/t2 ",
                                     dir_, "/www/t3 ", dir_, "/secret ", dir_, "/shared ",
                                     dir_, "/elsewhere/logs")
                            .c_str()),
            0);
  Append("www/t1/logs/a.log", "a1\n");
  Append("secret/x.log", "token\n");
  Append("shared/s.log", "s1\n");
  Append("elsewhere/logs/e.log", "token2\n");
  // Below the wildcard's part: t2/logs -> secret, another user's.
  ASSERT_EQ(::symlink((dir_ + "/secret").c_str(), (dir_ + "/www/t2/logs").c_str()), 0);
  ASSERT_EQ(::lchown((dir_ + "/www/t2/logs").c_str(), 12345, 12345), 0);
  // The wildcard's part itself: t4 -> elsewhere, another user's.
  ASSERT_EQ(::symlink((dir_ + "/elsewhere").c_str(), (dir_ + "/www/t4").c_str()), 0);
  ASSERT_EQ(::lchown((dir_ + "/www/t4").c_str(), 12345, 12345), 0);
  // Root's own link: followed.
  ASSERT_EQ(::symlink((dir_ + "/shared").c_str(), (dir_ + "/www/t3/logs").c_str()), 0);
  auto inputs = Make(Config({"www/*/logs/*.log"}));
  inputs->PollOnce();
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("a1", "s1"));
  EXPECT_EQ(Counter("palisade_input_errors_total"), 2.0);
}

// Past max_files the newest files are followed first: whoever pre-creates aaa*.log files where
// the glob looks no longer keeps the logs written later (in name order after them) unread.
TEST_F(FileInputsTest, PastMaxFilesTheNewestAreFollowed) {
  for (int i = 1; i <= 3; ++i) {
    const std::string name = absl::StrCat("aaa", i, ".log");
    Append(name, absl::StrCat("aaa", i, "\n"));
    SetWritten(name, -3600 + 600 * i);
  }
  Append("z.log", "z1\n");
  palisade::v1::InputsConfig config = Config({"*.log"});
  config.mutable_files(0)->set_max_files(2);
  auto inputs = Make(config);
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("aaa3", "z1"));
  EXPECT_EQ(Gauge("palisade_input_files_not_followed"), 2.0);
}

// A rotated copy left out by its name takes no place and is not counted as not followed.
TEST_F(FileInputsTest, ARotatedCopyIsNotCountedPastMaxFiles) {
  Append("app.log", "a1\n");
  Append("app.log.1", "a0\n");
  palisade::v1::InputsConfig config = Config({"app.log*"});
  config.mutable_files(0)->set_max_files(1);
  auto inputs = Make(config);
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("a1"));
  EXPECT_EQ(Gauge("palisade_input_files_not_followed"), 0.0);
  for (const std::string& log : logs_) EXPECT_THAT(log, ::testing::Not(HasSubstr("max_files")));
}

// The inputs' max_files together are bounded: each followed file holds a descriptor of the
// unit's 65,536, four inputs of 16,384 would take them all.
TEST_F(FileInputsTest, MaxFilesOverAllInputsIsBounded) {
  palisade::v1::InputsConfig config = Config({"*.log"});
  config.mutable_files(0)->set_max_files(10000);
  palisade::v1::FileInput* other = config.add_files();
  *other = config.files(0);
  other->set_name("other");
  absl::StatusOr<std::unique_ptr<FileInputs>> inputs = FileInputs::Create(
      config, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry_);
  ASSERT_FALSE(inputs.ok());
  EXPECT_EQ(inputs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inputs.status().message()), HasSubstr("20000"));
  other->set_max_files(6384);
  EXPECT_TRUE(FileInputs::Create(config, {},
                                 [](const palisade::v1::LogBatch&) { return absl::OkStatus(); },
                                 registry_)
                  .ok());
}

// An input of named paths only follows those (one descriptor each): counted as its paths in
// the inputs' total, not at max_files' default of 1,024, which refused 17 inputs of one log each
// (17 x 1,024 > 16,384). An input with a glob still counts its max_files.
TEST_F(FileInputsTest, InputsOfNamedPathsCountTheirPathsAgainstTheTotal) {
  palisade::v1::InputsConfig config;
  for (int i = 0; i < 17; ++i) {
    palisade::v1::FileInput* f = config.add_files();
    f->set_name(absl::StrCat("app", i));
    f->set_format("syslog");
    f->add_paths(absl::StrCat(dir_, "/app", i, ".log"));
  }
  auto sink = [](const palisade::v1::LogBatch&) { return absl::OkStatus(); };
  {
    absl::StatusOr<std::unique_ptr<FileInputs>> inputs =
        FileInputs::Create(config, {}, sink, registry_);
    EXPECT_TRUE(inputs.ok()) << inputs.status();
  }
  // 17 named paths and a glob's 16,368: one over.
  palisade::v1::FileInput* glob = config.add_files();
  glob->set_name("globbed");
  glob->set_format("syslog");
  glob->add_paths(dir_ + "/*.log");
  glob->set_max_files(16368);
  absl::StatusOr<std::unique_ptr<FileInputs>> inputs =
      FileInputs::Create(config, {}, sink, registry_);
  ASSERT_FALSE(inputs.ok());
  EXPECT_THAT(std::string(inputs.status().message()), HasSubstr("16385"));
  glob->set_max_files(16367);
  EXPECT_TRUE(FileInputs::Create(config, {}, sink, registry_).ok());
}

TEST_F(FileInputsTest, ANamedPathMayBeASymlinkOwnedByRootOrTheDaemon) {
  Append("real.log", "r1\n");
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a link another owner";
  ASSERT_EQ(::symlink((dir_ + "/real.log").c_str(), (dir_ + "/app.log").c_str()), 0);
  // Another user's link is not followed.
  ASSERT_EQ(::symlink((dir_ + "/real.log").c_str(), (dir_ + "/other.log").c_str()), 0);
  ASSERT_EQ(::lchown((dir_ + "/other.log").c_str(), 12345, 12345), 0);
  auto inputs = Make(Config({"app.log", "other.log"}));
  inputs->PollOnce();
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("r1"));  // the tests run as root: the daemon's own link
  EXPECT_THAT(logs_, ElementsAre(HasSubstr("other.log: a symbolic link")));
}


// A glob's follower opens each directory below the glob's literal part without following
// another user's link: a tenant who swaps the directory of a file followed for a link to a
// secret's directory (mv logs x; ln -s /etc/palisade/secrets logs) has it seen as a rotation,
// and the secret was read as the file's next lines. The follower of that match is dropped.
TEST_F(FileInputsTest, ADirectorySwappedForAnotherUsersLinkIsNotReadThrough) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a link another owner";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p ", dir_, "/www/t1/logs ", dir_, "/secrets")
                            .c_str()),
            0);
  Append("www/t1/logs/cf_token", "l1\n");
  Append("secrets/cf_token", "SECRET\n");
  auto inputs = Make(Config({"www/*/logs/*"}));
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("l1"));
  ASSERT_EQ(::rename((dir_ + "/www/t1/logs").c_str(), (dir_ + "/www/t1/x").c_str()), 0);
  ASSERT_EQ(::symlink((dir_ + "/secrets").c_str(), (dir_ + "/www/t1/logs").c_str()), 0);
  ASSERT_EQ(::lchown((dir_ + "/www/t1/logs").c_str(), 12345, 12345), 0);
  for (int i = 0; i < 3; ++i) inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("l1"));
  for (const auto& c : inputs->Checkpoints()) EXPECT_NE(c.path(), dir_ + "/www/t1/logs/cf_token");
}

// A restored position whose file the glob matches only under a rotated name (app.log rotated to
// app.log-20261207 while the daemon was down, not created again) is read on there by the path's
// follower, which then opens the path below the glob's literal part, as a match's follower does
// (FileFollowerOptions::trusted_dir). It had none (the path is no match now): a directory
// swapped meanwhile for another user's link had the path opened through it, and the secret
// there read as the log's next lines.
TEST_F(FileInputsTest, APositionResumedUnderARotatedNameOpensItsPathBelowTheGlob) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a link another owner";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p ", dir_, "/www/t1/logs ", dir_, "/secrets")
                            .c_str()),
            0);
  Append("www/t1/logs/app.log", "l1\n");
  Append("secrets/app.log", "SECRET\n");
  const palisade::v1::InputsConfig config = Config({"www/*/logs/*"});
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(config);
    inputs->PollOnce();
    saved = inputs->Checkpoints();
  }
  ASSERT_THAT(lines_, ElementsAre("l1"));
  ASSERT_EQ(saved.size(), 1u);
  Append("www/t1/logs/app.log", "l2\nl3\n");
  const std::string logs = dir_ + "/www/t1/logs";
  ASSERT_EQ(::rename((logs + "/app.log").c_str(), (logs + "/app.log-20261207").c_str()), 0);
  // Once the rotated file's lines (a full batch) are taken, the tenant swaps the directory for
  // a link to the secrets' within the round: the follower reads on to its path before the next
  // round's glob sees the link (and drops it).
  bool swapped = false;
  FileInputsOptions options;
  options.batch_lines = 2;
  options.checkpoints = saved;
  options.log = [this](const std::string& message) { logs_.push_back(message); };
  absl::StatusOr<std::unique_ptr<FileInputs>> inputs = FileInputs::Create(
      config, options,
      [&](const palisade::v1::LogBatch& b) {
        for (const auto& r : b.records()) lines_.push_back(r.line());
        if (!swapped) {
          swapped = true;
          EXPECT_EQ(::rename(logs.c_str(), (dir_ + "/www/t1/x").c_str()), 0);
          EXPECT_EQ(::symlink((dir_ + "/secrets").c_str(), logs.c_str()), 0);
          EXPECT_EQ(::lchown(logs.c_str(), 12345, 12345), 0);
        }
        return absl::OkStatus();
      },
      registry_);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  for (int i = 0; i < 3; ++i) (*inputs)->PollOnce();
  EXPECT_TRUE(swapped);
  EXPECT_THAT(lines_, ElementsAre("l1", "l2", "l3"));
}

// Positions resumed under a rotated name (the path not created again) count against max_files
// as the other restored ones: each such follower holds a descriptor. Past it one waits for a
// place, saved on as restored, and its rotated file is not read as a new one.
TEST_F(FileInputsTest, PositionsResumedUnderARotatedNameCountAgainstMaxFiles) {
  Append("a.log", "a1\n");
  Append("b.log", "b1\n");
  palisade::v1::InputsConfig config = Config({"*"});
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(config);
    inputs->PollOnce();
    saved = inputs->Checkpoints();
  }
  ASSERT_EQ(saved.size(), 2u);
  Append("a.log", "a2\n");
  Append("b.log", "b2\n");
  for (const char* name : {"a.log", "b.log"}) {
    const std::string path = absl::StrCat(dir_, "/", name);
    ASSERT_EQ(::rename(path.c_str(), (path + "-20261207").c_str()), 0);
  }
  lines_.clear();
  config.mutable_files(0)->set_max_files(1);
  auto inputs = Make(config, saved);
  inputs->PollOnce();
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("a2"));
  EXPECT_EQ(Gauge("palisade_input_files_not_followed"), 1.0);  // b.log-20261207
  bool waits = false;
  for (const auto& c : inputs->Checkpoints()) {
    waits = waits || (c.path() == dir_ + "/b.log" && c.offset() == 3);
  }
  EXPECT_TRUE(waits);
}

// Copies left out (hard links to a file drained at a rotation) take no place at runtime and are
// saved; after a restart each was followed from its saved position, uncapped: 60,000 of them ran
// the daemon out of descriptors. Restored followers count against max_files.
TEST_F(FileInputsTest, RestoredCopiesLeftOutAreBoundedByMaxFiles) {
  Append("app.log", "a1\n");
  palisade::v1::InputsConfig config = Config({"*.log"});
  config.mutable_files(0)->set_max_files(2);
  std::vector<palisade::v1::FileCheckpoint> saved;
  {
    auto inputs = Make(config);
    inputs->PollOnce();
    for (int i = 0; i < 5; ++i) {
      ASSERT_EQ(
          ::link((dir_ + "/app.log").c_str(), (dir_ + absl::StrCat("/x", i, ".log")).c_str()), 0);
    }
    inputs->PollOnce();
    ASSERT_EQ(::rename((dir_ + "/app.log").c_str(), (dir_ + "/app.log.1").c_str()), 0);
    Append("app.log", "b1\n");
    inputs->PollOnce();
    inputs->PollOnce();
    saved = inputs->Checkpoints();
  }
  EXPECT_THAT(lines_, ElementsAre("a1", "b1"));
  int left_out = 0;
  for (const auto& c : saved) left_out += c.left_out() ? 1 : 0;
  ASSERT_EQ(left_out, 5);
  lines_.clear();
  auto open_files = [] {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    while (d != nullptr && ::readdir(d) != nullptr) ++n;
    if (d != nullptr) ::closedir(d);
    return n;
  };
  const int before = open_files();
  auto inputs = Make(config, saved);
  Append("app.log", "b2\n");
  inputs->PollOnce();
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("b2"));
  EXPECT_LE(open_files() - before, 2);  // max_files descriptors, not one per copy
}

// A last write in the future (touch -d 2100) does not rank a file first past max_files.
TEST_F(FileInputsTest, PastMaxFilesAFutureLastWriteRanksOldest) {
  Append("future.log", "f1\n");
  SetWritten("future.log", 50 * 365 * 86400);  // 2076
  Append("old.log", "o1\n");
  SetWritten("old.log", -3600);
  Append("z.log", "z1\n");
  palisade::v1::InputsConfig config = Config({"*.log"});
  config.mutable_files(0)->set_max_files(2);
  auto inputs = Make(config);
  inputs->PollOnce();
  EXPECT_THAT(lines_, ElementsAre("o1", "z1"));
}


// Matches past max_files coming and going (a file created and removed each round) are said when
// it starts, at most once a minute: each toggle was a log line and an error.
TEST_F(FileInputsTest, PastMaxFilesIsSaidAtMostOnceAMinute) {
  Append("a.log", "a1\n");
  palisade::v1::InputsConfig config = Config({"*.log"});
  config.mutable_files(0)->set_max_files(1);
  auto inputs = Make(config);
  inputs->PollOnce();
  for (int i = 0; i < 3; ++i) {
    Append("b.log", "b\n");
    inputs->PollOnce();
    ASSERT_EQ(std::remove((dir_ + "/b.log").c_str()), 0);
    inputs->PollOnce();
  }
  int said = 0;
  for (const std::string& log : logs_) said += log.find("max_files") != std::string::npos;
  EXPECT_EQ(said, 1);  // the test takes far less than a minute
}

}  // namespace
}  // namespace palisade
