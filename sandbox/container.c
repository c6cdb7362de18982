#include "container.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "caps.h"
#include "network.h"
#include "seccomp.h"
#include "userns.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* What the child sends when a setup step fails. It may not allocate, so step and arg point at
 * static strings or into the spec: the parent has the same memory layout (fork semantics). */
typedef struct ChildFailure {
	int error;
	const char *step;
	const char *arg;
} ChildFailure;

typedef struct ChildCtx {
	const ContainerSpec *spec;
	const char *rootfs; /* absolute */
	const char *cwd;
	const char *hostname;
	const char *path; /* PATH for argv[0] */
	char *const *envp;
	const gid_t *groups; /* supplementary groups, the primary gid included */
	size_t n_groups;
	const SeccompFilter *seccomp;
	const CapsPlan *caps;
	int report_fd, out_fd, err_fd;
	int userns_fd;	 /* the child's end of the socket it asks the parent for its id maps on */
	int userns_peer; /* the parent's end (closed in the child) */

	/* private network: the child's end of the socket it sends its namespace and gets the
	 * go-ahead on, and the parent's end (closed in the child); -1 otherwise */
	int net_fd, net_peer;
} ChildCtx;

/* A mount point the sandbox needs inside the root; parent NULL means the root itself. */
typedef struct MountPoint {
	const char *parent;
	const char *name;
	bool dir;
	bool created;
} MountPoint;

static char *const empty_env[] = {NULL};

static int openat2_in_root(int rootfd, const char *path, uint64_t flags, uint64_t resolve)
{
	struct open_how how = {.flags = flags | O_CLOEXEC, .resolve = resolve};

	return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
}

/* "/proc/self/fd/N" without allocating or calling printf (used between clone and exec). */
static void fd_path(char buf[32], int fd)
{
	char digits[12];
	size_t n = 0, i = 0;

	do {
		digits[n++] = (char)('0' + fd % 10);
		fd /= 10;
	} while (fd > 0 && n < sizeof(digits));
	memcpy(buf, "/proc/self/fd/", 14);
	i = 14;
	while (n > 0)
		buf[i++] = digits[--n];
	buf[i] = 0;
}

/* ---- child side: between clone and exec, no allocation and no output ---- */

static _Noreturn void child_fail(const ChildCtx *c, int error, const char *step, const char *arg)
{
	ChildFailure f = {.error = error, .step = step, .arg = arg};

	if (write(c->report_fd, &f, sizeof(f)) < 0)
		_exit(126);
	_exit(127);
}

/* Mounts onto path inside the root; strict refuses any symlink on the way. */
static int mount_in_root(int rootfd, const char *path, bool strict, const char *src,
			 const char *fstype, unsigned long flags, const char *data)
{
	uint64_t resolve = RESOLVE_IN_ROOT | (strict ? RESOLVE_NO_SYMLINKS : 0);
	int fd = openat2_in_root(rootfd, path, O_PATH, resolve);
	char buf[32];
	int r, e;

	if (fd < 0)
		return -errno;
	fd_path(buf, fd);
	r = mount(src, buf, fstype, flags, data);
	e = errno;
	close(fd);
	return r < 0 ? -e : 0;
}

static int set_readonly_in_root(int rootfd, const char *path, bool recursive)
{
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
	int fd = openat2_in_root(rootfd, path, O_PATH, RESOLVE_IN_ROOT);
	int r, e;

	if (fd < 0)
		return -errno;
	r = mount_setattr(fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr,
			  sizeof(attr));
	e = errno;
	close(fd);
	return r < 0 ? -e : 0;
}

