#include "context.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/digest.h"
#include "common/fdutil.h"
#include "common/rootfs.h"
#include "layers/layer_apply.h"

struct BuildContext {
	int fd;
	DockerIgnore *ignore;
};

/* A path made absolute (against the cwd) and cleaned, without its leading '/'; NULL if it
 * climbs above '/'. */
static char *path_absolute_clean(const char *p)
{
	_cleanup_free_ char *cwd = p[0] == '/' ? NULL : getcwd(NULL, 0);
	_cleanup_free_ char *abs = cwd ? xasprintf("%s/%s", cwd, p) : xstrdup(p);
	char *clean = NULL;

	if (p[0] != '/' && !cwd)
		return NULL;
	return path_clean_relative(abs, &clean) < 0 ? NULL : clean;
}

/* path relative to dir when it lies below dir (lexically), else NULL. */
static char *path_below(const char *dir, const char *path)
{
	_cleanup_free_ char *d = path_absolute_clean(dir), *f = path_absolute_clean(path);
	size_t n = d ? strlen(d) : 0;

	if (!d || !f || strcmp(f, ".") == 0)
		return NULL;
	if (strcmp(d, ".") == 0)
		return xstrdup(f);
	if (strncmp(f, d, n) == 0 && f[n] == '/')
		return xstrdup(f + n + 1);
	return NULL;
}

/* Where a Dockerfile path resolves: the context and the path in it when it lies in the context
 * (CONTEXT/Dockerfile by default), else `-f PATH`'s own directory (a Dockerfile outside the
 * context is the user's explicit choice, as in buildx) and its last component. */
