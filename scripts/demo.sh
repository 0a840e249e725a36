#!/usr/bin/env bash
# Builds Switchyard (installing cmake, which pingora's zlib-ng build needs, make, which the
# jemalloc build needs, and protoc, which etcd-client's gRPC build needs, when missing) and runs `switchyard demo`: two built-in backends behind the
# proxy on 127.0.0.1:8080. Extra arguments go to `switchyard demo` (see `switchyard demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
declare -A PACKAGE=([cmake]=cmake [make]=make [protoc]=protobuf-compiler)
for tool in "${!PACKAGE[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE[$tool]}")
done
# protoc's well-known types (google/protobuf/*.proto), which etcd-client's protos import: Debian
# ships them in libprotobuf-dev, only a recommendation of protobuf-compiler.
[[ -e /usr/include/google/protobuf/descriptor.proto ]] || missing+=(libprotobuf-dev)
if ((${#missing[@]})); then
  echo "demo.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec cargo run --release --quiet -- demo "$@"
