#!/usr/bin/env bash
# Builds the Debian package into target/debian/ with cargo-deb ([package.metadata.deb] in
# Cargo.toml; docs/operations.md, "Install from the Debian package"). Before cargo-deb packs the
# files, this writes what the package carries besides the binary into target/packaging/:
#   - switchyard.toml: the reference config/switchyard.toml with the paths of an installed system
#     (packaging/installed-config.sh); `switchyard check` must pass on it;
#   - the bash, zsh and fish completions and the man pages, from the binary itself.
#
#   packaging/build-deb.sh          a release build (cargo build --release), then the package
#   packaging/build-deb.sh --debug  packs the debug binary as it is (no build: tests/packaging.rs
#                                   runs this under `cargo test`), fast compression
# Extra arguments go to `cargo deb` (e.g. --deb-revision 2, --output DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release dir=release deb_args=()
if [[ ${1:-} == --debug ]]; then
  shift
  # cargo-deb 3.8 warns that the dev profile will not always be accepted; scripts/test.sh pins it.
  profile=dev dir=debug deb_args=(--fast --no-strip)
fi
command -v cargo-deb >/dev/null || { echo "build-deb: cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 1; }

binary="${CARGO_TARGET_DIR:-target}/$dir/switchyard"
if [[ $profile == release ]]; then
  cargo build --release --bin switchyard
elif [[ ! -x $binary ]]; then
  echo "build-deb: $binary is missing: cargo build --bin switchyard" >&2
  exit 1
fi
out=target/packaging
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"

packaging/installed-config.sh >"$out/switchyard.toml"
"$binary" check --config "$out/switchyard.toml" >/dev/null

"$binary" completions bash >"$out/completions/switchyard"
"$binary" completions zsh >"$out/completions/_switchyard"
"$binary" completions fish >"$out/completions/switchyard.fish"
"$binary" man "$out/man"
gzip -9n "$out"/man/*.1

cargo deb --no-build --profile "$profile" "${deb_args[@]}" "$@"
