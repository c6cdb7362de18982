#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "fdutil.h"

/* Linux's own limit on symlinks followed in one lookup (MAXSYMLINKS). */
#define ROOTFS_MAX_SYMLINKS 40

static bool force_fallback;
static bool openat2_missing;

void rootfs_force_fallback(bool force)
{
	force_fallback = force;
}

static int clean_path(const char *path, bool clamp, char **ret)
{
	size_t o = 0;
	const char *p = path;
	_cleanup_free_ char *out = malloc(strlen(path) + 2);

	if (!out)
		return -ENOMEM;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 1 && p[0] == '.') {
			/* nothing */
		} else if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (o == 0 && !clamp)
				return -EINVAL;
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
		} else {
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p = e;
	}
	if (o == 0)
		out[o++] = '.';
	out[o] = 0;
	*ret = TAKE_PTR(out);
	return 0;
}

int path_clean_relative(const char *path, char **ret)
{
	return clean_path(path, false, ret);
}

static int open_with_openat2(int root_fd, const char *path, int flags, mode_t mode,
			     uint64_t resolve)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve,
	};

	/* RESOLVE_IN_ROOT fails with EAGAIN when a rename races with ".." resolution. */
	for (int i = 0; i < 16; i++) {
		int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
		if (fd >= 0)
			return fd;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
	return -EAGAIN;
}

typedef struct FdStack {
	int *fds; /* fds[0] is the root and not owned */
	size_t n, cap;
} FdStack;

static void fd_stack_done(FdStack *s)
{
	for (size_t i = 1; i < s->n; i++)
		close(s->fds[i]);
	free(s->fds);
}

static void fd_stack_pop_to(FdStack *s, size_t n)
{
	while (s->n > n)
		close(s->fds[--s->n]);
}

static void fd_stack_push(FdStack *s, int fd)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->fds = xrealloc(s->fds, s->cap * sizeof(int));
	}
	s->fds[s->n++] = fd;
}

/* Replaces the walk's remaining path with "target/next". */
static char *splice_link(const char *target, const char *next)
{
	return xasprintf("%s/%s", target, next);
}

/* The fallback: one component at a time, every symlink read and re-resolved against the root,
 * ".." at the root staying there. Only O_NOFOLLOW opens touch the tree, so a concurrent swap of
 * a component for a symlink fails the lookup instead of escaping. */
