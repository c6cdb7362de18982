#include "doctor.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "limits.h"
#include "network.h"
#include "overlay.h"
#include "userns.h"

typedef struct CheckList {
	DoctorCheck *v;
	size_t n;
} CheckList;

/* Takes ownership of detail. */
static void checks_add(CheckList *l, const char *name, bool ok, char *detail, const char *hint)
{
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = (DoctorCheck){
	    .name = xstrdup(name),
	    .ok = ok,
	    .detail = detail ? detail : xstrdup(""),
	    .hint = ok || !hint ? NULL : xstrdup(hint),
	};
}

void doctor_checks_free(DoctorCheck *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].name);
		free(v[i].detail);
		free(v[i].hint);
	}
	free(v);
}

/* -1 when the file is absent or unreadable. */
static long read_sysctl(const char *path)
{
	_cleanup_free_ char *data = NULL;

	if (read_file_at(AT_FDCWD, path, 64, &data, NULL, NULL) < 0)
		return -1;
	return strtol(data, NULL, 10);
}

/* Runs fn in a forked child; fn writes a message to fd on failure and returns nonzero.
 * Returns 0 when the child succeeded, else 1 with *ret_msg describing what failed. */
static int probe_in_child(int (*fn)(int fd, void *arg), void *arg, char **ret_msg)
{
	_cleanup_close_ int rfd = -1, wfd = -1;
	_cleanup_free_ char *msg = NULL;
	int fds[2], status;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		*ret_msg = xasprintf("pipe: %s", strerror(errno));
		return 1;
	}
	rfd = fds[0];
	wfd = fds[1];
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		*ret_msg = xasprintf("fork: %s", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		closep(&rfd);
		_exit(fn(wfd, arg) ? 1 : 0);
	}
	closep(&wfd);
	wfd = -1;
	if (read_all_fd(rfd, 4096, &msg, NULL, NULL) < 0)
		msg = NULL;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			break;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	*ret_msg = msg && *msg ? TAKE_PTR(msg) : xasprintf("probe failed (status %d)", status);
	return 1;
}

static int report(int fd, const char *what, int error)
{
	dprintf(fd, "%s: %s", what, strerror(error));
	return 1;
}

static int probe_unshare(int fd, void *arg)
{
	if (unshare(CLONE_NEWUSER) < 0)
		return report(fd, "unshare(CLONE_NEWUSER)", errno);
	return 0;
}

static void check_userns(CheckList *l, bool root)
{
	long max = read_sysctl("/proc/sys/user/max_user_namespaces");
	long aa = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
	_cleanup_free_ char *msg = NULL;

	if (max == 0) {
		checks_add(l, "user namespaces", false, xstrdup("user.max_user_namespaces is 0"),
			   "enable them: sysctl -w user.max_user_namespaces=28633");
		return;
	}
	if (aa == 1 && !root) {
		checks_add(l, "user namespaces", false,
			   xstrdup("kernel.apparmor_restrict_unprivileged_userns is 1"),
			   "allow them: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, "
			   "or give kiln an AppArmor profile with the 'userns' permission");
		return;
	}
	if (probe_in_child(probe_unshare, NULL, &msg)) {
		checks_add(l, "user namespaces", false, TAKE_PTR(msg),
			   "the kernel or an outer sandbox (container, seccomp) forbids user "
			   "namespaces: run kiln on the host or allow unshare(CLONE_NEWUSER)");
		return;
	}
	checks_add(l, "user namespaces", true,
		   max > 0 ? xasprintf("allowed (max_user_namespaces %ld)", max)
			   : xstrdup("allowed"),
		   NULL);
}

/* Root builds run their steps on root's own subordinate range, else on the one kiln reserves
 * (the first build as root adds it); never as host root. */
static void check_root_range(CheckList *l)
{
	static const char *const who[] = {"root", USERNS_RESERVED_NAME};
	uint32_t us = 0, uc = 0, gs = 0, gc = 0;

	for (size_t i = 0; i < ELEMENTSOF(who); i++) {
		uid_t id = i == 0 ? 0 : (uid_t)-1;
		if (userns_find_subid_range("/etc/subuid", who[i], id, &us, &uc, NULL) > 0 &&
		    userns_find_subid_range("/etc/subgid", who[i], id, &gs, &gc, NULL) > 0) {
			checks_add(l, "subordinate ids", true,
				   xasprintf("root builds run steps as host uids %u-%u, gids "
					     "%u-%u ('%s' in /etc/subuid, /etc/subgid)",
					     us, us + uc - 1, gs, gs + gc - 1, who[i]),
				   NULL);
			return;
		}
	}
	checks_add(l, "subordinate ids", true,
		   xstrdup("root builds run steps on an unprivileged id range: the first one adds "
			   "'" USERNS_RESERVED_NAME ":START:65536' to /etc/subuid and /etc/subgid"),
		   NULL);
}

