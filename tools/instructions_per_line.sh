#!/usr/bin/env bash
# What the engine spends on a line, in instructions (valgrind's callgrind: the same count on a
# quiet machine and on a busy one, unlike a wall-clock figure): one engine_bench benchmark run
# under callgrind with collection only inside Engine::Prematch and Engine::Process, divided by the
# number of lines the benchmark gave Engine::Process. Prints that total, then the functions with
# the most instructions of their own (not counting their callees), per line. It only measures
# and is not part of CI. Lines per line are good to a few per cent (the warm-up lap of each of
# the benchmark's calls is counted with its measured laps).
#   bash tools/instructions_per_line.sh BIN FILTER [TOP]
# BIN: an engine_bench binary (bazel build -c opt //tests/bench:engine_bench; copy it to compare
# two trees). FILTER: one benchmark, e.g. 'BM_PrematchWindowEverythingBenign/format:3'.
# TOP: how many functions to list (default 25; 0 for the total alone).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/instructions_per_line.sh BIN FILTER [TOP]" >&2
  exit 2
fi
bin="$1"
filter="$2"
top="${3:-25}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" \
  --toggle-collect='palisade::Engine::Process*' --toggle-collect='palisade::Engine::Prematch(*' \
  "$bin" --benchmark_filter="$filter" --benchmark_min_time=0.05 >/dev/null 2>&1
python3 - "$out" "$top" <<'PY'
import re, subprocess, sys
out, top = sys.argv[1], int(sys.argv[2])
# The lines: the calls of Engine::Process from the benchmark's loop (callgrind's call counts).
tree = subprocess.run(["callgrind_annotate", "--tree=caller", out],
                      capture_output=True, text=True, check=True).stdout
calls = re.findall(r"<[^\n]*engine_bench\.cc[^\n]*\(([\d,]+)x\)[^\n]*\n"
                   r"[^\n]*\*\s+[^\n]*Engine::Process\(", tree)
lines = sum(int(c.replace(",", "")) for c in calls)
if lines == 0:
    sys.exit("no call of Engine::Process from the benchmark: is FILTER one benchmark?")
flat = subprocess.run(["callgrind_annotate", "--auto=no", out],
                      capture_output=True, text=True, check=True).stdout
own = {}
for row in flat.splitlines():
    m = re.match(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)$", row)
    if not m or "PROGRAM TOTALS" in row:
        continue
    name = re.sub(r"\s*\[/.*$", "", m.group(2))
    if ":" in name and not name.startswith("???"):
        name = name.split(":", 1)[1]  # drop the file
    name = re.sub(r"\(.*$", "", name)  # and the arguments
    own[name] = own.get(name, 0) + int(m.group(1).replace(",", ""))
total = sum(own.values())
print(f"{total / lines:,.0f} instructions a line over {lines:,} lines")
for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{n / lines:8,.0f}  {name[:110]}")
PY
