#include "prune.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/cache.h"
#include "common/cleanup.h"
#include "common/digest.h"
#include "common/fdutil.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry_pull.h"

#define INDEX_JSON_MAX (64u << 20)

/* ---------- small helpers ---------- */

int prune_size_parse(const char *s, uint64_t *ret, KilnError **err)
{
	static const struct {
		const char *unit;
		int shift;
	} units[] = {
	    {"", 0},	{"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
	    {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}, {"t", 40},
	    {"tb", 40}, {"tib", 40}, {"p", 50}, {"pb", 50}, {"pib", 50},
	};
	char *end = NULL;
	double v;

	if (!s || !isdigit((unsigned char)s[0]))
		return kiln_error(err, KILN_EUSAGE,
				  "invalid size '%s': expected e.g. 10GB, 500MB, 0", s ? s : "");
	errno = 0;
	v = strtod(s, &end);
	if (errno || !(v >= 0 && v < 1e30))
		return kiln_error(err, KILN_EUSAGE, "invalid size '%s'", s);
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < ELEMENTSOF(units); i++) {
		if (strcasecmp(end, units[i].unit) != 0)
			continue;
		double bytes = v * (double)(1ULL << units[i].shift);
		if (bytes >= 18446744073709551615.0)
			return kiln_error(err, KILN_EUSAGE, "invalid size '%s': too large", s);
		*ret = (uint64_t)bytes;
		return 0;
	}
	return kiln_error(err, KILN_EUSAGE,
			  "invalid size '%s': unknown unit '%s' (use B, KB, MB, GB, TB)", s, end);
}

void prune_size_format(uint64_t n, char out[32])
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, 32, "%llu B", (unsigned long long)n);
	else
		snprintf(out, 32, "%.1f %s", v, units[u]);
}

static bool is_hex64(const char *name)
{
	if (strlen(name) != 64)
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static bool is_dot(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..");
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names in a directory, sorted; an absent directory has none. */
static int dir_list(int at, const char *path, char ***ret, KilnError **err)
{
	_cleanup_strv_free_ char **names = xcalloc(1, sizeof(char *));
	int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	DIR *d;
	struct dirent *de;

	if (fd < 0) {
		if (errno == ENOENT) {
			*ret = TAKE_PTR(names);
			return 0;
		}
		return kiln_error_errno(err, errno, "open '%s'", path);
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return kiln_error_errno(err, errno, "open '%s'", path);
	}
	while ((de = readdir(d)))
		if (!is_dot(de->d_name))
			strv_push(&names, de->d_name);
	closedir(d);
	size_t n = strv_length(names);
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_strp);
	*ret = TAKE_PTR(names);
	return 0;
}

static int usage_visit(void *userdata, DirWalkEvent ev, int dfd, const char *name, const char *path,
		       const struct stat *st, KilnError **err)
{
	(void)dfd, (void)name, (void)path, (void)err;
	if (ev == DIR_WALK_ENTRY)
		*(uint64_t *)userdata += (uint64_t)st->st_blocks * 512;
	return 0;
}

/* Disk usage of dirfd/name and everything below it (du(1) without hardlink dedup); what cannot
 * be read counts as nothing. */
static uint64_t disk_usage_at(int at, const char *name)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	uint64_t total = 0;

	if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (S_ISDIR(st.st_mode))
		fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0)
		(void)dir_walk(fd, name, DIR_WALK_MISSING_OK, usage_visit, &total, NULL);
	return total + (uint64_t)st.st_blocks * 512;
}

/* Where temporaries live: every entry of all_in, the "*.tmp-*" files of tmp_files_in. */
static const char *const all_in[] = {"tmp", "work"};
static const char *const tmp_files_in[] = {".", "cache", "cache/slots", "diffids"};

/* A pid at the start of s (decimal, > 0), and where its digits end; 0 when there is none. */
static pid_t parse_pid(const char *s, const char **ret_end)
{
	long long v = 0;
	const char *p = s;

	while (*p >= '0' && *p <= '9' && v < 1 << 30)
		v = v * 10 + (*p++ - '0');
	*ret_end = p;
	return p == s || v <= 0 || v >= 1 << 30 ? 0 : (pid_t)v;
}

/* The owner pid of a work/ entry ("<pid>" or "<pid>.lock") or a snapshot temp
 * (".tmp-<pid>-<n>"); 0 for anything else. */
