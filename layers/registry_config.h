/* Which hosts kiln talks to for a registry, and how: the config file, --registry-mirror,
 * --tls-ca and the certs.d directories.
 *
 * The config file is JSON, found at $KILN_CONFIG (which must exist), else
 * $XDG_CONFIG_HOME/kiln/config.json (default ~/.config), else /etc/kiln/config.json; none is an
 * empty config:
 *
 *   {"registries": {"docker.io": {"mirrors": ["mirror.local:5000", "harbor.corp/dockerhub"],
 *                                 "mirror-only": false, "insecure": false,
 *                                 "ca": "/etc/ssl/corp-ca.pem"}}}
 *
 * Keys of "registries" are registry domains as written in image references (HOST[:PORT];
 * "index.docker.io" and "registry-1.docker.io" mean docker.io). "mirrors" are HOST[:PORT] with
 * an optional repository prefix (a mirror path "harbor.corp/dockerhub" serves docker.io's
 * "library/busybox" as "dockerhub/library/busybox"), tried in order before the registry itself,
 * for pulls only: a push always goes to the registry it names. "mirror-only": never fall back
 * to the registry (an air-gapped network). "insecure": plain HTTP is allowed and certificates
 * are not verified (as docker's insecure-registries). "ca": an absolute path to a PEM file of
 * CAs trusted for that host in addition to the system's. A mirror's own TLS settings come from
 * its own entry ("registries": {"mirror.local:5000": {"insecure": true}}).
 *
 * Everything is validated when loaded: the file is at most REGISTRY_CONFIG_MAX bytes, unknown
 * keys and wrong types are errors that name the file and the key. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

#define REGISTRY_CONFIG_MAX (1u << 20)
#define REGISTRY_CONFIG_ENTRIES_MAX 1024
#define REGISTRY_MIRRORS_MAX 32

typedef struct RegistryConfig RegistryConfig;

/* An empty config (no file). */
RegistryConfig *registry_config_new(void);

/* Finds and reads the config file as described above (path: this file instead of the search,
 * which then must exist). */
int registry_config_load(const char *path, RegistryConfig **ret, KilnError **err);

/* Parses a config document; source names it in errors (the file's path). */
int registry_config_parse(const char *data, size_t len, const char *source, RegistryConfig **ret,
			  KilnError **err);

void registry_config_free(RegistryConfig *c);
static inline void registry_config_freep(RegistryConfig **c)
{
	registry_config_free(*c);
}

/* --registry-mirror DOMAIN=MIRROR: MIRROR is tried for DOMAIN before the file's mirrors. */
int registry_config_add_mirror(RegistryConfig *c, const char *spec, KilnError **err);

/* --tls-ca FILE: a PEM file of CAs trusted for every registry in addition to the system's
 * (and certs.d's); it must be readable now. */
int registry_config_set_tls_ca(RegistryConfig *c, const char *path, KilnError **err);

/* The roots searched for HOST/ directories of CA files: $KILN_CERTS_DIRS (colon-separated; for
 * tests and unusual hosts) when set, else ~/.config/containers/certs.d (not for root),
 * /etc/containers/certs.d and /etc/docker/certs.d. In HOST/ (the host as in the endpoint,
 * with its port), *.crt files are CAs added to the system's, and NAME.cert with NAME.key a
 * client certificate, as docker and podman read them. dirs NULL: back to the default. */
void registry_config_set_certs_dirs(RegistryConfig *c, char *const *dirs);

/* One host to try for a registry, with its TLS settings. */
typedef struct RegistryEndpoint {
	char *host;	    /* HOST[:PORT] to connect to (docker.io: ref_registry_host's) */
	char *prefix;	    /* prepended to repository names ("" none) */
	bool mirror;	    /* a mirror, not the registry itself */
	bool insecure;	    /* marked insecure: plain HTTP allowed, certificates not verified */
	bool plain_http_ok; /* insecure, or a loopback host: HTTPS first, then plain HTTP */
	char **ca_files;    /* extra CA files (the entry's "ca", certs.d *.crt, --tls-ca) */
	char *client_cert;  /* certs.d NAME.cert and NAME.key, or NULL */
	char *client_key;
} RegistryEndpoint;

/* The endpoints to try, in order, for domain (a reference's registry: "docker.io",
 * "ghcr.io", "localhost:5000"): for a pull the mirrors (--registry-mirror first, then the
 * file's), then the registry itself unless mirror-only; for a push the registry only. */
int registry_config_endpoints(const RegistryConfig *c, const char *domain, bool push,
			      RegistryEndpoint **ret, size_t *ret_n, KilnError **err);
void registry_endpoints_free(RegistryEndpoint *v, size_t n);

/* A registry domain as kiln keys it: lowercase, "index.docker.io" and "registry-1.docker.io"
 * as "docker.io", an "https://" prefix and a trailing "/" or "/v1/"/"/v2/" path dropped (as
 * docker accepts hosts written as URLs); NULL when what remains is not a valid domain
 * (ref_domain_valid: safe as a path component, as certs.d uses it). */
char *registry_domain_canonical(const char *domain);
