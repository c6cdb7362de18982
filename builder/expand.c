#include "expand.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"

/* Word splitting as BuildKit does it: characters that came from quotes or escapes never split,
 * unquoted text (including unquoted variable values) splits on whitespace. */
typedef struct Words {
	char **v;
	StrBuf cur;
} Words;

static void words_end(Words *w)
{
	if (w->cur.len > 0)
		strv_consume(&w->v, strbuf_steal(&w->cur));
}

static void words_add_raw(Words *w, const char *s, size_t n)
{
	if (w)
		strbuf_add(&w->cur, s, n);
}

static void words_add_split(Words *w, const char *s, size_t n)
{
	if (!w)
		return;
	for (size_t i = 0; i < n; i++) {
		if (isspace((unsigned char)s[i]))
			words_end(w);
		else
			strbuf_addc(&w->cur, s[i]);
	}
}

typedef struct Lexer {
	const char *s;
	size_t len, pos;
	char escape;
	ExpandLookupFn lookup;
	void *userdata;
	bool keep_vars; /* expand_unquote(): copy $ references verbatim */
	KilnError **err;
} Lexer;

static int lex_peek(const Lexer *lx)
{
	return lx->pos < lx->len ? (unsigned char)lx->s[lx->pos] : -1;
}

static int lex_next(Lexer *lx)
{
	return lx->pos < lx->len ? (unsigned char)lx->s[lx->pos++] : -1;
}

static int lex_until(Lexer *lx, const char *stops, bool raw_escapes, StrBuf *out, Words *words);
static int lex_dollar(Lexer *lx, StrBuf *out);

static int lex_single_quote(Lexer *lx, StrBuf *out)
{
	lex_next(lx);
	for (;;) {
		int c = lex_next(lx);
		if (c < 0)
			return kiln_error(lx->err, EINVAL,
					  "unexpected end of statement while looking for matching "
					  "single-quote");
		if (c == '\'')
			return 0;
		strbuf_addc(out, (char)c);
	}
}

static int lex_double_quote(Lexer *lx, StrBuf *out)
{
	lex_next(lx);
	for (;;) {
		int c = lex_peek(lx);
		if (c < 0)
			return kiln_error(lx->err, EINVAL,
					  "unexpected end of statement while looking for matching "
					  "double-quote");
		if (c == '"') {
			lex_next(lx);
			return 0;
		}
		if (c == '$') {
			int r = lex_dollar(lx, out);
			if (r < 0)
				return r;
			continue;
		}
		lex_next(lx);
		if (c == (unsigned char)lx->escape) {
			int n = lex_peek(lx);
			/* Only these can be escaped inside double quotes; any other escape char
			 * stays as written, as in a POSIX shell. */
			if (n == '"' || n == '$' || n == '\n' || n == (unsigned char)lx->escape)
				c = lex_next(lx);
		}
		strbuf_addc(out, (char)c);
	}
}

static void lex_name(Lexer *lx, StrBuf *name)
{
	int c = lex_peek(lx);

	if (c >= 0 && isdigit(c)) {
		while ((c = lex_peek(lx)) >= 0 && isdigit(c))
			strbuf_addc(name, (char)lex_next(lx));
		return;
	}
	if (c >= 0 && strchr("@*#?-$!", c)) {
		strbuf_addc(name, (char)lex_next(lx));
		return;
	}
	while ((c = lex_peek(lx)) >= 0 && (isalnum(c) || c == '_'))
		strbuf_addc(name, (char)lex_next(lx));
}

/* expand_unquote(): `$NAME` needs nothing special (the name is copied as ordinary text), a
 * `${...}` is copied through its matching brace. */
static void lex_dollar_verbatim(Lexer *lx, StrBuf *out)
{
	int depth = 0, c;

	strbuf_addc(out, '$');
	if (lex_peek(lx) != '{')
		return;
	while ((c = lex_next(lx)) >= 0) {
		strbuf_addc(out, (char)c);
		if (c == '{')
			depth++;
		else if (c == '}' && --depth == 0)
			return;
	}
}

static const char *lex_lookup(Lexer *lx, const char *name)
{
	return lx->lookup ? lx->lookup(lx->userdata, name) : NULL;
}

static void trim_affix(const char *value, const char *pat, bool greedy, bool suffix, char escape,
		       StrBuf *out)
{
	size_t n = strlen(value), plen = strlen(pat);

	for (size_t k = 0; k <= n; k++) {
		/* k: length of the candidate prefix/suffix, shortest first unless greedy */
		size_t l = greedy ? n - k : k;
		const char *start = suffix ? value + n - l : value;
		if (expand_glob_match(pat, plen, start, l, escape)) {
			if (suffix)
				strbuf_add(out, value, n - l);
			else
				strbuf_add(out, value + l, n - l);
			return;
		}
	}
	strbuf_add(out, value, n);
}

