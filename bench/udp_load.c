// SIP load and HEP counting for `npm run bench`. All traffic stays on 127.0.0.1.
//   udp_load flood RATE SECS PORT [udp|tcp]
//                                     one process sends RATE 800-byte SIP messages/s for SECS s
//                                     (paced in 1 ms slots, a unique Call-ID each) to a second
//                                     process that counts them; UDP (default): sendto, recvfrom;
//                                     TCP: one connection, a write per message, reads of up to
//                                     64 KiB (as a SIP server reads); prints
//                                     "sent N received M failed F seconds S"
//   udp_load hepcount udp|tcp PORT    counts HEP packets (TCP: by the HEP3 length field) until
//                                     SIGTERM; prints the running count every 200 ms, the final
//                                     count last
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "loopback.h"

#define MSG_SIZE 800

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

/* No SA_RESTART: a blocking recv/accept returns EINTR so the loop sees the flag. */
static void stop_on(int sig)
{
	struct sigaction sa = { .sa_handler = on_stop };

	sigaction(sig, &sa, NULL);
}

/* A receive buffer big enough that a short stall of the reader loses nothing: the bench
 * measures the agent, not the default rmem_max. */
static void big_rcvbuf(int fd)
{
	int size = 32 << 20;

	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

static void recv_timeout(int fd, long us)
{
	struct timeval tv = { us / 1000000, us % 1000000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int bound(int type, int port)
{
	struct sockaddr_in a = loopback(port);
	int fd = socket(AF_INET, type, 0), one = 1;

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a))) {
		perror("bind");
		exit(1);
	}
	big_rcvbuf(fd);
	return fd;
}

/* An 800-byte SIP MESSAGE whose branch, tag, Call-ID and CSeq carry a 10-digit sequence
 * number, patched in place per message (formatting each one would cost the sender more
 * than its sendto). */
struct sip_template {
	char msg[MSG_SIZE];
	int seq_at[4];
};

static void sip_template_init(struct sip_template *t, int port, const char *transport)
{
	static const char *const before_seq[4] = { "z9hG4bK-", "tag=l", "Call-ID: load-", "CSeq: " };
	const char *fmt = "MESSAGE sip:bench@127.0.0.1:%05d SIP/2.0\r\n"
			  "Via: SIP/2.0/%s 127.0.0.1;branch=z9hG4bK-0000000000\r\n"
			  "From: <sip:load@127.0.0.1>;tag=l0000000000\r\nTo: <sip:bench@127.0.0.1>\r\n"
			  "Call-ID: load-0000000000@127.0.0.1\r\nCSeq: 0000000000 MESSAGE\r\n"
			  "Content-Type: text/plain\r\nContent-Length: %03d\r\n\r\n";
	char head[512];
	int len, i;

	/* the header length does not depend on the 3-digit Content-Length: measure, then fill */
	len = snprintf(head, sizeof(head), fmt, port, transport, 0);
	snprintf(head, sizeof(head), fmt, port, transport, MSG_SIZE - len);
	memcpy(t->msg, head, len);
	memset(t->msg + len, 'x', MSG_SIZE - len);
	for (i = 0; i < 4; i++)
		t->seq_at[i] = strstr(head, before_seq[i]) - head + strlen(before_seq[i]);
}

static void sip_template_number(struct sip_template *t, long n)
{
	char digits[10];
	int i;

	for (i = 9; i >= 0; i--, n /= 10)
		digits[i] = '0' + n % 10;
	for (i = 0; i < 4; i++)
		memcpy(t->msg + t->seq_at[i], digits, 10);
}

/* The receiving process: counts datagrams until told to stop, then drains what is queued. */
static long receive_datagrams(int fd)
{
	static char in[2048];
	struct sockaddr_in from;
	socklen_t fromlen;
	long received = 0;

	recv_timeout(fd, 200000);
	for (;;) {
		fromlen = sizeof(from);
		if (recvfrom(fd, in, sizeof(in), stop ? MSG_DONTWAIT : 0, (struct sockaddr *)&from,
			     &fromlen) > 0)
			received++;
		else if (stop && (errno == EAGAIN || errno == EWOULDBLOCK))
			return received;
	}
}

/* The receiving end of a TCP flood: one connection, read until the sender closes it; whole messages. */
static long receive_stream(int ls)
{
	static char in[65535];
	long bytes = 0;
	ssize_t n;
	int c = accept(ls, NULL, NULL);

	if (c < 0)
		return -1;
	while ((n = read(c, in, sizeof(in))) != 0)
		if (n > 0)
			bytes += n;
		else if (errno != EINTR)
			return -1;
	return bytes / MSG_SIZE;
}

