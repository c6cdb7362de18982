#include "cache-io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cache-registry.h"
#include "common/cleanup.h"
#include "common/fdutil.h"

/* The keys of one value, before they are checked against each other. */
typedef struct SpecKeys {
	const char *type, *dir, *ref, *mode, *ignore_error;
} SpecKeys;

static int spec_bool(const char *opt, const char *key, const char *v, bool *ret, KilnError **err)
{
	if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
		*ret = strcmp(v, "true") == 0;
		return 0;
	}
	return kiln_error(err, KILN_EUSAGE, "%s %s is true or false, not '%s'", opt, key, v);
}

/* One KEY=VALUE of a --cache-from (to false) or --cache-to (to true) value. */
static int spec_key(char *kv, bool to, SpecKeys *k, KilnError **err)
{
	const char *opt = to ? "--cache-to" : "--cache-from";
	char *v = strchr(kv, '=');
	bool b;

	if (!v)
		return kiln_error(err, KILN_EUSAGE, "%s: '%s' is not KEY=VALUE", opt, kv);
	*v++ = '\0';
	if (strcmp(kv, "type") == 0)
		k->type = v;
	else if (strcmp(kv, to ? "dest" : "src") == 0)
		k->dir = v;
	else if (strcmp(kv, "ref") == 0)
		k->ref = v;
	else if (strcmp(kv, "mode") == 0)
		k->mode = v;
	else if (to && strcmp(kv, "ignore-error") == 0)
		k->ignore_error = v;
	else if (to && (strcmp(kv, "image-manifest") == 0 || strcmp(kv, "oci-mediatypes") == 0)) {
		/* What buildx needs them for is what kiln always writes. */
		if (spec_bool(opt, kv, v, &b, err) < 0)
			return -KILN_EUSAGE;
		if (!b)
			return kiln_error(err, KILN_EUSAGE,
					  "%s %s=false: kiln writes its registry cache as an OCI "
					  "image manifest only",
					  opt, kv);
	} else
		return kiln_error(err, KILN_EUSAGE, "%s: unknown key '%s'", opt, kv);
	return 0;
}

static int spec_ref(const char *s, bool to, Reference *ret, KilnError **err)
{
	const char *opt = to ? "--cache-to" : "--cache-from";
	int r = ref_parse(s, ret, err);

	if (r < 0) {
		r = kiln_error_wrap(err, KILN_EUSAGE, "%s ref", opt);
		(*err)->code = KILN_EUSAGE;
		return r;
	}
	if (to && ret->digest[0])
		return kiln_error(err, KILN_EUSAGE, "%s ref '%s' names a digest: it needs a tag",
				  opt, s);
	return 0;
}

static int spec_check(const SpecKeys *k, bool to, CacheSpec *ret, KilnError **err)
{
	const char *opt = to ? "--cache-to" : "--cache-from", *dkey = to ? "dest" : "src";

	if (!k->type)
		return kiln_error(err, KILN_EUSAGE, "%s needs type=local or type=registry", opt);
	if (k->mode && strcmp(k->mode, "min") != 0 && strcmp(k->mode, "max") != 0)
		return kiln_error(err, KILN_EUSAGE, "%s mode is min or max, not '%s'", opt,
				  k->mode);
	ret->max = to && k->mode && strcmp(k->mode, "max") == 0;
	if (k->ignore_error &&
	    spec_bool(opt, "ignore-error", k->ignore_error, &ret->ignore_error, err) < 0)
		return -KILN_EUSAGE;
	if (strcmp(k->type, "local") == 0) {
		if (!k->dir || k->ref)
			return kiln_error(err, KILN_EUSAGE, "%s type=local takes %s=DIR (no ref)",
					  opt, dkey);
		ret->type = CACHE_SPEC_LOCAL;
		ret->dir = xstrdup(k->dir);
		return 0;
	}
	if (strcmp(k->type, "registry") == 0) {
		if (!k->ref || k->dir)
			return kiln_error(err, KILN_EUSAGE,
					  "%s type=registry takes ref=REF (no %s)", opt, dkey);
		ret->type = CACHE_SPEC_REGISTRY;
		return spec_ref(k->ref, to, &ret->ref, err);
	}
	return kiln_error(err, KILN_EUSAGE, "%s type '%s' is not supported (local or registry)",
			  opt, k->type);
}

