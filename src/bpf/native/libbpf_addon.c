// SPDX-License-Identifier: MIT
/*
 * N-API binding to the system libbpf, used only through ../libbpf.ts, which
 * checks arguments and object lifetimes. Handles are externals:
 * object -> struct object_handle, link -> struct link_handle,
 * map -> struct bpf_map * (valid while its object is open),
 * ring buffer -> struct reader.
 * openInRoot() is here too: Node has no openat2.
 *
 * The ring buffer is drained by a native thread into pooled batches; JS gets
 * one call per batch. Batch framing, per record:
 *   u32 size (LE), u32 0, size bytes, zero padding to a multiple of 8.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <link.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <node_api.h>
#include <bpf/libbpf.h>
#include <capstone/capstone.h>

#define LOG_CAP 16384 /* tail of libbpf warnings kept for error messages */
#define LOG_LINES 40 /* lines of that tail put into an error message */
#define POOL_SIZE 4 /* batches in flight: draining + queued for JS + being read by JS */

/* ---------------------------------------------------------------- errors */

/* libbpf warnings go to stderr, except while a call that can fail is running:
 * then they are kept so that the thrown error carries them (the verifier log
 * explains a failed load far better than an errno). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static bool log_capturing;
static char log_buf[LOG_CAP];
static size_t log_len;

static void log_append(const char *s, size_t n)
{
	if (n >= LOG_CAP) {
		s += n - (LOG_CAP - 1);
		n = LOG_CAP - 1;
	}
	if (log_len + n > LOG_CAP - 1) {
		size_t drop = log_len + n - (LOG_CAP - 1);
		memmove(log_buf, log_buf + drop, log_len - drop);
		log_len -= drop;
	}
	memcpy(log_buf + log_len, s, n);
	log_len += n;
	log_buf[log_len] = '\0';
}

static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list args)
{
	char *line;
	int n;

	if (level != LIBBPF_WARN)
		return 0;
	pthread_mutex_lock(&log_lock);
	if (log_capturing) {
		n = vasprintf(&line, fmt, args);
		if (n > 0) {
			log_append(line, n);
			free(line);
		}
	} else {
		n = vfprintf(stderr, fmt, args);
	}
	pthread_mutex_unlock(&log_lock);
	return n;
}

static void capture_begin(void)
{
	pthread_mutex_lock(&log_lock);
	log_capturing = true;
	log_len = 0;
	log_buf[0] = '\0';
	pthread_mutex_unlock(&log_lock);
}

/* On success, what libbpf warned about still reaches stderr; on failure it is
 * kept for throw_errno(). */
static void capture_end(bool failed)
{
	pthread_mutex_lock(&log_lock);
	log_capturing = false;
	if (!failed && log_len) {
		fputs(log_buf, stderr);
		log_len = 0;
	}
	pthread_mutex_unlock(&log_lock);
}

/* Throws Error("<what> failed: ENAME (description)\n<libbpf log tail>") with
 * .code = "ENAME" and .errno = err. err is a positive errno. */
static void throw_errno(napi_env env, const char *what, int err)
{
	const char *name = strerrorname_np(err);
	napi_value msg, code, errno_value, error;
	const char *end, *tail;
	char *text;
	int lines = 0;

	pthread_mutex_lock(&log_lock);
	end = log_buf + log_len;
	while (end > log_buf && end[-1] == '\n')
		end--;
	for (tail = end; tail > log_buf; tail--) {
		if (tail[-1] == '\n' && ++lines >= LOG_LINES)
			break;
	}
	if (asprintf(&text, "%s failed: %s (%s)%s%.*s", what, name ? name : "E?", strerror(err),
		     end > tail ? "\n" : "", (int)(end - tail), tail) < 0)
		text = NULL;
	log_len = 0;
	log_buf[0] = '\0';
	pthread_mutex_unlock(&log_lock);

	napi_create_string_utf8(env, text ? text : what, NAPI_AUTO_LENGTH, &msg);
	napi_create_string_utf8(env, name ? name : "E?", NAPI_AUTO_LENGTH, &code);
	napi_create_int32(env, err, &errno_value);
	napi_create_error(env, NULL, msg, &error);
	napi_set_named_property(env, error, "code", code);
	napi_set_named_property(env, error, "errno", errno_value);
	napi_throw(env, error);
	free(text);
}

/* ---------------------------------------------------------------- arguments */

#define GET_ARGS(n)                                                                  \
	size_t argc = (n);                                                           \
	napi_value argv[(n) > 0 ? (n) : 1];                                          \
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok)         \
		return NULL

static void *arg_external(napi_env env, napi_value v)
{
	void *p = NULL;

	napi_get_value_external(env, v, &p);
	return p;
}

/* Returns a malloc'd copy of a JS string; the caller frees it. */
static char *arg_string(napi_env env, napi_value v)
{
	size_t len = 0;
	char *s;

	if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok)
		return NULL;
	s = malloc(len + 1);
	if (s)
		napi_get_value_string_utf8(env, v, s, len + 1, &len);
	return s;
}

static void *arg_buffer(napi_env env, napi_value v, size_t *len)
{
	void *data = NULL;

	*len = 0;
	napi_get_buffer_info(env, v, &data, len);
	return data;
}

/* ---------------------------------------------------------------- object */

struct object_handle {
	struct bpf_object *obj; /* NULL once closed */
};

struct link_handle {
	struct bpf_link *link; /* NULL once destroyed */
};

static void object_finalize(napi_env env, void *data, void *hint)
{
	struct object_handle *h = data;

	bpf_object__close(h->obj);
	free(h);
}

static void link_finalize(napi_env env, void *data, void *hint)
{
	struct link_handle *h = data;

	bpf_link__destroy(h->link);
	free(h);
}

static struct bpf_object *arg_object(napi_env env, napi_value v)
{
	struct object_handle *h = arg_external(env, v);

