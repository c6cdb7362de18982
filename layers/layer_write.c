#include "layer_write.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

#define WRITE_BUF_SIZE (128 * 1024)

typedef struct HardLink {
	dev_t dev;
	ino_t ino;
	char *path;
} HardLink;

typedef struct Writer {
	const LayerWriteOptions *opts;
	struct archive *a;
	Sha256 *tar_hash, *out_hash;
	Compressor *comp;
	LayerSinkFn sink;
	void *userdata;
	int64_t size, usize;
	size_t n_entries;
	size_t n_dropped; /* sockets removed from the source (sync_source) */
	void *links;	  /* tsearch() tree of HardLink, keyed by (dev, ino) */
	KilnError *cb_err;
	char *buf;
} Writer;

static void hard_link_free(void *p)
{
	HardLink *l = p;

	free(l->path);
	free(l);
}

static int hard_link_compare(const void *a, const void *b)
{
	const HardLink *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

static void writer_done(Writer *w)
{
	if (w->a)
		archive_write_free(w->a);
	sha256_free(w->tar_hash);
	sha256_free(w->out_hash);
	compressor_free(w->comp);
	tdestroy(w->links, hard_link_free);
	kiln_error_free(w->cb_err);
	free(w->buf);
}

static int compressed_sink(void *userdata, const void *buf, size_t len, KilnError **err)
{
	Writer *w = userdata;

	sha256_update(w->out_hash, buf, len);
	w->size += (int64_t)len;
	return w->sink(w->userdata, buf, len, err);
}

static la_ssize_t archive_write_cb(struct archive *a, void *client, const void *buf, size_t len)
{
	Writer *w = client;

	sha256_update(w->tar_hash, buf, len);
	w->usize += (int64_t)len;
	if (compressor_write(w->comp, buf, len, &w->cb_err) < 0) {
		archive_set_error(a, EIO, "layer sink failed");
		return -1;
	}
	return (la_ssize_t)len;
}

/* The callback's own error when it has one, else libarchive's message. */
static int archive_fail(Writer *w, const char *path, KilnError **err)
{
	if (w->cb_err && err && !*err) {
		*err = TAKE_PTR(w->cb_err);
		return -(*err)->code;
	}
	if (w->cb_err)
		return -w->cb_err->code;
	int code = archive_errno(w->a) > 0 ? archive_errno(w->a) : EIO;
	const char *msg = archive_error_string(w->a);
	return kiln_error(err, code, "write '%s' to layer: %s", path,
			  msg ? msg : "libarchive error");
}

static int string_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool xattr_wanted(const char *name)
{
	if (strncmp(name, "user.overlay.", 13) == 0)
		return false;
	return strncmp(name, "user.", 5) == 0 || strcmp(name, "security.capability") == 0;
}

/* Lists the xattrs worth keeping, sorted by name. */
static int xattrs_list(int fd, const char *path, char ***ret, KilnError **err)
{
	_cleanup_free_ char *names = NULL;
	_cleanup_strv_free_ char **v = NULL;
	ssize_t n = flistxattr(fd, NULL, 0);

	if (n < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))
		n = 0;
	if (n < 0)
		return kiln_error_errno(err, errno, "list xattrs of '%s'", path);
	names = xcalloc((size_t)n + 1, 1);
	if (n > 0 && (n = flistxattr(fd, names, (size_t)n)) < 0)
		return kiln_error_errno(err, errno, "list xattrs of '%s'", path);
	for (char *p = names; p < names + n; p += strlen(p) + 1)
		if (xattr_wanted(p) && strv_push(&v, p) < 0)
			return kiln_error(err, ENOMEM, "out of memory");
	if (v)
		qsort(v, strv_length(v), sizeof(char *), string_compare);
	*ret = TAKE_PTR(v);
	return 0;
}

static int entry_add_xattrs(struct archive_entry *e, int fd, const char *path, KilnError **err)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = xattrs_list(fd, path, &names, err);

	if (r < 0)
		return r;
	for (size_t i = 0; names && names[i]; i++) {
		ssize_t n = fgetxattr(fd, names[i], NULL, 0);
		if (n < 0)
			return kiln_error_errno(err, errno, "read xattr '%s' of '%s'", names[i],
						path);
		_cleanup_free_ char *val = xcalloc((size_t)n + 1, 1);
		if (n > 0 && (n = fgetxattr(fd, names[i], val, (size_t)n)) < 0)
			return kiln_error_errno(err, errno, "read xattr '%s' of '%s'", names[i],
						path);
		archive_entry_xattr_add_entry(e, names[i], val, (size_t)n);
	}
	return 0;
}

static bool dir_is_opaque(int fd)
{
	char v[2];
	ssize_t n = fgetxattr(fd, "user.overlay.opaque", v, sizeof(v));

	return n == 1 && v[0] == 'y';
}

