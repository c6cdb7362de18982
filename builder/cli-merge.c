#include "cli-merge.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/build.h"
#include "builder/cli-push.h"
#include "builder/cli-registry.h"
#include "builder/cli.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/export.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry_pull.h"
#include "layers/registry_push.h"
#include "layers/store.h"

enum {
	OPT_MERGE_ROOT = 2300,
	OPT_MERGE_REPLACE,
	OPT_MERGE_PUSH,
};

typedef struct MergeEntry {
	OciDescriptor desc;
	const char *source;
} MergeEntry;

/* Adds every platform image of root to the list; a platform already there is an error unless
 * replace is set, in which case the later input wins. fetch: where the manifests and configs
 * of an image in a registry come from (NULL: the store has them). */
static int merge_add(Store *store, const OciDescriptor *root, const OciFetcher *fetch,
		     const char *source, bool replace, MergeEntry **list, size_t *n,
		     KilnError **err)
{
	_cleanup_free_ Platform *ps = NULL;
	size_t np = 0;
	int r = oci_list_platforms(store, root, &ps, &np, err);

	if (r < 0)
		return kiln_error_wrap(err, r, "'%s'", source);
	for (size_t i = 0; i < np; i++) {
		OciImage *img = NULL;
		r = oci_image_resolve(store, root, &ps[i], fetch, &img, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "'%s'", source);
		MergeEntry e = {.source = source,
				.desc = {.size = img->manifest_size,
					 .has_platform = true,
					 .platform = img->platform}};
		snprintf(e.desc.media_type, sizeof(e.desc.media_type), "%s",
			 img->manifest_media_type);
		memcpy(e.desc.digest, img->manifest_digest, DIGEST_STRING_MAX);
		oci_image_free(img);
		size_t j;
		for (j = 0; j < *n; j++)
			if (platform_equal(&(*list)[j].desc.platform, &e.desc.platform))
				break;
		if (j < *n && !replace) {
			char pl[PLATFORM_STRING_MAX];
			platform_format(&e.desc.platform, pl, sizeof(pl));
			return kiln_error(
			    err, EEXIST,
			    "platform %s is in both '%s' and '%s' (--replace keeps the "
			    "later one)",
			    pl, (*list)[j].source, source);
		}
		if (j == *n) {
			*list = xrealloc(*list, (*n + 1) * sizeof(MergeEntry));
			(*n)++;
		}
		(*list)[j] = e;
	}
	return 0;
}

typedef struct Merge {
	const char *root;
	char **tags;
	OutputSpec file;   /* .dest NULL: no file output */
	OutputSpec remote; /* type=registry: .names, or the tags */
	bool push;
	bool replace;
	RegistryCliOptions ro;
	/* inputs in a registry (docker://REF, or a REF the store lacks) */
	RegistryConfig *cfg;
	RegistryClient *client;
	PushSource *sources; /* their repositories: the push mounts or fetches from them */
	RegistryPull **pulls;
	size_t n_remote;
} Merge;

static void merge_done(Merge *m)
{
	strv_free(m->tags);
	output_spec_done(&m->file);
	output_spec_done(&m->remote);
	registry_cli_options_done(&m->ro);
	registry_client_free(m->client);
	registry_config_free(m->cfg);
	for (size_t i = 0; i < m->n_remote; i++) {
		free(m->sources[i].domain);
		free(m->sources[i].repository);
		registry_pull_free(m->pulls[i]);
	}
	free(m->sources);
	free(m->pulls);
}

#define MERGE_USAGE                                                                                \
	"usage: kiln merge [-o OUT | -o type=registry,name=REF] [--push] [--replace] [-t NAME] "   \
	"IN..."

/* -o OUT: a file (oci-archive), type=oci,... or type=registry,... */
static int merge_output(Merge *m, const char *out, KilnError **err)
{
	OutputSpec spec = {0};
	int r;

	if (!strstr(out, "type="))
		spec = (OutputSpec){.type = OUTPUT_OCI, .dest = xstrdup(out), .tar = true};
	else if ((r = output_spec_parse(out, &spec, err)) < 0)
		return r;
	if (spec.type != OUTPUT_OCI && spec.type != OUTPUT_REGISTRY) {
		output_spec_done(&spec);
		return kiln_error(err, KILN_EUSAGE, "kiln merge writes type=oci or type=registry");
	}
	OutputSpec *slot = spec.type == OUTPUT_OCI ? &m->file : &m->remote;
	output_spec_done(slot);
	*slot = spec;
	return 0;
}

