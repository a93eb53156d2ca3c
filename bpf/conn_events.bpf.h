/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Connection events of the TCP connections that carry SIP or Diameter, in the
 * clear or in TLS (included by hepbpf.bpf.c after the maps it uses):
 * - connect and accept: every TCP connection's establishment is remembered
 *   (tcp_opens, LRU); the event is sent once the connection is known to carry
 *   SIP/Diameter, dated by how long ago it was established, so no other
 *   connection costs a record;
 * - close: sent when such a connection (or the TLS connection on it) leaves
 *   ESTABLISHED (its first FIN, sent or received, or a reset);
 * - TLS handshake failure: SSL_do_handshake, SSL_connect, SSL_accept and
 *   gnutls_handshake are probed like SSL_read (entry + return, tls_calls); a
 *   connection that starts closing while its last handshake return was not a
 *   completed handshake (a non-blocking WANT_READ is followed by a later return of 1)
 *   gets an event with that return. OpenSSL returns only 0 or -1 there (the
 *   reason is in its error queue, which a probe cannot read); GnuTLS returns
 *   its error code.
 */

struct tcp_open {
	__u64 ts_ns;
	__u8 accepted; /* passive open (SYN_RECV -> ESTABLISHED), else active */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tcp_open);
} tcp_opens SEC(".maps");

static __always_inline bool carries_ours(__u8 l7)
{
	return l7 == HEPBPF_L7_SIP || l7 == HEPBPF_L7_DIAMETER;
}

/* The connection on sk was just found to carry SIP or Diameter: its connect or accept event. */
static __always_inline void conn_carries_ours(struct sock *sk, __u64 tls_id)
{
	__u64 key = (__u64)sk, ago;
	struct tcp_open *open = bpf_map_lookup_elem(&tcp_opens, &key);

	if (!open)
		return;
	ago = (bpf_ktime_get_ns() - open->ts_ns) / 1000;
	struct notice n = { .sk = sk, .tls_id = tls_id, .code = ago > 0xffffffff ? 0xffffffff : ago,
			    .source = open->accepted ? HEPBPF_SRC_TCP_ACCEPT : HEPBPF_SRC_TCP_CONNECT };

	emit_notice(&n);
	bpf_map_delete_elem(&tcp_opens, &key);
}

/* A TCP state change, before tcp_state() forgets what sk carried: the
 * establishment is remembered; leaving ESTABLISHED (the first FIN either way,
 * or a reset) is the connection's close, while its ports are still set. */
static __always_inline void conn_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u64 key = (__u64)sk;
	struct tcp_open *open;
	struct sock_l7 *known;
	struct tls_key *tls;
	struct tls_conn *c;
	__u32 side;

	if (ctx->newstate == TCP_ESTABLISHED) {
		struct tcp_open fresh = { .ts_ns = bpf_ktime_get_ns(), .accepted = ctx->oldstate == TCP_SYN_RECV };

		if (ctx->oldstate == TCP_SYN_SENT || ctx->oldstate == TCP_SYN_RECV)
			bpf_map_update_elem(&tcp_opens, &key, &fresh, BPF_ANY);
		return;
	}
	open = bpf_map_lookup_elem(&tcp_opens, &key);
	side = open ? (open->accepted ? HEPBPF_TLS_SIDE_ACCEPTED : HEPBPF_TLS_SIDE_CONNECTED) : 0;
	if (ctx->newstate == TCP_CLOSE)
		bpf_map_delete_elem(&tcp_opens, &key);
	if (ctx->oldstate != TCP_ESTABLISHED)
		return;
	known = bpf_map_lookup_elem(&sock_l7, &key);
	tls = bpf_map_lookup_elem(&tls_socks, &key);
	c = tls ? bpf_map_lookup_elem(&tls_conns, tls) : NULL;
	/* The tracepoint's ports: a reset socket's own local port is already released. */
	struct notice n = { .sk = sk, .local_port = ctx->sport, .remote_port = ctx->dport };

	if (c && c->handshake_fn) {
		n.tls_id = tls->conn;
		n.code = c->handshake_ret;
		n.aux = c->handshake_fn | side;
		n.source = HEPBPF_SRC_TLS_HANDSHAKE_FAILED;
	} else if (c ? carries_ours(c->l7.l7) : known && carries_ours(known->l7)) {
		n.tls_id = tls ? tls->conn : 0;
		n.source = HEPBPF_SRC_TCP_CLOSE;
	} else {
		return;
	}
	emit_notice(&n);
}

/* Entry of a handshake function: remembered like a TLS read (the peer's flight
 * was read just before, which names the socket of a memory-BIO connection).
 * SSL_connect and SSL_accept call SSL_do_handshake: the outer function is kept. */
static __always_inline int tls_handshake_enter(__u64 conn, __u8 fn, __u8 read_source)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tls_call *call = bpf_task_storage_get(&tls_calls, task, NULL, 0);

	if (call && call->conn == conn && call->handshake_fn)
		return 0;
	tls_enter(conn, NULL, NULL, read_source);
	call = bpf_task_storage_get(&tls_calls, task, NULL, 0);
	if (call && call->conn == conn)
		call->handshake_fn = fn;
	return 0;
}

/* Return of a handshake function of connection conn (the call in): completed (OpenSSL 1, GnuTLS 0) or not. */
static __always_inline int tls_handshake_exit(__u32 tgid, __u64 conn, struct tls_call *in, long ret)
{
	bool done = in->handshake_fn == HEPBPF_TLS_FN_GNUTLS_HANDSHAKE ? ret == 0 : ret == 1;
	struct tls_conn *c = tls_conn_of(tgid, conn);

	if (!c)
		return 0;
	tls_fd_seen(in, conn, c);
	if (in->sk)
		tls_conn_learnt(tgid, conn, c, in->sk, true);
	c->handshake_fn = done ? 0 : in->handshake_fn;
	c->handshake_ret = ret;
	return 0;
}
