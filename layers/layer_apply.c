#include "layer_apply.h"

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
#include "common/rootfs.h"
#include "layers/compress.h"

#define APPLY_BUF_SIZE (128 * 1024)
#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_META_PREFIX ".wh..wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"

typedef struct DirFixup {
	char *path;
	mode_t mode;
	struct timespec times[2];
} DirFixup;

typedef struct Applier {
	const LayerApplyOptions *o;
	int dest;
	struct archive *a;
	Decompressor *dec;
	Sha256 *hash;
	uint64_t bytes;
	char *buf;
	KilnError *cb_err;
	void *created; /* tsearch() tree of the paths this layer made (MERGE opaque dirs, hard
			* link targets) */
	DirFixup *fixups;
	size_t n_fixups;
	void *skipped; /* tsearch() tree of the device entries left out (skip_devices) */
	LayerApplyResult result;
} Applier;

static void applier_done(Applier *ap)
{
	if (ap->a)
		archive_read_free(ap->a);
	decompressor_free(ap->dec);
	sha256_free(ap->hash);
	free(ap->buf);
	kiln_error_free(ap->cb_err);
	tdestroy(ap->created, free);
	tdestroy(ap->skipped, free);
	for (size_t i = 0; i < ap->n_fixups; i++)
		free(ap->fixups[i].path);
	free(ap->fixups);
}

static int account_bytes(Applier *ap, const void *buf, size_t n, KilnError **err)
{
	sha256_update(ap->hash, buf, n);
	ap->bytes += n;
	if (ap->o->max_bytes && ap->bytes > ap->o->max_bytes)
		return kiln_error(err, EFBIG, "layer is larger than %llu bytes uncompressed",
				  (unsigned long long)ap->o->max_bytes);
	return 0;
}

/* Decompresses and hashes in the same pass libarchive parses, so the diff_id costs no re-read. */
static la_ssize_t archive_read_cb(struct archive *a, void *client, const void **ret_buf)
{
	Applier *ap = client;
	ssize_t n = decompressor_read(ap->dec, ap->buf, APPLY_BUF_SIZE, &ap->cb_err);

	if (n >= 0 && account_bytes(ap, ap->buf, (size_t)n, &ap->cb_err) < 0)
		n = -1;
	if (n < 0) {
		archive_set_error(a, EIO, "%s", ap->cb_err ? ap->cb_err->message : "read failed");
		return -1;
	}
	*ret_buf = ap->buf;
	return n;
}

/* The read callback's own error when there is one, else libarchive's message. */
static int archive_fail(Applier *ap, const char *what, KilnError **err)
{
	if (ap->cb_err) {
		int code = ap->cb_err->code;
		if (err && !*err)
			*err = TAKE_PTR(ap->cb_err);
		return -code;
	}
	int code = archive_errno(ap->a) > 0 ? archive_errno(ap->a) : EBADMSG;
	const char *msg = archive_error_string(ap->a);
	return kiln_error(err, code, "%s: %s", what, msg ? msg : "corrupt tar data");
}

static void created_add(Applier *ap, const char *path)
{
	/* Parents too: a dir this layer made implicitly holds nothing from earlier layers. */
	_cleanup_free_ char *copy = xstrdup(path);
	for (char *s = copy; s;) {
		s = strchr(s, '/');
		if (s)
			*s = 0;
		char *p = xstrdup(copy);
		char **found =
		    tsearch(p, &ap->created, (int (*)(const void *, const void *))strcmp);
		if (!found || *found != p)
			free(p);
		if (s)
			*s++ = '/';
	}
}

static bool created_has(Applier *ap, const char *path)
{
	return tfind(path, &ap->created, (int (*)(const void *, const void *))strcmp) != NULL;
}

/* A device entry left out (skip_devices); a hard link to it is left out with it. */
static void skipped_add(Applier *ap, const char *path)
{
	char *p = xstrdup(path);
	char **found = tsearch(p, &ap->skipped, (int (*)(const void *, const void *))strcmp);

	if (!found || *found != p)
		free(p);
	if (ap->result.devices_skipped++ == 0)
		snprintf(ap->result.first_device, sizeof(ap->result.first_device), "%s", path);
}

