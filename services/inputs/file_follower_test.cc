#include "services/inputs/file_follower.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

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
using ::testing::IsEmpty;

class FileFollowerTest : public ::testing::Test {
 protected:
  FileFollowerTest()
      : path_(absl::StrCat(std::getenv("TEST_TMPDIR"), "/",
                           ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                           ".log")) {
    std::remove(path_.c_str());
    std::remove((path_ + ".1").c_str());
  }
  void Append(const std::string& text, const std::string& path = "") {
    std::ofstream(path.empty() ? path_ : path, std::ios::app | std::ios::binary) << text;
  }
  std::vector<std::string> Poll(FileFollower& f, size_t max = 1000) {
    std::vector<std::string> lines;
    absl::StatusOr<size_t> n = f.Poll(max, &lines);
    EXPECT_TRUE(n.ok()) << n.status();
    return lines;
  }
  std::string path_;
};

// Sets `path`'s last-modification time `seconds` ago (set, not left to the clock: two writes in
// a row may share a timestamp).
void WrittenAgo(const std::string& path, int seconds) {
  struct timespec times[2];
  ASSERT_EQ(::clock_gettime(CLOCK_REALTIME, &times[0]), 0);
  times[0].tv_sec -= seconds;
  times[1] = times[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

// What gzip does to `path`: writes PATH.gz (a new inode), then removes the file.
void Compress(const std::string& path) {
  std::ofstream(path + ".gz", std::ios::binary) << "\x1f\x8b compressed";
  ASSERT_EQ(std::remove(path.c_str()), 0);
}

using ::palisade::testing::Gzip;

// A gzip file as logrotate's compress leaves it, of `text`.
void WriteGzip(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << Gzip(text);
}

TEST_F(FileFollowerTest, NewLinesAsTheyComeAndAPartialLineHeld) {
  FileFollower f(path_);
  EXPECT_THAT(Poll(f), IsEmpty());  // not there yet: waited for
  Append("one\ntwo\nthr");
  EXPECT_THAT(Poll(f), ElementsAre("one", "two"));
  EXPECT_EQ(f.checkpoint().offset(), 8u);
  EXPECT_EQ(f.lag_bytes(), 3u);
  Append("ee\r\nfour\n");
  EXPECT_THAT(Poll(f), ElementsAre("three", "four"));
  EXPECT_EQ(f.checkpoint().offset(), 20u);
  EXPECT_EQ(f.stats().lines, 4u);
  // At most max lines per poll; the rest on the next.
  Append("5\n6\n7\n");
  EXPECT_THAT(Poll(f, 2), ElementsAre("5", "6"));
  EXPECT_THAT(Poll(f, 2), ElementsAre("7"));
}

// A checkpoint taken while the rest of a cut line is being dropped is inside that line: a
// follower resumed from it (a restart) drops the rest too. Else the client-written tail of a
// long line (a user name, a path) would become a line of its own, with a forged header.
TEST_F(FileFollowerTest, AResumeInsideACutLineDropsItsRest) {
  FileFollowerOptions options;
  options.max_line_bytes = 64;
  palisade::v1::FileCheckpoint saved;
  {
    FileFollower f(path_, options);
    Append("first\n" + std::string(20000, 'A'));
    EXPECT_THAT(Poll(f), ElementsAre("first", std::string(64, 'A')));
    saved = f.checkpoint();
  }
  Append("Mar  3 14:02:01 web sshd[1]: Failed password for root from 198.51.100.9 port 1 ssh2\n"
         "next\n");
  FileFollower resumed(path_, options, saved);
  EXPECT_THAT(Poll(resumed), ElementsAre("next"));
}

// The checkpoint's file cannot be opened when the follower starts (out of descriptors here;
// EACCES on a glob's file): the follower says so and tries again, from the checkpoint. It used
// to give up on it and read the file again from its start, counting every line twice.
TEST_F(FileFollowerTest, AResumeThatCannotOpenTheFileTriesAgainFromTheCheckpoint) {
  Append("a\nb\n");
  palisade::v1::FileCheckpoint saved;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a", "b"));
    saved = f.checkpoint();
  }
  std::unique_ptr<FileFollower> resumed;
  std::vector<std::string> lines;
  absl::StatusOr<size_t> n = 0;
  {
    AllDescriptorsTaken taken;
    ASSERT_TRUE(taken.ok());
    resumed = std::make_unique<FileFollower>(path_, FileFollowerOptions{}, saved);
    n = resumed->Poll(10, &lines);
  }
  EXPECT_FALSE(n.ok());
  EXPECT_THAT(std::string(n.status().message()), ::testing::HasSubstr(path_));
  // Meanwhile its position is the checkpoint's, not "no file" (inode 0, offset 0): a snapshot
  // taken now keeps it, and the next restart does not read the file again from its start.
  const palisade::v1::FileCheckpoint waiting = resumed->checkpoint();
  EXPECT_EQ(waiting.path(), path_);
  EXPECT_EQ(waiting.device(), saved.device());
  EXPECT_EQ(waiting.inode(), saved.inode());
  EXPECT_EQ(waiting.offset(), saved.offset());
  EXPECT_EQ(waiting.fingerprint(), saved.fingerprint());
  EXPECT_EQ(waiting.fingerprint_bytes(), saved.fingerprint_bytes());
  Append("c\n");
  EXPECT_THAT(Poll(*resumed), ElementsAre("c"));
  EXPECT_EQ(resumed->stats().truncations, 0u);
}

// A path that is a FIFO (or another file that is not a regular one) is refused, naming it:
// opening one without a writer blocked (holding the file inputs' lock: snapshots and shutdown
// hung), and with a writer every read failed with ESPIPE. A regular file put in its place is
// read.
TEST_F(FileFollowerTest, AFifoIsRefusedAndNotWaitedOn) {
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  FileFollower f(path_);
  std::vector<std::string> lines;
  {
    // With a writer (O_RDWR does not block on a FIFO) and a line in the pipe.
    const int writer = ::open(path_.c_str(), O_RDWR | O_NONBLOCK);
    ASSERT_GE(writer, 0);
    ASSERT_EQ(::write(writer, "x\n", 2), 2);
    absl::StatusOr<size_t> n = f.Poll(10, &lines);
    ::close(writer);
    ASSERT_FALSE(n.ok());
    ASSERT_THAT(std::string(n.status().message()),
                ::testing::HasSubstr(path_ + ": not a regular file"));
    EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  }
  // With no writer: the same at once, not an open() waiting for one.
  absl::StatusOr<size_t> n = f.Poll(10, &lines);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(n.status().message()),
              ::testing::HasSubstr(path_ + ": not a regular file"));
  EXPECT_THAT(lines, IsEmpty());
  ASSERT_EQ(std::remove(path_.c_str()), 0);
  Append("a\n");
  EXPECT_THAT(Poll(f), ElementsAre("a"));
}

// A file removed (rm; find -delete on old files) and read to its end is let go of: its
// descriptor closed (the disk space freed; descriptors not piling up to EMFILE) and its position
// no longer a file's. A last line without its newline will never be finished: it is a line.
// The path is followed again when a file comes back there.
TEST_F(FileFollowerTest, ARemovedFileReadToItsEndIsLetGoOf) {
  FileFollower f(path_);
  Append("a\nb");
  EXPECT_THAT(Poll(f), ElementsAre("a"));
  ASSERT_EQ(std::remove(path_.c_str()), 0);
  EXPECT_THAT(Poll(f), ElementsAre("b"));
  EXPECT_THAT(Poll(f), IsEmpty());
  EXPECT_FALSE(HoldsRemoved(path_));
  EXPECT_EQ(f.checkpoint().inode(), 0u);
  EXPECT_EQ(f.checkpoint().offset(), 0u);
  Append("c\n");
  EXPECT_THAT(Poll(f), ElementsAre("c"));
}

