#include "registry.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry_auth.h"

#define MT_DOCKER_SCHEMA1 "application/vnd.docker.distribution.manifest.v1"
#define MANIFEST_ACCEPT                                                                            \
	"Accept: " MT_OCI_INDEX ", " MT_OCI_MANIFEST ", " MT_DOCKER_LIST ", " MT_DOCKER_MANIFEST
/* The request that completes an upload waits while the registry hashes the blob. */
#define UPLOAD_COMMIT_STALL_S 600
#define PING_BODY_MAX 4096

/* What kiln knows of one endpoint host. */
typedef struct HostState {
	char *host;
	HttpTls *tls;
	bool pinged;
	bool plain_http;
	bool down;		     /* unreachable once: skipped while another endpoint is left */
	bool auth_unsupported;	     /* /v2/ asked for authentication kiln cannot give */
	RegistryChallenge challenge; /* scheme OTHER and no realm: none */
} HostState;

typedef struct EndpointList {
	char *domain;
	bool push;
	RegistryEndpoint *v;
	size_t n;
} EndpointList;

struct RegistryClient {
	HttpClient *http;
	RegistryAuth *auth;
	RegistryConfig *own_config;
	const RegistryConfig *config;
	HttpRetry retry;
	uint64_t monolithic_max, chunk_size;
	pthread_mutex_t lock;
	HostState **hosts; /* each allocated once: pointers to them stay valid */
	size_t n_hosts;
	EndpointList **lists;
	size_t n_lists;
};

int registry_client_new(const RegistryClientOptions *o, RegistryClient **ret, KilnError **err)
{
	_cleanup_(registry_client_freep) RegistryClient *c = xcalloc(1, sizeof(*c));
	int r;

	pthread_mutex_init(&c->lock, NULL);
	r = http_client_new(&c->http, err);
	if (r < 0)
		return r;
	c->auth = registry_auth_new(c->http, o ? &o->helper : NULL);
	c->config = o && o->config ? o->config : (c->own_config = registry_config_new());
	c->retry = o && o->retry ? *o->retry : HTTP_RETRY_DEFAULT;
	c->monolithic_max =
	    o && o->monolithic_max ? o->monolithic_max : REGISTRY_MONOLITHIC_MAX_DEFAULT;
	c->chunk_size = o && o->chunk_size ? o->chunk_size : REGISTRY_CHUNK_SIZE_DEFAULT;
	*ret = TAKE_PTR(c);
	return 0;
}

void registry_client_free(RegistryClient *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_hosts; i++) {
		free(c->hosts[i]->host);
		http_tls_free(c->hosts[i]->tls);
		registry_challenge_done(&c->hosts[i]->challenge);
		free(c->hosts[i]);
	}
	for (size_t i = 0; i < c->n_lists; i++) {
		free(c->lists[i]->domain);
		registry_endpoints_free(c->lists[i]->v, c->lists[i]->n);
		free(c->lists[i]);
	}
	free(c->hosts);
	free(c->lists);
	registry_auth_free(c->auth);
	http_client_free(c->http);
	registry_config_free(c->own_config);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* ---------- endpoints and hosts ---------- */

static int client_endpoints(RegistryClient *c, const char *domain, bool push,
			    const EndpointList **ret, KilnError **err)
{
	_cleanup_free_ char *d = registry_domain_canonical(domain);
	EndpointList *l = NULL;
	int r = 0;

	if (!d)
		return kiln_error(err, EINVAL, "'%s' is not a registry HOST[:PORT]",
				  EXCERPT(domain));
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_lists && !l; i++)
		if (c->lists[i]->push == push && strcmp(c->lists[i]->domain, d) == 0)
			l = c->lists[i];
	if (!l) {
		l = xcalloc(1, sizeof(*l));
		r = registry_config_endpoints(c->config, d, push, &l->v, &l->n, err);
		if (r < 0) {
			free(l);
			l = NULL;
		} else {
			l->domain = TAKE_PTR(d);
			l->push = push;
			c->lists = xrealloc(c->lists, (c->n_lists + 1) * sizeof(*c->lists));
			c->lists[c->n_lists++] = l;
		}
	}
	pthread_mutex_unlock(&c->lock);
	*ret = l;
	return r;
}

static int host_state(RegistryClient *c, const RegistryEndpoint *ep, HostState **ret,
		      KilnError **err)
{
	HostState *hs = NULL;
	int r = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_hosts && !hs; i++)
		if (strcmp(c->hosts[i]->host, ep->host) == 0)
			hs = c->hosts[i];
	if (!hs) {
		HttpTlsOptions o = {.ca_files = ep->ca_files,
				    .client_cert = ep->client_cert,
				    .client_key = ep->client_key,
				    .no_verify = ep->insecure};
		HttpTls *tls = NULL;
		r = http_tls_new(&o, &tls, err);
		if (r >= 0) {
			hs = xcalloc(1, sizeof(*hs));
			hs->host = xstrdup(ep->host);
			hs->tls = tls;
			c->hosts = xrealloc(c->hosts, (c->n_hosts + 1) * sizeof(*c->hosts));
			c->hosts[c->n_hosts++] = hs;
		} else {
			kiln_error_wrap(err, r, "registry '%s'", ep->host);
		}
	}
	pthread_mutex_unlock(&c->lock);
	*ret = hs;
	return r;
}

static void host_set_challenge(RegistryClient *c, HostState *hs, const RegistryChallenge *ch)
{
	pthread_mutex_lock(&c->lock);
	registry_challenge_done(&hs->challenge);
	if (ch)
		registry_challenge_copy(&hs->challenge, ch);
	pthread_mutex_unlock(&c->lock);
}

/* The challenge of a 401 response: 0 with *ret NULL when it has none kiln can answer. */
static int response_challenges(const HttpResponse *resp, RegistryChallenge **ret, size_t *ret_n,
			       KilnError **err)
{
	_cleanup_strv_free_ char **values = NULL;
	size_t pos = 0;
	const char *v;

	while ((v = http_response_header(resp, "WWW-Authenticate", &pos)))
		strv_push(&values, v);
	return registry_challenges_parse(values, ret, ret_n, err);
}

