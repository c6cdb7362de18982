#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/build.h"
#include "builder/cli-merge.h"
#include "builder/cli-pull.h"
#include "builder/cli-push.h"
#include "builder/cli-registry.h"
#include "builder/context.h"
#include "builder/dockerfile.h"
#include "builder/imageconf.h"
#include "builder/parse_json.h"
#include "builder/prune.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/owner.h"
#include "layers/export.h"
#include "layers/import.h"
#include "layers/layer_apply.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry_pull.h"
#include "layers/store.h"
#include "platforms/binfmt.h"
#include "platforms/platform.h"
#include "sandbox/doctor.h"
#include "sandbox/userns.h"

static const char usage_text[] =
    "usage: kiln COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  build [options] CONTEXT      build a Dockerfile into an OCI image\n"
    "  load ARCHIVE [NAME...]       import an oci-archive, oci layout dir or docker-archive\n"
    "  images                       list images in the store\n"
    "  rmi NAME...                  remove image names from the store\n"
    "  inspect [--json] IMAGE       show an image's index, platforms, config, layers, history\n"
    "  parse [FILE]                 print a Dockerfile's syntax tree as JSON\n"
    "  prune [--keep-storage SIZE] [--all]\n"
    "                               remove unreferenced blobs, snapshots and cache entries\n"
    "  doctor [--verify]            check what this host allows kiln to do; --verify: re-hash\n"
    "                               the store and report damage\n"
    "  login [-u USER] [--password-stdin] [--tls-ca FILE] [HOST]\n"
    "                               check credentials against a registry and keep them in\n"
    "                               docker's config.json (HOST: default docker.io)\n"
    "  logout [HOST]                remove a registry's credentials\n"
    "  pull [--platform LIST | --all-platforms] [-o type=oci,dest=FILE] REF\n"
    "                               fetch an image from a registry into the store (and an\n"
    "                               archive); default platform: the host's\n"
    "  push [--platform LIST] [--mount-from REPO] [--metadata-file F] [--jobs N] SOURCE DEST...\n"
    "                               push an image (every platform and the index, byte for\n"
    "                               byte) to registries; a summary line per destination\n"
    "\n"
    "base images (build): --pull[=missing|always|never] (default missing: the store, then\n"
    "                     the registry), --tls-ca FILE, --registry-mirror DOMAIN=MIRROR\n"
    "layer caps (build, load): --max-layer-size SIZE (uncompressed, default 32GB),\n"
    "                           --max-layer-entries N (default 4000000)\n"
    "common option: --root DIR (default $KILN_ROOT, else $XDG_DATA_HOME/kiln; root: "
    "/var/lib/kiln)\n";

