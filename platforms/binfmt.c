#include "binfmt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/personality.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "platforms/elf.h"

#define HOST_BINFMT_DIR "/proc/sys/fs/binfmt_misc"
#define DEBIAN_BINFMT_DIR "/usr/libexec/qemu-binfmt"
#define INSTALL_HINT "install the Debian/Ubuntu package qemu-user-static"
/* The inode number of the initial user namespace (include/linux/proc_ns.h, PROC_USER_INIT_INO). */
#define INIT_USERNS_INO 0xEFFFFFFDu

/* ---- the registration table ---- */

/* e_ident up to EI_VERSION, the rest of e_ident zero, then e_type ET_EXEC and e_machine. */
#define ID(cls, data) 0x7f, 'E', 'L', 'F', cls, data, 0x01
#define PAD9 0, 0, 0, 0, 0, 0, 0, 0, 0
#define LE(m0, m1) 0x02, 0x00, m0, m1
#define BE(m0, m1) 0x00, 0x02, m0, m1
#define FF7 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
/* Masks: EI_OSABI ignored (0x00) or only its low bits (0xfc); e_type 0xfe accepts ET_EXEC and
 * ET_DYN (PIE); x86 also ignores the low bit of class and byte order (0xfe). */
#define MASK_STD                                                                                   \
	{                                                                                          \
		FF7, 0x00, 0xff, FF7, 0xfe, 0xff, 0xff, 0xff                                       \
	}
#define MASK_X86                                                                                   \
	{                                                                                          \
		0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xfe, 0x00, 0xff, FF7, 0xfe, 0xff, 0xff, 0xff  \
	}
#define MASK_PPC64LE                                                                               \
	{                                                                                          \
		FF7, 0xfc, 0xff, FF7, 0xfe, 0xff, 0xff, 0x00                                       \
	}
#define MASK_BE64                                                                                  \
	{                                                                                          \
		FF7, 0xfc, 0xff, FF7, 0xff, 0xfe, 0xff, 0xff                                       \
	}
#define MASK_MIPS64EL                                                                              \
	{                                                                                          \
		FF7, 0x00, 0xfe, FF7, 0xfe, 0xff, 0xff, 0xff                                       \
	}
#define MASK_LOONG64                                                                               \
	{                                                                                          \
		FF7, 0xfc, 0x00, FF7, 0xfe, 0xff, 0xff, 0xff                                       \
	}

static const BinfmtMagic magic_table[] = {
    {"arm64", "aarch64", {ID(2, 1), PAD9, LE(0xb7, 0x00)}, MASK_STD},
    {"arm", "arm", {ID(1, 1), PAD9, LE(0x28, 0x00)}, MASK_STD},
    {"ppc64le", "ppc64le", {ID(2, 1), PAD9, LE(0x15, 0x00)}, MASK_PPC64LE},
    {"ppc64", "ppc64", {ID(2, 2), PAD9, BE(0x00, 0x15)}, MASK_BE64},
    {"s390x", "s390x", {ID(2, 2), PAD9, BE(0x00, 0x16)}, MASK_BE64},
    {"riscv64", "riscv64", {ID(2, 1), PAD9, LE(0xf3, 0x00)}, MASK_STD},
    {"386", "i386", {ID(1, 1), PAD9, LE(0x03, 0x00)}, MASK_X86},
    {"amd64", "x86_64", {ID(2, 1), PAD9, LE(0x3e, 0x00)}, MASK_X86},
    {"mips64le", "mips64el", {ID(2, 1), PAD9, LE(0x08, 0x00)}, MASK_MIPS64EL},
    {"loong64", "loongarch64", {ID(2, 1), PAD9, LE(0x02, 0x01)}, MASK_LOONG64},
};

const BinfmtMagic *binfmt_magic_table(size_t *ret_n)
{
	*ret_n = ELEMENTSOF(magic_table);
	return magic_table;
}

const BinfmtMagic *binfmt_magic_for(const Platform *p)
{
	for (size_t i = 0; i < ELEMENTSOF(magic_table); i++)
		if (strcmp(magic_table[i].arch, p->arch) == 0)
			return &magic_table[i];
	return NULL;
}

