#!/usr/bin/env python3
"""Decision -> seen by a real CrowdSec bouncer (issue 16's figure), p50/p99.

Starts palisaded (bouncer_api on a free loopback port, the shipped sshd pack, a throwaway state
file), registers a bouncer with `palisadectl bouncers add`, runs Debian's crowdsec-custom-bouncer
with a 1 s pull interval and a bin_path script that stamps each call, then adds N bans with
`palisadectl decisions add` at random gaps (so they land at every phase of the pull cycle) and
measures, per ban, from the moment `decisions add` returned to the moment the bouncer's script ran
with `add IP`. A measurement, not a test: run it on a quiet machine and say what else ran.

  bazel build //:palisaded //:palisadectl
  python3 tools/bouncer_pull_latency.py [--samples 200] [--interval 1s]
"""
import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    sys.exit("bouncer_pull_latency: timed out waiting for " + what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--interval", default="1s", help="the bouncer's update_frequency")
    ap.add_argument("--bin", default="bazel-bin/services", help="where palisaded/palisadectl are")
    args = ap.parse_args()
    palisaded = os.path.join(args.bin, "server/palisaded")
    palisadectl = os.path.join(args.bin, "cli/palisadectl")
    for b in (palisaded, palisadectl, "/usr/bin/crowdsec-custom-bouncer"):
        if not os.access(b, os.X_OK):
            sys.exit("bouncer_pull_latency: %s missing (bazel build //:palisaded //:palisadectl; "
                     "bash tools/setup.sh)" % b)

    work = tempfile.mkdtemp(prefix="bouncer-latency.")
    procs = []
    try:
        # Copies: a build running meanwhile replaces what bazel-bin points at.
        for b in (palisaded, palisadectl):
            shutil.copy(b, work)
        palisaded = os.path.join(work, "palisaded")
        palisadectl = os.path.join(work, "palisadectl")
        grpc_port, metrics_port, bouncer_port = free_port(), free_port(), free_port()
        config = os.path.join(work, "palisade.textproto")
        with open(config, "w") as f:
            f.write('rule_files: "%s"\n' % os.path.abspath("rules/sshd.textproto"))
            f.write('bouncer_api { listen: "127.0.0.1:%d" }\n' % bouncer_port)
        daemon_log = open(os.path.join(work, "palisaded.log"), "w")
        procs.append(subprocess.Popen(
            [palisaded, "--config=" + config, "--grpc_listen=127.0.0.1:%d" % grpc_port,
             "--metrics_listen=127.0.0.1:%d" % metrics_port,
             "--state_file=" + os.path.join(work, "state.db")],
            stdout=daemon_log, stderr=subprocess.STDOUT))

        def listening():
            if procs[0].poll() is not None:
                sys.exit("bouncer_pull_latency: palisaded exited:\n" +
                         open(os.path.join(work, "palisaded.log")).read())
            try:
                socket.create_connection(("127.0.0.1", bouncer_port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, what="palisaded's bouncer_api")
        ctl = [palisadectl, "--server=127.0.0.1:%d" % grpc_port]
        key = subprocess.check_output(ctl + ["bouncers", "add", "latency"], text=True).strip()

        calls = os.path.join(work, "calls.txt")
        script = os.path.join(work, "stamp.sh")
        with open(script, "w") as f:
            f.write('#!/bin/sh\necho "$(date +%%s.%%N) $1 $2" >> %s\n' % calls)
        os.chmod(script, 0o700)
        bouncer_cfg = os.path.join(work, "custom.yaml")
        with open(bouncer_cfg, "w") as f:
            f.write("bin_path: %s\nfeed_via_stdin: false\npiddir: %s/\nupdate_frequency: %s\n"
                    "cache_retention_duration: 10s\ndaemonize: false\nlog_mode: file\n"
                    "log_dir: %s/\nlog_level: info\napi_url: http://127.0.0.1:%d/\n"
                    "api_key: %s\nprometheus:\n  enabled: false\n"
                    % (script, work, args.interval, work, bouncer_port, key))
        procs.append(subprocess.Popen(["/usr/bin/crowdsec-custom-bouncer", "-c", bouncer_cfg],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # The bouncer's first (startup) pull has happened once a warm-up ban is seen.
        subprocess.check_call(ctl + ["decisions", "add", "192.0.2.1", "--duration=1h"],
                              stdout=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(calls) and "192.0.2.1" in open(calls).read(),
                 what="the warm-up ban at the bouncer")

        added = {}
        rng = random.Random(16)
        for i in range(args.samples):
            ip = "198.18.%d.%d" % (i // 250, i % 250 + 1)
            subprocess.check_call(ctl + ["decisions", "add", ip, "--duration=1h"],
                                  stdout=subprocess.DEVNULL)
            added[ip] = time.time()
            time.sleep(rng.uniform(0.0, 0.6))

        def seen():
            out = {}
            for line in open(calls):
                parts = line.split()
                if len(parts) >= 3 and parts[1] == "add" and parts[2] in added:
                    out.setdefault(parts[2], float(parts[0]))
            return out
        wait_for(lambda: len(seen()) == len(added), what="every ban at the bouncer")
        s = seen()
        lat = sorted((s[ip] - added[ip]) * 1000.0 for ip in added)
        print("decision -> crowdsec-custom-bouncer add (update_frequency %s), %d bans:"
              % (args.interval, len(lat)))
        print("  p50 %.0f ms  p90 %.0f ms  p99 %.0f ms  max %.0f ms  min %.0f ms"
              % (percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), lat[-1], lat[0]))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
