/* libFuzzer target: .dockerignore parsing and matching. The input is split at the first NUL:
 * the ignore file before it, '\n'-separated paths to test after it. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "builder/dockerignore.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(dockerignore_freep) DockerIgnore *di = NULL;
	_cleanup_error_ KilnError *err = NULL;
	const char *text = (const char *)data;
	const char *nul = memchr(text, 0, size);
	size_t ignore_len = nul ? (size_t)(nul - text) : size;

	if (size > 64 * 1024)
		return 0;
	if (dockerignore_parse(text, ignore_len, &di, &err) < 0)
		return 0;
	if (!nul)
		return 0;
	_cleanup_free_ char *paths = xcalloc(size - ignore_len, 1);
	memcpy(paths, nul + 1, size - ignore_len - 1);
	char *save = NULL;
	for (char *p = strtok_r(paths, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
		(void)dockerignore_excluded(di, p);
		(void)dockerignore_may_include_below(di, p);
	}
	return 0;
}
