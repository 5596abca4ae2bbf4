#!/usr/bin/env python3
"""Scores Palisade packs on fail2ban's annotated test logs (docs/COVERAGE.md).

Each line of fail2ban's test logs (/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/,
Debian's fail2ban package) may be preceded by `# failJSON: {...}` saying whether fail2ban's
filter must match it (`match`) and with which address (`host`). This script strips the
annotations, runs `palisadectl rules test PACK LOG --format F --json` over the bare lines, once
per format the pair names (a log mixing access and error lines is read as both; a line that does
not parse in a format is skipped there), and counts:
  recall     annotated failures whose host is an address, flagged with that address;
  false pos. annotated non-failures (match: false) that any rule of the pack flags.
Failures whose host is a name (fail2ban resolves it; Palisade keys only addresses) are counted
apart, not scored.

  tools/score_fail2ban.py PALISADECTL [LOG=PACK[,PACK][:FORMAT[,FORMAT]] ...]
  e.g. tools/score_fail2ban.py bazel-bin/services/cli/palisadectl sshd=rules/sshd.textproto
       tools/score_fail2ban.py bazel-bin/services/cli/palisadectl \
           nginx-botsearch=rules/nginx.textproto,rules/nginx-error.textproto:combined,nginx_error
FORMAT is a palisadectl --format name (syslog when left out).
Without pairs it scores the pairs in DEFAULT_PAIRS. Prints one Markdown table row per pair and
exits 0; it is a measuring tool, the asserted floors live in the tests.
"""
import ipaddress
import json
import os
import subprocess
import sys
import tempfile

