/* Sandbox tests: user namespaces (full, subordinate and single id maps), overlayfs, containers.
 *
 * Runs as root; the rootless paths run in forked children that switch to the user "kilntest"
 * (created with `useradd -m kilntest` when missing, which gives it a subordinate id range) or
 * to a uid without a passwd entry (no range). Containers run a static busybox from the Debian
 * package busybox-static, cached in /tmp/kiln-test-cache ($KILN_TEST_BUSYBOX overrides). */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "sandbox/container.h"
#include "sandbox/doctor.h"
#include "sandbox/limits.h"
#include "sandbox/network.h"
#include "sandbox/overlay.h"
#include "sandbox/userns.h"
#include "nstest.h"
#include "tap.h"

#define NOBODY_UID 54321 /* no passwd entry, so no subordinate range */

static const char *busybox_root; /* lower dir: bin/busybox + applet links, nothing else */
static bool have_root;

/* ---- helpers ---- */

static const RunAs AS_SINGLE = {.user = TEST_USER, .single = true};
static const RunAs AS_NOBODY = {.uid = NOBODY_UID};

static void write_text(const char *path, const char *text)
{
	_cleanup_close_ int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);

	CHECK(fd >= 0);
	if (fd >= 0)
		CHECK(write_all(fd, text, strlen(text)) == 0);
}

static int count_fds(void)
{
	_cleanup_closedir_ DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (d && readdir(d))
		n++;
	return n;
}

static bool dir_is_empty(const char *path)
{
	_cleanup_closedir_ DIR *d = opendir(path);
	struct dirent *de;

	if (!d)
		return false;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			printf("#   '%s' contains '%s'\n", path, de->d_name);
			return false;
		}
	return true;
}

/* ---- subordinate id file parsing ---- */

TEST(subid_range_lookup)
{
	uint32_t start = 0, count = 0;

	write_text("subuid", "# comment\n"
			     "other:200000:65536\n"
			     "alice:100000:0\n"
			     "alice:300000:1000\n"
			     "alice:400000:65536\n"
			     "1234:500000:10\n"
			     "broken line\n");
	CHECK_EQ_INT(userns_find_subid_range("subuid", "alice", 1000, &start, &count, NULL), 1);
	CHECK_EQ_INT(start, 300000);
	CHECK_EQ_INT(count, 1000);
	CHECK_EQ_INT(userns_find_subid_range("subuid", "bob", 1234, &start, &count, NULL), 1);
	CHECK_EQ_INT(start, 500000);
	CHECK_EQ_INT(userns_find_subid_range("subuid", "bob", 99, &start, &count, NULL), 0);
	CHECK_EQ_INT(userns_find_subid_range("subuid", NULL, 99, &start, &count, NULL), 0);
	CHECK_EQ_INT(userns_find_subid_range("missing", "alice", 1, &start, &count, NULL), 0);
}

TEST(subid_hint_names_the_fix)
{
	CHECK(strstr(userns_subid_hint(), "usermod --add-subuids 100000-165535") != NULL);
	CHECK(strstr(userns_subid_hint(), "uidmap") != NULL);
}

/* ---- network modes and the private network's resolv.conf ---- */

TEST(network_modes)
{
	NetworkMode m = NETWORK_NONE;

	CHECK(network_mode_parse("default", NETWORK_HOST, &m) == 0 && m == NETWORK_HOST);
	CHECK(network_mode_parse("private", NETWORK_HOST, &m) == 0 && m == NETWORK_PRIVATE);
	CHECK(network_mode_parse("host", NETWORK_NONE, &m) == 0 && m == NETWORK_HOST);
	CHECK(network_mode_parse("none", NETWORK_HOST, &m) == 0 && m == NETWORK_NONE);
	CHECK(network_mode_parse("bridge", NETWORK_HOST, &m) == -EINVAL && m == NETWORK_NONE);
	CHECK_EQ_STR(network_mode_name(NETWORK_PRIVATE), "private");
	CHECK_EQ_STR(network_mode_name(NETWORK_HOST), "host");
	CHECK_EQ_STR(network_mode_name(NETWORK_NONE), "none");
}

