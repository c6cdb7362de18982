/* `-o type=local,dest=DIR`: an image's final filesystem written into a user's directory.
 *
 * The user's directory is not kiln's: `-o type=local,dest=.` is how buildx users export build
 * results into their checkout. So, as buildx's local exporter (fsutil's DiskWriter receiving in
 * merge mode) does, the export only writes and overwrites; it never applies a layer's deletions
 * to DIR and never writes through a symlink or hard link it finds there. */
#pragma once

#include <stdint.h>

#include "common/error.h"
#include "layers/oci.h"
#include "layers/store.h"

/* Writes the final filesystem of the image manifest `manifest` (in the store) into dest_dir,
 * or into dest_dir/sub when sub is not NULL (one dir per platform).
 * - The layers are first merged, whiteouts and all, into a scratch dir below the store's work
 *   dir (store_work_acquire), so a file a layer removed is absent from the export while nothing
 *   in dest_dir is ever deleted for it. Each layer is held to max_bytes uncompressed bytes and
 *   max_entries entries (0 = no cap). The scratch dir is removed afterwards. Device nodes,
 *   which a user namespace cannot create, are left out (the build warned when it unpacked the
 *   layer).
 * - The tree is then copied in, in sorted order: files, symlinks and FIFOs are made under a new
 *   temp name in their directory and renamed over their path, so what dest_dir had there (a
 *   file, a symlink, a hard link to a file elsewhere) is replaced, never written through.
 *   Directories are created, or entered when dest_dir has one, and get the image's mode and
 *   mtime after their contents. A symlink (or other non-directory) in dest_dir where the image
 *   has a directory is replaced by a directory, as buildx does; a directory in dest_dir where
 *   the image has a non-directory is an error naming the path (buildx would delete it).
 * - Files belong to the caller; modes (setuid included), mtimes, hard links between exported
 *   files and sparse files' holes are kept; xattrs are not copied; sockets are skipped.
 * dest_dir itself is created when missing (a path the user named: followed if a symlink). */
int export_local(Store *s, const OciDescriptor *manifest, const char *dest_dir, const char *sub,
		 uint64_t max_bytes, uint64_t max_entries, KilnError **err);
