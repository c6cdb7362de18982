#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "common/rootfs.h"
#include "layers/compress.h"
#include "layers/export_local.h"
#include "layers/layer_apply.h"
#include "layers/layer_write.h"
#include "layers/oci.h"
#include "layers/store.h"
#include "deeptree.h"
#include "tap.h"

static void put(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (write_all(fd, data, strlen(data)) < 0)
			printf("# write %s failed\n", path);
		close(fd);
	}
}

static char *slurp(const char *path)
{
	char *data = NULL;

	if (read_file_at(AT_FDCWD, path, 1 << 24, &data, NULL, NULL) < 0)
		return NULL;
	return data;
}

static int sink_fd(void *userdata, const void *buf, size_t len, KilnError **err)
{
	int r = write_all(*(int *)userdata, buf, len);
	return r < 0 ? kiln_error_errno(err, -r, "write") : 0;
}

static int write_layer(const char *dir, LayerSource source, Compression c, int64_t epoch,
		       const char *out, LayerDigests *d)
{
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	_cleanup_error_ KilnError *err = NULL;
	LayerWriteOptions o = {.source = source, .compression = c, .epoch = epoch};

	int r = layer_write(dfd, &o, sink_fd, &ofd, d, &err);
	if (r < 0)
		printf("# layer_write: %s\n", err ? err->message : "?");
	return r;
}

static LayerApplyOptions apply_opts(LayerApplyMode mode)
{
	return (LayerApplyOptions){.mode = mode,
				   .whiteouts = true,
				   .keep_owner = true,
				   .force_uid = (uid_t)-1,
				   .force_gid = (gid_t)-1};
}

/* Applies the layer file into dest (made if missing); *ret_err keeps the error message. */
static int apply_file(const char *layer, const char *dest, const LayerApplyOptions *o,
		      char diff_id[DIGEST_STRING_MAX], char **ret_msg)
{
	_cleanup_error_ KilnError *err = NULL;

	mkdir(dest, 0755);
	_cleanup_close_ int dfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int sfd = open(layer, O_RDONLY | O_CLOEXEC);
	int r = layer_apply(sfd, dfd, o, diff_id, &err);
	if (r < 0)
		printf("# layer_apply: %s\n", err && err->message ? err->message : "?");
	if (ret_msg)
		*ret_msg = err && err->message ? xstrdup(err->message) : NULL;
	return r;
}

/* Tar entries for hostile inputs, written with libarchive as an attacker would. */
typedef struct TarEnt {
	const char *name;
	mode_t type;
	const char *data; /* file content, symlink target or hard link target */
} TarEnt;

static void make_tar(const char *path, const TarEnt *ents, size_t n, bool gzip)
{
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (gzip)
		archive_write_add_filter_gzip(a);
	archive_write_open_filename(a, path);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, ents[i].name);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_mtime(e, 100, 0);
		if (ents[i].type == 0) {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, ents[i].data);
		} else {
			archive_entry_set_filetype(e, ents[i].type);
		}
		if (ents[i].type == AE_IFLNK)
			archive_entry_set_symlink(e, ents[i].data);
		if (ents[i].type == AE_IFCHR || ents[i].type == AE_IFBLK)
			archive_entry_set_rdev(e, makedev(1, 3));
		size_t len = ents[i].type == AE_IFREG && ents[i].data ? strlen(ents[i].data) : 0;
		archive_entry_set_size(e, (la_int64_t)len);
		archive_write_header(a, e);
		if (len)
			archive_write_data(a, ents[i].data, len);
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
}

static void set_mtimes(const char *path, time_t t)
{
	struct timespec ts[2] = {{.tv_sec = t}, {.tv_sec = t}};
	utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
}

/* Files, dirs, symlinks (absolute too), a hard link, setuid and sticky modes, a fifo, user.x. */
static void make_rich_tree(const char *root, time_t mtime)
{
	char p[256];
	static const char *const paths[] = {"",	    "/d",  "/d/f",  "/big", "/abs",
					    "/rel", "/hl", "/pipe", "/e"};

	mkdir(root, 0755);
	snprintf(p, sizeof(p), "%s/d", root);
	mkdir(p, 0750);
	snprintf(p, sizeof(p), "%s/d/f", root);
	put(p, "hello");
	chown(p, 1000, 1001);
	chmod(p, 04755);
	setxattr(p, "user.x", "1", 1, 0);
	_cleanup_free_ char *big = xcalloc(300001, 1);
	for (size_t i = 0; i < 300000; i++)
		big[i] = (char)('a' + (i * 7919 % 26));
	snprintf(p, sizeof(p), "%s/big", root);
	put(p, big);
	snprintf(p, sizeof(p), "%s/abs", root);
	symlink("/etc/passwd", p);
	snprintf(p, sizeof(p), "%s/rel", root);
	symlink("d/f", p);
	char f[256];
	snprintf(f, sizeof(f), "%s/d/f", root);
	snprintf(p, sizeof(p), "%s/hl", root);
	link(f, p);
	snprintf(p, sizeof(p), "%s/pipe", root);
	mkfifo(p, 0640);
	snprintf(p, sizeof(p), "%s/e", root);
	mkdir(p, 01777);
	chmod(p, 01777);
	for (size_t i = ELEMENTSOF(paths); i-- > 0;) {
		snprintf(p, sizeof(p), "%s%s", root, paths[i]);
		set_mtimes(p, mtime);
	}
}

