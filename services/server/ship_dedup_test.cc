#include "services/server/ship_dedup.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using palisade::v1::BatchAck;
using palisade::v1::LogBatch;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::palisade::testing::StatusIs;

// The one client of a daemon without api.clients.
constexpr absl::string_view kAnyone = "";

// Records what reached the pipeline, line by line.
struct FakePipeline {
  std::vector<std::string> lines;
  bool fail = false;
  ShipDedup::Process process() {
    return [this](const LogBatch& batch) -> absl::StatusOr<BatchAck> {
      if (fail) return absl::UnavailableError("pipeline down");
      BatchAck ack;
      ack.set_sequence(batch.sequence());
      for (const auto& r : batch.records()) lines.push_back(r.line());
      ack.set_accepted(static_cast<uint32_t>(batch.records_size()));
      return ack;
    };
  }
};

// A batch of `lines` from `path`'s file `inode`, each line `len` bytes long plus its newline,
// the first one starting at `start`.
LogBatch Batch(const std::vector<std::string>& lines, uint64_t start, uint64_t inode = 7,
               const std::string& path = "/var/log/auth.log", const std::string& shipper = "web-1",
               const std::string& fingerprint = "aa", uint32_t fingerprint_bytes = 256) {
  static uint64_t sequence = 0;
  LogBatch b;
  b.set_sequence(++sequence);
  b.set_source("web-1");
  b.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  auto* o = b.mutable_origin();
  o->set_shipper_id(shipper);
  o->set_path(path);
  o->set_device(1);
  o->set_inode(inode);
  o->set_fingerprint(fingerprint);
  o->set_fingerprint_bytes(fingerprint_bytes);
  o->set_start_offset(start);
  uint64_t at = start;
  for (const auto& l : lines) {
    b.add_records()->set_line(l);
    at += l.size() + 1;
    o->add_line_ends(at);
  }
  o->set_end_offset(at);
  return b;
}

class ShipDedupTest : public ::testing::Test {
 protected:
  prometheus::Registry registry_;
  FakePipeline pipeline_;
};

TEST_F(ShipDedupTest, ASentAgainBatchIsAckedNotCounted) {
  ShipDedup dedup({}, registry_);
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"a1", "a2"}, 0), pipeline_.process()).ok());
  // The same batch again (its ack was lost): acked with its sequence, nothing processed.
  LogBatch again = Batch({"a1", "a2"}, 0);
  absl::StatusOr<BatchAck> ack = dedup.Take(kAnyone, again, pipeline_.process());
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->sequence(), again.sequence());
  EXPECT_EQ(ack->accepted(), 0u);
  EXPECT_THAT(pipeline_.lines, ElementsAre("a1", "a2"));
  EXPECT_EQ(dedup.duplicate_lines(), 2u);
}

TEST_F(ShipDedupTest, APartlyTakenBatchGoesOnWithItsNewLines) {
  ShipDedup dedup({}, registry_);
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"a1", "a2"}, 0), pipeline_.process()).ok());
  // A restarted shipper batches differently: from its older ack (0) up to new lines.
  absl::StatusOr<BatchAck> ack =
      dedup.Take(kAnyone, Batch({"a1", "a2", "a3"}, 0), pipeline_.process());
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->accepted(), 1u);
  EXPECT_THAT(pipeline_.lines, ElementsAre("a1", "a2", "a3"));
  EXPECT_EQ(dedup.duplicate_lines(), 2u);
  // And past the end: everything new.
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"a4"}, 9), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("a1", "a2", "a3", "a4"));
}

TEST_F(ShipDedupTest, ARotatedFileIsAnotherFileAndTheOldOneIsStillKnown) {
  ShipDedup dedup({}, registry_);
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"old1", "old2"}, 0, /*inode=*/7), pipeline_.process()).ok());
  // logrotate renamed it and created a new one (another inode): its first lines are new.
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"new1"}, 0, /*inode=*/8), pipeline_.process()).ok());
  // A shipper restarted from an older ack drains the rotated file (PATH.1) again: dropped.
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"old1", "old2"}, 0, /*inode=*/7), pipeline_.process()).ok());
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"new1", "new2"}, 0, /*inode=*/8), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("old1", "old2", "new1", "new2"));
  EXPECT_EQ(dedup.files(), 2u);
}

