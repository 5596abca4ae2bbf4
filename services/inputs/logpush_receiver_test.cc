#include "services/inputs/logpush_receiver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "prometheus/text_serializer.h"
#include "services/common/clock.h"
#include "services/common/header_flood_for_tests.h"
#include "services/common/status_matchers.h"
#include "services/inputs/gzip_for_tests.h"

namespace palisade {
namespace {

using ::palisade::testing::FloodHeaders;
using ::palisade::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "Bearer s3cr3t-8c6b1f0e";

using ::palisade::testing::Gzip;

absl::StatusOr<std::string> InflateAll(const std::string& gz, size_t max_out) {
  BoundedInflater inflater(max_out);
  std::string out;
  if (absl::Status s = inflater.Feed(gz, &out); !s.ok()) return s;
  if (absl::Status s = inflater.Finish(); !s.ok()) return s;
  return out;
}

// --- constant-time secret check ---------------------------------------------------------------

TEST(LogpushSecretTest, OnlyTheExactValueMatches) {
  EXPECT_TRUE(LogpushReceiver::SecretMatches(kSecret, kSecret));
  EXPECT_FALSE(LogpushReceiver::SecretMatches(kSecret, ""));
  EXPECT_FALSE(LogpushReceiver::SecretMatches(kSecret, "Bearer s3cr3t"));  // a prefix
  EXPECT_FALSE(LogpushReceiver::SecretMatches(kSecret, std::string(kSecret) + "x"));
  EXPECT_FALSE(LogpushReceiver::SecretMatches(kSecret, "bearer s3cr3t-8c6b1f0e"));
  // No secret configured never matches, not even an empty header.
  EXPECT_FALSE(LogpushReceiver::SecretMatches("", ""));
}

// --- inflate with caps -------------------------------------------------------------------------

TEST(BoundedInflaterTest, InflatesWholeAndPieceByPiece) {
  const std::string text = "{\"ClientIP\":\"203.0.113.5\"}\n{\"ClientIP\":\"203.0.113.6\"}\n";
  EXPECT_EQ(*InflateAll(Gzip(text), 1 << 20), text);
  // One byte at a time, as a slow sender's reads arrive.
  const std::string gz = Gzip(text);
  BoundedInflater inflater(1 << 20);
  std::string out;
  for (char c : gz) ASSERT_TRUE(inflater.Feed(std::string(1, c), &out).ok());
  EXPECT_TRUE(inflater.Finish().ok());
  EXPECT_EQ(out, text);
}

// Highly compressible text fed in pieces: a piece's last byte can leave zlib with more output
// than the buffer took (a long match mid-copy); that output must come out before more input.
TEST(BoundedInflaterTest, OutputPendingWhenAPieceEndsIsNotLost) {
  std::string text;
  for (int i = 0; i < 20000; ++i) {
    absl::StrAppend(&text, "{\"ClientIP\":\"203.0.113.", i % 7, "\"}\n");
  }
  text += std::string(3 << 20, 'x');
  const std::string gz = Gzip(text, 9);
  for (size_t piece : {1u, 7u, 64u, 100u, 4096u, 65536u}) {
    BoundedInflater inflater(8 << 20);
    std::string out;
    for (size_t at = 0; at < gz.size(); at += piece) {
      ASSERT_TRUE(inflater.Feed(absl::string_view(gz).substr(at, piece), &out).ok()) << piece;
    }
    EXPECT_TRUE(inflater.Finish().ok()) << piece;
    EXPECT_EQ(out.size(), text.size()) << piece;
    EXPECT_TRUE(out == text) << piece;
  }
}

TEST(BoundedInflaterTest, ConcatenatedMembersAreOneStream) {
  EXPECT_EQ(*InflateAll(Gzip("a\n") + Gzip("b\n"), 1 << 20), "a\nb\n");
}

TEST(BoundedInflaterTest, ExactlyTheCapPassesOneMoreByteDoesNot) {
  const std::string text(100000, 'x');
  EXPECT_TRUE(InflateAll(Gzip(text), text.size()).ok());
  EXPECT_THAT(InflateAll(Gzip(text), text.size() - 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(BoundedInflaterTest, ABombStopsAtTheCap) {
  // 64 MiB of zeros in ~64 KB: refused after the first MiB, with no more than that produced.
  const std::string gz = Gzip(std::string(64u << 20, '\0'), 9);
  ASSERT_LT(gz.size(), 1u << 20);
  BoundedInflater inflater(1 << 20);
  std::string out;
  EXPECT_THAT(inflater.Feed(gz, &out), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_LE(out.size(), 1u << 20);
  // Nothing more once refused.
  EXPECT_FALSE(inflater.Feed(gz, &out).ok());
  EXPECT_FALSE(inflater.Finish().ok());
}

TEST(BoundedInflaterTest, GarbageAndCutShortAreInvalid) {
  EXPECT_THAT(InflateAll("not gzip at all", 1 << 20), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::string gz = Gzip(std::string(10000, 'y'));
  EXPECT_THAT(InflateAll(gz.substr(0, gz.size() / 2), 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A member, then bytes that are not one.
  EXPECT_THAT(InflateAll(gz + "trailing", 1 << 20), StatusIs(absl::StatusCode::kInvalidArgument));
}

// --- the check upload and NDJSON -------------------------------------------------------------

TEST(LogpushCheckUploadTest, RecognizesCloudflaresCheckOnly) {
  EXPECT_TRUE(LogpushReceiver::IsCheckUpload("{\"content\":\"test\",\"filename\":\"test.txt\"}"));
  EXPECT_TRUE(LogpushReceiver::IsCheckUpload("{\"content\":\"tests\"}\n"));
  EXPECT_FALSE(LogpushReceiver::IsCheckUpload(
      "{\"content\":\"test\",\"filename\":\"test.txt\",\"ClientIP\":\"203.0.113.5\"}"));
  EXPECT_FALSE(LogpushReceiver::IsCheckUpload("{\"content\":\"nope\"}"));
  EXPECT_FALSE(LogpushReceiver::IsCheckUpload("{\"ClientIP\":\"203.0.113.5\"}"));
  EXPECT_FALSE(LogpushReceiver::IsCheckUpload("{\"content\":\"test\"}\n{\"content\":\"test\"}"));
  EXPECT_FALSE(LogpushReceiver::IsCheckUpload(""));
}

std::vector<std::string> Lines(const palisade::v1::LogBatch& batch) {
  std::vector<std::string> out;
  for (const auto& r : batch.records()) out.push_back(r.line());
  return out;
}

// An NDJSON record that carries a RayID (as a job whose fields include it sends).
std::string Ray(const char* name) { return absl::StrCat("{\"RayID\":\"", name, "\"}"); }
// Such records, one per name, each with its newline.
std::string Rays(std::initializer_list<const char*> names) {
  std::string out;
  for (const char* n : names) absl::StrAppend(&out, Ray(n), "\n");
  return out;
}

using Split = LogpushReceiver::Split;
constexpr size_t kNoByteCap = SIZE_MAX;

TEST(LogpushSplitTest, CrlfEmptyLinesAndALastLineWithoutNewline) {
  palisade::v1::LogBatch batch;
  ASSERT_EQ(LogpushReceiver::SplitLines("{\"a\":1}\r\n\n{\"b\":2}\n\r\n{\"c\":3}", 10, kNoByteCap,
                                        &batch),
            Split::kOk);
  EXPECT_THAT(Lines(batch), ElementsAre("{\"a\":1}", "{\"b\":2}", "{\"c\":3}"));
}

// libFuzzer's find (tools/fuzz.sh, logpush_body_fuzz): a record ended by several CRs kept all but
// one, and a line of CRs alone was a record.
TEST(LogpushSplitTest, EveryCrBeforeTheNewlineIsDropped) {
  palisade::v1::LogBatch batch;
  ASSERT_EQ(LogpushReceiver::SplitLines("z\r\r\x97\xa1z\r\r\n\r\r\n{\"a\":1}\r\r", 10, kNoByteCap,
                                        &batch),
            Split::kOk);
  EXPECT_THAT(Lines(batch), ElementsAre("z\r\r\x97\xa1z", "{\"a\":1}"));
}

TEST(LogpushSplitTest, RecordsPastTheCapAreRefused) {
  palisade::v1::LogBatch batch;
  EXPECT_EQ(LogpushReceiver::SplitLines("a\nb\n", 2, kNoByteCap, &batch), Split::kOk);
  palisade::v1::LogBatch over;
  EXPECT_EQ(LogpushReceiver::SplitLines("a\nb\nc\n", 2, kNoByteCap, &over),
            Split::kTooManyRecords);
}

TEST(LogpushSplitTest, RecordsPastTheHeldBytesAreRefused) {
  constexpr size_t kRecord = LogpushReceiver::kRecordHeldBytes;
  palisade::v1::LogBatch batch;
  EXPECT_EQ(LogpushReceiver::SplitLines("ab\nc\n", 10, 3 + 2 * kRecord, &batch), Split::kOk);
  palisade::v1::LogBatch over;
  EXPECT_EQ(LogpushReceiver::SplitLines("ab\nc\n", 10, 3 + 2 * kRecord - 1, &over),
            Split::kTooManyBytes);
}

// kRecordHeldBytes is an upper bound of what protobuf itself says a record holds (SpaceUsedLong
// counts the message and the string's buffer, not the allocator's headers, which the figure
// leaves room for), for the lines that fit in the string itself and for longer ones; and not a
// loose one.
TEST(LogpushSplitTest, TheHeldEstimateBoundsWhatTheBatchHolds) {
  for (size_t length : {1, 15, 16, 200, 5000}) {
    std::string body;
    for (int i = 0; i < 1000; ++i) body += std::string(length, 'r') + "\n";
    palisade::v1::LogBatch batch;
    ASSERT_EQ(LogpushReceiver::SplitLines(body, 1000, kNoByteCap, &batch), Split::kOk);
    const size_t estimate = 1000 * (length + LogpushReceiver::kRecordHeldBytes);
    EXPECT_LE(batch.SpaceUsedLong(), estimate) << length;
    EXPECT_GE(batch.SpaceUsedLong() + 1000 * 96, estimate) << length;
  }
}

// --- the server --------------------------------------------------------------------------------

// Owner-only, as the receiver requires of its secret file.
std::string TempFile(const std::string& name, const std::string& content) {
  const std::string path = absl::StrCat(std::getenv("TEST_TMPDIR"), "/", name);
  std::ofstream(path, std::ios::binary) << content;
  ::chmod(path.c_str(), 0600);
  return path;
}

class LogpushServerTest : public ::testing::Test {
 protected:
  // Starts a receiver whose sink records batches (and fails while `fail_` is set).
  void StartReceiver(LogpushReceiverOptions options = {},
                     std::function<void(palisade::v1::LogpushInput&)> edit = nullptr) {
    palisade::v1::LogpushInput config;
    config.set_name("cf");
    config.set_listen("127.0.0.1:0");
    config.set_format("raw");
    config.set_secret_file(TempFile("secret", std::string(kSecret) + "\n"));
    config.set_max_body_bytes(1 << 20);
    config.set_max_inflated_bytes(4 << 20);
    if (edit) edit(config);
    options.log = [this](const std::string& m) { logs_.push_back(m); };
    absl::StatusOr<std::unique_ptr<LogpushReceiver>> r = LogpushReceiver::Start(
        config, options,
        [this](const palisade::v1::LogBatch& batch) {
          if (before_sink_) before_sink_();
          if (fail_) return absl::UnavailableError("store is busy");
          largest_space_used_ = std::max(largest_space_used_, batch.SpaceUsedLong());
          batches_.push_back(batch);
          return absl::OkStatus();
        },
        registry_);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = *std::move(r);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
  }

  httplib::Result Post(const std::string& body, const std::string& encoding = "gzip",
                       const std::string& authorization = kSecret,
                       const std::string& path = "/logpush") {
    httplib::Headers headers;
    if (!authorization.empty()) headers.emplace("Authorization", authorization);
    if (!encoding.empty()) headers.emplace("Content-Encoding", encoding);
    return client_->Post(path.c_str(), headers, body, "application/x-ndjson");
  }

  double Metric(const std::string& name, const std::string& label = "") {
    double sum = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match |= absl::StrCat(l.name, "=", l.value) == label;
        if (match) sum += m.counter.value + m.gauge.value;
      }
    }
    return sum;
  }
  double Outcome(const std::string& outcome) {
    return Metric("palisade_logpush_requests_total", "outcome=" + outcome);
  }

  prometheus::Registry registry_;
  std::vector<palisade::v1::LogBatch> batches_;  // written by the server's thread, read after
  std::vector<std::string> logs_;                // the reply (the reply follows the sink)
  size_t largest_space_used_ = 0;  // the largest batch's SpaceUsedLong as the sink saw it
  bool fail_ = false;
  std::function<void()> before_sink_;
  std::unique_ptr<LogpushReceiver> receiver_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(LogpushServerTest, GzippedNdjsonBecomesOneBatch) {
  StartReceiver();
  auto res = Post(Gzip("{\"ClientIP\":\"203.0.113.5\"}\n{\"ClientIP\":\"203.0.113.6\"}\n"));
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].format(), palisade::v1::LOG_FORMAT_RAW);
  EXPECT_EQ(batches_[0].source(), "cf");
  EXPECT_THAT(Lines(batches_[0]),
              ElementsAre("{\"ClientIP\":\"203.0.113.5\"}", "{\"ClientIP\":\"203.0.113.6\"}"));
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 2);
  EXPECT_EQ(Outcome("ok"), 1);
  EXPECT_GT(Metric("palisade_logpush_body_bytes_total", "form=sent"), 0);
  EXPECT_EQ(Metric("palisade_logpush_body_bytes_total", "form=inflated"), 54);
}

TEST_F(LogpushServerTest, GzipByItsMagicAndPlainBodies) {
  StartReceiver();
  auto gz = Post(Gzip("a\r\nb"), /*encoding=*/"");
  ASSERT_TRUE(gz);
  EXPECT_EQ(gz->status, 200);
  auto plain = Post("c\nd\n", /*encoding=*/"");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 200);
  ASSERT_EQ(batches_.size(), 2u);
  EXPECT_THAT(Lines(batches_[0]), ElementsAre("a", "b"));
  EXPECT_THAT(Lines(batches_[1]), ElementsAre("c", "d"));
}

TEST_F(LogpushServerTest, AWrongOrMissingSecretIs401AndNothingIsRead) {
  StartReceiver();
  for (const std::string auth : {"Bearer wrong", "", "Bearer s3cr3t-8c6b1f0"}) {
    auto res = Post(Gzip("x\n"), "gzip", auth);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401);
    EXPECT_THAT(res->body, Not(HasSubstr("s3cr3t")));
  }
  EXPECT_TRUE(batches_.empty());
  EXPECT_EQ(Outcome("unauthorized"), 3);
  EXPECT_EQ(Metric("palisade_logpush_body_bytes_total", "form=sent"), 0);
}

// Before the secret is checked, a request's headers were read whatever their size (httplib 0.11
// bounds each line, not their count): a stranger could make the receiver hold all it sent. A
// request is read up to its body cap plus 64 KiB of headers; past that the connection is closed.
TEST_F(LogpushServerTest, AnUploadsHeadersAreBoundedInBytesBeforeTheSecretIsChecked) {
  StartReceiver();  // max_body_bytes 1 MiB
  constexpr size_t kFlood = size_t{48} << 20;
  // What the kernel's socket buffers took is counted too: a few MiB past the 1 MiB budget.
  EXPECT_LT(FloodHeaders(receiver_->port(), "/logpush", kFlood), size_t{16} << 20);
  auto res = Post(Gzip("after the flood\n"));
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_THAT(Lines(batches_[0]), ElementsAre("after the flood"));
}

TEST_F(LogpushServerTest, ABombIs413AndTheServerGoesOn) {
  StartReceiver();  // max_inflated_bytes 4 MiB
  const std::string bomb = Gzip(std::string(128u << 20, 'A'), 9);  // 128 MiB in ~128 KB
  ASSERT_LT(bomb.size(), 1u << 20);
  auto res = Post(bomb);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(Outcome("inflated_too_large"), 1);
  EXPECT_LE(Metric("palisade_logpush_body_bytes_total", "form=inflated"), 4u << 20);
  EXPECT_TRUE(batches_.empty());
  // The same bomb unlabelled (found by its magic), and then an honest upload.
  client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
  auto magic = Post(bomb, "");
  ASSERT_TRUE(magic);
  EXPECT_EQ(magic->status, 413);
  client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
  auto ok = Post(Gzip("fine\n"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(batches_.size(), 1u);
}

TEST_F(LogpushServerTest, BodiesOverTheSentCapAre413) {
  StartReceiver();  // max_body_bytes 1 MiB
  auto res = Post(std::string((1 << 20) + 1, 'x'), "");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  EXPECT_EQ(Outcome("too_large"), 1);
  EXPECT_TRUE(batches_.empty());
}

TEST_F(LogpushServerTest, ChunkedBodiesAreCappedToo) {
  StartReceiver();
  size_t sent = 0;
  httplib::Headers headers = {{"Authorization", kSecret}};
  auto res = client_->Post(
      "/logpush", headers,
      [&sent](size_t, httplib::DataSink& sink) {
        const std::string chunk(64 * 1024, 'x');
        if (sent > (2u << 20)) {
          sink.done();
          return true;
        }
        sent += chunk.size();
        return sink.write(chunk.data(), chunk.size());
      },
      "text/plain");
  // Refused once the cap is passed (the reply may race with the rest of the upload).
  if (res) {
    EXPECT_EQ(res->status, 413);
  }
  EXPECT_TRUE(batches_.empty());
  EXPECT_EQ(Outcome("too_large"), 1);
}

TEST_F(LogpushServerTest, SaidGzipButIsNotIs400Malformed) {
  StartReceiver();
  auto res = Post("{\"ClientIP\":\"203.0.113.5\"}\n", "gzip");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  auto cut = Post(Gzip(std::string(5000, 'z')).substr(0, 20), "gzip");
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->status, 400);
  auto br = Post("x", "br");
  ASSERT_TRUE(br);
  EXPECT_EQ(br->status, 415);
  EXPECT_EQ(Metric("palisade_logpush_malformed_total", "reason=gzip"), 2);
  EXPECT_EQ(Metric("palisade_logpush_malformed_total", "reason=encoding"), 1);
  EXPECT_TRUE(batches_.empty());
}

// Header names are case-insensitive: a lowercase `content-encoding: gzip` was left for httplib,
// which inflated the body itself (no cap of ours) and handed the inflated bytes over, counted
// against max_body_bytes: an upload over that once inflated got 413, and bad gzip read_error.
TEST_F(LogpushServerTest, ALowercaseContentEncodingIsInflatedByTheReceiver) {
  StartReceiver();  // max_body_bytes 1 MiB, max_inflated_bytes 4 MiB
  std::string lines;
  for (int i = 0; i < 2'000; ++i) absl::StrAppend(&lines, i, " ", std::string(995, 'r'), "\n");
  ASSERT_GT(lines.size(), 1u << 20);  // over the sent cap once inflated, not as sent
  const std::string gz = Gzip(lines);
  ASSERT_LT(gz.size(), 1u << 20);
  auto post = [&](const std::string& body) {
    client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
    return client_->Post("/logpush", {{"Authorization", kSecret}, {"content-encoding", "gzip"}},
                         body, "application/x-ndjson");
  };
  auto res = post(gz);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].records_size(), 2'000);
  EXPECT_EQ(Metric("palisade_logpush_body_bytes_total", "form=sent"), gz.size());
  // Said gzip in lowercase, and is not: malformed, as with the canonical spelling.
  auto bad = post("{\"ClientIP\":\"203.0.113.5\"}\n");
  ASSERT_TRUE(bad) << httplib::to_string(bad.error());
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(Metric("palisade_logpush_malformed_total", "reason=gzip"), 1);
  EXPECT_EQ(Outcome("read_error"), 0);
}

TEST_F(LogpushServerTest, TheCheckUploadIs200AndCountedAsACheck) {
  StartReceiver();
  auto res = Post(Gzip("{\"content\":\"test\",\"filename\":\"test.txt\"}"));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_TRUE(batches_.empty());
  EXPECT_EQ(Outcome("check"), 1);
  EXPECT_EQ(Outcome("malformed"), 0);
  EXPECT_EQ(Metric("palisade_logpush_malformed_total"), 0);
}

TEST_F(LogpushServerTest, ASinkErrorIs503AndTheRetryCountsOnce) {
  StartReceiver();
  const std::string file = Gzip("one\ntwo\nthree\n");
  fail_ = true;
  auto refused = Post(file);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 0);
  fail_ = false;
  auto retried = Post(file);  // what Logpush does after a non-2xx
  ASSERT_TRUE(retried);
  EXPECT_EQ(retried->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 3);
  EXPECT_EQ(Outcome("unavailable"), 1);
  EXPECT_EQ(Outcome("ok"), 1);
  ASSERT_EQ(logs_.size(), 1u);
  EXPECT_THAT(logs_[0], HasSubstr("cf"));
  EXPECT_THAT(logs_[0], Not(HasSubstr("s3cr3t")));
}

// A pipeline refusing every batch is a refusal per upload: its log line is rate-limited as the
// others are (it was logged for every upload).
TEST_F(LogpushServerTest, PipelineRefusalsAreLoggedAtMostOnceIn10Seconds) {
  SimulatedClock clock;
  LogpushReceiverOptions options;
  options.clock = &clock;
  StartReceiver(options);
  fail_ = true;
  for (int i = 0; i < 3; ++i) {
    auto res = Post(Gzip("one\n"));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 503);
  }
  EXPECT_EQ(Outcome("unavailable"), 3);
  ASSERT_EQ(logs_.size(), 1u);
  clock.Advance(absl::Seconds(11));
  auto res = Post(Gzip("one\n"));
  ASSERT_TRUE(res);
  ASSERT_EQ(logs_.size(), 2u);
  EXPECT_THAT(logs_[1], HasSubstr("2 refusals before not logged"));
}

// What a batch holds for the pipeline, as the receiver bounds it.
size_t HeldBytes(const palisade::v1::LogBatch& batch) {
  size_t held = 0;
  for (const auto& r : batch.records()) held += r.line().size() + LogpushReceiver::kRecordHeldBytes;
  return held;
}

// A 2 KB gzip of a million one-byte records is 2 MB inflated, but a million records held for the
// pipeline (~150 MB): they are handed over in batches bounded in the bytes they hold, not refused
// (an upload was refused whole with 413 records_too_large once its records held more than
// max_inflated_bytes).
TEST_F(LogpushServerTest, TinyRecordsAreHandedInBatchesBoundedInTheBytesTheyHold) {
  LogpushReceiverOptions options;
  options.max_batch_bytes = 1 << 20;
  options.max_record_bytes = 1000;
  StartReceiver(options);  // max_inflated_bytes 4 MiB
  std::string tiny;
  for (int i = 0; i < 200'000; ++i) tiny += "x\n";  // 400 KB inflated, ~50 MB held
  auto res = Post(Gzip(tiny, 9));
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  size_t records = 0;
  for (const auto& batch : batches_) {
    records += static_cast<size_t>(batch.records_size());
    EXPECT_LE(HeldBytes(batch), 1u << 20);
  }
  EXPECT_EQ(records, 200'000u);
  EXPECT_GE(batches_.size(), 50u);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 200'000);
  EXPECT_EQ(Outcome("ok"), 1);
}

// Anyone can fill Cloudflare's files with long URIs and User-Agents, which compress well: a file
// inflating past the old 64 MiB cap was refused whole (413 inflated_too_large), Logpush retried,
// then dropped it, and the flood and every other record in it never reached the rules. Now it is
// inflated as it arrives and read whole in batches bounded in bytes and records; a record over
// max_record_bytes is cut one byte past it and counted.
TEST_F(LogpushServerTest, AFloodOfLongRecordsPast64MiBIsReadWholeInBoundedBatches) {
  LogpushReceiverOptions options;
  options.max_batch_bytes = 2 << 20;
  options.max_batch_records = 500;
  options.max_record_bytes = 32 << 10;
  StartReceiver(options, [](palisade::v1::LogpushInput& c) {
    c.clear_max_inflated_bytes();  // the default
    c.set_max_body_bytes(16 << 20);
  });
  const std::string uri(16 << 10, 'A');
  std::string text;
  size_t n = 0;
  while (text.size() <= (68u << 20)) {
    absl::StrAppend(&text, "{\"ClientRequestURI\":\"/", uri, "\",\"RayID\":\"", n++, "\"}\n");
  }
  absl::StrAppend(&text, "{\"ClientRequestUserAgent\":\"", std::string(100 << 10, 'U'), "\"}\n");
  absl::StrAppend(&text, "{\"ClientIP\":\"203.0.113.9\"}\n");
  const size_t inflated = text.size();
  const std::string gz = Gzip(text, 9);
  text.clear();
  text.shrink_to_fit();
  ASSERT_LT(gz.size(), 16u << 20);
  client_->set_read_timeout(60, 0);  // a bound for a slow machine, not a timing assumption
  auto res = Post(gz);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  size_t records = 0, largest = 0;
  for (const auto& batch : batches_) {
    records += static_cast<size_t>(batch.records_size());
    largest = std::max(largest, HeldBytes(batch));
    EXPECT_LE(batch.records_size(), 500);
  }
  EXPECT_LE(largest, 2u << 20);
  EXPECT_EQ(records, n + 2);
  ASSERT_FALSE(batches_.empty());
  const auto& last = batches_.back().records();
  ASSERT_GE(last.size(), 2);
  EXPECT_EQ(last[last.size() - 2].line().size(), (32u << 10) + 1);  // cut one byte past the cap
  EXPECT_TRUE(last[last.size() - 1].line() == "{\"ClientIP\":\"203.0.113.9\"}")
      << last[last.size() - 1].line().size();  // not the 16 KB line itself
  EXPECT_EQ(Metric("palisade_logpush_records_cut_total"), 1);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), n + 2);
  EXPECT_EQ(Metric("palisade_logpush_body_bytes_total", "form=inflated"), inflated);
  EXPECT_EQ(Outcome("ok"), 1);
}

// A batch emptied with Clear() keeps its records and each line's capacity (protobuf 3.21): batch
// j of j one-byte records then one long record reused the j long strings of the batches before,
// so a sender who knows the secret made each batch hold ~j records' worth of long lines (8 MiB
// each by default: ~1 GiB per upload). Each batch starts fresh now.
TEST_F(LogpushServerTest, SmallThenLongBatchesDoNotKeepTheLongLinesOfTheBatchesBefore) {
  LogpushReceiverOptions options;
  options.max_record_bytes = 64 << 10;
  options.max_batch_bytes = (64 << 10) + 1 + LogpushReceiver::kRecordHeldBytes;
  StartReceiver(options);
  constexpr size_t kHeld = LogpushReceiver::kRecordHeldBytes;
  // Batch j (from 1): j one-byte records, then one whose length fills the batch exactly, so the
  // next one-byte record starts batch j + 1.
  std::string text;
  constexpr int kBatches = 40;
  for (int j = 1; j <= kBatches; ++j) {
    for (int i = 0; i < j; ++i) text += "x\n";
    const size_t long_line = options.max_batch_bytes - kHeld - j * (1 + kHeld);
    text += std::string(long_line, 'L') + "\n";
  }
  auto res = Post(Gzip(text));
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  ASSERT_EQ(batches_.size(), static_cast<size_t>(kBatches));
  EXPECT_EQ(batches_.back().records_size(), kBatches + 1);
  EXPECT_LE(largest_space_used_, options.max_batch_bytes + (16 << 10));
}

// The 200 may be lost after the sink took the upload (a write timeout, a reset, a kill): Logpush
// sends the same file again, and an old upload can be replayed by anyone holding the secret. A
// resend within duplicate_window is answered 200 without reaching the sink.
TEST_F(LogpushServerTest, TheSameUploadPostedTwiceReachesTheSinkOnce) {
  SimulatedClock clock;
  LogpushReceiverOptions options;
  options.clock = &clock;
  StartReceiver(options);
  const std::string file = Gzip(Rays({"one", "two", "three"}));
  auto first = Post(file);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  auto again = Post(file);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(batches_.size(), 1u);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 3);
  EXPECT_EQ(Outcome("ok"), 1);
  EXPECT_EQ(Outcome("duplicate"), 1);
  // The same lines sent uncompressed are the same upload.
  auto plain = Post(Rays({"one", "two", "three"}), "");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 200);
  EXPECT_EQ(batches_.size(), 1u);
  EXPECT_EQ(Outcome("duplicate"), 2);
  // Other lines are another upload; past the window the same file is taken again.
  auto other = Post(Gzip(Rays({"one", "two"})));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
  EXPECT_EQ(batches_.size(), 2u);
  clock.Advance(absl::Hours(1) + absl::Seconds(1));
  auto later = Post(file);
  ASSERT_TRUE(later);
  EXPECT_EQ(later->status, 200);
  EXPECT_EQ(batches_.size(), 3u);
  EXPECT_EQ(Outcome("duplicate"), 2);
}

