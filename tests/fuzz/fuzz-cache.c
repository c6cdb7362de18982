/* libFuzzer target: what a --cache-from source hands kiln. The first byte picks the parser: 0 the
 * cache document (kiln-cache.json, a registry cache's config; what parses must format and parse
 * back to the same bytes), else a registry cache's manifest. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cache-registry.h"
#include "builder/cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_doc(const char *text, size_t len)
{
	CacheDoc doc = {0}, back = {0};
	size_t n = 0, m = 0;

	if (cache_doc_parse(text, len, &doc, NULL) < 0)
		return;
	char *a = cache_doc_format(&doc, &n);
	if (cache_doc_parse(a, n, &back, NULL) < 0)
		abort();
	char *b = cache_doc_format(&back, &m);
	if (n != m || memcmp(a, b, n) != 0)
		abort();
	OciDescriptor *layers = NULL;
	cache_doc_layers(&doc, &layers, &n);
	oci_descriptors_free(layers, n);
	free(a);
	free(b);
	cache_doc_done(&doc);
	cache_doc_done(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	OciDescriptor config, *layers = NULL;
	size_t n = 0;

	if (size < 1)
		return 0;
	if (data[0] == 0) {
		fuzz_doc((const char *)data + 1, size - 1);
	} else if (cache_manifest_parse((const char *)data + 1, size - 1, &config, &layers, &n,
					NULL) == 0) {
		oci_descriptors_free(layers, n);
	}
	return 0;
}
