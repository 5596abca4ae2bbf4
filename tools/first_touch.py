#!/usr/bin/env python3
"""What this machine charges for memory touched for the first time.

Maps 256 MiB of anonymous memory (advised MADV_HUGEPAGE, as palisadectl's heap is; with --small,
not advised: 4 KiB pages), writes one byte per 4 KiB page, and prints the rate; three times,
each on a fresh mapping. On a virtual
machine whose host takes freed guest memory back, the first pass pays for the host backing the
pages again and can be many times slower than the next ones (docs/PERFORMANCE.md, "Twenty-first
pass"). A replay's or a fresh daemon's system time follows the same rate. This script only
measures and is not part of CI.
  python3 tools/first_touch.py [MiB] [--small]
"""
import mmap
import sys
import time

args = [a for a in sys.argv[1:] if a != "--small"]
huge = "--small" not in sys.argv[1:]
size = int(args[0] if args else 256) << 20
for _ in range(3):
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge and hasattr(mmap, "MADV_HUGEPAGE"):
        m.madvise(mmap.MADV_HUGEPAGE)
    start = time.perf_counter()
    for offset in range(0, size, 4096):
        m[offset] = 1
    seconds = time.perf_counter() - start
    print(f"first touch of {size >> 20} MiB ({'2 MiB' if huge else '4 KiB'} pages): {seconds:.3f} s = {size / seconds / 1e9:.2f} GB/s")
    m.close()
