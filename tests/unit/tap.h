/* Minimal TAP producer for unit tests: one binary per module, plain C, no framework.
 *
 *   TEST(name) { ... CHECK(cond); CHECK_EQ_STR(a, b); ... }
 *   int main(void) { RUN(name); ...; return tap_done(); }
 *
 * Each test runs in a fresh temp dir (cwd), removed afterwards. tap_skip_all() exits 77. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static int tap_n, tap_failed, tap_cur_failed;

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			printf("#   %s:%d: check failed: %s\n", __FILE__, __LINE__, #c);           \
			tap_cur_failed = 1;                                                        \
		}                                                                                  \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
	do {                                                                                       \
		const char *_a = (a), *_b = (b);                                                   \
		if (!_a || !_b || strcmp(_a, _b) != 0) {                                           \
			printf("#   %s:%d: '%s' != '%s'\n", __FILE__, __LINE__,                    \
			       _a ? _a : "(null)", _b ? _b : "(null)");                            \
			tap_cur_failed = 1;                                                        \
		}                                                                                  \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
	do {                                                                                       \
		long long _a = (long long)(a), _b = (long long)(b);                                \
		if (_a != _b) {                                                                    \
			printf("#   %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a,   \
			       _a, _b);                                                            \
			tap_cur_failed = 1;                                                        \
		}                                                                                  \
	} while (0)

#define TEST(name) static void test_##name(void)

#define RUN(name) tap_run(#name, test_##name)

static inline void tap_run(const char *name, void (*fn)(void))
{
	char tmpl[] = "/tmp/kiln-unit-XXXXXX";
	char *dir = mkdtemp(tmpl);
	char *old = getcwd(NULL, 0);

	if (!dir || chdir(dir) < 0) {
		printf("not ok %d - %s # cannot make temp dir\n", ++tap_n, name);
		tap_failed++;
		free(old);
		return;
	}
	tap_cur_failed = 0;
	fn();
	if (chdir(old) < 0)
		perror("chdir");
	free(old);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", dir, dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	printf("%s %d - %s\n", tap_cur_failed ? "not ok" : "ok", ++tap_n, name);
	if (tap_cur_failed)
		tap_failed++;
	fflush(stdout);
}

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

/* Skips the whole binary with a reason; KILN_MUST_WORK=1 turns the skip into a failure. */
static inline void tap_skip_all(const char *reason)
{
	const char *must = getenv("KILN_MUST_WORK");
	if (must && strcmp(must, "1") == 0) {
		printf("Bail out! %s (KILN_MUST_WORK=1)\n", reason);
		exit(1);
	}
	printf("1..0 # SKIP %s\n", reason);
	exit(77);
}
