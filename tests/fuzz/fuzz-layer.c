/* libFuzzer target: arbitrary bytes as a layer (any compression) applied into a temp dir. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "layers/layer_apply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_close_ int src = memfd_create("fuzz-layer", MFD_CLOEXEC);
	_cleanup_error_ KilnError *err = NULL;
	char tmpl[] = "/tmp/fuzz-layer-XXXXXX";
	LayerApplyOptions o = {.mode = (size & 1) ? LAYER_APPLY_OVERLAY : LAYER_APPLY_MERGE,
			       .whiteouts = true,
			       .force_uid = (uid_t)-1,
			       .force_gid = (gid_t)-1,
			       .max_bytes = 64 << 20,
			       .max_entries = 10000};
	char diff_id[DIGEST_STRING_MAX];

	if (src < 0 || write_all(src, data, size) < 0 || lseek(src, 0, SEEK_SET) < 0)
		return 0;
	if (!mkdtemp(tmpl))
		return 0;
	int dest = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest >= 0) {
		(void)layer_apply(src, dest, &o, diff_id, &err);
		close(dest);
	}
	rm_rf_at(AT_FDCWD, tmpl, NULL);
	return 0;
}
