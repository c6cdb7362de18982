#include "builder/build-internal.h"
#include "builder/cli-push.h"
#include "layers/export_local.h"

double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void report_step(StageRun *r, const DfInstruction *in, double wall, bool run);

/* ---------- variables ---------- */

Var *vars_find(const VarList *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].key, key) == 0)
			return &l->v[i];
	return NULL;
}

void vars_set(VarList *l, const char *key, const char *value)
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

void vars_done(VarList *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].key);
		free(l->v[i].value);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

const char *lookup_global(void *ud, const char *name)
{
	Pass *p = ud;
	Var *v = vars_find(&p->global_args, name);

	return v ? v->value : NULL;
}

/* In a stage ENV wins over ARG, as the Dockerfile reference says. */
const char *lookup_stage(void *ud, const char *name)
{
	StageRun *r = ud;
	const char *e = image_conf_env_get(r->out->conf, name);

	if (e)
		return e;
	Var *v = vars_find(&r->args, name);
	return v ? v->value : NULL;
}

void mark_consumed(Build *b, const char *key)
{
	pthread_mutex_lock(&b->lock);
	bool seen = false;
	for (size_t i = 0; b->consumed_args && b->consumed_args[i]; i++)
		seen |= strcmp(b->consumed_args[i], key) == 0;
	if (!seen)
		strv_push(&b->consumed_args, key);
	pthread_mutex_unlock(&b->lock);
}

void set_platform_args(Pass *p, VarList *l)
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

int inst_error(const Build *b, const DfInstruction *in, int code, KilnError **err, const char *fmt,
	       ...)
{
	va_list ap;
	_cleanup_free_ char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	return kiln_error(err, code, "%s:%u: %s", b->df->filename, in->line, msg ? msg : "error");
}

int inst_wrap(const Build *b, const DfInstruction *in, int r, KilnError **err)
{
	return kiln_error_wrap(err, r, "%s:%u: %s", b->df->filename, in->line, in->keyword);
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
			 p, &p->expand_budget, &words, err);
	if (k < 0)
		return inst_wrap(b, in, k, err);
	if (!words || !words[0] || !*words[0])
		return inst_error(b, in, EINVAL, err, "FROM needs an image");
	*ret_platform = p->platform;
	const char *pf = df_instruction_flag(in, "platform");
	if (pf) {
		k = expand_word(pf, b->df->escape, lookup_global, p, &p->expand_budget, &plat, err);
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
void chain_start(StageRun *r, const char *base)
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
	k = image_lookup(b, r->st, image, &out->platform, &img, err);
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

/* Names a stage references ($NAME, ${NAME...}) or declares with ARG. A Dockerfile line may
 * hold a million references: the list keeps its capacity. */
static void collect_names(const char *text, StrvBuf *names)
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
		if (len)
			strvbuf_consume(names, xasprintf("%.*s", (int)len, n));
	}
}

