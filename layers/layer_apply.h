/* Applying a layer tar to a directory: an overlayfs snapshot or a full rootfs. Layer tars are
 * hostile input: every entry is created through common/rootfs.h, so nothing lands outside dest. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/digest.h"
#include "common/error.h"

typedef enum { LAYER_APPLY_OVERLAY, LAYER_APPLY_MERGE } LayerApplyMode;

typedef struct LayerApplyOptions {
	LayerApplyMode mode; /* OVERLAY: into an empty snapshot dir: ".wh.x" -> 0/0 char device x,
			      * ".wh..wh..opq" -> xattr user.overlay.opaque=y on its dir.
			      * MERGE: onto a full rootfs: ".wh.x" deletes x, opaque empties the dir
			      * (of entries from earlier layers). */
	bool whiteouts;	     /* false: ".wh." names are ordinary files (ADD of a user's tar) */
	bool keep_owner; /* chown entries to the tar's numeric uid/gid; false = leave as the caller
			  */
	uid_t force_uid; /* (uid_t)-1 = from the tar (ADD --chown sets these) */
	gid_t force_gid;
	const char *expected_diff_id; /* when set: the uncompressed stream must hash to this */
	uint64_t max_bytes;	      /* uncompressed; 0 = no limit */
	uint64_t max_entries;	      /* 0 = no limit */
} LayerApplyOptions;

/* Reads a layer tar (gzip, zstd or plain: detected; bzip2 and xz through libarchive, for ADD)
 * from src_fd and applies it below dest_dirfd, reading the stream to its very end. Entry paths
 * are cleaned and a leading "/" dropped; an entry that climbs out ("../x") or a hard link to
 * outside dest is an error; symlinks in the tree are followed only inside dest. Regular files,
 * dirs, symlinks, hard links, fifos and device nodes (error when mknod is not allowed) are
 * created with their modes (setuid/setgid/sticky included, set after chown), mtimes (dirs at
 * the end) and xattrs (on files and dirs; not trusted.* or user.overlay.*; security.* other
 * than security.capability is dropped where the kernel refuses it). The root entry "./" is
 * skipped. Returns the diff_id (sha256 of the uncompressed tar; "" for bzip2/xz input) in
 * ret_diff_id (may be NULL). On error dest is left half-written: the caller deletes it. */
int layer_apply(int src_fd, int dest_dirfd, const LayerApplyOptions *opts,
		char ret_diff_id[DIGEST_STRING_MAX], KilnError **err);
