/* Word expansion with the semantics of BuildKit's shell lexer (frontend/dockerfile/shell):
 * quote removal, escapes and ${} parameter expansion, as applied to ENV, ARG, COPY, WORKDIR... */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* Every word comes from a Dockerfile, a build arg or a base image's config: hostile input. One
 * word expands to at most EXPAND_MAX_WORD bytes, `${` nests at most EXPAND_MAX_DEPTH deep, a
 * pattern (${V#p} ${V/p/r}) is at most EXPAND_MAX_PATTERN bytes and matching it does at most
 * EXPAND_MAX_MATCH_WORK steps per word (it is linear in the value for the patterns people write).
 * A caller expanding many words shares one budget (EXPAND_MAX_TOTAL suggested) so that doubling
 * a variable from line to line stops early; each limit is an E2BIG or ELOOP error. */
#define EXPAND_MAX_WORD ((size_t)4 << 20)
#define EXPAND_MAX_DEPTH 64
#define EXPAND_MAX_PATTERN ((size_t)64 << 10)
#define EXPAND_MAX_MATCH_WORK ((size_t)1 << 25)
#define EXPAND_MAX_TOTAL ((size_t)64 << 20)

/* Returns the value of a variable, or NULL when unset. */
typedef const char *(*ExpandLookupFn)(void *userdata, const char *name);

/* Expands one word: quotes removed, escapes honoured (escape char given), $V ${V} and modifiers
 * ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?msg} ${V?msg} ${V#p} ${V##p} ${V%p} ${V%%p} ${V/p/r} ${V//p/r}
 * (p a glob pattern: * ? [a-z] [!a] and escapes). Whitespace is kept.
 * Single quotes are literal; in double quotes the escape char only escapes '"', '$', itself and
 * a newline. An unquoted escape char makes the next character literal (a trailing one is dropped).
 * Errors (EINVAL, message without file:line): bad substitution, unterminated quote or brace,
 * unsupported modifier, ${V:?msg} with V unset or empty ("V: msg"); and the limits above.
 * budget (may be NULL): bytes the caller's expansions may still produce, reduced by the result's
 * length; running out is an E2BIG error. */
int expand_word(const char *word, char escape, ExpandLookupFn lookup, void *userdata,
		size_t *budget, char **ret, KilnError **err);

/* Same, but splits the result on unquoted whitespace into words (COPY/ADD/EXPOSE/VOLUME/ARG in
 * shell form): `COPY "a b" c` -> ["a b","c"]. Unquoted variable values are split too; empty
 * words are dropped. Returns a NULL-terminated strv (caller frees with strv_free). */
int expand_words(const char *text, char escape, ExpandLookupFn lookup, void *userdata,
		 size_t *budget, char ***ret, KilnError **err);

/* Removes quotes and escapes like expand_word() but expands nothing: `$V` and `${...}` stay as
 * written. Used for display values (`kiln parse`) and heredoc delimiters. Errors: unterminated
 * quote. */
int expand_unquote(const char *word, char escape, char **ret, KilnError **err);

/* True if the whole of s matches the shell glob pattern (as used by ${V#p}): `*` matches any
 * characters (including '/'), `?` one character, `[...]` a class (`!` or `^` negates), the
 * escape char makes the next character literal. Linear time for a pattern without `*`; at most
 * O(plen * slen) steps with stars. */
bool expand_glob_match(const char *pattern, size_t plen, const char *s, size_t slen, char escape);
