#include "userns.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

extern char **environ;

typedef struct IdMapPlan {
	IdMapKind kind;
	uid_t uid;
	gid_t gid;
	uint32_t uid_start, uid_count, gid_start, gid_count;
	char *newuidmap, *newgidmap;
} IdMapPlan;

static bool userns_entered;
static IdMapInfo userns_info;
static volatile sig_atomic_t forward_pid;

const char *userns_subid_hint(void)
{
	return "kiln maps only your own uid into its user namespace, so files owned by other ids "
	       "cannot be created; give your user a subordinate id range (as root: `usermod "
	       "--add-subuids 100000-165535 --add-subgids 100000-165535 USER`) and install "
	       "newuidmap/newgidmap (Debian/Ubuntu package uidmap, Fedora shadow-utils)";
}

static int parse_u32(const char *s, uint32_t *ret)
{
	char *end;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

static bool subid_user_matches(const char *field, const char *user, uid_t uid)
{
	uint32_t n;

	if (user && strcmp(field, user) == 0)
		return true;
	return parse_u32(field, &n) == 0 && n == uid;
}

int userns_find_subid_range(const char *file, const char *user, uid_t uid, uint32_t *ret_start,
			    uint32_t *ret_count, KilnError **err)
{
	_cleanup_fclose_ FILE *f = fopen(file, "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (!f) {
		if (errno == ENOENT)
			return 0;
		return kiln_error_errno(err, errno, "open '%s'", file);
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		char *save = NULL, *name, *start, *count;
		uint32_t s, c;

		if (n > 0 && line[n - 1] == '\n')
			line[n - 1] = 0;
		if (line[0] == '#')
			continue;
		name = strtok_r(line, ":", &save);
		start = strtok_r(NULL, ":", &save);
		count = strtok_r(NULL, ":", &save);
		if (!name || !start || !count || strtok_r(NULL, ":", &save))
			continue;
		if (!subid_user_matches(name, user, uid))
			continue;
		if (parse_u32(start, &s) < 0 || parse_u32(count, &c) < 0 || c == 0)
			continue;
		if ((uint64_t)s + c > UINT32_MAX)
			continue;
		*ret_start = s;
		*ret_count = c;
		return 1;
	}
	if (ferror(f))
		return kiln_error_errno(err, EIO, "read '%s'", file);
	return 0;
}

static int find_in_dirs(const char *dirs, const char *name, char **ret_path)
{
	_cleanup_free_ char *copy = xstrdup(dirs);
	char *save = NULL;

	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		_cleanup_free_ char *p = NULL;

		if (*d != '/')
			continue;
		p = xasprintf("%s/%s", d, name);
		if (access(p, X_OK) == 0) {
			*ret_path = TAKE_PTR(p);
			return 1;
		}
	}
	return 0;
}

int userns_find_helper(const char *name, char **ret_path)
{
	const char *path = getenv("PATH");

	if (path && find_in_dirs(path, name, ret_path))
		return 1;
	return find_in_dirs("/usr/sbin:/usr/bin:/sbin:/bin", name, ret_path);
}

static void plan_done(IdMapPlan *p)
{
	free(p->newuidmap);
	free(p->newgidmap);
}

/* Decides between SUBID and SINGLE for a non-root caller; *ret_reason says why not SUBID. */
static int plan_rootless(IdMapPlan *p, char **ret_reason, KilnError **err)
{
	struct passwd *pw = getpwuid(p->uid);
	const char *user = pw ? pw->pw_name : NULL;
	int r;

	p->kind = IDMAP_SINGLE;
	r = userns_find_subid_range("/etc/subuid", user, p->uid, &p->uid_start, &p->uid_count, err);
	if (r < 0)
		return r;
	if (r == 0) {
		*ret_reason = xasprintf("no subordinate uid range for user '%s' in /etc/subuid",
					user ? user : "?");
		return 0;
	}
	r = userns_find_subid_range("/etc/subgid", user, p->uid, &p->gid_start, &p->gid_count, err);
	if (r < 0)
		return r;
	if (r == 0) {
		*ret_reason = xasprintf("no subordinate gid range for user '%s' in /etc/subgid",
					user ? user : "?");
		return 0;
	}
	if (!userns_find_helper("newuidmap", &p->newuidmap) ||
	    !userns_find_helper("newgidmap", &p->newgidmap)) {
		*ret_reason = xstrdup("newuidmap/newgidmap not found (package uidmap)");
		return 0;
	}
	p->kind = IDMAP_SUBID;
	return 0;
}

