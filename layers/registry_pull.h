/* Pulling images from a registry into the store: the registry side of `kiln pull` and of FROM.
 *
 * A pull resolves a reference to its root document (an OCI index or manifest, a Docker
 * manifest list or schema 2 manifest; schema 1 is refused by the client), stores every document
 * byte for byte under its digest (so the registry's digests stay the image's), then only the
 * configs and layers of the platforms asked for. Blobs already in the store are never fetched
 * again; the others stream into a BlobWriter whose digest and size are checked before the blob
 * gets its name, several at once. So an interrupted pull (even SIGKILL) leaves at most temp
 * files in ROOT/tmp and unnamed, complete blobs: the store stays consistent and a rerun
 * fetches only what is missing.
 *
 * A store name set by a pull points at the registry's root (the index, as `docker pull` tags
 * it). When only some platforms of an index were pulled, the index.json entry carries the
 * annotation PULL_ANNOTATION_MANIFESTS: the digests of the manifests whose configs and layers
 * are all in the store. The other manifests listed by the index (and what is below them) may be
 * missing: `kiln doctor --verify` reports them as not pulled, not as damage, and a build that
 * needs one of them fetches it (containerd and docker's containerd store keep partial images
 * the same way). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry.h"
#include "layers/store.h"
#include "platforms/platform.h"

/* Blobs downloaded at once unless the caller says otherwise. */
#define PULL_JOBS_DEFAULT 4
#define PULL_JOBS_MAX 64

/* Comma-separated digests of the manifests of a partially pulled index that are complete. */
#define PULL_ANNOTATION_MANIFESTS "kiln.pull.manifests"

typedef enum {
	PULL_BLOB_PRESENT, /* already in the store: not fetched */
	PULL_BLOB_FETCHED, /* downloaded, verified and stored */
} PullEventKind;

/* Called once per blob of a pull, from the thread that handled it (several at once: the
 * callback must be thread-safe). */
typedef void (*PullProgressFn)(void *userdata, PullEventKind kind, const OciDescriptor *d);

typedef struct RegistryPull RegistryPull;

/* A pull of ref's repository (its tag or digest) from c into s. Both must outlive it. */
int registry_pull_new(RegistryClient *c, Store *s, const Reference *ref, RegistryPull **ret,
		      KilnError **err);
void registry_pull_free(RegistryPull *p);
static inline void registry_pull_freep(RegistryPull **p)
{
	registry_pull_free(*p);
}
void registry_pull_set_progress(RegistryPull *p, PullProgressFn fn, void *userdata);

/* Totals so far: blobs fetched and their bytes, blobs found in the store. */
typedef struct PullStats {
	uint64_t fetched, fetched_bytes, present;
} PullStats;
PullStats registry_pull_stats(const RegistryPull *p);

/* The reference's root descriptor, its document in the store. With a digest: the stored
 * document when the store has it (no request), else a GET by digest. With a tag: a HEAD
 * resolves it to a digest (the registry's current answer: this is how --pull=always notices a
 * moved tag), then the stored document is used or GET by digest fetches it. */
int registry_pull_root(RegistryPull *p, OciDescriptor *ret, KilnError **err);

/* Puts the blob d names into the store unless it is there: indexes and manifests through the
 * manifests endpoint (stored as received), anything else through the blobs endpoint (a config
 * at most OCI_CONFIG_MAX bytes). Errors name the digest. */
int registry_pull_blob(RegistryPull *p, const OciDescriptor *d, KilnError **err);

/* The OciFetcher that calls registry_pull_blob: oci_image_resolve() and
 * oci_image_fetch_layers() with it fetch only what they read. */
OciFetcher registry_pull_fetcher(RegistryPull *p);

/* Fetches the blobs of v missing from the store (each digest once), up to jobs at a time
 * (0: PULL_JOBS_DEFAULT). The first failure stops the downloads that have not started and
 * cancels the others; the error names the digest that failed. */
int registry_pull_blobs(RegistryPull *p, const OciDescriptor *v, size_t n, unsigned jobs,
			KilnError **err);

typedef struct PullOptions {
	const Platform *platforms; /* the platforms to pull; NULL: all (the whole graph) */
	size_t n_platforms;
	unsigned jobs; /* 0: PULL_JOBS_DEFAULT */
} PullOptions;

typedef struct PullResult {
	OciImage **images; /* per platform asked for, in order; with all platforms, every image */
	size_t n_images;
	bool complete; /* every blob the root reaches is in the store */
} PullResult;

void pull_result_done(PullResult *r);

/* After registry_pull_root: fetches what the platforms asked for need (oci_image_resolve with
 * the fetcher, then their layers at once; with all platforms every manifest, config and layer,
 * attestations included) and checks every layer's size. A platform the root does not have is an
 * ENOENT error listing those it has. */
int registry_pull_images(RegistryPull *p, const OciDescriptor *root, const PullOptions *o,
			 PullResult *ret, KilnError **err);

/* Whether every blob root reaches (indexes, manifests, configs, layers) is in the store. */
int pull_root_complete(Store *s, const OciDescriptor *root, bool *ret, KilnError **err);

/* Names root in the store under ref's name (nothing for a reference that has only a digest).
 * complete: the whole image is in the store (no annotation); else manifests (NULL-terminated)
 * are the complete platforms' manifest digests: when the name already points at root, they are
 * added to those its entry lists (a name that pointed to root complete stays complete).
 * ret_previous (may be NULL): the digest the name pointed to before, "" when new. */
int registry_pull_tag(Store *s, const Reference *ref, const OciDescriptor *root, bool complete,
		      char *const *manifests, char ret_previous[DIGEST_STRING_MAX],
		      KilnError **err);

/* For a store entry (an index.json descriptor): whether the manifest `digest` it reaches may be
 * missing because that platform was not pulled (the entry lists others as pulled). */
bool pull_entry_not_pulled(const OciDescriptor *entry, const char *digest);
