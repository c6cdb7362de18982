#include "registry_push.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "layers/reference.h"
#include "layers/registry_pull.h"

struct PushSession {
	RegistryClient *client;
	Store *store;
	unsigned jobs;
	char *mount_domain; /* --mount-from's registry, or NULL: the destination's */
	char *mount_path;
	PushSource *sources;
	RegistryPull **pulls; /* per source: fetches blobs missing from the store */
	size_t n_sources;
	pthread_mutex_t lock;
	json_t *blob_repos; /* digest -> {"domain/path": true}: repositories known to have it */
	json_t *root_repos; /* "domain/path" -> {root digest: true}: roots pushed there */
};

/* ---------- the session ---------- */

/* "PATH" or "DOMAIN/PATH" (the first component names a registry when it holds '.' or ':' or
 * is "localhost", as in references). */
static int mount_from_parse(PushSession *p, const char *s, KilnError **err)
{
	const char *slash = strchr(s, '/');
	size_t dn = slash ? (size_t)(slash - s) : 0;
	bool domain = slash && (memchr(s, '.', dn) || memchr(s, ':', dn) ||
				(dn == 9 && strncmp(s, "localhost", 9) == 0));
	const char *path = domain ? slash + 1 : s;

	if (domain && !ref_domain_valid(s, dn))
		return kiln_error(err, KILN_EUSAGE, "--mount-from '%s': bad registry name",
				  EXCERPT(s));
	for (const char *c = path, *e; *c; c = *e ? e + 1 : e) {
		e = c + strcspn(c, "/");
		if (!ref_path_component_valid(c, (size_t)(e - c)) || (*e && !e[1]))
			return kiln_error(err, KILN_EUSAGE,
					  "--mount-from '%s' is not a repository ([DOMAIN/]PATH)",
					  EXCERPT(s));
	}
	if (!*path)
		return kiln_error(err, KILN_EUSAGE, "--mount-from '%s' names no repository",
				  EXCERPT(s));
	p->mount_domain = domain ? xasprintf("%.*s", (int)dn, s) : NULL;
	p->mount_path = xstrdup(path);
	return 0;
}

static int session_add_source(PushSession *p, const PushSource *src, KilnError **err)
{
	Reference ref = {.tag = REF_DEFAULT_TAG};
	RegistryPull *pull = NULL;

	snprintf(ref.domain, sizeof(ref.domain), "%s", src->domain);
	snprintf(ref.path, sizeof(ref.path), "%s", src->repository);
	int r = registry_pull_new(p->client, p->store, &ref, &pull, err);
	if (r < 0)
		return r;
	p->sources = xrealloc(p->sources, (p->n_sources + 1) * sizeof(PushSource));
	p->pulls = xrealloc(p->pulls, (p->n_sources + 1) * sizeof(RegistryPull *));
	p->sources[p->n_sources] = (PushSource){xstrdup(src->domain), xstrdup(src->repository)};
	p->pulls[p->n_sources++] = pull;
	return 0;
}

