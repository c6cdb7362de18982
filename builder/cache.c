#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/owner.h"
#include "layers/store.h"

typedef struct CacheOffer {
	char *name;
	CacheDoc doc;
	OciFetcher fetch;
	void (*userdata_free)(void *);
	bool broken; /* __atomic: a fetch failed, the source is not asked again */
} CacheOffer;

struct BuildCache {
	char *dir;
	int fd;
	CacheOffer *offers;
	size_t n_offers;
	/* Blobs being fetched: a layer two platforms share is fetched once, the other waits. */
	pthread_mutex_t lock;
	pthread_cond_t fetched;
	char **fetching;
};

int build_cache_open(const char *root, BuildCache **ret, KilnError **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/cache", root);
	_cleanup_free_ char *slots = xasprintf("%s/cache/slots", root);
	int r = mkdir_p(slots, 0700, err);

	if (r < 0)
		return r;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", dir);
	BuildCache *c = xcalloc(1, sizeof(*c));
	c->dir = TAKE_PTR(dir);
	c->fd = fd;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->fetched, NULL);
	*ret = c;
	return 0;
}

void build_cache_free(BuildCache *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	for (size_t i = 0; i < c->n_offers; i++) {
		CacheOffer *o = &c->offers[i];
		if (o->userdata_free)
			o->userdata_free(o->fetch.userdata);
		cache_doc_done(&o->doc);
		free(o->name);
	}
	free(c->offers);
	strv_free(c->fetching);
	pthread_cond_destroy(&c->fetched);
	pthread_mutex_destroy(&c->lock);
	free(c->dir);
	free(c);
}

const char *build_cache_dir(const BuildCache *c)
{
	return c->dir;
}

/* Also reads --cache-from directories, which another tool may have written: a FIFO there must
 * fail the import, not block it (O_NONBLOCK, then only a regular file is read). */