LOGS = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs"
# (fail2ban log, packs, formats): the formats the log's lines are written in.
DEFAULT_PAIRS = [
    # fail2ban's sshd log ends with two RFC 5424 lines.
    ("sshd", "rules/sshd.textproto", "syslog,syslog5424"),
    ("nginx-http-auth", "rules/nginx-error.textproto", "nginx_error"),
    ("nginx-limit-req", "rules/nginx-error.textproto", "nginx_error"),
    ("nginx-botsearch",
     "rules/nginx.textproto,rules/web-attacks.textproto,rules/nginx-error.textproto",
     "combined,nginx_error"),
    ("nginx-bad-request", "rules/nginx.textproto", "combined"),
    ("apache-auth", "rules/apache-error.textproto", "apache_error"),
    ("apache-noscript", "rules/apache-error.textproto", "apache_error"),
    ("apache-overflows", "rules/apache-error.textproto", "apache_error"),
    ("apache-nohome", "rules/apache-error.textproto", "apache_error"),
    ("apache-botsearch", "rules/apache-error.textproto", "apache_error"),
    ("apache-shellshock", "rules/apache-error.textproto", "apache_error"),
    ("apache-modsecurity", "rules/apache-error.textproto", "apache_error"),
    ("apache-badbots", "rules/web-attacks.textproto", "combined"),
    # apache-fakegooglebot is not scored: its one failure is Google's own 66.249.66.1, which
    # fail2ban flags only to have its jail's ignorecommand check the reverse DNS.
    ("postfix", "rules/postfix.textproto", "syslog"),
    # Dovecot's log mixes syslog lines with its own log file's (no host) and multilog's.
    ("dovecot", "rules/dovecot.textproto", "syslog,raw"),
    # fail2ban's aggressive mode: the log has the same lines annotated both ways (normal mode
    # false, aggressive mode true), so each counts once as found and once as a false positive.
    ("dovecot", "rules/dovecot.textproto,rules/dovecot-aggressive.textproto", "syslog,raw"),
    ("exim", "rules/exim.textproto", "raw"),
    ("exim-spam", "rules/exim.textproto", "raw"),
    ("courier-auth", "rules/mail-others.textproto", "syslog"),
    ("courier-smtp", "rules/mail-others.textproto", "syslog"),
    ("cyrus-imap", "rules/mail-others.textproto", "syslog"),
    ("sieve", "rules/mail-others.textproto", "syslog"),
    ("solid-pop3d", "rules/mail-others.textproto", "syslog"),
    ("uwimap-auth", "rules/mail-others.textproto", "syslog"),
    ("perdition", "rules/mail-others.textproto", "syslog"),
    ("qmail", "rules/mail-others.textproto", "syslog"),
    ("sendmail-auth", "rules/mail-others.textproto", "syslog"),
    ("sendmail-reject", "rules/mail-others.textproto", "syslog"),
    ("pure-ftpd", "rules/pure-ftpd.textproto", "syslog"),
    ("vsftpd", "rules/vsftpd.textproto", "syslog,raw"),
    ("proftpd", "rules/proftpd.textproto", "syslog"),
    ("mysqld-auth", "rules/mysql.textproto", "syslog,raw"),
    # Application packs: an application's own log is read raw (its patterns also take a syslog
    # header, so a log mixing both is read raw).
    ("bitwarden", "rules/webapps.textproto", "raw"),
    ("grafana", "rules/webapps.textproto", "raw"),
    ("gitlab", "rules/webapps.textproto", "raw"),
    ("guacamole", "rules/webapps.textproto", "raw"),
    ("drupal-auth", "rules/webapps.textproto", "syslog"),
    ("phpmyadmin-syslog", "rules/webapps.textproto", "syslog"),
    ("zoneminder", "rules/webapps.textproto", "apache_error"),
    ("centreon", "rules/webapps.textproto", "raw"),
    ("openhab", "rules/webapps.textproto", "raw"),
    ("php-url-fopen", "rules/webapps.textproto", "combined"),
    ("suhosin", "rules/webapps.textproto", "raw"),
    ("roundcube-auth", "rules/webmail.textproto", "raw"),
    ("sogo-auth", "rules/webmail.textproto", "raw"),
    ("horde", "rules/webmail.textproto", "raw"),
    ("squirrelmail", "rules/webmail.textproto", "raw"),
    ("openwebmail", "rules/webmail.textproto", "raw"),
    ("groupoffice", "rules/webmail.textproto", "raw"),
    ("tine20", "rules/webmail.textproto", "raw"),
    ("webmin-auth", "rules/panels.textproto", "syslog"),
    ("directadmin", "rules/panels.textproto", "raw"),
    ("froxlor-auth", "rules/panels.textproto", "syslog"),
    ("monit", "rules/panels.textproto", "raw"),
    ("monitorix", "rules/panels.textproto", "raw"),
    ("nagios", "rules/panels.textproto", "syslog"),
    ("traefik-auth", "rules/proxies.textproto", "combined"),
    ("haproxy-http-auth", "rules/proxies.textproto", "syslog"),
    ("lighttpd-auth", "rules/proxies.textproto", "raw"),
    ("squid", "rules/proxies.textproto", "raw"),
    ("3proxy", "rules/proxies.textproto", "raw"),
    ("stunnel", "rules/proxies.textproto", "raw"),
    ("asterisk", "rules/voip.textproto", "raw"),
    ("freeswitch", "rules/voip.textproto", "raw"),
    ("murmur", "rules/voip.textproto", "raw"),
    ("named-refused", "rules/dns.textproto", "raw"),
    ("nsd", "rules/dns.textproto", "raw"),
    ("pam-generic", "rules/auth-apps.textproto", "syslog"),
    ("dropbear", "rules/auth-apps.textproto", "syslog"),
    ("selinux-ssh", "rules/auth-apps.textproto", "raw"),
    ("xinetd-fail", "rules/auth-apps.textproto", "syslog"),
    ("screensharingd", "rules/auth-apps.textproto", "raw"),
    ("mssql-auth", "rules/auth-apps.textproto", "raw"),
    ("softethervpn", "rules/auth-apps.textproto", "raw"),
    ("ejabberd-auth", "rules/auth-apps.textproto", "raw"),
    ("znc-adminlog", "rules/auth-apps.textproto", "raw"),
    ("counter-strike", "rules/auth-apps.textproto", "raw"),
    ("slapd", "rules/auth-apps.textproto", "syslog"),
    ("mongodb-auth", "rules/auth-apps.textproto", "raw"),
    ("kerio", "rules/mail-gateways.textproto", "raw"),
    ("domino-smtp", "rules/mail-gateways.textproto", "raw"),
    ("oracleims", "rules/mail-gateways.textproto", "raw"),
    ("assp", "rules/mail-gateways.textproto", "raw"),
    ("portsentry", "rules/scanners.textproto", "raw"),
    ("scanlogd", "rules/scanners.textproto", "syslog"),
]


