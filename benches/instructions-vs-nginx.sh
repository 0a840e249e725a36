#!/usr/bin/env bash
# User-space instructions per proxied request, nginx beside the bare pingora floor and Switchyard,
# under valgrind's callgrind on the same backend and load. Where CPU time on a shared 2-core machine
# moves by 10-20 % between runs, these counts repeat within about 1 %: they show how much of the
# gap in `benches/vs-nginx.sh`'s CPU per request is each proxy's own code (system time, the other
# part, is not counted here).
#
#   benches/instructions-vs-nginx.sh
#   SWITCHYARD_BIN=target/release/switchyard FLOOR_BIN=target/release/pingora-floor \
#       MODES=http benches/instructions-vs-nginx.sh
#
# Environment: SWITCHYARD_BIN, FLOOR_BIN (default: cargo build --release of each), PROXIES="nginx
# floor switchyard", MODES="http tls h2" (HTTP/1.1 plain and over TLS with wrk, h2 with h2load),
# BENCH_OUT=dir to keep the callgrind outputs. Each proxy runs one worker thread (nginx: one
# worker, no master process): nginx from benches/nginx.conf, Switchyard from the side-by-side
# bench config (access log off), the floor with its defaults; 5 s of warm-up, then 20 s of load
# (`-t1 -c4`; h2: 4 connections of 10 streams) whose instructions, every thread's, are divided by
# the requests completed.
set -euo pipefail

BENCH_NAME="instructions-vs-nginx"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

read -r -a PROXIES <<<"${PROXIES:-nginx floor switchyard}"
MODES="${MODES:-http tls h2}"
require_tools nginx wrk h2load:nghttp2-client valgrind curl
CERT="$ROOT/certs/localhost.crt"
KEY="$ROOT/certs/localhost.key"
NGINX="$(nginx_bin)"
for p in "${PROXIES[@]}"; do
    case "$p" in
        nginx) ;;
        switchyard) find_switchyard ;;
        floor)
            FLOOR="${FLOOR_BIN:-}"
            if [[ -z "$FLOOR" ]]; then
                log "building the floor (cargo build --release -p floor)"
                (cd "$ROOT" && cargo build --release -p floor) >&2
                FLOOR="$ROOT/target/release/pingora-floor"
            fi
            [[ -x "$FLOOR" ]] || die "pingora-floor binary not found at $FLOOR"
            ;;
        *) die "unknown proxy '$p' in PROXIES (nginx floor switchyard)" ;;
    esac
done

bench_setup
KEEP_OUTPUTS="${BENCH_OUT:-}"
LOADAVG_START="$(loadavg)"
read -r BACKEND_PORT HTTP MODE_TLS_PORT <<<"$(free_ports 3)"
BODY="switchyard-vs-nginx benchmark backend: a fixed response body that is one hundred bytes long........"
start_backend "$BACKEND_PORT" "$BODY"

# measure PROXY → "requests instructions-per-request" for $MODE
measure() {
    local dir="$TMP/$MODE-$1"
    mkdir -p "$dir/logs"
    case "$1" in
        nginx)
            fill_template "$ROOT/benches/nginx.conf" "$dir/nginx.conf" WORKERS=1 DIR="$dir" \
                HTTP_PORT="$HTTP" TLS_PORT="$MODE_TLS_PORT" BACKEND_PORT="$BACKEND_PORT" \
                CERT="$CERT" KEY="$KEY"
            callgrind_command_per_request "$dir" "$HTTP" mode_load "" \
                "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -g "master_process off;"
            ;;
        floor)
            callgrind_command_per_request "$dir" "$HTTP" mode_load "" \
                "$FLOOR" --listen "127.0.0.1:$HTTP" --tls-listen "127.0.0.1:$MODE_TLS_PORT" \
                --cert "$CERT" --key "$KEY" --upstream "127.0.0.1:$BACKEND_PORT" --threads 1 \
                --no-work-stealing
            ;;
        switchyard)
            bench_switchyard_toml "$dir" 1 "$HTTP" "$MODE_TLS_PORT" off
            "$SY_BIN" check --config "$dir/switchyard.toml" >&2 || die "switchyard check failed"
            callgrind_per_request "$dir/switchyard.toml" "$HTTP" mode_load
            ;;
    esac
}

declare -A IR
for MODE in $MODES; do
    for p in "${PROXIES[@]}"; do
        read -r n IR[$MODE:$p] <<<"$(measure "$p")"
        log "$MODE $p: $n requests, ${IR[$MODE:$p]} instructions/request"
    done
done

echo
echo "User-space instructions per request under callgrind, $(date -u '+%Y-%m-%d %H:%M UTC');" \
    "load average at start $LOADAVG_START"
[[ -z "${SY_BIN:-}" ]] || echo "switchyard: $SY_BIN"
[[ -z "${FLOOR:-}" ]] || echo "floor: $FLOOR"
printf '%-5s' mode
for p in "${PROXIES[@]}"; do printf '  %12s' "$p"; done
for p in "${PROXIES[@]}"; do [[ "$p" == nginx ]] || printf '  %12s' "$p/nginx"; done
echo
for MODE in $MODES; do
    printf '%-5s' "$MODE"
    for p in "${PROXIES[@]}"; do printf '  %12s' "${IR[$MODE:$p]}"; done
    for p in "${PROXIES[@]}"; do
        [[ "$p" == nginx ]] || printf '  %12s' "$(ratio "${IR[$MODE:$p]}" "${IR[$MODE:nginx]:-nan}")"
    done
    echo
done
