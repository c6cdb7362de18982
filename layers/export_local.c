#include "export_local.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/owner.h"
#include "common/strbuf.h"
#include "layers/layer_apply.h"

#define COPY_BUF (128u << 10)
/* Directory levels whose fds stay open; deeper ancestors are reopened by path when the walk
 * returns to them, so a tree thousands of levels deep needs no more than this many fds. */
#define FD_WINDOW 32
#define TEMP_TRIES 100

typedef struct Frame {
	char **names;	 /* the image directory's entries, sorted */
	size_t next;	 /* next entry to copy */
	int src, dst;	 /* -1 while closed (see FD_WINDOW) */
	size_t path_len; /* length of this directory's path in Exporter.path */
	struct stat st;	 /* the image's directory */
} Frame;

typedef struct Exporter {
	char *dest;		/* for messages */
	int src_root, dst_root; /* the trees' roots, for reopening */
	Frame *frames;
	size_t depth, cap;
	StrBuf path;   /* relative path of the directory or entry at hand */
	json_t *links; /* "dev:ino" of a hard-linked image file -> its path in dest */
	char *buf;
	unsigned seq; /* temp names */
} Exporter;

static void frame_close(Frame *f)
{
	if (f->src >= 0)
		close(f->src);
	if (f->dst >= 0)
		close(f->dst);
	f->src = f->dst = -1;
}

static void exporter_done(Exporter *x)
{
	for (size_t i = 0; i < x->depth; i++) {
		frame_close(&x->frames[i]);
		strv_free(x->frames[i].names);
	}
	free(x->frames);
	closep(&x->src_root);
	closep(&x->dst_root);
	free(x->dest);
	strbuf_done(&x->path);
	if (x->links)
		json_decref(x->links);
	free(x->buf);
}

/* x->path := the path of directory f, plus "/name" when name is not NULL. */
static const char *path_set(Exporter *x, const Frame *f, const char *name)
{
	x->path.len = f->path_len;
	if (x->path.s)
		x->path.s[x->path.len] = 0;
	if (name) {
		if (x->path.len > 0)
			strbuf_addc(&x->path, '/');
		strbuf_adds(&x->path, name);
	}
	return x->path.s ? x->path.s : "";
}

