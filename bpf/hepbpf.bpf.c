// SPDX-License-Identifier: GPL-2.0
/*
 * Socket capture. Syscall tracepoints see every send and receive on the host;
 * what moves over an AF_INET/AF_INET6 TCP, UDP or SCTP socket and looks like
 * SIP goes to userspace through the "events" ring buffer, one
 * struct hepbpf_record plus payload per message.
 *
 * Enter hooks only decide "is this fd an inet socket we may care about" and
 * remember the arguments; exit hooks know how many bytes really moved and
 * read exactly those.
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
#define TCP_MAX_MISSES 4 /* non-SIP payloads before a TCP connection is not ours */
#define L7_NOT_OURS 0xff

/* Only .rodata variable: userspace patches it before load. */
const volatile struct hepbpf_config cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

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

/* Arguments of a socket syscall between its enter and exit, keyed by pid_tgid.
 * A plain hash, not LRU: the exit tracepoint fires for every syscall that
 * entered (also when the thread is killed), so entries do not leak, and a full
 * map is counted instead of silently evicting a blocked recv. */
struct inflight {
	struct sock *sk;
	const void *arg; /* buffer, iovec array, msghdr or mmsghdr array */
	__u64 len; /* buffer size, iovcnt or vlen */
	const void *name; /* sendto dest_addr / recvfrom src_addr */
	__u64 namelen; /* sendto: addrlen; recvfrom: user pointer to addrlen */
	__u32 fd;
	__u16 proto;
	__u8 source;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* What a TCP connection carries, keyed by struct sock address. Reset on every
 * TCP state change to ESTABLISHED or CLOSE (see tcp_state), LRU bounds it. */
struct sock_l7 {
	__u8 l7; /* HEPBPF_L7_* or L7_NOT_OURS */
	__u8 misses; /* non-SIP payloads seen while still unknown */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct sock_l7);
} sock_l7 SEC(".maps");

/* One message of a syscall, as emit() needs it. */
struct sock_msg {
	struct sock *sk;
	const struct iovec *iov; /* NULL: the data is the one buffer at buf */
	const void *buf;
	__u64 len; /* iovcnt, or the size of buf */
	const void *name; /* peer sockaddr the syscall carried, or NULL */
	__u32 namelen;
	__u32 orig_len; /* bytes the syscall moved for this message */
	__u32 fd;
	__u16 proto;
	__u8 source;
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

/* The struct sock behind fd when it is an AF_INET/AF_INET6 socket, else NULL.
 * Runs for every read() and write() on the host, so a regular file costs only
 * the walk to its inode mode. */
static __always_inline struct sock *inet_sock_of_fd(__u64 fd, __u16 *proto)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;
	struct socket *sock;
	struct sock *sk;
	__u16 family;

	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file || (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	/* a bitfield before 5.6: the PROBED read handles both layouts */
	*proto = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	if (*proto != IPPROTO_TCP && *proto != IPPROTO_UDP && *proto != IPPROTO_SCTP)
		return NULL;
	return sk;
}

static __always_inline int enter_io(__u64 fd, const void *arg, __u64 len, const void *name, __u64 namelen,
				    __u8 source)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight in = {};
	struct sock_l7 *known;
	struct sock *sk;
	__u16 proto;

