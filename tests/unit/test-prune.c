#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "builder/cache.h"
#include "builder/prune.h"
#include "common/cleanup.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "layers/oci.h"
#include "layers/registry_pull.h"
#include "layers/store.h"
#include "deeptree.h"
#include "tap.h"

#define DIGEST_HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DIGEST_HEX_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static Store *open_store(void)
{
	Store *s = NULL;
	_cleanup_error_ KilnError *e = NULL;

	if (store_open("root", &s, &e) < 0)
		printf("# store_open: %s\n", e->message);
	return s;
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static char *blob_path(const char *digest)
{
	return xasprintf("root/blobs/sha256/%s", digest_hex(digest));
}

static bool has_blob(const char *digest)
{
	_cleanup_free_ char *p = blob_path(digest);
	return exists(p);
}

static void put(Store *s, const char *text, char out[DIGEST_STRING_MAX])
{
	_cleanup_error_ KilnError *e = NULL;

	if (store_put_blob(s, text, strlen(text), NULL, out, &e) < 0) {
		printf("# store_put_blob: %s\n", e->message);
		tap_cur_failed = 1;
	}
}

static char *desc_json(const char *mt, const char *digest, size_t size)
{
	return xasprintf("{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu}", mt, digest, size);
}

/* A one-platform image: index -> manifest -> config + one layer, named `name`. The layer's
 * bytes and diff_id are made from `seed`. */
typedef struct TestImage {
	char index[DIGEST_STRING_MAX], manifest[DIGEST_STRING_MAX], config[DIGEST_STRING_MAX];
	char layer[DIGEST_STRING_MAX], diff_id[DIGEST_STRING_MAX];
} TestImage;

static void make_image(Store *s, const char *name, const char *seed, TestImage *img)
{
	_cleanup_free_ char *layer = xasprintf("layer bytes of %s", seed);
	_cleanup_free_ char *diff = xasprintf("diff of %s", seed);
	_cleanup_free_ char *config = NULL, *cdesc = NULL, *ldesc = NULL, *manifest = NULL;
	_cleanup_free_ char *mdesc = NULL, *index = NULL;
	_cleanup_error_ KilnError *e = NULL;

	put(s, layer, img->layer);
	digest_buffer(diff, strlen(diff), img->diff_id);
	config = xasprintf("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
			   "\"layers\",\"diff_ids\":[\"%s\"]}}",
			   img->diff_id);
	put(s, config, img->config);
	cdesc = desc_json(MT_OCI_CONFIG, img->config, strlen(config));
	ldesc = desc_json(MT_OCI_LAYER_GZIP, img->layer, strlen(layer));
	manifest = xasprintf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":%s,"
			     "\"layers\":[%s]}",
			     MT_OCI_MANIFEST, cdesc, ldesc);
	put(s, manifest, img->manifest);
	mdesc = desc_json(MT_OCI_MANIFEST, img->manifest, strlen(manifest));
	index = xasprintf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":[%s]}",
			  MT_OCI_INDEX, mdesc);
	put(s, index, img->index);
	if (!name)
		return;
	OciDescriptor d = {.size = (int64_t)strlen(index)};
	snprintf(d.media_type, sizeof(d.media_type), "%s", MT_OCI_INDEX);
	memcpy(d.digest, img->index, DIGEST_STRING_MAX);
	if (store_tag_set(s, name, &d, NULL, &e) < 0) {
		printf("# store_tag_set: %s\n", e->message);
		tap_cur_failed = 1;
	}
}

static void make_snapshot(const char *diff_id)
{
	_cleanup_free_ char *dir = xasprintf("root/snapshots/%s", digest_hex(diff_id));
	_cleanup_free_ char *file = xasprintf("%s/etc/f", dir);
	_cleanup_free_ char *sub = xasprintf("%s/etc", dir);

	mkdir("root/snapshots", 0700);
	CHECK(mkdir(dir, 0755) == 0 && mkdir(sub, 0755) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, file, "x", 1, 0644, NULL) == 0);
}

static bool has_snapshot(const char *diff_id)
{
	_cleanup_free_ char *dir = xasprintf("root/snapshots/%s", digest_hex(diff_id));
	return exists(dir);
}

