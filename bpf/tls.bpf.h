/* SPDX-License-Identifier: GPL-2.0 */
/*
 * TLS libraries (included by hepbpf.bpf.c once emit() and the socket helpers are
 * defined). Uprobes on SSL_read/SSL_write and their _ex variants (OpenSSL,
 * BoringSSL, also linked into executables) and gnutls_record_recv/send, attached
 * per library file by src/capture/tls-probes.ts, see the plaintext: the entry
 * remembers the call, the return emits what moved. Which socket a TLS connection
 * uses is learnt from the thread's socket I/O next to the call: inside it when
 * the library does its own I/O (socket BIO), the read just before SSL_read or the
 * write just after SSL_write when the application moves the ciphertext itself
 * (memory BIO: Kamailio, Node). Ciphertext is never captured. Handshake failures
 * are bpf/conn_events.bpf.h's.
 */

/* A TLS connection: the library's connection object in one process. */
struct tls_key {
	__u64 conn; /* SSL * or gnutls_session_t */
	__u32 tgid;
	__u32 _pad;
};

struct tls_conn {
	struct sock *sk; /* its socket, NULL until learnt */
	struct sock_l7 l7; /* what its plaintext carries */
	struct conn_addrs addrs; /* sk's, once a record took them (emit) */
	__u8 handshake_fn; /* HEPBPF_TLS_FN_* whose last return was not a completed handshake; 0: none or completed */
	__s32 handshake_ret; /* that return */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct tls_key);
	__type(value, struct tls_conn);
} tls_conns SEC(".maps");

/* Socket -> the TLS connection on it, so that closing the socket forgets the
 * connection: a freed SSL object's address is reused by the next one. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct tls_key);
} tls_socks SEC(".maps");

/* TCP sockets of TLS connections that left ESTABLISHED so far (index 0): one does so before its
 * fd can be closed and given to another socket, so a struct tls_fd seen since still holds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tls_socket_closes SEC(".maps");

/* Socket BIO: the fd a thread's library did its own I/O on for connection conn, while that
 * socket was established. I/O on it in the connection's next calls is ciphertext, taken as
 * such without looking the socket up (enter_io). */
struct tls_fd {
	__u64 conn;
	__s32 fd;
	__u32 closes; /* tls_socket_closes then: valid while it has not changed */
};

#define TLS_FDS 4 /* connections a thread may take turns with and keep its fds for */

/* The TLS call a thread is in, from the uprobe to the uretprobe. */
struct tls_call {
	__u64 conn; /* 0: not in a call */
	const void *buf;
	const void *out_len; /* SSL_*_ex: where the library stores the byte count */
	struct sock *sk; /* socket the library did I/O on during the call (socket BIO) */
	__s32 fd; /* its fd; from the call's entry, the connection's fd from fds if known, else -1 */
	__u8 handshake_fn; /* HEPBPF_TLS_FN_*: the call is a handshake, not a read or write */
	__u64 pending_conn; /* memory BIO: SSL_write of a connection whose socket is unknown... */
	__u64 pending_ns; /* ...returned at this time: the thread's next socket write names it */
	__u8 source;
	__u8 next_fd; /* the slot of fds a new connection takes */
	struct tls_fd fds[TLS_FDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tls_call);
} tls_calls SEC(".maps");

/* Per CPU: the thread (tid) in a TLS call that it entered on this CPU. enter_io looks a thread's
 * call up first (a helper call) only when it is this one, not at every read and write of the host. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tls_call_cpu SEC(".maps");

/* bpf/conn_events.bpf.h, included after this file */
static __always_inline int tls_handshake_exit(__u32 tgid, __u64 conn, struct tls_call *in, long ret);

/* The TLS connection conn of process tgid, created empty when first seen. */
static __always_inline struct tls_conn *tls_conn_of(__u32 tgid, __u64 conn)
{
	struct tls_key key = { .conn = conn, .tgid = tgid };
	struct tls_conn *c = bpf_map_lookup_elem(&tls_conns, &key);
	struct tls_conn fresh = {};

	if (c)
		return c;
	bpf_map_update_elem(&tls_conns, &key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&tls_conns, &key);
}

/* TLS connection conn runs over sk: remember it and tell userspace, which
 * may hold plaintext of conn that arrived before its socket was known.
 * ciphertext: sk was seen moving conn's ciphertext (not only read before its
 * SSL_read); it is marked not ours here, once, not at each of its syscalls. */
