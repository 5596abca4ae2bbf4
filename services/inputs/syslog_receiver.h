// A syslog receiver (issue 14 §1): RFC 5424 and RFC 3164 messages over UDP, TCP (RFC 6587:
// octet counting, "LEN SP <PRI>...", and newline framing, a frame ending at LF, or at NUL too on
// an input configured so (nul_ends_frames: the config decides, never the bytes, which a client
// shapes); told apart per frame by how it starts, except that on a connection whose first
// frame, or first skipped line, ended at a newline a line starting with digits is never a
// count, while one whose first frame came by its count still reads a line starting '<' as a
// newline-framed frame. The trade-off: a line of junk before an octet-counting sender's first
// count (a PROXY protocol header, a banner) makes its connection newline-framed, and each of
// its counted frames is then skipped as malformed; the alternative, counts trusted after a
// newline-framed line, would let a client's "\n100 <13>" swallow other programs' lines)
// and TLS (RFC 5425: the same frames inside OpenSSL, optionally with client certificates),
// handed to a batch sink (the daemon's Pipeline::ProcessBatch) in batches per format: a frame
// whose header is `<PRI>1 ` is RFC 5424, any other RFC 3164.
//
// Batches carry the input's source, except the frames of a sender in a zone of its own
// (sender_time_zones: the entry naming the frame's HOSTNAME, else the most specific peer_cidr
// covering the sender's address): theirs is ZonedSource(source, zone) (services/pipeline), a
// stream the pipeline reads in that zone, so a central receiver for servers in several zones
// dates each server's zoneless times in its own zone. Each batch names its sender too
// (LogBatch.stream: PeerKey's address, as the rate limit counts it): the pipeline ages a
// sender's windows by that sender's own times, so a host whose times read hours behind the
// others' (a zone no entry names, a wrong clock) keeps its windows across the sweeps. A TCP/TLS
// sender always; a UDP one while at most max_udp_senders have one (one not heard from for
// host_stream_idle gives its place up, as a host does, below), past that the source's stream.
// Within a sender, each HOSTNAME (as LineParser reads it, case aside) is a stream of its own
// ("SENDER HOST"): a relay (rsyslog forwarding many hosts over one connection) is one sender, and
// its hosts' windows age by each one's own times, not each other's. The HOSTNAME is the client's: a
// sender's hosts with a stream are at most max_host_streams_per_peer, all senders' max_host_streams
// (UDP senders and TCP/TLS ones each, apart: forged datagrams take no TCP relay's places); past
// that a frame goes in its sender's stream (counted). A host gives its place up only once quiet for
// host_stream_idle, or the pipeline's current stream_idle_bound when longer, when the pipeline
// has freed its stream too (a place released earlier would let renamed hosts hold more pipeline
// streams than the places), and a host folded once stays folded until as quiet, so it never
// changes streams mid-session (the engine keys pid sessions by stream).
// So a client naming a new host per line holds max_host_streams_per_peer places for
// host_stream_idle, and peers of its transport may find the max_host_streams left taken: their new
// hosts then go in their own sender's stream, as before hosts had theirs.
//
// Bounded, whatever a sender does: at most `max_connections` TCP/TLS connections, and at most
// `max_connections_per_address` of them from one address (an IPv4-mapped IPv6 address counts as
// its IPv4 one, another IPv6 address by its `per_address_ipv6_prefix`, /64 by default: one host
// holds a whole /64 and can take a new address per connection; PeerLimitKey in
// services/common/ip.h), so a host that keeps each of its connections just within
// `idle_timeout` (a byte drip) holds only its own share and other senders still get in; a
// connection past either cap is closed at once and counted by the cap it hit, except that with
// every slot taken a TLS connection still in its handshake after handshake_grace (1 s) gives
// its slot to the newcomer (cut off, counted as a failed handshake), so silent handshakes cannot
// keep certified senders out for tls_handshake_timeout. Each is closed
// (and counted) once it has sent nothing for `idle_timeout`; a frame longer than
// `max_frame_bytes` is skipped and counted (a newline-framed one up to its newline, an
// octet-counted one as a malformed frame: its length is not trusted) and the connection goes
// on; a batch is flushed at `batch_lines` or after `flush_interval`, and all are once twice
// `batch_lines` frames wait, so memory is that many frames whatever the senders (a batch per
// format, source and sender).
// A malformed frame (no `<PRI>`, a bad or over-long length, a newline-framed line that starts
// "DIGITS SP" with no '<' after, or any line starting with digits on a newline-framed
// connection) is counted and skipped, never fatal: the stream picks up at the next newline (or
// NUL, where NUL ends frames) or, unless the connection is newline-framed, octet-counted frame
// start, whichever comes first. An accept
// that fails for want of descriptors is counted, and the listener waits 100 ms (no spinning).
// A TLS handshake that fails (no client certificate when one is required, plain text, a
// timeout) is counted and logged with the peer's address and OpenSSL's reason, and only that
// connection ends.
//
// Rate limits (max_lines_per_second, max_burst_lines), a token bucket per sender address (an
// IPv6 one by its prefix, as above) on the injected clock. Over TCP/TLS the address's
// connections share its bucket, which outlives them until it is full again, so reconnecting
// refills nothing; a connection over the budget is not read until the bucket refills, so the
// sender is slowed by TCP backpressure and loses nothing (rsyslog queues). Buckets of addresses
// with no connection open are kept for at most max_tcp_senders addresses; past that, full ones
// are forgotten, then any such one. UDP has no backpressure, so a sender address over its budget
// has its datagrams dropped and counted (buckets for at most max_udp_senders addresses; past
// that, full buckets are forgotten, then new senders share one).
// Metrics per receiver: frames by transport, malformed frames, open, refused (over
// max_connections, and over max_connections_per_address) and idle-closed connections, failed
// accepts, TLS handshake failures, lines held back (TCP/TLS) and dropped (UDP) by the rate
// limit, UDP datagrams the kernel dropped (the socket's receive buffer full while the UDP thread
// waited on the sink; udp_receive_buffer_bytes), bytes a connection's socket held at Stop past
// stop_drain_bytes (what it held up to that is delivered), UDP datagrams sent on in their
// source's stream past max_udp_senders, frames sent on in their sender's stream past the host
// stream bounds.
//
// Thread-safety: Start and Stop from one thread; the receiver runs its own threads (one for UDP,
// one accepting per TCP/TLS listener, one per connection, one flushing).
#ifndef PALISADE_SERVICES_INPUTS_SYSLOG_RECEIVER_H_
#define PALISADE_SERVICES_INPUTS_SYSLOG_RECEIVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "palisade/v1/config.pb.h"
#include "palisade/v1/palisade.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/common/clock.h"
#include "services/common/ip.h"
#include "services/inputs/file_inputs.h"

