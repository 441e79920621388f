# shellcheck shell=bash
# Sourced by the benchmark scripts that run in a network namespace of their
# own: `new_namespace NAME [SLOTS]` creates it with lo up and, given SLOTS, a
# UDP socket table of that many slots (net.ipv4.udp_child_hash_entries, taken
# when a namespace is created). `delete_namespace NAME`, for the caller's EXIT
# trap, removes it and puts the host's setting back, whatever failed or was
# interrupted in between. Run a command inside with
# `nsenter --net=/run/netns/NAME`, not `ip netns exec`, which remounts /sys
# and with it the bpffs the relay pins its maps in.

# The host's udp_child_hash_entries while new_namespace has changed it.
namespace_host_slots=

new_namespace() {
    local name=$1 slots=${2:-}
    if [ -n "$slots" ]; then
        namespace_host_slots=$(sysctl -n net.ipv4.udp_child_hash_entries)
        sysctl -qw net.ipv4.udp_child_hash_entries="$slots" || return 1
    fi
    ip netns add "$name" || return 1
    if [ -n "$namespace_host_slots" ]; then
        sysctl -qw net.ipv4.udp_child_hash_entries="$namespace_host_slots"
        namespace_host_slots=
    fi
    ip -n "$name" link set lo up
}

delete_namespace() {
    if [ -n "$namespace_host_slots" ]; then
        sysctl -qw net.ipv4.udp_child_hash_entries="$namespace_host_slots"
    fi
    ip netns del "$1" 2>/dev/null || true
}
