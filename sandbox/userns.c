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
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"

extern char **environ;

typedef struct IdMapPlan {
	IdMapKind kind;
	uid_t uid;
	gid_t gid;
	uint32_t uid_start, uid_count, gid_start, gid_count;
	bool host_root; /* root of the initial user namespace: the range above stands for it */
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

/* Every "name:start:count" range of an open subid file (stops at 4096 ranges). */
static size_t subid_ranges(FILE *f, uint32_t (*v)[2], size_t max)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0, n = 0;

	while (n < max && getline(&line, &cap, f) >= 0) {
		char *save = NULL, *name = strtok_r(line, ":\n", &save);
		char *start = strtok_r(NULL, ":\n", &save), *count = strtok_r(NULL, ":\n", &save);

		if (name && *name != '#' && start && count && parse_u32(start, &v[n][0]) == 0 &&
		    parse_u32(count, &v[n][1]) == 0)
			n++;
	}
	return n;
}

/* The lowest multiple of 65536 >= floor whose [start, start+count) overlaps no range. */
static int subid_free_start(uint32_t (*v)[2], size_t n, uint32_t count, uint32_t floor,
			    uint32_t *ret)
{
	uint64_t start = (floor + 65535ULL) & ~65535ULL;
	bool moved = true;

	while (moved) {
		moved = false;
		for (size_t i = 0; i < n; i++) {
			uint64_t b = v[i][0], e = b + v[i][1];
			if (start < e && b < start + count) {
				start = (e + 65535ULL) & ~65535ULL;
				moved = true;
			}
		}
		if (start + count >= UINT32_MAX)
			return -ERANGE;
	}
	*ret = (uint32_t)start;
	return 0;
}

int userns_reserve_subid_range(const char *file, const char *name, uint32_t count, uint32_t floor,
			       uint32_t *ret_start, KilnError **err)
{
	_cleanup_close_ int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ uint32_t(*ranges)[2] = NULL;
	uint32_t have_count, start;
	size_t n;
	int r;

	if (fd < 0 || flock(fd, LOCK_EX) < 0)
		return kiln_error_errno(err, errno, "open '%s'", file);
	r = userns_find_subid_range(file, name, (uid_t)-1, &start, &have_count, err);
	if (r != 0) {
		if (r > 0)
			*ret_start = start;
		return r < 0 ? r : 0;
	}
	f = fdopen(fcntl(fd, F_DUPFD_CLOEXEC, 3), "r");
	if (!f)
		return kiln_error_errno(err, errno, "read '%s'", file);
	ranges = xcalloc(4096, sizeof(*ranges));
	n = subid_ranges(f, ranges, 4096);
	if (subid_free_start(ranges, n, count, floor, &start) < 0)
		return kiln_error(err, ERANGE, "no free range of %u ids in '%s'", count, file);
	/* Start on a new line even when the file's last one has no newline. */
	char last = '\n';
	off_t size = lseek(fd, 0, SEEK_END);
	if (size > 0 && pread(fd, &last, 1, size - 1) != 1)
		return kiln_error_errno(err, errno, "read '%s'", file);
	_cleanup_free_ char *line =
	    xasprintf("%s%s:%u:%u\n", last == '\n' ? "" : "\n", name, start, count);
	if ((r = write_all(fd, line, strlen(line))) < 0 || fsync(fd) < 0)
		return kiln_error_errno(err, r < 0 ? -r : errno, "write '%s'", file);
	*ret_start = start;
	return 0;
}

/* Root's range in file: root's own entry ("root" or "0"), else kiln's reserved one. */
static int root_range(const char *file, uint32_t *ret_start, uint32_t *ret_count, KilnError **err)
{
	int r = userns_find_subid_range(file, "root", 0, ret_start, ret_count, err);

	/* An entry is usable by the user of that name (newuidmap): a real user "kiln" could become
	 * the ids root's build steps run as. */
	if (r == 0 && getpwnam(USERNS_RESERVED_NAME))
		return kiln_error(
		    err, EEXIST,
		    "root builds need an unprivileged id range, but a user named '%s' "
		    "exists, so kiln cannot reserve one under that name in '%s': give "
		    "root a range of its own (usermod --add-subuids N-M --add-subgids N-M "
		    "root)",
		    USERNS_RESERVED_NAME, file);
	if (r == 0) {
		*ret_count = USERNS_RESERVED_COUNT;
		r = userns_reserve_subid_range(file, USERNS_RESERVED_NAME, USERNS_RESERVED_COUNT,
					       USERNS_RESERVED_FLOOR, ret_start, err);
	}
	if (r < 0)
		return kiln_error_wrap(err, r, "subordinate ids for root builds");
	if (*ret_start == 0)
		return kiln_error(
		    err, EINVAL,
		    "root's subordinate range in '%s' starts at 0: it would run build "
		    "steps as host root",
		    file);
	return 0;
}

