/* layers/reference.c: the distribution reference grammar, docker's normalization, the forms. The
 * tables follow github.com/distribution/reference (reference_test.go, normalize_test.go), read
 * through ParseNormalizedNamed + TagNameOnly, which is what docker does with what users type. */
#include <string.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/reference.h"
#include "tap.h"

#define F64 "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
#define D64 "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"

typedef struct Case {
	const char *in;
	const char *domain, *path, *tag, *digest; /* tag/digest "" when absent */
	const char *canonical, *familiar;
} Case;

static const Case good[] = {
    {"busybox", "docker.io", "library/busybox", "latest", "", "docker.io/library/busybox:latest",
     "busybox:latest"},
    {"busybox:1.36", "docker.io", "library/busybox", "1.36", "", "docker.io/library/busybox:1.36",
     "busybox:1.36"},
    {"docker.io/library/busybox:1.36", "docker.io", "library/busybox", "1.36", "",
     "docker.io/library/busybox:1.36", "busybox:1.36"},
    {"index.docker.io/library/busybox:1.36", "docker.io", "library/busybox", "1.36", "",
     "docker.io/library/busybox:1.36", "busybox:1.36"},
    {"registry-1.docker.io/busybox:1.36", "docker.io", "library/busybox", "1.36", "",
     "docker.io/library/busybox:1.36", "busybox:1.36"},
    {"docker.io/busybox", "docker.io", "library/busybox", "latest", "",
     "docker.io/library/busybox:latest", "busybox:latest"},
    {"index.docker.io/debian", "docker.io", "library/debian", "latest", "",
     "docker.io/library/debian:latest", "debian:latest"},
    {"library/debian", "docker.io", "library/debian", "latest", "",
     "docker.io/library/debian:latest", "debian:latest"},
    {"docker/docker", "docker.io", "docker/docker", "latest", "", "docker.io/docker/docker:latest",
     "docker/docker:latest"},
    {"index.docker.io/docker/docker", "docker.io", "docker/docker", "latest", "",
     "docker.io/docker/docker:latest", "docker/docker:latest"},
    {"docker.io/library/foo/bar", "docker.io", "library/foo/bar", "latest", "",
     "docker.io/library/foo/bar:latest", "library/foo/bar:latest"},
    {"store/foo/bar", "docker.io", "store/foo/bar", "latest", "", "docker.io/store/foo/bar:latest",
     "store/foo/bar:latest"},
    {"other/library", "docker.io", "other/library", "latest", "", "docker.io/other/library:latest",
     "other/library:latest"},
    {"busybox@sha256:" D64, "docker.io", "library/busybox", "", "sha256:" D64,
     "docker.io/library/busybox@sha256:" D64, "busybox@sha256:" D64},
    {"busybox:latest@sha256:" D64, "docker.io", "library/busybox", "latest", "sha256:" D64,
     "docker.io/library/busybox:latest@sha256:" D64, "busybox:latest@sha256:" D64},
    {"test_com", "docker.io", "library/test_com", "latest", "", "docker.io/library/test_com:latest",
     "test_com:latest"},
    {"test.com:tag", "docker.io", "library/test.com", "tag", "", "docker.io/library/test.com:tag",
     "test.com:tag"},
    {"test.com:5000", "docker.io", "library/test.com", "5000", "",
     "docker.io/library/test.com:5000", "test.com:5000"},
    {"test.com/repo:tag", "test.com", "repo", "tag", "", "test.com/repo:tag", "test.com/repo:tag"},
    {"test:5000/repo", "test:5000", "repo", "latest", "", "test:5000/repo:latest",
     "test:5000/repo:latest"},
    {"test:5000/repo@sha256:" F64, "test:5000", "repo", "", "sha256:" F64,
     "test:5000/repo@sha256:" F64, "test:5000/repo@sha256:" F64},
    {"test:5000/repo:tag@sha256:" F64, "test:5000", "repo", "tag", "sha256:" F64,
     "test:5000/repo:tag@sha256:" F64, "test:5000/repo:tag@sha256:" F64},
    {"lowercase:Uppercase", "docker.io", "library/lowercase", "Uppercase", "",
     "docker.io/library/lowercase:Uppercase", "lowercase:Uppercase"},
    {"sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com", "bar/baz/quux",
     "some-long-tag", "", "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
     "sub-dom1.foo.com/bar/baz/quux:some-long-tag"},
    {"b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app",
     "test.example.com", "", "b.gcr.io/test.example.com/my-app:test.example.com",
     "b.gcr.io/test.example.com/my-app:test.example.com"},
    {"xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", "",
     "xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com"},
    {"foo_bar.com:8080", "docker.io", "library/foo_bar.com", "8080", "",
     "docker.io/library/foo_bar.com:8080", "foo_bar.com:8080"},
    {"foo/foo_bar.com:8080", "docker.io", "foo/foo_bar.com", "8080", "",
     "docker.io/foo/foo_bar.com:8080", "foo/foo_bar.com:8080"},
    {"192.168.1.1", "docker.io", "library/192.168.1.1", "latest", "",
     "docker.io/library/192.168.1.1:latest", "192.168.1.1:latest"},
    {"192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050", "",
     "192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050"},
    {"127.0.0.1:5000/library/debian", "127.0.0.1:5000", "library/debian", "latest", "",
     "127.0.0.1:5000/library/debian:latest", "127.0.0.1:5000/library/debian:latest"},
    {"[2001:db8::1]/repo", "[2001:db8::1]", "repo", "latest", "", "[2001:db8::1]/repo:latest",
     "[2001:db8::1]/repo:latest"},
    {"[2001:db8::1]:5000/repo:tag@sha256:" F64, "[2001:db8::1]:5000", "repo", "tag", "sha256:" F64,
     "[2001:db8::1]:5000/repo:tag@sha256:" F64, "[2001:db8::1]:5000/repo:tag@sha256:" F64},
    {"[::1]:5000/repo", "[::1]:5000", "repo", "latest", "", "[::1]:5000/repo:latest",
     "[::1]:5000/repo:latest"},
    {"localhost/app:v1", "localhost", "app", "v1", "", "localhost/app:v1", "localhost/app:v1"},
    {"localhost:5000/app", "localhost:5000", "app", "latest", "", "localhost:5000/app:latest",
     "localhost:5000/app:latest"},
    {"Docker/docker", "Docker", "docker", "latest", "", "Docker/docker:latest",
     "Docker/docker:latest"},
    {"FOO/bar", "FOO", "bar", "latest", "", "FOO/bar:latest", "FOO/bar:latest"},
    {"Reg.IO:443/a", "Reg.IO:443", "a", "latest", "", "Reg.IO:443/a:latest", "Reg.IO:443/a:latest"},
    {"docker.io/" D64, "docker.io", "library/" D64, "latest", "",
     "docker.io/library/" D64 ":latest", D64 ":latest"},
    {"thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "docker.io",
     "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev", "latest", "",
     "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest",
     "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest"},
    {"docker---rules/docker", "docker.io", "docker---rules/docker", "latest", "",
     "docker.io/docker---rules/docker:latest", "docker---rules/docker:latest"},
    {"dock__er/docker", "docker.io", "dock__er/docker", "latest", "",
     "docker.io/dock__er/docker:latest", "dock__er/docker:latest"},
    {"my-org/my_app__x.y:1.0-rc_1", "docker.io", "my-org/my_app__x.y", "1.0-rc_1", "",
     "docker.io/my-org/my_app__x.y:1.0-rc_1", "my-org/my_app__x.y:1.0-rc_1"},
    {"a--b/c", "docker.io", "a--b/c", "latest", "", "docker.io/a--b/c:latest", "a--b/c:latest"},
    {"d/docker", "docker.io", "d/docker", "latest", "", "docker.io/d/docker:latest",
     "d/docker:latest"},
    {"app:_x", "docker.io", "library/app", "_x", "", "docker.io/library/app:_x", "app:_x"},
};

