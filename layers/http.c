#include "http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"

#define POOL_MAX 32
#define REDIRECTS_MAX 10
#define HEADERS_MAX 256
#define HEADER_LINE_MAX (64u << 10)
#define CONNECT_TIMEOUT_S 30
#define STALL_TIMEOUT_DEFAULT_S 60

struct HttpClient {
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t pool_lock;
	CURL *pool[POOL_MAX];
	size_t n_pool;
	HttpTls *default_tls;
};

struct HttpTls {
	bool no_verify;
	char *client_cert, *client_key;
	/* The trusted CAs, parsed once and shared by every connection (OpenSSL stores are
	 * reference-counted and locked): parsing the system bundle's ~140 certificates for each
	 * new connection, as curl does with a CA blob or a CA dir, cost more CPU than sending
	 * 100 MB of layers (bench/push.sh). NULL when verification is off. */
	X509_STORE *store;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int curl_init_once(KilnError **err)
{
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return kiln_error(err, EIO, "initialise libcurl: %s",
				  curl_easy_strerror(global_rc));
	return 0;
}

/* ---------- TLS settings ---------- */

static char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? xstrdup(v) : NULL;
}

/* The CA file (CURLINFO_CAINFO; Debian: /etc/ssl/certs/ca-certificates.crt) or dir
 * (CURLINFO_CAPATH: /etc/ssl/certs) curl uses when none is set. */
static char *curl_default_ca(CURLINFO what)
{
	CURL *h = curl_easy_init();
	char *p = NULL, *r = NULL;

	if (!h)
		return NULL;
	if (curl_easy_getinfo(h, what, &p) == CURLE_OK && p)
		r = xstrdup(p);
	curl_easy_cleanup(h);
	return r;
}

static int ca_append(StrBuf *b, const char *path, bool required, KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r;

	if (!required && access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	r = read_file_at(AT_FDCWD, path, HTTP_CA_FILE_MAX, &data, &len, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "CA file");
	if (!strstr(data, "-----BEGIN CERTIFICATE-----"))
		return kiln_error(err, EINVAL, "CA file '%s' holds no PEM certificate", path);
	strbuf_add(b, data, len);
	strbuf_addc(b, '\n');
	return 0;
}

/* CA files parsed once per process (by path): parsing is the expensive part (OpenSSL 3 decodes
 * every certificate's key; the system bundle takes tens of milliseconds), adding a parsed
 * certificate to a store only takes a reference. Kept until the process exits. */
typedef struct PemFile {
	char *path;
	STACK_OF(X509_INFO) * infos;
} PemFile;

static pthread_mutex_t pem_lock = PTHREAD_MUTEX_INITIALIZER;
static PemFile *pem_files;
static size_t n_pem_files;

static int pem_parse(const char *path, bool required, STACK_OF(X509_INFO) * *ret, KilnError **err)
{
	_cleanup_strbuf_ StrBuf pem = {0};
	int r = ca_append(&pem, path, required, err);

	*ret = NULL;
	if (r < 0 || !pem.len)
		return r;
	BIO *bio = BIO_new_mem_buf(pem.s, (int)pem.len);
	*ret = bio ? PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	ERR_clear_error();
	if (!*ret)
		return kiln_error(err, EINVAL, "CA file '%s': cannot parse it as PEM", path);
	return 0;
}

/* Adds the certificates (and CRLs) of a PEM file to st, parsing it the first time. */
static int store_add_file(X509_STORE *st, const char *path, bool required, KilnError **err)
{
	STACK_OF(X509_INFO) *infos = NULL;
	int r = 0;

	pthread_mutex_lock(&pem_lock);
	size_t i = 0;
	while (i < n_pem_files && strcmp(pem_files[i].path, path) != 0)
		i++;
	if (i == n_pem_files && (r = pem_parse(path, required, &infos, err)) >= 0) {
		pem_files = xrealloc(pem_files, (n_pem_files + 1) * sizeof(PemFile));
		pem_files[n_pem_files++] = (PemFile){xstrdup(path), infos};
	}
	infos = r >= 0 ? pem_files[i].infos : NULL;
	for (int k = 0; infos && k < sk_X509_INFO_num(infos); k++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, k);
		if (xi->x509)
			X509_STORE_add_cert(st, xi->x509);
		if (xi->crl)
			X509_STORE_add_crl(st, xi->crl);
	}
	ERR_clear_error(); /* duplicates */
	pthread_mutex_unlock(&pem_lock);
	return r;
}

