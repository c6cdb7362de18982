#include <time.h>

#include "builder/expand.h"
#include "common/cleanup.h"
#include "common/strbuf.h"
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

	if (expand_word(word, esc, lookup, NULL, NULL, &out, &err) < 0)
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
	CHECK_EQ_STR(ew("${A\x1b}"), "<error: unsupported modifier (\\x1b) in substitution>");
	CHECK_EQ_STR(ew("${U:?\x1b[2J}"), "<error: U: \\x1b[2J>");
}

TEST(words_split)
{
	_cleanup_strv_free_ char **w = NULL;
	_cleanup_error_ KilnError *err = NULL;

	CHECK(expand_words("\"a b\" c  $S 'd e'\"f\" \"$S\" \"\" ${UNSET}", '\\', lookup, NULL,
			   NULL, &w, &err) == 0);
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

	CHECK(expand_words("my\\ file /dst/", '\\', lookup, NULL, NULL, &w, &err) == 0);
	CHECK_EQ_INT(strv_length(w), 2);
	CHECK_EQ_STR(w[0], "my file");
	CHECK(expand_words("   ", '\\', lookup, NULL, NULL, &e, &err) == 0);
	CHECK(e && e[0] == NULL);
	CHECK(expand_words("'open", '\\', lookup, NULL, NULL, &e, &err) < 0);
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

/* ---------- limits (issue 8: expansion bombs) ---------- */

/* One variable, V, with a value the test sets. */
static const char *v_value;
static const char *lookup_v(void *userdata, const char *name)
{
	(void)userdata;
	return strcmp(name, "V") == 0 ? v_value : NULL;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *repeat(const char *unit, size_t n)
{
	StrBuf b = {0};
	for (size_t i = 0; i < n; i++)
		strbuf_adds(&b, unit);
	return strbuf_steal(&b);
}

TEST(deep_nesting_is_an_error_not_a_crash)
{
	_cleanup_free_ char *open = repeat("${A:-", 200000), *close = repeat("}", 200000);
	_cleanup_free_ char *word = xasprintf("%sx%s", open, close);
	_cleanup_free_ char *ok_open = repeat("${U:-", EXPAND_MAX_DEPTH);
	_cleanup_free_ char *ok_close = repeat("}", EXPAND_MAX_DEPTH);
	_cleanup_free_ char *ok_word = xasprintf("%sx%s", ok_open, ok_close);
	_cleanup_error_ KilnError *err = NULL;
	_cleanup_free_ char *out = NULL, *out2 = NULL;

	CHECK(expand_word(word, '\\', lookup, NULL, NULL, &out, &err) == -ELOOP);
	CHECK(err && strstr(err->message, "nested more than 64 levels deep"));
	/* 64 levels still work; in double quotes the depth counts too */
	CHECK(expand_word(ok_word, '\\', lookup, NULL, NULL, &out2, NULL) == 0);
	CHECK_EQ_STR(out2, "x");
	_cleanup_free_ char *q = repeat("\"${A:-", 200);
	CHECK(expand_word(q, '\\', lookup, NULL, NULL, &out, NULL) == -ELOOP);
}

TEST(word_size_is_capped)
{
	_cleanup_free_ char *big = repeat("x", EXPAND_MAX_WORD / 4 + 1);
	_cleanup_free_ char *refs = repeat("${V}", 4), *quoted = xasprintf("\"%s\"", refs);
	_cleanup_free_ char *out = NULL;
	_cleanup_error_ KilnError *err = NULL;
	_cleanup_strv_free_ char **w = NULL;

	v_value = big;
	CHECK(expand_word(refs, '\\', lookup_v, NULL, NULL, &out, &err) == -E2BIG);
	CHECK(err && strstr(err->message, "exceeds 4 MiB in one word"));
	CHECK(expand_word(quoted, '\\', lookup_v, NULL, NULL, &out, NULL) == -E2BIG);
	CHECK(expand_words(refs, '\\', lookup_v, NULL, NULL, &w, NULL) == -E2BIG);
	/* a replacement that multiplies the value */
	v_value = "aaaaaaaaaaaaaaaa";
	_cleanup_free_ char *rep = xasprintf("${V//a/%s}", big);
	CHECK(expand_word(rep, '\\', lookup_v, NULL, NULL, &out, NULL) == -E2BIG);
	/* three times fits */
	v_value = big;
	CHECK(expand_word("${V}${V}${V}", '\\', lookup_v, NULL, NULL, &out, NULL) == 0);
}

/* ENV A=${A}${A} line after line: the shared budget stops it long before memory runs out. */
TEST(doubling_stops_at_the_budget)
{
	_cleanup_free_ char *a = xstrdup("0123456789abcdef");
	_cleanup_error_ KilnError *err = NULL;
	size_t budget = EXPAND_MAX_TOTAL;
	int r = 0, lines = 0;

	while (lines < 30 && r == 0) {
		char *next = NULL;
		v_value = a;
		r = expand_word("${V}${V}", '\\', lookup_v, NULL, &budget, &next, &err);
		if (r == 0) {
			free(a);
			a = next;
			lines++;
		}
	}
	CHECK(r == -E2BIG);
	CHECK(strlen(a) <= EXPAND_MAX_WORD);
	CHECK(lines < 30);
	CHECK(err && strstr(err->message, "MiB"));
}

TEST(pattern_replacement_is_linear)
{
	_cleanup_free_ char *val = repeat("a", 1 << 20), *out = NULL, *out2 = NULL;
	_cleanup_free_ char *bval = xasprintf("%sb%s", val, val);
	double t0 = now();

	v_value = val;
	CHECK(expand_word("${V//*b/c}", '\\', lookup_v, NULL, NULL, &out, NULL) == 0);
	CHECK(out && strlen(out) == 1 << 20);
	free(TAKE_PTR(out));
	CHECK(expand_word("${V//a/b}", '\\', lookup_v, NULL, NULL, &out, NULL) == 0);
	CHECK(out && strlen(out) == 1 << 20 && out[0] == 'b' && out[(1 << 20) - 1] == 'b');
	free(TAKE_PTR(out));
	CHECK(expand_word("${V%%*a}${V#*a}${V##*b}${V%a}", '\\', lookup_v, NULL, NULL, &out,
			  NULL) == 0);
	v_value = bval;
	CHECK(expand_word("${V//*b/c}", '\\', lookup_v, NULL, NULL, &out2, NULL) == 0);
	CHECK(out2 && out2[0] == 'c' && strlen(out2) == (1 << 20) + 1);
	double dt = now() - t0;
	printf("# 1 MiB values: %.3f s\n", dt);
	CHECK(dt < 5);
}

TEST(pattern_work_is_bounded)
{
	_cleanup_free_ char *val = repeat("a", 1 << 20), *stars = repeat("*a", 2000);
	_cleanup_free_ char *word = xasprintf("${V//%sb/c}", stars), *out = NULL;
	_cleanup_free_ char *long_pat = repeat("a", EXPAND_MAX_PATTERN + 1);
	_cleanup_free_ char *word2 = xasprintf("${V#%s}", long_pat);
	_cleanup_error_ KilnError *err = NULL, *err2 = NULL;
	double t0 = now();

	v_value = val;
	CHECK(expand_word(word, '\\', lookup_v, NULL, NULL, &out, &err) == -E2BIG);
	CHECK(err && strstr(err->message, "pattern matching takes more than"));
	CHECK(now() - t0 < 10);
	CHECK(expand_word(word2, '\\', lookup_v, NULL, NULL, &out, &err2) == -E2BIG);
	CHECK(err2 && strstr(err2->message, "pattern in ${} longer than 64 KiB"));
}

/* The matcher against the obvious one (try every start and end with a backtracking full match)
 * on every small pattern and value over a few characters. */
static bool ref_unit(const char *p, size_t pn, size_t *pi, unsigned char c)
{
	size_t i = *pi;
	if (p[i] == '?') {
		*pi = i + 1;
		return true;
	}
	if (p[i] == '\\' && i + 1 < pn) {
		*pi = i + 2;
		return (unsigned char)p[i + 1] == c;
	}
	if (p[i] == '[') {
		size_t j = i + 1;
		bool neg = false, match = false;
		if (j < pn && (p[j] == '!' || p[j] == '^'))
			neg = true, j++;
		size_t first = j;
		for (; j < pn && (p[j] != ']' || j == first); j++) {
			unsigned char lo = (unsigned char)p[j], hi;
			if (lo == '\\' && j + 1 < pn)
				lo = (unsigned char)p[++j];
			hi = lo;
			if (j + 2 < pn && p[j + 1] == '-' && p[j + 2] != ']') {
				j += 2;
				hi = (unsigned char)p[j];
				if (hi == '\\' && j + 1 < pn)
					hi = (unsigned char)p[++j];
			}
			match |= lo <= c && c <= hi;
		}
		if (j < pn) {
			*pi = j + 1;
			return match != neg;
		}
	}
	*pi = i + 1;
	return (unsigned char)p[i] == c;
}

static bool ref_match(const char *p, size_t pn, const char *s, size_t sn)
{
	if (pn == 0)
		return sn == 0;
	if (p[0] == '*') {
		for (size_t k = 0; k <= sn; k++)
			if (ref_match(p + 1, pn - 1, s + k, sn - k))
				return true;
		return false;
	}
	size_t next = 0;
	return sn > 0 && ref_unit(p, pn, &next, (unsigned char)s[0]) &&
	       ref_match(p + next, pn - next, s + 1, sn - 1);
}

static char *ref_replace(const char *v, const char *pat, const char *rep, bool all)
{
	size_t n = strlen(v), pn = strlen(pat), pos = 0, s = 0;
	StrBuf out = {0};
	while (s < n) {
		size_t e = n;
		while (e > s && !ref_match(pat, pn, v + s, e - s))
			e--;
		if (e == s) {
			s++;
			continue;
		}
		strbuf_add(&out, v + pos, s - pos);
		strbuf_adds(&out, rep);
		pos = s = e;
		if (!all)
			break;
	}
	strbuf_add(&out, v + pos, n - pos);
	return strbuf_steal(&out);
}

static char *ref_trim(const char *v, const char *pat, bool greedy, bool suffix)
{
	size_t n = strlen(v), pn = strlen(pat);
	for (size_t k = 0; k <= n; k++) {
		size_t l = greedy ? n - k : k;
		if (ref_match(pat, pn, suffix ? v + n - l : v, l))
			return suffix ? strndup(v, n - l) : xstrdup(v + l);
	}
	return xstrdup(v);
}

/* The i-th string of length len over alphabet a. */
static void nth(char *out, const char *a, size_t len, unsigned long i)
{
	size_t na = strlen(a);
	for (size_t k = 0; k < len; k++, i /= na)
		out[k] = a[i % na];
	out[len] = 0;
}

TEST(matcher_agrees_with_backtracking)
{
	static const char *const ops[][2] = {{"${V/%s/-}", "/"}, {"${V//%s/-}", "//"},
					     {"${V#%s}", "#"},	 {"${V##%s}", "##"},
					     {"${V%%%s}", "%"},	 {"${V%%%%%s}", "%%"}};
	const char *pa = "ab*?[]!\\", *va = "ab]";
	unsigned long checked = 0, bad = 0;
	char p[8], v[8];

	for (size_t pl = 0; pl <= 4; pl++)
		for (unsigned long pi = 0; pi < (1ul << (3 * pl)); pi++) {
			nth(p, pa, pl, pi);
			if (pl && p[pl - 1] == '\\')
				continue; /* a trailing escape ends the word when it is lexed */
			for (size_t vl = 0, nv = 1; vl <= 4; vl++, nv *= 3)
				for (unsigned long vi = 0; vi < nv; vi++) {
					nth(v, va, vl, vi);
					checked++;
					bad += expand_glob_match(p, pl, v, vl, '\\') !=
					       ref_match(p, pl, v, vl);
					v_value = v;
					for (size_t o = 0; o < 6 && vl <= 3; o++) {
						_cleanup_free_ char *w = xasprintf(ops[o][0], p);
						_cleanup_free_ char *got = NULL, *want = NULL;
						const char *op = ops[o][1];
						if (op[0] == '/')
							want = ref_replace(v, p, "-", op[1] == '/');
						else
							want = ref_trim(v, p, op[1] != 0,
									op[0] == '%');
						if (strchr(p, '}') || strchr(p, '/') ||
						    expand_word(w, '\\', lookup_v, NULL, NULL, &got,
								NULL) < 0)
							continue;
						if (strcmp(got, want) != 0 && bad++ < 5)
							printf("# %s on '%s': '%s', want '%s'\n", w,
							       v, got, want);
					}
				}
		}
	printf("# %lu pattern/value pairs\n", checked);
	CHECK_EQ_INT(bad, 0);
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
	RUN(deep_nesting_is_an_error_not_a_crash);
	RUN(word_size_is_capped);
	RUN(doubling_stops_at_the_budget);
	RUN(pattern_replacement_is_linear);
	RUN(pattern_work_is_bounded);
	RUN(matcher_agrees_with_backtracking);
	return tap_done();
}
