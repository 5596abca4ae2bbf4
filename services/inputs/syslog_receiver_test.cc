#include "services/inputs/syslog_receiver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/clock.h"
#include "services/formats/line_parser.h"
#include "services/pipeline/pipeline.h"
#include "tests/corpus/corpus.h"

namespace palisade {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// The test's senders write to connections the receiver refused or cut off (OpenSSL answers an
// unexpected close with an alert, which may find the socket reset): like any sender they must
// get EPIPE, not the SIGPIPE that ended the process (exit 141) in 1 of ~5 runs of the TLS tests.
const bool kSigpipeIgnored = [] { return std::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

std::vector<std::string> Deframe(const std::vector<std::string>& reads, size_t max,
                                 uint64_t* malformed, bool nul_ends_frames = false) {
  std::string stream;
  SyslogReceiver::DeframeState state;
  state.nul_ends_frames = nul_ends_frames;  // as Connection sets it from the input's config
  std::vector<std::string> frames;
  for (const std::string& r : reads) {
    stream += r;
    SyslogReceiver::Deframe(&stream, max, &state, &frames, malformed);
  }
  return frames;
}

// Every way of cutting `all` into two reads gives `want`, with `malformed` bytes runs counted.
void ExpectInEveryCut(const std::string& all, size_t max, const std::vector<std::string>& want,
                      uint64_t malformed, bool nul_ends_frames = false) {
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    uint64_t counted = 0;
    EXPECT_THAT(Deframe({all.substr(0, cut), all.substr(cut)}, max, &counted, nul_ends_frames),
                ::testing::ElementsAreArray(want))
        << all << " cut at " << cut;
    EXPECT_EQ(counted, malformed) << all << " cut at " << cut;
  }
}

TEST(DeframeTest, OctetCountingAndNewlinesInAnyCutOfTheStream) {
  ExpectInEveryCut("11 <34>1 hello\n<13>Mar  3 14:02:01 h sshd: a\n5 <1>xy<13>b\n", 1024,
                   {"<34>1 hello", "<13>Mar  3 14:02:01 h sshd: a", "<1>xy", "<13>b"}, 0);
}

TEST(DeframeTest, OversizedAndBadFramesAreSkippedAndTheStreamGoesOn) {
  uint64_t malformed = 0;
  const std::string big(300, 'x');
  EXPECT_THAT(Deframe({"300 " + big.substr(0, 100), big.substr(100) + "4 <1>a",
                       "<2>" + big + "\n<3>ok\n", "12x <4>bad\n<5>fine\n"},
                      64, &malformed),
              ElementsAre("<1>a", "<3>ok", "<5>fine"));
  EXPECT_EQ(malformed, 3u);
  // A newline-framed frame with no end in sight is dropped as it comes, up to its newline.
  malformed = 0;
  EXPECT_THAT(Deframe({"<6>" + big, big, big + "\n<7>after\n"}, 64, &malformed),
              ElementsAre("<7>after"));
  EXPECT_EQ(malformed, 1u);
}

// An octet-counted stream (rsyslog's octet-counted framing) has no newlines: a frame whose
// length is not a number must not make the rest of the connection wait for one. The bad frame
// is counted and the stream picks up again at the next "DIGITS SP <", in any cut of the reads.
TEST(DeframeTest, ABadLengthInAnOctetCountedStreamLosesOnlyThatFrame) {
  std::string good;
  std::vector<std::string> want = {"<13>one"};
  for (int i = 0; i < 20; ++i) {
    const std::string m = absl::StrCat("<13>Mar  3 14:02:01 h app: good ", i);
    absl::StrAppend(&good, m.size(), " ", m);
    want.push_back(m);
  }
  const std::string all = "7 <13>one" "7x <13>bad" + good;
  ExpectInEveryCut(all, 1024, want, 1);
  // One byte a read.
  std::vector<std::string> bytes;
  for (char c : all) bytes.emplace_back(1, c);
  uint64_t malformed = 0;
  EXPECT_THAT(Deframe(bytes, 1024, &malformed), ::testing::ElementsAreArray(want));
  EXPECT_EQ(malformed, 1u);
}

// Bytes that start no frame at all (neither a length nor "<PRI>", as when a sender's length was
// wrong) are skipped up to the next frame of either kind, not up to a newline that may never
// come; a length over max_frame_bytes does not count as a frame to pick up at.
TEST(DeframeTest, BytesThatStartNoFrameAreSkippedToTheNextFrame) {
  uint64_t malformed = 0;
  EXPECT_THAT(Deframe({"6 <1>one", "junk 3 bytes 999 <2>x", "5 <3>ab", "more\n<4>line\n"}, 64,
                      &malformed),
              ElementsAre("<1>one", "<3>ab", "<4>line"));
  EXPECT_EQ(malformed, 2u);
  // Leading zeros and over-long digit runs start no frame; the run's own tail does not either.
  malformed = 0;
  EXPECT_THAT(Deframe({"x05 <1>a 12345678901 <2>b", "12x 4 <3>c"}, 64, &malformed),
              ElementsAre("<3>c"));
  EXPECT_EQ(malformed, 1u);
}

// A newline-framed sender sends a message's raw LF as is (`logger -T`, syslog-ng, an app), so a
// line may start with "DIGITS SP". It is not an octet count unless "<PRI>" follows (RFC 6587:
// SYSLOG-MSG starts with '<'): before, "1733530000 rows" made the connection skip 1.7 GB of
// frames, and "512 bytes" swallowed the next 512 bytes of them. It is counted and skipped, and
// the stream goes on at the next line, in any cut of the reads.
TEST(DeframeTest, ALineStartingWithDigitsIsNotAnOctetCount) {
  for (const std::string all : {"<13>a\n1733530000 rows\n<13>b\n", "<13>a\n512 bytes\n<13>b\n"}) {
    ExpectInEveryCut(all, 1024, {"<13>a", "<13>b"}, 1);
  }
}

// A length over max_frame_bytes is counted and the stream picks up at the next frame start
// (newline or "LEN SP <"), as rsyslog's imtcp does, instead of skipping that many bytes: a
// corrupt or lying count cannot blind the rest of the connection.
TEST(DeframeTest, AnOversizedLengthResyncsInsteadOfSkippingThatManyBytes) {
  const std::string big = "<13>" + std::string(96, 'x');  // a real 100-byte frame, over 64
  for (const std::string& all : std::vector<std::string>{
           "1733530000 <13>lie" "5 <1>ok" "6 <2>two", "100 " + big + "5 <1>ok" "6 <2>two",
           "1733530000 <13>lie\n<1>ok\n<2>two\n"}) {
    ExpectInEveryCut(all, 64, {"<1>ok", "<2>two"}, 1);
  }
}

// An octet-counting sender's frame over the cap holds a client's text: skipped by its count,
// never searched for a frame start, which could forge one keyed on someone else's address.
TEST(DeframeTest, AnOverlongFrameOfAnOctetCountingSenderIsSkippedWhole) {
  const std::string forged = " 88 <38>Dec  5 10:00:00 bastion sshd[9]: Failed password for root "
                             "from 198.51.100.9 port 22 ssh2";
  std::string body = "<13>" + std::string(300 - 4 - forged.size(), 'x') + forged;
  ASSERT_EQ(body.size(), 300u);
  ExpectInEveryCut("7 <13>one" "300 " + body + "7 <13>two", 128, {"<13>one", "<13>two"}, 1);
  // The connection's first frame too (a relay's new connection after an idle close).
  ExpectInEveryCut("300 " + body + "7 <13>two", 128, {"<13>two"}, 1);
  // A count past 16 frames' worth is no frame even there: the stream resyncs, not blinded.
  const std::string lie = "7 <13>one" "1733530000 <13>lie" "7 <13>two";
  uint64_t malformed = 0;
  EXPECT_THAT(Deframe({lie}, 128, &malformed), ElementsAre("<13>one", "<13>two"));
  EXPECT_EQ(malformed, 1u);
}

// Once a connection is known to frame by newlines, a count within the cap is no more trusted
// than one over it: such a sender passes a message's raw LF on, so a client that gets
// "\n100 <13>z" into a relayed message would otherwise have the next 100 bytes of the
// connection (other programs' lines) read as one frame, held until they came and, at an idle
// close, dropped whole. The line is malformed up to its LF, and only an LF ends the skip there
// (not a "LEN SP <" within the line), in any cut of the reads. (Its first frame "<PRI>...\n"
// makes a connection newline-framed; a count over the cap is not skipped by either.)
TEST(DeframeTest, ANewlineFramedConnectionTakesNoCountWithinTheCap) {
  ExpectInEveryCut("<13>x\n100 <13>z\n<13>real one\n<13>real two\n", 128,
                   {"<13>x", "<13>real one", "<13>real two"}, 1);
  // Resyncing on such a connection ends at the LF, not at a "LEN SP <" the line holds.
  ExpectInEveryCut("<13>x\nrows 9 <13>forged\n<13>real one\n", 128, {"<13>x", "<13>real one"},
                   1);
  ExpectInEveryCut("<13>x\n5 <13>a\n1000 <13>z\n<13>real one\n<13>real two\n", 128,
                   {"<13>x", "<13>real one", "<13>real two"}, 2);
}

// RFC 6587 lets a non-transparent-framing sender end frames with another byte than LF; Python's
// SysLogHandler over TCP ends them with NUL, as rsyslog's AddtlFrameDelimiter may. An input
// that says so (SyslogInput.nul_ends_frames) ends newline-framed frames at a NUL, and at an LF
// too, instead of piling them up to max_frame_bytes and dropping them whole, in any cut of the
// reads; a NUL between frames (as "\0\n") is a stray separator. The data never decides it: a
// first message holding an LF (Python passes a message's LF on) ends a frame there, and the
// later NUL-ended frames still end at their NUL.
TEST(DeframeTest, ANulEndsNewlineFramedFramesWhereTheInputSaysSo) {
  const std::string nul(1, '\0');
  ExpectInEveryCut(absl::StrCat("<13>one", nul, "<13>two", nul, "\n<13>three\n", nul, "<13>four",
                                nul),
                   64, {"<13>one", "<13>two", "<13>three", "<13>four"}, 0,
                   /*nul_ends_frames=*/true);
  // An over-long line, and one that starts no frame, are skipped up to a NUL too.
  const std::string big(100, 'x');
  ExpectInEveryCut(absl::StrCat("<13>a", nul, "<13>", big, nul, "<13>b", nul, "junk", nul,
                                "<13>c", nul),
                   64, {"<13>a", "<13>b", "<13>c"}, 2, /*nul_ends_frames=*/true);
  ExpectInEveryCut(absl::StrCat("<13>", big, nul, "<13>b", nul, "<13>c", nul), 64,
                   {"<13>b", "<13>c"}, 1, /*nul_ends_frames=*/true);
  // The first message holds an LF: its second line starts no frame (skipped to its NUL), and
  // every later frame still ends at its NUL. Were the first frame's end to decide (LF: NUL is
  // text), every later frame would pile up to the cap and be dropped.
  ExpectInEveryCut(absl::StrCat("<13>line one\nline two", nul, "<13>next", nul, "<13>last", nul),
                   64, {"<13>line one", "<13>next", "<13>last"}, 1, /*nul_ends_frames=*/true);
  ExpectInEveryCut(absl::StrCat("junk\n<13>a", nul, "<13>b", nul), 64, {"<13>a", "<13>b"}, 1,
                   /*nul_ends_frames=*/true);
}

// A sender that strips CR and LF from a message but passes NUL on (log4j2's TCP syslog appender
// with newLineEscape, an app following OWASP's CR/LF advice) frames by LF: a NUL in a client's
// text there is text. Read as a frame end it would forge a frame keyed on someone else's address
// ("x\0<38>... Failed password for root from VICTIM ..."). Unless the input ends frames at NUL
// (nul_ends_frames, off by default), a NUL ends no frame, no skip of an over-long frame and no
// resync, on the connection's first frame too (a log4j2 app reconnecting after idle_timeout,
// whose first message is the attacker's), whatever that first frame ended with, in any cut.
TEST(DeframeTest, ANulIsTextUnlessTheInputSaysItEndsFrames) {
  const std::string nul(1, '\0');
  const std::string forged =
      "<38>Dec  5 10:00:00 bastion sshd[9]: Failed password for root from 198.51.100.9 port 22 "
      "ssh2";
  const std::string line = absl::StrCat("<13>app: login failed for x", nul, forged);
  ExpectInEveryCut(absl::StrCat(line, "\n<13>after\n"), 1024, {line, "<13>after"}, 0);
  ExpectInEveryCut(absl::StrCat("<13>first\n", line, "\n<13>after\n"), 1024,
                   {"<13>first", line, "<13>after"}, 0);
  // A first frame ending in NUL turns nothing on: the NULs stay in the frame.
  ExpectInEveryCut(absl::StrCat("<13>one", nul, "<13>two", nul, "\n<13>three\n"), 1024,
                   {absl::StrCat("<13>one", nul, "<13>two", nul), "<13>three"}, 0);
  // An over-long frame is dropped up to its LF, and a line that starts no frame skipped to it.
  const std::string big(1024, 'x');
  ExpectInEveryCut(absl::StrCat("<13>", big, nul, forged, "\n<13>after\n"), 1024, {"<13>after"},
                   1);
  ExpectInEveryCut(absl::StrCat("<13>first\n<13>", big, nul, forged, "\n<13>after\n"), 1024,
                   {"<13>first", "<13>after"}, 1);
  ExpectInEveryCut(absl::StrCat("<13>first\njunk", nul, forged, "\n<13>after\n"), 1024,
                   {"<13>first", "<13>after"}, 1);
  // Before the first frame, and on an octet-counted connection, a resync ends at LF, not NUL.
  ExpectInEveryCut(absl::StrCat("junk", nul, forged, "\n<13>after\n"), 1024, {"<13>after"}, 1);
  ExpectInEveryCut(absl::StrCat("7 <13>one7x <13>bad", nul, forged, "\n7 <13>two"), 1024,
                   {"<13>one", "<13>two"}, 1);
}

// A newline sender's first lines may start no frame (tail -F | nc, a banner with no "<PRI>"):
// the LF that ends them makes the connection newline-framed, so a client's line "100 <13>z"
// later is no count either (it would take the next 100 bytes, other programs' lines, as one
// frame), in any cut of the reads. Before such an LF, an octet-counted stream that starts with
// junk still finds its first count (BytesThatStartNoFrameAreSkippedToTheNextFrame).
TEST(DeframeTest, AConnectionWhoseFirstLineStartsNoFrameIsNewlineFramed) {
  ExpectInEveryCut("banner\n100 <13>z\n<13>real one\n<13>real two\n", 128,
                   {"<13>real one", "<13>real two"}, 2);
  ExpectInEveryCut("1733530000 rows\nno pri\n9 <13>forged\n<13>real one\n", 128, {"<13>real one"},
                   3);
}

// Frames from this file's and services/formats' line_parser_test's string literals that start as
// a frame does (a count, <PRI>), or with an RFC 3164 or RFC 3339 time.
constexpr const char* kHeaderSeeds[] = {
    "100 <13>z",
    "100 <38>...",
    "100 <38>Mar  3 14:02:02 h",
    "11 <34>1 hello\n<13>Mar  3 14:02:01 h sshd: a\n5 <1>xy<13>b\n",
    "1733530000 <13>lie",
    "1733530000 <13>lie\n<1>ok\n<2>two\n",
    "1970-01-01 00:00:12 a clock never set: no time, not a line dropped",
    "2007-01-19T12:20:33Z",
    "2010-09-16T05:50:50.1254765Z",
    "2010-09-16T05:50:50.999999999Z",
    "2011-11-21T14:29:16Z",
    "2013-04-07T07:08:36Z",
    "2013-07-06T16:48:00Z",
    "2013-07-09T00:45:17.123Z",
    "2013-12-08T22:55:23Z",
    "2013-12-17T13:58:14Z",
    "2014-01-13T05:02:22Z",
    "2014-01-31T01:25:17Z",
    "2014-06-02T16:06:33.99Z",
    "2014-06-27T15:51:19Z",
    "2014-07-02T00:17:45Z",
    "2015-10-07   8:25:38 [Warning] x",
    "2015-10-07  8:2",
    "2015-10-07  8:25",
    "2015-10-07  8:25:3",
    "2015-10-07  8:25:38 139817458968320 [Warning] Access denied for user 'root'@'192.0.2.7' ",
    "2015-10-07  8:25:381 [Warning] x",
    "2015-10-07  8:65:38 139817458968320 [Warning] x",
    "2015-10-07 18:25:38 139817458968320 [Warning] Access denied",
    "2015-10-07T08:25:38Z",
    "2015-10-07T18:25:38Z",
    "2015-10-27T12:35:40.25Z",
    "2015-10-27T12:35:40Z",
    "2015-11-29T16:38:01.818Z",
    "2016-09-08T00:39:49Z",
    "2016-12-31T23:59:60Z",
    "2017-01-01T00:00:00Z",
    "2020-10-19T15:44:33Z",
    "2024-02-29T12:00:00Z",
    "2024-03-06T10:00:00Z",
    "2025-01-02T15:00:00Z",
    "2025-03-03T10:00:00Z",
    "2025-03-06T10:00:00Z",
    "2025-06-01T12:00:00Z",
    "2025-06-01T16:00:00Z",
    "2025-08-06T08:14:52Z",
    "2025-10-26T00:30:00Z",
    "2025-10-26T01:30:00Z",
    "2025-12-31T23:50:00Z",
    "2025-12-31T23:59:58Z",
    "2025-12-31T23:59:59Z",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:01Z",
    "2026-01-01T00:00:03Z",
    "2026-01-01T00:00:05Z",
    "2026-01-01T00:10:00Z",
    "2026-01-01T03:00:00Z",
    "2026-01-01T04:50:00Z",
    "2026-01-01T04:59:58Z",
    "2026-01-01T05:00:00Z",
    "2026-01-01T05:00:01Z",
    "2026-01-01T05:10:00Z",
    "2026-01-02T05:05:00Z",
    "2026-01-15 09:00:00 [4211] x",
    "2026-01-15 09:00:00.250 CET [41234] x",
    "2026-01-15T08:00:00.250Z",
    "2026-01-15T08:00:00Z",
    "2026-01-15T09:00:00 h sshd: x",
    "2026-01-15T09:00:00Z",
    "2026-01-15T09:00:00Z h sshd: x",
    "2026-01-15T14:00:00Z",
    "2026-01-15T15:00:00Z",
    "2026-02-01T14:02:01Z",
    "2026-02-15T16:23:00Z",
    "2026-02-28T00:00:00Z rest",
    "2026-02-30 14:02:01 x",
    "2026-02-31T00:00:00Z",
    "2026-03-01T00:00:00Z",
    "2026-03-03 14:02:01",
    "2026-03-03 14:02:01 +0100 [4211] plain authenticator failed",
    "2026-03-03 14:02:01 GMT [41234] postgres@postgres FATAL:  password authentication failed",
    "2026-03-03 14:02:01 [4211] plain authenticator failed for (ylmf-pc) [203.0.113.60]:51234",
    "2026-03-03 14:02:01.120 UTC [41234] [unknown]@[unknown] 203.0.113.7 LOG:  connection",
    "2026-03-03 14:02:01.123 +01:00 [pid] x",
    "2026-03-03 14:02:0123 x",
    "2026-03-03 14:02:01x",
    "2026-03-03 14:02:02 14 [Warning] Access denied for user 'admin'@'203.0.113.8'",
    "2026-03-03 14:02:08: (mod_auth.c.525) password doesn't match",
    "2026-03-03 14:40:30,101 ftp1 proftpd[6130] ftp1.example.com",
    "2026-03-03 25:02:01 x",
    "2026-03-03T04:02:03Z",
    "2026-03-03T08:32:01Z",
    "2026-03-03T13:02:01.123Z",
    "2026-03-03T13:02:01.25Z",
    "2026-03-03T13:02:01Z",
    "2026-03-03T14:02:01+05 h",
    "2026-03-03T14:02:01+0530 h",
    "2026-03-03T14:02:01+0530 h sshd[1]: msg",
    "2026-03-03T14:02:01+23:59",
    "2026-03-03T14:02:01+9999",
    "2026-03-03T14:02:01+99:99",
    "2026-03-03T14:02:01+99:99 h sshd[1]: msg",
    "2026-03-03T14:02:01-24:00",
    "2026-03-03T14:02:01.",
    "2026-03-03T14:02:01.003Z",
    "2026-03-03T14:02:01.118Z",
    "2026-03-03T14:02:01.120Z",
    "2026-03-03T14:02:01.123+01:00 x",
    "2026-03-03T14:02:01.123456789Z",
    "2026-03-03T14:02:01.123456Z",
    "2026-03-03T14:02:01.123456Z 12 [Note] [MY-010926] [Server] Access denied",
    "2026-03-03T14:02:01.5-0330",
    "2026-03-03T14:02:01.5Z",
    "2026-03-03T14:02:01Z",
    "2026-03-03T14:02:01Z h sshd: x",
    "2026-03-03T14:02:01Z {\"actor\":{\"ip_address\":\"203.0.113.9\"}}",
    "2026-03-03T14:02:02.5Z",
    "2026-03-03T14:02:02Z",
    "2026-03-03T14:02:03.123456789Z",
    "2026-03-03T14:02:03Z",
    "2026-03-03T14:02:04.000001Z",
    "2026-03-03T14:02:04.667Z",
    "2026-03-03T14:02:04.667Z: Failed Login: username=root ip=203.0.113.102",
    "2026-03-03T14:02:05.1Z",
    "2026-03-03T14:02:08.123Z",
    "2026-03-03T14:02:08Z",
    "2026-03-03T14:02:19.118+0000 I NETWORK  [listener] connection accepted",
    "2026-03-03T14:02:19.118Z",
    "2026-03-03T14:04:00Z",
    "2026-03-03T14:40:30.101Z",
    "2026-03-03T17:32:01.5Z",
    "2026-03-03T19:02:01Z",
    "2026-03-03T19:32:01Z",
    "2026-03-03T21:02:01Z",
    "2026-03-04T00:00:00Z",
    "2026-03-08T06:59:00Z",
    "2026-03-08T07:00:00Z",
    "2026-03-08T07:31:00Z",
    "2026-04-16T21:05:29Z",
    "2026-04-17T04:05:29Z",
    "2026-06-01T00:00:00Z",
    "2026-07-15  9:00:00 139817458968320 [Warning] x",
    "2026-07-15 09:00:00 +0000 [1] x",
    "2026-07-15 09:00:00 PDT [1] x",
    "2026-07-15 09:00:00 [4211] x",
    "2026-07-15 09:00:00.250 CEST [41234] x",
    "2026-07-15 09:00:00.250 UTC [41234] x",
    "2026-07-15T07:00:00.250Z",
    "2026-07-15T07:00:00Z",
    "2026-07-15T09:00:00.250Z",
    "2026-07-15T09:00:00Z",
    "2026-07-15T09:00:00Z x",
    "2026-07-15T13:00:00Z",
    "2026-07-15T14:00:00Z",
    "2026-07-15T15:00:00Z",
    "2026-10-25 02:30:00 [1] x",
    "2026-10-25 02:30:00.000 CEST [1] x",
    "2026-10-25 02:30:00.000 CET [1] x",
    "2026-10-25T00:30:00Z",
    "2026-10-25T01:30:00Z",
    "2026-10-25T01:31:00Z",
    "2026-11-01T00:00:00Z",
    "2026-11-01T01:10:00 h sshd: x",
    "2026-11-01T05:10:00Z",
    "2026-11-01T05:10:30Z",
    "2026-11-01T05:59:59Z",
    "2026-11-01T06:00:01Z",
    "2026-11-01T06:10:00Z",
    "2026-11-01T06:10:30Z",
    "2026-11-01T06:30:00Z",
    "2026-12-01T00:00:00Z",
    "2286-11-20T17:46:39.999999999Z",
    "4 <1>a",
    "5 <1>ok",
    "5 <3>ab",
    "6 <1>one",
    "6 <2>two",
    "7 <13>one",
    "7 <13>one7x <13>bad",
    "7 <13>two",
    "<13>",
    "<13>1",
    "<13>1 ",
    "<13>1  web-1 sshd 1 - - x",
    "<13>1 -  sshd 1 - - x",
    "<13>1 - - - - - - x",
    "<13>1 - h a p m",
    "<13>1 - web-1  1 - - x",
    "<13>1 - web-1 sshd",
    "<13>1 - web-1 sshd  - - x",
    "<13>1 - web-1 sshd 1  - x",
    "<13>Dec  7 12:00:00 h app: a",
    "<13>Dec  7 12:00:00 h app: c",
    "<13>Dec  7 12:00:00 h app: d\n",
    "<13>Dec  7 12:00:00 web-paris app: b",
    "<13>Mar  3 14:02:01 h app: ",
    "<13>Mar  3 14:02:01 h app: good ",
    "<13>Mar  3 14:02:01 h app: last ",
    "<13>Mar  3 14:02:01 h app: message ",
    "<13>Mar  3 14:02:01 h app: not tls\n",
    "<13>Mar  3 14:02:01 h sshd: a",
    "<13>a",
    "<13>a: again\n",
    "<13>a: first\n",
    "<13>a: in\n",
    "<13>a: next\n",
    "<13>a: one\n",
    "<13>a: other\n",
    "<13>a: second\n",
    "<13>a: x\n",
    "<13>a\n1733530000 rows\n<13>b\n",
    "<13>a\n512 bytes\n<13>b\n",
    "<13>after",
    "<13>app: login failed for x",
    "<13>b",
    "<13>c",
    "<13>first",
    "<13>first\n",
    "<13>first\n<13>",
    "<13>first\njunk",
    "<13>four",
    "<13>last",
    "<13>line one",
    "<13>line one\nline two",
    "<13>next",
    "<13>one",
    "<13>real one",
    "<13>real two",
    "<13>three",
    "<13>two",
    "<13>x",
    "<13>x\n100 <13>z\n<13>real one\n<13>real two\n",
    "<13>x\n5 <13>a\n1000 <13>z\n<13>real one\n<13>real two\n",
    "<13>x\nrows 9 <13>forged\n<13>real one\n",
    "<1>a",
    "<1>a\n",
    "<1>ok",
    "<1>one",
    "<1>xy",
    "<2>",
    "<2>two",
    "<34>1 - - - - - - msg",
    "<34>1 2016-12-31T23:59:60Z h a - - - x",
    "<34>1 2026-01-15T09:00:00 web-1 sshd 4211 - - x",
    "<34>1 2026-01-15T09:00:00Z web-1 sshd 4211 - - x",
    "<34>1 2026-03-03T14:02:01+99:99 h sshd - - - Invalid user a from 1.2.3.4",
    "<34>1 2026-03-03T14:02:01-05:30 h sshd - - - msg",
    "<34>1 2026-03-03T14:02:01.",
    "<34>1 2026-03-03T14:02:01.003Z web-1 sshd 4211 - ",
    "<34>1 2026-11-01T01:10:00 h sshd 1 - - x",
    "<34>1 hello",
    "<34>1 yesterday h a - - - msg",
    "<34>2 - - - - - - msg",
    "<38>1 - h sshd 1 - - two",
    "<38>1 2026-03-03T14:02:01Z h sshd 1 - - one",
    "<38>1 2026-12-07T12:00:00Z - sshd 1 - - x",
    "<38>1 garbage",
    "<38>2026-03-03T14:02:01.250+01:00 h sshd: hello",
    "<38>Dec  5 10:00:00 bastion sshd[9]: Failed password for root from 198.51.100.9 port 22 ",
    "<38>Dec  7 07:00:",
    "<38>Dec  7 07:00:00 web-ny",
    "<38>Dec  7 12:00:00 a sshd[1]: one",
    "<38>Dec  7 12:00:00 a sshd[1]: x",
    "<38>Dec  7 12:00:00 a sshd[1]: x\n",
    "<38>Dec  7 12:00:00 b sshd[1]: two",
    "<38>Dec  7 12:00:00 b sshd[1]: x",
    "<38>Dec  7 12:00:00 b sshd[1]: x\n<38>Dec  7 12:00:00 A sshd[1]: x\n",
    "<38>Dec  7 12:00:00 c sshd[1]: three\n",
    "<38>Dec  7 12:00:00 c sshd[1]: x",
    "<38>Dec  7 12:00:00 c sshd[1]: x\n",
    "<38>Dec  7 12:00:00 forged",
    "<38>Dec  7 12:00:00 h",
    "<38>Dec  7 12:00:00 sshd: x",
    "<38>Dec  7 12:00:00 sshd[1]: x",
    "<38>Dec  7 12:00:00 web sshd[1]: x",
    "<38>Dec  7 12:00:00 web-utc",
    "<38>Dec  7 21:00:00 web-tokyo",
    "<38>Mar  3 14:02:01 h sshd[1]: one\n",
    "<38>Mar  3 14:02:01 h sshd[1]: two",
    "<38>Mar  3 14:02:01 h sshd[1]: whole",
    "<38>Mar  3 14:02:02 h sshd[1]: three",
    "<38>Mar  3 14:02:02 h sshd[2]: three\n",
    "<38>Oct 27 2015 12:35:40.25 web-1 sshd[1]: Failed password",
    "<38>not a syslog time at all",
    "<3>ab",
    "<3>c",
    "<3>ok",
    "<4>line",
    "<5>fine",
    "<6>",
    "<7>after",
    "Dec 31 22:00:00 h sshd: x",
    "Dec 31 23:59:58 h sshd: x",
    "Dec 31 23:59:59 auth: x",
    "Dec 31 23:59:59 h cron: x",
    "Dec 31 23:59:59 h sshd: x",
    "Feb  1",
    "Feb  1 14:02:01 h x: y",
    "Feb 01 14:02:01 h x: y",
    "Feb 1",
    "Feb 1 14:02:01 ftp-1 proftpd[1]: msg",
    "Feb 1 14:02:xx h x: y",
    "Feb 15 16:23:00 srv httpd[22034]: [authz_core:error] [pid 22035] ",
    "Feb 16 22:32:48 srv httpd[22034]: [error] [client 127.0.0.1] user x not ",
    "Feb 1x14:02:01 h x: y",
    "Feb 29 12:00:00 h sshd: x",
    "Feb 30 2015 12:35:40 h x: y",
    "Jan  1",
    "Jan  1 00:00:01 h sshd: x",
    "Jan  1 00:00:03 auth: x",
    "Jan  1 00:00:03 h sshd: x",
    "Jan  1 00:10",
    "Jan  1 00:10:00 h sshd: x",
    "Jan  2 00:05:00 h sshd: x",
    "Jan  2 10:00:00 h sshd: x",
    "Jan 10 00:00:00 h ",
    "Jan 10 00:00:00 myhost proftpd[12345] myhost.example.com (x[203.0.113.7]): ",
    "Jan 15 09:00:00 h sshd: x",
    "Jul 15 09:00:00 auth: x",
    "Jul 15 09:00:00 h sshd: x",
    "Jul 15 2026 09:00:00 h x: y",
    "Jun  1 12:00:00 h sshd: x",
    "Jun 25 23:53:34 [sshd] User root from 203.0.113.7 not allowed",
    "Mar  3 00:17:22 [sshd]: User root from 203.0.113.7 not allowed",
    "Mar  3 14:02 x",
    "Mar  3 14:02:01",
    "Mar  3 14:02:01 h last message repeated 3 times",
    "Mar  3 14:02:01 h sshd: x",
    "Mar  3 14:02:01 h sshd[1]: x",
    "Mar  3 14:02:01 web-1 nginx: 2026/03/03 14:02:01 [error] 12#0: *5 x",
    "Mar  3 14:02:01 web-1 nginx: [error] 88#88: *9 limiting requests, excess: ",
    "Mar  3 14:02:01 web-1 sshd[4211]: Failed password for root from ",
    "Mar  3 14:02:01.",
    "Mar  3 14:02:01. web-1 sshd[1]: x",
    "Mar  3 14:02:01.12",
    "Mar  3 14:02:01.123456 auth: Info: x",
    "Mar  3 14:02:01.123456 auth: x",
    "Mar  3 14:02:01.1234567890 auth: x",
    "Mar  3 14:02:01.1234567890 web-1 sshd[1]: x",
    "Mar  3 14:02:01.a web-1 sshd[1]: x",
    "Mar  3 14:02:03.123456789 web-1 sshd[1]: Failed password",
    "Mar  3 14:02:04.000001 web-1 sshd[1]: Failed password",
    "Mar  3 14:02:05 web-1 nginx: 2026/03/03 14:02:01 [warn] 88#88: *9 m",
    "Mar  3 14:04:00 auth: x",
    "Mar  3 14:04:00 imap-login: Info: Disconnected (auth failed, 1 attempts in 2 secs)",
    "Mar  6 10:00:00 h sshd: x",
    "Mar  8 02:30:00 h sshd: x",
    "Mar 03 14:02:01.123",
    "Mar 03 14:02:01.123456",
    "Mar 03 14:02:01.123456 web-1 sshd[1]: Failed password",
    "Mar 03 14:02:02.5 web-1 sshd[1]: Failed password",
    "Mar 03 14:04:00 auth: Info: x",
    "Mar 11 22:52:12   lighttpd[53690]: ",
    "Mar 11 22:52:12   lighttpd[53690]: (mod_fastcgi.c.2676) x",
    "Mar 3 14:02:05.1 web-1 sshd[1]: Failed password",
    "Mar 3 14:04:00 auth-worker(900): Info: pam(admin,203.0.113.65): unknown user",
    "Mar 32 14:02:01 x",
    "Mar 33 14:02:01 h x: y",
    "Nov  1 00:10:00 h sshd: x",
    "Nov  1 01:00:01 h sshd: x",
    "Nov  1 01:10:00 h sshd: x",
    "Nov  1 01:30:00 h sshd: x",
    "Nov  1 01:59:59 h sshd: x",
    "Nov  1 02:10:00 h sshd: x",
    "Nov  3 12:00:00 h sshd: x",
    "Nov  3 23:59:60 h sshd: x",
    "Nov 23 21:50:37 sshd: Connection closed",
    "Nov 23 21:50:37 sshd[8148]: Invalid user admin from 203.0.113.7 port 22",
    "Oct 27 2015 12:35 h x: y",
    "Oct 27 2015 12:35:40",
    "Oct 27 2015 12:35:40 h x: y",
    "Oct 27 2015 12:35:40 test1.example.net screensharingd[1170]: ",
    "Oct 27 2015 12:35:40 test1.example.net screensharingd[1170]: Authentication: FAILED",
    "Oct 27 20155 12:35:40 h x: y",
};

// Each way a header can go wrong where the host is read: cut after each byte, each byte dropped,
// doubled, or replaced with one a header's grammar gives a meaning to, or a CR or a byte past
// ASCII (blanks and hostile bytes are where the two readers could part).
std::vector<std::string> Mutations(const std::string& s) {
  static constexpr char kBytes[] = {' ', '-', '[', ']', ':', '0', '2', '9', '.', ',', 'T', 't',
                                    'Z', '+', '<', '>', '1', 'x', '\t', '\0', '\r', '\x80'};
  std::vector<std::string> out;
  for (size_t i = 0; i <= s.size(); ++i) {
    out.push_back(s.substr(0, i));
    if (i == s.size()) break;
    out.push_back(s.substr(0, i) + s.substr(i + 1));
    out.push_back(s.substr(0, i + 1) + s.substr(i));
    for (char c : kBytes) {
      std::string m = s;
      m[i] = c;
      out.push_back(std::move(m));
    }
  }
  return out;
}

// HostnameOf reads only the header (the receiver used to parse each frame whole for its host,
// and the pipeline parses it again): it must give what LineParser::Parse gives, the same host
// and the same "none" where Parse refuses the line, for either format, over the test frames
// above, the sshd corpus, hand-made headers (IPv6 hosts, long hosts, NILVALUEs, extra blanks,
// no PRI, dates that do not exist) and every mutation of them; and with a reference in a year
// whose 29 February does not exist. Parse's caches are warm as the receiver's parser was.
TEST(HostnameOfTest, ReadsWhatTheLineParserReads) {
  std::vector<std::string> base(std::begin(kHeaderSeeds), std::end(kHeaderSeeds));
  const std::string long_host(253, 'a'), longer_host(300, 'b'), huge_host(5000, 'c');
  for (const std::string& host :
       {std::string("web-1"), std::string("2001:db8::7"), std::string("::1"),
        std::string("[2001:db8::7]"), std::string("fe80::1%eth0"), std::string("WEB.Example.COM"),
        std::string("h:"), std::string("-"), long_host, longer_host, huge_host}) {
    for (const std::string& time :
         {std::string("Dec  7 12:00:00"), std::string("Dec 07 12:00:00"),
          std::string("Feb 1 14:02:01"), std::string("Feb 29 10:00:00"),
          std::string("Feb 30 10:00:00"), std::string("Apr 31 10:00:00"),
          std::string("Oct 27 2015 12:35:40"), std::string("Feb 29 2024 12:35:40"),
          std::string("Feb 29 2023 12:35:40"), std::string("Feb 29 0000 12:35:40"),
          std::string("Mar  3 14:02:01.123456789"), std::string("Mar  3 14:02:01.1234567890"),
          std::string("Mar  3 23:59:60"), std::string("2026-12-07T12:00:00Z"),
          std::string("2026-12-07T12:00:00.5+05:30"), std::string("2026-12-07 12:00:00"),
          std::string("2026-02-29T12:00:00Z"), std::string("2024-02-29T12:00:00-0330"),
          std::string("2016-12-31T23:59:60Z"), std::string("2026-12-07T12:00:00+05")}) {
      base.push_back(absl::StrCat("<38>", time, " ", host, " sshd[1]: Failed password"));
      base.push_back(absl::StrCat(time, "  ", host, " sshd: x"));
      base.push_back(absl::StrCat("<38>1 ", time, " ", host, " sshd 1 - - x"));
    }
    for (const std::string& tail : {std::string(" sshd 1 - - x"), std::string(" - - - - x"),
                                    std::string(" a p m [sd x=\"]\"] x"), std::string(" a p m x"),
                                    std::string(" a p m"), std::string(" a p m -")}) {
      base.push_back(absl::StrCat("<38>1 2026-12-07T12:00:00Z ", host, tail));
      base.push_back(absl::StrCat("<38>1 - ", host, tail));
    }
  }
  for (const char* odd :
       {"", "<", "<>", "<38>", "<12345>1 - h a - - - x", "<1>1 - h a b c -",
        "38>Dec  7 12:00:00 h x: y", "<38>Dec  7 12:00:00", "<38>Dec  7 12:00:00 ",
        "<38>Dec  7 12:00:00   ", "<38>1", "<38>1 ", "<38>2 - h a b c - x"}) {
    base.emplace_back(odd);
  }
  CorpusOptions corpus;
  corpus.lines = 3000;
  for (const std::string& line : GenerateSshd(corpus).lines) {
    base.push_back("<38>" + line);
  }
  std::vector<std::string> frames;
  for (size_t i = 0; i < base.size(); ++i) {
    const std::string& f = base[i];
    frames.push_back(f);
    // No PRI, and a PRI where there was none.
    if (!f.empty() && f[0] == '<' && f.find('>') != std::string::npos) {
      frames.push_back(f.substr(f.find('>') + 1));
    } else {
      frames.push_back("<13>" + f);
    }
    if (i % 20 == 0 || i < std::size(kHeaderSeeds)) {
      for (std::string& m : Mutations(f.substr(0, 120))) frames.push_back(std::move(m));
    }
  }
  size_t hosts = 0, none = 0, mismatches = 0;
  // 2026-12-07, and 2100-03-01 (2100 has no 29 February: Parse dates one in 2096).
  const absl::Time in_2100 =
      absl::FromCivil(absl::CivilSecond(2100, 3, 1, 0, 0, 0), absl::UTCTimeZone());
  for (const absl::Time now : {absl::FromUnixSeconds(1'796'644'800), in_2100}) {
    LineParser p3164(palisade::v1::LOG_FORMAT_SYSLOG);
    LineParser p5424(palisade::v1::LOG_FORMAT_SYSLOG5424);
    ParsedLine parsed;
    for (const std::string& frame : frames) {
      for (const bool v5424 : {false, true}) {
        LineParser& parser = v5424 ? p5424 : p3164;
        const absl::string_view want =
            parser.Parse(frame, now, &parsed, YearRule::kAtMostADayAhead).ok() ? parsed.host
                                                                               : "";
        const absl::string_view got = SyslogReceiver::HostnameOf(frame, v5424);
        (want.empty() ? none : hosts)++;
        if (got != want && ++mismatches <= 20) {
          ADD_FAILURE() << (v5424 ? "5424" : "3164") << " \"" << absl::CEscape(frame)
                        << "\": HostnameOf \"" << absl::CEscape(got) << "\", Parse \""
                        << absl::CEscape(want) << "\"";
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << hosts + none << " reads";
  // Both answers are well covered.
  EXPECT_GT(hosts, 20000u);
  EXPECT_GT(none, 20000u);
}

TEST(TokenBucketTest, BurstThenRate) {
  SimulatedClock clock;
  TokenBucket b(/*rate=*/2, /*burst=*/3, clock.TimeNow());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.TryTake(clock.TimeNow())) << i;
  EXPECT_FALSE(b.TryTake(clock.TimeNow()));
  EXPECT_EQ(b.UntilNext(clock.TimeNow()), absl::Milliseconds(500));
  clock.Advance(absl::Milliseconds(499));
  EXPECT_FALSE(b.TryTake(clock.TimeNow()));
  clock.Advance(absl::Milliseconds(1));
  EXPECT_TRUE(b.TryTake(clock.TimeNow()));
  EXPECT_FALSE(b.Full(clock.TimeNow()));
  clock.Advance(absl::Hours(1));  // never more than the burst
  EXPECT_TRUE(b.Full(clock.TimeNow()));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.TryTake(clock.TimeNow())) << i;
  EXPECT_FALSE(b.TryTake(clock.TimeNow()));
}

class ReceiverTest : public ::testing::Test {
 protected:
  std::unique_ptr<SyslogReceiver> Start(palisade::v1::SyslogInput config, Clock* clock = nullptr,
                                        size_t max_udp_senders = 10000) {
    SyslogReceiverOptions options;
    options.max_udp_senders = max_udp_senders;
    options.max_tcp_senders = max_tcp_senders_;
    options.max_host_streams_per_peer = max_host_streams_per_peer_;
    options.max_host_streams = max_host_streams_;
    if (pipeline_sender_streams_ > 0) options.pipeline_sender_streams = pipeline_sender_streams_;
    options.flush_interval = absl::Milliseconds(10);
    options.clock = clock;
    options.stream_idle_bound = stream_idle_bound_;
    if (fake_peers_) {
      options.peer_address_for_tests = [this](const std::string&) {
        absl::MutexLock lock(&peer_mu_);
        return peer_;
      };
    }
    options.log = [this](const std::string& m) {
      absl::MutexLock lock(&mu_);
      logs_.push_back(m);
    };
    auto r = SyslogReceiver::Start(
        config, options,
        [this](const palisade::v1::LogBatch& b) {
          absl::MutexLock lock(&mu_);
          for (const auto& rec : b.records()) {
            got_.push_back(
                absl::StrCat(b.format() == palisade::v1::LOG_FORMAT_SYSLOG5424 ? "5424 " : "3164 ",
                             b.source(), " ", rec.line()));
            senders_.push_back(absl::StrCat(b.stream(), " ", rec.line()));
          }
          return absl::OkStatus();
        },
        registry_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  std::vector<std::string> WaitFor(size_t n) {
    for (int i = 0; i < 6000; ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (got_.size() >= n) return got_;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    absl::MutexLock lock(&mu_);
    return got_;
  }
  // A counter's (Metric) or a gauge's (Gauge) value, summed over its series.
  double Metric(const std::string& name) { return Sum(name, /*gauge=*/false); }
  double Gauge(const std::string& name) { return Sum(name, /*gauge=*/true); }
  double Sum(const std::string& name, bool gauge) {
    double sum = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) sum += gauge ? m.gauge.value : m.counter.value;
    }
    return sum;
  }
  // Polls (60 s at most) until `done`.
  static bool Eventually(const std::function<bool()>& done) {
    for (int i = 0; i < 6000; ++i) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return done();
  }
  size_t Got() {
    absl::MutexLock lock(&mu_);
    return got_.size();
  }
  static int Connect(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  }
  // Connect, from the loopback address `from` (Linux answers for all of 127/8).
  static int ConnectFrom(const char* from, int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, from, &src.sin_addr);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0) << from;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << from;
    return fd;
  }
  // Whether the server ends the connection (a read gives EOF or a reset) within 30 s: a bound
  // for a slow machine, not a timing assumption (a refused connection is closed at its accept).
  static bool ClosedByServer(int fd) {
    timeval wait{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
    char c;
    const ssize_t r = ::recv(fd, &c, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
  }

  // What the next connection or datagram counts as, with fake_peers_ (on lo a test cannot send
  // from two addresses of one IPv6 /64).
  void SetPeer(const std::string& peer) {
    absl::MutexLock lock(&peer_mu_);
    peer_ = peer;
  }

  // Sends `line` from `from` on a connection of its own (a simulated clock's hours would close an
  // idle one) and answers the stream (LogBatch.stream) it was handed on in.
  std::string StreamOf(int tcp_port, const char* from, const std::string& line) {
    const size_t before = Got();
    const int fd = ConnectFrom(from, tcp_port);
    const std::string framed = line + "\n";
    EXPECT_EQ(::send(fd, framed.data(), framed.size(), 0), static_cast<ssize_t>(framed.size()));
    const bool arrived = WaitFor(before + 1).size() == before + 1;
    ::close(fd);
    absl::MutexLock lock(&mu_);
    if (!arrived) return "(not handed on)";
    return senders_.back().substr(0, senders_.back().size() - line.size() - 1);
  }

  size_t max_tcp_senders_ = 10000;
  size_t max_host_streams_per_peer_ = 1024;
  size_t max_host_streams_ = 8192;
  size_t pipeline_sender_streams_ = 0;  // 0: the option's default
  std::function<absl::Duration()> stream_idle_bound_;  // SyslogReceiverOptions'
  bool fake_peers_ = false;
  absl::Mutex peer_mu_;
  std::string peer_ ABSL_GUARDED_BY(peer_mu_);
  prometheus::Registry registry_;
  absl::Mutex mu_;
  std::vector<std::string> got_;
  std::vector<std::string> senders_;  // "STREAM LINE" per line, as got_
  std::vector<std::string> logs_;
};

TEST_F(ReceiverTest, TcpAndUdpFramesBecomeBatchesPerFormat) {
  palisade::v1::SyslogInput config;
  config.set_name("rsyslog");
  config.set_udp_listen("127.0.0.1:0");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  // A sender frames by newlines or counts octets, one way per connection (a newline-framed one
  // takes no count: DeframeTest.ANewlineFramedConnectionTakesNoCountWithinTheCap).
  const int fd = Connect(r->tcp_port());
  const std::string tcp = "<38>Mar  3 14:02:01 h sshd[1]: one\n";
  ASSERT_EQ(::send(fd, tcp.data(), tcp.size(), 0), static_cast<ssize_t>(tcp.size()));
  const int counted_fd = Connect(r->tcp_port());
  const std::string v5424 = "<38>1 - h sshd 1 - - two";
  const std::string counted = absl::StrCat(v5424.size(), " ", v5424);
  ASSERT_EQ(::send(counted_fd, counted.data(), counted.size(), 0),
            static_cast<ssize_t>(counted.size()));
  const int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(r->udp_port()));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  const std::string dgram = "<38>Mar  3 14:02:02 h sshd[2]: three\n";
  ::sendto(udp, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  std::vector<std::string> got = WaitFor(3);
  std::sort(got.begin(), got.end());
  EXPECT_THAT(got, ElementsAre("3164 rsyslog <38>Mar  3 14:02:01 h sshd[1]: one",
                               "3164 rsyslog <38>Mar  3 14:02:02 h sshd[2]: three",
                               "5424 rsyslog <38>1 - h sshd 1 - - two"));
  ::close(fd);
  ::close(counted_fd);
  ::close(udp);
}

// A central receiver for servers in two zones (sender_time_zones): New York's server, named
// by its HOSTNAME, sends over TCP, and Tokyo's, known by its address (127.0.0.2), over UDP; a
// third server in the receiver's own zone (UTC) over UDP. Each writes the same instant in its
// own wall clock (12:00:00Z: 07:00 EST, 21:00 JST) and the real pipeline dates all three
// there. Before, every line was read in the receiver's zone: New York's 5 hours early,
// Tokyo's 9 hours late.
TEST_F(ReceiverTest, SendersInOtherZonesAreDatedInTheirOwnZone) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_udp_listen("127.0.0.1:0");
  config.set_tcp_listen("127.0.0.1:0");
  palisade::v1::SyslogSenderZone* ny = config.add_sender_time_zones();
  ny->set_hostname("WEB-NY");  // case does not matter
  ny->set_time_zone("America/New_York");
  palisade::v1::SyslogSenderZone* tokyo = config.add_sender_time_zones();
  tokyo->set_peer_cidr("127.0.0.2/32");
  tokyo->set_time_zone("Asia/Tokyo");
  // The pipeline's zones as ApplyToPipeline maps this config (config_test checks that).
  PipelineOptions options;
  options.time_zone = absl::UTCTimeZone();
  for (const palisade::v1::SyslogSenderZone& z : config.sender_time_zones()) {
    absl::TimeZone zone;
    ASSERT_TRUE(absl::LoadTimeZone(z.time_zone(), &zone));
    options.source_time_zones[ZonedSource("central", z.time_zone())] = zone;
  }
  absl::Mutex mu;
  std::map<std::string, absl::Time> detected;  // key -> event time
  options.on_detections = [&](absl::string_view, std::vector<Detection>& detections,
                              const std::vector<DecisionUpdate>&) {
    absl::MutexLock lock(&mu);
    for (const Detection& d : detections) detected[d.key] = d.time;
  };
  auto pack = ParseRulePack(R"pb(
    rules {
      id: "ssh-fail"
      formats: LOG_FORMAT_SYSLOG
      patterns: "Failed password for \\S+ from (?P<ip>\\S+) port"
      threshold {
        count: 1
        window { seconds: 60 }
      }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb", "test.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  auto rules = RuleSet::Compile({*pack});
  ASSERT_TRUE(rules.ok()) << rules.status();
  const absl::Time instant = absl::FromUnixSeconds(1'796'644'800);  // 2026-12-07 12:00:00 UTC
  SimulatedClock clock(instant + absl::Seconds(30));
  DecisionTable table(clock);
  prometheus::Registry pipeline_registry;
  Pipeline pipeline(*rules, options, clock, table, pipeline_registry);
  SyslogReceiverOptions receiver_options;
  receiver_options.flush_interval = absl::Milliseconds(10);
  auto r = SyslogReceiver::Start(
      config, receiver_options,
      [&](const palisade::v1::LogBatch& b) { return pipeline.ProcessBatch(b).status(); },
      registry_);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string fail = " sshd[1]: Failed password for root from ";
  const int fd = Connect((*r)->tcp_port());
  const std::string ny_line = "<38>Dec  7 07:00:00 web-ny" + fail + "203.0.113.1 port 22 ssh2\n";
  ASSERT_EQ(::send(fd, ny_line.data(), ny_line.size(), 0), static_cast<ssize_t>(ny_line.size()));
  auto send_udp = [&](const char* from, const std::string& dgram) {
    const int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, from, &src.sin_addr);
    ASSERT_EQ(::bind(udp, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0) << from;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>((*r)->udp_port()));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(::sendto(udp, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&a),
                       sizeof(a)),
              static_cast<ssize_t>(dgram.size()));
    ::close(udp);
  };
  send_udp("127.0.0.2", "<38>Dec  7 21:00:00 web-tokyo" + fail + "203.0.113.2 port 22 ssh2");
  send_udp("127.0.0.1", "<38>Dec  7 12:00:00 web-utc" + fail + "203.0.113.3 port 22 ssh2");
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&mu);
    return detected.size() == 3;
  }));
  (*r)->Stop();
  ::close(fd);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(detected["203.0.113.1"], instant) << detected["203.0.113.1"];  // New York
  EXPECT_EQ(detected["203.0.113.2"], instant) << detected["203.0.113.2"];  // Tokyo
  EXPECT_EQ(detected["203.0.113.3"], instant) << detected["203.0.113.3"];  // the receiver's
}

// Two senders to one receiver with no sender_time_zones, the real pipeline behind it: a UTC
// host, and a New York host whose RFC 3164 times read 5 hours behind (its zone named nowhere;
// a wrong clock does the same). A slow brute force against the New York host, one attempt per
// sweep: each sender's windows age by its own latest time, so the third attempt reaches the
// threshold. Before, both shared the source's stream, whose time is the UTC host's, and every
// sweep dropped the New York host's window (5 hours old by that time): no detection, ever.
TEST_F(ReceiverTest, ALaggingSendersWindowsAgeByItsOwnTimeAcrossSweeps) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  PipelineOptions options;
  options.time_zone = absl::UTCTimeZone();
  absl::Mutex mu;
  std::map<std::string, absl::Time> detected;  // key -> event time
  size_t processed = 0;                         // lines through the pipeline
  options.on_detections = [&](absl::string_view, std::vector<Detection>& detections,
                              const std::vector<DecisionUpdate>&) {
    absl::MutexLock lock(&mu);
    for (const Detection& d : detections) detected[d.key] = d.time;
  };
  auto pack = ParseRulePack(R"pb(
    rules {
      id: "ssh-fail"
      formats: LOG_FORMAT_SYSLOG
      patterns: "Failed password for \\S+ from (?P<ip>\\S+) port"
      threshold {
        count: 3
        window { seconds: 600 }
      }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb", "test.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  auto rules = RuleSet::Compile({*pack});
  ASSERT_TRUE(rules.ok()) << rules.status();
  const absl::Time instant = absl::FromUnixSeconds(1'796'644'800);  // 2026-12-07 12:00:00 UTC
  SimulatedClock clock(instant + absl::Seconds(30));
  DecisionTable table(clock);
  prometheus::Registry pipeline_registry;
  Pipeline pipeline(*rules, options, clock, table, pipeline_registry);
  SyslogReceiverOptions receiver_options;
  receiver_options.flush_interval = absl::Milliseconds(10);
  auto r = SyslogReceiver::Start(
      config, receiver_options,
      [&](const palisade::v1::LogBatch& b) {
        absl::Status s = pipeline.ProcessBatch(b).status();
        absl::MutexLock lock(&mu);
        processed += static_cast<size_t>(b.records_size());
        return s;
      },
      registry_);
  ASSERT_TRUE(r.ok()) << r.status();
  auto wait_processed = [&](size_t n) {
    return Eventually([&] {
      absl::MutexLock lock(&mu);
      return processed >= n;
    });
  };
  auto send = [](int fd, const std::string& line) {
    ASSERT_EQ(::send(fd, line.data(), line.size(), 0), static_cast<ssize_t>(line.size()));
  };
  const std::string fail = " sshd[1]: Failed password for root from ";
  const int utc = ConnectFrom("127.0.0.1", (*r)->tcp_port());
  const int ny = ConnectFrom("127.0.0.2", (*r)->tcp_port());
  send(utc, "<38>Dec  7 12:00:00 web-utc" + fail + "198.51.100.1 port 22 ssh2\n");
  ASSERT_TRUE(wait_processed(1));
  for (int i = 0; i < 3; ++i) {
    pipeline.ExpireWindows();
    send(ny, absl::StrCat("<38>Dec  7 07:00:", 10 + 10 * i, " web-ny", fail,
                          "203.0.113.1 port 22 ssh2\n"));
    ASSERT_TRUE(wait_processed(2 + i));
  }
  (*r)->Stop();
  ::close(utc);
  ::close(ny);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(detected.count("203.0.113.1"), 1u) << "the lagging host's attempts were swept";
  EXPECT_EQ(detected["203.0.113.1"], instant - absl::Hours(5) + absl::Seconds(30));
}

// A relay (rsyslog forwarding many hosts over one connection) is one peer, but its hosts are
// streams of their own: the one whose times read five hours behind (a zone no entry names)
// keeps its windows across the sweeps the other's times drive, and its brute force is seen.
TEST_F(ReceiverTest, ARelayedHostsWindowsAgeByItsOwnTimeAcrossSweeps) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  PipelineOptions options;
  options.time_zone = absl::UTCTimeZone();
  absl::Mutex mu;
  std::map<std::string, absl::Time> detected;  // key -> event time
  size_t processed = 0;                         // lines through the pipeline
  options.on_detections = [&](absl::string_view, std::vector<Detection>& detections,
                              const std::vector<DecisionUpdate>&) {
    absl::MutexLock lock(&mu);
    for (const Detection& d : detections) detected[d.key] = d.time;
  };
  auto pack = ParseRulePack(R"pb(
    rules {
      id: "ssh-fail"
      formats: LOG_FORMAT_SYSLOG
      patterns: "Failed password for \\S+ from (?P<ip>\\S+) port"
      threshold {
        count: 3
        window { seconds: 600 }
      }
      decision {
        action: ACTION_BLOCK
        duration { seconds: 600 }
      }
    }
  )pb", "test.textproto");
  ASSERT_TRUE(pack.ok()) << pack.status();
  auto rules = RuleSet::Compile({*pack});
  ASSERT_TRUE(rules.ok()) << rules.status();
  const absl::Time instant = absl::FromUnixSeconds(1'796'644'800);  // 2026-12-07 12:00:00 UTC
  SimulatedClock clock(instant + absl::Seconds(30));
  DecisionTable table(clock);
  prometheus::Registry pipeline_registry;
  Pipeline pipeline(*rules, options, clock, table, pipeline_registry);
  SyslogReceiverOptions receiver_options;
  receiver_options.flush_interval = absl::Milliseconds(10);
  receiver_options.clock = &clock;  // the HOSTNAME's parse and the host places read it
  auto r = SyslogReceiver::Start(
      config, receiver_options,
      [&](const palisade::v1::LogBatch& b) {
        absl::Status s = pipeline.ProcessBatch(b).status();
        absl::MutexLock lock(&mu);
        processed += static_cast<size_t>(b.records_size());
        return s;
      },
      registry_);
  ASSERT_TRUE(r.ok()) << r.status();
  auto wait_processed = [&](size_t n) {
    return Eventually([&] {
      absl::MutexLock lock(&mu);
      return processed >= n;
    });
  };
  const std::string fail = " sshd[1]: Failed password for root from ";
  const int relay = ConnectFrom("127.0.0.1", (*r)->tcp_port());
  auto send = [relay](const std::string& line) {
    ASSERT_EQ(::send(relay, line.data(), line.size(), 0), static_cast<ssize_t>(line.size()));
  };
  send("<38>Dec  7 12:00:00 web-utc" + fail + "198.51.100.1 port 22 ssh2\n");
  ASSERT_TRUE(wait_processed(1));
  for (int i = 0; i < 3; ++i) {
    pipeline.ExpireWindows();
    send(absl::StrCat("<38>Dec  7 07:00:", 10 + 10 * i, " web-ny", fail,
                      "203.0.113.1 port 22 ssh2\n"));
    ASSERT_TRUE(wait_processed(2 + i));
  }
  (*r)->Stop();
  ::close(relay);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(detected.count("203.0.113.1"), 1u) << "the lagging host's attempts were swept";
  EXPECT_EQ(detected["203.0.113.1"], instant - absl::Hours(5) + absl::Seconds(30));
}

// A peer's HOSTNAMEs are the client's to choose: one sending a new one per line gets streams for
// max_host_streams_per_peer of them, the rest going in the peer's own stream (counted), and
// takes no place another peer holds; all peers' host streams are bounded too
// (max_host_streams), past which a new host goes in its peer's stream.
TEST_F(ReceiverTest, HostStreamsAreBoundedPerPeerAndInAll) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  max_host_streams_per_peer_ = 2;
  max_host_streams_ = 4;
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  auto send = [](int fd, const std::string& data) {
    ASSERT_EQ(::send(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  };
  const int first = ConnectFrom("127.0.0.2", r->tcp_port());
  send(first, "<38>Dec  7 12:00:00 a sshd[1]: x\n");
  ASSERT_EQ(WaitFor(1).size(), 1u);
  const int hostile = ConnectFrom("127.0.0.3", r->tcp_port());
  std::string lines;
  for (int i = 0; i < 50; ++i) lines += absl::StrCat("<38>Dec  7 12:00:00 h", i, " sshd[1]: y\n");
  send(hostile, lines);
  ASSERT_EQ(WaitFor(51).size(), 51u);
  EXPECT_EQ(r->host_streams(), 3u);  // a, h0 and h1: the hostile peer's 48 others have none
  send(first, "<38>Dec  7 12:00:00 b sshd[1]: x\n<38>Dec  7 12:00:00 A sshd[1]: x\n");
  ASSERT_EQ(WaitFor(53).size(), 53u);
  // A third peer finds all the places taken (4): its host goes in its own stream.
  const int third = ConnectFrom("127.0.0.4", r->tcp_port());
  send(third, "<38>Dec  7 12:00:00 c sshd[1]: x\n");
  ASSERT_EQ(WaitFor(54).size(), 54u);
  r->Stop();
  for (int fd : {first, hostile, third}) ::close(fd);
  EXPECT_EQ(r->host_streams(), 4u);
  absl::MutexLock lock(&mu_);
  // Lines per stream (a flush hands batches over in the streams' order, not the lines').
  std::map<std::string, int> streams;
  for (const std::string& s : senders_) ++streams[s.substr(0, s.find(" <"))];
  // The first peer's place for "a" was kept, and "A" is "a" (case aside); "b" took the fourth.
  EXPECT_THAT(streams, ElementsAre(Pair("127.0.0.2 a", 2), Pair("127.0.0.2 b", 1),
                                   Pair("127.0.0.3", 48), Pair("127.0.0.3 h0", 1),
                                   Pair("127.0.0.3 h1", 1), Pair("127.0.0.4", 1)));
  EXPECT_EQ(Metric("palisade_syslog_host_streams_folded_total"), 49);
}

// A host's place (its stream "PEER HOST") is kept while the pipeline keeps that stream, which
// it frees only 48 hours plus the longest window after its last line: given up earlier, hosts
// renamed every few minutes would have the pipeline hold a stream for each, past its
// max_sender_streams, for a day. A host that comes back within it gets the same stream again.
TEST_F(ReceiverTest, AHostsPlaceIsReleasedOnlyPastTheIdleBound) {
  SimulatedClock clock(absl::FromUnixSeconds(1'796'644'800));
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  max_host_streams_per_peer_ = 1;
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  const int port = r->tcp_port();
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: x"), "127.0.0.2 a");
  clock.Advance(absl::Hours(71));
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: x"), "127.0.0.2 a");
  // Quiet for the bound (72 h by default), not past it: "a" keeps its place.
  clock.Advance(SyslogReceiverOptions().host_stream_idle);
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2");
  EXPECT_EQ(r->host_streams(), 1u);
  // Past it (and "b" quiet as long since it was folded): "b" takes the place.
  clock.Advance(SyslogReceiverOptions().host_stream_idle + absl::Seconds(1));
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2 b");
  r->Stop();
  EXPECT_EQ(r->host_streams(), 1u);
}

// The engine keys a host's pid sessions by its stream: a host folded in its peer's stream stays
// there while it keeps sending, even once a place is free, so it never moves mid-session; quiet
// for the bound, it may take one.
TEST_F(ReceiverTest, AFoldedHostStaysFoldedUntilQuietForTheBound) {
  SimulatedClock clock(absl::FromUnixSeconds(1'796'644'800));
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  max_host_streams_per_peer_ = 1;
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  const int port = r->tcp_port();
  const absl::Duration bound = SyslogReceiverOptions().host_stream_idle;
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: x"), "127.0.0.2 a");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2");
  // "a" goes quiet and its place is free past the bound; "b", still sending, stays folded.
  for (absl::Duration t; t < 2 * bound; t += bound / 4) {
    clock.Advance(bound / 4);
    EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2") << t;
  }
  clock.Advance(bound + absl::Seconds(1));
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2 b");
  r->Stop();
}

// SyslogInput.max_host_streams_per_peer, when set, is the bound (the options' is the default);
// over 8,192 (a transport's host streams in all, by default) it is refused, as the config is.
TEST_F(ReceiverTest, TheConfigsHostStreamsPerPeerIsTheBound) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_host_streams_per_peer(2);
  max_host_streams_per_peer_ = 1;
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int port = r->tcp_port();
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: x"), "127.0.0.2 a");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2 b");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 c sshd[1]: x"), "127.0.0.2");
  r->Stop();
  config.set_max_host_streams_per_peer(8193);
  SyslogReceiverOptions options;
  const absl::Status refused =
      SyslogReceiver::Start(
          config, options, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); },
          registry_)
          .status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(),
              HasSubstr("max_host_streams_per_peer must be at most 8192, not 8193"));
}

// Every stream this receiver gives the pipeline counts against its max_sender_streams: UDP
// senders, both transports' hosts and the TCP/TLS peers (max_connections at once, at least).
// Start says so when these bounds together pass it (new senders would then share their
// source's stream), and says nothing when they fit.
TEST_F(ReceiverTest, StartLogsWhenItsStreamsCanPassThePipelinesSenderStreams) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_udp_listen("127.0.0.1:0");
  pipeline_sender_streams_ = 20000;
  auto fits = Start(config);  // 10,000 UDP senders + 8,192 UDP hosts
  ASSERT_NE(fits, nullptr);
  fits->Stop();
  {
    absl::MutexLock lock(&mu_);
    EXPECT_THAT(logs_, ::testing::Not(::testing::Contains(HasSubstr("max_sender_streams"))));
  }
  config.set_name("central2");
  config.set_tcp_listen("127.0.0.1:0");
  auto over = Start(config);  // and 8,192 TCP hosts + 64 connections: 26,448
  ASSERT_NE(over, nullptr);
  over->Stop();
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(logs_, ::testing::Contains(HasSubstr(
                         "26448 pipeline streams, over the pipeline's max_sender_streams 20000")));
}

// A frame naming no host (5424's "-", a 3164 frame whose first token is the tag) or that does
// not parse goes in its peer's stream, as before hosts had theirs.
TEST_F(ReceiverTest, FramesWithNoHostOrThatDoNotParseStayInThePeersStream) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int port = r->tcp_port();
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>1 2026-12-07T12:00:00Z - sshd 1 - - x"), "127.0.0.2");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 sshd[1]: x"), "127.0.0.2");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 sshd: x"), "127.0.0.2");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>not a syslog time at all"), "127.0.0.2");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>1 garbage"), "127.0.0.2");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 web sshd[1]: x"), "127.0.0.2 web");
  r->Stop();
  EXPECT_EQ(r->host_streams(), 1u);
  EXPECT_EQ(Metric("palisade_syslog_host_streams_folded_total"), 0);
}