static void collect_inst_names(const DfInstruction *in, StrvBuf *names)
{
	for (size_t i = 0; in->args && in->args[i]; i++)
		collect_names(in->args[i], names);
	for (size_t i = 0; in->flags && in->flags[i]; i++)
		collect_names(in->flags[i], names);
	for (size_t i = 0; i < in->n_kvs; i++) {
		collect_names(in->kvs[i].key, names);
		collect_names(in->kvs[i].raw_value, names);
		if (strcmp(in->keyword, "ARG") == 0)
			strvbuf_consume(names, xstrdup(in->kvs[i].key));
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
		if (expand_word(from, b->df->escape, lookup_global, p, NULL, &name, NULL) < 0 ||
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
 * share them. Fields are length-prefixed (cache_key_add) so arg values cannot run together. */
static void stage_key(Pass *p, Stage *st, const char *image, const Platform *plat, Stage **deps,
		      bool dynamic, char out[DIGEST_STRING_MAX])
{
	Build *b = p->b;
	_cleanup_(strvbuf_done) StrvBuf list = {0};
	char pl[PLATFORM_STRING_MAX], index[32];
	CacheKey k;

	cache_key_begin(&k, NULL);
	snprintf(index, sizeof(index), "stage %zu", st->index);
	platform_format(plat, pl, sizeof(pl));
	cache_key_add(&k, index);
	cache_key_add(&k, image);
	cache_key_add(&k, pl);
	platform_format(&p->platform, pl, sizeof(pl));
	cache_key_add(&k, dynamic ? pl : "");
	for (size_t i = st->first; i < st->end; i++)
		collect_inst_names(&b->df->insts[i], &list);
	char **names = list.v;
	size_t n = list.n;
	if (n > 1)
		qsort(names, n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && strcmp(names[i], names[i - 1]) == 0)
			continue;
		Var *g = vars_find(&p->global_args, names[i]);
		Var *a = vars_find(&b->build_args, names[i]);
		cache_key_add(&k, names[i]);
		cache_key_add(&k, g && g->value ? "set" : "unset");
		cache_key_add(&k, g && g->value ? g->value : "");
		cache_key_add(&k, a ? "set" : "unset");
		cache_key_add(&k, a ? a->value : "");
	}
	for (size_t i = 0; deps[i]; i++) {
		StageResult *d = p->res[deps[i]->index];
		cache_key_add(&k, d ? d->key : "");
	}
	cache_key_end(&k, out);
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

char *stage_label(const Stage *st)
{
	return st->name ? xstrdup(st->name) : xasprintf("stage-%zu", st->index);
}

void report_step(StageRun *r, const DfInstruction *in, double wall, bool run)
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

int stage_build(Pass *p, Stage *st, StageResult **ret, KilnError **err)
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
				int k = expand_word(kv->raw_value, df->escape, lookup_global, p,
						    &p->expand_budget, &v, err);
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
			k = oci_image_resolve(b->store, root, &o->platforms[0], NULL, &img, err);
			if (k >= 0)
				k = export_docker_archive(b->store, img, o->tags, out->dest, err);
			oci_image_free(img);
			break;
		}
		case OUTPUT_REGISTRY: /* build_push */
			break;
		case OUTPUT_LOCAL:
			for (size_t p = 0; p < o->n_platforms && k >= 0; p++) {
				char pl[96];
				platform_format(&o->platforms[p], pl, sizeof(pl));
				for (char *c = pl; *c; c++)
					if (*c == '/')
						*c = '_';
				k = export_local(b->store, &manifests[p], out->dest,
						 o->n_platforms == 1 ? NULL : pl,
						 build_max_layer_bytes(o),
						 build_max_layer_entries(o), err);
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
	_cleanup_strv_free_ char **canon = NULL;
	/* buildx writes the canonical names ("docker.io/library/app:1") */
	for (size_t i = 0; b->o->tags && b->o->tags[i]; i++) {
		char *c = NULL;
		if (ref_canonical_name(b->o->tags[i], &c, NULL) >= 0)
			strv_consume(&canon, c);
	}
	_cleanup_free_ char *names = canon ? strv_join(canon, ",") : NULL;

	json_object_set_new(m, "containerimage.digest", json_string(root->digest));
	json_object_set_new(m, "containerimage.descriptor", d);
	if (names)
		json_object_set_new(m, "image.name", json_string(names));
	if (b->pushed)
		push_metadata_add(m, b->pushed, b->n_pushed);
	char *s = json_dumps(m, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
	json_decref(m);
	int k = write_file_atomic_at(AT_FDCWD, b->o->metadata_file, s, strlen(s), 0644, err);
	if (k >= 0 && (k = owner_give_at(AT_FDCWD, b->o->metadata_file)) < 0)
		k = kiln_error_errno(err, -k, "chown '%s'", b->o->metadata_file);
	free(s);
	return k;
}

/* The destinations of the type=registry outputs that push: their names, else the -t tags (by
 * digest: each one's repository @ the digest), each once. */
static int push_destination_list(const BuildOptions *o, const char *digest, char ***ret,
				 KilnError **err)
{
	for (size_t i = 0; i < o->n_outputs; i++) {
		const OutputSpec *out = &o->outputs[i];
		if (out->type != OUTPUT_REGISTRY || !out->push)
			continue;
		char *const *names = out->names ? out->names : o->tags;
		for (size_t j = 0; names && names[j]; j++) {
			char *d = out->by_digest ? push_name_by_digest(names[j], digest, err)
						 : xstrdup(names[j]);
			if (!d)
				return -EINVAL;
			bool dup = false;
			for (size_t k = 0; *ret && (*ret)[k] && !dup; k++)
				dup = strcmp((*ret)[k], d) == 0;
			if (dup)
				free(d);
			else
				strv_consume(ret, d);
		}
	}
	return 0;
}

/* -o type=registry, --push: the image to every destination; their results go into the
 * metadata, and a failure into the build's status at its end. */
static int build_push(Build *b, const OciDescriptor *root, KilnError **err)
{
	_cleanup_strv_free_ char **dests = NULL;
	RegistryClient *client = NULL;
	int k = push_destination_list(b->o, root->digest, &dests, err);

	if (k < 0 || !dests)
		return k;
	k = build_registry_client(b, &client, err);
	if (k >= 0)
		k = push_destinations(client, b->store, NULL, root, dests, b->progress, &b->pushed,
				      &b->n_pushed, err);
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
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int k;

	k = build_dockerfile_read(o->context_dir, o->dockerfile, &data, &len, err);
	if (k < 0)
		return k;
	k = dockerfile_parse(o->dockerfile ? o->dockerfile : "Dockerfile", data, len, &b->df, err);
	if (k < 0)
		return k;
	k = build_context_open(o->context_dir, o->dockerfile, &b->ctx, err);
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
	if (store_warning(b->store))
		progress_note(b->progress, "warning: %s", store_warning(b->store));
	b->snapdir = xasprintf("%s/snapshots", store_path(b->store));
	k = mkdir_p(b->snapdir, 0700, err);
	/* ROOT/work/<pid>, held by a lock so other builds can tell a dead build's leftovers
	 * (which they remove here) from a running one's. */
	if (k >= 0)
		k = store_work_acquire(b->store, &b->work, err);
	if (k >= 0)
		prune_sweep_dead(b->store);
	if (k >= 0) {
		_cleanup_free_ char *map = userns_map_text();
		k = map ? prune_snapshots_remapped(b->store, map, err)
			: kiln_error(err, EIO, "read this process's id map");
	}
	if (k >= 0)
		k = build_cache_open(store_path(b->store), &b->cache, err);
	if (k >= 0)
		k = limits_cgroup_open(&o->limits, &b->cgroup, err);
	return k;
}

/* Writes the resolv.conf of private networks into the work dir; 1 when private networks work. */
static int network_prepare(Build *b, KilnError **err)
{
	_cleanup_free_ char *host = NULL, *text = NULL;
	int k = network_probe(err);

	if (k < 0)
		return -1;
	if (read_file_at(AT_FDCWD, "/etc/resolv.conf", 1 << 20, &host, NULL, NULL) < 0)
		host = NULL;
	text = network_resolv_conf(host);
	b->resolv_private = xasprintf("%s/resolv.conf", b->work);
	k = write_file_atomic_at(AT_FDCWD, b->resolv_private, text, strlen(text), 0644, err);
	return k < 0 ? -1 : 1;
}

NetworkMode build_network(Build *b, NetworkMode asked)
{
	int state;

	if (asked != NETWORK_PRIVATE)
		return asked;
	pthread_mutex_lock(&b->lock);
	if (b->net_state == 0) {
		_cleanup_error_ KilnError *e = NULL;
		b->net_state = network_prepare(b, &e);
		if (b->net_state < 0)
			progress_note(b->progress,
				      "warning: RUN steps use the host network (private network "
				      "unavailable: %s)",
				      e && e->message ? e->message : "unknown error");
	}
	state = b->net_state;
	pthread_mutex_unlock(&b->lock);
	return state > 0 ? NETWORK_PRIVATE : NETWORK_HOST;
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
	free(b->resolv_private);
	limits_cgroup_free(b->cgroup);
	push_results_free(b->pushed, b->n_pushed);
	build_pull_free(b->pull);
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
	int k;

	p->expand_budget = EXPAND_MAX_TOTAL;
	k = global_args_eval(p, err);
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
	json_object_set_new(rep, "bases", build_bases_json(b));
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
	if (k >= 0 && (k = owner_give_at(AT_FDCWD, b->o->report_file)) < 0)
		k = kiln_error_errno(err, -k, "chown '%s'", b->o->report_file);
	free(s);
	return k;
}

/* --cache-to: mode=max exports every step of this build; mode=min only the steps whose layers are
 * in the result (the target stage and the stages it is FROM, transitively). */
static int export_cache(Build *b, Stage *target, KilnError **err)
{
	bool *in_result = xcalloc(b->n_stages, sizeof(bool));
	_cleanup_strv_free_ char **all = NULL, **result = NULL;
	int k = 0;

	for (Stage *st = target; st;) {
		in_result[st->index] = true;
		const char *text = st->from->args && st->from->args[0] ? st->from->args[0] : "";
		_cleanup_free_ char *copy = xstrdup(text);
		char *save = NULL, *image = strtok_r(copy, " \t\n", &save);
		Stage *base = image ? stage_find(b, image) : NULL;
		st = base && base->index < st->index ? base : NULL;
	}
	for (size_t i = 0; i < b->n_steps; i++) {
		strv_push(&all, b->steps[i].key);
		if (in_result[b->steps[i].stage_index])
			strv_push(&result, b->steps[i].key);
	}
	free(in_result);
	RegistryClient *client = NULL;
	if (cache_spec_list_uses_registry(&b->o->cache_to))
		k = build_registry_client(b, &client, err);
	for (size_t i = 0; k >= 0 && i < b->o->cache_to.n; i++) {
		const CacheSpec *to = &b->o->cache_to.v[i];
		k = cache_export_target(b->cache, b->store, client, to, to->max ? all : result,
					&b->o->cache_from, b->progress, err);
	}
	return k;
}

/* --cache-from: every source, a registry one through the build's client; a source that cannot be
 * read is a warning (cache_import_sources), a client that cannot be made too. */
static void cache_import(Build *b)
{
	RegistryClient *client = NULL;

	if (cache_spec_list_uses_registry(&b->o->cache_from)) {
		_cleanup_error_ KilnError *e = NULL;
		if (build_registry_client(b, &client, &e) < 0)
			progress_note(b->progress, "warning: --cache-from: %s", e->message);
	}
	cache_import_sources(b->cache, b->store, client, &b->o->cache_from, b->progress);
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
	if (k >= 0)
		cache_import(&b);
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
	for (size_t i = 0; k >= 0 && o->tags && o->tags[i]; i++)
		k = store_tag_set(b.store, o->tags[i], &root, NULL, err);
	if (k >= 0)
		k = write_outputs(&b, &root, manifests, err);
	if (k >= 0)
		k = build_push(&b, &root, err);
	if (k >= 0 && o->metadata_file)
		k = write_metadata(&b, &root, err);
	if (k >= 0 && o->cache_to.n > 0)
		k = export_cache(&b, target, err);
	if (k >= 0 && o->report_file)
		k = write_report(&b, now_seconds() - t0, err);
	if (k >= 0)
		k = push_results_check(b.pushed, b.n_pushed, err);
	if (k >= 0) {
		warn_unused_args(&b);
		progress_note(b.progress, "writing image %s done", root.digest);
		for (size_t i = 0; o->tags && o->tags[i]; i++) {
			_cleanup_free_ char *name = NULL;
			if (ref_canonical_name(o->tags[i], &name, NULL) >= 0)
				progress_note(b.progress, "naming to %s done", name);
		}
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
	/* After the progress display is finished, so a live tty block cannot overwrite it. */
	if (k >= 0)
		printf("%s\n", root.digest);
	return k < 0 ? k : 0;
}