/* Each with the words the error must hold. */
static const struct {
	const char *in, *why;
} bad[] = {
    {"", "empty"},
    {":justtag", "no repository"},
    {"@sha256:" F64, "no repository"},
    {"repo@sha256:ffffffffffffffffffffffffffffffffff", "invalid sha256 digest"},
    {"validname@invaliddigest:" F64, "digest algorithm 'invaliddigest' is not supported"},
    {"xn--7o8h.com/myimage:xn--7o8h.com@sha512:" F64 F64,
     "digest algorithm 'sha512' is not supported"},
    {"repo@sha256:" D64 "00", "invalid sha256 digest"},
    {"repo@sha256:DBCC1C35AC38DF41FD2F5E4130B32FFDB93EBAE8B3DBE638C23575912276FC9C",
     "invalid sha256 digest"},
    {"Uppercase:tag", "must be lowercase"},
    {"App", "must be lowercase"},
    {"test:5000/Uppercase/lowercase:tag", "must be lowercase"},
    {"docker/Docker", "must be lowercase"},
    {"docker.io/docker/Docker", "must be lowercase"},
    {"aa/asdf$$^/aa", "components"},
    {"https://github.com/docker/docker", "domain"},
    {"-docker", "components"},
    {"-docker/docker", "components"},
    {"-docker.io/docker/docker", "domain"},
    {"docker-/docker", "components"},
    {"docker///docker", "components"},
    {"docker.io/docker///docker", "components"},
    {"____/____", "components"},
    {"_docker/_docker", "components"},
    {"dock..er/docker", "domain"},
    {"dock_.er/docker", "domain"},
    {"dock-.er/docker", "domain"},
    {"a___b", "components"},
    {"-a", "components"},
    {"a-", "components"},
    {"a..b", "components"},
    {"docker/", "components"},
    {"a/", "components"},
    {"/a", "components"},
    {"a//b", "components"},
    {"reg.io/", "components"},
    {"reg..io/a", "domain"},
    {"reg.io:/a", "domain"},
    {"reg.io:99999999/a", "domain"},
    {"reg.io:0/a", "domain"},
    {"[2001:db8::1]", "invalid tag"},
    {"[2001:db8::1]:5000", "components"},
    {"[fc00::1]", "invalid tag"},
    {"fc00::1:5000/debian", "domain"},
    {"[fe80::1%eth0]:5000/repo", "domain"},
    {"[2001:db8:3:4::192.0.2.33]:5000/debian", "domain"},
    {"[]:5000/repo", "domain"},
    {"app:", "invalid tag"},
    {"app:-x", "invalid tag"},
    {"app:.x", "invalid tag"},
    {"a:b:c", "components"},
    {"a b", "components"},
    {"a\tb", "components"},
    {D64, "image id"},
    {"1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "image id"},
};

TEST(parse_table)
{
	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		const Case *c = &good[i];
		_cleanup_error_ KilnError *e = NULL;
		Reference r;
		if (ref_parse(c->in, &r, &e) < 0) {
			printf("#   '%s' refused: %s\n", c->in, e->message);
			tap_cur_failed = 1;
			continue;
		}
		_cleanup_free_ char *canon = ref_string(&r), *fam = ref_familiar(&r);
		CHECK_EQ_STR(r.domain, c->domain);
		CHECK_EQ_STR(r.path, c->path);
		CHECK_EQ_STR(r.tag, c->tag);
		CHECK_EQ_STR(r.digest, c->digest);
		CHECK_EQ_STR(canon, c->canonical);
		CHECK_EQ_STR(fam, c->familiar);
		/* the canonical and familiar forms read back as the same reference */
		Reference again;
		CHECK(ref_parse(canon, &again, NULL) == 0 && ref_equal(&r, &again));
		CHECK(ref_parse(fam, &again, NULL) == 0 && ref_equal(&r, &again));
	}
}