// UDP datagrams carry any source address: forged with a TCP relay's, they take places from the
// UDP peers' table and budget, not from the relay's.
TEST_F(ReceiverTest, UdpForgedWithATcpPeersAddressTakesNoneOfItsPlaces) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_udp_listen("127.0.0.1:0");
  config.set_tcp_listen("127.0.0.1:0");
  max_host_streams_per_peer_ = 2;
  max_host_streams_ = 2;
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int u = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.2", &src.sin_addr);
  ASSERT_EQ(::bind(u, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(r->udp_port()));
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  for (int i = 0; i < 5; ++i) {
    const std::string d = absl::StrCat("<38>Dec  7 12:00:00 forged", i, " sshd[1]: x");
    ASSERT_EQ(::sendto(u, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
              static_cast<ssize_t>(d.size()));
    ASSERT_EQ(WaitFor(i + 1).size(), static_cast<size_t>(i + 1));
  }
  ::close(u);
  const int port = r->tcp_port();
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: x"), "127.0.0.2 a");
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2 b");
  r->Stop();
  EXPECT_EQ(r->host_streams(), 4u);  // two of each transport
  EXPECT_EQ(Metric("palisade_syslog_host_streams_folded_total"), 3);
}

// Each batch names its sender (LogBatch.stream: the address the rate limit counts, and the
// frame's HOSTNAME), a TCP one always; UDP senders (forgeable) only while at most
// max_udp_senders have theirs: past that, none (the source's stream).
TEST_F(ReceiverTest, BatchesNameTheirSenderWithinTheUdpSendersBound) {
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_udp_listen("127.0.0.1:0");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config, nullptr, /*max_udp_senders=*/1);
  ASSERT_NE(r, nullptr);
  auto send_udp = [&](const char* from, const std::string& dgram) {
    const int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, from, &src.sin_addr);
    ASSERT_EQ(::bind(udp, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0) << from;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(r->udp_port()));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(::sendto(udp, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&a),
                       sizeof(a)),
              static_cast<ssize_t>(dgram.size()));
    ::close(udp);
  };
  send_udp("127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: one");
  ASSERT_EQ(WaitFor(1).size(), 1u);
  send_udp("127.0.0.3", "<38>Dec  7 12:00:00 b sshd[1]: two");
  ASSERT_EQ(WaitFor(2).size(), 2u);
  const int fd = ConnectFrom("127.0.0.4", r->tcp_port());
  const std::string tcp = "<38>Dec  7 12:00:00 c sshd[1]: three\n";
  ASSERT_EQ(::send(fd, tcp.data(), tcp.size(), 0), static_cast<ssize_t>(tcp.size()));
  ASSERT_EQ(WaitFor(3).size(), 3u);
  r->Stop();
  ::close(fd);
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(senders_, ElementsAre("127.0.0.2 a <38>Dec  7 12:00:00 a sshd[1]: one",
                                    " <38>Dec  7 12:00:00 b sshd[1]: two",
                                    "127.0.0.4 c <38>Dec  7 12:00:00 c sshd[1]: three"));
  // The one that went in the source's stream is counted (no sender label: senders are forged).
  EXPECT_EQ(Metric("palisade_syslog_sender_streams_folded_total"), 1);
}

