#!/usr/bin/env bash
# What the hardening costs per request: instructions per request under valgrind's callgrind for
# two Switchyard binaries on the same config and load. Instruction counts are repeatable whatever
# else the machine is doing, where CPU time on a shared 2-core machine moves by 10-20 % between
# runs (benches/RESULTS.md); `benches/vs-nginx.sh` gives the CPU µs per request beside nginx.
#
#   OLD=path/to/old/switchyard NEW=path/to/new/switchyard benches/strictness-cost.sh
#
# Environment: OLD, NEW (required), MODES="http tls h2" (HTTP/1.1 plain and over TLS with wrk,
# HTTP/2 with h2load), BENCH_OUT=dir to keep the outputs. Each binary serves one catch-all route
# to a 100-byte nginx backend with the access log on, as in vs-nginx.sh; a 5 s warm-up, then 20 s
# of load whose instructions (every thread) are divided by the requests completed.
set -euo pipefail

BENCH_NAME="strictness-cost"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

[[ -n "${OLD:-}" && -n "${NEW:-}" ]] || die "set OLD and NEW to the two switchyard binaries"
[[ -x "$OLD" && -x "$NEW" ]] || die "OLD and NEW must be executables"
MODES="${MODES:-http tls h2}"
require_tools nginx wrk h2load:nghttp2-client valgrind curl
CERT="$ROOT/certs/localhost.crt"
KEY="$ROOT/certs/localhost.key"

bench_setup
KEEP_OUTPUTS="${BENCH_OUT:-}"
LOADAVG_START="$(loadavg)"
read -r BACKEND_PORT HTTP TLS <<<"$(free_ports 3)"
BODY="switchyard strictness-cost benchmark backend: a fixed response body one hundred bytes long....."
start_backend "$BACKEND_PORT" "$BODY"

write_config() { # dir
    mkdir -p "$1"
    cat >"$1/switchyard.toml" <<EOF
[server]
threads = 1
drain_timeout = "1s"
access_log = "$1/access.log"
upgrade_socket = "$1/upgrade.sock"

[[listeners]]
name = "http"
address = "127.0.0.1:$HTTP"

[[listeners]]
name = "https"
address = "127.0.0.1:$TLS"
tls = true

[[certificates]]
cert = "$CERT"
key = "$KEY"
fallback = true

[defaults]
compression = false

[[routes]]
host = "*"
service = "backend"

[services.backend.pools.main]
weight = 1
servers = ["127.0.0.1:$BACKEND_PORT"]
EOF
}

# mode_load (benches/lib.sh) aims the TLS and h2 loads at this port.
MODE_TLS_PORT="$TLS"

declare -A IR
for MODE in $MODES; do
    for v in OLD NEW; do
        SY_BIN="${!v}"
        write_config "$TMP/$MODE-$v"
        read -r n IR[$MODE:$v] <<<"$(callgrind_per_request "$TMP/$MODE-$v/switchyard.toml" "$HTTP" mode_load)"
        log "$MODE $v: $n requests, ${IR[$MODE:$v]} instructions/request"
    done
done

echo
echo "Instructions per request under callgrind, $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start $LOADAVG_START"
echo "OLD=$OLD"
echo "NEW=$NEW"
printf '%-5s  %14s  %14s  %8s\n' mode old new "new/old"
for MODE in $MODES; do
    printf '%-5s  %14s  %14s  %8s\n' "$MODE" "${IR[$MODE:OLD]}" "${IR[$MODE:NEW]}" \
        "$(awk -v a="${IR[$MODE:NEW]}" -v b="${IR[$MODE:OLD]}" 'BEGIN { printf "%.3f", a / b }')"
done
