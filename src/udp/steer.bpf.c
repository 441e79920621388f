// SPDX-License-Identifier: GPL-2.0
//
// Receive steering (src/udp/steer.rs): an sk_lookup program that hands every
// UDP datagram addressed to a steered port on one address (or, with address
// 0, on any) to one of a few sockets, instead of the port's own. The relay
// uses it on the kernel fast path so that its ports need no socket of their
// own (docs/forwarding.md, "Kernel fast path"); the sink, to read thousands
// of ports with one recvmmsg per batch (docs/traffic-tools.md). The reader
// learns each datagram's port from IP_ORIGDSTADDR. Ports not steered, other
// addresses and other protocols take the kernel's ordinary lookup.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define MAX_SOCKETS 1024

// The sockets steered datagrams go to, by index.
struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, MAX_SOCKETS);
    __type(key, __u32);
    __type(value, __u32); // a socket's file descriptor, as it is written
} socket SEC(".maps");

// Bit p % 64 of word p / 64: whether port p is steered. The program runs on
// every UDP socket lookup of the namespace, those of other processes' ports
// too (with Wowza beside the relay, each of its datagrams): for them it reads
// only this, whose few words for their ports stay in the CPU's cache. The
// `ports` entry it replaces as the first test was a cache miss a datagram at
// full load (BENCHMARKS.md, stop 28).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 65536 / 64);
    __type(key, __u32);
    __type(value, __u64);
} steered SEC(".maps");

// By destination port (host order): 0 when the port is not steered, else
// 1 + the index of its socket.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u16);
} ports SEC(".maps");

// Index 0: the steered IPv4 address, network order; 0: every address.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} address SEC(".maps");

SEC("sk_lookup")
int rtp_relay_steer(struct bpf_sk_lookup *ctx)
{
    if (ctx->protocol != IPPROTO_UDP || ctx->family != AF_INET)
        return SK_PASS;
    __u32 port = ctx->local_port;
    __u32 word = port / 64;
    __u64 *bits = bpf_map_lookup_elem(&steered, &word);
    if (!bits || !(*bits & (1ULL << (port % 64))))
        return SK_PASS;
    __u32 zero = 0;
    __u32 *addr = bpf_map_lookup_elem(&address, &zero);
    if (!addr || (*addr && ctx->local_ip4 != *addr))
        return SK_PASS;
    __u16 *socket_of = bpf_map_lookup_elem(&ports, &port);
    if (!socket_of || !*socket_of)
        return SK_PASS;
    __u32 index = *socket_of - 1;
    struct bpf_sock *sk = bpf_map_lookup_elem(&socket, &index);
    if (!sk)
        return SK_PASS;
    // The sockets share a port (SO_REUSEPORT): this one, not one the
    // kernel would pick from their group. Should the assignment fail, the
    // ordinary lookup decides: the port's own socket if it has one, else
    // the datagram is refused as on any closed port.
    bpf_sk_assign(ctx, sk, BPF_SK_LOOKUP_F_NO_REUSEPORT);
    bpf_sk_release(sk);
    return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
