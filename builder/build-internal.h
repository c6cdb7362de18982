/* What the build executor's files share: the state of a build, its platform passes and stage
 * runs, and the helpers each part uses. Private to builder/ (build.c: stages, passes, outputs;
 * build-layers.c: snapshots, mounts, base images, the step cache; instructions.c: what each
 * Dockerfile instruction does). */
#pragma once

#include "builder/build.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "builder/cache.h"
#include "builder/context.h"
#include "builder/dockerfile.h"
#include "builder/expand.h"
#include "builder/imageconf.h"
#include "builder/prune.h"
#include "common/cleanup.h"
#include "common/digest.h"
#include "common/fdutil.h"
#include "common/owner.h"
#include "common/rootfs.h"
#include "common/strbuf.h"
#include "layers/export.h"
#include "layers/import.h"
#include "layers/layer_apply.h"
#include "layers/layer_write.h"
#include "layers/oci.h"
#include "layers/registry_push.h"
#include "platforms/binfmt.h"
#include "sandbox/container.h"
#include "sandbox/overlay.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

typedef struct LayerRef {
	char diff_id[DIGEST_STRING_MAX];
	OciDescriptor desc;
} LayerRef;

typedef struct Var {
	char *key;
	char *value; /* NULL: declared without a value */
} Var;

typedef struct VarList {
	Var *v;
	size_t n;
} VarList;

typedef enum { STAGE_NEW, STAGE_BUILDING, STAGE_BUILT, STAGE_FAILED } StageState;

/* A stage as the Dockerfile declares it. */
typedef struct Stage {
	size_t index;
	char *name; /* lowercase, NULL when unnamed */
	const DfInstruction *from;
	size_t first, end; /* instructions [first, end) after FROM */
} Stage;

/* What building a stage produced. Shared between target platforms when the stage's key (its
 * platform, the args it can see, its dependencies) is the same: the cross-compile pattern
 * `FROM --platform=$BUILDPLATFORM` builds once. */
typedef struct StageResult {
	char key[DIGEST_STRING_MAX];
	StageState state;
	ImageConf *conf;
	LayerRef *layers;
	size_t n_layers;
	Platform platform;
	char chain[DIGEST_STRING_MAX]; /* cache key of the stage's last step */
	struct StageResult *next;
} StageResult;

typedef struct ReportStep {
	char platform[PLATFORM_STRING_MAX];
	char *stage;
	unsigned line;
	char *instruction;
	bool emulated;
	double wall_s, cpu_s;
	bool has_layer;
	LayerRef layer;
	bool run;
	bool cached;
	char *reason;
	char key[DIGEST_STRING_MAX];
	size_t stage_index;
} ReportStep;

typedef struct BuildPull BuildPull;

typedef struct Build {
	const BuildOptions *o;
	Dockerfile *df;
	BuildContext *ctx;
	Progress *progress;
	Store *store;
	Stage *stages;
	size_t n_stages;
	VarList build_args;
	char **consumed_args;
	char *work;    /* ROOT/work/<pid>: this build's mount points and upper dirs */
	char *snapdir; /* ROOT/snapshots */
	unsigned seq;  /* atomic */
	Platform build_platform;
	Compression compression;
	BuildCache *cache;
	pthread_mutex_t lock; /* results, consumed_args, report */
	pthread_cond_t cond;
	StageResult *results;
	ReportStep *steps;
	size_t n_steps;
	bool failed;	      /* a pass failed: the others stop at their next instruction */
	int net_state;	      /* under lock: 0 not probed yet, 1 private works, -1 host instead */
	char *resolv_private; /* work/resolv.conf of private networks */
	LimitsCgroup *cgroup; /* parent of the steps' cgroups (--memory, --pids-limit) */
	BuildPull *pull;      /* build-pull.c: registry client, base images resolved */
	PushResult *pushed;   /* type=registry: one result per destination */
	size_t n_pushed;
} Build;

/* One target platform's run through the stages. */
typedef struct Pass {
	Build *b;
	Platform platform;
	VarList global_args;
	StageResult **res;    /* per stage index, once resolved in this pass */
	bool *visiting;	      /* per stage index: cycle detection */
	size_t expand_budget; /* bytes its variable expansions may still produce */
	OciDescriptor manifest;
	KilnError *err;
	int status;
} Pass;

