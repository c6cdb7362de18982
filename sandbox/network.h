/* The network of RUN steps: a private namespace connected to the outside by pasta (the user-mode
 * network stack of the passt project), the host's own, or none. */
#pragma once

#include <sys/types.h>

#include "common/error.h"

typedef enum {
	NETWORK_PRIVATE, /* own namespace; outbound TCP, UDP and ping through pasta; the host's
			    loopback, its abstract unix sockets and its listening ports stay out
			    of reach */
	NETWORK_HOST,	 /* the host's namespace, as the caller sees it */
	NETWORK_NONE,	 /* own namespace with only loopback */
} NetworkMode;

/* Parses "host", "none" or "private"; "default" gives dflt. Returns 0, or -EINVAL. */
int network_mode_parse(const char *s, NetworkMode dflt, NetworkMode *ret);

/* "private", "host" or "none". */
const char *network_mode_name(NetworkMode m);

/* The nameserver a private network sees: pasta (--dns-forward) re-sends what arrives there from
 * the host to the host's first nameserver, so a resolver on the host's loopback (systemd-resolved's
 * 127.0.0.53) answers too. Link-local and Podman's address for the same job. */
#define NETWORK_DNS_ADDRESS "169.254.1.1"

/* The resolv.conf of a private network: NETWORK_DNS_ADDRESS first, then the host's nameservers
 * that are not loopback addresses (at most three in all), and the host's search, domain and
 * options lines. host_text is the host's /etc/resolv.conf (NULL: none). */
char *network_resolv_conf(const char *host_text);

typedef struct NetworkStack NetworkStack;

/* In a child that has its own net namespace, between clone and exec (no allocation): sends an fd
 * of that namespace over the unix socket sock. The parent cannot open /proc/PID/ns/net itself
 * when it is not dumpable (a process whose ids changed, as kiln's is in a root build). Returns 0
 * or -errno. */
int network_child_send_netns(int sock);

/* Receives what network_child_send_netns() sent: a close-on-exec fd of the namespace, or < 0. */
int network_recv_netns(int sock, KilnError **err);

/* Connects the network namespace netns_fd (a new one, of a child's) to the outside: starts pasta
 * (in the caller's user and mount namespace, so call it from inside kiln's user namespace) and
 * returns once pasta has configured the namespace: addresses and routes copied from the host,
 * loopback up, DNS at NETWORK_DNS_ADDRESS. No port is forwarded either way and the gateway
 * address does not lead to the host's loopback. netns_fd stays the caller's.
 *
 * pasta gets SIGKILL when the calling thread exits; network_stack_free() kills and reaps it. The
 * binary is $KILN_PASTA, else pasta in $PATH, /usr/sbin, /usr/bin, /sbin, /bin. On failure the
 * error carries pasta's own message and, when /dev/net/tun is what is missing, the fix. */
int network_stack_start(int netns_fd, NetworkStack **ret, KilnError **err);

/* Stops pasta (SIGKILL) and reaps it; NULL is fine. */
void network_stack_free(NetworkStack *s);
static inline void network_stack_freep(NetworkStack **s)
{
	network_stack_free(*s);
}

/* Whether private networks work here: connects a throwaway namespace once. 0 when they do, else
 * < 0 with err saying why and what to do. Call it from inside kiln's user namespace. */
int network_probe(KilnError **err);
