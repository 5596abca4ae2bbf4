#include "services/fail2ban/fail2ban_import.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/text_format.h"
#include "re2/re2.h"
#include "services/common/status_macros.h"
#include "services/engine/rule_set.h"

namespace palisade {
namespace {

// One physical line of a value, with where it was written.
struct ValueLine {
  std::string text;
  std::string file;
  int line = 0;
  // The reviewed server facts (kServerFacts) applied to `text`, for the report.
  std::vector<std::string> server_facts;
};
using Section = std::map<std::string, std::vector<ValueLine>>;
using Sections = std::map<std::string, Section>;

// Rewrites sound only given what a server writes (issue 13 §2). Each replaces a fragment of one
// filter's failregex (after interpolation, before conversion) by the exact form the server
// writes there, so that the loader's unchanged key check (AnalyzeKeyPlacement) can see that the
// address is the server's: a free field after the key becomes the server's own tail, a line left
// open gets the server's end. Stricter than fail2ban on the lines the server writes in another
// form (missed, never keyed on a client's address). The check still judges every result; a fact
// only narrows. Each entry has an injection test in fail2ban_import_test.cc (ServerFacts...).
struct ServerFact {
  const char* filter;       // the filter's base name
  const char* fragment;     // exact text of the interpolated failregex
  const char* replacement;  // what the server writes there
  const char* why;          // the fact, for the report and the reviewer
};
constexpr ServerFact kServerFacts[] = {
    // dovecot's login processes end the line with login_log_format_elements' tail:
    // "rip=%r, lip=%l[, mpid=N][, TLS...|, secured][, session=<%{session}>]" (src/login-common,
    // client_get_log_str): lip is the server's own address, mpid a number, the TLS status
    // server text without '=' ("TLS: Disconnected, TLSv1.2 with cipher X (256/256 bits)"), the
    // session id base64. fail2ban's `[^>]*` there could take a user's second " rip=".
    {"dovecot", "rip=<HOST>(?:[^>]*(?:, session=<\\S+>)?)\\s*$",
     "rip=<HOST>(?:, lip=[0-9A-Fa-f:.]+)?(?:, mpid=\\d+)?(?:, (?:TLS|secured)[^=]*)?"
     "(?:, session=<[\\w+/]*>)?\\s*$",
     "dovecot writes 'rip=ADDR[, lip=ADDR][, mpid=N][, TLS...][, session=<base64>]' to the "
     "end (no lip before 2.0)"},
    // dovecot's auth passdb/userdb prefix "pam(user,ADDR[,<session>]): " (auth-request.c,
    // get_log_prefix): after the remote address only the session id, base64 in <>, or nothing.
    {"dovecot", "<HOST>(?:,\\S*)?\\): ", "<HOST>(?:,(?:<[\\w+/]*>)?)?\\): ",
     "dovecot's auth prefix 'db(user,ADDR[,<session>]): ' holds only a base64 session id after "
     "the address"},
    // ... and the messages after it end the line, with at most dovecot's parenthesised notes
    // ("(SHA1 of given password: f638ff)", "(for LDAP bind)").
    {"dovecot", "(?:[Uu]nknown user|[Ii]nvalid credentials|[Pp]assword mismatch)",
     "(?:[Uu]nknown user|[Ii]nvalid credentials|[Pp]assword mismatch)(?: \\([^(),]*\\))*\\s*$",
     "dovecot's passdb failures end the line, at most with parenthesised notes"},
    // postfix's reject reasons that name the client's address again, in brackets, after the
    // key (smtpd_check.c: reject_unknown_client_hostname "cannot find your hostname, [ADDR]",
    // reject_rbl_client "Client host [ADDR] blocked using DOMAIN", postscreen's "client [ADDR]
    // blocked using DOMAIN"): the second address, an address class, holds no '[', so the tail
    // still cannot hold a client's "[victim]".
    {"postfix", "need fully-qualified hostname|match|[Uu](?:ser unknown|ndeliverable address))\\b",
     "need fully-qualified hostname|match|[Uu](?:ser unknown|ndeliverable address))\\b"
     "(?:: cannot find your (?:reverse )?hostname, \\[[0-9A-Fa-f:.]+\\]|; (?:Client host|client) "
     "\\[[0-9A-Fa-f:.]+\\] blocked using [\\w.-]+)?"
     // ... then (smtpd_check.c, log_whatsup) "; from=<S> to=<R> proto=P helo=<H>": the client's
     // sender, recipient and helo; here a helo that is an address literal "[ADDR]" (the one
     // '[' these fields may hold: a sender or recipient with one, or a helo with one and other
     // text, is left to the pinned tail, which refuses a later '[').
     "(?:; from=<[^>\\[]*> to=<[^>\\[]*> proto=\\w+ helo=<\\[[0-9A-Fa-f:.]+\\]>)?",
     "postfix's reject reasons name the client's address again only as '[ADDR]' (unknown "
     "hostname, RBL), and its helo may be an address literal '<[ADDR]>'"},
    {"postfix", "Client host \\[\\S+\\] blocked\\b", "Client host \\[[0-9A-Fa-f:.]+\\] blocked\\b",
     "postfix's RBL reject writes the client's address in 'Client host [ADDR] blocked'"},
    // postfix/smtpd's "lost connection after CMD from": `(?! DATA) [A-Z]+` spelled without the
    // look-ahead (the same language: any upper-case word not starting with DATA).
    {"postfix", "lost connection after(?! DATA) [A-Z]+",
     "lost connection after (?:[A-CE-Z][A-Z]*|D(?:[B-Z][A-Z]*|A(?:[A-SU-Z][A-Z]*|T(?:[B-Z][A-Z]*)?"
     ")?)?)",
     "the same language as `(?! DATA) [A-Z]+`, without the look-ahead"},
    // auth2.c: "Change of username or service not allowed: (%s,%s) -> (%s,%s)" then
    // " [preauth]": here names without blanks or parentheses (`[^()\s]*`: stricter, a client's
    // name with one is missed, never read as the address).
    {"sshd", ":\\s*Change of username or service not allowed:\\s*.*\\[preauth\\]\\s*$",
     ": Change of username or service not allowed: \\([^()\\s]*\\) -> \\([^()\\s]*\\) "
     "\\[preauth\\]\\s*$",
     "sshd writes '(user,service) -> (user,service) [preauth]' after 'not allowed: '; names "
     "with a blank or a parenthesis are missed (stricter)"},
    // auth.c: "Failed %s for %s%.100s from %.200s port %d ssh2%s%s": what follows "ssh2" (or
    // ssh1's protocol name) starts with ": " and may be the client's (ssh1's "ruser NAME",
    // fail2ban's injection line "... ssh1: ruser X from V"). fail2ban's user is `\S+` or, for
    // a valid user, `[^:]+`; the conditional's two branches together (`.*?` among them) would
    // let the user name run across that ':' to a victim at the end. Here the user name holds
    // no ':' (stricter: an invalid user name with one is missed).
    {"sshd",
     "<F-USER>(?P<cond_user>\\S+)|(?(cond_inv)(?:(?! from ).)*?|[^:]+)</F-USER> from <HOST>",
     "<F-USER>(?P<cond_user>[^:]*?)</F-USER> from <HOST>",
     "sshd writes client text after the address only behind ': '; the user name holds no ':'"},
    // kex.c: "Unable to negotiate a key exchange method": the look-ahead `(?!found\b)` only
    // keeps a round from taking a word "found" (the regex has no address: the session's).
    {"sshd", "Unable to negotiate a (?:(?:\\w+ (?!found\\b)){0,2}\\w+)",
     "Unable to negotiate a (?:(?:\\w+ ){0,2}\\w+)",
     "sshd writes 'Unable to negotiate a key exchange method'; without the look-ahead a line "
     "whose second or third word is 'found' matches too (looser; keyed by the session)"},
    // auth.c: a failed public key is logged "... port N ssh2: TYPE SHA256:FINGERPRINT" (also
    // with a certificate's "ID ... (serial N) CA TYPE SHA256:..."); fail2ban lets anything
    // follow ": ". Here only the key type and fingerprint (stricter), else the end. OpenSSH
    // before 6.8 wrote the 16 MD5 hex pairs without a prefix ("ssh2: RSA 14:ba:..."): taken
    // only after a user name that holds no ':' (the regex the first fact made); after
    // `\S+|.*?` the key check refuses that form (a bare `\w\w:` tail), so there it stays out.
    {"sshd",
     "(?P<cond_user>[^:]*?)</F-USER> from <HOST>(?: (?:port \\d+|on \\S+)){0,2}(?: ssh\\d*)?"
     "(?(cond_user): |(?:(?:(?! from ).)*)$)",
     "(?P<cond_user>[^:]*?)</F-USER> from <HOST>(?: (?:port \\d+|on \\S+)){0,2}(?: ssh\\d*)?"
     "(?:: [\\w@.-]+ (?:(?:SHA256|MD5):[\\w+/=:$]+|\\w\\w(?::\\w\\w){15}))?$",
     "sshd follows 'ssh2' with ': KEYTYPE SHA256:FINGERPRINT' (MD5:, or an older sshd's 16 bare "
     "hex pairs) or ends the line"},
    {"sshd", "(?(cond_user): |(?:(?:(?! from ).)*)$)",
     "(?:: [\\w@.-]+ (?:SHA256|MD5):[\\w+/=:$]+)?$",
     "sshd follows 'ssh2' with ': KEYTYPE SHA256:FINGERPRINT' or ends the line"},
    // exim's quoted SMTP command (the client's bytes, quotes included): the look-ahead in
    // `(?:"+[^"]*(?="))*?"` only steers backtracking (each round's run is followed by the next
    // round's quote or the final one), so without it the language is the same.
    {"exim", "(?:\"+[^\"]*(?=\"))*?\"", "(?:\"+[^\"]*)*?\"",
     "the same language as exim's quoted-command pattern, without its look-ahead"},
    // nginx's error log ends a request's line with its own fields, each `, NAME: "VALUE"`
    // (ngx_http_log_error_handler: upstream, host, referrer); fail2ban's `.*?` there could take
    // a second ", client: V". The values hold no '(' or ':' here (stricter: a Host with a port
    // or a referrer URL misses the line).
    {"nginx-botsearch", "\\S+\\\"\\, .*?$",
     "\\S+\\\"(?:\\, (?:upstream|host|referrer)\\: \\\"[^\\\"(:]*\\\")*$",
     "nginx ends the error line with ', upstream|host|referrer: \"...\"' fields"},
    // nginx's SSL handshake failure ends with the server field (ngx_http_log_error_handler:
    // ", server: ADDR:PORT"); fail2ban's regex stops at the client's address.
    {"nginx-http-auth", "too (?:long|short)\\)[^,]*, client: <HOST>",
     "too (?:long|short)\\)[^,]*, client: <HOST>(?:, server: [^,\\s]*)?\\s*$",
     "nginx ends the SSL handshake error with ', server: NAME' after the client"},
    // The audit record's time stamp, "audit(1373330717.000:4070)", which fail2ban cuts out of
    // the line (datepattern Epoch) and the raw line keeps: seconds, a fraction, the serial.
    {"selinux-ssh", "msg=audit\\(:\\d+\\)", "msg=audit\\(\\d+\\.\\d+:\\d+\\)",
     "auditd writes 'audit(SECONDS.FRACTION:SERIAL)'; fail2ban cut the time out of it"},
    // BIND's log categories are a fixed list (named.conf `logging { category ... }`), not
    // fail2ban's `(?!error|info)[\w-]+`, which the importer would otherwise leave out.
    {"named-refused", "(?:(?!error|info)[\\w-]+: )?",
     "(?:(?:security|update-security|queries|query-errors|xfer-in|xfer-out|notify|update|client|"
     "resolver|lame-servers|general|default|config|database|dnssec|edns-disabled|network|"
     "rate-limit|spill|unmatched|cname|delegation-only|dispatch|rpz|rpz-passthru|serve-stale|"
     "trust-anchor-telemetry|zoneload|nsid|dnstap|sslkeylog): )?",
     "BIND's log categories are a fixed list of words"},
    // The query ("'NAME/TYPE/CLASS'") between the failregex and the prefregex's " denied":
    // BIND prints a name with blanks and other non-printing bytes as \DDD (dns_name_totext),
    // so the quoted query holds no blank. fail2ban's content `.+` there would re-cross the
    // " " before the address.
    {"named-refused", "^(?:view (?:internal|external): )?query(?: \\(cache\\))?",
     "^(?:view [\\w-]+: )?query(?: \\(cache\\))? '[^'\\s]+'",
     "BIND quotes the query as 'NAME/TYPE/CLASS', with no blank in it"},
    {"named-refused", "^zone transfer", "^zone transfer '[^'\\s]+'",
     "BIND quotes the zone as 'NAME/TYPE/CLASS', with no blank in it"},
    // Asterisk's security events (res_security_log.c, security_event_cb): the fields in a fixed
    // order, SecurityEvent, EventTV, Severity, Service, EventVersion, AccountID, SessionID,
    // LocalAddress, RemoteAddress, then the event's own (InvalidPassword: Challenge,
    // ReceivedChallenge, ReceivedHash; ChallengeResponseFailed: Challenge, Response,
    // ExpectedResponse; FailedACL: ACLName; AMI: SessionTV). The client writes AccountID and
    // SessionID (and the hashes), quotes unescaped: fail2ban's `.*?` before the address could
    // take a SessionID holding a second `",RemoteAddress="...` (its own test line). Here every
    // field before the key is a quoted value without a quote, so the key is the RemoteAddress
    // that follows the server's LocalAddress; the fields after it hold no '/' but the
    // challenge's "SECONDS/NONCE" (a line with a quote in a client's value is missed).
    {"asterisk",
     "^SecurityEvent=\"(?:FailedACL|InvalidAccountID|ChallengeResponseFailed|InvalidPassword)\""
     "(?:(?:,(?!RemoteAddress=)\\w+=\"[^\"]*\")*|.*?),RemoteAddress=\"IPV[46]/[^/\"]+/<HOST>/"
     "\\d+\"(?:,(?!RemoteAddress=)\\w+=\"[^\"]*\")*$",
     "^SecurityEvent=\"(?:FailedACL|InvalidAccountID|ChallengeResponseFailed|InvalidPassword)\""
     ",EventTV=\"[\\dT:.+-]+\",Severity=\"\\w+\",Service=\"\\w+\",EventVersion=\"\\d+\","
     "AccountID=\"[^\"]*\",SessionID=\"[^\"]*\",LocalAddress=\"IPV[46]/\\w+/[0-9A-Fa-f:.]+/"
     "\\d+\",RemoteAddress=\"IPV[46]/\\w+/<HOST>/\\d+\""
     "(?:,Challenge=\"(?:\\d+/)?[\\da-f]*\")?(?:,ReceivedChallenge=\"[\\da-f]*\")?"
     "(?:,ReceivedHash=\"[\\da-f]*\")?(?:,Response=\"[\\da-f]*\")?"
     "(?:,ExpectedResponse=\"[\\da-f]*\")?(?:,ACLName=\"[\\w-]*\")?"
     "(?:,SessionTV=\"[\\dT:.+-]*\")?$",
     "asterisk writes its security event's fields in a fixed order, RemoteAddress after the "
     "server's LocalAddress; values holding a quote are missed (stricter)"},
    // chan_sip.c: "Call from '%s' (%s) to extension '%s' rejected because extension not found
    // in context '%s'.": the caller's name and the extension are the client's, quoted, and a
    // quote in either is missed here (fail2ban's `[^']*` too); the context is the server's. The
    // address is the bare "ADDR:PORT" chan_sip writes (pjsip's "TCP:[ADDR]:PORT" is missed).
    {"asterisk",
     "^Call from '[^']*' \\((?:(?:TCP|UDP):)?<HOST>:\\d+\\) to extension '[^']*' rejected "
     "because extension not found in context",
     "^Call from '[^']*' \\(<HOST>:\\d+\\) to extension '[^']*' rejected because extension "
     "not found in context '[^']*'\\.",
     "chan_sip ends the rejected call with \" in context 'CONTEXT'.\""},
    // chan_sip.c: "Rejecting unknown SIP connection from %s" with ast_sockaddr_stringify's
    // "ADDR:PORT", an IPv6 one in brackets. The line ends there (the quotes are the logger's):
    // after the key only a port of at most five digits, in fixed-width pieces (the optional
    // bracket before the key leaves the check no introducer, so no repetition may follow it).
    {"asterisk", "^\"Rejecting unknown SIP connection from <HOST>(?::\\d+)?\"$",
     "^\"Rejecting unknown SIP connection from \\[?<HOST>\\]?(?::\\d\\d?\\d?\\d?\\d?)?\"$",
     "chan_sip ends 'Rejecting unknown SIP connection from ADDR:PORT' there, IPv6 in brackets"},
    // roundcube (rcmail.php, login failure): "Login failed for USER from ADDR. REPLY in FILE on
    // line N (METHOD URI)", ADDR followed by "(X-Real-IP: A,X-Forwarded-For: B)" behind a
    // proxy. USER is the client's and runs to the last " from "; after the key: the proxy
    // headers as lists of addresses (a header holding anything else is missed), the IMAP
    // server's reply taken only without an 'm' (Dovecot's "Authentication failed.", Courier's
    // and Cyrus' "Login failed.": none, so a reply never holds " from "; a reply echoing the
    // user name is missed), a file path and the request (fail2ban's `\S+ \S+`: a URI holding
    // a blank, which HTTP servers refuse in the request line, is the line's one weak field).
    {"roundcube-auth",
     "(?:(?:\\([^\\)]*\\))?\\. (?:(?! from ).)*(?: user=(?P=user))? in \\S+\\.php on line "
     "\\d+ \\(\\S+ \\S+\\))?$",
     "(?:(?:\\((?:X-Real-IP: [0-9A-Fa-f:.]+)?,?(?:X-Forwarded-For: [0-9A-Fa-f:., ]*)?\\))?\\. "
     "[^m]* in \\S+\\.php on line \\d+ \\(\\S+ \\S+\\))?$",
     "roundcube follows the address with proxy headers (addresses), the IMAP reply (no 'm' "
     "taken, so no ' from '), the file and the request"},
    // proftpd (mod_auth.c): "USER %s: no such user found from %s [%s] to %s:%i", "USER %s
    // (Login failed): %s" with a reason of the server's, "SECURITY VIOLATION: %s login
    // attempted.", after the session prefix "HOST (NAME[ADDR])" that holds the key. The user
    // name is the client's: here one without a blank or '[' (stricter: others are missed), so
    // no field after the key can hold a second "[address"; the client's reverse name and the
    // local address after " from " are written by the server, and the line may end in '.' or
    // a blank.
    {"proftpd", "^USER <F-USER>\\S+|.*?</F-USER>(?: \\(Login failed\\))?: ",
     "^USER <F-USER>[^\\s\\[]+</F-USER>(?: \\(Login failed\\))?: ",
     "proftpd's user names are taken without a blank or '[' (stricter)"},
    {"proftpd",
     "|[iI]nvalid shell: '\\S+'|[uU]ser in \\S+|[lL]imit (access|configuration) denies login|"
     "[nN]ot a UserAlias|[mM]aximum login length exceeded)",
     "|[iI]nvalid shell: '[^\\s\\[']+'|[uU]ser in [^\\s\\[]+|[lL]imit (access|configuration) "
     "denies login|[nN]ot a UserAlias|[mM]aximum login length exceeded)(?: from [^\\s\\[]+ "
     "\\[[0-9A-Fa-f:.]+\\] to [0-9A-Fa-f:.]+:\\d+)?\\.? ?",
     "proftpd ends a failed login with its reason, then 'from NAME [ADDR] to ADDR:PORT' for an "
     "unknown user, a '.' or a blank"},
    {"proftpd", "^SECURITY VIOLATION: <F-USER>\\S+|.*?</F-USER> login attempted",
     "^SECURITY VIOLATION: <F-USER>[^\\s\\[]+</F-USER> login attempted\\.? ?",
     "proftpd writes 'SECURITY VIOLATION: USER login attempted[.]'"},
    {"proftpd", "^Maximum login attempts \\(\\d+\\) exceeded",
     "^Maximum login attempts \\(\\d+\\) exceeded ?",
     "proftpd's 'Maximum login attempts (N) exceeded' may end with a blank"},
    // vsftpd (logging.c, vsf_log_line): "FAIL LOGIN: Client "ADDR"" and, for a refusal it
    // explains, ", "REASON"", a message of vsftpd's own ("User is not in the allow user list.").
    {"vsftpd", "FAIL LOGIN: Client \"<HOST>\"(?:\\s*$|,)",
     "FAIL LOGIN: Client \"<HOST>\"(?:, \"[^\"]*\")?\\s*$",
     "vsftpd ends 'FAIL LOGIN: Client \"ADDR\"' with at most its own quoted reason"},
    // horde: "FAILED LOGIN for USER [ADDR] to {MAILBOX [FLAGS]} [pid N on line N of FILE]": the
    // IMAP mailbox spec is the server's configuration, "{host:port[/flags]}" with c-client's
    // flags in brackets ("[imap/ssl/novalidate-cert]").
    {"horde", "to (Horde|{[^}]+})", "to (Horde|{[^}\\[]+(?: \\[[\\w/-]*\\])?})",
     "horde's mailbox spec is '{HOST:PORT [FLAGS]}' from its configuration"},
    // monit (http/processor.c): "access denied -- client [ADDR]: ..." writes the address in
    // brackets, as fail2ban's <HOST> takes it.
    {"monit", "[Cc]lient '?<HOST>'?", "[Cc]lient (?:'|\\[)?<HOST>(?:'|\\])?",
     "monit quotes the client's address or writes it in brackets"},
    // pam_unix (pam_unix_auth.c): "authentication failure; logname=%s uid=%d euid=%d tty=%s
    // ruser=%s rhost=%s  user=%s": ruser and user are both the client's, one before the key and
    // one after it. fail2ban's `(?:\S*|.*?)` ruser could take the server's " rhost=ADDR" and a
    // user name ending " rhost=V" would end the line with the client's key (its own test line
    // "ruser= rhost=192.0.2.2 user=test rhost=192.0.2.152" keyed .152). Here ruser holds no
    // blank, so the key is the first " rhost=", and user no '=' (stricter: names with one are
    // missed).
    {"pam-generic",
     "ruser=<F-ALT_USER>(?:\\S*|.*?)</F-ALT_USER> rhost=<HOST>(?:\\s+user=<F-USER>(?:\\S*|.*?)"
     "</F-USER>)?",
     "ruser=<F-ALT_USER>\\S*</F-ALT_USER> rhost=<HOST>(?:\\s+user=<F-USER>[^=]*</F-USER>)?",
     "pam_unix writes the client's ruser (no blank taken) before rhost and user after it (no '=' "
     "taken)"},
    // kerio: "SMTP: User NAME doesn't exist. Attempt from IP address ADDR." ends with a period.
    {"kerio", "^ SMTP: User \\S+ doesn't exist. Attempt from IP address <HOST>",
     "^ SMTP: User \\S+ doesn't exist. Attempt from IP address <HOST>\\.?",
     "kerio ends 'Attempt from IP address ADDR' with a period"},
    // domino: the policy rejection goes on with the server's reason for it.
    {"domino-smtp", "Connection from \\[?<HOST>\\]? rejected for policy reasons\\.",
     "Connection from \\[?<HOST>\\]? rejected for policy reasons\\.(?: IP address of "
     "connecting host not found in reverse DNS lookup\\.)?",
     "domino follows 'rejected for policy reasons.' with its reason (no reverse DNS)"},
    // ejabberd (ejabberd_c2s.erl): "Failed c2s MECH authentication for JID from ADDR: REASON",
    // the address as inet:ntoa writes it ("::FFFF:192.0.2.3" for a mapped one, which the key
    // takes whole), the reason the authentication module's. Here the one reason seen, no
    // repetition after the key (an optional "IP " before it leaves the check no introducer).
    {"ejabberd-auth", "from (?:IP )?(?:::FFFF:)?<HOST>(?:: |$)",
     "from (?:IP )?<HOST>(?:: Invalid username or password)?$",
     "ejabberd ends the failed login with ': Invalid username or password'"},
    // haproxy's HTTP log line starts with "%ci:%cp", the client's address and port (log.c,
    // the default httplog format): with the port required, an IPv6 key stops before it
    // ("2001:db8::1234:58430" is 2001:db8::1234, port 58430; optional, the key took it whole).
    {"haproxy-http-auth", "<HOST>(?::\\d+)?\\s+.*<NOSRV>", "<HOST>:\\d+\\s+.*<NOSRV>",
     "haproxy writes the client as 'ADDR:PORT' at the start of the line"},
};

// Applies the kServerFacts of `filter` to a failregex line.
void ApplyServerFacts(const std::string& filter, ValueLine* line) {
  for (const ServerFact& f : kServerFacts) {
    if (filter != f.filter) continue;
    // Every occurrence (where the replacement starts with the fragment, not its own output).
    bool applied = false;
    for (size_t at = line->text.find(f.fragment); at != std::string::npos;
         at = line->text.find(f.fragment, at)) {
      if (line->text.compare(at, strlen(f.replacement), f.replacement) == 0) {
        at += strlen(f.replacement);
        continue;
      }
      line->text.replace(at, strlen(f.fragment), f.replacement);
      at += strlen(f.replacement);
      applied = true;
    }
    if (applied) line->server_facts.push_back(f.why);
  }
}

// Stands for __prefix_line during interpolation, so that we can tell the filter used it.
constexpr char kPrefixMarker[] = "\x01";
constexpr int kMaxIncludeDepth = 10;
constexpr int kMaxExpandDepth = 40;
// What one filter's (or jail's) interpolation may produce, summed over every substitution at
// every level (a value doubled 32 times would be 32 GiB), and how many list lines it may visit.
// The shipped filters use well under a tenth of each.
constexpr size_t kMaxExpandBytes = 1 << 20;
constexpr size_t kMaxListLines = 10000;

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// What one filter (with its includes and .local) or one jail's files may read: files are
// regular, at most kMaxConfigBytes each and kMaxConfigTotalBytes together, in at most
// kMaxConfigReads reads (a file included twice counts twice). The shipped filters read a few
// files of a few kB.
constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxConfigTotalBytes = 4 << 20;
constexpr int kMaxConfigReads = 100;
struct ReadBudget {
  size_t bytes = 0;
  int reads = 0;
};

// Reads the regular file `path` whole into `text`, within `budget`. `where` is the including
// "file:line: " (empty for a file named by the caller). A missing or unreadable file is
// kNotFound; a device, FIFO or directory (opened without blocking, then checked) and a file
// over the budget are kInvalidArgument.
absl::Status ReadConfigFile(const std::string& path, const std::string& where,
                            ReadBudget* budget, std::string* text) {
  if (++budget->reads > kMaxConfigReads) {
    return absl::InvalidArgumentError(absl::StrCat(where, "reading ", path, ": more than ",
                                                   kMaxConfigReads,
                                                   " files read for one filter or jail"));
  }
  int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(where.empty() ? absl::StrCat(path, ": cannot read")
                                             : absl::StrCat(where, "included file ", path,
                                                            " cannot be read"));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(where, path, " is not a regular file"));
  }
  const size_t limit = std::min(kMaxConfigBytes, kMaxConfigTotalBytes - budget->bytes);
  text->clear();
  char buf[65536];
  for (;;) {
    ssize_t got = read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      close(fd);
      return absl::NotFoundError(absl::StrCat(where, path, ": read failed"));
    }
    if (got == 0) break;
    if (text->size() + got > limit) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat(
          where, path, " is larger than ", limit, " bytes",
          limit < kMaxConfigBytes
              ? absl::StrCat(" (what is left of ", kMaxConfigTotalBytes, " for one filter or jail)")
              : ""));
    }
    text->append(buf, got);
  }
  close(fd);
  budget->bytes += text->size();
  return absl::OkStatus();
}

