#include "reference.h"

#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

/* Longest input worth reading: a reference is at most 255 + 1 + 128 + 1 + 71 bytes. */
#define REF_INPUT_MAX 512
/* What an error message quotes of the input (names come from archives: hostile). */
#define QUOTE_MAX 300

static const char *const hub_aliases[] = {"docker.io", "index.docker.io", "registry-1.docker.io"};

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_word(char c)
{
	return is_alnum(c) || c == '_';
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The input as a message may show it: at most QUOTE_MAX bytes, unprintable bytes as \xNN. */
static char *quote(const char *s)
{
	size_t n = strnlen(s, QUOTE_MAX + 1), o = 0;
	char *out = xcalloc(1, QUOTE_MAX * 4 + 4);

	for (size_t i = 0; i < n && i < QUOTE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\'')
			out[o++] = (char)c;
		else
			o += (size_t)sprintf(out + o, "\\x%02x", c);
	}
	if (n > QUOTE_MAX)
		strcpy(out + o, "...");
	return out;
}

static int ref_fail(KilnError **err, const char *s, const char *why)
{
	_cleanup_free_ char *q = quote(s);

	return kiln_error(err, KILN_EUSAGE, "invalid image reference '%s': %s", q, why);
}

/* path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := "." | "_" | "__" | "-"+ */
bool ref_path_component_valid(const char *p, size_t n)
{
	size_t i = 0;

	if (n == 0 || !is_lower_alnum(p[0]) || !is_lower_alnum(p[n - 1]))
		return false;
	while (i < n) {
		if (is_lower_alnum(p[i])) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && !is_lower_alnum(p[j]))
			j++;
		size_t sep = j - i;
		bool dashes = strspn(p + i, "-") >= sep;
		if (!(sep == 1 && (p[i] == '.' || p[i] == '_')) &&
		    !(sep == 2 && p[i] == '_' && p[i + 1] == '_') && !dashes)
			return false;
		i = j;
	}
	return true;
}

/* dns-name := component ("." component)*, component := [A-Za-z0-9] |
 * [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9] */
static bool dns_name_valid(const char *p, size_t n)
{
	size_t i = 0;

	if (n == 0)
		return false;
	while (i <= n) {
		size_t j = i;
		while (j < n && p[j] != '.')
			j++;
		if (j == i || !is_alnum(p[i]) || !is_alnum(p[j - 1]))
			return false;
		for (size_t k = i; k < j; k++)
			if (!is_alnum(p[k]) && p[k] != '-')
				return false;
		i = j + 1;
	}
	return true;
}

/* ":" port, 1..65535 (the grammar takes any digits; no TCP port is larger). */
static bool port_valid(const char *p, size_t n)
{
	unsigned long v = 0;

	if (n == 0 || n > 5 || strspn(p, "0123456789") < n)
		return false;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (unsigned long)(p[i] - '0');
	return v >= 1 && v <= 65535;
}

/* domain := (dns-name | "[" [A-Fa-f0-9:]+ "]") [":" port] */
bool ref_domain_valid(const char *p, size_t n)
{
	size_t host_n;

	if (n > 0 && p[0] == '[') {
		const char *close = memchr(p, ']', n);
		if (!close || close == p + 1)
			return false;
		host_n = (size_t)(close - p) + 1;
		for (size_t i = 1; i + 1 < host_n; i++)
			if (!is_hex(p[i]) && p[i] != ':')
				return false;
	} else {
		const char *colon = memchr(p, ':', n);
		host_n = colon ? (size_t)(colon - p) : n;
		if (!dns_name_valid(p, host_n))
			return false;
	}
	if (host_n == n)
		return true;
	return p[host_n] == ':' && port_valid(p + host_n + 1, n - host_n - 1);
}

