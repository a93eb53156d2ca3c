/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one record layout shared by the BPF programs and userspace.
 * src/capture/record.ts mirrors this file field by field: change both together.
 * Every field is little-endian, naturally aligned, no implicit padding.
 */
#ifndef HEPBPF_H
#define HEPBPF_H

/* Bytes of payload carried by one record. A syscall moving more is cut here and
 * flagged HEPBPF_F_TRUNCATED; orig_len keeps the real byte count. */
#define HEPBPF_MAX_DATA 65536

/* direction */
#define HEPBPF_DIR_EGRESS 0 /* this process sent the bytes */
#define HEPBPF_DIR_INGRESS 1 /* this process received the bytes */

/* l7: what in-kernel inference decided this socket carries */
#define HEPBPF_L7_UNKNOWN 0
#define HEPBPF_L7_SIP 1
#define HEPBPF_L7_DIAMETER 2
#define HEPBPF_L7_WEBSOCKET 3 /* SIP over WebSocket: the connection began with a GET offering the sip subprotocol */

/* source: the hook that produced the record */
#define HEPBPF_SRC_WRITE 1
#define HEPBPF_SRC_WRITEV 2
#define HEPBPF_SRC_SENDTO 3
#define HEPBPF_SRC_SENDMSG 4
#define HEPBPF_SRC_SENDMMSG 5
#define HEPBPF_SRC_READ 6
#define HEPBPF_SRC_READV 7
#define HEPBPF_SRC_RECVFROM 8
#define HEPBPF_SRC_RECVMSG 9
#define HEPBPF_SRC_RECVMMSG 10
/* TLS plaintext, from uprobes on the library (the data is what the application wrote or read) */
#define HEPBPF_SRC_SSL_WRITE 11 /* SSL_write, SSL_write_ex */
#define HEPBPF_SRC_SSL_READ 12 /* SSL_read, SSL_read_ex */
#define HEPBPF_SRC_GNUTLS_SEND 13 /* gnutls_record_send */
#define HEPBPF_SRC_GNUTLS_RECV 14 /* gnutls_record_recv */
/* Records without data that tell userspace something */
#define HEPBPF_SRC_TLS_CONN 15 /* the socket of TLS connection tls_id is now known: its addresses are in this record */
#define HEPBPF_SRC_EXEC 16 /* pid exec'd or mapped executable code: look for TLS libraries in it */
/* Connection events (bpf/conn_events.bpf.h), for TCP connections that carry SIP or Diameter
 * (in the clear or in TLS); orig_len and fd carry what the source says. */
#define HEPBPF_SRC_TCP_CONNECT 17 /* this socket connected: orig_len = microseconds since (record sent once it carried SIP/Diameter) */
#define HEPBPF_SRC_TCP_ACCEPT 18 /* this socket was accepted: the same */
#define HEPBPF_SRC_TCP_CLOSE 19 /* this socket closed */
#define HEPBPF_SRC_TLS_HANDSHAKE_FAILED 20 /* closed with its TLS handshake never completed: orig_len = the last
					  * return of the handshake function (s32), fd = HEPBPF_TLS_FN_* | HEPBPF_TLS_SIDE_* */

/* TLS handshake functions (fd of HEPBPF_SRC_TLS_HANDSHAKE_FAILED) */
#define HEPBPF_TLS_FN_SSL_DO_HANDSHAKE 1
#define HEPBPF_TLS_FN_SSL_CONNECT 2
#define HEPBPF_TLS_FN_SSL_ACCEPT 3
#define HEPBPF_TLS_FN_GNUTLS_HANDSHAKE 4
#define HEPBPF_TLS_SIDE_CONNECTED 0x100 /* this socket connected (0x100) or was accepted (0x200); neither: not seen */
#define HEPBPF_TLS_SIDE_ACCEPTED 0x200

/* flags */
#define HEPBPF_F_TRUNCATED 0x01 /* orig_len > data_len */
#define HEPBPF_F_NO_PEER 0x02 /* peer address unknown (e.g. recvfrom with NULL addr on unconnected UDP) */
#define HEPBPF_F_TLS 0x04 /* plaintext of the TLS connection tls_id */
#define HEPBPF_F_NO_CONN 0x08 /* TLS plaintext whose socket is not known (yet): addresses and ports are zero */
#define HEPBPF_F_COUNTERPART 0x10 /* receiver's copy of a local UDP datagram whose sender's copy was emitted (TCP: F_SEQ):
				   * header only (data_len 0, orig_len and msg_hash kept), it names the receiver */
