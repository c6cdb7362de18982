#include "cli-pull.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/build.h"
#include "builder/cli-registry.h"
#include "builder/cli.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/export.h"
#include "layers/reference.h"
#include "layers/registry_pull.h"

enum {
	OPT_PULL_ROOT = 2200,
	OPT_PULL_PLATFORM,
	OPT_PULL_ALL,
	OPT_PULL_JOBS,
};

#define PULL_USAGE                                                                                 \
	"usage: kiln pull [--platform LIST | --all-platforms] [-o type=oci,dest=FILE] [--jobs N] " \
	"[--root DIR] [-q] [--tls-ca FILE] [--registry-mirror DOMAIN=MIRROR] REF"

typedef struct PullArgs {
	const char *root;
	Platform *platforms; /* NULL: the host's, unless all */
	size_t n_platforms;
	bool all;
	bool has_output;
	OutputSpec output;
	unsigned jobs;
	bool quiet;
	RegistryCliOptions ro;
	Reference ref;
} PullArgs;

static void pull_args_done(PullArgs *a)
{
	free(a->platforms);
	if (a->has_output)
		output_spec_done(&a->output);
	registry_cli_options_done(&a->ro);
}

static int pull_option(int c, const char *arg, PullArgs *a, KilnError **err)
{
	char *end;

	switch (c) {
	case OPT_PULL_ROOT:
		a->root = arg;
		return 0;
	case OPT_PULL_PLATFORM:
		free(a->platforms);
		a->platforms = NULL;
		return parse_platforms(arg, &a->platforms, &a->n_platforms, err);
	case OPT_PULL_ALL:
		a->all = true;
		return 0;
	case OPT_PULL_JOBS: {
		unsigned long v = strtoul(arg, &end, 10);
		if (!*arg || *end || v < 1 || v > PULL_JOBS_MAX)
			return kiln_error(err, KILN_EUSAGE, "--jobs takes a number from 1 to %d",
					  PULL_JOBS_MAX);
		a->jobs = (unsigned)v;
		return 0;
	}
	case 'q':
		a->quiet = true;
		return 0;
	case 'o': {
		if (a->has_output)
			return kiln_error(err, KILN_EUSAGE, "kiln pull takes one -o");
		int r = output_spec_parse(arg, &a->output, err);
		if (r < 0)
			return r;
		a->has_output = true;
		if (a->output.type == OUTPUT_LOCAL)
			return kiln_error(
			    err, KILN_EUSAGE,
			    "kiln pull writes type=oci or type=docker, not type=local");
		return 0;
	}
	default:
		if (registry_cli_option(c, arg, &a->ro))
			return 0;
		return kiln_error(err, KILN_EUSAGE, PULL_USAGE);
	}
}

static int pull_parse(int argc, char **argv, PullArgs *a, KilnError **err)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, OPT_PULL_ROOT},
	    {"platform", required_argument, NULL, OPT_PULL_PLATFORM},
	    {"all-platforms", no_argument, NULL, OPT_PULL_ALL},
	    {"jobs", required_argument, NULL, OPT_PULL_JOBS},
	    {"output", required_argument, NULL, 'o'},
	    {"quiet", no_argument, NULL, 'q'},
	    REGISTRY_CLI_OPTIONS,
	    {0},
	};
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:q", opts, NULL)) != -1) {
		r = pull_option(c, optarg, a, err);
		if (r < 0)
			return r;
	}
	if (optind != argc - 1)
		return kiln_error(err, KILN_EUSAGE, PULL_USAGE);
	if (a->all && a->platforms)
		return kiln_error(err, KILN_EUSAGE,
				  "--platform and --all-platforms exclude each other");
	r = ref_parse(argv[optind], &a->ref, err);
	if (r < 0) {
		(*err)->code = KILN_EUSAGE;
		return r;
	}
	if (!a->all && !a->platforms) {
		a->platforms = xcalloc(1, sizeof(Platform));
		platform_host(a->platforms);
		a->n_platforms = 1;
	}
	return 0;
}

static void pull_progress(void *userdata, PullEventKind kind, const OciDescriptor *d)
{
	if (*(bool *)userdata)
		return;
	fprintf(stderr, "%s %s (%lld bytes)\n", kind == PULL_BLOB_FETCHED ? "pulled " : "present",
		d->digest, (long long)d->size);
}

/* What -o writes: with --all-platforms (or an image that is one manifest) the root as the
 * registry has it, byte for byte; else the platform's manifest (as `skopeo copy` of one
 * platform does), or an index of the platforms asked for (a new document: its digest is not
 * the registry's). */
