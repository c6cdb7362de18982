/* The kiln command line: parses arguments, runs a command, prints results and errors. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "layers/oci.h"
#include "layers/store.h"
#include "platforms/platform.h"
#include "sandbox/userns.h"

/* Runs kiln with argv; returns the process exit status (0, 1 failure, 2 usage). */
int cli_main(int argc, char **argv);

/* For the commands in cli-*.c: enters kiln's user namespace and opens the store at root_opt
 * (NULL: the default root), printing the store's warning; and parses a --platform LIST
 * ("linux/amd64,linux/arm64": duplicates dropped; errors are usage errors). */
int store_enter(const char *root_opt, IdMapInfo *idmap, Store **ret, KilnError **err);
int parse_platforms(const char *list, Platform **ret, size_t *ret_n, KilnError **err);
/* store_enter() of root_opt, or with scratch of a new temp dir made from tmpl
 * ("/tmp/kiln-NAME-XXXXXX", filled in; the caller removes it with rm_rf_at when done) marked
 * store_set_scratch(): for commands that read files and leave the user's store alone. */
int store_enter_scratch(bool scratch, const char *root_opt, char *tmpl, IdMapInfo *idmap,
			Store **ret, KilnError **err);
/* Whether the user chose a root (--root or $KILN_ROOT). */
bool cli_root_chosen(const char *root_opt);
/* Whether an IMAGE argument names a file source (oci:, oci-archive:, docker-archive: or an
 * existing path). */
bool cli_looks_like_path(const char *s);
/* -t NAME: an image name (KILN_EUSAGE naming -t otherwise). */
int cli_tag_check(const char *name, KilnError **err);
/* An IMAGE argument: a file source imported into s (its first image), else a store name. */
int cli_image_source(Store *s, const char *ref, OciDescriptor *ret, KilnError **err);
