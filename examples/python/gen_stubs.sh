#!/usr/bin/env bash
# Generates the Python messages and gRPC stubs for palisade.v1 into DIR (protoc and
# grpc_python_plugin from Debian's protobuf-compiler and protobuf-compiler-grpc).
set -euo pipefail
out="${1:?usage: gen_stubs.sh DIR}"
proto_root="$(cd "$(dirname "$0")/../../proto" && pwd)"
mkdir -p "$out"
protoc -I"$proto_root" -I/usr/include --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin \
  "$proto_root"/palisade/v1/{palisade,rules,config}.proto
touch "$out/palisade/__init__.py" "$out/palisade/v1/__init__.py"
