/* The HTTP layer (layers/http.c) against a tiny local server: retries and backoff, redirects
 * without credentials, resumed downloads, uploads from a file, size caps, proxies, URLs. */
#include <sys/stat.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"
#include "httpserver.h"
#include "layers/http.h"
#include "tap.h"

static const HttpRetry fast_retry = {
    .tries = 4, .base_ms = 10, .max_ms = 40, .retry_after_max_s = 5};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *url_of(Srv *s, const char *host, const char *path)
{
	return xasprintf("http://%s:%d%s", host, s->port, path);
}

/* A request with the fast retry policy. */
static int get(HttpClient *c, const char *url, bool retry, HttpResponse *resp, KilnError **err)
{
	HttpRequest rq = HTTP_REQUEST_INIT;

	rq.url = url;
	rq.retry = retry;
	rq.retry_policy = &fast_retry;
	rq.max_body = 1024;
	return http_request(c, &rq, resp, err);
}

TEST(backoff_schedule)
{
	HttpRetry r = HTTP_RETRY_DEFAULT;

	CHECK_EQ_INT(r.tries, 5);
	/* Equal jitter: between half and all of base * 2^(n-2). */
	CHECK_EQ_INT(http_backoff_ms(&r, 2, -1, 0), 250);
	CHECK_EQ_INT(http_backoff_ms(&r, 2, -1, 250), 500);
	CHECK_EQ_INT(http_backoff_ms(&r, 2, -1, 251), 250);
	CHECK_EQ_INT(http_backoff_ms(&r, 3, -1, 0), 500);
	CHECK_EQ_INT(http_backoff_ms(&r, 3, -1, 500), 1000);
	CHECK_EQ_INT(http_backoff_ms(&r, 4, -1, 1000), 2000);
	CHECK_EQ_INT(http_backoff_ms(&r, 5, -1, 2000), 4000);
	/* Capped at max_ms however many attempts. */
	CHECK_EQ_INT(http_backoff_ms(&r, 6, -1, 4000), 8000);
	CHECK_EQ_INT(http_backoff_ms(&r, 40, -1, 4000), 8000);
	CHECK_EQ_INT(http_backoff_ms(&r, 40, -1, 0), 4000);
	/* Retry-After wins when longer, capped at retry_after_max_s. */
	CHECK_EQ_INT(http_backoff_ms(&r, 2, 3, 0), 3000);
	CHECK_EQ_INT(http_backoff_ms(&r, 5, 1, 2000), 4000);
	CHECK_EQ_INT(http_backoff_ms(&r, 2, 100000, 0), 60000);
	CHECK_EQ_INT(http_backoff_ms(&r, 2, 0, 0), 250);
}

TEST(transient_classes)
{
	CHECK(http_status_is_transient(500));
	CHECK(http_status_is_transient(502));
	CHECK(http_status_is_transient(503));
	CHECK(http_status_is_transient(429));
	CHECK(http_status_is_transient(408));
	CHECK(!http_status_is_transient(501));
	CHECK(!http_status_is_transient(401));
	CHECK(!http_status_is_transient(403));
	CHECK(!http_status_is_transient(404));
	CHECK(!http_status_is_transient(200));
	CHECK(http_error_is_transient(-ECONNRESET));
	CHECK(http_error_is_transient(-ETIMEDOUT));
	CHECK(!http_error_is_transient(-EKEYREJECTED));
	CHECK(!http_error_is_transient(-EPROTO));
	CHECK(!http_error_is_transient(-EHOSTUNREACH));
}

static void h_hello(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	srv_respond(
	    fd, 200,
	    "WWW-Authenticate: Bearer realm=\"a\"\r\nWWW-Authenticate: Basic realm=\"b\"\r\n",
	    "hello", 5);
}

