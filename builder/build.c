#include "build.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "builder/cache.h"
#include "builder/context.h"
#include "builder/dockerfile.h"
#include "builder/expand.h"
#include "builder/imageconf.h"
#include "builder/prune.h"
#include "common/cleanup.h"
#include "common/digest.h"
#include "common/fdutil.h"
#include "common/rootfs.h"
#include "layers/export.h"
#include "layers/import.h"
#include "layers/layer_apply.h"
#include "layers/layer_write.h"
#include "layers/oci.h"
#include "platforms/binfmt.h"
#include "sandbox/container.h"
#include "sandbox/overlay.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

typedef struct LayerRef {
	char diff_id[DIGEST_STRING_MAX];
	OciDescriptor desc;
} LayerRef;

typedef struct Var {
	char *key;
	char *value; /* NULL: declared without a value */
} Var;

typedef struct VarList {
	Var *v;
	size_t n;
} VarList;

typedef enum { STAGE_NEW, STAGE_BUILDING, STAGE_BUILT, STAGE_FAILED } StageState;

/* A stage as the Dockerfile declares it. */
typedef struct Stage {
	size_t index;
	char *name; /* lowercase, NULL when unnamed */
	const DfInstruction *from;
	size_t first, end; /* instructions [first, end) after FROM */
} Stage;

/* What building a stage produced. Shared between target platforms when the stage's key (its
 * platform, the args it can see, its dependencies) is the same: the cross-compile pattern
 * `FROM --platform=$BUILDPLATFORM` builds once. */
typedef struct StageResult {
	char key[DIGEST_STRING_MAX];
	StageState state;
	ImageConf *conf;
	LayerRef *layers;
	size_t n_layers;
	Platform platform;
	char chain[DIGEST_STRING_MAX]; /* cache key of the stage's last step */
	struct StageResult *next;
} StageResult;

typedef struct ReportStep {
	char platform[PLATFORM_STRING_MAX];
	char *stage;
	unsigned line;
	char *instruction;
	bool emulated;
	double wall_s, cpu_s;
	bool has_layer;
	LayerRef layer;
	bool run;
	bool cached;
	char *reason;
	char key[DIGEST_STRING_MAX];
	size_t stage_index;
} ReportStep;

typedef struct Build {
	const BuildOptions *o;
	Dockerfile *df;
	BuildContext *ctx;
	Progress *progress;
	Store *store;
	Stage *stages;
	size_t n_stages;
	VarList build_args;
	char **consumed_args;
	char *work;    /* ROOT/work/<pid>: this build's mount points and upper dirs */
	char *snapdir; /* ROOT/snapshots */
	unsigned seq;  /* atomic */
	Platform build_platform;
	Compression compression;
	BuildCache *cache;
	pthread_mutex_t lock; /* results, consumed_args, report */
	pthread_cond_t cond;
	StageResult *results;
	ReportStep *steps;
	size_t n_steps;
	bool failed; /* a pass failed: the others stop at their next instruction */
} Build;

/* One target platform's run through the stages. */
typedef struct Pass {
	Build *b;
	Platform platform;
	VarList global_args;
	StageResult **res; /* per stage index, once resolved in this pass */
	bool *visiting;	   /* per stage index: cycle detection */
	OciDescriptor manifest;
	KilnError *err;
	int status;
} Pass;

typedef struct StageRun {
	Build *b;
	Pass *p;
	Stage *st;
	StageResult *out;
	VarList args;
	unsigned n_steps, step_no;
	bool cmd_set;
	/* the cache chain: the key of the last step, and whether every step so far was a hit */
	char chain[DIGEST_STRING_MAX];
	bool chain_hit;
	char step_key[DIGEST_STRING_MAX];
	/* the step being run, for the report */
	bool cached;
	char *reason;
	bool emulated;
	double cpu_s;
	bool has_layer;
	LayerRef layer;
} StageRun;

typedef struct Mounted {
	char *dir;
	char *merged;
	int fd;
	bool mounted;
} Mounted;

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void report_step(StageRun *r, const DfInstruction *in, double wall, bool run);

/* ---------- variables ---------- */

static Var *vars_find(const VarList *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].key, key) == 0)
			return &l->v[i];
	return NULL;
}

static void vars_set(VarList *l, const char *key, const char *value)
{
	Var *v = vars_find(l, key);

	if (!v) {
		l->v = xrealloc(l->v, (l->n + 1) * sizeof(Var));
		v = &l->v[l->n++];
		v->key = xstrdup(key);
		v->value = NULL;
	}
	free(v->value);
	v->value = value ? xstrdup(value) : NULL;
}

static void vars_done(VarList *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].key);
		free(l->v[i].value);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static const char *lookup_global(void *ud, const char *name)
{
	Pass *p = ud;
	Var *v = vars_find(&p->global_args, name);

	return v ? v->value : NULL;
}

/* In a stage ENV wins over ARG, as the Dockerfile reference says. */
static const char *lookup_stage(void *ud, const char *name)
{
	StageRun *r = ud;
	const char *e = image_conf_env_get(r->out->conf, name);

	if (e)
		return e;
	Var *v = vars_find(&r->args, name);
	return v ? v->value : NULL;
}

static void mark_consumed(Build *b, const char *key)
{
	pthread_mutex_lock(&b->lock);
	bool seen = false;
	for (size_t i = 0; b->consumed_args && b->consumed_args[i]; i++)
		seen |= strcmp(b->consumed_args[i], key) == 0;
	if (!seen)
		strv_push(&b->consumed_args, key);
	pthread_mutex_unlock(&b->lock);
}

static void set_platform_args(Pass *p, VarList *l)
{
	char s[96];
	const Platform *t = &p->platform, *h = &p->b->build_platform;

	platform_format(t, s, sizeof(s));
	vars_set(l, "TARGETPLATFORM", s);
	vars_set(l, "TARGETOS", t->os);
	vars_set(l, "TARGETARCH", t->arch);
	vars_set(l, "TARGETVARIANT", t->variant);
	platform_format(h, s, sizeof(s));
	vars_set(l, "BUILDPLATFORM", s);
	vars_set(l, "BUILDOS", h->os);
	vars_set(l, "BUILDARCH", h->arch);
	vars_set(l, "BUILDVARIANT", h->variant);
}

/* ---------- errors with file:line ---------- */

static int inst_error(const Build *b, const DfInstruction *in, int code, KilnError **err,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int inst_error(const Build *b, const DfInstruction *in, int code, KilnError **err,
		      const char *fmt, ...)
{
	va_list ap;
	_cleanup_free_ char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	return kiln_error(err, code, "%s:%u: %s", b->df->filename, in->line, msg ? msg : "error");
}

static int inst_wrap(const Build *b, const DfInstruction *in, int r, KilnError **err)
{
	return kiln_error_wrap(err, r, "%s:%u: %s", b->df->filename, in->line, in->keyword);
}

/* ---------- snapshots and mounts ---------- */

static int snapshot_ensure(Build *b, const LayerRef *l, KilnError **err)
{
	_cleanup_free_ char *final = xasprintf("%s/%s", b->snapdir, digest_hex(l->diff_id));
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int blob = -1, dfd = -1;
	int r;

	if (access(final, F_OK) == 0)
		return 0;
	tmp = xasprintf("%s/.tmp-%d-%u", b->snapdir, (int)getpid(),
			__atomic_add_fetch(&b->seq, 1, __ATOMIC_RELAXED));
	if (mkdir(tmp, 0755) < 0)
		return kiln_error_errno(err, errno, "mkdir '%s'", tmp);
	r = store_open_blob(b->store, l->desc.digest, &blob, err);
	if (r >= 0) {
		dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			r = kiln_error_errno(err, errno, "open '%s'", tmp);
	}
	if (r >= 0) {
		LayerApplyOptions ao = {
		    .mode = LAYER_APPLY_OVERLAY,
		    .whiteouts = true,
		    .keep_owner = true,
		    .force_uid = (uid_t)-1,
		    .force_gid = (gid_t)-1,
		    .expected_diff_id = l->diff_id,
		};
		r = layer_apply(blob, dfd, &ao, NULL, err);
		if (r == -EINVAL && b->o->idmap && b->o->idmap->kind == IDMAP_SINGLE)
			kiln_error_wrap(err, r, "%s", userns_subid_hint());
		if (r < 0)
			kiln_error_wrap(err, r, "unpack layer %s", l->desc.digest);
	}
	if (r >= 0 && rename(tmp, final) < 0 && errno != EEXIST && errno != ENOTEMPTY)
		r = kiln_error_errno(err, errno, "rename snapshot '%s'", final);
	if (r < 0 || access(tmp, F_OK) == 0)
		rm_rf_at(AT_FDCWD, tmp, NULL);
	return r < 0 ? r : 0;
}

static void mounted_release(Mounted *m)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	if (m->mounted)
		overlay_umount(m->merged, NULL);
	m->mounted = false;
	if (m->dir)
		rm_rf_at(AT_FDCWD, m->dir, NULL);
	free(m->dir);
	free(m->merged);
	m->dir = m->merged = NULL;
}

static int mount_layers(Build *b, const LayerRef *layers, size_t n, Mounted *m, KilnError **err)
{
	_cleanup_strv_free_ char **lowers = NULL;
	_cleanup_free_ char *upper = NULL, *work = NULL;
	int r;

	*m = (Mounted){.fd = -1};
	m->dir = xasprintf("%s/%u", b->work, __atomic_add_fetch(&b->seq, 1, __ATOMIC_RELAXED));
	m->merged = xasprintf("%s/m", m->dir);
	upper = xasprintf("%s/u", m->dir);
	work = xasprintf("%s/w", m->dir);
	if (mkdir(m->dir, 0700) < 0 || mkdir(upper, 0755) < 0 || mkdir(work, 0700) < 0 ||
	    mkdir(m->merged, 0755) < 0) {
		r = kiln_error_errno(err, errno, "create work dirs in '%s'", m->dir);
		mounted_release(m);
		return r;
	}
	for (size_t i = n; i > 0; i--)
		strv_push(&lowers, digest_hex(layers[i - 1].diff_id));
	if (!lowers)
		lowers = xcalloc(1, sizeof(char *));
	r = overlay_mount(b->snapdir, lowers, upper, work, m->merged, err);
	if (r < 0) {
		mounted_release(m);
		return r;
	}
	m->mounted = true;
	m->fd = open(m->merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (m->fd < 0) {
		r = kiln_error_errno(err, errno, "open '%s'", m->merged);
		mounted_release(m);
		return r;
	}
	return 0;
}

static int mounted_unmount(Mounted *m, KilnError **err)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	if (m->mounted) {
		int r = overlay_umount(m->merged, err);
		if (r < 0)
			return r;
	}
	m->mounted = false;
	return 0;
}

static int blob_sink(void *ud, const void *buf, size_t len, KilnError **err)
{
	return blob_writer_write(ud, buf, len, err);
}

static const char *layer_media_type(Compression c)
{
	switch (c) {
	case COMPRESSION_ZSTD:
		return MT_OCI_LAYER_ZSTD;
	case COMPRESSION_NONE:
		return MT_OCI_LAYER;
	case COMPRESSION_GZIP:
		break;
	}
	return MT_OCI_LAYER_GZIP;
}

static void result_add_layer(StageResult *st, const LayerRef *l)
{
	st->layers = xrealloc(st->layers, (st->n_layers + 1) * sizeof(LayerRef));
	st->layers[st->n_layers] = *l;
	st->layers[st->n_layers].desc.annotations = NULL;
	st->n_layers++;
	image_conf_add_layer(st->conf, l->diff_id);
}

