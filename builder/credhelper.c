#include "credhelper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/strbuf.h"

extern char **environ;

static int spawn_helper(const char *helper, const char *action, int in_fd, int out_fd,
			pid_t *ret_pid, KilnError **err)
{
	_cleanup_free_ char *prog = xasprintf("docker-credential-%s", helper);
	char *argv[] = {prog, (char *)action, NULL};
	posix_spawn_file_actions_t fa;
	int r;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
	r = posix_spawnp(ret_pid, prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return kiln_error_errno(err, r, "run '%s'", prog);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads fd to EOF within the deadline, at most CREDHELPER_OUTPUT_MAX bytes. */
static int read_output(int fd, double deadline, StrBuf *out, KilnError **err)
{
	char buf[4096];

	for (;;) {
		double left = deadline - now_s();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (left <= 0)
			return kiln_error(err, ETIMEDOUT, "no answer within %d s",
					  CREDHELPER_TIMEOUT_S);
		int n = poll(&p, 1, (int)(left * 1000) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_errno(err, errno, "poll");
		if (n == 0)
			continue;
		ssize_t got = read(fd, buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return kiln_error_errno(err, errno, "read its output");
		if (got == 0)
			return 0;
		if (out->len + (size_t)got > CREDHELPER_OUTPUT_MAX)
			return kiln_error(err, EFBIG, "output larger than %u bytes",
					  CREDHELPER_OUTPUT_MAX);
		strbuf_add(out, buf, (size_t)got);
	}
}

static int reap(pid_t pid, bool kill_it)
{
	int st = 0;

	if (kill_it)
		kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int credhelper_run(void *userdata, const char *helper, const char *action, const char *input,
		   int *ret_status, char **ret_output, KilnError **err)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	_cleanup_strbuf_ StrBuf buf = {0};
	pid_t pid = -1;
	int r;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) < 0 || pipe2(out, O_CLOEXEC) < 0)
		r = kiln_error_errno(err, errno, "credential helper pipes");
	else
		r = spawn_helper(helper, action, in[0], out[1], &pid, err);
	closep(&in[0]);
	closep(&out[1]);
	if (r >= 0 && input && send(in[1], input, strlen(input), MSG_NOSIGNAL) < 0 &&
	    errno != EPIPE)
		r = kiln_error_errno(err, errno, "write to the credential helper");
	closep(&in[1]);
	if (r >= 0)
		r = read_output(out[0], now_s() + CREDHELPER_TIMEOUT_S, &buf, err);
	closep(&out[0]);
	if (pid > 0) {
		int st = reap(pid, r < 0);
		if (r >= 0)
			*ret_status = st;
	}
	if (buf.s)
		explicit_bzero(buf.s, r < 0 ? buf.len : 0);
	if (r < 0)
		return r;
	*ret_output = strbuf_steal(&buf);
	return 0;
}
