#include "registry_auth.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "layers/oci.h"

#define TOKENS_MAX 256
#define TOKEN_TTL_MIN_S 60
#define TOKEN_MARGIN_S 5

/* ---------- challenges ---------- */

static bool is_tchar(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_token68_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("-._~+/", ch));
}

typedef struct Lexer {
	const char *s;
	size_t pos;
} Lexer;

static void skip_ws(Lexer *l)
{
	while (l->s[l->pos] == ' ' || l->s[l->pos] == '\t')
		l->pos++;
}

static void skip_ws_commas(Lexer *l)
{
	while (l->s[l->pos] == ' ' || l->s[l->pos] == '\t' || l->s[l->pos] == ',')
		l->pos++;
}

static char *read_token(Lexer *l)
{
	size_t start = l->pos;

	while (is_tchar(l->s[l->pos]))
		l->pos++;
	return l->pos > start ? strndup(l->s + start, l->pos - start) : NULL;
}

/* A quoted-string at l->pos (the opening quote); NULL when unterminated. */
static char *read_quoted(Lexer *l)
{
	StrBuf b = {0};

	for (l->pos++; l->s[l->pos] != '"'; l->pos++) {
		if (l->s[l->pos] == '\\' && l->s[l->pos + 1])
			l->pos++;
		if (l->s[l->pos] == '\0') {
			strbuf_done(&b);
			return NULL;
		}
		strbuf_addc(&b, l->s[l->pos]);
	}
	l->pos++;
	return strbuf_steal(&b);
}

/* token68 right after a scheme: its characters, then '='s, then the end or a comma. */
static bool at_token68(const Lexer *l)
{
	size_t p = l->pos, start = p;

	while (is_token68_char(l->s[p]))
		p++;
	if (p == start)
		return false;
	while (l->s[p] == '=')
		p++;
	while (l->s[p] == ' ' || l->s[p] == '\t')
		p++;
	return l->s[p] == '\0' || l->s[p] == ',';
}

static void challenge_set(RegistryChallenge *c, const char *name, char *value)
{
	char **slot = strcasecmp(name, "realm") == 0	 ? &c->realm
		      : strcasecmp(name, "service") == 0 ? &c->service
		      : strcasecmp(name, "scope") == 0	 ? &c->scope
		      : strcasecmp(name, "error") == 0	 ? &c->error
							 : NULL;

	if (slot && !*slot)
		*slot = value;
	else
		free(value);
}

/* The auth-params after a scheme, up to the next challenge (a token not followed by '='). */
static int parse_params(Lexer *l, RegistryChallenge *c, KilnError **err)
{
	for (unsigned n = 0;; n++) {
		size_t save = l->pos;
		skip_ws_commas(l);
		_cleanup_free_ char *name = read_token(l);
		skip_ws(l);
		if (!name || l->s[l->pos] != '=') {
			l->pos = save;
			return 0;
		}
		if (n == REGISTRY_CHALLENGE_PARAMS_MAX)
			return kiln_error(err, EINVAL, "WWW-Authenticate: more than %d parameters",
					  REGISTRY_CHALLENGE_PARAMS_MAX);
		l->pos++;
		skip_ws(l);
		char *value = l->s[l->pos] == '"' ? read_quoted(l) : read_token(l);
		if (!value)
			return kiln_error(err, EINVAL,
					  "WWW-Authenticate: parameter '%s' has no value",
					  EXCERPT(name));
		challenge_set(c, name, value);
	}
}

static int parse_one_header(const char *value, RegistryChallenge **v, size_t *n, KilnError **err)
{
	Lexer l = {value, 0};

	for (;;) {
		skip_ws_commas(&l);
		if (!l.s[l.pos])
			return 0;
		_cleanup_free_ char *scheme = read_token(&l);
		if (!scheme)
			return kiln_error(err, EINVAL, "WWW-Authenticate: unexpected '%s'",
					  EXCERPT(l.s + l.pos));
		if (*n == REGISTRY_CHALLENGES_MAX)
			return kiln_error(err, EINVAL, "WWW-Authenticate: more than %d challenges",
					  REGISTRY_CHALLENGES_MAX);
		*v = xrealloc(*v, (*n + 1) * sizeof(**v));
		RegistryChallenge *c = &(*v)[(*n)++];
		*c = (RegistryChallenge){0};
		c->scheme = strcasecmp(scheme, "bearer") == 0  ? REGISTRY_AUTH_BEARER
			    : strcasecmp(scheme, "basic") == 0 ? REGISTRY_AUTH_BASIC
							       : REGISTRY_AUTH_OTHER;
		skip_ws(&l);
		if (at_token68(&l)) {
			size_t save = l.pos;
			_cleanup_free_ char *name = read_token(&l);
			skip_ws(&l);
			bool param = name && l.s[l.pos] == '=' && l.s[l.pos + 1] != '=' &&
				     l.s[l.pos + 1] != '\0' && l.s[l.pos + 1] != ',';
			l.pos = save;
			if (!param) {
				while (is_token68_char(l.s[l.pos]) || l.s[l.pos] == '=')
					l.pos++;
				continue;
			}
		}
		int r = parse_params(&l, c, err);
		if (r < 0)
			return r;
	}
}