// An upload is handed over batch by batch: when the sink refuses one midway, the batches before
// it were taken. The reply is 503 (not all taken), and Logpush's retry hands only the rest.
TEST_F(LogpushServerTest, ARetryAfterASinkFailureMidUploadCountsEachRecordOnce) {
  LogpushReceiverOptions options;
  options.max_batch_records = 2;
  int calls = 0;
  before_sink_ = [&] { fail_ = ++calls == 2; };
  StartReceiver(options);
  const std::string file = Gzip(Rays({"r1", "r2", "r3", "r4", "r5", "r6"}));
  auto refused = Post(file);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_THAT(Lines(batches_[0]), ElementsAre(Ray("r1"), Ray("r2")));
  auto retried = Post(file);
  ASSERT_TRUE(retried);
  EXPECT_EQ(retried->status, 200);
  std::vector<std::string> all;
  for (const auto& batch : batches_) {
    for (const std::string& line : Lines(batch)) all.push_back(line);
  }
  std::vector<std::string> want;
  for (const char* r : {"r1", "r2", "r3", "r4", "r5", "r6"}) want.push_back(Ray(r));
  EXPECT_EQ(all, want);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 6);
  EXPECT_EQ(Outcome("unavailable"), 1);
  EXPECT_EQ(Outcome("ok"), 1);
  // And once all is taken, a third send is a duplicate.
  auto third = Post(file);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 200);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 6);
  EXPECT_EQ(Outcome("duplicate"), 1);
}