	return h ? h->obj : NULL;
}

static struct bpf_map *find_map(napi_env env, struct bpf_object *obj, napi_value name_value)
{
	char *name = arg_string(env, name_value);
	struct bpf_map *map = obj && name ? bpf_object__find_map_by_name(obj, name) : NULL;

	if (!map)
		throw_errno(env, name ? name : "map lookup", ENOENT);
	free(name);
	return map;
}

/* open(path) -> object */
static napi_value object_open(napi_env env, napi_callback_info info)
{
	struct object_handle *h;
	struct bpf_object *obj;
	napi_value result;
	char *path;
	int err;

	GET_ARGS(1);
	path = arg_string(env, argv[0]);
	capture_begin();
	obj = bpf_object__open_file(path, NULL);
	err = obj ? 0 : errno;
	capture_end(!obj);
	if (!obj) {
		throw_errno(env, "bpf_object__open_file", err);
		free(path);
		return NULL;
	}
	free(path);
	h = malloc(sizeof(*h));
	h->obj = obj;
	napi_create_external(env, h, object_finalize, NULL, &result);
	return result;
}

/* programNames(object) -> string[] */
static napi_value object_program_names(napi_env env, napi_callback_info info)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	napi_value result, name;
	uint32_t i = 0;

	GET_ARGS(1);
	obj = arg_object(env, argv[0]);
	napi_create_array(env, &result);
	bpf_object__for_each_program(prog, obj) {
		napi_create_string_utf8(env, bpf_program__name(prog), NAPI_AUTO_LENGTH, &name);
		napi_set_element(env, result, i++, name);
	}
	return result;
}

/* setInitialValue(object, mapName, buffer) */
static napi_value object_set_initial_value(napi_env env, napi_callback_info info)
{
	struct bpf_map *map;
	size_t len;
	void *data;
	int err;

	GET_ARGS(3);
	map = find_map(env, arg_object(env, argv[0]), argv[1]);
	if (!map)
		return NULL;
	data = arg_buffer(env, argv[2], &len);
	err = bpf_map__set_initial_value(map, data, len);
	if (err)
		throw_errno(env, "bpf_map__set_initial_value", -err);
	return NULL;
}

/* initialValue(object, mapName) -> Buffer (a copy) */
static napi_value object_initial_value(napi_env env, napi_callback_info info)
{
	struct bpf_map *map;
	const void *data;
	napi_value result;
	size_t len = 0;

	GET_ARGS(2);
	map = find_map(env, arg_object(env, argv[0]), argv[1]);
	if (!map)
		return NULL;
	data = bpf_map__initial_value(map, &len);
	if (!data) {
		throw_errno(env, "bpf_map__initial_value", EINVAL);
		return NULL;
	}
	napi_create_buffer_copy(env, len, data, NULL, &result);
	return result;
}

/* setMaxEntries(object, mapName, n) */
static napi_value object_set_max_entries(napi_env env, napi_callback_info info)
{
	struct bpf_map *map;
	uint32_t n = 0;
	int err;

	GET_ARGS(3);
	map = find_map(env, arg_object(env, argv[0]), argv[1]);
	if (!map)
		return NULL;
	napi_get_value_uint32(env, argv[2], &n);
	err = bpf_map__set_max_entries(map, n);
	if (err)
		throw_errno(env, "bpf_map__set_max_entries", -err);
	return NULL;
}

/* load(object) */
static napi_value object_load(napi_env env, napi_callback_info info)
{
	int err;

	GET_ARGS(1);
	capture_begin();
	err = bpf_object__load(arg_object(env, argv[0]));
	capture_end(err);
	if (err)
		throw_errno(env, "bpf_object__load", -err);
	return NULL;
}

/* loadAlone(object, progName) -> string: loads that program only (the others
 * are left out) and returns the verifier's statistics for it (BPF_LOG_STATS:
 * "processed N insns (limit 1000000) ...", the verification time). */
static napi_value object_load_alone(napi_env env, napi_callback_info info)
{
	static char stats[4096];
	struct bpf_program *prog, *target = NULL;
	struct bpf_object *obj;
	napi_value result;
	char *name;
	int err;

	GET_ARGS(2);
	obj = arg_object(env, argv[0]);
	name = arg_string(env, argv[1]);
	bpf_object__for_each_program(prog, obj) {
		bool me = name && !strcmp(bpf_program__name(prog), name);

		bpf_program__set_autoload(prog, me);
		if (me)
			target = prog;
	}
	if (!target) {
		throw_errno(env, name ? name : "loadAlone", ENOENT);
		free(name);
		return NULL;
	}
	free(name);
	stats[0] = '\0';
	bpf_program__set_log_level(target, 4);
	bpf_program__set_log_buf(target, stats, sizeof(stats));
	capture_begin();
	err = bpf_object__load(obj);
	capture_end(err);
	if (err) {
		throw_errno(env, "bpf_object__load", -err);
		return NULL;
	}
	napi_create_string_utf8(env, stats, NAPI_AUTO_LENGTH, &result);
	return result;
}

/* attach(object, progName[, binaryPath, funcName, retprobe, pid]) -> link.
 * With a binary path the program is a uprobe/uretprobe on funcName;
 * otherwise libbpf attaches it as its SEC() says. */