TEST_F(ShipDedupTest, ANewFirstLineIsANewFileOnTheSameInode) {
  ShipDedup dedup({}, registry_);
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"x1", "x2"}, 0, 7, "/l", "s", "aa", 2), pipeline_.process()).ok());
  // Same inode, emptied in place (copytruncate) or a new file reusing a freed inode: another
  // first line, whatever its length.
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"y1", "y2"}, 0, 7, "/l", "s", "bb", 2), pipeline_.process()).ok());
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"z1"}, 0, 7, "/l", "s", "aa", 9), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("x1", "x2", "y1", "y2", "z1"));
  // The same first line: the same file, grown.
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"y1", "y2", "y3"}, 0, 7, "/l", "s", "bb", 2), pipeline_.process())
          .ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("x1", "x2", "y1", "y2", "z1", "y3"));
}

TEST_F(ShipDedupTest, ShippersAndPathsAreApart) {
  ShipDedup dedup({}, registry_);
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"a"}, 0, 7, "/l", "host-a"), pipeline_.process()).ok());
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"b"}, 0, 7, "/l", "host-b"), pipeline_.process()).ok());
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"c"}, 0, 7, "/m", "host-a"), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("a", "b", "c"));
}

TEST_F(ShipDedupTest, APipelineErrorLeavesThePositionSoTheResendIsTaken) {
  ShipDedup dedup({}, registry_);
  pipeline_.fail = true;
  EXPECT_THAT(dedup.Take(kAnyone, Batch({"a1"}, 0), pipeline_.process()),
              StatusIs(absl::StatusCode::kUnavailable));
  pipeline_.fail = false;
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"a1"}, 0), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("a1"));
  EXPECT_EQ(dedup.duplicate_lines(), 0u);
}

