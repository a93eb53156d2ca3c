// verifier_stats OBJ PROG...: loads each named program of OBJ alone (cfg zeroed) and prints the verifier's stats line; gcc -O2 -o verifier_stats verifier_stats.c -lbpf
#include <bpf/libbpf.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
static char logbuf[1 << 20];
static int quiet(enum libbpf_print_level l, const char *f, va_list a) { return 0; }
int main(int argc, char **argv) {
  libbpf_set_print(quiet);
  for (int i = 2; i < argc; i++) {
    struct bpf_object *o = bpf_object__open_file(argv[1], NULL);
    if (!o) { perror("open"); return 1; }
    struct bpf_program *p;
    bpf_object__for_each_program(p, o) {
      int me = !strcmp(bpf_program__name(p), argv[i]);
      bpf_program__set_autoload(p, me);
      if (me) { bpf_program__set_log_level(p, 4); bpf_program__set_log_buf(p, logbuf, sizeof logbuf); }
    }
    logbuf[0] = 0;
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    int err = bpf_object__load(o);
    clock_gettime(CLOCK_MONOTONIC, &b);
    char *line = strstr(logbuf, "processed");
    char *nl = line ? strchr(line, '\n') : NULL; if (nl) *nl = 0;
    if (err) { size_t L = strlen(logbuf); fputs(logbuf + (L > 1500 ? L - 1500 : 0), stdout); }
    printf("%-22s err=%d %.2fs %s\n", argv[i], err, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, line ? line : "(no stats)");
    bpf_object__close(o);
  }
  return 0;
}