#define HEPBPF_F_STREAM_START 0x20 /* first record of this TCP (or TLS) connection in this direction: a closed
				    * connection's socket address (sock_id) is reused by later ones, a new stream starts */
#define HEPBPF_F_SEQ 0x40 /* TCP, both ends on this host (bpf/local_copies.bpf.h): msg_hash is the sequence number
			   * of the first byte. A sender's record: userspace keeps its bytes for the receiver's. A receiver's
			   * with HEPBPF_F_COUNTERPART: header only (data_len 0), its bytes are those the sender's records carried */

/* Index into the "counters" per-CPU array map: every loss is counted. */
#define HEPBPF_CNT_RINGBUF_FULL 0 /* bpf_ringbuf_output failed: record lost */
#define HEPBPF_CNT_TRUNCATED 1 /* record cut at HEPBPF_MAX_DATA */
#define HEPBPF_CNT_READ_FAULT 2 /* user memory could not be read */
#define HEPBPF_CNT_EMITTED 3 /* records written to the ring buffer */
#define HEPBPF_CNT_INFLIGHT_FULL 4 /* no room to remember a syscall between enter and exit */
/* Receiver's copies of UDP datagrams (see bpf/local_copies.bpf.h) */
#define HEPBPF_CNT_RX_REDUCED 5 /* sent header only: the sender's record was emitted */
#define HEPBPF_CNT_RX_WHOLE 6 /* sent whole: no sender's record known (remote sender, lost, no peer address) */
/* Reads of local TCP connections (see bpf/local_copies.bpf.h) */
#define HEPBPF_CNT_TCP_RX_REDUCED 7 /* sent header only: the sender's records carried the bytes */
#define HEPBPF_CNT_TCP_RX_WHOLE 8 /* sent whole although the sender's records are kept: read before they were written, or not all */
#define HEPBPF_CNT_MAX 9

struct hepbpf_record {
	__u64 ts_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 cgroup_id; /* bpf_get_current_cgroup_id() */
	__u64 sock_id; /* identifies the socket for its lifetime (struct sock address); 0 if unknown */
	__u64 tls_id; /* TLS records: the library's connection object (SSL *, gnutls_session_t) in process pid; else 0 */
	__u32 pid; /* tgid */
	__u32 tid;
	__u32 orig_len; /* bytes the syscall moved for this message */
	__u32 data_len; /* bytes of data[] that follow, <= HEPBPF_MAX_DATA */
	__u8 direction; /* HEPBPF_DIR_* */
	__u8 family; /* AF_INET (2) or AF_INET6 (10) */
	__u8 ip_proto; /* IPPROTO_TCP (6), IPPROTO_UDP (17), IPPROTO_SCTP (132) */
	__u8 l7; /* HEPBPF_L7_* */
	__u8 source; /* HEPBPF_SRC_* */
	__u8 flags; /* HEPBPF_F_* */
	__u16 local_port; /* host byte order */
	__u16 remote_port; /* host byte order */
	__u16 _pad;
	__u32 fd;
	__u8 local_addr[16]; /* IPv4: first 4 bytes, rest zero */
	__u8 remote_addr[16];
	char comm[16];
	__u32 netns; /* inode of the socket's network namespace (loopback addresses are per namespace); 0 if unknown */
	__u32 msg_hash; /* UDP: hash of the first 512 payload bytes, the same in both copies of a datagram;
			 * TCP with HEPBPF_F_SEQ: sequence number of the first byte; else 0 */
	/* data[data_len] follows */
};
/* sizeof(struct hepbpf_record) == 120 */

/* Read-only configuration, set by userspace before load (.rodata). */
struct hepbpf_config {
	__u32 self_tgid; /* the agent's own pid: never captured */
	__u32 filter_ports; /* 1: only sockets with a port in the sip_ports map */
	__u32 wakeup_bytes; /* wake the reader once this much is waiting; it polls for less */
};

#endif
