#include "dockerfile.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "expand.h"

static char *dup_n(const char *s, size_t n)
{
	char *d = xcalloc(n + 1, 1);

	memcpy(d, s, n);
	return d;
}

typedef enum ArgForm {
	FORM_STRING,	 /* one string */
	FORM_MAYBE_JSON, /* JSON array of strings, else one string */
	FORM_KEY_VALUE,	 /* ENV, LABEL */
	FORM_ARG,
	FORM_ONBUILD,
	FORM_HEALTHCHECK,
} ArgForm;

typedef struct FlagSpec {
	const char *name;
	bool boolean;
} FlagSpec;

typedef struct KeywordSpec {
	const char *name;
	ArgForm form;
	const FlagSpec *flags; /* terminated by a NULL name */
} KeywordSpec;

static const FlagSpec no_flags[] = {{NULL, false}};
static const FlagSpec from_flags[] = {{"platform", false}, {NULL, false}};
static const FlagSpec run_flags[] = {
    {"mount", false}, {"network", false}, {"security", false}, {NULL, false}};
static const FlagSpec copy_flags[] = {
    {"from", false},   {"chown", false},   {"chmod", false}, {"link", true},
    {"parents", true}, {"exclude", false}, {NULL, false},
};
static const FlagSpec add_flags[] = {
    {"chown", false},	    {"chmod", false},	{"link", true}, {"checksum", false},
    {"keep-git-dir", true}, {"exclude", false}, {NULL, false},
};
static const FlagSpec healthcheck_flags[] = {
    {"interval", false},       {"timeout", false}, {"start-period", false},
    {"start-interval", false}, {"retries", false}, {NULL, false},
};

static const KeywordSpec keywords[] = {
    {"FROM", FORM_STRING, from_flags},
    {"RUN", FORM_MAYBE_JSON, run_flags},
    {"CMD", FORM_MAYBE_JSON, no_flags},
    {"LABEL", FORM_KEY_VALUE, no_flags},
    {"MAINTAINER", FORM_STRING, no_flags},
    {"EXPOSE", FORM_STRING, no_flags},
    {"ENV", FORM_KEY_VALUE, no_flags},
    {"ADD", FORM_MAYBE_JSON, add_flags},
    {"COPY", FORM_MAYBE_JSON, copy_flags},
    {"ENTRYPOINT", FORM_MAYBE_JSON, no_flags},
    {"VOLUME", FORM_MAYBE_JSON, no_flags},
    {"USER", FORM_STRING, no_flags},
    {"WORKDIR", FORM_STRING, no_flags},
    {"ARG", FORM_ARG, no_flags},
    {"ONBUILD", FORM_ONBUILD, no_flags},
    {"STOPSIGNAL", FORM_STRING, no_flags},
    {"HEALTHCHECK", FORM_HEALTHCHECK, healthcheck_flags},
    {"SHELL", FORM_MAYBE_JSON, no_flags},
};

typedef struct Parser {
	const char *filename;
	const char *data;
	size_t len, pos;
	unsigned lineno; /* of the last line read */
	char escape;
} Parser;

static int parse_error(const Parser *p, unsigned line, KilnError **err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int parse_error(const Parser *p, unsigned line, KilnError **err, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	return kiln_error(err, KILN_EFAIL, "%s:%u: %s", p->filename, line, msg ? msg : "error");
}

static bool is_blank(int c)
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == '\n';
}

/* Next physical line without its "\n" or "\r\n"; false at end of input. */
static bool parser_next_line(Parser *p, const char **ret_line, size_t *ret_n)
{
	if (p->pos >= p->len)
		return false;
	const char *start = p->data + p->pos;
	const char *nl = memchr(start, '\n', p->len - p->pos);
	size_t n = nl ? (size_t)(nl - start) : p->len - p->pos;

	p->pos += n + (nl ? 1 : 0);
	if (n > 0 && start[n - 1] == '\r')
		n--;
	p->lineno++;
	*ret_line = start;
	*ret_n = n;
	return true;
}

static const char *skip_blank(const char *s, const char *end)
{
	while (s < end && is_blank((unsigned char)*s))
		s++;
	return s;
}

static bool line_is_comment(const char *s, size_t n)
{
	const char *t = skip_blank(s, s + n);

	return t < s + n && *t == '#';
}

