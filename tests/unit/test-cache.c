/* The cache that travels: the cache document (one form of entries for kiln-cache.json and a
 * registry cache's config), the registry cache's manifest, entries offered by a source and
 * fetched when a step hits them, and the --cache-from / --cache-to syntax. */
#include <jansson.h>

#include "builder/cache-io.h"
#include "builder/cache-registry.h"
#include "builder/cache.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/store.h"
#include "tap.h"

#define LAYER_MT MT_OCI_LAYER_GZIP

static void key_of(const char *s, char out[DIGEST_STRING_MAX])
{
	digest_buffer(s, strlen(s), out);
}

static CacheEntry layer_entry(const char *content)
{
	CacheEntry e = {.has_layer = true, .size = (int64_t)strlen(content)};

	digest_buffer(content, strlen(content), e.digest);
	key_of("diff", e.diff_id);
	snprintf(e.media_type, sizeof(e.media_type), "%s", LAYER_MT);
	return e;
}

/* A doc of {k1: layer "L1", k2: no layer, k3: layer "L1" again}, through a local cache. */
static void doc_three(BuildCache *c, CacheDoc *ret, char keys[3][DIGEST_STRING_MAX])
{
	CacheEntry e1 = layer_entry("L1"), e2 = {0};

	key_of("k1", keys[0]);
	key_of("k2", keys[1]);
	key_of("k3", keys[2]);
	CHECK(build_cache_put(c, keys[0], &e1, NULL) == 0);
	CHECK(build_cache_put(c, keys[1], &e2, NULL) == 0);
	CHECK(build_cache_put(c, keys[2], &e1, NULL) == 0);
	char none[DIGEST_STRING_MAX];
	key_of("not cached", none);
	/* a key twice, one without an entry */
	char *v[] = {keys[2], keys[0], keys[1], keys[0], none, NULL};
	cache_doc_collect(c, v, ret);
}

