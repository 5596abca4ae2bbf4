#include "tests/corpus/corpus.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace palisade {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  uint64_t Below(uint64_t n) { return gen_() % n; }
  bool Percent(int p) { return Below(100) < static_cast<uint64_t>(p); }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }

 private:
  std::mt19937_64 gen_;
};

std::string Ip(Rng& rng, bool v6) {
  if (v6) {
    return absl::StrFormat("2001:db8:%x:%x::%x", rng.Below(0xffff), rng.Below(0xffff),
                           1 + rng.Below(0xfffe));
  }
  // Public-looking documentation and test ranges plus a spread of others; never loopback or
  // RFC 1918, which the engine would ignore.
  uint64_t first = 11 + rng.Below(180);
  if (first == 100 || first == 127 || first == 172) ++first;  // CGNAT, loopback, RFC 1918
  return absl::StrFormat("%d.%d.%d.%d", first, rng.Below(256), rng.Below(256), 1 + rng.Below(254));
}

struct Attack {
  std::string ip;
  int kind;
  int remaining;
  int sent_a = 0;  // lines of the attack's main kind
  int sent_b = 0;  // sshd "invalid user" lines, counted by their own rule
};

const std::vector<std::string>& Users() {
  static const auto* v = new std::vector<std::string>{
      "root", "admin",   "test",  "oracle", "ubuntu",   "git",     "postgres", "user",
      "pi",   "ftpuser", "guest", "deploy", "www-data", "support", "minecraft"};
  return *v;
}

class Clock {
 public:
  explicit Clock(const CorpusOptions& o) : now_(o.start), step_(o.step) {}
  absl::Time Next() {
    absl::Time t = now_;
    now_ += step_;
    return t;
  }

 private:
  absl::Time now_;
  absl::Duration step_;
};

}  // namespace

Corpus GenerateSshd(const CorpusOptions& options) {
  Corpus corpus;
  corpus.lines.reserve(options.lines);
  Rng rng(options.seed);
  Clock clock(options);
  std::vector<Attack> active;
  std::vector<std::string> staff;
  for (int i = 0; i < 50; ++i) staff.push_back(Ip(rng, i % 5 == 0));
  // Occasional users who mistype a password once: many of them, so none comes near a threshold.
  std::vector<std::string> typists;
  for (int i = 0; i < 5000; ++i) typists.push_back(Ip(rng, i % 5 == 0));
  const std::vector<std::string> hosts = {"web-1", "web-2", "bastion"};

  for (uint64_t n = 0; n < options.lines; ++n) {
    const absl::Time t = clock.Next();
    const std::string prefix =
        absl::StrCat(absl::FormatTime("%b %e %H:%M:%S", t, absl::UTCTimeZone()), " ",
                     hosts[n % hosts.size()], " ");
    const uint64_t pid = 1000 + rng.Below(60000);
    if (rng.Percent(options.attack_percent)) {
      if (active.size() < 8 || rng.Percent(2)) {
        // A new attacker: 12..30 lines, enough for every sshd rule it trips.
        Attack a{Ip(rng, rng.Percent(10)), static_cast<int>(rng.Below(4)),
                 12 + static_cast<int>(rng.Below(19))};
        active.push_back(a);
      }
      size_t idx = rng.Below(active.size());
      Attack& a = active[idx];
      const std::string& user = rng.Pick(Users());
      std::string msg;
      // The attacker joins the ground truth on the line that crosses its rule's threshold
      // (sshd pack: failed password 5, invalid user 3, pre-auth 10, no identification 3).
      bool crossed = false;
      switch (a.kind) {
        case 0:
          msg = absl::StrCat("Failed password for root from ", a.ip, " port ",
                             1024 + rng.Below(64000), " ssh2");
          crossed = ++a.sent_a == 5;
          break;
        case 1:
          if (rng.Percent(50)) {
            msg = absl::StrCat("Invalid user ", user, " from ", a.ip, " port ",
                               1024 + rng.Below(64000));
            crossed = ++a.sent_b == 3;
          } else {
            msg = absl::StrCat("Failed password for invalid user ", user, " from ", a.ip, " port ",
                               1024 + rng.Below(64000), " ssh2");
            crossed = ++a.sent_a == 5;
          }
          break;
        case 2:
          msg = absl::StrCat("Connection closed by authenticating user ", user, " ", a.ip, " port ",
                             1024 + rng.Below(64000), " [preauth]");
          crossed = ++a.sent_a == 10;
          break;
        default:
          msg = absl::StrCat("Did not receive identification string from ", a.ip, " port ",
                             1024 + rng.Below(64000));
          crossed = ++a.sent_a == 3;
          break;
      }
      if (crossed) corpus.attackers.insert(a.ip);
      corpus.lines.push_back(absl::StrCat(prefix, "sshd[", pid, "]: ", msg));
      if (--a.remaining == 0) {
        active[idx] = active.back();
        active.pop_back();
      }
      continue;
    }
    // Benign traffic.
    const std::string& ip = rng.Pick(staff);
    if (rng.Percent(1)) {
      corpus.lines.push_back(absl::StrCat(prefix, "sshd[", pid, "]: Failed password for alice",
                                          " from ", rng.Pick(typists), " port ",
                                          1024 + rng.Below(64000), " ssh2"));
      continue;
    }
    switch (rng.Below(7)) {
      case 0:
        corpus.lines.push_back(absl::StrCat(prefix, "sshd[", pid, "]: Accepted publickey for ",
                                            "deploy from ", ip, " port ", 1024 + rng.Below(64000),
                                            " ssh2: ED25519 SHA256:4Kx9bq2"));
        break;
      case 1:
        corpus.lines.push_back(absl::StrCat(
            prefix, "sshd[", pid,
            "]: pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)"));
        break;
      case 2:
        corpus.lines.push_back(absl::StrCat(prefix, "sshd[", pid, "]: Received disconnect from ",
                                            ip, " port ", 1024 + rng.Below(64000),
                                            ":11: disconnected by user"));
        break;
      case 3:
        corpus.lines.push_back(absl::StrCat(
            prefix, "CRON[", pid, "]: pam_unix(cron:session): session closed for user root"));
        break;
      case 4:
        corpus.lines.push_back(absl::StrCat(prefix, "systemd-logind[412]: New session ",
                                            rng.Below(100000), " of user deploy."));
        break;
      case 5:
        corpus.lines.push_back(absl::StrCat(prefix, "sudo[", pid, "]:   deploy : TTY=pts/0 ; ",
                                            "PWD=/srv/app ; USER=root ; COMMAND=/usr/bin/systemctl"
                                            " restart app"));
        break;
      default:
        corpus.lines.push_back(absl::StrCat(prefix, "sshd[", pid, "]: Disconnected from user ",
                                            "deploy ", ip, " port ", 1024 + rng.Below(64000)));
        break;
    }
  }
  return corpus;
}

