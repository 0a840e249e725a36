#!/bin/sh
# DNS-01 hook for Switchyard's ACME client (`dns_hook` in [acme]); see docs/acme.md.
#
# Called as:  dns-hook.sh present|cleanup RECORD VALUE
#   RECORD  fully qualified TXT name with a trailing dot, e.g. _acme-challenge.example.com.
#   VALUE   the TXT content the CA expects
# Exit 0 once the record is visible (present) or gone (cleanup); anything else fails the order,
# and what the script printed on stderr shows in the log and in `switchyard ctl certs`.
# `present` must ADD the value: a name and its wildcard share one record with two values.
#
# Two backends, chosen by DNS_HOOK_BACKEND:
#   nsupdate      RFC 2136 dynamic update (BIND, Knot, PowerDNS, many providers):
#                 NSUPDATE_SERVER (primary), NSUPDATE_KEY (TSIG key file, optional),
#                 NSUPDATE_TTL (default 60); waits until the server answers the value.
#   challtestsrv  pebble-challtestsrv's management API at CHALLTESTSRV_URL (tests, local labs).
# Any other provider: replace the two functions below with calls to its API.
set -eu

action=${1:?usage: $0 present|cleanup RECORD VALUE}
record=${2:?record name missing}
value=${3:?value missing}

present_challtestsrv() {
  curl -fsS -X POST -d "{\"host\":\"$record\",\"value\":\"$value\"}" \
    "${CHALLTESTSRV_URL:?set CHALLTESTSRV_URL}/set-txt" >/dev/null
}

cleanup_challtestsrv() {
  curl -fsS -X POST -d "{\"host\":\"$record\"}" \
    "${CHALLTESTSRV_URL:?set CHALLTESTSRV_URL}/clear-txt" >/dev/null
}

nsupdate_send() {
  server=${NSUPDATE_SERVER:?set NSUPDATE_SERVER}
  {
    echo "server $server"
    echo "$1"
    echo "send"
  } | nsupdate ${NSUPDATE_KEY:+-k "$NSUPDATE_KEY"}
}

present_nsupdate() {
  nsupdate_send "update add $record ${NSUPDATE_TTL:-60} TXT \"$value\""
  # Wait (up to 2 minutes) until the primary answers the new value.
  i=0
  until dig +short TXT "$record" "@$NSUPDATE_SERVER" | grep -qF "\"$value\""; do
    i=$((i + 1))
    [ "$i" -le 60 ] || { echo "TXT $record not visible after 120 s" >&2; exit 1; }
    sleep 2
  done
}

cleanup_nsupdate() {
  nsupdate_send "update delete $record TXT \"$value\""
}

backend=${DNS_HOOK_BACKEND:-nsupdate}
case "$backend:$action" in
  challtestsrv:present | challtestsrv:cleanup | nsupdate:present | nsupdate:cleanup)
    "${action}_${backend}" ;;
  *)
    echo "unknown backend or action: $backend $action" >&2
    exit 2 ;;
esac