TEST(doc_roundtrip_is_deterministic_and_holds_only_keys_and_layers)
{
	_cleanup_(build_cache_freep) BuildCache *c = NULL;
	char keys[3][DIGEST_STRING_MAX];
	CacheDoc doc = {0}, back = {0};
	_cleanup_free_ char *a = NULL, *b = NULL;
	size_t la = 0, lb = 0;

	CHECK(build_cache_open("root", &c, NULL) == 0);
	doc_three(c, &doc, keys);
	/* duplicates and keys without an entry left out; sorted by key */
	CHECK_EQ_INT(doc.n, 3);
	for (size_t i = 1; i < doc.n; i++)
		CHECK(strcmp(doc.v[i - 1].key, doc.v[i].key) < 0);
	a = cache_doc_format(&doc, &la);
	CHECK(cache_doc_parse(a, la, &back, NULL) == 0);
	CHECK_EQ_INT(back.n, 3);
	b = cache_doc_format(&back, &lb);
	CHECK_EQ_STR(a, b);
	/* nothing but version, entries, and each entry's layer descriptor */
	_cleanup_json_ json_t *j = json_loadb(a, la, 0, NULL);
	CHECK(json_object_size(j) == 2 && json_integer_value(json_object_get(j, "version")) == 1);
	const char *k;
	json_t *v;
	json_object_foreach (json_object_get(j, "entries"), k, v) {
		json_t *l = json_object_get(v, "layer");
		CHECK(json_object_size(v) == 1);
		CHECK(json_is_null(l) || json_object_size(l) == 4);
	}
	/* the distinct layers, once each */
	OciDescriptor *layers = NULL;
	size_t n = 0;
	cache_doc_layers(&doc, &layers, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_STR(layers[0].media_type, LAYER_MT);
	CHECK_EQ_INT(layers[0].size, 2);
	oci_descriptors_free(layers, n);
	cache_doc_done(&doc);
	cache_doc_done(&back);
}

static int parse_str(const char *s)
{
	_cleanup_error_ KilnError *e = NULL;
	CacheDoc d = {0};
	int r = cache_doc_parse(s, strlen(s), &d, &e);

	cache_doc_done(&d);
	return r;
}

TEST(doc_parse_refuses_what_is_not_a_cache)
{
	char h[65], dg[DIGEST_STRING_MAX];
	key_of("x", dg);
	snprintf(h, sizeof(h), "%s", digest_hex(dg));
#define ENTRY(layer) "{\"version\":1,\"entries\":{\"%s\":{\"layer\":" layer "}}}"
	_cleanup_free_ char *ok = xasprintf(ENTRY("null"), h);
	_cleanup_free_ char *good =
	    xasprintf(ENTRY("{\"mediaType\":\"" LAYER_MT
			    "\",\"digest\":\"%s\",\"size\":1,\"diff_id\":\"%s\"}"),
		      h, dg, dg);
	_cleanup_free_ char *not_layer =
	    xasprintf(ENTRY("{\"mediaType\":\"" MT_OCI_MANIFEST
			    "\",\"digest\":\"%s\",\"size\":1,\"diff_id\":\"%s\"}"),
		      h, dg, dg);
	_cleanup_free_ char *neg =
	    xasprintf(ENTRY("{\"mediaType\":\"" LAYER_MT
			    "\",\"digest\":\"%s\",\"size\":-1,\"diff_id\":\"%s\"}"),
		      h, dg, dg);
	_cleanup_free_ char *bad_digest = xasprintf(
	    ENTRY("{\"mediaType\":\"" LAYER_MT "\",\"digest\":\"sha256:zz\",\"size\":1,\"diff_id\":"
		  "\"%s\"}"),
	    h, dg);
	_cleanup_free_ char *no_layer = xasprintf("{\"version\":1,\"entries\":{\"%s\":{}}}", h);
	_cleanup_free_ char *dup = xasprintf(
	    "{\"version\":1,\"entries\":{\"%s\":{\"layer\":null},\"%s\":{\"layer\":null}}}", h, h);

	CHECK(parse_str(ok) == 0);
	CHECK(parse_str(good) == 0);
	CHECK(parse_str("{\"version\":1,\"entries\":{}}") == 0);
	CHECK(parse_str("not json") == -EINVAL);
	CHECK(parse_str("{\"version\":2,\"entries\":{}}") == -EINVAL);
	CHECK(parse_str("{\"version\":1}") == -EINVAL);
	CHECK(parse_str("[]") == -EINVAL);
	CHECK(parse_str("{\"version\":1,\"entries\":{\"abc\":{\"layer\":null}}}") == -EINVAL);
	CHECK(parse_str(not_layer) == -EINVAL);
	CHECK(parse_str(neg) == -EINVAL);
	CHECK(parse_str(bad_digest) == -EINVAL);
	CHECK(parse_str(no_layer) == -EINVAL);
	CHECK(parse_str(dup) == -EINVAL);
	CacheDoc d = {0};
	CHECK(cache_doc_parse(ok, CACHE_DOC_MAX + 1ul, &d, NULL) == -EFBIG);
}

TEST(manifest_roundtrip_and_refusals)
{
	OciDescriptor config = {.media_type = CACHE_CONFIG_MEDIA_TYPE, .size = 10};
	OciDescriptor layers[2] = {{.media_type = LAYER_MT, .size = 1},
				   {.media_type = MT_OCI_LAYER_ZSTD, .size = 2}};
	OciDescriptor got = {0}, *gl = NULL;
	_cleanup_free_ char *m = NULL, *empty = NULL;
	size_t len = 0, n = 0;

	key_of("config", config.digest);
	key_of("b", layers[0].digest);
	key_of("a", layers[1].digest);
	m = cache_manifest_format(&config, layers, 2, &len);
	CHECK(cache_manifest_parse(m, len, &got, &gl, &n, NULL) == 0);
	CHECK_EQ_STR(got.digest, config.digest);
	CHECK_EQ_INT(n, 2);
	CHECK(n == 2 && strcmp(gl[0].digest, gl[1].digest) < 0);
	oci_descriptors_free(gl, n);
	_cleanup_json_ json_t *j = json_loadb(m, len, 0, NULL);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "artifactType")), CACHE_ARTIFACT_TYPE);
	CHECK_EQ_STR(json_string_value(json_object_get(j, "mediaType")), MT_OCI_MANIFEST);
	/* no layers: the spec's empty descriptor */
	empty = cache_manifest_format(&config, NULL, 0, &len);
	CHECK(strstr(empty, "\"application/vnd.oci.empty.v1+json\""));
	CHECK(strstr(empty,
		     "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"));

	/* an image, another artifact, an index, a huge config */
	_cleanup_error_ KilnError *e = NULL;
	json_object_del(j, "artifactType");
	json_object_set_new(json_object_get(j, "config"), "mediaType", json_string(MT_OCI_CONFIG));
	_cleanup_free_ char *image = json_dumps(j, JSON_COMPACT);
	CHECK(cache_manifest_parse(image, strlen(image), &got, &gl, &n, &e) == -EINVAL);
	CHECK(e && strstr(e->message, "not a kiln build cache: no artifactType"));
	kiln_error_free(TAKE_PTR(e));
	json_object_set_new(j, "artifactType", json_string("application/vnd.example+type"));
	_cleanup_free_ char *other = json_dumps(j, JSON_COMPACT);
	CHECK(cache_manifest_parse(other, strlen(other), &got, &gl, &n, &e) == -EINVAL);
	CHECK(e && strstr(e->message, "artifactType 'application/vnd.example+type'"));
	kiln_error_free(TAKE_PTR(e));
	json_object_set_new(j, "artifactType", json_string(CACHE_ARTIFACT_TYPE));
	_cleanup_free_ char *wrong_config = json_dumps(j, JSON_COMPACT);
	CHECK(cache_manifest_parse(wrong_config, strlen(wrong_config), &got, &gl, &n, NULL) ==
	      -EINVAL);
	json_object_set_new(json_object_get(j, "config"), "mediaType",
			    json_string(CACHE_CONFIG_MEDIA_TYPE));
	json_object_set_new(json_object_get(j, "config"), "size",
			    json_integer(CACHE_DOC_MAX + 1ll));
	_cleanup_free_ char *huge = json_dumps(j, JSON_COMPACT);
	CHECK(cache_manifest_parse(huge, strlen(huge), &got, &gl, &n, NULL) == -EFBIG);
	json_object_set_new(json_object_get(j, "config"), "size", json_integer(10));
	json_object_set_new(j, "layers", json_string("no"));
	_cleanup_free_ char *bad_layers = json_dumps(j, JSON_COMPACT);
	CHECK(cache_manifest_parse(bad_layers, strlen(bad_layers), &got, &gl, &n, NULL) == -EINVAL);
	const char *index =
	    "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":[]}";
	CHECK(cache_manifest_parse(index, strlen(index), &got, &gl, &n, NULL) == -EINVAL);
}

