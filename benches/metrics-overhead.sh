#!/usr/bin/env bash
# What Prometheus recording costs on the request path: the same Switchyard build, once with
# `[server] metrics = true` and once with `metrics = false`, in front of the same nginx backend.
#
#   benches/metrics-overhead.sh                 # build switchyard (release) and run
#   ROUNDS=5 DURATION=10 benches/metrics-overhead.sh
#   SWITCHYARD_BIN=target/release/switchyard benches/metrics-overhead.sh   # no build
#
# Environment (all optional):
#   ROUNDS=3           measured runs per variant; the two variants alternate, the order flips
#                      every round; the summary uses the median of each
#   DURATION=5         seconds per measured run (wrk -d)
#   WARMUP=2           seconds of unmeasured load per variant before the first round
#   CONNECTIONS=64     wrk -c
#   WRK_THREADS=2      wrk -t
#   THREADS=2          switchyard [server] threads
#   ACCESS_LOG=off     switchyard [server] access_log; "off" isolates the metrics cost (the
#                      access log is the larger per-request cost); a path measures with it on
#   SWITCHYARD_BIN     switchyard binary to use; when unset: cargo build --release
#   INSTRUCTIONS=0     1: also count instructions per request under valgrind's callgrind (one
#                      worker thread, wrk -t1 -c4 for 20 s per variant after a warm-up): slow, but
#                      repeatable to a fraction of a percent where req/s on a shared machine is not
#
# Both proxies run at once on ports picked free at run time (the idle one costs nothing), all on
# 127.0.0.1; every process started here is stopped by PID on exit and the temp dir is removed.
# The last line reads `metrics overhead rps=X%`: (median rps with metrics - without) / without;
# negative means slower with metrics. The line before it compares the proxy's own CPU time per
# request (from /proc/PID/stat), positive = more CPU with metrics: on a shared machine it is far
# steadier than req/s. See docs/metrics.md for recorded figures.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
WRK_THREADS="${WRK_THREADS:-2}"
THREADS="${THREADS:-2}"
ACCESS_LOG="${ACCESS_LOG:-off}"