TEST(network_resolv_conf)
{
	_cleanup_free_ char *none = network_resolv_conf(NULL);
	_cleanup_free_ char *resolved = network_resolv_conf("# systemd-resolved\n"
							    "nameserver 127.0.0.53\n"
							    "options edns0 trust-ad\n"
							    "search corp.example\n");
	_cleanup_free_ char *many = network_resolv_conf("nameserver 10.0.0.2\nnameserver ::1\n"
							"nameserver 10.0.0.3\nnameserver 10.0.0.4\n"
							"domain example.org\nsortlist 10.0.0.0\n");

	CHECK_EQ_STR(none, "nameserver 169.254.1.1\n");
	/* a loopback resolver is the host's own: only pasta's forwarder reaches it */
	CHECK_EQ_STR(resolved, "nameserver 169.254.1.1\noptions edns0 trust-ad\n"
			       "search corp.example\n");
	CHECK_EQ_STR(many, "nameserver 169.254.1.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"
			   "domain example.org\n");
}

/* ---- userns_enter ---- */

static void body_root(void)
{
	IdMapInfo info, again;
	char *reason = (char *)"unset";
	int fds_before = count_fds();
	struct stat st;

	enter_userns(&info, &reason);
	CHECK_EQ_INT(info.kind, IDMAP_ROOT);
	CHECK(reason == NULL);
	CHECK(info.n_uids >= 65536 && info.n_gids >= 65536);
	CHECK(info.host_uid_base > 0 && info.host_gid_base > 0);
	CHECK_EQ_INT(info.owner_uid, info.n_uids);
	CHECK_EQ_INT(info.owner_gid, info.n_gids);
	CHECK_EQ_INT(info.outer_uid, 0);
	CHECK_EQ_INT(getuid(), 0);
	CHECK_EQ_INT(count_fds(), fds_before);
	/* Inside 0 is the range's first host id; host root is the owner id, above the range. */
	_cleanup_free_ char *map = read_text("/proc/self/uid_map");
	char want[64];
	snprintf(want, sizeof(want), "%u", info.host_uid_base);
	CHECK(map && strstr(map, want));
	write_text("f", "x");
	CHECK(chown("f", 1000, 1000) == 0);
	CHECK(stat("/", &st) == 0 && st.st_uid == info.owner_uid);
	/* A second call is a no-op that reports the same map. */
	enter_userns(&again, NULL);
	CHECK_EQ_INT(again.kind, IDMAP_ROOT);
	CHECK_EQ_INT(again.host_uid_base, info.host_uid_base);
}

TEST(userns_enter_as_root_maps_a_range)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_root), 0);
}

/* The reservation for root builds: a free, aligned range, recorded once, kept on later calls. */
TEST(userns_reserve_subid_range)
{
	_cleanup_error_ KilnError *e = NULL;
	uint32_t start = 0, again = 0;

	write_text("subuid", "alice:100000:65536\nkiln-x:1073741824:70000\nbob:1073872896:10");
	CHECK(userns_reserve_subid_range("subuid", "kiln", 65536, 1073741824u, &start, &e) == 0);
	/* 2^30 is taken up to 2^30+70000, and bob sits at 2^30 + 2*65536: the next free slot */
	CHECK_EQ_INT(start, 1073741824u + 3 * 65536);
	CHECK(userns_reserve_subid_range("subuid", "kiln", 65536, 1073741824u, &again, &e) == 0);
	CHECK_EQ_INT(again, start);
	_cleanup_free_ char *text = read_text("subuid");
	CHECK(text && strstr(text, "bob:1073872896:10\nkiln:1073938432:65536\n"));
	/* a missing file is created */
	CHECK(userns_reserve_subid_range("new", "kiln", 65536, 1073741824u, &start, &e) == 0);
	CHECK_EQ_INT(start, 1073741824u);
}

