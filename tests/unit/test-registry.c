/* The registry client's parsers and stores: WWW-Authenticate challenges, the config file and
 * endpoints, credentials from docker's config, auth.json and credential helpers (a fake
 * docker-credential-test on PATH), kiln login's writes. The requests themselves are tested
 * against real registries in tests/integration/t-registry-auth.sh. */
#include <sys/stat.h>

#include "builder/credhelper.h"
#include "httpserver.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/reference.h"
#include "layers/registry_auth.h"
#include "layers/registry_config.h"
#include "layers/registry_creds.h"
#include "tap.h"

static const RegistryHelper helper = {credhelper_run, NULL};

static int parse(const char *const *values, RegistryChallenge **v, size_t *n, KilnError **err)
{
	return registry_challenges_parse((char *const *)values, v, n, err);
}

TEST(challenge_bearer)
{
	const char *h[] = {
	    "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
	    "scope=\"repository:library/busybox:pull\"",
	    NULL};
	RegistryChallenge *v = NULL;
	size_t n = 0;

	CHECK(parse(h, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(v[0].scheme, REGISTRY_AUTH_BEARER);
	CHECK_EQ_STR(v[0].realm, "https://auth.docker.io/token");
	CHECK_EQ_STR(v[0].service, "registry.docker.io");
	CHECK_EQ_STR(v[0].scope, "repository:library/busybox:pull");
	CHECK(v[0].error == NULL);
	CHECK(registry_challenges_pick(v, n) == &v[0]);
	registry_challenges_free(v, n);
}

TEST(challenge_several_and_escapes)
{
	const char *h[] = {
	    "Basic realm=\"Registry Realm\", Negotiate abc/+==, bearer "
	    "Realm=\"https://x/t?a=\\\"b\\\"\" , SERVICE = \"s\\\\x\",error=insufficient_scope",
	    "Basic realm=second", NULL};
	RegistryChallenge *v = NULL;
	size_t n = 0;

	CHECK(parse(h, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 4);
	CHECK_EQ_INT(v[0].scheme, REGISTRY_AUTH_BASIC);
	CHECK_EQ_STR(v[0].realm, "Registry Realm");
	CHECK_EQ_INT(v[1].scheme, REGISTRY_AUTH_OTHER);
	CHECK(v[1].realm == NULL);
	CHECK_EQ_INT(v[2].scheme, REGISTRY_AUTH_BEARER);
	CHECK_EQ_STR(v[2].realm, "https://x/t?a=\"b\"");
	CHECK_EQ_STR(v[2].service, "s\\x");
	CHECK_EQ_STR(v[2].error, "insufficient_scope");
	CHECK_EQ_INT(v[3].scheme, REGISTRY_AUTH_BASIC);
	CHECK_EQ_STR(v[3].realm, "second");
	/* Bearer first, even listed after Basic. */
	CHECK(registry_challenges_pick(v, n) == &v[2]);
	RegistryChallenge copy;
	registry_challenge_copy(&copy, &v[2]);
	CHECK_EQ_STR(copy.service, "s\\x");
	registry_challenge_done(&copy);
	registry_challenges_free(v, n);
}

TEST(challenge_pick)
{
	const char *basic[] = {"Basic realm=\"r\"", NULL};
	const char *realmless[] = {"Bearer service=\"s\"", "Negotiate", NULL};
	const char *none[] = {"", " , ", NULL};
	RegistryChallenge *v = NULL;
	size_t n = 0;

	CHECK(parse(basic, &v, &n, NULL) == 0);
	CHECK(registry_challenges_pick(v, n) == &v[0]);
	registry_challenges_free(v, n);
	CHECK(parse(realmless, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 2);
	CHECK(registry_challenges_pick(v, n) == NULL);
	registry_challenges_free(v, n);
	CHECK(parse(none, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 0);
	CHECK(registry_challenges_pick(v, n) == NULL);
	registry_challenges_free(v, n);
	/* "realm=" alone is a token68, not a parameter (RFC 7235): no realm. */
	const char *t68[] = {"Bearer realm=", NULL};
	CHECK(parse(t68, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 1);
	CHECK(v[0].realm == NULL);
	CHECK(registry_challenges_pick(v, n) == NULL);
	registry_challenges_free(v, n);
}

TEST(challenge_malformed)
{
	static const char *const bad[] = {
	    "Bearer realm=\"unterminated",
	    "Bearer realm=,service=x",
	    "Bearer realm=https://x/token",
	    "\"quoted\" realm=x",
	    "=x",
	};
	RegistryChallenge *v = NULL;
	size_t n = 0;

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		const char *h[] = {bad[i], NULL};
		if (parse(h, &v, &n, &e) != -EINVAL) {
			printf("#   accepted: %s\n", bad[i]);
			tap_cur_failed = 1;
			registry_challenges_free(v, n);
		}
		CHECK(e && strstr(e->message, "WWW-Authenticate"));
	}
	/* Bounded: 17 challenges, 33 parameters. */
	_cleanup_free_ char *many = xstrdup("Basic");
	for (int i = 0; i < 16; i++) {
		char *m = xasprintf("%s, Basic", many);
		free(many);
		many = m;
	}
	const char *h1[] = {many, NULL};
	CHECK_EQ_INT(parse(h1, &v, &n, NULL), -EINVAL);
	_cleanup_free_ char *params = xstrdup("Bearer a=1");
	for (int i = 0; i < 32; i++) {
		char *m = xasprintf("%s,a=1", params);
		free(params);
		params = m;
	}
	const char *h2[] = {params, NULL};
	CHECK_EQ_INT(parse(h2, &v, &n, NULL), -EINVAL);
}

/* ---------- config ---------- */

static RegistryConfig *config_of(const char *json, KilnError **err)
{
	RegistryConfig *c = NULL;

	if (registry_config_parse(json, strlen(json), "test.json", &c, err) < 0)
		return NULL;
	return c;
}

TEST(domain_names)
{
	static const char *const ok[][2] = {
	    {"docker.io", "docker.io"},
	    {"index.docker.io", "docker.io"},
	    {"https://index.docker.io/v1/", "docker.io"},
	    {"REGISTRY-1.Docker.IO", "docker.io"},
	    {"localhost:5000", "localhost:5000"},
	    {"http://Registry.Example:443/", "registry.example:443"},
	    {"https://ghcr.io/v2/", "ghcr.io"},
	    {"127.0.0.1:5000", "127.0.0.1:5000"},
	    {"[::1]:5000", "[::1]:5000"},
	};
	static const char *const bad[] = {
	    "",	       "ghcr.io/org", "a_b.io", "-a.io",  "a-.io", "x:0", "x:65536",
	    "x:5000x", "bad host",    "[::1",	"[zz]:1", "a..b",  "x:",  ".a",
	};

	for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
		_cleanup_free_ char *d = registry_domain_canonical(ok[i][0]);
		CHECK_EQ_STR(d, ok[i][1]);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_free_ char *d = registry_domain_canonical(bad[i]);
		if (d)
			printf("#   '%s' accepted as '%s'\n", bad[i], d);
		CHECK(d == NULL);
	}
	CHECK_EQ_STR(ref_registry_host("docker.io"), "registry-1.docker.io");
	CHECK_EQ_STR(ref_registry_host("ghcr.io"), "ghcr.io");
}

static void use_certs_dirs(RegistryConfig *c)
{
	char *none[] = {NULL};

	registry_config_set_certs_dirs(c, none);
}

TEST(config_endpoints)
{
	_cleanup_(registry_config_freep) RegistryConfig *c = config_of(
	    "{\"registries\": {\"index.docker.io\": {\"mirrors\": [\"mirror.local:5000\", "
	    "\"harbor.corp/dockerhub/cache\"], \"mirror-only\": false},"
	    " \"mirror.local:5000\": {\"insecure\": true, \"ca\": \"/etc/mirror-ca.pem\"},"
	    " \"airgap.io\": {\"mirrors\": [\"m.airgap:1\"], \"mirror-only\": true}}}",
	    NULL);
	RegistryEndpoint *v = NULL;
	size_t n = 0;

	CHECK(c != NULL);
	use_certs_dirs(c);
	CHECK(registry_config_add_mirror(c, "https://index.docker.io/v1/=cli.mirror:443", NULL) ==
	      0);
	CHECK(registry_config_endpoints(c, "docker.io", false, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 4);
	CHECK_EQ_STR(v[0].host, "cli.mirror:443");
	CHECK_EQ_STR(v[1].host, "mirror.local:5000");
	CHECK(v[1].mirror && v[1].insecure && v[1].plain_http_ok);
	CHECK_EQ_STR(v[1].ca_files[0], "/etc/mirror-ca.pem");
	CHECK_EQ_STR(v[1].prefix, "");
	CHECK_EQ_STR(v[2].host, "harbor.corp");
	CHECK_EQ_STR(v[2].prefix, "dockerhub/cache");
	CHECK(!v[2].insecure && !v[2].plain_http_ok);
	CHECK_EQ_STR(v[3].host, "registry-1.docker.io");
	CHECK(!v[3].mirror && !v[3].insecure && !v[3].plain_http_ok);
	CHECK(v[3].ca_files && v[3].ca_files[0] == NULL);
	registry_endpoints_free(v, n);

	/* Pushes go to the registry itself. */
	CHECK(registry_config_endpoints(c, "docker.io", true, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_STR(v[0].host, "registry-1.docker.io");
	registry_endpoints_free(v, n);

	/* mirror-only: no upstream. */
	CHECK(registry_config_endpoints(c, "airgap.io", false, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_STR(v[0].host, "m.airgap:1");
	registry_endpoints_free(v, n);
	CHECK(registry_config_endpoints(c, "airgap.io", true, &v, &n, NULL) == 0);
	CHECK_EQ_STR(v[0].host, "airgap.io");
	registry_endpoints_free(v, n);

	/* Unknown registries: themselves; loopback may use plain HTTP. */
	CHECK(registry_config_endpoints(c, "localhost:5000", false, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 1);
	CHECK(v[0].plain_http_ok && !v[0].insecure);
	registry_endpoints_free(v, n);
	CHECK(registry_config_endpoints(c, "10.1.2.3:5000", false, &v, &n, NULL) == 0);
	CHECK(!v[0].plain_http_ok);
	registry_endpoints_free(v, n);
	_cleanup_error_ KilnError *e = NULL;
	CHECK_EQ_INT(registry_config_endpoints(c, "bad host", false, &v, &n, &e), -EINVAL);
}

TEST(config_mirror_only_without_mirrors)
{
	_cleanup_(registry_config_freep) RegistryConfig *c =
	    config_of("{\"registries\": {\"x.io\": {\"mirror-only\": true}}}", NULL);
	_cleanup_error_ KilnError *e = NULL;
	RegistryEndpoint *v = NULL;
	size_t n = 0;

	CHECK_EQ_INT(registry_config_endpoints(c, "x.io", false, &v, &n, &e), -ENOENT);
	CHECK(e && strstr(e->message, "mirror-only"));
	/* A --registry-mirror fills the gap. */
	CHECK(registry_config_add_mirror(c, "x.io=m.io", NULL) == 0);
	CHECK(registry_config_endpoints(c, "x.io", false, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 1);
	registry_endpoints_free(v, n);
}

TEST(config_errors_name_file_and_key)
{
	static const char *const bad[][2] = {
	    {"{\"registry\": {}}", "test.json': registry: unknown key"},
	    {"[]", "not a JSON object"},
	    {"{\"registries\": []}", "registries: not an object"},
	    {"{\"registries\": {\"a.io\": {\"mirrors\": \"m\"}}}",
	     "registries.\"a.io\".mirrors: not an array"},
	    {"{\"registries\": {\"a.io\": {\"mirrors\": [\"m.io\", \"https://m.io\"]}}}",
	     "registries.\"a.io\".mirrors[1]: 'https://m.io' is not HOST[:PORT][/PATH]"},
	    {"{\"registries\": {\"a.io\": {\"mirrors\": [1]}}}", "mirrors[0]: not a string"},
	    {"{\"registries\": {\"a.io\": {\"insecure\": \"yes\"}}}",
	     "registries.\"a.io\".insecure: not true or false"},
	    {"{\"registries\": {\"a.io\": {\"ca\": \"ca.pem\"}}}", "ca: not an absolute path"},
	    {"{\"registries\": {\"a.io\": {\"mirors\": []}}}", "mirors: unknown key"},
	    {"{\"registries\": {\"a b\": {}}}", "'a b' is not HOST[:PORT]"},
	    {"{\"registries\": {\"docker.io\": {}, \"index.docker.io\": {}}}", "listed twice"},
	    {"{\"registries\": {\"a.io\": {}, \"a.io\": {}}}", "line 1"},
	    {"{\"registries\": {\"a.io\": 1}}", "registries.\"a.io\": not an object"},
	    {"{\n\"registries\": {,}}", "line 2"},
	};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		RegistryConfig *c = config_of(bad[i][0], &e);
		CHECK(c == NULL);
		CHECK(e && strstr(e->message, "config 'test.json'"));
		if (!e || !strstr(e->message, bad[i][1]))
			printf("#   %s -> %s\n", bad[i][0], e ? e->message : "(no error)");
		CHECK(e && strstr(e->message, bad[i][1]));
		registry_config_free(c);
	}
	_cleanup_(registry_config_freep) RegistryConfig *c = registry_config_new();
	static const char *const bad_flags[] = {"docker.io", "=m.io", "docker.io=", "a b=m.io",
						"docker.io=http://m.io"};
	for (size_t i = 0; i < ELEMENTSOF(bad_flags); i++) {
		_cleanup_error_ KilnError *e = NULL;
		CHECK_EQ_INT(registry_config_add_mirror(c, bad_flags[i], &e), -KILN_EUSAGE);
		CHECK(e && strstr(e->message, "--registry-mirror"));
	}
}

TEST(config_size_cap)
{
	size_t len = REGISTRY_CONFIG_MAX + 2;
	_cleanup_free_ char *big = xcalloc(len + 1, 1);
	_cleanup_error_ KilnError *e = NULL;
	RegistryConfig *c = NULL;

	memset(big, ' ', len);
	big[0] = '{';
	big[len - 1] = '}';
	CHECK_EQ_INT(registry_config_parse(big, len, "big.json", &c, &e), -EFBIG);
	CHECK(write_file_atomic_at(AT_FDCWD, "big.json", big, len, 0644, NULL) == 0);
	kiln_error_free(TAKE_PTR(e));
	CHECK(registry_config_load("big.json", &c, &e) < 0);
	CHECK(e && strstr(e->message, "big.json"));
}

TEST(config_search)
{
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	_cleanup_error_ KilnError *e = NULL;
	RegistryConfig *c = NULL;
	RegistryEndpoint *v = NULL;
	size_t n = 0;

	CHECK(mkdir_p("xdg/kiln", 0755, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "xdg/kiln/config.json",
				   "{\"registries\": {\"a.io\": {\"mirrors\": [\"m.io\"]}}}", 47,
				   0644, NULL) == 0);
	_cleanup_free_ char *xdg = xasprintf("%s/xdg", cwd);
	setenv("XDG_CONFIG_HOME", xdg, 1);
	unsetenv("KILN_CONFIG");
	CHECK(registry_config_load(NULL, &c, NULL) == 0);
	use_certs_dirs(c);
	CHECK(registry_config_endpoints(c, "a.io", false, &v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 2);
	registry_endpoints_free(v, n);
	registry_config_free(TAKE_PTR(c));

	/* $KILN_CONFIG names a file that must exist. */
	setenv("KILN_CONFIG", "missing.json", 1);
	CHECK_EQ_INT(registry_config_load(NULL, &c, &e), -ENOENT);
	CHECK(e && strstr(e->message, "config 'missing.json'"));
	unsetenv("KILN_CONFIG");
	/* Nothing anywhere: an empty config. */
	_cleanup_free_ char *none = xasprintf("%s/none", cwd);
	setenv("XDG_CONFIG_HOME", none, 1);
	CHECK(registry_config_load(NULL, &c, NULL) == 0);
	registry_config_free(c);
	unsetenv("XDG_CONFIG_HOME");
}

TEST(certs_d)
{
	_cleanup_(registry_config_freep) RegistryConfig *c =
	    config_of("{\"registries\": {\"r.io:5000\": {\"ca\": \"/own/ca.pem\"}}}", NULL);
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	_cleanup_free_ char *d1 = xasprintf("%s/one", cwd);
	_cleanup_free_ char *d2 = xasprintf("%s/two", cwd);
	char *dirs[] = {d1, d2, NULL};
	RegistryEndpoint *v = NULL;
	size_t n = 0;

	CHECK(mkdir_p("one/r.io:5000", 0755, NULL) == 0);
	CHECK(mkdir_p("two/r.io:5000", 0755, NULL) == 0);
	CHECK(mkdir_p("two/docker.io", 0755, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "one/r.io:5000/b.crt", "x", 1, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "one/r.io:5000/a.crt", "x", 1, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "one/r.io:5000/README", "x", 1, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "two/r.io:5000/client.cert", "x", 1, 0644, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "two/r.io:5000/client.key", "x", 1, 0600, NULL) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "two/docker.io/hub.crt", "x", 1, 0644, NULL) == 0);
	registry_config_set_certs_dirs(c, dirs);
	CHECK(registry_config_set_tls_ca(c, "one/r.io:5000/a.crt", NULL) == 0);
	CHECK(registry_config_endpoints(c, "r.io:5000", false, &v, &n, NULL) == 0);
	CHECK_EQ_INT(strv_length(v[0].ca_files), 4);
	CHECK_EQ_STR(v[0].ca_files[0], "/own/ca.pem");
	_cleanup_free_ char *a = xasprintf("%s/r.io:5000/a.crt", d1);
	_cleanup_free_ char *b = xasprintf("%s/r.io:5000/b.crt", d1);
	_cleanup_free_ char *cert = xasprintf("%s/r.io:5000/client.cert", d2);
	_cleanup_free_ char *key = xasprintf("%s/r.io:5000/client.key", d2);
	CHECK_EQ_STR(v[0].ca_files[1], a);
	CHECK_EQ_STR(v[0].ca_files[2], b);
	CHECK_EQ_STR(v[0].ca_files[3], "one/r.io:5000/a.crt");
	CHECK_EQ_STR(v[0].client_cert, cert);
	CHECK_EQ_STR(v[0].client_key, key);
	registry_endpoints_free(v, n);
	/* docker.io's CAs sit under its name or its API host's. */
	CHECK(registry_config_endpoints(c, "docker.io", false, &v, &n, NULL) == 0);
	CHECK(v[0].ca_files[0] && strstr(v[0].ca_files[0], "two/docker.io/hub.crt"));
	registry_endpoints_free(v, n);
	/* A client certificate without its key. */
	_cleanup_error_ KilnError *e = NULL;
	CHECK(unlink("two/r.io:5000/client.key") == 0);
	CHECK(registry_config_endpoints(c, "r.io:5000", false, &v, &n, &e) < 0);
	CHECK(e && strstr(e->message, "client.key"));
	kiln_error_free(TAKE_PTR(e));
	CHECK_EQ_INT(registry_config_set_tls_ca(c, "nope.pem", &e), -ENOENT);
	CHECK(e && strstr(e->message, "--tls-ca 'nope.pem'"));
}

/* ---------- credentials ---------- */

/* HOME, DOCKER_CONFIG, REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR below the test's dir; PATH starts
 * with its bin/, where docker-credential-test answers from files the test writes. */
static void creds_env(void)
{
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	_cleanup_free_ char *home = xasprintf("%s/home", cwd);
	_cleanup_free_ char *run = xasprintf("%s/run", cwd);
	_cleanup_free_ char *bin = xasprintf("%s/bin", cwd);
	static char *orig_path;
	if (!orig_path)
		orig_path = xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
	_cleanup_free_ char *path = xasprintf("%s:%s", bin, orig_path);
	static const char script[] = "#!/bin/sh\n"
				     "d=$(dirname \"$0\")\n"
				     "echo \"$*\" >>\"$d/args\"\n"
				     "cat >\"$d/stdin.$1\"\n"
				     "if [ -e \"$d/answer.$1\" ]; then cat \"$d/answer.$1\"; fi\n"
				     "exit $(cat \"$d/status.$1\" 2>/dev/null || echo 0)\n";

	mkdir_p("home", 0700, NULL);
	mkdir_p("run/containers", 0700, NULL);
	mkdir_p("bin", 0755, NULL);
	write_file_atomic_at(AT_FDCWD, "bin/docker-credential-test", script, sizeof(script) - 1,
			     0755, NULL);
	setenv("HOME", home, 1);
	unsetenv("DOCKER_CONFIG");
	unsetenv("REGISTRY_AUTH_FILE");
	setenv("XDG_RUNTIME_DIR", run, 1);
	setenv("PATH", path, 1);
}

static void put(const char *path, const char *text)
{
	CHECK(write_file_atomic_at(AT_FDCWD, path, text, strlen(text), 0600, NULL) == 0);
}

static char *b64(const char *s)
{
	return registry_base64_encode(s, strlen(s));
}

TEST(base64)
{
	static const char *const plain[] = {"",	    "f",     "fo",     "foo",
					    "foob", "fooba", "foobar", "user:p@ss:w\xc3\xb6rd"};
	static const char *const enc[] = {
	    "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy", "dXNlcjpwQHNzOnfDtnJk"};

	for (size_t i = 0; i < ELEMENTSOF(plain); i++) {
		_cleanup_free_ char *e = b64(plain[i]);
		_cleanup_free_ char *d = NULL;
		size_t len = 0;
		CHECK_EQ_STR(e, enc[i]);
		CHECK(registry_base64_decode(enc[i], &d, &len) == 0);
		CHECK_EQ_INT(len, strlen(plain[i]));
		CHECK(d && memcmp(d, plain[i], len) == 0);
	}
	static const char *const bad[] = {"Zg=", "Zg=a", "Z===", "Zm9v!A==", "=Zm9", "Zg==Zg=="};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		char *d = NULL;
		size_t len = 0;
		CHECK_EQ_INT(registry_base64_decode(bad[i], &d, &len), -EINVAL);
	}
}

TEST(docker_config_auths)
{
	_cleanup_creds_ RegistryCreds c = {0};
	_cleanup_free_ char *hub = b64("hubuser:hubpass");

	creds_env();
	mkdir_p("home/.docker", 0700, NULL);
	_cleanup_free_ char *cfg = xasprintf(
	    "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"%s\"},"
	    " \"localhost:5000\": {\"username\": \"u2\", \"password\": \"p2\"},"
	    " \"https://oauth.io\": {\"auth\": \"%s\", \"identitytoken\": \"refresh-xyz\"},"
	    " \"empty.io\": {}}}",
	    hub, hub);
	put("home/.docker/config.json", cfg);
	CHECK(registry_creds_lookup("docker.io", "library/busybox", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "hubuser");
	CHECK_EQ_STR(c.secret, "hubpass");
	CHECK(!c.identity_token);
	CHECK(c.source && strstr(c.source, "home/.docker/config.json"));
	registry_creds_done(&c);
	CHECK(registry_creds_lookup("localhost:5000", "x", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "u2");
	CHECK_EQ_STR(c.secret, "p2");
	registry_creds_done(&c);
	CHECK(registry_creds_lookup("oauth.io", "x", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.secret, "refresh-xyz");
	CHECK(c.identity_token);
	registry_creds_done(&c);
	CHECK(registry_creds_lookup("empty.io", "x", &helper, &c, NULL) == 0);
	CHECK(c.username == NULL);
	CHECK(registry_creds_lookup("other.io", NULL, &helper, &c, NULL) == 0);
	CHECK(c.username == NULL);

	/* $DOCKER_CONFIG wins over ~/.docker. */
	mkdir_p("dc", 0700, NULL);
	put("dc/config.json",
	    "{\"auths\": {\"docker.io\": {\"username\": \"dc\", \"password\": \"x\"}}}");
	setenv("DOCKER_CONFIG", "dc", 1);
	CHECK(registry_creds_lookup("docker.io", NULL, &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "dc");
	unsetenv("DOCKER_CONFIG");
}

TEST(malformed_docker_config)
{
	_cleanup_creds_ RegistryCreds c = {0};
	static const char *const bad[][2] = {
	    {"{\"auths\": {\"r.io\": {\"auth\": \"!!notbase64-SECRETPART\"}}}",
	     "auths.\"r.io\".auth: not base64"},
	    {"{\"auths\": {\"r.io\": {\"auth\": \"bm9jb2xvbg==\"}}}",
	     "not base64 of 'user:password'"},
	    {"{\"auths\": []}", "auths: not an object"},
	    {"{\"auths\": {\"r.io\": 1}}", "auths.\"r.io\": not an object"},
	    {"{\"auths\": ", "line 1"},
	    {"[1]", "not a JSON object"},
	};

	creds_env();
	mkdir_p("home/.docker", 0700, NULL);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		put("home/.docker/config.json", bad[i][0]);
		CHECK(registry_creds_lookup("r.io", NULL, &helper, &c, &e) < 0);
		CHECK(e && strstr(e->message, bad[i][1]) && strstr(e->message, "config.json"));
		CHECK(e && !strstr(e->message, "SECRET"));
		CHECK(c.username == NULL);
	}
	/* An empty file is an empty config. */
	put("home/.docker/config.json", "\n");
	CHECK(registry_creds_lookup("r.io", NULL, &helper, &c, NULL) == 0);
	CHECK(c.username == NULL);
}

TEST(auth_json_sources_and_namespaces)
{
	_cleanup_creds_ RegistryCreds c = {0};
	_cleanup_free_ char *ns = b64("orguser:orgpass");
	_cleanup_free_ char *all = b64("alluser:allpass");
	_cleanup_free_ char *dock = b64("dockeruser:dockerpass");
	_cleanup_free_ char *run = b64("runuser:runpass");

	creds_env();
	_cleanup_free_ char *f = xasprintf("{\"auths\": {\"quay.io/org\": {\"auth\": \"%s\"}, "
					   "\"quay.io\": {\"auth\": \"%s\"}}}",
					   ns, all);
	put("auth.json", f);
	setenv("REGISTRY_AUTH_FILE", "auth.json", 1);
	CHECK(registry_creds_lookup("quay.io", "org/app", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "orguser");
	registry_creds_done(&c);
	CHECK(registry_creds_lookup("quay.io", "organic/app", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "alluser");
	registry_creds_done(&c);
	CHECK(registry_creds_lookup("quay.io", "org", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "orguser");
	registry_creds_done(&c);

	/* $REGISTRY_AUTH_FILE, then docker's config, then $XDG_RUNTIME_DIR's auth.json. */
	mkdir_p("home/.docker", 0700, NULL);
	_cleanup_free_ char *d = xasprintf("{\"auths\": {\"quay.io\": {\"auth\": \"%s\"}, "
					   "\"ghcr.io\": {\"auth\": \"%s\"}}}",
					   dock, dock);
	put("home/.docker/config.json", d);
	_cleanup_free_ char *r = xasprintf("{\"auths\": {\"ghcr.io\": {\"auth\": \"%s\"}, "
					   "\"gcr.io\": {\"auth\": \"%s\"}}}",
					   run, run);
	put("run/containers/auth.json", r);
	CHECK(registry_creds_lookup("quay.io", "x/y", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "alluser");
	registry_creds_done(&c);
	CHECK(registry_creds_lookup("ghcr.io", "x/y", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "dockeruser");
	registry_creds_done(&c);
	CHECK(registry_creds_lookup("gcr.io", "x/y", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "runuser");
	CHECK(c.source && strstr(c.source, "run/containers/auth.json"));
	unsetenv("REGISTRY_AUTH_FILE");
}

static char *slurp(const char *path)
{
	char *data = NULL;
	size_t len = 0;

	if (read_file_at(AT_FDCWD, path, 1 << 20, &data, &len, NULL) < 0)
		return xstrdup("");
	return data;
}

TEST(credential_helpers)
{
	_cleanup_creds_ RegistryCreds c = {0};
	_cleanup_free_ char *file = b64("fileuser:filepass");

	creds_env();
	mkdir_p("home/.docker", 0700, NULL);
	_cleanup_free_ char *cfg = xasprintf(
	    "{\"credHelpers\": {\"ghcr.io\": \"test\", \"https://index.docker.io/v1/\": \"test\"},"
	    " \"credsStore\": \"test\", \"auths\": {\"quay.io\": {\"auth\": \"%s\"}}}",
	    file);
	put("home/.docker/config.json", cfg);
	put("bin/answer.get", "{\"ServerURL\": \"ghcr.io\", \"Username\": \"helperuser\", "
			      "\"Secret\": \"helper-secret\"}");
	CHECK(registry_creds_lookup("ghcr.io", "o/r", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "helperuser");
	CHECK_EQ_STR(c.secret, "helper-secret");
	CHECK_EQ_STR(c.source, "credential helper 'docker-credential-test'");
	_cleanup_free_ char *in = slurp("bin/stdin.get");
	CHECK_EQ_STR(in, "ghcr.io");
	_cleanup_free_ char *args = slurp("bin/args");
	CHECK_EQ_STR(args, "get\n");
	registry_creds_done(&c);

	/* Docker Hub is named as docker names it. */
	CHECK(registry_creds_lookup("docker.io", "library/x", &helper, &c, NULL) == 0);
	_cleanup_free_ char *in2 = slurp("bin/stdin.get");
	CHECK_EQ_STR(in2, "https://index.docker.io/v1/");
	registry_creds_done(&c);

	/* An identity token. */
	put("bin/answer.get", "{\"Username\": \"<token>\", \"Secret\": \"refresh\"}");
	CHECK(registry_creds_lookup("ghcr.io", "o/r", &helper, &c, NULL) == 0);
	CHECK(c.identity_token);
	CHECK_EQ_STR(c.secret, "refresh");
	registry_creds_done(&c);

	/* auths before credsStore; credsStore for the rest. */
	CHECK(registry_creds_lookup("quay.io", "o/r", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "fileuser");
	registry_creds_done(&c);
	put("bin/answer.get", "{\"Username\": \"storeuser\", \"Secret\": \"s\"}");
	CHECK(registry_creds_lookup("other.io", "o/r", &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "storeuser");
	registry_creds_done(&c);

	/* "credentials not found": none, not an error. */
	put("bin/answer.get", "credentials not found in native keychain\n");
	put("bin/status.get", "1");
	CHECK(registry_creds_lookup("other.io", "o/r", &helper, &c, NULL) == 0);
	CHECK(c.username == NULL);

	/* Any other failure is one, with the helper's first line. */
	_cleanup_error_ KilnError *e = NULL;
	put("bin/answer.get", "keyring locked\nmore\n");
	CHECK(registry_creds_lookup("other.io", "o/r", &helper, &c, &e) < 0);
	CHECK(e &&
	      strstr(e->message, "'docker-credential-test' get failed (exit 1): keyring locked"));
	kiln_error_free(TAKE_PTR(e));
	put("bin/status.get", "0");
	put("bin/answer.get", "not json");
	CHECK(registry_creds_lookup("other.io", "o/r", &helper, &c, &e) < 0);
	CHECK(e && strstr(e->message, "output is not"));
	kiln_error_free(TAKE_PTR(e));

	/* A helper that is not installed, and one whose name is a path. */
	put("home/.docker/config.json", "{\"credsStore\": \"missing\"}");
	CHECK_EQ_INT(registry_creds_lookup("x.io", NULL, &helper, &c, &e), -ENOENT);
	CHECK(e && strstr(e->message, "docker-credential-missing"));
	kiln_error_free(TAKE_PTR(e));
	put("home/.docker/config.json", "{\"credsStore\": \"../../bin/sh\"}");
	CHECK_EQ_INT(registry_creds_lookup("x.io", NULL, &helper, &c, &e), -EINVAL);
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_mode & 07777 : 0;
}

TEST(login_store_and_erase)
{
	_cleanup_creds_ RegistryCreds c = {0};
	_cleanup_free_ char *where = NULL;
	_cleanup_free_ char *old = b64("old:old");
	bool found = false;

	creds_env();
	/* A missing ~/.docker is made 0700. */
	CHECK(registry_creds_store("localhost:5000", "u", "p:w", &helper, &where, NULL) == 0);
	CHECK(where && strstr(where, "home/.docker/config.json"));
	CHECK_EQ_INT(mode_of("home/.docker"), 0700);
	CHECK_EQ_INT(mode_of("home/.docker/config.json"), 0600);
	CHECK(registry_creds_lookup("localhost:5000", NULL, &helper, &c, NULL) == 0);
	CHECK_EQ_STR(c.username, "u");
	CHECK_EQ_STR(c.secret, "p:w");
	registry_creds_done(&c);

	/* Other keys are kept; aliases of the registry replaced by docker's own key. */
	_cleanup_free_ char *cfg =
	    xasprintf("{\"proxies\": {\"default\": {\"httpProxy\": \"http://p:3128\"}}, \"auths\": "
		      "{\"index.docker.io\": {\"auth\": \"%s\"}, \"keep.io\": {\"auth\": \"%s\"}}, "
		      "\"psFormat\": \"x\"}",
		      old, old);
	put("home/.docker/config.json", cfg);
	CHECK(chmod("home/.docker/config.json", 0644) == 0);
	CHECK(registry_creds_store("docker.io", "hub", "secret1", &helper, NULL, NULL) == 0);
	CHECK_EQ_INT(mode_of("home/.docker/config.json"), 0600);
	_cleanup_free_ char *text = slurp("home/.docker/config.json");
	_cleanup_free_ char *hub = b64("hub:secret1");
	CHECK(strstr(text, "\"https://index.docker.io/v1/\""));
	CHECK(strstr(text, hub));
	CHECK(!strstr(text, "\"index.docker.io\""));
	CHECK(strstr(text, "\"keep.io\""));
	CHECK(strstr(text, "httpProxy"));
	CHECK(strstr(text, "psFormat"));
	CHECK(!strstr(text, "secret1"));

	CHECK(registry_creds_erase("docker.io", &helper, &found, NULL) == 0);
	CHECK(found);
	_cleanup_free_ char *after = slurp("home/.docker/config.json");
	CHECK(!strstr(after, "index.docker.io"));
	CHECK(strstr(after, "\"keep.io\""));
	CHECK(registry_creds_erase("docker.io", &helper, &found, NULL) == 0);
	CHECK(!found);

	/* A user name with ':' cannot be basic auth. */
	_cleanup_error_ KilnError *e = NULL;
	CHECK(registry_creds_store("r.io", "a:b", "p", &helper, NULL, &e) < 0);
	/* A config that is not JSON is left alone. */
	put("home/.docker/config.json", "{broken");
	kiln_error_free(TAKE_PTR(e));
	CHECK(registry_creds_store("r.io", "u", "p", &helper, NULL, &e) < 0);
	_cleanup_free_ char *broken = slurp("home/.docker/config.json");
	CHECK_EQ_STR(broken, "{broken");
}

TEST(login_store_through_helper)
{
	_cleanup_free_ char *where = NULL;
	_cleanup_free_ char *stale = b64("stale:stale");
	bool found = false;

	creds_env();
	mkdir_p("home/.docker", 0700, NULL);
	_cleanup_free_ char *cfg = xasprintf("{\"credHelpers\": {\"ghcr.io\": \"test\"}, "
					     "\"auths\": {\"ghcr.io\": {\"auth\": \"%s\"}}}",
					     stale);
	put("home/.docker/config.json", cfg);
	CHECK(registry_creds_store("ghcr.io", "me", "tok123", &helper, &where, NULL) == 0);
	CHECK_EQ_STR(where, "credential helper 'docker-credential-test'");
	_cleanup_free_ char *in = slurp("bin/stdin.store");
	CHECK(strstr(in, "\"ServerURL\":\"ghcr.io\""));
	CHECK(strstr(in, "\"Username\":\"me\""));
	CHECK(strstr(in, "\"Secret\":\"tok123\""));
	_cleanup_free_ char *args = slurp("bin/args");
	CHECK_EQ_STR(args, "store\n");
	/* The plain copy in the file is gone. */
	_cleanup_free_ char *text = slurp("home/.docker/config.json");
	CHECK(!strstr(text, stale));
	CHECK(strstr(text, "credHelpers"));

	CHECK(registry_creds_erase("ghcr.io", &helper, &found, NULL) == 0);
	CHECK(found);
	_cleanup_free_ char *ein = slurp("bin/stdin.erase");
	CHECK_EQ_STR(ein, "ghcr.io");
	/* A failing store is an error. */
	_cleanup_error_ KilnError *e = NULL;
	put("bin/status.store", "3");
	CHECK(registry_creds_store("ghcr.io", "me", "tok123", &helper, NULL, &e) < 0);
	CHECK(e && strstr(e->message, "store failed (exit 3)"));
	CHECK(e && !strstr(e->message, "tok123"));
}

/* ---------- tokens (the local server plays the token server) ---------- */

typedef struct TokenSrv {
	int status;
	const char *body; /* printf format with %u: the request number */
} TokenSrv;

static void h_token(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	TokenSrv *ts = s->data;
	_cleanup_free_ char *body = xasprintf(ts->body, n);

	srv_respond(fd, ts->status, NULL, body, strlen(body));
}

typedef struct AuthFixture {
	Srv srv;
	TokenSrv ts;
	HttpClient *http;
	RegistryAuth *auth;
	RegistryChallenge ch;
	char *realm;
} AuthFixture;

static void fixture_start(AuthFixture *f, const char *body)
{
	f->ts = (TokenSrv){200, body};
	CHECK(srv_start(&f->srv, h_token, &f->ts) == 0);
	CHECK(http_client_new(&f->http, NULL) == 0);
	f->auth = registry_auth_new(f->http, &helper);
	f->realm = xasprintf("http://127.0.0.1:%d/token", f->srv.port);
	f->ch = (RegistryChallenge){.scheme = REGISTRY_AUTH_BEARER,
				    .realm = xstrdup(f->realm),
				    .service = xstrdup("svc one")};
}

static void fixture_stop(AuthFixture *f)
{
	srv_stop(&f->srv);
	registry_auth_free(f->auth);
	http_client_free(f->http);
	registry_challenge_done(&f->ch);
	free(f->realm);
}

static int header_for(AuthFixture *f, char *const *scopes, const RegistryCreds *creds, char **ret,
		      KilnError **err)
{
	RegistryAuthRequest rq = {.host = "r.test:5000",
				  .cred_domain = "r.test:5000",
				  .repository = "a/b",
				  .challenge = &f->ch,
				  .scopes = scopes,
				  .creds = creds};
	*ret = NULL;
	return registry_auth_header(f->auth, &rq, ret, err);
}

TEST(bearer_tokens_cached_per_scope_set)
{
	AuthFixture f;
	char *ab[] = {"repository:a/b:pull", "repository:c:pull", NULL};
	char *ba[] = {"repository:c:pull", "repository:a/b:pull", NULL};
	char *other[] = {"repository:a/b:pull,push", NULL};
	char *h = NULL;

	creds_env();
	fixture_start(&f, "{\"token\": \"tok-%u\", \"expires_in\": 300}");
	CHECK(header_for(&f, ab, NULL, &h, NULL) == 0);
	CHECK_EQ_STR(h, "Authorization: Bearer tok-0");
	free(h);
	const char *req = srv_log(&f.srv, 0);
	CHECK(strstr(req, "GET /token?service=svc%20one&scope=repository%3Aa%2Fb%3Apull&scope="
			  "repository%3Ac%3Apull HTTP/1.1") != NULL);
	CHECK(strstr(req, "Authorization") == NULL);
	/* The same set in another order: the cached token. */
	CHECK(header_for(&f, ba, NULL, &h, NULL) == 0);
	CHECK_EQ_STR(h, "Authorization: Bearer tok-0");
	free(h);
	CHECK_EQ_INT(srv_count(&f.srv), 1);
	/* Another set: another token. */
	CHECK(header_for(&f, other, NULL, &h, NULL) == 0);
	CHECK_EQ_STR(h, "Authorization: Bearer tok-1");
	free(h);
	/* Forgotten after a 401. */
	RegistryAuthRequest rq = {
	    .host = "r.test:5000", .cred_domain = "r.test:5000", .challenge = &f.ch, .scopes = ab};
	registry_auth_invalidate(f.auth, &rq);
	CHECK(header_for(&f, ab, NULL, &h, NULL) == 0);
	CHECK_EQ_STR(h, "Authorization: Bearer tok-2");
	free(h);
	CHECK(header_for(&f, other, NULL, &h, NULL) == 0);
	CHECK_EQ_STR(h, "Authorization: Bearer tok-1");
	free(h);
	CHECK_EQ_INT(srv_count(&f.srv), 3);
	fixture_stop(&f);
}

TEST(bearer_with_credentials)
{
	AuthFixture f;
	char *scopes[] = {"repository:a/b:pull", NULL};
	_cleanup_free_ char *basic = b64("stored:storedpw");
	_cleanup_free_ char *cfg = NULL;
	char *h = NULL;

	creds_env();
	mkdir_p("home/.docker", 0700, NULL);
	cfg = xasprintf("{\"auths\": {\"r.test:5000\": {\"auth\": \"%s\"}}}", basic);
	put("home/.docker/config.json", cfg);
	fixture_start(&f, "{\"access_token\": \"at-%u\"}");
	CHECK(header_for(&f, scopes, NULL, &h, NULL) == 0);
	CHECK_EQ_STR(h, "Authorization: Bearer at-0");
	free(h);
	_cleanup_free_ char *want = xasprintf("Authorization: Basic %s", basic);
	CHECK(strstr(srv_log(&f.srv, 0), want) != NULL);
	CHECK(strstr(srv_log(&f.srv, 0), "account=") == NULL);

	/* kiln login's own credentials: never cached, the account named. */
	RegistryCreds login = {.username = "me", .secret = "pw", .source = "the command line"};
	CHECK(header_for(&f, NULL, &login, &h, NULL) == 0);
	CHECK_EQ_STR(h, "Authorization: Bearer at-1");
	free(h);
	CHECK(header_for(&f, NULL, &login, &h, NULL) == 0);
	free(h);
	CHECK_EQ_INT(srv_count(&f.srv), 3);
	CHECK(strstr(srv_log(&f.srv, 1), "GET /token?service=svc%20one&account=me ") != NULL);

	/* Refused: the message names the user and where they came from, not the secret. */
	_cleanup_error_ KilnError *e = NULL;
	f.ts.status = 401;
	f.ts.body = "{\"details\": \"bad pw\"}";
	login.secret = "SECRET-PW";
	CHECK_EQ_INT(header_for(&f, NULL, &login, &h, &e), -EACCES);
	CHECK(e && strstr(e->message, "refused the credentials of 'me' from the command line"));
	CHECK(e && !strstr(e->message, "SECRET"));
	fixture_stop(&f);
}

TEST(bearer_bad_answers)
{
	AuthFixture f;
	char *scopes[] = {"repository:a/b:pull", NULL};
	static const char *const bad[] = {"{}", "{\"token\": \"two words\"}", "{\"token\": 1}",
					  "not json", "{\"token\": \"\"}"};
	char *h = NULL;

	creds_env();
	fixture_start(&f, "{}");
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		f.ts.body = bad[i];
		CHECK_EQ_INT(header_for(&f, scopes, NULL, &h, &e), -EPROTO);
		CHECK(e && strstr(e->message, "no usable"));
	}
	_cleanup_error_ KilnError *e = NULL;
	f.ts.status = 401;
	CHECK_EQ_INT(header_for(&f, scopes, NULL, &h, &e), -EACCES);
	CHECK(e && strstr(e->message, "anonymous access"));
	/* A plain HTTP realm elsewhere than loopback gets nothing. */
	kiln_error_free(TAKE_PTR(e));
	free(f.ch.realm);
	f.ch.realm = xstrdup("http://realm.invalid/token");
	CHECK_EQ_INT(header_for(&f, scopes, NULL, &h, &e), -EPROTO);
	CHECK(e && strstr(e->message, "plain HTTP token realm"));
	kiln_error_free(TAKE_PTR(e));
	free(f.ch.realm);
	f.ch.realm = xstrdup("ftp://x/token");
	CHECK_EQ_INT(header_for(&f, scopes, NULL, &h, &e), -EPROTO);
	fixture_stop(&f);
}

TEST(basic_auth_header)
{
	AuthFixture f;
	char *h = NULL;
	RegistryCreds c = {.username = "u", .secret = "p:w", .source = "x"};

	creds_env();
	fixture_start(&f, "{}");
	f.ch.scheme = REGISTRY_AUTH_BASIC;
	CHECK(header_for(&f, NULL, &c, &h, NULL) == 0);
	_cleanup_free_ char *want = b64("u:p:w");
	_cleanup_free_ char *line = xasprintf("Authorization: Basic %s", want);
	CHECK_EQ_STR(h, line);
	free(h);
	/* No credentials: no header (the registry's 401 says what to do). */
	CHECK(header_for(&f, NULL, NULL, &h, NULL) == 0);
	CHECK(h == NULL);
	f.ch.scheme = REGISTRY_AUTH_OTHER;
	CHECK(header_for(&f, NULL, &c, &h, NULL) == 0);
	CHECK(h == NULL);
	CHECK_EQ_INT(srv_count(&f.srv), 0);
	fixture_stop(&f);
}

int main(void)
{
	RUN(challenge_bearer);
	RUN(challenge_several_and_escapes);
	RUN(challenge_pick);
	RUN(challenge_malformed);
	RUN(domain_names);
	RUN(config_endpoints);
	RUN(config_mirror_only_without_mirrors);
	RUN(config_errors_name_file_and_key);
	RUN(config_size_cap);
	RUN(config_search);
	RUN(certs_d);
	RUN(base64);
	RUN(docker_config_auths);
	RUN(malformed_docker_config);
	RUN(auth_json_sources_and_namespaces);
	RUN(credential_helpers);
	RUN(login_store_and_erase);
	RUN(login_store_through_helper);
	RUN(bearer_tokens_cached_per_scope_set);
	RUN(bearer_with_credentials);
	RUN(bearer_bad_answers);
	RUN(basic_auth_header);
	return tap_done();
}