Corpus GenerateNginx(const CorpusOptions& options) {
  Corpus corpus;
  corpus.lines.reserve(options.lines);
  Rng rng(options.seed);
  Clock clock(options);
  std::vector<Attack> active;
  std::vector<std::string> visitors;
  for (int i = 0; i < 2000; ++i) visitors.push_back(Ip(rng, i % 7 == 0));
  const std::vector<std::string> pages = {"/",
                                          "/blog/",
                                          "/blog/2026/03/release-notes",
                                          "/pricing",
                                          "/docs/getting-started",
                                          "/about",
                                          "/static/app.3f9c.js",
                                          "/static/site.css",
                                          "/img/logo.svg",
                                          "/api/v1/status"};
  const std::vector<std::string> probes = {
      "/wp-login.php",         "/.env",
      "/.git/config",          "/xmlrpc.php",
      "/phpmyadmin/index.php", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
      "/cgi-bin/luci",         "/HNAP1/",
      "/actuator/env",         "/.aws/credentials"};
  const std::vector<std::string> agents = {
      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
      "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
      "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"};

  for (uint64_t n = 0; n < options.lines; ++n) {
    const absl::Time t = clock.Next();
    const std::string ts = absl::FormatTime("[%d/%b/%Y:%H:%M:%S +0000]", t, absl::UTCTimeZone());
    if (rng.Percent(options.attack_percent)) {
      if (active.size() < 6 || rng.Percent(1)) {
        int kind = static_cast<int>(rng.Below(3));
        // Enough requests to cross: scanners 3, 401 bursts 20, 404 floods 40.
        int count = kind == 0 ? 4 + static_cast<int>(rng.Below(8))
                              : (kind == 1 ? 22 + static_cast<int>(rng.Below(10))
                                           : 42 + static_cast<int>(rng.Below(10)));
        Attack a{Ip(rng, rng.Percent(10)), kind, count};
        active.push_back(a);
      }
      size_t idx = rng.Below(active.size());
      Attack& a = active[idx];
      // Thresholds of the nginx pack: scanner probes 3, 401 bursts 20, 404 floods 40.
      if (++a.sent_a == (a.kind == 0 ? 3 : (a.kind == 1 ? 20 : 40))) {
        corpus.attackers.insert(a.ip);
      }
      switch (a.kind) {
        case 0:
          corpus.lines.push_back(
              absl::StrCat(a.ip, " - - ", ts, " \"GET ", rng.Pick(probes),
                           " HTTP/1.1\" 404 153 \"-\" \"Mozilla/5.0 zgrab/0.x\""));
          break;
        case 1:
          corpus.lines.push_back(absl::StrCat(a.ip, " - - ", ts,
                                              " \"POST /login HTTP/1.1\" 401 64 \"-\" "
                                              "\"python-requests/2.31.0\""));
          break;
        default:
          corpus.lines.push_back(absl::StrCat(a.ip, " - - ", ts, " \"GET /", rng.Below(1000000),
                                              ".bak HTTP/1.1\" 404 153 \"-\" \"gobuster/3.6\""));
          break;
      }
      if (--a.remaining == 0) {
        active[idx] = active.back();
        active.pop_back();
      }
      continue;
    }
    const std::string& ip = rng.Pick(visitors);
    int status = rng.Percent(90) ? 200 : (rng.Percent(50) ? 304 : 404);
    corpus.lines.push_back(absl::StrCat(ip, " - - ", ts, " \"GET ", rng.Pick(pages), " HTTP/2.0\" ",
                                        status, " ", 200 + rng.Below(50000),
                                        " \"https://example.com/\" \"", rng.Pick(agents), "\""));
  }
  return corpus;
}

std::vector<std::string> WithHostileLines(std::vector<std::string> lines) {
  std::vector<std::string> out;
  out.reserve(lines.size() + lines.size() / 997 + 1);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i % 997 == 500) {
      switch ((i / 997) % 4) {
        case 0:
          out.push_back(lines[i] + std::string(1, '\0') + " tail");
          break;
        case 1:
          out.push_back(lines[i] + " \xff\xfe\xc0\x80");
          break;
        case 2:
          out.push_back(lines[i] + " " + std::string(20000, 'A'));
          break;
        default:
          out.push_back("not a log line at all");
      }
    }
    out.push_back(std::move(lines[i]));
  }
  return out;
}

}  // namespace palisade
