/* A growable NUL-terminated string. Allocation failure aborts (see xrealloc). */
#pragma once

#include <stddef.h>

#include "common/cleanup.h"

typedef struct StrBuf {
	char *s; /* NULL until something is added */
	size_t len, cap;
} StrBuf;

void strbuf_add(StrBuf *b, const char *s, size_t n);
void strbuf_adds(StrBuf *b, const char *s);
void strbuf_addc(StrBuf *b, char c);
/* Cuts the string back to its first len bytes (len <= b->len). */
void strbuf_truncate(StrBuf *b, size_t len);
/* Returns the string (never NULL: "" when empty) and leaves b empty. */
char *strbuf_steal(StrBuf *b);
void strbuf_done(StrBuf *b);

#define _cleanup_strbuf_ _cleanup_(strbuf_done)

/* A strv (NULL-terminated) that keeps its capacity: a list that may grow to millions of words
 * (a 16 MiB Dockerfile line, a variable's value) would be quadratic with strv_consume, which
 * walks the whole list on every call. */
typedef struct StrvBuf {
	char **v; /* NULL until something is added */
	size_t n, cap;
} StrvBuf;

/* Appends s, taking ownership. */
void strvbuf_consume(StrvBuf *b, char *s);
/* Returns the strv (never NULL: an empty one when nothing was added) and leaves b empty. */
char **strvbuf_steal(StrvBuf *b);
void strvbuf_done(StrvBuf *b);

/* Untrusted text quoted in an error message: at most max bytes of s, anything but printable
 * ASCII escaped (\n, \t, \xNN) and "..." when cut, so a binary file or a secret that was not
 * a Dockerfile does not end up in a CI log. buf holds 4 * max + 4 bytes. Returns buf. */
const char *str_excerpt(char *buf, const char *s, size_t max);
#define STR_EXCERPT_MAX 80
/* An excerpt in a buffer that lives until the end of the enclosing block. */
#define EXCERPT(s) str_excerpt((char[STR_EXCERPT_MAX * 4 + 4]){0}, (s), STR_EXCERPT_MAX)
