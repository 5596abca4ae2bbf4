#!/usr/bin/env python3
"""What this machine charges for memory touched for the first time.

Maps 256 MiB of anonymous memory advised MADV_HUGEPAGE (with --small, not advised: 4 KiB pages
where transparent_hugepage/enabled is `madvise`), writes one byte per 4 KiB page, and prints the
rate; three times, each on a fresh mapping. On the VM of docs/PERFORMANCE.md ("Twenty-first
pass"), after 20-30 s of rest, the first advised pass ran at 0.1 GB/s and the next ones at 7-8
GB/s, while 4 KiB pages ran at 2.5 GB/s every time. That is why palisadectl's and palisaded's
heap no longer asks for huge pages (services/common/huge_pages.h). This script only measures and
is not part of CI.
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
    pages = "2 MiB" if huge else "4 KiB"
    print(f"first touch of {size >> 20} MiB ({pages} pages): {seconds:.3f} s = "
          f"{size / seconds / 1e9:.2f} GB/s")
    m.close()