static void body_subid(void)
{
	IdMapInfo info;
	_cleanup_free_ char *reason = NULL;
	struct passwd *pw = getpwnam(TEST_USER);
	uid_t outer = getuid();
	int fds_before = count_fds();

	enter_userns(&info, &reason);
	if (reason)
		printf("#   reason: %s\n", reason);
	CHECK_EQ_INT(info.kind, IDMAP_SUBID);
	CHECK(reason == NULL);
	CHECK_EQ_INT(info.outer_uid, pw ? pw->pw_uid : 0);
	CHECK_EQ_INT(info.outer_uid, outer);
	CHECK_EQ_INT(info.n_uids, 65537);
	CHECK_EQ_INT(info.n_gids, 65537);
	CHECK_EQ_INT(getuid(), 0);
	CHECK_EQ_INT(getgid(), 0);
	CHECK_EQ_INT(count_fds(), fds_before);
	write_text("f", "x");
	CHECK(chown("f", 1000, 1000) == 0);
	CHECK(chown("f", 65536, 65536) == 0);
	errno = 0;
	CHECK(chown("f", 65537, 0) < 0 && errno == EINVAL);
}

TEST(userns_enter_with_subids)
{
	CHECK_EQ_INT(run_as(&AS_USER, body_subid), 0);
}

static void body_single(void)
{
	IdMapInfo info;
	_cleanup_free_ char *reason = NULL;

	enter_userns(&info, &reason);
	CHECK_EQ_INT(info.kind, IDMAP_SINGLE);
	CHECK(reason && strstr(reason, "KILN_USERNS"));
	CHECK_EQ_INT(info.n_uids, 1);
	CHECK_EQ_INT(getuid(), 0);
	write_text("f", "x");
	CHECK(chown("f", 0, 0) == 0);
	errno = 0;
	CHECK(chown("f", 1000, 1000) < 0);
	CHECK_EQ_INT(errno, EINVAL);
	_cleanup_free_ char *sg = read_text("/proc/self/setgroups");
	CHECK(sg && strncmp(sg, "deny", 4) == 0);
}

TEST(userns_enter_single_forced)
{
	CHECK_EQ_INT(run_as(&AS_SINGLE, body_single), 0);
}

/* Root forcing a single id gets the first id of its range, never host root itself. */
static void body_root_single(void)
{
	IdMapInfo info;
	_cleanup_free_ char *reason = NULL;
	struct stat st;

	setenv("KILN_USERNS", "single", 1);
	enter_userns(&info, &reason);
	CHECK_EQ_INT(info.kind, IDMAP_SINGLE);
	CHECK_EQ_INT(info.n_uids, 1);
	CHECK(info.host_uid_base > 0);
	CHECK_EQ_INT(info.owner_uid, 1);
	_cleanup_free_ char *map = read_text("/proc/self/uid_map");
	unsigned in = 9, out = 0, count = 0;
	CHECK(map && sscanf(map, "%u %u %u", &in, &out, &count) == 3);
	CHECK(in == 0 && out == info.host_uid_base && count == 1);
	CHECK(stat("/", &st) == 0 && st.st_uid == 1);
}

TEST(userns_enter_single_as_root_is_not_host_root)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_root_single), 0);
}

static void body_fallback(void)
{
	IdMapInfo info;
	_cleanup_free_ char *reason = NULL;

	enter_userns(&info, &reason);
	CHECK_EQ_INT(info.kind, IDMAP_SINGLE);
	CHECK(reason && strstr(reason, "no subordinate uid range"));
	CHECK_EQ_INT(info.outer_uid, NOBODY_UID);
	CHECK_EQ_INT(getuid(), 0);
}

TEST(userns_enter_without_range_falls_back)
{
	CHECK_EQ_INT(run_as(&AS_NOBODY, body_fallback), 0);
}

static void body_exit_42(void)
{
	IdMapInfo info;

	enter_userns(&info, NULL);
	fflush(stdout);
	_exit(42);
}

static void body_killed(void)
{
	IdMapInfo info;

	enter_userns(&info, NULL);
	fflush(stdout);
	raise(SIGTERM);
	_exit(0);
}

static void body_signal_forwarded(void)
{
	IdMapInfo info;

	enter_userns(&info, NULL);
	/* The outer parent forwards SIGTERM: kill it, expect our own death by SIGTERM. */
	kill(getppid(), SIGTERM);
	sleep(10);
	_exit(0);
}

