/* Runs docker credential helpers for the registry client (layers/ never runs a process): the
 * RegistryHelperFn of layers/registry_creds.h. */
#pragma once

#include "common/error.h"

/* Helpers get this long to answer (a helper may wait on a keyring or a pinentry prompt). */
#define CREDHELPER_TIMEOUT_S 120
/* What a helper may print. */
#define CREDHELPER_OUTPUT_MAX (1u << 20)

/* Runs `docker-credential-<helper> <action>` found on PATH, with input on its stdin (a socket:
 * a helper that exits without reading cannot raise SIGPIPE in kiln) and its stderr kiln's;
 * returns 0 with its exit status (128 + N when killed by signal N) and its stdout
 * (NUL-terminated, at most CREDHELPER_OUTPUT_MAX bytes), or < 0 when it cannot run (ENOENT:
 * not on PATH) or does not finish in CREDHELPER_TIMEOUT_S (ETIMEDOUT; it is killed). Nothing
 * secret goes in its argv or environment. userdata is unused. */
int credhelper_run(void *userdata, const char *helper, const char *action, const char *input,
		   int *ret_status, char **ret_output, KilnError **err);