static int write_proc_file(pid_t pid, const char *name, const char *data, KilnError **err)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", path);
	int r = write_all(fd, data, strlen(data));
	if (r < 0)
		return kiln_error_errno(err, r, "write '%s' to '%s'", data, path);
	return 0;
}

/* Runs newuidmap/newgidmap; on failure returns < 0 with *ret_msg naming the helper's complaint. */
static int run_map_helper(const char *helper, pid_t pid, uint32_t outer, uint32_t start,
			  uint32_t count, char **ret_msg)
{
	char spid[16], souter[16], sstart[16], scount[16];
	char *argv[] = {(char *)helper, spid, "0", souter, "1", "1", sstart, scount, NULL};
	_cleanup_close_ int rfd = -1, wfd = -1;
	_cleanup_free_ char *out = NULL;
	posix_spawn_file_actions_t fa;
	int fds[2], status, r;
	pid_t child;

	snprintf(spid, sizeof(spid), "%d", (int)pid);
	snprintf(souter, sizeof(souter), "%u", outer);
	snprintf(sstart, sizeof(sstart), "%u", start);
	snprintf(scount, sizeof(scount), "%u", count);
	if (pipe2(fds, O_CLOEXEC) < 0) {
		*ret_msg = xasprintf("pipe: %s", strerror(errno));
		return -errno;
	}
	rfd = fds[0];
	wfd = fds[1];
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, wfd, 2);
	r = posix_spawn(&child, helper, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0) {
		*ret_msg = xasprintf("run '%s': %s", helper, strerror(r));
		return -r;
	}
	closep(&wfd);
	wfd = -1;
	if (read_all_fd(rfd, 64 * 1024, &out, NULL, NULL) < 0)
		out = NULL;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (out) {
		size_t n = strlen(out);
		while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
			out[--n] = 0;
	}
	*ret_msg = out && *out ? xasprintf("%s failed: %s", helper, out)
			       : xasprintf("%s failed with status %d", helper, status);
	return -EPERM;
}

/* Returns -EAGAIN with *ret_reason set when a SUBID map could not be written (retry SINGLE). */
static int plan_write_maps(const IdMapPlan *p, pid_t pid, char **ret_reason, KilnError **err)
{
	char map[64];
	int r;

	switch (p->kind) {
	case IDMAP_FULL:
		r = write_proc_file(pid, "uid_map", "0 0 4294967295\n", err);
		if (r < 0)
			return r;
		return write_proc_file(pid, "gid_map", "0 0 4294967295\n", err);
	case IDMAP_SUBID:
		if (run_map_helper(p->newuidmap, pid, p->uid, p->uid_start, p->uid_count,
				   ret_reason) < 0 ||
		    run_map_helper(p->newgidmap, pid, p->gid, p->gid_start, p->gid_count,
				   ret_reason) < 0)
			return -EAGAIN;
		return 0;
	case IDMAP_SINGLE:
		r = write_proc_file(pid, "setgroups", "deny\n", err);
		if (r < 0)
			return r;
		snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)p->uid);
		r = write_proc_file(pid, "uid_map", map, err);
		if (r < 0)
			return r;
		snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)p->gid);
		return write_proc_file(pid, "gid_map", map, err);
	}
	return kiln_error(err, EINVAL, "unknown id map kind %d", (int)p->kind);
}

static void forward_signal(int sig)
{
	if (forward_pid > 0)
		kill((pid_t)forward_pid, sig);
}