// Two uploads can be the same lines (second-resolution timestamps, a job whose fields leave out
// RayID, a quiet zone's identical requests in one second): a batch was skipped as a resend when
// only its lines matched an earlier one's, and the second upload's records never reached the
// rules. Only batches whose every record carries a RayID are looked for and remembered.
TEST_F(LogpushServerTest, UploadsWithoutRayIdsAreNeverSkippedAsResends) {
  LogpushReceiverOptions options;
  options.max_batch_records = 2;
  StartReceiver(options);
  const std::string same = "{\"ClientIP\":\"203.0.113.5\",\"EdgeStartTimestamp\":1700000000}\n";
  for (int i = 0; i < 2; ++i) {
    auto res = Post(Gzip(same + same));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  EXPECT_EQ(batches_.size(), 2u);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 4);
  EXPECT_EQ(Outcome("duplicate"), 0);
  EXPECT_EQ(Outcome("ok"), 2);
  EXPECT_EQ(Metric("palisade_logpush_batches_not_deduplicated_total"), 2);
  // One record without it makes its batch not skippable; the batch of RayIDs before it is.
  const std::string mixed = Gzip(Rays({"a", "b"}) + Rays({"c"}) + same);
  for (int i = 0; i < 2; ++i) {
    auto res = Post(mixed);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  EXPECT_EQ(batches_.size(), 5u);  // 2 + {a,b} once + {c,same} twice
  EXPECT_EQ(Outcome("duplicate"), 0);
  EXPECT_EQ(Metric("palisade_logpush_batches_not_deduplicated_total"), 4);
}

// The RayID check was a substring match for "RayID": a client whose User-Agent or Referer is
// exactly RayID is written "ClientRequestUserAgent":"RayID", and two uploads of such records
// (the same lines) were one: the second was skipped as a resend and never reached the rules.
// Only a top-level key counts.
TEST_F(LogpushServerTest, RayIdAsAValueOrANestedKeyIsNotARayId) {
  StartReceiver();
  const std::vector<std::string> records = {
      "{\"ClientIP\":\"203.0.113.5\",\"ClientRequestUserAgent\":\"RayID\"}",
      "{\"ClientRequestReferer\": \"RayID\" ,\"ClientIP\":\"203.0.113.5\"}",
      // A value holding ","RayID":" (its quotes escaped, as they are in a value).
      "{\"ClientRequestUserAgent\":\"x\\\",\\\"RayID\\\":\\\"1\"}",
      "{\"RequestHeaders\":{\"RayID\":\"7d1c2a3b4c5d6e7f\"}}",  // not the record's own key
      "{\"SecurityActions\":[\"RayID\"],\"ClientIP\":\"203.0.113.5\"}",
      "[\"RayID\",\"RayID\"]",
  };
  for (const std::string& record : records) {
    for (int i = 0; i < 2; ++i) {
      auto res = Post(Gzip(record + "\n" + record + "\n"));
      ASSERT_TRUE(res);
      EXPECT_EQ(res->status, 200);
    }
  }
  EXPECT_EQ(batches_.size(), 2 * records.size());
  EXPECT_EQ(Outcome("duplicate"), 0);
  EXPECT_EQ(Metric("palisade_logpush_batches_not_deduplicated_total"), 2 * records.size());
  // The key itself, wherever it is among the top-level keys and however spaced, still counts.
  const std::string keyed = Gzip(
      "{\"ClientRequestUserAgent\":\"RayID\",\"RequestHeaders\":{\"a\":[1,{\"b\":2}]},"
      "\"RayID\":\"7d1c2a3b4c5d6e7f\"}\n"
      "{ \"RayID\" : \"7d1c2a3b4c5d6e80\" }\n");
  for (int i = 0; i < 2; ++i) {
    auto res = Post(keyed);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  EXPECT_EQ(batches_.size(), 2 * records.size() + 1);
  EXPECT_EQ(Outcome("duplicate"), 1);
}

// A refusal partway through an upload without RayIDs (the sink refusing batch k, or a 400 or 413
// after some batches) left the batches it had handed unremembered, and Logpush's resend of the
// file handed them again: their records were counted twice. The batches an upload answered
// non-2xx had handed are remembered whatever their RayIDs; its resend skips each once.
TEST_F(LogpushServerTest, ARetryWithoutRayIdsAfterARefusalMidUploadCountsEachRecordOnce) {
  LogpushReceiverOptions options;
  options.max_batch_records = 2;
  int calls = 0;
  before_sink_ = [&] { fail_ = ++calls == 2; };
  StartReceiver(options);
  const std::string file = Gzip("r1\nr2\nr3\nr4\nr5\nr6\n");
  auto refused = Post(file);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  ASSERT_EQ(batches_.size(), 1u);
  auto retried = Post(file);
  ASSERT_TRUE(retried);
  EXPECT_EQ(retried->status, 200);
  std::vector<std::string> all;
  for (const auto& batch : batches_) {
    for (const std::string& line : Lines(batch)) all.push_back(line);
  }
  EXPECT_THAT(all, ElementsAre("r1", "r2", "r3", "r4", "r5", "r6"));
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 6);
  EXPECT_EQ(Outcome("unavailable"), 1);
  EXPECT_EQ(Outcome("ok"), 1);
  // Skipped once: the same lines sent after the resend was taken are another file (without
  // RayIDs files are not told apart), and are handed.
  auto again = Post(file);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 12);
  EXPECT_EQ(Outcome("duplicate"), 0);
}