typedef struct ssl_ctx_st SSL_CTX;
struct sockaddr_storage;

namespace palisade {

struct SyslogReceiverOptions {
  uint32_t batch_lines = 1000;
  absl::Duration flush_interval = absl::Milliseconds(50);
  std::function<void(const std::string&)> log;
  // Reads time for the rate limits and the TLS handshake deadline. Null: the real clock.
  Clock* clock = nullptr;
  // A TLS sender that has not finished its handshake by then is cut off (it held a connection).
  absl::Duration tls_handshake_timeout = absl::Seconds(10);
  // With every connection slot taken, a TLS connection still in its handshake this long after
  // its accept (on the injected clock) gives its slot to a newcomer: a sender with a
  // certificate takes milliseconds, so silent handshakes cannot keep such senders out for
  // tls_handshake_timeout; a newcomer finding none that old is refused.
  absl::Duration handshake_grace = absl::Seconds(1);
  // A TCP/TLS connection that sends nothing for this long (on `clock`, from the accept or the
  // TLS handshake) is closed and counted, so silent senders and peers gone without a FIN do not
  // hold max_connections for ever. A sender held back by the rate limit is not idle. Must be
  // positive; absl::InfiniteDuration(): never. The config's idle_timeout, when set, takes its
  // place. rsyslog reconnects when it next sends.
  absl::Duration idle_timeout = absl::Minutes(5);
  // The UDP socket's receive buffer: what the kernel queues while the UDP thread waits on a busy
  // sink (the kernel's default, 208 KiB, held 256 small datagrams; 4 MiB, which Linux doubles
  // for its bookkeeping, roughly 40 times that). Past it the kernel drops datagrams, counted in
  // palisade_syslog_udp_kernel_drops_total. Set with SO_RCVBUFFORCE when the daemon may
  // (CAP_NET_ADMIN), else SO_RCVBUF, which net.core.rmem_max caps (logged when it does). 0: the
  // kernel's default.
  int udp_receive_buffer_bytes = 4 << 20;
  // UDP senders with a rate-limit bucket of their own at most (~100 bytes each), and with a
  // stream of their own (LogBatch.stream; a place kept for host_stream_idle after the sender's
  // last datagram, as the pipeline keeps the stream).
  size_t max_udp_senders = 10000;
  // TCP/TLS sender addresses whose rate-limit bucket is kept, once their last connection
  // closed, until it is full again (~200 bytes each); past that one is forgotten. Those with a
  // connection open (max_connections at most) are not counted: theirs is always kept.
  size_t max_tcp_senders = 10000;
  // HOSTNAMEs of one peer (as PeerKey gives it: a relay forwarding many hosts is one) with a
  // stream of their own (LogBatch.stream "PEER HOST"), at most; a peer's other hosts go in its
  // stream. The HOSTNAME is the client's to choose: this bounds what one peer takes. The
  // config's max_host_streams_per_peer, when set, takes its place.
  size_t max_host_streams_per_peer = 1024;
  // Of all peers of one transport (UDP; TCP and TLS), at most (~200 bytes each, whatever the
  // HOSTNAME's length): past it a new host goes in its peer's stream, so peers with many
  // addresses (UDP's forged ones) cannot grow memory either. Each is a pipeline stream counted
  // against PipelineOptions::max_sender_streams (32768, shared with the peers' own streams and
  // every other receiver's): both transports' together, well below it, leave the peers room.
  size_t max_host_streams = 8192;
  // A host not heard from (nor folded) for this long gives its place up. At least as long as
  // the pipeline keeps the stream (ExpireWindows: a day, plus kFutureHorizon, plus the longest
  // rule window or session ttl): released sooner, a new host's stream would be one more the
  // pipeline holds. The default covers windows and session ttls up to a day (the longest a
  // session ttl may be; the shipped packs' longest window); longer windows: stream_idle_bound.
  absl::Duration host_stream_idle = absl::Hours(72);
  // The pipeline's Pipeline::stream_idle_bound, read under the batch lock when a place may be
  // given up or a folded sender's new host placed (so it must not block; the pipeline's takes
  // no lock): a place is kept for the longer of it and host_stream_idle. Read once at start,
  // a reload bringing a longer rule window (a longer bound) left the places on the old one, so
  // hosts renamed past it had the pipeline hold more streams than the places. Null:
  // host_stream_idle alone.
  std::function<absl::Duration()> stream_idle_bound;
  // The pipeline's PipelineOptions::max_sender_streams, which every stream this receiver names
  // counts against (its UDP senders', both transports' hosts', its TCP/TLS peers'; shared with
  // other receivers). Start logs when this receiver's bounds alone can pass it: new senders'
  // lines would then go in their source's stream. Nothing is lowered: which streams to give up
  // is the operator's choice.
  size_t pipeline_sender_streams = 32768;
  // At Stop, what a TCP/TLS connection's socket already holds (the kernel acknowledged it, so
  // the sender, rsyslog say, counts it sent; a connection the rate limit held back has up to
  // its receive buffer there) is read and delivered without the rate limit, up to this many
  // bytes a connection; what is left is counted (palisade_syslog_unread_bytes_at_stop_total)
  // as the close resets it away.
  size_t stop_drain_bytes = 4 << 20;
  // For tests: the address (text) a TCP/TLS connection or UDP datagram counts as, given the
  // one it came from (a test on lo cannot send from two addresses of one IPv6 /64). Null: that
  // one.
  std::function<std::string(const std::string&)> peer_address_for_tests;
};

// A token bucket: `rate` tokens a second up to `burst`, starting full. Not thread-safe (a UDP
// sender's is used by the UDP thread; a TCP/TLS address's, shared by its connections, is held
// under a mutex).
class TokenBucket {
 public:
  TokenBucket(double rate, double burst, absl::Time now)
      : rate_(rate), burst_(burst), tokens_(burst), last_(now) {}
  // Takes a token if there is one.
  bool TryTake(absl::Time now);
  // Whether the bucket is full at `now` (a sender idle that long is as good as new).
  bool Full(absl::Time now);
  // How long until the next token.
  absl::Duration UntilNext(absl::Time now);

