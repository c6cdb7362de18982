/* Errors that carry an errno and a message through the call chain.
 *
 * A function that can fail returns int (< 0 on failure) and takes `KilnError **err` last.
 * The constructors return the negative errno so a failure path is one line:
 *     return kiln_error(err, errno, "open '%s'", path);
 */
#pragma once

#include <stdarg.h>

typedef struct KilnError {
	int code;	 /* positive errno, or KILN_EUSAGE / KILN_EFAIL */
	char *message;	 /* lowercase, no trailing period */
	int exit_status; /* 0: derive from code; else the process exit status to use */
} KilnError;

/* Not an errno: a usage error (exit 2) and a generic failure (exit 1). */
#define KILN_EUSAGE 10001
#define KILN_EFAIL 10002

/* Fills *err (when err and *err is NULL: the first error wins) and returns -code.
 * code 0 is taken as KILN_EFAIL. */
int kiln_error(KilnError **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int kiln_errorv(KilnError **err, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Like kiln_error() but appends ": strerror(code)" to the message. */
int kiln_error_errno(KilnError **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing error's message with outer context ("context: inner"); returns -code.
 * If *err is NULL, behaves like kiln_error(err, code, ...). */
int kiln_error_wrap(KilnError **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void kiln_error_free(KilnError *e);
static inline void kiln_error_freep(KilnError **e)
{
	kiln_error_free(*e);
	*e = 0;
}
#define _cleanup_error_ __attribute__((cleanup(kiln_error_freep)))

/* The process exit status that main() uses for this error: 2 for usage errors, else 1. */
int kiln_error_exit_status(const KilnError *e);
