/* Platform strings ("os/arch[/variant]"): parsing, normalisation and matching. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

typedef struct Platform {
	char os[32];
	char arch[32];
	char variant[16];
} Platform;

/* Enough for any platform_format() output. */
#define PLATFORM_STRING_MAX 96

/* Parses and normalises "os/arch[/variant]" (also "arch" alone = linux/arch, and a known OS alone =
 * that OS on the host architecture) as containerd's platforms.Normalize does: x86_64/x86-64 ->
 * amd64 (variant v1 -> ""), aarch64 -> arm64 (variant v8/8 -> "": canonical is no variant),
 * armhf -> arm/v7, armel -> arm/v6, arm alone -> arm/v7, arm variant "7" -> "v7",
 * i386/i686/x86 -> 386; os and arch are lowercased. Empty or overlong parts, more than three parts
 * or characters outside [A-Za-z0-9._-] are an error (KILN_EUSAGE) that names the string. */
int platform_parse(const char *s, Platform *ret, KilnError **err);

/* Normalises the parts as platform_parse() does, from separate strings (an image config's os,
 * architecture and variant; variant may be NULL). */
int platform_from_parts(const char *os, const char *arch, const char *variant, Platform *ret,
			KilnError **err);

/* "linux/arm64", "linux/arm/v7" into out (n >= PLATFORM_STRING_MAX never truncates). */
void platform_format(const Platform *p, char *out, size_t n);

/* The platform of the running kernel, from uname(2), normalised. */
void platform_host(Platform *ret);

bool platform_equal(const Platform *a, const Platform *b);

/* Whether an image for `have` can serve a request for `want` and how well (higher = better,
 * -1 = no): exact os/arch/variant is best (100); arm/v7 can take v6 and v5 images, arm/v6 v5;
 * arm64 "" == "v8"; amd64 v2..v4 can take lower levels down to v1 (""). Each level of downgrade
 * costs 10 points. */
int platform_match_score(const Platform *want, const Platform *have);
