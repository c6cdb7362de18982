/* Foreign-architecture tests: ELF platform detection, QEMU interpreter lookup, the binfmt_misc
 * registration table, and real emulation of an arm64 busybox through a private binfmt_misc
 * instance (Linux >= 6.7) and through a "host" registration, as root and as the user "kilntest"
 * with a subordinate id range.
 *
 * Needs root (it switches users itself), qemu-user-static, and an arm64 static busybox from
 * the Debian package busybox-static:arm64, cached in /tmp/kiln-test-cache
 * ($KILN_TEST_BUSYBOX_ARM64 overrides). */
#include <errno.h>
#include <libgen.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "platforms/binfmt.h"
#include "platforms/elf.h"
#include "platforms/platform.h"
#include "sandbox/userns.h"
#include "nstest.h"
#include "tap.h"

static const char *busybox_arm64;
static Platform host;

/* ---- helpers ---- */

static void write_bytes(const char *path, const void *data, size_t len)
{
	_cleanup_close_ int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0755);

	CHECK(fd >= 0);
	if (fd >= 0)
		CHECK(write_all(fd, data, len) == 0);
}

static void write_text(const char *path, const char *text)
{
	write_bytes(path, text, strlen(text));
}

static void put16(unsigned char *p, unsigned v, bool le)
{
	p[le ? 0 : 1] = v & 0xff;
	p[le ? 1 : 0] = (v >> 8) & 0xff;
}

static void put32(unsigned char *p, uint32_t v, bool le)
{
	for (int i = 0; i < 4; i++)
		p[le ? i : 3 - i] = (v >> (8 * i)) & 0xff;
}

/* A bare ELF header (64 bytes, also for class 32) with no program or section headers. */
static void make_elf(unsigned char *b, int cls, bool le, unsigned machine, int osabi)
{
	memset(b, 0, 64);
	memcpy(b,
	       "\x7f"
	       "ELF",
	       4);
	b[4] = (unsigned char)cls;
	b[5] = le ? 1 : 2;
	b[6] = 1;
	b[7] = (unsigned char)osabi;
	put16(b + 16, 2, le);
	put16(b + 18, machine, le);
}

/* Detects the platform of a file; NULL on error (message in *msg when msg is non-NULL). */
static bool detect_file(const char *path, char *out, int *ret_code, char **msg)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_error_ KilnError *e = NULL;
	Platform p;

	CHECK(fd >= 0);
	int r = elf_detect_platform(fd, &p, &e);
	if (ret_code)
		*ret_code = r;
	if (r < 0) {
		if (msg)
			*msg = xstrdup(e ? e->message : "");
		return false;
	}
	/* The file offset is untouched: callers may read the file afterwards. */
	CHECK_EQ_INT(lseek(fd, 0, SEEK_CUR), 0);
	platform_format(&p, out, PLATFORM_STRING_MAX);
	return true;
}

static void check_detect(const char *path, const char *want)
{
	char out[PLATFORM_STRING_MAX];
	_cleanup_free_ char *msg = NULL;

	if (!detect_file(path, out, NULL, &msg)) {
		printf("#   '%s': %s\n", path, msg);
		tap_cur_failed = 1;
		return;
	}
	CHECK_EQ_STR(out, want);
}

static void check_synthetic(int cls, bool le, unsigned machine, int osabi, const char *want)
{
	unsigned char b[64];

	make_elf(b, cls, le, machine, osabi);
	write_bytes("bin", b, sizeof(b));
	check_detect("bin", want);
}

static void check_not_elf(const char *what, const void *data, size_t len, const char *want_msg)
{
	char out[PLATFORM_STRING_MAX];
	_cleanup_free_ char *msg = NULL;
	int code = 0;

	write_bytes("bin", data, len);
	CHECK(!detect_file("bin", out, &code, &msg));
	CHECK_EQ_INT(code, -ENOEXEC);
	if (!msg || !strstr(msg, want_msg)) {
		printf("#   %s: '%s' does not contain '%s'\n", what, msg ? msg : "", want_msg);
		tap_cur_failed = 1;
	}
}

static bool is_static(const char *path, int *ret_code)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool s = false;

	*ret_code = elf_is_static(fd, &s, NULL);
	return s;
}

static void host_string(char *out)
{
	platform_format(&host, out, PLATFORM_STRING_MAX);
}

static Platform parse(const char *s)
{
	Platform p = {0};

	CHECK(platform_parse(s, &p, NULL) == 0);
	return p;
}

/* ---- ELF detection ---- */

