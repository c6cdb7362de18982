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
/* Returns the string (never NULL: "" when empty) and leaves b empty. */
char *strbuf_steal(StrBuf *b);
void strbuf_done(StrBuf *b);

#define _cleanup_strbuf_ _cleanup_(strbuf_done)
