// Per-operation cost for `npm run bench`, over one TCP connection on 127.0.0.1 inside this process:
// prints the mean wall-clock ns and the mean CPU ns (user + system, this process) of one operation
// over ITER loops (after a warm-up of ITER/10). The CPU time is what the probes cost the
// application itself; on a busy machine the wall clock also carries other processes' load.
//   tls_cost ssl ITER CERT KEY   SSL_write of a 1 KiB SIP message on one end + SSL_read of it on the
//                                other (OpenSSL, TLS 1.3, socket BIO)
//   tls_cost ssl ITER CERT KEY RATE  the same pair, RATE pairs a second: prints the mean CPU time of
//                                the calling thread per pair (see paced_cpu_ns())
//   tls_cost tcp ITER            write + read of 1 KiB that is not SIP, no TLS (an unrelated TCP user)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "loopback.h"

#define MSG_SIZE 1024

static double cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

static void die(const char *what)
{
	perror(what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

/* A connected pair: *client -> *server over 127.0.0.1. */
static void tcp_pair(int *client, int *server)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);

	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&a, &len))
		die("listen");
	*client = socket(AF_INET, SOCK_STREAM, 0);
	if (*client < 0 || connect(*client, (struct sockaddr *)&a, sizeof(a)))
		die("connect");
	*server = accept(lfd, NULL, NULL);
	if (*server < 0)
		die("accept");
	setsockopt(*client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(lfd);
}

static void fill_sip(char *msg)
{
	int n = snprintf(msg, MSG_SIZE,
			 "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK-bench\r\n"
			 "Call-ID: tls-bench\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: ");
	int body = MSG_SIZE - n - 8;

	n += snprintf(msg + n, MSG_SIZE - n, "%4d\r\n\r\n", body);
	memset(msg + n, 'x', MSG_SIZE - n);
}

/* Both ends handshake in turns on non-blocking sockets, then go back to blocking. */
static void handshake(SSL *c, SSL *s, int cfd, int sfd)
{
	int done_c = 0, done_s = 0;

	fcntl(cfd, F_SETFL, O_NONBLOCK);
	fcntl(sfd, F_SETFL, O_NONBLOCK);
	for (int i = 0; (!done_c || !done_s) && i < 100000; i++) {
		if (!done_c && SSL_do_handshake(c) == 1)
			done_c = 1;
		if (!done_s && SSL_do_handshake(s) == 1)
			done_s = 1;
	}
	if (!done_c || !done_s)
		die("handshake");
	fcntl(cfd, F_SETFL, 0);
	fcntl(sfd, F_SETFL, 0);
}

/* Prints the mean wall and CPU ns of op(ctx) over iter calls, after iter/10 warm-up calls. */
static void print_mean_ns(long iter, void (*op)(void *), void *ctx)
{
	double t0 = 0, c0 = 0;

	for (long i = -iter / 10; i < iter; i++) {
		if (i == 0) {
			t0 = now_ns();
			c0 = cpu_ns();
		}
		op(ctx);
	}
	printf("%.1f %.1f\n", (now_ns() - t0) / iter, (cpu_ns() - c0) / iter);
}

struct ssl_pair {
	SSL *client, *server;
	char msg[MSG_SIZE], in[MSG_SIZE];
};

static void ssl_op(void *ctx)
{
	struct ssl_pair *p = ctx;

	if (SSL_write(p->client, p->msg, MSG_SIZE) != MSG_SIZE)
		die("SSL_write");
	for (int got = 0; got < MSG_SIZE;) {
		int n = SSL_read(p->server, p->in + got, MSG_SIZE - got);

		if (n <= 0)
			die("SSL_read");
		got += n;
	}
}

/* rate 0: as fast as one thread goes, wall and CPU; else paced at rate pairs a second, thread CPU. */
static void ssl_cost(long iter, const char *cert, const char *key, long rate)
{
	SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
	struct ssl_pair p;
	int cfd, sfd;

	if (!sctx || !cctx || SSL_CTX_use_certificate_file(sctx, cert, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM) != 1)
		die("ssl ctx");
	tcp_pair(&cfd, &sfd);
	p.client = SSL_new(cctx);
	p.server = SSL_new(sctx);
	SSL_set_fd(p.client, cfd);
	SSL_set_fd(p.server, sfd);
	SSL_set_connect_state(p.client);
	SSL_set_accept_state(p.server);
	handshake(p.client, p.server, cfd, sfd);
	fill_sip(p.msg);
	if (rate)
		printf("%.1f\n", paced_cpu_ns(iter, rate, ssl_op, &p));
	else
		print_mean_ns(iter, ssl_op, &p);
}

struct tcp_pair {
	int client, server;
	char msg[MSG_SIZE], in[MSG_SIZE];
};

static void tcp_op(void *ctx)
{
	struct tcp_pair *p = ctx;

	if (write(p->client, p->msg, MSG_SIZE) != MSG_SIZE)
		die("write");
	for (int got = 0; got < MSG_SIZE;) {
		ssize_t n = read(p->server, p->in + got, MSG_SIZE - got);

		if (n <= 0)
			die("read");
		got += n;
	}
}

static void tcp_cost(long iter)
{
	struct tcp_pair p;

	memset(p.msg, 0xa5, sizeof(p.msg));
	tcp_pair(&p.client, &p.server);
	print_mean_ns(iter, tcp_op, &p);
}

int main(int argc, char **argv)
{
	long iter = argc > 2 ? atol(argv[2]) : 0;

	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "ssl") && iter > 0)
		ssl_cost(iter, argv[3], argv[4], argc == 6 ? atol(argv[5]) : 0);
	else if (argc == 3 && !strcmp(argv[1], "tcp") && iter > 0)
		tcp_cost(iter);
	else {
		fprintf(stderr, "usage: tls_cost ssl ITER CERT KEY [RATE] | tls_cost tcp ITER\n");
		return 2;
	}
	return 0;
}