static int ping_once(RegistryClient *c, HostState *hs, bool plain, HttpResponse *resp,
		     KilnError **err)
{
	_cleanup_free_ char *url = xasprintf("%s://%s/v2/", plain ? "http" : "https", hs->host);
	HttpRequest rq = HTTP_REQUEST_INIT;

	rq.url = url;
	rq.tls = hs->tls;
	rq.retry = true;
	rq.retry_policy = &c->retry;
	rq.max_body = PING_BODY_MAX;
	return http_request(c->http, &rq, resp, err);
}

/* Adds a hint after an error's message: "...: what failed (hint)". */
static void error_add_hint(KilnError **err, const char *hint)
{
	if (err && *err && (*err)->message) {
		char *m = xasprintf("%s (%s)", (*err)->message, hint);
		free((*err)->message);
		(*err)->message = m;
	}
}

static int ping_failed(const RegistryEndpoint *ep, int r, KilnError **err)
{
	r = kiln_error_wrap(err, r, "registry '%s'", ep->host);
	if (r == -EKEYREJECTED) {
		_cleanup_free_ char *h =
		    xasprintf("to trust its CA: --tls-ca FILE, certs.d/%s/ca.crt "
			      "or \"ca\" in the config",
			      ep->host);
		error_add_hint(err, h);
	} else if (r == -EPROTO && !ep->plain_http_ok) {
		error_add_hint(err, "kiln uses plain HTTP only for localhost, 127.0.0.0/8, ::1 and "
				    "registries marked \"insecure\" in the config");
	}
	return r;
}

/* The /v2/ ping, once per host: HTTPS (or plain HTTP where allowed and HTTPS does not speak TLS)
 * and the host's challenge. */
static int host_ping(RegistryClient *c, const RegistryEndpoint *ep, HostState *hs, KilnError **err)
{
	_cleanup_http_response_ HttpResponse resp = {0};
	_cleanup_error_ KilnError *e = NULL;
	RegistryChallenge *chs = NULL;
	size_t n = 0;
	bool plain = false, pinged;
	int r;

	pthread_mutex_lock(&c->lock);
	pinged = hs->pinged;
	pthread_mutex_unlock(&c->lock);
	if (pinged)
		return 0;
	r = ping_once(c, hs, false, &resp, &e);
	if (r == -EPROTO && ep->plain_http_ok) {
		http_response_done(&resp);
		kiln_error_free(TAKE_PTR(e));
		plain = true;
		r = ping_once(c, hs, true, &resp, &e);
	}
	if (r < 0) {
		if (err && !*err)
			*err = TAKE_PTR(e);
		return ping_failed(ep, r, err);
	}
	if (resp.status != 200 && resp.status != 401)
		return kiln_error(err, EPROTO,
				  "registry '%s': GET /v2/ answered HTTP %ld: not an OCI "
				  "distribution registry",
				  ep->host, resp.status);
	if (resp.status == 401 && (r = response_challenges(&resp, &chs, &n, err)) < 0)
		return kiln_error_wrap(err, r, "registry '%s'", ep->host);
	const RegistryChallenge *pick = registry_challenges_pick(chs, n);
	pthread_mutex_lock(&c->lock);
	if (!hs->pinged) {
		registry_challenge_done(&hs->challenge);
		if (pick)
			registry_challenge_copy(&hs->challenge, pick);
		hs->auth_unsupported = resp.status == 401 && !pick;
		hs->plain_http = plain;
		hs->pinged = true;
	}
	pthread_mutex_unlock(&c->lock);
	registry_challenges_free(chs, n);
	return 0;
}

/* ---------- one request to one endpoint ---------- */

typedef struct Call {
	RegistryClient *c;
	const RegistryRepo *repo;
	const char *domain; /* the repository's registry, canonical */
	const RegistryEndpoint *ep;
	HostState *hs;
	char *path;    /* the repository on this endpoint */
	char *base;    /* scheme://host/v2/PATH */
	char **scopes; /* token scopes */
	bool fatal;    /* the failure is the caller's (a sink): no other endpoint helps */
	char *name;    /* host/path, for messages */
} Call;

static void call_done(Call *call)
{
	free(call->path);
	free(call->base);
	strv_free(call->scopes);
	free(call->name);
}

static void call_init(Call *call, RegistryClient *c, const RegistryRepo *repo, const char *domain,
		      const RegistryEndpoint *ep, HostState *hs, const char *mount_from)
{
	*call = (Call){.c = c, .repo = repo, .domain = domain, .ep = ep, .hs = hs};
	call->path = *ep->prefix ? xasprintf("%s/%s", ep->prefix, repo->repository)
				 : xstrdup(repo->repository);
	call->base =
	    xasprintf("%s://%s/v2/%s", hs->plain_http ? "http" : "https", ep->host, call->path);
	call->name = xasprintf("%s/%s", ep->host, call->path);
	strv_consume(&call->scopes,
		     xasprintf("repository:%s:%s", call->path, repo->push ? "pull,push" : "pull"));
	if (mount_from)
		strv_consume(&call->scopes, xasprintf("repository:%s:pull", mount_from));
}

/* The registry the endpoint's credentials belong to. */
static const char *call_cred_domain(const Call *call)
{
	return call->ep->mirror ? call->ep->host : call->domain;
}

static RegistryAuthRequest call_auth_request(const Call *call, const RegistryChallenge *ch)
{
	return (RegistryAuthRequest){
	    .host = call->ep->host,
	    .cred_domain = call_cred_domain(call),
	    .repository = call->path,
	    .challenge = ch,
	    .scopes = call->scopes,
	    .tls = call->hs->tls,
	    .plain_realm_ok = call->ep->plain_http_ok,
	};
}

/* After a 401: the challenge it carries becomes the host's, its insufficient_scope scope is
 * added, and the token for the old scopes is forgotten. */
