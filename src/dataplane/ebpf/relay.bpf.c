// SPDX-License-Identifier: GPL-2.0
//
// rtp-relay's kernel fast path (docs/forwarding.md, "Kernel fast path"): a TC ingress
// program that forwards the RTP and RTCP packets of established streams inside
// the kernel and measures them exactly as the userspace statistics modules do
// (src/stats/rtp.rs, src/stats/rtcp.rs). It takes only packets addressed to
// the relay, as its socket would. A sender the policy refuses (strict, or latch
// once latched) is dropped here, whatever it sends, and counted as userspace
// would (unknown_source): a stranger's flood never reaches the socket. Anything
// else it does not forward is left untouched for the userspace data plane,
// which applies docs/forwarding.md as always: malformed and oversize packets,
// packets from Wowza before an appliance is latched, RTCP compounds of more
// than RTCP_MAX_PARTS packets, fragments, IP options, IPv6.
//
// The forwarding table is the userspace data plane's, mirrored into `rules`
// (src/dataplane/ebpf/table.rs has the same layouts). Per-stream state lives
// in `streams`, under a lock of its own (below): RFC 3550 sequence state is
// not per-CPU mergeable.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define PLANE_RTP 0
#define PLANE_RTCP 1
#define POLICY_STRICT 0
#define POLICY_LATCH 1
#define POLICY_ANY 2

#define MIN_SEQUENTIAL 2
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define SEQ_MOD 65536u
#define NO_BAD_SEQ 0xffffffffu

#define ETH_LEN 14
#define IP_LEN 20
#define UDP_LEN 8
#define RTP_OFF (ETH_LEN + IP_LEN + UDP_LEN)

#define UDP_CSUM_OFF (ETH_LEN + IP_LEN + offsetof(struct udphdr, check))

// One bound port's rule: written by userspace only.
struct rule {
	__u32 active;          // 1: a bound port of a live group
	__u32 generation;      // new on every fresh bind: the stream state restarts
	__u32 latch_epoch;     // bumped by a re-latch: the latched appliance is forgotten
	__u32 bind_addr;       // network order; 0: any local address
	__u32 dest_addr;       // network order
	__u32 src_addr;        // network order: the address the relay sends to dest from
	__u32 source_addr;     // network order: strict policy's appliance
	__u32 egress_ifindex;  // toward dest; 0: dest is a local address
	__u32 loopback_ifindex;
	__u32 max_packet_size; // UDP payload bytes
	__u32 clock_rate;      // Hz, for jitter
	__u16 dest_port;       // host order
	__u8 plane;
	__u8 policy;
	__u32 owner;           // the reservation holding the port (userspace's tag)
	__u8 local_ok;         // a local dest may be reached from other interfaces
	__u8 learn;            // a video port: parameter-set packets are copied to `learn`
	__u16 learn_epoch;     // bumped by every install: the learner may be new, copy again
	__u64 window_end_ns;   // CLOCK_BOOTTIME; past it nothing is forwarded
};

// One port's stream: written by this program only (userspace reads it).
struct stream {
	__u32 lock;            // 1: a CPU is updating it (stream_lock)
	__u32 generation;
	__u32 latch_epoch;
	__u32 latched_addr;    // network order; 0: none
	__u32 latched_local;   // network order: the relay address the appliance used
	__u32 latched_ifindex; // where the appliance's packets came in
	__u16 latched_port;    // network order
	__u8 has_source;
	__u8 probation;
	__u8 has_transit;
	__u8 payload_type;
	__u16 max_seq;
	__u32 ssrc;
	__u32 cycles;
	__u32 base_seq;
	__u32 bad_seq;         // NO_BAD_SEQ: none
	__u32 transit;
	__u32 pad;
	__u64 jitter_q4;       // RFC 3550 A.8 integer jitter, timestamp units × 16
	__u64 received;
	__u64 seen_lo;         // bit i: extended sequence max - i was received
	__u64 seen_hi;
	__u64 first_ns;        // CLOCK_BOOTTIME of the stream's first packet
	__u64 last_ns;         // … and of its latest from the appliance
	__u64 packets;
	__u64 bytes;
	__u64 duplicates;
	__u64 reordered;
	__u64 ssrc_changes;
	__u64 prior_expected;
	__u64 prior_received;
	__u64 to_wowza_packets; // a control port's; a media port's are packets, bytes
	__u64 to_wowza_bytes;
	__u64 to_appliance_packets;
	__u64 to_appliance_bytes;
	__u64 send_errors;
	__u64 unknown_source;  // packets of senders the policy refused, dropped here
	// A control port's (src/stats/rtcp.rs RtcpStream): the appliance's reports,
	// and the first report block of the destination's latest compound.
	__u64 sender_reports;
	__u64 receiver_reports;
	__u32 wowza_jitter;
	__u32 wowza_lost;      // 24-bit two's complement, sign-extended
	__u8 wowza_fraction;
	__u8 has_wowza_report;
	__u16 learn_epoch;     // the rule's, when `learned` was last copied
	__u8 pad2[4];
	__u64 fenced;          // packets dropped past the fence's deadline (`fence`)
	// Fingerprints of the last parameter-set packets copied to `learn`: an
	// SPS or STAP-A, and a PPS (hand_to_learner). 0: none. 256 bytes: a
	// stream starts a cache line.
	__u32 learned[2];
};

