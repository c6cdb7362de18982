#include "network.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "userns.h"

extern char **environ;

/* pasta normally answers within milliseconds; a loaded 2-core CI runner may take seconds. */
#define PASTA_START_TIMEOUT_MS 20000
#define PASTA_MESSAGE_MAX 4096

struct NetworkStack {
	pid_t pid;
	int out_r, err_r; /* kept open while pasta runs, so its writes never raise SIGPIPE */
};

int network_mode_parse(const char *s, NetworkMode dflt, NetworkMode *ret)
{
	if (strcmp(s, "default") == 0)
		*ret = dflt;
	else if (strcmp(s, "private") == 0)
		*ret = NETWORK_PRIVATE;
	else if (strcmp(s, "host") == 0)
		*ret = NETWORK_HOST;
	else if (strcmp(s, "none") == 0)
		*ret = NETWORK_NONE;
	else
		return -EINVAL;
	return 0;
}

const char *network_mode_name(NetworkMode m)
{
	switch (m) {
	case NETWORK_PRIVATE:
		return "private";
	case NETWORK_HOST:
		return "host";
	case NETWORK_NONE:
		return "none";
	}
	return "?";
}

static bool is_loopback_address(const char *a)
{
	return strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0 || strcmp(a, "0.0.0.0") == 0 ||
	       strcmp(a, "::") == 0;
}

/* Appends one host line to *text when the private network can use it. */
static void resolv_add_line(char **text, char *line, unsigned *n_servers)
{
	char *save = NULL, *word = strtok_r(line, " \t", &save);
	char *addr = word ? strtok_r(NULL, " \t", &save) : NULL;
	char *more = NULL;

	if (!word || !addr)
		return;
	if (strcmp(word, "nameserver") == 0) {
		if (*n_servers >= 3 || is_loopback_address(addr))
			return;
		more = xasprintf("%snameserver %s\n", *text, addr);
		(*n_servers)++;
	} else if (strcmp(word, "search") == 0 || strcmp(word, "domain") == 0 ||
		   strcmp(word, "options") == 0) {
		more = xasprintf("%s%s %s%s%s\n", *text, word, addr, *save ? " " : "", save);
	} else {
		return;
	}
	free(*text);
	*text = more;
}

char *network_resolv_conf(const char *host_text)
{
	_cleanup_free_ char *copy = xstrdup(host_text ? host_text : "");
	char *text = xstrdup("nameserver " NETWORK_DNS_ADDRESS "\n"), *save = NULL;
	unsigned n_servers = 1;

	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (*l == '#' || *l == ';')
			continue;
		resolv_add_line(&text, l, &n_servers);
	}
	return text;
}

static int pasta_find(char **ret_path)
{
	const char *e = getenv("KILN_PASTA");

	if (e && *e) {
		*ret_path = xstrdup(e);
		return 1;
	}
	return userns_find_helper("pasta", ret_path);
}

/* Moves fd to a number >= 3 (close-on-exec), so dup2() onto 0-2 in the child cannot clobber it. */
static int fd_move_high(int fd)
{
	int nfd;

	if (fd < 0 || fd >= 3)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	closep(&fd);
	return nfd;
}

static int pipe_for_child(int *ret_r, int *ret_w, KilnError **err)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) < 0)
		return kiln_error_errno(err, errno, "pipe");
	*ret_r = fd_move_high(fds[0]);
	*ret_w = fd_move_high(fds[1]);
	if (*ret_r < 0 || *ret_w < 0) {
		closep(ret_r);
		closep(ret_w);
		return kiln_error_errno(err, EMFILE, "pipe");
	}
	/* pasta may log while it runs; a full pipe must not block it. */
	if (fcntl(*ret_w, F_SETFL, O_NONBLOCK) < 0)
		return kiln_error_errno(err, errno, "pipe");
	return 0;
}

/* The forked child: only async-signal-safe calls until execve(). */
static _Noreturn void pasta_exec(const char *bin, char *const argv[], int nsfd, int out_w,
				 int err_w, pid_t parent)
{
	sigset_t none;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(127);
	if (dup2(nsfd, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
		_exit(127);
	(void)close_range(3, ~0U, 0);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	execve(bin, argv, environ);
	_exit(127);
}

/* argv[0] is the path (pasta tells its mode from the name), so tests can find their own pasta.
 * pasta reads the namespace from its stdin and writes its pid to its stdout once it has set the
 * namespace up: both survive pasta's own closing of inherited fds (newer versions close every fd
 * above 2). --runas 0:0 keeps it at uid 0 of kiln's user namespace, which it would otherwise
 * leave for "nobody" when the map is the identity (root builds). */
static int pasta_spawn(const char *bin, int nsfd, int out_w, int err_w, pid_t *ret_pid,
		       KilnError **err)
{
	char *const argv[] = {
	    (char *)bin,
	    "--config-net",
	    "--dns-forward",
	    NETWORK_DNS_ADDRESS,
	    "-t",
	    "none",
	    "-u",
	    "none",
	    "-T",
	    "none",
	    "-U",
	    "none",
	    "--no-map-gw",
	    "--quiet",
	    "--foreground",
	    "--no-netns-quit",
	    "--runas",
	    "0:0",
	    "--pid",
	    "/proc/self/fd/1",
	    "--netns",
	    "/proc/self/fd/0",
	    NULL,
	};
	pid_t parent = getpid(), pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return kiln_error_errno(err, errno, "fork for pasta");
	if (pid == 0)
		pasta_exec(bin, argv, nsfd, out_w, err_w, parent);
	*ret_pid = pid;
	return 0;
}

/* Waits for the pid line; false when pasta exited (or stayed silent past the timeout). */
static bool pasta_wait_ready(int out_r)
{
	struct pollfd p = {.fd = out_r, .events = POLLIN};
	char buf[64];
	size_t n = 0;

	while (n < sizeof(buf)) {
		int r = poll(&p, 1, PASTA_START_TIMEOUT_MS);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		ssize_t k = read(out_r, buf + n, sizeof(buf) - n);
		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k <= 0)
			return false;
		n += (size_t)k;
		if (memchr(buf, '\n', n))
			return true;
	}
	return false;
}

/* pasta's stderr without its complaints about a missing syslog, on one line. */
static char *pasta_message(int err_r)
{
	_cleanup_free_ char *raw = NULL, *copy = NULL;
	char *msg = xstrdup(""), *save = NULL;

	(void)fcntl(err_r, F_SETFL, O_NONBLOCK);
	if (read_all_fd(err_r, PASTA_MESSAGE_MAX, &raw, NULL, NULL) < 0 || !raw)
		return msg;
	copy = xstrdup(raw);
	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (strncmp(l, "Failed to send", 14) == 0 && strstr(l, "syslog"))
			continue;
		char *more = xasprintf("%s%s%s", msg, *msg ? "; " : "", l);
		free(msg);
		msg = more;
	}
	return msg;
}