// SyslogInput.nul_ends_frames reaches the input's connections: on, the frames of a Python
// SysLogHandler (each ended by a NUL, no LF) come one by one; off (the default), a NUL is text
// and only the LF ends the frame (the trailing NUL is trimmed as a trailing LF is).
TEST_F(ReceiverTest, NulEndsFramesOnlyOnAnInputThatSaysSo) {
  const std::string nul(1, '\0');
  for (const bool on : {true, false}) {
    {
      absl::MutexLock lock(&mu_);
      got_.clear();
    }
    palisade::v1::SyslogInput config;
    config.set_name(on ? "nul_on" : "nul_off");
    config.set_tcp_listen("127.0.0.1:0");
    config.set_nul_ends_frames(on);
    auto r = Start(config);
    ASSERT_NE(r, nullptr);
    const int fd = Connect(r->tcp_port());
    const std::string data = absl::StrCat("<13>one", nul, "<13>two", nul, "\n");
    ASSERT_EQ(::send(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    WaitFor(on ? 2 : 1);
    r->Stop();  // flushes what came after, were more frames cut
    ::close(fd);
    absl::MutexLock lock(&mu_);
    const std::vector<std::string> got = got_;
    if (on) {
      EXPECT_THAT(got, ElementsAre("3164 nul_on <13>one", "3164 nul_on <13>two"));
    } else {
      EXPECT_THAT(got, ElementsAre(absl::StrCat("3164 nul_off <13>one", nul, "<13>two")));
    }
  }
}

// Which entry names a sender's zone: its HOSTNAME's, whatever the ranges say, else the most
// specific range covering its address, whatever the config's order (the /8 comes first here).
TEST_F(ReceiverTest, HostnameThenMostSpecificPeerRangeChooseTheSource) {
  palisade::v1::SyslogInput config;
  config.set_name("x");
  config.set_udp_listen("127.0.0.1:0");
  config.set_tcp_listen("127.0.0.1:0");
  for (const auto& [cidr, zone] : {std::pair<const char*, const char*>{"127.0.0.0/8", "Asia/Tokyo"},
                                   {"127.0.0.2/32", "America/New_York"}}) {
    palisade::v1::SyslogSenderZone* z = config.add_sender_time_zones();
    z->set_peer_cidr(cidr);
    z->set_time_zone(zone);
  }
  palisade::v1::SyslogSenderZone* paris = config.add_sender_time_zones();
  paris->set_hostname("web-paris");
  paris->set_time_zone("Europe/Paris");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  auto send_udp = [&](const char* from, const std::string& dgram) {
    const int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, from, &src.sin_addr);
    ASSERT_EQ(::bind(udp, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0) << from;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(r->udp_port()));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(::sendto(udp, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&a),
                       sizeof(a)),
              static_cast<ssize_t>(dgram.size()));
    ::close(udp);
  };
  send_udp("127.0.0.2", "<13>Dec  7 12:00:00 h app: a");
  send_udp("127.0.0.2", "<13>Dec  7 12:00:00 web-paris app: b");
  send_udp("127.0.0.3", "<13>Dec  7 12:00:00 h app: c");
  const int fd = ConnectFrom("127.0.0.2", r->tcp_port());
  const std::string frame = "<13>Dec  7 12:00:00 h app: d\n";
  ASSERT_EQ(::send(fd, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
  std::vector<std::string> got = WaitFor(4);
  r->Stop();
  ::close(fd);
  std::sort(got.begin(), got.end());
  EXPECT_THAT(got, ElementsAre("3164 x@America/New_York <13>Dec  7 12:00:00 h app: a",
                               "3164 x@America/New_York <13>Dec  7 12:00:00 h app: d",
                               "3164 x@Asia/Tokyo <13>Dec  7 12:00:00 h app: c",
                               "3164 x@Europe/Paris <13>Dec  7 12:00:00 web-paris app: b"));
}

// The receiver checks its sender_time_zones as the config load does (it is started with other
// configs in tests): an error names the input and the entry.
TEST_F(ReceiverTest, ABadSenderZoneIsRefusedNamingTheEntry) {
  const std::pair<const char*, const char*> bad[] = {
      {"Mars/Olympus", "192.0.2.0/24"},  // no such zone
      {"UTC", "192.0.2.1/24"},           // host bits set
      {"", "192.0.2.0/24"},              // no zone
  };
  for (const auto& [zone, cidr] : bad) {
    palisade::v1::SyslogInput config;
    config.set_name("central");
    config.set_udp_listen("127.0.0.1:0");
    palisade::v1::SyslogSenderZone* z = config.add_sender_time_zones();
    z->set_peer_cidr(cidr);
    z->set_time_zone(zone);
    auto r = SyslogReceiver::Start(config, {}, [](const palisade::v1::LogBatch&) {
      return absl::OkStatus();
    }, registry_);
    ASSERT_FALSE(r.ok()) << zone << " " << cidr;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("inputs.syslog \"central\": sender_time_zones[0]"));
  }
  // One peer range, two zones (the first would win unseen), in any spelling of the range; the
  // same range in the same zone is allowed.
  for (const char* second : {"10.1.0.0/16", "::ffff:10.1.0.0/112"}) {
    for (const char* zone : {"Europe/Paris", "Asia/Tokyo"}) {
      palisade::v1::SyslogInput config;
      config.set_name("central");
      config.set_udp_listen("127.0.0.1:0");
      palisade::v1::SyslogSenderZone* z = config.add_sender_time_zones();
      z->set_peer_cidr("10.1.0.0/16");
      z->set_time_zone("Asia/Tokyo");
      z = config.add_sender_time_zones();
      z->set_peer_cidr(second);
      z->set_time_zone(zone);
      auto r = SyslogReceiver::Start(config, {}, [](const palisade::v1::LogBatch&) {
        return absl::OkStatus();
      }, registry_);
      if (absl::string_view(zone) == "Asia/Tokyo") {
        EXPECT_TRUE(r.ok()) << second << " " << r.status();
        continue;
      }
      ASSERT_FALSE(r.ok()) << second << " " << zone;
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(r.status().message(), HasSubstr("sender_time_zones[1]"));
      EXPECT_THAT(r.status().message(), HasSubstr("10.1.0.0/16"));
    }
  }
}

// A connection that ends in the middle of an octet-counted frame: the part is not a message,
// and it is counted as a malformed frame, not dropped unseen. (The connection opens with a
// counted frame: on a newline-framed one "100 <38>..." is no count, but a malformed line.)
TEST_F(ReceiverTest, AnOctetFrameCutByTheCloseIsCountedMalformed) {
  palisade::v1::SyslogInput config;
  config.set_name("cut");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int fd = Connect(r->tcp_port());
  const std::string whole = "<38>Mar  3 14:02:01 h sshd[1]: whole";
  const std::string sent = absl::StrCat(whole.size(), " ", whole, "100 <38>Mar  3 14:02:02 h");
  ASSERT_EQ(::send(fd, sent.data(), sent.size(), 0), static_cast<ssize_t>(sent.size()));
  ::close(fd);
  EXPECT_THAT(WaitFor(1), ElementsAre("3164 cut " + whole));
  EXPECT_TRUE(Eventually([&] { return Metric("palisade_syslog_malformed_frames_total") == 1; }));
  // The cut part is no frame (counted so at the close, not left to be refused as one).
  EXPECT_EQ(Metric("palisade_syslog_frames_total"), 1);
  EXPECT_THAT(WaitFor(1), ElementsAre("3164 cut " + whole));
}

// Over TCP: rsyslog's octet-counted framing (no newlines), one frame with a bad length in the
// middle; the good frames after it arrive (before, every frame after it was lost).
TEST_F(ReceiverTest, AFrameWithABadLengthDoesNotLoseTheConnectionsNextFrames) {
  palisade::v1::SyslogInput config;
  config.set_name("octets");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int fd = Connect(r->tcp_port());
  std::string sent = "7 <13>one" "7x <13>bad";
  for (int i = 0; i < 5; ++i) {
    const std::string m = absl::StrCat("<13>Mar  3 14:02:01 h app: good ", i);
    absl::StrAppend(&sent, m.size(), " ", m);
  }
  ASSERT_EQ(::send(fd, sent.data(), sent.size(), 0), static_cast<ssize_t>(sent.size()));
  std::vector<std::string> got = WaitFor(6);
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got.front(), "3164 octets <13>one");
  EXPECT_EQ(got.back(), "3164 octets <13>Mar  3 14:02:01 h app: good 4");
  EXPECT_EQ(Metric("palisade_syslog_malformed_frames_total"), 1);
  ::close(fd);
}

