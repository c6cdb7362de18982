#include "fdutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "owner.h"
#include "strbuf.h"

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int read_all_fd(int fd, size_t max, char **ret_data, size_t *ret_len, KilnError **err)
{
	size_t cap = max < 4096 ? max : 4096, len = 0;
	_cleanup_free_ char *buf = malloc(cap + 1);

	if (!buf)
		return kiln_error(err, ENOMEM, "out of memory");
	for (;;) {
		if (len == cap) {
			if (cap >= max) {
				char extra;
				ssize_t n;
				do
					n = read(fd, &extra, 1);
				while (n < 0 && errno == EINTR);
				if (n < 0)
					return kiln_error_errno(err, errno, "read");
				if (n > 0)
					return kiln_error(err, EFBIG, "input larger than %zu bytes",
							  max);
				break;
			}
			cap = cap * 2 > max ? max : cap * 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				return kiln_error(err, ENOMEM, "out of memory");
			buf = nb;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return kiln_error_errno(err, errno, "read");
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = 0;
	*ret_data = TAKE_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

int read_file_at(int dirfd, const char *path, size_t max, char **ret_data, size_t *ret_len,
		 KilnError **err)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", path);
	int r = read_all_fd(fd, max, ret_data, ret_len, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "read '%s'", path);
	return 0;
}

static const char *file_type_name(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFIFO:
		return "a FIFO";
	case S_IFSOCK:
		return "a socket";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	case S_IFDIR:
		return "a directory";
	case S_IFLNK:
		return "a symlink";
	default:
		return "not a file";
	}
}

int fd_require_regular(int fd, const char *what, KilnError **err)
{
	struct stat st;
	int fl;

	if (fstat(fd, &st) < 0)
		return kiln_error_errno(err, errno, "stat '%s'", what);
	if (!S_ISREG(st.st_mode))
		return kiln_error(err, EINVAL, "'%s' is %s, not a regular file", what,
				  file_type_name(st.st_mode));
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || ((fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0))
		return kiln_error_errno(err, errno, "fcntl '%s'", what);
	return 0;
}

int read_regular_fd(int fd, const char *what, size_t max, char **ret_data, size_t *ret_len,
		    KilnError **err)
{
	struct stat st;
	int r = fd_require_regular(fd, what, err);

	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return kiln_error_errno(err, errno, "stat '%s'", what);
	if ((uint64_t)st.st_size > max)
		return kiln_error(err, EFBIG, "'%s' is larger than %zu bytes", what, max);
	r = read_all_fd(fd, max, ret_data, ret_len, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "read '%s'", what);
	return 0;
}

int write_file_atomic_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode,
			 KilnError **err)
{
	/* pid and thread id: threads of one build may write the same file at once. */
	_cleanup_free_ char *tmp = xasprintf("%s.tmp-%d-%d", path, (int)getpid(), (int)gettid());
	_cleanup_close_ int fd =
	    openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	int r;

	if (fd < 0)
		return kiln_error_errno(err, errno, "create '%s'", tmp);
	r = write_all(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, path) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return kiln_error_errno(err, -r, "write '%s'", path);
	}
	return 0;
}

int mkdirat_owned(int dfd, const char *name, mode_t mode)
{
	if (mkdirat(dfd, name, mode) < 0)
		return errno == EEXIST ? 0 : -errno;
	return owner_give_at(dfd, name);
}

/* One mkdir of mkdir -p; a directory it makes is given to the user when give is set. */
static int mkdir_one(const char *p, mode_t mode, bool give, KilnError **err)
{
	int r = give ? mkdirat_owned(AT_FDCWD, p, mode) : mkdir(p, mode) < 0 ? -errno : 0;

	if (r < 0 && r != -EEXIST)
		return kiln_error_errno(err, -r, "mkdir '%s'", p);
	return 0;
}

static int mkdir_p_impl(const char *path, mode_t mode, bool give, KilnError **err)
{
	_cleanup_free_ char *p = xstrdup(path);
	int r;

	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		r = mkdir_one(p, mode, give, err);
		if (r < 0)
			return r;
		*s = '/';
	}
	return mkdir_one(p, mode, give, err);
}