/* Turns a step's upper dir into a layer (none if it is empty), moves it to the snapshots. */
static int step_commit(StageRun *r, Mounted *m, const char *created_by, KilnError **err)
{
	Build *b = r->b;
	_cleanup_free_ char *upper = xasprintf("%s/u", m->dir);
	_cleanup_close_ int ufd = -1;
	BlobWriter *w = NULL;
	LayerDigests d = {0};
	_cleanup_free_ char *snap = NULL;
	int ret;

	ret = mounted_unmount(m, err);
	if (ret < 0)
		goto out;
	ufd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ufd < 0) {
		ret = kiln_error_errno(err, errno, "open '%s'", upper);
		goto out;
	}
	ret = store_blob_writer_new(b->store, &w, err);
	if (ret < 0)
		goto out;
	LayerWriteOptions wo = {
	    .source = LAYER_SOURCE_OVERLAY_UPPER,
	    .compression = b->compression,
	    .epoch = b->o->epoch,
	    .clamp_in_place = true,
	};
	ret = layer_write(ufd, &wo, blob_sink, w, &d, err);
	if (ret < 0)
		goto out;
	if (d.n_entries == 0) {
		image_conf_add_history(r->out->conf, created_by, true);
		goto out;
	}
	LayerRef l = {0};
	ret = blob_writer_commit(w, d.digest, l.desc.digest, &l.desc.size, err);
	if (ret < 0)
		goto out;
	snprintf(l.desc.media_type, sizeof(l.desc.media_type), "%s",
		 layer_media_type(b->compression));
	memcpy(l.diff_id, d.diff_id, DIGEST_STRING_MAX);
	snap = xasprintf("%s/%s", b->snapdir, digest_hex(d.diff_id));
	if (rename(upper, snap) < 0 && errno != EEXIST && errno != ENOTEMPTY) {
		ret = kiln_error_errno(err, errno, "move snapshot to '%s'", snap);
		goto out;
	}
	result_add_layer(r->out, &l);
	image_conf_add_history(r->out->conf, created_by, false);
	r->has_layer = true;
	r->layer = l;
out:
	blob_writer_free(w);
	mounted_release(m);
	return ret < 0 ? ret : 0;
}

/* ---------- base images ---------- */

static void result_reset(StageResult *st)
{
	image_conf_free(st->conf);
	st->conf = NULL;
	for (size_t i = 0; i < st->n_layers; i++)
		oci_descriptor_done(&st->layers[i].desc);
	free(st->layers);
	st->layers = NULL;
	st->n_layers = 0;
}

static const char *oci_layer_type(const char *mt)
{
	if (strcmp(mt, MT_DOCKER_LAYER_GZIP) == 0)
		return MT_OCI_LAYER_GZIP;
	if (strcmp(mt, "application/vnd.docker.image.rootfs.diff.tar") == 0)
		return MT_OCI_LAYER;
	return mt;
}

/* Makes st start from a resolved image: its config and layers (unpacked as snapshots). */
static int stage_from_image(Build *b, StageResult *st, OciImage *img, KilnError **err)
{
	/* The config's diff_ids are rebuilt from the layers so the two always agree. */
	json_t *copy = json_deep_copy(img->config);
	json_t *rf = json_object_get(copy, "rootfs");
	int r;

	if (json_is_object(rf))
		json_object_set_new(rf, "diff_ids", json_array());
	r = image_conf_new_from_json(copy, &st->platform, &st->conf, err);
	json_decref(copy);
	if (r < 0)
		return r;
	for (size_t i = 0; i < img->n_layers; i++) {
		LayerRef l = {0};
		memcpy(l.diff_id, img->diff_ids[i], DIGEST_STRING_MAX);
		l.desc = img->layers[i];
		l.desc.annotations = NULL;
		snprintf(l.desc.media_type, sizeof(l.desc.media_type), "%s",
			 oci_layer_type(img->layers[i].media_type));
		r = snapshot_ensure(b, &l, err);
		if (r < 0)
			return r;
		result_add_layer(st, &l);
	}
	return 0;
}

static int stage_build(Pass *p, Stage *st, StageResult **ret, KilnError **err);

static Stage *stage_find(Build *b, const char *name)
{
	char *end;
	unsigned long idx = strtoul(name, &end, 10);

	if (*name && !*end && idx < b->n_stages)
		return &b->stages[idx];
	for (size_t i = 0; i < b->n_stages; i++)
		if (b->stages[i].name && strcasecmp(b->stages[i].name, name) == 0)
			return &b->stages[i];
	return NULL;
}

static const char *build_context_source(Build *b, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; b->o->build_contexts && b->o->build_contexts[i]; i++) {
		const char *c = b->o->build_contexts[i];
		if (strncmp(c, name, n) == 0 && c[n] == '=')
			return c + n + 1;
	}
	return NULL;
}

static bool is_local_dir_context(const char *src)
{
	struct stat st;
	_cleanup_free_ char *layout = xasprintf("%s/oci-layout", src);

	if (strchr(src, ':') &&
	    (strncmp(src, "oci:", 4) == 0 || strncmp(src, "oci-archive:", 12) == 0 ||
	     strncmp(src, "docker-archive:", 15) == 0))
		return false;
	return stat(src, &st) == 0 && S_ISDIR(st.st_mode) && access(layout, F_OK) != 0;
}

/* Finds an image by name: a --build-context, then the local store. */
static int image_lookup(Build *b, const char *ref, const Platform *p, OciImage **ret,
			KilnError **err)
{
	const char *src = build_context_source(b, ref);
	OciDescriptor root = {0};
	int r;

	if (src) {
		ImportedImage *imgs = NULL;
		size_t n = 0;
		r = image_import(b->store, src, &imgs, &n, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "build context '%s'", ref);
		if (n == 0) {
			imported_images_free(imgs, n);
			return kiln_error(err, ENOENT, "build context '%s': '%s' holds no image",
					  ref, src);
		}
		root = imgs[0].root;
		root.annotations = NULL;
		imported_images_free(imgs, n);
	} else {
		_cleanup_free_ char *name = NULL;
		r = store_name_normalize(ref, &name, err);
		if (r < 0)
			return r;
		_cleanup_error_ KilnError *e = NULL;
		r = store_tag_get(b->store, name, &root, &e);
		if (r == -ENOENT)
			return kiln_error(err, ENOENT,
					  "image '%s' is not in the local store and kiln does not "
					  "pull yet: load it with 'kiln load FILE' or pass "
					  "--build-context %s=oci-archive:FILE",
					  ref, ref);
		if (r < 0) {
			*err = TAKE_PTR(e);
			return r;
		}
	}
	r = oci_image_resolve(b->store, &root, p, ret, err);
	oci_descriptor_done(&root);
	if (r < 0)
		return kiln_error_wrap(err, r, "image '%s'", ref);
	return 0;
}

/* ---------- step cache ---------- */

/* Looks up r->step_key. A usable hit is applied (layer and history) and returns 1; a miss sets
 * r->reason and returns 0. slot/sources (COPY, ADD) let a miss name the first changed source. */
static int step_cache_lookup(StageRun *r, const char *slot, json_t *sources, const char *created,
			     KilnError **err)
{
	Build *b = r->b;
	CacheEntry e;

	if (b->o->no_cache) {
		r->reason = xstrdup("no-cache");
		return 0;
	}
	if (build_cache_get(b->cache, r->step_key, &e) == 0 &&
	    (!e.has_layer || store_has_blob(b->store, e.digest))) {
		if (e.has_layer) {
			LayerRef l = {0};
			memcpy(l.diff_id, e.diff_id, DIGEST_STRING_MAX);
			memcpy(l.desc.digest, e.digest, DIGEST_STRING_MAX);
			snprintf(l.desc.media_type, sizeof(l.desc.media_type), "%s", e.media_type);
			l.desc.size = e.size;
			int k = snapshot_ensure(b, &l, err);
			if (k < 0)
				return k;
			result_add_layer(r->out, &l);
			r->has_layer = true;
			r->layer = l;
		}
		image_conf_add_history(r->out->conf, created, !e.has_layer);
		build_cache_touch(b->cache, r->step_key); /* prune evicts least recently used */
		r->cached = true;
		memcpy(r->chain, r->step_key, DIGEST_STRING_MAX);
		return 1;
	}
	if (!r->chain_hit) {
		r->reason = xstrdup("parent-changed");
	} else if (slot && sources) {
		json_t *old = build_cache_slot_get(b->cache, slot);
		const char *changed = old ? tree_manifest_first_change(old, sources) : NULL;
		r->reason = changed ? xasprintf("source-changed:%s", changed) : xstrdup("new-key");
		json_decref(old);
	} else {
		r->reason = xstrdup("new-key");
	}
	return 0;
}

/* After a step ran: remember what it produced under its key and advance the chain. */
static int step_cache_record(StageRun *r, const char *slot, json_t *sources, KilnError **err)
{
	CacheEntry e = {.has_layer = r->has_layer};
	int k;

	if (r->has_layer) {
		memcpy(e.digest, r->layer.desc.digest, DIGEST_STRING_MAX);
		memcpy(e.diff_id, r->layer.diff_id, DIGEST_STRING_MAX);
		snprintf(e.media_type, sizeof(e.media_type), "%s", r->layer.desc.media_type);
		e.size = r->layer.desc.size;
	}
	k = build_cache_put(r->b->cache, r->step_key, &e, err);
	if (k >= 0 && slot && sources)
		k = build_cache_slot_put(r->b->cache, slot, sources, err);
	memcpy(r->chain, r->step_key, DIGEST_STRING_MAX);
	r->chain_hit = false;
	return k;
}

/* Metadata instructions always run (they only edit the config); their key still joins the chain
 * so later steps see ENV/ARG/USER changes, and the report counts them. */
static int step_meta_cache(StageRun *r, const char *created, KilnError **err)
{
	CacheEntry e;
	const char *parts[] = {"META", created};

	cache_key(r->step_key, r->chain, parts, ELEMENTSOF(parts));
	if (!r->b->o->no_cache && build_cache_get(r->b->cache, r->step_key, &e) == 0) {
		build_cache_touch(r->b->cache, r->step_key);
		r->cached = true;
		memcpy(r->chain, r->step_key, DIGEST_STRING_MAX);
		return 0;
	}
	r->reason = xstrdup(r->b->o->no_cache ? "no-cache"
			    : r->chain_hit    ? "new-key"
					      : "parent-changed");
	return step_cache_record(r, NULL, NULL, err);
}

/* ---------- instructions ---------- */

static char *step_name(StageRun *r, const DfInstruction *in)
{
	char plat[96];
	const char *text = in->original ? in->original : in->keyword;

	platform_format(&r->out->platform, plat, sizeof(plat));
	if (strcmp(in->keyword, "RUN") == 0 &&
	    !platform_runs_natively(&r->b->build_platform, &r->out->platform))
		strncat(plat, " emulated", sizeof(plat) - strlen(plat) - 1);
	if (r->st->name)
		return xasprintf("[%s %s %u/%u] %s", plat, r->st->name, r->step_no, r->n_steps,
				 text);
	return xasprintf("[%s stage-%zu %u/%u] %s", plat, r->st->index, r->step_no, r->n_steps,
			 text);
}

static int expand1(StageRun *r, const DfInstruction *in, const char *word, char **ret,
		   KilnError **err)
{
	int k = expand_word(word, r->b->df->escape, lookup_stage, r, ret, err);

	return k < 0 ? inst_wrap(r->b, in, k, err) : 0;
}

/* The words of COPY/ADD/EXPOSE/VOLUME-like instructions, expanded. */
static int inst_words(StageRun *r, const DfInstruction *in, bool expand, char ***ret,
		      KilnError **err)
{
	_cleanup_strv_free_ char **out = NULL;
	int k;

	if (in->json) {
		for (size_t i = 0; in->args && in->args[i]; i++) {
			char *w = NULL;
			if (expand) {
				k = expand1(r, in, in->args[i], &w, err);
				if (k < 0)
					return k;
			} else {
				w = xstrdup(in->args[i]);
			}
			strv_consume(&out, w);
		}
	} else if (in->args && in->args[0]) {
		k = expand_words(in->args[0], r->b->df->escape, lookup_stage, r, &out, err);
		if (k < 0)
			return inst_wrap(r->b, in, k, err);
	}
	*ret = TAKE_PTR(out);
	return 0;
}