TEST(elf_detects_real_binaries)
{
	char h[PLATFORM_STRING_MAX];
	int code;

	host_string(h);
	check_detect("/bin/ls", h);
	check_detect(QEMU_AARCH64, h);
	check_detect(busybox_arm64, "linux/arm64");
	CHECK(is_static(QEMU_AARCH64, &code) && code == 0);
	CHECK(is_static(busybox_arm64, &code) && code == 0);
	CHECK(!is_static("/bin/ls", &code) && code == 0);
}

TEST(elf_detects_foreign_headers)
{
	check_synthetic(2, true, 183, 0, "linux/arm64");
	check_synthetic(1, true, 40, 0, "linux/arm/v7"); /* no attributes: v7 */
	check_synthetic(2, true, 21, 0, "linux/ppc64le");
	check_synthetic(2, false, 21, 0, "linux/ppc64");
	check_synthetic(2, false, 22, 0, "linux/s390x");
	check_synthetic(2, true, 243, 0, "linux/riscv64");
	check_synthetic(2, true, 8, 0, "linux/mips64le");
	check_synthetic(2, false, 8, 0, "linux/mips64");
	check_synthetic(1, true, 8, 0, "linux/mipsle");
	check_synthetic(2, true, 258, 0, "linux/loong64");
	check_synthetic(1, true, 3, 0, "linux/386");
	check_synthetic(2, true, 62, 0, "linux/amd64");
	check_synthetic(2, true, 62, 9, "freebsd/amd64");
}

/* A 32-bit little-endian ARM ELF with one .ARM.attributes section holding `attrs`. */
static void make_arm_with_attributes(const unsigned char *attrs, size_t n)
{
	unsigned char b[256] = {0};

	make_elf(b, 1, true, 40, 0);
	put32(b + 32, 64, true); /* e_shoff */
	put16(b + 46, 40, true); /* e_shentsize */
	put16(b + 48, 1, true);	 /* e_shnum */
	put32(b + 64 + 4, 0x70000003, true);
	put32(b + 64 + 16, 104, true); /* sh_offset */
	put32(b + 64 + 20, (uint32_t)n, true);
	memcpy(b + 104, attrs, n);
	write_bytes("bin", b, 104 + n);
}

static void check_arm_arch(unsigned cpu_arch, const char *want)
{
	/* "A", subsection length 26, "aeabi", file tag 1 with length 15: Tag_CPU_name "7-A",
	 * Tag_CPU_arch, Tag_ARM_ISA_use 1. */
	unsigned char a[] = {'A', 24, 0, 0, 0,	 'a', 'e', 'a', 'b', 'i', 0, 1, 14,
			     0,	  0,  0, 5, '7', '-', 'A', 0,	6,   0,	  8, 1};
	a[22] = (unsigned char)cpu_arch;
	CHECK_EQ_INT(a[1], sizeof(a) - 1);
	CHECK_EQ_INT(a[12], sizeof(a) - 11);
	make_arm_with_attributes(a, sizeof(a));
	check_detect("bin", want);
}

TEST(elf_arm_variant_from_attributes)
{
	check_arm_arch(10, "linux/arm/v7");
	check_arm_arch(6, "linux/arm/v6");
	check_arm_arch(9, "linux/arm/v6");
	check_arm_arch(4, "linux/arm/v5");
	check_arm_arch(14, "linux/arm/v8");
	/* Damaged attributes fall back to v7, without reading out of bounds. */
	unsigned char bad_len[] = {'A', 0xff, 0xff, 0, 0, 'a', 'e', 'a', 'b', 'i', 0};
	make_arm_with_attributes(bad_len, sizeof(bad_len));
	check_detect("bin", "linux/arm/v7");
	unsigned char bad_version[] = {'B', 11, 0, 0, 0, 'a', 'e', 'a', 'b', 'i', 0};
	make_arm_with_attributes(bad_version, sizeof(bad_version));
	check_detect("bin", "linux/arm/v7");
	unsigned char unterminated[] = {'A', 19, 0, 0, 0, 'a', 'e', 'a', 'b', 'i',
					0,   1,	 9, 0, 0, 0,   5,   'x', 'y', 'z'};
	make_arm_with_attributes(unterminated, sizeof(unterminated));
	check_detect("bin", "linux/arm/v7");
}

TEST(elf_rejects_what_is_not_elf)
{
	unsigned char b[64];

	check_not_elf("script", "#!/bin/sh\necho hi\n", 18, "not an ELF binary: a '#!' script");
	check_not_elf("empty", "", 0, "an empty file");
	make_elf(b, 2, true, 183, 0);
	check_not_elf("truncated", b, 20, "truncated ELF header (20 of 64 bytes)");
	check_not_elf("tiny", b, 3, "truncated ELF header (3 bytes)");
	check_not_elf("text", "hello world", 11,
		      "not an ELF binary: data starting with 68 65 6c 6c");
	check_not_elf("gzip", "\x1f\x8b\x08\x00", 4, "gzip data");
	make_elf(b, 2, true, 0x1234, 0);
	check_not_elf("machine", b, sizeof(b), "unsupported ELF machine 4660");
	make_elf(b, 3, true, 183, 0);
	check_not_elf("class", b, sizeof(b), "invalid ELF class 3");
	make_elf(b, 2, true, 183, 0);
	b[5] = 7;
	check_not_elf("byte order", b, sizeof(b), "invalid ELF byte order 7");
}

