#!/usr/bin/env bash
# Side-by-side benchmark: Switchyard, nginx, HAProxy and a bare pingora proxy (the floor) as reverse
# proxies in front of the same backend.
#
#   benches/vs-nginx.sh                      # build switchyard and the floor (release), run everything
#   DURATION=5 benches/vs-nginx.sh           # shorter runs
#   SWITCHYARD_BIN=path/to/switchyard benches/vs-nginx.sh   # use this binary, do not build
#   PROXIES="nginx switchyard" MODES=http SIZES=100 benches/vs-nginx.sh   # a subset
#
# Environment (all optional):
#   DURATION=10        seconds of measured load per proxy and cell
#   WARMUP=3           seconds of warm-up load per proxy and cell (not measured)
#   THREADS=2          workers of every proxy: nginx worker_processes, HAProxy nbthread, the
#                      floor's and switchyard's threads
#   CONNECTIONS=64     client connections (wrk -c, h2load -c)
#   STREAMS=10         concurrent streams per h2 connection (h2load -m)
#   LOAD_THREADS=2     threads of the load generator (wrk -t, h2load -t)
#   ROUNDS=1           measured runs per proxy and cell (the order rotates); the table shows the median
#   PROXIES="nginx haproxy floor switchyard switchyard-log"   the proxies to run, in this order
#   MODES="http tls h2 conn"   http: HTTP/1.1 (wrk); tls: HTTP/1.1 over TLS (wrk); h2: HTTP/2 over
#                      TLS (h2load); conn: a new TLS connection per request (wrk, Connection: close)
#   SIZES="100 16k"    answer sizes for http, tls and h2: 100 bytes (/) and 16 KB (/16k); conn
#                      always asks for the 100-byte answer
#   SWITCHYARD_BIN     switchyard binary to use; when unset: cargo build --release
#   FLOOR_BIN          pingora-floor binary to use; when unset: cargo build --release -p floor
#   FLOOR_WORK_STEALING=1  run the floors with pingora's default work-stealing runtime (by default
#                      they run like Switchyard: one single-threaded runtime per worker)
#   FLOOR_UNPATCHED_BIN  a pingora-floor built on the published pingora 0.9.1 (no vendor patches,
#                      see benches/RESULTS.md): adds the proxy floor-0.9.1 after floor
#   SWITCHYARD_BASE_BIN  a second switchyard binary to hold SWITCHYARD_BIN against in the same run
#                      (another commit, another build): adds the proxy switchyard-base (the bench
#                      config, access log off) after switchyard, and a summary line vs-base
#                      (switchyard / switchyard-base)
#   REUSEPORT=0        run switchyard with [server] reuseport = false (one listening socket per
#                      address, connections handed to threads at random) instead of its default
#                      (one SO_REUSEPORT socket per worker thread, vendor patch 25)
#   CPUS_PROXY, CPUS_BACKEND, CPUS_LOAD  pin the proxies, the nginx backend and the load generator
#                      to these CPUs (taskset -c lists, e.g. 0-1, 2-5 and 6-9), for a machine with
#                      cores to spare; BACKEND_WORKERS=1 is the backend's worker_processes
#   SKIP_SWITCHYARD=1  leave switchyard and switchyard-log out (to check the harness); their ratios
#                      then read n/a
#   BENCH_OUT=dir      copy the configs, raw tool outputs and logs there before the temp dir goes
#   PERF=1             also profile each proxy during its first measured run of each cell
#                      (perf record at 999 Hz on its processes) and print the top symbols by
#                      self time (perf report --no-children), kernel and user space apart;
#                      PERF_CALLGRAPH=dwarf for call chains through code without frame pointers
#                      (keep them with BENCH_OUT=dir, read them with perf report -G)
#
# Everything listens on 127.0.0.1 only, on ports picked free at run time. Every process started
# here is stopped by PID on exit and the temp dir is removed. See benches/RESULTS.md.
set -euo pipefail

BENCH_NAME="vs-nginx"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
STREAMS="${STREAMS:-10}"
LOAD_THREADS="${LOAD_THREADS:-2}"
mapfile -t PROXY_ON < <(pin_prefix "${CPUS_PROXY:-}")
mapfile -t LOAD_ON < <(pin_prefix "${CPUS_LOAD:-}")
ROUNDS="${ROUNDS:-1}"
SKIP_SWITCHYARD="${SKIP_SWITCHYARD:-0}"
read -r -a PROXIES <<<"${PROXIES:-nginx haproxy floor switchyard switchyard-log}"
read -r -a MODES <<<"${MODES:-http tls h2 conn}"
read -r -a SIZES <<<"${SIZES:-100 16k}"
CERT="$ROOT/certs/localhost.crt"
KEY="$ROOT/certs/localhost.key"
CA="$ROOT/certs/test-ca.crt"