TEST(refused_table)
{
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		Reference r;
		int k = ref_parse(bad[i].in, &r, &e);
		if (k >= 0) {
			_cleanup_free_ char *s = ref_string(&r);
			printf("#   '%s' accepted as '%s'\n", bad[i].in, s);
			tap_cur_failed = 1;
			continue;
		}
		CHECK(e && e->code == KILN_EUSAGE);
		if (e && !strstr(e->message, bad[i].why)) {
			printf("#   '%s': '%s' lacks '%s'\n", bad[i].in, e->message, bad[i].why);
			tap_cur_failed = 1;
		}
	}
}

TEST(length_limits)
{
	char buf[600];
	Reference r;
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL, *e3 = NULL;

	/* "docker.io/" + 245 bytes of path = 255: fits; one more does not */
	strcpy(buf, "a/");
	memset(buf + 2, 'a', 241);
	strcpy(buf + 243, "/b");
	CHECK(ref_parse(buf, &r, NULL) == 0 && strlen(r.domain) + 1 + strlen(r.path) == 255);
	strcpy(buf + 243, "/bb");
	CHECK(ref_parse(buf, &r, &e) < 0 && strstr(e->message, "longer than 255"));
	/* one-part names get "library/": 237 + 18 = 255 */
	memset(buf, 'a', 237);
	buf[237] = 0;
	CHECK(ref_parse(buf, &r, NULL) == 0);
	strcpy(buf + 237, "a");
	CHECK(ref_parse(buf, &r, &e2) < 0);
	/* a tag of 128 is fine, 129 is not; the tag does not count towards the 255 */
	strcpy(buf, "app:");
	memset(buf + 4, 't', 128);
	buf[132] = 0;
	CHECK(ref_parse(buf, &r, NULL) == 0 && strlen(r.tag) == 128);
	strcpy(buf + 132, "t");
	CHECK(ref_parse(buf, &r, NULL) < 0);
	/* what an error quotes is bounded and escaped */
	memset(buf, 'A', 599);
	buf[599] = 0;
	CHECK(ref_parse(buf, &r, &e3) < 0 && strlen(e3->message) < 400);
	_cleanup_error_ KilnError *e4 = NULL;
	CHECK(ref_parse("a\x01\xff'b", &r, &e4) < 0 && strstr(e4->message, "a\\x01\\xff\\x27b"));
}

