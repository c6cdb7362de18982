#include "builder/expand.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "tap.h"

/* Variables: A=hello, E="" (set, empty), P=/usr/local/bin/tool.tar.gz, S="a  b", B=bee */
static const char *lookup(void *userdata, const char *name)
{
	(void)userdata;
	if (strcmp(name, "A") == 0)
		return "hello";
	if (strcmp(name, "E") == 0)
		return "";
	if (strcmp(name, "P") == 0)
		return "/usr/local/bin/tool.tar.gz";
	if (strcmp(name, "S") == 0)
		return "a  b";
	if (strcmp(name, "B") == 0)
		return "bee";
	if (strcmp(name, "X") == 0)
		return "aXbXc";
	return NULL;
}

/* expand_word with '\' as escape; returns a static-ish string ("<error: msg>" on failure). */
static char last[512];
static const char *ew_esc(const char *word, char esc)
{
	_cleanup_error_ KilnError *err = NULL;
	_cleanup_free_ char *out = NULL;

	if (expand_word(word, esc, lookup, NULL, &out, &err) < 0)
		snprintf(last, sizeof(last), "<error: %s>", err->message);
	else
		snprintf(last, sizeof(last), "%s", out);
	return last;
}

static const char *ew(const char *word)
{
	return ew_esc(word, '\\');
}

TEST(plain_variables)
{
	CHECK_EQ_STR(ew("$A"), "hello");
	CHECK_EQ_STR(ew("${A}"), "hello");
	CHECK_EQ_STR(ew("x$A-y"), "xhello-y");
	CHECK_EQ_STR(ew("${A}_x"), "hello_x");
	CHECK_EQ_STR(ew("$A_x"), "");
	CHECK_EQ_STR(ew("$UNSET"), "");
	CHECK_EQ_STR(ew("cost: $"), "cost: $");
	CHECK_EQ_STR(ew("$/x"), "$/x");
	CHECK_EQ_STR(ew("  spaced  $S  "), "  spaced  a  b  ");
}

TEST(default_and_alternative)
{
	CHECK_EQ_STR(ew("${UNSET:-dflt}"), "dflt");
	CHECK_EQ_STR(ew("${E:-dflt}"), "dflt");
	CHECK_EQ_STR(ew("${E-dflt}"), "");
	CHECK_EQ_STR(ew("${UNSET-dflt}"), "dflt");
	CHECK_EQ_STR(ew("${A:-dflt}"), "hello");
	CHECK_EQ_STR(ew("${A:+alt}"), "alt");
	CHECK_EQ_STR(ew("${E:+alt}"), "");
	CHECK_EQ_STR(ew("${E+alt}"), "alt");
	CHECK_EQ_STR(ew("${UNSET+alt}"), "");
	CHECK_EQ_STR(ew("${UNSET:-a b}"), "a b");
}

TEST(nested)
{
	CHECK_EQ_STR(ew("${UNSET:-${B}}"), "bee");
	CHECK_EQ_STR(ew("${UNSET:-${ALSO:-deep}}"), "deep");
	CHECK_EQ_STR(ew("${A:+[${B}]}"), "[bee]");
	CHECK_EQ_STR(ew("${UNSET:-\"q}\"}"), "q}");
}

TEST(required)
{
	CHECK_EQ_STR(ew("${A:?must}"), "hello");
	CHECK_EQ_STR(ew("${UNSET:?must be set}"), "<error: UNSET: must be set>");
	CHECK_EQ_STR(ew("${E:?}"), "<error: E: is not allowed to be empty>");
	CHECK_EQ_STR(ew("${E?}"), "");
	CHECK_EQ_STR(ew("${UNSET?}"), "<error: UNSET: is not allowed to be unset>");
}

TEST(prefix_suffix)
{
	CHECK_EQ_STR(ew("${P#*/}"), "usr/local/bin/tool.tar.gz");
	CHECK_EQ_STR(ew("${P##*/}"), "tool.tar.gz");
	CHECK_EQ_STR(ew("${P%.*}"), "/usr/local/bin/tool.tar");
	CHECK_EQ_STR(ew("${P%%.*}"), "/usr/local/bin/tool");
	CHECK_EQ_STR(ew("${P#nomatch}"), "/usr/local/bin/tool.tar.gz");
	CHECK_EQ_STR(ew("${A#h?l}"), "lo");
	CHECK_EQ_STR(ew("${A%[lo]}"), "hell");
	CHECK_EQ_STR(ew("${A%%[!h]*}"), "h");
	CHECK_EQ_STR(ew("${UNSET#x}"), "");
	CHECK_EQ_STR(ew("${A:#x}"), "<error: unsupported modifier (:#) in substitution>");
}

TEST(replace)
{
	CHECK_EQ_STR(ew("${X/X/-}"), "a-bXc");
	CHECK_EQ_STR(ew("${X//X/-}"), "a-b-c");
	CHECK_EQ_STR(ew("${X//X/}"), "abc");
	CHECK_EQ_STR(ew("${P/*\\//}"), "tool.tar.gz");
	CHECK_EQ_STR(ew("${A/l*/p}"), "hep");
	CHECK_EQ_STR(ew("${A/zz/p}"), "hello");
	CHECK_EQ_STR(ew("${A/l}"), "<error: syntax error: missing '/' in ${}>");
}