static __always_inline void tls_conn_learnt(__u32 tgid, __u64 conn, struct tls_conn *c, struct sock *sk,
					    bool ciphertext)
{
	struct tls_key key = { .conn = conn, .tgid = tgid };
	__u64 sk_key = (__u64)sk;

	if (c->sk == sk)
		return;
	c->sk = sk;
	c->addrs.family = 0;
	if (ciphertext)
		mark_not_ours(sk);
	bpf_map_update_elem(&tls_socks, &sk_key, &key, BPF_ANY);
	struct notice n = { .sk = sk, .tls_id = conn, .source = HEPBPF_SRC_TLS_CONN };

	emit_notice(&n);
	if (carries_ours(c->l7.l7))
		conn_carries_ours(sk, conn);
}

static __always_inline __u32 tls_closes(void)
{
	__u32 zero = 0, *n = bpf_map_lookup_elem(&tls_socket_closes, &zero);

	return n ? *n : 0;
}

/* The fd of connection conn that this thread's library did its I/O on, or -1. */
static __always_inline __s32 tls_fd_of(const struct tls_call *call, __u64 conn)
{
	__u32 closes = tls_closes();

	for (int i = 0; i < TLS_FDS; i++)
		if (call->fds[i].conn == conn && call->fds[i].closes == closes)
			return call->fds[i].fd;
	return -1;
}

/* At the return of a call of connection conn whose socket c knows or not: the library did its own
 * I/O in the call on TCP socket call->sk through call->fd (socket BIO), which the thread's next calls
 * of conn take for theirs while it is established; or its socket is not known (its entry was
 * dropped), and they look it up again. */
static __always_inline void tls_fd_seen(struct tls_call *call, __u64 conn, const struct tls_conn *c)
{
	struct sock *sk = bpf_rdonly_cast(call->sk, bpf_core_type_id_kernel(struct sock));
	__u32 closes, i;
	bool established;

	if (!call->sk && c->sk)
		return;
	closes = tls_closes(); /* before the state: leaving ESTABLISHED after this changes it */
	established = call->sk && sk->__sk_common.skc_state == TCP_ESTABLISHED;
	for (i = 0; i < TLS_FDS; i++)
		if (call->fds[i].conn == conn)
			break;
	if (i == TLS_FDS) {
		if (!established)
			return;
		i = call->next_fd++;
	}
	i &= TLS_FDS - 1;
	call->fds[i].conn = conn;
	call->fds[i].fd = established ? call->fd : -1;
	call->fds[i].closes = closes;
}

/* The data a write-family syscall sends starts with a TLS record header
 * (content type 20-23, protocol version 3.x): ciphertext, not SIP or Diameter. */
static __always_inline bool sends_tls_record(const void *arg, __u8 source)
{
	const struct iovec *iov = arg;
	const void *buf = arg;
	struct iovec v;
	__u8 h[3];

	if (source == HEPBPF_SRC_SENDMSG) {
		struct user_msghdr m;

		if (bpf_probe_read_user(&m, sizeof(m), arg))
			return false;
		iov = m.msg_iov;
	} else if (source == HEPBPF_SRC_SENDMMSG) {
		struct mmsghdr mm;

		if (bpf_probe_read_user(&mm, sizeof(mm), arg))
			return false;
		iov = mm.msg_hdr.msg_iov;
	}
	if (source == HEPBPF_SRC_WRITEV || source == HEPBPF_SRC_SENDMSG || source == HEPBPF_SRC_SENDMMSG) {
		if (bpf_probe_read_user(&v, sizeof(v), iov))
			return false;
		buf = v.iov_base;
	}
	if (bpf_probe_read_user(h, sizeof(h), buf))
		return false;
	return h[0] >= 20 && h[0] <= 23 && h[1] == 3;
}

/* Socket I/O on TCP socket sk (fd) by a thread that uses a TLS library (its call):
 * true when it moves ciphertext, which is never captured. */
static __always_inline bool tls_ciphertext_io(struct task_struct *task, struct tls_call *call, struct sock *sk,
					      __s32 fd, __u8 source, const void *arg)
{
	__u64 conn;
	struct tls_conn *c;

	if (!call)
		return false;
	if (call->conn) { /* socket BIO: the library's own I/O inside SSL_* */
		call->sk = sk;
		call->fd = fd;
		return true;
	}
	if (is_ingress(source) || !call->pending_conn)
		return false;
	conn = call->pending_conn;
	if (bpf_ktime_get_ns() - call->pending_ns >= TLS_PENDING_NS) {
		call->pending_conn = 0;
		return false;
	}
	/* memory BIO: the first TLS record written after SSL_write is its ciphertext */
	if (carries_plaintext(sk) || !sends_tls_record(arg, source))
		return false;
	call->pending_conn = 0;
	c = tls_conn_of(task->tgid, conn);
	if (c)
		tls_conn_learnt(task->tgid, conn, c, sk, true);
	return true;
}