static int plan_root(IdMapPlan *p, KilnError **err)
{
	int r;

	p->kind = IDMAP_ROOT;
	p->host_root = true;
	if ((r = root_range("/etc/subuid", &p->uid_start, &p->uid_count, err)) < 0 ||
	    (r = root_range("/etc/subgid", &p->gid_start, &p->gid_count, err)) < 0)
		return r;
	return 0;
}

/* Root's map: inside [0, count) -> host [start, start+count); inside [count, count+start) ->
 * host [0, start) (host root is inside id count); above start+count ids map onto themselves. */
static void root_map_text(char *buf, size_t cap, uint32_t start, uint32_t count)
{
	uint64_t end = (uint64_t)start + count;
	int n = snprintf(buf, cap, "0 %u %u\n%u 0 %u\n", start, count, count, start);

	if (end < UINT32_MAX && n > 0 && (size_t)n < cap)
		snprintf(buf + n, cap - (size_t)n, "%llu %llu %llu\n", (unsigned long long)end,
			 (unsigned long long)end, (unsigned long long)(UINT32_MAX - end));
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
	char map[128];
	int r;

	switch (p->kind) {
	case IDMAP_ROOT:
		root_map_text(map, sizeof(map), p->uid_start, p->uid_count);
		r = write_proc_file(pid, "uid_map", map, err);
		if (r < 0)
			return r;
		root_map_text(map, sizeof(map), p->gid_start, p->gid_count);
		return write_proc_file(pid, "gid_map", map, err);
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
		/* Host root's single id is the first of its range, never itself. */
		if (p->host_root)
			root_map_text(map, sizeof(map), p->uid_start, 1);
		else
			snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)p->uid);
		r = write_proc_file(pid, "uid_map", map, err);
		if (r < 0)
			return r;
		if (p->host_root)
			root_map_text(map, sizeof(map), p->gid_start, 1);
		else
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

/* The initial user namespace maps every id onto itself. */
static bool in_initial_userns(void)
{
	_cleanup_free_ char *map = NULL;

	if (read_file_at(AT_FDCWD, "/proc/self/uid_map", 4096, &map, NULL, NULL) < 0)
		return false;
	unsigned long long in, out, count;
	return sscanf(map, "%llu %llu %llu", &in, &out, &count) == 3 && in == 0 && out == 0 &&
	       count == UINT32_MAX;
}

/* Fills p->kind (and the ranges) from the caller's ids and KILN_USERNS. */
static int plan_choose(IdMapPlan *p, char **ret_reason, KilnError **err)
{
	const char *force = getenv("KILN_USERNS");
	bool single = force && strcmp(force, "single") == 0;

	if (p->uid == 0 && in_initial_userns()) {
		int r = plan_root(p, err);
		if (r < 0)
			return r;
		if (single) {
			p->kind = IDMAP_SINGLE;
			*ret_reason = xstrdup("single id map forced by KILN_USERNS=single");
		}
		return 0;
	}
	if (single) {
		p->kind = IDMAP_SINGLE;
		*ret_reason = xstrdup("single id map forced by KILN_USERNS=single");
		return 0;
	}
	if (p->uid == 0) {
		/* Root of a user namespace (a container): not host root, and its parent namespace
		 * has too few ids for a range of kiln's own. */
		p->kind = IDMAP_SINGLE;
		*ret_reason =
		    xstrdup("running as root inside a user namespace: only uid 0 is mapped");
		return 0;
	}
	return plan_rootless(p, ret_reason, err);
}