TEST(userns_parent_propagates_exit_status)
{
	CHECK_EQ_INT(run_as(&AS_USER, body_exit_42), 42);
	CHECK_EQ_INT(run_as(&AS_USER, body_killed), 128 + SIGTERM);
	CHECK_EQ_INT(run_as(&AS_USER, body_signal_forwarded), 128 + SIGTERM);
}

/* ---- overlay ---- */

static void make_layers(void)
{
	CHECK(mkdir("layers", 0755) == 0);
	CHECK(mkdir("layers/l1", 0755) == 0);
	CHECK(mkdir("layers/l2", 0755) == 0);
	write_text("layers/l1/a", "a1");
	write_text("layers/l1/b", "b1");
	write_text("layers/l2/b", "b2");
	write_text("layers/l2/c", "c2");
	CHECK(mkdir("upper", 0755) == 0);
	CHECK(mkdir("work", 0755) == 0);
	CHECK(mkdir("merged", 0755) == 0);
}

static void body_overlay(void)
{
	char *const lowers[] = {"l2", "l1", "we:ird,na\\me", NULL};
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *cwd_before = getcwd(NULL, 0), *cwd_after = NULL;
	IdMapInfo info;
	struct stat st;

	make_layers();
	CHECK(mkdir("layers/we:ird,na\\me", 0755) == 0);
	write_text("layers/we:ird,na\\me/w", "w");
	enter_userns(&info, NULL);
	if (overlay_mount("layers", lowers, "upper", "work", "merged", &e) < 0) {
		printf("#   %s\n", e->message);
		CHECK(0);
		return;
	}
	cwd_after = getcwd(NULL, 0);
	CHECK_EQ_STR(cwd_after, cwd_before);
	_cleanup_free_ char *a = read_text("merged/a"), *b = read_text("merged/b"),
			    *c = read_text("merged/c");
	CHECK_EQ_STR(a, "a1");
	CHECK_EQ_STR(b, "b2"); /* the first lower is the topmost */
	CHECK_EQ_STR(c, "c2");
	CHECK(access("merged/w", F_OK) == 0); /* ',' ':' '\\' in a layer name are escaped */
	CHECK(unlink("merged/a") == 0);
	CHECK(access("merged/a", F_OK) < 0);
	CHECK(lstat("upper/a", &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
	write_text("merged/new", "n");
	CHECK(access("upper/new", F_OK) == 0);
	CHECK(overlay_umount("merged", NULL) == 0);
	CHECK(access("merged/b", F_OK) < 0);
	CHECK(access("layers/l1/a", F_OK) == 0);
}

TEST(overlay_two_lowers_and_whiteout)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_overlay), 0);
	CHECK_EQ_INT(run_as(&AS_USER, body_overlay), 0);
}

static void body_overlay_no_lowers(void)
{
	IdMapInfo info;

	CHECK(mkdir("upper", 0755) == 0);
	CHECK(mkdir("work", 0755) == 0);
	CHECK(mkdir("merged", 0755) == 0);
	enter_userns(&info, NULL);
	CHECK(overlay_mount(NULL, NULL, "upper", "work", "merged", NULL) == 0);
	CHECK(dir_is_empty("merged"));
	write_text("merged/x", "x");
	CHECK(access("upper/x", F_OK) == 0);
	CHECK(dir_is_empty(".empty-lower"));
	CHECK(overlay_umount("merged", NULL) == 0);
}

TEST(overlay_without_lowers)
{
	CHECK_EQ_INT(run_as(&AS_USER, body_overlay_no_lowers), 0);
}

static void body_overlay_errors(void)
{
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL, *e3 = NULL;
	_cleanup_strv_free_ char **many = NULL;
	char name[200];
	IdMapInfo info;

	make_layers();
	enter_userns(&info, NULL);
	memset(name, 'x', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	for (int i = 0; i < 30; i++)
		CHECK(strv_push(&many, name) == 0);
	CHECK_EQ_INT(overlay_mount("layers", many, "upper", "work", "merged", &e), -E2BIG);
	CHECK(e && strstr(e->message, "one page"));
	char *const missing[] = {"nope", NULL};
	CHECK(overlay_mount("layers", missing, "upper", "work", "merged", &e2) < 0);
	CHECK(e2 && strstr(e2->message, "merged"));
	CHECK(overlay_mount("layers", missing, "no-upper", "work", "merged", &e3) == -ENOENT);
	CHECK(e3 && strstr(e3->message, "no-upper"));
	CHECK(overlay_umount("merged", NULL) < 0);
}

TEST(overlay_errors)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_overlay_errors), 0);
}