// A 413 after batches were handed: the resend is refused again at the same record, and hands
// none of them again (those it skipped are remembered again, for the next resend).
TEST_F(LogpushServerTest, ResendsOfAnUploadRefusedAfterSomeBatchesHandNoneOfThemAgain) {
  LogpushReceiverOptions options;
  options.max_batch_records = 2;
  options.max_records = 3;
  StartReceiver(options);
  const std::string file = Gzip("r1\nr2\nr3\nr4\n");
  for (int i = 0; i < 3; ++i) {
    client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
    auto res = Post(file);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 413);
  }
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_THAT(Lines(batches_[0]), ElementsAre("r1", "r2"));
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 2);
  EXPECT_EQ(Outcome("too_many_records"), 3);
}

TEST_F(LogpushServerTest, ADuplicateWindowOfZeroHandsEveryResend) {
  LogpushReceiverOptions options;
  options.duplicate_window = absl::ZeroDuration();
  StartReceiver(options);
  const std::string file = Gzip(Rays({"one", "two"}));
  for (int i = 0; i < 2; ++i) {
    auto res = Post(file);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  EXPECT_EQ(batches_.size(), 2u);
  EXPECT_EQ(Outcome("duplicate"), 0);
  EXPECT_EQ(Metric("palisade_logpush_batches_not_deduplicated_total"), 2);
}

// The pipeline's time is not the sender's: batches were handed between reads of the body, so an
// upload whose pipeline work took longer than request_timeout (a million records, four in
// flight) had its next read cut at the deadline and was answered 408, and Logpush sent it again.
// The body is read whole first; the sink then takes as long as it takes.
TEST_F(LogpushServerTest, ASinkSlowerThanTheRequestTimeoutStillGets200) {
  SimulatedClock clock;
  LogpushReceiverOptions options;
  options.clock = &clock;
  options.request_timeout = absl::Seconds(60);
  options.max_batch_records = 100;
  before_sink_ = [&] { clock.Advance(absl::Seconds(61)); };  // each batch takes 61 s
  StartReceiver(options);
  std::string text;
  for (int i = 0; i < 20'000; ++i) absl::StrAppend(&text, "{\"RayID\":\"", i, "\"}\n");
  auto res = Post(text, "");  // plain: sent in many reads, the first batch full after the first
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(batches_.size(), 200u);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 20'000);
  EXPECT_EQ(Outcome("timeout"), 0);
  EXPECT_EQ(Outcome("ok"), 1);
}

TEST_F(LogpushServerTest, PastMaxInFlightIs503Busy) {
  LogpushReceiverOptions options;
  options.max_in_flight = 1;
  absl::Notification in_sink, release;
  before_sink_ = [&] {
    if (!in_sink.HasBeenNotified()) {
      in_sink.Notify();
      release.WaitForNotification();
    }
  };
  StartReceiver(options);
  std::thread first([&] {
    httplib::Client c("127.0.0.1", receiver_->port());
    auto res = c.Post("/logpush", {{"Authorization", kSecret}}, "held\n", "text/plain");
    EXPECT_TRUE(res && res->status == 200);
  });
  in_sink.WaitForNotification();
  auto busy = Post("second\n", "");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 503);
  EXPECT_EQ(Outcome("busy"), 1);
  release.Notify();
  first.join();
  client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
  auto after = Post("second\n", "");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(Metric("palisade_logpush_lines_total"), 2);
}

TEST_F(LogpushServerTest, AnUploadPastTheRequestTimeoutIs408) {
  SimulatedClock clock;
  LogpushReceiverOptions options;
  options.clock = &clock;
  options.request_timeout = absl::Seconds(60);
  StartReceiver(options);
  int chunks = 0;
  auto res = client_->Post(
      "/logpush", {{"Authorization", kSecret}},
      [&](size_t, httplib::DataSink& sink) {
        if (chunks == 2) {
          sink.done();
          return true;
        }
        if (chunks++ == 1) {
          // The upload has begun at the server (its start time taken): now a sender trickling
          // its body lets more than request_timeout pass before its next bytes.
          const absl::Time deadline = absl::Now() + absl::Seconds(60);
          while (Metric("palisade_logpush_in_flight") < 1 && absl::Now() < deadline) {
            absl::SleepFor(absl::Milliseconds(5));
          }
          clock.Advance(absl::Seconds(61));
        }
        return sink.write("line\n", 5);
      },
      "text/plain");
  if (res) {
    EXPECT_EQ(res->status, 408);
  }
  EXPECT_EQ(Outcome("timeout"), 1);
  EXPECT_TRUE(batches_.empty());
}

// A raw loopback connection (from the loopback address `from`: Linux answers for all of 127/8)
// that sends `start`, then one byte of `trickle` each Step(), until the server answers or
// closes: a sender that keeps every per-read timeout from firing.
class SlowSender {
 public:
  SlowSender(int port, const std::string& start, char trickle, const char* from = "127.0.0.1")
      : trickle_(trickle) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, from, &src.sin_addr);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0) << from;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::send(fd_, start.data(), start.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(start.size()));
  }
  ~SlowSender() { ::close(fd_); }

  // Reads what the server sent; sends one more byte while it has sent nothing.
  void Step() {
    if (closed_) return;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      char buf[512];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        closed_ = true;
      } else {
        got_.append(buf, static_cast<size_t>(n));
      }
      return;
    }
    if (got_.empty() && ::send(fd_, &trickle_, 1, MSG_NOSIGNAL) != 1) closed_ = true;
  }
  bool closed() const { return closed_; }
  const std::string& got() const { return got_; }

 private:
  const char trickle_;
  int fd_ = -1;
  bool closed_ = false;
  std::string got_;
};