static napi_value object_attach(napi_env env, napi_callback_info info)
{
	struct bpf_program *prog = NULL;
	struct bpf_link *link = NULL;
	char *name, *binary = NULL, *func = NULL;
	struct link_handle *h;
	napi_valuetype type;
	napi_value result;
	bool retprobe = false;
	int64_t offset = 0;
	int32_t pid = -1;
	char what[300];
	int err;

	GET_ARGS(6);
	name = arg_string(env, argv[1]);
	if (name)
		prog = bpf_object__find_program_by_name(arg_object(env, argv[0]), name);
	if (!prog) {
		snprintf(what, sizeof(what), "finding program '%s'", name ? name : "?");
		throw_errno(env, what, ENOENT);
		free(name);
		return NULL;
	}
	napi_typeof(env, argv[2], &type);
	if (type == napi_string) {
		binary = arg_string(env, argv[2]);
		napi_typeof(env, argv[3], &type);
		if (type == napi_string)
			func = arg_string(env, argv[3]);
		else
			napi_get_value_int64(env, argv[3], &offset);
		napi_get_value_bool(env, argv[4], &retprobe);
		napi_get_value_int32(env, argv[5], &pid);
	}

	capture_begin();
	if (binary) {
		/* A function name, or (func NULL) a file offset: a site inside a function, or a function without a symbol. */
		LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = func, .retprobe = retprobe);
		link = bpf_program__attach_uprobe_opts(prog, pid, binary, func ? 0 : (size_t)offset, &opts);
		if (func)
			snprintf(what, sizeof(what), "attaching '%s' to %s:%s", name, binary, func);
		else
			snprintf(what, sizeof(what), "attaching '%s' to %s at file offset 0x%llx", name, binary, (unsigned long long)offset);
	} else {
		link = bpf_program__attach(prog);
		snprintf(what, sizeof(what), "attaching '%s' (%s)", name, bpf_program__section_name(prog));
	}
	err = link ? 0 : errno;
	capture_end(!link);
	free(name);
	free(binary);
	free(func);
	if (!link) {
		throw_errno(env, what, err);
		return NULL;
	}
	h = malloc(sizeof(*h));
	h->link = link;
	napi_create_external(env, h, link_finalize, NULL, &result);
	return result;
}

/* linkDestroy(link) */
static napi_value link_destroy(napi_env env, napi_callback_info info)
{
	struct link_handle *h;

	GET_ARGS(1);
	h = arg_external(env, argv[0]);
	bpf_link__destroy(h->link);
	h->link = NULL;
	return NULL;
}

static void *destroy_link(void *link)
{
	bpf_link__destroy(link);
	return NULL;
}

/* linksDestroy(links[]): detaches them all at once, a thread each: each
 * tracepoint's or uprobe's detach waits out RCU grace periods, which side by
 * side partly overlap (see BpfLink.destroyAll). */
static napi_value links_destroy(napi_env env, napi_callback_info info)
{
	struct link_handle **handles;
	pthread_attr_t attr;
	pthread_t *threads;
	bool *started;
	uint32_t n = 0, i;
	napi_value v;

	GET_ARGS(1);
	napi_get_array_length(env, argv[0], &n);
	handles = calloc(n ? n : 1, sizeof(*handles));
	threads = calloc(n ? n : 1, sizeof(*threads));
	started = calloc(n ? n : 1, sizeof(*started));
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (i = 0; i < n; i++) {
		napi_get_element(env, argv[0], i, &v);
		handles[i] = arg_external(env, v);
		started[i] = handles[i]->link && !pthread_create(&threads[i], &attr, destroy_link, handles[i]->link);
	}
	for (i = 0; i < n; i++) {
		if (started[i])
			pthread_join(threads[i], NULL);
		else
			bpf_link__destroy(handles[i]->link); /* no thread: here */
		handles[i]->link = NULL;
	}
	pthread_attr_destroy(&attr);
	free(started);
	free(threads);
	free(handles);
	return NULL;
}

/* close(object): maps and programs go; links made from it stay until destroyed. */
static napi_value object_close(napi_env env, napi_callback_info info)
{
	struct object_handle *h;

	GET_ARGS(1);
	h = arg_external(env, argv[0]);
	bpf_object__close(h->obj);
	h->obj = NULL;
	return NULL;
}

/* ---------------------------------------------------------------- maps */

/* map(object, name) -> { handle, type, keySize, valueSize, maxEntries } */
static napi_value object_map(napi_env env, napi_callback_info info)
{
	napi_value result, v;
	struct bpf_map *map;

	GET_ARGS(2);
	map = find_map(env, arg_object(env, argv[0]), argv[1]);
	if (!map)
		return NULL;
	napi_create_object(env, &result);
	napi_create_external(env, map, NULL, NULL, &v);
	napi_set_named_property(env, result, "handle", v);
	napi_create_uint32(env, bpf_map__type(map), &v);
	napi_set_named_property(env, result, "type", v);
	napi_create_uint32(env, bpf_map__key_size(map), &v);
	napi_set_named_property(env, result, "keySize", v);
	napi_create_uint32(env, bpf_map__value_size(map), &v);
	napi_set_named_property(env, result, "valueSize", v);
	napi_create_uint32(env, bpf_map__max_entries(map), &v);
	napi_set_named_property(env, result, "maxEntries", v);
	return result;
}

/* mapLookup(map, key, valueBytes) -> Buffer | null. valueBytes is the whole
 * value: for per-CPU maps round_up(value_size, 8) * possible CPUs. */
static napi_value map_lookup(napi_env env, napi_callback_info info)
{
	size_t key_len, value_len;
	napi_value result;
	uint32_t n = 0;
	void *key, *value;
	int err;

	GET_ARGS(3);
	key = arg_buffer(env, argv[1], &key_len);
	napi_get_value_uint32(env, argv[2], &n);
	napi_create_buffer(env, n, &value, &result);
	value_len = n;
	capture_begin();
	err = bpf_map__lookup_elem(arg_external(env, argv[0]), key, key_len, value, value_len, 0);
	capture_end(err);
	if (err == -ENOENT) {
		napi_get_null(env, &result);
	} else if (err) {
		throw_errno(env, "bpf_map__lookup_elem", -err);
		return NULL;
	}
	return result;
}

