#!/usr/bin/env python3
"""Scores Palisade packs on fail2ban's annotated test logs (docs/COVERAGE.md).

Each line of fail2ban's test logs (/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/,
Debian's fail2ban package) may be preceded by `# failJSON: {...}` saying whether fail2ban's
filter must match it (`match`) and with which address (`host`). This script strips the
annotations, runs `palisadectl rules test PACK LOG --json` over the bare lines, and counts:
  recall     annotated failures whose host is an address, flagged with that address;
  false pos. annotated non-failures (match: false) that any rule of the pack flags.
Failures whose host is a name (fail2ban resolves it; Palisade keys only addresses) are counted
apart, not scored.

  tools/score_fail2ban.py PALISADECTL [LOG=PACK[,PACK] ...]
  e.g. tools/score_fail2ban.py bazel-bin/services/cli/palisadectl sshd=rules/sshd.textproto
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
DEFAULT_PAIRS = [
    ("sshd", "rules/sshd.textproto"),
    ("nginx-http-auth", "rules/nginx.textproto"),
    ("nginx-botsearch", "rules/nginx.textproto,rules/web-attacks.textproto"),
    ("apache-shellshock", "rules/web-attacks.textproto"),
    ("postfix", "rules/postfix.textproto"),
    ("dovecot", "rules/dovecot.textproto"),
    ("pure-ftpd", "rules/pure-ftpd.textproto"),
    ("vsftpd", "rules/vsftpd.textproto"),
    ("proftpd", "rules/proftpd.textproto"),
    ("mysqld-auth", "rules/mysql.textproto"),
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


def Score(palisadectl, log, packs):
    lines, notes = Annotated(os.path.join(LOGS, log))
    flagged = {}  # line number (1-based) -> set of keys
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as tmp:
        tmp.write("\n".join(lines) + "\n")
    try:
        for pack in packs.split(","):
            out = subprocess.run([palisadectl, "rules", "test", pack, tmp.name, "--json"],
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
    pairs = [tuple(a.split("=", 1)) for a in sys.argv[2:]] or DEFAULT_PAIRS
    print("| fail2ban log | Palisade packs | failures with an address | flagged | recall |"
          " host names (not scored) | non-failures | false positives |")
    print("|---|---|---|---|---|---|---|---|")
    for log, packs in pairs:
        f, h, n, neg, fp = Score(palisadectl, log, packs)
        recall = f"{100 * h / f:.0f} %" if f else "—"
        print(f"| {log} | {packs.replace('rules/', '')} | {f} | {h} | {recall} | {n} | {neg} |"
              f" {fp} |")


if __name__ == "__main__":
    main()