static bool skipped_has(Applier *ap, const char *path)
{
	return tfind(path, &ap->skipped, (int (*)(const void *, const void *))strcmp) != NULL;
}

static int clear_visit(void *userdata, DirWalkEvent ev, int dfd, const char *name, const char *path,
		       const struct stat *st, KilnError **err)
{
	Applier *ap = userdata;

	if (ev == DIR_WALK_LEAVE)
		return 0;
	if (!created_has(ap, path)) {
		int r = rm_rf_at(dfd, name, err);
		return r < 0 ? r : 1;
	}
	return S_ISDIR(st->st_mode) ? 0 : 1;
}

/* MERGE opaque dir: removes what earlier layers left below path, keeping this layer's entries. */
static int clear_earlier(Applier *ap, int dfd, const char *path, KilnError **err)
{
	return dir_walk(dfd, strcmp(path, ".") == 0 ? "" : path, 0, clear_visit, ap, err);
}

/* One component of parent_open(): name in *cur becomes a dir (made 0755 when missing; a non-dir
 * an earlier layer left there is replaced) and *cur moves into it. prefix: the path so far. */
static int merge_step(int *cur, const char *prefix, const char *name, KilnError **err)
{
	struct stat st;
	int r, fd;

	if (fstatat(*cur, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
	    (r = rm_rf_at(*cur, name, err)) < 0)
		return r;
	bool made = mkdirat(*cur, name, 0755) == 0;
	if (!made && errno != EEXIST)
		return kiln_error_errno(err, errno, "mkdir '%s'", prefix);
	fd = openat(*cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", prefix);
	if (made && fchmod(fd, 0755) < 0) {
		close(fd);
		return kiln_error_errno(err, errno, "chmod '%s'", prefix);
	}
	closep(cur);
	*cur = fd;
	return 0;
}

/* The dir an entry (or whiteout) goes into, made when missing. MERGE with whiteouts flattens
 * image layers the way their overlay stack reads, each layer its own dir (kiln's snapshots,
 * BuildKit's overlayfs snapshotter, Docker's overlay2): every parent of an entry is a directory
 * of the entry's layer, so what an earlier layer has there that is not a directory, a symlink
 * to one included, is replaced, not followed. A symlink this layer made is followed inside the
 * root, as in OVERLAY mode; so are all symlinks for ADD (no whiteouts), as Docker does. */
static int parent_open(Applier *ap, const char *dir, int *ret_fd, KilnError **err)
{
	_cleanup_free_ char *prefix = xstrdup(dir);
	_cleanup_close_ int cur = -1;
	int r;

	if (ap->o->mode != LAYER_APPLY_MERGE || !ap->o->whiteouts || strcmp(dir, ".") == 0)
		return rootfs_mkdir_p(ap->dest, dir, 0755, (uid_t)-1, (gid_t)-1, ret_fd, err);
	/* The usual case in one call: every parent already a real directory. */
	cur = rootfs_open_no_symlinks(ap->dest, dir, O_RDONLY | O_DIRECTORY);
	if (cur >= 0 || cur == -ENAMETOOLONG) {
		if (cur < 0)
			return kiln_error_errno(err, -cur, "open '%s'", dir);
		*ret_fd = TAKE_FD(cur);
		return 0;
	}
	cur = openat(ap->dest, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return kiln_error_errno(err, errno, "open the image root");
	for (char *p = prefix, *slash = prefix; slash; p = slash + 1) {
		struct stat st;
		slash = strchr(p, '/');
		if (slash)
			*slash = 0;
		if (fstatat(cur, p, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) &&
		    created_has(ap, prefix))
			return rootfs_mkdir_p(ap->dest, dir, 0755, (uid_t)-1, (gid_t)-1, ret_fd,
					      err);
		if ((r = merge_step(&cur, prefix, p, err)) < 0)
			return r;
		if (slash)
			*slash = '/';
	}
	*ret_fd = TAKE_FD(cur);
	return 0;
}

static int apply_opaque(Applier *ap, const char *dir, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	int r = parent_open(ap, dir, &fd, err);

	if (r < 0)
		return r;
	if (ap->o->mode == LAYER_APPLY_MERGE)
		return clear_earlier(ap, fd, dir, err);
	if (fsetxattr(fd, "user.overlay.opaque", "y", 1, 0) < 0)
		return kiln_error_errno(err, errno, "mark '%s' opaque", dir);
	return 0;
}

/* A bare ".wh." would name the dir itself (image-spec: implementations must refuse it). */
static int whiteout_check(const char *base, const char *raw, KilnError **err)
{
	const char *name = base + strlen(WHITEOUT_PREFIX);

	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return kiln_error(err, EINVAL, "layer entry '%s' is an invalid whiteout", raw);
	return 0;
}

static int apply_whiteout(Applier *ap, const char *dir, const char *base, const char *raw,
			  KilnError **err)
{
	const char *name = base + strlen(WHITEOUT_PREFIX);
	_cleanup_close_ int fd = -1;
	int r;

	if (strcmp(base, WHITEOUT_OPAQUE) == 0)
		return apply_opaque(ap, dir, err);
	/* Other ".wh..wh." names are aufs bookkeeping (hard link dirs), not content. */
	if (strncmp(base, WHITEOUT_META_PREFIX, strlen(WHITEOUT_META_PREFIX)) == 0)
		return 0;
	if ((r = whiteout_check(base, raw, err)) < 0 || (r = parent_open(ap, dir, &fd, err)) < 0 ||
	    (r = rm_rf_at(fd, name, err)) < 0)
		return r;
	if (ap->o->mode == LAYER_APPLY_OVERLAY &&
	    mknodat(fd, name, S_IFCHR | 0000, makedev(0, 0)) < 0)
		return kiln_error_errno(err, errno, "create whiteout for '%s'", raw);
	return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_file_data(Applier *ap, struct archive_entry *e, int fd, const char *path,
			   KilnError **err)
{
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int ar = archive_read_data_block(ap->a, &buf, &len, &off);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN)
			return archive_fail(ap, "read layer", err);
		int r = pwrite_all(fd, buf, len, (off_t)off);
		if (r < 0)
			return kiln_error_errno(err, -r, "write '%s'", path);
	}
	/* A sparse file may end in a hole. */
	if (archive_entry_size_is_set(e) && ftruncate(fd, archive_entry_size(e)) < 0)
		return kiln_error_errno(err, errno, "truncate '%s'", path);
	return 0;
}

static bool xattr_skipped(const char *name)
{
	return strncmp(name, "trusted.", 8) == 0 || strncmp(name, "user.overlay.", 13) == 0;
}

static int set_xattrs(struct archive_entry *e, int fd, const char *path, KilnError **err)
{
	const char *name;
	const void *value;
	size_t size;

	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
		if (!name || xattr_skipped(name))
			continue;
		if (fsetxattr(fd, name, value, size, 0) == 0)
			continue;
		/* security.selinux and friends need privileges a rootless build lacks */
		if (strncmp(name, "security.", 9) == 0 &&
		    strcmp(name, "security.capability") != 0 &&
		    (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP))
			continue;
		return kiln_error_errno(err, errno, "set xattr '%s' on '%s'", name, path);
	}
	return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
	ts[1] = archive_entry_mtime_is_set(e)
		    ? (struct timespec){archive_entry_mtime(e), archive_entry_mtime_nsec(e)}
		    : (struct timespec){.tv_nsec = UTIME_OMIT};
	ts[0] = archive_entry_atime_is_set(e)
		    ? (struct timespec){archive_entry_atime(e), archive_entry_atime_nsec(e)}
		    : ts[1];
}

static int entry_chown(Applier *ap, struct archive_entry *e, int pfd, const char *base,
		       const char *path, KilnError **err)
{
	uid_t uid = ap->o->force_uid != (uid_t)-1 ? ap->o->force_uid
		    : ap->o->keep_owner		  ? (uid_t)archive_entry_uid(e)
						  : (uid_t)-1;
	gid_t gid = ap->o->force_gid != (gid_t)-1 ? ap->o->force_gid
		    : ap->o->keep_owner		  ? (gid_t)archive_entry_gid(e)
						  : (gid_t)-1;

	if (uid == (uid_t)-1 && gid == (gid_t)-1)
		return 0;
	if (fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	if (errno == EINVAL)
		return kiln_error(err, EINVAL, "chown '%s' to %d:%d: id not mapped", path, (int)uid,
				  (int)gid);
	return kiln_error_errno(err, errno, "chown '%s' to %d:%d", path, (int)uid, (int)gid);
}

/* Returns 1 when the target is a device left out (and so is the link). */
static int apply_hardlink(Applier *ap, const char *target_raw, int pfd, const char *base,
			  const char *path, KilnError **err)
{
	_cleanup_free_ char *target = NULL, *tname = NULL;
	_cleanup_close_ int tdfd = -1;
	struct stat st;
	int r = path_clean_relative(target_raw, &target);

	if (r < 0 || strcmp(target, ".") == 0)
		return kiln_error(err, EINVAL,
				  "layer entry '%s' links outside the image root ('%s')", path,
				  target_raw);
	if (skipped_has(ap, target)) {
		skipped_add(ap, path);
		return 1;
	}
	/* A link to a lower layer's file would make this layer depend on what it is stacked on
	 * (and in MERGE mode reach files the layer never shipped): only earlier entries count. */
	if (!created_has(ap, target))
		return kiln_error(
		    err, ENOENT,
		    "layer entry '%s' is a hard link to '%s', which is not an earlier "
		    "entry of the layer",
		    path, target_raw);
	r = rootfs_open_parent(ap->dest, target, &tdfd, &tname, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "hard link '%s' to '%s'", path, target_raw);
	if (fstatat(tdfd, tname, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
		return kiln_error(err, ENOENT, "hard link '%s' to '%s': no such file in the layer",
				  path, target_raw);
	if (linkat(tdfd, tname, pfd, base, 0) < 0)
		return kiln_error_errno(err, errno, "hard link '%s' to '%s'", path, target_raw);
	return 0;
}

/* Creates the entry's inode; *ret_fd gets an fd for files and dirs (for xattrs and data).
 * Returns 1 for a device left out (skip_devices). */
static int create_node(Applier *ap, struct archive_entry *e, int pfd, const char *base,
		       const char *path, int *ret_fd, KilnError **err)
{
	mode_t type = archive_entry_filetype(e);
	int fd;

	switch (type) {
	case AE_IFREG:
		fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return kiln_error_errno(err, errno, "create '%s'", path);
		*ret_fd = fd;
		return write_file_data(ap, e, fd, path, err);
	case AE_IFDIR:
		if (mkdirat(pfd, base, 0700) < 0 && errno != EEXIST)
			return kiln_error_errno(err, errno, "mkdir '%s'", path);
		fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return kiln_error_errno(err, errno, "open '%s'", path);
		*ret_fd = fd;
		return 0;
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(e);
		if (!target)
			target = archive_entry_symlink_utf8(e);
		if (!target || symlinkat(target, pfd, base) < 0)
			return kiln_error_errno(err, target ? errno : EINVAL, "symlink '%s'", path);
		return 0;
	}
	case AE_IFIFO:
		if (mknodat(pfd, base, S_IFIFO | 0600, 0) < 0)
			return kiln_error_errno(err, errno, "mkfifo '%s'", path);
		return 0;
	case AE_IFCHR:
	case AE_IFBLK:
		if (mknodat(pfd, base, type | 0600,
			    makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e))) == 0)
			return 0;
		if (errno == EPERM && ap->o->skip_devices) {
			skipped_add(ap, path);
			return 1;
		}
		if (errno == EPERM)
			return kiln_error(err, EPERM,
					  "layer contains device '%s': device nodes cannot be "
					  "created in a rootless build",
					  path);
		return kiln_error_errno(err, errno, "mknod '%s'", path);
	default:
		return kiln_error(err, EINVAL, "layer entry '%s' has an unsupported type 0%o", path,
				  (unsigned)type);
	}
}

/* Owner, mode, xattrs, then times: chown clears setuid bits and file capabilities. */
static int set_metadata(Applier *ap, struct archive_entry *e, int pfd, const char *base, int fd,
			const char *path, KilnError **err)
{
	mode_t type = archive_entry_filetype(e);
	mode_t perm = archive_entry_perm(e) & 07777;
	struct timespec ts[2];
	int r = entry_chown(ap, e, pfd, base, path, err);

	if (r < 0)
		return r;
	entry_times(e, ts);
	if (type == AE_IFDIR) {
		ap->fixups = xrealloc(ap->fixups, (ap->n_fixups + 1) * sizeof(DirFixup));
		ap->fixups[ap->n_fixups++] =
		    (DirFixup){.path = xstrdup(path), .mode = perm, .times = {ts[0], ts[1]}};
	} else if (type != AE_IFLNK) {
		if ((fd >= 0 ? fchmod(fd, perm) : fchmodat(pfd, base, perm, 0)) < 0)
			return kiln_error_errno(err, errno, "chmod '%s'", path);
	}
	if (fd >= 0 && (r = set_xattrs(e, fd, path, err)) < 0)
		return r;
	if (type != AE_IFDIR && utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_error_errno(err, errno, "set times of '%s'", path);
	return 0;
}

static bool entry_type_supported(mode_t type)
{
	switch (type) {
	case AE_IFREG:
	case AE_IFDIR:
	case AE_IFLNK:
	case AE_IFIFO:
	case AE_IFCHR:
	case AE_IFBLK:
		return true;
	default:
		return false;
	}
}

/* dest < 0: the checks apply_entry makes that do not need a tree (names, whiteouts, hard link
 * targets, types); the data is skipped, which still streams it through the hash. */
static int scan_entry(Applier *ap, struct archive_entry *e, const char *path, const char *raw,
		      KilnError **err)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	const char *link = archive_entry_hardlink(e);

	if (ap->o->whiteouts && strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0) {
		if (strncmp(base, WHITEOUT_META_PREFIX, strlen(WHITEOUT_META_PREFIX)) == 0)
			return 0;
		return whiteout_check(base, raw, err);
	}
	if (link) {
		_cleanup_free_ char *target = NULL;
		if (path_clean_relative(link, &target) < 0 || strcmp(target, ".") == 0)
			return kiln_error(err, EINVAL,
					  "layer entry '%s' links outside the image root ('%s')",
					  path, link);
		if (!created_has(ap, target))
			return kiln_error(
			    err, ENOENT,
			    "layer entry '%s' is a hard link to '%s', which is not an "
			    "earlier entry of the layer",
			    path, link);
	} else if (!entry_type_supported(archive_entry_filetype(e))) {
		return kiln_error(err, EINVAL, "layer entry '%s' has an unsupported type 0%o", path,
				  (unsigned)archive_entry_filetype(e));
	}
	created_add(ap, path);
	return 0;
}

static int apply_entry(Applier *ap, struct archive_entry *e, KilnError **err)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int pfd = -1, fd = -1;
	const char *raw = archive_entry_pathname(e);
	struct stat st;
	int r;

	if (!raw)
		raw = archive_entry_pathname_utf8(e);
	if (!raw)
		return kiln_error(err, EINVAL, "layer entry without a name");
	if (path_clean_relative(raw, &path) < 0)
		return kiln_error(err, EINVAL, "layer entry '%s' escapes the image root", raw);
	if (strcmp(path, ".") == 0) {
		if (archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e))
			return 0;
		return kiln_error(err, EINVAL, "layer entry '%s' would replace the image root",
				  raw);
	}
	if (ap->dest < 0)
		return scan_entry(ap, e, path, raw, err);
	char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (slash)
		*slash = 0;
	const char *dir = slash ? path : ".";
	if (ap->o->whiteouts && strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0)
		return apply_whiteout(ap, dir, base, raw, err);

	r = parent_open(ap, dir, &pfd, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "layer entry '%s'", raw);
	if (slash)
		*slash = '/';
	bool is_dir = archive_entry_filetype(e) == AE_IFDIR;
	const char *link = archive_entry_hardlink(e);
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    !(is_dir && S_ISDIR(st.st_mode) && !link) && (r = rm_rf_at(pfd, base, err)) < 0)
		return r;
	if (link) {
		r = apply_hardlink(ap, link, pfd, base, path, err);
		created_add(ap, path);
		return r < 0 ? r : 0;
	}
	created_add(ap, path);
	r = create_node(ap, e, pfd, base, path, &fd, err);
	if (r != 0)
		return r < 0 ? r : 0; /* 1: a device left out */
	return set_metadata(ap, e, pfd, base, fd, path, err);
}