static void replace_pattern(const char *value, const char *pat, const char *repl, bool all,
			    char escape, StrBuf *out)
{
	size_t n = strlen(value), plen = strlen(pat), pos = 0, s = 0;

	/* Leftmost, then longest non-empty match, like bash. */
	while (s < n) {
		size_t e = n;
		while (e > s && !expand_glob_match(pat, plen, value + s, e - s, escape))
			e--;
		if (e == s) {
			s++;
			continue;
		}
		strbuf_add(out, value + pos, s - pos);
		strbuf_adds(out, repl);
		pos = s = e;
		if (!all)
			break;
	}
	strbuf_add(out, value + pos, n - pos);
}

static int lex_modifier(Lexer *lx, const char *name, int mod, bool colon, StrBuf *out)
{
	bool raw_escapes = mod == '#' || mod == '%';
	_cleanup_strbuf_ StrBuf word = {0};
	int r;

	if (colon && raw_escapes)
		return kiln_error(lx->err, EINVAL, "unsupported modifier (:%c) in substitution",
				  mod);
	r = lex_until(lx, "}", raw_escapes, &word, NULL);
	if (r < 0)
		return r;
	const char *w = word.s ? word.s : "";
	const char *value = lex_lookup(lx, name);
	bool empty = !value || (colon && !*value);

	switch (mod) {
	case '-':
		strbuf_adds(out, empty ? w : value);
		return 0;
	case '+':
		if (!empty)
			strbuf_adds(out, w);
		return 0;
	case '?':
		if (!value)
			return kiln_error(lx->err, EINVAL, "%s: %s", name,
					  *w ? w : "is not allowed to be unset");
		if (empty)
			return kiln_error(lx->err, EINVAL, "%s: %s", name,
					  *w ? w : "is not allowed to be empty");
		strbuf_adds(out, value);
		return 0;
	default: {
		bool greedy = *w == mod;
		trim_affix(value ? value : "", greedy ? w + 1 : w, greedy, mod == '%', lx->escape,
			   out);
		return 0;
	}
	}
}

static int lex_replace(Lexer *lx, const char *name, StrBuf *out)
{
	_cleanup_strbuf_ StrBuf pat = {0}, repl = {0};
	bool all = lex_peek(lx) == '/';
	int r;

	if (all)
		lex_next(lx);
	r = lex_until(lx, "/", true, &pat, NULL);
	if (r < 0)
		return r;
	r = lex_until(lx, "}", false, &repl, NULL);
	if (r < 0)
		return r;
	const char *value = lex_lookup(lx, name);
	replace_pattern(value ? value : "", pat.s ? pat.s : "", repl.s ? repl.s : "", all,
			lx->escape, out);
	return 0;
}

static int lex_dollar(Lexer *lx, StrBuf *out)
{
	_cleanup_strbuf_ StrBuf name = {0};
	int c;

	lex_next(lx);
	if (lx->keep_vars) {
		lex_dollar_verbatim(lx, out);
		return 0;
	}
	if (lex_peek(lx) != '{') {
		lex_name(lx, &name);
		if (name.len == 0) {
			strbuf_addc(out, '$');
			return 0;
		}
		const char *v = lex_lookup(lx, name.s);
		strbuf_adds(out, v ? v : "");
		return 0;
	}
	lex_next(lx);
	c = lex_peek(lx);
	if (c < 0)
		return kiln_error(lx->err, EINVAL, "syntax error: missing '}'");
	if (c == '{' || c == '}' || c == ':')
		return kiln_error(lx->err, EINVAL, "syntax error: bad substitution");
	lex_name(lx, &name);
	if (name.len == 0)
		return kiln_error(lx->err, EINVAL, "syntax error: bad substitution");
	c = lex_next(lx);
	switch (c) {
	case -1:
		return kiln_error(lx->err, EINVAL, "syntax error: missing '}'");
	case '}': {
		const char *v = lex_lookup(lx, name.s);
		strbuf_adds(out, v ? v : "");
		return 0;
	}
	case ':': {
		int mod = lex_next(lx);
		if (mod < 0)
			return kiln_error(lx->err, EINVAL, "syntax error: missing '}'");
		if (!strchr("-+?#%", mod))
			return kiln_error(lx->err, EINVAL,
					  "unsupported modifier (:%c) in substitution", mod);
		return lex_modifier(lx, name.s, mod, true, out);
	}
	case '-':
	case '+':
	case '?':
	case '#':
	case '%':
		return lex_modifier(lx, name.s, c, false, out);
	case '/':
		return lex_replace(lx, name.s, out);
	default:
		return kiln_error(lx->err, EINVAL, "unsupported modifier (%c) in substitution", c);
	}
}