/* Whether dir holds OpenSSL's subject-hash links ("5ad8a5d6.0", as update-ca-certificates and
 * c_rehash make them), through which a CA is found without reading the others. */
static bool ca_dir_hashed(const char *dir)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		const char *n = de->d_name;
		if (strlen(n) == 10 && strspn(n, "0123456789abcdef") == 8 && n[8] == '.' &&
		    n[9] >= '0' && n[9] <= '9')
			return true;
	}
	return false;
}

/* The store curl would build for each connection from the same settings: the base bundle
 * ($SSL_CERT_FILE, else curl's CA file) and the extra CA files, plus $SSL_CERT_DIR, else curl's
 * CA dir (looked up by hash, when needed). Parsing the whole system bundle costs OpenSSL 3 tens of
 * milliseconds a process: when the base is curl's default and the CA dir has hash links of the
 * same certificates, the dir alone serves (a CA is read when a chain needs it). */
static int tls_store_build(HttpTls *t, char *const *ca_files, KilnError **err)
{
	_cleanup_free_ char *cainfo = env_nonempty("SSL_CERT_FILE");
	_cleanup_free_ char *dir = env_nonempty("SSL_CERT_DIR");
	_cleanup_free_ char *base = cainfo ? xstrdup(cainfo) : curl_default_ca(CURLINFO_CAINFO);
	int r = 0;

	if (!dir)
		dir = curl_default_ca(CURLINFO_CAPATH);
	t->store = X509_STORE_new();
	if (!t->store)
		return kiln_error(err, ENOMEM, "CA certificates: out of memory");
	if (base && (cainfo || !dir || !ca_dir_hashed(dir)))
		r = store_add_file(t->store, base, cainfo != NULL, err);
	for (size_t i = 0; r >= 0 && ca_files && ca_files[i]; i++)
		r = store_add_file(t->store, ca_files[i], true, err);
	if (r < 0)
		return r;
	if (dir) {
		X509_LOOKUP *lk = X509_STORE_add_lookup(t->store, X509_LOOKUP_hash_dir());
		if (!lk || !X509_LOOKUP_add_dir(lk, dir, X509_FILETYPE_PEM))
			ERR_clear_error(); /* as with curl: a missing CA dir is no error */
	}
	return 0;
}

int http_tls_new(const HttpTlsOptions *o, HttpTls **ret, KilnError **err)
{
	_cleanup_(http_tls_freep) HttpTls *t = xcalloc(1, sizeof(*t));
	int r = curl_init_once(err);

	if (r < 0)
		return r;
	t->no_verify = o && o->no_verify;
	if (o && o->client_cert)
		t->client_cert = xstrdup(o->client_cert);
	if (o && o->client_key)
		t->client_key = xstrdup(o->client_key);
	if (!t->no_verify && (r = tls_store_build(t, o ? o->ca_files : NULL, err)) < 0)
		return r;
	*ret = TAKE_PTR(t);
	return 0;
}

void http_tls_free(HttpTls *t)
{
	if (!t)
		return;
	X509_STORE_free(t->store);
	free(t->client_cert);
	free(t->client_key);
	free(t);
}

/* ---------- client and its pool of easy handles ---------- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
	HttpClient *c = ud;

	if (data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
	HttpClient *c = ud;

	if (data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&c->share_locks[data]);
}

int http_client_new(HttpClient **ret, KilnError **err)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	int r = curl_init_once(err);

	if (r < 0)
		return r;
	c = xcalloc(1, sizeof(*c));
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	c->share = curl_share_init();
	if (!c->share)
		return kiln_error(err, ENOMEM, "curl_share_init failed");
	/* DNS and TLS sessions only: a shared connection cache is not thread-safe in curl. */
	if (curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock) ||
	    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock) ||
	    curl_share_setopt(c->share, CURLSHOPT_USERDATA, c) ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION))
		return kiln_error(err, EIO, "set up curl's share handle");
	r = http_tls_new(NULL, &c->default_tls, err);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(c);
	return 0;
}

void http_client_free(HttpClient *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_pool; i++)
		curl_easy_cleanup(c->pool[i]);
	if (c->share)
		curl_share_cleanup(c->share);
	http_tls_free(c->default_tls);
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_locks[i]);
	pthread_mutex_destroy(&c->pool_lock);
	free(c);
}