TEST(elf_is_static_reads_program_headers)
{
	unsigned char b[64 + 2 * 56] = {0};
	int code;

	make_elf(b, 2, true, 183, 0);
	b[32] = 64;		     /* e_phoff */
	put16(b + 54, 56, true);     /* e_phentsize */
	put16(b + 56, 2, true);	     /* e_phnum */
	put32(b + 64, 1, true);	     /* PT_LOAD */
	put32(b + 64 + 56, 3, true); /* PT_INTERP */
	write_bytes("dyn", b, sizeof(b));
	CHECK(!is_static("dyn", &code));
	CHECK_EQ_INT(code, 0);
	put32(b + 64 + 56, 1, true);
	write_bytes("static", b, sizeof(b));
	CHECK(is_static("static", &code));
	CHECK_EQ_INT(code, 0);
	write_bytes("short", b, 64 + 56 + 2); /* the second entry is cut off */
	is_static("short", &code);
	CHECK_EQ_INT(code, -ENOEXEC);
	write_text("script", "#!/bin/sh\n");
	is_static("script", &code);
	CHECK_EQ_INT(code, -ENOEXEC);
}

/* ---- native execution and names ---- */

TEST(runs_natively_table)
{
	Platform amd64 = parse("linux/amd64"), arm64 = parse("linux/arm64"),
		 armv7 = parse("linux/arm/v7"), armv6 = parse("linux/arm/v6"),
		 armv8 = parse("linux/arm/v8"), i386 = parse("linux/386"),
		 win = parse("windows/amd64"), amd64v3 = parse("linux/amd64/v3");

	CHECK(platform_runs_natively(&amd64, &amd64));
	CHECK(platform_runs_natively(&amd64, &amd64v3));
	CHECK(platform_runs_natively(&amd64, &i386));
	CHECK(!platform_runs_natively(&i386, &amd64));
	CHECK(!platform_runs_natively(&amd64, &arm64));
	CHECK(!platform_runs_natively(&amd64, &armv7));
	CHECK(!platform_runs_natively(&amd64, &win));
	CHECK(platform_runs_natively(&arm64, &arm64));
	CHECK(!platform_runs_natively(&arm64, &amd64));
	CHECK(platform_runs_natively(&armv7, &armv6));
	CHECK(platform_runs_natively(&armv7, &armv7));
	CHECK(!platform_runs_natively(&armv6, &armv7));
	CHECK(!platform_runs_natively(&armv7, &armv8));
	CHECK_EQ_STR(emulation_kind_to_string(EMULATION_NATIVE), "native");
	CHECK_EQ_STR(emulation_kind_to_string(EMULATION_PRIVATE), "private binfmt_misc");
	CHECK_EQ_STR(emulation_kind_to_string(EMULATION_HOST), "host binfmt_misc");
}

/* ---- the registration table against Debian's templates ---- */

/* Decodes a binfmt-support "magic"/"mask" value: \xHH escapes and literal characters. */
static size_t decode_binfmts(const char *s, unsigned char *out, size_t max)
{
	size_t n = 0;
	unsigned v;

	while (*s && *s != '\n' && n < max) {
		if (s[0] == '\\' && s[1] == 'x' && sscanf(s + 2, "%2x", &v) == 1) {
			out[n++] = (unsigned char)v;
			s += 4;
		} else if (s[0] == '\\' && s[1]) {
			out[n++] = (unsigned char)s[1];
			s += 2;
		} else
			out[n++] = (unsigned char)*s++;
	}
	return n;
}

