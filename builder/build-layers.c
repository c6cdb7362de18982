#include "builder/build-internal.h"

/* ---------- snapshots and mounts ---------- */

uint64_t build_max_layer_bytes(const BuildOptions *o)
{
	return o->max_layer_bytes ? o->max_layer_bytes : LAYER_MAX_BYTES_DEFAULT;
}

uint64_t build_max_layer_entries(const BuildOptions *o)
{
	return o->max_layer_entries ? o->max_layer_entries : LAYER_MAX_ENTRIES_DEFAULT;
}

/* Reads the layer blob with its diff_id checked, unpacking it into dfd (or, dfd < 0, only
 * checking every entry), and records the diff_id as verified. */
static int layer_verify(Build *b, const LayerRef *l, int dfd, KilnError **err)
{
	_cleanup_close_ int blob = -1;
	LayerApplyResult res = {0};
	LayerApplyOptions ao = {
	    .mode = LAYER_APPLY_OVERLAY,
	    .whiteouts = true,
	    .keep_owner = true,
	    .force_uid = (uid_t)-1,
	    .force_gid = (gid_t)-1,
	    .expected_diff_id = l->diff_id,
	    .max_bytes = build_max_layer_bytes(b->o),
	    .max_entries = build_max_layer_entries(b->o),
	    .skip_devices = true,
	    .result = &res,
	};
	int r = store_open_blob(b->store, l->desc.digest, &blob, err);

	if (r >= 0)
		r = layer_apply(blob, dfd, &ao, NULL, err);
	if (r == -EFBIG)
		kiln_error_wrap(err, r,
				"exceeds a per-layer cap (raise it with --max-layer-size or "
				"--max-layer-entries)");
	if (r == -EINVAL && b->o->idmap && b->o->idmap->kind == IDMAP_SINGLE)
		kiln_error_wrap(err, r, "%s", userns_subid_hint());
	if (r < 0)
		return kiln_error_wrap(err, r, "%s layer %s", dfd >= 0 ? "unpack" : "check",
				       l->desc.digest);
	if (dfd >= 0 && res.devices_skipped)
		progress_note(b->progress,
			      "warning: layer %s: %llu device node%s left out ('%s'%s): a user "
			      "namespace cannot create them (rootless Docker does the same); the "
			      "image keeps the layer as it is",
			      l->desc.digest, (unsigned long long)res.devices_skipped,
			      res.devices_skipped == 1 ? "" : "s", res.first_device,
			      res.devices_skipped == 1 ? "" : ", ...");
	return store_diffid_record(b->store, l->desc.digest, l->diff_id, err);
}

/* A snapshot is reused for a blob only when kiln computed that blob's diff_id (what a config
 * claims is checked once, by reading the blob); else the blob is unpacked and checked. */
int snapshot_ensure(Build *b, const LayerRef *l, KilnError **err)
{
	_cleanup_free_ char *final = xasprintf("%s/%s", b->snapdir, digest_hex(l->diff_id));
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int dfd = -1;
	int r;

	if (access(final, F_OK) == 0)
		return store_diffid_verified(b->store, l->desc.digest, l->diff_id)
			   ? 0
			   : layer_verify(b, l, -1, err);
	tmp = xasprintf("%s/.tmp-%d-%u", b->snapdir, (int)getpid(),
			__atomic_add_fetch(&b->seq, 1, __ATOMIC_RELAXED));
	if (mkdir(tmp, 0755) < 0)
		return kiln_error_errno(err, errno, "mkdir '%s'", tmp);
	dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = dfd < 0 ? kiln_error_errno(err, errno, "open '%s'", tmp) : layer_verify(b, l, dfd, err);
	if (r >= 0 && rename(tmp, final) < 0 && errno != EEXIST && errno != ENOTEMPTY)
		r = kiln_error_errno(err, errno, "rename snapshot '%s'", final);
	if (r < 0 || access(tmp, F_OK) == 0)
		rm_rf_at(AT_FDCWD, tmp, NULL);
	return r < 0 ? r : 0;
}

void mounted_release(Mounted *m)
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

int mount_layers(Build *b, const LayerRef *layers, size_t n, Mounted *m, KilnError **err)
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

int mounted_unmount(Mounted *m, KilnError **err)
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

void result_add_layer(StageResult *st, const LayerRef *l)
{
	st->layers = xrealloc(st->layers, (st->n_layers + 1) * sizeof(LayerRef));
	st->layers[st->n_layers] = *l;
	st->layers[st->n_layers].desc.annotations = NULL;
	st->n_layers++;
	image_conf_add_layer(st->conf, l->diff_id);
}

/* Turns a step's upper dir into a layer (none if it is empty), moves it to the snapshots. */
int step_commit(StageRun *r, Mounted *m, const char *created_by, KilnError **err)
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
	    .sync_source = true,
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
	ret = store_diffid_record(b->store, l.desc.digest, l.diff_id, err);
	if (ret < 0)
		goto out;
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

