/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Local UDP datagrams, sent once through the ring buffer. A datagram between
 * two processes on this host is seen leaving one and entering the other.
 * When the sender's copy went out whole, the receiver's copy is only needed to
 * name the receiver (its cgroup): it goes out header only
 * (HEPBPF_F_COUNTERPART), or not at all when a record of the same receiving
 * endpoint and cgroup went out less than RX_REFRESH_NS ago (userspace's
 * endpoint table already names it).
 *
 * Pairing: the sender's record leaves a key both sides know (ports as the
 * receiver sees them, length, payload hash) in udp_sent; the receiver's copy
 * consumes it. A receiver that passed no address buffer (no source port), a
 * sender's copy lost or cut, a send before the agent started, or an evicted key
 * leave the receiver's copy whole, and userspace's dedup pairs it as before.
 *
 * Included by hepbpf.bpf.c after count().
 */
#ifndef LOCAL_COPIES_BPF_H
#define LOCAL_COPIES_BPF_H

#define MSG_HASHED 512 /* payload bytes hashed, as userspace's dedup hashes */
#define RX_REFRESH_NS 1000000000ULL /* a named receiver is reported again this often */

/* One datagram the sender's record went out for, as the receiver will see it. */
struct udp_msg_key {
	__u32 hash;
	__u32 len;
	__u16 sport;
	__u16 dport;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct udp_msg_key);
	__type(value, __u8);
} udp_sent SEC(".maps");

/* A receiving endpoint (address, port, network namespace) and the cgroup its
 * last record that reached userspace named. */
struct rx_endpoint {
	__u8 addr[16];
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct rx_reported {
	__u64 cgroup_id;
	__u64 ts_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rx_endpoint);
	__type(value, struct rx_reported);
} rx_reported SEC(".maps");

/* 64-bit multiply-xor over the first MSG_HASHED bytes at d (len valid), folded
 * to 32 bits, never 0. Word loads: d has slack past any len (scratch). */
static __always_inline __u32 msg_hash(const __u8 *d, __u32 len)
{
	__u64 h = 0xcbf29ce484222325ULL ^ len;
	__u32 n = len < MSG_HASHED ? len : MSG_HASHED;

	for (__u32 i = 0; i < MSG_HASHED / 8; i++) {
		__u64 w;

		if (i * 8 >= n)
			break;
		w = *(const __u64 *)(d + i * 8);
		if (n - i * 8 < 8)
			w &= (1ULL << ((n - i * 8) * 8)) - 1;
		h = (h ^ w) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	h ^= h >> 32;
	return (__u32)h ? (__u32)h : 1;
}

/* The sender's record of a whole datagram went out: its receiver's copy may be reduced. */
static __always_inline void udp_sent_remember(const struct hepbpf_record *r)
{
	struct udp_msg_key key = { .hash = r->msg_hash, .len = r->orig_len, .sport = r->local_port, .dport = r->remote_port };
	__u8 one = 1;

	if (r->flags & (HEPBPF_F_TRUNCATED | HEPBPF_F_NO_PEER))
		return;
	bpf_map_update_elem(&udp_sent, &key, &one, BPF_ANY);
}

static __always_inline void rx_endpoint_of(const struct hepbpf_record *r, struct rx_endpoint *e)
{
	__builtin_memcpy(e->addr, r->local_addr, sizeof(e->addr));
	e->netns = r->netns;
	e->port = r->local_port;
	e->_pad = 0;
}

enum rx_copy { RX_WHOLE, RX_HEADER, RX_SKIP };

/* What to send of a receiver's copy of a UDP datagram. */
static __always_inline enum rx_copy udp_rx_copy(const struct hepbpf_record *r)
{
	struct udp_msg_key key = { .hash = r->msg_hash, .len = r->orig_len, .sport = r->remote_port, .dport = r->local_port };
	const __u64 *a = (const __u64 *)r->local_addr;
	struct rx_reported *seen;
	struct rx_endpoint e;

	if ((r->flags & HEPBPF_F_NO_PEER) || bpf_map_delete_elem(&udp_sent, &key)) {
		count(HEPBPF_CNT_RX_WHOLE);
		return RX_WHOLE;
	}
	/* A wildcard-bound receiver is never in userspace's table under the
	 * address the sender used: its copy always names it. */
	if (a[0] || a[1]) {
		rx_endpoint_of(r, &e);
		seen = bpf_map_lookup_elem(&rx_reported, &e);
		if (seen && seen->cgroup_id == r->cgroup_id && r->ts_ns - seen->ts_ns < RX_REFRESH_NS) {
			count(HEPBPF_CNT_RX_SKIPPED);
			return RX_SKIP;
		}
	}
	count(HEPBPF_CNT_RX_REDUCED);
	return RX_HEADER;
}

/* A receiver's record reached the ring buffer: userspace now knows its endpoint. */
static __always_inline void udp_rx_reported(const struct hepbpf_record *r)
{
	struct rx_reported seen = { .cgroup_id = r->cgroup_id, .ts_ns = r->ts_ns };
	const __u64 *a = (const __u64 *)r->local_addr;
	struct rx_endpoint e;

	if (!a[0] && !a[1])
		return;
	rx_endpoint_of(r, &e);
	bpf_map_update_elem(&rx_reported, &e, &seen, BPF_ANY);
}

#endif
