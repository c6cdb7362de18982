/* The kiln command line: parses arguments, runs a command, prints results and errors. */
#pragma once

#include <stddef.h>

#include "common/error.h"
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
