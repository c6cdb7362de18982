#include "limits.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

#define NEEDS_CGROUP "memory and pid limits need a delegated cgroup v2: "
#define DELEGATE_HINT                                                                              \
	"run kiln in a cgroup delegated to it, e.g. `systemd-run --user --scope -p Delegate=yes "  \
	"kiln build ...`"
#define MAIN_CHILD "kiln-main"

struct LimitsCgroup {
	char *dir;
	unsigned seq; /* atomic: step cgroup names */
};

struct LimitsStep {
	char *dir;
	int procs_fd;
};

/* docker's names (moby's ulimit table) */
static const struct {
	const char *name;
	int resource;
} ulimit_names[] = {
    {"core", RLIMIT_CORE},	   {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},	   {"fsize", RLIMIT_FSIZE},
    {"locks", RLIMIT_LOCKS},	   {"memlock", RLIMIT_MEMLOCK},
    {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
    {"nofile", RLIMIT_NOFILE},	   {"nproc", RLIMIT_NPROC},
    {"rss", RLIMIT_RSS},	   {"rtprio", RLIMIT_RTPRIO},
    {"rttime", RLIMIT_RTTIME},	   {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},
};

static const char *ulimit_name(int resource)
{
	for (size_t i = 0; i < ELEMENTSOF(ulimit_names); i++)
		if (ulimit_names[i].resource == resource)
			return ulimit_names[i].name;
	return "?";
}

static int parse_limit_value(const char *s, uint64_t *ret)
{
	char *end;

	if (strcmp(s, "-1") == 0 || strcmp(s, "unlimited") == 0) {
		*ret = LIMITS_UNLIMITED;
		return 0;
	}
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v >= LIMITS_UNLIMITED)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int ulimit_values(const char *spec, const char *values, Ulimit *u, KilnError **err)
{
	_cleanup_free_ char *copy = xstrdup(values);
	char *colon = strchr(copy, ':');

	if (colon)
		*colon++ = 0;
	if (parse_limit_value(copy, &u->soft) < 0 ||
	    (colon && parse_limit_value(colon, &u->hard) < 0))
		return kiln_error(err, KILN_EUSAGE,
				  "--ulimit '%s': values are numbers, -1 or unlimited", spec);
	if (!colon)
		u->hard = u->soft;
	if (u->soft > u->hard)
		return kiln_error(err, KILN_EUSAGE,
				  "--ulimit '%s': the soft limit is above the hard limit", spec);
	return 0;
}

int limits_add_ulimit(RunLimits *l, const char *spec, KilnError **err)
{
	const char *eq = strchr(spec, '=');
	Ulimit u = {.resource = -1};
	size_t i;
	int r;

	for (i = 0; eq && i < ELEMENTSOF(ulimit_names); i++)
		if (strlen(ulimit_names[i].name) == (size_t)(eq - spec) &&
		    strncmp(spec, ulimit_names[i].name, (size_t)(eq - spec)) == 0)
			u.resource = ulimit_names[i].resource;
	if (!eq || u.resource < 0)
		return kiln_error(
		    err, KILN_EUSAGE,
		    "--ulimit '%s': expected NAME=SOFT[:HARD] with NAME one of core, "
		    "cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, "
		    "rss, rtprio, rttime, sigpending, stack",
		    spec);
	r = ulimit_values(spec, eq + 1, &u, err);
	if (r < 0)
		return r;
	for (i = 0; i < l->n_ulimits; i++)
		if (l->ulimits[i].resource == u.resource)
			break;
	if (i == ELEMENTSOF(l->ulimits))
		return kiln_error(err, KILN_EUSAGE, "--ulimit '%s': too many limits", spec);
	l->ulimits[i] = u;
	if (i == l->n_ulimits)
		l->n_ulimits++;
	return 0;
}

int limits_parse_memory(const char *s, uint64_t *ret, KilnError **err)
{
	static const char units[] = "bkmg";
	char *end;
	uint64_t mult = 1;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*s < '0' || *s > '9' || errno || end == s)
		return kiln_error(err, KILN_EUSAGE,
				  "--memory '%s': expected a size like 512m or 2g", s);
	if (*end) {
		const char *u = strchr(units, end[0] | 0x20);
		if (!u || !*u || end[1])
			return kiln_error(err, KILN_EUSAGE,
					  "--memory '%s': expected a size like 512m or 2g", s);
		mult = 1ULL << (10 * (u - units));
	}
	if (v > UINT64_MAX / mult)
		return kiln_error(err, KILN_EUSAGE, "--memory '%s': too large", s);
	if (v * mult < 6 << 20)
		return kiln_error(err, KILN_EUSAGE, "--memory '%s': the minimum is 6m", s);
	*ret = v * mult;
	return 0;
}