// What tells two spellings of one file apart from two files: its real path, if it has one.
std::string FileIdentity(const std::string& path) {
  char real[PATH_MAX];
  return realpath(path.c_str(), real) != nullptr ? std::string(real) : path;
}

// Parses one INI file into `out` (later keys override earlier ones). Its [INCLUDES] before files
// are read first and after files last, as fail2ban's ConfigReader does. `chain`: the files whose
// includes led here (FileIdentity), not `path` itself. An include of one of them is skipped, as
// fail2ban skips it (configparserinc.py, _getIncludes' `seen`), and noted in `notes`: a file
// including itself is read twice, a -> b -> a reads b, then a.
absl::Status ReadConfig(const std::string& path, const std::string& included_from,
                        int included_line, std::vector<std::string>* chain, ReadBudget* budget,
                        Sections* out, std::vector<std::string>* notes) {
  const std::string where =
      included_from.empty() ? "" : absl::StrCat(included_from, ":", included_line, ": ");
  if (chain->size() > static_cast<size_t>(kMaxIncludeDepth)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "includes nest deeper than ", kMaxIncludeDepth));
  }
  std::string contents;
  if (absl::Status read = ReadConfigFile(path, where, budget, &contents); !read.ok()) {
    // A missing .local is optional, as in fail2ban.
    if (read.code() == absl::StatusCode::kNotFound && absl::EndsWith(path, ".local")) {
      return absl::OkStatus();
    }
    return read;
  }
  Sections own;
  std::string section;
  std::vector<ValueLine>* last_value = nullptr;  // the value being continued
  int n = 0;
  for (absl::string_view piece : absl::StrSplit(contents, '\n')) {
    std::string raw(piece);
    ++n;
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    // An inline comment: a `;` after a blank (fail2ban's inline_comment_prefixes).
    for (size_t at = raw.find(';', 1); at != std::string::npos; at = raw.find(';', at + 1)) {
      if (raw[at - 1] == ' ' || raw[at - 1] == '\t') {
        raw.resize(at);
        break;
      }
    }
    absl::string_view stripped = absl::StripAsciiWhitespace(raw);
    if (stripped.empty() || stripped[0] == '#' || stripped[0] == ';') continue;
    bool indented = raw[0] == ' ' || raw[0] == '\t';
    if (indented && last_value != nullptr) {
      // A continuation line: one more entry of a multi-line value.
      last_value->push_back({std::string(stripped), path, n});
      continue;
    }
    if (stripped[0] == '[') {
      if (stripped.back() != ']') {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": unterminated section"));
      }
      section = std::string(stripped.substr(1, stripped.size() - 2));
      last_value = nullptr;
      continue;
    }
    size_t eq = stripped.find_first_of("=:");
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", n, ": expected 'name = value', got '", stripped, "'"));
    }
    if (section.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": option outside a section"));
    }
    std::string key(absl::StripAsciiWhitespace(stripped.substr(0, eq)));
    std::string value(absl::StripAsciiWhitespace(stripped.substr(eq + 1)));
    auto& lines = own[section][key];
    lines.clear();
    lines.push_back({value, path, n});
    last_value = &lines;
  }

  auto include = [&](const char* which) -> absl::Status {
    auto sec = own.find("INCLUDES");
    if (sec == own.end()) return absl::OkStatus();
    auto it = sec->second.find(which);
    if (it == sec->second.end()) return absl::OkStatus();
    for (const ValueLine& v : it->second) {
      for (absl::string_view name : absl::StrSplit(v.text, ' ', absl::SkipWhitespace())) {
        std::string file = name[0] == '/' ? std::string(name)
                                          : absl::StrCat(DirName(path), "/", name);
        if (std::find(chain->begin(), chain->end(), FileIdentity(file)) != chain->end()) {
          notes->push_back(absl::StrCat(v.file, ":", v.line, ": include ", file,
                                        " skipped: an include loop back to it (fail2ban skips "
                                        "it too)"));
          continue;
        }
        chain->push_back(FileIdentity(path));
        absl::Status read = ReadConfig(file, v.file, v.line, chain, budget, out, notes);
        chain->pop_back();
        RETURN_IF_ERROR(read);
      }
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(include("before"));
  for (auto& [name, options] : own) {
    if (name == "INCLUDES") continue;
    for (auto& [key, lines] : options) {
      // The value an earlier file gave, for `%(known/key)s` (fail2ban's KNOWN/section).
      auto& merged = (*out)[name];
      if (auto earlier = merged.find(key); earlier != merged.end()) {
        (*out)[absl::StrCat("KNOWN/", name)][key] = std::move(earlier->second);
      }
      merged[key] = lines;
    }
  }
  RETURN_IF_ERROR(include("after"));
  return absl::OkStatus();
}

// Option lookup and interpolation over a filter's merged sections.
class Interpolator {
 public:
  Interpolator(const Sections& sections, const std::map<std::string, std::string>& params)
      : sections_(sections) {
    for (const auto& [k, v] : params) params_[k] = {{v, "(parameter)", 0}};
  }

  // The lines of option `name` ("key" or "section/key"); nullptr when unknown.
  const std::vector<ValueLine>* Find(absl::string_view name) const {
    if (auto p = params_.find(std::string(name)); p != params_.end()) return &p->second;
    size_t slash = name.find('/');
    if (absl::StartsWith(name, "known/")) {
      // The earlier value of the key, in the sections plain names are looked up in.
      std::string key(name.substr(slash + 1));
      for (const char* s : {"KNOWN/Init", "KNOWN/Definition", "KNOWN/DEFAULT"}) {
        if (const std::vector<ValueLine>* v = In(s, key)) return v;
      }
      return nullptr;
    }
    if (slash != absl::string_view::npos) {
      const std::vector<ValueLine>* v =
          In(std::string(name.substr(0, slash)), std::string(name.substr(slash + 1)));
      return v != nullptr ? v : In("DEFAULT", std::string(name.substr(slash + 1)));
    }
    std::string key(name);
    auto p = params_.find(key);
    if (p != params_.end()) return &p->second;
    for (const char* s : {"Init", "Definition", "DEFAULT"}) {
      if (const std::vector<ValueLine>* v = In(s, key)) return v;
    }
    return nullptr;
  }

  // Expands `%(name)s` and option tags `<name>` in `text`; unknown tags (<HOST>, <F-USER>) stay.
  // Every substitution counts against the Interpolator's byte budget (kMaxExpandBytes).
  absl::StatusOr<std::string> Expand(absl::string_view text, int depth = 0) const {
    if (depth > kMaxExpandDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("interpolation nests deeper than ", kMaxExpandDepth, " (a loop?)"));
    }
    std::string out;
    size_t i = 0;
    while (i < text.size()) {
      if (text[i] == '%' && i + 1 < text.size() && text[i + 1] == '%') {
        out += '%';  // configparser's escape
        i += 2;
        continue;
      }
      if (text[i] == '%' && i + 1 < text.size() && text[i + 1] == '(') {
        size_t close = text.find(")s", i);
        if (close != absl::string_view::npos) {
          absl::string_view name = text.substr(i + 2, close - i - 2);
          const std::vector<ValueLine>* v = Find(name);
          if (v == nullptr) {
            return absl::InvalidArgumentError(absl::StrCat("%(", name, ")s is not defined"));
          }
          ASSIGN_OR_RETURN(std::string value, Expand(Joined(*v), depth + 1));
          RETURN_IF_ERROR(Charge(value.size()));
          out += value;
          i = close + 2;
          continue;
        }
      }
      if (text[i] == '<' && !(i >= 2 && text.substr(i - 2, 2) == "?P")) {
        // Expand the tag's name first: <lt_<logtype>/__prefix_line>.
        size_t close = FindTagEnd(text, i);
        if (close != absl::string_view::npos) {
          ASSIGN_OR_RETURN(std::string name, Expand(text.substr(i + 1, close - i - 1), depth + 1));
          const std::vector<ValueLine>* v =
              name.find_first_of("<>") == std::string::npos ? Find(name) : nullptr;
          if (v != nullptr) {
            ASSIGN_OR_RETURN(std::string value, Expand(Joined(*v), depth + 1));
            RETURN_IF_ERROR(Charge(value.size()));
            out += value;
          } else {
            absl::StrAppend(&out, "<", name, ">");
          }
          i = close + 1;
          continue;
        }
      }
      out += text[i++];
    }
    return out;
  }

  // Expands a list option (failregex): a line that is a single reference to a multi-line option
  // becomes that option's lines, each keeping the file and line it was written on. Errors name
  // the top-level line being expanded (`origin`), and the referenced line when it differs.
  absl::Status ExpandList(const std::vector<ValueLine>& lines, int depth,
                          std::vector<ValueLine>* out, const ValueLine* origin = nullptr) const {
    for (const ValueLine& l : lines) {
      const ValueLine& top = origin != nullptr ? *origin : l;
      auto located = [&](absl::string_view message) {
        return absl::InvalidArgumentError(absl::StrCat(
            top.file, ":", top.line, ": ", message,
            &top == &l ? "" : absl::StrCat(" (in ", l.file, ":", l.line, ")")));
      };
      if (depth > kMaxExpandDepth) {
        return located(
            absl::StrCat("interpolation nests deeper than ", kMaxExpandDepth, " (a loop?)"));
      }
      if (++list_lines_ > kMaxListLines) {
        return located(absl::StrCat("interpolation makes more than ", kMaxListLines,
                                    " list lines (a loop or a bomb?)"));
      }
      absl::string_view t = l.text;
      std::string ref;
      if (absl::StartsWith(t, "%(") && absl::EndsWith(t, ")s") &&
          t.find(")s") == t.size() - 2) {
        ref = std::string(t.substr(2, t.size() - 4));
      } else if (t.size() > 2 && t[0] == '<' && FindTagEnd(t, 0) == t.size() - 1) {
        absl::StatusOr<std::string> name = Expand(t.substr(1, t.size() - 2), depth + 1);
        if (!name.ok()) return located(name.status().message());
        ref = *std::move(name);
      }
      if (!ref.empty()) {
        if (const std::vector<ValueLine>* v = Find(ref)) {
          RETURN_IF_ERROR(ExpandList(*v, depth + 1, out, &top));
          continue;
        }
      }
      absl::StatusOr<std::string> expanded = Expand(t, depth + 1);
      if (!expanded.ok()) return located(expanded.status().message());
      for (absl::string_view piece : absl::StrSplit(*expanded, '\n', absl::SkipWhitespace())) {
        out->push_back({std::string(absl::StripAsciiWhitespace(piece)), l.file, l.line});
      }
    }
    return absl::OkStatus();
  }

 private:
  const std::vector<ValueLine>* In(const std::string& section, const std::string& key) const {
    auto s = sections_.find(section);
    if (s == sections_.end()) return nullptr;
    auto k = s->second.find(key);
    return k == s->second.end() ? nullptr : &k->second;
  }
  static std::string Joined(const std::vector<ValueLine>& v) {
    std::vector<std::string> texts;
    for (const ValueLine& l : v) texts.push_back(l.text);
    return absl::StrJoin(texts, "\n");
  }
  // The '>' closing the tag opened at `open`, counting nested tags; npos when it is no tag (a
  // character that cannot be in an option name comes first).
  static size_t FindTagEnd(absl::string_view text, size_t open) {
    int level = 0;
    for (size_t j = open; j < text.size(); ++j) {
      char c = text[j];
      if (c == '<') {
        ++level;
      } else if (c == '>') {
        if (--level == 0) return j;
      } else if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '/' && c != '.') {
        return absl::string_view::npos;
      }
    }
    return absl::string_view::npos;
  }

  // Counts `bytes` (and one for the substitution itself) against the budget.
  absl::Status Charge(size_t bytes) const {
    expanded_bytes_ += bytes + 1;
    if (expanded_bytes_ > kMaxExpandBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "interpolation makes more than ", kMaxExpandBytes, " bytes (a loop or a bomb?)"));
    }
    return absl::OkStatus();
  }

  const Sections& sections_;
  std::map<std::string, std::vector<ValueLine>> params_;
  // Spent so far, over every Expand / ExpandList call (the budgets above).
  mutable size_t expanded_bytes_ = 0;
  mutable size_t list_lines_ = 0;
};