TEST(get_in_memory_and_cap)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpRequest rq = HTTP_REQUEST_INIT;
	Srv s;
	size_t pos = 0;

	CHECK(srv_start(&s, h_hello, NULL) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/x");
	CHECK(get(c, u, true, &resp, NULL) == 0);
	CHECK_EQ_INT(resp.status, 200);
	CHECK_EQ_INT(resp.body_len, 5);
	CHECK_EQ_STR(resp.body, "hello");
	CHECK_EQ_STR(http_response_header(&resp, "www-authenticate", &pos), "Bearer realm=\"a\"");
	CHECK_EQ_STR(http_response_header(&resp, "WWW-Authenticate", &pos), "Basic realm=\"b\"");
	CHECK(http_response_header(&resp, "WWW-Authenticate", &pos) == NULL);
	CHECK(strstr(srv_log(&s, 0), "User-Agent: kiln/") != NULL);
	http_response_done(&resp);

	rq.url = u;
	rq.max_body = 4;
	CHECK_EQ_INT(http_request(c, &rq, &resp, &e), -EFBIG);
	CHECK(e && strstr(e->message, "exceeds 4 bytes"));
	srv_stop(&s);
}

static void h_503_twice(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	if (n < 2)
		srv_respond(fd, 503, NULL, "busy", 4);
	else
		srv_respond(fd, 200, NULL, "ok", 2);
}

TEST(retries_5xx_then_succeeds)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	Srv s;

	CHECK(srv_start(&s, h_503_twice, NULL) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/x");
	CHECK(get(c, u, true, &resp, NULL) == 0);
	CHECK_EQ_INT(resp.status, 200);
	CHECK_EQ_INT(resp.attempts, 3);
	CHECK_EQ_INT(srv_count(&s), 3);
	srv_stop(&s);
}

TEST(no_retry_when_not_idempotent)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	Srv s;

	CHECK(srv_start(&s, h_503_twice, NULL) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/x");
	CHECK(get(c, u, false, &resp, NULL) == 0);
	CHECK_EQ_INT(resp.status, 503);
	CHECK_EQ_INT(resp.attempts, 1);
	CHECK_EQ_STR(resp.body, "busy");
	srv_stop(&s);
}

static void h_always(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	int status = *(int *)s->data;

	srv_respond(fd, status, NULL, "{}", 2);
}

TEST(no_retry_on_4xx_and_last_5xx_returned)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	Srv s;
	int status = 404;

	CHECK(srv_start(&s, h_always, &status) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/x");
	static const int no_retry[] = {400, 401, 403, 404};
	for (size_t i = 0; i < ELEMENTSOF(no_retry); i++) {
		_cleanup_http_response_ HttpResponse resp = {0};
		status = no_retry[i];
		CHECK(get(c, u, true, &resp, NULL) == 0);
		CHECK_EQ_INT(resp.status, status);
		CHECK_EQ_INT(resp.attempts, 1);
	}
	_cleanup_http_response_ HttpResponse resp = {0};
	status = 502;
	CHECK(get(c, u, true, &resp, NULL) == 0);
	CHECK_EQ_INT(resp.status, 502);
	CHECK_EQ_INT(resp.attempts, fast_retry.tries);
	srv_stop(&s);
}

static void h_429(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	if (n == 0)
		srv_respond(fd, 429, "Retry-After: 1\r\n", "slow down", 9);
	else
		srv_respond(fd, 200, NULL, "ok", 2);
}

TEST(retry_after_is_honoured)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	Srv s;

	CHECK(srv_start(&s, h_429, NULL) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/x");
	double t0 = now_s();
	CHECK(get(c, u, true, &resp, NULL) == 0);
	double took = now_s() - t0;
	CHECK_EQ_INT(resp.status, 200);
	CHECK_EQ_INT(resp.attempts, 2);
	/* The backoff alone would wait at most 10 ms. */
	CHECK(took >= 0.95);
	CHECK(took < 5);
	srv_stop(&s);
}

/* Server A redirects /same to itself and /other to server B (data: B's port) under the host
 * name localhost; B serves the blob. */