static int merge_parse(int argc, char **argv, Merge *m, KilnError **err)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"tag", required_argument, NULL, 't'},
	    {"root", required_argument, NULL, OPT_MERGE_ROOT},
	    {"replace", no_argument, NULL, OPT_MERGE_REPLACE},
	    {"push", no_argument, NULL, OPT_MERGE_PUSH},
	    REGISTRY_CLI_OPTIONS,
	    {0},
	};
	int c, r = 0;

	optind = 1;
	while (r >= 0 && (c = getopt_long(argc, argv, "o:t:", opts, NULL)) != -1) {
		if (c == 'o')
			r = merge_output(m, optarg, err);
		else if (c == 't' && (r = cli_tag_check(optarg, err)) >= 0)
			strv_push(&m->tags, optarg);
		else if (c == OPT_MERGE_ROOT)
			m->root = optarg;
		else if (c == OPT_MERGE_REPLACE)
			m->replace = true;
		else if (c == OPT_MERGE_PUSH)
			m->push = true;
		else if (c != 't' && !registry_cli_option(c, optarg, &m->ro))
			r = kiln_error(err, KILN_EUSAGE, MERGE_USAGE);
	}
	if (r < 0)
		return r;
	if (m->push && m->remote.type != OUTPUT_REGISTRY)
		r = output_spec_parse("type=registry", &m->remote, err);
	if (r >= 0 && m->remote.type == OUTPUT_REGISTRY)
		r = push_outputs_check(&m->remote, 1, m->tags, err);
	if (r >= 0 && ((!m->file.dest && m->remote.type != OUTPUT_REGISTRY) || optind >= argc))
		r = kiln_error(err, KILN_EUSAGE, MERGE_USAGE);
	return r;
}

static bool merge_pushes(const Merge *m)
{
	return m->remote.type == OUTPUT_REGISTRY && m->remote.push;
}

static int merge_client(Merge *m, KilnError **err)
{
	return m->client ? 0 : registry_cli_client(&m->ro, &m->cfg, &m->client, err);
}

/* A manifest root carries no platform: its config (small) comes along for merge to read. */
static int merge_remote_config(RegistryPull *pull, Store *s, const OciDescriptor *root,
			       KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	OciImage *img = NULL;
	size_t len = 0;
	int r = oci_blob_read(s, root, OCI_MANIFEST_MAX, &data, &len, err);

	if (r >= 0)
		r = oci_manifest_parse(data, len, &img, err);
	if (r >= 0) {
		OciDescriptor cd = {.size = img->config_size};
		memcpy(cd.media_type, img->config_media_type, sizeof(cd.media_type));
		memcpy(cd.digest, img->config_digest, sizeof(cd.digest));
		r = registry_pull_blob(pull, &cd, err);
	}
	oci_image_free(img);
	return r;
}

/* An input in a registry: its root document in the store (registry_pull_root); the manifests
 * and configs merge reads come through *ret_fetch, never a layer. */
static int merge_remote(Merge *m, Store *store, const char *in, OciDescriptor *ret,
			OciFetcher *ret_fetch, KilnError **err)
{
	const char *spec = strncmp(in, "docker://", 9) == 0 ? in + 9 : in;
	RegistryPull *pull = NULL;
	Reference ref;
	int r = ref_parse(spec, &ref, err);

	if (r >= 0)
		r = merge_client(m, err);
	if (r >= 0)
		r = registry_pull_new(m->client, store, &ref, &pull, err);
	if (r < 0)
		return r;
	m->sources = xrealloc(m->sources, (m->n_remote + 1) * sizeof(PushSource));
	m->pulls = xrealloc(m->pulls, (m->n_remote + 1) * sizeof(RegistryPull *));
	m->sources[m->n_remote] = (PushSource){xstrdup(ref.domain), xstrdup(ref.path)};
	m->pulls[m->n_remote++] = pull;
	r = registry_pull_root(pull, ret, err);
	if (r >= 0 && oci_media_type_is_manifest(ret->media_type))
		r = merge_remote_config(pull, store, ret, err);
	*ret_fetch = registry_pull_fetcher(pull);
	return r;
}

/* One input: a file, a store name (whose image the store has whole: a registry image merged
 * before leaves only its manifests), else an image in a registry (docker://REF always), whose
 * manifests and configs come through *ret_fetch. */
