// What the bench's C helpers share: a monotonic clock in ns and 127.0.0.1 addresses.
#ifndef HEPBPF_BENCH_LOOPBACK_H
#define HEPBPF_BENCH_LOOPBACK_H

#include <arpa/inet.h>
#include <time.h>

static inline double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static inline struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a = {
		.sin_family = AF_INET,
		.sin_port = htons(port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	return a;
}

#endif
