/* `kiln push`, and the pushes of `kiln build` (-o type=registry, --push) and `kiln merge`
 * (registry inputs and outputs): destinations one after another through one PushSession
 * (layers/registry_push.h), one summary line per destination, the metadata keys. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "builder/build.h"
#include "builder/progress.h"
#include "common/error.h"
#include "layers/oci.h"
#include "layers/registry_push.h"
#include "layers/store.h"

/* Pushes root to every destination (a failing one never stops the others). Each destination's
 * summary line (push_result_line) goes to progress as a note, or to stderr ("kiln push: ...")
 * when progress is NULL; with progress, each destination is also a step ("#N pushing REF").
 * *ret gets one result per destination, in order. Fails only when nothing could be tried (a bad
 * --mount-from). */
int push_destinations(RegistryClient *c, Store *s, const PushOptions *o, const OciDescriptor *root,
		      char *const *dests, Progress *progress, PushResult **ret, size_t *ret_n,
		      KilnError **err);

/* "pushed REF sha256:...: uploaded 3, mounted 0, skipped 2 blobs (1.2 MiB), 3 manifests, 0.41 s"
 * (", tag only" after the digest when the registry had the whole image), or "FAILED REF:
 * error". malloc'd. */
char *push_result_line(const PushResult *r);

/* How many failed; a KILN_EFAIL error "push: N of M destinations failed" when any did. */
int push_results_check(const PushResult *v, size_t n, KilnError **err);

/* Adds to a --metadata-file object: "kiln.push" (push_result_json of each) and the names pushed
 * to, canonical, to "image.name" (comma-separated, as buildx writes it, after any there). */
void push_metadata_add(json_t *m, const PushResult *v, size_t n);

/* `name` for a push by digest (buildx's push-by-digest=true): its repository "@" digest, the
 * tag dropped. malloc'd, or NULL (error) when name is not a reference. */
char *push_name_by_digest(const char *name, const char *digest, KilnError **err);

/* type=registry pushes to its name= refs, else to the -t tags: a usage error when it has
 * neither. */
int push_outputs_check(const OutputSpec *v, size_t n, char *const *tags, KilnError **err);

/* kiln push SOURCE DEST... */
int cmd_push(int argc, char **argv, KilnError **err);
