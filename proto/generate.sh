#!/usr/bin/env bash
# Regenerates the Go code for ferry's protobuf messages. OUT overrides the
# output root (the staleness test generates into a temporary folder).
set -euo pipefail
cd "$(dirname "$0")"
out=${OUT:-.}
mkdir -p "$out"
command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
plugin=$(go tool -n protoc-gen-go)
protoc --plugin=protoc-gen-go="$plugin" -I . \
  --go_out="$out" --go_opt=paths=source_relative \
  ferry/v1/ferry.proto