static int lex_until(Lexer *lx, const char *stops, bool raw_escapes, StrBuf *out, Words *words)
{
	int c, r;

	while ((c = lex_peek(lx)) >= 0) {
		if (stops && strchr(stops, c)) {
			lex_next(lx);
			return 0;
		}
		if (c == '\'' || c == '"' || c == '$') {
			_cleanup_strbuf_ StrBuf tmp = {0};
			if (c == '\'')
				r = lex_single_quote(lx, &tmp);
			else if (c == '"')
				r = lex_double_quote(lx, &tmp);
			else
				r = lex_dollar(lx, &tmp);
			if (r < 0)
				return r;
			strbuf_add(out, tmp.s ? tmp.s : "", tmp.len);
			if (c == '$')
				words_add_split(words, tmp.s ? tmp.s : "", tmp.len);
			else
				words_add_raw(words, tmp.s ? tmp.s : "", tmp.len);
			continue;
		}
		lex_next(lx);
		if (c == (unsigned char)lx->escape) {
			if (raw_escapes)
				strbuf_addc(out, (char)c);
			c = lex_next(lx);
			if (c < 0)
				break;
			strbuf_addc(out, (char)c);
			words_add_raw(words, &(char){(char)c}, 1);
			continue;
		}
		strbuf_addc(out, (char)c);
		words_add_split(words, &(char){(char)c}, 1);
	}
	if (stops) {
		if (stops[0] == '/')
			return kiln_error(lx->err, EINVAL, "syntax error: missing '/' in ${}");
		return kiln_error(lx->err, EINVAL, "syntax error: missing '%c'", stops[0]);
	}
	return 0;
}

static int expand_run(const char *text, char escape, ExpandLookupFn lookup, void *userdata,
		      bool keep_vars, StrBuf *out, Words *words, KilnError **err)
{
	Lexer lx = {
	    .s = text,
	    .len = strlen(text),
	    .escape = escape ? escape : '\\',
	    .lookup = lookup,
	    .userdata = userdata,
	    .keep_vars = keep_vars,
	    .err = err,
	};

	return lex_until(&lx, NULL, false, out, words);
}

int expand_word(const char *word, char escape, ExpandLookupFn lookup, void *userdata, char **ret,
		KilnError **err)
{
	_cleanup_strbuf_ StrBuf out = {0};
	int r = expand_run(word, escape, lookup, userdata, false, &out, NULL, err);

	if (r < 0)
		return r;
	*ret = strbuf_steal(&out);
	return 0;
}

int expand_words(const char *text, char escape, ExpandLookupFn lookup, void *userdata, char ***ret,
		 KilnError **err)
{
	_cleanup_strbuf_ StrBuf out = {0};
	Words w = {0};
	int r = expand_run(text, escape, lookup, userdata, false, &out, &w, err);

	if (r >= 0)
		words_end(&w);
	strbuf_done(&w.cur);
	if (r < 0) {
		strv_free(w.v);
		return r;
	}
	*ret = w.v ? w.v : xcalloc(1, sizeof(char *));
	return 0;
}

int expand_unquote(const char *word, char escape, char **ret, KilnError **err)
{
	_cleanup_strbuf_ StrBuf out = {0};
	int r = expand_run(word, escape, NULL, NULL, true, &out, NULL, err);

	if (r < 0)
		return r;
	*ret = strbuf_steal(&out);
	return 0;
}

/* Matches one pattern element at p[*pi] against character c; advances *pi past it. */
static bool glob_unit(const char *p, size_t pn, size_t *pi, unsigned char c, char escape)
{
	size_t i = *pi;
	unsigned char pc = (unsigned char)p[i];

	if (pc == '?') {
		*pi = i + 1;
		return true;
	}
	if (pc == (unsigned char)escape && i + 1 < pn) {
		*pi = i + 2;
		return (unsigned char)p[i + 1] == c;
	}
	if (pc == '[') {
		size_t j = i + 1;
		bool neg = false, match = false;
		if (j < pn && (p[j] == '!' || p[j] == '^')) {
			neg = true;
			j++;
		}
		size_t first = j;
		while (j < pn && (p[j] != ']' || j == first)) {
			unsigned char lo = (unsigned char)p[j], hi;
			if (lo == (unsigned char)escape && j + 1 < pn)
				lo = (unsigned char)p[++j];
			hi = lo;
			if (j + 2 < pn && p[j + 1] == '-' && p[j + 2] != ']') {
				j += 2;
				hi = (unsigned char)p[j];
				if (hi == (unsigned char)escape && j + 1 < pn)
					hi = (unsigned char)p[++j];
			}
			if (lo <= c && c <= hi)
				match = true;
			j++;
		}
		if (j < pn) {
			*pi = j + 1;
			return match != neg;
		}
		/* no closing bracket: a literal '[' */
	}
	*pi = i + 1;
	return pc == c;
}

bool expand_glob_match(const char *p, size_t pn, const char *s, size_t sn, char escape)
{
	size_t pi = 0, si = 0, star_p = (size_t)-1, star_s = 0;

	/* Classic single-star backtracking: linear in practice, no recursion. */
	while (si < sn) {
		if (pi < pn && p[pi] == '*') {
			star_p = ++pi;
			star_s = si;
			continue;
		}
		size_t next = pi;
		if (pi < pn && glob_unit(p, pn, &next, (unsigned char)s[si], escape)) {
			pi = next;
			si++;
			continue;
		}
		if (star_p == (size_t)-1)
			return false;
		pi = star_p;
		si = ++star_s;
	}
	while (pi < pn && p[pi] == '*')
		pi++;
	return pi == pn;
}