int limits_parse_pids(const char *s, uint64_t *ret, KilnError **err)
{
	char *end;

	if (strcmp(s, "-1") == 0 || strcmp(s, "0") == 0) {
		*ret = 0;
		return 0;
	}
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*s < '1' || *s > '9' || errno || *end || v > INT32_MAX)
		return kiln_error(err, KILN_EUSAGE, "--pids-limit '%s': expected a number >= 1", s);
	*ret = v;
	return 0;
}

static int cmp_ulimit_name(const void *a, const void *b)
{
	return strcmp(ulimit_name(((const Ulimit *)a)->resource),
		      ulimit_name(((const Ulimit *)b)->resource));
}

static void append_value(char **s, uint64_t v)
{
	char *more = v == LIMITS_UNLIMITED ? xasprintf("%s-1", *s)
					   : xasprintf("%s%llu", *s, (unsigned long long)v);
	free(*s);
	*s = more;
}

char *limits_ulimits_string(const RunLimits *l)
{
	Ulimit sorted[LIMITS_MAX_ULIMITS];
	char *s;

	if (!l || l->n_ulimits == 0)
		return NULL;
	memcpy(sorted, l->ulimits, l->n_ulimits * sizeof(Ulimit));
	qsort(sorted, l->n_ulimits, sizeof(Ulimit), cmp_ulimit_name);
	s = xstrdup("");
	for (size_t i = 0; i < l->n_ulimits; i++) {
		char *more = xasprintf("%s%s%s=", s, i ? "," : "", ulimit_name(sorted[i].resource));
		free(s);
		s = more;
		append_value(&s, sorted[i].soft);
		more = xasprintf("%s:", s);
		free(s);
		s = more;
		append_value(&s, sorted[i].hard);
	}
	return s;
}

static uint64_t rlim_to_u64(rlim_t v)
{
	return v == RLIM_INFINITY ? LIMITS_UNLIMITED : (uint64_t)v;
}

int limits_check(const RunLimits *l, KilnError **err)
{
	for (size_t i = 0; l && i < l->n_ulimits; i++) {
		const Ulimit *u = &l->ulimits[i];
		struct rlimit cur;

		if (getrlimit(u->resource, &cur) < 0)
			return kiln_error_errno(err, errno, "getrlimit");
		if (u->hard <= rlim_to_u64(cur.rlim_max))
			continue;
		if (cur.rlim_max == RLIM_INFINITY)
			continue;
		return kiln_error(err, KILN_EUSAGE,
				  "--ulimit %s: the hard limit is above kiln's own (%llu), which "
				  "no process in a user namespace can raise: raise it first (e.g. "
				  "ulimit -H) or ask for less",
				  ulimit_name(u->resource), (unsigned long long)cur.rlim_max);
	}
	return 0;
}

/* ---- cgroups ---- */

static int cgroup_read(const char *dir, const char *file, char **ret, KilnError **err)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", dir, file);
	char *data = NULL;
	int r = read_file_at(AT_FDCWD, path, 64 << 10, &data, NULL, err);

	if (r < 0)
		return r;
	data[strcspn(data, "\n")] = 0;
	*ret = data;
	return 0;
}

