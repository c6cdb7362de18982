/* The registry side of the command line: `kiln login`, `kiln logout`, the hidden
 * `kiln registry-debug` (for the tests), and the options every command that talks to a
 * registry takes. */
#pragma once

#include <getopt.h>
#include <stdint.h>

#include "common/error.h"
#include "layers/registry.h"
#include "layers/registry_config.h"

/* getopt values of the registry options; above cli.c's own. */
enum {
	OPT_TLS_CA = 2000,
	OPT_REGISTRY_MIRROR,
};

/* --tls-ca FILE: CAs trusted for every registry besides the system's and certs.d's.
 * --registry-mirror DOMAIN=MIRROR (repeatable): tried before the config file's mirrors.
 * Add these to a command's getopt table and hand its options to registry_cli_option. */
#define REGISTRY_CLI_OPTIONS                                                                       \
	{"tls-ca", required_argument, NULL, OPT_TLS_CA},                                           \
	{                                                                                          \
		"registry-mirror", required_argument, NULL, OPT_REGISTRY_MIRROR                    \
	}
#define REGISTRY_CLI_USAGE                                                                         \
	"  --tls-ca FILE                   trust these CAs for every registry\n"                   \
	"  --registry-mirror DOMAIN=MIRROR try MIRROR (HOST[:PORT][/PATH]) first for DOMAIN\n"

typedef struct RegistryCliOptions {
	const char *tls_ca;
	char **mirrors; /* "DOMAIN=MIRROR" */
	/* kiln push's hidden --chunk-size N (for the tests): blobs above N bytes go up in PATCH
	 * chunks of N; 0: the client's defaults */
	uint64_t chunk_size;
} RegistryCliOptions;

void registry_cli_options_done(RegistryCliOptions *o);

/* 1 when opt is a registry option (taken into o), 0 when it is not one. */
int registry_cli_option(int opt, const char *arg, RegistryCliOptions *o);

/* The config file (registry_config_load) with the options applied, and a client that runs
 * credential helpers (builder/credhelper.h). *ret_config must outlive *ret_client. */
int registry_cli_client(const RegistryCliOptions *o, RegistryConfig **ret_config,
			RegistryClient **ret_client, KilnError **err);

/* kiln login [-u USER] [-p PASSWORD | --password-stdin] [--tls-ca FILE] [HOST] */
int cmd_login(int argc, char **argv, KilnError **err);
/* kiln logout [HOST] */
int cmd_logout(int argc, char **argv, KilnError **err);
/* kiln registry-debug manifest|blob|push-blob|put-manifest ...: the registry client's
 * requests one at a time, for the integration tests (kiln pull and push are made of them). */
int cmd_registry_debug(int argc, char **argv, KilnError **err);