static int flag_expanded(StageRun *r, const DfInstruction *in, const char *name, char **ret,
			 KilnError **err)
{
	const char *v = df_instruction_flag(in, name);

	*ret = NULL;
	if (!v)
		return 0;
	return expand1(r, in, v, ret, err);
}

static int refuse_flags(Build *b, const DfInstruction *in, const char *const *names,
			KilnError **err)
{
	for (size_t i = 0; names[i]; i++)
		if (df_instruction_flag(in, names[i]))
			return inst_error(b, in, ENOTSUP, err,
					  "%s --%s is not supported by kiln yet", in->keyword,
					  names[i]);
	return 0;
}

static char *workdir_join(StageRun *r, const char *path)
{
	const char *wd = image_conf_get_string(r->out->conf, "WorkingDir");
	_cleanup_free_ char *joined = NULL, *clean = NULL;

	if (path[0] == '/')
		joined = xstrdup(path);
	else
		joined = xasprintf("%s/%s", wd && *wd ? wd : "/", path);
	/* Lexically cleaned; '..' above '/' stays at '/', as in path.Clean. */
	if (path_clean_relative(joined, &clean) < 0)
		clean = xstrdup(".");
	if (strcmp(clean, ".") == 0)
		return xstrdup("/");
	return xasprintf("/%s", clean);
}

static char **shell_argv(StageRun *r, const char *cmd)
{
	_cleanup_strv_free_ char **shell = image_conf_get_strv(r->out->conf, "Shell");
	char **argv = NULL;

	if (shell && shell[0]) {
		argv = TAKE_PTR(shell);
	} else {
		strv_push(&argv, "/bin/sh");
		strv_push(&argv, "-c");
	}
	strv_push(&argv, cmd);
	return argv;
}

static char *strv_join(char *const *v, const char *sep)
{
	size_t len = 1;

	for (size_t i = 0; v && v[i]; i++)
		len += strlen(v[i]) + strlen(sep);
	char *s = xcalloc(len, 1);
	for (size_t i = 0; v && v[i]; i++) {
		if (i)
			strcat(s, sep);
		strcat(s, v[i]);
	}
	return s;
}

static char *json_strv(char *const *v)
{
	json_t *a = json_array();

	for (size_t i = 0; v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s ? s : xstrdup("[]");
}

static bool heredoc_only(const char *text)
{
	while (*text == ' ' || *text == '\t')
		text++;
	if (strncmp(text, "<<", 2) != 0)
		return false;
	text += 2;
	if (*text == '-')
		text++;
	if (*text == '"' || *text == '\'')
		text++;
	while (*text && *text != ' ' && *text != '\t')
		text++;
	while (*text == ' ' || *text == '\t')
		text++;
	return *text == 0;
}

/* RUN's command: a heredoc that is the whole command is the script; otherwise the shell gets the
 * command line followed by the heredoc bodies, as it would read them from a script. */
static char *run_command_text(const DfInstruction *in)
{
	const char *text = in->args && in->args[0] ? in->args[0] : "";

	if (in->n_heredocs == 1 && heredoc_only(text))
		return xstrdup(in->heredocs[0].content);
	if (in->n_heredocs == 0)
		return xstrdup(text);
	char *s = xstrdup(text);
	for (size_t i = 0; i < in->n_heredocs; i++) {
		char *n = xasprintf("%s\n%s%s", s, in->heredocs[i].content, in->heredocs[i].name);
		free(s);
		s = n;
	}
	return s;
}

/* The sandbox binds /etc/hosts and /etc/resolv.conf; when the image lacks them it creates the
 * mount points and removes them afterwards, but overlayfs has copied /etc up by then. An upper dir
 * that is empty, not opaque and has the lower dir's mode and owner changed nothing: drop it so the
 * layer does not carry it. */
static void prune_copied_up_dir(Mounted *m, const char *name, const struct stat *before)
{
	_cleanup_free_ char *upper = xasprintf("%s/u", m->dir);
	_cleanup_close_ int ufd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	char v[8];

	if (ufd < 0 || fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return;
	if (st.st_mode != before->st_mode || st.st_uid != before->st_uid ||
	    st.st_gid != before->st_gid)
		return;
	_cleanup_free_ char *path = xasprintf("%s/%s", upper, name);
	if (lgetxattr(path, "user.overlay.opaque", v, sizeof(v)) > 0)
		return;
	unlinkat(ufd, name, AT_REMOVEDIR); /* fails, as it should, when not empty */
}

typedef struct RunOutput {
	Progress *p;
	unsigned step;
} RunOutput;

static void run_output(void *ud, int stream, const char *buf, size_t len)
{
	RunOutput *o = ud;

	(void)stream;
	progress_step_output(o->p, o->step, buf, len);
}

static char **run_env(StageRun *r)
{
	char **env = image_conf_env_strv(r->out->conf);
	bool has_path = image_conf_env_get(r->out->conf, "PATH") != NULL;

	for (size_t i = 0; i < r->args.n; i++) {
		const Var *v = &r->args.v[i];
		if (!v->value || image_conf_env_get(r->out->conf, v->key))
			continue;
		strv_consume(&env, xasprintf("%s=%s", v->key, v->value));
	}
	if (!has_path)
		strv_consume(&env, xasprintf("PATH=%s", DEFAULT_PATH));
	return env;
}

static int do_run(StageRun *r, const DfInstruction *in, unsigned step, KilnError **err)
{
	static const char *const refused[] = {"mount", "security", NULL};
	Build *b = r->b;
	_cleanup_strv_free_ char **argv = NULL, **env = NULL;
	_cleanup_free_ char *created = NULL;
	_cleanup_free_ gid_t *groups = NULL;
	Mounted m = {.fd = -1};
	size_t n_groups = 0;
	uid_t uid;
	gid_t gid;
	int status = 0, k;

	k = refuse_flags(b, in, refused, err);
	if (k < 0)
		return k;
	const char *net = df_instruction_flag(in, "network");
	bool net_none = b->o->network_none;
	if (net && strcmp(net, "none") == 0)
		net_none = true;
	else if (net && (strcmp(net, "host") == 0 || strcmp(net, "default") == 0))
		net_none = strcmp(net, "host") == 0 ? false : b->o->network_none;
	else if (net)
		return inst_error(b, in, EINVAL, err,
				  "RUN --network=%s: expected none, host or default", net);
	if (in->json) {
		argv = strv_copy(in->args);
		if (!argv || !argv[0])
			return inst_error(b, in, EINVAL, err, "RUN needs a command");
	} else {
		_cleanup_free_ char *cmd = run_command_text(in);
		argv = shell_argv(r, cmd);
	}
	_cleanup_free_ char *joined = strv_join(argv, " ");
	created = xasprintf("RUN %s", joined);
	{
		_cleanup_free_ char *argv0 = strv_join(argv, "\n");
		const char *parts[] = {"RUN", argv0, net_none ? "network=none" : "network=host"};
		cache_key(r->step_key, r->chain, parts, ELEMENTSOF(parts));
	}
	k = step_cache_lookup(r, NULL, NULL, created, err);
	if (k != 0)
		return k < 0 ? inst_wrap(b, in, k, err) : 0;
	k = mount_layers(b, r->out->layers, r->out->n_layers, &m, err);
	if (k < 0)
		return k;
	_cleanup_free_ char *wd = workdir_join(r, ".");
	k = rootfs_mkdir_p(m.fd, wd, 0755, 0, 0, NULL, err);
	if (k >= 0)
		k = image_user_resolve(m.fd, image_conf_get_string(r->out->conf, "User"), &uid,
				       &gid, &groups, &n_groups, err);
	if (k < 0) {
		mounted_release(&m);
		return inst_wrap(b, in, k, err);
	}
	if (!platform_runs_natively(&b->build_platform, &r->out->platform)) {
		EmulationKind ek = EMULATION_NATIVE;
		k = binfmt_ensure(&r->out->platform, b->o->qemu_dir, &ek, err);
		if (k < 0) {
			mounted_release(&m);
			return inst_wrap(b, in, k, err);
		}
		r->emulated = ek != EMULATION_NATIVE;
	}
	env = run_env(r);
	struct stat etc_before;
	bool had_etc = fstatat(m.fd, "etc", &etc_before, AT_SYMLINK_NOFOLLOW) == 0 &&
		       S_ISDIR(etc_before.st_mode);
	RunOutput out = {.p = b->progress, .step = step};
	ContainerSpec spec = {
	    .rootfs = m.merged,
	    .argv = argv,
	    .envp = env,
	    .cwd = wd,
	    .uid = uid,
	    .gid = gid,
	    .groups = groups,
	    .n_groups = n_groups,
	    .network_none = net_none,
	    .hostname = "kiln",
	    .hosts_path = net_none || access("/etc/hosts", R_OK) ? NULL : "/etc/hosts",
	    .resolv_path = net_none || access("/etc/resolv.conf", R_OK) ? NULL : "/etc/resolv.conf",
	    .output = run_output,
	    .output_userdata = &out,
	    .ret_cpu_seconds = &r->cpu_s,
	};
	k = container_run(&spec, &status, err);
	if (k < 0) {
		mounted_release(&m);
		return inst_wrap(b, in, k, err);
	}
	if (status != 0) {
		mounted_release(&m);
		return inst_error(b, in, EIO, err, "RUN %s: process exited with exit code %d",
				  in->json ? joined : argv[strv_length(argv) - 1], status);
	}
	k = mounted_unmount(&m, err);
	if (k < 0) {
		mounted_release(&m);
		return k;
	}
	if (had_etc)
		prune_copied_up_dir(&m, "etc", &etc_before);
	k = step_commit(r, &m, created, err);
	return k < 0 ? k : step_cache_record(r, NULL, NULL, err);
}

/* A source for COPY --from: a stage, a named build context (image or dir), or a store image. */
typedef struct CopySource {
	Mounted m;
	int fd;
	bool from_context;
	OciImage *img;
	StageResult tmp; /* layers of an image source */
} CopySource;

static void copy_source_done(CopySource *s)
{
	mounted_release(&s->m);
	if (s->from_context && s->fd >= 0)
		close(s->fd);
	oci_image_free(s->img);
	result_reset(&s->tmp);
}

static int copy_source_open(StageRun *r, const DfInstruction *in, const char *from, CopySource *s,
			    KilnError **err)
{
	Build *b = r->b;
	int k;

	*s = (CopySource){.fd = -1, .m = {.fd = -1}};
	if (!from) {
		s->fd = build_context_fd(b->ctx);
		s->from_context = false;
		return 0;
	}
	Stage *st = stage_find(b, from);
	if (st) {
		if (st == r->st)
			return inst_error(b, in, EINVAL, err,
					  "COPY --from='%s' refers to its own stage", from);
		StageResult *res = NULL;
		k = stage_build(r->p, st, &res, err);
		if (k < 0)
			return k;
		k = mount_layers(b, res->layers, res->n_layers, &s->m, err);
		s->fd = s->m.fd;
		return k;
	}
	const char *src = build_context_source(b, from);
	if (src && is_local_dir_context(src)) {
		s->fd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->fd < 0)
			return inst_error(b, in, errno, err, "build context '%s': open '%s': %s",
					  from, src, strerror(errno));
		s->from_context = true;
		return 0;
	}
	k = image_lookup(b, from, &r->out->platform, &s->img, err);
	if (k < 0) {
		if (k == -ENOENT && !src) {
			/* The store's "not found" is replaced by what COPY --from can name. */
			if (err) {
				kiln_error_free(*err);
				*err = NULL;
			}
			return inst_error(b, in, ENOENT, err,
					  "COPY --from='%s': no stage, build context or image of "
					  "that name",
					  from);
		}
		return inst_wrap(b, in, k, err);
	}
	s->tmp.platform = r->out->platform;
	k = stage_from_image(b, &s->tmp, s->img, err);
	if (k < 0)
		return k;
	k = mount_layers(b, s->tmp.layers, s->tmp.n_layers, &s->m, err);
	s->fd = s->m.fd;
	return k;
}

static bool is_url(const char *s)
{
	return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0 ||
	       strncmp(s, "git@", 4) == 0 || strstr(s, ".git#") != NULL;
}

static const DfHeredoc *heredoc_for(const DfInstruction *in, const char *word)
{
	if (strncmp(word, "<<", 2) != 0)
		return NULL;
	word += 2;
	if (*word == '-')
		word++;
	_cleanup_free_ char *name = xstrdup(word);
	size_t n = strlen(name);
	if (n >= 2 && (name[0] == '"' || name[0] == '\'') && name[n - 1] == name[0]) {
		memmove(name, name + 1, n - 2);
		name[n - 2] = 0;
	}
	for (size_t i = 0; i < in->n_heredocs; i++)
		if (strcmp(in->heredocs[i].name, name) == 0)
			return &in->heredocs[i];
	return NULL;
}

static int copy_heredoc(StageRun *r, const DfInstruction *in, const DfHeredoc *h, int root,
			const char *dest, const CopyOptions *co, KilnError **err)
{
	_cleanup_free_ char *content = NULL, *target = NULL, *name = NULL;
	_cleanup_close_ int pdir = -1, fd = -1;
	int k;

	if (h->expand) {
		k = expand1(r, in, h->content, &content, err);
		if (k < 0)
			return k;
	} else {
		content = xstrdup(h->content);
	}
	size_t dl = strlen(dest);
	target = dest[dl - 1] == '/' ? xasprintf("%s%s", dest, h->name) : xstrdup(dest);
	_cleanup_free_ char *parent = xstrdup(target);
	*strrchr(parent, '/') = 0;
	k = rootfs_mkdir_p(root, *parent ? parent : "/", 0755, co->set_owner ? co->uid : 0,
			   co->set_owner ? co->gid : 0, NULL, err);
	if (k >= 0)
		k = rootfs_open_parent(root, target, &pdir, &name, err);
	if (k < 0)
		return inst_wrap(r->b, in, k, err);
	unlinkat(pdir, name, 0);
	fd = openat(pdir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, content, strlen(content)) < 0 ||
	    fchown(fd, co->set_owner ? co->uid : 0, co->set_owner ? co->gid : 0) < 0 ||
	    (co->set_mode && fchmod(fd, co->mode) < 0))
		return inst_error(r->b, in, errno, err, "write '%s': %s", target, strerror(errno));
	return 0;
}

