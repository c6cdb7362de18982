#include "cache-registry.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/registry_pull.h"
#include "layers/store.h"

#define EMPTY_JSON "{}"

static void empty_descriptor(OciDescriptor *ret)
{
	*ret = (OciDescriptor){.media_type = MT_OCI_EMPTY, .size = 2};
	digest_buffer(EMPTY_JSON, 2, ret->digest);
}

char *cache_manifest_format(const OciDescriptor *config, const OciDescriptor *layers, size_t n,
			    size_t *ret_len)
{
	_cleanup_json_ json_t *m = NULL;
	json_t *ls = json_array();
	OciDescriptor empty;
	char *s;

	empty_descriptor(&empty);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(ls, oci_descriptor_to_json(&layers[i]));
	if (n == 0)
		json_array_append_new(ls, oci_descriptor_to_json(&empty));
	m = json_pack("{s:i, s:s, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType", MT_OCI_MANIFEST,
		      "artifactType", CACHE_ARTIFACT_TYPE, "config", oci_descriptor_to_json(config),
		      "layers", ls);
	s = m ? json_dumps(m, JSON_COMPACT) : NULL;
	if (!s)
		abort(); /* out of memory */
	*ret_len = strlen(s);
	return s;
}

static int descriptor_cmp(const void *a, const void *b)
{
	return strcmp(((const OciDescriptor *)a)->digest, ((const OciDescriptor *)b)->digest);
}

/* What a manifest that is not a kiln cache is, for the error. */
static int not_a_cache(json_t *m, KilnError **err)
{
	const char *at = json_string_value(json_object_get(m, "artifactType"));
	const char *cmt =
	    json_string_value(json_object_get(json_object_get(m, "config"), "mediaType"));

	if (at)
		return kiln_error(err, EINVAL, "not a kiln build cache: artifactType '%.128s'", at);
	return kiln_error(err, EINVAL,
			  "not a kiln build cache: no artifactType (config media type '%.128s': "
			  "an image?)",
			  cmt ? cmt : "");
}

static int manifest_layers(json_t *ls, OciDescriptor **ret, size_t *ret_n, KilnError **err)
{
	size_t n = json_array_size(ls);
	OciDescriptor *v;
	int r = 0;

	if (!json_is_array(ls))
		return kiln_error(err, EINVAL, "cache manifest: layers is not an array");
	if (n > OCI_DESCRIPTORS_MAX)
		return kiln_error(err, EINVAL, "cache manifest: %zu layers (at most %d)", n,
				  OCI_DESCRIPTORS_MAX);
	v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = oci_descriptor_from_json(json_array_get(ls, i), &v[i], err);
	if (r < 0) {
		oci_descriptors_free(v, n);
		return kiln_error_wrap(err, r, "cache manifest: layer");
	}
	qsort(v, n, sizeof(*v), descriptor_cmp);
	*ret = v;
	*ret_n = n;
	return 0;
}

int cache_manifest_parse(const char *data, size_t len, OciDescriptor *ret_config,
			 OciDescriptor **ret_layers, size_t *ret_n, KilnError **err)
{
	_cleanup_json_ json_t *m = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
	const char *mt = json_string_value(json_object_get(m, "mediaType"));
	const char *at = json_string_value(json_object_get(m, "artifactType"));
	OciDescriptor config = {0};
	int r;

	if (!json_is_object(m) || json_integer_value(json_object_get(m, "schemaVersion")) != 2)
		return kiln_error(err, EINVAL, "not a kiln build cache: not an image manifest");
	if (mt && strcmp(mt, MT_OCI_MANIFEST) != 0)
		return kiln_error(err, EINVAL, "not a kiln build cache: media type '%.128s'", mt);
	if (!at || strcmp(at, CACHE_ARTIFACT_TYPE) != 0)
		return not_a_cache(m, err);
	r = oci_descriptor_from_json(json_object_get(m, "config"), &config, err);
	oci_descriptor_done(&config);
	if (r < 0)
		return kiln_error_wrap(err, r, "cache manifest: config");
	if (strcmp(config.media_type, CACHE_CONFIG_MEDIA_TYPE) != 0)
		return kiln_error(err, EINVAL, "cache manifest: config media type '%s', not '%s'",
				  config.media_type, CACHE_CONFIG_MEDIA_TYPE);
	if (config.size > (int64_t)CACHE_DOC_MAX)
		return kiln_error(err, EFBIG, "cache manifest: config of %lld bytes (at most %u)",
				  (long long)config.size, CACHE_DOC_MAX);
	r = manifest_layers(json_object_get(m, "layers"), ret_layers, ret_n, err);
	if (r < 0)
		return r;
	*ret_config = config;
	return 0;
}

