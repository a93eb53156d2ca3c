/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Local UDP datagrams and TCP connections, with one payload through the ring buffer. A datagram
 * between two processes on this host is seen leaving one and entering the
 * other. When the sender's record went out whole, the receiver's copy is only
 * needed to name the receiver (pid, cgroup, namespace, addresses): it goes out
 * header only, flagged HEPBPF_F_COUNTERPART.
 *
 * Pairing: the sender's record leaves a key both sides know (ports as the
 * receiver sees them, length, payload hash) in udp_sent; the receiver's copy
 * consumes it. A receiver that passed no address buffer (no source port), a
 * sender's record lost or cut, a send before the agent started, or a key
 * overwritten by another leave the receiver's copy whole, and userspace's dedup
 * pairs it as before.
 *
 * Included by hepbpf.bpf.c after count().
 */
#ifndef LOCAL_COPIES_BPF_H
#define LOCAL_COPIES_BPF_H

#define MSG_HASHED 512 /* payload bytes hashed, as userspace's dedup hashes */

/* One datagram the sender's record went out for, as the receiver will see it. */
struct udp_msg_key {
	__u32 hash;
	__u32 len;
	__u16 sport;
	__u16 dport;
	__u32 _pad;
};

#define UDP_SENT_SLOTS 16384 /* a power of two */

/* Direct-mapped on the hash: one slot per key, a newer key overwrites an older one.
 * Array lookups are inlined loads, where a hash map's update and delete took a helper
 * call and a bucket lock per datagram on each side. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UDP_SENT_SLOTS);
	__type(key, __u32);
	__type(value, struct udp_msg_key);
} udp_sent SEC(".maps");

static __always_inline struct udp_msg_key *udp_sent_slot(const struct udp_msg_key *key)
{
	__u32 idx = (key->hash ^ key->sport ^ (__u32)key->dport << 16) & (UDP_SENT_SLOTS - 1);

	return bpf_map_lookup_elem(&udp_sent, &idx);
}

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

/* The sender's record of a whole datagram went out: its receiver's copy may go header only. */
static __always_inline void udp_sent_remember(const struct hepbpf_record *r)
{
	struct udp_msg_key key = { .hash = r->msg_hash, .len = r->orig_len, .sport = r->local_port, .dport = r->remote_port };
	struct udp_msg_key *slot;

	if (r->flags & (HEPBPF_F_TRUNCATED | HEPBPF_F_NO_PEER))
		return;
	slot = udp_sent_slot(&key);
	if (slot)
		*slot = key;
}

/* Was the sender's record of this received datagram emitted? Then its payload need not be sent again. */
static __always_inline bool udp_sender_emitted(const struct hepbpf_record *r)
{
	struct udp_msg_key key = { .hash = r->msg_hash, .len = r->orig_len, .sport = r->remote_port, .dport = r->local_port };
	struct udp_msg_key *slot = (r->flags & HEPBPF_F_NO_PEER) ? NULL : udp_sent_slot(&key);

	if (!slot || slot->hash != key.hash || slot->len != key.len || slot->sport != key.sport ||
	    slot->dport != key.dport) {
		count(HEPBPF_CNT_RX_WHOLE);
		return false;
	}
	slot->hash = 0; /* consumed: msg_hash() is never 0 */
	count(HEPBPF_CNT_RX_REDUCED);
	return true;
}

/*
 * TCP. Both ends' records of a local connection carry the same bytes; the
 * receiver's read goes header only (HEPBPF_F_SEQ | HEPBPF_F_COUNTERPART) when
 * the sender's records carried every byte of it, and userspace frames the
 * receiver's stream from the bytes it kept of those records.
 *
 * Sequence numbers place the bytes: a syscall's are [seq at its entry, + the
 * count it returned), taken only when the socket's counter moved by exactly
 * that count (no other thread's I/O on it meanwhile, no MSG_PEEK). The sender's
 * records are flagged, and kept by userspace, once the flow has a receiver
 * reading on this host; tcp_sent.cov then covers the run of flagged records
 * that went out, each extending it only once out, so userspace holds at least
 * what it covers when a receiver's record that relies on it arrives. A read
 * before the write's record went out, a write that was cut, lost or not seen
 * (sendfile), or another connection's stale entry leave the read whole.
 */

/* A TCP flow, one way, as its sender sees it; netns only for loopback (each namespace has its own). */
struct tcp_flow {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 netns;
};

/* A flow whose receiver reads on this host (its reads make the entry). */
struct tcp_sent {
	__u64 cov; /* sender's bytes [start << 32, end) out in flagged records; 0: none */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tcp_flow);
	__type(value, struct tcp_sent);
} tcp_sent SEC(".maps");

#define TCP_COV_MAX (1U << 30) /* a run this long starts again: sequence arithmetic holds under 2^31 */

static __always_inline bool is_loopback(const __u8 *a, __u8 family)
{
	const __u32 *w = (const __u32 *)a;

	return family == AF_INET ? a[0] == 127 : !w[0] && !w[1] && !w[2] && w[3] == bpf_htonl(1);
}

/* The TCP socket's counter that a syscall of this direction moves. */
static __always_inline __u32 tcp_seq(struct sock *sk, bool ingress)
{
	struct tcp_sock *tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));

	return ingress ? tp->copied_seq : tp->write_seq;
}

/* The flow of the bytes r carries (its addresses filled); a receiver's read makes it. */
static __always_inline struct tcp_sent *tcp_sent_of(const struct hepbpf_record *r, bool ingress)
{
	struct tcp_flow key = {};
	struct tcp_sent none = {};
	struct tcp_sent *e;

	__builtin_memcpy(key.src, ingress ? r->remote_addr : r->local_addr, 16);
	__builtin_memcpy(key.dst, ingress ? r->local_addr : r->remote_addr, 16);
	key.sport = ingress ? r->remote_port : r->local_port;
	key.dport = ingress ? r->local_port : r->remote_port;
	key.netns = is_loopback(r->local_addr, r->family) ? r->netns : 0;
	e = bpf_map_lookup_elem(&tcp_sent, &key);
	if (e || !ingress)
		return e;
	bpf_map_update_elem(&tcp_sent, &key, &none, BPF_NOEXIST);
	return bpf_map_lookup_elem(&tcp_sent, &key);
}

/* Did flagged sender's records that went out carry every byte of [seq, seq + len)? */
static __always_inline bool tcp_sent_covers(const struct tcp_sent *e, __u32 seq, __u32 len)
{
	__u64 cov = e->cov;
	__u32 start = cov >> 32, end = cov;

	return cov && (__s32)(seq - start) >= 0 && (__s32)(end - (seq + len)) >= 0;
}

/* A flagged sender's record of [seq, seq + len) went out: it extends the run, or starts one. */
static __always_inline void tcp_sent_extend(struct tcp_sent *e, __u32 seq, __u32 len, bool stream_start)
{
	__u64 cov = e->cov;
	__u32 start = cov >> 32, end = cov;

	if (!cov || stream_start || end != seq || seq + len - start >= TCP_COV_MAX)
		start = seq;
	e->cov = (__u64)start << 32 | (__u32)(seq + len);
}

#endif
