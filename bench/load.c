// Load and syscall-cost generator for `npm run bench`. All traffic stays on 127.0.0.1.
//   load pair ITER PORT         ns per SIP sendto + recvfrom pair (800-byte message)
//   load write ITER             ns per unrelated 800-byte write() to /dev/null
//   load junk ITER PORT         ns per unrelated 800-byte non-SIP UDP sendto
//   load flood RATE SECS PORT   paced 800-byte SIP messages; prints "sent N received M"
//   load hepcount udp|tcp PORT  counts HEP packets until SIGTERM; prints the count
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define MSG_SIZE 800

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int udp_bound(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0), big = 32 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a))) {
		perror("bind");
		exit(1);
	}
	return fd;
}

/* An 800-byte SIP MESSAGE whose Call-ID carries n, padded with body bytes. */
static int sip_message(char *buf, long n, int port)
{
	char head[400];
	int body, len = snprintf(head, sizeof(head),
				 "MESSAGE sip:bench@127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-%ld\r\n"
				 "From: <sip:load@127.0.0.1>;tag=b%ld\r\nTo: <sip:bench@127.0.0.1>\r\nCall-ID: bench-%ld@127.0.0.1\r\n"
				 "CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: %3d\r\n\r\n",
				 port, n, n, n, 0);
	body = MSG_SIZE - len;
	len = snprintf(head, sizeof(head),
		       "MESSAGE sip:bench@127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-%ld\r\n"
		       "From: <sip:load@127.0.0.1>;tag=b%ld\r\nTo: <sip:bench@127.0.0.1>\r\nCall-ID: bench-%ld@127.0.0.1\r\n"
		       "CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: %3d\r\n\r\n",
		       port, n, n, n, body);
	memcpy(buf, head, len);
	memset(buf + len, 'x', body);
	return MSG_SIZE;
}

static struct sockaddr_in to_port(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	return a;
}

static volatile long received;
static volatile int flood_done;

static void *receiver(void *arg)
{
	int fd = *(int *)arg;
	char buf[2048];
	struct timeval tv = { 0, 200000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0)
			received++;
		else if (flood_done)
			return NULL;
	}
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

/* Prints the running count every 200 ms so the caller can tell when delivery has settled. */
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

static long hepcount(const char *proto, int port)
{
	struct timeval tv = { 0, 200000 };
	struct sockaddr_in a = to_port(port);
	long count = 0;
	static char buf[1 << 20];
	signal(SIGTERM, on_term);
	struct sigaction sa = { .sa_handler = on_term };
	sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: blocking reads return EINTR */
	if (!strcmp(proto, "udp")) {
		int fd = udp_bound(port);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		printf("ready\n");
		fflush(stdout);
		while (!stop) {
			if (recv(fd, buf, sizeof(buf), 0) > 0)
				count++;
			progress(count);
		}
		return count;
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 4)) {
		perror("listen");
		exit(1);
	}
	printf("ready\n");
	fflush(stdout);
	int c = accept(ls, NULL, NULL);
	size_t have = 0;
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (!stop && c >= 0) {
		ssize_t n = read(c, buf + have, sizeof(buf) - have);
		progress(count);
		if (n < 0)
			continue;
		if (n == 0)
			break;
		have += n;
		size_t off = 0;
		while (have - off >= 6) {
			size_t len = ((unsigned char)buf[off + 4] << 8) | (unsigned char)buf[off + 5];
			if (len < 6 || have - off < len)
				break;
			off += len;
			count++;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	return count;
}

int main(int argc, char **argv)
{
	static char msg[MSG_SIZE];
	if (argc < 3)
		return 2;
	const char *mode = argv[1];
	if (!strcmp(mode, "hepcount")) {
		printf("%ld\n", hepcount(argv[2], atoi(argv[3])));
		return 0;
	}
	long iter = atol(argv[2]);
	if (!strcmp(mode, "write")) {
		int fd = open("/dev/null", O_WRONLY);
		memset(msg, 'w', sizeof(msg));
		double t0 = now_ns();
		for (long i = 0; i < iter; i++)
			write(fd, msg, sizeof(msg));
		printf("%.1f\n", (now_ns() - t0) / iter);
		return 0;
	}
	int port = atoi(argv[argc - 1]);
	int rx = udp_bound(port), tx = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in dst = to_port(port);
	if (!strcmp(mode, "pair") || !strcmp(mode, "junk")) {
		char in[2048];
		int sip = !strcmp(mode, "pair");
		if (sip)
			sip_message(msg, 0, port);
		else
			memset(msg, 'j', sizeof(msg));
		double t0 = now_ns();
		for (long i = 0; i < iter; i++) {
			sendto(tx, msg, sizeof(msg), 0, (struct sockaddr *)&dst, sizeof(dst));
			if (sip)
				recvfrom(rx, in, sizeof(in), 0, NULL, NULL);
			else if ((i & 63) == 63)
				while (recv(rx, in, sizeof(in), MSG_DONTWAIT) > 0) /* keep the buffer from filling */
					;
		}
		printf("%.1f\n", (now_ns() - t0) / iter);
		return 0;
	}
	if (!strcmp(mode, "flood")) {
		long rate = atol(argv[2]), secs = atol(argv[3]), sent = 0, total = rate * secs;
		pthread_t th;
		pthread_create(&th, NULL, receiver, &rx);
		double t0 = now_ns();
		while (sent < total) {
			/* pace in 1 ms slots: send what the schedule owes, then wait */
			long due = (long)((now_ns() - t0) / 1e9 * rate) + 1;
			for (; sent < due && sent < total; sent++) {
				sip_message(msg, sent, port);
				sendto(tx, msg, sizeof(msg), 0, (struct sockaddr *)&dst, sizeof(dst));
			}
			while ((long)((now_ns() - t0) / 1e9 * rate) + 1 <= sent && sent < total)
				;
		}
		usleep(300000);
		flood_done = 1;
		pthread_join(th, NULL);
		printf("sent %ld received %ld\n", sent, received);
		return 0;
	}
	return 2;
}
