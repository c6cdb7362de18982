#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *vformat(const char *fmt, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, fmt, ap) < 0)
		return NULL;
	return s;
}

int kiln_errorv(KilnError **err, int code, const char *fmt, va_list ap)
{
	if (code < 0)
		code = -code;
	if (code == 0)
		code = KILN_EFAIL;
	if (!err || *err)
		return -code;
	KilnError *e = calloc(1, sizeof(*e));
	if (!e)
		return -code;
	e->code = code;
	e->message = vformat(fmt, ap);
	*err = e;
	return -code;
}

int kiln_error(KilnError **err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int r = kiln_errorv(err, code, fmt, ap);
	va_end(ap);
	return r;
}

int kiln_error_errno(KilnError **err, int code, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	if (code < 0)
		code = -code;
	va_start(ap, fmt);
	msg = vformat(fmt, ap);
	va_end(ap);
	int r = kiln_error(err, code, "%s: %s", msg ? msg : "error",
			   code < KILN_EUSAGE ? strerror(code) : "failed");
	free(msg);
	return r;
}

int kiln_error_wrap(KilnError **err, int code, const char *fmt, ...)
{
	va_list ap;
	char *outer;

	if (code < 0)
		code = -code;
	va_start(ap, fmt);
	if (!err || !*err) {
		int r = kiln_errorv(err, code, fmt, ap);
		va_end(ap);
		return r;
	}
	outer = vformat(fmt, ap);
	va_end(ap);
	if (outer) {
		char *joined = NULL;
		if (asprintf(&joined, "%s: %s", outer, (*err)->message ? (*err)->message : "") >=
		    0) {
			free((*err)->message);
			(*err)->message = joined;
		}
		free(outer);
	}
	return -(*err)->code;
}

void kiln_error_free(KilnError *e)
{
	if (!e)
		return;
	free(e->message);
	free(e);
}

int kiln_error_exit_status(const KilnError *e)
{
	if (!e)
		return 0;
	if (e->exit_status)
		return e->exit_status;
	return e->code == KILN_EUSAGE ? 2 : 1;
}
