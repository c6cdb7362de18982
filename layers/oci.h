/* OCI image model: media types and validated parsing of descriptors, manifests, indexes and
 * configs read from the content store. Everything parsed here is hostile input. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/digest.h"
#include "common/error.h"
#include "platforms/platform.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define MT_OCI_LAYER_GZIP MT_OCI_LAYER "+gzip"
#define MT_OCI_LAYER_ZSTD MT_OCI_LAYER "+zstd"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"

#define OCI_ANNOTATION_REF_NAME "org.opencontainers.image.ref.name"
#define CONTAINERD_ANNOTATION_IMAGE_NAME "io.containerd.image.name"

/* Size caps for blobs parsed into memory. */
#define OCI_MANIFEST_MAX (4u << 20)
#define OCI_CONFIG_MAX (16u << 20)

/* Caps for what one root descriptor reaches: indexes nested at most OCI_INDEX_DEPTH_MAX deep
 * (skopeo/buildah write index -> index -> manifest), and at most OCI_DESCRIPTORS_MAX descriptors
 * in all: the entries of every index (duplicates included) plus, where manifests are read, their
 * configs and layers. One index or manifest may not list more either. Real images have tens; an
 * index listing one child index thousands of times is an attack (a small archive that kept a
 * naive walker busy for hours). */
#define OCI_INDEX_DEPTH_MAX 4
#define OCI_DESCRIPTORS_MAX 10000

typedef struct Store Store;

typedef struct OciDescriptor {
	char media_type[128];
	char digest[DIGEST_STRING_MAX];
	int64_t size;
	bool has_platform;
	Platform platform;
	json_t *annotations; /* owned reference (an object of strings) or NULL */
} OciDescriptor;

/* Drops the annotations reference; the struct may be reused. Takes NULL. */
void oci_descriptor_done(OciDescriptor *d);

/* Deep-enough copy: dst gets its own annotations reference. */
void oci_descriptor_copy(OciDescriptor *dst, const OciDescriptor *src);

/* Parses a descriptor object: mediaType (RFC 6838 syntax, < 128 bytes), digest
 * (digest_is_valid), size (integer >= 0), optional platform (normalised) and annotations (an
 * object of strings). Errors name the offending field. */
int oci_descriptor_from_json(json_t *j, OciDescriptor *ret, KilnError **err);

/* mediaType, digest, size, [platform {architecture, os, variant}], [annotations] in that key
 * order. */
json_t *oci_descriptor_to_json(const OciDescriptor *d);

/* Whether a media type names an index (OCI index or Docker manifest list), an image manifest
 * (OCI or Docker schema2) or a layer (OCI or Docker rootfs layer, any compression). */
bool oci_media_type_is_index(const char *mt);
bool oci_media_type_is_manifest(const char *mt);
bool oci_media_type_is_layer(const char *mt);

/* One annotation value, or NULL. */
const char *oci_descriptor_annotation(const OciDescriptor *d, const char *key);

/* One platform's image, fully resolved and validated against the store. */
typedef struct OciImage {
	char manifest_digest[DIGEST_STRING_MAX];
	int64_t manifest_size;
	char manifest_media_type[128];
	char config_digest[DIGEST_STRING_MAX];
	int64_t config_size;
	char config_media_type[128];
	json_t *config; /* parsed config blob */
	size_t n_layers;
	OciDescriptor *layers;
	char (*diff_ids)[DIGEST_STRING_MAX];
	Platform platform;
} OciImage;

void oci_image_free(OciImage *img);
static inline void oci_image_freep(OciImage **img)
{
	oci_image_free(*img);
}

/* Parses and validates an image manifest document (OCI or Docker schema2): schemaVersion 2, a
 * mediaType field (when present) that is a manifest type, a config descriptor and layer
 * descriptors with layer media types. Fills the manifest-derived fields of a new OciImage (no
 * config, no diff_ids). Used by oci_image_resolve() and the fuzzer. */
int oci_manifest_parse(const char *data, size_t len, OciImage **ret, KilnError **err);

