# shellcheck shell=bash
# Shared by the benchmark scripts in benches/: tools, the switchyard binary, the temp dir and the
# processes started in it, free ports, the nginx backend. Source it from a script with
#
#   BENCH_NAME=my-bench                       # prefix of the log lines, name of the temp dir
#   source "$(dirname "$0")/lib.sh"
#
# and call bench_setup before starting anything.

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_NAME="${BENCH_NAME:?set BENCH_NAME before sourcing benches/lib.sh}"

# Optional CPU pinning, for a machine with cores to spare (each a `taskset -c` list, e.g. 0-1):
# CPUS_BACKEND for the nginx backend; the scripts that honour CPUS_PROXY and CPUS_LOAD say so.
# Each *_ON array is a command prefix: taskset executes the command, so $! stays its PID.
pin_prefix() { # CPUS → the words of the prefix, one per line (none when CPUS is empty)
    [[ -z "$1" ]] || printf '%s\n' taskset -c "$1"
}
mapfile -t BACKEND_ON < <(pin_prefix "${CPUS_BACKEND:-}")
# BACKEND_WORKERS=1: the backend nginx's worker_processes (raise it where the proxies are faster
# than one backend worker).
BACKEND_WORKERS="${BACKEND_WORKERS:-1}"

log() { echo "[$BENCH_NAME] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------------------------------------------
# Tools and binaries
# ------------------------------------------------------------------------------------------------

# require_tools COMMAND[:PACKAGE]...: apt-get installs the package (by default named like the
# command) of every command that is missing.
require_tools() {
    local spec cmd missing=()
    for spec in "$@"; do
        cmd="${spec%%:*}"
        command -v "$cmd" >/dev/null 2>&1 && continue
        [[ "$cmd" == nginx && -x /usr/sbin/nginx ]] && continue   # not on every PATH
        missing+=("${spec#*:}")
    done
    ((${#missing[@]})) || return 0
    log "installing missing packages: ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# Sets SY_BIN: $SWITCHYARD_BIN when set, else a fresh `cargo build --release`.
find_switchyard() {
    if [[ -n "${SWITCHYARD_BIN:-}" ]]; then
        SY_BIN="$SWITCHYARD_BIN"
    else
        log "building switchyard (cargo build --release)"
        (cd "$ROOT" && cargo build --release --bin switchyard) >&2
        SY_BIN="$ROOT/target/release/switchyard"
    fi
    [[ -x "$SY_BIN" ]] || die "switchyard binary not found at $SY_BIN"
}

# ------------------------------------------------------------------------------------------------
# Temp dir, process bookkeeping, cleanup
# ------------------------------------------------------------------------------------------------

# Creates TMP (/tmp/switchyard-$BENCH_NAME.XXXXXX) and the exit trap that stops every PID in PIDS
# and removes TMP. Set KEEP_OUTPUTS to a directory to have TMP's files copied there first.
bench_setup() {
    TMP="$(mktemp -d "/tmp/switchyard-$BENCH_NAME.XXXXXX")"
    chmod 0755 "$TMP"   # nginx workers (user nobody) create temp dirs below it
    PIDS=()
    KEEP_OUTPUTS=""
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# stop_pid PID: TERM, up to 15 s for a graceful stop, then KILL.
# The head of a bench's Switchyard config: [server] (THREADS workers, access log off, paths under
# DIR) and one plain listener "http" on 127.0.0.1:PORT.
server_toml() { # dir port
    cat <<EOF
[server]
threads = $THREADS
drain_timeout = "2s"
access_log = "off"
upgrade_socket = "$1/upgrade.sock"
state_dir = "$1/state"

[[listeners]]
name = "http"
address = "127.0.0.1:$2"
EOF
}

stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on TERM, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Copies TMP's files to $1; access logs grow to hundreds of MB: only their line count and last
# lines are kept.
keep_outputs() {
    local dest="$1"
    mkdir -p "$dest"
    (cd "$TMP" && find . -type f ! -name '*.h2log' ! -name 'access.log' -print0 |
        xargs -0 -r cp --parents -t "$dest") || true
    (cd "$TMP" && find . -type f -name 'access.log' -print0 |
        while IFS= read -r -d '' f; do
            mkdir -p "$dest/$(dirname "$f")"
            { echo "# $(wc -l <"$f") lines; the last 20:"; tail -n 20 "$f"; } >"$dest/$f.tail"
        done) || true
    log "raw outputs copied to $dest"
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ -n "$KEEP_OUTPUTS" && -d "$TMP" ]]; then keep_outputs "$KEEP_OUTPUTS"; fi
    rm -rf "$TMP"
    exit "$rc"
}

# ------------------------------------------------------------------------------------------------
# Ports
# ------------------------------------------------------------------------------------------------

# free_ports N: N distinct TCP ports free on 127.0.0.1 a moment ago (bound together, then
# released), separated by spaces.
free_ports() {
    local n="$1"
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$n" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
    else
        # bash fallback: random high ports that nothing answers on
        local ports=() p
        while ((${#ports[@]} < n)); do
            p=$((20000 + RANDOM % 40000))
            [[ " ${ports[*]} " == *" $p "* ]] && continue
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ports+=("$p"); fi
        done
        echo "${ports[*]}"
    fi
}

# wait_port PORT PID WHAT: until 127.0.0.1:PORT accepts connections (20 s at most); fails when
# PID exits first.
wait_port() {
    local port="$1" pid="$2" what="$3" i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$what (pid $pid) exited during start-up"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$what did not listen on 127.0.0.1:$port within 20 s"
}

# ------------------------------------------------------------------------------------------------
# Backend
# ------------------------------------------------------------------------------------------------

# start_backend PORT BODY: nginx with BACKEND_WORKERS workers (1) in $TMP/backend answering every request with 200
# and BODY plus a newline, except /16k: 200 with a 16 KB body (16,384 bytes: 16,383 "x" and a
# newline, a static file); sets BACKEND_PID once it listens.
start_backend() {
    local port="$1" body="$2" dir="$TMP/backend" nginx
    nginx="$(nginx_bin)"
    mkdir -p "$dir/logs" "$dir/www"
    { head -c 16383 /dev/zero | tr '\0' x; echo; } >"$dir/www/16k"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $BACKEND_WORKERS;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type text/plain;
            return 200 "$body\n";
        }
        location = /16k {
            default_type text/plain;
            etag off;
            root $dir/www;
        }
    }
}
EOF
    "$nginx" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" ||
        die "backend nginx config test failed"
    "${BACKEND_ON[@]}" "$nginx" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
    BACKEND_PID=$!
    PIDS+=("$BACKEND_PID")
    wait_port "$port" "$BACKEND_PID" "backend nginx"
}

# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

# The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# wrk prints latency like "1.23ms", "456.00us", "1.02s", "2.00m"; convert to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (f < 0) { print "nan"; exit } printf "%.3f\n", n * f }'
}

# ratio A B → A / B with two decimals; "n/a" when either is missing or B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

# The median of the numbers on stdin (separated by spaces or newlines); "nan" when there is none.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# paired_median "a1 a2 …" "b1 b2 …" → the median of the per-round differences (a - b) / b in %.
# Each round's two runs are back to back: their ratio cancels slow drifts of the machine's load.
paired_median() {
    paste -d' ' <(tr ' ' '\n' <<<"$1" | grep -v '^$') <(tr ' ' '\n' <<<"$2" | grep -v '^$') |
        awk '{ printf "%.4f ", ($1 - $2) / $2 * 100 }' | median
}

# ------------------------------------------------------------------------------------------------
# A/B runs of one Switchyard build with two configs (the overhead benches)
# ------------------------------------------------------------------------------------------------

# CPU time (user + system, clock ticks) process PID has used so far.
# shellcheck disable=SC2034 # used by the scripts that source this file
TICKS_PER_SEC="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# CPU ticks used so far by process PID and its direct children (nginx's workers), user and system
# apart (fields 14 and 15 of /proc/PID/stat, every thread of each process): prints "user system".
tree_cpu_ticks_split() {
    local pid="$1" user=0 sys=0 u s proc
    for proc in "$pid" $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
        read -r u s < <(awk '{ print $14, $15 }' "/proc/$proc/stat" 2>/dev/null || echo 0 0)
        user=$((user + ${u:-0}))
        sys=$((sys + ${s:-0}))
    done
    echo "$user $sys"
}

# CPU ticks (user + system) used so far by process PID and its direct children (nginx's workers).
tree_cpu_ticks() {
    local user sys
    read -r user sys <<<"$(tree_cpu_ticks_split "$1")"
    echo $((user + sys))
}

# ab_load PID URL SECONDS OUT → prints "req/s cpu-µs-per-request": wrk -t$WRK_THREADS
# -c$CONNECTIONS on URL for SECONDS (output in OUT), failing on socket errors or non-2xx answers.
# CPU per request is process PID's own CPU time over the requests it served: much less sensitive
# than req/s to other work on the machine.
ab_load() {
    local pid="$1" url="$2" out="$4" before after
    before="$(cpu_ticks "$pid")"
    # WRK_SCRIPT (optional): a wrk Lua script, e.g. one that sets request headers.
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${3}s" ${WRK_SCRIPT:+-s "$WRK_SCRIPT"} "$url" >"$out" 2>&1 || {
        cat "$out" >&2
        die "wrk failed on $url"
    }
    if grep -qE 'Socket errors|Non-2xx' "$out"; then
        cat "$out" >&2
        die "errors during the run on $url"
    fi
    after="$(cpu_ticks "$pid")"
    awk -v ticks=$((after - before)) -v hz="$TICKS_PER_SEC" '
        / requests in / { n = $1 } /^Requests\/sec:/ { rps = $2 }
        END { printf "%s %.2f\n", rps, ticks / hz * 1e6 / n }' "$out"
}

# ab_rounds A B LABEL: ROUNDS measured runs of variants A and B, alternating (the order flips
# every round), each `load VARIANT $DURATION OUT` (the caller's function, printing "req/s cpu");
# appends to the caller's RPS[variant] and CPU[variant] and prints one line per run.
ab_rounds() {
    local a="$1" b="$2" label="$3" r v rps cpu order
    for ((r = 1; r <= ROUNDS; r++)); do
        order=("$a" "$b")
        ((r % 2 == 0)) && order=("$b" "$a")
        for v in "${order[@]}"; do
            read -r rps cpu <<<"$(load "$v" "$DURATION" "$TMP/run-$v-$r.txt")"
            RPS[$v]+="$rps "
            CPU[$v]+="$cpu "
            echo "round $r $label=$v rps=$rps cpu_us_per_request=$cpu"
            sleep 1
        done
    done
}

# start_variant name config http-port admin-port: serves `config`, waits for both ports and a 200
# (asked with VARIANT_AUTH=user:password as basic auth when set);
# the process goes into PIDS and PID[name] (the caller declares `declare -A PID`).
start_variant() {
    local dir
    dir="$(dirname "$2")"
    "$SY_BIN" serve --config "$2" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PIDS+=("$!")
    # shellcheck disable=SC2034 # PID belongs to the caller
    PID[$1]=$!
    wait_port "$3" "$!" "switchyard ($1)"
    wait_port "$4" "$!" "switchyard admin ($1)"
    [[ "$(curl -sS ${VARIANT_AUTH:+-u "$VARIANT_AUTH"} -o /dev/null -w '%{http_code}' "http://127.0.0.1:$3/")" == 200 ]] ||
        die "switchyard ($1) does not answer 200"
}

# fill_template SRC DEST NAME=VALUE...: SRC with every @NAME@ replaced by VALUE.
fill_template() {
    local src="$1" dest="$2" kv args=()
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$src" >"$dest"
    ! grep -n '^[^#]*@[A-Z_]*@' "$dest" >&2 || die "$dest: placeholders left unfilled"
}

# bench_switchyard_toml DIR THREADS HTTP_PORT TLS_PORT ACCESS_LOG: writes DIR/switchyard.toml, the
# side-by-side benches' Switchyard (one catch-all route to the backend on $BACKEND_PORT, no limits,
# the four response headers of benches/nginx.conf, compression off, h2 on the TLS listener; the
# certificate is $CERT / $KEY). REUSEPORT=0 turns the listeners' SO_REUSEPORT off.
bench_switchyard_toml() {
    cat >"$1/switchyard.toml" <<CONF
# generated by benches/lib.sh (bench_switchyard_toml)
[server]
threads = $2
reuseport = $([[ "${REUSEPORT:-1}" == 0 ]] && echo false || echo true)
drain_timeout = "2s"
access_log = "$5"
upgrade_socket = "$1/upgrade.sock"
pid_file = "$1/switchyard.pid"

[[listeners]]
name = "http"
address = "127.0.0.1:$3"

[[listeners]]
name = "https"
address = "127.0.0.1:$4"
tls = true
h2 = true

[[certificates]]
cert = "$CERT"
key = "$KEY"
fallback = true

[defaults]
connect_timeout = "30s"
read_timeout = "60s"
send_timeout = "60s"
max_body_size = "10MB"
compression = false

[defaults.response_headers]
Strict-Transport-Security = "max-age=63072000; includeSubDomains"
X-Content-Type-Options = "nosniff"
X-Frame-Options = "DENY"
Referrer-Policy = "strict-origin-when-cross-origin"

[[routes]]
host = "*"
service = "backend"

[services.backend]
balance = "round_robin"

[services.backend.pools.main]
weight = 1
servers = ["127.0.0.1:$BACKEND_PORT"]
CONF
}

# mode_load OUT LOAD-ARGS... URL: the load callgrind_per_request runs (`-t1 -c4 -dNs URL`), in
# $MODE: http is wrk on URL; tls is wrk on URL's TLS twin (https, port $MODE_TLS_PORT); h2 is
# h2load there with as many connections and 10 streams each, its count written as wrk writes it.
mode_load() {
    local out="$1"
    shift
    local args=("$@") url="${*: -1}" tls_url
    unset 'args[${#args[@]}-1]'
    tls_url="$(sed -E "s|^http://([^:/]+):[0-9]+|https://\\1:$MODE_TLS_PORT|" <<<"$url")"
    case "$MODE" in
        http) wrk "${args[@]}" "$url" >"$out" ;;
        tls) wrk "${args[@]}" "$tls_url" >"$out" ;;
        h2)
            local secs="${args[2]#-d}"
            h2load -c4 -m10 -t1 -D "${secs%s}" "$tls_url" >"$out.h2"
            awk '/^requests:/ { print $8 " requests in (h2load, succeeded)" }' "$out.h2" >"$out"
            ;;
        *) die "mode_load: unknown MODE '$MODE'" ;;
    esac
}

