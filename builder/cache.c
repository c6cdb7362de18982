#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

struct BuildCache {
	char *dir;
	int fd;
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
	*ret = c;
	return 0;
}

void build_cache_free(BuildCache *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
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

static void copy_str(char *dst, size_t n, json_t *v)
{
	snprintf(dst, n, "%s", json_string_value(v) ? json_string_value(v) : "");
}

int build_cache_get(BuildCache *c, const char *key, CacheEntry *ret)
{
	if (!digest_is_valid(key))
		return -EINVAL;
	json_t *j = read_json_at(c->fd, digest_hex(key));
	if (!j)
		return -ENOENT;
	json_t *l = json_object_get(j, "layer");
	CacheEntry e = {0};
	if (json_is_object(l)) {
		e.has_layer = true;
		copy_str(e.digest, sizeof(e.digest), json_object_get(l, "digest"));
		copy_str(e.diff_id, sizeof(e.diff_id), json_object_get(l, "diff_id"));
		copy_str(e.media_type, sizeof(e.media_type), json_object_get(l, "mediaType"));
		e.size = json_integer_value(json_object_get(l, "size"));
		if (!digest_is_valid(e.digest) || !digest_is_valid(e.diff_id) || e.size < 0) {
			json_decref(j);
			return -EBADMSG;
		}
	} else if (!json_is_null(l)) {
		json_decref(j);
		return -EBADMSG;
	}
	json_decref(j);
	*ret = e;
	return 0;
}

int build_cache_put(BuildCache *c, const char *key, const CacheEntry *e, KilnError **err)
{
	json_t *j = json_object();
	int r;

	if (e->has_layer) {
		json_t *l = json_object();
		json_object_set_new(l, "mediaType", json_string(e->media_type));
		json_object_set_new(l, "digest", json_string(e->digest));
		json_object_set_new(l, "size", json_integer(e->size));
		json_object_set_new(l, "diff_id", json_string(e->diff_id));
		json_object_set_new(j, "layer", l);
	} else {
		json_object_set_new(j, "layer", json_null());
	}
	r = write_json_at(c->fd, digest_hex(key), j, err);
	json_decref(j);
	return r;
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

/* ---------- portable cache (--cache-to / --cache-from type=local) ---------- */

static json_t *entry_json(const CacheEntry *e)
{
	json_t *j = json_object();

	if (!e->has_layer) {
		json_object_set_new(j, "layer", json_null());
		return j;
	}
	json_t *l = json_object();
	json_object_set_new(l, "mediaType", json_string(e->media_type));
	json_object_set_new(l, "digest", json_string(e->digest));
	json_object_set_new(l, "size", json_integer(e->size));
	json_object_set_new(l, "diff_id", json_string(e->diff_id));
	json_object_set_new(j, "layer", l);
	return j;
}

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

int build_cache_export(BuildCache *c, Store *s, char *const *keys, const char *dir, KilnError **err)
{
	_cleanup_close_ int dfd = -1, bfd = -1;
	json_t *root = json_object(), *entries = json_object();
	int r;

	json_object_set_new(root, "version", json_integer(1));
	json_object_set_new(root, "entries", entries);
	r = cache_dir_open(dir, &dfd, &bfd, err);
	for (size_t i = 0; r >= 0 && keys && keys[i]; i++) {
		CacheEntry e;
		if (build_cache_get(c, keys[i], &e) < 0)
			continue;
		if (e.has_layer && (r = copy_blob_out(s, e.digest, bfd, err)) < 0)
			break;
		json_object_set_new(entries, digest_hex(keys[i]), entry_json(&e));
	}
	if (r >= 0)
		r = write_json_at(dfd, "kiln-cache.json", root, err);
	if (r >= 0 && (r = owner_give_at(dfd, "kiln-cache.json")) < 0)
		r = kiln_error_errno(err, -r, "chown '%s/kiln-cache.json'", dir);
	if (r >= 0) {
		/* Blobs of an older export that nothing references now. */
		_cleanup_closedir_ DIR *d = fdopendir(fcntl(bfd, F_DUPFD_CLOEXEC, 3));
		_cleanup_strv_free_ char **keep = NULL;
		const char *k;
		json_t *v;
		json_object_foreach (entries, k, v) {
			const char *dg = json_string_value(
			    json_object_get(json_object_get(v, "layer"), "digest"));
			if (dg && digest_is_valid(dg))
				strv_push(&keep, digest_hex(dg));
		}
		struct dirent *de;
		while (d && (de = readdir(d))) {
			bool used = false;
			for (size_t i = 0; keep && keep[i]; i++)
				used |= strcmp(keep[i], de->d_name) == 0;
			if (!used && de->d_name[0] != '.')
				unlinkat(bfd, de->d_name, 0);
		}
	}
	json_decref(root);
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

int build_cache_import(BuildCache *c, Store *s, const char *dir, size_t *ret_n, KilnError **err)
{
	_cleanup_free_ char *blobs = xasprintf("%s/blobs/sha256", dir);
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int bfd = -1;
	json_t *root, *entries;
	const char *k;
	json_t *v;
	size_t n = 0;
	int r = 0;

	if (dfd < 0)
		return kiln_error_errno(err, errno, "--cache-from: open '%s'", dir);
	root = read_json_at(dfd, "kiln-cache.json");
	entries = json_object_get(root, "entries");
	if (!json_is_object(entries) || json_integer_value(json_object_get(root, "version")) != 1) {
		json_decref(root);
		return kiln_error(err, EINVAL,
				  "--cache-from: '%s/kiln-cache.json' is missing or not "
				  "a kiln cache",
				  dir);
	}
	bfd = open(blobs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	json_object_foreach (entries, k, v) {
		_cleanup_free_ char *key = xasprintf("sha256:%s", k);
		CacheEntry e = {0}, have;
		json_t *l = json_object_get(v, "layer");
		if (!digest_is_valid(key)) {
			r = kiln_error(err, EINVAL, "--cache-from: bad entry key '%s'", k);
			break;
		}
		if (build_cache_get(c, key, &have) == 0)
			continue;
		if (json_is_object(l)) {
			e.has_layer = true;
			copy_str(e.digest, sizeof(e.digest), json_object_get(l, "digest"));
			copy_str(e.diff_id, sizeof(e.diff_id), json_object_get(l, "diff_id"));
			copy_str(e.media_type, sizeof(e.media_type),
				 json_object_get(l, "mediaType"));
			e.size = json_integer_value(json_object_get(l, "size"));
			if (!digest_is_valid(e.digest) || !digest_is_valid(e.diff_id)) {
				r = kiln_error(err, EINVAL,
					       "--cache-from: entry %s names a bad digest", k);
				break;
			}
			r = bfd < 0 ? kiln_error_errno(err, errno, "--cache-from: open '%s'", blobs)
				    : import_blob(s, bfd, e.digest, err);
			if (r < 0)
				break;
		}
		r = build_cache_put(c, key, &e, err);
		if (r < 0)
			break;
		n++;
	}
	json_decref(root);
	if (r < 0)
		return kiln_error_wrap(err, r, "--cache-from '%s'", dir);
	*ret_n = n;
	return 0;
}
