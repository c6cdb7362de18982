/* Resolving paths inside an image root. Image trees and layer tars are hostile input: absolute
 * symlinks and ".." must never lead outside the root, so paths are never joined as strings. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "error.h"

/* Opens path inside the tree rooted at root_fd as if root_fd were "/": absolute symlinks and ".."
 * never leave it. openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS) when the kernel has it, else a
 * component-by-component walk with the same result. O_CLOEXEC is always added; O_NOFOLLOW keeps
 * the last component from being followed. Returns an fd or -errno. */
int rootfs_open(int root_fd, const char *path, int flags, mode_t mode);

/* rootfs_open() for a path none of whose components is a symlink (RESOLVE_NO_SYMLINKS): -ELOOP
 * when one is, -ENOSYS where openat2() is missing or the fallback is forced (the caller then
 * walks the components itself). */
int rootfs_open_no_symlinks(int root_fd, const char *path, int flags);

/* Resolves all but the last component inside the root; returns the parent dir fd (O_DIRECTORY)
 * in *ret_dirfd and the last component in *ret_name (malloc'd; "." for the root itself or when
 * the path ends in "." or ".."), so callers can create, replace or unlink the last entry without
 * following it. */
int rootfs_open_parent(int root_fd, const char *path, int *ret_dirfd, char **ret_name,
		       KilnError **err);

/* mkdir -p inside the root; missing dirs get mode (umask ignored) and uid/gid ((uid_t)-1 and
 * (gid_t)-1 = leave as created); existing symlinks on the way are followed inside the root.
 * Returns the final dir's fd (O_DIRECTORY) in *ret_fd (may be NULL). */
int rootfs_mkdir_p(int root_fd, const char *path, mode_t mode, uid_t uid, gid_t gid, int *ret_fd,
		   KilnError **err);

/* Cleans a path lexically ("a//b/./c/.." -> "a/b"), dropping leading "/"; returns -EINVAL if it
 * climbs above the root ("../x", "a/../../x"). "" or "." -> ".". *ret is malloc'd. */
int path_clean_relative(const char *path, char **ret);

/* Test hook: true forces the component walk even where openat2() exists. */
void rootfs_force_fallback(bool force);