TEST(names_and_equivalence)
{
	static const char *const same[] = {"busybox:1.36", "docker.io/library/busybox:1.36",
					   "index.docker.io/library/busybox:1.36",
					   "registry-1.docker.io/library/busybox:1.36",
					   "docker.io/busybox:1.36"};
	Reference a, b;
	_cleanup_free_ char *first = NULL;
	_cleanup_error_ KilnError *e = NULL;

	for (size_t i = 0; i < ELEMENTSOF(same); i++) {
		_cleanup_free_ char *c = NULL;
		CHECK(ref_canonical_name(same[i], &c, NULL) == 0);
		CHECK_EQ_STR(c, "docker.io/library/busybox:1.36");
	}
	CHECK(ref_parse("busybox", &a, NULL) == 0 && ref_parse("busybox:latest", &b, NULL) == 0);
	CHECK(ref_equal(&a, &b));
	CHECK(ref_parse("busybox:1", &b, NULL) == 0 && !ref_equal(&a, &b));
	CHECK(ref_parse("me/busybox", &b, NULL) == 0 && !ref_equal(&a, &b));
	CHECK(ref_parse_name("busybox@sha256:" D64, &a, &e) < 0);
	CHECK(e && e->code == KILN_EUSAGE && strstr(e->message, "cannot hold a digest"));
	_cleanup_free_ char *repo = NULL;
	CHECK(ref_parse("reg.io:5000/a/b:t@sha256:" D64, &a, NULL) == 0);
	repo = ref_repository(&a);
	CHECK_EQ_STR(repo, "reg.io:5000/a/b");
	CHECK_EQ_STR(ref_registry_host("docker.io"), "registry-1.docker.io");
	CHECK_EQ_STR(ref_registry_host("reg.io:5000"), "reg.io:5000");
	CHECK_EQ_STR(ref_registry_host("localhost"), "localhost");
}

int main(void)
{
	RUN(parse_table);
	RUN(refused_table);
	RUN(length_limits);
	RUN(names_and_equivalence);
	return tap_done();
}