static int usage_error(KilnError **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(KilnError **err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int r = kiln_errorv(err, KILN_EUSAGE, fmt, ap);
	va_end(ap);
	return r;
}

static char *default_root(void)
{
	const char *e = getenv("KILN_ROOT");

	if (e && *e)
		return xstrdup(e);
	if (geteuid() == 0)
		return xstrdup("/var/lib/kiln");
	e = getenv("XDG_DATA_HOME");
	if (e && *e)
		return xasprintf("%s/kiln", e);
	e = getenv("HOME");
	return xasprintf("%s/.local/share/kiln", e && *e ? e : "/tmp");
}

/* Whether the user chose a root (--root or $KILN_ROOT): every command then uses it. Commands
 * that only read files (inspect FILE, merge of files without -t) use a scratch store otherwise,
 * so they leave the default store alone. */
static bool root_chosen(const char *root_opt)
{
	const char *e = getenv("KILN_ROOT");

	return root_opt || (e && *e);
}

/* Enters kiln's user namespace and opens the store; its warning is the caller's to print. */
static int store_enter_quiet(const char *root_opt, IdMapInfo *idmap, Store **ret, KilnError **err)
{
	_cleanup_free_ char *root = root_opt ? xstrdup(root_opt) : default_root();
	_cleanup_free_ char *reason = NULL;
	_cleanup_free_ char *abs = NULL;
	int r;

	r = mkdir_p(root, 0700, err);
	if (r < 0)
		return r;
	abs = realpath(root, NULL);
	if (!abs)
		return kiln_error_errno(err, errno, "resolve root '%s'", root);
	r = userns_enter(idmap, &reason, err);
	if (r < 0)
		return r;
	owner_set(idmap->owner_uid, idmap->owner_gid);
	if (reason && getenv("KILN_DEBUG"))
		fprintf(stderr, "kiln: %s\n", reason);
	return store_open(abs, ret, err);
}

/* store_enter_quiet(), printing the store's warning (a build prints it with its progress). */
int store_enter(const char *root_opt, IdMapInfo *idmap, Store **ret, KilnError **err)
{
	int r = store_enter_quiet(root_opt, idmap, ret, err);

	if (r >= 0 && store_warning(*ret))
		fprintf(stderr, "kiln: warning: %s\n", store_warning(*ret));
	return r;
}

/* ---------- build ---------- */

enum {
	OPT_ROOT = 1000,
	OPT_BUILD_ARG,
	OPT_BUILD_CONTEXT,
	OPT_TARGET,
	OPT_PLATFORM,
	OPT_NO_CACHE,
	OPT_NETWORK,
	OPT_EPOCH,
	OPT_PROGRESS,
	OPT_METADATA,
	OPT_PUSH,
	OPT_CACHE_FROM,
	OPT_CACHE_TO,
	OPT_SECRET,
	OPT_REPORT,
	OPT_JOBS,
	OPT_JSON,
	OPT_QEMU_DIR,
	OPT_MAX_LAYER_SIZE,
	OPT_MAX_LAYER_ENTRIES,
	OPT_ULIMIT,
	OPT_MEMORY,
	OPT_PIDS_LIMIT,
	OPT_PULL,
};

/* --network, --ulimit (buildx's names), --memory, --pids-limit (buildx has none: docker run's). */
static int parse_run_option(int opt, const char *arg, BuildOptions *o, KilnError **err)
{
	switch (opt) {
	case OPT_NETWORK:
		if (network_mode_parse(arg, NETWORK_PRIVATE, &o->network) < 0)
			return usage_error(err, "--network takes default, host or none, got '%s'",
					   arg);
		return 0;
	case OPT_ULIMIT:
		return limits_add_ulimit(&o->limits, arg, err);
	case OPT_MEMORY:
		return limits_parse_memory(arg, &o->limits.memory, err);
	case OPT_PIDS_LIMIT:
		return limits_parse_pids(arg, &o->limits.pids, err);
	default:
		return usage_error(err, "see 'kiln build --help'");
	}
}

/* --max-layer-size SIZE / --max-layer-entries N (kiln build and kiln load). */
static int parse_layer_cap(int opt, const char *arg, uint64_t *bytes, uint64_t *entries,
			   KilnError **err)
{
	if (opt == OPT_MAX_LAYER_SIZE) {
		if (prune_size_parse(arg, bytes, err) < 0)
			return kiln_error_wrap(err, KILN_EUSAGE, "--max-layer-size");
		if (*bytes == 0)
			return usage_error(err, "--max-layer-size must be more than 0");
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 10);
	if (!*arg || *end || errno || v == 0 || arg[0] == '-')
		return usage_error(err, "--max-layer-entries takes a number >= 1, got '%s'", arg);
	*entries = v;
	return 0;
}

int parse_platforms(const char *list, Platform **ret, size_t *ret_n, KilnError **err)
{
	_cleanup_free_ char *copy = xstrdup(list);
	char *save = NULL;
	Platform *v = NULL;
	size_t n = 0;

	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		v = xrealloc(v, (n + 1) * sizeof(Platform));
		int r = platform_parse(t, &v[n], err);
		if (r < 0) {
			free(v);
			return kiln_error_wrap(err, KILN_EUSAGE, "--platform");
		}
		bool dup = false;
		for (size_t i = 0; i < n; i++)
			dup |= platform_equal(&v[i], &v[n]);
		if (!dup)
			n++;
	}
	if (n == 0) {
		free(v);
		return usage_error(err, "--platform needs at least one platform");
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int parse_epoch(const char *s, int64_t *ret, KilnError **err)
{
	char *end;

	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < 0)
		return usage_error(err, "invalid source date epoch '%s': expected seconds", s);
	*ret = v;
	return 0;
}

/* -t NAME (build, merge): an image name, checked before any work is done. */
static int tag_arg_check(const char *name, KilnError **err)
{
	Reference ref;
	int r = ref_parse_name(name, &ref, err);

	if (r < 0) {
		r = kiln_error_wrap(err, r, "-t");
		(*err)->code = KILN_EUSAGE;
	}
	return r;
}

static int build_in_store(const char *root, BuildOptions *o, KilnError **err)
{
	IdMapInfo idmap;
	_cleanup_(store_freep) Store *store = NULL;
	int r = store_enter_quiet(root, &idmap, &store, err);

	if (r < 0)
		return r;
	o->store = store;
	o->idmap = &idmap;
	return build_run(o, err);
}

static int cmd_build(int argc, char **argv, KilnError **err)
{
	static const struct option opts[] = {
	    {"file", required_argument, NULL, 'f'},
	    {"tag", required_argument, NULL, 't'},
	    {"output", required_argument, NULL, 'o'},
	    {"root", required_argument, NULL, OPT_ROOT},
	    {"build-arg", required_argument, NULL, OPT_BUILD_ARG},
	    {"build-context", required_argument, NULL, OPT_BUILD_CONTEXT},
	    {"target", required_argument, NULL, OPT_TARGET},
	    {"platform", required_argument, NULL, OPT_PLATFORM},
	    {"no-cache", no_argument, NULL, OPT_NO_CACHE},
	    {"network", required_argument, NULL, OPT_NETWORK},
	    {"source-date-epoch", required_argument, NULL, OPT_EPOCH},
	    {"progress", required_argument, NULL, OPT_PROGRESS},
	    {"metadata-file", required_argument, NULL, OPT_METADATA},
	    {"push", no_argument, NULL, OPT_PUSH},
	    {"cache-from", required_argument, NULL, OPT_CACHE_FROM},
	    {"cache-to", required_argument, NULL, OPT_CACHE_TO},
	    {"secret", required_argument, NULL, OPT_SECRET},
	    {"report", required_argument, NULL, OPT_REPORT},
	    {"jobs", required_argument, NULL, OPT_JOBS},
	    {"qemu-dir", required_argument, NULL, OPT_QEMU_DIR},
	    {"max-layer-size", required_argument, NULL, OPT_MAX_LAYER_SIZE},
	    {"max-layer-entries", required_argument, NULL, OPT_MAX_LAYER_ENTRIES},
	    {"ulimit", required_argument, NULL, OPT_ULIMIT},
	    {"memory", required_argument, NULL, OPT_MEMORY},
	    {"pids-limit", required_argument, NULL, OPT_PIDS_LIMIT},
	    {"pull", optional_argument, NULL, OPT_PULL},
	    REGISTRY_CLI_OPTIONS,
	    {0},
	};
	BuildOptions o = {.progress = PROGRESS_AUTO};
	_cleanup_strv_free_ char **args = NULL, **contexts = NULL, **tags = NULL;
	_cleanup_(cache_spec_list_done) CacheSpecList cache_from = {0}, cache_to = {0};
	_cleanup_(registry_cli_options_done) RegistryCliOptions ro = {0};
	_cleanup_free_ Platform *platforms = NULL;
	const char *root = NULL;
	OutputSpec *outputs = NULL;
	size_t n_outputs = 0;
	const char *e = getenv("SOURCE_DATE_EPOCH");
	int c, r = 0;

	if (e && *e && parse_epoch(e, &o.epoch, err) < 0)
		return kiln_error_wrap(err, KILN_EUSAGE, "SOURCE_DATE_EPOCH");
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:t:o:", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			o.dockerfile = optarg;
			break;
		case 't':
			r = tag_arg_check(optarg, err);
			if (r < 0)
				goto out;
			strv_push(&tags, optarg);
			break;
		case 'o':
			outputs = xrealloc(outputs, (n_outputs + 1) * sizeof(OutputSpec));
			r = output_spec_parse(optarg, &outputs[n_outputs], err);
			if (r < 0)
				goto out;
			n_outputs++;
			break;
		case OPT_ROOT:
			root = optarg;
			break;
		case OPT_BUILD_ARG:
			if (strchr(optarg, '=')) {
				strv_push(&args, optarg);
			} else {
				const char *v = getenv(optarg);
				if (v)
					strv_consume(&args, xasprintf("%s=%s", optarg, v));
			}
			break;
		case OPT_BUILD_CONTEXT:
			if (!strchr(optarg, '=') || optarg[0] == '=') {
				r = usage_error(err, "--build-context takes NAME=SOURCE, got '%s'",
						optarg);
				goto out;
			}
			strv_push(&contexts, optarg);
			break;
		case OPT_TARGET:
			o.target = optarg;
			break;
		case OPT_PLATFORM:
			free(platforms);
			platforms = NULL;
			r = parse_platforms(optarg, &platforms, &o.n_platforms, err);
			if (r < 0)
				goto out;
			break;
		case OPT_NO_CACHE:
			o.no_cache = true;
			break;
		case OPT_NETWORK:
		case OPT_ULIMIT:
		case OPT_MEMORY:
		case OPT_PIDS_LIMIT:
			r = parse_run_option(c, optarg, &o, err);
			if (r < 0)
				goto out;
			break;
		case OPT_EPOCH:
			r = parse_epoch(optarg, &o.epoch, err);
			if (r < 0)
				goto out;
			break;
		case OPT_PROGRESS:
			c = progress_mode_parse(optarg);
			if (c < 0) {
				r = usage_error(err, "--progress takes auto, plain, json or quiet");
				goto out;
			}
			o.progress = (ProgressMode)c;
			break;
		case OPT_METADATA:
			o.metadata_file = optarg;
			break;
		case OPT_JOBS: {
			char *end;
			o.jobs = strtol(optarg, &end, 10);
			if (!*optarg || *end || o.jobs < 1) {
				r = usage_error(err, "--jobs takes a number >= 1, got '%s'",
						optarg);
				goto out;
			}
			break;
		}
		case OPT_REPORT:
			o.report_file = optarg;
			break;
		case OPT_QEMU_DIR:
			o.qemu_dir = optarg;
			break;
		case OPT_MAX_LAYER_SIZE:
		case OPT_MAX_LAYER_ENTRIES:
			r = parse_layer_cap(c, optarg, &o.max_layer_bytes, &o.max_layer_entries,
					    err);
			if (r < 0)
				goto out;
			break;
		case OPT_CACHE_FROM:
		case OPT_CACHE_TO:
			r = cache_spec_list_add(c == OPT_CACHE_TO ? &cache_to : &cache_from, optarg,
						c == OPT_CACHE_TO, err);
			if (r < 0)
				goto out;
			break;
		case OPT_PULL:
			c = pull_policy_parse(optarg);
			if (c < 0) {
				r = usage_error(err, "--pull takes missing, always or never");
				goto out;
			}
			o.pull = (PullPolicy)c;
			break;
		case OPT_PUSH:
			outputs = xrealloc(outputs, (n_outputs + 1) * sizeof(OutputSpec));
			r = output_spec_parse("type=registry", &outputs[n_outputs], err);
			if (r < 0)
				goto out;
			n_outputs++;
			break;
		case OPT_SECRET:
			r = usage_error(err,
					"build option '%s' is not available in this version of "
					"kiln yet (see README: not done yet)",
					argv[optind - 1]);
			goto out;
		default:
			if (registry_cli_option(c, optarg, &ro))
				break;
			r = usage_error(err, "see 'kiln build --help'");
			goto out;
		}
	}
	r = push_outputs_check(outputs, n_outputs, tags, err);
	if (r < 0)
		goto out;
	if (optind != argc - 1) {
		r = usage_error(err, "kiln build takes exactly one CONTEXT argument");
		goto out;
	}
	o.context_dir = argv[optind];
	if (strcmp(o.context_dir, "-") == 0) {
		r = usage_error(err, "a context tar on stdin ('-') is not supported yet");
		goto out;
	}
	struct stat st;
	if (stat(o.context_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		r = usage_error(err, "build context '%s' is not a directory", o.context_dir);
		goto out;
	}
	r = limits_check(&o.limits, err);
	if (r < 0)
		goto out;
	if (!platforms) {
		platforms = xcalloc(1, sizeof(Platform));
		platform_host(platforms);
		o.n_platforms = 1;
	}
	o.platforms = platforms;
	o.build_args = args;
	o.build_contexts = contexts;
	o.tags = tags;
	o.cache_from = cache_from;
	o.cache_to = cache_to;
	o.outputs = outputs;
	o.n_outputs = n_outputs;
	o.registry = &ro;
	r = build_in_store(root, &o, err);
out:
	for (size_t i = 0; i < n_outputs; i++)
		output_spec_done(&outputs[i]);
	free(outputs);
	return r;
}

