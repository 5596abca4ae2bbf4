#!/usr/bin/env python3
"""A Python client for palisaded: ships a log file over Ingest.Ship and prints the decisions it
causes, read from Events.Watch. It needs the Debian packages python3-grpcio and python3-protobuf,
and stubs generated from proto/ (gen_stubs.sh does it with protoc and grpc_python_plugin).

  examples/python/gen_stubs.sh /tmp/stubs
  PYTHONPATH=/tmp/stubs examples/python/palisade_client.py --server 127.0.0.1:50051 \\
      --file /var/log/auth.log --format syslog --now --expect 10
"""
import argparse
import os
import sys
import threading
import time

import grpc
from google.protobuf import timestamp_pb2

from palisade.v1 import palisade_pb2, palisade_pb2_grpc, rules_pb2

FORMATS = {
    "syslog": rules_pb2.LOG_FORMAT_SYSLOG,
    "syslog5424": rules_pb2.LOG_FORMAT_SYSLOG5424,
    "combined": rules_pb2.LOG_FORMAT_COMBINED,
    "combined_vhost": rules_pb2.LOG_FORMAT_COMBINED_VHOST,
    "raw": rules_pb2.LOG_FORMAT_RAW,
    "nginx_error": rules_pb2.LOG_FORMAT_NGINX_ERROR,
    "apache_error": rules_pb2.LOG_FORMAT_APACHE_ERROR,
}


def batches(path, fmt, source, batch_lines, stamp_now):
    """LogBatch messages of up to batch_lines lines each, numbered from 1."""
    with open(path, "rb") as f:
        lines = [line.rstrip(b"\r\n") for line in f]
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    for seq, start in enumerate(range(0, len(lines), batch_lines), start=1):
        batch = palisade_pb2.LogBatch(sequence=seq, source=source, format=fmt)
        for line in lines[start:start + batch_lines]:
            record = batch.records.add(line=line)
            if stamp_now:
                record.event_time.CopyFrom(now)
        yield batch


def ship(stub, args, metadata):
    """Streams the file; returns (lines accepted, detections) summed over the acks."""
    accepted = detections = 0
    for ack in stub.Ship(batches(args.file, FORMATS[args.format], args.source, 1000, args.now),
                         metadata=metadata):
        accepted += ack.accepted
        detections += ack.detections
    return accepted, detections


def watch(stub, metadata, seen, stop, ready, last_event):
    """Prints each decision event until stopped; counts the created ones in `seen`."""
    request = palisade_pb2.WatchRequest(kinds=[palisade_pb2.EVENT_KIND_DECISION])
    call = stub.Watch(request, metadata=metadata)
    ready.set()
    try:
        for event in call:
            change = event.decision.change
            decision = event.decision.decision
            print(f"#{event.sequence} decision {change} {decision.target.value} "
                  f"rule={decision.rule_id} id={decision.id}", flush=True)
            if change == "created":
                seen.add(decision.id)
            last_event[0] = time.time()
            if stop.is_set():
                break
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            print(f"watch ended: {e.code().name}: {e.details()}", file=sys.stderr)
    finally:
        call.cancel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--file", required=True)
    parser.add_argument("--format", default="syslog", choices=sorted(FORMATS))
    parser.add_argument("--source", default="python-client")
    parser.add_argument("--now", action="store_true",
                        help="stamp every line with the current time (a recorded log, shipped live)")
    parser.add_argument("--expect", type=int, default=0,
                        help="wait until this many decisions were created (up to --timeout)")
    parser.add_argument("--timeout", type=float, default=20)
    parser.add_argument("--settle", type=float, default=0.5,
                        help="then keep watching until no event came for this long (seconds)")
    args = parser.parse_args()

    token = os.environ.get("PALISADE_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    channel = grpc.insecure_channel(args.server)
    grpc.channel_ready_future(channel).result(timeout=10)
    events = palisade_pb2_grpc.EventsStub(channel)
    ingest = palisade_pb2_grpc.IngestStub(channel)

    seen, stop, ready, last_event = set(), threading.Event(), threading.Event(), [time.time()]
    watcher = threading.Thread(target=watch, args=(events, metadata, seen, stop, ready, last_event),
                               daemon=True)
    watcher.start()
    ready.wait(5)
    time.sleep(0.2)  # the subscription is in place before the first line goes out

    accepted, detections = ship(ingest, args, metadata)
    print(f"shipped {args.file}: {accepted} lines accepted, {detections} detections", flush=True)
    deadline = time.time() + args.timeout
    while len(seen) < args.expect and time.time() < deadline:
        time.sleep(0.05)
    while time.time() - last_event[0] < args.settle and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    print(f"{len(seen)} decisions created", flush=True)
    return 0 if len(seen) >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
