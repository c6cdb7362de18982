#include <sys/utsname.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "platforms/platform.h"
#include "tap.h"

static void check_parse(const char *in, const char *want)
{
	Platform p;
	char out[PLATFORM_STRING_MAX];
	_cleanup_error_ KilnError *e = NULL;

	if (platform_parse(in, &p, &e) < 0) {
		printf("#   parse '%s' failed: %s\n", in, e ? e->message : "?");
		tap_cur_failed = 1;
		return;
	}
	platform_format(&p, out, sizeof(out));
	CHECK_EQ_STR(out, want);
}

TEST(parse_normalise_table)
{
	check_parse("linux/amd64", "linux/amd64");
	check_parse("linux/x86_64", "linux/amd64");
	check_parse("linux/x86-64", "linux/amd64");
	check_parse("linux/amd64/v1", "linux/amd64");
	check_parse("linux/amd64/v3", "linux/amd64/v3");
	check_parse("linux/aarch64", "linux/arm64");
	check_parse("linux/arm64/v8", "linux/arm64");
	check_parse("linux/arm64/8", "linux/arm64");
	check_parse("linux/arm64/v9", "linux/arm64/v9");
	check_parse("linux/armhf", "linux/arm/v7");
	check_parse("linux/armel", "linux/arm/v6");
	check_parse("linux/arm", "linux/arm/v7");
	check_parse("linux/arm/7", "linux/arm/v7");
	check_parse("linux/arm/v5", "linux/arm/v5");
	check_parse("linux/armv6l", "linux/arm/v6");
	check_parse("linux/i386", "linux/386");
	check_parse("linux/i686", "linux/386");
	check_parse("Linux/AMD64", "linux/amd64");
	check_parse("arm64", "linux/arm64");
	check_parse("riscv64", "linux/riscv64");
	check_parse("linux/s390x", "linux/s390x");
	check_parse("linux/ppc64le", "linux/ppc64le");
	check_parse("windows/amd64", "windows/amd64");
}

TEST(parse_known_os_alone_uses_host_arch)
{
	Platform p, host;

	CHECK(platform_parse("linux", &p, NULL) == 0);
	platform_host(&host);
	CHECK(platform_equal(&p, &host));
}

TEST(parse_bad_strings)
{
	static const char *const bad[] = {
	    "",
	    "/",
	    "linux/",
	    "/amd64",
	    "linux//amd64",
	    "linux/amd64/v8/x",
	    "linux/am d64",
	    "linux/amd64/",
	    "linux/a$m",
	    "linux/arm/aaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		Platform p;
		int r = platform_parse(bad[i], &p, &e);
		CHECK(r < 0);
		if (r < 0) {
			CHECK(e && strstr(e->message, bad[i]));
			CHECK_EQ_INT(kiln_error_exit_status(e), 2);
		} else
			printf("#   '%s' was accepted\n", bad[i]);
	}
	CHECK(platform_parse(NULL, &(Platform){0}, NULL) < 0);
}

static int score(const char *want, const char *have)
{
	Platform w, h;

	if (platform_parse(want, &w, NULL) < 0 || platform_parse(have, &h, NULL) < 0)
		return -1000;
	return platform_match_score(&w, &h);
}

TEST(match_scores)
{
	CHECK_EQ_INT(score("linux/amd64", "linux/amd64"), 100);
	CHECK_EQ_INT(score("linux/amd64", "linux/arm64"), -1);
	CHECK_EQ_INT(score("linux/amd64", "windows/amd64"), -1);
	CHECK_EQ_INT(score("linux/arm64", "linux/arm64/v8"), 100);
	CHECK_EQ_INT(score("linux/arm64/v8", "linux/aarch64"), 100);
	CHECK_EQ_INT(score("linux/arm/v7", "linux/arm/v7"), 100);
	CHECK_EQ_INT(score("linux/arm/v7", "linux/arm/v6"), 90);
	CHECK_EQ_INT(score("linux/arm/v7", "linux/arm/v5"), 80);
	CHECK_EQ_INT(score("linux/arm/v6", "linux/arm/v7"), -1);
	CHECK_EQ_INT(score("linux/arm/v6", "linux/arm/v5"), 90);
	CHECK_EQ_INT(score("linux/amd64/v3", "linux/amd64"), 80);
	CHECK_EQ_INT(score("linux/amd64/v3", "linux/amd64/v2"), 90);
	CHECK_EQ_INT(score("linux/amd64", "linux/amd64/v2"), -1);
	CHECK_EQ_INT(score("linux/riscv64", "linux/riscv64"), 100);
	CHECK(score("linux/arm/v7", "linux/arm/v6") > score("linux/arm/v7", "linux/arm/v5"));
}

TEST(match_from_unnormalised_parts)
{
	Platform want, have;

	/* An index entry written as {"architecture":"arm"} with no variant means v7. */
	CHECK(platform_from_parts("linux", "arm", NULL, &have, NULL) == 0);
	CHECK(platform_parse("linux/arm/v7", &want, NULL) == 0);
	CHECK_EQ_INT(platform_match_score(&want, &have), 100);
	CHECK(platform_from_parts("linux", "aarch64", "v8", &have, NULL) == 0);
	CHECK_EQ_STR(have.arch, "arm64");
	CHECK_EQ_STR(have.variant, "");
	CHECK(platform_from_parts("linux", "", NULL, &have, NULL) < 0);
	CHECK(platform_from_parts(NULL, "amd64", NULL, &have, NULL) < 0);
}

TEST(host_platform)
{
	Platform p;
	char out[PLATFORM_STRING_MAX];
	struct utsname u;

	platform_host(&p);
	CHECK_EQ_STR(p.os, "linux");
	CHECK(uname(&u) == 0);
	if (!strcmp(u.machine, "x86_64"))
		CHECK_EQ_STR(p.arch, "amd64");
	else if (!strcmp(u.machine, "aarch64"))
		CHECK_EQ_STR(p.arch, "arm64");
	platform_format(&p, out, sizeof(out));
	CHECK(!strncmp(out, "linux/", 6));
}

TEST(format_truncates_safely)
{
	Platform p;
	char small[8];

	CHECK(platform_parse("linux/arm/v7", &p, NULL) == 0);
	platform_format(&p, small, sizeof(small));
	CHECK_EQ_STR(small, "linux/a");
}

int main(void)
{
	RUN(parse_normalise_table);
	RUN(parse_known_os_alone_uses_host_arch);
	RUN(parse_bad_strings);
	RUN(match_scores);
	RUN(match_from_unnormalised_parts);
	RUN(host_platform);
	RUN(format_truncates_safely);
	return tap_done();
}