/* mapUpdate(map, key, value, flags) */
static napi_value map_update(napi_env env, napi_callback_info info)
{
	size_t key_len, value_len;
	void *key, *value;
	int64_t flags = 0;
	int err;

	GET_ARGS(4);
	key = arg_buffer(env, argv[1], &key_len);
	value = arg_buffer(env, argv[2], &value_len);
	napi_get_value_int64(env, argv[3], &flags);
	capture_begin();
	err = bpf_map__update_elem(arg_external(env, argv[0]), key, key_len, value, value_len, flags);
	capture_end(err);
	if (err)
		throw_errno(env, "bpf_map__update_elem", -err);
	return NULL;
}

/* mapDelete(map, key) -> boolean (false: no such key) */
static napi_value map_delete(napi_env env, napi_callback_info info)
{
	napi_value result;
	size_t key_len;
	void *key;
	int err;

	GET_ARGS(2);
	key = arg_buffer(env, argv[1], &key_len);
	capture_begin();
	err = bpf_map__delete_elem(arg_external(env, argv[0]), key, key_len, 0);
	capture_end(err);
	if (err && err != -ENOENT) {
		throw_errno(env, "bpf_map__delete_elem", -err);
		return NULL;
	}
	napi_get_boolean(env, err == 0, &result);
	return result;
}

static napi_value possible_cpus(napi_env env, napi_callback_info info)
{
	napi_value result;
	int n = libbpf_num_possible_cpus();

	if (n < 0) {
		throw_errno(env, "libbpf_num_possible_cpus", -n);
		return NULL;
	}
	napi_create_int32(env, n, &result);
	return result;
}

/* ---------------------------------------------------------------- x86-64 decoding */

static void set_number(napi_env env, napi_value obj, const char *key, double v)
{
	napi_value n;

	napi_create_double(env, v, &n);
	napi_set_named_property(env, obj, key, n);
}

static void set_string(napi_env env, napi_value obj, const char *key, const char *v)
{
	napi_value s;

	napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &s);
	napi_set_named_property(env, obj, key, s);
}

static napi_value byte_array(napi_env env, const uint8_t *b, size_t n)
{
	napi_value arr, v;
	size_t len = 0;

	while (len < n && b[len]) /* capstone pads prefix[] and opcode[] with zeros */
		len++;
	napi_create_array_with_length(env, len, &arr);
	for (size_t i = 0; i < len; i++) {
		napi_create_uint32(env, b[i], &v);
		napi_set_element(env, arr, i, v);
	}
	return arr;
}

/* One decoded instruction as JS sees it: what site selection needs, no more. */
static napi_value insn_object(napi_env env, csh cs, const cs_insn *insn)
{
	const cs_x86 *x86 = &insn->detail->x86;
	cs_regs read, written;
	uint8_t nread = 0, nwritten = 0;
	napi_value obj, arr, v;
	uint32_t ngroups = 0;

	napi_create_object(env, &obj);
	set_number(env, obj, "address", (double)insn->address);
	set_number(env, obj, "size", insn->size);
	set_string(env, obj, "mnemonic", insn->mnemonic);
	set_string(env, obj, "operands", insn->op_str);
	napi_set_named_property(env, obj, "prefixes", byte_array(env, x86->prefix, sizeof(x86->prefix)));
	napi_set_named_property(env, obj, "opcode", byte_array(env, x86->opcode, sizeof(x86->opcode)));
	set_number(env, obj, "rex", x86->rex);
	/* direct branch or call: its target */
	if (cs_insn_group(cs, insn, CS_GRP_BRANCH_RELATIVE) && x86->op_count == 1 && x86->operands[0].type == X86_OP_IMM)
		set_number(env, obj, "target", (double)x86->operands[0].imm);
	napi_create_array(env, &arr);
	for (uint8_t i = 0; i < insn->detail->groups_count; i++) {
		const char *g = cs_group_name(cs, insn->detail->groups[i]);

		if (g) {
			napi_create_string_utf8(env, g, NAPI_AUTO_LENGTH, &v);
			napi_set_element(env, arr, ngroups++, v);
		}
	}
	napi_set_named_property(env, obj, "groups", arr);
	napi_create_array(env, &arr);
	if (cs_regs_access(cs, insn, read, &nread, written, &nwritten) == CS_ERR_OK) {
		for (uint8_t i = 0; i < nwritten; i++) {
			napi_create_string_utf8(env, cs_reg_name(cs, written[i]), NAPI_AUTO_LENGTH, &v);
			napi_set_element(env, arr, i, v);
		}
	}
	napi_set_named_property(env, obj, "writes", arr);
	return obj;
}

/* disassemble(code: Buffer, address) -> instructions, decoded by capstone up to the
 * first byte sequence it cannot decode. */
static napi_value disassemble(napi_env env, napi_callback_info info)
{
	const uint8_t *code;
	size_t len;
	uint64_t address;
	cs_insn *insn;
	napi_value result;
	double at = 0;
	uint32_t count = 0;
	csh cs;

	GET_ARGS(2);
	code = arg_buffer(env, argv[0], &len);
	napi_get_value_double(env, argv[1], &at);
	address = (uint64_t)at;
	if (cs_open(CS_ARCH_X86, CS_MODE_64, &cs) != CS_ERR_OK) {
		napi_throw_error(env, NULL, "capstone: cannot open an x86-64 decoder");
		return NULL;
	}
	cs_option(cs, CS_OPT_DETAIL, CS_OPT_ON);
	insn = cs_malloc(cs);
	napi_create_array(env, &result);
	while (insn && cs_disasm_iter(cs, &code, &len, &address, insn)) {
		napi_set_element(env, result, count++, insn_object(env, cs, insn));
	}
	if (insn)
		cs_free(insn, 1);
	cs_close(&cs);
	return result;
}

/* ---------------------------------------------------------------- memory */