static int output_type_parse(const char *v, OutputType *ret, KilnError **err)
{
	static const struct {
		const char *name;
		OutputType type;
	} types[] = {{"oci", OUTPUT_OCI},
		     {"docker", OUTPUT_DOCKER},
		     {"local", OUTPUT_LOCAL},
		     {"registry", OUTPUT_REGISTRY}};

	for (size_t i = 0; i < ELEMENTSOF(types); i++)
		if (strcmp(v, types[i].name) == 0) {
			*ret = types[i].type;
			return 0;
		}
	return usage_error(err,
			   "--output type '%s' is not supported (oci, docker, local, registry)", v);
}

static int output_bool(const char *key, const char *v, bool *ret, KilnError **err)
{
	if (strcmp(v, "true") && strcmp(v, "false"))
		return usage_error(err, "--output %s is true or false, not '%s'", key, v);
	*ret = strcmp(v, "true") == 0;
	return 0;
}

/* One KEY=VALUE of --output (type excepted). */
static int output_spec_key(OutputSpec *o, const char *kv, const char *eq, KilnError **err)
{
	if (strcmp(kv, "dest") == 0) {
		free(o->dest);
		o->dest = xstrdup(eq);
	} else if (strcmp(kv, "tar") == 0) {
		o->tar = strcmp(eq, "false") != 0;
	} else if (strcmp(kv, "compression") == 0) {
		if (strcmp(eq, "gzip") == 0)
			o->compression = COMPRESSION_GZIP;
		else if (strcmp(eq, "zstd") == 0)
			o->compression = COMPRESSION_ZSTD;
		else if (strcmp(eq, "uncompressed") == 0)
			o->compression = COMPRESSION_NONE;
		else
			return usage_error(
			    err, "--output compression '%s': gzip, zstd or uncompressed", eq);
	} else if (strcmp(kv, "name") == 0) {
		Reference ref;
		if (ref_parse(eq, &ref, err) < 0)
			return kiln_error_wrap(err, KILN_EUSAGE, "--output name");
		strv_push(&o->names, eq);
	} else if (strcmp(kv, "push") == 0) {
		return output_bool(kv, eq, &o->push, err);
	} else if (strcmp(kv, "push-by-digest") == 0) {
		return output_bool(kv, eq, &o->by_digest, err);
	} else {
		return usage_error(err, "--output: unknown key '%s'", kv);
	}
	return 0;
}