static int run_prune(Store *s, const PruneOptions *o, PruneReport *rep)
{
	_cleanup_error_ KilnError *e = NULL;
	int r = prune_run(s, o, rep, &e);

	if (r < 0)
		printf("# prune_run: %s\n", e->message);
	return r;
}

static bool damage_mentions(const VerifyReport *r, const char *needle)
{
	for (size_t i = 0; r->damage && r->damage[i]; i++)
		if (strstr(r->damage[i], needle))
			return true;
	return false;
}

TEST(size_parse)
{
	_cleanup_error_ KilnError *e = NULL;
	uint64_t v = 1;

	CHECK(prune_size_parse("0", &v, NULL) == 0 && v == 0);
	CHECK(prune_size_parse("2048", &v, NULL) == 0 && v == 2048);
	CHECK(prune_size_parse("500MB", &v, NULL) == 0 && v == 500ull << 20);
	CHECK(prune_size_parse("10GB", &v, NULL) == 0 && v == 10ull << 30);
	CHECK(prune_size_parse("10gb", &v, NULL) == 0 && v == 10ull << 30);
	CHECK(prune_size_parse("64KiB", &v, NULL) == 0 && v == 64ull << 10);
	CHECK(prune_size_parse("1.5g", &v, NULL) == 0 && v == 3ull << 29);
	CHECK(prune_size_parse("7 B", &v, NULL) == 0 && v == 7);
	CHECK(prune_size_parse("2T", &v, NULL) == 0 && v == 2ull << 40);
	CHECK_EQ_INT(prune_size_parse("", &v, &e), -KILN_EUSAGE);
	CHECK(e && strstr(e->message, "invalid size ''"));
	CHECK_EQ_INT(prune_size_parse("-1", &v, NULL), -KILN_EUSAGE);
	CHECK_EQ_INT(prune_size_parse("GB", &v, NULL), -KILN_EUSAGE);
	CHECK_EQ_INT(prune_size_parse("10XB", &v, NULL), -KILN_EUSAGE);
	CHECK_EQ_INT(prune_size_parse("1e40", &v, NULL), -KILN_EUSAGE);
	CHECK_EQ_INT(prune_size_parse("99999999PB", &v, NULL), -KILN_EUSAGE);
}

TEST(prune_keeps_reachable_removes_the_rest)
{
	_cleanup_(store_freep) Store *s = open_store();
	TestImage a, b;
	char stray[DIGEST_STRING_MAX];
	PruneReport rep;

	if (!s)
		return;
	make_image(s, "a:1", "a", &a);
	make_image(s, NULL, "b", &b); /* stored, never named */
	put(s, "stray", stray);
	make_snapshot(a.diff_id);
	make_snapshot(b.diff_id);
	CHECK(run_prune(s, &(PruneOptions){0}, &rep) == 0);
	CHECK(has_blob(a.index) && has_blob(a.manifest) && has_blob(a.config) && has_blob(a.layer));
	CHECK(!has_blob(b.index) && !has_blob(b.manifest) && !has_blob(b.config) &&
	      !has_blob(b.layer) && !has_blob(stray));
	CHECK(has_snapshot(a.diff_id));
	CHECK(!has_snapshot(b.diff_id));
	CHECK_EQ_INT(rep.blobs, 5);
	CHECK_EQ_INT(rep.snapshots, 1);
	CHECK_EQ_INT(rep.kept_blobs, 4);
	CHECK_EQ_INT(rep.kept_snapshots, 1);
	CHECK(rep.blob_bytes > 0 && rep.kept_bytes > 0);
}

/* A verified diff_id goes with its blob; a leftover temp of its atomic write too. */
TEST(prune_removes_diffid_records_with_their_blobs)
{
	_cleanup_(store_freep) Store *s = open_store();
	TestImage a, b;
	PruneReport rep;

	if (!s)
		return;
	make_image(s, "a:1", "a", &a);
	make_image(s, NULL, "b", &b);
	CHECK(store_diffid_record(s, a.layer, a.diff_id, NULL) == 0);
	CHECK(store_diffid_record(s, b.layer, b.diff_id, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/diffids/x.tmp-999999-999999", "", 0, 0600,
				   NULL) == 0);
	CHECK(run_prune(s, &(PruneOptions){0}, &rep) == 0);
	CHECK(store_diffid_verified(s, a.layer, a.diff_id));
	CHECK(!store_diffid_verified(s, b.layer, b.diff_id));
	CHECK_EQ_INT(rep.diffid_records, 1);
	CHECK_EQ_INT(rep.temps, 1);
	CHECK(!exists("root/diffids/x.tmp-999999-999999"));
}