/* Drops this process's pages of [lo, hi) where it maps a file read-only: they
 * are read in again from the page cache when next used. Checked against
 * /proc/self/maps so that memory no longer backed by the file (node's code
 * remapped to anonymous huge pages by --use-largepages) is never dropped. */
static void drop_file_pages(FILE *maps, uintptr_t lo, uintptr_t hi)
{
	unsigned long start, end, inode;
	char *line = NULL, perms[5];
	size_t cap = 0;

	rewind(maps);
	while (getline(&line, &cap, maps) > 0) {
		if (sscanf(line, "%lx-%lx %4s %*s %*s %lu", &start, &end, perms, &inode) != 4 || !inode || perms[1] == 'w')
			continue;
		start = start > lo ? start : lo;
		end = end < hi ? end : hi;
		if (start < end)
			madvise((void *)start, end - start, MADV_DONTNEED);
	}
	free(line);
}

/* An object's segments that are read-only in the file. RELRO lies in a
 * writable segment: kept. */
static void release_object(FILE *maps, struct dl_phdr_info *info)
{
	uintptr_t page = sysconf(_SC_PAGESIZE);

	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = (info->dlpi_addr + ph->p_vaddr + page - 1) & ~(page - 1);
		uintptr_t hi = (info->dlpi_addr + ph->p_vaddr + ph->p_filesz) & ~(page - 1);

		if (ph->p_type == PT_LOAD && !(ph->p_flags & PF_W) && lo < hi)
			drop_file_pages(maps, lo, hi);
	}
}

/* dl_iterate_phdr lists the main program first. */
static int release_main_program(struct dl_phdr_info *info, size_t size, void *maps)
{
	release_object(maps, info);
	return 1;
}

static int release_capstone(struct dl_phdr_info *info, size_t size, void *maps)
{
	uintptr_t at = (uintptr_t)cs_disasm_iter;

	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type == PT_LOAD && at >= info->dlpi_addr + ph->p_vaddr && at < info->dlpi_addr + ph->p_vaddr + ph->p_memsz) {
			release_object(maps, info);
			return 1;
		}
	}
	return 0;
}

/* releaseMemory(): hands back what start-up used and steady state does not:
 * malloc's free pages (libbpf's BTF and ELF parsing, the TLS probe planning),
 * and the read-only pages of node (its module loader, compilers, start-up
 * paths) and of capstone (its decoder tables); what runs again is read in
 * again from the page cache. */
static napi_value release_memory(napi_env env, napi_callback_info info)
{
	FILE *maps = fopen("/proc/self/maps", "re");

	malloc_trim(0);
	if (!maps)
		return NULL;
	dl_iterate_phdr(release_main_program, maps);
	dl_iterate_phdr(release_capstone, maps);
	fclose(maps);
	return NULL;
}

/* ---------------------------------------------------------------- ring buffer */

struct batch {
	char *data;
	size_t cap;
	size_t len;
	uint32_t records;
	struct batch *next; /* in the free list or the ready queue */
};

struct reader {
	struct ring_buffer *rb;
	napi_threadsafe_function tsfn;
	napi_ref on_batch;
	pthread_t thread;
	int epoll_fd; /* waits on the ring buffer's epoll fd and on wake_fd */
	int wake_fd; /* eventfd: stop() wakes the thread with it */
	uint64_t max_latency_ns;
	size_t batch_bytes;

	pthread_mutex_t lock; /* guards free, ready, stopping */
	pthread_cond_t freed;
	struct batch pool[POOL_SIZE];
	struct batch *free;
	struct batch *ready, *ready_tail;
	bool stopping;

	/* Owned by the drain thread, then by the JS thread once joined. */
	struct batch *cur;
	uint64_t cur_first_ns;
	void *stash; /* a record consumed while stopping with no batch free */
	size_t stash_len;
	napi_env sync_env; /* set while the JS thread drains the rest in stop() */
	bool sync_failed; /* calling JS failed during that drain: discard the rest */

	/* JS thread only */
	bool running;
	bool tsfn_gone; /* finalized, e.g. by Node at exit: never touch it again */
	double batches, records;
	int refs; /* held by the JS external and by the TSFN */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void reader_unref(struct reader *r)
{
	if (--r->refs)
		return;
	for (int i = 0; i < POOL_SIZE; i++)
		free(r->pool[i].data);
	free(r->stash);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->freed);
	free(r);
}

static void batch_release(struct reader *r, struct batch *b)
{
	pthread_mutex_lock(&r->lock);
	b->len = 0;
	b->records = 0;
	b->next = r->free;
	r->free = b;
	pthread_cond_signal(&r->freed);
	pthread_mutex_unlock(&r->lock);
}

/* Hands the oldest ready batch to JS, as a Buffer over the batch memory that
 * is detached when the callback returns: it is valid only during the call. */