/* tag := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
bool ref_tag_valid(const char *t, size_t n)
{
	if (n == 0 || n > REF_TAG_MAX || !is_word(t[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
			return false;
	return true;
}

/* algorithm := [A-Za-z][A-Za-z0-9]* ([-_+.][A-Za-z][A-Za-z0-9]*)* */
static bool algorithm_valid(const char *p, size_t n)
{
	bool start = true;

	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (start && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return false;
		if (start)
			start = false;
		else if (c == '-' || c == '_' || c == '+' || c == '.')
			start = true;
		else if (!is_alnum(c))
			return false;
	}
	return n > 0 && !start;
}

/* digest := algorithm ":" hex{32,}, and of those only sha256 (64 lowercase hex digits). */
static int digest_parse(const char *s, const char *d, Reference *r, KilnError **err)
{
	const char *colon = strchr(d, ':');
	size_t alg_n = colon ? (size_t)(colon - d) : 0;
	size_t hex_n = colon ? strlen(colon + 1) : 0;

	if (!algorithm_valid(d, alg_n) || hex_n < 32 ||
	    strspn(colon + 1, "0123456789abcdefABCDEF") < hex_n)
		return ref_fail(err, s, "invalid digest (expected sha256:<64 hex digits>)");
	if (alg_n != 6 || strncmp(d, "sha256", 6) != 0) {
		_cleanup_free_ char *why = xasprintf(
		    "digest algorithm '%.*s' is not supported (kiln handles sha256 digests)",
		    (int)(alg_n > 32 ? 32 : alg_n), d);
		return ref_fail(err, s, why);
	}
	if (!digest_is_valid(d))
		return ref_fail(err, s, "invalid sha256 digest (expected 64 lowercase hex digits)");
	snprintf(r->digest, sizeof(r->digest), "%s", d);
	return 0;
}

bool ref_domain_is_hub(const char *p, size_t n)
{
	for (size_t i = 0; i < ELEMENTSOF(hub_aliases); i++)
		if (strlen(hub_aliases[i]) == n && !strncmp(p, hub_aliases[i], n))
			return true;
	return false;
}

/* docker's splitDockerDomain: the first component is a domain when it has a "." or ":", is
 * "localhost" or is not lower-case. */
static bool first_is_domain(const char *p, size_t n)
{
	if (memchr(p, '.', n) || memchr(p, ':', n) || (n == 9 && !strncmp(p, "localhost", 9)))
		return true;
	for (size_t i = 0; i < n; i++)
		if (p[i] >= 'A' && p[i] <= 'Z')
			return true;
	return false;
}

/* name (without tag or digest) -> domain and path, validated. */
static int name_parse(const char *s, const char *name, size_t n, Reference *r, KilnError **err)
{
	const char *slash = memchr(name, '/', n);
	const char *path = name;
	size_t path_n = n;

	if (slash && first_is_domain(name, (size_t)(slash - name))) {
		size_t dn = (size_t)(slash - name);
		if (!ref_domain_valid(name, dn))
			return ref_fail(err, s, "invalid registry domain");
		if (dn > REF_NAME_MAX)
			return ref_fail(err, s, "name longer than 255 bytes");
		snprintf(r->domain, sizeof(r->domain), "%.*s", (int)dn,
			 ref_domain_is_hub(name, dn) ? REF_DEFAULT_DOMAIN : name);
		path = slash + 1;
		path_n = n - dn - 1;
	} else {
		snprintf(r->domain, sizeof(r->domain), "%s", REF_DEFAULT_DOMAIN);
	}
	for (size_t i = 0; i < path_n; i++)
		if (path[i] >= 'A' && path[i] <= 'Z')
			return ref_fail(err, s, "repository name must be lowercase");
	for (size_t i = 0; i <= path_n;) {
		const char *end = memchr(path + i, '/', path_n - i);
		size_t cn = end ? (size_t)(end - (path + i)) : path_n - i;
		if (!ref_path_component_valid(path + i, cn))
			return ref_fail(err, s,
					"repository name components are lowercase letters and "
					"digits, joined by '.', '_', '__' or dashes");
		i += cn + 1;
	}
	bool library = !strcmp(r->domain, REF_DEFAULT_DOMAIN) && !memchr(path, '/', path_n);
	if (strlen(r->domain) + 1 + (library ? 8 : 0) + path_n > REF_NAME_MAX)
		return ref_fail(err, s, "name longer than 255 bytes");
	snprintf(r->path, sizeof(r->path), "%s%.*s", library ? "library/" : "", (int)path_n, path);
	return 0;
}

