#!/usr/bin/env bash
# Builds Switchyard (installing cmake, which pingora's zlib-ng build needs, and make, which the
# jemalloc build needs, when missing) and runs `switchyard demo`: two built-in backends behind the
# proxy on 127.0.0.1:8080. Extra arguments go to `switchyard demo` (see `switchyard demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in cmake make; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "demo.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec cargo run --release --quiet -- demo "$@"
