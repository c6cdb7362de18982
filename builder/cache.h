/* The step cache: what a build step produced, found again by a key made from everything that
 * determines the step's result (the chain of keys before it, the instruction after expansion, the
 * platform, and for COPY/ADD the content, path and mode of what was copied) and nothing else:
 * never mtimes, inodes, owners or umask of the checkout.
 *
 * Entries live in ROOT/cache/<key hex> (JSON, written atomically); "slot" entries, keyed by the
 * step without its sources, remember the last sources seen so a miss can say which file changed. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/digest.h"
#include "common/error.h"
#include "layers/oci.h"

typedef struct BuildCache BuildCache;

typedef struct CacheEntry {
	bool has_layer;
	char digest[DIGEST_STRING_MAX];
	char diff_id[DIGEST_STRING_MAX];
	char media_type[128];
	int64_t size;
} CacheEntry;

int build_cache_open(const char *root, BuildCache **ret, KilnError **err);
void build_cache_free(BuildCache *c);
static inline void build_cache_freep(BuildCache **c)
{
	build_cache_free(*c);
}
const char *build_cache_dir(const BuildCache *c);

/* 0 and *ret filled when key is cached; -ENOENT when not (no error filled); other < 0 errors
 * only for a damaged entry, which is then treated as absent by callers. */
int build_cache_get(BuildCache *c, const char *key, CacheEntry *ret);
int build_cache_put(BuildCache *c, const char *key, const CacheEntry *e, KilnError **err);
/* Marks the entry of key as just used (its file's mtime := now): `kiln prune --keep-storage`
 * evicts least recently used entries first. Best effort: a failure only makes that order less
 * exact, so it reports nothing. */
void build_cache_touch(BuildCache *c, const char *key);

/* Slot: the sources (a tree manifest) last copied by the step identified by slot_key. */
json_t *build_cache_slot_get(BuildCache *c, const char *slot_key);
int build_cache_slot_put(BuildCache *c, const char *slot_key, json_t *sources, KilnError **err);

/* The first path whose entry differs between two source manifests (copy_manifest) (added, removed
 * or changed), in path order; NULL when they are equal. */
const char *tree_manifest_first_change(json_t *old, json_t *cur);

/* A step key: sha256 over a version tag, the parent key and typed, length-prefixed fields (a
 * string is "s<len>:<bytes>", a list "l<count>:" then its strings), so two different field
 * sequences never hash alike: an argv element holding "a\nb" is not the two elements "a" and
 * "b", and `ENV K="a B=1"` is not `ENV K=a B=1`. The encoding has no host or user in it, so the
 * same inputs give the same key on every machine. Bump CACHE_KEY_VERSION when it changes (old
 * entries are then simply never found). */
#define CACHE_KEY_VERSION "kiln-step-v2"

typedef struct CacheKey {
	Sha256 *h;
} CacheKey;

void cache_key_begin(CacheKey *k, const char *parent);
void cache_key_add(CacheKey *k, const char *field);
/* A list: its count, then each element (v may be NULL: an empty list). */
void cache_key_add_strv(CacheKey *k, char *const *v);
/* Writes the key and frees what begin allocated. */
void cache_key_end(CacheKey *k, char out[DIGEST_STRING_MAX]);

/* begin(parent), add(parts[i]) for each part, end. */
void cache_key(char out[DIGEST_STRING_MAX], const char *parent, const char *const *parts,
	       size_t n_parts);

typedef struct Store Store;

/* ---------- the cache document: one form of entries for every cache that travels ----------
 *
 * {"version": 1, "entries": {KEY HEX: {"layer": {"mediaType", "digest", "size", "diff_id"}}}},
 * "layer" null for a step without one: kiln-cache.json of a --cache-to type=local dir and the
 * config blob of a type=registry cache. It holds step keys (hashes) and layer descriptors and
 * nothing else: no instruction text, build arg, source path or secret a step read. */
#define CACHE_DOC_VERSION 1
#define CACHE_DOC_MAX (64u << 20)

typedef struct CacheDocEntry {
	char key[DIGEST_STRING_MAX]; /* "sha256:<hex>" */
	CacheEntry e;
} CacheDocEntry;

typedef struct CacheDoc {
	CacheDocEntry *v; /* sorted by key, no key twice */
	size_t n;
} CacheDoc;

void cache_doc_done(CacheDoc *d);

/* The local entries of keys ("sha256:<hex>"; duplicates and keys without an entry are left
 * out). */
void cache_doc_collect(BuildCache *c, char *const *keys, CacheDoc *ret);

/* The document's bytes: compact, keys sorted, so the same entries give the same bytes (and
 * digest). NUL-terminated, malloc'd. */
char *cache_doc_format(const CacheDoc *d, size_t *ret_len);

/* Parses and checks a document of at most CACHE_DOC_MAX bytes: version 1, every key a sha256 hex,
 * every layer with valid digests, a layer media type and a size >= 0. Errors (EINVAL, EFBIG) say
 * what is wrong; unknown members are ignored. */
int cache_doc_parse(const char *data, size_t len, CacheDoc *ret, KilnError **err);

/* The distinct layers the entries name (mediaType, digest, size), sorted by digest; *ret_n of
 * them. Free with oci_descriptors_free. */
void cache_doc_layers(const CacheDoc *d, OciDescriptor **ret, size_t *ret_n);

/* ---------- portable caches ---------- */

/* Writes doc and the layer blobs its entries name (from s) to DIR as a portable cache:
 * DIR/kiln-cache.json (the document) and DIR/blobs/sha256/<hex>. The JSON is replaced atomically;
 * blobs no entry references any more are removed. */
int cache_doc_write_dir(const CacheDoc *doc, Store *s, const char *dir, KilnError **err);

/* Reads a cache written by cache_doc_write_dir: every layer blob is copied into the store with its
 * digest verified (a mismatch is an error naming the blob) and every entry the local cache lacks is
 * added. *ret_n: entries imported. */
int build_cache_import(BuildCache *c, Store *s, const char *dir, size_t *ret_n, KilnError **err);

/* Entries a cache source offers without their blobs (a registry cache): a step whose key has no
 * usable local entry but is offered gets the entry's layer blob through fetch (which puts it in
 * the store, digest-verified), then the entry is kept in the local cache. Sources are asked in
 * the order they were offered. The cache takes doc's entries (doc is left empty) and userdata
 * (freed with userdata_free, may be NULL); fetch is called from the build's threads, at the same
 * time for different blobs. */
void build_cache_offer(BuildCache *c, const char *name, CacheDoc *doc, const OciFetcher *fetch,
		       void (*userdata_free)(void *));

/* The entry of a step: the local one when its layer blob (if any) is in the store, else the first
 * offered one whose blob is (or could be fetched). 0 and *ret on a hit, -ENOENT on a miss. A
 * miss because an offered blob could not be fetched fills *ret_warning (when given) with why;
 * that source is not asked again. */
int build_cache_lookup(BuildCache *c, Store *s, const char *key, CacheEntry *ret,
		       KilnError **ret_warning);
