#include "strbuf.h"

#include <string.h>

#include "common/fdutil.h"

void strbuf_add(StrBuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = 0;
}

void strbuf_adds(StrBuf *b, const char *s)
{
	strbuf_add(b, s, strlen(s));
}

void strbuf_addc(StrBuf *b, char c)
{
	strbuf_add(b, &c, 1);
}

char *strbuf_steal(StrBuf *b)
{
	char *s = b->s ? b->s : xstrdup("");

	*b = (StrBuf){0};
	return s;
}

void strbuf_done(StrBuf *b)
{
	free(b->s);
	*b = (StrBuf){0};
}