// A removed file that another process still holds open and writes to is not let go of until
// it was read to its end.
TEST_F(FileFollowerTest, ARemovedFileIsReadToItsEndFirst) {
  FileFollowerOptions options;
  options.max_batch_bytes = 3;
  FileFollower f(path_, options);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  const int writer = ::open(path_.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(std::remove(path_.c_str()), 0);
  ASSERT_EQ(::write(writer, "a2\na3\n", 6), 6);
  EXPECT_THAT(Poll(f), ElementsAre("a2"));  // stopped at 3 bytes: more to read
  EXPECT_THAT(Poll(f), ElementsAre("a3"));
  ASSERT_EQ(::write(writer, "a4\n", 3), 3);
  EXPECT_THAT(Poll(f), ElementsAre("a4"));
  ::close(writer);
  EXPECT_THAT(Poll(f), IsEmpty());
  EXPECT_FALSE(HoldsRemoved(path_));
}

// The view-per-line Poll hands out the same lines as the vector one, CRLF and cut included.
TEST_F(FileFollowerTest, ViewsAreTheSameLines) {
  FileFollowerOptions options;
  options.max_line_bytes = 64;
  FileFollower f(path_, options);
  Append("one\r\n" + std::string(100, 'x') + "\ntwo\nthr");
  std::vector<std::string> seen;
  absl::StatusOr<size_t> n =
      f.Poll(10, [&](absl::string_view line) { seen.emplace_back(line); });
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  EXPECT_THAT(seen, ElementsAre("one", std::string(64, 'x'), "two"));
  EXPECT_EQ(f.stats().cut_lines, 1u);
  EXPECT_EQ(f.checkpoint().offset(), 110u);
}

// A Poll says whether it stopped at a limit (max_lines, or max_batch_bytes: the lines' bytes
// and a newline each) rather than at the end of what was written: the caller then polls again
// at once instead of waiting for its next interval.
TEST_F(FileFollowerTest, APollSaysWhetherItStoppedAtALimit) {
  FileFollowerOptions options;
  options.max_batch_bytes = 10;
  FileFollower f(path_, options);
  Append("abcd\r\nefgh\r\nijkl\n");
  EXPECT_THAT(Poll(f), ElementsAre("abcd", "efgh"));  // 8 bytes, 10 with a newline each
  EXPECT_TRUE(f.stopped_at_limit());
  EXPECT_THAT(Poll(f), ElementsAre("ijkl"));
  EXPECT_FALSE(f.stopped_at_limit());
  Append("m\nn\n");
  EXPECT_THAT(Poll(f, 1), ElementsAre("m"));
  EXPECT_TRUE(f.stopped_at_limit());
  EXPECT_THAT(Poll(f, 1), ElementsAre("n"));
  EXPECT_TRUE(f.stopped_at_limit());  // at max_lines: whether more is there, the next Poll says
  EXPECT_THAT(Poll(f, 1), IsEmpty());
  EXPECT_FALSE(f.stopped_at_limit());
}

TEST_F(FileFollowerTest, RenameAndCreateLosesNothing) {
  FileFollower f(path_);
  Append("a1\na2\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1", "a2"));
  Append("a3\na4-no-newline");  // written just before the rotation
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  EXPECT_THAT(Poll(f), ElementsAre("a3"));  // the new file is not there yet
  EXPECT_THAT(f.TakeLetGo(), IsEmpty());  // still read on
  const palisade::v1::FileCheckpoint old = f.checkpoint();
  Append("b1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a4-no-newline", "b1"));
  EXPECT_EQ(f.stats().rotations, 1u);
  // The old file, let go of: a glob that matches it under its new name knows it.
  std::vector<palisade::v1::FileCheckpoint> let_go = f.TakeLetGo();
  ASSERT_EQ(let_go.size(), 1u);
  EXPECT_EQ(let_go[0].inode(), old.inode());
  EXPECT_TRUE(FileFollower::IsFileOf(path_ + ".1", let_go[0]));
  EXPECT_FALSE(FileFollower::IsFileOf(path_, let_go[0]));
  EXPECT_THAT(f.TakeLetGo(), IsEmpty());
  Append("b2\n");
  EXPECT_THAT(Poll(f), ElementsAre("b2"));
  EXPECT_EQ(f.checkpoint().offset(), 6u);
}

// A follower more than one rotation behind (a flood under size rotation: the sink lags) reads
// the file it is in to its end, then the files rotated after it (B, now PATH.1), then the path:
// it went from the old file straight to the path, and B's lines were lost unsaid.
TEST_F(FileFollowerTest, TwoRotationsWhileBehindReadTheMiddleFile) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  FileFollower f(path_);
  Append("a1\na2\na3\na4\n");
  EXPECT_THAT(Poll(f, 2), ElementsAre("a1", "a2"));  // behind: a backlog
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("b1\nb2\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("c1\n");
  std::vector<std::string> lines;
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(f, 2)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a3", "a4", "b1", "b2", "c1"));
  EXPECT_THAT(f.TakeLost(), IsEmpty());
  EXPECT_EQ(f.stats().rotations, 2u);
  Append("c2\n");
  EXPECT_THAT(Poll(f), ElementsAre("c2"));
}

// A short file ("x", 2 bytes: fingerprinted whole) left behind two rotations, the middle file
// starting with the same bytes: it is no copy of the one left (it is longer), so it is read.
// Before (a review found), it was taken for a copy and skipped, uncounted.
TEST_F(FileFollowerTest, AMiddleFileStartingLikeAShortLeftFileIsRead) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  FileFollower f(path_);
  Append("x\n");
  EXPECT_THAT(Poll(f), ElementsAre("x"));
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("x\ny\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("z\n");
  std::vector<std::string> lines;
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(f, 2)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("x", "y", "z"));
  EXPECT_THAT(f.TakeLost(), IsEmpty());
}

// The same after a restart: rotated once while down, and again while the resumed follower is
// still in the checkpoint's file (a long backlog): the file that was the path when it resumed
// is read before the path's new one.
TEST_F(FileFollowerTest, ARotationDuringAResumeDrainReadsTheFileRotatedThen) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\na3\n");
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("b1\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again, 1), ElementsAre("a2"));  // in the checkpoint's file, behind
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("c1\n");
  std::vector<std::string> lines;
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(again, 1)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a3", "b1", "c1"));
  EXPECT_THAT(again.TakeLost(), IsEmpty());
  EXPECT_EQ(again.stats().rotations, 2u);
}

// Resumed in the file rotated away while the path is absent (nocreate, a retired service): once
// that file is removed (find -delete, maxage) and read to its end, it is let go of as the path's
// own file would be. It was held open for ever (its space not freed) and its position kept.
TEST_F(FileFollowerTest, AResumedRotatedFileRemovedWhileThePathIsAbsentIsLetGoOf) {
  const std::string copy = path_ + "-20261204";
  std::remove(copy.c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\na3");
  ASSERT_EQ(std::rename(path_.c_str(), copy.c_str()), 0);
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("a2"));
  EXPECT_TRUE(again.following());  // the path may come back: the writer may write on
  ASSERT_EQ(std::remove(copy.c_str()), 0);
  EXPECT_THAT(Poll(again), ElementsAre("a3"));  // its last line, without its newline
  EXPECT_THAT(Poll(again), IsEmpty());
  EXPECT_FALSE(again.following());
  EXPECT_FALSE(HoldsRemoved(copy));
  EXPECT_EQ(again.checkpoint().inode(), 0u);
  Append("b1\n");
  EXPECT_THAT(Poll(again), ElementsAre("b1"));
}

// Resumed in the checkpoint's file with files rotated after it: those say the writer moved on,
// so they are read at once, not once the path (created empty, not written yet) holds a byte.
TEST_F(FileFollowerTest, FilesRotatedAfterTheCheckpointsAreReadBeforeThePathHoldsAByte) {
  const std::string d4 = path_ + "-20261204", d5 = path_ + "-20261205";
  for (const std::string& p : {d4, d5}) std::remove(p.c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  ASSERT_EQ(std::rename(path_.c_str(), d4.c_str()), 0);
  Append("b1\n");
  ASSERT_EQ(std::rename(path_.c_str(), d5.c_str()), 0);
  Append("");  // created empty
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("a2", "b1"));
  EXPECT_EQ(again.lag_bytes(), 0u);
  Append("c1\n");
  EXPECT_THAT(Poll(again), ElementsAre("c1"));
  EXPECT_EQ(again.stats().rotations, 2u);
}

// logrotate's `create`: the file is renamed, an empty one created, and the writer goes on
// writing to the old one until its postrotate reopen. The old file is read on until the new one
// holds a byte (the writer reopened), then to its end once more: nothing written meanwhile is
// lost.
TEST_F(FileFollowerTest, TheOldFileIsReadOnUntilTheWriterMovesToTheNewOne) {
  FileFollower f(path_);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  Append("");  // created empty
  EXPECT_THAT(Poll(f), IsEmpty());
  Append("a2\n", path_ + ".1");  // before the writer's reopen
  EXPECT_THAT(Poll(f), ElementsAre("a2"));
  Append("a3\n", path_ + ".1");
  Append("b1\n");  // reopened
  EXPECT_THAT(Poll(f), ElementsAre("a3", "b1"));
  EXPECT_EQ(f.stats().rotations, 1u);
  EXPECT_EQ(f.checkpoint().offset(), 3u);
}