static int prune_limited(void *ud)
{
	PruneReport rep;

	return run_prune(ud, &(PruneOptions){0}, &rep) < 0 || rep.temps != 2;
}

/* What a dead build left (a RUN step's deep tree in its work dir) goes, whatever its depth. */
TEST(prune_removes_a_deep_work_dir)
{
	_cleanup_(store_freep) Store *s = open_store();

	if (!s)
		return;
	mkdir("root/work", 0700);
	CHECK_EQ_INT(deep_tree_make(AT_FDCWD, "root/work/999999", DEEP_DEPTH), 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/work/999999.lock", "", 0, 0600, NULL) == 0);
	CHECK_EQ_INT(deep_run_limited(prune_limited, s), 0);
	CHECK(!exists("root/work/999999") && !exists("root/work/999999.lock"));
}

TEST(prune_walks_nested_index_and_unnamed_entries)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_free_ char *inner = NULL, *outer = NULL, *data = NULL, *root = NULL;
	_cleanup_error_ KilnError *e = NULL;
	char outer_d[DIGEST_STRING_MAX];
	TestImage a;
	PruneReport rep;
	VerifyReport vr;

	if (!s)
		return;
	make_image(s, NULL, "nested", &a);
	/* an index whose only child is a.index, named through a second level */
	inner = desc_json(MT_OCI_INDEX, a.index, 0);
	/* size of a.index is not checked by prune: only by verify */
	outer = xasprintf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":[%s]}",
			  MT_OCI_INDEX, inner);
	put(s, outer, outer_d);
	/* an index.json entry without a name is a root too */
	root = desc_json(MT_OCI_INDEX, outer_d, strlen(outer));
	data = xasprintf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":[%s]}",
			 MT_OCI_INDEX, root);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/index.json", data, strlen(data), 0644, &e) == 0);
	make_snapshot(a.diff_id);
	CHECK(run_prune(s, &(PruneOptions){0}, &rep) == 0);
	CHECK(has_blob(outer_d) && has_blob(a.index) && has_blob(a.manifest) &&
	      has_blob(a.config) && has_blob(a.layer));
	CHECK(has_snapshot(a.diff_id));
	CHECK_EQ_INT(rep.blobs, 0);
	/* verify names the descriptor whose size is wrong */
	CHECK(prune_verify(s, &vr, &e) == 0);
	CHECK_EQ_INT(strv_length(vr.damage), 1);
	CHECK(damage_mentions(&vr, "index.json entry 0") && damage_mentions(&vr, a.index) &&
	      damage_mentions(&vr, "descriptor says 0"));
	verify_report_done(&vr);
}

TEST(prune_refuses_when_a_reachable_manifest_is_damaged)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *mp = NULL;
	char stray[DIGEST_STRING_MAX];
	TestImage a;
	PruneReport rep;

	if (!s)
		return;
	make_image(s, "a:1", "a", &a);
	put(s, "stray", stray);
	mp = blob_path(a.manifest);
	CHECK(write_file_atomic_at(AT_FDCWD, mp, "{garbage", 8, 0644, NULL) == 0);
	CHECK(prune_run(s, &(PruneOptions){0}, &rep, &e) < 0);
	CHECK(e && strstr(e->message, a.manifest) && strstr(e->message, "nothing was removed"));
	CHECK(has_blob(stray) && has_blob(a.layer) && has_blob(a.config));
}