static void check_rich_tree(const char *root, time_t want_mtime)
{
	char p[256], q[256], buf[256];
	struct stat st, st2;

	snprintf(p, sizeof(p), "%s/d/f", root);
	_cleanup_free_ char *data = slurp(p);
	CHECK_EQ_STR(data, "hello");
	CHECK(lstat(p, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 07777, 04755);
	CHECK_EQ_INT(st.st_uid, 1000);
	CHECK_EQ_INT(st.st_gid, 1001);
	CHECK_EQ_INT(st.st_mtime, want_mtime);
	CHECK_EQ_INT(getxattr(p, "user.x", buf, sizeof(buf)), 1);
	CHECK(buf[0] == '1');
	snprintf(q, sizeof(q), "%s/hl", root);
	CHECK(lstat(q, &st2) == 0 && st2.st_ino == st.st_ino);
	snprintf(p, sizeof(p), "%s/d", root);
	CHECK(lstat(p, &st) == 0 && S_ISDIR(st.st_mode));
	CHECK_EQ_INT(st.st_mode & 07777, 0750);
	CHECK_EQ_INT(st.st_mtime, want_mtime);
	snprintf(p, sizeof(p), "%s/e", root);
	CHECK(lstat(p, &st) == 0 && (st.st_mode & 07777) == 01777);
	snprintf(p, sizeof(p), "%s/abs", root);
	ssize_t n = readlink(p, buf, sizeof(buf) - 1);
	CHECK(n == 11 && memcmp(buf, "/etc/passwd", 11) == 0);
	CHECK(lstat(p, &st) == 0 && st.st_mtime == want_mtime);
	snprintf(p, sizeof(p), "%s/rel", root);
	n = readlink(p, buf, sizeof(buf) - 1);
	CHECK(n == 3 && memcmp(buf, "d/f", 3) == 0);
	snprintf(p, sizeof(p), "%s/pipe", root);
	CHECK(lstat(p, &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0640);
	snprintf(p, sizeof(p), "%s/big", root);
	CHECK(lstat(p, &st) == 0 && st.st_size == 300000);
}

TEST(round_trip)
{
	LayerDigests d;
	char diff_id[DIGEST_STRING_MAX] = "";
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);

	make_rich_tree("src", 5000);
	CHECK_EQ_INT(write_layer("src", LAYER_SOURCE_PLAIN, COMPRESSION_GZIP, 1000, "l.tgz", &d),
		     0);
	/* d, d/f, big, abs, rel, hl, pipe, e */
	CHECK_EQ_INT(d.n_entries, 8);
	CHECK(d.size > 0 && d.uncompressed_size > 300000 && d.uncompressed_size % 512 == 0);
	CHECK(strcmp(d.diff_id, d.digest) != 0);
	CHECK_EQ_INT(apply_file("l.tgz", "dst", &o, diff_id, NULL), 0);
	CHECK_EQ_STR(diff_id, d.diff_id);
	check_rich_tree("dst", 1000);
	/* an epoch later than every mtime leaves them alone */
	CHECK_EQ_INT(write_layer("src", LAYER_SOURCE_PLAIN, COMPRESSION_NONE, -1, "l2.tar", &d), 0);
	CHECK_EQ_INT(apply_file("l2.tar", "dst2", &o, diff_id, NULL), 0);
	check_rich_tree("dst2", 5000);
}

TEST(compressions)
{
	static const Compression cs[] = {COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_ZSTD};
	LayerDigests d[3];
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);

	make_rich_tree("src", 5000);
	for (size_t i = 0; i < ELEMENTSOF(cs); i++) {
		char out[32], dst[32], diff_id[DIGEST_STRING_MAX] = "", head[8] = {0};
		snprintf(out, sizeof(out), "l%zu", i);
		snprintf(dst, sizeof(dst), "dst%zu", i);
		CHECK_EQ_INT(write_layer("src", LAYER_SOURCE_PLAIN, cs[i], 1000, out, &d[i]), 0);
		int fd = open(out, O_RDONLY | O_CLOEXEC);
		CHECK(read(fd, head, sizeof(head)) == sizeof(head));
		close(fd);
		CHECK_EQ_INT(compression_detect(head, sizeof(head)), cs[i]);
		o.expected_diff_id = d[0].diff_id;
		CHECK_EQ_INT(apply_file(out, dst, &o, diff_id, NULL), 0);
		CHECK_EQ_STR(diff_id, d[0].diff_id);
		CHECK_EQ_STR(d[i].diff_id, d[0].diff_id);
		check_rich_tree(dst, 1000);
	}
	CHECK_EQ_STR(d[0].digest, d[0].diff_id);
	CHECK(strcmp(d[1].digest, d[2].digest) != 0);
	CHECK(d[1].size < d[0].size && d[2].size < d[0].size);
}

TEST(determinism)
{
	LayerDigests a, b, c, e;

	make_rich_tree("t1", 5000);
	make_rich_tree("t2", 7000);
	CHECK_EQ_INT(write_layer("t1", LAYER_SOURCE_PLAIN, COMPRESSION_GZIP, 1000, "a", &a), 0);
	CHECK_EQ_INT(write_layer("t1", LAYER_SOURCE_PLAIN, COMPRESSION_GZIP, 1000, "b", &b), 0);
	CHECK_EQ_INT(write_layer("t2", LAYER_SOURCE_PLAIN, COMPRESSION_GZIP, 1000, "c", &c), 0);
	CHECK_EQ_STR(a.digest, b.digest);
	CHECK_EQ_STR(a.diff_id, c.diff_id);
	CHECK_EQ_STR(a.digest, c.digest);
	/* the control: without clamping, the different mtimes show */
	CHECK_EQ_INT(write_layer("t2", LAYER_SOURCE_PLAIN, COMPRESSION_GZIP, -1, "e", &e), 0);
	CHECK(strcmp(a.diff_id, e.diff_id) != 0);
}

