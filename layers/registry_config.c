#include "registry_config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "layers/http.h"
#include "layers/oci.h"
#include "layers/reference.h"

#define CERTS_FILES_MAX 64

typedef struct RegEntry {
	char *domain;
	char **mirrors;	    /* the file's */
	char **cli_mirrors; /* --registry-mirror's */
	bool mirror_only, insecure;
	char *ca;
} RegEntry;

struct RegistryConfig {
	RegEntry *entries;
	size_t n;
	char *tls_ca;
	char **certs_dirs; /* NULL: the default roots */
};

/* ---------- names ---------- */

/* Lowercase, docker.io's aliases folded; NULL for an invalid HOST[:PORT]. */
static char *host_canonical(const char *host, size_t len)
{
	char *h = strndup(host, len);

	if (!h)
		abort();
	for (char *p = h; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!ref_domain_valid(h, len)) {
		free(h);
		return NULL;
	}
	if (ref_domain_is_hub(h, len)) {
		free(h);
		return xstrdup(REF_DEFAULT_DOMAIN);
	}
	return h;
}

char *registry_domain_canonical(const char *domain)
{
	static const char *const paths[] = {"", "/", "/v1", "/v1/", "/v2", "/v2/"};
	const char *p = domain;
	size_t n;

	if (strncasecmp(p, "https://", 8) == 0)
		p += 8;
	else if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	n = strcspn(p, "/");
	for (size_t i = 0; i < ELEMENTSOF(paths); i++)
		if (strcmp(p + n, paths[i]) == 0)
			return host_canonical(p, n);
	return NULL;
}

/* A repository path: path components joined by '/'. */
static bool repo_prefix_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > REF_NAME_MAX)
		return false;
	for (size_t i = 0; i <= n;) {
		size_t c = strcspn(s + i, "/");
		if (!ref_path_component_valid(s + i, c))
			return false;
		i += c + 1;
	}
	return true;
}

/* "HOST[:PORT][/PREFIX]" -> canonical host and prefix ("" none). */
static int mirror_split(const char *spec, char **ret_host, char **ret_prefix)
{
	size_t n = strcspn(spec, "/");
	char *host = host_canonical(spec, n);

	if (!host)
		return -EINVAL;
	if (spec[n] == '/' && !repo_prefix_valid(spec + n + 1)) {
		free(host);
		return -EINVAL;
	}
	*ret_host = host;
	*ret_prefix = xstrdup(spec[n] == '/' ? spec + n + 1 : "");
	return 0;
}

static bool mirror_valid(const char *spec)
{
	_cleanup_free_ char *h = NULL;
	_cleanup_free_ char *p = NULL;

	return mirror_split(spec, &h, &p) == 0;
}

/* ---------- the config object ---------- */

RegistryConfig *registry_config_new(void)
{
	return xcalloc(1, sizeof(RegistryConfig));
}

void registry_config_free(RegistryConfig *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->entries[i].domain);
		strv_free(c->entries[i].mirrors);
		strv_free(c->entries[i].cli_mirrors);
		free(c->entries[i].ca);
	}
	free(c->entries);
	free(c->tls_ca);
	strv_free(c->certs_dirs);
	free(c);
}

static RegEntry *entry_find(const RegistryConfig *c, const char *domain)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->entries[i].domain, domain) == 0)
			return &c->entries[i];
	return NULL;
}

static RegEntry *entry_add(RegistryConfig *c, char *domain)
{
	c->entries = xrealloc(c->entries, (c->n + 1) * sizeof(*c->entries));
	c->entries[c->n] = (RegEntry){.domain = domain};
	return &c->entries[c->n++];
}

int registry_config_add_mirror(RegistryConfig *c, const char *spec, KilnError **err)
{
	const char *eq = strchr(spec, '=');
	_cleanup_free_ char *name = eq ? strndup(spec, (size_t)(eq - spec)) : NULL;
	_cleanup_free_ char *domain = name ? registry_domain_canonical(name) : NULL;
	RegEntry *e;

	if (!domain || !mirror_valid(eq + 1))
		return kiln_error(err, KILN_EUSAGE,
				  "--registry-mirror '%s': want REGISTRY=MIRROR, each HOST[:PORT] "
				  "(a mirror may add /PATH)",
				  EXCERPT(spec));
	e = entry_find(c, domain);
	if (!e)
		e = entry_add(c, TAKE_PTR(domain));
	if (strv_length(e->cli_mirrors) >= REGISTRY_MIRRORS_MAX)
		return kiln_error(err, KILN_EUSAGE, "more than %d mirrors for '%s'",
				  REGISTRY_MIRRORS_MAX, e->domain);
	strv_push(&e->cli_mirrors, eq + 1);
	return 0;
}