int output_spec_parse(const char *s, OutputSpec *ret, KilnError **err)
{
	_cleanup_free_ char *copy = xstrdup(s);
	char *save = NULL, *last = NULL;
	OutputSpec o = {.tar = true, .compression = COMPRESSION_GZIP, .push = true};
	bool has_type = false;
	int r = 0;

	for (char *kv = strtok_r(copy, ",", &save); kv && r >= 0; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		/* buildx's "name=a,b": a word after name= is another name */
		if (!eq && last && strcmp(last, "name") == 0) {
			r = output_spec_key(&o, last, kv, err);
			continue;
		}
		if (!eq) {
			r = usage_error(err, "--output: '%s' is not KEY=VALUE", kv);
			break;
		}
		*eq++ = 0;
		last = kv;
		if (strcmp(kv, "type") == 0) {
			has_type = true;
			r = output_type_parse(eq, &o.type, err);
		} else {
			r = output_spec_key(&o, kv, eq, err);
		}
	}
	if (r >= 0 && !has_type)
		r = usage_error(err, "--output needs type=oci|docker|local|registry");
	if (r >= 0 && !o.dest && o.type != OUTPUT_REGISTRY)
		r = usage_error(err, "--output needs dest=PATH");
	if (r >= 0 && o.type != OUTPUT_REGISTRY && (o.names || o.by_digest))
		r = usage_error(err, "--output name= and push-by-digest= are for type=registry");
	if (r < 0) {
		output_spec_done(&o);
		return r;
	}
	*ret = o;
	return 0;
}

void output_spec_done(OutputSpec *o)
{
	free(o->dest);
	o->dest = NULL;
	strv_free(o->names);
	o->names = NULL;
}

/* ---------- load, images, rmi ---------- */

static int parse_root_only(int argc, char **argv, const char **ret_root, bool *ret_json,
			   KilnError **err)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, OPT_ROOT},
	    {"json", no_argument, NULL, OPT_JSON},
	    {0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_ROOT)
			*ret_root = optarg;
		else if (c == OPT_JSON && ret_json)
			*ret_json = true;
		else
			return usage_error(err, "unknown option for 'kiln %s'", argv[0]);
	}
	return 0;
}

