#include "dockerignore.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"

typedef enum TokKind {
	TOK_CHAR,	 /* one literal character */
	TOK_ANY,	 /* ? : one character but '/' */
	TOK_CLASS,	 /* [...] */
	TOK_STAR,	 /* * : any run of characters but '/' */
	TOK_DSTAR,	 /* trailing or leading ** : anything */
	TOK_DSTAR_SLASH, /* ** elsewhere, regexp "(.*[/])?": consumes nothing, may skip the body */
	TOK_DSTAR_BODY,	 /* ...its ".*[/]" part, always right after TOK_DSTAR_SLASH */
} TokKind;

typedef struct Tok {
	TokKind kind;
	uint32_t c;	  /* TOK_CHAR */
	size_t class_off; /* TOK_CLASS: offset of the text after '[' */
} Tok;

typedef struct Pattern {
	char *text; /* cleaned, without '!' */
	bool exclusion;
	Tok *toks;
	size_t n_toks;
} Pattern;

struct DockerIgnore {
	Pattern *pats;
	size_t n_pats;
};

/* Decodes one UTF-8 sequence; an invalid byte stands for itself. */
static uint32_t utf8_next(const char *s, size_t n, size_t *adv)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len = u[0] < 0x80	 ? 1
		     : (u[0] >> 5) == 6	 ? 2
		     : (u[0] >> 4) == 14 ? 3
		     : (u[0] >> 3) == 30 ? 4
					 : 0;
	uint32_t c;

	if (len <= 1 || len > n) {
		*adv = 1;
		return u[0];
	}
	c = u[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((u[i] & 0xc0) != 0x80) {
			*adv = 1;
			return u[0];
		}
		c = (c << 6) | (u[i] & 0x3f);
	}
	*adv = len;
	return c;
}

/* Go's getEsc: one class character, possibly escaped; -1 when malformed. */
static int64_t class_char(const char *p, size_t n, size_t *i)
{
	size_t adv;

	if (*i >= n || p[*i] == '-' || p[*i] == ']')
		return -1;
	if (p[*i] == '\\' && ++*i >= n)
		return -1;
	uint32_t c = utf8_next(p + *i, n - *i, &adv);
	*i += adv;
	if (*i >= n)
		return -1;
	return c;
}

/* Walks a class after '[' (and '^'); returns whether rune r is in it, or -1 if malformed.
 * *i ends after the closing ']'. */
static int class_scan(const char *p, size_t n, size_t *i, uint32_t r)
{
	bool match = false;

	for (size_t nrange = 0;; nrange++) {
		if (*i < n && p[*i] == ']' && nrange > 0) {
			(*i)++;
			return match;
		}
		int64_t lo = class_char(p, n, i), hi = lo;
		if (lo < 0)
			return -1;
		if (p[*i] == '-') {
			(*i)++;
			hi = class_char(p, n, i);
			if (hi < 0)
				return -1;
		}
		if (lo <= r && r <= hi)
			match = true;
	}
}

/* Go's filepath.Match syntax check. */
static bool pattern_valid(const char *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		if (p[i] == '\\') {
			if (i + 1 >= n)
				return false;
			i += 2;
		} else if (p[i] == '[') {
			i++;
			if (i < n && p[i] == '^')
				i++;
			if (class_scan(p, n, &i, 0) < 0)
				return false;
		} else
			i++;
	}
	return true;
}

static bool rest_is_literal(const char *p, size_t n, size_t i)
{
	for (; i < n; i++) {
		if (p[i] == '\\')
			i++;
		else if (p[i] == '*' || p[i] == '?' || p[i] == '[')
			return false;
	}
	return true;
}

static void tok_push(Tok **toks, size_t *n, Tok t)
{
	*toks = xrealloc(*toks, (*n + 1) * sizeof(Tok));
	(*toks)[(*n)++] = t;
}

/* Translates a (valid) pattern like patternmatcher's regexp compiler does. */
static Tok *pattern_compile(const char *p, size_t n, size_t *ret_n)
{
	Tok *toks = NULL;
	size_t nt = 0, adv;

	for (size_t i = 0; i < n;) {
		if (p[i] == '*' && i + 1 < n && p[i + 1] == '*') {
			bool leading = i == 0;
			i += 2;
			bool slash = i < n && p[i] == '/';
			if (slash)
				i++;
			/* "**" at the end matches everything, like .gitignore; a leading "**"
			 * before a literal is a suffix match ("**.txt") */
			bool any = i >= n || (leading && !slash && rest_is_literal(p, n, i));
			tok_push(&toks, &nt, (Tok){.kind = any ? TOK_DSTAR : TOK_DSTAR_SLASH});
			if (!any)
				tok_push(&toks, &nt, (Tok){.kind = TOK_DSTAR_BODY});
		} else if (p[i] == '*') {
			tok_push(&toks, &nt, (Tok){.kind = TOK_STAR});
			i++;
		} else if (p[i] == '?') {
			tok_push(&toks, &nt, (Tok){.kind = TOK_ANY});
			i++;
		} else if (p[i] == '[') {
			tok_push(&toks, &nt, (Tok){.kind = TOK_CLASS, .class_off = i + 1});
			i++;
			if (i < n && p[i] == '^')
				i++;
			class_scan(p, n, &i, 0);
		} else {
			if (p[i] == '\\' && i + 1 < n)
				i++;
			uint32_t c = utf8_next(p + i, n - i, &adv);
			tok_push(&toks, &nt, (Tok){.kind = TOK_CHAR, .c = c});
			i += adv;
		}
	}
	*ret_n = nt;
	return toks;
}