// fail2ban's address tags, in the shape the shipped packs use (rules/sshd.textproto): the
// key-anchoring analysis reads it, and the engine parses the capture as an address anyway.
// An IPv4 address is tried first and takes no more than four octets, so that a ":port" after
// it (Apache's "[client 192.0.2.1:51380]") is not read into the key.
constexpr char kIpGroup[] =
    "(?P<ip>(?:\\d{1,3}\\.){3}\\d{1,3}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]+)";
constexpr char kIp4Group[] = "(?P<ip>(?:\\d{1,3}\\.){3}\\d{1,3})";
constexpr char kIp6Group[] = "(?P<ip>[0-9A-Fa-f]*:[0-9A-Fa-f:.]+)";
// Stands for apache-common.conf's `_apache_error_client` ("[client <HOST>:port]") during
// interpolation: the message of LOG_FORMAT_APACHE_ERROR starts there.
constexpr char kApacheClientMarker[] = "\x02";
// An IPv6 client is written in brackets, "[client [2001:db8::1]:51548]" (fail2ban's <HOST> takes
// them); the key is at the message's start, so the optional bracket is no field before it.
constexpr char kApacheClient[] = "\x02\\[client \\[?<HOST>\\]?(?::\\d{1,5})?\\]";
// The time stamps fail2ban cuts from the start of a non-syslog line before matching:
// "2012/04/09 11:53:29", ISO 8601, "[09/Apr/2012:11:53:29 +0200]" (what fail2ban's {DATE}
// finds in the shipped logs).
constexpr char kDateShapes[] =
    // Fixed-width pieces only: a variable-length field before the key would make the loader's
    // check ask for the end to be pinned.
    // (also stunnel's "2011.11.21 14:29:16")
    "(?:\\d{4}[-/.]\\d{2}[-/.]\\d{2}[ T]\\d{2}:\\d{2}:\\d{2}(?:[.,]\\d\\d\\d?(?:\\d{3})?)?"
    // the zone may follow a blank (Serilog's "2019-11-26 01:04:49.008 +08:00", bitwarden)
    "(?: ?(?:Z|[+-]\\d{2}:?\\d{2}))?"
    "|\\[\\d{2}/\\w{3}/\\d{4}:\\d{2}:\\d{2}:\\d{2} [+-]\\d{4}\\]"
    "|\\[\\d{2}/\\w{3}/\\d{4} \\d{2}:\\d{2}:\\d{2}\\]"
    "|\\[\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}(?:\\.\\d{3})?\\]"
    // monit's "[PDT Apr 16 21:05:29]", "[CEST Aug  6 10:14:52]" (a zone, then the usual date).
    "|\\[(?:[A-Z]{4}|[A-Z]{3}) \\w{3} [ \\d]\\d \\d{2}:\\d{2}:\\d{2}\\]"
    "|\\[\\d{2}-\\w{3}-\\d{4} \\d{2}:\\d{2}:\\d{2}(?: [+-]\\d{4})?\\]:?"
    "|\\d{2}/\\d{2}/\\d{4} \\d{2}:\\d{2}:\\d{2}"
    // BIND's "11-Aug-2013 03:36:11.372", and "03-07-2005 23:07:20 +0300" (fail2ban's
    // %d-%b-%Y / %d-%m-%Y templates).
    "|\\d{2}-\\w{3}-\\d{4} \\d{2}:\\d{2}:\\d{2}(?:\\.\\d{3})?"
    "|\\d{2}-\\d{2}-\\d{4} \\d{2}:\\d{2}:\\d{2}(?: [+-]\\d{4})?"
    "|\\w{3} \\w{3} [ \\d]\\d \\d{2}:\\d{2}:\\d{2} \\d{4}"
    "|\\w{3} [ \\d]?\\d \\d{2}:\\d{2}:\\d{2})";  // also "Feb 1" (proftpd)
// What fail2ban cut out between brackets where a failregex writes `\[\]` (the access-log date
// "[18/Nov/2018:21:34:34 +0000]" and its kin), in fixed-width pieces.
constexpr char kBracketDateShapes[] =
    // (the month also as four letters and a dot, a French locale's "sept.": openhab)
    // (and without its zone: "[27/Jun/2013:11:55:44]", "[31/Jan/2015:14:29:44 ]")
    "(?:\\d{2}/(?:\\w{3}|\\w{4}\\.)/\\d{4}:\\d{2}:\\d{2}:\\d{2}(?: [+-]\\d{4}| )?"
    "|\\d{2}/\\w{3}/\\d{4} \\d{2}:\\d{2}:\\d{2}"
    "|\\d{4}-\\d{2}-\\d{2}[ T]\\d{2}:\\d{2}:\\d{2}(?:[.,]\\d{3}(?:\\d{3})?)?"
    "|\\d{2}-\\w{3}-\\d{4} \\d{2}:\\d{2}:\\d{2}(?: [+-]\\d{4})?)";
// Solaris' syslog message id after the program ("sshd[63814]: [ID 800047 auth.info] ..."),
// which common.conf's __prefix_line takes as `(?:\[ID \d+ \S+\]\s+)?`: here its facilities and
// levels spelled out and the id's up to ten digits as optional copies, so that no
// variable-length field precedes the key.
constexpr char kSolarisMessageId[] =
    "(?:\\[ID \\d\\d?\\d?\\d?\\d?\\d?\\d?\\d?\\d?\\d? "
    "(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|audit|local[0-7])\\."
    "(?:emerg|alert|crit|err|error|warning|warn|notice|info|debug)\\] )?";
// The leading date of a raw line when the filter's datepattern says nothing more precise.
const std::string& DefaultLeadingDate() {
  static const std::string* d = new std::string(absl::StrCat("(?:", kDateShapes, " ?)?"));
  return *d;
}
// Why `re` uses Python-only syntax RE2 lacks (empty when it does not); `at`, when given, gets
// where.
std::string PythonOnlyConstruct(absl::string_view re, size_t* at = nullptr);
int DropWordGuardLookaheads(std::string* re);

// `(?P<name>[class])` ... `(?P=name)`: a back-reference to a group that captures one character
// of a class becomes that class (looser: the two characters need not be the same one; e.g.
// fail2ban's date separator `(?P<_sep>[-/.])%m(?P=_sep)`). Returns how many it inlined; leaves
// other back-references alone.
int InlineClassBackReferences(std::string* re) {
  static const LazyRE2 kGroup = {"\\(\\?P<(\\w+)>(\\[\\^?\\]?[^\\]]*\\]|\\\\.)\\)"};
  int n = 0;
  std::string name, cls;
  for (int round = 0; round < 8; ++round) {
    re2::StringPiece in(*re);
    re2::StringPiece whole;
    if (!RE2::PartialMatch(in, "(" + kGroup->pattern() + ")", &whole, &name, &cls)) break;
    const std::string ref = absl::StrCat("(?P=", name, ")");
    if (!absl::StrContains(*re, ref)) break;
    const size_t at = whole.data() - re->data();
    re->replace(at, whole.size(), absl::StrCat("(?:", cls, ")"));
    absl::StrReplaceAll({{ref, cls}}, re);
    ++n;
  }
  return n;
}

// fail2ban's datepattern (strptime-like codes, `{^LN-BEG}`, `{DATE}`, `Epoch`, `TAI64N`) as an
// RE2 piece of fixed width for the start of a raw line; nullopt when the pattern is not anchored
// at the line's start, uses a code we do not know, or holds a variable-length field (the key
// would then follow a field: the default shapes are used instead). Dates are the server's: `\s*`
// in a pattern becomes `\s?` (stricter: at most one blank), a day or hour may lose its leading
// zero (`[0-3]?\d`), a fraction takes one to six digits (`\d\d?\d?\d?\d?\d?`).
std::optional<std::string> TranslateDatePattern(std::string dp) {
  absl::string_view rest = dp;
  if (!absl::ConsumePrefix(&rest, "{^LN-BEG}") && !absl::ConsumePrefix(&rest, "^")) {
    return std::nullopt;
  }
  if (rest.empty()) return std::nullopt;
  if (rest == "Epoch" || rest == "EPOCH") return std::string("\\[?\\d{10}(?:\\.\\d{3}\\d?\\d?\\d?)?\\]?");
  if (rest == "TAI64N") return std::string("@[0-9A-Fa-f]{24}");
  static const auto* kCodes = new std::map<char, std::string>{
      {'Y', "\\d{4}"},
      {'y', "\\d{2}"},
      {'m', "[01]?\\d"},
      {'d', "[0-3]?\\d"},
      {'e', "[ 0-3]?\\d"},
      {'H', "[0-2]?\\d"},
      {'k', "[ 0-2]?\\d"},
      {'I', "[01]?\\d"},
      {'l', "[ 01]?\\d"},
      {'M', "[0-5]\\d"},
      {'S', "[0-6]\\d"},
      {'f', "\\d\\d?\\d?\\d?\\d?\\d?"},
      {'z', "(?:Z|[+-]\\d\\d:?\\d\\d)"},
      {'Z', "[A-Z][A-Z][A-Z]?[A-Z]?[A-Z]?"},
      {'b', "[A-Za-z][a-z][a-z]"},
      {'h', "[A-Za-z][a-z][a-z]"},
      {'B', "[A-Z][a-z][a-z][a-z]?[a-z]?[a-z]?[a-z]?[a-z]?[a-z]?"},
      {'a', "[A-Za-z][a-z][a-z]"},
      {'A', "[A-Z][a-z][a-z][a-z]?[a-z]?[a-z]?[a-z]?[a-z]?[a-z]?"},
      {'p', "[AaPp][Mm]"},
      {'j', "\\d{3}"},
      {'s', "\\d{10}"},
      {'%', "%"},
  };
  std::string out;
  for (size_t i = 0; i < rest.size(); ++i) {
    const char c = rest[i];
    if (absl::StartsWith(rest.substr(i), "{DATE}")) {
      absl::StrAppend(&out, kDateShapes);
      i += strlen("{DATE}") - 1;
      continue;
    }
    if (c == '\\' && i + 1 < rest.size()) {
      absl::string_view esc = rest.substr(i, 2);
      const bool star = i + 2 < rest.size() && (rest[i + 2] == '*' || rest[i + 2] == '+');
      if ((esc == "\\s" || esc == "\\d") && star) {
        absl::StrAppend(&out, esc, rest[i + 2] == '*' ? "?" : "");
        i += 2;
        continue;
      }
      absl::StrAppend(&out, esc);
      ++i;
      continue;
    }
    if (c != '%') {
      out += c;
      continue;
    }
    // "%%" in the file is one '%' of the pattern (the INI escape); "%Ex" is fail2ban's extended
    // form of a code (a year 20xx, a day 1-31): the plain code's piece.
    size_t j = i + 1;
    if (j < rest.size() && rest[j] == '%') ++j;
    if (absl::StartsWith(rest.substr(j), "Ex")) j += 2;
    if (j >= rest.size()) return std::nullopt;
    auto code = kCodes->find(rest[j]);
    if (code == kCodes->end()) return std::nullopt;
    absl::StrAppend(&out, code->second);
    i = j;
  }
  InlineClassBackReferences(&out);
  if (!PythonOnlyConstruct(out).empty()) return std::nullopt;
  const std::string probe = absl::StrCat("^(?:", out, ")(?P<ip>\\d)");
  absl::StatusOr<KeyPlacement> placement = AnalyzeKeyPlacement(probe, "ip");
  if (!placement.ok() || placement->follows_field) return std::nullopt;
  return out;
}

// The leading date of a raw line for a filter with `datepattern` dp: its translation, or the
// default shapes, optional, with one optional blank after.
std::string LeadingDateFor(const std::string& dp) {
  std::optional<std::string> t = TranslateDatePattern(dp);
  if (!t) return DefaultLeadingDate();
  return absl::StrCat("(?:(?:", *t, "|", kDateShapes, ") ?)?");
}

// Longest regex a rewrite may produce (unrolling copies groups).
constexpr size_t kMaxRewrittenSize = 16 << 10;
constexpr int kMaxUnrollCopies = 4;