static void info_fill(const IdMapPlan *p, IdMapInfo *i)
{
	*i = (IdMapInfo){.kind = p->kind,
			 .outer_uid = p->uid,
			 .outer_gid = p->gid,
			 .host_uid_base = p->host_root ? p->uid_start : p->uid,
			 .host_gid_base = p->host_root ? p->gid_start : p->gid};
	switch (p->kind) {
	case IDMAP_ROOT:
		i->n_uids = p->uid_count;
		i->n_gids = p->gid_count;
		break;
	case IDMAP_SUBID:
		i->n_uids = p->uid_count + 1;
		i->n_gids = p->gid_count + 1;
		break;
	case IDMAP_SINGLE:
		i->n_uids = i->n_gids = 1;
		break;
	}
	/* Host root follows the container range (root_map_text()). */
	if (p->host_root) {
		i->owner_uid = i->n_uids;
		i->owner_gid = i->n_gids;
	}
}

int userns_enter(IdMapInfo *ret, char **ret_reason, KilnError **err)
{
	_cleanup_(plan_done) IdMapPlan p = {.uid = geteuid(), .gid = getegid()};
	_cleanup_free_ char *reason = NULL;
	int r;

	if (userns_entered) {
		*ret = userns_info;
		if (ret_reason)
			*ret_reason = NULL;
		return 0;
	}
	r = plan_choose(&p, &reason, err);
	if (r < 0)
		return r;
	r = plan_enter(&p, &reason, err);
	if (r == -EAGAIN && p.kind == IDMAP_SUBID) {
		p.kind = IDMAP_SINGLE;
		r = plan_enter(&p, &reason, err);
	}
	if (r < 0)
		return r;
	info_fill(&p, &userns_info);
	userns_entered = true;
	*ret = userns_info;
	if (ret_reason)
		*ret_reason = TAKE_PTR(reason);
	return 0;
}

const IdMapInfo *userns_current(void)
{
	return userns_entered ? &userns_info : NULL;
}

/* The identity map of [0, n) in this namespace for a child namespace, as one line per extent of
 * this namespace's own map (an extent of a child's map must lie inside one extent here). */
static int container_map_text(const char *self_map, uint32_t n, char *buf, size_t cap,
			      KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	char *save = NULL;
	size_t len = 0;
	int r = read_file_at(AT_FDCWD, self_map, 65536, &data, NULL, err);

	if (r < 0)
		return r;
	buf[0] = 0;
	for (char *l = strtok_r(data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		unsigned long long in, out, count;
		if (sscanf(l, "%llu %llu %llu", &in, &out, &count) != 3 || in >= n)
			continue;
		if (count > n - in)
			count = n - in;
		int k = snprintf(buf + len, cap - len, "%llu %llu %llu\n", in, in, count);
		if (k < 0 || (size_t)k >= cap - len)
			return kiln_error(err, E2BIG, "'%s' has too many extents", self_map);
		len += (size_t)k;
	}
	return 0;
}

int userns_map_container(pid_t pid, KilnError **err)
{
	char map[4096];
	int r;

	if (!userns_entered)
		return kiln_error(err, EPERM, "not inside kiln's user namespace");
	if ((r = container_map_text("/proc/self/uid_map", userns_info.n_uids, map, sizeof(map),
				    err)) < 0 ||
	    (r = write_proc_file(pid, "uid_map", map, err)) < 0)
		return r;
	if ((r = container_map_text("/proc/self/gid_map", userns_info.n_gids, map, sizeof(map),
				    err)) < 0 ||
	    (r = write_proc_file(pid, "gid_map", map, err)) < 0)
		return r;
	return 0;
}

char *userns_map_text(void)
{
	static const char *const files[] = {"/proc/self/uid_map", "/proc/self/gid_map"};
	StrBuf b = {0};

	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		_cleanup_free_ char *data = NULL;
		char *save = NULL;

		if (read_file_at(AT_FDCWD, files[i], 65536, &data, NULL, NULL) < 0) {
			strbuf_done(&b);
			return NULL;
		}
		strbuf_adds(&b, i ? "/" : "");
		for (char *t = strtok_r(data, " \t\n", &save); t;
		     t = strtok_r(NULL, " \t\n", &save)) {
			strbuf_addc(&b, ' ');
			strbuf_adds(&b, t);
		}
	}
	return strbuf_steal(&b);
}