TEST(prune_removes_temporaries)
{
	_cleanup_(store_freep) Store *s = open_store();
	PruneReport rep;

	if (!s)
		return;
	mkdir("root/snapshots", 0700);
	mkdir("root/work", 0700);
	CHECK(mkdir("root/snapshots/.tmp-999999-1", 0755) == 0);
	CHECK(mkdir("root/snapshots/.del-abc", 0755) == 0);
	CHECK(mkdir("root/work/999999", 0700) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/work/999999.lock", "", 0, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/tmp/blob-0123", "partial", 7, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/index.json.tmp-999999-999999", "{", 1, 0644,
				   NULL) == 0);
	CHECK(run_prune(s, &(PruneOptions){0}, &rep) == 0);
	CHECK_EQ_INT(rep.temps, 6);
	CHECK(!exists("root/snapshots/.tmp-999999-1") && !exists("root/snapshots/.del-abc"));
	CHECK(!exists("root/work/999999") && !exists("root/work/999999.lock"));
	CHECK(!exists("root/tmp/blob-0123") && !exists("root/index.json.tmp-999999-999999"));
	CHECK(exists("root/index.json") && exists("root/oci-layout"));
}

/* A cache entry whose layer is a blob of `size` bytes and a snapshot, last used at `mtime`. */
static void make_cache_entry(Store *s, BuildCache *c, const char *seed, size_t size, time_t mtime,
			     CacheEntry *ret, char key[DIGEST_STRING_MAX])
{
	_cleanup_free_ char *data = xcalloc(1, size + 1);
	_cleanup_free_ char *diff = xasprintf("diff %s", seed);
	_cleanup_free_ char *path = NULL;
	CacheEntry e = {.has_layer = true, .size = (int64_t)size};

	memset(data, 'z', size);
	memcpy(data, seed, strlen(seed) < size ? strlen(seed) : size);
	put(s, data, e.digest);
	digest_buffer(diff, strlen(diff), e.diff_id);
	snprintf(e.media_type, sizeof(e.media_type), "%s", MT_OCI_LAYER_GZIP);
	digest_buffer(seed, strlen(seed), key);
	CHECK(build_cache_put(c, key, &e, NULL) == 0);
	make_snapshot(e.diff_id);
	path = xasprintf("root/cache/%s", digest_hex(key));
	struct timespec ts[2] = {{.tv_sec = mtime}, {.tv_sec = mtime}};
	CHECK(utimensat(AT_FDCWD, path, ts, 0) == 0);
	*ret = e;
}

static bool has_entry(const char *key)
{
	_cleanup_free_ char *p = xasprintf("root/cache/%s", digest_hex(key));
	return exists(p);
}

TEST(prune_keep_storage_evicts_least_recently_used_first)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(build_cache_freep) BuildCache *c = NULL;
	CacheEntry old, mid, young;
	char k_old[DIGEST_STRING_MAX], k_mid[DIGEST_STRING_MAX], k_young[DIGEST_STRING_MAX];
	PruneReport rep;

	if (!s || build_cache_open("root", &c, NULL) < 0)
		return;
	/* 64 KiB blobs; created young-first, so creation order is not the answer */
	make_cache_entry(s, c, "young", 65536, 3000, &young, k_young);
	make_cache_entry(s, c, "old", 65536, 1000, &old, k_old);
	make_cache_entry(s, c, "mid", 65536, 2000, &mid, k_mid);
	/* a slot written with the oldest entry goes with it; one written later stays */
	CHECK(write_file_atomic_at(AT_FDCWD, "root/cache/slots/" DIGEST_HEX_A, "{}", 2, 0600,
				   NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/cache/slots/" DIGEST_HEX_B, "{}", 2, 0600,
				   NULL) == 0);
	struct timespec t1[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
	struct timespec t3[2] = {{.tv_sec = 3000}, {.tv_sec = 3000}};
	CHECK(utimensat(AT_FDCWD, "root/cache/slots/" DIGEST_HEX_A, t1, 0) == 0);
	CHECK(utimensat(AT_FDCWD, "root/cache/slots/" DIGEST_HEX_B, t3, 0) == 0);

	/* room for two entries' blobs + snapshots, not three */
	PruneOptions o = {.keep_storage_set = true, .keep_storage = 2 * (65536 + 3 * 4096) + 8192};
	CHECK(run_prune(s, &o, &rep) == 0);
	CHECK(!has_entry(k_old) && has_entry(k_mid) && has_entry(k_young));
	CHECK(!has_blob(old.digest) && has_blob(mid.digest) && has_blob(young.digest));
	CHECK(!has_snapshot(old.diff_id) && has_snapshot(mid.diff_id) &&
	      has_snapshot(young.diff_id));
	CHECK(!exists("root/cache/slots/" DIGEST_HEX_A) &&
	      exists("root/cache/slots/" DIGEST_HEX_B));
	CHECK_EQ_INT(rep.cache_entries, 1);
	CHECK_EQ_INT(rep.cache_slots, 1);
	CHECK(rep.kept_bytes <= o.keep_storage);

	/* nothing named: 0 evicts every entry */
	o.keep_storage = 0;
	CHECK(run_prune(s, &o, &rep) == 0);
	CHECK(!has_entry(k_mid) && !has_entry(k_young));
	CHECK(!has_blob(mid.digest) && !has_blob(young.digest));
	CHECK_EQ_INT(rep.kept_bytes, 0);
}

