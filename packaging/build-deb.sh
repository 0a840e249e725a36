#!/usr/bin/env bash
# Builds the Debian package into target/debian/ with cargo-deb ([package.metadata.deb] in
# Cargo.toml; docs/operations.md, "Install from the Debian package"). Before cargo-deb packs the
# files, this writes what the package carries besides the binary into target/packaging/:
#   - switchyard.toml: the reference config/switchyard.toml with the paths of an installed system
#     (see `installed_config`); `switchyard check` must pass on it;
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

# The reference config, changed where an installed system differs; each change must apply exactly
# once, so that an edit of the reference config that moves one of these lines fails the build.
installed_config() {
  local text
  text=$(<config/switchyard.toml)
  change() {
    local old=$1 new=$2 rest
    rest=${text#*"$old"}
    if [[ $rest == "$text" || $rest == *"$old"* ]]; then
      echo "build-deb: config/switchyard.toml does not have this exactly once:" >&2
      echo "$old" >&2
      exit 1
    fi
    text=${text/"$old"/"$new"}
  }
  # The upgrade socket in the unit's RuntimeDirectory: /tmp is private to the unit (PrivateTmp),
  # and the new process of a binary upgrade must reach the socket.
  change 'upgrade_socket = "/tmp/switchyard_upgrade.sock"' \
         'upgrade_socket = "/run/switchyard/upgrade.sock"'
  # The access log to a file that logrotate rotates (/etc/logrotate.d/switchyard).
  change 'access_log = "stdout"' \
         'access_log = "/var/log/switchyard/access.log"'
  # No example certificate on an installed system: the TLS listener serves a self-signed one
  # generated at start until a certificate is configured (or [acme]).
  change '[[certificates]]
cert = "../certs/example.com.crt"
key = "../certs/example.com.key"
fallback = true' \
         '# [[certificates]]
# cert = "/etc/switchyard/example.com.crt"
# key = "/etc/switchyard/example.com.key"
# fallback = true'
  printf '%s\n' \
    "# Installed by the switchyard package: config/switchyard.toml of the source, with the upgrade" \
    "# socket in /run/switchyard, the access log in /var/log/switchyard and no example certificate." \
    "# Check a change with \`switchyard check\`, apply it with \`systemctl reload switchyard\`." \
    "" \
    "$text"
}
installed_config >"$out/switchyard.toml"
"$binary" check --config "$out/switchyard.toml" >/dev/null

"$binary" completions bash >"$out/completions/switchyard"
"$binary" completions zsh >"$out/completions/_switchyard"
"$binary" completions fish >"$out/completions/switchyard.fish"
"$binary" man "$out/man"
gzip -9n "$out"/man/*.1

cargo deb --no-build --profile "$profile" "${deb_args[@]}" "$@"