static bool line_is_empty(const char *s, size_t n)
{
	return skip_blank(s, s + n) == s + n;
}

/* Strips a trailing escape char (followed only by spaces/tabs); true if it was there. */
static bool trim_continuation(const char *s, size_t *n, char escape)
{
	size_t i = *n;

	while (i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t'))
		i--;
	if (i > 0 && s[i - 1] == escape) {
		*n = i - 1;
		return true;
	}
	return false;
}

/* `# name=value`, matched like BuildKit's directive regex. false if the line is no directive. */
static bool directive_match(const char *s, size_t n, char **ret_name, char **ret_value)
{
	const char *end = s + n, *name, *value;

	s = skip_blank(s, end);
	if (s == end || *s++ != '#')
		return false;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	name = s;
	if (s == end || !isalpha((unsigned char)*s))
		return false;
	while (s < end && isalnum((unsigned char)*s))
		s++;
	size_t name_len = (size_t)(s - name);
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	if (s == end || *s++ != '=')
		return false;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	value = s;
	while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end == value)
		return false;
	*ret_name = dup_n(name, name_len);
	*ret_value = dup_n(value, (size_t)(end - value));
	for (char *c = *ret_name; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return true;
}

static int parse_directives(Parser *p, Dockerfile *df, KilnError **err)
{
	size_t saved_pos = p->pos;
	unsigned saved_line = p->lineno;
	bool seen_escape = false;
	const char *line;
	size_t n;

	/* Directives only count at the very top: the first line that is not one ends them. */
	while (parser_next_line(p, &line, &n)) {
		_cleanup_free_ char *name = NULL, *value = NULL;
		if (!directive_match(line, n, &name, &value))
			break;
		char **slot = NULL;
		if (strcmp(name, "syntax") == 0)
			slot = &df->syntax;
		else if (strcmp(name, "check") == 0)
			slot = &df->check;
		else if (strcmp(name, "escape") != 0)
			break;
		if ((slot && *slot) || (!slot && seen_escape))
			return parse_error(p, p->lineno, err,
					   "only one %s parser directive can be used", name);
		if (slot) {
			*slot = TAKE_PTR(value);
			continue;
		}
		if (strcmp(value, "\\") != 0 && strcmp(value, "`") != 0)
			return parse_error(p, p->lineno, err,
					   "invalid escape token '%s' does not match ` or \\",
					   EXCERPT(value));
		df->escape = value[0];
		seen_escape = true;
	}
	p->pos = saved_pos;
	p->lineno = saved_line;
	p->escape = df->escape;
	return 0;
}

static void heredoc_done(DfHeredoc *h)
{
	free(h->name);
	free(h->content);
}

static void kv_done(DfKeyValue *kv)
{
	free(kv->key);
	free(kv->raw_value);
	free(kv->value);
}

static void instruction_done(DfInstruction *inst)
{
	if (!inst)
		return;
	free(inst->keyword);
	strv_free(inst->flags);
	strv_free(inst->args);
	free(inst->original);
	for (size_t i = 0; i < inst->n_kvs; i++)
		kv_done(&inst->kvs[i]);
	free(inst->kvs);
	for (size_t i = 0; i < inst->n_heredocs; i++)
		heredoc_done(&inst->heredocs[i]);
	free(inst->heredocs);
	if (inst->onbuild) {
		instruction_done(inst->onbuild);
		free(inst->onbuild);
	}
	*inst = (DfInstruction){0};
}

static void instruction_donep(DfInstruction *inst)
{
	instruction_done(inst);
}

/* Splits leading `--flag[=value]` words off text, removing quotes and backslash escapes in
 * them as BuildKit does; a lone `--` ends the flags. Returns where the rest starts. */
static const char *extract_flags(const char *s, char ***flags)
{
	_cleanup_(strvbuf_done) StrvBuf list = {0};

	for (;;) {
		_cleanup_strbuf_ StrBuf word = {0};
		char quote = 0;

		while (is_blank((unsigned char)*s))
			s++;
		if (s[0] != '-' || s[1] != '-')
			break;
		while (*s && (quote || !is_blank((unsigned char)*s))) {
			if (!quote && (*s == '\'' || *s == '"')) {
				quote = *s++;
				continue;
			}
			if (quote && *s == quote) {
				quote = 0;
				s++;
				continue;
			}
			if (*s == '\\' && s[1])
				s++;
			else if (*s == '\\') {
				s++;
				continue;
			}
			strbuf_add(&word, s++, 1);
		}
		if (strcmp(word.s ? word.s : "", "--") == 0) {
			while (is_blank((unsigned char)*s))
				s++;
			break;
		}
		strvbuf_consume(&list, strbuf_steal(&word));
	}
	if (list.n)
		*flags = strvbuf_steal(&list);
	return s;
}

/* Splits on unquoted whitespace, keeping quotes and escapes in the words (BuildKit's
 * parseWords): what ENV/LABEL/ARG pairs and argument counts are made of. */
static char **split_raw_words(const char *s, char escape)
{
	_cleanup_(strvbuf_done) StrvBuf words = {0};
	_cleanup_strbuf_ StrBuf word = {0};
	char quote = 0;
	bool in_word = false;

	for (; *s; s++) {
		if (!quote && is_blank((unsigned char)*s)) {
			if (in_word)
				strvbuf_consume(&words, strbuf_steal(&word));
			in_word = false;
			continue;
		}
		in_word = true;
		if (*s == escape && (!quote || quote == '"')) {
			if (!s[1])
				break;
			strbuf_add(&word, s++, 1);
		} else if (!quote && (*s == '\'' || *s == '"'))
			quote = *s;
		else if (quote && *s == quote)
			quote = 0;
		strbuf_add(&word, s, 1);
	}
	if (in_word)
		strvbuf_consume(&words, strbuf_steal(&word));
	return strvbuf_steal(&words);
}

static int check_flags(const Parser *p, const DfInstruction *inst, const KeywordSpec *spec,
		       KilnError **err)
{
	for (char **f = inst->flags; f && *f; f++) {
		const char *name = *f + 2, *eq = strchr(name, '=');
		size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
		const FlagSpec *fs = spec->flags;

		while (fs->name &&
		       (strlen(fs->name) != name_len || strncmp(fs->name, name, name_len)))
			fs++;
		if (!fs->name) {
			_cleanup_free_ char *n = dup_n(name, name_len);
			return parse_error(p, inst->line, err, "unknown flag '--%s' for %s",
					   EXCERPT(n), spec->name);
		}
		if (!fs->boolean && !eq)
			return parse_error(p, inst->line, err,
					   "missing a value on flag '%s' for %s", EXCERPT(*f),
					   spec->name);
		if (fs->boolean && eq && strcasecmp(eq + 1, "true") && strcasecmp(eq + 1, "false"))
			return parse_error(p, inst->line, err,
					   "expecting boolean value for flag '--%s', not '%s'",
					   fs->name, EXCERPT(eq + 1));
	}
	return 0;
}

/* JSON form: 1 parsed, 0 not JSON (shell form), < 0 a JSON array with non-strings. */
static int parse_json_array(const Parser *p, DfInstruction *inst, const char *rest,
			    char ***ret_args, KilnError **err)
{
	json_t *v;
	size_t i;

	if (rest[0] != '[')
		return 0;
	json_t *arr = json_loads(rest, 0, NULL);
	if (!arr)
		return 0;
	if (!json_is_array(arr)) {
		json_decref(arr);
		return 0;
	}
	if (json_array_size(arr) > DF_MAX_ITEMS) {
		json_decref(arr);
		return parse_error(p, inst->line, err, "more than %d arguments in one instruction",
				   DF_MAX_ITEMS);
	}
	char **args = xcalloc(json_array_size(arr) + 1, sizeof(char *));
	json_array_foreach (arr, i, v) {
		if (!json_is_string(v)) {
			strv_free(args);
			json_decref(arr);
			return parse_error(p, inst->line, err,
					   "dockerfile JSON arrays must contain only strings: '%s'",
					   EXCERPT(rest));
		}
		args[i] = xstrdup(json_string_value(v));
	}
	json_decref(arr);
	*ret_args = args;
	return 1;
}

static int parse_maybe_json(const Parser *p, DfInstruction *inst, const char *rest, KilnError **err)
{
	char **args = NULL;
	int r = parse_json_array(p, inst, rest, &args, err);

	if (r < 0)
		return r;
	inst->json = r > 0;
	if (!inst->json)
		strv_push(&args, rest);
	strv_free(inst->args);
	inst->args = args;
	return 0;
}

static int unquote(const Parser *p, const DfInstruction *inst, const char *s, char **ret,
		   KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;

	if (expand_unquote(s, p->escape, ret, &e) < 0)
		return parse_error(p, inst->line, err, "%s: '%s'", e->message,
				   EXCERPT(inst->original));
	return 0;
}

static int add_kv(const Parser *p, DfInstruction *inst, const char *key, const char *raw,
		  KilnError **err)
{
	DfKeyValue kv = {0};
	int r;

	r = unquote(p, inst, key, &kv.key, err);
	if (r >= 0 && raw) {
		kv.raw_value = xstrdup(raw);
		r = unquote(p, inst, raw, &kv.value, err);
	}
	if (r >= 0 && !kv.key[0])
		r = parse_error(p, inst->line, err, "%s names can not be blank: '%s'",
				inst->keyword, EXCERPT(inst->original));
	if (r < 0) {
		kv_done(&kv);
		return r;
	}
	inst->kvs[inst->n_kvs++] = kv;
	return 0;
}

/* Room for n more pairs, so that add_kv stays linear; more than DF_MAX_ITEMS is an error. */
static int kvs_reserve(const Parser *p, DfInstruction *inst, size_t n, KilnError **err)
{
	if (n > DF_MAX_ITEMS)
		return parse_error(p, inst->line, err, "more than %d arguments in one instruction",
				   DF_MAX_ITEMS);
	inst->kvs = xcalloc(n ? n : 1, sizeof(*inst->kvs));
	return 0;
}

/* ENV/LABEL/ARG args: "KEY=VALUE" (or "KEY" for ARG without default), quotes removed. */
static void kvs_to_args(DfInstruction *inst)
{
	inst->args = xcalloc(inst->n_kvs + 1, sizeof(char *));
	for (size_t i = 0; i < inst->n_kvs; i++) {
		const DfKeyValue *kv = &inst->kvs[i];
		inst->args[i] =
		    kv->value ? xasprintf("%s=%s", kv->key, kv->value) : xstrdup(kv->key);
	}
}

/* ENV and LABEL: `K=V K2="V 2"`, or the legacy `K value with spaces`. */
static int parse_key_values(const Parser *p, DfInstruction *inst, const char *rest, KilnError **err)
{
	_cleanup_strv_free_ char **words = split_raw_words(rest, p->escape);
	int r;

	if (!words[0])
		return 0;
	r = kvs_reserve(p, inst, strchr(words[0], '=') ? strv_length(words) : 1, err);
	if (r < 0)
		return r;
	if (!strchr(words[0], '=')) {
		const char *sp = rest;
		while (*sp && !is_blank((unsigned char)*sp))
			sp++;
		const char *value = sp;
		while (is_blank((unsigned char)*value))
			value++;
		if (!*value)
			return parse_error(p, inst->line, err, "%s must have two arguments: '%s'",
					   inst->keyword, EXCERPT(inst->original));
		_cleanup_free_ char *key = dup_n(rest, (size_t)(sp - rest));
		r = add_kv(p, inst, key, value, err);
		if (r >= 0)
			kvs_to_args(inst);
		return r;
	}
	for (char **w = words; *w; w++) {
		char *eq = strchr(*w, '=');
		if (!eq)
			return parse_error(p, inst->line, err,
					   "syntax error - can't find = in '%s', must be of the "
					   "form name=value: '%s'",
					   EXCERPT(*w), EXCERPT(inst->original));
		*eq = 0;
		r = add_kv(p, inst, *w, eq + 1, err);
		if (r < 0)
			return r;
	}
	kvs_to_args(inst);
	return 0;
}

static int parse_arg(const Parser *p, DfInstruction *inst, const char *rest, KilnError **err)
{
	_cleanup_strv_free_ char **words = split_raw_words(rest, p->escape);
	int r = kvs_reserve(p, inst, strv_length(words), err);

	for (char **w = words; r >= 0 && *w; w++) {
		char *eq = strchr(*w, '=');
		if (eq)
			*eq = 0;
		r = add_kv(p, inst, *w, eq ? eq + 1 : NULL, err);
	}
	if (r < 0)
		return r;
	kvs_to_args(inst);
	return 0;
}

static int parse_healthcheck(const Parser *p, DfInstruction *inst, const char *rest,
			     KilnError **err)
{
	const char *end = rest;

	while (*end && !is_blank((unsigned char)*end))
		end++;
	_cleanup_free_ char *type = dup_n(rest, (size_t)(end - rest));
	for (char *c = type; *c; c++)
		*c = (char)toupper((unsigned char)*c);
	while (is_blank((unsigned char)*end))
		end++;
	if (strcmp(type, "NONE") == 0) {
		if (*end || inst->flags)
			return parse_error(p, inst->line, err,
					   "HEALTHCHECK NONE takes no arguments: '%s'",
					   EXCERPT(inst->original));
		strv_push(&inst->args, "NONE");
		return 0;
	}
	if (strcmp(type, "CMD") != 0)
		return parse_error(p, inst->line, err,
				   "unknown type '%s' in HEALTHCHECK (try CMD): '%s'",
				   EXCERPT(type), EXCERPT(inst->original));
	if (!*end)
		return parse_error(p, inst->line, err,
				   "missing command after HEALTHCHECK CMD: '%s'",
				   EXCERPT(inst->original));
	int r = parse_maybe_json(p, inst, end, err);
	if (r < 0)
		return r;
	size_t n = strv_length(inst->args);
	char **args = xcalloc(n + 2, sizeof(char *));
	args[0] = xstrdup("CMD");
	memcpy(args + 1, inst->args, n * sizeof(char *));
	free(inst->args);
	inst->args = args;
	return 0;
}

static bool stage_name_valid(const char *s)
{
	if (!isalpha((unsigned char)*s))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.", *s))
			return false;
	return true;
}

static int check_from(const Parser *p, const DfInstruction *inst, const char *rest, KilnError **err)
{
	_cleanup_strv_free_ char **words = split_raw_words(rest, p->escape);
	size_t n = strv_length(words);

	if (n != 1 && (n != 3 || strcasecmp(words[1], "as") != 0))
		return parse_error(p, inst->line, err,
				   "FROM requires either one or three arguments "
				   "(image [AS name]): '%s'",
				   EXCERPT(inst->original));
	if (n == 3 && !stage_name_valid(words[2]))
		return parse_error(p, inst->line, err,
				   "invalid name for build stage: '%s', name can't start with a "
				   "number or contain symbols",
				   EXCERPT(words[2]));
	return 0;
}

/* Argument counts BuildKit's instruction layer enforces. */
static int check_args(const Parser *p, const DfInstruction *inst, const char *rest, KilnError **err)
{
	const char *kw = inst->keyword;
	size_t n = strv_length(inst->args);

	if (strcmp(kw, "SHELL") == 0 && !inst->json)
		return parse_error(p, inst->line, err,
				   "SHELL requires the arguments to be in JSON form: '%s'",
				   EXCERPT(inst->original));
	if (strcmp(kw, "COPY") == 0 || strcmp(kw, "ADD") == 0) {
		_cleanup_strv_free_ char **words =
		    inst->json ? NULL : split_raw_words(rest, p->escape);
		size_t nw = inst->json ? n : strv_length(words);
		if (nw > DF_MAX_ITEMS)
			return parse_error(p, inst->line, err,
					   "more than %d arguments in one instruction",
					   DF_MAX_ITEMS);
		if (nw < 2)
			return parse_error(p, inst->line, err,
					   "%s requires at least two arguments, but only one was "
					   "provided: '%s'",
					   kw, EXCERPT(inst->original));
		return 0;
	}
	if (strcmp(kw, "FROM") == 0 && *rest)
		return check_from(p, inst, rest, err);
	/* CMD [] and ENTRYPOINT [] are how an image's command is reset. */
	if (inst->json && (strcmp(kw, "CMD") == 0 || strcmp(kw, "ENTRYPOINT") == 0))
		return 0;
	if (n == 0 || (!inst->json && n == 1 && !inst->args[0][0]))
		return parse_error(p, inst->line, err, "%s requires at least one argument: '%s'",
				   kw, EXCERPT(inst->original));
	return 0;
}

static const KeywordSpec *keyword_find(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(keywords); i++)
		if (strcasecmp(keywords[i].name, name) == 0)
			return &keywords[i];
	return NULL;
}