has() { # word list...: is word one of the list?
    local w="$1" x
    shift
    for x in "$@"; do [[ "$x" == "$w" ]] && return 0; done
    return 1
}

if [[ "$SKIP_SWITCHYARD" == "1" ]]; then
    kept=()
    for p in "${PROXIES[@]}"; do [[ "$p" == switchyard* ]] || kept+=("$p"); done
    PROXIES=("${kept[@]}")
fi
if [[ -n "${FLOOR_UNPATCHED_BIN:-}" ]] && ! has floor-0.9.1 "${PROXIES[@]}"; then
    kept=()
    for p in "${PROXIES[@]}"; do
        kept+=("$p")
        [[ "$p" == floor ]] && kept+=(floor-0.9.1)
    done
    has floor-0.9.1 "${kept[@]}" || kept+=(floor-0.9.1)
    PROXIES=("${kept[@]}")
fi
if [[ -n "${SWITCHYARD_BASE_BIN:-}" && "$SKIP_SWITCHYARD" != 1 ]] && ! has switchyard-base "${PROXIES[@]}"; then
    kept=()
    for p in "${PROXIES[@]}"; do
        kept+=("$p")
        [[ "$p" == switchyard ]] && kept+=(switchyard-base)
    done
    has switchyard-base "${kept[@]}" || kept+=(switchyard-base)
    PROXIES=("${kept[@]}")
fi
((${#PROXIES[@]})) || die "PROXIES is empty"
for p in "${PROXIES[@]}"; do
    case "$p" in
        nginx | haproxy | floor | switchyard | switchyard-log) ;;
        floor-0.9.1) [[ -x "${FLOOR_UNPATCHED_BIN:-}" ]] || die "floor-0.9.1 needs FLOOR_UNPATCHED_BIN" ;;
        switchyard-base) [[ -x "${SWITCHYARD_BASE_BIN:-}" ]] || die "switchyard-base needs SWITCHYARD_BASE_BIN" ;;
        *) die "unknown proxy '$p' in PROXIES (nginx haproxy floor floor-0.9.1 switchyard switchyard-log switchyard-base)" ;;
    esac
done
for m in "${MODES[@]}"; do has "$m" http tls h2 conn || die "unknown mode '$m' in MODES (http tls h2 conn)"; done
for s in "${SIZES[@]}"; do has "$s" 100 16k || die "unknown size '$s' in SIZES (100 16k)"; done

# The cells: MODE-SIZE for http, tls and h2; conn alone (the 100-byte answer).
CELLS=()
for m in "${MODES[@]}"; do
    if [[ "$m" == conn ]]; then CELLS+=(conn); else for s in "${SIZES[@]}"; do CELLS+=("$m-$s"); done; fi
