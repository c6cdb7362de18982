/* Registry authentication: WWW-Authenticate challenges, bearer tokens and basic auth (the
 * distribution token flow that Docker Hub, GHCR, ECR, Harbor and quay use).
 *
 * A registry answers the /v2/ ping (or any request) with 401 and a challenge:
 *   Bearer realm="https://auth.example/token",service="registry.example"   -> a token, asked from
 *     the realm with GET ?service=S&scope=repository:NAME:pull[,push][&scope=...] (Basic auth
 *     with the credentials, none for an anonymous token), or with an identity token by
 *     POST grant_type=refresh_token (OAuth2). The answer's "token" or "access_token" is sent as
 *     "Authorization: Bearer ..." until "expires_in" (default and minimum 60 s) runs out;
 *     tokens are cached per (host, scope set, user).
 *   Basic realm="..."  -> "Authorization: Basic base64(user:password)".
 * Credentials come from registry_creds_lookup, once per registry and repository per process.
 * Thread-safe: one RegistryAuth serves every thread of a process. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "layers/http.h"
#include "layers/registry_creds.h"

/* Caps on challenges (hostile input: any server can send them). */
#define REGISTRY_CHALLENGES_MAX 16
#define REGISTRY_CHALLENGE_PARAMS_MAX 32
/* A token server's answer is at most this big. */
#define REGISTRY_TOKEN_MAX (1u << 20)

typedef enum {
	REGISTRY_AUTH_OTHER = 0, /* a scheme kiln does not answer (Negotiate, ...) */
	REGISTRY_AUTH_BASIC,
	REGISTRY_AUTH_BEARER,
} RegistryAuthScheme;

typedef struct RegistryChallenge {
	RegistryAuthScheme scheme;
	char *realm; /* the parameters kiln uses (names are case-insensitive), or NULL */
	char *service;
	char *scope;
	char *error; /* "insufficient_scope", "invalid_token", ... */
} RegistryChallenge;

/* Parses the values of a response's WWW-Authenticate headers (RFC 7235: several challenges per
 * header, comma-separated auth-params, quoted strings with backslash escapes, token68).
 * Malformed input is an EINVAL error. */
int registry_challenges_parse(char *const *values, RegistryChallenge **ret, size_t *ret_n,
			      KilnError **err);
void registry_challenges_free(RegistryChallenge *v, size_t n);
/* The challenge kiln answers: Bearer with a realm before Basic; NULL when none. */
const RegistryChallenge *registry_challenges_pick(const RegistryChallenge *v, size_t n);
/* A deep copy into dst. */
void registry_challenge_copy(RegistryChallenge *dst, const RegistryChallenge *src);
void registry_challenge_done(RegistryChallenge *c);

typedef struct RegistryAuth RegistryAuth;

/* http must outlive the RegistryAuth; h runs credential helpers (may be NULL). */
RegistryAuth *registry_auth_new(HttpClient *http, const RegistryHelper *h);
void registry_auth_free(RegistryAuth *a);
static inline void registry_auth_freep(RegistryAuth **a)
{
	registry_auth_free(*a);
}

/* What one request needs authorised. */
typedef struct RegistryAuthRequest {
	const char *host;	 /* the endpoint (HOST[:PORT]) the request goes to */
	const char *cred_domain; /* whose credentials: the endpoint's registry ("docker.io") */
	const char *repository;	 /* for auth.json namespace keys; may be NULL */
	const RegistryChallenge *challenge; /* the host's; NULL or OTHER: no header */
	char *const *scopes;		    /* "repository:NAME:pull[,push]", NULL-terminated */
	const HttpTls *tls;		    /* for the realm */
	bool plain_realm_ok;		    /* the registry may use a plain HTTP realm */
	/* kiln login: these credentials instead of the stores', and no token cache; the token
	 * request names the account. */
	const RegistryCreds *creds;
} RegistryAuthRequest;

/* The "Authorization: ..." header line for the request in *ret (NULL when none applies:
 * no challenge, or basic auth without credentials), fetching a token when needed. Errors:
 * EACCES when the token server refuses (naming where the credentials came from, never them),
 * EIO/EPROTO for unusable answers, the transport's errors. */
int registry_auth_header(RegistryAuth *a, const RegistryAuthRequest *rq, char **ret,
			 KilnError **err);

/* Forgets the cached token for (host, scopes) and the user the request would use: a 401 said
 * it no longer works. */
void registry_auth_invalidate(RegistryAuth *a, const RegistryAuthRequest *rq);

/* The credentials the stores have for the request's registry and repository (looked up once
 * per process and cached); username NULL when none. Borrowed: valid while a lives. */
int registry_auth_creds(RegistryAuth *a, const char *domain, const char *repository,
			const RegistryCreds **ret, KilnError **err);