static int merge_input(Merge *m, Store *store, const char *in, OciDescriptor *ret,
		       OciFetcher *ret_fetch, KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	bool remote = strncmp(in, "docker://", 9) == 0, whole = false;
	int r = remote ? -ENOENT : cli_image_source(store, in, ret, &e);

	*ret_fetch = (OciFetcher){0};
	if (r >= 0 && !cli_looks_like_path(in) &&
	    (pull_root_complete(store, ret, &whole, NULL) < 0 || !whole)) {
		oci_descriptor_done(ret);
		r = -ENOENT;
	} else if (r >= 0 || (!remote && (cli_looks_like_path(in) || e->code != ENOENT))) {
		if (r < 0 && err && !*err)
			*err = TAKE_PTR(e);
		return r;
	}
	r = merge_remote(m, store, in, ret, ret_fetch, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "'%s'%s", in, remote ? "" : " (not in the store)");
	return 0;
}

/* The merged index to the file, the store's names and the registries. */
static int merge_write(Merge *m, Store *store, const OciDescriptor *index, KilnError **err)
{
	const char *name = m->tags ? m->tags[0] : NULL;
	_cleanup_strv_free_ char **dests = NULL;
	PushResult *v = NULL;
	size_t n = 0;
	int r = 0;

	/* names in the store only for an image whose blobs are all there */
	for (size_t i = 0; !m->n_remote && m->tags && m->tags[i] && r >= 0; i++)
		r = store_tag_set(store, m->tags[i], index, NULL, err);
	if (r >= 0 && m->file.dest && m->n_remote)
		r = kiln_error(err, KILN_EUSAGE,
			       "a merge of images in a registry writes to a registry only "
			       "(-o type=registry or --push): their layers stay there");
	if (r >= 0 && m->file.dest)
		r = m->file.tar ? export_oci_archive(store, index, name, m->file.dest, err)
				: export_oci_dir(store, index, name, m->file.dest, err);
	char *const *names = m->remote.names ? m->remote.names : m->tags;
	for (size_t i = 0; r >= 0 && merge_pushes(m) && names && names[i]; i++) {
		char *d = m->remote.by_digest ? push_name_by_digest(names[i], index->digest, err)
					      : xstrdup(names[i]);
		r = d ? strv_consume(&dests, d) : -EINVAL;
	}
	if (r >= 0 && dests)
		r = merge_client(m, err);
	if (r >= 0 && dests) {
		PushOptions po = {.sources = m->sources, .n_sources = m->n_remote};
		r = push_destinations(m->client, store, &po, index, dests, NULL, &v, &n, err);
	}
	if (r >= 0)
		printf("%s\n", index->digest);
	if (r >= 0)
		r = push_results_check(v, n, err);
	push_results_free(v, n);
	return r;
}

static int merge_run(Merge *m, Store *store, char *const *inputs, KilnError **err)
{
	MergeEntry *list = NULL;
	OciDescriptor *descs = NULL;
	OciDescriptor index = {0};
	size_t n = 0;
	int r = 0;

	for (size_t i = 0; r >= 0 && inputs[i]; i++) {
		OciDescriptor d = {0};
		OciFetcher f;
		r = merge_input(m, store, inputs[i], &d, &f, err);
		if (r >= 0)
			r = merge_add(store, &d, f.fetch ? &f : NULL, inputs[i], m->replace, &list,
				      &n, err);
		oci_descriptor_done(&d);
	}
	if (r >= 0) {
		descs = xcalloc(n ? n : 1, sizeof(OciDescriptor));
		for (size_t i = 0; i < n; i++)
			descs[i] = list[i].desc;
		r = oci_index_put(store, descs, n, &index, err);
	}
	if (r >= 0)
		r = merge_write(m, store, &index, err);
	free(descs);
	free(list);
	return r;
}

int cmd_merge(int argc, char **argv, KilnError **err)
{
	_cleanup_(merge_done) Merge m = {0};
	_cleanup_(store_freep) Store *store = NULL;
	char tmpl[] = "/tmp/kiln-merge-XXXXXX";
	IdMapInfo idmap;
	int r = merge_parse(argc, argv, &m, err);

	if (r < 0)
		return r;
	/* Files (and docker:// images) merged into no chosen root, naming nothing in the store, go
	 * to a scratch store, which leaves the default store alone; a store name as input, -t
	 * without a push, --root or $KILN_ROOT use the store. */
	bool scratch = !cli_root_chosen(m.root) && (!m.tags || merge_pushes(&m));
	for (int i = optind; i < argc; i++)
		scratch &= cli_looks_like_path(argv[i]) || strncmp(argv[i], "docker://", 9) == 0;
	r = store_enter_scratch(scratch, m.root, tmpl, &idmap, &store, err);
	if (r >= 0)
		r = merge_run(&m, store, argv + optind, err);
	if (scratch)
		rm_rf_at(AT_FDCWD, tmpl, NULL);
	return r;
}