TEST_F(FileFollowerTest, CopyTruncateReadsTheNewStart) {
  FileFollower f(path_);
  Append("a1\na2\na3\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1", "a2", "a3"));
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "b1\n";  // shorter than before
  EXPECT_THAT(Poll(f), ElementsAre("b1"));
  EXPECT_EQ(f.stats().truncations, 1u);
}

TEST_F(FileFollowerTest, CopyTruncateWrittenPastTheOldOffsetIsSeenByItsFirstBytes) {
  FileFollower f(path_);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  // Emptied and written again, longer than before, between two polls.
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "b1\nb2\nb3\n";
  EXPECT_THAT(Poll(f), ElementsAre("b1", "b2", "b3"));
  EXPECT_EQ(f.stats().truncations, 1u);
}

// copytruncate with compress and no delaycompress: the copy is PATH.1.gz before the follower
// looks, so the lines written after its last read (a2 a3) are read nowhere. They were not said
// lost either: said now (TakeLostToCompression), with the bytes gzip's trailer says the copy
// held past the position. A copy holding nothing past it lost nothing: not said.
TEST_F(FileFollowerTest, ACopyTruncateWhoseCopyIsCompressedAtOnceSaysWhatWasLost) {
  for (const std::string& p : {path_ + ".1.gz", path_ + ".2.gz"}) std::remove(p.c_str());
  FileFollower f(path_);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  Append("a2\na3\n");  // after the last poll: in the copy only
  WriteGzip(path_ + ".1.gz", "a1\na2\na3\n");
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "b1\n";
  EXPECT_THAT(Poll(f), ElementsAre("b1"));
  EXPECT_EQ(f.stats().truncations, 1u);
  std::vector<FileFollower::CompressedCopyLoss> lost = f.TakeLostToCompression();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].at.offset(), 3u);
  EXPECT_EQ(lost[0].compressed, path_ + ".1.gz");
  EXPECT_EQ(lost[0].bytes, 6u);
  EXPECT_THAT(f.TakeLostToCompression(), IsEmpty());
  // The next day with nothing written after the last poll: the copy holds exactly what was read.
  ASSERT_EQ(std::rename((path_ + ".1.gz").c_str(), (path_ + ".2.gz").c_str()), 0);
  WriteGzip(path_ + ".1.gz", "b1\n");
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "c1\n";
  EXPECT_THAT(Poll(f), ElementsAre("c1"));
  EXPECT_EQ(f.stats().truncations, 2u);
  EXPECT_THAT(f.TakeLostToCompression(), IsEmpty());
}

// A compressed file written since the follower's last look is no copy of its file unless it
// starts as the file did: a per-instance log's compressed copy (PATH-1.1.gz: less its .gz, a
// rotated name of the path) or any gzip made meanwhile (PATH.1.gz of another file) beside a
// truncation by hand (: > PATH) was said to hold the file's lost lines. The copy's first bytes,
// inflated, must be the file's (those fingerprinted).
TEST_F(FileFollowerTest, ACompressedFileThatIsNoCopyOfTheTruncatedFileIsNotSaidLost) {
  for (const std::string& gz : {path_ + "-1.1.gz", path_ + ".1.gz"}) {
    SCOPED_TRACE(gz);
    for (const std::string& p : {path_, path_ + "-1.1.gz", path_ + ".1.gz"}) {
      std::remove(p.c_str());
    }
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    WriteGzip(gz, "i1\ni2\ni3\n");  // another log's: 9 bytes, more than the position's 3
    std::ofstream(path_, std::ios::trunc | std::ios::binary) << "b1\n";
    EXPECT_THAT(Poll(f), ElementsAre("b1"));
    EXPECT_EQ(f.stats().truncations, 1u);
    EXPECT_THAT(f.TakeLostToCompression(), IsEmpty());
  }
}

// A compressed file whose first bytes cannot be read here (xz) is not told by them: one that is
// a rotated copy of a log another follower holds (PATH-1.1.xz of PATH-1) is no copy of this one.
TEST_F(FileFollowerTest, ACompressedCopyOfALogFollowedElsewhereIsNotSaidLost) {
  for (const std::string& p : {path_ + "-1", path_ + "-1.1.xz"}) std::remove(p.c_str());
  Append("i3\n", path_ + "-1");
  FileFollowerOptions options;
  options.followed_elsewhere = [this](const std::string& name, uint64_t, uint64_t) {
    return name == path_ + "-1";
  };
  FileFollower f(path_, options);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  Append("\xfd" "7zXZ i1 i2", path_ + "-1.1.xz");
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "b1\n";
  EXPECT_THAT(Poll(f), ElementsAre("b1"));
  EXPECT_THAT(f.TakeLostToCompression(), IsEmpty());
}

// gzip counts the uncompressed size mod 2^32 (ISIZE): from a position at or past 4 GiB (or a
// copy that may hold 4 GiB or more) the bytes the trailer says are lost are a lower bound only.
TEST_F(FileFollowerTest, ACompressedCopyPastFourGiBSaysAtLeastWhatWasLost) {
  std::remove((path_ + ".1.gz").c_str());
  Append("a1\n");
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  // Sparse past 4 GiB, a line ending where the checkpoint says (no 4 GiB are read).
  const uint64_t far = (uint64_t{1} << 32) + 16;
  {
    const int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "\n", 1, static_cast<off_t>(far - 1)), 1);
    ::close(fd);
  }
  checkpoint.set_offset(far);
  FileFollower f(path_, {}, checkpoint);
  EXPECT_THAT(Poll(f), IsEmpty());
  ASSERT_EQ(f.checkpoint().offset(), far);
  // The copy's first 256 bytes are the file's; its trailer says 300 (mod 2^32).
  WriteGzip(path_ + ".1.gz", "a1\n" + std::string(297, '\0'));
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "b1\n";
  EXPECT_THAT(Poll(f), ElementsAre("b1"));
  std::vector<FileFollower::CompressedCopyLoss> lost = f.TakeLostToCompression();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].bytes, 300u - 16u);
  EXPECT_TRUE(lost[0].at_least);
}

// A stray rotated name that sorts after the file rotated (PATH.0 left by hand; a dated name
// from a clock once stepped forward, PATH-20270315) but was last written long before it is no
// file rotated after it: the names order the files, they do not admit one the clock says is
// older unless the clock was seen stepped back (the path's file dated before the rotated one).
// It was read again from its start at every rotation.
TEST_F(FileFollowerTest, AStrayRotatedNameThatSortsLaterIsNotReadAtEachRotation) {
  for (const auto& [stray, rotated] : std::vector<std::array<std::string, 2>>{
           {".0", ".1"}, {"-20270315", "-20261207"}}) {
    SCOPED_TRACE(stray);
    const std::string s = path_ + stray, r = path_ + rotated;
    for (const char* p : {"", ".0", ".1", "-20270315", "-20261207"}) {
      std::remove((path_ + p).c_str());
    }
    Append("s1\n", s);
    WrittenAgo(s, 86400);
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    Append("a2\n");
    ASSERT_EQ(std::rename(path_.c_str(), r.c_str()), 0);
    Append("b1\n");
    std::vector<std::string> lines;
    for (int i = 0; i < 4; ++i) {
      for (std::string& line : Poll(f)) lines.push_back(std::move(line));
    }
    EXPECT_THAT(lines, ElementsAre("a2", "b1"));
    EXPECT_EQ(f.stats().rotations, 1u);
  }
}

// copytruncate (logrotate's cp, then truncate) with lines written after the last poll: they are
// in the copy only. The copy (a rotated name of the path whose first bytes are the file's) is
// read on from where the follower stood, then the file from its start (past the hole a writer
// without O_APPEND leaves); those lines were lost.
TEST_F(FileFollowerTest, CopyTruncateReadsTheLinesNotReadYetFromTheCopy) {
  FileFollower f(path_);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  Append("a2\na3\n");
  {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(path_ + ".1", std::ios::binary) << in.rdbuf();
  }
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  // The writer (no O_APPEND) writes on at its old offset.
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "b1\n", 3, 9), 3);
  ::close(fd);
  EXPECT_THAT(Poll(f), ElementsAre("a2", "a3", "b1"));
  EXPECT_EQ(f.stats().truncations, 1u);
  // Said at the copy's end: a glob that matches the copy tells it holds nothing more.
  std::vector<palisade::v1::FileCheckpoint> truncated = f.TakeTruncated();
  ASSERT_EQ(truncated.size(), 1u);
  EXPECT_EQ(truncated[0].offset(), 9u);
  Append("b2\n");
  EXPECT_THAT(Poll(f), ElementsAre("b2"));
}