// Walks `re` outside escapes and character classes: `on_escape(i)` sees each escape's backslash
// (outside classes) and `fn(i)` each other byte; either returns false to stop the walk.
template <typename OnEscape, typename Fn>
void WalkOutsideClasses(absl::string_view re, OnEscape on_escape, Fn fn) {
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    const char c = re[i];
    if (c == '\\') {
      if (!in_class && !on_escape(i)) return;
      ++i;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      continue;
    }
    if (c == '[') {
      in_class = true;
      if (i + 1 < re.size() && re[i + 1] == '^') ++i;
      if (i + 1 < re.size() && re[i + 1] == ']') ++i;  // a literal ] first in the class
      continue;
    }
    if (!fn(i)) return;
  }
}

std::string PythonOnlyConstruct(absl::string_view re, size_t* at) {
  std::string why;
  WalkOutsideClasses(
      re,
      [&](size_t i) {
        if (i + 1 < re.size() && re[i + 1] >= '1' && re[i + 1] <= '9') {
          why = absl::StrCat("back-reference \\", std::string(1, re[i + 1]));
          if (at != nullptr) *at = i;
        }
        return why.empty();
      },
      [&](size_t i) {
        if (at != nullptr) *at = i;
        const char c = re[i];
        absl::string_view rest = re.substr(i);
        if (absl::StartsWith(rest, "(?=")) why = "look-ahead (?=...)";
        else if (absl::StartsWith(rest, "(?!")) why = "negative look-ahead (?!...)";
        else if (absl::StartsWith(rest, "(?<=")) why = "look-behind (?<=...)";
        else if (absl::StartsWith(rest, "(?<!")) why = "negative look-behind (?<!...)";
        else if (absl::StartsWith(rest, "(?P=")) why = "named back-reference (?P=name)";
        else if (absl::StartsWith(rest, "(?>")) why = "atomic group (?>...)";
        else if (absl::StartsWith(rest, "(?(")) why = "conditional group (?(name)...)";
        else if ((c == '*' || c == '+' || c == '?' || c == '}') && i + 1 < re.size() &&
                 re[i + 1] == '+' && !(i > 0 && re[i - 1] == '(')) {
          why = absl::StrCat("possessive quantifier ", std::string(1, c), "+");
        }
        return why.empty();
      });
  return why;
}

// The groups of `re` as (open, close) offsets, innermost first; false when the parentheses do
// not balance.
bool ScanGroups(absl::string_view re, std::vector<std::pair<size_t, size_t>>* groups) {
  std::vector<size_t> open;
  bool balanced = true;
  WalkOutsideClasses(
      re, [](size_t) { return true; },
      [&](size_t i) {
        if (re[i] == '(') {
          open.push_back(i);
        } else if (re[i] == ')') {
          if (open.empty()) return balanced = false;
          groups->emplace_back(open.back(), i);
          open.pop_back();
        }
        return true;
      });
  return balanced && open.empty();
}

// Splits `body` at its top-level '|'.
std::vector<std::string> TopLevelAlternatives(absl::string_view body) {
  std::vector<std::string> out(1);
  int depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c == '\\' && i + 1 < body.size()) {
      absl::StrAppend(&out.back(), body.substr(i, 2));
      ++i;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
    } else if (c == '[') {
      in_class = true;
      out.back() += c;
      if (i + 1 < body.size() && body[i + 1] == '^') out.back() += body[++i];
      if (i + 1 < body.size() && body[i + 1] == ']') out.back() += body[++i];
      continue;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      --depth;
    } else if (c == '|' && depth == 0) {
      out.emplace_back();
      continue;
    }
    out.back() += c;
  }
  return out;
}

bool EndsAtEnd(absl::string_view branch) {
  return absl::EndsWith(branch, "$") && !absl::EndsWith(branch, "\\$");
}

// `(?(name)yes|no)` → the branch that ends at `$` (stricter), else both (looser); the condition
// groups `(?P<name>` become `(?:`. Returns false when there is no conditional.
bool RewriteConditionals(std::string* re, std::vector<std::string>* notes) {
  bool any = false;
  std::set<std::string> names;
  for (int round = 0; round < 8; ++round) {
    std::vector<std::pair<size_t, size_t>> groups;
    if (!ScanGroups(*re, &groups)) return any;
    bool changed = false;
    for (const auto& [open, close] : groups) {
      if (re->compare(open, 3, "(?(") != 0) continue;
      size_t name_end = re->find(')', open + 3);
      if (name_end == std::string::npos || name_end > close) continue;
      std::string name = re->substr(open + 3, name_end - open - 3);
      std::vector<std::string> branches =
          TopLevelAlternatives(absl::string_view(*re).substr(name_end + 1, close - name_end - 1));
      if (branches.size() > 2) break;
      std::string yes = branches[0];
      std::string no = branches.size() > 1 ? branches[1] : "";
      std::string replacement;
      if (EndsAtEnd(yes) != EndsAtEnd(no)) {
        replacement = absl::StrCat("(?:", EndsAtEnd(yes) ? yes : no, ")");
        notes->push_back(absl::StrCat("(?(", name, ")...) -> its branch that ends at $"));
      } else {
        replacement = absl::StrCat("(?:", yes, "|", no, ")");
        notes->push_back(absl::StrCat("(?(", name, ")yes|no) -> (?:yes|no)"));
      }
      re->replace(open, close - open + 1, replacement);
      names.insert(name);
      changed = any = true;
      break;
    }
    if (!changed) break;
  }
  for (const std::string& name : names) {
    absl::StrReplaceAll({{absl::StrCat("(?P<", name, ">"), "(?:"}}, re);
  }
  return any;
}

// Unrolls a small bounded repetition of a group, G{m,n} (n <= kMaxUnrollCopies, no named group
// inside), into m copies of G and n-m optional ones: the same language, with no piece that
// repeats more than once.
bool UnrollBoundedRepeats(std::string* re, std::vector<std::string>* notes) {
  bool any = false;
  for (int round = 0; round < 16; ++round) {
    std::vector<std::pair<size_t, size_t>> groups;
    if (!ScanGroups(*re, &groups)) return any;
    bool changed = false;
    for (const auto& [open, close] : groups) {
      int min = 0, max = 0;
      size_t after = close + 1;
      if (after >= re->size() || (*re)[after] != '{') continue;
      size_t end = re->find('}', after);
      if (end == std::string::npos) continue;
      std::string bounds = re->substr(after + 1, end - after - 1);
      std::vector<std::string> parts = absl::StrSplit(bounds, ',');
      if (parts.size() == 1) {
        if (!absl::SimpleAtoi(parts[0], &min)) continue;
        max = min;
      } else if (parts.size() == 2) {
        if (!absl::SimpleAtoi(parts[0], &min) || !absl::SimpleAtoi(parts[1], &max)) continue;
      } else {
        continue;
      }
      if (max < 2 || max > kMaxUnrollCopies || min > max) continue;
      std::string group = re->substr(open, close - open + 1);
      if (absl::StrContains(group, "(?P<")) continue;
      bool lazy = end + 1 < re->size() && (*re)[end + 1] == '?';
      std::string copies;
      for (int i = 0; i < min; ++i) copies += group;
      for (int i = min; i < max; ++i) absl::StrAppend(&copies, group, lazy ? "??" : "?");
      if (re->size() + copies.size() > kMaxRewrittenSize) return any;
      re->replace(open, end + (lazy ? 2 : 1) - open, copies);
      notes->push_back(absl::StrCat("{", bounds, "} unrolled"));
      changed = any = true;
      break;
    }
    if (!changed) break;
  }
  return any;
}

// `\s*` / `\s+` (and ` *` / ` +`) outside classes, before the key group `(?P<ip>` or at the very
// end of the pattern (only `)`s and `$`/`\z` after them), become at most kMaxBlanks blanks, each
// an optional piece of its own (`\s\s?\s?...`): stricter (a longer run of blanks no longer
// matches). Before the key, a run of blanks cannot hold an address nor the text that introduces
// one; what else precedes the key is still checked as it is. At the end, blanks cannot hold
// another address after the key. A run between the key and other tail pieces is left alone:
// bounded copies of a blank could re-cross a one-space introducer that the check only sees
// re-crossed by a repetition (sshd's "user x 6.6.6.6 on <real> port 22 [preauth]").
constexpr int kMaxBlanks = 16;
// With `everywhere` (Tighten::drop_free_branches only), runs after the key are bounded too: the
// loader's automaton search (AnalyzeKeyPlacement) now sees bounded copies re-cross an
// introducer, so the check, not this function, decides whether the result is safe.
int BoundBlankRuns(std::string* re, bool everywhere = false) {
  std::vector<std::pair<size_t, size_t>> runs;  // [begin, end) of `\s*`, `\s+`, ` *`, ` +`
  auto quantified = [&](size_t atom_end) -> size_t {
    if (atom_end >= re->size() || ((*re)[atom_end] != '*' && (*re)[atom_end] != '+')) return 0;
    size_t end = atom_end + 1;
    if (end < re->size() && (*re)[end] == '?') ++end;  // lazy: the same language
    return end;
  };
  WalkOutsideClasses(
      *re,
      [&](size_t i) {
        if (i + 1 < re->size() && (*re)[i + 1] == 's') {
          if (size_t end = quantified(i + 2)) runs.emplace_back(i, end);
        }
        return true;
      },
      [&](size_t i) {
        if ((*re)[i] == ' ') {
          if (size_t end = quantified(i + 1)) runs.emplace_back(i, end);
        }
        return true;
      });
  const size_t key = re->find("(?P<ip>");
  auto at_end = [&](size_t end) {
    while (end < re->size() && (*re)[end] == ')') ++end;
    absl::string_view rest = absl::string_view(*re).substr(end);
    return rest == "$" || rest == "\\z";
  };
  runs.erase(std::remove_if(runs.begin(), runs.end(),
                            [&](const std::pair<size_t, size_t>& r) {
                              return !everywhere &&
                                     !(key != std::string::npos && r.second <= key) &&
                                     !at_end(r.second);
                            }),
             runs.end());
  for (auto it = runs.rbegin(); it != runs.rend(); ++it) {
    const bool space = (*re)[it->first] == ' ';
    const std::string atom = space ? " " : "\\s";
    const bool plus = (*re)[it->first + atom.size()] == '+';
    std::string bounded = plus ? atom : "";
    for (int k = plus ? 1 : 0; k < kMaxBlanks; ++k) absl::StrAppend(&bounded, atom, "?");
    re->replace(it->first, it->second - it->first, absl::StrCat("(?:", bounded, ")"));
  }
  return static_cast<int>(runs.size());
}

// Removes the innermost optional group (`(...)?`, `(?:...)?`, lazy or not) that holds
// re[pos, pos + len) and ends before the key group: what stays matches a subset of the lines
// (those without that part). False when there is no such group.
bool DropOptionalGroupAround(std::string* re, size_t pos, size_t len) {
  const size_t key = re->find("(?P<ip>");
  std::vector<std::pair<size_t, size_t>> groups;
  if (key == std::string::npos || pos >= key || !ScanGroups(*re, &groups)) return false;
  for (const auto& [open, close] : groups) {  // innermost first
    if (open > pos || close < pos + len - 1 || close >= key) continue;
    if (close + 1 >= re->size() || (*re)[close + 1] != '?') continue;
    if (re->compare(open, 3, "(?P") == 0 && re->compare(open, 4, "(?P<") != 0) continue;
    size_t end = close + 2;
    if (end < re->size() && (*re)[end] == '?') ++end;  // lazy
    re->erase(open, end - open);
    return true;
  }
  return false;
}

// Removes the alternative that holds re[pos] from the innermost alternation around it (not a
// group that starts at `pos`: the construct itself): what stays matches a subset of the lines
// (postfix's ddos prefix `(?:...|lost connection after(?! DATA) [A-Z]+|disconnect(?= ...)|...)`
// loses those two branches). False when no alternation holds it.
bool DropBranchAround(std::string* re, size_t pos) {
  std::vector<std::pair<size_t, size_t>> groups;
  if (!ScanGroups(*re, &groups)) return false;
  for (const auto& [open, close] : groups) {  // innermost first
    if (open >= pos || close <= pos) continue;
    size_t body = open + 1;
    if (re->compare(open, 3, "(?:") == 0) {
      body = open + 3;
    } else if (re->compare(open, 4, "(?P<") == 0) {
      body = re->find('>', open) + 1;
    } else if (re->compare(open, 2, "(?") == 0) {
      continue;  // a look-around or a flag group holding it: look further out
    }
    std::vector<std::string> branches =
        TopLevelAlternatives(absl::string_view(*re).substr(body, close - body));
    if (branches.size() < 2) continue;
    size_t at = body;
    std::vector<std::string> kept;
    for (const std::string& b : branches) {
      if (!(pos >= at && pos < at + b.size())) kept.push_back(b);
      at += b.size() + 1;
    }
    if (kept.size() != branches.size() - 1) return false;
    re->replace(body, close - body, absl::StrJoin(kept, "|"));
    return true;
  }
  return false;
}

// Leaves out, one at a time, the optional group around what stops the regex: a Python-only
// construct, else the field before the key that AnalyzeKeyPlacement names (fail2ban's sshd
// `(?: authenticating user <F-USER>...)? <HOST>`, named-refused's `(?:(?!error|info)[\w-]+: )?`),
// until the regex is clean and its key safe. Returns how many groups it left out; 0 (and `re`
// unchanged) when that does not get there.
int DropOptionalFieldsBeforeKey(std::string* re, int* branches = nullptr) {
  std::string out = *re;
  if (branches != nullptr) *branches = 0;
  for (int n = 0; n < 8; ++n) {
    size_t at = 0, len = 3;
    if (PythonOnlyConstruct(out, &at).empty()) {
      absl::StatusOr<KeyPlacement> placement = AnalyzeKeyPlacement(out, "ip");
      if (!placement.ok()) return 0;
      if (placement->safe()) {
        if (n > 0) *re = std::move(out);
        return n;
      }
      absl::string_view field = placement->field;
      if (!absl::ConsumePrefix(&field, "`") || !absl::ConsumeSuffix(&field, "`")) return 0;
      at = out.find(std::string(field));
      len = field.size();
      if (at == std::string::npos) return 0;
    }
    if (DropOptionalGroupAround(&out, at, len)) continue;
    if (!DropBranchAround(&out, at)) return 0;
    if (branches != nullptr) ++*branches;
  }
  return 0;
}

// The rewrites tried when a regex would be refused for its key placement (see the header).
std::string RewriteForKeyPlacement(std::string re, std::vector<std::string>* notes) {
  static const LazyRE2 kNotContainingToEnd = {
      "\\(\\?:\\(\\?:\\(\\?![^()]*\\)\\.\\)[*+]\\??\\)\\$|\\(\\?:\\(\\?![^()]*\\)\\.\\)[*+]\\??\\$"};
  if (RE2::GlobalReplace(&re, *kNotContainingToEnd, "$") > 0) {
    notes->push_back("(?:(?!X).)*$ -> $");
  }
  RewriteConditionals(&re, notes);
  static const LazyRE2 kAnyButWhere = {"\\(\\?:\\(\\?![^()]*\\)\\.\\)"};
  if (RE2::GlobalReplace(&re, *kAnyButWhere, "(?:.)") > 0) notes->push_back("(?:(?!X).) -> .");
  UnrollBoundedRepeats(&re, notes);
  if (BoundBlankRuns(&re) > 0) {
    notes->push_back(absl::StrCat("\\s* / \\s+ -> at most ", kMaxBlanks,
                                  " blanks (stricter; a blank run cannot hold a key)"));
  }
  return re;
}

// `(?P<name>X)` ... `(?P=name)`: the back-reference becomes `(?:X)` (looser: the two need not
// be the same text; sendmail-reject's `(?P=email)`, openwebmail's `(?P=USER)`, stunnel's
// `(?P=CODE)`). Not when X holds a named group (the address's among them). The regex still
// goes through the loader's key check. Returns how many it inlined.
int InlineBackReferences(std::string* re) {
  static const LazyRE2 kRef = {"\\(\\?P=(\\w+)\\)"};
  int n = 0;
  std::string name;
  for (int round = 0; round < 8 && RE2::PartialMatch(*re, *kRef, &name); ++round) {
    const size_t open = re->find(absl::StrCat("(?P<", name, ">"));
    std::vector<std::pair<size_t, size_t>> groups;
    if (open == std::string::npos || !ScanGroups(*re, &groups)) break;
    size_t close = std::string::npos;
    for (const auto& [o, c] : groups) {
      if (o == open) close = c;
    }
    if (close == std::string::npos) break;
    const size_t body = open + name.size() + 5;
    const std::string x = re->substr(body, close - body);
    if (absl::StrContains(x, "(?P<") || absl::StrContains(x, "(?P=")) break;
    absl::StrReplaceAll({{absl::StrCat("(?P=", name, ")"), absl::StrCat("(?:", x, ")")}}, re);
    ++n;
  }
  return n;
}

// RE2 equivalents of Python syntax; appends what it rewrote to `notes`.
std::string Rewrite(std::string re, std::vector<std::string>* notes) {
  if (int n = InlineBackReferences(&re); n > 0) {
    notes->push_back(absl::StrCat("(?P=name) -> the group's pattern (looser: not the same text; ",
                                  n, " inlined)"));
  }
  if (absl::StrContains(re, "\\Z")) {
    absl::StrReplaceAll({{"\\Z", "\\z"}}, &re);
    notes->push_back("\\Z -> \\z");
  }
  if (int n = DropWordGuardLookaheads(&re); n > 0) {
    notes->push_back("(?:\\w+ (?!W\\b)){m,n}\\w+ W -> (?:\\w+ ){m,n}\\w+ W (the guard only stops a round "
                     "from taking W)");
  }
  // `^.*\n` first (guacamole's date line before the WARNING line; fail2ban's maxlines 2): each
  // line is matched alone here, so the failregex is its last line (the key is there).
  if (absl::StartsWith(re, "^.*\\n") || absl::StartsWith(re, "^.+\\n")) {
    re = absl::StrCat("^", re.substr(strlen("^.*\\n")));
    notes->push_back("^.*\\n (the line before) -> ^ (lines are matched one at a time)");
  }
  static const LazyRE2 kEmptyMin = {"\\{,(\\d+)\\}"};
  if (RE2::GlobalReplace(&re, *kEmptyMin, "{0,\\1}") > 0) notes->push_back("{,n} -> {0,n}");
  return re;
}