/* Parses an index document (OCI index or Docker list): schemaVersion 2, a mediaType field (when
 * present) that is an index type, and its manifests. */
int oci_index_parse(const char *data, size_t len, OciDescriptor **ret, size_t *ret_n,
		    KilnError **err);

/* Validates an image config and fills img->config, diff_ids and (when !keep_platform) platform:
 * rootfs.type "layers", rootfs.diff_ids valid digests, as many as img->n_layers, os and
 * architecture present. */
int oci_config_parse(OciImage *img, const char *data, size_t len, bool keep_platform,
		     KilnError **err);

/* Frees an array of descriptors. */
void oci_descriptors_free(OciDescriptor *v, size_t n);

/* Reads the blob d names from the store into a NUL-terminated buffer: at most max bytes (EFBIG),
 * its digest verified (EIO) and its size equal to d->size (EIO); errors name the digest. */
int oci_blob_read(Store *s, const OciDescriptor *d, size_t max, char **ret_data, size_t *ret_len,
		  KilnError **err);

/* Where blobs missing from the store come from (a registry, for a pull). fetch puts the blob d
 * names into the store, digest-verified (write it through a BlobWriter committed with
 * d->digest, so wrong bytes never get its name), or fails with an error naming what went
 * wrong. It is called from the thread that called the function it was given to. */
typedef struct OciFetcher {
	int (*fetch)(void *userdata, const OciDescriptor *d, KilnError **err);
	void *userdata;
} OciFetcher;

/* Makes sure the blob d names is in the store: when it is missing, asks f (NULL, or f->fetch
 * NULL: ENOENT "blob ... not found in store"); a fetch that returns without storing it is an
 * ENOENT error too. Only checks presence: readers check digest and size. */
int oci_blob_ensure(Store *s, const OciFetcher *f, const OciDescriptor *d, KilnError **err);

/* A descriptor for the stored blob `digest` when it is an index or an image manifest (what
 * `FROM name@sha256:...` may name): mediaType from the document (or, when it has none, an OCI
 * index if it lists manifests, else an OCI manifest), the document validated as such
 * (oci_index_parse / oci_manifest_parse), size = its length. EINVAL when it is something else
 * (a config, a layer), ENOENT when absent. */
int oci_descriptor_from_blob(Store *s, const char *digest, OciDescriptor *ret, KilnError **err);

typedef enum {
	/* also read image manifests (OCI or Docker, any config and layer media types: attestations
	 * and other artifacts too) and visit their config and layers */
	OCI_WALK_MANIFESTS = 1 << 0,
	/* with OCI_WALK_MANIFESTS: also visit a manifest's "subject" and "blobs" (what garbage
	 * collection must keep; an export leaves them out) */
	OCI_WALK_SUBJECTS = 1 << 1,
	/* read documents whatever size their descriptor gives (garbage collection: what they
	 * reference stays reachable; verify reports the size); their digest is still checked */
	OCI_WALK_ANY_SIZE = 1 << 2,
} OciWalkFlags;

/* A visit callback's answer: do not read this descriptor's document (nor visit what it lists). */
#define OCI_WALK_SKIP 1

/* Called with each descriptor; depth 0 for a root. A negative return stops the walk with it. */
typedef int (*OciWalkFn)(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err);

typedef struct OciWalkOptions {
	unsigned flags; /* OciWalkFlags */
	/* Called for every descriptor reached, a parent before its children, in document order;
	 * a descriptor listed twice is visited twice (its document is read once). May return
	 * OCI_WALK_SKIP. NULL: visit all. */
	OciWalkFn visit;
	/* Optional: called after what a descriptor lists was walked (children before their
	 * parent: the order a push uploads in), for every descriptor whose visit returned 0. */
	OciWalkFn leave;
	/* Optional: a document that cannot be read or parsed (missing, corrupt, over
	 * OCI_MANIFEST_MAX, not a valid index or manifest, nested too deeply) is handed here (the
	 * problem is the walker's; copy what you keep) and the walk goes on without what is below
	 * it, unless this returns < 0. NULL: the problem fails the walk. */
	int (*problem)(const OciDescriptor *d, const KilnError *problem, void *userdata,
		       KilnError **err);
	/* Optional: documents missing from the store are fetched (oci_blob_ensure) before they are
	 * read. Layers and configs are the visitor's to fetch. */
	const OciFetcher *fetch;
	void *userdata;
} OciWalkOptions;