// The same while the daemon was down, the copy under a dated name: read on from the
// checkpoint there, then the file from its start.
TEST_F(FileFollowerTest, ACopyTruncateWhileDownIsReadOnFromTheCopy) {
  const std::string copy = path_ + "-20261204";
  std::remove(copy.c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(copy, std::ios::binary) << in.rdbuf();
  }
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  Append("b1\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("a2", "b1"));
  EXPECT_EQ(again.stats().truncations, 1u);
  EXPECT_THAT(again.TakeLost(), IsEmpty());
}

// copytruncate with a writer that did not open the file O_APPEND: it writes on at its old
// offset, and the bytes before are a hole of NULs. The hole is not a line: the first line
// written after it is read whole (it was cut with the NULs and then dropped as their rest).
TEST_F(FileFollowerTest, TheHoleBeforeANonAppendingWriterAfterCopyTruncateIsSkipped) {
  FileFollowerOptions options;
  options.max_line_bytes = 1024;
  FileFollower f(path_, options);
  Append(std::string(20000, 'a') + "\n");
  EXPECT_THAT(Poll(f), ElementsAre(std::string(1024, 'a')));
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  const int fd = ::open(path_.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  const std::string line = "b1\nb2\n";
  ASSERT_EQ(::pwrite(fd, line.data(), line.size(), 20001), static_cast<ssize_t>(line.size()));
  ::close(fd);
  EXPECT_THAT(Poll(f), ElementsAre("b1", "b2"));
  EXPECT_EQ(f.stats().truncations, 1u);
}

// A second copytruncate under the same writer without O_APPEND, between two polls: the file
// starts with a longer hole (the first bytes, NULs, are as fingerprinted) and is longer than
// the offset. It was not seen: the NULs between the old offset and the writer's were read as
// the start of its first line. The bytes where the data began tell it.
TEST_F(FileFollowerTest, ASecondCopyTruncateUnderANonAppendingWriterIsSeen) {
  FileFollowerOptions options;
  options.max_line_bytes = 1024;
  FileFollower f(path_, options);
  Append(std::string(20000, 'a') + "\n");
  EXPECT_THAT(Poll(f), ElementsAre(std::string(1024, 'a')));
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  const int fd = ::open(path_.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  auto write_at = [fd](const std::string& text, off_t at) {
    ASSERT_EQ(::pwrite(fd, text.data(), text.size(), at), static_cast<ssize_t>(text.size()));
  };
  write_at("b1\nb2\n", 20001);
  EXPECT_THAT(Poll(f), ElementsAre("b1", "b2"));
  write_at("b3\n", 20007);  // not polled: in the copy only
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  write_at("c1\n", 20010);
  ::close(fd);
  EXPECT_THAT(Poll(f), ElementsAre("c1"));
  EXPECT_EQ(f.stats().truncations, 2u);
}

// copytruncate while the writer's last line has no newline yet (a2), the writer without
// O_APPEND: the copy's unfinished line is carried into the path's file ahead of its bytes. The
// hole there was read as a line (the NULs were looked for from the carried line's first byte,
// not the file's), cut with b1 as its rest, and the second truncation under it was not seen.
TEST_F(FileFollowerTest, ACarriedOverLineDoesNotHideThePathsHole) {
  FileFollowerOptions options;
  options.max_line_bytes = 1024;
  FileFollower f(path_, options);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  Append("a2");
  {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(path_ + ".1", std::ios::binary) << in.rdbuf();
  }
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto write_at = [fd](const std::string& text, off_t at) {
    ASSERT_EQ(::pwrite(fd, text.data(), text.size(), at), static_cast<ssize_t>(text.size()));
  };
  write_at("b1\nb2\n", 20005);
  EXPECT_THAT(Poll(f), ElementsAre("a2", "b1", "b2"));
  EXPECT_EQ(f.stats().cut_lines, 0u);
  // Truncated again, the writer on at its offset: told by the bytes where the data began.
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  write_at("c1\n", 20020);
  ::close(fd);
  EXPECT_THAT(Poll(f), ElementsAre("c1"));
  EXPECT_EQ(f.stats().truncations, 2u);
}

// A second copytruncate while the first copy is still being drained (a follower behind: a
// flood, a slow sink): logrotate moves the first copy on (PATH.1 to PATH.2) and makes a second
// (PATH.1) of what the path held since the first truncation. That second copy holds lines read
// nowhere else; it is read before the path. The re-query for it was suppressed while a copy was
// drained, and its lines were neither read nor said lost.
TEST_F(FileFollowerTest, ASecondCopyTruncateWhileTheFirstCopyIsDrainedReadsTheSecondCopy) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  auto copytruncate = [this](const std::string& to) {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  };
  FileFollower f(path_);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  Append("a2\na3\n");
  copytruncate(p1);
  WrittenAgo(p1, 100);
  Append("b1\nb2\n");
  std::vector<std::string> lines = Poll(f, 1);  // behind: the first copy being drained
  ASSERT_THAT(lines, ElementsAre("a2"));
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  copytruncate(p1);
  Append("c1\n");
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(f, 1)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a2", "a3", "b1", "b2", "c1"));
  EXPECT_THAT(f.TakeLost(), IsEmpty());
  // Two copytruncates: the second seen by its copy (read after the first), not a rotation.
  EXPECT_EQ(f.stats().truncations, 2u);
  EXPECT_EQ(f.stats().rotations, 0u);
}

// The same with `rotate 1`: logrotate moves the first copy on (PATH.1 to PATH.2), makes the
// second (PATH.1) and removes PATH.2. The first copy, drained through its descriptor, has no
// name left to find the files rotated after it by; they are those written after it. The second
// copy was skipped without a word: the path was read next.
TEST_F(FileFollowerTest, ASecondCopyTruncateWithRotateOneWhileTheFirstIsDrainedReadsIt) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  auto copytruncate = [this](const std::string& to) {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  };
  FileFollower f(path_);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  Append("a2\na3\n");
  copytruncate(p1);
  WrittenAgo(p1, 100);
  Append("b1\nb2\n");
  std::vector<std::string> lines = Poll(f, 1);  // behind: the first copy being drained
  ASSERT_THAT(lines, ElementsAre("a2"));
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  copytruncate(p1);
  ASSERT_EQ(std::remove(p2.c_str()), 0);
  Append("c1\n");
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(f, 1)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a2", "a3", "b1", "b2", "c1"));
  EXPECT_THAT(f.TakeLost(), IsEmpty());
}

// `create` with `rotate 1` while the follower still drains PATH.1 (A, behind): the next
// rotation removes A and renames the path's file (B) to PATH.1. A, read on through its
// descriptor, has no name left; B was written after it and is read before the new path.
TEST_F(FileFollowerTest, ARotationWithRotateOneWhileTheOldFileIsDrainedReadsTheNextOne) {
  const std::string p1 = path_ + ".1";
  FileFollower f(path_);
  Append("a1\n");
  EXPECT_THAT(Poll(f), ElementsAre("a1"));
  Append("a2\na3\n");
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  WrittenAgo(p1, 100);
  Append("b1\nb2\n");
  std::vector<std::string> lines = Poll(f, 1);  // behind: A being drained
  ASSERT_THAT(lines, ElementsAre("a2"));
  ASSERT_EQ(std::remove(p1.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("c1\n");
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(f, 1)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a2", "a3", "b1", "b2", "c1"));
  EXPECT_THAT(f.TakeLost(), IsEmpty());
}

// A file queued to be read after the one being read (rotated after it) that starts with a hole:
// it was truncated in place under a writer without O_APPEND, which wrote on at its old offset,
// before it was renamed away. The hole is no line: its first real line is read whole. It was
// read from byte 0, the NULs a line cut at the cap and the first real line dropped as its rest.
TEST_F(FileFollowerTest, AQueuedFileStartingWithAHoleIsReadFromItsData) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  Append("a1\n");
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  ASSERT_EQ(std::rename(path_.c_str(), p2.c_str()), 0);
  WrittenAgo(p2, 200);
  // B: a sparse file, 20000 bytes of hole before its lines.
  const int fd = ::open(p1.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 20000), 0);
  const std::string b = "b1\nb2\n";
  ASSERT_EQ(::pwrite(fd, b.data(), b.size(), 20000), static_cast<ssize_t>(b.size()));
  ::close(fd);
  WrittenAgo(p1, 100);
  Append("c1\n");
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a2", "b1", "b2", "c1"));
  EXPECT_EQ(again.stats().cut_lines, 0u);
}

// The same with the hole written out as real zeros (a non-sparse copy: cp without
// --sparse, a file system without SEEK_DATA), longer than the 1 MiB DataFrom scans: the zeros
// past the scan are skipped too, and the first real line is read whole. They were read as one
// long line, cut at the cap and counted, and the first real line dropped as its rest.
TEST_F(FileFollowerTest, AQueuedFileStartingWithMoreThanAMebibyteOfZerosIsReadFromItsData) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  Append("a1\n");
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  ASSERT_EQ(std::rename(path_.c_str(), p2.c_str()), 0);
  WrittenAgo(p2, 200);
  Append(std::string(3 << 20, '\0') + "b1\nb2\n", p1);  // zeros written: no hole
  WrittenAgo(p1, 100);
  Append("c1\n");
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 40; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a2", "b1", "b2", "c1"));
  EXPECT_EQ(again.stats().cut_lines, 0u);
}

