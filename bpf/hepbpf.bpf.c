// SPDX-License-Identifier: GPL-2.0
/*
 * Socket capture. Syscall tracepoints see every send and receive on the host;
 * what moves over an AF_INET/AF_INET6 TCP, UDP or SCTP socket and looks like
 * SIP or Diameter goes to userspace through the "events" ring buffer, one
 * struct hepbpf_record plus payload per message.
 *
 * Enter hooks only decide "is this fd an inet socket we may care about" and
 * remember the arguments. The data is read once the byte count is known:
 * for the sends and read/readv when the socket layer reports it
 * (tp_btf/sock_{send,recv}_length, which fire only for sockets, so the
 * host's file I/O pays no exit hook), for recvfrom/recvmsg at their exit,
 * after the kernel has written the peer address, and for sendmmsg/recvmmsg
 * at theirs (the socket layer reports each datagram). A sendto or recvfrom
 * with a peer address (a datagram's) skips the enter work: the socket layer
 * takes it up from the syscall's registers, and completes a sendto there.
 *
 * Hook families in headers: TLS libraries (tls.bpf.h), local copies
 * (local_copies.bpf.h), WebSocket (websocket.bpf.h), connection events
 * (conn_events.bpf.h).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "hepbpf.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 0170000
#define S_IFSOCK 0140000

#define MAX_IOV 64 /* iovecs read per message; data past them is reported as truncated */
#define MAX_MMSG 1024 /* UIO_MAXIOV: the kernel caps vlen there too */
/* One copy moves at most this much, so the verifier can prove that a copy at any
 * offset below HEPBPF_MAX_DATA stays inside the scratch buffer's slack. */
#define GATHER_CHUNK 4096
#define GATHER_STEPS (2 * MAX_IOV + HEPBPF_MAX_DATA / GATHER_CHUNK)
#define SIP_PREFIX 10 /* bytes looks_like_sip() reads: "SUBSCRIBE " */
#define TCP_MAX_MISSES 4 /* payloads neither SIP nor Diameter before a TCP/SCTP connection is not ours */
/* Leading CR/LF bytes skipped before the SIP start-line test: RFC 5626 keep-alives
 * (CRLFCRLF ping, CRLF pong) may be written in front of a message (RFC 3261 7.5). */
#define KEEPALIVE_SKIP 8
#define L7_NOT_OURS 0xff
#define PROT_EXEC 4
/* x86-64 syscall numbers (pt_regs orig_ax) of the calls the socket layer takes up when addressed */
#define NR_SENDTO 44
#define NR_RECVFROM 45
/* A memory-BIO application writes the ciphertext right after SSL_write: a
 * socket write later than this is not taken as naming the connection. */
#define TLS_PENDING_NS 10000000

/* Only .rodata variable: userspace patches it before load. */
const volatile struct hepbpf_config cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* A wakeup per record costs the traced application an interrupt on its CPU and an IPI to the
 * reader's (VM exits on a VM), and the reader a context switch per record. The reader polls every
 * few milliseconds instead, and is woken early only for a backlog worth a batch. */
static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= cfg.wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HEPBPF_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Ports that mark a socket as SIP when cfg.filter_ports is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} sip_ports SEC(".maps");

/* A record is built here, then copied to the ring buffer. One slot per CPU:
 * per-CPU array values are capped at 32 KiB; userspace sets max_entries to the
 * number of possible CPUs. */
struct scratch_buf {
	struct hepbpf_record rec;
	__u8 data[HEPBPF_MAX_DATA + GATHER_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct scratch_buf);
} scratch SEC(".maps");

/* Arguments of the socket syscall a thread is in, from its enter hook to the
 * point where the byte count is known. Task storage: one slot per thread,
 * freed with the thread, so a syscall that fails before the socket layer
 * leaks nothing and no fixed-size table can fill up (a failed allocation is
 * counted as HEPBPF_CNT_INFLIGHT_FULL). */
struct inflight {
	struct sock *sk;
	const void *arg; /* buffer, iovec array, msghdr or mmsghdr array */
	__u64 len; /* buffer size, iovcnt or vlen */
	const void *name; /* sendto dest_addr / recvfrom src_addr */
	__u64 namelen; /* sendto: addrlen; recvfrom: user pointer to addrlen */
	__u32 fd;
	__s32 nr; /* syscall number: ties socket-layer events to this syscall */
	__u32 seq; /* TCP: the counter this syscall moves, at its entry (bpf/local_copies.bpf.h)... */
	__u8 has_seq; /* ...if taken there: not for a call first seen at the socket layer */
	__u8 source; /* HEPBPF_SRC_*, 0: slot unused */
	__u16 proto;
	__u8 prefix_sip; /* UDP: the datagram's first bytes were read and look like SIP (enter or sock_recv_length) */
	__u8 _pad[7]; /* none implicit: a slot is copied whole from the stack, where the verifier rejects unwritten bytes */
	struct sock *last_read_sk; /* TCP socket this thread last read outside a TLS call (see tls_enter) */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* What a TCP (or SCTP) connection carries, keyed by struct sock address. Reset
 * on every TCP state change to ESTABLISHED or CLOSE (see tcp_state), LRU bounds
 * it (and is all that frees SCTP entries). */
struct sock_l7 {
	__u8 l7; /* HEPBPF_L7_* or L7_NOT_OURS */
	__u8 misses; /* non-SIP payloads seen while still unknown */
	__u8 started; /* bit 1 << HEPBPF_DIR_*: a record of this direction went out (HEPBPF_F_STREAM_START) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct sock_l7);
} sock_l7 SEC(".maps");

/* A TLS connection's addresses as fill_addrs() put them in a record of its socket: they do not
 * change while it is established (tcp_state() forgets the connection when its socket becomes
 * established or closed), so its records copy them instead of reading the socket and its namespace
 * each time. family 0: not taken yet. */
struct conn_addrs {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u32 netns;
	__u16 local_port, remote_port;
	__u8 family;
	__u8 flags;
	__u8 _pad[2];
};

/* One message of a syscall or TLS call, as emit() needs it. */
struct sock_msg {
	struct sock *sk; /* NULL: a TLS connection whose socket is not known yet */
	__u64 tls_id;
	const struct iovec *iov; /* NULL: the data is the one buffer at buf */
	const void *buf;
	__u64 len; /* iovcnt, or the size of buf */
	const void *name; /* peer sockaddr the syscall carried, or NULL */
	__u32 namelen;
	__u32 orig_len; /* bytes the syscall moved for this message */
	__u32 fd;
	__u16 proto;
	__u8 source;
	__u8 has_seq; /* TCP: seq is the sequence number of the first byte (bpf/local_copies.bpf.h) */
	__u8 prefix_sip; /* a datagram whose first bytes were judged SIP already: not read twice */
	__u32 seq;
};

/* Progress of copying a message's bytes into scratch, one bpf_loop step at a time. */
struct gather {
	const struct iovec *iov;
	__u64 iovcnt;
	__u32 idx; /* next iovec to load */
	__u32 off; /* bytes copied so far */
	__u32 limit; /* copy up to here */
	__u32 fault;
	const __u8 *base; /* where the current segment continues */
	__u64 left; /* bytes left in the current segment */
};

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += 1;
}

static __always_inline struct scratch_buf *scratch_slot(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&scratch, &cpu);
}

