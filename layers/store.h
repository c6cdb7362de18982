/* The content store under --root.
 *
 * Layout (ROOT is also a valid OCI image layout):
 *   ROOT/oci-layout            {"imageLayoutVersion":"1.0.0"}
 *   ROOT/index.json            one descriptor per name; annotation
 *                              org.opencontainers.image.ref.name holds the name in canonical
 *                              form ("docker.io/library/app:1.0", see store_tag_set())
 *   ROOT/blobs/sha256/<hex>    content, only ever published after its digest was verified
 *   ROOT/tmp/                  temp files of blob writers (same filesystem)
 *   ROOT/lock                  flock(2) serialising index.json updates between processes
 *   ROOT/gc.lock               flock(2): shared by every open store, exclusive for garbage
 *                              collection (kiln prune)
 *   ROOT/work/<pid>/, <pid>.lock  a process's scratch dir and the flock(2) that says it is alive
 *   ROOT/snapshots/<diff_id hex>  a layer unpacked (the builder makes and names them)
 *   ROOT/diffids/<blob hex>      the diff_id kiln computed for that layer blob
 *
 * Everything kiln creates inside is 0700 (dirs) or 0600 (files), so other local users cannot
 * read the images; a root they can enter is reported by store_warning().
 *
 * Blobs are published with link(2) from the verified temp file, so an existing blob is never
 * replaced and a crash leaves at most a stray temp file, never a blob under a wrong name. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/digest.h"
#include "common/error.h"
#include "layers/oci.h"
#include "layers/reference.h"

typedef struct Store Store;

/* Opens the store at root, creating the layout when missing. Takes a SHARED flock(2) on
 * ROOT/gc.lock (waiting while a garbage collection holds it exclusive) and keeps it until
 * store_free(): while any process has the store open, nothing it wrote or refers to is
 * collected. */
int store_open(const char *root, Store **ret, KilnError **err);
void store_free(Store *s);
static inline void store_freep(Store **s)
{
	store_free(*s);
}
/* A scratch store, removed when the command ends (kiln push or merge of files): blobs are not
 * fsynced. Digests are still checked before a blob gets its name, so a crash can leave only
 * the scratch dir behind, never a wrong blob. (Importing a 52 MB archive: 0.18 s -> 0.11 s.) */
void store_set_scratch(Store *s);
const char *store_path(const Store *s);
/* NULL, or a one-line warning for the user (the builder prints it): the root is accessible to
 * group or others. */
const char *store_warning(const Store *s);
/* The store root directory fd (owned by the store). */
int store_dirfd(const Store *s);

/* Takes the exclusive store lock (blocking) and returns its fd; closing the fd releases it.
 * The lock is per open file: do not take it twice in one process. */
int store_lock(Store *s, int *ret_fd, KilnError **err);

/* Converts this store's gc.lock to EXCLUSIVE, waiting until every other process that has the
 * store open has closed it (flock(2) conversion: the shared lock is dropped first, so two
 * callers cannot deadlock). Held until store_free(). */
int store_gc_lock_exclusive(Store *s, KilnError **err);

/* Claims ROOT/work/<pid> for this process: takes an exclusive flock(2) on ROOT/work/<pid>.lock
 * (waiting for a checker that holds it for a moment), removes whatever a dead process of the
 * same pid left there and creates the dir empty. *ret_path is malloc'd. Claiming again while
 * claimed returns the same path. The claim lasts until store_work_release() or store_free(). */
int store_work_acquire(Store *s, char **ret_path, KilnError **err);
/* Removes ROOT/work/<pid> and its lock file and drops the claim. No-op when not claimed. */
void store_work_release(Store *s);
/* Whether the process that claimed ROOT/work/<pid> is alive: 1 when its lock is held, 0 when
 * not, and then *ret_fd holds that lock (created when missing) so no new process of that pid
 * can claim the id until the caller, done removing what the dead one left, closes it. */
int store_work_probe(Store *s, pid_t pid, int *ret_fd, KilnError **err);

/* Streaming blob writer: temp file in ROOT/tmp, hashed as written. */
typedef struct BlobWriter BlobWriter;
int store_blob_writer_new(Store *s, BlobWriter **ret, KilnError **err);
int blob_writer_write(BlobWriter *w, const void *buf, size_t len, KilnError **err);
/* Ends writing: fsyncs and checks the digest (when expected is given: a mismatch is an EIO
 * error naming both, and the temp file is removed) without publishing the blob yet. Optional;
 * commit does it when not done. ret_* may be NULL. */