// A checkpoint taken after a truncation's hole, before the first line after it was complete,
// is at that line's start with only NULs before it: a follower resumed from it reads the line
// whole. The NUL before it was taken for the inside of a cut line, and the line dropped.
TEST_F(FileFollowerTest, AResumeAtTheEndOfATruncationsHoleReadsTheLineAfterIt) {
  FileFollowerOptions options;
  options.max_line_bytes = 1024;
  palisade::v1::FileCheckpoint checkpoint;
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  {
    FileFollower f(path_, options);
    Append(std::string(20000, 'a') + "\n");
    EXPECT_THAT(Poll(f), ElementsAre(std::string(1024, 'a')));
    ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
    ASSERT_EQ(::pwrite(fd, "b1", 2, 20001), 2);  // the writer's offset; no newline yet
    EXPECT_THAT(Poll(f), IsEmpty());
    checkpoint = f.checkpoint();
  }
  EXPECT_EQ(checkpoint.offset(), 20001u);
  ASSERT_EQ(::pwrite(fd, "\nb2\n", 4, 20003), 4);
  ::close(fd);
  FileFollower again(path_, options, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("b1", "b2"));
}

// A checkpoint at the end of more than 1 MiB of real zeros (a non-sparse copy read from its
// data, queued after the file the follower read): resumed there, the line after them is read
// whole. The check that only NULs lie before it scanned 1 MiB, took the rest for a cut line's
// and dropped the line.
TEST_F(FileFollowerTest, AResumeAfterMoreThanAMebibyteOfZerosReadsTheLineAfterThem) {
  constexpr size_t kZeros = 3 << 20;
  Append(std::string(kZeros, '\0') + "b1");  // zeros written: no hole
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Poll(f, 1);                   // opens it (what it reads of the zeros does not matter)
    checkpoint = f.checkpoint();  // the file's identity; the position set below
  }
  ASSERT_NE(checkpoint.inode(), 0u);
  checkpoint.set_offset(kZeros);
  Append("\nb2\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("b1", "b2"));
}

// Resumed into a truncation's hole, then truncated again, the writer (no O_APPEND) writing on
// further out: the first bytes are NULs before and after, so only the bytes where the data began
// after the first hole tell the second truncation. They were not recorded on a resume into the
// hole: the second hole was read as a line, cut, and the line after it dropped.
TEST_F(FileFollowerTest, ASecondTruncationAfterAResumeIntoAHoleIsSeen) {
  FileFollowerOptions options;
  options.max_line_bytes = 1024;
  palisade::v1::FileCheckpoint checkpoint;
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  {
    FileFollower f(path_, options);
    Append(std::string(20000, 'a') + "\n");
    EXPECT_THAT(Poll(f), ElementsAre(std::string(1024, 'a')));
    ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
    ASSERT_EQ(::pwrite(fd, "b1", 2, 20001), 2);  // the writer's offset; no newline yet
    EXPECT_THAT(Poll(f), IsEmpty());
    checkpoint = f.checkpoint();
  }
  ASSERT_EQ(::pwrite(fd, "\nb2\n", 4, 20003), 4);
  FileFollower again(path_, options, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("b1", "b2"));
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  ASSERT_EQ(::pwrite(fd, "c1\nc2\n", 6, 22000), 6);  // 2 KiB of NULs before it
  ::close(fd);
  EXPECT_THAT(Poll(again), ElementsAre("c1", "c2"));
  EXPECT_EQ(again.stats().cut_lines, 0u);
}

// A restart while a copytruncate's copy (PATH.1) is drained, the writer without O_APPEND: the
// follower resumes in the copy, then reads the path, which starts with the hole the truncation
// left (the writer wrote on at its old offset). The hole is no line: the first line after it is
// read whole. It was read from byte 0, the NULs and that line one line, cut at the cap.
TEST_F(FileFollowerTest, ARestartWhileACopyIsDrainedSkipsThePathsHole) {
  const std::string p1 = path_ + ".1";
  FileFollowerOptions options;
  options.max_line_bytes = 64;
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  std::string text;
  std::vector<std::string> want;
  for (int i = 1; i <= 40; ++i) {
    absl::StrAppend(&text, "a", i, "\n");
    if (i > 1) want.push_back(absl::StrCat("a", i));
  }
  ASSERT_EQ(::pwrite(fd, text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_, options);
    EXPECT_THAT(Poll(f, 1), ElementsAre("a1"));
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(p1, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
    ASSERT_EQ(::pwrite(fd, "b1\nb2\n", 6, static_cast<off_t>(text.size())), 6);
    EXPECT_THAT(Poll(f, 1), ElementsAre("a2"));  // in the copy
    checkpoint = f.checkpoint();
  }
  ::close(fd);
  FileFollower again(path_, options, checkpoint);
  std::vector<std::string> lines = {"a2"};
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  want.push_back("b1");
  want.push_back("b2");
  EXPECT_THAT(lines, ::testing::ElementsAreArray(want));
  EXPECT_EQ(again.stats().cut_lines, 0u);
}

// Plain copytruncate (no compression), down across two rotations: A's copy is PATH.2 (a1 a2),
// B's copy PATH.1 (b1 b2), the path (A's inode, truncated twice) holds c1. A's copy is read on
// from the checkpoint, then B's copy, then the path. B's copy was skipped (the re-query after a
// copy was suppressed), its lines neither read nor said lost.
TEST_F(FileFollowerTest, TwoCopyTruncatesWhileDownReadEveryCopy) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  std::remove(p2.c_str());
  auto copytruncate = [this](const std::string& to) {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  };
  Append("a1\n");
  WrittenAgo(path_, 300);
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  copytruncate(p1);
  Append("b1\nb2\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  WrittenAgo(p2, 200);
  copytruncate(p1);
  WrittenAgo(p1, 100);
  Append("c1\n");
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 10; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a2", "b1", "b2", "c1"));
  EXPECT_THAT(again.TakeLost(), IsEmpty());
  EXPECT_EQ(again.stats().truncations, 2u);
  EXPECT_EQ(again.stats().rotations, 0u);
}

TEST_F(FileFollowerTest, LongLinesAreCutAndTheNextOneSurvives) {
  FileFollowerOptions options;
  options.max_line_bytes = 100;
  options.read_bytes = 4096;
  FileFollower f(path_, options);
  Append(std::string(10'000, 'x'));
  EXPECT_THAT(Poll(f), ElementsAre(std::string(100, 'x')));  // cut before its newline came
  Append(std::string(50, 'x') + "\nnext\n" + std::string(300, 'y') + "\n");
  EXPECT_THAT(Poll(f), ElementsAre("next", std::string(100, 'y')));
  EXPECT_EQ(f.stats().cut_lines, 2u);
}

TEST_F(FileFollowerTest, ResumesFromACheckpointExactly) {
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\na2\na3\n");
    EXPECT_THAT(Poll(f, 2), ElementsAre("a1", "a2"));
    checkpoint = f.checkpoint();
  }
  Append("a4\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("a3", "a4"));
}

TEST_F(FileFollowerTest, ResumesInTheRotatedFileThenTheNewOne) {
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\na2\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1", "a2"));
    checkpoint = f.checkpoint();
  }
  // While the daemon was down: two more lines, a rotation, a new file.
  Append("a3\na4\n");
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  Append("b1\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("a3", "a4", "b1"));
  EXPECT_EQ(again.stats().rotations, 1u);
}

// Rotated while the daemon was down under a dated name (dateext: PATH-YYYYMMDD): the
// checkpoint's file is found there and read on from it, then the new file from its start. Only
// PATH.1 was looked at: the lines after the checkpoint were lost, counted as a rotation only.
TEST_F(FileFollowerTest, ResumesInARotatedFileOfAnyNameThenTheNewOne) {
  std::remove((path_ + "-20261204").c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("l1\nl2\n");
    EXPECT_THAT(Poll(f), ElementsAre("l1", "l2"));
    checkpoint = f.checkpoint();
  }
  Append("l3\n");
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + "-20261204").c_str()), 0);
  Append("l4\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("l3", "l4"));
  EXPECT_EQ(again.stats().rotations, 1u);
  EXPECT_THAT(again.TakeLost(), IsEmpty());
}

// Rotated twice while the daemon was down: the checkpoint's file is now PATH.2 and the file
// written between the rotations PATH.1. Both are read, oldest first, then the new file; PATH.3
// (older than the checkpoint's file) is not. PATH.1 was skipped, its lines lost unsaid.
TEST_F(FileFollowerTest, ResumesThroughEveryFileRotatedSinceTheCheckpoint) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2", p3 = path_ + ".3";
  for (const std::string& p : {p2, p3}) std::remove(p.c_str());
  // Last written: PATH.3 first, then the checkpoint's file, then the middle one.
  Append("w1\n", p3);
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("b1\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("c1\n");
  WrittenAgo(p3, 300);
  WrittenAgo(p2, 200);
  WrittenAgo(p1, 100);
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("a2", "b1", "c1"));
  EXPECT_EQ(again.stats().rotations, 2u);
  EXPECT_THAT(again.TakeLost(), IsEmpty());
  // Each let go of as it was read to its end: the checkpoint's file, then the middle one.
  std::vector<palisade::v1::FileCheckpoint> let_go = again.TakeLetGo();
  ASSERT_EQ(let_go.size(), 2u);
  EXPECT_EQ(let_go[0].inode(), checkpoint.inode());
  EXPECT_EQ(let_go[1].offset(), 3u);
  Append("c2\n");
  EXPECT_THAT(Poll(again), ElementsAre("c2"));
}