static size_t template_field(const char *text, const char *key, unsigned char *out)
{
	size_t klen = strlen(key);

	for (const char *l = text; l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		if (!strncmp(l, key, klen) && l[klen] == ' ')
			return decode_binfmts(l + klen + 1, out, 64);
	return 0;
}

TEST(magic_table_matches_debian_templates)
{
	size_t n, compared = 0;
	const BinfmtMagic *t = binfmt_magic_table(&n);
	const char *must = getenv("KILN_MUST_WORK");

	if (access("/usr/share/binfmts/qemu-aarch64", R_OK) < 0) {
		printf("#   skipped: no /usr/share/binfmts/qemu-* (install qemu-user-static)\n");
		CHECK(!must || strcmp(must, "1") != 0);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *path = xasprintf("/usr/share/binfmts/qemu-%s", t[i].qemu_arch);
		_cleanup_free_ char *text = read_text(path);
		unsigned char magic[64], mask[64], offset[8];
		if (!text) {
			/* Debian leaves out the host's own family (i386 and x86_64 on amd64). */
			printf("#   no %s: not compared\n", path);
			continue;
		}
		CHECK_EQ_INT(template_field(text, "magic", magic), BINFMT_MAGIC_LEN);
		CHECK_EQ_INT(template_field(text, "mask", mask), BINFMT_MAGIC_LEN);
		CHECK_EQ_INT(template_field(text, "offset", offset), 1);
		CHECK_EQ_INT(offset[0], '0');
		if (memcmp(magic, t[i].magic, BINFMT_MAGIC_LEN) ||
		    memcmp(mask, t[i].mask, BINFMT_MAGIC_LEN)) {
			printf("#   %s: magic or mask differs\n", t[i].qemu_arch);
			tap_cur_failed = 1;
		}
		compared++;
	}
	CHECK(compared >= 8);
	/* Every entry's magic is what the ELF detector reads back as that arch. */
	for (size_t i = 0; i < n; i++) {
		unsigned char b[64] = {0};
		char out[PLATFORM_STRING_MAX];
		memcpy(b, t[i].magic, BINFMT_MAGIC_LEN);
		write_bytes("bin", b, sizeof(b));
		if (!detect_file("bin", out, NULL, NULL))
			continue;
		Platform p = parse(out);
		CHECK_EQ_STR(p.arch, t[i].arch);
		CHECK(binfmt_magic_for(&p) == &t[i]);
	}
}

/* ---- interpreter lookup ---- */

static void check_find(const char *platform, const char *qemu_dir, const char *want_path,
		       const char *want_flags)
{
	_cleanup_free_ char *path = NULL, *flags = NULL;
	_cleanup_error_ KilnError *e = NULL;
	Platform p = parse(platform);

	if (binfmt_find_interpreter(&p, qemu_dir, &path, &flags, &e) < 0) {
		printf("#   %s: %s\n", platform, e->message);
		tap_cur_failed = 1;
		return;
	}
	CHECK_EQ_STR(path, want_path);
	CHECK_EQ_STR(flags, want_flags);
}

TEST(interpreter_lookup_order)
{
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	_cleanup_free_ char *p_dir = xasprintf("%s/p", cwd), *s_dir = xasprintf("%s/s", cwd),
			    *bad = xasprintf("%s/bad", cwd);
	_cleanup_free_ char *want_p = xasprintf("%s/aarch64-binfmt-P", p_dir),
			    *want_s = xasprintf("%s/qemu-aarch64-static", s_dir);

	CHECK(mkdir("p", 0755) == 0 && mkdir("s", 0755) == 0 && mkdir("bad", 0755) == 0);
	CHECK(symlink(QEMU_AARCH64, "p/aarch64-binfmt-P") == 0);
	CHECK(symlink(QEMU_AARCH64, "p/qemu-aarch64-static") == 0);
	CHECK(symlink(QEMU_AARCH64, "s/qemu-aarch64-static") == 0);
	check_find("linux/arm64", p_dir, want_p, "FP");
	check_find("linux/arm64", s_dir, want_s, "F");
	/* Unusable candidates are passed over: a script, a dynamic binary, a non-executable file,
	 * a foreign binary and a directory. */
	write_text("bad/aarch64-binfmt-P", "#!/bin/sh\n");
	CHECK(symlink("/bin/ls", "bad/qemu-aarch64-static") == 0);
	CHECK(mkdir("bad/qemu-aarch64", 0755) == 0);
	check_find("linux/arm64", bad, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "FP");
	CHECK(rmdir("bad/qemu-aarch64") == 0);
	CHECK(symlink(busybox_arm64, "bad/qemu-aarch64") == 0);
	check_find("linux/arm64", bad, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "FP");
	CHECK(unlink("s/qemu-aarch64-static") == 0);
	CHECK(system("cp " QEMU_AARCH64 " s/qemu-aarch64-static && chmod 644 "
		     "s/qemu-aarch64-static") == 0);
	check_find("linux/arm64", s_dir, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "FP");
	/* No qemu_dir: Debian's preserve-argv0 names first; other arches map to QEMU's names. */
	check_find("linux/arm64", NULL, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "FP");
	check_find("linux/arm/v6", NULL, "/usr/libexec/qemu-binfmt/arm-binfmt-P", "FP");
	check_find("linux/mips64le", NULL, "/usr/libexec/qemu-binfmt/mips64el-binfmt-P", "FP");
	check_find("linux/loong64", NULL, "/usr/libexec/qemu-binfmt/loongarch64-binfmt-P", "FP");

	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *path = NULL, *flags = NULL;
	Platform sparc = parse("linux/sparc64");
	CHECK_EQ_INT(binfmt_find_interpreter(&sparc, NULL, &path, &flags, &e), -ENOTSUP);
	CHECK(e && strstr(e->message, "linux/sparc64"));
	CHECK(path == NULL);
}

/* Hides Debian's interpreters in a private mount namespace, so that only the test's dirs count. */
static void body_missing_interpreter(void)
{
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	_cleanup_free_ char *path = NULL, *flags = NULL, *cwd = NULL;
	IdMapInfo info;
	EmulationKind kind = EMULATION_NATIVE;
	Platform mips = parse("linux/mips64le");

	CHECK(mkdir("empty", 0755) == 0 && mkdir("fakepath", 0755) == 0);
	CHECK(system("cp /bin/ls fakepath/qemu-mips64el-static") == 0);
	enter_userns(&info, NULL);
	CHECK(mount("tmpfs", "/usr/libexec/qemu-binfmt", "tmpfs", 0, NULL) == 0);
	CHECK(mount("tmpfs", "/usr/bin", "tmpfs", 0, NULL) == 0);
	cwd = getcwd(NULL, 0);
	_cleanup_free_ char *path_env = xasprintf("%s/fakepath", cwd),
			    *empty = xasprintf("%s/empty", cwd);
	setenv("PATH", path_env, 1);

	CHECK_EQ_INT(binfmt_find_interpreter(&mips, empty, &path, &flags, &e), -ENOENT);
	const char *want[] = {"no QEMU interpreter for linux/mips64le",
			      "/empty/mips64el-binfmt-P' (not found)",
			      "/empty/qemu-mips64el' (not found)",
			      "'/usr/libexec/qemu-binfmt/mips64el-binfmt-P' (not found)",
			      "/fakepath/qemu-mips64el-static' (dynamically linked",
			      "'/usr/bin/qemu-mips64el-static' (not found)",
			      "install the Debian/Ubuntu package qemu-user-static"};
	for (size_t i = 0; i < ELEMENTSOF(want); i++)
		if (!e || !strstr(e->message, want[i])) {
			printf("#   missing '%s' in: %s\n", want[i], e ? e->message : "");
			tap_cur_failed = 1;
		}
	CHECK(path == NULL && flags == NULL);

	CHECK_EQ_INT(binfmt_ensure(&mips, empty, &kind, &e2), -ENOENT);
	CHECK(e2 && strstr(e2->message, "cannot run linux/mips64le binaries: "));
	CHECK(e2 && strstr(e2->message, "qemu-user-static"));
	CHECK_EQ_INT(kind, EMULATION_NATIVE); /* untouched on failure */
	if (e2)
		printf("#   %s\n", e2->message);
}

/* ---- running arm64 binaries ---- */

/* Runs `busybox uname -m` (optionally chrooted into root, which holds only bin/busybox) and
 * returns its stdout, or NULL. */
static char *run_uname(const char *root, bool expect_failure)
{
	int pfd[2], status;
	char *out = NULL;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return NULL;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		const char *bin = root ? "/bin/busybox" : busybox_arm64;
		dup2(pfd[1], 1);
		if (root && (unshare(CLONE_NEWNS) < 0 || chroot(root) < 0 || chdir("/") < 0))
			_exit(126);
		execl(bin, "busybox", "uname", "-m", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	if (read_all_fd(pfd[0], 4096, &out, NULL, NULL) < 0)
		out = NULL;
	close(pfd[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (!expect_failure)
			printf("#   uname exited with status 0x%x\n", status);
		free(out);
		return NULL;
	}
	return out;
}

static bool host_has_aarch64_entry(void)
{
	_cleanup_closedir_ DIR *d = opendir("/proc/sys/fs/binfmt_misc");
	struct dirent *de;

	while (d && (de = readdir(d)))
		if (strstr(de->d_name, "aarch64"))
			return true;
	return false;
}

static void *ensure_thread(void *arg)
{
	Platform p = parse("linux/arm64");
	EmulationKind kind = EMULATION_NATIVE;

	*(int *)arg = binfmt_ensure(&p, NULL, &kind, NULL) == 0 && kind == EMULATION_PRIVATE;
	return NULL;
}

static void body_private(void)
{
	_cleanup_error_ KilnError *e = NULL;
	EmulationKind kind = EMULATION_NATIVE;
	Platform arm64 = parse("linux/arm64"), armv7 = parse("linux/arm/v7");
	IdMapInfo info;

	CHECK(mkdir("root", 0755) == 0 && mkdir("root/bin", 0755) == 0);
	_cleanup_free_ char *cp = xasprintf("cp '%s' root/bin/busybox", busybox_arm64);
	CHECK(system(cp) == 0);
	enter_userns(&info, NULL);
	/* Until kiln mounts its own instance, the host's entries apply in this user namespace. */
	bool host_entry = host_has_aarch64_entry();
	_cleanup_free_ char *before = run_uname(NULL, true);
	if (host_entry)
		printf("#   note: the host's binfmt_misc has an aarch64 entry\n");
	else
		CHECK(before == NULL); /* nothing can run it yet */

	if (binfmt_ensure(&arm64, NULL, &kind, &e) < 0) {
		printf("#   binfmt_ensure: %s\n", e->message);
		tap_cur_failed = 1;
		return;
	}
	CHECK_EQ_INT(kind, EMULATION_PRIVATE);
	_cleanup_free_ char *out = run_uname(NULL, false), *chrooted = run_uname("root", false);
	CHECK_EQ_STR(out, "aarch64\n");
	/* The F flag: the interpreter need not exist inside the root. */
	CHECK_EQ_STR(chrooted, "aarch64\n");

	/* Again, and from threads at once: the registration is there already. */
	pthread_t th[4];
	int ok[4] = {0};
	for (int i = 0; i < 4; i++)
		CHECK(pthread_create(&th[i], NULL, ensure_thread, &ok[i]) == 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(ok[i]);
	}
	kind = EMULATION_NATIVE;
	CHECK(binfmt_ensure(&armv7, NULL, &kind, NULL) == 0);
	CHECK_EQ_INT(kind, EMULATION_PRIVATE);

	/* What the kernel holds: the user namespace's instance, seen through a mount of our own. */
	CHECK(mkdir("bm", 0755) == 0);
	CHECK(mount("binfmt_misc", "bm", "binfmt_misc", 0, NULL) == 0);
	_cleanup_free_ char *a = read_text("bm/kiln-aarch64"), *arm = read_text("bm/kiln-arm");
	CHECK(a && strncmp(a, "enabled\n", 8) == 0);
	/* A sealed copy registered through a symlink named like the interpreter (Debian's QEMU
	 * tells preserve-argv[0] mode by the name), in a temp dir that is gone again. */
	CHECK(a && strstr(a, "/kiln-binfmt-") && strstr(a, "/aarch64-binfmt-P\n"));
	const char *ip = a ? strstr(a, "interpreter ") : NULL;
	_cleanup_free_ char *ipath = ip ? strndup(ip + 12, strcspn(ip + 12, "\n")) : NULL;
	CHECK(ipath && access(ipath, F_OK) < 0 && access(dirname(ipath), F_OK) < 0);
	CHECK(a && strstr(a, "flags: PF\n"));
	CHECK(a && strstr(a, "magic 7f454c460201010000000000000000000200b700\n"));
	CHECK(arm && strstr(arm, "/arm-binfmt-P\n"));
	CHECK(access("bm/kiln-x86_64", F_OK) < 0);
	/* The private instance shadows the host's: with kiln's entry disabled nothing runs it, even
	 * when the host has an enabled entry of its own. */
	write_text("bm/kiln-aarch64", "0");
	_cleanup_free_ char *disabled = run_uname(NULL, true), *enabled = NULL;
	CHECK(disabled == NULL);
	write_text("bm/kiln-aarch64", "1");
	enabled = run_uname(NULL, false);
	CHECK_EQ_STR(enabled, "aarch64\n");
	CHECK(umount("bm") == 0);
}

TEST(private_binfmt_runs_arm64_as_root)
{
	bool host_entry = host_has_aarch64_entry();

	CHECK_EQ_INT(run_as(&AS_ROOT, body_private), 0);
	CHECK(host_has_aarch64_entry() == host_entry); /* nothing leaked to the host */
	CHECK(access("/proc/sys/fs/binfmt_misc/kiln-aarch64", F_OK) < 0);
}

TEST(private_binfmt_runs_arm64_rootless)
{
	CHECK_EQ_INT(run_as(&AS_USER, body_private), 0);
}

/* ---- the host fallback ---- */

static const char host_entry_f[] =
    ":qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02"
    "\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff"
    "\\xff\\xfe\\xff\\xff\\xff:" QEMU_AARCH64 ":F";

static void expect_ensure_fails(const char *want)
{
	_cleanup_error_ KilnError *e = NULL;
	EmulationKind kind;
	Platform arm64 = parse("linux/arm64");

	CHECK_EQ_INT(binfmt_ensure(&arm64, NULL, &kind, &e), -ENOENT);
	if (!e || !strstr(e->message, want) || !strstr(e->message, "cannot run linux/arm64") ||
	    !strstr(e->message, "cannot mount a private binfmt_misc instance")) {
		printf("#   want '%s' in: %s\n", want, e ? e->message : "(none)");
		tap_cur_failed = 1;
	}
}

/* The "host" registration lives in the user namespace's instance mounted at the usual place,
 * and a seccomp filter makes the private mount fail as on a kernel without it. */
static void body_host(void)
{
	_cleanup_error_ KilnError *e = NULL;
	EmulationKind kind = EMULATION_NATIVE;
	Platform arm64 = parse("linux/arm64");
	const char *bm = "/proc/sys/fs/binfmt_misc";
	IdMapInfo info;

	enter_userns(&info, NULL);
	CHECK(mount("binfmt_misc", bm, "binfmt_misc", 0, NULL) == 0);
	write_text("/proc/sys/fs/binfmt_misc/register", host_entry_f);
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	CHECK(ctx && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(fsopen), 0) == 0 &&
	      seccomp_load(ctx) == 0);
	seccomp_release(ctx);

	if (binfmt_ensure(&arm64, NULL, &kind, &e) < 0) {
		printf("#   binfmt_ensure: %s\n", e->message);
		tap_cur_failed = 1;
		return;
	}
	CHECK_EQ_INT(kind, EMULATION_HOST);
	_cleanup_free_ char *out = run_uname(NULL, false);
	CHECK_EQ_STR(out, "aarch64\n");

	write_text("/proc/sys/fs/binfmt_misc/qemu-aarch64", "0");
	expect_ensure_fails("host entry 'qemu-aarch64' is disabled");
	write_text("/proc/sys/fs/binfmt_misc/qemu-aarch64", "-1");
	char no_f[sizeof(host_entry_f)];
	snprintf(no_f, sizeof(no_f), "%s", host_entry_f);
	no_f[strlen(no_f) - 1] = 0; /* no flags */
	write_text("/proc/sys/fs/binfmt_misc/register", no_f);
	expect_ensure_fails("host entry 'qemu-aarch64' lacks the F flag");
	write_text("/proc/sys/fs/binfmt_misc/qemu-aarch64", "-1");
	write_text("/proc/sys/fs/binfmt_misc/register", host_entry_f);
	/* kiln doctor without a private instance reports the host's entry and what is missing. */
	_cleanup_strv_free_ char **lines = NULL;
	CHECK(binfmt_doctor_report(NULL, &lines, NULL) == 0);
	for (size_t i = 0; lines && lines[i]; i++)
		printf("#   %s\n", lines[i]);
	CHECK(lines && !strcmp(lines[0],
			       "linux/arm64: host binfmt_misc entry "
			       "/proc/sys/fs/binfmt_misc/qemu-aarch64, interpreter " QEMU_AARCH64));
	CHECK(lines && strstr(lines[1], "linux/arm/v7: not available: a binfmt_misc mount in a "
					"user namespace failed: Operation not permitted"));
	CHECK(lines && strstr(lines[1], "no entry for arm binaries"));
	CHECK(lines && strstr(lines[1], "qemu-user-static and binfmt-support"));
	write_text("/proc/sys/fs/binfmt_misc/qemu-aarch64", "-1");
	expect_ensure_fails("the host's binfmt_misc has no entry for arm64 binaries");
	/* An empty dir where the host's instance would be mounted. */
	CHECK(umount(bm) == 0);
	CHECK(mount("tmpfs", bm, "tmpfs", 0, NULL) == 0);
	expect_ensure_fails("the host's binfmt_misc is not mounted at /proc/sys/fs/binfmt_misc");
}

TEST(host_binfmt_fallback)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_host), 0);
}

