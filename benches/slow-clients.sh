#!/usr/bin/env bash
# Slow clients: does a normal client still get served while slowloris / slow-POST attackers hold
# hundreds of connections open? Switchyard and nginx side by side, each in front of the same
# nginx backend (a fixed 100-byte 200, answered once the request body is all in), plain HTTP.
#
#   benches/slow-clients.sh                  # build switchyard (release) and run everything
#   SWITCHYARD_BIN=path/to/switchyard benches/slow-clients.sh   # use this binary, do not build
#   ATTACK_SECONDS=40 benches/slow-clients.sh                    # shorter attacks
#
# For each proxy (nginx first, then switchyard) it runs three phases:
#   unloaded  the normal client alone
#   slowloris `slowhttptest -H` (slow request headers) plus the normal client
#   slowbody  `slowhttptest -B` (slow POST bodies) plus the normal client
# The normal client (python3, embedded below) sends REQUESTS sequential GETs on one keep-alive
# connection at RATE requests/s (a fixed schedule; reconnects after a failure) and reports p50/p99
# and failures. In the attack phases it starts CLIENT_DELAY seconds after slowhttptest, once all
# attack connections are open.
#
# Environment (all optional):
#   REQUESTS=200            normal-client requests per phase
#   RATE=20                 normal-client requests per second
#   REQUEST_TIMEOUT=10      seconds the normal client waits for an answer (connect included)
#                           before counting a failure
#   CLIENT_MODE=keepalive   keepalive: one connection for all requests; close: a new connection
#                           per request (what a client arriving during the attack sees)
#   ATTACK_CONNECTIONS=500  slowhttptest -c
#   ATTACK_RATE=100         slowhttptest -r (connections opened per second: 500 in 5 s)
#   ATTACK_INTERVAL=10      slowhttptest -i (seconds between the trickled header lines / body bytes)
#   ATTACK_SECONDS=70       slowhttptest -l (longer than the 60 s header timeout of nginx, so the
#                           end-of-test count shows whether the proxy cut the slowloris connections)
#   CLIENT_DELAY=15         seconds between starting slowhttptest and starting the normal client
#   THREADS=2               nginx worker_processes and switchyard [server] threads
#   SY_DEFAULTS_EXTRA       extra TOML lines for switchyard's [defaults] (for a newer binary, e.g.
#                           'client_header_timeout = "60s"'); `switchyard check` must accept them
#   PROXIES="nginx switchyard"   which proxies to run (nginx alone checks the harness)
#   SWITCHYARD_BIN          switchyard binary; when unset: cargo build --release
#   BENCH_OUT=dir           copy configs, slowhttptest CSVs/outputs and client outputs there
#                           (results/PROXY-PHASE-client.requests: every request's send time,
#                           latency and outcome)
#
# Everything listens on 127.0.0.1 only, on ports picked free at run time. Every process started
# here is stopped by PID on exit and the temp dir is removed. Takes about
# 2 x (REQUESTS/RATE + 2 x (ATTACK_SECONDS + 3)) seconds plus start-up: a bit over 5 minutes with
# the defaults.
# See benches/RESULTS.md.
set -euo pipefail

BENCH_NAME="slow-clients"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

REQUESTS="${REQUESTS:-200}"
RATE="${RATE:-20}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-10}"
CLIENT_MODE="${CLIENT_MODE:-keepalive}"
ATTACK_CONNECTIONS="${ATTACK_CONNECTIONS:-500}"
ATTACK_RATE="${ATTACK_RATE:-100}"
ATTACK_INTERVAL="${ATTACK_INTERVAL:-10}"
ATTACK_SECONDS="${ATTACK_SECONDS:-70}"
CLIENT_DELAY="${CLIENT_DELAY:-15}"
THREADS="${THREADS:-2}"
SY_DEFAULTS_EXTRA="${SY_DEFAULTS_EXTRA:-}"
read -r -a PROXIES <<<"${PROXIES:-nginx switchyard}"

[[ "$CLIENT_MODE" == keepalive || "$CLIENT_MODE" == close ]] || die "CLIENT_MODE must be keepalive or close"

# ------------------------------------------------------------------------------------------------
# Tools, binary, file descriptors
# ------------------------------------------------------------------------------------------------
require_tools nginx slowhttptest curl python3 ss:iproute2
NGINX="$(nginx_bin)"
if [[ " ${PROXIES[*]} " == *" switchyard "* ]]; then find_switchyard; fi