/* ---- native execution ---- */

static int arm_level(const char *variant)
{
	if (variant[0] == 'v' && variant[1] >= '5' && variant[1] <= '8' && !variant[2])
		return variant[1] - '0';
	return variant[0] ? -1 : 7;
}

static bool aarch32_supported;

static void probe_aarch32(void)
{
#if defined(__aarch64__)
	/* arm64 refuses PER_LINUX32 when no CPU has AArch32 at EL0 (arch/arm64/kernel/sys.c). */
	int old = personality(0xffffffff);
	if (old >= 0 && personality(PER_LINUX32) >= 0) {
		aarch32_supported = true;
		personality((unsigned long)old);
	}
#endif
}

bool platform_runs_natively(const Platform *host, const Platform *p)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	if (strcmp(host->os, p->os) != 0)
		return false;
	if (!strcmp(p->arch, "arm")) {
		int want = arm_level(p->variant);
		if (!strcmp(host->arch, "arm"))
			return want >= 0 && want <= arm_level(host->variant);
		if (strcmp(host->arch, "arm64") != 0 || want < 0)
			return false;
		pthread_once(&once, probe_aarch32);
		return aarch32_supported;
	}
	if (!strcmp(host->arch, p->arch))
		return true;
	return !strcmp(host->arch, "amd64") && !strcmp(p->arch, "386");
}

const char *emulation_kind_to_string(EmulationKind k)
{
	switch (k) {
	case EMULATION_NATIVE:
		return "native";
	case EMULATION_PRIVATE:
		return "private binfmt_misc";
	case EMULATION_HOST:
		return "host binfmt_misc";
	}
	return "unknown";
}

/* ---- interpreter lookup ---- */

static char *strv_join(char *const *v, const char *sep)
{
	size_t len = 1;

	for (size_t i = 0; v && v[i]; i++)
		len += strlen(v[i]) + strlen(sep);
	char *s = xcalloc(1, len);
	for (size_t i = 0; v && v[i]; i++) {
		if (i)
			strcat(s, sep);
		strcat(s, v[i]);
	}
	return s;
}

static bool strv_contains(char *const *v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

/* NULL when the file can serve as interpreter, else why not (malloc'd). */
static char *interpreter_unusable(const char *path, const Platform *host)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_error_ KilnError *e = NULL;
	struct stat st;
	Platform ip;
	bool is_static;

	if (fd < 0)
		return xstrdup(errno == ENOENT ? "not found" : strerror(errno));
	if (fstat(fd, &st) < 0)
		return xstrdup(strerror(errno));
	if (!S_ISREG(st.st_mode))
		return xstrdup("not a regular file");
	if (access(path, X_OK) < 0)
		return xstrdup("not executable");
	if (elf_detect_platform(fd, &ip, &e) < 0)
		return xstrdup(e->message);
	if (!platform_runs_natively(host, &ip)) {
		char s[PLATFORM_STRING_MAX];
		platform_format(&ip, s, sizeof(s));
		return xasprintf("built for %s", s);
	}
	if (elf_is_static(fd, &is_static, &e) < 0)
		return xstrdup(e->message);
	if (!is_static)
		return xstrdup("dynamically linked: needs the static build");
	return NULL;
}

