/* The build context (a host directory filtered by .dockerignore) and the copy engine behind COPY
 * and ADD, which copies from the context or from another stage's root into a step's root. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "builder/dockerignore.h"
#include "common/error.h"

typedef struct BuildContext BuildContext;

#define DOCKERFILE_MAX_SIZE ((size_t)16 << 20)
#define DOCKERIGNORE_MAX_SIZE ((size_t)1 << 20)

/* Reads a build's Dockerfile: CONTEXT/Dockerfile (dockerfile NULL) or `-f PATH`. A path in the
 * context resolves inside the context, a path outside it inside its own directory: a symlink
 * never leads out (one that would is refused, naming it). FIFOs, devices and directories are
 * refused, and files over DOCKERFILE_MAX_SIZE. */
int build_dockerfile_read(const char *context_dir, const char *dockerfile, char **ret_data,
			  size_t *ret_len, KilnError **err);

/* Opens the context dir and reads DOCKERFILE.dockerignore (next to the Dockerfile) or
 * CONTEXT/.dockerignore, resolved and checked like the Dockerfile. dockerfile_path may be
 * NULL. */
int build_context_open(const char *dir, const char *dockerfile_path, BuildContext **ret,
		       KilnError **err);
void build_context_free(BuildContext *c);
static inline void build_context_freep(BuildContext **c)
{
	build_context_free(*c);
}
int build_context_fd(const BuildContext *c);
const DockerIgnore *build_context_ignore(const BuildContext *c);

typedef struct CopyOptions {
	bool from_context; /* sources are in the build context: escaping is an error, ignore
			    * rules apply; otherwise sources resolve inside src root (a stage) */
	const DockerIgnore *ignore;
	bool set_owner; /* chown everything copied to uid:gid (else keep the source's) */
	uid_t uid;
	gid_t gid;
	bool set_mode; /* --chmod */
	mode_t mode;
	int64_t mtime;	       /* >= 0: mtime of every copied entry; < 0: keep the source's */
	bool extract_archives; /* ADD: a local tar (plain or compressed) is extracted into dest */
	const char *what;      /* "COPY" or "ADD", for messages */
	uint64_t max_bytes;    /* ADD extraction: caps per archive (0 = none), see layer_apply */
	uint64_t max_entries;
	/* ADD extraction leaves device nodes out (a user namespace cannot create them, as with base
	 * layers) and, when non-NULL, counts them here. */
	uint64_t *devices_skipped;
} CopyOptions;

/* Copies srcs (paths or globs relative to the source root) to dest (an absolute path in the
 * destination root, after WORKDIR joining), with Dockerfile rules: a directory's contents are
 * copied, several sources need a dest ending in '/', a file onto an existing dir lands inside it,
 * top-level source symlinks are followed (inside the source root), symlinks below are kept. */
int copy_into(int src_root_fd, char *const *srcs, int dest_root_fd, const char *dest,
	      const CopyOptions *opts, KilnError **err);

/* What copy_into would copy, without copying: {"source path": "f MODE UID:GID sha256:..." |
 * "d MODE UID:GID" | "l UID:GID TARGET" | ...} with the mode and owner the copy would give. Used as
 * the content part of COPY/ADD cache keys; fails like copy_into for missing or escaping sources. */
int copy_manifest(int src_root_fd, char *const *srcs, const CopyOptions *opts, json_t **ret,
		  KilnError **err);