/* ---- containers ---- */

/* Runs `sh -c script` in the merged root; returns container_run's result. */
static int sh(const char *script, ContainerSpec *base, Output *o, int *status, KilnError **err)
{
	char *const argv[] = {"sh", "-c", (char *)script, NULL};
	ContainerSpec spec = *base;

	memset(o, 0, sizeof(*o));
	spec.argv = argv;
	spec.output = collect;
	spec.output_userdata = o;
	*status = -1;
	return container_run(&spec, status, err);
}

#define SH_OK(script, spec, o, expect_status)                                                      \
	do {                                                                                       \
		_cleanup_error_ KilnError *_e = NULL;                                              \
		int _st;                                                                           \
		if (sh(script, spec, o, &_st, &_e) < 0) {                                          \
			printf("#   %s: %s\n", script, _e->message);                               \
			CHECK(0);                                                                  \
		} else {                                                                           \
			CHECK_EQ_INT(_st, expect_status);                                          \
		}                                                                                  \
	} while (0)

/* A forked server on the host's 127.0.0.1 that answers "hi" to every connection; its port in
 * *ret_port. */
static pid_t loopback_server(int *ret_port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	_cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	pid_t pid;

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	*ret_port = ntohs(a.sin_port);
	pid = fork();
	if (pid == 0) {
		for (;;) {
			int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0 && write(c, "hi\n", 3) < 0)
				_exit(1);
			close(c);
		}
	}
	return pid;
}

/* A private network: its own interface and default route from pasta, the host's loopback out of
 * reach (reachable from the host network, so the probe can tell), pasta gone afterwards. */
static void private_network_checks(ContainerSpec *spec)
{
	_cleanup_error_ KilnError *probe = NULL;
	ContainerSpec pnet = *spec;
	char script[256];
	int port = 0;
	Output o;

	pnet.network_private = true;
	if (network_probe(&probe) < 0) {
		_cleanup_error_ KilnError *e = NULL;
		int st;
		printf("#   no private network here: %s\n", probe->message);
		CHECK(strstr(probe->message, "pasta"));
		CHECK(sh("true", &pnet, &o, &st, &e) < 0);
		CHECK(e && strstr(e->message, "private network"));
		return;
	}
	SH_OK("ip -o link | grep -vc ': lo:'; ip route | grep -c '^default'", &pnet, &o, 0);
	CHECK_EQ_STR(o.out, "1\n1\n");
	pid_t server = loopback_server(&port);
	CHECK(server > 0);
	snprintf(script, sizeof(script), "busybox nc -w 2 127.0.0.1 %d </dev/null || echo no",
		 port);
	SH_OK(script, spec, &o, 0);
	CHECK_EQ_STR(o.out, "hi\n");
	SH_OK(script, &pnet, &o, 0);
	CHECK_EQ_STR(o.out, "no\n");
	kill(server, SIGKILL);
	CHECK(waitpid(server, NULL, 0) == server);
	/* pasta was this process's child and has been reaped. */
	CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
}

/* ulimits reach the command; a step cgroup is joined (as root: a cgroup of the host's v2 root,
 * removed again) */
static void limits_checks(ContainerSpec *spec)
{
	RunLimits l = {0};
	ContainerSpec lim = *spec;
	Output o;

	CHECK(limits_add_ulimit(&l, "nofile=100:200", NULL) == 0);
	CHECK(limits_add_ulimit(&l, "fsize=4096", NULL) == 0);
	lim.limits = &l;
	/* not the last command: pid 1 would be head itself, which SIGXFSZ cannot kill */
	SH_OK("ulimit -n; ulimit -Hn; head -c 8192 /dev/zero > /big; echo $?", &lim, &o, 0);
	CHECK_EQ_STR(o.out, "100\n200\n153\n");
}