static bool is_image_id(const char *s)
{
	return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

int ref_parse(const char *s, Reference *ret, KilnError **err)
{
	Reference r = {0};
	int k;

	if (!s || !*s)
		return ref_fail(err, "", "empty name");
	if (strnlen(s, REF_INPUT_MAX + 1) > REF_INPUT_MAX)
		return ref_fail(err, s, "longer than any reference can be");
	if (is_image_id(s))
		return ref_fail(err, s, "a 64-hex-digit name is an image id, not a repository");
	const char *at = strchr(s, '@');
	size_t n = at ? (size_t)(at - s) : strlen(s);
	if (at && (k = digest_parse(s, at + 1, &r, err)) < 0)
		return k;
	const char *slash = memrchr(s, '/', n);
	const char *from = slash ? slash : s;
	const char *colon = memchr(from, ':', n - (size_t)(from - s));
	if (colon) {
		const char *last;
		while ((last = memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))))
			colon = last;
		size_t tn = n - (size_t)(colon + 1 - s);
		if (!ref_tag_valid(colon + 1, tn))
			return ref_fail(err, s,
					"invalid tag (letters, digits, '_', '.', '-', at most 128, "
					"not starting with '.' or '-')");
		snprintf(r.tag, sizeof(r.tag), "%.*s", (int)tn, colon + 1);
		n = (size_t)(colon - s);
	} else if (!at) {
		snprintf(r.tag, sizeof(r.tag), "%s", REF_DEFAULT_TAG);
	}
	if (n == 0)
		return ref_fail(err, s, "no repository name");
	k = name_parse(s, s, n, &r, err);
	if (k < 0)
		return k;
	*ret = r;
	return 0;
}

int ref_parse_name(const char *s, Reference *ret, KilnError **err)
{
	Reference r;
	int k = ref_parse(s, &r, err);

	if (k < 0)
		return k;
	if (r.digest[0])
		return ref_fail(err, s, "an image name cannot hold a digest");
	*ret = r;
	return 0;
}

static char *ref_join(const char *repo, const Reference *r)
{
	return xasprintf("%s%s%s%s%s", repo, r->tag[0] ? ":" : "", r->tag, r->digest[0] ? "@" : "",
			 r->digest);
}

char *ref_repository(const Reference *r)
{
	return xasprintf("%s/%s", r->domain, r->path);
}

char *ref_string(const Reference *r)
{
	_cleanup_free_ char *repo = ref_repository(r);

	return ref_join(repo, r);
}

char *ref_familiar(const Reference *r)
{
	if (strcmp(r->domain, REF_DEFAULT_DOMAIN) != 0)
		return ref_string(r);
	const char *path = r->path;
	if (!strncmp(path, "library/", 8) && !strchr(path + 8, '/'))
		path += 8;
	return ref_join(path, r);
}

int ref_canonical_name(const char *s, char **ret, KilnError **err)
{
	Reference r;
	int k = ref_parse_name(s, &r, err);

	if (k < 0)
		return k;
	*ret = ref_string(&r);
	return 0;
}

bool ref_equal(const Reference *a, const Reference *b)
{
	return !strcmp(a->domain, b->domain) && !strcmp(a->path, b->path) &&
	       !strcmp(a->tag, b->tag) && !strcmp(a->digest, b->digest);
}

const char *ref_registry_host(const char *domain)
{
	return strcmp(domain, REF_DEFAULT_DOMAIN) == 0 ? "registry-1.docker.io" : domain;
}