// A connection that sends nothing for idle_timeout (on the injected clock, from the accept) is
// closed and counted, so silent or vanished peers cannot hold every slot; the slot then serves
// another sender. The clock moves only when the test says so: no timing assumption.
TEST_F(ReceiverTest, AnIdleConnectionIsClosedAndItsSlotServesAnother) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("idle");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(1);
  config.mutable_idle_timeout()->set_seconds(1);  // as the daemon's config sets it
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  const int silent = Connect(r->tcp_port());
  ASSERT_TRUE(Eventually([&] { return r->connection_threads() == 1; }));  // accepted
  clock.Advance(absl::Milliseconds(999));
  clock.Advance(absl::Milliseconds(1));
  timeval wait{30, 0};  // a bound, should the timeout not fire
  ::setsockopt(silent, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
  char c;
  EXPECT_EQ(::recv(silent, &c, 1, 0), 0);  // closed by the receiver
  ::close(silent);
  EXPECT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 0; }));
  EXPECT_EQ(Metric("palisade_syslog_idle_closed_connections_total"), 1);
  // The freed slot serves the next sender (it is not refused).
  const int talker = Connect(r->tcp_port());
  ASSERT_EQ(::send(talker, "<13>a: one\n", 11, 0), 11);
  ASSERT_EQ(WaitFor(1).size(), 1u);
  EXPECT_EQ(Metric("palisade_syslog_refused_connections_total"), 0);
  ::close(talker);
}