static int dockerfile_anchor(const char *context_dir, const char *dockerfile, int *ret_fd,
			     char **ret_dir, char **ret_rel, KilnError **err)
{
	_cleanup_free_ char *rel =
	    dockerfile ? path_below(context_dir, dockerfile) : xstrdup("Dockerfile");
	_cleanup_free_ char *dir = xstrdup(context_dir);

	if (!rel) {
		char *slash;
		free(dir);
		dir = xstrdup(dockerfile);
		slash = strrchr(dir, '/');
		rel = xstrdup(slash ? slash + 1 : dir);
		if (!slash)
			strcpy(dir, ".");
		else if (slash == dir)
			dir[1] = 0;
		else
			*slash = 0;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", dir);
	*ret_fd = fd;
	*ret_dir = TAKE_PTR(dir);
	*ret_rel = TAKE_PTR(rel);
	return 0;
}

/* Reads rel inside dirfd the way BuildKit reads a context: symlinks resolve inside it (so a
 * repository's `Dockerfile -> /root/...` cannot make kiln read a host file), FIFOs and devices
 * are refused instead of blocking, and the size is capped. A missing file is -ENOENT without an
 * error when missing_ok; a symlink that does not resolve inside is -EXDEV. */
static int anchored_read(int dirfd, const char *dir, const char *rel, const char *shown, size_t max,
			 bool missing_ok, char **ret_data, size_t *ret_len, KilnError **err)
{
	_cleanup_close_ int fd = rootfs_open(dirfd, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
	struct stat st;

	if (fd >= 0)
		return read_regular_fd(fd, shown, max, ret_data, ret_len, err);
	if (fd == -ENOENT && fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISLNK(st.st_mode))
		return kiln_error(
		    err, EXDEV,
		    "'%s' is a symlink that does not resolve inside '%s' (symlinks are "
		    "followed only inside it)",
		    shown, dir);
	if (fd == -ENOENT && missing_ok)
		return -ENOENT;
	return kiln_error_errno(err, -fd, "open '%s'", shown);
}

int build_dockerfile_read(const char *context_dir, const char *dockerfile, char **ret_data,
			  size_t *ret_len, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *dir = NULL, *rel = NULL;
	_cleanup_free_ char *shown =
	    dockerfile ? xstrdup(dockerfile) : xasprintf("%s/Dockerfile", context_dir);
	int r = dockerfile_anchor(context_dir, dockerfile, &fd, &dir, &rel, err);

	if (r < 0)
		return r;
	return anchored_read(fd, dir, rel, shown, DOCKERFILE_MAX_SIZE, false, ret_data, ret_len,
			     err);
}

/* DOCKERFILE.dockerignore next to an explicit Dockerfile, else CONTEXT/.dockerignore. */
static int ignore_read(int ctx_fd, const char *context_dir, const char *dockerfile, char **ret_data,
		       size_t *ret_len, KilnError **err)
{
	int r = -ENOENT;

	if (dockerfile) {
		_cleanup_close_ int fd = -1;
		_cleanup_free_ char *dir = NULL, *rel = NULL, *name = NULL, *shown = NULL;
		r = dockerfile_anchor(context_dir, dockerfile, &fd, &dir, &rel, err);
		if (r < 0)
			return r;
		name = xasprintf("%s.dockerignore", rel);
		shown = xasprintf("%s.dockerignore", dockerfile);
		r = anchored_read(fd, dir, name, shown, DOCKERIGNORE_MAX_SIZE, true, ret_data,
				  ret_len, err);
	}
	if (r != -ENOENT)
		return r;
	_cleanup_free_ char *shown = xasprintf("%s/.dockerignore", context_dir);
	return anchored_read(ctx_fd, context_dir, ".dockerignore", shown, DOCKERIGNORE_MAX_SIZE,
			     true, ret_data, ret_len, err);
}

int build_context_open(const char *dir, const char *dockerfile_path, BuildContext **ret,
		       KilnError **err)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *data = NULL;
	_cleanup_(dockerignore_freep) DockerIgnore *ignore = NULL;
	size_t len = 0;
	int r;

	if (fd < 0)
		return kiln_error_errno(err, errno, "open build context '%s'", dir);
	r = ignore_read(fd, dir, dockerfile_path, &data, &len, err);
	if (r < 0 && r != -ENOENT)
		return r;
	if (r >= 0 && (r = dockerignore_parse(data, len, &ignore, err)) < 0)
		return kiln_error_wrap(err, r, ".dockerignore");
	BuildContext *c = xcalloc(1, sizeof(*c));
	c->fd = TAKE_FD(fd);
	c->ignore = TAKE_PTR(ignore);
	*ret = c;
	return 0;
}

void build_context_free(BuildContext *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	dockerignore_free(c->ignore);
	free(c);
}

int build_context_fd(const BuildContext *c)
{
	return c->fd;
}

const DockerIgnore *build_context_ignore(const BuildContext *c)
{
	return c->ignore;
}

/* Opens a source path: in the context, a path that leads outside (by '..' or a symlink) is an
 * error, as in every Dockerfile builder; in a stage root, it resolves inside that root. */
static int open_source(int root_fd, const char *rel, const CopyOptions *o, int flags,
		       KilnError **err)
{
	if (!o->from_context) {
		int fd = rootfs_open(root_fd, rel, flags, 0);
		if (fd < 0)
			return kiln_error_errno(err, -fd, "%s: '%s'", o->what, rel);
		return fd;
	}
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, root_fd, rel, &how, sizeof(how));
	if (fd >= 0)
		return fd;
	if (errno == EXDEV)
		return kiln_error(err, EXDEV, "%s: '%s' leads outside the build context", o->what,
				  rel);
	if (errno == ENOENT)
		return kiln_error(err, ENOENT, "%s: '%s' not found in the build context", o->what,
				  rel);
	return kiln_error_errno(err, errno, "%s: open '%s' in the build context", o->what, rel);
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A context-relative path below rel ("" or "." is the top). */
static char *rel_join(const char *rel, const char *name)
{
	return *rel && strcmp(rel, ".") ? xasprintf("%s/%s", rel, name) : xstrdup(name);
}

/* Opens a file the walk saw as regular. The tree may change meanwhile: a FIFO swapped in fails
 * instead of blocking the build (O_NONBLOCK, then the type is checked on the fd). */
static int open_regular_at(int dirfd, const char *name, int flags, const char *shown,
			   KilnError **err)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | flags);

	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", shown);
	int r = fd_require_regular(fd, shown, err);
	return r < 0 ? r : TAKE_FD(fd);
}

