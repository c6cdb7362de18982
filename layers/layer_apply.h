/* Applying a layer tar to a directory: an overlayfs snapshot or a full rootfs. Layer tars are
 * hostile input: every entry is created through common/rootfs.h, so nothing lands outside dest. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/digest.h"
#include "common/error.h"

/* Default caps per layer (`kiln build/load --max-layer-size/--max-layer-entries` raise them):
 * a layer past either is refused, so a small gzip or zstd bomb cannot fill the disk or keep an
 * unpack busy for hours. 32 GiB and 4 million entries are far above any image seen in practice
 * (a full Debian or CUDA layer has < 300,000 entries and < 10 GiB). */
#define LAYER_MAX_BYTES_DEFAULT (UINT64_C(32) << 30)
#define LAYER_MAX_ENTRIES_DEFAULT UINT64_C(4000000)

typedef enum { LAYER_APPLY_OVERLAY, LAYER_APPLY_MERGE } LayerApplyMode;

/* What an apply left out (see LayerApplyOptions.skip_devices). */
typedef struct LayerApplyResult {
	uint64_t devices_skipped; /* character and block devices, and hard links to them */
	char first_device[256];	  /* the first one's path in the layer (truncated), or "" */
} LayerApplyResult;

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
	/* Character and block devices need CAP_MKNOD in the initial user namespace, which no
	 * kiln build has (root builds run in a user namespace too). true: a device whose mknod
	 * fails with EPERM is left out, and so is a hard link to one, as rootless Docker and
	 * containers/storage unpack base images (debootstrap and mmdebstrap bases ship
	 * /dev/console, /dev/null...); they are counted in *result. false: an error naming it.
	 * FIFOs are created either way. */
	bool skip_devices;
	LayerApplyResult *result; /* optional: filled (zeroed first) by layer_apply */
} LayerApplyOptions;

/* Reads a layer tar (gzip, zstd or plain: detected; bzip2 and xz through libarchive, for ADD)
 * from src_fd and applies it below dest_dirfd, reading the stream to its very end. Entry paths
 * are cleaned and a leading "/" dropped; an entry that climbs out ("../x", "/../x") or a hard
 * link to outside dest is an error; symlinks in the tree are followed only inside dest. A hard
 * link may only name an earlier entry of the same layer (not a lower layer's file, not a later
 * entry). A non-directory entry named "." (or cleaning to it) is an error; a bare ".wh." is an
 * invalid whiteout. Regular files,
 * dirs, symlinks, hard links, fifos and device nodes (when mknod is not allowed: left out with
 * opts->skip_devices, else an error) are
 * created with their modes (setuid/setgid/sticky included, set after chown), mtimes (dirs at
 * the end) and xattrs (on files and dirs; not trusted.* or user.overlay.*; security.* other
 * than security.capability is dropped where the kernel refuses it). The root entry "./" is
 * skipped. Past opts->max_bytes uncompressed bytes or opts->max_entries entries: EFBIG, the
 * message naming the cap. Returns the diff_id (sha256 of the uncompressed tar; "" for bzip2/xz
 * input) in ret_diff_id (may be NULL). On error dest is left half-written: the caller deletes it.
 * dest_dirfd < 0 only checks: the stream is read to its end, hashed, counted and every entry
 * checked as above where no tree is needed (names, whiteouts, hard link targets, types). */
int layer_apply(int src_fd, int dest_dirfd, const LayerApplyOptions *opts,
		char ret_diff_id[DIGEST_STRING_MAX], KilnError **err);
