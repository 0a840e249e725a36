#!/usr/bin/env bash
# Idle keep-alive connections: what each one costs the proxy in memory, and whether the memory
# goes back after they close. Switchyard and nginx in the same run, each in front of the same nginx
# backend (a fixed 100-byte 200), plain HTTP and TLS measured separately.
#
#   benches/idle-memory.sh                   # build switchyard (release) and run everything
#   SWITCHYARD_BIN=path/to/switchyard benches/idle-memory.sh     # use this binary, do not build
#   N=2000 AFTER_CLOSE=20 benches/idle-memory.sh                 # a quick run
#
# For each mode (http, tls) and proxy (nginx, switchyard) a fresh proxy process is started and:
#   1. one warm-up request in that mode, 2 s of quiet, then RSS "before";
#   2. a python3 asyncio client (embedded below) opens N connections (CONCURRENCY at a time),
#      sends ONE GET on each, reads the whole answer and keeps the connection open, idle;
#   3. SETTLE seconds after the last answer: RSS "idle" and the proxy-side count of established
#      connections (ss);
#   4. the client closes every connection; AFTER_CLOSE seconds later: RSS "closed";
#   5. the proxy is stopped.
# RSS is VmRSS summed over the proxy's whole process tree (nginx: master + workers; switchyard: one
# process); PSS (smaps_rollup) is printed next to it, as summed RSS counts nginx's shared pages once
# per process. Per connection = (idle - before) / connections held.
#
# Environment (all optional):
#   N=10000            idle connections per proxy and mode
#   CONCURRENCY=100    connections being opened / in their first request at once
#   SETTLE=10          seconds after the last answer before reading RSS "idle"
#   AFTER_CLOSE=60     seconds after the connections closed before reading RSS "closed"
#   THREADS=2          nginx worker_processes and switchyard [server] threads
#   MODES="http tls"   which modes to run
#   PROXIES="nginx switchyard"   which proxies to run (nginx alone checks the harness)
#   SY_KEEPALIVE=300s  switchyard [defaults] keepalive_timeout, only written when
#                      `switchyard check` accepts the key (binaries before the hardening work have
#                      no such key and keep idle connections open without a limit)
#   SY_DEFAULTS_EXTRA  extra TOML lines for switchyard's [defaults]; `check` must accept them
#   SWITCHYARD_BIN     switchyard binary; when unset: cargo build --release
#   BENCH_OUT=dir      copy configs and client/RSS logs there before the temp dir goes
#
# nginx gets keepalive_timeout 300s so that no connection closes during the measurement.
# The script raises `ulimit -n` (65536, or the hard limit if lower) and stops if it is below
# N + 1000. Everything listens on 127.0.0.1 only, on ports picked free at run time; every process
# started here is stopped by PID on exit and the temp dir is removed. Takes about
# 4 x (30 + SETTLE + AFTER_CLOSE) seconds plus the time to open the connections (TLS: about a
# minute for 10,000 on 2 cores): about 6 minutes with the defaults. See benches/RESULTS.md.
set -euo pipefail

BENCH_NAME="idle-memory"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

N="${N:-10000}"
CONCURRENCY="${CONCURRENCY:-100}"
SETTLE="${SETTLE:-10}"
AFTER_CLOSE="${AFTER_CLOSE:-60}"
THREADS="${THREADS:-2}"
SY_KEEPALIVE="${SY_KEEPALIVE:-300s}"
SY_DEFAULTS_EXTRA="${SY_DEFAULTS_EXTRA:-}"
read -r -a MODES <<<"${MODES:-http tls}"
read -r -a PROXIES <<<"${PROXIES:-nginx switchyard}"
CERT="$ROOT/certs/localhost.crt"
KEY="$ROOT/certs/localhost.key"
CA="$ROOT/certs/test-ca.crt"

# ------------------------------------------------------------------------------------------------
# Tools, binary, file descriptors
# ------------------------------------------------------------------------------------------------
require_tools nginx curl python3 ss:iproute2
NGINX="$(nginx_bin)"
if [[ " ${PROXIES[*]} " == *" switchyard "* ]]; then find_switchyard; fi
[[ -r "$CERT" && -r "$KEY" && -r "$CA" ]] || die "missing $CERT / $KEY / $CA (run certs/make-certs.sh)"

# The client holds N sockets, the proxy N plus its upstream ones: 65536 if the hard limit allows
# (raising the hard limit needs CAP_SYS_RESOURCE), else the hard limit.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(( $(ulimit -Hn) > 65536 ? 65536 : $(ulimit -Hn) ))" 2>/dev/null || true
NOFILE="$(ulimit -n)"
((NOFILE >= N + 1000)) || die "ulimit -n is $NOFILE (hard limit $(ulimit -Hn)), need at least N + 1000 = $((N + 1000))"
log "ulimit -n $NOFILE"