static int cgroup_write(const char *dir, const char *file, const char *value, KilnError **err)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", dir, file);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", path);
	r = write_all(fd, value, strlen(value));
	if (r < 0)
		return kiln_error_errno(err, -r, "write '%s' to '%s'", value, path);
	return 0;
}

static bool word_in(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; (p = strstr(p, word)); p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == 0 || p[n] == ' '))
			return true;
	return false;
}

/* The cgroup2 mount and the process's path in it ("0::PATH" in /proc/self/cgroup): the cgroup
 * kiln makes the steps' cgroups in. */
static int cgroup_self_dir(char **ret_dir, KilnError **err)
{
	_cleanup_free_ char *cg = NULL, *mi = NULL;
	char *path = NULL, *save = NULL;

	if (read_file_at(AT_FDCWD, "/proc/self/cgroup", 1 << 20, &cg, NULL, err) < 0)
		return -EIO;
	for (char *l = strtok_r(cg, "\n", &save); l && !path; l = strtok_r(NULL, "\n", &save))
		if (strncmp(l, "0::", 3) == 0)
			path = l + 3;
	if (!path)
		return kiln_error(err, ENOTSUP, NEEDS_CGROUP "kiln is in no cgroup v2 hierarchy");
	if (read_file_at(AT_FDCWD, "/proc/self/mountinfo", 4 << 20, &mi, NULL, err) < 0)
		return -EIO;
	save = NULL;
	for (char *l = strtok_r(mi, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char root[4096], point[4096];
		const char *sep = strstr(l, " - cgroup2 ");

		if (!sep || sscanf(l, "%*s %*s %*s %4095s %4095s", root, point) != 2)
			continue;
		size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
		if (strncmp(path, root, rl) != 0 || (path[rl] != '/' && path[rl] != 0))
			continue;
		const char *rel = path + rl;
		char *dir = xasprintf("%s%s", point, strcmp(rel, "/") == 0 ? "" : rel);
		/* An earlier kiln moved this process (or its shell) into kiln-main: the steps'
		 * cgroups go beside it, as they did then. */
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir && strcmp(slash + 1, MAIN_CHILD) == 0)
			*slash = 0;
		*ret_dir = dir;
		return 0;
	}
	return kiln_error(err, ENOTSUP, NEEDS_CGROUP "no cgroup2 file system is mounted");
}

/* The controllers l needs, as "+memory +pids" for cgroup.subtree_control. */
static char *needed_controllers(const RunLimits *l)
{
	return xasprintf("%s%s%s", l->memory ? "+memory" : "", l->memory && l->pids ? " " : "",
			 l->pids ? "+pids" : "");
}

static int cgroup_check(const char *dir, const RunLimits *l, KilnError **err)
{
	_cleanup_free_ char *have = NULL, *procs = xasprintf("%s/cgroup.procs", dir),
			    *sub = xasprintf("%s/cgroup.subtree_control", dir);
	static const char *const names[] = {"memory", "pids"};
	bool want[] = {l->memory != 0, l->pids != 0};

	int r = cgroup_read(dir, "cgroup.controllers", &have, err);

	if (r < 0)
		return kiln_error_wrap(err, r, NEEDS_CGROUP "'%s'", dir);
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (want[i] && !word_in(have, names[i]))
			return kiln_error(err, ENOTSUP,
					  NEEDS_CGROUP
					  "the %s controller is not available in "
					  "kiln's cgroup '%s' (it has: '%s'); " DELEGATE_HINT,
					  names[i], dir, have);
	if (access(dir, W_OK) < 0 || access(procs, W_OK) < 0 || access(sub, W_OK) < 0)
		return kiln_error(err, EACCES,
				  NEEDS_CGROUP "kiln's cgroup '%s' is not writable by kiln (not "
					       "delegated); " DELEGATE_HINT,
				  dir);
	return 0;
}

