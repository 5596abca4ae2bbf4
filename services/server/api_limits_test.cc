#include "services/server/api_limits.h"

#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include <string>
#include <vector>

#include "google/protobuf/util/message_differencer.h"
#include "gmock/gmock.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/common/status_matchers.h"

namespace palisade {
namespace {

using palisade::v1::LogBatch;
using ::palisade::testing::IsOk;
using ::palisade::testing::StatusIs;
using ::testing::ElementsAre;

// `bytes` as gRPC hands a message over: in `pieces` slices.
grpc::ByteBuffer InSlices(const std::string& bytes, int pieces) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  for (int i = 0; i < pieces; ++i) {
    const size_t end = i + 1 == pieces ? bytes.size() : bytes.size() * (i + 1) / pieces;
    slices.emplace_back(bytes.substr(at, end - at));
    at = end;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

LogBatch LinesBatch() {
  LogBatch batch;
  batch.set_sequence(42);
  batch.set_source("web-1:/var/log/auth.log");
  batch.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
  const std::vector<std::string> lines = {"first line", "", std::string("nul\0byte", 8), "last"};
  for (const std::string& line : lines) batch.add_records()->set_line(line);
  return batch;
}

// Whether no line holds a NUL or a byte past ASCII, a byte at a time.
bool AllPlain(const std::vector<std::string>& lines) {
  for (const std::string& line : lines) {
    for (unsigned char c : line) {
      if (c == 0 || c >= 0x80) return false;
    }
  }
  return true;
}

class ApiLimitsTest : public ::testing::Test {
 protected:
  // What the daemon's views path gives for `bytes`, checked against the protobuf parse: when
  // it answers, the header is the parse without its records and the lines are the records'.
  // Returns whether it answered.
  bool Agrees(const std::string& bytes, int pieces = 1) {
    ApiLimits::Wire wire;
    EXPECT_THAT(limits_.Read(InSlices(bytes, pieces), &wire), IsOk());
    LogBatch header;
    std::vector<absl::string_view> lines;
    bool plain = true;
    std::vector<bool> cut;
    const bool viewed = limits_.ParseLogBatchLines(wire, &header, &lines, &plain, &cut);
    LogBatch parsed;
    const bool parses = limits_.ParseLogBatch(wire, &parsed).ok();
    if (!viewed) return false;
    EXPECT_TRUE(parses) << "the views path took bytes the parse refuses";
    if (!parses) return true;
    std::vector<std::string> records;
    for (const auto& r : parsed.records()) records.push_back(r.line());
    EXPECT_EQ(std::vector<std::string>(lines.begin(), lines.end()), records);
    EXPECT_EQ(plain, AllPlain(records));
    std::vector<bool> cuts;  // each record's LogRecord.cut
    for (const auto& r : parsed.records()) cuts.push_back(r.cut());
    EXPECT_LE(cut.size(), cuts.size());
    cut.resize(cuts.size());  // shorter: the lines past it are whole
    EXPECT_EQ(cut, cuts);
    parsed.clear_records();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(header, parsed))
        << header.DebugString() << " vs " << parsed.DebugString();
    return true;
  }

  prometheus::Registry registry_;
  ApiLimits limits_{ApiLimits::Options{}, registry_};
};

TEST_F(ApiLimitsTest, ABatchOfLinesIsReadAsViewsIntoTheMessageInOneSliceOrSeveral) {
  const std::string bytes = LinesBatch().SerializeAsString();
  for (int pieces : {1, 2, 7}) {
    ApiLimits::Wire wire;
    ASSERT_THAT(limits_.Read(InSlices(bytes, pieces), &wire), IsOk());
    LogBatch header;
    std::vector<absl::string_view> lines;
    ASSERT_TRUE(limits_.ParseLogBatchLines(wire, &header, &lines)) << pieces;
    EXPECT_THAT(lines, ElementsAre("first line", "", absl::string_view("nul\0byte", 8), "last"));
    EXPECT_EQ(header.sequence(), 42u);
    EXPECT_EQ(header.source(), "web-1:/var/log/auth.log");
    EXPECT_EQ(header.format(), palisade::v1::LOG_FORMAT_SYSLOG);
    EXPECT_EQ(header.records_size(), 0);
    for (absl::string_view line : lines) {  // views into the message's bytes
      EXPECT_TRUE(line.empty() || (line.data() >= wire.bytes.data() &&
                                   line.data() + line.size() <= wire.bytes.data() + wire.bytes.size()));
    }
  }
}

// A record with `cut` (its shipper cut the line: LogRecord.cut) stays on the views path, its
// flag carried per line (LineBatch::cut): one cut line sent the whole batch to the full
// protobuf parse, a record and a string per line. As shippers write it (the flag after the
// line) and in the other shapes a parse takes: the flag first, repeated (the last one wins),
// written as a long varint, false written out, on a record without a line.
TEST_F(ApiLimitsTest, ACutRecordStaysOnTheViewsPathWithItsFlag) {
  LogBatch batch = LinesBatch();
  batch.mutable_records(0)->set_cut(true);
  batch.mutable_records(2)->set_cut(true);
  const std::string bytes = batch.SerializeAsString();
  ApiLimits::Wire wire;
  ASSERT_THAT(limits_.Read(InSlices(bytes, 1), &wire), IsOk());
  LogBatch header;
  std::vector<absl::string_view> lines;
  std::vector<bool> cut;
  ASSERT_TRUE(limits_.ParseLogBatchLines(wire, &header, &lines, nullptr, &cut))
      << "a cut record left the views path";
  EXPECT_THAT(lines, ElementsAre("first line", "", absl::string_view("nul\0byte", 8), "last"));
  EXPECT_THAT(cut, ElementsAre(true, false, true));  // "last": past the end, whole
  // A caller that cannot carry the flag gets the parse, which keeps it.
  EXPECT_FALSE(limits_.ParseLogBatchLines(wire, &header, &lines));
  EXPECT_TRUE(Agrees(bytes));
  EXPECT_TRUE(Agrees(LinesBatch().SerializeAsString()));  // none cut
  // Records in other shapes, each after the lines of LinesBatch.
  for (const std::string& record :
       {std::string("\x20\x01\x0a\x02hi", 6), std::string("\x0a\x02hi\x20\x01\x20\x00", 8),
        std::string("\x0a\x02hi\x20\x00\x20\x01", 8), std::string("\x0a\x02hi\x20\x81\x00", 7),
        std::string("\x0a\x02hi\x20\x00", 6), std::string("\x20\x01", 2)}) {
    std::string odd = LinesBatch().SerializeAsString();
    odd += '\x22';
    odd += static_cast<char>(record.size());
    odd += record;
    EXPECT_TRUE(Agrees(odd)) << absl::CEscape(record);
  }
}

// A tag or a length written longer than protobuf's parse reads them (a tag in at most 5 bytes; a
// length in at most 5, below 2^31 - 16) is refused by the parse, while a CodedInputStream reads
// up to 10 bytes and drops the high bits: the views path must leave those bytes to the parse
// (it took them as a line "hi", or as a cut line), in a record and in a record's own header.
TEST_F(ApiLimitsTest, VarintsLongerThanTheParseReadsAreLeftToIt) {
  const std::vector<std::string> records = {
      std::string("\x0a\x82\x80\x80\x80\x80\x80\x00hi", 10),  // a 7-byte line length
      std::string("\x0a\x82\x80\x80\x80\x10hi", 8),            // 5 bytes, 2 + 2^32
      std::string("\x0a\x82\x80\x80\x80\x08hi", 8),            // 5 bytes, 2 + 2^31
      std::string("\x8a\x80\x80\x80\x80\x00\x02hi", 9),        // a 6-byte line tag
      std::string("\x0a\x02hi\xa0\x80\x80\x80\x80\x00\x01", 11),  // a 6-byte cut tag
  };
  for (const std::string& record : records) {
    std::string odd = LinesBatch().SerializeAsString();
    odd += '\x22';
    odd += static_cast<char>(record.size());
    odd += record;
    EXPECT_FALSE(Agrees(odd)) << absl::CEscape(record);
  }
  // The record's own tag or length written long, around a line "hi".
  for (const std::string& header :
       {std::string("\xa2\x80\x80\x80\x80\x00\x04", 7),
        std::string("\x22\x84\x80\x80\x80\x80\x00", 7),
        std::string("\x22\x84\x80\x80\x80\x10", 6)}) {
    EXPECT_FALSE(Agrees(LinesBatch().SerializeAsString() + header + std::string("\x0a\x02hi", 4)))
        << absl::CEscape(header);
  }
  // As long as the parse reads them (5 bytes, the last below 8 for a length): still views.
  const std::string longest =
      std::string("\xa2\x80\x80\x80\x00\x84\x80\x80\x80\x00\x0a\x02hi", 14) +
      std::string("\x22\x0e\x0a\x82\x80\x80\x80\x00hi\xa0\x80\x80\x80\x00\x01", 16);
  EXPECT_TRUE(Agrees(LinesBatch().SerializeAsString() + longest));
}

TEST_F(ApiLimitsTest, AFollowModeBatchKeepsItsOriginAndUnknownFieldsInTheHeader) {
  LogBatch batch = LinesBatch();
  batch.mutable_origin()->set_shipper_id("host-a");
  batch.mutable_origin()->set_path("/var/log/auth.log");
  for (int end : {11, 12, 21, 26}) batch.mutable_origin()->add_line_ends(end);
  std::string bytes = batch.SerializeAsString();
  bytes += std::string("\xa0\x06\x05", 3);  // field 100, varint 5: unknown to this server
  EXPECT_TRUE(Agrees(bytes));
  // Fields before, between and after the records, and a second source (the last one wins).
  LogBatch later;
  later.set_source("web-2");
  LogBatch first;
  first.set_sequence(7);
  EXPECT_TRUE(Agrees(first.SerializeAsString() + bytes + later.SerializeAsString()));
}

TEST_F(ApiLimitsTest, RecordsWithMoreThanALineGoToTheProtobufParse) {
  LogBatch timed = LinesBatch();
  timed.mutable_records(1)->mutable_event_time()->set_seconds(1700000000);
  EXPECT_FALSE(Agrees(timed.SerializeAsString()));
  LogBatch fields = LinesBatch();
  (*fields.mutable_records(3)->mutable_fields())["unit"] = "ssh.service";
  EXPECT_FALSE(Agrees(fields.SerializeAsString()));
  // A record repeating its line: the parse keeps the last, and so do the views.
  palisade::v1::LogRecord twice;
  twice.set_line("dropped");
  std::string record = twice.SerializeAsString();
  twice.set_line("kept");
  record += twice.SerializeAsString();
  std::string bytes = LinesBatch().SerializeAsString();
  bytes += '\x22';  // field 4, length-delimited
  bytes += static_cast<char>(record.size());
  bytes += record;
  EXPECT_TRUE(Agrees(bytes));
}

TEST_F(ApiLimitsTest, MalformedBytesAreLeftToTheParseWhichRefusesThem) {
  const std::string bytes = LinesBatch().SerializeAsString();
  EXPECT_FALSE(Agrees(bytes.substr(0, bytes.size() - 2)));  // the last record cut short
  EXPECT_FALSE(Agrees(bytes + "\x22\x7f"));                  // a length past the end
  ApiLimits::Wire wire;
  ASSERT_THAT(limits_.Read(InSlices(bytes + "\x22\x7f", 1), &wire), IsOk());
  LogBatch parsed;
  EXPECT_THAT(limits_.ParseLogBatch(wire, &parsed), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Whatever the bytes, the views path never answers differently from the protobuf parse: random
// byte changes, cuts and insertions in batches with and without an origin or cut records (fixed
// seed).
TEST_F(ApiLimitsTest, MutatedMessagesAreReadAsTheParseReadsThemOrNotAtAll) {
  LogBatch with_origin = LinesBatch();
  with_origin.mutable_origin()->set_shipper_id("s");
  with_origin.mutable_origin()->set_path("/l");
  for (int end : {1, 2, 3, 4}) with_origin.mutable_origin()->add_line_ends(end);
  LogBatch with_cut = LinesBatch();  // LogRecord.cut after a line, as shippers write it
  with_cut.mutable_records(0)->set_cut(true);
  with_cut.mutable_records(3)->set_cut(true);
  const std::vector<std::string> seeds = {LinesBatch().SerializeAsString(),
                                          with_origin.SerializeAsString(),
                                          with_cut.SerializeAsString()};
  std::mt19937 random(20261202);
  int answered = 0;
  for (int round = 0; round < 6000; ++round) {
    std::string bytes = seeds[round % seeds.size()];
    const int changes = 1 + static_cast<int>(random() % 3);
    for (int c = 0; c < changes && !bytes.empty(); ++c) {
      const size_t at = random() % bytes.size();
      switch (random() % 3) {
        case 0: bytes[at] = static_cast<char>(random()); break;
        case 1: bytes.erase(at, 1 + random() % 4); break;
        default: bytes.insert(at, 1, static_cast<char>(random())); break;
      }
    }
    if (Agrees(bytes, 1 + static_cast<int>(round % 3))) ++answered;
  }
  // Most mutations still leave a batch of lines the views path reads (and so checks).
  EXPECT_GT(answered, 500);
}

// Lines whose lengths (and their records') take 1 to 4 bytes to write, around each edge: the
// short-length reading of records and lines, and the CodedInputStream past it, agree with the
// parse; so does a record whose length or line length is written long (non-canonical).
TEST_F(ApiLimitsTest, LinesOfEveryLengthEncodingAreReadAsTheParseReadsThem) {
  LogBatch batch = LinesBatch();
  const std::vector<size_t> lengths = {125,     126,     127,     128,     129,
                                       16'381,  16'382,  16'383,  16'384,  16'385,
                                       (1 << 21) - 4, (1 << 21) - 3, 1 << 21};
  for (size_t n : lengths) {
    batch.add_records()->set_line(std::string(n, 'x'));
  }
  const std::string bytes = batch.SerializeAsString();
  for (int pieces : {1, 3}) {
    EXPECT_TRUE(Agrees(bytes, pieces));
    ApiLimits::Wire wire;
    ASSERT_THAT(limits_.Read(InSlices(bytes, pieces), &wire), IsOk());
    EXPECT_EQ(wire.records, static_cast<uint32_t>(batch.records_size()));
  }
  // A record "line" of 3 bytes with its length as a 4-byte varint (3, 0x80 0x80 0x80 0x00 is
  // 0 with continuation bytes), and a record whose own length is written in 5 bytes.
  std::string record = std::string("\x0a\x83\x80\x80\x00", 5) + "abc";
  std::string odd = LinesBatch().SerializeAsString();
  odd += '\x22';
  odd += static_cast<char>(record.size());
  odd += record;
  odd += std::string("\x22\x84\x80\x80\x80\x00", 6) + std::string("\x0a\x02hi", 4);
  EXPECT_TRUE(Agrees(odd));
  ApiLimits::Wire wire;
  ASSERT_THAT(limits_.Read(InSlices(odd, 1), &wire), IsOk());
  LogBatch header;
  std::vector<absl::string_view> lines;
  ASSERT_TRUE(limits_.ParseLogBatchLines(wire, &header, &lines));
  EXPECT_THAT(lines, ElementsAre("first line", "", absl::string_view("nul\0byte", 8), "last",
                                 "abc", "hi"));
}

// `plain` (every line ASCII without a NUL: the pipeline skips its own look at each line) is
// true exactly when no line holds a hostile byte, wherever it sits, whatever the lengths: a
// record or line length past 127 is written with a byte past ASCII between the lines, and a
// sequence past 127 in the header, which must not make a batch of plain lines look hostile; a
// hostile byte in any line must make it so.
TEST_F(ApiLimitsTest, PlainSaysWhetherAnyLineHoldsAHostileByte) {
  std::mt19937 random(18);
  const char kHostile[] = {'\0', '\x80', '\xff', '\xc3'};
  for (int round = 0; round < 400; ++round) {
    LogBatch batch;
    batch.set_sequence(round * 1000);
    batch.set_source("load-0");
    batch.set_format(palisade::v1::LOG_FORMAT_SYSLOG);
    const int count = 1 + static_cast<int>(random() % 40);
    for (int i = 0; i < count; ++i) {
      // Lengths about 127 and past, as well as short and empty lines.
      const size_t length = random() % 4 == 0 ? random() % 8 : 100 + random() % 200;
      std::string line(length, 'a');
      for (char& c : line) c = static_cast<char>(0x20 + random() % 0x5f);
      batch.add_records()->set_line(line);
    }
    if (round % 2 == 1) {  // one hostile byte: its line first, last or anywhere; its place too
      const int which = round % 6 == 1 ? 0 : round % 6 == 3 ? count - 1
                                                             : static_cast<int>(random() % count);
      std::string* line = batch.mutable_records(which)->mutable_line();
      if (line->empty()) *line = "x";
      const size_t at = round % 10 == 1 ? 0 : round % 10 == 3 ? line->size() - 1
                                                              : random() % line->size();
      (*line)[at] = kHostile[random() % 4];
    }
    std::vector<std::string> lines;
    for (const auto& r : batch.records()) lines.push_back(r.line());
    const std::string bytes = batch.SerializeAsString();
    for (int pieces : {1, 3}) {
      ApiLimits::Wire wire;
      ASSERT_THAT(limits_.Read(InSlices(bytes, pieces), &wire), IsOk());
      LogBatch header;
      std::vector<absl::string_view> views;
      bool plain = round % 2 == 1;  // the opposite of the answer expected
      ASSERT_TRUE(limits_.ParseLogBatchLines(wire, &header, &views, &plain));
      EXPECT_EQ(plain, round % 2 == 0) << "round " << round;
      EXPECT_EQ(plain, AllPlain(lines)) << "round " << round;
    }
  }
}

// A stream reads every batch into the same Wire: each Read starts it over, whether the batch
// before came in one slice or several; Done keeps a joined buffer only up to kKeptBytes.
TEST_F(ApiLimitsTest, AWireReadAgainHoldsOnlyTheNewBatch) {
  // Long enough for gRPC to keep its slices apart (it joins small ones).
  const std::string line(3000, 's');
  LogBatch second;
  second.add_records()->set_line(line);
  ApiLimits::Wire wire;
  for (int first_pieces : {1, 3}) {
    for (int pieces : {1, 2}) {
      ASSERT_THAT(limits_.Read(InSlices(LinesBatch().SerializeAsString(), first_pieces), &wire),
                  IsOk());
      if (pieces == 1) wire.Done();  // or not: Read starts over either way
      ASSERT_THAT(limits_.Read(InSlices(second.SerializeAsString(), pieces), &wire), IsOk());
      EXPECT_EQ(wire.records, 1u);
      LogBatch header;
      std::vector<absl::string_view> lines;
      ASSERT_TRUE(limits_.ParseLogBatchLines(wire, &header, &lines));
      EXPECT_THAT(lines, ElementsAre(line)) << first_pieces << " then " << pieces;
      wire.Done();
    }
  }
  LogBatch big;
  big.add_records()->set_line(std::string(ApiLimits::Wire::kKeptBytes, 'x'));
  ASSERT_THAT(limits_.Read(InSlices(big.SerializeAsString(), 2), &wire), IsOk());
  wire.Done();
  EXPECT_LE(wire.joined.capacity(), ApiLimits::Wire::kKeptBytes);
  EXPECT_TRUE(wire.slices.empty());
}

TEST_F(ApiLimitsTest, TheRecordsCapActsBeforeAnythingIsParsed) {
  prometheus::Registry registry;
  ApiLimits::Options options;
  options.max_records_per_batch = 3;
  ApiLimits limits(options, registry);
  ApiLimits::Wire wire;
  EXPECT_THAT(limits.Read(InSlices(LinesBatch().SerializeAsString(), 2), &wire),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

}  // namespace
}  // namespace palisade

namespace palisade {
namespace {

// The records cap bounds records, not what a record holds: a parse allocates a map entry, an
// unknown field or a packed element for a few bytes on the wire each (tens of bytes of memory
// per wire byte). A batch whose parse would hold more than its byte budget is refused, before
// it is parsed, with max_message_bytes named.
// One client's streaming calls (a read-only token's Watch calls that never read, a Ship whose
// acks are never read, a trickled Push) took every slot of api.max_streams, and every shipper's
// Ship was refused. A client holds at most its share (half the pool by default); the others'
// calls still get slots, and a freed slot counts back in its client's share.
TEST(StreamSlotsTest, OneClientCannotTakeEverySlot) {
  prometheus::Registry registry;
  ApiLimits::Options options;
  options.max_streams = 4;
  ApiLimits limits(options, registry);
  EXPECT_EQ(limits.max_streams_per_client(), 2u);
  std::vector<ApiLimits::StreamSlot> held;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ApiLimits::StreamSlot> slot = limits.AcquireStream("Events.Watch", "siem");
    ASSERT_THAT(slot, IsOk());
    held.push_back(*std::move(slot));
  }
  EXPECT_THAT(limits.AcquireStream("Events.Watch", "siem"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(limits.streams_open_by("siem"), 2u);
  absl::StatusOr<ApiLimits::StreamSlot> ship = limits.AcquireStream("Ingest.Ship", "shipper");
  ASSERT_THAT(ship, IsOk());
  EXPECT_EQ(limits.streams_open(), 3u);
  held.pop_back();
  EXPECT_EQ(limits.streams_open_by("siem"), 1u);
  EXPECT_THAT(limits.AcquireStream("Events.Watch", "siem"), IsOk());  // held and given back
  EXPECT_EQ(limits.streams_open_by("siem"), 1u);
  EXPECT_EQ(limits.streams_open(), 2u);
  // Without clients (no token: nobody to tell apart) only the pool applies.
  std::vector<ApiLimits::StreamSlot> anonymous;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ApiLimits::StreamSlot> slot = limits.AcquireStream("Ingest.Ship");
    ASSERT_THAT(slot, IsOk());
    anonymous.push_back(*std::move(slot));
  }
  EXPECT_THAT(limits.AcquireStream("Ingest.Ship"), StatusIs(absl::StatusCode::kResourceExhausted));
  // A configured share.
  ApiLimits::Options three = options;
  three.max_streams_per_client = 3;
  EXPECT_EQ(ApiLimits(three, registry).max_streams_per_client(), 3u);
}

class ParsedBytesTest : public ::testing::Test {
 protected:
  static std::string Varint(uint64_t v) {
    std::string out;
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
    return out;
  }
  absl::Status ReadBatch(const std::string& bytes) {
    ApiLimits::Wire wire;
    return limits_.Read(InSlices(bytes, 3), &wire);
  }
  prometheus::Registry registry_;
  ApiLimits limits_{ApiLimits::Options{}, registry_};
};

TEST_F(ParsedBytesTest, ARecordOfManyMapEntriesIsRefusedBeforeItIsParsed) {
  LogBatch batch;
  palisade::v1::LogRecord* record = batch.add_records();
  record->set_line("a line");
  for (int i = 0; i < 400'000; ++i) (*record->mutable_fields())[absl::StrCat("k", i)] = "";
  const std::string bytes = batch.SerializeAsString();
  ASSERT_LT(bytes.size(), ApiLimits::Options{}.max_message_bytes);
  LogBatch parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  // What the parse holds, for the record: many times the wire's size.
  EXPECT_GT(parsed.SpaceUsedLong(), 4 * bytes.size()) << parsed.SpaceUsedLong();
  EXPECT_THAT(ReadBatch(bytes),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("max_message_bytes")));
}

TEST_F(ParsedBytesTest, ManyUnknownFieldsAreRefusedBeforeTheyAreParsed) {
  std::string bytes = LinesBatch().SerializeAsString();
  // Field 15, length-delimited and empty: two bytes each, a string each once parsed.
  const std::string unknown = {static_cast<char>((15 << 3) | 2), 0};
  for (int i = 0; i < 2'000'000; ++i) bytes += unknown;
  ASSERT_LT(bytes.size(), ApiLimits::Options{}.max_message_bytes);
  EXPECT_THAT(ReadBatch(bytes), StatusIs(absl::StatusCode::kResourceExhausted,
                                         ::testing::HasSubstr("max_message_bytes")));
  // Inside a record too (and inside its event time).
  std::string record = "\x0a\x01x";
  std::string time;
  for (int i = 0; i < 1'000'000; ++i) time += unknown;
  record += "\x12" + Varint(time.size()) + time;
  std::string nested = "\x22" + Varint(record.size()) + record;
  EXPECT_THAT(ReadBatch(nested), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(ParsedBytesTest, AnOriginOfManyPackedOffsetsIsRefused) {
  // origin.line_ends, packed: a byte each on the wire, eight once parsed.
  std::string packed(6'000'000, '\x01');
  std::string origin = "\x0a\x01s" + std::string("\x3a") + Varint(packed.size()) + packed;
  origin[3] = static_cast<char>((palisade::v1::BatchOrigin::kLineEndsFieldNumber << 3) | 2);
  std::string bytes = LinesBatch().SerializeAsString() + "\x2a" + Varint(origin.size()) + origin;
  LogBatch parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  ASSERT_EQ(parsed.origin().line_ends_size(), 6'000'000);
  EXPECT_THAT(ReadBatch(bytes), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(ParsedBytesTest, BatchesAsShippersSendThemStillPass) {
  // The largest batch of lines the caps allow.
  LogBatch lines;
  for (int i = 0; i < 10'000; ++i) lines.add_records()->set_line(std::string(1600, 'x'));
  EXPECT_THAT(ReadBatch(lines.SerializeAsString()), IsOk());
  // And records with event times and a few fields each (journald's).
  LogBatch journal;
  for (int i = 0; i < 10'000; ++i) {
    palisade::v1::LogRecord* r = journal.add_records();
    r->set_line("sshd[123]: Failed password for root from 203.0.113.7 port 22 ssh2");
    r->mutable_event_time()->set_seconds(1'772'000'000 + i);
    for (const char* k : {"_HOSTNAME", "_SYSTEMD_UNIT", "_PID", "PRIORITY", "SYSLOG_IDENTIFIER"}) {
      (*r->mutable_fields())[k] = "some value of a field";
    }
  }
  journal.mutable_origin()->set_shipper_id("web-1");
  for (int i = 0; i < 10'000; ++i) journal.mutable_origin()->add_line_ends(100 * (i + 1));
  EXPECT_THAT(ReadBatch(journal.SerializeAsString()), IsOk());
}

}  // namespace
}  // namespace palisade