static void h_redirector(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	char loc[256];
	int other = *(int *)s->data;

	if (strcmp(rq->target, "/same") == 0) {
		snprintf(loc, sizeof(loc), "Location: /blob\r\n");
		srv_respond(fd, 307, loc, NULL, 0);
	} else if (strcmp(rq->target, "/other") == 0) {
		snprintf(loc, sizeof(loc), "Location: http://localhost:%d/blob?X-Sig=abc\r\n",
			 other);
		srv_respond(fd, 307, loc, NULL, 0);
	} else if (strcmp(rq->target, "/otherhost") == 0) {
		/* The same port under another name: another origin all the same. */
		snprintf(loc, sizeof(loc), "Location: http://localhost:%d/blob\r\n", s->port);
		srv_respond(fd, 302, loc, NULL, 0);
	} else if (strcmp(rq->target, "/loop") == 0) {
		srv_respond(fd, 302, "Location: /loop\r\n", NULL, 0);
	} else {
		srv_respond(fd, 200, NULL, "blob", 4);
	}
}

static void h_blob(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	srv_respond(fd, 200, NULL, "BLOB", 4);
}

static int redirect_get(HttpClient *c, const char *url, HttpResponse *resp, KilnError **err)
{
	char *hdrs[] = {"Authorization: Bearer SECRET-TOKEN", "Accept: */*", NULL};
	HttpRequest rq = HTTP_REQUEST_INIT;

	rq.url = url;
	rq.headers = hdrs;
	rq.follow_redirects = true;
	rq.max_body = 100;
	return http_request(c, &rq, resp, err);
}

TEST(redirect_drops_authorization_on_other_origin)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	Srv a, b;
	int bport;

	CHECK(srv_start(&b, h_blob, NULL) == 0);
	bport = b.port;
	CHECK(srv_start(&a, h_redirector, &bport) == 0);
	CHECK(http_client_new(&c, NULL) == 0);

	/* Another port and host: the token stays behind, the other headers go. */
	_cleanup_http_response_ HttpResponse r1 = {0};
	_cleanup_free_ char *u1 = url_of(&a, "127.0.0.1", "/other");
	CHECK(redirect_get(c, u1, &r1, NULL) == 0);
	CHECK_EQ_INT(r1.status, 200);
	CHECK_EQ_STR(r1.body, "BLOB");
	CHECK(strstr(r1.url, "/blob?X-Sig=abc") != NULL);
	CHECK(strstr(srv_log(&a, 0), "Authorization: Bearer SECRET-TOKEN") != NULL);
	CHECK(strstr(srv_log(&b, 0), "GET /blob?X-Sig=abc") != NULL);
	CHECK(strstr(srv_log(&b, 0), "Authorization") == NULL);
	CHECK(strstr(srv_log(&b, 0), "SECRET") == NULL);
	CHECK(strstr(srv_log(&b, 0), "Accept: */*") != NULL);

	/* The same port under another host name. */
	_cleanup_http_response_ HttpResponse r2 = {0};
	_cleanup_free_ char *u2 = url_of(&a, "127.0.0.1", "/otherhost");
	CHECK(redirect_get(c, u2, &r2, NULL) == 0);
	CHECK_EQ_STR(r2.body, "blob");
	CHECK(strstr(srv_log(&a, 2), "GET /blob") != NULL);
	CHECK(strstr(srv_log(&a, 2), "Authorization") == NULL);

	/* The same origin keeps it. */
	_cleanup_http_response_ HttpResponse r3 = {0};
	_cleanup_free_ char *u3 = url_of(&a, "127.0.0.1", "/same");
	CHECK(redirect_get(c, u3, &r3, NULL) == 0);
	CHECK_EQ_STR(r3.body, "blob");
	CHECK(strstr(srv_log(&a, 4), "GET /blob") != NULL);
	CHECK(strstr(srv_log(&a, 4), "Authorization: Bearer SECRET-TOKEN") != NULL);

	/* A loop ends. */
	_cleanup_http_response_ HttpResponse r4 = {0};
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *u4 = url_of(&a, "127.0.0.1", "/loop");
	CHECK_EQ_INT(redirect_get(c, u4, &r4, &e), -ELOOP);
	srv_stop(&a);
	srv_stop(&b);
}