/* A plain file entry the overlay format uses as a marker (".wh.NAME", ".wh..wh..opq"). */
static int write_marker(Writer *w, const char *path, const struct stat *st, mode_t perm,
			time_t mtime, KilnError **err)
{
	struct archive_entry *e = archive_entry_new();

	if (!e)
		return kiln_error(err, ENOMEM, "out of memory");
	archive_entry_copy_pathname(e, path);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, perm);
	archive_entry_set_uid(e, st->st_uid);
	archive_entry_set_gid(e, st->st_gid);
	archive_entry_set_mtime(e, mtime, 0);
	archive_entry_set_size(e, 0);
	int ar = archive_write_header(w->a, e);
	archive_entry_free(e);
	if (ar < ARCHIVE_WARN)
		return archive_fail(w, path, err);
	w->n_entries++;
	return 0;
}

static int copy_data(Writer *w, int fd, const char *path, int64_t size, KilnError **err)
{
	int64_t left = size;

	while (left > 0) {
		size_t want = left < WRITE_BUF_SIZE ? (size_t)left : WRITE_BUF_SIZE;
		ssize_t n = read(fd, w->buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_errno(err, errno, "read '%s'", path);
		if (n == 0)
			return kiln_error(err, EIO,
					  "'%s' changed while it was written to the layer", path);
		if (archive_write_data(w->a, w->buf, (size_t)n) != n)
			return archive_fail(w, path, err);
		left -= n;
	}
	return 0;
}

/* Records the first path of a multiply linked file; returns the earlier path if there is one. */
static const char *hard_link_lookup(Writer *w, const struct stat *st, const char *path)
{
	HardLink key = {.dev = st->st_dev, .ino = st->st_ino};
	HardLink **found = tfind(&key, &w->links, hard_link_compare);

	if (found)
		return (*found)->path;
	HardLink *l = xcalloc(1, sizeof(*l));
	*l = (HardLink){.dev = st->st_dev, .ino = st->st_ino, .path = xstrdup(path)};
	if (!tsearch(l, &w->links, hard_link_compare))
		hard_link_free(l);
	return NULL;
}

static time_t entry_mtime(const Writer *w, const struct stat *st)
{
	time_t mtime = st->st_mtim.tv_sec;

	if (w->opts->epoch >= 0 && mtime > w->opts->epoch)
		mtime = (time_t)w->opts->epoch;
	return mtime;
}

/* sync_source: the source entry gets the mtime written for it. Best effort: the tar is right
 * either way, only snapshot reuse would differ. */
static void source_set_mtime(const Writer *w, int dfd, const char *name, time_t mtime)
{
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = mtime}};

	if (w->opts->sync_source)
		(void)utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW);
}

/* Fills the type-specific parts of e; *ret_fd gets an open fd for files and dirs. Returns 1
 * when the entry is not written at all (sockets). */
static int entry_fill(Writer *w, struct archive_entry *e, int dfd, const char *name,
		      const char *path, const struct stat *st, int *ret_fd, KilnError **err)
{
	switch (st->st_mode & S_IFMT) {
	case S_IFREG: {
		const char *first = st->st_nlink > 1 ? hard_link_lookup(w, st, path) : NULL;
		archive_entry_set_filetype(e, AE_IFREG);
		if (first) {
			archive_entry_copy_hardlink(e, first);
			archive_entry_set_size(e, 0);
			return 0;
		}
		archive_entry_set_size(e, st->st_size);
		*ret_fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
		if (*ret_fd < 0)
			return kiln_error_errno(err, errno, "open '%s'", path);
		return 0;
	}
	case S_IFDIR:
		archive_entry_set_filetype(e, AE_IFDIR);
		*ret_fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (*ret_fd < 0)
			return kiln_error_errno(err, errno, "open '%s'", path);
		return 0;
	case S_IFLNK: {
		_cleanup_free_ char *target = xcalloc((size_t)st->st_size + 2, 1);
		ssize_t n = readlinkat(dfd, name, target, (size_t)st->st_size + 1);
		if (n < 0)
			return kiln_error_errno(err, errno, "readlink '%s'", path);
		target[n] = 0;
		archive_entry_set_filetype(e, AE_IFLNK);
		archive_entry_copy_symlink(e, target);
		return 0;
	}
	case S_IFCHR:
	case S_IFBLK:
		archive_entry_set_filetype(e, S_ISCHR(st->st_mode) ? AE_IFCHR : AE_IFBLK);
		archive_entry_set_rdevmajor(e, major(st->st_rdev));
		archive_entry_set_rdevminor(e, minor(st->st_rdev));
		return 0;
	case S_IFIFO:
		archive_entry_set_filetype(e, AE_IFIFO);
		return 0;
	default:
		return 1;
	}
}

/* A socket has no tar form (BuildKit and containerd leave it out of the diff too); when the
 * source is kept as the layer's snapshot it goes from there as well, so the next step sees
 * what the layer holds. */
static int drop_socket(Writer *w, int dfd, const char *name, const char *path, KilnError **err)
{
	if (!w->opts->sync_source)
		return 0;
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		return kiln_error_errno(err, errno, "remove socket '%s'", path);
	w->n_dropped++;
	return 0;
}