	if (id >> 32 == cfg.self_tgid)
		return 0;
	sk = inet_sock_of_fd(fd, &proto);
	if (!sk)
		return 0;
	if (proto == IPPROTO_TCP) {
		__u64 key = (__u64)sk;

		known = bpf_map_lookup_elem(&sock_l7, &key);
		if (known && known->l7 == L7_NOT_OURS)
			return 0;
	}
	in.sk = sk;
	in.arg = arg;
	in.len = len;
	in.name = name;
	in.namelen = namelen;
	in.fd = fd;
	in.proto = proto;
	in.source = source;
	if (bpf_map_update_elem(&inflight, &id, &in, BPF_ANY))
		count(HEPBPF_CNT_INFLIGHT_FULL);
	return 0;
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

static __always_inline bool is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Addresses and ports: the socket's own, except that a datagram's peer is the
 * address the syscall carried. IPv4-mapped IPv6 is reported as IPv4. */
static __always_inline void fill_addrs(struct hepbpf_record *r, const struct sock_msg *m)
{
	__u32 *local = (__u32 *)r->local_addr, *remote = (__u32 *)r->remote_addr;
	struct sock *sk = m->sk;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	__builtin_memset(r->local_addr, 0, sizeof(r->local_addr));
	__builtin_memset(r->remote_addr, 0, sizeof(r->remote_addr));
	r->flags = 0;
	r->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		local[0] = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		remote[0] = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	} else {
		bpf_core_read(local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(remote, 16, &sk->__sk_common.skc_v6_daddr);
	}

	if (m->proto != IPPROTO_TCP && m->name && m->namelen >= sizeof(struct sockaddr_in)) {
		struct sockaddr_in6 sa = {};
		__u32 n = m->namelen;

		if (n > sizeof(sa))
			n = sizeof(sa);
		if (bpf_probe_read_user(&sa, n, m->name) == 0) {
			if (sa.sin6_family == AF_INET6 && n == sizeof(sa)) {
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

/* Turns one message into a record if it is SIP, and submits it. */
static __noinline int emit(const struct sock_msg *m)
{
	struct scratch_buf *s = scratch_slot();
	struct hepbpf_record *r;
	struct gather g = {};
	struct sock_l7 *known = NULL;
	__u64 key = (__u64)m->sk, id;
	__u16 lport, rport;
	__u32 len;

	if (!s)
		return 0;
	r = &s->rec;
	fill_addrs(r, m);
	lport = r->local_port;
	rport = r->remote_port;
	if (cfg.filter_ports && !bpf_map_lookup_elem(&sip_ports, &lport) && !bpf_map_lookup_elem(&sip_ports, &rport))
		return 0;

	len = m->orig_len < HEPBPF_MAX_DATA ? m->orig_len : HEPBPF_MAX_DATA;
	if (m->iov) {
		g.iov = m->iov;
		g.iovcnt = m->len;
	} else {
		g.base = m->buf;
		g.left = m->len;
	}

	if (m->proto == IPPROTO_TCP)
		known = bpf_map_lookup_elem(&sock_l7, &key);
	if (!known || known->l7 != HEPBPF_L7_SIP) {
		/* Datagrams are judged one by one; a TCP connection by its first payloads. */
		struct sock_l7 next = {};
		bool sip;

		g.limit = len < SIP_PREFIX ? len : SIP_PREFIX;
		bpf_loop(GATHER_STEPS, gather_step, &g, 0);
		if (g.fault) {
			count(HEPBPF_CNT_READ_FAULT);
			return 0;
		}
		sip = looks_like_sip(s->data, g.off);
		if (m->proto == IPPROTO_TCP) {
			if (sip) {
				next.l7 = HEPBPF_L7_SIP;
			} else {
				next.misses = known ? known->misses + 1 : 1;
				if (next.misses >= TCP_MAX_MISSES)
					next.l7 = L7_NOT_OURS;
			}
			bpf_map_update_elem(&sock_l7, &key, &next, BPF_ANY);
		}
		if (!sip)
			return 0;
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

	id = bpf_get_current_pid_tgid();
	r->ts_ns = bpf_ktime_get_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->sock_id = key;
	r->pid = id >> 32;
	r->tid = id;
	r->orig_len = m->orig_len;
	r->data_len = len;
	r->direction = m->source >= HEPBPF_SRC_READ ? HEPBPF_DIR_INGRESS : HEPBPF_DIR_EGRESS;
	r->ip_proto = m->proto;
	r->l7 = HEPBPF_L7_SIP;
	r->source = m->source;
	r->_pad = 0;
	r->fd = m->fd;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	if (len < m->orig_len) {
		r->flags |= HEPBPF_F_TRUNCATED;
		count(HEPBPF_CNT_TRUNCATED);
	}
	if (bpf_ringbuf_output(&events, s, sizeof(*r) + len, 0))
		count(HEPBPF_CNT_RINGBUF_FULL);
	else
		count(HEPBPF_CNT_EMITTED);
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
	emit(&w->m);
	return 0;
}

static __always_inline int exit_io(struct trace_event_raw_sys_exit *ctx, __u8 source)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *p = bpf_map_lookup_elem(&inflight, &id);
	struct inflight in;
	struct sock_msg m = {};
	long ret = ctx->ret;

	if (!p)
		return 0;
	in = *p;
	bpf_map_delete_elem(&inflight, &id);
	/* a different source: an entry left over from before the exit hook was attached */
	if (in.source != source || ret <= 0)
		return 0;

	m.sk = in.sk;
	m.fd = in.fd;
	m.proto = in.proto;
	m.source = source;
	m.orig_len = ret;

	switch (source) {
	case HEPBPF_SRC_WRITE:
	case HEPBPF_SRC_READ:
		m.buf = in.arg;
		m.len = in.len;
		break;
	case HEPBPF_SRC_SENDTO:
		m.buf = in.arg;
		m.len = in.len;
		m.name = in.name;
		m.namelen = in.namelen;
		break;
	case HEPBPF_SRC_RECVFROM:
		m.buf = in.arg;
		m.len = in.len;
		m.name = in.name;
		/* the kernel wrote the peer's address length there */
		if (in.name && in.namelen)
			bpf_probe_read_user(&m.namelen, sizeof(m.namelen), (void *)in.namelen);
		break;
	case HEPBPF_SRC_WRITEV:
	case HEPBPF_SRC_READV:
		m.iov = in.arg;
		m.len = in.len;
		break;
	case HEPBPF_SRC_SENDMSG:
	case HEPBPF_SRC_RECVMSG: {
		struct user_msghdr h;

		if (bpf_probe_read_user(&h, sizeof(h), in.arg)) {
			count(HEPBPF_CNT_READ_FAULT);
			return 0;
		}
		m.iov = h.msg_iov;
		m.len = h.msg_iovlen;
		m.name = h.msg_name;
		m.namelen = h.msg_namelen;
		break;
	}
	case HEPBPF_SRC_SENDMMSG:
	case HEPBPF_SRC_RECVMMSG: {
		/* ret is the number of datagrams here */
		struct mmsg_walk w = { .m = m, .vec = in.arg };

		bpf_loop(ret < MAX_MMSG ? ret : MAX_MMSG, emit_mmsg_one, &w, 0);
		return 0;
	}
	}
	emit(&m);
	return 0;
}

#define ARG(i) (ctx->args[i])

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), NULL, 0, HEPBPF_SRC_WRITE);
}

SEC("tracepoint/syscalls/sys_exit_write")
int exit_write(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_WRITE);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), NULL, 0, HEPBPF_SRC_WRITEV);
}