TEST(quotes)
{
	CHECK_EQ_STR(ew("'$A'"), "$A");
	CHECK_EQ_STR(ew("\"$A\""), "hello");
	CHECK_EQ_STR(ew("\"a 'b' $A\""), "a 'b' hello");
	CHECK_EQ_STR(ew("'a \"b\"'"), "a \"b\"");
	CHECK_EQ_STR(ew("x\"\"y"), "xy");
	CHECK_EQ_STR(ew("'unterminated"),
		     "<error: unexpected end of statement while looking for matching "
		     "single-quote>");
	CHECK_EQ_STR(ew("\"unterminated"),
		     "<error: unexpected end of statement while looking for matching "
		     "double-quote>");
}

TEST(escapes)
{
	CHECK_EQ_STR(ew("\\$A"), "$A");
	CHECK_EQ_STR(ew("\\\\"), "\\");
	CHECK_EQ_STR(ew("a\\ b"), "a b");
	CHECK_EQ_STR(ew("trailing\\"), "trailing");
	/* in double quotes only " $ \ are escapable */
	CHECK_EQ_STR(ew("\"\\$A \\\" \\\\ \\n\""), "$A \" \\ \\n");
	CHECK_EQ_STR(ew("'\\$A'"), "\\$A");
	/* backtick as escape char: a backslash is ordinary */
	CHECK_EQ_STR(ew_esc("C:\\dir\\`$A", '`'), "C:\\dir\\$A");
	CHECK_EQ_STR(ew_esc("\"`\"x`\"\"", '`'), "\"x\"");
}

TEST(errors)
{
	CHECK_EQ_STR(ew("${A"), "<error: syntax error: missing '}'>");
	CHECK_EQ_STR(ew("${"), "<error: syntax error: missing '}'>");
	CHECK_EQ_STR(ew("${}"), "<error: syntax error: bad substitution>");
	CHECK_EQ_STR(ew("${:-x}"), "<error: syntax error: bad substitution>");
	CHECK_EQ_STR(ew("${{A}}"), "<error: syntax error: bad substitution>");
	CHECK_EQ_STR(ew("${A:-x"), "<error: syntax error: missing '}'>");
	CHECK_EQ_STR(ew("${A!}"), "<error: unsupported modifier (!) in substitution>");
	CHECK_EQ_STR(ew("${A:x}"), "<error: unsupported modifier (:x) in substitution>");
}

TEST(words_split)
{
	_cleanup_strv_free_ char **w = NULL;
	_cleanup_error_ KilnError *err = NULL;

	CHECK(expand_words("\"a b\" c  $S 'd e'\"f\" \"$S\" \"\" ${UNSET}", '\\', lookup, NULL, &w,
			   &err) == 0);
	CHECK_EQ_INT(strv_length(w), 6);
	if (strv_length(w) == 6) {
		CHECK_EQ_STR(w[0], "a b");
		CHECK_EQ_STR(w[1], "c");
		CHECK_EQ_STR(w[2], "a");
		CHECK_EQ_STR(w[3], "b");
		CHECK_EQ_STR(w[4], "d ef");
		CHECK_EQ_STR(w[5], "a  b");
	}
}

TEST(words_escaped_space_and_empty)
{
	_cleanup_strv_free_ char **w = NULL, **e = NULL;
	_cleanup_error_ KilnError *err = NULL;

	CHECK(expand_words("my\\ file /dst/", '\\', lookup, NULL, &w, &err) == 0);
	CHECK_EQ_INT(strv_length(w), 2);
	CHECK_EQ_STR(w[0], "my file");
	CHECK(expand_words("   ", '\\', lookup, NULL, &e, &err) == 0);
	CHECK(e && e[0] == NULL);
	CHECK(expand_words("'open", '\\', lookup, NULL, &e, &err) < 0);
	CHECK(err != NULL);
}

TEST(unquote_keeps_variables)
{
	_cleanup_free_ char *a = NULL, *b = NULL;
	_cleanup_error_ KilnError *err = NULL;

	CHECK(expand_unquote("\"$HOME/x y\"", '\\', &a, &err) == 0);
	CHECK_EQ_STR(a, "$HOME/x y");
	CHECK(expand_unquote("${A:-'q'}\\ z", '\\', &b, &err) == 0);
	CHECK_EQ_STR(b, "${A:-'q'} z");
	CHECK(expand_unquote("\"open", '\\', &a, &err) < 0);
}

TEST(glob)
{
	CHECK(expand_glob_match("*.c", 3, "a/b.c", 5, '\\'));
	CHECK(expand_glob_match("[a-c]?", 6, "bz", 2, '\\'));
	CHECK(!expand_glob_match("[!a-c]?", 7, "bz", 2, '\\'));
	CHECK(expand_glob_match("\\*", 2, "*", 1, '\\'));
	CHECK(!expand_glob_match("\\*", 2, "x", 1, '\\'));
	CHECK(expand_glob_match("*a*a*a*a*b", 10, "aaaaaaaaaaaaaaaaaaaaaaaab", 25, '\\'));
}

int main(void)
{
	RUN(plain_variables);
	RUN(default_and_alternative);
	RUN(nested);
	RUN(required);
	RUN(prefix_suffix);
	RUN(replace);
	RUN(quotes);
	RUN(escapes);
	RUN(errors);
	RUN(words_split);
	RUN(words_escaped_space_and_empty);
	RUN(unquote_keeps_variables);
	RUN(glob);
	return tap_done();
}