int registry_config_set_tls_ca(RegistryConfig *c, const char *path, KilnError **err)
{
	if (access(path, R_OK) < 0)
		return kiln_error_errno(err, errno, "--tls-ca '%s'", path);
	free(c->tls_ca);
	c->tls_ca = xstrdup(path);
	return 0;
}

void registry_config_set_certs_dirs(RegistryConfig *c, char *const *dirs)
{
	strv_free(c->certs_dirs);
	c->certs_dirs = dirs ? strv_copy(dirs) : NULL;
}

/* ---------- the file ---------- */

static int bad_key(const char *source, const char *domain, const char *key, const char *what,
		   KilnError **err)
{
	if (!domain)
		return kiln_error(err, EINVAL, "config '%s': %s: %s", source, key, what);
	return kiln_error(err, EINVAL, "config '%s': registries.\"%s\".%s: %s", source,
			  EXCERPT(domain), key, what);
}

static int parse_mirrors(const char *source, const char *domain, json_t *v, RegEntry *e,
			 KilnError **err)
{
	size_t i;
	json_t *m;

	if (!json_is_array(v))
		return bad_key(source, domain, "mirrors", "not an array", err);
	if (json_array_size(v) > REGISTRY_MIRRORS_MAX)
		return bad_key(source, domain, "mirrors", "more than 32 mirrors", err);
	json_array_foreach (v, i, m) {
		char key[32];
		snprintf(key, sizeof(key), "mirrors[%zu]", i);
		if (!json_is_string(m))
			return bad_key(source, domain, key, "not a string", err);
		if (!mirror_valid(json_string_value(m))) {
			_cleanup_free_ char *what =
			    xasprintf("'%s' is not HOST[:PORT][/PATH] (no scheme: mark a plain "
				      "HTTP mirror \"insecure\" in its own entry)",
				      EXCERPT(json_string_value(m)));
			return bad_key(source, domain, key, what, err);
		}
		strv_push(&e->mirrors, json_string_value(m));
	}
	return 0;
}

static int parse_bool(const char *source, const char *domain, const char *key, json_t *v, bool *ret,
		      KilnError **err)
{
	if (!json_is_boolean(v))
		return bad_key(source, domain, key, "not true or false", err);
	*ret = json_is_true(v);
	return 0;
}

static int parse_entry(RegistryConfig *c, const char *source, const char *key, json_t *v,
		       KilnError **err)
{
	_cleanup_free_ char *domain = host_canonical(key, strlen(key));
	const char *k;
	json_t *f;
	RegEntry *e;
	int r = 0;

	if (!domain)
		return kiln_error(err, EINVAL, "config '%s': registries: '%s' is not HOST[:PORT]",
				  source, EXCERPT(key));
	if (entry_find(c, domain))
		return kiln_error(err, EINVAL, "config '%s': registries: '%s' is listed twice",
				  source, EXCERPT(key));
	if (!json_is_object(v))
		return kiln_error(err, EINVAL, "config '%s': registries.\"%s\": not an object",
				  source, EXCERPT(key));
	e = entry_add(c, TAKE_PTR(domain));
	json_object_foreach (v, k, f) {
		if (strcmp(k, "mirrors") == 0)
			r = parse_mirrors(source, key, f, e, err);
		else if (strcmp(k, "mirror-only") == 0)
			r = parse_bool(source, key, k, f, &e->mirror_only, err);
		else if (strcmp(k, "insecure") == 0)
			r = parse_bool(source, key, k, f, &e->insecure, err);
		else if (strcmp(k, "ca") != 0)
			r = bad_key(source, key, EXCERPT(k),
				    "unknown key (known: mirrors, mirror-only, insecure, ca)", err);
		else if (!json_is_string(f) || json_string_value(f)[0] != '/')
			r = bad_key(source, key, k, "not an absolute path", err);
		else
			e->ca = xstrdup(json_string_value(f));
		if (r < 0)
			return r;
	}
	return 0;
}

