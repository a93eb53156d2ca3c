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

#endif