 private:
  void Refill(absl::Time now);
  double rate_, burst_, tokens_;
  absl::Time last_;
};

class SyslogReceiver {
 public:
  // Binds the configured addresses ("127.0.0.1:5514", "[::1]:5514"; port 0: any) and starts.
  // kInvalidArgument for a bad config, kFailedPrecondition naming the input and the file when a
  // TLS certificate, key or CA file cannot be read or does not load, kUnavailable naming the
  // input and the address when a socket cannot be bound (a port in use).
  static absl::StatusOr<std::unique_ptr<SyslogReceiver>> Start(
      const palisade::v1::SyslogInput& config, SyslogReceiverOptions options, BatchSink sink,
      prometheus::Registry& registry);
  ~SyslogReceiver();

  // The bound ports (0: that transport is off).
  int udp_port() const { return udp_port_; }
  int tcp_port() const { return tcp_port_; }
  int tls_port() const { return tls_port_; }
  // Stops every thread and flushes what is pending.
  void Stop();
  // UDP datagrams the kernel dropped on this receiver's socket (its receive buffer was full),
  // as of the last datagram read or the last time the socket was idle; also exported as
  // palisade_syslog_udp_kernel_drops_total.
  uint64_t udp_kernel_drops() const { return udp_kernel_drops_.load(); }
  // Connection threads held (running, or ended and not yet joined). For tests.
  size_t connection_threads() {
    absl::MutexLock lock(&conn_mu_);
    return conn_threads_.size();
  }
  // TCP/TLS sender addresses with a rate-limit bucket kept. For tests.
  size_t tcp_rate_buckets() {
    absl::MutexLock lock(&slots_mu_);
    return tcp_buckets_.size();
  }