def Canonical(host):
    try:
        # fail2ban's logs write some IPv4 octets with leading zeros ("192.030.0.6").
        if host.count(".") == 3 and ":" not in host:
            host = ".".join(str(int(p)) for p in host.split("."))
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return str(ip)
    except ValueError:
        return None


def Annotated(path):
    """Returns (lines, annotations): annotations[i] is the failJSON for lines[i] or None."""
    lines, notes, pending = [], [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if raw.startswith("# failJSON:"):
                try:
                    pending = json.loads(raw[len("# failJSON:"):])
                except json.JSONDecodeError:
                    pending = None
                continue
            if raw.startswith("#") or not raw.strip():
                continue
            lines.append(raw)
            notes.append(pending)
            pending = None
    return lines, notes


def Score(palisadectl, log, packs, formats="syslog"):
    lines, notes = Annotated(os.path.join(LOGS, log))
    flagged = {}  # line number (1-based) -> set of keys
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as tmp:
        tmp.write("\n".join(lines) + "\n")
    try:
        for pack in packs.split(","):
            for fmt in formats.split(","):
                out = subprocess.run([palisadectl, "rules", "test", pack, tmp.name, "--json",
                                      "--format", fmt],
                                     capture_output=True, text=True, check=True).stdout
                for row in out.splitlines():
                    m = json.loads(row)
                    flagged.setdefault(m["line"], set()).add(Canonical(m["key"]) or m["key"])
    finally:
        os.unlink(tmp.name)
    failures = hits = names = negatives = false_pos = 0
    for i, note in enumerate(notes, start=1):
        if note is None:
            continue
        if note.get("match"):
            host = Canonical(str(note.get("host", "")))
            if host is None:
                names += 1
                continue
            failures += 1
            hits += host in flagged.get(i, ())
        else:
            negatives += 1
            false_pos += i in flagged
    return failures, hits, names, negatives, false_pos


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    palisadectl = sys.argv[1]
    pairs = []
    for arg in sys.argv[2:]:
        log, rest = arg.split("=", 1)
        packs, _, formats = rest.partition(":")
        pairs.append((log, packs, formats or "syslog"))
    pairs = pairs or DEFAULT_PAIRS
    print("| fail2ban log | Palisade packs | format | failures with an address | flagged | recall |"
          " host names (not scored) | non-failures | false positives |")
    print("|---|---|---|---|---|---|---|---|---|")
    total = [0, 0, 0, 0, 0]
    for log, packs, formats in pairs:
        missing = [p for p in packs.split(",") if not os.path.exists(p)]
        if missing:  # a pack another change adds; say so instead of failing the whole table
            print(f"| {log} | {', '.join(missing)} not found | | | | | | | |")
            continue
        row = Score(palisadectl, log, packs, formats)
        total = [t + r for t, r in zip(total, row)]
        f, h, n, neg, fp = row
        recall = f"{100 * h / f:.0f} %" if f else "—"
        names = packs.replace("rules/", "").replace(".textproto", "").replace(",", ", ")
        print(f"| {log} | {names} | {formats.replace(',', ', ')} | {f} | {h} | {recall} | {n} |"
              f" {neg} | {fp} |")
    f, h, n, neg, fp = total
    recall = f"{100 * h / f:.0f} %" if f else "—"
    print(f"| **all** | | | {f} | {h} | {recall} | {n} | {neg} | {fp} |")


if __name__ == "__main__":
    main()