static int parse_instruction(const Parser *p, const char *text, unsigned line, DfInstruction *inst,
			     KilnError **err);

static int parse_onbuild(const Parser *p, DfInstruction *inst, const char *rest, KilnError **err)
{
	DfInstruction *inner = xcalloc(1, sizeof(*inner));
	int r;

	inst->onbuild = inner;
	strv_push(&inst->args, rest);
	if (!*rest)
		return 0; /* check_args reports it */
	/* checked before parsing the trigger: ONBUILD repeated a million times would recurse */
	if (strncasecmp(rest, "ONBUILD", 7) == 0 && (!rest[7] || is_blank((unsigned char)rest[7])))
		return parse_error(p, inst->line, err,
				   "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed: '%s'",
				   EXCERPT(inst->original));
	r = parse_instruction(p, rest, inst->line, inner, err);
	if (r < 0)
		return r;
	if (strcmp(inner->keyword, "FROM") == 0 || strcmp(inner->keyword, "MAINTAINER") == 0)
		return parse_error(p, inst->line, err,
				   "%s isn't allowed as an ONBUILD trigger: '%s'", inner->keyword,
				   EXCERPT(inst->original));
	return 0;
}

static int parse_args(const Parser *p, const KeywordSpec *spec, DfInstruction *inst,
		      const char *rest, KilnError **err)
{
	switch (spec->form) {
	case FORM_STRING:
		strv_push(&inst->args, rest);
		return 0;
	case FORM_MAYBE_JSON:
		return parse_maybe_json(p, inst, rest, err);
	case FORM_KEY_VALUE:
		return parse_key_values(p, inst, rest, err);
	case FORM_ARG:
		return parse_arg(p, inst, rest, err);
	case FORM_ONBUILD:
		return parse_onbuild(p, inst, rest, err);
	case FORM_HEALTHCHECK:
		if (!*rest)
			return 0;
		return parse_healthcheck(p, inst, rest, err);
	}
	return 0;
}

