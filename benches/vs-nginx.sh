#!/usr/bin/env bash
# Side-by-side benchmark: Switchyard vs nginx as reverse proxies in front of the same backend.
#
#   benches/vs-nginx.sh                      # build switchyard (release) and run everything
#   DURATION=5 benches/vs-nginx.sh           # shorter runs
#   SWITCHYARD_BIN=path/to/switchyard benches/vs-nginx.sh   # use this binary, do not build
#
# Environment (all optional):
#   DURATION=10        seconds of measured load per proxy and mode
#   WARMUP=3           seconds of warm-up load per proxy and mode (not measured)
#   THREADS=2          nginx worker_processes and switchyard [server] threads
#   CONNECTIONS=64     client connections (wrk -c, h2load -c)
#   STREAMS=10         concurrent streams per h2 connection (h2load -m)
#   ROUNDS=1           measured runs per proxy and mode (alternating); the table shows the median
#   SWITCHYARD_BIN     switchyard binary to use; when unset: cargo build --release
#   SKIP_SWITCHYARD=1  benchmark nginx only (to check the harness); the ratio line then says n/a
#   BENCH_OUT=dir      copy the configs, raw tool outputs and logs there before the temp dir goes
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
ROUNDS="${ROUNDS:-1}"
SKIP_SWITCHYARD="${SKIP_SWITCHYARD:-0}"
CERT="$ROOT/certs/localhost.crt"
KEY="$ROOT/certs/localhost.key"
CA="$ROOT/certs/test-ca.crt"

# ------------------------------------------------------------------------------------------------
# Tools and binary
# ------------------------------------------------------------------------------------------------
require_tools nginx wrk h2load:nghttp2-client openssl curl
NGINX="$(nginx_bin)"

[[ "$SKIP_SWITCHYARD" == "1" ]] || find_switchyard

[[ -r "$CERT" && -r "$KEY" ]] || die "missing $CERT / $KEY (run certs/make-certs.sh)"

# Temp dir $TMP; every PID in PIDS is stopped on exit, BENCH_OUT gets a copy of $TMP first.
bench_setup
KEEP_OUTPUTS="${BENCH_OUT:-}"

# Other work on the machine skews the figures: note the load average before anything starts.
LOADAVG_START="$(loadavg)"

read -r BACKEND_PORT NG_HTTP NG_TLS SY_HTTP SY_TLS <<<"$(free_ports 5)"

# ------------------------------------------------------------------------------------------------
# Backend: its own nginx, one worker, fixed 100-byte 200 response
# ------------------------------------------------------------------------------------------------
# 99 characters + "\n" = 100 bytes
BODY="switchyard-vs-nginx benchmark backend: a fixed response body that is one hundred bytes long........"
start_backend "$BACKEND_PORT" "$BODY"
BODY_LEN="$(curl -sS "http://127.0.0.1:$BACKEND_PORT/" | wc -c)"
log "backend: nginx pid $BACKEND_PID on 127.0.0.1:$BACKEND_PORT (body $BODY_LEN bytes)"

# ------------------------------------------------------------------------------------------------
# nginx as the proxy
# ------------------------------------------------------------------------------------------------
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $THREADS;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events {
    worker_connections 16384;
}
http {
    server_tokens off;
    default_type application/octet-stream;

    log_format edge escape=json
        '{"time":"\$time_iso8601","remote":"\$remote_addr","host":"\$host",'
        '"method":"\$request_method","uri":"\$request_uri","proto":"\$server_protocol",'
        '"status":\$status,"bytes":\$body_bytes_sent,"duration":\$request_time,'
        '"upstream":"\$upstream_addr","upstream_status":"\$upstream_status",'
        '"upstream_time":"\$upstream_response_time","ua":"\$http_user_agent"}';
    access_log $TMP/nginx/logs/access.log edge buffer=64k;

    gzip off;
    sendfile on;
    tcp_nodelay on;
    # The default (1000) would make the clients reconnect (and re-handshake TLS) during the run;
    # Switchyard does not cap requests per connection, so neither does nginx here.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 10m;

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
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }

    server {
        listen 127.0.0.1:$NG_HTTP;
        listen 127.0.0.1:$NG_TLS ssl http2;
        server_name _;

        ssl_certificate $CERT;
        ssl_certificate_key $KEY;

        # same response headers as the switchyard config below
        add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;
        add_header X-Content-Type-Options "nosniff" always;
        add_header X-Frame-Options "DENY" always;
        add_header Referrer-Policy "strict-origin-when-cross-origin" always;

        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_connect_timeout 30s;
            proxy_send_timeout 60s;
            proxy_read_timeout 60s;
        }
    }
}
EOF
"$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" \
    || die "proxy nginx config test failed"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NG_HTTP" "$NGINX_PID" "proxy nginx"