/* Opens directory rel below root one component at a time, never following a symlink. */
static int open_dir_nofollow(int root, const char *rel, int *ret_fd)
{
	_cleanup_free_ char *copy = xstrdup(rel);
	_cleanup_close_ int fd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char *save = NULL;

	if (fd < 0)
		return -errno;
	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			return -errno;
		close(fd);
		fd = next;
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Reopens the fds of directory f, closed while the walk was deeper. */
static int frame_reopen(Exporter *x, Frame *f, KilnError **err)
{
	const char *rel = path_set(x, f, NULL);
	int r;

	if (f->src >= 0)
		return 0;
	r = open_dir_nofollow(x->src_root, rel, &f->src);
	if (r < 0)
		return kiln_error_errno(err, -r, "reopen image directory '%s'", rel);
	r = open_dir_nofollow(x->dst_root, rel, &f->dst);
	if (r < 0)
		return kiln_error_errno(err, -r, "reopen '%s/%s'", x->dest, rel);
	return 0;
}

static void frame_push(Exporter *x, char **names, int src, int dst, const struct stat *st)
{
	if (x->depth == x->cap) {
		x->cap = x->cap ? x->cap * 2 : 16;
		x->frames = xrealloc(x->frames, x->cap * sizeof(*x->frames));
	}
	if (x->depth >= FD_WINDOW)
		frame_close(&x->frames[x->depth - FD_WINDOW]);
	x->frames[x->depth++] =
	    (Frame){.names = names, .src = src, .dst = dst, .path_len = x->path.len, .st = *st};
}

/* A name of ours in the directory: never an existing entry (every create below is exclusive). */
static void temp_name(Exporter *x, char buf[64])
{
	snprintf(buf, 64, ".kiln-export-%d-%u", (int)getpid(), x->seq++);
}

static int set_times(int dfd, const char *name, int fd, const struct stat *st)
{
	struct timespec ts[2] = {st->st_mtim, st->st_mtim};

	if (fd >= 0)
		return futimens(fd, ts) < 0 ? -errno : 0;
	return utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* Copies a regular file's data, keeping its holes (a sparse lastlog stays sparse). */
static int copy_data(Exporter *x, int in, int out, off_t size)
{
	off_t off = 0;

	while (off < size) {
		off_t data = lseek(in, off, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break;
		off_t end = data < 0 ? size : lseek(in, data, SEEK_HOLE);
		if (data < 0)
			data = off; /* no SEEK_DATA here: copy everything */
		if (end < 0)
			return -errno;
		for (off_t at = data; at < end;) {
			size_t want = (size_t)(end - at) < COPY_BUF ? (size_t)(end - at) : COPY_BUF;
			ssize_t n = pread(in, x->buf, want, at);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? -errno : -EIO;
			ssize_t w = pwrite(out, x->buf, (size_t)n, at);
			if (w != n)
				return w < 0 ? -errno : -EIO;
			at += n;
		}
		off = end;
	}
	return ftruncate(out, size) < 0 ? -errno : 0;
}

static int make_file(Exporter *x, int sfd, int dfd, const char *name, const char *tmp,
		     const struct stat *st, bool *made)
{
	_cleanup_close_ int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int out = -1;
	int r;

	if (in < 0)
		return -errno;
	out = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	*made = true;
	r = copy_data(x, in, out, st->st_size);
	/* given to the user before the mode is set: a chown clears setuid */
	if (r == 0)
		r = owner_give_fd(out);
	if (r == 0 && fchmod(out, st->st_mode & 07777) < 0)
		r = -errno;
	return r < 0 ? r : set_times(dfd, tmp, out, st);
}

/* A second name of an image file already exported: a hard link to that export. */
static int make_link(Exporter *x, int dfd, const char *first, const char *tmp, bool *made)
{
	_cleanup_free_ char *dir = xstrdup(first);
	char *slash = strrchr(dir, '/');
	const char *base = slash ? slash + 1 : first;
	_cleanup_close_ int pfd = -1;
	int r;

	if (slash)
		*slash = 0;
	r = open_dir_nofollow(x->dst_root, slash ? dir : "", &pfd);
	if (r < 0)
		return r;
	if (linkat(pfd, base, dfd, tmp, 0) < 0)
		return -errno;
	*made = true;
	return 0;
}

static int make_node(Exporter *x, int sfd, int dfd, const char *name, const char *tmp,
		     const struct stat *st, bool *made)
{
	char target[4096];
	ssize_t n;
	int r;

	switch (st->st_mode & S_IFMT) {
	case S_IFLNK:
		n = readlinkat(sfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return -errno;
		target[n] = 0;
		if (symlinkat(target, dfd, tmp) < 0)
			return -errno;
		*made = true;
		break;
	case S_IFIFO:
	case S_IFCHR:
	case S_IFBLK:
		if (mknodat(dfd, tmp, (st->st_mode & S_IFMT) | 0600, st->st_rdev) < 0)
			return -errno;
		*made = true;
		if ((r = owner_give_at(dfd, tmp)) < 0)
			return r;
		if (fchmodat(dfd, tmp, st->st_mode & 07777, 0) < 0)
			return -errno;
		return set_times(dfd, tmp, -1, st);
	default:
		return make_file(x, sfd, dfd, name, tmp, st, made);
	}
	r = owner_give_at(dfd, tmp);
	return r < 0 ? r : set_times(dfd, tmp, -1, st);
}

/* Makes the entry under a temp name: a link to an earlier export of the same inode, or new.
 * *made says whether tmp exists (and is ours) when this fails. */
static int make_temp(Exporter *x, int sfd, int dfd, const char *name, const struct stat *st,
		     char tmp[64], bool *made)
{
	char key[64];
	json_t *first = NULL;
	int r = -EEXIST;

	snprintf(key, sizeof(key), "%llu:%llu", (unsigned long long)st->st_dev,
		 (unsigned long long)st->st_ino);
	if (S_ISREG(st->st_mode) && st->st_nlink > 1)
		first = json_object_get(x->links, key);
	for (int i = 0; i < TEMP_TRIES && r == -EEXIST; i++) {
		temp_name(x, tmp);
		r = first ? make_link(x, dfd, json_string_value(first), tmp, made) : -EXDEV;
		/* no hard link across a mount in dest, or where the filesystem has none: a copy */
		if (r == -EXDEV || r == -EPERM || r == -EMLINK)
			r = make_node(x, sfd, dfd, name, tmp, st, made);
	}
	if (r == 0 && S_ISREG(st->st_mode) && st->st_nlink > 1 && !first)
		json_object_set_new(x->links, key, json_string(x->path.s));
	return r;
}

/* Exports one non-directory: made under a temp name, then renamed over its path. */
static int entry_export(Exporter *x, int sfd, int dfd, const char *name, const struct stat *st,
			KilnError **err)
{
	struct stat old;
	bool made = false;
	char tmp[64];
	int r;

	if (S_ISSOCK(st->st_mode))
		return 0; /* a socket is not content (the layer tar has none either) */
	if (fstatat(dfd, name, &old, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(old.st_mode))
		return kiln_error(err, EEXIST,
				  "'%s/%s' is a directory, the image has a file there: kiln does "
				  "not delete a directory of yours",
				  x->dest, x->path.s);
	r = make_temp(x, sfd, dfd, name, st, tmp, &made);
	if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
		r = -errno;
	if (r < 0) {
		if (made)
			unlinkat(dfd, tmp, 0);
		return kiln_error_errno(err, -r, "write '%s/%s'", x->dest, x->path.s);
	}
	return 0;
}

/* Opens dest's directory name in dfd, making it with mode where missing or where a
 * non-directory stands: a symlink there is replaced, not followed. */
static int dir_enter(int dfd, const char *name, mode_t mode, const char *shown, int *ret_fd,
		     KilnError **err)
{
	struct stat old;

	if (fstatat(dfd, name, &old, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(old.st_mode) &&
	    unlinkat(dfd, name, 0) < 0)
		return kiln_error_errno(err, errno, "replace '%s'", shown);
	int r = mkdirat_owned(dfd, name, mode);
	if (r < 0)
		return kiln_error_errno(err, -r, "mkdir '%s'", shown);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", shown);
	*ret_fd = fd;
	return 0;
}

/* Descends into the image directory name of the top frame. */
static int dir_push(Exporter *x, Frame *f, const char *name, const struct stat *st, KilnError **err)
{
	_cleanup_close_ int src =
	    openat(f->src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int dst = -1;
	_cleanup_free_ char *shown = xasprintf("%s/%s", x->dest, x->path.s);
	char **names = NULL;
	int r;

	if (src < 0)
		return kiln_error_errno(err, errno, "open image directory '%s'", x->path.s);
	/* 0700 until its contents are written, then the image's mode */
	r = dir_enter(f->dst, name, 0700, shown, &dst, err);
	if (r >= 0)
		r = dir_list_sorted(src, &names, err);
	if (r < 0)
		return r;
	frame_push(x, names, TAKE_FD(src), TAKE_FD(dst), st); /* invalidates f */
	return 0;
}

/* All entries of the top frame are written: its mode and mtime, then back to its parent. */
static int dir_pop(Exporter *x, KilnError **err)
{
	Frame *f = &x->frames[x->depth - 1];
	int r = 0;

	/* dest_dir (or its platform subdir) keeps its own mode: it is the user's */
	if (x->depth > 1) {
		r = frame_reopen(x, f, err);
		if (r >= 0 && (fchmod(f->dst, f->st.st_mode & 07777) < 0 ||
			       set_times(-1, NULL, f->dst, &f->st) < 0))
			r = kiln_error_errno(err, errno, "set mode and times of '%s/%s'", x->dest,
					     path_set(x, f, NULL));
	}
	frame_close(f);
	strv_free(f->names);
	x->depth--;
	return r;
}

static int tree_copy(Exporter *x, KilnError **err)
{
	int r = 0;

	while (x->depth > 0 && r >= 0) {
		Frame *f = &x->frames[x->depth - 1];
		if (!f->names[f->next]) {
			r = dir_pop(x, err);
			continue;
		}
		r = frame_reopen(x, f, err);
		if (r < 0)
			break;
		const char *name = f->names[f->next++];
		struct stat st;
		path_set(x, f, name);
		if (fstatat(f->src, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return kiln_error_errno(err, errno, "stat image file '%s'", x->path.s);
		r = S_ISDIR(st.st_mode) ? dir_push(x, f, name, &st, err)
					: entry_export(x, f->src, f->dst, name, &st, err);
	}
	return r;
}

/* The image's final tree: every layer applied in order, whiteouts included, into scratch. */
static int layers_merge(Store *s, const OciDescriptor *manifest, int scratch, uint64_t max_bytes,
			uint64_t max_entries, KilnError **err)
{
	_cleanup_(oci_image_freep) OciImage *img = NULL;
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	LayerApplyOptions ao = {.mode = LAYER_APPLY_MERGE,
				.whiteouts = true,
				.force_uid = (uid_t)-1,
				.force_gid = (gid_t)-1,
				.max_bytes = max_bytes,
				.max_entries = max_entries,
				.skip_devices = true};
	int r = oci_blob_read(s, manifest, OCI_MANIFEST_MAX, &data, &len, err);

	if (r >= 0)
		r = oci_manifest_parse(data, len, &img, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "manifest %s", manifest->digest);
	for (size_t i = 0; i < img->n_layers; i++) {
		_cleanup_close_ int fd = -1;
		r = store_open_blob(s, img->layers[i].digest, &fd, err);
		if (r >= 0)
			r = layer_apply(fd, scratch, &ao, NULL, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "layer %s", img->layers[i].digest);
	}
	return 0;
}

/* dest_dir (made when missing), or dest_dir/sub entered as an image directory would be. */
static int dest_open(const char *dest_dir, const char *sub, int *ret_fd, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	int r = mkdir_p_owned(dest_dir, 0755, err);

	if (r < 0)
		return r;
	fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", dest_dir);
	if (!sub) {
		*ret_fd = TAKE_FD(fd);
		return 0;
	}
	_cleanup_free_ char *shown = xasprintf("%s/%s", dest_dir, sub);
	return dir_enter(fd, sub, 0755, shown, ret_fd, err);
}

static int scratch_make(Store *s, char **ret_path, int *ret_fd, KilnError **err)
{
	_cleanup_free_ char *work = NULL;
	int r = store_work_acquire(s, &work, err);

	if (r < 0)
		return r;
	_cleanup_free_ char *path = xasprintf("%s/export-XXXXXX", work);
	if (!mkdtemp(path))
		return kiln_error_errno(err, errno, "mkdtemp '%s'", path);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = kiln_error_errno(err, errno, "open '%s'", path);
		rmdir(path);
		return r;
	}
	*ret_path = TAKE_PTR(path);
	*ret_fd = fd;
	return 0;
}

/* Copies the scratch tree sfd into dfd. */
static int tree_export(Exporter *x, int src_fd, int dst_fd, KilnError **err)
{
	_cleanup_close_ int sfd = src_fd, dfd = dst_fd;
	char **names = NULL;
	struct stat st;
	int r;

	x->src_root = fcntl(sfd, F_DUPFD_CLOEXEC, 3);
	x->dst_root = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
	if (x->src_root < 0 || x->dst_root < 0 || fstat(sfd, &st) < 0)
		return kiln_error_errno(err, errno, "export to '%s'", x->dest);
	r = dir_list_sorted(sfd, &names, err);
	if (r < 0)
		return r;
	x->buf = xcalloc(1, COPY_BUF);
	frame_push(x, names, TAKE_FD(sfd), TAKE_FD(dfd), &st);
	return tree_copy(x, err);
}

int export_local(Store *s, const OciDescriptor *manifest, const char *dest_dir, const char *sub,
		 uint64_t max_bytes, uint64_t max_entries, KilnError **err)
{
	_cleanup_(exporter_done)
	    Exporter x = {.src_root = -1, .dst_root = -1, .links = json_object()};
	_cleanup_free_ char *scratch = NULL;
	_cleanup_close_ int sfd = -1, dfd = -1;
	int r;

	x.dest = sub ? xasprintf("%s/%s", dest_dir, sub) : xstrdup(dest_dir);
	r = scratch_make(s, &scratch, &sfd, err);
	if (r < 0)
		return r;
	r = layers_merge(s, manifest, sfd, max_bytes, max_entries, err);
	if (r >= 0)
		r = dest_open(dest_dir, sub, &dfd, err);
	if (r >= 0)
		r = tree_export(&x, TAKE_FD(sfd), TAKE_FD(dfd), err);
	rm_rf_at(AT_FDCWD, scratch, NULL);
	return r < 0 ? r : 0;
}
