/* HTTP for the registry client: the only code that includes curl.h. curl's errors become
 * KilnError here, with the URL's query string left out (blob storage signs its URLs there).
 *
 * One HttpClient per process, shared by every thread: requests may run concurrently from
 * several threads. Each request borrows an idle curl easy handle from the client's pool (one per
 * concurrent request; a handle keeps its connections open between requests, so registries see
 * connection reuse and HTTP/2 where they offer it); DNS and TLS sessions are shared between the
 * handles. curl's shared connection cache is not used: it is not thread-safe (curl known bug
 * 11.11).
 *
 * Proxies come from the environment as curl reads them (https_proxy/HTTPS_PROXY, http_proxy,
 * ALL_PROXY, NO_PROXY); requests to loopback hosts never go through a proxy, as in Go's
 * net/http that docker and skopeo use. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct HttpClient HttpClient;
typedef struct HttpTls HttpTls;

/* A new client; the first call initialises libcurl (thread-safe). */
int http_client_new(HttpClient **ret, KilnError **err);
/* Takes NULL. No request of this client may be running. */
void http_client_free(HttpClient *c);
static inline void http_client_freep(HttpClient **c)
{
	http_client_free(*c);
}

/* TLS settings of one endpoint. The trusted CAs are the base bundle ($SSL_CERT_FILE when set,
 * else the system's: curl's default CA file, and $SSL_CERT_DIR or curl's default CA dir) plus
 * ca_files: extra CAs are ADDED to the system ones, as docker does with certs.d. */
typedef struct HttpTlsOptions {
	char *const *ca_files; /* PEM files (NULL-terminated) or NULL */
	const char
	    *client_cert; /* PEM client certificate and its key (certs.d: NAME.cert and NAME.key) */
	const char *client_key;
	bool no_verify; /* a registry marked insecure: accept any certificate */
} HttpTlsOptions;

/* Reads the CA files once (each at most HTTP_CA_FILE_MAX bytes, and PEM: an error names a file
 * that is not) so that requests need no file access. Immutable: share it between threads. */
int http_tls_new(const HttpTlsOptions *o, HttpTls **ret, KilnError **err);
void http_tls_free(HttpTls *t);
static inline void http_tls_freep(HttpTls **t)
{
	http_tls_free(*t);
}
#define HTTP_CA_FILE_MAX (16u << 20)

/* Transient failures are retried with exponential backoff: try n (n >= 2) waits
 * base_ms * 2^(n-2), at most max_ms, with "equal jitter" (half fixed, half random), and at
 * least a Retry-After the server sent (seconds or an HTTP date, capped at retry_after_max_s). */
typedef struct HttpRetry {
	unsigned tries; /* attempts in all, >= 1 */
	unsigned base_ms;
	unsigned max_ms;
	unsigned retry_after_max_s;
} HttpRetry;
#define HTTP_RETRY_DEFAULT                                                                         \
	((HttpRetry){.tries = 5, .base_ms = 500, .max_ms = 8000, .retry_after_max_s = 60})

/* The wait before attempt `attempt` (2 = the first retry); retry_after_s < 0: none sent; rnd:
 * a random 32-bit value (the jitter). Pure, for tests. */
unsigned http_backoff_ms(const HttpRetry *r, unsigned attempt, long retry_after_s, uint32_t rnd);
/* http_backoff_ms with a random jitter, then sleeps that long. */
void http_backoff_sleep(const HttpRetry *r, unsigned attempt, long retry_after_s);

/* Whether a status is worth retrying: 408, 429 and 5xx except 501 and 505. */
bool http_status_is_transient(long status);
/* Whether a failed http_request (its negative return) is a transient transport error worth
 * retrying: a connection reset, refused or timed out, a response cut short. */
bool http_error_is_transient(int r);

/* Where a 2xx response body streams (blobs): write is called with the bytes in order; a
 * negative return aborts the request with that error. When a retry after a broken transfer
 * cannot resume where it stopped (the server ignores Range), restart is called to discard what
 * was written, and the body comes again from byte 0; a NULL restart makes such a retry fail. */
typedef struct HttpSink {
	int (*write)(void *userdata, const void *data, size_t len, KilnError **err);
	int (*restart)(void *userdata, KilnError **err);
	void *userdata;
} HttpSink;