say() { echo "[metrics-overhead] $*" >&2; }
fail() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------------------------------------
# Tools and binary
# ------------------------------------------------------------------------------------------------
pkgs=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
command -v curl >/dev/null 2>&1 || pkgs+=(curl)
INSTRUCTIONS="${INSTRUCTIONS:-0}"
[[ "$INSTRUCTIONS" != 1 ]] || command -v valgrind >/dev/null 2>&1 || pkgs+=(valgrind)
if ((${#pkgs[@]})); then
    say "installing ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

if [[ -n "${SWITCHYARD_BIN:-}" ]]; then
    BIN="$SWITCHYARD_BIN"
else
    say "cargo build --release --bin switchyard"
    (cd "$ROOT" && cargo build --release --bin switchyard) >&2
    BIN="$ROOT/target/release/switchyard"
fi
[[ -x "$BIN" ]] || fail "no switchyard binary at $BIN"

# ------------------------------------------------------------------------------------------------
# Temp dir and processes
# ------------------------------------------------------------------------------------------------
TMP="$(mktemp -d /tmp/switchyard-metrics-overhead.XXXXXX)"
chmod 0755 "$TMP" # nginx workers (user nobody) create temp dirs below it
STARTED=()

stop() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored TERM; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

on_exit() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do stop "$pid"; done
    rm -rf "$TMP"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# N ports that were free a moment ago on 127.0.0.1 (held open together so they differ).
ports() {
    python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

await_port() { # port pid name
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$2" 2>/dev/null || fail "$3 (pid $2) exited during start-up"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    fail "$3 is not listening on 127.0.0.1:$1 after 20 s"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
read -r BACKEND ON_HTTP ON_ADMIN OFF_HTTP OFF_ADMIN CG_HTTP CG_ADMIN <<<"$(ports 7)"

# ------------------------------------------------------------------------------------------------
# Backend: nginx, one worker, a fixed 100-byte 200
# ------------------------------------------------------------------------------------------------
mkdir -p "$TMP/backend/logs"
cat >"$TMP/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/backend/client_body;
    proxy_temp_path $TMP/backend/proxy;
    fastcgi_temp_path $TMP/backend/fastcgi;
    uwsgi_temp_path $TMP/backend/uwsgi;
    scgi_temp_path $TMP/backend/scgi;
    server {
        listen 127.0.0.1:$BACKEND;
        location / {
            default_type text/plain;
            return 200 "metrics-overhead backend: fixed body, the same for every request, 100 bytes in all............\n";
        }
    }
}
EOF
"$NGINX" -t -q -p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/logs/error.log" ||
    fail "backend nginx config test failed"
"$NGINX" -p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/logs/error.log" &
STARTED+=("$!")
await_port "$BACKEND" "$!" "backend nginx"

# ------------------------------------------------------------------------------------------------
# Switchyard twice: metrics on and off
# ------------------------------------------------------------------------------------------------
write_config() { # variant http-port admin-port metrics(true|false) threads
    local dir="$TMP/$1" log
    mkdir -p "$dir"
    log="$ACCESS_LOG"
    [[ "$log" == off || "$log" == stdout || "$log" == stderr ]] || log="$dir/access.log"
    cat >"$dir/switchyard.toml" <<EOF
# generated by benches/metrics-overhead.sh
[server]
threads = $5
drain_timeout = "2s"
access_log = "$log"
upgrade_socket = "$dir/upgrade.sock"
state_dir = "$dir/state"
metrics = $4

[[listeners]]
name = "http"
address = "127.0.0.1:$2"

[defaults]
compression = false

[[routes]]
host = "*"
service = "backend"

[services.backend.pools.main]
weight = 1
servers = ["127.0.0.1:$BACKEND"]

[admin]
address = "127.0.0.1:$3"
EOF
    "$BIN" check --config "$dir/switchyard.toml" >&2 || fail "switchyard check failed for $1"
}

start_switchyard() { # variant http-port admin-port metrics(true|false)
    local dir="$TMP/$1"
    write_config "$@" "$THREADS"
    "$BIN" serve --config "$dir/switchyard.toml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    STARTED+=("$!")
    PID[$1]=$!
    await_port "$2" "$!" "switchyard ($1)"
    await_port "$3" "$!" "switchyard admin ($1)"
    [[ "$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/")" == 200 ]] ||
        fail "switchyard ($1) does not answer 200"
}
declare -A PID
start_switchyard on "$ON_HTTP" "$ON_ADMIN" true
start_switchyard off "$OFF_HTTP" "$OFF_ADMIN" false

# ------------------------------------------------------------------------------------------------
# Load
# ------------------------------------------------------------------------------------------------
port_of() { if [[ "$1" == on ]]; then echo "$ON_HTTP"; else echo "$OFF_HTTP"; fi; }

# CPU time (user + system, clock ticks) the variant's switchyard process has used so far.
TICKS_PER_SEC="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/${PID[$1]}/stat"; }

# load variant seconds out → prints "req/s cpu-µs-per-request"; fails on socket errors or
# non-2xx answers. CPU per request is the proxy's own CPU time over the requests it served: much
# less sensitive than req/s to other work on the machine.
load() {
    local url out="$3" before after
    url="http://127.0.0.1:$(port_of "$1")/"
    before="$(cpu_ticks "$1")"
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${2}s" "$url" >"$out" 2>&1 || {
        cat "$out" >&2
        fail "wrk failed on $url"
    }
    if grep -qE 'Socket errors|Non-2xx' "$out"; then
        cat "$out" >&2
        fail "errors during the $1 run"
    fi
    after="$(cpu_ticks "$1")"
    awk -v ticks=$((after - before)) -v hz="$TICKS_PER_SEC" '
        / requests in / { n = $1 } /^Requests\/sec:/ { rps = $2 }
        END { printf "%s %.2f\n", rps, ticks / hz * 1e6 / n }' "$out"
}

say "warm-up: ${WARMUP}s per variant"
load on "$WARMUP" "$TMP/warmup-on.txt" >/dev/null
load off "$WARMUP" "$TMP/warmup-off.txt" >/dev/null

declare -A RPS=([on]="" [off]="") CPU=([on]="" [off]="")
for ((r = 1; r <= ROUNDS; r++)); do
    order=(on off)
    ((r % 2 == 0)) && order=(off on)
    for v in "${order[@]}"; do
        read -r rps cpu <<<"$(load "$v" "$DURATION" "$TMP/run-$v-$r.txt")"
        RPS[$v]+="$rps "
        CPU[$v]+="$cpu "
        echo "round $r metrics=$v rps=$rps cpu_us_per_request=$cpu"
        sleep 1
    done
done

# The "on" variant really recorded every request, the "off" one none.
counted() { # admin-port → the sum of switchyard_requests_total
    curl -sS "http://127.0.0.1:$1/metrics" |
        awk '/^switchyard_requests_total\{/ { s += $NF } END { printf "%d\n", s }'
}
ON_COUNT="$(counted "$ON_ADMIN")"
OFF_COUNT="$(counted "$OFF_ADMIN")"
((ON_COUNT > 0)) || fail "metrics=true recorded no request"
((OFF_COUNT == 0)) || fail "metrics=false still recorded $OFF_COUNT requests"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END {
    if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ON_MED="$(median <<<"${RPS[on]}")"
OFF_MED="$(median <<<"${RPS[off]}")"
ON_CPU="$(median <<<"${CPU[on]}")"
OFF_CPU="$(median <<<"${CPU[off]}")"
# Each round's two runs are back to back: their ratio cancels slow drifts of the machine's load.
PAIRED="$(paste -d' ' <(tr ' ' '\n' <<<"${RPS[on]}" | grep -v '^$') <(tr ' ' '\n' <<<"${RPS[off]}" | grep -v '^$') |
    awk '{ printf "%.4f ", ($1 - $2) / $2 * 100 }' | median)"

# Instructions per request under callgrind: zero the counters after a warm-up, run a fixed load,
# dump, divide by the requests wrk completed.
IR_LINE=""
if [[ "$INSTRUCTIONS" == 1 ]]; then
    declare -A IR
    for v in on off; do
        metrics=true
        [[ "$v" == on ]] || metrics=false
        write_config "cg-$v" "$CG_HTTP" "$CG_ADMIN" "$metrics" 1
        dir="$TMP/cg-$v"
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
            "$BIN" serve --config "$dir/switchyard.toml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
        vpid=$!
        STARTED+=("$vpid")
        for ((i = 0; i < 600; i++)); do
            curl -s -o /dev/null "http://127.0.0.1:$CG_HTTP/" && break
            kill -0 "$vpid" 2>/dev/null || fail "switchyard under valgrind exited"
            sleep 0.2
        done
        wrk -t1 -c4 -d5s "http://127.0.0.1:$CG_HTTP/" >/dev/null
        callgrind_control -z "$vpid" >/dev/null
        n="$(wrk -t1 -c4 -d20s "http://127.0.0.1:$CG_HTTP/" | awk '/ requests in / { print $1 }')"
        callgrind_control -d "$vpid" >/dev/null
        sleep 1
        # The dump is one file per thread; each has one "totals:" line.
        ir="$(cat "$dir"/callgrind.out.* | awk '/^totals:/ { s += $2 } END { printf "%.0f", s }')"
        IR[$v]="$(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.0f", i / n }')"
        echo "callgrind metrics=$v requests=$n instructions/request=${IR[$v]}"
        stop "$vpid"
    done
    IR_LINE="$(awk -v on="${IR[on]}" -v off="${IR[off]}" \
        'BEGIN { printf "metrics overhead instructions_per_request=%+.2f%% (%+d per request)", (on - off) / off * 100, on - off }')"
fi

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "switchyard threads=$THREADS access_log=$ACCESS_LOG; wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s; $ROUNDS rounds"
echo "metrics=true  rps: ${RPS[on]}(median $ON_MED; $ON_COUNT requests counted)"
echo "metrics=false rps: ${RPS[off]}(median $OFF_MED)"
echo "metrics=true  switchyard CPU µs/request: ${CPU[on]}(median $ON_CPU)"
echo "metrics=false switchyard CPU µs/request: ${CPU[off]}(median $OFF_CPU)"
awk -v on="$ON_CPU" -v off="$OFF_CPU" 'BEGIN { printf "metrics overhead cpu_per_request=%+.2f%%\n", (on - off) / off * 100 }'
awk -v p="$PAIRED" 'BEGIN { printf "metrics overhead rps, median of the per-round pairs=%+.2f%%\n", p }'
[[ -z "$IR_LINE" ]] || echo "$IR_LINE"
awk -v on="$ON_MED" -v off="$OFF_MED" 'BEGIN { printf "metrics overhead rps=%+.2f%%\n", (on - off) / off * 100 }'