// `\[(?:(?:IPv6:)?<IP6>|<IP4>)\]`: an alternation whose every branch is some text then one
// address tag becomes `(?:(?:IPv6:)?|)<HOST>`, one address group (RE2 refuses a name used
// twice). Returns false when the tags are not in such an alternation.
bool MergeAddressAlternatives(std::string* re, std::vector<std::string>* notes) {
  static const LazyRE2 kTag = {"<(?:HOST|ADDR|IP4|IP6)>"};
  std::vector<std::pair<size_t, size_t>> groups;
  if (!ScanGroups(*re, &groups)) return false;
  for (const auto& [open, close] : groups) {  // innermost first
    std::string group = re->substr(open, close - open + 1);
    if (!absl::StartsWith(group, "(?:")) continue;
    std::vector<std::string> branches =
        TopLevelAlternatives(absl::string_view(group).substr(3, group.size() - 4));
    if (branches.size() < 2) continue;
    std::vector<std::string> prefixes;
    for (const std::string& b : branches) {
      re2::StringPiece tag;
      if (!RE2::PartialMatch(b, "(" + kTag->pattern() + ")$", &tag)) break;
      std::string prefix = b.substr(0, b.size() - tag.size());
      if (RE2::PartialMatch(prefix, *kTag)) break;
      prefixes.push_back(prefix);
    }
    if (prefixes.size() != branches.size()) continue;
    // With a bare branch, keep only it: text before the key stops the loader's check from seeing
    // what introduces the key (`\[`), and it would then refuse any repetition after it.
    bool bare = std::find(prefixes.begin(), prefixes.end(), "") != prefixes.end();
    re->replace(open, close - open + 1,
                bare ? std::string("<HOST>")
                     : absl::StrCat("(?:", absl::StrJoin(prefixes, "|"), ")<HOST>"));
    std::vector<std::string> forms;
    for (const std::string& p : prefixes) {
      if (!p.empty()) forms.push_back(p);
    }
    notes->push_back(bare ? absl::StrCat(group, " -> <HOST> (stricter: no ",
                                         absl::StrJoin(forms, ", "), " form)")
                          : absl::StrCat(group, " -> one address group"));
    return true;
  }
  return false;
}

// `(?:\w+ (?!W\b)){m,n}\w+ W` (sshd's __alg_match before " found"): the look-ahead only stops a
// round of the repetition from taking the word the regex requires next. Dropped, the regex
// matches the same server lines; it is looser only on a line where W occurs twice in the run of
// words ("no matching a found b found:"), and holds no key. Returns how many it dropped.
int DropWordGuardLookaheads(std::string* re) {
  static const LazyRE2 kGuard = {"\\(\\?:\\\\w\\+ \\(\\?!(\\w+)(?:\\\\b)?\\)\\)"};
  int n = 0;
  std::string word;
  for (int round = 0; round < 8; ++round) {
    re2::StringPiece whole;
    if (!RE2::PartialMatch(*re, "(" + kGuard->pattern() + ")", &whole, &word)) break;
    const size_t at = whole.data() - re->data();
    // Only when the regex goes on to require the word itself after a last `\w+`.
    if (re->find(absl::StrCat("\\w+ ", word), at + whole.size()) == std::string::npos &&
        re->find(absl::StrCat("\\w+) ", word), at + whole.size()) == std::string::npos) {
      break;
    }
    re->replace(at, whole.size(), "(?:\\w+ )");
    ++n;
  }
  return n;
}

// A negative look-ahead outside every group, `A(?!X)B` (postfix's `authentication
// failed:(?! Connection lost ...)`, apache-auth's ``user (?!`)``, traefik's `(?!- )`): the
// failregex becomes `AB` and `A(?:X)` an ignore pattern of its rule. Stricter than Python's: a
// line that matches AB at one place and A X at another is skipped too. Returns false (nothing
// changed) when there is none at the top level, or the look-ahead holds a group of its own.
bool SplitTopLevelNegativeLookahead(std::string* re, std::string* ignore) {
  int depth = 0;
  size_t found = std::string::npos;
  WalkOutsideClasses(
      *re, [](size_t) { return true; },
      [&](size_t i) {
        if (depth == 0 && re->compare(i, 3, "(?!") == 0) {
          found = i;
          return false;
        }
        if ((*re)[i] == '(') ++depth;
        if ((*re)[i] == ')') --depth;
        return true;
      });
  if (found == std::string::npos) return false;
  std::vector<std::pair<size_t, size_t>> groups;
  if (!ScanGroups(*re, &groups)) return false;
  size_t close = std::string::npos;
  for (const auto& [open, end] : groups) {
    if (open == found) close = end;
    if (open > found && close == std::string::npos) return false;  // a group inside (?!...)
  }
  if (close == std::string::npos) return false;
  const std::string before = re->substr(0, found);
  const std::string guarded = re->substr(found + 3, close - found - 3);
  *ignore = absl::StrCat(before, "(?:", guarded, ")");
  re->erase(found, close - found + 1);
  return true;
}

// The session role of one regex, from its tags.
struct Role {
  bool note_only = false;  // <F-NOFAIL>, <F-MLFGAINED>
  bool ends = false;       // <F-MLFFORGET>
  bool gained = false;     // <F-MLFGAINED>: a success, which drops the pending failures
};

// Turns fail2ban tags into RE2 groups and reads the session role; a non-empty return is the
// reason to refuse.
std::string ConvertTags(std::string* re, Role* role, std::vector<std::string>* notes) {
  if (absl::StrContains(*re, "<F-ID>")) {
    return "<F-ID> keys on a failure id, not an address: Palisade's fail2ban rules key addresses";
  }
  if (absl::StrContains(*re, "<DNS>")) return "<DNS>: host names are not keys, only addresses";
  if (absl::StrContains(*re, "<SKIPLINES>")) {
    return "<SKIPLINES>: multi-line buffers (maxlines) are not supported";
  }
  role->note_only = absl::StrContains(*re, "<F-NOFAIL>") || absl::StrContains(*re, "<F-MLFGAINED>");
  role->ends = absl::StrContains(*re, "<F-MLFFORGET>");
  role->gained = absl::StrContains(*re, "<F-MLFGAINED>");
  absl::StrReplaceAll({{"<F-NOFAIL>", "(?:"},
                       {"</F-NOFAIL>", ")"},
                       {"<F-MLFFORGET>", "(?:"},
                       {"</F-MLFFORGET>", ")"},
                       {"<F-MLFGAINED>", "(?:"},
                       {"</F-MLFGAINED>", ")"}},
                      re);
  static const LazyRE2 kTwoTags = {"<(?:HOST|ADDR|IP4|IP6)>.*<(?:HOST|ADDR|IP4|IP6)>"};
  if (RE2::PartialMatch(*re, *kTwoTags) && !MergeAddressAlternatives(re, notes)) {
    return "more than one address tag: which one is the key is ambiguous";
  }
  int hosts = 0;
  for (const auto& [tag, group] : {std::pair<const char*, const char*>{"<HOST>", kIpGroup},
                                   {"<ADDR>", kIpGroup},
                                   {"<IP4>", kIp4Group},
                                   {"<IP6>", kIp6Group}}) {
    for (size_t at; (at = re->find(tag)) != std::string::npos; ++hosts) {
      re->replace(at, strlen(tag), group);
    }
  }
  if (hosts > 1) return "more than one address tag: which one is the key is ambiguous";
  std::string name;
  std::map<std::string, int> seen;
  static const LazyRE2 kOpen = {"<F-([A-Za-z0-9_]+)>"};
  while (RE2::PartialMatch(*re, *kOpen, &name)) {
    std::string lower = absl::AsciiStrToLower(name);
    if (lower == "ip") return "<F-IP> would clash with the address group";
    // RE2 refuses a name used twice (fail2ban's alternatives often repeat <F-USER>).
    int n = ++seen[lower];
    std::string group = n == 1 ? lower : absl::StrCat(lower, n);
    std::string open = absl::StrCat("<F-", name, ">");
    std::string close = absl::StrCat("</F-", name, ">");
    size_t at = re->find(open);
    re->replace(at, open.size(), absl::StrCat("(?P<", group, ">"));
    size_t end = re->find(close, at);
    if (end == std::string::npos) return absl::StrCat("<F-", name, "> is not closed");
    re->replace(end, close.size(), ")");
  }
  if (absl::StrContains(*re, "</F-")) return "an </F-...> tag without its opening tag";
  return "";
}

// Splits prefregex around <F-CONTENT>...</F-CONTENT>: the failregex goes in between.
struct Prefix {
  std::string before;
  std::string after;
  // `<F-CONTENT>.+</F-CONTENT>$`: the content runs to the end of the line, the failregex need
  // not (fail2ban searches it in the content). When the loader's check refuses the failregex
  // as it is, the importer tries it pinned to the end (stricter).
  bool content_to_end = false;
};

absl::StatusOr<Prefix> SplitPrefregex(std::string pref) {
  Prefix p;
  if (pref.empty()) return p;
  size_t open = pref.find("<F-CONTENT>");
  size_t close = pref.find("</F-CONTENT>");
  if (open == std::string::npos || close == std::string::npos || close < open) {
    return absl::InvalidArgumentError("prefregex has no <F-CONTENT>...</F-CONTENT>");
  }
  p.before = pref.substr(0, open);
  p.after = pref.substr(close + strlen("</F-CONTENT>"));
  // `<F-CONTENT>.+</F-CONTENT>$`: fail2ban searches the failregex in the content, which runs to
  // the end of the line; the failregex itself need not reach it.
  if (p.after == "$" && pref.compare(open, close - open, "<F-CONTENT>.+") == 0) {
    p.after.clear();
    p.content_to_end = true;
  }
  // `<F-CONTENT>\[(?:Login denied|...).*</F-CONTENT>$` (zoneminder): the content's own pattern
  // ends with "anything", so the failregex need not reach the end either.
  const std::string content = pref.substr(open + strlen("<F-CONTENT>"),
                                          close - open - strlen("<F-CONTENT>"));
  if (p.after == "$" && (absl::EndsWith(content, ".*") || absl::EndsWith(content, ".+")) &&
      !absl::EndsWith(content, "\\.*") && !absl::EndsWith(content, "\\.+")) {
    p.after.clear();
    p.content_to_end = true;
  }
  return p;
}

// nginx's error-log header as fail2ban's nginx filters write it after the date; the
// LOG_FORMAT_NGINX_ERROR message starts after it.
const LazyRE2 kNginxHeader = {
    "^\\^(?:\\\\s\\*| )?\\\\\\[(?:error|\\[a-z\\]\\+|[a-z]+)\\\\\\] \\\\d\\+#\\\\d\\+: "
    "\\\\\\*\\\\d\\+ "};

struct Converted {
  RegexReport report;
  Role role;
};

// The kind of the ignore pattern `A(?:X)` split from a failregex `A(?!X)B`.
constexpr char kLookaheadIgnore[] = "ignoreregex (a failregex's look-ahead)";

// Stricter forms of the text after the key, tried (with a pinned end) only when a regex would
// be refused for its key placement; each keeps fail2ban's intent for the lines the server
// writes and is kept only when the loader's unchanged check passes.
struct Tighten {
  // Every free piece after the key (`.`, `\S`, `\W`, a negated class) no longer takes this
  // byte, the punctuation that introduces the address (`[` in `\[<HOST>\]`): the tail then
  // cannot hold a second "[address" (postfix's `<[^>]*>` recipient becomes `<[^>\[]*>`). A line
  // whose later, client-written fields hold that byte is missed, never mis-keyed.
  char exclude = 0;
  // An alternation after the key with a branch holding a free field and one without: only the
  // branches without remain (sshd's `(?: (?:port \d+|on \S+)){0,2}` -> `(?: (?:port \d+)){0,2}`:
  // a user name "x <victim> on" can no longer make " on <real address>" the tail).
  bool drop_free_branches = false;
  bool any() const { return exclude != 0 || drop_free_branches; }
};

Converted ConvertFolded(const ValueLine& line, const std::string& kind, const Prefix& prefix,
                        palisade::v1::LogFormat format, bool session,
                        const std::string& leading_date, const Tighten& tighten = {});

// The offset just after the key group `(?P<ip>...)`; npos when there is none.
size_t AfterKeyGroup(const std::string& re) {
  const size_t key = re.find("(?P<ip>");
  if (key == std::string::npos) return std::string::npos;
  std::vector<std::pair<size_t, size_t>> groups;
  if (!ScanGroups(re, &groups)) return std::string::npos;
  for (const auto& [open, close] : groups) {
    if (open == key) return close + 1;
  }
  return std::string::npos;
}

// `c` as an RE2 atom inside a class: punctuation escaped.
std::string ClassByte(char c) {
  return absl::ascii_isalnum(c) ? std::string(1, c) : absl::StrCat("\\", std::string(1, c));
}

// Tighten::exclude: after the key group, `.` -> `[^c]`, `\S` -> `[^\sc]`, `\W` -> `[^\wc]`,
// `[^...]` -> `[^...c]` (outside classes; other classes and escapes stay). Returns how many
// pieces changed.
int ExcludeAfterKey(std::string* re, char c) {
  const size_t start = AfterKeyGroup(*re);
  if (start == std::string::npos) return 0;
  const std::string b = ClassByte(c);
  std::string out = re->substr(0, start);
  int n = 0;
  for (size_t i = start; i < re->size();) {
    const char ch = (*re)[i];
    if (ch == '\\' && i + 1 < re->size()) {
      const char e = (*re)[i + 1];
      if (e == 'S' || e == 'W') {
        absl::StrAppend(&out, "[^", e == 'S' ? "\\s" : "\\w", b, "]");
        ++n;
      } else {
        out.append(*re, i, 2);
      }
      i += 2;
      continue;
    }
    if (ch == '[') {
      size_t j = i + 1;
      const bool negated = j < re->size() && (*re)[j] == '^';
      if (negated) ++j;
      if (j < re->size() && (*re)[j] == ']') ++j;  // a literal ] first
      while (j < re->size() && (*re)[j] != ']') j += (*re)[j] == '\\' ? 2 : 1;
      if (j >= re->size()) return 0;  // unbalanced: leave the regex alone
      if (negated) {
        absl::StrAppend(&out, re->substr(i, j - i), b, "]");
        ++n;
      } else {
        out.append(*re, i, j - i + 1);
      }
      i = j + 1;
      continue;
    }
    if (ch == '.') {
      absl::StrAppend(&out, "[^", b, "]");
      ++n;
      ++i;
      continue;
    }
    out += ch;
    ++i;
  }
  *re = std::move(out);
  return n;
}

// Whether `piece` (regex text) holds a free field: `.`, `\S`, `\W` or a negated class.
bool HoldsFreeField(absl::string_view piece) {
  bool free = false;
  bool in_class = false;
  for (size_t i = 0; i < piece.size() && !free; ++i) {
    const char c = piece[i];
    if (c == '\\') {
      if (!in_class && i + 1 < piece.size() && (piece[i + 1] == 'S' || piece[i + 1] == 'W')) {
        free = true;
      }
      ++i;
    } else if (in_class) {
      in_class = c != ']';
    } else if (c == '[') {
      in_class = true;
      if (i + 1 < piece.size() && piece[i + 1] == '^') free = true;
      if (i + 1 < piece.size() && piece[i + 1] == '^') ++i;
      if (i + 1 < piece.size() && piece[i + 1] == ']') ++i;
    } else if (c == '.') {
      free = true;
    }
  }
  return free;
}

// Tighten::drop_free_branches. Returns how many branches went.
int DropFreeBranchesAfterKey(std::string* re) {
  int dropped = 0;
  for (int round = 0; round < 16; ++round) {
    const size_t start = AfterKeyGroup(*re);
    std::vector<std::pair<size_t, size_t>> groups;
    if (start == std::string::npos || !ScanGroups(*re, &groups)) return dropped;
    bool changed = false;
    for (const auto& [open, close] : groups) {  // innermost first
      if (open < start) continue;
      size_t body = open + 1;
      if (re->compare(open, 3, "(?:") == 0) {
        body = open + 3;
      } else if (re->compare(open, 4, "(?P<") == 0) {
        body = re->find('>', open) + 1;
      } else if (re->compare(open, 2, "(?") == 0) {
        continue;
      }
      std::vector<std::string> branches =
          TopLevelAlternatives(absl::string_view(*re).substr(body, close - body));
      if (branches.size() < 2) continue;
      std::vector<std::string> kept;
      for (const std::string& br : branches) {
        if (!HoldsFreeField(br)) kept.push_back(br);
      }
      if (kept.empty() || kept.size() == branches.size()) continue;
      dropped += static_cast<int>(branches.size() - kept.size());
      re->replace(body, close - body, absl::StrJoin(kept, "|"));
      changed = true;
      break;
    }
    if (!changed) break;
  }
  return dropped;
}