/* The one graph walker (export, prune, verify, load checks and image resolution use it; push
 * will): from the roots, as one graph, reads every index (and with OCI_WALK_MANIFESTS every
 * image manifest) once per digest, through oci_blob_read (digest and size checked), and visits
 * the descriptors they list. Indexes nest at most OCI_INDEX_DEPTH_MAX deep (a manifest one
 * level more): ELOOP naming the digest. More than OCI_DESCRIPTORS_MAX descriptors in all (roots
 * included, duplicates counted): E2BIG naming the digest, always fatal. Descriptors of other
 * media types are visited but not read. */
int oci_walk(Store *s, const OciDescriptor *roots, size_t n, const OciWalkOptions *o,
	     KilnError **err);

/* From a root descriptor (index, nested index, OCI manifest, Docker schema2 manifest or list) in
 * the store, picks the manifest for `want` (best platform_match_score; a manifest without
 * platform info is checked against its config's os/architecture/variant), reads and validates
 * the manifest and config (size caps: OCI_MANIFEST_MAX manifest/index, OCI_CONFIG_MAX config;
 * blob digests and sizes verified; a "manifest" whose mediaType says index, or a layer count
 * different from the rootfs.diff_ids count -> error). No match -> ENOENT error listing the
 * platforms available. With fetch, every index, manifest and config it reads that is not in the
 * store is fetched first: the indexes on the way, the chosen platform's manifest and config
 * (and those of manifests whose descriptor has no platform), nothing of the other platforms.
 * Without fetch (NULL) a missing blob is an ENOENT error naming it. Layer blobs need not be in
 * the store (see oci_image_fetch_layers); a layer blob that is there must have its descriptor's
 * size (EIO naming the digest, as containerd checks). */
int oci_image_resolve(Store *s, const OciDescriptor *root, const Platform *want,
		      const OciFetcher *fetch, OciImage **ret, KilnError **err);

/* Fetches, one after another, every layer of img that is not in the store, and checks each
 * layer's size. Separate from oci_image_resolve so that a puller may instead fetch layers
 * concurrently or unpack them while they stream. */
int oci_image_fetch_layers(Store *s, const OciImage *img, const OciFetcher *fetch, KilnError **err);

/* Every image manifest below the roots (as one graph, see oci_walk; attestations left out),
 * each read and validated as oci_image_resolve does, once per (digest, platform) listed: what
 * `kiln load` checks. Free *ret with oci_images_free. */
int oci_images_load(Store *s, const OciDescriptor *roots, size_t n_roots, OciImage ***ret,
		    size_t *ret_n, KilnError **err);
void oci_images_free(OciImage **v, size_t n);

/* Lists the platforms of a root descriptor (for `kiln inspect` / error messages), in index order,
 * without duplicates; attestation manifests (BuildKit's unknown/unknown) are left out. */
int oci_list_platforms(Store *s, const OciDescriptor *root, Platform **ret, size_t *ret_n,
		       KilnError **err);

/* Serialises j compactly with keys in insertion order and no trailing newline: the bytes kiln
 * writes for every JSON document (deterministic). Aborts on out-of-memory. */
char *oci_json_dump(json_t *j);

/* Writes an image index of manifests (each with a platform) to the store. The manifests are
 * sorted by platform string first, so the same set gives the same index whatever order builds
 * or merges produced them in; two manifests for one platform are an error (EEXIST) naming it. */
int oci_index_put(Store *s, OciDescriptor *manifests, size_t n, OciDescriptor *ret,
		  KilnError **err);

/* jansson >= 2.9 provides json_decrefp (takes a pointer to NULL). */
#define _cleanup_json_ __attribute__((cleanup(json_decrefp)))
