/* `kiln build`: a Dockerfile and a context to an image in the store and the requested outputs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "builder/cache-io.h"
#include "builder/progress.h"
#include "common/error.h"
#include "layers/compress.h"
#include "layers/store.h"
#include "platforms/platform.h"
#include "sandbox/limits.h"
#include "sandbox/network.h"
#include "sandbox/userns.h"

typedef enum { OUTPUT_OCI, OUTPUT_DOCKER, OUTPUT_LOCAL, OUTPUT_REGISTRY } OutputType;

/* --pull: when FROM (and COPY --from an image) asks a registry. MISSING: the store when it has
 * the name, else the registry; ALWAYS: the registry resolves a tag again (blobs already in the
 * store are reused); NEVER: the store only. */
typedef enum { PULL_MISSING, PULL_ALWAYS, PULL_NEVER } PullPolicy;

/* "missing", "always", "never" (or NULL: `--pull` alone, always); -1 for anything else. */
int pull_policy_parse(const char *s);

struct RegistryCliOptions;

typedef struct OutputSpec {
	OutputType type;
	char *dest;
	bool tar; /* OCI: a tar file (default) or a layout dir (tar=false) */
	Compression compression;
	/* type=registry (as buildx): name=REF (repeatable; none: the -t tags), push=true|false,
	 * push-by-digest=true (each name's repository, by the image's digest, no tag) */
	char **names;
	bool push;
	bool by_digest;
} OutputSpec;

/* Parses "type=oci,dest=PATH[,tar=false][,compression=zstd]",
 * "type=registry[,name=REF...][,push=true][,push-by-digest=true]" and friends. Usage errors say
 * which key. */
int output_spec_parse(const char *s, OutputSpec *ret, KilnError **err);
void output_spec_done(OutputSpec *o);

typedef struct BuildOptions {
	const char *context_dir;
	const char *dockerfile; /* NULL: CONTEXT/Dockerfile */
	Platform *platforms;
	size_t n_platforms;
	char **build_args;     /* "K=V" */
	char **build_contexts; /* "NAME=SRC" */
	const char *target;
	char **tags;
	OutputSpec *outputs;
	size_t n_outputs;
	bool no_cache;
	NetworkMode network; /* RUN's default; NETWORK_PRIVATE (0) unless --network */
	RunLimits limits;    /* --ulimit, --memory, --pids-limit: every RUN step */
	int64_t epoch;
	ProgressMode progress;
	const char *metadata_file;
	const char *report_file;
	CacheSpecList cache_from; /* --cache-from, in order */
	CacheSpecList cache_to;	  /* --cache-to */
	long jobs;		  /* parallel platform passes; 0: number of CPUs */
	const char *qemu_dir;	  /* --qemu-dir: searched first for qemu-<arch>-static */
	/* Caps on every layer kiln unpacks (base layer snapshots, ADD of a local archive,
	 * type=local outputs): uncompressed bytes and entries; 0 = the defaults of
	 * layers/layer_apply.h (LAYER_MAX_BYTES_DEFAULT, LAYER_MAX_ENTRIES_DEFAULT). */
	uint64_t max_layer_bytes;
	uint64_t max_layer_entries;
	PullPolicy pull;
	/* --tls-ca, --registry-mirror for pulls and type=registry pushes (NULL: none); the client
	 * is made when a pull or a push needs it */
	const struct RegistryCliOptions *registry;
	Store *store;
	const IdMapInfo *idmap;
} BuildOptions;

/* Runs the build. RUN failures and Dockerfile errors come back as errors naming file:line. */
int build_run(const BuildOptions *o, KilnError **err);

/* The caps BuildOptions asks for, the defaults filled in. */
uint64_t build_max_layer_bytes(const BuildOptions *o);
uint64_t build_max_layer_entries(const BuildOptions *o);
