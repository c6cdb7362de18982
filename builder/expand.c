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
	StrvBuf list;
	StrBuf cur;
} Words;

static void words_end(Words *w)
{
	if (w->cur.len > 0)
		strvbuf_consume(&w->list, strbuf_steal(&w->cur));
}

static void words_done(Words *w)
{
	strvbuf_done(&w->list);
	strbuf_done(&w->cur);
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
	unsigned depth; /* of ${ } being expanded */
	size_t work;	/* pattern matching steps left */
	KilnError **err;
} Lexer;

/* Every place a word grows by more than the text it was written with checks here. */
static int lex_check_size(Lexer *lx, const StrBuf *b)
{
	if (b->len <= EXPAND_MAX_WORD)
		return 0;
	return kiln_error(lx->err, E2BIG, "variable expansion exceeds %zu MiB in one word",
			  EXPAND_MAX_WORD >> 20);
}

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
			if (r >= 0)
				r = lex_check_size(lx, out);
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

/* ---------- shell patterns ----------
 * A pattern is compiled to units (a star, or one character out of a set) and run as an NFA over
 * the value, all candidate starts at once (a Pike VM): a thread is a (unit, start) pair, two
 * threads at the same unit keep the leftmost start, so a scan is O(value * pattern) at worst and
 * linear for patterns without stars, where a backtracking matcher tried every start and end. */

enum { GLOB_STAR, GLOB_ANY, GLOB_LIT, GLOB_CLASS };

typedef struct GlobUnit {
	unsigned char kind, c;
	size_t off; /* GLOB_CLASS: where its '[' is in the pattern */
} GlobUnit;

typedef struct Glob {
	const char *p;
	size_t pn;
	unsigned char escape;
	GlobUnit *u;
	size_t m;		    /* units; state m accepts */
	size_t *start[2], *list[2]; /* per state: the thread's start; the live states, by start */
	size_t len[2], *seen, gen;
} Glob;

#define NO_POS ((size_t)-1)

/* The class at p[i] == '[': matches c? *ret_end is past its ']'; false with *ret_end == 0 when
 * there is no closing bracket (then '[' is a literal). */
static bool class_match(const char *p, size_t pn, size_t i, unsigned char c, unsigned char escape,
			size_t *ret_end)
{
	size_t j = i + 1;
	bool neg = false, match = false;

	if (j < pn && (p[j] == '!' || p[j] == '^')) {
		neg = true;
		j++;
	}
	size_t first = j;
	while (j < pn && (p[j] != ']' || j == first)) {
		unsigned char lo = (unsigned char)p[j], hi;
		if (lo == escape && j + 1 < pn)
			lo = (unsigned char)p[++j];
		hi = lo;
		if (j + 2 < pn && p[j + 1] == '-' && p[j + 2] != ']') {
			j += 2;
			hi = (unsigned char)p[j];
			if (hi == escape && j + 1 < pn)
				hi = (unsigned char)p[++j];
		}
		if (lo <= c && c <= hi)
			match = true;
		j++;
	}
	*ret_end = j < pn ? j + 1 : 0;
	return match != neg;
}

static void glob_done(Glob *g)
{
	free(g->u);
	for (int i = 0; i < 2; i++) {
		free(g->start[i]);
		free(g->list[i]);
	}
	free(g->seen);
}

