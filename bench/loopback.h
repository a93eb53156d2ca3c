// What the bench's C helpers share: a monotonic clock in ns, 127.0.0.1 addresses and the paced loop.
#ifndef HEPBPF_BENCH_LOOPBACK_H
#define HEPBPF_BENCH_LOOPBACK_H

#include <arpa/inet.h>
#include <sys/prctl.h>
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

static inline double thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* The mean CPU time of the calling thread per op(ctx), called rate times a second iter times (after
 * iter/10 warm-up calls): the application's own cost at a load the agent keeps up with, where a loop
 * as fast as one thread goes also measures the agent's overload on the machine's other cores. */
static inline double paced_cpu_ns(long iter, long rate, void (*op)(void *), void *ctx)
{
	long interval = 1000000000L / rate;
	struct timespec next;
	double cpu = 0, c0;

	prctl(PR_SET_TIMERSLACK, 1UL);
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (long i = -iter / 10; i < iter; i++) {
		next.tv_nsec += interval;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		c0 = thread_cpu_ns();
		op(ctx);
		if (i >= 0)
			cpu += thread_cpu_ns() - c0;
	}
	return cpu / iter;
}

#endif
