/* The registry client: the OCI distribution API requests that pull and push are made of.
 *
 * One RegistryClient per process, shared by every thread (all functions are thread-safe).
 * Each request:
 *   - goes to the endpoints of the repository's registry in order (registry_config_endpoints):
 *     for a pull the mirrors then the registry (the next one is tried when one fails: not
 *     found, unreachable, refused; one that is unreachable is skipped for the rest of the
 *     process), for a push (RegistryRepo.push) the named registry only;
 *   - over HTTPS with the endpoint's CAs (plain HTTP only for a loopback host or one marked
 *     insecure, when its HTTPS port does not speak TLS); the /v2/ ping is made once per host;
 *   - authorised as the host's challenge asks (registry_auth.h) with the scopes the request
 *     needs ("repository:NAME:pull", "pull,push" for a push, plus "repository:FROM:pull" for a
 *     mount); a 401 refreshes the token once (with the scope an insufficient_scope challenge
 *     names) and repeats the request;
 *   - retried with backoff on 5xx, 429 and broken connections (HttpRetry) when idempotent; a
 *     blob upload that fails is started again from the beginning.
 *
 * Everything read from a registry is bounded and checked: manifests are at most
 * OCI_MANIFEST_MAX bytes and their digest is computed from the bytes received, compared with
 * Docker-Content-Digest and with a digest the caller asked for; blobs stream through a digest
 * and size check.
 *
 * Errors name the registry, repository and reference; their codes: ENOENT (manifest or blob
 * unknown), EACCES (authentication refused or missing: the message says how to log in),
 * ENOTSUP (a schema 1 manifest, an unsupported media type), EIO (a digest or size mismatch, an
 * unexpected answer), or the transport's (layers/http.h). Secrets never appear in them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/digest.h"
#include "common/error.h"
#include "layers/http.h"
#include "layers/registry_config.h"
#include "layers/registry_creds.h"

typedef struct RegistryClient RegistryClient;

/* Upload sizes: a blob up to monolithic_max bytes is sent with one PUT, a larger one in PATCH
 * chunks of chunk_size (or the registry's OCI-Chunk-Min-Length when larger). */
#define REGISTRY_MONOLITHIC_MAX_DEFAULT (64ull << 20)
#define REGISTRY_CHUNK_SIZE_DEFAULT (32ull << 20)

typedef struct RegistryClientOptions {
	/* Mirrors, insecure registries, CAs: NULL for an empty config. Borrowed: it must
	 * outlive the client. */
	const RegistryConfig *config;
	/* Runs credential helpers (builder/credhelper.h); run NULL: a configured helper is an
	 * error when its credentials are needed. */
	RegistryHelper helper;
	const HttpRetry *retry;	 /* NULL: HTTP_RETRY_DEFAULT */
	uint64_t monolithic_max; /* 0: REGISTRY_MONOLITHIC_MAX_DEFAULT */
	uint64_t chunk_size;	 /* 0: REGISTRY_CHUNK_SIZE_DEFAULT */
} RegistryClientOptions;

int registry_client_new(const RegistryClientOptions *o, RegistryClient **ret, KilnError **err);
/* Takes NULL. No request may be running. */
void registry_client_free(RegistryClient *c);
static inline void registry_client_freep(RegistryClient **c)
{
	registry_client_free(*c);
}

/* The repository a request is about: from a parsed reference (layers/reference.h),
 * {.domain = ref.domain, .repository = ref.path}; the tag or digest is the request's
 * reference argument (ref.digest when set, else ref.tag). */
typedef struct RegistryRepo {
	const char *domain;	/* "docker.io", "ghcr.io", "localhost:5000" (any spelling of it) */
	const char *repository; /* "library/busybox" */
	bool push; /* part of a push: the named registry only, scope pull,push, HTTP/1.1 */
} RegistryRepo;

/* ---------- manifests ---------- */

/* The manifest media types kiln asks for and accepts: OCI index and manifest, Docker manifest
 * list and schema 2 (the Accept header of every manifest request). */
bool registry_manifest_type_supported(const char *media_type);

typedef struct RegistryManifest {
	char *data; /* the bytes as received (NUL-terminated) */
	size_t len;
	char media_type[128];
	char digest[DIGEST_STRING_MAX]; /* sha256 of data */
	char *endpoint;			/* the host that answered (a mirror or the registry) */
} RegistryManifest;

void registry_manifest_done(RegistryManifest *m);
#define _cleanup_registry_manifest_ __attribute__((cleanup(registry_manifest_done)))

/* GET a manifest or index by tag or digest ("1.36", "sha256:..."). Its media type comes from
 * Content-Type, else from the document's mediaType, else from its shape; schema 1 (and any
 * type registry_manifest_type_supported refuses) is ENOTSUP with a message that says so. The
 * digest is computed from the bytes; it must equal Docker-Content-Digest when the registry
 * sends one and the reference when that is a digest (EIO otherwise). */