static json_t *read_json_at(int dirfd, const char *name)
{
	_cleanup_close_ int fd =
	    openat(dirfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;

	if (fd < 0 || read_regular_fd(fd, name, 64 << 20, &data, &len, NULL) < 0)
		return NULL;
	return json_loadb(data, len, 0, NULL);
}

static int write_json_at(int dirfd, const char *name, json_t *j, KilnError **err)
{
	char *s = json_dumps(j, JSON_COMPACT);
	int r;

	if (!s)
		return kiln_error(err, ENOMEM, "out of memory");
	r = write_file_atomic_at(dirfd, name, s, strlen(s), 0600, err);
	free(s);
	return r;
}

/* An entry as the local cache, kiln-cache.json and a registry cache's config hold it:
 * {"layer": {"mediaType", "digest", "size", "diff_id"}}, or {"layer": null}. */
static json_t *entry_to_json(const CacheEntry *e)
{
	if (!e->has_layer)
		return json_pack("{s:n}", "layer");
	return json_pack("{s:{s:s, s:s, s:I, s:s}}", "layer", "mediaType", e->media_type, "digest",
			 e->digest, "size", (json_int_t)e->size, "diff_id", e->diff_id);
}

static bool copy_str(char *dst, size_t n, json_t *v)
{
	const char *s = json_string_value(v);

	if (!s || strlen(s) >= n)
		return false;
	memcpy(dst, s, strlen(s) + 1);
	return true;
}

/* -EBADMSG for anything but the form entry_to_json writes with valid digests, a layer media
 * type and a size >= 0. */
static int entry_from_json(json_t *j, CacheEntry *ret)
{
	json_t *l = json_object_get(j, "layer");
	json_t *size = json_object_get(l, "size");
	CacheEntry e = {0};

	if (json_is_null(l)) {
		*ret = e;
		return 0;
	}
	e.has_layer = true;
	if (!json_is_object(l) ||
	    !copy_str(e.digest, sizeof(e.digest), json_object_get(l, "digest")) ||
	    !copy_str(e.diff_id, sizeof(e.diff_id), json_object_get(l, "diff_id")) ||
	    !copy_str(e.media_type, sizeof(e.media_type), json_object_get(l, "mediaType")) ||
	    !json_is_integer(size))
		return -EBADMSG;
	e.size = json_integer_value(size);
	if (!digest_is_valid(e.digest) || !digest_is_valid(e.diff_id) || e.size < 0 ||
	    !oci_media_type_is_layer(e.media_type))
		return -EBADMSG;
	*ret = e;
	return 0;
}

int build_cache_get(BuildCache *c, const char *key, CacheEntry *ret)
{
	if (!digest_is_valid(key))
		return -EINVAL;
	_cleanup_json_ json_t *j = read_json_at(c->fd, digest_hex(key));
	if (!j)
		return -ENOENT;
	return entry_from_json(j, ret);
}

int build_cache_put(BuildCache *c, const char *key, const CacheEntry *e, KilnError **err)
{
	_cleanup_json_ json_t *j = entry_to_json(e);

	return write_json_at(c->fd, digest_hex(key), j, err);
}

void build_cache_touch(BuildCache *c, const char *key)
{
	if (digest_is_valid(key))
		(void)utimensat(c->fd, digest_hex(key), NULL, AT_SYMLINK_NOFOLLOW);
}

json_t *build_cache_slot_get(BuildCache *c, const char *slot_key)
{
	_cleanup_free_ char *name = xasprintf("slots/%s", digest_hex(slot_key));

	return read_json_at(c->fd, name);
}

int build_cache_slot_put(BuildCache *c, const char *slot_key, json_t *sources, KilnError **err)
{
	_cleanup_free_ char *name = xasprintf("slots/%s", digest_hex(slot_key));

	return write_json_at(c->fd, name, sources, err);
}

const char *tree_manifest_first_change(json_t *old, json_t *cur)
{
	const char *first = NULL;
	const char *k;
	json_t *v;

	json_object_foreach (cur, k, v) {
		json_t *o = json_object_get(old, k);
		if ((!o || !json_equal(o, v)) && (!first || strcmp(k, first) < 0))
			first = k;
	}
	json_object_foreach (old, k, v) {
		if (!json_object_get(cur, k) && (!first || strcmp(k, first) < 0))
			first = k;
	}
	return first;
}

static void cache_key_tagged(CacheKey *k, char tag, size_t n, const char *data)
{
	char head[32];
	int len = snprintf(head, sizeof(head), "%c%zu:", tag, n);

	sha256_update(k->h, head, (size_t)len);
	if (data)
		sha256_update(k->h, data, n);
}

void cache_key_begin(CacheKey *k, const char *parent)
{
	if (sha256_new(&k->h, NULL) < 0)
		abort();
	sha256_update(k->h, CACHE_KEY_VERSION, sizeof(CACHE_KEY_VERSION));
	cache_key_add(k, parent ? parent : "");
}

void cache_key_add(CacheKey *k, const char *field)
{
	cache_key_tagged(k, 's', strlen(field), field);
}

void cache_key_add_strv(CacheKey *k, char *const *v)
{
	size_t n = strv_length(v);

	cache_key_tagged(k, 'l', n, NULL);
	for (size_t i = 0; i < n; i++)
		cache_key_add(k, v[i]);
}

void cache_key_end(CacheKey *k, char out[DIGEST_STRING_MAX])
{
	sha256_final(k->h, out);
	sha256_free(k->h);
	k->h = NULL;
}

void cache_key(char out[DIGEST_STRING_MAX], const char *parent, const char *const *parts,
	       size_t n_parts)
{
	CacheKey k;

	cache_key_begin(&k, parent);
	for (size_t i = 0; i < n_parts; i++)
		cache_key_add(&k, parts[i]);
	cache_key_end(&k, out);
}

/* ---------- the cache document ---------- */

void cache_doc_done(CacheDoc *d)
{
	free(d->v);
	*d = (CacheDoc){0};
}

static int doc_entry_cmp(const void *a, const void *b)
{
	return strcmp(((const CacheDocEntry *)a)->key, ((const CacheDocEntry *)b)->key);
}

void cache_doc_collect(BuildCache *c, char *const *keys, CacheDoc *ret)
{
	size_t n = strv_length(keys), m = 0;
	CacheDocEntry *v = xcalloc(n ? n : 1, sizeof(*v));

	for (size_t i = 0; i < n; i++) {
		snprintf(v[m].key, sizeof(v[m].key), "%s", keys[i]);
		if (build_cache_get(c, v[m].key, &v[m].e) == 0)
			m++;
	}
	qsort(v, m, sizeof(*v), doc_entry_cmp);
	size_t w = 0;
	for (size_t i = 0; i < m; i++)
		if (w == 0 || strcmp(v[w - 1].key, v[i].key) != 0)
			v[w++] = v[i];
	*ret = (CacheDoc){v, w};
}

char *cache_doc_format(const CacheDoc *d, size_t *ret_len)
{
	_cleanup_json_ json_t *root = json_object();
	json_t *entries = json_object();
	char *s;

	json_object_set_new(root, "version", json_integer(CACHE_DOC_VERSION));
	json_object_set_new(root, "entries", entries);
	for (size_t i = 0; i < d->n; i++)
		json_object_set_new(entries, digest_hex(d->v[i].key), entry_to_json(&d->v[i].e));
	s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	if (!s)
		abort(); /* out of memory */
	*ret_len = strlen(s);
	return s;
}

int cache_doc_parse(const char *data, size_t len, CacheDoc *ret, KilnError **err)
{
	_cleanup_json_ json_t *root = NULL;
	json_error_t je;
	json_t *entries, *v;
	const char *k;
	size_t n = 0;

	if (len > CACHE_DOC_MAX)
		return kiln_error(err, EFBIG, "cache document of %zu bytes (at most %u)", len,
				  CACHE_DOC_MAX);
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return kiln_error(err, EINVAL, "cache document: %s", je.text);
	entries = json_object_get(root, "entries");
	if (!json_is_object(entries) ||
	    json_integer_value(json_object_get(root, "version")) != CACHE_DOC_VERSION)
		return kiln_error(err, EINVAL,
				  "not a kiln cache document (it needs \"version\": %d and "
				  "\"entries\")",
				  CACHE_DOC_VERSION);
	_cleanup_free_ CacheDocEntry *out = xcalloc(json_object_size(entries) + 1, sizeof(*out));
	json_object_foreach (entries, k, v) {
		int r = snprintf(out[n].key, sizeof(out[n].key), "sha256:%s", k);
		if (r >= (int)sizeof(out[n].key) || !digest_is_valid(out[n].key))
			return kiln_error(err, EINVAL, "cache document: bad entry key '%.80s'", k);
		if (entry_from_json(v, &out[n].e) < 0)
			return kiln_error(err, EINVAL, "cache document: bad entry %s", k);
		n++;
	}
	qsort(out, n, sizeof(*out), doc_entry_cmp);
	*ret = (CacheDoc){TAKE_PTR(out), n};
	return 0;
}

static int descriptor_digest_cmp(const void *a, const void *b)
{
	return strcmp(((const OciDescriptor *)a)->digest, ((const OciDescriptor *)b)->digest);
}

void cache_doc_layers(const CacheDoc *d, OciDescriptor **ret, size_t *ret_n)
{
	OciDescriptor *v = xcalloc(d->n + 1, sizeof(*v));
	size_t n = 0, w = 0;

	for (size_t i = 0; i < d->n; i++) {
		if (!d->v[i].e.has_layer)
			continue;
		memcpy(v[n].digest, d->v[i].e.digest, DIGEST_STRING_MAX);
		memcpy(v[n].media_type, d->v[i].e.media_type, sizeof(v[n].media_type));
		v[n++].size = d->v[i].e.size;
	}
	qsort(v, n, sizeof(*v), descriptor_digest_cmp);
	for (size_t i = 0; i < n; i++)
		if (w == 0 || strcmp(v[w - 1].digest, v[i].digest) != 0)
			v[w++] = v[i];
	*ret = v;
	*ret_n = w;
}

/* ---------- portable cache (--cache-to / --cache-from type=local) ---------- */

static int copy_blob_out(Store *s, const char *digest, int blobs_fd, KilnError **err)
{
	const char *hex = digest_hex(digest);
	_cleanup_close_ int in = -1, out = -1;
	_cleanup_free_ char *tmp = xasprintf("%s.tmp-%d", hex, (int)getpid());
	char buf[1 << 16];
	int r;

	if (faccessat(blobs_fd, hex, F_OK, 0) == 0)
		return 0;
	r = store_open_blob(s, digest, &in, err);
	if (r < 0)
		return r;
	(void)unlinkat(blobs_fd, tmp, 0); /* a dead export's temp: never written through */
	out = openat(blobs_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (out < 0)
		return kiln_error_errno(err, errno, "create cache blob '%s'", tmp);
	if ((r = owner_give_fd(out)) < 0)
		return kiln_error_errno(err, -r, "chown cache blob '%s'", tmp);
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_errno(err, errno, "read blob %s", digest);
		if (n == 0)
			break;
		r = write_all(out, buf, (size_t)n);
		if (r < 0)
			return kiln_error_errno(err, -r, "write cache blob %s", digest);
	}
	if (fsync(out) < 0 || renameat(blobs_fd, tmp, blobs_fd, hex) < 0) {
		r = kiln_error_errno(err, errno, "write cache blob %s", digest);
		unlinkat(blobs_fd, tmp, 0);
		return r;
	}
	return 0;
}

/* Opens (making them, for the user) DIR and DIR/blobs/sha256, never through a symlink below DIR:
 * the cache dir is an output, written like an OCI layout dir. */
static int cache_dir_open(const char *dir, int *ret_dfd, int *ret_bfd, KilnError **err)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	_cleanup_close_ int dfd = -1, blobs = -1, bfd = -1;
	int r = mkdir_p_owned(dir, 0755, err);

	if (r < 0)
		return r;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_errno(err, errno, "open cache dir '%s'", dir);
	if ((r = mkdirat_owned(dfd, "blobs", 0755)) < 0 ||
	    (blobs = openat(dfd, "blobs", flags)) < 0)
		return kiln_error_errno(err, r < 0 ? -r : errno, "open '%s/blobs'", dir);
	if ((r = mkdirat_owned(blobs, "sha256", 0755)) < 0 ||
	    (bfd = openat(blobs, "sha256", flags)) < 0)
		return kiln_error_errno(err, r < 0 ? -r : errno, "open '%s/blobs/sha256'", dir);
	*ret_dfd = TAKE_FD(dfd);
	*ret_bfd = TAKE_FD(bfd);
	return 0;
}