TEST(redirect_not_followed_unless_asked)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	Srv a;
	int port = 1;

	CHECK(srv_start(&a, h_redirector, &port) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	_cleanup_free_ char *u = url_of(&a, "127.0.0.1", "/same");
	CHECK(get(c, u, false, &resp, NULL) == 0);
	CHECK_EQ_INT(resp.status, 307);
	CHECK_EQ_STR(http_response_header(&resp, "Location", NULL), "/blob");
	CHECK_EQ_INT(srv_count(&a), 1);
	srv_stop(&a);
}

/* 10 bytes; the first answer breaks after 5. data: honour Range? */
static void h_cut(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	bool ranges = *(bool *)s->data;
	const char *range = srv_header(rq->head, "Range");
	char head[256];

	if (n == 0) {
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234");
		srv_write(fd, head, strlen(head));
		return;
	}
	if (ranges && range && strncmp(range, "bytes=5-", 8) == 0)
		srv_respond(fd, 206, "Content-Range: bytes 5-9/10\r\n", "56789", 5);
	else
		srv_respond(fd, 200, NULL, "0123456789", 10);
}

typedef struct Collect {
	StrBuf b;
	int restarts;
} Collect;

static int collect_write(void *ud, const void *data, size_t len, KilnError **err)
{
	strbuf_add(&((Collect *)ud)->b, data, len);
	return 0;
}

static int collect_restart(void *ud, KilnError **err)
{
	Collect *c = ud;

	strbuf_truncate(&c->b, 0);
	c->restarts++;
	return 0;
}

TEST(broken_download_resumes_or_restarts)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;

	CHECK(http_client_new(&c, NULL) == 0);
	for (int ranges = 1; ranges >= 0; ranges--) {
		_cleanup_http_response_ HttpResponse resp = {0};
		Collect col = {0};
		HttpSink sink = {collect_write, collect_restart, &col};
		HttpRequest rq = HTTP_REQUEST_INIT;
		bool honour = ranges;
		Srv s;

		CHECK(srv_start(&s, h_cut, &honour) == 0);
		_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/blob");
		rq.url = u;
		rq.sink = &sink;
		rq.retry = true;
		rq.retry_policy = &fast_retry;
		CHECK(http_request(c, &rq, &resp, NULL) == 0);
		CHECK_EQ_INT(resp.status, ranges ? 206 : 200);
		CHECK_EQ_INT(resp.attempts, 2);
		CHECK(resp.body == NULL);
		CHECK_EQ_STR(col.b.s, "0123456789");
		CHECK_EQ_INT(col.restarts, ranges ? 0 : 1);
		CHECK(strstr(srv_log(&s, 1), "Range: bytes=5-") != NULL);
		strbuf_done(&col.b);
		srv_stop(&s);
	}
}

TEST(broken_download_without_restart_fails)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	_cleanup_error_ KilnError *e = NULL;
	Collect col = {0};
	HttpSink sink = {collect_write, NULL, &col};
	HttpRequest rq = HTTP_REQUEST_INIT;
	bool honour = false;
	Srv s;

	CHECK(http_client_new(&c, NULL) == 0);
	CHECK(srv_start(&s, h_cut, &honour) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/blob");
	rq.url = u;
	rq.sink = &sink;
	rq.retry = true;
	rq.retry_policy = &fast_retry;
	CHECK(http_request(c, &rq, &resp, &e) < 0);
	CHECK(e && strstr(e->message, "cannot start again"));
	/* A sink's failure is not retried. */
	CHECK_EQ_INT(srv_count(&s), 2);
	strbuf_done(&col.b);
	srv_stop(&s);
}

/* Echoes the request body back: "METHOD len body". */
static void h_echo(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	_cleanup_free_ char *out = xasprintf("%s %zu ", rq->method, rq->body_len);
	StrBuf b = {0};

	strbuf_adds(&b, out);
	strbuf_add(&b, rq->body, rq->body_len);
	srv_respond(fd, 201, "Location: /v2/x/blobs/uploads/u1?_state=s\r\n", b.s, b.len);
	strbuf_done(&b);
}