SEC("tracepoint/syscalls/sys_exit_writev")
int exit_writev(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_WRITEV);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), (void *)ARG(4), ARG(5), HEPBPF_SRC_SENDTO);
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int exit_sendto(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_SENDTO);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), 0, NULL, 0, HEPBPF_SRC_SENDMSG);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_SENDMSG);
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), NULL, 0, HEPBPF_SRC_SENDMMSG);
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_SENDMMSG);
}

SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), NULL, 0, HEPBPF_SRC_READ);
}

SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_READ);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), NULL, 0, HEPBPF_SRC_READV);
}

SEC("tracepoint/syscalls/sys_exit_readv")
int exit_readv(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_READV);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), (void *)ARG(4), ARG(5), HEPBPF_SRC_RECVFROM);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_RECVFROM);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), 0, NULL, 0, HEPBPF_SRC_RECVMSG);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_RECVMSG);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int enter_recvmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return enter_io(ARG(0), (void *)ARG(1), ARG(2), NULL, 0, HEPBPF_SRC_RECVMMSG);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_io(ctx, HEPBPF_SRC_RECVMMSG);
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

	if (ctx->newstate == TCP_ESTABLISHED || ctx->newstate == TCP_CLOSE)
		bpf_map_delete_elem(&sock_l7, &key);
	return 0;
}