/* Removes the blobs of an older export that no entry references now. */
static void cache_dir_sweep(int bfd, const CacheDoc *doc)
{
	_cleanup_closedir_ DIR *d = fdopendir(fcntl(bfd, F_DUPFD_CLOEXEC, 3));
	struct dirent *de;

	while (d && (de = readdir(d))) {
		bool used = false;
		for (size_t i = 0; i < doc->n && !used; i++)
			used = doc->v[i].e.has_layer &&
			       strcmp(digest_hex(doc->v[i].e.digest), de->d_name) == 0;
		if (!used && de->d_name[0] != '.')
			unlinkat(bfd, de->d_name, 0);
	}
}

int cache_doc_write_dir(const CacheDoc *doc, Store *s, const char *dir, KilnError **err)
{
	_cleanup_close_ int dfd = -1, bfd = -1;
	_cleanup_free_ char *json = NULL;
	size_t len = 0;
	int r;

	r = cache_dir_open(dir, &dfd, &bfd, err);
	for (size_t i = 0; r >= 0 && i < doc->n; i++)
		if (doc->v[i].e.has_layer)
			r = copy_blob_out(s, doc->v[i].e.digest, bfd, err);
	if (r < 0)
		return r;
	json = cache_doc_format(doc, &len);
	r = write_file_atomic_at(dfd, "kiln-cache.json", json, len, 0600, err);
	if (r >= 0 && (r = owner_give_at(dfd, "kiln-cache.json")) < 0)
		r = kiln_error_errno(err, -r, "chown '%s/kiln-cache.json'", dir);
	if (r >= 0)
		cache_dir_sweep(bfd, doc);
	return r < 0 ? r : 0;
}

