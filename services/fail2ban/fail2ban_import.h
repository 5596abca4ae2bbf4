// Converts fail2ban filters (filter.d/*.conf) into Palisade rule packs (palisade.v1.RulePack),
// for `palisadectl rules import-fail2ban` (issue 13 §2), and reads fail2ban jails (jail.conf,
// jail.local) for their thresholds.
//
// A filter is read as fail2ban reads it: an INI file whose [INCLUDES] before/after files are
// resolved relative to it (a missing `.local` is skipped, as fail2ban does; a missing `.conf` is
// an error naming the including file and line; an include of a file whose includes led there is
// skipped and noted, as fail2ban skips it: `before = a.conf` in a.conf reads a.conf twice, a ->
// b -> a reads b, then a), [DEFAULT], [Definition] and [Init] sections,
// `%(name)s` / `%(section/name)s` interpolation and fail2ban's `<name>` option tags (nested, e.g.
// `<lt_<logtype>/__prefix_line>`), values continued on indented lines, configparser's inline
// comments (a `;` after a blank) and `%%` (one '%'), and `%(known/name)s`, the value an earlier
// file (the .conf, for its .local) gave `name`. Each `failregex` /
// `ignoreregex` line is converted to RE2 on its own:
//   - `prefregex` is folded in: the failregex takes the place of its `<F-CONTENT>` part;
//   - the log format: `__prefix_line` (common.conf: "host daemon[pid]: ") becomes nothing, since
//     the syslog parser (services/formats/line_parser.h) already strips it and rules match the
//     message; such a filter applies to LOG_FORMAT_SYSLOG/SYSLOG5424 and to the program
//     `_daemon` names. Apache error-log filters (apache-common.conf's `_apache_error_client`)
//     apply to LOG_FORMAT_APACHE_ERROR, whose message starts at "[client ADDR:PORT]"; nginx
//     error-log filters (`^\s*\[error\] \d+#\d+: \*\d+ `) to LOG_FORMAT_NGINX_ERROR, whose
//     message starts after "*CID ". Other filters apply to LOG_FORMAT_RAW, with an optional
//     leading time stamp (fail2ban cuts the date out of the line before matching, our raw format
//     keeps it): the filter's `datepattern` translated to a fixed-width RE2 piece when it is
//     anchored at the line's start (`{^LN-BEG}%b-%d-%Exy ...`, `Epoch`, `TAI64N`, `{DATE}`; a
//     one-character back-reference such as `(?P=_sep)` becomes its class), or else the usual
//     shapes. A syslog filter without sessions also gets a `-raw` twin rule in
//     LOG_FORMAT_RAW: fail2ban's `__prefix_line` is optional throughout, so the same regexes read
//     the daemon's own log file (asterisk, freeswitch, ...) after the leading date and, when
//     `_daemon` is a name or an alternation of names, an optional tag (`nsd[7745]: `);
//     a prefregex whose content ends in `.*` / `.+` lets the failregex stop before the end;
//   - `<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>` become the named group `ip` (one per regex);
//     `<F-USER>...</F-USER>` (and any `<F-NAME>`) a named group `name` (lower case);
//   - sessions (fail2ban's multi-line `<F-MLFID>`): a filter whose prefregex wraps the syslog
//     prefix in `<F-MLFID>` ties lines by program and pid (Rule.session.by = "pid"). Its regexes
//     become up to four rules, by role: counting (`f2b-NAME`), `<F-NOFAIL>` or `<F-MLFGAINED>`
//     ones that only note the address (`-note`, session.note_only), and the same two whose
//     match ends the session (`<F-MLFFORGET>`: `-ends`, `-note-ends`, session.ends). A
//     failregex without an address in a session filter keys on the address an earlier line of
//     the session noted. A failregex whose `<F-NOFAIL>` part is one alternative (sshd's
//     `(?:<F-NOFAIL>publickey</F-NOFAIL>|\S+)`) counts what its other alternatives match: the
//     tagged form goes to `-note` and is the ignore pattern of the regex's counting rule, which
//     may hold the failregexes after it (fail2ban tries them in order, the first match wins)
//     but none before it: then it goes to a rule of its own, `-nofail-N` (its matches count
//     apart; looser: a later failregex of the other rule counts a line the tag notes).
//     Outside a session, a `<F-NOFAIL>` regex never counts and is dropped.
//     When the filter's own __prefix_line adds an id after program[pid] (sendmail's
//     `(?:\w{14,20}: )?` queue id, kept in the regexes whether set in [DEFAULT] or
//     [Definition]), the session is by that id (a group `mlfid`, Rule.session.by "mlfid");
//   - reviewed server facts (kServerFacts in fail2ban_import.cc: filter, fragment, replacement,
//     why): a fragment of one filter's failregex replaced by the exact form the server writes
//     there (dovecot's `rip=ADDR, lip=ADDR[, TLS...][, session=<id>]` tail for fail2ban's
//     `[^>]*`), applied before conversion; the loader's check still judges the result;
//   - refused, with the reason: `<F-ID>` (a failure id other than an address), host names
//     (`<DNS>`), `<SKIPLINES>` (multi-line buffers), Python-only syntax that has no rewrite
//     below (look-ahead/behind, numbered back-references, atomic groups, possessive
//     quantifiers), a regex RE2 does not compile, a failregex without an address outside a
//     session, and one whose address a client could choose (services/engine/rule_set.h,
//     AnalyzeKeyPlacement: address keys cannot opt out, so the regex is refused, not waved
//     through);
//   - rewritten, when RE2 has an equivalent: `\Z` → `\z`, `{,n}` → `{0,n}`, a leading `^.*\n`
//     (the line before, maxlines 2) → `^` (lines are matched one at a time); a named
//     back-reference `(?P=name)` → the pattern of its group (looser: not the same text;
//     sendmail-reject's `(?P=email)`, openwebmail's `(?P=USER)`, stunnel's `(?P=CODE)`);
//     `(?:\w+ (?!W\b)){m,n}\w+ W` → `(?:\w+ ){m,n}\w+ W` (sshd's __alg_match: the guard only
//     stops a round from taking the word required next); a negative look-ahead outside every
//     group, `A(?!X)B`, → the failregex `AB` and the ignore pattern `A(?:X)` in a rule of its
//     own, `-lookahead-N` (fail2ban tries the other failregexes on a line this one refuses; the
//     rule counts its matches apart from theirs, fail2ban together; stricter: a line matching
//     both at different places is skipped; the ignore pattern loses the same alternatives with
//     Python-only syntax as the failregex, below); in a raw line, `\[\]`
//     (where fail2ban cut the date) → `\[date\]` (testdata/lookahead_equivalence.py checks the
//     look-ahead rewrites with Python's `re` on fail2ban's logs); and, only when the
//     regex would otherwise be refused for its key placement, these (each named in the report):
//       * a small bounded repetition of a group after the address, `(?: (?:port \d+|on
//         \S+)){0,3}`, unrolled into optional copies (the same language; the loader's check
//         then sees that no piece of the tail can hold " from ");
//       * "nothing containing X up to the end", `(?:(?:(?!X).)*)$`, → `$` (stricter: the line
//         must end there);
//       * a conditional `(?(name)yes|no)` → the branch that ends at `$` (stricter), or both
//         branches as an alternation when neither does (looser); its condition groups become
//         plain groups;
//       * a blank run (`\s*`, `\s+`, ` +`) before the key, or at the very end, → at most 16
//         optional blanks (stricter): blanks hold no address; a run between the key and more
//         tail stays, since bounded copies could re-cross a one-space introducer unseen;
//       * last, the optional group before the key around what still stops the regex (the
//         field the check names, or a Python-only construct) is left out, one at a time
//         (stricter: only lines without it match; sshd's `(?: authenticating user
//         <F-USER>...)? <HOST>`, named-refused's `(?:(?!error|info)[\w-]+: )?`), or, with no
//         such group, the alternative that holds it (postfix's ddos prefix loses `lost
//         connection after(?! DATA) [A-Z]+` and `disconnect(?= ...)`: stricter);
//       * "any character but where X starts", `(?:(?!X).)`, → `.` (looser: the key is pinned
//         to the server's tail, so a user name holding X no longer hides the line);
//       * still refused: the failregex pinned to the end of the line (stricter: fail2ban lets
//         text follow it), first by "no later copy of the punctuation that introduces the
//         address" (`[^\[]*$` after `\[<HOST>\]`: the address is the last one so introduced),
//         then by `$`; and then both again with the fields after the address tightened: no
//         free piece after it (`.`, `\S`, `\W`, `[^...]`) takes that punctuation (postfix's
//         recipient `<[^>]*>` -> `<[^>\[]*>`), then also an alternative after it that holds a
//         free field left out (sshd's `(?:port \d+|on \S+)` -> `(?:port \d+)`) and blank runs
//         after it bounded (all stricter; the loader's automaton search judges the result).
//         These are also tried for a regex that converted only with an optional field before
//         the key left out, and preferred when one passes keeping that field (sshd's
//         `(?: authenticating user <F-USER>\S+|.*?</F-USER>)? <HOST>`: the lines with a user
//         name match too);
//   - a syslog filter's regexes start with an optional Solaris message id, `[ID 800047
//     auth.info] ` (common.conf's __prefix_line allows it; the syslog parser leaves it in the
//     message), in fixed-width pieces;
//     A rewritten regex is kept only when the loader's key check passes; the check itself is
//     never weakened. Also rewritten: `(?:IPv6:<IP6>|<IP4>)` → one address group (`<HOST>`,
//     without the "IPv6:" form when a bare branch exists: stricter); an IPv4 key stops at four
//     octets, so a ":port" after it stays out of the key;
//   - a filter that extends `__prefix_line` (`%(known/__prefix_line)s(?:\w{14,20}: )?`,
//     sendmail) keeps its extension in the regexes; apache's `apache-pref-ignore` (a module
//     excluded by its `[module:level]` field) cannot apply to the apache_error message, noted;
// The rest of the filter still converts. Thresholds come from fail2ban's jail defaults, or from a
// jail (ReadFail2banJail).
//
// Thread-safety: the functions are pure apart from reading files; call them from any thread.
#ifndef PALISADE_SERVICES_FAIL2BAN_FAIL2BAN_IMPORT_H_
#define PALISADE_SERVICES_FAIL2BAN_FAIL2BAN_IMPORT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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
  // bantime.increment (+ bantime.factor, bantime.maxtime): repeat offenders' bans grow; read
  // into DecisionSpec.escalation: factor 2 per repeat, fail2ban's default formula doubling the
  // ban each time (exact for bantime.factor 1; another factor, bantime.formula or
  // bantime.multipliers are not applied, said in jail_notes); maxtime the cap.
  bool bantime_increment = false;
  double bantime_factor = 1;
  absl::Duration bantime_maxtime = absl::ZeroDuration();  // zero: unset
  // ignoreip, as written in the jail: packs carry no allowlist, so the report and the pack's
  // header print it as the `allowlist` the operator should add to palisaded's config.
  std::vector<std::string> ignoreip;
  // Where the thresholds came from ("fail2ban's jail defaults" or "jail sshd in FILES").
  std::string threshold_source = "fail2ban's jail defaults";
  // Notes from reading the jail (e.g. a permanent ban turned into a year).
  std::vector<std::string> jail_notes;
  // The filter the jail names (`filter = NAME[k=v,...]`, whose options go into `params`) and
  // where ("file:line"): converting another filter with the jail's thresholds is refused.
  // Empty: no jail, or a jail without `filter`.
  std::string jail_filter;
  std::string jail_filter_where;
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
  std::string reason;   // refused: why; rewritten: what was rewritten; a rule of its own: why
  std::string rule_id;  // the rule it went to (failregex, not refused)
};