static bool has_glob(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

static bool ignored(const CopyOptions *o, const char *rel)
{
	return o->from_context && o->ignore && dockerignore_excluded(o->ignore, rel);
}

/* Expands a cleaned relative pattern component by component; matches land in *out. */
static int glob_expand(int root_fd, const char *prefix, char **comps, const CopyOptions *o,
		       char ***out, KilnError **err)
{
	if (!comps[0])
		return strv_push(out, prefix);
	if (!has_glob(comps[0])) {
		_cleanup_free_ char *p = rel_join(prefix, comps[0]);
		struct stat st;
		_cleanup_close_ int fd = -1;
		if (!comps[1])
			return strv_push(out, p);
		fd = open_source(root_fd, p, o, O_PATH, NULL);
		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode))
			return 0;
		return glob_expand(root_fd, p, comps + 1, o, out, err);
	}
	_cleanup_close_ int dfd =
	    open_source(root_fd, *prefix ? prefix : ".", o, O_RDONLY | O_DIRECTORY, NULL);
	_cleanup_strv_free_ char **names = NULL;
	if (dfd < 0)
		return 0;
	int k = dir_list_sorted(dfd, &names, err);
	if (k < 0)
		return kiln_error_wrap(err, k, "'%s'", prefix);
	size_t n = strv_length(names);
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *p = rel_join(prefix, names[i]);
		if (fnmatch(comps[0], names[i], 0) != 0 || ignored(o, p))
			continue;
		int r = glob_expand(root_fd, p, comps + 1, o, out, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Cleans each source; globs are expanded in sorted order. */
static int sources_resolve(int root_fd, char *const *srcs, const CopyOptions *o, char ***ret,
			   KilnError **err)
{
	_cleanup_strv_free_ char **out = NULL;

	for (size_t i = 0; srcs[i]; i++) {
		_cleanup_free_ char *clean = NULL;
		if (path_clean_relative(srcs[i], &clean) < 0)
			return kiln_error(err, EXDEV, "%s: '%s' is outside the %s", o->what,
					  srcs[i],
					  o->from_context ? "build context" : "stage root");
		if (!has_glob(clean)) {
			strv_push(&out, clean);
			continue;
		}
		_cleanup_strv_free_ char **comps = NULL;
		char *save = NULL;
		for (char *c = strtok_r(clean, "/", &save); c; c = strtok_r(NULL, "/", &save))
			strv_push(&comps, c);
		size_t before = strv_length(out);
		int r = glob_expand(root_fd, "", comps, o, &out, err);
		if (r < 0)
			return r;
		if (strv_length(out) == before)
			return kiln_error(err, ENOENT, "%s: no source files match '%s'", o->what,
					  srcs[i]);
		qsort(out + before, strv_length(out) - before, sizeof(char *), cmp_strp);
	}
	*ret = TAKE_PTR(out);
	return 0;
}

typedef struct CopyJob {
	const CopyOptions *o;
	int dest_root;
} CopyJob;

/* The mode a copied entry gets: --chmod, else for the build context git's model (0755 when the
 * owner may execute, else 0644; dirs 0755), so the checkout's umask never reaches the image, else
 * the source's own mode (another stage or image). */
static mode_t copy_effective_mode(const CopyOptions *o, const struct stat *st)
{
	if (o->set_mode)
		return o->mode;
	if (o->from_context)
		return S_ISDIR(st->st_mode) || (st->st_mode & S_IXUSR) ? 0755 : 0644;
	return st->st_mode & 07777;
}

static int apply_meta(int fd, const char *name_or_null, const struct stat *st, const CopyJob *j,
		      bool is_link, const char *dest_path, KilnError **err)
{
	uid_t uid = j->o->set_owner ? j->o->uid : st->st_uid;
	gid_t gid = j->o->set_owner ? j->o->gid : st->st_gid;
	const char *n = name_or_null ? name_or_null : "";
	int flags = (name_or_null ? AT_SYMLINK_NOFOLLOW : AT_EMPTY_PATH);

	if (fchownat(fd, n, uid, gid, flags) < 0) {
		if (errno == EINVAL)
			return kiln_error(err, EINVAL, "chown '%s' to %u:%u: id not mapped",
					  dest_path, (unsigned)uid, (unsigned)gid);
		return kiln_error_errno(err, errno, "chown '%s'", dest_path);
	}
	if (!is_link) {
		mode_t mode = copy_effective_mode(j->o, st);
		if (name_or_null ? fchmodat(fd, n, mode, 0) < 0 : fchmod(fd, mode) < 0)
			return kiln_error_errno(err, errno, "chmod '%s'", dest_path);
	}
	struct timespec ts[2];
	if (j->o->mtime >= 0) {
		ts[0].tv_sec = ts[1].tv_sec = j->o->mtime;
		ts[0].tv_nsec = ts[1].tv_nsec = 0;
	} else {
		ts[0] = st->st_atim;
		ts[1] = st->st_mtim;
	}
	if (utimensat(fd, n, ts, flags) < 0)
		return kiln_error_errno(err, errno, "set times of '%s'", dest_path);
	return 0;
}

static int copy_file_data(int in, int out, const char *dest_path, KilnError **err)
{
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return kiln_error_errno(err, errno, "copy to '%s'", dest_path);
		break;
	}
	char buf[65536];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return kiln_error_errno(err, errno, "read source of '%s'", dest_path);
		}
		if (n == 0)
			return 0;
		int r = write_all(out, buf, (size_t)n);
		if (r < 0)
			return kiln_error_errno(err, -r, "write '%s'", dest_path);
	}
}

