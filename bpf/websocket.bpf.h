/* SPDX-License-Identifier: GPL-2.0 */
/*
 * SIP over WebSocket (RFC 7118): a TCP or TLS connection whose first payload
 * is an HTTP GET with a Sec-WebSocket-Protocol header offering "sip" is marked
 * HEPBPF_L7_WEBSOCKET, so its handshake, the 101 answer and every frame after
 * reach userspace (src/stream/websocket-framer.ts), which checks the handshake
 * in full and unmasks the frames. Only a first payload starting "GET " is
 * scanned, up to the end of its header block or WS_SCAN_BYTES.
 *
 * Included by hepbpf.bpf.c after gather_step().
 */
#ifndef WEBSOCKET_BPF_H
#define WEBSOCKET_BPF_H

#define WS_SCAN_BYTES 2048 /* header bytes of a GET looked at for Sec-WebSocket-Protocol */
#define FOLD 0x2020202020202020ULL /* ASCII letters to lower case (and '-', ':' unchanged) */

struct ws_scan {
	__u32 n; /* bytes gathered into scratch */
	bool in_value; /* inside the value of Sec-WebSocket-Protocol */
	bool found;
};

static __always_inline bool ws_delim(__u8 c)
{
	return c == ' ' || c == '\t' || c == ',' || c == ':' || c == '\r' || c == '\n';
}

/* One byte of the header block: a line starting "sec-websocket-protocol:" (any
 * case) opens a value, CR or LF closes it, and "sip" as a whole token in it is
 * what we look for. */
static int ws_scan_step(__u32 i, void *arg)
{
	struct scratch_buf *s = scratch_slot();
	struct ws_scan *w = arg;
	const __u8 *d;

	if (!s || i + 4 > w->n)
		return 1;
	/* Masked so that the verifier sees every read inside the scratch buffer. */
	d = s->data + (i & (WS_SCAN_BYTES - 1));
	if (d[0] == '\n') {
		const __u64 *name = (const __u64 *)(d + 1);

		if (d[1] == '\r')
			return 1; /* end of the header block */
		w->in_value = i + 28 <= w->n && (name[0] | FOLD) == STR8('s', 'e', 'c', '-', 'w', 'e', 'b', 's') &&
			      (name[1] | FOLD) == STR8('o', 'c', 'k', 'e', 't', '-', 'p', 'r') &&
			      ((name[2] | FOLD) & MASK(7)) == STR8('o', 't', 'o', 'c', 'o', 'l', ':', 0);
		return 0;
	}
	if (d[0] == '\r') {
		w->in_value = false;
	} else if (w->in_value && d[0] == 's' && d[1] == 'i' && d[2] == 'p' && ws_delim(d[3]) &&
		   ws_delim(s->data[(i - 1) & (WS_SCAN_BYTES - 1)])) {
		w->found = true;
		return 1;
	}
	return 0;
}

/* Does the payload start "GET "? n: how many bytes at d are valid. */
static __always_inline bool looks_like_get(const __u8 *d, __u32 n)
{
	return n >= 4 && d[0] == 'G' && d[1] == 'E' && d[2] == 'T' && d[3] == ' ';
}

/* Does m, a payload starting "GET ", offer the sip subprotocol? Gathers up to
 * WS_SCAN_BYTES of it into scratch (the same bytes emit() goes on gathering).
 * Global, so the verifier checks it once and apart from emit(). */
__noinline int ws_sip_upgrade(const struct sock_msg *m)
{
	struct gather g = {};
	struct ws_scan w = {};

	if (!m)
		return 0;
	gather_init(&g, m);
	g.limit = m->orig_len < WS_SCAN_BYTES ? m->orig_len : WS_SCAN_BYTES;
	bpf_loop(GATHER_STEPS, gather_step, &g, 0);
	if (g.fault)
		return 0;
	w.n = g.off;
	bpf_loop(WS_SCAN_BYTES, ws_scan_step, &w, 0);
	return w.found;
}

#endif