int registry_manifest_get(RegistryClient *c, const RegistryRepo *repo, const char *reference,
			  RegistryManifest *ret, KilnError **err);

typedef struct RegistryDescriptor {
	char media_type[128];
	char digest[DIGEST_STRING_MAX];
	int64_t size;
} RegistryDescriptor;

/* HEAD a manifest: resolves a tag to a digest without its bytes (when the registry sends no
 * Docker-Content-Digest, a GET does it). ENOENT when the registry does not have it. */
int registry_manifest_head(RegistryClient *c, const RegistryRepo *repo, const char *reference,
			   RegistryDescriptor *ret, KilnError **err);

/* PUT a manifest or index under reference (a tag, or its own digest) with its media type, to the
 * named registry (as if repo->push were set). The bytes go unchanged; a Docker-Content-Digest in
 * the answer must equal their digest, which *ret_digest (may be NULL) receives. */
int registry_manifest_put(RegistryClient *c, const RegistryRepo *repo, const char *reference,
			  const char *media_type, const void *data, size_t len,
			  char ret_digest[DIGEST_STRING_MAX], KilnError **err);

/* ---------- blobs ---------- */

/* HEAD a blob: *ret_exists and (when it exists) *ret_size. Not having it is not an error. */
int registry_blob_head(RegistryClient *c, const RegistryRepo *repo, const char *digest,
		       bool *ret_exists, int64_t *ret_size, KilnError **err);

/* Where a blob's bytes go while they arrive: write gets them in order (hash and store them as
 * they come); restart (may be NULL) discards what was written because the download starts over
 * (from another endpoint, or after a broken connection that cannot resume). Return < 0 to
 * stop. Only a 0 from registry_blob_get says the bytes are right: commit nothing before. */
typedef struct RegistryBlobSink {
	int (*write)(void *userdata, const void *data, size_t len, KilnError **err);
	int (*restart)(void *userdata, KilnError **err);
	void *userdata;
	/* Optional: a sink that hashes what it gets (a store blob writer) gives the digest of the
	 * bytes written so far here, and the client does not hash them a second time. */
	int (*digest)(void *userdata, char ret_digest[DIGEST_STRING_MAX], KilnError **err);
} RegistryBlobSink;

/* GET a blob (following the registry's redirect to blob storage, without credentials) into
 * sink. size: the descriptor's size, or -1. More bytes than size stop the download; at the
 * end the size and the digest must match (EIO naming the digest: the sink got bad bytes). A
 * broken download resumes with Range where the server allows it, else restarts. */
int registry_blob_get(RegistryClient *c, const RegistryRepo *repo, const char *digest, int64_t size,
		      const RegistryBlobSink *sink, KilnError **err);

/* registry_blob_get into memory, at most max bytes (EFBIG): configs (OCI_CONFIG_MAX). */
int registry_blob_read(RegistryClient *c, const RegistryRepo *repo, const char *digest,
		       int64_t size, size_t max, char **ret_data, size_t *ret_len, KilnError **err);

typedef enum {
	REGISTRY_BLOB_UPLOADED = 0,
	REGISTRY_BLOB_MOUNTED, /* cross-repository mount: no bytes sent */
} RegistryBlobPushed;

/* Uploads size bytes of fd (from offset 0, read with pread) as blob digest into repo, at the
 * named registry (as if repo->push were set). mount_from (may be NULL): another repository of the
 * same registry that has the blob; kiln asks to mount it from there first (POST ?mount=&from=: 201
 * mounted, 202 not, then the upload goes on in that session). Blobs up to monolithic_max go in one
 * PUT, larger ones in PATCH chunks then a PUT. A failure that a retry can fix starts the upload
 * again (a new session). The registry checks the digest; the caller should HEAD first
 * (registry_blob_head) to skip blobs the registry has.
 * fd -1 (with mount_from): mount only, for a blob whose bytes are not here (kiln merge of images
 * in a registry): when the registry does not mount it, the upload session is cancelled and the
 * answer is ENOENT ("not mounted"); the caller then fetches the bytes and pushes them. */
int registry_blob_push(RegistryClient *c, const RegistryRepo *repo, const char *digest, int fd,
		       uint64_t size, const char *mount_from, RegistryBlobPushed *ret_how,
		       KilnError **err);

/* ---------- login ---------- */

/* kiln login: checks username and secret against domain's registry (the /v2/ ping, then a token
 * for them from its token server, or /v2/ with basic auth). 0: accepted; 1: the registry asks
 * for no authentication, so they could not be checked; EACCES: refused. */
int registry_login_check(RegistryClient *c, const char *domain, const char *username,
			 const char *secret, KilnError **err);
