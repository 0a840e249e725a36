#!/usr/bin/env bash
# Packs the side-by-side benchmark's peers (nginx, HAProxy, wrk, h2load, curl, openssl, taskset),
# the shared libraries they load beyond glibc, and optionally prebuilt switchyard and floor binaries
# (stripped) into one tarball, for a machine that has no package registry to install them from.
#
#   benches/pack-tools.sh OUT.tgz [SWITCHYARD_BIN [FLOOR_BIN]]
#
# On the other machine (same CPU architecture, glibc at least this machine's):
#
#   mkdir -p /tmp/tools && tar xzf OUT.tgz -C /tmp/tools && export PATH=/tmp/tools/bin:$PATH
#   SWITCHYARD_BIN=/tmp/tools/switchyard FLOOR_BIN=/tmp/tools/pingora-floor benches/vs-nginx.sh
#
# Each tool runs through a wrapper in bin/ that puts the packed libraries first on its library path
# and executes it (same PID, so the benchmark's CPU accounting holds); nothing else on that machine
# sees those libraries.
set -euo pipefail

BENCH_NAME="pack-tools"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

OUT="${1:?usage: benches/pack-tools.sh OUT.tgz [SWITCHYARD_BIN [FLOOR_BIN]]}"
require_tools nginx haproxy wrk h2load:nghttp2-client curl openssl taskset:util-linux

STAGE="$(mktemp -d /tmp/switchyard-pack-tools.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/real" "$STAGE/lib"

for tool in "$(nginx_bin)" "$(command -v haproxy)" "$(command -v wrk)" "$(command -v h2load)" \
    "$(command -v curl)" "$(command -v openssl)" "$(command -v taskset)"; do
    name="$(basename "$tool")"
    cp -L "$tool" "$STAGE/real/$name"
    # Every library the loader resolves, except glibc's own (the other machine has its own, and
    # mixing two is what breaks).
    ldd "$tool" | awk '$3 ~ /^\// { print $3 }' | while read -r lib; do
        case "$(basename "$lib")" in
            libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | \
                libutil.so.* | libanl.so.* | libnss_*.so.* | ld-linux*) ;;
            *) cp -Ln "$lib" "$STAGE/lib/" ;;
        esac
    done
    cat >"$STAGE/bin/$name" <<EOF
#!/bin/sh
# packed by benches/pack-tools.sh: $tool with the libraries beside it
d="\$(dirname "\$(readlink -f "\$0")")/.."
LD_LIBRARY_PATH="\$d/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$d/real/$name" "\$@"
EOF
    chmod 0755 "$STAGE/bin/$name"
done
for bin in "${@:2}"; do
    [[ -x "$bin" ]] || die "$bin is not an executable"
    strip -o "$STAGE/$(basename "$bin")" "$bin"
done
tar czf "$OUT" -C "$STAGE" .
log "$OUT: $(du -h "$OUT" | cut -f1) ($(ls "$STAGE/bin" | tr '\n' ' ')$(ls "$STAGE/lib" | wc -l) libraries; ${*:2})"