static bool strv_has(char *const *v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

/* kiln load reads every layer of what it imported once to its end, with the checks and caps a
 * build applies when it unpacks, so a hostile or damaged layer is refused here, naming its
 * digest, before any name points at it. */
/* Reads every layer of every image of the load once, as one graph (oci_images_load): a source
 * whose index.json lists one big index many times costs one walk, not one per entry. */
static int load_check_layers(Store *s, const ImportedImage *imgs, size_t n,
			     const LayerApplyOptions *ao, KilnError **err)
{
	_cleanup_strv_free_ char **checked = NULL;
	_cleanup_free_ OciDescriptor *roots = xcalloc(n + 1, sizeof(*roots));
	OciImage **v = NULL;
	size_t nv = 0;
	int r;

	for (size_t i = 0; i < n; i++)
		roots[i] = imgs[i].root; /* shallow: the annotations stay imgs' */
	r = oci_images_load(s, roots, n, &v, &nv, err);
	for (size_t i = 0; i < nv && r >= 0; i++) {
		for (size_t j = 0; r >= 0 && j < v[i]->n_layers; j++) {
			const char *digest = v[i]->layers[j].digest;
			if (strv_has(checked, digest))
				continue;
			_cleanup_close_ int fd = -1;
			LayerApplyOptions o = *ao;
			o.expected_diff_id = v[i]->diff_ids[j];
			r = store_open_blob(s, digest, &fd, err);
			if (r >= 0)
				r = layer_apply(fd, -1, &o, NULL, err);
			if (r >= 0)
				r = store_diffid_record(s, digest, v[i]->diff_ids[j], err);
			if (r == -EFBIG)
				kiln_error_wrap(
				    err, r,
				    "exceeds a per-layer cap (raise it with --max-layer-size or "
				    "--max-layer-entries)");
			if (r < 0)
				kiln_error_wrap(err, r, "layer %s", digest);
			else
				strv_push(&checked, digest);
		}
	}
	oci_images_free(v, nv);
	return r < 0 ? r : 0;
}

/* Points name at the loaded image. A name that pointed to another image moves, as docker load
 * does ("The image X already exists, renaming the old one with ID ... to empty string"), and
 * the output says so. */
static int load_tag(Store *store, const ImportedImage *img, const char *name, bool from_source,
		    KilnError **err)
{
	char previous[DIGEST_STRING_MAX];
	Reference ref;
	int r = ref_parse_name(name, &ref, err);

	if (r < 0 && from_source)
		return kiln_error_wrap(err, r, "the source names its image '%s' (give a NAME)",
				       name);
	if (r >= 0)
		r = store_tag_set(store, name, &img->root, previous, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *familiar = ref_familiar(&ref);
	if (previous[0] && strcmp(previous, img->root.digest) != 0)
		printf("The name %s moved from image %s to the loaded one (as docker load does); "
		       "the old image keeps its other names, and kiln prune removes it when it has "
		       "none\n",
		       familiar, previous);
	printf("Loaded image: %s\n", familiar);
	return 0;
}

/* Names a loaded image: names (the NAME arguments) when given, else the name its source gives
 * it, else nothing. */
static int load_name(Store *store, const ImportedImage *img, char *const *names, KilnError **err)
{
	int r = 0;

	if (names && names[0]) {
		for (size_t j = 0; names[j] && r >= 0; j++)
			r = load_tag(store, img, names[j], false, err);
		return r;
	}
	if (img->name)
		return load_tag(store, img, img->name, true, err);
	if (img->tag_only)
		printf("Loaded image: %s (no name: the source gives only the tag '%s', which names "
		       "no repository; name it with 'kiln load FILE NAME')\n",
		       img->root.digest, img->tag_only);
	else
		printf("Loaded image: %s (no name)\n", img->root.digest);
	return 0;
}

static int cmd_load(int argc, char **argv, KilnError **err)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, OPT_ROOT},
	    {"max-layer-size", required_argument, NULL, OPT_MAX_LAYER_SIZE},
	    {"max-layer-entries", required_argument, NULL, OPT_MAX_LAYER_ENTRIES},
	    {0},
	};
	const char *root = NULL;
	_cleanup_(store_freep) Store *store = NULL;
	ImportedImage *imgs = NULL;
	size_t n = 0;
	IdMapInfo idmap;
	LayerApplyOptions ao = {
	    .mode = LAYER_APPLY_OVERLAY,
	    .whiteouts = true,
	    .force_uid = (uid_t)-1,
	    .force_gid = (gid_t)-1,
	    .max_bytes = LAYER_MAX_BYTES_DEFAULT,
	    .max_entries = LAYER_MAX_ENTRIES_DEFAULT,
	};
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_ROOT)
			root = optarg;
		else if (c == OPT_MAX_LAYER_SIZE || c == OPT_MAX_LAYER_ENTRIES) {
			r = parse_layer_cap(c, optarg, &ao.max_bytes, &ao.max_entries, err);
			if (r < 0)
				return r;
		} else
			return usage_error(err, "unknown option for 'kiln load'");
	}
	if (optind >= argc)
		return usage_error(err, "kiln load takes ARCHIVE [NAME...]");
	const char *src = argv[optind];
	char *const *names = argv + optind + 1;
	for (size_t i = 0; names[i]; i++) {
		Reference ref;
		r = ref_parse_name(names[i], &ref, err);
		if (r < 0)
			return r;
	}
	r = store_enter(root, &idmap, &store, err);
	if (r < 0)
		return r;
	r = image_import(store, src, &imgs, &n, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "load '%s'", src);
	if (n == 0) {
		imported_images_free(imgs, n);
		return kiln_error(err, ENOENT, "load '%s': no image in it", src);
	}
	r = load_check_layers(store, imgs, n, &ao, err);
	if (r < 0) {
		imported_images_free(imgs, n);
		return kiln_error_wrap(err, r, "load '%s'", src);
	}
	for (size_t i = 0; i < n && r >= 0; i++)
		r = load_name(store, &imgs[i], i == 0 ? names : NULL, err);
	imported_images_free(imgs, n);
	return r;
}

/* The short form of a stored (canonical) name, for display. */
static char *familiar_name(const char *canonical)
{
	Reference ref;

	if (ref_parse(canonical, &ref, NULL) < 0)
		return xstrdup(canonical);
	return ref_familiar(&ref);
}

static int cmd_images(int argc, char **argv, KilnError **err)
{
	const char *root = NULL;
	bool json = false;
	_cleanup_(store_freep) Store *store = NULL;
	_cleanup_strv_free_ char **names = NULL;
	OciDescriptor *descs = NULL;
	size_t n = 0;
	IdMapInfo idmap;
	int r;

	r = parse_root_only(argc, argv, &root, &json, err);
	if (r < 0)
		return r;
	r = store_enter(root, &idmap, &store, err);
	if (r < 0)
		return r;
	r = store_tag_list(store, &names, &descs, &n, err);
	if (r < 0)
		return r;
	json_t *arr = json_array();
	if (!json)
		printf("%-40s %-19s %s\n", "NAME", "DIGEST", "PLATFORMS");
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *name = familiar_name(names[i]);
		Platform *ps = NULL;
		size_t np = 0;
		char plats[512] = "";
		json_t *pl = json_array();
		if (oci_list_platforms(store, &descs[i], &ps, &np, NULL) >= 0) {
			for (size_t j = 0; j < np; j++) {
				char p[96];
				platform_format(&ps[j], p, sizeof(p));
				if (j)
					strncat(plats, ",", sizeof(plats) - strlen(plats) - 1);
				strncat(plats, p, sizeof(plats) - strlen(plats) - 1);
				json_array_append_new(pl, json_string(p));
			}
			free(ps);
		}
		if (json) {
			json_t *o = json_object();
			json_object_set_new(o, "name", json_string(name));
			json_object_set_new(o, "digest", json_string(descs[i].digest));
			json_object_set_new(o, "mediaType", json_string(descs[i].media_type));
			json_object_set_new(o, "platforms", pl);
			json_array_append_new(arr, o);
		} else {
			json_decref(pl);
			printf("%-40s %.19s %s\n", name, descs[i].digest, plats);
		}
	}
	if (json) {
		char *s = json_dumps(arr, JSON_INDENT(2));
		printf("%s\n", s);
		free(s);
	}
	json_decref(arr);
	oci_descriptors_free(descs, n);
	return 0;
}

