#!/usr/bin/env bash
# The binaries' allocator (third_party:tcmalloc): at run time, malloc binds to tcmalloc in the
# plain build, and to the sanitizer's (never tcmalloc) under --config=asan. The dynamic linker's
# own account of the bindings says which; a link that dropped the library (--as-needed) fails.
#   allocator_test.sh tcmalloc|not-tcmalloc BINARY
set -euo pipefail
want="$1"  # tcmalloc | not-tcmalloc
bin="$2"
bindings=$(LD_DEBUG=bindings "$bin" --help 2>&1 >/dev/null | grep "normal symbol \`malloc'" || true)
if [ -z "$bindings" ]; then
  echo "FAIL: the dynamic linker reported no binding of malloc for $bin" >&2
  exit 1
fi
if grep -q "to [^ ]*libtcmalloc_minimal" <<<"$bindings"; then
  got=tcmalloc
else
  got=not-tcmalloc
fi
if [ "$got" != "$want" ]; then
  echo "FAIL: malloc in $bin is $got, expected $want; the bindings:" >&2
  head -5 <<<"$bindings" >&2
  exit 1
fi
echo "PASS: malloc in $bin is $got"
