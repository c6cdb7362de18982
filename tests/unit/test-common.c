#include "common/cleanup.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/fdutil.h"
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

int main(void)
{
	RUN(digest_known_value);
	RUN(digest_validation);
	RUN(streaming_digest_matches_oneshot);
	RUN(error_wrap_keeps_first_code);
	RUN(atomic_write_and_read);
	RUN(read_limit);
	return tap_done();
}