static int cmd_rmi(int argc, char **argv, KilnError **err)
{
	const char *root = NULL;
	_cleanup_(store_freep) Store *store = NULL;
	IdMapInfo idmap;
	int r;

	r = parse_root_only(argc, argv, &root, NULL, err);
	if (r < 0)
		return r;
	if (optind >= argc)
		return usage_error(err, "kiln rmi takes NAME...");
	r = store_enter(root, &idmap, &store, err);
	if (r < 0)
		return r;
	for (int i = optind; i < argc; i++) {
		Reference ref;
		r = ref_parse_name(argv[i], &ref, err);
		if (r >= 0)
			r = store_tag_remove(store, argv[i], err);
		if (r == -ENOENT)
			return kiln_error_wrap(err, r, "no image named '%s'", argv[i]);
		if (r < 0)
			return r;
		_cleanup_free_ char *familiar = ref_familiar(&ref);
		printf("Untagged: %s\n", familiar);
	}
	return 0;
}

/* ---------- inspect ---------- */

static bool looks_like_path(const char *s)
{
	return strncmp(s, "oci:", 4) == 0 || strncmp(s, "oci-archive:", 12) == 0 ||
	       strncmp(s, "docker-archive:", 15) == 0 || access(s, F_OK) == 0;
}

static json_t *inspect_platform(Store *store, const OciDescriptor *root, const Platform *p,
				KilnError **err)
{
	OciImage *img = NULL;
	char pl[96];

	if (oci_image_resolve(store, root, p, NULL, &img, err) < 0)
		return NULL;
	json_t *o = json_object(), *layers = json_array();
	platform_format(&img->platform, pl, sizeof(pl));
	json_object_set_new(o, "platform", json_string(pl));
	json_object_set_new(o, "manifest", json_string(img->manifest_digest));
	json_object_set_new(o, "manifestMediaType", json_string(img->manifest_media_type));
	json_object_set_new(o, "configDigest", json_string(img->config_digest));
	for (size_t i = 0; i < img->n_layers; i++) {
		json_t *l = json_object();
		json_object_set_new(l, "digest", json_string(img->layers[i].digest));
		json_object_set_new(l, "mediaType", json_string(img->layers[i].media_type));
		json_object_set_new(l, "size", json_integer(img->layers[i].size));
		json_object_set_new(l, "diffID", json_string(img->diff_ids[i]));
		json_array_append_new(layers, l);
	}
	json_object_set_new(o, "layers", layers);
	json_object_set(o, "config", img->config);
	oci_image_free(img);
	return o;
}

static void print_inspect_text(json_t *j)
{
	size_t i, k;
	json_t *p, *l;

	printf("Name:      %s\n", json_string_value(json_object_get(j, "name")) ?: "(none)");
	printf("Digest:    %s\n", json_string_value(json_object_get(j, "digest")));
	printf("MediaType: %s\n", json_string_value(json_object_get(j, "mediaType")));
	json_array_foreach (json_object_get(j, "notPulled"), i, p)
		printf("Not pulled: %s\n", json_string_value(p));
	json_array_foreach (json_object_get(j, "platforms"), i, p) {
		json_t *cfg = json_object_get(p, "config");
		json_t *cc = json_object_get(cfg, "config");
		printf("\nPlatform:  %s\n", json_string_value(json_object_get(p, "platform")));
		printf("  Manifest: %s\n", json_string_value(json_object_get(p, "manifest")));
		printf("  Config:   %s\n", json_string_value(json_object_get(p, "configDigest")));
		printf("  Created:  %s\n",
		       json_string_value(json_object_get(cfg, "created")) ?: "");
		static const char *const fields[] = {
		    "User",    "WorkingDir", "Env",	   "Entrypoint",  "Cmd",     "ExposedPorts",
		    "Volumes", "Labels",     "StopSignal", "Healthcheck", "OnBuild", "Shell"};
		for (size_t f = 0; f < ELEMENTSOF(fields); f++) {
			json_t *v = json_object_get(cc, fields[f]);
			if (!v)
				continue;
			char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			printf("  %-11s %s\n", fields[f], s ? s : "");
			free(s);
		}
		printf("  Layers:\n");
		json_array_foreach (json_object_get(p, "layers"), k, l) {
			printf("    %s %10lld %s\n",
			       json_string_value(json_object_get(l, "digest")),
			       (long long)json_integer_value(json_object_get(l, "size")),
			       json_string_value(json_object_get(l, "mediaType")));
		}
		printf("  History:\n");
		json_array_foreach (json_object_get(cfg, "history"), k, l) {
			printf(
			    "    %s%s\n", json_string_value(json_object_get(l, "created_by")) ?: "",
			    json_is_true(json_object_get(l, "empty_layer")) ? "  (no layer)" : "");
		}
	}
}

