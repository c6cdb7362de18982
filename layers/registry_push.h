/* Pushing an image graph from the store to registries (kiln push, build --push, merge --push).
 *
 * One PushSession per command: it pushes one root descriptor (an index, or an image manifest) to
 * one destination reference at a time, and remembers, for the rest of the session, which
 * repositories received which blobs and roots, so that:
 *   - a blob already in another repository of the same registry is mounted from there (a
 *     cross-repository mount: no bytes sent), and so is every blob when --mount-from names a
 *     repository of that registry (the registry decides: it uploads when it cannot mount);
 *   - the second and later tags of one repository are one manifest PUT.
 *
 * Pushing one destination:
 *   1. the tag already names the root's digest in the registry (HEAD): nothing to send;
 *   2. the graph below the root is walked (oci_walk: indexes, manifests, configs, layers) and
 *      every index and manifest is looked up by digest (HEAD); what the registry has, and all
 *      that it lists, is not sent again;
 *   3. each remaining blob (config, layer) is looked up (HEAD) and, when missing, mounted or
 *      uploaded (registry_blob_push: one PUT up to the client's monolithic size, PATCH chunks
 *      above; a failed upload starts again), up to `jobs` blobs at once;
 *   4. the manifests, then the indexes, children before parents, by digest, and the root last
 *      under the tag: byte for byte as they are in the store, so the registry's digests are
 *      the artifact's.
 * A destination whose reference carries a digest ("reg/app@sha256:...") must name the root's
 * digest; without a tag the root is pushed by digest only (buildx's push-by-digest).
 *
 * Blobs that are not in the store (a merge of images that stay in a registry) are mounted from
 * a source repository of the same registry, else fetched from a source (digest-verified into
 * the store) and uploaded. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/digest.h"
#include "common/error.h"
#include "layers/oci.h"
#include "layers/registry.h"
#include "layers/store.h"
#include "platforms/platform.h"

#define PUSH_JOBS_DEFAULT 4
#define PUSH_JOBS_MAX 64

typedef struct PushSession PushSession;

/* A repository blobs may be found in: "domain" as in a Reference, "repository" its path. */
typedef struct PushSource {
	char *domain;
	char *repository;
} PushSource;

typedef struct PushOptions {
	unsigned
	    jobs; /* blobs transferred at once; 0: PUSH_JOBS_DEFAULT, capped at PUSH_JOBS_MAX */
	/* --mount-from: "PATH" (a repository of every destination's registry) or "DOMAIN/PATH"
	 * (only for destinations there); checked by registry_push_session_new. NULL: none. */
	const char *mount_from;
	/* Where blobs missing from the store are (kiln merge's registry inputs), in order: mounted
	 * from one in the destination's registry, else fetched (layers/registry_pull.h). */
	const PushSource *sources;
	size_t n_sources;
} PushOptions;

/* The session borrows c and s: they must outlive it. A bad mount_from is KILN_EUSAGE. */
int registry_push_session_new(RegistryClient *c, Store *s, const PushOptions *o, PushSession **ret,
			      KilnError **err);
void registry_push_session_free(PushSession *p);
static inline void registry_push_session_freep(PushSession **p)
{
	registry_push_session_free(*p);
}

/* What a push did to one destination. */
typedef struct PushResult {
	char *name;			/* the destination, canonical (ref_string) */
	char digest[DIGEST_STRING_MAX]; /* the root's digest; "" when it failed before knowing */
	unsigned uploaded;		/* blobs whose bytes were sent */
	unsigned mounted;		/* blobs mounted from another repository */
	unsigned skipped;		/* blobs the registry had already */
	unsigned manifests;		/* manifests and indexes PUT (the root included) */
	uint64_t bytes;			/* blob bytes sent */
	double seconds;
	bool tag_only;	  /* the registry had the whole image: only the tag was set, or nothing */
	KilnError *error; /* NULL: pushed */
} PushResult;

void push_result_done(PushResult *r);
void push_results_free(PushResult *v, size_t n);

/* Pushes root (in the store, or its documents in the store and its blobs at the sources) to
 * dest. Returns 0 when pushed, else < 0 with ret->error set (a copy of it in *err): one
 * destination failing never affects the session's others. ret is always filled. */
int registry_push_image(PushSession *p, const OciDescriptor *root, const char *dest,
			PushResult *ret, KilnError **err);

/* {"name", "digest", "uploaded", "mounted", "skipped", "manifests", "bytes", "seconds",
 * "tag_only"} or {"name", "error"} (kiln.push in --metadata-file). */
json_t *push_result_json(const PushResult *r);

/* --platform for a push: a new index in the store holding only the manifests of root for the
 * given platforms (each must be in root exactly: ENOENT naming it and those available),
 * written by oci_index_put (so its digest differs from root's); attestation manifests are left
 * out. */
int registry_push_select_platforms(Store *s, const OciDescriptor *root, const Platform *want,
				   size_t n_want, OciDescriptor *ret, KilnError **err);
