/* Build caches in a registry (--cache-to / --cache-from type=registry,ref=REF): an OCI artifact
 * as image-spec 1.1 describes one (manifest.md, "Guidelines for Artifact Usage"): an image
 * manifest whose artifactType is CACHE_ARTIFACT_TYPE and whose config, of its own media type
 * CACHE_CONFIG_MEDIA_TYPE, is the cache document (builder/cache.h: step keys and layer
 * descriptors, the same bytes kiln-cache.json of a local cache holds); its layers are the layer
 * blobs the entries name, each with its own media type, sorted by digest (the spec's empty
 * descriptor when there are none: layers SHOULD have one entry). The same entries give the same
 * manifest digest. */
#pragma once

#include <stddef.h>

#include "builder/cache.h"
#include "common/error.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry.h"

#define CACHE_ARTIFACT_TYPE "application/vnd.kiln.build-cache.v1"
#define CACHE_CONFIG_MEDIA_TYPE "application/vnd.kiln.build-cache.config.v1+json"
#define MT_OCI_EMPTY "application/vnd.oci.empty.v1+json"

/* The manifest of a cache whose config is config and whose layers are layers[0..n) (none: the
 * empty descriptor). NUL-terminated, malloc'd. */
char *cache_manifest_format(const OciDescriptor *config, const OciDescriptor *layers, size_t n,
			    size_t *ret_len);

/* Checks that a manifest is a kiln build cache (schemaVersion 2, an OCI image manifest with
 * artifactType CACHE_ARTIFACT_TYPE, a config of media type CACHE_CONFIG_MEDIA_TYPE and at most
 * CACHE_DOC_MAX bytes, valid layer descriptors, at most OCI_DESCRIPTORS_MAX) and returns its
 * config and layers (sorted by digest; free with oci_descriptors_free). EINVAL errors say what
 * the document is instead (an image, another artifact, not JSON). */
int cache_manifest_parse(const char *data, size_t len, OciDescriptor *ret_config,
			 OciDescriptor **ret_layers, size_t *ret_n, KilnError **err);

typedef struct CacheRegistryPush {
	char digest[DIGEST_STRING_MAX];	   /* the manifest's */
	size_t uploaded, mounted, skipped; /* blobs, the config included */
} CacheRegistryPush;

/* Pushes doc to ref (a tag) with the layer blobs of its entries from s: blobs first (each HEADed,
 * sent only when the registry lacks it, mounted from mount_from, a repository of the same
 * registry, when that has it; NULL: no mount), then the config, then the manifest under ref's
 * tag. */
int cache_registry_export(RegistryClient *rc, Store *s, const CacheDoc *doc, const Reference *ref,
			  const char *mount_from, CacheRegistryPush *ret, KilnError **err);

/* Reads the cache ref names (its tag, or its digest when it has one): the manifest
 * (cache_manifest_parse), then the config (capped, digest-checked), whose every layer must be
 * one of the manifest's. Offers the entries to c (build_cache_offer): a layer blob is fetched
 * from the registry, digest-verified into s, only when a step hits its entry. *ret_n: entries
 * offered. */
int cache_registry_import(RegistryClient *rc, BuildCache *c, Store *s, const Reference *ref,
			  size_t *ret_n, KilnError **err);