static CURL *pool_take(HttpClient *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->n_pool > 0)
		h = c->pool[--c->n_pool];
	pthread_mutex_unlock(&c->pool_lock);
	return h ? h : curl_easy_init();
}

static void pool_put(HttpClient *c, CURL *h)
{
	pthread_mutex_lock(&c->pool_lock);
	if (c->n_pool < POOL_MAX) {
		c->pool[c->n_pool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

/* ---------- retries ---------- */

unsigned http_backoff_ms(const HttpRetry *r, unsigned attempt, long retry_after_s, uint32_t rnd)
{
	uint64_t d = r->base_ms, half;

	for (unsigned i = 2; i < attempt && d < r->max_ms; i++)
		d *= 2;
	if (d > r->max_ms)
		d = r->max_ms;
	half = d / 2;
	d = half + (d - half > 0 ? rnd % (d - half + 1) : 0);
	if (retry_after_s >= 0) {
		uint64_t ra = (uint64_t)(retry_after_s < (long)r->retry_after_max_s
					     ? retry_after_s
					     : (long)r->retry_after_max_s) *
			      1000;
		if (ra > d)
			d = ra;
	}
	return (unsigned)d;
}

void http_backoff_sleep(const HttpRetry *r, unsigned attempt, long retry_after_s)
{
	uint32_t rnd = 0;
	unsigned ms;
	struct timespec ts;

	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)time(NULL) ^ (uint32_t)getpid();
	ms = http_backoff_ms(r, attempt, retry_after_s, rnd);
	ts = (struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

bool http_status_is_transient(long status)
{
	return status == 408 || status == 429 ||
	       (status >= 500 && status <= 599 && status != 501 && status != 505);
}

bool http_error_is_transient(int r)
{
	return r == -ECONNRESET || r == -ETIMEDOUT || r == -ECONNREFUSED;
}

/* Retry-After: delay-seconds or an HTTP date; -1 when absent or unreadable. */
static long retry_after_seconds(const HttpResponse *resp)
{
	const char *v = http_response_header(resp, "Retry-After", NULL);
	char *end;
	long s;

	if (!v || !*v)
		return -1;
	errno = 0;
	s = strtol(v, &end, 10);
	if (*end == '\0' && errno == 0)
		return s < 0 ? -1 : s;
	time_t when = curl_getdate(v, NULL);
	if (when < 0)
		return -1;
	time_t now = time(NULL);
	return when > now ? (long)(when - now) : 0;
}

/* ---------- URLs ---------- */

static bool scheme_is_http(const char *scheme)
{
	return scheme && (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0);
}

/* A URL handle for url (which must be http or https), or NULL. */
static CURLU *url_parse(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL;
	bool ok;

	if (!u)
		return NULL;
	ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	     curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK && scheme_is_http(scheme);
	curl_free(scheme);
	if (!ok) {
		curl_url_cleanup(u);
		return NULL;
	}
	return u;
}

static char *url_part(CURLU *u, CURLUPart part, unsigned flags)
{
	char *s = NULL, *r;

	if (curl_url_get(u, part, &s, flags) != CURLUE_OK)
		return NULL;
	r = xstrdup(s);
	curl_free(s);
	return r;
}

char *http_url_resolve(const char *base, const char *ref)
{
	CURLU *u = url_parse(base);
	char *scheme = NULL, *r = NULL;

	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, ref, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK && scheme_is_http(scheme))
		r = url_part(u, CURLUPART_URL, 0);
	curl_free(scheme);
	curl_url_cleanup(u);
	return r;
}

bool http_url_same_origin(const char *a, const char *b)
{
	CURLU *ua = url_parse(a), *ub = url_parse(b);
	bool same = false;

	if (ua && ub) {
		static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
		same = true;
		for (size_t i = 0; same && i < ELEMENTSOF(parts); i++) {
			_cleanup_free_ char *pa = url_part(ua, parts[i], CURLU_DEFAULT_PORT);
			_cleanup_free_ char *pb = url_part(ub, parts[i], CURLU_DEFAULT_PORT);
			same = pa && pb && strcasecmp(pa, pb) == 0;
		}
	}
	curl_url_cleanup(ua);
	curl_url_cleanup(ub);
	return same;
}

char *http_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	StrBuf b = {0};

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p)) {
			strbuf_addc(&b, (char)*p);
		} else {
			strbuf_addc(&b, '%');
			strbuf_addc(&b, hex[*p >> 4]);
			strbuf_addc(&b, hex[*p & 15]);
		}
	}
	return strbuf_steal(&b);
}