using SlowSenders = std::vector<std::unique_ptr<SlowSender>>;

// `n` slow senders, from 127.0.0.11, .12, .13... in turn, `per_address` each.
SlowSenders OpenSlowSenders(int port, int n, const std::string& start, char trickle,
                            int per_address = 2) {
  SlowSenders out;
  for (int i = 0; i < n; ++i) {
    const std::string from = absl::StrCat("127.0.0.", 11 + i / per_address);
    out.push_back(std::make_unique<SlowSender>(port, start, trickle, from.c_str()));
  }
  return out;
}

// Steps every sender each 50 ms, moving `clock` on by `step` each time (past any deadline a
// worker fixed before), until all are closed or 30 s pass. Whether all were closed.
bool TrickleUntilClosed(SlowSenders& senders, SimulatedClock* clock, absl::Duration step) {
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  for (;;) {
    bool all_closed = true;
    for (auto& s : senders) {
      s->Step();
      all_closed &= s->closed();
    }
    if (all_closed) return true;
    if (absl::Now() > give_up) return false;
    if (clock != nullptr) clock->Advance(step);
    absl::SleepFor(absl::Milliseconds(50));
  }
}

// A request's headers sent a byte at a time, each byte well within the per-read timeout, held
// every worker for ever: the upload's time limit started in the handler, after the headers. The
// deadline now runs from when a worker waits for the request's first byte.
TEST_F(LogpushServerTest, HeadersSentSlowlyAreCutAtTheRequestTimeout) {
  SimulatedClock clock;
  LogpushReceiverOptions options;
  options.clock = &clock;
  options.request_timeout = absl::Seconds(60);
  StartReceiver(options);  // max_in_flight 4: 6 workers
  SlowSenders slow =
      OpenSlowSenders(receiver_->port(), 6, "POST /logpush HTTP/1.1\r\nX-Slow: ", 'a');
  EXPECT_TRUE(TrickleUntilClosed(slow, &clock, absl::Seconds(61)));
  for (const auto& s : slow) {
    EXPECT_THAT(s->got(), ::testing::StartsWith("HTTP/1.1 408 "));
    // The answer is whole: its body as long as it says.
    const size_t at = s->got().find("Content-Length: ");
    const size_t body = s->got().find("\r\n\r\n");
    ASSERT_NE(at, std::string::npos);
    ASSERT_NE(body, std::string::npos);
    EXPECT_EQ(std::to_string(s->got().size() - body - 4),
              s->got().substr(at + 16, s->got().find("\r\n", at) - at - 16));
  }
  EXPECT_EQ(Outcome("timeout"), 6);
  slow.clear();
  auto res = Post(Gzip("after the slow ones\n"));  // the clock stands still now
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
}

