#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

struct Sha256 {
	EVP_MD_CTX *ctx;
};

int sha256_new(Sha256 **ret, KilnError **err)
{
	Sha256 *h = calloc(1, sizeof(*h));

	if (!h)
		return kiln_error(err, ENOMEM, "out of memory");
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		sha256_free(h);
		return kiln_error(err, ENOMEM, "cannot initialise sha256");
	}
	*ret = h;
	return 0;
}

void sha256_update(Sha256 *h, const void *data, size_t len)
{
	if (len)
		EVP_DigestUpdate(h->ctx, data, len);
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = 0;
}

void sha256_final(Sha256 *h, char out[DIGEST_STRING_MAX])
{
	unsigned char md[32];
	unsigned int n = 0;

	EVP_DigestFinal_ex(h->ctx, md, &n);
	memcpy(out, "sha256:", 7);
	hex_encode(md, 32, out + 7);
}

void sha256_free(Sha256 *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

void digest_buffer(const void *data, size_t len, char out[DIGEST_STRING_MAX])
{
	unsigned char md[32];
	unsigned int n = 0;

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	memcpy(out, "sha256:", 7);
	hex_encode(md, 32, out + 7);
}

bool digest_is_valid(const char *digest)
{
	if (!digest || strncmp(digest, "sha256:", 7) != 0)
		return false;
	const char *p = digest + 7;
	size_t i;
	for (i = 0; p[i]; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return false;
	return i == 64;
}

const char *digest_hex(const char *digest)
{
	return digest + 7;
}