static void glob_compile(Glob *g, const char *p, size_t pn, char escape)
{
	*g = (Glob){.p = p, .pn = pn, .escape = (unsigned char)escape};
	g->u = xcalloc(pn + 1, sizeof(GlobUnit));
	for (size_t i = 0; i < pn;) {
		GlobUnit *u = &g->u[g->m];
		size_t end;
		if (p[i] == '*') {
			if (g->m == 0 || u[-1].kind != GLOB_STAR) /* a run of stars is one */
				g->m++;
			i++;
			continue;
		}
		if (p[i] == '?') {
			*u = (GlobUnit){.kind = GLOB_ANY};
			i++;
		} else if ((unsigned char)p[i] == g->escape && i + 1 < pn) {
			*u = (GlobUnit){.kind = GLOB_LIT, .c = (unsigned char)p[i + 1]};
			i += 2;
		} else if (p[i] == '[' && (class_match(p, pn, i, 0, g->escape, &end), end)) {
			*u = (GlobUnit){.kind = GLOB_CLASS, .off = i};
			i = end;
		} else {
			*u = (GlobUnit){.kind = GLOB_LIT, .c = (unsigned char)p[i]};
			i++;
		}
		g->m++;
	}
	for (int i = 0; i < 2; i++) {
		g->start[i] = xcalloc(g->m + 1, sizeof(size_t));
		g->list[i] = xcalloc(g->m + 1, sizeof(size_t));
	}
	g->seen = xcalloc(g->m + 1, sizeof(size_t));
}

/* For ${V%p}: the same pattern read backwards, run over the reversed value. */
static void glob_reverse(Glob *g)
{
	for (size_t i = 0, j = g->m; i + 1 < j; i++, j--) {
		GlobUnit t = g->u[i];
		g->u[i] = g->u[j - 1];
		g->u[j - 1] = t;
	}
}

static bool glob_unit_match(const Glob *g, const GlobUnit *u, unsigned char c)
{
	size_t end;

	switch (u->kind) {
	case GLOB_ANY:
		return true;
	case GLOB_LIT:
		return u->c == c;
	case GLOB_CLASS:
		return class_match(g->p, g->pn, u->off, c, g->escape, &end);
	default:
		return false;
	}
}

/* Adds a thread at state to list l unless one (with a start as far left) is there; a star may
 * match nothing, so the state after it is live too. */
static void glob_add(Glob *g, int l, size_t state, size_t start)
{
	for (;;) {
		if (g->seen[state] == g->gen)
			return;
		g->seen[state] = g->gen;
		g->start[l][state] = start;
		g->list[l][g->len[l]++] = state;
		if (state == g->m || g->u[state].kind != GLOB_STAR)
			return;
		state++;
	}
}

typedef struct GlobMatch {
	bool anchored; /* only a match starting at `from` */
	bool shortest; /* the shortest end for the leftmost start, else the longest */
	bool nonempty;
	size_t *work; /* steps left, or NULL for no limit */
} GlobMatch;

/* Finds the leftmost match in s[from, n) (then the shortest or longest one starting there):
 * 1 and [*ret_s, *ret_e), 0 when there is none, -E2BIG when out of work. */
static int glob_scan(Glob *g, const char *s, size_t n, size_t from, const GlobMatch *how,
		     size_t *ret_s, size_t *ret_e)
{
	size_t bs = NO_POS, be = 0;
	int cur = 0;

	g->len[0] = 0;
	g->gen++;
	for (size_t pos = from;; pos++) {
		if (bs == NO_POS && (!how->anchored || pos == from))
			glob_add(g, cur, 0, pos); /* the lowest priority: the latest start */
		if (g->seen[g->m] == g->gen) {
			size_t st = g->start[cur][g->m];
			if ((!how->nonempty || pos > st) && st <= bs) {
				bs = st;
				be = pos;
			}
		}
		if (bs != NO_POS && how->shortest)
			break;
		while (bs != NO_POS && g->len[cur] > 0 &&
		       g->start[cur][g->list[cur][g->len[cur] - 1]] > bs)
			g->len[cur]--; /* later starts cannot win any more */
		if (pos == n || (g->len[cur] == 0 && (bs != NO_POS || how->anchored)))
			break;
		if (how->work && *how->work < g->len[cur])
			return -E2BIG;
		if (how->work)
			*how->work -= g->len[cur];
		int next = !cur;
		g->len[next] = 0;
		g->gen++;
		for (size_t i = 0; i < g->len[cur]; i++) {
			size_t state = g->list[cur][i], st = g->start[cur][state];
			if (state == g->m)
				continue;
			if (g->u[state].kind == GLOB_STAR)
				glob_add(g, next, state, st);
			else if (glob_unit_match(g, &g->u[state], (unsigned char)s[pos]))
				glob_add(g, next, state + 1, st);
		}
		cur = next;
	}
	if (bs == NO_POS)
		return 0;
	*ret_s = bs;
	*ret_e = be;
	return 1;
}

