/* overlayfs snapshots inside kiln's user namespace. */
#pragma once

#include "common/error.h"

/* Mounts overlayfs at target with the "userxattr" option (we are in a user namespace, so
 * whiteouts are 0/0 character devices and opaque dirs carry user.overlay.opaque).
 *
 * lowers: NULL-terminated, topmost first, names relative to lower_base; the function chdir()s
 * into lower_base around mount(2) (and restores the cwd) so the option string stays short. The
 * whole option string must fit in one page: E2BIG otherwise. ',', ':' and '\' in paths are
 * escaped with '\'. NULL or empty lowers: an empty directory ".empty-lower" next to work (in
 * work's parent) is created if needed and used as the only lower; lower_base may then be NULL.
 * upper, work and target may be relative to the cwd at the call; upper and work must be on the
 * same filesystem. */
int overlay_mount(const char *lower_base, char *const *lowers, const char *upper, const char *work,
		  const char *target, KilnError **err);

/* Detaches the mount at target (MNT_DETACH). */
int overlay_umount(const char *target, KilnError **err);