static void deliver_one(napi_env env, struct reader *r)
{
	napi_value cb, buf, ab, global;
	struct batch *b;
	napi_status status;

	pthread_mutex_lock(&r->lock);
	b = r->ready;
	if (b) {
		r->ready = b->next;
		if (!r->ready)
			r->ready_tail = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	if (!b)
		return;
	if (!env || r->sync_failed) {
		batch_release(r, b);
		return;
	}

	r->batches++;
	r->records += b->records;
	napi_get_reference_value(env, r->on_batch, &cb);
	napi_get_global(env, &global);
	status = napi_create_external_buffer(env, b->len, b->data, NULL, NULL, &buf);
	if (status == napi_ok) {
		status = napi_call_function(env, global, cb, 1, &buf, NULL);
		if (napi_get_typedarray_info(env, buf, NULL, NULL, NULL, &ab, NULL) == napi_ok)
			napi_detach_arraybuffer(env, ab);
	}
	if (status != napi_ok && r->sync_env)
		r->sync_failed = true;
	batch_release(r, b);
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data)
{
	deliver_one(env, context);
}

/* Queues the current batch for JS. */
static void flush(struct reader *r)
{
	struct batch *b = r->cur;

	r->cur = NULL;
	pthread_mutex_lock(&r->lock);
	b->next = NULL;
	if (r->ready_tail)
		r->ready_tail->next = b;
	else
		r->ready = b;
	r->ready_tail = b;
	pthread_mutex_unlock(&r->lock);
	if (r->sync_env)
		deliver_one(r->sync_env, r);
	else
		napi_call_threadsafe_function(r->tsfn, NULL, napi_tsfn_nonblocking);
}

/* Waits for a free batch: this is the back-pressure that makes the ring
 * buffer fill up (and the BPF side count what it drops) when JS is slow.
 * NULL when stopping and none is free. */
static struct batch *take_batch(struct reader *r)
{
	struct batch *b;

	pthread_mutex_lock(&r->lock);
	while (!r->free && !r->stopping)
		pthread_cond_wait(&r->freed, &r->lock);
	b = r->free;
	if (b)
		r->free = b->next;
	pthread_mutex_unlock(&r->lock);
	return b;
}

static int on_record(void *ctx, void *data, size_t size)
{
	size_t framed = 8 + ((size + 7) & ~(size_t)7);
	struct reader *r = ctx;
	uint32_t header[2] = { size, 0 };
	char *p;

	if (r->cur && r->cur->len && r->cur->len + framed > r->batch_bytes)
		flush(r);
	if (!r->cur) {
		r->cur = take_batch(r);
		if (!r->cur) {
			/* stop() delivers it after the thread is joined */
			r->stash = malloc(size);
			if (r->stash)
				memcpy(r->stash, data, size);
			r->stash_len = size;
			return -EINTR;
		}
		r->cur_first_ns = now_ns();
	}
	if (framed > r->cur->cap) {
		/* a record bigger than a batch gets a batch of its own, grown to fit */
		p = realloc(r->cur->data, framed);
		if (!p)
			return -ENOMEM;
		r->cur->data = p;
		r->cur->cap = framed;
	}
	p = r->cur->data + r->cur->len;
	memcpy(p, header, sizeof(header));
	memcpy(p + 8, data, size);
	memset(p + 8 + size, 0, framed - 8 - size);
	r->cur->len += framed;
	r->cur->records++;
	return 0;
}

static bool stopping(struct reader *r)
{
	return __atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE);
}

static void *drain_thread(void *arg)
{
	struct reader *r = arg;
	struct epoll_event ev;
	int64_t left;
	int timeout, n;

	while (!stopping(r)) {
		/* Polls as well: the BPF side wakes us only for a backlog (wakeup_flags()). */
		timeout = (int)(r->max_latency_ns / 1000000);
		if (r->cur && r->cur->len) {
			left = (int64_t)(r->cur_first_ns + r->max_latency_ns - now_ns());
			timeout = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
		}
		n = epoll_wait(r->epoll_fd, &ev, 1, timeout);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "libbpf_addon: epoll_wait: %s\n", strerror(errno));
			break;
		}
		if (stopping(r))
			break;
		ring_buffer__consume(r->rb);
		if (r->cur && r->cur->len && now_ns() - r->cur_first_ns >= r->max_latency_ns)
			flush(r);
	}
	return NULL;
}

/* Ends the drain thread. With env, delivers what is left (queued batches,
 * the ring buffer's content, the partial batch) synchronously, in order. */
static void reader_stop(napi_env env, struct reader *r)
{
	uint64_t one = 1;

	if (!r->running)
		return;
	r->running = false;
	pthread_mutex_lock(&r->lock);
	__atomic_store_n(&r->stopping, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&r->freed);
	pthread_mutex_unlock(&r->lock);
	if (write(r->wake_fd, &one, sizeof(one)) < 0)
		fprintf(stderr, "libbpf_addon: eventfd write: %s\n", strerror(errno));
	pthread_join(r->thread, NULL);

	if (env) {
		r->sync_env = env;
		while (r->ready)
			deliver_one(env, r);
		if (r->stash) {
			on_record(r, r->stash, r->stash_len);
			free(r->stash);
			r->stash = NULL;
		}
		ring_buffer__consume(r->rb);
		if (r->cur && r->cur->len)
			flush(r);
		r->sync_env = NULL;
	}
	ring_buffer__free(r->rb);
	close(r->epoll_fd);
	close(r->wake_fd);
	if (!r->tsfn_gone)
		napi_release_threadsafe_function(r->tsfn, napi_tsfn_release);
}

static void reader_finalize(napi_env env, void *data, void *hint)
{
	struct reader *r = data;

	reader_stop(NULL, r);
	napi_delete_reference(env, r->on_batch);
	reader_unref(r);
}

/* Node finalizes the TSFN after our release, or by itself when the
 * environment goes away: then the thread must end before it can call it. */
static void tsfn_finalize(napi_env env, void *data, void *hint)
{
	struct reader *r = data;

	r->tsfn_gone = true;
	reader_stop(NULL, r);
	reader_unref(r);
}