bench_setup
KEEP_OUTPUTS="${BENCH_OUT:-}"
LOADAVG_START="$(loadavg)"

read -r BACKEND_PORT NG_HTTP NG_TLS SY_HTTP SY_TLS <<<"$(free_ports 5)"

# ------------------------------------------------------------------------------------------------
# Backend: nginx, one worker, a fixed 100-byte 200 (as in vs-nginx.sh): 99 characters + "\n"
# ------------------------------------------------------------------------------------------------
BODY="switchyard idle-memory benchmark backend: a fixed response body that is one hundred bytes.........."
start_backend "$BACKEND_PORT" "$BODY"
log "backend: nginx pid $BACKEND_PID on 127.0.0.1:$BACKEND_PORT"

# ------------------------------------------------------------------------------------------------
# Proxies
# ------------------------------------------------------------------------------------------------
mkdir -p "$TMP/nginx/logs" "$TMP/switchyard"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $THREADS;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events {
    worker_connections $((N + 1024));
}
http {
    server_tokens off;
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;

    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1h;

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
        listen 127.0.0.1:$NG_HTTP;
        listen 127.0.0.1:$NG_TLS ssl http2;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
EOF
"$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" ||
    die "proxy nginx config test failed"

# write_switchyard_config FILE EXTRA-DEFAULTS-LINES
write_switchyard_config() {
    cat >"$1" <<EOF
# generated by benches/idle-memory.sh
[server]
threads = $THREADS
drain_timeout = "2s"
access_log = "off"
upgrade_socket = "$TMP/switchyard/upgrade.sock"
pid_file = "$TMP/switchyard/switchyard.pid"
state_dir = "$TMP/switchyard/state"

[[listeners]]
name = "http"
address = "127.0.0.1:$SY_HTTP"

[[listeners]]
name = "https"
address = "127.0.0.1:$SY_TLS"
tls = true
h2 = true

[[certificates]]
cert = "$CERT"
key = "$KEY"
fallback = true

[defaults]
compression = false
$2

[[routes]]
host = "*"
service = "backend"

[services.backend.pools.main]
weight = 1
servers = ["127.0.0.1:$BACKEND_PORT"]
EOF
}
SY_NOTE=""
if [[ " ${PROXIES[*]} " == *" switchyard "* ]]; then
    # keepalive_timeout only where this binary knows it (older ones reject unknown keys).
    SY_EXTRA="$SY_DEFAULTS_EXTRA"
    if [[ -n "$SY_KEEPALIVE" ]]; then
        write_switchyard_config "$TMP/switchyard/probe.toml" "keepalive_timeout = \"$SY_KEEPALIVE\""
        if "$SY_BIN" check --config "$TMP/switchyard/probe.toml" >"$TMP/switchyard/probe.log" 2>&1; then
            SY_EXTRA="keepalive_timeout = \"$SY_KEEPALIVE\"
$SY_EXTRA"
            SY_NOTE="keepalive_timeout = \"$SY_KEEPALIVE\""
        else
            SY_NOTE="no keepalive_timeout key (check rejects it: unbounded keep-alive)"
            log "switchyard check on keepalive_timeout: $(grep -m1 -i 'keepalive_timeout' "$TMP/switchyard/probe.log" | cut -c1-160)"
        fi
        log "switchyard: $SY_NOTE"
    fi
    write_switchyard_config "$TMP/switchyard/switchyard.toml" "$SY_EXTRA"
    "$SY_BIN" check --config "$TMP/switchyard/switchyard.toml" >&2 ||
        die "switchyard check failed (SY_DEFAULTS_EXTRA='$SY_DEFAULTS_EXTRA')"
fi

# start_proxy proxy → sets PROXY_PID once both ports listen
start_proxy() {
    case "$1" in
        nginx)
            "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" &
            PROXY_PID=$!
            PIDS+=("$PROXY_PID")
            wait_port "$NG_HTTP" "$PROXY_PID" "proxy nginx"
            wait_port "$NG_TLS" "$PROXY_PID" "proxy nginx"
            ;;
        switchyard)
            "$SY_BIN" serve --config "$TMP/switchyard/switchyard.toml" \
                >>"$TMP/switchyard/stdout.log" 2>>"$TMP/switchyard/stderr.log" &
            PROXY_PID=$!
            PIDS+=("$PROXY_PID")
            wait_port "$SY_HTTP" "$PROXY_PID" "switchyard"
            wait_port "$SY_TLS" "$PROXY_PID" "switchyard"
            ;;
        *) die "unknown proxy $1 in PROXIES" ;;
    esac
}