/* ---------- export ---------- */

/* HEAD, then (when the registry lacks it) upload size bytes of fd as digest. */
static int push_blob(RegistryClient *rc, const RegistryRepo *repo, const char *digest, int fd,
		     int64_t size, const char *mount_from, CacheRegistryPush *st, KilnError **err)
{
	RegistryBlobPushed how = REGISTRY_BLOB_UPLOADED;
	bool exists = false;
	int r = registry_blob_head(rc, repo, digest, &exists, NULL, err);

	if (r < 0)
		return r;
	if (exists) {
		st->skipped++;
		return 0;
	}
	r = registry_blob_push(rc, repo, digest, fd, (uint64_t)size, mount_from, &how, err);
	if (r < 0)
		return r;
	if (how == REGISTRY_BLOB_MOUNTED)
		st->mounted++;
	else
		st->uploaded++;
	return 0;
}

/* push_blob of bytes in memory (the config, the empty blob). */
static int push_bytes(RegistryClient *rc, const RegistryRepo *repo, const char *data, size_t len,
		      CacheRegistryPush *st, char ret_digest[DIGEST_STRING_MAX], KilnError **err)
{
	_cleanup_close_ int fd = memfd_create("kiln-cache-blob", MFD_CLOEXEC);
	int r;

	if (fd < 0)
		return kiln_error_errno(err, errno, "memfd_create");
	r = write_all(fd, data, len);
	if (r < 0)
		return kiln_error_errno(err, -r, "write cache blob");
	digest_buffer(data, len, ret_digest);
	return push_blob(rc, repo, ret_digest, fd, (int64_t)len, NULL, st, err);
}

static int push_layers(RegistryClient *rc, Store *s, const RegistryRepo *repo,
		       const OciDescriptor *layers, size_t n, const char *mount_from,
		       CacheRegistryPush *st, KilnError **err)
{
	char digest[DIGEST_STRING_MAX];

	if (n == 0)
		return push_bytes(rc, repo, EMPTY_JSON, 2, st, digest, err);
	for (size_t i = 0; i < n; i++) {
		_cleanup_close_ int fd = -1;
		int r = store_open_blob(s, layers[i].digest, &fd, err);
		if (r >= 0)
			r = push_blob(rc, repo, layers[i].digest, fd, layers[i].size, mount_from,
				      st, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "layer %s", layers[i].digest);
	}
	return 0;
}

int cache_registry_export(RegistryClient *rc, Store *s, const CacheDoc *doc, const Reference *ref,
			  const char *mount_from, CacheRegistryPush *ret, KilnError **err)
{
	RegistryRepo repo = {.domain = ref->domain, .repository = ref->path, .push = true};
	OciDescriptor config = {.media_type = CACHE_CONFIG_MEDIA_TYPE}, *layers = NULL;
	_cleanup_free_ char *json = NULL, *manifest = NULL;
	CacheRegistryPush st = {0};
	size_t n = 0, len = 0, mlen = 0;
	int r;

	cache_doc_layers(doc, &layers, &n);
	json = cache_doc_format(doc, &len);
	config.size = (int64_t)len;
	r = push_layers(rc, s, &repo, layers, n, mount_from, &st, err);
	if (r >= 0)
		r = push_bytes(rc, &repo, json, len, &st, config.digest, err);
	if (r >= 0) {
		manifest = cache_manifest_format(&config, layers, n, &mlen);
		r = registry_manifest_put(rc, &repo, ref->tag, MT_OCI_MANIFEST, manifest, mlen,
					  st.digest, err);
	}
	oci_descriptors_free(layers, n);
	if (r < 0)
		return r;
	*ret = st;
	return 0;
}