/* Moves every process of dir into dir/kiln-main, so dir may give its children controllers. */
static int cgroup_evacuate(const char *dir, KilnError **err)
{
	_cleanup_free_ char *main_dir = xasprintf("%s/" MAIN_CHILD, dir),
			    *procs_path = xasprintf("%s/cgroup.procs", dir);

	if (mkdir(main_dir, 0755) < 0 && errno != EEXIST)
		return kiln_error_errno(err, errno, "create '%s'", main_dir);
	/* A process may fork while the others move: read again until none is left. */
	for (int round = 0; round < 10; round++) {
		_cleanup_free_ char *procs = NULL;
		char *save = NULL;
		int r = read_file_at(AT_FDCWD, procs_path, 4 << 20, &procs, NULL, err);

		if (r < 0)
			return r;
		if (!*procs)
			return 0;
		for (char *p = strtok_r(procs, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
			/* a process that exited meanwhile is ESRCH: nothing to move */
			r = cgroup_write(main_dir, "cgroup.procs", p, NULL);
			if (r < 0 && r != -ESRCH)
				return kiln_error_errno(err, -r, "move process %s into '%s'", p,
							main_dir);
		}
	}
	return kiln_error(err, EBUSY, "processes keep appearing in '%s'", dir);
}

/* Removes step cgroups that builds killed before their cleanup left behind (empty ones). */
static void cgroup_sweep_dead(const char *dir)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		int pid = 0, n = 0;
		char tail;

		if (sscanf(de->d_name, "kiln-%d-%d%c", &pid, &n, &tail) != 2 || pid <= 0)
			continue;
		if (kill(pid, 0) < 0 && errno == ESRCH)
			(void)unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
	}
}

/* The root cgroup (the only one without cgroup.type) may hold processes and give controllers. A
 * cgroup namespace's root is not it: docker's dind evacuates that one too. */
static bool cgroup_is_root(const char *dir)
{
	_cleanup_free_ char *type = xasprintf("%s/cgroup.type", dir);

	return access(type, F_OK) < 0 && errno == ENOENT;
}

/* What limits_cgroup_open_dir() needs, without changing anything; 1 when the controllers must
 * still be enabled in dir's cgroup.subtree_control. */
static int cgroup_check_dir(const char *dir, const RunLimits *l, KilnError **err)
{
	_cleanup_free_ char *sub = NULL, *want = needed_controllers(l);
	int r = cgroup_check(dir, l, err);

	if (r < 0 || !*want)
		return r < 0 ? r : 0;
	if ((r = cgroup_read(dir, "cgroup.subtree_control", &sub, err)) < 0)
		return kiln_error_wrap(err, r, NEEDS_CGROUP "'%s'", dir);
	if ((!l->memory || word_in(sub, "memory")) && (!l->pids || word_in(sub, "pids")))
		return 0;
	/* The host's root cgroup: kiln leaves its settings alone. */
	if (cgroup_is_root(dir))
		return kiln_error(err, ENOTSUP,
				  NEEDS_CGROUP "the root cgroup '%s' does not give its children "
					       "'%s' (cgroup.subtree_control); " DELEGATE_HINT,
				  dir, want);
	return 1;
}

int limits_cgroup_open_dir(const char *dir, const RunLimits *l, LimitsCgroup **ret, KilnError **err)
{
	_cleanup_free_ char *want = needed_controllers(l);
	int r = cgroup_check_dir(dir, l, err);

	if (r < 0)
		return r;
	if (r > 0 && ((r = cgroup_evacuate(dir, err)) < 0 ||
		      (r = cgroup_write(dir, "cgroup.subtree_control", want, err)) < 0))
		return kiln_error_wrap(err, r, NEEDS_CGROUP "enable '%s' in '%s'", want, dir);
	cgroup_sweep_dead(dir);
	LimitsCgroup *c = xcalloc(1, sizeof(*c));
	c->dir = xstrdup(dir);
	*ret = c;
	return 0;
}

int limits_cgroup_check(const RunLimits *l, KilnError **err)
{
	_cleanup_free_ char *dir = NULL;
	int r = cgroup_self_dir(&dir, err);

	if (r < 0)
		return r;
	r = cgroup_check_dir(dir, l, err);
	return r < 0 ? r : 0;
}