int registry_config_parse(const char *data, size_t len, const char *source, RegistryConfig **ret,
			  KilnError **err)
{
	_cleanup_(registry_config_freep) RegistryConfig *c = registry_config_new();
	json_error_t je;
	_cleanup_json_ json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	json_t *regs, *v;
	const char *k;
	int r;

	if (len > REGISTRY_CONFIG_MAX)
		return kiln_error(err, EFBIG, "config '%s': larger than %u bytes", source,
				  REGISTRY_CONFIG_MAX);
	if (!root)
		return kiln_error(err, EINVAL, "config '%s': line %d: %s", source, je.line,
				  je.text);
	if (!json_is_object(root))
		return kiln_error(err, EINVAL, "config '%s': not a JSON object", source);
	json_object_foreach (root, k, v) {
		if (strcmp(k, "registries") != 0)
			return bad_key(source, NULL, EXCERPT(k), "unknown key (known: registries)",
				       err);
	}
	regs = json_object_get(root, "registries");
	if (regs && !json_is_object(regs))
		return bad_key(source, NULL, "registries", "not an object", err);
	if (regs && json_object_size(regs) > REGISTRY_CONFIG_ENTRIES_MAX)
		return bad_key(source, NULL, "registries", "more than 1024 entries", err);
	json_object_foreach (regs, k, v) {
		if ((r = parse_entry(c, source, k, v, err)) < 0)
			return r;
	}
	*ret = TAKE_PTR(c);
	return 0;
}

/* The file to read: path or $KILN_CONFIG (must exist), else the first default that exists. */
static int config_open(const char *path, char **ret_path, int *ret_fd, KilnError **err)
{
	const char *env = getenv("KILN_CONFIG");
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	_cleanup_free_ char *user = xdg && *xdg	    ? xasprintf("%s/kiln/config.json", xdg)
				    : home && *home ? xasprintf("%s/.config/kiln/config.json", home)
						    : NULL;
	const char *candidates[] = {user, "/etc/kiln/config.json"};
	const char *must = path ? path : env && *env ? env : NULL;

	*ret_fd = -1;
	for (size_t i = 0; i < (must ? 1 : ELEMENTSOF(candidates)); i++) {
		const char *p = must ? must : candidates[i];
		if (!p)
			continue;
		int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0 && (errno != ENOENT || must))
			return kiln_error_errno(err, errno, "config '%s'", p);
		if (fd >= 0) {
			*ret_fd = fd;
			*ret_path = xstrdup(p);
			return 0;
		}
	}
	return 0;
}

int registry_config_load(const char *path, RegistryConfig **ret, KilnError **err)
{
	_cleanup_free_ char *file = NULL;
	_cleanup_free_ char *data = NULL;
	_cleanup_close_ int fd = -1;
	size_t len = 0;
	int r = config_open(path, &file, &fd, err);

	if (r < 0)
		return r;
	if (fd < 0) {
		*ret = registry_config_new();
		return 0;
	}
	_cleanup_free_ char *what = xasprintf("config '%s'", file);
	r = read_regular_fd(fd, what, REGISTRY_CONFIG_MAX, &data, &len, err);
	if (r < 0)
		return r;
	return registry_config_parse(data, len, file, ret, err);
}

/* ---------- endpoints ---------- */

static char **certs_dirs_default(void)
{
	const char *env = getenv("KILN_CERTS_DIRS");
	char **v = NULL;

	if (env) {
		_cleanup_free_ char *copy = xstrdup(env);
		char *save = NULL;
		for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save))
			strv_push(&v, d);
		return v ? v : xcalloc(1, sizeof(char *));
	}
	if (geteuid() != 0) {
		const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
		if (xdg && *xdg)
			strv_consume(&v, xasprintf("%s/containers/certs.d", xdg));
		else if (home && *home)
			strv_consume(&v, xasprintf("%s/.config/containers/certs.d", home));
	}
	strv_push(&v, "/etc/containers/certs.d");
	strv_push(&v, "/etc/docker/certs.d");
	return v;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