static int call_reauth(Call *call, const HttpResponse *resp, KilnError **err)
{
	RegistryChallenge *chs = NULL;
	size_t n = 0;
	int r = response_challenges(resp, &chs, &n, err);
	const RegistryChallenge *pick;

	if (r < 0)
		return kiln_error_wrap(err, r, "registry '%s'", call->ep->host);
	pick = registry_challenges_pick(chs, n);
	if (pick) {
		RegistryAuthRequest ar = call_auth_request(call, pick);
		registry_auth_invalidate(call->c->auth, &ar);
		if (pick->scope && strchr(pick->scope, ':') && !strchr(pick->scope, ' ')) {
			bool have = false;
			for (size_t i = 0; call->scopes[i]; i++)
				have = have || strcmp(call->scopes[i], pick->scope) == 0;
			if (!have)
				strv_push(&call->scopes, pick->scope);
		}
		host_set_challenge(call->c, call->hs, pick);
	}
	registry_challenges_free(chs, n);
	return pick ? 1 : 0;
}

/* An authorised request to this endpoint: the Authorization header goes to the endpoint's own
 * origin only (an upload Location elsewhere gets none); one 401 refreshes it. */
static int call_request(Call *call, HttpRequest *rq, HttpResponse *resp, KilnError **err)
{
	char *const *orig = rq->headers;
	bool own = http_url_same_origin(rq->url, call->base);
	int r;

	for (int round = 0;; round++) {
		_cleanup_secret_ char *auth = NULL;
		RegistryChallenge ch = {0};
		pthread_mutex_lock(&call->c->lock);
		registry_challenge_copy(&ch, &call->hs->challenge);
		pthread_mutex_unlock(&call->c->lock);
		RegistryAuthRequest ar = call_auth_request(call, &ch);
		r = own ? registry_auth_header(call->c->auth, &ar, &auth, err) : 0;
		registry_challenge_done(&ch);
		if (r < 0)
			return r;
		size_t n = strv_length(orig);
		char **h = xcalloc(n + 2, sizeof(char *));
		if (n)
			memcpy(h, orig, n * sizeof(char *));
		h[n] = auth;
		rq->headers = h;
		rq->tls = call->hs->tls;
		rq->retry_policy = &call->c->retry;
		/* Blob transfers over HTTP/1.1: libcurl 7.88's HTTP/2 spins on flow control for
		 * uploads and streams blobs about 20% slower than an HTTP/1.1 connection per
		 * transfer (bench/push.sh); manifests, HEADs and tokens keep HTTP/2. */
		rq->http1 = call->repo->push || rq->sink != NULL;
		r = http_request(call->c->http, rq, resp, err);
		rq->headers = orig;
		free(h);
		if (r < 0 || resp->status != 401 || round > 0 || !own)
			return r;
		r = call_reauth(call, resp, err);
		if (r <= 0)
			return r;
		http_response_done(resp);
	}
}

/* ": message (CODE)" of the first entry of a registry's JSON error body, or "". */
static char *error_detail(const HttpResponse *resp)
{
	_cleanup_json_ json_t *j =
	    resp->body ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
	json_t *e = json_array_get(json_object_get(j, "errors"), 0);
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));

	if (!code && !msg)
		return xstrdup("");
	if (!msg)
		return xasprintf(": %s", EXCERPT(code));
	if (!code)
		return xasprintf(": %s", EXCERPT(msg));
	return xasprintf(": %s (%s)", EXCERPT(msg), EXCERPT(code));
}

/* The error for an unexpected status; what: "manifest 'latest'", "blob sha256:...". */
static int status_error(const Call *call, const char *what, const HttpResponse *resp,
			KilnError **err)
{
	_cleanup_free_ char *detail = error_detail(resp);
	const RegistryCreds *creds = NULL;
	long s = resp->status;

	if (s == 404)
		return kiln_error(err, ENOENT, "%s: %s not found%s", call->name, what, detail);
	if (s == 401 &&
	    registry_auth_creds(call->c->auth, call_cred_domain(call), call->path, &creds, NULL) >=
		0 &&
	    creds && creds->username)
		return kiln_error(err, EACCES,
				  "%s: %s: the credentials of '%s' from %s were not accepted (HTTP "
				  "401)%s",
				  call->name, what, EXCERPT(creds->username), creds->source,
				  detail);
	if (s == 401)
		return kiln_error(err, EACCES,
				  "%s: %s: authentication required (HTTP 401)%s; log in with 'kiln "
				  "login %s'",
				  call->name, what, detail, call_cred_domain(call));
	if (s == 403)
		return kiln_error(err, EACCES, "%s: %s: access denied (HTTP 403)%s", call->name,
				  what, detail);
	if (resp->attempts > 1)
		return kiln_error(err, EIO, "%s: %s: HTTP %ld%s (after %u attempts)", call->name,
				  what, s, detail, resp->attempts);
	return kiln_error(err, EIO, "%s: %s: HTTP %ld%s", call->name, what, s, detail);
}

typedef int (*EndpointFn)(Call *call, void *userdata, KilnError **err);

/* Reads a host flag, setting it first when set is true. */
static bool host_flag(RegistryClient *c, bool *flag, bool set)
{
	pthread_mutex_lock(&c->lock);
	if (set)
		*flag = true;
	bool v = *flag;
	pthread_mutex_unlock(&c->lock);
	return v;
}

static bool error_is_unreachable(int r)
{
	return r == -EHOSTUNREACH || r == -ECONNREFUSED || r == -ETIMEDOUT;
}

/* The last endpoint's error, with what the ones before it said. */
static int run_failed(int r, KilnError **e, const StrBuf *tried, KilnError **err)
{
	if (tried->len && *e && (*e)->message) {
		char *m = xasprintf("%s (tried before: %s)", (*e)->message, tried->s);
		free((*e)->message);
		(*e)->message = m;
	}
	if (err && !*err)
		*err = TAKE_PTR(*e);
	return r;
}