static void container_checks(const IdMapInfo *info)
{
	ContainerSpec spec = {.rootfs = "merged", .envp = test_env, .hostname = "kbox"};
	Output o;

	SH_OK("exit 3", &spec, &o, 3);
	SH_OK("echo hello; echo oops >&2", &spec, &o, 0);
	CHECK_EQ_STR(o.out, "hello\n");
	CHECK_EQ_STR(o.err, "oops\n");
	SH_OK("echo $$", &spec, &o, 0);
	CHECK_EQ_STR(o.out, "1\n");
	SH_OK("test -r /proc/self/status && readlink /proc/self/exe", &spec, &o, 0);
	CHECK_EQ_STR(o.out, "/bin/busybox\n");
	SH_OK("echo x > /dev/null && head -c 4 /dev/zero | wc -c", &spec, &o, 0);
	CHECK_EQ_STR(o.out, "4\n");
	SH_OK("hostname", &spec, &o, 0);
	CHECK_EQ_STR(o.out, "kbox\n");
	SH_OK("cat", &spec, &o, 0); /* stdin is /dev/null: returns at once */
	CHECK_EQ_STR(o.out, "");
	/* Only 0-2 reach the command (ls itself holds one more for the directory). */
	SH_OK("ls /proc/self/fd | wc -l", &spec, &o, 0);
	CHECK_EQ_STR(o.out, "4\n");
	SH_OK("kill -TERM $$; echo still", &spec, &o, 0); /* pid 1 ignores unhandled signals */
	CHECK_EQ_STR(o.out, "still\n");

	time_t t0 = time(NULL);
	SH_OK("sleep 30 & echo started", &spec, &o, 0); /* the orphan dies with pid 1 */
	CHECK(time(NULL) - t0 < 10);

	ContainerSpec cwd = spec;
	cwd.cwd = "/bin";
	SH_OK("pwd", &cwd, &o, 0);
	CHECK_EQ_STR(o.out, "/bin\n");

	ContainerSpec user = spec;
	user.uid = 1000;
	user.gid = 1000;
	if (info->kind != IDMAP_SINGLE) {
		gid_t groups[] = {1001, 1002};
		user.groups = groups;
		user.n_groups = 2;
		SH_OK("id -u; id -g; id -G", &user, &o, 0);
		CHECK_EQ_STR(o.out, "1000\n1000\n1000 1001 1002\n");
	} else {
		_cleanup_error_ KilnError *e = NULL;
		int st;
		CHECK(sh("id -u", &user, &o, &st, &e) == -EINVAL);
		CHECK(e && strstr(e->message, "switch to"));
	}

	ContainerSpec net = spec;
	net.network_none = true;
	SH_OK("grep -c : /proc/net/dev; ip link show lo", &net, &o, 0);
	CHECK(strncmp(o.out, "1\n", 2) == 0);
	CHECK(strstr(o.out, "lo:") && strstr(o.out, ",UP"));

	private_network_checks(&spec);
	limits_checks(&spec);

	write_text("hosts", "10.1.2.3 kiln-test-host\n");
	write_text("resolv", "nameserver 10.9.9.9\n");
	ContainerSpec files = spec;
	files.hosts_path = "hosts";
	files.resolv_path = "resolv";
	SH_OK("cat /etc/hosts /etc/resolv.conf; echo x > /etc/hosts", &files, &o, 1);
	CHECK_EQ_STR(o.out, "10.1.2.3 kiln-test-host\nnameserver 10.9.9.9\n");
	CHECK(strstr(o.err, "Read-only") != NULL);

	/* What the image has is kept; what was created only for the run is gone. */
	SH_OK("mkdir -p /made/here && touch /made/here/f", &files, &o, 0);
	CHECK(access("upper/made/here/f", F_OK) == 0);
	CHECK(access("upper/proc", F_OK) < 0);
	CHECK(access("upper/dev", F_OK) < 0);
	CHECK(access("upper/sys", F_OK) < 0);
	CHECK(access("upper/etc", F_OK) < 0);
	CHECK(access("merged/etc", F_OK) < 0);

	_cleanup_error_ KilnError *e = NULL;
	char *const bad[] = {"nosuchbinary", NULL};
	ContainerSpec missing = spec;
	int st = -1;
	missing.argv = bad;
	CHECK_EQ_INT(container_run(&missing, &st, &e), -ENOENT);
	CHECK(e && strstr(e->message, "'nosuchbinary'"));
	CHECK_EQ_INT(st, -1);
}