# slowhttptest and the proxies each hold ATTACK_CONNECTIONS sockets (the proxies twice as many
# with their upstream side): raise the soft limit to the hard one, at most 65536.
ulimit -n "$(( $(ulimit -Hn) > 65536 ? 65536 : $(ulimit -Hn) ))" 2>/dev/null || true
(( $(ulimit -n) >= 2 * ATTACK_CONNECTIONS + 1000 )) ||
    die "ulimit -n is $(ulimit -n), need at least $((2 * ATTACK_CONNECTIONS + 1000))"

bench_setup
KEEP_OUTPUTS="${BENCH_OUT:-}"
LOADAVG_START="$(loadavg)"

read -r BACKEND_PORT INNER_PORT NG_PORT SY_PORT <<<"$(free_ports 4)"

# ------------------------------------------------------------------------------------------------
# Backend: nginx, one worker, a fixed 100-byte 200 (as in vs-nginx.sh: 99 characters + "\n"),
# except that it reads a request's whole body before answering, as an application would. (The
# `return 200` of lib.sh's start_backend answers as soon as the head is in and discards the body;
# a proxy that streams bodies upstream, as Switchyard does, would then get its answer early and
# the backend would close the slow uploads after its 5 s lingering_timeout.) So the backend is
# two nginx servers in one process: the public one buffers the body (proxy_request_buffering on,
# client_body_timeout 60s) and passes the request to an inner one that returns the 200.
# ------------------------------------------------------------------------------------------------
BODY="switchyard slow-clients benchmark backend: a fixed response body that is one hundred bytes........."
start_body_backend() { # public-port inner-port
    local dir="$TMP/backend"
    mkdir -p "$dir/logs"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
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
    client_body_timeout 60s;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream inner {
        server 127.0.0.1:$2;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://inner;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            default_type text/plain;
            return 200 "$BODY\n";
        }
    }
}
EOF
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" || die "backend nginx config test failed"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
    BACKEND_PID=$!
    PIDS+=("$BACKEND_PID")
    wait_port "$1" "$BACKEND_PID" "backend nginx"
}
start_body_backend "$BACKEND_PORT" "$INNER_PORT"
BODY_LEN="$(curl -sS "http://127.0.0.1:$BACKEND_PORT/" | wc -c)"
((BODY_LEN == 100)) || die "backend body is $BODY_LEN bytes, not 100"
log "backend: nginx pid $BACKEND_PID on 127.0.0.1:$BACKEND_PORT (body $BODY_LEN bytes; inner server 127.0.0.1:$INNER_PORT)"

# ------------------------------------------------------------------------------------------------
# nginx as the proxy: its default client timeouts, written out
# ------------------------------------------------------------------------------------------------
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $THREADS;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    server_tokens off;
    access_log off;
    # nginx's defaults, written out: the whole request head within 60 s, at most 60 s between two
    # reads of a request body, idle keep-alive connections closed after 75 s.
    client_header_timeout 60s;
    client_body_timeout 60s;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 10m;

    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;

    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NG_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_connect_timeout 30s;
            proxy_send_timeout 60s;
            proxy_read_timeout 60s;
        }
    }
}
EOF

start_nginx_proxy() {
    "$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" ||
        die "proxy nginx config test failed"
    "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_port "$NG_PORT" "$NGINX_PID" "proxy nginx"
    log "nginx: pid $NGINX_PID on 127.0.0.1:$NG_PORT"
}