/* Runs fn against the repository's endpoints in order until one succeeds. */
static int registry_run(RegistryClient *c, const RegistryRepo *repo, const char *mount_from,
			EndpointFn fn, void *userdata, KilnError **err)
{
	_cleanup_strbuf_ StrBuf tried = {0};
	const EndpointList *l = NULL;
	int r = client_endpoints(c, repo->domain, repo->push, &l, err);

	for (size_t i = 0; r >= 0 && i < l->n; i++) {
		_cleanup_error_ KilnError *e = NULL;
		const RegistryEndpoint *ep = &l->v[i];
		bool last = i + 1 == l->n;
		HostState *hs = NULL;
		Call call = {0};

		r = host_state(c, ep, &hs, &e);
		if (r >= 0 && host_flag(c, &hs->down, false) && !last) {
			strbuf_add(&tried, tried.len ? "; " : "", tried.len ? 2 : 0);
			strbuf_adds(&tried, ep->host);
			strbuf_adds(&tried, ": unreachable earlier");
			continue;
		}
		if (r >= 0)
			r = host_ping(c, ep, hs, &e);
		if (r >= 0) {
			call_init(&call, c, repo, l->domain, ep, hs, mount_from);
			r = fn(&call, userdata, &e);
		}
		bool fatal = call.fatal;
		call_done(&call);
		if (r >= 0)
			return r;
		if (hs && error_is_unreachable(r))
			host_flag(c, &hs->down, true);
		if (last || fatal)
			return run_failed(r, &e, &tried, err);
		strbuf_add(&tried, tried.len ? "; " : "", tried.len ? 2 : 0);
		strbuf_adds(&tried, e && e->message ? e->message : ep->host);
		r = 0;
	}
	return r;
}

/* ---------- manifests ---------- */

bool registry_manifest_type_supported(const char *mt)
{
	return mt && (strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_OCI_MANIFEST) == 0 ||
		      strcmp(mt, MT_DOCKER_LIST) == 0 || strcmp(mt, MT_DOCKER_MANIFEST) == 0);
}

void registry_manifest_done(RegistryManifest *m)
{
	free(m->data);
	free(m->endpoint);
	*m = (RegistryManifest){0};
}

/* A tag or a sha256 digest. */
static int reference_check(const char *ref, KilnError **err)
{
	if (ref_tag_valid(ref, strlen(ref)) || digest_is_valid(ref))
		return 0;
	if (strchr(ref, ':'))
		return kiln_error(err, ENOTSUP,
				  "'%s' is not a sha256 digest (the only kind kiln uses)",
				  EXCERPT(ref));
	return kiln_error(err, EINVAL, "'%s' is not a valid tag or digest", EXCERPT(ref));
}

/* The media type a Content-Type header names (parameters dropped), in out. */
static void content_type(const HttpResponse *resp, char out[128])
{
	const char *ct = http_response_header(resp, "Content-Type", NULL);
	size_t n = ct ? strcspn(ct, "; \t") : 0;

	if (n >= 128)
		n = 0;
	memcpy(out, ct ? ct : "", n);
	out[n] = '\0';
}

static int schema1_refused(const Call *call, const char *ref, KilnError **err)
{
	return kiln_error(err, ENOTSUP,
			  "%s: manifest '%s' is a Docker schema 1 manifest, which kiln does not "
			  "support (deprecated since 2019): push the image again with a current "
			  "client",
			  call->name, EXCERPT(ref));
}

static int manifest_type(const Call *call, const char *ref, const HttpResponse *resp, char out[128],
			 KilnError **err)
{
	_cleanup_json_ json_t *j =
	    json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
	const char *doc = json_string_value(json_object_get(j, "mediaType"));
	char ct[128];

	content_type(resp, ct);
	if (strncmp(ct, MT_DOCKER_SCHEMA1, strlen(MT_DOCKER_SCHEMA1)) == 0 ||
	    json_integer_value(json_object_get(j, "schemaVersion")) == 1)
		return schema1_refused(call, ref, err);
	if (!json_is_object(j))
		return kiln_error(err, EIO, "%s: manifest '%s' is not a JSON object", call->name,
				  EXCERPT(ref));
	if (registry_manifest_type_supported(ct) && doc && strcmp(doc, ct) != 0)
		return kiln_error(err, EIO,
				  "%s: manifest '%s' is served as '%s' but says it is '%s'",
				  call->name, EXCERPT(ref), ct, EXCERPT(doc));
	const char *mt = registry_manifest_type_supported(ct)	 ? ct
			 : registry_manifest_type_supported(doc) ? doc
			 : doc					 ? NULL
			 : json_object_get(j, "manifests")	 ? MT_OCI_INDEX
			 : json_object_get(j, "config")		 ? MT_OCI_MANIFEST
								 : NULL;
	if (!mt)
		return kiln_error(err, ENOTSUP,
				  "%s: manifest '%s' has the unsupported media type '%s'",
				  call->name, EXCERPT(ref), EXCERPT(doc ? doc : ct));
	snprintf(out, 128, "%s", mt);
	return 0;
}

/* Docker-Content-Digest, when sent, and a requested digest must both be the bytes' digest. */
static int digest_agrees(const Call *call, const char *ref, const HttpResponse *resp,
			 const char *digest, KilnError **err)
{
	const char *dcd = http_response_header(resp, "Docker-Content-Digest", NULL);

	if (dcd && digest_is_valid(dcd) && strcmp(dcd, digest) != 0)
		return kiln_error(err, EIO,
				  "%s: manifest '%s': its bytes have digest %s but the registry "
				  "says %s",
				  call->name, EXCERPT(ref), digest, dcd);
	if (digest_is_valid(ref) && strcmp(ref, digest) != 0)
		return kiln_error(err, EIO, "%s: manifest %s: the registry sent bytes of digest %s",
				  call->name, ref, digest);
	return 0;
}

typedef struct ManifestGet {
	const char *reference;
	RegistryManifest *ret;
} ManifestGet;

static int manifest_get_fn(Call *call, void *userdata, KilnError **err)
{
	ManifestGet *g = userdata;
	_cleanup_free_ char *url = xasprintf("%s/manifests/%s", call->base, g->reference);
	_cleanup_http_response_ HttpResponse resp = {0};
	char *headers[] = {MANIFEST_ACCEPT, NULL};
	HttpRequest rq = HTTP_REQUEST_INIT;
	_cleanup_free_ char *what = xasprintf("manifest '%s'", g->reference);
	RegistryManifest m = {0};
	int r;

	rq.url = url;
	rq.headers = headers;
	rq.max_body = OCI_MANIFEST_MAX;
	rq.retry = true;
	rq.follow_redirects = true;
	r = call_request(call, &rq, &resp, err);
	if (r < 0)
		return r == -EFBIG ? kiln_error_wrap(err, r, "%s: %s", call->name, what) : r;
	if (resp.status != 200)
		return status_error(call, what, &resp, err);
	r = manifest_type(call, g->reference, &resp, m.media_type, err);
	if (r < 0)
		return r;
	digest_buffer(resp.body ? resp.body : "", resp.body_len, m.digest);
	r = digest_agrees(call, g->reference, &resp, m.digest, err);
	if (r < 0)
		return r;
	m.len = resp.body_len;
	m.data = resp.body ? TAKE_PTR(resp.body) : xstrdup("");
	m.endpoint = xstrdup(call->ep->host);
	*g->ret = m;
	return 0;
}