#define MAX_LOCALS 64

// The host's IPv4 addresses (network order) but 127.0.0.0/8: for rules bound
// on 0.0.0.0, a packet is the relay's only when addressed to one of them, as
// its socket would take it. Written by userspace, which keeps it current.
struct locals {
	__u32 count;           // > MAX_LOCALS: the list is incomplete
	__u32 addr[MAX_LOCALS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct locals);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} locals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct stream);
	// The relay reads it from its memory, no system call a port.
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} streams SEC(".maps");

// The fence of a relay in a cluster (docs/cluster.md, "Fencing"): the
// CLOCK_BOOTTIME ns past which this node forwards nothing, written by userspace
// ahead of its lease's expiry; 0: no fence (a single relay forwards on after a
// crash, as the pinned maps are meant to). Pinned like the rules, so the fence
// holds with the relay process gone (kill -9): the cluster's next active node
// forwards once the lease has expired, and this one must have stopped by then.
// Its own map: written a few times a lease, read by every packet, its line
// stays shared in every CPU's cache.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fence SEC(".maps");

// Copies of forwarded video packets whose payload may carry an H.264 SPS or
// PPS, for the relay's SDP (src/dataplane/ebpf/table.rs, LearnCopy): the
// packets forwarded here never reach its socket.
#define LEARN_MAX 2048
struct learn_copy {
	__u32 port;
	__u32 len;
	__u8 data[LEARN_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} learn SEC(".maps");

// How often a packet tries for its stream's lock before it leaves itself to
// userspace (which forwards it as always). Only two CPUs sending on one port
// at once contend — a control port's appliance and Wowza — and the holder runs
// a few dozen instructions in softirq context, not preempted: a second try
// almost always takes it.
#define LOCK_TRIES 16

// A lock of an exchange and a store, where bpf_spin_lock also turns interrupts
// off and on: on a virtual machine that is a paravirtual call each way, which
// cost more than the rest of the program (perf, BENCHMARKS.md).
static __always_inline int stream_lock(struct stream *s)
{
#pragma unroll
	for (int i = 0; i < LOCK_TRIES; i++)
		if (__sync_lock_test_and_set(&s->lock, 1) == 0)
			return 1;
	return 0;
}

static __always_inline void stream_unlock(struct stream *s)
{
	// An exchange, not a plain store: every update above is visible first.
	__sync_lock_test_and_set(&s->lock, 0);
}

static __always_inline void shift_seen(struct stream *s, __u32 n)
{
	if (n >= 128) {
		s->seen_lo = 1;
		s->seen_hi = 0;
		return;
	}
	if (n >= 64) {
		s->seen_hi = s->seen_lo << (n - 64);
		s->seen_lo = 1;
		return;
	}
	s->seen_hi = (s->seen_hi << n) | (s->seen_lo >> (64 - n));
	s->seen_lo = (s->seen_lo << n) | 1;
}

static __always_inline void init_seq(struct stream *s, __u16 seq)
{
	s->base_seq = seq;
	s->max_seq = seq;
	s->bad_seq = NO_BAD_SEQ;
	s->cycles = 0;
	s->received = 0;
	s->seen_lo = 1;
	s->seen_hi = 0;
	s->probation = 0;
}

static __always_inline __u64 expected(const struct stream *s)
{
	if (s->probation > 0)
		return 0;
	return (__u64)(__u32)(s->cycles + s->max_seq - s->base_seq) + 1;
}

// RFC 3550 A.1 update_seq, as RtpStream::on_packet does it. Returns 1 when the
// packet is a duplicate (no jitter update).
static __always_inline int update_seq(struct stream *s, __u16 seq)
{
	__u16 udelta = seq - s->max_seq;

	if (s->probation > 0) {
		if (seq == (__u16)(s->max_seq + 1)) {
			s->probation--;
			s->max_seq = seq;
			if (s->probation == 0) {
				init_seq(s, seq);
				s->received++;
			}
		} else {
			s->probation = MIN_SEQUENTIAL - 1;
			s->max_seq = seq;
		}
		return 0;
	}
	if (udelta == 0) {
		s->duplicates++;
		return 1;
	}
	if (udelta < MAX_DROPOUT) {
		if (seq < s->max_seq)
			s->cycles += SEQ_MOD;
		s->max_seq = seq;
		shift_seen(s, udelta);
		s->received++;
		s->bad_seq = NO_BAD_SEQ;
		return 0;
	}
	if ((__u32)udelta <= SEQ_MOD - MAX_MISORDER) {
		if (s->bad_seq == seq) {
			// A confirmed restart: keep the old epoch's counts.
			s->prior_expected += expected(s);
			s->prior_received += s->received;
			init_seq(s, seq);
			s->received = 1;
			return 0;
		}
		s->bad_seq = (__u16)(seq + 1);
		return 0;
	}
	__u16 behind = s->max_seq - seq;
	__u64 bit;
	int seen;
	if (behind < 64) {
		bit = 1ULL << behind;
		seen = (s->seen_lo & bit) != 0;
		s->seen_lo |= bit;
	} else {
		bit = 1ULL << ((behind - 64) & 63);
		seen = (s->seen_hi & bit) != 0;
		s->seen_hi |= bit;
	}
	if (seen) {
		s->duplicates++;
		return 1;
	}
	s->reordered++;
	__u32 ext = s->cycles + s->max_seq - behind;
	if (ext >= s->base_seq)
		s->received++;
	return 0;
}

static __always_inline void on_rtp(struct stream *s, const struct rule *r, __u16 seq,
				   __u32 ts, __u32 ssrc, __u8 pt, __u32 len, __u64 now)
{
	s->packets++;
	s->bytes += len;
	if (!s->first_ns)
		s->first_ns = now;
	__u64 since = now - s->first_ns;
	// ns × rate / 1e9, exact as the u128 path. One 64-bit division while the
	// product fits (rates to 2^20 Hz, streams to 4.8 hours: every lecture);
	// past that, split so that nothing overflows. Divisions are the costliest
	// instructions the program runs.
	__u32 arrival;
	if (r->clock_rate <= (1u << 20) && since < (1ULL << 44))
		arrival = (__u32)((since * r->clock_rate) / 1000000000ULL);
	else
		arrival = (__u32)((since / 1000000000ULL) * r->clock_rate +
				  ((since % 1000000000ULL) * r->clock_rate) / 1000000000ULL);

	if (!s->has_source || s->ssrc != ssrc) {
		if (s->has_source) {
			s->ssrc_changes++;
			s->prior_expected += expected(s);
			s->prior_received += s->received;
		}
		s->has_source = 1;
		s->ssrc = ssrc;
		init_seq(s, seq);
		s->max_seq = seq - 1;
		s->probation = MIN_SEQUENTIAL;
		s->has_transit = 0;
		s->jitter_q4 = 0;
	}
	s->payload_type = pt;
	if (update_seq(s, seq))
		return;
	__u32 transit = arrival - ts;
	if (s->has_transit) {
		__s32 d = (__s32)(transit - s->transit);
		__u64 ad = d < 0 ? (__u64)(-(__s64)d) : (__u64)d;
		s->jitter_q4 += ad - ((s->jitter_q4 + 8) >> 4);
	}
	s->transit = transit;
	s->has_transit = 1;
}

// docs/forwarding.md RTP check on a media port (packet/rtp.rs RtpHeader::parse):
// the payload's offset in the RTP packet, 0 when it is not valid.
static __always_inline __u32 rtp_valid(struct __sk_buff *skb, const __u8 *h, __u32 len)
{
	if (len < 12 || (h[0] >> 6) != 2)
		return 0;
	// RFC 5761 §4: a second byte of 192–223 is RTCP; 72–76 are reserved.
	__u8 pt = h[1] & 0x7f;
	if ((h[1] >= 192 && h[1] <= 223) || (pt >= 72 && pt <= 76))
		return 0;
	__u32 header = 12 + 4 * (h[0] & 0x0f);
	if (h[0] & 0x10) {
		__u8 ext[4];
		if (header + 4 > len)
			return 0;
		if (bpf_skb_load_bytes(skb, RTP_OFF + (header & 0x7f), ext, 4) < 0)
			return 0;
		header += 4 + 4 * (((__u32)ext[2] << 8) | ext[3]);
	}
	if (header > len)
		return 0;
	if (h[0] & 0x20) {
		__u8 padding;
		if (bpf_skb_load_bytes(skb, RTP_OFF + ((len - 1) & 0xffff), &padding, 1) < 0)
			return 0;
		if (padding == 0 || header + padding > len)
			return 0;
	}
	return header;
}

// The most packets of one compound the program walks: reports come as SR or
// RR + SDES (+ BYE), rarely more; a longer compound goes to userspace, which
// judges it as always.
#define RTCP_MAX_PARTS 8

// What a valid compound carries (src/packet/rtcp.rs Summary, report_blocks).
struct rtcp_summary {
	__u32 sender_reports;
	__u32 receiver_reports;
	__u32 block;           // offset of the first report block; 0: none
};

// docs/forwarding.md RTCP check on a control port (packet/rtcp.rs check): every
// packet version 2 with type 192–223, the length fields adding up to the
// datagram, SR/RR report counts fitting their length. 1: valid; 0: not (or
// longer than RTCP_MAX_PARTS packets): userspace decides.
static __always_inline int rtcp_valid(struct __sk_buff *skb, __u32 len, struct rtcp_summary *out)
{
	__u32 off = 0;
	if (len < 4)
		return 0;
	for (int i = 0; i < RTCP_MAX_PARTS; i++) {
		__u8 h[4];
		if (off + 4 > len)
			return 0;
		if (bpf_skb_load_bytes(skb, RTP_OFF + (off & 0xffff), h, 4) < 0)
			return 0;
		if ((h[0] >> 6) != 2 || h[1] < 192 || h[1] > 223)
			return 0;
		__u32 size = 4 * ((((__u32)h[2] << 8) | h[3]) + 1);
		if (off + size > len)
			return 0;
		if (h[1] == 200 || h[1] == 201) {
			__u32 fixed = h[1] == 200 ? 24 : 4;
			__u32 count = h[0] & 0x1f;
			if (size - 4 < fixed + 24 * count)
				return 0;
			if (h[1] == 200)
				out->sender_reports++;
			else
				out->receiver_reports++;
			if (!out->block && count)
				out->block = off + 4 + fixed;
		}
		off += size;
		if (off == len)
			return 1;
	}
	return 0;
}

// The longest payload fingerprinted; a longer one is always copied. An SPS,
// a PPS or a STAP-A of both is a few dozen bytes.
#define LEARN_PRINT_MAX 64

// A fingerprint (never 0) of `n` bytes of payload at `payload`; 0 when they
// cannot be fingerprinted (longer than LEARN_PRINT_MAX, or not read).
static __always_inline __u32 fingerprint(struct __sk_buff *skb, __u32 payload, __u32 n)
{
	__u64 w[LEARN_PRINT_MAX / 8] = {};
	if (n == 0 || n > LEARN_PRINT_MAX || payload > 0xffff)
		return 0;
	if (bpf_skb_load_bytes(skb, RTP_OFF + payload, w, n) < 0)
		return 0;
	__u64 h = n;
#pragma unroll
	for (int i = 0; i < LEARN_PRINT_MAX / 8; i++) {
		h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	__u32 f = (__u32)(h ^ (h >> 32));
	return f ? f : 1;
}

// Copies a forwarded packet to `learn` when its payload may carry a parameter
// set: NAL type 7 (SPS), 8 (PPS), 24 (STAP-A), or 28 (FU-A) of an SPS or PPS.
// The same rule as the relay's userspace path (src/sdp/learn.rs, wants). An
// ordinary packet costs one 2-byte load. The ring (1 MiB) holds 500 copies.
//
// An encoder repeats its parameter sets before every keyframe, unchanged: a
// single SPS, PPS or STAP-A equal to the one last copied (by fingerprint) is
// not copied again, as the learner would find it unchanged (at 2048 webcasts
// the copies were ~3,000 a second, each a ring record the relay read and
// handed to a learner for nothing). A new rule install bumps `learn_epoch`
// and the stream's fingerprints are forgotten: the port's learner may be new
// (a restart, an upgrade) and must be taught again. A FU-A fragment is
// always copied.
static __always_inline void hand_to_learner(struct __sk_buff *skb, struct stream *s,
					    const struct rule *r, __u32 port, __u32 payload,
					    __u32 len)
{
	__u8 b[2];
	if (payload + 2 > len || payload > 0xffff)
		return;
	// Read in place when the payload's start is in the linear part (a header
	// without a long extension always is), else copied out.
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *p = data + RTP_OFF + (payload & 0x3ff);
	if (payload <= 0x3ff && (void *)(p + 2) <= data_end) {
		b[0] = p[0];
		b[1] = p[1];
	} else if (bpf_skb_load_bytes(skb, RTP_OFF + payload, b, 2) < 0) {
		return;
	}
	__u8 type = b[0] & 0x1f, inner = b[1] & 0x1f;
	if (type != 7 && type != 8 && type != 24 && !(type == 28 && (inner == 7 || inner == 8)))
		return;
	__u32 print = type == 28 ? 0 : fingerprint(skb, payload, len - payload);
	int slot = type == 8;
	// Compared, copied and recorded under the stream's lock, so that the
	// fingerprint kept is always that of the latest copy in the ring. Not
	// got: copied, not recorded.
	int locked = print && stream_lock(s);
	if (locked) {
		if (s->learn_epoch != r->learn_epoch) {
			s->learned[0] = 0;
			s->learned[1] = 0;
			s->learn_epoch = r->learn_epoch;
		}
		if (s->learned[slot & 1] == print) {
			stream_unlock(s);
			return;
		}
	}
	struct learn_copy *c = bpf_ringbuf_reserve(&learn, sizeof(*c), 0);
	if (!c)
		goto out; // the relay is behind: the next keyframe's sets come again
	__u32 n = len < LEARN_MAX ? len : LEARN_MAX;
	c->port = port;
	c->len = n;
	if (n == 0 || n > LEARN_MAX || bpf_skb_load_bytes(skb, RTP_OFF, c->data, n) < 0) {
		bpf_ringbuf_discard(c, 0);
		goto out;
	}
	// No wake-up: the relay reads the ring on a timer. A wake-up per copy
	// would cost the sender's CPU an interrupt and the relay a context switch.
	bpf_ringbuf_submit(c, BPF_RB_NO_WAKEUP);
	if (locked)
		s->learned[slot & 1] = print;
out:
	if (locked)
		stream_unlock(s);
}

// Would the relay's socket take a packet to `daddr`? Bound to one address,
// only packets to it; bound to 0.0.0.0, packets to any local address — a
// packet routed through the host to another one is not the relay's (the
// stack forwards or drops it). 127.0.0.0/8 is local on lo only: elsewhere
// the stack drops it as a martian. Unknown (an incomplete list): userspace.
static __always_inline int addressed_to_relay(const struct rule *r, const struct __sk_buff *skb,
					      __u32 daddr)
{
	if (r->bind_addr)
		return r->bind_addr == daddr;
	if ((daddr & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000))
		return skb->ifindex == r->loopback_ifindex;
	__u32 key = 0;
	const struct locals *l = bpf_map_lookup_elem(&locals, &key);
	if (!l)
		return 0;
	__u32 n = l->count;
	for (int i = 0; i < MAX_LOCALS; i++) {
		if (i >= n)
			break;
		if (l->addr[i] == daddr)
			return 1;
	}
	return 0;
}

// The ones'-complement difference, as bpf_csum_diff would give it (without
// a helper call), of replacing the words a0, a1 by b0, b1.
static __always_inline __u32 csum_diff(__u32 a0, __u32 a1, __u32 b0, __u32 b1)
{
	__u64 sum = (__u64)(__u32)~a0 + (__u32)~a1 + b0 + b1;
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)sum;
}

// `sum` folded to 16 bits, ones'-complement (end-around carry).
static __always_inline __u16 fold16(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// A complete checksum `check` with `diff` (csum_diffs of the words it
// covers) applied, as the kernel's csum replacement writes it. The IPv4
// header checksum is always complete, never left to hardware, so it is
// written this way directly, without a helper call.
static __always_inline __u16 csum_update(__u16 check, __u64 diff)
{
	return (__u16)~fold16(diff + (__u16)~check);
}

// The kernel's socket buffer, for the one field `__sk_buff` does not show:
// how far its UDP checksum is done. Its place is the running kernel's,
// relocated at load (CO-RE).
struct sk_buff___kern {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

#define CHECKSUM_COMPLETE 2
#define CHECKSUM_PARTIAL 3

// bpf_cast_to_kern_ctx (a kfunc, Linux 6.2): the packet's `sk_buff`. aya
// does not link kfunc calls, so the call is this one instruction (BPF_CALL,
// src_reg BPF_PSEUDO_KFUNC_CALL) with a placeholder for the function's BTF
// id, which the loader writes in (src/dataplane/ebpf/kfunc.rs). The
// verifier turns it into a register move: it costs nothing.
static __always_inline struct sk_buff___kern *kern_skb(struct __sk_buff *skb)
{
	struct sk_buff___kern *k;
	asm volatile("r1 = %[skb]\n\t"
		     ".quad 0x7e5ab1ed00002085\n\t"
		     "%[k] = r0"
		     : [k] "=r"(k)
		     : [skb] "r"(skb)
		     : "r0", "r1", "r2", "r3", "r4", "r5");
	return k;
}

// The UDP checksum `check` with the address difference `addr` (the
// pseudo-header's) and the port difference `ports` applied, as the two
// bpf_l4_csum_replace calls (BPF_F_MARK_MANGLED_0) would write it: a zero
// (none sent) stays zero, a result of zero is written 0xffff. A packet sent
// on this host (CHECKSUM_PARTIAL) holds only the pseudo-header's sum,
// uncomplemented, which the ports leave alone.
static __always_inline __u16 udp_csum_update(__u16 check, __u32 addr, __u32 ports, int partial)
{
	if (!check)
		return 0;
	__u16 out = partial ? fold16((__u64)addr + check) : csum_update(check, (__u64)addr + ports);
	return out ? out : 0xffff;
}

// Rewrites the addresses and ports and sends the packet on: up the local
// stack, or out of `ifindex` toward another host. Written directly (the
// verifier unclones the packet first); the checksums follow from two
// differences, addresses (IP header and UDP pseudo-header) and ports (UDP).
// The UDP checksum is written directly too, by how far the kernel has it
// (ip_summed), except for a packet whose whole sum the kernel keeps
// (CHECKSUM_COMPLETE, from a NIC that sums what it receives): the helper
// updates that sum as well. Two helper calls a packet were 1.4 % of the
// machine at full load (BENCHMARKS.md, stop 29).
static __always_inline int forward(struct __sk_buff *skb, __u32 old_src, __u32 old_dst,
				   __u16 old_sport, __u16 old_dport, __u32 src, __u32 dst,
				   __u16 sport, __u16 dport, __u32 ifindex, __u32 local,
				   __u32 loopback)
{
	__u32 addr_diff = csum_diff(old_src, old_dst, src, dst);
	// The two ports as the one 32-bit word they are in memory.
	__u32 port_diff = csum_diff(old_sport | (__u32)old_dport << 16, 0,
				    sport | (__u32)dport << 16, 0);
	int redirect_lo = local && skb->ifindex != loopback;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + RTP_OFF > data_end)
		return TC_ACT_UNSPEC;
	struct iphdr *ip = data + ETH_LEN;
	struct udphdr *udp = data + ETH_LEN + IP_LEN;
	ip->saddr = src;
	ip->daddr = dst;
	ip->check = csum_update(ip->check, addr_diff);
	udp->source = sport;
	udp->dest = dport;
	if (redirect_lo)
		// A local destination reached from another interface enters through
		// loopback, as the relay's own send would: lo's (zero) addresses.
		__builtin_memset(data, 0, 12);
	const struct sk_buff___kern *kern = kern_skb(skb);
	__u8 summed = BPF_CORE_READ_BITFIELD(kern, ip_summed);
	if (summed == CHECKSUM_COMPLETE) {
		// The packet's sum (skb->csum) follows the pseudo-header's change,
		// which only the helper may write.
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, 0, addr_diff,
				    BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, 0, port_diff, BPF_F_MARK_MANGLED_0);
	} else {
		udp->check = udp_csum_update(udp->check, addr_diff, port_diff,
					     summed == CHECKSUM_PARTIAL);
	}
	if (local)
		return redirect_lo ? bpf_redirect(loopback, BPF_F_INGRESS) : TC_ACT_OK;
	return bpf_redirect_neigh(ifindex, 0, 0, 0);
}

SEC("classifier")
int rtp_relay_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_LEN;
	struct udphdr *udp = data + ETH_LEN + IP_LEN;