// The punctuation character closest before the address tag in the literal text that introduces
// it (`\[` in `\[<HOST>\]`, `=` in `rip=<HOST>`); 0 when that text has none.
char IntroducerPunctuation(absl::string_view text) {
  static const LazyRE2 kTag = {"<(?:HOST|ADDR|IP4|IP6)>"};
  std::string merged(text);
  std::vector<std::string> ignored;
  MergeAddressAlternatives(&merged, &ignored);  // as ConvertTags will
  static const LazyRE2 kFieldTag = {"</?F-[A-Za-z0-9_]+>"};
  RE2::GlobalReplace(&merged, *kFieldTag, "");  // tags are no text of the line
  absl::string_view re = merged;
  re2::StringPiece tag;
  if (!RE2::PartialMatch(re2::StringPiece(re.data(), re.size()), "(" + kTag->pattern() + ")",
                         &tag)) {
    return 0;
  }
  size_t i = tag.data() - re.data();
  while (i > 0) {
    char c = re[i - 1];
    bool escaped = i >= 2 && re[i - 2] == '\\' && !(i >= 3 && re[i - 3] == '\\');
    if (escaped) {
      if (absl::ascii_isalnum(c)) return 0;  // \d, \s, ...: a class, not text
      return c;
    }
    if (strchr("()[]{}|*+?.^$", c) != nullptr) return 0;
    if (absl::ascii_ispunct(c)) return c;
    --i;
  }
  return 0;
}

Converted ConvertOne(const ValueLine& line, const std::string& kind, const Prefix& prefix,
                     palisade::v1::LogFormat format, bool session,
                     const std::string& leading_date) {
  Converted c = ConvertFolded(line, kind, prefix, format, session, leading_date);
  // (Also for Python-only syntax: once its alternative is left out, what stays may need the
  // pinned end. And when the regex converted only without an optional field before the key,
  // e.g. sshd's ` authenticating user <F-USER>...`: a pinned, tightened variant that keeps
  // the field matches the lines that have it, and is preferred.)
  constexpr char kFieldLeftOut[] = " before the address (stricter";
  const bool field_left_out = c.report.outcome != RegexOutcome::kRefused &&
                              absl::StrContains(c.report.reason, kFieldLeftOut);
  if (kind != "failregex") return c;  // an ignore pattern pinned would ignore fewer lines
  if (!field_left_out &&
      (c.report.outcome != RegexOutcome::kRefused ||
       (!absl::StrContains(c.report.reason, "client could choose") &&
        !absl::StrContains(c.report.reason, "has no RE2 equivalent")))) {
    return c;
  }
  // Stricter variants that pin the address to the server's tail, tried in turn (both pass or
  // fail the loader's check alike; the first matches more lines):
  //  1. the rest of the line holds no copy of the punctuation that introduces the address
  //     (`[^\[]*$` after `\[<HOST>\]`): the address is then the last one so introduced, the
  //     one in the server's tail; a line whose later (client) text has one is missed, not
  //     mis-keyed;
  //  2. the failregex reaches the end of the line (fail2ban lets any text follow it).
  std::vector<std::pair<std::string, std::string>> tails;
  if (char p = IntroducerPunctuation(line.text); p != 0) {
    std::string cls = absl::StrCat("[^", p == ']' || p == '\\' || p == '^' || p == '-' ? "\\" : "",
                                   std::string(1, p), "]*$");
    tails.emplace_back(cls, absl::StrCat("pinned by ", cls, " (stricter: the rest of the line has "
                                         "no '", std::string(1, p), "', so the address is the "
                                         "server's last one)"));
  }
  tails.emplace_back("$", "pinned to the end of the line (stricter: fail2ban lets text follow)");
  //  3. then the same two with the fields after the address tightened (Tighten): first without
  //     its introducing punctuation, then also without the alternatives that hold a free field.
  std::vector<Tighten> tightenings = {Tighten{}};
  const char p = IntroducerPunctuation(line.text);
  if (p != 0) tightenings.push_back(Tighten{p, false});
  tightenings.push_back(Tighten{p, true});
  for (const Tighten& tighten : tightenings) {
    for (const auto& [tail, why] : tails) {
      ValueLine pinned_line = line;
      absl::string_view text = line.text;
      bool anchored = absl::ConsumePrefix(&text, "^");
      pinned_line.text = absl::StrCat(anchored ? "^" : "", "(?:", text, ")", tail);
      Prefix pinned = prefix;
      if (prefix.content_to_end) pinned.content_to_end = false;
      Converted strict =
          ConvertFolded(pinned_line, kind, pinned, format, session, leading_date, tighten);
      if (strict.report.outcome == RegexOutcome::kRefused) continue;
      if (field_left_out && absl::StrContains(strict.report.reason, kFieldLeftOut)) continue;
      strict.report.original = c.report.original;
      strict.report.outcome = RegexOutcome::kRewritten;
      strict.report.reason =
          absl::StrCat(why, strict.report.reason.empty() ? "" : ", ", strict.report.reason);
      return strict;
    }
  }
  return c;
}

Converted ConvertFolded(const ValueLine& line, const std::string& kind, const Prefix& prefix,
                        palisade::v1::LogFormat format, bool session,
                        const std::string& leading_date, const Tighten& tighten) {
  Converted c;
  RegexReport& r = c.report;
  r.kind = kind;
  r.file = line.file;
  r.line = line.line;
  // __prefix_line becomes nothing: the syslog parser strips it (and `prefix` is already clean).
  r.original = absl::StrReplaceAll(line.text, {{kPrefixMarker, ""}, {kApacheClientMarker, ""}});
  auto refuse = [&](std::string reason) {
    r.outcome = RegexOutcome::kRefused;
    r.reason = std::move(reason);
    return c;
  };
  std::string re = absl::StrReplaceAll(line.text, {{kPrefixMarker, ""}});
  if (!prefix.before.empty() || !prefix.after.empty()) {
    // The failregex matches the content: its ^ is the content's start.
    absl::string_view b = re;
    std::string content =
        absl::ConsumePrefix(&b, "^") ? std::string(b) : absl::StrCat("(?:.*?)", b);
    re = absl::StrCat(prefix.before, "(?:", content, ")", prefix.after);
  }
  std::vector<std::string> rewrites;
  for (const std::string& fact : line.server_facts) {
    rewrites.push_back(absl::StrCat("server fact (reviewed table): ", fact));
  }
  // An ignoreregex without the error log's header, not anchored: fail2ban searches the line
  // for it; here the message (the header before it is not searched).
  const bool unanchored_ignore = kind == "ignoreregex" && !absl::StartsWith(re, "^");
  constexpr char kSearchedInMessage[] =
      "no error-log header: searched in the message (fail2ban searches the whole line)";
  if (format == palisade::v1::LOG_FORMAT_APACHE_ERROR) {
    // The message starts at "[client": what precedes the marker is the log's own header.
    size_t at = re.find(kApacheClientMarker);
    if (at != std::string::npos) {
      re = absl::StrCat("^", re.substr(at + 1));
      rewrites.push_back("apache error header -> LOG_FORMAT_APACHE_ERROR");
    } else if (unanchored_ignore) {
      rewrites.push_back(kSearchedInMessage);
    } else {
      return refuse("an apache error-log filter regex without [client <HOST>]");
    }
  } else if (format == palisade::v1::LOG_FORMAT_NGINX_ERROR) {
    if (RE2::Replace(&re, *kNginxHeader, "^")) {
      rewrites.push_back("nginx error header -> LOG_FORMAT_NGINX_ERROR");
    } else if (unanchored_ignore) {
      rewrites.push_back(kSearchedInMessage);
    } else {
      return refuse("an nginx error-log filter regex that does not start with its header");
    }
  }
  if (std::string why = ConvertTags(&re, &c.role, &rewrites); !why.empty()) return refuse(why);
  if (c.role.note_only && !session) {
    return refuse("<F-NOFAIL>/<F-MLFGAINED> outside a session: the line never counts");
  }
  re = Rewrite(std::move(re), &rewrites);
  if (format == palisade::v1::LOG_FORMAT_RAW && absl::StartsWith(re, "^")) {
    re = absl::StrCat("^", leading_date, re.substr(1));
  }
  if (format == palisade::v1::LOG_FORMAT_RAW && absl::StrContains(re, "\\[\\]")) {
    // `\[\]`: where fail2ban cut the date out of the middle of the line; our line keeps it.
    absl::StrReplaceAll({{"\\[\\]", absl::StrCat("\\[", kBracketDateShapes, "\\]")}}, &re);
    rewrites.push_back("\\[\\] (the date fail2ban cut) -> \\[date\\]");
  }
  if (format == palisade::v1::LOG_FORMAT_SYSLOG && absl::StartsWith(re, "^")) {
    // common.conf's __prefix_line ends with an optional `[ID 800047 auth.info] ` (Solaris'
    // syslog message id), which the syslog parser leaves in the message: server-written, in
    // fixed-width pieces (no field before the key for the loader's check).
    re = absl::StrCat("^", kSolarisMessageId, re.substr(1));
  }
  if (tighten.drop_free_branches) {
    if (int n = DropFreeBranchesAfterKey(&re); n > 0) {
      rewrites.push_back(absl::StrCat(n, " alternative", n > 1 ? "s" : "",
                                      " after the address holding a free field left out "
                                      "(stricter)"));
    }
    if (BoundBlankRuns(&re, /*everywhere=*/true) > 0) {
      rewrites.push_back(absl::StrCat("blank runs after the address -> at most ", kMaxBlanks,
                                      " blanks (stricter)"));
    }
  }
  if (tighten.exclude != 0) {
    if (ExcludeAfterKey(&re, tighten.exclude) > 0) {
      rewrites.push_back(absl::StrCat("no '", std::string(1, tighten.exclude),
                                      "' in the fields after the address (stricter: the tail "
                                      "cannot hold a second one)"));
    }
  }
  // Python-only syntax first gets the rewrites that have an RE2 equivalent; a regex that still
  // has some is refused.
  auto safe_key = [&](const std::string& candidate, std::string* why) {
    RE2 compiled(candidate, PalisadeRe2Options());
    if (!compiled.ok()) {
      *why = absl::StrCat("RE2 refuses it: ", compiled.error());
      return false;
    }
    if (kind != "failregex") return true;
    if (compiled.NamedCapturingGroups().count("ip") == 0) {
      if (session) return true;  // keyed by what the session noted
      *why = "no address tag (<HOST>/<ADDR>/<IP4>/<IP6>) and no session: nothing to key on";
      return false;
    }
    absl::StatusOr<KeyPlacement> placement = AnalyzeKeyPlacement(candidate, "ip");
    if (!placement.ok()) {
      *why = std::string(placement.status().message());
      return false;
    }
    if (!placement->safe()) {
      *why = absl::StrCat("the address follows ", placement->field,
                          " and nothing pins it to the end: a client could choose the key");
      return false;
    }
    return true;
  };
  std::string why;
  std::string python = PythonOnlyConstruct(re);
  if (!python.empty() || !safe_key(re, &why)) {
    std::vector<std::string> tried = rewrites;
    std::string candidate = RewriteForKeyPlacement(re, &tried);
    std::string still_python = PythonOnlyConstruct(candidate);
    std::string why_after;
    if (kind == kLookaheadIgnore && !still_python.empty()) {
      // The ignore pattern split from a failregex's look-ahead shares the failregex's prefix:
      // the alternatives with Python-only syntax the failregex lost go here too, so it still
      // covers the lines that failregex matches.
      std::string dropped = candidate;
      size_t at = 0;
      int n = 0;
      while (!PythonOnlyConstruct(dropped, &at).empty() && DropBranchAround(&dropped, at)) ++n;
      if (n > 0 && PythonOnlyConstruct(dropped).empty()) {
        tried.push_back(absl::StrCat("without ", n, " alternative", n > 1 ? "s" : "",
                                     " holding Python-only syntax"));
        candidate = std::move(dropped);
        still_python.clear();
      }
    }
    if (kind == "failregex" && (!still_python.empty() || !safe_key(candidate, &why_after))) {
      // Last: without the optional parts before the key that hold a field or a Python-only
      // construct (stricter: lines that have them are not matched).
      std::string dropped = candidate;
      std::string unused;
      int branches = 0;
      if (int n = DropOptionalFieldsBeforeKey(&dropped, &branches);
          n > 0 && PythonOnlyConstruct(dropped).empty() && safe_key(dropped, &unused)) {
        const int groups = n - branches;
        if (groups > 0) {
          tried.push_back(absl::StrCat(
              "without ", groups, " optional field", groups > 1 ? "s" : "",
              " before the address (stricter: lines that have them are not matched)"));
        }
        if (branches > 0) {
          tried.push_back(absl::StrCat(
              "without ", branches, " alternative", branches > 1 ? "s" : "",
              " holding a field or Python-only syntax (stricter: lines that need them are not "
              "matched)"));
        }
        candidate = std::move(dropped);
        still_python.clear();
      }
    }
    if (!still_python.empty()) {
      return refuse(absl::StrCat(still_python, " has no RE2 equivalent (after the rewrites: ",
                                 candidate, ")"));
    }
    if (tried.size() == rewrites.size()) {
      if (!python.empty()) return refuse(absl::StrCat(python, " has no RE2 equivalent"));
      return refuse(why);
    }
    if (!safe_key(candidate, &why_after)) {
      return refuse(absl::StrCat(why_after, " (after the rewrites ",
                                 absl::StrJoin(tried.begin() + rewrites.size(), tried.end(), ", "),
                                 ": ", candidate, ")"));
    }
    re = std::move(candidate);
    rewrites = std::move(tried);
  }
  r.converted = re;
  if (!rewrites.empty()) {
    r.outcome = RegexOutcome::kRewritten;
    r.reason = absl::StrJoin(rewrites, ", ");
  }
  return c;
}

// A regex whose <F-NOFAIL> part is one alternative (`(?:<F-NOFAIL>publickey</F-NOFAIL>|\S+)`):
// fail2ban tries the tagged alternative first, so the line notes (does not count) when the
// regex matches with it. Returns the note-only variant (the other alternatives dropped), or ""
// when the tag does not sit in an alternation.
std::string NofailAlternative(const std::string& re) {
  size_t open = re.find("<F-NOFAIL>");
  size_t close = re.find("</F-NOFAIL>");
  if (open == std::string::npos || close == std::string::npos) return "";
  size_t after = close + strlen("</F-NOFAIL>");
  if (after >= re.size() || re[after] != '|') return "";
  std::vector<std::pair<size_t, size_t>> groups;
  if (!ScanGroups(re, &groups)) return "";
  for (const auto& [g_open, g_close] : groups) {
    if (g_open < open && g_close > after) {
      // The innermost group holding the alternation: keep only the tagged alternative.
      std::string variant = re;
      variant.replace(after, g_close - after, "");
      return variant;
    }
  }
  return "";
}

std::string RuleId(const std::string& filter, const Role& role) {
  std::string id = "f2b-";
  for (char c : absl::AsciiStrToLower(filter)) {
    id += (absl::ascii_isalnum(c) || c == '_' || c == '-') ? c : '-';
  }
  if (role.note_only) id += "-note";
  if (role.ends) id += "-ends";
  if (role.gained) id += "-gained";
  return id;
}

std::string Seconds(absl::Duration d) { return absl::FormatDuration(d); }

}  // namespace

int Fail2banImport::count(RegexOutcome outcome) const {
  int n = 0;
  for (const RegexReport& r : regexes) n += r.outcome == outcome;
  return n;
}

int Fail2banImport::failregexes(RegexOutcome outcome) const {
  int n = 0;
  for (const RegexReport& r : regexes) n += r.kind != "ignoreregex" && r.outcome == outcome;
  return n;
}

