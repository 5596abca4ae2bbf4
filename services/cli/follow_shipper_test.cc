#include "services/cli/follow_shipper.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/server/ship_dedup.h"

namespace palisade {
namespace {

using palisade::v1::BatchAck;
using palisade::v1::LogBatch;
using ::testing::HasSubstr;

// An Ingest server in process: batches go through a real ShipDedup into a list of lines. It can
// be told to end the stream after taking the next batch without acking it (a connection dropped
// at the worst moment: the shipper must send the batch again, the server must not count it).
// The next batch is the next one taken: a batch taken before the call but not acked yet (its
// lines already listed) keeps its ack. (The flag was read at ack time, so on a slow machine the
// one-line batch before was the one dropped: one duplicate where the test counts two.)
class FakeIngest final : public palisade::v1::Ingest::Service {
 public:
  grpc::Status Ship(grpc::ServerContext*,
                    grpc::ServerReaderWriter<BatchAck, LogBatch>* stream) override {
    LogBatch batch;
    while (stream->Read(&batch)) {
      {
        absl::MutexLock lock(&mu_);
        max_batch_bytes_ = std::max(max_batch_bytes_, batch.ByteSizeLong());
        ++batches_read_;
        if (!refusal_.ok()) return refusal_;
      }
      bool drop = false;  // taken after DropNextAck
      // One anonymous client (the server here authenticates no one).
      absl::StatusOr<BatchAck> ack = dedup_.Take("", batch, [&](const LogBatch& b) {
        absl::MutexLock lock(&mu_);
        drop = drop_next_ack_;
        drop_next_ack_ = false;
        sources_.insert(b.source());
        for (const auto& r : b.records()) {
          lines_.push_back(r.line());
          cuts_.push_back(r.cut());
        }
        BatchAck a;
        a.set_sequence(b.sequence());
        a.set_accepted(static_cast<uint32_t>(b.records_size()));
        return absl::StatusOr<BatchAck>(a);
      });
      if (!ack.ok()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            std::string(ack.status().message()));
      }
      if (drop) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "dropped");
      if (!stream->Write(*ack)) break;
    }
    return grpc::Status::OK;
  }

  // Every batch from now on ends its stream with `status` (OK: taken again).
  void RefuseWith(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    refusal_ = std::move(status);
  }
  void DropNextAck() {
    absl::MutexLock lock(&mu_);
    drop_next_ack_ = true;
  }
  std::vector<std::string> lines() {
    absl::MutexLock lock(&mu_);
    return lines_;
  }
  // Per line taken: its LogRecord.cut.
  std::vector<bool> cuts() {
    absl::MutexLock lock(&mu_);
    return cuts_;
  }
  std::set<std::string> sources() {
    absl::MutexLock lock(&mu_);
    return sources_;
  }
  uint64_t duplicates() const { return dedup_.duplicate_lines(); }
  uint64_t batches_read() {  // refused ones included
    absl::MutexLock lock(&mu_);
    return batches_read_;
  }
  size_t max_batch_bytes() {
    absl::MutexLock lock(&mu_);
    return max_batch_bytes_;
  }

 private:
  prometheus::Registry registry_;
  ShipDedup dedup_{ShipDedupOptions(), registry_};
  absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> cuts_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> sources_ ABSL_GUARDED_BY(mu_);  // of the batches taken
  bool drop_next_ack_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status refusal_ ABSL_GUARDED_BY(mu_);
  size_t max_batch_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t batches_read_ ABSL_GUARDED_BY(mu_) = 0;
};

class FollowShipperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::getenv("TEST_TMPDIR");
    log_ = dir_ + "/auth.log";
    state_ = dir_ + "/ship.state";
    for (const auto& p : {log_, log_ + ".1", state_}) std::remove(p.c_str());
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    stub_ = palisade::v1::Ingest::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  void TearDown() override { server_->Shutdown(); }

  void Append(const std::string& path, const std::vector<std::string>& lines) {
    std::ofstream out(path, std::ios::app);
    for (const auto& l : lines) out << l << "\n";
  }

  // Runs a shipper on its own thread until Stop.
  struct Running {
    std::unique_ptr<FollowShipper> shipper;
    std::thread thread;
    absl::StatusOr<FollowSummary> summary = absl::UnknownError("not run");
    absl::Notification done;  // Run() returned
    ~Running() {  // a test that failed midway still ends its shipper
      if (thread.joinable()) {
        shipper->Stop();
        thread.join();
      }
    }
    // What Run() returned by itself (a wide margin: it is expected at the first refusal), or
    // kDeadlineExceeded after stopping a shipper that kept on.
    absl::Status WaitDone() {
      if (!done.WaitForNotificationWithTimeout(absl::Seconds(60))) {
        shipper->Stop();
        thread.join();
        return absl::DeadlineExceededError("Run() did not return by itself");
      }
      thread.join();
      return summary.status();
    }
    FollowSummary Stop() {
      shipper->Stop();
      thread.join();
      EXPECT_TRUE(summary.ok()) << summary.status();
      return summary.ok() ? *summary : FollowSummary();
    }
  };
  FollowOptions Options(uint32_t batch_lines = 2) {
    FollowOptions options;
    options.paths = {log_};
    options.state_file = state_;
    options.shipper_id = "test-host";
    options.batch_lines = batch_lines;
    options.poll_interval = absl::Milliseconds(10);
    options.backoff_min = absl::Milliseconds(10);
    options.log = [](const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); };
    return options;
  }
  std::unique_ptr<Running> Start(uint32_t batch_lines = 2, size_t max_batch_bytes = 4 << 20,
                                 const std::string& source = "") {
    FollowOptions options = Options(batch_lines);
    options.source = source;
    options.max_batch_bytes = max_batch_bytes;
    return Start(std::move(options));
  }
  std::unique_ptr<Running> Start(FollowOptions options) {
    auto r = std::make_unique<Running>();
    r->shipper = std::make_unique<FollowShipper>(std::move(options));
    Running* raw = r.get();
    r->thread = std::thread([this, raw] {
      raw->summary = raw->shipper->Run(*stub_);
      raw->done.Notify();
    });
    return r;
  }

  bool WaitLines(size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      if (service_.lines().size() >= n) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  std::string dir_, log_, state_;
  FakeIngest service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<palisade::v1::Ingest::Stub> stub_;
};

TEST_F(FollowShipperTest, ADroppedAckIsSentAgainAndCountedOnce) {
  auto shipper = Start();
  Append(log_, {"l1", "l2", "l3"});
  ASSERT_TRUE(WaitLines(3));
  service_.DropNextAck();
  Append(log_, {"l4", "l5"});
  ASSERT_TRUE(WaitLines(5));
  Append(log_, {"l6"});
  ASSERT_TRUE(WaitLines(6));
  FollowSummary s = shipper->Stop();
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"l1", "l2", "l3", "l4", "l5", "l6"}));
  EXPECT_GE(s.reconnects, 1u);
  EXPECT_GE(s.resent_batches, 1u);
  EXPECT_EQ(s.duplicates, service_.duplicates());
  EXPECT_GE(s.duplicates, 2u);  // the batch whose ack was lost
  EXPECT_EQ(s.lag_bytes, 0u);

  // The state file holds the acked end: a restart reads on from there, nothing sent again.
  absl::StatusOr<std::map<std::string, FollowPosition>> state = FollowShipper::ReadState(state_);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->count(log_), 1u);
  EXPECT_EQ(state->at(log_).checkpoint.offset(), 18u);
  EXPECT_EQ(state->at(log_).first_line_bytes, 2u);  // "l1"
  const uint64_t dups = service_.duplicates();
  shipper = Start();
  Append(log_, {"l7"});
  ASSERT_TRUE(WaitLines(7));
  s = shipper->Stop();
  EXPECT_EQ(s.duplicates, 0u);
  EXPECT_EQ(service_.duplicates(), dups);
}

TEST_F(FollowShipperTest, ALostStateFileResendsAndTheServerDropsIt) {
  auto shipper = Start();
  Append(log_, {"a1", "a2", "a3"});
  ASSERT_TRUE(WaitLines(3));
  shipper->Stop();
  std::remove(state_.c_str());
  // From the start again, with a new line: three dropped, one taken.
  Append(log_, {"a4"});
  shipper = Start();
  ASSERT_TRUE(WaitLines(4));
  FollowSummary s = shipper->Stop();
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"a1", "a2", "a3", "a4"}));
  EXPECT_EQ(s.duplicates, 3u);
}

TEST_F(FollowShipperTest, RotationWhileFollowingAndWhileStopped) {
  auto shipper = Start();
  Append(log_, {"r1", "r2"});
  ASSERT_TRUE(WaitLines(2));
  Append(log_, {"r3"});
  ASSERT_EQ(std::rename(log_.c_str(), (log_ + ".1").c_str()), 0);
  Append(log_, {"n1", "n2"});
  ASSERT_TRUE(WaitLines(5));
  shipper->Stop();
  // Rotated again while the shipper is away: it drains PATH.1 from its checkpoint first.
  Append(log_, {"n3"});
  ASSERT_EQ(std::rename(log_.c_str(), (log_ + ".1").c_str()), 0);
  Append(log_, {"m1"});
  shipper = Start();
  EXPECT_TRUE(WaitLines(7));
  FollowSummary s = shipper->Stop();
  EXPECT_EQ(service_.lines(),
            (std::vector<std::string>{"r1", "r2", "r3", "n1", "n2", "n3", "m1"}));
  EXPECT_EQ(service_.duplicates(), 0u);
  EXPECT_GE(s.rotations, 1u);
}

