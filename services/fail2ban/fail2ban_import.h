// Converts fail2ban filters (filter.d/*.conf) into Palisade rule packs (palisade.v1.RulePack),
// for `palisadectl rules import-fail2ban` (issue 13 §2).
//
// A filter is read as fail2ban reads it: an INI file whose [INCLUDES] before/after files are
// resolved relative to it (a missing `.local` is skipped, as fail2ban does; a missing `.conf` is
// an error naming the including file and line), [DEFAULT], [Definition] and [Init] sections,
// `%(name)s` / `%(section/name)s` interpolation and fail2ban's `<name>` option tags (nested, e.g.
// `<lt_<logtype>/__prefix_line>`), values continued on indented lines. Each `failregex` /
// `ignoreregex` line is converted to RE2 on its own:
//   - `prefregex` is folded in: the failregex takes the place of its `<F-CONTENT>` part;
//   - `__prefix_line` (common.conf: "host daemon[pid]: ") becomes nothing, since the syslog
//     parser (services/formats/line_parser.h) already strips it and rules match the message;
//     such a filter applies to LOG_FORMAT_SYSLOG/SYSLOG5424 and to the program `_daemon` names;
//     other filters apply to LOG_FORMAT_RAW, with an optional leading time stamp (fail2ban cuts
//     the date out of the line before matching, our raw format keeps it);
//   - `<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>` become the named group `ip` (one per regex);
//     `<F-USER>...</F-USER>` (and any `<F-NAME>`) a named group `name` (lower case);
//     `<F-MLFFORGET>` is dropped (it only ends a session);
//   - refused, with the reason: session tags (`<F-NOFAIL>`, `<F-MLFID>`, `<F-MLFGAINED>`,
//     `<F-ID>`: unsupported until session correlation lands, issue 13 §1), host names (`<DNS>`),
//     Python-only syntax (look-ahead/behind, back-references, `(?P=name)`, conditionals, atomic
//     groups, possessive quantifiers), a regex RE2 does not compile, a failregex without an
//     address, and one whose address a client could choose (services/engine/rule_set.h,
//     AnalyzeKeyPlacement: address keys cannot opt out, so the regex is refused, not waved
//     through);
//   - rewritten, when RE2 has an equivalent: `\Z` → `\z`, `{,n}` → `{0,n}`.
// The rest of the filter still converts. The pack has one rule per filter (its patterns are the
// converted failregexes, fail2ban counts them together), thresholds from the defaults below.
//
// Thread-safety: the functions are pure apart from reading files; call them from any thread.
#ifndef PALISADE_SERVICES_FAIL2BAN_FAIL2BAN_IMPORT_H_
#define PALISADE_SERVICES_FAIL2BAN_FAIL2BAN_IMPORT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "palisade/v1/rules.pb.h"

namespace palisade {

struct Fail2banImportOptions {
  // Filter parameters, as `filter = sshd[mode=aggressive]` sets them; they override [Init],
  // [Definition] and [DEFAULT].
  std::map<std::string, std::string> params;
  // fail2ban's jail defaults (jail.conf [DEFAULT]): maxretry 5, findtime 10m, bantime 10m.
  uint32_t maxretry = 5;
  absl::Duration findtime = absl::Minutes(10);
  absl::Duration bantime = absl::Minutes(10);
};

enum class RegexOutcome { kConverted, kRewritten, kRefused };

// What became of one failregex / ignoreregex line.
struct RegexReport {
  std::string kind;  // "failregex" or "ignoreregex"
  std::string file;  // where the line was written (an included file, for interpolated lists)
  int line = 0;
  std::string original;   // after interpolation, before conversion
  std::string converted;  // the RE2 pattern (empty when refused)
  RegexOutcome outcome = RegexOutcome::kConverted;
  std::string reason;  // refused: why; rewritten: what was rewritten
};

struct Fail2banImport {
  std::string filter;  // the file's base name without ".conf", e.g. "sshd"
  palisade::v1::RulePack pack;
  std::vector<RegexReport> regexes;
  // Read and reported; not used beyond the notes.
  std::string prefregex;
  std::string datepattern;
  int maxlines = 1;
  std::vector<std::string> notes;  // e.g. "maxlines 10: multi-line matching is not supported"

  int count(RegexOutcome outcome) const;
};

// Reads and converts the filter at `path`. kNotFound: the file (or a .conf it includes) does not
// exist; kInvalidArgument: a syntax error ("file:line: reason") or an interpolation loop;
// kFailedPrecondition: no failregex converted (the pack would have no patterns).
absl::StatusOr<Fail2banImport> ImportFail2banFilter(const std::string& path,
                                                    const Fail2banImportOptions& options = {});

// The pack as textproto, with a header saying where it came from.
std::string Fail2banPackText(const Fail2banImport& imported);
// The per-regex report: counts per outcome, then each regex with its file, line and reason.
std::string Fail2banReportText(const Fail2banImport& imported);

}  // namespace palisade

#endif  // PALISADE_SERVICES_FAIL2BAN_FAIL2BAN_IMPORT_H_