int limits_cgroup_open(const RunLimits *l, LimitsCgroup **ret, KilnError **err)
{
	_cleanup_free_ char *dir = NULL;
	int r;

	*ret = NULL;
	if (!l || (!l->memory && !l->pids))
		return 0;
	r = cgroup_self_dir(&dir, err);
	if (r < 0)
		return r;
	return limits_cgroup_open_dir(dir, l, ret, err);
}

void limits_cgroup_free(LimitsCgroup *c)
{
	if (!c)
		return;
	free(c->dir);
	free(c);
}

static int step_write_limits(const LimitsStep *s, const RunLimits *l, KilnError **err)
{
	char v[32];
	int r;

	if (l->memory) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->memory);
		if ((r = cgroup_write(s->dir, "memory.max", v, err)) < 0)
			return r;
		/* absent without swap accounting */
		(void)cgroup_write(s->dir, "memory.swap.max", v, NULL);
		/* the whole step goes, not one random process of it */
		(void)cgroup_write(s->dir, "memory.oom.group", "1", NULL);
	}
	if (l->pids) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)l->pids);
		if ((r = cgroup_write(s->dir, "pids.max", v, err)) < 0)
			return r;
	}
	return 0;
}

int limits_step_new(LimitsCgroup *c, const RunLimits *l, LimitsStep **ret, KilnError **err)
{
	_cleanup_(limits_step_freep) LimitsStep *s = xcalloc(1, sizeof(*s));
	_cleanup_free_ char *procs = NULL;
	unsigned n = __atomic_add_fetch(&c->seq, 1, __ATOMIC_RELAXED);
	int r;

	s->procs_fd = -1;
	s->dir = xasprintf("%s/kiln-%d-%u", c->dir, (int)getpid(), n);
	if (mkdir(s->dir, 0755) < 0) {
		r = kiln_error_errno(err, errno, "create cgroup '%s'", s->dir);
		free(s->dir);
		s->dir = NULL;
		return r;
	}
	if ((r = step_write_limits(s, l, err)) < 0)
		return r;
	procs = xasprintf("%s/cgroup.procs", s->dir);
	s->procs_fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (s->procs_fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", procs);
	*ret = TAKE_PTR(s);
	return 0;
}

const char *limits_step_path(const LimitsStep *s)
{
	return s->dir;
}

bool limits_step_oom_killed(const LimitsStep *s)
{
	_cleanup_free_ char *path = xasprintf("%s/memory.events", s->dir), *data = NULL;
	const char *p;

	if (read_file_at(AT_FDCWD, path, 64 << 10, &data, NULL, NULL) < 0)
		return false;
	p = strstr(data, "oom_kill ");
	return p && strtoull(p + 9, NULL, 10) > 0;
}

void limits_step_free(LimitsStep *s)
{
	if (!s)
		return;
	closep(&s->procs_fd);
	/* The kernel empties a cgroup shortly after its last process is reaped. */
	for (int i = 0; s->dir && i < 200; i++) {
		if (rmdir(s->dir) == 0 || errno != EBUSY)
			break;
		nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
	}
	free(s->dir);
	free(s);
}

int limits_child_apply(const RunLimits *l, const LimitsStep *s, const char **ret_what)
{
	if (s && write(s->procs_fd, "0", 1) != 1) {
		*ret_what = "cgroup";
		return -errno;
	}
	for (size_t i = 0; l && i < l->n_ulimits; i++) {
		const Ulimit *u = &l->ulimits[i];
		struct rlimit rl = {
		    .rlim_cur = u->soft == LIMITS_UNLIMITED ? RLIM_INFINITY : (rlim_t)u->soft,
		    .rlim_max = u->hard == LIMITS_UNLIMITED ? RLIM_INFINITY : (rlim_t)u->hard,
		};
		if (setrlimit(u->resource, &rl) < 0) {
			*ret_what = ulimit_name(u->resource);
			return -errno;
		}
	}
	return 0;
}