/* ringBuffer(map, onBatch, batchBytes, maxLatencyMs) -> reader */
static napi_value ring_buffer_start(napi_env env, napi_callback_info info)
{
	struct epoll_event ev = { .events = EPOLLIN };
	uint32_t batch_bytes = 0, latency_ms = 0;
	napi_value result, name;
	struct reader *r;
	int err;

	GET_ARGS(4);
	napi_get_value_uint32(env, argv[2], &batch_bytes);
	napi_get_value_uint32(env, argv[3], &latency_ms);

	r = calloc(1, sizeof(*r));
	r->max_latency_ns = (uint64_t)latency_ms * 1000000;
	r->batch_bytes = batch_bytes;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->freed, NULL);
	r->refs = 1;
	for (int i = 0; i < POOL_SIZE; i++) {
		r->pool[i].data = malloc(batch_bytes);
		r->pool[i].cap = batch_bytes;
		r->pool[i].next = r->free;
		r->free = &r->pool[i];
	}

	capture_begin();
	r->rb = ring_buffer__new(bpf_map__fd(arg_external(env, argv[0])), on_record, r, NULL);
	err = r->rb ? 0 : errno;
	capture_end(!r->rb);
	if (!r->rb) {
		throw_errno(env, "ring_buffer__new", err);
		reader_unref(r);
		return NULL;
	}
	r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, ring_buffer__epoll_fd(r->rb), &ev) ||
	    epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, r->wake_fd, &ev)) {
		err = errno;
		ring_buffer__free(r->rb);
		close(r->epoll_fd);
		close(r->wake_fd);
		reader_unref(r);
		throw_errno(env, "epoll_ctl", err);
		return NULL;
	}

	napi_create_reference(env, argv[1], 1, &r->on_batch);
	napi_create_string_utf8(env, "libbpf ring buffer", NAPI_AUTO_LENGTH, &name);
	r->refs = 2;
	napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, r, tsfn_finalize, r, call_js, &r->tsfn);
	napi_create_external(env, r, reader_finalize, NULL, &result);
	r->running = true;
	err = pthread_create(&r->thread, NULL, drain_thread, r);
	if (err) {
		r->running = false;
		ring_buffer__free(r->rb);
		close(r->epoll_fd);
		close(r->wake_fd);
		napi_release_threadsafe_function(r->tsfn, napi_tsfn_release);
		throw_errno(env, "pthread_create", err);
		return NULL;
	}
	return result;
}

/* ringBufferStop(reader) */
static napi_value ring_buffer_stop(napi_env env, napi_callback_info info)
{
	GET_ARGS(1);
	reader_stop(env, arg_external(env, argv[0]));
	return NULL;
}

/* ringBufferStats(reader) -> { batches, records } delivered to JS */
static napi_value ring_buffer_stats(napi_env env, napi_callback_info info)
{
	napi_value result, v;
	struct reader *r;

	GET_ARGS(1);
	r = arg_external(env, argv[0]);
	napi_create_object(env, &result);
	napi_create_double(env, r->batches, &v);
	napi_set_named_property(env, result, "batches", v);
	napi_create_double(env, r->records, &v);
	napi_set_named_property(env, result, "records", v);
	return result;
}

/* ---------------------------------------------------------------- files of other processes */

/* openInRoot(rootPath, path) -> fd of the regular file `path` resolved inside the
 * directory rootPath (e.g. /proc/PID/root) as if it were "/": absolute symlinks and
 * ".." stay inside it, magic links (/proc/.../fd/N) are refused. The file is first
 * opened O_PATH and checked to be a regular file, so that a FIFO or a device planted
 * at the path is never really opened (no blocking, no side effect of open()); then
 * it is reopened for reading, non-blocking, close-on-exec, never a controlling tty.
 * Throws ENOSYS on kernels without openat2 (before 5.6): no unsafe fallback. */
static napi_value open_in_root(napi_env env, napi_callback_info info)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	char *root_path, *path, what[PATH_MAX + 64], reopen[64];
	int root, file = -1, fd = -1, err = 0;
	napi_value result;
	struct stat st;

	GET_ARGS(2);
	root_path = arg_string(env, argv[0]);
	path = arg_string(env, argv[1]);
	snprintf(what, sizeof(what), "opening %s inside %s", path ? path : "?", root_path ? root_path : "?");
	root = root_path ? open(root_path, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
	if (root < 0) {
		err = root_path ? errno : EINVAL;
	} else {
		file = path ? syscall(SYS_openat2, root, path, &how, sizeof(how)) : -1;
		err = file < 0 ? (path ? errno : EINVAL) : 0;
		close(root);
	}
	if (!err && fstat(file, &st) < 0)
		err = errno;
	if (!err && !S_ISREG(st.st_mode)) {
		snprintf(what, sizeof(what), "opening %s inside %s (not a regular file: type %06o)", path, root_path,
			 st.st_mode & S_IFMT);
		err = EINVAL;
	}
	if (!err) {
		snprintf(reopen, sizeof(reopen), "/proc/self/fd/%d", file);
		fd = open(reopen, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		err = fd < 0 ? errno : 0;
	}
	if (file >= 0)
		close(file);
	free(root_path);
	free(path);
	if (err) {
		if (err == ENOSYS)
			strncat(what, " (openat2 needs Linux 5.6 or newer)", sizeof(what) - strlen(what) - 1);
		throw_errno(env, what, err);
		return NULL;
	}
	napi_create_int32(env, fd, &result);
	return result;
}

/* ---------------------------------------------------------------- batched UDP sends */

/* HEP over UDP: a connected, non-blocking UDP socket owned by the addon, so
 * that the datagrams produced while JS handles one ring-buffer batch leave in
 * one sendmmsg() instead of one send (syscall and receiver wakeup) each. */

#define UDP_SNDBUF (4 << 20) /* a whole queued batch fits: EAGAIN only when the link really lags */

struct udp_handle {
	int fd; /* -1 once closed */
};

static void udp_finalize(napi_env env, void *data, void *hint)
{
	struct udp_handle *h = data;

	if (h->fd >= 0)
		close(h->fd);
	free(h);
}

/* udpConnect(ip, port) -> socket. ip is a numeric IPv4 or IPv6 address. */
static napi_value udp_connect(napi_env env, napi_callback_info info)
{
	struct sockaddr_storage addr = { 0 };
	struct sockaddr_in *in4 = (struct sockaddr_in *)&addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
	int size = UDP_SNDBUF, fd, err;
	struct udp_handle *h;
	uint32_t port = 0;
	socklen_t len;
	napi_value result;
	char *ip;

	GET_ARGS(2);
	ip = arg_string(env, argv[0]);
	napi_get_value_uint32(env, argv[1], &port);
	if (ip && inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		len = sizeof(*in4);
	} else if (ip && inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		len = sizeof(*in6);
	} else {
		free(ip);
		throw_errno(env, "inet_pton", EINVAL);
		return NULL;
	}
	free(ip);
	fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, len)) {
		err = errno;
		if (fd >= 0)
			close(fd);
		throw_errno(env, "udp connect", err);
		return NULL;
	}
	/* FORCE needs CAP_NET_ADMIN; without it the size is capped at wmem_max */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	h = malloc(sizeof(*h));
	h->fd = fd;
	napi_create_external(env, h, udp_finalize, NULL, &result);
	return result;
}