static void check_subids(CheckList *l, uid_t uid, const char *user)
{
	uint32_t us = 0, uc = 0, gs = 0, gc = 0;
	int ru, rg;

	if (uid == 0) {
		check_root_range(l);
		return;
	}
	ru = userns_find_subid_range("/etc/subuid", user, uid, &us, &uc, NULL);
	rg = userns_find_subid_range("/etc/subgid", user, uid, &gs, &gc, NULL);
	if (ru <= 0 || rg <= 0) {
		checks_add(l, "subordinate ids", false,
			   xasprintf("no %s range for '%s' in %s", ru <= 0 ? "uid" : "gid",
				     user ? user : "?", ru <= 0 ? "/etc/subuid" : "/etc/subgid"),
			   "as root: usermod --add-subuids 100000-165535 --add-subgids "
			   "100000-165535 USER (without it only your own id exists in builds)");
		return;
	}
	checks_add(l, "subordinate ids", true,
		   xasprintf("uids %u-%u, gids %u-%u", us, us + uc - 1, gs, gs + gc - 1), NULL);
}

static bool helper_usable(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	if ((st.st_mode & S_ISUID) && st.st_uid == 0)
		return true;
	return getxattr(path, "security.capability", NULL, 0) > 0;
}

static void check_idmap_helpers(CheckList *l, bool root)
{
	static const char *const names[] = {"newuidmap", "newgidmap"};
	_cleanup_free_ char *found = NULL;

	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		_cleanup_free_ char *path = NULL;

		if (!userns_find_helper(names[i], &path)) {
			checks_add(
			    l, "newuidmap/newgidmap", root,
			    xasprintf(root ? "%s not found (not needed as root)" : "%s not found",
				      names[i]),
			    "install package uidmap (Debian/Ubuntu) or shadow-utils");
			return;
		}
		if (!helper_usable(path)) {
			checks_add(
			    l, "newuidmap/newgidmap", root,
			    xasprintf("%s is neither setuid root nor has file capabilities", path),
			    "reinstall package uidmap, or: chmod u+s /usr/bin/newuidmap "
			    "/usr/bin/newgidmap");
			return;
		}
		char *joined = found ? xasprintf("%s, %s", found, path) : xstrdup(path);
		free(found);
		found = joined;
	}
	checks_add(l, "newuidmap/newgidmap", true, TAKE_PTR(found), NULL);
}

static int enter_for_probe(int fd)
{
	_cleanup_error_ KilnError *e = NULL;
	IdMapInfo info;

	if (userns_enter(&info, NULL, &e) < 0) {
		dprintf(fd, "%s",
			e && e->message ? e->message : "entering a user namespace failed");
		return 1;
	}
	return 0;
}