char *http_url_add_query(const char *url, const char *key, const char *value)
{
	_cleanup_free_ char *k = http_escape(key);
	_cleanup_free_ char *v = http_escape(value);

	return xasprintf("%s%c%s=%s", url, strchr(url, '?') ? '&' : '?', k, v);
}

char *http_url_redact(const char *url)
{
	CURLU *u = url_parse(url);
	char *r = NULL;

	if (u && curl_url_set(u, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_USER, NULL, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK)
		r = url_part(u, CURLUPART_URL, 0);
	curl_url_cleanup(u);
	if (!r)
		r = strndup(url, strcspn(url, "?#"));
	if (!r)
		abort();
	return r;
}

bool http_host_is_loopback(const char *hostport)
{
	_cleanup_free_ char *host = NULL;
	struct in6_addr a6;
	struct in_addr a4;
	const char *colon = strchr(hostport, ':');

	if (hostport[0] == '[') {
		const char *end = strchr(hostport, ']');
		if (!end || (end[1] != '\0' && end[1] != ':'))
			return false;
		host = strndup(hostport + 1, (size_t)(end - hostport - 1));
	} else if (colon && !strchr(colon + 1, ':')) {
		host = strndup(hostport, (size_t)(colon - hostport));
	} else {
		host = xstrdup(hostport);
	}
	if (!host)
		return false;
	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
		       (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

bool http_url_is_loopback(const char *url)
{
	CURLU *u = url_parse(url);
	_cleanup_free_ char *host = u ? url_part(u, CURLUPART_HOST, 0) : NULL;

	curl_url_cleanup(u);
	return host && http_host_is_loopback(host);
}

static bool url_is_https(const char *url)
{
	return strncasecmp(url, "https://", 8) == 0;
}

/* ---------- responses ---------- */

void http_response_done(HttpResponse *r)
{
	free(r->body);
	strv_free(r->headers);
	free(r->url);
	*r = (HttpResponse){0};
}

const char *http_response_header(const HttpResponse *r, const char *name, size_t *pos)
{
	size_t n = strlen(name), i = pos ? *pos : 0;

	for (; r->headers && r->headers[i]; i++) {
		const char *l = r->headers[i];
		if (strncasecmp(l, name, n) != 0 || l[n] != ':')
			continue;
		if (pos)
			*pos = i + 1;
		l += n + 1;
		return l + strspn(l, " \t");
	}
	if (pos)
		*pos = i;
	return NULL;
}

/* ---------- one transfer ---------- */

typedef struct Transfer {
	CURL *h;
	const HttpRequest *req;
	char errbuf[CURL_ERROR_SIZE];
	StrvBuf headers;
	StrBuf body;
	bool body_started; /* this attempt's first body byte was seen */
	bool to_sink;	   /* this attempt's body goes to the sink */
	bool too_big;
	uint64_t delivered;   /* bytes given to the sink, over all attempts */
	uint64_t resume_from; /* this attempt asked for the body from here (Range) */
	uint64_t up_pos;
	KilnError *cb_err; /* an error from a callback: it aborted the transfer */
	bool cb_failed;	   /* the attempt failed by a callback's error: not retried */
} Transfer;

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
	Transfer *t = ud;
	size_t len = size * n, l = len;

	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* A new response (100 Continue, then the real one): its headers only. */
		strvbuf_done(&t->headers);
		return len;
	}
	while (l > 0 && (buf[l - 1] == '\r' || buf[l - 1] == '\n'))
		l--;
	if (l == 0)
		return len;
	if (t->headers.n >= HEADERS_MAX || l > HEADER_LINE_MAX) {
		kiln_error(&t->cb_err, EFBIG, "response headers exceed %u lines or %u bytes",
			   HEADERS_MAX, HEADER_LINE_MAX);
		return 0;
	}
	char *line = strndup(buf, l);
	if (!line)
		return 0;
	strvbuf_consume(&t->headers, line);
	return len;
}

static long transfer_status(Transfer *t)
{
	long status = 0;

	curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

/* At the first body byte: where does this body go, and does a resumed body fit? */
static int body_start(Transfer *t)
{
	long status = transfer_status(t);
	const HttpSink *sink = t->req->sink;

	t->to_sink = sink && status >= 200 && status < 300;
	if (!t->to_sink || t->resume_from == 0)
		return 0;
	if (status == 206) {
		HttpResponse view = {.headers = t->headers.v};
		const char *cr = http_response_header(&view, "Content-Range", NULL);
		unsigned long long start = 0;
		if (!cr || sscanf(cr, "bytes %llu-", &start) != 1 || start != t->resume_from)
			return kiln_error(&t->cb_err, EIO,
					  "resumed download: unexpected Content-Range '%s'",
					  cr ? EXCERPT(cr) : "");
		return 0;
	}
	/* The server sent the whole body again. */
	if (!sink->restart)
		return kiln_error(&t->cb_err, EIO,
				  "download broke and cannot start again from byte 0");
	t->delivered = 0;
	return sink->restart(sink->userdata, &t->cb_err);
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud)
{
	Transfer *t = ud;
	size_t len = size * n, max = t->req->max_body ? t->req->max_body : HTTP_ERROR_BODY_MAX;

	if (!t->body_started) {
		t->body_started = true;
		if (body_start(t) < 0)
			return 0;
	}
	if (t->to_sink) {
		if (t->req->sink->write(t->req->sink->userdata, buf, len, &t->cb_err) < 0)
			return 0;
		t->delivered += len;
		return len;
	}
	if (t->body.len + len > max) {
		long status = transfer_status(t);
		if (status < 200 || status >= 300) {
			/* An error body is for the message only: keep its start. */
			strbuf_add(&t->body, buf, max - t->body.len);
			return len;
		}
		t->too_big = true;
		return 0;
	}
	strbuf_add(&t->body, buf, len);
	return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
	Transfer *t = ud;
	const HttpRequest *req = t->req;
	uint64_t left = req->body_len - t->up_pos;
	size_t want = size * n < left ? size * n : (size_t)left;

	if (want == 0)
		return 0;
	if (req->body) {
		memcpy(buf, (const char *)req->body + t->up_pos, want);
	} else {
		ssize_t got = pread(req->body_fd, buf, want, (off_t)(req->body_offset + t->up_pos));
		if (got <= 0) {
			kiln_error_errno(&t->cb_err, got < 0 ? errno : EIO,
					 "read the request body at offset %llu",
					 (unsigned long long)(req->body_offset + t->up_pos));
			return CURL_READFUNC_ABORT;
		}
		want = (size_t)got;
	}
	t->up_pos += want;
	return want;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
	Transfer *t = ud;

	if (origin != SEEK_SET || off < 0 || (uint64_t)off > t->req->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	t->up_pos = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

/* Hands *src over to *dst (when dst wants it: the first error wins), else frees it. */
static void error_move(KilnError **dst, KilnError **src)
{
	if (dst && !*dst)
		*dst = TAKE_PTR(*src);
	kiln_error_free(TAKE_PTR(*src));
}

static const struct {
	CURLcode cc;
	int code;
} curl_errnos[] = {
    {CURLE_COULDNT_RESOLVE_HOST, EHOSTUNREACH},
    {CURLE_COULDNT_RESOLVE_PROXY, EHOSTUNREACH},
    {CURLE_COULDNT_CONNECT, ECONNREFUSED},
    {CURLE_OPERATION_TIMEDOUT, ETIMEDOUT},
    {CURLE_SEND_ERROR, ECONNRESET},
    {CURLE_RECV_ERROR, ECONNRESET},
    {CURLE_GOT_NOTHING, ECONNRESET},
    {CURLE_PARTIAL_FILE, ECONNRESET},
    {CURLE_HTTP2, ECONNRESET},
    {CURLE_HTTP2_STREAM, ECONNRESET},
    {CURLE_SSL_CONNECT_ERROR, EPROTO},
    {CURLE_PEER_FAILED_VERIFICATION, EKEYREJECTED},
    {CURLE_SSL_CACERT_BADFILE, EKEYREJECTED},
    {CURLE_SSL_CERTPROBLEM, EKEYREJECTED},
    {CURLE_SSL_ISSUER_ERROR, EKEYREJECTED},
};

static int curl_failure(Transfer *t, CURLcode cc, const char *url, KilnError **err)
{
	_cleanup_free_ char *u = http_url_redact(url);
	int code;

	if (t->cb_err) {
		int cb_code = t->cb_err->code;
		t->cb_failed = true;
		error_move(err, &t->cb_err);
		return -cb_code;
	}
	if (t->too_big)
		return kiln_error(err, EFBIG, "%s %s: response exceeds %zu bytes", t->req->method,
				  u, t->req->max_body ? t->req->max_body : HTTP_ERROR_BODY_MAX);
	code = EIO;
	for (size_t i = 0; i < ELEMENTSOF(curl_errnos); i++)
		if (curl_errnos[i].cc == cc)
			code = curl_errnos[i].code;
	return kiln_error(err, code, "%s %s: %s", t->req->method, u,
			  t->errbuf[0] ? t->errbuf : curl_easy_strerror(cc));
}

static struct curl_slist *slist_add(struct curl_slist *l, const char *s)
{
	struct curl_slist *n = curl_slist_append(l, s);

	if (!n)
		abort(); /* out of memory, as xasprintf */
	return n;
}

static struct curl_slist *request_headers(const Transfer *t, bool send_auth)
{
	struct curl_slist *l = NULL;

	for (size_t i = 0; t->req->headers && t->req->headers[i]; i++) {
		const char *line = t->req->headers[i];
		if (!send_auth && strncasecmp(line, "Authorization:", 14) == 0)
			continue;
		l = slist_add(l, line);
	}
	if (t->resume_from) {
		char range[64];
		snprintf(range, sizeof(range), "Range: bytes=%llu-",
			 (unsigned long long)t->resume_from);
		l = slist_add(l, range);
	}
	return l;
}

static void set_method(CURL *h, Transfer *t)
{
	const char *m = t->req->method;

	if (strcmp(m, "GET") == 0) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(m, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0 || strcmp(m, "POST") == 0) {
		/* An upload whatever the verb: the body comes from on_read, a known length. */
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)t->req->body_len);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, t);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, t);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
	} else {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
	}
}