TEST(missing_interpreter_names_the_package)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_missing_interpreter), 0);
}

TEST(ensure_native_and_outside_userns)
{
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	EmulationKind kind = EMULATION_PRIVATE;
	Platform arm64 = parse("linux/arm64"), sparc = parse("linux/sparc64");

	CHECK(binfmt_ensure(&host, NULL, &kind, NULL) == 0);
	CHECK_EQ_INT(kind, EMULATION_NATIVE);
	/* In the initial user namespace the private path is not taken: it would be the host's. */
	if (binfmt_ensure(&arm64, NULL, &kind, &e) == 0) {
		/* Only the host's registration can serve here (another user of this machine made
		 * one); kiln added none. */
		CHECK_EQ_INT(kind, EMULATION_HOST);
		CHECK(host_has_aarch64_entry());
	} else
		CHECK(e && strstr(e->message, "not inside a user namespace of kiln's own"));
	CHECK(access("/proc/sys/fs/binfmt_misc/kiln-aarch64", F_OK) < 0);
	CHECK_EQ_INT(binfmt_ensure(&sparc, NULL, &kind, &e2), -ENOTSUP);
	CHECK(e2 && strstr(e2->message, "cannot run linux/sparc64 binaries"));
}

/* ---- kiln doctor ---- */

