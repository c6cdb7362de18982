/* Running one command (a RUN step) in a namespaced sandbox rooted at a mounted image root. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"
#include "sandbox/limits.h"

/* Receives the container's output as it comes; stream is 1 (stdout) or 2 (stderr). */
typedef void (*ContainerOutputFn)(void *userdata, int stream, const char *buf, size_t len);

typedef struct ContainerSpec {
	const char *rootfs; /* mounted root (an overlay merged dir) */
	char *const *argv;  /* argv[0] resolved with the container's PATH from envp when it has
			       no '/' (default PATH when envp has none) */
	char *const *envp;  /* NULL: empty environment */
	const char *cwd;    /* must exist (the builder creates WORKDIR); NULL -> "/" */
	uid_t uid;	    /* in-image ids; must be inside the user namespace's map */
	gid_t gid;
	const gid_t *groups; /* supplementary groups (needs setgroups: not under IDMAP_SINGLE) */
	size_t n_groups;
	bool network_none;		      /* new (empty, loopback up) net namespace */
	const char *hostname;		      /* uts hostname, NULL -> "kiln" */
	const char *hosts_path, *resolv_path; /* host files bound read-only onto /etc/hosts and
						 /etc/resolv.conf when non-NULL */
	ContainerOutputFn output;	      /* NULL: output is discarded; stdin is /dev/null */
	void *output_userdata;
	double *
	    ret_cpu_seconds; /* when non-NULL: user+system CPU time of the command is stored here */

	/* The network and the limits (network.h, limits.h). */
	bool network_private;	  /* new net namespace that pasta connects before the command
				     starts (network_none is the other kind) */
	const RunLimits *limits;  /* ulimits set just before exec; NULL: kiln's own */
	const LimitsStep *cgroup; /* the step's cgroup, joined before exec; NULL: kiln's */
} ContainerSpec;

/* Runs argv in new mount, pid, ipc and uts namespaces (and net when network_none or
 * network_private; pasta's failure to start is an error naming its reason), nested in the
 * current user namespace (call userns_enter() first, or run as real root), rooted at rootfs, and
 * waits for it.
 *
 * Returns 0 with *ret_status = the exit code (128+N for a signal N), or < 0 if the sandbox could
 * not be set up; that includes an argv[0] that cannot be executed (not found in PATH, not
 * executable): the error names it, e.g. "run 'nosuch': exec 'nosuch': No such file or directory",
 * rather than faking a shell's 127.
 *
 * The sandbox: mounts are rprivate; fresh /proc; /dev is a tmpfs with host null, zero, full,
 * random, urandom and tty bound in, fd/stdin/stdout/stderr/ptmx symlinks, a new devpts instance on
 * /dev/pts when the kernel allows it and a tmpfs /dev/shm; /sys is the host's, bound recursively
 * read-only when allowed (else absent); hosts_path/resolv_path are bound read-only (skipped when
 * the image's /etc/hosts or /etc/resolv.conf is a symlink that dangles inside the root). /proc,
 * /dev and /sys must not be symlinks in the image (ELOOP).
 *
 * The command itself is pid 1 of its pid namespace (no init: orphans are reaped by the command or
 * killed with it); when it exits the kernel kills the rest of the namespace. It runs in its own
 * session without a controlling terminal and gets SIGKILL if the calling process dies. All fds
 * but 0-2 are closed, the signal mask and dispositions are reset. stdout and stderr are two pipes
 * read with poll(): each stream keeps its order, and chunks are delivered in the order they
 * become readable (stdout first when both are).
 *
 * Mount points the sandbox needs and the image lacks (/proc, /dev, /sys, /etc, /etc/hosts,
 * /etc/resolv.conf) are created for the run and removed afterwards if still empty, so the step's
 * layer does not contain them. */
int container_run(const ContainerSpec *spec, int *ret_status, KilnError **err);