port_of() { # proxy mode
    case "$1:$2" in
        nginx:http) echo "$NG_HTTP" ;;
        nginx:tls) echo "$NG_TLS" ;;
        switchyard:http) echo "$SY_HTTP" ;;
        switchyard:tls) echo "$SY_TLS" ;;
        *) die "unknown proxy/mode $1 $2" ;;
    esac
}

# ------------------------------------------------------------------------------------------------
# Memory of a process tree
# ------------------------------------------------------------------------------------------------
tree_pids() { # PID → PID and all its descendants, one per line
    local p c
    for p in "$@"; do
        [[ -d "/proc/$p" ]] || continue
        echo "$p"
        # shellcheck disable=SC2013 # the children files hold PIDs separated by spaces
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done
    done
}
# mem_kb PID → "rss-kB pss-kB processes", summed over the tree
mem_kb() {
    local rss=0 pss=0 n=0 p r s
    for p in $(tree_pids "$1"); do
        r="$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)"
        s="$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)"
        rss=$((rss + ${r:-0}))
        pss=$((pss + ${s:-0}))
        n=$((n + 1))
    done
    echo "$rss $pss $n"
}
established_on() { ss -Htn state established "( sport = :$1 )" | wc -l; }

# ------------------------------------------------------------------------------------------------
# The client: N idle keep-alive connections, one request each
# ------------------------------------------------------------------------------------------------
cat >"$TMP/hold.py" <<'PY'
# hold.py PORT http|tls N CONCURRENCY CA-FILE
# Opens N connections to 127.0.0.1:PORT (at most CONCURRENCY opening at once), sends one
# "GET / HTTP/1.1" on each (keep-alive), reads the whole answer (Content-Length), and keeps the
# connection open. Prints "ready ok=.. failed=.. seconds=.. errors=.." when every connection has
# its answer (or failed), then waits for SIGUSR1, closes every connection, prints "closed" and
# exits.
import asyncio, signal, ssl, sys, time
port, mode, n, conc, ca = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = None
if mode == "tls":
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
REQ = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: idle-memory-bench\r\n\r\n"
held, errors = [], {}

async def one(sem):
    async with sem:
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None), 30)
            w.write(REQ)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            lines = head.decode("latin-1").split("\r\n")
            if lines[0].split(" ")[1] != "200":
                raise RuntimeError("status_" + lines[0].split(" ")[1])
            cl = [l.split(":", 1)[1] for l in lines[1:] if l.lower().startswith("content-length:")]
            if not cl:
                raise RuntimeError("no_content_length")
            await asyncio.wait_for(r.readexactly(int(cl[0])), 30)
            held.append(w)
        except Exception as e:  # noqa: BLE001 - counted by kind
            k = str(e) if isinstance(e, RuntimeError) else type(e).__name__
            errors[k] = errors.get(k, 0) + 1
            if w is not None:
                w.close()

async def main():
    sem = asyncio.Semaphore(conc)
    t0 = time.monotonic()
    await asyncio.gather(*(one(sem) for _ in range(n)))
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, done.set)
    print("ready ok=%d failed=%d seconds=%.1f errors=%s" % (len(held), n - len(held), time.monotonic() - t0,
          ",".join("%s:%d" % kv for kv in sorted(errors.items())) or "none"), flush=True)
    await done.wait()
    for w in held:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in held), return_exceptions=True)
    print("closed", flush=True)

asyncio.run(main())
PY

# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------
mkdir -p "$TMP/results"
declare -A R
# measure proxy mode → fills R[proxy:mode:*]
measure() {
    local p="$1" m="$2" port out="$TMP/results/$1-$2" hpid i line est est_after
    port="$(port_of "$p" "$m")"
    start_proxy "$p"
    log "$p $m: pid $PROXY_PID on 127.0.0.1:$port"
    if [[ "$m" == tls ]]; then
        curl -sS -o /dev/null --http1.1 --cacert "$CA" "https://localhost:$port/" \
            --resolve "localhost:$port:127.0.0.1" || die "$p $m: warm-up request failed"
    else
        curl -sS -o /dev/null "http://127.0.0.1:$port/" || die "$p $m: warm-up request failed"
    fi
    sleep 2
    read -r "R[$p:$m:rss0]" "R[$p:$m:pss0]" "R[$p:$m:procs]" <<<"$(mem_kb "$PROXY_PID")"
    log "  before: RSS ${R[$p:$m:rss0]} kB, PSS ${R[$p:$m:pss0]} kB (${R[$p:$m:procs]} processes)"

    python3 "$TMP/hold.py" "$port" "$m" "$N" "$CONCURRENCY" "$CA" >"$out-client.txt" 2>"$out-client.err" &
    hpid=$!
    PIDS+=("$hpid")
    for ((i = 0; i < 6000; i++)); do   # 10 minutes at most
        grep -q '^ready' "$out-client.txt" 2>/dev/null && break
        kill -0 "$hpid" 2>/dev/null || { cat "$out-client.err" >&2; die "$p $m: client exited early"; }
        sleep 0.1
    done
    line="$(grep '^ready' "$out-client.txt")" || die "$p $m: client not ready after 10 minutes"
    log "  client: $line"
    R[$p:$m:ok]="$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$line")"
    R[$p:$m:failed]="$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")"
    R[$p:$m:open_s]="$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")"
    R[$p:$m:errors]="$(sed -n 's/.* errors=\(.*\)$/\1/p' <<<"$line")"
    sleep "$SETTLE"
    read -r "R[$p:$m:rss1]" "R[$p:$m:pss1]" _ <<<"$(mem_kb "$PROXY_PID")"
    est="$(established_on "$port")"
    R[$p:$m:held]="$est"
    log "  idle ${SETTLE}s: RSS ${R[$p:$m:rss1]} kB, PSS ${R[$p:$m:pss1]} kB, $est connections established on the proxy"

    kill -USR1 "$hpid"
    wait "$hpid" || die "$p $m: client failed while closing"
    for ((i = 0; i < 100; i++)); do   # the proxy sees the FINs and closes its side
        est_after="$(established_on "$port")"
        ((est_after == 0)) && break
        sleep 0.1
    done
    log "  connections closed ($est_after still established on the proxy); waiting ${AFTER_CLOSE}s"
    sleep "$AFTER_CLOSE"
    read -r "R[$p:$m:rss2]" "R[$p:$m:pss2]" _ <<<"$(mem_kb "$PROXY_PID")"
    log "  ${AFTER_CLOSE}s after close: RSS ${R[$p:$m:rss2]} kB, PSS ${R[$p:$m:pss2]} kB"
    stop_pid "$PROXY_PID"
}

for m in "${MODES[@]}"; do
    for p in "${PROXIES[@]}"; do
        measure "$p" "$m"
    done
done

# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "Idle keep-alive connections: Switchyard vs nginx — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(uname -sr); load average at start $LOADAVG_START, at end $(loadavg); ulimit -n $NOFILE"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') ($THREADS workers, keepalive_timeout 300s); python $(python3 -c 'import platform, ssl; print(platform.python_version(), ssl.OPENSSL_VERSION)')"
[[ " ${PROXIES[*]} " != *" switchyard "* ]] || echo "switchyard: $SY_BIN (threads $THREADS; $SY_NOTE${SY_DEFAULTS_EXTRA:+; $SY_DEFAULTS_EXTRA})"
echo "N=$N connections per proxy and mode, one GET each then idle; RSS/PSS summed over the process tree; idle read ${SETTLE}s after the last answer, closed ${AFTER_CLOSE}s after closing"
echo
printf '%-5s  %-10s  %5s  %6s  %6s  %10s  %10s  %11s  %10s  %11s  %10s\n' \
    mode proxy procs held failed "RSS before" "RSS idle" "KB/conn RSS" "RSS closed" "KB/conn PSS" "PSS closed"
for m in "${MODES[@]}"; do
    for p in "${PROXIES[@]}"; do
        held="${R[$p:$m:ok]}"
        printf '%-5s  %-10s  %5s  %6s  %6s  %8s MB  %8s MB  %11s  %8s MB  %11s  %8s MB\n' "$m" "$p" \
            "${R[$p:$m:procs]}" "${R[$p:$m:held]}" "${R[$p:$m:failed]}" \
            "$(mb "${R[$p:$m:rss0]}")" "$(mb "${R[$p:$m:rss1]}")" \
            "$(awk -v a="${R[$p:$m:rss1]}" -v b="${R[$p:$m:rss0]}" -v n="$held" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "n/a" }')" \
            "$(mb "${R[$p:$m:rss2]}")" \
            "$(awk -v a="${R[$p:$m:pss1]}" -v b="${R[$p:$m:pss0]}" -v n="$held" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "n/a" }')" \
            "$(mb "${R[$p:$m:pss2]}")"
        [[ "${R[$p:$m:errors]}" == none ]] || echo "    $p $m client errors: ${R[$p:$m:errors]}"
    done
done
echo
echo "held: connections established on the proxy's port at the idle reading (should be N); failed: client connections that got no 200."
echo "KB/conn = (idle - before) / connections that got their answer (1 KB = 1024 bytes). Target for Switchyard: <= 8 KB RSS per connection, RSS closed back near RSS before."