# ------------------------------------------------------------------------------------------------
# Switchyard as the proxy: its defaults (no client timeout keys unless SY_DEFAULTS_EXTRA)
# ------------------------------------------------------------------------------------------------
start_switchyard_proxy() {
    mkdir -p "$TMP/switchyard"
    cat >"$TMP/switchyard/switchyard.toml" <<EOF
# generated by benches/slow-clients.sh
[server]
threads = $THREADS
drain_timeout = "2s"
access_log = "off"
upgrade_socket = "$TMP/switchyard/upgrade.sock"
pid_file = "$TMP/switchyard/switchyard.pid"
state_dir = "$TMP/switchyard/state"

[[listeners]]
name = "http"
address = "127.0.0.1:$SY_PORT"

[defaults]
compression = false
$SY_DEFAULTS_EXTRA

[[routes]]
host = "*"
service = "backend"

[services.backend.pools.main]
weight = 1
servers = ["127.0.0.1:$BACKEND_PORT"]
EOF
    "$SY_BIN" check --config "$TMP/switchyard/switchyard.toml" >&2 ||
        die "switchyard check failed (SY_DEFAULTS_EXTRA='$SY_DEFAULTS_EXTRA')"
    "$SY_BIN" serve --config "$TMP/switchyard/switchyard.toml" \
        >"$TMP/switchyard/stdout.log" 2>"$TMP/switchyard/stderr.log" &
    SY_PID=$!
    PIDS+=("$SY_PID")
    wait_port "$SY_PORT" "$SY_PID" "switchyard"
    log "switchyard: pid $SY_PID on 127.0.0.1:$SY_PORT"
}

port_of() { if [[ "$1" == nginx ]]; then echo "$NG_PORT"; else echo "$SY_PORT"; fi; }

for p in "${PROXIES[@]}"; do
    case "$p" in
        nginx) start_nginx_proxy ;;
        switchyard) start_switchyard_proxy ;;
        *) die "unknown proxy $p in PROXIES" ;;
    esac
    cmp -s <(curl -sS "http://127.0.0.1:$(port_of "$p")/") <(curl -sS "http://127.0.0.1:$BACKEND_PORT/") ||
        die "$p does not answer with the backend's body"
done