TEST(upload_from_fd_and_memory)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_close_ int fd = open("body", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	Srv s;

	CHECK(fd >= 0);
	CHECK(write_all(fd, "0123456789abcdef", 16) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	CHECK(srv_start(&s, h_echo, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/up");
	static const char *const methods[] = {"PUT", "PATCH", "POST"};
	for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
		_cleanup_http_response_ HttpResponse resp = {0};
		HttpRequest rq = HTTP_REQUEST_INIT;
		rq.method = methods[i];
		rq.url = u;
		rq.body_fd = fd;
		rq.body_offset = 4;
		rq.body_len = 8;
		CHECK(http_request(c, &rq, &resp, NULL) == 0);
		_cleanup_free_ char *want = xasprintf("%s 8 456789ab", methods[i]);
		CHECK_EQ_STR(resp.body, want);
		_cleanup_free_ char *loc =
		    http_url_resolve(resp.url, http_response_header(&resp, "Location", NULL));
		_cleanup_free_ char *want_loc =
		    url_of(&s, "127.0.0.1", "/v2/x/blobs/uploads/u1?_state=s");
		CHECK_EQ_STR(loc, want_loc);
	}
	/* An empty body from memory: Content-Length 0. */
	_cleanup_http_response_ HttpResponse resp = {0};
	HttpRequest rq = HTTP_REQUEST_INIT;
	rq.method = "PUT";
	rq.url = u;
	CHECK(http_request(c, &rq, &resp, NULL) == 0);
	CHECK_EQ_STR(resp.body, "PUT 0 ");
	CHECK(strstr(srv_log(&s, 3), "Content-Length: 0") != NULL);
	http_response_done(&resp);
	rq.body = "{\"a\":1}";
	rq.body_len = 7;
	CHECK(http_request(c, &rq, &resp, NULL) == 0);
	CHECK_EQ_STR(resp.body, "PUT 7 {\"a\":1}");
	srv_stop(&s);
}

TEST(upload_from_short_file_fails)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_close_ int fd = open("body", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	HttpRequest rq = HTTP_REQUEST_INIT;
	Srv s;

	CHECK(write_all(fd, "0123", 4) == 0);
	CHECK(http_client_new(&c, NULL) == 0);
	CHECK(srv_start(&s, h_echo, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/up");
	rq.method = "PUT";
	rq.url = u;
	rq.body_fd = fd;
	rq.body_len = 100;
	CHECK(http_request(c, &rq, &resp, &e) < 0);
	CHECK(e && strstr(e->message, "read the request body"));
	srv_stop(&s);
}

static void h_stall(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";

	srv_write(fd, head, strlen(head));
	sleep(4);
}

TEST(stalled_transfer_times_out)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	_cleanup_error_ KilnError *e = NULL;
	HttpRequest rq = HTTP_REQUEST_INIT;
	Srv s;

	CHECK(http_client_new(&c, NULL) == 0);
	CHECK(srv_start(&s, h_stall, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/slow");
	rq.url = u;
	rq.stall_timeout_s = 1;
	double t0 = now_s();
	CHECK_EQ_INT(http_request(c, &rq, &resp, &e), -ETIMEDOUT);
	CHECK(now_s() - t0 < 3.5);
	srv_stop(&s);
}

TEST(errors_name_the_url_without_its_query)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	_cleanup_http_response_ HttpResponse resp = {0};
	_cleanup_error_ KilnError *e = NULL;
	Srv s;

	CHECK(http_client_new(&c, NULL) == 0);
	/* A port nobody listens on: the one a stopped server had. */
	CHECK(srv_start(&s, h_hello, NULL) == 0);
	int port = s.port;
	srv_stop(&s);
	_cleanup_free_ char *u = xasprintf("http://127.0.0.1:%d/v2/?token=SECRET", port);
	CHECK_EQ_INT(get(c, u, true, &resp, &e), -ECONNREFUSED);
	CHECK(e && strstr(e->message, "GET http://127.0.0.1:"));
	CHECK(e && !strstr(e->message, "SECRET"));
	CHECK_EQ_INT(resp.attempts, fast_retry.tries);
}

TEST(proxies_from_environment)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	Srv proxy, origin;

	CHECK(http_client_new(&c, NULL) == 0);
	CHECK(srv_start(&proxy, h_hello, NULL) == 0);
	CHECK(srv_start(&origin, h_blob, NULL) == 0);
	_cleanup_free_ char *p = xasprintf("http://127.0.0.1:%d", proxy.port);
	setenv("http_proxy", p, 1);
	unsetenv("NO_PROXY");
	unsetenv("no_proxy");

	/* A remote name goes through the proxy (which never resolves here: .invalid). */
	_cleanup_http_response_ HttpResponse r1 = {0};
	CHECK(get(c, "http://registry.invalid/v2/", false, &r1, NULL) == 0);
	CHECK_EQ_STR(r1.body, "hello");
	CHECK(strncmp(srv_log(&proxy, 0), "GET http://registry.invalid/v2/ ", 32) == 0);

	/* NO_PROXY names it: a direct connection, which cannot resolve .invalid. */
	_cleanup_http_response_ HttpResponse r2 = {0};
	_cleanup_error_ KilnError *e = NULL;
	setenv("NO_PROXY", "example.org,registry.invalid", 1);
	CHECK_EQ_INT(get(c, "http://registry.invalid/v2/", false, &r2, &e), -EHOSTUNREACH);
	CHECK_EQ_INT(srv_count(&proxy), 1);

	/* Loopback never goes through a proxy. */
	unsetenv("NO_PROXY");
	_cleanup_http_response_ HttpResponse r3 = {0};
	_cleanup_free_ char *u = url_of(&origin, "127.0.0.1", "/x");
	CHECK(get(c, u, false, &r3, NULL) == 0);
	CHECK_EQ_STR(r3.body, "BLOB");
	CHECK_EQ_INT(srv_count(&proxy), 1);
	unsetenv("http_proxy");
	srv_stop(&proxy);
	srv_stop(&origin);
}

TEST(tls_settings_validate_ca_files)
{
	_cleanup_(http_tls_freep) HttpTls *t = NULL;
	_cleanup_error_ KilnError *e = NULL;
	char *bad[] = {"notpem.crt", NULL};
	char *missing[] = {"missing.crt", NULL};

	CHECK(write_file_atomic_at(AT_FDCWD, "notpem.crt", "hello", 5, 0644, NULL) == 0);
	HttpTlsOptions o = {.ca_files = bad};
	CHECK_EQ_INT(http_tls_new(&o, &t, &e), -EINVAL);
	CHECK(e && strstr(e->message, "'notpem.crt' holds no PEM certificate"));
	kiln_error_free(TAKE_PTR(e));
	o.ca_files = missing;
	CHECK_EQ_INT(http_tls_new(&o, &t, &e), -ENOENT);
	CHECK(e && strstr(e->message, "missing.crt"));
	HttpTlsOptions none = {0};
	CHECK(http_tls_new(&none, &t, NULL) == 0);
}

typedef struct Worker {
	HttpClient *c;
	const char *url;
	int ok;
} Worker;

static void *worker_main(void *ud)
{
	Worker *w = ud;

	for (int i = 0; i < 25; i++) {
		_cleanup_http_response_ HttpResponse resp = {0};
		if (get(w->c, w->url, true, &resp, NULL) == 0 && resp.status == 200 &&
		    resp.body_len == 5 && memcmp(resp.body, "hello", 5) == 0)
			w->ok++;
	}
	return NULL;
}

TEST(one_client_many_threads)
{
	_cleanup_(http_client_freep) HttpClient *c = NULL;
	Worker w[4];
	pthread_t th[4];
	Srv s;

	CHECK(http_client_new(&c, NULL) == 0);
	CHECK(srv_start(&s, h_hello, NULL) == 0);
	_cleanup_free_ char *u = url_of(&s, "127.0.0.1", "/x");
	for (int i = 0; i < 4; i++) {
		w[i] = (Worker){c, u, 0};
		CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ_INT(w[i].ok, 25);
	}
	CHECK_EQ_INT(srv_count(&s), 100);
	srv_stop(&s);
}

TEST(url_helpers)
{
	_cleanup_free_ char *a = http_url_resolve("https://r.io:5000/v2/x/blobs/uploads/",
						  "/v2/x/blobs/uploads/u?_state=1");
	CHECK_EQ_STR(a, "https://r.io:5000/v2/x/blobs/uploads/u?_state=1");
	_cleanup_free_ char *b = http_url_resolve("https://r.io/v2/", "https://s3.example/b?sig=1");
	CHECK_EQ_STR(b, "https://s3.example/b?sig=1");
	CHECK(http_url_resolve("https://r.io/v2/", "ftp://x/y") == NULL);
	CHECK(http_url_resolve("https://r.io/v2/", "file:///etc/passwd") == NULL);
	CHECK(http_url_same_origin("https://r.io/a", "https://R.IO:443/b?c"));
	CHECK(!http_url_same_origin("https://r.io/a", "http://r.io/a"));
	CHECK(!http_url_same_origin("https://r.io/a", "https://r.io:5000/a"));
	CHECK(!http_url_same_origin("https://r.io/a", "https://s.io/a"));
	_cleanup_free_ char *q1 = http_url_add_query("https://r/u?_state=1", "digest", "sha256:ab");
	CHECK_EQ_STR(q1, "https://r/u?_state=1&digest=sha256%3Aab");
	_cleanup_free_ char *q2 = http_url_add_query("https://r/u", "scope", "repository:a/b:pull");
	CHECK_EQ_STR(q2, "https://r/u?scope=repository%3Aa%2Fb%3Apull");
	_cleanup_free_ char *r = http_url_redact("https://user:pw@r.io/v2/b?X-Amz-Signature=s#f");
	CHECK_EQ_STR(r, "https://r.io/v2/b");
}

TEST(loopback_hosts)
{
	CHECK(http_host_is_loopback("localhost"));
	CHECK(http_host_is_loopback("LOCALHOST:5000"));
	CHECK(http_host_is_loopback("127.0.0.1"));
	CHECK(http_host_is_loopback("127.0.0.1:5000"));
	CHECK(http_host_is_loopback("127.255.3.4:1"));
	CHECK(http_host_is_loopback("[::1]:5000"));
	CHECK(http_host_is_loopback("::1"));
	CHECK(http_host_is_loopback("[::ffff:127.0.0.1]:80"));
	CHECK(!http_host_is_loopback("128.0.0.1"));
	CHECK(!http_host_is_loopback("10.0.0.1:5000"));
	CHECK(!http_host_is_loopback("localhost.example.com"));
	CHECK(!http_host_is_loopback("127.0.0.1.nip.io:5000"));
	CHECK(!http_host_is_loopback("vm"));
	CHECK(!http_host_is_loopback("[::2]:5000"));
	CHECK(!http_host_is_loopback("[::1]x"));
	CHECK(!http_host_is_loopback("registry.local"));
	CHECK(!http_host_is_loopback(""));
}

int main(void)
{
	RUN(backoff_schedule);
	RUN(transient_classes);
	RUN(get_in_memory_and_cap);
	RUN(retries_5xx_then_succeeds);
	RUN(no_retry_when_not_idempotent);
	RUN(no_retry_on_4xx_and_last_5xx_returned);
	RUN(retry_after_is_honoured);
	RUN(redirect_drops_authorization_on_other_origin);
	RUN(redirect_not_followed_unless_asked);
	RUN(broken_download_resumes_or_restarts);
	RUN(broken_download_without_restart_fails);
	RUN(upload_from_fd_and_memory);
	RUN(upload_from_short_file_fails);
	RUN(stalled_transfer_times_out);
	RUN(errors_name_the_url_without_its_query);
	RUN(proxies_from_environment);
	RUN(tls_settings_validate_ca_files);
	RUN(one_client_many_threads);
	RUN(url_helpers);
	RUN(loopback_hosts);
	return tap_done();
}
