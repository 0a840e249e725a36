#!/usr/bin/env bash
# Fuzzes Switchyard's parsers of untrusted input with cargo-fuzz (libFuzzer):
# (every one in the core crate, switchyard_core, whose modules switchyard re-exports)
#   config  the config loader (config)
#   path    the request path normaliser (path)
#   admin   the admin API's request parsing (admin_request)
#   head    the request-head checks (head)
#   proxy_header  the PROXY protocol header parse (proxy_protocol)
#   import_nginx  `switchyard import nginx`: the nginx config parser and converter (import::nginx)
#   import_ingress  `switchyard import ingress`: Ingress YAML and annotations (import::ingress)
#
#   scripts/fuzz.sh              # every target for 60 s each, as many at once as there are cores (what CI runs)
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

# Built once for every target, then run with the same flags (a run with other flags would build
# again). The build, every crate with coverage instrumentation, is CI's longest step, so:
# - no sanitizer: the targets are safe Rust, where AddressSanitizer finds nothing that a panic
#   would not, and it slows both the build and each input;
# - 16 codegen units (cargo-fuzz's default is 1) and opt-level 1 (fuzz/Cargo.toml);
# - the targets depend on switchyard-core alone, where every parser they call lives, not on the
#   whole proxy (pingora's server, the runtime, the clients).
# Measured on 2 cores: the build 18-25 min -> 13 min (no sanitizer, 16 units, opt-level 1) -> 4.3
# min (the core alone), and each target runs 2 to 5 times as many inputs in its 60 s as with
# AddressSanitizer at opt-level 3 (benches/RESULTS.md, "CI time").
flags=(--sanitizer none --codegen-units 16)
echo "fuzz.sh: building the targets" >&2
cargo +nightly fuzz build "${flags[@]}"

# The targets run side by side, one per core: each still has a core for its whole time.
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -n "fuzz/seeds/$t/"* "fuzz/corpus/$t/" 2>/dev/null || true
    fi
    bound=()
    if [[ "$seconds" != 0 ]]; then bound=(-max_total_time="$seconds"); fi
    while (($(jobs -pr | wc -l) >= $(nproc))); do wait -n || true; done
    echo "fuzz.sh: $t for ${seconds}s (0: until stopped)" >&2
    # -timeout: an input that takes this long is a hang, reported like a crash.
    (
        rc=0
        cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" -- "${bound[@]}" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 >"$logs/$t.log" 2>&1 || rc=$?
        echo "$rc" >"$logs/$t.rc"
    ) &
done
wait

failed=()
for t in "${targets[@]}"; do
    rc="$(cat "$logs/$t.rc" 2>/dev/null || echo 1)"
    if [[ "$rc" == 0 ]]; then
        echo "fuzz.sh: $t: $(grep -m1 '^Done ' "$logs/$t.log" || echo 'done')" >&2
    else
        echo "fuzz.sh: $t FAILED (exit $rc); the end of its output:" >&2
        tail -n 80 "$logs/$t.log" >&2
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz.sh: failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