TEST(cache_touch_makes_an_entry_recently_used)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(build_cache_freep) BuildCache *c = NULL;
	CacheEntry e1, e2;
	char k1[DIGEST_STRING_MAX], k2[DIGEST_STRING_MAX];
	PruneReport rep;

	if (!s || build_cache_open("root", &c, NULL) < 0)
		return;
	make_cache_entry(s, c, "first", 65536, 1000, &e1, k1);
	make_cache_entry(s, c, "second", 65536, 2000, &e2, k2);
	build_cache_touch(c, k1); /* a hit: now the most recently used */
	PruneOptions o = {.keep_storage_set = true, .keep_storage = 65536 + 3 * 4096 + 8192};
	CHECK(run_prune(s, &o, &rep) == 0);
	CHECK(has_entry(k1) && !has_entry(k2));
	CHECK(has_blob(e1.digest) && !has_blob(e2.digest));
}

TEST(prune_keep_storage_never_touches_named_images)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(build_cache_freep) BuildCache *c = NULL;
	CacheEntry e1;
	char k1[DIGEST_STRING_MAX];
	TestImage a;
	PruneReport rep;

	if (!s || build_cache_open("root", &c, NULL) < 0)
		return;
	make_image(s, "a:1", "a", &a);
	make_snapshot(a.diff_id);
	make_cache_entry(s, c, "e1", 4096, 1000, &e1, k1);
	PruneOptions o = {.keep_storage_set = true, .keep_storage = 0};
	CHECK(run_prune(s, &o, &rep) == 0);
	CHECK(!has_entry(k1) && !has_blob(e1.digest));
	CHECK(has_blob(a.layer) && has_blob(a.index) && has_snapshot(a.diff_id));
	CHECK(rep.kept_bytes > 0);
}

TEST(prune_all_and_stale_entries)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(build_cache_freep) BuildCache *c = NULL;
	CacheEntry e1, e2;
	char k1[DIGEST_STRING_MAX], k2[DIGEST_STRING_MAX], k3[DIGEST_STRING_MAX];
	_cleanup_free_ char *bp = NULL;
	PruneReport rep;

	if (!s || build_cache_open("root", &c, NULL) < 0)
		return;
	make_cache_entry(s, c, "e1", 100, 1000, &e1, k1);
	make_cache_entry(s, c, "e2", 100, 2000, &e2, k2);
	/* a step without a layer, and a damaged entry */
	CacheEntry none = {0};
	digest_buffer("none", 4, k3);
	CHECK(build_cache_put(c, k3, &none, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/cache/" DIGEST_HEX_A, "{", 1, 0600, NULL) == 0);
	/* e1's blob vanished: its entry is stale */
	bp = blob_path(e1.digest);
	CHECK(unlink(bp) == 0);
	CHECK(run_prune(s, &(PruneOptions){0}, &rep) == 0);
	CHECK(!has_entry(k1) && !exists("root/cache/" DIGEST_HEX_A));
	CHECK(has_entry(k2) && has_entry(k3) && has_blob(e2.digest) && has_snapshot(e2.diff_id));
	CHECK(!has_snapshot(e1.diff_id));
	CHECK_EQ_INT(rep.stale_cache_entries, 2);
	CHECK_EQ_INT(rep.kept_cache_entries, 2);

	CHECK(run_prune(s, &(PruneOptions){.all = true}, &rep) == 0);
	CHECK(!has_entry(k2) && !has_entry(k3) && !has_blob(e2.digest));
	CHECK(!has_snapshot(e2.diff_id));
	CHECK_EQ_INT(rep.cache_entries, 2);
}

TEST(verify_clean_store)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	VerifyReport rep;
	TestImage a;

	if (!s)
		return;
	make_image(s, "a:1", "a", &a);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK_EQ_INT(strv_length(rep.damage), 0);
	CHECK_EQ_INT(rep.blobs, 4);
	CHECK_EQ_INT(rep.names, 1);
	CHECK_EQ_INT(rep.reachable, 4);
	verify_report_done(&rep);
}

TEST(verify_detects_a_flipped_byte)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *lp = NULL;
	VerifyReport rep;
	TestImage a;

	if (!s)
		return;
	make_image(s, "a:1", "a", &a);
	lp = blob_path(a.layer);
	int fd = open(lp, O_WRONLY | O_CLOEXEC);
	CHECK(fd >= 0 && pwrite(fd, "X", 1, 3) == 1);
	if (fd >= 0)
		close(fd);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK_EQ_INT(strv_length(rep.damage), 1);
	CHECK(damage_mentions(&rep, a.layer) && damage_mentions(&rep, "corrupt"));
	verify_report_done(&rep);
}