static int pull_export(Store *s, const OciDescriptor *root, const PullResult *res,
		       const PullArgs *a, KilnError **err)
{
	const OutputSpec *out = &a->output;
	Reference named = a->ref;
	named.digest[0] = '\0';
	_cleanup_free_ char *name = a->ref.tag[0] ? ref_string(&named) : NULL;
	OciDescriptor d = {0};
	int r = 0;

	if (out->type == OUTPUT_DOCKER) {
		if (res->n_images != 1)
			return kiln_error(err, KILN_EUSAGE,
					  "type=docker holds one platform; pass --platform");
		char *tags[] = {name, NULL};
		return export_docker_archive(s, res->images[0], name ? tags : NULL, out->dest, err);
	}
	if (a->all || !oci_media_type_is_index(root->media_type)) {
		d = *root;
		d.annotations = NULL;
	} else if (res->n_images == 1) {
		const OciImage *img = res->images[0];
		d = (OciDescriptor){
		    .size = img->manifest_size, .has_platform = true, .platform = img->platform};
		memcpy(d.digest, img->manifest_digest, DIGEST_STRING_MAX);
		snprintf(d.media_type, sizeof(d.media_type), "%s", img->manifest_media_type);
	} else {
		OciDescriptor *m = xcalloc(res->n_images, sizeof(*m));
		for (size_t i = 0; i < res->n_images; i++) {
			const OciImage *img = res->images[i];
			m[i] = (OciDescriptor){.size = img->manifest_size,
					       .has_platform = true,
					       .platform = img->platform};
			memcpy(m[i].digest, img->manifest_digest, DIGEST_STRING_MAX);
			snprintf(m[i].media_type, sizeof(m[i].media_type), "%s",
				 img->manifest_media_type);
		}
		r = oci_index_put(s, m, res->n_images, &d, err);
		free(m);
		if (r >= 0 && !a->quiet)
			fprintf(stderr,
				"note: the archive's index lists the %zu platforms pulled: a new "
				"index %s, not the registry's %s\n",
				res->n_images, d.digest, root->digest);
	}
	if (r >= 0)
		r = out->tar ? export_oci_archive(s, &d, name, out->dest, err)
			     : export_oci_dir(s, &d, name, out->dest, err);
	return r;
}

/* Prints what was pulled and names it. */
static int pull_finish(Store *s, RegistryPull *p, const OciDescriptor *root, const PullResult *res,
		       const PullArgs *a, KilnError **err)
{
	_cleanup_strv_free_ char **manifests = NULL;
	_cleanup_free_ char *familiar = ref_familiar(&a->ref);
	char previous[DIGEST_STRING_MAX];
	PullStats st = registry_pull_stats(p);
	int r;

	for (size_t i = 0; i < res->n_images; i++)
		strv_push(&manifests, res->images[i]->manifest_digest);
	r = registry_pull_tag(s, &a->ref, root, res->complete, manifests, previous, err);
	if (r < 0)
		return r;
	if (!a->quiet) {
		fprintf(stderr, "%s: %llu blob%s pulled (%llu bytes), %llu already present\n",
			familiar, (unsigned long long)st.fetched, st.fetched == 1 ? "" : "s",
			(unsigned long long)st.fetched_bytes, (unsigned long long)st.present);
		for (size_t i = 0; i < res->n_images; i++) {
			char pl[PLATFORM_STRING_MAX];
			platform_format(&res->images[i]->platform, pl, sizeof(pl));
			fprintf(stderr, "%s: %s\n", pl, res->images[i]->manifest_digest);
		}
		if (!a->ref.tag[0])
			fprintf(stderr, "pulled by digest: no name points at it ('kiln prune' may "
					"remove it; 'kiln pull NAME:TAG' names an image)\n");
		else if (previous[0] && strcmp(previous, root->digest) != 0)
			fprintf(stderr, "the name %s moved from %s to the pulled image\n", familiar,
				previous);
		fprintf(stderr, "Digest: %s\n", root->digest);
	}
	return 0;
}

int cmd_pull(int argc, char **argv, KilnError **err)
{
	_cleanup_(store_freep) Store *store = NULL;
	_cleanup_(registry_config_freep) RegistryConfig *cfg = NULL;
	_cleanup_(registry_client_freep) RegistryClient *client = NULL;
	_cleanup_(registry_pull_freep) RegistryPull *p = NULL;
	PullArgs a = {0};
	PullResult res = {0};
	OciDescriptor root = {0};
	IdMapInfo idmap;
	int r = pull_parse(argc, argv, &a, err);

	if (r >= 0)
		r = store_enter(a.root, &idmap, &store, err);
	/* After entering the user namespace (a fork): curl's threads start here. */
	if (r >= 0)
		r = registry_cli_client(&a.ro, &cfg, &client, err);
	if (r >= 0)
		r = registry_pull_new(client, store, &a.ref, &p, err);
	if (r >= 0) {
		registry_pull_set_progress(p, pull_progress, &a.quiet);
		r = registry_pull_root(p, &root, err);
	}
	if (r >= 0) {
		PullOptions po = {
		    .platforms = a.platforms, .n_platforms = a.n_platforms, .jobs = a.jobs};
		r = registry_pull_images(p, &root, &po, &res, err);
	}
	if (r >= 0)
		r = pull_finish(store, p, &root, &res, &a, err);
	if (r >= 0 && a.has_output)
		r = pull_export(store, &root, &res, &a, err);
	if (r >= 0)
		printf("%s\n", root.digest);
	if (r < 0 && err && *err && (*err)->code != KILN_EUSAGE) {
		_cleanup_free_ char *s = ref_string(&a.ref);
		kiln_error_wrap(err, r, "pull '%s'", s);
	}
	pull_result_done(&res);
	oci_descriptor_done(&root);
	pull_args_done(&a);
	return r;
}