static pid_t work_entry_pid(const char *name)
{
	const char *end;
	pid_t pid = parse_pid(name, &end);

	return pid && (!*end || !strcmp(end, ".lock")) ? pid : 0;
}

static pid_t snapshot_temp_pid(const char *name)
{
	const char *end;
	pid_t pid;

	if (strncmp(name, ".tmp-", 5) != 0)
		return 0;
	pid = parse_pid(name + 5, &end);
	return pid && *end == '-' ? pid : 0;
}

static void pid_add(pid_t **v, size_t *n, pid_t pid)
{
	for (size_t i = 0; i < *n; i++)
		if ((*v)[i] == pid)
			return;
	*v = xrealloc(*v, (*n + 1) * sizeof(pid_t));
	(*v)[(*n)++] = pid;
}

/* Removes what the dead owner of pid left; its work lock is held by the caller. */
static size_t sweep_pid(int root, pid_t pid, char **snaps)
{
	char name[64];
	size_t removed = 0;

	snprintf(name, sizeof(name), "work/%d", (int)pid);
	if (faccessat(root, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
	    rm_rf_at(root, name, NULL) >= 0)
		removed++;
	for (size_t i = 0; snaps[i]; i++) {
		if (snapshot_temp_pid(snaps[i]) != pid)
			continue;
		_cleanup_free_ char *p = xasprintf("snapshots/%s", snaps[i]);
		if (rm_rf_at(root, p, NULL) >= 0)
			removed++;
	}
	/* Unlinked while held: a process of the same pid waiting for it finds it gone from its
	 * name and makes a new one (store_work_acquire()). */
	snprintf(name, sizeof(name), "work/%d.lock", (int)pid);
	unlinkat(root, name, 0);
	return removed;
}

size_t prune_sweep_dead(Store *s)
{
	int root = store_dirfd(s);
	_cleanup_strv_free_ char **work = NULL, **snaps = NULL;
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0, removed = 0;

	if (dir_list(root, "work", &work, NULL) < 0 ||
	    dir_list(root, "snapshots", &snaps, NULL) < 0)
		return 0;
	for (size_t i = 0; work[i]; i++)
		if (work_entry_pid(work[i]))
			pid_add(&pids, &n, work_entry_pid(work[i]));
	for (size_t i = 0; snaps[i]; i++)
		if (snapshot_temp_pid(snaps[i]))
			pid_add(&pids, &n, snapshot_temp_pid(snaps[i]));
	for (size_t i = 0; i < n; i++) {
		_cleanup_close_ int lock = -1;
		if (store_work_probe(s, pids[i], &lock, NULL) == 0)
			removed += sweep_pid(root, pids[i], snaps);
	}
	/* No prune runs while we hold the shared gc lock: its .del-* dirs are orphans. */
	for (size_t i = 0; snaps[i]; i++) {
		if (strncmp(snaps[i], ".del-", 5) != 0)
			continue;
		_cleanup_free_ char *p = xasprintf("snapshots/%s", snaps[i]);
		if (rm_rf_at(root, p, NULL) >= 0)
			removed++;
	}
	return removed;
}

int prune_snapshots_remapped(Store *s, const char *map_text, KilnError **err)
{
	int root = store_dirfd(s);
	_cleanup_free_ char *was = NULL;
	_cleanup_strv_free_ char **snaps = NULL;

	if (read_file_at(root, "idmap", 65536, &was, NULL, NULL) >= 0 && !strcmp(was, map_text))
		return 0;
	if (dir_list(root, "snapshots", &snaps, NULL) >= 0)
		for (size_t i = 0; snaps[i]; i++) {
			if (!is_hex64(snaps[i]))
				continue;
			_cleanup_free_ char *p = xasprintf("snapshots/%s", snaps[i]);
			_cleanup_free_ char *del = xasprintf("snapshots/.del-%s", snaps[i]);
			if (renameat(root, p, root, del) == 0)
				(void)rm_rf_at(root, del, NULL); /* else the next sweep retries */
		}
	return write_file_atomic_at(root, "idmap", map_text, strlen(map_text), 0600, err);
}

/* ---------- reachability ---------- */

/* Sets are JSON objects with the members as keys. */
static bool set_has(json_t *set, const char *key)
{
	return json_object_get(set, key) != NULL;
}

static void set_add(json_t *set, const char *key)
{
	json_object_set_new(set, key, json_true());
}

typedef struct Walk {
	Store *s;
	json_t *blobs;	   /* reachable digests */
	json_t *diff_ids;  /* hex of every diff_id a reachable config lists */
	json_t *corrupt;   /* verify: digests already reported as corrupt */
	char ***damage;	   /* verify: problems go here; NULL: prune, where they are errors */
	const char *where; /* the index.json entry being walked, for messages */
	const OciDescriptor *entry; /* ... and its descriptor */
	unsigned optional_depth;    /* verify: below a platform that was not pulled, or UINT_MAX */
	size_t not_pulled;	    /* verify: blobs missing there (harmless) */
} Walk;

static int walk_problem(Walk *w, KilnError **err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int walk_problem(Walk *w, KilnError **err, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		abort();
	va_end(ap);
	if (w->damage)
		return strv_consume(w->damage, msg);
	int r = kiln_error(err, EIO,
			   "%s; nothing was removed (run 'kiln doctor --verify' to see the damage)",
			   msg);
	free(msg);
	return r;
}

static bool is_config_type(const char *mt)
{
	return !strcmp(mt, MT_OCI_CONFIG) || !strcmp(mt, MT_DOCKER_CONFIG);
}

/* A reachable config: the snapshots of its diff_ids stay. */
static int walk_config(Walk *w, const char *digest, KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *data = NULL;
	_cleanup_json_ json_t *j = NULL;
	size_t len = 0, i;
	json_t *v;

	if (store_read_blob(w->s, digest, OCI_CONFIG_MAX, &data, &len, &e) < 0) {
		if (w->corrupt && set_has(w->corrupt, digest))
			return 0;
		return walk_problem(w, err, "%s: %s", w->where, e->message);
	}
	j = json_loadb(data, len, 0, NULL);
	if (!json_is_object(j))
		return walk_problem(w, err, "%s: blob %s is not a JSON object", w->where, digest);
	json_array_foreach (json_object_get(json_object_get(j, "rootfs"), "diff_ids"), i, v) {
		const char *d = json_string_value(v);
		if (d && digest_is_valid(d))
			set_add(w->diff_ids, digest_hex(d));
	}
	return 0;
}

/* Verify: whether d lies below a manifest of a partially pulled image whose platform was not
 * pulled (layers/registry_pull.h): such blobs may be missing. The walk is depth first, so the
 * subtree ends at the next descriptor that is not deeper. */
static bool reach_optional(Walk *w, const OciDescriptor *d, unsigned depth)
{
	if (depth <= w->optional_depth)
		w->optional_depth = UINT_MAX;
	if (w->optional_depth == UINT_MAX && w->damage && w->entry && depth > 0 &&
	    oci_media_type_is_manifest(d->media_type) && pull_entry_not_pulled(w->entry, d->digest))
		w->optional_depth = depth;
	return w->optional_depth != UINT_MAX;
}

/* oci_walk visitor: marks d reachable; checks (verify) that its blob is there with its size. */
static int reach_visit(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	Walk *w = userdata;
	char path[96];
	struct stat st;
	int r = 0;
	bool optional = reach_optional(w, d, depth);

	if (set_has(w->blobs, d->digest))
		return OCI_WALK_SKIP;
	snprintf(path, sizeof(path), "blobs/sha256/%s", digest_hex(d->digest));
	bool missing = fstatat(store_dirfd(w->s), path, &st, AT_SYMLINK_NOFOLLOW) < 0;
	if (missing && optional) {
		w->not_pulled++;
		return OCI_WALK_SKIP;
	}
	set_add(w->blobs, d->digest);
	if (missing) {
		/* prune: nothing below a missing blob can be known or kept */
		if (w->damage)
			r = walk_problem(w, err, "%s: missing blob %s", w->where, d->digest);
	} else if (w->damage && st.st_size != d->size) {
		r = walk_problem(w, err, "%s: blob %s has %lld bytes, its descriptor says %lld",
				 w->where, d->digest, (long long)st.st_size, (long long)d->size);
	} else if (is_config_type(d->media_type)) {
		r = walk_config(w, d->digest, err);
	} else {
		return 0;
	}
	return r < 0 ? r : OCI_WALK_SKIP;
}

/* oci_walk problem: an index or manifest that cannot be read or parsed. */
static int reach_problem(const OciDescriptor *d, const KilnError *problem, void *userdata,
			 KilnError **err)
{
	Walk *w = userdata;

	if (w->corrupt && set_has(w->corrupt, d->digest))
		return 0; /* already reported by its re-hash */
	return walk_problem(w, err, "%s: %s", w->where, problem->message);
}

/* How messages name an index.json entry: "image 'app:1'" (familiar form), else its index. */
static char *entry_where(const char *name, size_t i)
{
	Reference ref;

	if (!name)
		return xasprintf("index.json entry %zu", i);
	if (ref_parse(name, &ref, NULL) < 0)
		return xasprintf("image '%s'", name);
	_cleanup_free_ char *familiar = ref_familiar(&ref);
	return xasprintf("image '%s'", familiar);
}

/* Walks every descriptor in index.json (named or not), each on its own (the descriptor cap is
 * per image, not per store); *ret_n counts them. */
static int walk_roots(Walk *w, size_t *ret_n, KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *data = NULL;
	_cleanup_json_ json_t *index = NULL;
	OciWalkOptions wo = {.flags = OCI_WALK_MANIFESTS | OCI_WALK_SUBJECTS | OCI_WALK_ANY_SIZE,
			     .visit = reach_visit,
			     .problem = reach_problem,
			     .userdata = w};
	json_error_t jerr;
	size_t len = 0, i;
	json_t *entry;
	int r;

	*ret_n = 0;
	if (read_file_at(store_dirfd(w->s), "index.json", INDEX_JSON_MAX, &data, &len, &e) < 0)
		return walk_problem(w, err, "index.json: %s", e->message);
	index = json_loadb(data, len, 0, &jerr);
	if (!json_is_array(json_object_get(index, "manifests")))
		return walk_problem(w, err, "index.json: not an image index%s%s", index ? "" : ": ",
				    index ? "" : jerr.text);
	json_array_foreach (json_object_get(index, "manifests"), i, entry) {
		const char *name = json_string_value(json_object_get(
		    json_object_get(entry, "annotations"), OCI_ANNOTATION_REF_NAME));
		_cleanup_free_ char *where = entry_where(name, i);
		_cleanup_error_ KilnError *de = NULL;
		OciDescriptor d;
		w->where = where;
		if (oci_descriptor_from_json(entry, &d, &de) < 0) {
			r = walk_problem(w, err, "%s: %s", where, de->message);
		} else {
			w->entry = &d;
			w->optional_depth = UINT_MAX;
			r = oci_walk(w->s, &d, 1, &wo, err);
			oci_descriptor_done(&d);
		}
		w->where = NULL;
		w->entry = NULL;
		if (r < 0)
			return r;
		(*ret_n)++;
	}
	return 0;
}

static void walk_init(Walk *w, Store *s, char ***damage)
{
	*w = (Walk){.s = s,
		    .blobs = json_object(),
		    .diff_ids = json_object(),
		    .corrupt = json_object(),
		    .damage = damage};
}

static void walk_done(Walk *w)
{
	json_decref(w->blobs);
	json_decref(w->diff_ids);
	json_decref(w->corrupt);
}

/* ---------- cache entries ---------- */

typedef struct CacheItem {
	char *name; /* below cache/: "<hex>" or "slots/<hex>" */
	bool slot;
	bool stale; /* damaged, or its layer blob is missing */
	bool evict;
	CacheEntry e;
	struct timespec mtime;
} CacheItem;

static void cache_items_free(CacheItem *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

static int cache_items_load(Store *s, CacheItem **ret, size_t *ret_n, KilnError **err)
{
	_cleanup_(build_cache_freep) BuildCache *c = NULL;
	_cleanup_strv_free_ char **entries = NULL, **slots = NULL;
	_cleanup_close_ int dfd = -1;
	CacheItem *v = NULL;
	size_t n = 0;
	int r;

	r = build_cache_open(store_path(s), &c, err);
	if (r < 0)
		return r;
	dfd = openat(store_dirfd(s), "cache", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0)
		return kiln_error_errno(err, errno, "open '%s/cache'", store_path(s));
	r = dir_list(dfd, ".", &entries, err);
	if (r >= 0)
		r = dir_list(dfd, "slots", &slots, err);
	if (r < 0)
		return r;
	v = xcalloc(strv_length(entries) + strv_length(slots) + 1, sizeof(CacheItem));
	for (int pass = 0; pass < 2; pass++) {
		char **names = pass ? slots : entries;
		for (size_t i = 0; names[i]; i++) {
			CacheItem *it = &v[n];
			struct stat st;
			if (!is_hex64(names[i]))
				continue;
			it->slot = pass == 1;
			it->name = it->slot ? xasprintf("slots/%s", names[i]) : xstrdup(names[i]);
			if (fstatat(dfd, it->name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode)) {
				free(it->name);
				continue;
			}
			it->mtime = st.st_mtim;
			if (!it->slot) {
				_cleanup_free_ char *key = xasprintf("sha256:%s", names[i]);
				it->stale = build_cache_get(c, key, &it->e) < 0 ||
					    (it->e.has_layer && !store_has_blob(s, it->e.digest));
			}
			n++;
		}
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int cmp_item_age(const void *a, const void *b)
{
	const CacheItem *x = *(CacheItem *const *)a, *y = *(CacheItem *const *)b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->name, y->name);
}

static bool ts_le(struct timespec a, struct timespec b)
{
	return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
}

static uint64_t use_of(json_t *use, const char *key)
{
	return (uint64_t)json_integer_value(json_object_get(use, key));
}

/* refs[key] += delta; returns the new count. */
static json_int_t ref_add(json_t *refs, const char *key, json_int_t delta)
{
	json_int_t n = json_integer_value(json_object_get(refs, key)) + delta;

	json_object_set_new(refs, key, json_integer(n));
	return n;
}

/* Marks cache entries for eviction, least recently used first, until what stays referenced
 * (blobs + snapshots) fits in keep bytes; slots last written at or before the newest evicted
 * entry go too. blob_use and snap_use map blob digests and snapshot hexes to disk usage. */
static void cache_evict_lru(CacheItem *items, size_t n, const Walk *w, json_t *blob_use,
			    json_t *snap_use, uint64_t keep)
{
	_cleanup_free_ CacheItem **order = xcalloc(n + 1, sizeof(CacheItem *));
	_cleanup_json_ json_t *refs = json_object();
	struct timespec cutoff = {0};
	bool evicted = false;
	uint64_t total = 0;
	size_t m = 0;
	const char *k;
	json_t *v;

	for (size_t i = 0; i < n; i++) {
		if (items[i].slot || items[i].stale || items[i].evict)
			continue;
		order[m++] = &items[i];
		if (items[i].e.has_layer) {
			ref_add(refs, items[i].e.digest, 1);
			ref_add(refs, digest_hex(items[i].e.diff_id), 1);
		}
	}
	json_object_foreach (blob_use, k, v)
		if (set_has(w->blobs, k) || json_integer_value(json_object_get(refs, k)) > 0)
			total += (uint64_t)json_integer_value(v);
	json_object_foreach (snap_use, k, v)
		if (set_has(w->diff_ids, k) || json_integer_value(json_object_get(refs, k)) > 0)
			total += (uint64_t)json_integer_value(v);
	if (m > 1)
		qsort(order, m, sizeof(CacheItem *), cmp_item_age);
	for (size_t i = 0; i < m && total > keep; i++) {
		CacheItem *it = order[i];
		it->evict = evicted = true;
		cutoff = it->mtime;
		if (!it->e.has_layer)
			continue;
		const char *hex = digest_hex(it->e.diff_id);
		if (ref_add(refs, it->e.digest, -1) == 0 && !set_has(w->blobs, it->e.digest))
			total -= use_of(blob_use, it->e.digest);
		if (ref_add(refs, hex, -1) == 0 && !set_has(w->diff_ids, hex))
			total -= use_of(snap_use, hex);
	}
	for (size_t i = 0; evicted && i < n; i++)
		if (items[i].slot && ts_le(items[i].mtime, cutoff))
			items[i].evict = true;
}

/* ---------- prune ---------- */

static void remove_temp(int root, const char *path, PruneReport *rep)
{
	uint64_t use = disk_usage_at(root, path);

	if (rm_rf_at(root, path, NULL) >= 0) {
		rep->temps++;
		rep->temp_bytes += use;
	}
}

/* Under the exclusive lock nobody else runs: every temporary file is an orphan. */
static void prune_temps(Store *s, PruneReport *rep)
{
	int root = store_dirfd(s);

	for (size_t d = 0; d < ELEMENTSOF(all_in); d++) {
		_cleanup_strv_free_ char **names = NULL;
		if (dir_list(root, all_in[d], &names, NULL) < 0)
			continue;
		for (size_t i = 0; names[i]; i++) {
			_cleanup_free_ char *p = xasprintf("%s/%s", all_in[d], names[i]);
			remove_temp(root, p, rep);
		}
	}
	_cleanup_strv_free_ char **snaps = NULL;
	if (dir_list(root, "snapshots", &snaps, NULL) >= 0)
		for (size_t i = 0; snaps[i]; i++) {
			if (strncmp(snaps[i], ".tmp-", 5) != 0 &&
			    strncmp(snaps[i], ".del-", 5) != 0)
				continue;
			_cleanup_free_ char *p = xasprintf("snapshots/%s", snaps[i]);
			remove_temp(root, p, rep);
		}
	for (size_t d = 0; d < ELEMENTSOF(tmp_files_in); d++) {
		_cleanup_strv_free_ char **names = NULL;
		if (dir_list(root, tmp_files_in[d], &names, NULL) < 0)
			continue;
		for (size_t i = 0; names[i]; i++) {
			if (!strstr(names[i], ".tmp-"))
				continue;
			_cleanup_free_ char *p = xasprintf("%s/%s", tmp_files_in[d], names[i]);
			remove_temp(root, p, rep);
		}
	}
}

/* Disk usage of every blob ("sha256:<hex>") and snapshot ("<hex>"). */
static void usage_load(int root, char **blobs, char **snaps, json_t *blob_use, json_t *snap_use)
{
	for (size_t i = 0; blobs[i]; i++) {
		if (!is_hex64(blobs[i]))
			continue;
		_cleanup_free_ char *p = xasprintf("blobs/sha256/%s", blobs[i]);
		_cleanup_free_ char *d = xasprintf("sha256:%s", blobs[i]);
		json_object_set_new(blob_use, d, json_integer((json_int_t)disk_usage_at(root, p)));
	}
	for (size_t i = 0; snaps[i]; i++) {
		if (!is_hex64(snaps[i]))
			continue;
		_cleanup_free_ char *p = xasprintf("snapshots/%s", snaps[i]);
		json_object_set_new(snap_use, snaps[i],
				    json_integer((json_int_t)disk_usage_at(root, p)));
	}
}

/* Removes marked cache entries; the layers of those kept join the referenced sets. */
static void prune_cache(Store *s, CacheItem *items, size_t n, json_t *blobs, json_t *diff_ids,
			PruneReport *rep)
{
	_cleanup_close_ int dfd =
	    openat(store_dirfd(s), "cache", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	for (size_t i = 0; i < n; i++) {
		CacheItem *it = &items[i];
		if (it->evict || it->stale) {
			if (dfd < 0 || (unlinkat(dfd, it->name, 0) < 0 && errno != ENOENT))
				continue;
			if (it->slot)
				rep->cache_slots++;
			else
				rep->cache_entries++;
			rep->stale_cache_entries += it->stale;
			continue;
		}
		if (it->slot)
			continue;
		rep->kept_cache_entries++;
		if (it->e.has_layer) {
			set_add(blobs, it->e.digest);
			set_add(diff_ids, digest_hex(it->e.diff_id));
		}
	}
}

static void prune_blobs_snapshots(int root, char **blobs, char **snaps, json_t *blob_use,
				  json_t *snap_use, const Walk *w, PruneReport *rep)
{
	for (size_t i = 0; blobs[i]; i++) {
		if (!is_hex64(blobs[i]))
			continue;
		_cleanup_free_ char *d = xasprintf("sha256:%s", blobs[i]);
		if (set_has(w->blobs, d)) {
			rep->kept_blobs++;
			rep->kept_bytes += use_of(blob_use, d);
			continue;
		}
		_cleanup_free_ char *p = xasprintf("blobs/sha256/%s", blobs[i]);
		if (unlinkat(root, p, 0) < 0)
			continue;
		rep->blobs++;
		rep->blob_bytes += use_of(blob_use, d);
	}
	for (size_t i = 0; snaps[i]; i++) {
		if (!is_hex64(snaps[i]))
			continue;
		if (set_has(w->diff_ids, snaps[i])) {
			rep->kept_snapshots++;
			rep->kept_bytes += use_of(snap_use, snaps[i]);
			continue;
		}
		/* Out of its name first: a prune killed halfway never leaves a partial
		 * snapshot where a build would use it. */
		_cleanup_free_ char *p = xasprintf("snapshots/%s", snaps[i]);
		_cleanup_free_ char *del = xasprintf("snapshots/.del-%s", snaps[i]);
		if (renameat(root, p, root, del) < 0)
			continue;
		rm_rf_at(root, del, NULL);
		rep->snapshots++;
		rep->snapshot_bytes += use_of(snap_use, snaps[i]);
	}
}

int prune_run(Store *s, const PruneOptions *o, PruneReport *ret, KilnError **err)
{
	PruneReport rep = {0};
	_cleanup_strv_free_ char **blobs = NULL, **snaps = NULL;
	_cleanup_json_ json_t *blob_use = json_object(), *snap_use = json_object();
	CacheItem *items = NULL;
	size_t n_items = 0, n_roots = 0;
	int root = store_dirfd(s);
	Walk w;
	int r;

	r = store_gc_lock_exclusive(s, err);
	if (r < 0)
		return r;
	walk_init(&w, s, NULL);
	prune_temps(s, &rep);
	r = walk_roots(&w, &n_roots, err);
	if (r >= 0)
		r = cache_items_load(s, &items, &n_items, err);
	if (r >= 0)
		r = dir_list(root, "blobs/sha256", &blobs, err);
	if (r >= 0)
		r = dir_list(root, "snapshots", &snaps, err);
	if (r < 0)
		goto out;
	usage_load(root, blobs, snaps, blob_use, snap_use);
	if (o->all)
		for (size_t i = 0; i < n_items; i++)
			items[i].evict = true;
	else if (o->keep_storage_set)
		cache_evict_lru(items, n_items, &w, blob_use, snap_use, o->keep_storage);
	prune_cache(s, items, n_items, w.blobs, w.diff_ids, &rep);
	prune_blobs_snapshots(root, blobs, snaps, blob_use, snap_use, &w, &rep);
	rep.diffid_records = store_diffid_prune(s);
	*ret = rep;
out:
	cache_items_free(items, n_items);
	walk_done(&w);
	return r < 0 ? r : 0;
}

void prune_report_print(const PruneReport *r, FILE *f)
{
	char a[32], b[32], c[32], k[32];

	prune_size_format(r->blob_bytes, a);
	prune_size_format(r->snapshot_bytes, b);
	prune_size_format(r->temp_bytes, c);
	prune_size_format(r->kept_bytes, k);
	fprintf(f, "removed %zu blobs (%s)\n", r->blobs, a);
	fprintf(f, "removed %zu snapshots (%s)\n", r->snapshots, b);
	fprintf(f, "removed %zu cache entries (%zu stale) and %zu cache slots\n", r->cache_entries,
		r->stale_cache_entries, r->cache_slots);
	fprintf(f, "removed %zu temporary files and dirs (%s)\n", r->temps, c);
	prune_size_format(r->blob_bytes + r->snapshot_bytes + r->temp_bytes, a);
	fprintf(f, "total reclaimed space: %s\n", a);
	fprintf(f, "kept %zu blobs, %zu snapshots (%s), %zu cache entries\n", r->kept_blobs,
		r->kept_snapshots, k, r->kept_cache_entries);
}

/* ---------- verify ---------- */

void verify_report_done(VerifyReport *r)
{
	strv_free(r->damage);
	r->damage = NULL;
}

/* sha256 of an open file. */
static int hash_fd(int fd, char out[DIGEST_STRING_MAX], KilnError **err)
{
	_cleanup_(sha256_freep) Sha256 *h = NULL;
	char buf[1 << 16];
	int r = sha256_new(&h, err);

	if (r < 0)
		return r;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_errno(err, errno, "read");
		if (n == 0)
			break;
		sha256_update(h, buf, (size_t)n);
	}
	sha256_final(h, out);
	return 0;
}

static void verify_blob(int blobsfd, const char *name, Walk *w, VerifyReport *rep)
{
	_cleanup_close_ int fd = -1;
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *digest = xasprintf("sha256:%s", name);
	char actual[DIGEST_STRING_MAX];
	struct stat st;

	if (!is_hex64(name)) {
		strv_consume(&rep->damage,
			     xasprintf("blobs/sha256/%s: not a sha256 digest name", name));
		return;
	}
	fd = openat(blobsfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		strv_consume(&rep->damage,
			     xasprintf("blob %s: %s", digest,
				       fd < 0 ? strerror(errno) : "not a regular file"));
		set_add(w->corrupt, digest);
		return;
	}
	rep->blobs++;
	rep->blob_bytes += (uint64_t)st.st_blocks * 512;
	if (hash_fd(fd, actual, &e) < 0) {
		strv_consume(&rep->damage, xasprintf("blob %s: %s", digest, e->message));
		set_add(w->corrupt, digest);
	} else if (strcmp(actual, digest) != 0) {
		strv_consume(&rep->damage,
			     xasprintf("blob %s: corrupt, its content is %s", digest, actual));
		set_add(w->corrupt, digest);
	}
}

static size_t count_temps(int root)
{
	size_t n = 0;

	for (size_t d = 0; d < ELEMENTSOF(all_in); d++) {
		_cleanup_strv_free_ char **names = NULL;
		if (dir_list(root, all_in[d], &names, NULL) >= 0)
			n += strv_length(names);
	}
	for (size_t d = 0; d < ELEMENTSOF(tmp_files_in); d++) {
		_cleanup_strv_free_ char **names = NULL;
		if (dir_list(root, tmp_files_in[d], &names, NULL) < 0)
			continue;
		for (size_t i = 0; names[i]; i++)
			n += strstr(names[i], ".tmp-") != NULL;
	}
	return n;
}

int prune_verify(Store *s, VerifyReport *ret, KilnError **err)
{
	VerifyReport rep = {.damage = xcalloc(1, sizeof(char *))};
	_cleanup_strv_free_ char **blobs = NULL, **snaps = NULL;
	_cleanup_close_ int blobsfd = -1;
	CacheItem *items = NULL;
	size_t n_items = 0;
	int root = store_dirfd(s);
	Walk w;
	int r;

	walk_init(&w, s, &rep.damage);
	blobsfd = openat(root, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (blobsfd < 0)
		r = kiln_error_errno(err, errno, "open '%s/blobs/sha256'", store_path(s));
	else
		r = dir_list(blobsfd, ".", &blobs, err);
	for (size_t i = 0; r >= 0 && blobs[i]; i++)
		verify_blob(blobsfd, blobs[i], &w, &rep);
	if (r >= 0)
		r = walk_roots(&w, &rep.names, err);
	rep.reachable = json_object_size(w.blobs);
	rep.not_pulled = w.not_pulled;
	if (r >= 0)
		r = cache_items_load(s, &items, &n_items, err);
	for (size_t i = 0; r >= 0 && i < n_items; i++) {
		rep.cache_entries += !items[i].slot;
		rep.stale_cache_entries += !items[i].slot && items[i].stale;
	}
	if (r >= 0)
		r = dir_list(root, "snapshots", &snaps, err);
	for (size_t i = 0; r >= 0 && snaps[i]; i++) {
		rep.snapshots += is_hex64(snaps[i]);
		rep.temps += snaps[i][0] == '.';
	}
	rep.temps += count_temps(root);
	cache_items_free(items, n_items);
	walk_done(&w);
	if (r < 0) {
		verify_report_done(&rep);
		return r;
	}
	*ret = rep;
	return 0;
}

void verify_report_print(const VerifyReport *r, const char *root, FILE *f)
{
	size_t n = strv_length(r->damage);
	char a[32];

	prune_size_format(r->blob_bytes, a);
	fprintf(f, "store %s\n", root);
	fprintf(f, "blobs: %zu re-hashed (%s); %zu names reach %zu blobs\n", r->blobs, a, r->names,
		r->reachable);
	fprintf(f, "cache: %zu entries", r->cache_entries);
	if (r->stale_cache_entries)
		fprintf(f, ", stale cache entries %zu (harmless; kiln prune removes them)",
			r->stale_cache_entries);
	fprintf(f, "\nsnapshots: %zu\n", r->snapshots);
	if (r->not_pulled)
		fprintf(f,
			"not pulled: %zu blobs of platforms no pull asked for (harmless; a build "
			"that needs one fetches it)\n",
			r->not_pulled);
	if (r->temps)
		fprintf(
		    f,
		    "temporary files: %zu (of running or interrupted builds; harmless, the next "
		    "build or kiln prune removes them)\n",
		    r->temps);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "damaged: %s\n", r->damage[i]);
	if (n)
		fprintf(f, "%zu problem%s found\n", n, n == 1 ? "" : "s");
	else
		fprintf(f, "store is clean\n");
}