/* ---------- import ---------- */

/* Where an offered entry's blob comes from. */
/* Layer blobs of a registry cache come into the store through the pull module, when a step
 * hits their entry. */
static int cache_fetch(void *userdata, const OciDescriptor *d, KilnError **err)
{
	return registry_pull_blob(userdata, d, err);
}

static void cache_fetch_free(void *userdata)
{
	registry_pull_free(userdata);
}

/* Every layer an entry names must be a layer of the manifest (same digest, size, media type):
 * the registry keeps a manifest's blobs, and only those. */
static int doc_layers_check(const CacheDoc *doc, const OciDescriptor *layers, size_t n,
			    KilnError **err)
{
	for (size_t i = 0; i < doc->n; i++) {
		const CacheEntry *e = &doc->v[i].e;
		OciDescriptor probe = {0};
		if (!e->has_layer)
			continue;
		memcpy(probe.digest, e->digest, DIGEST_STRING_MAX);
		const OciDescriptor *l = bsearch(&probe, layers, n, sizeof(probe), descriptor_cmp);
		if (!l || l->size != e->size || strcmp(l->media_type, e->media_type) != 0)
			return kiln_error(err, EINVAL,
					  "cache entry %s names layer %s, which the manifest "
					  "does not list as such",
					  doc->v[i].key, e->digest);
	}
	return 0;
}

/* The manifest and config of the cache ref names: *ret_doc. */
static int cache_read(RegistryClient *rc, const Reference *ref, CacheDoc *ret_doc, KilnError **err)
{
	RegistryRepo repo = {.domain = ref->domain, .repository = ref->path};
	_cleanup_registry_manifest_ RegistryManifest m = {0};
	_cleanup_free_ char *data = NULL;
	OciDescriptor config = {0}, *layers = NULL;
	size_t n = 0, len = 0;
	int r;

	r = registry_manifest_get(rc, &repo, ref->digest[0] ? ref->digest : ref->tag, &m, err);
	if (r < 0)
		return r;
	if (strcmp(m.media_type, MT_OCI_MANIFEST) != 0)
		return kiln_error(err, EINVAL, "not a kiln build cache: media type '%s'",
				  m.media_type);
	r = cache_manifest_parse(m.data, m.len, &config, &layers, &n, err);
	if (r >= 0)
		r = registry_blob_read(rc, &repo, config.digest, config.size, CACHE_DOC_MAX, &data,
				       &len, err);
	if (r >= 0)
		r = cache_doc_parse(data, len, ret_doc, err);
	if (r >= 0 && (r = doc_layers_check(ret_doc, layers, n, err)) < 0)
		cache_doc_done(ret_doc);
	oci_descriptors_free(layers, n);
	return r;
}

int cache_registry_import(RegistryClient *rc, BuildCache *c, Store *s, const Reference *ref,
			  size_t *ret_n, KilnError **err)
{
	_cleanup_free_ char *name = ref_string(ref);
	CacheDoc doc = {0};
	int r = cache_read(rc, ref, &doc, err);

	if (r < 0)
		return r;
	RegistryPull *pull = NULL;
	r = registry_pull_new(rc, s, ref, &pull, err);
	if (r < 0)
		return r;
	*ret_n = doc.n;
	build_cache_offer(c, name, &doc, &(OciFetcher){cache_fetch, pull}, cache_fetch_free);
	return 0;
}