static int apply_dir_fixups(Applier *ap, KilnError **err)
{
	/* In archive order, so a dir listed twice ends with its last entry's metadata. */
	for (size_t i = 0; i < ap->n_fixups; i++) {
		DirFixup *f = &ap->fixups[i];
		_cleanup_close_ int fd =
		    rootfs_open(ap->dest, f->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
		if (fd < 0)
			continue; /* replaced by a later entry */
		if (fchmod(fd, f->mode) < 0)
			return kiln_error_errno(err, errno, "chmod '%s'", f->path);
		if (futimens(fd, f->times) < 0)
			return kiln_error_errno(err, errno, "set times of '%s'", f->path);
	}
	return 0;
}

static int applier_open(Applier *ap, int src_fd, KilnError **err)
{
	int r = decompressor_new(src_fd, &ap->dec, err);

	if (r < 0 || (r = sha256_new(&ap->hash, err)) < 0)
		return r;
	ap->buf = malloc(APPLY_BUF_SIZE);
	ap->a = archive_read_new();
	if (!ap->buf || !ap->a)
		return kiln_error(err, ENOMEM, "out of memory");
	archive_read_support_format_tar(ap->a);
	archive_read_support_format_empty(ap->a);
	if (decompressor_is_foreign(ap->dec)) {
		archive_read_support_filter_bzip2(ap->a);
		archive_read_support_filter_xz(ap->a);
	}
	if (archive_read_open(ap->a, ap, NULL, archive_read_cb, NULL) != ARCHIVE_OK)
		return archive_fail(ap, "read layer", err);
	return 0;
}

/* Hashes what follows the end-of-archive marker (record padding), so the diff_id covers every
 * byte of the stream. */
static int drain(Applier *ap, KilnError **err)
{
	for (;;) {
		ssize_t n = decompressor_read(ap->dec, ap->buf, APPLY_BUF_SIZE, err);
		if (n <= 0)
			return (int)n;
		int r = account_bytes(ap, ap->buf, (size_t)n, err);
		if (r < 0)
			return r;
	}
}

int layer_apply(int src_fd, int dest_dirfd, const LayerApplyOptions *opts,
		char ret_diff_id[DIGEST_STRING_MAX], KilnError **err)
{
	_cleanup_(applier_done) Applier ap = {.o = opts, .dest = dest_dirfd};
	char diff_id[DIGEST_STRING_MAX] = "";
	uint64_t n_entries = 0;
	int r;

	if (opts->result)
		*opts->result = (LayerApplyResult){0};
	r = applier_open(&ap, src_fd, err);
	if (r < 0)
		return r;
	for (;;) {
		struct archive_entry *e;
		int ar = archive_read_next_header(ap.a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN)
			return archive_fail(&ap, "read layer", err);
		if (opts->max_entries && ++n_entries > opts->max_entries)
			return kiln_error(err, EFBIG, "layer has more than %llu entries",
					  (unsigned long long)opts->max_entries);
		r = apply_entry(&ap, e, err);
		if (r < 0)
			return r;
	}
	if ((r = drain(&ap, err)) < 0 || (dest_dirfd >= 0 && (r = apply_dir_fixups(&ap, err)) < 0))
		return r;
	if (!decompressor_is_foreign(ap.dec))
		sha256_final(ap.hash, diff_id);
	if (opts->expected_diff_id && strcmp(opts->expected_diff_id, diff_id) != 0)
		return kiln_error(err, EBADMSG, "layer diff_id mismatch: expected %s, got %s",
				  opts->expected_diff_id,
				  *diff_id ? diff_id : "none (bzip2/xz input)");
	if (ret_diff_id)
		memcpy(ret_diff_id, diff_id, DIGEST_STRING_MAX);
	if (opts->result)
		*opts->result = ap.result;
	return 0;
}