  // Hosts with a stream of their own (max_host_streams at most per transport). For tests.
  size_t host_streams() {
    absl::MutexLock lock(&batch_mu_);
    return udp_hosts_.count + tcp_hosts_.count;
  }

  // What a connection's deframing carries from one read to the next: the rest of an oversized
  // newline-framed frame, or bytes that start no frame being skipped to the next one.
  struct DeframeState {
    bool dropping_line = false;
    bool resyncing = false;
    bool after_digit = false;  // resyncing: the last byte skipped was a digit
    // How the connection's first frame came: by its count ("LEN SP <": the sender counts
    // octets, as rsyslog's octet-counted framing, syslog-ng's syslog() and RFC 5425 do) or by
    // "<PRI>" up to a newline; a first line that starts no frame and ends at LF (tail -F | nc,
    // a banner) makes it newline-framed too. Lines a client shapes later (a raw LF passed on)
    // cannot change it, and on a newline-framed connection a line starting with digits is never
    // read as a count.
    enum class Framing { kUnknown, kOctet, kNewline };
    Framing framing = Framing::kUnknown;
    // SyslogInput.nul_ends_frames, set when the connection opens: NUL ends its newline-framed
    // frames, as LF does (Python's SysLogHandler over TCP, rsyslog's AddtlFrameDelimiter).
    // Otherwise a NUL is text, as a sender that strips CR and LF but passes NUL on (log4j2's
    // newLineEscape) would let a client's "x\0<38>..." forge a frame. Never set by the bytes.
    bool nul_ends_frames = false;
    uint64_t skip = 0;  // bytes of an over-long counted frame still to skip
  };
  // Cuts `stream` into frames (RFC 6587: "LEN SP MSG" when a frame starts "LEN SP <", else up to
  // a newline, or a NUL too where state->nul_ends_frames);
  // complete frames are appended to `frames`, an incomplete one stays in `stream`. A
  // newline-framed frame longer than max_frame_bytes is dropped up to its newline (or that NUL)
  // and counted in `*malformed`. Bytes that start no frame (no `<PRI>`, a length that is bad,
  // over max_frame_bytes or not followed by " <", as a newline-framed "1733530000 rows" is) are
  // counted once and skipped up to the next newline (or that NUL) or "LEN SP <", whichever
  // comes first, so an octet-counted stream (no newlines) goes on too. On a connection whose
  // first frame, or first skipped line, ended at a newline no "LEN SP <" ends a skip and no
  // line is a count, within the cap or over it: its sender passes a message's raw LF on, so
  // "\n100 <13>..." in a client's text would take the next 100 bytes (other programs' lines)
  // as one frame. Such a line is malformed, and skipped up to its newline only. A length over
  // max_frame_bytes is skipped by (up to 16 times max_frame_bytes) only on a connection whose
  // first frame came by its count: that body is a client's text, which searched for frame
  // starts could forge one ("... 88 <38>... Failed password for root from VICTIM ...").
  // Exposed for tests.
  static void Deframe(std::string* stream, size_t max_frame_bytes, DeframeState* state,
                      std::vector<std::string>* frames, uint64_t* malformed);