/* udpSend(socket, packets, lengths, count, result): sends count datagrams,
 * laid end to end in packets (lengths[i] bytes each), in order, with as few
 * sendmmsg() calls as the kernel allows (UIO_MAXIOV per call), never blocking.
 * result (Uint32Array of 4) gets: [0] sent; [1] failed: a send error (e.g.
 * ECONNREFUSED, the ICMP of a collector that is down) costs that datagram and
 * the rest goes on; [2] unsent: the socket buffer is full (EAGAIN, ENOBUFS),
 * so the rest is not tried; [3] the errno of the last failure, 0 if none. */
static napi_value udp_send(napi_env env, napi_callback_info info)
{
	struct mmsghdr msgs[UIO_MAXIOV];
	struct iovec iov[UIO_MAXIOV];
	uint32_t count = 0, *lengths = NULL, *result = NULL, sent = 0, failed = 0, last_err = 0;
	size_t data_len, lengths_len = 0, result_len = 0, off = 0;
	uint32_t done = 0, n, at;
	struct udp_handle *h;
	char *data;
	int k;

	GET_ARGS(5);
	h = arg_external(env, argv[0]);
	data = arg_buffer(env, argv[1], &data_len);
	napi_get_typedarray_info(env, argv[2], NULL, &lengths_len, (void **)&lengths, NULL, NULL);
	napi_get_value_uint32(env, argv[3], &count);
	napi_get_typedarray_info(env, argv[4], NULL, &result_len, (void **)&result, NULL, NULL);
	if (!h || h->fd < 0 || !lengths || !result || count > lengths_len || result_len < 4) {
		throw_errno(env, "udpSend", h && h->fd < 0 ? EBADF : EINVAL);
		return NULL;
	}
	while (done < count) {
		for (n = 0; n < UIO_MAXIOV && done + n < count; n++) {
			if (lengths[done + n] > data_len - off)
				break; /* runs past the buffer: not sent */
			iov[n] = (struct iovec){ data + off, lengths[done + n] };
			msgs[n] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[n], .msg_iovlen = 1 } };
			off += lengths[done + n];
		}
		for (at = 0; at < n;) {
			k = sendmmsg(h->fd, msgs + at, n - at, MSG_DONTWAIT);
			if (k > 0) {
				/* short of n - at: the next datagram failed; the next call retries it
				 * and reports its error, if it still has one */
				at += k;
				sent += k;
				continue;
			}
			last_err = errno;
			if (last_err == EINTR)
				continue;
			if (last_err == EAGAIN || last_err == EWOULDBLOCK || last_err == ENOBUFS)
				goto out;
			at++;
			failed++;
		}
		done += n;
		if (n < UIO_MAXIOV)
			break;
	}
out:
	result[0] = sent;
	result[1] = failed;
	result[2] = count - sent - failed;
	result[3] = last_err;
	return NULL;
}

/* udpClose(socket). Idempotent. */
static napi_value udp_close(napi_env env, napi_callback_info info)
{
	struct udp_handle *h;

	GET_ARGS(1);
	h = arg_external(env, argv[0]);
	if (h && h->fd >= 0) {
		close(h->fd);
		h->fd = -1;
	}
	return NULL;
}

/* tcpOutq(fd): bytes in a TCP socket's send queue the peer has not acknowledged yet (SIOCOUTQ),
 * or -errno. The HEP sender uses it to know what a collector that went away never got. */
static napi_value tcp_outq(napi_env env, napi_callback_info info)
{
	int32_t fd;
	int outq;
	napi_value v;

	GET_ARGS(1);
	napi_get_value_int32(env, argv[0], &fd);
	napi_create_int32(env, ioctl(fd, SIOCOUTQ, &outq) ? -errno : outq, &v);
	return v;
}

/* ---------------------------------------------------------------- module */

static napi_value init(napi_env env, napi_value exports)
{
	static const struct {
		const char *name;
		napi_callback fn;
	} fns[] = {
		{ "open", object_open },
		{ "programNames", object_program_names },
		{ "setInitialValue", object_set_initial_value },
		{ "initialValue", object_initial_value },
		{ "setMaxEntries", object_set_max_entries },
		{ "load", object_load },
		{ "loadAlone", object_load_alone },
		{ "attach", object_attach },
		{ "map", object_map },
		{ "close", object_close },
		{ "linkDestroy", link_destroy },
		{ "linksDestroy", links_destroy },
		{ "mapLookup", map_lookup },
		{ "mapUpdate", map_update },
		{ "mapDelete", map_delete },
		{ "possibleCpus", possible_cpus },
		{ "ringBuffer", ring_buffer_start },
		{ "ringBufferStop", ring_buffer_stop },
		{ "ringBufferStats", ring_buffer_stats },
		{ "openInRoot", open_in_root },
		{ "disassemble", disassemble },
		{ "releaseMemory", release_memory },
		{ "udpConnect", udp_connect },
		{ "udpSend", udp_send },
		{ "udpClose", udp_close },
		{ "tcpOutq", tcp_outq },
	};
	napi_value fn;

	libbpf_set_print(print_libbpf);
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn);
		napi_set_named_property(env, exports, fns[i].name, fn);
	}
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