static int parse_chmod(const char *s, mode_t *ret)
{
	char *end;
	unsigned long v = strtoul(s, &end, 8);

	if (!*s || *end || v > 07777)
		return -EINVAL;
	*ret = (mode_t)v;
	return 0;
}

static int do_copy(StageRun *r, const DfInstruction *in, bool add, KilnError **err)
{
	static const char *const refused_copy[] = {"link", "parents", "exclude", NULL};
	static const char *const refused_add[] = {"link", "checksum", "keep-git-dir", "exclude",
						  NULL};
	Build *b = r->b;
	_cleanup_strv_free_ char **words = NULL, **srcs = NULL;
	_cleanup_free_ char *from = NULL, *chown_s = NULL, *chmod_s = NULL, *dest = NULL;
	_cleanup_free_ char *created = NULL, *joined = NULL;
	CopySource src = {.fd = -1, .m = {.fd = -1}};
	Mounted m = {.fd = -1};
	json_t *sources = NULL;
	_cleanup_free_ char *heredocs = NULL;
	char slot[DIGEST_STRING_MAX];
	int k;

	k = refuse_flags(b, in, add ? refused_add : refused_copy, err);
	if (k < 0)
		return k;
	if ((k = flag_expanded(r, in, "from", &from, err)) < 0 ||
	    (k = flag_expanded(r, in, "chown", &chown_s, err)) < 0 ||
	    (k = flag_expanded(r, in, "chmod", &chmod_s, err)) < 0)
		return k;
	if (add && from)
		return inst_error(b, in, EINVAL, err, "ADD does not take --from");
	k = inst_words(r, in, true, &words, err);
	if (k < 0)
		return k;
	size_t n = strv_length(words);
	if (n < 2)
		return inst_error(b, in, EINVAL, err,
				  "%s needs at least one source and a destination", in->keyword);
	CopyOptions co = {
	    .mtime = from ? -1 : b->o->epoch,
	    .extract_archives = add,
	    .what = in->keyword,
	};
	if (chmod_s && parse_chmod(chmod_s, &co.mode) < 0)
		return inst_error(b, in, EINVAL, err, "invalid --chmod '%s': expected octal mode",
				  chmod_s);
	co.set_mode = chmod_s != NULL;
	const char *d = words[n - 1];
	dest = workdir_join(r, d);
	size_t dl = strlen(d);
	if ((dl && d[dl - 1] == '/') || strcmp(d, ".") == 0 ||
	    (dl >= 2 && strcmp(d + dl - 2, "/.") == 0)) {
		char *t = strcmp(dest, "/") == 0 ? xstrdup("/") : xasprintf("%s/", dest);
		free(dest);
		dest = t;
	}
	joined = strv_join(words, " ");
	created = xasprintf("%s %s%s%s", in->keyword, from ? "--from=" : "", from ? from : "",
			    from ? " " : "");
	{
		char *t = xasprintf("%s%s", created, joined);
		free(created);
		created = t;
	}
	k = copy_source_open(r, in, from, &src, err);
	if (k < 0)
		goto out;
	co.from_context = src.from_context || !from;
	co.ignore = from ? NULL : build_context_ignore(b->ctx);
	co.set_owner = !from || chown_s;
	heredocs = xstrdup("");
	for (size_t i = 0; i + 1 < n; i++) {
		const DfHeredoc *h = heredoc_for(in, words[i]);
		if (h) {
			char *t =
			    xasprintf("%s%s\n%d\n%s\n", heredocs, h->name, h->expand, h->content);
			free(heredocs);
			heredocs = t;
			continue;
		}
		if (is_url(words[i])) {
			k = inst_error(b, in, ENOTSUP, err,
				       "%s from a URL or git repository is not supported by kiln "
				       "yet: '%s'",
				       in->keyword, words[i]);
			goto out;
		}
		strv_push(&srcs, words[i]);
	}
	if (srcs && strv_length(srcs) > 1 && dest[strlen(dest) - 1] != '/') {
		k = inst_error(b, in, EINVAL, err,
			       "%s with more than one source needs a destination ending in '/': "
			       "'%s'",
			       in->keyword, d);
		goto out;
	}
	/* The key: what the copy would write (content, path, mode, owner of every source),
	 * hashed without copying, so a warm build only reads the context. */
	sources = json_object();
	if (srcs) {
		json_decref(sources);
		sources = NULL;
		k = copy_manifest(src.fd, srcs, &co, &sources, err);
		if (k < 0) {
			k = inst_wrap(b, in, k, err);
			goto out;
		}
	}
	{
		_cleanup_free_ char *dump = json_dumps(sources, JSON_COMPACT | JSON_SORT_KEYS);
		const char *parts[] = {
		    in->keyword, created,	  chown_s ? chown_s : "", chmod_s ? chmod_s : "",
		    heredocs,	 dump ? dump : ""};
		cache_key(r->step_key, r->chain, parts, ELEMENTSOF(parts));
		cache_key(slot, r->chain, parts, 4);
	}
	k = step_cache_lookup(r, slot, sources, created, err);
	if (k != 0) {
		if (k < 0)
			k = inst_wrap(b, in, k, err);
		goto out;
	}
	k = mount_layers(b, r->out->layers, r->out->n_layers, &m, err);
	if (k < 0)
		goto out;
	if (chown_s) {
		k = image_chown_resolve(m.fd, chown_s, &co.uid, &co.gid, err);
		if (k < 0) {
			k = inst_wrap(b, in, k, err);
			goto out;
		}
	}
	for (size_t i = 0; i + 1 < n; i++) {
		const DfHeredoc *h = heredoc_for(in, words[i]);
		if (h && (k = copy_heredoc(r, in, h, m.fd, dest, &co, err)) < 0)
			goto out;
	}
	if (srcs) {
		k = copy_into(src.fd, srcs, m.fd, dest, &co, err);
		if (k < 0) {
			k = inst_wrap(b, in, k, err);
			goto out;
		}
	}
	copy_source_done(&src);
	k = step_commit(r, &m, created, err);
	if (k >= 0)
		k = step_cache_record(r, slot, sources, err);
	json_decref(sources);
	return k;
out:
	json_decref(sources);
	mounted_release(&m);
	copy_source_done(&src);
	return k < 0 ? k : 0;
}

static int do_workdir(StageRun *r, const DfInstruction *in, KilnError **err)
{
	_cleanup_free_ char *w = NULL, *path = NULL, *created = NULL;
	Mounted m = {.fd = -1};
	int k;

	k = expand1(r, in, in->args && in->args[0] ? in->args[0] : "", &w, err);
	if (k < 0)
		return k;
	if (!*w)
		return inst_error(r->b, in, EINVAL, err, "WORKDIR needs a path");
	path = workdir_join(r, w);
	image_conf_set_string(r->out->conf, "WorkingDir", path);
	created = xasprintf("WORKDIR %s", path);
	{
		const char *parts[] = {"WORKDIR", path};
		cache_key(r->step_key, r->chain, parts, ELEMENTSOF(parts));
	}
	k = step_cache_lookup(r, NULL, NULL, created, err);
	if (k != 0)
		return k < 0 ? inst_wrap(r->b, in, k, err) : 0;
	k = mount_layers(r->b, r->out->layers, r->out->n_layers, &m, err);
	if (k < 0)
		return k;
	k = rootfs_mkdir_p(m.fd, path, 0755, 0, 0, NULL, err);
	if (k < 0) {
		mounted_release(&m);
		return inst_wrap(r->b, in, k, err);
	}
	k = step_commit(r, &m, created, err);
	return k < 0 ? k : step_cache_record(r, NULL, NULL, err);
}

static int64_t parse_duration_ns(const char *s, bool *ok)
{
	int64_t total = 0;

	*ok = *s != 0;
	while (*s && *ok) {
		char *end;
		double v = strtod(s, &end);
		if (end == s) {
			*ok = false;
			break;
		}
		double mult;
		if (strncmp(end, "ns", 2) == 0)
			mult = 1, end += 2;
		else if (strncmp(end, "us", 2) == 0)
			mult = 1e3, end += 2;
		else if (strncmp(end, "ms", 2) == 0)
			mult = 1e6, end += 2;
		else if (*end == 's')
			mult = 1e9, end += 1;
		else if (*end == 'm')
			mult = 60e9, end += 1;
		else if (*end == 'h')
			mult = 3600e9, end += 1;
		else {
			*ok = false;
			break;
		}
		total += (int64_t)(v * mult);
		s = end;
	}
	return total;
}