/* CURLOPT_SSL_CTX_FUNCTION, called after curl set up a connection's SSL_CTX: the shared store. */
static CURLcode on_ssl_ctx(CURL *h, void *ssl_ctx, void *userdata)
{
	SSL_CTX_set1_cert_store(ssl_ctx, userdata);
	return CURLE_OK;
}

static void set_tls(CURL *h, const HttpTls *tls)
{
	if (tls->no_verify) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (tls->store) {
		/* curl loads nothing itself (no CA file, no CA dir): every connection uses the
		 * store parsed once. A host always gets the same HttpTls, so curl reusing a
		 * connection of this handle never crosses stores. */
		curl_easy_setopt(h, CURLOPT_CAINFO, NULL);
		curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
		curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, tls->store);
	}
	if (tls->client_cert)
		curl_easy_setopt(h, CURLOPT_SSLCERT, tls->client_cert);
	if (tls->client_key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, tls->client_key);
}

static void set_options(HttpClient *c, Transfer *t, const char *url, struct curl_slist *hdrs)
{
	CURL *h = t->h;
	unsigned stall =
	    t->req->stall_timeout_s ? t->req->stall_timeout_s : STALL_TIMEOUT_DEFAULT_S;

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_SHARE, c->share);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "kiln/" KILN_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
			 (long)(t->req->http1 ? CURL_HTTP_VERSION_1_1 : CURL_HTTP_VERSION_2TLS));
	/* The bytes as sent: a digest is computed over them. */
	curl_easy_setopt(h, CURLOPT_HTTP_CONTENT_DECODING, 0L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
	/* Streamed bodies (blobs) in bigger pieces: fewer reads, sink writes and callbacks. */
	if (t->req->sink)
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)stall);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	if (http_url_is_loopback(url))
		curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	set_method(h, t);
	set_tls(h, t->req->tls ? t->req->tls : c->default_tls);
}