absl::StatusOr<Fail2banImport> ConvertFail2banFilter(const std::string& path,
                                                     const Fail2banImportOptions& options) {
  Sections sections;
  ReadBudget budget;
  std::vector<std::string> chain, read_notes;
  RETURN_IF_ERROR(ReadConfig(path, "", 0, &chain, &budget, &sections, &read_notes));
  // fail2ban reads name.local after name.conf.
  if (absl::EndsWith(path, ".conf")) {
    RETURN_IF_ERROR(ReadConfig(absl::StrCat(path.substr(0, path.size() - 5), ".local"), "", 0,
                               &chain, &budget, &sections, &read_notes));
  }
  std::map<std::string, std::string> params = options.params;
  // common.conf's __prefix_line is what the syslog parser strips; a filter that extends it
  // (`__prefix_line = %(known/__prefix_line)s(?:\w{14,20}: )?`, sendmail) keeps its extension.
  // (Written in [Definition], as sendmail's filters do, or in [DEFAULT].)
  const std::vector<ValueLine>* own_prefix = nullptr;
  for (const char* name : {"Definition", "DEFAULT"}) {
    const auto& section = sections[name];
    auto it = section.find("__prefix_line");
    if (it != section.end() && !it->second.empty()) {
      own_prefix = &it->second;
      break;
    }
  }
  if (own_prefix != nullptr && BaseName(own_prefix->front().file) != "common.conf" &&
      absl::StrContains(own_prefix->front().text, "known/__prefix_line")) {
    params["known/__prefix_line"] = kPrefixMarker;
  } else {
    params["__prefix_line"] = kPrefixMarker;
  }
  params["_apache_error_client"] = kApacheClient;
  Interpolator interp(sections, params);

  Fail2banImport out;
  out.filter = BaseName(path);
  if (absl::EndsWith(out.filter, ".conf")) out.filter.resize(out.filter.size() - 5);
  out.ignoreip = options.ignoreip;
  out.notes = options.jail_notes;
  out.notes.insert(out.notes.end(), read_notes.begin(), read_notes.end());
  if (!options.jail_filter.empty() && options.jail_filter != out.filter) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.jail_filter_where, ": the jail's filter is ", options.jail_filter, ", not ",
        out.filter, " (", path, "): its thresholds and params are for that filter"));
  }

  auto scalar = [&](const char* name) -> absl::StatusOr<std::string> {
    const std::vector<ValueLine>* v = interp.Find(name);
    if (v == nullptr || v->empty()) return std::string();
    absl::StatusOr<std::string> s = interp.Expand(v->front().text);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(v->front().file, ":", v->front().line, ": ",
                                                     s.status().message()));
    }
    return *s;
  };
  ASSIGN_OR_RETURN(std::string pref, scalar("prefregex"));
  ASSIGN_OR_RETURN(out.datepattern, scalar("datepattern"));
  ASSIGN_OR_RETURN(std::string maxlines, scalar("maxlines"));
  if (!maxlines.empty() && !absl::SimpleAtoi(maxlines, &out.maxlines)) {
    const std::vector<ValueLine>* v = interp.Find("maxlines");
    return absl::InvalidArgumentError(absl::StrCat(v->front().file, ":", v->front().line,
                                                   ": maxlines '", maxlines, "' is not a number"));
  }
  if (out.maxlines > 1) {
    out.notes.push_back(absl::StrCat(
        "maxlines ", out.maxlines,
        ": multi-line buffers are not supported; each line matches alone (regexes joining lines "
        "with \\n or <SKIPLINES> are refused)"));
  }
  // A session filter: prefregex wraps the syslog prefix (program[pid]) in <F-MLFID>.
  static const LazyRE2 kMlfid = {"<F-MLFID>(.*?)</F-MLFID>"};
  std::string mlfid;
  if (RE2::PartialMatch(pref, *kMlfid, &mlfid)) {
    // sendmail's `__prefix_line = %(known/__prefix_line)s(?:\w{14,20}: )?`: what the filter adds
    // after program[pid] is an optional `(?:ID: )?`, the queue id, which fail2ban's session id
    // then holds (one sendmail process serves several messages: "Different mail ID shouldn't
    // match"). The session is by that id, a named group `mlfid` (Rule.session.by); a line
    // without it has no session.
    static const LazyRE2 kIdExtension = {"\\x01\\(\\?:(.+): \\)\\?"};
    std::string id_pattern;
    if (RE2::FullMatch(mlfid, *kIdExtension, &id_pattern) &&
        PythonOnlyConstruct(id_pattern).empty() && !absl::StrContains(id_pattern, "(")) {
      out.session_by = "mlfid";
      out.notes.push_back(absl::StrCat("session filter: <F-MLFID> is program[pid] and the id ",
                                       id_pattern, " after it (session.by mlfid, that id)"));
      pref = absl::StrReplaceAll(
          pref, {{mlfid, absl::StrCat(kPrefixMarker, "(?:(?P<mlfid>", id_pattern, "): )?")}});
    } else if (absl::StartsWith(mlfid, kPrefixMarker)) {
      out.session_by = "pid";
      out.notes.push_back(absl::StrCat(
          "session filter: <F-MLFID> is the syslog program[pid] (session.by pid)",
          mlfid == kPrefixMarker ? "" : "; what the filter adds to __prefix_line is left out"));
    } else {
      out.notes.push_back(absl::StrCat("prefregex: <F-MLFID>", mlfid,
                                       "</F-MLFID> is not the syslog pid: no session"));
    }
    RE2::Replace(&pref, *kMlfid, "\\1");
  }
  {
    ValueLine pref_line{pref, path, 0};
    ApplyServerFacts(out.filter, &pref_line);
    for (const std::string& fact : pref_line.server_facts) {
      out.notes.push_back(absl::StrCat("prefregex: server fact (reviewed table): ", fact));
    }
    pref = std::move(pref_line.text);
  }
  bool syslog = absl::StrContains(pref, kPrefixMarker);
  out.prefregex = absl::StrReplaceAll(pref, {{kPrefixMarker, ""}, {kApacheClientMarker, ""}});
  ASSIGN_OR_RETURN(Prefix prefix, SplitPrefregex(absl::StrReplaceAll(pref, {{kPrefixMarker, ""}})));

  std::vector<ValueLine> fails, ignores;
  if (const std::vector<ValueLine>* v = interp.Find("failregex")) {
    RETURN_IF_ERROR(interp.ExpandList(*v, 0, &fails));
  }
  if (const std::vector<ValueLine>* v = interp.Find("ignoreregex")) {
    RETURN_IF_ERROR(interp.ExpandList(*v, 0, &ignores));
  }
  for (ValueLine& l : fails) ApplyServerFacts(out.filter, &l);
  bool apache = absl::StrContains(pref, kApacheClientMarker);
  bool nginx = !fails.empty();
  for (const ValueLine& l : fails) {
    syslog = syslog || absl::StrContains(l.text, kPrefixMarker);
    apache = apache || absl::StrContains(l.text, kApacheClientMarker);
    std::string folded = absl::StrCat(prefix.before, l.text);
    nginx = nginx && RE2::PartialMatch(folded, *kNginxHeader);
  }
  palisade::v1::LogFormat format = palisade::v1::LOG_FORMAT_RAW;
  if (apache) {
    format = palisade::v1::LOG_FORMAT_APACHE_ERROR;
    ASSIGN_OR_RETURN(std::string module_ignore, scalar("apache-pref-ignore"));
    if (!module_ignore.empty()) {
      out.notes.push_back(absl::StrCat(
          "apache-pref-ignore ", module_ignore,
          " is not applied: the apache_error message starts after the [module:level] field, so "
          "lines of that module (e.g. mod_evasive's 'client denied') match too"));
    }
  } else if (nginx) {
    format = palisade::v1::LOG_FORMAT_NGINX_ERROR;
  } else if (syslog) {
    format = palisade::v1::LOG_FORMAT_SYSLOG;
  }
  const bool session = !out.session_by.empty();
  const std::string leading_date = LeadingDateFor(out.datepattern);
  if (format == palisade::v1::LOG_FORMAT_RAW || format == palisade::v1::LOG_FORMAT_SYSLOG) {
    std::optional<std::string> date = TranslateDatePattern(out.datepattern);
    out.notes.push_back(
        date ? absl::StrCat("raw lines: datepattern as the leading date ", *date,
                            " (or one of the usual shapes)")
             : out.datepattern.empty() || out.datepattern == "{^LN-BEG}"
                 ? std::string("raw lines: the usual leading date shapes (fail2ban's templates)")
                 : absl::StrCat("raw lines: the usual leading date shapes (datepattern '",
                                out.datepattern,
                                "' is not a fixed-width date at the line's start)"));
  }

  std::map<std::string, palisade::v1::Rule> rules;  // by id
  std::vector<std::string> order;
  std::vector<std::string> shared_ignores;
  auto rule_for = [&](const Role& role, const std::string& suffix = "") -> palisade::v1::Rule& {
    std::string id = RuleId(out.filter, role) + suffix;
    auto [it, inserted] = rules.try_emplace(id);
    if (inserted) {
      order.push_back(id);
      it->second.set_id(id);
      if (session) {
        palisade::v1::Session* s = it->second.mutable_session();
        s->set_by(out.session_by);
        s->set_note_only(role.note_only);
        s->set_ends(role.ends);
        // fail2ban's pending failure: a failure of the connection before any line named the
        // address counts once a later line of it names one (filter.py, mlfpending); a success
        // (<F-MLFGAINED>) drops it.
        s->set_pending(!role.note_only);
        s->set_succeeded(role.note_only && role.gained);
      }
    }
    return it->second;
  };
  // A failregex with negative look-aheads at its top level: converted without them, each
  // `A(?!X)` becoming the ignore pattern `A(?:X)` of its rule (SplitTopLevelNegativeLookahead).
  auto convert_fail = [&](const ValueLine& l, palisade::v1::LogFormat f, bool in_session,
                          std::vector<std::string>* rule_ignores,
                          const std::string& lead) {
    ValueLine fail = l;
    std::vector<std::string> ignore_texts;
    std::string ignore;
    while (ignore_texts.size() < 4 && SplitTopLevelNegativeLookahead(&fail.text, &ignore)) {
      ignore_texts.push_back(ignore);
    }
    Converted c = ConvertOne(fail, "failregex", prefix, f, in_session, lead);
    if (ignore_texts.empty() || c.report.outcome == RegexOutcome::kRefused) return c;
    c.report.original =
        absl::StrReplaceAll(l.text, {{kPrefixMarker, ""}, {kApacheClientMarker, ""}});
    std::vector<std::string> converted_ignores;
    for (const std::string& text : ignore_texts) {
      ValueLine il = l;
      il.text = text;
      Converted ic = ConvertOne(il, kLookaheadIgnore, prefix, f, in_session, lead);
      if (ic.report.outcome == RegexOutcome::kRefused) {
        c.report.outcome = RegexOutcome::kRefused;
        c.report.converted.clear();
        c.report.reason = absl::StrCat("negative look-ahead: its ignore pattern is refused: ",
                                       ic.report.reason);
        return c;
      }
      converted_ignores.push_back(ic.report.converted);
    }
    c.report.outcome = RegexOutcome::kRewritten;
    c.report.reason = absl::StrCat(
        "negative look-ahead A(?!X)B -> AB, with A(?:X) an ignore pattern (stricter): ",
        absl::StrJoin(converted_ignores, " ; "),
        c.report.reason.empty() ? "" : ", ", c.report.reason);
    for (std::string& i : converted_ignores) rule_ignores->push_back(std::move(i));
    return c;
  };
  // A failregex split by convert_fail goes to a rule of its own, `-lookahead-N`: fail2ban tries
  // the other failregexes on a line this one refuses, so its ignore patterns must reach no other
  // pattern. Its matches count toward that rule's threshold (fail2ban counts them with the rest).
  int lookahead_rules = 0;
  int nofail_rules = 0;
  auto own_rule_note = [](Converted* c, const std::string& id) {
    absl::StrAppend(&c->report.reason, "; in its own rule ", id,
                    " (its ignore pattern applies to it alone; its matches count apart from the "
                    "filter's other failregexes)");
  };
  for (const ValueLine& l : fails) {
    std::string note_variant = session ? NofailAlternative(l.text) : "";
    if (!note_variant.empty()) {
      // Counted unless it matches with the <F-NOFAIL> alternative, which only notes.
      ValueLine counting = l;
      counting.text = absl::StrReplaceAll(l.text, {{"<F-NOFAIL>", "(?:"}, {"</F-NOFAIL>", ")"}});
      Converted count = ConvertOne(counting, "failregex", prefix, format, session, leading_date);
      ValueLine noting = l;
      noting.text = note_variant;
      Converted note = ConvertOne(noting, "failregex", prefix, format, session, leading_date);
      note.report.kind = "failregex (its <F-NOFAIL> alternative)";
      if (count.report.outcome != RegexOutcome::kRefused &&
          note.report.outcome != RegexOutcome::kRefused) {
        // The counting rule skips what the note rule takes. fail2ban tries the failregexes in
        // order and the first match wins: the ignore may reach the failregexes after this one,
        // never one before it, so with those in the rule this one goes to a rule of its own.
        std::string suffix;
        if (auto it = rules.find(RuleId(out.filter, count.role));
            it != rules.end() && it->second.patterns_size() > 0) {
          suffix = absl::StrCat("-nofail-", ++nofail_rules);
        }
        palisade::v1::Rule& rule = rule_for(count.role, suffix);
        rule.add_ignore_patterns(note.report.converted);
        rule.add_patterns(count.report.converted);
        count.report.rule_id = rule.id();
        if (!suffix.empty()) {
          absl::StrAppend(&count.report.reason, count.report.reason.empty() ? "" : "; ",
                          "in its own rule ", rule.id(),
                          " (the ignore pattern of its <F-NOFAIL> alternative applies to it "
                          "alone; its matches count apart from the filter's other failregexes)");
        }
        palisade::v1::Rule& note_rule = rule_for(note.role);
        note_rule.add_patterns(note.report.converted);
        note.report.rule_id = note_rule.id();
      } else if (count.report.outcome != RegexOutcome::kRefused) {
        count.report.outcome = RegexOutcome::kRefused;
        count.report.reason = absl::StrCat("its <F-NOFAIL> alternative is refused: ",
                                           note.report.reason);
        count.report.converted.clear();
      }
      out.regexes.push_back(std::move(count.report));
      out.regexes.push_back(std::move(note.report));
      continue;
    }
    std::vector<std::string> own_ignores;
    Converted c = convert_fail(l, format, session, &own_ignores, leading_date);
    if (c.report.outcome != RegexOutcome::kRefused) {
      palisade::v1::Rule& rule = rule_for(
          c.role, own_ignores.empty() ? "" : absl::StrCat("-lookahead-", ++lookahead_rules));
      rule.add_patterns(c.report.converted);
      for (const std::string& i : own_ignores) rule.add_ignore_patterns(i);
      c.report.rule_id = rule.id();
      if (!own_ignores.empty()) own_rule_note(&c, rule.id());
    }
    out.regexes.push_back(std::move(c.report));
  }
  for (const ValueLine& l : ignores) {
    Converted c = ConvertOne(l, "ignoreregex", prefix, format, session, leading_date);
    if (c.report.outcome != RegexOutcome::kRefused) {
      shared_ignores.push_back(c.report.converted);
    }
    out.regexes.push_back(std::move(c.report));
  }
  // fail2ban's __prefix_line is optional throughout (common.conf), so a syslog filter also
  // matches the daemon's own log file (asterisk's `messages`, a mail server's log_path) once the
  // date is cut: such lines get a twin rule in LOG_FORMAT_RAW (`-raw`), the same regexes after
  // the raw format's leading date. Not for session filters: a raw line has no program[pid].
  // A daemon with a plain name may also write its tag there ("[1387288694] nsd[7745]: info:
  // ...", fail2ban's __prefix_line without the host): optional, with a pid of at most seven
  // digits in fixed-width pieces (no field before the key for the loader's check).
  ASSIGN_OR_RETURN(std::string daemon, scalar("_daemon"));
  std::map<std::string, palisade::v1::LogFormat> rule_format;
  std::vector<std::string> raw_ignores;
  if (format == palisade::v1::LOG_FORMAT_SYSLOG && !session) {
    const std::string raw_id = absl::StrCat(RuleId(out.filter, Role{}), "-raw");
    const std::string twin_lead =
        RE2::FullMatch(daemon, "[A-Za-z0-9_.-]+") ||
                RE2::FullMatch(daemon, "[A-Za-z0-9_()?|:-]+")  // dovecot's (?:dovecot(?:-auth)?|auth)
            ? absl::StrCat(leading_date, "(?:",
                           RE2::FullMatch(daemon, "[A-Za-z0-9_.-]+") ? RE2::QuoteMeta(daemon)
                                                                     : daemon,
                           "(?:\\[\\d\\d?\\d?\\d?\\d?\\d?\\d?\\])?: )?")
            : leading_date;
    // The syslog line as the file holds it, host and a tag without its colon included
    // ("Jun 09 07:30:58 host proftpd[11864] host (name[ADDR]): ...", which the syslog parser
    // does not split): tried first, kept only where the loader's check still passes (the host
    // is a field before the key: a regex then needs its pinned end).
    const std::string twin_lead_host =
        twin_lead == leading_date
            ? leading_date
            : absl::StrCat(leading_date, "(?:[\\w.-]+ ",
                           RE2::FullMatch(daemon, "[A-Za-z0-9_.-]+") ? RE2::QuoteMeta(daemon)
                                                                     : daemon,
                           "\\[\\d\\d?\\d?\\d?\\d?\\d?\\d?\\] )?");
    // Adds a converted failregex (and its ignore patterns) to the -raw twin rule, made first,
    // or, with a look-ahead's ignore patterns, to a twin rule of its own (`-raw-lookahead-N`).
    int twin_lookaheads = 0;
    auto add_to_twin = [&](const Converted& converted, const std::vector<std::string>& ignores,
                           const std::string& suffix) {
      const std::string id = raw_id + suffix;
      auto [it, inserted] = rules.try_emplace(id);
      if (inserted) {
        order.push_back(id);
        it->second.set_id(id);
        rule_format[id] = palisade::v1::LOG_FORMAT_RAW;
      }
      it->second.add_patterns(converted.report.converted);
      for (const std::string& i : ignores) it->second.add_ignore_patterns(i);
    };
    // The filter's ignoreregexes in the raw lines first: a twin that could not skip what the
    // operator exempted would count it, so then there is no twin.
    std::string raw_ignore_refused;
    for (const ValueLine& l : ignores) {
      Converted c = ConvertOne(l, "ignoreregex", prefix, palisade::v1::LOG_FORMAT_RAW, false,
                               twin_lead);
      if (c.report.outcome != RegexOutcome::kRefused) {
        raw_ignores.push_back(c.report.converted);
      } else if (raw_ignore_refused.empty()) {
        raw_ignore_refused = absl::StrCat(l.file, ":", l.line, ": ", c.report.reason);
      }
    }
    if (!raw_ignore_refused.empty()) {
      out.notes.push_back(absl::StrCat(
          "no rule for the daemon's own log (LOG_FORMAT_RAW): an ignoreregex is refused there, ",
          raw_ignore_refused));
    }
    int twins = 0, twins_refused = 0;
    for (const ValueLine& l : raw_ignore_refused.empty() ? fails : std::vector<ValueLine>{}) {
      std::vector<std::string> own_ignores;
      Converted c =
          convert_fail(l, palisade::v1::LOG_FORMAT_RAW, false, &own_ignores, twin_lead);
      std::string suffix;
      if (twin_lead_host != twin_lead && c.report.outcome != RegexOutcome::kRefused) {
        std::vector<std::string> host_ignores;
        Converted h =
            convert_fail(l, palisade::v1::LOG_FORMAT_RAW, false, &host_ignores, twin_lead_host);
        // Both forms: the host one only adds the colon-less syslog lines.
        if (h.report.outcome != RegexOutcome::kRefused) {
          if (!own_ignores.empty() || !host_ignores.empty()) {
            suffix = absl::StrCat("-lookahead-", ++twin_lookaheads);
          }
          add_to_twin(h, host_ignores, suffix);
        }
      }
      if (c.report.outcome == RegexOutcome::kRefused || c.role.note_only) {
        ++twins_refused;
        continue;
      }
      if (suffix.empty() && !own_ignores.empty()) {
        suffix = absl::StrCat("-lookahead-", ++twin_lookaheads);
      }
      add_to_twin(c, own_ignores, suffix);
      ++twins;
    }
    if (twins > 0) {
      out.notes.push_back(absl::StrCat(
          "also the daemon's own log (LOG_FORMAT_RAW, rule ", raw_id, "): ", twins,
          " failregexes after a leading date", twins_refused > 0 ? absl::StrCat(", ", twins_refused, " not (refused as above or note-only)") : ""));
    }
  }

  std::string escalation;
  if (options.bantime_increment) {
    escalation = absl::StrCat(", bantime.increment (factor ", options.bantime_factor,
                              options.bantime_maxtime > absl::ZeroDuration()
                                  ? absl::StrCat(", maxtime ", Seconds(options.bantime_maxtime))
                                  : "",
                              ")");
  }
  for (const std::string& id : order) {
    palisade::v1::Rule rule = std::move(rules[id]);
    if (auto f = rule_format.find(id); f != rule_format.end()) {
      rule.add_formats(f->second);
      for (const std::string& ignore : raw_ignores) rule.add_ignore_patterns(ignore);
    } else if (format == palisade::v1::LOG_FORMAT_SYSLOG) {
      rule.add_formats(palisade::v1::LOG_FORMAT_SYSLOG);
      rule.add_formats(palisade::v1::LOG_FORMAT_SYSLOG5424);
      if (RE2::FullMatch(daemon, "[A-Za-z0-9_.-]+")) rule.add_programs(daemon);
    } else {
      rule.add_formats(format);
    }
    if (rule_format.count(id) == 0) {
      for (const std::string& ignore : shared_ignores) rule.add_ignore_patterns(ignore);
    }
    std::string role = !rule.has_session()       ? ""
                       : rule.session().note_only() ? " Session rule: its lines only note the "
                                                    "address for later lines of the connection."
                       : absl::StrCat(" Session rule (by ",
                                      out.session_by == "mlfid" ? "the id after program[pid]"
                                                                : "pid",
                                      "): a line without an address uses the one its connection "
                                      "noted, or, before any line named one, waits for the first "
                                      "that does (fail2ban's pending failure).");
    if (rule.session().ends()) role += " A match ends the session.";
    if (rule.session().succeeded()) {
      role += " A success: the connection's pending failures are dropped.";
    }
    rule.set_description(absl::StrCat(
        "Imported from fail2ban filter ", BaseName(path), ".", role, " Threshold from ",
        options.threshold_source, ": maxretry ", options.maxretry, " within findtime ",
        Seconds(options.findtime), ", bantime ", Seconds(options.bantime), escalation, "."));
    if (rule.session().note_only()) {
      // A note never counts: no threshold, no decision.
      rule.set_description(absl::StrCat("Imported from fail2ban filter ", BaseName(path), ".",
                                        role));
      *out.pack.add_rules() = std::move(rule);
      continue;
    }
    rule.mutable_threshold()->set_count(options.maxretry);
    if (options.maxretry > 1 || options.findtime > absl::ZeroDuration()) {
      rule.mutable_threshold()->mutable_window()->set_seconds(
          std::max<int64_t>(1, absl::ToInt64Seconds(options.findtime)));
    }
    rule.mutable_decision()->set_action(palisade::v1::ACTION_BLOCK);
    rule.mutable_decision()->mutable_duration()->set_seconds(
        absl::ToInt64Seconds(options.bantime));
    if (options.bantime_increment) {
      // fail2ban's default formula doubles the ban per repeat: max(T, T * 2**count * factor)
      // (jail.py), the factor a common multiplier; another factor is noted by ReadFail2banJail.
      palisade::v1::Escalation* e = rule.mutable_decision()->mutable_escalation();
      e->set_factor(2);
      if (options.bantime_maxtime > absl::ZeroDuration()) {
        e->mutable_max_duration()->set_seconds(absl::ToInt64Seconds(options.bantime_maxtime));
      }
    }
    *out.pack.add_rules() = std::move(rule);
  }
  out.pack.set_name(absl::StrCat("fail2ban-", out.filter));
  out.pack.set_description(absl::StrCat("fail2ban filter ", path, ", converted"));
  return out;
}

