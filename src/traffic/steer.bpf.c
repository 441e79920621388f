// SPDX-License-Identifier: GPL-2.0
//
// The sink's receive steering (docs/traffic-tools.md, "How the tools stay lighter than what they measure"):
// an sk_lookup program that hands every UDP datagram addressed to one of the
// sink's media ports on its address to one socket, so that the sink reads
// thousands of ports with one recvmmsg per batch instead of one system call
// (and one epoll event) per port. The sink learns each datagram's port from
// IP_ORIGDSTADDR. Ports not in `ports`, other addresses and other protocols
// take the kernel's ordinary lookup.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2

// Index 0: the one socket every steered datagram goes to.
struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32); // a socket's file descriptor, as it is written
} socket SEC(".maps");

// By destination port (host order): 1 when the port is steered.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u8);
} ports SEC(".maps");

// Index 0: the sink's IPv4 address, network order.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} address SEC(".maps");

SEC("sk_lookup")
int rtp_relay_sink_steer(struct bpf_sk_lookup *ctx)
{
    if (ctx->protocol != IPPROTO_UDP || ctx->family != AF_INET)
        return SK_PASS;
    __u32 zero = 0;
    __u32 *addr = bpf_map_lookup_elem(&address, &zero);
    if (!addr || ctx->local_ip4 != *addr)
        return SK_PASS;
    __u32 port = ctx->local_port;
    __u8 *steered = bpf_map_lookup_elem(&ports, &port);
    if (!steered || !*steered)
        return SK_PASS;
    struct bpf_sock *sk = bpf_map_lookup_elem(&socket, &zero);
    if (!sk)
        return SK_PASS;
    // Should the assignment fail, the ordinary lookup finds nothing and the
    // datagram is refused as on any closed port: the sink counts it missing.
    bpf_sk_assign(ctx, sk, 0);
    bpf_sk_release(sk);
    return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
