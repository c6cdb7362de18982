/* Base images from registries: FROM and COPY --from an image go to the store, then to a
 * registry, as --pull says (SPEC "FROM resolution order": an earlier stage, a --build-context,
 * the local store, the registry). Only what the build's platforms need is fetched; the store
 * name then points at the registry's root (layers/registry_pull.h). */
#include "builder/build-internal.h"

#include "builder/cli-registry.h"
#include "layers/registry_pull.h"

typedef struct BuildBase {
	char *stage, *ref;
	char platform[PLATFORM_STRING_MAX];
	char digest[DIGEST_STRING_MAX];	  /* what the reference resolved to (index or manifest) */
	char manifest[DIGEST_STRING_MAX]; /* the platform's manifest */
	const char *source;
} BuildBase;

struct BuildPull {
	pthread_mutex_t lock;	     /* bases, resolved, and store name updates */
	pthread_mutex_t client_lock; /* config, client */
	RegistryConfig *config;
	RegistryClient *client;
	BuildBase *bases;
	size_t n_bases;
	char **resolved; /* --pull=always: "REF DIGEST" of the tags asked this build */
};

int pull_policy_parse(const char *s)
{
	if (!s || strcmp(s, "always") == 0 || strcmp(s, "true") == 0)
		return PULL_ALWAYS;
	if (strcmp(s, "missing") == 0 || strcmp(s, "false") == 0)
		return PULL_MISSING;
	if (strcmp(s, "never") == 0)
		return PULL_NEVER;
	return -1;
}

static BuildPull *build_pull(Build *b)
{
	pthread_mutex_lock(&b->lock);
	if (!b->pull) {
		b->pull = xcalloc(1, sizeof(*b->pull));
		pthread_mutex_init(&b->pull->lock, NULL);
		pthread_mutex_init(&b->pull->client_lock, NULL);
	}
	BuildPull *bp = b->pull;
	pthread_mutex_unlock(&b->lock);
	return bp;
}

void build_pull_free(BuildPull *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_bases; i++) {
		free(p->bases[i].stage);
		free(p->bases[i].ref);
	}
	free(p->bases);
	strv_free(p->resolved);
	registry_client_free(p->client);
	registry_config_free(p->config);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->client_lock);
	free(p);
}

int build_registry_client(Build *b, RegistryClient **ret, KilnError **err)
{
	static const RegistryCliOptions none = {0};
	BuildPull *bp = build_pull(b);
	int r = 0;

	pthread_mutex_lock(&bp->client_lock);
	if (!bp->client)
		r = registry_cli_client(b->o->registry ? b->o->registry : &none, &bp->config,
					&bp->client, err);
	*ret = bp->client;
	pthread_mutex_unlock(&bp->client_lock);
	return r;
}

void build_base_record(Build *b, const Stage *st, const char *ref, const char *root_digest,
		       const OciImage *img, const char *source)
{
	BuildPull *bp = build_pull(b);
	BuildBase e = {.source = source};

	platform_format(&img->platform, e.platform, sizeof(e.platform));
	snprintf(e.digest, sizeof(e.digest), "%s", root_digest);
	memcpy(e.manifest, img->manifest_digest, DIGEST_STRING_MAX);
	e.stage = stage_label(st);
	e.ref = xstrdup(ref);
	pthread_mutex_lock(&bp->lock);
	for (size_t i = 0; i < bp->n_bases && e.ref; i++) {
		const BuildBase *o = &bp->bases[i];
		if (!strcmp(o->stage, e.stage) && !strcmp(o->ref, e.ref) &&
		    !strcmp(o->platform, e.platform) && !strcmp(o->manifest, e.manifest)) {
			free(e.stage);
			free(e.ref);
			e.ref = NULL;
		}
	}
	if (e.ref) {
		bp->bases = xrealloc(bp->bases, (bp->n_bases + 1) * sizeof(BuildBase));
		bp->bases[bp->n_bases++] = e;
	}
	pthread_mutex_unlock(&bp->lock);
}