done
((${#CELLS[@]})) || die "no cell to run (MODES and SIZES)"

# ------------------------------------------------------------------------------------------------
# Tools and binaries
# ------------------------------------------------------------------------------------------------
require_tools nginx haproxy wrk h2load:nghttp2-client openssl curl
NGINX="$(nginx_bin)"

if has switchyard "${PROXIES[@]}" || has switchyard-log "${PROXIES[@]}"; then find_switchyard; fi
if has floor "${PROXIES[@]}"; then
    if [[ -n "${FLOOR_BIN:-}" ]]; then
        FLOOR="$FLOOR_BIN"
    else
        log "building the floor (cargo build --release -p floor)"
        (cd "$ROOT" && cargo build --release -p floor) >&2
        FLOOR="$ROOT/target/release/pingora-floor"
    fi
    [[ -x "$FLOOR" ]] || die "pingora-floor binary not found at $FLOOR"
fi

[[ -r "$CERT" && -r "$KEY" ]] || die "missing $CERT / $KEY (run certs/make-certs.sh)"

# Temp dir $TMP; every PID in PIDS is stopped on exit, BENCH_OUT gets a copy of $TMP first.
bench_setup
KEEP_OUTPUTS="${BENCH_OUT:-}"

# Other work on the machine skews the figures: note the load average before anything starts.
LOADAVG_START="$(loadavg)"

# ------------------------------------------------------------------------------------------------
# Backend: its own nginx, one worker, a fixed 100-byte answer on / and a 16 KB one on /16k
# ------------------------------------------------------------------------------------------------
read -r BACKEND_PORT <<<"$(free_ports 1)"
# 99 characters + "\n" = 100 bytes
BODY="switchyard-vs-nginx benchmark backend: a fixed response body that is one hundred bytes long........"
start_backend "$BACKEND_PORT" "$BODY"
BODY_LEN="$(curl -sS "http://127.0.0.1:$BACKEND_PORT/" | wc -c)"
BODY16_LEN="$(curl -sS "http://127.0.0.1:$BACKEND_PORT/16k" | wc -c)"
[[ "$BODY_LEN" == 100 && "$BODY16_LEN" == 16384 ]] ||
    die "backend bodies are $BODY_LEN and $BODY16_LEN bytes, not 100 and 16384"
log "backend: nginx pid $BACKEND_PID on 127.0.0.1:$BACKEND_PORT (bodies $BODY_LEN and $BODY16_LEN bytes)"

# ------------------------------------------------------------------------------------------------
# The proxies: each gets a plain HTTP port and a TLS port (HTTP/1.1 and h2 by ALPN)
# ------------------------------------------------------------------------------------------------
declare -A HTTP_PORT TLS_PORT PID_OF
read -r -a ports <<<"$(free_ports $((2 * ${#PROXIES[@]})))"
for i in "${!PROXIES[@]}"; do
    HTTP_PORT[${PROXIES[$i]}]="${ports[$((2 * i))]}"
    TLS_PORT[${PROXIES[$i]}]="${ports[$((2 * i + 1))]}"
done

# started NAME PID: records the proxy's PID and waits for both its ports.
started() {
    PID_OF[$1]="$2"
    PIDS+=("$2")
    wait_port "${HTTP_PORT[$1]}" "$2" "$1"
    wait_port "${TLS_PORT[$1]}" "$2" "$1"
    log "$1: pid $2, http 127.0.0.1:${HTTP_PORT[$1]}, tls+h2 127.0.0.1:${TLS_PORT[$1]}"
    [[ -z "${CPUS_PROXY:-}" ]] || log "$1: $(taskset -pc "$2")"
}

start_nginx() {
    local dir="$TMP/nginx"
    mkdir -p "$dir/logs"
    fill_template "$ROOT/benches/nginx.conf" "$dir/nginx.conf" WORKERS="$THREADS" DIR="$dir" \
        HTTP_PORT="${HTTP_PORT[nginx]}" TLS_PORT="${TLS_PORT[nginx]}" BACKEND_PORT="$BACKEND_PORT" \
        CERT="$CERT" KEY="$KEY"
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" ||
        die "proxy nginx config test failed"
    "${PROXY_ON[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
    started nginx $!
}

start_haproxy() {
    local dir="$TMP/haproxy"
    mkdir -p "$dir"
    # HAProxy takes the certificate chain and its key from one PEM file.
    cat "$CERT" "$KEY" >"$dir/localhost.pem"
    fill_template "$ROOT/benches/haproxy.cfg" "$dir/haproxy.cfg" THREADS="$THREADS" \
        HTTP_PORT="${HTTP_PORT[haproxy]}" TLS_PORT="${TLS_PORT[haproxy]}" BACKEND_PORT="$BACKEND_PORT" \
        PEM="$dir/localhost.pem"
    haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy config check failed"
    "${PROXY_ON[@]}" haproxy -db -f "$dir/haproxy.cfg" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    started haproxy $!
}

start_floor() { # name binary
    local dir="$TMP/$1" args=()
    mkdir -p "$dir"
    args=(--listen "127.0.0.1:${HTTP_PORT[$1]}" --tls-listen "127.0.0.1:${TLS_PORT[$1]}"
        --cert "$CERT" --key "$KEY" --upstream "127.0.0.1:$BACKEND_PORT" --threads "$THREADS")
    # Like Switchyard's default (`work_stealing = false`), unless FLOOR_WORK_STEALING=1.
    [[ "${FLOOR_WORK_STEALING:-0}" == 1 ]] || args+=(--no-work-stealing)
    echo "$2 ${args[*]}" >"$dir/command"
    "${PROXY_ON[@]}" "$2" "${args[@]}" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    started "$1" $!
}

# start_switchyard NAME ACCESS_LOG [BINARY]: the bench config (one route, no limits) with [server]
# access_log = ACCESS_LOG, served by BINARY (default: SY_BIN).
start_switchyard() {
    local dir="$TMP/$1" bin="${3:-$SY_BIN}"
    mkdir -p "$dir"
    bench_switchyard_toml "$dir" "$THREADS" "${HTTP_PORT[$1]}" "${TLS_PORT[$1]}" "$2"
    "$bin" check --config "$dir/switchyard.toml" >&2 || die "$1: switchyard check failed"
    "${PROXY_ON[@]}" "$bin" serve --config "$dir/switchyard.toml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    started "$1" $!
}

for p in "${PROXIES[@]}"; do
    case "$p" in
        nginx) start_nginx ;;
        haproxy) start_haproxy ;;
        floor) start_floor floor "$FLOOR" ;;
        floor-0.9.1) start_floor floor-0.9.1 "$FLOOR_UNPATCHED_BIN" ;;
        # the bench config: access log off
        switchyard) start_switchyard switchyard off ;;
        # the reference config's default: an access-log line per request (JSON), here to a file
        switchyard-log) start_switchyard switchyard-log "$TMP/switchyard-log/access.log" ;;
        # SWITCHYARD_BASE_BIN with the bench config, to hold switchyard against
        switchyard-base) start_switchyard switchyard-base off "$SWITCHYARD_BASE_BIN" ;;
    esac