TEST_F(ReceiverTest, ConnectionsPastTheCapAreRefusedAndCounted) {
  palisade::v1::SyslogInput config;
  config.set_name("capped");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(1);
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int first = Connect(r->tcp_port());
  ::send(first, "<1>a\n", 5, 0);
  WaitFor(1);  // the first connection is being served
  const int second = Connect(r->tcp_port());
  char c;
  EXPECT_EQ(::recv(second, &c, 1, 0), 0);  // closed at once
  ::close(first);
  ::close(second);
}

// A byte drip: one address opening connections and keeping each just within idle_timeout could
// hold all of max_connections. Past max_connections_per_address its next connection is closed at
// once and counted; its open ones, and other addresses, are served.
TEST_F(ReceiverTest, ConnectionsPastThePerAddressCapAreRefusedAndCounted) {
  palisade::v1::SyslogInput config;
  config.set_name("peraddr");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(8);
  config.set_max_connections_per_address(2);
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int first = ConnectFrom("127.0.0.1", r->tcp_port());
  const int second = ConnectFrom("127.0.0.1", r->tcp_port());
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 2; }));
  const int third = ConnectFrom("127.0.0.1", r->tcp_port());
  EXPECT_TRUE(ClosedByServer(third));
  ::close(third);
  EXPECT_TRUE(Eventually(
      [&] { return Metric("palisade_syslog_per_address_refused_connections_total") == 1; }));
  EXPECT_EQ(Metric("palisade_syslog_refused_connections_total"), 0);  // max_connections: room
  // Another address has slots of its own, and the first two connections go on.
  const int other = ConnectFrom("127.0.0.2", r->tcp_port());
  ASSERT_EQ(::send(other, "<13>a: other\n", 13, 0), 13);
  ASSERT_EQ(::send(first, "<13>a: first\n", 13, 0), 13);
  std::vector<std::string> got = WaitFor(2);
  std::sort(got.begin(), got.end());
  EXPECT_THAT(got, ElementsAre("3164 peraddr <13>a: first", "3164 peraddr <13>a: other"));
  EXPECT_EQ(Metric("palisade_syslog_per_address_refused_connections_total"), 1);
  ::close(first);
  ::close(second);
  ::close(other);
}

// The count per address goes down as its connections end: a new one is served again.
TEST_F(ReceiverTest, AnAddressBelowItsCapAgainIsServed) {
  palisade::v1::SyslogInput config;
  config.set_name("again");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(8);
  config.set_max_connections_per_address(2);
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int first = ConnectFrom("127.0.0.1", r->tcp_port());
  const int second = ConnectFrom("127.0.0.1", r->tcp_port());
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 2; }));
  const int refused = ConnectFrom("127.0.0.1", r->tcp_port());
  EXPECT_TRUE(ClosedByServer(refused));
  ::close(refused);
  ::close(first);
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 1; }));
  const int next = ConnectFrom("127.0.0.1", r->tcp_port());
  ASSERT_EQ(::send(next, "<13>a: next\n", 12, 0), 12);
  EXPECT_THAT(WaitFor(1), ElementsAre("3164 again <13>a: next"));
  EXPECT_EQ(Metric("palisade_syslog_per_address_refused_connections_total"), 1);
  ::close(next);
  ::close(second);
}

TEST_F(ReceiverTest, APerAddressCapOverMaxConnectionsIsRefused) {
  auto start = [&](const palisade::v1::SyslogInput& c) {
    return SyslogReceiver::Start(
        c, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry_);
  };
  palisade::v1::SyslogInput config;
  config.set_name("over");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(4);
  config.set_max_connections_per_address(5);
  absl::StatusOr<std::unique_ptr<SyslogReceiver>> r = start(config);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("inputs.syslog \"over\": max_connections_per_address 5 is over "
                        "max_connections 4"));
  config.clear_max_connections();  // the default, 64
  config.set_max_connections_per_address(65);
  EXPECT_EQ(start(config).status().code(), absl::StatusCode::kInvalidArgument);
  config.set_max_connections_per_address(64);
  EXPECT_TRUE(start(config).ok());
  // Unset with a max_connections under the default 8: max_connections, not an error.
  config.set_max_connections(4);
  config.clear_max_connections_per_address();
  EXPECT_TRUE(start(config).ok());
}