static void body_container_in_userns(void)
{
	IdMapInfo info;
	char *const lowers[] = {(char *)busybox_root, NULL};
	_cleanup_error_ KilnError *e = NULL;

	/* Made inside, as kiln makes its work dirs: as root, a dir made outside is host root's,
	 * which a step's root does not own. */
	enter_userns(&info, NULL);
	CHECK(mkdir("upper", 0755) == 0);
	CHECK(mkdir("work", 0755) == 0);
	CHECK(mkdir("merged", 0755) == 0);
	if (overlay_mount("/", lowers, "upper", "work", "merged", &e) < 0) {
		printf("#   %s\n", e->message);
		CHECK(0);
		return;
	}
	container_checks(&info);
	CHECK(overlay_umount("merged", NULL) == 0);
}

TEST(container_as_root)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_container_in_userns), 0);
}

TEST(container_rootless_subid)
{
	CHECK_EQ_INT(run_as(&AS_USER, body_container_in_userns), 0);
}

TEST(container_rootless_single)
{
	CHECK_EQ_INT(run_as(&AS_SINGLE, body_container_in_userns), 0);
}

static void body_container_errors(void)
{
	IdMapInfo info;
	_cleanup_error_ KilnError *e1 = NULL, *e2 = NULL, *e3 = NULL;
	char *const argv[] = {"sh", "-c", "true", NULL};
	ContainerSpec spec = {.rootfs = "merged", .argv = argv, .envp = test_env};
	int st;

	enter_userns(&info, NULL);
	CHECK(mkdir("merged", 0755) == 0);
	/* No binary at all in the root. */
	CHECK_EQ_INT(container_run(&spec, &st, &e1), -ENOENT);
	CHECK(e1 && strstr(e1->message, "exec 'sh'"));
	/* A missing working directory is named. */
	_cleanup_error_ KilnError *e4 = NULL;
	spec.cwd = "/nope";
	CHECK_EQ_INT(container_run(&spec, &st, &e4), -ENOENT);
	CHECK(e4 && strstr(e4->message, "chdir '/nope'"));
	spec.cwd = NULL;
	/* /proc as a symlink is refused. */
	CHECK(symlink("/", "merged/proc") == 0);
	CHECK_EQ_INT(container_run(&spec, &st, &e2), -ELOOP);
	CHECK(e2 && strstr(e2->message, "/proc"));
	spec.rootfs = "does-not-exist";
	CHECK_EQ_INT(container_run(&spec, &st, &e3), -ENOENT);
}

TEST(container_setup_errors)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_container_errors), 0);
}

/* ---- doctor ---- */

static void body_doctor(void)
{
	DoctorCheck *v = NULL;
	size_t n = 0;
	bool root = geteuid() == 0;

	bool tun = access("/dev/net/tun", R_OK | W_OK) == 0;

	CHECK(doctor_run(&v, &n, NULL) == 0);
	CHECK_EQ_INT(n, 8);
	for (size_t i = 0; i < n; i++) {
		printf("#   %s: %s: %s%s%s\n", v[i].name, v[i].ok ? "ok" : "FAIL", v[i].detail,
		       v[i].hint ? " -- " : "", v[i].hint ? v[i].hint : "");
		CHECK(v[i].ok == (v[i].hint == NULL));
		/* Only --memory/--pids-limit need cgroup delegation: this host may lack it. */
		CHECK(v[i].optional == (strcmp(v[i].name, "cgroup limits") == 0));
		if (strcmp(v[i].name, "network") == 0 && !tun)
			CHECK(!v[i].ok && strstr(v[i].hint, "chmod 0666 /dev/net/tun"));
		else if (!v[i].optional)
			CHECK(v[i].ok);
	}
	CHECK(n > 0 && strstr(v[0].detail, root ? "root" : "rootless"));
	doctor_checks_free(v, n);
}