// The same with the clock stepped back while the daemon was down (an hour, NTP after a drift
// forward): the middle file was last written "before" the checkpoint's, by the clock. Which
// files were rotated after the checkpoint's is told by the rotated names, logrotate's order
// (PATH.1 after PATH.2, a later date after an earlier), not by their last writes: the middle
// file was skipped, its lines lost unsaid. The older file stays unread, whatever its time.
TEST_F(FileFollowerTest, AClockSteppedBackWhileDownHidesNoFileRotatedAfterTheCheckpoint) {
  for (const auto& [older, left, middle] : std::vector<std::array<std::string, 3>>{
           {".3", ".2", ".1"}, {"-20261203", "-20261204", "-20261205"}}) {
    SCOPED_TRACE(middle);
    const std::string o = path_ + older, l = path_ + left, m = path_ + middle;
    for (const char* s : {"", ".1", ".2", ".3", "-20261203", "-20261204", "-20261205"}) {
      std::remove((path_ + s).c_str());
    }
    Append("w1\n", o);
    palisade::v1::FileCheckpoint checkpoint;
    {
      FileFollower f(path_);
      Append("a1\n");
      EXPECT_THAT(Poll(f), ElementsAre("a1"));
      checkpoint = f.checkpoint();
    }
    Append("a2\n");
    ASSERT_EQ(std::rename(path_.c_str(), l.c_str()), 0);
    Append("b1\n");
    ASSERT_EQ(std::rename(path_.c_str(), m.c_str()), 0);
    Append("c1\n");
    WrittenAgo(l, 100);   // the clock an hour ahead then
    WrittenAgo(m, 3700);  // stepped back: written after, dated before
    WrittenAgo(path_, 3600);
    WrittenAgo(o, 200);   // written before the checkpoint's file, dated after the middle one
    FileFollower again(path_, {}, checkpoint);
    EXPECT_THAT(Poll(again), ElementsAre("a2", "b1", "c1"));
    EXPECT_EQ(again.stats().rotations, 2u);
    EXPECT_THAT(again.TakeLost(), IsEmpty());
  }
}

// Rotated names of two schemes side by side (PATH.N left from before a switch to dateext) are
// ordered by their last writes alone: ordered by names within a scheme and by times across,
// the files went round, read again and again.
TEST_F(FileFollowerTest, RotatedNamesOfTwoSchemesAreReadOnceEach) {
  for (const char* s : {".1", ".2", "-20261204", "-20261205"}) std::remove((path_ + s).c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + "-20261204").c_str()), 0);
  Append("n1\n", path_ + ".1");
  Append("n2\n", path_ + ".2");
  Append("d5\n", path_ + "-20261205");
  Append("c1\n");
  WrittenAgo(path_ + "-20261204", 500);
  WrittenAgo(path_ + ".2", 400);
  WrittenAgo(path_ + "-20261205", 300);
  WrittenAgo(path_ + ".1", 600);  // by its name after .2, by its time before everything
  WrittenAgo(path_, 100);
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("a2", "n2", "d5", "c1"));
}

// The same under dated names (dateext): the checkpoint's file is PATH-20261204, the middle one
// PATH-20261205.
TEST_F(FileFollowerTest, ResumesThroughEveryFileRotatedSinceTheCheckpointUnderDatedNames) {
  const std::string d4 = path_ + "-20261204", d5 = path_ + "-20261205";
  for (const std::string& p : {d4, d5}) std::remove(p.c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  ASSERT_EQ(std::rename(path_.c_str(), d4.c_str()), 0);
  Append("b1\n");
  ASSERT_EQ(std::rename(path_.c_str(), d5.c_str()), 0);
  Append("c1\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("a2", "b1", "c1"));
  EXPECT_EQ(again.stats().rotations, 2u);
}

// Debian's nginx/apache logrotate (daily, compress, delaycompress), palisaded down across two
// rotations: the checkpoint's file A is now PATH.2.gz, B (a whole day) PATH.1, C the path. The
// resume read C alone and said the lines after the checkpoint were lost, yet B was there (a
// glob leaves PATH.1 out by its name: nothing read it). Only A's rest is lost: B, then C.
TEST_F(FileFollowerTest, ACheckpointCompressedAwayStillReadsTheFilesRotatedAfterIt) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2", p3 = path_ + ".3";
  for (const std::string& p : {p2, p3, p2 + ".gz"}) std::remove(p.c_str());
  Append("w1\n", p3);  // rotated before the checkpoint's file: not read
  WrittenAgo(p3, 400);
  Append("a1\n");
  WrittenAgo(path_, 300);  // so the files written after it are later, however fast this runs
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  // logrotate's order: rename, create, (the writer reopens), then gzip the one before.
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("b1\nb2\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("c1\n");
  Compress(p2);
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("b1", "b2", "c1"));
  std::vector<palisade::v1::FileCheckpoint> lost = again.TakeLost();  // A's rest (a2): gone
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].inode(), checkpoint.inode());
  EXPECT_EQ(again.stats().rotations, 2u);
  Append("c2\n");
  EXPECT_THAT(Poll(again), ElementsAre("c2"));
}

// The same with the clock stepped back an hour while the daemon was down: B and the path were
// last written "before" the checkpoint's file by the clock, and B, told by its time alone, was
// skipped unread and unsaid. The path, a file written after the checkpoint's (another inode,
// holding lines), dated before it says the clock went back: the files under a rotated name
// left uncompressed are then those rotated after it (logrotate compresses and removes the
// oldest first), read oldest first by their names. The file before A (compressed) stays unread.
TEST_F(FileFollowerTest, ACheckpointCompressedAwayWithTheClockSteppedBackReadsTheFilesAfterIt) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2", p3 = path_ + ".3";
  for (const std::string& p : {p2, p3, p2 + ".gz", p3 + ".gz"}) std::remove(p.c_str());
  Append("w1\n", p3);
  Compress(p3);
  Append("a1\n");
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  ASSERT_NE(checkpoint.written_ns(), 0);
  Append("a2\n");
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("b1\nb2\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("c1\n");
  Compress(p2);
  WrittenAgo(p1, 3700);  // written after the checkpoint, by a clock an hour behind
  WrittenAgo(path_, 3600);
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("b1", "b2", "c1"));
  EXPECT_EQ(again.TakeLost().size(), 1u);  // A's rest (a2)
  EXPECT_EQ(again.queued_after_lost(), 1u);
}