static void child_setup_dev(const ChildCtx *c, int rootfd)
{
	/* name in /dev, host node, path in the root */
	static const char *const devices[][3] = {
	    {"null", "/dev/null", "dev/null"},		{"zero", "/dev/zero", "dev/zero"},
	    {"full", "/dev/full", "dev/full"},		{"random", "/dev/random", "dev/random"},
	    {"urandom", "/dev/urandom", "dev/urandom"}, {"tty", "/dev/tty", "dev/tty"},
	};
	static const char *const links[][2] = {
	    {"fd", "/proc/self/fd"},	   {"stdin", "/proc/self/fd/0"},
	    {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
	    {"ptmx", "pts/ptmx"},
	};
	char buf[32];
	int r, devfd;

	r = mount_in_root(rootfd, "dev", true, "tmpfs", "tmpfs", MS_NOSUID | MS_NOEXEC,
			  "mode=0755,size=65536k");
	if (r < 0)
		child_fail(c, -r, "mount tmpfs on", "/dev");
	devfd = openat2_in_root(rootfd, "dev", O_PATH | O_DIRECTORY,
				RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
	if (devfd < 0)
		child_fail(c, errno, "open", "/dev");
	for (size_t i = 0; i < ELEMENTSOF(devices); i++) {
		int fd =
		    openat(devfd, devices[i][0], O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
		if (fd < 0)
			child_fail(c, errno, "create", devices[i][1]);
		fd_path(buf, fd);
		if (mount(devices[i][1], buf, NULL, MS_BIND, NULL) < 0)
			child_fail(c, errno, "bind host device", devices[i][1]);
		close(fd);
		/* The node is the host's inode: a read-only mount keeps chmod, chown and utimes
		 * away from it (EROFS) while reads and writes of the device still work. */
		r = set_readonly_in_root(rootfd, devices[i][2], false);
		if (r < 0)
			child_fail(c, -r, "make read-only", devices[i][1]);
	}
	for (size_t i = 0; i < ELEMENTSOF(links); i++)
		if (symlinkat(links[i][1], devfd, links[i][0]) < 0)
			child_fail(c, errno, "symlink", links[i][0]);
	if (mkdirat(devfd, "pts", 0755) < 0 || mkdirat(devfd, "shm", 01777) < 0)
		child_fail(c, errno, "mkdir in", "/dev");
	/* A private devpts instance is optional: without it only ptys are missing. */
	(void)mount_in_root(rootfd, "dev/pts", true, "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
			    "newinstance,ptmxmode=0666,mode=0620");
	r = mount_in_root(rootfd, "dev/shm", true, "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=1777,size=65536k");
	if (r < 0)
		child_fail(c, -r, "mount tmpfs on", "/dev/shm");
	close(devfd);
}

/* Docker's masked paths (moby oci/defaults.go): kernel memory, keys, timer and scheduler
 * internals and firmware tables are hidden behind /dev/null (files) or an empty read-only tmpfs
 * (directories). Paths are relative to the root; missing ones are skipped. */
static const char *const masked_proc_paths[] = {
    "proc/acpi",       "proc/asound",	   "proc/kcore",       "proc/keys", "proc/latency_stats",
    "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi",
};
static const char *const masked_sys_paths[] = {"sys/firmware", "sys/devices/virtual/powercap"};

/* Kernel tunables and triggers stay readable but not writable. */
static const char *const readonly_proc_paths[] = {
    "proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger",
};

static void child_mask_path(const ChildCtx *c, int rootfd, const char *path)
{
	int fd = openat2_in_root(rootfd, path, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
	struct stat st;
	char buf[32];
	int r;

	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0 || fstat(fd, &st) < 0)
		child_fail(c, errno, "open", path);
	fd_path(buf, fd);
	if (S_ISDIR(st.st_mode))
		r = mount("tmpfs", buf, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "size=0,mode=0555");
	else
		r = mount("/dev/null", buf, NULL, MS_BIND, NULL);
	if (r < 0)
		child_fail(c, errno, "mask", path);
	close(fd);
}

static void child_readonly_path(const ChildCtx *c, int rootfd, const char *path)
{
	int fd = openat2_in_root(rootfd, path, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
	char buf[32];
	int r;

	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0)
		child_fail(c, errno, "open", path);
	fd_path(buf, fd);
	r = mount(buf, buf, NULL, MS_BIND | MS_REC, NULL);
	if (r < 0)
		child_fail(c, errno, "bind read-only", path);
	close(fd);
	r = set_readonly_in_root(rootfd, path, true);
	if (r < 0)
		child_fail(c, -r, "make read-only", path);
}

static void child_confine_proc(const ChildCtx *c, int rootfd)
{
	for (size_t i = 0; i < ELEMENTSOF(masked_proc_paths); i++)
		child_mask_path(c, rootfd, masked_proc_paths[i]);
	for (size_t i = 0; i < ELEMENTSOF(readonly_proc_paths); i++)
		child_readonly_path(c, rootfd, readonly_proc_paths[i]);
}

static void child_setup_sys(const ChildCtx *c, int rootfd)
{
	/* Optional: a kernel or outer sandbox may forbid it; then the image gets no /sys. */
	if (mount_in_root(rootfd, "sys", true, "/sys", NULL, MS_BIND | MS_REC, NULL) < 0)
		return;
	if (set_readonly_in_root(rootfd, "sys", true) < 0) {
		int fd = openat2_in_root(rootfd, "sys", O_PATH, RESOLVE_IN_ROOT);
		char buf[32];

		if (fd >= 0) {
			fd_path(buf, fd);
			umount2(buf, MNT_DETACH);
			close(fd);
		}
		return;
	}
	for (size_t i = 0; i < ELEMENTSOF(masked_sys_paths); i++)
		child_mask_path(c, rootfd, masked_sys_paths[i]);
}

static void child_bind_file(const ChildCtx *c, int rootfd, const char *host, const char *path,
			    const char *shown)
{
	int r, fd = openat2_in_root(rootfd, path, O_PATH, RESOLVE_IN_ROOT);

	if (fd < 0 && errno == ENOENT)
		return; /* a symlink dangling inside the root: leave the image's choice alone */
	if (fd < 0)
		child_fail(c, errno, "open", shown);
	close(fd);
	r = mount_in_root(rootfd, path, false, host, NULL, MS_BIND, NULL);
	if (r < 0)
		child_fail(c, -r, "bind", host);
	r = set_readonly_in_root(rootfd, path, false);
	if (r < 0)
		child_fail(c, -r, "make read-only", shown);
}

static void child_loopback_up(const ChildCtx *c)
{
	struct ifreq ifr = {0};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		child_fail(c, errno, "socket", NULL);
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		child_fail(c, errno, "get flags of", "lo");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		child_fail(c, errno, "bring up", "lo");
	close(s);
}

static int child_setup_root(const ChildCtx *c)
{
	const ContainerSpec *s = c->spec;
	int r, rootfd;

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		child_fail(c, errno, "make mounts private", NULL);
	/* pivot_root needs a mount point; the bind also hides the parent's view of the root. */
	if (mount(c->rootfs, c->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
		child_fail(c, errno, "bind root", c->rootfs);
	rootfd = open(c->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		child_fail(c, errno, "open root", c->rootfs);
	r = mount_in_root(rootfd, "proc", true, "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  NULL);
	if (r < 0)
		child_fail(c, -r, "mount proc on", "/proc");
	child_confine_proc(c, rootfd);
	child_setup_dev(c, rootfd);
	child_setup_sys(c, rootfd);
	if (s->hosts_path)
		child_bind_file(c, rootfd, s->hosts_path, "etc/hosts", "/etc/hosts");
	if (s->resolv_path)
		child_bind_file(c, rootfd, s->resolv_path, "etc/resolv.conf", "/etc/resolv.conf");
	return rootfd;
}

static void child_pivot(const ChildCtx *c, int rootfd)
{
	/* pivot_root(".", ".") stacks the old root on the new one; unmounting "." drops it. */
	if (fchdir(rootfd) < 0)
		child_fail(c, errno, "chdir", c->rootfs);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		child_fail(c, errno, "pivot_root", c->rootfs);
	if (umount2(".", MNT_DETACH) < 0)
		child_fail(c, errno, "unmount old root", NULL);
	if (chdir("/") < 0 || chdir(c->cwd) < 0)
		child_fail(c, errno, "chdir", c->cwd);
	close(rootfd);
	/* The old root is gone, so a working directory outside the new one has no path: the
	 * kernel reports it as "(unreachable)...", which glibc turns into ENOENT. */
	char buf[PATH_MAX];
	if (!getcwd(buf, sizeof(buf)))
		child_fail(c, errno, "working directory outside the root", c->cwd);
	if (buf[0] != '/')
		child_fail(c, EXDEV, "working directory outside the root", c->cwd);
}

/* The step gets a user namespace of its own, nested in kiln's and mapping only the container
 * range: under a root build kiln's namespace also maps host ids (root among them) so that kiln
 * can read and write the user's files, and none of them may be within a step's reach (a step's
 * root would otherwise own the host's /dev nodes and the QEMU binary behind /proc/PID/exe).
 * Unshared last, after the mounts, so that they belong to kiln's namespace and stay locked. */
static void child_enter_userns(const ChildCtx *c)
{
	char b = 0;

	if (unshare(CLONE_NEWUSER) < 0)
		child_fail(c, errno, "create the step's user namespace", NULL);
	if (write(c->userns_fd, &b, 1) != 1 || read(c->userns_fd, &b, 1) != 1 || b != 1)
		child_fail(c, EIO, "wait for the step's id maps", NULL);
	close(c->userns_fd);
}

static void child_set_ids(const ChildCtx *c)
{
	const ContainerSpec *s = c->spec;

	/* Under a single-id map setgroups is denied; with no groups asked for but the primary
	 * gid (which setresgid sets anyway) that is fine. */
	bool only_primary = c->n_groups == 0 || (c->n_groups == 1 && c->groups[0] == s->gid);
	if (setgroups(c->n_groups, c->groups) < 0 && !(errno == EPERM && only_primary))
		child_fail(c, errno, "setgroups", NULL);
	if (setresgid(s->gid, s->gid, s->gid) < 0)
		child_fail(c, errno, "setresgid", NULL);
	if (setresuid(s->uid, s->uid, s->uid) < 0)
		child_fail(c, errno, "setresuid", NULL);
}

/* Closes every fd >= 3 but keep (the report pipe, which is close-on-exec). */
static void child_close_fds(const ChildCtx *c, int keep)
{
	int r = 0;

	if (keep > 3)
		r = close_range(3, (unsigned)keep - 1, 0);
	if (r == 0)
		r = close_range((unsigned)keep + 1, ~0U, 0);
	if (r < 0 && errno != ENOSYS)
		child_fail(c, errno, "close inherited fds", NULL);
	if (r < 0) { /* kernel < 5.9 */
		long max = sysconf(_SC_OPEN_MAX);
		for (int fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
			if (fd != keep)
				(void)close(fd);
	}
}

static void child_prepare_exec(const ChildCtx *c)
{
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigset_t none;
	int null_fd;

	/* The credential change above cleared any parent-death signal: set it now. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		child_fail(c, errno, "set parent death signal", NULL);
	null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0)
		child_fail(c, errno, "open", "/dev/null");
	if (dup2(null_fd, 0) < 0 || dup2(c->out_fd, 1) < 0 || dup2(c->err_fd, 2) < 0)
		child_fail(c, errno, "set up stdio", NULL);
	/* Nothing of kiln's reaches the command: not even fds a library opened without
	 * O_CLOEXEC. */
	child_close_fds(c, c->report_fd);
	sigemptyset(&none);
	sigemptyset(&dfl.sa_mask);
	for (int sig = 1; sig < _NSIG; sig++)
		(void)sigaction(sig, &dfl, NULL);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		child_fail(c, errno, "reset signal mask", NULL);
}

/* Hands the parent its net namespace and waits for it to be connected, then joins the step's
 * cgroup and sets the ulimits: last before the fds go, so the command is the first thing the
 * limits hold. */
static void child_before_exec(const ChildCtx *c)
{
	const char *what = NULL;
	ssize_t n;
	char go = 0;
	int r;

	if (c->net_fd >= 0) {
		close(c->net_peer);
		if ((r = network_child_send_netns(c->net_fd)) < 0)
			child_fail(c, -r, "send the network namespace", NULL);
		do
			n = read(c->net_fd, &go, 1);
		while (n < 0 && errno == EINTR);
		if (n != 1)
			child_fail(c, ENETDOWN, "wait for the network", NULL);
	}
	r = limits_child_apply(c->spec->limits, c->spec->cgroup, &what);
	if (r < 0)
		child_fail(c, -r, "apply resource limit", what);
}

/* execvpe() without allocation: argv[0] is looked up in the container's PATH. */
static _Noreturn void child_exec(const ChildCtx *c)
{
	char *const *argv = c->spec->argv;
	const char *file = argv[0], *p = c->path;
	size_t flen = strlen(file);
	int error = ENOENT;
	char buf[PATH_MAX];

	if (strchr(file, '/')) {
		execve(file, argv, c->envp);
		child_fail(c, errno, "exec", file);
	}
	while (*p) {
		const char *end = strchrnul(p, ':');
		size_t dlen = (size_t)(end - p);

		if (dlen == 0) {
			buf[0] = '.';
			dlen = 1;
		} else if (dlen + flen + 2 <= sizeof(buf)) {
			memcpy(buf, p, dlen);
		}
		if (dlen + flen + 2 <= sizeof(buf)) {
			buf[dlen] = '/';
			memcpy(buf + dlen + 1, file, flen + 1);
			execve(buf, argv, c->envp);
			if (errno == EACCES)
				error = EACCES;
			else if (errno != ENOENT && errno != ENOTDIR)
				child_fail(c, errno, "exec", file);
		}
		p = *end ? end + 1 : end;
	}
	child_fail(c, error, "exec", file);
}

static _Noreturn void child_main(const ChildCtx *c)
{
	int rootfd, r;

	close(c->userns_peer);
	if (setsid() < 0)
		child_fail(c, errno, "setsid", NULL);
	rootfd = child_setup_root(c);
	if (sethostname(c->hostname, strlen(c->hostname)) < 0)
		child_fail(c, errno, "set hostname", c->hostname);
	if (c->spec->network_none)
		child_loopback_up(c);
	child_pivot(c, rootfd);
	child_enter_userns(c);
	/* Confinement like Docker's default: the bounding set is cut while CAP_SETPCAP is still
	 * there (a new user namespace gives a full one), the other sets after the id switch (which
	 * empties them for a non-root uid). */
	if ((r = caps_plan_drop_bounding(c->caps)) < 0)
		child_fail(c, -r, "drop capabilities from the bounding set", NULL);
	child_set_ids(c);
	if ((r = caps_plan_apply(c->caps)) < 0)
		child_fail(c, -r, "set capabilities", NULL);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(c, errno, "set no_new_privs", NULL);
	child_before_exec(c);
	child_prepare_exec(c);
	/* Last, so that only the exec itself (and a failure report) runs under the filter. */
	if ((r = seccomp_filter_load(c->seccomp)) < 0)
		child_fail(c, -r, "load the seccomp filter", NULL);
	child_exec(c);
}

/* ---- parent side ---- */

static int point_parent_fd(int rootfd, const MountPoint *m)
{
	if (!m->parent)
		return fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
	return openat2_in_root(rootfd, m->parent, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT);
}

static int points_create(int rootfd, MountPoint *v, size_t n, KilnError **err)
{
	for (size_t i = 0; i < n; i++) {
		_cleanup_close_ int pfd = point_parent_fd(rootfd, &v[i]);
		struct stat st;

		if (pfd < 0)
			return kiln_error_errno(err, errno, "open '/%s' in root", v[i].parent);
		if (fstatat(pfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			continue;
		if (errno != ENOENT)
			return kiln_error_errno(err, errno, "stat '%s' in root", v[i].name);
		if (v[i].dir) {
			if (mkdirat(pfd, v[i].name, 0755) < 0)
				return kiln_error_errno(err, errno, "create '%s' in root",
							v[i].name);
		} else {
			int fd = openat(pfd, v[i].name,
					O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
			if (fd < 0)
				return kiln_error_errno(err, errno, "create '%s' in root",
							v[i].name);
			close(fd);
		}
		v[i].created = true;
	}
	return 0;
}

static void points_remove(int rootfd, MountPoint *v, size_t n)
{
	for (size_t i = n; i-- > 0;) {
		_cleanup_close_ int pfd = -1;
		struct stat st;

		if (!v[i].created)
			continue;
		pfd = point_parent_fd(rootfd, &v[i]);
		if (pfd < 0)
			continue;
		/* Only what is still empty goes: the command may have filled it on purpose. */
		if (v[i].dir)
			(void)unlinkat(pfd, v[i].name, AT_REMOVEDIR);
		else if (fstatat(pfd, v[i].name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			 S_ISREG(st.st_mode) && st.st_size == 0)
			(void)unlinkat(pfd, v[i].name, 0);
	}
}

/* Moves both fds to >= 3, so dup2() onto 0-2 in the child cannot clobber them. */
static int fds_high(int fds[2], int *ret_a, int *ret_b, KilnError **err)
{
	for (int i = 0; i < 2; i++) {
		if (fds[i] < 3) {
			int nfd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
			int e = errno;
			close(fds[i]);
			fds[i] = nfd;
			if (nfd < 0) {
				if (i == 0)
					close(fds[1]);
				else
					close(fds[0]);
				return kiln_error_errno(err, e, "move an fd above 2");
			}
		}
	}
	*ret_a = fds[0];
	*ret_b = fds[1];
	return 0;
}

/* A CLOEXEC pipe whose ends are >= 3. */
static int pipe_high(int *ret_r, int *ret_w, KilnError **err)
{
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) < 0)
		return kiln_error_errno(err, errno, "pipe");
	return fds_high(fds, ret_r, ret_w, err);
}

/* A CLOEXEC stream socket pair whose ends are >= 3. */
static int socketpair_high(int *ret_a, int *ret_b, KilnError **err)
{
	int fds[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
		return kiln_error_errno(err, errno, "socketpair");
	return fds_high(fds, ret_a, ret_b, err);
}

static void pump_output(const ContainerSpec *spec, int out_fd, int err_fd)
{
	struct pollfd p[2] = {{.fd = out_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
	char buf[16384];

	while (p[0].fd >= 0 || p[1].fd >= 0) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		for (int i = 0; i < 2; i++) {
			if (p[i].fd < 0 || !p[i].revents)
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof(buf));
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				p[i].fd = -1;
				continue;
			}
			if (spec->output)
				spec->output(spec->output_userdata, i + 1, buf, (size_t)n);
		}
	}
}

static const char *env_path(char *const *envp)
{
	for (size_t i = 0; envp && envp[i]; i++)
		if (strncmp(envp[i], "PATH=", 5) == 0)
			return envp[i] + 5;
	return DEFAULT_PATH;
}

static int failure_to_error(const ContainerSpec *spec, const ChildFailure *f, KilnError **err)
{
	const char *cmd = spec->argv[0];

	if (f->step && strcmp(f->step, "setresuid") == 0)
		return kiln_error_errno(err, f->error, "run '%s': switch to uid %u", cmd,
					(unsigned)spec->uid);
	if (f->step && strcmp(f->step, "setresgid") == 0)
		return kiln_error_errno(err, f->error, "run '%s': switch to gid %u", cmd,
					(unsigned)spec->gid);
	if (f->arg)
		return kiln_error_errno(err, f->error, "run '%s': %s '%s'", cmd, f->step, f->arg);
	return kiln_error_errno(err, f->error, "run '%s': %s", cmd, f->step ? f->step : "setup");
}

static int wait_child(pid_t pid, int *ret_status, double *ret_cpu_s, KilnError **err)
{
	struct rusage ru = {0};
	int status;

	while (wait4(pid, &status, 0, &ru) < 0)
		if (errno != EINTR)
			return kiln_error_errno(err, errno, "wait for container");
	if (ret_cpu_s)
		*ret_cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	*ret_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return 0;
}

/* Attaches pasta to the namespace the child sends and lets the child go on. When that fails the
 * child is killed, and its own setup failure, if it reported one, is the error that explains
 * more. */
static int connect_network(ChildCtx *ctx, pid_t pid, int rep_r, int sock, NetworkStack **ret,
			   KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_close_ int nsfd = network_recv_netns(sock, &e);
	ChildFailure f = {0};
	char go = 1;
	int status;

	if (nsfd >= 0 && network_stack_start(nsfd, ret, &e) >= 0 &&
	    send(sock, &go, 1, MSG_NOSIGNAL) == 1)
		return 0;
	kill(pid, SIGKILL);
	wait_child(pid, &status, NULL, NULL);
	if (read(rep_r, &f, sizeof(f)) == sizeof(f))
		return failure_to_error(ctx->spec, &f, err);
	return kiln_error(err, e ? e->code : errno, "run '%s': private network: %s",
			  ctx->spec->argv[0], e ? e->message : strerror(errno));
}

/* The parent's half of child_enter_userns(): when the child asks, writes its id maps and lets
 * it go on. A child that fails before asking closes the socket: its report says why. */
static int parent_map_child(pid_t pid, int sock, KilnError **err)
{
	char b;
	ssize_t n;

	do
		n = read(sock, &b, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		return 0;
	int r = userns_map_container(pid, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "map the step's user namespace");
	b = 1;
	(void)!write(sock, &b, 1); /* a child gone meanwhile is reported by wait */
	return 0;
}

static int spawn_and_wait(ChildCtx *ctx, int *ret_status, KilnError **err)
{
	_cleanup_close_ int rep_r = -1, rep_w = -1, out_r = -1, out_w = -1, err_r = -1, err_w = -1;
	_cleanup_close_ int net_parent = -1, net_child = -1;
	_cleanup_(network_stack_freep) NetworkStack *net = NULL;
	_cleanup_close_ int us_parent = -1, us_child = -1;
	unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
	ChildFailure f = {0};
	ssize_t n;
	int r, status;
	pid_t pid;

	if ((r = pipe_high(&rep_r, &rep_w, err)) < 0 || (r = pipe_high(&out_r, &out_w, err)) < 0 ||
	    (r = pipe_high(&err_r, &err_w, err)) < 0 ||
	    (r = socketpair_high(&us_parent, &us_child, err)) < 0)
		return r;
	if (ctx->spec->network_private && (r = socketpair_high(&net_parent, &net_child, err)) < 0)
		return r;
	if (ctx->spec->network_none || ctx->spec->network_private)
		flags |= CLONE_NEWNET;
	ctx->net_fd = net_child;
	ctx->net_peer = net_parent;
	ctx->report_fd = rep_w;
	ctx->out_fd = out_w;
	ctx->err_fd = err_w;
	ctx->userns_fd = us_child;
	ctx->userns_peer = us_parent;
	fflush(stdout);
	fflush(stderr);
	/* fork semantics (no new stack): the child runs on a private copy of this one. */
	pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid < 0)
		return kiln_error_errno(err, errno, "create container namespaces");
	if (pid == 0)
		child_main(ctx);
	closep(&rep_w);
	rep_w = -1;
	closep(&out_w);
	out_w = -1;
	closep(&err_w);
	err_w = -1;
	closep(&us_child);
	us_child = -1;
	if ((r = parent_map_child(pid, us_parent, err)) < 0) {
		kill(pid, SIGKILL);
		wait_child(pid, &status, NULL, NULL);
		return r;
	}
	closep(&net_child);
	net_child = -1;
	if (net_parent >= 0 && (r = connect_network(ctx, pid, rep_r, net_parent, &net, err)) < 0)
		return r;
	do
		n = read(rep_r, &f, sizeof(f));
	while (n < 0 && errno == EINTR);
	if (n != 0) {
		wait_child(pid, &status, NULL, NULL);
		if (n != sizeof(f))
			return kiln_error(err, EIO, "run '%s': sandbox setup failed",
					  ctx->spec->argv[0]);
		return failure_to_error(ctx->spec, &f, err);
	}
	pump_output(ctx->spec, out_r, err_r);
	return wait_child(pid, ret_status, ctx->spec->ret_cpu_seconds, err);
}

/* The supplementary groups as given, with the primary gid first when they lack it (as docker
 * and runc do: files of the primary group stay accessible after a setgroups()). */
static gid_t *groups_with_primary(const ContainerSpec *spec, size_t *ret_n)
{
	gid_t *v = xcalloc(spec->n_groups + 1, sizeof(gid_t));
	size_t n = 0;
	bool has_primary = false;

	for (size_t i = 0; i < spec->n_groups; i++)
		has_primary = has_primary || spec->groups[i] == spec->gid;
	if (!has_primary)
		v[n++] = spec->gid;
	for (size_t i = 0; i < spec->n_groups; i++)
		v[n++] = spec->groups[i];
	*ret_n = n;
	return v;
}

int container_run(const ContainerSpec *spec, int *ret_status, KilnError **err)
{
	MountPoint points[] = {
	    {NULL, "proc", true, false},    {NULL, "dev", true, false},
	    {NULL, "sys", true, false},	    {NULL, "etc", true, false},
	    {"etc", "hosts", false, false}, {"etc", "resolv.conf", false, false},
	};
	size_t n_points = 3;
	_cleanup_free_ char *rootfs = NULL;
	_cleanup_free_ gid_t *groups = NULL;
	const SeccompFilter *filter = NULL;
	_cleanup_(caps_plan_freep) CapsPlan *caps = NULL;
	_cleanup_close_ int rootfd = -1;
	size_t n_groups = 0;
	int r, status = 0;

	if (!spec || !spec->rootfs || !spec->argv || !spec->argv[0])
		return kiln_error(err, EINVAL, "run: no root or no command");
	if ((r = seccomp_filter_shared(&filter, err)) < 0 ||
	    (r = caps_plan_new(spec->uid, &caps, err)) < 0)
		return kiln_error_wrap(err, -r, "run '%s'", spec->argv[0]);
	groups = groups_with_primary(spec, &n_groups);
	rootfs = realpath(spec->rootfs, NULL);
	if (!rootfs)
		return kiln_error_errno(err, errno, "run: resolve root '%s'", spec->rootfs);
	rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return kiln_error_errno(err, errno, "run: open root '%s'", rootfs);
	if (spec->hosts_path || spec->resolv_path) {
		n_points = 4;
		if (spec->hosts_path)
			points[n_points++] = points[4];
		if (spec->resolv_path)
			points[n_points++] = points[5];
	}

	ChildCtx ctx = {
	    .spec = spec,
	    .rootfs = rootfs,
	    .cwd = spec->cwd && *spec->cwd ? spec->cwd : "/",
	    .hostname = spec->hostname ? spec->hostname : "kiln",
	    .path = env_path(spec->envp),
	    .envp = spec->envp ? spec->envp : empty_env,
	    .groups = groups,
	    .n_groups = n_groups,
	    .seccomp = filter,
	    .caps = caps,
	};
	r = points_create(rootfd, points, n_points, err);
	if (r >= 0)
		r = spawn_and_wait(&ctx, &status, err);
	points_remove(rootfd, points, n_points);
	if (r < 0)
		return r;
	*ret_status = status;
	return 0;
}