TEST(verify_detects_missing_and_wrong_size_and_bad_index)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *cp = NULL;
	VerifyReport rep;
	TestImage a;

	if (!s)
		return;
	make_image(s, "a:1", "a", &a);
	cp = blob_path(a.config);
	CHECK(unlink(cp) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/blobs/sha256/not-a-digest", "x", 1, 0644,
				   NULL) == 0);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK(damage_mentions(&rep, "image 'a:1': missing blob") &&
	      damage_mentions(&rep, a.config));
	CHECK(damage_mentions(&rep, "not-a-digest"));
	CHECK_EQ_INT(strv_length(rep.damage), 2);
	verify_report_done(&rep);

	CHECK(write_file_atomic_at(AT_FDCWD, "root/index.json", "{\"manifests\":", 13, 0644,
				   NULL) == 0);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK(damage_mentions(&rep, "index.json"));
	verify_report_done(&rep);
}

/* An index of a (amd64) and b (arm64) named as a partial pull of a only
 * (PULL_ANNOTATION_MANIFESTS, or none when pulled is NULL); sizes: of the two manifests. */
static void name_partial(Store *s, const TestImage *a, const TestImage *b, const size_t sizes[2],
			 const char *pulled)
{
	_cleanup_free_ char *ma = NULL, *mb = NULL, *index = NULL;
	_cleanup_error_ KilnError *e = NULL;
	OciDescriptor d = {0};

	ma = xasprintf("{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,\"platform\":{"
		       "\"architecture\":\"amd64\",\"os\":\"linux\"}}",
		       MT_OCI_MANIFEST, a->manifest, sizes[0]);
	mb = xasprintf("{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,\"platform\":{"
		       "\"architecture\":\"arm64\",\"os\":\"linux\"}}",
		       MT_OCI_MANIFEST, b->manifest, sizes[1]);
	index = xasprintf("{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":[%s,%s]}",
			  MT_OCI_INDEX, ma, mb);
	put(s, index, d.digest);
	snprintf(d.media_type, sizeof(d.media_type), "%s", MT_OCI_INDEX);
	d.size = (int64_t)strlen(index);
	d.annotations = json_object();
	if (pulled)
		json_object_set_new(d.annotations, PULL_ANNOTATION_MANIFESTS, json_string(pulled));
	CHECK(store_tag_set(s, "multi:1", &d, NULL, &e) == 0);
	oci_descriptor_done(&d);
}

static size_t blob_size(const char *digest)
{
	_cleanup_free_ char *p = blob_path(digest);
	struct stat st;

	return stat(p, &st) == 0 ? (size_t)st.st_size : 0;
}