static void body_doctor(void)
{
	_cleanup_strv_free_ char **lines = NULL;
	_cleanup_error_ KilnError *e = NULL;
	char h[PLATFORM_STRING_MAX];

	host_string(h);
	CHECK(binfmt_doctor_report(NULL, &lines, &e) == 0);
	CHECK_EQ_INT(strv_length(lines), 6);
	for (size_t i = 0; lines && lines[i]; i++)
		printf("#   %s\n", lines[i]);
	CHECK(lines && strcmp(lines[0], "linux/arm64: private binfmt_misc, interpreter "
					"/usr/libexec/qemu-binfmt/aarch64-binfmt-P -> "
					"/usr/bin/qemu-aarch64-static (flags FP)") == 0);
	CHECK(lines && !strncmp(lines[1], "linux/arm/v7: private binfmt_misc", 33));
	if (!strcmp(h, "linux/amd64"))
		CHECK(lines && !strcmp(lines[5], "linux/386: native"));
}

static void body_doctor_no_qemu(void)
{
	_cleanup_strv_free_ char **lines = NULL;

	CHECK(mkdir("empty", 0755) == 0);
	CHECK(unshare(CLONE_NEWNS) == 0);
	CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
	CHECK(mount("empty", "/usr/libexec/qemu-binfmt", NULL, MS_BIND, NULL) == 0);
	CHECK(mount("empty", "/usr/bin", NULL, MS_BIND, NULL) == 0);
	/* Hide a host registration too, in this mount namespace only. */
	CHECK(mount("tmpfs", "/proc/sys/fs/binfmt_misc", "tmpfs", 0, NULL) == 0);
	setenv("PATH", "/nonexistent", 1);
	CHECK(binfmt_doctor_report(NULL, &lines, NULL) == 0);
	for (size_t i = 0; lines && lines[i]; i++)
		printf("#   %s\n", lines[i]);
	CHECK(lines && !strncmp(lines[0], "linux/arm64: not available: ", 28));
	CHECK(lines && strstr(lines[0], "qemu-user-static"));
}

