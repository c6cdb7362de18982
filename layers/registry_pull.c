#include "registry_pull.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"

struct RegistryPull {
	RegistryClient *client;
	Store *store;
	Reference ref;
	RegistryRepo repo; /* points into ref */
	PullProgressFn progress;
	void *progress_data;
	uint64_t fetched, fetched_bytes, present; /* __atomic */
};

int registry_pull_new(RegistryClient *c, Store *s, const Reference *ref, RegistryPull **ret,
		      KilnError **err)
{
	RegistryPull *p;

	if (!c || !s || !ref)
		return kiln_error(err, EINVAL, "registry_pull_new: missing argument");
	p = xcalloc(1, sizeof(*p));
	p->client = c;
	p->store = s;
	p->ref = *ref;
	p->repo = (RegistryRepo){.domain = p->ref.domain, .repository = p->ref.path};
	*ret = p;
	return 0;
}

void registry_pull_free(RegistryPull *p)
{
	free(p);
}

void registry_pull_set_progress(RegistryPull *p, PullProgressFn fn, void *userdata)
{
	p->progress = fn;
	p->progress_data = userdata;
}

PullStats registry_pull_stats(const RegistryPull *p)
{
	return (PullStats){
	    .fetched = __atomic_load_n(&p->fetched, __ATOMIC_RELAXED),
	    .fetched_bytes = __atomic_load_n(&p->fetched_bytes, __ATOMIC_RELAXED),
	    .present = __atomic_load_n(&p->present, __ATOMIC_RELAXED),
	};
}

static void pull_event(RegistryPull *p, PullEventKind kind, const OciDescriptor *d)
{
	if (kind == PULL_BLOB_FETCHED) {
		__atomic_add_fetch(&p->fetched, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&p->fetched_bytes, d->size > 0 ? (uint64_t)d->size : 0,
				   __ATOMIC_RELAXED);
	} else {
		__atomic_add_fetch(&p->present, 1, __ATOMIC_RELAXED);
	}
	if (p->progress)
		p->progress(p->progress_data, kind, d);
}

/* ---------- one blob ---------- */

/* Where a streamed blob goes: a BlobWriter, replaced by a fresh one when the download starts
 * over; cancel (may be NULL) is set when another download of the pull failed. */
typedef struct WriterSink {
	Store *store;
	BlobWriter *w;
	const int *cancel;
} WriterSink;

static int sink_write(void *userdata, const void *data, size_t len, KilnError **err)
{
	WriterSink *ws = userdata;

	if (ws->cancel && __atomic_load_n(ws->cancel, __ATOMIC_ACQUIRE))
		return kiln_error(err, ECANCELED, "cancelled: another download failed");
	return blob_writer_write(ws->w, data, len, err);
}

static int sink_restart(void *userdata, KilnError **err)
{
	WriterSink *ws = userdata;

	blob_writer_free(ws->w);
	ws->w = NULL;
	return store_blob_writer_new(ws->store, &ws->w, err);
}

/* The writer hashes what it writes: the client need not hash it again. */
static int sink_digest(void *userdata, char ret_digest[DIGEST_STRING_MAX], KilnError **err)
{
	WriterSink *ws = userdata;

	return blob_writer_finish(ws->w, NULL, ret_digest, NULL, err);
}

static bool is_config_type(const char *mt)
{
	return strcmp(mt, MT_OCI_CONFIG) == 0 || strcmp(mt, MT_DOCKER_CONFIG) == 0;
}

/* A blob through the blobs endpoint, streamed into the store: hashed once, by the writer; it
 * gets its name only after registry_blob_get checked its size and that digest. */
static int pull_stream(RegistryPull *p, const OciDescriptor *d, const int *cancel, KilnError **err)
{
	WriterSink ws = {.store = p->store, .cancel = cancel};
	RegistryBlobSink sink = {sink_write, sink_restart, &ws, sink_digest};
	int r;

	if (is_config_type(d->media_type) && d->size > (int64_t)OCI_CONFIG_MAX)
		return kiln_error(err, EFBIG, "config %s: %lld bytes, more than %u", d->digest,
				  (long long)d->size, OCI_CONFIG_MAX);
	r = store_blob_writer_new(p->store, &ws.w, err);
	if (r >= 0)
		r = registry_blob_get(p->client, &p->repo, d->digest, d->size, &sink, err);
	if (r >= 0)
		r = blob_writer_commit(ws.w, d->digest, NULL, NULL, err);
	blob_writer_free(ws.w);
	return r;
}

