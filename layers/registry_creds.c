#include "registry_creds.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry_config.h"

#define HELPER_NAME_MAX 64

void registry_creds_done(RegistryCreds *c)
{
	free(c->username);
	secret_free(c->secret);
	free(c->source);
	*c = (RegistryCreds){0};
}

/* ---------- base64 ---------- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *registry_base64_encode(const void *data, size_t len)
{
	const unsigned char *p = data;
	char *out = xcalloc(4 * ((len + 2) / 3) + 1, 1), *o = out;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		*o++ = b64_chars[v >> 18];
		*o++ = b64_chars[(v >> 12) & 63];
		*o++ = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
		*o++ = i + 2 < len ? b64_chars[v & 63] : '=';
	}
	return out;
}

static int b64_value(char ch)
{
	const char *p = ch ? strchr(b64_chars, ch) : NULL;

	return p ? (int)(p - b64_chars) : -1;
}

int registry_base64_decode(const char *s, char **ret, size_t *ret_len)
{
	size_t n = strlen(s), len = 0;
	char *out;

	if (n % 4 != 0)
		return -EINVAL;
	out = xcalloc(n / 4 * 3 + 1, 1);
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		bool last = i + 4 == n;
		for (int k = 0; k < 4; k++)
			v[k] = b64_value(s[i + k]);
		bool pad2 = last && s[i + 2] == '=' && s[i + 3] == '=';
		bool pad1 = last && !pad2 && s[i + 3] == '=';
		if (v[0] < 0 || v[1] < 0 || (v[2] < 0 && !pad2) || (v[3] < 0 && !pad1 && !pad2)) {
			secret_free(out);
			return -EINVAL;
		}
		uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
			     (uint32_t)(pad2 ? 0 : v[2]) << 6 | (uint32_t)(pad1 || pad2 ? 0 : v[3]);
		out[len++] = (char)(x >> 16);
		if (!pad2)
			out[len++] = (char)(x >> 8);
		if (!pad1 && !pad2)
			out[len++] = (char)x;
	}
	*ret = out;
	*ret_len = len;
	return 0;
}

/* ---------- names and files ---------- */

const char *registry_creds_server(const char *domain)
{
	return strcmp(domain, REF_DEFAULT_DOMAIN) == 0 ? "https://index.docker.io/v1/" : domain;
}

char *registry_docker_config_path(void)
{
	const char *d = getenv("DOCKER_CONFIG"), *home = getenv("HOME");

	if (d && *d)
		return xasprintf("%s/config.json", d);
	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw && pw->pw_dir ? pw->pw_dir : "/";
	}
	return xasprintf("%s/.docker/config.json", home);
}

/* The registry a config key names, and (namespaces: auth.json) the repository namespace after
 * it ("" for none); docker's keys are host names, any path ignored. NULL: not a registry. */
static char *key_domain(const char *key, bool namespaces, char **ret_ns)
{
	const char *p = key;
	size_t n;

	if (strncasecmp(p, "https://", 8) == 0)
		p += 8;
	else if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	n = strcspn(p, "/");
	_cleanup_free_ char *host = strndup(p, n);
	_cleanup_free_ char *ns = xstrdup(p[n] == '/' ? p + n + 1 : "");
	size_t l = strlen(ns);
	while (l > 0 && ns[l - 1] == '/')
		ns[--l] = '\0';
	if (!namespaces || strcmp(ns, "v1") == 0 || strcmp(ns, "v2") == 0)
		ns[0] = '\0';
	char *d = host ? registry_domain_canonical(host) : NULL;
	if (d && ret_ns)
		*ret_ns = TAKE_PTR(ns);
	return d;
}

static bool key_means(const char *key, const char *domain)
{
	_cleanup_free_ char *d = key_domain(key, false, NULL);

	return d && strcmp(d, domain) == 0;
}

/* A JSON object from path; 0 with *ret NULL when there is no such file. An empty file is {}. */
static int json_file_load(const char *path, json_t **ret, KilnError **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	_cleanup_free_ char *data = NULL;
	_cleanup_free_ char *what = xasprintf("'%s'", path);
	json_error_t je;
	size_t len = 0;
	int r;

	*ret = NULL;
	if (fd < 0)
		return errno == ENOENT ? 0 : kiln_error_errno(err, errno, "open '%s'", path);
	r = read_regular_fd(fd, what, REGISTRY_CREDS_FILE_MAX, &data, &len, err);
	if (r < 0)
		return r;
	json_t *j = len == strspn(data, " \t\r\n") ? json_object() : json_loadb(data, len, 0, &je);
	explicit_bzero(data, len);
	if (!j)
		return kiln_error(err, EINVAL, "'%s': line %d: %s", path, je.line, je.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return kiln_error(err, EINVAL, "'%s': not a JSON object", path);
	}
	*ret = j;
	return 0;
}

