/* Image references: the grammar of github.com/distribution/reference (what docker, containerd,
 * BuildKit and the registries accept), normalized the way docker normalizes what users type.
 *
 *   reference := name [":" tag] ["@" digest]
 *   name      := [domain "/"] path-component ("/" path-component)*
 *   domain    := host [":" port]; host := dns-name | "[" ipv6 "]"; dns-name components are
 *                [A-Za-z0-9] or [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9], joined by "."
 *   path-component := [a-z0-9]+ (separator [a-z0-9]+)*; separator := "." | "_" | "__" | "-"+
 *   tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *   digest    := "sha256:" 64 lowercase hex (the grammar allows other algorithms; kiln refuses
 *                them by name: every digest kiln handles is sha256)
 *
 * The first component is the domain when it holds a "." or a ":", is "localhost", or has an
 * upper-case letter; else the name is on Docker Hub: domain "docker.io", and a one-component
 * path gets "library/" ("busybox" -> "docker.io/library/busybox"). "index.docker.io" and
 * "registry-1.docker.io" are the same registry and are written "docker.io". The domain and
 * path together ("docker.io/library/busybox") are at most 255 bytes. A 64-hex-digit name alone
 * is refused (docker reads it as an image id). When there is neither a tag nor a digest the tag
 * is "latest"; with a digest and no tag there is no tag.
 *
 * So "busybox:1.36", "docker.io/library/busybox:1.36" and "index.docker.io/library/busybox:1.36"
 * parse to one Reference with one canonical string: every name kiln stores, looks up or writes
 * goes through here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/digest.h"
#include "common/error.h"

#define REF_NAME_MAX 255 /* domain "/" path */
#define REF_TAG_MAX 128
#define REF_DEFAULT_DOMAIN "docker.io"
#define REF_DEFAULT_TAG "latest"

typedef struct Reference {
	char domain[REF_NAME_MAX + 1];	/* "docker.io", "reg.io:5000", "[::1]:5000", "localhost" */
	char path[REF_NAME_MAX + 1];	/* "library/busybox", "team/app" */
	char tag[REF_TAG_MAX + 1];	/* "" only when digest is set and no tag was given */
	char digest[DIGEST_STRING_MAX]; /* "sha256:<hex>" or "" */
} Reference;

/* Parses and normalizes s (see above). Errors are KILN_EUSAGE and quote s: "invalid image
 * reference 'X': repository name must be lowercase", "...: digest algorithm 'sha512' is not
 * supported (kiln handles sha256 digests)", "...: name longer than 255 bytes" and so on. */
int ref_parse(const char *s, Reference *ret, KilnError **err);

/* ref_parse() for a name that is to name an image (-t, kiln load NAME, a store name): a digest
 * is refused ("a name cannot hold a digest"), so the result always has a tag. */
int ref_parse_name(const char *s, Reference *ret, KilnError **err);

/* The canonical string: "docker.io/library/busybox:1.36", "reg.io:5000/a/b@sha256:...",
 * "docker.io/library/x:t@sha256:..." when both. malloc'd. */
char *ref_string(const Reference *r);

/* The short form docker shows: "docker.io/" dropped, and "library/" for a one-component path
 * on it ("busybox:1.36", "me/app:1", "reg.io/x/y:t", "busybox@sha256:..."). malloc'd. */
char *ref_familiar(const Reference *r);

/* The repository: domain "/" path ("docker.io/library/busybox"). malloc'd. */
char *ref_repository(const Reference *r);

/* ref_string() of ref_parse_name(s): the form kiln stores names in. */
int ref_canonical_name(const char *s, char **ret, KilnError **err);

/* Same domain, path, tag and digest. */
bool ref_equal(const Reference *a, const Reference *b);

/* The grammar's parts, for names that reach the registry client in pieces (the registry
 * config, kiln login's HOST, a reference given as domain, repository and tag): a domain
 * (HOST[:PORT], a port 1-65535), one path component, a tag, and whether a domain is one of
 * Docker Hub's spellings. p need not be NUL-terminated. */
bool ref_domain_valid(const char *p, size_t n);
bool ref_path_component_valid(const char *p, size_t n);
bool ref_tag_valid(const char *p, size_t n);
bool ref_domain_is_hub(const char *p, size_t n);

/* The host to talk to for a domain's registry API: "registry-1.docker.io" for "docker.io" (the
 * index domain names Docker Hub but does not serve /v2/), the domain itself (with its port)
 * otherwise. Points to static storage or into domain. */
const char *ref_registry_host(const char *domain);