TEST(sync_source_clamps_mtimes)
{
	_cleanup_close_ int dfd = -1, ofd = open("out", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	_cleanup_error_ KilnError *err = NULL;
	LayerWriteOptions o = {.compression = COMPRESSION_NONE, .epoch = 1000, .sync_source = true};
	LayerDigests d;
	struct stat st;

	make_rich_tree("src", 5000);
	dfd = open("src", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK_EQ_INT(layer_write(dfd, &o, sink_fd, &ofd, &d, &err), 0);
	CHECK(lstat("src/d/f", &st) == 0 && st.st_mtime == 1000);
	CHECK(lstat("src/abs", &st) == 0 && st.st_mtime == 1000);
	CHECK(lstat("src/d", &st) == 0 && st.st_mtime == 1000);
}

static int make_socket(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	return fd < 0 ? -1 : bind(fd, (struct sockaddr *)&a, sizeof(a));
}

static char *tar_names(const char *path, bool *ret_overlay_xattr);

/* A socket has no tar form: it is left out, and (sync_source) removed from the tree that
 * becomes the snapshot, whose dir keeps the mtime written for it. */
TEST(sync_source_drops_sockets)
{
	_cleanup_close_ int dfd = -1, ofd = open("out", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	LayerWriteOptions o = {.compression = COMPRESSION_NONE, .epoch = 1000};
	LayerDigests d;
	struct stat st;
	bool ovl;

	mkdir("src", 0755);
	mkdir("src/run", 0755);
	put("src/run/f", "f");
	CHECK_EQ_INT(make_socket("src/run/s"), 0);
	set_mtimes("src/run", 5000);
	dfd = open("src", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK_EQ_INT(layer_write(dfd, &o, sink_fd, &ofd, &d, NULL), 0);
	CHECK(lstat("src/run/s", &st) == 0 && S_ISSOCK(st.st_mode));
	o.sync_source = true;
	CHECK_EQ_INT(layer_write(dfd, &o, sink_fd, &ofd, &d, NULL), 0);
	CHECK(lstat("src/run/s", &st) < 0 && errno == ENOENT);
	CHECK(lstat("src/run", &st) == 0 && st.st_mtime == 1000);
	CHECK_EQ_INT(d.n_entries, 2);
	CHECK_EQ_INT(write_layer("src", LAYER_SOURCE_PLAIN, COMPRESSION_NONE, 1000, "l", &d), 0);
	_cleanup_free_ char *names = tar_names("l", &ovl);
	CHECK_EQ_STR(names, "run/ run/f ");
}

static int write_deep(void *ud)
{
	_cleanup_close_ int dfd = open("src", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int ofd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	_cleanup_error_ KilnError *err = NULL;
	LayerWriteOptions o = {.compression = COMPRESSION_ZSTD, .epoch = -1};
	LayerDigests d;
	int r = layer_write(dfd, &o, sink_fd, &ofd, &d, &err);

	if (r < 0)
		printf("#   layer_write: %s\n", err->message);
	return r < 0 || d.n_entries != *(size_t *)ud;
}

/* A RUN step's deep tree: no recursion, no fd per level. */
TEST(write_deep_tree_bounded)
{
	size_t depth = 5000;

	CHECK_EQ_INT(deep_tree_make(AT_FDCWD, "src", (int)depth), 0);
	CHECK_EQ_INT(deep_run_limited(write_deep, &depth), 0);
}

static int apply_opaque_layer(void *ud)
{
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);

	(void)ud;
	return apply_file("l", "root", &o, NULL, NULL) < 0;
}

TEST(merge_opaque_clears_a_deep_tree)
{
	static const TarEnt ents[] = {
	    {"o/", AE_IFDIR, NULL}, {"o/.wh..wh..opq", AE_IFREG, ""}, {"o/new", AE_IFREG, "n"}};
	struct stat st;

	mkdir("root", 0755);
	CHECK_EQ_INT(deep_tree_make(AT_FDCWD, "root/o", 5000), 0);
	make_tar("l", ents, ELEMENTSOF(ents), false);
	CHECK_EQ_INT(deep_run_limited(apply_opaque_layer, NULL), 0);
	CHECK(lstat("root/o/d", &st) < 0 && errno == ENOENT);
	CHECK(lstat("root/o/new", &st) == 0);
}

/* Lists a tar's entry names (and whether any carries a user.overlay.* xattr). */
static char *tar_names(const char *path, bool *ret_overlay_xattr)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	char *names = xstrdup("");

	*ret_overlay_xattr = false;
	archive_read_support_format_tar(a);
	archive_read_support_filter_all(a);
	if (archive_read_open_filename(a, path, 10240) != ARCHIVE_OK)
		return names;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		char *n = xasprintf("%s%s ", names, archive_entry_pathname(e));
		free(names);
		names = n;
		const char *xn;
		const void *xv;
		size_t xs;
		archive_entry_xattr_reset(e);
		while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK)
			if (strncmp(xn, "user.overlay.", 13) == 0)
				*ret_overlay_xattr = true;
	}
	archive_read_free(a);
	return names;
}

static void make_upper(void)
{
	mkdir("up", 0755);
	mknod("up/gone", S_IFCHR | 0000, makedev(0, 0));
	mkdir("up/op", 0755);
	setxattr("up/op", "user.overlay.opaque", "y", 1, 0);
	setxattr("up/op", "user.overlay.origin", "zz", 2, 0);
	put("up/op/new", "new");
	mkdir("up/sub", 0755);
	mknod("up/sub/gone2", S_IFCHR | 0000, makedev(0, 0));
}

TEST(overlay_upper_write)
{
	LayerDigests d;
	bool ovl = true;

	make_upper();
	CHECK_EQ_INT(write_layer("up", LAYER_SOURCE_OVERLAY_UPPER, COMPRESSION_NONE, 0, "l", &d),
		     0);
	_cleanup_free_ char *names = tar_names("l", &ovl);
	CHECK_EQ_STR(names, ".wh.gone op/ op/.wh..wh..opq op/new sub/ sub/.wh.gone2 ");
	CHECK(!ovl);
	CHECK_EQ_INT(d.n_entries, 6);
	/* the same dir as a plain tree keeps the device and writes no markers */
	CHECK_EQ_INT(write_layer("up", LAYER_SOURCE_PLAIN, COMPRESSION_NONE, 0, "p", &d), 0);
	_cleanup_free_ char *plain = tar_names("p", &ovl);
	CHECK_EQ_STR(plain, "gone op/ op/new sub/ sub/gone2 ");
}

TEST(apply_overlay_mode)
{
	LayerDigests d;
	LayerApplyOptions o = apply_opts(LAYER_APPLY_OVERLAY);
	struct stat st;
	char v[4] = {0};

	make_upper();
	CHECK_EQ_INT(write_layer("up", LAYER_SOURCE_OVERLAY_UPPER, COMPRESSION_GZIP, 0, "l", &d),
		     0);
	CHECK_EQ_INT(apply_file("l", "snap", &o, NULL, NULL), 0);
	CHECK(lstat("snap/gone", &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == 0);
	CHECK(lstat("snap/sub/gone2", &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == 0);
	CHECK(lstat("snap/op/.wh..wh..opq", &st) < 0);
	CHECK_EQ_INT(getxattr("snap/op", "user.overlay.opaque", v, sizeof(v)), 1);
	CHECK(v[0] == 'y');
	CHECK(getxattr("snap/op", "user.overlay.origin", v, sizeof(v)) < 0);
	_cleanup_free_ char *data = slurp("snap/op/new");
	CHECK_EQ_STR(data, "new");
	/* writing the snapshot back gives the same layer */
	LayerDigests d2;
	CHECK_EQ_INT(
	    write_layer("snap", LAYER_SOURCE_OVERLAY_UPPER, COMPRESSION_GZIP, 0, "l2", &d2), 0);
	CHECK_EQ_STR(d2.diff_id, d.diff_id);
}

TEST(apply_merge_mode)
{
	LayerDigests d;
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	struct stat st;

	mkdir("root", 0755);
	put("root/gone", "old");
	put("root/keep", "keep");
	mkdir("root/op", 0755);
	mkdir("root/op/olddir", 0755);
	put("root/op/olddir/x", "x");
	put("root/op/old", "old");
	mkdir("root/sub", 0755);
	put("root/sub/gone2", "old");
	put("root/sub/stay", "stay");
	make_upper();
	CHECK_EQ_INT(write_layer("up", LAYER_SOURCE_OVERLAY_UPPER, COMPRESSION_ZSTD, 0, "l", &d),
		     0);
	CHECK_EQ_INT(apply_file("l", "root", &o, NULL, NULL), 0);
	CHECK(lstat("root/gone", &st) < 0 && errno == ENOENT);
	CHECK(lstat("root/sub/gone2", &st) < 0 && errno == ENOENT);
	CHECK(lstat("root/sub/stay", &st) == 0);
	CHECK(lstat("root/keep", &st) == 0);
	CHECK(lstat("root/op/old", &st) < 0 && errno == ENOENT);
	CHECK(lstat("root/op/olddir", &st) < 0 && errno == ENOENT);
	_cleanup_free_ char *data = slurp("root/op/new");
	CHECK_EQ_STR(data, "new");
}

TEST(no_whiteouts_for_add)
{
	static const TarEnt ents[] = {{".wh.foo", AE_IFREG, "x"}, {"d/.wh..wh..opq", AE_IFREG, ""}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	struct stat st;

	o.whiteouts = false;
	o.keep_owner = false;
	o.force_uid = 123;
	o.force_gid = 456;
	make_tar("t", ents, ELEMENTSOF(ents), false);
	CHECK_EQ_INT(apply_file("t", "dst", &o, NULL, NULL), 0);
	CHECK(lstat("dst/.wh.foo", &st) == 0 && S_ISREG(st.st_mode));
	CHECK_EQ_INT(st.st_uid, 123);
	CHECK_EQ_INT(st.st_gid, 456);
	CHECK(lstat("dst/d/.wh..wh..opq", &st) == 0);
}

TEST(replace_types)
{
	static const TarEnt ents[] = {{"a", AE_IFDIR, NULL},	 {"a/x", AE_IFREG, "x"},
				      {"a", AE_IFREG, "file"},	 {"b", AE_IFREG, "b"},
				      {"b", AE_IFDIR, NULL},	 {"c", AE_IFLNK, "/b"},
				      {"c", AE_IFREG, "c-file"}, {"d", AE_IFDIR, NULL},
				      {"d/y", AE_IFREG, "y"},	 {"d", AE_IFDIR, NULL}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	struct stat st;

	make_tar("t", ents, ELEMENTSOF(ents), false);
	CHECK_EQ_INT(apply_file("t", "dst", &o, NULL, NULL), 0);
	_cleanup_free_ char *a = slurp("dst/a"), *c = slurp("dst/c"), *y = slurp("dst/d/y");
	CHECK_EQ_STR(a, "file");
	CHECK(lstat("dst/b", &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(lstat("dst/c", &st) == 0 && S_ISREG(st.st_mode));
	CHECK_EQ_STR(c, "c-file");
	CHECK_EQ_STR(y, "y");
}

/* Hostile input: every case fails or lands inside dst, and the canary next to dst is intact. */
static void check_canary(void)
{
	struct stat st;
	_cleanup_free_ char *c = slurp("canary");

	CHECK_EQ_STR(c, "canary");
	CHECK(lstat("canary", &st) == 0 && st.st_nlink == 1 && S_ISREG(st.st_mode));
	CHECK(access("x", F_OK) < 0);
	CHECK(access("/x", F_OK) < 0);
	CHECK(access("/passwd-kiln-test", F_OK) < 0);
}

static void expect_apply_error(const TarEnt *ents, size_t n, const char *needle)
{
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	_cleanup_free_ char *msg = NULL;

	put("canary", "canary");
	make_tar("t", ents, n, false);
	CHECK(apply_file("t", "dst", &o, NULL, &msg) < 0);
	CHECK(msg && strstr(msg, needle));
	check_canary();
}

TEST(hostile_dotdot)
{
	static const TarEnt ents[] = {{"ok", AE_IFREG, "fine"}, {"../x", AE_IFREG, "pwned"}};
	expect_apply_error(ents, ELEMENTSOF(ents), "'../x' escapes");
}

TEST(hostile_abs_dotdot)
{
	static const TarEnt ents[] = {{"/../../x", AE_IFREG, "pwned"}};
	expect_apply_error(ents, ELEMENTSOF(ents), "'/../../x' escapes");
}

TEST(hostile_hardlink_outside)
{
	static const TarEnt ents[] = {{"hl", 0, "../canary"}};
	expect_apply_error(ents, ELEMENTSOF(ents), "links outside");
}

TEST(hostile_hardlink_via_symlink)
{
	static const TarEnt ents[] = {{"up", AE_IFLNK, ".."}, {"hl", 0, "up/canary"}};
	expect_apply_error(ents, ELEMENTSOF(ents), "'hl'");
}

TEST(hardlink_to_lower_layer)
{
	static const TarEnt ents[] = {{"hl", 0, "lower"}};
	struct stat st;

	mkdir("dst", 0755);
	put("dst/lower", "from an earlier layer");
	expect_apply_error(ents, ELEMENTSOF(ents),
			   "layer entry 'hl' is a hard link to 'lower', which is not an earlier "
			   "entry of the layer");
	CHECK(lstat("dst/hl", &st) < 0);
}

TEST(hardlink_to_later_entry)
{
	static const TarEnt ents[] = {{"hl", 0, "later"}, {"later", AE_IFREG, "x"}};
	expect_apply_error(ents, ELEMENTSOF(ents), "'hl' is a hard link to 'later'");
}

TEST(hardlink_to_earlier_entry)
{
	static const TarEnt ents[] = {
	    {"d", AE_IFDIR, NULL}, {"d/f", AE_IFREG, "x"}, {"hl", 0, "./d/f"}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_OVERLAY);
	struct stat a, b;

	make_tar("t", ents, ELEMENTSOF(ents), false);
	CHECK_EQ_INT(apply_file("t", "dst", &o, NULL, NULL), 0);
	CHECK(stat("dst/d/f", &a) == 0 && stat("dst/hl", &b) == 0 && a.st_ino == b.st_ino);
}

TEST(symlink_named_dot)
{
	static const TarEnt ents[] = {{".", AE_IFLNK, "/etc"}, {"passwd-kiln-test", AE_IFREG, "x"}};
	static const TarEnt ents2[] = {{"a/..", AE_IFREG, "x"}};
	expect_apply_error(ents, ELEMENTSOF(ents), "layer entry '.' would replace the image root");
	expect_apply_error(ents2, ELEMENTSOF(ents2), "'a/..' would replace the image root");
}

TEST(bare_whiteout)
{
	static const TarEnt ents[] = {{"etc", AE_IFDIR, NULL}, {"etc/.wh.", AE_IFREG, ""}};
	expect_apply_error(ents, ELEMENTSOF(ents), "'etc/.wh.' is an invalid whiteout");
}

TEST(dir_replaced_by_symlink)
{
	/* the dir's mode (0644 here) is fixed up at the end: it must not reach the symlink's
	 * target, inside or outside the root */
	static const TarEnt ents[] = {{"sub", AE_IFDIR, NULL},		{"d", AE_IFDIR, NULL},
				      {"d", AE_IFLNK, "../../outside"}, {"e", AE_IFDIR, NULL},
				      {"e", AE_IFLNK, "/sub"},		{"e/f", AE_IFREG, "in"}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	struct stat st;

	mkdir("outside", 0700);
	make_tar("t", ents, ELEMENTSOF(ents), false);
	CHECK_EQ_INT(apply_file("t", "dst", &o, NULL, NULL), 0);
	CHECK(stat("outside", &st) == 0 && (st.st_mode & 07777) == 0700);
	CHECK(lstat("dst/d", &st) == 0 && S_ISLNK(st.st_mode));
	CHECK(lstat("dst/e", &st) == 0 && S_ISLNK(st.st_mode));
	_cleanup_free_ char *in = slurp("dst/sub/f");
	CHECK_EQ_STR(in, "in");
}

/* Flattening layers (MERGE with whiteouts) reads as their overlay stack: an entry's parent is a
 * dir of its own layer, shadowing a lower layer's symlink to a dir (or file) instead of
 * following it; whiteouts too. ADD (no whiteouts) follows the symlink inside the root. */
TEST(merge_parents_shadow_lower_symlinks)
{
	static const TarEnt lower[] = {{"usr/", AE_IFDIR, NULL},     {"usr/lib/", AE_IFDIR, NULL},
				       {"usr/lib/a", AE_IFREG, "a"}, {"usr/lib/x", AE_IFREG, "x"},
				       {"lib", AE_IFLNK, "usr/lib"}, {"wl", AE_IFLNK, "usr/lib"},
				       {"f", AE_IFREG, "file"}};
	static const TarEnt upper[] = {
	    {"lib/foo", AE_IFREG, "foo"}, {"wl/.wh.x", AE_IFREG, ""}, {"f/g", AE_IFREG, "g"}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	struct stat st;

	make_tar("lower", lower, ELEMENTSOF(lower), false);
	make_tar("upper", upper, ELEMENTSOF(upper), false);
	CHECK_EQ_INT(apply_file("lower", "root", &o, NULL, NULL), 0);
	CHECK_EQ_INT(apply_file("upper", "root", &o, NULL, NULL), 0);
	CHECK(lstat("root/lib", &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0755);
	CHECK(lstat("root/lib/foo", &st) == 0);
	CHECK(lstat("root/usr/lib/foo", &st) < 0 && errno == ENOENT);
	CHECK(lstat("root/wl", &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(lstat("root/usr/lib/x", &st) == 0);
	CHECK(lstat("root/f/g", &st) == 0);
	CHECK(lstat("root/usr/lib/a", &st) == 0);
	/* ADD of a user's tar follows it, as Docker does */
	o.whiteouts = false;
	make_tar("add.tar", upper, 1, false);
	CHECK_EQ_INT(apply_file("lower", "add", &o, NULL, NULL), 0);
	CHECK_EQ_INT(apply_file("add.tar", "add", &o, NULL, NULL), 0);
	CHECK(lstat("add/lib", &st) == 0 && S_ISLNK(st.st_mode));
	CHECK(lstat("add/usr/lib/foo", &st) == 0);
}

TEST(hostile_symlink_root)
{
	static const TarEnt ents[] = {{"etc", AE_IFLNK, "/"},
				      {"etc/passwd-kiln-test", AE_IFREG, "pwned"},
				      {"evil", AE_IFLNK, "../../.."},
				      {"evil/x", AE_IFREG, "pwned2"},
				      {"evil/canary", AE_IFREG, "pwned3"}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);

	put("canary", "canary");
	make_tar("t", ents, ELEMENTSOF(ents), false);
	CHECK_EQ_INT(apply_file("t", "dst", &o, NULL, NULL), 0);
	_cleanup_free_ char *a = slurp("dst/passwd-kiln-test"), *b = slurp("dst/x"),
			    *c = slurp("dst/canary");
	CHECK_EQ_STR(a, "pwned");
	CHECK_EQ_STR(b, "pwned2");
	CHECK_EQ_STR(c, "pwned3");
	check_canary();
}

static void make_good_layer(Compression c, const char *out, LayerDigests *d)
{
	make_rich_tree("src", 5000);
	CHECK_EQ_INT(write_layer("src", LAYER_SOURCE_PLAIN, c, 1000, out, d), 0);
}

TEST(truncated_gzip)
{
	LayerDigests d;
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	struct stat st;
	_cleanup_free_ char *msg = NULL, *msg2 = NULL, *msg3 = NULL;

	put("canary", "canary");
	make_good_layer(COMPRESSION_GZIP, "l", &d);
	CHECK(stat("l", &st) == 0);
	CHECK(truncate("l", st.st_size / 2) == 0);
	CHECK(apply_file("l", "dst", &o, NULL, &msg) < 0);
	CHECK(msg && strstr(msg, "truncated gzip"));
	/* cut inside the trailer: the tar parses, the stream does not end */
	make_good_layer(COMPRESSION_GZIP, "l2", &d);
	CHECK(truncate("l2", st.st_size - 3) == 0);
	CHECK(apply_file("l2", "dst2", &o, NULL, &msg2) < 0);
	CHECK(msg2 && strstr(msg2, "truncated gzip"));
	make_good_layer(COMPRESSION_ZSTD, "l3", &d);
	CHECK(stat("l3", &st) == 0 && truncate("l3", st.st_size - 5) == 0);
	CHECK(apply_file("l3", "dst3", &o, NULL, &msg3) < 0);
	CHECK(msg3 && strstr(msg3, "zstd"));
	check_canary();
}

TEST(corrupt_data)
{
	LayerDigests d;
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	_cleanup_free_ char *msg = NULL, *msg2 = NULL, *msg3 = NULL;

	put("canary", "canary");
	make_good_layer(COMPRESSION_GZIP, "l", &d);
	int fd = open("l", O_RDWR | O_CLOEXEC);
	char junk[64];
	memset(junk, 0x5a, sizeof(junk));
	CHECK(pwrite(fd, junk, sizeof(junk), 200) == sizeof(junk));
	close(fd);
	CHECK(apply_file("l", "dst", &o, NULL, &msg) < 0);
	CHECK(msg && strstr(msg, "gzip"));
	put("notatar", "this is not a tar file, not even close, just words and more words. "
		       "it goes on for a while so that libarchive has enough to look at. "
		       "and on, and on, and on, and on, and on, and on, and on, and on. "
		       "and on, and on, and on, and on, and on, and on, and on, and on. "
		       "and on, and on, and on, and on, and on, and on, and on, and on. "
		       "and on, and on, and on, and on, and on, and on, and on, and on. "
		       "and on, and on, and on, and on, and on, and on, and on, and on. ");
	CHECK(apply_file("notatar", "dst2", &o, NULL, &msg2) < 0);
	CHECK(msg2 != NULL);
	/* a plain tar cut in the middle of a file */
	make_good_layer(COMPRESSION_NONE, "plain", &d);
	CHECK(truncate("plain", 4096) == 0);
	CHECK(apply_file("plain", "dst3", &o, NULL, &msg3) < 0);
	CHECK(msg3 != NULL);
	check_canary();
}

TEST(diff_id_mismatch)
{
	LayerDigests d;
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	_cleanup_free_ char *msg = NULL;
	const char *bogus =
	    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

	make_good_layer(COMPRESSION_ZSTD, "l", &d);
	o.expected_diff_id = bogus;
	CHECK(apply_file("l", "dst", &o, NULL, &msg) < 0);
	CHECK(msg && strstr(msg, bogus) && strstr(msg, d.diff_id));
}

/* dest < 0: checks without writing; the same errors, the diff_id, the caps. */
TEST(scan_only)
{
	static const TarEnt bad[] = {{"ok", AE_IFREG, "x"}, {"/../x", AE_IFREG, "pwned"}};
	static const TarEnt link[] = {{"hl", 0, "nothere"}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_OVERLAY);
	_cleanup_error_ KilnError *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
	char diff_id[DIGEST_STRING_MAX];
	LayerDigests d;

	make_good_layer(COMPRESSION_GZIP, "l", &d);
	_cleanup_close_ int good = open("l", O_RDONLY | O_CLOEXEC);
	o.expected_diff_id = d.diff_id;
	CHECK_EQ_INT(layer_apply(good, -1, &o, diff_id, &e1), 0);
	CHECK_EQ_STR(diff_id, d.diff_id);
	o.expected_diff_id = NULL;
	o.max_entries = 2;
	CHECK(lseek(good, 0, SEEK_SET) == 0);
	CHECK(layer_apply(good, -1, &o, NULL, &e2) == -EFBIG);
	CHECK(e2 && strstr(e2->message, "more than 2 entries"));
	o.max_entries = 0;
	make_tar("t", bad, ELEMENTSOF(bad), true);
	_cleanup_close_ int b = open("t", O_RDONLY | O_CLOEXEC);
	CHECK(layer_apply(b, -1, &o, NULL, &e3) < 0);
	CHECK(e3 && strstr(e3->message, "'/../x' escapes"));
	make_tar("t2", link, ELEMENTSOF(link), false);
	_cleanup_close_ int l = open("t2", O_RDONLY | O_CLOEXEC);
	CHECK(layer_apply(l, -1, &o, NULL, &e4) < 0);
	CHECK(e4 && strstr(e4->message, "not an earlier entry"));
}

TEST(write_refuses_whiteout_name)
{
	LayerDigests d;

	mkdir("tree", 0755);
	mkdir("tree/etc", 0755);
	put("tree/etc/.wh.passwd", "not a whiteout");
	CHECK(write_layer("tree", LAYER_SOURCE_OVERLAY_UPPER, COMPRESSION_GZIP, 0, "l", &d) < 0);
	CHECK(write_layer("tree", LAYER_SOURCE_PLAIN, COMPRESSION_NONE, 0, "l2", &d) < 0);
}

/* A zstd frame that declares a 256 MiB window (as `zstd --long=28` writes) is refused before
 * the decoder allocates it; 128 MiB (the cap) still decodes. */
static int zstd_with_window(int wlog, const char *out)
{
	static const TarEnt ents[] = {{"f", AE_IFREG, "data"}};
	_cleanup_free_ char *plain = NULL, *packed = NULL;
	size_t len = 0;

	make_tar("plain.tar", ents, 1, false);
	if (read_file_at(AT_FDCWD, "plain.tar", 1 << 20, &plain, &len, NULL) < 0)
		return -1;
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, wlog);
	packed = xcalloc(1, ZSTD_compressBound(len));
	ZSTD_inBuffer in = {plain, len, 0};
	ZSTD_outBuffer o = {packed, ZSTD_compressBound(len), 0};
	/* streamed without a pledged size: the header carries the window, not the content size */
	size_t zr = ZSTD_compressStream2(cc, &o, &in, ZSTD_e_continue);
	ZSTD_inBuffer none = {NULL, 0, 0};
	if (!ZSTD_isError(zr))
		zr = ZSTD_compressStream2(cc, &o, &none, ZSTD_e_end);
	ZSTD_freeCCtx(cc);
	if (ZSTD_isError(zr) || zr != 0)
		return -1;
	_cleanup_close_ int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	return write_all(fd, packed, o.pos);
}

TEST(zstd_window_cap)
{
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	_cleanup_free_ char *msg = NULL;

	CHECK_EQ_INT(zstd_with_window(ZSTD_WINDOW_LOG_MAX + 1, "big.zst"), 0);
	CHECK(apply_file("big.zst", "dst", &o, NULL, &msg) < 0);
	CHECK(msg && strstr(msg, "zstd"));
	CHECK_EQ_INT(zstd_with_window(ZSTD_WINDOW_LOG_MAX, "ok.zst"), 0);
	CHECK_EQ_INT(apply_file("ok.zst", "dst2", &o, NULL, NULL), 0);
	_cleanup_free_ char *f = slurp("dst2/f");
	CHECK_EQ_STR(f, "data");
}

TEST(limits)
{
	LayerDigests d;
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	_cleanup_free_ char *msg = NULL, *msg2 = NULL;

	make_good_layer(COMPRESSION_GZIP, "l", &d);
	o.max_entries = 3;
	CHECK(apply_file("l", "dst", &o, NULL, &msg) < 0);
	CHECK(msg && strstr(msg, "more than 3 entries"));
	o.max_entries = 0;
	o.max_bytes = 100000;
	CHECK(apply_file("l", "dst2", &o, NULL, &msg2) < 0);
	CHECK(msg2 && strstr(msg2, "larger than"));
}

/* In a user namespace with no id map, mknod and chown fail as in a rootless build. */
static int child_apply(const TarEnt *ents, size_t n, bool keep_owner, const char *needle)
{
	pid_t pid = fork();

	if (pid == 0) {
		LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
		_cleanup_free_ char *msg = NULL;
		o.keep_owner = keep_owner;
		if (unshare(CLONE_NEWUSER) < 0)
			_exit(77);
		int r = apply_file("t", "dst", &o, NULL, &msg);
		_exit(r < 0 && msg && strstr(msg, needle) ? 0 : 1);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(rootless_device_and_chown)
{
	static const TarEnt dev[] = {{"dev", AE_IFDIR, NULL}, {"dev/x", AE_IFCHR, NULL}};
	static const TarEnt file[] = {{"f", AE_IFREG, "x"}};

	mkdir("dst", 0777);
	chmod("dst", 0777);
	make_tar("t", dev, ELEMENTSOF(dev), false);
	int r = child_apply(dev, ELEMENTSOF(dev), false,
			    "layer contains device 'dev/x': device nodes cannot be created in a "
			    "rootless build");
	if (r == 77) {
		printf("# user namespaces unavailable: skipped\n");
		return;
	}
	CHECK_EQ_INT(r, 0);
	rm_rf_at(AT_FDCWD, "dst", NULL);
	mkdir("dst", 0777);
	chmod("dst", 0777);
	make_tar("t", file, ELEMENTSOF(file), false);
	CHECK_EQ_INT(child_apply(file, ELEMENTSOF(file), true, "chown 'f' to 0:0: id not mapped"),
		     0);
}

/* Issue 9 item 10: debootstrap bases ship /dev/console and friends. In a user namespace they
 * are left out (and hard links to them), counted, FIFOs kept; the diff_id is the whole
 * stream's. */
static int child_apply_devices(LayerApplyMode mode, const char *want_diff_id)
{
	pid_t pid = fork();

	if (pid == 0) {
		LayerApplyResult res = {.devices_skipped = 99};
		LayerApplyOptions o = apply_opts(mode);
		char diff_id[DIGEST_STRING_MAX];
		struct stat st;
		o.keep_owner = false;
		o.skip_devices = true;
		o.result = &res;
		o.expected_diff_id = want_diff_id;
		if (unshare(CLONE_NEWUSER) < 0)
			_exit(77);
		const char *dest = mode == LAYER_APPLY_MERGE ? "merge" : "overlay";
		if (apply_file("t", dest, &o, diff_id, NULL) < 0) {
			fflush(stdout);
			_exit(2);
		}
		_cleanup_free_ char *dev = xasprintf("%s/dev", dest);
		chmod(dev, 0755); /* make_tar gives every entry 0644 */
		_cleanup_free_ char *fifo = xasprintf("%s/dev/initctl", dest);
		_cleanup_free_ char *file = xasprintf("%s/dev/keep", dest);
		_cleanup_free_ char *con = xasprintf("%s/dev/console", dest);
		_cleanup_free_ char *loop = xasprintf("%s/dev/loop0", dest);
		_cleanup_free_ char *ln = xasprintf("%s/dev/console-link", dest);
		bool ok = res.devices_skipped == 3 && !strcmp(res.first_device, "dev/console") &&
			  lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode) && lstat(file, &st) == 0 &&
			  S_ISREG(st.st_mode) && lstat(con, &st) < 0 && lstat(loop, &st) < 0 &&
			  lstat(ln, &st) < 0 && !strcmp(diff_id, want_diff_id);
		if (!ok)
			printf("#   skipped %llu first '%s' fifo %d file %d con %d loop %d ln %d\n",
			       (unsigned long long)res.devices_skipped, res.first_device,
			       lstat(fifo, &st), lstat(file, &st), lstat(con, &st),
			       lstat(loop, &st), lstat(ln, &st));
		fflush(stdout);
		_exit(ok ? 0 : 1);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(devices_left_out_in_a_user_namespace)
{
	static const TarEnt ents[] = {
	    {"dev", AE_IFDIR, NULL},
	    {"dev/console", AE_IFCHR, NULL},
	    {"dev/loop0", AE_IFBLK, NULL},
	    {"dev/initctl", AE_IFIFO, NULL},
	    {"dev/console-link", 0, "dev/console"},
	    {"dev/keep", AE_IFREG, "kept"},
	};
	LayerApplyOptions scan = apply_opts(LAYER_APPLY_OVERLAY);
	char diff_id[DIGEST_STRING_MAX];

	make_tar("t", ents, ELEMENTSOF(ents), true);
	_cleanup_close_ int fd = open("t", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && layer_apply(fd, -1, &scan, diff_id, NULL) == 0);
	int r = child_apply_devices(LAYER_APPLY_OVERLAY, diff_id);
	if (r == 77) {
		printf("# user namespaces unavailable: skipped\n");
		return;
	}
	CHECK_EQ_INT(r, 0);
	CHECK_EQ_INT(child_apply_devices(LAYER_APPLY_MERGE, diff_id), 0);
}

TEST(device_as_root)
{
	static const TarEnt dev[] = {{"dev/null", AE_IFCHR, NULL}};
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	struct stat st;

	make_tar("t", dev, ELEMENTSOF(dev), true);
	CHECK_EQ_INT(apply_file("t", "dst", &o, NULL, NULL), 0);
	CHECK(lstat("dst/dev/null", &st) == 0 && S_ISCHR(st.st_mode) &&
	      st.st_rdev == makedev(1, 3));
}

TEST(empty_dir)
{
	LayerDigests d;
	LayerApplyOptions o = apply_opts(LAYER_APPLY_MERGE);
	char diff_id[DIGEST_STRING_MAX];

	mkdir("empty", 0755);
	CHECK_EQ_INT(write_layer("empty", LAYER_SOURCE_PLAIN, COMPRESSION_GZIP, 0, "l", &d), 0);
	CHECK_EQ_INT(d.n_entries, 0);
	CHECK_EQ_INT(d.uncompressed_size, 1024);
	CHECK_EQ_INT(apply_file("l", "dst", &o, diff_id, NULL), 0);
	CHECK_EQ_STR(diff_id, d.diff_id);
}

/* ---- type=local export (issue 8 item 3) ---- */

static json_t *put_json_blob(Store *s, json_t *j, const char *mt)
{
	char *text = oci_json_dump(j);
	char digest[DIGEST_STRING_MAX];

	json_decref(j);
	CHECK(store_put_blob(s, text, strlen(text), NULL, digest, NULL) == 0);
	json_t *d = json_pack("{s:s,s:s,s:I}", "mediaType", mt, "digest", digest, "size",
			      (json_int_t)strlen(text));
	free(text);
	return d;
}

/* An image in store s made of plain layer tars; returns its manifest descriptor. */
static OciDescriptor image_of_layers(Store *s, const char *const *tars, size_t n)
{
	json_t *ids = json_array(), *layers = json_array();
	OciDescriptor ret = {0};

	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *data = NULL;
		size_t len = 0;
		char digest[DIGEST_STRING_MAX];
		CHECK(read_file_at(AT_FDCWD, tars[i], 1 << 24, &data, &len, NULL) == 0);
		CHECK(store_put_blob(s, data, len, NULL, digest, NULL) == 0);
		json_array_append_new(ids, json_string(digest));
		json_array_append_new(layers, json_pack("{s:s,s:s,s:I}", "mediaType", MT_OCI_LAYER,
							"digest", digest, "size", (json_int_t)len));
	}
	json_t *config =
	    put_json_blob(s,
			  json_pack("{s:s,s:s,s:{s:s,s:o}}", "architecture", "amd64", "os", "linux",
				    "rootfs", "type", "layers", "diff_ids", ids),
			  MT_OCI_CONFIG);
	json_t *m = put_json_blob(s,
				  json_pack("{s:i,s:s,s:o,s:o}", "schemaVersion", 2, "mediaType",
					    MT_OCI_MANIFEST, "config", config, "layers", layers),
				  MT_OCI_MANIFEST);
	CHECK(oci_descriptor_from_json(m, &ret, NULL) == 0);
	json_decref(m);
	return ret;
}

static int export_to(Store *s, const OciDescriptor *m, const char *dest, const char *sub,
		     char **ret_msg)
{
	_cleanup_error_ KilnError *err = NULL;
	int r = export_local(s, m, dest, sub, 0, 0, &err);

	if (r < 0 && !ret_msg)
		printf("# export_local: %s\n", err->message);
	if (ret_msg)
		*ret_msg = err ? xstrdup(err->message) : NULL;
	return r;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static bool same_text(const char *path, const char *want)
{
	_cleanup_free_ char *got = slurp(path);

	return got && !strcmp(got, want);
}

/* The buildx idiom -o type=local,dest=. : whiteouts of the image never delete the user's files;
 * the export is the image's final tree (what a layer removed is not exported). */
TEST(local_export_never_deletes)
{
	static const TarEnt base[] = {{"etc", AE_IFDIR, NULL},
				      {"etc/passwd", AE_IFREG, "v1"},
				      {"root", AE_IFDIR, NULL},
				      {"root/.profile", AE_IFREG, "p"},
				      {"d", AE_IFDIR, NULL},
				      {"d/lower.txt", AE_IFREG, "lower"},
				      {"d/keep.txt", AE_IFREG, "k"},
				      {".git", AE_IFDIR, NULL},
				      {".git/config", AE_IFREG, "image git"},
				      {"link", AE_IFDIR, NULL},
				      {"link/x", AE_IFREG, "x"},
				      {"hl1", AE_IFREG, "same"},
				      {"hl2", 0, "hl1"},
				      {"sym", AE_IFLNK, "/etc/passwd"}};
	static const TarEnt top[] = {{".wh.root", AE_IFREG, ""},  {".wh..git", AE_IFREG, ""},
				     {"d", AE_IFDIR, NULL},	  {"d/.wh.lower.txt", AE_IFREG, ""},
				     {"etc", AE_IFDIR, NULL},	  {"etc/passwd", AE_IFREG, "v2"},
				     {"new.txt", AE_IFREG, "new"}};
	static const TarEnt opaque[] = {{".wh..wh..opq", AE_IFREG, ""},
					{"top.txt", AE_IFREG, "top"}};
	_cleanup_(store_freep) Store *s = NULL;
	const char *const ab[] = {"base.tar", "top.tar"}, *const ao[] = {"base.tar", "opq.tar"};
	struct stat a, b;

	CHECK(store_open("store", &s, NULL) == 0);
	make_tar("base.tar", base, ELEMENTSOF(base), false);
	make_tar("top.tar", top, ELEMENTSOF(top), false);
	make_tar("opq.tar", opaque, ELEMENTSOF(opaque), false);
	OciDescriptor img = image_of_layers(s, ab, 2), img_opq = image_of_layers(s, ao, 2);

	/* the user's checkout: .git, a canary, a root/ dir, a symlink to a dir outside */
	CHECK(mkdir("outside", 0755) == 0 && mkdir("dest", 0755) == 0);
	CHECK(mkdir("dest/.git", 0755) == 0 && mkdir("dest/root", 0700) == 0);
	put("dest/.git/HEAD", "ref: main\n");
	put("dest/canary", "canary\n");
	put("dest/root/keep", "mine\n");
	CHECK(symlink("../outside", "dest/link") == 0);
	CHECK_EQ_INT(export_to(s, &img, "dest", NULL, NULL), 0);
	CHECK(same_text("dest/.git/HEAD", "ref: main\n") && same_text("dest/canary", "canary\n"));
	CHECK(same_text("dest/root/keep", "mine\n") && !exists("dest/root/.profile"));
	CHECK(!exists("dest/.git/config"));
	CHECK(same_text("dest/etc/passwd", "v2") && same_text("dest/new.txt", "new"));
	CHECK(same_text("dest/d/keep.txt", "k") && !exists("dest/d/lower.txt"));
	/* the symlink where the image has a directory became that directory */
	CHECK(lstat("dest/link", &a) == 0 && S_ISDIR(a.st_mode) && same_text("dest/link/x", "x"));
	CHECK(!exists("outside/x"));
	CHECK(lstat("dest/hl1", &a) == 0 && lstat("dest/hl2", &b) == 0 && a.st_ino == b.st_ino);
	char target[64] = "";
	CHECK(readlink("dest/sym", target, sizeof(target) - 1) > 0 &&
	      !strcmp(target, "/etc/passwd"));
	CHECK(lstat("dest/etc", &a) == 0 && (a.st_mode & 07777) == 0644 && a.st_mtime == 100);

	/* into an empty dir: what the top layer removed is absent */
	CHECK_EQ_INT(export_to(s, &img, "fresh", NULL, NULL), 0);
	CHECK(!exists("fresh/root") && !exists("fresh/.git") && !exists("fresh/d/lower.txt"));
	CHECK(same_text("fresh/d/keep.txt", "k"));
	/* an opaque root hides every lower entry, deletes nothing of the user's */
	CHECK_EQ_INT(export_to(s, &img_opq, "dest", NULL, NULL), 0);
	CHECK(same_text("dest/.git/HEAD", "ref: main\n") && same_text("dest/canary", "canary\n"));
	CHECK(same_text("dest/top.txt", "top"));
	CHECK_EQ_INT(export_to(s, &img_opq, "fresh2", NULL, NULL), 0);
	CHECK(same_text("fresh2/top.txt", "top") && !exists("fresh2/etc"));
	oci_descriptor_done(&img);
	oci_descriptor_done(&img_opq);
}

/* Nothing of dest is written through: symlinks and hard links there are replaced; a directory
 * of the user's where the image has a file is an error; a platform subdir that is a symlink
 * becomes a directory. */
TEST(local_export_never_writes_through)
{
	static const TarEnt ents[] = {{"etc", AE_IFDIR, NULL},
				      {"etc/passwd", AE_IFREG, "image"},
				      {"f", AE_IFREG, "image f"},
				      {"conflict", AE_IFREG, "file"}};
	_cleanup_(store_freep) Store *s = NULL;
	const char *const l[] = {"l.tar"};
	_cleanup_free_ char *msg = NULL;

	CHECK(store_open("store", &s, NULL) == 0);
	make_tar("l.tar", ents, ELEMENTSOF(ents), false);
	OciDescriptor img = image_of_layers(s, l, 1);
	CHECK(mkdir("outside", 0755) == 0 && mkdir("dest", 0755) == 0);
	put("outside/passwd", "host\n");
	put("outside/f", "host f\n");
	CHECK(symlink("../outside", "dest/etc") == 0);
	CHECK(link("outside/f", "dest/f") == 0);
	CHECK_EQ_INT(export_to(s, &img, "dest", NULL, NULL), 0);
	CHECK(same_text("outside/passwd", "host\n") && same_text("outside/f", "host f\n"));
	CHECK(same_text("dest/etc/passwd", "image") && same_text("dest/f", "image f"));

	CHECK(mkdir("dest2", 0755) == 0 && mkdir("dest2/conflict", 0755) == 0);
	put("dest2/conflict/mine", "mine");
	CHECK(export_to(s, &img, "dest2", NULL, &msg) == -EEXIST);
	CHECK(msg && strstr(msg, "'dest2/conflict' is a directory"));
	CHECK(same_text("dest2/conflict/mine", "mine"));

	CHECK(mkdir("multi", 0755) == 0 && symlink("../outside", "multi/linux_amd64") == 0);
	CHECK_EQ_INT(export_to(s, &img, "multi", "linux_amd64", NULL), 0);
	CHECK(same_text("multi/linux_amd64/etc/passwd", "image"));
	CHECK(!exists("outside/etc") && same_text("outside/passwd", "host\n"));
	oci_descriptor_done(&img);
}

/* A tree deeper than the fds the process may open is exported all the same. */
TEST(local_export_deep_tree_bounded_fds)
{
	enum { DEPTH = 600 };
	static TarEnt ents[DEPTH + 1];
	char *names[DEPTH + 1];
	_cleanup_(store_freep) Store *s = NULL;
	const char *const l[] = {"deep.tar"};

	for (int i = 0; i <= DEPTH; i++) {
		names[i] = i == 0      ? xstrdup("d")
			   : i < DEPTH ? xasprintf("%s/d", names[i - 1])
				       : xasprintf("%s/bottom", names[i - 1]);
		ents[i] =
		    (TarEnt){names[i], i < DEPTH ? AE_IFDIR : AE_IFREG, i < DEPTH ? NULL : "deep"};
	}
	CHECK(store_open("store", &s, NULL) == 0);
	make_tar("deep.tar", ents, DEPTH + 1, false);
	OciDescriptor img = image_of_layers(s, l, 1);
	pid_t pid = fork();
	if (pid == 0) {
		struct rlimit rl = {.rlim_cur = 200, .rlim_max = 200};
		_exit(setrlimit(RLIMIT_NOFILE, &rl) == 0 &&
			      export_to(s, &img, "dest", NULL, NULL) == 0
			  ? 0
			  : 1);
	}
	int st = 0;
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	_cleanup_free_ char *bottom = xasprintf("dest/%s", names[DEPTH]);
	CHECK(same_text(bottom, "deep"));
	for (int i = 0; i <= DEPTH; i++)
		free(names[i]);
	oci_descriptor_done(&img);
}

int main(void)
{
	if (geteuid() != 0)
		tap_skip_all("needs root (mknod of whiteouts, chown to other ids)");
	RUN(round_trip);
	RUN(compressions);
	RUN(determinism);
	RUN(sync_source_clamps_mtimes);
	RUN(sync_source_drops_sockets);
	RUN(write_deep_tree_bounded);
	RUN(merge_opaque_clears_a_deep_tree);
	RUN(overlay_upper_write);
	RUN(apply_overlay_mode);
	RUN(apply_merge_mode);
	RUN(no_whiteouts_for_add);
	RUN(replace_types);
	RUN(hostile_dotdot);
	RUN(hostile_abs_dotdot);
	RUN(hostile_hardlink_outside);
	RUN(hostile_hardlink_via_symlink);
	RUN(hostile_symlink_root);
	RUN(hardlink_to_lower_layer);
	RUN(hardlink_to_later_entry);
	RUN(hardlink_to_earlier_entry);
	RUN(symlink_named_dot);
	RUN(bare_whiteout);
	RUN(dir_replaced_by_symlink);
	RUN(merge_parents_shadow_lower_symlinks);
	RUN(scan_only);
	RUN(write_refuses_whiteout_name);
	RUN(zstd_window_cap);
	RUN(truncated_gzip);
	RUN(corrupt_data);
	RUN(diff_id_mismatch);
	RUN(limits);
	RUN(rootless_device_and_chown);
	RUN(device_as_root);
	RUN(devices_left_out_in_a_user_namespace);
	RUN(empty_dir);
	RUN(local_export_never_deletes);
	RUN(local_export_never_writes_through);
	RUN(local_export_deep_tree_bounded_fds);
	/* again through the path walk that kernels without openat2() get */
	rootfs_force_fallback(true);
	RUN(round_trip);
	RUN(apply_merge_mode);
	RUN(replace_types);
	RUN(hostile_dotdot);
	RUN(hostile_hardlink_outside);
	RUN(hostile_hardlink_via_symlink);
	RUN(hostile_symlink_root);
	RUN(merge_parents_shadow_lower_symlinks);
	rootfs_force_fallback(false);
	return tap_done();
}
