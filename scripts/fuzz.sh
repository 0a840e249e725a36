#!/usr/bin/env bash
# Fuzzes Switchyard's parsers of untrusted input with cargo-fuzz (libFuzzer):
#   config  the config loader (switchyard::config)
#   path    the request path normaliser (switchyard::path)
#   admin   the admin API's request parsing (switchyard::admin)
#   head    the request-head checks (switchyard::proxy::head)
#   proxy_header  the PROXY protocol header parse (switchyard::server::proxy_protocol)
#   import_nginx  `switchyard import nginx`: the nginx config parser and converter (switchyard::import)
#   import_ingress  `switchyard import ingress`: Ingress YAML and annotations (switchyard::import::ingress)
#
#   scripts/fuzz.sh              # every target for 60 s each (what CI runs)
#   scripts/fuzz.sh 600 path     # one target for 10 minutes
#   scripts/fuzz.sh 0 config     # one target until stopped (Ctrl-C)
#
# Needs a nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz when missing.
# Each target starts from the committed seeds in fuzz/seeds/TARGET and keeps what it finds in
# fuzz/corpus/TARGET; a crash leaves its input in fuzz/artifacts/TARGET and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${FUZZ_SECONDS:-60}}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(config path admin head proxy_header import_nginx import_ingress)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: cargo-fuzz needs a nightly toolchain and none is installed" >&2
    echo "fuzz.sh: install one with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -n "fuzz/seeds/$t/"* "fuzz/corpus/$t/" 2>/dev/null || true
    fi
    bound=()
    if [[ "$seconds" != 0 ]]; then bound=(-max_total_time="$seconds"); fi
    echo "fuzz.sh: $t for ${seconds}s (0: until stopped)" >&2
    # -timeout: an input that takes this long is a hang, reported like a crash.
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- "${bound[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1
done