// Out of file descriptors, accept fails (EMFILE) with the connection still queued, so poll says
// "ready" again at once: the accept loop backs off instead of spinning, and counts it. In a
// forked child (the descriptor limit is the process's); the child's threads are its own. A
// bound on failed accepts per second of wall time holds however slow the machine is (slower
// means fewer tries); without the back-off a spinning loop makes thousands.
TEST_F(ReceiverTest, AcceptOutOfDescriptorsBacksOffAndCounts) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::alarm(120);  // a bound, should the child hang
    prometheus::Registry registry;
    palisade::v1::SyslogInput config;
    config.set_name("emfile");
    config.set_tcp_listen("127.0.0.1:0");
    auto r = SyslogReceiver::Start(
        config, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry);
    if (!r.ok()) ::_exit(10);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);  // before the limit
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = 1;  // no new descriptor from here on (0, 1 and 2 are open)
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(11);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>((*r)->tcp_port()));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) ::_exit(12);
    auto failed = [&] {
      double sum = 0;
      for (const auto& family : registry.Collect()) {
        if (family.name != "palisade_syslog_accept_errors_total") continue;
        for (const auto& m : family.metric) sum += m.counter.value;
      }
      return sum;
    };
    if (!Eventually([&] { return failed() >= 1; })) ::_exit(13);
    const double before = failed();
    absl::SleepFor(absl::Seconds(2));
    const double tries = failed() - before;
    // A back-off of 100 ms gives ~20; 100 leaves a wide margin and is far below a spin.
    if (tries > 100) {
      std::fprintf(stderr, "%.0f failed accepts in 2 s\n", tries);
      ::_exit(14);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(ReceiverTest, ANonPositiveIdleTimeoutIsRefused) {
  palisade::v1::SyslogInput config;
  config.set_name("never");
  config.set_tcp_listen("127.0.0.1:0");
  auto start = [&](SyslogReceiverOptions options) {
    return SyslogReceiver::Start(
        config, options, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); },
        registry_);
  };
  SyslogReceiverOptions zero;
  zero.idle_timeout = absl::ZeroDuration();
  EXPECT_EQ(start(zero).status().code(), absl::StatusCode::kInvalidArgument);
  config.mutable_idle_timeout()->set_seconds(-1);
  absl::StatusOr<std::unique_ptr<SyslogReceiver>> r = start({});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("inputs.syslog \"never\": idle_timeout"));
}

// A sender that connects once per message (util-linux logger does): ended connections are
// reaped, so their number stays bounded by the cap, however many came and went.
TEST_F(ReceiverTest, ManyShortConnectionsAllCountAndEndedOnesAreReaped) {
  palisade::v1::SyslogInput config;
  config.set_name("short");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(4);
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  for (int i = 0; i < 200; ++i) {
    // One at a time: the previous one's line is through, but its thread gives its slot back
    // only after that (it reads the close, then Releases); on a busy machine 4 such threads
    // would fill the cap and this one be refused. So wait for the slot too (a wide bound).
    ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 0; })) << i;
    const int fd = Connect(r->tcp_port());
    const std::string m = absl::StrCat("<13>Mar  3 14:02:01 h app: message ", i, "\n");
    ::send(fd, m.data(), m.size(), 0);
    ::close(fd);
    WaitFor(static_cast<size_t>(i + 1));
  }
  EXPECT_EQ(WaitFor(200).size(), 200u);
  // Ended threads are joined at the next accept (without it all 200 would be held); a wide
  // margin for threads a busy machine has not finished yet.
  EXPECT_LT(r->connection_threads(), 50u);
}

TEST_F(ReceiverTest, APortInUseIsAClearError) {
  palisade::v1::SyslogInput config;
  config.set_name("first");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  config.set_name("second");
  config.set_tcp_listen(absl::StrCat("127.0.0.1:", r->tcp_port()));
  auto again = SyslogReceiver::Start(
      config, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry_);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(again.status().message(), HasSubstr("inputs.syslog \"second\""));
  EXPECT_THAT(again.status().message(), HasSubstr("cannot listen"));
}

TEST_F(ReceiverTest, ATcpConnectionOverItsRateIsHeldBackNotDropped) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("limited");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_lines_per_second(10);
  config.set_max_burst_lines(5);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  const int fd = Connect(r->tcp_port());
  std::string lines;
  for (int i = 0; i < 20; ++i) lines += absl::StrCat("<13>Mar  3 14:02:01 h app: ", i, "\n");
  ASSERT_EQ(::send(fd, lines.data(), lines.size(), 0), static_cast<ssize_t>(lines.size()));
  // The burst goes through; the rest waits (counted) while the clock stands still. (Loopback
  // gives the 20 lines in one read; were it two, the second is not read until the first's
  // lines are through, and the counts below hold all the same.)
  ASSERT_TRUE(Eventually([&] { return Metric("palisade_syslog_throttled_lines_total") > 0; }));
  ASSERT_TRUE(Eventually([&] { return Got() >= 5; }));  // the burst, once flushed
  EXPECT_EQ(Got(), 5u);
  clock.Advance(absl::Seconds(1));  // 10 tokens, but the bucket holds 5
  ASSERT_TRUE(Eventually([&] { return Got() >= 10; }));
  EXPECT_EQ(Got(), 10u);
  clock.Advance(absl::Milliseconds(500));
  ASSERT_TRUE(Eventually([&] { return Got() >= 15; }));
  EXPECT_EQ(Got(), 15u);
  // The sender closes with 5 lines held: they still go at the connection's rate.
  ::close(fd);
  clock.Advance(absl::Milliseconds(300));  // 3 tokens
  ASSERT_TRUE(Eventually([&] { return Got() >= 18; }));
  EXPECT_EQ(Got(), 18u);
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(WaitFor(20).size(), 20u);
  // Each held line counted once: 15 at most (the 5 of the burst never waited).
  EXPECT_LE(Metric("palisade_syslog_throttled_lines_total"), 15);
}

// The budget is the sender address's, not each connection's: a sender that connects, writes a
// burst's worth and closes, again and again (or over parallel connections), gets no more than
// one sender (before, each connection's bucket started full). The clock stands still.
TEST_F(ReceiverTest, ReconnectingDoesNotRefillTheRateLimit) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("reconnect");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_lines_per_second(10);
  config.set_max_burst_lines(5);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  for (int c = 0; c < 4; ++c) {
    const int fd = Connect(r->tcp_port());
    std::string lines;
    for (int i = 0; i < 5; ++i) {
      lines += absl::StrCat("<13>Mar  3 14:02:01 h app: ", c, " ", i, "\n");
    }
    ASSERT_EQ(::send(fd, lines.data(), lines.size(), 0), static_cast<ssize_t>(lines.size()));
    ::close(fd);
  }
  // Every line is either through (once flushed) or held and counted.
  ASSERT_TRUE(Eventually(
      [&] { return Got() + Metric("palisade_syslog_throttled_lines_total") >= 20; }));
  EXPECT_EQ(Metric("palisade_syslog_throttled_lines_total"), 15);
  EXPECT_EQ(Got(), 5u);
  // Held lines go as the address's bucket refills (5 a step: its burst), none lost.
  for (size_t want : {10u, 15u, 20u}) {
    clock.Advance(absl::Seconds(1));
    ASSERT_TRUE(Eventually([&] { return Got() >= want; })) << want;
    EXPECT_EQ(Got(), want);
  }
  EXPECT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 0; }));
}

// An address's bucket outlives its connections only until it is full again, and those of
// addresses with none open are kept for max_tcp_senders addresses at most.
TEST_F(ReceiverTest, TcpBucketsOfClosedAddressesAreBounded) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("bounded");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_lines_per_second(1);
  config.set_max_burst_lines(1);
  max_tcp_senders_ = 2;
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  size_t sent = 0;
  auto one_line_from = [&](const char* from) {  // its line through, its connection ended
    const int fd = ConnectFrom(from, r->tcp_port());
    ASSERT_EQ(::send(fd, "<13>a: x\n", 9, 0), 9);
    ::close(fd);
    ASSERT_EQ(WaitFor(++sent).size(), sent) << from;
    ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 0; })) << from;
  };
  one_line_from("127.0.0.2");
  EXPECT_EQ(r->tcp_rate_buckets(), 1u);  // spent: kept after the close
  for (const char* from : {"127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"}) {
    one_line_from(from);
    EXPECT_EQ(r->tcp_rate_buckets(), 2u) << from;
  }
  clock.Advance(absl::Seconds(1));  // all full again: forgotten at the next new address
  one_line_from("127.0.0.7");
  EXPECT_EQ(r->tcp_rate_buckets(), 1u);
}

// Over its budget a connection is not read: the sender's socket buffers fill and its writes
// block (here: EAGAIN), and everything arrives once the clock lets it.
TEST_F(ReceiverTest, AThrottledConnectionPushesBackOnTheSender) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("pushback");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_lines_per_second(10000);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  const int fd = Connect(r->tcp_port());
  // A small send buffer: the kernel calls the socket writable again once a third of it is free,
  // which the receiver's first reads give, however far its own receive buffer autotuned.
  const int sndbuf = 16 * 1024;
  ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
  ASSERT_EQ(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  const std::string line = "<13>Mar  3 14:02:01 h app: " + std::string(100, 'x') + "\n";
  size_t sent_lines = 0;
  std::string rest;  // the unsent end of a line a send took only part of
  bool blocked = false;
  // Kernel buffers are a few MiB at most: 256 MiB unblocked would mean nobody pushed back.
  for (size_t bytes = 0; bytes < (256u << 20);) {
    const std::string out = rest.empty() ? line : rest;
    const ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Make sure it stays blocked: the receiver may still be taking its burst.
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 1000) == 0) {
        blocked = true;
        break;
      }
      continue;
    }
    ASSERT_GT(n, 0);
    bytes += static_cast<size_t>(n);
    rest = out.substr(static_cast<size_t>(n));
    if (rest.empty()) ++sent_lines;
  }
  ASSERT_TRUE(blocked);
  EXPECT_LT(Got(), sent_lines);
  if (!rest.empty()) {  // finish the cut line as the clock lets the receiver read
    // Seconds of budget until the kernel calls the socket writable again (bounded).
    int rounds = 0;
    while (!rest.empty()) {
      clock.Advance(absl::Seconds(1));
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 100) != 1) {
        ASSERT_LT(++rounds, 1200) << "the receiver never made room for the rest of the line";
        continue;
      }
      const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n > 0) rest.erase(0, static_cast<size_t>(n));
    }
    ++sent_lines;
  }
  ::close(fd);
  for (int step = 0; step < 10000 && Got() < sent_lines; ++step) {
    const size_t before = Got();
    clock.Advance(absl::Seconds(1));
    ASSERT_TRUE(Eventually([&] { return Got() > before || Got() >= sent_lines; }));
  }
  EXPECT_EQ(Got(), sent_lines);
  EXPECT_GT(Metric("palisade_syslog_throttled_lines_total"), 0);
}

// A connection the rate limit holds back has lines in its socket that the kernel acknowledged
// (the sender counts them sent). Stop reads and delivers them, without the rate limit, up to
// stop_drain_bytes a connection, and counts what it leaves; before, Stop delivered the one read
// it held and closed the socket on the rest, uncounted.
TEST_F(ReceiverTest, StoppingAThrottledConnectionDeliversWhatItsSocketHeld) {
  for (const size_t drain : {size_t{4} << 20, size_t{1000}}) {
    SCOPED_TRACE(drain);
    {
      absl::MutexLock lock(&mu_);
      got_.clear();
    }
    prometheus::Registry registry;
    SimulatedClock clock;  // stands still: the bucket never refills
    palisade::v1::SyslogInput config;
    config.set_name("held");
    config.set_tcp_listen("127.0.0.1:0");
    config.set_max_lines_per_second(10);
    config.set_max_burst_lines(5);
    SyslogReceiverOptions options;
    options.clock = &clock;
    options.flush_interval = absl::Milliseconds(10);
    options.stop_drain_bytes = drain;
    absl::StatusOr<std::unique_ptr<SyslogReceiver>> r = SyslogReceiver::Start(
        config, options,
        [this](const palisade::v1::LogBatch& b) {
          absl::MutexLock lock(&mu_);
          for (const auto& rec : b.records()) got_.push_back(rec.line());
          return absl::OkStatus();
        },
        registry);
    ASSERT_TRUE(r.ok()) << r.status();
    const int fd = Connect((*r)->tcp_port());
    std::string lines;
    // ~100 KB: more than the receiver's one read (64 KiB), less than the kernel's buffers.
    constexpr int kLines = 3000;
    for (int i = 0; i < kLines; ++i) lines += absl::StrCat("<13>Mar  3 14:02:01 h app: ", i, "\n");
    timeval bound{60, 0};  // a bound, should the buffers be smaller than they are
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof(bound));
    ASSERT_EQ(::send(fd, lines.data(), lines.size(), 0), static_cast<ssize_t>(lines.size()));
    // Everything sent is in the receiver's kernel (the sender's queue empty), and the burst
    // went through.
    ASSERT_TRUE(Eventually([&] {
      int queued = 0;
      return ::ioctl(fd, SIOCOUTQ, &queued) == 0 && queued == 0 && Got() >= 5;
    }));
    (*r)->Stop();
    double unread = 0;
    for (const auto& family : registry.Collect()) {
      if (family.name != "palisade_syslog_unread_bytes_at_stop_total") continue;
      for (const auto& m : family.metric) unread += m.counter.value;
    }
    if (drain > lines.size()) {
      EXPECT_EQ(Got(), static_cast<size_t>(kLines));
      EXPECT_EQ(unread, 0);
    } else {
      // Held back: the read before Stop (at least the burst), then 1,000 bytes more at most;
      // every byte sent is delivered or counted.
      EXPECT_LT(Got(), static_cast<size_t>(kLines));
      EXPECT_GT(unread, 0);
      absl::MutexLock lock(&mu_);
      size_t delivered = 0;
      for (const std::string& l : got_) delivered += l.size() + 1;
      EXPECT_EQ(static_cast<double>(delivered) + unread, static_cast<double>(lines.size()));
    }
    ::close(fd);
  }
}

// Stop reads what a socket held when it came, without waiting: a sender that keeps writing (a
// line every 20 ms) does not hold it up. Before, each read waited up to 100 ms for more, so such
// a sender kept Stop reading until 4 MiB or 100,000 reads (over an hour at 20 lines/s), past
// any service manager's stop timeout. The writer goes on for a minute at most: Stop returning
// before it ends is the assertion (a wide margin, not a measure of speed).
TEST_F(ReceiverTest, StopDoesNotWaitOnASenderThatKeepsSending) {
  palisade::v1::SyslogInput config;
  config.set_name("busy");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  const int fd = Connect(r->tcp_port());
  std::atomic<bool> stop_writing{false}, writer_done{false};
  std::thread writer([&] {
    for (int i = 0; i < 3000 && !stop_writing.load(); ++i) {
      const std::string line = absl::StrCat("<13>Mar  3 14:02:01 h app: ", i, "\n");
      // A send refused once Stop closed the connection does not end the loop: writer_done
      // must mean "sent all 3000 (a minute)", never "the receiver hung up first".
      (void)::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
      absl::SleepFor(absl::Milliseconds(20));
    }
    writer_done = true;
  });
  ASSERT_TRUE(Eventually([&] { return Got() >= 3; }));
  r->Stop();
  EXPECT_FALSE(writer_done.load());
  stop_writing = true;
  writer.join();
  ::close(fd);
}