/* `[n]<<[-]WORD` as one shell word: a heredoc; its body is filled in by the caller. */
static int heredoc_word(const Parser *p, DfInstruction *inst, const char *word, KilnError **err)
{
	const char *s = word;

	while (isdigit((unsigned char)*s))
		s++;
	if (s[0] != '<' || s[1] != '<')
		return 0;
	s += 2;
	bool chomp = *s == '-';
	if (chomp)
		s++;
	if (!*s || strchr(s, '<'))
		return 0;
	_cleanup_free_ char *name = NULL;
	int r = unquote(p, inst, s, &name, err);
	if (r < 0)
		return r;
	if (!name[0])
		return 0;
	size_t quotes_raw = 0, quotes_name = 0;
	for (const char *c = s; *c; c++)
		quotes_raw += *c == '"' || *c == '\'';
	for (const char *c = name; *c; c++)
		quotes_name += *c == '"' || *c == '\'';
	if (inst->n_heredocs >= DF_MAX_HEREDOCS)
		return parse_error(p, inst->line, err, "more than %d heredocs in one instruction",
				   DF_MAX_HEREDOCS);
	inst->heredocs = xrealloc(inst->heredocs, (inst->n_heredocs + 1) * sizeof(DfHeredoc));
	inst->heredocs[inst->n_heredocs++] = (DfHeredoc){
	    .name = TAKE_PTR(name),
	    .expand = quotes_raw == quotes_name,
	    .chomp = chomp,
	};
	return 0;
}