static int probe_overlay(int fd, void *arg)
{
	const char *dir = arg;
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *lower = xasprintf("%s/l", dir), *upper = xasprintf("%s/u", dir),
			    *work = xasprintf("%s/w", dir), *merged = xasprintf("%s/m", dir),
			    *file = xasprintf("%s/l/f", dir), *gone = xasprintf("%s/m/f", dir),
			    *wh = xasprintf("%s/u/f", dir);
	char *const lowers[] = {"l", NULL};
	struct stat st;
	int r = 0;

	if (enter_for_probe(fd))
		return 1;
	if (mkdir(lower, 0755) < 0 || mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0 ||
	    mkdir(merged, 0755) < 0)
		return report(fd, "prepare test dirs", errno);
	_cleanup_close_ int ffd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	if (ffd < 0)
		return report(fd, "prepare test file", errno);
	if (overlay_mount(dir, lowers, upper, work, merged, &e) < 0) {
		dprintf(fd, "%s", e->message);
		return 1;
	}
	if (unlink(gone) < 0)
		r = report(fd, "delete a lower file through the overlay", errno);
	else if (lstat(wh, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(0, 0))
		r = report(fd, "no 0/0 whiteout device in the upper dir", ENOTSUP);
	overlay_umount(merged, NULL);
	/* Inside the namespace root owns what overlay made (work/work is mode 000). */
	rm_rf_at(AT_FDCWD, dir, NULL);
	return r;
}

static int probe_binfmt(int fd, void *arg)
{
	const char *dir = arg;
	_cleanup_free_ char *status = xasprintf("%s/status", dir);
	int r = 0;

	if (enter_for_probe(fd))
		return 1;
	if (mount("binfmt_misc", dir, "binfmt_misc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return report(fd, "mount binfmt_misc in a user namespace", errno);
	if (access(status, R_OK) < 0)
		r = report(fd, "read binfmt_misc status", errno);
	umount2(dir, MNT_DETACH);
	return r;
}

static void check_in_temp_dir(CheckList *l, const char *name, int (*fn)(int, void *),
			      const char *ok_detail, const char *hint)
{
	char tmpl[] = "/tmp/kiln-doctor-XXXXXX";
	_cleanup_free_ char *msg = NULL;

	if (!mkdtemp(tmpl)) {
		checks_add(l, name, false, xasprintf("create temp dir: %s", strerror(errno)),
			   "make /tmp writable");
		return;
	}
	if (probe_in_child(fn, tmpl, &msg))
		checks_add(l, name, false, TAKE_PTR(msg), hint);
	else
		checks_add(l, name, true, xstrdup(ok_detail), NULL);
	rm_rf_at(AT_FDCWD, tmpl, NULL);
}

static bool kernel_at_least(int want_major, int want_minor, char **ret_release)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (uname(&u) < 0)
		return false;
	*ret_release = xstrdup(u.release);
	if (sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return false;
	return major > want_major || (major == want_major && minor >= want_minor);
}

static void check_binfmt(CheckList *l)
{
	_cleanup_free_ char *release = NULL;

	if (!kernel_at_least(6, 7, &release)) {
		checks_add(l, "binfmt_misc", false,
			   xasprintf("kernel %s has no per-user-namespace binfmt_misc (needs 6.7)",
				     release ? release : "?"),
			   "foreign architectures need the host's registration: install "
			   "qemu-user-static and binfmt-support (or upgrade to Linux >= 6.7)");
		return;
	}
	check_in_temp_dir(l, "binfmt_misc", probe_binfmt,
			  "a private binfmt_misc instance can be mounted in a user namespace",
			  "foreign architectures need the host's registration: install "
			  "qemu-user-static and binfmt-support");
}

static int probe_network(int fd, void *arg)
{
	_cleanup_error_ KilnError *e = NULL;

	if (enter_for_probe(fd))
		return 1;
	if (network_probe(&e) < 0) {
		dprintf(fd, "%s", e && e->message ? e->message : "pasta failed");
		return 1;
	}
	return 0;
}

static void check_network(CheckList *l)
{
	_cleanup_free_ char *msg = NULL;

	if (!probe_in_child(probe_network, NULL, &msg)) {
		checks_add(l, "network", true,
			   xstrdup("pasta gives RUN steps a private network (no host loopback, "
				   "DNS through " NETWORK_DNS_ADDRESS ")"),
			   NULL);
		return;
	}
	checks_add(l, "network", false, TAKE_PTR(msg),
		   strstr(msg ? msg : "", "/dev/net/tun")
		       ? "as root: chmod 0666 /dev/net/tun (udev hosts make it 0666; without it "
			 "RUN steps fall back to the host network)"
		       : "install the package passt (pasta); without it RUN steps fall back to "
			 "the host network");
}

static void check_cgroup(CheckList *l)
{
	RunLimits want = {.memory = 1, .pids = 1};
	_cleanup_error_ KilnError *e = NULL;

	if (limits_cgroup_check(&want, &e) < 0) {
		checks_add(l, "cgroup limits", false, xstrdup(e->message),
			   "needed only by --memory and --pids-limit (see above)");
		l->v[l->n - 1].optional = true;
		return;
	}
	checks_add(l, "cgroup limits", true,
		   xstrdup("kiln's cgroup v2 is delegated with memory and pids: --memory and "
			   "--pids-limit work"),
		   NULL);
	l->v[l->n - 1].optional = true;
}

int doctor_run(DoctorCheck **ret, size_t *ret_n, KilnError **err)
{
	CheckList l = {0};
	uid_t uid = geteuid();
	struct passwd *pw = getpwuid(uid);
	_cleanup_free_ char *user = pw ? xstrdup(pw->pw_name) : NULL;

	checks_add(
	    &l, "privileges", true,
	    uid == 0
		? xstrdup("running as root: build steps still run as unprivileged host ids")
		: xasprintf("running as uid %u ('%s'): rootless", (unsigned)uid, user ? user : "?"),
	    NULL);
	check_userns(&l, uid == 0);
	check_subids(&l, uid, user);
	check_idmap_helpers(&l, uid == 0);
	check_in_temp_dir(&l, "overlayfs", probe_overlay,
			  "overlay with userxattr mounts in a user namespace; whiteouts work",
			  "needs Linux >= 5.11 with overlayfs; without it kiln uses its slower "
			  "copy-based snapshots");
	check_binfmt(&l);
	check_network(&l);
	check_cgroup(&l);
	*ret = l.v;
	*ret_n = l.n;
	return 0;
}