static int do_healthcheck(StageRun *r, const DfInstruction *in, KilnError **err)
{
	static const char *const dur[] = {"interval", "timeout", "start-period", "start-interval"};
	static const char *const keys[] = {"Interval", "Timeout", "StartPeriod", "StartInterval"};
	json_t *hc = json_object(), *test = json_array();
	const char *kind = in->args && in->args[0] ? in->args[0] : "";

	/* The parser gives ["NONE"], or ["CMD", shell text] / ["CMD", argv...] for the JSON form.
	 */
	if (strcmp(kind, "NONE") == 0) {
		json_array_append_new(test, json_string("NONE"));
	} else if (strcmp(kind, "CMD") == 0 && in->args[1]) {
		json_array_append_new(test, json_string(in->json ? "CMD" : "CMD-SHELL"));
		for (size_t i = 1; in->args[i]; i++)
			json_array_append_new(test, json_string(in->args[i]));
	} else {
		json_decref(hc);
		json_decref(test);
		return inst_error(r->b, in, EINVAL, err,
				  "HEALTHCHECK needs 'CMD command' or 'NONE'");
	}
	json_object_set_new(hc, "Test", test);
	for (size_t i = 0; i < ELEMENTSOF(dur); i++) {
		const char *v = df_instruction_flag(in, dur[i]);
		bool ok;
		if (!v)
			continue;
		int64_t ns = parse_duration_ns(v, &ok);
		if (!ok || ns < 0) {
			json_decref(hc);
			return inst_error(r->b, in, EINVAL, err,
					  "HEALTHCHECK --%s: bad duration '%s'", dur[i], v);
		}
		json_object_set_new(hc, keys[i], json_integer(ns));
	}
	const char *retries = df_instruction_flag(in, "retries");
	if (retries) {
		char *end;
		long v = strtol(retries, &end, 10);
		if (!*retries || *end || v < 0) {
			json_decref(hc);
			return inst_error(r->b, in, EINVAL, err,
					  "HEALTHCHECK --retries: bad number '%s'", retries);
		}
		json_object_set_new(hc, "Retries", json_integer(v));
	}
	image_conf_set_json(r->out->conf, "Healthcheck", hc);
	return 0;
}

/* The history entry names each ARG with the value it took ("ARG V=1", or "ARG V" when unset),
 * as BuildKit does; it is also how the value enters the step cache chain. */
static int do_arg(StageRun *r, const DfInstruction *in, char **ret_created, KilnError **err)
{
	Build *b = r->b;
	char *created = xstrdup("ARG");

	for (size_t i = 0; i < in->n_kvs; i++) {
		const DfKeyValue *kv = &in->kvs[i];
		Var *given = vars_find(&b->build_args, kv->key);
		_cleanup_free_ char *value = NULL;
		if (given) {
			value = xstrdup(given->value);
			mark_consumed(b, kv->key);
		} else if (kv->raw_value) {
			int k = expand1(r, in, kv->raw_value, &value, err);
			if (k < 0) {
				free(created);
				return k;
			}
		} else {
			Var *g = vars_find(&r->p->global_args, kv->key);
			if (g && g->value)
				value = xstrdup(g->value);
		}
		vars_set(&r->args, kv->key, value);
		char *t = value ? xasprintf("%s %s=%s", created, kv->key, value)
				: xasprintf("%s %s", created, kv->key);
		free(created);
		created = t;
	}
	*ret_created = created;
	return 0;
}

static int do_env_label(StageRun *r, const DfInstruction *in, bool env, char **ret_created,
			KilnError **err)
{
	size_t n = in->n_kvs;
	_cleanup_strv_free_ char **keys = NULL, **vals = NULL;

	for (size_t i = 0; i < n; i++) {
		char *k = NULL, *v = NULL;
		int ret = expand1(r, in, in->kvs[i].key, &k, err);
		if (ret >= 0)
			ret = expand1(r, in, in->kvs[i].raw_value ? in->kvs[i].raw_value : "", &v,
				      err);
		if (ret < 0) {
			free(k);
			return ret;
		}
		if (!*k) {
			free(k);
			free(v);
			return inst_error(r->b, in, EINVAL, err, "%s with an empty name",
					  in->keyword);
		}
		strv_consume(&keys, k);
		strv_consume(&vals, v);
	}
	char *created = xstrdup(in->keyword);
	for (size_t i = 0; i < n; i++) {
		if (env)
			image_conf_env_set(r->out->conf, keys[i], vals[i]);
		else
			image_conf_map_add(r->out->conf, "Labels", keys[i], vals[i]);
		char *t = xasprintf("%s %s=%s", created, keys[i], vals[i]);
		free(created);
		created = t;
	}
	*ret_created = created;
	return 0;
}

static int do_expose(StageRun *r, const DfInstruction *in, KilnError **err)
{
	_cleanup_strv_free_ char **words = NULL;
	int k = inst_words(r, in, true, &words, err);

	if (k < 0)
		return k;
	for (size_t i = 0; words && words[i]; i++) {
		_cleanup_free_ char *p =
		    strchr(words[i], '/') ? xstrdup(words[i]) : xasprintf("%s/tcp", words[i]);
		for (char *c = strchr(p, '/'); c && *c; c++)
			*c = (char)tolower((unsigned char)*c);
		char *end;
		long port = strtol(p, &end, 10);
		if (end == p || *end != '/' || port < 0 || port > 65535 ||
		    (strcmp(end, "/tcp") && strcmp(end, "/udp") && strcmp(end, "/sctp")))
			return inst_error(r->b, in, EINVAL, err, "EXPOSE: invalid port '%s'",
					  words[i]);
		image_conf_map_add(r->out->conf, "ExposedPorts", p, NULL);
	}
	return 0;
}

static int do_cmd_entrypoint(StageRun *r, const DfInstruction *in, bool entrypoint)
{
	_cleanup_strv_free_ char **v = NULL;

	if (in->json)
		v = strv_copy(in->args);
	else
		v = shell_argv(r, in->args && in->args[0] ? in->args[0] : "");
	if (entrypoint) {
		image_conf_set_strv(r->out->conf, "Entrypoint", v);
		/* A base image's CMD does not survive a new ENTRYPOINT (Dockerfile reference). */
		if (!r->cmd_set)
			image_conf_set_strv(r->out->conf, "Cmd", NULL);
	} else {
		image_conf_set_strv(r->out->conf, "Cmd", v);
		r->cmd_set = true;
	}
	return 0;
}

static int run_instruction(StageRun *r, const DfInstruction *in, KilnError **err);

/* Metadata-only instructions; returns 1 if `in` is not one of them. */
static int do_meta(StageRun *r, const DfInstruction *in, char **ret_created, KilnError **err)
{
	const char *kw = in->keyword;
	const char *text = in->args && in->args[0] ? in->args[0] : "";
	_cleanup_free_ char *v = NULL;
	int k;

	if (strcmp(kw, "ENV") == 0 || strcmp(kw, "LABEL") == 0) {
		k = do_env_label(r, in, kw[0] == 'E', ret_created, err);
		return k < 0 ? k : 0;
	} else if (strcmp(kw, "ARG") == 0) {
		k = do_arg(r, in, ret_created, err);
		return k < 0 ? k : 0;
	} else if (strcmp(kw, "CMD") == 0 || strcmp(kw, "ENTRYPOINT") == 0) {
		k = do_cmd_entrypoint(r, in, kw[0] == 'E');
	} else if (strcmp(kw, "USER") == 0 || strcmp(kw, "STOPSIGNAL") == 0) {
		k = expand1(r, in, text, &v, err);
		if (k >= 0 && !*v)
			k = inst_error(r->b, in, EINVAL, err, "%s needs a value", kw);
		if (k >= 0)
			image_conf_set_string(r->out->conf, kw[0] == 'U' ? "User" : "StopSignal",
					      v);
	} else if (strcmp(kw, "EXPOSE") == 0) {
		k = do_expose(r, in, err);
	} else if (strcmp(kw, "VOLUME") == 0) {
		_cleanup_strv_free_ char **w = NULL;
		k = inst_words(r, in, true, &w, err);
		for (size_t i = 0; k >= 0 && w && w[i]; i++)
			image_conf_map_add(r->out->conf, "Volumes", w[i], NULL);
	} else if (strcmp(kw, "SHELL") == 0) {
		if (!in->json || !in->args || !in->args[0])
			return inst_error(
			    r->b, in, EINVAL, err,
			    "SHELL needs the JSON form: SHELL [\"executable\", \"parameters\"]");
		image_conf_set_strv(r->out->conf, "Shell", in->args);
		k = 0;
	} else if (strcmp(kw, "HEALTHCHECK") == 0) {
		k = do_healthcheck(r, in, err);
	} else if (strcmp(kw, "MAINTAINER") == 0) {
		image_conf_set_author(r->out->conf, text);
		k = 0;
	} else if (strcmp(kw, "ONBUILD") == 0) {
		_cleanup_strv_free_ char **list = image_conf_get_strv(r->out->conf, "OnBuild");
		const char *t = in->onbuild && in->onbuild->original ? in->onbuild->original : text;
		strv_push(&list, t);
		image_conf_set_strv(r->out->conf, "OnBuild", list);
		k = 0;
	} else {
		return 1;
	}
	if (k < 0)
		return k;
	if (in->json) {
		_cleanup_free_ char *j = json_strv(in->args);
		*ret_created = xasprintf("%s %s", kw, j);
	} else if (v) {
		*ret_created = xasprintf("%s %s", kw, v);
	} else {
		*ret_created = xasprintf("%s %s", kw,
					 in->original ? in->original + strlen(kw) +
							    (in->original[strlen(kw)] == ' ')
						      : text);
	}
	return 0;
}

static int run_instruction(StageRun *r, const DfInstruction *in, KilnError **err)
{
	Build *b = r->b;
	_cleanup_free_ char *name = NULL, *created = NULL;
	unsigned step;
	int k;

	r->step_no++;
	r->cached = false;
	free(r->reason);
	r->reason = NULL;
	r->emulated = false;
	r->cpu_s = 0;
	r->has_layer = false;
	name = step_name(r, in);
	step = progress_step_begin(b->progress, name);
	double t0 = now_seconds();
	if (strcmp(in->keyword, "RUN") == 0) {
		k = do_run(r, in, step, err);
	} else if (strcmp(in->keyword, "COPY") == 0 || strcmp(in->keyword, "ADD") == 0) {
		k = do_copy(r, in, in->keyword[0] == 'A', err);
	} else if (strcmp(in->keyword, "WORKDIR") == 0) {
		k = do_workdir(r, in, err);
	} else {
		k = do_meta(r, in, &created, err);
		if (k == 1)
			k = inst_error(b, in, EINVAL, err, "unexpected instruction '%s'",
				       in->keyword);
		else if (k >= 0) {
			image_conf_add_history(r->out->conf, created, true);
			k = step_meta_cache(r, created, err);
		}
	}
	progress_step_end(b->progress, step, k >= 0, r->cached,
			  k < 0 && err && *err ? (*err)->message : NULL);
	if (k >= 0)
		report_step(r, in, now_seconds() - t0, strcmp(in->keyword, "RUN") == 0);
	return k;
}

/* ONBUILD triggers of the base image run right after FROM, then are cleared. */
static int run_onbuild(StageRun *r, const char *image, KilnError **err)
{
	_cleanup_strv_free_ char **triggers = image_conf_get_strv(r->out->conf, "OnBuild");
	int k;

	image_conf_set_strv(r->out->conf, "OnBuild", NULL);
	for (size_t i = 0; triggers && triggers[i]; i++) {
		Dockerfile *df = NULL;
		_cleanup_free_ char *fname = xasprintf("ONBUILD of '%s'", image);
		/* The parser wants a FROM first; the trigger is parsed as the line after one. */
		_cleanup_free_ char *text = xasprintf("FROM scratch\n%s\n", triggers[i]);
		k = dockerfile_parse(fname, text, strlen(text), &df, err);
		if (k < 0)
			return k;
		for (size_t j = 1; j < df->n_insts && k >= 0; j++) {
			r->n_steps++;
			k = run_instruction(r, &df->insts[j], err);
		}
		dockerfile_free(df);
		if (k < 0)
			return k;
	}
	return 0;
}