/* ---------- credential helpers ---------- */

static bool helper_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > HELPER_NAME_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return false;
	return true;
}

static bool helper_says_not_found(const char *out)
{
	return out && strcasestr(out, "credentials not found");
}

/* Runs helper ACTION; 0 with its exit status and output. */
static int helper_run(const RegistryHelper *h, const char *name, const char *action,
		      const char *input, int *ret_status, char **ret_output, KilnError **err)
{
	int r;

	if (!helper_name_valid(name))
		return kiln_error(err, EINVAL, "credential helper name '%s' is not valid",
				  EXCERPT(name));
	if (!h || !h->run)
		return kiln_error(err, ENOTSUP, "credential helper '%s' cannot run here", name);
	r = h->run(h->userdata, name, action, input, ret_status, ret_output, err);
	if (r == -ENOENT)
		return kiln_error_wrap(err, r, "credential helper 'docker-credential-%s' %s", name,
				       action);
	return r < 0 ? kiln_error_wrap(err, r, "credential helper '%s' %s", name, action) : 0;
}

static int helper_failed(const char *name, const char *action, int status, const char *out,
			 KilnError **err)
{
	_cleanup_free_ char *line = strndup(out ? out : "", strcspn(out ? out : "", "\n"));

	return kiln_error(
	    err, EACCES, "credential helper 'docker-credential-%s' %s failed (exit %d)%s%s", name,
	    action, status, line && *line ? ": " : "", line && *line ? EXCERPT(line) : "");
}

static int helper_get(const RegistryHelper *h, const char *name, const char *domain,
		      RegistryCreds *ret, KilnError **err)
{
	_cleanup_secret_ char *out = NULL;
	_cleanup_json_ json_t *j = NULL;
	int status = 0, r;

	r = helper_run(h, name, "get", registry_creds_server(domain), &status, &out, err);
	if (r < 0)
		return r;
	if (status != 0)
		return helper_says_not_found(out) ? 0
						  : helper_failed(name, "get", status, out, err);
	j = json_loads(out, 0, NULL);
	const char *user = json_string_value(json_object_get(j, "Username"));
	const char *secret = json_string_value(json_object_get(j, "Secret"));
	if (!user || !secret)
		return kiln_error(err, EINVAL,
				  "credential helper 'docker-credential-%s' get: output is not "
				  "{\"Username\", \"Secret\"}",
				  name);
	if (!*secret)
		return 0;
	ret->identity_token = strcmp(user, "<token>") == 0;
	ret->username = xstrdup(user);
	ret->secret = xstrdup(secret);
	ret->source = xasprintf("credential helper 'docker-credential-%s'", name);
	/* jansson keeps its own copy of the secret: wipe it too. */
	explicit_bzero((char *)secret, strlen(secret));
	return 0;
}

/* ---------- reading a config ---------- */

/* An "auths" entry's credentials; none (0, no username) for an empty entry. */
static int entry_creds(const char *file, const char *key, json_t *e, RegistryCreds *ret,
		       KilnError **err)
{
	const char *auth = json_string_value(json_object_get(e, "auth"));
	const char *user = json_string_value(json_object_get(e, "username"));
	const char *pass = json_string_value(json_object_get(e, "password"));
	const char *token = json_string_value(json_object_get(e, "identitytoken"));
	_cleanup_secret_ char *plain = NULL;
	size_t len = 0;

	if (!json_is_object(e))
		return kiln_error(err, EINVAL, "'%s': auths.\"%s\": not an object", file,
				  EXCERPT(key));
	if (auth && *auth) {
		char *colon;
		if (registry_base64_decode(auth, &plain, &len) < 0 || strlen(plain) != len ||
		    !(colon = strchr(plain, ':')))
			return kiln_error(err, EINVAL,
					  "'%s': auths.\"%s\".auth: not base64 of 'user:password'",
					  file, EXCERPT(key));
		*colon = '\0';
		ret->username = xstrdup(plain);
		ret->secret = xstrdup(colon + 1);
	} else if (user && *user && pass) {
		ret->username = xstrdup(user);
		ret->secret = xstrdup(pass);
	}
	if (token && *token) {
		if (!ret->username)
			ret->username = xstrdup("<token>");
		secret_free(ret->secret);
		ret->secret = xstrdup(token);
		ret->identity_token = true;
	}
	if (ret->username)
		ret->source = xstrdup(file);
	return 0;
}

