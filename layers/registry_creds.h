/* Registry credentials: where they are kept, how kiln finds them, and `kiln login`/`logout`'s
 * writes.
 *
 * Sources, in this order (the first that has credentials for the registry wins):
 *   1. $REGISTRY_AUTH_FILE: a containers auth.json (podman, buildah, skopeo).
 *   2. docker's config: $DOCKER_CONFIG/config.json, else ~/.docker/config.json:
 *      "credHelpers": {"HOST": "NAME"} runs docker-credential-NAME for HOST;
 *      "auths": {"HOST": {"auth": base64("user:password")}} (or "username"/"password", and
 *      "identitytoken": an OAuth2 refresh token); "credsStore": "NAME" runs
 *      docker-credential-NAME for every other host.
 *   3. $XDG_RUNTIME_DIR/containers/auth.json (podman login's default).
 * Keys are matched as docker and podman match them: "https://index.docker.io/v1/",
 * "index.docker.io", "registry-1.docker.io" and "docker.io" all mean Docker Hub, a scheme and a
 * trailing "/" or "/v1/" are ignored; an auth.json key may name a repository namespace
 * ("quay.io/org"): the longest one that contains the repository wins.
 *
 * Credential helpers follow docker's protocol: `docker-credential-NAME get` with the server on
 * stdin prints {"Username": ..., "Secret": ...} (a Username of "<token>" makes the secret an
 * identity token); `store` reads {"ServerURL", "Username", "Secret"}; `erase` reads the server.
 * Secrets go through pipes only, never argv or the environment. layers/ never runs a process:
 * the caller (builder/) supplies the runner.
 *
 * Secrets are never part of an error message; they are wiped from memory when freed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* Files read here are at most this big. */
#define REGISTRY_CREDS_FILE_MAX (4u << 20)

typedef struct RegistryCreds {
	char *username; /* NULL: no credentials */
	char *secret;	/* a password, or with identity_token an OAuth2 refresh token */
	bool identity_token;
	char *source; /* where they came from, for messages: a file or "credential helper 'NAME'" */
} RegistryCreds;

/* Wipes the secret and frees; the struct may be reused. */
void registry_creds_done(RegistryCreds *c);
#define _cleanup_creds_ __attribute__((cleanup(registry_creds_done)))

/* Runs `docker-credential-<helper> <action>` with input on its stdin: 0 with its exit status and
 * stdout (at most 1 MiB, NUL-terminated), or < 0 when it could not run (ENOENT: not on PATH). */
typedef int (*RegistryHelperFn)(void *userdata, const char *helper, const char *action,
				const char *input, int *ret_status, char **ret_output,
				KilnError **err);
typedef struct RegistryHelper {
	RegistryHelperFn run; /* NULL: configured helpers are an error when needed */
	void *userdata;
} RegistryHelper;

/* Credentials for domain (canonical, see registry_domain_canonical) and repository (may be
 * NULL: the registry as a whole). 0 with ret->username NULL when no source has any. Errors:
 * unreadable or malformed files (naming the file and key), a helper that fails. */
int registry_creds_lookup(const char *domain, const char *repository, const RegistryHelper *h,
			  RegistryCreds *ret, KilnError **err);

/* docker's config file: $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json. */
char *registry_docker_config_path(void);

/* How docker names a registry in its config and to helpers: "https://index.docker.io/v1/" for
 * docker.io, else the domain. */
const char *registry_creds_server(const char *domain);

/* kiln login: keeps username and secret for domain in docker's config, the way docker login
 * does: with the credential helper the config names for domain (credHelpers, else credsStore)
 * when there is one, else as "auths": {SERVER: {"auth": base64("user:secret")}}, replacing any
 * other key for the same registry. The file is rewritten atomically, mode 0600, its other keys
 * kept; its directory is made 0700 when missing. *ret_where (when not NULL) names where they
 * went. */
int registry_creds_store(const char *domain, const char *username, const char *secret,
			 const RegistryHelper *h, char **ret_where, KilnError **err);

/* kiln logout: removes domain's credentials from docker's config (every key that means it) and
 * from its credential helper. *ret_found: whether there were any. */
int registry_creds_erase(const char *domain, const RegistryHelper *h, bool *ret_found,
			 KilnError **err);

/* base64 (RFC 4648, padded); decoding refuses anything else. For tests too. */
char *registry_base64_encode(const void *data, size_t len);
int registry_base64_decode(const char *s, char **ret, size_t *ret_len);