/* Expands FROM's image and --platform with the pass's global args. */
static int from_resolve(Pass *p, Stage *st, char **ret_image, Platform *ret_platform,
			KilnError **err)
{
	Build *b = p->b;
	const DfInstruction *in = st->from;
	_cleanup_strv_free_ char **words = NULL;
	_cleanup_free_ char *plat = NULL;
	int k;

	k = expand_words(in->args && in->args[0] ? in->args[0] : "", b->df->escape, lookup_global,
			 p, &words, err);
	if (k < 0)
		return inst_wrap(b, in, k, err);
	if (!words || !words[0] || !*words[0])
		return inst_error(b, in, EINVAL, err, "FROM needs an image");
	*ret_platform = p->platform;
	const char *pf = df_instruction_flag(in, "platform");
	if (pf) {
		k = expand_word(pf, b->df->escape, lookup_global, p, &plat, err);
		if (k >= 0)
			k = platform_parse(plat, ret_platform, err);
		if (k < 0)
			return inst_wrap(b, in, k, err);
	}
	*ret_image = xstrdup(words[0]);
	return 0;
}

/* The first key of a stage's chain: its base (an image's manifest digest, a stage's last key, or
 * scratch), the platform, the layer compression (cached blobs are compressed ones) and the source
 * date epoch (it is in every mtime a step writes). */
static void chain_start(StageRun *r, const char *base)
{
	char pl[PLATFORM_STRING_MAX], epoch[32];
	const char *parts[] = {"FROM", pl, base, compression_to_string(r->b->compression), epoch};

	platform_format(&r->out->platform, pl, sizeof(pl));
	snprintf(epoch, sizeof(epoch), "%lld", (long long)r->b->o->epoch);
	cache_key(r->chain, NULL, parts, ELEMENTSOF(parts));
	r->chain_hit = true;
}

static int stage_from(StageRun *r, const char *image, KilnError **err)
{
	Build *b = r->b;
	StageResult *out = r->out;
	const DfInstruction *in = r->st->from;
	int k;

	if (strcasecmp(image, "scratch") == 0) {
		out->conf = image_conf_new_empty(&out->platform);
		image_conf_env_set(out->conf, "PATH", DEFAULT_PATH);
		chain_start(r, "scratch");
		return 0;
	}
	Stage *base = stage_find(b, image);
	if (base && base != r->st && base->index < r->st->index) {
		StageResult *br = NULL;
		k = stage_build(r->p, base, &br, err);
		if (k < 0)
			return k;
		out->conf = image_conf_copy(br->conf);
		for (size_t i = 0; i < br->n_layers; i++) {
			out->layers = xrealloc(out->layers, (out->n_layers + 1) * sizeof(LayerRef));
			out->layers[out->n_layers] = br->layers[i];
			out->layers[out->n_layers++].desc.annotations = NULL;
		}
		chain_start(r, br->chain);
		return 0;
	}
	OciImage *img = NULL;
	k = image_lookup(b, image, &out->platform, &img, err);
	if (k < 0)
		return inst_wrap(b, in, k, err);
	k = stage_from_image(b, out, img, err);
	if (k >= 0)
		chain_start(r, img->manifest_digest);
	oci_image_free(img);
	if (k < 0)
		return inst_wrap(b, in, k, err);
	if (!image_conf_env_get(out->conf, "PATH"))
		image_conf_env_set(out->conf, "PATH", DEFAULT_PATH);
	return run_onbuild(r, image, err);
}

/* Names a stage references ($NAME, ${NAME...}) or declares with ARG. */
static void collect_names(const char *text, char ***names)
{
	for (const char *c = text; c && *c; c++) {
		if (*c != '$')
			continue;
		const char *n = c + 1;
		if (*n == '{')
			n++;
		size_t len = 0;
		while (n[len] == '_' || isalnum((unsigned char)n[len]))
			len++;
		if (len) {
			_cleanup_free_ char *name = strndup(n, len);
			strv_push(names, name);
		}
	}
}

static void collect_inst_names(const DfInstruction *in, char ***names)
{
	for (size_t i = 0; in->args && in->args[i]; i++)
		collect_names(in->args[i], names);
	for (size_t i = 0; in->flags && in->flags[i]; i++)
		collect_names(in->flags[i], names);
	for (size_t i = 0; i < in->n_kvs; i++) {
		collect_names(in->kvs[i].key, names);
		collect_names(in->kvs[i].raw_value, names);
		if (strcmp(in->keyword, "ARG") == 0)
			strv_push(names, in->kvs[i].key);
	}
	for (size_t i = 0; i < in->n_heredocs; i++)
		collect_names(in->heredocs[i].content, names);
	if (in->onbuild)
		collect_inst_names(in->onbuild, names);
}

/* Stages this one names in FROM or COPY --from, resolved with the global args; sets
 * *ret_dynamic when a reference cannot be resolved that way. */
static Stage **stage_deps(Pass *p, Stage *st, const char *image, bool *ret_dynamic)
{
	Build *b = p->b;
	Stage **deps = xcalloc(b->n_stages + 1, sizeof(Stage *));
	size_t n = 0;

	*ret_dynamic = false;
	Stage *base = stage_find(b, image);
	if (base && base->index < st->index)
		deps[n++] = base;
	for (size_t i = st->first; i < st->end; i++) {
		const DfInstruction *in = &b->df->insts[i];
		const char *from =
		    strcmp(in->keyword, "COPY") == 0 ? df_instruction_flag(in, "from") : NULL;
		_cleanup_free_ char *name = NULL;
		if (!from)
			continue;
		if (expand_word(from, b->df->escape, lookup_global, p, &name, NULL) < 0 ||
		    strchr(from, '$')) {
			*ret_dynamic = true;
			continue;
		}
		Stage *d = stage_find(b, name);
		bool dup = false;
		for (size_t j = 0; j < n; j++)
			dup |= deps[j] == d;
		if (d && d != st && !dup)
			deps[n++] = d;
	}
	return deps;
}

/* The identity of a stage's result within this build: equal keys give equal results, so passes
 * share them. */
static void stage_key(Pass *p, Stage *st, const char *image, const Platform *plat, Stage **deps,
		      bool dynamic, char out[DIGEST_STRING_MAX])
{
	Build *b = p->b;
	_cleanup_(sha256_freep) Sha256 *h = NULL;
	_cleanup_strv_free_ char **names = NULL;
	char pl[PLATFORM_STRING_MAX];

	if (sha256_new(&h, NULL) < 0)
		abort();
	platform_format(plat, pl, sizeof(pl));
	_cleanup_free_ char *head = xasprintf("stage %zu\n%s\n%s\n", st->index, image, pl);
	sha256_update(h, head, strlen(head));
	if (dynamic) {
		platform_format(&p->platform, pl, sizeof(pl));
		sha256_update(h, pl, strlen(pl) + 1);
	}
	for (size_t i = st->first; i < st->end; i++)
		collect_inst_names(&b->df->insts[i], &names);
	size_t n = strv_length(names);
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && strcmp(names[i], names[i - 1]) == 0)
			continue;
		Var *g = vars_find(&p->global_args, names[i]);
		Var *a = vars_find(&b->build_args, names[i]);
		_cleanup_free_ char *line =
		    xasprintf("%s=%c%s|%c%s\n", names[i], g && g->value ? '+' : '-',
			      g && g->value ? g->value : "", a ? '+' : '-', a ? a->value : "");
		sha256_update(h, line, strlen(line));
	}
	for (size_t i = 0; deps[i]; i++) {
		StageResult *d = p->res[deps[i]->index];
		if (d)
			sha256_update(h, d->key, strlen(d->key) + 1);
	}
	sha256_final(h, out);
}

/* Builds the stages st depends on first: their keys are part of st's key. */
static int stage_build_deps(Pass *p, Stage **deps, KilnError **err)
{
	for (size_t i = 0; deps[i]; i++) {
		StageResult *ignored = NULL;
		int k = stage_build(p, deps[i], &ignored, err);
		if (k < 0)
			return k;
	}
	return 0;
}

/* Finds or claims the result for key. Returns it with state BUILT (reuse), or BUILDING when this
 * caller must build it. */
static StageResult *result_claim(Build *b, const char *key, const Platform *plat)
{
	StageResult *r;

	pthread_mutex_lock(&b->lock);
	for (;;) {
		for (r = b->results; r; r = r->next)
			if (strcmp(r->key, key) == 0)
				break;
		if (!r || r->state != STAGE_BUILDING)
			break;
		pthread_cond_wait(&b->cond, &b->lock);
	}
	if (!r) {
		r = xcalloc(1, sizeof(*r));
		memcpy(r->key, key, DIGEST_STRING_MAX);
		r->platform = *plat;
		r->state = STAGE_NEW;
		r->next = b->results;
		b->results = r;
	}
	if (r->state == STAGE_NEW)
		r->state = STAGE_BUILDING;
	else if (r->state == STAGE_BUILDING)
		r = NULL; /* not reached: waited above */
	pthread_mutex_unlock(&b->lock);
	return r;
}

