#!/usr/bin/env bash
# What each rule pack costs the engine on one corpus with every pack loaded (issue 13 §4):
# engine_bench's every-pack benchmark (match + window, one core) with all of rules/, then with
# each pack taken out in turn, then with each rule named in RULES taken out. A pack whose
# absence makes the line's cost fall is what the breadth costs. It only measures and is not part
# of CI.
#   bash tools/pack_cost.sh [sshd|nginx] [ROUNDS]
#   RULES="web-request-flood web-log4shell" bash tools/pack_cost.sh nginx 3
# The corpus is engine_bench's, without attackers (BM_PrematchWindowEverythingBenign; ATTACKS=1:
# with its 30 % attack lines, BM_PrematchWindowEverything). Each line: the variant, then the
# lines/s of every round and their median. The variants run in turn within a round, so that a
# noisy machine spreads over all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="${1:-nginx}"
rounds="${2:-1}"
case "$corpus" in
  sshd) format=1 ;;
  nginx) format=3 ;;
  *) echo "usage: bash tools/pack_cost.sh [sshd|nginx] [ROUNDS]" >&2; exit 2 ;;
esac
bench=BM_PrematchWindowEverythingBenign
[ "${ATTACKS:-0}" = 1 ] && bench=BM_PrematchWindowEverything
bazel build -c opt //tests/bench:engine_bench >&2
bin="$(bazel info -c opt bazel-bin 2>/dev/null)/tests/bench/engine_bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Variants: a directory each, a copy of rules/ without a pack or without a rule.
variants=(every)
mkdir "$work/every"
cp rules/*.textproto "$work/every/"
for f in rules/*.textproto; do
  pack=$(basename "$f" .textproto)
  variants+=("-$pack")
  mkdir "$work/-$pack"
  cp rules/*.textproto "$work/-$pack/"
  rm "$work/-$pack/$pack.textproto"
done
for rule in ${RULES:-}; do
  variants+=("-$rule")
  mkdir "$work/-$rule"
  cp rules/*.textproto "$work/-$rule/"
  # The rule's block, from its "rules {" line to the next one (or the file's end).
  python3 - "$work/-$rule" "$rule" <<'PY'
import glob, re, sys
directory, rule = sys.argv[1], sys.argv[2]
found = False
for path in glob.glob(directory + "/*.textproto"):
    text = open(path).read()
    blocks = re.split(r"(?m)^(?=rules \{)", text)
    kept = [b for b in blocks
            if not (b.startswith("rules {") and re.search(r'\n  id: "%s"\n' % re.escape(rule), b))]
    if len(kept) != len(blocks):
        found = True
        open(path, "w").write("".join(kept))
if not found:
    sys.exit("pack_cost.sh: no rule with id %s in rules/" % rule)
PY
done

declare -A results
for round in $(seq "$rounds"); do
  for v in "${variants[@]}"; do
    # Run from the checkout: the single-pack fixtures read rules/ there. A variant the loader
    # refuses (a pack another needs) shows as "failed".
    out=$(PALISADE_BENCH_EVERY_PACK_DIR="$work/$v" "$bin" \
      --benchmark_filter="^$bench/format:$format/many:1\$" --benchmark_min_time=0.4 2>&1 || true)
    rate=$(grep -o 'items_per_second=[0-9.]*[kMG]' <<<"$out" | head -1 | cut -d= -f2 || true)
    results[$v]+="${rate:-failed} "
    echo "round $round: $v ${rate:-failed}" >&2
  done
done
printf '%-40s %s\n' "variant ($corpus, $bench)" "lines/s per round, median"
for v in "${variants[@]}"; do
  printf '%-40s %s\n' "$v" "$(python3 -c "
import sys
r = sys.argv[1].split()
scale = {'k': 1e3, 'M': 1e6, 'G': 1e9}
v = sorted(float(x[:-1]) * scale[x[-1]] for x in r if x != 'failed')
print(' '.join(r), '| median', f'{v[len(v) // 2] / 1e6:.2f} M' if v else 'failed')" "${results[$v]}")"
done