int registry_manifest_get(RegistryClient *c, const RegistryRepo *repo, const char *reference,
			  RegistryManifest *ret, KilnError **err)
{
	ManifestGet g = {reference, ret};
	int r = reference_check(reference, err);

	return r < 0 ? r : registry_run(c, repo, NULL, manifest_get_fn, &g, err);
}

typedef struct ManifestHead {
	const char *reference;
	RegistryDescriptor *ret;
} ManifestHead;

static int manifest_head_fn(Call *call, void *userdata, KilnError **err)
{
	ManifestHead *h = userdata;
	_cleanup_free_ char *url = xasprintf("%s/manifests/%s", call->base, h->reference);
	_cleanup_http_response_ HttpResponse resp = {0};
	char *headers[] = {MANIFEST_ACCEPT, NULL};
	HttpRequest rq = HTTP_REQUEST_INIT;
	_cleanup_free_ char *what = xasprintf("manifest '%s'", h->reference);
	RegistryDescriptor d = {.size = -1};
	const char *dcd, *len;
	int r;

	rq.method = "HEAD";
	rq.url = url;
	rq.headers = headers;
	rq.retry = true;
	rq.follow_redirects = true;
	r = call_request(call, &rq, &resp, err);
	if (r < 0)
		return r;
	if (resp.status != 200)
		return status_error(call, what, &resp, err);
	content_type(&resp, d.media_type);
	if (strncmp(d.media_type, MT_DOCKER_SCHEMA1, strlen(MT_DOCKER_SCHEMA1)) == 0)
		return schema1_refused(call, h->reference, err);
	dcd = http_response_header(&resp, "Docker-Content-Digest", NULL);
	len = http_response_header(&resp, "Content-Length", NULL);
	if (!dcd || !digest_is_valid(dcd) || !len ||
	    !registry_manifest_type_supported(d.media_type)) {
		/* Not enough to go on: the GET tells it all. */
		_cleanup_registry_manifest_ RegistryManifest m = {0};
		ManifestGet g = {h->reference, &m};
		r = manifest_get_fn(call, &g, err);
		if (r < 0)
			return r;
		snprintf(d.media_type, sizeof(d.media_type), "%s", m.media_type);
		snprintf(d.digest, sizeof(d.digest), "%s", m.digest);
		d.size = (int64_t)m.len;
	} else {
		if (digest_is_valid(h->reference) && strcmp(dcd, h->reference) != 0)
			return kiln_error(err, EIO,
					  "%s: manifest %s: the registry says its digest is %s",
					  call->name, h->reference, dcd);
		snprintf(d.digest, sizeof(d.digest), "%s", dcd);
		d.size = strtoll(len, NULL, 10);
	}
	*h->ret = d;
	return 0;
}

int registry_manifest_head(RegistryClient *c, const RegistryRepo *repo, const char *reference,
			   RegistryDescriptor *ret, KilnError **err)
{
	ManifestHead h = {reference, ret};
	int r = reference_check(reference, err);

	return r < 0 ? r : registry_run(c, repo, NULL, manifest_head_fn, &h, err);
}

typedef struct ManifestPut {
	const char *reference, *media_type;
	const void *data;
	size_t len;
	char digest[DIGEST_STRING_MAX];
} ManifestPut;

static int manifest_put_fn(Call *call, void *userdata, KilnError **err)
{
	ManifestPut *p = userdata;
	_cleanup_free_ char *url = xasprintf("%s/manifests/%s", call->base, p->reference);
	_cleanup_free_ char *ct = xasprintf("Content-Type: %s", p->media_type);
	_cleanup_free_ char *what = xasprintf("manifest '%s'", p->reference);
	_cleanup_http_response_ HttpResponse resp = {0};
	char *headers[] = {ct, NULL};
	HttpRequest rq = HTTP_REQUEST_INIT;
	const char *dcd;
	int r;

	rq.method = "PUT";
	rq.url = url;
	rq.headers = headers;
	rq.body = p->data;
	rq.body_len = p->len;
	rq.retry = true;
	r = call_request(call, &rq, &resp, err);
	if (r < 0)
		return r;
	if (resp.status < 200 || resp.status > 299)
		return status_error(call, what, &resp, err);
	dcd = http_response_header(&resp, "Docker-Content-Digest", NULL);
	if (dcd && digest_is_valid(dcd) && strcmp(dcd, p->digest) != 0)
		return kiln_error(err, EIO, "%s: %s: stored as %s, but its digest is %s",
				  call->name, what, dcd, p->digest);
	return 0;
}

int registry_manifest_put(RegistryClient *c, const RegistryRepo *repo, const char *reference,
			  const char *media_type, const void *data, size_t len,
			  char ret_digest[DIGEST_STRING_MAX], KilnError **err)
{
	ManifestPut p = {reference, media_type, data, len, {0}};
	int r = reference_check(reference, err);

	if (r < 0)
		return r;
	if (!registry_manifest_type_supported(media_type))
		return kiln_error(err, ENOTSUP, "cannot push a manifest of media type '%s'",
				  EXCERPT(media_type));
	digest_buffer(data, len, p.digest);
	if (digest_is_valid(reference) && strcmp(reference, p.digest) != 0)
		return kiln_error(err, EINVAL, "manifest of digest %s pushed as %s", p.digest,
				  reference);
	/* Writes go to the registry itself, never a mirror. */
	RegistryRepo target = *repo;
	target.push = true;
	r = registry_run(c, &target, NULL, manifest_put_fn, &p, err);
	if (r >= 0 && ret_digest)
		memcpy(ret_digest, p.digest, DIGEST_STRING_MAX);
	return r;
}

