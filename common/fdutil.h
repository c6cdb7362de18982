/* File descriptor and small file helpers. Every fd opened here is O_CLOEXEC. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

/* Writes all of buf, retrying on EINTR and short writes. Returns 0 or -errno. */
int write_all(int fd, const void *buf, size_t len);

/* Reads until EOF into a NUL-terminated malloc'd buffer. Fails with EFBIG past max bytes. */
int read_all_fd(int fd, size_t max, char **ret_data, size_t *ret_len, KilnError **err);

/* Reads a whole file (relative to dirfd, AT_FDCWD for cwd). */
int read_file_at(int dirfd, const char *path, size_t max, char **ret_data, size_t *ret_len,
		 KilnError **err);

/* For files read from a build context or an image root (hostile trees): the caller opens fd
 * with O_NONBLOCK, so that opening a FIFO cannot hang; this refuses anything but a regular file
 * (EINVAL, "'what' is a FIFO, not a regular file") and clears O_NONBLOCK. */
int fd_require_regular(int fd, const char *what, KilnError **err);

/* fd_require_regular, then refuses a file over max bytes (EFBIG) and reads it like
 * read_all_fd. what names the file in errors. */
int read_regular_fd(int fd, const char *what, size_t max, char **ret_data, size_t *ret_len,
		    KilnError **err);

/* Writes a file atomically: temp file in the same dir, fsync, rename. */
int write_file_atomic_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode,
			 KilnError **err);

/* mkdir -p for a host path (not inside an image root: see rootfs.h for that). */
int mkdir_p(const char *path, mode_t mode, KilnError **err);
/* The same for an output the user named: each directory it makes is given to the user
 * (owner_give_at, see owner.h). */
int mkdir_p_owned(const char *path, mode_t mode, KilnError **err);
/* mkdirat for an output: a directory it makes is given to the user; one that exists is left as
 * it is (0). Returns 0 or -errno. */
int mkdirat_owned(int dfd, const char *name, mode_t mode);

/* The names in directory dfd (not "." or ".."), sorted bytewise, as a strv. dfd stays open and
 * its position is untouched (a duplicate is read). */
int dir_list_sorted(int dfd, char ***ret_names, KilnError **err);

/* rm -rf below dirfd/name without following symlinks; ENOENT is success. */
int rm_rf_at(int dirfd, const char *name, KilnError **err);

/* Strings: NULL-terminated arrays of malloc'd strings. */
size_t strv_length(char *const *v);
/* Appends a copy of s; returns 0 or -ENOMEM. */
int strv_push(char ***v, const char *s);
/* Appends s, taking ownership; returns 0 or -ENOMEM (s is freed on failure). */
int strv_consume(char ***v, char *s);
char **strv_copy(char *const *v);

/* malloc'd printf; aborts on out-of-memory (the only allocation policy that keeps error paths
 * short for strings this small). */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xstrdup(const char *s);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