/* DIR/HOST: *.crt into ep->ca_files, the first NAME.cert (with NAME.key) as client cert. */
static int certs_scan_dir(const char *root, const char *host, RegistryEndpoint *ep, KilnError **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/%s", root, host);
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_strv_free_ char **names = NULL;
	int r;

	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR
			   ? 0
			   : kiln_error_errno(err, errno, "certs.d '%s'", dir);
	r = dir_list_sorted(fd, &names, err);
	if (r < 0)
		return r;
	for (size_t i = 0; names[i]; i++) {
		if (strv_length(ep->ca_files) >= CERTS_FILES_MAX)
			return kiln_error(err, E2BIG, "certs.d '%s': more than %d files", dir,
					  CERTS_FILES_MAX);
		if (has_suffix(names[i], ".crt"))
			strv_consume(&ep->ca_files, xasprintf("%s/%s", dir, names[i]));
		if (!has_suffix(names[i], ".cert") || ep->client_cert)
			continue;
		_cleanup_free_ char *key =
		    xasprintf("%s/%.*s.key", dir, (int)(strlen(names[i]) - 5), names[i]);
		if (access(key, R_OK) < 0)
			return kiln_error_errno(err, errno,
						"certs.d client certificate '%s/%s': key '%s'", dir,
						names[i], key);
		ep->client_cert = xasprintf("%s/%s", dir, names[i]);
		ep->client_key = xstrdup(key);
	}
	return 0;
}

static int endpoint_tls(const RegistryConfig *c, const char *domain, RegistryEndpoint *ep,
			KilnError **err)
{
	const RegEntry *own = entry_find(c, domain);
	_cleanup_strv_free_ char **defaults = c->certs_dirs ? NULL : certs_dirs_default();
	char **roots = c->certs_dirs ? c->certs_dirs : defaults;
	int r;

	ep->insecure = own && own->insecure;
	ep->plain_http_ok = ep->insecure || http_host_is_loopback(ep->host);
	if (!ep->ca_files)
		ep->ca_files = xcalloc(1, sizeof(char *));
	if (own && own->ca)
		strv_push(&ep->ca_files, own->ca);
	for (size_t i = 0; roots[i]; i++) {
		r = certs_scan_dir(roots[i], ep->host, ep, err);
		if (r >= 0 && strcmp(domain, ep->host) != 0)
			r = certs_scan_dir(roots[i], domain, ep, err);
		if (r < 0)
			return r;
	}
	if (c->tls_ca)
		strv_push(&ep->ca_files, c->tls_ca);
	return 0;
}

static int endpoint_add(const RegistryConfig *c, RegistryEndpoint **v, size_t *n, const char *host,
			const char *prefix, bool mirror, KilnError **err)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*v)[i].host, host) == 0 && strcmp((*v)[i].prefix, prefix) == 0)
			return 0;
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	RegistryEndpoint *ep = &(*v)[(*n)++];
	*ep = (RegistryEndpoint){
	    .host = xstrdup(ref_registry_host(host)), .prefix = xstrdup(prefix), .mirror = mirror};
	return endpoint_tls(c, host, ep, err);
}

static int mirrors_add(const RegistryConfig *c, char *const *mirrors, RegistryEndpoint **v,
		       size_t *n, KilnError **err)
{
	for (size_t i = 0; mirrors && mirrors[i]; i++) {
		_cleanup_free_ char *host = NULL;
		_cleanup_free_ char *prefix = NULL;
		int r = mirror_split(mirrors[i], &host, &prefix);
		if (r < 0)
			return kiln_error(err, EINVAL, "mirror '%s' is not HOST[:PORT][/PATH]",
					  EXCERPT(mirrors[i]));
		r = endpoint_add(c, v, n, host, prefix, true, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int registry_config_endpoints(const RegistryConfig *c, const char *domain, bool push,
			      RegistryEndpoint **ret, size_t *ret_n, KilnError **err)
{
	_cleanup_free_ char *d = registry_domain_canonical(domain);
	RegistryEndpoint *v = NULL;
	size_t n = 0;
	const RegEntry *e;
	int r = 0;

	if (!d)
		return kiln_error(err, EINVAL, "'%s' is not a registry HOST[:PORT]",
				  EXCERPT(domain));
	e = entry_find(c, d);
	if (!push && e) {
		r = mirrors_add(c, e->cli_mirrors, &v, &n, err);
		if (r >= 0)
			r = mirrors_add(c, e->mirrors, &v, &n, err);
	}
	if (r >= 0 && (push || !e || !e->mirror_only))
		r = endpoint_add(c, &v, &n, d, "", false, err);
	if (r >= 0 && n == 0)
		r = kiln_error(err, ENOENT, "registry '%s' is mirror-only and has no mirrors", d);
	if (r < 0) {
		registry_endpoints_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

void registry_endpoints_free(RegistryEndpoint *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].host);
		free(v[i].prefix);
		strv_free(v[i].ca_files);
		free(v[i].client_cert);
		free(v[i].client_key);
	}
	free(v);
}