static int cmd_inspect(int argc, char **argv, KilnError **err)
{
	const char *root = NULL;
	bool json = false;
	_cleanup_(store_freep) Store *store = NULL;
	_cleanup_free_ char *name = NULL;
	OciDescriptor desc = {0};
	IdMapInfo idmap;
	int r;

	r = parse_root_only(argc, argv, &root, &json, err);
	if (r < 0)
		return r;
	if (optind != argc - 1)
		return usage_error(err, "kiln inspect takes one IMAGE");
	const char *ref = argv[optind];
	/* A file source is imported into a scratch store so inspection never touches the user's. */
	char tmpl[] = "/tmp/kiln-inspect-XXXXXX";
	bool scratch = looks_like_path(ref) && !root_chosen(root);
	if (scratch && !mkdtemp(tmpl))
		return kiln_error_errno(err, errno, "mkdtemp");
	r = store_enter(scratch ? tmpl : root, &idmap, &store, err);
	if (r < 0)
		goto out;
	if (looks_like_path(ref)) {
		ImportedImage *imgs = NULL;
		size_t n = 0;
		r = image_import(store, ref, &imgs, &n, err);
		if (r >= 0 && n == 0)
			r = kiln_error(err, ENOENT, "'%s' holds no image", ref);
		if (r >= 0) {
			oci_descriptor_copy(&desc, &imgs[0].root);
			name = imgs[0].name ? xstrdup(imgs[0].name) : NULL;
		}
		imported_images_free(imgs, n);
	} else {
		Reference parsed;
		r = ref_parse(ref, &parsed, err);
		if (r >= 0)
			r = store_image_lookup(store, &parsed, &desc, err);
		if (r >= 0)
			name = ref_familiar(&parsed);
		if (r == -ENOENT)
			kiln_error_wrap(err, r, "inspect '%s'", ref);
	}
	if (r < 0)
		goto out;
	Platform *ps = NULL;
	size_t np = 0;
	r = oci_list_platforms(store, &desc, &ps, &np, err);
	if (r < 0)
		goto out;
	json_t *j = json_object(), *plats = json_array();
	if (name)
		json_object_set_new(j, "name", json_string(name));
	json_object_set_new(j, "digest", json_string(desc.digest));
	json_object_set_new(j, "mediaType", json_string(desc.media_type));
	json_object_set_new(j, "size", json_integer(desc.size));
	json_t *not_pulled = json_array();
	for (size_t i = 0; i < np && r >= 0; i++) {
		_cleanup_error_ KilnError *e = NULL;
		json_t *p = inspect_platform(store, &desc, &ps[i], &e);
		if (p) {
			json_array_append_new(plats, p);
		} else if (e && e->code == ENOENT &&
			   oci_descriptor_annotation(&desc, PULL_ANNOTATION_MANIFESTS)) {
			/* a partial pull (layers/registry_pull.h) */
			char pl[PLATFORM_STRING_MAX];
			platform_format(&ps[i], pl, sizeof(pl));
			json_array_append_new(not_pulled, json_string(pl));
		} else {
			r = -EINVAL;
			if (err && !*err)
				*err = TAKE_PTR(e);
		}
	}
	free(ps);
	json_object_set_new(j, "platforms", plats);
	if (json_array_size(not_pulled))
		json_object_set(j, "notPulled", not_pulled);
	json_decref(not_pulled);
	if (r >= 0) {
		if (json) {
			char *s = json_dumps(j, JSON_INDENT(2));
			printf("%s\n", s);
			free(s);
		} else {
			print_inspect_text(j);
		}
	}
	json_decref(j);
out:
	oci_descriptor_done(&desc);
	if (scratch)
		rm_rf_at(AT_FDCWD, tmpl, NULL);
	return r;
}

/* ---------- images named on the command line ---------- */

/* A file source (its first image, imported) or a store name. */
static int image_source(Store *store, const char *ref, OciDescriptor *ret, KilnError **err)
{
	int r;

	if (looks_like_path(ref)) {
		ImportedImage *imgs = NULL;
		size_t n = 0;
		r = image_import(store, ref, &imgs, &n, err);
		if (r >= 0 && n == 0)
			r = kiln_error(err, ENOENT, "'%s' holds no image", ref);
		if (r >= 0)
			oci_descriptor_copy(ret, &imgs[0].root);
		imported_images_free(imgs, n);
		return r;
	}
	_cleanup_error_ KilnError *e = NULL;
	Reference parsed;
	r = ref_parse(ref, &parsed, &e);
	if (r >= 0)
		r = store_image_lookup(store, &parsed, ret, &e);
	if (r < 0)
		return kiln_error(err, ENOENT, "'%s' is neither a file nor an image in the store",
				  ref);
	return r;
}

/* ---------- for the commands in other files (cli.h) ---------- */

int store_enter_scratch(bool scratch, const char *root_opt, char *tmpl, IdMapInfo *idmap,
			Store **ret, KilnError **err)
{
	int r;

	if (scratch && !mkdtemp(tmpl))
		return kiln_error_errno(err, errno, "mkdtemp");
	r = store_enter(scratch ? tmpl : root_opt, idmap, ret, err);
	if (r >= 0 && scratch)
		store_set_scratch(*ret);
	return r;
}

bool cli_root_chosen(const char *root_opt)
{
	return root_chosen(root_opt);
}

bool cli_looks_like_path(const char *s)
{
	return looks_like_path(s);
}

int cli_tag_check(const char *name, KilnError **err)
{
	return tag_arg_check(name, err);
}

int cli_image_source(Store *s, const char *ref, OciDescriptor *ret, KilnError **err)
{
	return image_source(s, ref, ret, err);
}

/* ---------- parse, doctor ---------- */

