/* Resource limits of RUN steps: docker's --ulimit, --memory and --pids-limit syntax, the checks
 * against kiln's own limits, the child's side (setrlimit, joining a step cgroup) and the cgroup
 * v2 discovery with its errors. Joining a real step cgroup runs as root only: it creates (and
 * removes) a child of this process's own cgroup v2. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "sandbox/limits.h"
#include "tap.h"

static int add(RunLimits *l, const char *spec)
{
	_cleanup_error_ KilnError *e = NULL;
	int r = limits_add_ulimit(l, spec, &e);

	if (r < 0)
		printf("#   '%s': %s\n", spec, e->message);
	return r;
}

TEST(ulimit_syntax)
{
	RunLimits l = {0};
	_cleanup_free_ char *s = NULL, *none = limits_ulimits_string(&l);

	CHECK(none == NULL);
	CHECK_EQ_INT(add(&l, "nofile=1024:2048"), 0);
	CHECK_EQ_INT(add(&l, "nproc=50"), 0);
	CHECK_EQ_INT(add(&l, "fsize=unlimited"), 0);
	CHECK_EQ_INT(add(&l, "core=0:-1"), 0);
	CHECK_EQ_INT(add(&l, "nofile=512:1024"), 0); /* the later one wins */
	CHECK_EQ_INT(l.n_ulimits, 4);
	s = limits_ulimits_string(&l);
	CHECK_EQ_STR(s, "core=0:-1,fsize=-1:-1,nofile=512:1024,nproc=50:50");
	CHECK_EQ_INT(l.ulimits[0].resource, RLIMIT_NOFILE);
	CHECK_EQ_INT(l.ulimits[0].soft, 512);
}

TEST(ulimit_errors_are_usage_errors)
{
	static const char *const bad[] = {
	    "nofile",
	    "=5",
	    "nofiles=5",
	    "nofile=",
	    "nofile=abc",
	    "nofile=5:abc",
	    "nofile=10:5",
	    "nofile=-5",
	    "nofile=1:2:3",
	    "NOFILE=5",
	    "nofile=+5",
	    "nofile=5 ",
	    "nofile=99999999999999999999",
	};
	RunLimits l = {0};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_error_ KilnError *e = NULL;
		CHECK(limits_add_ulimit(&l, bad[i], &e) < 0);
		CHECK(e && e->code == KILN_EUSAGE && strstr(e->message, bad[i]));
	}
	CHECK_EQ_INT(l.n_ulimits, 0);
}

TEST(memory_and_pids_syntax)
{
	static const char *const bad_mem[] = {"", "m", "-1", "1x", "5m", "12mb", "1.5g"};
	uint64_t v = 0;

	CHECK(limits_parse_memory("512m", &v, NULL) == 0 && v == 512ULL << 20);
	CHECK(limits_parse_memory("2G", &v, NULL) == 0 && v == 2ULL << 30);
	CHECK(limits_parse_memory("6291456", &v, NULL) == 0 && v == 6ULL << 20);
	CHECK(limits_parse_memory("8192k", &v, NULL) == 0 && v == 8ULL << 20);
	for (size_t i = 0; i < ELEMENTSOF(bad_mem); i++) {
		_cleanup_error_ KilnError *e = NULL;
		CHECK(limits_parse_memory(bad_mem[i], &v, &e) < 0);
		CHECK(e && e->code == KILN_EUSAGE);
	}
	CHECK(limits_parse_pids("100", &v, NULL) == 0 && v == 100);
	CHECK(limits_parse_pids("-1", &v, NULL) == 0 && v == 0);
	CHECK(limits_parse_pids("0", &v, NULL) == 0 && v == 0);
	CHECK(limits_parse_pids("x", &v, NULL) < 0);
	CHECK(limits_parse_pids("-5", &v, NULL) < 0);
}

/* In a child: a hard limit above the process's own is refused before any step runs. */
static int check_above_own(void)
{
	struct rlimit rl = {.rlim_cur = 64, .rlim_max = 128};
	_cleanup_error_ KilnError *e = NULL;
	RunLimits ok = {0}, high = {0};

	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || add(&ok, "nofile=32:128") < 0 ||
	    add(&high, "nofile=64:129") < 0)
		return 1;
	if (limits_check(&ok, NULL) < 0)
		return 2;
	if (limits_check(&high, &e) == 0 || !strstr(e->message, "nofile") ||
	    !strstr(e->message, "128"))
		return 3;
	return 0;
}