int registry_challenges_parse(char *const *values, RegistryChallenge **ret, size_t *ret_n,
			      KilnError **err)
{
	RegistryChallenge *v = NULL;
	size_t n = 0;

	for (size_t i = 0; values && values[i]; i++) {
		int r = parse_one_header(values[i], &v, &n, err);
		if (r < 0) {
			registry_challenges_free(v, n);
			return r;
		}
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

void registry_challenge_done(RegistryChallenge *c)
{
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	*c = (RegistryChallenge){0};
}

void registry_challenges_free(RegistryChallenge *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		registry_challenge_done(&v[i]);
	free(v);
}

const RegistryChallenge *registry_challenges_pick(const RegistryChallenge *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].scheme == REGISTRY_AUTH_BEARER && v[i].realm)
			return &v[i];
	for (size_t i = 0; i < n; i++)
		if (v[i].scheme == REGISTRY_AUTH_BASIC)
			return &v[i];
	return NULL;
}

static char *strdup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void registry_challenge_copy(RegistryChallenge *dst, const RegistryChallenge *src)
{
	*dst = (RegistryChallenge){
	    .scheme = src->scheme,
	    .realm = strdup_or_null(src->realm),
	    .service = strdup_or_null(src->service),
	    .scope = strdup_or_null(src->scope),
	    .error = strdup_or_null(src->error),
	};
}

/* ---------- tokens and credentials ---------- */

typedef struct TokenEntry {
	char *key; /* host, scopes and user */
	char *token;
	double expires; /* CLOCK_MONOTONIC seconds */
} TokenEntry;

typedef struct CredsEntry {
	char *key; /* domain and repository */
	RegistryCreds creds;
} CredsEntry;

struct RegistryAuth {
	HttpClient *http;
	RegistryHelper helper;
	pthread_mutex_t lock;	    /* tokens */
	pthread_mutex_t creds_lock; /* creds: held while a lookup runs a helper */
	TokenEntry *tokens;
	size_t n_tokens;
	CredsEntry **creds; /* each allocated once: lookups hand out pointers into them */
	size_t n_creds;
};

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

RegistryAuth *registry_auth_new(HttpClient *http, const RegistryHelper *h)
{
	RegistryAuth *a = xcalloc(1, sizeof(*a));

	a->http = http;
	if (h)
		a->helper = *h;
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->creds_lock, NULL);
	return a;
}

void registry_auth_free(RegistryAuth *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n_tokens; i++) {
		free(a->tokens[i].key);
		secret_free(a->tokens[i].token);
	}
	for (size_t i = 0; i < a->n_creds; i++) {
		free(a->creds[i]->key);
		registry_creds_done(&a->creds[i]->creds);
		free(a->creds[i]);
	}
	free(a->tokens);
	free(a->creds);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->creds_lock);
	free(a);
}

int registry_auth_creds(RegistryAuth *a, const char *domain, const char *repository,
			const RegistryCreds **ret, KilnError **err)
{
	_cleanup_free_ char *key = xasprintf("%s/%s", domain, repository ? repository : "");
	int r = 0;

	pthread_mutex_lock(&a->creds_lock);
	for (size_t i = 0; i < a->n_creds; i++)
		if (strcmp(a->creds[i]->key, key) == 0) {
			*ret = &a->creds[i]->creds;
			goto out;
		}
	CredsEntry *e = xcalloc(1, sizeof(*e));
	r = registry_creds_lookup(domain, repository, &a->helper, &e->creds, err);
	if (r < 0) {
		free(e);
		goto out;
	}
	e->key = TAKE_PTR(key);
	a->creds = xrealloc(a->creds, (a->n_creds + 1) * sizeof(*a->creds));
	a->creds[a->n_creds++] = e;
	*ret = &e->creds;
out:
	pthread_mutex_unlock(&a->creds_lock);
	return r;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* host, the sorted scopes and the user: one cached token each. */
static char *token_key(const RegistryAuthRequest *rq, const RegistryCreds *creds)
{
	_cleanup_strv_free_ char **scopes = strv_copy(rq->scopes ? rq->scopes : (char *[]){NULL});
	StrBuf b = {0};

	qsort(scopes, strv_length(scopes), sizeof(char *), str_cmp);
	strbuf_adds(&b, rq->host);
	for (size_t i = 0; scopes[i]; i++) {
		strbuf_addc(&b, '\n');
		strbuf_adds(&b, scopes[i]);
	}
	strbuf_adds(&b, "\nuser=");
	strbuf_adds(&b, creds && creds->username ? creds->username : "");
	return strbuf_steal(&b);
}

static char *token_cached(RegistryAuth *a, const char *key)
{
	char *t = NULL;
	double now = now_mono();

	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_tokens; i++)
		if (strcmp(a->tokens[i].key, key) == 0 && a->tokens[i].expires > now)
			t = xstrdup(a->tokens[i].token);
	pthread_mutex_unlock(&a->lock);
	return t;
}

