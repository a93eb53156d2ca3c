/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Local UDP datagrams, with one payload through the ring buffer. A datagram
 * between two processes on this host is seen leaving one and entering the
 * other. When the sender's record went out whole, the receiver's copy is only
 * needed to name the receiver (pid, cgroup, namespace, addresses): it goes out
 * header only, flagged HEPBPF_F_COUNTERPART.
 *
 * Pairing: the sender's record leaves a key both sides know (ports as the
 * receiver sees them, length, payload hash) in udp_sent; the receiver's copy
 * consumes it. A receiver that passed no address buffer (no source port), a
 * sender's record lost or cut, a send before the agent started, or an evicted
 * key leave the receiver's copy whole, and userspace's dedup pairs it as before.
 *
 * Local TCP connections, with one payload through the ring buffer. Both sockets
 * of a connection established while the agent runs are in tcp_tx, keyed by
 * their own view of the 4-tuple, so that the receiver finds the sender's entry
 * under its reversed tuple. A sender's entry says up to which sequence number
 * every byte it wrote since the connection was established went out whole
 * (tcp_tx_claim); such records are flagged HEPBPF_F_NO_COPY: no receiver's copy
 * of these bytes will follow, so userspace keeps nothing waiting for one. A
 * receiver's read wholly inside that range sends nothing (the first one on a
 * socket sends a header-only HEPBPF_F_COUNTERPART record, which names the
 * receiver). A read past it (it ran before the sender's write was emitted, or
 * that write was not emitted whole) moves the range's end to its own end and
 * sends only the bytes past the old end: the write that covered them finds the
 * range moved and is not flagged, so userspace's dedup pairs its copies as
 * before; the next write claims again. So a byte is either in a flagged
 * sender's record or in a receiver's record, never both; a receiver's record
 * that does not continue its previous one is flagged HEPBPF_F_STREAM_GAP.
 * A connection older than the agent, or with no local peer, sends whole copies.
 * Limits: one reader per socket (the range of a read is taken from copied_seq
 * after it), and recvmmsg on TCP is taken as one read.
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct udp_msg_key);
	__type(value, __u8);
} udp_sent SEC(".maps");

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
	__u8 one = 1;

	if (r->flags & (HEPBPF_F_TRUNCATED | HEPBPF_F_NO_PEER))
		return;
	bpf_map_update_elem(&udp_sent, &key, &one, BPF_ANY);
}

/* Was the sender's record of this received datagram emitted? Then its payload need not be sent again. */
static __always_inline bool udp_sender_emitted(const struct hepbpf_record *r)
{
	struct udp_msg_key key = { .hash = r->msg_hash, .len = r->orig_len, .sport = r->remote_port, .dport = r->local_port };

	if ((r->flags & HEPBPF_F_NO_PEER) || bpf_map_delete_elem(&udp_sent, &key)) {
		count(HEPBPF_CNT_RX_WHOLE);
		return false;
	}
	count(HEPBPF_CNT_RX_REDUCED);
	return true;
}

/* A TCP socket's own view of its connection; netns only for loopback (each namespace has its own). */
struct tcp_tuple {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u32 netns;
};

#define TX_BROKEN (1ULL << 32) /* tcp_tx.cov: the range is frozen, no later write is flagged */

struct tcp_tx {
	__u64 cov; /* low 32 bits: sequence number up to which every byte written since start went out whole */
	__u32 start; /* write_seq when established */
	__u32 peer_start; /* rcv_nxt when established: the peer's start, if the peer is local */
	__u32 rx_sent; /* as a receiver: sequence number after the last byte it sent */
	__u8 l7; /* what the flagged bytes carry */
	__u8 named; /* as a receiver: the header-only record naming it went out */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH); /* not LRU: an entry must live as long as its connection */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct tcp_tuple);
	__type(value, struct tcp_tx);
} tcp_tx SEC(".maps");

/* Socket -> its key in tcp_tx: a closing socket's ports may already be released. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcp_tuple);
} tcp_tx_keys SEC(".maps");

static __always_inline bool is_loopback(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return a[0] == 127 ? !w[1] && !w[2] && !w[3] : !w[0] && !w[1] && !w[2] && w[3] == bpf_htonl(1);
}

/* The key of r's socket (reversed: of its peer socket), from fill_addrs()'s view. */
static __always_inline void tcp_tuple_of(struct tcp_tuple *k, const struct hepbpf_record *r, bool reversed)
{
	__builtin_memcpy(reversed ? k->remote_addr : k->local_addr, r->local_addr, 16);
	__builtin_memcpy(reversed ? k->local_addr : k->remote_addr, r->remote_addr, 16);
	k->local_port = reversed ? r->remote_port : r->local_port;
	k->remote_port = reversed ? r->local_port : r->remote_port;
	k->netns = is_loopback(r->local_addr) ? r->netns : 0;
}

static __always_inline struct tcp_sock *tcp_sk_of(struct sock *sk)
{
	return bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
}