static int cmd_parse(int argc, char **argv, KilnError **err)
{
	const char *path = argc > 1 ? argv[1] : "Dockerfile";
	_cleanup_free_ char *data = NULL;
	_cleanup_(dockerfile_freep) Dockerfile *df = NULL;
	json_t *j = NULL;
	size_t len = 0;
	int r;

	if (argc > 2)
		return usage_error(err, "kiln parse takes at most one FILE");
	if (strcmp(path, "-") == 0)
		r = read_all_fd(STDIN_FILENO, 16 << 20, &data, &len, err);
	else
		r = build_dockerfile_read(".", path, &data, &len, err);
	if (r < 0)
		return r;
	r = dockerfile_parse(strcmp(path, "-") == 0 ? "Dockerfile" : path, data, len, &df, err);
	if (r < 0)
		return r;
	r = dockerfile_to_json(df, &j, err);
	if (r < 0)
		return r;
	char *s = json_dumps(j, JSON_INDENT(2));
	printf("%s\n", s);
	free(s);
	json_decref(j);
	return 0;
}

/* ---------- prune, doctor --verify (logic in prune.c) ---------- */

static int cmd_prune(int argc, char **argv, KilnError **err)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, OPT_ROOT},
	    {"keep-storage", required_argument, NULL, 'k'},
	    {"all", no_argument, NULL, 'a'},
	    {0},
	};
	_cleanup_(store_freep) Store *store = NULL;
	const char *root = NULL;
	PruneOptions po = {0};
	PruneReport rep;
	IdMapInfo idmap;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_ROOT)
			root = optarg;
		else if (c == 'a')
			po.all = true;
		else if (c == 'k' && prune_size_parse(optarg, &po.keep_storage, err) < 0)
			return kiln_error_wrap(err, KILN_EUSAGE, "--keep-storage");
		else if (c == 'k')
			po.keep_storage_set = true;
		else
			return usage_error(err, "unknown option for 'kiln prune'");
	}
	if (optind < argc)
		return usage_error(err, "kiln prune takes no arguments");
	r = store_enter(root, &idmap, &store, err);
	if (r >= 0)
		r = prune_run(store, &po, &rep, err);
	if (r >= 0)
		prune_report_print(&rep, stdout);
	return r;
}

static int doctor_verify(const char *root, KilnError **err)
{
	_cleanup_(store_freep) Store *store = NULL;
	VerifyReport rep;
	IdMapInfo idmap;
	int r;

	r = store_enter(root, &idmap, &store, err);
	if (r >= 0)
		r = prune_verify(store, &rep, err);
	if (r < 0)
		return r;
	verify_report_print(&rep, store_path(store), stdout);
	size_t n = strv_length(rep.damage);
	verify_report_done(&rep);
	if (n)
		return kiln_error(err, KILN_EFAIL,
				  "store '%s' is damaged (%zu problem%s, see above)",
				  store_path(store), n, n == 1 ? "" : "s");
	return 0;
}

static int cmd_doctor(int argc, char **argv, KilnError **err)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, OPT_ROOT},
	    {"verify", no_argument, NULL, 'v'},
	    {0},
	};
	DoctorCheck *checks = NULL;
	const char *root = NULL;
	bool verify = false;
	size_t n = 0;
	bool all_ok = true;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == OPT_ROOT)
			root = optarg;
		else if (c == 'v')
			verify = true;
		else
			return usage_error(err, "unknown option for 'kiln doctor'");
	}
	if (verify)
		return doctor_verify(root, err);
	r = doctor_run(&checks, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		const char *label = checks[i].ok ? "ok" : checks[i].optional ? "off" : "FAIL";
		printf("%-4s %s: %s\n", label, checks[i].name,
		       checks[i].detail ? checks[i].detail : "");
		if (!checks[i].ok && checks[i].hint)
			printf("     fix: %s\n", checks[i].hint);
		all_ok &= checks[i].ok || checks[i].optional;
	}
	doctor_checks_free(checks, n);
	_cleanup_strv_free_ char **lines = NULL;
	_cleanup_error_ KilnError *e = NULL;
	printf("emulation (per platform):\n");
	if (binfmt_doctor_report(NULL, &lines, &e) < 0)
		printf("     %s\n", e && e->message ? e->message : "cannot check emulation");
	for (size_t i = 0; lines && lines[i]; i++)
		printf("     %s\n", lines[i]);
	if (!all_ok)
		return kiln_error(err, KILN_EFAIL,
				  "this host lacks something kiln needs (see above)");
	return 0;
}

int cli_main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **, KilnError **);
	} cmds[] = {
	    {"build", cmd_build},     {"load", cmd_load},
	    {"images", cmd_images},   {"rmi", cmd_rmi},
	    {"inspect", cmd_inspect}, {"parse", cmd_parse},
	    {"doctor", cmd_doctor},   {"merge", cmd_merge},
	    {"prune", cmd_prune},     {"login", cmd_login},
	    {"logout", cmd_logout},   {"registry-debug", cmd_registry_debug},
	    {"pull", cmd_pull},	      {"push", cmd_push},
	};
	static const char *const later[] = {"run"};
	_cleanup_error_ KilnError *err = NULL;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("kiln %s\n", KILN_VERSION);
		return 0;
	}
	for (size_t i = 0; i < ELEMENTSOF(cmds); i++) {
		if (strcmp(argv[1], cmds[i].name) != 0)
			continue;
		if (argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
			fputs(usage_text, stdout);
			return 0;
		}
		int r = cmds[i].fn(argc - 1, argv + 1, &err);
		fflush(stdout);
		if (r >= 0)
			return 0;
		fprintf(stderr, "kiln %s: %s\n", argv[1],
			err && err->message ? err->message : strerror(-r));
		return err ? kiln_error_exit_status(err) : 1;
	}
	for (size_t i = 0; i < ELEMENTSOF(later); i++)
		if (strcmp(argv[1], later[i]) == 0) {
			fprintf(stderr,
				"kiln: '%s' is not available in this version yet (see README)\n",
				argv[1]);
			return 2;
		}
	fprintf(stderr, "kiln: unknown command '%s'\n%s", argv[1], usage_text);
	return 2;
}