TEST(doctor_report)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_doctor), 0);
	CHECK_EQ_INT(run_as(&AS_USER, body_doctor), 0);
	CHECK_EQ_INT(run_as(&AS_ROOT, body_doctor_no_qemu), 0);
}

/* ---- setup ---- */

/* The real precondition: a binfmt_misc instance of our own in a user namespace. */
static bool private_binfmt_possible(char *why, size_t n)
{
	struct utsname u;
	int major = 0, minor = 0, status;

	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2 || major < 6 ||
	    (major == 6 && minor < 7)) {
		snprintf(why, n, "kernel %s has no per-user-namespace binfmt_misc (needs 6.7)",
			 u.release);
		return false;
	}
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			_exit(1);
		_exit(mount("binfmt_misc", "/proc/sys/fs/binfmt_misc", "binfmt_misc", 0, NULL) < 0
			  ? 2
			  : 0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		snprintf(why, n, "cannot mount binfmt_misc in a user namespace");
		return false;
	}
	return true;
}

static const char *prepare_busybox_arm64(void)
{
	const char *env = getenv("KILN_TEST_BUSYBOX_ARM64");
	const char *dst = CACHE_DIR "/busybox-arm64";

	if (env)
		return access(env, R_OK) == 0 ? env : NULL;
	return fetch_busybox(":arm64", dst) ? dst : NULL;
}