/* sk (its addresses in r) was just established: its bytes are counted from here. */
static __always_inline void tcp_tx_established(struct sock *sk, const struct hepbpf_record *r)
{
	struct tcp_sock *tp = tcp_sk_of(sk);
	struct tcp_tx fresh = { .cov = tp->write_seq, .start = tp->write_seq, .peer_start = tp->rcv_nxt,
			      .rx_sent = tp->rcv_nxt };
	struct tcp_tuple key;
	__u64 sk_key = (__u64)sk;

	tcp_tuple_of(&key, r, false);
	if (bpf_map_update_elem(&tcp_tx, &key, &fresh, BPF_ANY) == 0)
		bpf_map_update_elem(&tcp_tx_keys, &sk_key, &key, BPF_ANY);
}

/* sk closed: it reads no more, so its peer's entry goes; its own stays while a local peer may still read it. */
static __always_inline void tcp_tx_closed(struct sock *sk)
{
	__u64 sk_key = (__u64)sk;
	struct tcp_tuple *own = bpf_map_lookup_elem(&tcp_tx_keys, &sk_key);
	struct tcp_tuple key, peer;

	if (!own)
		return;
	key = *own;
	bpf_map_delete_elem(&tcp_tx_keys, &sk_key);
	__builtin_memcpy(peer.local_addr, key.remote_addr, 16);
	__builtin_memcpy(peer.remote_addr, key.local_addr, 16);
	peer.local_port = key.remote_port;
	peer.remote_port = key.local_port;
	peer.netns = key.netns;
	if (bpf_map_delete_elem(&tcp_tx, &peer))
		bpf_map_delete_elem(&tcp_tx, &key);
}

/* sk's write of len bytes (its addresses in r) goes out whole: true when every
 * byte it wrote before went out whole too. Then no receiver's copy of it follows. */
static __always_inline bool tcp_tx_claim(struct sock *sk, const struct hepbpf_record *r, __u32 len, __u8 l7)
{
	struct tcp_tuple key;
	struct tcp_tx *e;
	__u32 end;

	tcp_tuple_of(&key, r, false);
	e = bpf_map_lookup_elem(&tcp_tx, &key);
	if (!e)
		return false;
	end = tcp_sk_of(sk)->write_seq;
	if (l7)
		e->l7 = l7; /* before the range covers the bytes: a receiver reads it after seeing the range */
	return __sync_val_compare_and_swap(&e->cov, (__u64)(end - len), (__u64)end) == (__u64)(end - len);
}

#define TCP_RX_WHOLE 0 /* send the read (from *skip on) */
#define TCP_RX_SKIP 1 /* the sender's records carried every byte: send nothing */
#define TCP_RX_NAME 2 /* the same, and the receiver is not named yet: send the header only */
#define TCP_RX_CLAIM_TRIES 8

/* sk read len bytes ending at copied_seq (its addresses in r): what of them must
 * still go out. *skip: bytes at the front that flagged sender's records carried;
 * *gap: the bytes sent do not continue the ones this receiver sent before (the
 * stream's framing restarts); *l7: what the sender's bytes carry (0: unknown). */
static __always_inline int tcp_rx_reduce(struct sock *sk, const struct hepbpf_record *r, __u32 len, __u32 *skip,
					 bool *gap, __u8 *l7)
{
	struct tcp_tuple key;
	struct tcp_tx *own, *peer;
	__u64 c, old;
	__u32 end, covered;

	tcp_tuple_of(&key, r, false);
	own = bpf_map_lookup_elem(&tcp_tx, &key);
	if (!own)
		return TCP_RX_WHOLE;
	tcp_tuple_of(&key, r, true);
	peer = bpf_map_lookup_elem(&tcp_tx, &key);
	if (!peer || peer->start != own->peer_start)
		return TCP_RX_WHOLE; /* the peer is not on this host (or not this connection) */
	*l7 = peer->l7;
	end = tcp_sk_of(sk)->copied_seq;
	for (int i = 0; i < TCP_RX_CLAIM_TRIES; i++) {
		c = peer->cov;
		if ((__s32)(end - (__u32)c) <= 0)
			goto covered;
		/* Past the range: the bytes past it are this read's, no write may claim them now. */
		old = __sync_val_compare_and_swap(&peer->cov, c, (c & TX_BROKEN) | end);
		if (old == c)
			goto send;
	}
	/* Writes kept claiming meanwhile: end the range for good. */
	c = __sync_fetch_and_or(&peer->cov, TX_BROKEN);
	if ((__s32)(end - (__u32)c) <= 0)
		goto covered;
send:
	covered = c;
	if ((__s32)(covered - (end - len)) > 0)
		*skip = covered - (end - len);
	*gap = end - len + *skip != own->rx_sent;
	own->rx_sent = end;
	return TCP_RX_WHOLE;
covered:
	if (own->named || !*l7) /* nothing but keep-alives yet: nothing to name */
		return TCP_RX_SKIP;
	own->named = 1;
	return TCP_RX_NAME;
}

#endif