/* ---------- blobs ---------- */

static int blob_check_digest(const char *digest, KilnError **err)
{
	if (!digest_is_valid(digest))
		return kiln_error(err, EINVAL, "'%s' is not a sha256 digest", EXCERPT(digest));
	return 0;
}

typedef struct BlobHead {
	const char *digest;
	int64_t size;
} BlobHead;

static int blob_head_fn(Call *call, void *userdata, KilnError **err)
{
	BlobHead *h = userdata;
	_cleanup_free_ char *url = xasprintf("%s/blobs/%s", call->base, h->digest);
	_cleanup_free_ char *what = xasprintf("blob %s", h->digest);
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpRequest rq = HTTP_REQUEST_INIT;
	const char *len;
	int r;

	rq.method = "HEAD";
	rq.url = url;
	rq.retry = true;
	rq.follow_redirects = true;
	r = call_request(call, &rq, &resp, err);
	if (r < 0)
		return r;
	if (resp.status != 200)
		return status_error(call, what, &resp, err);
	len = http_response_header(&resp, "Content-Length", NULL);
	h->size = len ? strtoll(len, NULL, 10) : -1;
	return 0;
}

int registry_blob_head(RegistryClient *c, const RegistryRepo *repo, const char *digest,
		       bool *ret_exists, int64_t *ret_size, KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	BlobHead h = {digest, -1};
	int r = blob_check_digest(digest, err);

	if (r < 0)
		return r;
	r = registry_run(c, repo, NULL, blob_head_fn, &h, &e);
	if (r == -ENOENT) {
		*ret_exists = false;
		return 0;
	}
	if (r < 0) {
		if (err && !*err)
			*err = TAKE_PTR(e);
		return r;
	}
	*ret_exists = true;
	if (ret_size)
		*ret_size = h.size;
	return 0;
}

typedef struct BlobGet {
	const char *digest;
	int64_t size;
	const RegistryBlobSink *sink;
	Sha256 *hash;
	uint64_t got;
	bool sink_failed;
	Call *call;
} BlobGet;

static int blob_restart(void *userdata, KilnError **err)
{
	BlobGet *g = userdata;
	int r;

	sha256_free(g->hash);
	g->hash = NULL;
	r = sha256_new(&g->hash, err);
	if (r < 0 || g->got == 0)
		return r;
	if (!g->sink->restart) {
		g->sink_failed = true;
		return kiln_error(err, EIO,
				  "blob %s: the download broke after %llu bytes and "
				  "cannot start again",
				  g->digest, (unsigned long long)g->got);
	}
	g->got = 0;
	r = g->sink->restart(g->sink->userdata, err);
	if (r < 0)
		g->sink_failed = true;
	return r;
}

static int blob_write(void *userdata, const void *data, size_t len, KilnError **err)
{
	BlobGet *g = userdata;

	if (g->size >= 0 && g->got + len > (uint64_t)g->size)
		return kiln_error(err, EIO, "%s: blob %s: more than its %lld bytes", g->call->name,
				  g->digest, (long long)g->size);
	int r = g->sink->write(g->sink->userdata, data, len, err);
	if (r < 0) {
		g->sink_failed = true;
		return r;
	}
	if (!g->sink->digest)
		sha256_update(g->hash, data, len);
	g->got += len;
	return 0;
}

/* One download into the sink: 0, 1 when the bytes are wrong (size or digest: worth one more
 * try, as a transfer may corrupt them), or an error. */
static int blob_get_once(Call *call, BlobGet *g, const char *what, KilnError **err)
{
	_cleanup_free_ char *url = xasprintf("%s/blobs/%s", call->base, g->digest);
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpSink sink = {blob_write, blob_restart, g};
	HttpRequest rq = HTTP_REQUEST_INIT;
	char got[DIGEST_STRING_MAX];
	int r;

	/* What an earlier try wrote goes. */
	r = blob_restart(g, err);
	if (r < 0) {
		call->fatal = true;
		return r;
	}
	rq.url = url;
	rq.sink = &sink;
	rq.retry = true;
	rq.follow_redirects = true;
	r = call_request(call, &rq, &resp, err);
	if (r < 0) {
		call->fatal = g->sink_failed;
		return r;
	}
	if (resp.status != 200 && resp.status != 206)
		return status_error(call, what, &resp, err);
	if (g->size >= 0 && g->got != (uint64_t)g->size) {
		kiln_error(err, EIO, "%s: %s: %llu bytes, its descriptor says %lld", call->name,
			   what, (unsigned long long)g->got, (long long)g->size);
		return 1;
	}
	if (g->sink->digest)
		r = g->sink->digest(g->sink->userdata, got, err);
	else
		sha256_final(g->hash, got);
	if (r < 0) {
		call->fatal = true;
		return r;
	}
	if (strcmp(got, g->digest) != 0) {
		kiln_error(err, EIO, "%s: %s: the bytes received have digest %s", call->name, what,
			   got);
		return 1;
	}
	return 0;
}

static int blob_get_fn(Call *call, void *userdata, KilnError **err)
{
	BlobGet *g = userdata;
	_cleanup_free_ char *what = xasprintf("blob %s", g->digest);

	g->call = call;
	for (int attempt = 1;; attempt++) {
		_cleanup_error_ KilnError *e = NULL;
		int r = blob_get_once(call, g, what, &e);
		if (r == 0)
			return 0;
		if (r < 0 || attempt == 2) {
			if (err && !*err)
				*err = TAKE_PTR(e);
			return r < 0 ? r : -EIO;
		}
	}
}

int registry_blob_get(RegistryClient *c, const RegistryRepo *repo, const char *digest, int64_t size,
		      const RegistryBlobSink *sink, KilnError **err)
{
	BlobGet g = {.digest = digest, .size = size, .sink = sink};
	int r = blob_check_digest(digest, err);

	if (r >= 0)
		r = registry_run(c, repo, NULL, blob_get_fn, &g, err);
	sha256_free(g.hash);
	return r;
}

typedef struct MemSink {
	StrBuf b;
	size_t max;
	const char *digest;
} MemSink;