void result_reset(StageResult *st)
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
int stage_from_image(Build *b, StageResult *st, OciImage *img, KilnError **err)
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

int stage_build(Pass *p, Stage *st, StageResult **ret, KilnError **err);

Stage *stage_find(Build *b, const char *name)
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

/* A --build-context key names what FROM or COPY --from says: the same string, or (as buildx
 * normalizes context names) the same image reference: "alpine" is "docker.io/library/alpine"
 * and "alpine:latest". */
static bool context_name_matches(const char *key, size_t key_n, const char *name)
{
	Reference a, b;

	if (strlen(name) == key_n && strncmp(key, name, key_n) == 0)
		return true;
	_cleanup_free_ char *k = xasprintf("%.*s", (int)key_n, key);
	return ref_parse(k, &a, NULL) >= 0 && ref_parse(name, &b, NULL) >= 0 && ref_equal(&a, &b);
}

const char *build_context_source(Build *b, const char *name)
{
	for (size_t i = 0; b->o->build_contexts && b->o->build_contexts[i]; i++) {
		const char *c = b->o->build_contexts[i];
		const char *eq = strchr(c, '=');
		if (eq && context_name_matches(c, (size_t)(eq - c), name))
			return eq + 1;
	}
	return NULL;
}

bool is_local_dir_context(const char *src)
{
	struct stat st;
	_cleanup_free_ char *layout = xasprintf("%s/oci-layout", src);

	if (strchr(src, ':') &&
	    (strncmp(src, "oci:", 4) == 0 || strncmp(src, "oci-archive:", 12) == 0 ||
	     strncmp(src, "docker-archive:", 15) == 0))
		return false;
	return stat(src, &st) == 0 && S_ISDIR(st.st_mode) && access(layout, F_OK) != 0;
}

/* The image of a --build-context NAME=SOURCE (an archive or layout, imported into the store). */
static int context_image_root(Build *b, const char *name, const char *src, OciDescriptor *ret,
			      KilnError **err)
{
	ImportedImage *imgs = NULL;
	size_t n = 0;
	int r = image_import(b->store, src, &imgs, &n, err);

	if (r < 0)
		return kiln_error_wrap(err, r, "build context '%s'", name);
	if (n == 0)
		r = kiln_error(err, ENOENT, "build context '%s': '%s' holds no image", name, src);
	else
		oci_descriptor_copy(ret, &imgs[0].root);
	imported_images_free(imgs, n);
	return r;
}

/* The image FROM or COPY --from names: a --build-context of that name (an archive or layout
 * imported into the store, or buildx's docker-image://REF), else the store or a registry. */
int image_lookup(Build *b, const Stage *st, const char *ref, const Platform *p, OciImage **ret,
		 KilnError **err)
{
	const char *src = build_context_source(b, ref);
	OciDescriptor root = {0};
	int r;

	if (src && strncmp(src, "docker-image://", 15) == 0)
		return base_image_pull(b, st, src + 15, p, ret, err);
	if (!src)
		return base_image_pull(b, st, ref, p, ret, err);
	r = context_image_root(b, ref, src, &root, err);
	if (r < 0)
		return r;
	r = oci_image_resolve(b->store, &root, p, NULL, ret, err);
	if (r >= 0)
		build_base_record(b, st, ref, root.digest, *ret, "build-context");
	oci_descriptor_done(&root);
	if (r < 0)
		return kiln_error_wrap(err, r, "image '%s'", ref);
	return 0;
}

/* ---------- step cache ---------- */

/* build_cache_lookup: a local entry, or one a --cache-from source offers (its blob fetched now).
 * A source that failed to deliver is a warning: the step runs. */
static int step_cache_find(Build *b, const char *key, CacheEntry *ret)
{
	_cleanup_error_ KilnError *warning = NULL;
	int r = build_cache_lookup(b->cache, b->store, key, ret, &warning);

	if (warning)
		progress_note(b->progress, "warning: %s; building without it", warning->message);
	return r;
}

/* Looks up r->step_key. A usable hit is applied (layer and history) and returns 1; a miss sets
 * r->reason and returns 0. slot/sources (COPY, ADD) let a miss name the first changed source. */
int step_cache_lookup(StageRun *r, const char *slot, json_t *sources, const char *created,
		      KilnError **err)
{
	Build *b = r->b;
	CacheEntry e;

	if (b->o->no_cache) {
		r->reason = xstrdup("no-cache");
		return 0;
	}
	if (step_cache_find(b, r->step_key, &e) == 0) {
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
int step_cache_record(StageRun *r, const char *slot, json_t *sources, KilnError **err)
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
int step_meta_cache(StageRun *r, const char *keyword, char *const *fields, KilnError **err)
{
	CacheEntry e;
	CacheKey k;

	cache_key_begin(&k, r->chain);
	cache_key_add(&k, "META");
	cache_key_add(&k, keyword);
	cache_key_add_strv(&k, fields);
	cache_key_end(&k, r->step_key);
	if (!r->b->o->no_cache && step_cache_find(r->b, r->step_key, &e) == 0) {
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
