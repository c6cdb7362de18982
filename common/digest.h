/* SHA-256 content digests in OCI form ("sha256:<64 lowercase hex>"). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* "sha256:" + 64 hex + NUL */
#define DIGEST_STRING_MAX 72

typedef struct Sha256 Sha256;

int sha256_new(Sha256 **ret, KilnError **err);
void sha256_update(Sha256 *h, const void *data, size_t len);
/* Writes "sha256:<hex>" into out; the hasher may not be updated afterwards. */
void sha256_final(Sha256 *h, char out[DIGEST_STRING_MAX]);
void sha256_free(Sha256 *h);
static inline void sha256_freep(Sha256 **h)
{
	sha256_free(*h);
}

/* One-shot digest of a buffer. */
void digest_buffer(const void *data, size_t len, char out[DIGEST_STRING_MAX]);

/* True for "sha256:" followed by exactly 64 lowercase hex characters, nothing else.
 * Every digest read from outside must pass this before it is used in a path. */
bool digest_is_valid(const char *digest);

/* The hex part of a valid digest (pointer into the argument). */
const char *digest_hex(const char *digest);