int blob_writer_finish(BlobWriter *w, const char *expected_digest,
		       char ret_digest[DIGEST_STRING_MAX], int64_t *ret_size, KilnError **err);
/* After blob_writer_finish(): opens the written bytes for reading. */
int blob_writer_open_data(BlobWriter *w, int *ret_fd, KilnError **err);
/* Finishes (see above) when not yet done, then publishes the blob under its digest (an existing
 * blob is kept) and removes the temp file. ret_* may be NULL. */
int blob_writer_commit(BlobWriter *w, const char *expected_digest,
		       char ret_digest[DIGEST_STRING_MAX], int64_t *ret_size, KilnError **err);
/* Without commit, removes the temp file. Takes NULL. */
void blob_writer_free(BlobWriter *w);
static inline void blob_writer_freep(BlobWriter **w)
{
	blob_writer_free(*w);
}

/* Writes a whole buffer as a blob. ret_digest may be NULL. */
int store_put_blob(Store *s, const void *data, size_t len, const char *expected_digest,
		   char ret_digest[DIGEST_STRING_MAX], KilnError **err);
bool store_has_blob(Store *s, const char *digest);
/* Opens a blob read-only; an invalid digest string is an EINVAL error, a missing blob ENOENT. */
int store_open_blob(Store *s, const char *digest, int *ret_fd, KilnError **err);
/* Reads a whole blob (<= max bytes, else EFBIG) into a NUL-terminated buffer and verifies its
 * digest (mismatch -> EIO error naming the digest). */
int store_read_blob(Store *s, const char *digest, size_t max, char **ret_data, size_t *ret_len,
		    KilnError **err);

/* Verified diff_ids. A layer's snapshot (ROOT/snapshots/<diff_id>) may serve a layer blob only
 * when kiln itself computed that blob's diff_id: rootfs.diff_ids of a config is untrusted, and a
 * config claiming another layer's diff_id would otherwise make RUN steps run on that layer
 * while the image ships the blob. Record after the check (a layer unpacked or read with its
 * diff_id verified, or a layer kiln wrote); the record is ROOT/diffids/<blob hex>, written
 * atomically. */
int store_diffid_record(Store *s, const char *blob_digest, const char *diff_id, KilnError **err);
/* Whether blob_digest was recorded with exactly diff_id. */
bool store_diffid_verified(Store *s, const char *blob_digest, const char *diff_id);
/* Garbage collection, under the exclusive gc lock: removes the records of blobs no longer in
 * the store (their temp files are "*.tmp-*" like every atomic write's). Returns how many. */
size_t store_diffid_prune(Store *s);

/* Names in ROOT/index.json; setting and removing take the store lock. A name is anything
 * ref_parse_name() accepts; it is stored in ref_string() form ("docker.io/library/app:1.0"), so
 * "app:1.0", "docker.io/library/app:1.0" and "index.docker.io/library/app:1.0" are one name.
 * Stores written before names were canonical ("app:1.0") are read as the same names and
 * rewritten in the canonical form by the next change. Entries stay sorted by name.
 *
 * store_tag_set points name at desc (its annotations kept, the ref name added). ret_previous
 * (may be NULL) gets the digest the name pointed to before, "" when it is a new name. */
int store_tag_set(Store *s, const char *name, const OciDescriptor *desc,
		  char ret_previous[DIGEST_STRING_MAX], KilnError **err);
/* -ENOENT if absent (error filled). ret gets its own annotations reference. */
int store_tag_get(Store *s, const char *name, OciDescriptor *ret, KilnError **err);
/* -ENOENT if absent. */
int store_tag_remove(Store *s, const char *name, KilnError **err);
/* All names (canonical form) in index.json order, with their descriptors (free with strv_free /
 * oci_descriptors_free). Entries without a name, or whose name is not a reference, are left
 * out. */
int store_tag_list(Store *s, char ***ret_names, OciDescriptor **ret_descs, size_t *ret_n,
		   KilnError **err);

/* The image a reference names. Without a digest: the store name (store_tag_get). With one (the
 * tag, if any, is ignored: the digest decides, as in BuildKit and docker): a store name whose
 * descriptor has that digest, whatever its repository, else a blob of the store with that
 * digest that is an index or an image manifest (oci_descriptor_from_blob), such as one platform
 * of a loaded image. -ENOENT (error filled, naming the reference) when none. ret gets its own
 * annotations reference. */
int store_image_lookup(Store *s, const Reference *ref, OciDescriptor *ret, KilnError **err);