TEST(verify_partial_pull)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *bl = NULL, *bm = NULL, *al = NULL;
	VerifyReport rep;
	TestImage a, b;

	if (!s)
		return;
	make_image(s, NULL, "a", &a);
	make_image(s, NULL, "b", &b);
	size_t sizes[2] = {blob_size(a.manifest), blob_size(b.manifest)};
	name_partial(s, &a, &b, sizes, a.manifest);
	/* b's layer missing (an interrupted pull of b): not damage */
	bl = blob_path(b.layer);
	CHECK(unlink(bl) == 0);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK_EQ_INT(strv_length(rep.damage), 0);
	CHECK_EQ_INT(rep.not_pulled, 1);
	verify_report_done(&rep);
	/* b's manifest missing too (never pulled) */
	bm = blob_path(b.manifest);
	CHECK(unlink(bm) == 0);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK_EQ_INT(strv_length(rep.damage), 0);
	CHECK_EQ_INT(rep.not_pulled, 1);
	verify_report_done(&rep);
	/* without the annotation the same is damage */
	name_partial(s, &a, &b, sizes, NULL);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK(damage_mentions(&rep, b.manifest));
	CHECK_EQ_INT(rep.not_pulled, 0);
	verify_report_done(&rep);
	/* a platform listed as pulled must be whole */
	name_partial(s, &a, &b, sizes, a.manifest);
	al = blob_path(a.layer);
	CHECK(unlink(al) == 0);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK_EQ_INT(strv_length(rep.damage), 1);
	CHECK(damage_mentions(&rep, "image 'multi:1': missing blob") &&
	      damage_mentions(&rep, a.layer));
	verify_report_done(&rep);
}

TEST(verify_counts_stale_cache_and_temps_as_harmless)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(build_cache_freep) BuildCache *c = NULL;
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *bp = NULL;
	CacheEntry e1;
	char k1[DIGEST_STRING_MAX];
	VerifyReport rep;

	if (!s || build_cache_open("root", &c, NULL) < 0)
		return;
	make_cache_entry(s, c, "e1", 100, 1000, &e1, k1);
	bp = blob_path(e1.digest);
	CHECK(unlink(bp) == 0);
	CHECK(mkdir("root/snapshots/.tmp-999999-1", 0755) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "root/tmp/blob-1", "x", 1, 0644, NULL) == 0);
	CHECK(prune_verify(s, &rep, &e) == 0);
	CHECK_EQ_INT(strv_length(rep.damage), 0);
	CHECK_EQ_INT(rep.cache_entries, 1);
	CHECK_EQ_INT(rep.stale_cache_entries, 1);
	CHECK_EQ_INT(rep.temps, 2);
	verify_report_done(&rep);
}

TEST(work_claim_and_sweep_of_dead_builds)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_free_ char *work = NULL, *own_lock = NULL;
	_cleanup_error_ KilnError *e = NULL;
	int pipefd[2];

	if (!s)
		return;
	mkdir("root/snapshots", 0700);
	CHECK(store_work_acquire(s, &work, &e) == 0);
	own_lock = xasprintf("root/work/%d.lock", (int)getpid());
	CHECK(work && exists(work) && exists(own_lock));

	/* a live build (a child holding its lock) and a dead one (nobody holds 999999.lock) */
	CHECK(pipe2(pipefd, O_CLOEXEC) == 0);
	pid_t child = fork();
	if (child == 0) {
		Store *cs = NULL;
		char *cw = NULL;
		if (store_open("root", &cs, NULL) < 0 || store_work_acquire(cs, &cw, NULL) < 0)
			_exit(1);
		_cleanup_free_ char *t = xasprintf("root/snapshots/.tmp-%d-1", (int)getpid());
		if (mkdir(t, 0755) < 0 || write(pipefd[1], "r", 1) != 1)
			_exit(1);
		for (;;) /* until the parent kills it */
			pause();
	}
	char c = 0;
	close(pipefd[1]);
	CHECK(read(pipefd[0], &c, 1) == 1);
	_cleanup_free_ char *live_dir = xasprintf("root/work/%d", (int)child);
	_cleanup_free_ char *live_tmp = xasprintf("root/snapshots/.tmp-%d-1", (int)child);
	CHECK(mkdir("root/work/999999", 0700) == 0);
	CHECK(mkdir("root/work/999999/u", 0700) == 0);
	CHECK(mkdir("root/snapshots/.tmp-999999-3", 0755) == 0);
	CHECK(mkdir("root/snapshots/.del-" DIGEST_HEX_A, 0755) == 0);
	CHECK(mkdir("root/snapshots/" DIGEST_HEX_B, 0755) == 0);

	CHECK(prune_sweep_dead(s) == 3);
	CHECK(!exists("root/work/999999") && !exists("root/work/999999.lock"));
	CHECK(!exists("root/snapshots/.tmp-999999-3") &&
	      !exists("root/snapshots/.del-" DIGEST_HEX_A));
	CHECK(exists("root/snapshots/" DIGEST_HEX_B));
	CHECK(exists(live_dir) && exists(live_tmp));
	CHECK(exists(work));

	int fd = -1;
	CHECK_EQ_INT(store_work_probe(s, child, &fd, NULL), 1);
	CHECK_EQ_INT(store_work_probe(s, getpid(), &fd, NULL), 1);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(pipefd[0]);
	/* killed: its leftovers are now a dead build's */
	CHECK(prune_sweep_dead(s) == 2);
	CHECK(!exists(live_dir) && !exists(live_tmp));

	store_work_release(s);
	CHECK(!exists(work) && !exists(own_lock));
}