/* Removes whatever is at dirfd/name unless it is a directory and keep_dir is set. */
static int clear_entry(int dirfd, const char *name, bool keep_dir, bool *ret_is_dir,
		       KilnError **err)
{
	struct stat st;

	*ret_is_dir = false;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : kiln_error_errno(err, errno, "stat '%s'", name);
	if (S_ISDIR(st.st_mode) && keep_dir) {
		*ret_is_dir = true;
		return 0;
	}
	return rm_rf_at(dirfd, name, err);
}

/* Copies one non-directory entry src_dir/name to dest_dir/dest_name (which is clear). */
static int copy_leaf(int src_dir, const char *name, const char *src_rel, const struct stat *st,
		     int dest_dir, const char *dest_name, const char *dest_path, const CopyJob *j,
		     KilnError **err)
{
	int r;

	if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(src_dir, name, target, PATH_MAX);
		if (n < 0)
			return kiln_error_errno(err, errno, "readlink '%s'", src_rel);
		target[n] = 0;
		if (symlinkat(target, dest_dir, dest_name) < 0)
			return kiln_error_errno(err, errno, "symlink '%s'", dest_path);
		return apply_meta(dest_dir, dest_name, st, j, true, dest_path, err);
	}
	if (S_ISREG(st->st_mode)) {
		_cleanup_close_ int in = open_regular_at(src_dir, name, O_NOFOLLOW, src_rel, err);
		if (in < 0)
			return in;
		_cleanup_close_ int out =
		    openat(dest_dir, dest_name,
			   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (out < 0)
			return kiln_error_errno(err, errno, "create '%s'", dest_path);
		r = copy_file_data(in, out, dest_path, err);
		if (r < 0)
			return r;
		return apply_meta(out, NULL, st, j, false, dest_path, err);
	}
	if (mknodat(dest_dir, dest_name, st->st_mode & (S_IFMT | 07777), st->st_rdev) < 0)
		return kiln_error_errno(err, errno, "mknod '%s'", dest_path);
	return apply_meta(dest_dir, dest_name, st, j, false, dest_path, err);
}