static int import_blob(Store *s, int blobs_fd, const char *digest, KilnError **err)
{
	_cleanup_close_ int in = -1;
	BlobWriter *w = NULL;
	char buf[1 << 16];
	int r;

	if (store_has_blob(s, digest))
		return 0;
	in = openat(blobs_fd, digest_hex(digest), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return kiln_error_errno(err, errno, "cache blob %s", digest);
	r = fd_require_regular(in, digest, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "cache blob");
	r = store_blob_writer_new(s, &w, err);
	while (r >= 0) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = kiln_error_errno(err, errno, "read cache blob %s", digest);
			break;
		}
		if (n == 0) {
			r = blob_writer_commit(w, digest, NULL, NULL, err);
			break;
		}
		r = blob_writer_write(w, buf, (size_t)n, err);
	}
	blob_writer_free(w);
	return r < 0 ? r : 0;
}

/* Reads and parses DIR/kiln-cache.json; a FIFO or anything but a regular file there fails. */
static int cache_dir_read(int dfd, const char *dir, CacheDoc *ret, KilnError **err)
{
	_cleanup_close_ int fd =
	    openat(dfd, "kiln-cache.json", O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r;

	if (fd < 0 && errno == ENOENT)
		return kiln_error(err, ENOENT, "'%s/kiln-cache.json' is missing: not a kiln cache",
				  dir);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s/kiln-cache.json'", dir);
	r = read_regular_fd(fd, "kiln-cache.json", CACHE_DOC_MAX, &data, &len, err);
	if (r >= 0)
		r = cache_doc_parse(data, len, ret, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "'%s/kiln-cache.json' is not a kiln cache", dir);
	return 0;
}

int build_cache_import(BuildCache *c, Store *s, const char *dir, size_t *ret_n, KilnError **err)
{
	_cleanup_free_ char *blobs = xasprintf("%s/blobs/sha256", dir);
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int bfd = -1;
	CacheDoc doc = {0};
	size_t n = 0;
	int r;

	if (dfd < 0)
		return kiln_error_errno(err, errno, "open '%s'", dir);
	r = cache_dir_read(dfd, dir, &doc, err);
	if (r < 0)
		return r;
	bfd = open(blobs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (size_t i = 0; r >= 0 && i < doc.n; i++) {
		const CacheDocEntry *d = &doc.v[i];
		CacheEntry have;
		if (build_cache_get(c, d->key, &have) == 0)
			continue;
		if (d->e.has_layer)
			r = bfd < 0 ? kiln_error_errno(err, errno, "open '%s'", blobs)
				    : import_blob(s, bfd, d->e.digest, err);
		if (r >= 0)
			r = build_cache_put(c, d->key, &d->e, err);
		n += r >= 0;
	}
	cache_doc_done(&doc);
	if (r < 0)
		return r;
	*ret_n = n;
	return 0;
}

/* ---------- entries offered by a source, fetched when a step hits them ---------- */

void build_cache_offer(BuildCache *c, const char *name, CacheDoc *doc, const OciFetcher *fetch,
		       void (*userdata_free)(void *))
{
	c->offers = xrealloc(c->offers, (c->n_offers + 1) * sizeof(CacheOffer));
	c->offers[c->n_offers++] = (CacheOffer){
	    .name = xstrdup(name), .doc = *doc, .fetch = *fetch, .userdata_free = userdata_free};
	*doc = (CacheDoc){0};
}

static bool strv_contains(char *const *v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static void strv_remove(char **v, const char *s)
{
	size_t n = strv_length(v);

	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0) {
			free(v[i]);
			v[i] = v[n - 1];
			v[n - 1] = NULL;
			return;
		}
}

/* oci_blob_ensure through o's fetcher, at most once at a time per blob. */
static int offer_fetch(BuildCache *c, Store *s, CacheOffer *o, const OciDescriptor *d,
		       KilnError **err)
{
	int r;

	pthread_mutex_lock(&c->lock);
	while (strv_contains(c->fetching, d->digest))
		pthread_cond_wait(&c->fetched, &c->lock);
	if (store_has_blob(s, d->digest)) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	strv_push(&c->fetching, d->digest);
	pthread_mutex_unlock(&c->lock);
	r = oci_blob_ensure(s, &o->fetch, d, err);
	pthread_mutex_lock(&c->lock);
	strv_remove(c->fetching, d->digest);
	pthread_cond_broadcast(&c->fetched);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* The offered entry of key from o: 0, or -ENOENT when o has none or its blob did not arrive. */
static int offer_take(BuildCache *c, Store *s, CacheOffer *o, const char *key, CacheEntry *ret,
		      KilnError **ret_warning)
{
	CacheDocEntry probe = {0}, *hit;
	_cleanup_error_ KilnError *e = NULL;

	snprintf(probe.key, sizeof(probe.key), "%s", key);
	hit = bsearch(&probe, o->doc.v, o->doc.n, sizeof(probe), doc_entry_cmp);
	if (!hit || __atomic_load_n(&o->broken, __ATOMIC_RELAXED))
		return -ENOENT;
	if (hit->e.has_layer) {
		OciDescriptor d = {.size = hit->e.size};
		memcpy(d.digest, hit->e.digest, DIGEST_STRING_MAX);
		memcpy(d.media_type, hit->e.media_type, sizeof(d.media_type));
		if (offer_fetch(c, s, o, &d, &e) < 0) {
			__atomic_store_n(&o->broken, true, __ATOMIC_RELAXED);
			kiln_error_wrap(&e, ENOENT, "cache '%s' (not asked again)", o->name);
			if (ret_warning && !*ret_warning)
				*ret_warning = TAKE_PTR(e);
			return -ENOENT;
		}
	}
	/* Kept locally: later builds on this root hit without the source. */
	(void)build_cache_put(c, key, &hit->e, NULL);
	*ret = hit->e;
	return 0;
}

int build_cache_lookup(BuildCache *c, Store *s, const char *key, CacheEntry *ret,
		       KilnError **ret_warning)
{
	CacheEntry e;

	if (build_cache_get(c, key, &e) == 0 && (!e.has_layer || store_has_blob(s, e.digest))) {
		*ret = e;
		return 0;
	}
	for (size_t i = 0; i < c->n_offers; i++)
		if (offer_take(c, s, &c->offers[i], key, ret, ret_warning) == 0)
			return 0;
	return -ENOENT;
}