/* The "auths" key for domain and repository: the longest namespace that holds the repository,
 * docker's own spelling of the server first among equals. */
static const char *auths_best_key(json_t *auths, bool namespaces, const char *domain,
				  const char *repository)
{
	const char *key, *best = NULL;
	size_t best_len = 0;
	json_t *v;

	json_object_foreach (auths, key, v) {
		_cleanup_free_ char *ns = NULL;
		_cleanup_free_ char *d = key_domain(key, namespaces, &ns);
		size_t l = ns ? strlen(ns) : 0;
		if (!d || strcmp(d, domain) != 0)
			continue;
		if (l > 0 && (!repository || strncmp(repository, ns, l) != 0 ||
			      (repository[l] != '\0' && repository[l] != '/')))
			continue;
		if (!best || l > best_len ||
		    (l == best_len && strcmp(key, registry_creds_server(domain)) == 0)) {
			best = key;
			best_len = l;
		}
	}
	return best;
}

/* credHelpers' helper for domain, else (when allowed) credsStore's, else NULL. */
static const char *doc_helper(json_t *doc, const char *domain, bool store_too)
{
	const char *key;
	json_t *v;

	json_object_foreach (json_object_get(doc, "credHelpers"), key, v) {
		if (json_is_string(v) && key_means(key, domain))
			return json_string_value(v);
	}
	v = json_object_get(doc, "credsStore");
	return store_too && json_is_string(v) && *json_string_value(v) ? json_string_value(v)
								       : NULL;
}

static int doc_lookup(const char *file, json_t *doc, bool docker, const char *domain,
		      const char *repository, const RegistryHelper *h, RegistryCreds *ret,
		      KilnError **err)
{
	json_t *auths = json_object_get(doc, "auths");
	const char *helper = doc_helper(doc, domain, false);
	const char *key;
	int r;

	if (helper) {
		r = helper_get(h, helper, domain, ret, err);
		if (r < 0 || ret->username)
			return r;
	}
	if (auths && !json_is_object(auths))
		return kiln_error(err, EINVAL, "'%s': auths: not an object", file);
	key = auths ? auths_best_key(auths, !docker, domain, repository) : NULL;
	if (key) {
		r = entry_creds(file, key, json_object_get(auths, key), ret, err);
		if (r < 0 || ret->username)
			return r;
	}
	helper = docker ? doc_helper(doc, domain, true) : NULL;
	return helper ? helper_get(h, helper, domain, ret, err) : 0;
}

int registry_creds_lookup(const char *domain, const char *repository, const RegistryHelper *h,
			  RegistryCreds *ret, KilnError **err)
{
	const char *auth_file = getenv("REGISTRY_AUTH_FILE"), *run = getenv("XDG_RUNTIME_DIR");
	_cleanup_free_ char *docker = registry_docker_config_path();
	_cleanup_free_ char *podman =
	    run && *run ? xasprintf("%s/containers/auth.json", run) : NULL;
	const char *files[] = {auth_file && *auth_file ? auth_file : NULL, docker, podman};
	int r;

	*ret = (RegistryCreds){0};
	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		_cleanup_json_ json_t *doc = NULL;
		if (!files[i])
			continue;
		r = json_file_load(files[i], &doc, err);
		if (r >= 0 && doc)
			r = doc_lookup(files[i], doc, files[i] == docker, domain, repository, h,
				       ret, err);
		if (r < 0) {
			registry_creds_done(ret);
			return r;
		}
		if (ret->username)
			return 0;
	}
	return 0;
}

/* ---------- kiln login / logout ---------- */

/* Removes every "auths" key that means domain; returns how many. */
static size_t auths_remove(json_t *doc, const char *domain)
{
	json_t *auths = json_object_get(doc, "auths"), *v;
	const char *key;
	void *tmp;
	size_t n = 0;

	if (!json_is_object(auths))
		return 0;
	json_object_foreach_safe(auths, tmp, key, v)
	{
		if (key_means(key, domain)) {
			json_object_del(auths, key);
			n++;
		}
	}
	return n;
}

