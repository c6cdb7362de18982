/* Writing a directory tree as a deterministic OCI layer tar. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "common/digest.h"
#include "common/error.h"
#include "layers/compress.h"

/* Receives the compressed layer bytes in order; returns < 0 (with err set) to abort. */
typedef int (*LayerSinkFn)(void *userdata, const void *buf, size_t len, KilnError **err);

typedef enum { LAYER_SOURCE_OVERLAY_UPPER, LAYER_SOURCE_PLAIN } LayerSource;

typedef struct LayerWriteOptions {
	LayerSource source; /* OVERLAY_UPPER: 0/0 char dev -> ".wh.NAME"; dir with
			     * user.overlay.opaque=y -> dir entry + "DIR/.wh..wh..opq";
			     * user.overlay.* xattrs are never written */
	Compression compression;
	int level;     /* 0 = default */
	int64_t epoch; /* >= 0: every mtime later than epoch is written as epoch; < 0: unchanged */
	bool sync_source; /* make the source dir match the tar, so that it can be reused as the
			   * layer's snapshot: the clamped mtimes are set on the source files
			   * (lutimensat) and sockets, which a tar cannot hold, are removed */
} LayerWriteOptions;

typedef struct LayerDigests {
	char diff_id[DIGEST_STRING_MAX]; /* sha256 of the uncompressed tar */
	char digest[DIGEST_STRING_MAX];	 /* sha256 of the compressed bytes given to the sink */
	int64_t size;			 /* compressed size */
	int64_t uncompressed_size;
	size_t n_entries; /* 0: the dir was empty (the builder then adds no layer) */
} LayerDigests;

/* Writes a deterministic layer tar of the tree below dirfd to sink, in one pass computing both
 * digests. Deterministic: entries in per-directory byte order (parent before children, the
 * root itself not written), numeric uid/gid only (no uname/gname), no atime/ctime, mtimes in
 * whole seconds and clamped, pax only when needed (pax_restricted, xattrs as SCHILY.xattr),
 * hard links (same inode) written as link entries to the first path, xattrs
 * (security.capability and user.* other than user.overlay.*, on files and dirs) sorted; the
 * archive ends right after the two zero blocks (no 10240-byte record padding). Sockets are
 * skipped (and removed with sync_source). Same tree -> same bytes. The tree is walked with
 * dir_walk(): any depth, a bounded number of fds. */
int layer_write(int dirfd, const LayerWriteOptions *opts, LayerSinkFn sink, void *userdata,
		LayerDigests *ret, KilnError **err);
