/* File descriptor and small file helpers. Every fd opened here is O_CLOEXEC. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
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

/* rm -rf below dirfd/name without following symlinks; ENOENT is success. A directory without
 * read or search permission (a RUN step's chmod 000) is made 0700 first. Iterative (see
 * dir_walk()): any depth, a bounded number of fds. */
int rm_rf_at(int dirfd, const char *name, KilnError **err);

/* Walking a tree iteratively. Trees made by RUN steps and unpacked from layers are hostile
 * input: a 20,000-deep tree must neither overflow the stack nor need an fd per level, so the
 * walk keeps ONE directory fd (plus a transient one while listing) and goes back up through
 * ".." (checked against the device and inode it came down from: a directory moved during the
 * walk is an error, never a way out of the tree). */
typedef enum { DIR_WALK_ENTRY, DIR_WALK_LEAVE } DirWalkEvent;

/* Called for every entry below the top, each directory's entries in byte order: ENTRY (before
 * the entries of a directory, which follow when it returns 0) and, for a directory that was
 * entered, LEAVE after them. dfd is the directory holding the entry and name its name there
 * (both valid during the call only); path is prefix + "/" + the path below the top (no leading
 * "/" when prefix is ""); st is its lstat (for LEAVE: as it was at ENTRY). Returns < 0 to stop
 * the walk with that error, 0 to go on, 1 to skip a directory's entries (and its LEAVE). */
typedef int (*DirWalkFn)(void *userdata, DirWalkEvent ev, int dfd, const char *name,
			 const char *path, const struct stat *st, KilnError **err);

enum {
	DIR_WALK_UNLOCK = 1 << 0,     /* chmod 0700 a directory that cannot be opened (EACCES) */
	DIR_WALK_MISSING_OK = 1 << 1, /* an entry gone before it was visited is skipped */
};

/* Walks the tree below top_fd (which stays open and untouched). */
int dir_walk(int top_fd, const char *prefix, unsigned flags, DirWalkFn fn, void *userdata,
	     KilnError **err);

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
