/* Resource limits of RUN steps: rlimits set in the container just before exec (docker's
 * --ulimit), and memory and pid limits through one child cgroup per step, which needs a cgroup v2
 * delegated to kiln. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define LIMITS_MAX_ULIMITS 16
#define LIMITS_UNLIMITED UINT64_MAX

typedef struct Ulimit {
	int resource; /* RLIMIT_* */
	uint64_t soft, hard;
} Ulimit;

typedef struct RunLimits {
	Ulimit ulimits[LIMITS_MAX_ULIMITS]; /* one per resource, in the order first given */
	size_t n_ulimits;
	uint64_t memory; /* memory.max in bytes (memory.swap.max the same, as docker's default
			    --memory-swap); 0: no limit */
	uint64_t pids;	 /* pids.max; 0: no limit */
} RunLimits;

/* Adds docker's "NAME=SOFT[:HARD]" (HARD defaults to SOFT; -1 or "unlimited" is no limit) for
 * NAME in core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio,
 * rttime, sigpending, stack; a later value for the same NAME replaces the earlier one. Errors are
 * usage errors naming the spec. */
int limits_add_ulimit(RunLimits *l, const char *spec, KilnError **err);

/* docker run's --memory: bytes with an optional b, k, m or g suffix (powers of 1024), at least
 * 6 MiB as docker requires. */
int limits_parse_memory(const char *s, uint64_t *ret, KilnError **err);

/* docker run's --pids-limit: a number >= 1 (-1 or 0: no limit). */
int limits_parse_pids(const char *s, uint64_t *ret, KilnError **err);

/* "name=soft:hard" for each ulimit, sorted by name and comma-separated ("-1" for no limit), for
 * cache keys; NULL when there are none. */
char *limits_ulimits_string(const RunLimits *l);

/* Refuses a hard limit above this process's own: inside a user namespace even root cannot raise
 * one, so the step would fail at its start. */
int limits_check(const RunLimits *l, KilnError **err);

/* ---- cgroups ---- */

typedef struct LimitsCgroup LimitsCgroup;
typedef struct LimitsStep LimitsStep;

/* Prepares kiln's own cgroup v2 (from /proc/self/cgroup) to hold one child cgroup per step with
 * the controllers l needs (memory, pids): they must be available in it and it must be writable
 * (delegated: `systemd-run --user --scope -p Delegate=yes kiln build ...`). A non-root cgroup's
 * processes are first moved into its child "kiln-main" (a cgroup with processes cannot give its
 * children controllers), as rootlesskit and docker's dind do; the host's root cgroup is never
 * changed. *ret is NULL when l asks for no
 * cgroup limit. The error says "memory and pid limits need a delegated cgroup v2: " and why. */
int limits_cgroup_open(const RunLimits *l, LimitsCgroup **ret, KilnError **err);

/* Whether limits_cgroup_open() would succeed, without changing anything (for kiln doctor). */
int limits_cgroup_check(const RunLimits *l, KilnError **err);

/* Like limits_cgroup_open() for the cgroup directory dir (a path in a cgroup2 mount). */
int limits_cgroup_open_dir(const char *dir, const RunLimits *l, LimitsCgroup **ret,
			   KilnError **err);
void limits_cgroup_free(LimitsCgroup *c);
static inline void limits_cgroup_freep(LimitsCgroup **c)
{
	limits_cgroup_free(*c);
}

/* Creates the child cgroup of one step with l's memory and pids limits. */
int limits_step_new(LimitsCgroup *c, const RunLimits *l, LimitsStep **ret, KilnError **err);

/* The step cgroup's directory. */
const char *limits_step_path(const LimitsStep *s);

/* Whether the memory limit killed a process of the step (memory.events oom_kill). */
bool limits_step_oom_killed(const LimitsStep *s);

/* Removes the step's cgroup (once its processes are gone); NULL is fine. */
void limits_step_free(LimitsStep *s);
static inline void limits_step_freep(LimitsStep **s)
{
	limits_step_free(*s);
}

/* In the container's child between clone and exec (no allocation): joins the step cgroup (NULL:
 * none) and sets the ulimits (l NULL: none). Returns 0, or -errno with *ret_what naming what
 * failed ("cgroup" or the ulimit's name). */
int limits_child_apply(const RunLimits *l, const LimitsStep *s, const char **ret_what);
