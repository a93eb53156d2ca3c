// Per-operation cost for `npm run bench`: prints the mean ns of one operation over ITER loops
// (after a warm-up of ITER/10). All traffic stays on 127.0.0.1.
//   syscall_cost pair ITER PORT    SIP sendto + recvfrom of one 800-byte SIP message
//   syscall_cost write ITER        unrelated 800-byte write() to /dev/null
//   syscall_cost junk ITER PORT    unrelated 800-byte non-SIP UDP sendto to a socket never read
//   syscall_cost paced ITER PORT RATE  the pair, RATE pairs a second: the mean CPU time of the
//                                  calling thread per pair (the application's own cost, at a
//                                  load the agent keeps up with, where the unpaced pair measures
//                                  the agent's overload on the machine's other cores)
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "loopback.h"

#define MSG_SIZE 800

static int udp_bound(int port)
{
	struct sockaddr_in a = loopback(port);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a))) {
		perror("bind");
		exit(1);
	}
	return fd;
}

/* An 800-byte SIP MESSAGE: headers, then a body that fills the rest. */
static void sip_message(char *buf, int port)
{
	const char *fmt = "MESSAGE sip:bench@127.0.0.1:%05d SIP/2.0\r\n"
			  "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-cost\r\n"
			  "From: <sip:cost@127.0.0.1>;tag=c1\r\nTo: <sip:bench@127.0.0.1>\r\n"
			  "Call-ID: cost-1@127.0.0.1\r\nCSeq: 1 MESSAGE\r\n"
			  "Content-Type: text/plain\r\nContent-Length: %03d\r\n\r\n";
	char head[512];
	/* the header length does not depend on the 3-digit Content-Length: measure, then fill */
	int len = snprintf(head, sizeof(head), fmt, port, 0);

	snprintf(head, sizeof(head), fmt, port, MSG_SIZE - len);
	memcpy(buf, head, len);
	memset(buf + len, 'x', MSG_SIZE - len);
}

static void op_pair(int tx, int rx, const char *msg, const struct sockaddr_in *dst)
{
	static char in[2048];
	struct sockaddr_in from;
	socklen_t fromlen = sizeof(from);

	sendto(tx, msg, MSG_SIZE, 0, (const struct sockaddr *)dst, sizeof(*dst));
	recvfrom(rx, in, sizeof(in), 0, (struct sockaddr *)&from, &fromlen);
}

struct udp_pair {
	int tx, rx;
	const char *msg;
	struct sockaddr_in dst;
};

static void paced_pair(void *ctx)
{
	struct udp_pair *p = ctx;

	op_pair(p->tx, p->rx, p->msg, &p->dst);
}

int main(int argc, char **argv)
{
	static char msg[MSG_SIZE];
	const char *mode;
	long iter, i;
	double t0 = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: %s pair|write|junk ITER [PORT]\n", argv[0]);
		return 2;
	}
	mode = argv[1];
	iter = atol(argv[2]);

	if (!strcmp(mode, "write")) {
		int fd = open("/dev/null", O_WRONLY);

		memset(msg, 'w', sizeof(msg));
		for (i = -iter / 10; i < iter; i++) {
			if (i == 0)
				t0 = now_ns();
			write(fd, msg, sizeof(msg));
		}
	} else if (argc == 4 && (!strcmp(mode, "pair") || !strcmp(mode, "junk"))) {
		int port = atoi(argv[3]);
		int rx = udp_bound(port), tx = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in dst = loopback(port);

		if (!strcmp(mode, "pair")) {
			sip_message(msg, port);
			for (i = -iter / 10; i < iter; i++) {
				if (i == 0)
					t0 = now_ns();
				op_pair(tx, rx, msg, &dst);
			}
		} else {
			/* Nobody reads rx: once its buffer is full the kernel drops each datagram
			 * the same way with and without the agent. */
			memset(msg, 'j', sizeof(msg));
			for (i = -iter / 10; i < iter; i++) {
				if (i == 0)
					t0 = now_ns();
				sendto(tx, msg, sizeof(msg), 0, (struct sockaddr *)&dst, sizeof(dst));
			}
		}
	} else if (argc == 5 && !strcmp(mode, "paced")) {
		int port = atoi(argv[3]);
		struct udp_pair p = { .tx = socket(AF_INET, SOCK_DGRAM, 0), .rx = udp_bound(port), .msg = msg, .dst = loopback(port) };

		sip_message(msg, port);
		printf("%.1f\n", paced_cpu_ns(iter, atol(argv[4]), paced_pair, &p));
		return 0;
	} else {
		fprintf(stderr, "usage: %s pair|write|junk ITER [PORT] | paced ITER PORT RATE\n", argv[0]);
		return 2;
	}
	printf("%.1f\n", (now_ns() - t0) / iter);
	return 0;
}