/* One entry; dirs are left open for their entries (dir_walk() descends into them). */
static int write_entry(Writer *w, int dfd, const char *name, const char *path,
		       const struct stat *st, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	time_t mtime = entry_mtime(w, st);
	int r;

	if (mtime != st->st_mtim.tv_sec || st->st_mtim.tv_nsec != 0)
		source_set_mtime(w, dfd, name, mtime);

	/* A tar has no way to escape the name: ".wh.x" would read back as a whiteout deleting x
	 * (podman #3582, image-spec layer.md), so such a file cannot be stored at all. */
	if (strncmp(name, ".wh.", 4) == 0)
		return kiln_error(err, EINVAL,
				  "'%s': a name starting with '.wh.' cannot be stored in a layer "
				  "(it would read as a whiteout)",
				  path);
	if (w->opts->source == LAYER_SOURCE_OVERLAY_UPPER && S_ISCHR(st->st_mode) &&
	    st->st_rdev == 0) {
		_cleanup_free_ char *wh =
		    xasprintf("%.*s.wh.%s", (int)(strlen(path) - strlen(name)), path, name);
		return write_marker(w, wh, st, 0600, mtime, err);
	}
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return kiln_error(err, ENOMEM, "out of memory");
	archive_entry_copy_pathname(e, path);
	archive_entry_set_perm(e, st->st_mode & 07777);
	archive_entry_set_uid(e, st->st_uid);
	archive_entry_set_gid(e, st->st_gid);
	archive_entry_set_mtime(e, mtime, 0);
	r = entry_fill(w, e, dfd, name, path, st, &fd, err);
	if (r == 0 && fd >= 0)
		r = entry_add_xattrs(e, fd, path, err);
	if (r == 0 && archive_write_header(w->a, e) < ARCHIVE_WARN)
		r = archive_fail(w, path, err);
	bool has_data = archive_entry_size(e) > 0;
	archive_entry_free(e);
	if (r > 0)
		return drop_socket(w, dfd, name, path, err);
	if (r < 0)
		return r;
	w->n_entries++;
	if (S_ISREG(st->st_mode) && has_data)
		return copy_data(w, fd, path, st->st_size, err);
	if (S_ISDIR(st->st_mode) && w->opts->source == LAYER_SOURCE_OVERLAY_UPPER &&
	    dir_is_opaque(fd)) {
		_cleanup_free_ char *opq = xasprintf("%s/.wh..wh..opq", path);
		return write_marker(w, opq, st, st->st_mode & 0777, mtime, err);
	}
	return 0;
}

/* Depth first (dir_walk()): each entry, then (for a dir) everything below it, siblings in byte
 * order. */
static int write_visit(void *userdata, DirWalkEvent ev, int dfd, const char *name, const char *path,
		       const struct stat *st, KilnError **err)
{
	Writer *w = userdata;

	if (ev == DIR_WALK_ENTRY)
		return write_entry(w, dfd, name, path, st, err);
	/* Removing a socket touched its dir: give the dir back the mtime its entry has. */
	if (w->n_dropped)
		source_set_mtime(w, dfd, name, entry_mtime(w, st));
	return 0;
}

static int writer_init(Writer *w, KilnError **err)
{
	int r;

	if ((r = sha256_new(&w->tar_hash, err)) < 0 || (r = sha256_new(&w->out_hash, err)) < 0)
		return r;
	r = compressor_new(w->opts->compression, w->opts->level, compressed_sink, w, &w->comp, err);
	if (r < 0)
		return r;
	w->buf = malloc(WRITE_BUF_SIZE);
	w->a = archive_write_new();
	if (!w->buf || !w->a)
		return kiln_error(err, ENOMEM, "out of memory");
	if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK)
		return kiln_error(err, EIO, "tar writer: %s", archive_error_string(w->a));
	/* Only SCHILY.xattr: what Go's archive/tar (docker, containerd) reads; not both. */
	(void)archive_write_set_format_option(w->a, "pax", "xattrheader", "SCHILY");
	/* End right after the two zero blocks, like Go's archive/tar and umoci. */
	if (archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
	    archive_write_open(w->a, w, NULL, archive_write_cb, NULL) != ARCHIVE_OK)
		return archive_fail(w, "(start)", err);
	return 0;
}

int layer_write(int dirfd, const LayerWriteOptions *opts, LayerSinkFn sink, void *userdata,
		LayerDigests *ret, KilnError **err)
{
	_cleanup_(writer_done) Writer w = {.opts = opts, .sink = sink, .userdata = userdata};
	int r = writer_init(&w, err);

	if (r < 0)
		return r;
	r = dir_walk(dirfd, "", 0, write_visit, &w, err);
	if (r < 0)
		return r;
	if (archive_write_close(w.a) != ARCHIVE_OK)
		return archive_fail(&w, "(end)", err);
	r = compressor_finish(w.comp, err);
	if (r < 0)
		return r;
	LayerDigests d = {.size = w.size, .uncompressed_size = w.usize, .n_entries = w.n_entries};
	sha256_final(w.tar_hash, d.diff_id);
	sha256_final(w.out_hash, d.digest);
	if (ret)
		*ret = d;
	return 0;
}