int mkdir_p(const char *path, mode_t mode, KilnError **err)
{
	return mkdir_p_impl(path, mode, false, err);
}

int mkdir_p_owned(const char *path, mode_t mode, KilnError **err)
{
	return mkdir_p_impl(path, mode, true, err);
}

/* Opens dirfd/name as a directory; with unlock, one without permission is made 0700 first. */
static int open_dir_unlock(int dirfd, const char *name, bool unlock)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 && errno == EACCES && unlock) {
		fchmodat(dirfd, name, 0700, 0);
		fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	return fd;
}

static int rm_rf_visit(void *ud, DirWalkEvent ev, int dfd, const char *name, const char *path,
		       const struct stat *st, KilnError **err)
{
	bool dir = S_ISDIR(st->st_mode);

	(void)ud;
	if (ev == DIR_WALK_ENTRY && dir)
		return 0;
	if (unlinkat(dfd, name, dir ? AT_REMOVEDIR : 0) < 0 && errno != ENOENT)
		return kiln_error_errno(err, errno, "%s '%s'", dir ? "rmdir" : "unlink", path);
	return 0;
}

int rm_rf_at(int dirfd, const char *name, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	int r;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return kiln_error_errno(err, errno, "stat '%s'", name);
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
			return kiln_error_errno(err, errno, "unlink '%s'", name);
		return 0;
	}
	fd = open_dir_unlock(dirfd, name, true);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", name);
	r = dir_walk(fd, name, DIR_WALK_UNLOCK | DIR_WALK_MISSING_OK, rm_rf_visit, NULL, err);
	if (r < 0)
		return r;
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return kiln_error_errno(err, errno, "rmdir '%s'", name);
	return 0;
}

/* ---------- dir_walk ---------- */

typedef struct WalkFrame {
	char **names; /* the directory's entries, sorted */
	size_t next;
	struct stat st;	 /* the directory's own: for LEAVE and the check on the way back up */
	char *name;	 /* its name in its parent; NULL for the top */
	size_t path_len; /* length of its path in Walk.path */
} WalkFrame;

typedef struct Walk {
	DirWalkFn fn;
	void *userdata;
	unsigned flags;
	int cur; /* the directory of the innermost frame */
	WalkFrame *frames;
	size_t n, cap;
	StrBuf path;
} Walk;

static void walk_done(Walk *w)
{
	closep(&w->cur);
	for (size_t i = 0; i < w->n; i++) {
		strv_free(w->frames[i].names);
		free(w->frames[i].name);
	}
	free(w->frames);
	strbuf_done(&w->path);
}

static bool same_inode(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Makes fd (the directory entered as name, NULL for the top) the innermost frame. */
static int walk_push(Walk *w, int fd, const char *name, const struct stat *st, KilnError **err)
{
	char **names = NULL;
	int r = dir_list_sorted(fd, &names, err);

	if (r < 0) {
		close(fd);
		return kiln_error_wrap(err, r, "read dir '%s'", w->path.len ? w->path.s : ".");
	}
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 16;
		w->frames = xrealloc(w->frames, w->cap * sizeof(WalkFrame));
	}
	w->frames[w->n++] = (WalkFrame){
	    .names = names,
	    .st = *st,
	    .name = name ? xstrdup(name) : NULL,
	    .path_len = w->path.len,
	};
	closep(&w->cur);
	w->cur = fd;
	return 0;
}