// After the secret was checked, a chunk-size line sent a byte at a time escaped the timer too
// (it ran only when body bytes reached the handler).
TEST_F(LogpushServerTest, AChunkSizeLineSentSlowlyIsCutAtTheRequestTimeout) {
  SimulatedClock clock;
  LogpushReceiverOptions options;
  options.clock = &clock;
  StartReceiver(options);
  SlowSenders slow = OpenSlowSenders(
      receiver_->port(), 1,
      absl::StrCat("POST /logpush HTTP/1.1\r\nHost: x\r\nAuthorization: ", kSecret,
                   "\r\nTransfer-Encoding: chunked\r\n\r\n"),
      '0');
  EXPECT_TRUE(TrickleUntilClosed(slow, &clock, absl::Seconds(61)));
  EXPECT_THAT(slow[0]->got(), ::testing::StartsWith("HTTP/1.1 408 "));
  EXPECT_EQ(Outcome("timeout"), 1);
  EXPECT_EQ(Outcome("read_error"), 0);
  EXPECT_TRUE(batches_.empty());
}

// Six slow senders from one address held every worker (6 with max_in_flight 4), each for up to
// request_timeout and again as it reconnected, before the secret could be checked: no upload got
// in. One address gets max_in_flight + 1 connections served at once; the rest are closed
// unread, so a worker is left for other senders.
TEST_F(LogpushServerTest, SlowSendersFromOneAddressLeaveWorkersForOthers) {
  SimulatedClock clock;  // never moved: no deadline passes
  LogpushReceiverOptions options;
  options.clock = &clock;
  StartReceiver(options);  // max_in_flight 4: 6 workers
  SlowSenders slow = OpenSlowSenders(receiver_->port(), 6, "POST /logpush HTTP/1.1\r\nX-Slow: ",
                                     'a', /*per_address=*/6);
  std::atomic<bool> done{false};
  std::thread trickle([&] {  // keeps them sending while the upload below waits
    while (!done.load()) {
      for (auto& s : slow) s->Step();
      absl::SleepFor(absl::Milliseconds(50));
    }
  });
  client_->set_read_timeout(30, 0);  // a bound for a slow machine, not a timing assumption
  auto res = Post(Gzip("while they trickle\n"));  // from 127.0.0.1
  done = true;
  trickle.join();
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_THAT(Lines(batches_[0]), ElementsAre("while they trickle"));
  size_t closed = 0;
  for (const auto& s : slow) {
    s->Step();  // the refused one was closed before the upload was served: seen at once
    closed += s->closed() && s->got().empty() ? 1 : 0;
  }
  EXPECT_EQ(closed, 1u);  // closed unread: past the address's 5
  EXPECT_EQ(Outcome("address_busy"), 1);
}

