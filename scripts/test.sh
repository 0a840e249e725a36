#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with a Rust toolchain, as root:
# installs what is missing (cmake for pingora's zlib-ng build, make for jemalloc's, protoc for etcd-client's, curl, and the real peers the tests
# talk to), then `cargo test`. Under CI (CI=true) a missing peer is an error, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package that provides it
declare -A NEED=(
  [cmake]=cmake
  [make]=make
  [protoc]=protobuf-compiler
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [curl]=curl
  [openssl]=openssl
  [promtool]=prometheus
  [prometheus]=prometheus
  [pebble]=pebble
  [pebble-challtestsrv]=pebble
  [script]=bsdutils
  [nginx]=nginx
  [python3]=python3
  [haproxy]=haproxy
  [nghttp]=nghttp2-client
  [htpasswd]=apache2-utils
  [pip3]=python3-pip
  [testssl]=testssl.sh
  [systemd-analyze]=systemd
  [logrotate]=logrotate
  [dpkg-deb]=dpkg
  [man]=man-db
  [chromium]=chromium
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# protoc's well-known types (google/protobuf/*.proto), which etcd-client's protos import: Debian
# ships them in libprotobuf-dev, only a recommendation of protobuf-compiler.
PROTO_INCLUDE=/usr/include/google/protobuf/descriptor.proto
[[ -e $PROTO_INCLUDE ]] || missing+=(libprotobuf-dev)
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "test.sh: $cmd is still missing" >&2; exit 1; }
done
[[ -e $PROTO_INCLUDE ]] || { echo "test.sh: $PROTO_INCLUDE is still missing" >&2; exit 1; }

# The gRPC tests' server and client: Python's grpcio, from PyPI (Debian's python3-grpcio is years
# older). Debian's own Python refuses a system-wide pip install without --break-system-packages.
if ! python3 -c 'import grpc' 2>/dev/null; then
  echo "test.sh: installing grpcio (pip)" >&2
  python3 -m pip install --quiet grpcio 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages grpcio
fi
python3 -c 'import grpc' || { echo "test.sh: python3 cannot import grpc" >&2; exit 1; }

# The OTLP receiver of tests/tracing.rs decodes spans with the official OpenTelemetry protobuf
# messages (PyPI opentelemetry-proto; no collector is packaged for Debian or PyPI).
if ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  echo "test.sh: installing opentelemetry-proto (pip)" >&2
  python3 -m pip install --quiet opentelemetry-proto 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages opentelemetry-proto
fi
python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' \
  || { echo "test.sh: python3 cannot import opentelemetry.proto" >&2; exit 1; }
# tests/packaging.rs builds the Debian package with cargo-deb (pinned: the test packs the debug
# binary, which later cargo-deb releases may refuse); a build from crates.io takes ~1.5 min on 2 cores.
CARGO_DEB_VERSION=3.8.0
if [[ "$(cargo deb --version 2>/dev/null)" != *" $CARGO_DEB_VERSION"* ]]; then
  echo "test.sh: installing cargo-deb $CARGO_DEB_VERSION (cargo install)" >&2
  cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

cargo test --all-targets "$@"

# The patched pingora crates' own unit tests (vendor/PATCHES.md). Four connector tests need the
# internet (one.one.one.one, routes to TEST-NET addresses) and fail offline with or without the
# patches: they are the only ones left out.
cargo test -p pingora-core -p pingora-http -p pingora-proxy -p pingora-timeout --lib -- \
    --skip connectors::http::v1::tests::test_connect \
    --skip connectors::http::v1::tests::test_reuse_rejects_fd_mismatch \
    --skip connectors::l4::tests::test_conn_error_addr_not_avail \
    --skip connectors::l4::tests::test_conn_timeout
# Vendor patches 17, 30 and 38 live in pingora-core's rustls listener and stream, built only with its
# `rustls` feature; so do the connector tests (any TLS feature), of which patch 36's probe test and
# the one it changes run here (the others connect to the internet).
cargo test -p pingora-core --features rustls --lib -- \
    listeners::tls::rustls::config_cell_tests protocols::tls::rustls::stream::tests \
    connectors::tests::test_reusable_tcp_stream_is_probed_without_polling_a_read \
    connectors::tests::test_unexpected_data_connection_count_increments

# Fuzz every parser of untrusted input for a bounded time (FUZZ_SECONDS each, default 60).
./scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