  // The HOSTNAME of a frame, RFC 5424 (`v5424`) or RFC 3164, exactly as LineParser::Parse gives
  // it (ParsedLine::host, case kept) in a UTC parser with a finite reference (the receiver's
  // clock): empty for none (5424's "-", a 3164 tag where the host would be) and for a frame
  // that Parse refuses. It reads only the header up to the HOSTNAME, and checks the timestamp
  // as Parse does (its shape, its fields' ranges, that its date exists) without converting
  // it: the pipeline parses the line whole anyway, and this runs on every frame of a relay.
  // Exposed for tests and the benchmark.
  static absl::string_view HostnameOf(absl::string_view frame, bool v5424);

 private:
  SyslogReceiver(palisade::v1::SyslogInput config, SyslogReceiverOptions options, BatchSink sink)
      : config_(std::move(config)), options_(std::move(options)), sink_(std::move(sink)) {}
  // Queues a frame for its source's batch of its format (the source SourceOf gives it) from
  // `sender` (PeerKey; empty: none, the source's stream), in the stream of its HOSTNAME there
  // while the host has a place (HostPlace), else in the sender's.
  // `udp`: the frame came by UDP (its places are UDP's, apart from TCP/TLS peers').
  void Add(std::string frame, const std::string& peer_source, const std::string& sender, bool udp);
  void Flush();
  // The source of a sender at `from`: the most specific sender_time_zones peer_cidr entry's
  // (ZonedSource), else config_.source(). A reference to a string the receiver keeps.
  const std::string& PeerSource(const sockaddr_storage& from) const;
  // The HOSTNAME of `frame` as LineParser reads it (HostnameOf), in lower case; empty: none.
  static std::string HostOf(absl::string_view frame, bool v5424);
  // How long a host or UDP sender quiet that long keeps its place: host_stream_idle, or the
  // pipeline's stream_idle_bound now when longer.
  absl::Duration HostStreamIdle() const;
  // The source of a frame naming `host` (HostOf) from a sender whose PeerSource is
  // `peer_source`: the entry naming `host`, else `peer_source`.
  const std::string& SourceOf(const std::string& host, const std::string& peer_source) const;
  struct HostTable;
  // Whether `host` (HostOf, non-empty) of `sender` (non-empty) has a stream of its own at `now`
  // in `table` (its transport's): one it has, or a place free within max_host_streams_per_peer
  // and max_host_streams (hosts quiet for host_stream_idle give theirs up first) while its
  // sender has folded no host for host_stream_idle; else counted as folded.
  bool HostPlace(HostTable& table, const std::string& sender, const std::string& host,
                 absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(batch_mu_);
  void UdpLoop();
  // Sets the UDP socket's receive buffer (udp_receive_buffer_bytes) and asks the kernel to
  // report its drops (SO_RXQ_OVFL).
  void SetUpUdpSocket();
  // The socket's drop count now (SO_MEMINFO); what was last seen if the kernel does not say.
  uint32_t UdpDropsNow(int fd);
  // Counts the drops in the kernel's count `seen` not counted yet.
  void CountUdpKernelDrops(uint32_t seen);
  void AcceptLoop(int listen_fd, bool tls);
  // A TCP/TLS sender address's rate-limit bucket, shared by its connections.
  struct SharedBucket {
    SharedBucket(double rate, double burst, absl::Time now) : bucket(rate, burst, now) {}
    absl::Mutex mu;
    TokenBucket bucket ABSL_GUARDED_BY(mu);
  };
  // Takes a connection slot for a sender at `peer` (its address, as PeerKey gives it), or
  // says which cap refuses it. Admitted with a rate limit: `*bucket` is the address's.
  // A TLS connection (`handshake_fd` >= 0) is also kept as handshaking, under `*handshake`,
  // until Established; when the slots are full, the oldest such connection past
  // handshake_grace gives its slot to the newcomer.
  enum class Admission { kAdmitted, kFull, kAddressFull };
  Admission Admit(const std::string& peer, std::shared_ptr<SharedBucket>* bucket,
                  int handshake_fd = -1, uint64_t* handshake = nullptr);
  // A TLS connection's handshake is over (`ok`: done; else failed). False when it no longer
  // goes on: it failed, or a newcomer cut it off (`*cut_off`; its slot is the newcomer's now).
  // Called before the socket is closed, so Admit never shuts down a descriptor that may have
  // been reused.
  bool Established(uint64_t handshake, bool ok, bool* cut_off);
  // Gives back what Admit took for `peer`: its place in the address's cap, and its connection
  // slot unless that went to another (`holds_slot` false).
  void Release(const std::string& peer, bool holds_slot = true);
  // `accepted`: when the connection was accepted; its TLS handshake deadline and idle time run
  // from then, so a slow thread start does not extend them. `peer`: what it was admitted as;
  // `bucket`: its address's (null: no rate limit); `handshake`: its place in the TLS pool.
  // `peer_source`: its PeerSource.
  void Connection(int fd, bool tls, absl::Time accepted, const std::string& peer,
                  std::shared_ptr<SharedBucket> bucket, uint64_t handshake,
                  const std::string& peer_source);
  // What a sender at `from` counts as for the per-address cap and the rate limit: its address,
  // or its IPv6 range (per_address_ipv6_prefix).
  std::string PeerKey(const sockaddr_storage& from) const;
  // Whether a datagram from `sender` is within its budget (UDP rate limit).
  bool UdpAllowed(const std::string& sender);
  // The stream of a datagram from `sender` (PeerKey): `sender`, while at most max_udp_senders
  // have theirs; else empty (the source's).
  std::string UdpStream(const std::string& sender);

  palisade::v1::SyslogInput config_;
  SyslogReceiverOptions options_;
  BatchSink sink_;
  Clock* clock_ = nullptr;
  int udp_fd_ = -1, tcp_fd_ = -1, tls_fd_ = -1;
  int udp_port_ = 0, tcp_port_ = 0, tls_port_ = 0;
  SSL_CTX* tls_ctx_ = nullptr;
  // UDP buckets by sender address, used by the UDP thread only.
  absl::flat_hash_map<std::string, TokenBucket> udp_buckets_;
  std::unique_ptr<TokenBucket> udp_overflow_;  // shared by senders past max_udp_senders
  // UDP senders with a stream of their own (UdpStream), when each was last heard from; likewise
  // the UDP thread's only.
  absl::flat_hash_map<std::string, absl::Time> udp_streams_;
  absl::Time udp_streams_sweep_ = absl::InfinitePast();
  absl::Time udp_last_sweep_ = absl::InfinitePast();
  // The socket's drop count (sk_drops, 32 bits, as SO_RXQ_OVFL and SO_MEMINFO give it) last
  // seen, by the UDP thread (and Stop, once that has ended); the drops counted from it.
  uint32_t udp_drops_seen_ = 0;
  std::atomic<uint64_t> udp_kernel_drops_{0};
  std::atomic<bool> stopping_{false};
  // Open TCP/TLS connections, in all and by sender address as PeerKey gives it (an entry per
  // address with one open at least, handshakes included); both accept threads and every
  // connection use them.
  absl::Mutex slots_mu_;
  uint32_t connections_ ABSL_GUARDED_BY(slots_mu_) = 0;
  absl::flat_hash_map<std::string, uint32_t> per_address_ ABSL_GUARDED_BY(slots_mu_);
  // TLS connections still in their handshake, in the order they came (their socket and when):
  // with every slot taken, the oldest one past handshake_grace gives its slot to a newcomer, so
  // silent handshakes hold slots for a second, not tls_handshake_timeout.
  struct Handshaking {
    int fd;
    absl::Time since;
  };
  std::map<uint64_t, Handshaking> handshaking_ ABSL_GUARDED_BY(slots_mu_);
  uint64_t next_handshake_ ABSL_GUARDED_BY(slots_mu_) = 0;
  // Rate-limit buckets by sender address (PeerKey): every address in per_address_ has one, and
  // others until theirs is full again (max_tcp_senders of those at most).
  absl::flat_hash_map<std::string, std::shared_ptr<SharedBucket>> tcp_buckets_
      ABSL_GUARDED_BY(slots_mu_);
  absl::Time tcp_last_sweep_ ABSL_GUARDED_BY(slots_mu_) = absl::InfinitePast();
  std::vector<std::thread> threads_;
  // Connection threads; a finished one is joined when the next connection is accepted, so a
  // sender that connects per message (logger) does not pile up ended threads.
  struct ConnThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  absl::Mutex conn_mu_;
  std::vector<ConnThread> conn_threads_ ABSL_GUARDED_BY(conn_mu_);
  // sender_time_zones, set at Start: the source of a HOSTNAME's frames (the name in lower
  // case), and of a peer range's, most specific first, each range once (Start refuses one
  // range in two zones: stable_sort would keep the first unseen).
  absl::flat_hash_map<std::string, std::string> host_sources_;
  std::vector<std::pair<Cidr, std::string>> peer_sources_;
  // Frames waiting for the next flush, by source (config_.source(), or a sender zone's) and
  // sender (LogBatch.stream), and how many in all.
  struct Pending {
    palisade::v1::LogBatch rfc3164;
    palisade::v1::LogBatch rfc5424;
  };
  absl::Mutex batch_mu_;
  // By source, then sender, then host (LogBatch.stream: the sender's, "SENDER HOST" for a host
  // with a place): lookups that copy no string once the key is there (a joined key would be
  // built, and its strings copied, for every frame).
  using PendingBySender = std::map<std::string, std::map<std::string, Pending>>;
  std::map<std::string, PendingBySender> pending_ ABSL_GUARDED_BY(batch_mu_);
  size_t pending_frames_ ABSL_GUARDED_BY(batch_mu_) = 0;
  // The hosts with a stream of their own, by sender (PeerKey): a hash of the HOSTNAME (8 bytes,
  // whatever its length; two colliding names share a place) and when it was last heard from;
  // and when the sender last had a host folded (none gets a place until that is
  // host_stream_idle old). Senders with neither are dropped, and there are at most
  // max_host_streams senders, so memory is bounded whatever the senders.
  struct HostPlaces {
    absl::flat_hash_map<uint64_t, absl::Time> hosts;
    absl::Time swept = absl::InfinitePast();
    absl::Time folded = absl::InfinitePast();
  };
  // One per transport: UDP peers' (any source address may be forged) and TCP/TLS peers'.
  struct HostTable {
    absl::flat_hash_map<std::string, HostPlaces> peers;
    size_t count = 0;  // hosts with a place, of all peers
    absl::Time swept = absl::InfinitePast();
  };
  HostTable udp_hosts_ ABSL_GUARDED_BY(batch_mu_);
  HostTable tcp_hosts_ ABSL_GUARDED_BY(batch_mu_);
  absl::Mutex sink_mu_;  // batches reach the sink one at a time, in order
  prometheus::Counter* udp_frames_ = nullptr;
  prometheus::Counter* udp_streams_folded_ = nullptr;  // UdpStream gave the source's
  prometheus::Counter* host_streams_folded_ = nullptr;  // HostPlace found none
  prometheus::Counter* tcp_frames_ = nullptr;
  prometheus::Counter* tls_frames_ = nullptr;
  prometheus::Counter* tls_handshake_failures_ = nullptr;
  prometheus::Counter* throttled_lines_ = nullptr;
  prometheus::Counter* unread_at_stop_ = nullptr;
  prometheus::Counter* udp_rate_drops_ = nullptr;
  prometheus::Counter* udp_kernel_drops_total_ = nullptr;
  prometheus::Counter* malformed_ = nullptr;
  prometheus::Counter* refused_ = nullptr;
  prometheus::Counter* per_address_refused_ = nullptr;
  prometheus::Counter* accept_errors_ = nullptr;
  prometheus::Counter* idle_closed_ = nullptr;
  prometheus::Counter* sink_errors_ = nullptr;
  prometheus::Gauge* open_ = nullptr;
};

}  // namespace palisade

#endif  // PALISADE_SERVICES_INPUTS_SYSLOG_RECEIVER_H_