/* Writes doc to path atomically, mode 0600 (path: where a symlink at it points). */
static int config_write(const char *path, json_t *doc, KilnError **err)
{
	_cleanup_free_ char *real = realpath(path, NULL);
	_cleanup_free_ char *copy = xstrdup(real ? real : path);
	_cleanup_free_ char *copy2 = xstrdup(real ? real : path);
	const char *dir = dirname(copy), *name = basename(copy2);
	_cleanup_close_ int dfd = -1;
	_cleanup_secret_ char *text = NULL;
	int r;

	r = mkdir_p(dir, 0700, err);
	if (r < 0)
		return r;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_errno(err, errno, "open '%s'", dir);
	text = json_dumps(doc, JSON_INDENT(2));
	if (!text)
		return kiln_error(err, ENOMEM, "serialise '%s'", path);
	size_t len = strlen(text);
	text = xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	return write_file_atomic_at(dfd, name, text, len, 0600, err);
}

static int config_load_for_write(const char *path, json_t **ret, KilnError **err)
{
	int r = json_file_load(path, ret, err);

	if (r < 0)
		return kiln_error_wrap(err, r, "keep the credentials");
	if (!*ret)
		*ret = json_object();
	return 0;
}

static int helper_store(const RegistryHelper *h, const char *name, const char *domain,
			const char *username, const char *secret, KilnError **err)
{
	_cleanup_json_ json_t *in =
	    json_pack("{s:s, s:s, s:s}", "ServerURL", registry_creds_server(domain), "Username",
		      username, "Secret", secret);
	_cleanup_secret_ char *input = in ? json_dumps(in, JSON_COMPACT) : NULL;
	_cleanup_secret_ char *out = NULL;
	int status = 0, r;

	if (!input)
		return kiln_error(err, ENOMEM, "credential helper input");
	r = helper_run(h, name, "store", input, &status, &out, err);
	if (r < 0)
		return r;
	return status == 0 ? 0 : helper_failed(name, "store", status, out, err);
}

int registry_creds_store(const char *domain, const char *username, const char *secret,
			 const RegistryHelper *h, char **ret_where, KilnError **err)
{
	_cleanup_free_ char *path = registry_docker_config_path();
	_cleanup_json_ json_t *doc = NULL;
	const char *helper;
	int r;

	if (!*username || strchr(username, ':'))
		return kiln_error(err, KILN_EUSAGE, "a user name is not empty and has no ':'");
	r = config_load_for_write(path, &doc, err);
	if (r < 0)
		return r;
	helper = doc_helper(doc, domain, true);
	if (helper) {
		r = helper_store(h, helper, domain, username, secret, err);
		if (r < 0)
			return r;
		if (ret_where)
			*ret_where = xasprintf("credential helper 'docker-credential-%s'", helper);
		/* No stale copy in the file. */
		return auths_remove(doc, domain) ? config_write(path, doc, err) : 0;
	}
	_cleanup_secret_ char *plain = xasprintf("%s:%s", username, secret);
	_cleanup_secret_ char *b64 = registry_base64_encode(plain, strlen(plain));
	json_t *auths = json_object_get(doc, "auths");
	if (auths && !json_is_object(auths))
		return kiln_error(err, EINVAL, "'%s': auths: not an object", path);
	if (!auths) {
		auths = json_object();
		json_object_set_new(doc, "auths", auths);
	}
	auths_remove(doc, domain);
	json_object_set_new(auths, registry_creds_server(domain), json_pack("{s:s}", "auth", b64));
	r = config_write(path, doc, err);
	if (r < 0)
		return r;
	if (ret_where)
		*ret_where = TAKE_PTR(path);
	return 0;
}

int registry_creds_erase(const char *domain, const RegistryHelper *h, bool *ret_found,
			 KilnError **err)
{
	_cleanup_free_ char *path = registry_docker_config_path();
	_cleanup_json_ json_t *doc = NULL;
	_cleanup_secret_ char *out = NULL;
	const char *helper;
	bool found;
	int status = 0, r;

	r = config_load_for_write(path, &doc, err);
	if (r < 0)
		return r;
	found = auths_remove(doc, domain) > 0;
	if (found && (r = config_write(path, doc, err)) < 0)
		return r;
	helper = doc_helper(doc, domain, true);
	if (helper) {
		r = helper_run(h, helper, "erase", registry_creds_server(domain), &status, &out,
			       err);
		if (r < 0)
			return r;
		if (status != 0 && !helper_says_not_found(out))
			return helper_failed(helper, "erase", status, out, err);
		found = found || status == 0;
	}
	*ret_found = found;
	return 0;
}