absl::Status CheckFail2banImport(const std::string& path, const Fail2banImport& imported) {
  if (imported.pack.rules_size() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": no failregex converted (", imported.failregexes(RegexOutcome::kRefused),
        " refused)"));
  }
  // Without an ignoreregex the rules would count lines the operator exempted.
  for (const RegexReport& r : imported.regexes) {
    if (r.kind == "ignoreregex" && r.outcome == RegexOutcome::kRefused) {
      return absl::FailedPreconditionError(absl::StrCat(
          r.file, ":", r.line, ": ignoreregex refused (the rules would count what it exempts): ",
          r.reason));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Fail2banImport> ImportFail2banFilter(const std::string& path,
                                                    const Fail2banImportOptions& options) {
  ASSIGN_OR_RETURN(Fail2banImport out, ConvertFail2banFilter(path, options));
  RETURN_IF_ERROR(CheckFail2banImport(path, out));
  return out;
}

absl::StatusOr<absl::Duration> ParseFail2banTime(absl::string_view text) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (t.empty()) return absl::InvalidArgumentError("an empty time value");
  double number;
  if (absl::SimpleAtod(t, &number)) {
    if (number < 0) return absl::InfiniteDuration();
    return absl::Seconds(number);
  }
  static const LazyRE2 kPart = {"\\s*(\\d+(?:\\.\\d+)?)\\s*([a-z]*)"};
  absl::string_view rest = t;
  std::string value, unit;
  absl::Duration total;
  while (!rest.empty()) {
    re2::StringPiece in(rest.data(), rest.size());
    if (!RE2::Consume(&in, *kPart, &value, &unit)) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a fail2ban time"));
    }
    rest = absl::string_view(in.data(), in.size());
    double n = std::stod(value);
    double seconds;
    if (unit.empty() || unit == "s" || absl::StartsWith(unit, "sec")) {
      seconds = 1;
    } else if (unit == "m" || absl::StartsWith(unit, "mi")) {
      seconds = 60;
    } else if (unit == "h" || absl::StartsWith(unit, "hour")) {
      seconds = 3600;
    } else if (unit == "d" || absl::StartsWith(unit, "day")) {
      seconds = 86400;
    } else if (unit == "w" || absl::StartsWith(unit, "week")) {
      seconds = 7 * 86400;
    } else if (unit == "mo" || absl::StartsWith(unit, "mon")) {
      seconds = 30.4375 * 86400;  // fail2ban's month: a year over 12
    } else if (unit == "y" || absl::StartsWith(unit, "year")) {
      seconds = 365.25 * 86400;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "': unknown time unit '", unit, "'"));
    }
    total += absl::Seconds(n * seconds);
  }
  return total;
}

absl::Status ReadFail2banJail(const std::vector<std::string>& files, const std::string& jail_name,
                              Fail2banImportOptions* options) {
  Sections sections;
  ReadBudget budget;
  std::vector<std::string> chain;
  for (const std::string& file : files) {
    RETURN_IF_ERROR(ReadConfig(file, "", 0, &chain, &budget, &sections, &options->jail_notes));
  }
  if (sections.count(jail_name) == 0) {
    return absl::NotFoundError(absl::StrCat("jail [", jail_name, "] is in none of ",
                                            absl::StrJoin(files, ", ")));
  }
  // The jail's own options over [DEFAULT]: give the interpolator the jail as [Definition].
  Sections view;
  view["DEFAULT"] = sections["DEFAULT"];
  view["Definition"] = sections[jail_name];
  for (const auto& [name, section] : sections) {
    if (name != "DEFAULT" && name != jail_name) view[name] = section;
  }
  Interpolator interp(view, {{"__name__", jail_name}});
  auto value = [&](const char* key, std::string* out, const ValueLine** where) -> absl::Status {
    const std::vector<ValueLine>* v = interp.Find(key);
    if (v == nullptr || v->empty()) return absl::OkStatus();
    *where = &v->front();
    std::vector<std::string> texts;
    for (const ValueLine& l : *v) texts.push_back(l.text);
    absl::StatusOr<std::string> s = interp.Expand(absl::StrJoin(texts, " "));
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(v->front().file, ":", v->front().line, ": ", s.status().message()));
    }
    *out = *s;
    return absl::OkStatus();
  };
  auto bad = [](const ValueLine* where, const char* key, absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(where->file, ":", where->line, ": ", key, ": ", why));
  };
  std::string text;
  const ValueLine* where = nullptr;
  RETURN_IF_ERROR(value("maxretry", &text, &where));
  if (where != nullptr) {
    int n;
    if (!absl::SimpleAtoi(text, &n) || n < 1) return bad(where, "maxretry", "not a count >= 1");
    options->maxretry = n;
  }
  auto time_option = [&](const char* key, absl::Duration* out) -> absl::Status {
    std::string t;
    const ValueLine* at = nullptr;
    RETURN_IF_ERROR(value(key, &t, &at));
    if (at == nullptr) return absl::OkStatus();
    absl::StatusOr<absl::Duration> d = ParseFail2banTime(t);
    if (!d.ok()) return bad(at, key, d.status().message());
    *out = *d;
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(time_option("findtime", &options->findtime));
  RETURN_IF_ERROR(time_option("bantime", &options->bantime));
  if (options->bantime == absl::InfiniteDuration()) {
    options->bantime = absl::Hours(24 * 365);
    options->jail_notes.push_back(
        "bantime -1 (permanent) became 365 days: every Palisade decision expires");
  }
  where = nullptr;
  RETURN_IF_ERROR(value("bantime.increment", &text, &where));
  if (where != nullptr) {
    std::string b = absl::AsciiStrToLower(text);
    options->bantime_increment = b == "true" || b == "yes" || b == "1" || b == "on";
  }
  where = nullptr;
  RETURN_IF_ERROR(value("bantime.factor", &text, &where));
  if (where != nullptr && !absl::SimpleAtod(text, &options->bantime_factor)) {
    return bad(where, "bantime.factor", "not a number");
  }
  if (where != nullptr && options->bantime_increment && options->bantime_factor != 1) {
    options->jail_notes.push_back(absl::StrCat(
        where->file, ":", where->line, ": bantime.factor ", text,
        ": fail2ban's repeat bans are max(bantime, bantime * 2^n * ", text,
        ") after n bans; the escalation doubles from bantime (factor 2), without the ",
        text, " (repeat bans ", options->bantime_factor > 1 ? "shorter" : "longer", ")"));
  }
  // A formula or multipliers: no geometric escalation is the same; the doubling stays, noted.
  for (const char* key : {"bantime.formula", "bantime.multipliers"}) {
    where = nullptr;
    RETURN_IF_ERROR(value(key, &text, &where));
    if (where == nullptr || !options->bantime_increment ||
        absl::StripAsciiWhitespace(text).empty()) {
      continue;
    }
    options->jail_notes.push_back(absl::StrCat(
        where->file, ":", where->line, ": ", key, " '", text,
        "' is not applied: the escalation doubles from bantime (fail2ban's default formula)"));
  }
  RETURN_IF_ERROR(time_option("bantime.maxtime", &options->bantime_maxtime));
  where = nullptr;
  text.clear();
  RETURN_IF_ERROR(value("ignoreip", &text, &where));
  options->ignoreip.clear();
  if (where != nullptr) {
    for (absl::string_view ip :
         absl::StrSplit(text, absl::ByAnyChar(" ,\t"), absl::SkipEmpty())) {
      options->ignoreip.emplace_back(ip);
    }
  }
  // `filter = NAME[k=v, k="v w", ...]` (fail2ban's extractOptions).
  where = nullptr;
  RETURN_IF_ERROR(value("filter", &text, &where));
  if (where != nullptr) {
    static const LazyRE2 kFilter = {"\\s*([^\\s\\[\\]]+)\\s*(?:\\[(.*)\\])?\\s*"};
    static const LazyRE2 kOption = {
        "\\s*([\\w.-]+)\\s*=\\s*(?:\"([^\"]*)\"|'([^']*)'|([^,\"']*?))\\s*(?:,|$)"};
    std::string name, inside;
    if (!RE2::FullMatch(text, *kFilter, &name, &inside)) {
      return bad(where, "filter", absl::StrCat("'", text, "' is not NAME[k=v,...]"));
    }
    options->jail_filter = name;
    options->jail_filter_where = absl::StrCat(where->file, ":", where->line);
    re2::StringPiece rest(inside);
    std::string k, dq, sq, plain;
    while (!absl::StripAsciiWhitespace(absl::string_view(rest.data(), rest.size())).empty()) {
      if (!RE2::Consume(&rest, *kOption, &k, &dq, &sq, &plain)) {
        return bad(where, "filter", absl::StrCat("options '", inside, "' are not k=v,..."));
      }
      options->params.emplace(k, !dq.empty() ? dq : !sq.empty() ? sq : plain);
    }
  }
  options->threshold_source =
      absl::StrCat("jail [", jail_name, "] in ", absl::StrJoin(files, ", "));
  return absl::OkStatus();
}

std::string Fail2banPackText(const Fail2banImport& imported) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(imported.pack, &text);
  std::string allow;
  if (!imported.ignoreip.empty()) {
    allow = absl::StrCat(
        "# The jail's ignoreip: packs carry no allowlist; add these to palisaded's config:\n"
        "#   allowlist: [\"",
        absl::StrJoin(imported.ignoreip, "\", \""), "\"]\n");
  }
  return absl::StrCat("# proto-file: proto/palisade/v1/rules.proto\n",
                      "# proto-message: palisade.v1.RulePack\n",
                      "# Generated by palisadectl rules import-fail2ban from filter '",
                      imported.filter, "'.\n", allow, text);
}

std::string Fail2banReportText(const Fail2banImport& imported) {
  std::string out = absl::StrCat(
      imported.filter, ": ", imported.count(RegexOutcome::kConverted), " converted, ",
      imported.count(RegexOutcome::kRewritten), " rewritten, ",
      imported.count(RegexOutcome::kRefused), " refused; ", imported.pack.rules_size(),
      " rules; maxlines ", imported.maxlines, "; datepattern '", imported.datepattern, "'\n");
  for (const std::string& note : imported.notes) absl::StrAppend(&out, "  note: ", note, "\n");
  if (!imported.ignoreip.empty()) {
    absl::StrAppend(&out, "  ignoreip: add to palisaded's config allowlist: ",
                    absl::StrJoin(imported.ignoreip, " "), "\n");
  }
  for (const RegexReport& r : imported.regexes) {
    const char* what = r.outcome == RegexOutcome::kConverted   ? "converted"
                       : r.outcome == RegexOutcome::kRewritten ? "rewritten"
                                                               : "refused";
    absl::StrAppend(&out, "  ", r.file, ":", r.line, ": ", r.kind, " ", what,
                    r.rule_id.empty() ? "" : absl::StrCat(" (", r.rule_id, ")"),
                    r.reason.empty() ? "" : ": ", r.reason, "\n    ", r.original, "\n");
  }
  return out;
}

bool Fail2banIncludeOnly(const Fail2banImport& imported) {
  return imported.failregexes(RegexOutcome::kConverted) +
             imported.failregexes(RegexOutcome::kRewritten) +
             imported.failregexes(RegexOutcome::kRefused) ==
         0;
}

std::string Fail2banSummaryLine(const std::string& name, const absl::StatusOr<Fail2banImport>& r) {
  if (!r.ok()) return absl::StrCat(name, "\terror\t", r.status().message());
  const absl::Status refused = CheckFail2banImport(name, *r);
  return absl::StrCat(name, "\t",
                      refused.ok()                ? "converted"
                      : Fail2banIncludeOnly(*r)   ? "include"
                                                  : "refused",
                      "\trules ",
                      r->pack.rules_size(), "\tfailregex ",
                      r->failregexes(RegexOutcome::kConverted), " converted, ",
                      r->failregexes(RegexOutcome::kRewritten), " rewritten, ",
                      r->failregexes(RegexOutcome::kRefused), " refused",
                      r->session_by.empty() ? "" : absl::StrCat("\tsession by ", r->session_by),
                      // With rules: an ignoreregex refused, named.
                      refused.ok() || r->pack.rules_size() == 0
                          ? ""
                          : absl::StrCat("\t", refused.message()));
}

}  // namespace palisade