/* Reinterprets a kernel address as a typed, read-only pointer: field loads
 * through it are plain loads the verifier guards, not helper calls. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

#include "local_copies.bpf.h"

/* The protocol of sk when it is an AF_INET/AF_INET6 TCP, UDP or SCTP socket, else 0. */
static __always_inline __u16 inet_proto(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family, proto = sk->sk_protocol;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP ? proto : 0;
}

/* The struct sock behind fd when it is a socket, else NULL. Runs for every read() and write()
 * on the host: everything up to the inode mode is a direct load, with one helper call for the fd slot. */
static __always_inline struct sock *sock_of_fd(__u64 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *slot = NULL, *file;
	struct socket *sock;

	if (fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&slot, sizeof(slot), &fdt->fd[fd]);
	file = bpf_rdonly_cast(slot, bpf_core_type_id_kernel(struct file));
	if (!file || (file->f_inode->i_mode & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = bpf_rdonly_cast(file->private_data, bpf_core_type_id_kernel(struct socket));
	return sock->sk;
}

/* Little-endian load of up to 8 bytes of a string, for prefix compares in code
 * (a table of strings would land in .rodata, which holds only cfg). */
#define STR8(a, b, c, d, e, f, g, h)                                                                      \
	((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 |        \
	 (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)
#define MASK(len) (~0ULL >> (64 - 8 * (len)))
#define STARTS(w, len, ...) (((w) & MASK(len)) == STR8(__VA_ARGS__))

/* A SIP request line or status line starts here (RFC 3261 methods and the
 * common extensions). n: how many bytes at d are valid. */
static __always_inline bool looks_like_sip(const __u8 *d, __u32 n)
{
	__u64 w = *(const __u64 *)d;
	__u16 w8 = *(const __u16 *)(d + 8);

	/* Zero the invalid bytes: every prefix ends in a non-zero byte, so a
	 * message shorter than a prefix cannot match it. */
	if (n < 8)
		w &= (1ULL << (n * 8)) - 1;
	if (n < 9)
		w8 = 0;
	else if (n < 10)
		w8 &= 0xff;

	return STARTS(w, 8, 'S', 'I', 'P', '/', '2', '.', '0', ' ') ||
	       STARTS(w, 7, 'I', 'N', 'V', 'I', 'T', 'E', ' ', 0) || STARTS(w, 4, 'A', 'C', 'K', ' ', 0, 0, 0, 0) ||
	       STARTS(w, 4, 'B', 'Y', 'E', ' ', 0, 0, 0, 0) ||
	       STARTS(w, 7, 'C', 'A', 'N', 'C', 'E', 'L', ' ', 0) ||
	       STARTS(w, 8, 'O', 'P', 'T', 'I', 'O', 'N', 'S', ' ') ||
	       (STARTS(w, 8, 'R', 'E', 'G', 'I', 'S', 'T', 'E', 'R') && (w8 & 0xff) == ' ') ||
	       STARTS(w, 6, 'P', 'R', 'A', 'C', 'K', ' ', 0, 0) ||
	       (STARTS(w, 8, 'S', 'U', 'B', 'S', 'C', 'R', 'I', 'B') && w8 == ('E' | ' ' << 8)) ||
	       STARTS(w, 7, 'N', 'O', 'T', 'I', 'F', 'Y', ' ', 0) ||
	       STARTS(w, 8, 'P', 'U', 'B', 'L', 'I', 'S', 'H', ' ') ||
	       STARTS(w, 5, 'I', 'N', 'F', 'O', ' ', 0, 0, 0) || STARTS(w, 6, 'R', 'E', 'F', 'E', 'R', ' ', 0, 0) ||
	       STARTS(w, 8, 'M', 'E', 'S', 'S', 'A', 'G', 'E', ' ') ||
	       STARTS(w, 7, 'U', 'P', 'D', 'A', 'T', 'E', ' ', 0);
}

/* A Diameter header (RFC 6733 3) starts here: version 1, a length that is a
 * multiple of 4 from the header size up to 1 MiB, the reserved flag bits zero,
 * and a base/RFC 4006 command or one in 3GPP's (300-399) or the vendor range.
 * src/stream/diameter-framer.ts headerAt() is the same test. A receiver that
 * reads the 4-byte version+length first and then the rest (freeDiameter does)
 * shows only those: a syscall that moved 4 to 7 bytes is judged on them. */
static __always_inline bool looks_like_diameter(const __u8 *d, __u32 n, bool whole)
{
	__u32 len, code;

	if (n < 4 || (n < 8 && !whole) || d[0] != 1)
		return false;
	len = (__u32)d[1] << 16 | (__u32)d[2] << 8 | d[3];
	if (len < 20 || len > (1 << 20) || (len & 3))
		return false;
	if (n < 8)
		return n < 5 || !(d[4] & 0x0f);
	if (d[4] & 0x0f)
		return false;
	code = (__u32)d[5] << 16 | (__u32)d[6] << 8 | d[7];
	return code == 257 || code == 258 || code == 265 || code == 271 || code == 272 || code == 274 ||
	       code == 275 || code == 280 || code == 282 || (code >= 300 && code <= 399) ||
	       (code >= 8388608 && code < 16777214);
}

/* Whether the user buffer at buf, holding n bytes, starts like SIP. */
static __always_inline bool buffer_looks_like_sip(const void *buf, __u64 n)
{
	__u8 head[16] = {};

	if (n > SIP_PREFIX)
		n = SIP_PREFIX;
	if (bpf_probe_read_user(head, n, buf))
		return false;
	return looks_like_sip(head, n);
}

/* Whether a datagram received into a buffer of len bytes, ret of them filled, starts like SIP. */
static __always_inline bool received_looks_like_sip(const void *buf, int ret, __u64 len)
{
	return ret > 0 && buffer_looks_like_sip(buf, (__u64)ret < len ? ret : len);
}

/* Starts gathering m: from its iovec array or its one buffer. */
static __always_inline void gather_init(struct gather *g, const struct sock_msg *m)
{
	if (m->iov) {
		g->iov = m->iov;
		g->iovcnt = m->len;
	} else {
		g->base = m->buf;
		g->left = m->len;
	}
}

/* Copies the next piece of the message into scratch: loads the next iovec when
 * the current segment is used up, then at most GATHER_CHUNK bytes. */
static int gather_step(__u32 i, void *arg)
{
	struct gather *g = arg;
	struct scratch_buf *s;
	__u32 off = g->off;
	__u64 n;

	if (off >= g->limit || off >= HEPBPF_MAX_DATA)
		return 1;
	if (!g->left) {
		struct iovec v;

		if (g->idx >= g->iovcnt || g->idx >= MAX_IOV)
			return 1;
		if (bpf_probe_read_user(&v, sizeof(v), &g->iov[g->idx])) {
			g->fault = 1;
			return 1;
		}
		g->idx++;
		g->base = v.iov_base;
		g->left = v.iov_len;
		return 0;
	}
	s = scratch_slot();
	if (!s)
		return 1;
	n = g->limit - off;
	if (n > g->left)
		n = g->left;
	if (n > GATHER_CHUNK)
		n = GATHER_CHUNK;
	if (bpf_probe_read_user(s->data + off, n, g->base)) {
		g->fault = 1;
		return 1;
	}
	g->off = off + n;
	g->base += n;
	g->left -= n;
	return 0;
}

static __always_inline bool is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Addresses and ports: the socket's own, except that a datagram's peer is the
 * address the syscall carried. IPv4-mapped IPv6 is reported as IPv4. */
static __always_inline void fill_addrs(struct hepbpf_record *r, const struct sock_msg *m)
{
	__u32 *local = (__u32 *)r->local_addr, *remote = (__u32 *)r->remote_addr;
	struct sock *sk = bpf_rdonly_cast(m->sk, bpf_core_type_id_kernel(struct sock));
	struct sock_common *skc = &sk->__sk_common;
	__u16 family;

	r->msg_hash = 0;
	if (!m->sk) {
		__builtin_memset(r->local_addr, 0, sizeof(r->local_addr));
		__builtin_memset(r->remote_addr, 0, sizeof(r->remote_addr));
		r->local_port = r->remote_port = 0;
		r->family = AF_INET;
		r->flags = HEPBPF_F_NO_PEER | HEPBPF_F_NO_CONN;
		r->netns = 0;
		return;
	}
	family = skc->skc_family;
	r->netns = skc->skc_net.net->ns.inum;
	r->flags = 0;
	r->local_port = skc->skc_num;
	r->remote_port = bpf_ntohs(skc->skc_dport);
	if (family == AF_INET) {
		local[0] = skc->skc_rcv_saddr;
		remote[0] = skc->skc_daddr;
		local[1] = local[2] = local[3] = 0;
		remote[1] = remote[2] = remote[3] = 0;
	} else {
		__builtin_memcpy(local, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(remote, &skc->skc_v6_daddr, 16);
	}

	if (m->proto != IPPROTO_TCP && m->name && m->namelen >= sizeof(struct sockaddr_in)) {
		struct sockaddr_in6 sa = {};
		__u32 n = m->namelen;

		if (n > sizeof(sa))
			n = sizeof(sa);
		if (bpf_probe_read_user(&sa, n, m->name) == 0) {
			if (sa.sin6_family == AF_INET6 && n >= 24 /* SIN6_LEN_RFC2133: up to sin6_addr */) {
				__builtin_memcpy(remote, &sa.sin6_addr, 16);
				r->remote_port = bpf_ntohs(sa.sin6_port);
			} else if (sa.sin6_family == AF_INET) {
				struct sockaddr_in *sin = (void *)&sa;

				if (family == AF_INET) {
					remote[0] = sin->sin_addr.s_addr;
				} else { /* IPv4 peer of an IPv6 socket: as the kernel sees it */
					remote[0] = 0;
					remote[1] = 0;
					remote[2] = bpf_htonl(0xffff);
					remote[3] = sin->sin_addr.s_addr;
				}
				r->remote_port = bpf_ntohs(sin->sin_port);
			}
		}
	}
	if (!r->remote_port)
		r->flags |= HEPBPF_F_NO_PEER;

	if (family == AF_INET6 &&
	    (is_v4mapped(remote) || ((r->flags & HEPBPF_F_NO_PEER) && is_v4mapped(local)))) {
		family = AF_INET;
		remote[0] = is_v4mapped(remote) ? remote[3] : 0;
		local[0] = is_v4mapped(local) ? local[3] : 0;
		remote[1] = remote[2] = remote[3] = 0;
		local[1] = local[2] = local[3] = 0;
	}
	r->family = family;
}

/* Copies what fill_addrs() sets from a socket between a record and a struct conn_addrs, either way
 * (their fields have the same names). */
#define COPY_ADDRS(to, from)                                                                               \
	do {                                                                                               \
		__builtin_memcpy((to)->local_addr, (from)->local_addr, sizeof((to)->local_addr));          \
		__builtin_memcpy((to)->remote_addr, (from)->remote_addr, sizeof((to)->remote_addr));       \
		(to)->netns = (from)->netns;                                                               \
		(to)->local_port = (from)->local_port;                                                     \
		(to)->remote_port = (from)->remote_port;                                                   \
		(to)->family = (from)->family;                                                             \
		(to)->flags = (from)->flags;                                                               \
	} while (0)

static __always_inline bool is_ingress(__u8 source)
{
	return (source >= HEPBPF_SRC_READ && source <= HEPBPF_SRC_RECVMMSG) || source == HEPBPF_SRC_SSL_READ ||
	       source == HEPBPF_SRC_GNUTLS_RECV;
}

/* The fields of a record that name the current task: loads from its task_struct, as
 * bpf_get_current_{pid_tgid,cgroup_id,comm}() read them, without a helper call each. */
static __always_inline void stamp(struct hepbpf_record *r)
{
	struct task_struct *task = bpf_get_current_task_btf();

	r->ts_ns = bpf_ktime_get_ns();
	r->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	r->pid = task->tgid;
	r->tid = task->pid;
	r->_pad = 0;
	__builtin_memcpy(r->comm, task->comm, sizeof(r->comm));
}

#include "websocket.bpf.h"
/* bpf/conn_events.bpf.h, included once what it uses is defined */
static __always_inline bool carries_ours(__u8 l7);
static __always_inline void conn_carries_ours(struct sock *sk, __u64 tls_id);

#define CLASSIFY_NEW 0x100 /* classify(): the connection was just found to carry l7 */

/* Judges a message by its first payloads: which protocol it carries (0: none of ours).
 * Copies what it reads into scratch and leaves g past it.
 * Global, so the verifier checks it once, apart from the record's output: inline, each way of
 * classifying carried its own state through the output (937k verifier instructions per program,
 * 6% under the limit, 1.5 s each; now about 50k). */
__noinline int classify(const struct sock_msg *m, struct sock_l7 *known, struct gather *g, __u32 len)
{
	struct scratch_buf *s = scratch_slot();
	struct gather head; /* bpf_loop takes its context on this function's stack */
	__u32 skip = 0;
	__u8 l7 = 0;

	if (!s || !m || !g)
		return 0;
	if (known && known->l7 == L7_NOT_OURS)
		return 0;
	if (known && known->l7) /* decided: SIP, Diameter or SIP over WebSocket */
		return known->l7;
	if (!known && m->prefix_sip)
		return HEPBPF_L7_SIP;
	head = *g;
	head.limit = len < KEEPALIVE_SKIP + SIP_PREFIX ? len : KEEPALIVE_SKIP + SIP_PREFIX;
	bpf_loop(GATHER_STEPS, gather_step, &head, 0);
	*g = head;
	if (g->fault) {
		count(HEPBPF_CNT_READ_FAULT);
		return 0;
	}
	while (skip < KEEPALIVE_SKIP && skip < g->off && (s->data[skip] == '\r' || s->data[skip] == '\n'))
		skip++;
	/* Only keep-alives: neither a verdict nor a miss. */
	if (skip && skip == m->orig_len)
		return 0;
	if (looks_like_sip(s->data + skip, g->off - skip))
		l7 = HEPBPF_L7_SIP;
	else if (known && looks_like_diameter(s->data, g->off, g->off == m->orig_len))
		l7 = HEPBPF_L7_DIAMETER;
	else if (known && looks_like_get(s->data, g->off) && ws_sip_upgrade(m))
		l7 = HEPBPF_L7_WEBSOCKET;
	if (known) {
		if (l7) {
			known->l7 = l7;
			return l7 | CLASSIFY_NEW;
		}
		if (++known->misses >= TCP_MAX_MISSES)
			known->l7 = L7_NOT_OURS;
	}
	return l7;
}

/* A TCP message whose bytes' place is known, in r with its fields set (bpf/local_copies.bpf.h):
 * flags r HEPBPF_F_SEQ when its flow's receiver reads on this host; returns 1 when it
 * is a receiver's read whose bytes the sender's records carried (header only), else 0.
 * started: sock_l7.started of its socket. Global, so the verifier checks it apart from emit(). */
__noinline int tcp_local(const struct sock_msg *m, __u8 started, struct hepbpf_record *r)
{
	struct tcp_sent *e;

	if (!m || !r || (r->flags & HEPBPF_F_TRUNCATED))
		return 0;
	e = tcp_sent_of(r, r->direction == HEPBPF_DIR_INGRESS);
	if (!e)
		return 0;
	r->flags |= HEPBPF_F_SEQ;
	r->msg_hash = m->seq;
	if (r->direction == HEPBPF_DIR_EGRESS)
		return 0;
	if (!(started & (1 << HEPBPF_DIR_INGRESS)))
		e->cov = 0; /* a new connection: what the entry covers was another's */
	if (tcp_sent_covers(e, m->seq, m->orig_len)) {
		count(HEPBPF_CNT_TCP_RX_REDUCED);
		r->flags |= HEPBPF_F_COUNTERPART;
		return 1;
	}
	if (e->cov)
		count(HEPBPF_CNT_TCP_RX_WHOLE);
	return 0;
}

/* The flagged sender's record r of m went out: a receiver's read may now rely on it. Global, see above. */
__noinline int tcp_sent_out(const struct sock_msg *m, const struct hepbpf_record *r)
{
	struct tcp_sent *e;

	if (!m || !r || r->direction != HEPBPF_DIR_EGRESS)
		return 0;
	e = tcp_sent_of(r, false);
	if (e)
		tcp_sent_extend(e, m->seq, m->orig_len, r->flags & HEPBPF_F_STREAM_START);
	return 0;
}

/* Turns one message into a record if it is SIP or Diameter, and submits it.
 * known: what the connection carries so far, updated here; NULL for a
 * datagram, which is judged alone (SIP only: no Diameter over UDP).
 * addrs: a TLS connection's addresses, taken here from its socket once; else NULL.
 * Global, so the verifier checks it once rather than at every call site. */
__noinline int emit(const struct sock_msg *m, struct sock_l7 *known, struct conn_addrs *addrs)
{
	struct scratch_buf *s = scratch_slot();
	struct hepbpf_record *r;
	struct gather g = {};
	__u16 lport, rport;
	__u32 len;
	int l7;

	if (!s || !m)
		return 0;
	r = &s->rec;
	if (addrs && addrs->family) {
		COPY_ADDRS(r, addrs);
		r->msg_hash = 0;
	} else {
		fill_addrs(r, m);
		if (addrs && m->sk)
			COPY_ADDRS(addrs, r);
	}
	lport = r->local_port;
	rport = r->remote_port;
	if (cfg.filter_ports && m->sk && !bpf_map_lookup_elem(&sip_ports, &lport) &&
	    !bpf_map_lookup_elem(&sip_ports, &rport))
		return 0;

	len = m->orig_len < HEPBPF_MAX_DATA ? m->orig_len : HEPBPF_MAX_DATA;
	gather_init(&g, m);
	l7 = classify(m, known, &g, len);
	if (!l7)
		return 0;
	/* Outside classify(): emit_notice()'s record on the stack would take the call chain past 512 bytes. */
	if (l7 & CLASSIFY_NEW) {
		l7 &= ~CLASSIFY_NEW;
		if (m->sk)
			conn_carries_ours(m->sk, m->tls_id);
	}
	g.limit = len;
	bpf_loop(GATHER_STEPS, gather_step, &g, 0);
	if (g.fault) {
		count(HEPBPF_CNT_READ_FAULT);
		return 0;
	}
	len = g.off;
	if (len > HEPBPF_MAX_DATA)
		len = HEPBPF_MAX_DATA;

	stamp(r);
	r->sock_id = (__u64)m->sk;
	r->tls_id = m->tls_id;
	r->orig_len = m->orig_len;
	r->data_len = len;
	r->direction = is_ingress(m->source) ? HEPBPF_DIR_INGRESS : HEPBPF_DIR_EGRESS;
	r->ip_proto = m->proto;
	r->l7 = l7;
	r->source = m->source;
	r->fd = m->fd;
	if (m->tls_id)
		r->flags |= HEPBPF_F_TLS;
	if (len < m->orig_len) {
		r->flags |= HEPBPF_F_TRUNCATED;
		count(HEPBPF_CNT_TRUNCATED);
	}
	/* A connection's first record each way says so: userspace names streams by socket
	 * address, which the next connection reuses once this one is closed. */
	if (known && !(known->started & (1 << r->direction)))
		r->flags |= HEPBPF_F_STREAM_START;
	if (known && m->has_seq && !m->tls_id && tcp_local(m, known->started, r))
		r->data_len = len = 0;
	if (m->proto == IPPROTO_UDP) {
		r->msg_hash = msg_hash(s->data, len);
		if (r->direction == HEPBPF_DIR_INGRESS && udp_sender_emitted(r)) {
			r->flags |= HEPBPF_F_COUNTERPART;
			r->data_len = len = 0;
		}
	}
	if (bpf_ringbuf_output(&events, s, sizeof(*r) + len, wakeup_flags())) {
		count(HEPBPF_CNT_RINGBUF_FULL);
		return 0;
	}
	count(HEPBPF_CNT_EMITTED);
	if (known && (r->flags & HEPBPF_F_STREAM_START)) /* once out: a lost first record leaves it to the next */
		known->started |= 1 << r->direction;
	if (m->proto == IPPROTO_UDP && r->direction == HEPBPF_DIR_EGRESS)
		udp_sent_remember(r);
	if (r->flags & HEPBPF_F_SEQ)
		tcp_sent_out(m, r);
	return 0;
}

/* A record without data (HEPBPF_SRC_TLS_CONN, HEPBPF_SRC_EXEC, connection events). */
struct notice {
	struct sock *sk;
	__u64 tls_id;
	__u32 code; /* orig_len: see the source's definition */
	__u32 aux; /* fd: the same */
	__u16 local_port, remote_port; /* when not 0, instead of the socket's (a closing socket's may be cleared) */
	__u8 source;
};

/* Built on the stack, so it may be sent while emit() has a record in scratch. */
static __noinline int emit_notice(const struct notice *n)
{
	struct sock_msg m = { .sk = n->sk, .proto = IPPROTO_TCP };
	struct hepbpf_record r;

	__builtin_memset(&r, 0, sizeof(r));
	fill_addrs(&r, &m);
	if (n->local_port)
		r.local_port = n->local_port;
	if (n->remote_port) {
		r.remote_port = n->remote_port;
		r.flags &= ~HEPBPF_F_NO_PEER;
	}
	stamp(&r);
	r.sock_id = (__u64)n->sk;
	r.tls_id = n->tls_id;
	r.orig_len = n->code;
	r.ip_proto = IPPROTO_TCP;
	r.source = n->source;
	r.fd = n->aux;
	if (bpf_ringbuf_output(&events, &r, sizeof(r), wakeup_flags()))
		count(HEPBPF_CNT_RINGBUF_FULL);
	return 0;
}

/* What the TCP connection on sk carries, created empty when first seen. */
static __always_inline struct sock_l7 *sock_l7_of(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_l7 *known = bpf_map_lookup_elem(&sock_l7, &key);
	struct sock_l7 fresh = {};

	if (known)
		return known;
	bpf_map_update_elem(&sock_l7, &key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sock_l7, &key);
}

static __always_inline void mark_not_ours(struct sock *sk)
{
	struct sock_l7 *known = sock_l7_of(sk);

	if (known)
		known->l7 = L7_NOT_OURS;
}

/* Does sk carry SIP (also over WebSocket) or Diameter in the clear? Then it is not a TLS socket. */
static __always_inline bool carries_plaintext(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_l7 *known = bpf_map_lookup_elem(&sock_l7, &key);

	return known && known->l7 && known->l7 != L7_NOT_OURS;
}

#include "tls.bpf.h"
#include "conn_events.bpf.h"

/* The TLS call the thread is in, looked up (a helper call) only when it entered one on this CPU:
 * not at every read and write of the host. */
static __always_inline struct tls_call *tls_call_here(struct task_struct *task)
{
	__u32 zero = 0, *in_call = bpf_map_lookup_elem(&tls_call_cpu, &zero);

	return in_call && *in_call == task->pid ? bpf_task_storage_get(&tls_calls, task, NULL, 0) : NULL;
}

/* The library's own I/O on its connection's known socket: ciphertext, nothing to look up. */
static __always_inline bool tls_own_io(const struct tls_call *call, __u32 fd)
{
	return call && call->conn && call->fd == (__s32)fd;
}

/* Is the thread's syscall on inet socket sk (fd) worth following? Not when it moves TLS ciphertext
 * (call: tls_call_here()), on a connection found not ours, or when it sends a datagram that does not
 * start like SIP. A TCP read is remembered in the thread's slot, made for it: *slot. */
static __always_inline bool io_wanted(struct task_struct *task, struct tls_call *call, struct sock *sk, __u16 proto,
				      __u32 fd, const void *arg, __u64 len, __u8 source, struct inflight **slot)
{
	if (proto == IPPROTO_TCP) {
		if (!call)
			call = bpf_task_storage_get(&tls_calls, task, NULL, 0);
		if (tls_ciphertext_io(task, call, sk, fd, source, arg))
			return false;
		if (is_ingress(source)) {
			*slot = bpf_task_storage_get(&inflight, task, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (*slot)
				(*slot)->last_read_sk = sk;
		}
	}
	if (proto != IPPROTO_UDP) {
		__u64 key = (__u64)sk;
		struct sock_l7 *known = bpf_map_lookup_elem(&sock_l7, &key);

		return !known || known->l7 != L7_NOT_OURS;
	}
	/* A datagram is sent whole or not at all: one that does not start
	 * like SIP (RTP, DNS) is dropped here, before any other work. */
	return (source != HEPBPF_SRC_SENDTO && source != HEPBPF_SRC_WRITE) || buffer_looks_like_sip(arg, len);
}

/* Keeps io in the thread's slot (made when slot is NULL), with the slot's last_read_sk. */
static __always_inline void io_remember(struct task_struct *task, struct inflight *slot, const struct inflight *io)
{
	struct sock *last_read_sk;

	if (!slot)
		slot = bpf_task_storage_get(&inflight, task, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!slot) {
		count(HEPBPF_CNT_INFLIGHT_FULL);
		return;
	}
	last_read_sk = slot->last_read_sk;
	*slot = *io;
	slot->last_read_sk = last_read_sk;
}

static __always_inline int enter_io(struct trace_event_raw_sys_enter *ctx, const void *arg, __u64 len, __u8 source)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__s32 nr = ctx->id; /* an int in the event: the upper half is padding */
	__u32 fd = ctx->args[0];
	struct inflight *slot = NULL;
	struct tls_call *call;
	struct sock *sk;
	__u16 proto;

	if (task->tgid == cfg.self_tgid)
		return 0;
	call = tls_call_here(task);
	if (tls_own_io(call, fd))
		return 0;
	sk = sock_of_fd(fd);
	proto = sk ? inet_proto(sk) : 0;
	if (!proto || !io_wanted(task, call, sk, proto, fd, arg, len, source, &slot))
		return 0;
	struct inflight in = {
		.sk = sk,
		.arg = arg,
		.len = len,
		.nr = nr,
		.fd = fd,
		.proto = proto,
		.source = source,
		.seq = proto == IPPROTO_TCP ? tcp_seq(sk, is_ingress(source)) : 0,
		.has_seq = proto == IPPROTO_TCP,
		.prefix_sip = proto == IPPROTO_UDP && (source == HEPBPF_SRC_SENDTO || source == HEPBPF_SRC_WRITE),
	};
	io_remember(task, slot, &in);
	return 0;
}

struct mmsg_walk {
	struct sock_msg m;
	const struct mmsghdr *vec;
};

/* One datagram of sendmmsg/recvmmsg: msg_len is what moved for it. */
static int emit_mmsg_one(__u32 i, void *arg)
{
	struct mmsg_walk *w = arg;
	struct mmsghdr h;

	if (bpf_probe_read_user(&h, sizeof(h), &w->vec[i])) {
		count(HEPBPF_CNT_READ_FAULT);
		return 1;
	}
	if (!h.msg_len)
		return 0;
	w->m.iov = h.msg_hdr.msg_iov;
	w->m.len = h.msg_hdr.msg_iovlen;
	w->m.name = h.msg_hdr.msg_name;
	w->m.namelen = h.msg_hdr.msg_namelen;
	w->m.orig_len = h.msg_len;
	emit(&w->m, w->m.proto == IPPROTO_UDP ? NULL : sock_l7_of(w->m.sk), NULL);
	return 0;
}

/* The syscall moved ret bytes (datagrams for *mmsg): emit its messages. */
static __always_inline void finish_io(const struct inflight *in, long ret)
{
	struct sock_msg m = {};
	struct sock_l7 *known = NULL;

	m.sk = in->sk;
	m.fd = in->fd;
	m.proto = in->proto;
	m.source = in->source;
	m.orig_len = ret;
	m.prefix_sip = in->prefix_sip;

	switch (in->source) {
	case HEPBPF_SRC_WRITE:
	case HEPBPF_SRC_READ:
		m.buf = in->arg;
		m.len = in->len;
		break;
	case HEPBPF_SRC_SENDTO:
		m.buf = in->arg;
		m.len = in->len;
		m.name = in->name;
		m.namelen = in->namelen;
		break;
	case HEPBPF_SRC_RECVFROM:
		m.buf = in->arg;
		m.len = in->len;
		m.name = in->name;
		/* the kernel wrote the peer's address length there */
		if (in->name && in->namelen)
			bpf_probe_read_user(&m.namelen, sizeof(m.namelen), (void *)in->namelen);
		break;
	case HEPBPF_SRC_WRITEV:
	case HEPBPF_SRC_READV:
		m.iov = in->arg;
		m.len = in->len;
		break;
	case HEPBPF_SRC_SENDMSG:
	case HEPBPF_SRC_RECVMSG: {
		struct user_msghdr h;

		if (bpf_probe_read_user(&h, sizeof(h), in->arg)) {
			count(HEPBPF_CNT_READ_FAULT);
			return;
		}
		m.iov = h.msg_iov;
		m.len = h.msg_iovlen;
		m.name = h.msg_name;
		m.namelen = h.msg_namelen;
		break;
	}
	case HEPBPF_SRC_SENDMMSG:
	case HEPBPF_SRC_RECVMMSG: {
		struct mmsg_walk w = { .m = m, .vec = in->arg };

		bpf_loop(ret < MAX_MMSG ? ret : MAX_MMSG, emit_mmsg_one, &w, 0);
		return;
	}
	default:
		return;
	}
	if (m.proto != IPPROTO_UDP) {
		known = sock_l7_of(m.sk);
		if (!known)
			return;
	}
	/* Its bytes' place in the stream, unless another syscall moved the socket's counter too. */
	if (in->has_seq && tcp_seq(m.sk, is_ingress(m.source)) - in->seq == (__u32)ret) {
		m.seq = in->seq;
		m.has_seq = 1;
	}
	emit(&m, known, NULL);
}

/* Exit of recvfrom/recvmsg (the peer address is written after the socket layer) and sendmmsg/recvmmsg
 * (the socket layer reports each datagram). */
static __always_inline int exit_io(struct trace_event_raw_sys_exit *ctx, __u8 source)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight *p = bpf_task_storage_get(&inflight, task, NULL, 0);
	struct inflight in;

	if (!p || p->source != source)
		return 0;
	in = *p;
	p->source = 0;
	if (ctx->ret > 0)
		finish_io(&in, ctx->ret);
	return 0;
}

/* A sendto or recvfrom that carries a peer address (a datagram's: TCP ignores it, and legally so)
 * is taken up here at the socket layer, from the syscall's registers and the socket the kernel
 * gives: its enter hook returns at once, without the fd -> socket chase. A sendto completes
 * here: it fills in, and returns whether it is worth completing. A recvfrom completes at its
 * exit, which has the peer address: its slot is filled here when it is worth it. */
static __always_inline bool addressed_io(struct task_struct *task, struct pt_regs *regs, struct sock *sk, int ret,
					 struct inflight *in)
{
	__u8 source = regs->orig_ax == NR_SENDTO ? HEPBPF_SRC_SENDTO : HEPBPF_SRC_RECVFROM;
	const void *buf = (const void *)regs->si;
	struct inflight *slot = NULL;
	struct tls_call *call;
	__u16 proto;

	if (ret <= 0 || task->tgid == cfg.self_tgid)
		return false;
	proto = inet_proto(sk);
	if (!proto)
		return false;
	call = tls_call_here(task);
	if (tls_own_io(call, regs->di) || !io_wanted(task, call, sk, proto, regs->di, buf, regs->dx, source, &slot))
		return false;
	/* No sequence number: the counter has moved already (a TCP message goes out whole). */
	*in = (struct inflight){
		.sk = sk,
		.arg = buf,
		.len = regs->dx,
		.name = (const void *)regs->r8,
		.namelen = regs->r9,
		.nr = regs->orig_ax,
		.fd = regs->di,
		.proto = proto,
		.source = source,
		.prefix_sip = proto == IPPROTO_UDP,
	};
	if (source == HEPBPF_SRC_SENDTO)
		return true;
	/* The datagram is in the buffer now: nothing to do at the exit if it is not SIP. */
	if (proto != IPPROTO_UDP || received_looks_like_sip(buf, ret, regs->dx))
		io_remember(task, slot, in);
	return false;
}

/* The socket layer moved ret bytes on sk: completes write/writev/sendto/sendmsg/read/readv
 * (an addressed sendto: see addressed_io). The other socket syscalls complete at their exit.
 * addressed_nr: the syscall taken up here when it carries an address (NR_SENDTO, NR_RECVFROM). */
static __always_inline int sock_io_done(struct sock *sk, int ret, __s32 addressed_nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct inflight *p, in;

	if ((__s32)regs->orig_ax == addressed_nr && regs->r8) {
		if (addressed_io(task, regs, sk, ret, &in))
			finish_io(&in, ret);
		return 0;
	}
	p = bpf_task_storage_get(&inflight, task, NULL, 0);
	if (!p || (__u64)p->sk != (__u64)sk)
		return 0;
	if (p->source == HEPBPF_SRC_RECVFROM && p->proto == IPPROTO_UDP) {
		/* The datagram is in the buffer now; its exit has the peer address
		 * to add, but nothing to do if it is not SIP. */
		if (!received_looks_like_sip(p->arg, ret, p->len))
			p->source = 0;
		else
			p->prefix_sip = 1;
		return 0;
	}
	if (p->source != HEPBPF_SRC_WRITE && p->source != HEPBPF_SRC_WRITEV && p->source != HEPBPF_SRC_SENDTO &&
	    p->source != HEPBPF_SRC_SENDMSG && p->source != HEPBPF_SRC_READ && p->source != HEPBPF_SRC_READV)
		return 0;
	/* Same syscall as the enter hook saw: a write that failed
	 * before the socket layer leaves its slot behind, and sendfile() or
	 * io_uring on the same socket must not complete it. */
	if ((__s32)regs->orig_ax != p->nr)
		return 0;
	in = *p;
	p->source = 0;
	if (ret > 0)
		finish_io(&in, ret);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	return sock_io_done(sk, ret, NR_SENDTO);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	return sock_io_done(sk, ret, NR_RECVFROM);
}

#define ARG(i) (ctx->args[i])

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_WRITE);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_WRITEV);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	if (ARG(4)) /* a peer address: taken up at the socket layer (addressed_io) */
		return 0;
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_SENDTO);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), 0, HEPBPF_SRC_SENDMSG);
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_SENDMMSG);
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_SENDMMSG);
}

SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_READ);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_READV);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	if (ARG(4)) /* an address buffer: taken up at the socket layer (addressed_io) */
		return 0;
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_RECVFROM);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_RECVFROM);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), 0, HEPBPF_SRC_RECVMSG);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_RECVMSG);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int enter_recvmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ctx, (void *)ARG(1), ARG(2), HEPBPF_SRC_RECVMMSG);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_RECVMMSG);
}

/* TLS handshakes (bpf/conn_events.bpf.h); their returns go to tls_ssl_ret and tls_gnutls_ret. */
SEC("uprobe")
int BPF_KPROBE(tls_ssl_do_handshake, void *ssl)
{
	return tls_handshake_enter((__u64)ssl, HEPBPF_TLS_FN_SSL_DO_HANDSHAKE, HEPBPF_SRC_SSL_READ);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_connect, void *ssl)
{
	return tls_handshake_enter((__u64)ssl, HEPBPF_TLS_FN_SSL_CONNECT, HEPBPF_SRC_SSL_READ);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_accept, void *ssl)
{
	return tls_handshake_enter((__u64)ssl, HEPBPF_TLS_FN_SSL_ACCEPT, HEPBPF_SRC_SSL_READ);
}

SEC("uprobe")
int BPF_KPROBE(tls_gnutls_handshake, void *session)
{
	return tls_handshake_enter((__u64)session, HEPBPF_TLS_FN_GNUTLS_HANDSHAKE, HEPBPF_SRC_GNUTLS_RECV);
}

