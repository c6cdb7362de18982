/* --cache-from and --cache-to: where a build's step cache is imported from and exported to, in
 * buildx's syntax and with its failure rules.
 *
 *   --cache-from type=local,src=DIR | type=registry,ref=REF | REF          (repeatable)
 *   --cache-to   type=local,dest=DIR | type=registry,ref=REF | REF         (repeatable)
 *                [,mode=min|max] [,ignore-error=true|false]
 *                type=registry also takes buildx's image-manifest=true and oci-mediatypes=true
 *                (kiln always writes an OCI image manifest); mode on --cache-from is accepted
 *                and means nothing, as in buildx.
 *
 * A cache source that is missing (the first build of a branch), empty or unreadable (not a
 * cache, damaged, refused, unreachable) is a warning and the build goes on without it, as in
 * buildx. A cache export that fails fails the build (exit 1) unless ignore-error=true, which
 * makes it a warning (BuildKit's rule, moby/buildkit#3430). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "builder/cache.h"
#include "builder/progress.h"
#include "common/error.h"
#include "layers/reference.h"
#include "layers/registry.h"

typedef enum { CACHE_SPEC_LOCAL, CACHE_SPEC_REGISTRY } CacheSpecType;

typedef struct CacheSpec {
	CacheSpecType type;
	char *dir;     /* type=local: src (from) or dest (to) */
	Reference ref; /* type=registry: a tag for --cache-to, a tag or digest for --cache-from */
	bool max;      /* --cache-to mode=max: every step of the build, not only the result's */
	bool ignore_error; /* --cache-to ignore-error=true */
} CacheSpec;

typedef struct CacheSpecList {
	CacheSpec *v;
	size_t n;
} CacheSpecList;

/* Parses one --cache-from (to false) or --cache-to (to true) value and adds it to l. Usage
 * errors (KILN_EUSAGE) name the option and the key. */
int cache_spec_list_add(CacheSpecList *l, const char *s, bool to, KilnError **err);
void cache_spec_list_done(CacheSpecList *l);
bool cache_spec_list_uses_registry(const CacheSpecList *l);

/* Imports every source of from, in order (a registry source's entries are offered: their blobs
 * are fetched when a step hits them). Failures are warnings on p. rc: the registry client
 * (NULL when no source is a registry). */
void cache_import_sources(BuildCache *c, Store *s, RegistryClient *rc, const CacheSpecList *from,
			  Progress *p);

/* Exports the entries of keys to one --cache-to destination and notes what was written on p.
 * from: the --cache-from sources (a registry destination mounts blobs from a source in another
 * repository of its registry). A failure is an error, or a warning with ignore-error=true. */
int cache_export_target(BuildCache *c, Store *s, RegistryClient *rc, const CacheSpec *to,
			char *const *keys, const CacheSpecList *from, Progress *p, KilnError **err);