json_t *build_bases_json(Build *b)
{
	BuildPull *bp = build_pull(b);
	json_t *a = json_array();

	pthread_mutex_lock(&bp->lock);
	for (size_t i = 0; i < bp->n_bases; i++) {
		const BuildBase *e = &bp->bases[i];
		json_t *o = json_object();
		json_object_set_new(o, "stage", json_string(e->stage));
		json_object_set_new(o, "ref", json_string(e->ref));
		json_object_set_new(o, "platform", json_string(e->platform));
		json_object_set_new(o, "digest", json_string(e->digest));
		json_object_set_new(o, "manifest", json_string(e->manifest));
		json_object_set_new(o, "source", json_string(e->source));
		json_array_append_new(a, o);
	}
	pthread_mutex_unlock(&bp->lock);
	return a;
}

/* ---------- one base image ---------- */

/* One FROM's pull: the registry is asked only when needed (p made on first use). */
typedef struct BasePull {
	Build *b;
	const Reference *ref;
	const char *text; /* as the Dockerfile wrote it */
	RegistryPull *p;
	bool from_registry; /* the root came from the registry */
} BasePull;

static int base_puller(BasePull *bp, KilnError **err)
{
	RegistryClient *c = NULL;
	int r;

	if (bp->p)
		return 0;
	r = build_registry_client(bp->b, &c, err);
	if (r >= 0)
		r = registry_pull_new(c, bp->b->store, bp->ref, &bp->p, err);
	return r;
}

static int base_fetch(void *userdata, const OciDescriptor *d, KilnError **err)
{
	BasePull *bp = userdata;
	int r = base_puller(bp, err);

	return r < 0 ? r : registry_pull_blob(bp->p, d, err);
}

/* --pull=always: the digest a tag resolved to earlier in this build, so every stage and
 * platform builds on the same image (and the registry is asked once). Under bp->lock. */
static const char *resolved_get(BuildPull *bp, const char *ref)
{
	size_t n = strlen(ref);

	for (size_t i = 0; bp->resolved && bp->resolved[i]; i++)
		if (strncmp(bp->resolved[i], ref, n) == 0 && bp->resolved[i][n] == ' ')
			return bp->resolved[i] + n + 1;
	return NULL;
}

static int root_from_registry(BasePull *bp, OciDescriptor *root, bool in_store_first,
			      KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	int r = base_puller(bp, &e);

	if (r >= 0)
		r = registry_pull_root(bp->p, root, &e);
	if (r >= 0) {
		bp->from_registry = true;
		return 0;
	}
	bool offline = r == -EHOSTUNREACH || r == -ECONNREFUSED || r == -ETIMEDOUT;
	_cleanup_free_ char *hint =
	    offline ? xasprintf(" (offline? load it with 'kiln load FILE' or pass "
				"--build-context %s=oci-archive:FILE)",
				bp->text)
		    : xstrdup("");
	if (in_store_first)
		return kiln_error(
		    err, -r, "image '%s' is not in the local store and pulling it failed: %s%s",
		    bp->text, e && e->message ? e->message : strerror(-r), hint);
	return kiln_error(err, -r, "pull '%s': %s", bp->text,
			  e && e->message ? e->message : strerror(-r));
}

/* The image's root descriptor, in the store: from the store, or the registry per --pull. */
static int base_root(BasePull *bp, OciDescriptor *root, KilnError **err)
{
	Build *b = bp->b;
	BuildPull *pl = build_pull(b);
	_cleanup_free_ char *canon = ref_string(bp->ref);
	_cleanup_error_ KilnError *e = NULL;
	bool ask = b->o->pull == PULL_ALWAYS && !bp->ref->digest[0];
	int r;

	pthread_mutex_lock(&pl->lock);
	const char *before = ask ? resolved_get(pl, canon) : NULL;
	if (before) {
		r = oci_descriptor_from_blob(b->store, before, root, err);
	} else if (!ask) {
		r = store_image_lookup(b->store, bp->ref, root, &e);
		if (r == -ENOENT && b->o->pull == PULL_NEVER)
			r = kiln_error(
			    err, ENOENT,
			    "image '%s' is not in the local store, and --pull=never "
			    "keeps kiln off the registries: load it with 'kiln load FILE' "
			    "(an archive from 'kiln pull -o', 'docker save' or 'skopeo "
			    "copy') or pass --build-context %s=oci-archive:FILE",
			    bp->text, bp->text);
		else if (r == -ENOENT)
			r = root_from_registry(bp, root, true, err);
		else if (r < 0 && err && !*err)
			*err = TAKE_PTR(e);
	} else {
		r = root_from_registry(bp, root, false, err);
		if (r >= 0)
			strv_consume(&pl->resolved, xasprintf("%s %s", canon, root->digest));
	}
	pthread_mutex_unlock(&pl->lock);
	return r;
}