int registry_push_session_new(RegistryClient *c, Store *s, const PushOptions *o, PushSession **ret,
			      KilnError **err)
{
	_cleanup_(registry_push_session_freep) PushSession *p = xcalloc(1, sizeof(*p));
	unsigned jobs = o && o->jobs ? o->jobs : PUSH_JOBS_DEFAULT;

	p->client = c;
	p->store = s;
	p->jobs = jobs > PUSH_JOBS_MAX ? PUSH_JOBS_MAX : jobs;
	p->blob_repos = json_object();
	p->root_repos = json_object();
	pthread_mutex_init(&p->lock, NULL);
	if (o && o->mount_from) {
		int r = mount_from_parse(p, o->mount_from, err);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; o && i < o->n_sources; i++) {
		int r = session_add_source(p, &o->sources[i], err);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(p);
	return 0;
}

void registry_push_session_free(PushSession *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_sources; i++) {
		free(p->sources[i].domain);
		free(p->sources[i].repository);
		registry_pull_free(p->pulls[i]);
	}
	free(p->sources);
	free(p->pulls);
	free(p->mount_domain);
	free(p->mount_path);
	json_decref(p->blob_repos);
	json_decref(p->root_repos);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static void known_add(PushSession *p, json_t *table, const char *key, const char *value)
{
	pthread_mutex_lock(&p->lock);
	json_t *v = json_object_get(table, key);
	if (!v) {
		v = json_object();
		json_object_set_new(table, key, v);
	}
	json_object_set_new(v, value, json_true());
	pthread_mutex_unlock(&p->lock);
}

static bool known_has(PushSession *p, json_t *table, const char *key, const char *value)
{
	pthread_mutex_lock(&p->lock);
	bool has = json_object_get(json_object_get(table, key), value) != NULL;
	pthread_mutex_unlock(&p->lock);
	return has;
}

/* Another repository of domain that is known to have the blob: a malloc'd path, or NULL. */
static char *known_other_repo(PushSession *p, const char *digest, const char *domain,
			      const char *path)
{
	size_t dn = strlen(domain);
	const char *key;
	json_t *v;
	char *found = NULL;

	pthread_mutex_lock(&p->lock);
	json_object_foreach (json_object_get(p->blob_repos, digest), key, v) {
		if (strncmp(key, domain, dn) == 0 && key[dn] == '/' && strcmp(key + dn + 1, path)) {
			found = xstrdup(key + dn + 1);
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return found;
}

/* ---------- the plan: the graph below a root ---------- */

typedef enum { PUSH_BLOB_NONE, PUSH_BLOB_SKIPPED, PUSH_BLOB_UPLOADED, PUSH_BLOB_MOUNTED } BlobHow;

typedef struct Node {
	OciDescriptor d;
	bool doc;     /* an index or an image manifest */
	bool present; /* the registry has it (or a document that lists it) */
	bool ordered; /* in Plan.order */
	size_t *kids; /* nodes it lists */
	size_t n_kids;
	BlobHow how;
} Node;

typedef struct Plan {
	Node *v;
	size_t n;
	size_t *order; /* children before parents; the root last */
	size_t n_order;
	json_t *index; /* digest -> node number */
	size_t stack[OCI_INDEX_DEPTH_MAX + 3];
} Plan;

static void plan_done(Plan *pl)
{
	for (size_t i = 0; i < pl->n; i++) {
		oci_descriptor_done(&pl->v[i].d);
		free(pl->v[i].kids);
	}
	free(pl->v);
	free(pl->order);
	json_decref(pl->index);
	*pl = (Plan){0};
}

static size_t plan_node(Plan *pl, const OciDescriptor *d)
{
	json_t *at = json_object_get(pl->index, d->digest);

	if (at)
		return (size_t)json_integer_value(at);
	pl->v = xrealloc(pl->v, (pl->n + 1) * sizeof(Node));
	Node *nd = &pl->v[pl->n];
	*nd = (Node){.doc = oci_media_type_is_index(d->media_type) ||
			    oci_media_type_is_manifest(d->media_type)};
	oci_descriptor_copy(&nd->d, d);
	json_object_set_new(pl->index, d->digest, json_integer((json_int_t)pl->n));
	return pl->n++;
}

static int plan_visit(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	Plan *pl = userdata;
	size_t i = plan_node(pl, d);

	if (depth >= ELEMENTSOF(pl->stack))
		return kiln_error(err, ELOOP, "%s: nested too deeply", d->digest);
	pl->stack[depth] = i;
	if (depth > 0) {
		Node *parent = &pl->v[pl->stack[depth - 1]];
		parent->kids = xrealloc(parent->kids, (parent->n_kids + 1) * sizeof(size_t));
		parent->kids[parent->n_kids++] = i;
	}
	return 0;
}

static int plan_leave(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	Plan *pl = userdata;
	size_t i = (size_t)json_integer_value(json_object_get(pl->index, d->digest));

	if (pl->v[i].ordered)
		return 0;
	pl->v[i].ordered = true;
	pl->order = xrealloc(pl->order, (pl->n_order + 1) * sizeof(size_t));
	pl->order[pl->n_order++] = i;
	return 0;
}

/* Walks root's graph: indexes, image manifests (attestations too), configs and layers. */
static int plan_build(Store *s, const OciDescriptor *root, Plan *pl, KilnError **err)
{
	OciWalkOptions wo = {
	    .flags = OCI_WALK_MANIFESTS, .visit = plan_visit, .leave = plan_leave, .userdata = pl};

	*pl = (Plan){.index = json_object()};
	int r = oci_walk(s, root, 1, &wo, err);
	if (r < 0)
		plan_done(pl);
	return r;
}

static void plan_mark_present(Plan *pl, size_t i)
{
	Node *nd = &pl->v[i];

	if (nd->present)
		return;
	nd->present = true;
	for (size_t k = 0; k < nd->n_kids; k++)
		plan_mark_present(pl, nd->kids[k]);
}

/* ---------- a small pool of threads ---------- */

typedef int (*TaskFn)(void *userdata, size_t task, KilnError **err);

typedef struct Pool {
	TaskFn fn;
	void *userdata;
	const size_t *tasks;
	size_t n, next;
	bool stop;
	int r;
	KilnError *err;
	pthread_mutex_t lock;
} Pool;

static void *pool_worker(void *arg)
{
	Pool *pool = arg;

	for (;;) {
		pthread_mutex_lock(&pool->lock);
		size_t i = pool->next++;
		bool stop = pool->stop || i >= pool->n;
		pthread_mutex_unlock(&pool->lock);
		if (stop)
			return NULL;
		KilnError *e = NULL;
		int r = pool->fn(pool->userdata, pool->tasks[i], &e);
		pthread_mutex_lock(&pool->lock);
		if (r < 0 && !pool->stop) {
			pool->stop = true;
			pool->r = r;
			pool->err = TAKE_PTR(e);
		}
		pthread_mutex_unlock(&pool->lock);
		kiln_error_free(e);
	}
}

/* Runs fn for every task, up to jobs at once; the first failure stops the tasks not started. */
static int pool_run(TaskFn fn, void *userdata, const size_t *tasks, size_t n, unsigned jobs,
		    KilnError **err)
{
	Pool pool = {.fn = fn, .userdata = userdata, .tasks = tasks, .n = n};
	size_t nt = jobs < n ? jobs : n;
	pthread_t *th = xcalloc(nt ? nt : 1, sizeof(pthread_t));
	size_t started = 0;

	pthread_mutex_init(&pool.lock, NULL);
	for (; started + 1 < nt; started++)
		if (pthread_create(&th[started], NULL, pool_worker, &pool) != 0)
			break;
	pool_worker(&pool); /* this thread works too */
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&pool.lock);
	free(th);
	if (pool.r < 0) {
		if (err && !*err)
			*err = TAKE_PTR(pool.err);
		kiln_error_free(pool.err);
		return pool.r;
	}
	return 0;
}

/* ---------- one destination ---------- */

typedef struct Dest {
	PushSession *p;
	Reference ref;
	RegistryRepo repo;
	char *repo_key; /* "domain/path" */
	Plan plan;
	PushResult *res;
} Dest;

/* HEADs a document by digest: the registry having it means it has all it lists. */
static int doc_head_task(void *userdata, size_t i, KilnError **err)
{
	Dest *d = userdata;
	Node *nd = &d->plan.v[i];
	_cleanup_error_ KilnError *e = NULL;
	RegistryDescriptor rd;
	int r = registry_manifest_head(d->p->client, &d->repo, nd->d.digest, &rd, &e);

	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		if (err && !*err)
			*err = TAKE_PTR(e);
		return r;
	}
	nd->present = strcmp(rd.digest, nd->d.digest) == 0;
	return 0;
}

/* Marks what the registry has: every document is looked up by digest. */
static int dest_find_present(Dest *d, KilnError **err)
{
	Plan *pl = &d->plan;
	size_t *docs = xcalloc(pl->n + 1, sizeof(size_t)), n = 0;
	int r;

	for (size_t k = 0; k < pl->n_order; k++)
		if (pl->v[pl->order[k]].doc)
			docs[n++] = pl->order[k];
	r = pool_run(doc_head_task, d, docs, n, d->p->jobs, err);
	for (size_t k = 0; r >= 0 && k < n; k++)
		if (pl->v[docs[k]].present) {
			pl->v[docs[k]].present = false;
			plan_mark_present(pl, docs[k]);
		}
	free(docs);
	return r;
}

/* Copies a blob that is not in the store from the first source that has it (registry_pull:
 * streamed into the store, digest-checked). */
static int blob_fetch(Dest *d, const Node *nd, KilnError **err)
{
	PushSession *p = d->p;
	int r = -ENOENT;

	for (size_t i = 0; i < p->n_sources && r < 0; i++) {
		_cleanup_error_ KilnError *e = NULL;
		r = registry_pull_blob(p->pulls[i], &nd->d, &e);
		if (r < 0 && (r != -ENOENT || i + 1 == p->n_sources) && err && !*err)
			*err = TAKE_PTR(e);
	}
	if (r < 0 && !p->n_sources)
		return kiln_error(err, ENOENT, "blob %s is not in the store", nd->d.digest);
	return r;
}

/* --mount-from, when it names a repository of the destination's registry other than it. */
static const char *mount_option(const Dest *d)
{
	const PushSession *p = d->p;

	if (!p->mount_path || strcmp(p->mount_path, d->ref.path) == 0)
		return NULL;
	if (p->mount_domain && strcmp(p->mount_domain, d->ref.domain) != 0)
		return NULL;
	return p->mount_path;
}

/* Repositories of the destination's registry to mount a blob from, the likeliest first: one
 * this session pushed it to, the sources, --mount-from (never the destination itself). */
static char **mount_candidates(Dest *d, const char *digest)
{
	PushSession *p = d->p;
	char **from = NULL;
	char *known = known_other_repo(p, digest, d->ref.domain, d->ref.path);

	if (known)
		strv_consume(&from, known);
	for (size_t i = 0; i < p->n_sources; i++)
		if (strcmp(p->sources[i].domain, d->ref.domain) == 0 &&
		    strcmp(p->sources[i].repository, d->ref.path) != 0 &&
		    !(known && strcmp(known, p->sources[i].repository) == 0))
			strv_push(&from, p->sources[i].repository);
	if (mount_option(d))
		strv_push(&from, mount_option(d));
	return from;
}

/* Asks to mount the blob from each of from[0..n) in turn, sending no bytes: 1 when one did, 0
 * when none did. */
static int blob_mount_only(Dest *d, Node *nd, char *const *from, size_t n, KilnError **err)
{
	for (size_t i = 0; i < n; i++) {
		_cleanup_error_ KilnError *e = NULL;
		RegistryBlobPushed how;
		int r = registry_blob_push(d->p->client, &d->repo, nd->d.digest, -1,
					   (uint64_t)nd->d.size, from[i], &how, &e);
		if (r >= 0) {
			nd->how = PUSH_BLOB_MOUNTED;
			return 1;
		}
		if (r != -ENOENT) {
			if (err && !*err)
				*err = TAKE_PTR(e);
			return r;
		}
	}
	return 0;
}

/* Sends a blob of the store; with from, the registry is asked to mount it from there first (and
 * takes the bytes when it cannot). */
static int blob_upload(Dest *d, Node *nd, const char *from, KilnError **err)
{
	PushSession *p = d->p;
	_cleanup_close_ int fd = -1;
	RegistryBlobPushed how = REGISTRY_BLOB_UPLOADED;
	struct stat st;
	int r = store_open_blob(p->store, nd->d.digest, &fd, err);

	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return kiln_error_errno(err, errno, "blob %s", nd->d.digest);
	if (st.st_size != nd->d.size)
		return kiln_error(err, EIO,
				  "blob %s: %lld bytes in the store, its descriptor says %lld",
				  nd->d.digest, (long long)st.st_size, (long long)nd->d.size);
	r = registry_blob_push(p->client, &d->repo, nd->d.digest, fd, (uint64_t)st.st_size, from,
			       &how, err);
	if (r < 0)
		return r;
	nd->how = how == REGISTRY_BLOB_MOUNTED ? PUSH_BLOB_MOUNTED : PUSH_BLOB_UPLOADED;
	return 0;
}

/* One blob: skipped when the registry has it, else mounted, else uploaded (a blob that is not in
 * the store is fetched from a source first). A blob of the store asks for its last mount
 * candidate within the upload itself: one request less. */
static int blob_task(void *userdata, size_t i, KilnError **err)
{
	Dest *d = userdata;
	Node *nd = &d->plan.v[i];
	bool exists = false;
	int r = registry_blob_head(d->p->client, &d->repo, nd->d.digest, &exists, NULL, err);

	if (r < 0 || exists) {
		nd->how = exists ? PUSH_BLOB_SKIPPED : PUSH_BLOB_NONE;
		return r < 0 ? r : 0;
	}
	_cleanup_strv_free_ char **from = mount_candidates(d, nd->d.digest);
	size_t n = strv_length(from);
	bool local = store_has_blob(d->p->store, nd->d.digest);
	size_t n_only = local && n ? n - 1 : n;
	r = blob_mount_only(d, nd, from, n_only, err);
	if (r == 0 && !local)
		r = blob_fetch(d, nd, err);
	if (r == 0)
		r = blob_upload(d, nd, n_only < n ? from[n_only] : NULL, err);
	return r < 0 ? r : 0;
}

static int cmp_size_desc(const void *a, const void *b, void *nodes)
{
	const Node *v = nodes;
	int64_t sa = v[*(const size_t *)a].d.size, sb = v[*(const size_t *)b].d.size;

	return sa < sb ? 1 : sa > sb ? -1 : 0;
}

/* Every blob the registry lacks, up to jobs at once, the largest first (so that the last to end
 * is a small one). */
static int dest_push_blobs(Dest *d, KilnError **err)
{
	Plan *pl = &d->plan;
	size_t *blobs = xcalloc(pl->n + 1, sizeof(size_t)), n = 0;

	for (size_t k = 0; k < pl->n_order; k++)
		if (!pl->v[pl->order[k]].doc && !pl->v[pl->order[k]].present)
			blobs[n++] = pl->order[k];
	qsort_r(blobs, n, sizeof(size_t), cmp_size_desc, pl->v);
	int r = pool_run(blob_task, d, blobs, n, d->p->jobs, err);
	free(blobs);
	return r;
}

/* PUTs a document of the store under reference, byte for byte. */
static int doc_put(Dest *d, const Node *nd, const char *reference, KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = oci_blob_read(d->p->store, &nd->d, OCI_MANIFEST_MAX, &data, &len, err);

	if (r >= 0)
		r = registry_manifest_put(d->p->client, &d->repo, reference, nd->d.media_type, data,
					  len, NULL, err);
	if (r >= 0)
		d->res->manifests++;
	return r;
}

/* The documents the registry lacks, children first, by digest; then the root under the
 * destination's tag (or its digest). */
static int dest_push_docs(Dest *d, KilnError **err)
{
	Plan *pl = &d->plan;
	size_t root = pl->order[pl->n_order - 1];
	int r = 0;

	for (size_t k = 0; k + 1 < pl->n_order && r >= 0; k++) {
		const Node *nd = &pl->v[pl->order[k]];
		if (nd->doc && !nd->present)
			r = doc_put(d, nd, nd->d.digest, err);
	}
	if (r >= 0)
		r = doc_put(d, &pl->v[root], d->ref.tag[0] ? d->ref.tag : pl->v[root].d.digest,
			    err);
	return r;
}

/* Whether the destination's tag already names the root: then there is nothing to send. */
static int dest_tag_current(Dest *d, const char *digest, KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	RegistryDescriptor rd;
	int r;

	if (!d->ref.tag[0])
		return 0;
	r = registry_manifest_head(d->p->client, &d->repo, d->ref.tag, &rd, &e);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		if (err && !*err)
			*err = TAKE_PTR(e);
		return r;
	}
	return strcmp(rd.digest, digest) == 0;
}

