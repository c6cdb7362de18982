/* Shared helpers of the unit tests for tree walkers (test-common, test-layer, test-prune): a
 * directory chain as deep as a hostile RUN step makes one, and running code in a forked child
 * with a small stack and few fds, so a walker that recurses or keeps an fd per level fails
 * (SIGSEGV or EMFILE) where an iterative one passes.
 *
 * Everything is static inline (like tap.h): each test is a single-file binary. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEEP_DEPTH 20000       /* what crashed kiln with a 1 MiB stack */
#define DEEP_STACK (512 << 10) /* bytes; the recursive walkers needed several MiB */
#define DEEP_FDS 32	       /* open files the child may have */

/* Makes a chain of depth directories named "d" below dirfd/top (created); 0 or -errno. */
static inline int deep_tree_make(int dirfd, const char *top, int depth)
{
	int fd;

	if (mkdirat(dirfd, top, 0755) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(dirfd, top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (int i = 0; fd >= 0 && i < depth; i++) {
		int sub = -1;
		if (mkdirat(fd, "d", 0755) == 0)
			sub = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = sub;
	}
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

/* Runs fn(userdata) in a child limited to DEEP_STACK bytes of stack and DEEP_FDS open files;
 * returns fn's result (0..255), or -1 when the child died (a signal: the stack overflowed). */
static inline int deep_run_limited(int (*fn)(void *), void *userdata)
{
	int status = 0;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct rlimit stack = {DEEP_STACK, DEEP_STACK}, files = {DEEP_FDS, DEEP_FDS};
		if (setrlimit(RLIMIT_STACK, &stack) < 0 || setrlimit(RLIMIT_NOFILE, &files) < 0)
			_exit(99);
		int r = fn(userdata);
		fflush(stdout);
		_exit(r < 0 ? 1 : r > 255 ? 255 : r);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	if (WIFSIGNALED(status))
		printf("#   child killed by signal %d\n", WTERMSIG(status));
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
