/* A tiny HTTP/1.1 server on 127.0.0.1 for the HTTP layer's unit tests (test-http): one thread,
 * one request per connection (every answer closes it), a handler per test that writes the raw
 * response, and a log of the requests' heads. It tests kiln's HTTP client (redirects, retries,
 * resumed bodies, uploads, proxies); the registry protocol itself is tested against real
 * registries (tests/integration/t-registry-auth.sh). */
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define SRV_LOG_MAX 64

typedef struct SrvReq {
	char method[16];
	char target[2048];
	char *head; /* the request line and headers */
	char *body;
	size_t body_len;
} SrvReq;

typedef struct Srv Srv;
typedef void (*SrvHandler)(Srv *s, const SrvReq *rq, int fd, unsigned n);

struct Srv {
	int lfd, port;
	pthread_t th;
	SrvHandler handler;
	void *data;
	pthread_mutex_t mu;
	unsigned n;
	char *log[SRV_LOG_MAX]; /* heads of the requests, in order */
	int stop;		/* __atomic */
};

static inline void srv_write(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		p += w;
		len -= (size_t)w;
	}
}

/* A complete response with a body and "Connection: close"; extra: header lines, each ending in
 * "\r\n", or NULL. */
static inline void srv_respond(int fd, int status, const char *extra, const void *body, size_t len)
{
	char head[4096];

	snprintf(head, sizeof(head),
		 "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status, len,
		 extra ? extra : "");
	srv_write(fd, head, strlen(head));
	if (len)
		srv_write(fd, body, len);
}

static inline const char *srv_header(const char *head, const char *name)
{
	size_t n = strlen(name);

	for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n"))
		if (strncasecmp(l + 2, name, n) == 0 && l[2 + n] == ':')
			return l + 3 + n + strspn(l + 3 + n, " ");
	return NULL;
}

/* Reads one request from fd; 0 or -1. */
static inline int srv_read(int fd, SrvReq *rq)
{
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap + 1), *end = NULL;
	const char *cl;

	while (!end) {
		ssize_t r = recv(fd, buf + len, cap - len, 0);
		if (r <= 0) {
			free(buf);
			return -1;
		}
		len += (size_t)r;
		buf[len] = '\0';
		/* A TLS ClientHello (a client that tries HTTPS first): answer as Go's server does,
		 * so the client's handshake fails at once instead of waiting. */
		if ((unsigned char)buf[0] == 0x16) {
			srv_write(fd, "HTTP/1.0 400 Bad Request\r\n\r\n", 28);
			free(buf);
			return -1;
		}
		end = strstr(buf, "\r\n\r\n");
	}
	rq->head = strndup(buf, (size_t)(end - buf) + 2);
	sscanf(buf, "%15s %2047s", rq->method, rq->target);
	cl = srv_header(rq->head, "Content-Length");
	rq->body_len = cl ? strtoul(cl, NULL, 10) : 0;
	if (rq->body_len > 0 && srv_header(rq->head, "Expect"))
		srv_write(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	rq->body = calloc(1, rq->body_len + 1);
	size_t have = len - (size_t)(end + 4 - buf);
	memcpy(rq->body, end + 4, have < rq->body_len ? have : rq->body_len);
	while (have < rq->body_len) {
		ssize_t r = recv(fd, rq->body + have, rq->body_len - have, 0);
		if (r <= 0)
			break;
		have += (size_t)r;
	}
	free(buf);
	return 0;
}

static inline void *srv_main(void *ud)
{
	Srv *s = ud;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = {.fd = s->lfd, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		SrvReq rq = {0};
		if (srv_read(fd, &rq) == 0) {
			pthread_mutex_lock(&s->mu);
			unsigned n = s->n++;
			if (n < SRV_LOG_MAX)
				s->log[n] = strdup(rq.head);
			pthread_mutex_unlock(&s->mu);
			s->handler(s, &rq, fd, n);
		}
		free(rq.head);
		free(rq.body);
		close(fd);
	}
	return NULL;
}

static inline int srv_start(Srv *s, SrvHandler h, void *data)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	memset(s, 0, sizeof(*s));
	s->handler = h;
	s->data = data;
	pthread_mutex_init(&s->mu, NULL);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s->lfd, 16) < 0 || getsockname(s->lfd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	s->port = ntohs(a.sin_port);
	return pthread_create(&s->th, NULL, srv_main, s) == 0 ? 0 : -1;
}

static inline void srv_stop(Srv *s)
{
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(s->th, NULL);
	close(s->lfd);
	for (unsigned i = 0; i < SRV_LOG_MAX; i++)
		free(s->log[i]);
	pthread_mutex_destroy(&s->mu);
}

/* The head of request i (0-based), or "" when there was none. */
static inline const char *srv_log(Srv *s, unsigned i)
{
	const char *r;

	pthread_mutex_lock(&s->mu);
	r = i < s->n && i < SRV_LOG_MAX && s->log[i] ? s->log[i] : "";
	pthread_mutex_unlock(&s->mu);
	return r;
}

static inline unsigned srv_count(Srv *s)
{
	pthread_mutex_lock(&s->mu);
	unsigned n = s->n;
	pthread_mutex_unlock(&s->mu);
	return n;
}
