#include "platform.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

static const char *const known_os[] = {"linux",	  "windows", "darwin",	"freebsd", "netbsd",
				       "openbsd", "solaris", "illumos", "aix",	   "android"};

static bool is_known_os(const char *os)
{
	for (size_t i = 0; i < ELEMENTSOF(known_os); i++)
		if (strcmp(known_os[i], os) == 0)
			return true;
	return false;
}

static bool part_is_valid(const char *p, size_t max)
{
	size_t n = strlen(p);

	if (n == 0 || n >= max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)p[i]) && p[i] != '_' && p[i] != '-' && p[i] != '.')
			return false;
	return true;
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* containerd platforms.normalizeArch, plus the uname(2) spellings of 32-bit arm. */
static void normalize_arch(char *arch, size_t arch_n, char *variant, size_t variant_n)
{
	if (!strcmp(arch, "i386") || !strcmp(arch, "i686") || !strcmp(arch, "x86") ||
	    !strcmp(arch, "386")) {
		snprintf(arch, arch_n, "386");
		variant[0] = 0;
	} else if (!strcmp(arch, "x86_64") || !strcmp(arch, "x86-64") || !strcmp(arch, "amd64")) {
		snprintf(arch, arch_n, "amd64");
		if (!strcmp(variant, "v1"))
			variant[0] = 0;
	} else if (!strcmp(arch, "aarch64") || !strcmp(arch, "arm64")) {
		snprintf(arch, arch_n, "arm64");
		if (!strcmp(variant, "8") || !strcmp(variant, "v8"))
			variant[0] = 0;
	} else if (!strcmp(arch, "armhf")) {
		snprintf(arch, arch_n, "arm");
		snprintf(variant, variant_n, "v7");
	} else if (!strcmp(arch, "armel")) {
		snprintf(arch, arch_n, "arm");
		snprintf(variant, variant_n, "v6");
	} else if (!strncmp(arch, "armv", 4) && arch[4] >= '5' && arch[4] <= '8' &&
		   (!arch[5] || !strcmp(arch + 5, "l"))) {
		char v = arch[4];
		snprintf(arch, arch_n, "arm");
		snprintf(variant, variant_n, "v%c", v);
	} else if (!strcmp(arch, "arm")) {
		if (!variant[0] || !strcmp(variant, "7"))
			snprintf(variant, variant_n, "v7");
		else if (strlen(variant) == 1 && variant[0] >= '5' && variant[0] <= '8') {
			char v = variant[0];
			snprintf(variant, variant_n, "v%c", v);
		}
	}
}

int platform_from_parts(const char *os, const char *arch, const char *variant, Platform *ret,
			KilnError **err)
{
	Platform p = {0};

	if (!os || !part_is_valid(os, sizeof(p.os)))
		return kiln_error(err, KILN_EUSAGE, "invalid platform os '%s'", os ? os : "");
	if (!arch || !part_is_valid(arch, sizeof(p.arch)))
		return kiln_error(err, KILN_EUSAGE, "invalid platform architecture '%s'",
				  arch ? arch : "");
	if (variant && variant[0] && !part_is_valid(variant, sizeof(p.variant)))
		return kiln_error(err, KILN_EUSAGE, "invalid platform variant '%s'", variant);
	snprintf(p.os, sizeof(p.os), "%s", os);
	snprintf(p.arch, sizeof(p.arch), "%s", arch);
	snprintf(p.variant, sizeof(p.variant), "%s", variant ? variant : "");
	lower(p.os);
	lower(p.arch);
	lower(p.variant);
	if (!strcmp(p.os, "macos"))
		snprintf(p.os, sizeof(p.os), "darwin");
	normalize_arch(p.arch, sizeof(p.arch), p.variant, sizeof(p.variant));
	*ret = p;
	return 0;
}

int platform_parse(const char *s, Platform *ret, KilnError **err)
{
	char *parts[4] = {0};
	size_t n = 0;

	if (!s || !*s || strlen(s) >= PLATFORM_STRING_MAX)
		return kiln_error(err, KILN_EUSAGE, "invalid platform '%s'", s ? s : "");
	_cleanup_free_ char *copy = xstrdup(s);
	for (char *p = copy, *slash;; p = slash + 1) {
		if (n == ELEMENTSOF(parts))
			return kiln_error(err, KILN_EUSAGE, "invalid platform '%s': too many parts",
					  s);
		parts[n++] = p;
		slash = strchr(p, '/');
		if (!slash)
			break;
		*slash = 0;
	}
	if (n > 3)
		return kiln_error(err, KILN_EUSAGE, "invalid platform '%s': too many parts", s);
	for (size_t i = 0; i < n; i++)
		if (!part_is_valid(parts[i], sizeof(((Platform *)0)->variant) * 2))
			return kiln_error(err, KILN_EUSAGE,
					  "invalid platform '%s': expected os/arch[/variant]", s);

	int r;
	if (n == 1) {
		_cleanup_free_ char *one = xstrdup(parts[0]);
		lower(one);
		if (is_known_os(one)) {
			Platform host;
			platform_host(&host);
			r = platform_from_parts(one, host.arch, host.variant, ret, err);
		} else
			r = platform_from_parts("linux", parts[0], NULL, ret, err);
	} else
		r = platform_from_parts(parts[0], parts[1], n == 3 ? parts[2] : NULL, ret, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "invalid platform '%s'", s);
	return 0;
}

void platform_format(const Platform *p, char *out, size_t n)
{
	if (p->variant[0])
		snprintf(out, n, "%s/%s/%s", p->os, p->arch, p->variant);
	else
		snprintf(out, n, "%s/%s", p->os, p->arch);
}

void platform_host(Platform *ret)
{
	struct utsname u;

	if (uname(&u) < 0 || platform_from_parts("linux", u.machine, NULL, ret, NULL) < 0) {
		*ret = (Platform){0};
		snprintf(ret->os, sizeof(ret->os), "linux");
		snprintf(ret->arch, sizeof(ret->arch), "unknown");
	}
}

bool platform_equal(const Platform *a, const Platform *b)
{
	return !strcmp(a->os, b->os) && !strcmp(a->arch, b->arch) &&
	       !strcmp(a->variant, b->variant);
}

/* Numeric level of a "vN" variant; "" is `empty`; anything else is -1. */
static int variant_level(const char *v, int empty)
{
	if (!v[0])
		return empty;
	if (v[0] != 'v' || !isdigit((unsigned char)v[1]) || v[2])
		return -1;
	return v[1] - '0';
}

int platform_match_score(const Platform *want, const Platform *have)
{
	if (strcmp(want->os, have->os) != 0 || strcmp(want->arch, have->arch) != 0)
		return -1;
	if (!strcmp(want->variant, have->variant))
		return 100;

	int w, h;
	if (!strcmp(want->arch, "arm")) {
		/* Unnormalised "arm" from a foreign index means v7. */
		w = variant_level(want->variant, 7);
		h = variant_level(have->variant, 7);
	} else if (!strcmp(want->arch, "amd64")) {
		w = variant_level(want->variant, 1);
		h = variant_level(have->variant, 1);
	} else if (!strcmp(want->arch, "arm64")) {
		w = variant_level(want->variant, 8);
		h = variant_level(have->variant, 8);
		/* v8.x refinements are not ordered here: only v8 == "" */
	} else
		return -1;
	if (w < 0 || h < 0 || h > w)
		return -1;
	return 100 - 10 * (w - h);
}
