#include "cli-push.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli-registry.h"
#include "builder/cli.h"
#include "builder/prune.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/owner.h"
#include "common/strbuf.h"
#include "layers/reference.h"

/* ---------- results ---------- */

char *push_result_line(const PushResult *r)
{
	char b[32];

	if (r->error)
		return xasprintf("FAILED %s: %s", r->name,
				 r->error->message ? r->error->message : "failed");
	prune_size_format(r->bytes, b);
	return xasprintf("pushed %s %s%s: uploaded %u, mounted %u, skipped %u blobs (%s), %u "
			 "manifest%s, %.2f s",
			 r->name, r->digest, r->tag_only ? ", tag only" : "", r->uploaded,
			 r->mounted, r->skipped, b, r->manifests, r->manifests == 1 ? "" : "s",
			 r->seconds);
}

int push_destinations(RegistryClient *c, Store *s, const PushOptions *o, const OciDescriptor *root,
		      char *const *dests, Progress *progress, PushResult **ret, size_t *ret_n,
		      KilnError **err)
{
	_cleanup_(registry_push_session_freep) PushSession *p = NULL;
	size_t n = strv_length(dests);
	int r = registry_push_session_new(c, s, o, &p, err);

	if (r < 0)
		return r;
	PushResult *v = xcalloc(n + 1, sizeof(PushResult));
	for (size_t i = 0; i < n; i++) {
		_cleanup_error_ KilnError *e = NULL;
		_cleanup_free_ char *what = xasprintf("pushing %s", dests[i]);
		unsigned step = progress ? progress_step_begin(progress, what) : 0;
		registry_push_image(p, root, dests[i], &v[i], &e);
		if (progress)
			progress_step_end(progress, step, !v[i].error, false,
					  v[i].error ? v[i].error->message : NULL);
		_cleanup_free_ char *line = push_result_line(&v[i]);
		if (progress)
			progress_note(progress, "%s", line);
		else
			fprintf(stderr, "kiln push: %s\n", line);
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int push_results_check(const PushResult *v, size_t n, KilnError **err)
{
	size_t failed = 0;

	for (size_t i = 0; i < n; i++)
		failed += v[i].error != NULL;
	if (!failed)
		return 0;
	return kiln_error(err, KILN_EFAIL, "push: %zu of %zu destination%s failed (see above)",
			  failed, n, n == 1 ? "" : "s");
}

static bool names_have(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; p && *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] != 0))
		if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == 0))
			return true;
	return false;
}

void push_metadata_add(json_t *m, const PushResult *v, size_t n)
{
	const char *have = json_string_value(json_object_get(m, "image.name"));
	_cleanup_strbuf_ StrBuf names = {0};
	json_t *arr = json_array();

	strbuf_adds(&names, have ? have : "");
	for (size_t i = 0; i < n; i++) {
		json_array_append_new(arr, push_result_json(&v[i]));
		if (v[i].error || names_have(names.s, v[i].name))
			continue;
		strbuf_adds(&names, names.len ? "," : "");
		strbuf_adds(&names, v[i].name);
	}
	if (names.len)
		json_object_set_new(m, "image.name", json_string(names.s));
	json_object_set_new(m, "kiln.push", arr);
}

char *push_name_by_digest(const char *name, const char *digest, KilnError **err)
{
	Reference ref;

	if (ref_parse(name, &ref, err) < 0)
		return NULL;
	ref.tag[0] = '\0';
	snprintf(ref.digest, sizeof(ref.digest), "%s", digest);
	return ref_string(&ref);
}

int push_outputs_check(const OutputSpec *v, size_t n, char *const *tags, KilnError **err)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].type == OUTPUT_REGISTRY && v[i].push && !v[i].names && !tags)
			return kiln_error(err, KILN_EUSAGE,
					  "type=registry (--push) needs -t NAME or name=REF");
	return 0;
}

/* ---------- kiln push ---------- */

enum {
	OPT_PUSH_ROOT = 2200,
	OPT_PUSH_PLATFORM,
	OPT_PUSH_MOUNT_FROM,
	OPT_PUSH_METADATA,
	OPT_PUSH_JOBS,
	OPT_PUSH_CHUNK_SIZE,
};

#define PUSH_USAGE                                                                                 \
	"usage: kiln push [--platform LIST] [--mount-from REPO] [--metadata-file F] [--jobs N] "   \
	"[--tls-ca FILE] [--root DIR] SOURCE DEST..."

typedef struct PushArgs {
	const char *root;
	const char *metadata;
	Platform *platforms;
	size_t n_platforms;
	PushOptions po;
	RegistryCliOptions ro;
} PushArgs;

static void push_args_done(PushArgs *a)
{
	free(a->platforms);
	registry_cli_options_done(&a->ro);
}