/* The destination side of a dir_walk() over a source tree: the dest dir matching the walk's
 * current dir, and per dir entered its inode (".." is checked on the way up) and whether its
 * metadata is left alone (an excluded dir that existed). */
typedef struct DestDir {
	dev_t dev;
	ino_t ino;
	bool keep_meta;
} DestDir;

typedef struct CopyWalk {
	const CopyJob *j;
	size_t src_len; /* length of the source top's path (the walk's prefix) */
	const char *dest_top;
	int dest;
	DestDir *stack;
	size_t n;
} CopyWalk;

static char *copy_dest_path(const CopyWalk *cw, const char *src_path)
{
	const char *rel = src_path + cw->src_len + (cw->src_len ? 1 : 0);

	return strcmp(cw->dest_top, "/") == 0 ? xasprintf("/%s", rel)
					      : xasprintf("%s/%s", cw->dest_top, rel);
}

static int copy_enter_dir(CopyWalk *cw, const char *name, bool existed, bool keep_meta,
			  const char *dest_path, KilnError **err)
{
	struct stat st;

	if (!existed && mkdirat(cw->dest, name, 0700) < 0)
		return kiln_error_errno(err, errno, "mkdir '%s'", dest_path);
	int fd = openat(cw->dest, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = kiln_error_errno(err, errno, "open '%s'", dest_path);
		closep(&fd);
		return r;
	}
	cw->stack = xrealloc(cw->stack, (cw->n + 1) * sizeof(DestDir));
	cw->stack[cw->n++] = (DestDir){.dev = st.st_dev, .ino = st.st_ino, .keep_meta = keep_meta};
	closep(&cw->dest);
	cw->dest = fd;
	return 0;
}

/* After a dir's entries: its metadata (last, so its mode cannot keep them out), then up. */
static int copy_leave_dir(CopyWalk *cw, const struct stat *src_st, const char *dest_path,
			  KilnError **err)
{
	DestDir d = cw->stack[--cw->n];
	const DestDir *parent = &cw->stack[cw->n - 1];
	struct stat st;
	int r = 0;

	int fd = openat(cw->dest, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_dev != parent->dev || st.st_ino != parent->ino)
		r = kiln_error(err, ESTALE, "'%s' was moved while it was copied", dest_path);
	if (r >= 0 && !d.keep_meta)
		r = apply_meta(cw->dest, NULL, src_st, cw->j, false, dest_path, err);
	closep(&cw->dest);
	cw->dest = fd;
	return r;
}

static int copy_visit(void *userdata, DirWalkEvent ev, int dfd, const char *name, const char *path,
		      const struct stat *st, KilnError **err)
{
	CopyWalk *cw = userdata;
	const CopyOptions *o = cw->j->o;
	_cleanup_free_ char *dest_path = copy_dest_path(cw, path);
	bool dir = S_ISDIR(st->st_mode), existed;
	int r;

	if (ev == DIR_WALK_LEAVE)
		return copy_leave_dir(cw, st, dest_path, err);
	bool excluded = ignored(o, path);
	if (excluded && !(dir && o->from_context && o->ignore &&
			  dockerignore_may_include_below(o->ignore, path)))
		return 1;
	r = clear_entry(cw->dest, name, dir, &existed, err);
	if (r < 0)
		return r;
	if (dir)
		return copy_enter_dir(cw, name, existed, excluded && existed, dest_path, err);
	r = copy_leaf(dfd, name, path, st, cw->dest, name, dest_path, cw->j, err);
	return r < 0 ? r : 1;
}