wait_port "$NG_TLS" "$NGINX_PID" "proxy nginx"
log "nginx: pid $NGINX_PID, http 127.0.0.1:$NG_HTTP, tls+h2 127.0.0.1:$NG_TLS"

# ------------------------------------------------------------------------------------------------
# Switchyard as the proxy
# ------------------------------------------------------------------------------------------------
if [[ "$SKIP_SWITCHYARD" != "1" ]]; then
    mkdir -p "$TMP/switchyard"
    cat >"$TMP/switchyard/switchyard.toml" <<EOF
# generated by benches/vs-nginx.sh
[server]
threads = $THREADS
drain_timeout = "2s"
access_log = "$TMP/switchyard/access.log"
upgrade_socket = "$TMP/switchyard/upgrade.sock"
pid_file = "$TMP/switchyard/switchyard.pid"

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
EOF
    "$SY_BIN" check --config "$TMP/switchyard/switchyard.toml" >&2 || die "switchyard check failed"
    "$SY_BIN" serve --config "$TMP/switchyard/switchyard.toml" \
        >"$TMP/switchyard/stdout.log" 2>"$TMP/switchyard/stderr.log" &
    SY_PID=$!
    PIDS+=("$SY_PID")
    wait_port "$SY_HTTP" "$SY_PID" "switchyard"
    wait_port "$SY_TLS" "$SY_PID" "switchyard"
    log "switchyard: pid $SY_PID, http 127.0.0.1:$SY_HTTP, tls+h2 127.0.0.1:$SY_TLS"
fi

# ------------------------------------------------------------------------------------------------
# Sanity: each proxy answers 200 with the backend body in every mode
# ------------------------------------------------------------------------------------------------
PROXIES=(nginx)
[[ "$SKIP_SWITCHYARD" == "1" ]] || PROXIES+=(switchyard)
MODES=(http tls h2)

url_for() { # proxy mode
    local port
    case "$1:$2" in
        nginx:http) port=$NG_HTTP ;;
        nginx:*) port=$NG_TLS ;;
        switchyard:http) port=$SY_HTTP ;;
        switchyard:*) port=$SY_TLS ;;
    esac
    if [[ "$2" == http ]]; then echo "http://127.0.0.1:$port/"; else echo "https://127.0.0.1:$port/"; fi
}

for p in "${PROXIES[@]}"; do
    for m in "${MODES[@]}"; do
        url="$(url_for "$p" "$m")"
        case "$m" in
            http) opts=(--http1.1) ;;
            tls) opts=(--http1.1 --cacert "$CA") ;;
            h2) opts=(--http2 --cacert "$CA") ;;
        esac
        out="$(curl -sS -o "$TMP/check.body" -w '%{http_code} %{http_version}' "${opts[@]}" "$url")" ||
            die "$p $m: request to $url failed"
        read -r code ver <<<"$out"
        [[ "$code" == 200 ]] || die "$p $m: status $code from $url"
        cmp -s "$TMP/check.body" <(curl -sS "http://127.0.0.1:$BACKEND_PORT/") ||
            die "$p $m: body differs from the backend's"
        if [[ "$m" == h2 && "$ver" != 2 ]]; then die "$p h2: curl got HTTP/$ver, not h2"; fi
        log "check $p $m: 200 HTTP/$ver"
    done
done

# ------------------------------------------------------------------------------------------------
# Load
# ------------------------------------------------------------------------------------------------

# run_load proxy mode seconds out-prefix
# Sets LOAD_RPS, LOAD_P99 (ms) and LOAD_ERRS. Runs in the current shell so that a failure stops
# the script.
run_load() {
    local p="$1" m="$2" secs="$3" out="$4" url pid ticks_before ticks_after
    url="$(url_for "$p" "$m")"
    LOAD_RPS="" LOAD_P99="" LOAD_ERRS=0 LOAD_CPU=""
    pid="$NGINX_PID"
    [[ "$p" == switchyard ]] && pid="$SY_PID"
    ticks_before="$(tree_cpu_ticks "$pid")"
    if [[ "$m" == h2 ]]; then
        rm -f "$out.h2log"
        if ! h2load -c"$CONNECTIONS" -m"$STREAMS" -t2 -D "$secs" --log-file="$out.h2log" "$url" \
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
        rm -f "$out.h2log"   # can be tens of MB; only the percentile is kept
    else
        if ! wrk -t2 -c"$CONNECTIONS" -d"${secs}s" --latency "$url" >"$out.txt" 2>&1; then
            cat "$out.txt" >&2
            die "wrk failed on $url"
        fi
        LOAD_RPS="$(awk '/^Requests\/sec:/ { print $2 }' "$out.txt")"
        LOAD_P99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out.txt")")"
        # socket errors (connect, read, write, timeout) + non-2xx/3xx answers
        LOAD_ERRS="$(awk '/Socket errors:/ { gsub(/,/, ""); s = $4 + $6 + $8 + $10 }
                          /Non-2xx or 3xx responses:/ { n = $5 } END { print s + n + 0 }' "$out.txt")"
    fi
    ticks_after="$(tree_cpu_ticks "$pid")"
    if [[ -z "$LOAD_RPS" || -z "$LOAD_P99" || "$LOAD_P99" == nan ]]; then
        cat "$out.txt" >&2
        die "could not parse $out.txt"
    fi
    # The proxy's CPU time (user + system, every process of it) per request served: the steadiest
    # figure on a shared machine.
    LOAD_CPU="$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" \
        -v rps="$LOAD_RPS" -v s="$secs" 'BEGIN { n = rps * s; if (n <= 0) print "nan"; else printf "%.2f\n", t / hz * 1e6 / n }')"
}