static int push_parse_option(int c, const char *arg, PushArgs *a, KilnError **err)
{
	char *end;
	long jobs;

	switch (c) {
	case OPT_PUSH_ROOT:
		a->root = arg;
		return 0;
	case OPT_PUSH_PLATFORM:
		free(a->platforms);
		a->platforms = NULL;
		return parse_platforms(arg, &a->platforms, &a->n_platforms, err);
	case OPT_PUSH_MOUNT_FROM:
		a->po.mount_from = arg;
		return 0;
	case OPT_PUSH_METADATA:
		a->metadata = arg;
		return 0;
	case OPT_PUSH_JOBS:
		jobs = strtol(arg, &end, 10);
		if (!*arg || *end || jobs < 1 || jobs > PUSH_JOBS_MAX)
			return kiln_error(err, KILN_EUSAGE, "--jobs takes a number from 1 to %d",
					  PUSH_JOBS_MAX);
		a->po.jobs = (unsigned)jobs;
		return 0;
	case OPT_PUSH_CHUNK_SIZE:
		a->ro.chunk_size = strtoull(arg, &end, 10);
		if (!*arg || *end || a->ro.chunk_size < 1024)
			return kiln_error(err, KILN_EUSAGE, "--chunk-size takes bytes >= 1024");
		return 0;
	default:
		if (registry_cli_option(c, arg, &a->ro))
			return 0;
		return kiln_error(err, KILN_EUSAGE, PUSH_USAGE);
	}
}

static int push_parse(int argc, char **argv, PushArgs *a, KilnError **err)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, OPT_PUSH_ROOT},
	    {"platform", required_argument, NULL, OPT_PUSH_PLATFORM},
	    {"mount-from", required_argument, NULL, OPT_PUSH_MOUNT_FROM},
	    {"metadata-file", required_argument, NULL, OPT_PUSH_METADATA},
	    {"jobs", required_argument, NULL, OPT_PUSH_JOBS},
	    {"chunk-size", required_argument, NULL, OPT_PUSH_CHUNK_SIZE}, /* hidden: tests */
	    REGISTRY_CLI_OPTIONS,
	    {0},
	};
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
		if ((r = push_parse_option(c, optarg, a, err)) < 0)
			return r;
	if (argc - optind < 2)
		return kiln_error(err, KILN_EUSAGE, PUSH_USAGE);
	for (int i = optind + 1; i < argc; i++) {
		Reference ref;
		if ((r = ref_parse(argv[i], &ref, err)) < 0)
			return kiln_error_wrap(err, KILN_EUSAGE, "DEST");
	}
	return 0;
}

static int push_metadata_write(const char *path, const OciDescriptor *root, const PushResult *v,
			       size_t n, KilnError **err)
{
	json_t *m = json_object();

	json_object_set_new(m, "containerimage.digest", json_string(root->digest));
	json_object_set_new(m, "containerimage.descriptor",
			    json_pack("{s:s, s:s, s:I}", "mediaType", root->media_type, "digest",
				      root->digest, "size", (json_int_t)root->size));
	push_metadata_add(m, v, n);
	char *s = json_dumps(m, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
	json_decref(m);
	int r = write_file_atomic_at(AT_FDCWD, path, s, strlen(s), 0644, err);
	if (r >= 0 && (r = owner_give_at(AT_FDCWD, path)) < 0)
		r = kiln_error_errno(err, -r, "chown '%s'", path);
	free(s);
	return r;
}

/* The image to push: SOURCE, or with --platform a new index of those platforms. */
static int push_source(Store *s, const PushArgs *a, const char *src, OciDescriptor *ret,
		       KilnError **err)
{
	OciDescriptor d = {0};
	int r = cli_image_source(s, src, &d, err);

	if (r < 0 || !a->platforms) {
		*ret = d;
		return r;
	}
	r = registry_push_select_platforms(s, &d, a->platforms, a->n_platforms, ret, err);
	oci_descriptor_done(&d);
	return r;
}

/* In the store (entered): SOURCE to every DEST. */
static int push_run(Store *s, const PushArgs *a, const char *src, char *const *dests,
		    KilnError **err)
{
	_cleanup_(registry_config_freep) RegistryConfig *cfg = NULL;
	_cleanup_(registry_client_freep) RegistryClient *client = NULL;
	OciDescriptor root = {0};
	PushResult *v = NULL;
	size_t n = 0, ok = 0;
	int r = push_source(s, a, src, &root, err);

	if (r >= 0)
		r = registry_cli_client(&a->ro, &cfg, &client, err);
	if (r >= 0)
		r = push_destinations(client, s, &a->po, &root, dests, NULL, &v, &n, err);
	if (r >= 0 && a->metadata)
		r = push_metadata_write(a->metadata, &root, v, n, err);
	for (size_t i = 0; r >= 0 && i < n; i++)
		ok += v[i].error == NULL;
	if (ok)
		printf("%s\n", root.digest);
	if (r >= 0)
		r = push_results_check(v, n, err);
	push_results_free(v, n);
	oci_descriptor_done(&root);
	return r;
}

int cmd_push(int argc, char **argv, KilnError **err)
{
	_cleanup_(push_args_done) PushArgs a = {0};
	_cleanup_(store_freep) Store *store = NULL;
	char tmpl[] = "/tmp/kiln-push-XXXXXX";
	IdMapInfo idmap;
	int r = push_parse(argc, argv, &a, err);

	if (r < 0)
		return r;
	const char *src = argv[optind];
	char *const *dests = argv + optind + 1;
	/* A file source is imported into a scratch store unless a root was chosen: a push leaves
	 * the user's store alone, as merge and inspect do. */
	bool scratch = cli_looks_like_path(src) && !cli_root_chosen(a.root);
	r = store_enter_scratch(scratch, a.root, tmpl, &idmap, &store, err);
	if (r >= 0)
		r = push_run(store, &a, src, dests, err);
	if (scratch)
		rm_rf_at(AT_FDCWD, tmpl, NULL);
	return r;
}