typedef struct HttpRequest {
	const char *method; /* GET HEAD PUT PATCH POST DELETE */
	const char *url;
	/* "Name: value" lines (NULL-terminated) or NULL. "Authorization: ..." lines are sent to the
	 * request's origin (scheme, host and port) only: never to a redirect's other origin. */
	char *const *headers;
	const HttpTls *tls; /* NULL: the base bundle, verified */
	/* The request body, for PUT PATCH POST (none: an empty body, Content-Length: 0): body_len
	 * bytes from memory (body) or from body_fd at body_offset (read with pread; the fd's
	 * position is untouched). */
	const void *body;
	int body_fd; /* -1 unless the body is in a file */
	uint64_t body_offset;
	uint64_t body_len;
	/* A 2xx body streams to sink when set; any other body (and without a sink, a 2xx body)
	 * is kept in the response, at most max_body bytes (0: HTTP_ERROR_BODY_MAX): a larger body
	 * is an EFBIG error for a 2xx response and is cut for an error response. */
	const HttpSink *sink;
	size_t max_body;
	/* Follow redirects (GET and HEAD only; at most 10; https -> http only to a loopback
	 * host or from http), dropping Authorization on a change of origin. */
	bool follow_redirects;
	/* Idempotent: retry transient failures (http_status_is_transient, http_error_is_transient)
	 * per retry (NULL: HTTP_RETRY_DEFAULT). A GET with a sink resumes a broken body with
	 * Range. */
	bool retry;
	const HttpRetry *retry_policy;
	/* Seconds below 1 byte/s before the transfer is abandoned (a stalled connection; there is
	 * no total timeout, so big blobs take the time they need): 0 = 60. The request that
	 * completes a big upload may need longer while the registry hashes the blob. */
	unsigned stall_timeout_s;
	/* HTTP/1.1 even where the server offers HTTP/2: pushes. libcurl 7.88 (Debian 12) spins
	 * while an HTTP/2 upload waits for the peer's flow-control window: 52 MB to two
	 * registries took 1.6 s (1.5 s of CPU) over HTTP/2, 0.9 s (0.2 s) over HTTP/1.1. */
	bool http1;
} HttpRequest;

#define HTTP_REQUEST_INIT                                                                          \
	{                                                                                          \
		.method = "GET", .body_fd = -1                                                     \
	}
#define HTTP_ERROR_BODY_MAX (64u << 10)

typedef struct HttpResponse {
	long status;
	char *body; /* NUL-terminated (kept bodies only), or NULL */
	size_t body_len;
	char **headers; /* the final response's header lines, "Name: value" as received */
	char *url;	/* the URL that answered (after redirects) */
	unsigned attempts;
	long http_version; /* 1, 2 (or 0 unknown) */
} HttpResponse;

void http_response_done(HttpResponse *r);
#define _cleanup_http_response_ __attribute__((cleanup(http_response_done)))

/* The value of the first header `name` (case-insensitive), whitespace trimmed, or NULL; *pos
 * (when not NULL) starts at 0 and continues a search for the next one. */
const char *http_response_header(const HttpResponse *r, const char *name, size_t *pos);

/* Performs a request. Returns 0 once a response arrived, whatever its status (after retries,
 * the last one), or < 0 for a failure to get one, with errors that name the method and URL:
 *   -EHOSTUNREACH  the host name does not resolve
 *   -ECONNREFUSED  nothing listens
 *   -ETIMEDOUT     connecting or a stalled transfer timed out
 *   -ECONNRESET    the connection broke or the response was cut short
 *   -EPROTO        the TLS handshake failed (e.g. the server speaks plain HTTP)
 *   -EKEYREJECTED  the server's certificate is not trusted, or a CA file is unusable
 *   -EFBIG         a kept 2xx body exceeded max_body
 *   -EIO           anything else; a sink's error is returned as it is.
 * *ret is filled in both cases (status 0 when no response came). */
int http_request(HttpClient *c, const HttpRequest *req, HttpResponse *ret, KilnError **err);

/* URL helpers (curl's URL parser). */
/* ref resolved against base (a Location header): a new string, or NULL when it is not a
 * valid http(s) URL. */
char *http_url_resolve(const char *base, const char *ref);
/* Whether two URLs have the same scheme, host and port. */
bool http_url_same_origin(const char *a, const char *b);
/* url with "&key=value" (or "?key=value") appended, value percent-encoded. */
char *http_url_add_query(const char *url, const char *key, const char *value);
/* Percent-encodes everything but unreserved characters (RFC 3986). */
char *http_escape(const char *s);
/* url without its query string and user info: for messages. */
char *http_url_redact(const char *url);

/* Whether HOST[:PORT] (an IPv6 literal in brackets when a port follows) names the loopback:
 * "localhost", 127.0.0.0/8 or ::1, by its literal form (nothing is resolved: DNS could lie). */
bool http_host_is_loopback(const char *hostport);
/* Whether an http(s) URL's host is a loopback host (as above). */
bool http_url_is_loopback(const char *url);
