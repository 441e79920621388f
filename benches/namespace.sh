# shellcheck shell=bash
# Sourced by the benchmark scripts that run in a network namespace of their
# own: `new_namespace NAME [SLOTS]` creates it with lo up and, given SLOTS, a
# UDP socket table of that many slots (net.ipv4.udp_child_hash_entries, taken
# when a namespace is created; the host's setting is restored whatever
# fails). The caller deletes it (`ip netns del NAME`), e.g. in its EXIT trap.
# Run a command inside with `nsenter --net=/run/netns/NAME`, not `ip netns
# exec`, which remounts /sys and with it the bpffs the relay pins its maps in.
new_namespace() {
    local name=$1 slots=${2:-} old
    if [ -n "$slots" ]; then
        old=$(sysctl -n net.ipv4.udp_child_hash_entries)
        sysctl -qw net.ipv4.udp_child_hash_entries="$slots" || return 1
        if ! ip netns add "$name"; then
            sysctl -qw net.ipv4.udp_child_hash_entries="$old"
            return 1
        fi
        sysctl -qw net.ipv4.udp_child_hash_entries="$old"
    else
        ip netns add "$name" || return 1
    fi
    ip -n "$name" link set lo up
}