TEST(store_open_holds_gc_lock_shared)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(store_freep) Store *s2 = open_store();
	_cleanup_close_ int fd = -1;

	if (!s || !s2)
		return;
	fd = open("root/gc.lock", O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(flock(fd, LOCK_SH | LOCK_NB) == 0);
	CHECK(flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK);
	store_free(TAKE_PTR(s2));
	CHECK(flock(fd, LOCK_UN) == 0);
	/* s still holds it */
	CHECK(flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK);
	store_free(TAKE_PTR(s));
	CHECK(flock(fd, LOCK_EX | LOCK_NB) == 0);
}

TEST(prune_waits_for_open_stores)
{
	_cleanup_(store_freep) Store *s = open_store();
	int pipefd[2];

	if (!s)
		return;
	CHECK(pipe2(pipefd, O_CLOEXEC) == 0);
	pid_t child = fork();
	if (child == 0) {
		Store *cs = NULL;
		PruneReport rep;
		close(pipefd[0]);
		store_free(s); /* our copy of the parent's lock, not the parent's */
		if (store_open("root", &cs, NULL) < 0 ||
		    prune_run(cs, &(PruneOptions){0}, &rep, NULL) < 0)
			_exit(1);
		if (write(pipefd[1], "d", 1) != 1)
			_exit(1);
		_exit(0);
	}
	close(pipefd[1]);
	struct timespec ts = {.tv_nsec = 300 * 1000 * 1000};
	nanosleep(&ts, NULL);
	/* the child's prune still waits for our shared lock */
	char c;
	int fl = fcntl(pipefd[0], F_GETFL);
	fcntl(pipefd[0], F_SETFL, fl | O_NONBLOCK);
	CHECK(read(pipefd[0], &c, 1) < 0 && errno == EAGAIN);
	fcntl(pipefd[0], F_SETFL, fl);
	store_free(TAKE_PTR(s));
	CHECK(read(pipefd[0], &c, 1) == 1 && c == 'd');
	int st = 0;
	waitpid(child, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(pipefd[0]);
}

int main(void)
{
	RUN(size_parse);
	RUN(prune_keeps_reachable_removes_the_rest);
	RUN(prune_removes_diffid_records_with_their_blobs);
	RUN(prune_removes_a_deep_work_dir);
	RUN(prune_walks_nested_index_and_unnamed_entries);
	RUN(prune_refuses_when_a_reachable_manifest_is_damaged);
	RUN(prune_removes_temporaries);
	RUN(prune_keep_storage_evicts_least_recently_used_first);
	RUN(cache_touch_makes_an_entry_recently_used);
	RUN(prune_keep_storage_never_touches_named_images);
	RUN(prune_all_and_stale_entries);
	RUN(verify_clean_store);
	RUN(verify_detects_a_flipped_byte);
	RUN(verify_detects_missing_and_wrong_size_and_bad_index);
	RUN(verify_partial_pull);
	RUN(verify_counts_stale_cache_and_temps_as_harmless);
	RUN(work_claim_and_sweep_of_dead_builds);
	RUN(store_open_holds_gc_lock_shared);
	RUN(prune_waits_for_open_stores);
	return tap_done();
}