int main(void)
{
	char why[256];

	platform_host(&host);
	if (geteuid() != 0)
		tap_skip_all("needs root (it switches to the user '" TEST_USER "' itself)");
	if (!private_binfmt_possible(why, sizeof(why)))
		tap_skip_all(why);
	if (access(QEMU_AARCH64, X_OK) < 0)
		tap_skip_all("no " QEMU_AARCH64 " (install qemu-user-static)");
	ensure_test_user();
	busybox_arm64 = prepare_busybox_arm64();
	if (!busybox_arm64)
		tap_skip_all("no arm64 static busybox (apt-get download busybox-static:arm64 "
			     "failed; set KILN_TEST_BUSYBOX_ARM64=/path/to/busybox)");

	RUN(elf_detects_real_binaries);
	RUN(elf_detects_foreign_headers);
	RUN(elf_arm_variant_from_attributes);
	RUN(elf_rejects_what_is_not_elf);
	RUN(elf_is_static_reads_program_headers);
	RUN(runs_natively_table);
	RUN(magic_table_matches_debian_templates);
	RUN(interpreter_lookup_order);
	RUN(missing_interpreter_names_the_package);
	RUN(ensure_native_and_outside_userns);
	RUN(private_binfmt_runs_arm64_as_root);
	RUN(private_binfmt_runs_arm64_rootless);
	RUN(host_binfmt_fallback);
	RUN(doctor_report);
	return tap_done();
}