done

# ------------------------------------------------------------------------------------------------
# Sanity: each proxy answers 200 with the backend's exact body in every cell
# ------------------------------------------------------------------------------------------------
cell_mode() { echo "${1%%-*}"; }
# The backend path of a cell: / (100 bytes) or /16k.
cell_path() { if [[ "$1" == *-16k ]]; then echo /16k; else echo /; fi; }

url_for() { # proxy cell
    local m
    m="$(cell_mode "$2")"
    if [[ "$m" == http ]]; then
        echo "http://127.0.0.1:${HTTP_PORT[$1]}$(cell_path "$2")"
    else
        echo "https://127.0.0.1:${TLS_PORT[$1]}$(cell_path "$2")"
    fi
}

for p in "${PROXIES[@]}"; do
    for c in "${CELLS[@]}"; do
        m="$(cell_mode "$c")"
        url="$(url_for "$p" "$c")"
        case "$m" in
            http) opts=(--http1.1) ;;
            tls) opts=(--http1.1 --cacert "$CA") ;;
            h2) opts=(--http2 --cacert "$CA") ;;
            conn) opts=(--http1.1 --tlsv1.3 --cacert "$CA" -H 'Connection: close' -v) ;;
        esac
        out="$(curl -sS -o "$TMP/check.body" -w '%{http_code} %{http_version}' "${opts[@]}" "$url" 2>"$TMP/check.err")" || {
            cat "$TMP/check.err" >&2
            die "$p $c: request to $url failed"
        }
        read -r code ver <<<"$out"
        [[ "$code" == 200 ]] || die "$p $c: status $code from $url"
        cmp -s "$TMP/check.body" <(curl -sS "http://127.0.0.1:$BACKEND_PORT$(cell_path "$c")") ||
            die "$p $c: body differs from the backend's"
        if [[ "$m" == h2 && "$ver" != 2 ]]; then die "$p $c: curl got HTTP/$ver, not h2"; fi
        if [[ "$m" == conn ]]; then
            grep -q 'SSL connection using TLSv1.3' "$TMP/check.err" || die "$p conn: not TLS 1.3"
            # curl says "left intact" when the connection stays open after the answer
            ! grep -q 'left intact' "$TMP/check.err" || die "$p conn: kept the connection open after Connection: close"
        fi
        log "check $p $c: 200 HTTP/$ver"
    done
done

# ------------------------------------------------------------------------------------------------
# Load
# ------------------------------------------------------------------------------------------------

# TCP connections accepted so far on this machine (PassiveOpens of /proc/net/snmp).
passive_opens() {
    awk '$1 == "Tcp:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == "PassiveOpens") c = i; n = 1 } else print $c }' /proc/net/snmp
}