bool expand_glob_match(const char *p, size_t pn, const char *s, size_t sn, char escape)
{
	_cleanup_(glob_done) Glob g = {0};
	GlobMatch how = {.anchored = true};
	size_t ms, me;

	glob_compile(&g, p, pn, escape);
	return glob_scan(&g, s, sn, 0, &how, &ms, &me) == 1 && me == sn;
}

static int lex_pattern(Lexer *lx, const StrBuf *pat, Glob *ret)
{
	if (pat->len > EXPAND_MAX_PATTERN)
		return kiln_error(lx->err, E2BIG, "pattern in ${} longer than %zu KiB",
				  EXPAND_MAX_PATTERN >> 10);
	glob_compile(ret, pat->s ? pat->s : "", pat->len, lx->escape);
	return 0;
}

static int lex_work_error(Lexer *lx, const char *name)
{
	return kiln_error(lx->err, E2BIG, "${%s...}: pattern matching takes more than %zu steps",
			  name, EXPAND_MAX_MATCH_WORK);
}

/* ${V#p} ${V##p} ${V%p} ${V%%p}: a suffix is the reversed pattern's prefix of the reversed
 * value. */
static int trim_affix(Lexer *lx, const char *name, const char *value, const StrBuf *pat,
		      bool greedy, bool suffix, StrBuf *out)
{
	_cleanup_(glob_done) Glob g = {0};
	_cleanup_free_ char *rev = NULL;
	size_t n = strlen(value), ms, me;
	GlobMatch how = {.anchored = true, .shortest = !greedy, .work = &lx->work};
	int r = lex_pattern(lx, pat, &g);

	if (r < 0)
		return r;
	if (suffix) {
		glob_reverse(&g);
		rev = xcalloc(n + 1, 1);
		for (size_t i = 0; i < n; i++)
			rev[i] = value[n - 1 - i];
	}
	r = glob_scan(&g, suffix ? rev : value, n, 0, &how, &ms, &me);
	if (r < 0)
		return lex_work_error(lx, name);
	if (r == 0)
		me = 0;
	strbuf_add(out, suffix ? value : value + me, n - me);
	return 0;
}

/* ${V/p/r} ${V//p/r}: leftmost, then longest non-empty match, like bash. */
static int replace_pattern(Lexer *lx, const char *name, const char *value, const StrBuf *pat,
			   const char *repl, bool all, StrBuf *out)
{
	_cleanup_(glob_done) Glob g = {0};
	GlobMatch how = {.nonempty = true, .work = &lx->work};
	size_t n = strlen(value), pos = 0, ms, me;
	int r = lex_pattern(lx, pat, &g);

	while (r >= 0 && pos < n) {
		r = glob_scan(&g, value, n, pos, &how, &ms, &me);
		if (r < 0)
			return lex_work_error(lx, name);
		if (r == 0)
			break;
		strbuf_add(out, value + pos, ms - pos);
		strbuf_adds(out, repl);
		pos = me;
		r = lex_check_size(lx, out);
		if (!all)
			break;
	}
	if (r < 0)
		return r;
	strbuf_add(out, value + pos, n - pos);
	return 0;
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
					  *w ? EXCERPT(w) : "is not allowed to be unset");
		if (empty)
			return kiln_error(lx->err, EINVAL, "%s: %s", name,
					  *w ? EXCERPT(w) : "is not allowed to be empty");
		strbuf_adds(out, value);
		return 0;
	default: {
		bool greedy = *w == mod;
		StrBuf pat = {.s = word.s ? word.s + greedy : NULL, .len = word.len - greedy};
		return trim_affix(lx, name, value ? value : "", &pat, greedy, mod == '%', out);
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
	return replace_pattern(lx, name, value ? value : "", &pat, repl.s ? repl.s : "", all, out);
}