TEST_F(ShipDedupTest, InvalidOriginsAreRefusedNamingTheField) {
  ShipDedup dedup({}, registry_);
  LogBatch b = Batch({"a"}, 0);
  b.mutable_origin()->set_shipper_id("bad id\n");
  EXPECT_THAT(dedup.Take(kAnyone, b, pipeline_.process()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.shipper_id")));
  b = Batch({"a"}, 0);
  b.mutable_origin()->set_shipper_id(std::string(129, 'a'));
  EXPECT_THAT(dedup.Take(kAnyone, b, pipeline_.process()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.shipper_id")));
  b = Batch({"a"}, 0);
  b.mutable_origin()->set_path(std::string(1025, '/'));
  EXPECT_THAT(dedup.Take(kAnyone, b, pipeline_.process()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.path")));
  b = Batch({"a", "b"}, 0);
  b.mutable_origin()->mutable_line_ends()->RemoveLast();
  EXPECT_THAT(dedup.Take(kAnyone, b, pipeline_.process()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.line_ends")));
  b = Batch({"a", "b"}, 0);
  b.mutable_origin()->set_line_ends(1, 0);
  EXPECT_THAT(dedup.Take(kAnyone, b, pipeline_.process()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must not decrease")));
  b = Batch({"a"}, 0);
  b.mutable_origin()->set_fingerprint(std::string(65, 'f'));
  EXPECT_THAT(dedup.Take(kAnyone, b, pipeline_.process()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("origin.fingerprint")));
  EXPECT_TRUE(pipeline_.lines.empty());
  EXPECT_EQ(dedup.files(), 0u);
}

TEST_F(ShipDedupTest, TheTableIsBoundedInFilesPerPathFilesAndBytes) {
  ShipDedupOptions options;
  options.files_per_path = 2;
  options.max_files = 3;
  options.max_bytes = 1 << 20;
  ShipDedup dedup(options, registry_);
  // Three files of one path: the oldest is forgotten (its resend would count again).
  for (uint64_t inode = 1; inode <= 3; ++inode) {
    ASSERT_TRUE(dedup.Take(kAnyone, Batch({"l"}, 0, inode, "/p"), pipeline_.process()).ok());
  }
  EXPECT_EQ(dedup.files(), 2u);
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"l"}, 0, 3, "/p"), pipeline_.process()).ok());  // known
  ASSERT_TRUE(
      dedup.Take(kAnyone, Batch({"l"}, 0, 1, "/p"), pipeline_.process()).ok());  // forgotten
  EXPECT_EQ(pipeline_.lines.size(), 4u);
  // Many shippers: at most max_files in all, the least recently used go first.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        dedup.Take(kAnyone, Batch({"l"}, 0, 1, "/p", "s" + std::to_string(i)), pipeline_.process())
            .ok());
  }
  EXPECT_EQ(dedup.files(), 3u);
  ASSERT_TRUE(dedup.Take(kAnyone, Batch({"l"}, 0, 1, "/p", "s9"), pipeline_.process()).ok());
  EXPECT_EQ(pipeline_.lines.size(), 14u);  // s9 is still known: not processed again

  // Bytes: long paths fill the budget before the count does. A file's shipper id and path are
  // held twice (in its position and in the key of its path's files) and cost twice; counted
  // once, 5 of these files fitted in the budget of 3 and the table held twice its max_bytes.
  ShipDedupOptions small;
  small.max_bytes = 3 * (2 * (5 + 1000) + 1 + 2 + 64);
  prometheus::Registry other;
  ShipDedup bytes(small, other);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(bytes.Take(kAnyone, Batch({"l"}, 0, 1, std::string(999, 'p') + std::to_string(i)),
                           pipeline_.process())
                    .ok());
  }
  EXPECT_EQ(bytes.files(), 3u);
}

// Different files go through the pipeline side by side (one shipper's batch must not wait for
// another's), and Consistent() waits until no batch is in it.
TEST_F(ShipDedupTest, FilesGoSideBySideAndConsistentWaitsForThem) {
  ShipDedup dedup({}, registry_);
  absl::Notification a_in, b_done, release_a;
  bool a_saw_b = false;
  std::thread a([&] {
    auto process = [&](const LogBatch& b) -> absl::StatusOr<BatchAck> {
      a_in.Notify();
      a_saw_b = b_done.WaitForNotificationWithTimeout(absl::Seconds(60));
      release_a.WaitForNotification();
      BatchAck ack;
      ack.set_sequence(b.sequence());
      return ack;
    };
    EXPECT_TRUE(dedup.Take(kAnyone, Batch({"a"}, 0, 7, "/a"), process).ok());
  });
  a_in.WaitForNotification();
  // B runs while A is inside the pipeline.
  EXPECT_TRUE(dedup.Take(kAnyone, Batch({"b"}, 0, 7, "/b"), pipeline_.process()).ok());
  b_done.Notify();
  // A snapshot now would miss A's position while its lines are in the windows: it waits.
  std::atomic<bool> snapshotted{false};
  std::thread snap([&] {
    dedup.Consistent([&](const std::vector<palisade::v1::ShippedPosition>& positions) {
      EXPECT_EQ(positions.size(), 2u);  // A's too
      snapshotted = true;
    });
  });
  absl::SleepFor(absl::Milliseconds(50));  // not a correctness wait: only gives it a chance
  EXPECT_FALSE(snapshotted.load());
  release_a.Notify();
  a.join();
  snap.join();
  EXPECT_TRUE(a_saw_b);
  EXPECT_TRUE(snapshotted.load());
}

TEST_F(ShipDedupTest, PositionsComeBackFromTheSnapshot) {
  palisade::v1::EngineSnapshot snapshot;
  {
    ShipDedup dedup({}, registry_);
    ASSERT_TRUE(dedup.Take(kAnyone, Batch({"a1", "a2"}, 0, 7), pipeline_.process()).ok());
    ASSERT_TRUE(dedup.Take(kAnyone, Batch({"b1"}, 0, 8), pipeline_.process()).ok());
    dedup.Consistent([&](const std::vector<palisade::v1::ShippedPosition>& positions) {
      for (const auto& p : positions) *snapshot.add_shipped() = p;
    });
  }
  ASSERT_EQ(snapshot.shipped_size(), 2);
  EXPECT_EQ(snapshot.shipped(0).inode(), 8u);  // most recent first
  EXPECT_EQ(snapshot.shipped(1).end_offset(), 6u);
  // One saved position is not one a shipper could send: skipped.
  snapshot.add_shipped()->set_shipper_id("bad id");
  prometheus::Registry other;
  ShipDedup restored({}, other);
  EXPECT_EQ(restored.Restore(snapshot, /*clients=*/{}), 0u);
  EXPECT_EQ(restored.files(), 2u);
  ASSERT_TRUE(restored.Take(kAnyone, Batch({"a1", "a2", "a3"}, 0, 7), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("a1", "a2", "b1", "a3"));
}

// A client writes the whole origin: client B (its own ingest token) names A's shipper id, path
// and file identity (device and inode are guessable, the fingerprint is of a rotated auth.log's
// predictable first line) with a huge end offset. Shared by every client, that position made
// A's real lines duplicates: acked and dropped, its host's detection blinded. Positions are
// each client's own: B's batch moves only B's.
TEST_F(ShipDedupTest, AnotherClientNamingTheSameFileDoesNotMakeItsLinesDuplicates) {
  ShipDedup dedup({}, registry_);
  ASSERT_TRUE(dedup.Take("host-a", Batch({"a1", "a2"}, 0), pipeline_.process()).ok());
  const uint64_t far = uint64_t{1} << 40;
  ASSERT_TRUE(dedup.Take("host-b", Batch({"forged"}, far), pipeline_.process()).ok());
  // A goes on from where it was: its new lines are taken, its resend is still dropped.
  absl::StatusOr<BatchAck> ack =
      dedup.Take("host-a", Batch({"a1", "a2", "a3"}, 0), pipeline_.process());
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->accepted(), 1u);
  EXPECT_THAT(pipeline_.lines, ElementsAre("a1", "a2", "forged", "a3"));
  EXPECT_EQ(dedup.duplicate_lines(), 2u) << "A's lines were dropped as duplicates of B's batch";
  // And B's own resend is B's duplicate.
  ASSERT_TRUE(dedup.Take("host-b", Batch({"forged"}, far), pipeline_.process()).ok());
  EXPECT_EQ(dedup.duplicate_lines(), 3u);
}

// One client fills its share (half of max_files, half of max_bytes) with made-up files: the
// least recently used positions it pushes out are its own, never another client's (whose
// resent batches would be counted twice).
TEST_F(ShipDedupTest, AClientFillingItsShareDoesNotEvictAnothers) {
  ShipDedupOptions options;
  options.max_files = 8;
  options.max_bytes = 1 << 20;
  ShipDedup dedup(options, registry_);
  ASSERT_TRUE(dedup.Take("host-a", Batch({"a1"}, 0), pipeline_.process()).ok());
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(dedup.Take("host-b", Batch({"junk"}, 0, 1, "/j", "s" + std::to_string(i)),
                           pipeline_.process())
                    .ok());
  }
  EXPECT_EQ(dedup.files(), 1u + 4u);  // A's and B's share
  ASSERT_TRUE(dedup.Take("host-a", Batch({"a1"}, 0), pipeline_.process()).ok());
  EXPECT_EQ(dedup.duplicate_lines(), 1u) << "B's files evicted A's position";
  // B's most recent files are still B's: its resend is dropped.
  ASSERT_TRUE(dedup.Take("host-b", Batch({"junk"}, 0, 1, "/j", "s99"), pipeline_.process()).ok());
  EXPECT_EQ(dedup.duplicate_lines(), 2u);

  // The same in bytes: long paths fill B's half of max_bytes long before its files do.
  ShipDedupOptions small;
  small.max_bytes = 16 * 1024;
  prometheus::Registry other;
  ShipDedup bytes(small, other);
  ASSERT_TRUE(bytes.Take("host-a", Batch({"a1"}, 0), pipeline_.process()).ok());
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(bytes.Take("host-b", Batch({"junk"}, 0, 1, std::string(1000, 'p') +
                                                               std::to_string(i)),
                           pipeline_.process())
                    .ok());
  }
  EXPECT_LT(bytes.files(), 10u);
  ASSERT_TRUE(bytes.Take("host-a", Batch({"a1"}, 0), pipeline_.process()).ok());
  EXPECT_EQ(bytes.duplicate_lines(), 1u) << "B's long paths evicted A's position";
}

// Past the table's bounds with three clients (each within its share), the client holding the
// most gives up its least recently used file, not the small one that is oldest.
TEST_F(ShipDedupTest, PastTheTablesBoundsTheLargestHolderGivesUpAFile) {
  ShipDedupOptions options;
  options.max_files = 8;
  ShipDedup dedup(options, registry_);
  ASSERT_TRUE(dedup.Take("host-a", Batch({"a1"}, 0), pipeline_.process()).ok());
  for (const std::string client : {"host-b", "host-c"}) {
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(dedup.Take(client, Batch({"l"}, 0, 1, "/j", client + std::to_string(i)),
                             pipeline_.process())
                      .ok());
    }
  }
  EXPECT_EQ(dedup.files(), 8u);
  ASSERT_TRUE(dedup.Take("host-a", Batch({"a1"}, 0), pipeline_.process()).ok());
  EXPECT_EQ(dedup.duplicate_lines(), 1u);
}