mkdir -p "$TMP/results"
log "warm-up: ${WARMUP}s per proxy and mode"
for m in "${MODES[@]}"; do
    for p in "${PROXIES[@]}"; do
        run_load "$p" "$m" "$WARMUP" "$TMP/results/warmup-$p-$m"
    done
done

# Measured runs. The order of the proxies alternates from one run to the next, so neither always
# runs first (CPU frequency, leftover TIME_WAIT sockets and the like affect both alike).
declare -A RPS P99 ERRS CPU
flip=0
for ((r = 1; r <= ROUNDS; r++)); do
    for m in "${MODES[@]}"; do
        order=("${PROXIES[@]}")
        if ((flip % 2 == 1 && ${#PROXIES[@]} == 2)); then order=("${PROXIES[1]}" "${PROXIES[0]}"); fi
        flip=$((flip + 1))
        for p in "${order[@]}"; do
            log "round $r/$ROUNDS: $m via $p (${DURATION}s)"
            run_load "$p" "$m" "$DURATION" "$TMP/results/$p-$m-$r"
            log "  $LOAD_RPS req/s, p99 $LOAD_P99 ms, errors $LOAD_ERRS, $LOAD_CPU CPU µs/request"
            RPS[$p:$m]+="$LOAD_RPS "
            P99[$p:$m]+="$LOAD_P99 "
            CPU[$p:$m]+="$LOAD_CPU "
            ERRS[$p:$m]=$((${ERRS[$p:$m]:-0} + LOAD_ERRS))
            sleep 1
        done
    done
done


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
echo
echo "Switchyard vs nginx reverse proxy — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr); load average at start $LOADAVG_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), h2load $(h2load --version | awk '{ print $2 }')"
[[ "$SKIP_SWITCHYARD" == "1" ]] || echo "switchyard: $SY_BIN"
echo "threads/workers=$THREADS connections=$CONNECTIONS h2 streams/conn=$STREAMS duration=${DURATION}s warm-up=${WARMUP}s rounds=$ROUNDS (median shown) backend body=${BODY_LEN}B"
echo
declare -A R L C RR RL RC
printf '%-5s  %-10s  %12s  %10s  %7s  %12s\n' mode proxy "req/s" "p99 ms" errors "CPU µs/req"
for m in "${MODES[@]}"; do
    for p in "${PROXIES[@]}"; do
        R[$p]="$(median <<<"${RPS[$p:$m]}")"
        L[$p]="$(median <<<"${P99[$p:$m]}")"
        C[$p]="$(median <<<"${CPU[$p:$m]}")"
        printf '%-5s  %-10s  %12.2f  %10.3f  %7d  %12.2f\n' "$m" "$p" "${R[$p]}" "${L[$p]}" "${ERRS[$p:$m]}" "${C[$p]}"
    done
    if [[ "$SKIP_SWITCHYARD" == "1" ]]; then
        RR[$m]="n/a"; RL[$m]="n/a"; RC[$m]="n/a"
    else
        RR[$m]="$(ratio "${R[switchyard]}" "${R[nginx]}")"
        RL[$m]="$(ratio "${L[switchyard]}" "${L[nginx]}")"
        RC[$m]="$(ratio "${C[switchyard]}" "${C[nginx]}")"
    fi
done
echo
echo "http = HTTP/1.1 plain (wrk), tls = HTTP/1.1 over TLS (wrk), h2 = HTTP/2 over TLS (h2load)."
echo "p99: wrk --latency 99% line; h2: nearest-rank 99th percentile of h2load --log-file per-request times."
echo "ratios are switchyard / nginx: rps above 1 and p99 below 1 favour switchyard."
echo "CPU µs/req: the proxy's user + system CPU time (all its processes, /proc) over the run, per request served."
echo "ratio rps http=${RR[http]} tls=${RR[tls]} h2=${RR[h2]} p99 http=${RL[http]} tls=${RL[tls]} h2=${RL[h2]} cpu http=${RC[http]} tls=${RC[tls]} h2=${RC[h2]}"
