/* Who gets the files kiln writes for the user outside its store (outputs, reports, caches).
 *
 * kiln works inside its own user namespace as uid 0. Rootless, that is the calling user, and
 * new files are already theirs. As root it is the first id of an unprivileged range (a build
 * step must never be host root) and host root is another id of the namespace: without a chown
 * the user's outputs would belong to that range. */
#pragma once

#include <sys/types.h>

/* Sets the ids (of the current user namespace) that stand for the calling user. Until it is
 * called, or when they are 0/0, the functions below do nothing. */
void owner_set(uid_t uid, gid_t gid);

/* fchown(fd) to the user's ids. Returns 0 or -errno. */
int owner_give_fd(int fd);

/* fchownat(dirfd, name, ..., AT_SYMLINK_NOFOLLOW) to the user's ids (a symlink itself is given,
 * never what it points to). Returns 0 or -errno. */
int owner_give_at(int dirfd, const char *name);