// A position comes back as its client's and serves only it, and only while that client is
// configured: a renamed or removed client's positions, and the anonymous client's after the
// daemon gained api.clients, would else be saved in every snapshot forever (forgotten only under
// pressure). Positions of a snapshot written before they had a client could have been set by
// any client (a forged huge offset): on a daemon with clients none is restored (their files'
// resent lines are counted once more). What is dropped is counted in the result.
TEST_F(ShipDedupTest, RestoredPositionsAreTheirConfiguredClientsOnly) {
  palisade::v1::EngineSnapshot snapshot;
  {
    ShipDedup dedup({}, registry_);
    ASSERT_TRUE(dedup.Take("host-a", Batch({"a1", "a2"}, 0, 7), pipeline_.process()).ok());
    ASSERT_TRUE(dedup.Take("gone", Batch({"g1"}, 0, 9), pipeline_.process()).ok());
    ASSERT_TRUE(dedup.Take(kAnyone, Batch({"x1"}, 0, 10), pipeline_.process()).ok());
    dedup.Consistent([&](const std::vector<palisade::v1::ShippedPosition>& positions) {
      for (const auto& p : positions) *snapshot.add_shipped() = p;
    });
  }
  ASSERT_EQ(snapshot.shipped_size(), 3);
  EXPECT_EQ(snapshot.shipped(2).client(), "host-a");
  // Written before 2026-12-07: no client, and an offset far past what was shipped.
  palisade::v1::ShippedPosition* old = snapshot.add_shipped();
  *old = snapshot.shipped(2);
  old->clear_client();
  old->set_inode(8);
  old->set_end_offset(uint64_t{1} << 40);
  prometheus::Registry other;
  ShipDedup restored({}, other);
  EXPECT_EQ(restored.Restore(snapshot, {"host-a", "host-b"}), 3u);  // gone's, "", the old one
  EXPECT_EQ(restored.files(), 1u);
  pipeline_.lines.clear();
  ASSERT_TRUE(restored.Take("host-a", Batch({"a1", "a2", "a3"}, 0, 7), pipeline_.process()).ok());
  ASSERT_TRUE(restored.Take("host-b", Batch({"a1", "a2"}, 0, 7), pipeline_.process()).ok());
  for (const absl::string_view client : {"host-a", "host-b", ""}) {
    ASSERT_TRUE(restored.Take(client, Batch({"n" + std::string(client)}, 0, 8),
                              pipeline_.process())
                    .ok());
  }
  // A client renamed back is a new client: its old name's positions are gone.
  ASSERT_TRUE(restored.Take("gone", Batch({"g1"}, 0, 9), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("a3", "a1", "a2", "nhost-a", "nhost-b", "n", "g1"));
  EXPECT_EQ(restored.duplicate_lines(), 2u);
}

// On a daemon without api.clients the one anonymous client sent every batch, before the upgrade
// as after: positions saved before they had a client are its own, and a batch resent after the
// upgrade is not counted twice. Positions of named clients (the daemon lost its api.clients)
// are no one's now: dropped and counted.
TEST_F(ShipDedupTest, WithoutClientsOldPositionsAreTheAnonymousClients) {
  palisade::v1::EngineSnapshot snapshot;
  {
    ShipDedup dedup({}, registry_);
    ASSERT_TRUE(dedup.Take(kAnyone, Batch({"a1", "a2"}, 0, 7), pipeline_.process()).ok());
    ASSERT_TRUE(dedup.Take("host-a", Batch({"h1"}, 0, 8), pipeline_.process()).ok());
    dedup.Consistent([&](const std::vector<palisade::v1::ShippedPosition>& positions) {
      for (const auto& p : positions) *snapshot.add_shipped() = p;
    });
  }
  ASSERT_EQ(snapshot.shipped_size(), 2);
  ASSERT_EQ(snapshot.shipped(1).client(), "");
  snapshot.mutable_shipped(1)->clear_client();  // as written before 2026-12-07
  prometheus::Registry other;
  ShipDedup restored({}, other);
  EXPECT_EQ(restored.Restore(snapshot, /*clients=*/{}), 1u);  // host-a's
  EXPECT_EQ(restored.files(), 1u);
  pipeline_.lines.clear();
  ASSERT_TRUE(restored.Take(kAnyone, Batch({"a1", "a2", "a3"}, 0, 7), pipeline_.process()).ok());
  ASSERT_TRUE(restored.Take(kAnyone, Batch({"h1"}, 0, 8), pipeline_.process()).ok());
  EXPECT_THAT(pipeline_.lines, ElementsAre("a3", "h1"));
  EXPECT_EQ(restored.duplicate_lines(), 2u) << "the resent a1, a2 were taken again";
}

}  // namespace
}  // namespace palisade