typedef struct StageRun {
	Build *b;
	Pass *p;
	Stage *st;
	StageResult *out;
	VarList args;
	unsigned n_steps, step_no;
	bool cmd_set;
	/* the cache chain: the key of the last step, and whether every step so far was a hit */
	char chain[DIGEST_STRING_MAX];
	bool chain_hit;
	char step_key[DIGEST_STRING_MAX];
	/* the step being run, for the report */
	bool cached;
	char *reason;
	bool emulated;
	double cpu_s;
	bool has_layer;
	LayerRef layer;
} StageRun;

typedef struct Mounted {
	char *dir;
	char *merged;
	int fd;
	bool mounted;
} Mounted;

double now_seconds(void);
int cmp_str(const void *a, const void *b);
void report_step(StageRun *r, const DfInstruction *in, double wall, bool run);
Var *vars_find(const VarList *l, const char *key);
void vars_set(VarList *l, const char *key, const char *value);
void vars_done(VarList *l);
const char *lookup_global(void *ud, const char *name);
const char *lookup_stage(void *ud, const char *name);
void mark_consumed(Build *b, const char *key);
void set_platform_args(Pass *p, VarList *l);
int inst_error(const Build *b, const DfInstruction *in, int code, KilnError **err, const char *fmt,
	       ...) __attribute__((format(printf, 5, 6)));
int inst_wrap(const Build *b, const DfInstruction *in, int r, KilnError **err);
int snapshot_ensure(Build *b, const LayerRef *l, KilnError **err);
void mounted_release(Mounted *m);
int mount_layers(Build *b, const LayerRef *layers, size_t n, Mounted *m, KilnError **err);
int mounted_unmount(Mounted *m, KilnError **err);
void result_add_layer(StageResult *st, const LayerRef *l);
int step_commit(StageRun *r, Mounted *m, const char *created_by, KilnError **err);
void result_reset(StageResult *st);
int stage_from_image(Build *b, StageResult *st, OciImage *img, KilnError **err);
int stage_build(Pass *p, Stage *st, StageResult **ret, KilnError **err);
Stage *stage_find(Build *b, const char *name);
const char *build_context_source(Build *b, const char *name);
bool is_local_dir_context(const char *src);
/* The image FROM or COPY --from names (st: the stage asking, for the report): a
 * --build-context of that name, else base_image_pull(). */
int image_lookup(Build *b, const Stage *st, const char *ref, const Platform *p, OciImage **ret,
		 KilnError **err);
/* build-pull.c: the build's one registry client (pulls, registry caches), made on first use so
 * that a build that touches no registry reads no registry config. Thread-safe. */
int build_registry_client(Build *b, RegistryClient **ret, KilnError **err);
/* build-pull.c: the image ref names, from the store or a registry as --pull says, with what p
 * needs of it fetched and the store name updated; recorded for the report. */
int base_image_pull(Build *b, const Stage *st, const char *ref, const Platform *p, OciImage **ret,
		    KilnError **err);
/* Records a base image for the report's "bases" (source: "store", "registry",
 * "build-context"). */
void build_base_record(Build *b, const Stage *st, const char *ref, const char *root_digest,
		       const OciImage *img, const char *source);
/* The report's "bases" array. */
json_t *build_bases_json(Build *b);
void build_pull_free(BuildPull *p);
/* "name" or "stage-N". malloc'd. */
char *stage_label(const Stage *st);
int step_cache_lookup(StageRun *r, const char *slot, json_t *sources, const char *created,
		      KilnError **err);
int step_cache_record(StageRun *r, const char *slot, json_t *sources, KilnError **err);
int step_meta_cache(StageRun *r, const char *keyword, char *const *fields, KilnError **err);
int run_instruction(StageRun *r, const DfInstruction *in, KilnError **err);
/* The network a RUN step gets for the one it asks: a private network becomes the host's when
 * pasta cannot start here (checked once per build, with a warning). */
NetworkMode build_network(Build *b, NetworkMode asked);
/* RUN's argv (shell form: wrapped in SHELL) and the network it asks for; sets r->step_key. */
int run_prepare(StageRun *r, const DfInstruction *in, char ***ret_argv, NetworkMode *ret_net,
		KilnError **err);
int run_onbuild(StageRun *r, const char *image, KilnError **err);
char *strv_join(char *const *v, const char *sep);
void chain_start(StageRun *r, const char *base);
