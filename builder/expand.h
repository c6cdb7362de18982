/* Word expansion with the semantics of BuildKit's shell lexer (frontend/dockerfile/shell):
 * quote removal, escapes and ${} parameter expansion, as applied to ENV, ARG, COPY, WORKDIR... */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* Returns the value of a variable, or NULL when unset. */
typedef const char *(*ExpandLookupFn)(void *userdata, const char *name);

/* Expands one word: quotes removed, escapes honoured (escape char given), $V ${V} and modifiers
 * ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?msg} ${V?msg} ${V#p} ${V##p} ${V%p} ${V%%p} ${V/p/r} ${V//p/r}
 * (p a glob pattern: * ? [a-z] [!a] and escapes). Whitespace is kept.
 * Single quotes are literal; in double quotes the escape char only escapes '"', '$', itself and
 * a newline. An unquoted escape char makes the next character literal (a trailing one is dropped).
 * Errors (EINVAL, message without file:line): bad substitution, unterminated quote or brace,
 * unsupported modifier, ${V:?msg} with V unset or empty ("V: msg"). */
int expand_word(const char *word, char escape, ExpandLookupFn lookup, void *userdata, char **ret,
		KilnError **err);

/* Same, but splits the result on unquoted whitespace into words (COPY/ADD/EXPOSE/VOLUME/ARG in
 * shell form): `COPY "a b" c` -> ["a b","c"]. Unquoted variable values are split too; empty
 * words are dropped. Returns a NULL-terminated strv (caller frees with strv_free). */
int expand_words(const char *text, char escape, ExpandLookupFn lookup, void *userdata, char ***ret,
		 KilnError **err);

/* Removes quotes and escapes like expand_word() but expands nothing: `$V` and `${...}` stay as
 * written. Used for display values (`kiln parse`) and heredoc delimiters. Errors: unterminated
 * quote. */
int expand_unquote(const char *word, char escape, char **ret, KilnError **err);

/* True if the whole of s matches the shell glob pattern (as used by ${V#p}): `*` matches any
 * characters (including '/'), `?` one character, `[...]` a class (`!` or `^` negates), the
 * escape char makes the next character literal. */
bool expand_glob_match(const char *pattern, size_t plen, const char *s, size_t slen, char escape);
