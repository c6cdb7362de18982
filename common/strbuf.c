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

void strbuf_truncate(StrBuf *b, size_t len)
{
	if (b->s && len < b->len) {
		b->len = len;
		b->s[len] = 0;
	}
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

void strvbuf_consume(StrvBuf *b, char *s)
{
	if (b->n + 2 > b->cap) {
		b->cap = b->cap ? b->cap * 2 : 8;
		b->v = xrealloc(b->v, b->cap * sizeof(char *));
	}
	b->v[b->n++] = s;
	b->v[b->n] = NULL;
}

char **strvbuf_steal(StrvBuf *b)
{
	char **v = b->v ? b->v : xcalloc(1, sizeof(char *));

	*b = (StrvBuf){0};
	return v;
}

void strvbuf_done(StrvBuf *b)
{
	strv_free(b->v);
	*b = (StrvBuf){0};
}

const char *str_excerpt(char *buf, const char *s, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i = 0;

	for (; s[i] && i < max; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f) {
			buf[o++] = (char)c;
			continue;
		}
		buf[o++] = '\\';
		if (c == '\n' || c == '\t') {
			buf[o++] = c == '\n' ? 'n' : 't';
			continue;
		}
		buf[o++] = 'x';
		buf[o++] = hex[c >> 4];
		buf[o++] = hex[c & 15];
	}
	if (s[i]) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = 0;
	return buf;
}
