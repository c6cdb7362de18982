/* The cache that travels: the cache document (one form of entries for kiln-cache.json and a
 * registry cache's config) and entries offered by a source and fetched when a step hits them. */
#include <jansson.h>

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

int main(void)
{
	RUN(doc_roundtrip_is_deterministic_and_holds_only_keys_and_layers);
	RUN(doc_parse_refuses_what_is_not_a_cache);
	RUN(offered_entries_fetch_their_blob_on_a_hit);
	return tap_done();
}
