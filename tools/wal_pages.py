#!/usr/bin/env python3
"""Which B-trees a state file's write-ahead log spends its pages on.

SQLite writes every page a transaction changed to the WAL whole (4 KiB), so what a commit costs
is the number of distinct pages it touches. This reads the frames of STATE.db-wal written since
its last reset (those whose salt is the header's), counts commits, and names each frame's page by
the table or index that owns it now (SQLite's dbstat view, read from a copy of the database and
its WAL, so that the live files are left alone).

    python3 tools/wal_pages.py STATE_FILE

Take the state file of a palisaded that was killed (SIGKILL) right after a load: a clean stop
checkpoints and deletes the WAL. docs/PERFORMANCE.md, "Twenty-third pass", has the figures.
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile

WAL_HEADER = 32
FRAME_HEADER = 24


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    db = sys.argv[1]
    with open(db + "-wal", "rb") as f:
        wal = f.read()
    if len(wal) < WAL_HEADER:
        sys.exit(f"{db}-wal: no WAL header (the database was checkpointed and closed?)")
    page_size = struct.unpack(">I", wal[8:12])[0]
    salt = wal[16:24]
    pages, commits = [], 0
    off = WAL_HEADER
    while off + FRAME_HEADER + page_size <= len(wal):
        page, commit_size = struct.unpack(">II", wal[off:off + 8])
        if wal[off + 8:off + 16] != salt:
            break  # a frame from before the last reset: the valid ones end here
        pages.append(page)
        commits += commit_size != 0
        off += FRAME_HEADER + page_size
    if not commits:
        sys.exit(f"{db}-wal: no committed frame since its last reset")
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "state.db")
        shutil.copy(db, copy)
        shutil.copy(db + "-wal", copy + "-wal")
        conn = sqlite3.connect(copy)
        owner = {page: name for page, name in conn.execute("SELECT pageno, name FROM dbstat")}
        conn.close()
    print(f"{len(pages)} frames of {page_size} bytes in {commits} commits: "
          f"{len(pages) / commits:.1f} a commit")
    for name, n in collections.Counter(owner.get(p, "?") for p in pages).most_common():
        print(f"  {n / commits:5.1f} a commit  {name}")


if __name__ == "__main__":
    main()