struct Fail2banImport {
  std::string filter;  // the file's base name without ".conf", e.g. "sshd"
  // One rule per role (see the header comment); no rule when nothing converted.
  palisade::v1::RulePack pack;
  std::vector<RegexReport> regexes;
  // Read and reported.
  std::string prefregex;
  std::string datepattern;
  int maxlines = 1;
  std::string session_by;  // "pid" or "mlfid" (the id after it) for a session filter, else empty
  std::vector<std::string> notes;  // e.g. "maxlines 10: multi-line buffers are not supported"
  std::vector<std::string> ignoreip;  // from the jail, for the operator's allowlist

  int count(RegexOutcome outcome) const;
  // Failregexes (not ignoreregexes) by outcome.
  int failregexes(RegexOutcome outcome) const;
};

// Reads and converts the filter at `path`, whatever converts: the pack may have no rule.
// kNotFound: the file (or a .conf it includes) does not exist; kInvalidArgument: a syntax error
// ("file:line: reason"), an interpolation loop, an include that is no regular file, files over
// 1 MiB each, 4 MiB or 100 reads together, or interpolation over 1 MiB or 10000 list lines
// (each naming the line that asked for it).
absl::StatusOr<Fail2banImport> ConvertFail2banFilter(const std::string& path,
                                                     const Fail2banImportOptions& options = {});