int cache_spec_list_add(CacheSpecList *l, const char *s, bool to, KilnError **err)
{
	_cleanup_free_ char *copy = xstrdup(s);
	CacheSpec spec = {0};
	SpecKeys k = {0};
	char *save = NULL;
	int r = 0;

	if (!strchr(s, '=')) {
		/* buildx: a value without KEY=VALUE is a registry ref ("user/app:cache"). */
		spec.type = CACHE_SPEC_REGISTRY;
		r = spec_ref(s, to, &spec.ref, err);
	} else {
		for (char *kv = strtok_r(copy, ",", &save); r >= 0 && kv;
		     kv = strtok_r(NULL, ",", &save))
			r = spec_key(kv, to, &k, err);
		if (r >= 0)
			r = spec_check(&k, to, &spec, err);
	}
	if (r < 0) {
		free(spec.dir);
		return r;
	}
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(CacheSpec));
	l->v[l->n++] = spec;
	return 0;
}

void cache_spec_list_done(CacheSpecList *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].dir);
	free(l->v);
	*l = (CacheSpecList){0};
}

bool cache_spec_list_uses_registry(const CacheSpecList *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].type == CACHE_SPEC_REGISTRY)
			return true;
	return false;
}

/* The directory or the canonical reference, for messages. */
static char *spec_name(const CacheSpec *sp)
{
	return sp->type == CACHE_SPEC_LOCAL ? xstrdup(sp->dir) : ref_string(&sp->ref);
}

static int import_one(BuildCache *c, Store *s, RegistryClient *rc, const CacheSpec *sp,
		      size_t *ret_n, KilnError **err)
{
	if (sp->type == CACHE_SPEC_LOCAL)
		return build_cache_import(c, s, sp->dir, ret_n, err);
	if (!rc)
		return kiln_error(err, EINVAL, "no registry client");
	return cache_registry_import(rc, c, s, &sp->ref, ret_n, err);
}

void cache_import_sources(BuildCache *c, Store *s, RegistryClient *rc, const CacheSpecList *from,
			  Progress *p)
{
	for (size_t i = 0; i < from->n; i++) {
		const CacheSpec *sp = &from->v[i];
		_cleanup_error_ KilnError *e = NULL;
		_cleanup_free_ char *name = spec_name(sp);
		size_t n = 0;

		if (import_one(c, s, rc, sp, &n, &e) < 0)
			progress_note(
			    p, "warning: cache import from '%s' failed, building without it: %s",
			    name, e ? e->message : "unknown error");
		else if (n == 0)
			progress_note(p, "warning: cache '%s' holds no entries", name);
		else
			progress_note(p, "importing cache from %s: %zu entries%s", name, n,
				      sp->type == CACHE_SPEC_REGISTRY
					  ? " (layers fetched when a step hits them)"
					  : "");
	}
}

/* A --cache-from source in another repository of to's registry: blobs can be mounted from it. */
static const char *mount_source(const CacheSpec *to, const CacheSpecList *from)
{
	for (size_t i = 0; i < from->n; i++) {
		const Reference *f = &from->v[i].ref;
		if (from->v[i].type == CACHE_SPEC_REGISTRY &&
		    strcmp(f->domain, to->ref.domain) == 0 && strcmp(f->path, to->ref.path) != 0)
			return f->path;
	}
	return NULL;
}

static int export_one(const CacheDoc *doc, Store *s, RegistryClient *rc, const CacheSpec *to,
		      const CacheSpecList *from, Progress *p, const char *name, KilnError **err)
{
	const char *mode = to->max ? "max" : "min";
	CacheRegistryPush st;
	int r;

	if (to->type == CACHE_SPEC_LOCAL) {
		r = cache_doc_write_dir(doc, s, to->dir, err);
		if (r >= 0)
			progress_note(p, "exporting cache to %s: %zu entries (mode=%s)", name,
				      doc->n, mode);
		return r;
	}
	if (!rc)
		return kiln_error(err, EINVAL, "no registry client");
	r = cache_registry_export(rc, s, doc, &to->ref, mount_source(to, from), &st, err);
	if (r >= 0)
		progress_note(p,
			      "exporting cache to %s: %zu entries (mode=%s), blobs: %zu uploaded, "
			      "%zu mounted, %zu already there; manifest %s",
			      name, doc->n, mode, st.uploaded, st.mounted, st.skipped, st.digest);
	return r;
}

int cache_export_target(BuildCache *c, Store *s, RegistryClient *rc, const CacheSpec *to,
			char *const *keys, const CacheSpecList *from, Progress *p, KilnError **err)
{
	_cleanup_free_ char *name = spec_name(to);
	_cleanup_error_ KilnError *e = NULL;
	CacheDoc doc = {0};
	int r;

	cache_doc_collect(c, keys, &doc);
	r = export_one(&doc, s, rc, to, from, p, name, &e);
	cache_doc_done(&doc);
	if (r >= 0)
		return 0;
	if (to->ignore_error) {
		progress_note(p, "warning: cache export to '%s' failed (ignore-error=true): %s",
			      name, e ? e->message : "unknown error");
		return 0;
	}
	return kiln_error(err, e ? e->code : EIO, "cache export to '%s': %s", name,
			  e ? e->message : "unknown error");
}
