#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "common/rootfs.h"
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

/* A hostile tree: root/etc -> /, root/evil -> ../../.., plus a canary next to root. */
static int make_tree(void)
{
	if (mkdir("root", 0755) < 0 || mkdir("root/a", 0755) < 0 || mkdir("root/a/b", 0755) < 0)
		return -1;
	put("canary", "outside");
	put("root/passwd", "inside");
	put("root/a/f", "af");
	if (symlink("/", "root/etc") < 0 || symlink("../../..", "root/evil") < 0 ||
	    symlink("/a", "root/abs") < 0 || symlink("loop", "root/loop") < 0 ||
	    symlink("/newfile", "root/dang") < 0 || symlink("b/../../a", "root/a/rel") < 0)
		return -1;
	return open("root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static char *read_in(int root, const char *path)
{
	_cleanup_close_ int fd = rootfs_open(root, path, O_RDONLY, 0);
	char *data = NULL;

	if (fd < 0 || read_all_fd(fd, 4096, &data, NULL, NULL) < 0)
		return NULL;
	return data;
}

static void check_open_cases(void)
{
	_cleanup_close_ int root = make_tree();
	CHECK(root >= 0);
	if (root < 0)
		return;
	char *s;
	CHECK_EQ_STR(s = read_in(root, "etc/passwd"), "inside");
	free(s);
	CHECK_EQ_STR(s = read_in(root, "/../../../../etc/passwd"), "inside");
	free(s);
	CHECK_EQ_STR(s = read_in(root, "evil/passwd"), "inside");
	free(s);
	CHECK_EQ_STR(s = read_in(root, "abs/f"), "af");
	free(s);
	CHECK_EQ_STR(s = read_in(root, "a/rel/f"), "af");
	free(s);
	CHECK_EQ_STR(s = read_in(root, "a/b/../f"), "af");
	free(s);
	/* the canary lives next to root: no path may reach it */
	CHECK_EQ_INT(rootfs_open(root, "evil/canary", O_RDONLY, 0), -ENOENT);
	CHECK_EQ_INT(rootfs_open(root, "../canary", O_RDONLY, 0), -ENOENT);
	CHECK_EQ_INT(rootfs_open(root, "etc/../../canary", O_RDONLY, 0), -ENOENT);
	CHECK_EQ_INT(rootfs_open(root, "loop", O_RDONLY, 0), -ELOOP);
	CHECK_EQ_INT(rootfs_open(root, "a/f/x", O_RDONLY, 0), -ENOTDIR);
	CHECK_EQ_INT(rootfs_open(root, "etc", O_RDONLY | O_NOFOLLOW, 0), -ELOOP);

	_cleanup_close_ int lfd = rootfs_open(root, "etc", O_PATH | O_NOFOLLOW, 0);
	struct stat st, rst, cst;
	CHECK(lfd >= 0 && fstat(lfd, &st) == 0 && S_ISLNK(st.st_mode));

	_cleanup_close_ int dfd = rootfs_open(root, "evil", O_RDONLY | O_DIRECTORY, 0);
	CHECK(dfd >= 0 && fstat(dfd, &st) == 0 && fstat(root, &rst) == 0);
	CHECK(st.st_ino == rst.st_ino && st.st_dev == rst.st_dev);

	/* O_CREAT through a dangling absolute symlink creates inside the root */
	_cleanup_close_ int nfd = rootfs_open(root, "dang", O_WRONLY | O_CREAT, 0600);
	CHECK(nfd >= 0);
	CHECK(access("root/newfile", F_OK) == 0);
	CHECK(access("/newfile", F_OK) != 0);
	CHECK(stat("canary", &cst) == 0 && cst.st_size == 7);
}

static void check_parent_cases(void)
{
	_cleanup_close_ int root = make_tree();
	_cleanup_close_ int pfd = -1, pfd2 = -1, pfd3 = -1;
	_cleanup_free_ char *name = NULL, *name2 = NULL, *name3 = NULL;
	_cleanup_error_ KilnError *err = NULL;
	struct stat st, rst;

	CHECK(root >= 0 && fstat(root, &rst) == 0);
	CHECK_EQ_INT(rootfs_open_parent(root, "etc/shadow", &pfd, &name, &err), 0);
	CHECK_EQ_STR(name, "shadow");
	CHECK(fstat(pfd, &st) == 0 && st.st_ino == rst.st_ino);

	CHECK_EQ_INT(rootfs_open_parent(root, "/", &pfd2, &name2, &err), 0);
	CHECK_EQ_STR(name2, ".");
	CHECK(fstat(pfd2, &st) == 0 && st.st_ino == rst.st_ino);

	/* the last component is not followed */
	CHECK_EQ_INT(rootfs_open_parent(root, "a/b/../rel/", &pfd3, &name3, &err), 0);
	CHECK_EQ_STR(name3, "rel");
	CHECK(fstatat(pfd3, name3, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode));

	_cleanup_close_ int bad = -1;
	_cleanup_free_ char *bname = NULL;
	CHECK(rootfs_open_parent(root, "missing/x", &bad, &bname, &err) == -ENOENT);
	CHECK(err && strstr(err->message, "missing"));
}

static void check_mkdir_cases(void)
{
	_cleanup_close_ int root = make_tree();
	_cleanup_close_ int fd = -1;
	_cleanup_error_ KilnError *err = NULL;
	struct stat st;

	CHECK(root >= 0);
	umask(022);
	CHECK_EQ_INT(rootfs_mkdir_p(root, "etc/new/dir", 0770, 1234, 4321, &fd, &err), 0);
	CHECK(fd >= 0);
	CHECK(stat("root/new/dir", &st) == 0 && S_ISDIR(st.st_mode));
	CHECK_EQ_INT(st.st_mode & 07777, 0770);
	CHECK_EQ_INT(st.st_uid, 1234);
	CHECK_EQ_INT(st.st_gid, 4321);
	CHECK(access("/new", F_OK) != 0);
	CHECK_EQ_INT(rootfs_mkdir_p(root, "evil/../x/y", 0755, (uid_t)-1, (gid_t)-1, NULL, &err),
		     0);
	CHECK(stat("root/x/y", &st) == 0 && S_ISDIR(st.st_mode));
	/* existing dirs are left alone */
	CHECK_EQ_INT(rootfs_mkdir_p(root, "a/b", 0700, 99, 99, NULL, &err), 0);
	CHECK(stat("root/a/b", &st) == 0 && (st.st_mode & 07777) == 0755 && st.st_uid == 0);
	CHECK_EQ_INT(rootfs_mkdir_p(root, ".", 0700, 99, 99, NULL, &err), 0);
	CHECK(rootfs_mkdir_p(root, "a/f/sub", 0755, (uid_t)-1, (gid_t)-1, NULL, &err) < 0);
	CHECK(err != NULL);
}

TEST(open_openat2)
{
	rootfs_force_fallback(false);
	check_open_cases();
}

TEST(open_fallback)
{
	rootfs_force_fallback(true);
	check_open_cases();
	rootfs_force_fallback(false);
}

TEST(open_parent_openat2)
{
	rootfs_force_fallback(false);
	check_parent_cases();
}

TEST(open_parent_fallback)
{
	rootfs_force_fallback(true);
	check_parent_cases();
	rootfs_force_fallback(false);
}

TEST(mkdir_p_openat2)
{
	rootfs_force_fallback(false);
	check_mkdir_cases();
}

TEST(mkdir_p_fallback)
{
	rootfs_force_fallback(true);
	check_mkdir_cases();
	rootfs_force_fallback(false);
}

TEST(open_no_symlinks)
{
	_cleanup_close_ int root = make_tree(), fd = -1;

	fd = rootfs_open_no_symlinks(root, "a/b", O_RDONLY | O_DIRECTORY);
	CHECK(fd >= 0);
	CHECK_EQ_INT(rootfs_open_no_symlinks(root, "abs/b", O_RDONLY | O_DIRECTORY), -ELOOP);
	CHECK_EQ_INT(rootfs_open_no_symlinks(root, "etc", O_RDONLY | O_DIRECTORY), -ELOOP);
	CHECK_EQ_INT(rootfs_open_no_symlinks(root, "a/f/x", O_RDONLY), -ENOTDIR);
	rootfs_force_fallback(true);
	CHECK_EQ_INT(rootfs_open_no_symlinks(root, "a/b", O_RDONLY | O_DIRECTORY), -ENOSYS);
	rootfs_force_fallback(false);
}

static void check_clean(const char *in, const char *want)
{
	_cleanup_free_ char *out = NULL;
	int r = path_clean_relative(in, &out);

	if (!want) {
		CHECK_EQ_INT(r, -EINVAL);
		return;
	}
	CHECK_EQ_INT(r, 0);
	CHECK_EQ_STR(out, want);
}

TEST(path_clean)
{
	check_clean("a//b/./c/..", "a/b");
	check_clean("/etc/passwd", "etc/passwd");
	check_clean("./usr/bin/", "usr/bin");
	check_clean("", ".");
	check_clean(".", ".");
	check_clean("/", ".");
	check_clean("a/..", ".");
	check_clean("a/b/../../c", "c");
	check_clean("..", NULL);
	check_clean("../x", NULL);
	check_clean("/../x", NULL);
	check_clean("a/../../x", NULL);
	check_clean("..a/b..", "..a/b..");
}

int main(void)
{
	if (geteuid() != 0)
		printf("# not root: chown cases may fail\n");
	RUN(open_openat2);
	RUN(open_fallback);
	RUN(open_parent_openat2);
	RUN(open_parent_fallback);
	RUN(mkdir_p_openat2);
	RUN(mkdir_p_fallback);
	RUN(open_no_symlinks);
	RUN(path_clean);
	return tap_done();
}