static int lex_braces(Lexer *lx, StrBuf *out);

static int lex_dollar(Lexer *lx, StrBuf *out)
{
	_cleanup_strbuf_ StrBuf name = {0};

	lex_next(lx);
	if (lx->keep_vars) {
		lex_dollar_verbatim(lx, out);
		return 0;
	}
	if (lex_peek(lx) == '{') {
		/* ${A:-${A:-...}} recurses once per level */
		if (lx->depth >= EXPAND_MAX_DEPTH)
			return kiln_error(lx->err, ELOOP,
					  "variable substitution nested more than %d levels deep",
					  EXPAND_MAX_DEPTH);
		lx->depth++;
		int r = lex_braces(lx, out);
		lx->depth--;
		return r;
	}
	lex_name(lx, &name);
	if (name.len == 0) {
		strbuf_addc(out, '$');
		return 0;
	}
	const char *v = lex_lookup(lx, name.s);
	strbuf_adds(out, v ? v : "");
	return 0;
}

/* ${...}, after the '$'. */
static int lex_braces(Lexer *lx, StrBuf *out)
{
	_cleanup_strbuf_ StrBuf name = {0};
	int c;

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
					  "unsupported modifier (:%s) in substitution",
					  EXCERPT(((char[2]){(char)mod, 0})));
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
		return kiln_error(lx->err, EINVAL, "unsupported modifier (%s) in substitution",
				  EXCERPT(((char[2]){(char)c, 0})));
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
			r = lex_check_size(lx, out);
			if (r < 0)
				return r;
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
		      bool keep_vars, size_t *budget, StrBuf *out, Words *words, KilnError **err)
{
	Lexer lx = {
	    .s = text,
	    .len = strlen(text),
	    .escape = escape ? escape : '\\',
	    .lookup = lookup,
	    .userdata = userdata,
	    .keep_vars = keep_vars,
	    .work = EXPAND_MAX_MATCH_WORK,
	    .err = err,
	};
	int r = lex_until(&lx, NULL, false, out, words);

	if (r < 0 || !budget)
		return r;
	if (out->len > *budget)
		return kiln_error(err, E2BIG,
				  "variable expansion exceeds %zu MiB in total in this build",
				  EXPAND_MAX_TOTAL >> 20);
	*budget -= out->len;
	return 0;
}

int expand_word(const char *word, char escape, ExpandLookupFn lookup, void *userdata,
		size_t *budget, char **ret, KilnError **err)
{
	_cleanup_strbuf_ StrBuf out = {0};
	int r = expand_run(word, escape, lookup, userdata, false, budget, &out, NULL, err);

	if (r < 0)
		return r;
	*ret = strbuf_steal(&out);
	return 0;
}

int expand_words(const char *text, char escape, ExpandLookupFn lookup, void *userdata,
		 size_t *budget, char ***ret, KilnError **err)
{
	_cleanup_strbuf_ StrBuf out = {0};
	_cleanup_(words_done) Words w = {0};
	int r = expand_run(text, escape, lookup, userdata, false, budget, &out, &w, err);

	if (r < 0)
		return r;
	words_end(&w);
	*ret = strvbuf_steal(&w.list);
	return 0;
}

int expand_unquote(const char *word, char escape, char **ret, KilnError **err)
{
	_cleanup_strbuf_ StrBuf out = {0};
	int r = expand_run(word, escape, NULL, NULL, true, NULL, &out, NULL, err);

	if (r < 0)
		return r;
	*ret = strbuf_steal(&out);
	return 0;
}