/* Appends the candidates in search order; flags[i] belongs to paths[i]. */
static void interpreter_candidates(const char *q, const char *qemu_dir, char ***paths,
				   char ***flags)
{
	/* KILN_QEMU_SEARCH_PATH pins the interpreter: only that dir is searched (a pinned QEMU for
	 * reproducible release builds, and how the tests take every interpreter away). */
	const char *pinned = getenv("KILN_QEMU_SEARCH_PATH");
	if (pinned && *pinned)
		qemu_dir = pinned;
	if (qemu_dir) {
		strv_consume(paths, xasprintf("%s/%s-binfmt-P", qemu_dir, q));
		strv_push(flags, "FP");
		strv_consume(paths, xasprintf("%s/qemu-%s-static", qemu_dir, q));
		strv_push(flags, "F");
		strv_consume(paths, xasprintf("%s/qemu-%s", qemu_dir, q));
		strv_push(flags, "F");
		if (pinned && *pinned)
			return;
	}
	strv_consume(paths, xasprintf(DEBIAN_BINFMT_DIR "/%s-binfmt-P", q));
	strv_push(flags, "FP");

	const char *path_env = getenv("PATH");
	_cleanup_free_ char *dirs = xasprintf("%s:/usr/bin", path_env ? path_env : "");
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		if (d[0] !=
		    '/') /* relative $PATH entries depend on the cwd: never an interpreter */
			continue;
		_cleanup_free_ char *c = xasprintf("%s/qemu-%s-static", d, q);
		if (strv_contains(*paths, c))
			continue;
		strv_consume(paths, TAKE_PTR(c));
		strv_push(flags, "F");
	}
}

int binfmt_find_interpreter(const Platform *p, const char *qemu_dir, char **ret_path,
			    char **ret_flags, KilnError **err)
{
	const BinfmtMagic *m = binfmt_magic_for(p);
	_cleanup_strv_free_ char **paths = NULL, **flags = NULL, **tried = NULL;
	char ps[PLATFORM_STRING_MAX];
	Platform host;

	platform_format(p, ps, sizeof(ps));
	if (!m)
		return kiln_error(err, ENOTSUP, "no QEMU emulation is known for %s", ps);
	platform_host(&host);
	interpreter_candidates(m->qemu_arch, qemu_dir, &paths, &flags);
	for (size_t i = 0; paths[i]; i++) {
		_cleanup_free_ char *why = interpreter_unusable(paths[i], &host);
		if (!why) {
			*ret_path = xstrdup(paths[i]);
			*ret_flags = xstrdup(flags[i]);
			return 0;
		}
		strv_consume(&tried, xasprintf("'%s' (%s)", paths[i], why));
	}
	_cleanup_free_ char *list = strv_join(tried, ", ");
	return kiln_error(err, ENOENT, "no QEMU interpreter for %s: looked at %s; " INSTALL_HINT,
			  ps, list);
}

/* ---- the private binfmt_misc instance ---- */

static pthread_mutex_t binfmt_lock = PTHREAD_MUTEX_INITIALIZER;

/* One detached mount per process and user namespace (userns_enter() forks: a child must not
 * reuse the parent's). Guarded by binfmt_lock. */
static struct {
	dev_t ns_dev;
	ino_t ns_ino;
	bool tried;
	int fd;	    /* the mount's root, or -1 */
	int errnum; /* why it could not be mounted */
} instance = {.fd = -1};

/* Mounts this user namespace's binfmt_misc instance without a mount point: the fd keeps the
 * superblock (and so the registrations) alive, and nothing is visible in any directory. */
static int binfmt_mount_detached(void)
{
	_cleanup_close_ int fs = fsopen("binfmt_misc", FSOPEN_CLOEXEC);

	if (fs < 0)
		return -errno;
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return -errno;
	int mnt =
	    fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
	return mnt < 0 ? -errno : mnt;
}

/* The instance's fd, or < 0 with *ret_why set. Caller holds binfmt_lock. */
static int private_instance(char **ret_why)
{
	struct stat ns;

	if (stat("/proc/self/ns/user", &ns) < 0) {
		int e = errno;
		*ret_why = xasprintf("cannot identify the user namespace: %s", strerror(e));
		return -e;
	}
	if (ns.st_ino == INIT_USERNS_INO) {
		*ret_why = xstrdup("not inside a user namespace of kiln's own (the initial user "
				   "namespace's binfmt_misc is the host's)");
		return -EPERM;
	}
	if (!instance.tried || instance.ns_dev != ns.st_dev || instance.ns_ino != ns.st_ino) {
		if (instance.fd >= 0)
			close(instance.fd);
		int r = binfmt_mount_detached();
		instance.fd = r < 0 ? -1 : r;
		instance.errnum = r < 0 ? -r : 0;
		instance.ns_dev = ns.st_dev;
		instance.ns_ino = ns.st_ino;
		instance.tried = true;
	}
	if (instance.fd < 0) {
		*ret_why = xasprintf("cannot mount a private binfmt_misc instance (needs Linux >= "
				     "6.7): %s",
				     strerror(instance.errnum));
		return -instance.errnum;
	}
	return instance.fd;
}