/* A source whose blobs are in memory; counts fetches, fails them when told to. */
typedef struct FakeSource {
	Store *store;
	int fetches;
	bool fail;
} FakeSource;

static int fake_fetch(void *userdata, const OciDescriptor *d, KilnError **err)
{
	FakeSource *f = userdata;

	f->fetches++;
	if (f->fail)
		return kiln_error(err, EIO, "the registry is gone");
	return store_put_blob(f->store, "L1", 2, d->digest, NULL, err);
}

TEST(offered_entries_fetch_their_blob_on_a_hit)
{
	_cleanup_(build_cache_freep) BuildCache *c = NULL, *other = NULL;
	_cleanup_(store_freep) Store *s = NULL;
	_cleanup_error_ KilnError *w = NULL;
	char keys[3][DIGEST_STRING_MAX], none[DIGEST_STRING_MAX];
	FakeSource broken = {0}, good = {0};
	CacheDoc doc = {0}, doc2 = {0};
	CacheEntry e;

	CHECK(store_open("sroot", &s, NULL) == 0);
	CHECK(build_cache_open("other", &other, NULL) == 0);
	CHECK(build_cache_open("sroot", &c, NULL) == 0);
	doc_three(other, &doc, keys);
	doc_three(other, &doc2, keys);
	broken = (FakeSource){.store = s, .fail = true};
	good = (FakeSource){.store = s};
	build_cache_offer(c, "broken", &doc, &(OciFetcher){fake_fetch, &broken}, NULL);
	build_cache_offer(c, "good", &doc2, &(OciFetcher){fake_fetch, &good}, NULL);
	CHECK(doc.n == 0 && doc2.n == 0);
	key_of("nowhere", none);
	CHECK(build_cache_lookup(c, s, none, &e, &w) == -ENOENT && !w);
	/* no layer: a hit without a fetch */
	CHECK(build_cache_lookup(c, s, keys[1], &e, &w) == 0 && !e.has_layer && !w);
	CHECK_EQ_INT(broken.fetches + good.fetches, 0);
	/* the first source fails: a warning, and the next source serves */
	CHECK(build_cache_lookup(c, s, keys[0], &e, &w) == 0 && e.has_layer);
	CHECK(w && strstr(w->message, "cache 'broken' (not asked again)"));
	CHECK(w && strstr(w->message, "the registry is gone"));
	CHECK_EQ_INT(broken.fetches, 1);
	CHECK_EQ_INT(good.fetches, 1);
	CHECK(store_has_blob(s, e.digest));
	/* kept locally; the blob is there: k3 (same layer) fetches nothing */
	CacheEntry local;
	CHECK(build_cache_get(c, keys[0], &local) == 0 && local.has_layer);
	kiln_error_free(TAKE_PTR(w));
	CHECK(build_cache_lookup(c, s, keys[2], &e, &w) == 0 && !w);
	CHECK_EQ_INT(broken.fetches, 1);
	CHECK_EQ_INT(good.fetches, 1);
}