static bool tok_step(const char *text, size_t text_len, const Tok *t, uint32_t r, bool *stay)
{
	*stay = false;
	switch (t->kind) {
	case TOK_CHAR:
		return r == t->c;
	case TOK_ANY:
		return r != '/';
	case TOK_CLASS: {
		size_t i = t->class_off;
		bool neg = i < text_len && text[i] == '^';
		if (neg)
			i++;
		int m = class_scan(text, text_len, &i, r);
		return m >= 0 && (m > 0) != neg;
	}
	case TOK_STAR:
		*stay = r != '/';
		return false;
	case TOK_DSTAR:
		*stay = true;
		return false;
	case TOK_DSTAR_SLASH:
		return false;
	case TOK_DSTAR_BODY:
		*stay = true;
		return r == '/';
	}
	return false;
}

/* Epsilon moves: a star may match nothing, a "(.*[/])?" group may be skipped. */
static void closure(const Tok *toks, size_t nt, bool *set)
{
	for (size_t i = 0; i < nt; i++) {
		if (!set[i])
			continue;
		if (toks[i].kind == TOK_STAR || toks[i].kind == TOK_DSTAR)
			set[i + 1] = true;
		if (toks[i].kind == TOK_DSTAR_SLASH)
			set[i + 1] = set[i + 2] = true;
	}
}

/* NFA simulation: linear in len(s) * tokens, no backtracking blow-up on hostile patterns. */
static bool toks_match(const char *text, const Tok *toks, size_t nt, const char *s, size_t n)
{
	_cleanup_free_ bool *cur = xcalloc(nt + 1, sizeof(bool));
	_cleanup_free_ bool *next = xcalloc(nt + 1, sizeof(bool));
	size_t text_len = strlen(text), adv;

	cur[0] = true;
	closure(toks, nt, cur);
	for (size_t pos = 0; pos < n; pos += adv) {
		uint32_t r = utf8_next(s + pos, n - pos, &adv);
		bool any = false;
		memset(next, 0, (nt + 1) * sizeof(bool));
		for (size_t i = 0; i < nt; i++) {
			bool stay;
			if (!cur[i])
				continue;
			if (tok_step(text, text_len, &toks[i], r, &stay))
				next[i + 1] = any = true;
			if (stay)
				next[i] = any = true;
		}
		if (!any)
			return false;
		closure(toks, nt, next);
		bool *tmp = cur;
		cur = next;
		next = tmp;
	}
	return cur[nt];
}

static bool pattern_match(const Pattern *pat, const char *s, size_t n)
{
	return toks_match(pat->text, pat->toks, pat->n_toks, s, n);
}

/* Go's filepath.Clean for '/'-separated paths. */
static char *path_clean(const char *p)
{
	bool rooted = p[0] == '/';
	size_t n = strlen(p), len = 0;
	char *out = xcalloc(n + 2, 1);

	if (rooted)
		out[len++] = '/';
	size_t base = len;
	for (const char *s = p; *s;) {
		const char *e = strchr(s, '/');
		size_t sl = e ? (size_t)(e - s) : strlen(s);
		if (sl == 0 || (sl == 1 && s[0] == '.')) {
		} else if (sl == 2 && s[0] == '.' && s[1] == '.') {
			char *last = len > base ? memrchr(out + base, '/', len - base) : NULL;
			const char *seg = last ? last + 1 : out + base;
			if (len > base && strcmp(seg, "..") != 0)
				len = last ? (size_t)(last - out) : base;
			else if (!rooted) {
				if (len > base)
					out[len++] = '/';
				memcpy(out + len, "..", 2);
				len += 2;
			}
		} else {
			if (len > base)
				out[len++] = '/';
			memcpy(out + len, s, sl);
			len += sl;
		}
		out[len] = 0;
		s += sl + (e ? 1 : 0);
	}
	if (len == 0)
		out[len++] = '.';
	out[len] = 0;
	return out;
}