/* Copies the entries below src_fd (at src_rel) into dest_fd (at dest_path), any depth. */
static int copy_dir_contents(int src_fd, const char *src_rel, int dest_fd, const char *dest_path,
			     const CopyJob *j, KilnError **err)
{
	CopyWalk cw = {.j = j, .src_len = strlen(src_rel), .dest_top = dest_path};
	struct stat st;
	int r;

	cw.dest = fcntl(dest_fd, F_DUPFD_CLOEXEC, 3);
	if (cw.dest < 0 || fstat(cw.dest, &st) < 0) {
		r = kiln_error_errno(err, errno, "open '%s'", dest_path);
		closep(&cw.dest);
		return r;
	}
	cw.stack = xcalloc(1, sizeof(DestDir));
	cw.stack[cw.n++] = (DestDir){.dev = st.st_dev, .ino = st.st_ino};
	r = dir_walk(src_fd, src_rel, 0, copy_visit, &cw, err);
	closep(&cw.dest);
	free(cw.stack);
	return r;
}

static bool looks_like_archive(int fd)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	bool ok;

	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	ok = lseek(fd, 0, SEEK_SET) == 0 && archive_read_open_fd(a, fd, 65536) == ARCHIVE_OK &&
	     archive_read_next_header(a, &e) == ARCHIVE_OK;
	archive_read_free(a);
	lseek(fd, 0, SEEK_SET);
	return ok;
}

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir);

	if (n && dir[n - 1] == '/')
		return xasprintf("%s%s", dir, name);
	return xasprintf("%s/%s", dir, name);
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

static int make_dest_dir(const CopyJob *j, const char *path, int *ret_fd, KilnError **err)
{
	uid_t uid = j->o->set_owner ? j->o->uid : 0;
	gid_t gid = j->o->set_owner ? j->o->gid : 0;

	return rootfs_mkdir_p(j->dest_root, path, 0755, uid, gid, ret_fd, err);
}