TEST_F(FollowShipperTest, LongLinesMakeSmallerBatches) {
  auto shipper = Start(/*batch_lines=*/1000, /*max_batch_bytes=*/100 * 1000);
  std::vector<std::string> lines;
  for (int i = 0; i < 50; ++i) lines.push_back(std::string(10 * 1000, 'a' + i % 26));
  Append(log_, lines);
  ASSERT_TRUE(WaitLines(50));
  FollowSummary s = shipper->Stop();
  EXPECT_EQ(service_.lines(), lines);
  EXPECT_GE(s.batches_acked, 5u);
  EXPECT_LT(service_.max_batch_bytes(), 100u * 1000 + 10 * 1000 + 4096);
}

// A line longer than max_line_bytes is sent as its first max_line_bytes, flagged cut
// (LogRecord.cut): a server whose own cap is larger would otherwise take the cut for the line's
// end (a pattern pinned there keyed a forged tail). A line of exactly the cap is whole.
TEST_F(FollowShipperTest, ALineCutAtTheCapIsSentFlaggedCut) {
  FollowOptions options = Options(/*batch_lines=*/10);
  options.max_line_bytes = 100;
  auto shipper = Start(std::move(options));
  const std::string exact(100, 'e');
  const std::string over = std::string(100, 'o') + " ip=203.0.113.5";
  const std::string huge = std::string(20 * 1000, 'h');  // past the follower's read buffer too
  Append(log_, {"short", over, exact, huge, "after"});
  ASSERT_TRUE(WaitLines(5));
  shipper->Stop();
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"short", over.substr(0, 100), exact,
                                                        huge.substr(0, 100), "after"}));
  EXPECT_EQ(service_.cuts(), (std::vector<bool>{false, true, false, true, false}));
}

// Two hosts following /var/log/auth.log must not share a source by default (the bare path, as
// it was): the daemon keeps time per source, and one host's live lines aged the other's backlog.
// The default is "<shipper id>:<path>"; a source given is sent as given.
TEST_F(FollowShipperTest, TheDefaultSourceNamesTheShipperAndThePath) {
  auto shipper = Start();
  Append(log_, {"s1", "s2", "s3"});
  ASSERT_TRUE(WaitLines(3));
  shipper->Stop();
  EXPECT_EQ(service_.sources(), std::set<std::string>({"test-host:" + log_}));

  shipper = Start(/*batch_lines=*/2, /*max_batch_bytes=*/4 << 20, /*source=*/"auth");
  Append(log_, {"s4"});
  ASSERT_TRUE(WaitLines(4));
  shipper->Stop();
  EXPECT_EQ(service_.sources(), std::set<std::string>({"test-host:" + log_, "auth"}));
}

// A first record over the server's 1 MiB fingerprint cap (ShipDedup::Validate): Caddy logs
// request headers, so a client can make one, and a logrotate puts it first. Its fingerprint
// covered the whole line, every batch of the file was refused, and the shipper sent it again
// forever while every other file waited behind it.
TEST_F(FollowShipperTest, AJsonFileWhoseFirstRecordIsOverOneMiBIsShipped) {
  FollowOptions options = Options();
  options.format = palisade::v1::LOG_FORMAT_CADDY_JSON;
  auto shipper = Start(options);
  const std::string big = R"({"request":{"headers":{"X-Pad":[")" +
                          std::string(size_t{3} << 19, 'p') + R"("]}},"status":401})";
  ASSERT_GT(big.size(), size_t{3} << 19);  // 1.5 MiB
  const std::vector<std::string> lines = {big, R"({"status":401})", R"({"status":403})",
                                          R"({"status":200})"};
  Append(log_, lines);
  ASSERT_TRUE(WaitLines(4));
  shipper->Stop();
  EXPECT_EQ(service_.lines(), lines);
  absl::StatusOr<std::map<std::string, FollowPosition>> state = FollowShipper::ReadState(state_);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->at(log_).first_line_bytes, 1u << 20);

  // The fingerprint kept across a restart is the one sent: the server knows the file.
  shipper = Start(options);
  Append(log_, {R"({"status":404})"});
  ASSERT_TRUE(WaitLines(5));
  FollowSummary s = shipper->Stop();
  EXPECT_EQ(s.duplicates, 0u);
  EXPECT_EQ(service_.duplicates(), 0u);
}

