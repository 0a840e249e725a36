#!/usr/bin/env bash
# Blue/green deploy through Switchyard's admin API: start the idle colour, switch to it once it is
# healthy, let the old colour's requests finish, stop the old colour.
#
# Adapt start_colour and stop_colour below to how your application runs. Everything else talks to
# Switchyard through `switchyard ctl` (docs/admin-api.md).
#
# Usage: blue-green-deploy.sh SERVICE [COLOUR]
#   SERVICE  the Switchyard service, with pools named blue and green
#   COLOUR   the colour to deploy to; default: the one that gets no traffic now
#
# Environment:
#   SWITCHYARD_ADMIN  admin API URL (default http://127.0.0.1:9900)
#   SWITCHYARD_TOKEN  admin API token
#   SWITCHYARD        the switchyard binary (default: switchyard on PATH)
#   WAIT_HEALTHY      how long the new colour may take to become healthy (default 60s)
#   DRAIN_TIMEOUT     seconds the old colour gets to finish its requests in flight (default 120)
#
# Needs jq. Exits 0 when deployed, non-zero with a message on stderr at the first failure.
set -euo pipefail

SWITCHYARD="${SWITCHYARD:-switchyard}"
WAIT_HEALTHY="${WAIT_HEALTHY:-60s}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-120}"

log() { printf '%s deploy: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}
trap 'die "unexpected error at line $LINENO (exit $?)"' ERR

# ---- Adapt these two to your setup ------------------------------------------------------------

# Start (or update) the application of one colour, e.g. with the new image.
start_colour() {
    local colour=$1
    log "starting $colour"
    # docker compose up -d --pull always "app-$colour"
    # systemctl restart "app@$colour"
    # kubectl -n shop rollout restart "deployment/app-$colour"
    die "start_colour is a placeholder: edit $0 to start the $colour colour"
}

# Stop the application of one colour.
stop_colour() {
    local colour=$1
    log "stopping $colour"
    # docker compose stop "app-$colour"
    # systemctl stop "app@$colour"
    die "stop_colour is a placeholder: edit $0 to stop the $colour colour"
}

# ------------------------------------------------------------------------------------------------

ctl() { "$SWITCHYARD" ctl "$@"; }

# The weight in force of one pool of the service.
weight_of() {
    local status=$1 pool=$2
    jq -r --arg p "$pool" '.pools[] | select(.name == $p) | .weight' <<<"$status"
}

# Requests in flight to the servers of one pool.
in_flight_of() {
    local pool=$1 status
    status=$(ctl --json status "$SERVICE") || die "cannot read service \"$SERVICE\""
    jq -r --arg p "$pool" '[.pools[] | select(.name == $p) | .servers[].in_flight] | add // 0' <<<"$status"
}

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 SERVICE [COLOUR]"
SERVICE=$1
command -v jq >/dev/null || die "jq is needed to read the admin API's JSON"
command -v "$SWITCHYARD" >/dev/null || die "cannot find the switchyard binary ($SWITCHYARD)"
[[ $DRAIN_TIMEOUT =~ ^[0-9]+$ ]] || die "DRAIN_TIMEOUT must be a number of seconds"

status=$(ctl --json status "$SERVICE") || die "cannot read service \"$SERVICE\" from the admin API"
blue=$(weight_of "$status" blue)
green=$(weight_of "$status" green)
[[ -n $blue && -n $green ]] || die "service \"$SERVICE\" needs pools named blue and green"

if [[ $# -eq 2 ]]; then
    new=$2
    [[ $new == blue || $new == green ]] || die "COLOUR must be blue or green, not \"$new\""
elif [[ $blue -gt 0 && $green -eq 0 ]]; then
    new=green
elif [[ $green -gt 0 && $blue -eq 0 ]]; then
    new=blue
else
    die "both colours take traffic (blue=$blue green=$green); name the colour to deploy to"
fi
if [[ $new == blue ]]; then old=green; else old=blue; fi
log "service \"$SERVICE\": blue=$blue green=$green; deploying to $new, then retiring $old"

# 1. Start the idle colour.
start_colour "$new"

# 2. Switch once it is healthy. Refused (exit 1) if it never becomes healthy: traffic stays put.
if ! ctl switch "$SERVICE" "$new" --wait-healthy "$WAIT_HEALTHY"; then
    die "$new did not become healthy within $WAIT_HEALTHY; traffic stays on $old ($new is left running for inspection)"
fi
log "all new requests go to $new"

# 3. Drain: requests in flight on the old colour finish there.
deadline=$((SECONDS + DRAIN_TIMEOUT))
while :; do
    n=$(in_flight_of "$old")
    [[ $n -eq 0 ]] && break
    if ((SECONDS >= deadline)); then
        die "$old still has $n request(s) in flight after ${DRAIN_TIMEOUT}s; not stopping it"
    fi
    log "waiting for $n request(s) in flight on $old"
    sleep 1
done
log "$old is drained"

# 4. Stop the old colour.
stop_colour "$old"
log "done: service \"$SERVICE\" runs on $new"