/* An index or manifest through the manifests endpoint, stored as received. */
static int pull_document(RegistryPull *p, const OciDescriptor *d, KilnError **err)
{
	_cleanup_registry_manifest_ RegistryManifest m = {0};
	int r = registry_manifest_get(p->client, &p->repo, d->digest, &m, err);

	if (r >= 0 && d->size >= 0 && (int64_t)m.len != d->size)
		r = kiln_error(err, EIO, "manifest %s: %zu bytes, its descriptor says %lld",
			       d->digest, m.len, (long long)d->size);
	if (r >= 0)
		r = store_put_blob(p->store, m.data, m.len, d->digest, NULL, err);
	return r;
}

static int pull_blob(RegistryPull *p, const OciDescriptor *d, const int *cancel, KilnError **err)
{
	int r;

	if (store_has_blob(p->store, d->digest)) {
		pull_event(p, PULL_BLOB_PRESENT, d);
		return 0;
	}
	if (oci_media_type_is_index(d->media_type) || oci_media_type_is_manifest(d->media_type))
		r = pull_document(p, d, err);
	else
		r = pull_stream(p, d, cancel, err);
	if (r < 0)
		return r;
	pull_event(p, PULL_BLOB_FETCHED, d);
	return 0;
}

int registry_pull_blob(RegistryPull *p, const OciDescriptor *d, KilnError **err)
{
	return pull_blob(p, d, NULL, err);
}

static int fetcher_fetch(void *userdata, const OciDescriptor *d, KilnError **err)
{
	return registry_pull_blob(userdata, d, err);
}

OciFetcher registry_pull_fetcher(RegistryPull *p)
{
	return (OciFetcher){.fetch = fetcher_fetch, .userdata = p};
}

/* ---------- the root ---------- */

int registry_pull_root(RegistryPull *p, OciDescriptor *ret, KilnError **err)
{
	char digest[DIGEST_STRING_MAX];
	int r;

	if (p->ref.digest[0]) {
		memcpy(digest, p->ref.digest, DIGEST_STRING_MAX);
	} else {
		RegistryDescriptor rd;
		r = registry_manifest_head(p->client, &p->repo, p->ref.tag, &rd, err);
		if (r < 0)
			return r;
		memcpy(digest, rd.digest, DIGEST_STRING_MAX);
	}
	if (!store_has_blob(p->store, digest)) {
		_cleanup_registry_manifest_ RegistryManifest m = {0};
		r = registry_manifest_get(p->client, &p->repo, digest, &m, err);
		if (r >= 0)
			r = store_put_blob(p->store, m.data, m.len, digest, NULL, err);
		if (r < 0)
			return r;
		OciDescriptor d = {.size = (int64_t)m.len};
		memcpy(d.digest, digest, DIGEST_STRING_MAX);
		snprintf(d.media_type, sizeof(d.media_type), "%s", m.media_type);
		pull_event(p, PULL_BLOB_FETCHED, &d);
	}
	return oci_descriptor_from_blob(p->store, digest, ret, err);
}

/* ---------- several blobs at once ---------- */

typedef struct Jobs {
	RegistryPull *p;
	const OciDescriptor **v;
	size_t n;
	size_t next; /* __atomic: the next job to take */
	int cancel;  /* __atomic: a job failed; the others stop */
	int *rs;
	KilnError **errs;
} Jobs;