/* In a child: what limits_child_apply() set is what the process has. */
static int apply_in_child(void)
{
	RunLimits l = {0};
	struct rlimit rl;
	const char *what = NULL;

	if (add(&l, "nofile=77:99") < 0 || add(&l, "fsize=4096") < 0)
		return 1;
	if (limits_child_apply(&l, NULL, &what) < 0)
		return 2;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur != 77 || rl.rlim_max != 99)
		return 3;
	if (getrlimit(RLIMIT_FSIZE, &rl) < 0 || rl.rlim_cur != 4096 || rl.rlim_max != 4096)
		return 4;
	/* raising a hard limit needs CAP_SYS_RESOURCE; the failure names the limit */
	RunLimits up = {0};
	if (add(&up, "nofile=77:100") < 0)
		return 5;
	if (geteuid() != 0 &&
	    (limits_child_apply(&up, NULL, &what) != -EPERM || strcmp(what, "nofile") != 0))
		return 6;
	return 0;
}

static int in_child(int (*fn)(void))
{
	int status = 0;
	pid_t pid = fork();

	if (pid == 0)
		_exit(fn());
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		printf("#   child failed with status %d\n", status);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

TEST(ulimits_checked_and_applied)
{
	CHECK_EQ_INT(in_child(check_above_own), 0);
	CHECK_EQ_INT(in_child(apply_in_child), 0);
}

/* Without memory/pids no cgroup is needed; with them, either the host delegates a cgroup v2
 * with both controllers or the error says so and why. */
TEST(cgroup_discovery)
{
	RunLimits none = {0}, want = {.memory = 64 << 20, .pids = 100};
	_cleanup_error_ KilnError *e = NULL;
	LimitsCgroup *c = (LimitsCgroup *)&none;

	CHECK(limits_cgroup_open(&none, &c, NULL) == 0 && c == NULL);
	if (limits_cgroup_check(&want, &e) == 0) {
		printf("#   this host delegates a cgroup v2 with memory and pids to the test\n");
		return;
	}
	printf("#   %s\n", e->message);
	CHECK(strstr(e->message, "memory and pid limits need a delegated cgroup v2: "));
	CHECK(strstr(e->message, "Delegate=yes"));
}

/* The cgroup v2 directory of this process, or NULL. */
static char *own_cgroup_dir(void)
{
	_cleanup_free_ char *cg = NULL;
	char *line;

	if (read_file_at(AT_FDCWD, "/proc/self/cgroup", 1 << 16, &cg, NULL, NULL) < 0)
		return NULL;
	line = strstr(cg, "0::");
	if (!line)
		return NULL;
	line[strcspn(line, "\n")] = 0;
	/* the usual mounts of cgroup2: pure v2, or the unified part of a hybrid host */
	static const char *const mounts[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"};
	for (size_t i = 0; i < ELEMENTSOF(mounts); i++) {
		char *dir = xasprintf("%s%s", mounts[i], strcmp(line + 3, "/") ? line + 3 : "");
		_cleanup_free_ char *probe = xasprintf("%s/cgroup.procs", dir);
		if (access(probe, W_OK) == 0)
			return dir;
		free(dir);
	}
	return NULL;
}

/* A step cgroup is made in kiln's own cgroup, a process joins it, and it is gone afterwards. */
TEST(step_cgroup_join_and_remove)
{
	_cleanup_free_ char *dir = own_cgroup_dir();
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_(limits_cgroup_freep) LimitsCgroup *c = NULL;
	RunLimits none = {0};
	LimitsStep *s = NULL;
	const char *what = NULL;
	int status = 0;

	if (geteuid() != 0 || !dir) {
		printf("#   not checked: needs root and a writable cgroup v2\n");
		return;
	}
	if (limits_cgroup_open_dir(dir, &none, &c, &e) < 0 ||
	    limits_step_new(c, &none, &s, &e) < 0) {
		printf("#   %s\n", e->message);
		CHECK(0);
		return;
	}
	_cleanup_free_ char *path = xstrdup(limits_step_path(s));
	CHECK(strncmp(path, dir, strlen(dir)) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		_cleanup_free_ char *mine = NULL;
		if (limits_child_apply(NULL, s, &what) < 0)
			_exit(1);
		if (read_file_at(AT_FDCWD, "/proc/self/cgroup", 1 << 16, &mine, NULL, NULL) < 0)
			_exit(2);
		_exit(strstr(mine, strrchr(path, '/')) ? 0 : 3);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(!limits_step_oom_killed(s));
	limits_step_free(s);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
}

int main(void)
{
	RUN(ulimit_syntax);
	RUN(ulimit_errors_are_usage_errors);
	RUN(memory_and_pids_syntax);
	RUN(ulimits_checked_and_applied);
	RUN(cgroup_discovery);
	RUN(step_cgroup_join_and_remove);
	return tap_done();
}