# run_load proxy cell seconds out-prefix
# Sets LOAD_RPS, LOAD_P99 (ms), LOAD_ERRS, LOAD_CPU, LOAD_USER and LOAD_SYS (µs per request) and
# LOAD_CONNS (connections accepted per request). Runs in the current shell so that a failure stops
# the script.
run_load() {
    local p="$1" c="$2" secs="$3" out="$4" m url pid user_before sys_before user_after sys_after opens_before n
    m="$(cell_mode "$c")"
    url="$(url_for "$p" "$c")"
    LOAD_RPS="" LOAD_P99="" LOAD_ERRS=0 LOAD_CPU="" LOAD_USER="" LOAD_SYS="" LOAD_CONNS=""
    pid="${PID_OF[$p]}"
    opens_before="$(passive_opens)"
    read -r user_before sys_before <<<"$(tree_cpu_ticks_split "$pid")"
    local perf_pid=""
    if [[ -n "${PERF:-}" && "$out" == *-1 ]]; then
        # every process of the proxy (nginx: its workers too)
        local pids="$pid" kids
        kids="$(pgrep -d, -P "$pid" || true)"
        [[ -z "$kids" ]] || pids+=",$kids"
        perf record -q --call-graph "${PERF_CALLGRAPH:-fp}" -F 999 -o "$out.perf.data" -p "$pids" \
            >/dev/null 2>&1 &
        perf_pid=$!
    fi
    if [[ "$m" == h2 ]]; then
        rm -f "$out.h2log"
        if ! "${LOAD_ON[@]}" h2load -c"$CONNECTIONS" -m"$STREAMS" -t"$LOAD_THREADS" -D "$secs" --log-file="$out.h2log" "$url" \
            >"$out.txt" 2>&1; then
            cat "$out.txt" >&2
            die "h2load failed on $url"
        fi
        grep -q '^Application protocol: h2$' "$out.txt" || die "h2load did not negotiate h2 on $url"
        LOAD_RPS="$(awk '/^finished in/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^req\/s/) print $i }' "$out.txt")"
        # p99 from the per-request log: its 3rd column is the time in microseconds from the request
        # being sent to the end of its response; nearest-rank 99th percentile over every request of
        # the run.
        LOAD_P99="$(cut -f3 "$out.h2log" | sort -n |
            awk '{ a[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
                   k = int(NR * 0.99); if (k < NR * 0.99) k++; if (k < 1) k = 1
                   printf "%.3f\n", a[k] / 1000 }')"
        # failed requests (errored and timed out included) + non-2xx/3xx answers
        LOAD_ERRS="$(awk '/^requests:/ { f = $10 } /^status codes:/ { n = $7 + $9 } END { print f + n + 0 }' "$out.txt")"
        n="$(awk '/^requests:/ { print $6 }' "$out.txt")"   # requests done
        rm -f "$out.h2log"   # can be tens of MB; only the percentile is kept
    else
        # conn: every request on a new connection (a full TLS handshake); wrk reconnects when the
        # answer says Connection: close.
        local hdr=()
        [[ "$m" == conn ]] && hdr=(-H 'Connection: close')
        if ! "${LOAD_ON[@]}" wrk -t"$LOAD_THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "${hdr[@]}" "$url" >"$out.txt" 2>&1; then
            cat "$out.txt" >&2
            die "wrk failed on $url"
        fi
        LOAD_RPS="$(awk '/^Requests\/sec:/ { print $2 }' "$out.txt")"
        LOAD_P99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out.txt")")"
        # socket errors (connect, read, write, timeout) + non-2xx/3xx answers
        LOAD_ERRS="$(awk '/Socket errors:/ { gsub(/,/, ""); s = $4 + $6 + $8 + $10 }
                          /Non-2xx or 3xx responses:/ { n = $5 } END { print s + n + 0 }' "$out.txt")"
        n="$(awk '/ requests in / { print $1 }' "$out.txt")"
    fi
    read -r user_after sys_after <<<"$(tree_cpu_ticks_split "$pid")"
    if [[ -n "$perf_pid" ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    if [[ -z "$LOAD_RPS" || -z "$LOAD_P99" || "$LOAD_P99" == nan || -z "$n" ]]; then
        cat "$out.txt" >&2
        die "could not parse $out.txt"
    fi
    # The proxy's CPU time (every process of it), user and system, over the requests the client
    # completed while it ran: the steadiest figure on a shared machine.
    per_request() { # ticks
        awk -v t="$1" -v hz="$TICKS_PER_SEC" -v n="$n" \
            'BEGIN { if (n <= 0) print "nan"; else printf "%.2f\n", t / hz * 1e6 / n }'
    }
    LOAD_USER="$(per_request $((user_after - user_before)))"
    LOAD_SYS="$(per_request $((sys_after - sys_before)))"
    LOAD_CPU="$(per_request $((user_after - user_before + sys_after - sys_before)))"
    # Connections accepted on the machine per request (the proxy's, plus any the proxy opened to
    # the backend, plus anything else running): about 1.00 in conn mode when the proxy closes,
    # about 0.00 in the others when the proxy keeps its backend connections.
    LOAD_CONNS="$(awk -v o=$(($(passive_opens) - opens_before)) -v n="$n" \
        'BEGIN { if (n <= 0) print "nan"; else printf "%.2f\n", o / n }')"
}

mkdir -p "$TMP/results"
log "warm-up: ${WARMUP}s per proxy and cell"
for c in "${CELLS[@]}"; do
    for p in "${PROXIES[@]}"; do
        run_load "$p" "$c" "$WARMUP" "$TMP/results/warmup-$p-$c"
    done
done

# Measured runs. The order of the proxies rotates by one from one cell (and round) to the next, so
# that each takes every place in turn (CPU frequency, leftover TIME_WAIT sockets and the like
# affect them all alike).
declare -A RPS P99 ERRS CPU USR SYS CONNS
turn=0
for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${CELLS[@]}"; do
        n=${#PROXIES[@]}
        order=()
        for ((i = 0; i < n; i++)); do order+=("${PROXIES[$(((i + turn) % n))]}"); done
        turn=$((turn + 1))
        for p in "${order[@]}"; do
            log "round $r/$ROUNDS: $c via $p (${DURATION}s)"
            run_load "$p" "$c" "$DURATION" "$TMP/results/$p-$c-$r"
            log "  $LOAD_RPS req/s, p99 $LOAD_P99 ms, errors $LOAD_ERRS, CPU $LOAD_CPU µs/request ($LOAD_USER user + $LOAD_SYS system)"
            log "  $LOAD_CONNS connections accepted per request"
            RPS[$p:$c]+="$LOAD_RPS "
            P99[$p:$c]+="$LOAD_P99 "
            CPU[$p:$c]+="$LOAD_CPU "
            USR[$p:$c]+="$LOAD_USER "
            SYS[$p:$c]+="$LOAD_SYS "
            CONNS[$p:$c]+="$LOAD_CONNS "
            ERRS[$p:$c]=$((${ERRS[$p:$c]:-0} + LOAD_ERRS))
            sleep 1
        done
    done
done

# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
echo
echo "Switchyard vs nginx, HAProxy and a bare pingora proxy — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr); load average at start $LOADAVG_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), haproxy $(haproxy -v | awk 'NR == 1 { print $3 }'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), h2load $(h2load --version | awk '{ print $2 }')"
[[ -z "${SY_BIN:-}" ]] || echo "switchyard: $SY_BIN"
[[ -z "${FLOOR:-}" ]] || echo "floor: $FLOOR"
[[ -z "${FLOOR_UNPATCHED_BIN:-}" ]] || echo "floor-0.9.1: $FLOOR_UNPATCHED_BIN"
[[ -z "${SWITCHYARD_BASE_BIN:-}" ]] || echo "switchyard-base: $SWITCHYARD_BASE_BIN"
echo "threads/workers=$THREADS connections=$CONNECTIONS h2 streams/conn=$STREAMS load threads=$LOAD_THREADS duration=${DURATION}s warm-up=${WARMUP}s rounds=$ROUNDS (median shown) backend bodies=${BODY_LEN}B and ${BODY16_LEN}B, backend workers=$BACKEND_WORKERS"
echo "CPUs: proxies ${CPUS_PROXY:-any}, backend ${CPUS_BACKEND:-any}, load generator ${CPUS_LOAD:-any}"
echo
# MED[proxy:cell:figure]: the medians; "nan" for a proxy or cell that did not run.
declare -A MED
printf '%-8s  %-14s  %10s  %9s  %6s  %10s  %8s  %8s  %8s\n' cell proxy "req/s" "p99 ms" errors "CPU µs/req" "user µs" "sys µs" "conn/req"
for c in "${CELLS[@]}"; do
    for p in "${PROXIES[@]}"; do
        MED[$p:$c:rps]="$(median <<<"${RPS[$p:$c]}")"
        MED[$p:$c:p99]="$(median <<<"${P99[$p:$c]}")"
        MED[$p:$c:cpu]="$(median <<<"${CPU[$p:$c]}")"
        usr="$(median <<<"${USR[$p:$c]}")"
        sys="$(median <<<"${SYS[$p:$c]}")"
        conns="$(median <<<"${CONNS[$p:$c]}")"
        printf '%-8s  %-14s  %10.0f  %9.3f  %6d  %10.2f  %8.2f  %8.2f  %8.2f\n' "$c" "$p" "${MED[$p:$c:rps]}" \
            "${MED[$p:$c:p99]}" "${ERRS[$p:$c]}" "${MED[$p:$c:cpu]}" "$usr" "$sys" "$conns"
    done
done

# rat A B CELL FIGURE: A's median / B's, or n/a.
rat() { ratio "${MED[$1:$3:$4]:-nan}" "${MED[$2:$3:$4]:-nan}"; }
# line A B SIZE FIGURE: "http=… tls=… h2=…" of A / B for the answer size SIZE.
line() { echo "http=$(rat "$1" "$2" "http-$3" "$4") tls=$(rat "$1" "$2" "tls-$3" "$4") h2=$(rat "$1" "$2" "h2-$3" "$4")"; }
echo
echo "http = HTTP/1.1 plain (wrk), tls = HTTP/1.1 over TLS (wrk), h2 = HTTP/2 over TLS (h2load); -100 and -16k: the"
echo "100-byte and 16 KB answers; conn = HTTPS with Connection: close (wrk): a new TLS 1.3 connection and full handshake per request."
echo "p99: wrk --latency 99% line (conn: after the handshake); h2: nearest-rank 99th percentile of h2load --log-file per-request times."
echo "CPU µs/req: the proxy's CPU time (all its processes and threads, /proc/PID/stat utime and stime) over the run, per request completed."
echo "conn/req: TCP connections accepted on the machine (/proc/net/snmp PassiveOpens) per request: about 1.00 in conn mode when every"
echo "request had its own, about 0.00 in the others when the proxy reuses its client and backend connections."
echo "Access log off on every proxy except switchyard-log (a JSON line per request to a file); HAProxy has no log line at all."
echo "floor = a bare pingora ProxyHttp (crates/floor: one fixed peer, the four response headers, no forwarded headers)."
echo "ratios: rps above 1 and p99 and cpu below 1 favour switchyard. ratio/ratio16k: switchyard / nginx (100 B / 16 KB);"
echo "vs-haproxy: switchyard / haproxy, vs-floor: switchyard / floor (100 B); conn: switchyard / nginx."
echo "ratio rps $(line switchyard nginx 100 rps) p99 $(line switchyard nginx 100 p99) cpu $(line switchyard nginx 100 cpu)"
echo "ratio16k rps $(line switchyard nginx 16k rps) p99 $(line switchyard nginx 16k p99) cpu $(line switchyard nginx 16k cpu)"
echo "vs-haproxy rps $(line switchyard haproxy 100 rps) cpu $(line switchyard haproxy 100 cpu)"
echo "vs-floor cpu $(line switchyard floor 100 cpu)"
echo "conn rps switchyard/nginx=$(rat switchyard nginx conn rps) cpu switchyard/nginx=$(rat switchyard nginx conn cpu)"
if has switchyard-base "${PROXIES[@]}"; then
    echo "vs-base rps $(line switchyard switchyard-base 100 rps) cpu $(line switchyard switchyard-base 100 cpu) conn cpu=$(rat switchyard switchyard-base conn cpu)"
fi

if [[ -n "${PERF:-}" ]]; then
    for c in "${CELLS[@]}"; do
        for p in "${PROXIES[@]}"; do
            data="$TMP/results/$p-$c-1.perf.data"
            [[ -s "$data" ]] || continue
            echo
            echo "profile $p $c (self time, top symbols at >= 1 %; [k] kernel, [.] user space):"
            perf report -i "$data" --no-children --sort sym --percent-limit 1 --stdio 2>/dev/null |
                grep -E '^ +[0-9.]+%' | head -25
            perf report -i "$data" --no-children --sort dso --stdio 2>/dev/null |
                grep -E '^ +[0-9.]+%' | head -6 | sed 's/^/  by object: /'
        done
    done
fi