static void *jobs_worker(void *userdata)
{
	Jobs *j = userdata;

	while (!__atomic_load_n(&j->cancel, __ATOMIC_ACQUIRE)) {
		size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
		if (i >= j->n)
			break;
		j->rs[i] = pull_blob(j->p, j->v[i], &j->cancel, &j->errs[i]);
		if (j->rs[i] < 0)
			__atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* The first failure that is not a cancellation (downloads cancelled because of it say less). */
static int jobs_result(Jobs *j, KilnError **err)
{
	size_t pick = j->n;

	for (size_t i = 0; i < j->n; i++) {
		if (j->rs[i] >= 0)
			continue;
		if (pick == j->n || (j->rs[pick] == -ECANCELED && j->rs[i] != -ECANCELED))
			pick = i;
	}
	if (pick == j->n)
		return 0;
	if (err && !*err)
		*err = TAKE_PTR(j->errs[pick]);
	return j->rs[pick];
}

/* The descriptors of v not in the store, each digest once. */
static const OciDescriptor **blobs_missing(RegistryPull *p, const OciDescriptor *v, size_t n,
					   size_t *ret_n)
{
	_cleanup_json_ json_t *seen = json_object();
	const OciDescriptor **todo = xcalloc(n + 1, sizeof(*todo));
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		if (json_object_get(seen, v[i].digest))
			continue;
		json_object_set_new(seen, v[i].digest, json_true());
		if (store_has_blob(p->store, v[i].digest))
			pull_event(p, PULL_BLOB_PRESENT, &v[i]);
		else
			todo[k++] = &v[i];
	}
	*ret_n = k;
	return todo;
}

int registry_pull_blobs(RegistryPull *p, const OciDescriptor *v, size_t n, unsigned jobs,
			KilnError **err)
{
	_cleanup_free_ const OciDescriptor **todo = NULL;
	Jobs j = {.p = p};
	pthread_t th[PULL_JOBS_MAX];
	size_t n_th = 0;
	int r;

	todo = blobs_missing(p, v, n, &j.n);
	j.v = todo;
	if (j.n == 0)
		return 0;
	if (jobs == 0)
		jobs = PULL_JOBS_DEFAULT;
	if (jobs > PULL_JOBS_MAX)
		jobs = PULL_JOBS_MAX;
	j.rs = xcalloc(j.n, sizeof(int));
	j.errs = xcalloc(j.n, sizeof(KilnError *));
	/* This thread works too: one download needs no other thread. */
	for (size_t i = 1; i < jobs && i < j.n; i++) {
		if (pthread_create(&th[n_th], NULL, jobs_worker, &j) != 0)
			break;
		n_th++;
	}
	jobs_worker(&j);
	for (size_t i = 0; i < n_th; i++)
		pthread_join(th[i], NULL);
	r = jobs_result(&j, err);
	for (size_t i = 0; i < j.n; i++)
		kiln_error_free(j.errs[i]);
	free(j.errs);
	free(j.rs);
	return r;
}

/* ---------- images ---------- */

void pull_result_done(PullResult *r)
{
	oci_images_free(r->images, r->n_images);
	*r = (PullResult){0};
}

typedef struct Collect {
	OciDescriptor *v;
	size_t n;
} Collect;

static void collect_add(Collect *c, const OciDescriptor *d)
{
	c->v = xrealloc(c->v, (c->n + 1) * sizeof(*c->v));
	c->v[c->n] = *d;
	c->v[c->n++].annotations = NULL;
}

/* oci_walk visitor: configs, layers and other blobs (what is not a document the walk reads). */
static int collect_blob(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	(void)depth;
	(void)err;
	if (!oci_media_type_is_index(d->media_type) && !oci_media_type_is_manifest(d->media_type))
		collect_add(userdata, d);
	return 0;
}

/* Every platform: the walk fetches every index and manifest; then every blob they list. */
static int pull_all(RegistryPull *p, const OciDescriptor *root, unsigned jobs, PullResult *ret,
		    KilnError **err)
{
	OciFetcher f = registry_pull_fetcher(p);
	Collect c = {0};
	OciWalkOptions wo = {
	    .flags = OCI_WALK_MANIFESTS, .visit = collect_blob, .fetch = &f, .userdata = &c};
	int r = oci_walk(p->store, root, 1, &wo, err);

	if (r >= 0)
		r = registry_pull_blobs(p, c.v, c.n, jobs, err);
	free(c.v);
	if (r >= 0)
		r = oci_images_load(p->store, root, 1, &ret->images, &ret->n_images, err);
	for (size_t i = 0; r >= 0 && i < ret->n_images; i++)
		r = oci_image_fetch_layers(p->store, ret->images[i], NULL, err);
	return r;
}

/* The platforms asked for: each resolved with the fetcher (indexes, its manifest and config),
 * then all their layers at once. */
static int pull_platforms(RegistryPull *p, const OciDescriptor *root, const PullOptions *o,
			  PullResult *ret, KilnError **err)
{
	OciFetcher f = registry_pull_fetcher(p);
	Collect c = {0};
	int r = 0;

	ret->images = xcalloc(o->n_platforms + 1, sizeof(OciImage *));
	for (size_t i = 0; i < o->n_platforms && r >= 0; i++) {
		r = oci_image_resolve(p->store, root, &o->platforms[i], &f, &ret->images[i], err);
		if (r < 0)
			break;
		ret->n_images++;
		for (size_t l = 0; l < ret->images[i]->n_layers; l++)
			collect_add(&c, &ret->images[i]->layers[l]);
	}
	if (r >= 0)
		r = registry_pull_blobs(p, c.v, c.n, o->jobs, err);
	free(c.v);
	for (size_t i = 0; r >= 0 && i < ret->n_images; i++)
		r = oci_image_fetch_layers(p->store, ret->images[i], NULL, err);
	return r;
}

int registry_pull_images(RegistryPull *p, const OciDescriptor *root, const PullOptions *o,
			 PullResult *ret, KilnError **err)
{
	PullResult res = {0};
	int r = o->platforms ? pull_platforms(p, root, o, &res, err)
			     : pull_all(p, root, o->jobs, &res, err);

	if (r >= 0)
		r = pull_root_complete(p->store, root, &res.complete, err);
	if (r < 0) {
		pull_result_done(&res);
		return r;
	}
	*ret = res;
	return 0;
}

/* oci_walk visitor of pull_root_complete: stops at the first missing blob. */
static int complete_visit(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	Store *s = *(Store **)userdata;

	(void)depth;
	(void)err;
	return store_has_blob(s, d->digest) ? 0 : -ENOENT;
}

int pull_root_complete(Store *s, const OciDescriptor *root, bool *ret, KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	OciWalkOptions wo = {.flags = OCI_WALK_MANIFESTS, .visit = complete_visit, .userdata = &s};
	int r = oci_walk(s, root, 1, &wo, &e);

	*ret = r >= 0;
	if (r == -ENOENT)
		return 0;
	if (r < 0 && err && !*err)
		*err = TAKE_PTR(e);
	return r < 0 ? r : 0;
}

/* ---------- names ---------- */

static bool list_has(const char *list, const char *digest)
{
	size_t n = strlen(digest);

	for (const char *c = list; c && *c;) {
		const char *end = strchr(c, ',');
		size_t len = end ? (size_t)(end - c) : strlen(c);
		if (len == n && strncmp(c, digest, n) == 0)
			return true;
		c = end ? end + 1 : NULL;
	}
	return false;
}

bool pull_entry_not_pulled(const OciDescriptor *entry, const char *digest)
{
	const char *list = oci_descriptor_annotation(entry, PULL_ANNOTATION_MANIFESTS);

	return list && !list_has(list, digest);
}

/* The annotation value: what the entry lists already (when it names root) and manifests. */
static char *tag_manifests(const OciDescriptor *old, char *const *manifests)
{
	const char *had = old ? oci_descriptor_annotation(old, PULL_ANNOTATION_MANIFESTS) : NULL;
	_cleanup_strbuf_ StrBuf b = {0};

	if (had)
		strbuf_adds(&b, had);
	for (size_t i = 0; manifests && manifests[i]; i++) {
		if (list_has(b.s, manifests[i]))
			continue;
		if (b.len)
			strbuf_addc(&b, ',');
		strbuf_adds(&b, manifests[i]);
	}
	return strbuf_steal(&b);
}

int registry_pull_tag(Store *s, const Reference *ref, const OciDescriptor *root, bool complete,
		      char *const *manifests, char ret_previous[DIGEST_STRING_MAX], KilnError **err)
{
	_cleanup_free_ char *name = NULL;
	OciDescriptor old = {0}, d;
	Reference named = *ref;
	int r;

	if (ret_previous)
		ret_previous[0] = '\0';
	if (!ref->tag[0])
		return 0;
	named.digest[0] = '\0';
	name = ref_string(&named);
	bool same =
	    store_tag_get(s, name, &old, NULL) >= 0 && strcmp(old.digest, root->digest) == 0;
	/* A name that points at root without the annotation has the whole image. */
	complete |= same && !oci_descriptor_annotation(&old, PULL_ANNOTATION_MANIFESTS);
	oci_descriptor_copy(&d, root);
	json_decref(d.annotations);
	d.annotations = json_object();
	if (!complete) {
		_cleanup_free_ char *list = tag_manifests(same ? &old : NULL, manifests);
		json_object_set_new(d.annotations, PULL_ANNOTATION_MANIFESTS, json_string(list));
	}
	oci_descriptor_done(&old);
	r = store_tag_set(s, name, &d, ret_previous, err);
	oci_descriptor_done(&d);
	return r;
}