/* The parent's life after the child is running: wait for it and exit with its status. */
static _Noreturn void parent_wait_and_exit(pid_t child)
{
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
	struct sigaction sa = {.sa_handler = forward_signal};
	int status;

	/* The parent must hold nothing the child may want to see closed (pipes, locks). */
	close_range(3, ~0U, 0);
	forward_pid = child;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ELEMENTSOF(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			_exit(1);
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	_exit(128 + WTERMSIG(status));
}

static int child_become_root(const IdMapPlan *p, pid_t parent, KilnError **err)
{
	if (setresgid(0, 0, 0) < 0)
		return kiln_error_errno(err, errno, "setresgid in user namespace");
	if (p->kind != IDMAP_SINGLE && setgroups(0, NULL) < 0)
		return kiln_error_errno(err, errno, "setgroups in user namespace");
	if (setresuid(0, 0, 0) < 0)
		return kiln_error_errno(err, errno, "setresuid in user namespace");
	/* Set after the credential change, which clears it. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(1);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return kiln_error_errno(err, errno, "make mounts private");
	return 0;
}

static int plan_enter(const IdMapPlan *p, char **ret_reason, KilnError **err)
{
	_cleanup_close_ int up_r = -1, up_w = -1, down_r = -1, down_w = -1;
	pid_t self = getpid(), child;
	int fds[2], child_errno = 0, status, r;
	char go = 0;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return kiln_error_errno(err, errno, "pipe");
	up_r = fds[0];
	up_w = fds[1];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return kiln_error_errno(err, errno, "pipe");
	down_r = fds[0];
	down_w = fds[1];
	fflush(stdout);
	fflush(stderr);
	child = fork();
	if (child < 0)
		return kiln_error_errno(err, errno, "fork");
	if (child == 0) {
		closep(&up_r);
		up_r = -1;
		closep(&down_w);
		down_w = -1;
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			child_errno = errno;
		if (write(up_w, &child_errno, sizeof(child_errno)) != sizeof(child_errno) ||
		    child_errno)
			_exit(1);
		if (read(down_r, &go, 1) != 1 || go != 0)
			_exit(1);
		return child_become_root(p, self, err);
	}
	closep(&up_w);
	up_w = -1;
	closep(&down_r);
	down_r = -1;
	if (read(up_r, &child_errno, sizeof(child_errno)) != sizeof(child_errno))
		child_errno = EIO;
	if (child_errno) {
		waitpid(child, &status, 0);
		return kiln_error_errno(err, child_errno, "create user namespace");
	}
	r = plan_write_maps(p, child, ret_reason, err);
	if (r < 0) {
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
		return r == -EAGAIN ? r : kiln_error_wrap(err, r, "write id maps");
	}
	if (write(down_w, &go, 1) != 1) {
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
		return kiln_error_errno(err, errno, "start user namespace child");
	}
	parent_wait_and_exit(child);
}

int userns_enter(IdMapInfo *ret, char **ret_reason, KilnError **err)
{
	_cleanup_(plan_done) IdMapPlan p = {.uid = geteuid(), .gid = getegid()};
	_cleanup_free_ char *reason = NULL;
	const char *force = getenv("KILN_USERNS");
	int r;

	if (userns_entered) {
		*ret = userns_info;
		if (ret_reason)
			*ret_reason = NULL;
		return 0;
	}
	if (force && strcmp(force, "single") == 0) {
		p.kind = IDMAP_SINGLE;
		reason = xstrdup("single id map forced by KILN_USERNS=single");
	} else if (p.uid == 0) {
		p.kind = IDMAP_FULL;
	} else {
		r = plan_rootless(&p, &reason, err);
		if (r < 0)
			return r;
	}
	r = plan_enter(&p, &reason, err);
	if (r == -EAGAIN && p.kind == IDMAP_SUBID) {
		p.kind = IDMAP_SINGLE;
		r = plan_enter(&p, &reason, err);
	}
	if (r < 0)
		return r;

	userns_info = (IdMapInfo){.kind = p.kind, .outer_uid = p.uid, .outer_gid = p.gid};
	switch (p.kind) {
	case IDMAP_FULL:
		userns_info.n_uids = userns_info.n_gids = UINT32_MAX;
		break;
	case IDMAP_SUBID:
		userns_info.n_uids = p.uid_count + 1;
		userns_info.n_gids = p.gid_count + 1;
		break;
	case IDMAP_SINGLE:
		userns_info.n_uids = userns_info.n_gids = 1;
		break;
	}
	userns_entered = true;
	*ret = userns_info;
	if (ret_reason)
		*ret_reason = TAKE_PTR(reason);
	return 0;
}