/* Copies one non-directory source (sfd: O_PATH, top-level symlinks already followed) to target. */
static int copy_single_file(int sfd, const struct stat *st, const char *src, const char *target,
			    const CopyJob *j, KilnError **err)
{
	_cleanup_close_ int pdir = -1;
	_cleanup_free_ char *name = NULL;
	_cleanup_free_ char *parent = xstrdup(target);
	char *slash = strrchr(parent, '/');
	bool is_dir;
	int r;

	if (slash && slash != parent)
		*slash = 0;
	else
		strcpy(parent, "/");
	r = make_dest_dir(j, parent, NULL, err);
	if (r < 0)
		return r;
	r = rootfs_open_parent(j->dest_root, target, &pdir, &name, err);
	if (r < 0)
		return r;
	r = clear_entry(pdir, name, false, &is_dir, err);
	if (r < 0)
		return r;
	if (!S_ISREG(st->st_mode)) {
		if (mknodat(pdir, name, st->st_mode & (S_IFMT | 07777), st->st_rdev) < 0)
			return kiln_error_errno(err, errno, "mknod '%s'", target);
		return apply_meta(pdir, name, st, j, false, target, err);
	}
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", sfd);
	_cleanup_close_ int in = open(proc, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return kiln_error_errno(err, errno, "open '%s'", src);
	_cleanup_close_ int out =
	    openat(pdir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return kiln_error_errno(err, errno, "create '%s'", target);
	r = copy_file_data(in, out, target, err);
	if (r < 0)
		return r;
	return apply_meta(out, NULL, st, j, false, target, err);
}

static int copy_one_source(int src_root, const char *src, const char *dest, bool dest_is_dir,
			   const CopyJob *j, KilnError **err)
{
	const CopyOptions *o = j->o;
	_cleanup_close_ int sfd = open_source(src_root, src, o, O_PATH, err);
	struct stat st;
	int r;

	if (sfd < 0)
		return sfd;
	if (fstat(sfd, &st) < 0)
		return kiln_error_errno(err, errno, "stat '%s'", src);
	if (S_ISDIR(st.st_mode)) {
		_cleanup_close_ int dfd = -1;
		_cleanup_close_ int s = openat(sfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s < 0)
			return kiln_error_errno(err, errno, "open '%s'", src);
		r = make_dest_dir(j, dest, &dfd, err);
		if (r < 0)
			return r;
		return copy_dir_contents(s, strcmp(src, ".") ? src : "", dfd, dest, j, err);
	}
	_cleanup_free_ char *target = NULL;
	_cleanup_close_ int probe = -1;
	if (!dest_is_dir) {
		probe = rootfs_open(j->dest_root, dest, O_PATH | O_DIRECTORY, 0);
		dest_is_dir = probe >= 0;
	}
	if (S_ISREG(st.st_mode) && o->extract_archives) {
		_cleanup_close_ int in = open_source(src_root, src, o, O_RDONLY | O_NONBLOCK, err);
		if (in < 0)
			return in;
		r = fd_require_regular(in, src, err);
		if (r < 0)
			return r;
		if (looks_like_archive(in)) {
			_cleanup_close_ int dfd = -1;
			LayerApplyResult res = {0};
			r = make_dest_dir(j, dest, &dfd, err);
			if (r < 0)
				return r;
			LayerApplyOptions lo = {
			    .mode = LAYER_APPLY_MERGE,
			    .whiteouts = false,
			    .keep_owner = true,
			    .force_uid = o->set_owner ? o->uid : (uid_t)-1,
			    .force_gid = o->set_owner ? o->gid : (gid_t)-1,
			    .max_bytes = o->max_bytes,
			    .max_entries = o->max_entries,
			    .skip_devices = true,
			    .result = &res,
			};
			r = layer_apply(in, dfd, &lo, NULL, err);
			if (r < 0)
				return kiln_error_wrap(err, r, "%s: extract '%s'", o->what, src);
			if (o->devices_skipped)
				*o->devices_skipped += res.devices_skipped;
			return 0;
		}
	}
	target = dest_is_dir ? path_join(dest, base_name(src)) : xstrdup(dest);
	return copy_single_file(sfd, &st, src, target, j, err);
}

int copy_into(int src_root_fd, char *const *srcs, int dest_root_fd, const char *dest,
	      const CopyOptions *opts, KilnError **err)
{
	_cleanup_strv_free_ char **list = NULL;
	CopyJob j = {.o = opts, .dest_root = dest_root_fd};
	size_t n_given = strv_length(srcs);
	bool dest_is_dir = dest[strlen(dest) - 1] == '/';
	int r;

	r = sources_resolve(src_root_fd, srcs, opts, &list, err);
	if (r < 0)
		return r;
	bool any_glob = false;
	for (size_t i = 0; i < n_given; i++)
		any_glob |= has_glob(srcs[i]);
	if ((n_given > 1 || (any_glob && strv_length(list) > 1)) && !dest_is_dir)
		return kiln_error(err, EINVAL,
				  "%s: with more than one source the destination must be a "
				  "directory and end with '/': '%s'",
				  opts->what, dest);
	for (size_t i = 0; list[i]; i++) {
		r = copy_one_source(src_root_fd, list[i], dest, dest_is_dir, &j, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---------- source manifests (cache keys) ---------- */

static int manifest_add(int dirfd, const char *name, const char *rel, const struct stat *st,
			const CopyOptions *o, json_t *out, KilnError **err)
{
	unsigned uid = o->set_owner ? o->uid : st->st_uid;
	unsigned gid = o->set_owner ? o->gid : st->st_gid;
	unsigned mode = copy_effective_mode(o, st);
	char *val;

	if (S_ISREG(st->st_mode)) {
		/* name is a /proc/self/fd link for a top-level source (followed on purpose) */
		_cleanup_close_ int fd =
		    open_regular_at(dirfd, name, dirfd == AT_FDCWD ? 0 : O_NOFOLLOW, rel, err);
		_cleanup_(sha256_freep) Sha256 *h = NULL;
		char buf[65536], digest[DIGEST_STRING_MAX];
		ssize_t n;
		if (fd < 0)
			return kiln_error_wrap(err, fd, "%s", o->what);
		if (sha256_new(&h, err) < 0)
			return -ENOMEM;
		while ((n = read(fd, buf, sizeof(buf))) != 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return kiln_error_errno(err, errno, "%s: read '%s'", o->what, rel);
			sha256_update(h, buf, (size_t)n);
		}
		sha256_final(h, digest);
		val = xasprintf("f %04o %u:%u %s", mode, uid, gid, digest);
	} else if (S_ISDIR(st->st_mode)) {
		val = xasprintf("d %04o %u:%u", mode, uid, gid);
	} else if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, name, target, PATH_MAX);
		if (n < 0)
			return kiln_error_errno(err, errno, "readlink '%s'", rel);
		target[n] = 0;
		val = xasprintf("l %u:%u %s", uid, gid, target);
	} else {
		val = xasprintf("o %06o %u:%u %lu", (unsigned)st->st_mode, uid, gid,
				(unsigned long)st->st_rdev);
	}
	json_object_set_new(out, rel, json_string(val));
	free(val);
	return 0;
}

typedef struct ManifestWalk {
	const CopyOptions *o;
	json_t *out;
} ManifestWalk;

static int manifest_visit(void *userdata, DirWalkEvent ev, int dfd, const char *name,
			  const char *path, const struct stat *st, KilnError **err)
{
	ManifestWalk *mw = userdata;
	bool dir = S_ISDIR(st->st_mode);

	if (ev == DIR_WALK_LEAVE)
		return 0;
	bool excluded = ignored(mw->o, path);
	if (excluded &&
	    !(dir && mw->o->ignore && dockerignore_may_include_below(mw->o->ignore, path)))
		return 1;
	int r = excluded ? 0 : manifest_add(dfd, name, path, st, mw->o, mw->out, err);
	return r < 0 ? r : dir ? 0 : 1;
}

static int manifest_dir(int dfd, const char *rel, const CopyOptions *o, json_t *out,
			KilnError **err)
{
	ManifestWalk mw = {.o = o, .out = out};

	return dir_walk(dfd, strcmp(rel, ".") ? rel : "", 0, manifest_visit, &mw, err);
}

int copy_manifest(int src_root_fd, char *const *srcs, const CopyOptions *opts, json_t **ret,
		  KilnError **err)
{
	_cleanup_strv_free_ char **list = NULL;
	json_t *out = json_object();
	int r = sources_resolve(src_root_fd, srcs, opts, &list, err);

	for (size_t i = 0; r >= 0 && list[i]; i++) {
		_cleanup_close_ int fd = open_source(src_root_fd, list[i], opts, O_PATH, err);
		struct stat st;
		if (fd < 0) {
			r = fd;
			break;
		}
		if (fstat(fd, &st) < 0) {
			r = kiln_error_errno(err, errno, "stat '%s'", list[i]);
			break;
		}
		/* The top level is followed like copy_into does; it reads through the O_PATH fd. */
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int d = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			r = d < 0 ? kiln_error_errno(err, errno, "open '%s'", list[i])
				  : manifest_add(fd, ".", list[i], &st, opts, out, err);
			if (r >= 0)
				r = manifest_dir(d, list[i], opts, out, err);
		} else {
			char proc[64];
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
			r = manifest_add(AT_FDCWD, proc, list[i], &st, opts, out, err);
		}
	}
	if (r < 0) {
		json_decref(out);
		return r;
	}
	*ret = out;
	return 0;
}
