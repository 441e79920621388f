// SPDX-License-Identifier: GPL-2.0
//
// A bare kernel rewrite, the yardstick of the relay's fast path
// (docs/traffic-tools.md, "Comparing with a bare rewrite"): for each port in
// `ports` it sends a packet arriving on it on to the port given there, from
// that port, and sends the answers (packets from there) back to whoever sent
// to it last. No check, no policy, no statistics: a port lookup, a latch and
// a port swap — what any kernel forwarder must do at the least, so that what
// the relay's program costs beyond it can be told.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ETH_LEN 14
#define IP_LEN 20
#define UDP_CSUM_OFF (ETH_LEN + IP_LEN + offsetof(struct udphdr, check))

struct hop {
	__u16 to;      // network order; 0: not a forwarded port
	__u16 back;    // network order: the port that last sent to this one
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct hop);
} ports SEC(".maps");

SEC("classifier")
int rtp_relay_bare_rewrite(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_LEN;
	struct udphdr *udp = data + ETH_LEN + IP_LEN;

	if (data + ETH_LEN + IP_LEN + sizeof(*udp) > data_end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	__u32 port = bpf_ntohs(udp->dest);
	struct hop *h = bpf_map_lookup_elem(&ports, &port);
	if (!h || !h->to)
		return TC_ACT_UNSPEC;
	__u16 sport = udp->source, dport = udp->dest, to;
	if (sport == h->to) {
		if (!h->back)
			return TC_ACT_UNSPEC;
		to = h->back;
	} else {
		h->back = sport;
		to = h->to;
	}
	__u32 old = sport | (__u32)dport << 16, new = dport | (__u32)to << 16;
	udp->source = dport;
	udp->dest = to;
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old, new, BPF_F_MARK_MANGLED_0 | 4);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