# callgrind_per_request config http-port wrk-function [after-function]
#   → prints "requests instructions-per-request".
# Runs the config under valgrind's callgrind, warms up with `wrk-function out -t1 -c4 -d5s URL`,
# zeroes the counters, runs `wrk-function out -t1 -c4 -d20s URL`, dumps and divides the
# instructions of every thread by the requests wrk completed. `after-function`, if given, runs
# after the dump while the process still serves, its output going to DIR/after.txt next to the
# config. Stops the process before returning.
callgrind_per_request() {
    callgrind_command_per_request "$(dirname "$1")" "$2" "$3" "${4:-}" "$SY_BIN" serve --config "$1"
}

# callgrind_command_per_request dir http-port wrk-function after-function command...
#   → prints "requests instructions-per-request", as callgrind_per_request does for any proxy's
# command (one process that serves on http-port; its outputs and callgrind's go to dir).
callgrind_command_per_request() {
    local dir="$1" port="$2" run="$3" after="$4" vpid n ir i
    shift 4
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
        "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    vpid=$!
    PIDS+=("$vpid")
    for ((i = 0; i < 600; i++)); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        kill -0 "$vpid" 2>/dev/null || die "$1 under valgrind exited"
        sleep 0.2
    done
    "$run" "$dir/warmup.txt" -t1 -c4 -d5s "http://127.0.0.1:$port/"
    callgrind_control -z "$vpid" >/dev/null
    "$run" "$dir/run.txt" -t1 -c4 -d20s "http://127.0.0.1:$port/"
    callgrind_control -d "$vpid" >/dev/null
    n="$(awk '/ requests in / { print $1 }' "$dir/run.txt")"
    [[ -z "$after" ]] || "$after" >"$dir/after.txt"
    sleep 1
    # The dump is one file per thread; each has one "totals:" line.
    ir="$(cat "$dir"/callgrind.out.* | awk '/^totals:/ { s += $2 } END { printf "%.0f", s }')"
    stop_pid "$vpid"
    awk -v i="$ir" -v n="$n" 'BEGIN { printf "%d %.0f\n", n, i / n }'
}