/* Leaves the innermost directory through ".." and reports LEAVE for it. */
static int walk_pop(Walk *w, KilnError **err)
{
	WalkFrame f = w->frames[--w->n];
	_cleanup_free_ char *name = f.name;
	struct stat st;
	int r;

	strv_free(f.names);
	if (w->n == 0)
		return 0;
	WalkFrame *parent = &w->frames[w->n - 1];
	strbuf_truncate(&w->path, f.path_len);
	int fd = openat(w->cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s/..'", w->path.s);
	if (fstat(fd, &st) < 0 || !same_inode(&st, &parent->st)) {
		close(fd);
		return kiln_error(err, ESTALE, "'%s' was moved while it was read", w->path.s);
	}
	closep(&w->cur);
	w->cur = fd;
	r = w->fn(w->userdata, DIR_WALK_LEAVE, w->cur, name, w->path.s, &f.st, err);
	strbuf_truncate(&w->path, parent->path_len);
	return r < 0 ? r : 0;
}

static int walk_entry(Walk *w, const char *name, KilnError **err)
{
	struct stat st, now;
	int r, fd;

	strbuf_truncate(&w->path, w->frames[w->n - 1].path_len);
	if (w->path.len)
		strbuf_addc(&w->path, '/');
	strbuf_adds(&w->path, name);
	if (fstatat(w->cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT && (w->flags & DIR_WALK_MISSING_OK))
			return 0;
		return kiln_error_errno(err, errno, "stat '%s'", w->path.s);
	}
	r = w->fn(w->userdata, DIR_WALK_ENTRY, w->cur, name, w->path.s, &st, err);
	if (r != 0 || !S_ISDIR(st.st_mode))
		return r < 0 ? r : 0;
	fd = open_dir_unlock(w->cur, name, w->flags & DIR_WALK_UNLOCK);
	if (fd < 0 && errno == ENOENT && (w->flags & DIR_WALK_MISSING_OK))
		return 0;
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", w->path.s);
	if (fstat(fd, &now) < 0 || !same_inode(&now, &st)) {
		close(fd);
		return kiln_error(err, ESTALE, "'%s' was replaced while it was read", w->path.s);
	}
	return walk_push(w, fd, name, &st, err);
}

int dir_walk(int top_fd, const char *prefix, unsigned flags, DirWalkFn fn, void *userdata,
	     KilnError **err)
{
	_cleanup_(walk_done) Walk w = {.fn = fn, .userdata = userdata, .flags = flags, .cur = -1};
	struct stat st;
	int r, fd = openat(top_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0) {
		r = kiln_error_errno(err, errno, "open '%s'", prefix && *prefix ? prefix : ".");
		closep(&fd);
		return r;
	}
	strbuf_adds(&w.path, prefix ? prefix : "");
	r = walk_push(&w, fd, NULL, &st, err);
	while (r >= 0 && w.n > 0) {
		WalkFrame *f = &w.frames[w.n - 1];
		const char *name = f->names[f->next];
		if (name) {
			f->next++;
			r = walk_entry(&w, name, err);
		} else {
			r = walk_pop(&w, err);
		}
	}
	return r < 0 ? r : 0;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int dir_list_sorted(int dfd, char ***ret_names, KilnError **err)
{
	int dup = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names = NULL;
	struct dirent *de;
	DIR *d;

	if (dup < 0)
		return kiln_error_errno(err, errno, "open directory");
	d = fdopendir(dup);
	if (!d) {
		close(dup);
		return kiln_error_errno(err, errno, "opendir");
	}
	errno = 0;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			strv_push(&names, de->d_name);
	int saved = errno;
	closedir(d);
	if (saved) {
		strv_free(names);
		return kiln_error_errno(err, saved, "read directory");
	}
	size_t n = strv_length(names);
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_strp);
	*ret_names = names ? names : xcalloc(1, sizeof(char *));
	return 0;
}

void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

size_t strv_length(char *const *v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

int strv_consume(char ***v, char *s)
{
	size_t n = strv_length(*v);
	char **nv = realloc(*v, (n + 2) * sizeof(char *));

	if (!nv) {
		free(s);
		return -ENOMEM;
	}
	nv[n] = s;
	nv[n + 1] = NULL;
	*v = nv;
	return 0;
}

int strv_push(char ***v, const char *s)
{
	return strv_consume(v, xstrdup(s));
}

char **strv_copy(char *const *v)
{
	char **r = xcalloc(strv_length(v) + 1, sizeof(char *));

	for (size_t i = 0; v && v[i]; i++)
		r[i] = xstrdup(v[i]);
	return r;
}

static void oom(void)
{
	fputs("kiln: out of memory\n", stderr);
	abort();
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		oom();
	va_end(ap);
	return s;
}

char *xstrdup(const char *s)
{
	char *r = strdup(s ? s : "");

	if (!r)
		oom();
	return r;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t size)
{
	void *r = realloc(p, size ? size : 1);

	if (!r)
		oom();
	return r;
}