	if (data + RTP_OFF > data_end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	if (ip->frag_off & bpf_htons(0x3fff))
		return TC_ACT_UNSPEC;

	__u32 port = bpf_ntohs(udp->dest);
	struct rule *r = bpf_map_lookup_elem(&rules, &port);
	struct stream *s = bpf_map_lookup_elem(&streams, &port);
	if (!r || !s)
		return TC_ACT_UNSPEC;
	// The port's rule and stream are cache misses at full load: the traffic
	// between two packets of a port evicts them (12,288 of each at 2048
	// webcasts). Touching the stream's two per-packet lines before the rule
	// is judged has the CPU fetch all three at once; else each fetch waited
	// for the one before, and they were most of the program's time (perf,
	// BENCHMARKS.md). A packet to a port not the relay's pays two needless
	// lines.
	(void)*(volatile __u32 *)&s->generation;
	(void)*(volatile __u64 *)&s->bytes;
	if (!r->active || r->plane > PLANE_RTCP)
		return TC_ACT_UNSPEC;
	if (!addressed_to_relay(r, skb, ip->daddr))
		return TC_ACT_UNSPEC;
	// One clock for the window and the arrival times (a clock read is a
	// noticeable share of the program's cost).
	__u64 now = bpf_ktime_get_boot_ns();
	if (now >= r->window_end_ns)
		return TC_ACT_SHOT; // the window has closed, whether or not userspace runs

	__u32 saddr = ip->saddr, daddr = ip->daddr;
	__u16 sport = udp->source, dport = udp->dest;
	// The fence: an array lookup (inlined, no helper call) and the same `now`.
	// Dropped, not left to the stack: a live relay's socket would take the
	// packet and its userspace could forward it — the kernel's fence must hold
	// by itself — and a dead relay's port would answer each one with an ICMP
	// port unreachable. Counted without the lock, as send_errors.
	__u32 zero = 0;
	const __u64 *deadline = bpf_map_lookup_elem(&fence, &zero);
	if (deadline && *deadline && now >= *deadline) {
		__sync_fetch_and_add(&s->fenced, 1);
		return TC_ACT_SHOT;
	}

	// May the kernel forward it? A valid RTP packet (media port) or RTCP
	// compound (control port) within max_packet_size (else userspace drops it
	// by reason), by a route the stack takes (below). Judged before the
	// sender, as a refused sender's packet is dropped here whatever it is.
	__u32 udp_len = bpf_ntohs(udp->len);
	__u32 len = udp_len - UDP_LEN;
	int rtcp = r->plane == PLANE_RTCP;
	__u8 h[16] = {};
	struct rtcp_summary reports = {};
	__u32 payload = 0;
	int ok = udp_len >= UDP_LEN + 4 && len <= r->max_packet_size;
	if (!rtcp) {
		ok = ok && len >= 12;
		// Read in place, or copied out when it is not in the linear part.
		if (ok && data + RTP_OFF + 12 <= data_end)
			__builtin_memcpy(h, data + RTP_OFF, 12);
		else if (ok && bpf_skb_load_bytes(skb, RTP_OFF, h, 12) < 0)
			ok = 0;
		payload = ok ? rtp_valid(skb, h, len) : 0;
		ok = payload != 0;
	} else {
		ok = ok && rtcp_valid(skb, len, &reports);
		// The first report block (ssrc, fraction and cumulative lost, highest
		// sequence, jitter): read now, so that the lock is held only for the
		// stores below.
		if (ok && reports.block && bpf_skb_load_bytes(skb, RTP_OFF + (reports.block & 0xffff), h, 16) < 0)
			ok = 0;
	}
	// Handed to lo, a packet from a local address (to 127.0.0.0/8, too) has
	// no route of its own as the relay's send has: the stack takes it only
	// with lo's accept_local (and route_localnet). Else userspace forwards it.
	ok = ok && (r->egress_ifindex || r->local_ok || skb->ifindex == r->loopback_ifindex);

	int from_dest = saddr == r->dest_addr && sport == bpf_htons(r->dest_port);
	__u32 to_addr = 0, from_addr = 0, ifindex = 0, local = 0;
	__u16 to_port = 0;

	if (!stream_lock(s))
		return TC_ACT_UNSPEC;
	if (s->generation != r->generation) {
		// A fresh bind: nothing of the port's previous group carries over.
		__builtin_memset((char *)s + sizeof(s->lock), 0, sizeof(*s) - sizeof(s->lock));
		s->generation = r->generation;
		s->latch_epoch = r->latch_epoch;
		s->bad_seq = NO_BAD_SEQ;
	}
	// When to forget the appliance is decided in Rust (Admission::forgets_latch
	// in src/dataplane/rule.rs) and arrives here as a bumped latch epoch.
	if (s->latch_epoch != r->latch_epoch) {
		s->latched_addr = 0;
		s->latched_port = 0;
		s->latch_epoch = r->latch_epoch;
	}
	if (from_dest) {
		if (!ok || !s->latched_addr) {
			stream_unlock(s);
			return TC_ACT_UNSPEC; // counted in userspace (no_return_address, …)
		}
		to_addr = s->latched_addr;
		to_port = s->latched_port;
		from_addr = s->latched_local;
		ifindex = s->latched_ifindex;
		s->to_appliance_packets++;
		s->to_appliance_bytes += len;
		if (rtcp && reports.block) {
			// RtcpStream::on_destination_report: its first block.
			s->wowza_fraction = h[4];
			s->wowza_lost = (__u32)((__s32)(((__u32)h[5] << 24) | ((__u32)h[6] << 16) |
							((__u32)h[7] << 8)) >> 8);
			s->wowza_jitter = ((__u32)h[12] << 24) | ((__u32)h[13] << 16) |
					  ((__u32)h[14] << 8) | h[15];
			s->has_wowza_report = 1;
		}
	} else {
		// Mirrors Forwarder::accepts (src/dataplane/forwarder.rs); tests/fastpath.rs runs
		// each policy through this path and the userspace one.
		int accept;
		if (r->policy == POLICY_STRICT)
			accept = saddr == r->source_addr;
		else if (r->policy == POLICY_LATCH)
			accept = !s->latched_addr ||
				 (s->latched_addr == saddr && s->latched_port == sport);
		else
			accept = 1;
		if (!accept) {
			// Counted as userspace would; dropped here, so that a flood
			// never fills the socket's buffer.
			s->unknown_source++;
			stream_unlock(s);
			return TC_ACT_SHOT;
		}
		if (!ok) {
			stream_unlock(s);
			return TC_ACT_UNSPEC; // malformed, oversize: counted in userspace
		}
		// Latch keeps its first sender; strict and any follow the latest one.
		s->latched_addr = saddr;
		s->latched_port = sport;
		s->latched_local = daddr;
		s->latched_ifindex = skb->ifindex;
		if (rtcp) {
			s->sender_reports += reports.sender_reports;
			s->receiver_reports += reports.receiver_reports;
		} else {
			on_rtp(s, r, ((__u16)h[2] << 8) | h[3],
			       ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7],
			       ((__u32)h[8] << 24) | ((__u32)h[9] << 16) | ((__u32)h[10] << 8) | h[11],
			       h[1] & 0x7f, len, now);
		}
		s->last_ns = now;
		if (rtcp) {
			// An RTP packet's are `packets` and `bytes`: the per-packet
			// fields of a media stream stay within its first two cache lines.
			s->to_wowza_packets++;
			s->to_wowza_bytes += len;
		}
		to_addr = r->dest_addr;
		to_port = bpf_htons(r->dest_port);
		from_addr = r->src_addr;
		ifindex = r->egress_ifindex;
		local = ifindex == 0;
	}
	stream_unlock(s);

	if (from_dest) {
		// Back to the appliance: from the address it sent to, out of the
		// interface its packets came in on.
		local = ifindex == r->loopback_ifindex;
	} else if (r->learn && !rtcp) {
		hand_to_learner(skb, s, r, port, payload, len);
	}
	int verdict = forward(skb, saddr, daddr, sport, dport, from_addr, to_addr, dport,
			      to_port, ifindex, local, r->loopback_ifindex);
	if (verdict == TC_ACT_SHOT)
		__sync_fetch_and_add(&s->send_errors, 1);
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