static void body_doctor_no_range(void)
{
	DoctorCheck *v = NULL;
	size_t n = 0;

	CHECK(doctor_run(&v, &n, NULL) == 0);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].name, "subordinate ids") == 0) {
			CHECK(!v[i].ok);
			CHECK(v[i].hint && strstr(v[i].hint, "usermod"));
		}
		/* The probes still work with a single-id map. */
		if (strcmp(v[i].name, "overlayfs") == 0 || strcmp(v[i].name, "binfmt_misc") == 0)
			CHECK(v[i].ok);
	}
	doctor_checks_free(v, n);
}

TEST(doctor_reports)
{
	CHECK_EQ_INT(run_as(&AS_ROOT, body_doctor), 0);
	CHECK_EQ_INT(run_as(&AS_USER, body_doctor), 0);
	CHECK_EQ_INT(run_as(&AS_NOBODY, body_doctor_no_range), 0);
}

/* ---- setup ---- */

/* Builds CACHE_DIR/bbroot once: bin/busybox and links for the applets the tests use. */
static const char *prepare_busybox(void)
{
	static const char *const applets[] = {"sh",	  "cat",   "echo", "id",   "ls",      "wc",
					      "hostname", "sleep", "head", "grep", "ip",      "pwd",
					      "mkdir",	  "touch", "kill", "test", "readlink"};
	const char *root = CACHE_DIR "/bbroot";
	const char *src = getenv("KILN_TEST_BUSYBOX");
	char cmd[1024];

	if (access(CACHE_DIR "/bbroot/bin/busybox", X_OK) == 0)
		return root;
	if (mkdir_p(CACHE_DIR, 0755, NULL) < 0 || chmod(CACHE_DIR, 0755) < 0)
		return NULL;
	if (!src) {
		if (!fetch_busybox("", CACHE_DIR "/busybox"))
			return NULL;
		src = CACHE_DIR "/busybox";
	}
	snprintf(cmd, sizeof(cmd),
		 "set -e; t=$(mktemp -d %s/bbroot.XXXXXX); mkdir $t/bin; cp '%s' $t/bin/busybox; "
		 "chmod -R a+rX $t; mv -T $t %s 2>/dev/null || rm -rf $t",
		 CACHE_DIR, src, root);
	if (system(cmd) != 0)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(applets); i++) {
		_cleanup_free_ char *link = xasprintf("%s/bin/%s", root, applets[i]);
		if (symlink("busybox", link) < 0 && errno != EEXIST)
			return NULL;
	}
	return access(CACHE_DIR "/bbroot/bin/busybox", X_OK) == 0 ? root : NULL;
}

int main(void)
{
	have_root = geteuid() == 0;
	if (!have_root)
		tap_skip_all("needs root (it switches to the user '" TEST_USER "' itself)");
	if (!userns_possible())
		tap_skip_all("user namespaces are not available");
	ensure_test_user();
	busybox_root = prepare_busybox();
	if (!busybox_root)
		tap_skip_all("no static busybox (apt-get download busybox-static failed; set "
			     "KILN_TEST_BUSYBOX=/path/to/busybox)");

	RUN(subid_range_lookup);
	RUN(subid_hint_names_the_fix);
	RUN(network_modes);
	RUN(network_resolv_conf);
	RUN(userns_enter_as_root_maps_a_range);
	RUN(userns_reserve_subid_range);
	RUN(userns_enter_with_subids);
	RUN(userns_enter_single_forced);
	RUN(userns_enter_single_as_root_is_not_host_root);
	RUN(userns_enter_without_range_falls_back);
	RUN(userns_parent_propagates_exit_status);
	RUN(overlay_two_lowers_and_whiteout);
	RUN(overlay_without_lowers);
	RUN(overlay_errors);
	RUN(container_as_root);
	RUN(container_rootless_subid);
	RUN(container_rootless_single);
	RUN(container_setup_errors);
	RUN(doctor_reports);
	return tap_done();
}
