/* libFuzzer target: bytes as an image archive given to kiln load. The first byte picks how it is
 * named (oci-archive:, docker-archive: or detected by content), the rest is the tar. Everything
 * imported is then walked as one graph (indexes, manifests, configs) as kiln load does. A fresh
 * store per input, removed afterwards, on /dev/shm where there is one (the store fsyncs every
 * blob, which tmpfs makes free). */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "layers/import.h"
#include "layers/oci.h"
#include "layers/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk_imported(Store *s, const ImportedImage *v, size_t n)
{
	_cleanup_free_ OciDescriptor *roots = xcalloc(n + 1, sizeof(*roots));
	OciImage **imgs = NULL;
	size_t ni = 0;

	for (size_t i = 0; i < n; i++)
		roots[i] = v[i].root;
	if (oci_images_load(s, roots, n, &imgs, &ni, NULL) == 0)
		oci_images_free(imgs, ni);
	for (size_t i = 0; i < n; i++) {
		Platform *p = NULL;
		size_t np = 0;
		if (oci_list_platforms(s, &v[i].root, &p, &np, NULL) == 0)
			free(p);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const kinds[] = {"oci-archive:", "docker-archive:", ""};
	_cleanup_(store_freep) Store *s = NULL;
	ImportedImage *v = NULL;
	size_t n = 0;

	if (size < 1 || size > (8u << 20))
		return 0;
	_cleanup_free_ char *tmpl =
	    xasprintf("%s/fuzz-import-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(tmpl))
		return 0;
	_cleanup_free_ char *archive = xasprintf("%s/in.tar", tmpl);
	_cleanup_free_ char *root = xasprintf("%s/root", tmpl);
	_cleanup_free_ char *spec = xasprintf("%s%s", kinds[data[0] % 3], archive);
	if (write_file_atomic_at(AT_FDCWD, archive, data + 1, size - 1, 0644, NULL) == 0 &&
	    store_open(root, &s, NULL) == 0 && image_import(s, spec, &v, &n, NULL) == 0) {
		walk_imported(s, v, n);
		imported_images_free(v, n);
	}
	store_free(TAKE_PTR(s));
	rm_rf_at(AT_FDCWD, tmpl, NULL);
	return 0;
}