// compress without delaycompress, down across two rotations: A (the checkpoint's file) is
// PATH.1.gz and gone, B (b1 b2) is PATH.1, and the path is a new file D that ext4 gave A's freed
// inode (created after gzip removed A). The path holding the checkpoint's inode with other first
// bytes looks like a truncation: no copy of A is found, yet B, rotated after A, must be read
// before the path, and A's rest (a2) said lost. Which inode a new file gets is the file
// system's choice (tmpfs and btrfs do not reuse a freed one at once), so the same state is made
// without reuse: A truncated in place and D's content written to it.
TEST_F(FileFollowerTest, ACheckpointCompressedAwayWithItsInodeReusedReadsTheFilesAfterIt) {
  const std::string p1 = path_ + ".1";
  std::remove((p1 + ".gz").c_str());
  std::remove(p1.c_str());
  Append("a1\n");
  WrittenAgo(path_, 300);  // so the files written after it are later, however fast this runs
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  Append("b1\n", p1);      // B, rotated to PATH.1
  // D at the path with A's inode: A emptied in place, D's content written.
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  Append("b2\n", p1);  // the writer on B until its reopen
  Append("c1\n");
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  ASSERT_EQ(st.st_ino, checkpoint.inode());
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("b1", "b2", "c1"));
  std::vector<palisade::v1::FileCheckpoint> lost = again.TakeLost();  // A's rest (a2): gone
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].offset(), 3u);
  EXPECT_EQ(again.queued_after_lost(), 1u);
}

// The path still holding the checkpoint's inode (truncated in place) and the files rotated
// after it queued at the resume: a rotation while those are drained moves the path's file to
// PATH.1 and makes a new one. The path's file is read before the new one (a review found it
// skipped: after the queued files the follower went straight to the new path).
TEST_F(FileFollowerTest, AResumeThroughQueuedFilesAfterATruncationReadsARotationMadeMeanwhile) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2", p3 = path_ + ".3";
  for (const std::string& p : {p1, p1 + ".gz", p2, p3}) std::remove(p.c_str());
  Append("a1\n");
  WrittenAgo(path_, 300);
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("b1\nb2\nb3\n", p2);  // B and C, rotated after the checkpoint
  WrittenAgo(p2, 200);
  Append("c1\n", p1);
  WrittenAgo(p1, 100);
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);  // the path: A's inode, D's content
  Append("d1\n");
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines = Poll(again, 1);  // behind: B being drained
  ASSERT_THAT(lines, ElementsAre("b1"));
  // logrotate runs: .2 (B) to .3, .1 (C) to .2, the path (D) to .1, then a new path.
  ASSERT_EQ(std::rename(p2.c_str(), p3.c_str()), 0);
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("e1\n");
  for (int i = 0; i < 12; ++i) {
    for (std::string& line : Poll(again, 1)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("b1", "b2", "b3", "c1", "d1", "e1"));
}

// copytruncate while down with nothing written after the checkpoint: the copy (PATH.1) holds
// exactly the checkpoint's offset, so nothing of the file's is missing: not said lost.
TEST_F(FileFollowerTest, ACopyTruncateWhileDownWithNothingAfterTheCheckpointLosesNothing) {
  const std::string p1 = path_ + ".1";
  for (const std::string& p : {p1, p1 + ".gz", path_ + ".2"}) std::remove(p.c_str());
  Append("a1\n");
  WrittenAgo(path_, 300);
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(p1, std::ios::binary) << in.rdbuf();
  }
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  Append("b1\n");
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("b1"));
  EXPECT_THAT(again.TakeLost(), IsEmpty());
}

// copytruncate with compress and delaycompress, down across two rotations: A's copy (a1 a2) is
// PATH.2.gz, B's copy (b1 b2) PATH.1, the path (truncated twice, A's inode still) holds c1. No
// copy of A is found; B's copy, written after A's checkpoint, is read before the path, and A's
// rest (a2) is said lost. Without delaycompress (A's copy PATH.1.gz at once) the loss is said.
TEST_F(FileFollowerTest, ACopytruncatedCheckpointWhoseCopyWasCompressedReadsTheCopiesAfterIt) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  for (const std::string& p : {p2, p2 + ".gz", p1 + ".gz"}) std::remove(p.c_str());
  auto copytruncate = [this](const std::string& to) {
    std::ifstream in(path_, std::ios::binary);
    std::ofstream(to, std::ios::binary) << in.rdbuf();
    ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  };
  Append("a1\n");
  WrittenAgo(path_, 300);
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  copytruncate(p1);
  Append("b1\nb2\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  copytruncate(p1);
  Compress(p2);
  Append("c1\n");
  {
    FileFollower again(path_, {}, checkpoint);
    std::vector<std::string> lines;
    for (int i = 0; i < 5; ++i) {
      for (std::string& line : Poll(again)) lines.push_back(std::move(line));
    }
    EXPECT_THAT(lines, ElementsAre("b1", "b2", "c1"));
    EXPECT_EQ(again.TakeLost().size(), 1u);
  }
  // No delaycompress, down one rotation: A's copy compressed at once, nothing after it to read
  // but the path; its rest (a2 a3) lost, and said.
  std::remove(p1.c_str());
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  Append("a1\n");
  WrittenAgo(path_, 300);
  {
    FileFollower f(path_);
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\na3\n");
  copytruncate(p1);
  Compress(p1);
  Append("b1\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("b1"));
  EXPECT_EQ(again.TakeLost().size(), 1u);
  EXPECT_EQ(again.queued_after_lost(), 0u);
}

// The same without delaycompress: A is PATH.1.gz at once, C the path. The file rotated before A
// (read before the checkpoint, left uncompressed here) is last written no later than A was at
// the checkpoint: not read again. Nothing but C is read.
TEST_F(FileFollowerTest, ACheckpointCompressedAwayAtOnceReadsNothingTwice) {
  const std::string p1 = path_ + ".1", p2 = path_ + ".2";
  for (const std::string& p : {p2, p1 + ".gz"}) std::remove(p.c_str());
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("o1\n");
    EXPECT_THAT(Poll(f), ElementsAre("o1"));
    ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
    Append("a1\n");  // the same tick of the file clock as o1, as like as not
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  Append("a2\n");
  ASSERT_EQ(std::rename(p1.c_str(), p2.c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), p1.c_str()), 0);
  Append("c1\n");
  Compress(p1);
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 5; ++i) {
    for (std::string& line : Poll(again)) lines.push_back(std::move(line));
  }
  EXPECT_THAT(lines, ElementsAre("c1"));
  EXPECT_EQ(again.TakeLost().size(), 1u);
}

// A checkpoint whose file is nowhere to be found (removed, or rotated under a name that does not
// start with the path's) is given up, and said: TakeLost gives it once.
TEST_F(FileFollowerTest, ACheckpointWhoseFileIsGoneIsGivenUpAndSaid) {
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("l1\nl2\n");
    EXPECT_THAT(Poll(f), ElementsAre("l1", "l2"));
    checkpoint = f.checkpoint();
  }
  Append("l3\n");
  // Moved where no rotated name is (kept: its inode is not reused by the new file).
  const std::string away = absl::StrCat(std::getenv("TEST_TMPDIR"), "/away.log");
  ASSERT_EQ(std::rename(path_.c_str(), away.c_str()), 0);
  Append("b1\n");
  FileFollower again(path_, {}, checkpoint);
  EXPECT_THAT(Poll(again), ElementsAre("b1"));
  std::vector<palisade::v1::FileCheckpoint> lost = again.TakeLost();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].offset(), 6u);
  EXPECT_EQ(lost[0].inode(), checkpoint.inode());
  EXPECT_THAT(again.TakeLost(), IsEmpty());
}

TEST_F(FileFollowerTest, AReplacedOrTruncatedFileIsReadFromItsStart) {
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\na2\na3\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1", "a2", "a3"));
    checkpoint = f.checkpoint();
  }
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "b1\n";  // same inode, shorter
  {
    FileFollower again(path_, {}, checkpoint);
    EXPECT_THAT(Poll(again), ElementsAre("b1"));
    EXPECT_EQ(again.stats().truncations, 1u);
  }
  // Same length and inode but other bytes at the start (the fingerprint tells): from the start.
  checkpoint.set_offset(3);
  std::ofstream(path_, std::ios::trunc | std::ios::binary) << "c1\nc2\n";
  FileFollower other(path_, {}, checkpoint);
  EXPECT_THAT(Poll(other), ElementsAre("c1", "c2"));
}

// An idle follower (caught up, nothing new) holds no read buffer and grows none at each poll:
// before 2026-12-07 every poll zero-filled read_bytes (256 KiB) into its pending buffer and
// kept it, so each of a glob's followers held at least that.
TEST_F(FileFollowerTest, AnIdleFollowerHoldsNoReadBuffer) {
  Append("one\ntwo\n");
  FileFollower f(path_);
  EXPECT_THAT(Poll(f), ElementsAre("one", "two"));
  EXPECT_LT(f.buffer_bytes(), 4096u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(Poll(f), IsEmpty());
    EXPECT_LT(f.buffer_bytes(), 4096u) << "poll " << i;
  }
  // A partial line waits in a buffer of its size, not of a read's.
  Append("thr");
  EXPECT_THAT(Poll(f), IsEmpty());
  EXPECT_LT(f.buffer_bytes(), 4096u);
  Append("ee\n");
  EXPECT_THAT(Poll(f), ElementsAre("three"));
}

