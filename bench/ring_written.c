// For `npm run bench`: the bytes a BPF ring buffer has taken since it was made, that is its
// producer position (each record with its 8-byte header, padded to 8 bytes; failed outputs not
// counted). It maps the producer's page read-only (a BPF_F_RDONLY fd cannot be mapped at all),
// never the consumer's.
//   ring_written MAP_ID
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	union bpf_attr attr;
	long page = sysconf(_SC_PAGESIZE);
	volatile unsigned long *producer;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MAP_ID\n", argv[0]);
		return 2;
	}
	memset(&attr, 0, sizeof(attr));
	attr.map_id = atoi(argv[1]);
	fd = syscall(SYS_bpf, BPF_MAP_GET_FD_BY_ID, &attr, sizeof(attr));
	if (fd < 0) {
		perror("BPF_MAP_GET_FD_BY_ID");
		return 1;
	}
	/* page 0: consumer position, page 1: producer position, then the data */
	producer = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, page);
	if (producer == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	printf("%lu\n", *producer);
	return 0;
}