/* One request to url, no redirect followed. */
static int transfer_once(HttpClient *c, Transfer *t, const char *url, bool send_auth,
			 KilnError **err)
{
	struct curl_slist *hdrs;
	CURLcode cc;

	curl_easy_reset(t->h);
	t->errbuf[0] = '\0';
	t->cb_failed = false;
	t->body_started = t->to_sink = t->too_big = false;
	t->up_pos = 0;
	strvbuf_done(&t->headers);
	strbuf_done(&t->body);
	hdrs = request_headers(t, send_auth);
	set_options(c, t, url, hdrs);
	cc = curl_easy_perform(t->h);
	curl_easy_setopt(t->h, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
	if (cc != CURLE_OK)
		return curl_failure(t, cc, url, err);
	if (t->resume_from && !t->body_started && transfer_status(t) == 200) {
		/* The whole body again, and an empty one. */
		t->to_sink = true;
		if (body_start(t) < 0)
			return curl_failure(t, CURLE_WRITE_ERROR, url, err);
	}
	return 0;
}

static bool status_is_redirect(long s)
{
	return s == 301 || s == 302 || s == 303 || s == 307 || s == 308;
}

/* transfer_once, following redirects as the request allows; *ret_url: the URL that answered. */
static int transfer_follow(HttpClient *c, Transfer *t, char **ret_url, KilnError **err)
{
	const HttpRequest *req = t->req;
	_cleanup_free_ char *url = xstrdup(req->url);
	bool auth = true, follow = req->follow_redirects && (strcmp(req->method, "GET") == 0 ||
							     strcmp(req->method, "HEAD") == 0);

	for (unsigned hop = 0;; hop++) {
		char *loc = NULL;
		int r = transfer_once(c, t, url, auth, err);
		if (r < 0)
			return r;
		if (!follow || !status_is_redirect(transfer_status(t)) ||
		    curl_easy_getinfo(t->h, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || !loc)
			break;
		_cleanup_free_ char *u = http_url_redact(url);
		_cleanup_free_ char *to = http_url_redact(loc);
		if (hop == REDIRECTS_MAX)
			return kiln_error(err, ELOOP, "%s %s: more than %d redirects", req->method,
					  u, REDIRECTS_MAX);
		if (url_is_https(url) && !url_is_https(loc) && !http_url_is_loopback(loc))
			return kiln_error(err, EPROTO, "%s %s: redirect to plain HTTP '%s' refused",
					  req->method, u, to);
		/* Blob storage (S3, a CDN) must never see the registry's credentials. */
		if (!http_url_same_origin(url, loc))
			auth = false;
		free(url);
		url = xstrdup(loc);
	}
	*ret_url = TAKE_PTR(url);
	return 0;
}

static void transfer_done(Transfer *t)
{
	strvbuf_done(&t->headers);
	strbuf_done(&t->body);
	kiln_error_free(t->cb_err);
}

static void response_fill(Transfer *t, char *url, unsigned attempts, HttpResponse *ret)
{
	long version = 0;

	curl_easy_getinfo(t->h, CURLINFO_HTTP_VERSION, &version);
	ret->status = transfer_status(t);
	ret->body_len = t->body.len;
	ret->body = t->body.len ? strbuf_steal(&t->body) : NULL;
	ret->headers = strvbuf_steal(&t->headers);
	ret->url = url;
	ret->attempts = attempts;
	ret->http_version = version == CURL_HTTP_VERSION_2_0 ? 2 : version ? 1 : 0;
}

int http_request(HttpClient *c, const HttpRequest *req, HttpResponse *ret, KilnError **err)
{
	static const HttpRetry default_retry = HTTP_RETRY_DEFAULT;
	const HttpRetry *policy = req->retry_policy ? req->retry_policy : &default_retry;
	unsigned tries = req->retry && policy->tries > 0 ? policy->tries : 1;
	_cleanup_(transfer_done) Transfer t = {.req = req};
	bool get = strcmp(req->method, "GET") == 0;
	int r;

	*ret = (HttpResponse){0};
	t.h = pool_take(c);
	if (!t.h)
		return kiln_error(err, ENOMEM, "curl_easy_init failed");
	for (unsigned attempt = 1;; attempt++) {
		_cleanup_error_ KilnError *e = NULL;
		char *url = NULL;
		bool again;

		t.resume_from = get && req->sink ? t.delivered : 0;
		r = transfer_follow(c, &t, &url, &e);
		if (r < 0)
			again = !t.cb_failed && http_error_is_transient(r);
		else
			again = http_status_is_transient(transfer_status(&t));
		if (!again || attempt >= tries) {
			response_fill(&t, url, attempt, ret);
			error_move(err, &e);
			break;
		}
		HttpResponse view = {.headers = t.headers.v};
		long retry_after = r < 0 ? -1 : retry_after_seconds(&view);
		free(url);
		http_backoff_sleep(policy, attempt + 1, retry_after);
	}
	pool_put(c, t.h);
	return r;
}