// UDP has no backpressure: a sender's datagrams over its budget are dropped and counted, and
// another sender (127.0.0.2: Linux answers for all of 127/8) has its own budget.
void SendUdpFrom(const char* from, int port, int n) {
  const int u = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, from, &src.sin_addr);
  ASSERT_EQ(::bind(u, reinterpret_cast<sockaddr*>(&src), sizeof(src)), 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  for (int i = 0; i < n; ++i) {
    const std::string d = absl::StrCat("<13>Mar  3 14:02:01 h app: ", from, " ", i);
    ::sendto(u, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  ::close(u);
}

// Past max_udp_senders, buckets that have refilled are forgotten (at most once a second); while
// none has, new senders share one bucket: memory stays bounded and new addresses gain nothing.
TEST_F(ReceiverTest, UdpSendersPastTheCapShareOneBucket) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("many");
  config.set_udp_listen("127.0.0.1:0");
  config.set_max_lines_per_second(1);
  config.set_max_burst_lines(2);
  auto r = Start(config, &clock, /*max_udp_senders=*/2);
  ASSERT_NE(r, nullptr);
  double sent = 0;
  auto send = [&](const char* from, int n) {
    SendUdpFrom(from, r->udp_port(), n);
    sent += n;
    ASSERT_TRUE(Eventually([&] { return Metric("palisade_syslog_frames_total") >= sent; }));
  };
  send("127.0.0.1", 1);
  send("127.0.0.2", 1);
  send("127.0.0.3", 3);  // the shared bucket: 2 pass
  send("127.0.0.4", 1);  // shares it too: dropped
  EXPECT_EQ(Metric("palisade_syslog_rate_limited_drops_total"), 2);
  clock.Advance(absl::Seconds(2));  // all full again: forgotten at the next new sender
  send("127.0.0.5", 2);
  send("127.0.0.6", 2);
  EXPECT_EQ(Metric("palisade_syslog_rate_limited_drops_total"), 2);
  EXPECT_EQ(WaitFor(8).size(), 8u);
}

// A UDP sender's stream is a pipeline stream, which the pipeline keeps for host_stream_idle
// (48 h plus the longest window) after its last line: a sender's place is given up only past
// that, as a host's is. Released after 10 minutes, forged senders (max_udp_senders new ones
// every 10 minutes) would have the pipeline hold a stream for each, past its shared
// max_sender_streams, for a day.
TEST_F(ReceiverTest, AUdpSendersPlaceIsReleasedOnlyPastTheIdleBound) {
  SimulatedClock clock(absl::FromUnixSeconds(1'796'644'800));
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_udp_listen("127.0.0.1:0");
  auto r = Start(config, &clock, /*max_udp_senders=*/1);
  ASSERT_NE(r, nullptr);
  const absl::Duration bound = SyslogReceiverOptions().host_stream_idle;
  size_t sent = 0;
  // The stream the next datagram from `from` goes in.
  auto stream_of = [&](const char* from) {
    SendUdpFrom(from, r->udp_port(), 1);
    ++sent;
    if (WaitFor(sent).size() < sent) return std::string("(none)");
    absl::MutexLock lock(&mu_);
    const std::string& s = senders_.back();
    return s.substr(0, s.find(" <"));
  };
  EXPECT_EQ(stream_of("127.0.0.2"), "127.0.0.2 h");
  // Quiet for an hour, then for the bound: the place stays 127.0.0.2's.
  clock.Advance(absl::Hours(1));
  EXPECT_EQ(stream_of("127.0.0.3"), "");
  clock.Advance(bound - absl::Hours(1));
  EXPECT_EQ(stream_of("127.0.0.3"), "");
  // Past it: the new sender takes the place.
  clock.Advance(absl::Seconds(2));
  EXPECT_EQ(stream_of("127.0.0.3"), "127.0.0.3 h");
  r->Stop();
}

// The pipeline keeps an idle stream for stream_idle_bound, which a reload bringing a longer rule
// window lengthens. A host's or UDP sender's place follows it then: with the bound read once at
// start, places were given up after 72 h while the pipeline kept their streams for 9 days, so
// hosts (or forged senders) renamed past 72 h had it hold more streams than the places.
TEST_F(ReceiverTest, PlacesFollowThePipelinesIdleBoundAfterAReload) {
  auto rules_with_window = [](int64_t seconds) {
    auto pack = ParseRulePack(absl::StrCat(R"pb(
      rules {
        id: "ssh-fail"
        formats: LOG_FORMAT_SYSLOG
        patterns: "Failed password for \\S+ from (?P<ip>\\S+) port"
        threshold {
          count: 3
          window { seconds: )pb", seconds, R"pb( }
        }
        decision {
          action: ACTION_BLOCK
          duration { seconds: 600 }
        }
      }
    )pb"), "test.textproto");
    EXPECT_TRUE(pack.ok()) << pack.status();
    auto rules = RuleSet::Compile({*pack});
    EXPECT_TRUE(rules.ok()) << rules.status();
    return *std::move(rules);
  };
  SimulatedClock clock(absl::FromUnixSeconds(1'796'644'800));
  PipelineOptions options;
  options.time_zone = absl::UTCTimeZone();
  DecisionTable table(clock);
  prometheus::Registry pipeline_registry;
  Pipeline pipeline(rules_with_window(600), options, clock, table, pipeline_registry);
  const absl::Duration host_stream_idle = SyslogReceiverOptions().host_stream_idle;
  ASSERT_LT(pipeline.stream_idle_bound(), host_stream_idle);
  stream_idle_bound_ = [&pipeline] { return pipeline.stream_idle_bound(); };
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_udp_listen("127.0.0.1:0");
  max_host_streams_per_peer_ = 1;
  auto r = Start(config, &clock, /*max_udp_senders=*/1);
  ASSERT_NE(r, nullptr);
  const int port = r->tcp_port();
  size_t sent = 0;
  auto udp_stream_of = [&](const char* from) {  // the stream of a datagram from `from`
    SendUdpFrom(from, r->udp_port(), 1);
    ++sent;
    if (WaitFor(sent).size() < sent) return std::string("(none)");
    absl::MutexLock lock(&mu_);
    const std::string& s = senders_.back();
    return s.substr(0, s.find(" <"));
  };
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: x"), "127.0.0.2 a");
  ++sent;
  EXPECT_EQ(udp_stream_of("127.0.0.2"), "127.0.0.2 h");
  // A reload: a rule counts over a week now, and the pipeline keeps streams 9 days.
  pipeline.SetRules(rules_with_window(7 * 24 * 3600));
  const absl::Duration bound = pipeline.stream_idle_bound();
  ASSERT_EQ(bound, absl::Hours(48) + absl::Hours(7 * 24));
  // Past host_stream_idle, within the new bound: "a" and UDP 127.0.0.2 keep their places.
  clock.Advance(host_stream_idle + absl::Seconds(1));
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2");
  ++sent;
  EXPECT_EQ(udp_stream_of("127.0.0.3"), "");
  // Past the new bound (and "b" and 127.0.0.3 quiet as long since they were folded).
  clock.Advance(bound + absl::Seconds(1));
  EXPECT_EQ(StreamOf(port, "127.0.0.2", "<38>Dec  7 12:00:00 b sshd[1]: x"), "127.0.0.2 b");
  ++sent;
  EXPECT_EQ(udp_stream_of("127.0.0.3"), "127.0.0.3 h");
  r->Stop();
}

// The pipeline's bound is read under the batch lock only when a sweep or the folding check
// needs it: a new sender's first host, with places free, needs neither.
TEST_F(ReceiverTest, ANewSendersHostIsPlacedWithoutReadingTheBound) {
  std::atomic<int> reads{0};
  stream_idle_bound_ = [&reads] {
    ++reads;
    return absl::Hours(1);
  };
  palisade::v1::SyslogInput config;
  config.set_name("central");
  config.set_tcp_listen("127.0.0.1:0");
  auto r = Start(config);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(StreamOf(r->tcp_port(), "127.0.0.2", "<38>Dec  7 12:00:00 a sshd[1]: x"),
            "127.0.0.2 a");
  EXPECT_EQ(reads.load(), 0);
  r->Stop();
}

TEST_F(ReceiverTest, AUdpSenderOverItsRateIsDroppedAndCounted) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("udp");
  config.set_udp_listen("127.0.0.1:0");
  config.set_max_lines_per_second(2);
  config.set_max_burst_lines(3);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  auto send_from = [&](const char* from, int n) { SendUdpFrom(from, r->udp_port(), n); };
  send_from("127.0.0.1", 10);
  ASSERT_TRUE(Eventually([&] { return Metric("palisade_syslog_frames_total") >= 10; }));
  EXPECT_EQ(Metric("palisade_syslog_rate_limited_drops_total"), 7);
  send_from("127.0.0.2", 2);
  ASSERT_TRUE(Eventually([&] { return Metric("palisade_syslog_frames_total") >= 12; }));
  EXPECT_EQ(Metric("palisade_syslog_rate_limited_drops_total"), 7);
  EXPECT_EQ(WaitFor(5).size(), 5u);
  clock.Advance(absl::Seconds(1));  // two more for 127.0.0.1
  send_from("127.0.0.1", 3);
  ASSERT_TRUE(Eventually([&] { return Metric("palisade_syslog_frames_total") >= 15; }));
  EXPECT_EQ(Metric("palisade_syslog_rate_limited_drops_total"), 8);
  EXPECT_EQ(WaitFor(7).size(), 7u);
}

// UDP has no backpressure either way: while the sink is busy (a slow decision commit during an
// attack burst) the UDP thread waits, and datagrams past the socket's receive buffer are dropped
// by the kernel. Those drops are counted (SO_RXQ_OVFL, and SO_MEMINFO once the socket is idle),
// so frames read plus drops account for every datagram sent. The buffer is set tiny here so the
// kernel drops for certain; the sink is held until the whole burst is sent.
class UdpKernelDropTest : public ReceiverTest {
 protected:
  std::unique_ptr<SyslogReceiver> StartBlocked(const std::string& name) {
    palisade::v1::SyslogInput config;
    config.set_name(name);
    config.set_udp_listen("127.0.0.1:0");
    SyslogReceiverOptions options;
    options.batch_lines = 10;
    options.flush_interval = absl::Milliseconds(10);
    options.udp_receive_buffer_bytes = 4096;
    auto r = SyslogReceiver::Start(
        config, options,
        [this](const palisade::v1::LogBatch& b) {
          release_.WaitForNotification();
          absl::MutexLock lock(&mu_);
          for (const auto& rec : b.records()) got_.push_back(rec.line());
          return absl::OkStatus();
        },
        registry_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  bool GotLine(const std::string& line) {
    absl::MutexLock lock(&mu_);
    return std::find(got_.begin(), got_.end(), line) != got_.end();
  }
  absl::Notification release_;
};

TEST_F(UdpKernelDropTest, UdpDatagramsLostWhileTheSinkIsBusyAreCounted) {
  auto r = StartBlocked("udpburst");
  ASSERT_NE(r, nullptr);
  SendUdpFrom("127.0.0.1", r->udp_port(), 2000);
  release_.Notify();
  // A last datagram, queued after every drop: it carries their count, and is read after all the
  // datagrams queued before it, so once it reaches the sink everything is accounted for. Sent
  // again (a new one) until one is taken, as the queue may still be full when it comes; those
  // dropped are counted like the rest. The wait per try only decides how many are sent.
  const int u = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(r->udp_port()));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  int sent = 2000;
  bool taken = false;
  for (int i = 0; i < 600 && !taken; ++i) {
    const std::string last = absl::StrCat("<13>Mar  3 14:02:01 h app: last ", i);
    ::sendto(u, last.data(), last.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ++sent;
    for (int j = 0; j < 100 && !taken; ++j) {
      taken = GotLine(last);
      if (!taken) absl::SleepFor(absl::Milliseconds(10));
    }
  }
  ::close(u);
  ASSERT_TRUE(taken);
  const double drops = Metric("palisade_syslog_udp_kernel_drops_total");
  EXPECT_GT(drops, 0);
  EXPECT_EQ(r->udp_kernel_drops(), drops);
  EXPECT_EQ(Metric("palisade_syslog_frames_total") + drops, sent);
  EXPECT_EQ(Got(), Metric("palisade_syslog_frames_total"));
}

// Drops after the last datagram read (nothing comes after the burst) are counted too, once the
// socket is idle.
TEST_F(UdpKernelDropTest, DropsAtTheEndOfABurstAreCountedOnceTheSocketIsIdle) {
  auto r = StartBlocked("udptail");
  ASSERT_NE(r, nullptr);
  SendUdpFrom("127.0.0.1", r->udp_port(), 2000);
  release_.Notify();
  EXPECT_TRUE(Eventually([&] {
    return Metric("palisade_syslog_frames_total") +
               Metric("palisade_syslog_udp_kernel_drops_total") ==
           2000;
  }));
  EXPECT_GT(r->udp_kernel_drops(), 0u);
}

// A throwaway PKI (testdata/make_certs.sh) in the test's temporary directory.
std::string Pki() {
  static const std::string* dir = [] {
    auto* d = new std::string(absl::StrCat(std::getenv("TEST_TMPDIR"), "/pki"));
    EXPECT_EQ(std::system(("services/inputs/testdata/make_certs.sh " + *d).c_str()), 0);
    return d;
  }();
  return *dir;
}

// A TLS client: connects, handshakes (verifying the server against the test CA), with the
// client certificate `name` ("": none). Null when the handshake fails.
struct TlsClient {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  int fd = -1;
  ~TlsClient() {
    if (ssl != nullptr) SSL_free(ssl);
    if (ctx != nullptr) SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
  }
  // True when the handshake completes and the server then accepts data (TLS 1.3 reports a
  // refused client certificate only at the first read, so read for the server's verdict).
  bool Open(int port, const std::string& name, const char* from = "127.0.0.1") {
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, (Pki() + "/ca.pem").c_str(), nullptr);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (!name.empty()) {
      SSL_CTX_use_certificate_chain_file(ctx, (Pki() + "/" + name + ".pem").c_str());
      SSL_CTX_use_PrivateKey_file(ctx, (Pki() + "/" + name + ".key").c_str(), SSL_FILETYPE_PEM);
    }
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, from, &src.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return false;
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set1_host(ssl, "127.0.0.1");
    const bool ok = SSL_connect(ssl) == 1;
    ERR_clear_error();
    return ok;
  }
  bool Send(const std::string& data) {
    return SSL_write(ssl, data.data(), static_cast<int>(data.size())) ==
           static_cast<int>(data.size());
  }
  // Waits for the server to end the connection (a refused certificate: an alert, then close).
  bool ClosedByServer() {
    char c;
    const int r = SSL_read(ssl, &c, 1);
    ERR_clear_error();
    return r <= 0;
  }
};

palisade::v1::SyslogInput TlsConfig(const std::string& name, bool mutual) {
  palisade::v1::SyslogInput config;
  config.set_name(name);
  config.set_tls_listen("127.0.0.1:0");
  config.set_tls_cert_file(Pki() + "/server.pem");
  config.set_tls_key_file(Pki() + "/server.key");
  if (mutual) config.set_tls_client_ca_file(Pki() + "/ca.pem");
  return config;
}

TEST_F(ReceiverTest, TlsOctetCountedFramesArrive) {
  auto r = Start(TlsConfig("tls", /*mutual=*/false));
  ASSERT_NE(r, nullptr);
  ASSERT_GT(r->tls_port(), 0);
  TlsClient client;
  ASSERT_TRUE(client.Open(r->tls_port(), ""));
  const std::string m1 = "<38>1 2026-03-03T14:02:01Z h sshd 1 - - one";
  const std::string m2 = "<38>Mar  3 14:02:01 h sshd[1]: two";
  ASSERT_TRUE(client.Send(absl::StrCat(m1.size(), " ", m1, m2.size(), " ", m2)));
  std::vector<std::string> got = WaitFor(2);
  std::sort(got.begin(), got.end());
  EXPECT_THAT(got, ElementsAre("3164 tls " + m2, "5424 tls " + m1));
  EXPECT_EQ(Metric("palisade_syslog_frames_total"), 2);
  // Garbage inside TLS (no <PRI>, a bad length, an absurd one): counted, and the connection's
  // next frame still arrives.
  ASSERT_TRUE(client.Send("no pri\n12x <1>bad\n99999999 y\n"));
  ASSERT_TRUE(Eventually([&] { return Metric("palisade_syslog_malformed_frames_total") >= 2; }));
  const std::string m3 = "<38>Mar  3 14:02:02 h sshd[1]: three";
  // The absurd length swallows what follows up to its count; end that with a fresh connection.
  TlsClient second;
  ASSERT_TRUE(second.Open(r->tls_port(), ""));
  ASSERT_TRUE(second.Send(absl::StrCat(m3.size(), " ", m3)));
  EXPECT_EQ(WaitFor(3).size(), 3u);
  EXPECT_EQ(Metric("palisade_syslog_malformed_frames_total"), 3);
}

// Mutual TLS: no client certificate, or one from another CA, or plain text on the TLS port:
// each handshake fails, is counted and logged with the peer, and the connections that are
// good (one open all along) go on.
TEST_F(ReceiverTest, FailedTlsHandshakesAreCountedAndOthersGoOn) {
  auto r = Start(TlsConfig("mtls", /*mutual=*/true));
  ASSERT_NE(r, nullptr);
  TlsClient good;
  ASSERT_TRUE(good.Open(r->tls_port(), "client"));
  ASSERT_TRUE(good.Send("<13>a: first\n"));
  ASSERT_EQ(WaitFor(1).size(), 1u);

  TlsClient anonymous;
  if (anonymous.Open(r->tls_port(), "")) {
    EXPECT_TRUE(anonymous.ClosedByServer());
  }
  TlsClient stranger;
  if (stranger.Open(r->tls_port(), "stranger")) {
    EXPECT_TRUE(stranger.ClosedByServer());
  }
  const int plain = Connect(r->tls_port());
  const std::string text = "<13>Mar  3 14:02:01 h app: not tls\n";
  ::send(plain, text.data(), text.size(), 0);
  ASSERT_TRUE(
      Eventually([&] { return Metric("palisade_syslog_tls_handshake_failures_total") >= 3; }));
  EXPECT_EQ(Metric("palisade_syslog_tls_handshake_failures_total"), 3);
  ::close(plain);

  ASSERT_TRUE(good.Send("<13>a: second\n"));
  EXPECT_THAT(WaitFor(2), ElementsAre("3164 mtls <13>a: first", "3164 mtls <13>a: second"));
  absl::MutexLock lock(&mu_);
  ASSERT_EQ(logs_.size(), 3u);
  for (const std::string& l : logs_) {
    EXPECT_THAT(l, HasSubstr("input mtls: TLS handshake from 127.0.0.1:"));
    EXPECT_THAT(l, ::testing::Not(HasSubstr("PRIVATE KEY")));
  }
  EXPECT_THAT(logs_, ::testing::Contains(HasSubstr("peer did not return a certificate")));
}

// A connection that never handshakes holds a slot only until tls_handshake_timeout (on the
// injected clock): then it is cut off, counted, and the slot serves a real sender.
TEST_F(ReceiverTest, ASilentTlsConnectionIsCutOffAtTheHandshakeTimeout) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config = TlsConfig("slow", /*mutual=*/false);
  config.set_max_connections(1);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  const int silent = Connect(r->tls_port());
  ASSERT_TRUE(Eventually([&] { return r->connection_threads() == 1; }));  // accepted
  clock.Advance(absl::Seconds(9));
  clock.Advance(absl::Seconds(1));  // the default 10 s
  timeval wait{60, 0};              // a bound, should the timeout not fire
  ::setsockopt(silent, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
  char c;
  EXPECT_EQ(::recv(silent, &c, 1, 0), 0);  // closed by the receiver
  EXPECT_EQ(Metric("palisade_syslog_tls_handshake_failures_total"), 1);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_THAT(logs_, ElementsAre(HasSubstr("failed: timed out")));
  }
  ::close(silent);
  ASSERT_TRUE(Eventually([&] {  // the slot frees as the cut-off connection's thread ends
    TlsClient probe;
    return probe.Open(r->tls_port(), "") && probe.Send("<13>a: in\n");
  }));
  EXPECT_EQ(WaitFor(1).size(), 1u);
}

TEST_F(ReceiverTest, ATlsKeyThatCannotBeReadOrLoadedIsAClearError) {
  auto start = [&](palisade::v1::SyslogInput c) {
    return SyslogReceiver::Start(
        c, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry_);
  };
  palisade::v1::SyslogInput config = TlsConfig("keyless", /*mutual=*/false);
  config.set_tls_key_file(Pki() + "/no-such.key");
  auto r = start(config);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("inputs.syslog \"keyless\": cannot read "
                                              "tls_key_file \"" +
                                              Pki() + "/no-such.key\""));
  // A key file that is not a key (here: a certificate): named, and its content is not echoed.
  config.set_tls_key_file(Pki() + "/ca.pem");
  r = start(config);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("tls_key_file \"" + Pki() + "/ca.pem\" does not"));
  EXPECT_THAT(r.status().message(), ::testing::Not(HasSubstr("BEGIN")));
  // Another certificate's key.
  config.set_tls_key_file(Pki() + "/client.key");
  r = start(config);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("tls_key_file \"" + Pki() + "/client.key\""));
  config.clear_tls_key_file();
  EXPECT_EQ(start(config).status().code(), absl::StatusCode::kInvalidArgument);
  // A port in use on the TLS listener.
  auto first = start(TlsConfig("first", false));
  ASSERT_TRUE(first.ok()) << first.status();
  config = TlsConfig("second", false);
  config.set_tls_listen(absl::StrCat("127.0.0.1:", (*first)->tls_port()));
  r = start(config);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("inputs.syslog \"second\": cannot listen"));
}

// TCP and TLS connections from one address count together, and a TLS listener on an IPv6
// socket (where IPv4 senders appear as ::ffff:127.0.0.1) counts them as 127.0.0.1.
// Connections that never finish their TLS handshake hold their slots only for handshake_grace
// (1 s) once every slot is taken: before, four silent ones from four addresses (each within its
// per-address cap) kept a sender with a certificate out for tls_handshake_timeout, and came
// again. A newcomer takes the slot of the oldest one past the grace, which is cut off, counted
// and logged; with none that old it is refused, so a sender's own handshake (milliseconds) is
// never cut off by the next one.
TEST_F(ReceiverTest, UnauthenticatedConnectionsLeaveSlotsForCertifiedSenders) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config = TlsConfig("slots", /*mutual=*/true);
  config.set_max_connections(4);
  config.set_max_connections_per_address(1);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  std::vector<int> silent;
  for (const char* from : {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}) {
    silent.push_back(ConnectFrom(from, r->tls_port()));
  }
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 4; }));
  {
    TlsClient early;  // within the grace: refused, none cut off
    const bool opened = early.Open(r->tls_port(), "client", "127.0.0.6");
    EXPECT_TRUE(!opened || early.ClosedByServer());
    ASSERT_TRUE(
        Eventually([&] { return Metric("palisade_syslog_refused_connections_total") == 1; }));
  }
  EXPECT_EQ(Metric("palisade_syslog_tls_handshake_failures_total"), 0);
  clock.Advance(absl::Seconds(1));
  TlsClient certified;
  ASSERT_TRUE(certified.Open(r->tls_port(), "client", "127.0.0.6"));
  ASSERT_TRUE(certified.Send("<13>a: in\n"));
  EXPECT_THAT(WaitFor(1), ElementsAre("3164 slots <13>a: in"));
  EXPECT_TRUE(ClosedByServer(silent[0]));  // the oldest
  EXPECT_TRUE(
      Eventually([&] { return Metric("palisade_syslog_tls_handshake_failures_total") == 1; }));
  EXPECT_EQ(Metric("palisade_syslog_refused_connections_total"), 1);
  EXPECT_EQ(Gauge("palisade_syslog_connections"), 4);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_THAT(logs_, ::testing::Contains(HasSubstr("cut off: every slot was taken")));
  }
  for (int fd : silent) ::close(fd);
  ::close(certified.fd);
  certified.fd = -1;
  // Every slot given back once (the cut-off one's went to the newcomer): four new connections
  // fill the receiver again, and a fifth within the grace is refused.
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 0; }));
  std::vector<int> again;
  for (const char* from : {"127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10"}) {
    again.push_back(ConnectFrom(from, r->tls_port()));
  }
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 4; }));
  const int fifth = ConnectFrom("127.0.0.11", r->tls_port());
  EXPECT_TRUE(ClosedByServer(fifth));
  EXPECT_TRUE(
      Eventually([&] { return Metric("palisade_syslog_refused_connections_total") == 2; }));
  EXPECT_EQ(Gauge("palisade_syslog_connections"), 4);
  ::close(fifth);
  for (int fd : again) ::close(fd);
}

