/* libFuzzer target: bytes as a manifest, an index, an image config, a descriptor, a platform
 * string and an image reference. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "platforms/platform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	OciImage *img = NULL;
	OciDescriptor *v = NULL;
	size_t n = 0;

	if (oci_manifest_parse(text, size, &img, NULL) == 0) {
		/* The same bytes as this manifest's config. */
		oci_config_parse(img, text, size, false, NULL);
		oci_image_free(img);
	}
	if (oci_index_parse(text, size, &v, &n, NULL) == 0)
		oci_descriptors_free(v, n);

	json_t *j = json_loadb(text, size, 0, NULL);
	if (j) {
		OciDescriptor d;
		if (oci_descriptor_from_json(j, &d, NULL) == 0) {
			json_t *back = oci_descriptor_to_json(&d);
			free(oci_json_dump(back));
			json_decref(back);
			oci_descriptor_done(&d);
		}
		json_decref(j);
	}

	_cleanup_free_ char *s = xcalloc(1, size + 1);
	memcpy(s, data, size);
	Platform p, q;
	if (platform_parse(s, &p, NULL) == 0) {
		char out[PLATFORM_STRING_MAX];
		platform_format(&p, out, sizeof(out));
		if (platform_parse(out, &q, NULL) == 0)
			platform_match_score(&p, &q);
	}
	/* An image reference: its canonical and familiar forms must read back as the same. */
	Reference ref, again;
	_cleanup_error_ KilnError *e = NULL;
	if (ref_parse(s, &ref, &e) == 0) {
		_cleanup_free_ char *canon = ref_string(&ref), *fam = ref_familiar(&ref);
		_cleanup_free_ char *repo = ref_repository(&ref);
		if (ref_parse(canon, &again, NULL) < 0 || !ref_equal(&ref, &again) ||
		    ref_parse(fam, &again, NULL) < 0 || !ref_equal(&ref, &again) ||
		    strlen(repo) > REF_NAME_MAX)
			abort();
		(void)ref_registry_host(ref.domain);
	}
	return 0;
}