// Stop joined workers that were reading such headers, for as long as their senders went on.
TEST_F(LogpushServerTest, StopReturnsWhileSlowSendersHoldEveryWorker) {
  SimulatedClock clock;  // never moved: no deadline passes
  LogpushReceiverOptions options;
  options.clock = &clock;
  StartReceiver(options);
  SlowSenders slow =
      OpenSlowSenders(receiver_->port(), 6, "POST /logpush HTTP/1.1\r\nX-Slow: ", 'a');
  // Give the workers time to take the connections (ordering only: nothing is asserted on it).
  for (int i = 0; i < 10; ++i) {
    for (auto& s : slow) s->Step();
    absl::SleepFor(absl::Milliseconds(50));
  }
  absl::Notification stopped;
  std::thread stopper([&] {
    receiver_->Stop();
    stopped.Notify();
  });
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!stopped.HasBeenNotified() && absl::Now() < give_up) {
    for (auto& s : slow) s->Step();
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(stopped.HasBeenNotified());
  slow.clear();  // closing them lets a Stop that hung return
  stopper.join();
}

// Writes a self-signed certificate and its key (P-256) for 127.0.0.1.
void WriteSelfSigned(const std::string& cert_path, const std::string& key_path) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  ASSERT_NE(key, nullptr);
  X509* x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  ASSERT_GT(X509_sign(x, key, EVP_sha256()), 0);
  FILE* f = std::fopen(cert_path.c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  f = std::fopen(key_path.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(key);
}

// A TLS handshake was bounded per read only: a ClientHello record sent a byte at a time held a
// worker. It counts against the first request's deadline.
TEST_F(LogpushServerTest, ATlsHandshakeSentSlowlyIsCutAtTheRequestTimeout) {
  const std::string cert = absl::StrCat(std::getenv("TEST_TMPDIR"), "/slow_cert.pem");
  const std::string key = absl::StrCat(std::getenv("TEST_TMPDIR"), "/slow_key.pem");
  WriteSelfSigned(cert, key);
  SimulatedClock clock;
  LogpushReceiverOptions options;
  options.clock = &clock;
  StartReceiver(options, [&](palisade::v1::LogpushInput& c) {
    c.set_tls_cert_file(cert);
    c.set_tls_key_file(key);
  });
  // A handshake record's header announcing 16383 bytes, then its body a byte at a time.
  SlowSenders slow =
      OpenSlowSenders(receiver_->port(), 1, std::string("\x16\x03\x01\x3f\xff", 5), '\x01');
  EXPECT_TRUE(TrickleUntilClosed(slow, &clock, absl::Seconds(61)));
  EXPECT_EQ(Outcome("timeout"), 1);
  slow.clear();
  httplib::SSLClient tls("127.0.0.1", receiver_->port());
  tls.enable_server_certificate_verification(false);
  auto res = tls.Post("/logpush", {{"Authorization", kSecret}}, "over tls\n", "text/plain");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_THAT(Lines(batches_[0]), ElementsAre("over tls"));
}

// httplib reads a multipart/form-data body with its multipart reader, which the handler's plain
// content receiver cannot serve: httplib answered 500 (std::bad_function_call), counted nowhere.
TEST_F(LogpushServerTest, AMultipartUploadIs415AndCountedBeforeItsBodyIsRead) {
  StartReceiver();
  const std::string body =
      "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.gz\"\r\n"
      "\r\nx\n\r\n--b0undary--\r\n";
  auto res = client_->Post("/logpush", {{"Authorization", kSecret}}, body,
                           "multipart/form-data; boundary=b0undary");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 415);
  EXPECT_THAT(res->body, HasSubstr("multipart/form-data"));
  EXPECT_FALSE(res->has_header("EXCEPTION_WHAT"));
  EXPECT_EQ(Outcome("bad_content_type"), 1);
  EXPECT_EQ(Metric("palisade_logpush_malformed_total", "reason=content_type"), 1);
  EXPECT_EQ(Metric("palisade_logpush_body_bytes_total", "form=sent"), 0);
  EXPECT_TRUE(batches_.empty());
}

TEST_F(LogpushServerTest, OtherPathsAndMethodsAreRefusedUnread) {
  StartReceiver();
  auto other = Post(Gzip("x\n"), "gzip", kSecret, "/elsewhere");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
  auto get = client_->Get("/logpush");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
  EXPECT_TRUE(batches_.empty());
}

