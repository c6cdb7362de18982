/* libFuzzer target: what registries and users hand the registry client. The first byte picks
 * the parser: 0 WWW-Authenticate values (one per line), 1 the config file (then the endpoints
 * of a few registries, with no certs.d), 2 a registry name and a --registry-mirror spec, 3
 * base64 (docker config's "auth"). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/registry_auth.h"
#include "layers/registry_config.h"
#include "layers/registry_creds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_challenges(char *text)
{
	char **values = NULL;
	char *save = NULL;
	RegistryChallenge *v = NULL;
	size_t n = 0;

	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		strv_push(&values, l);
	if (registry_challenges_parse(values, &v, &n, NULL) == 0) {
		const RegistryChallenge *pick = registry_challenges_pick(v, n);
		if (pick) {
			RegistryChallenge copy;
			registry_challenge_copy(&copy, pick);
			registry_challenge_done(&copy);
		}
		registry_challenges_free(v, n);
	}
	strv_free(values);
}

static void fuzz_config(const char *text, size_t len)
{
	static const char *const domains[] = {"docker.io", "localhost:5000", "a.io", "[::1]:1"};
	char *none[] = {NULL};
	RegistryConfig *c = NULL;

	if (registry_config_parse(text, len, "fuzz", &c, NULL) < 0)
		return;
	registry_config_set_certs_dirs(c, none);
	for (size_t i = 0; i < ELEMENTSOF(domains); i++)
		for (int push = 0; push < 2; push++) {
			RegistryEndpoint *v = NULL;
			size_t n = 0;
			if (registry_config_endpoints(c, domains[i], push, &v, &n, NULL) == 0)
				registry_endpoints_free(v, n);
		}
	registry_config_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	char *text = strndup((const char *)data + 1, size - 1);
	size_t len = strlen(text);

	switch (data[0] % 4) {
	case 0:
		fuzz_challenges(text);
		break;
	case 1:
		fuzz_config(text, len);
		break;
	case 2: {
		RegistryConfig *c = registry_config_new();
		free(registry_domain_canonical(text));
		registry_config_add_mirror(c, text, NULL);
		registry_config_free(c);
		break;
	}
	default: {
		char *out = NULL;
		size_t n = 0;
		if (registry_base64_decode(text, &out, &n) == 0) {
			/* Padding bits may differ (as Go's decoder allows), the bytes may not. */
			char *back = registry_base64_encode(out, n), *again = NULL;
			size_t m = 0;
			if (registry_base64_decode(back, &again, &m) < 0 || m != n ||
			    memcmp(again, out, n) != 0)
				abort();
			free(again);
			free(back);
			free(out);
		}
		break;
	}
	}
	free(text);
	return 0;
}
