#include "common/cleanup.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "deeptree.h"
#include "tap.h"

TEST(digest_known_value)
{
	char d[DIGEST_STRING_MAX];

	digest_buffer("", 0, d);
	CHECK_EQ_STR(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	CHECK(digest_is_valid(d));
}

TEST(digest_validation)
{
	CHECK(!digest_is_valid("sha256:../../x"));
	CHECK(!digest_is_valid(
	    "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"));
	CHECK(!digest_is_valid(
	    "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	CHECK(!digest_is_valid(
	    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85"));
	CHECK(!digest_is_valid(NULL));
}

TEST(streaming_digest_matches_oneshot)
{
	_cleanup_(sha256_freep) Sha256 *h = NULL;
	char a[DIGEST_STRING_MAX], b[DIGEST_STRING_MAX];

	CHECK(sha256_new(&h, NULL) == 0);
	sha256_update(h, "hello ", 6);
	sha256_update(h, "world", 5);
	sha256_final(h, a);
	digest_buffer("hello world", 11, b);
	CHECK_EQ_STR(a, b);
}

TEST(error_wrap_keeps_first_code)
{
	_cleanup_error_ KilnError *e = NULL;

	CHECK_EQ_INT(kiln_error(&e, ENOENT, "open '%s'", "x"), -ENOENT);
	CHECK_EQ_INT(kiln_error_wrap(&e, EIO, "load"), -ENOENT);
	CHECK_EQ_STR(e->message, "load: open 'x'");
	CHECK_EQ_INT(kiln_error_exit_status(e), 1);
}

TEST(atomic_write_and_read)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;

	CHECK(write_file_atomic_at(AT_FDCWD, "f", "abc", 3, 0644, NULL) == 0);
	CHECK(read_file_at(AT_FDCWD, "f", 100, &data, &len, NULL) == 0);
	CHECK_EQ_INT(len, 3);
	CHECK_EQ_STR(data, "abc");
}

TEST(read_limit)
{
	_cleanup_free_ char *data = NULL;
	_cleanup_error_ KilnError *e = NULL;

	CHECK(write_file_atomic_at(AT_FDCWD, "f", "abcdefgh", 8, 0644, NULL) == 0);
	CHECK(read_file_at(AT_FDCWD, "f", 4, &data, NULL, &e) == -EFBIG);
}

typedef struct Trace {
	StrBuf log;
	int top;	  /* the walk's top, for the test that moves a dir */
	const char *skip; /* path whose entries are skipped */
} Trace;

static int trace_visit(void *ud, DirWalkEvent ev, int dfd, const char *name, const char *path,
		       const struct stat *st, KilnError **err)
{
	Trace *t = ud;
	struct stat here;

	(void)err;
	/* dfd is the dir holding name */
	if (fstatat(dfd, name, &here, AT_SYMLINK_NOFOLLOW) < 0 || here.st_ino != st->st_ino)
		strbuf_adds(&t->log, "BADFD ");
	strbuf_adds(&t->log, ev == DIR_WALK_ENTRY ? "E:" : "L:");
	strbuf_adds(&t->log, path);
	strbuf_addc(&t->log, ' ');
	return t->skip && strcmp(path, t->skip) == 0 ? 1 : 0;
}

static void tree_small(void)
{
	mkdir("t", 0755);
	mkdir("t/a", 0755);
	mkdir("t/a/y", 0755);
	CHECK(write_file_atomic_at(AT_FDCWD, "t/a/x", "x", 1, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "t/a/y/z", "z", 1, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "t/b", "b", 1, 0644, NULL) == 0);
	CHECK(symlinkat("a", AT_FDCWD, "t/c") == 0);
}

TEST(dir_walk_order_events_and_skip)
{
	_cleanup_close_ int top = -1;
	_cleanup_strbuf_ StrBuf log2 = {0};
	Trace t = {0};

	tree_small();
	top = open("t", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(dir_walk(top, "", 0, trace_visit, &t, NULL) == 0);
	CHECK_EQ_STR(t.log.s, "E:a E:a/x E:a/y E:a/y/z L:a/y L:a E:b E:c ");
	strbuf_done(&t.log);
	t.skip = "top/a/y";
	CHECK(dir_walk(top, "top", 0, trace_visit, &t, NULL) == 0);
	CHECK_EQ_STR(t.log.s, "E:top/a E:top/a/x E:top/a/y L:top/a E:top/b E:top/c ");
	strbuf_done(&t.log);
	/* the top fd stays usable and at its position */
	CHECK(faccessat(top, "a/y/z", F_OK, 0) == 0);
}

static int move_visit(void *ud, DirWalkEvent ev, int dfd, const char *name, const char *path,
		      const struct stat *st, KilnError **err)
{
	Trace *t = ud;

	(void)dfd, (void)name, (void)st, (void)err;
	if (ev == DIR_WALK_ENTRY && strcmp(path, "a/y/z") == 0 &&
	    renameat(t->top, "a/y", t->top, "y2") < 0)
		return -errno;
	return 0;
}

TEST(dir_walk_refuses_a_dir_moved_under_it)
{
	_cleanup_error_ KilnError *e = NULL;
	Trace t = {0};

	tree_small();
	t.top = open("t", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/* ".." of a/y is now the top, not a: going up there would leave the tree it walks */
	CHECK_EQ_INT(dir_walk(t.top, "", 0, move_visit, &t, &e), -ESTALE);
	CHECK(e && strstr(e->message, "'a/y' was moved"));
	close(t.top);
}

static int count_visit(void *ud, DirWalkEvent ev, int dfd, const char *name, const char *path,
		       const struct stat *st, KilnError **err)
{
	(void)dfd, (void)name, (void)path, (void)st, (void)err;
	*(int *)ud += ev == DIR_WALK_ENTRY;
	return 0;
}

static int deep_count(void *ud)
{
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_close_ int top = open("deep", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int n = 0, r = dir_walk(top, "", 0, count_visit, &n, &e);

	if (r < 0)
		printf("#   dir_walk: %s\n", e->message);
	*(int *)ud = n;
	return r < 0 || n != DEEP_DEPTH ? 1 : 0;
}

static int deep_remove(void *ud)
{
	_cleanup_error_ KilnError *e = NULL;
	int r = rm_rf_at(AT_FDCWD, ud, &e);

	if (r < 0)
		printf("#   rm_rf_at: %s\n", e->message);
	return r < 0 || faccessat(AT_FDCWD, ud, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

TEST(dir_walk_and_rm_rf_any_depth_bounded_fds)
{
	int n = 0;

	CHECK_EQ_INT(deep_tree_make(AT_FDCWD, "deep", DEEP_DEPTH), 0);
	CHECK_EQ_INT(deep_run_limited(deep_count, &n), 0);
	CHECK_EQ_INT(deep_run_limited(deep_remove, "deep"), 0);
}

TEST(rm_rf_opens_unreadable_dirs)
{
	mkdir("r", 0755);
	mkdir("r/locked", 0755);
	CHECK(write_file_atomic_at(AT_FDCWD, "r/locked/f", "f", 1, 0644, NULL) == 0);
	chmod("r/locked", 0);
	CHECK(rm_rf_at(AT_FDCWD, "r", NULL) == 0);
	CHECK(access("r", F_OK) < 0 && errno == ENOENT);
}

int main(void)
{
	RUN(digest_known_value);
	RUN(digest_validation);
	RUN(streaming_digest_matches_oneshot);
	RUN(error_wrap_keeps_first_code);
	RUN(atomic_write_and_read);
	RUN(read_limit);
	RUN(dir_walk_order_events_and_skip);
	RUN(dir_walk_refuses_a_dir_moved_under_it);
	RUN(dir_walk_and_rm_rf_any_depth_bounded_fds);
	RUN(rm_rf_opens_unreadable_dirs);
	return tap_done();
}