static int open_with_walk(int root_fd, const char *path, int flags, mode_t mode)
{
	_cleanup_(fd_stack_done) FdStack st = {0};
	_cleanup_free_ char *rest = xstrdup(path);
	_cleanup_free_ char *target = malloc(PATH_MAX);
	char *p = rest;
	int links = 0;

	if (!target)
		return -ENOMEM;
	fd_stack_push(&st, root_fd);
	for (;;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		char *e = strchrnul(p, '/');
		char *next = e;
		while (*next == '/')
			next++;
		bool last = *next == 0;
		*e = 0;
		int top = st.fds[st.n - 1];

		if (strcmp(p, ".") == 0) {
			p = next;
			continue;
		}
		if (strcmp(p, "..") == 0) {
			if (st.n > 1)
				fd_stack_pop_to(&st, st.n - 1);
			p = next;
			continue;
		}
		if (!last || !(flags & O_NOFOLLOW)) {
			ssize_t n = readlinkat(top, p, target, PATH_MAX - 1);
			if (n >= 0) {
				if (++links > ROOTFS_MAX_SYMLINKS)
					return -ELOOP;
				target[n] = 0;
				if (target[0] == '/')
					fd_stack_pop_to(&st, 1);
				char *spliced = splice_link(target, next);
				free(rest);
				rest = spliced;
				p = rest;
				continue;
			}
		}
		if (last) {
			int fd = openat(top, p, flags | O_NOFOLLOW | O_CLOEXEC, mode);
			return fd < 0 ? -errno : fd;
		}
		int fd = openat(top, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		fd_stack_push(&st, fd);
		p = next;
	}
	int fd = openat(st.fds[st.n - 1], ".", flags | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

int rootfs_open(int root_fd, const char *path, int flags, mode_t mode)
{
	if (!path || !*path)
		path = ".";
	if (!force_fallback && !openat2_missing) {
		int fd = open_with_openat2(root_fd, path, flags, mode, 0);
		if (fd != -ENOSYS)
			return fd;
		openat2_missing = true;
	}
	return open_with_walk(root_fd, path, flags, mode);
}

int rootfs_open_no_symlinks(int root_fd, const char *path, int flags)
{
	if (force_fallback || openat2_missing)
		return -ENOSYS;
	int fd =
	    open_with_openat2(root_fd, path && *path ? path : ".", flags, 0, RESOLVE_NO_SYMLINKS);
	if (fd == -ENOSYS)
		openat2_missing = true;
	return fd;
}

static bool is_dot_name(const char *s)
{
	return !*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0;
}

int rootfs_open_parent(int root_fd, const char *path, int *ret_dirfd, char **ret_name,
		       KilnError **err)
{
	_cleanup_free_ char *copy = xstrdup(path);
	size_t len = strlen(copy);
	const char *parent, *name;
	int fd;

	while (len > 1 && copy[len - 1] == '/')
		copy[--len] = 0;
	char *slash = strrchr(copy, '/');
	if (slash) {
		*slash = 0;
		name = slash + 1;
		parent = copy[0] ? copy : "/";
	} else {
		name = copy;
		parent = ".";
	}
	if (is_dot_name(name)) {
		fd = rootfs_open(root_fd, path, O_RDONLY | O_DIRECTORY, 0);
		if (fd < 0)
			return kiln_error_errno(err, -fd, "open '%s' in root", path);
		name = ".";
	} else {
		fd = rootfs_open(root_fd, parent, O_RDONLY | O_DIRECTORY, 0);
		if (fd < 0)
			return kiln_error_errno(err, -fd, "open '%s' in root", parent);
	}
	*ret_name = xstrdup(name);
	*ret_dirfd = fd;
	return 0;
}

static int mkdir_one(int root_fd, const char *prefix, mode_t mode, uid_t uid, gid_t gid,
		     int *ret_fd, KilnError **err)
{
	_cleanup_close_ int pfd = -1;
	_cleanup_free_ char *name = NULL;
	int r = rootfs_open_parent(root_fd, prefix, &pfd, &name, err);

	if (r < 0)
		return r;
	if (mkdirat(pfd, name, 0700) < 0 && errno != EEXIST)
		return kiln_error_errno(err, errno, "mkdir '%s'", prefix);
	_cleanup_close_ int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", prefix);
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0) {
		if (errno == EINVAL)
			return kiln_error(err, EINVAL, "chown '%s' to %d:%d: id not mapped", prefix,
					  (int)uid, (int)gid);
		return kiln_error_errno(err, errno, "chown '%s'", prefix);
	}
	if (fchmod(fd, mode & 07777) < 0)
		return kiln_error_errno(err, errno, "chmod '%s'", prefix);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int rootfs_mkdir_p(int root_fd, const char *path, mode_t mode, uid_t uid, gid_t gid, int *ret_fd,
		   KilnError **err)
{
	_cleanup_free_ char *clean = NULL;
	_cleanup_close_ int cur = -1;
	int r = clean_path(path, true, &clean);

	if (r < 0)
		return kiln_error(err, -r, "clean path '%s'", path);
	char *s = clean;

	if (strcmp(clean, ".") == 0) {
		cur = rootfs_open(root_fd, ".", O_RDONLY | O_DIRECTORY, 0);
		if (cur < 0)
			return kiln_error_errno(err, -cur, "open root");
		s = NULL;
	}
	/* Each prefix is resolved from the root again, so a symlink made on the way is followed
	 * inside the root like any other. */
	while (s) {
		char *slash = strchr(s, '/');
		if (slash)
			*slash = 0;
		int fd = rootfs_open(root_fd, clean, O_RDONLY | O_DIRECTORY, 0);
		if (fd == -ENOENT) {
			r = mkdir_one(root_fd, clean, mode, uid, gid, &fd, err);
			if (r < 0)
				return r;
		} else if (fd < 0) {
			return kiln_error_errno(err, -fd, "open '%s' in root", clean);
		}
		if (cur >= 0)
			close(cur);
		cur = fd;
		if (slash)
			*slash = '/';
		s = slash ? slash + 1 : NULL;
	}
	if (ret_fd)
		*ret_fd = TAKE_FD(cur);
	return 0;
}
