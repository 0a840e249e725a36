#!/usr/bin/env bash
# Prints the config that an installed Switchyard starts with: the reference config/switchyard.toml
# with the paths of an installed system. Used by packaging/build-deb.sh (/etc/switchyard/ of the
# Debian package) and by the Dockerfile (--container).
#   - upgrade socket in /run/switchyard (the unit's RuntimeDirectory: /tmp is private to the unit,
#     PrivateTmp, and the new process of a binary upgrade must reach the socket);
#   - no example certificate: a TLS listener serves a self-signed one generated at start until a
#     certificate (or [acme]) is configured;
#   - package: the access log in /var/log/switchyard (rotated by /etc/logrotate.d/switchyard);
#     container: the access log stays on stdout, and the listeners take every address (0.0.0.0),
#     so that published ports reach them.
# Each change must apply exactly once, so that an edit of the reference config that moves one of
# these lines fails the build instead of shipping it unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

container=false
[[ ${1:-} == --container ]] && container=true

text=$(<config/switchyard.toml)
change() {
  local old=$1 new=$2 rest
  rest=${text#*"$old"}
  if [[ $rest == "$text" || $rest == *"$old"* ]]; then
    echo "installed-config: config/switchyard.toml does not have this exactly once:" >&2
    echo "$old" >&2
    exit 1
  fi
  text=${text/"$old"/"$new"}
}

change 'upgrade_socket = "/tmp/switchyard_upgrade.sock"' \
       'upgrade_socket = "/run/switchyard/upgrade.sock"'
change '[[certificates]]
cert = "../certs/example.com.crt"
key = "../certs/example.com.key"
fallback = true' \
       '# [[certificates]]
# cert = "/etc/switchyard/example.com.crt"
# key = "/etc/switchyard/example.com.key"
# fallback = true'
if $container; then
  change 'address = "127.0.0.1:8080"' 'address = "0.0.0.0:8080"'
  change 'address = "127.0.0.1:8443"' 'address = "0.0.0.0:8443"'
  where="the container image: listeners on 0.0.0.0, the access log on stdout"
  apply="docker kill --signal HUP CONTAINER"
else
  change 'access_log = "stdout"' 'access_log = "/var/log/switchyard/access.log"'
  where="the Debian package: the access log in /var/log/switchyard"
  apply="systemctl reload switchyard"
fi

printf '%s\n' \
  "# Installed config of $where." \
  "# It is config/switchyard.toml of the source, with the upgrade socket in /run/switchyard and no" \
  "# example certificate (packaging/installed-config.sh)." \
  "# Check a change with \`switchyard check\`; apply it with \`$apply\`." \
  "" \
  "$text"