static int spec(const char *s, bool to, CacheSpec *ret)
{
	_cleanup_(cache_spec_list_done) CacheSpecList l = {0};
	_cleanup_error_ KilnError *e = NULL;
	int r = cache_spec_list_add(&l, s, to, &e);

	if (r >= 0) {
		*ret = l.v[0];
		ret->dir = NULL; /* freed with the list */
	}
	return r;
}

TEST(cache_spec_syntax)
{
	CacheSpec s;

	CHECK(spec("type=local,src=d", false, &s) == 0 && s.type == CACHE_SPEC_LOCAL);
	CHECK(spec("type=local,dest=d,mode=max", true, &s) == 0 && s.max && !s.ignore_error);
	CHECK(spec("type=local,dest=d", true, &s) == 0 && !s.max);
	CHECK(spec("type=registry,ref=reg.io/a/b:c,mode=max,ignore-error=true,image-manifest=true,"
		   "oci-mediatypes=true",
		   true, &s) == 0 &&
	      s.type == CACHE_SPEC_REGISTRY && s.max && s.ignore_error);
	CHECK_EQ_STR(s.ref.domain, "reg.io");
	CHECK_EQ_STR(s.ref.path, "a/b");
	CHECK_EQ_STR(s.ref.tag, "c");
	/* buildx's shorthand: a plain ref is a registry cache */
	CHECK(spec("user/app:cache", false, &s) == 0 && s.type == CACHE_SPEC_REGISTRY);
	CHECK_EQ_STR(s.ref.path, "user/app");
	CHECK(spec("type=registry,ref=reg.io/a/b,mode=max", false, &s) == 0 && !s.max);
	CHECK(spec("type=registry,ref=reg.io/a/b@sha256:"
		   "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
		   false, &s) == 0);
	CHECK(spec("type=registry,ref=reg.io/a/b@sha256:"
		   "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
		   true, &s) == -KILN_EUSAGE);
	CHECK(spec("type=registry,ref=reg.io/a/b,image-manifest=false", true, &s) == -KILN_EUSAGE);
	CHECK(spec("type=registry,ref=reg.io/a/b,ignore-error=maybe", true, &s) == -KILN_EUSAGE);
	CHECK(spec("type=registry,ref=reg.io/a/b,ignore-error=true", false, &s) == -KILN_EUSAGE);
	CHECK(spec("type=registry,ref=Bad Ref", false, &s) == -KILN_EUSAGE);
	CHECK(spec("type=registry", false, &s) == -KILN_EUSAGE);
	CHECK(spec("type=registry,ref=r.io/a,src=d", false, &s) == -KILN_EUSAGE);
	CHECK(spec("type=local", true, &s) == -KILN_EUSAGE);
	CHECK(spec("type=local,src=d", true, &s) == -KILN_EUSAGE);
	CHECK(spec("type=gha,scope=x", true, &s) == -KILN_EUSAGE);
	CHECK(spec("type=local,dest=d,mode=all", true, &s) == -KILN_EUSAGE);
	CHECK(spec("dest=d", true, &s) == -KILN_EUSAGE);
}

int main(void)
{
	RUN(doc_roundtrip_is_deterministic_and_holds_only_keys_and_layers);
	RUN(doc_parse_refuses_what_is_not_a_cache);
	RUN(manifest_roundtrip_and_refusals);
	RUN(offered_entries_fetch_their_blob_on_a_hit);
	RUN(cache_spec_syntax);
	return tap_done();
}