static int mem_write(void *userdata, const void *data, size_t len, KilnError **err)
{
	MemSink *m = userdata;

	if (m->b.len + len > m->max)
		return kiln_error(err, EFBIG, "blob %s: larger than %zu bytes", m->digest, m->max);
	strbuf_add(&m->b, data, len);
	return 0;
}

static int mem_restart(void *userdata, KilnError **err)
{
	strbuf_truncate(&((MemSink *)userdata)->b, 0);
	return 0;
}

int registry_blob_read(RegistryClient *c, const RegistryRepo *repo, const char *digest,
		       int64_t size, size_t max, char **ret_data, size_t *ret_len, KilnError **err)
{
	MemSink m = {.max = max, .digest = digest};
	RegistryBlobSink sink = {mem_write, mem_restart, &m, NULL};
	int r;

	if (size > (int64_t)max)
		return kiln_error(err, EFBIG, "blob %s: %lld bytes, more than %zu", digest,
				  (long long)size, max);
	r = registry_blob_get(c, repo, digest, size, &sink, err);
	if (r < 0) {
		strbuf_done(&m.b);
		return r;
	}
	*ret_len = m.b.len;
	*ret_data = strbuf_steal(&m.b);
	return 0;
}

/* ---------- uploads ---------- */

typedef struct BlobPush {
	const char *digest;
	int fd;
	uint64_t size;
	const char *mount_from;
	RegistryBlobPushed how;
	bool transient;	  /* the last failure may pass when the upload starts again */
	long retry_after; /* a 429's Retry-After seconds, or -1 */
} BlobPush;

/* One request of an upload: 0 when it answered want (or also, when not 0), else an error
 * (p->transient set). */
static int upload_step(Call *call, BlobPush *p, HttpRequest *rq, long want, long also,
		       HttpResponse *resp, const char *what, KilnError **err)
{
	int r = call_request(call, rq, resp, err);
	const char *ra;

	if (r < 0) {
		p->transient = http_error_is_transient(r);
		return r;
	}
	if (resp->status == want || (also && resp->status == also))
		return 0;
	p->transient = http_status_is_transient(resp->status);
	ra = http_response_header(resp, "Retry-After", NULL);
	p->retry_after = ra && isdigit((unsigned char)*ra) ? strtol(ra, NULL, 10) : -1;
	return status_error(call, what, resp, err);
}

static int upload_location(Call *call, const HttpResponse *resp, char **ret, KilnError **err)
{
	const char *loc = http_response_header(resp, "Location", NULL);

	*ret = loc ? http_url_resolve(resp->url, loc) : NULL;
	if (!*ret)
		return kiln_error(err, EPROTO, "%s: blob upload: no usable Location in the answer",
				  call->name);
	return 0;
}

/* POST .../blobs/uploads/ (?mount=&from=): 1 when mounted, else 0 with the session's URL. */
static int upload_start(Call *call, BlobPush *p, char **ret_location, uint64_t *ret_min_chunk,
			KilnError **err)
{
	_cleanup_free_ char *url = xasprintf("%s/blobs/uploads/", call->base);
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpRequest rq = HTTP_REQUEST_INIT;
	const char *min;
	int r;

	if (p->mount_from) {
		char *u = http_url_add_query(url, "mount", p->digest), *v;
		v = http_url_add_query(u, "from", p->mount_from);
		free(u);
		free(url);
		url = v;
	}
	rq.method = "POST";
	rq.url = url;
	r = upload_step(call, p, &rq, 202, p->mount_from ? 201 : 0, &resp, "blob upload", err);
	if (r < 0)
		return r;
	if (resp.status == 201) {
		p->how = REGISTRY_BLOB_MOUNTED;
		return 1;
	}
	min = http_response_header(&resp, "OCI-Chunk-Min-Length", NULL);
	*ret_min_chunk = min ? strtoull(min, NULL, 10) : 0;
	return upload_location(call, &resp, ret_location, err);
}

/* PATCH one chunk [off, off + n) to *location, which becomes the next one. */
static int upload_patch(Call *call, BlobPush *p, char **location, uint64_t off, uint64_t n,
			KilnError **err)
{
	_cleanup_free_ char *range = xasprintf("Content-Range: %llu-%llu", (unsigned long long)off,
					       (unsigned long long)(off + n - 1));
	char *headers[] = {"Content-Type: application/octet-stream", range, NULL};
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpRequest rq = HTTP_REQUEST_INIT;
	unsigned long long a = 0, b = 0;
	const char *have;
	int r;

	rq.method = "PATCH";
	rq.url = *location;
	rq.headers = headers;
	rq.body_fd = p->fd;
	rq.body_offset = off;
	rq.body_len = n;
	r = upload_step(call, p, &rq, 202, 0, &resp, "blob upload chunk", err);
	if (r < 0)
		return r;
	have = http_response_header(&resp, "Range", NULL);
	if (have && (sscanf(have, "%llu-%llu", &a, &b) != 2 || b != off + n - 1)) {
		p->transient = true;
		return kiln_error(err, EIO,
				  "%s: blob upload: the registry has bytes '%s', want 0-%llu",
				  call->name, EXCERPT(have), (unsigned long long)(off + n - 1));
	}
	free(*location);
	return upload_location(call, &resp, location, err);
}

/* The PUT that completes an upload, with [off, off + n) of the blob (n may be 0). */
static int upload_commit(Call *call, BlobPush *p, const char *location, uint64_t off, uint64_t n,
			 KilnError **err)
{
	_cleanup_free_ char *url = http_url_add_query(location, "digest", p->digest);
	_cleanup_free_ char *what = xasprintf("blob %s upload", p->digest);
	char *headers[] = {"Content-Type: application/octet-stream", NULL};
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpRequest rq = HTTP_REQUEST_INIT;
	const char *dcd;
	int r;

	rq.method = "PUT";
	rq.url = url;
	rq.headers = headers;
	rq.body_fd = p->fd;
	rq.body_offset = off;
	rq.body_len = n;
	rq.stall_timeout_s = UPLOAD_COMMIT_STALL_S;
	r = upload_step(call, p, &rq, 201, 204, &resp, what, err);
	if (r < 0)
		return r;
	dcd = http_response_header(&resp, "Docker-Content-Digest", NULL);
	if (dcd && digest_is_valid(dcd) && strcmp(dcd, p->digest) != 0)
		return kiln_error(err, EIO, "%s: %s: the registry stored it as %s", call->name,
				  what, dcd);
	p->how = REGISTRY_BLOB_UPLOADED;
	return 0;
}

