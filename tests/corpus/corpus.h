// A deterministic, seedable generator of realistic log corpora with known ground truth, for
// benchmarks, the demo's sample logs, and equality tests (replay vs. gRPC).
//
//  - sshd: classic syslog auth.log: accepted logins, session noise from other programs, users
//    mistyping a password once, and attackers (IPv4 and IPv6) guessing passwords, enumerating
//    users, and dropping connections before authentication.
//  - nginx: combined access log: normal browsing, exploit scanners, 401 bursts (credential
//    stuffing) and 404 floods (content discovery).
// Each attacker sends enough lines, close enough together, to cross its rule's threshold, so
// the attacker set is the set the shipped packs should flag.
// Thread-safety: pure functions.
#ifndef PALISADE_TESTS_CORPUS_CORPUS_H_
#define PALISADE_TESTS_CORPUS_CORPUS_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace palisade {

struct CorpusOptions {
  uint64_t lines = 100'000;
  uint64_t seed = 1;
  absl::Time start = absl::FromUnixSeconds(1'772'539'200);  // 2026-03-03 12:00:00 UTC
  // Time between consecutive lines.
  absl::Duration step = absl::Milliseconds(10);
  // Share of lines that come from attackers, in percent.
  int attack_percent = 30;
};

struct Corpus {
  std::vector<std::string> lines;
  // Canonical addresses of every attacker that crossed a threshold.
  std::set<std::string> attackers;
};

Corpus GenerateSshd(const CorpusOptions& options);
Corpus GenerateNginx(const CorpusOptions& options);

// `lines` with a hostile line before every 997th one (from the 500th): in turn a line holding a
// NUL, one with bytes that are not UTF-8, one past a 16 KiB line cap (20,000 bytes more), one
// that parses as no log line.
std::vector<std::string> WithHostileLines(std::vector<std::string> lines);

}  // namespace palisade

#endif  // PALISADE_TESTS_CORPUS_CORPUS_H_