static void token_drop_locked(RegistryAuth *a, size_t i)
{
	free(a->tokens[i].key);
	secret_free(a->tokens[i].token);
	memmove(&a->tokens[i], &a->tokens[i + 1], (a->n_tokens - i - 1) * sizeof(*a->tokens));
	a->n_tokens--;
}

static void token_forget_locked(RegistryAuth *a, const char *key, double now)
{
	for (size_t i = a->n_tokens; i-- > 0;)
		if (a->tokens[i].expires <= now || (key && strcmp(a->tokens[i].key, key) == 0))
			token_drop_locked(a, i);
}

static void token_put(RegistryAuth *a, char *key, const char *token, long expires_in)
{
	double now = now_mono();

	pthread_mutex_lock(&a->lock);
	token_forget_locked(a, key, now);
	if (a->n_tokens == TOKENS_MAX)
		token_drop_locked(a, 0);
	a->tokens = xrealloc(a->tokens, (a->n_tokens + 1) * sizeof(*a->tokens));
	a->tokens[a->n_tokens++] = (TokenEntry){
	    .key = key, .token = xstrdup(token), .expires = now + expires_in - TOKEN_MARGIN_S};
	pthread_mutex_unlock(&a->lock);
}

void registry_auth_invalidate(RegistryAuth *a, const RegistryAuthRequest *rq)
{
	const RegistryCreds *creds = rq->creds;
	_cleanup_free_ char *key = NULL;

	if (!creds && registry_auth_creds(a, rq->cred_domain, rq->repository, &creds, NULL) < 0)
		creds = NULL;
	key = token_key(rq, creds);
	pthread_mutex_lock(&a->lock);
	token_forget_locked(a, key, now_mono());
	pthread_mutex_unlock(&a->lock);
}

static char *basic_header(const RegistryCreds *c)
{
	char *plain = xasprintf("%s:%s", c->username, c->secret);
	char *b64 = registry_base64_encode(plain, strlen(plain));
	char *h = xasprintf("Authorization: Basic %s", b64);

	secret_free(plain);
	secret_free(b64);
	return h;
}

/* A token's characters go into a header line: printable ASCII, no spaces. */
static bool token_valid(const char *t)
{
	if (!*t || strlen(t) > REGISTRY_TOKEN_MAX)
		return false;
	for (; *t; t++)
		if (*t < 0x21 || *t > 0x7e)
			return false;
	return true;
}

static int token_parse(const char *host, const HttpResponse *resp, char **ret_token,
		       long *ret_expires, KilnError **err)
{
	_cleanup_json_ json_t *j =
	    json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
	const char *t = json_string_value(json_object_get(j, "token"));
	json_t *exp = json_object_get(j, "expires_in");

	if (!t || !*t)
		t = json_string_value(json_object_get(j, "access_token"));
	if (!t || !token_valid(t))
		return kiln_error(err, EPROTO,
				  "%s: the token server's answer has no usable \"token\" or "
				  "\"access_token\"",
				  host);
	*ret_expires = json_is_integer(exp) && json_integer_value(exp) > TOKEN_TTL_MIN_S
			   ? (long)(json_integer_value(exp) < 86400 * 365 ? json_integer_value(exp)
									  : 86400 * 365)
			   : TOKEN_TTL_MIN_S;
	*ret_token = xstrdup(t);
	explicit_bzero((char *)t, strlen(t));
	return 0;
}

static char *token_get_url(const char *realm, const RegistryAuthRequest *rq,
			   const RegistryCreds *creds)
{
	char *url = xstrdup(realm), *next;

	if (rq->challenge->service) {
		next = http_url_add_query(url, "service", rq->challenge->service);
		free(url);
		url = next;
	}
	for (size_t i = 0; rq->scopes && rq->scopes[i]; i++) {
		next = http_url_add_query(url, "scope", rq->scopes[i]);
		free(url);
		url = next;
	}
	if (rq->creds && creds) {
		next = http_url_add_query(url, "account", creds->username);
		free(url);
		url = next;
	}
	return url;
}