static char *trim(char *s)
{
	char *e = s + strlen(s);

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\v' || *s == '\f')
		s++;
	while (e > s &&
	       (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\v' || e[-1] == '\f'))
		*--e = 0;
	return s;
}

static int add_pattern(DockerIgnore *di, char *line, unsigned lineno, KilnError **err)
{
	bool exclusion = line[0] == '!';
	_cleanup_free_ char *clean = NULL;

	if (exclusion)
		line = trim(line + 1);
	if (!*line)
		return kiln_error(err, EINVAL, "illegal exclusion pattern on line %u: '!'", lineno);
	clean = path_clean(line);
	const char *p = clean[0] == '/' && clean[1] ? clean + 1 : clean;
	if (!pattern_valid(p, strlen(p)))
		return kiln_error(err, EINVAL, "syntax error in pattern on line %u: '%s'", lineno,
				  EXCERPT(line));
	/* every path of the context is checked against every pattern */
	if (di->n_pats >= DOCKERIGNORE_MAX_PATTERNS)
		return kiln_error(err, E2BIG, "more than %d patterns (line %u)",
				  DOCKERIGNORE_MAX_PATTERNS, lineno);
	Pattern pat = {.text = xstrdup(p), .exclusion = exclusion};
	pat.toks = pattern_compile(pat.text, strlen(pat.text), &pat.n_toks);
	di->pats = xrealloc(di->pats, (di->n_pats + 1) * sizeof(Pattern));
	di->pats[di->n_pats++] = pat;
	return 0;
}

int dockerignore_parse(const char *data, size_t len, DockerIgnore **ret, KilnError **err)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = xcalloc(1, sizeof(*di));
	unsigned lineno = 0;

	if (!data)
		data = "";
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		data += 3, len -= 3;
	for (size_t pos = 0; pos < len;) {
		const char *start = data + pos, *nl = memchr(start, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - start) : len - pos;
		lineno++;
		pos += n + 1;
		if (memchr(start, 0, n))
			return kiln_error(err, EINVAL, "NUL byte on line %u", lineno);
		_cleanup_free_ char *line = xcalloc(n + 1, 1);
		memcpy(line, start, n);
		/* only a '#' in the very first column starts a comment (moby ignorefile) */
		if (line[0] == '#')
			continue;
		char *t = trim(line);
		if (!*t)
			continue;
		int r = add_pattern(di, t, lineno, err);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(di);
	return 0;
}

void dockerignore_free(DockerIgnore *di)
{
	if (!di)
		return;
	for (size_t i = 0; i < di->n_pats; i++) {
		free(di->pats[i].text);
		free(di->pats[i].toks);
	}
	free(di->pats);
	free(di);
}

bool dockerignore_excluded(const DockerIgnore *di, const char *path)
{
	size_t n = strlen(path);
	bool matched = false;

	for (size_t i = 0; i < di->n_pats; i++) {
		const Pattern *pat = &di->pats[i];
		/* an exclusion only matters once matched, an inclusion only before */
		if (pat->exclusion != matched)
			continue;
		bool m = pattern_match(pat, path, n);
		for (size_t k = 0; !m && k < n; k++)
			if (path[k] == '/')
				m = pattern_match(pat, path, k);
		if (m)
			matched = !pat->exclusion;
	}
	return matched;
}

static bool segment_match(const char *pat, size_t plen, const char *s, size_t slen)
{
	_cleanup_free_ char *text = xcalloc(plen + 1, 1);
	size_t nt;

	memcpy(text, pat, plen);
	_cleanup_free_ Tok *toks = pattern_compile(text, plen, &nt);
	return toks_match(text, toks, nt, s, slen);
}

/* Could pattern match dirpath/something? Compares leading path segments; anything with "**"
 * before the first mismatch is taken as possible. */
static bool pattern_may_match_below(const Pattern *pat, const char *dir)
{
	const char *p = pat->text;

	for (;;) {
		const char *pe = strchrnul(p, '/'), *de = strchrnul(dir, '/');
		if (!*p)
			return true;
		/* a class or escape spanning a '/' cannot be judged segment by segment */
		if (memmem(p, (size_t)(pe - p), "**", 2) || !pattern_valid(p, (size_t)(pe - p)))
			return true;
		if (!segment_match(p, (size_t)(pe - p), dir, (size_t)(de - dir)))
			return false;
		if (!*de || !*pe)
			return true;
		p = pe + 1;
		dir = de + 1;
	}
}

bool dockerignore_may_include_below(const DockerIgnore *di, const char *dirpath)
{
	for (size_t i = 0; i < di->n_pats; i++)
		if (di->pats[i].exclusion && pattern_may_match_below(&di->pats[i], dirpath))
			return true;
	return false;
}
