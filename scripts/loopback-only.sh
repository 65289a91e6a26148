#!/usr/bin/env bash
# Run a command in a new network namespace whose only interface is loopback.
#
#   bash scripts/loopback-only.sh CMD [ARGS...]
#
# Inside, `lo` is up (127.0.0.0/8, ::1) and there is no other interface and no
# route: a connection to any other address fails at once with ENETUNREACH, so
# nothing the command starts (Ray, the dev Kubernetes cluster, the tests) can
# reach or be reached from the outside, and a test that needed the network
# fails here instead of passing by luck. Abstract Unix sockets are per network
# namespace too, so they are private to the command as well.
#
# `lo` also gets two more addresses, 127.255.255.254/8 and fd7f::1/128 (still
# reachable only from inside). Name lookups made with AI_ADDRCONFIG (boost's
# default; Ray's node-IP detection uses it) return nothing on a host whose only
# addresses are 127.0.0.1 and ::1, so they would fail before opening a socket
# and hide what they do on a real machine. With these, they behave as on one:
# they go on to connect, and fail there, where strace can see it.
#
# As root this uses `unshare --net`; otherwise `unshare --net --map-root-user`
# (needs unprivileged user namespaces). When neither works, or with
# RAYSCALE_NO_NETNS=1, it says so on stderr and runs the command directly.
set -euo pipefail
if [[ $# -eq 0 ]]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi
if command -v ip >/dev/null && [[ "$(ip -o link show | awk -F': ' '{print $2}')" == lo ]]; then
    exec "$@"  # already in a namespace with loopback only
fi

if [[ "${RAYSCALE_NO_NETNS:-}" == 1 ]]; then
    reason="RAYSCALE_NO_NETNS=1"
elif ! command -v unshare >/dev/null; then
    reason="unshare (util-linux) not found"
elif ! command -v ip >/dev/null; then
    reason="ip (iproute2) not found"
else
    reason=""
fi
if [[ -n "$reason" ]]; then
    echo "running tests WITHOUT network isolation: $reason" >&2
    exec "$@"
fi

if [[ "$(id -u)" == 0 ]]; then
    unshare_args=(--net)
else
    unshare_args=(--net --map-root-user)
fi
# Try it first, so a refusal (no CAP_SYS_ADMIN in a container, user namespaces
# disabled) becomes a clear message rather than a failed test run.
if ! err=$(unshare "${unshare_args[@]}" ip link set lo up 2>&1); then
    echo "running tests WITHOUT network isolation: unshare ${unshare_args[*]} failed: $err" >&2
    exec "$@"
fi

# shellcheck disable=SC2016  # $@ is expanded by the inner shell
exec unshare "${unshare_args[@]}" bash -c '
    set -euo pipefail
    ip link set lo up
    ip addr add 127.255.255.254/8 dev lo
    ip -6 addr add fd7f::1/128 dev lo 2>/dev/null || true  # IPv6 may be off
    others=$(ip -o link show | awk -F": " "\$2 != \"lo\" {print \$2}")
    if [[ -n "$others" ]]; then
        echo "loopback-only.sh: unexpected interfaces in the new namespace: $others" >&2
        exit 1
    fi
    echo "network isolation: a new network namespace with loopback only" >&2
    exec "$@"
' loopback-only "$@"