/* Counts what happened to the blobs; the repository is known to have the ones it has now. */
static void dest_count(Dest *d)
{
	const Plan *pl = &d->plan;

	for (size_t i = 0; i < pl->n; i++) {
		const Node *nd = &pl->v[i];
		if (nd->doc)
			continue;
		if (nd->present || nd->how != PUSH_BLOB_NONE)
			known_add(d->p, d->p->blob_repos, nd->d.digest, d->repo_key);
		if (nd->present || nd->how == PUSH_BLOB_SKIPPED)
			d->res->skipped++;
		else if (nd->how == PUSH_BLOB_MOUNTED)
			d->res->mounted++;
		else if (nd->how == PUSH_BLOB_UPLOADED) {
			d->res->uploaded++;
			d->res->bytes += (uint64_t)nd->d.size;
		}
	}
}

static int dest_push(Dest *d, const OciDescriptor *root, KilnError **err)
{
	PushSession *p = d->p;
	Plan *pl = &d->plan;
	int r = plan_build(p->store, root, pl, err);

	if (r < 0)
		return r;
	if (known_has(p, p->root_repos, d->repo_key, root->digest)) {
		/* a tag of a repository this session pushed the image to: the tag only */
		plan_mark_present(pl, pl->order[pl->n_order - 1]);
		d->res->tag_only = true;
		r = doc_put(d, &pl->v[pl->order[pl->n_order - 1]],
			    d->ref.tag[0] ? d->ref.tag : root->digest, err);
	} else if ((r = dest_tag_current(d, root->digest, err)) == 1) {
		plan_mark_present(pl, pl->order[pl->n_order - 1]);
		d->res->tag_only = true;
		r = 0;
	} else if (r == 0) {
		r = dest_find_present(d, err);
		if (r >= 0)
			d->res->tag_only = pl->v[pl->order[pl->n_order - 1]].present;
		if (r >= 0)
			r = dest_push_blobs(d, err);
		if (r >= 0)
			r = dest_push_docs(d, err);
	}
	dest_count(d);
	if (r >= 0)
		known_add(p, p->root_repos, d->repo_key, root->digest);
	return r;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Parses dest; a digest in it must be the root's. */
static int dest_init(Dest *d, const OciDescriptor *root, const char *dest, KilnError **err)
{
	int r = ref_parse(dest, &d->ref, err);

	if (r < 0)
		return r;
	d->res->name = ref_string(&d->ref);
	if (d->ref.digest[0] && strcmp(d->ref.digest, root->digest) != 0)
		return kiln_error(err, EINVAL, "'%s' names digest %s, but the image is %s", dest,
				  d->ref.digest, root->digest);
	d->repo = (RegistryRepo){.domain = d->ref.domain, .repository = d->ref.path, .push = true};
	d->repo_key = xasprintf("%s/%s", d->ref.domain, d->ref.path);
	return 0;
}

int registry_push_image(PushSession *p, const OciDescriptor *root, const char *dest,
			PushResult *ret, KilnError **err)
{
	double t0 = now_seconds();
	KilnError *e = NULL;
	Dest d = {.p = p, .res = ret};
	int r;

	*ret = (PushResult){0};
	memcpy(ret->digest, root->digest, DIGEST_STRING_MAX);
	r = dest_init(&d, root, dest, &e);
	if (r >= 0)
		r = dest_push(&d, root, &e);
	ret->seconds = now_seconds() - t0;
	if (!ret->name)
		ret->name = xstrdup(dest);
	plan_done(&d.plan);
	free(d.repo_key);
	if (r >= 0)
		return 0;
	if (!e)
		kiln_error(&e, -r, "push to '%s' failed", dest);
	kiln_error(err, e->code, "%s", e->message);
	ret->error = e;
	return r;
}

void push_result_done(PushResult *r)
{
	free(r->name);
	kiln_error_free(r->error);
	*r = (PushResult){0};
}

void push_results_free(PushResult *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		push_result_done(&v[i]);
	free(v);
}

json_t *push_result_json(const PushResult *r)
{
	if (r->error)
		return json_pack("{s:s, s:s}", "name", r->name ? r->name : "", "error",
				 r->error->message ? r->error->message : "failed");
	return json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:f, s:b}", "name", r->name, "digest",
			 r->digest, "uploaded", (int)r->uploaded, "mounted", (int)r->mounted,
			 "skipped", (int)r->skipped, "manifests", (int)r->manifests, "bytes",
			 (json_int_t)r->bytes, "seconds", (double)(long)(r->seconds * 1000) / 1000,
			 "tag_only", r->tag_only);
}