/* A new program, or a library mapped executable (the loader after exec,
 * dlopen): userspace looks for TLS libraries to attach to. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(process_exec)
{
	struct notice n = { .source = HEPBPF_SRC_EXEC };

	if (bpf_get_current_pid_tgid() >> 32 == cfg.self_tgid)
		return 0;
	/* a new program: its TLS connections are new ones, whatever the addresses and fds they reuse */
	bpf_task_storage_delete(&tls_calls, bpf_get_current_task_btf());
	emit_notice(&n);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int enter_mmap(struct trace_event_raw_sys_enter *ctx)
{
	struct notice n = { .source = HEPBPF_SRC_EXEC };

	if ((ARG(2) & PROT_EXEC) && (int)ARG(4) >= 0 && bpf_get_current_pid_tgid() >> 32 != cfg.self_tgid)
		emit_notice(&n);
	return 0;
}

/* TCP connection established or closed: forget what its struct sock carried
 * before. Cheaper and tighter than hooking close(): it fires only on TCP state
 * changes, not on every close() of every file, and it also resets sockets that
 * were freed without close() (process exit), whose address the next
 * connection may reuse. */
SEC("tracepoint/sock/inet_sock_set_state")
int tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 key = (__u64)ctx->skaddr;
	struct tls_key *tls;

	if (ctx->newstate != TCP_ESTABLISHED && ctx->newstate != TCP_CLOSE && ctx->oldstate != TCP_ESTABLISHED)
		return 0;
	conn_state(ctx);
	tls = bpf_map_lookup_elem(&tls_socks, &key);
	if (tls && ctx->oldstate == TCP_ESTABLISHED) {
		__u32 zero = 0, *closes = bpf_map_lookup_elem(&tls_socket_closes, &zero);

		if (closes)
			__sync_fetch_and_add(closes, 1);
	}
	if (ctx->newstate != TCP_ESTABLISHED && ctx->newstate != TCP_CLOSE)
		return 0;
	bpf_map_delete_elem(&sock_l7, &key);
	if (tls) {
		bpf_map_delete_elem(&tls_conns, tls);
		bpf_map_delete_elem(&tls_socks, &key);
	}
	return 0;
}