static void reap(pid_t pid, int *ret_status)
{
	int status = 0;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			break;
	if (ret_status)
		*ret_status = status;
}

static int pasta_failed(NetworkStack *s, const char *bin, KilnError **err)
{
	_cleanup_free_ char *msg = NULL;
	int status = 0;

	kill(s->pid, SIGKILL);
	reap(s->pid, &status);
	s->pid = 0;
	msg = pasta_message(s->err_r);
	if (access("/dev/net/tun", R_OK | W_OK) < 0)
		return kiln_error(err, EACCES,
				  "pasta: %s: /dev/net/tun is not usable by kiln's user namespace "
				  "(as root: chmod 0666 /dev/net/tun; udev hosts make it 0666)",
				  *msg ? msg : "failed");
	if (*msg)
		return kiln_error(err, EIO, "pasta: %s", msg);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return kiln_error(err, ENOEXEC, "pasta: '%s' could not be executed", bin);
	if (WIFEXITED(status))
		return kiln_error(err, EIO,
				  "pasta: exited with status %d before the network was up",
				  WEXITSTATUS(status));
	return kiln_error(err, EIO, "pasta: did not set the network up");
}

void network_stack_free(NetworkStack *s)
{
	if (!s)
		return;
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		reap(s->pid, NULL);
	}
	closep(&s->out_r);
	closep(&s->err_r);
	free(s);
}

int network_child_send_netns(int sock)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = u.buf,
	    .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC), e;
	ssize_t n;

	if (fd < 0)
		return -errno;
	memset(u.buf, 0, sizeof(u.buf));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	e = errno;
	close(fd);
	return n == 1 ? 0 : -(n < 0 ? e : EIO);
}

int network_recv_netns(int sock, KilnError **err)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = u.buf,
	    .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c;
	ssize_t n;
	int fd;

	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return kiln_error_errno(err, errno, "receive the step's network namespace");
	c = CMSG_FIRSTHDR(&msg);
	if (n != 1 || !c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int)))
		return kiln_error(err, EIO, "receive the step's network namespace: none sent");
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

int network_stack_start(int netns_fd, NetworkStack **ret, KilnError **err)
{
	_cleanup_(network_stack_freep) NetworkStack *s = xcalloc(1, sizeof(*s));
	_cleanup_close_ int nsfd = -1, out_w = -1, err_w = -1;
	_cleanup_free_ char *bin = NULL;
	int r;

	s->out_r = s->err_r = -1;
	if (!pasta_find(&bin))
		return kiln_error(err, ENOENT, "pasta not found (install the package passt)");
	nsfd = fcntl(netns_fd, F_DUPFD_CLOEXEC, 3);
	if (nsfd < 0)
		return kiln_error_errno(err, errno, "dup the network namespace fd");
	if ((r = pipe_for_child(&s->out_r, &out_w, err)) < 0 ||
	    (r = pipe_for_child(&s->err_r, &err_w, err)) < 0)
		return r;
	r = pasta_spawn(bin, nsfd, out_w, err_w, &s->pid, err);
	if (r < 0)
		return r;
	closep(&out_w);
	out_w = -1;
	closep(&err_w);
	err_w = -1;
	if (!pasta_wait_ready(s->out_r))
		return pasta_failed(s, bin, err);
	*ret = TAKE_PTR(s);
	return 0;
}

/* A throwaway net namespace, made by a child that sends it over and exits. */
static int probe_netns(KilnError **err)
{
	_cleanup_close_ int parent_end = -1, child_end = -1;
	int fds[2], fd;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
		return kiln_error_errno(err, errno, "socketpair");
	parent_end = fds[0];
	child_end = fds[1];
	pid = fork();
	if (pid < 0)
		return kiln_error_errno(err, errno, "fork");
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0)
			_exit(1);
		_exit(network_child_send_netns(child_end) < 0 ? 2 : 0);
	}
	closep(&child_end);
	child_end = -1;
	fd = network_recv_netns(parent_end, err);
	reap(pid, NULL);
	if (fd < 0)
		return kiln_error_wrap(err, fd, "create a network namespace");
	return fd;
}

int network_probe(KilnError **err)
{
	_cleanup_(network_stack_freep) NetworkStack *s = NULL;
	_cleanup_close_ int nsfd = probe_netns(err);

	if (nsfd < 0)
		return nsfd;
	return network_stack_start(nsfd, &s, err);
}
