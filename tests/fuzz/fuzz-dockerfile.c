/* libFuzzer target: Dockerfile parser and its `kiln parse` JSON rendering. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "builder/dockerfile.h"
#include "builder/parse_json.h"
#include "common/cleanup.h"
#include "common/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(dockerfile_freep) Dockerfile *df = NULL;
	_cleanup_error_ KilnError *err = NULL;
	json_t *j = NULL;

	if (size > 256 * 1024)
		return 0;
	if (dockerfile_parse("Dockerfile", (const char *)data, size, &df, &err) < 0)
		return 0;
	if (dockerfile_to_json(df, &j, &err) == 0) {
		char *s = json_dumps(j, JSON_COMPACT);
		free(s);
		json_decref(j);
	}
	for (size_t i = 0; i < df->n_insts; i++) {
		char **all = df_instruction_flag_all(&df->insts[i], "mount");
		(void)df_instruction_flag(&df->insts[i], "from");
		strv_free(all);
	}
	return 0;
}