/* OAuth2 refresh-token grant (an identity token from docker login to an OAuth registry). */
static char *token_post_form(const RegistryAuthRequest *rq, const RegistryCreds *creds)
{
	StrBuf scope = {0};
	_cleanup_free_ char *svc =
	    http_escape(rq->challenge->service ? rq->challenge->service : "");
	char *tok = http_escape(creds->secret), *form;

	for (size_t i = 0; rq->scopes && rq->scopes[i]; i++) {
		if (i)
			strbuf_addc(&scope, ' ');
		strbuf_adds(&scope, rq->scopes[i]);
	}
	_cleanup_free_ char *sc = http_escape(scope.s ? scope.s : "");
	form = xasprintf(
	    "grant_type=refresh_token&client_id=kiln&service=%s&scope=%s&refresh_token=%s", svc, sc,
	    tok);
	strbuf_done(&scope);
	secret_free(tok);
	return form;
}

static int token_answer(const RegistryAuthRequest *rq, const RegistryCreds *creds,
			const HttpResponse *resp, char **ret_token, long *ret_expires,
			KilnError **err)
{
	if (resp->status == 200)
		return token_parse(rq->host, resp, ret_token, ret_expires, err);
	if (resp->status == 401 || resp->status == 403) {
		if (creds)
			return kiln_error(err, EACCES,
					  "%s: the token server refused the credentials of '%s' "
					  "from %s (HTTP %ld)",
					  rq->host, EXCERPT(creds->username), creds->source,
					  resp->status);
		return kiln_error(
		    err, EACCES,
		    "%s: the token server refused anonymous access (HTTP %ld); log in "
		    "with 'kiln login %s'",
		    rq->host, resp->status, rq->cred_domain);
	}
	return kiln_error(err, EIO, "%s: the token server answered HTTP %ld", rq->host,
			  resp->status);
}

static int token_fetch(RegistryAuth *a, const RegistryAuthRequest *rq, const RegistryCreds *creds,
		       char **ret_token, long *ret_expires, KilnError **err)
{
	_cleanup_free_ char *realm = http_url_resolve(rq->challenge->realm, rq->challenge->realm);
	_cleanup_free_ char *url = NULL;
	char *form = NULL, *auth = NULL;
	char *headers[3] = {NULL};
	HttpRequest req = HTTP_REQUEST_INIT;
	_cleanup_http_response_ HttpResponse resp = {0};
	int r;

	if (!realm)
		return kiln_error(err, EPROTO, "%s: token realm '%s' is not an http(s) URL",
				  rq->host, EXCERPT(rq->challenge->realm));
	if (strncasecmp(realm, "http://", 7) == 0 && !rq->plain_realm_ok &&
	    !http_url_is_loopback(realm))
		return kiln_error(err, EPROTO, "%s: refusing the plain HTTP token realm '%s'",
				  rq->host, EXCERPT(rq->challenge->realm));
	if (creds && creds->identity_token) {
		form = token_post_form(rq, creds);
		req.method = "POST";
		req.url = realm;
		req.body = form;
		req.body_len = strlen(form);
		headers[0] = "Content-Type: application/x-www-form-urlencoded";
	} else {
		url = token_get_url(realm, rq, creds);
		req.url = url;
		if (creds)
			headers[0] = auth = basic_header(creds);
	}
	req.headers = headers;
	req.tls = rq->tls;
	req.max_body = REGISTRY_TOKEN_MAX;
	req.retry = true;
	req.follow_redirects = true;
	r = http_request(a->http, &req, &resp, err);
	secret_free(form);
	secret_free(auth);
	if (r >= 0)
		r = token_answer(rq, creds, &resp, ret_token, ret_expires, err);
	else
		kiln_error_wrap(err, r, "%s: token server", rq->host);
	if (resp.body)
		explicit_bzero(resp.body, resp.body_len);
	return r;
}

int registry_auth_header(RegistryAuth *a, const RegistryAuthRequest *rq, char **ret,
			 KilnError **err)
{
	const RegistryChallenge *ch = rq->challenge;
	const RegistryCreds *creds = rq->creds;
	char *token = NULL;
	long expires = 0;
	int r;

	*ret = NULL;
	if (!ch || ch->scheme == REGISTRY_AUTH_OTHER)
		return 0;
	if (!creds &&
	    (r = registry_auth_creds(a, rq->cred_domain, rq->repository, &creds, err)) < 0)
		return r;
	if (creds && !creds->username)
		creds = NULL;
	if (ch->scheme == REGISTRY_AUTH_BASIC) {
		if (creds && !creds->identity_token)
			*ret = basic_header(creds);
		return 0;
	}
	_cleanup_free_ char *key = token_key(rq, creds);
	if (!rq->creds)
		token = token_cached(a, key);
	if (!token) {
		r = token_fetch(a, rq, creds, &token, &expires, err);
		if (r < 0)
			return r;
		if (!rq->creds)
			token_put(a, TAKE_PTR(key), token, expires);
	}
	*ret = xasprintf("Authorization: Bearer %s", token);
	secret_free(token);
	return 0;
}