// The same over TLS: what OpenSSL already took from the socket (records not decrypted yet) is
// delivered at Stop too. Before (its review found), the drain went by the socket's bytes only,
// and the records in OpenSSL's buffer were lost, uncounted.
TEST_F(ReceiverTest, StoppingAThrottledTlsConnectionDeliversWhatOpenSslHeld) {
  SimulatedClock clock;  // stands still: the bucket never refills
  palisade::v1::SyslogInput config = TlsConfig("held", /*mutual=*/false);
  config.set_max_lines_per_second(10);
  config.set_max_burst_lines(5);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  TlsClient client;
  ASSERT_TRUE(client.Open(r->tls_port(), ""));
  constexpr size_t kLines = 300;  // a record each, ~19 KB on the wire: more than one read
  for (size_t i = 0; i < kLines; ++i) {
    ASSERT_TRUE(client.Send(absl::StrCat("<13>Mar  3 14:02:01 h app: ", i, "\n")));
  }
  ASSERT_TRUE(Eventually([&] {
    int queued = 0;
    return ::ioctl(client.fd, SIOCOUTQ, &queued) == 0 && queued == 0 && Got() >= 5;
  }));
  r->Stop();
  EXPECT_EQ(Got(), kLines);
  EXPECT_EQ(Metric("palisade_syslog_unread_bytes_at_stop_total"), 0);
}

// While slots are free nothing is cut off, however long a handshake waits (its own timeout
// aside): a silent connection and a certified sender both keep theirs.
TEST_F(ReceiverTest, AHandshakeIsNotCutOffWhileSlotsAreFree) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config = TlsConfig("free", /*mutual=*/true);
  config.set_max_connections(4);
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  const int silent = ConnectFrom("127.0.0.2", r->tls_port());
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 1; }));
  clock.Advance(absl::Seconds(5));
  TlsClient certified;
  ASSERT_TRUE(certified.Open(r->tls_port(), "client", "127.0.0.3"));
  ASSERT_TRUE(certified.Send("<13>a: in\n"));
  EXPECT_THAT(WaitFor(1), ElementsAre("3164 free <13>a: in"));
  char c;
  errno = 0;
  EXPECT_EQ(::recv(silent, &c, 1, MSG_DONTWAIT), -1);  // still open, nothing sent
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(Metric("palisade_syslog_tls_handshake_failures_total"), 0);
  ::close(silent);
}

TEST_F(ReceiverTest, ThePerAddressCapCountsTcpAndTlsAndMappedAddressesTogether) {
  palisade::v1::SyslogInput config = TlsConfig("both", /*mutual=*/false);
  config.set_tcp_listen("127.0.0.1:0");
  config.set_tls_listen("[::ffff:127.0.0.1]:0");  // an IPv6 socket, IPv4 senders
  config.set_max_connections(8);
  config.set_max_connections_per_address(2);
  absl::StatusOr<std::unique_ptr<SyslogReceiver>> started = SyslogReceiver::Start(
      config, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry_);
  ASSERT_TRUE(started.ok()) << started.status();
  SyslogReceiver& r = **started;
  TlsClient tls;
  ASSERT_TRUE(tls.Open(r.tls_port(), ""));
  const int tcp = ConnectFrom("127.0.0.1", r.tcp_port());
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 2; }));
  const int third = ConnectFrom("127.0.0.1", r.tcp_port());
  EXPECT_TRUE(ClosedByServer(third));
  EXPECT_TRUE(Eventually(
      [&] { return Metric("palisade_syslog_per_address_refused_connections_total") == 1; }));
  TlsClient fourth;  // refused at the accept: the handshake fails, or the first read
  const bool opened = fourth.Open(r.tls_port(), "");
  timeval wait{30, 0};  // a bound, should it be served
  ::setsockopt(fourth.fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
  EXPECT_TRUE(!opened || fourth.ClosedByServer());
  EXPECT_TRUE(Eventually(
      [&] { return Metric("palisade_syslog_per_address_refused_connections_total") == 2; }));
  ::close(third);
  ::close(tcp);
}

// One client holds an IPv6 /64 and can take a new address per connection: the cap and the rate
// limit count the /64 (before, each address had a cap and a bucket of its own, so a client with
// a /64 could take every slot). The connections come from 127.0.0.1 and count as the address
// the test sets.
TEST_F(ReceiverTest, ConnectionsFromOneIpv6SlashSixtyFourShareTheCapAndTheBucket) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("v6");
  config.set_tcp_listen("127.0.0.1:0");
  config.set_max_connections(8);
  config.set_max_connections_per_address(2);
  config.set_max_lines_per_second(100);
  fake_peers_ = true;
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  SetPeer("2001:db8:0:1::a");
  const int first = Connect(r->tcp_port());
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 1; }));
  SetPeer("2001:db8:0:1::b");
  const int second = Connect(r->tcp_port());
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 2; }));
  EXPECT_EQ(r->tcp_rate_buckets(), 1u);  // one budget for the /64
  SetPeer("2001:db8:0:1::c");
  const int third = Connect(r->tcp_port());
  EXPECT_TRUE(ClosedByServer(third));
  ::close(third);
  EXPECT_TRUE(Eventually(
      [&] { return Metric("palisade_syslog_per_address_refused_connections_total") == 1; }));
  // Another /64 is another sender.
  SetPeer("2001:db8:0:2::a");
  const int other = Connect(r->tcp_port());
  ASSERT_EQ(::send(other, "<13>a: other\n", 13, 0), 13);
  EXPECT_THAT(WaitFor(1), ElementsAre("3164 v6 <13>a: other"));
  EXPECT_EQ(r->tcp_rate_buckets(), 2u);
  // As the /64's connections end its count goes down: it is served again.
  ::close(first);
  ASSERT_TRUE(Eventually([&] { return Gauge("palisade_syslog_connections") == 2; }));
  SetPeer("2001:db8:0:1::d");
  const int again = Connect(r->tcp_port());
  ASSERT_EQ(::send(again, "<13>a: again\n", 13, 0), 13);
  EXPECT_EQ(WaitFor(2).size(), 2u);
  EXPECT_EQ(Metric("palisade_syslog_per_address_refused_connections_total"), 1);
  ::close(again);
  ::close(second);
  ::close(other);
}

// per_address_ipv6_prefix: 48 makes a /48 one sender; 128 each address alone (a LAN of IPv6
// hosts in one /64 that must not share).
TEST_F(ReceiverTest, TheIpv6PrefixASenderCountsByIsConfigurable) {
  fake_peers_ = true;
  size_t lines = 0;
  for (const uint32_t prefix : {48u, 128u}) {
    palisade::v1::SyslogInput config;
    config.set_name("prefix");
    config.set_tcp_listen("127.0.0.1:0");
    config.set_max_connections_per_address(1);
    config.set_per_address_ipv6_prefix(prefix);
    auto r = Start(config);
    ASSERT_NE(r, nullptr);
    SetPeer("2001:db8:0:1::a");
    const int first = Connect(r->tcp_port());
    ASSERT_EQ(::send(first, "<13>a: first\n", 13, 0), 13);
    ASSERT_EQ(WaitFor(++lines).size(), lines) << prefix;  // served: it holds the slot
    SetPeer(prefix == 48 ? "2001:db8:0:2::a" : "2001:db8:0:1::b");
    const int second = Connect(r->tcp_port());
    if (prefix == 48) {
      EXPECT_TRUE(ClosedByServer(second));
    } else {
      ASSERT_EQ(::send(second, "<13>a: second\n", 14, 0), 14);
      EXPECT_EQ(WaitFor(++lines).size(), lines);
    }
    ::close(first);
    ::close(second);
  }
  EXPECT_EQ(Metric("palisade_syslog_per_address_refused_connections_total"), 1);
}

TEST_F(ReceiverTest, AnIpv6PrefixOutside48To128IsRefused) {
  palisade::v1::SyslogInput config;
  config.set_name("prefix");
  config.set_tcp_listen("127.0.0.1:0");
  auto start = [&] {
    return SyslogReceiver::Start(
        config, {}, [](const palisade::v1::LogBatch&) { return absl::OkStatus(); }, registry_);
  };
  for (const uint32_t prefix : {47u, 129u}) {
    config.set_per_address_ipv6_prefix(prefix);
    absl::StatusOr<std::unique_ptr<SyslogReceiver>> r = start();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << prefix;
    EXPECT_THAT(r.status().message(),
                HasSubstr(absl::StrCat("inputs.syslog \"prefix\": per_address_ipv6_prefix must "
                                       "be 48..128, not ",
                                       prefix)));
  }
  for (const uint32_t prefix : {0u, 48u, 128u}) {
    config.set_per_address_ipv6_prefix(prefix);
    EXPECT_TRUE(start().ok()) << prefix;
  }
}

// UDP too: the datagrams of one /64's addresses share a bucket.
TEST_F(ReceiverTest, UdpSendersOfOneIpv6SlashSixtyFourShareABucket) {
  SimulatedClock clock;
  palisade::v1::SyslogInput config;
  config.set_name("udp6");
  config.set_udp_listen("127.0.0.1:0");
  config.set_max_lines_per_second(1);
  config.set_max_burst_lines(1);
  fake_peers_ = true;
  auto r = Start(config, &clock);
  ASSERT_NE(r, nullptr);
  double sent = 0;
  // Each datagram's outcome (taken or dropped) before the next peer is set: the frame count
  // goes up before the receiver reads the datagram's peer, so waiting for it raced SetPeer.
  auto send_as = [&](const char* peer) {
    SetPeer(peer);
    SendUdpFrom("127.0.0.1", r->udp_port(), 1);
    ++sent;
    ASSERT_TRUE(Eventually([&] {
      return Metric("palisade_syslog_rate_limited_drops_total") + static_cast<double>(Got()) >=
             sent;
    }));
  };
  send_as("2001:db8:0:1::a");
  send_as("2001:db8:0:1::b");  // the /64's bucket is empty: dropped
  EXPECT_EQ(Metric("palisade_syslog_rate_limited_drops_total"), 1);
  send_as("2001:db8:0:2::a");  // another /64, its own bucket
  EXPECT_EQ(Metric("palisade_syslog_rate_limited_drops_total"), 1);
  EXPECT_EQ(WaitFor(2).size(), 2u);
}

}  // namespace
}  // namespace palisade