/* A mount-only push that the registry answered with an upload session: the session is
 * cancelled (best effort: registries purge abandoned ones anyway). */
static int upload_cancel(Call *call, BlobPush *p, const char *location, KilnError **err)
{
	_cleanup_http_response_ HttpResponse resp = {0};
	_cleanup_error_ KilnError *e = NULL;
	HttpRequest rq = HTTP_REQUEST_INIT;

	rq.method = "DELETE";
	rq.url = location;
	(void)call_request(call, &rq, &resp, &e);
	return kiln_error(err, ENOENT, "%s: blob %s: not mounted from '%s'", call->name, p->digest,
			  p->mount_from);
}

static int blob_push_once(Call *call, BlobPush *p, KilnError **err)
{
	RegistryClient *c = call->c;
	_cleanup_free_ char *location = NULL;
	uint64_t min_chunk = 0, chunk, off = 0;
	int r = upload_start(call, p, &location, &min_chunk, err);

	if (r != 0)
		return r < 0 ? r : 0;
	if (p->fd < 0)
		return upload_cancel(call, p, location, err);
	if (p->size <= c->monolithic_max)
		return upload_commit(call, p, location, 0, p->size, err);
	chunk = c->chunk_size > min_chunk ? c->chunk_size : min_chunk;
	for (; off < p->size; off += chunk) {
		uint64_t n = p->size - off < chunk ? p->size - off : chunk;
		r = upload_patch(call, p, &location, off, n, err);
		if (r < 0)
			return r;
	}
	return upload_commit(call, p, location, p->size, 0, err);
}

static int blob_push_fn(Call *call, void *userdata, KilnError **err)
{
	BlobPush *p = userdata;
	unsigned tries = call->c->retry.tries ? call->c->retry.tries : 1;

	for (unsigned attempt = 1;; attempt++) {
		_cleanup_error_ KilnError *e = NULL;
		p->transient = false;
		p->retry_after = -1;
		int r = blob_push_once(call, p, &e);
		if (r >= 0)
			return r;
		if (!p->transient || attempt >= tries) {
			if (err && !*err)
				*err = TAKE_PTR(e);
			return attempt > 1 ? kiln_error_wrap(err, r, "after %u attempts", attempt)
					   : r;
		}
		http_backoff_sleep(&call->c->retry, attempt + 1, p->retry_after);
	}
}

int registry_blob_push(RegistryClient *c, const RegistryRepo *repo, const char *digest, int fd,
		       uint64_t size, const char *mount_from, RegistryBlobPushed *ret_how,
		       KilnError **err)
{
	BlobPush p = {.digest = digest, .fd = fd, .size = size, .mount_from = mount_from};
	int r = blob_check_digest(digest, err);

	if (r < 0)
		return r;
	if (mount_from && strcmp(mount_from, repo->repository) == 0)
		p.mount_from = NULL;
	if (fd < 0 && !p.mount_from)
		return kiln_error(err, EINVAL, "blob %s: no bytes and nothing to mount from",
				  digest);
	RegistryRepo target = *repo;
	target.push = true;
	r = registry_run(c, &target, p.mount_from, blob_push_fn, &p, err);
	if (r >= 0 && ret_how)
		*ret_how = p.how;
	return r;
}

/* ---------- login ---------- */

static int login_verify(RegistryClient *c, const RegistryEndpoint *ep, HostState *hs,
			const char *header, const char *username, KilnError **err)
{
	_cleanup_free_ char *url =
	    xasprintf("%s://%s/v2/", hs->plain_http ? "http" : "https", ep->host);
	char *headers[] = {(char *)header, NULL};
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpRequest rq = HTTP_REQUEST_INIT;
	int r;

	rq.url = url;
	rq.headers = headers;
	rq.tls = hs->tls;
	rq.retry = true;
	rq.retry_policy = &c->retry;
	rq.max_body = PING_BODY_MAX;
	r = http_request(c->http, &rq, &resp, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "registry '%s'", ep->host);
	if (resp.status == 401 || resp.status == 403)
		return kiln_error(err, EACCES,
				  "registry '%s' refused the credentials of '%s' (HTTP %ld)",
				  ep->host, EXCERPT(username), resp.status);
	if (resp.status != 200)
		return kiln_error(err, EIO, "registry '%s': GET /v2/ answered HTTP %ld", ep->host,
				  resp.status);
	return 0;
}

int registry_login_check(RegistryClient *c, const char *domain, const char *username,
			 const char *secret, KilnError **err)
{
	_cleanup_secret_ char *header = NULL;
	const EndpointList *l = NULL;
	RegistryChallenge ch = {0};
	HostState *hs = NULL;
	RegistryCreds creds = {
	    .username = (char *)username, .secret = (char *)secret, .source = "the command line"};
	int r = client_endpoints(c, domain, true, &l, err);

	if (r >= 0)
		r = host_state(c, &l->v[0], &hs, err);
	if (r >= 0)
		r = host_ping(c, &l->v[0], hs, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	registry_challenge_copy(&ch, &hs->challenge);
	bool unsupported = hs->auth_unsupported;
	pthread_mutex_unlock(&c->lock);
	if (unsupported)
		return kiln_error(err, ENOTSUP,
				  "registry '%s' asks for an authentication scheme kiln does not "
				  "support (only Bearer and Basic)",
				  l->v[0].host);
	if (ch.scheme == REGISTRY_AUTH_OTHER) {
		registry_challenge_done(&ch);
		return 1;
	}
	RegistryAuthRequest ar = {.host = l->v[0].host,
				  .cred_domain = l->domain,
				  .challenge = &ch,
				  .tls = hs->tls,
				  .plain_realm_ok = l->v[0].plain_http_ok,
				  .creds = &creds};
	r = registry_auth_header(c->auth, &ar, &header, err);
	registry_challenge_done(&ch);
	if (r < 0)
		return r;
	return login_verify(c, &l->v[0], hs, header, username, err);
}