// A long record (a JSON format reads one whole up to 8 MiB) is not held on to once handed out.
TEST_F(FileFollowerTest, ALongLineDoesNotKeepItsBuffer) {
  FileFollowerOptions options;
  options.max_line_bytes = 4 << 20;
  options.max_batch_bytes = 8 << 20;
  Append(std::string(3 << 20, 'x') + "\nshort\npart");
  FileFollower f(path_, options);
  std::vector<std::string> lines = Poll(f);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].size(), size_t{3 << 20});
  EXPECT_EQ(lines[1], "short");
  EXPECT_LT(f.buffer_bytes(), 4096u);  // "part" waits, in a buffer of its size
  Append("ial\n");
  EXPECT_THAT(Poll(f), ElementsAre("partial"));
  EXPECT_LT(f.buffer_bytes(), 4096u);
}

// A path that is a symbolic link is followed only when the follower may (a configured path:
// follow_owned_symlink) and the link is root's or the daemon's own: whoever owns a log directory
// could otherwise point a log's name at a secret the daemon can read (its API token) and have
// it read as log lines.
TEST_F(FileFollowerTest, ASymlinkIsFollowedOnlyWhenAllowedAndOwnedByRootOrTheDaemon) {
  const std::string secret = path_ + ".secret";
  std::ofstream(secret, std::ios::trunc) << "token\n";
  std::remove(path_.c_str());
  ASSERT_EQ(::symlink(secret.c_str(), path_.c_str()), 0);
  {
    FileFollower glob(path_);  // a glob's match: no link followed
    std::vector<std::string> lines;
    absl::StatusOr<size_t> n = glob.Poll(10, &lines);
    EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition) << n.status();
    EXPECT_THAT(std::string(n.status().message()), ::testing::HasSubstr("symbolic link"));
    EXPECT_THAT(lines, IsEmpty());
  }
  FileFollowerOptions named;
  named.follow_owned_symlink = true;
  {
    FileFollower f(path_, named);  // the tests run as root: the link is the daemon's own
    EXPECT_THAT(Poll(f), ElementsAre("token"));
  }
  // A link of another user's is not followed, even for a configured path.
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give the link another owner";
  ASSERT_EQ(::lchown(path_.c_str(), 12345, 12345), 0);
  FileFollower f(path_, named);
  std::vector<std::string> lines;
  absl::StatusOr<size_t> n = f.Poll(10, &lines);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition) << n.status();
  EXPECT_THAT(lines, IsEmpty());
  std::remove(path_.c_str());
}

// A rotated name of the path (PATH.1) that is a symbolic link is no rotated file: the files
// rotated after a checkpoint given up are read first, and a link there was read as one of them.
TEST_F(FileFollowerTest, ARotatedNameThatIsASymlinkIsNotRead) {
  palisade::v1::FileCheckpoint checkpoint;
  {
    FileFollower f(path_);
    Append("a1\n");
    EXPECT_THAT(Poll(f), ElementsAre("a1"));
    checkpoint = f.checkpoint();
  }
  ASSERT_GT(checkpoint.written_ns(), 0);
  // The checkpoint's file gone from every name the follower looks at (kept elsewhere: its
  // inode is not reused by the files made next).
  const std::string kept = path_ + "_kept";
  ASSERT_EQ(std::rename(path_.c_str(), kept.c_str()), 0);
  const std::string secret = path_ + "_secret";
  std::ofstream(secret, std::ios::trunc) << "token\n";
  WrittenAgo(secret, -60);  // written after the checkpoint, as a file rotated after it would be
  ASSERT_EQ(::symlink(secret.c_str(), (path_ + ".1").c_str()), 0);
  Append("b1\n");
  WrittenAgo(path_, -120);
  FileFollower again(path_, {}, checkpoint);
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<size_t> n = again.Poll(100, &lines);
    EXPECT_TRUE(n.ok()) << n.status();
  }
  EXPECT_THAT(lines, ElementsAre("b1"));
  std::remove((path_ + ".1").c_str());
}

// A CRLF line of exactly the cap whose read ends just after its "\r" (its "\n" not written
// yet) waits for its newline: it was handed out as cut (ship --follow's cap is the pipeline's).
TEST_F(FileFollowerTest, ACrlfLineOfExactlyTheCapEndingAtItsCrIsNotCut) {
  FileFollowerOptions options;
  options.max_line_bytes = 64;  // the least a follower takes
  const std::string line(64, 'x');
  Append(line + "\r");
  FileFollower f(path_, options);
  EXPECT_THAT(Poll(f), IsEmpty());
  Append("\nnext\r\n");
  EXPECT_THAT(Poll(f), ElementsAre(line, "next"));
  EXPECT_EQ(f.stats().cut_lines, 0u);
}

// A path under a loop of directory links fails to open with ELOOP: no link at the path itself,
// so not said to be one.
TEST_F(FileFollowerTest, ADirectoryLinkLoopIsNotCalledALinkAtThePath) {
  const std::string loop = path_ + ".loop";
  std::remove(loop.c_str());
  ASSERT_EQ(::symlink(loop.c_str(), loop.c_str()), 0);
  FileFollowerOptions named;
  named.follow_owned_symlink = true;
  for (bool owned : {false, true}) {
    FileFollower f(loop + "/app.log", owned ? named : FileFollowerOptions());
    std::vector<std::string> lines;
    absl::StatusOr<size_t> n = f.Poll(10, &lines);
    ASSERT_FALSE(n.ok());
    EXPECT_THAT(std::string(n.status().message()),
                ::testing::Not(::testing::HasSubstr("a symbolic link")));
    EXPECT_THAT(std::string(n.status().message()), ::testing::HasSubstr(std::strerror(ELOOP)));
  }
  std::remove(loop.c_str());
}


// A follower given the directory its path is trusted below (a glob's literal part) opens each
// directory under it without following another user's link: the file's directory swapped for
// such a link to a secret's directory looked like a rotation, and the secret was read.
TEST_F(FileFollowerTest, ADirectorySwappedForAnotherUsersLinkIsNotFollowed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a link another owner";
  const std::string root = path_ + ".d";
  ASSERT_EQ(std::system(absl::StrCat("rm -rf ", root, " && mkdir -p ", root, "/www/t1/logs ",
                                     root, "/secrets")
                            .c_str()),
            0);
  Append("l1\n", root + "/www/t1/logs/cf_token");
  Append("SECRET\n", root + "/secrets/cf_token");
  FileFollowerOptions options;
  options.trusted_dir = root + "/www";
  FileFollower f(root + "/www/t1/logs/cf_token", options);
  EXPECT_THAT(Poll(f), ElementsAre("l1"));
  ASSERT_EQ(::rename((root + "/www/t1/logs").c_str(), (root + "/www/t1/x").c_str()), 0);
  ASSERT_EQ(::symlink((root + "/secrets").c_str(), (root + "/www/t1/logs").c_str()), 0);
  ASSERT_EQ(::lchown((root + "/www/t1/logs").c_str(), 12345, 12345), 0);
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> lines;
    (void)f.Poll(10, &lines);
    EXPECT_THAT(lines, IsEmpty());
  }
  // Root's own link there is followed.
  ASSERT_EQ(::lchown((root + "/www/t1/logs").c_str(), 0, 0), 0);
  FileFollower trusted(root + "/www/t1/logs/cf_token", options);
  EXPECT_THAT(Poll(trusted), ElementsAre("SECRET"));
}


// Below a trusted directory the path's own link of root's or the daemon's user is followed
// through a chain of such links (Kubernetes: containers/x.log -> pods/.../0.log -> docker's).
TEST_F(FileFollowerTest, BelowATrustedDirectoryAChainOfOwnedLinksIsFollowed) {
  const std::string root = path_ + ".k";
  ASSERT_EQ(std::system(absl::StrCat("rm -rf ", root, " && mkdir -p ", root, "/containers ",
                                     root, "/pods ", root, "/docker")
                            .c_str()),
            0);
  Append("c1\n", root + "/docker/x-json.log");
  ASSERT_EQ(::symlink((root + "/docker/x-json.log").c_str(), (root + "/pods/0.log").c_str()), 0);
  ASSERT_EQ(::symlink((root + "/pods/0.log").c_str(), (root + "/containers/x.log").c_str()), 0);
  FileFollowerOptions options;
  options.trusted_dir = root;
  options.follow_owned_symlink = true;
  FileFollower f(root + "/containers/x.log", options);
  EXPECT_THAT(Poll(f), ElementsAre("c1"));
}

}  // namespace
}  // namespace palisade
