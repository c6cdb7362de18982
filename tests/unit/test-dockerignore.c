#include "builder/dockerignore.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "tap.h"

static DockerIgnore *parse(const char *text)
{
	DockerIgnore *di = NULL;
	_cleanup_error_ KilnError *err = NULL;

	if (dockerignore_parse(text, strlen(text), &di, &err) < 0) {
		printf("# parse failed: %s\n", err->message);
		return NULL;
	}
	return di;
}

TEST(star)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = parse("*.log\n");

	CHECK(di);
	if (!di)
		return;
	CHECK(dockerignore_excluded(di, "a.log"));
	CHECK(!dockerignore_excluded(di, "a.txt"));
	/* '*' does not cross '/' */
	CHECK(!dockerignore_excluded(di, "sub/a.log"));
}

TEST(double_star_prefix)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = parse("**/node_modules\n**.tmp\n");

	CHECK(di);
	if (!di)
		return;
	CHECK(dockerignore_excluded(di, "node_modules"));
	CHECK(dockerignore_excluded(di, "a/b/node_modules"));
	CHECK(dockerignore_excluded(di, "a/node_modules/pkg/index.js"));
	CHECK(!dockerignore_excluded(di, "a/xnode_modules"));
	CHECK(dockerignore_excluded(di, "deep/down/x.tmp"));
}

TEST(double_star_middle_and_end)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = parse("a/**/b\nc/**\n");

	CHECK(di);
	if (!di)
		return;
	CHECK(dockerignore_excluded(di, "a/b"));
	CHECK(dockerignore_excluded(di, "a/x/b"));
	CHECK(dockerignore_excluded(di, "a/x/y/b"));
	CHECK(!dockerignore_excluded(di, "a/x/yb"));
	CHECK(dockerignore_excluded(di, "c/x"));
	CHECK(dockerignore_excluded(di, "c/x/y"));
	CHECK(!dockerignore_excluded(di, "c"));
}

TEST(exceptions_last_wins)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = parse("*.md\n!README.md\nREADME*\n");
	_cleanup_(dockerignore_freep) DockerIgnore *di2 = parse("*.md\n!README.md\n");

	CHECK(di && di2);
	if (!di || !di2)
		return;
	CHECK(dockerignore_excluded(di, "CHANGES.md"));
	CHECK(dockerignore_excluded(di, "README.md"));
	CHECK(dockerignore_excluded(di2, "CHANGES.md"));
	CHECK(!dockerignore_excluded(di2, "README.md"));
}

TEST(parent_directory_excludes_children)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = parse("build\n/secret/\n./tmp/../cache\n");

	CHECK(di);
	if (!di)
		return;
	CHECK(dockerignore_excluded(di, "build"));
	CHECK(dockerignore_excluded(di, "build/out/x.o"));
	CHECK(dockerignore_excluded(di, "secret/key"));
	CHECK(dockerignore_excluded(di, "cache/a"));
	CHECK(!dockerignore_excluded(di, "src/build"));
	CHECK(!dockerignore_excluded(di, "buildx"));
}

TEST(comments_whitespace_classes)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di =
	    parse("# comment\n\n   \n  file[0-9].txt  \r\nx?z\n[^a]b\n\\*lit\n");

	CHECK(di);
	if (!di)
		return;
	CHECK(!dockerignore_excluded(di, "# comment"));
	CHECK(dockerignore_excluded(di, "file3.txt"));
	CHECK(!dockerignore_excluded(di, "filex.txt"));
	CHECK(dockerignore_excluded(di, "xyz"));
	CHECK(!dockerignore_excluded(di, "x/z"));
	CHECK(dockerignore_excluded(di, "cb"));
	CHECK(!dockerignore_excluded(di, "ab"));
	CHECK(dockerignore_excluded(di, "*lit"));
	CHECK(!dockerignore_excluded(di, "xlit"));
}

TEST(exception_below_excluded_dir)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di =
	    parse("vendor\n!vendor/keep/**\ndocs\n!**/*.go\nlogs\n");

	CHECK(di);
	if (!di)
		return;
	CHECK(dockerignore_excluded(di, "vendor/x"));
	CHECK(!dockerignore_excluded(di, "vendor/keep/a"));
	CHECK(dockerignore_may_include_below(di, "vendor"));
	CHECK(dockerignore_may_include_below(di, "vendor/keep"));
	/* "**" exceptions could match anywhere */
	CHECK(dockerignore_may_include_below(di, "logs"));
}

TEST(may_include_below_false)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di =
	    parse("vendor\nlogs\n!vendor/keep\n!*.md\n");

	CHECK(di);
	if (!di)
		return;
	CHECK(!dockerignore_may_include_below(di, "logs"));
	CHECK(dockerignore_may_include_below(di, "vendor"));
	CHECK(!dockerignore_may_include_below(di, "vendor/other"));
	CHECK(dockerignore_may_include_below(di, "vendor/keep"));
}

TEST(malformed_pattern)
{
	DockerIgnore *di = NULL;
	_cleanup_error_ KilnError *err = NULL, *err2 = NULL, *err3 = NULL;
	const char *text = "ok\n# fine\nbad[\n";

	CHECK(dockerignore_parse(text, strlen(text), &di, &err) < 0);
	CHECK(di == NULL);
	CHECK(err && strstr(err->message, "line 3"));
	CHECK(err && strstr(err->message, "bad["));
	CHECK(dockerignore_parse("x\\", 2, &di, &err2) < 0);
	CHECK(dockerignore_parse("!\n", 2, &di, &err3) < 0);
	CHECK(err3 && strstr(err3->message, "line 1"));
}

TEST(empty_matches_nothing)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = parse("");

	CHECK(di);
	if (di)
		CHECK(!dockerignore_excluded(di, "anything"));
}

TEST(pattern_count_capped_and_quotes_escaped)
{
	StrBuf b = {0};
	DockerIgnore *di = NULL;
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;

	for (int i = 0; i <= DOCKERIGNORE_MAX_PATTERNS; i++)
		strbuf_adds(&b, "a\n");
	_cleanup_free_ char *text = strbuf_steal(&b);
	CHECK(dockerignore_parse(text, strlen(text) - 2, &di, NULL) == 0);
	dockerignore_free(TAKE_PTR(di));
	CHECK(dockerignore_parse(text, strlen(text), &di, &e) == -E2BIG);
	CHECK(e && strstr(e->message, "more than 4096 patterns (line 4097)"));
	const char *bad = "[\x1b[2J";
	CHECK(dockerignore_parse(bad, strlen(bad), &di, &e2) < 0);
	CHECK(e2 && strstr(e2->message, "'[\\x1b[2J'"));
}

int main(void)
{
	RUN(star);
	RUN(double_star_prefix);
	RUN(double_star_middle_and_end);
	RUN(exceptions_last_wins);
	RUN(parent_directory_excludes_children);
	RUN(comments_whitespace_classes);
	RUN(exception_below_excluded_dir);
	RUN(may_include_below_false);
	RUN(malformed_pattern);
	RUN(empty_matches_nothing);
	RUN(pattern_count_capped_and_quotes_escaped);
	return tap_done();
}