static void result_settle(Build *b, StageResult *r, bool ok)
{
	pthread_mutex_lock(&b->lock);
	r->state = ok ? STAGE_BUILT : STAGE_FAILED;
	if (!ok)
		b->failed = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static char *stage_label(const Stage *st)
{
	return st->name ? xstrdup(st->name) : xasprintf("stage-%zu", st->index);
}

static void report_step(StageRun *r, const DfInstruction *in, double wall, bool run)
{
	Build *b = r->b;
	ReportStep s = {
	    .stage = stage_label(r->st),
	    .line = in->line,
	    .instruction = xstrdup(in->original ? in->original : in->keyword),
	    .emulated = r->emulated,
	    .wall_s = wall,
	    .cpu_s = r->cpu_s,
	    .has_layer = r->has_layer,
	    .layer = r->layer,
	    .run = run && !r->cached,
	    .cached = r->cached,
	    .reason = r->cached ? NULL : xstrdup(r->reason ? r->reason : "new-key"),
	    .stage_index = r->st->index,
	};
	memcpy(s.key, r->step_key, DIGEST_STRING_MAX);
	platform_format(&r->out->platform, s.platform, sizeof(s.platform));
	pthread_mutex_lock(&b->lock);
	b->steps = xrealloc(b->steps, (b->n_steps + 1) * sizeof(ReportStep));
	b->steps[b->n_steps++] = s;
	pthread_mutex_unlock(&b->lock);
}

static int stage_run(StageRun *r, const char *image, KilnError **err)
{
	Build *b = r->b;
	Stage *st = r->st;
	char plat[PLATFORM_STRING_MAX];
	_cleanup_free_ char *label = stage_label(st), *name = NULL;
	int k;

	r->n_steps = (unsigned)(st->end - st->first) + 1;
	r->step_no = 1;
	platform_format(&r->out->platform, plat, sizeof(plat));
	name = xasprintf("[%s %s 1/%u] %s", plat, label, r->n_steps, st->from->original);
	unsigned step = progress_step_begin(b->progress, name);
	k = stage_from(r, image, err);
	progress_step_end(b->progress, step, k >= 0, false,
			  k < 0 && err && *err ? (*err)->message : NULL);
	for (size_t i = st->first; k >= 0 && i < st->end; i++) {
		if (__atomic_load_n(&b->failed, __ATOMIC_RELAXED))
			return kiln_error(err, ECANCELED, "cancelled: another platform failed");
		k = run_instruction(r, &b->df->insts[i], err);
	}
	memcpy(r->out->chain, r->chain, DIGEST_STRING_MAX);
	return k;
}

static int stage_build(Pass *p, Stage *st, StageResult **ret, KilnError **err)
{
	Build *b = p->b;
	_cleanup_free_ char *image = NULL;
	_cleanup_free_ Stage **deps = NULL;
	char key[DIGEST_STRING_MAX];
	Platform plat;
	bool dynamic;
	int k;

	if (p->res[st->index]) {
		*ret = p->res[st->index];
		return 0;
	}
	if (p->visiting[st->index])
		return inst_error(b, st->from, ELOOP, err, "stage '%s' depends on itself",
				  st->name ? st->name : "?");
	p->visiting[st->index] = true;
	k = from_resolve(p, st, &image, &plat, err);
	if (k >= 0) {
		deps = stage_deps(p, st, image, &dynamic);
		k = stage_build_deps(p, deps, err);
	}
	if (k < 0) {
		p->visiting[st->index] = false;
		return k;
	}
	stage_key(p, st, image, &plat, deps, dynamic, key);
	StageResult *res = result_claim(b, key, &plat);
	if (res->state == STAGE_BUILDING) {
		StageRun r = {.b = b, .p = p, .st = st, .out = res};
		k = stage_run(&r, image, err);
		vars_done(&r.args);
		free(r.reason);
		result_settle(b, res, k >= 0);
	} else if (res->state == STAGE_FAILED) {
		k = inst_error(b, st->from, ECANCELED, err, "stage '%s' failed",
			       st->name ? st->name : "?");
	}
	p->visiting[st->index] = false;
	if (k < 0)
		return k;
	p->res[st->index] = res;
	*ret = res;
	return 0;
}

/* Global ARGs (before the first FROM), evaluated per target platform since their defaults may
 * use the automatic platform args. */
static int global_args_eval(Pass *p, KilnError **err)
{
	Build *b = p->b;
	Dockerfile *df = b->df;

	vars_done(&p->global_args);
	set_platform_args(p, &p->global_args);
	for (size_t i = 0; i < df->n_insts && strcmp(df->insts[i].keyword, "FROM") != 0; i++) {
		const DfInstruction *in = &df->insts[i];
		if (strcmp(in->keyword, "ARG") != 0)
			return inst_error(b, in, EINVAL, err, "%s before the first FROM",
					  in->keyword);
		for (size_t j = 0; j < in->n_kvs; j++) {
			const DfKeyValue *kv = &in->kvs[j];
			Var *given = vars_find(&b->build_args, kv->key);
			_cleanup_free_ char *v = NULL;
			if (given) {
				v = xstrdup(given->value);
				mark_consumed(b, kv->key);
			} else if (kv->raw_value) {
				int k = expand_word(kv->raw_value, df->escape, lookup_global, p, &v,
						    err);
				if (k < 0)
					return inst_wrap(b, in, k, err);
			}
			vars_set(&p->global_args, kv->key, v);
		}
	}
	return 0;
}

static int stages_split(Build *b, KilnError **err)
{
	Dockerfile *df = b->df;
	size_t i = 0;

	while (i < df->n_insts && strcmp(df->insts[i].keyword, "FROM") != 0)
		i++;
	if (i == df->n_insts)
		return kiln_error(err, EINVAL, "%s: no FROM instruction", df->filename);
	for (; i < df->n_insts; i++) {
		const DfInstruction *in = &df->insts[i];
		if (strcmp(in->keyword, "FROM") != 0) {
			b->stages[b->n_stages - 1].end = i + 1;
			continue;
		}
		b->stages = xrealloc(b->stages, (b->n_stages + 1) * sizeof(Stage));
		Stage *st = &b->stages[b->n_stages];
		*st = (Stage){.index = b->n_stages, .from = in, .first = i + 1, .end = i + 1};
		/* "FROM image AS name": the name is the third word. */
		const char *text = in->args && in->args[0] ? in->args[0] : "";
		_cleanup_strv_free_ char **w = NULL;
		_cleanup_free_ char *copy = xstrdup(text);
		char *save = NULL;
		for (char *t = strtok_r(copy, " \t\n", &save); t;
		     t = strtok_r(NULL, " \t\n", &save))
			strv_push(&w, t);
		if (strv_length(w) == 3 && strcasecmp(w[1], "as") == 0) {
			st->name = xstrdup(w[2]);
			for (char *c = st->name; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			for (size_t s = 0; s < b->n_stages; s++)
				if (b->stages[s].name && strcmp(b->stages[s].name, st->name) == 0)
					return inst_error(b, in, EINVAL, err,
							  "duplicate stage name '%s'", st->name);
		} else if (strv_length(w) != 1) {
			return inst_error(b, in, EINVAL, err,
					  "FROM takes 'image [AS name]', got '%s'", text);
		}
		b->n_stages++;
	}
	return 0;
}

static json_t *descriptor_json(const char *mt, const char *digest, int64_t size)
{
	json_t *o = json_object();

	json_object_set_new(o, "mediaType", json_string(mt));
	json_object_set_new(o, "digest", json_string(digest));
	json_object_set_new(o, "size", json_integer(size));
	return o;
}

static int put_json(Build *b, json_t *j, char ret_digest[DIGEST_STRING_MAX], int64_t *ret_size,
		    KilnError **err)
{
	char *s = json_dumps(j, JSON_COMPACT);
	int k;

	if (!s)
		return kiln_error(err, ENOMEM, "out of memory");
	k = store_put_blob(b->store, s, strlen(s), NULL, ret_digest, err);
	*ret_size = (int64_t)strlen(s);
	free(s);
	return k;
}

/* Config and manifest of the target stage; returns the manifest descriptor. */
static int stage_write_manifest(Build *b, StageResult *st, OciDescriptor *ret, KilnError **err)
{
	_cleanup_free_ char *cfg = image_conf_serialize(st->conf, b->o->epoch);
	char cfg_digest[DIGEST_STRING_MAX];
	int k;

	k = store_put_blob(b->store, cfg, strlen(cfg), NULL, cfg_digest, err);
	if (k < 0)
		return k;
	json_t *m = json_object(), *layers = json_array();
	json_object_set_new(m, "schemaVersion", json_integer(2));
	json_object_set_new(m, "mediaType", json_string(MT_OCI_MANIFEST));
	json_object_set_new(m, "config",
			    descriptor_json(MT_OCI_CONFIG, cfg_digest, (int64_t)strlen(cfg)));
	for (size_t i = 0; i < st->n_layers; i++)
		json_array_append_new(layers, descriptor_json(st->layers[i].desc.media_type,
							      st->layers[i].desc.digest,
							      st->layers[i].desc.size));
	json_object_set_new(m, "layers", layers);
	*ret = (OciDescriptor){.size = 0, .has_platform = true, .platform = st->platform};
	snprintf(ret->media_type, sizeof(ret->media_type), "%s", MT_OCI_MANIFEST);
	k = put_json(b, m, ret->digest, &ret->size, err);
	json_decref(m);
	return k;
}

int build_export_local(Store *s, const char *manifest_digest, const char *dest, KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	_cleanup_close_ int dfd = -1;
	json_t *m;
	size_t i;
	json_t *l;
	int k;

	k = store_read_blob(s, manifest_digest, 4 << 20, &data, NULL, err);
	if (k < 0)
		return k;
	m = json_loads(data, 0, NULL);
	if (!m)
		return kiln_error(err, EINVAL, "manifest %s is not JSON", manifest_digest);
	k = mkdir_p(dest, 0755, err);
	if (k >= 0) {
		dfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			k = kiln_error_errno(err, errno, "open '%s'", dest);
	}
	json_array_foreach (json_object_get(m, "layers"), i, l) {
		if (k < 0)
			break;
		const char *digest = json_string_value(json_object_get(l, "digest"));
		_cleanup_close_ int fd = -1;
		k = store_open_blob(s, digest ? digest : "", &fd, err);
		if (k < 0)
			break;
		LayerApplyOptions ao = {
		    .mode = LAYER_APPLY_MERGE,
		    .whiteouts = true,
		    .keep_owner = false,
		    .force_uid = (uid_t)-1,
		    .force_gid = (gid_t)-1,
		};
		k = layer_apply(fd, dfd, &ao, NULL, err);
		if (k < 0)
			kiln_error_wrap(err, k, "apply layer %s to '%s'", digest, dest);
	}
	json_decref(m);
	return k < 0 ? k : 0;
}

static int write_outputs(Build *b, const OciDescriptor *root, const OciDescriptor *manifests,
			 KilnError **err)
{
	const BuildOptions *o = b->o;
	const char *name = o->tags && o->tags[0] ? o->tags[0] : NULL;
	int k = 0;

	for (size_t i = 0; i < o->n_outputs && k >= 0; i++) {
		const OutputSpec *out = &o->outputs[i];
		switch (out->type) {
		case OUTPUT_OCI:
			k = out->tar ? export_oci_archive(b->store, root, name, out->dest, err)
				     : export_oci_dir(b->store, root, name, out->dest, err);
			break;
		case OUTPUT_DOCKER: {
			if (o->n_platforms != 1) {
				k = kiln_error(err, EINVAL,
					       "type=docker holds one platform; %zu were built",
					       o->n_platforms);
				break;
			}
			OciImage *img = NULL;
			k = oci_image_resolve(b->store, root, &o->platforms[0], &img, err);
			if (k >= 0)
				k = export_docker_archive(b->store, img, o->tags, out->dest, err);
			oci_image_free(img);
			break;
		}
		case OUTPUT_LOCAL:
			for (size_t p = 0; p < o->n_platforms && k >= 0; p++) {
				_cleanup_free_ char *dest = NULL;
				if (o->n_platforms == 1) {
					dest = xstrdup(out->dest);
				} else {
					char pl[96];
					platform_format(&o->platforms[p], pl, sizeof(pl));
					for (char *c = pl; *c; c++)
						if (*c == '/')
							*c = '_';
					dest = xasprintf("%s/%s", out->dest, pl);
				}
				k = build_export_local(b->store, manifests[p].digest, dest, err);
			}
			break;
		}
		if (k < 0)
			kiln_error_wrap(err, k, "output '%s'", out->dest);
	}
	return k < 0 ? k : 0;
}

static int write_metadata(Build *b, const OciDescriptor *root, KilnError **err)
{
	json_t *m = json_object(), *d = descriptor_json(root->media_type, root->digest, root->size);
	_cleanup_free_ char *names = b->o->tags ? strv_join(b->o->tags, ",") : NULL;

	json_object_set_new(m, "containerimage.digest", json_string(root->digest));
	json_object_set_new(m, "containerimage.descriptor", d);
	if (names)
		json_object_set_new(m, "image.name", json_string(names));
	char *s = json_dumps(m, JSON_INDENT(2));
	json_decref(m);
	int k = write_file_atomic_at(AT_FDCWD, b->o->metadata_file, s, strlen(s), 0644, err);
	free(s);
	return k;
}

static Stage *target_stage(Build *b, KilnError **err)
{
	if (!b->o->target)
		return &b->stages[b->n_stages - 1];
	for (size_t i = 0; i < b->n_stages; i++)
		if (b->stages[i].name && strcasecmp(b->stages[i].name, b->o->target) == 0)
			return &b->stages[i];
	kiln_error(err, ENOENT, "target stage '%s' not found in %s", b->o->target, b->df->filename);
	return NULL;
}

static int build_prepare(Build *b, KilnError **err)
{
	const BuildOptions *o = b->o;
	_cleanup_free_ char *dfpath =
	    o->dockerfile ? xstrdup(o->dockerfile) : xasprintf("%s/Dockerfile", o->context_dir);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int k;

	k = read_file_at(AT_FDCWD, dfpath, 16 << 20, &data, &len, err);
	if (k < 0)
		return k;
	k = dockerfile_parse(o->dockerfile ? dfpath : "Dockerfile", data, len, &b->df, err);
	if (k < 0)
		return k;
	k = build_context_open(o->context_dir, o->dockerfile ? dfpath : NULL, &b->ctx, err);
	if (k < 0)
		return k;
	for (size_t i = 0; o->build_args && o->build_args[i]; i++) {
		_cleanup_free_ char *kv = xstrdup(o->build_args[i]);
		char *eq = strchr(kv, '=');
		if (!eq)
			continue;
		*eq = 0;
		vars_set(&b->build_args, kv, eq + 1);
	}
	b->snapdir = xasprintf("%s/snapshots", store_path(b->store));
	k = mkdir_p(b->snapdir, 0700, err);
	/* ROOT/work/<pid>, held by a lock so other builds can tell a dead build's leftovers
	 * (which they remove here) from a running one's. */
	if (k >= 0)
		k = store_work_acquire(b->store, &b->work, err);
	if (k >= 0)
		prune_sweep_dead(b->store);
	if (k >= 0)
		k = build_cache_open(store_path(b->store), &b->cache, err);
	return k;
}

static void build_done(Build *b)
{
	for (StageResult *r = b->results, *next; r; r = next) {
		next = r->next;
		result_reset(r);
		free(r);
	}
	for (size_t i = 0; i < b->n_stages; i++)
		free(b->stages[i].name);
	free(b->stages);
	for (size_t i = 0; i < b->n_steps; i++) {
		free(b->steps[i].stage);
		free(b->steps[i].instruction);
		free(b->steps[i].reason);
	}
	build_cache_free(b->cache);
	free(b->steps);
	vars_done(&b->build_args);
	strv_free(b->consumed_args);
	if (b->work)
		store_work_release(b->store);
	free(b->work);
	free(b->snapdir);
	build_context_free(b->ctx);
	dockerfile_free(b->df);
	progress_free(b->progress);
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
}

static void warn_unused_args(Build *b)
{
	for (size_t i = 0; i < b->build_args.n; i++) {
		bool used = false;
		for (size_t j = 0; b->consumed_args && b->consumed_args[j]; j++)
			used |= strcmp(b->consumed_args[j], b->build_args.v[i].key) == 0;
		if (!used)
			progress_note(b->progress, "warning: build-arg '%s' was not consumed",
				      b->build_args.v[i].key);
	}
}

typedef struct PassQueue {
	Build *b;
	Pass *passes;
	size_t n, next;
	Stage *target;
	pthread_mutex_t lock;
} PassQueue;

static int pass_run(Pass *p, Stage *target, KilnError **err)
{
	StageResult *res = NULL;
	int k = global_args_eval(p, err);

	if (k >= 0)
		k = stage_build(p, target, &res, err);
	if (k >= 0)
		k = stage_write_manifest(p->b, res, &p->manifest, err);
	return k;
}

static void *pass_worker(void *ud)
{
	PassQueue *q = ud;

	for (;;) {
		pthread_mutex_lock(&q->lock);
		size_t i = q->next < q->n ? q->next++ : q->n;
		pthread_mutex_unlock(&q->lock);
		if (i >= q->n)
			return NULL;
		Pass *p = &q->passes[i];
		p->status = pass_run(p, q->target, &p->err);
		if (p->status < 0)
			__atomic_store_n(&q->b->failed, true, __ATOMIC_RELAXED);
	}
}

/* Runs every target platform, up to --jobs at a time. */
static int passes_run(Build *b, Stage *target, Pass *passes, size_t n, KilnError **err)
{
	PassQueue q = {.b = b, .passes = passes, .n = n, .target = target};
	long jobs = b->o->jobs > 0 ? b->o->jobs : sysconf(_SC_NPROCESSORS_ONLN);
	size_t n_threads = (size_t)(jobs < 1 ? 1 : jobs);
	pthread_t *threads;
	size_t started = 0;

	if (n_threads > n)
		n_threads = n;
	pthread_mutex_init(&q.lock, NULL);
	threads = xcalloc(n_threads, sizeof(pthread_t));
	for (size_t i = 1; i < n_threads; i++)
		if (pthread_create(&threads[i], NULL, pass_worker, &q) == 0)
			started = i;
	pass_worker(&q);
	for (size_t i = 1; i <= started; i++)
		pthread_join(threads[i], NULL);
	free(threads);
	pthread_mutex_destroy(&q.lock);
	/* The first failure (in platform order) is the build's error; a pass cancelled because
	 * another failed says so only when nothing else does. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < n; i++) {
			if (passes[i].status >= 0 || !passes[i].err)
				continue;
			if (pass == 0 && passes[i].err->code == ECANCELED)
				continue;
			*err = TAKE_PTR(passes[i].err);
			return passes[i].status;
		}
	return 0;
}

static json_t *layer_json(const LayerRef *l)
{
	json_t *o = json_object();

	json_object_set_new(o, "digest", json_string(l->desc.digest));
	json_object_set_new(o, "size", json_integer(l->desc.size));
	json_object_set_new(o, "diff_id", json_string(l->diff_id));
	return o;
}

static int write_report(Build *b, double wall, KilnError **err)
{
	json_t *rep = json_object(), *plats = json_array(), *steps = json_array();
	size_t runs = 0, n_layers = 0, hits = 0;
	int64_t bytes = 0;

	json_object_set_new(rep, "kiln_version", json_string(KILN_VERSION));
	for (size_t i = 0; i < b->o->n_platforms; i++) {
		char pl[PLATFORM_STRING_MAX];
		platform_format(&b->o->platforms[i], pl, sizeof(pl));
		json_array_append_new(plats, json_string(pl));
	}
	json_object_set_new(rep, "platforms", plats);
	for (size_t i = 0; i < b->n_steps; i++) {
		const ReportStep *s = &b->steps[i];
		json_t *o = json_object();
		json_object_set_new(o, "platform", json_string(s->platform));
		json_object_set_new(o, "stage", json_string(s->stage));
		json_object_set_new(o, "line", json_integer(s->line));
		json_object_set_new(o, "instruction", json_string(s->instruction));
		json_object_set_new(o, "cached", json_boolean(s->cached));
		json_object_set_new(o, "reason", s->cached ? json_null() : json_string(s->reason));
		json_object_set_new(o, "emulated", json_boolean(s->emulated));
		json_object_set_new(o, "wall_s", json_real(s->wall_s));
		json_object_set_new(o, "cpu_s", json_real(s->cpu_s));
		json_object_set_new(o, "layer", s->has_layer ? layer_json(&s->layer) : json_null());
		json_array_append_new(steps, o);
		runs += s->run;
		hits += s->cached;
		if (s->has_layer && !s->cached) {
			bytes += s->layer.desc.size;
			n_layers++;
		}
	}
	json_object_set_new(rep, "steps", steps);
	json_t *t = json_object();
	json_object_set_new(t, "steps", json_integer((json_int_t)b->n_steps));
	json_object_set_new(t, "cache_hits", json_integer((json_int_t)hits));
	json_object_set_new(t, "cache_hit_rate",
			    json_real(b->n_steps ? (double)hits / (double)b->n_steps : 0));
	json_object_set_new(t, "runs_executed", json_integer((json_int_t)runs));
	json_object_set_new(t, "platform_builds", json_integer((json_int_t)b->o->n_platforms));
	json_object_set_new(t, "layers_written", json_integer((json_int_t)n_layers));
	json_object_set_new(t, "bytes_written", json_integer(bytes));
	json_object_set_new(t, "wall_s", json_real(wall));
	json_object_set_new(rep, "totals", t);
	char *s = json_dumps(rep, JSON_INDENT(2));
	json_decref(rep);
	int k = write_file_atomic_at(AT_FDCWD, b->o->report_file, s, strlen(s), 0644, err);
	free(s);
	return k;
}

/* --cache-to: mode=max exports every step of this build; mode=min only the steps whose layers are
 * in the result (the target stage and the stages it is FROM, transitively). */
static int export_cache(Build *b, Stage *target, KilnError **err)
{
	bool *in_result = xcalloc(b->n_stages, sizeof(bool));
	_cleanup_strv_free_ char **keys = NULL;
	int k;

	for (Stage *st = target; st;) {
		in_result[st->index] = true;
		const char *text = st->from->args && st->from->args[0] ? st->from->args[0] : "";
		_cleanup_free_ char *copy = xstrdup(text);
		char *save = NULL, *image = strtok_r(copy, " \t\n", &save);
		Stage *base = image ? stage_find(b, image) : NULL;
		st = base && base->index < st->index ? base : NULL;
	}
	for (size_t i = 0; i < b->n_steps; i++)
		if (b->o->cache_to_max || in_result[b->steps[i].stage_index])
			strv_push(&keys, b->steps[i].key);
	free(in_result);
	k = build_cache_export(b->cache, b->store, keys, b->o->cache_to, err);
	if (k >= 0)
		progress_note(b->progress, "exporting cache to %s: %zu entries (mode=%s)",
			      b->o->cache_to, strv_length(keys),
			      b->o->cache_to_max ? "max" : "min");
	return k;
}

int build_run(const BuildOptions *o, KilnError **err)
{
	Build b = {.o = o, .store = o->store, .compression = COMPRESSION_GZIP};
	OciDescriptor *manifests = xcalloc(o->n_platforms, sizeof(OciDescriptor));
	Pass *passes = xcalloc(o->n_platforms, sizeof(Pass));
	OciDescriptor root = {0};
	double t0 = now_seconds();
	Stage *target;
	int k;

	pthread_mutex_init(&b.lock, NULL);
	pthread_cond_init(&b.cond, NULL);
	b.progress = progress_new(o->progress);
	platform_host(&b.build_platform);
	for (size_t i = 0; i < o->n_outputs; i++)
		if (o->outputs[i].type != OUTPUT_LOCAL) {
			b.compression = o->outputs[i].compression;
			break;
		}
	k = build_prepare(&b, err);
	for (size_t i = 0; k >= 0 && o->cache_from && o->cache_from[i]; i++) {
		size_t n = 0;
		k = build_cache_import(b.cache, b.store, o->cache_from[i], &n, err);
		if (k >= 0)
			progress_note(b.progress, "importing cache from %s: %zu entries",
				      o->cache_from[i], n);
	}
	if (k >= 0)
		k = stages_split(&b, err);
	if (k < 0)
		goto out;
	target = target_stage(&b, err);
	if (!target) {
		k = -ENOENT;
		goto out;
	}
	for (size_t i = 0; i < o->n_platforms; i++) {
		passes[i].b = &b;
		passes[i].platform = o->platforms[i];
		passes[i].res = xcalloc(b.n_stages, sizeof(StageResult *));
		passes[i].visiting = xcalloc(b.n_stages, sizeof(bool));
	}
	k = passes_run(&b, target, passes, o->n_platforms, err);
	if (k < 0)
		goto out;
	for (size_t i = 0; i < o->n_platforms; i++)
		manifests[i] = passes[i].manifest;
	k = oci_index_put(b.store, manifests, o->n_platforms, &root, err);
	for (size_t i = 0; k >= 0 && o->tags && o->tags[i]; i++) {
		_cleanup_free_ char *name = NULL;
		k = store_name_normalize(o->tags[i], &name, err);
		if (k >= 0)
			k = store_tag_set(b.store, name, &root, err);
	}
	if (k >= 0)
		k = write_outputs(&b, &root, manifests, err);
	if (k >= 0 && o->metadata_file)
		k = write_metadata(&b, &root, err);
	if (k >= 0 && o->cache_to)
		k = export_cache(&b, target, err);
	if (k >= 0 && o->report_file)
		k = write_report(&b, now_seconds() - t0, err);
	if (k >= 0) {
		warn_unused_args(&b);
		progress_note(b.progress, "writing image %s done", root.digest);
		for (size_t i = 0; o->tags && o->tags[i]; i++)
			progress_note(b.progress, "naming to %s done", o->tags[i]);
		printf("%s\n", root.digest);
	}
out:
	for (size_t i = 0; i < o->n_platforms; i++) {
		vars_done(&passes[i].global_args);
		free(passes[i].res);
		free(passes[i].visiting);
		kiln_error_free(passes[i].err);
	}
	free(passes);
	free(manifests);
	build_done(&b);
	return k < 0 ? k : 0;
}