# ------------------------------------------------------------------------------------------------
# The normal client
# ------------------------------------------------------------------------------------------------
cat >"$TMP/client.py" <<'PY'
# client.py PORT REQUESTS RATE TIMEOUT MODE LOG → one line:
#   "requests=N ok=N failed=N p50_ms=X p99_ms=X max_ms=X reconnects=N errors=kind:count,..."
# Request i is due at start + i/RATE; it is sent then, or at once if the previous one was late
# (one request in flight at a time). Latency: from sending (connecting first if there is no open
# connection) to the last byte of the body. A failure: no answer within TIMEOUT, a connection
# error, or a status other than 200; the connection is then dropped and the next request opens a
# new one. Percentiles are nearest-rank over the successful requests. LOG gets one line per
# request: seconds since the start when it was sent, latency in ms, "ok" or the failure's kind.
import http.client, math, sys, time
port, n, rate, timeout, mode = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
log = open(sys.argv[6], "w")
conn, lat, errors, reconnects = None, [], {}, 0
start = time.monotonic()
for i in range(n):
    due = start + i / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    t0 = time.monotonic()
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.connect()
            reconnects += 1
        conn.request("GET", "/", headers={"Host": "localhost", "User-Agent": "slow-clients-bench"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError("status_%d" % resp.status)
        lat.append((time.monotonic() - t0) * 1000)
        log.write("%.3f %.3f ok\n" % (t0 - start, lat[-1]))
        if mode == "close" or resp.will_close:
            conn.close()
            conn = None
    except Exception as e:  # noqa: BLE001 - every failure is counted by its kind
        kind = type(e).__name__ if not isinstance(e, RuntimeError) else str(e)
        errors[kind] = errors.get(kind, 0) + 1
        log.write("%.3f %.3f %s\n" % (t0 - start, (time.monotonic() - t0) * 1000, kind))
        if conn is not None:
            conn.close()
        conn = None
def pct(p):
    if not lat:
        return float("nan")
    s = sorted(lat)
    return s[max(1, math.ceil(len(s) * p)) - 1]
print("requests=%d ok=%d failed=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f reconnects=%d errors=%s" % (
    n, len(lat), n - len(lat), pct(0.50), pct(0.99), max(lat) if lat else float("nan"),
    reconnects - 1, ",".join("%s:%d" % kv for kv in sorted(errors.items())) or "none"))
PY

# run_client proxy out → the client's line, also written to out
run_client() {
    python3 "$TMP/client.py" "$(port_of "$1")" "$REQUESTS" "$RATE" "$REQUEST_TIMEOUT" "$CLIENT_MODE" \
        "${2%.txt}.requests" >"$2" 2>"$2.err" || { cat "$2.err" >&2; die "normal client failed against $1"; }
    cat "$2"
}
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

# established sockets on the proxy's side: client connections to PORT; connections of the
# processes named NAME (nginx, switchyard) to PORT (the backend)
established_from() { ss -Htn state established "( sport = :$1 )" | wc -l; }
established_to() { ss -Htnp state established "( dport = :$1 )" | grep -c "((\"$2\"" || true; }

# ------------------------------------------------------------------------------------------------
# Attacks
# ------------------------------------------------------------------------------------------------
# attack proxy kind(-H|-B) name → runs slowhttptest in the background, the normal client after
# CLIENT_DELAY s, waits for slowhttptest; sets ATTACK_* and CLIENT_LINE.
attack() {
    local p="$1" flag="$2" name="$3" out="$TMP/results/$1-$3" port spid
    port="$(port_of "$p")"
    slowhttptest "$flag" -c "$ATTACK_CONNECTIONS" -r "$ATTACK_RATE" -i "$ATTACK_INTERVAL" \
        -l "$ATTACK_SECONDS" -u "http://127.0.0.1:$port/" -g -o "$out-sht" \
        >"$out-sht.txt" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    sleep "$CLIENT_DELAY"
    kill -0 "$spid" 2>/dev/null || log "  slowhttptest already ended after ${CLIENT_DELAY}s"
    ATTACK_HELD="$(established_from "$port")"
    ATTACK_UPSTREAM="$(established_to "$BACKEND_PORT" "$p")"
    log "  at client start: $ATTACK_HELD client connections established on $p, $ATTACK_UPSTREAM to the backend"
    CLIENT_LINE="$(run_client "$p" "$out-client.txt")"
    log "  normal client: $CLIENT_LINE"
    wait "$spid" || log "  slowhttptest exited with status $?"
    # The CSV: Seconds,Closed,Pending,Connected,Service Available (the last column is the
    # connection count while slowhttptest's probe got an answer within 5 s, 0 while it did not).
    [[ -s "$out-sht.csv" ]] || { cat "$out-sht.txt" >&2; die "slowhttptest wrote no CSV ($out-sht.csv)"; }
    read -r ATTACK_END ATTACK_OPEN ATTACK_CLOSED ATTACK_MAXOPEN ATTACK_UNAVAIL ATTACK_FIRST <<<"$(awk -F, '
        NR > 1 { s = $1; o = $4; c = $2; if ($4 > m) m = $4; if ($5 == 0) u++; if ($2 > 0 && f == "") f = $1 }
        END { print s, o, c, m + 0, u + 0, (f == "" ? "-" : f) }' "$out-sht.csv")"
    ATTACK_EXIT="$(sed 's/\x1b\[[0-9;]*[a-zA-Z]//g' "$out-sht.txt" | awk -F': *' '/^Exit status:/ { print $2 }' | tail -n 1)"
    # It stops early once the proxy has closed every attack connection; its last CSV row is from
    # the second before, when some may still have been open.
    [[ "$ATTACK_EXIT" != "No open connections left"* ]] || ATTACK_OPEN=0
    log "  slowhttptest: ended at ${ATTACK_END}s ($ATTACK_EXIT), $ATTACK_OPEN connections open at the end, $ATTACK_CLOSED closed, at most $ATTACK_MAXOPEN open, the first closed in second $ATTACK_FIRST, probe unavailable ${ATTACK_UNAVAIL}s"
    sleep 3   # let the proxy notice the attack's sockets closing before the next phase
}

mkdir -p "$TMP/results"
declare -A LINE HELD UPSTREAM OPEN FIRST MAXOPEN UNAVAIL EXITS ENDED
for p in "${PROXIES[@]}"; do
    log "$p: unloaded, $REQUESTS requests at $RATE/s ($CLIENT_MODE)"
    curl -sS -o /dev/null "http://127.0.0.1:$(port_of "$p")/"   # warm-up
    LINE[$p:unloaded]="$(run_client "$p" "$TMP/results/$p-unloaded-client.txt")"
    log "  normal client: ${LINE[$p:unloaded]}"
    for a in slowloris:-H slowbody:-B; do
        name="${a%%:*}"
        log "$p: $name (slowhttptest ${a#*:} -c $ATTACK_CONNECTIONS -r $ATTACK_RATE -i $ATTACK_INTERVAL -l $ATTACK_SECONDS), normal client after ${CLIENT_DELAY}s"
        attack "$p" "${a#*:}" "$name"
        LINE[$p:$name]="$CLIENT_LINE"
        HELD[$p:$name]="$ATTACK_HELD"
        UPSTREAM[$p:$name]="$ATTACK_UPSTREAM"
        OPEN[$p:$name]="$ATTACK_OPEN"
        FIRST[$p:$name]="$ATTACK_FIRST"
        MAXOPEN[$p:$name]="$ATTACK_MAXOPEN"
        UNAVAIL[$p:$name]="$ATTACK_UNAVAIL"
        EXITS[$p:$name]="$ATTACK_EXIT"
        ENDED[$p:$name]="$ATTACK_END"
    done
done

# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
echo
echo "Slow clients: Switchyard vs nginx — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(uname -sr); load average at start $LOADAVG_START, at end $(loadavg)"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') (client_header_timeout 60s, client_body_timeout 60s, keepalive_timeout 75s, worker_connections 4096, $THREADS workers); $(slowhttptest -h 2>&1 | grep -o 'version [0-9.]*' | head -n 1 | sed 's/^/slowhttptest /')"
[[ " ${PROXIES[*]} " != *" switchyard "* ]] || echo "switchyard: $SY_BIN (threads $THREADS, defaults${SY_DEFAULTS_EXTRA:+ + $SY_DEFAULTS_EXTRA})"
echo "normal client: $REQUESTS GETs at $RATE/s, $CLIENT_MODE, timeout ${REQUEST_TIMEOUT}s; attacks: slowhttptest -c $ATTACK_CONNECTIONS -r $ATTACK_RATE -i $ATTACK_INTERVAL -l $ATTACK_SECONDS, client after ${CLIENT_DELAY}s"
echo
printf '%-10s  %-9s  %6s  %8s  %8s  %8s  %7s  %9s  %8s  %10s  %13s  %s\n' \
    proxy phase failed "p50 ms" "p99 ms" "max ms" "p99 x" "held/upst" "open end" "1st close" "max/unavail s" "slowhttptest exit"
for p in "${PROXIES[@]}"; do
    base="$(field p99_ms "${LINE[$p:unloaded]}")"
    for ph in unloaded slowloris slowbody; do
        l="${LINE[$p:$ph]}"
        x="$(awk -v a="$(field p99_ms "$l")" -v b="$base" 'BEGIN { if (b + 0 == 0 || a == "nan") print "n/a"; else printf "%.2f", a / b }')"
        if [[ "$ph" == unloaded ]]; then
            printf '%-10s  %-9s  %6s  %8s  %8s  %8s  %7s  %9s  %8s  %10s  %13s  %s\n' "$p" "$ph" \
                "$(field failed "$l")" "$(field p50_ms "$l")" "$(field p99_ms "$l")" "$(field max_ms "$l")" "$x" - - - - -
        else
            printf '%-10s  %-9s  %6s  %8s  %8s  %8s  %7s  %9s  %8s  %10s  %13s  %s\n' "$p" "$ph" \
                "$(field failed "$l")" "$(field p50_ms "$l")" "$(field p99_ms "$l")" "$(field max_ms "$l")" "$x" \
                "${HELD[$p:$ph]}/${UPSTREAM[$p:$ph]}" "${OPEN[$p:$ph]}" "${FIRST[$p:$ph]}" "${MAXOPEN[$p:$ph]}/${UNAVAIL[$p:$ph]}" \
                "${EXITS[$p:$ph]} (${ENDED[$p:$ph]}s)"
        fi
        e="$(field errors "$l")"
        [[ "$e" == none ]] || echo "    $p $ph client errors: $e"
    done
done
echo
echo "failed / p50 / p99 / max: the normal client's; p99 x = p99 / unloaded p99 (target: 0 failed, p99 x <= 3)."
echo "held/upst: established client connections on the proxy's port (slowhttptest's probe connection included) / proxy connections to the backend, when the normal client started."
echo "open end: attack connections slowhttptest still had open when it ended (its CSV's last second; 0 when it ended because none was left); max/unavail s: most open at once / seconds its probe got no answer within 5 s."
echo "1st close: the second of the attack in which the proxy closed its first attack connection (- if none; a header timeout of T s shows as about T + 1)."
echo "slowhttptest exit: why and at which second it ended (\"Hit test time limit\" at ATTACK_SECONDS, or earlier with \"No open connections left\" once the proxy closed them all)."