/* ---------- --platform ---------- */

static int platform_missing(const Platform *want, const Platform *have, size_t n, KilnError **err)
{
	_cleanup_strbuf_ StrBuf list = {0};
	char pl[PLATFORM_STRING_MAX];

	for (size_t i = 0; i < n; i++) {
		platform_format(&have[i], pl, sizeof(pl));
		strbuf_adds(&list, i ? ", " : "");
		strbuf_adds(&list, pl);
	}
	platform_format(want, pl, sizeof(pl));
	return kiln_error(err, ENOENT, "platform %s is not in the image (it has: %s)", pl,
			  list.len ? list.s : "none");
}

int registry_push_select_platforms(Store *s, const OciDescriptor *root, const Platform *want,
				   size_t n_want, OciDescriptor *ret, KilnError **err)
{
	_cleanup_free_ Platform *have = NULL;
	OciDescriptor *v = xcalloc(n_want + 1, sizeof(OciDescriptor));
	size_t n_have = 0, n = 0;
	int r = oci_list_platforms(s, root, &have, &n_have, err);

	for (size_t i = 0; r >= 0 && i < n_want; i++) {
		size_t j = 0;
		while (j < n_have && !platform_equal(&have[j], &want[i]))
			j++;
		if (j == n_have) {
			r = platform_missing(&want[i], have, n_have, err);
			break;
		}
		OciImage *img = NULL;
		r = oci_image_resolve(s, root, &want[i], NULL, &img, err);
		if (r < 0)
			break;
		v[n] = (OciDescriptor){
		    .size = img->manifest_size, .has_platform = true, .platform = want[i]};
		memcpy(v[n].media_type, img->manifest_media_type, sizeof(v[n].media_type));
		memcpy(v[n].digest, img->manifest_digest, DIGEST_STRING_MAX);
		n++;
		oci_image_free(img);
	}
	if (r >= 0)
		r = oci_index_put(s, v, n, ret, err);
	oci_descriptors_free(v, n);
	return r;
}
