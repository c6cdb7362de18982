/* Scope-bound ownership: every owned local carries one of these. */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

static inline void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

/* Frees a NULL-terminated array of strings and the array. */
void strv_free(char **v);
static inline void strv_freep(char ***v)
{
	strv_free(*v);
}

/* A string that held a secret (a password, a token): overwritten, then freed. Takes NULL. */
static inline void secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static inline void secret_freep(char **s)
{
	secret_free(*s);
	*s = NULL;
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_secret_ _cleanup_(secret_freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)
#define _cleanup_strv_free_ _cleanup_(strv_freep)

/* Moves ownership out of a cleanup-owned variable. */
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _tp = (p);                                                           \
		(p) = NULL;                                                                        \
		_tp;                                                                               \
	})

#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _tf = (fd);                                                                    \
		(fd) = -1;                                                                         \
		_tf;                                                                               \
	})

/* Declares a `name##p` cleanup helper for a `name()` destructor that takes NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
	static inline void func##p(type *p)                                                        \
	{                                                                                          \
		func(*p);                                                                          \
	}

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