static char *hex_escape(const unsigned char *b, size_t n)
{
	char *s = xcalloc(1, 4 * n + 1);

	for (size_t i = 0; i < n; i++)
		snprintf(s + 4 * i, 5, "\\x%02x", b[i]);
	return s;
}

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

/* A sealed, read-only memfd copy of the interpreter. With the F flag the kernel keeps the file
 * it opened at registration, and an emulated process's /proc/PID/exe leads to it: that must be
 * no host inode whose mode or owner a build step could change (a setuid QEMU would give any
 * local user root). */
static int interpreter_copy(const char *interp, int *ret_fd, char **ret_why)
{
	_cleanup_close_ int src = open(interp, O_RDONLY | O_CLOEXEC), fd = -1;
	const unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	struct stat st;

	if (src < 0 || fstat(src, &st) < 0)
		goto fail;
	/* MFD_EXEC (Linux 6.3) keeps the copy executable where vm.memfd_noexec asks for it. */
	fd = memfd_create("kiln-qemu", flags | MFD_EXEC);
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("kiln-qemu", flags);
	if (fd < 0)
		goto fail;
	for (off_t done = 0; done < st.st_size;) {
		ssize_t n = sendfile(fd, src, NULL, (size_t)(st.st_size - done));
		if (n <= 0) {
			errno = n < 0 ? errno : EIO;
			goto fail;
		}
		done += n;
	}
	if (fchmod(fd, 0555) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		goto fail;
	*ret_fd = TAKE_FD(fd);
	return 0;
fail:
	*ret_why = xasprintf("copy the interpreter '%s': %s", interp, strerror(errno));
	return -errno;
}

/* Registers the sealed copy under a path that ends like interp: Debian's QEMU tells
 * preserve-argv[0] mode by the "-binfmt-P" suffix of the name it is started as (argv[0] is the
 * registered path), so the registration goes through a symlink of that name in a private temp
 * dir, removed right after (the kernel holds the opened file, not the path). */
static int register_copy(int dir, const char *name, const char *interp, int copy, const char *magic,
			 const char *mask, const char *flags, char **ret_why)
{
	const char *tmpdir = getenv("TMPDIR");
	bool tmp_ok = tmpdir && *tmpdir == '/' && !strpbrk(tmpdir, ":\n");
	_cleanup_free_ char *tmpl = xasprintf("%s/kiln-binfmt-XXXXXX", tmp_ok ? tmpdir : "/tmp");
	const char *base = strrchr(interp, '/') ? strrchr(interp, '/') + 1 : interp;
	int r = 0;

	if (!mkdtemp(tmpl)) {
		*ret_why = xasprintf("create a temp dir in '%s': %s", tmpl, strerror(errno));
		return -errno;
	}
	_cleanup_free_ char *link = xasprintf("%s/%s", tmpl, base),
			    *target = xasprintf("/proc/%d/fd/%d", (int)getpid(), copy),
			    *line =
				xasprintf(":%s:M:0:%s:%s:%s:%s", name, magic, mask, link, flags);
	if (symlink(target, link) < 0) {
		r = -errno;
		*ret_why = xasprintf("symlink '%s': %s", link, strerror(errno));
	} else {
		_cleanup_close_ int fd = openat(dir, "register", O_WRONLY | O_CLOEXEC);
		r = fd < 0 ? -errno : write_all(fd, line, strlen(line));
		if (r == -EEXIST) /* registered since the check: by another kiln here */
			r = 0;
		if (r < 0)
			*ret_why = xasprintf("register '%s' in the private binfmt_misc: %s", name,
					     strerror(-r));
		unlink(link);
	}
	rmdir(tmpl);
	return r;
}

static int private_register(const BinfmtMagic *m, const char *interp, const char *flags,
			    char **ret_why)
{
	_cleanup_free_ char *name = xasprintf("kiln-%s", m->qemu_arch);
	int dir = private_instance(ret_why);

	if (dir < 0)
		return dir;
	if (faccessat(dir, name, F_OK, 0) == 0)
		return 0;
	if (strpbrk(interp, ":\n")) {
		*ret_why = xasprintf("interpreter path '%s' contains ':' or a newline", interp);
		return -EINVAL;
	}
	/* Magic and mask always \x-escaped: raw bytes could contain the ':' delimiter. */
	_cleanup_free_ char *magic = hex_escape(m->magic, BINFMT_MAGIC_LEN),
			    *mask = hex_escape(m->mask, BINFMT_MAGIC_LEN);
	_cleanup_close_ int copy = -1;
	int r = interpreter_copy(interp, &copy, ret_why);
	if (r < 0)
		return r;
	return register_copy(dir, name, interp, copy, magic, mask, flags, ret_why);
}

/* ---- the host's binfmt_misc ---- */

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes the hex digits at the start of s (up to a newline or anything else). */
static size_t parse_hex(const char *s, unsigned char *out, size_t max)
{
	size_t n = 0;

	while (n < max && hex_digit(s[2 * n]) >= 0 && hex_digit(s[2 * n + 1]) >= 0) {
		out[n] = (unsigned char)(hex_digit(s[2 * n]) << 4 | hex_digit(s[2 * n + 1]));
		n++;
	}
	return n;
}

typedef struct HostEntry {
	bool enabled, fix_binary;
	char interpreter[4096];
	unsigned offset;
	unsigned char magic[128], mask[128];
	size_t magic_len;
} HostEntry;

static bool host_entry_parse(const char *text, HostEntry *e)
{
	bool have_mask = false;

	*e = (HostEntry){.enabled = !strncmp(text, "enabled", 7)};
	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		if (!strncmp(l, "interpreter ", 12))
			sscanf(l + 12, "%4095[^\n]", e->interpreter);
		else if (!strncmp(l, "flags: ", 7))
			e->fix_binary = memchr(l + 7, 'F', (size_t)(strchrnul(l, '\n') - (l + 7)));
		else if (!strncmp(l, "offset ", 7))
			sscanf(l + 7, "%u", &e->offset);
		else if (!strncmp(l, "magic ", 6))
			e->magic_len = parse_hex(l + 6, e->magic, sizeof(e->magic));
		else if (!strncmp(l, "mask ", 5))
			have_mask = parse_hex(l + 5, e->mask, sizeof(e->mask)) > 0;
		else if (!strncmp(l, "extension ", 10))
			return false;
	}
	if (!have_mask)
		memset(e->mask, 0xff, sizeof(e->mask));
	return e->magic_len > 0;
}