static int flood(long rate, long secs, int port, int type)
{
	static struct sip_template sip;
	struct sockaddr_in dst = loopback(port);
	int rx = bound(type, port), result[2], one = 1;
	long total = rate * secs, sent = 0, failed = 0, received = 0, slot;
	struct timespec start, wake;
	pid_t child;

	if (pipe(result) || (type == SOCK_STREAM && listen(rx, 1))) {
		perror("pipe/listen");
		return 1;
	}
	stop_on(SIGTERM);
	child = fork();
	if (child == 0) {
		received = type == SOCK_STREAM ? receive_stream(rx) : receive_datagrams(rx);
		write(result[1], &received, sizeof(received));
		_exit(0);
	}
	close(rx);

	int tx = socket(AF_INET, type, 0);
	if (type == SOCK_STREAM) {
		/* a segment per message, as a SIP server sends them */
		setsockopt(tx, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(tx, (struct sockaddr *)&dst, sizeof(dst))) {
			perror("connect");
			return 1;
		}
	}
	sip_template_init(&sip, port, type == SOCK_STREAM ? "TCP" : "UDP");
	clock_gettime(CLOCK_MONOTONIC, &start);
	double t0 = now_ns();
	for (slot = 1; sent + failed < total && !stop; slot++) {
		long due = rate * slot / 1000;

		for (; sent + failed < due && sent + failed < total;) {
			sip_template_number(&sip, sent + failed);
			if (sendto(tx, sip.msg, MSG_SIZE, 0, type == SOCK_STREAM ? NULL : (struct sockaddr *)&dst,
				   type == SOCK_STREAM ? 0 : sizeof(dst)) == MSG_SIZE)
				sent++;
			else
				failed++;
		}
		/* sleep to the start of the next 1 ms slot: the sender leaves the CPU to others */
		wake.tv_sec = start.tv_sec + slot / 1000;
		wake.tv_nsec = start.tv_nsec + (slot % 1000) * 1000000L;
		if (wake.tv_nsec >= 1000000000L) {
			wake.tv_sec++;
			wake.tv_nsec -= 1000000000L;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &wake, NULL);
	}
	double seconds = (now_ns() - t0) / 1e9;

	if (type == SOCK_STREAM) {
		close(tx); /* the receiver reads to the end */
	} else {
		usleep(100000); /* let loopback softirq work queued behind the last send finish */
		kill(child, SIGTERM);
	}
	if (read(result[0], &received, sizeof(received)) != sizeof(received))
		received = -1;
	waitpid(child, NULL, 0);
	printf("sent %ld received %ld failed %ld seconds %.3f\n", sent, received, failed, seconds);
	return 0;
}

static void progress(long count)
{
	static double last;
	double t = now_ns();

	if (t - last >= 2e8) {
		last = t;
		printf("%ld\n", count);
		fflush(stdout);
	}
}

/* Counts whole HEP3 packets in a TCP stream: bytes 4-5 of each are its total length. */
static void count_stream(int c, long *count)
{
	static char buf[1 << 20];
	size_t have = 0, off, len;
	ssize_t n;

	recv_timeout(c, 200000);
	while (!stop) {
		n = read(c, buf + have, sizeof(buf) - have);
		progress(*count);
		if (n == 0)
			return;
		if (n < 0)
			continue;
		have += n;
		for (off = 0; have - off >= 6; off += len, (*count)++) {
			len = ((unsigned char)buf[off + 4] << 8) | (unsigned char)buf[off + 5];
			if (len < 6) {
				fprintf(stderr, "hepcount: bad HEP length %zu\n", len);
				exit(1);
			}
			if (have - off < len)
				break;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
}

static long hepcount(const char *proto, int port)
{
	static char buf[1 << 16];
	long count = 0;

	stop_on(SIGTERM);
	if (!strcmp(proto, "udp")) {
		int fd = bound(SOCK_DGRAM, port);

		recv_timeout(fd, 200000);
		printf("ready\n");
		fflush(stdout);
		while (!stop) {
			if (recv(fd, buf, sizeof(buf), 0) > 0)
				count++;
			progress(count);
		}
		/* packets already queued when told to stop were delivered: count them */
		while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			count++;
		return count;
	}
	int ls = bound(SOCK_STREAM, port);

	if (listen(ls, 4)) {
		perror("listen");
		exit(1);
	}
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		int c = accept(ls, NULL, NULL); /* the agent reconnects after a failure: count on */

		if (c < 0)
			continue;
		count_stream(c, &count);
		close(c);
	}
	return count;
}

int main(int argc, char **argv)
{
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "flood"))
		return flood(atol(argv[2]), atol(argv[3]), atoi(argv[4]),
			     argc == 6 && !strcmp(argv[5], "tcp") ? SOCK_STREAM : SOCK_DGRAM);
	if (argc == 4 && !strcmp(argv[1], "hepcount")) {
		printf("%ld\n", hepcount(argv[2], atoi(argv[3])));
		return 0;
	}
	fprintf(stderr, "usage: %s flood RATE SECS PORT [udp|tcp] | hepcount udp|tcp PORT\n", argv[0]);
	return 2;
}