/* Entry of a TLS library's read or write: remember the call. */
static __always_inline int tls_enter(__u64 conn, const void *buf, const void *out_len, __u8 source)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 zero = 0, *in_call;
	struct tls_call *call;
	struct inflight *in;
	struct tls_conn *c;

	if (task->tgid == cfg.self_tgid)
		return 0;
	call = bpf_task_storage_get(&tls_calls, task, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!call) {
		count(HEPBPF_CNT_INFLIGHT_FULL);
		return 0;
	}
	call->conn = conn;
	call->buf = buf;
	call->out_len = out_len;
	call->sk = NULL;
	call->fd = tls_fd_of(call, conn);
	call->handshake_fn = 0;
	call->source = source;
	in_call = bpf_map_lookup_elem(&tls_call_cpu, &zero);
	if (in_call)
		*in_call = task->pid;
	if (!is_ingress(source))
		return 0;
	/* memory BIO: the application read this connection's ciphertext just before */
	in = bpf_task_storage_get(&inflight, task, NULL, 0);
	if (!in || !in->last_read_sk)
		return 0;
	if (!carries_plaintext(in->last_read_sk)) {
		c = tls_conn_of(task->tgid, conn);
		if (c && !c->sk)
			tls_conn_learnt(task->tgid, conn, c, in->last_read_sk, false);
	}
	in->last_read_sk = NULL;
	return 0;
}

/* Return of a TLS read or write: ret bytes of plaintext (SSL_*_ex: ret is
 * 1 on success and the count is at out_len). */
static __always_inline int tls_exit(long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tls_call *call = bpf_task_storage_get(&tls_calls, task, NULL, 0);
	__u32 zero = 0, *in_call = bpf_map_lookup_elem(&tls_call_cpu, &zero);
	struct tls_conn *c;
	__u64 conn;

	if (in_call && *in_call == task->pid)
		*in_call = 0;
	if (!call || !call->conn)
		return 0;
	conn = call->conn;
	call->conn = 0; /* the call's other fields stay as they are until the thread's next call */
	if (call->handshake_fn)
		return tls_handshake_exit(task->tgid, conn, call, ret);
	if (call->out_len) {
		__u64 n = 0;

		if (ret != 1 || bpf_probe_read_user(&n, sizeof(n), call->out_len))
			return 0;
		ret = n;
	}
	if (ret <= 0)
		return 0;
	c = tls_conn_of(task->tgid, conn);
	if (!c) {
		count(HEPBPF_CNT_INFLIGHT_FULL);
		return 0;
	}
	tls_fd_seen(call, conn, c);
	if (call->sk)
		tls_conn_learnt(task->tgid, conn, c, call->sk, true);
	else if (!c->sk && !is_ingress(call->source)) {
		call->pending_conn = conn;
		call->pending_ns = bpf_ktime_get_ns();
	}
	/* declared here, so that it may share its stack with tls_conn_of()'s (the call chain's limit) */
	struct sock_msg m = { .sk = c->sk, .tls_id = conn, .buf = call->buf, .len = ret, .orig_len = ret,
			      .proto = IPPROTO_TCP, .source = call->source };

	return emit(&m, &c->l7, &c->addrs);
}

/* TLS libraries: attached per file by src/capture/tls-probes.ts. */
SEC("uprobe")
int BPF_KPROBE(tls_ssl_write, void *ssl, const void *buf)
{
	return tls_enter((__u64)ssl, buf, NULL, HEPBPF_SRC_SSL_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_read, void *ssl, void *buf)
{
	return tls_enter((__u64)ssl, buf, NULL, HEPBPF_SRC_SSL_READ);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_write_ex, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return tls_enter((__u64)ssl, buf, written, HEPBPF_SRC_SSL_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(tls_ssl_read_ex, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return tls_enter((__u64)ssl, buf, readbytes, HEPBPF_SRC_SSL_READ);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_ssl_ret, int ret) /* int: the upper half of rax is undefined */
{
	return tls_exit(ret);
}

SEC("uprobe")
int BPF_KPROBE(tls_gnutls_send, void *session, const void *data)
{
	return tls_enter((__u64)session, data, NULL, HEPBPF_SRC_GNUTLS_SEND);
}

SEC("uprobe")
int BPF_KPROBE(tls_gnutls_recv, void *session, void *data)
{
	return tls_enter((__u64)session, data, NULL, HEPBPF_SRC_GNUTLS_RECV);
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_gnutls_ret, long ret)
{
	return tls_exit(ret);
}
