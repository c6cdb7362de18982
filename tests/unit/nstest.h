/* Shared helpers of the unit tests that run code in user namespaces and containers
 * (test-sandbox, test-confine, test-emulation): switching to an unprivileged user in a forked
 * child, entering a user namespace, the test user "kilntest", a static busybox from Debian's
 * busybox-static cached in /tmp/kiln-test-cache, and collecting a container's output.
 *
 * Everything is static inline (like tap.h): each test is a single-file binary that uses a part. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "sandbox/userns.h"
#include "tap.h"

#define TEST_USER "kilntest" /* created with `useradd -m`, which gives it a subordinate range */
#define CACHE_DIR "/tmp/kiln-test-cache"
#define QEMU_AARCH64 "/usr/bin/qemu-aarch64-static"

/* Who a forked child runs as (see run_as()). */
typedef struct RunAs {
	const char *user; /* NULL: stay root (or become uid) */
	uid_t uid;	  /* used when user is NULL and uid != 0 */
	bool single;	  /* KILN_USERNS=single */
} RunAs;

__attribute__((unused)) static const RunAs AS_ROOT = {0};
__attribute__((unused)) static const RunAs AS_USER = {.user = TEST_USER};

/* Switches the (forked) process to as->user or as->uid, with no supplementary groups, in a
 * subdir "u" of the cwd that it owns; exits 1 when it cannot. Does nothing for root. */
static inline void drop_privileges(const RunAs *as)
{
	uid_t uid = as->uid;
	gid_t gid = as->uid;

	if (as->user) {
		struct passwd *pw = getpwnam(as->user);
		if (!pw) {
			printf("#   no user '%s'\n", as->user);
			fflush(stdout);
			_exit(1);
		}
		uid = pw->pw_uid;
		gid = pw->pw_gid;
	}
	if (uid == 0)
		return;
	/* The test's temp dir is root's 0700: let the user in and give it a subdir. */
	if (chmod(".", 0711) < 0 || (mkdir("u", 0755) < 0 && errno != EEXIST) ||
	    chown("u", uid, gid) < 0 || chdir("u") < 0 || setgroups(0, NULL) < 0 ||
	    setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		if (as->user)
			printf("#   cannot become '%s': %s\n", as->user, strerror(errno));
		else
			printf("#   cannot become uid %u: %s\n", (unsigned)uid, strerror(errno));
		fflush(stdout);
		_exit(1);
	}
	/* A credential change without exec leaves the process undumpable, which makes its
	 * /proc files root's; a user who runs kiln gets a dumpable process from execve(). */
	prctl(PR_SET_DUMPABLE, 1);
}

/* Runs fn in a forked child as `as` (KILN_USERNS=single when as->single, else unset); returns
 * the child's exit status (0: all checks passed), 128 + signal, or -1. */
static inline int run_as(const RunAs *as, void (*fn)(void))
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		drop_privileges(as);
		if (as->single)
			setenv("KILN_USERNS", "single", 1);
		else
			unsetenv("KILN_USERNS");
		tap_cur_failed = 0;
		fn();
		fflush(stdout);
		_exit(tap_cur_failed ? 1 : 0);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* userns_enter() in a forked child: exits 1 with the error when it fails. */
static inline void enter_userns(IdMapInfo *info, char **reason)
{
	_cleanup_error_ KilnError *e = NULL;

	if (userns_enter(info, reason, &e) < 0) {
		printf("#   userns_enter: %s\n", e->message);
		fflush(stdout);
		_exit(1);
	}
}

/* Whether this process may unshare a user and mount namespace. */
static inline bool userns_possible(void)
{
	pid_t pid = fork();
	int status;

	if (pid == 0)
		_exit(unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0 ? 1 : 0);
	return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	       WEXITSTATUS(status) == 0;
}

/* Creates TEST_USER when missing, or skips the whole test. */
static inline void ensure_test_user(void)
{
	if (!getpwnam(TEST_USER) && system("useradd -m " TEST_USER " >/dev/null 2>&1") != 0)
		tap_skip_all("cannot create the user '" TEST_USER "'");
}

/* Fetches the Debian busybox-static binary for deb_arch ("" for the host's, ":arm64" for a
 * foreign one, added with dpkg --add-architecture when apt cannot find it) into dst once. */
static inline bool fetch_busybox(const char *deb_arch, const char *dst)
{
	_cleanup_free_ char *add_arch = NULL, *cmd = NULL;

	if (access(dst, X_OK) == 0)
		return true;
	if (mkdir_p(CACHE_DIR, 0755, NULL) < 0 || chmod(CACHE_DIR, 0755) < 0)
		return false;
	if (*deb_arch)
		add_arch = xasprintf("dpkg --add-architecture %s; ", deb_arch + 1);
	cmd = xasprintf("set -e; d=$(mktemp -d); cd $d; "
			"if ! apt-get download busybox-static%s >/dev/null 2>&1; then "
			"%sapt-get update -qq >/dev/null 2>&1 || true; "
			"apt-get download busybox-static%s >/dev/null 2>&1; fi; "
			"dpkg-deb -x busybox-static_*.deb x; cp x/bin/busybox %s.new; "
			"chmod 755 %s.new; mv %s.new %s; cd /; rm -rf $d",
			deb_arch, add_arch ? add_arch : "", deb_arch, dst, dst, dst, dst);
	return system(cmd) == 0 && access(dst, X_OK) == 0;
}

/* The file at path (up to 1 MiB), or NULL. */
static inline char *read_text(const char *path)
{
	char *data = NULL;

	if (read_file_at(AT_FDCWD, path, 1 << 20, &data, NULL, NULL) < 0)
		return NULL;
	return data;
}

/* ---- container output ---- */

/* What a container printed, NUL-terminated (truncated to fit). */
typedef struct Output {
	char out[16384], err[8192];
	size_t n_out, n_err;
} Output;

/* A ContainerSpec output callback appending to the Output in userdata (stream 1: stdout). */
static inline void collect(void *userdata, int stream, const char *buf, size_t len)
{
	Output *o = userdata;
	char *dst = stream == 1 ? o->out : o->err;
	size_t max = stream == 1 ? sizeof(o->out) : sizeof(o->err);
	size_t *n = stream == 1 ? &o->n_out : &o->n_err;

	if (*n + len >= max)
		len = max - 1 - *n;
	memcpy(dst + *n, buf, len);
	*n += len;
	dst[*n] = 0;
}

__attribute__((unused)) static char *const test_env[] = {"PATH=/bin", "HOME=/root", NULL};