/* The layers img needs, fetched several at once (with --pull=never they must be there). */
static int base_layers(BasePull *bp, OciImage *img, KilnError **err)
{
	Build *b = bp->b;
	bool missing = false;
	int r;

	for (size_t i = 0; i < img->n_layers; i++)
		missing |= !store_has_blob(b->store, img->layers[i].digest);
	if (missing && b->o->pull != PULL_NEVER) {
		r = base_puller(bp, err);
		if (r >= 0)
			r = registry_pull_blobs(bp->p, img->layers, img->n_layers,
						PULL_JOBS_DEFAULT, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "pull '%s'", bp->text);
	}
	r = oci_image_fetch_layers(b->store, img, NULL, err);
	if (r < 0 && b->o->pull == PULL_NEVER)
		kiln_error_wrap(
		    err, r, "image '%s' is incomplete in the local store (--pull=never)", bp->text);
	return r;
}

/* After a pull: the store name points at the root, listing img's platform as pulled. */
static int base_name(BasePull *bp, const OciDescriptor *root, const OciImage *img, KilnError **err)
{
	BuildPull *pl = build_pull(bp->b);
	char *manifests[] = {(char *)img->manifest_digest, NULL};
	char pl_s[PLATFORM_STRING_MAX];
	bool complete = false;
	int r;

	pthread_mutex_lock(&pl->lock);
	r = pull_root_complete(bp->b->store, root, &complete, err);
	if (r >= 0)
		r = registry_pull_tag(bp->b->store, bp->ref, root, complete, manifests, NULL, err);
	pthread_mutex_unlock(&pl->lock);
	if (r < 0)
		return r;
	PullStats st = registry_pull_stats(bp->p);
	platform_format(&img->platform, pl_s, sizeof(pl_s));
	if (st.fetched)
		progress_note(bp->b->progress, "pulled %s (%s): %s, %llu blobs (%llu bytes)",
			      bp->text, pl_s, root->digest, (unsigned long long)st.fetched,
			      (unsigned long long)st.fetched_bytes);
	else
		progress_note(bp->b->progress, "resolved %s (%s): %s, up to date in the store",
			      bp->text, pl_s, root->digest);
	return 0;
}

int base_image_pull(Build *b, const Stage *st, const char *text, const Platform *p, OciImage **ret,
		    KilnError **err)
{
	Reference ref;
	BasePull bp = {.b = b, .ref = &ref, .text = text};
	OciFetcher fetcher = {base_fetch, &bp};
	OciDescriptor root = {0};
	OciImage *img = NULL;
	int r = ref_parse(text, &ref, err);

	if (r < 0) {
		if (err && *err) /* the Dockerfile's error, not the command line's */
			(*err)->code = EINVAL;
		return -EINVAL;
	}
	r = base_root(&bp, &root, err);
	if (r >= 0) {
		r = oci_image_resolve(b->store, &root, p,
				      b->o->pull == PULL_NEVER ? NULL : &fetcher, &img, err);
		if (r < 0)
			kiln_error_wrap(err, r, "image '%s'", text);
	}
	if (r >= 0)
		r = base_layers(&bp, img, err);
	if (r >= 0 && bp.p)
		r = base_name(&bp, &root, img, err);
	if (r >= 0) {
		_cleanup_free_ char *canon = ref_string(&ref);
		build_base_record(b, st, canon, root.digest, img,
				  bp.from_registry || (bp.p && registry_pull_stats(bp.p).fetched)
				      ? "registry"
				      : "store");
		*ret = TAKE_PTR(img);
	}
	oci_image_free(img);
	registry_pull_free(bp.p);
	oci_descriptor_done(&root);
	return r;
}