static int find_heredocs(const Parser *p, DfInstruction *inst, const char *rest, KilnError **err)
{
	const char *kw = inst->keyword;

	if (inst->json || !strstr(rest, "<<") ||
	    (strcmp(kw, "RUN") != 0 && strcmp(kw, "COPY") != 0 && strcmp(kw, "ADD") != 0))
		return 0;
	_cleanup_strv_free_ char **words = split_raw_words(rest, p->escape);
	for (char **w = words; *w; w++) {
		int r = heredoc_word(p, inst, *w, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_instruction(const Parser *p, const char *text, unsigned line, DfInstruction *inst,
			     KilnError **err)
{
	const char *end = text;
	int r;

	inst->line = inst->end_line = line;
	inst->original = xstrdup(text);
	while (*end && !is_blank((unsigned char)*end))
		end++;
	_cleanup_free_ char *kw = dup_n(text, (size_t)(end - text));
	const KeywordSpec *spec = keyword_find(kw);
	if (!spec)
		return parse_error(p, line, err, "unknown instruction: '%s'", EXCERPT(kw));
	inst->keyword = xstrdup(spec->name);
	const char *rest = extract_flags(end, &inst->flags);
	r = check_flags(p, inst, spec, err);
	if (r < 0)
		return r;
	r = parse_args(p, spec, inst, rest, err);
	if (r < 0)
		return r;
	r = check_args(p, inst, rest, err);
	if (r < 0)
		return r;
	if (!inst->args)
		inst->args = xcalloc(1, sizeof(char *));
	return find_heredocs(p, inst, rest, err);
}

static void strip_leading_tabs(StrBuf *b, const char *line, size_t n)
{
	while (n > 0 && *line == '\t') {
		line++;
		n--;
	}
	strbuf_add(b, line, n);
}

static int read_heredoc_bodies(Parser *p, DfInstruction *target, KilnError **err)
{
	for (size_t i = 0; i < target->n_heredocs; i++) {
		DfHeredoc *h = &target->heredocs[i];
		_cleanup_strbuf_ StrBuf body = {0};
		const char *line;
		size_t n;
		bool terminated = false;

		while (parser_next_line(p, &line, &n)) {
			const char *t = line;
			size_t tn = n;
			if (h->chomp)
				while (tn > 0 && *t == '\t')
					t++, tn--;
			if (tn == strlen(h->name) && memcmp(t, h->name, tn) == 0) {
				terminated = true;
				break;
			}
			if (h->chomp)
				strip_leading_tabs(&body, line, n);
			else
				strbuf_add(&body, line, n);
			strbuf_add(&body, "\n", 1);
		}
		if (!terminated)
			return parse_error(p, target->line, err, "unterminated heredoc: '<<%s%s'",
					   h->chomp ? "-" : "", EXCERPT(h->name));
		h->content = strbuf_steal(&body);
	}
	return 0;
}

/* Reads one logical line (continuations joined, comments dropped) into *text; false at EOF. */
static bool read_logical_line(Parser *p, StrBuf *text, unsigned *ret_first)
{
	const char *line;
	size_t n;

	while (parser_next_line(p, &line, &n)) {
		if (line_is_comment(line, n))
			continue;
		const char *t = skip_blank(line, line + n);
		n -= (size_t)(t - line);
		bool more = trim_continuation(t, &n, p->escape);
		if (!more && n == 0)
			continue;
		*ret_first = p->lineno;
		strbuf_add(text, t, n);
		while (more && parser_next_line(p, &line, &n)) {
			if (line_is_comment(line, n) || line_is_empty(line, n))
				continue;
			more = trim_continuation(line, &n, p->escape);
			strbuf_add(text, line, n);
		}
		return true;
	}
	return false;
}

static char *trim_dup(const char *s)
{
	const char *e = s + strlen(s);

	while (is_blank((unsigned char)*s))
		s++;
	while (e > s && is_blank((unsigned char)e[-1]))
		e--;
	return dup_n(s, (size_t)(e - s));
}

static size_t instruction_items(const DfInstruction *inst)
{
	/* ENV/LABEL/ARG args repeat their pairs */
	size_t n = strv_length(inst->flags) +
		   (inst->n_kvs ? inst->n_kvs : strv_length(inst->args)) + inst->n_heredocs;

	return inst->onbuild ? n + instruction_items(inst->onbuild) : n;
}

/* The caps on what later stages loop over (dockerfile.h). */
static int check_totals(const Parser *p, const Dockerfile *df, const DfInstruction *inst,
			size_t *total, KilnError **err)
{
	size_t items = instruction_items(inst);

	if (df->n_insts >= DF_MAX_INSTRUCTIONS)
		return parse_error(p, inst->line, err, "more than %d instructions",
				   DF_MAX_INSTRUCTIONS);
	if (items > DF_MAX_ITEMS)
		return parse_error(p, inst->line, err, "more than %d arguments in one instruction",
				   DF_MAX_ITEMS);
	*total += items;
	if (*total > DF_MAX_ITEMS_TOTAL)
		return parse_error(p, inst->line, err, "more than %d arguments in the Dockerfile",
				   DF_MAX_ITEMS_TOTAL);
	return 0;
}

static int parse_body(Parser *p, Dockerfile *df, KilnError **err)
{
	bool seen_from = false;
	size_t total = 0;
	unsigned first;

	for (;;) {
		_cleanup_strbuf_ StrBuf raw = {0};
		_cleanup_(instruction_donep) DfInstruction inst = {0};
		if (!read_logical_line(p, &raw, &first))
			break;
		_cleanup_free_ char *text = trim_dup(raw.s ? raw.s : "");
		if (!*text)
			continue;
		int r = parse_instruction(p, text, first, &inst, err);
		if (r >= 0)
			r = check_totals(p, df, &inst, &total, err);
		if (r < 0)
			return r;
		if (strcmp(inst.keyword, "FROM") == 0)
			seen_from = true;
		else if (!seen_from && strcmp(inst.keyword, "ARG") != 0)
			return parse_error(p, first, err,
					   "only ARG may come before the first FROM: '%s'",
					   EXCERPT(inst.original));
		DfInstruction *target = inst.onbuild ? inst.onbuild : &inst;
		r = read_heredoc_bodies(p, target, err);
		if (r < 0)
			return r;
		inst.end_line = target->end_line = p->lineno;
		if ((df->n_insts & (df->n_insts - 1)) == 0) /* grows at powers of two */
			df->insts = xrealloc(df->insts, (df->n_insts ? df->n_insts * 2 : 1) *
							    sizeof(*df->insts));
		df->insts[df->n_insts++] = inst;
		inst = (DfInstruction){0};
	}
	if (df->n_insts == 0)
		return kiln_error(err, KILN_EFAIL, "%s: file with no instructions", p->filename);
	return 0;
}

int dockerfile_parse(const char *filename, const char *data, size_t len, Dockerfile **ret,
		     KilnError **err)
{
	_cleanup_(dockerfile_freep) Dockerfile *df = xcalloc(1, sizeof(*df));
	Parser p = {
	    .filename = filename ? filename : "Dockerfile", .data = data ? data : "", .len = len};
	int r;

	data = p.data;

	df->filename = xstrdup(p.filename);
	df->escape = '\\';
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		p.pos = 3;
	const char *nul = memchr(data, 0, len);
	if (nul) {
		unsigned line = 1;
		for (const char *c = data; c < nul; c++)
			line += *c == '\n';
		return parse_error(&p, line, err, "NUL byte in Dockerfile");
	}
	r = parse_directives(&p, df, err);
	if (r < 0)
		return r;
	r = parse_body(&p, df, err);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(df);
	return 0;
}

void dockerfile_free(Dockerfile *df)
{
	if (!df)
		return;
	for (size_t i = 0; i < df->n_insts; i++)
		instruction_done(&df->insts[i]);
	free(df->insts);
	free(df->filename);
	free(df->syntax);
	free(df->check);
	free(df);
}

static const char *flag_match(const char *flag, const char *name)
{
	size_t n = strlen(name);

	if (strncmp(flag, "--", 2) != 0 || strncmp(flag + 2, name, n) != 0)
		return NULL;
	if (flag[2 + n] == '=')
		return flag + 3 + n;
	if (flag[2 + n] == 0)
		return "";
	return NULL;
}

const char *df_instruction_flag(const DfInstruction *inst, const char *name)
{
	const char *found = NULL;

	if (strncmp(name, "--", 2) == 0)
		name += 2;
	for (char **f = inst->flags; f && *f; f++) {
		const char *v = flag_match(*f, name);
		if (v)
			found = v;
	}
	return found;
}

char **df_instruction_flag_all(const DfInstruction *inst, const char *name)
{
	char **all = xcalloc(1, sizeof(char *));

	if (strncmp(name, "--", 2) == 0)
		name += 2;
	for (char **f = inst->flags; f && *f; f++) {
		const char *v = flag_match(*f, name);
		if (v)
			strv_push(&all, v);
	}
	return all;
}