/* Would the kernel hand an ELF file with header m->magic to this entry? */
static bool host_entry_matches(const HostEntry *e, const BinfmtMagic *m)
{
	if (e->offset + e->magic_len > BINFMT_MAGIC_LEN)
		return false;
	for (size_t i = 0; i < e->magic_len; i++)
		if ((m->magic[e->offset + i] & e->mask[i]) != (e->magic[i] & e->mask[i]))
			return false;
	return true;
}

/* 1 with the entry's name and interpreter, 0 with *ret_why when there is none. */
static int host_find_entry(const BinfmtMagic *m, char **ret_name, char **ret_interp, char **ret_why)
{
	_cleanup_close_ int dir = open(HOST_BINFMT_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *status = NULL;
	_cleanup_strv_free_ char **notes = NULL;

	if (dir < 0 || read_file_at(dir, "status", 64, &status, NULL, NULL) < 0) {
		*ret_why = xstrdup("the host's binfmt_misc is not mounted at " HOST_BINFMT_DIR);
		return 0;
	}
	if (strncmp(status, "enabled", 7) != 0) {
		*ret_why = xstrdup("the host's binfmt_misc is disabled");
		return 0;
	}
	int dfd = fcntl(dir, F_DUPFD_CLOEXEC, 3);
	_cleanup_closedir_ DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *de;
	if (!d && dfd >= 0)
		close(dfd);
	while (d && (de = readdir(d))) {
		_cleanup_free_ char *text = NULL;
		HostEntry e;
		if (de->d_name[0] == '.' || !strcmp(de->d_name, "register") ||
		    !strcmp(de->d_name, "status") ||
		    read_file_at(dir, de->d_name, 16384, &text, NULL, NULL) < 0 ||
		    !host_entry_parse(text, &e) || !host_entry_matches(&e, m))
			continue;
		if (!e.enabled)
			strv_consume(&notes, xasprintf("host entry '%s' is disabled", de->d_name));
		else if (!e.fix_binary)
			strv_consume(&notes,
				     xasprintf("host entry '%s' lacks the F flag (its "
					       "interpreter would have to exist in the image)",
					       de->d_name));
		else {
			*ret_name = xasprintf(HOST_BINFMT_DIR "/%s", de->d_name);
			*ret_interp = xstrdup(e.interpreter);
			return 1;
		}
	}
	if (notes)
		*ret_why = strv_join(notes, ", ");
	else
		*ret_why =
		    xasprintf("the host's binfmt_misc has no entry for %s binaries", m->arch);
	return 0;
}

/* ---- binfmt_ensure ---- */

static int ensure_locked(const Platform *p, const char *qemu_dir, EmulationKind *ret_kind,
			 KilnError **err)
{
	_cleanup_strv_free_ char **tried = NULL;
	_cleanup_free_ char *interp = NULL, *flags = NULL, *why = NULL, *name = NULL,
			    *host_interp = NULL;
	_cleanup_error_ KilnError *e = NULL;
	char ps[PLATFORM_STRING_MAX];
	const BinfmtMagic *m = binfmt_magic_for(p);
	Platform host;

	platform_host(&host);
	if (platform_runs_natively(&host, p)) {
		*ret_kind = EMULATION_NATIVE;
		return 0;
	}
	platform_format(p, ps, sizeof(ps));
	if (!m || strcmp(p->os, "linux") != 0)
		return kiln_error(err, ENOTSUP,
				  "cannot run %s binaries: kiln has no QEMU emulation "
				  "for this platform",
				  ps);
	if (binfmt_find_interpreter(p, qemu_dir, &interp, &flags, &e) == 0) {
		if (private_register(m, interp, flags, &why) == 0) {
			*ret_kind = EMULATION_PRIVATE;
			return 0;
		}
		strv_consume(&tried, TAKE_PTR(why));
	}
	if (host_find_entry(m, &name, &host_interp, &why) > 0) {
		*ret_kind = EMULATION_HOST;
		return 0;
	}
	strv_consume(&tried, TAKE_PTR(why));
	/* The interpreter's error ends with what to install: keep it last. */
	strv_push(&tried, e ? e->message
			    : "the interpreter is there but needs Linux >= 6.7 for a private "
			      "registration, or a host registration: " INSTALL_HINT
			      " and binfmt-support");
	_cleanup_free_ char *list = strv_join(tried, "; ");
	return kiln_error(err, ENOENT, "cannot run %s binaries: %s", ps, list);
}

int binfmt_ensure(const Platform *p, const char *qemu_dir, EmulationKind *ret_kind, KilnError **err)
{
	EmulationKind kind;

	pthread_mutex_lock(&binfmt_lock);
	int r = ensure_locked(p, qemu_dir, &kind, err);
	pthread_mutex_unlock(&binfmt_lock);
	if (r >= 0)
		*ret_kind = kind;
	return r;
}

/* ---- kiln doctor ---- */

/* Exit status of a child that tries the private instance: 0, or the errno that stopped it.
 * Between fork() and _exit() it only makes system calls on prepared buffers. */
static int probe_private_instance(void)
{
	char uid_map[64], gid_map[64];
	int status;

	snprintf(uid_map, sizeof(uid_map), "0 %u 1", (unsigned)geteuid());
	snprintf(gid_map, sizeof(gid_map), "0 %u 1", (unsigned)getegid());
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return errno;
	if (pid == 0) {
		const char *files[] = {"/proc/self/uid_map", "/proc/self/setgroups",
				       "/proc/self/gid_map"};
		const char *data[] = {uid_map, "deny", gid_map};
		/* In a root build's namespace kiln is not dumpable (its ids changed), which makes
		 * its /proc/self files host root's: unreachable from a new user namespace. */
		if (prctl(PR_SET_DUMPABLE, 1) < 0 || unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			_exit(errno);
		for (size_t i = 0; i < ELEMENTSOF(files); i++) {
			int fd = open(files[i], O_WRONLY | O_CLOEXEC);
			if (fd < 0 || write(fd, data[i], strlen(data[i])) < 0)
				_exit(errno);
			close(fd);
		}
		int mnt = binfmt_mount_detached();
		if (mnt < 0)
			_exit(-mnt);
		if (openat(mnt, "register", O_WRONLY | O_CLOEXEC) < 0)
			_exit(errno);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
}

/* NULL when a private instance works here, else why not. */
static char *private_unavailable(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return xstrdup("cannot read the kernel version");
	if (major < 6 || (major == 6 && minor < 7))
		return xasprintf("kernel %s has no per-user-namespace binfmt_misc (needs 6.7)",
				 u.release);
	int e = probe_private_instance();
	if (e)
		return xasprintf("a binfmt_misc mount in a user namespace failed: %s", strerror(e));
	return NULL;
}

static char *doctor_line(const char *platform, const char *qemu_dir, const char *no_private)
{
	_cleanup_free_ char *interp = NULL, *flags = NULL, *why = NULL, *name = NULL,
			    *host_interp = NULL;
	_cleanup_error_ KilnError *e = NULL;
	Platform p, host;

	if (platform_parse(platform, &p, &e) < 0)
		return xasprintf("%s: not available: %s", platform, e->message);
	platform_host(&host);
	if (platform_runs_natively(&host, &p))
		return xasprintf("%s: native", platform);
	int have_interp = binfmt_find_interpreter(&p, qemu_dir, &interp, &flags, &e) == 0;
	if (have_interp && !no_private) {
		/* Debian's <arch>-binfmt-P names are symlinks: show the binary behind them too. */
		_cleanup_free_ char *real = realpath(interp, NULL);
		_cleanup_free_ char *shown = real && strcmp(real, interp) != 0
						 ? xasprintf("%s -> %s", interp, real)
						 : xstrdup(interp);
		return xasprintf("%s: private binfmt_misc, interpreter %s (flags %s)", platform,
				 shown, flags);
	}
	const BinfmtMagic *m = binfmt_magic_for(&p);
	if (m && host_find_entry(m, &name, &host_interp, &why) > 0)
		return xasprintf("%s: host binfmt_misc entry %s, interpreter %s", platform, name,
				 host_interp);
	_cleanup_strv_free_ char **reasons = NULL;
	if (have_interp)
		strv_push(&reasons, no_private);
	if (why)
		strv_push(&reasons, why);
	strv_push(&reasons, have_interp ? "the interpreter needs a private or a host "
					  "registration: " INSTALL_HINT " and binfmt-support"
					: e->message);
	_cleanup_free_ char *list = strv_join(reasons, "; ");
	return xasprintf("%s: not available: %s", platform, list);
}

int binfmt_doctor_report(const char *qemu_dir, char ***ret_lines, KilnError **err)
{
	static const char *const platforms[] = {"linux/arm64", "linux/arm/v7",	"linux/ppc64le",
						"linux/s390x", "linux/riscv64", "linux/386"};
	_cleanup_free_ char *no_private = private_unavailable();
	_cleanup_strv_free_ char **lines = xcalloc(1, sizeof(char *));

	for (size_t i = 0; i < ELEMENTSOF(platforms); i++)
		if (strv_consume(&lines, doctor_line(platforms[i], qemu_dir, no_private)) < 0)
			return kiln_error(err, ENOMEM, "out of memory");
	*ret_lines = TAKE_PTR(lines);
	return 0;
}