// The server refuses an origin.path over 1024 bytes or not UTF-8 (a protobuf string): such a
// path is refused before anything is sent (not left to the server's refusal), with an error
// naming it.
// A path named on the command line may be a symlink its user owns (the error below tells a user
// whose path is not UTF-8 to follow it through one): the follower's refusal of symlinks found
// by globs and rotation lookups does not apply to it.
TEST_F(FollowShipperTest, ANamedPathThatIsAnOwnSymlinkIsFollowed) {
  const std::string target = dir_ + "/real.log";
  Append(target, {"s1", "s2"});
  const std::string link = dir_ + "/link.log";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0) << std::strerror(errno);
  FollowOptions options = Options();
  options.paths = {link};
  auto shipper = Start(std::move(options));
  ASSERT_TRUE(WaitLines(2));
  shipper->Stop();
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"s1", "s2"}));
}

TEST_F(FollowShipperTest, APathTheServerWouldRefuseIsAnErrorNamingIt) {
  std::string deep = dir_;
  for (int i = 0; i < 5; ++i) {
    deep += "/" + std::string(200, 'd');
    ASSERT_EQ(::mkdir(deep.c_str(), 0700) == 0 || errno == EEXIST, true) << deep;
  }
  const std::string long_path = deep + "/access.log";
  const std::string not_utf8 = dir_ + "/caf\xe9.log";
  // What the error must hold: the long path's start, the other path escaped.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {long_path, long_path.substr(0, 200)}, {not_utf8, dir_ + "/caf\\xe9.log"}};
  for (const auto& [path, named] : cases) {
    std::remove(state_.c_str());
    Append(path, {"x1", "x2"});
    FollowOptions options = Options();
    options.paths = {path};
    auto shipper = Start(options);
    absl::Status s = shipper->WaitDone();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(named)) << s;
  }
  EXPECT_EQ(service_.batches_read(), 0u);
}

// A refusal that sending again cannot cure (a bad batch, a bad or weak token) ends Run() with
// the server's code, naming the file whose batch was refused; it used to be retried forever.
TEST_F(FollowShipperTest, APermanentRefusalEndsTheRunNamingTheFileAndTheStatus) {
  Append(log_, {"p1", "p2"});
  for (grpc::StatusCode code : {grpc::StatusCode::INVALID_ARGUMENT,
                                grpc::StatusCode::UNAUTHENTICATED,
                                grpc::StatusCode::PERMISSION_DENIED}) {
    service_.RefuseWith(grpc::Status(code, "refused by the test"));
    auto shipper = Start();
    absl::Status s = shipper->WaitDone();
    EXPECT_EQ(static_cast<int>(s.code()), static_cast<int>(code)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(log_)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("refused by the test")) << s;
  }
  // The state file was kept: once the server takes the batches, nothing is lost.
  service_.RefuseWith(grpc::Status::OK);
  auto shipper = Start();
  ASSERT_TRUE(WaitLines(2));
  shipper->Stop();
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"p1", "p2"}));
}

TEST_F(FollowShipperTest, StateFiles) {
  std::map<std::string, FollowPosition> files;
  palisade::v1::FileCheckpoint& c = files["/var/log/auth.log"].checkpoint;
  c.set_offset(42);
  c.set_inode(9);
  c.set_fingerprint("ab");
  c.set_fingerprint_bytes(2);
  files["/var/log/auth.log"].first_line_fingerprint = "sha256:0123";
  files["/var/log/auth.log"].first_line_bytes = 7;
  ASSERT_TRUE(FollowShipper::WriteState(state_, "h", files).ok());
  absl::StatusOr<std::map<std::string, FollowPosition>> back = FollowShipper::ReadState(state_);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->at("/var/log/auth.log").checkpoint.offset(), 42u);
  EXPECT_EQ(back->at("/var/log/auth.log").checkpoint.inode(), 9u);
  EXPECT_EQ(back->at("/var/log/auth.log").checkpoint.fingerprint(), "ab");
  EXPECT_EQ(back->at("/var/log/auth.log").first_line_fingerprint, "sha256:0123");
  EXPECT_EQ(back->at("/var/log/auth.log").first_line_bytes, 7u);
  std::ofstream(state_) << "{not json";
  EXPECT_EQ(FollowShipper::ReadState(state_).status().code(), absl::StatusCode::kDataLoss);
  // A field of the wrong type (a hand edit, a disk error) is a damaged file, not a crash.
  for (const char* entry : {R"("inode":"7")", R"("fingerprint":5)", R"("device":-1)",
                            R"("first_line_bytes":99999999999)"}) {
    std::ofstream(state_, std::ios::trunc)
        << R"({"files":[{"path":"/x","offset":1,)" << entry << "}]}";
    EXPECT_EQ(FollowShipper::ReadState(state_).status().code(), absl::StatusCode::kDataLoss)
        << entry;
  }
  EXPECT_EQ(FollowShipper::WriteState(dir_ + "/no/such/dir/state", "h", files).code(),
            absl::StatusCode::kFailedPrecondition);
  std::remove(state_.c_str());
  EXPECT_TRUE(FollowShipper::ReadState(state_)->empty());  // a first run
}

}  // namespace
}  // namespace palisade