TEST_F(LogpushServerTest, ACustomPathAndTheDatasetFormat) {
  StartReceiver({}, [](palisade::v1::LogpushInput& c) {
    c.set_path("/cf/firewall_events.v1");
    c.set_source("edge");
    c.set_format("logpush_firewall_events");
  });
  auto res = Post("x\n", "", kSecret, "/cf/firewall_events.v1");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_EQ(batches_[0].source(), "edge");
  EXPECT_EQ(batches_[0].format(), palisade::v1::LOG_FORMAT_LOGPUSH_FIREWALL_EVENTS);
  client_ = std::make_unique<httplib::Client>("127.0.0.1", receiver_->port());
  auto dot = Post("x\n", "", kSecret, "/cf/firewall_eventsXv1");  // '.' is not a regex wildcard
  ASSERT_TRUE(dot);
  EXPECT_EQ(dot->status, 404);
}

// --- bad config ----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<LogpushReceiver>> StartWith(const palisade::v1::LogpushInput& c,
                                                          prometheus::Registry& registry) {
  return LogpushReceiver::Start(
      c, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry);
}

palisade::v1::LogpushInput Valid() {
  palisade::v1::LogpushInput c;
  c.set_name("cf");
  c.set_listen("127.0.0.1:0");
  c.set_format("raw");
  c.set_secret_file(TempFile("secret2", kSecret));
  return c;
}

TEST(LogpushConfigTest, APortInUseNamesTheInput) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  palisade::v1::LogpushInput c = Valid();
  c.set_listen(absl::StrCat("127.0.0.1:", ntohs(a.sin_port)));
  prometheus::Registry registry;
  EXPECT_THAT(StartWith(c, registry),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("inputs.logpush \"cf\"")));
  ::close(fd);
}

TEST(LogpushConfigTest, UnreadableFilesNameTheInputNeverTheSecret) {
  prometheus::Registry registry;
  palisade::v1::LogpushInput c = Valid();
  c.set_secret_file("/nonexistent/secret");
  EXPECT_THAT(StartWith(c, registry),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("inputs.logpush \"cf\"")));
  c = Valid();
  c.clear_secret_file();
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument));
  c = Valid();
  c.set_secret_file(TempFile("empty", "\n"));
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument));
  c = Valid();
  c.set_tls_cert_file("/nonexistent/cert.pem");
  c.set_tls_key_file("/nonexistent/key.pem");
  absl::StatusOr<std::unique_ptr<LogpushReceiver>> r = StartWith(c, registry);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kNotFound, HasSubstr("inputs.logpush \"cf\"")));
  EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr("s3cr3t")));
  // Files that exist but are no certificate.
  c.set_tls_cert_file(TempFile("cert.pem", "not a certificate"));
  c.set_tls_key_file(TempFile("key.pem", "not a key"));
  r = StartWith(c, registry);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inputs.logpush \"cf\"")));
  EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr("s3cr3t")));
}

// A secret file others on the host can read is a secret already shared: refused, naming the
// input and the file, as the Cloudflare token files are (CheckSecretFileMode).
TEST(LogpushConfigTest, ASecretFileOpenToGroupOrOthersIsRefused) {
  prometheus::Registry registry;
  palisade::v1::LogpushInput c = Valid();
  c.set_secret_file(TempFile("open-secret", kSecret));
  for (mode_t mode : {0644, 0640, 0604, 0660, 0620}) {
    ASSERT_EQ(::chmod(c.secret_file().c_str(), mode), 0);
    absl::StatusOr<std::unique_ptr<LogpushReceiver>> r = StartWith(c, registry);
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kPermissionDenied,
                            AllOf(HasSubstr("inputs.logpush \"cf\""), HasSubstr("open-secret"),
                                  HasSubstr("chmod 600"))))
        << std::oct << mode;
    EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr("s3cr3t")));
  }
  ASSERT_EQ(::chmod(c.secret_file().c_str(), 0400), 0);
  EXPECT_TRUE(StartWith(c, registry).ok());
  // A directory is no secret file.
  c.set_secret_file(std::getenv("TEST_TMPDIR"));
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("inputs.logpush \"cf\"")));
}

// A FIFO at the secret's path (mode 0600): opened without blocking (a blocking open waits for a
// writer that may never come, and the start with it) and refused. Run beside the test so a
// blocked open fails it (after a minute, then unblocked by a writer) instead of hanging it.
TEST(LogpushConfigTest, ASecretFifoIsRefusedWithoutBlocking) {
  prometheus::Registry registry;
  const std::string fifo = absl::StrCat(std::getenv("TEST_TMPDIR"), "/secret-fifo");
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  palisade::v1::LogpushInput c = Valid();
  c.set_secret_file(fifo);
  std::future<absl::StatusOr<std::unique_ptr<LogpushReceiver>>> started =
      std::async(std::launch::async, [&] { return StartWith(c, registry); });
  if (started.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    ADD_FAILURE() << "the secret's read blocked on a FIFO";
    const int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // lets the blocked open return
    if (w >= 0) ::close(w);
  }
  EXPECT_THAT(started.get(), StatusIs(absl::StatusCode::kInvalidArgument,
                                      AllOf(HasSubstr("inputs.logpush \"cf\""),
                                            HasSubstr("not a regular file"))));
}

// The secret is one header value: a file past 64 KiB is not one (a log, a disk image named by
// mistake), refused instead of read whole into memory.
TEST(LogpushConfigTest, ASecretFileOver64KiBIsRefused) {
  prometheus::Registry registry;
  palisade::v1::LogpushInput c = Valid();
  c.set_secret_file(TempFile("huge-secret", std::string((64 << 10) + 1, 'x')));
  EXPECT_THAT(StartWith(c, registry),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("inputs.logpush \"cf\""), HasSubstr("64 KiB"))));
  c.set_secret_file(TempFile("big-secret", std::string(64 << 10, 'x')));
  EXPECT_TRUE(StartWith(c, registry).ok());
}

// The secret typed where its file goes: the message naming the file shows a token shape only
// as its fingerprint (the config refuses such a value first).
TEST(LogpushConfigTest, ATokenWrittenAsTheSecretFileIsRedactedFromTheError) {
  prometheus::Registry registry;
  constexpr char kToken[] = "cfut_0123456789abcdefghijABCDEFGHIJ0123456789";
  palisade::v1::LogpushInput c = Valid();
  c.set_secret_file(kToken);
  EXPECT_THAT(StartWith(c, registry),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("inputs.logpush \"cf\""), HasSubstr("[token sha256:"),
                             Not(HasSubstr(kToken)))));
}

TEST(LogpushConfigTest, BadNamesPathsAndFormatsAreRefused) {
  prometheus::Registry registry;
  palisade::v1::LogpushInput c = Valid();
  c.set_name("Bad Name");
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument));
  c = Valid();
  c.set_path("logpush");
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument));
  c = Valid();
  c.set_path("/a(b)");
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument));
  c = Valid();
  c.set_format("nonsense");
  EXPECT_THAT(StartWith(c, registry),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inputs.logpush \"cf\"")));
  c = Valid();
  c.clear_format();
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument));
  c = Valid();
  c.set_listen("nowhere");
  EXPECT_THAT(StartWith(c, registry), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace palisade