// ConvertFail2banFilter, and kFailedPrecondition when no failregex converted (the pack would
// have no rule) or an ignoreregex is refused, naming its file:line (the rules would count what
// it exempts). An unanchored ignoreregex without an error log's header is searched in the
// message; a syslog filter whose ignoreregex is refused in raw lines gets no `-raw` twin.
absl::StatusOr<Fail2banImport> ImportFail2banFilter(const std::string& path,
                                                    const Fail2banImportOptions& options = {});
// Whether ImportFail2banFilter refuses what ConvertFail2banFilter read from `path` whole: OK, or
// its kFailedPrecondition. Refused failregexes alone (the rest converted) are no refusal.
absl::Status CheckFail2banImport(const std::string& path, const Fail2banImport& imported);

// fail2ban's time values: "600", "10m", "1h 30m", "1d", "1w", "1mo", "1y"; "-1" (or any negative
// value) is a permanent ban, returned as absl::InfiniteDuration().
absl::StatusOr<absl::Duration> ParseFail2banTime(absl::string_view text);

// Reads jail `jail_name` from `files` (jail.conf, then jail.local, ... : later files override
// earlier ones, [DEFAULT] under the jail's own section) into `options`: maxretry, findtime,
// bantime, bantime.increment / .factor / .maxtime, ignoreip, and `filter = NAME[k=v,...]`
// (`%(__name__)s` the jail's name, `%(mode)s` its mode): NAME into jail_filter, the options
// into params where not set already (--filter_params wins). A permanent bantime becomes 365
// days (every Palisade decision expires), noted. kNotFound: a file cannot be read (a missing
// .local is skipped) or the jail is not in any file; kInvalidArgument: a value that does not
// parse, naming the file and line, or files over the bounds ConvertFail2banFilter sets.
absl::Status ReadFail2banJail(const std::vector<std::string>& files, const std::string& jail_name,
                              Fail2banImportOptions* options);

// The pack as textproto, with a header saying where it came from (and the allowlist the jail's
// ignoreip asks for).
std::string Fail2banPackText(const Fail2banImport& imported);
// The per-regex report: counts per outcome, then each regex with its file, line and reason.
std::string Fail2banReportText(const Fail2banImport& imported);
// A file with no failregex at all (common.conf, apache-common.conf): read by the filters that
// include it, no filter of its own.
bool Fail2banIncludeOnly(const Fail2banImport& imported);
// One line for a directory report: "NAME  converted|include|refused|error  rules N  failregex
// converted/rewritten/refused" ("refused" as CheckFail2banImport says, but "include" for a file
// with no failregex (Fail2banIncludeOnly); with rules, the reason last).
std::string Fail2banSummaryLine(const std::string& name, const absl::StatusOr<Fail2banImport>& r);

}  // namespace palisade

#endif  // PALISADE_SERVICES_FAIL2BAN_FAIL2BAN_IMPORT_H_
